//! libtorch at the edge: device resolution, the host's tensors to and from
//! `tch::Tensor` (only here), and one forward call.
//!
//! Without copies where the bytes allow it: a host tensor whose bytes
//! libtorch lent ([`alloc`], the tensors plugins make) goes into the model
//! as it is; a batch of items is one concatenation; the model's outputs are
//! lent back to the host ([`from_torch`]) and split by views, so they stay
//! libtorch tensors until the plugin reads them. On `cuda:N` a batch's
//! inputs are assembled in page-locked staging memory kept by the executor
//! thread ([`Staging`]) and copied to the device without blocking; the
//! outputs come back once, all copies issued before one wait.

use tch::{CModule, Device, IValue, Kind};
use tensorgate_backend::{Buffer, DeviceSpec, Dtype, LentBytes, ModelError, Tensor};

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

/// The device for `spec`; `cuda:N` fails when that device is absent.
pub fn resolve(spec: DeviceSpec) -> Result<tensorgate_backend::Device, ModelError> {
    match spec {
        DeviceSpec::Auto => Ok(ours(Device::cuda_if_available())),
        DeviceSpec::Cpu => Ok(tensorgate_backend::Device::Cpu),
        DeviceSpec::Cuda(n) => {
            let count = tch::Cuda::device_count() as usize;
            if n < count {
                Ok(tensorgate_backend::Device::Cuda(n))
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
        auto: ours(Device::cuda_if_available()).to_string(),
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

/// Sets the process-wide intra-op thread count (what threads that never
/// set their own inherit).
pub fn set_process_threads(n: usize) {
    tch::set_num_threads(n.clamp(1, 256) as i32);
}

/// The calling thread's intra-op thread count.
pub fn thread_threads() -> usize {
    tch::get_num_threads().max(0) as usize
}

/// libtorch's device for ours.
pub fn theirs(d: tensorgate_backend::Device) -> Device {
    match d {
        tensorgate_backend::Device::Cpu => Device::Cpu,
        tensorgate_backend::Device::Cuda(n) => Device::Cuda(n),
    }
}

/// Our device for libtorch's.
pub fn ours(d: Device) -> tensorgate_backend::Device {
    match d {
        Device::Cuda(n) => tensorgate_backend::Device::Cuda(n),
        _ => tensorgate_backend::Device::Cpu,
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
/// items' concatenated along dimension 0 (one copy). On the CPU.
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

/// Where an executor thread puts a batch's inputs on their way to its
/// device. On the CPU: nowhere, the model runs on them as they are (or on
/// one concatenation, [`inputs`]). On `cuda:N`: one host buffer per model
/// input, page-locked (pinned) and kept from batch to batch (grown when a
/// batch needs more); the items' bytes are written into it one after
/// another and the whole batch goes to the device in one copy that does not
/// block the thread (a DMA from pinned memory). A buffer is written again
/// only after the previous batch's outputs came back, which waits for
/// everything before it on the device, its input copy included.
pub struct Staging {
    device: Device,
    /// Page-lock the buffers and keep them from batch to batch (`cuda:N`).
    /// On the CPU each batch gets fresh buffers: the model's outputs may be
    /// views of its inputs, and they live on in the items' replies.
    pinned: bool,
    /// Flat `u8` buffers, one per model input.
    buffers: Vec<tch::Tensor>,
}

impl Staging {
    /// Staging for models on `device` (pinned buffers for `cuda:N`).
    pub fn new(device: Device) -> Staging {
        Staging { device, pinned: device != Device::Cpu, buffers: Vec::new() }
    }

    /// The device the inputs go to.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The inputs of a group of items on this staging's device. On the CPU
    /// one item's inputs are used as they are, and several items' are laid
    /// out in one fresh buffer each (one copy of their bytes, without a
    /// libtorch tensor per item and a concatenation).
    pub fn inputs(&mut self, items: &[&[Tensor]]) -> Result<Vec<tch::Tensor>, ModelError> {
        if self.device == Device::Cpu {
            if items.len() == 1 {
                return inputs(items);
            }
            let staged = self.stage(items);
            self.buffers.clear();
            return staged;
        }
        let host = self.stage(items)?;
        host.iter().map(|t| t.f_to_device_(self.device, t.f_kind().map_err(torch_err)?, true, false).map_err(torch_err)).collect()
    }

    /// The group's inputs in this staging's host buffers: input `k` of every
    /// item, one after another, as one `[total rows, ...]` tensor.
    fn stage(&mut self, items: &[&[Tensor]]) -> Result<Vec<tch::Tensor>, ModelError> {
        let Some(first) = items.first() else { return Ok(Vec::new()) };
        (0..first.len())
            .map(|k| {
                let mut rows = 0u64;
                let mut bytes = 0usize;
                for item in items {
                    let t = &item[k];
                    t.validate()?;
                    rows += t.shape.first().copied().unwrap_or(1);
                    bytes += t.data.len();
                }
                let head = &first[k];
                let shape: Vec<u64> = std::iter::once(rows).chain(head.shape.iter().skip(1).copied()).collect();
                let buffer = self.buffer(k, bytes)?;
                let base = buffer.data_ptr() as *mut u8;
                let mut at = 0usize;
                for item in items {
                    let src: &[u8] = &item[k].data;
                    // SAFETY: `buffer` is a contiguous CPU u8 tensor of at least
                    // `bytes` elements (`buffer`), owned by this staging and used
                    // by nobody else now; `at + src.len() <= bytes`.
                    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), base.add(at), src.len()) };
                    at += src.len();
                }
                let kind = kind_of(head.dtype);
                buffer
                    .f_narrow(0, 0, bytes as i64)
                    .and_then(|b| b.f_view_dtype(kind))
                    .and_then(|b| b.f_view(dims(&shape).as_slice()))
                    .map_err(torch_err)
            })
            .collect()
    }

    /// Buffer `k`, at least `bytes` long: on the CPU a fresh one of exactly
    /// that length; pinned, the one kept, replaced by one rounded up to a
    /// power of two when it is shorter.
    fn buffer(&mut self, k: usize, bytes: usize) -> Result<&tch::Tensor, ModelError> {
        let empty = |len: usize| tch::Tensor::f_empty([len as i64], (Kind::Uint8, Device::Cpu)).map_err(torch_err);
        while self.buffers.len() <= k {
            self.buffers.push(empty(0)?);
        }
        if !self.pinned {
            self.buffers[k] = empty(bytes)?;
        } else if self.buffers[k].numel() < bytes {
            let len = bytes.max(4096).checked_next_power_of_two().unwrap_or(bytes);
            self.buffers[k] = empty(len)?.f_pin_memory(self.device).map_err(torch_err)?;
        }
        Ok(&self.buffers[k])
    }
}

/// Brings outputs to the CPU: from a device, every copy is issued without
/// blocking (into pinned memory) and the thread waits once, for all of them.
pub fn to_cpu(outputs: Vec<tch::Tensor>) -> Result<Vec<tch::Tensor>, ModelError> {
    let mut wait = None;
    let cpu = outputs
        .into_iter()
        .map(|t| match t.device() {
            Device::Cpu => Ok(t),
            d => {
                wait = Some(d);
                t.f_to_device_(Device::Cpu, t.f_kind().map_err(torch_err)?, true, false).map_err(torch_err)
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(Device::Cuda(n)) = wait {
        tch::Cuda::synchronize(n as i64);
    }
    Ok(cpu)
}

/// Waits for all work on `device` (after a failed forward, before its staging
/// buffers are written again: its input copy may still be in flight).
pub fn wait_for(device: Device) {
    if let Device::Cuda(n) = device {
        tch::Cuda::synchronize(n as i64);
    }
}

/// One forward pass of `module` on `items` (staged for its device); the
/// outputs flattened in order, on the CPU.
pub fn run(module: &CModule, staging: &mut Staging, items: &[&[Tensor]]) -> Result<Vec<tch::Tensor>, ModelError> {
    let ivalues: Vec<IValue> = staging.inputs(items)?.into_iter().map(IValue::Tensor).collect();
    let out = module.forward_is(&ivalues).map_err(torch_err)?;
    let mut tensors = Vec::new();
    flatten(out, &mut tensors)?;
    to_cpu(tensors)
}

/// One forward pass on one item's inputs, the outputs lent back to the host.
pub fn forward(module: &CModule, staging: &mut Staging, inputs: &[Tensor]) -> Result<Vec<Tensor>, ModelError> {
    run(module, staging, &[inputs])?.iter().map(from_torch).collect()
}

/// Splits batched outputs (on the CPU) back into per-item outputs of
/// `counts` rows each, as views of them (no copy); `None` when an output
/// does not carry the batch dimension (the caller then runs the items one
/// by one).
pub fn split(outputs: Vec<tch::Tensor>, counts: &[usize]) -> Result<Option<Vec<Vec<Tensor>>>, ModelError> {
    let total: usize = counts.iter().sum();
    let mut per_item: Vec<Vec<Tensor>> = counts.iter().map(|_| Vec::with_capacity(outputs.len())).collect();
    for out in outputs {
        let out = out.f_contiguous().map_err(torch_err)?;
        let size = out.size();
        if out.dim() == 0 || size[0] != total as i64 {
            return Ok(None);
        }
        let dtype = dtype_of(out.f_kind().map_err(torch_err)?)?;
        let inner: Vec<u64> = size[1..].iter().map(|&d| d as u64).collect();
        let row_bytes = inner.iter().product::<u64>() as usize * dtype.size() as usize;
        let largest = counts.iter().copied().max().unwrap_or(0) * row_bytes;
        if largest < LEND_MIN_BYTES {
            // Small rows: each item's bytes copied straight out of the one
            // output (what `from_torch` of a view would copy, without the
            // libtorch calls per item).
            let whole = TorchBytes::new(out, false)?;
            let bytes = whole.bytes();
            let mut at = 0;
            for (slot, &n) in per_item.iter_mut().zip(counts) {
                let shape = std::iter::once(n as u64).chain(inner.iter().copied()).collect();
                slot.push(Tensor { dtype, shape, data: bytes[at..at + n * row_bytes].to_vec().into() });
                at += n * row_bytes;
            }
            continue;
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
        // Rows large enough to be lent go back as views (the other branch).
        let wide = LEND_MIN_BYTES as u64 / 4;
        let (x, y) = (vec![t(1, wide, 3)], vec![t(2, wide, 5)]);
        let back = split(inputs(&[&x, &y]).unwrap(), &[1, 2]).unwrap().expect("splits");
        assert!(matches!(back[1][0].data, Buffer::Lent(_)));
        assert_eq!(back, vec![x, y]);
        let scalar = tch::Tensor::from(1.5f32);
        assert!(split(vec![scalar], &[1, 2]).unwrap().is_none());
        assert!(split(vec![to_torch(&t(2, 3, 0)).unwrap()], &[1, 2]).unwrap().is_none());
    }

    #[test]
    fn staging_lays_a_batch_out_like_the_concatenation() {
        // Bytes, not values: the test patterns include NaNs.
        let bytes_of = |t: &tch::Tensor| from_torch(t).unwrap().data.to_vec();
        // The staging the CPU path uses for several items (the CUDA path's, unpinned).
        let mut staging = Staging::new(Device::Cpu);
        let (a, b, c) = (vec![t(1, 3, 0), t(1, 2, 7)], vec![t(2, 3, 100), t(2, 2, 9)], vec![t(4, 3, 200), t(4, 2, 1)]);
        let want = inputs(&[&a, &b, &c]).unwrap();
        let staged = staging.stage(&[&a, &b, &c]).unwrap();
        assert_eq!(staged.len(), 2);
        for (s, w) in staged.iter().zip(&want) {
            assert_eq!(s.size(), w.size());
            assert_eq!(s.kind(), w.kind());
            assert_eq!(bytes_of(s), bytes_of(w), "staged bytes equal the concatenation");
        }
        let again = staging.stage(&[&c, &a]).unwrap();
        assert_eq!(bytes_of(&again[0]), bytes_of(&inputs(&[&c, &a]).unwrap()[0]));
        let big: Vec<Vec<Tensor>> = (0..400).map(|i| vec![t(1, 3, i as u8), t(1, 2, 0)]).collect();
        let refs: Vec<&[Tensor]> = big.iter().map(Vec::as_slice).collect();
        let staged = staging.stage(&refs).unwrap();
        assert_eq!(staged[0].size(), vec![400, 3], "a larger batch grows the buffer");
        assert_eq!(bytes_of(&staged[0]), bytes_of(&inputs(&refs).unwrap()[0]));
        let mut short = t(1, 3, 0);
        short.data = vec![0; 5].into();
        assert!(staging.stage(&[&[short], &[t(1, 3, 0)]]).is_err(), "a bad tensor is refused before any copy");
        // What the model runs on: the staged batch, in fresh memory for every batch on the CPU.
        let first = staging.inputs(&[&a, &b]).unwrap();
        let second = staging.inputs(&[&a, &b]).unwrap();
        assert_eq!(bytes_of(&first[0]), bytes_of(&second[0]));
        assert_ne!(first[0].data_ptr(), second[0].data_ptr(), "a batch's outputs may view its inputs: never overwritten");
        let one = staging.inputs(&[&c]).unwrap();
        assert_eq!(one[0].size(), vec![4, 3], "one item's inputs as they are");
        let outs = to_cpu(vec![tch::Tensor::from(1.0f32)]).unwrap();
        assert_eq!(outs[0].device(), Device::Cpu);
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
            assert_eq!(resolve(DeviceSpec::Auto).unwrap(), tensorgate_backend::Device::Cpu);
            let e = resolve(DeviceSpec::Cuda(0)).unwrap_err();
            assert!(e.to_string().contains("cuda:0 requested"), "{e}");
        }
        assert_eq!(ours(theirs(tensorgate_backend::Device::Cuda(2))), tensorgate_backend::Device::Cuda(2));
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
