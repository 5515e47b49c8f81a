//! [`Tensor`]: a dense tensor that, in a plugin, lives in the host (contract
//! 0.2): the plugin holds a handle, reads and writes element ranges, and
//! hands it to the model or to a bulk operation ([`crate::ops`]) by handle.
//! Compiled natively (unit tests, benchmarks) the same type holds its bytes
//! itself and the operations run in place, with the host's semantics.
//!
//! Every read or write of elements crosses the component boundary in a
//! plugin: read what the plugin's logic needs (indices, a few scores), and
//! let the host move bulk data.

use std::borrow::Cow;

use crate::{Dtype, PluginError};

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

/// The little-endian bytes of `values`: borrowed on a little-endian machine
/// (wasm32 is one), copied otherwise.
pub fn as_bytes<T: Pod>(values: &[T]) -> Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        // SAFETY: T is a plain numeric type without padding; any byte view of it is valid.
        return Cow::Borrowed(unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values)) });
    }
    Cow::Owned(to_bytes(values))
}

/// Little-endian bytes of `values` (one copy, no per-element branching).
pub fn to_bytes<T: Pod>(values: &[T]) -> Vec<u8> {
    let mut data = Vec::with_capacity(values.len() * T::SIZE);
    for v in values {
        v.write(&mut data);
    }
    data
}

fn err(code: &str, message: String) -> PluginError {
    PluginError::new(code, message)
}

/// Elements of `shape`, or an error naming it.
fn elements(shape: &[u64]) -> Result<usize, PluginError> {
    tensorgate_ops::elements(shape).map_err(|e| err("shape", e.to_string()))
}

/// A dense tensor: C-contiguous little-endian elements, held by the host
/// (in a plugin) or by itself (native builds). Made with [`Tensor::zeros`],
/// [`Tensor::from_slice`], a payload view ([`crate::Payload`]) or an
/// operation ([`crate::ops`]).
#[derive(Debug)]
#[cfg_attr(not(target_arch = "wasm32"), derive(Clone))]
pub struct Tensor {
    dtype: Dtype,
    shape: Vec<u64>,
    #[cfg(target_arch = "wasm32")]
    handle: crate::bindings::tensorgate::plugin::types::Tensor,
    #[cfg(not(target_arch = "wasm32"))]
    data: Vec<u8>,
}

impl PartialEq for Tensor {
    /// Same dtype, shape and elements (in a plugin: read from the host).
    fn eq(&self, other: &Tensor) -> bool {
        self.dtype == other.dtype && self.shape == other.shape && self.bytes().ok() == other.bytes().ok()
    }
}

impl Tensor {
    /// A zero-filled tensor of `dtype` and `shape` (the host may refuse it:
    /// past the call's tensor caps).
    pub fn zeros(dtype: Dtype, shape: &[u64]) -> Result<Tensor, PluginError> {
        #[cfg(target_arch = "wasm32")]
        {
            let handle = crate::bindings::tensorgate::plugin::types::Tensor::zeros(dtype, shape)?;
            Ok(Tensor { dtype, shape: shape.to_vec(), handle })
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            let n = elements(shape)?;
            Ok(Tensor { dtype, shape: shape.to_vec(), data: vec![0; n * dtype.size()] })
        }
    }

    /// A tensor of `dtype` and `shape` holding `data` (little-endian element
    /// bytes, exactly as many as the shape needs).
    pub fn from_bytes(dtype: Dtype, shape: &[u64], data: &[u8]) -> Result<Tensor, PluginError> {
        let need = elements(shape)? * dtype.size();
        if data.len() != need {
            return Err(err("shape", format!("a {} tensor of shape {shape:?} needs {need} bytes, got {}", dtype.name(), data.len())));
        }
        #[cfg(target_arch = "wasm32")]
        {
            let handle = crate::bindings::tensorgate::plugin::types::Tensor::from_bytes(dtype, shape, data)?;
            Ok(Tensor { dtype, shape: shape.to_vec(), handle })
        }
        #[cfg(not(target_arch = "wasm32"))]
        Ok(Tensor { dtype, shape: shape.to_vec(), data: data.to_vec() })
    }

    /// A tensor of `shape` holding `values` (as many as the shape needs).
    pub fn from_slice<T: Element>(shape: &[u64], values: &[T]) -> Result<Tensor, PluginError> {
        Self::from_bytes(T::DTYPE, shape, &as_bytes(values))
    }

    /// An f32 tensor of `shape` from `values`.
    pub fn from_f32(shape: &[u64], values: &[f32]) -> Result<Tensor, PluginError> {
        Self::from_slice(shape, values)
    }

    /// Takes over a tensor the host handed in (a model output, a kept tensor).
    #[cfg(target_arch = "wasm32")]
    pub(crate) fn from_handle(handle: crate::bindings::tensorgate::plugin::types::Tensor) -> Tensor {
        Tensor { dtype: handle.dtype(), shape: handle.shape(), handle }
    }

    /// The handle, given up to the host (a model input, a reply array).
    #[cfg(target_arch = "wasm32")]
    pub(crate) fn into_handle(self) -> crate::bindings::tensorgate::plugin::types::Tensor {
        self.handle
    }

    /// The host's handle, for an operation.
    #[cfg(target_arch = "wasm32")]
    pub(crate) fn handle(&self) -> &crate::bindings::tensorgate::plugin::types::Tensor {
        &self.handle
    }

    /// A tensor from its parts (native builds: tests, benchmarks); the bytes
    /// must match the shape.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_parts(dtype: Dtype, shape: Vec<u64>, data: Vec<u8>) -> Result<Tensor, PluginError> {
        let need = elements(&shape)? * dtype.size();
        if data.len() != need {
            return Err(err("shape", format!("a {} tensor of shape {shape:?} needs {need} bytes, got {}", dtype.name(), data.len())));
        }
        Ok(Tensor { dtype, shape, data })
    }

    /// The element bytes (native builds).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The element bytes, mutable (native builds: the host operations' mirror).
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn data_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }

    /// Element type.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// Dimensions, the batch dimension first.
    pub fn shape(&self) -> &[u64] {
        &self.shape
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().map(|&d| d as usize).product()
    }

    fn check<T: Element>(&self) -> Result<(), PluginError> {
        if self.dtype != T::DTYPE {
            return Err(err(
                "dtype",
                format!("expected a {} tensor, got {} of shape {:?}", T::DTYPE.name(), self.dtype.name(), self.shape),
            ));
        }
        Ok(())
    }

    /// The bytes of elements `start .. start + count`.
    pub fn read_bytes(&self, start: usize, count: usize) -> Result<Cow<'_, [u8]>, PluginError> {
        #[cfg(target_arch = "wasm32")]
        {
            Ok(Cow::Owned(self.handle.read(start as u64, count as u64)?))
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            let size = self.dtype.size();
            let n = self.data.len() / size;
            match start.checked_add(count) {
                Some(end) if end <= n => Ok(Cow::Borrowed(&self.data[start * size..end * size])),
                _ => Err(err("range", format!("elements {start}..{start}+{count} are outside the tensor's {n} (shape {:?})", self.shape))),
            }
        }
    }

    /// All element bytes.
    pub fn bytes(&self) -> Result<Cow<'_, [u8]>, PluginError> {
        self.read_bytes(0, self.numel())
    }

    /// Elements `start .. start + count` as `T` (which must be the dtype).
    pub fn read<T: Element>(&self, start: usize, count: usize) -> Result<Vec<T>, PluginError> {
        self.check::<T>()?;
        Ok(view::<T>(&self.read_bytes(start, count)?).into_owned())
    }

    /// All elements as `T` (which must be the dtype): borrowed natively,
    /// read from the host in a plugin.
    pub fn view<T: Element>(&self) -> Result<Cow<'_, [T]>, PluginError> {
        self.check::<T>()?;
        Ok(match self.bytes()? {
            Cow::Borrowed(b) => view(b),
            Cow::Owned(b) => Cow::Owned(view::<T>(&b).into_owned()),
        })
    }

    /// All elements as f32 (a copy).
    pub fn to_f32(&self) -> Result<Vec<f32>, PluginError> {
        Ok(self.view::<f32>()?.into_owned())
    }

    /// Overwrites elements from `start` on with `values` (of the tensor's dtype).
    pub fn write<T: Element>(&mut self, start: usize, values: &[T]) -> Result<(), PluginError> {
        self.check::<T>()?;
        #[cfg(target_arch = "wasm32")]
        {
            self.handle.write(start as u64, &as_bytes(values))?;
            Ok(())
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            let n = self.data.len() / T::SIZE;
            match start.checked_add(values.len()) {
                Some(end) if end <= n => {
                    self.data[start * T::SIZE..end * T::SIZE].copy_from_slice(&as_bytes(values));
                    Ok(())
                }
                _ => Err(err("range", format!("elements {start}..{start}+{} are outside the tensor's {n} (shape {:?})", values.len(), self.shape))),
            }
        }
    }

    /// Gives the tensor another shape of the same element count (no copy).
    pub fn reshape(&mut self, shape: &[u64]) -> Result<(), PluginError> {
        if elements(shape)? != self.numel() {
            return Err(err("shape", format!("cannot reshape {:?} ({} elements) to {shape:?}", self.shape, self.numel())));
        }
        #[cfg(target_arch = "wasm32")]
        self.handle.reshape(shape)?;
        self.shape = shape.to_vec();
        Ok(())
    }

    /// Checks that the tensor has `rank` dimensions, naming it in the error.
    pub fn expect_rank(&self, what: &str, rank: usize) -> Result<(), PluginError> {
        if self.shape.len() != rank {
            return Err(err("shape", format!("{what} must have {rank} dimensions, got shape {:?}", self.shape)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked_and_typed() {
        let mut t = Tensor::from_slice(&[2, 2], &[1.0f32, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(t.read::<f32>(1, 2).unwrap(), vec![2.0, 3.0]);
        t.write(3, &[9.0f32]).unwrap();
        assert_eq!(t.to_f32().unwrap(), vec![1.0, 2.0, 3.0, 9.0]);
        assert!(t.read::<f32>(3, 2).unwrap_err().message.contains("elements 3..3+2 are outside the tensor's 4"));
        assert!(t.read::<i64>(0, 1).unwrap_err().message.contains("expected a i64 tensor, got f32"));
        t.reshape(&[4]).unwrap();
        assert_eq!(t.shape(), &[4]);
        assert!(t.reshape(&[3]).is_err());
        assert!(Tensor::from_slice(&[3], &[1i64]).unwrap_err().message.contains("needs 24 bytes, got 8"));
    }
}
