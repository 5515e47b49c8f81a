//! Image classification (TFaaS /image); formats in manifest.toml.

use serde::Serialize;
use tensorgate_plugin::image::{to_tensor, Image};
use tensorgate_plugin::labels::top_k;
use tensorgate_plugin::prelude::*;

struct Classifier;

#[derive(Serialize)]
struct Scored {
    label: String,
    score: f32,
}

#[derive(Serialize)]
struct Reply {
    top_k: Vec<Scored>,
}

fn bad_png(e: impl std::fmt::Display) -> PluginError {
    PluginError::new("bad-png", format!("cannot decode PNG: {e}"))
}

impl Plugin for Classifier {
    fn describe() -> PluginInfo {
        PluginInfo::new("image", "PNG -> resize, normalise -> CNN -> top-k labels")
            .version(env!("CARGO_PKG_VERSION"))
            .accepts(&["image/png"])
    }

    fn preprocess(item: Item) -> Result<Prepared, PluginError> {
        let m = manifest();
        let [h, w]: [usize; 2] = m.param_as("size")?;
        let mut decoder = png::Decoder::new(item.data.as_slice());
        decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
        let mut reader = decoder.read_info().map_err(bad_png)?;
        let (width, height) = (reader.info().width as usize, reader.info().height as usize);
        if width as u64 * height as u64 > m.param_as::<u64>("max_pixels")? {
            return Err(PluginError::new("too-large", format!("image is {width}x{height}, more than params.max_pixels")));
        }
        let mut buf = vec![0; reader.output_buffer_size()];
        let frame = reader.next_frame(&mut buf).map_err(bad_png)?;
        let img = Image { height, width, channels: frame.color_type.samples(), data: &buf[..frame.buffer_size()] };
        Ok(Prepared::new(vec![to_tensor(&img, h, w, m.param_as("mean")?, m.param_as("std")?)?]))
    }

    fn postprocess(outputs: Vec<Tensor>, _context: Vec<u8>) -> Result<Output, PluginError> {
        let scores = outputs.first().ok_or_else(|| PluginError::new("no-output", "model returned no tensor"))?.view::<f32>()?;
        let top = top_k(&manifest().labels, &scores, manifest().param_as("top_k")?)?;
        Output::json(&Reply { top_k: top.into_iter().map(|(label, score)| Scored { label, score }).collect() })
    }
}

export_plugin!(Classifier);
