//! Mapping score vectors to the manifest's class labels.

use crate::PluginError;

/// Checks that a model produced one score per label, naming both counts.
pub fn check(labels: &[String], classes: usize) -> Result<(), PluginError> {
    if labels.len() != classes {
        return Err(PluginError::new(
            "labels",
            format!("model returned {classes} scores per item but the manifest lists {} labels", labels.len()),
        ));
    }
    Ok(())
}

/// The `k` highest scores with their labels, best first (ties keep label order).
pub fn top_k(labels: &[String], scores: &[f32], k: usize) -> Result<Vec<(String, f32)>, PluginError> {
    check(labels, scores.len())?;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    Ok(order.into_iter().take(k).map(|i| (labels[i].clone(), scores[i])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_and_checks() {
        let labels: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(top_k(&labels, &[0.2, 0.7, 0.1], 2).unwrap(), vec![("b".to_string(), 0.7), ("a".to_string(), 0.2)]);
        assert_eq!(top_k(&labels, &[0.2, 0.7, 0.1], 9).unwrap().len(), 3);
        assert!(top_k(&labels, &[0.5, 0.5], 1).unwrap_err().message.contains("2 scores per item but the manifest lists 3"));
    }
}
