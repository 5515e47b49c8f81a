//! What can be wrong with a `.npy` file or a `.npz` archive.

use std::fmt;

/// A malformed or unsupported `.npy`/`.npz`, or arguments that cannot be
/// written as one. The message names what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The bytes do not start with `\x93NUMPY`.
    BadMagic,
    /// The file ends inside its fixed-size preamble or its header.
    Truncated {
        /// The part that is cut short.
        what: &'static str,
    },
    /// A format version other than 1.0, 2.0 or 3.0.
    UnsupportedVersion {
        /// Major version byte.
        major: u8,
        /// Minor version byte.
        minor: u8,
    },
    /// The header is not the Python dict literal the format prescribes.
    BadHeader {
        /// What is wrong with it.
        reason: String,
    },
    /// The header lacks one of `descr`, `fortran_order`, `shape`.
    MissingKey(&'static str),
    /// A type string this crate cannot handle (objects, structured dtypes, …).
    UnsupportedDtype {
        /// The type string (or a description of the value) found.
        descr: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The array is stored in Fortran (column-major) order.
    FortranOrder,
    /// The shape's byte size does not fit in memory addresses.
    TooLarge {
        /// The shape.
        shape: Vec<u64>,
        /// Bytes per element.
        itemsize: usize,
    },
    /// The element bytes do not match the shape.
    DataLength {
        /// Type string.
        descr: String,
        /// Shape.
        shape: Vec<u64>,
        /// Bytes the shape needs.
        expected: u64,
        /// Bytes present.
        actual: usize,
    },
    /// Not a readable zip archive; the message says which structure is missing or broken.
    Zip(String),
    /// A zip entry is compressed (`numpy.savez_compressed`); only stored entries are read.
    Compressed {
        /// Entry name.
        name: String,
        /// Zip compression method.
        method: u16,
    },
    /// A zip entry is encrypted.
    Encrypted {
        /// Entry name.
        name: String,
    },
    /// A zip entry's stored CRC-32 does not match its bytes.
    CrcMismatch {
        /// Entry name.
        name: String,
        /// CRC-32 recorded in the archive.
        stored: u32,
        /// CRC-32 of the entry's bytes.
        actual: u32,
    },
    /// An archive with no entries where arrays were expected.
    NoEntries,
    /// One entry of an `.npz` is not a valid `.npy`.
    Entry {
        /// Entry name (without `.npy`).
        name: String,
        /// What is wrong with it.
        source: Box<Error>,
    },
    /// An entry name longer than zip allows (65 535 bytes).
    NameTooLong {
        /// Name length in bytes.
        len: usize,
    },
    /// [`NpzWriter::write`](crate::NpzWriter::write) got a different number of arrays than it was made for.
    EntryCount {
        /// Entries the writer was made for.
        expected: usize,
        /// Arrays given.
        actual: usize,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadMagic => f.write_str("not a .npy file (bad magic)"),
            Error::Truncated { what } => write!(f, "npy file ends inside its {what}"),
            Error::UnsupportedVersion { major, minor } => {
                write!(f, "unsupported .npy version {major}.{minor} (1.0, 2.0 and 3.0 are read)")
            }
            Error::BadHeader { reason } => write!(f, "malformed npy header: {reason}"),
            Error::MissingKey(key) => write!(f, "npy header has no '{key}'"),
            Error::UnsupportedDtype { descr, reason } => write!(f, "unsupported dtype '{descr}': {reason}"),
            Error::FortranOrder => f.write_str("Fortran-order arrays are not supported; save a C-contiguous array"),
            Error::TooLarge { shape, itemsize } => {
                write!(f, "npy shape {shape:?} of {itemsize}-byte elements is too large")
            }
            Error::DataLength { descr, shape, expected, actual } => {
                write!(f, "npy data is {actual} bytes, shape {shape:?} of {descr} needs {expected}")
            }
            Error::Zip(reason) => write!(f, "not a readable .npz (zip) archive: {reason}"),
            Error::Compressed { name, method } => write!(
                f,
                "npz entry '{name}' is compressed (zip method {method}); use numpy.savez, not savez_compressed"
            ),
            Error::Encrypted { name } => write!(f, "npz entry '{name}' is encrypted"),
            Error::CrcMismatch { name, stored, actual } => {
                write!(f, "npz entry '{name}' is corrupt: CRC-32 {actual:08x}, the archive records {stored:08x}")
            }
            Error::NoEntries => f.write_str("not an .npz archive (no entries)"),
            Error::Entry { name, source } => write!(f, "npz entry '{name}': {source}"),
            Error::NameTooLong { len } => write!(f, "entry name of {len} bytes is longer than zip allows (65535)"),
            Error::EntryCount { expected, actual } => {
                write!(f, "npz writer made for {expected} arrays was given {actual}")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Entry { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

/// A [`Error::Zip`] from a message.
pub(crate) fn zip_err(reason: impl Into<String>) -> Error {
    Error::Zip(reason.into())
}
