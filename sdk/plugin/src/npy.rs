//! NumPy `.npy` and (uncompressed) `.npz` reading and writing of bytes the
//! plugin holds, exactly as `numpy.save`/`numpy.savez` write them. A plugin
//! reading its item's arrays asks the host instead ([`crate::Payload::npy`],
//! [`crate::Payload::npz`]), and replies with arrays through
//! [`crate::Output::npz`]: then the arrays never enter its memory. The
//! format is `tensorgate-npy` (shared with the host and the Python
//! bindings); this module only maps its arrays to [`Tensor`]s and its errors
//! to [`PluginError`]s (code `npy`), with the host's messages.

use tensorgate_npy::{Array, Descr};

use crate::{Dtype, PluginError, Tensor};

fn err(message: impl Into<String>) -> PluginError {
    PluginError::new("npy", message)
}

pub(crate) fn npy_err(e: tensorgate_npy::Error) -> PluginError {
    err(e.to_string())
}

pub(crate) fn descr_dtype(descr: &Descr) -> Result<Dtype, PluginError> {
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
    Tensor::from_bytes(v.dtype, &v.shape, v.data)
}

/// Writes a tensor as a version-1 `.npy` file.
///
/// # Panics
/// In a plugin, if the host refuses to read the tensor back (it cannot: the
/// tensor is the plugin's own).
pub fn write_npy(t: &Tensor) -> Vec<u8> {
    let data = t.bytes().expect("reading one's own tensor");
    let mut out = Vec::with_capacity(128 + data.len());
    tensorgate_npy::write_npy_header(&mut out, &dtype_descr(t.dtype()), t.shape());
    out.extend_from_slice(&data);
    out
}

/// Parses an uncompressed `.npz` (as `numpy.savez` writes) into named tensors, in archive order.
pub fn parse_npz(bytes: &[u8]) -> Result<Vec<(String, Tensor)>, PluginError> {
    tensorgate_npy::parse_npz(bytes)
        .map_err(npy_err)?
        .into_iter()
        .map(|(name, array)| match to_view(array) {
            Ok(v) => Ok((name, Tensor::from_bytes(v.dtype, &v.shape, v.data)?)),
            Err(e) => Err(err(format!("npz entry '{name}': {}", e.message))),
        })
        .collect()
}

/// Writes named tensors as an uncompressed `.npz` that `numpy.load` reads,
/// byte for byte as the host writes an npz reply body.
///
/// # Panics
/// If a name is longer than a zip archive allows (65 531 bytes, less the
/// `.npy` suffix): a bug in the plugin, reported as its trap message.
pub fn write_npz(entries: &[(String, Tensor)]) -> Vec<u8> {
    let data: Vec<_> = entries.iter().map(|(_, t)| t.bytes().expect("reading one's own tensor")).collect();
    let descrs: Vec<Descr> = entries.iter().map(|(_, t)| dtype_descr(t.dtype())).collect();
    let parts: Vec<(&str, &Descr, &[u64], &[u8])> =
        entries.iter().zip(&descrs).zip(&data).map(|(((n, t), d), b)| (n.as_str(), d, t.shape(), &b[..])).collect();
    match tensorgate_npy::write_npz(&parts) {
        Ok(z) => z,
        Err(e) => panic!("write_npz: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_and_npz_round_trip() {
        let a = Tensor::from_parts(Dtype::F32, vec![2, 3], (0..24).collect()).unwrap();
        let b = Tensor::from_slice(&[1], &[7i64]).unwrap();
        let key = |t: &Tensor| (t.dtype(), t.shape().to_vec(), t.data().to_vec());
        assert_eq!(key(&parse_npy(&write_npy(&a)).unwrap()), key(&a));
        let (ka, kb) = (key(&a), key(&b));
        let z = parse_npz(&write_npz(&[("a".into(), a), ("b".into(), b)])).unwrap();
        let z: Vec<_> = z.iter().map(|(n, t)| (n.clone(), key(t))).collect();
        assert_eq!(z, vec![("a".to_string(), ka), ("b".to_string(), kb)]);
        let v = view_npy(&write_npy(&Tensor::from_slice(&[2], &[1.5f32, 2.5]).unwrap())).unwrap().view::<f32>().unwrap().into_owned();
        assert_eq!(v, vec![1.5, 2.5]);
        let mut huge = write_npy(&Tensor::from_slice(&[2], &[1.5f32, 2.5]).unwrap());
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
        let ints = write_npy(&Tensor::from_slice(&[1], &[1i32]).unwrap());
        let v = view_npy(&ints).unwrap();
        assert!(v.view::<f32>().unwrap_err().message.contains("expected a f32 array, got i32 of shape [1]"));
    }

    #[test]
    fn every_dtype_round_trips() {
        for t in [
            Tensor::from_slice(&[2], &[1.5f32, -2.0]).unwrap(),
            Tensor::from_slice(&[1, 1], &[3.25f64]).unwrap(),
            Tensor::from_slice(&[3], &[-1i64, 0, 1]).unwrap(),
            Tensor::from_slice(&[], &[9i32]).unwrap(),
            Tensor::from_slice(&[2], &[7u8, 255]).unwrap(),
            Tensor::from_parts(Dtype::Boolean, vec![2], vec![1, 0]).unwrap(),
        ] {
            let back = parse_npy(&write_npy(&t)).unwrap();
            assert_eq!(back, t);
        }
    }
}
