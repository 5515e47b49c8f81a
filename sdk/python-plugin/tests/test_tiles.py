"""Tiling and stitching against an independent dense reconstruction (numpy):
the tiles a network sees and the scores each pixel gets, derived from the
rules in the module docs, not from the SDK's code."""

import io

import pytest

import tensorgate_plugin as tg
from tensorgate_plugin.sparse import Pixels
from tensorgate_plugin.tiles import TileGrid, TiledPixels, origins

np = pytest.importorskip("numpy")


def test_origins_cover_with_overlap_as_the_rust_sdk():
    assert origins(300, 512, 64) == [0]
    assert origins(512, 512, 64) == [0]
    assert origins(1008, 512, 64) == [0, 248, 496]
    assert origins(640, 512, 64) == [0, 128]
    o = origins(3456, 512, 64)
    assert (len(o), o[0], o[-1]) == (8, 0, 3456 - 512)
    assert all(a + 512 - b >= 64 for a, b in zip(o, o[1:]))
    assert len(origins(2400, 512, 64)) == 6


def nearest_owner(p, origins_, tile):
    """The tile whose centre is nearest to pixel centre p + 0.5 (ties: the later tile)."""
    return min(range(len(origins_)), key=lambda k: (abs(p + 0.5 - (origins_[k] + tile / 2)), -k))


def test_owner_is_the_nearest_centre():
    g = TileGrid(1008, 1008, 512, 64)
    assert (g.owner(379, 0), g.owner(380, 0), g.owner(627, 1007), g.owner(628, 1007)) == (0, 3, 5, 8)
    for length, tile, overlap in [(1008, 512, 64), (3456, 512, 64), (37, 8, 3), (20, 8, 2)]:
        g = TileGrid(length, 1, tile, overlap)
        o = origins(length, tile, overlap)
        for p in range(length):
            k = g.owner(p, 0)
            assert k == nearest_owner(p, o, tile), (length, p)
            assert o[k] <= p < o[k] + tile
    with pytest.raises(tg.PluginError):
        TileGrid(10, 10, 8, 8)


def scene(h, w, n, seed, band=None):
    rng = np.random.default_rng(seed)
    rows = rng.integers(*(band or (0, h)), n)
    cols = rng.integers(0, w, n)
    flat = np.unique(rows * w + cols)
    flat = flat[rng.permutation(len(flat))]  # any order
    values = rng.uniform(-5, 50, len(flat)).astype(np.float32)
    return flat // w, flat % w, values


def dense_tiles(h, w, t, overlap, rows, cols, values):
    """The run tiles and their contents, independently: every tile holding a pixel, zero-padded."""
    plane = np.zeros((h, w), np.float32)
    plane[rows, cols] = values
    ro, co = origins(h, t, overlap), origins(w, t, overlap)
    run, batch = [], []
    for i, r0 in enumerate(ro):
        for j, c0 in enumerate(co):
            inside = (rows >= r0) & (rows < r0 + t) & (cols >= c0) & (cols < c0 + t)
            if inside.any():
                tile = np.zeros((t, t), np.float32)
                part = plane[r0:r0 + t, c0:c0 + t]
                tile[:part.shape[0], :part.shape[1]] = part
                run.append(i * len(co) + j)
                batch.append(tile)
    if not run:
        run, batch = [0], [np.zeros((t, t), np.float32)]
    return run, np.stack(batch)[:, None]


@pytest.mark.parametrize("h,w,t,overlap,n,band", [(20, 30, 8, 2, 150, (10, 20)), (45, 37, 8, 3, 400, None), (300, 40, 64, 8, 300, (0, 100)), (5, 3, 8, 2, 4, None)])
def test_input_and_gather_match_a_dense_reconstruction(h, w, t, overlap, n, band):
    rows, cols, values = scene(h, w, n, seed=h * w, band=band)
    pixels = Pixels.new(h, w, rows.tolist(), cols.tolist())
    vt = tg.Tensor.from_bytes("f32", [len(values)], values.tobytes())
    tp = TiledPixels(pixels, t, overlap)
    run, want = dense_tiles(h, w, t, overlap, rows, cols, values)
    assert tp.tiles == run
    x = tp.input(vt)
    assert x.shape == (len(run), 1, t, t)
    assert x.read() == want.tobytes(), "byte-identical tiles"
    # A fake network output encoding (tile, channel, row, col).
    C = 3
    k, r, c = np.meshgrid(np.arange(C), np.arange(t), np.arange(t), indexing="ij")
    fake = np.stack([tile * 100000 + k * 10000 + r * 100 + c for tile in run]).astype(np.float32)
    out = tp.gather(tg.Tensor.from_bytes("f32", list(fake.shape), fake.tobytes()))
    ro, co = origins(h, t, overlap), origins(w, t, overlap)
    exp = []
    for pr, pc in zip(rows, cols):
        i, j = nearest_owner(pr, ro, t), nearest_owner(pc, co, t)
        tile = i * len(co) + j
        exp.append([tile * 100000 + ch * 10000 + (pr - ro[i]) * 100 + (pc - co[j]) for ch in range(C)])
    assert out.shape == (len(rows), C)
    assert out.read() == np.array(exp, np.float32).reshape(-1, C).tobytes()
    back = TiledPixels.from_context(tp.context())
    assert back == tp
    with pytest.raises(tg.PluginError, match=r"expected \["):
        tp.gather(tg.Tensor.zeros("f32", [len(run) + 1, C, t, t]))


def test_context_has_the_rust_sdk_layout():
    p = Pixels.new(3, 4, [0, 2], [1, 3])
    ctx = TiledPixels(p, 2, 0).context()
    u64 = lambda v: int(v).to_bytes(8, "little")  # noqa: E731
    u32s = lambda vs: b"".join(int(v).to_bytes(4, "little") for v in vs)  # noqa: E731
    pad = lambda b: b + bytes(-len(b) % 8)  # noqa: E731
    tiles = TiledPixels(p, 2, 0).tiles
    want = u64(2) + u64(0) + u64(len(tiles)) + pad(u32s(tiles)) + u64(3) + u64(4) + u64(2) + pad(u32s([0, 2])) + u64(2) + pad(u32s([1, 3]))
    assert ctx == want


def test_no_pixels_still_runs_one_tile():
    pixels, values = Pixels.above(tg.Tensor.zeros("f32", [3, 4]), 0.0)
    tp = TiledPixels(pixels, 2, 0)
    assert tp.tiles == [0]
    assert tp.input(values).shape == (1, 1, 2, 2)


def test_above_dense_and_npz_layout():
    img = tg.Tensor.from_list("f32", [2, 3], [0, 5, 1, 0, 0, 7.5])
    p, v = Pixels.above(img, 1.0)
    assert (p.height, p.width, list(p.rows), list(p.cols), v.to_list()) == (2, 3, [0, 1], [1, 2], [5.0, 7.5])
    assert p.to_dense(v).to_list() == [0, 5, 0, 0, 0, 7.5]
    assert p.coords().to_list() == [0, 1, 1, 2]

    def entries(shape=(4, 3), pixels=((0, 1), (3, 2)), values=(1.0, 2.0)):
        buf = io.BytesIO()
        np.savez(buf, pixels=np.array(pixels, np.int32).reshape(-1, 2), values=np.array(values, np.float32), shape=np.array(shape, np.int64))
        return tg.native_item(buf.getvalue()).npz()

    p, v = Pixels.from_npz(entries())
    assert (list(p.rows), list(p.cols), v.to_list()) == ([0, 3], [1, 2], [1.0, 2.0])
    msg = lambda **kw: pytest.raises(tg.PluginError, Pixels.from_npz, entries(**kw)).value.message  # noqa: E731
    assert "pixel 1 at (3, 2) is outside the 3x3 image" in msg(shape=(3, 3))
    assert "`values` must be f32 [2]" in msg(values=(1.0,))
    assert "negative coordinate -1" in msg(pixels=((0, -1), (1, 1)))
    assert "`shape` must be positive" in msg(shape=(0, 3))
    assert "no array named `shape`" in pytest.raises(tg.PluginError, Pixels.from_npz, entries()[:2]).value.message
    dup = Pixels.new(10, 10, [1, 3, 1], [1, 2, 1])
    assert dup.first_duplicate() == 2 and p.first_duplicate() is None
