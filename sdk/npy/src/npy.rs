//! One `.npy` file: magic, version, header dict, C-order element bytes.

use crate::descr::Descr;
use crate::{header, Error};

/// The first six bytes of every `.npy` file.
pub const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Headers are padded so that the data starts on a multiple of this.
const ALIGN: usize = 64;

/// A parsed `.npy` file: its type, shape and element bytes, borrowed from the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Array<'a> {
    /// Element type.
    pub descr: Descr,
    /// Shape (C order); empty for a 0-d array.
    pub shape: Vec<u64>,
    /// The element bytes, exactly `data_len(descr, shape)` of them.
    pub data: &'a [u8],
}

/// Bytes the elements of `shape` take, or [`Error::TooLarge`] when that
/// does not fit in a `usize` (on wasm32: 4 GiB).
pub fn data_len(descr: &Descr, shape: &[u64]) -> Result<usize, Error> {
    let too_large = || Error::TooLarge { shape: shape.to_vec(), itemsize: descr.itemsize() };
    if shape.contains(&0) {
        return Ok(0);
    }
    shape
        .iter()
        .try_fold(descr.itemsize() as u64, |n, &d| n.checked_mul(d))
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(too_large)
}

/// Bytes of a `.npy` file that always hold its header length: a reader
/// that fetches the file in ranges reads this many first, then
/// [`header_end`] bytes.
pub const PREFIX_LEN: usize = 12;

/// Where the header of a `.npy` file ends (its data starts), from the
/// file's first [`PREFIX_LEN`] bytes (or all of a shorter file).
pub fn header_end(prefix: &[u8]) -> Result<usize, Error> {
    if prefix.len() < MAGIC.len() || &prefix[..MAGIC.len()] != MAGIC {
        return Err(Error::BadMagic);
    }
    let (major, minor) = match prefix.get(6..8) {
        Some(&[major, minor]) => (major, minor),
        _ => return Err(Error::Truncated { what: "version" }),
    };
    let (len_bytes, start) = match major {
        1 => (2, 10),
        2 | 3 => (4, 12),
        _ => return Err(Error::UnsupportedVersion { major, minor }),
    };
    let len_field = prefix.get(8..start).ok_or(Error::Truncated { what: "header length" })?;
    let header_len = if len_bytes == 2 {
        u16::from_le_bytes([len_field[0], len_field[1]]) as usize
    } else {
        u32::from_le_bytes([len_field[0], len_field[1], len_field[2], len_field[3]]) as usize
    };
    start.checked_add(header_len).ok_or(Error::Truncated { what: "header" })
}

/// The element type and shape of a `.npy` file and where its data starts,
/// from the file's first [`header_end`] bytes (or more); `len` is the whole
/// file's length, checked against the shape.
pub fn parse_header(head: &[u8], len: usize) -> Result<(Descr, Vec<u64>, usize), Error> {
    let end = header_end(head)?;
    if end > head.len() || end > len {
        return Err(Error::Truncated { what: "header" });
    }
    let start = if head[6] == 1 { 10 } else { 12 };
    let fields = header::parse(&head[start..end])?;
    let want = data_len(&fields.descr, &fields.shape)?;
    if len - end != want {
        return Err(Error::DataLength { descr: fields.descr.to_string(), shape: fields.shape, expected: want as u64, actual: len - end });
    }
    Ok((fields.descr, fields.shape, end))
}

/// Parses a `.npy` file (format 1.0, 2.0 or 3.0, C order) without copying
/// its data. The data must be exactly as long as the shape says.
pub fn parse_npy(bytes: &[u8]) -> Result<Array<'_>, Error> {
    let (descr, shape, end) = parse_header(bytes, bytes.len())?;
    Ok(Array { descr, shape, data: &bytes[end..] })
}

/// Appends a `.npy` header for `descr` and `shape` to `out`: format 1.0
/// (2.0 if the header is too long for it), padded with spaces and a newline
/// so that the data that follows starts on a 64-byte boundary, as
/// `numpy.save` writes it. The caller appends the element bytes.
pub fn write_npy_header(out: &mut Vec<u8>, descr: &Descr, shape: &[u64]) {
    let mut text = header::render(descr, shape);
    let mut prefix = MAGIC.len() + 2 + 2;
    if prefix + text.len() + 1 > usize::from(u16::MAX) {
        prefix += 2;
    }
    let unpadded = prefix + text.len() + 1;
    text.extend(std::iter::repeat_n(' ', (ALIGN - unpadded % ALIGN) % ALIGN));
    text.push('\n');
    out.extend_from_slice(MAGIC);
    if prefix == 10 {
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(text.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&[2, 0]);
        out.extend_from_slice(&(text.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(text.as_bytes());
}

/// A whole `.npy` file of `data` (C-order element bytes), checked against
/// the shape.
pub fn write_npy(descr: &Descr, shape: &[u64], data: &[u8]) -> Result<Vec<u8>, Error> {
    let header = NpyHeader::new(descr, shape)?;
    header.check(data)?;
    let mut out = Vec::with_capacity(header.bytes.len() + data.len());
    out.extend_from_slice(&header.bytes);
    out.extend_from_slice(data);
    Ok(out)
}

/// An encoded `.npy` header with the running CRC-32 of its bytes, so that
/// many files (or `.npz` entries) of one type and shape are made at the
/// cost of their data alone.
#[derive(Debug, Clone)]
pub struct NpyHeader {
    descr: Descr,
    shape: Vec<u64>,
    bytes: Vec<u8>,
    data_len: usize,
    crc: crc32fast::Hasher,
}

impl NpyHeader {
    /// The header of arrays of `descr` and `shape`; [`Error::TooLarge`] if
    /// their byte size overflows.
    pub fn new(descr: &Descr, shape: &[u64]) -> Result<Self, Error> {
        let data_len = data_len(descr, shape)?;
        let mut bytes = Vec::with_capacity(128);
        write_npy_header(&mut bytes, descr, shape);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&bytes);
        Ok(NpyHeader { descr: descr.clone(), shape: shape.to_vec(), bytes, data_len, crc })
    }

    /// The encoded header.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Bytes of element data that follow it.
    pub fn data_len(&self) -> usize {
        self.data_len
    }

    /// Checks that `data` is exactly the element bytes this header announces.
    pub fn check(&self, data: &[u8]) -> Result<(), Error> {
        if data.len() == self.data_len {
            Ok(())
        } else {
            Err(Error::DataLength {
                descr: self.descr.to_string(),
                shape: self.shape.clone(),
                expected: self.data_len as u64,
                actual: data.len(),
            })
        }
    }

    /// The CRC-32 of the whole file: this header followed by `data`.
    pub fn crc32_with(&self, data: &[u8]) -> u32 {
        let mut crc = self.crc.clone();
        crc.update(data);
        crc.finalize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floats(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn round_trip_every_rank_and_the_data_is_aligned() {
        for shape in [vec![], vec![3], vec![1, 3], vec![3, 1, 1], vec![0, 5]] {
            let n = shape.iter().product::<u64>() as usize;
            let data = floats(&(0..n).map(|i| i as f32 * 0.5).collect::<Vec<_>>());
            let file = write_npy(&Descr::F32, &shape, &data).unwrap();
            assert_eq!((file.len() - data.len()) % 64, 0, "{shape:?}: data is 64-byte aligned");
            assert_eq!(&file[6..8], &[1, 0]);
            assert_eq!(file[file.len() - data.len() - 1], b'\n');
            let a = parse_npy(&file).unwrap();
            assert_eq!((a.descr, a.shape, a.data), (Descr::F32, shape, &data[..]));
        }
    }

    #[test]
    fn bytes_match_numpy_save() {
        // numpy.save(f, numpy.array([[1, 2]], dtype='<i4')), numpy 2.x.
        let mut want = b"\x93NUMPY\x01\x00v\x00{'descr': '<i4', 'fortran_order': False, 'shape': (1, 2), }".to_vec();
        want.resize(127, b' ');
        want.push(b'\n');
        want.extend_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(write_npy(&Descr::I32, &[1, 2], &[1, 0, 0, 0, 2, 0, 0, 0]).unwrap(), want);
    }

    #[test]
    fn long_headers_switch_to_version_2() {
        let shape = vec![1u64; 30_000];
        let mut file = Vec::new();
        write_npy_header(&mut file, &Descr::U8, &shape);
        assert_eq!(&file[6..8], &[2, 0]);
        assert_eq!(file.len() % 64, 0);
        file.push(9);
        let a = parse_npy(&file).unwrap();
        assert_eq!((a.shape.len(), a.data), (30_000, &[9u8][..]));
    }

    #[test]
    fn version_3_and_2_headers_are_read() {
        let mut file = write_npy(&Descr::U8, &[2], &[4, 5]).unwrap();
        // Re-encode the 1.0 preamble as 3.0 (u32 header length).
        let len = u16::from_le_bytes([file[8], file[9]]) as u32;
        file.splice(6..10, [3, 0].into_iter().chain(len.to_le_bytes()));
        assert_eq!(parse_npy(&file).unwrap().data, &[4, 5]);
    }

    #[test]
    fn malformed_files_name_what_is_wrong() {
        let good = write_npy(&Descr::F32, &[2], &floats(&[1.5, 2.5])).unwrap();
        let check = |bytes: &[u8], want: &str| {
            let e = parse_npy(bytes).expect_err(want).to_string();
            assert!(e.contains(want), "want {want:?}, got {e:?}");
        };
        check(b"not numpy", "bad magic");
        check(b"", "bad magic");
        check(b"\x93NUMPY", "ends inside its version");
        check(b"\x93NUMPY\x01\x00\x76", "ends inside its header length");
        check(b"\x93NUMPY\x02\x00\x76\x00", "ends inside its header length");
        check(b"\x93NUMPY\x04\x00\x76\x00", "unsupported .npy version 4.0");
        check(&good[..20], "ends inside its header");
        check(&good[..good.len() - 1], "npy data is 7 bytes, shape [2] of <f4 needs 8");
        let mut long = good.clone();
        long.push(0);
        check(&long, "npy data is 9 bytes");
        let mut huge = good.clone();
        let at = huge.windows(4).position(|w| w == b"(2,)").unwrap();
        huge.splice(at..at + 4, b"(99999999999, 99999999999)".iter().copied());
        check(&huge, "too large");
        let mut max = good.clone();
        let at = max.windows(4).position(|w| w == b"(2,)").unwrap();
        max.splice(at..at + 4, b"(18446744073709551615,)".iter().copied());
        check(&max, "too large");
    }

    #[test]
    fn every_truncation_or_corrupt_header_byte_is_an_error_not_a_panic() {
        let good = write_npy(&Descr::F32, &[2, 3], &[0; 24]).unwrap();
        for n in 0..good.len() {
            assert!(parse_npy(&good[..n]).is_err(), "truncated to {n}");
        }
        for i in 0..good.len() - 24 {
            for v in [0, b'(', b')', b'\'', b',', b'9', b'{', 0xff] {
                let mut bad = good.clone();
                bad[i] = v;
                let _ = parse_npy(&bad);
            }
        }
    }

    #[test]
    fn sizes_are_overflow_safe() {
        assert_eq!(data_len(&Descr::F64, &[]).unwrap(), 8);
        assert_eq!(data_len(&Descr::F64, &[u64::MAX, 0]).unwrap(), 0);
        assert!(matches!(data_len(&Descr::F64, &[u64::MAX / 4]), Err(Error::TooLarge { .. })));
        assert!(matches!(data_len(&Descr::U8, &[1 << 32, 1 << 32]), Err(Error::TooLarge { .. })));
        assert!(NpyHeader::new(&Descr::U64, &[u64::MAX]).is_err());
    }

    #[test]
    fn header_crc_covers_header_and_data() {
        let h = NpyHeader::new(&Descr::U8, &[3]).unwrap();
        let whole = write_npy(&Descr::U8, &[3], &[1, 2, 3]).unwrap();
        assert_eq!(h.crc32_with(&[1, 2, 3]), crate::crc32(&whole));
        assert_eq!(h.as_bytes(), &whole[..whole.len() - 3]);
        assert!(h.check(&[1, 2]).is_err() && h.check(&[1, 2, 3]).is_ok());
    }
}
