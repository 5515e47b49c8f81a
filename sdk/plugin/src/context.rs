//! A small binary codec for the opaque context `preprocess` hands to
//! `postprocess`: numbers, strings, metadata and aligned numeric slices
//! (read back without copies when aligned).

use crate::tensor::{to_bytes, view, Pod};
use crate::PluginError;

fn err(message: impl Into<String>) -> PluginError {
    PluginError::new("context", format!("corrupt plugin context: {}", message.into()))
}

/// Builds a context.
#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty context.
    pub fn new() -> Self {
        Writer::default()
    }

    /// Appends a number.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a string.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64);
        self.buf.extend_from_slice(s.as_bytes());
        self
    }

    /// Appends key/value metadata (e.g. from [`crate::Item::keep_meta`]).
    pub fn meta(&mut self, meta: &[(String, String)]) -> &mut Self {
        self.u64(meta.len() as u64);
        for (k, v) in meta {
            self.str(k).str(v);
        }
        self
    }

    /// Appends a numeric slice, 8-byte aligned so that it reads back in place.
    pub fn slice<T: Pod>(&mut self, values: &[T]) -> &mut Self {
        self.u64(values.len() as u64);
        self.buf.resize(self.buf.len().next_multiple_of(8), 0);
        self.buf.extend_from_slice(&to_bytes(values));
        self
    }

    /// The encoded bytes.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads a context in the order it was written.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], PluginError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or_else(|| err("ends early"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// Reads a number.
    pub fn u64(&mut self) -> Result<u64, PluginError> {
        Ok(u64::read(self.take(8)?))
    }

    /// Reads a string.
    pub fn str(&mut self) -> Result<String, PluginError> {
        let n = self.u64()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| err("string is not UTF-8"))
    }

    /// Reads metadata written by [`Writer::meta`].
    pub fn meta(&mut self) -> Result<Vec<(String, String)>, PluginError> {
        let n = self.u64()? as usize;
        (0..n).map(|_| Ok((self.str()?, self.str()?))).collect()
    }

    /// Reads a numeric slice written by [`Writer::slice`], borrowed in place when aligned.
    pub fn slice_ref<T: Pod>(&mut self) -> Result<std::borrow::Cow<'a, [T]>, PluginError> {
        let n = self.u64()? as usize;
        self.pos = self.pos.next_multiple_of(8);
        let bytes = n.checked_mul(T::SIZE).ok_or_else(|| err("slice length overflows"))?;
        Ok(view(self.take(bytes)?))
    }

    /// Reads a numeric slice written by [`Writer::slice`] into a vector.
    pub fn slice<T: Pod>(&mut self) -> Result<Vec<T>, PluginError> {
        Ok(self.slice_ref()?.into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let mut w = Writer::new();
        w.str("run").meta(&[("event".into(), "7".into())]).slice(&[1.5f32, -2.0]).u64(9);
        let bytes = w.finish();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.str().unwrap(), "run");
        assert_eq!(r.meta().unwrap(), vec![("event".to_string(), "7".to_string())]);
        assert_eq!(r.slice::<f32>().unwrap(), vec![1.5, -2.0]);
        assert_eq!(r.u64().unwrap(), 9);
        let mut short = Reader::new(&bytes[..bytes.len() - 1]);
        short.str().unwrap();
        short.meta().unwrap();
        short.slice::<f32>().unwrap();
        assert!(short.u64().unwrap_err().message.contains("ends early"));
    }
}
