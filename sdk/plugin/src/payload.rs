//! [`Payload`]: the bytes of the item being preprocessed. In a plugin they
//! stay in the host: the plugin reads the ranges it needs (a header, a small
//! JSON body) or asks for tensors made of them ([`Payload::npy`],
//! [`Payload::npz`], [`Payload::tensor`]) without the bulk entering its
//! memory. Natively the payload holds its bytes itself.

use std::borrow::Cow;

use crate::{Dtype, PluginError, Tensor};

/// The bytes of one item (valid during its `preprocess` call).
#[derive(Debug)]
pub struct Payload {
    len: u64,
    #[cfg(target_arch = "wasm32")]
    handle: crate::bindings::tensorgate::plugin::types::Payload,
    #[cfg(not(target_arch = "wasm32"))]
    data: Vec<u8>,
}

impl Payload {
    /// Takes over the host's payload handle.
    #[cfg(target_arch = "wasm32")]
    pub(crate) fn from_handle(handle: crate::bindings::tensorgate::plugin::types::Payload) -> Payload {
        Payload { len: handle.len(), handle }
    }

    /// A payload of `data` (native builds: tests, benchmarks).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_bytes(data: Vec<u8>) -> Payload {
        Payload { len: data.len() as u64, data }
    }

    /// The host's handle (plugin builds).
    #[cfg(target_arch = "wasm32")]
    pub(crate) fn handle(&self) -> &crate::bindings::tensorgate::plugin::types::Payload {
        &self.handle
    }

    /// The bytes (native builds).
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn data(&self) -> &[u8] {
        &self.data
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the item is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes `offset .. offset + len` (in a plugin: copied in from the host).
    pub fn read(&self, offset: u64, len: u64) -> Result<Cow<'_, [u8]>, PluginError> {
        #[cfg(target_arch = "wasm32")]
        {
            Ok(Cow::Owned(self.handle.read(offset, len)?))
        }
        #[cfg(not(target_arch = "wasm32"))]
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(Cow::Borrowed(&self.data[offset as usize..end as usize])),
            _ => Err(PluginError::new("range", format!("bytes {offset}..{offset}+{len} are outside the item's {}", self.len))),
        }
    }

    /// All the bytes (for small items: JSON, a PNG).
    pub fn bytes(&self) -> Result<Cow<'_, [u8]>, PluginError> {
        self.read(0, self.len)
    }

    /// A tensor of `dtype` and `shape` made of the bytes from `offset` on.
    pub fn tensor(&self, offset: u64, dtype: Dtype, shape: &[u64]) -> Result<Tensor, PluginError> {
        #[cfg(target_arch = "wasm32")]
        {
            Ok(Tensor::from_handle(self.handle.tensor(offset, dtype, shape)?))
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            let need = tensorgate_ops::elements(shape)
                .ok()
                .and_then(|n| n.checked_mul(dtype.size()))
                .ok_or_else(|| PluginError::new("shape", format!("a {} tensor of shape {shape:?} is too large", dtype.name())))?;
            let bytes = self.read(offset, need as u64).map_err(|_| {
                PluginError::new("range", format!(
                    "a {} tensor of shape {shape:?} ({need} bytes) at byte {offset} does not fit in the item's {} bytes",
                    dtype.name(), self.len
                ))
            })?;
            Tensor::from_bytes(dtype, shape, &bytes)
        }
    }

    /// The payload read as a NumPy `.npy` file (C order): its array. In a
    /// plugin only the header enters the plugin: it is parsed here and the
    /// host makes a tensor of the body ([`Payload::tensor`]).
    pub fn npy(&self) -> Result<Tensor, PluginError> {
        #[cfg(target_arch = "wasm32")]
        {
            use crate::npy::{descr_dtype, npy_err};
            let prefix = self.read(0, self.len.min(tensorgate_npy::PREFIX_LEN as u64))?;
            let end = tensorgate_npy::header_end(&prefix).map_err(npy_err)? as u64;
            let head = if end <= self.len { self.read(0, end)? } else { prefix };
            let (descr, shape, start) = tensorgate_npy::parse_header(&head, self.len as usize).map_err(npy_err)?;
            self.tensor(start as u64, descr_dtype(&descr)?, &shape)
        }
        #[cfg(not(target_arch = "wasm32"))]
        crate::npy::parse_npy(&self.data)
    }

    /// The payload read as an uncompressed `.npz` (`numpy.savez`): its
    /// arrays, named without `.npy`, in archive order.
    pub fn npz(&self) -> Result<Vec<(String, Tensor)>, PluginError> {
        #[cfg(target_arch = "wasm32")]
        {
            Ok(self.handle.npz()?.into_iter().map(|(n, h)| (n, Tensor::from_handle(h))).collect())
        }
        #[cfg(not(target_arch = "wasm32"))]
        crate::npy::parse_npz(&self.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_views_are_checked() {
        let p = Payload::from_bytes((0u8..16).collect());
        assert_eq!(&*p.read(2, 3).unwrap(), &[2, 3, 4]);
        assert_eq!(p.read(15, 2).unwrap_err().message, "bytes 15..15+2 are outside the item's 16");
        let t = p.tensor(8, Dtype::U8, &[2, 4]).unwrap();
        assert_eq!(t.view::<u8>().unwrap().to_vec(), (8u8..16).collect::<Vec<_>>());
        let e = p.tensor(8, Dtype::F32, &[4]).unwrap_err();
        assert_eq!(e.message, "a f32 tensor of shape [4] (16 bytes) at byte 8 does not fit in the item's 16 bytes");
    }
}
