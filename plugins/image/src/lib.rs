//! Image classification (TFaaS /image); formats in manifest.toml.

use serde::Serialize;
use tensorgate_plugin::image::{decode_png, to_tensor};
use tensorgate_plugin::labels::top_k;
use tensorgate_plugin::prelude::*;

struct Classifier {
    size: [usize; 2],
    max_pixels: u64,
    mean: [f32; 3],
    std: [f32; 3],
    top_k: usize,
    labels: Vec<String>,
}

#[derive(Serialize)]
struct Scored {
    label: String,
    score: f32,
}

#[derive(Serialize)]
struct Reply {
    top_k: Vec<Scored>,
}

impl Plugin for Classifier {
    fn describe() -> PluginInfo {
        PluginInfo::new("image", "PNG -> resize, normalise -> CNN -> top-k labels")
            .version(env!("CARGO_PKG_VERSION"))
            .accepts(&["image/png"])
    }

    fn configure(m: &Manifest) -> Result<Self, PluginError> {
        Ok(Classifier {
            size: m.param_as("size")?,
            max_pixels: m.param_as("max_pixels")?,
            mean: m.param_as("mean")?,
            std: m.param_as("std")?,
            top_k: m.param_as("top_k")?,
            labels: m.labels.clone(),
        })
    }

    fn preprocess(&self, item: Item) -> Result<Prepared, PluginError> {
        let [h, w] = self.size;
        let img = decode_png(&item.payload.bytes()?, self.max_pixels)?;
        Ok(Prepared::new(vec![to_tensor(&img.image(), h, w, self.mean, self.std)?]))
    }

    fn postprocess(&self, out: Outputs) -> Result<Output, PluginError> {
        let scores = out.tensor(0)?.view::<f32>()?;
        let top = top_k(&self.labels, &scores, self.top_k)?;
        Output::json(&Reply { top_k: top.into_iter().map(|(label, score)| Scored { label, score }).collect() })
    }
}

export_plugin!(Classifier);
