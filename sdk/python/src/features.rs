//! `FeatureSpec`: the feature spec's transforms (`tensorgate-features`, the
//! same code the `features` plugin runs when serving) for the Python
//! package's training side (`tensorgate.spec`, `tensorgate.data`).
//!
//! Columns come in as a dict: branch -> a flat array (any numeric or bool
//! dtype, read as f64 here), or `(counts uint64/int64 [N], values)` for a
//! jagged branch;
//! tensors go out as `(name, descr, shape, bytearray)`.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyDict, PyTuple};
use tensorgate_features::{Columns, Data, Features, Stats};

use crate::numpy::array_view;

fn value_error(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

fn f64s(py: Python<'_>, obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<f64>> {
    let v = array_view(py, obj)?;
    if v.shape.len() != 1 {
        return Err(value_error(format!("{what}: expected a 1-d array, got shape {:?}", v.shape)));
    }
    // The branch's own dtype, converted here (one pass, no NumPy copy first).
    macro_rules! conv {
        ($t:ty, $n:expr) => {
            v.data.chunks_exact($n).map(|c| <$t>::from_le_bytes(c.try_into().unwrap_or_default()) as f64).collect()
        };
    }
    Ok(match v.descr.as_str() {
        "<f8" => conv!(f64, 8),
        "<f4" => conv!(f32, 4),
        "<i8" => conv!(i64, 8),
        "<u8" => conv!(u64, 8),
        "<i4" => conv!(i32, 4),
        "<u4" => conv!(u32, 4),
        "<i2" => conv!(i16, 2),
        "<u2" => conv!(u16, 2),
        "|i1" => conv!(i8, 1),
        "|u1" | "|b1" => v.data.iter().map(|&b| b as f64).collect(),
        other => return Err(value_error(format!("{what}: values of dtype {other} (give numbers or booleans)"))),
    })
}

fn u64s(py: Python<'_>, obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<u64>> {
    let v = array_view(py, obj)?;
    if !matches!(v.descr.as_str(), "<i8" | "<u8") || v.shape.len() != 1 {
        return Err(value_error(format!("{what}: expected 1-d int64 counts, got {} {:?}", v.descr, v.shape)));
    }
    let signed = v.descr == "<i8";
    v.data
        .chunks_exact(8)
        .map(|c| {
            let b: [u8; 8] = c.try_into().unwrap_or_default();
            if signed {
                u64::try_from(i64::from_le_bytes(b)).map_err(|_| value_error(format!("{what}: a negative count")))
            } else {
                Ok(u64::from_le_bytes(b))
            }
        })
        .collect()
}

fn columns(py: Python<'_>, cols: &Bound<'_, PyDict>, events: usize) -> PyResult<Columns> {
    let mut out = Columns::new(events);
    for (k, v) in cols.iter() {
        let name: String = k.extract()?;
        if let Ok(t) = v.cast::<PyTuple>() {
            if t.len() != 2 {
                return Err(value_error(format!("branch {name}: give (counts, values)")));
            }
            let counts = u64s(py, &t.get_item(0)?, &name)?;
            let values = f64s(py, &t.get_item(1)?, &name)?;
            out.insert_jagged(&name, &counts, values).map_err(value_error)?;
        } else {
            out.insert_flat(&name, f64s(py, &v, &name)?).map_err(value_error)?;
        }
    }
    Ok(out)
}

fn keep_mask(keep: Option<&Bound<'_, PyAny>>, py: Python<'_>) -> PyResult<Option<Vec<bool>>> {
    let Some(k) = keep else { return Ok(None) };
    if k.is_none() {
        return Ok(None);
    }
    let v = array_view(py, k)?;
    if v.descr != "|b1" {
        return Err(value_error(format!("keep: expected a bool array, got {}", v.descr)));
    }
    Ok(Some(v.data.iter().map(|&b| b != 0).collect()))
}

fn f64_bytes<'py>(py: Python<'py>, v: &[f64]) -> Bound<'py, PyByteArray> {
    filled(py, 8, v, |d, x: &f64| d.copy_from_slice(&x.to_le_bytes()))
}

type TensorOut<'py> = (String, &'static str, Vec<usize>, Bound<'py, PyByteArray>);

fn tensors_out<'py>(py: Python<'py>, tensors: Vec<tensorgate_features::Tensor>) -> Vec<TensorOut<'py>> {
    tensors
        .into_iter()
        .map(|t| match t.data {
            Data::F32(v) => (t.name, "<f4", t.shape, filled(py, 4, &v, |d, x: &f32| d.copy_from_slice(&x.to_le_bytes()))),
            Data::Bool(v) => (t.name, "|b1", t.shape, filled(py, 1, &v, |d, x: &bool| d[0] = u8::from(*x))),
        })
        .collect()
}

/// A bytearray of `size` bytes per value, written in place (no intermediate buffer).
fn filled<'py, T>(py: Python<'py>, size: usize, values: &[T], put: impl Fn(&mut [u8], &T)) -> Bound<'py, PyByteArray> {
    let fill = |buf: &mut [u8]| {
        buf.chunks_exact_mut(size).zip(values).for_each(|(d, x)| put(d, x));
        Ok(())
    };
    match PyByteArray::new_with(py, values.len() * size, fill) {
        Ok(b) => b,
        // Only on allocation failure: fall back to a plain copy.
        Err(_) => {
            let mut bytes = vec![0u8; values.len() * size];
            bytes.chunks_exact_mut(size).zip(values).for_each(|(d, x)| put(d, x));
            PyByteArray::new(py, &bytes)
        }
    }
}

/// A feature spec ready to run (`tensorgate.spec.Spec` wraps it).
#[pyclass(module = "tensorgate._native")]
pub struct FeatureSpec {
    features: Features,
    stats: Stats,
}

#[pymethods]
impl FeatureSpec {
    /// Reads a spec from TOML; errors (ValueError) name `origin` and the line.
    #[staticmethod]
    fn from_toml(text: &str, origin: &str) -> PyResult<FeatureSpec> {
        let features = tensorgate_features::toml::from_toml(text, origin).map_err(value_error)?;
        Ok(FeatureSpec { features, stats: Stats::default() })
    }

    /// Reads a compiled spec (JSON, as `to_json` wrote it).
    #[staticmethod]
    fn from_json(text: &str, origin: &str) -> PyResult<FeatureSpec> {
        let features = Features::from_json(text, origin).map_err(value_error)?;
        Ok(FeatureSpec { features, stats: Stats::default() })
    }

    /// The compiled spec, fitted standardisation included, as JSON.
    fn to_json(&self) -> String {
        self.features.to_json()
    }

    /// Every branch read, with the spec line of its first use.
    fn branches(&self) -> Vec<(String, usize)> {
        self.features.branches()
    }

    /// The branches the model's inputs read (what a client sends the plugin).
    fn input_branches(&self) -> Vec<String> {
        self.features.input_branches()
    }

    /// The branches prediction reads (inputs, selection, observers).
    fn serving_branches(&self) -> Vec<String> {
        self.features.serving_branches()
    }

    /// The model inputs: (name, dtype, shape with -1 for the batch).
    fn model_inputs(&self) -> Vec<(String, String, Vec<i64>)> {
        self.features.model_inputs().into_iter().map(|t| (t.name, t.dtype.to_string(), t.shape)).collect()
    }

    /// The documented functions: (name, number of arguments, description).
    #[staticmethod]
    fn functions() -> Vec<(String, usize, String)> {
        tensorgate_features::FUNCTIONS.iter().map(|(n, a, d)| (n.to_string(), *a, d.to_string())).collect()
    }

    /// Which events pass the selection, as bool bytes.
    fn select<'py>(&self, py: Python<'py>, cols: &Bound<'py, PyDict>, events: usize) -> PyResult<Bound<'py, PyByteArray>> {
        let c = columns(py, cols, events)?;
        let keep = self.features.select(&c).map_err(value_error)?;
        Ok(PyByteArray::new(py, &keep.into_iter().map(u8::from).collect::<Vec<_>>()))
    }

    /// The weight (float64 bytes) of each kept event, or None without a weight.
    #[pyo3(signature = (cols, events, keep=None))]
    fn weights<'py>(
        &self,
        py: Python<'py>,
        cols: &Bound<'py, PyDict>,
        events: usize,
        keep: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyByteArray>>> {
        let c = columns(py, cols, events)?;
        let k = keep_mask(keep, py)?;
        Ok(self.features.weights(&c, k.as_deref()).map_err(value_error)?.map(|v| f64_bytes(py, &v)))
    }

    /// The labels expression's value (float64 bytes) per kept event, or None.
    #[pyo3(signature = (cols, events, keep=None))]
    fn label_values<'py>(
        &self,
        py: Python<'py>,
        cols: &Bound<'py, PyDict>,
        events: usize,
        keep: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyByteArray>>> {
        let c = columns(py, cols, events)?;
        let k = keep_mask(keep, py)?;
        Ok(self.features.label_values(&c, k.as_deref()).map_err(value_error)?.map(|v| f64_bytes(py, &v)))
    }

    /// One chunk for training: (keep as bool bytes, the kept events' tensors
    /// as `transform` gives them, weights and label values as float64 bytes or None).
    #[allow(clippy::type_complexity)]
    fn process<'py>(
        &self,
        py: Python<'py>,
        cols: &Bound<'py, PyDict>,
        events: usize,
    ) -> PyResult<(
        Bound<'py, PyByteArray>,
        Vec<TensorOut<'py>>,
        Option<Bound<'py, PyByteArray>>,
        Option<Bound<'py, PyByteArray>>,
    )> {
        let c = columns(py, cols, events)?;
        let p = py.detach(|| self.features.process(&c)).map_err(value_error)?;
        let keep = PyByteArray::new(py, &p.keep.iter().map(|&b| u8::from(b)).collect::<Vec<_>>());
        Ok((
            keep,
            tensors_out(py, p.tensors),
            p.weights.map(|v| f64_bytes(py, &v)),
            p.labels.map(|v| f64_bytes(py, &v)),
        ))
    }

    /// The first pass over one chunk: selects, adds the kept events to the
    /// statistics; returns how many were kept.
    fn fit_chunk<'py>(&mut self, py: Python<'py>, cols: &Bound<'py, PyDict>, events: usize) -> PyResult<usize> {
        let c = columns(py, cols, events)?;
        let keep = self.features.select(&c).map_err(value_error)?;
        self.features.accumulate(&c, Some(&keep), &mut self.stats).map_err(value_error)?;
        Ok(keep.iter().filter(|&&k| k).count())
    }

    /// The model inputs of the kept events: [(name, descr, shape, bytearray)].
    #[pyo3(signature = (cols, events, keep=None))]
    fn transform<'py>(
        &self,
        py: Python<'py>,
        cols: &Bound<'py, PyDict>,
        events: usize,
        keep: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Vec<TensorOut<'py>>> {
        let c = columns(py, cols, events)?;
        let k = keep_mask(keep, py)?;
        let tensors = py.detach(|| self.features.transform(&c, k.as_deref())).map_err(value_error)?;
        Ok(tensors_out(py, tensors))
    }

    /// Adds the kept events' values to the first pass's statistics.
    #[pyo3(signature = (cols, events, keep=None))]
    fn accumulate<'py>(
        &mut self,
        py: Python<'py>,
        cols: &Bound<'py, PyDict>,
        events: usize,
        keep: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<()> {
        let c = columns(py, cols, events)?;
        let k = keep_mask(keep, py)?;
        self.features.accumulate(&c, k.as_deref(), &mut self.stats).map_err(value_error)
    }

    /// Fits every scaled feature's standardisation from the statistics gathered.
    fn fit(&mut self) -> PyResult<()> {
        self.features.fit(&self.stats).map_err(value_error)?;
        self.stats = Stats::default();
        Ok(())
    }
}
