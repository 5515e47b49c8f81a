//! Dense LArTPC segmentation (ubSSNet-like); formats in manifest.toml.
//! Everything but the network's own choices (threshold, tiling, outputs)
//! is SDK glue: `Pixels` (sparse), `TiledPixels` (tiles, stitching), `context`.

use tensorgate_plugin::context::{Reader, Writer};
use tensorgate_plugin::npy::{view_npy, write_npz};
use tensorgate_plugin::prelude::*;
use tensorgate_plugin::sparse::Pixels;
use tensorgate_plugin::tiles::TiledPixels;

struct LartpcDense;

impl Plugin for LartpcDense {
    fn describe() -> PluginInfo {
        PluginInfo::new("lartpc-dense", "wire plane .npy [wires, ticks] -> sparse background/track/shower scores")
            .version(env!("CARGO_PKG_VERSION"))
            .accepts(&["application/x-npy"])
    }

    fn preprocess(item: Item) -> Result<Prepared, PluginError> {
        let m = manifest();
        let plane = view_npy(&item.data)?;
        let [_, w] = plane.shape[..] else {
            return Err(PluginError::new("shape", format!("expected a 2-d plane [wires, ticks], got shape {:?}", plane.shape)));
        };
        let pixels = Pixels::above(&plane.view::<f32>()?, w as usize, m.param_as("threshold")?);
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
        let arrays = [("pixels".into(), tiled.pixels.coords()), ("values".into(), tiled.pixels.values_tensor()), ("scores".into(), scores)];
        Ok(Output::bytes(write_npz(&arrays), "application/x-npz")
            .with_meta("tiles", &tiled.grid.len().to_string())
            .with_meta("tiles_run", &tiled.tiles.len().to_string()))
    }
}

export_plugin!(LartpcDense);
