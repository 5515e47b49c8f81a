"""Tiling a large image into fixed-size square tiles for a network, and
stitching per-pixel outputs back, exactly as the Rust SDK's `tiles` (same
tiles, same batch, same stitched scores, same context bytes).

**Tiles.** Along an axis of length `L`, with tile size `T` and minimum
overlap `O`: one tile at 0 when `L <= T` (zero-padded to `T`), else
`n = ceil((L - O) / (T - O))` tiles, `origin_k = floor(k * (L - T) / (n - 1))`.
Tiles are numbered row-major (`index = i * cols + j`).

**Stitching rule.** Each pixel takes its scores from the tile whose centre
is nearest along each axis: between tiles `k` and `k + 1` the boundary is
`floor((origin_k + origin_{k+1} + T) / 2)`.

The per-pixel work runs on all pixels at once (`_lanes`: one big-int
operation per tile boundary, no Python object per pixel); the values move
in the host."""

import array
from bisect import bisect_right

from . import ops
from . import _lanes
from .context import Reader, Writer
from .errors import PluginError
from .sparse import Pixels
from .tensor import Tensor


def _err(message):
    return PluginError("tiles", message)


def origins(length, tile, overlap):
    """Tile origins along one axis (see the module docs)."""
    if length <= tile:
        return [0]
    n = -(-(length - overlap) // (tile - overlap))
    return [k * (length - tile) // (n - 1) for k in range(n)]


class _Axis:
    """One axis: tile origins and stitching bounds."""

    def __init__(self, length, tile, overlap):
        self.length, self.tile = length, tile
        self.origins = o = origins(length, tile, overlap)
        self.bounds = [(a + b + tile) // 2 for a, b in zip(o, o[1:])]

    def containing(self, p):
        """Indices of the tiles containing position `p`."""
        return range(bisect_right([x + self.tile for x in self.origins], p), bisect_right(self.origins, p))

    def owner(self, p):
        """The tile whose scores position `p` takes."""
        return bisect_right(self.bounds, p)


class TileGrid:
    """The tiles covering a `height` x `width` image (cached per geometry: `TileGrid.of`)."""

    _cache = {}

    def __init__(self, height, width, tile, overlap):
        """The grid; a `tiles` error if the tile is 0, the overlap not smaller than the tile, or the image empty."""
        if tile <= 0 or overlap < 0 or overlap >= tile:
            raise _err(f"tile size {tile} with overlap {overlap}: need tile > 0 and overlap < tile")
        if height <= 0 or width <= 0:
            raise _err(f"image is {height}x{width}: nothing to tile")
        self.height, self.width, self.tile, self.overlap = height, width, tile, overlap
        self.rows_axis, self.cols_axis = _Axis(height, tile, overlap), _Axis(width, tile, overlap)
        self.rows, self.cols = self.rows_axis.origins, self.cols_axis.origins

    @classmethod
    def of(cls, height, width, tile, overlap):
        """The grid of this geometry, made once per instance and kept (a few kinds of planes)."""
        key = (height, width, tile, overlap)
        g = cls._cache.get(key)
        if g is None:
            if len(cls._cache) >= 16:
                cls._cache.clear()
            g = cls._cache[key] = cls(height, width, tile, overlap)
        return g

    def __len__(self):
        return len(self.rows) * len(self.cols)

    def __eq__(self, other):
        return isinstance(other, TileGrid) and (self.height, self.width, self.tile, self.overlap) == (other.height, other.width, other.tile, other.overlap)

    __hash__ = None

    def origin(self, index):
        """Top-left pixel `(row, col)` of tile `index`."""
        return self.rows[index // len(self.cols)], self.cols[index % len(self.cols)]

    def owner(self, row, col):
        """The tile whose scores pixel `(row, col)` takes (the stitching rule)."""
        return self.rows_axis.owner(row) * len(self.cols) + self.cols_axis.owner(col)

    def containing(self, row, col):
        """Indices of the tiles that contain pixel `(row, col)`."""
        nc = len(self.cols)
        return [i * nc + j for i in self.rows_axis.containing(row) for j in self.cols_axis.containing(col)]

    def used(self, pixels):
        """The tiles holding at least one of `pixels`, ascending. Along the
        axis with fewer tile edges each pixel gets its class (which tiles
        contain it) by lane arithmetic; the host marks the (position on the
        other axis, class) pairs present in a small byte table; the plugin
        reads the table and checks each tile's span in it."""
        n = len(pixels)
        r, c = pixels.lanes()
        t = self.tile
        axes = [(self.rows, self.height, r, 0), (self.cols, self.width, c, 1)]
        cuts = [sorted({o for o in org if 0 < o < ln} | {o + t for o in org if o + t < ln}) for org, ln, _, _ in axes]
        a = 0 if len(cuts[0]) <= len(cuts[1]) else 1
        (oa, la, xa, _), (ob, lb, _, b_axis) = axes[a], axes[1 - a]
        ca = cuts[a]
        k = len(ca) + 1
        cls = 0
        for cut in ca:
            cls += _lanes.ge(xa, cut, n)
        table = Tensor.zeros("u8", [lb * k])
        key = Tensor.from_bytes("i64", [n], _lanes.to_bytes(axes[1 - a][2] * k + cls, n))
        ops.scatter(table, key, Tensor.from_bytes("u8", [n], b"\x01" * n))
        marks = table.read()
        ends = [o + t for o in oa]
        used = set()
        for cl, start in enumerate([0] + ca):
            lo, hi = bisect_right(ends, start), bisect_right(oa, start)  # tiles along `a` holding the class
            for jb, o in enumerate(ob):
                if b"\x01" in marks[o * k + cl:min(o + t, lb) * k:k]:
                    for ia in range(lo, hi):
                        i, j = (ia, jb) if a == 0 else (jb, ia)
                        used.add(i * len(self.cols) + j)
        return sorted(used)

    def stitch_tables(self, channels):
        """Per-row and per-column parts (i64 bytes, indexed by row and by
        column) of each pixel's first score in the output of *all* tiles
        `[tiles, channels, T, T]`, their sum its index; and each row's and
        column's owning tile parts of the tile number (`i * cols`, `j`)."""
        key = ("stitch", channels)
        got = self.__dict__.get(key)
        if got is None:
            t, ctt, nc = self.tile, channels * self.tile * self.tile, len(self.cols)
            ri = [self.rows_axis.owner(p) for p in range(self.height)]
            ci = [self.cols_axis.owner(p) for p in range(self.width)]
            rv = array.array("q", [i * nc * ctt + (p - self.rows[i]) * t for p, i in enumerate(ri)]).tobytes()
            cv = array.array("q", [j * ctt + p - self.cols[j] for p, j in enumerate(ci)]).tobytes()
            got = self.__dict__[key] = (rv, cv, array.array("q", [i * nc for i in ri]).tobytes(), array.array("q", ci).tobytes())
        return got


class TiledPixels:
    """Sparse pixels laid over a tile grid: which tiles to run (`tiles`,
    ascending; only tiles holding a pixel, or tile 0 alone when none does),
    the batched network input, and the stitched per-pixel outputs."""

    def __init__(self, pixels, tile, overlap, grid=None, tiles=None):
        """Lays `pixels` over a grid of `tile`-sized tiles with at least `overlap`."""
        self.pixels = pixels
        self.grid = grid or TileGrid.of(pixels.height, pixels.width, tile, overlap)
        if tiles is None:
            tiles = self.grid.used(pixels) if len(pixels) else []
        self.tiles = list(tiles) or [0]

    def __eq__(self, other):
        return isinstance(other, TiledPixels) and (self.grid, self.pixels, self.tiles) == (other.grid, other.pixels, other.tiles)

    __hash__ = None

    def input(self, values):
        """The network input: f32 `[tiles, 1, tile, tile]`, each tile holding
        the `values` (f32 `[pixels]`, in the host) of the pixels inside it and
        zeros elsewhere. The host scatters the values onto a zero plane and
        copies each tile out of it (`copy-region`); one index per pixel crosses."""
        n = len(self.pixels)
        if list(values.shape) != [n]:
            raise _err(f"{n} pixels but values of shape {list(values.shape)}")
        return self.input_from_plane(self.pixels.to_dense(values))

    def input_from_plane(self, plane):
        """The network input cut out of a dense f32 `[height, width]` plane in
        the host: each run tile copied by the host, zero-padded past the edges."""
        g = self.grid
        h, w, t = g.height, g.width, g.tile
        if list(plane.shape) != [h, w]:
            raise _err(f"the plane has shape {list(plane.shape)}, the grid is over {h}x{w}")
        n = len(self.tiles)
        out = Tensor.zeros("f32", [n * t, t])
        for slot, tile in enumerate(self.tiles):
            r0, c0 = g.origin(tile)
            ops.copy_region(plane, [r0, c0], out, [slot * t, 0], [min(h - r0, t), min(w - c0, t)])
        return out.reshape([n, 1, t, t])

    def gather(self, output):
        """Stitches the network's per-pixel output `[tiles, C, tile, tile]`
        into f32 `[pixels, C]`: for each pixel, in order, the `C` values from
        the tile that owns it. The host gathers them; one index per pixel crosses."""
        g = self.grid
        n, t = len(self.tiles), g.tile
        shape = list(output.shape)
        if len(shape) != 4 or shape[0] != n or shape[2] != t or shape[3] != t:
            raise _err(f"model output has shape {shape}, expected [{n}, C, {t}, {t}]")
        c = shape[1]
        if c < 1:
            raise _err("stitching: gather needs count >= 1")
        ctt, px, m = c * t * t, self.pixels, len(self.pixels)
        rv, cv, rt, ct = g.stitch_tables(c)
        at_r = Tensor.from_bytes("i64", [m], px.index_bytes(0))
        at_c = Tensor.from_bytes("i64", [m], px.index_bytes(1))

        def looked_up(table, at):
            """`table[at[i]]` for every pixel, looked up by the host, as lanes."""
            return int.from_bytes(ops.gather(Tensor.from_bytes("i64", [len(table) // 8], table), at).read(), "little")

        index = looked_up(rv, at_r) + looked_up(cv, at_c)
        v = None
        run = set(self.tiles)
        k = 0
        while k < len(g):  # each run of tiles not run: no pixel in it, later slots move down
            if k in run:
                k += 1
                continue
            s0 = k
            while k < len(g) and k not in run:
                k += 1
            if v is None:
                v = looked_up(rt, at_r) + looked_up(ct, at_c)
            inside = _lanes.ge(v, s0, m) - _lanes.ge(v, k, m)
            bad = _lanes.first(inside, m)
            if bad is not None:
                rr, cc = px.rows[bad], px.cols[bad]
                raise _err(f"pixel ({rr}, {cc}) belongs to tile {g.owner(rr, cc)}, which was not run")
            index -= _lanes.ge(v, k, m) * ((k - s0) * ctt)
        idx = Tensor.from_bytes("i64", [m], _lanes.to_bytes(index, m))
        try:
            return ops.gather(output, idx, c, t * t)
        except PluginError as e:
            raise _err(f"stitching: {e.message}") from None

    def context(self):
        """This layout as a context for `postprocess` (the Rust SDK's bytes)."""
        w = Writer()
        self.encode(w)
        return w.finish()

    @classmethod
    def from_context(cls, context):
        """The layout from a context made by `context`."""
        return cls.decode(Reader(context))

    def encode(self, w):
        """Appends this layout to a `context.Writer`."""
        w.u64(self.grid.tile).u64(self.grid.overlap).array(array.array("I", self.tiles))
        self.pixels.encode(w)

    @classmethod
    def decode(cls, r):
        """Reads a layout written by `encode` from a `context.Reader`."""
        tile, overlap = r.u64(), r.u64()
        tiles = r.array("I").tolist()
        pixels = Pixels.decode(r)
        grid = TileGrid.of(pixels.height, pixels.width, tile, overlap)
        if any(x >= len(grid) for x in tiles):
            raise _err("context names a tile outside the grid")
        return cls(pixels, tile, overlap, grid=grid, tiles=tiles)
