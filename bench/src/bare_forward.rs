//! The limit the host is measured against: a bare `tch` forward loop on a
//! TorchScript model, with the same input building and output copy the host
//! does per item (from bytes in, to bytes out). On `--device cuda:N` the
//! input is copied to the device and the output back within each timed call.

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
    /// `cpu` or `cuda:N` (a `cuda:N` needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    device: String,
}

fn device(s: &str) -> anyhow::Result<Device> {
    match s {
        "cpu" => Ok(Device::Cpu),
        _ => {
            let n: usize = s.strip_prefix("cuda:").and_then(|n| n.parse().ok()).ok_or_else(|| anyhow::anyhow!("--device `{s}` is not cpu or cuda:N"))?;
            let seen = tch::Cuda::device_count();
            anyhow::ensure!((n as i64) < seen, "--device {s}: libtorch sees {seen} CUDA device(s) (build with --features cuda?)");
            Ok(Device::Cuda(n))
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tch::set_num_threads(args.threads);
    let _g = tch::no_grad_guard();
    let device = device(&args.device)?;
    let module = CModule::load_on_device(&args.model, device)?;
    let numel: i64 = args.shape.iter().product();
    let input: Vec<u8> = (0..numel).flat_map(|i| ((i % 7) as f32 * 0.25).to_le_bytes()).collect();
    let run = || -> anyhow::Result<Vec<u8>> {
        let x = Tensor::f_from_data_size(&input, &args.shape, Kind::Float)?.f_to_device(device)?;
        let out = module.forward_is(&[IValue::Tensor(x)])?;
        let IValue::Tensor(t) = out else { anyhow::bail!("expected a tensor output") };
        let t = t.f_to_device(Device::Cpu)?;
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
            "model": args.model.display().to_string(), "device": args.device, "shape": args.shape, "iters": args.iters,
            "us": { "p50": q(0.5), "p90": q(0.9), "p99": q(0.99) },
            "calls_per_s": 1e6 / q(0.5),
        })
    );
    Ok(())
}
