//! NumPy `.npy` and (uncompressed) `.npz` reading and writing, so plugins
//! take and give arrays exactly as `numpy.save`/`numpy.savez` write them.

use crate::{Dtype, PluginError, Tensor};

const MAGIC: &[u8] = b"\x93NUMPY";

fn err(message: impl Into<String>) -> PluginError {
    PluginError::new("npy", message)
}

fn descr_dtype(descr: &str) -> Result<Dtype, PluginError> {
    Ok(match descr {
        "<f4" => Dtype::F32,
        "<f8" => Dtype::F64,
        "<i8" => Dtype::I64,
        "<i4" => Dtype::I32,
        "|u1" | "<u1" => Dtype::U8,
        "|b1" => Dtype::Boolean,
        other => return Err(err(format!("unsupported dtype '{other}' (use little-endian f4, f8, i8, i4, u1 or b1)"))),
    })
}

fn dtype_descr(d: Dtype) -> &'static str {
    match d {
        Dtype::F32 => "<f4",
        Dtype::F64 => "<f8",
        Dtype::I64 => "<i8",
        Dtype::I32 => "<i4",
        Dtype::U8 => "|u1",
        Dtype::Boolean => "|b1",
    }
}

/// Value of `'key': value` in the npy header dict (a small Python literal).
fn header_field<'a>(header: &'a str, key: &str) -> Result<&'a str, PluginError> {
    let pat = format!("'{key}':");
    let start = header.find(&pat).ok_or_else(|| err(format!("npy header has no '{key}'")))? + pat.len();
    let rest = header[start..].trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')').map(|i| i + 1)
    } else if let Some(quoted) = rest.strip_prefix('\'') {
        quoted.find('\'').map(|i| i + 2)
    } else {
        rest.find([',', '}'])
    }
    .ok_or_else(|| err(format!("npy header field '{key}' is unterminated")))?;
    Ok(rest[..end].trim())
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

/// Parses a `.npy` file without copying its data (C order only).
pub fn view_npy(bytes: &[u8]) -> Result<NpyView<'_>, PluginError> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(err("not a .npy file (bad magic)"));
    }
    let (header_len, offset) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => return Err(err(format!("unsupported .npy version {v}"))),
    };
    let end = offset.checked_add(header_len).filter(|&e| e <= bytes.len()).ok_or_else(|| err("npy header runs past the end"))?;
    let header = std::str::from_utf8(&bytes[offset..end]).map_err(|_| err("npy header is not text"))?;
    let dtype = descr_dtype(header_field(header, "descr")?.trim_matches('\''))?;
    if header_field(header, "fortran_order")? != "False" {
        return Err(err("Fortran-order arrays are not supported; save a C-contiguous array"));
    }
    let shape_text = header_field(header, "shape")?.trim_start_matches('(').trim_end_matches(')');
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u64>().map_err(|_| err(format!("bad shape entry '{s}'"))))
        .collect::<Result<Vec<u64>, _>>()?;
    let data = &bytes[end..];
    let want = shape
        .iter()
        .try_fold(dtype.size(), |n, &d| usize::try_from(d).ok().and_then(|d| n.checked_mul(d)))
        .ok_or_else(|| err(format!("npy shape {shape:?} is too large")))?;
    if data.len() != want {
        return Err(err(format!("npy data is {} bytes, shape {shape:?} of {dtype:?} needs {want}", data.len())));
    }
    Ok(NpyView { dtype, shape, data })
}

/// Parses a `.npy` file into a tensor (C order only); see [`view_npy`] for a borrowing parse.
pub fn parse_npy(bytes: &[u8]) -> Result<Tensor, PluginError> {
    let v = view_npy(bytes)?;
    Ok(Tensor { dtype: v.dtype, shape: v.shape, data: v.data.to_vec() })
}

/// Writes a tensor as a version-1 `.npy` file.
pub fn write_npy(t: &Tensor) -> Vec<u8> {
    let shape = match t.shape.len() {
        1 => format!("({},)", t.shape[0]),
        _ => format!("({})", t.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}", dtype_descr(t.dtype));
    // Pad so that the data starts on a 64-byte boundary, header ends with '\n'.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + t.data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&t.data);
    out
}

/// Parses an uncompressed `.npz` (as `numpy.savez` writes) into named tensors, in archive order.
pub fn parse_npz(bytes: &[u8]) -> Result<Vec<(String, Tensor)>, PluginError> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    let u16_at = |p: usize| u16::from_le_bytes([bytes[p], bytes[p + 1]]) as usize;
    let u32_at = |p: usize| u32::from_le_bytes([bytes[p], bytes[p + 1], bytes[p + 2], bytes[p + 3]]) as usize;
    while pos + 30 <= bytes.len() && bytes[pos..pos + 4] == [0x50, 0x4b, 0x03, 0x04] {
        let method = u16_at(pos + 8);
        let flags = u16_at(pos + 6);
        let mut size = u32_at(pos + 18);
        let name_len = u16_at(pos + 26);
        let extra_len = u16_at(pos + 28);
        let name_start = pos + 30;
        let data_start = name_start + name_len + extra_len;
        if data_start > bytes.len() {
            return Err(err("npz entry header runs past the end"));
        }
        let name = String::from_utf8_lossy(&bytes[name_start..name_start + name_len]).into_owned();
        if method != 0 {
            return Err(err(format!("npz entry '{name}' is compressed; use numpy.savez, not savez_compressed")));
        }
        if flags & 0x08 != 0 || size == 0xffff_ffff {
            // Sizes in a data descriptor or zip64 extra field: find them in the extra field.
            size = zip64_size(&bytes[name_start + name_len..data_start]).unwrap_or(size);
        }
        let data_end = data_start.checked_add(size).filter(|&e| e <= bytes.len()).ok_or_else(|| err(format!("npz entry '{name}' runs past the end")))?;
        let tensor = parse_npy(&bytes[data_start..data_end]).map_err(|e| err(format!("npz entry '{name}': {}", e.message)))?;
        out.push((name.trim_end_matches(".npy").to_string(), tensor));
        pos = data_end;
    }
    if out.is_empty() {
        return Err(err("not an .npz archive (no entries)"));
    }
    Ok(out)
}

fn zip64_size(extra: &[u8]) -> Option<usize> {
    let mut p = 0;
    while p + 4 <= extra.len() {
        let id = u16::from_le_bytes([extra[p], extra[p + 1]]);
        let len = u16::from_le_bytes([extra[p + 2], extra[p + 3]]) as usize;
        if id == 1 && len >= 16 && p + 4 + 16 <= extra.len() {
            let b = &extra[p + 4..p + 12];
            return Some(u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as usize);
        }
        p += 4 + len;
    }
    None
}

/// Writes named tensors as an uncompressed `.npz` that `numpy.load` reads.
pub fn write_npz(entries: &[(String, Tensor)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, t) in entries {
        let file = format!("{name}.npy");
        let data = write_npy(t);
        let crc = crc32(&data);
        let offset = out.len() as u32;
        let mut local = Vec::with_capacity(30 + file.len());
        local.extend_from_slice(&[0x50, 0x4b, 0x03, 0x04, 20, 0, 0, 0, 0, 0, 0, 0, 0x21, 0]);
        local.extend_from_slice(&crc.to_le_bytes());
        local.extend_from_slice(&(data.len() as u32).to_le_bytes());
        local.extend_from_slice(&(data.len() as u32).to_le_bytes());
        local.extend_from_slice(&(file.len() as u16).to_le_bytes());
        local.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&local);
        out.extend_from_slice(file.as_bytes());
        out.extend_from_slice(&data);
        central.extend_from_slice(&[0x50, 0x4b, 0x01, 0x02, 20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0x21, 0]);
        central.extend_from_slice(&crc.to_le_bytes());
        central.extend_from_slice(&(data.len() as u32).to_le_bytes());
        central.extend_from_slice(&(data.len() as u32).to_le_bytes());
        central.extend_from_slice(&(file.len() as u16).to_le_bytes());
        central.extend_from_slice(&[0; 12]);
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(file.as_bytes());
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&[0x50, 0x4b, 0x05, 0x06, 0, 0, 0, 0]);
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// CRC-32 (IEEE), table-driven, 8 bytes per step ("slicing by 8").
fn crc32(data: &[u8]) -> u32 {
    const TABLES: [[u32; 256]; 8] = {
        let mut t = [[0u32; 256]; 8];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
                k += 1;
            }
            t[0][i] = c;
            i += 1;
        }
        let mut j = 1;
        while j < 8 {
            let mut i = 0;
            while i < 256 {
                t[j][i] = (t[j - 1][i] >> 8) ^ t[0][(t[j - 1][i] & 0xff) as usize];
                i += 1;
            }
            j += 1;
        }
        t
    };
    let mut crc = !0u32;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let lo = crc ^ u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        crc = TABLES[7][(lo & 0xff) as usize]
            ^ TABLES[6][((lo >> 8) & 0xff) as usize]
            ^ TABLES[5][((lo >> 16) & 0xff) as usize]
            ^ TABLES[4][(lo >> 24) as usize]
            ^ TABLES[3][c[4] as usize]
            ^ TABLES[2][c[5] as usize]
            ^ TABLES[1][c[6] as usize]
            ^ TABLES[0][c[7] as usize];
    }
    for &b in chunks.remainder() {
        crc = (crc >> 8) ^ TABLES[0][((crc ^ b as u32) & 0xff) as usize];
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_values() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b"The quick brown fox jumps over the lazy dog"), 0x414F_A339);
    }

    #[test]
    fn npy_and_npz_round_trip() {
        let a = Tensor { dtype: Dtype::F32, shape: vec![2, 3], data: (0..24).collect() };
        let b = Tensor { dtype: Dtype::I64, shape: vec![1], data: 7i64.to_le_bytes().to_vec() };
        let key = |t: &Tensor| (t.dtype, t.shape.clone(), t.data.clone());
        assert_eq!(key(&parse_npy(&write_npy(&a)).unwrap()), key(&a));
        let z = parse_npz(&write_npz(&[("a".into(), a.clone()), ("b".into(), b.clone())])).unwrap();
        let z: Vec<_> = z.iter().map(|(n, t)| (n.clone(), key(t))).collect();
        assert_eq!(z, vec![("a".to_string(), key(&a)), ("b".to_string(), key(&b))]);
        let v = view_npy(&write_npy(&Tensor::from_slice(&[2], &[1.5f32, 2.5]))).unwrap().view::<f32>().unwrap().into_owned();
        assert_eq!(v, vec![1.5, 2.5]);
        let mut huge = write_npy(&Tensor::from_slice(&[2], &[1.5f32, 2.5]));
        let at = huge.windows(4).position(|w| w == b"(2,)").unwrap();
        huge.splice(at..at + 4, b"(99999999999, 99999999999)".iter().copied());
        assert!(view_npy(&huge).unwrap_err().message.contains("too large"));
    }
}
