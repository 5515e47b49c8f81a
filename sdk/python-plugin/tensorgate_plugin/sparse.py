"""Sparse images: lists of lit pixels `(row, col)` with their values in a
host tensor beside them, to and from dense row-major planes and the
documented `.npz` layout (as the Rust SDK's `sparse`). Coordinates are
`array.array('i')`; the bulk work (flat indices, checks) runs in C loops."""

import array
from itertools import repeat
from operator import floordiv, mod

from . import _lanes, ops
from .errors import PluginError
from .tensor import Tensor


def _err(message):
    return PluginError("sparse", message)


def _ints(values):
    return values if isinstance(values, array.array) and values.typecode == "i" else array.array("i", values)


class Pixels:
    """Lit pixels of a `height` x `width` image, in a chosen order: `rows`
    and `cols` (`array.array('i')`). Their values stay in the host, in a
    `Tensor` beside them. Checks and flat indices run on all pixels at once
    (`_lanes`), never one Python object per pixel."""

    __slots__ = ("height", "width", "rows", "cols", "_coords", "_flat", "_lanes", "_plane")

    def __init__(self, height, width, rows, cols, coords=None):
        """Pixels from parallel lists, unchecked (see `Pixels.new`)."""
        self.height, self.width = int(height), int(width)
        self.rows, self.cols = _ints(rows), _ints(cols)
        self._coords, self._flat, self._lanes, self._plane = coords, None, None, None

    @classmethod
    def new(cls, height, width, rows, cols):
        """Pixels from parallel lists; errors name the first pixel outside the image."""
        p = cls(height, width, rows, cols)
        if len(p.rows) != len(p.cols):
            raise _err(f"{len(p.rows)} rows and {len(p.cols)} cols: lengths differ")
        p._check()
        return p

    @classmethod
    def from_coords(cls, height, width, coords, _x=None):
        """Pixels from the bytes of an i32 `[n, 2]` (row, col) array; checked as `new`."""
        both = array.array("i")
        both.frombytes(coords)
        p = cls(height, width, both[0::2], both[1::2], coords=bytes(coords))
        if _x is not None:
            lo = _lanes.ones(len(p)) * 0xFFFFFFFF
            p._lanes = (_x & lo, (_x >> 32) & lo)
        p._check()
        return p

    def _check(self):
        n = len(self)
        if not n:
            return
        r, c = self.lanes()
        bad = _lanes.ge(r, self.height, n) | _lanes.ge(c, self.width, n)  # negatives are huge as u32
        i = _lanes.first(bad, n)
        if i is not None:
            raise _err(f"pixel {i} at ({self.rows[i]}, {self.cols[i]}) is outside the {self.height}x{self.width} image")

    @classmethod
    def above(cls, plane, threshold):
        """The pixels of an f32 `[height, width]` plane strictly above
        `threshold`, row-major, and their values (f32 `[n]`): the host
        selects them; only their indices enter the plugin."""
        if len(plane.shape) != 2:
            raise PluginError("shape", f"expected a 2-d plane [rows, cols], got shape {list(plane.shape)}")
        if plane.dtype != "f32":
            raise PluginError("dtype", f"expected an f32 plane, got {plane.dtype} of shape {list(plane.shape)}")
        h, w = plane.shape
        indices, values = ops.select_above(plane, threshold)
        flat = indices.to_array()
        w1 = max(w, 1)
        p = cls(h, w, array.array("i", map(floordiv, flat, repeat(w1))), array.array("i", map(mod, flat, repeat(w1))))
        p._flat = flat.tobytes()
        return p, values

    @classmethod
    def from_npz(cls, entries):
        """Reads the sparse `.npz` layout: `pixels` i32 `[n, 2]` (row, col),
        `values` f32 `[n]`, `shape` i64 or i32 `[2]` (height, width). Returns
        the pixels and their values (which stay in the host)."""
        entries = dict(entries)
        for name in ("pixels", "values", "shape"):
            if name not in entries:
                raise _err(f"sparse npz has no array named `{name}` (expected pixels [n,2] i32, values [n] f32, shape [2] i64)")
        shape = entries["shape"]
        if shape.dtype not in ("i64", "i32"):
            raise PluginError("dtype", f"expected a i32 tensor, got {shape.dtype} of shape {list(shape.shape)}")
        dims = shape.to_list()
        if len(dims) != 2:
            raise _err(f"`shape` must hold 2 numbers, got {dims}")
        h, w = dims
        if h <= 0 or w <= 0:
            raise _err(f"`shape` must be positive, got {dims}")
        pixels = entries["pixels"]
        if len(pixels.shape) != 2 or pixels.shape[1] != 2:
            raise _err(f"`pixels` must be [n, 2] (row, col), got shape {list(pixels.shape)}")
        if pixels.dtype != "i32":
            raise PluginError("dtype", f"expected a i32 tensor, got {pixels.dtype} of shape {list(pixels.shape)}")
        coords = pixels.read()
        n = pixels.shape[0]
        x = int.from_bytes(coords, "little")
        if x & (_lanes.ones(n) * 0x8000000080000000):
            raise _err(f"`pixels` holds a negative coordinate {next(v for v in pixels.to_array() if v < 0)}")
        p = cls.from_coords(h, w, coords, _x=x)
        values = entries["values"]
        if values.dtype != "f32" or list(values.shape) != [len(p)]:
            raise _err(f"`values` must be f32 [{len(p)}] (one per pixel), got {values.dtype} of shape {list(values.shape)}")
        return p, values

    def __len__(self):
        return len(self.rows)

    def __eq__(self, other):
        return isinstance(other, Pixels) and (self.height, self.width, self.rows, self.cols) == (other.height, other.width, other.rows, other.cols)

    __hash__ = None

    def __repr__(self):
        return f"Pixels({self.height}x{self.width}, {len(self)} pixels)"

    def coords_bytes(self):
        """The coordinates as the bytes of an i32 `[n, 2]` (row, col) array."""
        if self._coords is None:
            both = array.array("i", bytes(8 * len(self)))
            both[0::2], both[1::2] = self.rows, self.cols
            self._coords = both.tobytes()
        return self._coords

    def lanes(self):
        """Rows and columns as two lane sets (`_lanes`, computed once)."""
        if self._lanes is None:
            self._lanes = _lanes.split_pairs(self.coords_bytes(), len(self))
        return self._lanes

    def index_bytes(self, axis):
        """Rows (`axis` 0) or columns (1) as the bytes of an i64 array (no per-pixel objects)."""
        a = array.array("i", bytes(8 * len(self)))
        a[0::2] = self.rows if axis == 0 else self.cols
        return a.tobytes()

    def flat_bytes(self):
        """Row-major flat index of each pixel, as the bytes of an i64 array (computed once)."""
        if self._flat is None:
            n = len(self)
            r, c = self.lanes()
            self._flat = _lanes.to_bytes(r * self.width + c, n)
        return self._flat

    def flat_indices(self):
        """Row-major flat index of each pixel (`array.array('q')`)."""
        a = array.array("q")
        a.frombytes(self.flat_bytes())
        return a

    def flat_tensor(self):
        """The flat indices as an i64 `[n]` tensor (what the bulk operations take)."""
        return Tensor.from_bytes("i64", [len(self)], self.flat_bytes())

    def first_duplicate(self):
        """Index of the first pixel that repeats an earlier one, or None. The
        host checks: pixel numbers scattered onto a zero plane and gathered
        back come back unchanged unless two pixels share a place (the plane
        is then reused by `to_dense`, which overwrites exactly those places)."""
        n = len(self)
        if n < 2:
            return None
        if self.height * self.width <= _PLANE_MAX and n < 1 << 24:
            ids = _numbers(n)
            flat = self.flat_tensor()
            plane = Tensor.zeros("f32", [self.height, self.width])
            ops.scatter(plane, flat, Tensor.from_bytes("f32", [n], ids))
            if ops.gather(plane, flat).read() == ids:
                self._plane = plane
                return None
        seen = set()
        for i, f in enumerate(self.flat_indices()):
            if f in seen:
                return i
            seen.add(f)
        return None

    def to_dense(self, values):
        """The dense f32 `[height, width]` image of `values` (one per pixel;
        others 0; a repeated pixel keeps its last value), scattered by the host."""
        out, self._plane = self._plane, None
        if out is None or values.dtype != "f32":
            out = Tensor.zeros("f32", [self.height, self.width])
        ops.scatter(out, self.flat_tensor(), values)
        return out

    def coords(self):
        """The coordinates as an i32 `[n, 2]` (row, col) tensor."""
        return Tensor.from_bytes("i32", [len(self), 2], self.coords_bytes())

    def encode(self, w):
        """Appends the pixels to a `context.Writer` (the Rust SDK's layout)."""
        w.u64(self.height).u64(self.width).array(self.rows).array(self.cols)

    @classmethod
    def decode(cls, r):
        """Reads pixels written by `encode` from a `context.Reader`. The
        context is this plugin's own (the host hands it back unchanged), so
        the pixels were checked when it was written: only the lengths are
        checked again (every later lookup is bounds-checked by the host)."""
        h, w = r.u64(), r.u64()
        rows, cols = r.array("i"), r.array("i")
        if len(rows) != len(cols):
            raise _err(f"{len(rows)} rows and {len(cols)} cols: lengths differ")
        return cls(h, w, rows, cols)


#: Planes up to this many elements are used for the host's duplicate check.
_PLANE_MAX = 1 << 26
_NUMBERS = [b""]


def _numbers(n):
    """The f32 bytes of 1..n (exact below 2**24; kept, grown as needed)."""
    if len(_NUMBERS[0]) < 4 * n:
        _NUMBERS[0] = array.array("f", range(1, max(n, 2 * len(_NUMBERS[0]) // 4) + 1)).tobytes()
    return _NUMBERS[0][:4 * n]
