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


if __name__ == "__main__":
    torch.set_num_threads(1)
    tabular()
