#!/usr/bin/env python3
"""Exports the `nanoaod-jets` model (generic tensors plugin bundle) and its
PyTorch reference outputs on real CMS NanoAOD events.

Inputs per event, read with uproot from the coffea test samples
(scripts/setup-python caches them under $TENSORGATE_CACHE/nanoaod):
    jets      [N, 10, 3] f32  (Jet_pt, Jet_eta, Jet_phi), padded with 0 / truncated to 10 jets
    jets_mask [N, 10]   bool  True where a real jet sits
    met       [N, 1]    f32   MET_pt
Outputs: scores [N, 2] (softmax of a small deep-sets net), ht [N, 1] (scalar
sum of the kept jets' pt, a physics check). Writes into
plugins/tensors/bundles/nanoaod-jets/: model.pt and reference.npz (the padded
inputs of nano_dy.root and nano_tt_v12.root, in that order, and PyTorch's outputs).

Needs torch, numpy, uproot and awkward, e.g.
    ~/.cache/tensorgate/torch-venv/bin/pip install uproot==5.7.7 awkward==2.14.0
    ~/.cache/tensorgate/torch-venv/bin/python scripts/make_nanoaod_model.py
"""
import os
import pathlib
from typing import Tuple

import awkward as ak
import numpy as np
import torch
import uproot

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "plugins" / "tensors" / "bundles" / "nanoaod-jets"
CACHE = pathlib.Path(os.environ.get("TENSORGATE_CACHE", pathlib.Path.home() / ".cache" / "tensorgate"))
FILES = ["nano_dy.root", "nano_tt_v12.root"]
MAX_JETS = 10


class JetEventNet(torch.nn.Module):
    """Deep sets over up to 10 jets (masked mean of a per-jet MLP) plus MET."""

    def __init__(self):
        super().__init__()
        self.jet = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16), torch.nn.ReLU())
        self.head = torch.nn.Sequential(torch.nn.Linear(18, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))

    def forward(self, jets: torch.Tensor, jets_mask: torch.Tensor, met: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        m = jets_mask.to(jets.dtype)
        x = torch.cat([torch.log1p(jets[..., 0:1]), jets[..., 1:3]], dim=-1)
        h = self.jet(x) * m.unsqueeze(-1)
        n = m.sum(dim=1, keepdim=True)
        pooled = h.sum(dim=1) / n.clamp(min=1.0)
        z = torch.cat([pooled, torch.log1p(met), n / 10.0], dim=-1)
        scores = torch.softmax(self.head(z), dim=-1)
        ht = (jets[..., 0] * m).sum(dim=1, keepdim=True)
        return scores, ht


def padded_inputs(path: pathlib.Path):
    """The model inputs of every event of `path`, read and padded independently of tensorgate.root."""
    events = uproot.open(path)["Events"].arrays(["Jet_pt", "Jet_eta", "Jet_phi", "MET_pt"])
    cols = [ak.to_numpy(ak.fill_none(ak.pad_none(events[b], MAX_JETS, clip=True), 0.0)).astype(np.float32)
            for b in ("Jet_pt", "Jet_eta", "Jet_phi")]
    jets = np.stack(cols, axis=-1)
    mask = np.arange(MAX_JETS)[None, :] < ak.to_numpy(ak.num(events["Jet_pt"]))[:, None]
    met = ak.to_numpy(events["MET_pt"]).astype(np.float32)[:, None]
    return jets, mask, met


def main():
    torch.manual_seed(20261122)
    torch.set_num_threads(1)
    model = torch.jit.script(JetEventNet().eval())
    model.save(str(OUT / "model.pt"))
    parts = [padded_inputs(CACHE / "nanoaod" / f) for f in FILES]
    jets, mask, met = (np.concatenate(p) for p in zip(*parts))
    with torch.no_grad():
        scores, ht = model(torch.from_numpy(jets), torch.from_numpy(mask), torch.from_numpy(met))
    np.savez_compressed(OUT / "reference.npz", jets=jets, jets_mask=mask, met=met,
                        scores=scores.numpy(), ht=ht.numpy(), files=np.array(FILES))
    print(f"nanoaod-jets: {len(jets)} events from {FILES}")


if __name__ == "__main__":
    main()
