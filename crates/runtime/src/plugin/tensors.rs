//! Host-owned tensors behind the plugin's handles (contract 0.2 on): the
//! per-call table of live tensors and the items' payloads, their caps, and the host
//! side of the `tensor` and `payload` resources and of the `ops` interface.
//!
//! A handle's representation is a number never reused by the instance, so a
//! handle kept past its call (the table is emptied when a call returns) is
//! refused rather than aliasing a newer tensor. Errors a plugin can handle
//! (a bad range, a cap, a bad index) are returned to it as `plugin-error`;
//! a dead handle where no error can be returned traps the call.

use std::collections::HashMap;

use bytes::Bytes;
use tensorgate_npy::Descr;
use wasmtime::component::Resource;

use super::wit::{self, PluginError};
use super::HostState;
use tensorgate_backend::{Dtype, Tensor};

/// What a `tensor` handle points at (its representation indexes [`TensorTable`]).
pub struct TensorHandle;
/// What a `payload` handle points at.
pub struct PayloadHandle;

/// Most tensors a call may hold at once, unless the manifest says otherwise.
pub const DEFAULT_MAX_TENSORS: usize = 4096;
/// Most bytes of tensors a call may hold at once, unless the manifest says otherwise.
pub const DEFAULT_MAX_TENSOR_BYTES: u64 = 1 << 30;

/// Per-call limits on the tensors a plugin makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorCaps {
    /// Tensors made by the plugin and alive at once.
    pub max_tensors: usize,
    /// Their bytes.
    pub max_bytes: u64,
}

impl Default for TensorCaps {
    fn default() -> Self {
        TensorCaps { max_tensors: DEFAULT_MAX_TENSORS, max_bytes: DEFAULT_MAX_TENSOR_BYTES }
    }
}

struct Entry {
    tensor: Tensor,
    /// Made by the plugin (counted against the caps), not handed in.
    counted: bool,
}

/// The tensors and payload of the current call of one instance.
pub struct TensorTable {
    caps: TensorCaps,
    next: u32,
    live: HashMap<u32, Entry>,
    made: usize,
    bytes: u64,
    /// The caps are for one item: a call given `scale` items may hold that many times as much.
    scale: u64,
    payloads: HashMap<u32, Bytes>,
    /// Bytes that crossed the component boundary during this call (lists
    /// of bytes in and out: payload and tensor reads, writes, contexts).
    pub crossed: u64,
}

fn error(code: &str, message: impl Into<String>) -> PluginError {
    PluginError { code: code.to_string(), message: message.into() }
}

fn op_error(e: tensorgate_ops::OpError) -> PluginError {
    error(e.code(), e.to_string())
}

/// A pixel list, i32 or i64 `[n, 2]` (row, col), as flat i64 values.
fn pixel_list(t: &Tensor) -> Result<Vec<i64>, PluginError> {
    if t.shape.len() != 2 || t.shape[1] != 2 {
        return Err(error("tiles", format!("`pixels` must be [n, 2] (row, col), got shape {:?}", t.shape)));
    }
    match t.dtype {
        Dtype::I64 => Ok(tensorgate_ops::bytes::indices(&t.data)),
        Dtype::I32 => Ok(t.data.as_chunks::<4>().0.iter().map(|b| i32::from_le_bytes(*b) as i64).collect()),
        other => Err(error("tiles", format!("`pixels` must be i32 or i64, got {other}"))),
    }
}

/// The grid of a tile op's arguments.
fn grid(height: u64, width: u64, tile: u64, overlap: u64) -> Result<tensorgate_ops::tiles::Grid, PluginError> {
    let size = |v: u64| usize::try_from(v).map_err(|_| error("tiles", format!("{v} is too large")));
    tensorgate_ops::tiles::Grid::new(size(height)?, size(width)?, size(tile)?, size(overlap)?).map_err(|e| error("tiles", e.to_string()))
}

/// The bytes of one element of value 1 of `dtype`.
fn one(dtype: Dtype) -> Vec<u8> {
    match dtype {
        Dtype::F32 => 1f32.to_le_bytes().to_vec(),
        Dtype::F64 => 1f64.to_le_bytes().to_vec(),
        Dtype::I64 => 1i64.to_le_bytes().to_vec(),
        Dtype::I32 => 1i32.to_le_bytes().to_vec(),
        Dtype::U8 | Dtype::Bool => vec![1],
    }
}

/// The trap for a handle that is not live where no error can be returned.
fn dead(what: &str, rep: u32) -> wasmtime::Error {
    wasmtime::Error::msg(format!("{what} handle {rep} is not live: handles last only for the call that made them"))
}

impl TensorTable {
    /// An empty table with `caps`.
    pub fn new(caps: TensorCaps) -> Self {
        TensorTable { caps, next: 1, live: HashMap::new(), made: 0, bytes: 0, scale: 1, payloads: HashMap::new(), crossed: 0 }
    }

    /// Frees every tensor and payload (the end of a call).
    pub fn clear(&mut self) {
        self.live.clear();
        self.payloads.clear();
        (self.made, self.bytes, self.scale) = (0, 0, 1);
        self.crossed = 0;
    }

    /// Starts a call given `items` items: the caps scale with them.
    pub fn begin(&mut self, items: usize) {
        self.clear();
        self.scale = items.max(1) as u64;
    }

    fn max_tensors(&self) -> usize {
        self.caps.max_tensors.saturating_mul(self.scale as usize)
    }

    fn max_bytes(&self) -> u64 {
        self.caps.max_bytes.saturating_mul(self.scale)
    }

    /// Whether handle numbers are nearly used up (the instance should be replaced).
    pub fn exhausted(&self) -> bool {
        self.next > u32::MAX - (1 << 24)
    }

    fn fresh(&mut self) -> u32 {
        let rep = self.next;
        self.next = self.next.saturating_add(1);
        rep
    }

    /// Takes in a tensor handed to the plugin (not counted against the caps).
    pub fn hand_in(&mut self, tensor: Tensor) -> Resource<TensorHandle> {
        let rep = self.fresh();
        self.live.insert(rep, Entry { tensor, counted: false });
        Resource::new_own(rep)
    }

    /// Adds a tensor the plugin made, within the caps.
    fn make(&mut self, tensor: Tensor) -> Result<Resource<TensorHandle>, PluginError> {
        let size = tensor.data.len() as u64;
        if self.made >= self.max_tensors() {
            return Err(error("tensor-cap", format!(
                "the call already holds {} tensors, the cap ([plugin] max_tensors per item)", self.max_tensors()
            )));
        }
        if self.bytes.saturating_add(size) > self.max_bytes() {
            return Err(error("tensor-cap", format!(
                "a tensor of {size} bytes would bring the call's tensors to {} bytes, over the cap of {} ([plugin] max_tensor_mb per item)",
                self.bytes.saturating_add(size), self.max_bytes()
            )));
        }
        self.made += 1;
        self.bytes += size;
        let rep = self.fresh();
        self.live.insert(rep, Entry { tensor, counted: true });
        Ok(Resource::new_own(rep))
    }

    /// Makes a zero-filled tensor, checking the shape's size against the caps first.
    fn zeros(&mut self, dtype: Dtype, shape: Vec<u64>) -> Result<Resource<TensorHandle>, PluginError> {
        let bytes = byte_len(dtype, &shape)?;
        if self.bytes.saturating_add(bytes as u64) > self.max_bytes() {
            return Err(error("tensor-cap", format!(
                "a tensor of {bytes} bytes would bring the call's tensors over the cap of {} bytes ([plugin] max_tensor_mb per item)",
                self.max_bytes()
            )));
        }
        let data = crate::backends::alloc(dtype, &shape, true).map_err(|e| error("alloc", e.to_string()))?;
        self.make(Tensor { dtype, shape, data })
    }

    fn get(&self, h: &Resource<TensorHandle>) -> Result<&Tensor, PluginError> {
        self.live.get(&h.rep()).map(|e| &e.tensor).ok_or_else(|| error("handle", dead("tensor", h.rep()).to_string()))
    }

    fn get_mut(&mut self, h: &Resource<TensorHandle>) -> Result<&mut Tensor, PluginError> {
        let rep = h.rep();
        self.live.get_mut(&rep).map(|e| &mut e.tensor).ok_or_else(|| error("handle", dead("tensor", rep).to_string()))
    }

    /// Takes a tensor the plugin hands back (a model input, a kept tensor,
    /// a reply array) out of the table.
    pub fn take(&mut self, h: Resource<TensorHandle>) -> Result<Tensor, PluginError> {
        let rep = h.rep();
        let entry = self.live.remove(&rep).ok_or_else(|| error("handle", dead("tensor", rep).to_string()))?;
        if entry.counted {
            self.made -= 1;
            self.bytes -= entry.tensor.data.len() as u64;
        }
        Ok(entry.tensor)
    }

    fn drop_tensor(&mut self, rep: u32) {
        if let Some(entry) = self.live.remove(&rep) {
            if entry.counted {
                self.made -= 1;
                self.bytes -= entry.tensor.data.len() as u64;
            }
        }
    }

    /// Runs `f` on the tensor behind `target`, taken out of the table for
    /// the while so that the tensors behind `others` can be read beside it;
    /// `target` may not be one of `others`.
    fn with_target<R>(
        &mut self,
        target: &Resource<TensorHandle>,
        others: &[&Resource<TensorHandle>],
        f: impl FnOnce(&Self, &mut Tensor) -> Result<R, PluginError>,
    ) -> Result<R, PluginError> {
        if others.iter().any(|o| o.rep() == target.rep()) {
            return Err(error("op", "the target tensor is also an argument read from; pass another tensor"));
        }
        let mut entry = self.live.remove(&target.rep()).ok_or_else(|| error("handle", dead("tensor", target.rep()).to_string()))?;
        let result = f(self, &mut entry.tensor);
        self.live.insert(target.rep(), entry);
        result
    }

    /// Adds the payload of one item of the call being started.
    pub fn add_payload(&mut self, bytes: Bytes) -> Resource<PayloadHandle> {
        let rep = self.fresh();
        self.payloads.insert(rep, bytes);
        Resource::new_own(rep)
    }

    fn payload(&self, h: &Resource<PayloadHandle>) -> Result<&Bytes, PluginError> {
        self.payloads.get(&h.rep()).ok_or_else(|| error("handle", dead("payload", h.rep()).to_string()))
    }
}

/// A tensor of `dtype` and `shape` holding a copy of `bytes` (which must
/// match), in memory libtorch allocated: the model runs on it as it is.
fn filled(dtype: Dtype, shape: Vec<u64>, bytes: &[u8]) -> Result<Tensor, PluginError> {
    let need = byte_len(dtype, &shape)?;
    if need != bytes.len() {
        return Err(error("tensor", format!("a {dtype} tensor of shape {shape:?} needs {need} bytes, got {}", bytes.len())));
    }
    let mut data = crate::backends::alloc(dtype, &shape, false).map_err(|e| error("alloc", e.to_string()))?;
    data.copy_from_slice(bytes);
    Ok(Tensor { dtype, shape, data })
}

/// Bytes of a tensor of `dtype` and `shape`, checked.
fn byte_len(dtype: Dtype, shape: &[u64]) -> Result<usize, PluginError> {
    tensorgate_ops::elements(shape)
        .ok()
        .and_then(|n| n.checked_mul(dtype.size() as usize))
        .ok_or_else(|| error("shape", format!("a {dtype} tensor of shape {shape:?} is too large")))
}

/// The host dtype of a NumPy descriptor.
fn descr_dtype(d: &Descr, name: &str) -> Result<Dtype, PluginError> {
    Ok(match d.as_str() {
        "<f4" => Dtype::F32,
        "<f8" => Dtype::F64,
        "<i8" => Dtype::I64,
        "<i4" => Dtype::I32,
        "|u1" | "<u1" => Dtype::U8,
        "|b1" => Dtype::Bool,
        other => {
            return Err(error("npy", format!("npz entry '{name}': unsupported dtype '{other}' (use little-endian f4, f8, i8, i4, u1 or b1)")));
        }
    })
}

/// The NumPy descriptor of a host dtype.
pub fn dtype_descr(d: Dtype) -> Descr {
    match d {
        Dtype::F32 => Descr::F32,
        Dtype::F64 => Descr::F64,
        Dtype::I64 => Descr::I64,
        Dtype::I32 => Descr::I32,
        Dtype::U8 => Descr::U8,
        Dtype::Bool => Descr::BOOL,
    }
}

/// Writes named tensors as an uncompressed `.npz` (what the `npz` body asks for).
pub fn write_npz(entries: &[(String, Tensor)]) -> Result<Vec<u8>, PluginError> {
    let descrs: Vec<Descr> = entries.iter().map(|(_, t)| dtype_descr(t.dtype)).collect();
    let parts: Vec<(&str, &Descr, &[u64], &[u8])> =
        entries.iter().zip(&descrs).map(|((n, t), d)| (n.as_str(), d, t.shape.as_slice(), &t.data[..])).collect();
    tensorgate_npy::write_npz(&parts).map_err(|e| error("npz", format!("cannot write the reply's .npz: {e}")))
}

/// Reads an i64 index tensor as a flat list.
fn indices(t: &Tensor, what: &str) -> Result<Vec<i64>, PluginError> {
    if t.dtype != Dtype::I64 {
        return Err(error("op", format!("{what} must be an i64 tensor, got {} of shape {:?}", t.dtype, t.shape)));
    }
    Ok(tensorgate_ops::bytes::indices(&t.data))
}

impl wit::tensorgate::plugin::types::Host for HostState {}

impl wit::tensorgate::plugin::types::HostTensor for HostState {
    fn zeros(&mut self, dtype: wit::Dtype, shape: Vec<u64>) -> wasmtime::Result<Result<Resource<TensorHandle>, PluginError>> {
        Ok(self.tensors.zeros(dtype.into(), shape))
    }

    fn from_bytes(&mut self, dtype: wit::Dtype, shape: Vec<u64>, data: Vec<u8>) -> wasmtime::Result<Result<Resource<TensorHandle>, PluginError>> {
        self.tensors.crossed += data.len() as u64;
        Ok(filled(dtype.into(), shape, &data).and_then(|t| self.tensors.make(t)))
    }

    fn dtype(&mut self, h: Resource<TensorHandle>) -> wasmtime::Result<wit::Dtype> {
        let t = self.tensors.live.get(&h.rep()).ok_or_else(|| dead("tensor", h.rep()))?;
        Ok(t.tensor.dtype.into())
    }

    fn shape(&mut self, h: Resource<TensorHandle>) -> wasmtime::Result<Vec<u64>> {
        let t = self.tensors.live.get(&h.rep()).ok_or_else(|| dead("tensor", h.rep()))?;
        Ok(t.tensor.shape.clone())
    }

    fn read(&mut self, h: Resource<TensorHandle>, start: u64, count: u64) -> wasmtime::Result<Result<Vec<u8>, PluginError>> {
        let result = self.tensors.get(&h).and_then(|t| {
            let size = t.dtype.size();
            let n = t.data.len() as u64 / size;
            match start.checked_add(count) {
                Some(end) if end <= n => Ok(t.data[(start * size) as usize..(end * size) as usize].to_vec()),
                _ => Err(error("range", format!("elements {start}..{start}+{count} are outside the tensor's {n} (shape {:?})", t.shape))),
            }
        });
        if let Ok(bytes) = &result {
            self.tensors.crossed += bytes.len() as u64;
        }
        Ok(result)
    }

    fn write(&mut self, h: Resource<TensorHandle>, start: u64, data: Vec<u8>) -> wasmtime::Result<Result<(), PluginError>> {
        self.tensors.crossed += data.len() as u64;
        Ok(self.tensors.get_mut(&h).and_then(|t| {
            let size = t.dtype.size();
            let n = t.data.len() as u64 / size;
            if data.len() as u64 % size != 0 {
                return Err(error("range", format!("{} bytes are not whole {} elements", data.len(), t.dtype)));
            }
            let count = data.len() as u64 / size;
            match start.checked_add(count) {
                Some(end) if end <= n => {
                    t.data[(start * size) as usize..(end * size) as usize].copy_from_slice(&data);
                    Ok(())
                }
                _ => Err(error("range", format!("elements {start}..{start}+{count} are outside the tensor's {n} (shape {:?})", t.shape))),
            }
        }))
    }

    fn reshape(&mut self, h: Resource<TensorHandle>, shape: Vec<u64>) -> wasmtime::Result<Result<(), PluginError>> {
        Ok(self.tensors.get_mut(&h).and_then(|t| {
            let n = t.data.len() as u64 / t.dtype.size();
            match tensorgate_ops::elements(&shape) {
                Ok(m) if m as u64 == n => {
                    t.shape = shape;
                    Ok(())
                }
                _ => Err(error("shape", format!("cannot reshape {:?} ({n} elements) to {shape:?}", t.shape))),
            }
        }))
    }

    fn drop(&mut self, h: Resource<TensorHandle>) -> wasmtime::Result<()> {
        self.tensors.drop_tensor(h.rep());
        Ok(())
    }
}

impl wit::tensorgate::plugin::types::HostPayload for HostState {
    fn len(&mut self, h: Resource<PayloadHandle>) -> wasmtime::Result<u64> {
        match self.tensors.payloads.get(&h.rep()) {
            Some(bytes) => Ok(bytes.len() as u64),
            None => Err(dead("payload", h.rep())),
        }
    }

    fn read(&mut self, h: Resource<PayloadHandle>, offset: u64, len: u64) -> wasmtime::Result<Result<Vec<u8>, PluginError>> {
        let result = self.tensors.payload(&h).and_then(|bytes| match offset.checked_add(len) {
            Some(end) if end <= bytes.len() as u64 => Ok(bytes[offset as usize..end as usize].to_vec()),
            _ => Err(error("range", format!("bytes {offset}..{offset}+{len} are outside the item's {}", bytes.len()))),
        });
        if let Ok(b) = &result {
            self.tensors.crossed += b.len() as u64;
        }
        Ok(result)
    }

    fn tensor(&mut self, h: Resource<PayloadHandle>, offset: u64, dtype: wit::Dtype, shape: Vec<u64>) -> wasmtime::Result<Result<Resource<TensorHandle>, PluginError>> {
        let dtype: Dtype = dtype.into();
        let made = self.tensors.payload(&h).cloned().and_then(|bytes| {
            let need = byte_len(dtype, &shape)? as u64;
            match offset.checked_add(need) {
                Some(end) if end <= bytes.len() as u64 => filled(dtype, shape, &bytes[offset as usize..end as usize]),
                _ => Err(error("range", format!(
                    "a {dtype} tensor of shape {shape:?} ({need} bytes) at byte {offset} does not fit in the item's {} bytes", bytes.len()
                ))),
            }
        });
        Ok(made.and_then(|t| self.tensors.make(t)))
    }

    fn npz(&mut self, h: Resource<PayloadHandle>) -> wasmtime::Result<Result<Vec<(String, Resource<TensorHandle>)>, PluginError>> {
        let parsed = self.tensors.payload(&h).cloned().and_then(|bytes| {
            let arrays = tensorgate_npy::parse_npz(&bytes).map_err(|e| error("npy", e.to_string()))?;
            arrays
                .into_iter()
                .map(|(name, a)| {
                    let dtype = descr_dtype(&a.descr, &name)?;
                    Ok((name, filled(dtype, a.shape, a.data)?))
                })
                .collect::<Result<Vec<_>, PluginError>>()
        });
        Ok(parsed.and_then(|arrays| arrays.into_iter().map(|(n, t)| Ok((n, self.tensors.make(t)?))).collect()))
    }

    fn drop(&mut self, _h: Resource<PayloadHandle>) -> wasmtime::Result<()> {
        // Payloads live until the call returns, whether or not the plugin keeps their handles.
        Ok(())
    }
}

impl wit::tensorgate::plugin::ops::Host for HostState {
    fn select_above(&mut self, source: Resource<TensorHandle>, threshold: f32) -> wasmtime::Result<Result<wit::Selection, PluginError>> {
        let selected = self.tensors.get(&source).and_then(|t| {
            if t.dtype != Dtype::F32 {
                return Err(error("op", format!("select-above needs an f32 source, got {} of shape {:?}", t.dtype, t.shape)));
            }
            let (idx, vals) = tensorgate_ops::bytes::select_above_f32(&t.data, threshold);
            let n = idx.len() as u64;
            let idx: Vec<u8> = idx.iter().flat_map(|i| i.to_le_bytes()).collect();
            Ok((Tensor { dtype: Dtype::I64, shape: vec![n], data: idx.into() }, Tensor { dtype: Dtype::F32, shape: vec![n], data: vals.into() }))
        });
        Ok(selected.and_then(|(i, v)| {
            let indices = self.tensors.make(i)?;
            Ok(wit::Selection { indices, values: self.tensors.make(v)? })
        }))
    }

    fn gather(&mut self, source: Resource<TensorHandle>, idx: Resource<TensorHandle>, count: u64, stride: u64) -> wasmtime::Result<Result<Resource<TensorHandle>, PluginError>> {
        let gathered = (|| {
            let s = self.tensors.get(&source)?;
            let at = indices(self.tensors.get(&idx)?, "gather's indices")?;
            let (count, stride) = (usize::try_from(count).unwrap_or(usize::MAX), usize::try_from(stride).unwrap_or(usize::MAX));
            let data = tensorgate_ops::bytes::gather(&s.data, s.dtype.size() as usize, &at, count, stride).map_err(op_error)?;
            Ok(Tensor { dtype: s.dtype, shape: vec![at.len() as u64, count as u64], data: data.into() })
        })();
        Ok(gathered.and_then(|t| self.tensors.make(t)))
    }

    fn scatter(&mut self, target: Resource<TensorHandle>, idx: Resource<TensorHandle>, values: Resource<TensorHandle>) -> wasmtime::Result<Result<(), PluginError>> {
        Ok(self.tensors.with_target(&target, &[&idx, &values], |table, t| {
            let at = indices(table.get(&idx)?, "scatter's indices")?;
            let v = table.get(&values)?;
            if v.dtype != t.dtype {
                return Err(error("op", format!("scatter's values are {}, the target is {}", v.dtype, t.dtype)));
            }
            tensorgate_ops::bytes::scatter(&mut t.data, t.dtype.size() as usize, &at, &v.data).map_err(op_error)
        }))
    }

    fn json_rows(
        &mut self,
        payloads: Vec<Resource<PayloadHandle>>,
        keys: Vec<String>,
        layout: wit::JsonLayout,
        dtype: wit::Dtype,
    ) -> wasmtime::Result<Vec<Result<Resource<TensorHandle>, PluginError>>> {
        use tensorgate_ops::rows::{json_rows, Layout};
        let layout = match layout {
            wit::JsonLayout::KeysValues => Layout::KeysValues,
            wit::JsonLayout::Records => Layout::Records { strict: false },
            wit::JsonLayout::RecordsStrict => Layout::Records { strict: true },
        };
        let dtype: Dtype = dtype.into();
        let mut out = Vec::with_capacity(payloads.len());
        for payload in payloads {
            let made = self.tensors.payload(&payload).and_then(|bytes| {
                let (values, n) = json_rows(bytes, &keys, layout).map_err(op_error)?;
                let data: Vec<u8> = match dtype {
                    Dtype::F32 => values.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect(),
                    Dtype::F64 => values.iter().flat_map(|&v| v.to_le_bytes()).collect(),
                    Dtype::I64 => values.iter().flat_map(|&v| (v as i64).to_le_bytes()).collect(),
                    Dtype::I32 => values.iter().flat_map(|&v| (v as i32).to_le_bytes()).collect(),
                    other => return Err(error("op", format!("json-rows makes f32, f64, i64 or i32 tensors, not {other}"))),
                };
                filled(dtype, vec![n as u64, keys.len() as u64], &data)
            });
            out.push(made.and_then(|t| self.tensors.make(t)));
        }
        Ok(out)
    }

    fn scores_json(&mut self, scores: Vec<Resource<TensorHandle>>, labels: Vec<String>) -> wasmtime::Result<Vec<Result<Vec<u8>, PluginError>>> {
        let mut out = Vec::with_capacity(scores.len());
        for h in scores {
            let made = self.tensors.get(&h).and_then(|t| {
                if t.dtype != Dtype::F32 || t.shape.len() > 2 || (t.shape.len() == 2 && t.shape[0] != 1) {
                    return Err(error("labels", format!("scores-json takes one item's f32 scores, [1, L] or [L]; got {} of shape {:?}", t.dtype, t.shape)));
                }
                let values: Vec<f32> = t.data.as_chunks::<4>().0.iter().map(|b| f32::from_le_bytes(*b)).collect();
                tensorgate_ops::rows::scores_json(&labels, &values).ok_or_else(|| {
                    error("labels", tensorgate_ops::rows::labels_mismatch(&format!("plugin `{}`", self.app), &labels, values.len()))
                })
            });
            if let Ok(bytes) = &made {
                self.tensors.crossed += bytes.len() as u64;
            }
            out.push(made);
        }
        Ok(out)
    }

    fn pad_jagged(
        &mut self,
        values: Resource<TensorHandle>,
        lengths: Resource<TensorHandle>,
        max: u64,
    ) -> wasmtime::Result<Result<wit::Padded, PluginError>> {
        let padded = (|| {
            let v = self.tensors.get(&values)?;
            let lens = indices(self.tensors.get(&lengths)?, "pad-jagged's lengths")?;
            if v.shape.is_empty() {
                return Err(error("op", "pad-jagged's values need a leading dimension (the lists' elements, one after another)"));
            }
            let max = usize::try_from(max).map_err(|_| error("op", format!("max {max} is too large")))?;
            let row: u64 = v.shape[1..].iter().product();
            let row_bytes = row as usize * v.dtype.size() as usize;
            let (out, mask) = tensorgate_ops::rows::pad_jagged_bytes(&v.data, row_bytes, &lens, max, &one(v.dtype)).map_err(op_error)?;
            let n = lens.len() as u64;
            let mut shape = vec![n, max as u64];
            shape.extend_from_slice(&v.shape[1..]);
            Ok((filled(v.dtype, shape, &out)?, filled(v.dtype, vec![n, max as u64], &mask)?))
        })();
        Ok(padded.and_then(|(values, mask)| {
            let values = self.tensors.make(values)?;
            Ok(wit::Padded { values, mask: self.tensors.make(mask)? })
        }))
    }

    fn tile_pixels(
        &mut self,
        pixels: Resource<TensorHandle>,
        values: Resource<TensorHandle>,
        height: u64,
        width: u64,
        tile: u64,
        overlap: u64,
    ) -> wasmtime::Result<Result<wit::Tiled, PluginError>> {
        let laid = (|| {
            let grid = grid(height, width, tile, overlap)?;
            let coords = pixel_list(self.tensors.get(&pixels)?)?;
            let v = self.tensors.get(&values)?;
            if v.dtype != Dtype::F32 || v.shape.len() != 1 {
                return Err(error("tiles", format!("`values` must be f32 [n] (one per pixel), got {} of shape {:?}", v.dtype, v.shape)));
            }
            let layout = tensorgate_ops::tiles::Layout::new(&grid, &coords, v.shape[0] as usize).map_err(op_error)?;
            Ok((layout, grid.tile as u64))
        })();
        Ok(laid.and_then(|(layout, t)| {
            // Zeroed by the allocator (libtorch's memory, handed to the model
            // as it is), then one write per pixel and tile holding it.
            let input = self.tensors.zeros(Dtype::F32, vec![layout.tiles.len() as u64, 1, t, t])?;
            self.tensors.with_target(&input, &[&values], |table, target| {
                layout.fill(&table.get(&values)?.data, &mut target.data);
                Ok(())
            })?;
            let tiles: Vec<u8> = layout.tiles.iter().flat_map(|&t| (t as i64).to_le_bytes()).collect();
            let n = layout.tiles.len() as u64;
            let tiles = self.tensors.make(Tensor { dtype: Dtype::I64, shape: vec![n], data: tiles.into() })?;
            Ok(wit::Tiled { input, tiles })
        }))
    }

    #[allow(clippy::too_many_arguments)]
    fn untile_pixels(
        &mut self,
        output: Resource<TensorHandle>,
        pixels: Resource<TensorHandle>,
        tiles: Resource<TensorHandle>,
        height: u64,
        width: u64,
        tile: u64,
        overlap: u64,
    ) -> wasmtime::Result<Result<Resource<TensorHandle>, PluginError>> {
        let stitched = (|| {
            let grid = grid(height, width, tile, overlap)?;
            let coords = pixel_list(self.tensors.get(&pixels)?)?;
            let run = indices(self.tensors.get(&tiles)?, "untile-pixels' tiles")?;
            let out = self.tensors.get(&output)?;
            if out.dtype != Dtype::F32 {
                return Err(error("tiles", format!("model output is {}, expected f32", out.dtype)));
            }
            let (data, c) = tensorgate_ops::tiles::untile_pixels(&grid, &out.data, &out.shape, &coords, &run).map_err(op_error)?;
            Ok(Tensor { dtype: Dtype::F32, shape: vec![coords.len() as u64 / 2, c as u64], data: data.into() })
        })();
        Ok(stitched.and_then(|t| self.tensors.make(t)))
    }

    fn copy_region(
        &mut self,
        source: Resource<TensorHandle>,
        source_at: Vec<u64>,
        target: Resource<TensorHandle>,
        target_at: Vec<u64>,
        size: Vec<u64>,
    ) -> wasmtime::Result<Result<(), PluginError>> {
        Ok(self.tensors.with_target(&target, &[&source], |table, t| {
            let s = table.get(&source)?;
            if s.dtype != t.dtype {
                return Err(error("op", format!("copy-region's source is {}, the target is {}", s.dtype, t.dtype)));
            }
            let element = s.dtype.size() as usize;
            tensorgate_ops::bytes::copy_region(&s.data, &s.shape, &source_at, &mut t.data, &t.shape, &target_at, &size, element).map_err(op_error)
        }))
    }
}
