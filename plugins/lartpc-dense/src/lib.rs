//! Dense LArTPC segmentation (ubSSNet-like); formats in manifest.toml.
//! Everything but the network's own choices (threshold, tiling, outputs)
//! is SDK glue: `Pixels` (sparse), `TiledPixels` (tiles, stitching). The
//! plane, the tiles and the scores stay in the host (thresholded, scattered
//! back, cut into tiles and gathered there): only the lit pixels' indices
//! cross into the plugin.

use tensorgate_plugin::prelude::*;
use tensorgate_plugin::sparse::Pixels;
use tensorgate_plugin::tiles::TiledPixels;

struct LartpcDense {
    threshold: f32,
    tile: usize,
    overlap: usize,
    labels: Vec<String>,
}

impl Plugin for LartpcDense {
    fn describe() -> PluginInfo {
        PluginInfo::new("lartpc-dense", "wire plane .npy [wires, ticks] -> sparse background/track/shower scores")
            .version(env!("CARGO_PKG_VERSION"))
            .accepts(&["application/x-npy"])
    }

    fn configure(m: &Manifest) -> Result<Self, PluginError> {
        let labels = m.labels.clone();
        Ok(LartpcDense { threshold: m.param_as("threshold")?, tile: m.param_as("tile")?, overlap: m.param_as("overlap")?, labels })
    }

    fn preprocess(&self, item: Item) -> Result<Prepared, PluginError> {
        let (pixels, values) = Pixels::above(&item.payload.npy()?, self.threshold)?;
        let tiled = TiledPixels::new(pixels, self.tile, self.overlap)?;
        let input = tiled.input_from_plane(&tiled.pixels.to_dense(&values)?)?;
        Ok(Prepared::new(vec![input]).keep(vec![values]).with_context(tiled.context()))
    }

    fn postprocess(&self, mut out: Outputs) -> Result<Output, PluginError> {
        let tiled = TiledPixels::from_context(&out.context)?;
        let scores = tiled.gather(out.tensor(0)?)?;
        tensorgate_plugin::labels::check(&self.labels, scores.shape()[1] as usize)?;
        let arrays = vec![("pixels".into(), tiled.pixels.coords()?), ("values".into(), out.take_kept(0)?), ("scores".into(), scores)];
        Ok(Output::npz(arrays).with_meta("tiles", &tiled.grid.len().to_string()).with_meta("tiles_run", &tiled.tiles.len().to_string()))
    }
}

export_plugin!(LartpcDense);
