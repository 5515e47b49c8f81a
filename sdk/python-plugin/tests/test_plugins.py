"""The example plugins and the hostile test plugin, run natively: the rows
they hand the model and the replies they make (the models are not run)."""

import io
import json

import pytest

import tensorgate_plugin as tg
from conftest import ROOT, load_plugin


def configured(rel):
    p = load_plugin(rel).Plugin()
    p.configure(tg.native_manifest(str(ROOT / rel / "manifest.toml")))
    return p


def test_py_tabular_rows_and_replies_follow_the_reference():
    ref = json.loads((ROOT / "plugins/tabular/reference.json").read_text())
    p = configured("plugins/py-tabular")
    assert p.describe().name == "py-tabular"
    for case in ref["cases"]:
        req = case["request"]
        prep = p.preprocess(tg.native_item(req))
        x = prep.inputs[0]
        given = dict(zip(req["keys"], req["values"]))
        assert (x.dtype, x.shape) == ("f32", (1, 16))
        assert x.read() == tg.Tensor.from_list("f32", [1, 16], [given[f] for f in ref["features"]]).read()
        scores = tg.Tensor.from_list("f32", [1, 4], [case["scores"][label] for label in ref["labels"]])
        out = p.postprocess([scores])
        assert out.content_type == "application/json"
        assert json.loads(out.to_bytes()) == case["scores"]


def test_py_tabular_errors_name_the_problem():
    p = configured("plugins/py-tabular")
    bad = json.loads((ROOT / "plugins/tabular/samples/bad-missing-key.json").read_text())

    def fails(item):
        with pytest.raises(tg.PluginError) as e:
            p.preprocess(tg.native_item(item))
        return e.value.code, e.value.message

    assert fails(bad) == ("missing-key", "missing key `jet_pt`")
    assert fails({"keys": ["a"], "values": []}) == ("length-mismatch", "1 keys but 0 values")
    assert fails({"keys": ["jet_pt", "jet_pt"], "values": [1, 2]}) == ("duplicate-key", "key `jet_pt` appears more than once")
    assert fails({"keys": ["nope"], "values": [1]})[1].startswith('unknown key `nope`; expected ["jet_pt", ')
    assert fails(b"{")[0] == "malformed-json"
    with pytest.raises(tg.PluginError, match="3 scores per item but the manifest lists 4 labels"):
        p.postprocess([tg.Tensor.zeros("f32", [1, 3])])


def test_py_lartpc_sparse_scores_the_sample_in_input_order():
    np = pytest.importorskip("numpy")
    p = configured("plugins/py-lartpc-sparse")
    raw = (ROOT / "plugins/py-lartpc-sparse/samples/plane-crop.npz").read_bytes()
    z = np.load(io.BytesIO(raw))
    # A sub-sample, shuffled (the native host ops are pure-Python loops).
    rng = np.random.default_rng(0)
    keep = rng.permutation(len(z["values"]))[:3000]
    pixels, values, shape = z["pixels"][keep], z["values"][keep], z["shape"]
    buf = io.BytesIO()
    np.savez(buf, pixels=pixels, values=values, shape=shape)
    prep = p.preprocess(tg.native_item(buf.getvalue(), "application/x-npz", {"event": "4"}))
    x = prep.inputs[0]
    assert x.shape[1:] == (1, 512, 512)
    n = x.shape[0]
    t = np.frombuffer(x.read(), np.float32).reshape(n, 512, 512)
    fake = np.arange(n * 3 * 512 * 512, dtype=np.float32)
    out = p.postprocess([tg.Tensor.from_bytes("f32", [n, 3, 512, 512], fake.tobytes())], prep.keep, prep.context)
    assert dict(out.metadata) == {"tiles": "6", "tiles_run": str(n)}
    scores = np.load(io.BytesIO(out.to_bytes()))["scores"]
    assert scores.shape == (len(values), 3)
    # Each pixel's channel scores are one tile-plane (512 * 512) apart.
    assert np.array_equal(scores[:, 1] - scores[:, 0], np.full(len(values), 512 * 512, np.float32))
    # The score each pixel got names the tile slot and place it was read from: its own value is there.
    first = scores[:, 0].astype(np.int64)
    slot, place = first // (3 * 512 * 512), first % (3 * 512 * 512)
    assert np.array_equal(t.reshape(n, -1)[slot, place], values)
    dup = io.BytesIO()
    np.savez(dup, pixels=np.array([[1, 1], [3, 2], [1, 1]], np.int32), values=np.ones(3, np.float32), shape=np.array([10, 10]))
    with pytest.raises(tg.PluginError, match=r"pixel 2 at \(1, 1\) is listed twice"):
        p.preprocess(tg.native_item(dup.getvalue(), "application/x-npz"))


@pytest.mark.parametrize("mode,code,message", [
    ("raise", "exception", "ZeroDivisionError: division by zero (plugin.py:"),
    ("plugin-error", "hostile", "hostile plugin: error requested by item"),
    ("recurse", "exception", "RecursionError: maximum recursion depth exceeded"),
    ("exit", "exception", "SystemExit: 3 (plugin.py:"),
    ("bad-return", "bad-return", "preprocess returned a dict, not a tensorgate_plugin.Prepared"),
])
def test_hostile_py_modes_fail_the_item(mode, code, message):
    p = configured("tests/plugins/hostile-py")
    with pytest.raises(tg.PluginError) as e:
        p.preprocess(tg.native_item({"mode": mode}))
    assert e.value.code == code and e.value.message.startswith(message), e.value.message


def test_hostile_py_serves_normally_after():
    p = configured("tests/plugins/hostile-py")
    prep = p.preprocess(tg.native_item({"mode": "ok"}))
    assert prep.inputs[0].shape == (1, 16)
    out = p.postprocess([tg.Tensor.from_list("f32", [1, 4], [0.25] * 4)], [], prep.context)
    assert json.loads(out.to_bytes()) == [0.25] * 4
    with pytest.raises(tg.PluginError, match="KeyError"):
        p.postprocess([], [], p.preprocess(tg.native_item({"mode": "raise-post"})).context)
    big = p.postprocess([], [], p.preprocess(tg.native_item({"mode": "huge-output", "bytes": 1000})).context)
    assert big.to_bytes() == b"\x07" * 1000
