//! Status and management requests: list, upload, fetch, delete and reload
//! application bundles, promote or roll back a model's default version
//! (management needs the `admin` role), and packing a
//! bundle directory into the `.tar.zst` archive they exchange.

use std::path::Path;

use bytes::{Bytes, BytesMut};
use tensorgate_protocol::{
    AdminHeader, AdminReply, Frame, ItemHead, ModelInfo, ProtocolError, RequestHeader, StatusHeader, StatusReply,
};

use crate::error::ClientError;
use crate::transport::Client;

/// Bundle bytes per `Item` frame of an upload.
const UPLOAD_CHUNK: usize = 4 << 20;

/// Content type of the archive chunks of an upload.
const ARCHIVE_CONTENT_TYPE: &str = "application/x-tar+zstd";

impl Client {
    /// Asks the host for its status.
    pub async fn status(&self) -> Result<StatusReply, ClientError> {
        let header = RequestHeader::Status(StatusHeader { token: self.token().cloned() });
        self.exchange(header, [], |frame| match frame {
            Frame::Status(s) => Ok(Some(s)),
            other => Err(ProtocolError::UnexpectedFrame { got: other.kind().name(), state: "in a status reply" }.into()),
        })
        .await
    }

    /// Lists every application version on the host: loaded (`ready`) and
    /// bundles that failed to load (`failed`, with the error). Needs admin.
    pub async fn models(&self) -> Result<Vec<ModelInfo>, ClientError> {
        let header = RequestHeader::Models(self.admin_header(None, None));
        Ok(self.admin(header, Vec::new()).await?.0.models)
    }

    /// Uploads a bundle — a directory holding `manifest.toml` (packed here)
    /// or a `.tar.zst` archive of one — and waits until the host has loaded
    /// it and serves it. `replace` overwrites an existing bundle of the same
    /// name and version. Needs admin.
    pub async fn upload(&self, path: &Path, replace: bool) -> Result<AdminReply, ClientError> {
        let archive = if path.is_dir() {
            let dir = path.to_path_buf();
            tokio::task::spawn_blocking(move || pack_bundle(&dir))
                .await
                .map_err(|e| ClientError::Bundle(e.to_string()))?
                .map_err(|e| ClientError::Bundle(format!("packing {}: {e}", path.display())))?
        } else {
            tokio::fs::read(path).await.map_err(|e| ClientError::Bundle(format!("{}: {e}", path.display())))?
        };
        self.upload_archive(Bytes::from(archive), replace).await
    }

    /// Uploads a bundle already packed as `.tar.zst` (see [`pack_bundle`]).
    pub async fn upload_archive(&self, archive: Bytes, replace: bool) -> Result<AdminReply, ClientError> {
        let mut header = self.admin_header(None, None);
        header.replace = replace;
        Ok(self.admin(RequestHeader::Upload(header), upload_chunks(&archive)).await?.0)
    }

    /// Downloads a bundle (the newest version when `version` is `None`) as a
    /// `.tar.zst` archive. Needs admin.
    pub async fn fetch(&self, model: &str, version: Option<u64>) -> Result<Bytes, ClientError> {
        let header = RequestHeader::Fetch(self.admin_header(Some(model), version));
        Ok(self.admin(header, Vec::new()).await?.1)
    }

    /// Removes a version of a model, or every version when `version` is
    /// `None`. Requests already running finish first. Needs admin.
    pub async fn delete(&self, model: &str, version: Option<u64>) -> Result<AdminReply, ClientError> {
        let header = RequestHeader::Delete(self.admin_header(Some(model), version));
        Ok(self.admin(header, Vec::new()).await?.0)
    }

    /// Makes the host re-read its repository on disk (one model or all) and
    /// load what changed; failures are listed in the reply's `errors` and
    /// leave the versions that served before serving. Needs admin.
    pub async fn reload(&self, model: Option<&str>) -> Result<AdminReply, ClientError> {
        let header = RequestHeader::Reload(self.admin_header(model, None));
        Ok(self.admin(header, Vec::new()).await?.0)
    }

    /// Makes `version` the default of `model` (served when a request names
    /// no version) until a newer version is installed. Needs admin.
    pub async fn promote(&self, model: &str, version: u64) -> Result<AdminReply, ClientError> {
        let header = RequestHeader::Promote(self.admin_header(Some(model), Some(version)));
        Ok(self.admin(header, Vec::new()).await?.0)
    }

    /// Rolls the default of `model` back to the newest earlier version not
    /// rolled back; the version that was the default is marked rolled back
    /// (and still serves requests that name it). Needs admin.
    pub async fn rollback(&self, model: &str) -> Result<AdminReply, ClientError> {
        let header = RequestHeader::Rollback(self.admin_header(Some(model), None));
        Ok(self.admin(header, Vec::new()).await?.0)
    }

    fn admin_header(&self, model: Option<&str>, version: Option<u64>) -> AdminHeader {
        AdminHeader { token: self.token().cloned(), model: model.map(str::to_string), version, replace: false }
    }

    /// Sends a management request (with `chunks` as its items) and reads its
    /// reply: the final `Reply` and the payloads of any `Result` frames before it.
    async fn admin(&self, header: RequestHeader, chunks: Vec<Bytes>) -> Result<(AdminReply, Bytes), ClientError> {
        let items = chunks.into_iter().enumerate().map(|(index, chunk)| {
            let head = ItemHead { index: index as u32, content_type: ARCHIVE_CONTENT_TYPE.into(), ..ItemHead::default() };
            (head, chunk)
        });
        let max_item_bytes = self.limits().max_item_bytes;
        let mut payload = BytesMut::new();
        self.exchange(header, items, |frame| match frame {
            Frame::Result(item) => {
                payload.extend_from_slice(&item.decompressed(max_item_bytes)?);
                Ok(None)
            }
            Frame::Reply(r) => Ok(Some((r, std::mem::take(&mut payload).freeze()))),
            other => Err(ProtocolError::UnexpectedFrame { got: other.kind().name(), state: "in a management reply" }.into()),
        })
        .await
    }
}

/// `archive` cut into upload items of at most [`UPLOAD_CHUNK`] bytes (no copies).
fn upload_chunks(archive: &Bytes) -> Vec<Bytes> {
    (0..archive.len().div_ceil(UPLOAD_CHUNK))
        .map(|i| archive.slice(i * UPLOAD_CHUNK..((i + 1) * UPLOAD_CHUNK).min(archive.len())))
        .collect()
}

/// Packs the bundle directory `dir` (manifest, model, plugin, any other
/// files) into a `.tar.zst` archive with the files at its root, as `upload`
/// sends it and `fetch` returns it.
pub fn pack_bundle(dir: &Path) -> std::io::Result<Vec<u8>> {
    if !dir.join("manifest.toml").is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} has no manifest.toml: not a bundle directory", dir.display()),
        ));
    }
    let encoder = zstd::stream::write::Encoder::new(Vec::new(), 3)?;
    let mut tar = tar::Builder::new(encoder);
    tar.mode(tar::HeaderMode::Deterministic);
    tar.append_dir_all(".", dir)?;
    tar.into_inner()?.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_chunks_cover_the_archive_without_copies() {
        let archive = Bytes::from(vec![7u8; 2 * UPLOAD_CHUNK + 5]);
        let chunks = upload_chunks(&archive);
        assert_eq!(chunks.iter().map(Bytes::len).collect::<Vec<_>>(), vec![UPLOAD_CHUNK, UPLOAD_CHUNK, 5]);
        assert_eq!(chunks[1].as_ptr(), archive[UPLOAD_CHUNK..].as_ptr());
        assert!(upload_chunks(&Bytes::new()).is_empty());
    }

    #[test]
    fn pack_bundle_needs_a_manifest_and_packs_files_at_the_root() {
        let dir = std::env::temp_dir().join(format!("tensorgate-client-pack-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let err = pack_bundle(&dir).expect_err("no manifest");
        assert!(err.to_string().contains("no manifest.toml"), "{err}");
        std::fs::write(dir.join("manifest.toml"), "name = \"x\"\n").expect("write manifest");
        let archive = pack_bundle(&dir).expect("pack");
        let tarball = zstd::decode_all(&archive[..]).expect("zstd");
        let mut names = Vec::new();
        for entry in tar::Archive::new(&tarball[..]).entries().expect("tar") {
            let entry = entry.expect("entry");
            names.push(entry.path().expect("path").to_string_lossy().into_owned());
        }
        assert!(names.iter().any(|n| n.trim_start_matches("./") == "manifest.toml"), "{names:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
