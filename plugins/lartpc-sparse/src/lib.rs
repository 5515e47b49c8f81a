//! Sparse LArTPC segmentation (sparse-SSNet-like); formats in manifest.toml.

use tensorgate_plugin::context::{Reader, Writer};
use tensorgate_plugin::npy::{parse_npz, write_npz};
use tensorgate_plugin::prelude::*;
use tensorgate_plugin::sparse::Pixels;
use tensorgate_plugin::tiles::TiledPixels;

struct LartpcSparse;

impl Plugin for LartpcSparse {
    fn describe() -> PluginInfo {
        PluginInfo::new("lartpc-sparse", "pixel list .npz (pixels, values, shape) -> scores for those pixels, in order")
            .version(env!("CARGO_PKG_VERSION"))
            .accepts(&["application/x-npz"])
    }

    fn preprocess(item: Item) -> Result<Prepared, PluginError> {
        let m = manifest();
        let pixels = Pixels::from_npz(&parse_npz(&item.data)?)?;
        if let Some(i) = pixels.first_duplicate() {
            let (r, c) = (pixels.rows[i], pixels.cols[i]);
            return Err(PluginError::new("duplicate-pixel", format!("pixel {i} at ({r}, {c}) is listed twice")));
        }
        let tiled = TiledPixels::new(pixels, m.param_as("tile")?, m.param_as("overlap")?)?;
        let mut ctx = Writer::new();
        tiled.encode(&mut ctx);
        Ok(Prepared::new(vec![tiled.input()]).with_context(ctx.finish()))
    }

    fn postprocess(outputs: Vec<Tensor>, context: Vec<u8>) -> Result<Output, PluginError> {
        let mut ctx = Reader::new(&context);
        let tiled = TiledPixels::decode(&mut ctx)?;
        let scores = tiled.gather(outputs.first().ok_or_else(|| PluginError::new("no-output", "model returned no tensor"))?)?;
        tensorgate_plugin::labels::check(&manifest().labels, scores.shape[1] as usize)?;
        Ok(Output::bytes(write_npz(&[("scores".into(), scores)]), "application/x-npz")
            .with_meta("tiles", &tiled.grid.len().to_string())
            .with_meta("tiles_run", &tiled.tiles.len().to_string()))
    }
}

export_plugin!(LartpcSparse);
