//! Tiling a plane into square tiles and laying sparse pixels over them
//! (the LArTPC pixel-list-to-tiles step), and stitching per-pixel scores
//! back: one implementation for the host's `tile-pixels` /
//! `untile-pixels` operations and the Rust SDK's `tiles` module.
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
//! `floor((origin_k + origin_{k+1} + T) / 2)`.

use crate::OpError;

/// Tile origins along one axis (see the module docs).
pub fn origins(length: usize, tile: usize, overlap: usize) -> Vec<usize> {
    if length <= tile {
        return vec![0];
    }
    let n = (length - overlap).div_ceil(tile - overlap);
    (0..n).map(|k| k * (length - tile) / (n - 1)).collect()
}

fn bounds(origins: &[usize], tile: usize) -> Vec<usize> {
    origins.windows(2).map(|w| (w[0] + w[1] + tile) / 2).collect()
}

/// The tiles covering a `height` x `width` plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grid {
    /// Plane height.
    pub height: usize,
    /// Plane width.
    pub width: usize,
    /// Tile side.
    pub tile: usize,
    /// Minimum overlap between neighbouring tiles.
    pub overlap: usize,
    rows: Vec<usize>,
    cols: Vec<usize>,
    row_bounds: Vec<usize>,
    col_bounds: Vec<usize>,
}

impl Grid {
    /// The grid; an error if the tile is 0, the overlap not smaller than
    /// the tile, or the plane empty.
    pub fn new(height: usize, width: usize, tile: usize, overlap: usize) -> Result<Grid, OpError> {
        if tile == 0 || overlap >= tile {
            return Err(OpError::Shape(format!("tile size {tile} with overlap {overlap}: need tile > 0 and overlap < tile")));
        }
        if height == 0 || width == 0 {
            return Err(OpError::Shape(format!("image is {height}x{width}: nothing to tile")));
        }
        let (rows, cols) = (origins(height, tile, overlap), origins(width, tile, overlap));
        let (row_bounds, col_bounds) = (bounds(&rows, tile), bounds(&cols, tile));
        Ok(Grid { height, width, tile, overlap, rows, cols, row_bounds, col_bounds })
    }

    /// Origins of the tile rows (top pixel of each row of tiles).
    pub fn row_origins(&self) -> &[usize] {
        &self.rows
    }

    /// Origins of the tile columns.
    pub fn col_origins(&self) -> &[usize] {
        &self.cols
    }

    /// Number of tiles.
    pub fn len(&self) -> usize {
        self.rows.len() * self.cols.len()
    }

    /// Whether the grid has no tiles (never: a plane has at least one).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Top-left pixel `(row, col)` of tile `index`.
    pub fn origin(&self, index: usize) -> (usize, usize) {
        (self.rows[index / self.cols.len()], self.cols[index % self.cols.len()])
    }

    /// The tile whose scores pixel `(row, col)` takes (the stitching rule).
    pub fn owner(&self, row: usize, col: usize) -> usize {
        let i = self.row_bounds.partition_point(|&b| b <= row);
        let j = self.col_bounds.partition_point(|&b| b <= col);
        i * self.cols.len() + j
    }

    /// Indices of the tiles that contain pixel `(row, col)`.
    pub fn containing(&self, row: usize, col: usize) -> impl Iterator<Item = usize> + '_ {
        let span = |origins: &[usize], p: usize| {
            origins.partition_point(|&o| o + self.tile <= p)..origins.partition_point(|&o| o <= p)
        };
        let (ri, cj) = (span(&self.rows, row), span(&self.cols, col));
        ri.flat_map(move |i| cj.clone().map(move |j| i * self.cols.len() + j))
    }

    /// The tiles that hold at least one of the pixels, ascending (tile 0
    /// alone when none does, so that a model still gets a batch of one).
    pub fn tiles_for(&self, rows: &[u32], cols: &[u32]) -> Vec<u32> {
        let mut used = vec![false; self.len()];
        for (&r, &c) in rows.iter().zip(cols) {
            for t in self.containing(r as usize, c as usize) {
                used[t] = true;
            }
        }
        let mut tiles: Vec<u32> = (0..self.len() as u32).filter(|&t| used[t as usize]).collect();
        if tiles.is_empty() {
            tiles.push(0);
        }
        tiles
    }

    /// Batch slot of each tile of the grid for the tiles run (`u32::MAX`: not run).
    pub fn slots(&self, tiles: &[u32]) -> Result<Vec<u32>, OpError> {
        let mut slot = vec![u32::MAX; self.len()];
        for (n, &tile) in tiles.iter().enumerate() {
            match slot.get_mut(tile as usize) {
                Some(s) => *s = n as u32,
                None => return Err(OpError::Shape(format!("tile {tile} is not in the grid of {} tiles", self.len()))),
            }
        }
        Ok(slot)
    }

    /// Where each pixel's value goes in the batch `[tiles, 1, tile, tile]`
    /// (flat element index), and which pixel it comes from: a pixel inside
    /// several tiles appears once per tile.
    pub fn placements(&self, rows: &[u32], cols: &[u32], tiles: &[u32]) -> Result<(Vec<i64>, Vec<i64>), OpError> {
        let t = self.tile;
        let slot = self.slots(tiles)?;
        let (mut to, mut from) = (Vec::with_capacity(rows.len()), Vec::with_capacity(rows.len()));
        for (i, (&r, &c)) in rows.iter().zip(cols).enumerate() {
            let (r, c) = (r as usize, c as usize);
            for tile in self.containing(r, c) {
                if slot[tile] == u32::MAX {
                    continue;
                }
                let (r0, c0) = self.origin(tile);
                to.push(((slot[tile] as usize * t + r - r0) * t + c - c0) as i64);
                from.push(i as i64);
            }
        }
        Ok((to, from))
    }

    /// For each pixel, the flat index of its first score (of `channels`,
    /// `tile * tile` apart) in the model's output `[tiles, channels, tile,
    /// tile]`, from the tile that owns it.
    pub fn score_indices(&self, rows: &[u32], cols: &[u32], tiles: &[u32], channels: usize) -> Result<Vec<i64>, OpError> {
        let t = self.tile;
        let slot = self.slots(tiles)?;
        let mut indices = Vec::with_capacity(rows.len());
        for (&r, &c) in rows.iter().zip(cols) {
            let (r, c) = (r as usize, c as usize);
            let owner = self.owner(r, c);
            let n = slot[owner];
            if n == u32::MAX {
                return Err(OpError::Shape(format!("pixel ({r}, {c}) belongs to tile {owner}, which was not run")));
            }
            let (r0, c0) = self.origin(owner);
            indices.push((n as usize * channels * t * t + (r - r0) * t + (c - c0)) as i64);
        }
        Ok(indices)
    }
}

/// Rows and columns of an `[n, 2]` (row, col) pixel list given as `i64`
/// values, each checked to lie inside a `height` x `width` plane; with
/// `unique`, the first pixel listed twice is an error (code `duplicate-pixel`).
pub fn pixel_coords(coords: &[i64], height: usize, width: usize, unique: bool) -> Result<(Vec<u32>, Vec<u32>), OpError> {
    let n = coords.len() / 2;
    let (mut rows, mut cols) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut seen = std::collections::HashSet::with_capacity(if unique { n } else { 0 });
    for (i, rc) in coords.chunks_exact(2).enumerate() {
        let (r, c) = (rc[0], rc[1]);
        if r < 0 || c < 0 {
            return Err(OpError::Item { code: "tiles", message: format!("`pixels` holds a negative coordinate {}", r.min(c)) });
        }
        if r as u64 >= height as u64 || c as u64 >= width as u64 {
            return Err(OpError::Item { code: "tiles", message: format!("pixel {i} at ({r}, {c}) is outside the {height}x{width} plane") });
        }
        if unique && !seen.insert((r, c)) {
            return Err(OpError::Item { code: "duplicate-pixel", message: format!("pixel {i} at ({r}, {c}) is listed twice") });
        }
        rows.push(r as u32);
        cols.push(c as u32);
    }
    Ok((rows, cols))
}

/// Where `tile-pixels` puts each pixel's value: the tiles run (ascending)
/// and, per placement, the flat element of the `[tiles, 1, tile, tile]`
/// input and the pixel whose value goes there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The tiles run, ascending (tile 0 alone when no tile holds a pixel).
    pub tiles: Vec<u32>,
    to: Vec<i64>,
    from: Vec<i64>,
}

impl Layout {
    /// Lays the pixel list `coords` (flat `[n, 2]` row, col) over `grid`;
    /// `values` pixel values must come with it. Errors: a pixel outside the
    /// plane or negative (code `tiles`), one listed twice (`duplicate-pixel`).
    pub fn new(grid: &Grid, coords: &[i64], values: usize) -> Result<Layout, OpError> {
        let (rows, cols) = pixel_coords(coords, grid.height, grid.width, true)?;
        if values != rows.len() {
            return Err(OpError::Item { code: "tiles", message: format!("`values` must be f32 [{}] (one per pixel), got {values}", rows.len()) });
        }
        let tiles = grid.tiles_for(&rows, &cols);
        let (to, from) = grid.placements(&rows, &cols, &tiles)?;
        Ok(Layout { tiles, to, from })
    }

    /// Writes each pixel's f32 value (little-endian bytes in `values`) into
    /// the zeroed input `input` (`[tiles, 1, tile, tile]` f32 bytes).
    pub fn fill(&self, values: &[u8], input: &mut [u8]) {
        let (input, values) = (input.as_chunks_mut::<4>().0, values.as_chunks::<4>().0);
        for (&to, &from) in self.to.iter().zip(&self.from) {
            input[to as usize] = values[from as usize];
        }
    }
}

/// `tile-pixels` on raw data: the pixel list `coords` and its f32 `values`
/// (little-endian bytes, one per pixel) laid over `grid`: the tiles run and
/// the f32 bytes of the `[tiles, 1, tile, tile]` input.
pub fn tile_pixels(grid: &Grid, coords: &[i64], values: &[u8]) -> Result<(Vec<u32>, Vec<u8>), OpError> {
    let layout = Layout::new(grid, coords, values.len() / 4)?;
    if values.len() % 4 != 0 {
        return Err(OpError::Item { code: "tiles", message: format!("`values` must be f32, got {} bytes", values.len()) });
    }
    let mut input = vec![0u8; layout.tiles.len() * grid.tile * grid.tile * 4];
    layout.fill(values, &mut input);
    Ok((layout.tiles, input))
}

/// `untile-pixels` on raw data: the f32 bytes of a model output of `shape`
/// `[tiles, C, tile, tile]` for the tiles `tiles` of `grid`, stitched to the
/// f32 bytes of `[n, C]` for the pixel list `coords`; returns them and `C`.
pub fn untile_pixels(grid: &Grid, output: &[u8], shape: &[u64], coords: &[i64], tiles: &[i64]) -> Result<(Vec<u8>, usize), OpError> {
    let (rows, cols) = pixel_coords(coords, grid.height, grid.width, false)?;
    let run: Vec<u32> = tiles
        .iter()
        .map(|&t| u32::try_from(t).map_err(|_| OpError::Shape(format!("tile {t} is not in the grid"))))
        .collect::<Result<_, _>>()?;
    let (m, t) = (run.len() as u64, grid.tile as u64);
    if shape.len() != 4 || shape[0] != m || shape[2] != t || shape[3] != t || output.len() as u64 != shape.iter().product::<u64>() * 4 {
        return Err(OpError::Item { code: "tiles", message: format!("model output is {shape:?}, expected f32 [{m}, C, {t}, {t}]") });
    }
    let c = shape[1] as usize;
    let at = grid.score_indices(&rows, &cols, &run, c)?;
    let data = crate::bytes::gather(output, 4, &at, c, (t * t) as usize)
        .map_err(|e| OpError::Item { code: "tiles", message: format!("stitching: {e}") })?;
    Ok((data, c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_the_plane_and_pixels_land_in_every_tile_that_holds_them() {
        assert_eq!(origins(10, 4, 1), vec![0, 3, 6]);
        assert_eq!(origins(3, 4, 1), vec![0]);
        let g = Grid::new(10, 10, 4, 1).unwrap();
        assert_eq!(g.len(), 9);
        // Pixel (3, 0) sits in tiles 0 and 3 (rows 0..4 and 3..7).
        let tiles = g.tiles_for(&[3], &[0]);
        assert_eq!(tiles, vec![0, 3]);
        let (to, from) = g.placements(&[3], &[0], &tiles).unwrap();
        assert_eq!((to, from), (vec![12, 16], vec![0, 0]));
        let idx = g.score_indices(&[3], &[0], &tiles, 2).unwrap();
        // Its owner is tile 3 (row boundary (0 + 3 + 4) / 2 = 3), batch slot 1.
        assert_eq!(g.owner(3, 0), 3);
        assert_eq!(idx, vec![32]);
        assert_eq!(g.tiles_for(&[], &[]), vec![0], "no pixel: tile 0 alone");
        let e = pixel_coords(&[1, 1, 2, 2, 1, 1], 10, 10, true).unwrap_err();
        assert_eq!(e.to_string(), "pixel 2 at (1, 1) is listed twice");
        assert!(pixel_coords(&[10, 0], 10, 10, false).is_err());
        assert!(pixel_coords(&[1, 1, 1, 1], 10, 10, false).is_ok());
    }
}
