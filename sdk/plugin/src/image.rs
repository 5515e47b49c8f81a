//! Image preprocessing as PyTorch does it: bilinear resizing
//! (`interpolate(mode="bilinear", align_corners=False)`, no antialias) and
//! per-channel normalisation into a CHW f32 tensor.

use crate::{PluginError, Tensor};

/// An 8-bit image, interleaved channels (HWC).
pub struct Image<'a> {
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
    /// Channels per pixel (1 grey, 3 RGB; more are cut to the first 3).
    pub channels: usize,
    /// `height * width * channels` bytes.
    pub data: &'a [u8],
}

/// An 8-bit image that owns its pixels (HWC), as [`decode_png`] returns it.
#[cfg(feature = "png")]
pub struct Decoded {
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
    /// Channels per pixel (1 grey, 2 grey + alpha, 3 RGB, 4 RGBA).
    pub channels: usize,
    /// `height * width * channels` bytes.
    pub data: Vec<u8>,
}

#[cfg(feature = "png")]
impl Decoded {
    /// The pixels as an [`Image`] for [`to_tensor`].
    pub fn image(&self) -> Image<'_> {
        Image { height: self.height, width: self.width, channels: self.channels, data: &self.data }
    }
}

/// Decodes a PNG file into 8-bit pixels: palettes and transparency
/// expanded, 16-bit samples cut to 8. An image of more than `max_pixels`
/// pixels is refused from its header, before it is decoded (`too-large`);
/// a file that is not a PNG is `bad-png`. One implementation for the image
/// plugin, its native benchmark and the training side (`tensorgate.images`).
#[cfg(feature = "png")]
pub fn decode_png(bytes: &[u8], max_pixels: u64) -> Result<Decoded, PluginError> {
    let bad = |e: png::DecodingError| PluginError::new("bad-png", format!("cannot decode PNG: {e}"));
    let mut decoder = png::Decoder::new(bytes);
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(bad)?;
    let (width, height) = (reader.info().width as usize, reader.info().height as usize);
    if width as u64 * height as u64 > max_pixels {
        return Err(PluginError::new("too-large", format!("image is {width}x{height}, more than max_pixels ({max_pixels})")));
    }
    let mut data = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut data).map_err(bad)?;
    data.truncate(frame.buffer_size());
    Ok(Decoded { height, width, channels: frame.color_type.samples(), data })
}

/// Source index pair and weight for one output coordinate (half-pixel centres, clamped).
fn taps(out: usize, input: usize) -> Vec<(usize, usize, f32)> {
    let scale = input as f32 / out as f32;
    (0..out)
        .map(|o| {
            let x = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (x as usize).min(input - 1);
            let i1 = (i0 + 1).min(input - 1);
            (i0, i1, x - i0 as f32)
        })
        .collect()
}

/// Resizes `img` to `height` x `width`, scales bytes to [0, 1], normalises
/// channel `c` as `(x - mean[c]) / std[c]` and returns f32 `[1, 3, height, width]`
/// (grey images are repeated over the 3 channels).
pub fn to_tensor(img: &Image, height: usize, width: usize, mean: [f32; 3], std: [f32; 3]) -> Result<Tensor, PluginError> {
    if img.height == 0 || img.width == 0 || img.data.len() != img.height * img.width * img.channels {
        return Err(PluginError::new(
            "image",
            format!("image {}x{}x{} does not match its {} bytes", img.height, img.width, img.channels, img.data.len()),
        ));
    }
    let (ty, tx) = (taps(height, img.height), taps(width, img.width));
    let px = |y: usize, x: usize, c: usize| {
        let c = if img.channels >= 3 { c } else { 0 };
        img.data[(y * img.width + x) * img.channels + c] as f32 / 255.0
    };
    let mut out = vec![0f32; 3 * height * width];
    for c in 0..3 {
        for (oy, &(y0, y1, wy)) in ty.iter().enumerate() {
            for (ox, &(x0, x1, wx)) in tx.iter().enumerate() {
                let top = px(y0, x0, c) * (1.0 - wx) + px(y0, x1, c) * wx;
                let bottom = px(y1, x0, c) * (1.0 - wx) + px(y1, x1, c) * wx;
                out[(c * height + oy) * width + ox] = ((top * (1.0 - wy) + bottom * wy) - mean[c]) / std[c];
            }
        }
    }
    Tensor::from_slice(&[1, 3, height as u64, width as u64], &out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "png")]
    #[test]
    fn png_files_decode_to_8_bit_pixels_and_bad_ones_are_named() {
        // A 3x2 16-bit grey+alpha PNG: decoded to 8 bits, 2 channels.
        let mut file = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut file, 3, 2);
            enc.set_color(png::ColorType::GrayscaleAlpha);
            enc.set_depth(png::BitDepth::Sixteen);
            let mut w = enc.write_header().expect("header");
            let px: Vec<u8> = (0..6u16).flat_map(|i| [(i * 40) as u8, 0, 255, 255]).collect();
            w.write_image_data(&px).expect("data");
        }
        let img = decode_png(&file, 6).expect("decodes");
        assert_eq!((img.height, img.width, img.channels), (2, 3, 2));
        assert_eq!(img.data.iter().step_by(2).copied().collect::<Vec<_>>(), vec![0, 40, 80, 120, 160, 200]);
        assert_eq!(img.image().data.len(), 12);
        let e = decode_png(&file, 5).err().expect("too many pixels");
        assert_eq!((e.code.as_str(), e.message.as_str()), ("too-large", "image is 3x2, more than max_pixels (5)"));
        let e = decode_png(b"not a png", 100).err().expect("not a PNG");
        assert!(e.code == "bad-png" && e.message.starts_with("cannot decode PNG: "), "{}", e.message);
    }

    #[test]
    fn resize_matches_torch_half_pixel_rule() {
        // torch: interpolate([[0, 255]] as 1x2, size 1x4, bilinear, align_corners=False)
        // -> [0, 0.25, 0.75, 1] (x255 before scaling).
        let data = [0u8, 255];
        let img = Image { height: 1, width: 2, channels: 1, data: &data };
        let t = to_tensor(&img, 1, 4, [0.0; 3], [1.0; 3]).unwrap();
        let v = t.view::<f32>().unwrap();
        assert_eq!(&v[..4], &[0.0, 0.25, 0.75, 1.0]);
        assert_eq!(&v[4..8], &v[..4], "grey repeats over channels");
        let bad = Image { height: 2, width: 2, channels: 3, data: &data };
        assert!(to_tensor(&bad, 1, 1, [0.0; 3], [1.0; 3]).is_err());
    }
}
