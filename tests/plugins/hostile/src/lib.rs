//! A plugin that misbehaves on request, to test that the host contains it.
//! The item's metadata `mode` picks the behaviour:
//! `ok` (default), `trap`, `loop`, `grow`, `bad-shape`, `huge-output`
//! (metadata `bytes` sets the size), `panic-post`, `log-spam`, and, for the
//! host-owned tensors of contract 0.2: `stale-handle` (uses in postprocess a
//! tensor kept from preprocess behind the host's back), `many-tensors` and
//! `big-tensor` (past the manifest's tensor caps), `bad-index` (a gather
//! outside its source), `reply-keys` (a JSON label map
//! `{"quark", "glu", "n_particles"}`, whatever the manifest's labels).

use std::cell::RefCell;

use tensorgate_plugin::ops;
use tensorgate_plugin::prelude::*;

struct Hostile;

thread_local! {
    /// A tensor smuggled from one call into the next.
    static SMUGGLED: RefCell<Option<Tensor>> = const { RefCell::new(None) };
}

fn features() -> Result<Tensor, PluginError> {
    Tensor::from_f32(&[1, 16], &[0.5; 16])
}

impl Plugin for Hostile {
    fn describe() -> PluginInfo {
        PluginInfo::new("hostile", "misbehaves on request (tests only)")
    }

    fn configure(_: &Manifest) -> Result<Self, PluginError> {
        Ok(Hostile)
    }

    fn preprocess(&self, item: Item) -> Result<Prepared, PluginError> {
        let mode = item.meta("mode").unwrap_or("ok").to_string();
        match mode.as_str() {
            "trap" => panic!("hostile plugin: trap requested by item"),
            "loop" => {
                let mut x = 0u64;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "grow" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "bad-shape" => return Ok(Prepared::new(vec![Tensor::from_f32(&[1, 7], &[0.5; 7])?])),
            "log-spam" => {
                for i in 0..100_000 {
                    log(LogLevel::Info, &format!("spam {i}"));
                }
            }
            "stale-handle" => SMUGGLED.with(|s| -> Result<(), PluginError> {
                *s.borrow_mut() = Some(features()?);
                Ok(())
            })?,
            "many-tensors" => {
                let held = (0..1000).map(|_| Tensor::zeros(Dtype::F32, &[4])).collect::<Result<Vec<_>, _>>()?;
                std::hint::black_box(held);
            }
            "big-tensor" => {
                Tensor::zeros(Dtype::F32, &[1 << 25])?;
            }
            "bad-index" => {
                let source = features()?;
                ops::gather(&source, &Tensor::from_slice(&[2], &[3i64, 99])?, 1, 1)?;
            }
            _ => {}
        }
        let size = item.meta("bytes").unwrap_or("0").to_string();
        Ok(Prepared::new(vec![features()?]).with_context(format!("{mode} {size}").into_bytes()))
    }

    fn postprocess(&self, out: Outputs) -> Result<Output, PluginError> {
        let context = String::from_utf8_lossy(&out.context).into_owned();
        let (mode, size) = context.split_once(' ').unwrap_or((context.as_str(), "0"));
        match mode {
            "panic-post" => panic!("hostile plugin: panic in postprocess"),
            "reply-keys" => {
                // A label map with a misspelt label and a key the manifest does not declare.
                let s = out.tensors.first().map(|t| t.to_f32()).transpose()?.unwrap_or_default();
                let score = |i: usize| s.get(i).copied().unwrap_or_default();
                return Output::json(&tensorgate_plugin::json::json!({ "quark": score(0), "glu": score(1), "n_particles": 0 }));
            }
            "huge-output" => {
                let n: usize = size.parse().unwrap_or(1 << 20);
                return Ok(Output::bytes(vec![7u8; n], "application/octet-stream"));
            }
            "stale-handle" => {
                let smuggled = SMUGGLED.with(|s| s.borrow_mut().take());
                if let Some(t) = smuggled {
                    t.to_f32()?;
                }
            }
            _ => {}
        }
        let scores = out.tensors.first().map(|t| t.to_f32()).transpose()?.unwrap_or_default();
        Output::json(&scores)
    }
}

export_plugin!(Hostile);
