"""The host's bulk operations on tensors (WIT interface `ops`): in a plugin
they run in the host, so the data never enters the plugin's memory;
natively they run here with the host's checks, error codes and messages
(`sdk/ops`). Indices are i64 tensors of any shape, read as flat row-major
element indices. See docs/plugin-contract.md for each one's cost."""

import struct

from . import _wit
from .errors import PluginError, host_call
from .tensor import DTYPES, Tensor

_U64 = 1 << 64


def _op(message):
    return PluginError("op", message)


def _indices(t, what):
    if t.dtype != "i64":
        raise _op(f"{what} must be an i64 tensor, got {t.dtype} of shape {list(t.shape)}")
    return memoryview(t._data).cast("q")


def _checked(indices, n):
    for pos, i in enumerate(indices):
        if i < 0 or i >= n:
            raise _op(f"indices[{pos}] = {i} is outside 0..{n}")


def select_above(source, threshold):
    """The elements of an f32 `source` strictly above `threshold` (NaN never
    is): `(indices, values)`, i64 `[n]` flat indices, ascending, and f32 `[n]`."""
    if not _wit.NATIVE:
        s = host_call(_wit.ops.select_above, source._handle, float(threshold))
        return Tensor._from_handle(s.indices), Tensor._from_handle(s.values)
    if source.dtype != "f32":
        raise _op(f"select-above needs an f32 source, got {source.dtype} of shape {list(source.shape)}")
    t = struct.unpack("<f", struct.pack("<f", float(threshold)))[0]  # the contract passes an f32
    v = memoryview(source._data).cast("f")
    idx = [i for i, x in enumerate(v) if x > t]
    vals = b"".join(bytes(source._data[4 * i:4 * i + 4]) for i in idx)
    return Tensor.from_list("i64", [len(idx)], idx), Tensor.from_bytes("f32", [len(idx)], vals)


def gather(source, indices, count=1, stride=1):
    """A new `[n, count]` tensor of the source's dtype for `n` indices:
    `out[i, k] = source[indices[i] + k * stride]`; `count >= 1`, and every
    index must leave room for its last element."""
    if not _wit.NATIVE:
        return Tensor._from_handle(host_call(_wit.ops.gather, source._handle, indices._handle, count, stride))
    at = _indices(indices, "gather's indices")
    if count < 1:
        raise _op("gather needs count >= 1")
    span = (count - 1) * stride
    if span >= _U64:
        raise _op(f"count {count} x stride {stride} overflows")
    _checked(at, max(source.numel - span, 0))
    size = source.itemsize
    src = source._data
    out = bytearray()
    for i in at:
        for k in range(count):
            p = (i + k * stride) * size
            out += src[p:p + size]
    return Tensor(source.dtype, [len(at), count], data=out)


def scatter(target, indices, values):
    """`target[indices[i]] = values[i]` for every `i`, in order (a repeated
    index keeps the last value); `values` has the target's dtype and one
    element per index; `target` may not also be an argument read from."""
    if not _wit.NATIVE:
        host_call(_wit.ops.scatter, target._handle, indices._handle, values._handle)
        return
    if target is indices or target is values:
        raise _op("the target tensor is also an argument read from; pass another tensor")
    at = _indices(indices, "scatter's indices")
    if values.dtype != target.dtype:
        raise _op(f"scatter's values are {values.dtype}, the target is {target.dtype}")
    if len(at) != values.numel:
        raise _op(f"indices and values differ in length: {len(at)} and {values.numel}")
    _checked(at, target.numel)
    size = target.itemsize
    dst, src = target._data, values._data
    for n, i in enumerate(at):
        dst[i * size:(i + 1) * size] = src[n * size:(n + 1) * size]


def copy_region(source, source_at, target, target_at, size):
    """Copies the box of `size` at `source_at` in `source` to `target_at` in
    `target`: same rank, same dtype, the box inside both."""
    source_at, target_at, size = [int(v) for v in source_at], [int(v) for v in target_at], [int(v) for v in size]
    if not _wit.NATIVE:
        host_call(_wit.ops.copy_region, source._handle, source_at, target._handle, target_at, size)
        return
    if target is source:
        raise _op("the target tensor is also an argument read from; pass another tensor")
    if source.dtype != target.dtype:
        raise _op(f"copy-region's source is {source.dtype}, the target is {target.dtype}")
    ss, ts = list(source.shape), list(target.shape)
    rank = len(size)
    if rank == 0 or any(len(x) != rank for x in (ss, source_at, ts, target_at)):
        raise PluginError("op", f"copy_region needs one rank for every argument: source shape {ss}, from {source_at}, target shape {ts}, to {target_at}, size {size}")
    for what, shape, at in (("source", ss, source_at), ("target", ts, target_at)):
        for d in range(rank):
            if at[d] < 0 or at[d] + size[d] > shape[d] or at[d] + size[d] >= _U64:
                raise _op(f"the box of size {size} at {at} leaves the {what} of shape {shape} in dimension {d}")
    if any(s == 0 for s in size):
        return
    e = source.itemsize

    def strides(shape):
        st = [1] * rank
        for d in range(rank - 2, -1, -1):
            st[d] = st[d + 1] * shape[d + 1]
        return st

    sst, tst = strides(ss), strides(ts)
    run = size[-1] * e
    pos = [0] * (rank - 1)
    src, dst = source._data, target._data
    while True:
        s = source_at[-1] + sum((source_at[d] + pos[d]) * sst[d] for d in range(rank - 1))
        t = target_at[-1] + sum((target_at[d] + pos[d]) * tst[d] for d in range(rank - 1))
        dst[t * e:t * e + run] = src[s * e:s * e + run]
        d = rank - 1
        while True:
            if d == 0:
                return
            d -= 1
            pos[d] += 1
            if pos[d] < size[d]:
                break
            pos[d] = 0


_LAYOUTS = ("keys-values", "records", "records-strict")
if not _wit.NATIVE:
    from .tensor import _TO_WIT

    _WIT_LAYOUTS = {"keys-values": _wit.ops.JsonLayout.KEYS_VALUES, "records": _wit.ops.JsonLayout.RECORDS,
                    "records-strict": _wit.ops.JsonLayout.RECORDS_STRICT}


def _payload(item_or_payload):
    return getattr(item_or_payload, "payload", item_or_payload)


def json_rows(item, keys, layout="keys-values", dtype="f32"):
    """The numbers of a JSON item (an `Item` or its `Payload`) by key, as an
    `[n, len(keys)]` tensor of `dtype` (f32, f64, i64, i32), parsed by the
    host: the Python code never walks the values. `layout`:
    `"keys-values"` (`{"keys": [...], "values": [...]}`, one row, every key
    exactly once), `"records"` (one `{key: number}` record or a list of
    them, a row each; other keys ignored) or `"records-strict"` (other keys
    refused). Errors name the key and record, with the codes
    `malformed-json`, `length-mismatch`, `duplicate-key`, `unknown-key`,
    `missing-key`, `not-a-number`."""
    r = json_rows_each([item], keys, layout, dtype)[0]
    if isinstance(r, PluginError):
        raise r
    return r


def json_rows_each(items, keys, layout="keys-values", dtype="f32"):
    """`json_rows` for each of a group's items in one host call: a list with
    a `Tensor` or a `PluginError` per item (for `preprocess_batch`)."""
    from .tensor import dtype_name

    if layout not in _LAYOUTS:
        raise _op(f"json_rows layout must be one of {', '.join(_LAYOUTS)}, not {layout!r}")
    if dtype != "f32":
        dtype = dtype_name(dtype)
        if dtype not in ("f32", "f64", "i64", "i32"):
            raise _op(f"json-rows makes f32, f64, i64 or i32 tensors, not {dtype}")
    if type(keys) is not list:
        keys = [str(k) for k in keys]
    payloads = [_payload(i) for i in items]
    if _wit.NATIVE:
        out = []
        for p in payloads:
            try:
                out.append(_json_rows_native(p.read(), keys, layout, dtype))
            except PluginError as e:
                out.append(e)
        return out
    results = _wit.ops.json_rows([p._handle for p in payloads], keys, _WIT_LAYOUTS[layout], _TO_WIT[dtype])
    # One row for keys-values: the shape is known without asking the host.
    shape = (1, len(keys)) if layout == "keys-values" else None
    return [Tensor._from_handle(r.value, dtype, shape) if shape and isinstance(r, _wit.Ok) else
            Tensor._from_handle(r.value) if isinstance(r, _wit.Ok) else PluginError(r.value.code, r.value.message)
            for r in results]


def scores_json_each(scores, labels):
    """Each item's f32 scores (a `Tensor`, `[1, L]` or `[L]`) as its
    `{label: score}` JSON reply (bytes) in `labels` order, written by the
    host in one call for the group: a list with bytes or a `PluginError`
    (code `labels`, when the count differs from the labels') per item."""
    labels = list(labels)
    if not _wit.NATIVE:
        return [bytes(r.value) if isinstance(r, _wit.Ok) else PluginError(r.value.code, r.value.message)
                for r in _wit.ops.scores_json([t._handle for t in scores], labels)]
    import json

    from . import labels as _labels

    out = []
    for t in scores:
        try:
            values = t.to_list()
            _labels.check(labels, len(values))
            out.append(json.dumps(dict(zip(labels, values)), separators=(",", ":")).encode())
        except PluginError as e:
            out.append(e)
    return out


def _json_rows_native(data, keys, layout, dtype):
    import json

    def fail(code, message):
        raise PluginError(code, message)

    want = 'want {"keys": [...], "values": [...]}'
    try:
        req = json.loads(bytes(data))
    except ValueError as e:
        fail("malformed-json", f"item is not the expected JSON: {want} ({e})" if layout == "keys-values" else f"item is not JSON: {e}")
    cast = float if dtype in ("f32", "f64") else int
    if layout == "keys-values":
        if not isinstance(req, dict) or set(req) != {"keys", "values"} or not isinstance(req["keys"], list) or not isinstance(req["values"], list):
            fail("malformed-json", f"item is not the expected JSON: {want}")
        k, v = req["keys"], req["values"]
        if len(k) != len(v):
            fail("length-mismatch", f"{len(k)} keys but {len(v)} values")
        for j in range(1, len(k)):
            if k[j] in k[:j]:
                fail("duplicate-key", f"key `{k[j]}` appears more than once")
        for key in k:
            if key not in keys:
                fail("unknown-key", "unknown key `%s`; expected [%s]" % (key, ", ".join(json.dumps(f) for f in keys)))
        given = dict(zip(k, v))
        for f in keys:
            if f not in given:
                fail("missing-key", f"missing key `{f}`")
        return Tensor.from_list(dtype, [1, len(keys)], [cast(given[f]) for f in keys])
    records = [req] if isinstance(req, dict) else req
    if not isinstance(records, list):
        fail("malformed-json", "item is not a record or a list of records")
    row = []
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            fail("malformed-json", f"record {i} is not an object")
        if layout == "records-strict":
            for key in r:
                if key not in keys:
                    fail("unknown-key", "record %d: unknown key `%s`; expected [%s]" % (i, key, ", ".join(json.dumps(f) for f in keys)))
        for key in keys:
            if key not in r:
                fail("missing-key", f"record {i}: missing key `{key}`")
            if isinstance(r[key], bool) or not isinstance(r[key], (int, float)):
                fail("not-a-number", f"record {i}: `{key}` is not a number")
            row.append(cast(r[key]))
    return Tensor.from_list(dtype, [len(records), len(keys)], row)


def pad_jagged(values, lengths, max_len):
    """Pads `n` jagged lists stored one after another in `values` (`[total,
    ...]`, i64 `lengths` `[n]` summing to `total`) to `max_len` elements
    each, in the host: `(padded, mask)`, `[n, max_len, ...]` (zeros after
    each list; a longer list keeps its first `max_len`) and `[n, max_len]`
    (1 for an element, 0 for padding), both of the values' dtype."""
    if not _wit.NATIVE:
        p = host_call(_wit.ops.pad_jagged, values._handle, lengths._handle, int(max_len))
        return Tensor._from_handle(p.values), Tensor._from_handle(p.mask)
    lens = list(_indices(lengths, "pad-jagged's lengths"))
    shape = list(values.shape)
    if not shape:
        raise _op("pad-jagged's values need a leading dimension (the lists' elements, one after another)")
    if any(n < 0 for n in lens):
        raise _op("pad-jagged's lengths must not be negative")
    if sum(lens) != shape[0]:
        raise _op(f"the sum of lengths and the values' rows differ in length: {sum(lens)} and {shape[0]}")
    row = values.itemsize
    for d in shape[1:]:
        row *= d
    src = bytes(values._data)
    out, mask = bytearray(), []
    at = 0
    for n in lens:
        keep = min(n, max_len)
        out += src[at * row:(at + keep) * row] + bytes((max_len - keep) * row)
        mask += [1] * keep + [0] * (max_len - keep)
        at += n
    return Tensor(values.dtype, [len(lens), max_len] + shape[1:], data=out), Tensor.from_list(values.dtype, [len(lens), max_len], mask)


def tile_pixels(pixels, values, height, width, tile, overlap):
    """Lays sparse pixels (`pixels` i32 or i64 `[n, 2]` row, col; `values`
    f32 `[n]`) over the tiles of a `height` x `width` plane, in the host:
    `(input, tiles)`, the f32 `[m, 1, tile, tile]` input of the tiles that
    hold a pixel and their grid indices, i64 `[m]` (the grid and rules of
    `tiles`). A pixel outside the plane fails (code `tiles`), one listed
    twice too (code `duplicate-pixel`)."""
    if not _wit.NATIVE:
        t = host_call(_wit.ops.tile_pixels, pixels._handle, values._handle, int(height), int(width), int(tile), int(overlap))
        return Tensor._from_handle(t.input), Tensor._from_handle(t.tiles)
    from .tiles import TiledPixels

    px = _native_pixels(pixels, height, width)
    i = px.first_duplicate()
    if i is not None:
        raise PluginError("duplicate-pixel", f"pixel {i} at ({px.rows[i]}, {px.cols[i]}) is listed twice")
    tiled = TiledPixels(px, tile, overlap)
    return tiled.input(values), Tensor.from_list("i64", [len(tiled.tiles)], list(tiled.tiles))


def untile_pixels(output, pixels, tiles, height, width, tile, overlap):
    """Stitches a model's per-pixel output `[m, C, tile, tile]` for the tiles
    `tile_pixels` returned back to f32 `[n, C]`, in the host: each pixel of
    `pixels`, in order, takes the values of the tile that owns it."""
    if not _wit.NATIVE:
        return Tensor._from_handle(host_call(_wit.ops.untile_pixels, output._handle, pixels._handle, tiles._handle,
                                             int(height), int(width), int(tile), int(overlap)))
    from .tiles import TiledPixels

    tiled = TiledPixels(_native_pixels(pixels, height, width), tile, overlap, tiles=list(_indices(tiles, "untile-pixels' tiles")))
    return tiled.gather(output)


def _native_pixels(pixels, height, width):
    from .sparse import Pixels

    if len(pixels.shape) != 2 or pixels.shape[1] != 2 or pixels.dtype not in ("i32", "i64"):
        raise PluginError("tiles", f"`pixels` must be i32 or i64 [n, 2] (row, col), got {pixels.dtype} of shape {list(pixels.shape)}")
    flat = list(memoryview(pixels._data).cast("q" if pixels.dtype == "i64" else "i"))
    rows, cols = flat[0::2], flat[1::2]
    for i, (r, c) in enumerate(zip(rows, cols)):
        if r < 0 or c < 0:
            raise PluginError("tiles", f"`pixels` holds a negative coordinate {min(r, c)}")
        if r >= height or c >= width:
            raise PluginError("tiles", f"pixel {i} at ({r}, {c}) is outside the {height}x{width} plane")
    return Pixels(height, width, rows, cols)
