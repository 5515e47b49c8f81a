//! `image_tensor`: a PNG decoded, resized and normalised for training
//! (`tensorgate.images`) exactly as the `image` plugin does it when serving:
//! the plugin SDK's own `image::decode_png` (expanded palettes and
//! transparency, 16 bits cut to 8) and `image::to_tensor` (PyTorch's
//! bilinear resize, `align_corners=False`, then `(x - mean) / std`).

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyByteArray;
use tensorgate_plugin::image::{decode_png, to_tensor};

/// `png` bytes -> (shape `[3, height, width]`, float32 bytes); ValueError
/// for a file that is not a PNG or has more than `max_pixels` pixels.
#[pyfunction]
#[pyo3(signature = (png, height, width, mean, std, max_pixels = 16_777_216))]
pub fn image_tensor<'py>(
    py: Python<'py>,
    png: &[u8],
    height: usize,
    width: usize,
    mean: [f32; 3],
    std: [f32; 3],
    max_pixels: u64,
) -> PyResult<(Vec<usize>, Bound<'py, PyByteArray>)> {
    let img = decode_png(png, max_pixels).map_err(|e| PyValueError::new_err(e.message))?;
    let t = to_tensor(&img.image(), height, width, mean, std).map_err(|e| PyValueError::new_err(e.message))?;
    Ok((vec![3, height, width], PyByteArray::new(py, t.data())))
}
