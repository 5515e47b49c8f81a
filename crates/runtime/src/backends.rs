//! The model backends this runtime carries, by format: TorchScript
//! (`tensorgate-backend-torch`), ONNX (`tensorgate-backend-onnx`) and
//! AOTInductor packages (`tensorgate-backend-aoti`). A
//! manifest's model goes to the backend of its format (`[model] format`, or
//! the file's extension); everything above the [`Backend`] trait is the same
//! for all.

use std::sync::{Arc, OnceLock};

use tensorgate_backend::{Backend, Buffer, Dtype, ModelError};
use tensorgate_backend_aoti::AotiBackend;
use tensorgate_backend_onnx::{OnnxBackend, OnnxOptions, Optimization};
use tensorgate_backend_torch::TorchBackend;
use tensorgate_server::manifest::{GraphOptimization, Manifest, ModelFormat};

use crate::repository::LoadError;

fn torch() -> Arc<dyn Backend> {
    static TORCH: OnceLock<Arc<dyn Backend>> = OnceLock::new();
    TORCH.get_or_init(|| Arc::new(TorchBackend)).clone()
}

fn aoti() -> Arc<dyn Backend> {
    static AOTI: OnceLock<Arc<dyn Backend>> = OnceLock::new();
    AOTI.get_or_init(|| Arc::new(AotiBackend)).clone()
}

fn onnx_options(manifest: &Manifest) -> OnnxOptions {
    let optimization = match manifest.model.optimization {
        GraphOptimization::Disable => Optimization::Disable,
        GraphOptimization::Basic => Optimization::Basic,
        GraphOptimization::Extended => Optimization::Extended,
        GraphOptimization::All => Optimization::All,
    };
    OnnxOptions { optimization }
}

/// The backend that runs `manifest`'s model.
pub fn for_model(manifest: &Manifest) -> Result<Arc<dyn Backend>, LoadError> {
    match manifest.model.format {
        ModelFormat::TorchScript => Ok(torch()),
        ModelFormat::Onnx => Ok(Arc::new(OnnxBackend::new(onnx_options(manifest)))),
        ModelFormat::Aoti => Ok(aoti()),
    }
}

/// Bytes for a tensor a plugin makes: in memory the model can run on as it
/// is (libtorch's, lent without a copy; small tensors are the host's own).
/// ONNX Runtime reads the same bytes in place.
pub fn alloc(dtype: Dtype, shape: &[u64], zeroed: bool) -> Result<Buffer, ModelError> {
    TorchBackend.alloc(dtype, shape, zeroed)
}

/// Where a model set to `spec` runs on this machine, by name (`cpu`,
/// `cuda:0`), or the spec itself when it names a device absent here.
pub fn device_name(spec: tensorgate_backend::DeviceSpec) -> String {
    torch().resolve(spec).map(|d| d.to_string()).unwrap_or_else(|_| spec.to_string())
}
