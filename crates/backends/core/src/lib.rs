//! What every model backend shares with the rest of tensorgate: the host's
//! tensors ([`tensor`]), device requests ([`device`]), and the narrow
//! [`Backend`] trait between the batcher (`tensorgate-runtime`'s
//! executor) and a model runtime. A backend loads a model file, describes
//! its signature, and runs batches; the executor owns the threads, the
//! batching, the counters and the device placement policy.
//!
//! TorchScript (`tensorgate-backend-torch`) and ONNX Runtime
//! (`tensorgate-backend-onnx`) implement it.

pub mod device;
pub mod tensor;

use std::path::Path;
use std::time::Duration;

pub use device::DeviceSpec;
pub use tensor::{Buffer, Dtype, LentBytes, Tensor, TensorError};

/// A device a model runs on, resolved against what the backend sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Device {
    /// The CPU.
    Cpu,
    /// CUDA device N.
    Cuda(usize),
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Errors loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The model file could not be loaded.
    #[error("loading {format} model {path}: {reason}")]
    Load {
        /// The format (`TorchScript`, …).
        format: &'static str,
        /// File.
        path: String,
        /// The runtime's message.
        reason: String,
    },
    /// The requested device is not available.
    #[error("{0}")]
    Device(String),
    /// An input or output tensor was unusable.
    #[error(transparent)]
    Tensor(#[from] TensorError),
    /// The forward pass failed.
    #[error("forward failed: {0}")]
    Forward(String),
    /// The model returned something other than tensors.
    #[error("model output must be a tensor or a tuple/list/dict of tensors, got {0}")]
    Output(String),
    /// The executor thread is gone (the model was unloaded).
    #[error("model executor stopped")]
    Stopped,
    /// The model's queue is full.
    #[error("model queue is full ({queued} items waiting, limit max_queue = {limit}); retry in ~{} ms", .retry_after.as_millis().max(1))]
    Busy {
        /// Items waiting.
        queued: usize,
        /// The limit.
        limit: usize,
        /// Estimated time for the queue to drain.
        retry_after: Duration,
    },
}

/// One argument of a model's entry point, as its file declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Argument {
    /// Its name in the model.
    pub name: String,
    /// Its type as the format writes it (`Tensor`, `Optional[Tensor]`, …).
    pub ty: String,
    /// Whether it may be left out.
    pub optional: bool,
    /// Whether the host can pass one tensor for it.
    pub tensor: bool,
    /// Its element type, when the file states one the host carries.
    pub dtype: Option<Dtype>,
    /// Its number of dimensions, when the file states it.
    pub rank: Option<usize>,
}

/// A model's entry point as its file declares it, read without running it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// As an author reads it, for messages (`forward(x: Tensor) -> Tensor`).
    pub display: String,
    /// Its arguments in order.
    pub inputs: Vec<Argument>,
    /// How many tensors it returns, when the file says exactly.
    pub outputs: Option<usize>,
    /// The tensors it returns, when the file names and types them (ONNX);
    /// empty when it does not.
    pub returns: Vec<Argument>,
    /// Whether inputs and outputs are bound by name (ONNX): the manifest's
    /// `[[inputs]]` and `[[outputs]]` must then use the file's own names.
    pub by_name: bool,
}

/// One loaded copy of a model on one device. It lives on its executor
/// thread, which is the only one calling it (an idle instance may be
/// borrowed for an inline forward, still one caller at a time).
pub trait Instance: Send {
    /// One forward pass over `items` (each item's inputs, batch dimension
    /// first; every item has the same inputs) as one batch. The outputs per
    /// item: one item's as they are; several items' split by their rows,
    /// or `Ok(None)` when an output has no batch dimension to split by (the
    /// caller then runs the items one at a time).
    fn run(&mut self, items: &[&[Tensor]]) -> Result<Option<Vec<Vec<Tensor>>>, ModelError>;

    /// After a failed run: waits until the device is done with what was
    /// queued, so that input buffers may be written again.
    fn settle(&mut self) {}
}

/// A model runtime: loads model files of one format into instances.
pub trait Backend: Send + Sync + 'static {
    /// The format's name for messages (`TorchScript`).
    fn format(&self) -> &'static str;

    /// The device `spec` means here: `auto` is the first GPU the runtime
    /// sees, else the CPU; `cuda:N` fails when that device is absent.
    fn resolve(&self, spec: DeviceSpec) -> Result<Device, ModelError>;

    /// The model file's entry point, read without loading it onto a device;
    /// `None` when the file does not say.
    fn signature(&self, path: &Path) -> Option<Signature>;

    /// Loads one instance of the model at `path` on `device`. Called on the
    /// instance's own executor thread (after [`Backend::init_thread`]).
    fn load(&self, path: &Path, device: Device) -> Result<Box<dyn Instance>, ModelError>;

    /// Prepares the calling thread to run instances with `threads` intra-op
    /// threads (0: the runtime's default).
    fn init_thread(&self, threads: usize);

    /// The calling thread's intra-op thread count as the runtime sees it.
    fn thread_threads(&self) -> usize;

    /// The runtime's own default intra-op thread count.
    fn default_threads(&self) -> usize;

    /// Bytes for a tensor that this runtime can run on as they are
    /// (plugins write their outputs in them), zero-filled when `zeroed`.
    fn alloc(&self, dtype: Dtype, shape: &[u64], zeroed: bool) -> Result<Buffer, ModelError> {
        let _ = zeroed;
        let bytes = shape.iter().try_fold(dtype.size(), |n, &d| n.checked_mul(d)).and_then(|n| usize::try_from(n).ok());
        let n = bytes.ok_or_else(|| ModelError::Forward(format!("a {dtype} tensor of shape {shape:?} is too large")))?;
        Ok(Buffer::Host(vec![0; n]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_show_as_manifests_write_them() {
        assert_eq!(Device::Cpu.to_string(), "cpu");
        assert_eq!(Device::Cuda(2).to_string(), "cuda:2");
    }
}
