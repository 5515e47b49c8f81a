//! The bulk tensor operations of the plugin contract (0.2 on), on flat row-major
//! element slices. A plugin asks the host for them so that bulk data never
//! crosses into its linear memory: a 3.5-million-pixel wire plane is
//! thresholded, tiled and its scores gathered by the host, and the plugin
//! sees only the indices and values it needs. The same code runs natively in
//! the plugin SDK (unit tests of plugins) and in the host.
//!
//! Every operation checks its arguments before it writes anything and fails
//! with an [`OpError`] naming the offending argument, index or shape: a bad
//! index fails the plugin's item, never the host. Sizes are checked in
//! `u64` without overflow; indices are `i64` (what libtorch indexes with)
//! and must lie in `0..len`.
//!
//! | operation | semantics |
//! |---|---|
//! | [`select_above`] | row-major flat indices and values of the elements strictly above a threshold (NaN never is) |
//! | [`gather`] | `out[i * count + k] = source[indices[i] + k * stride]` (`count` elements `stride` apart per index) |
//! | [`scatter`] | `target[indices[i]] = values[i]`, in order (a repeated index keeps the last value) |
//! | [`copy_region`] | an N-d box of `size` from `source` at `from` into `target` at `to` (same rank) |
//! | [`rows::json_rows`] | JSON records (or keys/values) by key into an `[n, k]` table (contract 0.3) |
//! | [`rows::pad_jagged`] | jagged lists padded to `[n, max, ...]` with a `[n, max]` mask (contract 0.3) |
//! | [`tiles::Grid`] | sparse pixels laid over a plane's tiles and their scores stitched back (contract 0.3) |

use std::fmt;

pub mod rows;
pub mod tiles;

/// Why an operation refused its arguments; nothing was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpError {
    /// `indices[position]` is outside `0..len`.
    IndexOutOfRange {
        /// Which argument holds the index (`indices`).
        what: &'static str,
        /// Its position in that argument.
        position: usize,
        /// The index.
        index: i64,
        /// Elements it indexes into.
        len: usize,
    },
    /// Two lengths that must match do not.
    LengthMismatch {
        /// What was compared, e.g. "indices and values".
        what: &'static str,
        /// The first length.
        left: usize,
        /// The second length.
        right: usize,
    },
    /// A shape, origin or size is wrong (rank, bounds, element count).
    Shape(String),
    /// The item's data is wrong; `code` names how (`missing-key`,
    /// `duplicate-pixel`, ...), as the plugin's own error would.
    Item {
        /// Machine-readable reason.
        code: &'static str,
        /// What was wrong.
        message: String,
    },
}

impl OpError {
    /// The error code a plugin reports for this: the item's own code, else `op`.
    pub fn code(&self) -> &'static str {
        match self {
            OpError::Item { code, .. } => code,
            _ => "op",
        }
    }
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpError::IndexOutOfRange { what, position, index, len } => {
                write!(f, "{what}[{position}] = {index} is outside 0..{len}")
            }
            OpError::LengthMismatch { what, left, right } => write!(f, "{what} differ in length: {left} and {right}"),
            OpError::Shape(m) => f.write_str(m),
            OpError::Item { message, .. } => f.write_str(message),
        }
    }
}

impl std::error::Error for OpError {}

/// Elements of `shape` (checked: no overflow of `u64` or `usize`).
pub fn elements(shape: &[u64]) -> Result<usize, OpError> {
    let n = shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| OpError::Shape(format!("shape {shape:?} has more elements than fit in 64 bits")))?;
    usize::try_from(n).map_err(|_| OpError::Shape(format!("shape {shape:?} has more elements than fit in memory")))
}

/// Row-major flat indices and values of the elements of `source` strictly
/// above `threshold`, in index order. NaN is never above.
pub fn select_above(source: &[f32], threshold: f32) -> (Vec<i64>, Vec<f32>) {
    let (mut indices, mut values) = (Vec::new(), Vec::new());
    for (i, &v) in source.iter().enumerate() {
        if v > threshold {
            indices.push(i as i64);
            values.push(v);
        }
    }
    (indices, values)
}

fn checked(indices: &[i64], len: usize) -> Result<(), OpError> {
    match indices.iter().position(|&i| i < 0 || i as u64 >= len as u64) {
        Some(position) => Err(OpError::IndexOutOfRange { what: "indices", position, index: indices[position], len }),
        None => Ok(()),
    }
}

/// `out[i * count + k] = source[indices[i] + k * stride]` for `k < count`:
/// for each index, `count` elements `stride` apart (`count = 1`: a plain
/// gather; e.g. the `C` channel scores of one pixel of a `[C, H, W]` map,
/// `stride = H * W`). `count` must be at least 1; every index must leave
/// room for its last element.
pub fn gather<T: Copy>(source: &[T], indices: &[i64], count: usize, stride: usize) -> Result<Vec<T>, OpError> {
    if count == 0 {
        return Err(OpError::Shape("gather needs count >= 1".into()));
    }
    let span = (count - 1).checked_mul(stride).ok_or_else(|| OpError::Shape(format!("count {count} x stride {stride} overflows")))?;
    checked(indices, source.len().saturating_sub(span))?;
    let mut out = Vec::with_capacity(indices.len().saturating_mul(count));
    for &i in indices {
        let base = i as usize;
        out.extend((0..count).map(|k| source[base + k * stride]));
    }
    Ok(out)
}

/// `target[indices[i]] = values[i]` for every `i`, in order (a repeated
/// index keeps the last value).
pub fn scatter<T: Copy>(target: &mut [T], indices: &[i64], values: &[T]) -> Result<(), OpError> {
    if indices.len() != values.len() {
        return Err(OpError::LengthMismatch { what: "indices and values", left: indices.len(), right: values.len() });
    }
    checked(indices, target.len())?;
    for (&i, &v) in indices.iter().zip(values) {
        target[i as usize] = v;
    }
    Ok(())
}

/// Copies the box of `size` at `from` in `source` (shape `source_shape`) to
/// `to` in `target` (shape `target_shape`), all of one rank; the box must
/// lie inside both. E.g. a 512x512 tile of a wire plane into slot `n` of a
/// `[tiles, 1, 512, 512]` batch, with the plane seen as `[1, 1, H, W]`.
#[allow(clippy::too_many_arguments)]
pub fn copy_region<T: Copy>(
    source: &[T],
    source_shape: &[u64],
    from: &[u64],
    target: &mut [T],
    target_shape: &[u64],
    to: &[u64],
    size: &[u64],
) -> Result<(), OpError> {
    let rank = size.len();
    if [source_shape.len(), from.len(), target_shape.len(), to.len()].iter().any(|&r| r != rank) || rank == 0 {
        return Err(OpError::Shape(format!(
            "copy_region needs one rank for every argument: source shape {source_shape:?}, from {from:?}, target shape {target_shape:?}, to {to:?}, size {size:?}"
        )));
    }
    for (what, shape, at, len) in [("source", source_shape, from, source.len()), ("target", target_shape, to, target.len())] {
        if elements(shape)? != len {
            return Err(OpError::Shape(format!("{what} has {len} elements, its shape {shape:?} says {}", elements(shape)?)));
        }
        for d in 0..rank {
            if at[d].checked_add(size[d]).is_none_or(|end| end > shape[d]) {
                return Err(OpError::Shape(format!(
                    "the box of size {size:?} at {at:?} leaves the {what} of shape {shape:?} in dimension {d}"
                )));
            }
        }
    }
    if elements(size)? == 0 {
        return Ok(());
    }
    let strides = |shape: &[u64]| {
        let mut s = vec![1usize; rank];
        for d in (0..rank - 1).rev() {
            s[d] = s[d + 1] * shape[d + 1] as usize;
        }
        s
    };
    let (ss, ts) = (strides(source_shape), strides(target_shape));
    let run = size[rank - 1] as usize;
    // Walk every row (all dimensions but the last) of the box.
    let mut pos = vec![0u64; rank - 1];
    loop {
        let (mut s, mut t) = (from[rank - 1] as usize, to[rank - 1] as usize);
        for d in 0..rank - 1 {
            s += (from[d] + pos[d]) as usize * ss[d];
            t += (to[d] + pos[d]) as usize * ts[d];
        }
        target[t..t + run].copy_from_slice(&source[s..s + run]);
        let mut d = rank - 1;
        loop {
            if d == 0 {
                return Ok(());
            }
            d -= 1;
            pos[d] += 1;
            if pos[d] < size[d] {
                break;
            }
            pos[d] = 0;
        }
    }
}

/// The operations on little-endian element bytes, for callers that hold
/// tensors as bytes of any element type (the host, and the SDK natively):
/// each dispatches on the element size (1, 2, 4 or 8 bytes) and runs the
/// typed operation above on fixed-size elements (no alignment needed).
pub mod bytes {
    use super::OpError;

    fn whole(what: &'static str, len: usize, size: usize) -> Result<(), OpError> {
        if size == 0 || len % size != 0 {
            return Err(OpError::Shape(format!("{what}: {len} bytes are not whole elements of {size} bytes")));
        }
        Ok(())
    }

    /// Runs `$body` with `$n` bound, as a const, to the element size `$size`.
    macro_rules! by_size {
        ($size:expr, $n:ident => $body:expr) => {
            match $size {
                1 => {
                    const $n: usize = 1;
                    $body
                }
                2 => {
                    const $n: usize = 2;
                    $body
                }
                4 => {
                    const $n: usize = 4;
                    $body
                }
                8 => {
                    const $n: usize = 8;
                    $body
                }
                other => Err(OpError::Shape(format!("elements of {other} bytes are not supported"))),
            }
        };
    }

    /// An i64 index list from its little-endian bytes.
    pub fn indices(bytes: &[u8]) -> Vec<i64> {
        bytes.as_chunks::<8>().0.iter().map(|b| i64::from_le_bytes(*b)).collect()
    }

    /// [`super::select_above`] on f32 bytes: the indices, and the selected
    /// elements' bytes.
    pub fn select_above_f32(source: &[u8], threshold: f32) -> (Vec<i64>, Vec<u8>) {
        let (mut indices, mut values) = (Vec::new(), Vec::new());
        for (i, b) in source.as_chunks::<4>().0.iter().enumerate() {
            if f32::from_le_bytes(*b) > threshold {
                indices.push(i as i64);
                values.extend_from_slice(b);
            }
        }
        (indices, values)
    }

    /// [`super::gather`] on elements of `size` bytes.
    pub fn gather(source: &[u8], size: usize, indices: &[i64], count: usize, stride: usize) -> Result<Vec<u8>, OpError> {
        whole("gather's source", source.len(), size)?;
        by_size!(size, N => Ok(super::gather(source.as_chunks::<N>().0, indices, count, stride)?.concat()))
    }

    /// [`super::scatter`] on elements of `size` bytes.
    pub fn scatter(target: &mut [u8], size: usize, indices: &[i64], values: &[u8]) -> Result<(), OpError> {
        whole("scatter's target", target.len(), size)?;
        whole("scatter's values", values.len(), size)?;
        by_size!(size, N => super::scatter(target.as_chunks_mut::<N>().0, indices, values.as_chunks::<N>().0))
    }

    /// [`super::copy_region`] on elements of `size` bytes.
    #[allow(clippy::too_many_arguments)]
    pub fn copy_region(
        source: &[u8],
        source_shape: &[u64],
        from: &[u64],
        target: &mut [u8],
        target_shape: &[u64],
        to: &[u64],
        size: &[u64],
        element: usize,
    ) -> Result<(), OpError> {
        whole("copy_region's source", source.len(), element)?;
        whole("copy_region's target", target.len(), element)?;
        by_size!(element, N => super::copy_region(source.as_chunks::<N>().0, source_shape, from, target.as_chunks_mut::<N>().0, target_shape, to, size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_above_keeps_order_and_skips_nan() {
        let (i, v) = select_above(&[0.0, 5.0, f32::NAN, 10.5, 10.0, -1.0], 4.9);
        assert_eq!((i, v), (vec![1, 3, 4], vec![5.0, 10.5, 10.0]));
        assert_eq!(select_above(&[], 0.0), (vec![], vec![]));
    }

    #[test]
    fn gather_and_scatter_check_every_index_first() {
        let source = [10, 20, 30, 40];
        assert_eq!(gather(&source, &[3, 0, 0], 1, 1).unwrap(), vec![40, 10, 10]);
        let e = gather(&source, &[1, 4], 1, 1).unwrap_err();
        assert_eq!(e.to_string(), "indices[1] = 4 is outside 0..4");
        assert_eq!(gather(&source, &[-1], 1, 0).unwrap_err().to_string(), "indices[0] = -1 is outside 0..4");
        // Two elements two apart: [i, i + 2]; the last base index that fits is 1.
        assert_eq!(gather(&source, &[1, 0], 2, 2).unwrap(), vec![20, 40, 10, 30]);
        assert_eq!(gather(&source, &[2], 2, 2).unwrap_err().to_string(), "indices[0] = 2 is outside 0..2");
        assert!(gather(&source, &[0], 0, 1).is_err());
        assert!(gather(&source, &[0], 3, usize::MAX).unwrap_err().to_string().contains("overflows"));
        let mut target = [0; 4];
        scatter(&mut target, &[2, 0, 2], &[7, 8, 9]).unwrap();
        assert_eq!(target, [8, 0, 9, 0], "a repeated index keeps the last value");
        let e = scatter(&mut target, &[1, 9], &[1, 1]).unwrap_err();
        assert_eq!(e.to_string(), "indices[1] = 9 is outside 0..4");
        assert_eq!(target, [8, 0, 9, 0], "nothing written on an error");
        let e = scatter(&mut target, &[1], &[1, 2]).unwrap_err();
        assert_eq!(e.to_string(), "indices and values differ in length: 1 and 2");
    }

    #[test]
    fn copy_region_moves_a_box_and_refuses_one_outside() {
        // A 4x5 plane, its 2x3 box at (1, 2) into slot 1 of a [2, 3, 3] batch at (1, 0, 0).
        let plane: Vec<i32> = (0..20).collect();
        let mut batch = vec![-1; 18];
        copy_region(&plane, &[1, 4, 5], &[0, 1, 2], &mut batch, &[2, 3, 3], &[1, 0, 0], &[1, 2, 3]).unwrap();
        assert_eq!(&batch[9..15], &[7, 8, 9, 12, 13, 14]);
        assert!(batch[..9].iter().chain(&batch[15..]).all(|&x| x == -1), "nothing else written");
        let e = copy_region(&plane, &[4, 5], &[3, 0], &mut batch, &[6, 3], &[0, 0], &[2, 3]).unwrap_err();
        assert_eq!(e.to_string(), "the box of size [2, 3] at [3, 0] leaves the source of shape [4, 5] in dimension 0");
        let e = copy_region(&plane, &[4, 4], &[0, 0], &mut batch, &[6, 3], &[0, 0], &[1, 1]).unwrap_err();
        assert_eq!(e.to_string(), "source has 20 elements, its shape [4, 4] says 16");
        let e = copy_region(&plane, &[4, 5], &[0, 0], &mut batch, &[6, 3], &[0, 0], &[1]).unwrap_err();
        assert!(e.to_string().starts_with("copy_region needs one rank"), "{e}");
        let e = copy_region(&plane, &[4, 5], &[u64::MAX, 0], &mut batch, &[6, 3], &[0, 0], &[2, 1]).unwrap_err();
        assert!(e.to_string().contains("leaves the source"), "{e}");
    }

    #[test]
    fn byte_level_operations_match_the_typed_ones() {
        let source: Vec<u8> = [1.5f32, 20.0, -3.0, 40.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let (i, v) = bytes::select_above_f32(&source, 10.0);
        assert_eq!((i.clone(), v), (vec![1, 3], [20.0f32, 40.0].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()));
        let idx: Vec<u8> = i.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(bytes::indices(&idx), i);
        assert_eq!(bytes::gather(&source, 4, &[3, 0], 1, 1).unwrap(), [40.0f32, 1.5].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
        let mut target = vec![0u8; 16];
        bytes::scatter(&mut target, 4, &[2], &7i32.to_le_bytes()).unwrap();
        assert_eq!(&target[8..12], &7i32.to_le_bytes());
        assert!(bytes::scatter(&mut target, 4, &[4], &7i32.to_le_bytes()).unwrap_err().to_string().contains("outside 0..4"));
        assert!(bytes::gather(&source[..7], 4, &[0], 1, 1).unwrap_err().to_string().contains("not whole elements"));
        let mut tile = vec![0u8; 8];
        bytes::copy_region(&source, &[2, 2], &[1, 0], &mut tile, &[1, 2], &[0, 0], &[1, 2], 4).unwrap();
        assert_eq!(tile, source[8..].to_vec());
    }

    #[test]
    fn elements_refuses_overflow() {
        assert_eq!(elements(&[2, 3, 4]).unwrap(), 24);
        assert_eq!(elements(&[]).unwrap(), 1);
        assert!(elements(&[u64::MAX, 2]).unwrap_err().to_string().contains("64 bits"));
    }
}
