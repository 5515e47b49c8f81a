//! The limit the host is measured against: a bare `tch` forward loop on a
//! TorchScript model, with the same input building and output copy the host
//! does per item (from bytes in, to bytes out).

use std::time::Instant;

use clap::Parser;
use tch::{CModule, Device, IValue, Kind, Tensor};

/// Time a bare forward loop.
#[derive(Parser)]
struct Args {
    /// TorchScript file.
    #[arg(long)]
    model: std::path::PathBuf,
    /// Input shape, e.g. 1,16.
    #[arg(long, value_delimiter = ',')]
    shape: Vec<i64>,
    /// Timed iterations.
    #[arg(long, default_value_t = 20000)]
    iters: usize,
    /// Intra-op threads.
    #[arg(long, default_value_t = 1)]
    threads: i32,
    /// Untimed warm-up iterations (default: a tenth of --iters, plus 10).
    #[arg(long)]
    warmup: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tch::set_num_threads(args.threads);
    let _g = tch::no_grad_guard();
    let module = CModule::load_on_device(&args.model, Device::Cpu)?;
    let numel: i64 = args.shape.iter().product();
    let input: Vec<u8> = (0..numel).flat_map(|i| ((i % 7) as f32 * 0.25).to_le_bytes()).collect();
    let run = || -> anyhow::Result<Vec<u8>> {
        let x = Tensor::f_from_data_size(&input, &args.shape, Kind::Float)?;
        let out = module.forward_is(&[IValue::Tensor(x)])?;
        let IValue::Tensor(t) = out else { anyhow::bail!("expected a tensor output") };
        let n = t.numel();
        let mut buf = vec![0u8; n * 4];
        t.f_copy_data_u8(&mut buf, n)?;
        Ok(buf)
    };
    for _ in 0..args.warmup.unwrap_or(args.iters / 10 + 10) {
        run()?;
    }
    let mut times = Vec::with_capacity(args.iters);
    for _ in 0..args.iters {
        let t = Instant::now();
        run()?;
        times.push(t.elapsed().as_nanos() as f64 / 1e3);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| times[((times.len() - 1) as f64 * p) as usize];
    println!(
        "{}",
        serde_json::json!({
            "model": args.model.display().to_string(), "shape": args.shape, "iters": args.iters,
            "us": { "p50": q(0.5), "p90": q(0.9), "p99": q(0.99) },
            "calls_per_s": 1e6 / q(0.5),
        })
    );
    Ok(())
}
