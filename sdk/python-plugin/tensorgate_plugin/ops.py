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
