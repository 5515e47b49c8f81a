//! `.npz` archives: stored zip files `NAME.npy`, one array each, as
//! `numpy.savez` writes them.

use crate::descr::Descr;
use crate::npy::{parse_npy, Array, NpyHeader};
use crate::zip::{read_zip, ZipWriter};
use crate::Error;

/// Parses an uncompressed `.npz` into its arrays, named without the
/// `.npy` suffix, in archive order; the data is borrowed from `bytes`.
/// CRCs are not checked (the transport guarantees integrity; see
/// [`read_zip`] and [`StoredFile::check_crc`](crate::StoredFile::check_crc)
/// to check them). An archive with no entries is [`Error::NoEntries`].
pub fn parse_npz(bytes: &[u8]) -> Result<Vec<(String, Array<'_>)>, Error> {
    let files = read_zip(bytes)?;
    if files.is_empty() {
        return Err(Error::NoEntries);
    }
    files
        .into_iter()
        .map(|f| {
            let name = f.name.strip_suffix(".npy").unwrap_or(&f.name).to_string();
            match parse_npy(f.data) {
                Ok(array) => Ok((name, array)),
                Err(e) => Err(Error::Entry { name, source: Box::new(e) }),
            }
        })
        .collect()
}

/// Writes `.npz` archives of arrays with fixed names, types and shapes: the
/// headers (and their CRCs) are made once, so each archive costs its data
/// copy and the CRC of its data.
#[derive(Debug, Clone)]
pub struct NpzWriter {
    entries: Vec<(String, NpyHeader)>,
}

impl NpzWriter {
    /// A writer for entries `(name, descr, shape)`; each is stored as `NAME.npy`.
    pub fn new<'a>(entries: impl IntoIterator<Item = (&'a str, &'a Descr, &'a [u64])>) -> Result<Self, Error> {
        let entries = entries
            .into_iter()
            .map(|(name, descr, shape)| {
                let file = format!("{name}.npy");
                if file.len() > usize::from(u16::MAX) {
                    return Err(Error::NameTooLong { len: file.len() });
                }
                Ok((file, NpyHeader::new(descr, shape)?))
            })
            .collect::<Result<_, Error>>()?;
        Ok(NpzWriter { entries })
    }

    /// One archive with `data[i]` as entry i's element bytes (each checked
    /// against its shape).
    pub fn write(&self, data: &[&[u8]]) -> Result<Vec<u8>, Error> {
        if data.len() != self.entries.len() {
            return Err(Error::EntryCount { expected: self.entries.len(), actual: data.len() });
        }
        let sizes = self.entries.iter().zip(data).map(|((file, h), d)| (file.len(), h.as_bytes().len().saturating_add(d.len())));
        let mut zip = ZipWriter::with_capacity(ZipWriter::size_hint(sizes));
        for ((file, header), d) in self.entries.iter().zip(data) {
            header.check(d).map_err(|e| Error::Entry { name: file.trim_end_matches(".npy").to_string(), source: Box::new(e) })?;
            zip.add_with_crc(file, header.crc32_with(d), &[header.as_bytes(), d])?;
        }
        Ok(zip.finish())
    }
}

/// One uncompressed `.npz` of `(name, descr, shape, data)` entries.
pub fn write_npz(entries: &[(&str, &Descr, &[u64], &[u8])]) -> Result<Vec<u8>, Error> {
    let writer = NpzWriter::new(entries.iter().map(|&(name, descr, shape, _)| (name, descr, shape)))?;
    let data: Vec<&[u8]> = entries.iter().map(|e| e.3).collect();
    writer.write(&data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::npy::write_npy;

    /// `numpy.savez(f, h=<f4 3×3, s=<f8 (3,))` as numpy 2.x wrote it
    /// (plugins/tensors/bundles/multi-io/reference.npz, 550 bytes): local
    /// headers carry zip64 sizes (`force_zip64`), the central directory plain ones.
    const NUMPY_NPZ: &str = "\
        504b03042d0000000000000021009569558affffffffffffffff05001400682e6e707901001000a400000000000000a4\
        00000000000000934e554d5059010076007b276465736372273a20273c6634272c2027666f727472616e5f6f72646572\
        273a2046616c73652c20277368617065273a2028332c2033292c207d2020202020202020202020202020202020202020\
        20202020202020202020202020202020202020202020202020202020202020202020202020200ad4a1e1beb7ad2abf90\
        fc0b3e731102bf43845dbfbba6b3be03f0ce3eff0fb1be295cd83d504b03042d000000000000002100f35abde6ffffff\
        ffffffffff05001400732e6e70790100100098000000000000009800000000000000934e554d5059010076007b276465\
        736372273a20273c6638272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a202833\
        2c292c207d20202020202020202020202020202020202020202020202020202020202020202020202020202020202020\
        20202020202020202020202020202020200a00000040d568fabf000000808a7ad13f00000020d4d604c0504b01022d03\
        2d0000000000000021009569558aa4000000a4000000050000000000000000000000800100000000682e6e7079504b01\
        022d032d000000000000002100f35abde698000000980000000500000000000000000000008001db000000732e6e7079\
        504b0506000000000200020066000000aa0100000000";

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// An archive laid out as numpy.savez writes it, from the entries.
    fn numpy_like(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut z = ZipWriter::new().force_zip64();
        for (name, npy) in entries {
            z.add(&format!("{name}.npy"), &[npy]).unwrap();
        }
        z.finish()
    }

    #[test]
    fn round_trip_in_order_with_crcs() {
        let x: Vec<u8> = (0..24u8).collect();
        let z = write_npz(&[("x", &Descr::F32, &[2, 3], &x), ("m", &Descr::BOOL, &[2], &[1, 0])]).unwrap();
        let arrays = parse_npz(&z).unwrap();
        assert_eq!(arrays.len(), 2);
        assert_eq!((arrays[0].0.as_str(), &arrays[0].1.descr, arrays[0].1.shape.as_slice(), arrays[0].1.data), ("x", &Descr::F32, &[2u64, 3][..], &x[..]));
        assert_eq!((arrays[1].0.as_str(), arrays[1].1.data), ("m", &[1u8, 0][..]));
        // The recorded CRC-32 is that of the entry's whole .npy file.
        let files = read_zip(&z).unwrap();
        let npy = write_npy(&Descr::F32, &[2, 3], &x).unwrap();
        assert_eq!(files[0].crc32, crate::crc32(&npy));
        assert_eq!(&z[14..18], &crate::crc32(&npy).to_le_bytes());
        files.iter().try_for_each(|f| f.check_crc()).unwrap();
    }

    #[test]
    fn known_crc_of_a_known_entry() {
        // The whole .npy of `np.array([1, 2], '|u1')` (130 bytes), CRC-32 by Python's zlib.
        let z = write_npz(&[("a", &Descr::U8, &[2], &[1, 2])]).unwrap();
        assert_eq!(read_zip(&z).unwrap()[0].data.len(), 130);
        assert_eq!(read_zip(&z).unwrap()[0].crc32, 0x5f65_0262);
        assert_eq!(&z[14..18], &0x5f65_0262u32.to_le_bytes(), "local header CRC");
    }

    #[test]
    fn an_archive_numpy_wrote_is_read_and_rewritten_with_numpys_crcs() {
        let z = hex(NUMPY_NPZ);
        assert_eq!(z.len(), 550);
        let files = read_zip(&z).unwrap();
        assert_eq!(files.iter().map(|f| (f.name.as_ref(), f.crc32)).collect::<Vec<_>>(), [("h.npy", 0x8a55_6995), ("s.npy", 0xe6bd_5af3)]);
        files.iter().try_for_each(|f| f.check_crc()).unwrap();
        let arrays = parse_npz(&z).unwrap();
        assert_eq!((arrays[0].0.as_str(), &arrays[0].1.descr, arrays[0].1.shape.as_slice()), ("h", &Descr::F32, &[3u64, 3][..]));
        assert_eq!((arrays[1].0.as_str(), &arrays[1].1.descr, arrays[1].1.shape.as_slice()), ("s", &Descr::F64, &[3u64][..]));
        // Written again, each entry is byte for byte the .npy numpy wrote (same CRC).
        let entries: Vec<_> = arrays.iter().map(|(n, a)| (n.as_str(), &a.descr, a.shape.as_slice(), a.data)).collect();
        let again = write_npz(&entries).unwrap();
        let crcs: Vec<u32> = read_zip(&again).unwrap().iter().map(|f| f.crc32).collect();
        assert_eq!(crcs, [0x8a55_6995, 0xe6bd_5af3]);
        // And laid out as numpy does with force_zip64: the same local header bytes.
        let mut zip = ZipWriter::new().force_zip64();
        for f in &files {
            zip.add(&f.name, &[f.data]).unwrap();
        }
        let forced = zip.finish();
        let local = 30 + 5 + 20;
        assert_eq!(&forced[..local], &z[..local]);
        assert_eq!(parse_npz(&forced).unwrap(), arrays);
    }

    #[test]
    fn malformed_archives_name_the_entry_and_the_problem() {
        let e = parse_npz(b"not numpy").unwrap_err().to_string();
        assert!(e.contains("no end of central directory record"), "{e}");
        let e = parse_npz(&ZipWriter::new().finish()).unwrap_err();
        assert_eq!(e, Error::NoEntries);
        let z = numpy_like(&[("x", b"garbage".to_vec())]);
        let e = parse_npz(&z).unwrap_err();
        assert_eq!(e.to_string(), "npz entry 'x': not a .npy file (bad magic)");
        assert!(std::error::Error::source(&e).is_some());
        let mut short = write_npy(&Descr::F32, &[2], &[0; 8]).unwrap();
        short.pop();
        let e = parse_npz(&numpy_like(&[("y", short)])).unwrap_err().to_string();
        assert_eq!(e, "npz entry 'y': npy data is 7 bytes, shape [2] of <f4 needs 8");
    }

    #[test]
    fn writer_checks_its_arguments() {
        let w = NpzWriter::new([("a", &Descr::I64, &[2u64][..])]).unwrap();
        assert_eq!(w.write(&[]).unwrap_err(), Error::EntryCount { expected: 1, actual: 0 });
        let e = w.write(&[&[0; 15]]).unwrap_err().to_string();
        assert_eq!(e, "npz entry 'a': npy data is 15 bytes, shape [2] of <i8 needs 16");
        assert_eq!(parse_npz(&w.write(&[&[0; 16]]).unwrap()).unwrap()[0].1.data, &[0; 16]);
        let long = "n".repeat(65_532);
        assert!(matches!(NpzWriter::new([(long.as_str(), &Descr::U8, &[1u64][..])]), Err(Error::NameTooLong { len: 65_536 })));
        assert!(matches!(NpzWriter::new([("big", &Descr::F64, &[u64::MAX][..])]), Err(Error::TooLarge { .. })));
    }

    #[test]
    fn a_reused_writer_gives_the_same_bytes_as_a_fresh_one() {
        let w = NpzWriter::new([("a", &Descr::U8, &[3u64][..]), ("b", &Descr::I32, &[1u64][..])]).unwrap();
        for d in [[1u8, 2, 3], [4, 5, 6]] {
            let fresh = write_npz(&[("a", &Descr::U8, &[3], &d), ("b", &Descr::I32, &[1], &[9, 0, 0, 0])]).unwrap();
            assert_eq!(w.write(&[&d, &[9, 0, 0, 0]]).unwrap(), fresh);
        }
    }
}
