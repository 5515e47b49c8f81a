#!/usr/bin/env python3
"""Python client vs Rust client on the same host, same run.

Times one request of 1,000 items (the multi-io sample .npz as each item) with
`tensorgate bench` (Rust) and with tensorgate.Client.predict (three forms:
the same bytes, decoded replies; the same, raw replies; and one batch of
1,000 rows split into 1,000 items in Rust), interleaved in rounds so that
host warm-up and noise hit both alike. Then the NanoAOD chunked path: real
events through tensorgate.root.predict_tree.

    python sdk/python/bench.py --host 127.0.0.1:7443 --fingerprint HEX [--rust target/release/tensorgate]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np

import tensorgate
from tensorgate.root import predict_tree

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "plugins" / "tensors" / "bundles" / "multi-io" / "sample.npz"
NANO = Path(os.environ.get("TENSORGATE_CACHE", Path.home() / ".cache" / "tensorgate")) / "nanoaod"


def rust_ms(args, requests: int) -> float:
    out = subprocess.run(
        [args.rust, "--host", args.host, "--fingerprint", args.fingerprint, "bench", "--model", "multi-io",
         "--file", str(SAMPLE), "--items", "1000", "--requests", str(requests), "--warmup", "2", "--json"],
        check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["latency_us"]["p50"] / 1e3


def py_ms(fn, requests: int) -> float:
    fn()
    times = []
    for _ in range(requests):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", required=True)
    p.add_argument("--fingerprint", required=True)
    p.add_argument("--rust", default=str(ROOT / "target" / "release" / "tensorgate"))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--requests", type=int, default=10)
    p.add_argument("--events", type=int, default=200_000, help="events for the tiled NanoAOD chunk run")
    args = p.parse_args()

    client = tensorgate.Client(args.host, fingerprint=args.fingerprint)
    payload = SAMPLE.read_bytes()
    items = [payload] * 1000
    s = np.load(SAMPLE)
    batch = {"x": np.repeat(s["x"], 334, axis=0)[:1000], "y": np.repeat(s["y"], 334, axis=0)[:1000]}
    forms = {
        "python_bytes_decoded": lambda: client.predict("multi-io", items, content_type="application/x-npz"),
        "python_bytes_raw": lambda: client.predict("multi-io", items, content_type="application/x-npz", raw=True),
        "python_batch_1000_rows": lambda: client.predict("multi-io", batch, rows_per_item=1),
    }
    results = {"rust": []} | {k: [] for k in forms}
    for _ in range(args.rounds):
        results["rust"].append(rust_ms(args, args.requests))
        for name, fn in forms.items():
            results[name].append(py_ms(fn, args.requests))
    report = {"request_items": 1000, "rounds": args.rounds,
              "median_ms": {k: round(statistics.median(v), 2) for k, v in results.items()}}
    # Ratios within each round (same load), then their median and range over rounds.
    report["ratio_to_rust"] = {}
    for k, v in results.items():
        if k != "rust":
            r = sorted(p / q for p, q in zip(v, results["rust"]))
            report["ratio_to_rust"][k] = {"median": round(statistics.median(r), 3),
                                          "min": round(r[0], 3), "max": round(r[-1], 3)}
    report["load_average"] = os.getloadavg()[0]

    # NanoAOD, end to end over real files (each file opened and read by uproot),
    # and uproot's reading and padding alone on the same files.
    from tensorgate.root import iterate_inputs
    branches = {"jets": ["Jet_pt", "Jet_eta", "Jet_phi"], "met": ["MET_pt"]}
    files = [str(NANO / f) for f in ("nano_dy.root", "nano_dimuon.root", "nano_tt_v12.root")] * 10
    out = predict_tree(client, "nanoaod-jets", files, "Events", branches, pad=10)
    t = time.perf_counter()
    read = sum(len(c["jets"]) for c in iterate_inputs(files, "Events", branches, pad=10))
    read_s = time.perf_counter() - t
    report["nanoaod_files"] = {"files": len(files), "events": out.entries, "seconds": round(out.seconds, 3),
                               "events_per_s": round(out.events_per_second),
                               "uproot_read_and_pad_only_events_per_s": round(read / read_s)}

    # The chunked inference path on large chunks: the real events tiled
    # (median and best of 3 runs: the machine is shared).
    real = next(iterate_inputs([str(NANO / "nano_tt_v12.root")], "Events", branches, pad=10))
    reps = -(-args.events // len(real["jets"]))
    tiled = {k: np.ascontiguousarray(np.concatenate([v] * reps)[: args.events]) for k, v in real.items()}
    chunk = 50_000
    for rows_per_item in (256, 2048):
        rates = []
        for _ in range(3):
            t = time.perf_counter()
            pending = [client.submit("nanoaod-jets", {k: v[i:i + chunk] for k, v in tiled.items()},
                                     rows_per_item=rows_per_item) for i in range(0, args.events, chunk)]
            n = sum(len(p.result()["scores"]) for p in pending)
            rates.append(n / (time.perf_counter() - t))
        report[f"nanoaod_chunks_rows_per_item_{rows_per_item}"] = {
            "events": args.events, "chunk": chunk, "events_per_s_median": round(statistics.median(rates)),
            "events_per_s_best": round(max(rates))}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
