//! JSON records by key into rows of numbers, and jagged lists padded with a
//! mask: the host's `json-rows` and `pad-jagged` operations (and the Rust
//! SDK's, natively), so that a plugin in an interpreted language hands the
//! host a payload and a list of keys instead of walking values itself.

use serde::Deserialize;

use crate::OpError;

/// How `json-rows` reads an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `{"keys": [...], "values": [...]}`: one row, the values named by the
    /// keys (the TFaaS `/json` form). Every key must be given once and no
    /// other.
    KeysValues,
    /// One record `{key: number, ...}` (one row) or a list of them (a row
    /// each). Every key must be in every record; other keys are refused
    /// when `strict`, else ignored.
    Records {
        /// Whether keys not asked for are an error.
        strict: bool,
    },
}

fn item(code: &'static str, message: String) -> OpError {
    OpError::Item { code, message }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysValues<'a> {
    #[serde(borrow)]
    keys: Vec<std::borrow::Cow<'a, str>>,
    values: Vec<f64>,
}

/// The numbers of the JSON item `bytes` by `keys` (see [`Layout`]): the
/// row-major values of an `[n, keys.len()]` table and `n`. Errors, each with
/// the code a plugin would give: `malformed-json`, `length-mismatch`,
/// `duplicate-key`, `unknown-key`, `missing-key`, `not-a-number`.
pub fn json_rows(bytes: &[u8], keys: &[String], layout: Layout) -> Result<(Vec<f64>, usize), OpError> {
    match layout {
        Layout::KeysValues => keys_values(bytes, keys).map(|row| (row, 1)),
        Layout::Records { strict } => records(bytes, keys, strict),
    }
}

fn keys_values(bytes: &[u8], features: &[String]) -> Result<Vec<f64>, OpError> {
    let req: KeysValues = serde_json::from_slice(bytes).map_err(|e| {
        item("malformed-json", format!("item is not the expected JSON: want {{\"keys\": [...], \"values\": [...]}} ({e})"))
    })?;
    if req.keys.len() != req.values.len() {
        return Err(item("length-mismatch", format!("{} keys but {} values", req.keys.len(), req.values.len())));
    }
    let mut row = vec![0f64; features.len()];
    let mut set = vec![false; features.len()];
    let mut trouble = false;
    for (key, &value) in req.keys.iter().zip(&req.values) {
        match features.iter().position(|f| f == key) {
            Some(s) => {
                trouble |= std::mem::replace(&mut set[s], true);
                row[s] = value;
            }
            None => trouble = true,
        }
    }
    if trouble {
        if let Some(j) = (1..req.keys.len()).find(|&j| req.keys[..j].contains(&req.keys[j])) {
            return Err(item("duplicate-key", format!("key `{}` appears more than once", req.keys[j])));
        }
        if let Some(unknown) = req.keys.iter().find(|k| !features.iter().any(|f| f == *k)) {
            return Err(item("unknown-key", format!("unknown key `{unknown}`; expected {features:?}")));
        }
    }
    if let Some(missing) = set.iter().position(|s| !s) {
        return Err(item("missing-key", format!("missing key `{}`", features[missing])));
    }
    Ok(row)
}

fn records(bytes: &[u8], keys: &[String], strict: bool) -> Result<(Vec<f64>, usize), OpError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| item("malformed-json", format!("item is not JSON: {e}")))?;
    let list = match value {
        serde_json::Value::Object(_) => vec![value],
        serde_json::Value::Array(list) => list,
        other => {
            return Err(item("malformed-json", format!("item is not a record or a list of records: it is {}", kind(&other))));
        }
    };
    let mut out = Vec::with_capacity(list.len() * keys.len());
    for (i, record) in list.iter().enumerate() {
        let serde_json::Value::Object(map) = record else {
            return Err(item("malformed-json", format!("record {i} is {}, not an object", kind(record))));
        };
        if strict {
            if let Some(unknown) = map.keys().find(|k| !keys.iter().any(|f| f == *k)) {
                return Err(item("unknown-key", format!("record {i}: unknown key `{unknown}`; expected {keys:?}")));
            }
        }
        for key in keys {
            match map.get(key) {
                Some(v) => out.push(
                    v.as_f64()
                        .ok_or_else(|| item("not-a-number", format!("record {i}: `{key}` is {}, not a number", kind(v))))?,
                ),
                None => return Err(item("missing-key", format!("record {i}: missing key `{key}`"))),
            }
        }
    }
    Ok((out, list.len()))
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Pads `lengths.len()` jagged lists, stored one after another in `values`
/// (`sum(lengths)` elements of `width` scalars each), to `max` elements
/// each: the `[n, max, width]` values (zeros past each list's end; a list
/// longer than `max` keeps its first `max`) and the `[n, max]` mask (1 for
/// an element, 0 for padding), both as element-sized chunks of `T`.
pub fn pad_jagged<T: Copy + Default>(values: &[T], width: usize, lengths: &[i64], max: usize, one: T) -> Result<(Vec<T>, Vec<T>), OpError> {
    let mut total = 0usize;
    for (i, &l) in lengths.iter().enumerate() {
        let l = usize::try_from(l).map_err(|_| OpError::Shape(format!("lengths[{i}] = {l} is negative")))?;
        total = total.checked_add(l).ok_or_else(|| OpError::Shape("lengths overflow".into()))?;
    }
    let have = if width == 0 { 0 } else { values.len() / width };
    if total != have {
        return Err(OpError::LengthMismatch { what: "the sum of lengths and the values' rows", left: total, right: have });
    }
    let n = lengths.len();
    let size = n.checked_mul(max).and_then(|m| m.checked_mul(width)).ok_or_else(|| OpError::Shape("padded size overflows".into()))?;
    let (mut out, mut mask) = (vec![T::default(); size], vec![T::default(); n * max]);
    let mut at = 0usize;
    for (i, &l) in lengths.iter().enumerate() {
        let l = l as usize;
        let keep = l.min(max);
        out[i * max * width..(i * max + keep) * width].copy_from_slice(&values[at * width..(at + keep) * width]);
        mask[i * max..i * max + keep].fill(one);
        at += l;
    }
    Ok((out, mask))
}

/// [`pad_jagged`] on raw element bytes: rows of `row_bytes` bytes; the
/// mask's elements are `one` (the bytes of 1 in the values' dtype) or zeros
/// of the same size.
pub fn pad_jagged_bytes(values: &[u8], row_bytes: usize, lengths: &[i64], max: usize, one: &[u8]) -> Result<(Vec<u8>, Vec<u8>), OpError> {
    let (out, mask) = pad_jagged(values, row_bytes, lengths, max, 1u8)?;
    let mut wide = vec![0u8; mask.len() * one.len()];
    for (m, w) in mask.iter().zip(wide.chunks_exact_mut(one.len().max(1))) {
        if *m == 1 {
            w.copy_from_slice(one);
        }
    }
    Ok((out, wide))
}

/// The `{label: score, ...}` JSON of one item's scores, in label order,
/// compact, each score written as the f64 of the f32 (as serde_json writes
/// it); `None` when the counts differ (see [`labels_mismatch`]).
pub fn scores_json(labels: &[String], scores: &[f32]) -> Option<Vec<u8>> {
    if labels.len() != scores.len() {
        return None;
    }
    struct Pairs<'a>(&'a [String], &'a [f32]);
    impl serde::Serialize for Pairs<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_map(self.0.iter().zip(self.1).map(|(l, &v)| (l, v as f64)))
        }
    }
    serde_json::to_vec(&Pairs(labels, scores)).ok()
}

/// The message for `classes` scores per item against `labels`, made by
/// `who` (e.g. "plugin `efn-qg`").
pub fn labels_mismatch(who: &str, labels: &[String], classes: usize) -> String {
    let mut shown = labels.iter().take(8).map(String::as_str).collect::<Vec<_>>().join(", ");
    if labels.len() > 8 {
        shown.push_str(", ...");
    }
    format!(
        "{who} made {classes} scores per item but the manifest lists {} labels ({shown}): \
         the scores its postprocess labels must be one per label",
        labels.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn keys_values_orders_by_the_keys_and_names_each_fault() {
        let f = keys(&["a", "b", "c"]);
        let rows = |s: &str| json_rows(s.as_bytes(), &f, Layout::KeysValues);
        assert_eq!(rows(r#"{"keys":["c","a","b"],"values":[3,1,2]}"#).unwrap(), (vec![1.0, 2.0, 3.0], 1));
        let e = |s: &str| rows(s).unwrap_err().to_string();
        assert!(e(r#"{"values":[1]}"#).contains(r#"want {"keys": [...], "values": [...]}"#));
        assert_eq!(e(r#"{"keys":["a"],"values":[1,2]}"#), "1 keys but 2 values");
        assert_eq!(e(r#"{"keys":["a","a","b"],"values":[1,2,3]}"#), "key `a` appears more than once");
        assert_eq!(e(r#"{"keys":["a","x","b"],"values":[1,2,3]}"#), r#"unknown key `x`; expected ["a", "b", "c"]"#);
        assert_eq!(e(r#"{"keys":["a","b"],"values":[1,2]}"#), "missing key `c`");
    }

    #[test]
    fn records_give_a_row_each() {
        let f = keys(&["x", "y"]);
        let r = json_rows(br#"[{"y":2,"x":1,"z":9},{"x":3,"y":4}]"#, &f, Layout::Records { strict: false }).unwrap();
        assert_eq!(r, (vec![1.0, 2.0, 3.0, 4.0], 2));
        assert_eq!(json_rows(br#"{"x":1,"y":2}"#, &f, Layout::Records { strict: true }).unwrap(), (vec![1.0, 2.0], 1));
        let e = json_rows(br#"[{"x":1,"y":2,"z":3}]"#, &f, Layout::Records { strict: true }).unwrap_err();
        assert_eq!(e.to_string(), r#"record 0: unknown key `z`; expected ["x", "y"]"#);
        let e = json_rows(br#"[{"x":1}]"#, &f, Layout::Records { strict: false }).unwrap_err();
        assert_eq!(e.to_string(), "record 0: missing key `y`");
        let e = json_rows(br#"[{"x":1,"y":"2"}]"#, &f, Layout::Records { strict: false }).unwrap_err();
        assert_eq!(e.to_string(), "record 0: `y` is a string, not a number");
    }

    #[test]
    fn scores_become_a_label_map_or_a_named_mismatch() {
        let l = keys(&["qcd", "top"]);
        assert_eq!(scores_json(&l, &[0.25, 0.75]).unwrap(), br#"{"qcd":0.25,"top":0.75}"#.to_vec());
        assert_eq!(scores_json(&l, &[1.0]), None);
        assert!(labels_mismatch("plugin `x`", &l, 3).starts_with("plugin `x` made 3 scores per item but the manifest lists 2 labels (qcd, top)"));
    }

    #[test]
    fn jagged_lists_are_padded_truncated_and_masked() {
        let values = [1, 2, 3, 4, 5, 6, 7, 8];
        let (out, mask) = pad_jagged(&values, 2, &[1, 3, 0], 2, 1).unwrap();
        assert_eq!(out, vec![1, 2, 0, 0, 3, 4, 5, 6, 0, 0, 0, 0]);
        assert_eq!(mask, vec![1, 0, 1, 1, 0, 0]);
        assert!(pad_jagged(&values, 2, &[1, 2], 2, 1).is_err(), "lengths must cover the values");
        assert!(pad_jagged(&values, 2, &[-1, 5], 2, 1).is_err());
    }
}
