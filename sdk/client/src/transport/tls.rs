//! Client-side TLS: pin the host's certificate fingerprint, or verify
//! against a CA file.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::error::ClientError;

/// How the client decides to trust the host's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Pin the SHA-256 fingerprint (hex) the host printed at start.
    Fingerprint(String),
    /// Verify the certificate chain against the CA certificates in this PEM file.
    CaFile(PathBuf),
}

/// A client certificate and its key (PEM files), for hosts that check
/// client certificates (mutual TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Certificate chain, end-entity first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The rustls configuration for `trust`, with our ALPN, presenting
/// `identity` as a client certificate when given.
pub(crate) fn client_config(trust: &Trust, identity: Option<&Identity>) -> Result<rustls::ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ClientError::Tls(e.to_string()))?;
    let mut config = match trust {
        Trust::Fingerprint(hex_fp) => {
            let pinned = parse_fingerprint(hex_fp)?;
            let builder = builder.dangerous().with_custom_certificate_verifier(Arc::new(PinnedCert { pinned, provider }));
            match identity {
                Some(id) => {
                    let (certs, key) = read_identity(id)?;
                    builder.with_client_auth_cert(certs, key).map_err(|e| ClientError::Tls(e.to_string()))?
                }
                None => builder.with_no_client_auth(),
            }
        }
        Trust::CaFile(path) => {
            let pem = std::fs::read(path).map_err(|e| ClientError::Tls(format!("{}: {e}", path.display())))?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| ClientError::Tls(format!("{}: {e}", path.display())))?;
                roots.add(cert).map_err(|e| ClientError::Tls(format!("{}: {e}", path.display())))?;
            }
            if roots.is_empty() {
                return Err(ClientError::Tls(format!("{}: no certificates found", path.display())));
            }
            let builder = builder.with_root_certificates(roots);
            match identity {
                Some(id) => {
                    let (certs, key) = read_identity(id)?;
                    builder.with_client_auth_cert(certs, key).map_err(|e| ClientError::Tls(e.to_string()))?
                }
                None => builder.with_no_client_auth(),
            }
        }
    };
    config.alpn_protocols = vec![tensorgate_protocol::ALPN.to_vec()];
    Ok(config)
}

type CertsAndKey = (Vec<CertificateDer<'static>>, rustls::pki_types::PrivateKeyDer<'static>);

fn read_identity(id: &Identity) -> Result<CertsAndKey, ClientError> {
    let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| ClientError::Tls(format!("{}: {e}", p.display())));
    let pem = read(&id.cert)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ClientError::Tls(format!("{}: {e}", id.cert.display())))?;
    if certs.is_empty() {
        return Err(ClientError::Tls(format!("{}: no certificates found", id.cert.display())));
    }
    let pem = read(&id.key)?;
    let key = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| ClientError::Tls(format!("{}: {e}", id.key.display())))?
        .ok_or_else(|| ClientError::Tls(format!("{}: no private key found", id.key.display())))?;
    Ok((certs, key))
}

fn parse_fingerprint(s: &str) -> Result<[u8; 32], ClientError> {
    let cleaned: String = s.trim().chars().filter(|c| *c != ':').collect();
    let bytes = hex::decode(&cleaned)
        .map_err(|e| ClientError::Tls(format!("fingerprint `{s}` is not hex: {e}")))?;
    bytes
        .try_into()
        .map_err(|_| ClientError::Tls(format!("fingerprint `{s}` is not 32 bytes (SHA-256)")))
}

/// Accepts exactly the certificate whose SHA-256 is pinned, and still checks
/// that the handshake is signed by its key.
#[derive(Debug)]
struct PinnedCert {
    pinned: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if got == self.pinned {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "certificate fingerprint mismatch: pinned {}, host presented {}",
                hex::encode(self.pinned),
                hex::encode(got)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
