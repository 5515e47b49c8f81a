//! NumPy `.npy` files and stored (uncompressed) `.npz` archives, read and
//! written exactly as `numpy.save` / `numpy.savez` write them and
//! `numpy.load` reads them. One implementation for the guest plugin SDK
//! (built for wasm32) and the Python bindings; its only dependency is
//! `crc32fast`.
//!
//! The layers:
//! - [`Descr`]: an array-protocol type string (`<f4`, `|b1`, …) and its element size;
//! - [`parse_npy`] / [`write_npy`] / [`NpyHeader`]: one `.npy` file (C order);
//! - [`read_zip`] / [`ZipWriter`]: stored zip archives, zip64 included;
//! - [`parse_npz`] / [`write_npz`] / [`NpzWriter`]: `.npz` archives of `.npy` files.
//!
//! Parsing borrows the element bytes from the input; every size is computed
//! with overflow checks, and every malformed input is an [`Error`] that
//! names what was wrong.
//!
//! ```
//! use tensorgate_npy::{parse_npz, write_npz, Descr};
//! let data: Vec<u8> = [1.0f32, 2.0, 3.0].iter().flat_map(|v| v.to_le_bytes()).collect();
//! let npz = write_npz(&[("x", &Descr::F32, &[3], &data)])?;
//! let arrays = parse_npz(&npz)?;
//! assert_eq!((arrays[0].0.as_str(), arrays[0].1.shape.as_slice(), arrays[0].1.data), ("x", &[3u64][..], &data[..]));
//! # Ok::<(), tensorgate_npy::Error>(())
//! ```

#![warn(missing_docs)]

mod descr;
mod error;
mod header;
mod npy;
mod npz;
mod zip;

pub use descr::Descr;
pub use error::Error;
pub use npy::{data_len, header_end, parse_header, parse_npy, write_npy, write_npy_header, Array, NpyHeader, MAGIC, PREFIX_LEN};
pub use npz::{parse_npz, write_npz, NpzWriter};
pub use zip::{read_zip, StoredFile, ZipWriter};

/// The CRC-32 (IEEE, as zip uses) of `data`.
pub fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}
