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
