//! Load generator for the Open Inference Protocol over gRPC: `ModelInfer`
//! calls on one HTTP/2 channel (as `tritonclient` and SonicTriton use one),
//! `--concurrency` in flight, for `--duration` seconds after a warm-up.
//! The input is one `BYTES` payload (an application with its own plugin) or
//! one tensor from a `.npy` file sent as raw contents (a `tensors`
//! application). Prints one JSON line: requests/s, latency percentiles (µs)
//! and request megabytes per second.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Parser;
use tensorgate_server::front::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use tensorgate_server::front::grpc::proto::{model_infer_request::InferInputTensor, ModelInferRequest};

#[derive(Parser)]
struct Args {
    /// The gRPC front's address (host:port).
    #[arg(long)]
    addr: String,
    /// Model name.
    #[arg(long)]
    model: String,
    /// A payload file sent as the one `BYTES` element of input `payload`.
    #[arg(long, conflicts_with = "npy")]
    payload: Option<PathBuf>,
    /// A little-endian `.npy` file (f32, f64, i32, i64, u8) sent as the raw contents of input `--input`.
    #[arg(long)]
    npy: Option<PathBuf>,
    /// The input's name for `--npy`.
    #[arg(long, default_value = "x")]
    input: String,
    /// Calls in flight.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Seconds to time.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Untimed calls first.
    #[arg(long, default_value_t = 100)]
    warmup: usize,
}

fn request(args: &Args) -> Result<(ModelInferRequest, usize)> {
    let (input, raw) = if let Some(p) = &args.payload {
        let data = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        let mut raw = (data.len() as u32).to_le_bytes().to_vec();
        raw.extend_from_slice(&data);
        (InferInputTensor { name: "payload".into(), datatype: "BYTES".into(), shape: vec![1], ..Default::default() }, raw)
    } else if let Some(p) = &args.npy {
        let data = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        let array = tensorgate_npy::parse_npy(&data).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
        let datatype = match array.descr.as_str() {
            "<f4" => "FP32",
            "<f8" => "FP64",
            "<i4" => "INT32",
            "<i8" => "INT64",
            "|u1" => "UINT8",
            other => bail!("{}: dtype {other} not supported here", p.display()),
        };
        let shape = array.shape.iter().map(|&d| d as i64).collect();
        (InferInputTensor { name: args.input.clone(), datatype: datatype.into(), shape, ..Default::default() }, array.data.to_vec())
    } else {
        bail!("give --payload or --npy");
    };
    let bytes = raw.len();
    Ok((ModelInferRequest { model_name: args.model.clone(), inputs: vec![input], raw_input_contents: vec![Bytes::from(raw)], ..Default::default() }, bytes))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let (req, bytes) = request(&args)?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", args.addr))?.tcp_nodelay(true).http2_adaptive_window(true).connect().await?;
    let client = GrpcInferenceServiceClient::new(channel).max_decoding_message_size(1 << 30).max_encoding_message_size(1 << 30);
    let req = Arc::new(req);
    for _ in 0..args.warmup {
        client.clone().model_infer(req.as_ref().clone()).await.context("warm-up call")?;
    }
    let end = Instant::now() + Duration::from_secs_f64(args.duration);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (mut client, req) = (client.clone(), req.clone());
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors) = (Vec::new(), 0u64);
            while Instant::now() < end {
                let t = Instant::now();
                match client.model_infer(req.as_ref().clone()).await {
                    Ok(_) => lat.push(t.elapsed().as_secs_f64() * 1e6),
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let (mut lat, mut errors) = (Vec::new(), 0u64);
    for t in tasks {
        let (l, e) = t.await?;
        lat.extend(l);
        errors += e;
    }
    let seconds = started.elapsed().as_secs_f64();
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| lat.get(((lat.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0.0);
    let n = lat.len() as f64;
    println!(
        "{}",
        serde_json::json!({
            "requests": lat.len(), "seconds": seconds, "requests_per_s": n / seconds, "errors": errors,
            "mb_per_s": n * bytes as f64 / seconds / 1e6,
            "latency_us": {"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "max": pct(1.0)},
        })
    );
    if errors > 0 {
        std::process::exit(1);
    }
    Ok(())
}
