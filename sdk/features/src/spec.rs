//! The compiled feature spec (JSON: what a bundle's manifest carries, the
//! fitted standardisation included) and its transforms.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::columns::{Column, ColumnError, Columns};
use crate::expr::{Expr, ExprError, Value};

/// An error naming the spec (its file and line) or the data.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", self.render())]
pub struct Error {
    /// The spec's file name (or what the spec came from).
    pub origin: String,
    /// The spec's line the error is about, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl Error {
    pub(crate) fn at(origin: &str, line: usize, message: impl Into<String>) -> Error {
        Error { origin: origin.to_string(), line: (line > 0).then_some(line), message: message.into() }
    }

    fn render(&self) -> String {
        match self.line {
            Some(l) => format!("{} line {}: {}", self.origin, l, self.message),
            None if self.origin.is_empty() => self.message.clone(),
            None => format!("{}: {}", self.origin, self.message),
        }
    }
}

impl From<ColumnError> for Error {
    fn from(e: ColumnError) -> Error {
        Error { origin: String::new(), line: None, message: e.to_string() }
    }
}

/// An expression with the spec line it was written on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Located {
    /// The expression's text.
    pub text: String,
    /// Its line in the spec (0 when unknown).
    #[serde(default)]
    pub line: usize,
}

/// How a feature is standardised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scale {
    /// Left as computed.
    None,
    /// (x - mean) / std, fitted on the training data.
    Standard,
    /// (x - min) / (max - min), fitted on the training data.
    Minmax,
}

/// Numbers that must come back with the same bits: written as strings in
/// Rust's shortest round-trip form and read with Rust's correctly rounded
/// parser (JSON numbers are accepted too).
mod exact {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{x:?}"))
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Text(String),
        Number(f64),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match Either::deserialize(d)? {
            Either::Number(x) => Ok(x),
            Either::Text(t) => t.parse().map_err(|_| serde::de::Error::custom(format!("`{t}` is not a number"))),
        }
    }
}

/// A fitted standardisation: x' = (x - offset) / scale, and the statistics it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fitted {
    /// Subtracted first.
    #[serde(with = "exact")]
    pub offset: f64,
    /// Then divided by (never 0).
    #[serde(with = "exact")]
    pub scale: f64,
    /// Values seen.
    pub count: u64,
    /// Their mean.
    #[serde(with = "exact")]
    pub mean: f64,
    /// Their standard deviation (population).
    #[serde(with = "exact")]
    pub std: f64,
    /// The smallest.
    #[serde(with = "exact")]
    pub min: f64,
    /// The largest.
    #[serde(with = "exact")]
    pub max: f64,
}

/// One feature of a model input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feature {
    /// Its name (the expression unless named with `name = expr`).
    pub name: String,
    /// The expression.
    pub expr: String,
    /// Spec line.
    #[serde(default)]
    pub line: usize,
    /// Standardisation.
    pub scale: Scale,
    /// The fitted standardisation (after the first pass).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fitted: Option<Fitted>,
}

/// One model input: flat ([N, F]) or jagged padded to `pad` ([N, pad, F], plus a mask input).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Input {
    /// The model input's name.
    pub name: String,
    /// Spec line.
    #[serde(default)]
    pub line: usize,
    /// Elements kept per event (jagged inputs).
    #[serde(default)]
    pub pad: Option<usize>,
    /// Elements ordered by this expression, largest first, before truncation.
    #[serde(default)]
    pub sort: Option<Located>,
    /// Whether a `<name>_mask` input (bool [N, pad]) follows.
    #[serde(default = "yes")]
    pub mask: bool,
    /// The value of padded slots (after standardisation).
    #[serde(default, with = "exact")]
    pub pad_value: f64,
    /// The features, in order.
    pub features: Vec<Feature>,
}

fn yes() -> bool {
    true
}

/// How training labels are found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Labels {
    /// Spec line of `[labels]`.
    #[serde(default)]
    pub line: usize,
    /// Class names, in output order.
    pub classes: Vec<String>,
    /// Per class, its files (label = the class's index).
    #[serde(default)]
    pub files: BTreeMap<String, Vec<String>>,
    /// Or an expression (a branch, or e.g. `nMuon >= 2`) giving the class index.
    #[serde(default)]
    pub expression: Option<Located>,
}

/// The whole spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// Where it came from (file name), for messages.
    #[serde(default)]
    pub origin: String,
    /// The tree read.
    pub tree: String,
    /// The model's inputs.
    pub inputs: Vec<Input>,
    /// Events kept: every expression non-zero.
    #[serde(default)]
    pub selection: Vec<Located>,
    /// Per-event training weight.
    #[serde(default)]
    pub weight: Option<Located>,
    /// Branches carried to the output untouched.
    #[serde(default)]
    pub observers: Vec<Located>,
    /// Training labels.
    #[serde(default)]
    pub labels: Option<Labels>,
}

/// A tensor the transforms produce.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Model input name.
    pub name: String,
    /// Shape, batch first.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Data,
}

/// A tensor's values.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// Features.
    F32(Vec<f32>),
    /// A mask: true where a real element sits.
    Bool(Vec<bool>),
}

/// What [`Features::process`] gives for one chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct Processed {
    /// Which events pass the selection.
    pub keep: Vec<bool>,
    /// The kept events' model inputs.
    pub tensors: Vec<Tensor>,
    /// Their weights (None without a `weight`).
    pub weights: Option<Vec<f64>>,
    /// Their label values (None without a labels expression).
    pub labels: Option<Vec<f64>>,
}

/// A model input's declaration: name, dtype (`f32`, `bool`), shape with -1 for the batch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorInfo {
    /// Name.
    pub name: String,
    /// `f32` or `bool`.
    pub dtype: &'static str,
    /// Shape, `-1` first.
    pub shape: Vec<i64>,
}

/// Running statistics of each feature (the first pass that fits the standardisation).
#[derive(Debug, Clone, Default)]
pub struct Stats {
    acc: Vec<Vec<Acc>>,
}

#[derive(Debug, Clone, Copy)]
struct Acc {
    n: u64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
}

impl Default for Acc {
    fn default() -> Acc {
        Acc { n: 0, mean: 0.0, m2: 0.0, min: f64::INFINITY, max: f64::NEG_INFINITY }
    }
}

impl Acc {
    fn push(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
        self.min = self.min.min(x);
        self.max = self.max.max(x);
    }
}

struct Compiled {
    features: Vec<Expr>,
    sort: Option<Expr>,
}

/// A spec ready to run: its expressions parsed.
pub struct Features {
    spec: Spec,
    inputs: Vec<Compiled>,
    selection: Vec<Expr>,
    weight: Option<Expr>,
    label: Option<Expr>,
}

impl Features {
    /// Parses every expression of `spec`; errors name the spec line.
    pub fn new(spec: Spec) -> Result<Features, Error> {
        let origin = spec.origin.clone();
        let parse = |text: &str, line: usize, what: &str| {
            Expr::parse(text).map_err(|e| Error::at(&origin, line, format!("{what}: {e}")))
        };
        if spec.inputs.is_empty() {
            return Err(Error::at(&origin, 0, "no [[inputs]]"));
        }
        let mut inputs = Vec::new();
        let mut names = Vec::new();
        for input in &spec.inputs {
            let what = format!("input `{}`", input.name);
            if input.features.is_empty() {
                return Err(Error::at(&origin, input.line, format!("{what} has no features")));
            }
            if input.pad == Some(0) {
                return Err(Error::at(&origin, input.line, format!("{what}: pad must be at least 1")));
            }
            for n in [input.name.clone(), format!("{}_mask", input.name)] {
                if names.contains(&n) {
                    return Err(Error::at(&origin, input.line, format!("{what}: a second model input named `{n}`")));
                }
                names.push(n);
            }
            let features = input
                .features
                .iter()
                .map(|f| parse(&f.expr, f.line, &format!("{what}, feature `{}`", f.name)))
                .collect::<Result<Vec<_>, _>>()?;
            let sort = match &input.sort {
                Some(s) if input.pad.is_none() => {
                    return Err(Error::at(&origin, s.line, format!("{what}: `sort` needs a `pad` length (a jagged input)")))
                }
                Some(s) => Some(parse(&s.text, s.line, &format!("{what}, sort"))?),
                None => None,
            };
            inputs.push(Compiled { features, sort });
        }
        let selection =
            spec.selection.iter().map(|s| parse(&s.text, s.line, "selection")).collect::<Result<Vec<_>, _>>()?;
        let weight = spec.weight.as_ref().map(|w| parse(&w.text, w.line, "weight")).transpose()?;
        let label = match &spec.labels {
            Some(l) => l.expression.as_ref().map(|e| parse(&e.text, e.line, "labels")).transpose()?,
            None => None,
        };
        Ok(Features { spec, inputs, selection, weight, label })
    }

    /// Reads a compiled spec (as [`Features::to_json`] wrote it).
    pub fn from_json(text: &str, origin: &str) -> Result<Features, Error> {
        let mut spec: Spec =
            serde_json::from_str(text).map_err(|e| Error::at(origin, 0, format!("not a feature spec: {e}")))?;
        if spec.origin.is_empty() {
            spec.origin = origin.to_string();
        }
        Features::new(spec)
    }

    /// The compiled spec as JSON (fitted values included).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.spec).unwrap_or_default()
    }

    /// The spec.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    fn err(&self, line: usize, message: impl Into<String>) -> Error {
        Error::at(&self.spec.origin, line, message)
    }

    fn expr_err(&self, line: usize, what: &str, e: ExprError) -> Error {
        self.err(line, format!("{what}: {e}"))
    }

    /// Every branch read, with the spec line of its first use: the inputs'
    /// (features and sort keys), then the selection's, the weight's, the
    /// labels' and the observers.
    pub fn branches(&self) -> Vec<(String, usize)> {
        let mut out: Vec<(String, usize)> = Vec::new();
        let mut add = |e: &Expr, line: usize| {
            let mut bs = Vec::new();
            e.branches(&mut bs);
            for b in bs {
                if !out.iter().any(|(n, _)| *n == b) {
                    out.push((b, line));
                }
            }
        };
        for (input, c) in self.spec.inputs.iter().zip(&self.inputs) {
            for (f, e) in input.features.iter().zip(&c.features) {
                add(e, f.line);
            }
            if let (Some(s), Some(e)) = (&input.sort, &c.sort) {
                add(e, s.line);
            }
        }
        for (s, e) in self.spec.selection.iter().zip(&self.selection) {
            add(e, s.line);
        }
        if let (Some(w), Some(e)) = (&self.spec.weight, &self.weight) {
            add(e, w.line);
        }
        if let (Some(l), Some(e)) = (self.spec.labels.as_ref().and_then(|l| l.expression.as_ref()), &self.label) {
            add(e, l.line);
        }
        for o in &self.spec.observers {
            add(&Expr::Branch(o.text.clone()), o.line);
        }
        out
    }

    /// The branches the model's inputs read (features and sort keys): what
    /// a client sends the features plugin.
    pub fn input_branches(&self) -> Vec<String> {
        let mut out = Vec::new();
        for c in &self.inputs {
            for e in c.features.iter().chain(c.sort.iter()) {
                e.branches(&mut out);
            }
        }
        out
    }

    /// The branches prediction reads: the inputs', the selection's and the
    /// observers (not the weight's or the labels').
    pub fn serving_branches(&self) -> Vec<String> {
        let mut out = self.input_branches();
        for e in &self.selection {
            e.branches(&mut out);
        }
        for o in &self.spec.observers {
            if !out.contains(&o.text) {
                out.push(o.text.clone());
            }
        }
        out
    }

    /// The model's inputs, in order: each input, then its mask for jagged ones.
    pub fn model_inputs(&self) -> Vec<TensorInfo> {
        let mut out = Vec::new();
        for input in &self.spec.inputs {
            let f = input.features.len() as i64;
            match input.pad {
                None => out.push(TensorInfo { name: input.name.clone(), dtype: "f32", shape: vec![-1, f] }),
                Some(p) => {
                    out.push(TensorInfo { name: input.name.clone(), dtype: "f32", shape: vec![-1, p as i64, f] });
                    if input.mask {
                        out.push(TensorInfo { name: format!("{}_mask", input.name), dtype: "bool", shape: vec![-1, p as i64] });
                    }
                }
            }
        }
        out
    }

    fn per_event(&self, e: &Expr, cols: &Columns, line: usize, what: &str) -> Result<Vec<f64>, Error> {
        match e.eval(cols).map_err(|x| self.expr_err(line, what, x))? {
            Value::Scalar(x) => Ok(vec![x; cols.events()]),
            Value::Flat(v) => Ok(std::sync::Arc::unwrap_or_clone(v)),
            Value::Jagged { .. } => Err(self.err(line, format!("{what}: gives a value per element, not per event (use sum(), len() or mean())"))),
        }
    }

    /// Which events pass the selection (all when there is none).
    pub fn select(&self, cols: &Columns) -> Result<Vec<bool>, Error> {
        let mut keep = vec![true; cols.events()];
        for (s, e) in self.spec.selection.iter().zip(&self.selection) {
            let v = self.per_event(e, cols, s.line, &format!("selection `{}`", s.text))?;
            keep.iter_mut().zip(v).for_each(|(k, x)| *k &= x != 0.0);
        }
        Ok(keep)
    }

    /// The weight of each kept event (None without a `weight`).
    pub fn weights(&self, cols: &Columns, keep: Option<&[bool]>) -> Result<Option<Vec<f64>>, Error> {
        let (Some(w), Some(e)) = (&self.spec.weight, &self.weight) else { return Ok(None) };
        let v = self.per_event(e, cols, w.line, "weight")?;
        Ok(Some(gather(&v, keep)))
    }

    /// The label expression's value for each kept event (None without one).
    pub fn label_values(&self, cols: &Columns, keep: Option<&[bool]>) -> Result<Option<Vec<f64>>, Error> {
        let (Some(l), Some(e)) = (&self.spec.labels, &self.label) else { return Ok(None) };
        let v = self.per_event(e, cols, l.line, "labels")?;
        Ok(Some(gather(&v, keep)))
    }

    /// Evaluates input `i` for the kept `rows` and hands every real value to
    /// `sink(slot, feature, value)`, slot by slot (a slot is a row of a flat
    /// input, or one of a row's `pad` places); returns the slots' mask.
    fn visit(&self, i: usize, cols: &Columns, rows: &[usize], mut sink: impl FnMut(usize, usize, f64)) -> Result<Vec<bool>, Error> {
        let input = &self.spec.inputs[i];
        let c = &self.inputs[i];
        let what = |f: &crate::spec::Feature| format!("input `{}`, feature `{}`", input.name, f.name);
        let vals = input
            .features
            .iter()
            .zip(&c.features)
            .map(|(f, e)| e.eval(cols).map_err(|x| self.expr_err(f.line, &what(f), x)))
            .collect::<Result<Vec<_>, _>>()?;
        let Some(pad) = input.pad else {
            for (v, f) in vals.iter().zip(&input.features) {
                if let Value::Jagged { .. } = v {
                    return Err(self.err(
                        f.line,
                        format!("{} is jagged: give input `{}` a `pad` length (or reduce it: sum(), len(), mean())", what(f), input.name),
                    ));
                }
            }
            for (r, &e) in rows.iter().enumerate() {
                for (k, v) in vals.iter().enumerate() {
                    sink(r, k, match v {
                        Value::Scalar(x) => *x,
                        Value::Flat(xs) => xs[e],
                        Value::Jagged { content, .. } => content[e],
                    });
                }
            }
            return Ok(vec![true; rows.len()]);
        };
        let offsets = vals.iter().find_map(|v| match v {
            Value::Jagged { offsets, .. } => Some(offsets.clone()),
            _ => None,
        });
        let Some(offsets) = offsets else {
            return Err(self.err(input.line, format!("input `{}` has a `pad` length but none of its features is jagged", input.name)));
        };
        for (v, f) in vals.iter().zip(&input.features) {
            if let Value::Jagged { offsets: o, .. } = v {
                if !std::sync::Arc::ptr_eq(o, &offsets) && **o != *offsets {
                    return Err(self.err(f.line, format!("{}: its events hold other numbers of elements than the input's first jagged feature", what(f))));
                }
            }
        }
        let key = match (&c.sort, &input.sort) {
            (Some(e), Some(s)) => match e.eval(cols).map_err(|x| self.expr_err(s.line, "sort", x))? {
                Value::Jagged { offsets: o, content } if std::sync::Arc::ptr_eq(&o, &offsets) || *o == *offsets => Some(content),
                _ => return Err(self.err(s.line, format!("sort `{}` must give one value per element of input `{}`", s.text, input.name))),
            },
            _ => None,
        };
        let mut mask = vec![false; rows.len() * pad];
        let mut order: Vec<usize> = Vec::new();
        for (r, &e) in rows.iter().enumerate() {
            let (lo, hi) = (offsets[e], offsets[e + 1]);
            order.clear();
            order.extend(lo..hi);
            if let Some(key) = &key {
                let k = |j: usize| if key[j].is_nan() { f64::NEG_INFINITY } else { key[j] };
                order.sort_by(|&a, &b| k(b).total_cmp(&k(a)));
            }
            for (slot, &j) in order.iter().take(pad).enumerate() {
                let at = r * pad + slot;
                mask[at] = true;
                for (k, v) in vals.iter().enumerate() {
                    sink(at, k, match v {
                        Value::Scalar(x) => *x,
                        Value::Flat(xs) => xs[e],
                        Value::Jagged { content, .. } => content[j],
                    });
                }
            }
        }
        Ok(mask)
    }

    fn rows(cols: &Columns, keep: Option<&[bool]>) -> Result<Vec<usize>, Error> {
        match keep {
            None => Ok((0..cols.events()).collect()),
            Some(k) if k.len() != cols.events() => {
                Err(Error::at("", 0, format!("selection of {} events for a chunk of {}", k.len(), cols.events())))
            }
            Some(k) => Ok(k.iter().enumerate().filter(|(_, &x)| x).map(|(i, _)| i).collect()),
        }
    }

    /// The model inputs of the kept events (all when `keep` is None), standardised.
    pub fn transform(&self, cols: &Columns, keep: Option<&[bool]>) -> Result<Vec<Tensor>, Error> {
        let rows = Self::rows(cols, keep)?;
        let mut out = Vec::new();
        for (i, input) in self.spec.inputs.iter().enumerate() {
            let nf = input.features.len();
            let mut fits = Vec::with_capacity(nf);
            for f in &input.features {
                fits.push(match (f.scale, &f.fitted) {
                    (Scale::None, _) => (0.0, 1.0, false),
                    (_, Some(fit)) => (fit.offset, fit.scale, true),
                    (_, None) => {
                        return Err(self.err(f.line, format!("input `{}`, feature `{}`: its standardisation is not fitted (run the first pass over the training data)", input.name, f.name)))
                    }
                });
            }
            // Padded slots keep `pad_value`; real ones are written, scaled, as they come.
            let width = input.pad.unwrap_or(1);
            let mut scaled = vec![input.pad_value as f32; rows.len() * width * nf];
            let mask = self.visit(i, cols, &rows, |slot, k, x| {
                let (offset, scale, on) = fits[k];
                scaled[slot * nf + k] = if on { (x - offset) / scale } else { x } as f32;
            })?;
            match input.pad {
                None => out.push(Tensor { name: input.name.clone(), shape: vec![rows.len(), nf], data: Data::F32(scaled) }),
                Some(p) => {
                    out.push(Tensor { name: input.name.clone(), shape: vec![rows.len(), p, nf], data: Data::F32(scaled) });
                    if input.mask {
                        out.push(Tensor { name: format!("{}_mask", input.name), shape: vec![rows.len(), p], data: Data::Bool(mask) });
                    }
                }
            }
        }
        Ok(out)
    }

    /// One chunk for training, in one pass over its columns: the selection,
    /// then the kept events' model inputs, weights and label values.
    pub fn process(&self, cols: &Columns) -> Result<Processed, Error> {
        let keep = self.select(cols)?;
        let tensors = self.transform(cols, Some(&keep))?;
        let weights = self.weights(cols, Some(&keep))?;
        let labels = self.label_values(cols, Some(&keep))?;
        Ok(Processed { keep, tensors, weights, labels })
    }

    /// Adds the kept events' feature values (real elements only) to `stats`.
    pub fn accumulate(&self, cols: &Columns, keep: Option<&[bool]>, stats: &mut Stats) -> Result<(), Error> {
        let rows = Self::rows(cols, keep)?;
        if stats.acc.is_empty() {
            stats.acc = self.spec.inputs.iter().map(|i| vec![Acc::default(); i.features.len()]).collect();
        }
        for (i, input) in self.spec.inputs.iter().enumerate() {
            if input.features.iter().all(|f| f.scale == Scale::None) {
                continue;
            }
            let acc = &mut stats.acc[i];
            self.visit(i, cols, &rows, |_, k, x| acc[k].push(x))?;
        }
        Ok(())
    }

    /// Sets every scaled feature's standardisation from `stats`.
    pub fn fit(&mut self, stats: &Stats) -> Result<(), Error> {
        let origin = self.spec.origin.clone();
        for (i, input) in self.spec.inputs.iter_mut().enumerate() {
            for (k, f) in input.features.iter_mut().enumerate() {
                if f.scale == Scale::None {
                    continue;
                }
                let a = stats.acc.get(i).and_then(|v| v.get(k)).copied().unwrap_or_default();
                if a.n == 0 {
                    return Err(Error::at(&origin, f.line, format!("input `{}`, feature `{}`: no finite values to fit its standardisation (is the selection empty?)", input.name, f.name)));
                }
                let std = (a.m2 / a.n as f64).sqrt();
                let (offset, scale) = match f.scale {
                    Scale::Minmax => (a.min, a.max - a.min),
                    _ => (a.mean, std),
                };
                let scale = if scale > 0.0 && scale.is_finite() { scale } else { 1.0 };
                f.fitted = Some(Fitted { offset, scale, count: a.n, mean: a.mean, std, min: a.min, max: a.max });
            }
        }
        Ok(())
    }
}

fn gather(v: &[f64], keep: Option<&[bool]>) -> Vec<f64> {
    match keep {
        None => v.to_vec(),
        Some(k) => v.iter().zip(k).filter(|(_, &x)| x).map(|(y, _)| *y).collect(),
    }
}

/// Jagged branch values: whether `name` is jagged in `cols`.
pub fn is_jagged(cols: &Columns, name: &str) -> bool {
    matches!(cols.get(name), Some(Column::Jagged { .. }))
}
