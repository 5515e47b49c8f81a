//! Sparse images: lists of lit pixels `(row, col, value)`, to and from dense
//! row-major planes and the documented `.npz` layout.

use std::collections::HashMap;

use crate::context::{Reader, Writer};
use crate::{ops, Dtype, PluginError, Tensor};

fn err(message: impl Into<String>) -> PluginError {
    PluginError::new("sparse", message)
}

/// Lit pixels of a `height` x `width` image, in a chosen order: their
/// coordinates, which the plugin needs for its logic (tiling, stitching).
/// Their values stay in the host, in a [`Tensor`] beside them.
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
}

impl Pixels {
    /// The pixels of an f32 `[height, width]` plane whose value is strictly
    /// above `threshold`, in row-major order, and their values (f32 `[n]`).
    /// The host selects them: only their indices enter the plugin.
    pub fn above(plane: &Tensor, threshold: f32) -> Result<(Pixels, Tensor), PluginError> {
        let [height, width] = plane.shape()[..] else {
            return Err(PluginError::new("shape", format!("expected a 2-d plane [rows, cols], got shape {:?}", plane.shape())));
        };
        if plane.dtype() != Dtype::F32 {
            return Err(PluginError::new("dtype", format!("expected an f32 plane, got {} of shape {:?}", plane.dtype().name(), plane.shape())));
        }
        let (indices, values) = ops::select_above(plane, threshold)?;
        let w = width.max(1) as i64;
        let flat = indices.view::<i64>()?;
        let rows = flat.iter().map(|&i| (i / w) as u32).collect();
        let cols = flat.iter().map(|&i| (i % w) as u32).collect();
        Ok((Pixels { height: height as usize, width: width as usize, rows, cols }, values))
    }

    /// Row-major flat index of each pixel (what the bulk operations take).
    pub fn flat_indices(&self) -> Vec<i64> {
        self.rows.iter().zip(&self.cols).map(|(&r, &c)| r as i64 * self.width as i64 + c as i64).collect()
    }

    /// Pixels from parallel lists; errors name the first pixel outside the image.
    pub fn new(height: usize, width: usize, rows: Vec<u32>, cols: Vec<u32>) -> Result<Pixels, PluginError> {
        if rows.len() != cols.len() {
            return Err(err(format!("{} rows and {} cols: lengths differ", rows.len(), cols.len())));
        }
        if let Some(i) = (0..rows.len()).find(|&i| rows[i] as usize >= height || cols[i] as usize >= width) {
            return Err(err(format!("pixel {i} at ({}, {}) is outside the {height}x{width} image", rows[i], cols[i])));
        }
        Ok(Pixels { height, width, rows, cols })
    }

    /// Number of pixels.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no pixels.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The dense f32 `[height, width]` image of `values` (one per pixel;
    /// pixels not listed are 0; a repeated pixel keeps its last value),
    /// scattered by the host.
    pub fn to_dense(&self, values: &Tensor) -> Result<Tensor, PluginError> {
        let mut out = Tensor::zeros(Dtype::F32, &[self.height as u64, self.width as u64])?;
        let indices = Tensor::from_slice(&[self.len() as u64], &self.flat_indices())?;
        ops::scatter(&mut out, &indices, values)?;
        Ok(out)
    }

    /// Reads the sparse `.npz` layout: `pixels` i32 `[n, 2]` (row, col),
    /// `values` f32 `[n]`, `shape` i64 or i32 `[2]` (height, width). Returns
    /// the pixels and their values (which stay in the host).
    pub fn from_npz(mut entries: Vec<(String, Tensor)>) -> Result<(Pixels, Tensor), PluginError> {
        let at = |entries: &[(String, Tensor)], name: &str| {
            entries.iter().position(|(n, _)| n == name).ok_or_else(|| {
                err(format!("sparse npz has no array named `{name}` (expected pixels [n,2] i32, values [n] f32, shape [2] i64)"))
            })
        };
        let (p, v, s) = (at(&entries, "pixels")?, at(&entries, "values")?, at(&entries, "shape")?);
        let shape = &entries[s].1;
        let dims: Vec<i64> = match shape.view::<i64>() {
            Ok(v) => v.into_owned(),
            Err(_) => shape.view::<i32>()?.iter().map(|&d| d as i64).collect(),
        };
        let [h, w] = dims[..] else { return Err(err(format!("`shape` must hold 2 numbers, got {dims:?}"))) };
        if h <= 0 || w <= 0 {
            return Err(err(format!("`shape` must be positive, got {dims:?}")));
        }
        let pixels = &entries[p].1;
        if pixels.shape().len() != 2 || pixels.shape()[1] != 2 {
            return Err(err(format!("`pixels` must be [n, 2] (row, col), got shape {:?}", pixels.shape())));
        }
        let coords = pixels.view::<i32>()?;
        if let Some(bad) = coords.iter().find(|&&v| v < 0) {
            return Err(err(format!("`pixels` holds a negative coordinate {bad}")));
        }
        let rows = coords.iter().step_by(2).map(|&v| v as u32).collect();
        let cols = coords.iter().skip(1).step_by(2).map(|&v| v as u32).collect();
        let pixels = Pixels::new(h as usize, w as usize, rows, cols)?;
        let values = entries.swap_remove(v).1;
        if values.dtype() != Dtype::F32 || values.shape() != [pixels.len() as u64] {
            return Err(err(format!(
                "`values` must be f32 [{}] (one per pixel), got {} of shape {:?}",
                pixels.len(),
                values.dtype().name(),
                values.shape()
            )));
        }
        Ok((pixels, values))
    }

    /// The coordinates as an i32 `[n, 2]` (row, col) tensor.
    pub fn coords(&self) -> Result<Tensor, PluginError> {
        let flat: Vec<i32> = self.rows.iter().zip(&self.cols).flat_map(|(&r, &c)| [r as i32, c as i32]).collect();
        Tensor::from_slice(&[self.len() as u64, 2], &flat)
    }

    /// Index of the first pixel that repeats an earlier one, if any.
    pub fn first_duplicate(&self) -> Option<usize> {
        let mut seen = HashMap::with_capacity(self.len());
        (0..self.len()).find(|&i| seen.insert((self.rows[i], self.cols[i]), ()).is_some())
    }

    /// Appends the pixels to a context.
    pub fn encode(&self, w: &mut Writer) {
        w.u64(self.height as u64).u64(self.width as u64).slice(&self.rows).slice(&self.cols);
    }

    /// Reads pixels written by [`Pixels::encode`].
    pub fn decode(r: &mut Reader) -> Result<Pixels, PluginError> {
        let (height, width) = (r.u64()? as usize, r.u64()? as usize);
        let rows = r.slice::<u32>()?;
        let cols = r.slice::<u32>()?;
        Pixels::new(height, width, rows, cols)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn above_threshold_round_trips_through_dense_and_context() {
        let img = Tensor::from_slice(&[2, 3], &[0.0f32, 5.0, 1.0, 0.0, 0.0, 7.5]).unwrap();
        let (p, values) = Pixels::above(&img, 1.0).unwrap();
        assert_eq!((p.height, p.width, p.rows.clone(), p.cols.clone()), (2, 3, vec![0, 1], vec![1, 2]));
        assert_eq!(values.to_f32().unwrap(), vec![5.0, 7.5]);
        assert_eq!(p.to_dense(&values).unwrap().to_f32().unwrap(), vec![0.0, 5.0, 0.0, 0.0, 0.0, 7.5]);
        let mut w = Writer::new();
        p.encode(&mut w);
        let bytes = w.finish();
        assert_eq!(Pixels::decode(&mut Reader::new(&bytes)).unwrap(), p);
    }

    #[test]
    fn npz_layout_is_checked() {
        let entries = || {
            vec![
                ("pixels".to_string(), Tensor::from_slice(&[2, 2], &[0i32, 1, 3, 2]).unwrap()),
                ("values".to_string(), Tensor::from_slice(&[2], &[1.0f32, 2.0]).unwrap()),
                ("shape".to_string(), Tensor::from_slice(&[2], &[4i64, 3]).unwrap()),
            ]
        };
        let (p, v) = Pixels::from_npz(entries()).unwrap();
        assert_eq!((p.rows, p.cols, v.to_f32().unwrap()), (vec![0, 3], vec![1, 2], vec![1.0, 2.0]));
        let mut bad = entries();
        bad[2].1 = Tensor::from_slice(&[2], &[3i64, 3]).unwrap();
        assert!(Pixels::from_npz(bad).unwrap_err().message.contains("pixel 1 at (3, 2) is outside the 3x3 image"));
        let mut short = entries();
        short[1].1 = Tensor::from_slice(&[1], &[1.0f32]).unwrap();
        assert!(Pixels::from_npz(short).unwrap_err().message.contains("`values` must be f32 [2]"));
        assert!(Pixels::from_npz(entries().into_iter().take(2).collect()).unwrap_err().message.contains("no array named `shape`"));
    }
}
