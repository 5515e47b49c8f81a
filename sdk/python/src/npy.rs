//! `.npy` / uncompressed `.npz` for sending arrays to the generic `tensors`
//! plugin and reading its replies: the format is `tensorgate-npy` (shared
//! with the plugin SDK); this module only adapts it to the NumPy array
//! interface's type strings and `usize` shapes, with errors as messages.

use tensorgate_npy::Descr;

/// One array inside a parsed file: dtype descr (`<f4`), shape, raw C-order bytes.
#[derive(Debug)]
pub struct ArrayRef<'a> {
    pub name: String,
    pub descr: String,
    pub shape: Vec<usize>,
    pub data: &'a [u8],
}

fn descr(text: &str) -> Result<Descr, String> {
    Descr::parse(text).map_err(|e| e.to_string())
}

fn shape64(shape: &[usize]) -> Vec<u64> {
    shape.iter().map(|&d| d as u64).collect()
}

fn array_ref<'a>(name: String, a: tensorgate_npy::Array<'a>) -> Result<ArrayRef<'a>, String> {
    let shape = a
        .shape
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("array '{name}': dimension {d} too large")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ArrayRef { name, descr: a.descr.as_str().to_string(), shape, data: a.data })
}

/// Bytes the elements of an array of `descr` and `shape` take (overflow-checked).
pub fn nbytes(descr_text: &str, shape: &[usize]) -> Result<usize, String> {
    tensorgate_npy::data_len(&descr(descr_text)?, &shape64(shape)).map_err(|e| e.to_string())
}

/// A whole `.npy` file.
pub fn write_npy(descr_text: &str, shape: &[usize], data: &[u8]) -> Result<Vec<u8>, String> {
    tensorgate_npy::write_npy(&descr(descr_text)?, &shape64(shape), data).map_err(|e| e.to_string())
}

/// Writes uncompressed `.npz` files (stored zip entries `NAME.npy`, with
/// CRCs, as `numpy.savez`) of arrays with fixed names, dtypes and shapes:
/// headers are made once, so each file costs its data copy and CRC.
pub struct NpzWriter(tensorgate_npy::NpzWriter);

impl NpzWriter {
    /// For entries `(name, descr, shape)`.
    pub fn new(entries: &[(&str, &str, Vec<usize>)]) -> Result<Self, String> {
        let parsed = entries
            .iter()
            .map(|(name, d, shape)| Ok((*name, descr(d)?, shape64(shape))))
            .collect::<Result<Vec<_>, String>>()?;
        tensorgate_npy::NpzWriter::new(parsed.iter().map(|(name, d, shape)| (*name, d, shape.as_slice())))
            .map(NpzWriter)
            .map_err(|e| e.to_string())
    }

    /// One `.npz` with `data[i]` as entry i's bytes.
    pub fn write(&self, data: &[&[u8]]) -> Result<Vec<u8>, String> {
        self.0.write(data).map_err(|e| e.to_string())
    }
}

/// One uncompressed `.npz` of `(name, descr, shape, data)` entries.
pub fn write_npz(entries: &[(&str, &str, Vec<usize>, &[u8])]) -> Result<Vec<u8>, String> {
    let meta: Vec<(&str, &str, Vec<usize>)> = entries.iter().map(|e| (e.0, e.1, e.2.clone())).collect();
    let data: Vec<&[u8]> = entries.iter().map(|e| e.3).collect();
    NpzWriter::new(&meta)?.write(&data)
}

/// Parses a `.npy` file (C order).
pub fn parse_npy<'a>(name: &str, bytes: &'a [u8]) -> Result<ArrayRef<'a>, String> {
    array_ref(name.to_string(), tensorgate_npy::parse_npy(bytes).map_err(|e| e.to_string())?)
}

/// Parses an uncompressed `.npz` into its arrays, in archive order.
pub fn parse_npz(bytes: &[u8]) -> Result<Vec<ArrayRef<'_>>, String> {
    tensorgate_npy::parse_npz(bytes)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|(name, a)| array_ref(name, a))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npz_round_trip_and_crc() {
        let a: Vec<u8> = (0..24u8).collect();
        let z = write_npz(&[("x", "<f4", vec![2, 3], &a), ("m", "|b1", vec![2], &[1, 0])]).unwrap();
        let parsed = parse_npz(&z).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!((parsed[0].name.as_str(), parsed[0].descr.as_str(), parsed[0].shape.clone()), ("x", "<f4", vec![2, 3]));
        assert_eq!(parsed[0].data, &a[..]);
        assert_eq!(parsed[1].data, &[1, 0]);
        // The zip CRC-32 of entry 0 (its .npy header and data), as zipfile checks it.
        let npy = write_npy("<f4", &[2, 3], &a).unwrap();
        assert_eq!(&z[14..18], &tensorgate_npy::crc32(&npy).to_le_bytes());
    }

    #[test]
    fn bad_arguments_are_messages() {
        assert!(write_npy("|O", &[1], &[0; 8]).unwrap_err().contains("object arrays"));
        assert!(write_npy("<f4", &[2], &[0; 4]).unwrap_err().contains("needs 8"));
        assert!(nbytes("<f8", &[usize::MAX, 2]).unwrap_err().contains("too large"));
        assert_eq!(nbytes("<U2", &[3]).unwrap(), 24);
        assert!(parse_npy("", b"junk").unwrap_err().contains("bad magic"));
    }
}
