//! Who may do what: the `predict` and `admin` roles, granted by bearer
//! tokens (kept only as SHA-256 hashes), by client certificates verified
//! against a CA (mutual TLS), or — for a local demo — by connecting from
//! loopback.
//!
//! Rules, checked per request:
//! - `predict` and `status` are open to everyone unless a `predict` token is
//!   configured or client certificates are required; then they need a
//!   `predict` or `admin` token, or a verified client certificate.
//! - management (`models`, `upload`, `fetch`, `delete`, `reload`) needs an
//!   `admin` token or a client certificate listed as admin. From loopback it
//!   is allowed without credentials while no admin credential is configured
//!   (`loopback_admin`, default on then, off otherwise; the access file can
//!   set it either way).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tensorgate_protocol::Role;

/// The access file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// Unreadable file.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Bad content (the message names the field).
    #[error("{path}: {message}")]
    Parse {
        /// File.
        path: String,
        /// What was wrong.
        message: String,
    },
}

/// The access file (`--access FILE`, TOML).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessFile {
    loopback_admin: Option<bool>,
    client_ca: Option<ClientCa>,
    #[serde(default)]
    token: Vec<Credential>,
    #[serde(default)]
    cert: Vec<Credential>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientCa {
    file: PathBuf,
    #[serde(default)]
    required: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Credential {
    role: Role,
    sha256: String,
    #[serde(default)]
    name: String,
}

/// A credential: the role it grants and the SHA-256 of the token (or of the
/// client certificate's DER encoding).
#[derive(Debug, Clone)]
struct Grant {
    role: Role,
    sha256: [u8; 32],
    name: String,
}

/// Who may do what (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct AccessPolicy {
    tokens: Vec<Grant>,
    certs: Vec<Grant>,
    loopback_admin: Option<bool>,
    /// CA (PEM) that client certificates are verified against.
    pub client_ca: Option<PathBuf>,
    /// Whether a client must present a certificate to connect at all.
    pub client_cert_required: bool,
}

/// SHA-256 of `data`, hex — how tokens and certificates are written in the access file.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

impl AccessPolicy {
    /// Reads an access file; relative paths in it are relative to the file.
    pub fn load(path: &Path) -> Result<Self, AccessError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| AccessError::Io { path: shown.clone(), source })?;
        let parse = |message: String| AccessError::Parse { path: shown.clone(), message };
        let file: AccessFile = toml::from_str(&text).map_err(|e| parse(e.to_string().trim().to_string()))?;
        let grants = |list: Vec<Credential>, what: &str| {
            list.into_iter()
                .enumerate()
                .map(|(i, c)| {
                    let bytes = hex::decode(c.sha256.trim()).ok().and_then(|b| <[u8; 32]>::try_from(b).ok());
                    let sha256 = bytes.ok_or_else(|| parse(format!("{what}[{i}].sha256: not 64 hex digits")))?;
                    Ok(Grant { role: c.role, sha256, name: c.name })
                })
                .collect::<Result<Vec<_>, AccessError>>()
        };
        let base = path.parent().unwrap_or(Path::new("."));
        Ok(AccessPolicy {
            tokens: grants(file.token, "token")?,
            certs: grants(file.cert, "cert")?,
            loopback_admin: file.loopback_admin,
            client_cert_required: file.client_ca.as_ref().is_some_and(|c| c.required),
            client_ca: file.client_ca.map(|c| base.join(c.file)),
        })
    }

    /// Adds a token granting `role` (for embedding hosts and tests).
    pub fn add_token(&mut self, role: Role, token: &str) {
        self.tokens.push(Grant { role, sha256: Sha256::digest(token.as_bytes()).into(), name: String::new() });
    }

    /// Adds a client certificate (its DER bytes) granting `role`.
    pub fn add_cert(&mut self, role: Role, der: &[u8]) {
        self.certs.push(Grant { role, sha256: Sha256::digest(der).into(), name: String::new() });
    }

    /// Sets whether loopback clients get the admin role without credentials.
    pub fn set_loopback_admin(&mut self, allowed: bool) {
        self.loopback_admin = Some(allowed);
    }

    fn loopback_admin(&self) -> bool {
        self.loopback_admin.unwrap_or_else(|| !self.tokens.iter().chain(&self.certs).any(|g| g.role == Role::Admin))
    }

    fn predict_open(&self) -> bool {
        !self.client_cert_required && !self.tokens.iter().any(|g| g.role == Role::Predict)
    }

    /// What a connection is granted before any token: by its address and its
    /// verified client certificate (the end-entity certificate's DER).
    pub fn connection(&self, remote: SocketAddr, cert: Option<&[u8]>) -> Peer {
        let loopback = remote.ip().is_loopback() || remote.ip().to_canonical().is_loopback();
        let cert_role = cert.map(|der| {
            let digest: [u8; 32] = Sha256::digest(der).into();
            // A certificate the CA verified grants predict; listed ones may grant more.
            self.certs.iter().filter(|g| g.sha256 == digest).map(|g| g.role).max().unwrap_or(Role::Predict)
        });
        Peer { loopback, cert_role }
    }

    /// Checks that a request needing `needed` may run, given the connection
    /// and the token in its header.
    pub fn check(&self, needed: Role, op: &str, peer: &Peer, token: Option<&str>) -> Result<(), String> {
        let token_grant = token.and_then(|t| {
            let digest: [u8; 32] = Sha256::digest(t.as_bytes()).into();
            self.tokens.iter().find(|g| g.sha256 == digest)
        });
        if let Some(g) = token_grant {
            tracing::debug!(op, role = ?g.role, name = %g.name, "token accepted");
        }
        let has = |role: Role| {
            token_grant.is_some_and(|g| g.role >= role) || peer.cert_role.is_some_and(|r| r >= role)
        };
        let allowed = match needed {
            Role::Predict => self.predict_open() || has(Role::Predict),
            Role::Admin => has(Role::Admin) || (peer.loopback && self.loopback_admin()),
        };
        if allowed {
            return Ok(());
        }
        let presented = match (token, token_grant) {
            (None, _) => "no token was presented",
            (Some(_), None) => "the token presented is not known to this host",
            (Some(_), Some(_)) => "the token presented grants only the predict role",
        };
        let hint = match needed {
            // Only when it would help: loopback admin is on and the client is elsewhere.
            Role::Admin if self.loopback_admin() => "admin without credentials is allowed only from loopback",
            Role::Admin => "this host requires an admin token or an admin client certificate",
            Role::Predict => "this host requires a predict token or a client certificate",
        };
        Err(format!("`{op}` needs the {} role: {presented} ({hint})", role_name(needed)))
    }
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Predict => "predict",
        Role::Admin => "admin",
    }
}

/// What a connection brings before any token.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// Connected from a loopback address.
    pub loopback: bool,
    /// Role of its verified client certificate, if it presented one.
    pub cert_role: Option<Role>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(loopback: bool) -> Peer {
        Peer { loopback, cert_role: None }
    }

    #[test]
    fn defaults_open_predict_and_loopback_admin() {
        let p = AccessPolicy::default();
        assert!(p.check(Role::Predict, "predict", &peer(false), None).is_ok());
        assert!(p.check(Role::Admin, "upload", &peer(true), None).is_ok());
        let e = p.check(Role::Admin, "upload", &peer(false), None).unwrap_err();
        assert!(e.contains("needs the admin role") && e.contains("only from loopback"), "{e}");
    }

    #[test]
    fn tokens_grant_their_role_and_close_loopback_admin() {
        let mut p = AccessPolicy::default();
        p.add_token(Role::Admin, "root-secret");
        p.add_token(Role::Predict, "user-secret");
        let e = p.check(Role::Admin, "delete", &peer(true), None).unwrap_err();
        assert!(!e.contains("loopback") && e.contains("requires an admin token"), "no loopback hint once admin credentials exist: {e}");
        assert!(p.check(Role::Admin, "delete", &peer(false), Some("root-secret")).is_ok());
        let e = p.check(Role::Admin, "delete", &peer(false), Some("user-secret")).unwrap_err();
        assert!(e.contains("grants only the predict role"), "{e}");
        assert!(p.check(Role::Predict, "predict", &peer(false), Some("user-secret")).is_ok());
        assert!(p.check(Role::Predict, "predict", &peer(false), Some("root-secret")).is_ok());
        let e = p.check(Role::Predict, "predict", &peer(false), Some("wrong")).unwrap_err();
        assert!(e.contains("not known"), "{e}");
    }

    #[test]
    fn certificates_grant_predict_or_their_listed_role() {
        let mut p = AccessPolicy::default();
        p.add_cert(Role::Admin, b"admin-cert");
        let admin = p.connection("10.0.0.1:5".parse().unwrap(), Some(b"admin-cert"));
        let user = p.connection("10.0.0.1:5".parse().unwrap(), Some(b"other-cert"));
        assert!(p.check(Role::Admin, "reload", &admin, None).is_ok());
        assert!(p.check(Role::Admin, "reload", &user, None).is_err());
        assert!(p.check(Role::Predict, "predict", &user, None).is_ok());
    }

    #[test]
    fn access_file_parses_and_names_bad_fields() {
        let dir = std::env::temp_dir().join(format!("tg-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("access.toml");
        let hash = sha256_hex(b"s3cret");
        std::fs::write(&file, format!("[[token]]\nrole = \"admin\"\nsha256 = \"{hash}\"\nname = \"ops\"\n")).unwrap();
        let p = AccessPolicy::load(&file).unwrap();
        assert!(p.check(Role::Admin, "upload", &peer(false), Some("s3cret")).is_ok());
        std::fs::write(&file, "[[token]]\nrole = \"admin\"\nsha256 = \"xyz\"\n").unwrap();
        let e = AccessPolicy::load(&file).unwrap_err().to_string();
        assert!(e.contains("token[0].sha256"), "{e}");
        std::fs::write(&file, "[[token]]\nrole = \"root\"\nsha256 = \"00\"\n").unwrap();
        let e = AccessPolicy::load(&file).unwrap_err().to_string();
        assert!(e.contains("role"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
