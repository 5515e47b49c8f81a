//! Tensors as the Open Inference Protocol carries them: a name, a data type
//! by the protocol's name (`FP32`, `BYTES`, ...), a shape, and the elements,
//! either as little-endian bytes in row-major order (what JSON arrays, the
//! HTTP binary extension and gRPC's raw contents all become) or, for
//! `BYTES`, one byte string per element.

use std::collections::BTreeMap;

use bytes::Bytes;
use tensorgate_backend::Dtype;
use tensorgate_npy::Descr;

use super::OipError;

/// A tensor data type of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datatype {
    /// `BOOL`: one byte, 0 or 1.
    Bool,
    /// `UINT8`.
    Uint8,
    /// `UINT16`.
    Uint16,
    /// `UINT32`.
    Uint32,
    /// `UINT64`.
    Uint64,
    /// `INT8`.
    Int8,
    /// `INT16`.
    Int16,
    /// `INT32`.
    Int32,
    /// `INT64`.
    Int64,
    /// `FP16`: IEEE half.
    Fp16,
    /// `BF16`: bfloat16.
    Bf16,
    /// `FP32`.
    Fp32,
    /// `FP64`.
    Fp64,
    /// `BYTES`: a byte string per element.
    Bytes,
}

impl Datatype {
    /// Every type, in the order the specification lists them.
    pub const ALL: [Datatype; 14] = [
        Datatype::Bool,
        Datatype::Uint8,
        Datatype::Uint16,
        Datatype::Uint32,
        Datatype::Uint64,
        Datatype::Int8,
        Datatype::Int16,
        Datatype::Int32,
        Datatype::Int64,
        Datatype::Fp16,
        Datatype::Bf16,
        Datatype::Fp32,
        Datatype::Fp64,
        Datatype::Bytes,
    ];

    /// The type named `name` (`FP32`, ...), as the protocol spells it.
    pub fn parse(name: &str) -> Option<Datatype> {
        Datatype::ALL.into_iter().find(|d| d.name() == name)
    }

    /// The protocol's name.
    pub fn name(self) -> &'static str {
        match self {
            Datatype::Bool => "BOOL",
            Datatype::Uint8 => "UINT8",
            Datatype::Uint16 => "UINT16",
            Datatype::Uint32 => "UINT32",
            Datatype::Uint64 => "UINT64",
            Datatype::Int8 => "INT8",
            Datatype::Int16 => "INT16",
            Datatype::Int32 => "INT32",
            Datatype::Int64 => "INT64",
            Datatype::Fp16 => "FP16",
            Datatype::Bf16 => "BF16",
            Datatype::Fp32 => "FP32",
            Datatype::Fp64 => "FP64",
            Datatype::Bytes => "BYTES",
        }
    }

    /// Triton's model configuration name (`TYPE_FP32`; `BYTES` is `TYPE_STRING`).
    pub fn config_name(self) -> &'static str {
        match self {
            Datatype::Bool => "TYPE_BOOL",
            Datatype::Uint8 => "TYPE_UINT8",
            Datatype::Uint16 => "TYPE_UINT16",
            Datatype::Uint32 => "TYPE_UINT32",
            Datatype::Uint64 => "TYPE_UINT64",
            Datatype::Int8 => "TYPE_INT8",
            Datatype::Int16 => "TYPE_INT16",
            Datatype::Int32 => "TYPE_INT32",
            Datatype::Int64 => "TYPE_INT64",
            Datatype::Fp16 => "TYPE_FP16",
            Datatype::Bf16 => "TYPE_BF16",
            Datatype::Fp32 => "TYPE_FP32",
            Datatype::Fp64 => "TYPE_FP64",
            Datatype::Bytes => "TYPE_STRING",
        }
    }

    /// Bytes per element; `None` for `BYTES`.
    pub fn size(self) -> Option<usize> {
        Some(match self {
            Datatype::Bool | Datatype::Uint8 | Datatype::Int8 => 1,
            Datatype::Uint16 | Datatype::Int16 | Datatype::Fp16 | Datatype::Bf16 => 2,
            Datatype::Uint32 | Datatype::Int32 | Datatype::Fp32 => 4,
            Datatype::Uint64 | Datatype::Int64 | Datatype::Fp64 => 8,
            Datatype::Bytes => return None,
        })
    }

    /// The protocol type of a model tensor type.
    pub fn of(dtype: Dtype) -> Datatype {
        match dtype {
            Dtype::F32 => Datatype::Fp32,
            Dtype::F64 => Datatype::Fp64,
            Dtype::I64 => Datatype::Int64,
            Dtype::I32 => Datatype::Int32,
            Dtype::U8 => Datatype::Uint8,
            Dtype::Bool => Datatype::Bool,
        }
    }

    /// The NumPy type string of this type (`None` for `BYTES` and `BF16`,
    /// which NumPy has no standard type for).
    pub fn descr(self) -> Option<Descr> {
        Some(match self {
            Datatype::Bool => Descr::BOOL,
            Datatype::Uint8 => Descr::U8,
            Datatype::Uint16 => Descr::U16,
            Datatype::Uint32 => Descr::U32,
            Datatype::Uint64 => Descr::U64,
            Datatype::Int8 => Descr::I8,
            Datatype::Int16 => Descr::I16,
            Datatype::Int32 => Descr::I32,
            Datatype::Int64 => Descr::I64,
            Datatype::Fp16 => Descr::F16,
            Datatype::Fp32 => Descr::F32,
            Datatype::Fp64 => Descr::F64,
            Datatype::Bf16 | Datatype::Bytes => return None,
        })
    }

    /// The protocol type of a NumPy type string (little-endian or
    /// byte-order-free ones only).
    pub fn from_descr(descr: &Descr) -> Option<Datatype> {
        Datatype::ALL.into_iter().find(|d| d.descr().as_ref() == Some(descr))
    }
}

impl std::fmt::Display for Datatype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A tensor's elements.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// Fixed-size elements, little-endian, row-major.
    Raw(Bytes),
    /// `BYTES` elements, one byte string each.
    Strings(Vec<Bytes>),
}

/// A parameter value (request, tensor or response parameters).
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer (gRPC's `uint64_param`).
    Uint(u64),
    /// A floating-point number.
    Double(f64),
    /// A string.
    Str(String),
}

impl Param {
    /// The value as text (how it reaches a plugin's item metadata).
    pub fn text(&self) -> String {
        match self {
            Param::Bool(b) => b.to_string(),
            Param::Int(i) => i.to_string(),
            Param::Uint(u) => u.to_string(),
            Param::Double(d) => d.to_string(),
            Param::Str(s) => s.clone(),
        }
    }

    /// The value as an unsigned integer, when it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Param::Int(i) => u64::try_from(i).ok(),
            Param::Uint(u) => Some(u),
            _ => None,
        }
    }
}

/// Named parameters.
pub type Params = BTreeMap<String, Param>;

/// One input or output tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Its name.
    pub name: String,
    /// Its type.
    pub datatype: Datatype,
    /// Its shape.
    pub shape: Vec<u64>,
    /// Its elements.
    pub data: Data,
    /// Its parameters.
    pub params: Params,
}

impl Tensor {
    /// Elements the shape holds, or an error naming the tensor when the
    /// count overflows.
    pub fn elements(name: &str, shape: &[u64]) -> Result<u64, OipError> {
        shape
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d))
            .ok_or_else(|| OipError::invalid(format!("input `{name}`: shape {shape:?} holds too many elements")))
    }

    /// Checks that the elements match the type and shape, naming the tensor.
    pub fn check(&self) -> Result<(), OipError> {
        let count = Tensor::elements(&self.name, &self.shape)?;
        match (&self.data, self.datatype.size()) {
            (Data::Raw(bytes), Some(size)) => {
                let want = count.checked_mul(size as u64);
                if want != Some(bytes.len() as u64) {
                    return Err(OipError::invalid(format!(
                        "input `{}`: shape {:?} of {} needs {} bytes ({count} elements), {} were sent",
                        self.name,
                        self.shape,
                        self.datatype,
                        want.map_or_else(|| "too many".to_string(), |n| n.to_string()),
                        bytes.len()
                    )));
                }
            }
            (Data::Strings(items), None) => {
                if items.len() as u64 != count {
                    return Err(OipError::invalid(format!(
                        "input `{}`: shape {:?} holds {count} elements, {} were sent",
                        self.name,
                        self.shape,
                        items.len()
                    )));
                }
            }
            (Data::Raw(_), None) => {
                return Err(OipError::invalid(format!("input `{}`: BYTES data must be byte strings", self.name)))
            }
            (Data::Strings(_), Some(_)) => {
                return Err(OipError::invalid(format!(
                    "input `{}`: {} data must be numbers, not strings",
                    self.name, self.datatype
                )))
            }
        }
        Ok(())
    }
}

/// Splits the binary form of `BYTES` elements (each a 4-byte little-endian
/// length and that many bytes, as in Triton's binary extension and gRPC raw
/// contents) into its elements, without copying.
pub fn split_strings(name: &str, raw: &Bytes) -> Result<Vec<Bytes>, OipError> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < raw.len() {
        let Some(head) = raw.get(at..at + 4) else {
            return Err(OipError::invalid(format!(
                "input `{name}`: BYTES element at byte {at} is cut off in its 4-byte length"
            )));
        };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let start = at + 4;
        let end = start.checked_add(len).filter(|&e| e <= raw.len()).ok_or_else(|| {
            OipError::invalid(format!(
                "input `{name}`: BYTES element at byte {at} says {len} bytes, only {} follow",
                raw.len() - start
            ))
        })?;
        out.push(raw.slice(start..end));
        at = end;
    }
    Ok(out)
}

/// The binary form of `BYTES` elements (see [`split_strings`]).
pub fn join_strings(items: &[Bytes]) -> Vec<u8> {
    let mut out = Vec::with_capacity(items.iter().map(|b| b.len() + 4).sum());
    for b in items {
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(b);
    }
    out
}

/// A tensor's elements as contiguous bytes: fixed-size elements as they
/// are, `BYTES` in their binary form.
pub fn raw_bytes(data: &Data) -> Bytes {
    match data {
        Data::Raw(b) => b.clone(),
        Data::Strings(items) => Bytes::from(join_strings(items)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sizes() {
        for d in Datatype::ALL {
            assert_eq!(Datatype::parse(d.name()), Some(d));
            if let Some(descr) = d.descr() {
                assert_eq!(Datatype::from_descr(&descr), Some(d));
                assert_eq!(Some(descr.itemsize()), d.size());
            }
        }
        assert_eq!(Datatype::parse("FLOAT32"), None);
        assert_eq!(Datatype::Bytes.config_name(), "TYPE_STRING");
    }

    #[test]
    fn strings_split_and_join() {
        let items = vec![Bytes::from_static(b"ab"), Bytes::new(), Bytes::from_static(b"xyz")];
        let raw = Bytes::from(join_strings(&items));
        assert_eq!(split_strings("t", &raw).unwrap(), items);
        let e = split_strings("t", &raw.slice(..raw.len() - 1)).unwrap_err();
        assert!(e.message.contains("says 3 bytes, only 2 follow"), "{}", e.message);
        let e = split_strings("t", &Bytes::from_static(&[1, 0])).unwrap_err();
        assert!(e.message.contains("cut off"), "{}", e.message);
    }

    #[test]
    fn check_names_the_tensor_and_the_mismatch() {
        let t = Tensor {
            name: "x".into(),
            datatype: Datatype::Fp32,
            shape: vec![2, 3],
            data: Data::Raw(Bytes::from(vec![0u8; 20])),
            params: Params::new(),
        };
        let e = t.check().unwrap_err();
        assert!(e.message.contains("input `x`") && e.message.contains("needs 24 bytes") && e.message.contains("20 were sent"), "{}", e.message);
        let ok = Tensor { data: Data::Raw(Bytes::from(vec![0u8; 24])), ..t };
        ok.check().unwrap();
        let huge = Tensor { shape: vec![u64::MAX, 2], ..ok };
        assert!(huge.check().unwrap_err().message.contains("too many"));
    }
}
