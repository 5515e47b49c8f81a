//! The Open Inference Protocol over HTTP/REST (KServe v2 with Triton's
//! extensions): a thin [`axum`] server whose one handler maps a path to an
//! [`Oip`] call; `codec.rs` reads and writes the infer bodies.

pub mod codec;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, Method, Request, Response, StatusCode};
use bytes::Bytes;
use serde_json::{json, Value};

use crate::front::oip::{Caller, Oip, OipError, EXTENSIONS};
use crate::request::ItemRunner;
use crate::front::listen::{bind, Acceptor, PeerInfo, Serving};
use crate::StartError;
use tensorgate_protocol::{ErrorCode, Role};

/// The header that says how much of an infer body is JSON (Triton's binary data extension).
pub const HEADER_LEN: &str = "inference-header-content-length";

/// The status page (`GET /status`): HTML and JS polling `GET /v2/tensorgate/status`.
const STATUS_PAGE: &str = include_str!("status.html");

/// Binds `listen` and serves the protocol's HTTP endpoints. Must run inside
/// a tokio runtime. With `tls`, HTTPS (client certificates as its verifier says).
pub fn serve<R: ItemRunner + 'static>(
        listen: SocketAddr,
        oip: Arc<Oip<R>>,
        access: crate::auth::AccessPolicy,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Result<Serving, StartError> {
        let listener = bind(listen)?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: listen, source })?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let acceptor = Acceptor::new(listener, tls).map_err(|source| StartError::Bind { addr: listen, source })?;
        let state = Arc::new(HttpState { oip, access });
        let app = axum::Router::new().fallback(handle::<R>).with_state(state);
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let serve = axum::serve(acceptor, app.into_make_service_with_connect_info::<PeerInfo>())
                .with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                });
            if let Err(e) = serve.await {
                tracing::warn!("HTTP front stopped: {e}");
            }
        });
        tracing::info!(%addr, "Open Inference Protocol over HTTP at {scheme}://{addr}/v2");
        Ok(Serving::new(addr, stop, task))
}

struct HttpState<R: ItemRunner> {
    oip: Arc<Oip<R>>,
    access: crate::auth::AccessPolicy,
}

async fn handle<R: ItemRunner + 'static>(
    State(state): State<Arc<HttpState<R>>>,
    ConnectInfo(peer): ConnectInfo<PeerInfo>,
    request: Request<Body>,
) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let caller = Caller {
        peer: state.access.connection(peer.remote, peer.cert.as_deref()),
        token: bearer(&parts.headers),
        protocol: "http",
    };
    let path = parts.uri.path().to_string();
    match route(&state.oip, &caller, &parts.method, &path, &parts.headers, body).await {
        Ok(r) => r,
        Err(e) => error(&e),
    }
}

/// The token of an `Authorization: Bearer TOKEN` header.
fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string())
}

fn error(e: &OipError) -> Response<Body> {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, &json!({ "error": e.message }))
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap_or_default()
}

fn empty(status: StatusCode) -> Response<Body> {
    Response::builder().status(status).body(Body::empty()).unwrap_or_default()
}

async fn read_body(body: Body, limit: u64) -> Result<Bytes, OipError> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e).is_some_and(|s| s.to_string().contains("length limit"))
            || e.to_string().contains("length limit");
        if too_large {
            OipError::new(ErrorCode::LimitExceeded, format!("the request body is over max_frame_bytes = {limit}"))
        } else {
            OipError::invalid(format!("reading the request body: {e}"))
        }
    })
}

async fn route<R: ItemRunner + 'static>(
    oip: &Oip<R>,
    caller: &Caller,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response<Body>, OipError> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let get = method == Method::GET;
    let post = method == Method::POST;
    let wrong_method = || OipError::invalid(format!("{method} is not allowed on {path}"));
    match segments.as_slice() {
        ["v2", "health", "live"] if get => Ok(empty(StatusCode::OK)),
        ["v2", "health", "ready"] if get => {
            Ok(empty(if oip.server_ready().await { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }))
        }
        ["v2"] if get => Ok(json_response(
            StatusCode::OK,
            &json!({"name": "tensorgate", "version": env!("CARGO_PKG_VERSION"), "extensions": EXTENSIONS}),
        )),
        ["v2", "models", "stats"] if get => stats(oip, caller, "", "").await,
        // The status page (static, no data in it) and the JSON it polls.
        ["status"] if get => Ok(Response::builder()
            .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
            .body(Body::from(STATUS_PAGE))
            .unwrap_or_default()),
        ["v2", "tensorgate", "status"] if get => {
            let s = oip.status(caller).await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({"role": s.role, "models": s.models, "workers": s.workers, "load_errors": s.load_errors}),
            ))
        }
        ["v2", "models", model, rest @ ..] => {
            let (version, tail) = match rest {
                ["versions", v, tail @ ..] => (*v, tail),
                tail => ("", tail),
            };
            match tail {
                [] if get => {
                    let m = oip.model_metadata(caller, model, version).await?;
                    let tensors = |list: &[crate::front::oip::model::TensorMeta]| {
                        list.iter().map(|t| json!({"name": t.name, "datatype": t.datatype.name(), "shape": t.shape})).collect::<Vec<_>>()
                    };
                    Ok(json_response(
                        StatusCode::OK,
                        &json!({"name": m.name, "versions": m.versions, "platform": m.desc.platform,
                                "inputs": tensors(&m.desc.inputs), "outputs": tensors(&m.desc.outputs)}),
                    ))
                }
                ["ready"] if get => {
                    let ready = oip.model_ready(caller, model, version).await?;
                    Ok(empty(if ready { StatusCode::OK } else { StatusCode::BAD_REQUEST }))
                }
                ["config"] if get => Ok(json_response(StatusCode::OK, &oip.model_config(caller, model, version).await?.config_json())),
                ["stats"] if get => stats(oip, caller, model, version).await,
                ["infer"] if post => infer(oip, caller, model, version, headers, body).await,
                [] | ["ready"] | ["config"] | ["stats"] | ["infer"] => Err(wrong_method()),
                _ => Err(OipError::not_found(format!("no endpoint {path}"))),
            }
        }
        ["v2", "repository", "index"] if post => {
            let body = read_body(body, 1 << 20).await?;
            let ready = match serde_json::from_slice::<Value>(&body) {
                _ if body.is_empty() => false,
                Ok(v) => v.get("ready").and_then(Value::as_bool).unwrap_or(false),
                Err(e) => return Err(OipError::invalid(format!("request JSON: {e}"))),
            };
            let index = oip.repository_index(caller, ready).await?;
            let list: Vec<Value> = index
                .iter()
                .map(|e| {
                    let mut v = json!({"name": e.name, "version": e.version, "state": e.state});
                    if !e.reason.is_empty() {
                        v["reason"] = json!(e.reason);
                    }
                    v
                })
                .collect();
            Ok(json_response(StatusCode::OK, &Value::Array(list)))
        }
        ["v2", "repository", "models", model, op @ ("load" | "unload")] if post => {
            let body = read_body(body, 1 << 20).await?;
            let has_params = match serde_json::from_slice::<Value>(&body) {
                _ if body.is_empty() => false,
                Ok(v) => v.get("parameters").and_then(Value::as_object).is_some_and(|p| {
                    // Triton's clients send `unload_dependents` on unload; it changes nothing here.
                    p.keys().any(|k| k != "unload_dependents")
                }),
                Err(e) => return Err(OipError::invalid(format!("request JSON: {e}"))),
            };
            if *op == "load" {
                oip.load(caller, model, has_params).await?;
            } else {
                oip.unload(caller, model).await?;
            }
            Ok(empty(StatusCode::OK))
        }
        ["v2", area @ ("systemsharedmemory" | "cudasharedmemory"), ..] => Err(OipError::new(
            ErrorCode::Unsupported,
            format!("{area} is not supported: tensors travel in the request (binary data extension); see docs/oip.md"),
        )),
        ["v2", area @ ("trace" | "logging"), ..] => {
            Err(OipError::new(ErrorCode::Unsupported, format!("{area} settings are not supported; see docs/oip.md")))
        }
        _ => Err(OipError::not_found(format!("no endpoint {method} {path}"))),
    }
}

async fn stats<R: ItemRunner + 'static>(oip: &Oip<R>, caller: &Caller, model: &str, version: &str) -> Result<Response<Body>, OipError> {
    let list = oip.statistics(caller, model, version).await?;
    let dur = |count: u64, ns: u64| json!({"count": count, "ns": ns});
    let stats: Vec<Value> = list
        .iter()
        .map(|s| {
            json!({
                "name": s.name, "version": s.version, "last_inference": 0,
                "inference_count": s.inference_count, "execution_count": s.execution_count,
                "inference_stats": {
                    "success": dur(s.success, 0), "fail": dur(s.fail, 0), "queue": dur(0, 0),
                    "compute_input": dur(0, 0), "compute_infer": dur(s.execution_count, s.compute_infer_ns),
                    "compute_output": dur(0, 0), "cache_hit": dur(0, 0), "cache_miss": dur(0, 0),
                },
                "batch_stats": [],
            })
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "model_stats": stats })))
}

async fn infer<R: ItemRunner + 'static>(
    oip: &Oip<R>,
    caller: &Caller,
    model: &str,
    version: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response<Body>, OipError> {
    // Authorise before reading a large body.
    oip.authorize(Role::Predict, "infer", caller)?;
    if let Some(enc) = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()) {
        if !enc.eq_ignore_ascii_case("identity") {
            return Err(OipError::new(ErrorCode::Unsupported, format!("Content-Encoding `{enc}` is not supported; send the body uncompressed")));
        }
    }
    let limit = oip.limits().max_frame_bytes;
    let body = read_body(body, limit).await?;
    let header_len = match headers.get(HEADER_LEN) {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| OipError::invalid("header Inference-Header-Content-Length is not text"))?),
    };
    let req = codec::parse_infer(model, version, body, header_len)?;
    let binary_default = matches!(req.params.get("binary_data_output"), Some(crate::front::oip::tensor::Param::Bool(true)));
    let requested = req.outputs.clone();
    let resp = oip.infer(caller, req, None).await?;
    let (body, json_len) = codec::write_infer(&resp, &requested, binary_default)?;
    let mut r = Response::builder().status(StatusCode::OK);
    r = match json_len {
        Some(n) => r.header(header::CONTENT_TYPE, "application/octet-stream").header(HEADER_LEN, n.to_string()),
        None => r.header(header::CONTENT_TYPE, "application/json"),
    };
    r.body(Body::from(body)).map_err(|e| OipError::new(ErrorCode::Internal, e.to_string()))
}
