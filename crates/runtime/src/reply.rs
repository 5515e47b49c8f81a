//! A plugin's reply held to its manifest: the keys of a JSON reply.
//!
//! A JSON object reply (content type `application/json`) of an application
//! whose manifest lists `labels` is read as a label map when one of its keys
//! is a label or every value is a number (`{"quark": 0.3, "gluon": 0.7}`);
//! such a reply may hold only the labels and the manifest's `[reply] keys`.
//! With `[reply] keys` set, every JSON object reply is held to them (with
//! the labels). Other replies (NumPy files, `{"top_k": [...]}`, arrays) are
//! not looked at. The item path runs this after postprocess, so serving,
//! warm-up and `tensorgate-host check` (hence `tensorgate plugin check`)
//! refuse the same replies.

use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use tensorgate_protocol::ErrorCode;
use tensorgate_server::manifest::Manifest;
use tensorgate_server::request::ItemFailure;

/// Checks the reply `data` of content type `content_type`, made by the
/// plugin of application `app`, against `manifest`: an undeclared key fails
/// the item (`plugin_failed`) with a message naming the key and the plugin.
pub fn check_keys(app: &str, manifest: &Manifest, content_type: &str, data: &[u8]) -> Result<(), ItemFailure> {
    let exhaustive = !manifest.reply.keys.is_empty();
    if manifest.labels.is_empty() && !exhaustive {
        return Ok(());
    }
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case("application/json") || !data.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|&b| b == b'{') {
        return Ok(());
    }
    // Not valid JSON: not this check's business (the client gets what the plugin made).
    let Ok(Keys(keys)) = serde_json::from_slice::<Keys>(data) else { return Ok(()) };
    let label_map = keys.iter().any(|(k, _)| manifest.labels.iter().any(|l| l == k)) || keys.iter().all(|&(_, number)| number);
    if !(exhaustive || label_map) {
        return Ok(());
    }
    match keys.iter().find(|(k, _)| !manifest.allows_reply_key(k)) {
        None => Ok(()),
        Some((key, _)) => Err(ItemFailure::new(ErrorCode::PluginFailed, undeclared(app, manifest, key))),
    }
}

/// The message for an undeclared reply key.
fn undeclared(app: &str, manifest: &Manifest, key: &str) -> String {
    let list = |v: &[String]| match v.is_empty() {
        true => "none".to_string(),
        false => v.join(", "),
    };
    format!(
        "plugin `{app}` replied with key `{key}`, which the manifest does not declare (labels: {}; [reply] keys: {}); \
         declare extra keys with `[reply] keys = [\"{key}\"]` in manifest.toml",
        list(&manifest.labels),
        list(&manifest.reply.keys)
    )
}

/// A JSON object's keys, each with whether its value is a number; values
/// are skipped, not built.
struct Keys(Vec<(String, bool)>);

impl<'de> serde::Deserialize<'de> for Keys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> Visitor<'de> for Object {
            type Value = Keys;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                let mut keys = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    let IsNumber(number) = map.next_value()?;
                    keys.push((key, number));
                }
                Ok(Keys(keys))
            }
        }
        d.deserialize_map(Object)
    }
}

/// Whether a JSON value is a number (anything else is skipped).
struct IsNumber(bool);

impl<'de> serde::Deserialize<'de> for IsNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Value;
        impl<'de> Visitor<'de> for Value {
            type Value = IsNumber;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_i64<E>(self, _: i64) -> Result<IsNumber, E> {
                Ok(IsNumber(true))
            }
            fn visit_u64<E>(self, _: u64) -> Result<IsNumber, E> {
                Ok(IsNumber(true))
            }
            fn visit_f64<E>(self, _: f64) -> Result<IsNumber, E> {
                Ok(IsNumber(true))
            }
            fn visit_bool<E>(self, _: bool) -> Result<IsNumber, E> {
                Ok(IsNumber(false))
            }
            fn visit_str<E>(self, _: &str) -> Result<IsNumber, E> {
                Ok(IsNumber(false))
            }
            fn visit_unit<E>(self) -> Result<IsNumber, E> {
                Ok(IsNumber(false))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<IsNumber, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(IsNumber(false))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<IsNumber, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(IsNumber(false))
            }
        }
        d.deserialize_any(Value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(extra: &str) -> Manifest {
        Manifest::parse(&format!("name='efn-qg'\nversion=1\nlabels=['quark','gluon']\n{extra}"), "m").unwrap()
    }

    fn check(m: &Manifest, body: &str) -> Result<(), String> {
        check_keys("efn-qg", m, "application/json", body.as_bytes()).map_err(|f| {
            assert_eq!(f.code, ErrorCode::PluginFailed);
            f.message
        })
    }

    #[test]
    fn an_undeclared_key_in_a_label_map_is_named_with_the_plugin() {
        let m = manifest("");
        assert_eq!(check(&m, r#"{"quark": 0.3, "gluon": 0.7}"#), Ok(()));
        let e = check(&m, r#"{"quark": 0.3, "glu": 0.7, "n_particles": 0}"#).unwrap_err();
        assert!(e.starts_with("plugin `efn-qg` replied with key `glu`, which the manifest does not declare (labels: quark, gluon;"), "{e}");
        // Every value a number: a label map even with no label among its keys.
        let e = check(&m, r#"{"qrk": 0.3, "glu": 0.7}"#).unwrap_err();
        assert!(e.contains("key `qrk`"), "{e}");
        let e = check(&m, r#"{"quark": 0.3, "gluon": 0.7, "n_particles": 0}"#).unwrap_err();
        assert!(e.contains("key `n_particles`") && e.contains("[reply] keys = [\"n_particles\"]"), "{e}");
    }

    #[test]
    fn declared_extras_pass() {
        let m = manifest("[reply]\nkeys=['n_particles', 'meta']\n");
        assert_eq!(check(&m, r#"{"quark": 0.3, "gluon": 0.7, "n_particles": 0, "meta": {"a": [1, 2]}}"#), Ok(()));
        // With keys declared, any JSON object is held to them.
        let e = check(&m, r#"{"top_k": [{"label": "quark", "score": 1.0}]}"#).unwrap_err();
        assert!(e.contains("key `top_k`") && e.contains("[reply] keys: n_particles, meta"), "{e}");
    }

    #[test]
    fn other_replies_are_not_looked_at() {
        let m = manifest("");
        // Not a label map: no label among the keys and not all numbers (the image plugin's top-k).
        assert_eq!(check(&m, r#"{"top_k": [{"label": "quark", "score": 1.0}]}"#), Ok(()));
        assert_eq!(check(&m, r#"[0.3, 0.7]"#), Ok(()));
        assert_eq!(check(&m, "not json {"), Ok(()));
        assert!(check_keys("efn-qg", &m, "application/x-npz", br#"{"glu": 1}"#).is_ok());
        assert!(check_keys("efn-qg", &m, "Application/JSON; charset=utf-8", br#" {"glu": 1}"#).is_err());
        let none = Manifest::parse("name='a'\nversion=1\n", "m").unwrap();
        assert!(check_keys("a", &none, "application/json", br#"{"glu": 1}"#).is_ok(), "no labels, no keys: anything goes");
    }
}
