"""Issue 33 end to end on real CMS NanoAOD (coffea's samples, cached by
scripts/setup-python): a feature spec -> the first pass and training with
torch -> a bundle served by the generic `features` plugin on a real host ->
predictions for another file written to ROOT and read back with uproot.

The transforms run in Rust (tensorgate-features) on both sides: the test
that matters most here checks that the inputs the served model receives
are, bit for bit, the inputs the training loop saw for the same entries."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

torch = pytest.importorskip("torch", reason="torch comes with scripts/setup-python (the torch-venv .pth)")

import tensorgate  # noqa: E402
from tensorgate.data import Source, batches, fit, TreeDataset  # noqa: E402
from tensorgate.root import predict_tree  # noqa: E402
from tensorgate.spec import Spec, SpecError, columns  # noqa: E402
from tensorgate.train import events_json, raw_events, train  # noqa: E402
from engine import stop  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
HOST_BIN = ROOT / "target" / "release" / "tensorgate-host"
ORT_DYLIB = Path(os.environ.get("TENSORGATE_CACHE", Path.home() / ".cache" / "tensorgate")) / "onnxruntime-1.32.0" / "libonnxruntime.so.1.32.0"
PLUGIN = ROOT / "target" / "plugins" / "wasm32-unknown-unknown" / "release" / "features_plugin.wasm"
STARTUP_TIMEOUT_S = 60


class JetNet(torch.nn.Module):
    """Deep sets over the padded jets plus event features -> 2 logits."""

    def __init__(self, features: int = 4, events: int = 4, hidden: int = 16, classes: int = 2):
        super().__init__()
        self.phi = torch.nn.Sequential(torch.nn.Linear(features, hidden), torch.nn.ReLU())
        self.head = torch.nn.Sequential(torch.nn.Linear(hidden + events, hidden), torch.nn.ReLU(),
                                        torch.nn.Linear(hidden, classes))

    def forward(self, jets, jets_mask, event):
        h = self.phi(jets) * jets_mask.unsqueeze(-1).to(jets.dtype)
        return self.head(torch.cat([h.sum(dim=1), event], dim=1))


class Echo(torch.nn.Module):
    """Logits to train on, then its inputs as they arrived (what the served model saw)."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 2)

    def forward(self, jets, jets_mask, event):
        return self.lin(event), jets, jets_mask.to(torch.float32), event


DOCS = ROOT / "docs" / "training.md"


def doc_block(lang: str, first_line: str) -> str:
    """The fenced block of docs/training.md in `lang` whose first line starts with `first_line`."""
    text = DOCS.read_text()
    for block in re.findall(r"```" + lang + r"\n(.*?)```", text, flags=re.S):
        if block.startswith(first_line):
            return block
    raise AssertionError(f"docs/training.md has no {lang} block starting with {first_line!r}")


def spec_text(nano: Path) -> str:
    """The spec of docs/training.md, its label files made absolute."""
    text = doc_block("toml", "# jets.toml")
    files = 'files = { dy = ["nano_dy.root"], tt = ["nano_tt_v12.root"] }'
    assert files in text
    dy, tt = nano / "nano_dy.root", nano / "nano_tt_v12.root"
    return text.replace(files, f'files = {{ dy = ["{dy}"], tt = ["{tt}"] }}')


@pytest.fixture()
def spec_file(tmp_path, nanoaod) -> Path:
    p = tmp_path / "jets.toml"
    p.write_text(spec_text(nanoaod))
    return p


def start_host(tmp: Path):
    """A host over an empty repository (bundles arrive by upload); loopback: admin without credentials."""
    repo, state = tmp / "repo", tmp / "state"
    repo.mkdir(parents=True)
    state.mkdir()
    log = open(tmp / "host.log", "wb")
    env = dict(os.environ)
    env.setdefault("ORT_DYLIB_PATH", str(ORT_DYLIB))  # ONNX bundles (scripts/env.sh sets it too)
    proc = subprocess.Popen([str(HOST_BIN), "serve", "--repository", str(repo), "--listen", "127.0.0.1:0",
                             "--state-dir", str(state)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not ((state / "listening").exists() and (state / "fingerprint").exists()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait(timeout=10)
            pytest.fail(f"host did not start:\n{(tmp / 'host.log').read_text()}")
        time.sleep(0.05)
    time.sleep(0.05)
    return proc, (state / "listening").read_text().strip(), (state / "fingerprint").read_text().strip()


@pytest.fixture()
def host(tmp_path):
    if not PLUGIN.exists():
        pytest.fail(f"{PLUGIN} is missing: build it with scripts/build-plugins")
    proc, address, fp = start_host(tmp_path / "host")
    try:
        yield address, fp
    finally:
        stop([proc])


def all_columns(spec: Spec, path: Path):
    t = uproot.open(path)["Events"]
    names = spec.serving_branches  # inputs, selection, observers (nano_dimuon has no genWeight)
    chunk = t.arrays(names, library="ak")
    return chunk, columns(chunk, names, str(path))


def bits(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.float32)
    return a.view(np.uint32)


def test_served_preprocessing_equals_training_bit_for_bit(spec_file, nanoaod, host, tmp_path):
    address, fp = host
    bundle = tmp_path / "echo"
    result = train(str(spec_file), Echo, epochs=1, bundle=str(bundle), plugin=str(PLUGIN), seed=1, log=None)
    spec = result.spec
    assert spec.fitted and (bundle / "manifest.toml").exists()
    with tensorgate.Client(address, fingerprint=fp) as client:
        client.upload(bundle)
        # A file the model never saw, every entry (the plugin applies no selection).
        dimuon = nanoaod / "nano_dimuon.root"
        out = predict_tree(client, "echo", [str(dimuon)], spec=spec, rows_per_item=7, step_size=13)
        chunk, cols = all_columns(spec, dimuon)
        want = spec.transform(cols)  # what tensorgate.data hands the training loop
        assert out.entries == len(chunk) == 40
        assert want["jets"].shape == (40, 6, 4) and out["output_1"].shape == (40, 6, 4)
        np.testing.assert_array_equal(bits(out["output_1"]), bits(want["jets"]))
        np.testing.assert_array_equal(out["output_2"], want["jets_mask"].astype(np.float32))
        np.testing.assert_array_equal(bits(out["output_3"]), bits(want["event"]))
        # The training batches themselves (selection applied) match the same transform.
        keep = spec.select(cols)
        sel = spec.transform(cols, keep)
        np.testing.assert_array_equal(bits(out["output_1"][keep]), bits(sel["jets"]))
        # Not a trivial transform: standardised, sorted by pt, padded, truncated.
        counts = ak.to_numpy(ak.num(chunk["Jet_pt"]))
        assert (counts > 6).any() and (counts < 6).any()
        assert np.abs(want["jets"][..., 0][want["jets_mask"]]).max() < 10
        # JSON events in (the plugin parses the numbers): the same bits.
        raw = raw_events(spec, chunk, 5)
        reply = client.predict("echo", [json.dumps(events_json(raw))], content_type="application/json")[0]
        np.testing.assert_array_equal(bits(np.array(reply["output_1"]).reshape(5, 6, 4)), bits(want["jets"][:5]))
        np.testing.assert_array_equal(bits(np.array(reply["output_3"])), bits(want["event"][:5]))


def test_nanoaod_train_bundle_upload_predict_root(spec_file, nanoaod, host, tmp_path):
    address, fp = host
    bundle = tmp_path / "bundles" / "dy-tt"
    out_root = tmp_path / "scores.root"
    env = dict(os.environ, TENSORGATE_FEATURES_PLUGIN=str(PLUGIN))
    # The model of docs/training.md, as a user would have it in models.py.
    (tmp_path / "models.py").write_text(doc_block("python", "# models.py"))
    cmd = [sys.executable, "-m", "tensorgate", "--fingerprint", fp, "train", "--spec", str(spec_file),
           "--model", "models.py:JetNet", "--epochs", "4", "--batch-size", "32", "--seed", "2",
           "--bundle", str(bundle), "--upload", address]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "epoch 4/4: loss" in run.stderr and "validation loss" in run.stderr
    report = json.loads(run.stdout)
    assert report["bundle"] == str(bundle) and len(report["epochs"]) == 4
    assert report["upload"] is not None
    assert sorted(p.name for p in bundle.iterdir()) == ["manifest.toml", "model.pt", "plugin.wasm", "reference.npz",
                                                         "samples", "spec.json", "spec.toml"]
    # The bundle's own reference: the exported model on its sample events, served.
    with tensorgate.Client(address, fingerprint=fp) as client:
        served = client.predict("dy-tt", [dict(np.load(bundle / "samples" / "events.npz"))])[0]
    np.testing.assert_allclose(served["scores"], np.load(bundle / "reference.npz")["scores"], rtol=1e-5, atol=1e-6)

    dimuon = nanoaod / "nano_dimuon.root"
    cmd = [sys.executable, "-m", "tensorgate", "--host", address, "--fingerprint", fp, "predict",
           "--spec", str(bundle), "--model", "dy-tt", "--output", str(out_root), str(dimuon)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    back = uproot.open(out_root)["Events"].arrays(library="np")
    src = uproot.open(dimuon)["Events"].arrays(["run", "luminosityBlock", "event", "nJet"], library="np")
    for o in ("run", "luminosityBlock", "event"):
        np.testing.assert_array_equal(back[o], src[o])
        assert back[o].dtype == src[o].dtype
    np.testing.assert_array_equal(back["selected"], src["nJet"] >= 1)
    # Local inference with torch on the same entries, through the fitted spec.
    spec = Spec.from_json((bundle / "spec.json").read_text())
    _, cols = all_columns(spec, dimuon)
    x = spec.transform(cols)
    model = torch.jit.load(str(bundle / "model.pt"))
    with torch.no_grad():
        local = model(*(torch.from_numpy(np.array(x[n])) for n, _, _ in spec.model_inputs())).numpy()
    assert back["scores"].shape == (40, 2)
    np.testing.assert_allclose(back["scores"], local, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cache", [True, False], ids=["in-memory", "streamed"])
def test_training_is_deterministic_with_a_seed(spec_file, cache):
    def run(seed):
        torch.set_num_threads(1)
        r = train(str(spec_file), JetNet, epochs=2, batch_size=32, seed=seed, log=None, cache=cache,
                  shuffle_buffer=64)
        return r.epochs, {k: v.clone() for k, v in r.model.state_dict().items()}

    (h1, w1), (h2, w2), (h3, w3) = run(5), run(5), run(6)
    assert [e["loss"] for e in h1] == [e["loss"] for e in h2]
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert any(not torch.equal(w1[k], w3[k]) for k in w1)


def test_batches_split_shuffle_and_workers(spec_file, nanoaod):
    spec = Spec.load(spec_file)
    source = Source(spec, validation=0.25, step_size=17)
    selected = fit(spec, source)
    # By hand: the first 75 % of each file's entries (30 of 40, 150 of 200) with nJet >= 1.
    want = 0
    for f, n in (("nano_dy.root", 40), ("nano_tt_v12.root", 200)):
        nj = uproot.open(nanoaod / f)["Events"]["nJet"].array(library="np")
        want += int((nj[: n - int(round(n * 0.25))] >= 1).sum())
    assert selected == want
    plain = list(batches(spec, source, batch_size=32))
    assert sum(len(b) for b in plain) == want and all(len(b) == 32 for b in plain[:-1])
    assert {int(x) for b in plain for x in b.label} == {0, 1}
    assert plain[0].weight is not None and set(np.unique(np.concatenate([b.weight for b in plain]))) <= {-1.0, 1.0}
    a = list(batches(spec, source, batch_size=32, shuffle_buffer=64, seed=9))
    b = list(batches(spec, source, batch_size=32, shuffle_buffer=64, seed=9))
    assert all(np.array_equal(x.inputs["jets"], y.inputs["jets"]) for x, y in zip(a, b))
    key = lambda bs: np.sort(np.concatenate([x.inputs["event"] for x in bs]), axis=0)  # noqa: E731
    assert not np.array_equal(a[0].inputs["event"], plain[0].inputs["event"])
    np.testing.assert_array_equal(key(a), key(plain))
    # Two loader workers, each reading its own files: the same entries.
    loader = torch.utils.data.DataLoader(TreeDataset(spec, source, batch_size=32), batch_size=None, num_workers=2)
    got = [x for x in loader]
    events = np.sort(np.concatenate([x[0]["event"].numpy() for x in got]), axis=0)
    np.testing.assert_array_equal(events, key(plain))
    val = list(batches(spec, source, batch_size=1000, part="validation"))
    assert sum(len(b) for b in val) > 0


def test_inspect_nanoaod(nanoaod, tmp_path):
    from tensorgate.inspect import inspect_file

    path = nanoaod / "nano_dy.root"
    r = inspect_file(str(path), "Events", entries=1000)
    t = uproot.open(path)["Events"]
    assert r["entries"] == 40 == t.num_entries
    assert r["flat"] + r["jagged"] + r["other"] == len([k for k in t.keys() if not t[k].branches])
    assert r["jagged"] == 379
    rows = {b["name"]: b for b in r["branches"]}
    nj = t["nJet"].array(library="np")
    assert rows["Jet_pt"]["kind"] == "jagged" and rows["Jet_pt"]["max_count"] == nj.max()
    met = t["MET_pt"].array(library="np")
    assert rows["MET_pt"]["kind"] == "flat" and rows["MET_pt"]["min"] == pytest.approx(met.min())
    assert rows["MET_pt"]["max"] == pytest.approx(met.max()) and r["memory_bytes"] > 0
    # The CLI's starting spec is a spec.
    run = subprocess.run([sys.executable, "-m", "tensorgate", "inspect", str(path), "--spec"], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    spec = Spec.from_toml(run.stdout, "start.toml")
    names = [n for n, _, _ in spec.model_inputs()]
    assert names[1] == names[0] + "_mask" and names[-1] == "event"
    run = subprocess.run([sys.executable, "-m", "tensorgate", "inspect", str(path), "--match", "^Jet_pt$"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "Jet_pt" in run.stdout and "40 entries" in run.stdout


BAD = [
    # (what to change in the good spec, the error expected: spec line or file and branch)
    (lambda s: s.replace('"Jet_btagDeepFlavB"', '"Jet_nope"'), r"jets.toml line 11: branch `Jet_nope` is not in .*nano_dy.root:Events"),
    (lambda s: s.replace('features = ["logmet', 'features = ["Jet_mass", "logmet'),
     r"jets.toml line 16: input `event`, feature `Jet_mass` is jagged: give input `event` a `pad` length"),
    (lambda s: s.replace("log1p(MET_pt)", "lg(MET_pt)"), r"jets.toml line 16: .*unknown function `lg`"),
    (lambda s: s.replace('selection = "nJet >= 1"', 'selection = "nJet > 100"'),
     r"jets.toml line 3: the selection keeps no entries"),
    (lambda s: s.replace('tt = [', 'zz = ['), r"jets.toml line 19: labels: class `tt` has no files"),
    (lambda s: s.replace("pad = 6\n", ""), r"jets.toml line 9: input `jets`: `sort` needs a `pad`"),
]


@pytest.mark.parametrize("change,error", BAD, ids=["missing-branch", "jagged-no-pad", "unknown-function",
                                                    "empty-selection", "labels-uncovered", "no-pad"])
def test_bad_specs_are_clear_and_leave_no_bundle(nanoaod, tmp_path, change, error):
    spec = tmp_path / "jets.toml"
    spec.write_text(change(spec_text(nanoaod)))
    bundle = tmp_path / "out" / "b"
    (tmp_path / "out").mkdir()
    with pytest.raises(SpecError, match=error):
        train(str(spec), JetNet, epochs=1, bundle=str(bundle), plugin=str(PLUGIN), log=None)
    assert list((tmp_path / "out").iterdir()) == []


def test_labels_must_cover_the_files_given(spec_file, nanoaod):
    spec = Spec.load(spec_file)
    with pytest.raises(SpecError, match=r"line 19: labels do not cover the files \[.*nano_dimuon.root"):
        Source(spec, [str(nanoaod / "nano_dy.root"), str(nanoaod / "nano_dimuon.root")])


def test_a_missing_plugin_stops_before_training(spec_file, tmp_path):
    bundle = tmp_path / "b"
    with pytest.raises(FileNotFoundError, match="features_plugin.wasm was not found"):
        train(str(spec_file), JetNet, epochs=1, bundle=str(bundle), plugin=str(tmp_path / "none.wasm"), log=None)
    assert not bundle.exists() and list(tmp_path.iterdir()) == [spec_file]


class Unexportable(JetNet):
    """Trains (the loss takes the first output) but neither scripts (super()) nor traces (a float output)."""

    def forward(self, jets, jets_mask, event):
        return super().forward(jets, jets_mask, event), float(np.pi)


def test_a_failed_export_leaves_no_bundle(spec_file, tmp_path):
    bundle = tmp_path / "b"
    with pytest.raises(RuntimeError, match="can be output from traced functions"):
        train(str(spec_file), Unexportable, epochs=1, bundle=str(bundle), plugin=str(PLUGIN), log=None)
    assert not bundle.exists() and list(tmp_path.iterdir()) == [spec_file]  # no temporary folder left either


def test_cli_bad_spec_exits_2_naming_the_line(nanoaod, tmp_path):
    spec = tmp_path / "jets.toml"
    spec.write_text(spec_text(nanoaod).replace("log1p(MET_pt)", "lg(MET_pt)"))
    cmd = [sys.executable, "-m", "tensorgate", "train", "--spec", str(spec), "--model", "nowhere.py:Net",
           "--bundle", str(tmp_path / "b"), "--plugin", str(PLUGIN)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.startswith(f"error: {spec} line 16: input `event`, feature `logmet`: `lg(MET_pt)`: unknown function `lg`")
    assert not (tmp_path / "b").exists()


def test_labels_from_a_branch_and_out_of_range_labels(nanoaod, tmp_path):
    base = spec_text(nanoaod).replace('weight = "genWeight / abs(genWeight)"\n', "")
    files = base[base.index("files = {"):].splitlines()[0]
    spec = Spec.from_toml(base.replace(files, 'branch = "HLT_IsoMu24"'), "trig.toml")
    source = Source(spec, [str(nanoaod / "nano_dy.root")])
    fit(spec, source)
    got = np.concatenate([b.label for b in batches(spec, source, 16)])
    t = uproot.open(nanoaod / "nano_dy.root")["Events"].arrays(["HLT_IsoMu24", "nJet"], library="np")
    np.testing.assert_array_equal(got, t["HLT_IsoMu24"][t["nJet"] >= 1].astype(np.int64))
    assert got.sum() > 0 and (got == 0).sum() > 0
    bad = Spec.from_toml(base.replace(files, 'branch = "nJet"'), "njet.toml")
    source = Source(bad, [str(nanoaod / "nano_dy.root")])
    fit(bad, source)
    with pytest.raises(SpecError, match=r"njet.toml line 18: labels give \d+ in .*nano_dy.root, outside the classes"):
        list(batches(bad, source, 16))


@pytest.mark.parametrize("fmt", ["onnx", "aoti"])
def test_other_formats_are_served_by_their_backend(fmt, spec_file, nanoaod, host, tmp_path):
    """`train --format onnx`: model.onnx from torch.onnx, run by the host's ONNX Runtime backend;
    `--format aoti`: model.pt2 from torch.export and Inductor, run by the host's AOTInductor
    backend; both behind the same features plugin. The answers are the exported model's own
    (reference.npz: ONNX Runtime's, the package's) and eager torch's."""
    if fmt == "onnx":
        pytest.importorskip("onnxruntime", reason="scripts/setup-python installs it into the torch-venv")
        if not Path(os.environ.get("ORT_DYLIB_PATH", ORT_DYLIB)).exists():
            pytest.fail(f"{ORT_DYLIB} is missing: run scripts/setup")
    address, fp = host
    name = f"dy-tt-{fmt}"
    bundle = tmp_path / name
    r = train(str(spec_file), JetNet, epochs=2, batch_size=32, seed=3, bundle=str(bundle), plugin=str(PLUGIN),
              model_format=fmt, log=None)
    model_file = {"onnx": "model.onnx", "aoti": "model.pt2"}[fmt]
    assert sorted(p.name for p in bundle.iterdir())[:2] == ["manifest.toml", model_file]
    assert f'format = "{fmt}"' in (bundle / "manifest.toml").read_text()
    spec = r.spec
    with tensorgate.Client(address, fingerprint=fp) as client:
        client.upload(bundle)
        out = predict_tree(client, name, [str(nanoaod / "nano_dimuon.root")], spec=spec)
    _, cols = all_columns(spec, nanoaod / "nano_dimuon.root")
    x = spec.transform(cols)
    with torch.no_grad():
        eager = r.model(*(torch.from_numpy(np.array(x[n])) for n, _, _ in spec.model_inputs())).numpy()
    np.testing.assert_allclose(out["scores"], eager, rtol=1e-4, atol=1e-5)
    ref = np.load(bundle / "reference.npz")["scores"]
    samples = dict(np.load(bundle / "samples" / "events.npz"))
    with tensorgate.Client(address, fingerprint=fp) as client:
        served = client.predict(name, [samples])[0]["scores"]
    np.testing.assert_allclose(served, ref, rtol=1e-5, atol=1e-6)
