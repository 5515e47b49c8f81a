//! The host's bulk operations on tensors (WIT interface `ops`): in a plugin
//! they run in the host, so the data never enters the plugin's memory;
//! natively they run here, on the same code the host runs
//! (`tensorgate-ops`), with the same checks and messages. See
//! `docs/plugin-contract.md` for each one's semantics and cost.
//!
//! Indices are i64 tensors (flat, row-major element indices).

use crate::tensor::Tensor;
#[cfg(not(target_arch = "wasm32"))]
use crate::Dtype;
use crate::PluginError;

#[cfg(not(target_arch = "wasm32"))]
fn op_err(e: tensorgate_ops::OpError) -> PluginError {
    PluginError::new("op", e.to_string())
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
