//! Conversions between typed slices and the wire [`Tensor`].

use crate::{Dtype, PluginError, Tensor};

impl Dtype {
    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            Dtype::F64 | Dtype::I64 => 8,
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::U8 | Dtype::Boolean => 1,
        }
    }
}

impl Tensor {
    /// An f32 tensor of `shape` from `values` (length must match the shape).
    pub fn from_f32(shape: &[u64], values: &[f32]) -> Tensor {
        let mut data = Vec::with_capacity(values.len() * 4);
        for v in values {
            data.extend_from_slice(&v.to_le_bytes());
        }
        Tensor { dtype: Dtype::F32, shape: shape.to_vec(), data }
    }

    /// Number of elements the shape describes.
    pub fn numel(&self) -> usize {
        self.shape.iter().map(|&d| d as usize).product()
    }

    /// The elements as f32; errors if the dtype is not f32 or the byte length
    /// does not match the shape.
    pub fn to_f32(&self) -> Result<Vec<f32>, PluginError> {
        if self.dtype != Dtype::F32 {
            return Err(PluginError::new(
                "dtype",
                format!("expected an f32 tensor, got {:?} of shape {:?}", self.dtype, self.shape),
            ));
        }
        if self.data.len() != self.numel() * 4 {
            return Err(PluginError::new(
                "shape",
                format!("tensor of shape {:?} has {} bytes, expected {}", self.shape, self.data.len(), self.numel() * 4),
            ));
        }
        Ok(self.data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }
}
