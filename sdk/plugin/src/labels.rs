//! Mapping score vectors to the manifest's class labels: checks, top-k,
//! softmax and sigmoid, and `{label: score}` replies.

use crate::PluginError;

/// Checks that the plugin has one score per label (the scores it hands
/// these helpers: the model's, or its own), naming both counts and the
/// plugin (the manifest's application name, once `configure` has run).
pub fn check(labels: &[String], classes: usize) -> Result<(), PluginError> {
    if labels.len() != classes {
        return Err(mismatch(&crate::manifest::manifest().name, labels, classes));
    }
    Ok(())
}

/// The error for `classes` scores against `labels`, from plugin `name`
/// (empty: not known).
fn mismatch(name: &str, labels: &[String], classes: usize) -> PluginError {
    let who = match name.is_empty() {
        true => "the plugin".to_string(),
        false => format!("plugin `{name}`"),
    };
    PluginError::new("labels", tensorgate_ops::rows::labels_mismatch(&who, labels, classes))
}

/// The `k` highest scores with their labels, best first (ties keep label order).
pub fn top_k(labels: &[String], scores: &[f32], k: usize) -> Result<Vec<(String, f32)>, PluginError> {
    check(labels, scores.len())?;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    Ok(order.into_iter().take(k).map(|i| (labels[i].clone(), scores[i])).collect())
}

/// Softmax of `logits` (numerically stable: the largest is subtracted first).
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

/// The logistic sigmoid of each value (independent labels, multi-label).
pub fn sigmoid(logits: &[f32]) -> Vec<f32> {
    logits.iter().map(|&x| 1.0 / (1.0 + (-x).exp())).collect()
}

/// `{label: score}` for one item's scores, in label order; fails naming
/// both counts when they differ.
pub fn scores_map(labels: &[String], scores: &[f32]) -> Result<serde_json::Map<String, serde_json::Value>, PluginError> {
    check(labels, scores.len())?;
    Ok(labels.iter().zip(scores).map(|(l, &s)| (l.clone(), serde_json::Value::from(s as f64))).collect())
}

/// The JSON reply `{label: score}` for one item's scores, in label order,
/// written straight from the two lists: the same bytes as serialising
/// [`scores_map`], without building the map. Fails naming both counts
/// when they differ.
pub fn scores_json(labels: &[String], scores: &[f32]) -> Result<crate::Output, PluginError> {
    check(labels, scores.len())?;
    let data = tensorgate_ops::rows::scores_json(labels, scores)
        .ok_or_else(|| PluginError::new("encode", "cannot encode the scores as JSON"))?;
    Ok(crate::Output::bytes(data, "application/json"))
}

/// `{label: probability}` from one item's logits, through [`softmax`].
pub fn softmax_map(labels: &[String], logits: &[f32]) -> Result<serde_json::Map<String, serde_json::Value>, PluginError> {
    scores_map(labels, &softmax(logits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_and_sigmoid_match_their_definitions() {
        let p = softmax(&[1.0, 2.0, 3.0]);
        let e: Vec<f32> = [1.0f32, 2.0, 3.0].iter().map(|x| x.exp()).collect();
        let z: f32 = e.iter().sum();
        for (got, want) in p.iter().zip(e.iter().map(|x| x / z)) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
        // Large logits do not overflow.
        let big = softmax(&[1000.0, 1000.0]);
        assert_eq!(big, vec![0.5, 0.5]);
        assert_eq!(sigmoid(&[0.0]), vec![0.5]);
        assert!((sigmoid(&[2.0])[0] - 0.880797).abs() < 1e-6);
    }

    #[test]
    fn label_maps_keep_label_order_and_check_counts() {
        let labels: Vec<String> = ["b", "s"].iter().map(|s| s.to_string()).collect();
        let m = softmax_map(&labels, &[0.0, 0.0]).unwrap();
        assert_eq!(m.keys().cloned().collect::<Vec<_>>(), vec!["b", "s"]);
        assert_eq!(m["b"], serde_json::json!(0.5));
        // The reply written straight from the lists is the map's JSON, byte for byte.
        let scores = [0.1f32, 1.0 / 3.0, -2.5e-8, f32::MAX];
        let four: Vec<String> = ["b", "s", "q\"uote", "ü"].iter().map(|s| s.to_string()).collect();
        let reply = scores_json(&four, &scores).unwrap();
        let crate::Body::Bytes(bytes) = &reply.body else { panic!("a bytes reply") };
        assert_eq!(bytes, &serde_json::to_vec(&scores_map(&four, &scores).unwrap()).unwrap());
        assert_eq!(reply.content_type, "application/json");
        assert!(scores_json(&labels, &scores).unwrap_err().message.contains("4 scores per item"));
        let e = scores_map(&labels, &[0.1, 0.2, 0.7]).unwrap_err();
        assert!(e.message.contains("3 scores per item but the manifest lists 2 labels"), "{}", e.message);
    }

    #[test]
    fn a_wrong_count_names_the_plugin_and_its_labels() {
        let labels: Vec<String> = ["quark", "gluon"].iter().map(|s| s.to_string()).collect();
        let e = mismatch("efn-qg", &labels, 3);
        assert_eq!(e.code, "labels");
        assert_eq!(
            e.message,
            "plugin `efn-qg` made 3 scores per item but the manifest lists 2 labels (quark, gluon): \
             the scores its postprocess labels must be one per label"
        );
        assert!(mismatch("", &labels, 1).message.starts_with("the plugin made 1 scores per item"));
        let many: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
        assert!(mismatch("x", &many, 3).message.contains("10 labels (c0, c1, c2, c3, c4, c5, c6, c7, ...)"));
        // Before `configure` (native tests) the helpers still name the counts.
        assert!(check(&labels, 3).unwrap_err().message.contains("made 3 scores per item but the manifest lists 2 labels"));
    }

    #[test]
    fn top_k_orders_and_checks() {
        let labels: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(top_k(&labels, &[0.2, 0.7, 0.1], 2).unwrap(), vec![("b".to_string(), 0.7), ("a".to_string(), 0.2)]);
        assert_eq!(top_k(&labels, &[0.2, 0.7, 0.1], 9).unwrap().len(), 3);
        assert!(top_k(&labels, &[0.5, 0.5], 1).unwrap_err().message.contains("2 scores per item but the manifest lists 3"));
    }
}
