//! The host's bulk operations on tensors (WIT interface `ops`): in a plugin
//! they run in the host, so the data never enters the plugin's memory;
//! natively they run here, on the same code the host runs
//! (`tensorgate-ops`), with the same checks and messages. See
//! `docs/plugin-contract.md` for each one's semantics and cost.
//!
//! Indices are i64 tensors (flat, row-major element indices).

use crate::tensor::Tensor;
use crate::{Dtype, Payload, PluginError};

pub use crate::bindings::tensorgate::plugin::ops::JsonLayout;

#[cfg(not(target_arch = "wasm32"))]
fn op_err(e: tensorgate_ops::OpError) -> PluginError {
    PluginError::new(e.code(), e.to_string())
}

#[cfg(not(target_arch = "wasm32"))]
fn grid(height: u64, width: u64, tile: u64, overlap: u64) -> Result<tensorgate_ops::tiles::Grid, PluginError> {
    tensorgate_ops::tiles::Grid::new(height as usize, width as usize, tile as usize, overlap as usize)
        .map_err(|e| PluginError::new("tiles", e.to_string()))
}

#[cfg(not(target_arch = "wasm32"))]
fn pixel_list(t: &Tensor) -> Result<Vec<i64>, PluginError> {
    if t.shape().len() != 2 || t.shape()[1] != 2 {
        return Err(PluginError::new("tiles", format!("`pixels` must be [n, 2] (row, col), got shape {:?}", t.shape())));
    }
    match t.dtype() {
        Dtype::I64 => Ok(tensorgate_ops::bytes::indices(t.data())),
        Dtype::I32 => Ok(t.view::<i32>()?.iter().map(|&v| v as i64).collect()),
        other => Err(PluginError::new("tiles", format!("`pixels` must be i32 or i64, got {}", other.name()))),
    }
}

/// The numbers of a JSON payload by key, as an `[n, keys]` tensor of
/// `dtype` (f32, f64, i64 or i32), columns in `keys` order; `layout` says
/// how the item is read ([`JsonLayout`]). Errors name the key and record,
/// with codes `malformed-json`, `length-mismatch`, `duplicate-key`,
/// `unknown-key`, `missing-key`, `not-a-number`.
pub fn json_rows(payload: &Payload, keys: &[String], layout: JsonLayout, dtype: Dtype) -> Result<Tensor, PluginError> {
    json_rows_each(&[payload], keys, layout, dtype).pop().unwrap_or_else(|| Err(PluginError::new("op", "json-rows gave no result")))
}

/// [`json_rows`] for each of a group's payloads, in one host call.
pub fn json_rows_each(payloads: &[&Payload], keys: &[String], layout: JsonLayout, dtype: Dtype) -> Vec<Result<Tensor, PluginError>> {
    #[cfg(target_arch = "wasm32")]
    {
        let handles: Vec<_> = payloads.iter().map(|p| p.handle()).collect();
        crate::bindings::tensorgate::plugin::ops::json_rows(&handles, keys, layout, dtype)
            .into_iter()
            .map(|r| r.map(Tensor::from_handle))
            .collect()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        use tensorgate_ops::rows::Layout;
        let layout = match layout {
            JsonLayout::KeysValues => Layout::KeysValues,
            JsonLayout::Records => Layout::Records { strict: false },
            JsonLayout::RecordsStrict => Layout::Records { strict: true },
        };
        payloads
            .iter()
            .map(|payload| {
                let (values, n) = tensorgate_ops::rows::json_rows(payload.data(), keys, layout).map_err(op_err)?;
                let shape = vec![n as u64, keys.len() as u64];
                let data: Vec<u8> = match dtype {
                    Dtype::F32 => values.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect(),
                    Dtype::F64 => values.iter().flat_map(|&v| v.to_le_bytes()).collect(),
                    Dtype::I64 => values.iter().flat_map(|&v| (v as i64).to_le_bytes()).collect(),
                    Dtype::I32 => values.iter().flat_map(|&v| (v as i32).to_le_bytes()).collect(),
                    other => {
                        return Err(PluginError::new("op", format!("json-rows makes f32, f64, i64 or i32 tensors, not {}", other.name())))
                    }
                };
                Tensor::from_parts(dtype, shape, data)
            })
            .collect()
    }
}

/// Each item's f32 scores (`[1, L]` or `[L]`) as its `{label: score}` JSON
/// reply in `labels` order, written by the host in one call for the group
/// (as [`crate::labels::scores_json`] writes one); another count fails
/// that item (code `labels`).
pub fn scores_json_each(scores: &[&Tensor], labels: &[String]) -> Vec<Result<Vec<u8>, PluginError>> {
    #[cfg(target_arch = "wasm32")]
    {
        let handles: Vec<_> = scores.iter().map(|t| t.handle()).collect();
        crate::bindings::tensorgate::plugin::ops::scores_json(&handles, labels)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        scores
            .iter()
            .map(|t| {
                let ok_shape = t.dtype() == Dtype::F32 && (t.shape().len() == 1 || (t.shape().len() == 2 && t.shape()[0] == 1));
                if !ok_shape {
                    return Err(PluginError::new(
                        "labels",
                        format!("scores-json takes one item's f32 scores, [1, L] or [L]; got {} of shape {:?}", t.dtype().name(), t.shape()),
                    ));
                }
                let values = t.view::<f32>()?;
                tensorgate_ops::rows::scores_json(labels, &values).ok_or_else(|| {
                    let who = format!("plugin `{}`", crate::manifest().name);
                    PluginError::new("labels", tensorgate_ops::rows::labels_mismatch(&who, labels, values.len()))
                })
            })
            .collect()
    }
}

/// Pads `n` jagged lists stored one after another in `values` (`[total,
/// ...]`; i64 `lengths` `[n]` summing to `total`) to `max` elements each:
/// `[n, max, ...]` values (zeros after each list; a longer list keeps its
/// first `max`) and a `[n, max]` mask (1 for an element, 0 for padding),
/// both of the values' dtype.
pub fn pad_jagged(values: &Tensor, lengths: &Tensor, max: u64) -> Result<(Tensor, Tensor), PluginError> {
    #[cfg(target_arch = "wasm32")]
    {
        let p = crate::bindings::tensorgate::plugin::ops::pad_jagged(values.handle(), lengths.handle(), max)?;
        Ok((Tensor::from_handle(p.values), Tensor::from_handle(p.mask)))
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let lens = indices(lengths, "pad-jagged's lengths")?;
        let shape = values.shape();
        if shape.is_empty() {
            return Err(PluginError::new("op", "pad-jagged's values need a leading dimension (the lists' elements, one after another)"));
        }
        let row: u64 = shape[1..].iter().product();
        let size = values.dtype().size();
        let one: Vec<u8> = match values.dtype() {
            Dtype::F32 => 1f32.to_le_bytes().to_vec(),
            Dtype::F64 => 1f64.to_le_bytes().to_vec(),
            Dtype::I64 => 1i64.to_le_bytes().to_vec(),
            Dtype::I32 => 1i32.to_le_bytes().to_vec(),
            Dtype::U8 | Dtype::Boolean => vec![1],
        };
        let (out, mask) = tensorgate_ops::rows::pad_jagged_bytes(values.data(), row as usize * size, &lens, max as usize, &one).map_err(op_err)?;
        let n = lens.len() as u64;
        let mut out_shape = vec![n, max];
        out_shape.extend_from_slice(&shape[1..]);
        Ok((Tensor::from_parts(values.dtype(), out_shape, out)?, Tensor::from_parts(values.dtype(), vec![n, max], mask)?))
    }
}

/// Lays sparse pixels (`pixels` i32 or i64 `[n, 2]` row, col; `values` f32
/// `[n]`) over the tiles of a `height` x `width` plane ([`crate::tiles`]):
/// the f32 `[m, 1, tile, tile]` input of the tiles that hold a pixel, and
/// their grid indices, i64 `[m]`. A pixel outside the plane fails (code
/// `tiles`), one listed twice too (code `duplicate-pixel`).
pub fn tile_pixels(pixels: &Tensor, values: &Tensor, height: u64, width: u64, tile: u64, overlap: u64) -> Result<(Tensor, Tensor), PluginError> {
    #[cfg(target_arch = "wasm32")]
    {
        let t = crate::bindings::tensorgate::plugin::ops::tile_pixels(pixels.handle(), values.handle(), height, width, tile, overlap)?;
        Ok((Tensor::from_handle(t.input), Tensor::from_handle(t.tiles)))
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let grid = grid(height, width, tile, overlap)?;
        let coords = pixel_list(pixels)?;
        if values.dtype() != Dtype::F32 || values.shape().len() != 1 {
            return Err(PluginError::new("tiles", format!("`values` must be f32 [n] (one per pixel), got {} of shape {:?}", values.dtype().name(), values.shape())));
        }
        let (tiles, input) = tensorgate_ops::tiles::tile_pixels(&grid, &coords, values.data()).map_err(op_err)?;
        let m = tiles.len() as u64;
        let tiles: Vec<i64> = tiles.iter().map(|&t| t as i64).collect();
        Ok((Tensor::from_parts(Dtype::F32, vec![m, 1, tile, tile], input)?, Tensor::from_slice(&[m], &tiles)?))
    }
}

/// Stitches a model's per-pixel output `[m, C, tile, tile]` for the tiles
/// [`tile_pixels`] returned back to f32 `[n, C]`, each pixel taking the
/// values of the tile that owns it.
#[allow(clippy::too_many_arguments)]
pub fn untile_pixels(output: &Tensor, pixels: &Tensor, tiles: &Tensor, height: u64, width: u64, tile: u64, overlap: u64) -> Result<Tensor, PluginError> {
    #[cfg(target_arch = "wasm32")]
    {
        let t = crate::bindings::tensorgate::plugin::ops::untile_pixels(output.handle(), pixels.handle(), tiles.handle(), height, width, tile, overlap)?;
        Ok(Tensor::from_handle(t))
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let grid = grid(height, width, tile, overlap)?;
        let coords = pixel_list(pixels)?;
        let run = indices(tiles, "untile-pixels' tiles")?;
        if output.dtype() != Dtype::F32 {
            return Err(PluginError::new("tiles", format!("model output is {}, expected f32", output.dtype().name())));
        }
        let (data, c) = tensorgate_ops::tiles::untile_pixels(&grid, output.data(), output.shape(), &coords, &run).map_err(op_err)?;
        Tensor::from_parts(Dtype::F32, vec![coords.len() as u64 / 2, c as u64], data)
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn indices(t: &Tensor, what: &str) -> Result<Vec<i64>, PluginError> {
    if t.dtype() != Dtype::I64 {
        return Err(PluginError::new("op", format!("{what} must be an i64 tensor, got {} of shape {:?}", t.dtype().name(), t.shape())));
    }
    Ok(tensorgate_ops::bytes::indices(t.data()))
}

/// The elements of an f32 `source` strictly above `threshold` (NaN never
/// is): i64 `[n]` flat indices, ascending, and f32 `[n]` values.
pub fn select_above(source: &Tensor, threshold: f32) -> Result<(Tensor, Tensor), PluginError> {
    #[cfg(target_arch = "wasm32")]
    {
        let s = crate::bindings::tensorgate::plugin::ops::select_above(source.handle(), threshold)?;
        Ok((Tensor::from_handle(s.indices), Tensor::from_handle(s.values)))
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        if source.dtype() != Dtype::F32 {
            return Err(PluginError::new(
                "op",
                format!("select-above needs an f32 source, got {} of shape {:?}", source.dtype().name(), source.shape()),
            ));
        }
        let (i, v) = tensorgate_ops::bytes::select_above_f32(source.data(), threshold);
        let n = i.len() as u64;
        Ok((Tensor::from_slice(&[n], &i)?, Tensor::from_parts(Dtype::F32, vec![n], v)?))
    }
}

/// A new `[n, count]` tensor of the source's dtype for `n` indices:
/// `out[i, k] = source[indices[i] + k * stride]`.
pub fn gather(source: &Tensor, indices_: &Tensor, count: u64, stride: u64) -> Result<Tensor, PluginError> {
    #[cfg(target_arch = "wasm32")]
    {
        let t = crate::bindings::tensorgate::plugin::ops::gather(source.handle(), indices_.handle(), count, stride)?;
        Ok(Tensor::from_handle(t))
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let at = indices(indices_, "gather's indices")?;
        let (c, s) = (usize::try_from(count).unwrap_or(usize::MAX), usize::try_from(stride).unwrap_or(usize::MAX));
        let data = tensorgate_ops::bytes::gather(source.data(), source.dtype().size(), &at, c, s).map_err(op_err)?;
        Tensor::from_parts(source.dtype(), vec![at.len() as u64, count], data)
    }
}

/// `target[indices[i]] = values[i]` for every `i`, in order (a repeated
/// index keeps the last value); `values` has the target's dtype.
pub fn scatter(target: &mut Tensor, indices_: &Tensor, values: &Tensor) -> Result<(), PluginError> {
    #[cfg(target_arch = "wasm32")]
    {
        crate::bindings::tensorgate::plugin::ops::scatter(target.handle(), indices_.handle(), values.handle())?;
        Ok(())
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let at = indices(indices_, "scatter's indices")?;
        if values.dtype() != target.dtype() {
            return Err(PluginError::new(
                "op",
                format!("scatter's values are {}, the target is {}", values.dtype().name(), target.dtype().name()),
            ));
        }
        let size = target.dtype().size();
        tensorgate_ops::bytes::scatter(target.data_mut(), size, &at, values.data()).map_err(op_err)
    }
}

/// Copies the box of `size` at `source_at` in `source` to `target_at` in
/// `target`: same rank, same dtype, the box inside both.
pub fn copy_region(source: &Tensor, source_at: &[u64], target: &mut Tensor, target_at: &[u64], size: &[u64]) -> Result<(), PluginError> {
    #[cfg(target_arch = "wasm32")]
    {
        crate::bindings::tensorgate::plugin::ops::copy_region(source.handle(), source_at, target.handle(), target_at, size)?;
        Ok(())
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        if source.dtype() != target.dtype() {
            return Err(PluginError::new(
                "op",
                format!("copy-region's source is {}, the target is {}", source.dtype().name(), target.dtype().name()),
            ));
        }
        let (element, target_shape) = (source.dtype().size(), target.shape().to_vec());
        tensorgate_ops::bytes::copy_region(source.data(), source.shape(), source_at, target.data_mut(), &target_shape, target_at, size, element)
            .map_err(op_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Dtype;

    #[test]
    fn operations_follow_the_contract() {
        let plane = Tensor::from_slice(&[2, 3], &[0.0f32, 5.0, 1.0, 0.0, 0.0, 7.5]).unwrap();
        let (i, v) = select_above(&plane, 1.0).unwrap();
        assert_eq!((i.to_vec_i64(), v.to_f32().unwrap()), (vec![1, 5], vec![5.0, 7.5]));
        let mut dense = Tensor::zeros(Dtype::F32, &[2, 3]).unwrap();
        scatter(&mut dense, &i, &v).unwrap();
        assert_eq!(dense.to_f32().unwrap(), vec![0.0, 5.0, 0.0, 0.0, 0.0, 7.5]);
        let g = gather(&dense, &Tensor::from_slice(&[2], &[1i64, 2]).unwrap(), 2, 3).unwrap();
        assert_eq!((g.shape().to_vec(), g.to_f32().unwrap()), (vec![2, 2], vec![5.0, 0.0, 0.0, 7.5]));
        let bad = Tensor::from_slice(&[1], &[6i64]).unwrap();
        assert_eq!(gather(&dense, &bad, 1, 1).unwrap_err().message, "indices[0] = 6 is outside 0..6");
        let mut tile = Tensor::zeros(Dtype::F32, &[1, 2]).unwrap();
        copy_region(&dense, &[1, 1], &mut tile, &[0, 0], &[1, 2]).unwrap();
        assert_eq!(tile.to_f32().unwrap(), vec![0.0, 7.5]);
        assert!(scatter(&mut tile, &i, &i).unwrap_err().message.contains("values are i64, the target is f32"));
    }

    impl Tensor {
        fn to_vec_i64(&self) -> Vec<i64> {
            self.view::<i64>().unwrap().into_owned()
        }
    }
}
