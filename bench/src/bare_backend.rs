//! A bare forward loop through the host's own backend of a bundle's model
//! format (`tensorgate_runtime::backends::for_model`: TorchScript, ONNX or
//! AOTInductor), with no plugin, batcher or network: the limit the host is
//! measured against for every format (`bench/formats.sh`). Each timed call
//! builds the input from bytes, runs one `Instance::run` and copies the
//! outputs' bytes out, as the host's item path does.

use std::time::Instant;

use clap::Parser;
use tensorgate_backend::{Device, Dtype, Tensor};
use tensorgate_server::manifest::Manifest;

/// Time a bare forward loop on a bundle's model.
#[derive(Parser)]
struct Args {
    /// The bundle directory (manifest.toml and the model file).
    #[arg(long)]
    bundle: std::path::PathBuf,
    /// Input shape (one f32 input), e.g. 1,1,512,512 (synthetic values).
    #[arg(long, value_delimiter = ',', required_unless_present = "npy")]
    shape: Vec<u64>,
    /// The input from an f32 `.npy` file instead (the item the host is sent).
    #[arg(long)]
    npy: Option<std::path::PathBuf>,
    /// Timed iterations.
    #[arg(long, default_value_t = 200)]
    iters: usize,
    /// Intra-op threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Untimed warm-up iterations.
    #[arg(long, default_value_t = 5)]
    warmup: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let manifest = Manifest::load(&args.bundle)?;
    let backend = tensorgate_runtime::backends::for_model(&manifest).map_err(|e| anyhow::anyhow!("{e}"))?;
    backend.init_thread(args.threads);
    let rss_before = rss_kib();
    let mut instance = backend.load(&args.bundle.join(&manifest.model.file), Device::Cpu)?;
    let (shape, input) = match &args.npy {
        Some(path) => {
            let bytes = std::fs::read(path)?;
            let array = tensorgate_npy::parse_npy(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            anyhow::ensure!(array.data.len() as u64 == array.shape.iter().product::<u64>() * 4, "{}: not f32", path.display());
            (array.shape.clone(), array.data.to_vec())
        }
        None => {
            let numel: u64 = args.shape.iter().product();
            (args.shape.clone(), (0..numel).flat_map(|i| ((i % 7) as f32 * 0.25).to_le_bytes()).collect())
        }
    };
    let mut run = || -> anyhow::Result<usize> {
        let x = Tensor { dtype: Dtype::F32, shape: shape.clone(), data: input.clone().into() };
        let out = instance.run(&[&[x]])?.ok_or_else(|| anyhow::anyhow!("no outputs"))?;
        let bytes: Vec<Vec<u8>> = out[0].iter().map(|t| t.data.to_vec()).collect();
        Ok(bytes.iter().map(Vec::len).sum())
    };
    for _ in 0..args.warmup {
        run()?;
    }
    // One instance's memory: the model loaded and warm (for the first ONNX
    // or AOTInductor model, the runtime's own libraries and arenas included).
    let rss_instance_mib = rss_kib().zip(rss_before).map(|(after, before)| after.saturating_sub(before) as f64 / 1024.0);
    let cpu_before = cpu_seconds();
    let mut times = Vec::with_capacity(args.iters);
    for _ in 0..args.iters {
        let t = Instant::now();
        run()?;
        times.push(t.elapsed().as_nanos() as f64 / 1e3);
    }
    let cpu_us_per_call = cpu_seconds().zip(cpu_before).map(|(after, before)| (after - before) * 1e6 / args.iters.max(1) as f64);
    times.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| times[((times.len() - 1) as f64 * p) as usize];
    println!(
        "{}",
        serde_json::json!({
            "bundle": args.bundle.display().to_string(), "format": manifest.model.format.name(), "shape": shape,
            "threads": backend.thread_threads(), "iters": args.iters,
            "us": { "p50": q(0.5), "p90": q(0.9), "p99": q(0.99) },
            "calls_per_s": 1e6 / q(0.5),
            "cpu_us_per_call": cpu_us_per_call, "rss_instance_mib": rss_instance_mib,
        })
    );
    Ok(())
}

/// This process's resident memory (`VmRSS`, KiB).
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// This process's user + system CPU time in seconds (`/proc/self/stat`, clock ticks of 10 ms).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at `state`: utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}
