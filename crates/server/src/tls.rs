//! The host's TLS identity: a self-signed certificate made on first start and
//! kept in the state directory; clients pin its SHA-256 fingerprint.

use std::path::Path;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

/// Errors reading or creating the TLS identity.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Reading or writing the certificate files failed.
    #[error("TLS identity in {path}: {source}")]
    Io {
        /// File involved.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("generating a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Certificate chain and key the host presents.
pub struct Identity {
    /// The certificate (self-signed: a chain of one).
    pub cert: CertificateDer<'static>,
    /// Its private key.
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    /// Loads `cert.der`/`key.der` from `dir`, creating them (self-signed for
    /// `localhost`, 127.0.0.1, ::1 and `names`) when absent.
    pub fn load_or_create(dir: &Path, names: &[String]) -> Result<Self, TlsError> {
        let cert_path = dir.join("cert.der");
        let key_path = dir.join("key.der");
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| TlsError::Io { path, source }
        };
        if cert_path.exists() && key_path.exists() {
            let cert = std::fs::read(&cert_path).map_err(io(&cert_path))?;
            let key = std::fs::read(&key_path).map_err(io(&key_path))?;
            return Ok(Identity {
                cert: CertificateDer::from(cert),
                key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
            });
        }
        let mut sans = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
        sans.extend(names.iter().cloned());
        let certified = rcgen::generate_simple_self_signed(sans)?;
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let key = certified.key_pair.serialize_der();
        // Write the key first and the certificate last, each via a rename, so a
        // crash never leaves a certificate without its key.
        write_atomic(&key_path, &key).map_err(io(&key_path))?;
        write_atomic(&cert_path, certified.cert.der()).map_err(io(&cert_path))?;
        Ok(Identity {
            cert: certified.cert.der().clone(),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        })
    }

    /// SHA-256 fingerprint of the certificate, as lowercase hex.
    pub fn fingerprint(&self) -> String {
        hex::encode(Sha256::digest(self.cert.as_ref()))
    }
}

fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    }
    std::fs::rename(tmp, path)
}
