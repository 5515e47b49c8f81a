import array
import struct

import pytest

import tensorgate_plugin as tg
from tensorgate_plugin import ops


def err(f, *a):
    with pytest.raises(tg.PluginError) as e:
        f(*a)
    return e.value.code, e.value.message


def test_native_mode():
    assert tg.NATIVE


def test_tensor_ranges_are_checked_and_typed():
    t = tg.Tensor.from_list("f32", [2, 2], [1, 2, 3, 4])
    assert (t.dtype, t.shape, t.numel) == ("f32", (2, 2), 4)
    assert t.to_list(1, 2) == [2.0, 3.0]
    t.write(3, struct.pack("<f", 9.0))
    t.write(0, array.array("f", [8.0]))
    assert t.to_list() == [8.0, 2.0, 3.0, 9.0]
    assert err(t.read, 3, 2) == ("range", "elements 3..3+2 are outside the tensor's 4 (shape [2, 2])")
    assert err(t.write, 0, b"abc") == ("range", "3 bytes are not whole f32 elements")
    assert err(t.write, 3, b"\0" * 8) == ("range", "elements 3..3+2 are outside the tensor's 4 (shape [2, 2])")
    t.reshape([4])
    assert t.shape == (4,)
    assert err(t.reshape, [3]) == ("shape", "cannot reshape [4] (4 elements) to [3]")
    assert err(tg.Tensor.from_bytes, "i64", [3], b"\0" * 8) == ("shape", "a i64 tensor of shape [3] needs 24 bytes, got 8")
    assert err(tg.Tensor.zeros, "f32", [-1])[0] == "shape"
    assert "too large" in err(tg.Tensor.zeros, "f64", [1 << 62, 4])[1]
    assert err(tg.Tensor.zeros, "f16", [1])[0] == "dtype"


def test_every_dtype_round_trips_through_npy():
    for dtype, values in [("f32", [1.5, -2.0]), ("f64", [3.25]), ("i64", [-1, 0, 1]), ("i32", [9]), ("u8", [7, 255]), ("bool", [True, False])]:
        t = tg.Tensor.from_list(dtype, [len(values)], values)
        back = tg.npy.parse_npy(tg.npy.write_npy(t))
        assert back == t and back.to_list() == values
    scalar = tg.Tensor.from_list("i32", [], [9])
    assert tg.npy.parse_npy(tg.npy.write_npy(scalar)).item() == 9


def test_select_above_keeps_order_skips_nan_and_rounds_the_threshold_to_f32():
    t = tg.Tensor.from_list("f32", [6], [0.0, 5.0, float("nan"), 10.5, 10.0, -1.0])
    i, v = ops.select_above(t, 4.9)
    assert (i.dtype, i.to_list(), v.to_list()) == ("i64", [1, 3, 4], [5.0, 10.5, 10.0])
    x = struct.unpack("<f", struct.pack("<f", 0.1))[0]  # f32(0.1) > 0.1 as f64, not as f32
    assert ops.select_above(tg.Tensor.from_list("f32", [1], [x]), 0.1)[0].numel == 0
    assert err(ops.select_above, tg.Tensor.zeros("i32", [2]), 0) == ("op", "select-above needs an f32 source, got i32 of shape [2]")


def test_gather_and_scatter_check_every_index_first():
    src = tg.Tensor.from_list("i32", [4], [10, 20, 30, 40])
    idx = lambda *v: tg.Tensor.from_list("i64", [len(v)], v)  # noqa: E731
    g = ops.gather(src, idx(3, 0, 0))
    assert (g.shape, g.to_list()) == ((3, 1), [40, 10, 10])
    assert err(ops.gather, src, idx(1, 4)) == ("op", "indices[1] = 4 is outside 0..4")
    assert err(ops.gather, src, idx(-1), 1, 0) == ("op", "indices[0] = -1 is outside 0..4")
    assert ops.gather(src, idx(1, 0), 2, 2).to_list() == [20, 40, 10, 30]
    assert err(ops.gather, src, idx(2), 2, 2) == ("op", "indices[0] = 2 is outside 0..2")
    assert err(ops.gather, src, idx(0), 0, 1) == ("op", "gather needs count >= 1")
    assert err(ops.gather, src, tg.Tensor.zeros("i32", [1])) == ("op", "gather's indices must be an i64 tensor, got i32 of shape [1]")
    target = tg.Tensor.zeros("i32", [4])
    ops.scatter(target, idx(2, 0, 2), tg.Tensor.from_list("i32", [3], [7, 8, 9]))
    assert target.to_list() == [8, 0, 9, 0], "a repeated index keeps the last value"
    assert err(ops.scatter, target, idx(1, 9), tg.Tensor.from_list("i32", [2], [1, 1])) == ("op", "indices[1] = 9 is outside 0..4")
    assert target.to_list() == [8, 0, 9, 0], "nothing written on an error"
    assert err(ops.scatter, target, idx(1), tg.Tensor.from_list("i32", [2], [1, 2])) == ("op", "indices and values differ in length: 1 and 2")
    assert err(ops.scatter, target, idx(1), tg.Tensor.zeros("f32", [1])) == ("op", "scatter's values are f32, the target is i32")
    assert err(ops.scatter, target, idx(1), target)[1].startswith("the target tensor is also an argument read from")


def test_copy_region_moves_a_box_and_refuses_one_outside():
    plane = tg.Tensor.from_list("i32", [1, 4, 5], range(20))
    batch = tg.Tensor.from_list("i32", [2, 3, 3], [-1] * 18)
    ops.copy_region(plane, [0, 1, 2], batch, [1, 0, 0], [1, 2, 3])
    got = batch.to_list()
    assert got[9:15] == [7, 8, 9, 12, 13, 14] and set(got[:9] + got[15:]) == {-1}
    flat = plane.reshape([4, 5])
    tile = tg.Tensor.zeros("i32", [6, 3])
    assert err(ops.copy_region, flat, [3, 0], tile, [0, 0], [2, 3]) == (
        "op", "the box of size [2, 3] at [3, 0] leaves the source of shape [4, 5] in dimension 0")
    assert err(ops.copy_region, flat, [0, 0], tile, [5, 0], [2, 1])[1] == "the box of size [2, 1] at [5, 0] leaves the target of shape [6, 3] in dimension 0"
    assert err(ops.copy_region, flat, [0, 0], tile, [0, 0], [1])[1].startswith("copy_region needs one rank")
    assert err(ops.copy_region, flat, [0, 0], tg.Tensor.zeros("f32", [2, 2]), [0, 0], [1, 1])[1] == "copy-region's source is i32, the target is f32"


def npy_bytes(descr, shape, data, version=1):
    dims = f"({shape[0]},)" if len(shape) == 1 else "(" + ", ".join(map(str, shape)) + ")"
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {dims}, }}"
    text += " " * ((64 - (10 + len(text) + 1) % 64) % 64) + "\n"
    if version == 1:
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode() + data
    return b"\x93NUMPY" + bytes([version, 0]) + struct.pack("<I", len(text)) + text.encode() + data


def test_npy_payload_reads_only_the_header_and_views_the_body():
    data = struct.pack("<6f", *range(6))
    t = tg.native_item(npy_bytes("<f4", [2, 3], data), "application/x-npy").npy()
    assert (t.dtype, t.shape, t.to_list()) == ("f32", (2, 3), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    assert tg.native_item(npy_bytes("<i8", [2], struct.pack("<2q", 5, -6), version=3)).npy().to_list() == [5, -6]
    with open(__file__, "rb"):
        pass
    good = npy_bytes("<f4", [2], struct.pack("<2f", 1.5, 2.5))
    cases = [
        (b"not numpy", "not a .npy file (bad magic)"),
        (b"\x93NUMPY", "npy file ends inside its version"),
        (b"\x93NUMPY\x01\x00\x76", "npy file ends inside its header length"),
        (b"\x93NUMPY\x04\x00\x76\x00", "unsupported .npy version 4.0"),
        (good[:20], "npy file ends inside its header"),
        (good[:-1], "npy data is 7 bytes, shape [2] of <f4 needs 8"),
        (good.replace(b"False", b"True "), "Fortran-order arrays are not supported"),
        (good.replace(b"<f4", b"<u2"), "unsupported dtype '<u2' (use little-endian f4, f8, i8, i4, u1 or b1)"),
        (good.replace(b"(2,)", b"(-2,)"), "negative integer"),
        (good.replace(b"'shape'", b"'shapo'"), "npy header has no 'shape'"),
        (good.replace(b"(2,)", b"(99999999999, 99999999999)"), "too large"),
    ]
    for bad, want in cases:
        code, msg = err(tg.native_item(bad).npy)
        assert code == "npy" and want in msg, (bad, msg)
    # every truncation is an error, never a crash
    for n in range(len(good)):
        with pytest.raises(tg.PluginError):
            tg.native_item(good[:n]).npy()


def test_npz_and_payload_ranges():
    np = pytest.importorskip("numpy")
    import io

    buf = io.BytesIO()
    np.savez(buf, a=np.arange(6, dtype=np.float32).reshape(2, 3), b=np.array([7], np.int64))
    entries = tg.native_item(buf.getvalue()).npz()
    assert [(n, t.dtype, t.shape) for n, t in entries] == [("a", "f32", (2, 3)), ("b", "i64", (1,))]
    buf = io.BytesIO()
    np.savez_compressed(buf, a=np.zeros(3))
    assert "is compressed" in err(tg.native_item(buf.getvalue()).npz)[1]
    assert err(tg.native_item(b"not a zip").npz)[1].startswith("not a readable .npz (zip) archive")
    p = tg.native_item(bytes(range(16))).payload
    assert p.read(2, 3) == bytes([2, 3, 4])
    assert err(p.read, 15, 2) == ("range", "bytes 15..15+2 are outside the item's 16")
    assert p.tensor(8, "u8", [2, 4]).to_list() == list(range(8, 16))
    assert err(p.tensor, 8, "f32", [4]) == ("range", "a f32 tensor of shape [4] (16 bytes) at byte 8 does not fit in the item's 16 bytes")
    # what numpy writes, numpy reads back
    out = tg.Output.npz([("s", tg.Tensor.from_list("f32", [2], [1, 2]))])
    assert np.load(io.BytesIO(out.to_bytes()))["s"].tolist() == [1.0, 2.0]


def test_manifest_params_name_the_key():
    m = tg.native_manifest({"labels": ["a", "b"], "params": {"tile": 512, "mode": "fast", "features": ["x", "y"], "ratio": 0.5}})
    assert m.params["mode"] == "fast" and m.params["tile"] == "512"
    assert m.param_as("tile", int) == 512 and m.param_as("features") == ["x", "y"] and m.param_as("mode", str) == "fast"
    assert m.param_as("tile", float) == 512.0 and m.param_as("absent", int, default=3) == 3
    assert err(m.require, "absent") == ("manifest", "manifest has no parameter `params.absent`")
    assert err(m.param_as, "ratio", int) == ("manifest", "manifest parameter `params.ratio` = 0.5: expected an integer")
    code, msg = err(m.param_as, "mode")
    assert code == "manifest" and msg.startswith("manifest parameter `params.mode` = fast: ")


def test_labels_records_and_context():
    from tensorgate_plugin import context, labels, records

    assert labels.softmax([1000.0, 1000.0]) == [0.5, 0.5]
    assert abs(labels.sigmoid([2.0])[0] - 0.880797) < 1e-6
    assert list(labels.softmax_map(["b", "s"], [0.0, 0.0]).items()) == [("b", 0.5), ("s", 0.5)]
    assert err(labels.scores_map, ["b", "s"], [0.1, 0.2, 0.7]) == (
        "labels", "the plugin made 3 scores per item but the manifest lists 2 labels (b, s): the scores its postprocess labels must be one per label")
    e = labels._mismatch("efn-qg", ["quark", "gluon"], 3)
    assert (e.code, e.message) == (
        "labels", "plugin `efn-qg` made 3 scores per item but the manifest lists 2 labels (quark, gluon): the scores its postprocess labels must be one per label")
    assert "10 labels (c0, c1, c2, c3, c4, c5, c6, c7, ...)" in labels._mismatch("x", [f"c{i}" for i in range(10)], 3).message
    assert labels.top_k(["a", "b", "c"], [0.2, 0.7, 0.1], 2) == [("b", 0.7), ("a", 0.2)]
    v, m = records.pad([[1, 2], [3, 4], [5, 6]], 2, 4)
    assert (v.shape, v.to_list(), m.to_list()) == ((1, 4, 2), [1, 2, 3, 4, 5, 6, 0, 0], [1, 1, 1, 0])
    assert err(records.pad, [[1.0]], 2, 4) == ("record-length", "record 0 has 1 values, expected 2")
    w = context.Writer().str("run").meta({"event": "7"}).array([1.5, -2.0], "f").u64(9)
    b = w.finish()
    # the Rust SDK's layout: u64 length + bytes, slices 8-byte aligned
    assert b[:11] == struct.pack("<Q", 3) + b"run" and len(b) % 8 == 0
    r = context.Reader(b)
    assert (r.str(), r.meta(), r.array("f").tolist(), r.u64()) == ("run", [("event", "7")], [1.5, -2.0], 9)
    short = context.Reader(b[:-1])
    short.str(), short.meta(), short.array("f")
    assert err(short.u64) == ("context", "corrupt plugin context: ends early")


class Boom(tg.Plugin):
    @staticmethod
    def describe():
        return tg.PluginInfo("boom", "raises")

    def preprocess(self, item):
        return 1 / 0

    def postprocess(self, out):
        return {}


def test_exceptions_become_plugin_errors_naming_the_place():
    p = tg.export(Boom)()
    p.configure(tg.native_manifest())
    code, msg = err(p.preprocess, tg.native_item(b"{}"))
    assert code == "exception"
    assert msg.startswith("ZeroDivisionError: division by zero (test_core.py:") and msg.endswith(" in preprocess)"), msg
    assert err(p.postprocess, []) == ("bad-return", "postprocess returned a dict, not a tensorgate_plugin.Output")
    assert err(tg.native_item(b"{").json)[0] == "malformed-json"
    assert err(tg.Outputs([]).tensor, 0) == ("no-output", "model returned 0 tensor(s), no output 0")


def test_memory_error_is_an_item_error():
    class Hog(Boom):
        def preprocess(self, item):
            raise MemoryError

    p = tg.export(Hog)()
    p.configure(tg.native_manifest())
    code, msg = err(p.preprocess, tg.native_item(b""))
    assert code == "memory" and msg.startswith("MemoryError")
