//! Tensors as a plugin could return them: validation refuses what does not
//! add up, and whatever it accepts converts to libtorch and back unchanged
//! and batches (concat, split) exactly — never a panic or a libtorch abort.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tensorgate_backend::{Dtype, Tensor};
use tensorgate_backend_torch::convert::{from_torch, inputs, split, to_torch};
use tensorgate_runtime::executor::batch::{compatible, rows};
use tensorgate_runtime::pipeline::check_inputs;

const DTYPES: [Dtype; 6] = Dtype::ALL;

/// One tensor from the front of `data`: dtype, rank, dims (small or huge), bytes.
fn tensor(data: &mut &[u8]) -> Option<Tensor> {
    let (&head, rest) = data.split_first()?;
    let dtype = DTYPES[(head % 6) as usize];
    let rank = (head >> 3) as usize % 4;
    let mut shape = Vec::with_capacity(rank);
    let mut rest = rest;
    for _ in 0..rank {
        let (&d, r) = rest.split_first()?;
        rest = r;
        // Mostly small dims; now and then one that overflows.
        shape.push(if d == 0xff { u64::MAX / 3 } else { (d % 8) as u64 });
    }
    let (&len, r) = rest.split_first()?;
    let take = (len as usize).min(r.len().saturating_sub(0));
    let mut bytes = r[..take].to_vec();
    if dtype == Dtype::Bool {
        bytes.iter_mut().for_each(|b| *b &= 1);
    }
    *data = &r[take..];
    Some(Tensor { dtype, shape, data: bytes.into() })
}

fuzz_target!(|input: &[u8]| {
    let mut data = input;
    let mut a = Vec::new();
    let mut b = Vec::new();
    let n = data.first().map(|x| 1 + (x % 3) as usize).unwrap_or(1);
    data = data.get(1..).unwrap_or(&[]);
    for _ in 0..n {
        let Some(t) = tensor(&mut data) else { return };
        a.push(t);
    }
    for _ in 0..n {
        let Some(t) = tensor(&mut data) else { break };
        b.push(t);
    }
    if check_inputs(&[], &a).is_err() {
        return;
    }
    for t in &a {
        let back = from_torch(&to_torch(t).expect("validated tensors convert")).expect("and convert back");
        assert_eq!(&back, t);
    }
    if b.len() == a.len() && check_inputs(&[], &b).is_ok() && compatible(&a, &b) {
        let joined = inputs(&[&a, &b]).expect("validated compatible items concatenate");
        let counts = [rows(&a), rows(&b)];
        let back = split(joined, &counts).expect("split runs").expect("concatenated inputs split");
        assert_eq!(back, vec![a, b]);
    }
});
