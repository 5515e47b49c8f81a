//! What the protocol shows of an application version — its metadata and
//! Triton's model configuration — read from its `models` entry
//! ([`ModelInfo`]), the same on a host and on a gateway.
//!
//! Two kinds of applications:
//! - served by the generic `tensors` plugin: the manifest's declared inputs
//!   and outputs, typed, with the batch dimension;
//! - with their own plugin: one `BYTES` input, [`PAYLOAD`], carrying the
//!   item's payload, and two `BYTES` outputs, [`REPLY`] and
//!   [`CONTENT_TYPE`].

use tensorgate_backend::Dtype;
use tensorgate_protocol::ModelInfo;

use super::tensor::Datatype;

/// The input of an application with its own plugin: the item's payload.
pub const PAYLOAD: &str = "payload";
/// Its output: the plugin's reply.
pub const REPLY: &str = "reply";
/// Its second output: the reply's content type.
pub const CONTENT_TYPE: &str = "content_type";
/// The plugin whose applications take and return named tensors.
pub const TENSORS_PLUGIN: &str = "tensors";

/// One tensor of a model's signature.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorMeta {
    /// Name.
    pub name: String,
    /// Type.
    pub datatype: Datatype,
    /// Shape; -1 marks a dynamic dimension.
    pub shape: Vec<i64>,
}

/// A model version as the protocol describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelDesc {
    /// Name.
    pub name: String,
    /// Version.
    pub version: u64,
    /// Whether named tensors go in and out (the `tensors` plugin).
    pub tensors: bool,
    /// Inputs, in the model's order.
    pub inputs: Vec<TensorMeta>,
    /// Outputs, in the model's order.
    pub outputs: Vec<TensorMeta>,
    /// Content types the plugin accepts (empty: any).
    pub accepts: Vec<String>,
    /// Triton platform name of the model's format.
    pub platform: &'static str,
    /// Triton backend name of the model's format.
    pub backend: &'static str,
    /// Most rows in one forward pass.
    pub max_batch: u64,
    /// Longest wait of a batch that is not full (µs).
    pub max_delay_us: u64,
    /// Copies of the model.
    pub instances: u64,
    /// Device (`cpu`, `cuda:0`).
    pub device: String,
    /// Class labels.
    pub labels: Vec<String>,
}

impl ModelDesc {
    /// The description of a ready version's `models` entry.
    pub fn of(info: &ModelInfo) -> ModelDesc {
        let tensors = info.plugin == TENSORS_PLUGIN;
        let decls = |list: &[String]| list.iter().filter_map(|s| parse_decl(s)).collect::<Vec<_>>();
        let bytes = |name: &str| TensorMeta { name: name.into(), datatype: Datatype::Bytes, shape: vec![1] };
        let (inputs, outputs) = if tensors {
            (decls(&info.inputs), decls(&info.outputs))
        } else {
            (vec![bytes(PAYLOAD)], vec![bytes(REPLY), bytes(CONTENT_TYPE)])
        };
        let (platform, backend) = match info.format.to_ascii_lowercase().as_str() {
            "onnx" => ("onnxruntime_onnx", "onnxruntime"),
            "aotinductor" | "aoti" => ("torch_aoti", "pytorch"),
            _ => ("pytorch_libtorch", "pytorch"),
        };
        ModelDesc {
            name: info.name.clone(),
            version: info.version,
            tensors,
            inputs,
            outputs,
            accepts: info.accepts.clone(),
            platform,
            backend,
            max_batch: info.max_batch.max(1),
            max_delay_us: info.max_delay_us,
            instances: info.instances.max(1),
            device: info.device.clone(),
            labels: info.labels.clone(),
        }
    }

    /// Whether the model takes a batch dimension first: every declared
    /// input's leading dimension is dynamic (then Triton's `max_batch_size`
    /// is the model's `max_batch` and `dims` leave it out).
    pub fn batched(&self) -> bool {
        self.tensors && !self.inputs.is_empty() && self.inputs.iter().chain(&self.outputs).all(|t| t.shape.first() == Some(&-1))
    }

    /// Triton's `max_batch_size`: 0 when requests carry no batch dimension.
    pub fn max_batch_size(&self) -> u64 {
        if self.batched() {
            self.max_batch
        } else {
            0
        }
    }

    /// A tensor's `dims` in Triton's configuration (without the batch dimension when batched).
    pub fn dims(&self, t: &TensorMeta) -> Vec<i64> {
        if self.batched() {
            t.shape[1..].to_vec()
        } else {
            t.shape.clone()
        }
    }

    /// Whether the model runs on a GPU (Triton's `KIND_GPU` instances).
    pub fn on_gpu(&self) -> bool {
        self.device.starts_with("cuda")
    }

    /// The GPU ordinals its instances use (Triton's `gpus`).
    pub fn gpus(&self) -> Vec<i32> {
        self.device.strip_prefix("cuda:").and_then(|n| n.parse().ok()).into_iter().collect()
    }

    /// Triton's model configuration, in the protobuf JSON mapping Triton's
    /// HTTP endpoint answers with (proto field names, enums by name, every
    /// field present).
    pub fn config_json(&self) -> serde_json::Value {
        use serde_json::json;
        let input: Vec<_> = self
            .inputs
            .iter()
            .map(|t| {
                json!({
                    "name": t.name, "data_type": t.datatype.config_name(), "format": "FORMAT_NONE",
                    "dims": self.dims(t), "is_shape_tensor": false, "allow_ragged_batch": false, "optional": false,
                })
            })
            .collect();
        let output: Vec<_> = self
            .outputs
            .iter()
            .map(|t| {
                json!({
                    "name": t.name, "data_type": t.datatype.config_name(), "dims": self.dims(t),
                    "label_filename": "", "is_shape_tensor": false,
                })
            })
            .collect();
        let mut config = json!({
            "name": self.name,
            "platform": self.platform,
            "backend": self.backend,
            "version_policy": {"latest": {"num_versions": 1}},
            "max_batch_size": self.max_batch_size(),
            "input": input,
            "output": output,
            "instance_group": [{
                "name": format!("{}_0", self.name), "kind": if self.on_gpu() { "KIND_GPU" } else { "KIND_CPU" },
                "count": self.instances, "gpus": self.gpus(),
            }],
            "default_model_filename": "",
            "parameters": {},
        });
        if self.max_batch_size() > 0 {
            config["dynamic_batching"] = json!({
                "preferred_batch_size": [], "max_queue_delay_microseconds": self.max_delay_us, "preserve_ordering": false,
            });
        }
        if !self.tensors {
            let accepts = self.accepts.join(",");
            config["parameters"] = json!({"content_types": {"string_value": accepts}});
        }
        config
    }
}

/// Parses a `models` entry's declared tensor, `"x: F32[-1, 4]"`
/// (docs/protocol.md, the Reply `models` entries), into its parts.
pub fn parse_decl(text: &str) -> Option<TensorMeta> {
    let (name, rest) = text.rsplit_once(": ")?;
    let (dtype, shape) = rest.split_once('[')?;
    let dtype = Dtype::ALL.into_iter().find(|d| format!("{d:?}") == dtype.trim())?;
    let shape = shape.strip_suffix(']')?;
    let shape = if shape.trim().is_empty() {
        Vec::new()
    } else {
        shape.split(',').map(|d| d.trim().parse::<i64>().ok()).collect::<Option<Vec<_>>>()?
    };
    Some(TensorMeta { name: name.to_string(), datatype: Datatype::of(dtype), shape })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_parse_as_models_writes_them() {
        let t = parse_decl("x: F32[-1, 16]").unwrap();
        assert_eq!((t.name.as_str(), t.datatype, t.shape), ("x", Datatype::Fp32, vec![-1, 16]));
        assert_eq!(parse_decl("flag: Bool[]").unwrap().shape, Vec::<i64>::new());
        assert_eq!(parse_decl("a:b: U8[3]").unwrap().name, "a:b");
        assert!(parse_decl("x F32[1]").is_none());
        assert!(parse_decl("x: F16[1]").is_none());
    }

    fn tabular() -> ModelInfo {
        ModelInfo {
            name: "mlp".into(),
            version: 2,
            plugin: "tensors".into(),
            inputs: vec!["x: F32[-1, 16]".into()],
            outputs: vec!["scores: F32[-1, 4]".into()],
            format: "TorchScript".into(),
            max_batch: 64,
            max_delay_us: 200,
            instances: 2,
            device: "cpu".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_batched_tensors_model_configures_like_triton() {
        let d = ModelDesc::of(&tabular());
        assert!(d.batched());
        let c = d.config_json();
        assert_eq!(c["max_batch_size"], 64);
        assert_eq!(c["platform"], "pytorch_libtorch");
        assert_eq!(c["input"][0]["dims"], serde_json::json!([16]));
        assert_eq!(c["input"][0]["data_type"], "TYPE_FP32");
        assert_eq!(c["dynamic_batching"]["max_queue_delay_microseconds"], 200);
        assert_eq!(c["instance_group"][0]["count"], 2);
        assert_eq!(c["instance_group"][0]["kind"], "KIND_CPU");
    }

    #[test]
    fn a_plugin_application_takes_and_returns_bytes() {
        let d = ModelDesc::of(&ModelInfo { plugin: "tabular".into(), accepts: vec!["application/json".into()], ..tabular() });
        assert!(!d.batched());
        assert_eq!(d.inputs[0].name, PAYLOAD);
        assert_eq!(d.outputs.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), [REPLY, CONTENT_TYPE]);
        let c = d.config_json();
        assert_eq!(c["max_batch_size"], 0);
        assert!(c.get("dynamic_batching").is_none());
        assert_eq!(c["input"][0]["data_type"], "TYPE_STRING");
    }
}
