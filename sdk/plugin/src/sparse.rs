//! Sparse images: lists of lit pixels `(row, col, value)`, to and from dense
//! row-major planes and the documented `.npz` layout.

use std::collections::HashMap;

use crate::context::{Reader, Writer};
use crate::{PluginError, Tensor};

fn err(message: impl Into<String>) -> PluginError {
    PluginError::new("sparse", message)
}

/// Lit pixels of a `height` x `width` image, in a chosen order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pixels {
    /// Image height (rows).
    pub height: usize,
    /// Image width (columns).
    pub width: usize,
    /// Row of each pixel.
    pub rows: Vec<u32>,
    /// Column of each pixel.
    pub cols: Vec<u32>,
    /// Value of each pixel.
    pub values: Vec<f32>,
}

impl Pixels {
    /// The pixels of a dense row-major `image` (width `width`) whose value is
    /// strictly above `threshold`, in row-major order.
    pub fn above(image: &[f32], width: usize, threshold: f32) -> Pixels {
        let height = image.len().checked_div(width).unwrap_or(0);
        let (indices, values) = tensorgate_ops::select_above(&image[..height * width], threshold);
        let w = width.max(1) as i64;
        let rows = indices.iter().map(|&i| (i / w) as u32).collect();
        let cols = indices.iter().map(|&i| (i % w) as u32).collect();
        Pixels { height, width, rows, cols, values }
    }

    /// Row-major flat index of each pixel (what the bulk operations take).
    pub fn flat_indices(&self) -> Vec<i64> {
        self.rows.iter().zip(&self.cols).map(|(&r, &c)| r as i64 * self.width as i64 + c as i64).collect()
    }

    /// Pixels from parallel lists; errors name the first pixel outside the image.
    pub fn new(height: usize, width: usize, rows: Vec<u32>, cols: Vec<u32>, values: Vec<f32>) -> Result<Pixels, PluginError> {
        if rows.len() != cols.len() || rows.len() != values.len() {
            return Err(err(format!("{} rows, {} cols and {} values: lengths differ", rows.len(), cols.len(), values.len())));
        }
        if let Some(i) = (0..rows.len()).find(|&i| rows[i] as usize >= height || cols[i] as usize >= width) {
            return Err(err(format!("pixel {i} at ({}, {}) is outside the {height}x{width} image", rows[i], cols[i])));
        }
        Ok(Pixels { height, width, rows, cols, values })
    }

    /// Number of pixels.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no pixels.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The dense row-major image (pixels not listed are 0; a repeated pixel keeps its last value).
    pub fn to_dense(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.height * self.width];
        // In bounds by construction (`new` checks every pixel).
        let _ = tensorgate_ops::scatter(&mut out, &self.flat_indices(), &self.values);
        out
    }

    /// Reads the sparse `.npz` layout: `pixels` i32 `[n, 2]` (row, col),
    /// `values` f32 `[n]`, `shape` i64 or i32 `[2]` (height, width).
    pub fn from_npz(entries: &[(String, Tensor)]) -> Result<Pixels, PluginError> {
        let get = |name: &str| {
            entries.iter().find(|(n, _)| n == name).map(|(_, t)| t).ok_or_else(|| {
                err(format!("sparse npz has no array named `{name}` (expected pixels [n,2] i32, values [n] f32, shape [2] i64)"))
            })
        };
        let (pixels, values, shape) = (get("pixels")?, get("values")?, get("shape")?);
        let dims: Vec<i64> = match shape.view::<i64>() {
            Ok(v) => v.into_owned(),
            Err(_) => shape.view::<i32>()?.iter().map(|&d| d as i64).collect(),
        };
        let [h, w] = dims[..] else { return Err(err(format!("`shape` must hold 2 numbers, got {dims:?}"))) };
        if h <= 0 || w <= 0 {
            return Err(err(format!("`shape` must be positive, got {dims:?}")));
        }
        if pixels.shape.len() != 2 || pixels.shape[1] != 2 {
            return Err(err(format!("`pixels` must be [n, 2] (row, col), got shape {:?}", pixels.shape)));
        }
        let coords = pixels.view::<i32>()?;
        if let Some(bad) = coords.iter().find(|&&v| v < 0) {
            return Err(err(format!("`pixels` holds a negative coordinate {bad}")));
        }
        let rows = coords.iter().step_by(2).map(|&v| v as u32).collect();
        let cols = coords.iter().skip(1).step_by(2).map(|&v| v as u32).collect();
        Pixels::new(h as usize, w as usize, rows, cols, values.view::<f32>()?.into_owned())
    }

    /// The coordinates as an i32 `[n, 2]` (row, col) tensor.
    pub fn coords(&self) -> Tensor {
        let flat: Vec<i32> = self.rows.iter().zip(&self.cols).flat_map(|(&r, &c)| [r as i32, c as i32]).collect();
        Tensor::from_slice(&[self.len() as u64, 2], &flat)
    }

    /// The values as an f32 `[n]` tensor.
    pub fn values_tensor(&self) -> Tensor {
        Tensor::from_slice(&[self.len() as u64], &self.values)
    }

    /// Index of the first pixel that repeats an earlier one, if any.
    pub fn first_duplicate(&self) -> Option<usize> {
        let mut seen = HashMap::with_capacity(self.len());
        (0..self.len()).find(|&i| seen.insert((self.rows[i], self.cols[i]), ()).is_some())
    }

    /// Appends the pixels to a context.
    pub fn encode(&self, w: &mut Writer) {
        w.u64(self.height as u64).u64(self.width as u64).slice(&self.rows).slice(&self.cols).slice(&self.values);
    }

    /// Reads pixels written by [`Pixels::encode`].
    pub fn decode(r: &mut Reader) -> Result<Pixels, PluginError> {
        let (height, width) = (r.u64()? as usize, r.u64()? as usize);
        let rows = r.slice::<u32>()?;
        let cols = r.slice::<u32>()?;
        let values = r.slice::<f32>()?;
        Pixels::new(height, width, rows, cols, values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn above_threshold_round_trips_through_dense_and_context() {
        let img = [0.0, 5.0, 1.0, 0.0, 0.0, 7.5];
        let p = Pixels::above(&img, 3, 1.0);
        assert_eq!((p.height, p.width, p.rows.clone(), p.cols.clone(), p.values.clone()), (2, 3, vec![0, 1], vec![1, 2], vec![5.0, 7.5]));
        assert_eq!(p.to_dense(), vec![0.0, 5.0, 0.0, 0.0, 0.0, 7.5]);
        let mut w = Writer::new();
        p.encode(&mut w);
        let bytes = w.finish();
        assert_eq!(Pixels::decode(&mut Reader::new(&bytes)).unwrap(), p);
    }

    #[test]
    fn npz_layout_is_checked() {
        let entries = vec![
            ("pixels".to_string(), Tensor::from_slice(&[2, 2], &[0i32, 1, 3, 2])),
            ("values".to_string(), Tensor::from_slice(&[2], &[1.0f32, 2.0])),
            ("shape".to_string(), Tensor::from_slice(&[2], &[4i64, 3])),
        ];
        let p = Pixels::from_npz(&entries).unwrap();
        assert_eq!((p.rows, p.cols), (vec![0, 3], vec![1, 2]));
        let mut bad = entries.clone();
        bad[2].1 = Tensor::from_slice(&[2], &[3i64, 3]);
        assert!(Pixels::from_npz(&bad).unwrap_err().message.contains("pixel 1 at (3, 2) is outside the 3x3 image"));
        assert!(Pixels::from_npz(&entries[..2]).unwrap_err().message.contains("no array named `shape`"));
    }
}
