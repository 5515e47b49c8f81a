//! NumPy `.npy` and (uncompressed) `.npz` reading and writing, so plugins
//! take and give arrays exactly as `numpy.save`/`numpy.savez` write them.
//! The format is `tensorgate-npy` (shared with the Python bindings); this
//! module only maps its arrays to [`Tensor`]s and its errors to
//! [`PluginError`]s (code `npy`).

use tensorgate_npy::{Array, Descr, ZipWriter};

use crate::{Dtype, PluginError, Tensor};

fn err(message: impl Into<String>) -> PluginError {
    PluginError::new("npy", message)
}

fn npy_err(e: tensorgate_npy::Error) -> PluginError {
    err(e.to_string())
}

fn descr_dtype(descr: &Descr) -> Result<Dtype, PluginError> {
    Ok(match descr.as_str() {
        "<f4" => Dtype::F32,
        "<f8" => Dtype::F64,
        "<i8" => Dtype::I64,
        "<i4" => Dtype::I32,
        "|u1" | "<u1" => Dtype::U8,
        "|b1" => Dtype::Boolean,
        other => return Err(err(format!("unsupported dtype '{other}' (use little-endian f4, f8, i8, i4, u1 or b1)"))),
    })
}

fn dtype_descr(d: Dtype) -> Descr {
    match d {
        Dtype::F32 => Descr::F32,
        Dtype::F64 => Descr::F64,
        Dtype::I64 => Descr::I64,
        Dtype::I32 => Descr::I32,
        Dtype::U8 => Descr::U8,
        Dtype::Boolean => Descr::BOOL,
    }
}

/// A `.npy` file's header and its element bytes, borrowed from the file.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyView<'a> {
    /// Element type.
    pub dtype: Dtype,
    /// Shape (C order).
    pub shape: Vec<u64>,
    /// Little-endian element bytes.
    pub data: &'a [u8],
}

impl NpyView<'_> {
    /// The elements as `&[T]` (borrowed when aligned, as `numpy.save` aligns the data).
    pub fn view<T: crate::tensor::Element>(&self) -> Result<std::borrow::Cow<'_, [T]>, PluginError> {
        if self.dtype != T::DTYPE {
            return Err(err(format!("expected a {} array, got {} of shape {:?}", T::DTYPE.name(), self.dtype.name(), self.shape)));
        }
        Ok(crate::tensor::view(self.data))
    }
}

fn to_view(array: Array<'_>) -> Result<NpyView<'_>, PluginError> {
    Ok(NpyView { dtype: descr_dtype(&array.descr)?, shape: array.shape, data: array.data })
}

/// Parses a `.npy` file without copying its data (C order only).
pub fn view_npy(bytes: &[u8]) -> Result<NpyView<'_>, PluginError> {
    to_view(tensorgate_npy::parse_npy(bytes).map_err(npy_err)?)
}

/// Parses a `.npy` file into a tensor (C order only); see [`view_npy`] for a borrowing parse.
pub fn parse_npy(bytes: &[u8]) -> Result<Tensor, PluginError> {
    let v = view_npy(bytes)?;
    Ok(Tensor { dtype: v.dtype, shape: v.shape, data: v.data.to_vec() })
}

/// The `.npy` header of `t` (its data follows), in a buffer with room for `extra` more bytes.
fn npy_header(t: &Tensor, extra: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + extra);
    tensorgate_npy::write_npy_header(&mut out, &dtype_descr(t.dtype), &t.shape);
    out
}

/// Writes a tensor as a version-1 `.npy` file.
pub fn write_npy(t: &Tensor) -> Vec<u8> {
    let mut out = npy_header(t, t.data.len());
    out.extend_from_slice(&t.data);
    out
}

/// Parses an uncompressed `.npz` (as `numpy.savez` writes) into named tensors, in archive order.
pub fn parse_npz(bytes: &[u8]) -> Result<Vec<(String, Tensor)>, PluginError> {
    tensorgate_npy::parse_npz(bytes)
        .map_err(npy_err)?
        .into_iter()
        .map(|(name, array)| match to_view(array) {
            Ok(v) => Ok((name, Tensor { dtype: v.dtype, shape: v.shape, data: v.data.to_vec() })),
            Err(e) => Err(err(format!("npz entry '{name}': {}", e.message))),
        })
        .collect()
}

/// Writes named tensors as an uncompressed `.npz` that `numpy.load` reads.
///
/// # Panics
/// If a name is longer than a zip archive allows (65 531 bytes, less the
/// `.npy` suffix): a bug in the plugin, reported as its trap message.
pub fn write_npz(entries: &[(String, Tensor)]) -> Vec<u8> {
    let sizes = entries.iter().map(|(name, t)| (name.len() + 4, 128 + t.data.len()));
    let mut zip = ZipWriter::with_capacity(ZipWriter::size_hint(sizes));
    for (name, t) in entries {
        if let Err(e) = zip.add(&format!("{name}.npy"), &[&npy_header(t, 0), &t.data]) {
            panic!("write_npz: array name of {} bytes: {e}", name.len());
        }
    }
    zip.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_and_npz_round_trip() {
        let a = Tensor { dtype: Dtype::F32, shape: vec![2, 3], data: (0..24).collect() };
        let b = Tensor { dtype: Dtype::I64, shape: vec![1], data: 7i64.to_le_bytes().to_vec() };
        let key = |t: &Tensor| (t.dtype, t.shape.clone(), t.data.clone());
        assert_eq!(key(&parse_npy(&write_npy(&a)).unwrap()), key(&a));
        let z = parse_npz(&write_npz(&[("a".into(), a.clone()), ("b".into(), b.clone())])).unwrap();
        let z: Vec<_> = z.iter().map(|(n, t)| (n.clone(), key(t))).collect();
        assert_eq!(z, vec![("a".to_string(), key(&a)), ("b".to_string(), key(&b))]);
        let v = view_npy(&write_npy(&Tensor::from_slice(&[2], &[1.5f32, 2.5]))).unwrap().view::<f32>().unwrap().into_owned();
        assert_eq!(v, vec![1.5, 2.5]);
        let mut huge = write_npy(&Tensor::from_slice(&[2], &[1.5f32, 2.5]));
        let at = huge.windows(4).position(|w| w == b"(2,)").unwrap();
        huge.splice(at..at + 4, b"(99999999999, 99999999999)".iter().copied());
        assert!(view_npy(&huge).unwrap_err().message.contains("too large"));
    }

    #[test]
    fn errors_carry_the_npy_code_and_name_the_problem() {
        let e = view_npy(b"not numpy").unwrap_err();
        assert_eq!((e.code.as_str(), e.message.as_str()), ("npy", "not a .npy file (bad magic)"));
        let u16s = tensorgate_npy::write_npy(&Descr::U16, &[1], &[0, 0]).unwrap();
        assert!(view_npy(&u16s).unwrap_err().message.contains("unsupported dtype '<u2'"));
        let z = tensorgate_npy::write_npz(&[("x", &Descr::U16, &[1], &[0, 0])]).unwrap();
        assert_eq!(parse_npz(&z).unwrap_err().message, "npz entry 'x': unsupported dtype '<u2' (use little-endian f4, f8, i8, i4, u1 or b1)");
        let e = parse_npz(b"not numpy").unwrap_err();
        assert!(e.message.contains("no end of central directory record"), "{}", e.message);
        let ints = write_npy(&Tensor::from_slice(&[1], &[1i32]));
        let v = view_npy(&ints).unwrap();
        assert!(v.view::<f32>().unwrap_err().message.contains("expected a f32 array, got i32 of shape [1]"));
    }

    #[test]
    fn every_dtype_round_trips() {
        for t in [
            Tensor::from_slice(&[2], &[1.5f32, -2.0]),
            Tensor::from_slice(&[1, 1], &[3.25f64]),
            Tensor::from_slice(&[3], &[-1i64, 0, 1]),
            Tensor::from_slice(&[], &[9i32]),
            Tensor::from_slice(&[2], &[7u8, 255]),
            Tensor { dtype: Dtype::Boolean, shape: vec![2], data: vec![1, 0] },
        ] {
            let back = parse_npy(&write_npy(&t)).unwrap();
            assert_eq!((back.dtype, back.shape, back.data), (t.dtype, t.shape.clone(), t.data.clone()));
        }
    }
}
