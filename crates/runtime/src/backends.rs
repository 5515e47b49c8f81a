//! The model backends this runtime carries, by format: TorchScript today
//! (`tensorgate-backend-torch`). A manifest's model goes to the backend of
//! its format; everything above the [`Backend`] trait is the same for all.

use std::sync::{Arc, OnceLock};

use tensorgate_backend::{Backend, Buffer, Dtype, ModelError};
use tensorgate_backend_torch::TorchBackend;
use tensorgate_server::manifest::Manifest;

use crate::repository::LoadError;

fn torch() -> Arc<dyn Backend> {
    static TORCH: OnceLock<Arc<dyn Backend>> = OnceLock::new();
    TORCH.get_or_init(|| Arc::new(TorchBackend)).clone()
}

/// The backend that runs `manifest`'s model.
pub fn for_model(manifest: &Manifest) -> Result<Arc<dyn Backend>, LoadError> {
    let _ = manifest;
    Ok(torch())
}

/// Bytes for a tensor a plugin makes: in memory the model can run on as it
/// is (libtorch's, lent without a copy; small tensors are the host's own).
pub fn alloc(dtype: Dtype, shape: &[u64], zeroed: bool) -> Result<Buffer, ModelError> {
    TorchBackend.alloc(dtype, shape, zeroed)
}

/// Where a model set to `spec` runs on this machine, by name (`cpu`,
/// `cuda:0`), or the spec itself when it names a device absent here.
pub fn device_name(spec: tensorgate_backend::DeviceSpec) -> String {
    torch().resolve(spec).map(|d| d.to_string()).unwrap_or_else(|_| spec.to_string())
}
