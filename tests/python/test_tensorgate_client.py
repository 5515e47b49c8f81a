"""The `tensorgate` Python package (sdk/python, bindings over the Rust client)
against a real host over QUIC: results compared with the committed PyTorch
references, errors with their protocol codes, streaming, the GIL, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import tensorgate

ROOT = Path(__file__).resolve().parents[2]
TABULAR_REF = json.loads((ROOT / "plugins" / "tabular" / "reference.json").read_text())
MULTI = ROOT / "plugins" / "tensors" / "bundles" / "multi-io"
PATCH = ROOT / "plugins" / "tensors" / "bundles" / "patch-cnn"


def test_predict_json_items_in_input_order(client):
    cases = TABULAR_REF["cases"]
    results = client.predict("tabular", [c["request"] for c in cases])
    assert isinstance(results, tensorgate.Results) and len(results) == len(cases)
    for got, case in zip(results, cases):
        assert sorted(got) == sorted(TABULAR_REF["labels"])
        for label in TABULAR_REF["labels"]:
            assert got[label] == pytest.approx(case["scores"][label], abs=1e-5)
    s = results.summary
    assert (s["model"], s["version"], s["ok"], s["failed"]) == ("tabular", 1, len(cases), 0)


def test_predict_npz_items_match_pytorch(client):
    sample, ref = np.load(MULTI / "sample.npz"), np.load(MULTI / "reference.npz")
    rows = len(sample["x"])
    # One item per row, each a dict of arrays (.npz); replies come back as dicts of arrays.
    results = client.predict("multi-io", [{"x": sample["x"][i:i + 1], "y": sample["y"][i:i + 1]} for i in range(rows)])
    for i, got in enumerate(results):
        assert set(got) == {"h", "s"}
        np.testing.assert_allclose(got["h"], ref["h"][i:i + 1], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got["s"], ref["s"][i:i + 1], rtol=1e-6)
        assert got["s"].dtype == np.float64


def test_predict_single_array_item(client):
    sample, ref = np.load(PATCH / "sample.npy"), np.load(PATCH / "reference.npy")
    (got,) = client.predict("patch-cnn", [sample])
    np.testing.assert_allclose(got["scores"], ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("rows_per_item", [1, 2, 1000])
def test_batch_is_split_into_items_and_joined_in_row_order(client, rows_per_item):
    sample, ref = np.load(MULTI / "sample.npz"), np.load(MULTI / "reference.npz")
    reps = 700  # 2100 rows: several items per forward, replies joined in order
    x, y = np.tile(sample["x"], (reps, 1)), np.tile(sample["y"], (reps, 1))
    out = client.predict("multi-io", {"x": x, "y": y}, rows_per_item=rows_per_item)
    assert isinstance(out, tensorgate.Outputs)
    assert out["h"].shape == (3 * reps, 3) and out["s"].shape == (3 * reps,)
    np.testing.assert_allclose(out["h"], np.tile(ref["h"], (reps, 1)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["s"], np.tile(ref["s"], reps), rtol=1e-6)
    assert out.summary["ok"] == -(-3 * reps // rows_per_item)


def test_batch_accepts_non_contiguous_and_big_endian_arrays(client):
    sample, ref = np.load(MULTI / "sample.npz"), np.load(MULTI / "reference.npz")
    x_f = np.asfortranarray(np.tile(sample["x"], (2, 1)))
    y_be = np.tile(sample["y"], (2, 1)).astype(">f4")
    out = client.predict("multi-io", {"x": x_f, "y": y_be})
    np.testing.assert_allclose(out["h"], np.tile(ref["h"], (2, 1)), rtol=1e-5, atol=1e-6)


def test_stream_yields_every_item_once(client):
    cases = TABULAR_REF["cases"]
    stream = client.stream("tabular", [c["request"] for c in cases])
    seen = {}
    for index, value in stream:
        assert index not in seen
        seen[index] = value
    assert sorted(seen) == list(range(len(cases)))
    for i, case in enumerate(cases):
        assert seen[i]["qcd"] == pytest.approx(case["scores"]["qcd"], abs=1e-5)
    assert stream.summary["ok"] == len(cases)


def test_unknown_model_raises_request_error_with_code(client):
    with pytest.raises(tensorgate.RequestError) as info:
        client.predict("no-such-model", [b"{}"])
    assert info.value.code == "unknown_model"
    assert "no-such-model" in str(info.value)


def test_bad_item_raises_item_error_or_is_returned(client):
    good = TABULAR_REF["cases"][0]["request"]
    items = [good, b"not json at all", good]
    with pytest.raises(tensorgate.ItemError) as info:
        client.predict("tabular", items, content_type="application/json")
    assert info.value.index == 1 and info.value.code == "plugin_error"
    results = client.predict("tabular", items, content_type="application/json", errors="return")
    assert isinstance(results[1], tensorgate.ItemError) and results[1].code == "plugin_error"
    assert results[0]["qcd"] == pytest.approx(TABULAR_REF["cases"][0]["scores"]["qcd"], abs=1e-5)
    assert results.summary["failed"] == 1
    streamed = dict(client.stream("tabular", items, content_type="application/json", errors="return"))
    assert isinstance(streamed[1], tensorgate.ItemError) and isinstance(streamed[2], dict)


def test_batch_item_failure_names_the_rows(client):
    x = np.zeros((6, 4), np.float32)  # y missing: the plugin rejects every item
    with pytest.raises(tensorgate.ItemError) as info:
        client.predict("multi-io", {"x": x}, rows_per_item=4)
    assert info.value.code == "plugin_error" and "rows 0..4" in str(info.value)


def test_wrong_fingerprint_is_a_connection_error(tg_host, monkeypatch):
    wrong = "".join("0123456789abcdef"[(int(c, 16) + 1) % 16] for c in tg_host.fingerprint)
    with pytest.raises(tensorgate.ConnectionError) as info:
        tensorgate.Client(tg_host.address, fingerprint=wrong)
    assert isinstance(info.value, ConnectionError)  # also the builtin
    for var in ("TENSORGATE_FINGERPRINT", "TENSORGATE_CA"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ValueError, match="fingerprint"):
        tensorgate.Client(tg_host.address)
    # The environment is read like the Rust CLI reads it.
    monkeypatch.setenv("TENSORGATE_FINGERPRINT", tg_host.fingerprint)
    with tensorgate.Client(tg_host.address) as c:
        assert c.status()["models"]


def test_status_lists_models(client):
    status = client.status()
    names = {m["name"] for m in status["models"]}
    assert {"tabular", "multi-io", "nanoaod-jets"} <= names
    assert status["uptime_s"] >= 0 and status["host_version"]


def test_gil_is_released_while_waiting(client):
    """A Python thread keeps running while another waits on the host."""
    sample = np.load(MULTI / "sample.npz")
    batch = {"x": np.tile(sample["x"], (2000, 1)), "y": np.tile(sample["y"], (2000, 1))}
    done = threading.Event()
    spins = 0

    def wait_for_host():
        client.predict("multi-io", batch, rows_per_item=1)  # 6000 items: tens of milliseconds
        done.set()

    t = threading.Thread(target=wait_for_host)
    t.start()
    while not done.is_set():
        spins += 1
    t.join()
    # Held GIL -> the loop above could run only between the waiter's bytecodes (a handful of
    # switches); released -> it spins freely for the whole request.
    assert spins > 10_000, spins


def test_submit_runs_requests_concurrently(client):
    sample, ref = np.load(MULTI / "sample.npz"), np.load(MULTI / "reference.npz")
    pending = [client.submit("multi-io", {"x": sample["x"] * 0 + sample["x"], "y": sample["y"]}) for _ in range(8)]
    for p in pending:
        np.testing.assert_allclose(p.result(timeout=30)["h"], ref["h"], rtol=1e-5, atol=1e-6)
        assert p.done()


def test_cli_status_and_submit(tg_host, tmp_path):
    base = [sys.executable, "-m", "tensorgate", "--host", tg_host.address, "--fingerprint", tg_host.fingerprint]
    out = subprocess.run(base + ["status"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "multi-io" in {m["name"] for m in json.loads(out.stdout)["models"]}
    out = subprocess.run(base + ["submit", "--model", "multi-io", "--output-dir", str(tmp_path), str(MULTI / "sample.npz")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    line = json.loads(out.stdout)
    assert line["ok"] and line["index"] == 0
    got, ref = np.load(line["output"]), np.load(MULTI / "reference.npz")
    np.testing.assert_allclose(got["h"], ref["h"], rtol=1e-5, atol=1e-6)
    bad = subprocess.run(base + ["submit", "--model", "no-such-model", str(MULTI / "sample.npz")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown_model" in bad.stderr


def test_readme_python_example_runs(tg_host):
    """The README's Python section example, run as a user would against a running host."""
    import os
    import re

    text = (ROOT / "README.md").read_text()
    section = text[text.index("\n## Python\n"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    env = dict(os.environ, TENSORGATE_HOST=tg_host.address, TENSORGATE_FINGERPRINT=tg_host.fingerprint)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "(1200, 3) (1200,) 1200"
    assert sorted(lines[1:]) == ["0 (3, 3)", "1 (3, 3)", "2 (3, 3)"]


def test_malformed_batches_are_value_errors(client):
    with pytest.raises(ValueError, match="no rows"):
        client.predict("multi-io", {"x": np.zeros((0, 4), np.float32), "y": np.zeros((0, 3), np.float32)})
    with pytest.raises(ValueError, match="share the batch dimension"):
        client.predict("multi-io", {"x": np.zeros((2, 4), np.float32), "y": np.zeros((3, 3), np.float32)})
    with pytest.raises(ValueError, match="no items"):
        client.predict("multi-io", [])


def test_metadata_reaches_the_plugin_and_comes_back(client, tg_host):
    """The host gives an item's metadata back; lartpc-sparse adds its tiling counts."""
    crop = (ROOT / "plugins" / "lartpc-dense" / "samples" / "plane-crop.npz").read_bytes()
    results = client.predict("lartpc-sparse", [crop], content_type="application/x-npz",
                             metadata={"run": 7, "event": 42, "ignored": "x"}, raw=True)
    assert results[0][0] == "application/x-npz"
    meta = results.metadata[0]
    assert (meta["run"], meta["event"], meta["tiles_run"]) == ("7", "42", "6")
    assert meta["ignored"] == "x"
    (index, _, meta), = client.stream("lartpc-sparse", [crop], content_type="application/x-npz",
                                      metadata=[{"run": "8"}], with_metadata=True)
    assert index == 0 and meta["run"] == "8" and "event" not in meta
    with pytest.raises(ValueError, match="2 metadata dicts for 1 items"):
        client.predict("lartpc-sparse", [crop], metadata=[{}, {}])
    # The CLI's --meta, as the Rust CLI's.
    out = subprocess.run([sys.executable, "-m", "tensorgate", "--host", tg_host.address, "--fingerprint",
                          tg_host.fingerprint, "submit", "--model", "lartpc-sparse", "--meta", "run=9",
                          str(ROOT / "plugins" / "lartpc-dense" / "samples" / "plane-crop.npz")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["metadata"]["run"] == "9"
