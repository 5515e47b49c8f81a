//! Chooses the zstd level for payloads: compresses a synthetic LArTPC event
//! plane (3456 wires × 1008 ticks of f32, ~95 % zeros: noise-free tracks and
//! a shower over an empty detector, plus sparse noise hits) at several levels
//! and prints ratio and single-thread compress/decompress throughput.

use std::time::Instant;

/// A deterministic plane: a few straight tracks, a branching shower, ~5 % lit.
fn plane(wires: usize, ticks: usize) -> Vec<f32> {
    let mut v = vec![0f32; wires * ticks];
    let mut seed = 0x2545F4914F6CDD1Du64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut lit = 0usize;
    let target = wires * ticks / 20;
    while lit < target {
        // A track: a line segment with charge ~ 20..80 ADC and 3-pixel width.
        let (mut w, mut t) = (rnd() * wires as f64, rnd() * ticks as f64);
        let angle = rnd() * std::f64::consts::TAU;
        let len = 50.0 + rnd() * 600.0;
        for _ in 0..len as usize {
            for dw in 0..3 {
                let (wi, ti) = (w as usize + dw, t as usize);
                if wi < wires && ti < ticks {
                    let cell = &mut v[wi * ticks + ti];
                    if *cell == 0.0 {
                        lit += 1;
                    }
                    *cell = (20.0 + rnd() * 60.0) as f32;
                }
            }
            w += angle.cos();
            t += angle.sin();
        }
    }
    v
}

/// With `--write-plane PATH WIRES TICKS`, writes one plane as `.npy`.
/// With `--write-event DIR`, writes a 3-plane event (U, V: 2400 wires; Y:
/// 3456 wires; 1008 ticks, f32) as `.npy` files instead of benchmarking.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(dir) = args.iter().position(|a| a == "--write-event").and_then(|i| args.get(i + 1)) {
        std::fs::create_dir_all(dir).expect("create event dir");
        for (name, wires) in [("plane-u", 2400u64), ("plane-v", 2400), ("plane-y", 3456)] {
            let data: Vec<u8> = plane(wires as usize, 1008).iter().flat_map(|x| x.to_le_bytes()).collect();
            let t = tensorgate_plugin::Tensor::from_parts(tensorgate_plugin::Dtype::F32, vec![1, wires, 1008], data).expect("plane");
            let path = std::path::Path::new(dir).join(format!("{name}.npy"));
            std::fs::write(&path, tensorgate_plugin::npy::write_npy(&t)).expect("write plane");
            println!("{}", path.display());
        }
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--write-plane") {
        let get = |k: usize| args.get(i + k).expect("--write-plane PATH WIRES TICKS");
        let (wires, ticks): (usize, usize) = (get(2).parse().expect("wires"), get(3).parse().expect("ticks"));
        let data: Vec<u8> = plane(wires, ticks).iter().flat_map(|x| x.to_le_bytes()).collect();
        let t = tensorgate_plugin::Tensor::from_parts(tensorgate_plugin::Dtype::F32, vec![1, wires as u64, ticks as u64], data).expect("plane");
        std::fs::write(get(1), tensorgate_plugin::npy::write_npy(&t)).expect("write plane");
        return;
    }
    let (wires, ticks) = (3456, 1008);
    let data: Vec<u8> = plane(wires, ticks).iter().flat_map(|x| x.to_le_bytes()).collect();
    let zeros = data.chunks_exact(4).filter(|c| c == &[0, 0, 0, 0]).count() as f64 / (wires * ticks) as f64;
    println!("plane {wires}x{ticks} f32: {:.1} MB, {:.1} % zeros", data.len() as f64 / 1e6, zeros * 100.0);
    println!("| level | ratio | compress MB/s | decompress MB/s |");
    println!("|---|---|---|---|");
    for level in [-5, -1, 1, 2, 3, 5, 9] {
        let reps = 5;
        let t = Instant::now();
        let mut packed = Vec::new();
        for _ in 0..reps {
            packed = zstd::bulk::compress(&data, level).expect("compress");
        }
        let c = t.elapsed().as_secs_f64() / reps as f64;
        let t = Instant::now();
        for _ in 0..reps {
            let out = zstd::bulk::decompress(&packed, data.len()).expect("decompress");
            assert_eq!(out.len(), data.len());
        }
        let d = t.elapsed().as_secs_f64() / reps as f64;
        let mb = data.len() as f64 / 1e6;
        println!("| {level} | {:.1} | {:.0} | {:.0} |", data.len() as f64 / packed.len() as f64, mb / c, mb / d);
    }
}
