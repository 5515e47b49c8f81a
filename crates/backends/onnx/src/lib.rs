//! The ONNX backend: `.onnx` models run by ONNX Runtime through `ort`, on
//! the CPU, or on a CUDA device through ONNX Runtime's CUDA execution
//! provider when the loaded library has one and it registers (the
//! `onnxruntime-gpu` wheel's library, which `scripts/setup --cuda` caches,
//! on a machine with the CUDA driver); otherwise a model set to `cuda:N`
//! runs on the CPU with one warning saying why.
//!
//! ONNX Runtime is not linked: its shared library (the PyPI `onnxruntime`
//! wheel's `libonnxruntime.so.1.32.0`, which `scripts/setup` extracts into
//! the cache) is loaded the first time an ONNX model is, from the path in
//! [`DYLIB_ENV`] (`ORT_DYLIB_PATH`, set by `scripts/env.sh`). Without it,
//! loading an ONNX model fails with one line saying so; TorchScript models
//! are unaffected.
//!
//! Without copies where the bytes allow it ([`convert`]): one item's inputs
//! are handed to ONNX Runtime as they are; a batch is one concatenation;
//! outputs are lent back to the host and split by rows.

pub mod convert;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::ep::{ExecutionProvider, CUDA};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::ValueType;
use convert::short;
use tensorgate_backend::{Argument, Backend, Device, DeviceSpec, Instance, ModelError, Signature, Tensor};

/// The environment variable naming ONNX Runtime's shared library.
pub const DYLIB_ENV: &str = "ORT_DYLIB_PATH";

/// The format's name in messages.
const FORMAT: &str = "ONNX";

/// How much ONNX Runtime rewrites a graph before running it
/// (`GraphOptimizationLevel`; the manifest's `[model] optimization`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Optimization {
    /// No rewrites: the graph as exported.
    Disable,
    /// Semantics-preserving rewrites (constant folding, redundant nodes).
    Basic,
    /// Basic plus node fusions.
    Extended,
    /// Everything, memory layout included (ONNX Runtime's own default).
    #[default]
    All,
}

impl Optimization {
    fn level(self) -> GraphOptimizationLevel {
        match self {
            Optimization::Disable => GraphOptimizationLevel::Disable,
            Optimization::Basic => GraphOptimizationLevel::Level1,
            Optimization::Extended => GraphOptimizationLevel::Level2,
            Optimization::All => GraphOptimizationLevel::All,
        }
    }
}

/// One model's ONNX Runtime settings, from its manifest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OnnxOptions {
    /// The graph optimisation level.
    pub optimization: Optimization,
}

/// The ONNX backend for one model's settings (ONNX Runtime itself is
/// process-wide, loaded once).
#[derive(Debug, Clone, Copy, Default)]
pub struct OnnxBackend {
    options: OnnxOptions,
}

impl OnnxBackend {
    /// A backend loading models with `options`.
    pub fn new(options: OnnxOptions) -> OnnxBackend {
        OnnxBackend { options }
    }
}

/// ONNX Runtime could not be made ready.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    /// The library's path is not set.
    #[error("ONNX Runtime is not available: set {DYLIB_ENV} to libonnxruntime.so.{ORT_VERSION} (scripts/setup extracts it from the PyPI onnxruntime wheel into ~/.cache/tensorgate/onnxruntime-{ORT_VERSION}; scripts/env.sh sets {DYLIB_ENV})")]
    Unset,
    /// The path names no file.
    #[error("ONNX Runtime is not available: {DYLIB_ENV}={0} does not exist (run scripts/setup)")]
    Missing(PathBuf),
    /// The library would not load or start.
    #[error("ONNX Runtime is not available: {path}: {reason}")]
    Load {
        /// The library.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// The ONNX Runtime version `scripts/setup` extracts.
pub const ORT_VERSION: &str = "1.32.0";

/// Where `scripts/setup` puts the library (`$TENSORGATE_CACHE`, else
/// `~/.cache/tensorgate`), when it is there: used when [`DYLIB_ENV`] is unset.
fn cached() -> Option<PathBuf> {
    let cache = std::env::var_os("TENSORGATE_CACHE")
        .filter(|c| !c.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/tensorgate")))?;
    let lib = cache.join(format!("onnxruntime-{ORT_VERSION}")).join(format!("libonnxruntime.so.{ORT_VERSION}"));
    lib.is_file().then_some(lib)
}

/// ONNX Runtime's environment, loading the library on first use: from
/// [`DYLIB_ENV`], else from where `scripts/setup` puts it.
pub fn runtime() -> Result<&'static Environment, RuntimeError> {
    static ENV: OnceLock<Result<Environment, RuntimeError>> = OnceLock::new();
    ENV.get_or_init(|| {
        let path = match std::env::var_os(DYLIB_ENV) {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => cached().ok_or(RuntimeError::Unset)?,
        };
        if !path.is_file() {
            return Err(RuntimeError::Missing(path));
        }
        let load = |reason: String| RuntimeError::Load { path: path.clone(), reason };
        let builder = ort::init_from(&path).map_err(|e| load(e.to_string()))?;
        let env = builder
            .with_name("tensorgate")
            .with_telemetry(false)
            .with_logger(std::sync::Arc::new(log))
            .build()
            .map_err(|e| load(e.to_string()))?;
        tracing::info!(library = %path.display(), "ONNX Runtime loaded");
        Ok(env)
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// ONNX Runtime's own log lines, into the host's log (its warnings at debug:
/// they are about graph rewrites, not about requests).
fn log(level: ort::logging::LogLevel, category: &str, _id: &str, location: &str, message: &str) {
    use ort::logging::LogLevel;
    match level {
        LogLevel::Error | LogLevel::Fatal => tracing::warn!(target: "onnxruntime", category, location, "{message}"),
        LogLevel::Warning => tracing::debug!(target: "onnxruntime", category, location, "{message}"),
        LogLevel::Info | LogLevel::Verbose => tracing::trace!(target: "onnxruntime", category, location, "{message}"),
    }
}

thread_local! {
    /// Intra-op threads of the sessions this executor thread loads (0: the default).
    static THREADS: Cell<usize> = const { Cell::new(0) };
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}


/// Whether ONNX Runtime can run sessions on CUDA device `n`: its CUDA
/// execution provider is built into the loaded library and registers (its
/// provider library, the CUDA libraries and the driver load). `Err` says
/// why not. Probed once per device and process.
fn cuda_usable(n: usize) -> Result<(), String> {
    static PROBED: Mutex<BTreeMap<usize, Result<(), String>>> = Mutex::new(BTreeMap::new());
    let mut probed = PROBED.lock().unwrap_or_else(|p| p.into_inner());
    probed.entry(n).or_insert_with(|| probe_cuda(n)).clone()
}

fn probe_cuda(n: usize) -> Result<(), String> {
    let env = runtime().map_err(|e| e.to_string())?;
    if !CUDA::is_available().map_err(|e| short(&e.to_string()))? {
        return Err(format!(
            "the ONNX Runtime library loaded ({DYLIB_ENV}) has no CUDA execution provider \
             (the PyPI onnxruntime wheel is CPU-only; scripts/setup --cuda caches onnxruntime-gpu's library)"
        ));
    }
    let mut builder = Session::builder(env).map_err(|e| short(&e.to_string()))?;
    cuda_provider(n)?
        .register(&mut builder)
        .map_err(|e| format!("ONNX Runtime's CUDA execution provider does not start: {}", short(&e.to_string())))
}

/// The CUDA execution provider for device `n`.
fn cuda_provider(n: usize) -> Result<CUDA, String> {
    let id = i32::try_from(n).map_err(|_| format!("no device cuda:{n}"))?;
    Ok(CUDA::default().with_device_id(id))
}

impl OnnxBackend {
    fn session(&self, path: &Path, device: Device, threads: usize, optimization: Optimization) -> Result<Session, ModelError> {
        let load = |reason: String| ModelError::Load { format: FORMAT, path: path.display().to_string(), reason };
        let env = runtime().map_err(|e| load(e.to_string()))?;
        // ONNX Runtime's message for a missing file is about protobuf parsing.
        std::fs::metadata(path).map_err(|e| load(e.to_string()))?;
        let option = |e: ort::Error<ort::session::builder::SessionBuilder>| load(short(&e.to_string()));
        let mut builder = Session::builder(env)
            .map_err(|e| load(short(&e.to_string())))?
            .with_optimization_level(optimization.level())
            .map_err(option)?
            .with_intra_threads(threads.max(1))
            .map_err(option)?
            .with_inter_threads(1)
            .map_err(option)?
            // A host shares its cores with plugins and the network: idle
            // intra-op threads wait instead of spinning.
            .with_intra_op_spinning(false)
            .map_err(option)?;
        if let Device::Cuda(n) = device {
            // Nodes the CUDA provider lacks run on the CPU provider, as ONNX
            // Runtime assigns them; inputs and outputs stay in host memory.
            let cuda = cuda_provider(n).map_err(load)?.build().error_on_failure();
            builder = builder.with_execution_providers([cuda]).map_err(option)?;
        }
        builder.commit_from_file(path).map_err(|e| load(short(&e.to_string())))
    }
}

/// One ONNX tensor's type as an [`Argument`].
fn argument(name: &str, ty: &ValueType) -> Argument {
    match ty {
        ValueType::Tensor { ty, shape, .. } => {
            let dtype = convert::dtype_of(*ty);
            let dims: Vec<String> = shape.iter().map(|&d| if d < 0 { "?".to_string() } else { d.to_string() }).collect();
            let shown = dtype.map(|d| d.to_string()).unwrap_or_else(|| format!("{ty:?}"));
            Argument {
                name: name.to_string(),
                ty: format!("{shown}[{}]", dims.join(", ")),
                optional: false,
                tensor: dtype.is_some(),
                dtype,
                rank: Some(shape.len()),
            }
        }
        other => Argument {
            name: name.to_string(),
            ty: format!("{other}"),
            optional: false,
            tensor: false,
            dtype: None,
            rank: None,
        },
    }
}

/// The graph's inputs and outputs as a [`Signature`].
fn describe(session: &Session) -> Signature {
    let inputs: Vec<Argument> = session.inputs().iter().map(|o| argument(o.name(), o.dtype())).collect();
    let returns: Vec<Argument> = session.outputs().iter().map(|o| argument(o.name(), o.dtype())).collect();
    let show = |args: &[Argument]| args.iter().map(|a| format!("{}: {}", a.name, a.ty)).collect::<Vec<_>>().join(", ");
    Signature {
        display: format!("graph({}) -> ({})", show(&inputs), show(&returns)),
        inputs,
        outputs: Some(returns.len()),
        returns,
        by_name: true,
    }
}

/// One ONNX Runtime session.
struct OnnxInstance {
    session: Session,
    staging: convert::Staging,
}

impl Instance for OnnxInstance {
    fn run(&mut self, items: &[&[Tensor]]) -> Result<Option<Vec<Vec<Tensor>>>, ModelError> {
        convert::run(&mut self.session, &mut self.staging, items)
    }
}

impl Backend for OnnxBackend {
    fn format(&self) -> &'static str {
        FORMAT
    }

    fn resolve(&self, spec: DeviceSpec) -> Result<Device, ModelError> {
        match spec {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Auto => match cuda_usable(0) {
                Ok(()) => Ok(Device::Cuda(0)),
                Err(why) => {
                    tracing::debug!("an ONNX model on `auto` runs on the CPU: {why}");
                    Ok(Device::Cpu)
                }
            },
            DeviceSpec::Cuda(n) => match cuda_usable(n) {
                Ok(()) => Ok(Device::Cuda(n)),
                Err(why) => {
                    tracing::warn!("an ONNX model set to cuda:{n} runs on the CPU: {why}");
                    Ok(Device::Cpu)
                }
            },
        }
    }

    fn signature(&self, path: &Path) -> Option<Signature> {
        match self.session(path, Device::Cpu, 1, Optimization::Disable) {
            Ok(session) => Some(describe(&session)),
            Err(e) => {
                tracing::debug!("no signature read from {}: {e}", path.display());
                None
            }
        }
    }

    fn load(&self, path: &Path, device: Device) -> Result<Box<dyn Instance>, ModelError> {
        let threads = THREADS.with(Cell::get);
        let session = self.session(path, device, if threads > 0 { threads } else { default_threads() }, self.options.optimization)?;
        Ok(Box::new(OnnxInstance { session, staging: convert::Staging::default() }))
    }

    fn init_thread(&self, threads: usize) {
        THREADS.with(|t| t.set(threads));
    }

    fn thread_threads(&self) -> usize {
        match THREADS.with(Cell::get) {
            0 => default_threads(),
            n => n,
        }
    }

    fn default_threads(&self) -> usize {
        default_threads()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_messages_are_one_line_without_the_code() {
        assert_eq!(short("[ErrorCode:InvalidProtobuf] Load model from m.onnx failed:\n  Protobuf parsing failed. "), "Load model from m.onnx failed: Protobuf parsing failed.");
        assert_eq!(short("plain"), "plain");
    }

    fn model(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../plugins/tensors/bundles").join(name).join("model.onnx")
    }

    #[test]
    fn an_instance_runs_one_item_and_a_batch_split_by_rows() {
        let b = OnnxBackend::default();
        b.init_thread(1);
        let sig = b.signature(&model("tabular-onnx")).expect("signature");
        assert_eq!(sig.display, "graph(x: f32[?, 16]) -> (scores: f32[?, 4])");
        assert!(sig.by_name && sig.inputs[0].dtype == Some(tensorgate_backend::Dtype::F32) && sig.returns[0].rank == Some(2));
        let mut inst = b.load(&model("tabular-onnx"), Device::Cpu).expect("loads");
        let features = 16u64;
        let item = |rows: u64| {
            let data: Vec<u8> = (0..rows * features).flat_map(|i| (i as f32 / 100.0).to_le_bytes()).collect();
            vec![Tensor { dtype: tensorgate_backend::Dtype::F32, shape: vec![rows, features], data: data.into() }]
        };
        let (a, c) = (item(1), item(3));
        let alone = inst.run(&[&a]).expect("runs").expect("one item");
        let batch = inst.run(&[&a, &c]).expect("runs").expect("split");
        assert_eq!(batch.len(), 2);
        let floats = |t: &Tensor| t.data.chunks(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect::<Vec<_>>();
        assert_eq!(batch[0][0].shape, alone[0][0].shape);
        for (x, y) in floats(&batch[0][0]).iter().zip(floats(&alone[0][0])) {
            assert!((x - y).abs() < 1e-5, "an item's rows are the same alone and in a batch: {x} vs {y}");
        }
        assert_eq!(batch[1][0].shape, vec![3, 4]);
        let e = inst.run(&[&[]]).expect_err("no inputs");
        assert!(e.to_string().contains("takes 1 input(s), got 0"), "{e}");
        let e = b.load(&model("nope"), Device::Cpu).err().expect("missing file");
        assert!(e.to_string().starts_with("loading ONNX model"), "{e}");
        let dir = std::env::temp_dir().join(format!("onnx-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let bad = dir.join("bad.onnx");
        std::fs::write(&bad, b"not a protobuf at all").expect("write");
        let e = b.load(&bad, Device::Cpu).err().expect("corrupt file");
        assert!(e.to_string().contains("bad.onnx") && !e.to_string().contains('\n'), "{e}");
        assert!(b.signature(&bad).is_none());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn levels_map_to_the_runtime() {
        assert!(matches!(Optimization::default().level(), GraphOptimizationLevel::All));
        assert!(matches!(Optimization::Disable.level(), GraphOptimizationLevel::Disable));
    }
}
