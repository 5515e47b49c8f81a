//! Small pieces shared by the benchmark tools.

use std::time::Duration;

/// Takes `--iters N` out of `args` (default `default`).
pub fn take_iters(args: &mut Vec<String>, default: usize) -> anyhow::Result<usize> {
    match args.iter().position(|a| a == "--iters") {
        Some(i) => {
            let n = args.get(i + 1).ok_or_else(|| anyhow::anyhow!("--iters N"))?.parse()?;
            args.drain(i..i + 2);
            Ok(n)
        }
        None => Ok(default),
    }
}

/// The median of `v`, in milliseconds.
pub fn median_ms(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}
