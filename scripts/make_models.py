#!/usr/bin/env python3
"""Exports the TorchScript models of the bundled applications and the
PyTorch reference outputs the tests compare against.

Run with a full torch install (e.g. ~/.cache/tensorgate/torch-venv/bin/python);
the outputs are committed so that building and testing need only the slim
libtorch:
    plugins/tabular/model.pt        16 -> 64 -> 64 -> 4 MLP with softmax
    plugins/tabular/reference.json  request bodies and PyTorch's scores
    plugins/tabular/samples/*.json  demo inputs (one of them deliberately bad)
"""
import json
import pathlib
import random
from typing import Dict, Tuple

import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent

# High-level jet features, as a jet tagger would read them from NanoAOD.
TABULAR_FEATURES = [
    "jet_pt", "jet_eta", "jet_phi", "jet_mass", "jet_nconst", "jet_tau21",
    "jet_tau32", "jet_msd", "jet_btag", "jet_chf", "jet_nhf", "jet_cemf",
    "jet_nemf", "jet_muf", "jet_ptd", "jet_axis2",
]
TABULAR_LABELS = ["qcd", "top", "w", "z"]


class TabularMLP(torch.nn.Module):
    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(n_in, 64), torch.nn.ReLU(),
            torch.nn.Linear(64, 64), torch.nn.ReLU(),
            torch.nn.Linear(64, n_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=-1)


def tabular():
    torch.manual_seed(20261122)
    model = TabularMLP(len(TABULAR_FEATURES), len(TABULAR_LABELS)).eval()
    scripted = torch.jit.script(model)
    out_dir = ROOT / "plugins" / "tabular"
    scripted.save(str(out_dir / "model.pt"))

    rng = random.Random(7)
    cases = []
    for _ in range(16):
        values = {f: round(rng.gauss(0.0, 2.0), 4) for f in TABULAR_FEATURES}
        keys = list(values)
        rng.shuffle(keys)  # the plugin must reorder keys by the manifest
        body = {"keys": keys, "values": [values[k] for k in keys]}
        x = torch.tensor([[values[f] for f in TABULAR_FEATURES]], dtype=torch.float32)
        with torch.no_grad():
            scores = scripted(x)[0].tolist()
        cases.append({"request": body, "scores": dict(zip(TABULAR_LABELS, scores))})
    reference = {
        "torch_version": torch.__version__,
        "features": TABULAR_FEATURES,
        "labels": TABULAR_LABELS,
        "cases": cases,
    }
    (out_dir / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    samples = out_dir / "samples"
    samples.mkdir(exist_ok=True)
    for i, case in enumerate(cases[:3]):
        (samples / f"jet-{i}.json").write_text(json.dumps(case["request"]) + "\n")
    bad = dict(cases[0]["request"])
    i = bad["keys"].index("jet_pt")
    bad = {"keys": bad["keys"][:i] + bad["keys"][i + 1:], "values": bad["values"][:i] + bad["values"][i + 1:]}
    (samples / "bad-missing-key.json").write_text(json.dumps(bad) + "\n")
    print(f"tabular: {len(cases)} reference cases")


class PlaneStats(torch.nn.Module):
    """Cheap per-plane summary of a wire-plane image [N, wires, ticks]:
    lit-pixel count, charge sum and per-wire maximum. Used to measure how
    fast whole events move through the host."""

    def forward(self, plane: torch.Tensor) -> Dict[str, torch.Tensor]:
        lit = (plane > 0.0).sum(dim=(1, 2))
        return {"lit": lit, "charge": plane.sum(dim=(1, 2)), "wire_max": plane.amax(dim=2)}


class MultiIO(torch.nn.Module):
    """Two inputs, a tuple of two outputs: shows models with several inputs and outputs."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(4, 3)
        self.b = torch.nn.Linear(3, 3)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        h = torch.tanh(self.a(x) + self.b(y))
        return h, (x.sum(dim=1) * y.sum(dim=1)).to(torch.float64)


class PatchCNN(torch.nn.Module):
    """Small conv net: 64x64 wire-plane patches -> background/track/shower scores."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        )
        self.head = torch.nn.Linear(64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.head(self.features(x).flatten(1)), dim=1)


def patches(n: int, seed: int):
    """n synthetic 1x64x64 patches: empty, a straight track, or a shower-like blob."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = np.zeros((n, 1, 64, 64), dtype=np.float32)
    for i in range(n):
        kind = i % 3
        if kind == 1:
            r0, slope = rng.uniform(8, 56), rng.uniform(-0.8, 0.8)
            for c in range(64):
                r = int(r0 + slope * (c - 32))
                if 0 <= r < 64:
                    out[i, 0, r, c] = rng.uniform(20, 80)
        elif kind == 2:
            cr, cc = rng.uniform(16, 48, size=2)
            for _ in range(150):
                r, c = int(rng.normal(cr, 5)), int(rng.normal(cc, 5))
                if 0 <= r < 64 and 0 <= c < 64:
                    out[i, 0, r, c] = rng.uniform(10, 60)
    return out


def tensors_bundles():
    import numpy as np

    torch.manual_seed(3)
    cnn = torch.jit.script(PatchCNN().eval())
    cnn_dir = ROOT / "plugins" / "tensors" / "bundles" / "patch-cnn"
    cnn.save(str(cnn_dir / "model.pt"))
    sample = patches(3, seed=9)
    np.save(cnn_dir / "sample.npy", sample)
    with torch.no_grad():
        np.save(cnn_dir / "reference.npy", cnn(torch.from_numpy(sample)).numpy())

    base = ROOT / "plugins" / "tensors" / "bundles"
    stats = torch.jit.script(PlaneStats().eval())
    stats.save(str(base / "plane-stats" / "model.pt"))

    torch.manual_seed(11)
    multi = torch.jit.script(MultiIO().eval())
    multi.save(str(base / "multi-io" / "model.pt"))
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 4)).astype(np.float32)
    y = rng.normal(size=(3, 3)).astype(np.float32)
    np.savez(base / "multi-io" / "sample.npz", x=x, y=y)
    with torch.no_grad():
        h, s = multi(torch.from_numpy(x), torch.from_numpy(y))
    np.savez(base / "multi-io" / "reference.npz", h=h.numpy(), s=s.numpy())
    print("tensors: plane-stats, multi-io")


class Slow(torch.nn.Module):
    """A deliberately slow model (~100 chained 256x256 matmuls per row) for
    tests that need one model to be busy while another serves."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.eye(256) * 0.999)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(100):
            x = torch.tanh(x @ self.w)
        return x.sum(dim=1)


def test_apps():
    slow = torch.jit.script(Slow().eval())
    slow.save(str(ROOT / "tests" / "apps" / "slow" / "model.pt"))
    print("tests/apps: slow")


if __name__ == "__main__":
    torch.set_num_threads(1)
    tabular()
    tensors_bundles()
    test_apps()
