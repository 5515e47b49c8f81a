//! Sparse LArTPC segmentation (sparse-SSNet-like); formats in manifest.toml.
//! The pixel values, the tiles and the scores stay in the host: only the
//! pixel coordinates cross into the plugin.

use tensorgate_plugin::prelude::*;
use tensorgate_plugin::sparse::Pixels;
use tensorgate_plugin::tiles::TiledPixels;

struct LartpcSparse {
    tile: usize,
    overlap: usize,
    labels: Vec<String>,
}

impl Plugin for LartpcSparse {
    fn describe() -> PluginInfo {
        PluginInfo::new("lartpc-sparse", "pixel list .npz (pixels, values, shape) -> scores for those pixels, in order")
            .version(env!("CARGO_PKG_VERSION"))
            .accepts(&["application/x-npz"])
    }

    fn configure(m: &Manifest) -> Result<Self, PluginError> {
        Ok(LartpcSparse { tile: m.param_as("tile")?, overlap: m.param_as("overlap")?, labels: m.labels.clone() })
    }

    fn preprocess(&self, item: Item) -> Result<Prepared, PluginError> {
        let (pixels, values) = Pixels::from_npz(item.payload.npz()?)?;
        if let Some(i) = pixels.first_duplicate() {
            let (r, c) = (pixels.rows[i], pixels.cols[i]);
            return Err(PluginError::new("duplicate-pixel", format!("pixel {i} at ({r}, {c}) is listed twice")));
        }
        let tiled = TiledPixels::new(pixels, self.tile, self.overlap)?;
        Ok(Prepared::new(vec![tiled.input(&values)?]).with_context(tiled.context()))
    }

    fn postprocess(&self, out: Outputs) -> Result<Output, PluginError> {
        let tiled = TiledPixels::from_context(&out.context)?;
        let scores = tiled.gather(out.tensor(0)?)?;
        tensorgate_plugin::labels::check(&self.labels, scores.shape()[1] as usize)?;
        Ok(Output::npz(vec![("scores".into(), scores)])
            .with_meta("tiles", &tiled.grid.len().to_string())
            .with_meta("tiles_run", &tiled.tiles.len().to_string()))
    }
}

export_plugin!(LartpcSparse);
