//! The Open Inference Protocol over gRPC: `GRPCInferenceService` of
//! `proto/inference.proto` on [`tonic`], each RPC translated to and from
//! an [`Oip`] call (raw contents and typed contents both read; outputs
//! always sent as raw contents, as Triton does).

pub mod proto;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::auth::AccessPolicy;
use crate::front::oip::tensor::{raw_bytes, split_strings, Data, Datatype, Param, Params, Tensor};
use crate::front::oip::{Caller, InferRequest, InferResponse, Oip, OipError, RequestedOutput, EXTENSIONS};
use crate::request::ItemRunner;
use crate::front::listen::{bind, Acceptor, PeerInfo, Serving};
use crate::StartError;
use proto::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use tensorgate_protocol::ErrorCode;

/// Binds `listen` and serves the protocol's gRPC service (over TLS with
/// `tls`; ALPN `h2`). Must run inside a tokio runtime.
pub fn serve<R: ItemRunner + 'static>(
        listen: SocketAddr,
        oip: Arc<Oip<R>>,
        access: AccessPolicy,
        max_in_flight: usize,
        max_streams_per_connection: u32,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Result<Serving, StartError> {
        let listener = bind(listen)?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: listen, source })?;
        let acceptor = Acceptor::new(listener, tls).map_err(|source| StartError::Bind { addr: listen, source })?;
        let max = usize::try_from(oip.limits().max_frame_bytes).unwrap_or(usize::MAX);
        let service = GrpcInferenceServiceServer::new(Service { oip, access, max_in_flight: max_in_flight.max(1) })
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let incoming = acceptor.into_stream();
        let task = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .tcp_nodelay(true)
                // The QUIC front's per-connection request limit, as HTTP/2 streams.
                .max_concurrent_streams(Some(max_streams_per_connection))
                // Flow-control windows sized to the path (BDP estimate): a 33 MB
                // tensor is not sent 64 KiB per round trip.
                .http2_adaptive_window(Some(true))
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = served {
                tracing::warn!("gRPC front stopped: {e}");
            }
        });
        tracing::info!(%addr, "Open Inference Protocol over gRPC at {addr}");
        Ok(Serving::new(addr, stop, task))
}

struct Service<R: ItemRunner> {
    oip: Arc<Oip<R>>,
    access: AccessPolicy,
    max_in_flight: usize,
}

/// The gRPC status of an error.
pub fn status(e: OipError) -> Status {
    use tonic::Code;
    let code = match e.code {
        ErrorCode::BadRequest | ErrorCode::PluginError | ErrorCode::UnsupportedContentType => Code::InvalidArgument,
        ErrorCode::UnknownModel => Code::NotFound,
        ErrorCode::Forbidden => Code::PermissionDenied,
        ErrorCode::Conflict => Code::AlreadyExists,
        ErrorCode::LimitExceeded => Code::ResourceExhausted,
        ErrorCode::Unsupported => Code::Unimplemented,
        ErrorCode::Busy => Code::Unavailable,
        ErrorCode::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorCode::LoadFailed => Code::FailedPrecondition,
        ErrorCode::PluginFailed | ErrorCode::ModelError | ErrorCode::Internal | ErrorCode::Unknown => Code::Internal,
    };
    Status::new(code, e.message)
}

impl<R: ItemRunner> Service<R> {
    fn caller<T>(&self, request: &Request<T>) -> Caller {
        let peer = request.extensions().get::<PeerInfo>();
        let remote = peer.map(|p| p.remote).unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let cert = peer.and_then(|p| p.cert.as_deref());
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim().to_string());
        Caller { peer: self.access.connection(remote, cert), token, protocol: "grpc" }
    }
}

/// The `grpc-timeout` header's duration (`<digits><unit>`, units `H M S m u n`).
pub fn grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn param_of(p: &proto::InferParameter) -> Option<Param> {
    use proto::infer_parameter::ParameterChoice as C;
    Some(match p.parameter_choice.as_ref()? {
        C::BoolParam(b) => Param::Bool(*b),
        C::Int64Param(i) => Param::Int(*i),
        C::StringParam(s) => Param::Str(s.clone()),
        C::DoubleParam(d) => Param::Double(*d),
        C::Uint64Param(u) => Param::Uint(*u),
    })
}

fn params_of(map: &HashMap<String, proto::InferParameter>) -> Params {
    map.iter().filter_map(|(k, v)| Some((k.clone(), param_of(v)?))).collect()
}

fn param_to(p: &Param) -> proto::InferParameter {
    use proto::infer_parameter::ParameterChoice as C;
    let choice = match p {
        Param::Bool(b) => C::BoolParam(*b),
        Param::Int(i) => C::Int64Param(*i),
        Param::Uint(u) => C::Uint64Param(*u),
        Param::Double(d) => C::DoubleParam(*d),
        Param::Str(s) => C::StringParam(s.clone()),
    };
    proto::InferParameter { parameter_choice: Some(choice) }
}

/// A `ModelInferRequest` as the protocol core's request.
pub fn infer_request(r: proto::ModelInferRequest) -> Result<InferRequest, OipError> {
    let raw = r.raw_input_contents;
    if !raw.is_empty() && raw.len() != r.inputs.len() {
        return Err(OipError::invalid(format!(
            "raw_input_contents has {} entries for {} inputs: it needs one per input, in order",
            raw.len(),
            r.inputs.len()
        )));
    }
    let mut inputs = Vec::with_capacity(r.inputs.len());
    for (i, t) in r.inputs.into_iter().enumerate() {
        let at = format!("input `{}`", t.name);
        let datatype = Datatype::parse(&t.datatype).ok_or_else(|| OipError::invalid(format!("{at}: unknown datatype `{}`", t.datatype)))?;
        let shape = t
            .shape
            .iter()
            .map(|&d| u64::try_from(d).map_err(|_| OipError::invalid(format!("{at}: shape {:?} has a negative dimension", t.shape))))
            .collect::<Result<Vec<u64>, _>>()?;
        let data = match raw.get(i) {
            Some(bytes) => {
                if t.contents.is_some() {
                    return Err(OipError::invalid(format!("{at}: has both contents and raw_input_contents")));
                }
                match datatype {
                    Datatype::Bytes => Data::Strings(split_strings(&t.name, bytes)?),
                    _ => Data::Raw(bytes.clone()),
                }
            }
            None => contents(&at, datatype, t.contents.unwrap_or_default())?,
        };
        inputs.push(Tensor { name: t.name, datatype, shape, data, params: params_of(&t.parameters) });
    }
    let outputs = r.outputs.into_iter().map(|o| RequestedOutput { params: params_of(&o.parameters), name: o.name }).collect();
    Ok(InferRequest { model: r.model_name, version: r.model_version, id: r.id, params: params_of(&r.parameters), inputs, outputs })
}

/// Typed contents as the tensor's data.
fn contents(at: &str, datatype: Datatype, c: proto::InferTensorContents) -> Result<Data, OipError> {
    fn le<T, const N: usize>(values: &[T], f: impl Fn(&T) -> [u8; N]) -> Data {
        let mut out = Vec::with_capacity(values.len() * N);
        for v in values {
            out.extend_from_slice(&f(v));
        }
        Data::Raw(Bytes::from(out))
    }
    let narrow = |what: &str| OipError::invalid(format!("{at}: a value does not fit {what}"));
    Ok(match datatype {
        Datatype::Bool => Data::Raw(Bytes::from(c.bool_contents.iter().map(|&b| b as u8).collect::<Vec<u8>>())),
        Datatype::Int8 => le(&c.int_contents.iter().map(|&v| i8::try_from(v)).collect::<Result<Vec<_>, _>>().map_err(|_| narrow("INT8"))?, |v| v.to_le_bytes()),
        Datatype::Int16 => le(&c.int_contents.iter().map(|&v| i16::try_from(v)).collect::<Result<Vec<_>, _>>().map_err(|_| narrow("INT16"))?, |v| v.to_le_bytes()),
        Datatype::Int32 => le(&c.int_contents, |v| v.to_le_bytes()),
        Datatype::Int64 => le(&c.int64_contents, |v| v.to_le_bytes()),
        Datatype::Uint8 => le(&c.uint_contents.iter().map(|&v| u8::try_from(v)).collect::<Result<Vec<_>, _>>().map_err(|_| narrow("UINT8"))?, |v| v.to_le_bytes()),
        Datatype::Uint16 => le(&c.uint_contents.iter().map(|&v| u16::try_from(v)).collect::<Result<Vec<_>, _>>().map_err(|_| narrow("UINT16"))?, |v| v.to_le_bytes()),
        Datatype::Uint32 => le(&c.uint_contents, |v| v.to_le_bytes()),
        Datatype::Uint64 => le(&c.uint64_contents, |v| v.to_le_bytes()),
        Datatype::Fp32 => le(&c.fp32_contents, |v| v.to_le_bytes()),
        Datatype::Fp64 => le(&c.fp64_contents, |v| v.to_le_bytes()),
        Datatype::Bytes => Data::Strings(c.bytes_contents.into_iter().map(Bytes::from).collect()),
        Datatype::Fp16 | Datatype::Bf16 => {
            return Err(OipError::invalid(format!("{at}: {datatype} data must be sent in raw_input_contents")))
        }
    })
}

/// The protocol core's response as a `ModelInferResponse` (outputs in raw contents).
pub fn infer_response(r: InferResponse) -> proto::ModelInferResponse {
    let mut outputs = Vec::with_capacity(r.outputs.len());
    let mut raw = Vec::with_capacity(r.outputs.len());
    for t in r.outputs {
        raw.push(raw_bytes(&t.data));
        outputs.push(proto::model_infer_response::InferOutputTensor {
            name: t.name,
            datatype: t.datatype.name().into(),
            shape: t.shape.iter().map(|&d| d as i64).collect(),
            parameters: t.params.iter().map(|(k, v)| (k.clone(), param_to(v))).collect(),
            contents: None,
        });
    }
    proto::ModelInferResponse {
        model_name: r.model,
        model_version: r.version,
        id: r.id,
        parameters: r.params.iter().map(|(k, v)| (k.clone(), param_to(v))).collect(),
        outputs,
        raw_output_contents: raw,
    }
}

fn deadline<T>(request: &Request<T>) -> Option<Duration> {
    request.metadata().get("grpc-timeout").and_then(|v| v.to_str().ok()).and_then(grpc_timeout)
}

type Reply<T> = Result<Response<T>, Status>;

fn unsupported<T>(what: &str) -> Reply<T> {
    Err(Status::unimplemented(format!(
        "{what} is not supported: tensors travel in the request (raw contents); see docs/oip.md"
    )))
}

#[tonic::async_trait]
impl<R: ItemRunner + 'static> GrpcInferenceService for Service<R> {
    async fn server_live(&self, _: Request<proto::ServerLiveRequest>) -> Reply<proto::ServerLiveResponse> {
        Ok(Response::new(proto::ServerLiveResponse { live: true }))
    }

    async fn server_ready(&self, _: Request<proto::ServerReadyRequest>) -> Reply<proto::ServerReadyResponse> {
        Ok(Response::new(proto::ServerReadyResponse { ready: self.oip.server_ready().await }))
    }

    async fn model_ready(&self, request: Request<proto::ModelReadyRequest>) -> Reply<proto::ModelReadyResponse> {
        let caller = self.caller(&request);
        let r = request.into_inner();
        let ready = self.oip.model_ready(&caller, &r.name, &r.version).await.map_err(status)?;
        Ok(Response::new(proto::ModelReadyResponse { ready }))
    }

    async fn server_metadata(&self, _: Request<proto::ServerMetadataRequest>) -> Reply<proto::ServerMetadataResponse> {
        Ok(Response::new(proto::ServerMetadataResponse {
            name: "tensorgate".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: EXTENSIONS.iter().map(|s| s.to_string()).collect(),
        }))
    }

    async fn model_metadata(&self, request: Request<proto::ModelMetadataRequest>) -> Reply<proto::ModelMetadataResponse> {
        let caller = self.caller(&request);
        let r = request.into_inner();
        let m = self.oip.model_metadata(&caller, &r.name, &r.version).await.map_err(status)?;
        let tensors = |list: &[crate::front::oip::model::TensorMeta]| {
            list.iter()
                .map(|t| proto::model_metadata_response::TensorMetadata {
                    name: t.name.clone(),
                    datatype: t.datatype.name().into(),
                    shape: t.shape.clone(),
                })
                .collect()
        };
        Ok(Response::new(proto::ModelMetadataResponse {
            name: m.name,
            versions: m.versions,
            platform: m.desc.platform.into(),
            inputs: tensors(&m.desc.inputs),
            outputs: tensors(&m.desc.outputs),
        }))
    }

    async fn model_infer(&self, request: Request<proto::ModelInferRequest>) -> Reply<proto::ModelInferResponse> {
        let caller = self.caller(&request);
        let deadline = deadline(&request);
        let req = infer_request(request.into_inner()).map_err(status)?;
        let resp = self.oip.infer(&caller, req, deadline).await.map_err(status)?;
        Ok(Response::new(infer_response(resp)))
    }

    type ModelStreamInferStream = Pin<Box<dyn Stream<Item = Result<proto::ModelStreamInferResponse, Status>> + Send + 'static>>;

    async fn model_stream_infer(
        &self,
        request: Request<tonic::Streaming<proto::ModelInferRequest>>,
    ) -> Reply<Self::ModelStreamInferStream> {
        let caller = self.caller(&request);
        let mut inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<proto::ModelStreamInferResponse, Status>>(self.max_in_flight);
        let oip = self.oip.clone();
        let slots = Arc::new(tokio::sync::Semaphore::new(self.max_in_flight));
        tokio::spawn(async move {
            let mut running = tokio::task::JoinSet::new();
            loop {
                // Read no further while max_items_in_flight requests of this stream run.
                let slot = tokio::select! {
                    s = slots.clone().acquire_owned() => match s { Ok(s) => s, Err(_) => break },
                    _ = tx.closed() => return,
                };
                let next = tokio::select! {
                    n = inbound.next() => n,
                    _ = tx.closed() => return,
                    // Reap finished tasks so the set does not grow.
                    Some(_) = running.join_next(), if !running.is_empty() => { drop(slot); continue; }
                };
                let message = match next {
                    None => break,
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        tracing::debug!("stream infer: the client's stream failed: {e}");
                        break;
                    }
                };
                let (oip, caller, tx) = (oip.clone(), caller.clone(), tx.clone());
                running.spawn(async move {
                    let (model, version, id) = (message.model_name.clone(), message.model_version.clone(), message.id.clone());
                    let result = match infer_request(message) {
                        Ok(req) => oip.infer(&caller, req, None).await,
                        Err(e) => Err(e),
                    };
                    let reply = match result {
                        Ok(resp) => proto::ModelStreamInferResponse { error_message: String::new(), infer_response: Some(infer_response(resp)) },
                        Err(e) => proto::ModelStreamInferResponse {
                            error_message: e.message,
                            infer_response: Some(proto::ModelInferResponse { model_name: model, model_version: version, id, ..Default::default() }),
                        },
                    };
                    let _ = tx.send(Ok(reply)).await;
                    drop(slot);
                });
            }
            // The client finished sending: answer what runs, then end the stream.
            while running.join_next().await.is_some() {}
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn model_config(&self, request: Request<proto::ModelConfigRequest>) -> Reply<proto::ModelConfigResponse> {
        let caller = self.caller(&request);
        let r = request.into_inner();
        let d = self.oip.model_config(&caller, &r.name, &r.version).await.map_err(status)?;
        Ok(Response::new(proto::ModelConfigResponse { config: Some(model_config(&d)) }))
    }

    async fn model_statistics(&self, request: Request<proto::ModelStatisticsRequest>) -> Reply<proto::ModelStatisticsResponse> {
        let caller = self.caller(&request);
        let r = request.into_inner();
        let list = self.oip.statistics(&caller, &r.name, &r.version).await.map_err(status)?;
        let dur = |count: u64, ns: u64| Some(proto::StatisticDuration { count, ns });
        let model_stats = list
            .into_iter()
            .map(|s| proto::ModelStatistics {
                name: s.name,
                version: s.version,
                last_inference: 0,
                inference_count: s.inference_count,
                execution_count: s.execution_count,
                inference_stats: Some(proto::InferStatistics {
                    success: dur(s.success, 0),
                    fail: dur(s.fail, 0),
                    queue: dur(0, 0),
                    compute_input: dur(0, 0),
                    compute_infer: dur(s.execution_count, s.compute_infer_ns),
                    compute_output: dur(0, 0),
                    cache_hit: dur(0, 0),
                    cache_miss: dur(0, 0),
                }),
                batch_stats: Vec::new(),
            })
            .collect();
        Ok(Response::new(proto::ModelStatisticsResponse { model_stats }))
    }

    async fn repository_index(&self, request: Request<proto::RepositoryIndexRequest>) -> Reply<proto::RepositoryIndexResponse> {
        let caller = self.caller(&request);
        let r = request.into_inner();
        let list = self.oip.repository_index(&caller, r.ready).await.map_err(status)?;
        let models = list
            .into_iter()
            .map(|e| proto::repository_index_response::ModelIndex { name: e.name, version: e.version, state: e.state, reason: e.reason })
            .collect();
        Ok(Response::new(proto::RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(&self, request: Request<proto::RepositoryModelLoadRequest>) -> Reply<proto::RepositoryModelLoadResponse> {
        let caller = self.caller(&request);
        let r = request.into_inner();
        self.oip.load(&caller, &r.model_name, !r.parameters.is_empty()).await.map_err(status)?;
        Ok(Response::new(proto::RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(&self, request: Request<proto::RepositoryModelUnloadRequest>) -> Reply<proto::RepositoryModelUnloadResponse> {
        let caller = self.caller(&request);
        let r = request.into_inner();
        self.oip.unload(&caller, &r.model_name).await.map_err(status)?;
        Ok(Response::new(proto::RepositoryModelUnloadResponse {}))
    }

    async fn system_shared_memory_status(&self, _: Request<proto::SystemSharedMemoryStatusRequest>) -> Reply<proto::SystemSharedMemoryStatusResponse> {
        unsupported("system shared memory")
    }
    async fn system_shared_memory_register(&self, _: Request<proto::SystemSharedMemoryRegisterRequest>) -> Reply<proto::SystemSharedMemoryRegisterResponse> {
        unsupported("system shared memory")
    }
    async fn system_shared_memory_unregister(&self, _: Request<proto::SystemSharedMemoryUnregisterRequest>) -> Reply<proto::SystemSharedMemoryUnregisterResponse> {
        unsupported("system shared memory")
    }
    async fn cuda_shared_memory_status(&self, _: Request<proto::CudaSharedMemoryStatusRequest>) -> Reply<proto::CudaSharedMemoryStatusResponse> {
        unsupported("CUDA shared memory")
    }
    async fn cuda_shared_memory_register(&self, _: Request<proto::CudaSharedMemoryRegisterRequest>) -> Reply<proto::CudaSharedMemoryRegisterResponse> {
        unsupported("CUDA shared memory")
    }
    async fn cuda_shared_memory_unregister(&self, _: Request<proto::CudaSharedMemoryUnregisterRequest>) -> Reply<proto::CudaSharedMemoryUnregisterResponse> {
        unsupported("CUDA shared memory")
    }
}

fn data_type(d: Datatype) -> i32 {
    use proto::DataType as T;
    (match d {
        Datatype::Bool => T::TypeBool,
        Datatype::Uint8 => T::TypeUint8,
        Datatype::Uint16 => T::TypeUint16,
        Datatype::Uint32 => T::TypeUint32,
        Datatype::Uint64 => T::TypeUint64,
        Datatype::Int8 => T::TypeInt8,
        Datatype::Int16 => T::TypeInt16,
        Datatype::Int32 => T::TypeInt32,
        Datatype::Int64 => T::TypeInt64,
        Datatype::Fp16 => T::TypeFp16,
        Datatype::Bf16 => T::TypeBf16,
        Datatype::Fp32 => T::TypeFp32,
        Datatype::Fp64 => T::TypeFp64,
        Datatype::Bytes => T::TypeString,
    }) as i32
}

/// Triton's `ModelConfig` message of a version (the same content as the HTTP JSON).
fn model_config(d: &crate::front::oip::model::ModelDesc) -> proto::ModelConfig {
    let max_batch_size = d.max_batch_size();
    proto::ModelConfig {
        name: d.name.clone(),
        platform: d.platform.into(),
        backend: d.backend.into(),
        version_policy: Some(proto::ModelVersionPolicy {
            policy_choice: Some(proto::model_version_policy::PolicyChoice::Latest(proto::model_version_policy::Latest { num_versions: 1 })),
        }),
        max_batch_size: i32::try_from(max_batch_size).unwrap_or(i32::MAX),
        input: d
            .inputs
            .iter()
            .map(|t| proto::ModelInput { name: t.name.clone(), data_type: data_type(t.datatype), format: 0, dims: d.dims(t) })
            .collect(),
        output: d
            .outputs
            .iter()
            .map(|t| proto::ModelOutput { name: t.name.clone(), data_type: data_type(t.datatype), dims: d.dims(t), label_filename: String::new() })
            .collect(),
        instance_group: vec![proto::ModelInstanceGroup {
            name: format!("{}_0", d.name),
            count: i32::try_from(d.instances).unwrap_or(i32::MAX),
            gpus: d.gpus(),
            kind: if d.on_gpu() { proto::model_instance_group::Kind::Gpu } else { proto::model_instance_group::Kind::Cpu } as i32,
        }],
        default_model_filename: String::new(),
        scheduling_choice: (max_batch_size > 0).then(|| {
            proto::model_config::SchedulingChoice::DynamicBatching(proto::ModelDynamicBatching {
                preferred_batch_size: Vec::new(),
                max_queue_delay_microseconds: d.max_delay_us,
                preserve_ordering: false,
            })
        }),
        parameters: if d.tensors {
            HashMap::new()
        } else {
            HashMap::from([("content_types".to_string(), proto::ModelParameter { string_value: d.accepts.join(",") })])
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(grpc_timeout("x"), None);
        assert_eq!(grpc_timeout(""), None);
        assert_eq!(grpc_timeout("5q"), None);
    }

    #[test]
    fn typed_and_raw_contents_read_alike() {
        let input = |contents, name: &str| proto::model_infer_request::InferInputTensor {
            name: name.into(),
            datatype: "INT32".into(),
            shape: vec![2],
            parameters: HashMap::new(),
            contents,
        };
        let typed = proto::ModelInferRequest {
            inputs: vec![input(Some(proto::InferTensorContents { int_contents: vec![7, -1], ..Default::default() }), "a")],
            ..Default::default()
        };
        let raw = proto::ModelInferRequest {
            inputs: vec![input(None, "a")],
            raw_input_contents: vec![Bytes::from([7i32.to_le_bytes(), (-1i32).to_le_bytes()].concat())],
            ..Default::default()
        };
        assert_eq!(infer_request(typed).unwrap().inputs, infer_request(raw).unwrap().inputs);
        let mismatched = proto::ModelInferRequest { inputs: vec![input(None, "a"), input(None, "b")], raw_input_contents: vec![Bytes::new()], ..Default::default() };
        assert!(infer_request(mismatched).unwrap_err().message.contains("1 entries for 2 inputs"));
        let negative = proto::ModelInferRequest { inputs: vec![proto::model_infer_request::InferInputTensor { shape: vec![-2], ..input(None, "a") }], ..Default::default() };
        assert!(infer_request(negative).unwrap_err().message.contains("negative"));
    }
}
