"""`Payload` (the item's bytes, held by the host in a plugin) and `Item`."""

import json

from . import _wit, npy
from .errors import PluginError, host_call
from .tensor import DTYPES, Tensor, check_shape, dtype_name

if not _wit.NATIVE:
    from .tensor import _TO_WIT


class Payload:
    """The bytes of one item, valid during its `preprocess` call. In a plugin
    they stay in the host: read the ranges you need, or ask for tensors made
    of them (`npy`, `npz`, `tensor`) without the bulk entering the plugin."""

    __slots__ = ("_handle", "_data", "_len")

    def __init__(self, handle=None, data=None):
        """Internal: the SDK makes payloads (natively: `native_item`)."""
        self._handle, self._data = handle, data
        if handle is None:
            self._len = len(data)

    def __getattr__(self, name):
        # `_len` of a host payload, asked for when first needed (one call saved
        # for an item handed whole to a host operation).
        if name != "_len":
            raise AttributeError(name)
        self._len = self._handle.len()
        return self._len

    def __len__(self):
        return self._len

    @property
    def len(self):
        """Length in bytes."""
        return self._len

    def read(self, offset=0, length=None):
        """Bytes `offset .. offset + length` (default: to the end)."""
        if length is None:
            length = max(self._len - offset, 0)
        if offset < 0 or length < 0 or offset + length > self._len:
            raise PluginError("range", f"bytes {offset}..{offset}+{length} are outside the item's {self._len}")
        if self._handle is None:
            return bytes(self._data[offset:offset + length])
        return host_call(self._handle.read, offset, length)

    def tensor(self, offset, dtype, shape):
        """A tensor of `dtype` and `shape` made of the bytes from `offset` on (no copy into the plugin)."""
        dtype = dtype_name(dtype)
        shape, n = check_shape(dtype, shape)
        need = n * DTYPES[dtype][0]
        if offset < 0 or offset + need > self._len:
            raise PluginError("range", f"a {dtype} tensor of shape {shape} ({need} bytes) at byte {offset} does not fit in the item's {self._len} bytes")
        if self._handle is None:
            return Tensor.from_bytes(dtype, shape, self._data[offset:offset + need])
        return Tensor._from_handle(host_call(self._handle.tensor, offset, _TO_WIT[dtype], shape))

    def npy(self):
        """The payload read as a NumPy `.npy` file (C order): its array. Only
        the header enters the plugin; the host makes a tensor of the body."""
        prefix = self.read(0, min(self._len, npy.PREFIX_LEN))
        end = npy.header_end(prefix)
        head = self.read(0, end) if end <= self._len else prefix
        dtype, shape, start = npy.parse_header(head, self._len)
        return self.tensor(start, dtype, shape)

    def npz(self):
        """The payload read as an uncompressed `.npz` (`numpy.savez`): its
        arrays as `[(name, Tensor)]`, named without `.npy`, in archive order."""
        if self._handle is None:
            return npy.parse_npz(self._data)
        return [(n, Tensor._from_handle(h)) for n, h in host_call(self._handle.npz)]


class Item:
    """One item as the client sent it: `payload` (its bytes, in the host),
    `content_type`, and `metadata` (a dict of strings)."""

    __slots__ = ("payload", "content_type", "metadata", "_data")

    def __init__(self, payload, content_type="", metadata=None):
        """An item of a `Payload` (natively: see `native_item`)."""
        self.payload = payload
        self.content_type = content_type
        self.metadata = dict(metadata or {})
        self._data = None

    @property
    def data(self):
        """All the item's bytes (read from the host once, on first use): for small items."""
        if self._data is None:
            self._data = self.payload.read(0, self.payload.len)
        return self._data

    def json(self):
        """The item parsed as JSON; a `malformed-json` error names the problem and its position."""
        try:
            return json.loads(self.data)
        except (ValueError, UnicodeDecodeError) as e:
            raise PluginError("malformed-json", f"item is not the expected JSON: {e}") from None

    def npy(self):
        """The item as a `.npy` file: its array as a host tensor (`Payload.npy`)."""
        return self.payload.npy()

    def npz(self):
        """The item as an uncompressed `.npz`: `[(name, Tensor)]` (`Payload.npz`)."""
        return self.payload.npz()

    def meta(self, key, default=None):
        """The value of metadata `key`, or `default`."""
        return self.metadata.get(key, default)

    def keep_meta(self, keys):
        """The metadata entries among `keys` that the item carries, in `keys` order."""
        return [(k, self.metadata[k]) for k in keys if k in self.metadata]


def native_item(data, content_type="application/octet-stream", metadata=None):
    """An item of `data` (bytes, or a `str`, a dict/list encoded as JSON) for
    native tests and benchmarks."""
    if isinstance(data, (dict, list)):
        data = json.dumps(data).encode()
        if content_type == "application/octet-stream":
            content_type = "application/json"
    elif isinstance(data, str):
        data = data.encode()
    return Item(Payload(data=bytes(data)), content_type, metadata)
