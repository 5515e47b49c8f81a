//! Tiling a large image into fixed-size square tiles for a network, and
//! stitching per-pixel outputs back.
//!
//! **Tiles.** Along an axis of length `L`, with tile size `T` and minimum
//! overlap `O`: one tile at 0 when `L <= T` (zero-padded to `T`), else
//! `n = ceil((L - O) / (T - O))` tiles spread evenly,
//! `origin_k = floor(k * (L - T) / (n - 1))`, so neighbours overlap by at
//! least `O` and the last tile ends at `L`. Tiles are numbered row-major
//! (`index = i * cols + j`).
//!
//! **Stitching rule.** Each pixel takes its scores from the tile whose centre
//! is nearest along each axis: between tiles `k` and `k + 1` the boundary is
//! `floor((origin_k + origin_{k+1} + T) / 2)`; pixels before it belong to
//! tile `k`, from it on to tile `k + 1`. Tile edges, where a convolutional
//! network sees least context, are never used where another tile covers the
//! pixel more centrally.

use crate::context::{Reader, Writer};
use crate::sparse::Pixels;
use crate::{ops, Dtype, PluginError, Tensor};

fn err(message: impl Into<String>) -> PluginError {
    PluginError::new("tiles", message)
}

pub use tensorgate_ops::tiles::origins;

/// The tiles covering a `height` x `width` image: the host's grid
/// ([`tensorgate_ops::tiles::Grid`], whose methods it derefs to), so that
/// the SDK and the host's `tile-pixels` lay tiles out identically.
#[derive(Debug, Clone, PartialEq)]
pub struct TileGrid(tensorgate_ops::tiles::Grid);

impl std::ops::Deref for TileGrid {
    type Target = tensorgate_ops::tiles::Grid;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl TileGrid {
    /// The grid for an image; errors if the tile is 0, the overlap is not
    /// smaller than the tile, or the image is empty.
    pub fn new(height: usize, width: usize, tile: usize, overlap: usize) -> Result<TileGrid, PluginError> {
        tensorgate_ops::tiles::Grid::new(height, width, tile, overlap).map(TileGrid).map_err(|e| err(e.to_string()))
    }

    /// Copies tile `index` of a dense row-major image (zero-padded past the edges) into `out` (`tile * tile`).
    pub fn copy_tile(&self, image: &[f32], index: usize, out: &mut [f32]) -> Result<(), PluginError> {
        let (r0, c0) = self.origin(index);
        let t = self.tile;
        out[..t * t].fill(0.0);
        let size = [(self.height - r0).min(t) as u64, (self.width - c0).min(t) as u64];
        let (image_shape, tile_shape) = ([self.height as u64, self.width as u64], [t as u64, t as u64]);
        tensorgate_ops::copy_region(image, &image_shape, &[r0 as u64, c0 as u64], &mut out[..t * t], &tile_shape, &[0, 0], &size)
            .map_err(|e| err(format!("tile {index}: {e}")))
    }
}

/// Sparse pixels laid over a tile grid: which tiles to run, the batched
/// network input, and the stitched per-pixel outputs. The glue of a tiled
/// segmentation network.
#[derive(Debug, Clone, PartialEq)]
pub struct TiledPixels {
    /// The grid.
    pub grid: TileGrid,
    /// The pixels, in the order results are reported.
    pub pixels: Pixels,
    /// Tiles that hold at least one pixel, ascending: the batch, in order.
    /// Tiles without pixels are skipped; if no tile holds a pixel, tile 0
    /// runs alone so that the model still gets a batch of one.
    pub tiles: Vec<u32>,
}

impl TiledPixels {
    /// Lays `pixels` over a grid of `tile`-sized tiles with at least `overlap`.
    pub fn new(pixels: Pixels, tile: usize, overlap: usize) -> Result<TiledPixels, PluginError> {
        let grid = TileGrid::new(pixels.height, pixels.width, tile, overlap)?;
        let tiles = grid.tiles_for(&pixels.rows, &pixels.cols);
        Ok(TiledPixels { grid, pixels, tiles })
    }

    /// The network input: f32 `[tiles, 1, tile, tile]`, each tile holding
    /// the `values` (f32 `[pixels]`, in the host) of the pixels inside it and
    /// zeros elsewhere. The plugin computes where each pixel goes; the host
    /// moves the values (a gather when pixels sit in several tiles, then a
    /// scatter), so only indices cross.
    pub fn input(&self, values: &Tensor) -> Result<Tensor, PluginError> {
        if values.shape() != [self.pixels.len() as u64] {
            return Err(err(format!("{} pixels but values of shape {:?}", self.pixels.len(), values.shape())));
        }
        let t = self.grid.tile;
        let (to, from) = self.grid.placements(&self.pixels.rows, &self.pixels.cols, &self.tiles).map_err(|e| err(e.to_string()))?;
        let mut out = Tensor::zeros(Dtype::F32, &[self.tiles.len() as u64, 1, t as u64, t as u64])?;
        let to = Tensor::from_slice(&[to.len() as u64], &to)?;
        if from.len() == self.pixels.len() {
            // Every pixel in exactly one tile: the values go as they are.
            ops::scatter(&mut out, &to, values)?;
        } else {
            let from = Tensor::from_slice(&[from.len() as u64], &from)?;
            let mut spread = ops::gather(values, &from, 1, 1)?;
            spread.reshape(&[from.numel() as u64])?;
            ops::scatter(&mut out, &to, &spread)?;
        }
        Ok(out)
    }

    /// The network input cut out of a dense f32 `[height, width]` plane in
    /// the host (e.g. the lit pixels scattered back, [`Pixels::to_dense`]):
    /// f32 `[tiles, 1, tile, tile]`, each run tile copied out of the plane by
    /// the host (`copy-region`), zero-padded past the plane's edges. No
    /// pixel data crosses; the plugin sends one box per tile.
    pub fn input_from_plane(&self, plane: &Tensor) -> Result<Tensor, PluginError> {
        let (h, w, t) = (self.grid.height as u64, self.grid.width as u64, self.grid.tile as u64);
        if plane.shape() != [h, w] {
            return Err(err(format!("the plane has shape {:?}, the grid is over {h}x{w}", plane.shape())));
        }
        let n = self.tiles.len() as u64;
        // Tiles stacked as rows of one [n * t, t] image, then seen as [n, 1, t, t].
        let mut out = Tensor::zeros(Dtype::F32, &[n * t, t])?;
        for (slot, &tile) in self.tiles.iter().enumerate() {
            let (r0, c0) = self.grid.origin(tile as usize);
            let size = [(h - r0 as u64).min(t), (w - c0 as u64).min(t)];
            ops::copy_region(plane, &[r0 as u64, c0 as u64], &mut out, &[slot as u64 * t, 0], &size)?;
        }
        out.reshape(&[n, 1, t, t])?;
        Ok(out)
    }

    /// Stitches the network's per-pixel output `[tiles, C, tile, tile]` into
    /// f32 `[pixels, C]`: for each pixel, in order, the `C` values from the
    /// tile that owns it (the stitching rule in the module docs). The host
    /// gathers them; the plugin sends one index per pixel.
    pub fn gather(&self, output: &Tensor) -> Result<Tensor, PluginError> {
        let (n, t) = (self.tiles.len() as u64, self.grid.tile as u64);
        let shape = output.shape();
        if shape.len() != 4 || shape[0] != n || shape[2] != t || shape[3] != t {
            return Err(err(format!("model output has shape {shape:?}, expected [{n}, C, {t}, {t}]")));
        }
        let (c, t) = (shape[1], t as usize);
        let indices =
            self.grid.score_indices(&self.pixels.rows, &self.pixels.cols, &self.tiles, c as usize).map_err(|e| err(e.to_string()))?;
        let indices = Tensor::from_slice(&[indices.len() as u64], &indices)?;
        ops::gather(output, &indices, c, (t * t) as u64).map_err(|e| err(format!("stitching: {}", e.message)))
    }

    /// This layout as a context for `postprocess`.
    pub fn context(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode(&mut w);
        w.finish()
    }

    /// The layout from a context made by [`TiledPixels::context`].
    pub fn from_context(context: &[u8]) -> Result<TiledPixels, PluginError> {
        Self::decode(&mut Reader::new(context))
    }

    /// Appends this layout to a context.
    pub fn encode(&self, w: &mut Writer) {
        w.u64(self.grid.tile as u64).u64(self.grid.overlap as u64).slice(&self.tiles);
        self.pixels.encode(w);
    }

    /// Reads a layout written by [`TiledPixels::encode`].
    pub fn decode(r: &mut Reader) -> Result<TiledPixels, PluginError> {
        let (tile, overlap) = (r.u64()? as usize, r.u64()? as usize);
        let tiles = r.slice::<u32>()?;
        let pixels = Pixels::decode(r)?;
        let grid = TileGrid::new(pixels.height, pixels.width, tile, overlap)?;
        if tiles.iter().any(|&t| t as usize >= grid.len()) {
            return Err(err("context names a tile outside the grid"));
        }
        Ok(TiledPixels { grid, pixels, tiles })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_cover_with_overlap() {
        assert_eq!(origins(300, 512, 64), vec![0]);
        assert_eq!(origins(512, 512, 64), vec![0]);
        assert_eq!(origins(1008, 512, 64), vec![0, 248, 496]);
        assert_eq!(origins(640, 512, 64), vec![0, 128]);
        let o = origins(3456, 512, 64);
        assert_eq!((o.len(), o[0], *o.last().unwrap()), (8, 0, 3456 - 512));
        assert!(o.windows(2).all(|w| w[0] + 512 - w[1] >= 64));
        assert_eq!(origins(2400, 512, 64).len(), 6);
    }

    #[test]
    fn owner_is_nearest_centre() {
        let g = TileGrid::new(1008, 1008, 512, 64).unwrap();
        // Axis origins 0, 248, 496; centres 256, 504, 752; bounds 380, 628.
        assert_eq!(g.owner(379, 0), 0);
        assert_eq!(g.owner(380, 0), 3);
        assert_eq!(g.owner(627, 1007), 5);
        assert_eq!(g.owner(628, 1007), 8);
        for p in 0..1008 {
            let i = g.owner(p, 0) / 3;
            let centre = |k: usize| g.row_origins()[k] as i64 + 256;
            let d = (p as i64 - centre(i)).abs();
            assert!((0..3).all(|k| (p as i64 - centre(k)).abs() >= d), "pixel {p}");
            assert!(g.row_origins()[i] <= p && p < g.row_origins()[i] + 512);
        }
        assert!(TileGrid::new(10, 10, 8, 8).is_err());
    }

    #[test]
    fn copy_tile_pads_with_zeros() {
        let g = TileGrid::new(3, 5, 4, 1).unwrap();
        let img: Vec<f32> = (0..15).map(|v| v as f32).collect();
        let mut out = vec![9.0; 16];
        g.copy_tile(&img, 1, &mut out).unwrap();
        assert_eq!(g.origin(1), (0, 1));
        assert_eq!(out, vec![1., 2., 3., 4., 6., 7., 8., 9., 11., 12., 13., 14., 0., 0., 0., 0.]);
    }

    /// A fake "network" whose output at each tile pixel encodes (tile, row, col):
    /// stitching must read each pixel from its owner tile at the right place.
    #[test]
    fn input_and_gather_agree_with_dense_tiles() {
        let (h, w, t) = (20usize, 30usize, 8usize);
        let mut img = vec![0f32; h * w];
        for (i, v) in img.iter_mut().enumerate() {
            if i % 7 == 0 {
                *v = 1.0 + i as f32;
            }
        }
        img[0..h * w / 2].iter_mut().for_each(|v| *v = 0.0); // top half empty: its tiles skip
        let plane = Tensor::from_slice(&[h as u64, w as u64], &img).unwrap();
        let (pixels, values) = Pixels::above(&plane, 0.0).unwrap();
        let tp = TiledPixels::new(pixels, t, 2).unwrap();
        assert!(tp.tiles.len() < tp.grid.len(), "empty tiles are skipped");
        let input = tp.input(&values).unwrap();
        let dense = tp.pixels.to_dense(&values).unwrap();
        assert_eq!(tp.input_from_plane(&dense).unwrap(), input, "scatter and copy-region give the same tiles");
        let x = input.view::<f32>().unwrap();
        let mut want = vec![0f32; t * t];
        for (n, &tile) in tp.tiles.iter().enumerate() {
            tp.grid.copy_tile(&img, tile as usize, &mut want).unwrap();
            assert_eq!(&x[n * t * t..(n + 1) * t * t], &want[..], "tile {tile}");
        }
        let mut fake = Vec::new();
        for &tile in &tp.tiles {
            for k in 0..2 {
                for r in 0..t {
                    for c in 0..t {
                        fake.push((tile as usize * 10000 + k * 1000 + r * 10 + c) as f32);
                    }
                }
            }
        }
        let out = tp.gather(&Tensor::from_slice(&[tp.tiles.len() as u64, 2, t as u64, t as u64], &fake).unwrap()).unwrap();
        let got = out.view::<f32>().unwrap();
        for i in 0..tp.pixels.len() {
            let (r, c) = (tp.pixels.rows[i] as usize, tp.pixels.cols[i] as usize);
            let owner = tp.grid.owner(r, c);
            let (r0, c0) = tp.grid.origin(owner);
            assert_eq!(got[i * 2], (owner * 10000 + (r - r0) * 10 + (c - c0)) as f32);
            assert_eq!(got[i * 2 + 1], (owner * 10000 + 1000 + (r - r0) * 10 + (c - c0)) as f32);
        }
        assert_eq!(TiledPixels::from_context(&tp.context()).unwrap(), tp);
        let wrong = Tensor::from_slice(&[1, 2, t as u64, t as u64], &fake[..2 * t * t]).unwrap();
        assert!(tp.gather(&wrong).unwrap_err().message.contains("expected ["));
    }

    #[test]
    fn no_pixels_still_runs_one_tile() {
        let (pixels, values) = Pixels::above(&Tensor::zeros(Dtype::F32, &[3, 4]).unwrap(), 0.0).unwrap();
        let tp = TiledPixels::new(pixels, 2, 0).unwrap();
        assert_eq!(tp.tiles, vec![0]);
        assert_eq!(tp.input(&values).unwrap().shape(), &[1, 1, 2, 2]);
    }
}
