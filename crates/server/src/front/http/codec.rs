//! The Open Inference Protocol's HTTP/REST bodies, free of IO: an infer
//! request's JSON (tensors as JSON arrays, nested or flat) with Triton's
//! binary tensor data extension (`Inference-Header-Content-Length`: the
//! JSON first, then each `binary_data_size` input's bytes in order), and
//! the response in the same two forms (`binary_data` per output, or
//! `binary_data_output` for all).

use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::front::oip::tensor::{join_strings, split_strings, Data, Datatype, Param, Params, Tensor};
use crate::front::oip::{InferRequest, InferResponse, OipError, RequestedOutput};

/// Parses an infer request body. `header_len`: the
/// `Inference-Header-Content-Length` header's value, when present (the JSON
/// is then the body's first `header_len` bytes, binary data follows).
pub fn parse_infer(model: &str, version: &str, body: Bytes, header_len: Option<&str>) -> Result<InferRequest, OipError> {
    let json_len = match header_len {
        None => body.len(),
        Some(text) => {
            let n: usize = text.trim().parse().map_err(|_| {
                OipError::invalid(format!("header Inference-Header-Content-Length `{text}` is not a byte count"))
            })?;
            if n > body.len() {
                return Err(OipError::invalid(format!(
                    "header Inference-Header-Content-Length says {n} bytes of JSON, the body has {}",
                    body.len()
                )));
            }
            n
        }
    };
    let head: Value = serde_json::from_slice(&body[..json_len]).map_err(|e| OipError::invalid(format!("request JSON: {e}")))?;
    let Value::Object(head) = head else {
        return Err(OipError::invalid("request JSON must be an object"));
    };
    let mut binary = body.slice(json_len..);
    let id = match head.get("id") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(OipError::invalid("field `id` must be a string")),
    };
    let request_params = params(head.get("parameters"), "parameters")?;
    let Some(Value::Array(inputs)) = head.get("inputs") else {
        return Err(OipError::invalid("field `inputs` must be an array of tensors"));
    };
    let mut parsed = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.iter().enumerate() {
        parsed.push(input_tensor(i, input, &mut binary)?);
    }
    if !binary.is_empty() {
        return Err(OipError::invalid(format!(
            "{} bytes of binary data follow the JSON that no input's `binary_data_size` claims",
            binary.len()
        )));
    }
    let outputs = match head.get("outputs") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let field = format!("outputs[{i}]");
                let name = str_field(o, "name", &field)?;
                Ok(RequestedOutput { name, params: params(o.get("parameters"), &format!("{field}.parameters"))? })
            })
            .collect::<Result<_, OipError>>()?,
        Some(_) => return Err(OipError::invalid("field `outputs` must be an array")),
    };
    Ok(InferRequest { model: model.to_string(), version: version.to_string(), id, params: request_params, inputs: parsed, outputs })
}

fn str_field(v: &Value, key: &str, at: &str) -> Result<String, OipError> {
    match v.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(OipError::invalid(format!("`{at}.{key}` must be a string"))),
    }
}

/// A `parameters` object.
pub fn params(v: Option<&Value>, at: &str) -> Result<Params, OipError> {
    let mut out = Params::new();
    match v {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (k, v) in map {
                let p = match v {
                    Value::Bool(b) => Param::Bool(*b),
                    Value::String(s) => Param::Str(s.clone()),
                    Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                        (Some(i), _, _) => Param::Int(i),
                        (None, Some(u), _) => Param::Uint(u),
                        (_, _, Some(f)) => Param::Double(f),
                        _ => return Err(OipError::invalid(format!("`{at}.{k}` is not a number JSON can hold"))),
                    },
                    _ => return Err(OipError::invalid(format!("`{at}.{k}` must be a bool, number or string"))),
                };
                out.insert(k.clone(), p);
            }
        }
        Some(_) => return Err(OipError::invalid(format!("`{at}` must be an object"))),
    }
    Ok(out)
}

fn input_tensor(i: usize, v: &Value, binary: &mut Bytes) -> Result<Tensor, OipError> {
    let at = format!("inputs[{i}]");
    if !v.is_object() {
        return Err(OipError::invalid(format!("`{at}` must be an object")));
    }
    let name = str_field(v, "name", &at)?;
    let at = format!("input `{name}`");
    let dt = str_field(v, "datatype", &at)?;
    let datatype = Datatype::parse(&dt).ok_or_else(|| OipError::invalid(format!("{at}: unknown datatype `{dt}`")))?;
    let shape = match v.get("shape") {
        Some(Value::Array(dims)) => dims
            .iter()
            .map(|d| d.as_u64().ok_or_else(|| OipError::invalid(format!("{at}: shape entries must be non-negative integers"))))
            .collect::<Result<Vec<u64>, _>>()?,
        _ => return Err(OipError::invalid(format!("{at}: `shape` must be an array of integers"))),
    };
    let params = params(v.get("parameters"), &format!("{at}.parameters"))?;
    let data = match params.get("binary_data_size") {
        Some(size) => {
            let n = size.as_u64().ok_or_else(|| OipError::invalid(format!("{at}: `binary_data_size` must be a byte count")))?;
            if v.get("data").is_some() {
                return Err(OipError::invalid(format!("{at}: has both `data` and `binary_data_size`")));
            }
            let n = usize::try_from(n).ok().filter(|&n| n <= binary.len()).ok_or_else(|| {
                OipError::invalid(format!("{at}: `binary_data_size` is {n}, only {} binary bytes are left in the body", binary.len()))
            })?;
            let raw = binary.split_to(n);
            match datatype {
                Datatype::Bytes => Data::Strings(split_strings(&name, &raw)?),
                _ => Data::Raw(raw),
            }
        }
        None => {
            let data = v.get("data").ok_or_else(|| OipError::invalid(format!("{at}: has neither `data` nor `binary_data_size`")))?;
            json_data(&at, datatype, data)?
        }
    };
    let params = params.into_iter().filter(|(k, _)| k != "binary_data_size").collect();
    Ok(Tensor { name, datatype, shape, data, params })
}

/// Flattens a (nested) JSON array of `datatype` elements into its data.
fn json_data(at: &str, datatype: Datatype, data: &Value) -> Result<Data, OipError> {
    let mut flat = Vec::new();
    flatten(data, &mut flat, 0).map_err(|m| OipError::invalid(format!("{at}: {m}")))?;
    let bad = |j: usize, want: &str| OipError::invalid(format!("{at}: element {j} is not {want}"));
    if datatype == Datatype::Bytes {
        let items = flat
            .iter()
            .enumerate()
            .map(|(j, v)| match v {
                Value::String(s) => Ok(Bytes::from(s.clone().into_bytes())),
                _ => Err(bad(j, "a string")),
            })
            .collect::<Result<_, _>>()?;
        return Ok(Data::Strings(items));
    }
    let size = datatype.size().unwrap_or(1);
    let mut out = Vec::with_capacity(flat.len() * size);
    for (j, v) in flat.iter().enumerate() {
        macro_rules! int {
            ($t:ty, $name:literal) => {{
                let x = v.as_i64().and_then(|x| <$t>::try_from(x).ok()).or_else(|| v.as_u64().and_then(|x| <$t>::try_from(x).ok()));
                out.extend_from_slice(&x.ok_or_else(|| bad(j, $name))?.to_le_bytes());
            }};
        }
        match datatype {
            Datatype::Bool => out.push(v.as_bool().ok_or_else(|| bad(j, "a bool"))? as u8),
            Datatype::Uint8 => int!(u8, "a UINT8"),
            Datatype::Uint16 => int!(u16, "a UINT16"),
            Datatype::Uint32 => int!(u32, "a UINT32"),
            Datatype::Uint64 => int!(u64, "a UINT64"),
            Datatype::Int8 => int!(i8, "an INT8"),
            Datatype::Int16 => int!(i16, "an INT16"),
            Datatype::Int32 => int!(i32, "an INT32"),
            Datatype::Int64 => int!(i64, "an INT64"),
            Datatype::Fp32 => out.extend_from_slice(&(v.as_f64().ok_or_else(|| bad(j, "a number"))? as f32).to_le_bytes()),
            Datatype::Fp64 => out.extend_from_slice(&v.as_f64().ok_or_else(|| bad(j, "a number"))?.to_le_bytes()),
            Datatype::Fp16 | Datatype::Bf16 => {
                return Err(OipError::invalid(format!("{at}: {datatype} data must be sent with the binary data extension")))
            }
            Datatype::Bytes => unreachable!("handled above"),
        }
    }
    Ok(Data::Raw(Bytes::from(out)))
}

/// Most nesting of a JSON tensor (well beyond any tensor's rank).
const MAX_DEPTH: usize = 64;

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("`data` is nested deeper than {MAX_DEPTH}"));
    }
    match v {
        Value::Array(items) => {
            for item in items {
                flatten(item, out, depth + 1)?;
            }
        }
        other => out.push(other),
    }
    Ok(())
}

/// A response body and, when outputs go as binary data, the JSON's length
/// (the `Inference-Header-Content-Length` to send).
pub fn write_infer(resp: &InferResponse, req_outputs: &[RequestedOutput], binary_default: bool) -> Result<(Vec<u8>, Option<usize>), OipError> {
    let mut outputs = Vec::with_capacity(resp.outputs.len());
    let mut binary: Vec<Bytes> = Vec::new();
    for t in &resp.outputs {
        let asked = req_outputs.iter().find(|o| o.name == t.name).and_then(|o| match o.params.get("binary_data") {
            Some(Param::Bool(b)) => Some(*b),
            _ => None,
        });
        let as_binary = asked.unwrap_or(binary_default) || matches!(t.datatype, Datatype::Fp16 | Datatype::Bf16);
        let mut out = Map::new();
        out.insert("name".into(), Value::String(t.name.clone()));
        out.insert("datatype".into(), Value::String(t.datatype.name().into()));
        out.insert("shape".into(), json!(t.shape));
        if as_binary {
            let bytes = match &t.data {
                Data::Raw(b) => b.clone(),
                Data::Strings(items) => Bytes::from(join_strings(items)),
            };
            out.insert("parameters".into(), json!({"binary_data_size": bytes.len()}));
            binary.push(bytes);
        } else {
            out.insert("data".into(), json_values(t)?);
        }
        outputs.push(Value::Object(out));
    }
    let mut head = Map::new();
    head.insert("model_name".into(), Value::String(resp.model.clone()));
    head.insert("model_version".into(), Value::String(resp.version.clone()));
    if !resp.id.is_empty() {
        head.insert("id".into(), Value::String(resp.id.clone()));
    }
    if !resp.params.is_empty() {
        head.insert("parameters".into(), params_json(&resp.params));
    }
    head.insert("outputs".into(), Value::Array(outputs));
    let mut body = serde_json::to_vec(&Value::Object(head)).map_err(|e| OipError::new(tensorgate_protocol::ErrorCode::Internal, e.to_string()))?;
    if binary.is_empty() {
        return Ok((body, None));
    }
    let json_len = body.len();
    body.reserve(binary.iter().map(|b| b.len()).sum());
    for b in binary {
        body.extend_from_slice(&b);
    }
    Ok((body, Some(json_len)))
}

/// Parameters as a JSON object.
pub fn params_json(params: &Params) -> Value {
    Value::Object(
        params
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Param::Bool(b) => json!(b),
                    Param::Int(i) => json!(i),
                    Param::Uint(u) => json!(u),
                    Param::Double(d) => json!(d),
                    Param::Str(s) => json!(s),
                };
                (k.clone(), v)
            })
            .collect(),
    )
}

/// A tensor's elements as a flat JSON array.
fn json_values(t: &Tensor) -> Result<Value, OipError> {
    let raw = match &t.data {
        Data::Strings(items) => {
            return Ok(Value::Array(items.iter().map(|b| Value::String(String::from_utf8_lossy(b).into_owned())).collect()))
        }
        Data::Raw(b) => b,
    };
    macro_rules! each {
        ($t:ty, $n:literal, $map:expr) => {
            raw.chunks_exact($n).map(|c| $map(<$t>::from_le_bytes(c.try_into().unwrap_or([0; $n])))).collect::<Vec<Value>>()
        };
    }
    let values = match t.datatype {
        Datatype::Bool => raw.iter().map(|&b| Value::Bool(b != 0)).collect(),
        Datatype::Uint8 => raw.iter().map(|&b| json!(b)).collect(),
        Datatype::Int8 => raw.iter().map(|&b| json!(b as i8)).collect(),
        Datatype::Uint16 => each!(u16, 2, |x| json!(x)),
        Datatype::Int16 => each!(i16, 2, |x| json!(x)),
        Datatype::Uint32 => each!(u32, 4, |x| json!(x)),
        Datatype::Int32 => each!(i32, 4, |x| json!(x)),
        Datatype::Uint64 => each!(u64, 8, |x| json!(x)),
        Datatype::Int64 => each!(i64, 8, |x| json!(x)),
        Datatype::Fp32 => each!(f32, 4, |x: f32| float(x as f64)),
        Datatype::Fp64 => each!(f64, 8, float),
        Datatype::Fp16 | Datatype::Bf16 | Datatype::Bytes => {
            return Err(OipError::new(tensorgate_protocol::ErrorCode::Internal, format!("output `{}`: no JSON form", t.name)))
        }
    };
    Ok(Value::Array(values))
}

/// A float as JSON (NaN and infinities, which JSON lacks, as strings, as Triton does).
fn float(x: f64) -> Value {
    serde_json::Number::from_f64(x).map(Value::Number).unwrap_or_else(|| Value::String(x.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_tensors_nested_or_flat() {
        let body = br#"{"id":"r1","inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4.5]]},
            {"name":"s","shape":[1],"datatype":"BYTES","data":["hi"]},{"name":"b","shape":[2],"datatype":"BOOL","data":[true,false]}],
            "outputs":[{"name":"y","parameters":{"binary_data":true}}],"parameters":{"k":3}}"#;
        let r = parse_infer("m", "", Bytes::from_static(body), None).unwrap();
        assert_eq!(r.id, "r1");
        assert_eq!(r.params.get("k"), Some(&Param::Int(3)));
        let x: Vec<f32> = match &r.inputs[0].data {
            Data::Raw(b) => b.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
            _ => panic!(),
        };
        assert_eq!(x, [1.0, 2.0, 3.0, 4.5]);
        assert_eq!(r.inputs[1].data, Data::Strings(vec![Bytes::from_static(b"hi")]));
        assert_eq!(r.inputs[2].data, Data::Raw(Bytes::from_static(&[1, 0])));
        assert_eq!(r.outputs[0].params.get("binary_data"), Some(&Param::Bool(true)));
    }

    #[test]
    fn binary_extension_splits_the_body() {
        let json = br#"{"inputs":[{"name":"x","shape":[2],"datatype":"INT32","parameters":{"binary_data_size":8}},
            {"name":"s","shape":[2],"datatype":"BYTES","parameters":{"binary_data_size":11}}]}"#;
        let mut body = json.to_vec();
        body.extend_from_slice(&7i32.to_le_bytes());
        body.extend_from_slice(&(-1i32).to_le_bytes());
        body.extend_from_slice(&join_strings(&[Bytes::from_static(b"ab"), Bytes::from_static(b"c")]));
        let len = json.len().to_string();
        let r = parse_infer("m", "1", Bytes::from(body.clone()), Some(&len)).unwrap();
        assert_eq!(r.inputs[0].data, Data::Raw(Bytes::copy_from_slice(&body[json.len()..json.len() + 8])));
        assert_eq!(r.inputs[1].data, Data::Strings(vec![Bytes::from_static(b"ab"), Bytes::from_static(b"c")]));
        assert!(!r.inputs[0].params.contains_key("binary_data_size"));
        // One byte short, one byte over, a bad length header.
        let e = parse_infer("m", "1", Bytes::from(body[..body.len() - 1].to_vec()), Some(&len)).unwrap_err();
        assert!(e.message.contains("input `s`"), "{}", e.message);
        let mut over = body.clone();
        over.push(0);
        let e = parse_infer("m", "1", Bytes::from(over), Some(&len)).unwrap_err();
        assert!(e.message.contains("1 bytes of binary data"), "{}", e.message);
        let e = parse_infer("m", "1", Bytes::from(body.clone()), Some("x")).unwrap_err();
        assert!(e.message.contains("Inference-Header-Content-Length"), "{}", e.message);
        let e = parse_infer("m", "1", Bytes::from(body), Some("99999")).unwrap_err();
        assert!(e.message.contains("says 99999 bytes"), "{}", e.message);
    }

    #[test]
    fn bad_json_names_the_field() {
        let cases: &[(&[u8], &str)] = &[
            (b"{", "request JSON"),
            (b"[]", "must be an object"),
            (br#"{"inputs":3}"#, "`inputs`"),
            (br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP33","data":[1]}]}"#, "unknown datatype `FP33`"),
            (br#"{"inputs":[{"name":"x","shape":[-1],"datatype":"FP32","data":[1]}]}"#, "shape entries"),
            (br#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT8","data":[300]}]}"#, "element 0 is not an INT8"),
            (br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":["a"]}]}"#, "element 0 is not a number"),
            (br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32"}]}"#, "neither `data`"),
            (br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP16","data":[1]}]}"#, "binary data extension"),
            (br#"{"inputs":[],"outputs":[{"nam":"y"}]}"#, "`outputs[0].name`"),
            (br#"{"inputs":[],"parameters":{"a":[1]}}"#, "`parameters.a`"),
        ];
        for (body, want) in cases {
            let e = parse_infer("m", "", Bytes::from_static(body), None).unwrap_err();
            assert!(e.message.contains(want), "{}: {}", String::from_utf8_lossy(body), e.message);
        }
        let deep = format!("{{\"inputs\":[{{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\",\"data\":{}1{}}}]}}", "[".repeat(100), "]".repeat(100));
        let e = parse_infer("m", "", Bytes::from(deep), None).unwrap_err();
        assert!(e.message.contains("nested deeper") || e.message.contains("recursion"), "{}", e.message);
    }

    #[test]
    fn responses_in_json_and_binary() {
        let t = Tensor {
            name: "y".into(),
            datatype: Datatype::Fp32,
            shape: vec![2],
            data: Data::Raw(Bytes::from([1.5f32.to_le_bytes(), 2f32.to_le_bytes()].concat())),
            params: Params::new(),
        };
        let resp = InferResponse { model: "m".into(), version: "1".into(), id: "q".into(), params: Params::new(), outputs: vec![t] };
        let (body, len) = write_infer(&resp, &[], false).unwrap();
        assert_eq!(len, None);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["outputs"][0]["data"], json!([1.5, 2.0]));
        assert_eq!(v["id"], "q");
        let (body, len) = write_infer(&resp, &[], true).unwrap();
        let len = len.unwrap();
        let v: Value = serde_json::from_slice(&body[..len]).unwrap();
        assert_eq!(v["outputs"][0]["parameters"]["binary_data_size"], 8);
        assert_eq!(&body[len..], &[1.5f32.to_le_bytes(), 2f32.to_le_bytes()].concat()[..]);
    }
}
