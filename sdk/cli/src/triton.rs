//! `tensorgate import triton DIR`: a Triton model directory (`config.pbtxt`
//! with `platform: "pytorch_libtorch"` or `backend: "pytorch"`, and
//! numbered version folders holding `model.pt`; or `platform:
//! "onnxruntime_onnx"` or `backend: "onnxruntime"` with `model.onnx`,
//! served by ONNX Runtime) becomes tensorgate bundles
//! served by the generic `tensors` plugin (an `.npz` in, one array per
//! input, an `.npz` out). Each bundle is staged, checked as a host checks
//! it (`tensorgate-host check`) and only then installed, by the one
//! install flow (`install.rs`) that `plugin build` uses too.
//!
//! Mapped: `name`, inputs and outputs (name, `data_type`, `dims` with
//! `-1`, and the batch dimension `max_batch_size` implies), an output's
//! `label_filename` to `labels`, `max_batch_size` to `[model] max_batch`,
//! `dynamic_batching` (and its `max_queue_delay_microseconds`) to
//! `batching`/`max_delay_us`, `instance_group` counts to `instances` and
//! its kind/GPU to `device`, `version_policy` (default: the newest
//! version, as Triton serves) to the versions imported. Fields that would change what the model
//! computes or receives (other platforms, `reshape`, data types tensorgate
//! has no tensor type for, shape tensors, ragged or optional inputs,
//! sequence and ensemble scheduling, decoupled models, several GPUs)
//! fail the import, each named with its line. Scheduling and runtime
//! hints with no tensorgate meaning (e.g. `preferred_batch_size`,
//! `optimization`, `parameters`) are listed as not carried over.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use crate::pbtxt::{self, Message, Value};

/// `tensorgate import ...`
#[derive(Args)]
pub struct ImportArgs {
    #[command(subcommand)]
    command: ImportCommand,
}

#[derive(Subcommand)]
enum ImportCommand {
    /// Turn a Triton model directory (config.pbtxt, VERSION/model.pt or VERSION/model.onnx) into
    /// bundles served by the generic tensors plugin, check each as a host
    /// would, and install it as REPO/NAME/VERSION. Needs no host.
    Triton {
        /// The Triton model directory (holding config.pbtxt).
        dir: PathBuf,
        /// Model repository to install into.
        #[arg(long, default_value = ".")]
        repository: PathBuf,
        /// Only this Triton version (default: those the config's
        /// `version_policy` serves; without one, the newest, as Triton does).
        #[arg(long)]
        version: Option<u64>,
        /// The application name (default: the config's `name`, else the folder's).
        #[arg(long)]
        name: Option<String>,
        /// The generic tensors plugin component (default: found beside this binary).
        #[arg(long, env = "TENSORGATE_TENSORS_PLUGIN")]
        plugin: Option<PathBuf>,
    },
}

/// Runs an `import` subcommand.
pub fn main(args: &ImportArgs) -> std::process::ExitCode {
    let ImportCommand::Triton { dir, repository, version, name, plugin } = &args.command;
    match import(dir, repository, *version, name.as_deref(), plugin.as_deref()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn import(dir: &Path, repository: &Path, only: Option<u64>, name: Option<&str>, plugin: Option<&Path>) -> anyhow::Result<()> {
    let config_path = dir.join("config.pbtxt");
    let text = std::fs::read_to_string(&config_path).with_context(|| format!("reading {}", config_path.display()))?;
    let config = pbtxt::parse(&text).with_context(|| format!("{}", config_path.display()))?;
    let folder = dir.canonicalize().ok().and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()));
    let mapped = map(&config, dir, name.or(config.get("name").and_then(Value::as_str)).or(folder.as_deref()))
        .map_err(|e| anyhow::anyhow!("{}: {e}", config_path.display()))?;
    for note in &mapped.not_carried {
        eprintln!("note: {}: {note}: not carried over (no tensorgate equivalent)", config_path.display());
    }
    let plugin = match plugin {
        Some(p) => p.to_path_buf(),
        None => find_tensors_plugin()?,
    };
    let versions = versions(dir, &mapped.model_file, only, &mapped.policy)?;
    for v in versions {
        let model = dir.join(v.to_string()).join(&mapped.model_file);
        crate::install::install(repository, &mapped.name, v, |staged| {
            std::fs::write(staged.join("manifest.toml"), mapped.manifest(v, dir)).context("writing manifest.toml")?;
            std::fs::copy(&model, staged.join(mapped.format.file())).with_context(|| format!("copying {}", model.display()))?;
            std::fs::copy(&plugin, staged.join("plugin.wasm")).with_context(|| format!("copying {}", plugin.display()))?;
            Ok(())
        })
        .with_context(|| {
            format!("version {v}: the bundle made from {} and {} (its manifest.toml is what the config maps to)", config_path.display(), model.display())
        })?;
    }
    Ok(())
}

/// Which versions Triton would serve (`version_policy`).
#[derive(Debug, Clone, PartialEq)]
enum Policy {
    /// The newest N.
    Latest(usize),
    /// Every version.
    All,
    /// These.
    Specific(Vec<u64>),
}

/// The numbered version folders of `dir` holding the model file that
/// `only` (or else the policy) selects, ascending.
fn versions(dir: &Path, model_file: &str, only: Option<u64>, policy: &Policy) -> anyhow::Result<Vec<u64>> {
    let mut found: Vec<u64> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
        .filter(|v| dir.join(v.to_string()).join(model_file).is_file())
        .collect();
    found.sort_unstable();
    match only {
        Some(v) if found.contains(&v) => Ok(vec![v]),
        Some(v) => bail!("{} has no version {v} with {model_file} (found: {found:?})", dir.display()),
        None if found.is_empty() => bail!("{} has no version folder (e.g. 1/) holding {model_file}", dir.display()),
        None => match policy {
            Policy::All => Ok(found),
            Policy::Latest(n) => Ok(found[found.len().saturating_sub(*n)..].to_vec()),
            Policy::Specific(want) => match want.iter().find(|v| !found.contains(v)) {
                Some(v) => bail!("version_policy names version {v}, but {} has no {v}/{model_file}", dir.display()),
                None => Ok(want.clone()),
            },
        },
    }
}

/// The generic tensors plugin: beside this binary in a build tree
/// (`target/plugins/...`) or an install (`share/tensorgate/plugins`).
fn find_tensors_plugin() -> anyhow::Result<PathBuf> {
    let exe_dir = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)).unwrap_or_default();
    let candidates = [
        exe_dir.join("../plugins/wasm32-unknown-unknown/release/tensors_plugin.wasm"),
        exe_dir.join("../share/tensorgate/plugins/tensors.wasm"),
        exe_dir.join("tensors.wasm"),
    ];
    candidates.iter().find(|p| p.is_file()).cloned().with_context(|| {
        let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        format!("the generic tensors plugin was not found (tried {}); give --plugin PATH", tried.join(", "))
    })
}

/// One declared tensor.
#[derive(Debug, Clone, PartialEq)]
struct Tensor {
    name: String,
    dtype: &'static str,
    shape: Vec<i64>,
}

/// The model formats an import carries over.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    /// `pytorch_libtorch`: `model.pt`.
    TorchScript,
    /// `onnxruntime_onnx`: `model.onnx`, run by ONNX Runtime.
    Onnx,
}

impl Format {
    /// The model file's name in the bundle (and Triton's default).
    fn file(self) -> &'static str {
        match self {
            Format::TorchScript => "model.pt",
            Format::Onnx => "model.onnx",
        }
    }

    /// `[model] format`.
    fn name(self) -> &'static str {
        match self {
            Format::TorchScript => "torchscript",
            Format::Onnx => "onnx",
        }
    }
}

/// What a config maps to.
#[derive(Debug, Clone, PartialEq)]
struct Mapped {
    name: String,
    platform: String,
    format: Format,
    model_file: String,
    labels: Option<(Vec<String>, String)>,
    inputs: Vec<Tensor>,
    outputs: Vec<Tensor>,
    max_batch: Option<i64>,
    batching: bool,
    max_delay_us: Option<i64>,
    instances: i64,
    device: String,
    policy: Policy,
    not_carried: Vec<String>,
}

impl Mapped {
    /// The bundle's `manifest.toml` for `version`, each setting's source noted.
    fn manifest(&self, version: u64, dir: &Path) -> String {
        let q = |s: &str| toml::Value::String(s.to_string()).to_string();
        let mut m = String::new();
        let _ = writeln!(m, "# Imported from the Triton model {} by `tensorgate import triton`.", dir.display());
        let _ = writeln!(m, "# Served by the generic tensors plugin: send an .npz with one array per input.");
        let _ = writeln!(m, "name = {}", q(&self.name));
        let _ = writeln!(m, "version = {version}");
        let _ = writeln!(m, "description = {}", q(&format!("Triton model `{}` ({}), imported", self.name, self.platform)));
        if let Some((labels, file)) = &self.labels {
            let list: Vec<String> = labels.iter().map(|l| q(l)).collect();
            let _ = writeln!(m, "labels = [{}]   # {file}", list.join(", "));
        }
        let _ = writeln!(m, "\n[model]\nfile = {}\nformat = {}   # platform", q(self.format.file()), q(self.format.name()));
        let _ = writeln!(m, "device = {}   # instance_group", q(&self.device));
        let _ = writeln!(m, "batching = {}   # dynamic_batching {}", self.batching, if self.batching { "given" } else { "absent" });
        match self.max_batch {
            Some(n) => {
                let _ = writeln!(m, "max_batch = {n}   # max_batch_size");
            }
            None => {
                let _ = writeln!(m, "# max_batch_size 0: the dims are whole shapes, items are never batched");
            }
        }
        if let Some(us) = self.max_delay_us {
            let _ = writeln!(m, "max_delay_us = {us}   # dynamic_batching.max_queue_delay_microseconds");
        }
        let _ = writeln!(m, "instances = {}   # instance_group count", self.instances);
        for (section, list) in [("inputs", &self.inputs), ("outputs", &self.outputs)] {
            for t in list {
                let shape: Vec<String> = t.shape.iter().map(i64::to_string).collect();
                let _ = writeln!(m, "\n[[{section}]]\nname = {}\ndtype = \"{}\"\nshape = [{}]", q(&t.name), t.dtype, shape.join(", "));
            }
        }
        m
    }
}

/// Top-level `ModelConfig` fields with no tensorgate meaning (reported,
/// not mapped), and those that fail the import.
const HINTS: &[&str] = &[
    "optimization",
    "parameters",
    "model_warmup",
    "response_cache",
    "cc_model_filenames",
    "metric_tags",
    "model_repository_agents",
    "model_operations",
    "runtime",
];
const REFUSED: &[(&str, &str)] = &[
    ("sequence_batching", "stateful sequence models are not supported"),
    ("ensemble_scheduling", "ensembles are not supported: import each member model"),
    ("batch_input", "batch inputs are not supported"),
    ("batch_output", "batch outputs are not supported"),
];

fn dtype(triton: &str) -> Option<&'static str> {
    Some(match triton {
        "TYPE_FP32" => "f32",
        "TYPE_FP64" => "f64",
        "TYPE_INT64" => "i64",
        "TYPE_INT32" => "i32",
        "TYPE_UINT8" => "u8",
        "TYPE_BOOL" => "bool",
        _ => return None,
    })
}

fn map(config: &Message, dir: &Path, name: Option<&str>) -> Result<Mapped, String> {
    let line = |field: &str| config.line(field).map(|l| format!("line {l}: ")).unwrap_or_default();
    let name = name.ok_or("no `name` and no folder name")?.to_string();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(format!("name `{name}` is not a tensorgate application name ([A-Za-z0-9_-]); give --name"));
    }
    let platform = config.get("platform").and_then(Value::as_str).unwrap_or("");
    let backend = config.get("backend").and_then(Value::as_str).unwrap_or("");
    let format = if platform == "onnxruntime_onnx" || backend == "onnxruntime" {
        Format::Onnx
    } else if platform == "pytorch_libtorch" || backend == "pytorch" || platform.is_empty() && backend.is_empty() {
        Format::TorchScript
    } else {
        let what = if platform.is_empty() { format!("backend \"{backend}\"") } else { format!("platform \"{platform}\"") };
        return Err(format!(
            "{}{what}: only TorchScript models (platform \"pytorch_libtorch\" or backend \"pytorch\") and ONNX models (platform \"onnxruntime_onnx\" or backend \"onnxruntime\") can be imported",
            line(if platform.is_empty() { "backend" } else { "platform" })
        ));
    };
    let mut not_carried = Vec::new();
    for (field, _, l) in &config.fields {
        let known = [
            "name",
            "platform",
            "backend",
            "max_batch_size",
            "input",
            "output",
            "dynamic_batching",
            "instance_group",
            "default_model_filename",
            "version_policy",
        ];
        if let Some((_, why)) = REFUSED.iter().find(|(f, _)| f == field) {
            return Err(format!("line {l}: `{field}`: {why}"));
        }
        if field == "model_transaction_policy" {
            let decoupled = config.get(field).and_then(Value::as_message).and_then(|m| m.get("decoupled")).and_then(Value::as_str);
            if decoupled == Some("true") {
                return Err(format!("line {l}: `model_transaction_policy {{ decoupled: true }}`: decoupled models are not supported"));
            }
            continue;
        }
        if HINTS.contains(&field.as_str()) {
            not_carried.push(format!("line {l}: `{field}`"));
        } else if !known.contains(&field.as_str()) {
            return Err(format!("line {l}: unknown field `{field}`"));
        }
    }
    let max_batch = config.get("max_batch_size").map(|v| v.as_i64().ok_or(format!("{}`max_batch_size` must be an integer", line("max_batch_size")))).transpose()?.unwrap_or(0);
    if max_batch < 0 {
        return Err(format!("{}`max_batch_size` must be 0 or more", line("max_batch_size")));
    }
    let mut tensors = |field: &str| -> Result<Vec<(Tensor, Option<String>)>, String> {
        let mut out = Vec::new();
        for (i, v) in config.all(field).into_iter().enumerate() {
            let m = v.as_message().ok_or(format!("{}`{field}` entry {i} is not a message", line(field)))?;
            let tname = m.get("name").and_then(Value::as_str).ok_or(format!("{}`{field}` entry {i} has no `name`", line(field)))?;
            let what = format!("{field} `{tname}`");
            let ty = m.get("data_type").and_then(Value::as_str).unwrap_or("TYPE_INVALID");
            let dtype = dtype(ty).ok_or(format!(
                "{}{what}: data_type {ty} has no tensorgate tensor type (supported: TYPE_FP32, TYPE_FP64, TYPE_INT64, TYPE_INT32, TYPE_UINT8, TYPE_BOOL)",
                line(field)
            ))?;
            let mut dims = Vec::new();
            for d in m.all("dims") {
                match d.as_i64() {
                    Some(d) if d == -1 || d > 0 => dims.push(d),
                    _ => return Err(format!("{}{what}: dims must be -1 or > 0, got {:?}", line(field), d.as_str().unwrap_or("?"))),
                }
            }
            for (sub, _, _) in &m.fields {
                match sub.as_str() {
                    "name" | "data_type" | "dims" | "label_filename" => {}
                    "format" => not_carried.push(format!("{what}: `format`")),
                    "reshape" => return Err(format!("{}{what}: `reshape` is not supported: export the model to take the shape the client sends", line(field))),
                    "is_shape_tensor" | "is_non_linear_format_io" if m.get(sub).and_then(Value::as_str) == Some("true") => {
                        return Err(format!("{}{what}: `{sub}: true` is not supported", line(field)))
                    }
                    "allow_ragged_batch" if m.get(sub).and_then(Value::as_str) == Some("true") => {
                        return Err(format!("{}{what}: ragged batches are not supported: pad the inputs (tensorgate.records.pad)", line(field)))
                    }
                    "optional" if m.get(sub).and_then(Value::as_str) == Some("true") => {
                        return Err(format!("{}{what}: optional inputs are not supported: every declared input is passed", line(field)))
                    }
                    "is_shape_tensor" | "is_non_linear_format_io" | "allow_ragged_batch" | "optional" => {}
                    other => return Err(format!("{}{what}: unknown field `{other}`", line(field))),
                }
            }
            let shape = match max_batch > 0 {
                true => std::iter::once(-1).chain(dims).collect(),
                false => dims,
            };
            if shape.is_empty() {
                return Err(format!("{}{what}: no dims (a scalar per request cannot be batched)", line(field)));
            }
            let labels = m.get("label_filename").and_then(Value::as_str).map(str::to_string);
            out.push((Tensor { name: tname.to_string(), dtype, shape }, labels));
        }
        Ok(out)
    };
    let inputs: Vec<Tensor> = tensors("input")?.into_iter().map(|(t, _)| t).collect();
    let outputs = tensors("output")?;
    if inputs.is_empty() || outputs.is_empty() {
        return Err("the config must declare its `input` and `output` tensors (tensorgate reads no auto-complete config from the model)".into());
    }
    let mut labels = None;
    for (t, file) in &outputs {
        let Some(file) = file else { continue };
        if labels.is_some() {
            return Err(format!("output `{}`: a second label_filename; a bundle has one list of labels", t.name));
        }
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path).map_err(|e| format!("output `{}`: label_filename {}: {e}", t.name, path.display()))?;
        let list: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect();
        labels = Some((list, format!("label_filename {file} of output `{}`", t.name)));
    }
    let outputs = outputs.into_iter().map(|(t, _)| t).collect();
    let (batching, max_delay_us) = match config.get("dynamic_batching") {
        None => (false, None),
        Some(v) => {
            let m = v.as_message().ok_or("`dynamic_batching` must be a message")?;
            let mut delay = None;
            for (sub, value, l) in &m.fields {
                match sub.as_str() {
                    "max_queue_delay_microseconds" => {
                        delay = Some(value.as_i64().filter(|&d| d >= 0).ok_or(format!("line {l}: max_queue_delay_microseconds must be an integer >= 0"))?)
                    }
                    other => not_carried.push(format!("line {l}: `dynamic_batching.{other}`")),
                }
            }
            (max_batch > 0, delay)
        }
    };
    let (mut instances, mut device) = (0i64, None::<String>);
    for g in config.all("instance_group") {
        let m = g.as_message().ok_or(format!("{}`instance_group` entries must be messages", line("instance_group")))?;
        instances += m.get("count").and_then(Value::as_i64).unwrap_or(1);
        let kind = m.get("kind").and_then(Value::as_str).unwrap_or("KIND_AUTO");
        let gpus: Vec<i64> = m.all("gpus").iter().filter_map(|v| v.as_i64()).collect();
        let this = match kind {
            "KIND_CPU" => "cpu".to_string(),
            "KIND_GPU" | "KIND_AUTO" if gpus.len() > 1 => {
                return Err(format!(
                    "{}instance_group gpus {gpus:?}: a bundle runs on one device; import it once per GPU (--name) or run a worker per GPU",
                    line("instance_group")
                ))
            }
            "KIND_GPU" | "KIND_AUTO" if gpus.len() == 1 => format!("cuda:{}", gpus[0]),
            "KIND_GPU" | "KIND_AUTO" => "auto".to_string(),
            other => return Err(format!("{}instance_group kind {other} is not supported (KIND_CPU, KIND_GPU, KIND_AUTO)", line("instance_group"))),
        };
        for (sub, _, l) in &m.fields {
            if !["count", "kind", "gpus", "name"].contains(&sub.as_str()) {
                not_carried.push(format!("line {l}: `instance_group.{sub}`"));
            }
        }
        match &device {
            Some(d) if *d != this => {
                return Err(format!("{}instance groups on different devices ({d}, {this}): a bundle runs on one device", line("instance_group")))
            }
            _ => device = Some(this),
        }
    }
    if !(0..=64).contains(&instances) {
        return Err(format!("{}instance_group counts add up to {instances}; tensorgate runs 1 to 64 instances", line("instance_group")));
    }
    let policy = match config.get("version_policy").map(|v| v.as_message().ok_or("`version_policy` must be a message")) {
        None => Policy::Latest(1),
        Some(m) => {
            let m = m?;
            let bad = || format!("{}version_policy must be one of latest {{ num_versions: N }}, all {{}}, specific {{ versions: [..] }}", line("version_policy"));
            match m.fields.first().map(|(k, v, _)| (k.as_str(), v.as_message())) {
                Some(("latest", Some(l))) => Policy::Latest(l.get("num_versions").and_then(Value::as_i64).filter(|&n| n > 0).unwrap_or(1) as usize),
                Some(("all", _)) => Policy::All,
                Some(("specific", Some(s))) => {
                    Policy::Specific(s.all("versions").iter().map(|v| v.as_i64().and_then(|n| u64::try_from(n).ok())).collect::<Option<Vec<u64>>>().ok_or_else(bad)?)
                }
                _ => return Err(bad()),
            }
        }
    };
    let model_file = config.get("default_model_filename").and_then(Value::as_str).unwrap_or(format.file()).to_string();
    Ok(Mapped {
        name,
        platform: if platform.is_empty() { format!("backend {}", if backend.is_empty() { "pytorch" } else { backend }) } else { platform.to_string() },
        format,
        model_file,
        labels,
        inputs,
        outputs,
        max_batch: (max_batch > 0).then_some(max_batch),
        batching,
        max_delay_us,
        instances: instances.max(1),
        device: device.unwrap_or_else(|| "auto".into()),
        policy,
        not_carried,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapped(text: &str) -> Result<Mapped, String> {
        map(&pbtxt::parse(text).expect("parses"), Path::new("/nonexistent"), Some("m"))
    }

    const BASE: &str = "platform: \"pytorch_libtorch\"\nmax_batch_size: 8\ninput [{ name: \"x\" data_type: TYPE_FP32 dims: [2, -1] }]\noutput [{ name: \"y\" data_type: TYPE_FP32 dims: [3] }]\n";

    #[test]
    fn batch_dims_devices_and_batching_map() {
        let m = mapped(&format!("{BASE}dynamic_batching {{ max_queue_delay_microseconds: 200 preferred_batch_size: [4] }}\ninstance_group [{{ count: 2 kind: KIND_GPU gpus: [1] }}]\n")).unwrap();
        assert_eq!(m.inputs, [Tensor { name: "x".into(), dtype: "f32", shape: vec![-1, 2, -1] }]);
        assert_eq!(m.outputs[0].shape, [-1, 3]);
        assert_eq!((m.max_batch, m.batching, m.max_delay_us, m.instances, m.device.as_str()), (Some(8), true, Some(200), 2, "cuda:1"));
        assert_eq!(m.not_carried, ["line 5: `dynamic_batching.preferred_batch_size`"]);
        assert_eq!(m.policy, Policy::Latest(1), "Triton's default");
        assert_eq!(mapped(&format!("{BASE}version_policy: {{ specific: {{ versions: [1, 3] }} }}\n")).unwrap().policy, Policy::Specific(vec![1, 3]));
        assert_eq!(mapped(&format!("{BASE}version_policy {{ all {{ }} }}\n")).unwrap().policy, Policy::All);
        let plain = mapped(&BASE.replace("max_batch_size: 8", "max_batch_size: 0")).unwrap();
        assert_eq!((plain.inputs[0].shape.clone(), plain.max_batch, plain.batching), (vec![2, -1], None, false));
        let text = mapped(BASE).unwrap().manifest(3, Path::new("/models/m"));
        assert!(text.contains("version = 3\n") && text.contains("max_batch = 8") && text.contains("shape = [-1, 2, -1]"), "{text}");
        let parsed: toml::Table = text.parse().expect("the manifest is TOML");
        assert_eq!(parsed["model"]["batching"].as_bool(), Some(false));
    }

    #[test]
    fn onnx_models_map_to_the_onnx_format() {
        for config in [BASE.replace("pytorch_libtorch", "onnxruntime_onnx"), BASE.replace("platform: \"pytorch_libtorch\"", "backend: \"onnxruntime\"")] {
            let m = mapped(&config).unwrap();
            assert_eq!((m.format, m.model_file.as_str()), (Format::Onnx, "model.onnx"));
            let parsed: toml::Table = m.manifest(1, Path::new("/models/m")).parse().expect("the manifest is TOML");
            assert_eq!((parsed["model"]["file"].as_str(), parsed["model"]["format"].as_str()), (Some("model.onnx"), Some("onnx")));
        }
        assert_eq!(mapped(BASE).unwrap().format, Format::TorchScript);
    }

    #[test]
    fn what_cannot_be_mapped_is_named() {
        let err = |text: &str| mapped(text).unwrap_err();
        assert_eq!(
            err(&BASE.replace("TYPE_FP32 dims: [2", "TYPE_FP16 dims: [2")),
            "line 3: input `x`: data_type TYPE_FP16 has no tensorgate tensor type (supported: TYPE_FP32, TYPE_FP64, TYPE_INT64, TYPE_INT32, TYPE_UINT8, TYPE_BOOL)"
        );
        assert_eq!(
            err(&BASE.replace("pytorch_libtorch", "tensorflow_savedmodel")),
            "line 1: platform \"tensorflow_savedmodel\": only TorchScript models (platform \"pytorch_libtorch\" or backend \"pytorch\") and ONNX models (platform \"onnxruntime_onnx\" or backend \"onnxruntime\") can be imported"
        );
        assert!(err(&BASE.replace("dims: [3]", "dims: [3] reshape { shape: [1, 3] }")).starts_with("line 4: output `y`: `reshape` is not supported"));
        assert_eq!(err(&format!("{BASE}sequence_batching {{}}\n")), "line 5: `sequence_batching`: stateful sequence models are not supported");
        assert_eq!(err(&format!("{BASE}instance_group [{{ gpus: [0, 1] }}]\n")).split(':').next(), Some("line 5"));
        assert_eq!(err(&format!("{BASE}colour: RED\n")), "line 5: unknown field `colour`");
        assert!(err(&BASE.replace("dims: [3]", "dims: [0]")).contains("dims must be -1 or > 0"));
    }
}
