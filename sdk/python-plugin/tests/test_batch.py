"""Contract 0.3 natively: grouped calls (the per-item loop and the batch
methods) and the host operations for JSON rows, jagged padding and pixel
tiles, with the host's codes and messages."""

import json

import pytest

import tensorgate_plugin as tg
from tensorgate_plugin import ops


def item(value):
    return tg.native_item(json.dumps(value).encode(), "application/json")


class Doubler(tg.Plugin):
    @staticmethod
    def describe():
        return tg.PluginInfo("doubler", "tests")

    def preprocess(self, item):
        x = item.json()["x"]
        if x < 0:
            raise tg.PluginError("negative", f"x = {x}")
        if x == 0:
            return 1 / x
        return tg.Prepared([tg.Tensor.from_list("f32", [1, 1], [2 * x])])

    def postprocess(self, out):
        return tg.Output.json(out.tensor(0).to_list())


class Batched(Doubler):
    def preprocess_batch(self, items):
        return [self.preprocess(i) if i.json()["x"] > 0 else tg.PluginError("batch", "refused") for i in items]


def configured(cls, tmp_path):
    (tmp_path / "manifest.toml").write_text('name = "t"\nversion = 1\n')
    p = tg.export(cls)()
    p.configure(tg.native_manifest(str(tmp_path / "manifest.toml")))
    return p


def test_a_group_gives_each_item_its_own_result_and_errors_stay_with_their_item(tmp_path):
    p = configured(Doubler, tmp_path)
    out = p.preprocess_batch([item({"x": 1}), item({"x": -1}), item({"x": 0}), item({"x": 3})])
    assert [o.inputs[0].to_list() if isinstance(o, tg.Prepared) else (o.code, o.message.split(" (")[0]) for o in out] == [
        [2.0], ("negative", "x = -1"), ("exception", "ZeroDivisionError: division by zero"), [6.0]]
    replies = p.postprocess_batch([tg.Outputs([t.inputs[0]], [], b"") for t in (out[0], out[3])])
    assert [r.data for r in replies] == [b"[2.0]", b"[6.0]"]


def test_a_batch_method_is_used_when_the_plugin_has_one(tmp_path):
    p = configured(Batched, tmp_path)
    out = p.preprocess_batch([item({"x": 1}), item({"x": -1})])
    assert out[0].inputs[0].to_list() == [2.0]
    assert (out[1].code, out[1].message) == ("batch", "refused")


def test_json_rows_orders_values_by_key_and_names_what_is_wrong():
    keys = ["a", "b"]
    t = ops.json_rows(item({"keys": ["b", "a"], "values": [2, 1]}), keys)
    assert (t.shape, t.to_list()) == ((1, 2), [1.0, 2.0])
    t = ops.json_rows(item([{"a": 1, "b": 2, "c": 0}, {"b": 4, "a": 3}]), keys, "records", "i64")
    assert (t.dtype, t.shape, t.to_list()) == ("i64", (2, 2), [1, 2, 3, 4])
    with pytest.raises(tg.PluginError, match="missing key `b`"):
        ops.json_rows(item({"keys": ["a"], "values": [1]}), keys)
    with pytest.raises(tg.PluginError, match="record 0: unknown key `c`"):
        ops.json_rows(item([{"a": 1, "b": 2, "c": 0}]), keys, "records-strict")


def test_pad_jagged_pads_truncates_and_masks():
    values = tg.Tensor.from_list("f32", [4, 2], [1, 2, 3, 4, 5, 6, 7, 8])
    lengths = tg.Tensor.from_list("i64", [3], [1, 3, 0])
    padded, mask = ops.pad_jagged(values, lengths, 2)
    assert padded.shape == (3, 2, 2) and padded.to_list() == [1, 2, 0, 0, 3, 4, 5, 6, 0, 0, 0, 0]
    assert mask.to_list() == [1, 0, 1, 1, 0, 0]


def test_tile_pixels_matches_the_sdk_tiles_and_refuses_repeats():
    pixels = tg.Tensor.from_list("i32", [3, 2], [0, 0, 9, 9, 5, 3])
    values = tg.Tensor.from_list("f32", [3], [1, 2, 3])
    batch, tiles = ops.tile_pixels(pixels, values, 10, 10, 4, 1)
    assert batch.shape[1:] == (1, 4, 4) and tiles.shape == (batch.shape[0],)
    assert sum(batch.to_list()) >= 6.0
    scores = ops.untile_pixels(tg.Tensor.from_list("f32", [batch.shape[0], 1, 4, 4], batch.to_list()), pixels, tiles, 10, 10, 4, 1)
    assert scores.to_list() == [1.0, 2.0, 3.0]
    twice = tg.Tensor.from_list("i32", [2, 2], [1, 1, 1, 1])
    with pytest.raises(tg.PluginError, match=r"pixel 1 at \(1, 1\) is listed twice"):
        ops.tile_pixels(twice, tg.Tensor.from_list("f32", [2], [1, 1]), 10, 10, 4, 1)


def test_py_tabular_batch_methods_match_its_per_item_ones():
    from test_plugins import ROOT, configured as configured_app

    ref = json.loads((ROOT / "plugins/tabular/reference.json").read_text())
    p = configured_app("plugins/py-tabular")
    items = [item(c["request"]) for c in ref["cases"]] + [item({"values": [1.0]})]
    grouped = p.preprocess_batch(items)
    for i, (it, g) in enumerate(zip(items, grouped)):
        try:
            alone = p.preprocess(it)
        except tg.PluginError as e:
            assert isinstance(g, tg.PluginError) and (g.code, g.message) == (e.code, e.message), i
            continue
        assert g.inputs[0].to_list() == alone.inputs[0].to_list(), i
        out = tg.Outputs([alone.inputs[0].__class__.from_list("f32", [1, 4], [0.1, 0.2, 0.3, 0.4])])
        want = json.loads(p.postprocess([out.tensors[0]]).data)
        got = json.loads(p.postprocess_batch([out])[0].data)
        assert got == pytest.approx(want), i
    bad = ops.scores_json_each([tg.Tensor.from_list("f32", [1, 3], [1, 2, 3])], ["a", "b"])[0]
    assert bad.code == "labels" and "made 3 scores per item but the manifest lists 2 labels" in bad.message
