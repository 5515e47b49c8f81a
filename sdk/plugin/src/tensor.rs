//! Conversions between typed slices and the wire [`Tensor`], without copies
//! where the bytes allow it.

use std::borrow::Cow;

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

    /// NumPy-style name (`f32`, `i64`, ...), for messages.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F64 => "f64",
            Dtype::I64 => "i64",
            Dtype::I32 => "i32",
            Dtype::U8 => "u8",
            Dtype::Boolean => "bool",
        }
    }
}

/// A plain little-endian number (any bit pattern valid).
pub trait Pod: Copy + Default + 'static {
    /// Size in bytes.
    const SIZE: usize;
    /// Reads one little-endian element.
    fn read(b: &[u8]) -> Self;
    /// Appends the little-endian bytes.
    fn write(self, out: &mut Vec<u8>);
    /// Stores the little-endian bytes into `dst[..SIZE]`.
    fn store(self, dst: &mut [u8]);
}

/// A numeric element type a tensor can hold.
pub trait Element: Pod {
    /// The wire dtype.
    const DTYPE: Dtype;
}

macro_rules! pod {
    ($t:ty) => {
        impl Pod for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn read(b: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(&b[..std::mem::size_of::<$t>()]);
                <$t>::from_le_bytes(a)
            }
            fn write(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            #[inline]
            fn store(self, dst: &mut [u8]) {
                dst[..std::mem::size_of::<$t>()].copy_from_slice(&self.to_le_bytes());
            }
        }
    };
}
macro_rules! element {
    ($t:ty, $d:expr) => {
        pod!($t);
        impl Element for $t {
            const DTYPE: Dtype = $d;
        }
    };
}
element!(f32, Dtype::F32);
element!(f64, Dtype::F64);
element!(i64, Dtype::I64);
element!(i32, Dtype::I32);
element!(u8, Dtype::U8);
pod!(u32);
pod!(u64);

/// Views little-endian element bytes as `&[T]`: borrowed when the bytes are
/// aligned (the usual case: allocations are 8-aligned), copied otherwise.
pub fn view<T: Pod>(bytes: &[u8]) -> Cow<'_, [T]> {
    if cfg!(target_endian = "little") {
        // SAFETY: T is a plain numeric type (every bit pattern valid); align_to
        // only yields a middle part that is correctly aligned.
        let (head, mid, tail) = unsafe { bytes.align_to::<T>() };
        if head.is_empty() && tail.is_empty() {
            return Cow::Borrowed(mid);
        }
    }
    Cow::Owned(bytes.chunks_exact(T::SIZE).map(T::read).collect())
}

/// Little-endian bytes of `values` (one copy, no per-element branching).
pub fn to_bytes<T: Pod>(values: &[T]) -> Vec<u8> {
    let mut data = Vec::with_capacity(values.len() * T::SIZE);
    for v in values {
        v.write(&mut data);
    }
    data
}

/// Writes `value` as element `index` of `bytes` (little-endian).
#[inline]
pub fn put<T: Pod>(bytes: &mut [u8], index: usize, value: T) {
    value.store(&mut bytes[index * T::SIZE..]);
}

impl Tensor {
    /// A tensor of `shape` from `values` (length must match the shape).
    pub fn from_slice<T: Element>(shape: &[u64], values: &[T]) -> Tensor {
        Tensor { dtype: T::DTYPE, shape: shape.to_vec(), data: to_bytes(values) }
    }

    /// An f32 tensor of `shape` from `values` (length must match the shape).
    pub fn from_f32(shape: &[u64], values: &[f32]) -> Tensor {
        Self::from_slice(shape, values)
    }

    /// A zero-filled tensor of `dtype` and `shape`.
    pub fn zeros(dtype: Dtype, shape: &[u64]) -> Tensor {
        let n: usize = shape.iter().map(|&d| d as usize).product();
        Tensor { dtype, shape: shape.to_vec(), data: vec![0; n * dtype.size()] }
    }

    /// Number of elements the shape describes.
    pub fn numel(&self) -> usize {
        self.shape.iter().map(|&d| d as usize).product()
    }

    /// The elements as `&[T]` (borrowed when aligned); errors if the dtype is
    /// not `T` or the byte length does not match the shape.
    pub fn view<T: Element>(&self) -> Result<Cow<'_, [T]>, PluginError> {
        if self.dtype != T::DTYPE {
            return Err(PluginError::new(
                "dtype",
                format!("expected a {} tensor, got {} of shape {:?}", T::DTYPE.name(), self.dtype.name(), self.shape),
            ));
        }
        if self.data.len() != self.numel() * T::SIZE {
            return Err(PluginError::new(
                "shape",
                format!("tensor of shape {:?} has {} bytes, expected {}", self.shape, self.data.len(), self.numel() * T::SIZE),
            ));
        }
        Ok(view(&self.data))
    }

    /// The elements as f32 (a copy); see [`Tensor::view`] for a borrowing view.
    pub fn to_f32(&self) -> Result<Vec<f32>, PluginError> {
        Ok(self.view::<f32>()?.into_owned())
    }

    /// Checks that the tensor has `rank` dimensions, naming it in the error.
    pub fn expect_rank(&self, what: &str, rank: usize) -> Result<(), PluginError> {
        if self.shape.len() != rank {
            return Err(PluginError::new("shape", format!("{what} must have {rank} dimensions, got shape {:?}", self.shape)));
        }
        Ok(())
    }
}
