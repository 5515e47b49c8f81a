"""Issue 33 benchmarks: reading and batching throughput of tensorgate.data
against plain uproot.iterate of the same branches on the same files, peak
memory against the chunk size, and the training loop's overhead against a
hand-written loop over the same tensors in memory.

    ~/.cache/tensorgate/venv/bin/python bench/training-data.py [--entries 100000] [--repeat 5]

The input is NanoAOD-like: the branches docs/training.md's spec reads,
taken from coffea's nano_tt_v12.root (cached by scripts/setup-python) and
repeated to --entries entries with the floats jittered (so that it
compresses like real data), written once into a temporary folder (removed
at the end). Every figure is the median of --repeat runs; memory figures
come from a fresh process per configuration (peak RSS, ru_maxrss).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NANO = Path(os.environ.get("TENSORGATE_CACHE", Path.home() / ".cache" / "tensorgate")) / "nanoaod"
BRANCHES = ["nJet", "Jet_pt", "Jet_eta", "Jet_phi", "Jet_btagDeepFlavB", "MET_pt", "MET_phi", "nMuon", "genWeight",
            "run", "luminosityBlock", "event"]


def spec_text(files) -> str:
    import re

    text = (ROOT / "docs" / "training.md").read_text()
    block = next(b for b in re.findall(r"```toml\n(.*?)```", text, flags=re.S) if b.startswith("# jets.toml"))
    # One class per half of the files (the labels only matter for training).
    half = len(files) // 2 or 1
    dy = ", ".join(f'"{f}"' for f in files[:half])
    tt = ", ".join(f'"{f}"' for f in files[half:] or files[:half])
    return block.replace('files = { dy = ["nano_dy.root"], tt = ["nano_tt_v12.root"] }',
                         f"files = {{ dy = [{dy}], tt = [{tt}] }}")


def make_file(path: Path, entries: int) -> None:
    import awkward as ak
    import uproot

    src = uproot.open(NANO / "nano_tt_v12.root")["Events"].arrays([b for b in BRANCHES if not b.startswith("nJet")],
                                                                  library="ak")
    reps = -(-entries // len(src))
    big = ak.concatenate([src] * reps)[:entries]
    # Jittered copies, so that the file compresses like real data rather than like repeats.
    rng = np.random.default_rng(1)
    for k, scale in (("Jet_pt", 0.05), ("Jet_eta", 0.01), ("Jet_phi", 0.01), ("Jet_btagDeepFlavB", 0.01)):
        flat = ak.to_numpy(ak.flatten(big[k]))
        noisy = (flat * (1 + scale * rng.standard_normal(flat.size))).astype(np.float32)
        big[k] = ak.unflatten(noisy, ak.num(big[k]))
    for k in ("MET_pt", "MET_phi"):
        v = ak.to_numpy(big[k])
        big[k] = (v * (1 + 0.05 * rng.standard_normal(v.size))).astype(np.float32)
    big["event"] = np.arange(entries, dtype=np.uint64)
    data = {"Jet": ak.zip({k[4:]: big[k] for k in ("Jet_pt", "Jet_eta", "Jet_phi", "Jet_btagDeepFlavB")}),
            **{k: big[k] for k in ("MET_pt", "MET_phi", "nMuon", "genWeight", "run", "luminosityBlock", "event")}}
    with uproot.recreate(path) as f:
        t = f.mktree("Events", {k: v.type for k, v in data.items()}, field_name=lambda o, i: f"{o}_{i}",
                     counter_name=lambda c: f"n{c}")
        for s in range(0, entries, 50_000):  # NanoAOD-like baskets, not one
            t.extend({k: v[s:s + 50_000] for k, v in data.items()})


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args) -> None:
    """One measurement in this (fresh) process; prints JSON."""
    files = args.files.split(",")
    if args.mode == "uproot":
        import uproot

        t = time.perf_counter()
        n = 0
        for chunk in uproot.iterate([{f: "Events"} for f in files], expressions=BRANCHES_READ, step_size=args.step,
                                    library="ak"):
            n += len(chunk)
        print(json.dumps({"entries": n, "seconds": time.perf_counter() - t, "rss_mb": rss_mb()}))
        return
    from tensorgate.data import Source, batches, fit
    from tensorgate.spec import Spec

    spec = Spec.from_toml(spec_text(files), "bench.toml")
    source = Source(spec, files, step_size=args.step)
    t = time.perf_counter()
    fit(spec, source)
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    n = 0
    for b in batches(spec, source, batch_size=256, shuffle_buffer=args.shuffle, seed=1):
        n += len(b)
    print(json.dumps({"entries": n, "seconds": time.perf_counter() - t, "fit_seconds": fit_s, "rss_mb": rss_mb()}))


BRANCHES_READ = ["Jet_pt", "Jet_eta", "Jet_phi", "Jet_btagDeepFlavB", "MET_pt", "MET_phi", "nJet", "nMuon",
                 "genWeight", "run", "luminosityBlock", "event"]


def run_child(mode: str, files, step: int, shuffle: int = 0) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--files", ",".join(map(str, files)),
                          "--step", str(step), "--shuffle", str(shuffle)], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def training_overhead(files, repeat: int) -> dict:
    """Seconds per epoch: tensorgate.train's loop (reading, transforms, batching, torch) against a
    hand-written loop over the same batches already in memory as tensors (torch only)."""
    import torch

    sys.path.insert(0, str(ROOT / "tests" / "python"))
    from tensorgate.data import Source, batches, fit
    from tensorgate.spec import Spec
    from tensorgate.train import train

    from test_train import JetNet

    torch.set_num_threads(1)
    spec_path = Path(tempfile.mkdtemp(prefix="tg-bench-spec-")) / "bench.toml"
    spec_path.write_text(spec_text(files))
    try:
        r = train(str(spec_path), JetNet, epochs=repeat, batch_size=256, seed=1, validation=0.0, shuffle_buffer=0,
                  step_size=50_000, log=None, cache=False)
        ours = [e["seconds"] for e in r.epochs]
        # Cached: the first epoch reads the files, the later ones shuffle the inputs in memory.
        rc = train(str(spec_path), JetNet, epochs=repeat + 1, batch_size=256, seed=1, validation=0.0,
                   step_size=50_000, log=None, cache=True)
        cached = [e["seconds"] for e in rc.epochs[1:]]
        spec = Spec.load(spec_path)
        source = Source(spec, validation=0.0, step_size=50_000)
        fit(spec, source)
        mem = [({k: torch.from_numpy(np.array(v)) for k, v in b.inputs.items()}, torch.from_numpy(b.label),
                torch.from_numpy(b.weight)) for b in batches(spec, source, 256)]
        order = [n for n, _, _ in spec.model_inputs()]
        torch.manual_seed(1)
        net = JetNet()
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        hand = []
        for _ in range(repeat):
            t = time.perf_counter()
            for x, y, w in mem:
                loss = (torch.nn.functional.cross_entropy(net(*(x[n] for n in order)), y, reduction="none") * w).sum() / w.sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
            hand.append(time.perf_counter() - t)
        return {"entries": r.entries, "tensorgate_streamed_epoch_s": statistics.median(ours),
                "tensorgate_cached_epoch_s": statistics.median(cached),
                "tensorgate_cached_first_epoch_s": rc.epochs[0]["seconds"],
                "hand_written_epoch_s": statistics.median(hand)}
    finally:
        shutil.rmtree(spec_path.parent, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--entries", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--child")
    p.add_argument("--files")
    p.add_argument("--step", type=int, default=50_000)
    p.add_argument("--shuffle", type=int, default=0)
    args = p.parse_args()
    if args.child:
        args.mode = args.child
        child(args)
        return
    work = Path(tempfile.mkdtemp(prefix="tg-bench-data-"))
    try:
        a, b = work / "a.root", work / "b.root"
        make_file(a, args.entries)
        make_file(b, args.entries)
        files = [a, b]
        size = sum(f.stat().st_size for f in files)
        res = {"entries": 2 * args.entries, "file_mb": round(size / 1e6, 1), "python": sys.version.split()[0]}
        for step in (20_000, 50_000):
            # Alternating pairs, so that a load change on the machine hits both sides alike.
            u, d = [], []
            for _ in range(args.repeat):
                u.append(run_child("uproot", files, step))
                d.append(run_child("data", files, step))
            ue = statistics.median(r["entries"] / r["seconds"] for r in u)
            de = statistics.median(r["entries"] / r["seconds"] for r in d)
            pairs = [(y["entries"] / y["seconds"]) / (x["entries"] / x["seconds"]) for x, y in zip(u, d)]
            res[f"step_{step}"] = {"uproot_iterate_entries_per_s": round(ue), "tensorgate_batches_entries_per_s": round(de),
                                   "ratio": round(de / ue, 3), "median_pair_ratio": round(statistics.median(pairs), 3),
                                   "first_pass_entries_per_s": round(statistics.median(2 * args.entries / r["fit_seconds"] for r in d))}
        # Peak memory: chunk size against file length (one file, then both; shuffle buffer 4096).
        mem = {}
        for step in (10_000, 50_000, 100_000):
            for label, fs in (("1 file", files[:1]), ("2 files", files)):
                mem[f"step {step}, {label}"] = round(statistics.median(run_child("data", fs, step, 4096)["rss_mb"]
                                                                       for _ in range(3)), 1)
        res["peak_rss_mb"] = mem
        res["training"] = training_overhead([str(a), str(b)], args.repeat)
        print(json.dumps(res, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
