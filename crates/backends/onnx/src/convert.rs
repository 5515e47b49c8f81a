//! The host's tensors in and out of ONNX Runtime, without copies where the
//! bytes allow it: one item's inputs are handed over as they are (ONNX
//! Runtime reads them in place); a batch's inputs are one concatenation
//! into staging buffers kept between batches; outputs stay in ONNX
//! Runtime's memory and are lent to the host (each item a range of rows),
//! small ones copied out.

use std::sync::Arc;

use ort::memory::MemoryInfo;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynTensor, DynTensorValueType, Shape, TensorElementType, TensorRefMut};
use tensorgate_backend::{Buffer, Dtype, LentBytes, ModelError, Tensor};

/// Outputs of at least this many bytes per item are lent, not copied.
pub const LEND_MIN_BYTES: usize = 64 * 1024;

/// The host's element type of an ONNX one; `None` for those it does not carry.
pub fn dtype_of(ty: TensorElementType) -> Option<Dtype> {
    Some(match ty {
        TensorElementType::Float32 => Dtype::F32,
        TensorElementType::Float64 => Dtype::F64,
        TensorElementType::Int64 => Dtype::I64,
        TensorElementType::Int32 => Dtype::I32,
        TensorElementType::Uint8 => Dtype::U8,
        TensorElementType::Bool => Dtype::Bool,
        _ => return None,
    })
}

/// Buffers a batch's inputs are concatenated into (8-byte aligned),
/// kept between batches.
#[derive(Debug, Default)]
pub struct Staging {
    inputs: Vec<Vec<u64>>,
}

/// `reason` without ONNX Runtime's `[ErrorCode:...]` prefix and trailing
/// blanks, on one line.
pub fn short(reason: &str) -> String {
    let text = reason.split_whitespace().collect::<Vec<_>>().join(" ");
    match text.strip_prefix('[').and_then(|rest| rest.split_once("] ")) {
        Some((code, rest)) if code.starts_with("ErrorCode") => rest.to_string(),
        _ => text,
    }
}

fn err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Forward(short(&e.to_string()))
}

/// An ONNX Runtime tensor reading `len` bytes at `ptr` as `dtype` in `shape`.
///
/// # Safety
/// `ptr` must stay valid (and unwritten) for `len` bytes while the returned
/// value lives, aligned for `dtype`, with `len` = the shape's elements × the
/// element size. ONNX Runtime only reads inputs.
unsafe fn view(dtype: Dtype, ptr: *const u8, shape: &[u64]) -> Result<SessionInputValue<'static>, ModelError> {
    let shape = Shape::new(shape.iter().map(|&d| d as i64));
    let info = MemoryInfo::default();
    let data = ptr.cast_mut().cast();
    // SAFETY: as this function's contract says.
    unsafe {
        Ok(match dtype {
            Dtype::F32 => TensorRefMut::<f32>::from_raw(info, data, shape).map_err(err)?.into(),
            Dtype::F64 => TensorRefMut::<f64>::from_raw(info, data, shape).map_err(err)?.into(),
            Dtype::I64 => TensorRefMut::<i64>::from_raw(info, data, shape).map_err(err)?.into(),
            Dtype::I32 => TensorRefMut::<i32>::from_raw(info, data, shape).map_err(err)?.into(),
            Dtype::U8 => TensorRefMut::<u8>::from_raw(info, data, shape).map_err(err)?.into(),
            Dtype::Bool => TensorRefMut::<bool>::from_raw(info, data, shape).map_err(err)?.into(),
        })
    }
}

/// Rows of one item (its first input's first dimension).
fn rows(inputs: &[Tensor]) -> usize {
    inputs.first().map(|t| t.rows()).unwrap_or(1) as usize
}

/// Input `j` of every item, concatenated along the first dimension into
/// `buf`: its shape.
fn concat(items: &[&[Tensor]], j: usize, buf: &mut Vec<u64>) -> Result<Vec<u64>, ModelError> {
    let first = &items[0][j];
    let mut total_rows = 0u64;
    let mut bytes = 0usize;
    for item in items {
        let t = &item[j];
        if t.dtype != first.dtype || t.shape.is_empty() || t.shape.get(1..) != first.shape.get(1..) {
            return Err(ModelError::Forward(format!(
                "items of one batch differ in input {j}: {} {:?} and {} {:?}",
                first.dtype, first.shape, t.dtype, t.shape
            )));
        }
        total_rows += t.rows();
        bytes += t.data.len();
    }
    buf.clear();
    buf.resize(bytes.div_ceil(8), 0);
    // SAFETY: `buf` holds at least `bytes` initialised bytes; u64 has no invalid bit patterns.
    let out = unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<u8>(), bytes) };
    let mut at = 0;
    for item in items {
        let b = &item[j].data;
        out[at..at + b.len()].copy_from_slice(b);
        at += b.len();
    }
    Ok(std::iter::once(total_rows).chain(first.shape[1..].iter().copied()).collect())
}

/// One forward pass of `items` as one batch, outputs split per item (see
/// [`tensorgate_backend::Instance::run`]).
pub fn run(session: &mut Session, staging: &mut Staging, items: &[&[Tensor]]) -> Result<Option<Vec<Vec<Tensor>>>, ModelError> {
    let Some(first) = items.first() else { return Ok(Some(Vec::new())) };
    let n = first.len();
    let expected = session.inputs().len();
    if n != expected {
        return Err(ModelError::Forward(format!("the model takes {expected} input(s), got {n}")));
    }
    for item in items {
        if item.len() != n {
            return Err(ModelError::Forward(format!("items of one batch differ in their number of inputs ({n} and {})", item.len())));
        }
        item.iter().try_for_each(Tensor::validate)?;
    }
    if staging.inputs.len() < n {
        staging.inputs.resize_with(n, Vec::new);
    }
    let mut values: Vec<SessionInputValue<'static>> = Vec::with_capacity(n);
    for j in 0..n {
        let t = &first[j];
        let aligned = (t.data.as_ptr() as usize).is_multiple_of(t.dtype.size() as usize);
        let value = if items.len() == 1 && aligned {
            // SAFETY: the item's bytes outlive `values` (dropped before this
            // function returns), are validated against the shape, aligned,
            // and only read.
            unsafe { view(t.dtype, t.data.as_ptr(), &t.shape)? }
        } else {
            let buf = &mut staging.inputs[j];
            let shape = concat(items, j, buf)?;
            // SAFETY: `buf` is not touched again until `values` is dropped
            // (before this function returns); 8-byte aligned; sized by `concat`.
            unsafe { view(t.dtype, buf.as_ptr().cast(), &shape)? }
        };
        values.push(value);
    }
    let mut outputs = session.run(values.as_slice()).map_err(err)?;
    drop(values);
    let names: Vec<String> = outputs.keys().map(str::to_string).collect();
    let mut tensors = Vec::with_capacity(names.len());
    for name in &names {
        let Some(value) = outputs.remove(name) else { continue };
        let shown = format!("{}", value.dtype());
        let tensor: DynTensor = value
            .downcast::<DynTensorValueType>()
            .map_err(|_| ModelError::Output(format!("output `{name}` is a {shown}")))?;
        let ty = *tensor.data_type();
        let dtype = dtype_of(ty).ok_or_else(|| ModelError::Output(format!("output `{name}` is a tensor of unsupported element type {ty:?}")))?;
        tensors.push((dtype, Arc::new(tensor)));
    }
    drop(outputs);
    let counts: Vec<usize> = items.iter().map(|i| rows(i)).collect();
    split(tensors, &counts)
}

/// Each output's rows per item (`counts`), lent or copied; `None` when an
/// output has no batch dimension to split by.
fn split(outputs: Vec<(Dtype, Arc<DynTensor>)>, counts: &[usize]) -> Result<Option<Vec<Vec<Tensor>>>, ModelError> {
    let total: usize = counts.iter().sum();
    let mut per_item: Vec<Vec<Tensor>> = counts.iter().map(|_| Vec::with_capacity(outputs.len())).collect();
    for (dtype, out) in outputs {
        let shape: Vec<u64> = out.shape().iter().map(|&d| d.max(0) as u64).collect();
        let numel = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        let bytes = numel.and_then(|n| n.checked_mul(dtype.size())).and_then(|n| usize::try_from(n).ok());
        let bytes = bytes.ok_or_else(|| ModelError::Output(format!("an output of shape {shape:?} is too large")))?;
        let base = out.data_ptr() as usize;
        if counts.len() == 1 {
            per_item[0].push(Tensor { dtype, shape: shape.clone(), data: lend_or_copy(&out, base, 0, bytes) });
            continue;
        }
        if shape.is_empty() || shape[0] != total as u64 {
            return Ok(None);
        }
        let row_bytes = bytes.checked_div(total).unwrap_or(0);
        let mut at = 0;
        for (slot, &n) in per_item.iter_mut().zip(counts) {
            let item_shape = std::iter::once(n as u64).chain(shape[1..].iter().copied()).collect();
            slot.push(Tensor { dtype, shape: item_shape, data: lend_or_copy(&out, base, at, n * row_bytes) });
            at += n * row_bytes;
        }
    }
    Ok(Some(per_item))
}

fn lend_or_copy(out: &Arc<DynTensor>, base: usize, start: usize, len: usize) -> Buffer {
    let lent = OrtBytes { _value: out.clone(), base, start, len, own: None };
    if len < LEND_MIN_BYTES {
        return Buffer::Host(lent.bytes().to_vec());
    }
    Buffer::Lent(Box::new(lent))
}

/// A range of an ONNX Runtime output's bytes, lent to the host for as long
/// as the value lives; written to, it is first copied.
#[derive(Debug)]
pub struct OrtBytes {
    /// Holds the output alive.
    _value: Arc<DynTensor>,
    /// The output's data address (CPU memory).
    base: usize,
    start: usize,
    len: usize,
    own: Option<Vec<u8>>,
}

impl LentBytes for OrtBytes {
    fn bytes(&self) -> &[u8] {
        if let Some(own) = &self.own {
            return own;
        }
        if self.len == 0 || self.base == 0 {
            return &[];
        }
        // SAFETY: `base` is the data of the CPU tensor `_value`, which this
        // holds alive and nobody writes; `start + len` is within its bytes
        // (shape × element size, computed by `split`).
        unsafe { std::slice::from_raw_parts((self.base + self.start) as *const u8, self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        if self.own.is_none() {
            self.own = Some(self.bytes().to_vec());
        }
        self.own.get_or_insert_with(Vec::new)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_concatenated_by_rows() {
        let t = |rows: u64, v: u8| Tensor { dtype: Dtype::U8, shape: vec![rows, 2], data: vec![v; rows as usize * 2].into() };
        let (a, b) = ([t(1, 1)], [t(2, 2)]);
        let mut buf = Vec::new();
        let shape = concat(&[&a, &b], 0, &mut buf).expect("concat");
        assert_eq!(shape, vec![3, 2]);
        // SAFETY: 6 bytes were written into `buf`.
        let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), 6) };
        assert_eq!(bytes, &[1, 1, 2, 2, 2, 2]);
        let c = [Tensor { dtype: Dtype::U8, shape: vec![1, 3], data: vec![0; 3].into() }];
        assert!(concat(&[&a, &c], 0, &mut buf).is_err(), "inner dims differ");
    }

    #[test]
    fn host_dtypes_map_both_ways() {
        assert_eq!(dtype_of(TensorElementType::Float32), Some(Dtype::F32));
        assert_eq!(dtype_of(TensorElementType::Bool), Some(Dtype::Bool));
        assert_eq!(dtype_of(TensorElementType::Float16), None);
    }
}
