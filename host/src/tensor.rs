//! Tensors at the plugin boundary (the WIT `tensor` record) and their
//! conversion to and from libtorch tensors, with validation.

use tch::Kind;

pub use crate::plugin::{Dtype, Tensor};

/// A tensor that cannot be used as it is.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TensorError {
    /// The byte length does not match shape × element size.
    #[error("tensor of dtype {dtype:?} and shape {shape:?} needs {expected} bytes, has {actual}")]
    ByteLength {
        /// Element type.
        dtype: Dtype,
        /// Shape.
        shape: Vec<u64>,
        /// Bytes the shape needs.
        expected: u64,
        /// Bytes present.
        actual: u64,
    },
    /// A dimension is too large to address.
    #[error("tensor shape {0:?} is too large")]
    TooLarge(Vec<u64>),
    /// libtorch produced an element type the WIT cannot carry.
    #[error("model output has unsupported element type {0:?}")]
    UnsupportedKind(Kind),
    /// A libtorch operation failed.
    #[error("libtorch: {0}")]
    Torch(String),
}

/// Size of one element in bytes.
pub fn dtype_size(dtype: Dtype) -> u64 {
    match dtype {
        Dtype::F64 | Dtype::I64 => 8,
        Dtype::F32 | Dtype::I32 => 4,
        Dtype::U8 | Dtype::Boolean => 1,
    }
}

/// The libtorch kind of a WIT dtype.
pub fn kind_of(dtype: Dtype) -> Kind {
    match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::U8 => Kind::Uint8,
        Dtype::Boolean => Kind::Bool,
    }
}

/// The WIT dtype of a libtorch kind, if it has one.
pub fn dtype_of(kind: Kind) -> Result<Dtype, TensorError> {
    Ok(match kind {
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Uint8 => Dtype::U8,
        Kind::Bool => Dtype::Boolean,
        other => return Err(TensorError::UnsupportedKind(other)),
    })
}

/// Checks that `t`'s bytes match its shape and dtype.
pub fn validate(t: &Tensor) -> Result<(), TensorError> {
    let numel = t
        .shape
        .iter()
        .try_fold(1u64, |acc, &d| if d > i64::MAX as u64 { None } else { acc.checked_mul(d) })
        .ok_or_else(|| TensorError::TooLarge(t.shape.clone()))?;
    let expected = numel
        .checked_mul(dtype_size(t.dtype))
        .ok_or_else(|| TensorError::TooLarge(t.shape.clone()))?;
    if expected != t.data.len() as u64 {
        return Err(TensorError::ByteLength {
            dtype: t.dtype,
            shape: t.shape.clone(),
            expected,
            actual: t.data.len() as u64,
        });
    }
    Ok(())
}

/// A libtorch tensor (on the CPU) holding a copy of `t`, after validation.
pub fn to_torch(t: &Tensor) -> Result<tch::Tensor, TensorError> {
    validate(t)?;
    let shape: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
    tch::Tensor::f_from_data_size(&t.data, &shape, kind_of(t.dtype)).map_err(|e| TensorError::Torch(e.to_string()))
}

/// Copies a libtorch tensor (any device, any layout) into a WIT tensor.
pub fn from_torch(t: &tch::Tensor) -> Result<Tensor, TensorError> {
    let torch = |e: tch::TchError| TensorError::Torch(e.to_string());
    let dtype = dtype_of(t.f_kind().map_err(torch)?)?;
    let t = t.f_to_device(tch::Device::Cpu).map_err(torch)?.f_contiguous().map_err(torch)?;
    let shape: Vec<u64> = t.size().iter().map(|&d| d as u64).collect();
    let numel: usize = shape.iter().product::<u64>() as usize;
    let mut data = vec![0u8; numel * dtype_size(dtype) as usize];
    t.f_copy_data_u8(&mut data, numel).map_err(torch)?;
    Ok(Tensor { dtype, shape, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_all_dtypes() {
        for (dtype, size) in [
            (Dtype::F32, 4),
            (Dtype::F64, 8),
            (Dtype::I64, 8),
            (Dtype::I32, 4),
            (Dtype::U8, 1),
            (Dtype::Boolean, 1),
        ] {
            let data: Vec<u8> = (0..6 * size).map(|i| if dtype == Dtype::Boolean { (i % 2) as u8 } else { i as u8 }).collect();
            let t = Tensor { dtype, shape: vec![2, 3], data };
            let back = from_torch(&to_torch(&t).unwrap()).unwrap();
            assert_eq!(back, t, "{dtype:?}");
        }
    }

    #[test]
    fn byte_length_mismatch_is_named() {
        let t = Tensor { dtype: Dtype::F32, shape: vec![2, 3], data: vec![0; 20] };
        let err = to_torch(&t).unwrap_err();
        assert_eq!(
            err,
            TensorError::ByteLength { dtype: Dtype::F32, shape: vec![2, 3], expected: 24, actual: 20 }
        );
        assert!(err.to_string().contains("needs 24 bytes, has 20"));
    }

    #[test]
    fn overflowing_shape_is_refused() {
        let t = Tensor { dtype: Dtype::F64, shape: vec![u64::MAX / 2, 4], data: vec![] };
        assert!(matches!(validate(&t), Err(TensorError::TooLarge(_))));
    }
}
