//! Stored (uncompressed) zip archives, as `numpy.savez` writes them: read
//! through the central directory (so data descriptors and the zip64 sizes
//! NumPy always writes in local headers are handled), written with zip64
//! records where a size, offset or count needs them.

use std::borrow::Cow;

use crate::error::zip_err;
use crate::Error;

const LOCAL_SIG: u32 = 0x0403_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const END_SIG: u32 = 0x0605_4b50;
const ZIP64_END_SIG: u32 = 0x0606_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const LOCAL_LEN: usize = 30;
const CENTRAL_LEN: usize = 46;
const END_LEN: usize = 22;
const ZIP64_END_LEN: usize = 56;
const ZIP64_LOCATOR_LEN: usize = 20;
const ZIP64_EXTRA_ID: u16 = 0x0001;
/// A 32-bit field that says "see the zip64 record".
const MAX32: u32 = u32::MAX;
const MAX16: u16 = u16::MAX;
/// General-purpose flags: encrypted, name in UTF-8.
const FLAG_ENCRYPTED: u16 = 0x0001;
const FLAG_UTF8: u16 = 0x0800;
/// DOS date 1980-01-01 (what `numpy.savez` writes), time 00:00.
const DOS_DATE: u16 = 0x21;

/// Little-endian reads that fail, naming the structure, instead of panicking.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn slice(&self, at: usize, len: usize, what: &str) -> Result<&'a [u8], Error> {
        at.checked_add(len)
            .and_then(|end| self.bytes.get(at..end))
            .ok_or_else(|| zip_err(format!("{what} runs past the end of the archive")))
    }
    fn u16(&self, at: usize, what: &str) -> Result<u16, Error> {
        let b = self.slice(at, 2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&self, at: usize, what: &str) -> Result<u32, Error> {
        let b = self.slice(at, 4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&self, at: usize, what: &str) -> Result<u64, Error> {
        let b = self.slice(at, 8, what)?;
        Ok(u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    }
}

fn to_usize(v: u64, what: &str) -> Result<usize, Error> {
    usize::try_from(v).map_err(|_| zip_err(format!("{what} {v} does not fit in memory")))
}

/// One stored file of an archive, its bytes borrowed from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile<'a> {
    /// File name as recorded in the central directory.
    pub name: Cow<'a, str>,
    /// The file's bytes.
    pub data: &'a [u8],
    /// The CRC-32 the archive records for it.
    pub crc32: u32,
}

impl StoredFile<'_> {
    /// Checks the recorded CRC-32 against the bytes ([`Error::CrcMismatch`]).
    pub fn check_crc(&self) -> Result<(), Error> {
        let actual = crate::crc32(self.data);
        if actual == self.crc32 {
            Ok(())
        } else {
            Err(Error::CrcMismatch { name: self.name.to_string(), stored: self.crc32, actual })
        }
    }
}

/// Where the central directory is, from the end records.
struct Directory {
    entries: u64,
    size: u64,
    offset: u64,
}

/// Finds the end of central directory record (it may be followed by a
/// comment of up to 64 KiB) and, when it defers to zip64, the zip64 record.
fn directory(r: &Reader<'_>) -> Result<Directory, Error> {
    let bytes = r.bytes;
    if bytes.len() < END_LEN {
        return Err(zip_err(format!("no end of central directory record (only {} bytes)", bytes.len())));
    }
    let lowest = bytes.len().saturating_sub(END_LEN + usize::from(MAX16));
    let end = (lowest..=bytes.len() - END_LEN)
        .rev()
        .find(|&p| {
            bytes[p..p + 4] == END_SIG.to_le_bytes()
                && p + END_LEN + usize::from(u16::from_le_bytes([bytes[p + 20], bytes[p + 21]])) <= bytes.len()
        })
        .ok_or_else(|| zip_err("no end of central directory record"))?;
    let what = "end of central directory record";
    let (disk, cd_disk) = (r.u16(end + 4, what)?, r.u16(end + 6, what)?);
    let (on_disk, entries) = (r.u16(end + 8, what)?, r.u16(end + 10, what)?);
    let (size, offset) = (r.u32(end + 12, what)?, r.u32(end + 16, what)?);
    let zip64 = on_disk == MAX16 || entries == MAX16 || size == MAX32 || offset == MAX32;
    if !zip64 {
        if disk != 0 || cd_disk != 0 || on_disk != entries {
            return Err(zip_err("multi-disk archives are not supported"));
        }
        return Ok(Directory { entries: entries.into(), size: size.into(), offset: offset.into() });
    }
    let locator = end.checked_sub(ZIP64_LOCATOR_LEN).ok_or_else(|| zip_err("zip64 end locator missing"))?;
    if r.u32(locator, "zip64 end locator")? != ZIP64_LOCATOR_SIG {
        return Err(zip_err("zip64 end locator missing"));
    }
    let record = to_usize(r.u64(locator + 8, "zip64 end locator")?, "zip64 end record offset")?;
    let what = "zip64 end of central directory record";
    if r.u32(record, what)? != ZIP64_END_SIG {
        return Err(zip_err("zip64 end of central directory record missing where its locator points"));
    }
    let (disk, cd_disk) = (r.u32(record + 16, what)?, r.u32(record + 20, what)?);
    let (on_disk, entries) = (r.u64(record + 24, what)?, r.u64(record + 32, what)?);
    if disk != 0 || cd_disk != 0 || on_disk != entries {
        return Err(zip_err("multi-disk archives are not supported"));
    }
    Ok(Directory { entries, size: r.u64(record + 40, what)?, offset: r.u64(record + 48, what)? })
}

/// The zip64 extended-information fields of an extra block: the 64-bit
/// values, in order, of the fields whose 32-bit (or 16-bit) form is
/// saturated.
fn zip64_values(extra: &[u8]) -> Result<Option<&[u8]>, Error> {
    let r = Reader { bytes: extra };
    let mut p = 0;
    while p + 4 <= extra.len() {
        let (id, len) = (r.u16(p, "extra field")?, usize::from(r.u16(p + 2, "extra field")?));
        let body = r.slice(p + 4, len, "extra field")?;
        if id == ZIP64_EXTRA_ID {
            return Ok(Some(body));
        }
        p += 4 + len;
    }
    Ok(None)
}

/// Lists the files of a zip archive of stored entries, in central
/// directory order, without copying them. CRCs are not checked here (see
/// [`StoredFile::check_crc`]); compressed and encrypted entries are errors.
pub fn read_zip(bytes: &[u8]) -> Result<Vec<StoredFile<'_>>, Error> {
    let r = Reader { bytes };
    let dir = directory(&r)?;
    let offset = to_usize(dir.offset, "central directory offset")?;
    let size = to_usize(dir.size, "central directory size")?;
    let central = r.slice(offset, size, "central directory")?;
    // Each entry takes at least CENTRAL_LEN bytes: a count beyond that is a lie.
    if dir.entries > (size / CENTRAL_LEN) as u64 {
        return Err(zip_err(format!("{} entries cannot fit in a {size}-byte central directory", dir.entries)));
    }
    let c = Reader { bytes: central };
    let mut files = Vec::with_capacity(dir.entries as usize);
    let mut p = 0usize;
    for i in 0..dir.entries {
        let what = format!("central directory entry {i}");
        if c.u32(p, &what)? != CENTRAL_SIG {
            return Err(zip_err(format!("{what} has a bad signature")));
        }
        let flags = c.u16(p + 8, &what)?;
        let method = c.u16(p + 10, &what)?;
        let crc32 = c.u32(p + 16, &what)?;
        let mut compressed = u64::from(c.u32(p + 20, &what)?);
        let mut uncompressed = u64::from(c.u32(p + 24, &what)?);
        let name_len = usize::from(c.u16(p + 28, &what)?);
        let extra_len = usize::from(c.u16(p + 30, &what)?);
        let comment_len = usize::from(c.u16(p + 32, &what)?);
        let disk = c.u16(p + 34, &what)?;
        let mut local = u64::from(c.u32(p + 42, &what)?);
        let name_bytes = c.slice(p + CENTRAL_LEN, name_len, &what)?;
        let name = String::from_utf8_lossy(name_bytes);
        let extra = c.slice(p + CENTRAL_LEN + name_len, extra_len, &what)?;
        if uncompressed == u64::from(MAX32) || compressed == u64::from(MAX32) || local == u64::from(MAX32) || disk == MAX16 {
            let values = zip64_values(extra)?.ok_or_else(|| zip_err(format!("entry '{name}' lacks its zip64 sizes")))?;
            let z = Reader { bytes: values };
            let mut at = 0;
            let what = format!("zip64 sizes of entry '{name}'");
            for field in [&mut uncompressed, &mut compressed, &mut local] {
                if *field == u64::from(MAX32) {
                    *field = z.u64(at, &what)?;
                    at += 8;
                }
            }
        }
        if disk != 0 && disk != MAX16 {
            return Err(zip_err("multi-disk archives are not supported"));
        }
        if flags & FLAG_ENCRYPTED != 0 {
            return Err(Error::Encrypted { name: name.into_owned() });
        }
        if method != 0 {
            return Err(Error::Compressed { name: name.into_owned(), method });
        }
        if compressed != uncompressed {
            return Err(zip_err(format!("stored entry '{name}' records {compressed} bytes stored but {uncompressed} uncompressed")));
        }
        // The data follows the local header, whose name and extra field may differ in length from the central ones.
        let local = to_usize(local, "local header offset")?;
        let what = format!("local header of entry '{name}'");
        if r.u32(local, &what)? != LOCAL_SIG {
            return Err(zip_err(format!("{what} has a bad signature")));
        }
        let local_name = usize::from(r.u16(local + 26, &what)?);
        let local_extra = usize::from(r.u16(local + 28, &what)?);
        if r.slice(local + LOCAL_LEN, local_name, &what)? != name_bytes {
            return Err(zip_err(format!("{what} names a different file")));
        }
        let start = local + LOCAL_LEN + local_name + local_extra;
        let data = r.slice(start, to_usize(uncompressed, "entry size")?, &format!("entry '{name}'"))?;
        files.push(StoredFile { name, data, crc32 });
        p += CENTRAL_LEN + name_len + extra_len + comment_len;
    }
    Ok(files)
}

/// Writes a zip archive of stored files, as `numpy.savez` does: files in
/// the order added, CRC-32s recorded, zip64 records wherever a size, an
/// offset or the number of files needs them (or everywhere, with
/// [`force_zip64`](Self::force_zip64)).
#[derive(Debug, Default)]
pub struct ZipWriter {
    out: Vec<u8>,
    central: Vec<u8>,
    files: u64,
    force_zip64: bool,
}

impl ZipWriter {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty archive with room for `bytes` bytes.
    pub fn with_capacity(bytes: usize) -> Self {
        ZipWriter { out: Vec::with_capacity(bytes), ..Self::default() }
    }

    /// Writes zip64 records for every file and for the end of the archive,
    /// whether or not sizes need them.
    pub fn force_zip64(mut self) -> Self {
        self.force_zip64 = true;
        self
    }

    /// Bytes the archive of `files` (name length, data length) takes at most.
    pub fn size_hint(files: impl IntoIterator<Item = (usize, usize)>) -> usize {
        files
            .into_iter()
            .fold(END_LEN + ZIP64_END_LEN + ZIP64_LOCATOR_LEN, |n, (name, data)| {
                n.saturating_add(LOCAL_LEN + CENTRAL_LEN + 2 * (name + 20) + 8).saturating_add(data)
            })
    }

    /// Adds a file whose bytes are `parts`, in order; its CRC-32 is computed.
    pub fn add(&mut self, name: &str, parts: &[&[u8]]) -> Result<(), Error> {
        let mut crc = crc32fast::Hasher::new();
        for p in parts {
            crc.update(p);
        }
        self.add_with_crc(name, crc.finalize(), parts)
    }

    /// Adds a file whose bytes are `parts`, in order, with a CRC-32 the
    /// caller computed (e.g. with [`NpyHeader::crc32_with`](crate::NpyHeader::crc32_with)).
    pub fn add_with_crc(&mut self, name: &str, crc32: u32, parts: &[&[u8]]) -> Result<(), Error> {
        let name_len = u16::try_from(name.len()).map_err(|_| Error::NameTooLong { len: name.len() })?;
        let size = parts.iter().map(|p| p.len() as u64).sum::<u64>();
        let offset = self.out.len() as u64;
        let big_size = self.force_zip64 || size >= u64::from(MAX32);
        let big_offset = self.force_zip64 || offset >= u64::from(MAX32);
        let flags = if name.is_ascii() { 0 } else { FLAG_UTF8 };
        let version: u16 = if big_size || big_offset { 45 } else { 20 };
        let size32 = if big_size { MAX32 } else { size as u32 };

        // Local header: zip64 sizes in its extra field when they do not fit.
        let local_extra: Vec<u8> = if big_size { zip64_extra(&[size, size]) } else { Vec::new() };
        put32(&mut self.out, LOCAL_SIG);
        for v in [version, flags, 0, 0, DOS_DATE] {
            put16(&mut self.out, v);
        }
        for v in [crc32, size32, size32] {
            put32(&mut self.out, v);
        }
        put16(&mut self.out, name_len);
        put16(&mut self.out, local_extra.len() as u16);
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(&local_extra);
        for p in parts {
            self.out.extend_from_slice(p);
        }

        // Central directory entry.
        let mut values = Vec::new();
        if big_size {
            values.extend([size, size]);
        }
        if big_offset {
            values.push(offset);
        }
        let central_extra = if values.is_empty() { Vec::new() } else { zip64_extra(&values) };
        let c = &mut self.central;
        put32(c, CENTRAL_SIG);
        for v in [version, version, flags, 0, 0, DOS_DATE] {
            put16(c, v);
        }
        for v in [crc32, size32, size32] {
            put32(c, v);
        }
        for v in [name_len, central_extra.len() as u16, 0, 0, 0] {
            put16(c, v);
        }
        put32(c, 0);
        put32(c, if big_offset { MAX32 } else { offset as u32 });
        c.extend_from_slice(name.as_bytes());
        c.extend_from_slice(&central_extra);
        self.files += 1;
        Ok(())
    }

    /// Appends the central directory and end records; the finished archive.
    pub fn finish(mut self) -> Vec<u8> {
        let offset = self.out.len() as u64;
        let size = self.central.len() as u64;
        self.out.append(&mut self.central);
        let zip64 = self.force_zip64 || self.files >= u64::from(MAX16) || size >= u64::from(MAX32) || offset >= u64::from(MAX32);
        let out = &mut self.out;
        if zip64 {
            let record = out.len() as u64;
            put32(out, ZIP64_END_SIG);
            put64(out, (ZIP64_END_LEN - 12) as u64);
            put16(out, 45);
            put16(out, 45);
            put32(out, 0);
            put32(out, 0);
            for v in [self.files, self.files, size, offset] {
                put64(out, v);
            }
            put32(out, ZIP64_LOCATOR_SIG);
            put32(out, 0);
            put64(out, record);
            put32(out, 1);
        }
        let files16 = if zip64 { MAX16 } else { self.files as u16 };
        put32(out, END_SIG);
        for v in [0, 0, files16, files16] {
            put16(out, v);
        }
        put32(out, if zip64 { MAX32 } else { size as u32 });
        put32(out, if zip64 { MAX32 } else { offset as u32 });
        put16(out, 0);
        self.out
    }
}

fn zip64_extra(values: &[u64]) -> Vec<u8> {
    let mut e = Vec::with_capacity(4 + 8 * values.len());
    put16(&mut e, ZIP64_EXTRA_ID);
    put16(&mut e, (8 * values.len()) as u16);
    for &v in values {
        put64(&mut e, v);
    }
    e
}

fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(force: bool) -> Vec<u8> {
        let mut w = if force { ZipWriter::new().force_zip64() } else { ZipWriter::new() };
        w.add("a.npy", &[b"hello ", b"world"]).unwrap();
        w.add("é.npy", &[]).unwrap();
        w.add("c", &[&[7u8; 1000]]).unwrap();
        w.finish()
    }

    #[test]
    fn round_trip_plain_and_zip64() {
        for force in [false, true] {
            let z = archive(force);
            let files = read_zip(&z).unwrap();
            let names: Vec<&str> = files.iter().map(|f| f.name.as_ref()).collect();
            assert_eq!(names, ["a.npy", "é.npy", "c"]);
            assert_eq!(files[0].data, b"hello world");
            assert!(files[1].data.is_empty());
            assert_eq!(files[2].data, &[7u8; 1000][..]);
            for f in &files {
                f.check_crc().unwrap();
            }
            assert_eq!(files[0].crc32, 0x0d4a_1185, "CRC-32 of 'hello world'");
        }
        assert!(archive(true).len() > archive(false).len());
    }

    #[test]
    fn crc_is_the_standard_crc32() {
        assert_eq!(crate::crc32(b""), 0);
        assert_eq!(crate::crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crate::crc32(b"The quick brown fox jumps over the lazy dog"), 0x414F_A339);
        let mut z = archive(false);
        let at = z.windows(5).position(|w| w == b"hello").unwrap();
        z[at] = b'j';
        let e = read_zip(&z).unwrap()[0].check_crc().unwrap_err();
        assert!(e.to_string().contains("'a.npy' is corrupt"), "{e}");
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        for force in [false, true] {
            let z = archive(force);
            for n in 0..z.len() {
                assert!(read_zip(&z[..n]).is_err(), "truncated to {n} of {} (zip64 {force})", z.len());
            }
        }
    }

    #[test]
    fn every_corrupt_byte_is_an_error_or_a_valid_archive_not_a_panic() {
        for force in [false, true] {
            let z = archive(force);
            for i in 0..z.len() {
                for v in [0x00, 0xff, 0x7f] {
                    let mut bad = z.clone();
                    bad[i] = v;
                    let _ = read_zip(&bad);
                }
            }
        }
    }

    #[test]
    fn unsupported_archives_name_the_problem() {
        let check = |bytes: &[u8], want: &str| {
            let e = read_zip(bytes).expect_err(want).to_string();
            assert!(e.contains(want), "want {want:?}, got {e:?}");
        };
        check(b"", "no end of central directory record (only 0 bytes)");
        check(&[0u8; 100], "no end of central directory record");
        let z = archive(false);
        // Method 8 (deflate) in the first central entry.
        let cd = z.windows(4).position(|w| w == CENTRAL_SIG.to_le_bytes()).unwrap();
        let mut deflated = z.clone();
        deflated[cd + 10] = 8;
        check(&deflated, "'a.npy' is compressed (zip method 8)");
        let mut encrypted = z.clone();
        encrypted[cd + 8] |= 1;
        check(&encrypted, "'a.npy' is encrypted");
        let mut lying = z.clone();
        let end = lying.len() - END_LEN;
        lying[end + 10] = 200;
        lying[end + 8] = 200;
        check(&lying, "entries cannot fit");
        let mut moved = z.clone();
        moved[cd + 42] = 3;
        check(&moved, "bad signature");
        let mut renamed = z.clone();
        renamed[LOCAL_LEN] = b'b';
        check(&renamed, "names a different file");
        let mut long = z.clone();
        long[cd + 24] = 0xfe;
        check(&long, "records 11 bytes stored but");
        let mut big = z.clone();
        big[cd + 20..cd + 28].copy_from_slice(&[0xff; 8]);
        check(&big, "lacks its zip64 sizes");
        assert!(matches!(ZipWriter::new().add(&"x".repeat(70_000), &[]), Err(Error::NameTooLong { len: 70_000 })));
    }

    #[test]
    fn comments_and_data_descriptors_are_read() {
        let mut z = archive(false);
        let n = z.len();
        z[n - 2..].copy_from_slice(&5u16.to_le_bytes());
        z.extend_from_slice(b"hello");
        assert_eq!(read_zip(&z).unwrap().len(), 3, "archive comment");
        // A streamed writer leaves local sizes zero and sets bit 3: the central directory has them.
        let mut streamed = archive(false);
        streamed[6] |= 0x08;
        streamed[14..26].fill(0);
        assert_eq!(read_zip(&streamed).unwrap()[0].data, b"hello world");
    }

    #[test]
    fn size_hint_bounds_the_archive() {
        let hint = ZipWriter::size_hint([(5, 11), (6, 0), (1, 1000)]);
        assert!(hint >= archive(true).len() && hint >= archive(false).len());
    }
}
