//! Just enough `.npy` / uncompressed `.npz` to send arrays to the generic
//! `tensors` plugin and read its replies (the layout `numpy.save` and
//! `numpy.savez` write; the plugin side is `sdk/plugin/src/npy.rs`).

const MAGIC: &[u8] = b"\x93NUMPY";

/// One array inside a parsed file: dtype descr (`<f4`), shape, raw C-order bytes.
pub struct ArrayRef<'a> {
    pub name: String,
    pub descr: String,
    pub shape: Vec<usize>,
    pub data: &'a [u8],
}

fn shape_text(shape: &[usize]) -> String {
    match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    }
}

/// Appends a version-1 `.npy` header (data 64-byte aligned) to `out`.
pub fn write_npy_header(out: &mut Vec<u8>, descr: &str, shape: &[usize]) {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {}, }}", shape_text(shape));
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
}

/// A whole `.npy` file.
pub fn write_npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + data.len());
    write_npy_header(&mut out, descr, shape);
    out.extend_from_slice(data);
    out
}

/// Writes uncompressed `.npz` files (stored zip entries `NAME.npy`, with
/// CRCs, as `numpy.savez`) of arrays with fixed names, dtypes and shapes:
/// headers are made once, so each file costs its data copy and CRC.
pub struct NpzWriter {
    entries: Vec<(Vec<u8>, Vec<u8>, crc32fast::Hasher)>,
}

impl NpzWriter {
    /// For entries `(name, descr, shape)`.
    pub fn new(entries: &[(&str, &str, Vec<usize>)]) -> Self {
        let entries = entries
            .iter()
            .map(|(name, descr, shape)| {
                let mut npy = Vec::new();
                write_npy_header(&mut npy, descr, shape);
                let mut crc = crc32fast::Hasher::new();
                crc.update(&npy);
                (format!("{name}.npy").into_bytes(), npy, crc)
            })
            .collect();
        NpzWriter { entries }
    }

    /// One `.npz` with `data[i]` as entry i's bytes.
    pub fn write(&self, data: &[&[u8]]) -> Vec<u8> {
        let size: usize = self.entries.iter().zip(data).map(|(e, d)| 2 * e.0.len() + e.1.len() + d.len() + 76).sum::<usize>() + 22;
        let mut out = Vec::with_capacity(size);
        let mut central = Vec::with_capacity(self.entries.len() * 80);
        for ((file, npy, crc0), d) in self.entries.iter().zip(data) {
            let mut crc = crc0.clone();
            crc.update(d);
            let crc = crc.finalize();
            let len = (npy.len() + d.len()) as u32;
            let offset = out.len() as u32;
            out.extend_from_slice(&[0x50, 0x4b, 0x03, 0x04, 20, 0, 0, 0, 0, 0, 0, 0, 0x21, 0]);
            out.extend_from_slice(&crc.to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&(file.len() as u16).to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes());
            out.extend_from_slice(file);
            out.extend_from_slice(npy);
            out.extend_from_slice(d);
            central.extend_from_slice(&[0x50, 0x4b, 0x01, 0x02, 20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0x21, 0]);
            central.extend_from_slice(&crc.to_le_bytes());
            central.extend_from_slice(&len.to_le_bytes());
            central.extend_from_slice(&len.to_le_bytes());
            central.extend_from_slice(&(file.len() as u16).to_le_bytes());
            central.extend_from_slice(&[0; 12]);
            central.extend_from_slice(&offset.to_le_bytes());
            central.extend_from_slice(file);
        }
        let cd_offset = out.len() as u32;
        out.extend_from_slice(&central);
        out.extend_from_slice(&[0x50, 0x4b, 0x05, 0x06, 0, 0, 0, 0]);
        out.extend_from_slice(&(self.entries.len() as u16).to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u16).to_le_bytes());
        out.extend_from_slice(&(central.len() as u32).to_le_bytes());
        out.extend_from_slice(&cd_offset.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out
    }
}

/// One uncompressed `.npz` of `(name, descr, shape, data)` entries.
pub fn write_npz(entries: &[(&str, &str, Vec<usize>, &[u8])]) -> Vec<u8> {
    let meta: Vec<(&str, &str, Vec<usize>)> = entries.iter().map(|e| (e.0, e.1, e.2.clone())).collect();
    let data: Vec<&[u8]> = entries.iter().map(|e| e.3).collect();
    NpzWriter::new(&meta).write(&data)
}

/// Value of `'key': value` in an npy header dict.
fn header_field<'a>(header: &'a str, key: &str) -> Result<&'a str, String> {
    let pat = format!("'{key}':");
    let start = header.find(&pat).ok_or_else(|| format!("npy header has no '{key}'"))? + pat.len();
    let rest = header[start..].trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')').map(|i| i + 1)
    } else if let Some(quoted) = rest.strip_prefix('\'') {
        quoted.find('\'').map(|i| i + 2)
    } else {
        rest.find([',', '}'])
    }
    .ok_or_else(|| format!("npy header field '{key}' is unterminated"))?;
    Ok(rest[..end].trim())
}

/// Parses a `.npy` file (C order).
pub fn parse_npy<'a>(name: &str, bytes: &'a [u8]) -> Result<ArrayRef<'a>, String> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("not a .npy file (bad magic)".into());
    }
    let (header_len, offset) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let end = offset + header_len;
    if end > bytes.len() {
        return Err("npy header runs past the end".into());
    }
    let header = std::str::from_utf8(&bytes[offset..end]).map_err(|_| "npy header is not text".to_string())?;
    let descr = header_field(header, "descr")?.trim_matches('\'').to_string();
    if header_field(header, "fortran_order")? != "False" {
        return Err("Fortran-order .npy is not supported".into());
    }
    let shape = header_field(header, "shape")?
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| format!("bad shape entry '{s}'")))
        .collect::<Result<Vec<_>, _>>()?;
    let itemsize = itemsize(&descr)?;
    let want = shape.iter().product::<usize>() * itemsize;
    let data = &bytes[end..];
    if data.len() != want {
        return Err(format!("npy data is {} bytes, shape {shape:?} of {descr} needs {want}", data.len()));
    }
    Ok(ArrayRef { name: name.to_string(), descr, shape, data })
}

/// Bytes per element of a dtype descr such as `<f4` or `|b1`.
pub fn itemsize(descr: &str) -> Result<usize, String> {
    descr
        .get(2..)
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("unsupported dtype '{descr}'"))
}

/// Parses an uncompressed `.npz` into its arrays, in archive order.
pub fn parse_npz(bytes: &[u8]) -> Result<Vec<ArrayRef<'_>>, String> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    let u16_at = |p: usize| u16::from_le_bytes([bytes[p], bytes[p + 1]]) as usize;
    let u32_at = |p: usize| u32::from_le_bytes([bytes[p], bytes[p + 1], bytes[p + 2], bytes[p + 3]]) as usize;
    while pos + 30 <= bytes.len() && bytes[pos..pos + 4] == [0x50, 0x4b, 0x03, 0x04] {
        let method = u16_at(pos + 8);
        let size = u32_at(pos + 18);
        let name_len = u16_at(pos + 26);
        let extra_len = u16_at(pos + 28);
        let name_start = pos + 30;
        let data_start = name_start + name_len + extra_len;
        if data_start > bytes.len() {
            return Err("npz entry header runs past the end".into());
        }
        let name = String::from_utf8_lossy(&bytes[name_start..name_start + name_len]).into_owned();
        if method != 0 {
            return Err(format!("npz entry '{name}' is compressed"));
        }
        let data_end = data_start
            .checked_add(size)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| format!("npz entry '{name}' runs past the end"))?;
        let name = name.trim_end_matches(".npy").to_string();
        let array = parse_npy(&name, &bytes[data_start..data_end]).map_err(|e| format!("npz entry '{name}': {e}"))?;
        out.push(array);
        pos = data_end;
    }
    if out.is_empty() {
        return Err("not an .npz archive (no entries)".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npz_round_trip_and_crc() {
        let a: Vec<u8> = (0..24u8).collect();
        let z = write_npz(&[("x", "<f4", vec![2, 3], &a), ("m", "|b1", vec![2], &[1, 0])]);
        let parsed = parse_npz(&z).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!((parsed[0].name.as_str(), parsed[0].descr.as_str(), parsed[0].shape.clone()), ("x", "<f4", vec![2, 3]));
        assert_eq!(parsed[0].data, &a[..]);
        assert_eq!(parsed[1].data, &[1, 0]);
        // The zip CRC-32 of entry 0 (its .npy header and data), as zipfile checks it.
        let mut npy = Vec::new();
        write_npy_header(&mut npy, "<f4", &[2, 3]);
        npy.extend_from_slice(&a);
        assert_eq!(&z[14..18], &crc32fast::hash(&npy).to_le_bytes());
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
    }
}
