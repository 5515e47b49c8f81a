//! Conversions between the host's own types and the WIT records, done only
//! here, at the plugin boundary (tensors do not cross: they stay in the host
//! behind handles, `tensors.rs`).

use super::wit;
use tensorgate_server::manifest::{Manifest, TensorDecl};
use tensorgate_backend::Dtype;

impl From<wit::Dtype> for Dtype {
    fn from(d: wit::Dtype) -> Dtype {
        match d {
            wit::Dtype::F32 => Dtype::F32,
            wit::Dtype::F64 => Dtype::F64,
            wit::Dtype::I64 => Dtype::I64,
            wit::Dtype::I32 => Dtype::I32,
            wit::Dtype::U8 => Dtype::U8,
            wit::Dtype::Boolean => Dtype::Bool,
        }
    }
}

impl From<Dtype> for wit::Dtype {
    fn from(d: Dtype) -> wit::Dtype {
        match d {
            Dtype::F32 => wit::Dtype::F32,
            Dtype::F64 => wit::Dtype::F64,
            Dtype::I64 => wit::Dtype::I64,
            Dtype::I32 => wit::Dtype::I32,
            Dtype::U8 => wit::Dtype::U8,
            Dtype::Bool => wit::Dtype::Boolean,
        }
    }
}

/// The manifest as the plugin sees it through `get-manifest`.
pub fn plugin_manifest(m: &Manifest) -> wit::PluginManifest {
    let spec = |t: &TensorDecl| wit::TensorSpec { name: t.name.clone(), dtype: t.dtype.into(), shape: t.shape.clone() };
    wit::PluginManifest {
        name: m.name.clone(),
        version: m.version,
        description: m.description.clone(),
        labels: m.labels.clone(),
        inputs: m.inputs.iter().map(spec).collect(),
        outputs: m.outputs.iter().map(spec).collect(),
        params: m.params_as_text(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtypes_round_trip() {
        for d in Dtype::ALL {
            assert_eq!(Dtype::from(wit::Dtype::from(d)), d);
        }
        assert_eq!(wit::Dtype::from(Dtype::Bool), wit::Dtype::Boolean);
    }

    #[test]
    fn manifest_reaches_the_plugin_with_params_as_text() {
        let m = Manifest::parse("name='a'\nversion=2\n[[inputs]]\nname='x'\ndtype='bool'\nshape=[-1,3]\n[params]\nk=3\n", "m").unwrap();
        let p = plugin_manifest(&m);
        assert_eq!((p.name.as_str(), p.version), ("a", 2));
        assert_eq!(p.inputs[0].dtype, wit::Dtype::Boolean);
        assert_eq!(p.inputs[0].shape, vec![-1, 3]);
        assert_eq!(p.params, vec![("k".to_string(), "3".to_string())]);
    }
}
