//! The AOTInductor backend: `torch.export` models compiled ahead of time
//! into a package (`.pt2`, written by
//! `torch._inductor.aoti_compile_and_package`), run by libtorch's own
//! `torch::inductor::AOTIModelPackageLoader` — the same libtorch the host
//! links for TorchScript (tch does not expose the loader: a small C++ shim,
//! `src/shim.cpp`, compiled against the libtorch headers, does).
//!
//! A package holds a shared library compiled for one device kind (and, on
//! the CPU, one instruction set): one compiled for another device, or
//! another libtorch, fails at load with the loader's message. Inputs,
//! batching, device staging and outputs are the TorchScript backend's
//! (`tensorgate_backend_torch::convert`): tensors cross the shim as the
//! `at::Tensor` handles tch uses.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::Path;
use std::ptr::NonNull;

use tch::Tensor as TchTensor;
use tensorgate_backend::{Backend, Buffer, Device, DeviceSpec, Dtype, Instance, ModelError, Signature, Tensor};
use tensorgate_backend_torch::convert;
use torch_sys::C_tensor;

/// The format's name in messages.
const FORMAT: &str = "AOTInductor";

extern "C" {
    fn tg_aoti_load(path: *const c_char, device_index: c_int, error: *mut *mut c_char) -> *mut c_void;
    fn tg_aoti_free(loader: *mut c_void);
    fn tg_aoti_free_string(s: *mut c_char);
    fn tg_aoti_run(
        loader: *mut c_void,
        inputs: *const *mut C_tensor,
        n: usize,
        outputs: *mut *mut *mut C_tensor,
        n_out: *mut usize,
        error: *mut *mut c_char,
    ) -> c_int;
    fn tg_aoti_free_outputs(outputs: *mut *mut C_tensor);
}

/// The shim's error string, taken (and freed).
fn take_error(error: *mut c_char) -> String {
    if error.is_null() {
        return "AOTInductor failed without a message".into();
    }
    // SAFETY: a NUL-terminated string the shim allocated for us.
    let text = unsafe { CStr::from_ptr(error) }.to_string_lossy().into_owned();
    // SAFETY: allocated by the shim with malloc, freed once here.
    unsafe { tg_aoti_free_string(error) };
    tracing::debug!("AOTInductor said: {text}");
    convert::short_message(&text)
}

/// One loaded package (its loader and compiled model).
struct Package {
    loader: NonNull<c_void>,
}

// SAFETY: the loader is used by one thread at a time (its instance's
// executor thread, or one borrowing the idle instance), never concurrently.
unsafe impl Send for Package {}

impl Package {
    fn load(path: &Path, device: Device) -> Result<Package, String> {
        // The package is unpacked here into a directory of ours, removed as
        // soon as the loader is built (its shared library is mapped and its
        // weights read by then). Handed the `.pt2` itself, libtorch unpacks
        // it into `/tmp/aotinductor_*` and removes that only when the loader
        // is destroyed: never for a refused package (the constructor throws)
        // nor for a host that is killed, so every restart and every bad
        // upload left a copy of the model in /tmp.
        let unpacked = unpack(path)?;
        let text = unpacked.path().to_str().ok_or("the temporary directory's path is not UTF-8")?;
        let c_path = CString::new(text).map_err(|_| "the temporary directory's path holds a NUL byte".to_string())?;
        let index = match device {
            Device::Cpu => -1,
            Device::Cuda(n) => c_int::try_from(n).map_err(|_| format!("no device cuda:{n}"))?,
        };
        let mut error = std::ptr::null_mut();
        // libtorch's AOTIModelPackageLoader is not safe to construct from two
        // threads at once (it unpacks the package into a temporary directory
        // and reads its metadata back): concurrent loads in one process (hosts
        // loading together, instances of one model) failed at random with
        // "type must be string, but is null". One load at a time.
        static LOADING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = LOADING.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: `c_path` is a valid C string; `error` is written only on failure.
        let loader = unsafe { tg_aoti_load(c_path.as_ptr(), index, &mut error) };
        drop(unpacked);
        NonNull::new(loader).map(|loader| Package { loader }).ok_or_else(|| take_error(error))
    }

    fn run(&mut self, inputs: &[TchTensor]) -> Result<Vec<TchTensor>, ModelError> {
        let handles: Vec<*mut C_tensor> = inputs.iter().map(|t| t.as_ptr().cast_mut()).collect();
        let mut outputs: *mut *mut C_tensor = std::ptr::null_mut();
        let (mut n, mut error) = (0usize, std::ptr::null_mut());
        // SAFETY: `handles` are live at::Tensor handles (owned by `inputs`,
        // only read); the shim writes the outputs or the error.
        let rc = unsafe { tg_aoti_run(self.loader.as_ptr(), handles.as_ptr(), handles.len(), &mut outputs, &mut n, &mut error) };
        if rc != 0 {
            return Err(ModelError::Forward(take_error(error)));
        }
        // SAFETY: on success `outputs` holds `n` new at::Tensor handles, each
        // now owned by one tch tensor (which frees it as tch does).
        let tensors = (0..n).map(|i| unsafe { TchTensor::from_ptr(*outputs.add(i)) }).collect();
        // SAFETY: the array the shim malloc'd, its handles taken above.
        unsafe { tg_aoti_free_outputs(outputs) };
        Ok(tensors)
    }
}

/// Unpacks a `.pt2` archive (a zip) into a new temporary directory.
fn unpack(path: &Path) -> Result<tempfile::TempDir, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open it: {e}"))?;
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| format!("not an AOTInductor package (a .pt2 is a zip archive): {e}"))?;
    let dir = tempfile::Builder::new()
        .prefix("tensorgate-aoti-")
        .tempdir()
        .map_err(|e| format!("cannot make a temporary directory to unpack it: {e}"))?;
    // `extract` refuses entries whose names would leave the directory.
    archive.extract(dir.path()).map_err(|e| format!("cannot unpack it: {e}"))?;
    Ok(dir)
}

impl Drop for Package {
    fn drop(&mut self) {
        // SAFETY: the loader from tg_aoti_load, freed once.
        unsafe { tg_aoti_free(self.loader.as_ptr()) };
    }
}

/// The AOTInductor backend (stateless: libtorch is process-wide).
#[derive(Debug, Clone, Copy, Default)]
pub struct AotiBackend;

/// One package on its device, with the staging its batches go through.
struct AotiInstance {
    package: Package,
    staging: convert::Staging,
}

/// Rows of one item (its first input's first dimension).
fn rows(inputs: &[Tensor]) -> usize {
    inputs.first().map(|t| t.rows()).unwrap_or(1) as usize
}

impl Instance for AotiInstance {
    fn run(&mut self, items: &[&[Tensor]]) -> Result<Option<Vec<Vec<Tensor>>>, ModelError> {
        let _no_grad = tch::no_grad_guard();
        let inputs = self.staging.inputs(items)?;
        let outputs = convert::to_cpu(self.package.run(&inputs)?)?;
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

impl Backend for AotiBackend {
    fn format(&self) -> &'static str {
        FORMAT
    }

    fn resolve(&self, spec: DeviceSpec) -> Result<Device, ModelError> {
        convert::resolve(spec)
    }

    /// A package's call spec names no tensors (and reading it means loading
    /// the compiled model): the declared inputs and outputs are checked by
    /// running the model.
    fn signature(&self, _path: &Path) -> Option<Signature> {
        None
    }

    fn load(&self, path: &Path, device: Device) -> Result<Box<dyn Instance>, ModelError> {
        let load = |reason: String| ModelError::Load { format: FORMAT, path: path.display().to_string(), reason };
        std::fs::metadata(path).map_err(|e| load(e.to_string()))?;
        let package = Package::load(path, device).map_err(load)?;
        Ok(Box::new(AotiInstance { package, staging: convert::Staging::new(convert::theirs(device)) }))
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
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../plugins/tensors/bundles").join(name).join("model.pt2")
    }

    #[test]
    fn an_instance_runs_one_item_and_a_batch_split_by_rows() {
        let b = AotiBackend;
        b.init_thread(1);
        let mut inst = b.load(&model("tabular-aoti"), Device::Cpu).expect("loads");
        let features = 16u64;
        let item = |rows: u64| {
            let data: Vec<u8> = (0..rows * features).flat_map(|i| (i as f32 / 100.0).to_le_bytes()).collect();
            vec![Tensor { dtype: Dtype::F32, shape: vec![rows, features], data: data.into() }]
        };
        let (a, c) = (item(1), item(3));
        let alone = inst.run(&[&a]).expect("runs").expect("one item");
        let batch = inst.run(&[&a, &c]).expect("runs").expect("split");
        let floats = |t: &Tensor| t.data.chunks(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect::<Vec<_>>();
        assert_eq!(batch[0][0].shape, alone[0][0].shape);
        for (x, y) in floats(&batch[0][0]).iter().zip(floats(&alone[0][0])) {
            assert!((x - y).abs() < 1e-5, "an item's rows are the same alone and in a batch: {x} vs {y}");
        }
        assert_eq!(batch[1][0].shape, vec![3, 4]);
        let e = b.load(&model("nope"), Device::Cpu).err().expect("missing file");
        assert!(e.to_string().starts_with("loading AOTInductor model"), "{e}");
        let dir = std::env::temp_dir().join(format!("aoti-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let bad = dir.join("bad.pt2");
        std::fs::write(&bad, b"not a zip at all").expect("write");
        let e = b.load(&bad, Device::Cpu).err().expect("corrupt file");
        assert!(e.to_string().contains("bad.pt2") && !e.to_string().contains('\n'), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
