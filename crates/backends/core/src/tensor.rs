//! The host's own tensor type. Everything between the plugin boundary and
//! the model executor (validation, batching, splitting) works on these;
//! plugins reach them only through handles (`plugin/`), and libtorch only in
//! `executor/`. A tensor's bytes ([`Buffer`]) are either the host's own or
//! memory that libtorch owns and lends without a copy: the tensors a plugin
//! makes are allocated by libtorch, so the model runs on them as they are,
//! and the model's outputs stay libtorch tensors until the plugin reads them.

use serde::Deserialize;

/// Element type of a tensor (written in manifests as `f32`, `f64`, `i64`,
/// `i32`, `u8`, `bool`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// 32-bit float.
    F32,
    /// 64-bit float.
    F64,
    /// 64-bit signed integer.
    I64,
    /// 32-bit signed integer.
    I32,
    /// Byte.
    U8,
    /// Boolean, one byte per element (0 or 1).
    Bool,
}

impl Dtype {
    /// Every dtype, in declaration order.
    pub const ALL: [Dtype; 6] = [Dtype::F32, Dtype::F64, Dtype::I64, Dtype::I32, Dtype::U8, Dtype::Bool];

    /// Size of one element in bytes.
    pub fn size(self) -> u64 {
        match self {
            Dtype::F64 | Dtype::I64 => 8,
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::U8 | Dtype::Bool => 1,
        }
    }

    /// The name as written in manifests.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F64 => "f64",
            Dtype::I64 => "i64",
            Dtype::I32 => "i32",
            Dtype::U8 => "u8",
            Dtype::Bool => "bool",
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A dense tensor: C-contiguous, little-endian element bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tensor {
    /// Element type.
    pub dtype: Dtype,
    /// Dimensions, the batch dimension first.
    pub shape: Vec<u64>,
    /// `shape.product() * dtype.size()` bytes.
    pub data: Buffer,
}

/// Memory another library owns (a libtorch tensor's storage), lent to the
/// host as plain bytes for as long as the value lives.
pub trait LentBytes: Send + Sync + std::fmt::Debug {
    /// The bytes.
    fn bytes(&self) -> &[u8];
    /// The bytes, to write; memory others may share is first copied.
    fn bytes_mut(&mut self) -> &mut [u8];
    /// For the lender to recognise its own.
    fn as_any(&self) -> &dyn std::any::Any;
}

/// The bytes of a tensor: the host's own, or lent by libtorch.
pub enum Buffer {
    /// Bytes the host allocated.
    Host(Vec<u8>),
    /// Bytes libtorch owns (see [`LentBytes`]).
    Lent(Box<dyn LentBytes>),
}

impl std::ops::Deref for Buffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Buffer::Host(v) => v,
            Buffer::Lent(l) => l.bytes(),
        }
    }
}

impl std::ops::DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            Buffer::Host(v) => v,
            Buffer::Lent(l) => l.bytes_mut(),
        }
    }
}

impl From<Vec<u8>> for Buffer {
    fn from(v: Vec<u8>) -> Buffer {
        Buffer::Host(v)
    }
}

impl Clone for Buffer {
    /// A copy of the bytes, the host's own.
    fn clone(&self) -> Buffer {
        Buffer::Host(self.to_vec())
    }
}

impl PartialEq for Buffer {
    fn eq(&self, other: &Buffer) -> bool {
        **self == **other
    }
}

impl Eq for Buffer {}

impl PartialEq<[u8]> for Buffer {
    fn eq(&self, other: &[u8]) -> bool {
        **self == *other
    }
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if matches!(self, Buffer::Host(_)) { "host" } else { "lent" };
        write!(f, "Buffer({kind}, {} bytes)", self.len())
    }
}

/// A tensor that cannot be used as it is.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TensorError {
    /// The byte length does not match shape × element size.
    #[error("tensor of dtype {dtype} and shape {shape:?} needs {expected} bytes, has {actual}")]
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
}

impl Tensor {
    /// Number of elements, or `TooLarge` when it overflows (or a dimension
    /// does not fit an `i64`, as libtorch needs).
    pub fn numel(&self) -> Result<u64, TensorError> {
        self.shape
            .iter()
            .try_fold(1u64, |acc, &d| if d > i64::MAX as u64 { None } else { acc.checked_mul(d) })
            .ok_or_else(|| TensorError::TooLarge(self.shape.clone()))
    }

    /// Checks that the bytes match the shape and dtype.
    pub fn validate(&self) -> Result<(), TensorError> {
        let expected = self
            .numel()?
            .checked_mul(self.dtype.size())
            .ok_or_else(|| TensorError::TooLarge(self.shape.clone()))?;
        if expected != self.data.len() as u64 {
            return Err(TensorError::ByteLength {
                dtype: self.dtype,
                shape: self.shape.clone(),
                expected,
                actual: self.data.len() as u64,
            });
        }
        Ok(())
    }

    /// Rows along the batch (leading) dimension; 1 for a 0-d tensor.
    pub fn rows(&self) -> u64 {
        self.shape.first().copied().unwrap_or(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_length_mismatch_is_named() {
        let t = Tensor { dtype: Dtype::F32, shape: vec![2, 3], data: vec![0; 20].into() };
        let err = t.validate().unwrap_err();
        assert_eq!(err, TensorError::ByteLength { dtype: Dtype::F32, shape: vec![2, 3], expected: 24, actual: 20 });
        assert!(err.to_string().contains("f32 and shape [2, 3] needs 24 bytes, has 20"), "{err}");
    }

    #[test]
    fn overflowing_shape_is_refused() {
        let t = Tensor { dtype: Dtype::F64, shape: vec![u64::MAX / 2, 4], data: vec![].into() };
        assert!(matches!(t.validate(), Err(TensorError::TooLarge(_))));
        let t = Tensor { dtype: Dtype::F64, shape: vec![1 << 62, 4], data: vec![].into() };
        assert!(matches!(t.validate(), Err(TensorError::TooLarge(_))), "bytes overflow");
    }

    #[test]
    fn manifest_names_parse() {
        #[derive(Deserialize)]
        struct W {
            d: Vec<Dtype>,
        }
        let w: W = toml::from_str("d = ['f32', 'f64', 'i64', 'i32', 'u8', 'bool']").unwrap();
        assert_eq!(w.d, Dtype::ALL);
        assert!(toml::from_str::<W>("d = ['f16']").is_err());
        assert_eq!(Dtype::ALL.map(|d| d.name()).join(","), "f32,f64,i64,i32,u8,bool");
    }
}
