//! A plugin that misbehaves on request, to test that the host contains it.
//! The item's metadata `mode` picks the behaviour:
//! `ok` (default), `trap`, `loop`, `grow`, `bad-bytes`, `bad-shape`,
//! `huge-output` (metadata `bytes` sets the size), `panic-post`, `log-spam`.

use tensorgate_plugin::prelude::*;

struct Hostile;

fn features() -> Tensor {
    Tensor::from_f32(&[1, 16], &[0.5; 16])
}

impl Plugin for Hostile {
    fn describe() -> PluginInfo {
        PluginInfo::new("hostile", "misbehaves on request (tests only)")
    }

    fn preprocess(item: Item) -> Result<Prepared, PluginError> {
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
            "bad-bytes" => {
                let mut t = features();
                t.data.truncate(10);
                return Ok(Prepared::new(vec![t]));
            }
            "bad-shape" => return Ok(Prepared::new(vec![Tensor::from_f32(&[1, 7], &[0.5; 7])])),
            "log-spam" => {
                for i in 0..100_000 {
                    log(LogLevel::Info, &format!("spam {i}"));
                }
            }
            _ => {}
        }
        let size = item.meta("bytes").unwrap_or("0").to_string();
        Ok(Prepared::new(vec![features()]).with_context(format!("{mode} {size}").into_bytes()))
    }

    fn postprocess(outputs: Vec<Tensor>, context: Vec<u8>) -> Result<Output, PluginError> {
        let context = String::from_utf8_lossy(&context).into_owned();
        let (mode, size) = context.split_once(' ').unwrap_or((context.as_str(), "0"));
        match mode {
            "panic-post" => panic!("hostile plugin: panic in postprocess"),
            "huge-output" => {
                let n: usize = size.parse().unwrap_or(1 << 20);
                return Ok(Output::bytes(vec![7u8; n], "application/octet-stream"));
            }
            _ => {}
        }
        let scores = outputs.first().map(|t| t.to_f32()).transpose()?.unwrap_or_default();
        Output::json(&scores)
    }
}

export_plugin!(Hostile);
