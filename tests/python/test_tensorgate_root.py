"""tensorgate.root on real CMS NanoAOD (coffea's samples, cached by
scripts/setup-python): jagged Jet_pt/eta/phi padded to 10 jets plus MET_pt
through the `nanoaod-jets` model on a real host, compared with PyTorch's
outputs (plugins/tensors/bundles/nanoaod-jets/reference.npz, made by
scripts/make_nanoaod_model.py) on the same padded arrays, which this test
also rebuilds from the files with uproot directly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

import tensorgate
from tensorgate.root import build_inputs, iterate_inputs, predict_tree

ROOT = Path(__file__).resolve().parents[2]
REF = np.load(ROOT / "plugins" / "tensors" / "bundles" / "nanoaod-jets" / "reference.npz")
BRANCHES = {"jets": ["Jet_pt", "Jet_eta", "Jet_phi"], "met": ["MET_pt"]}


def padded_by_hand(path: Path, n: int = 10):
    """jets [N, n, 3], mask [N, n], met [N, 1] straight from uproot, padding with plain numpy."""
    t = uproot.open(path)["Events"]
    counts = t["nJet"].array(library="np")
    jets = np.zeros((len(counts), n, 3), np.float32)
    for k, b in enumerate(("Jet_pt", "Jet_eta", "Jet_phi")):
        flat = t[b].array(library="np")  # an object array of per-event arrays
        for i, values in enumerate(flat):  # a test-only loop, independent of awkward
            jets[i, : min(n, len(values)), k] = values[:n]
    mask = np.arange(n)[None, :] < counts[:, None]
    met = t["MET_pt"].array(library="np").astype(np.float32)[:, None]
    return jets, mask, met


def test_reference_inputs_are_the_files_padded(nanoaod):
    parts = [padded_by_hand(nanoaod / f) for f in REF["files"]]
    jets, mask, met = (np.concatenate(p) for p in zip(*parts))
    np.testing.assert_array_equal(jets, REF["jets"])
    np.testing.assert_array_equal(mask, REF["jets_mask"])
    np.testing.assert_array_equal(met, REF["met"])
    # Both truncation (events with more than 10 jets) and padding occur.
    counts = np.concatenate([uproot.open(nanoaod / f)["Events"]["nJet"].array(library="np") for f in REF["files"]])
    assert (counts > 10).sum() == 17 and (counts < 10).sum() > 100


@pytest.mark.parametrize("step_size,rows_per_item,concurrency", [(100_000, 256, 4), (17, 5, 3), (64, 1, 1)])
def test_predict_tree_matches_pytorch(client, nanoaod, step_size, rows_per_item, concurrency):
    files = [str(nanoaod / f) for f in REF["files"]]
    # The empty file in the middle must not shift anything.
    files.insert(1, str(nanoaod / "nano_dy_empty.root"))
    out = predict_tree(client, "nanoaod-jets", files, "Events", BRANCHES, pad=10, step_size=step_size,
                       rows_per_item=rows_per_item, concurrency=concurrency)
    assert out.entries == len(REF["scores"]) == 240
    assert out["scores"].shape == (240, 2) and out["ht"].shape == (240, 1)
    np.testing.assert_allclose(out["scores"], REF["scores"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["ht"], REF["ht"], rtol=1e-5, atol=1e-3)
    # HT is the sum of the kept jets' pt: check it against the files too.
    jets = np.concatenate([padded_by_hand(Path(f))[0] for f in files if "empty" not in f])
    np.testing.assert_allclose(out["ht"][:, 0], jets[..., 0].sum(axis=1), rtol=1e-5)
    assert out.events_per_second > 0


def test_build_inputs_layouts(nanoaod):
    events = uproot.open(nanoaod / "nano_dimuon.root")["Events"].arrays(["Jet_pt", "Jet_eta", "MET_pt", "Muon_pt"])
    jets, mask, met = padded_by_hand(nanoaod / "nano_dimuon.root", n=3)
    # Jagged only: [N, 3, 2] + mask; truncation to 3 jets.
    got = build_inputs(events, {"j": ["Jet_pt", "Jet_eta"]}, pad=3)
    np.testing.assert_array_equal(got["j"], jets[..., :2])
    np.testing.assert_array_equal(got["j_mask"], mask)
    # Mixed (MLaaS4HEP layout): MET column then 3 padded Jet_pt columns, pad value -1 for muons.
    got = build_inputs(events, ["MET_pt", "Jet_pt", "Muon_pt"], pad={"Jet_pt": 3, "Muon_pt": 2},
                       pad_value={"Jet_pt": 0.0, "Muon_pt": -1.0})
    flat = got[None]
    assert flat.shape == (len(events), 1 + 3 + 2) and flat.dtype == np.float32
    np.testing.assert_array_equal(flat[:, 0], met[:, 0])
    np.testing.assert_array_equal(flat[:, 1:4], jets[..., 0])
    muons = ak.to_list(events["Muon_pt"])
    for i in (0, 1, 2):
        want = (list(muons[i][:2]) + [-1.0, -1.0])[:2]
        np.testing.assert_allclose(flat[i, 4:6], want, rtol=1e-6)
    with pytest.raises(ValueError, match="Jet_pt is jagged"):
        build_inputs(events, {"j": ["Jet_pt"]})


def test_output_root_file_round_trips(client, nanoaod, tmp_path):
    dest = tmp_path / "scores.root"
    files = [str(nanoaod / f) for f in REF["files"]]
    out = predict_tree(client, "nanoaod-jets", files, "Events", BRANCHES, pad=10, output=str(dest))
    back = uproot.open(dest)["Events"].arrays(library="np")
    np.testing.assert_allclose(back["scores"], out["scores"])
    np.testing.assert_allclose(back["scores"], REF["scores"], rtol=1e-5, atol=1e-6)


def test_missing_branch_is_a_clear_error(client, nanoaod):
    with pytest.raises(Exception, match="Jet_nope"):
        predict_tree(client, "nanoaod-jets", [str(nanoaod / "nano_dy.root")], "Events",
                     {"jets": ["Jet_nope"], "met": ["MET_pt"]}, pad=10)


def test_cli_root(tg_host, nanoaod, tmp_path):
    dest = tmp_path / "out.npz"
    files = [str(nanoaod / f) for f in REF["files"]]
    cmd = [sys.executable, "-m", "tensorgate", "--host", tg_host.address, "--fingerprint", tg_host.fingerprint,
           "root", "--model", "nanoaod-jets", "--tree", "Events", "--branches", "jets=Jet_pt,Jet_eta,Jet_phi",
           "--branches", "met=MET_pt", "--pad", "10", "--step-size", "50", "--output", str(dest), *files]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["entries"] == 240 and report["chunks"] >= 5
    np.testing.assert_allclose(np.load(dest)["scores"], REF["scores"], rtol=1e-5, atol=1e-6)


def test_iterate_inputs_yields_entry_ordered_chunks(nanoaod):
    chunks = list(iterate_inputs([str(nanoaod / "nano_tt_v12.root")], "Events", BRANCHES, step_size=64, pad=10))
    assert [len(c["jets"]) for c in chunks] == [64, 64, 64, 8]
    np.testing.assert_array_equal(np.concatenate([c["jets"] for c in chunks]), REF["jets"][40:])
    assert all(c["jets"].flags.c_contiguous and c["jets"].dtype == np.float32 for c in chunks)


def test_remote_paths_reach_uproot_untouched(monkeypatch):
    import tensorgate.root as tr

    seen = {}

    def fake_iterate(files, **kwargs):
        seen["files"], seen["kwargs"] = files, kwargs
        return iter(())

    monkeypatch.setattr(uproot, "iterate", fake_iterate)
    url = "root://eospublic.cern.ch//eos/opendata/cms/x.root"
    assert list(tr.iterate_inputs([url, "local.root"], "Events", BRANCHES, pad=10, timeout=30)) == []
    assert seen["files"] == [{url: "Events"}, {"local.root": "Events"}]
    assert seen["kwargs"]["timeout"] == 30 and seen["kwargs"]["library"] == "ak"
    assert sorted(seen["kwargs"]["expressions"]) == ["Jet_eta", "Jet_phi", "Jet_pt", "MET_pt"]
