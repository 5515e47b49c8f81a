//! `manifest.toml`: what an application bundle is and what it may use.

use std::io::Read;
use std::time::Duration;
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

use tensorgate_backend::{DeviceSpec, Dtype, Tensor};

/// A parsed, validated manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Application name; must equal the bundle's directory name.
    pub name: String,
    /// Version; must equal the version directory's name.
    pub version: u64,
    /// One-line description.
    #[serde(default)]
    pub description: String,
    /// Class labels, in model output order.
    #[serde(default)]
    pub labels: Vec<String>,
    /// The model (TorchScript, ONNX or AOTInductor).
    #[serde(default)]
    pub model: ModelSection,
    /// The plugin component and its limits.
    #[serde(default)]
    pub plugin: PluginSection,
    /// Model inputs, in forward-argument order.
    #[serde(default)]
    pub inputs: Vec<TensorDecl>,
    /// Model outputs, in order.
    #[serde(default)]
    pub outputs: Vec<TensorDecl>,
    /// Free parameters for the plugin.
    #[serde(default)]
    pub params: toml::Table,
    /// An item run end to end before a new version is served.
    #[serde(default)]
    pub warmup: Option<Warmup>,
    /// How this version is tried before it becomes the default (what is
    /// not set comes from the host's defaults).
    #[serde(default)]
    pub rollout: RolloutSection,
    /// What a JSON reply may hold besides the labels.
    #[serde(default)]
    pub reply: ReplySection,
}

/// `[reply]`: the JSON reply keys a plugin may return besides the labels.
///
/// A JSON object reply that reads as a label map (one of its keys is a
/// label, or every value is a number) may hold only the labels and these
/// keys; with `keys` set, every JSON object reply is held to them (with the
/// labels). Checked on every item, `plugin check` and warm-up included.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplySection {
    /// Keys allowed besides the labels (e.g. `["n_particles"]`).
    #[serde(default)]
    pub keys: Vec<String>,
    /// The labels and `keys`, as a set (filled by [`Manifest::parse`]).
    #[serde(skip)]
    allowed: std::collections::HashSet<String>,
}

/// `[rollout]`: this version's canary terms, each optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSection {
    /// Share of the requests naming no version it takes while on trial (0..=1; 0: no trial).
    pub canary_share: Option<f64>,
    /// Items it must answer before it is promoted (>= 1).
    pub canary_items: Option<u64>,
    /// How much its item-failure rate may exceed the default's (0..=1).
    pub max_failure_increase: Option<f64>,
}

impl RolloutSection {
    /// These terms over the host's `defaults`.
    pub fn over(&self, defaults: Rollout) -> Rollout {
        Rollout {
            canary_share: self.canary_share.unwrap_or(defaults.canary_share),
            canary_items: self.canary_items.unwrap_or(defaults.canary_items),
            max_failure_increase: self.max_failure_increase.unwrap_or(defaults.max_failure_increase),
        }
    }
}

/// How a new version is tried before it becomes the default (the
/// manifest's `[rollout]`, or the host's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// Share of the requests naming no version the new version takes while
    /// on trial; 0: no trial, a new version is the default at once.
    pub canary_share: f64,
    /// Items it must answer before it can be promoted.
    pub canary_items: u64,
    /// How much its item-failure rate may exceed the default's (0.02: two
    /// percentage points).
    pub max_failure_increase: f64,
}

impl Default for Rollout {
    fn default() -> Self {
        Rollout { canary_share: 0.0, canary_items: 200, max_failure_increase: 0.02 }
    }
}


/// `[warmup]`: an item from the bundle that must go through preprocess,
/// forward and postprocess before the version is made visible.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Warmup {
    /// File in the bundle holding the item's payload (e.g. `samples/event.json`).
    pub file: String,
    /// Its content type.
    #[serde(default = "default_content_type")]
    pub content_type: String,
    /// Item metadata handed to the plugin.
    #[serde(default)]
    pub metadata: std::collections::BTreeMap<String, String>,
}

fn default_content_type() -> String {
    "application/json".into()
}

/// `[model]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Model file in the bundle.
    #[serde(default = "default_model_file")]
    pub file: String,
    /// `torchscript`, `onnx` or `aoti` as written; parsed into `format` once.
    #[serde(rename = "format")]
    format_text: Option<String>,
    /// The model file's format: `[model] format`, else from the file's
    /// extension (`.pt` TorchScript, `.onnx` ONNX, `.pt2` AOTInductor).
    #[serde(skip)]
    pub format: ModelFormat,
    /// ONNX Runtime's graph optimisation level (`disable`, `basic`,
    /// `extended`, `all`) as written; parsed into `optimization` once.
    #[serde(rename = "optimization")]
    optimization_text: Option<String>,
    /// ONNX Runtime's graph optimisation level; `all` when absent.
    #[serde(skip)]
    pub optimization: GraphOptimization,
    /// `auto`, `cpu` or `cuda:N` as written; parsed into `device` once.
    #[serde(rename = "device")]
    device_text: Option<String>,
    /// Where the model runs; the host's default when absent.
    #[serde(skip)]
    pub device: Option<DeviceSpec>,
    /// Whether items from different requests may share a forward pass.
    #[serde(default = "default_true")]
    pub batching: bool,
    /// Most rows in one forward pass.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// How long (µs) a batch that is not full may wait for more items.
    #[serde(default)]
    pub max_delay_us: u64,
    /// Most items waiting for the model; more fail at once with `busy`.
    #[serde(default = "default_max_queue")]
    pub max_queue: usize,
    /// Copies of the model, each on its own executor thread.
    #[serde(default = "default_instances")]
    pub instances: usize,
    /// Intra-op threads of each of this model's executor threads (libtorch's,
    /// or each ONNX Runtime session's) (0: the host's `--threads`, else the
    /// runtime's default). Per model: a
    /// small MLP runs best on 1, a convolution on several.
    #[serde(default)]
    pub threads: usize,
}

impl Default for ModelSection {
    fn default() -> Self {
        ModelSection {
            file: default_model_file(),
            format_text: None,
            format: ModelFormat::TorchScript,
            optimization_text: None,
            optimization: GraphOptimization::All,
            device_text: None,
            device: None,
            batching: true,
            max_batch: default_max_batch(),
            max_delay_us: 0,
            max_queue: default_max_queue(),
            instances: default_instances(),
            threads: 0,
        }
    }
}

impl ModelSection {
    /// The executor's batching policy.
    pub fn batch_policy(&self) -> BatchPolicy {
        let max_queue = self.max_queue.max(1);
        if !self.batching {
            return BatchPolicy { max_queue, ..BatchPolicy::OFF };
        }
        BatchPolicy {
            max_batch: self.max_batch.max(1),
            max_delay: std::time::Duration::from_micros(self.max_delay_us),
            max_queue,
        }
    }
}

/// The format of a bundle's model file (`[model] format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    /// TorchScript (`torch.jit.save`, `.pt`), run by libtorch.
    #[default]
    TorchScript,
    /// ONNX (`.onnx`), run by ONNX Runtime.
    Onnx,
    /// An AOTInductor package (`torch._inductor.aoti_compile_and_package`, `.pt2`).
    Aoti,
}

impl ModelFormat {
    /// Every format, as manifests write them.
    pub const ALL: [ModelFormat; 3] = [ModelFormat::TorchScript, ModelFormat::Onnx, ModelFormat::Aoti];

    /// As manifests write it (`torchscript`, `onnx`, `aoti`).
    pub fn name(self) -> &'static str {
        match self {
            ModelFormat::TorchScript => "torchscript",
            ModelFormat::Onnx => "onnx",
            ModelFormat::Aoti => "aoti",
        }
    }

    /// The format a model file's extension implies, if any.
    pub fn of_file(file: &str) -> Option<ModelFormat> {
        match Path::new(file).extension().and_then(|e| e.to_str()) {
            Some("pt") => Some(ModelFormat::TorchScript),
            Some("onnx") => Some(ModelFormat::Onnx),
            Some("pt2") => Some(ModelFormat::Aoti),
            _ => None,
        }
    }
}

impl std::fmt::Display for ModelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ModelFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ModelFormat::ALL.into_iter().find(|f| f.name() == s).ok_or_else(|| {
            let known: Vec<&str> = ModelFormat::ALL.iter().map(|f| f.name()).collect();
            format!("unknown format `{s}` (known: {})", known.join(", "))
        })
    }
}

/// ONNX Runtime's graph optimisation level (`[model] optimization`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GraphOptimization {
    /// The graph as exported.
    Disable,
    /// Semantics-preserving rewrites (constant folding, redundant nodes).
    Basic,
    /// Basic plus node fusions.
    Extended,
    /// Everything, layout changes included (ONNX Runtime's default).
    #[default]
    All,
}

impl std::str::FromStr for GraphOptimization {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "disable" => GraphOptimization::Disable,
            "basic" => GraphOptimization::Basic,
            "extended" => GraphOptimization::Extended,
            "all" => GraphOptimization::All,
            _ => return Err(format!("unknown level `{s}` (known: disable, basic, extended, all)")),
        })
    }
}

fn default_instances() -> usize {
    1
}
fn default_max_queue() -> usize {
    BatchPolicy::default().max_queue
}
fn default_true() -> bool {
    true
}
fn default_max_batch() -> usize {
    BatchPolicy::default().max_batch
}

/// How a model's executor groups items into forward passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPolicy {
    /// Most rows (leading-dimension entries) in one forward; 1 disables batching.
    pub max_batch: usize,
    /// How long a batch that is not full may wait for more items. Zero means
    /// "take what is already queued": under load, items queue while the
    /// previous forward runs, so batches form without adding latency.
    pub max_delay: Duration,
    /// Most items waiting for the executor; beyond it items fail at once with `busy`.
    pub max_queue: usize,
}

impl BatchPolicy {
    /// One item per forward.
    pub const OFF: BatchPolicy = BatchPolicy { max_batch: 1, max_delay: Duration::ZERO, max_queue: DEFAULT_MAX_QUEUE };
}

impl Default for BatchPolicy {
    fn default() -> Self {
        BatchPolicy { max_batch: 32, max_delay: Duration::ZERO, max_queue: DEFAULT_MAX_QUEUE }
    }
}

/// Default bound of a model's queue (items).
pub const DEFAULT_MAX_QUEUE: usize = 4096;

/// `[plugin]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSection {
    /// Component file in the bundle.
    #[serde(default = "default_plugin_file")]
    pub file: String,
    /// Wall-clock budget of one plugin call (ms); the host's default when absent.
    pub timeout_ms: Option<u64>,
    /// Linear-memory cap per instance (MiB); the host's default when absent.
    pub memory_mb: Option<u64>,
    /// Whether a reply carries the item's metadata, with the plugin's own
    /// entries over it (default); `false` sends only the plugin's.
    #[serde(default = "yes")]
    pub echo_metadata: bool,
    /// Most tensors one plugin call may hold at once; the host's default
    /// (`plugin::DEFAULT_MAX_TENSORS`) when absent.
    pub max_tensors: Option<usize>,
    /// Most bytes of tensors one plugin call may hold at once (MiB); the
    /// host's default (`plugin::DEFAULT_MAX_TENSOR_BYTES`) when absent.
    pub max_tensor_mb: Option<u64>,
    /// Most items the host hands the plugin in one call (items already
    /// waiting for this version are grouped; 1 calls it item by item); the
    /// host's default (`plugin::DEFAULT_MAX_ITEMS_PER_CALL`) when absent.
    pub max_items_per_call: Option<usize>,
}

impl Default for PluginSection {
    fn default() -> Self {
        PluginSection {
            file: default_plugin_file(),
            timeout_ms: None,
            memory_mb: None,
            echo_metadata: true,
            max_tensors: None,
            max_tensor_mb: None,
            max_items_per_call: None,
        }
    }
}

fn yes() -> bool {
    true
}

fn default_model_file() -> String {
    "model.pt".into()
}
fn default_plugin_file() -> String {
    "plugin.wasm".into()
}

/// One declared tensor: `{ name = "x", dtype = "f32", shape = [-1, 16] }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorDecl {
    /// Name.
    pub name: String,
    /// `f32`, `f64`, `i64`, `i32`, `u8` or `bool`.
    pub dtype: Dtype,
    /// Dimensions; -1 marks a dynamic one (the batch dimension first).
    pub shape: Vec<i64>,
}

impl TensorDecl {
    /// Checks `t` against this declaration: dtype equal, same rank, every
    /// fixed dimension equal (-1 matches any size).
    pub fn check(&self, t: &Tensor) -> Result<(), String> {
        let shape_ok = self.shape.len() == t.shape.len()
            && self.shape.iter().zip(&t.shape).all(|(&d, &s)| d == -1 || d as u64 == s);
        if self.dtype != t.dtype || !shape_ok {
            return Err(format!("`{}` is {} {:?}, manifest declares {} {:?}", self.name, t.dtype, t.shape, self.dtype, self.shape));
        }
        Ok(())
    }
}

/// Checks tensors against their declarations (none declared: anything
/// goes): as many tensors as declared, each matching its declaration.
/// The one check used for a plugin's model inputs and a model's outputs.
pub fn check_tensors(declared: &[TensorDecl], tensors: &[Tensor]) -> Result<(), String> {
    if declared.is_empty() {
        return Ok(());
    }
    if declared.len() != tensors.len() {
        return Err(format!("{} tensors, manifest declares {}", tensors.len(), declared.len()));
    }
    declared.iter().zip(tensors).try_for_each(|(d, t)| d.check(t))
}

/// A manifest that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// TOML syntax or schema error (the message names the field and line).
    #[error("{path}: {message}")]
    Parse {
        /// File.
        path: String,
        /// What was wrong, with its location.
        message: String,
    },
    /// A field has an invalid value.
    #[error("{path}: field `{field}`: {message}")]
    Field {
        /// File.
        path: String,
        /// Field name.
        field: &'static str,
        /// What was wrong.
        message: String,
    },
}

impl Manifest {
    /// Parses manifest text; `path` is used in error messages only.
    pub fn parse(text: &str, path: &str) -> Result<Self, ManifestError> {
        let mut m: Manifest = toml::from_str(text)
            .map_err(|e| ManifestError::Parse { path: path.into(), message: e.to_string().trim().to_string() })?;
        let field = |field, message: String| ManifestError::Field { path: path.into(), field, message };
        if m.name.is_empty() || !m.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(field("name", format!("`{}` must be non-empty [A-Za-z0-9_-]", m.name)));
        }
        let r = &m.rollout;
        if r.canary_share.is_some_and(|x| !(0.0..=1.0).contains(&x)) {
            return Err(field("rollout.canary_share", format!("{} is not in 0..=1", r.canary_share.unwrap_or_default())));
        }
        if r.canary_items == Some(0) {
            return Err(field("rollout.canary_items", "must be at least 1".into()));
        }
        if r.max_failure_increase.is_some_and(|x| !(0.0..=1.0).contains(&x)) {
            return Err(field("rollout.max_failure_increase", format!("{} is not in 0..=1", r.max_failure_increase.unwrap_or_default())));
        }
        if !(1..=64).contains(&m.model.instances) {
            return Err(field("model.instances", format!("{} is not in 1..=64", m.model.instances)));
        }
        if m.model.threads > 256 {
            return Err(field("model.threads", format!("{} is not in 0..=256 (0: the host's default)", m.model.threads)));
        }
        if m.model.max_batch == 0 {
            return Err(field("model.max_batch", "must be at least 1".into()));
        }
        if m.model.max_delay_us > 1_000_000 {
            return Err(field("model.max_delay_us", format!("{} µs is over the 1 s maximum", m.model.max_delay_us)));
        }
        if let Some(d) = &m.model.device_text {
            m.model.device = Some(d.parse::<DeviceSpec>().map_err(|e| field("model.device", e))?);
        }
        m.model.format = match &m.model.format_text {
            Some(f) => f.parse::<ModelFormat>().map_err(|e| field("model.format", e))?,
            None => ModelFormat::of_file(&m.model.file).unwrap_or_default(),
        };
        if let Some(o) = &m.model.optimization_text {
            if m.model.format != ModelFormat::Onnx {
                return Err(field("model.optimization", format!("is for ONNX models; this model's format is {}", m.model.format)));
            }
            m.model.optimization = o.parse::<GraphOptimization>().map_err(|e| field("model.optimization", e))?;
        }
        for (list, name) in [(&m.inputs, "inputs"), (&m.outputs, "outputs")] {
            for t in list {
                if t.shape.iter().any(|&d| d < -1 || d == 0) {
                    return Err(field(name, format!("tensor `{}` has shape {:?}: dims must be > 0 or -1", t.name, t.shape)));
                }
            }
        }
        for (file, name) in [(&m.model.file, "model.file"), (&m.plugin.file, "plugin.file")] {
            if file.contains('/') || file.contains('\\') || file.starts_with('.') {
                return Err(field(name, format!("`{file}` must be a plain file name inside the bundle")));
            }
        }
        if let Some(w) = &m.warmup {
            let p = Path::new(&w.file);
            if w.file.is_empty() || !p.components().all(|c| matches!(c, std::path::Component::Normal(_))) {
                return Err(field("warmup.file", format!("`{}` must be a relative path inside the bundle", w.file)));
            }
        }
        if m.reply.keys.iter().any(String::is_empty) {
            return Err(field("reply.keys", "a key is empty".into()));
        }
        m.reply.allowed = m.labels.iter().chain(&m.reply.keys).cloned().collect();
        Ok(m)
    }

    /// Whether a JSON reply may hold `key`: a label or a `[reply] keys` entry.
    pub fn allows_reply_key(&self, key: &str) -> bool {
        match self.reply.allowed.is_empty() {
            false => self.reply.allowed.contains(key),
            // Not built by `parse`: look through the lists.
            true => self.labels.iter().chain(&self.reply.keys).any(|k| k == key),
        }
    }

    /// Reads and parses `dir/manifest.toml`.
    pub fn load(dir: &Path) -> Result<Self, ManifestError> {
        let path = dir.join("manifest.toml");
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|source| ManifestError::Io { path: shown.clone(), source })?;
        Self::parse(&text, &shown)
    }

    /// `[params]` as the plugin reads them: strings as they are, other TOML
    /// values as JSON text.
    pub fn params_as_text(&self) -> Vec<(String, String)> {
        self.params
            .iter()
            .map(|(k, v)| {
                let text = match v {
                    toml::Value::String(s) => s.clone(),
                    other => serde_json::to_string(other).unwrap_or_default(),
                };
                (k.clone(), text)
            })
            .collect()
    }
}

/// Entries of a bundle archive looked at for its manifest at most.
const MAX_ARCHIVE_ENTRIES: usize = 10_000;

/// The text of a `.tar.zst` bundle's `manifest.toml` (at the archive's root
/// or in its single top-level folder), read without unpacking the rest.
pub fn text_in_archive(archive: &[u8]) -> Result<String, String> {
    let bad = |m: String| m;
    let decoder = zstd::stream::read::Decoder::new(archive).map_err(|e| bad(format!("zstd: {e}")))?;
    let mut tar = tar::Archive::new(decoder);
    let entries = tar.entries().map_err(|e| bad(format!("tar: {e}")))?;
    for (count, entry) in entries.enumerate() {
        let mut entry = entry.map_err(|e| bad(format!("tar: {e}")))?;
        if count >= MAX_ARCHIVE_ENTRIES {
            break;
        }
        let path = entry.path().map_err(|e| bad(format!("tar entry name: {e}")))?.into_owned();
        let names: Vec<_> = path.components().filter(|c| matches!(c, Component::Normal(_))).collect();
        if names.len() <= 2 && path.file_name().is_some_and(|n| n == "manifest.toml") {
            let mut text = String::new();
            (&mut entry).take(1 << 20).read_to_string(&mut text).map_err(|e| bad(format!("manifest.toml: {e}")))?;
            return Ok(text);
        }
    }
    Err(bad("no manifest.toml at the archive's root (or in its single top-level folder)".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        name = "tabular"
        version = 3
        labels = ["a", "b"]
        [[inputs]]
        name = "x"
        dtype = "f32"
        shape = [-1, 4]
        [params]
        features = ["p", "q"]
        scale = 2.5
        mode = "fast"
    "#;

    #[test]
    fn parses_and_exposes_params_as_text() {
        let m = Manifest::parse(GOOD, "m.toml").unwrap();
        assert_eq!(m.version, 3);
        assert_eq!(m.model.file, "model.pt");
        assert_eq!(m.model.device, None);
        let p = m.params_as_text();
        let get = |k: &str| p.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        assert_eq!(get("features").as_deref(), Some(r#"["p","q"]"#));
        assert_eq!(get("scale").as_deref(), Some("2.5"));
        assert_eq!(get("mode").as_deref(), Some("fast"));
        assert_eq!(m.inputs[0].shape, vec![-1, 4]);
        assert_eq!(m.inputs[0].dtype, Dtype::F32);
        let m = Manifest::parse("name='a'\nversion=1\n[model]\ndevice='cuda:1'\n", "m").unwrap();
        assert_eq!(m.model.device, Some(DeviceSpec::Cuda(1)));
    }

    #[test]
    fn one_check_for_declared_tensors() {
        let m = Manifest::parse(GOOD, "m.toml").unwrap();
        let t = |dtype, shape: &[u64]| Tensor { dtype, shape: shape.to_vec(), data: vec![].into() };
        assert!(check_tensors(&m.inputs, &[t(Dtype::F32, &[7, 4])]).is_ok());
        assert!(check_tensors(&[], &[t(Dtype::U8, &[1])]).is_ok(), "nothing declared");
        let e = check_tensors(&m.inputs, &[t(Dtype::F32, &[7, 5])]).unwrap_err();
        assert_eq!(e, "`x` is f32 [7, 5], manifest declares f32 [-1, 4]");
        let e = check_tensors(&m.inputs, &[t(Dtype::I64, &[7, 4])]).unwrap_err();
        assert!(e.contains("is i64"), "{e}");
        assert!(check_tensors(&m.inputs, &[t(Dtype::F32, &[7, 4, 1])]).is_err(), "rank");
        let e = check_tensors(&m.inputs, &[]).unwrap_err();
        assert_eq!(e, "0 tensors, manifest declares 1");
    }

    #[test]
    fn unknown_field_is_named() {
        let err = Manifest::parse("name = \"a\"\nversion = 1\nlabelz = []\n", "m.toml").unwrap_err();
        assert!(err.to_string().contains("labelz"), "{err}");
    }

    #[test]
    fn wrong_type_is_named() {
        let err = Manifest::parse("name = \"a\"\nversion = \"one\"\n", "m.toml").unwrap_err();
        assert!(err.to_string().contains("version"), "{err}");
    }

    #[test]
    fn bad_dtype_and_device_and_file_are_named() {
        let e = Manifest::parse("name='a'\nversion=1\n[[inputs]]\nname='x'\ndtype='f16'\nshape=[1]\n", "m").unwrap_err();
        assert!(e.to_string().contains("f16"), "{e}");
        let e = Manifest::parse("name='a'\nversion=1\n[model]\ndevice='tpu'\n", "m").unwrap_err();
        assert!(e.to_string().contains("model.device"), "{e}");
        let e = Manifest::parse("name='a'\nversion=1\n[model]\nfile='../x.pt'\n", "m").unwrap_err();
        assert!(e.to_string().contains("model.file"), "{e}");
        let e = Manifest::parse("name='a b'\nversion=1\n", "m").unwrap_err();
        assert!(e.to_string().contains("`name`"), "{e}");
    }

    #[test]
    fn the_model_format_comes_from_the_manifest_or_the_file_extension() {
        let format = |model: &str| Manifest::parse(&format!("name='a'\nversion=1\n[model]\n{model}\n"), "m").map(|m| m.model.format);
        assert_eq!(format("").unwrap(), ModelFormat::TorchScript);
        assert_eq!(format("file='net.onnx'").unwrap(), ModelFormat::Onnx);
        assert_eq!(format("file='net.pt2'").unwrap(), ModelFormat::Aoti);
        assert_eq!(format("file='net.bin'").unwrap(), ModelFormat::TorchScript);
        assert_eq!(format("file='net.bin'\nformat='onnx'").unwrap(), ModelFormat::Onnx);
        let e = format("format='tensorflow'").unwrap_err().to_string();
        assert!(e.contains("field `model.format`") && e.contains("unknown format `tensorflow` (known: torchscript, onnx, aoti)"), "{e}");
        let m = Manifest::parse("name='a'\nversion=1\n[model]\nfile='m.onnx'\noptimization='basic'\n", "m").unwrap();
        assert_eq!(m.model.optimization, GraphOptimization::Basic);
        let e = Manifest::parse("name='a'\nversion=1\n[model]\nfile='m.onnx'\noptimization='max'\n", "m").unwrap_err().to_string();
        assert!(e.contains("field `model.optimization`: unknown level `max`"), "{e}");
        let e = Manifest::parse("name='a'\nversion=1\n[model]\noptimization='all'\n", "m").unwrap_err().to_string();
        assert!(e.contains("field `model.optimization`: is for ONNX models"), "{e}");
    }

    #[test]
    fn reply_keys_are_the_labels_and_the_declared_extras() {
        let m = Manifest::parse("name='a'\nversion=1\nlabels=['quark','gluon']\n[reply]\nkeys=['n_particles']\n", "m").unwrap();
        assert_eq!(m.reply.keys, ["n_particles"]);
        assert!(m.allows_reply_key("quark") && m.allows_reply_key("n_particles"));
        assert!(!m.allows_reply_key("glu"));
        let e = Manifest::parse("name='a'\nversion=1\n[reply]\nkeys=['']\n", "m").unwrap_err();
        assert!(e.to_string().contains("reply.keys"), "{e}");
        let e = Manifest::parse("name='a'\nversion=1\n[reply]\nkey=['x']\n", "m").unwrap_err();
        assert!(e.to_string().contains("key"), "{e}");
    }

    #[test]
    fn model_threads_default_to_the_host_and_are_bounded() {
        assert_eq!(Manifest::parse("name='a'\nversion=1\n", "m").unwrap().model.threads, 0);
        assert_eq!(Manifest::parse("name='a'\nversion=1\n[model]\nthreads=1\n", "m").unwrap().model.threads, 1);
        let e = Manifest::parse("name='a'\nversion=1\n[model]\nthreads=300\n", "m").unwrap_err();
        assert!(e.to_string().contains("model.threads") && e.to_string().contains("300 is not in 0..=256"), "{e}");
    }
}
