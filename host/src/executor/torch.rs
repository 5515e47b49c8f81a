//! libtorch at the edge of the executor: device resolution, the host's
//! tensors to and from `tch::Tensor` (only here), and one forward call.
//!
//! Without copies where the bytes allow it: a host tensor whose bytes
//! libtorch lent ([`alloc`], the tensors plugins make) goes into the model
//! as it is; a batch of items is one concatenation; the model's outputs are
//! lent back to the host ([`from_torch`]) and split by views, so they stay
//! libtorch tensors until the plugin reads them. On `cuda:N` the inputs are
//! copied to the device once and the outputs back once.

use tch::{CModule, Device, IValue, Kind};

use super::ModelError;
use crate::device::DeviceSpec;
use crate::tensor::{Buffer, Dtype, LentBytes, Tensor};

/// A CPU, contiguous libtorch tensor lent to the host as bytes.
#[derive(Debug)]
struct TorchBytes {
    t: tch::Tensor,
    ptr: *mut u8,
    len: usize,
    /// Whether nothing else may share the storage (the host made it): else
    /// a write first copies it (a model output may be a view of its weights).
    exclusive: bool,
}

// SAFETY: the tensor is owned (one reference of the storage's count is
// ours); through `&self` only the bytes are read, through `&mut self` they
// are written after making the storage exclusive. libtorch's refcounts are
// atomic, so dropping on another thread is fine.
unsafe impl Send for TorchBytes {}
unsafe impl Sync for TorchBytes {}

impl TorchBytes {
    /// Lends `t`, which must be on the CPU and contiguous.
    fn new(t: tch::Tensor, exclusive: bool) -> Result<TorchBytes, ModelError> {
        if t.device() != Device::Cpu || !t.is_contiguous() {
            return Err(ModelError::Forward("internal: only CPU, contiguous tensors are lent".into()));
        }
        let len = t.numel() * t.f_kind().map_err(torch_err)?.elt_size_in_bytes();
        let ptr = t.data_ptr() as *mut u8;
        Ok(TorchBytes { t, ptr, len, exclusive })
    }
}

impl LentBytes for TorchBytes {
    fn bytes(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `ptr` is the data of a contiguous CPU tensor of `len` bytes that `self.t` keeps alive.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        if !self.exclusive {
            self.t = self.t.copy();
            self.ptr = self.t.data_ptr() as *mut u8;
            self.exclusive = true;
        }
        if self.len == 0 {
            return &mut [];
        }
        // SAFETY: as in `bytes`, and the storage is ours alone.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

fn dims(shape: &[u64]) -> Vec<i64> {
    shape.iter().map(|&d| d as i64).collect()
}

/// Tensors smaller than this are the host's own bytes, copied on their way
/// into and out of libtorch: for a row of features, a copy costs less than
/// libtorch's allocation and the calls lending its memory take.
pub const LEND_MIN_BYTES: usize = 64 * 1024;

/// Bytes for a tensor of `dtype` and `shape`: allocated by libtorch on the
/// CPU (zero-filled when `zeroed`) so that the model can run on them as they
/// are, or the host's own below [`LEND_MIN_BYTES`] (always zero-filled).
pub fn alloc(dtype: Dtype, shape: &[u64], zeroed: bool) -> Result<Buffer, ModelError> {
    let bytes = shape.iter().try_fold(dtype.size(), |n, &d| n.checked_mul(d)).and_then(|n| usize::try_from(n).ok());
    match bytes {
        Some(n) if n < LEND_MIN_BYTES => return Ok(Buffer::Host(vec![0; n])),
        None => return Err(ModelError::Forward(format!("a {dtype} tensor of shape {shape:?} is too large"))),
        Some(_) => {}
    }
    let options = (kind_of(dtype), Device::Cpu);
    let t = if zeroed { tch::Tensor::f_zeros(dims(shape), options) } else { tch::Tensor::f_empty(dims(shape), options) };
    Ok(Buffer::Lent(Box::new(TorchBytes::new(t.map_err(torch_err)?, true)?)))
}

/// The libtorch device for `spec`; `cuda:N` fails when that device is absent.
pub fn resolve(spec: DeviceSpec) -> Result<Device, ModelError> {
    match spec {
        DeviceSpec::Auto => Ok(Device::cuda_if_available()),
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Cuda(n) => {
            let count = tch::Cuda::device_count() as usize;
            if n < count {
                Ok(Device::Cuda(n))
            } else {
                Err(ModelError::Device(format!(
                    "cuda:{n} requested but libtorch sees {count} CUDA device(s) \
                     (a host built without the `cuda` feature sees none)"
                )))
            }
        }
    }
}

/// What this binary's libtorch offers: whether it was built with the
/// `cuda` feature, whether `libtorch_cuda` is loaded in this process (the
/// link really happened), and the CUDA devices libtorch sees.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeviceReport {
    /// Built with `--features cuda`.
    pub cuda_feature: bool,
    /// `libtorch_cuda.so` is mapped into this process.
    pub libtorch_cuda_loaded: bool,
    /// CUDA devices libtorch sees (0 on a machine without a GPU).
    pub cuda_devices: usize,
    /// Whether cuDNN is usable.
    pub cudnn: bool,
    /// Where `auto` puts a model.
    pub auto: String,
}

/// The device report of this process.
pub fn devices() -> DeviceReport {
    let cuda_devices = tch::Cuda::device_count().max(0) as usize;
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    DeviceReport {
        cuda_feature: cfg!(feature = "cuda"),
        libtorch_cuda_loaded: maps.contains("libtorch_cuda.so"),
        cuda_devices,
        cudnn: cuda_devices > 0 && tch::Cuda::cudnn_is_available(),
        auto: device_name(Device::cuda_if_available()),
    }
}

/// libtorch's intra-op thread count before the host changed it (read once,
/// on the first call: make it before any executor thread sets its own).
pub fn default_threads() -> usize {
    static DEFAULT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *DEFAULT.get_or_init(|| tch::get_num_threads().max(1) as usize)
}

/// Sets the calling thread's intra-op thread count. libtorch keeps it per
/// thread (OpenMP's and MKL's), initialised on a thread's first query from
/// the process-wide last value: the query first, so that it cannot later
/// replace this thread's own count.
pub fn set_thread_threads(n: usize) {
    let _ = tch::get_num_threads();
    tch::set_num_threads(n.clamp(1, 256) as i32);
}

/// The calling thread's intra-op thread count.
pub fn thread_threads() -> usize {
    tch::get_num_threads().max(0) as usize
}

/// Shows a device as `cpu` or `cuda:N`.
pub fn device_name(d: Device) -> String {
    match d {
        Device::Cuda(n) => format!("cuda:{n}"),
        _ => "cpu".to_string(),
    }
}

/// The libtorch kind of a dtype.
pub fn kind_of(dtype: Dtype) -> Kind {
    match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::U8 => Kind::Uint8,
        Dtype::Bool => Kind::Bool,
    }
}

/// The dtype of a libtorch kind, if the host carries it.
pub fn dtype_of(kind: Kind) -> Result<Dtype, ModelError> {
    Ok(match kind {
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Uint8 => Dtype::U8,
        Kind::Bool => Dtype::Bool,
        other => return Err(ModelError::Output(format!("a tensor of unsupported element type {other:?}"))),
    })
}

fn torch_err(e: tch::TchError) -> ModelError {
    ModelError::Forward(short_message(&e.to_string()))
}

/// libtorch's message reduced to the line that names the problem: the last
/// `SomethingError: …` line (a TorchScript traceback ends with it), else
/// the first line. The whole message, C++ backtrace and all, goes to the
/// debug log.
pub fn short_message(full: &str) -> String {
    let lines: Vec<&str> = full.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if lines.len() > 1 {
        tracing::debug!("libtorch said: {full}");
    }
    let is_error_line = |l: &&&str| l.split_once(": ").is_some_and(|(head, _)| head.ends_with("Error") && !head.contains(' '));
    let line = lines.iter().skip(1).rev().find(is_error_line).or(lines.first()).copied().unwrap_or_default();
    line.strip_prefix("Internal torch error: ").unwrap_or(line).to_string()
}

/// A libtorch tensor (on the CPU) of `t`, after validation: its own bytes
/// when libtorch lent them (a view in `t`'s shape, no copy), else a copy.
pub fn to_torch(t: &Tensor) -> Result<tch::Tensor, ModelError> {
    t.validate()?;
    if let Buffer::Lent(lent) = &t.data {
        if let Some(tb) = lent.as_any().downcast_ref::<TorchBytes>() {
            if tb.t.f_kind().map_err(torch_err)? == kind_of(t.dtype) {
                return tb.t.f_reshape(dims(&t.shape)).map_err(torch_err);
            }
        }
    }
    tch::Tensor::f_from_data_size(&t.data, &dims(&t.shape), kind_of(t.dtype)).map_err(torch_err)
}

/// A libtorch tensor (any device, any layout) as a host tensor: copied to
/// the CPU and made contiguous only if it is not already, then lent (or,
/// below [`LEND_MIN_BYTES`], copied into the host's own bytes).
pub fn from_torch(t: &tch::Tensor) -> Result<Tensor, ModelError> {
    let dtype = dtype_of(t.f_kind().map_err(torch_err)?)?;
    let t = t.f_to_device(Device::Cpu).map_err(torch_err)?.f_contiguous().map_err(torch_err)?;
    let shape: Vec<u64> = t.size().iter().map(|&d| d as u64).collect();
    let numel = t.numel();
    if numel * dtype.size() as usize >= LEND_MIN_BYTES {
        return Ok(Tensor { dtype, shape, data: Buffer::Lent(Box::new(TorchBytes::new(t, false)?)) });
    }
    let mut data = vec![0u8; numel * dtype.size() as usize];
    t.f_copy_data_u8(&mut data, numel).map_err(torch_err)?;
    Ok(Tensor { dtype, shape, data: data.into() })
}

/// The model inputs for a group of items, each `[rows, ...]` with the same
/// inputs (see `batch::compatible`): one item's as they are, several
/// items' concatenated along dimension 0 (one copy).
pub fn inputs(items: &[&[Tensor]]) -> Result<Vec<tch::Tensor>, ModelError> {
    let [first, rest @ ..] = items else { return Ok(Vec::new()) };
    if rest.is_empty() {
        return first.iter().map(to_torch).collect();
    }
    (0..first.len())
        .map(|k| {
            let parts = items.iter().map(|i| to_torch(&i[k])).collect::<Result<Vec<_>, _>>()?;
            tch::Tensor::f_cat(&parts, 0).map_err(torch_err)
        })
        .collect()
}

/// One forward pass of `module` on `inputs` (moved to `device`); the
/// outputs flattened in order, on the CPU.
pub fn run(module: &CModule, device: Device, inputs: Vec<tch::Tensor>) -> Result<Vec<tch::Tensor>, ModelError> {
    let ivalues = inputs
        .into_iter()
        .map(|t| Ok(IValue::Tensor(if device == Device::Cpu { t } else { t.f_to_device(device).map_err(torch_err)? })))
        .collect::<Result<Vec<_>, ModelError>>()?;
    let out = module.forward_is(&ivalues).map_err(torch_err)?;
    let mut tensors = Vec::new();
    flatten(out, &mut tensors)?;
    Ok(tensors)
}

/// One forward pass on one item's inputs, the outputs lent back to the host.
pub fn forward(module: &CModule, device: Device, inputs: &[Tensor]) -> Result<Vec<Tensor>, ModelError> {
    run(module, device, self::inputs(&[inputs])?)?.iter().map(from_torch).collect()
}

/// Splits batched outputs back into per-item outputs of `counts` rows each,
/// as views of them (no copy); `None` when an output does not carry the
/// batch dimension (the caller then runs the items one by one).
pub fn split(outputs: Vec<tch::Tensor>, counts: &[usize]) -> Result<Option<Vec<Vec<Tensor>>>, ModelError> {
    let total: usize = counts.iter().sum();
    let mut per_item: Vec<Vec<Tensor>> = counts.iter().map(|_| Vec::with_capacity(outputs.len())).collect();
    for out in outputs {
        let out = out.f_to_device(Device::Cpu).map_err(torch_err)?.f_contiguous().map_err(torch_err)?;
        if out.dim() == 0 || out.size()[0] != total as i64 {
            return Ok(None);
        }
        let mut offset = 0;
        for (slot, &n) in per_item.iter_mut().zip(counts) {
            slot.push(from_torch(&out.f_narrow(0, offset as i64, n as i64).map_err(torch_err)?)?);
            offset += n;
        }
    }
    Ok(Some(per_item))
}

/// Flattens a tensor, or nested tuples/lists/dicts of tensors, in order.
fn flatten(v: IValue, out: &mut Vec<tch::Tensor>) -> Result<(), ModelError> {
    match v {
        IValue::Tensor(t) => out.push(t),
        IValue::TensorList(ts) => out.extend(ts),
        IValue::Tuple(vs) | IValue::GenericList(vs) => {
            for v in vs {
                flatten(v, out)?;
            }
        }
        IValue::GenericDict(kvs) => {
            for (_, v) in kvs {
                flatten(v, out)?;
            }
        }
        other => return Err(ModelError::Output(format!("{other:?}").chars().take(80).collect())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_all_dtypes() {
        for dtype in Dtype::ALL {
            let size = dtype.size();
            let data: Vec<u8> = (0..6 * size).map(|i| if dtype == Dtype::Bool { (i % 2) as u8 } else { i as u8 }).collect();
            let t = Tensor { dtype, shape: vec![2, 3], data: data.into() };
            let back = from_torch(&to_torch(&t).unwrap()).unwrap();
            assert_eq!(back, t, "{dtype:?}");
        }
    }

    fn t(rows: u64, cols: u64, start: u8) -> Tensor {
        let data: Vec<u8> = (0..rows * cols * 4).map(|i| start.wrapping_add(i as u8)).collect();
        Tensor { dtype: Dtype::F32, shape: vec![rows, cols], data: data.into() }
    }

    #[test]
    fn concat_then_split_is_exact() {
        let a = vec![t(1, 3, 0)];
        let b = vec![t(2, 3, 100)];
        let c = vec![t(4, 3, 200)];
        let joined = inputs(&[&a, &b, &c]).unwrap();
        assert_eq!(joined[0].size(), vec![7, 3]);
        let back = split(joined, &[1, 2, 4]).unwrap().expect("splits");
        assert_eq!(back, vec![a, b, c]);
        let scalar = tch::Tensor::from(1.5f32);
        assert!(split(vec![scalar], &[1, 2]).unwrap().is_none());
        assert!(split(vec![to_torch(&t(2, 3, 0)).unwrap()], &[1, 2]).unwrap().is_none());
    }

    #[test]
    fn lent_bytes_reach_libtorch_without_a_copy_and_outputs_copy_on_write() {
        let n = LEND_MIN_BYTES as u64 / 4;
        assert!(matches!(alloc(Dtype::F32, &[n - 1], false).unwrap(), Buffer::Host(_)), "small: the host's own");
        let mut x = Tensor { dtype: Dtype::F32, shape: vec![2, n / 2], data: alloc(Dtype::F32, &[n], true).unwrap() };
        assert!(matches!(x.data, Buffer::Lent(_)));
        x.data[..16].copy_from_slice(&[1f32, 2.0, 3.0, 4.0].map(f32::to_le_bytes).concat());
        let at = x.data.as_ptr();
        let tt = to_torch(&x).unwrap();
        assert_eq!(tt.data_ptr() as *const u8, at, "the model runs on the plugin's own bytes");
        assert_eq!(tt.size(), vec![2, n as i64 / 2], "in the host tensor's shape");
        // An output that is a view of something else (here: `tt`) is copied before a write.
        let mut out = from_torch(&tt).unwrap();
        assert_eq!(out.data.as_ptr(), at, "lent back without a copy");
        out.data[0] = 0xff;
        assert_ne!(out.data.as_ptr(), at, "written: copied first");
        assert_eq!(x.data[0], 0, "the original is untouched");
    }

    #[test]
    fn bad_tensors_are_named_not_passed_to_libtorch() {
        let t = Tensor { dtype: Dtype::F32, shape: vec![2, 3], data: vec![0; 20].into() };
        let e = to_torch(&t).unwrap_err();
        assert!(e.to_string().contains("needs 24 bytes, has 20"), "{e}");
        let half = tch::Tensor::zeros([2], (Kind::Half, Device::Cpu));
        assert!(from_torch(&half).unwrap_err().to_string().contains("Half"));
    }

    #[test]
    fn cuda_absent_is_a_clear_error_and_auto_falls_back() {
        if tch::Cuda::device_count() == 0 {
            assert_eq!(resolve(DeviceSpec::Auto).unwrap(), Device::Cpu);
            let e = resolve(DeviceSpec::Cuda(0)).unwrap_err();
            assert!(e.to_string().contains("cuda:0 requested"), "{e}");
        }
        assert_eq!(device_name(Device::Cuda(2)), "cuda:2");
        let report = devices();
        assert_eq!(report.cuda_feature, cfg!(feature = "cuda"));
        if !cfg!(feature = "cuda") {
            assert!(!report.libtorch_cuda_loaded, "a CPU build maps no libtorch_cuda");
        }
        assert_eq!(report.auto == "cpu", report.cuda_devices == 0);
    }

    #[test]
    fn libtorch_messages_are_cut_to_the_line_that_names_the_problem() {
        let traceback = "The following operation failed in the TorchScript interpreter.\n\
            Traceback of TorchScript, serialized code (most recent call last):\n\
              File \"code/__torch__.py\", line 10, in forward\n\
                input = torch.linear(x, w)\n\
            RuntimeError: mat1 and mat2 shapes cannot be multiplied (1x32 and 64x8)\n";
        assert_eq!(short_message(traceback), "RuntimeError: mat1 and mat2 shapes cannot be multiplied (1x32 and 64x8)");
        let load = "Internal torch error: open file failed because of errno 2 on fopen: No such file or directory, file path: m.pt\n\
            Exception raised from RAIIFile at ../caffe2/serialize/file_adapter.cc:30 (most recent call first):\n\
            frame #0: c10::Error::Error(c10::SourceLocation, std::string) + 0x9c";
        assert_eq!(short_message(load), "open file failed because of errno 2 on fopen: No such file or directory, file path: m.pt");
        assert_eq!(short_message("one line"), "one line");
    }
}
