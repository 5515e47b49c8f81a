//! Every front a host or gateway serves, started and stopped together.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::FrontConfig;
use crate::front::oip::Oip;
use crate::front::quic::Front;
use crate::manage::Management;
use crate::request::ItemRunner;
use crate::front::listen::{tls_config, Serving};
use crate::tls::Identity;
use crate::StartError;

/// The QUIC front, and the HTTP and gRPC fronts of the Open Inference
/// Protocol where configured, over one runner and one management.
pub struct Fronts {
    quic: Front,
    http: Option<Serving>,
    grpc: Option<Serving>,
}

impl Fronts {
    /// Starts the fronts `config` asks for. Must run inside a tokio runtime.
    pub fn start<R: ItemRunner + 'static>(config: FrontConfig, runner: Arc<R>, management: Arc<dyn Management>) -> Result<Fronts, StartError> {
        let oip = (config.http_listen.is_some() || config.grpc_listen.is_some())
            .then(|| Arc::new(Oip::new(runner.clone(), management.clone(), config.access.clone(), config.limits)));
        let identity = match oip.is_some() && config.oip_tls {
            true => Some(oip_identity(&config)?),
            false => None,
        };
        let tls = |alpn: &[&[u8]]| identity.as_ref().map(|id| tls_config(id, &config.access, alpn)).transpose();
        let http = match (config.http_listen, &oip) {
            (Some(addr), Some(oip)) => Some(crate::front::http::serve(addr, oip.clone(), config.access.clone(), tls(&[b"http/1.1"])?)?),
            _ => None,
        };
        let grpc = match (config.grpc_listen, &oip) {
            (Some(addr), Some(oip)) => {
                Some(crate::front::grpc::serve(addr, oip.clone(), config.access.clone(), config.max_items_in_flight, config.max_streams_per_connection, tls(&[b"h2"])?)?)
            }
            _ => None,
        };
        let quic = Front::start(config, runner, management)?;
        Ok(Fronts { quic, http, grpc })
    }

    /// The QUIC front's UDP address.
    pub fn addr(&self) -> SocketAddr {
        self.quic.addr()
    }

    /// The HTTP front's address, when it serves.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(Serving::addr)
    }

    /// The gRPC front's address, when it serves.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc.as_ref().map(Serving::addr)
    }

    /// SHA-256 fingerprint of the certificate (hex).
    pub fn fingerprint(&self) -> &str {
        self.quic.fingerprint()
    }

    /// Stops every front.
    pub async fn shutdown(self) {
        if let Some(h) = self.http {
            h.shutdown().await;
        }
        if let Some(g) = self.grpc {
            g.shutdown().await;
        }
        self.quic.shutdown().await;
    }
}

/// The host's TLS identity, with its certificate also written as
/// `STATE_DIR/tls/cert.pem` for the protocol's clients (their root certificate).
fn oip_identity(config: &FrontConfig) -> Result<Identity, StartError> {
    let dir = config.state_dir.join("tls");
    let identity = Identity::load_or_create(&dir, &config.tls_names)?;
    let pem = pem::encode(&pem::Pem::new("CERTIFICATE", identity.cert.to_vec()));
    let path = dir.join("cert.pem");
    crate::write_whole(&path, &pem).map_err(|e| StartError::TlsConfig(format!("writing {}: {e}", path.display())))?;
    Ok(identity)
}
