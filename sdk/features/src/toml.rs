//! The spec's TOML form (docs/training.md), read with line numbers: every
//! error names the spec's file and line.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use crate::spec::{Error, Feature, Features, Input, Labels, Located, Scale, Spec};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    #[serde(default)]
    tree: Option<String>,
    #[serde(default)]
    selection: Option<Spanned<OneOrMany>>,
    #[serde(default)]
    weight: Option<Spanned<String>>,
    #[serde(default)]
    observers: Vec<Spanned<String>>,
    #[serde(default)]
    labels: Option<Spanned<RawLabels>>,
    #[serde(default)]
    inputs: Vec<Spanned<RawInput>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput {
    name: String,
    features: Vec<Spanned<String>>,
    #[serde(default)]
    pad: Option<Spanned<i64>>,
    #[serde(default)]
    sort: Option<Spanned<String>>,
    #[serde(default)]
    mask: Option<bool>,
    #[serde(default)]
    pad_value: Option<f64>,
    #[serde(default)]
    scale: Option<Spanned<String>>,
    #[serde(default)]
    scales: BTreeMap<String, Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLabels {
    classes: Vec<String>,
    #[serde(default)]
    files: Option<BTreeMap<String, Vec<String>>>,
    #[serde(default)]
    branch: Option<Spanned<String>>,
    #[serde(default)]
    expression: Option<Spanned<String>>,
}

/// 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

fn scale(text: &str, s: &Spanned<String>, origin: &str) -> Result<Scale, Error> {
    match s.get_ref().as_str() {
        "standard" => Ok(Scale::Standard),
        "minmax" => Ok(Scale::Minmax),
        "none" => Ok(Scale::None),
        other => Err(Error::at(origin, line_of(text, s.span().start), format!("unknown scale `{other}` (known: standard, minmax, none)"))),
    }
}

/// `name = expr` -> (name, expr); a bare expression names itself.
fn split_named(s: &str) -> (String, String) {
    let b = s.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c == b'='
            && !matches!(b.get(i.wrapping_sub(1)), Some(b'<' | b'>' | b'!' | b'='))
            && b.get(i + 1) != Some(&b'=')
        {
            let name = s[..i].trim();
            if !name.is_empty() && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') {
                return (name.to_string(), s[i + 1..].trim().to_string());
            }
        }
    }
    (s.trim().to_string(), s.trim().to_string())
}

/// Reads a spec from its TOML text; `origin` (the file name) prefixes errors.
pub fn from_toml(text: &str, origin: &str) -> Result<Features, Error> {
    let raw: RawSpec = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(0, |s| line_of(text, s.start));
        Error::at(origin, line, e.message().to_string())
    })?;
    let at = |span: std::ops::Range<usize>| line_of(text, span.start);
    if raw.inputs.is_empty() {
        return Err(Error::at(origin, 0, "no [[inputs]]: give at least one model input"));
    }
    let mut inputs = Vec::new();
    for ri in &raw.inputs {
        let line = at(ri.span());
        let r = ri.get_ref();
        let default = match &r.scale {
            Some(s) => scale(text, s, origin)?,
            None => Scale::Standard,
        };
        let pad = match &r.pad {
            Some(p) if *p.get_ref() < 1 => {
                return Err(Error::at(origin, at(p.span()), format!("input `{}`: pad must be at least 1", r.name)))
            }
            Some(p) => Some(*p.get_ref() as usize),
            None => None,
        };
        let mut features = Vec::new();
        for f in &r.features {
            let (name, expr) = split_named(f.get_ref());
            if features.iter().any(|x: &Feature| x.name == name) {
                return Err(Error::at(origin, at(f.span()), format!("input `{}`: feature `{name}` given twice", r.name)));
            }
            let scale = match r.scales.get(&name) {
                Some(s) => scale(text, s, origin)?,
                None => default,
            };
            features.push(Feature { name, expr, line: at(f.span()), scale, fitted: None });
        }
        for (name, s) in &r.scales {
            if !features.iter().any(|f| f.name == *name) {
                return Err(Error::at(origin, at(s.span()), format!("input `{}`: scales names `{name}`, which is not one of its features", r.name)));
            }
        }
        inputs.push(Input {
            name: r.name.clone(),
            line,
            pad,
            sort: r.sort.as_ref().map(|s| Located { text: s.get_ref().clone(), line: at(s.span()) }),
            mask: r.mask.unwrap_or(true),
            pad_value: r.pad_value.unwrap_or(0.0),
            features,
        });
    }
    let selection = match &raw.selection {
        None => Vec::new(),
        Some(s) => {
            let line = at(s.span());
            match s.get_ref() {
                OneOrMany::One(t) => vec![Located { text: t.clone(), line }],
                OneOrMany::Many(v) => v.iter().map(|t| Located { text: t.clone(), line }).collect(),
            }
        }
    };
    let labels = match &raw.labels {
        None => None,
        Some(l) => {
            let line = at(l.span());
            let r = l.get_ref();
            if r.classes.is_empty() {
                return Err(Error::at(origin, line, "labels: `classes` is empty"));
            }
            let sources = [r.files.is_some(), r.branch.is_some(), r.expression.is_some()].iter().filter(|&&x| x).count();
            if sources != 1 {
                return Err(Error::at(origin, line, "labels: give exactly one of `files` (per class), `branch` or `expression`"));
            }
            let files = r.files.clone().unwrap_or_default();
            if r.files.is_some() {
                for c in &r.classes {
                    if files.get(c).is_none_or(|v| v.is_empty()) {
                        return Err(Error::at(origin, line, format!("labels: class `{c}` has no files in `labels.files`")));
                    }
                }
                for k in files.keys() {
                    if !r.classes.contains(k) {
                        return Err(Error::at(origin, line, format!("labels.files names `{k}`, which is not one of the classes {:?}", r.classes)));
                    }
                }
            }
            let expression = r.branch.as_ref().or(r.expression.as_ref()).map(|e| Located { text: e.get_ref().clone(), line: at(e.span()) });
            Some(Labels { line, classes: r.classes.clone(), files, expression })
        }
    };
    let spec = Spec {
        origin: origin.to_string(),
        tree: raw.tree.clone().unwrap_or_else(|| "Events".to_string()),
        inputs,
        selection,
        weight: raw.weight.as_ref().map(|w| Located { text: w.get_ref().clone(), line: at(w.span()) }),
        observers: raw.observers.iter().map(|o| Located { text: o.get_ref().clone(), line: at(o.span()) }).collect(),
        labels,
    };
    Features::new(spec)
}
