//! Dynamic batching: which queued jobs may share one forward pass, and how
//! their inputs are joined and the outputs split back, row-exactly.

use std::time::Duration;

use crate::tensor::Tensor;

/// How a model's executor groups items into forward passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPolicy {
    /// Most rows (leading-dimension entries) in one forward; 1 disables batching.
    pub max_batch: usize,
    /// How long a batch that is not full may wait for more items. Zero means
    /// "take what is already queued": under load, items queue while the
    /// previous forward runs, so batches form without adding latency.
    pub max_delay: Duration,
    /// Most items waiting for the executor; beyond it items fail at once with `busy`.
    pub max_queue: usize,
}

impl BatchPolicy {
    /// One item per forward.
    pub const OFF: BatchPolicy = BatchPolicy { max_batch: 1, max_delay: Duration::ZERO, max_queue: DEFAULT_MAX_QUEUE };
}

impl Default for BatchPolicy {
    fn default() -> Self {
        BatchPolicy { max_batch: 32, max_delay: Duration::ZERO, max_queue: DEFAULT_MAX_QUEUE }
    }
}

/// Default bound of a model's queue (items).
pub const DEFAULT_MAX_QUEUE: usize = 4096;

/// Rows an item's inputs contribute (its leading dimension).
pub fn rows(inputs: &[Tensor]) -> usize {
    inputs.first().and_then(|t| t.shape.first()).copied().unwrap_or(1) as usize
}

/// Whether two items' inputs can be concatenated along the batch dimension.
pub fn compatible(a: &[Tensor], b: &[Tensor]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| x.dtype == y.dtype && !x.shape.is_empty() && x.shape.get(1..) == y.shape.get(1..))
}

/// Concatenates compatible items' inputs along dimension 0.
pub fn concat(items: &[&[Tensor]]) -> Vec<Tensor> {
    let total: u64 = items.iter().map(|i| rows(i) as u64).sum();
    (0..items[0].len())
        .map(|k| {
            let first = &items[0][k];
            let mut data = Vec::with_capacity(items.iter().map(|i| i[k].data.len()).sum());
            for item in items {
                data.extend_from_slice(&item[k].data);
            }
            let mut shape = first.shape.clone();
            shape[0] = total;
            Tensor { dtype: first.dtype, shape, data }
        })
        .collect()
}

/// Splits batched outputs back into per-item outputs of `counts` rows each;
/// `None` when an output does not carry the batch dimension (the caller then
/// runs the items one by one).
pub fn split(outputs: Vec<Tensor>, counts: &[usize]) -> Option<Vec<Vec<Tensor>>> {
    let total: usize = counts.iter().sum();
    let mut per_item: Vec<Vec<Tensor>> = counts.iter().map(|_| Vec::with_capacity(outputs.len())).collect();
    for out in outputs {
        if out.shape.first().copied() != Some(total as u64) || out.data.len() % total.max(1) != 0 {
            return None;
        }
        let row_bytes = out.data.len() / total.max(1);
        let mut offset = 0;
        for (slot, &n) in per_item.iter_mut().zip(counts) {
            let mut shape = out.shape.clone();
            shape[0] = n as u64;
            let data = out.data[offset * row_bytes..(offset + n) * row_bytes].to_vec();
            slot.push(Tensor { dtype: out.dtype, shape, data });
            offset += n;
        }
    }
    Some(per_item)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Dtype;

    fn t(rows: u64, cols: u64, start: u8) -> Tensor {
        let data = (0..rows * cols * 4).map(|i| start.wrapping_add(i as u8)).collect();
        Tensor { dtype: Dtype::F32, shape: vec![rows, cols], data }
    }

    #[test]
    fn concat_then_split_is_exact() {
        let a = vec![t(1, 3, 0)];
        let b = vec![t(2, 3, 100)];
        let c = vec![t(4, 3, 200)];
        let joined = concat(&[&a, &b, &c]);
        assert_eq!(joined[0].shape, vec![7, 3]);
        let back = split(joined, &[1, 2, 4]).expect("splits");
        assert_eq!(back, vec![a, b, c]);
    }

    #[test]
    fn incompatible_shapes_and_dtypes() {
        assert!(compatible(&[t(1, 3, 0)], &[t(5, 3, 0)]));
        assert!(!compatible(&[t(1, 3, 0)], &[t(1, 4, 0)]));
        let mut d = t(1, 3, 0);
        d.dtype = Dtype::I32;
        assert!(!compatible(&[t(1, 3, 0)], &[d]));
        assert!(!compatible(&[t(1, 3, 0)], &[t(1, 3, 0), t(1, 3, 0)]));
        // A 0-dimensional tensor has no batch dimension: never batched (found by fuzzing).
        let scalar = Tensor { dtype: Dtype::F32, shape: vec![], data: vec![0; 4] };
        assert!(!compatible(&[scalar.clone()], &[scalar]));
    }

    #[test]
    fn outputs_without_the_batch_dimension_are_not_split() {
        let scalar = Tensor { dtype: Dtype::F32, shape: vec![], data: vec![0; 4] };
        assert!(split(vec![scalar], &[1, 2]).is_none());
        assert!(split(vec![t(2, 3, 0)], &[1, 2]).is_none());
    }
}
