//! The TorchScript backend: models saved with `torch.jit.save`, run by
//! libtorch through `tch`, on the CPU or a CUDA device.
//!
//! Without copies where the bytes allow it ([`convert`]): the tensors a
//! plugin makes are allocated by libtorch, so the model runs on them as
//! they are; a batch is one concatenation (on `cuda:N`, staged in pinned
//! memory and copied without blocking); outputs are lent back to the host
//! and split by views.

pub mod convert;
pub mod signature;

use std::path::Path;

use tch::CModule;
use tensorgate_backend::{Backend, Buffer, Device, DeviceSpec, Dtype, Instance, ModelError, Signature, Tensor};

pub use convert::{devices, DeviceReport};

/// The TorchScript backend (stateless: libtorch is process-wide).
#[derive(Debug, Clone, Copy, Default)]
pub struct TorchBackend;

/// One TorchScript module on its device, with the staging buffers its
/// batches go through.
struct TorchInstance {
    module: CModule,
    staging: convert::Staging,
}

impl Instance for TorchInstance {
    fn run(&mut self, items: &[&[Tensor]]) -> Result<Option<Vec<Vec<Tensor>>>, ModelError> {
        let _no_grad = tch::no_grad_guard();
        let outputs = convert::run(&self.module, &mut self.staging, items)?;
        if let [_] = items {
            return Ok(Some(vec![outputs.iter().map(convert::from_torch).collect::<Result<_, _>>()?]));
        }
        let counts: Vec<usize> = items.iter().map(|i| rows(i)).collect();
        convert::split(outputs, &counts)
    }

    fn settle(&mut self) {
        convert::wait_for(self.staging.device());
    }
}

/// Rows of one item (its first input's first dimension).
fn rows(inputs: &[Tensor]) -> usize {
    inputs.first().and_then(|t| t.shape.first()).copied().unwrap_or(1) as usize
}

impl Backend for TorchBackend {
    fn format(&self) -> &'static str {
        "TorchScript"
    }

    fn resolve(&self, spec: DeviceSpec) -> Result<Device, ModelError> {
        convert::resolve(spec)
    }

    fn signature(&self, path: &Path) -> Option<Signature> {
        signature::read(path).map(Signature::from)
    }

    fn load(&self, path: &Path, device: Device) -> Result<Box<dyn Instance>, ModelError> {
        let device = convert::theirs(device);
        let mut module = CModule::load_on_device(path, device).map_err(|e| ModelError::Load {
            format: self.format(),
            path: path.display().to_string(),
            reason: convert::short_message(&e.to_string()),
        })?;
        module.set_eval();
        Ok(Box::new(TorchInstance { module, staging: convert::Staging::new(device) }))
    }

    fn init_thread(&self, threads: usize) {
        convert::set_thread_threads(if threads > 0 { threads } else { convert::default_threads() });
    }

    fn thread_threads(&self) -> usize {
        convert::thread_threads()
    }

    fn default_threads(&self) -> usize {
        convert::default_threads()
    }

    fn alloc(&self, dtype: Dtype, shape: &[u64], zeroed: bool) -> Result<Buffer, ModelError> {
        convert::alloc(dtype, shape, zeroed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../plugins").join(name).join("model.pt")
    }

    #[test]
    fn an_instance_runs_one_item_and_a_batch_split_by_rows() {
        let b = TorchBackend;
        b.init_thread(1);
        let sig = b.signature(&model("tabular")).expect("signature");
        assert_eq!(sig.display, "forward(x: Tensor) -> Tensor");
        let mut inst = b.load(&model("tabular"), Device::Cpu).expect("loads");
        let features = 16u64;
        let item = |rows: u64| {
            let data: Vec<u8> = (0..rows * features).flat_map(|i| (i as f32 / 100.0).to_le_bytes()).collect();
            vec![Tensor { dtype: Dtype::F32, shape: vec![rows, features], data: data.into() }]
        };
        let (a, c) = (item(1), item(3));
        let alone = inst.run(&[&a]).unwrap().expect("one item");
        let batch = inst.run(&[&a, &c]).unwrap().expect("split");
        assert_eq!(batch.len(), 2);
        let floats = |t: &Tensor| t.data.chunks(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect::<Vec<_>>();
        assert_eq!(batch[0][0].shape, alone[0][0].shape);
        for (x, y) in floats(&batch[0][0]).iter().zip(floats(&alone[0][0])) {
            assert!((x - y).abs() < 1e-5, "an item's rows are the same alone and in a batch: {x} vs {y}");
        }
        assert_eq!(batch[1][0].shape[0], 3);
        let e = b.load(&model("nope"), Device::Cpu).err().expect("missing file");
        assert!(e.to_string().starts_with("loading TorchScript model"), "{e}");
    }
}
