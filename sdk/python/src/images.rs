//! `image_tensor`: a PNG decoded, resized and normalised for training
//! (`tensorgate.images`) exactly as the `image` plugin does it when serving:
//! the same `png` crate and settings (expanded palettes and grey+alpha,
//! 16 bits cut to 8) and the plugin SDK's own `image::to_tensor` (PyTorch's
//! bilinear resize, `align_corners=False`, then `(x - mean) / std`).

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyByteArray;
use tensorgate_plugin::image::{to_tensor, Image};

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
    let bad = |e: &dyn std::fmt::Display| PyValueError::new_err(format!("cannot decode PNG: {e}"));
    let mut decoder = png::Decoder::new(png);
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(|e| bad(&e))?;
    let (w, h) = (reader.info().width as usize, reader.info().height as usize);
    if w as u64 * h as u64 > max_pixels {
        return Err(PyValueError::new_err(format!("image is {w}x{h}, more than max_pixels ({max_pixels})")));
    }
    let mut buf = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut buf).map_err(|e| bad(&e))?;
    let img = Image { height: h, width: w, channels: frame.color_type.samples(), data: &buf[..frame.buffer_size()] };
    let t = to_tensor(&img, height, width, mean, std).map_err(|e| PyValueError::new_err(format!("{e:?}")))?;
    Ok((vec![3, height, width], PyByteArray::new(py, t.data())))
}
