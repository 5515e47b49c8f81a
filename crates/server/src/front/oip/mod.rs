//! The Open Inference Protocol (KServe v2, with the Triton extensions
//! clients call), independent of its transport: [`Oip`] answers each call
//! of the protocol, and the HTTP ([`super::http`]) and gRPC
//! ([`super::grpc`]) fronts only translate their wire form to and from
//! the types here.
//!
//! An infer request is one item of the named model and version (absent or
//! empty: the default, so canary and rollback apply), routed and run by the
//! same [`ItemRunner`] as a QUIC request's items: plugin, batcher, model,
//! counters and metrics are the same. [`model`] says how an application's
//! inputs and outputs look in the protocol.

pub mod model;
pub mod tensor;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tensorgate_protocol::{
    AdminHeader, ErrorCode, Item, ItemHead, Limits, ModelInfo, ModelStatus, PredictHeader, RequestHeader, Role,
};

use crate::auth::{AccessPolicy, Peer};
use crate::manage::{ModelState, Management, Status};
use crate::request::{ItemFailure, ItemOutput, ItemRunner, Reject, Routed};
use model::{ModelDesc, CONTENT_TYPE, PAYLOAD, REPLY};
use tensor::{Data, Datatype, Param, Params, Tensor};

/// The protocol extensions served (server metadata's `extensions`).
pub const EXTENSIONS: &[&str] = &["binary_tensor_data", "model_configuration", "model_repository", "statistics"];

/// Request parameters the protocol itself uses; the others reach the
/// plugin as item metadata.
const RESERVED_PARAMS: &[&str] =
    &["content_type", "timeout", "binary_data_output", "binary_data", "binary_data_size", "priority", "headers"];

/// How long a version's description is reused before `models` is asked again.
const BOOK_MAX_AGE: Duration = Duration::from_secs(1);

/// A call's failure: a tensorgate error code (mapped to an HTTP status and
/// a gRPC code by the fronts) and a message naming what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OipError {
    /// The error's class.
    pub code: ErrorCode,
    /// What was wrong.
    pub message: String,
}

impl OipError {
    /// An error of class `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        OipError { code, message: message.into() }
    }

    /// A malformed or invalid request.
    pub fn invalid(message: impl Into<String>) -> Self {
        OipError::new(ErrorCode::BadRequest, message)
    }

    /// An unknown model or version.
    pub fn not_found(message: impl Into<String>) -> Self {
        OipError::new(ErrorCode::UnknownModel, message)
    }

    /// The HTTP status of this error.
    pub fn http_status(&self) -> u16 {
        match self.code {
            ErrorCode::BadRequest | ErrorCode::PluginError | ErrorCode::UnsupportedContentType | ErrorCode::LoadFailed => 400,
            ErrorCode::Forbidden => 403,
            ErrorCode::UnknownModel => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::LimitExceeded => 413,
            ErrorCode::Unsupported => 501,
            ErrorCode::Busy => 503,
            ErrorCode::DeadlineExceeded => 504,
            ErrorCode::PluginFailed | ErrorCode::ModelError | ErrorCode::Internal | ErrorCode::Unknown => 500,
        }
    }
}

impl std::fmt::Display for OipError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}", self.code, self.message)
    }
}

impl From<Reject> for OipError {
    fn from(r: Reject) -> Self {
        OipError::new(r.code, r.message)
    }
}

impl From<ItemFailure> for OipError {
    fn from(f: ItemFailure) -> Self {
        OipError::new(f.code, f.message)
    }
}

/// Who is calling, over which protocol.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The connection's address and certificate role.
    pub peer: Peer,
    /// The bearer token presented (HTTP `Authorization`, gRPC `authorization` metadata).
    pub token: Option<String>,
    /// `http` or `grpc`: the metrics label.
    pub protocol: &'static str,
}

/// One inference request.
#[derive(Debug, Clone, Default)]
pub struct InferRequest {
    /// Model name.
    pub model: String,
    /// Version as the protocol writes it (empty: the default).
    pub version: String,
    /// Client-chosen id, echoed.
    pub id: String,
    /// Request parameters.
    pub params: Params,
    /// Inputs.
    pub inputs: Vec<Tensor>,
    /// Outputs asked for (empty: all).
    pub outputs: Vec<RequestedOutput>,
}

/// An output a request asks for.
#[derive(Debug, Clone, Default)]
pub struct RequestedOutput {
    /// Its name.
    pub name: String,
    /// Its parameters (`binary_data` over HTTP).
    pub params: Params,
}

/// One inference response.
#[derive(Debug, Clone, Default)]
pub struct InferResponse {
    /// The model that answered.
    pub model: String,
    /// The version that answered.
    pub version: String,
    /// The request's id.
    pub id: String,
    /// Response parameters (the plugin's result metadata).
    pub params: Params,
    /// Outputs.
    pub outputs: Vec<Tensor>,
}

/// A model's metadata.
#[derive(Debug, Clone)]
pub struct ModelMetadata {
    /// Name.
    pub name: String,
    /// Its ready versions.
    pub versions: Vec<String>,
    /// The version described.
    pub desc: Arc<ModelDesc>,
}

/// One version's counters.
#[derive(Debug, Clone, Default)]
pub struct ModelStats {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Items answered (ok and failed).
    pub inference_count: u64,
    /// Forward passes.
    pub execution_count: u64,
    /// Items answered with a result.
    pub success: u64,
    /// Items failed.
    pub fail: u64,
    /// Time in forward passes, nanoseconds.
    pub compute_infer_ns: u64,
}

/// One entry of the repository index.
#[derive(Debug, Clone, Default)]
pub struct IndexEntry {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// `READY` or `UNAVAILABLE`.
    pub state: String,
    /// Why it is unavailable.
    pub reason: String,
}

/// The protocol's calls over a runner and a management interface.
pub struct Oip<R: ItemRunner> {
    runner: Arc<R>,
    management: Arc<dyn Management>,
    access: AccessPolicy,
    limits: Limits,
    book: Book,
    running: AtomicUsize,
}

impl<R: ItemRunner> Oip<R> {
    /// The protocol over `runner` and `management`, with the front's access policy and limits.
    pub fn new(runner: Arc<R>, management: Arc<dyn Management>, access: AccessPolicy, limits: Limits) -> Self {
        Oip { runner, management, access, limits, book: Book::default(), running: AtomicUsize::new(0) }
    }

    /// The wire limits (the fronts bound bodies and messages by `max_frame_bytes`).
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Checks that `caller` may do `op`, which needs `role`.
    pub fn authorize(&self, role: Role, op: &str, caller: &Caller) -> Result<(), OipError> {
        self.access
            .check(role, op, &caller.peer, caller.token.as_deref())
            .map_err(|m| OipError::new(ErrorCode::Forbidden, m))
    }

    /// What is served and by whom (models, versions, a fleet's workers), for
    /// the status page; the predict role.
    pub async fn status(&self, caller: &Caller) -> Result<Status, OipError> {
        self.authorize(Role::Predict, "status", caller)?;
        let mut status = self.management.status().await;
        crate::item_stats::annotate(&mut status.models);
        Ok(status)
    }

    /// Server ready: a host once it serves (its repository is loaded before
    /// the fronts start); a gateway once a worker serves.
    pub async fn server_ready(&self) -> bool {
        let status = self.management.status().await;
        status.role != "gateway" || !status.workers.is_empty()
    }

    /// Whether `name` (at `version`, or its default) is loaded and serving.
    pub async fn model_ready(&self, caller: &Caller, name: &str, version: &str) -> Result<bool, OipError> {
        self.authorize(Role::Predict, "model_ready", caller)?;
        let version = parse_version(name, version)?;
        let models = self.book.list(&*self.management, Duration::ZERO).await;
        Ok(pick(&models, name, version).is_ok())
    }

    /// A model's metadata: its ready versions and the named (or default) version's signature.
    pub async fn model_metadata(&self, caller: &Caller, name: &str, version: &str) -> Result<ModelMetadata, OipError> {
        self.authorize(Role::Predict, "model_metadata", caller)?;
        let version = parse_version(name, version)?;
        let models = self.book.list(&*self.management, Duration::ZERO).await;
        let info = pick(&models, name, version)?;
        let versions = ready(&models, name).map(|m| m.version.to_string()).collect();
        Ok(ModelMetadata { name: name.to_string(), versions, desc: Arc::new(ModelDesc::of(info)) })
    }

    /// A version's description (for its configuration).
    pub async fn model_config(&self, caller: &Caller, name: &str, version: &str) -> Result<Arc<ModelDesc>, OipError> {
        Ok(self.model_metadata(caller, name, version).await?.desc)
    }

    /// Counters of every version, of one model's versions, or of one version.
    pub async fn statistics(&self, caller: &Caller, name: &str, version: &str) -> Result<Vec<ModelStats>, OipError> {
        self.authorize(Role::Predict, "model_statistics", caller)?;
        let want = if name.is_empty() { None } else { Some(parse_version(name, version)?) };
        let status = self.management.status().await;
        let stats: Vec<ModelStats> = status
            .models
            .iter()
            .filter(|m| match &want {
                None => true,
                Some(v) => m.name == name && v.is_none_or(|v| m.version == v),
            })
            .map(stats_of)
            .collect();
        if stats.is_empty() && !name.is_empty() {
            return Err(OipError::not_found(unknown_model(name, want.flatten())));
        }
        Ok(stats)
    }

    /// The repository's versions, loaded or failed (`ready_only`: only those serving).
    pub async fn repository_index(&self, caller: &Caller, ready_only: bool) -> Result<Vec<IndexEntry>, OipError> {
        self.authorize(Role::Admin, "repository_index", caller)?;
        let models = self.book.list(&*self.management, Duration::ZERO).await;
        Ok(models
            .iter()
            .filter(|m| !ready_only || m.state == ModelState::Ready.as_str())
            .map(|m| IndexEntry {
                name: m.name.clone(),
                version: m.version.to_string(),
                state: if m.state == ModelState::Ready.as_str() { "READY" } else { "UNAVAILABLE" }.into(),
                reason: m.error.clone().unwrap_or_default(),
            })
            .collect())
    }

    /// Load: tensorgate's `reload` of one model (its bundles re-read from
    /// disk, what changed loaded; a bad bundle never replaces a good one).
    pub async fn load(&self, caller: &Caller, name: &str, has_params: bool) -> Result<String, OipError> {
        self.authorize(Role::Admin, "repository_load", caller)?;
        if name.is_empty() {
            return Err(OipError::invalid("load needs a model name"));
        }
        if has_params {
            return Err(OipError::new(
                ErrorCode::Unsupported,
                "load with parameters (a config override or model files) is not supported: upload a bundle instead (docs/oip.md)",
            ));
        }
        let header = AdminHeader { model: Some(name.to_string()), ..Default::default() };
        let managed = self.management.manage(RequestHeader::Reload(header), Vec::new()).await?;
        self.book.forget();
        if let Some(e) = managed.reply.errors.iter().find(|e| e.model == name) {
            return Err(OipError::new(ErrorCode::LoadFailed, format!("load of `{name}` failed: {}", e.error)));
        }
        let models = self.book.list(&*self.management, Duration::ZERO).await;
        if ready(&models, name).next().is_none() {
            return Err(OipError::not_found(format!("no bundle of `{name}` in the repository loaded")));
        }
        Ok(managed.reply.message)
    }

    /// Unload: tensorgate's `delete` of every version of the model (the
    /// bundles are removed from the repository, or from the fleet).
    pub async fn unload(&self, caller: &Caller, name: &str) -> Result<String, OipError> {
        self.authorize(Role::Admin, "repository_unload", caller)?;
        if name.is_empty() {
            return Err(OipError::invalid("unload needs a model name"));
        }
        let header = AdminHeader { model: Some(name.to_string()), ..Default::default() };
        let managed = self.management.manage(RequestHeader::Delete(header), Vec::new()).await?;
        self.book.forget();
        Ok(managed.reply.message)
    }

    /// Runs one inference. `deadline`: the transport's own (gRPC's
    /// `grpc-timeout`); the request's `timeout` parameter (µs, Triton's) also counts.
    pub async fn infer(&self, caller: &Caller, req: InferRequest, deadline: Option<Duration>) -> Result<InferResponse, OipError> {
        let model = req.model.clone();
        // At debug level, as the QUIC front's request span.
        let span = tracing::debug_span!("infer", model = %model, protocol = caller.protocol, request_id = %req.id);
        let result = tracing::Instrument::instrument(self.infer_inner(caller, req, deadline), span).await;
        match &result {
            Ok(_) => crate::metrics::request_via(&model, "ok", caller.protocol),
            Err(e) => {
                crate::metrics::request_via(&model, &e.code.to_string(), caller.protocol);
                tracing::debug!(model, protocol = caller.protocol, code = %e.code, "infer failed: {}", e.message);
            }
        }
        result
    }

    async fn infer_inner(&self, caller: &Caller, req: InferRequest, deadline: Option<Duration>) -> Result<InferResponse, OipError> {
        self.authorize(Role::Predict, "infer", caller)?;
        let version = parse_version(&req.model, &req.version)?;
        for t in &req.inputs {
            t.check()?;
        }
        let timeout = match req.params.get("timeout") {
            None => None,
            Some(p) => Some(Duration::from_micros(
                p.as_u64().ok_or_else(|| OipError::invalid("parameter `timeout` must be a non-negative integer (µs)"))?,
            )),
        };
        let deadline = match (deadline, timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let header = PredictHeader { model: req.model.clone(), version, request_id: req.id.clone(), ..Default::default() };
        let (routed, session) = self.runner.route(&header)?;
        let desc = self.book.desc(&*self.management, &routed).await?;
        let item = item_for(&desc, &req, self.limits.max_item_bytes)?;
        let _running = Running::enter(&self.running);
        let alone = self.running.load(Ordering::Relaxed) == 1;
        let stats = crate::item_stats::of(&routed.model, routed.version);
        let run = crate::item_stats::timed(stats, self.runner.run(&session, item, alone));
        self.runner.flush(&session);
        let done = match deadline {
            Some(d) => tokio::time::timeout(d, run).await.map_err(|_| {
                OipError::new(ErrorCode::DeadlineExceeded, format!("the request's deadline of {} µs passed", d.as_micros()))
            })?,
            None => run.await,
        };
        let output = done.result?;
        response_for(&desc, &req, &routed, output)
    }
}

/// Counts an inference as running while it lives.
struct Running<'a>(&'a AtomicUsize);

impl<'a> Running<'a> {
    fn enter(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Running(n)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The protocol's version string: empty for the default, else a number.
fn parse_version(model: &str, version: &str) -> Result<Option<u64>, OipError> {
    if version.is_empty() {
        return Ok(None);
    }
    version.parse::<u64>().map(Some).map_err(|_| {
        OipError::invalid(format!("model_version `{version}` of `{model}` is not a version number (empty: the default)"))
    })
}

fn unknown_model(name: &str, version: Option<u64>) -> String {
    match version {
        Some(v) => format!("no version {v} of model `{name}` is serving"),
        None => format!("no model `{name}` is serving"),
    }
}

fn ready<'a>(models: &'a [ModelInfo], name: &'a str) -> impl Iterator<Item = &'a ModelInfo> + 'a {
    models.iter().filter(move |m| m.name == name && m.state == ModelState::Ready.as_str())
}

/// The ready version `version` of `name`, or its default (else its newest).
fn pick<'a>(models: &'a [ModelInfo], name: &'a str, version: Option<u64>) -> Result<&'a ModelInfo, OipError> {
    let found = match version {
        Some(v) => ready(models, name).find(|m| m.version == v),
        None => ready(models, name).find(|m| m.default).or_else(|| ready(models, name).max_by_key(|m| m.version)),
    };
    found.ok_or_else(|| OipError::not_found(unknown_model(name, version)))
}

fn stats_of(m: &ModelStatus) -> ModelStats {
    ModelStats {
        name: m.name.clone(),
        version: m.version.to_string(),
        inference_count: m.items_ok + m.items_failed,
        execution_count: m.forwards,
        success: m.items_ok,
        fail: m.items_failed,
        compute_infer_ns: m.forward_us.saturating_mul(1000),
    }
}

/// The item an inference request is: named tensors in an `.npz` for a
/// `tensors` application, else its one `BYTES` element.
pub fn item_for(desc: &ModelDesc, req: &InferRequest, max_item_bytes: u64) -> Result<Item, OipError> {
    let mut metadata: std::collections::BTreeMap<String, String> = req
        .params
        .iter()
        .filter(|(k, _)| !RESERVED_PARAMS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.text()))
        .collect();
    if !req.id.is_empty() {
        metadata.entry("request_id".into()).or_insert_with(|| req.id.clone());
    }
    let (content_type, payload) = if desc.tensors { tensors_payload(desc, req)? } else { bytes_payload(desc, req)? };
    if payload.len() as u64 > max_item_bytes {
        return Err(OipError::new(
            ErrorCode::LimitExceeded,
            format!("the item is {} bytes, over max_item_bytes = {max_item_bytes}", payload.len()),
        ));
    }
    let head = ItemHead { index: 0, content_type, metadata, compression: Default::default() };
    Ok(Item { head, payload })
}

fn tensors_payload(desc: &ModelDesc, req: &InferRequest) -> Result<(String, Bytes), OipError> {
    let model = &desc.name;
    if req.inputs.is_empty() {
        return Err(OipError::invalid(format!("the request has no inputs; model `{model}` takes {}", names(&desc.inputs))));
    }
    let ordered: Vec<&Tensor> = if desc.inputs.is_empty() {
        req.inputs.iter().collect()
    } else {
        for t in &req.inputs {
            if !desc.inputs.iter().any(|d| d.name == t.name) {
                return Err(OipError::invalid(format!(
                    "model `{model}` has no input `{}`; its inputs are {}",
                    t.name,
                    names(&desc.inputs)
                )));
            }
        }
        desc.inputs
            .iter()
            .map(|d| {
                let t = req.inputs.iter().find(|t| t.name == d.name).ok_or_else(|| {
                    OipError::invalid(format!("input `{}` is missing; model `{model}` takes {}", d.name, names(&desc.inputs)))
                })?;
                if t.datatype != d.datatype {
                    return Err(OipError::invalid(format!(
                        "input `{}` is {}, model `{model}` takes {}",
                        t.name, t.datatype, d.datatype
                    )));
                }
                let fits = d.shape.len() == t.shape.len() && d.shape.iter().zip(&t.shape).all(|(&w, &s)| w < 0 || w as u64 == s);
                if !fits {
                    return Err(OipError::invalid(format!(
                        "input `{}` has shape {:?}, model `{model}` takes {:?} (-1: any size)",
                        t.name, t.shape, d.shape
                    )));
                }
                Ok(t)
            })
            .collect::<Result<_, _>>()?
    };
    let mut descrs = Vec::with_capacity(ordered.len());
    let mut data = Vec::with_capacity(ordered.len());
    for t in &ordered {
        let descr = t.datatype.descr().ok_or_else(|| {
            OipError::invalid(format!("input `{}` is {}: model `{model}` takes no {} tensors", t.name, t.datatype, t.datatype))
        })?;
        let Data::Raw(bytes) = &t.data else {
            return Err(OipError::invalid(format!("input `{}`: {} data must be numbers", t.name, t.datatype)));
        };
        descrs.push(descr);
        data.push(bytes.as_ref());
    }
    let writer = tensorgate_npy::NpzWriter::new(
        ordered.iter().zip(&descrs).map(|(t, d)| (t.name.as_str(), d, t.shape.as_slice())),
    )
    .map_err(|e| OipError::invalid(format!("inputs: {e}")))?;
    let npz = writer.write(&data).map_err(|e| OipError::invalid(format!("inputs: {e}")))?;
    Ok(("application/x-npz".to_string(), Bytes::from(npz)))
}

fn bytes_payload(desc: &ModelDesc, req: &InferRequest) -> Result<(String, Bytes), OipError> {
    let model = &desc.name;
    let [input] = req.inputs.as_slice() else {
        return Err(OipError::invalid(format!(
            "model `{model}` takes one BYTES input (`{PAYLOAD}`: the item's payload), {} inputs were sent",
            req.inputs.len()
        )));
    };
    let Data::Strings(elements) = &input.data else {
        return Err(OipError::invalid(format!(
            "input `{}` is {}, model `{model}` takes one BYTES element (`{PAYLOAD}`: the item's payload)",
            input.name, input.datatype
        )));
    };
    let [payload] = elements.as_slice() else {
        return Err(OipError::invalid(format!(
            "input `{}` holds {} elements; model `{model}` takes exactly one (the item's payload)",
            input.name,
            elements.len()
        )));
    };
    let content_type = match input.params.get("content_type").or_else(|| req.params.get("content_type")) {
        Some(Param::Str(s)) => s.clone(),
        Some(_) => return Err(OipError::invalid("parameter `content_type` must be a string")),
        None => desc.accepts.first().cloned().unwrap_or_else(|| "application/octet-stream".into()),
    };
    Ok((content_type, payload.clone()))
}

/// The response to `req` from the item's output.
pub fn response_for(desc: &ModelDesc, req: &InferRequest, routed: &Routed, output: ItemOutput) -> Result<InferResponse, OipError> {
    let mut outputs = if desc.tensors { tensor_outputs(desc, &output)? } else { bytes_outputs(&output) };
    if !req.outputs.is_empty() {
        let mut chosen = Vec::with_capacity(req.outputs.len());
        for want in &req.outputs {
            let at = outputs.iter().position(|t| t.name == want.name).ok_or_else(|| {
                let have: Vec<&str> = outputs.iter().map(|t| t.name.as_str()).collect();
                OipError::invalid(format!(
                    "model `{}` has no output `{}`; its outputs are {}",
                    desc.name,
                    want.name,
                    have.join(", ")
                ))
            })?;
            chosen.push(outputs[at].clone());
        }
        outputs = chosen;
    }
    Ok(InferResponse {
        model: routed.model.clone(),
        version: routed.version.to_string(),
        id: req.id.clone(),
        params: output.metadata.into_iter().map(|(k, v)| (k, Param::Str(v))).collect(),
        outputs,
    })
}

fn tensor_outputs(desc: &ModelDesc, output: &ItemOutput) -> Result<Vec<Tensor>, OipError> {
    let internal = |m: String| OipError::new(ErrorCode::Internal, format!("model `{}`: {m}", desc.name));
    if output.content_type != "application/x-npz" {
        return Err(internal(format!("the tensors plugin answered `{}`, not an .npz", output.content_type)));
    }
    let arrays = tensorgate_npy::parse_npz(&output.payload).map_err(|e| internal(format!("reply: {e}")))?;
    arrays
        .into_iter()
        .map(|(name, array)| {
            let datatype = Datatype::from_descr(&array.descr)
                .ok_or_else(|| internal(format!("output `{name}` has NumPy type {}, which the protocol has no type for", array.descr)))?;
            let data = if array.data.is_empty() { Bytes::new() } else { output.payload.slice_ref(array.data) };
            Ok(Tensor { name, datatype, shape: array.shape, data: Data::Raw(data), params: Params::new() })
        })
        .collect()
}

fn bytes_outputs(output: &ItemOutput) -> Vec<Tensor> {
    let one = |name: &str, b: Bytes| Tensor {
        name: name.into(),
        datatype: Datatype::Bytes,
        shape: vec![1],
        data: Data::Strings(vec![b]),
        params: Params::new(),
    };
    vec![one(REPLY, output.payload.clone()), one(CONTENT_TYPE, Bytes::from(output.content_type.clone()))]
}

fn names(list: &[model::TensorMeta]) -> String {
    if list.is_empty() {
        return "any named tensors".into();
    }
    list.iter().map(|t| format!("`{}` ({} {:?})", t.name, t.datatype, t.shape)).collect::<Vec<_>>().join(", ")
}

/// The `models` list, asked for again when older than asked, and the
/// descriptions of its ready versions.
#[derive(Default)]
struct Book {
    now: Mutex<Option<Snapshot>>,
    refresh: tokio::sync::Mutex<()>,
}

struct Snapshot {
    at: Instant,
    models: Arc<Vec<ModelInfo>>,
    descs: HashMap<(String, u64), Arc<ModelDesc>>,
}

impl Book {
    fn current(&self, max_age: Duration) -> Option<(Arc<Vec<ModelInfo>>, Instant)> {
        let now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        now.as_ref().filter(|s| s.at.elapsed() <= max_age && !max_age.is_zero()).map(|s| (s.models.clone(), s.at))
    }

    /// The list, at most `max_age` old (zero: asked for now).
    async fn list(&self, management: &dyn Management, max_age: Duration) -> Arc<Vec<ModelInfo>> {
        if let Some((models, _)) = self.current(max_age) {
            return models;
        }
        let asked = Instant::now();
        let _one = self.refresh.lock().await;
        // Someone else asked while this call waited.
        if let Some(s) = self.now.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            if s.at >= asked {
                return s.models.clone();
            }
        }
        let models = match management.manage(RequestHeader::Models(AdminHeader::default()), Vec::new()).await {
            Ok(m) => Arc::new(m.reply.models),
            Err(e) => {
                tracing::warn!("models for the inference protocol: {}", e.message);
                Arc::new(Vec::new())
            }
        };
        let descs = models
            .iter()
            .filter(|m| m.state == ModelState::Ready.as_str())
            .map(|m| ((m.name.clone(), m.version), Arc::new(ModelDesc::of(m))))
            .collect();
        *self.now.lock().unwrap_or_else(|p| p.into_inner()) = Some(Snapshot { at: Instant::now(), models: models.clone(), descs });
        models
    }

    /// The description of a routed version.
    async fn desc(&self, management: &dyn Management, routed: &Routed) -> Result<Arc<ModelDesc>, OipError> {
        let key = (routed.model.clone(), routed.version);
        let cached = |book: &Book, max_age: Duration| {
            let now = book.now.lock().unwrap_or_else(|p| p.into_inner());
            now.as_ref().filter(|s| s.at.elapsed() <= max_age).and_then(|s| s.descs.get(&key).cloned())
        };
        if let Some(d) = cached(self, BOOK_MAX_AGE) {
            return Ok(d);
        }
        self.list(management, Duration::ZERO).await;
        cached(self, Duration::MAX)
            .ok_or_else(|| OipError::not_found(format!("version {} of model `{}` is not serving", routed.version, routed.model)))
    }

    /// Drops the list (after a change to the repository).
    fn forget(&self) {
        *self.now.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

#[cfg(test)]
mod tests;
