//! Lists of records (particles, hits, tracks) into the padded arrays and
//! mask that set- and graph-networks take: `[1, max, F]` values, zeros
//! past the last record, and a `[1, max]` mask of 1 (a record) or 0 (padding).

use crate::{PluginError, Tensor};

/// Packs `records` (each `features` numbers) into `[1, max, features]` f32
/// values and a `[1, max]` f32 mask. Records past `max` are dropped (order
/// them first, e.g. by pT); a record of another length fails, naming it.
pub fn pad(records: &[Vec<f32>], features: usize, max: usize) -> Result<(Tensor, Tensor), PluginError> {
    let mut values = vec![0f32; max * features];
    let mut mask = vec![0f32; max];
    for (i, r) in records.iter().take(max).enumerate() {
        if r.len() != features {
            return Err(PluginError::new(
                "record-length",
                format!("record {i} has {} values, expected {features}", r.len()),
            ));
        }
        values[i * features..(i + 1) * features].copy_from_slice(r);
        mask[i] = 1.0;
    }
    Ok((Tensor::from_f32(&[1, max as u64, features as u64], &values)?, Tensor::from_f32(&[1, max as u64], &mask)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_padded_masked_truncated_and_checked() {
        let recs = vec![vec![1.0, 2.0], vec![3.0, 4.0], vec![5.0, 6.0]];
        let (v, m) = pad(&recs, 2, 4).unwrap();
        assert_eq!(v.shape(), &[1, 4, 2]);
        assert_eq!(v.view::<f32>().unwrap().to_vec(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0, 0.0]);
        assert_eq!(m.view::<f32>().unwrap().to_vec(), vec![1.0, 1.0, 1.0, 0.0]);
        let (v, m) = pad(&recs, 2, 2).unwrap();
        assert_eq!((v.view::<f32>().unwrap().len(), m.view::<f32>().unwrap().to_vec()), (4, vec![1.0, 1.0]), "truncated to max");
        let e = pad(&[vec![1.0]], 2, 4).unwrap_err();
        assert_eq!(e.message, "record 0 has 1 values, expected 2");
    }
}
