"""`Tensor`: a dense, C-contiguous, little-endian tensor. In a plugin it
lives in the host (contract 0.2): the plugin holds a handle, reads and
writes element ranges, and hands it to the model or to a bulk operation
(`tensorgate_plugin.ops`) by handle. Natively the same class holds its
bytes itself and the operations run in place, with the host's semantics.

Every `read`/`write`/`to_list` crosses the component boundary in a plugin:
read what the plugin's logic needs (indices, a few scores), and let the
host move bulk data."""

import array
import sys

from . import _wit
from .errors import PluginError, host_call

#: dtype name -> (element size, `array` typecode or None for bool).
DTYPES = {"f32": (4, "f"), "f64": (8, "d"), "i64": (8, "q"), "i32": (4, "i"), "u8": (1, "B"), "bool": (1, None)}
_ALIASES = {"float32": "f32", "float64": "f64", "int64": "i64", "int32": "i32", "uint8": "u8", "boolean": "bool", "bool_": "bool"}
_U64 = 1 << 64

if sys.byteorder != "little":  # pragma: no cover  (wasm32 and x86-64 are little-endian)
    raise ImportError("tensorgate_plugin needs a little-endian machine")
if array.array("q").itemsize != 8 or array.array("i").itemsize != 4:  # pragma: no cover
    raise ImportError("tensorgate_plugin needs 8-byte 'q' and 4-byte 'i' arrays")

if not _wit.NATIVE:
    _T = _wit.types
    _TO_WIT = {"f32": _T.Dtype.F32, "f64": _T.Dtype.F64, "i64": _T.Dtype.I64, "i32": _T.Dtype.I32, "u8": _T.Dtype.U8, "bool": _T.Dtype.BOOLEAN}
    _FROM_WIT = {v: k for k, v in _TO_WIT.items()}


def dtype_name(dtype):
    """The SDK's name (`f32`, `f64`, `i64`, `i32`, `u8`, `bool`) of `dtype`
    (also accepts NumPy-style names such as `float32`); a `dtype` error otherwise."""
    if dtype in DTYPES:
        return dtype
    if dtype in _ALIASES:
        return _ALIASES[dtype]
    if not _wit.NATIVE and dtype in _FROM_WIT:
        return _FROM_WIT[dtype]
    raise PluginError("dtype", f"unknown dtype {dtype!r} (use f32, f64, i64, i32, u8 or bool)")


def itemsize(dtype):
    """Bytes per element of `dtype`."""
    return DTYPES[dtype_name(dtype)][0]


def check_shape(dtype, shape):
    """The shape as a list of ints, and its element count; a `shape` error
    if a dimension is negative or the byte size does not fit in 64 bits."""
    try:
        shape = [int(d) for d in shape]
    except (TypeError, ValueError):
        raise PluginError("shape", f"a shape is a list of integers, got {shape!r}") from None
    n = 1
    for d in shape:
        n *= d
    if any(d < 0 for d in shape):
        raise PluginError("shape", f"shape {shape} has a negative dimension")
    if n * DTYPES[dtype][0] >= _U64:
        raise PluginError("shape", f"a {dtype} tensor of shape {shape} is too large")
    return shape, n


def to_bytes(dtype, values):
    """Little-endian element bytes of `values` (an iterable of numbers, or an
    `array.array` of the dtype's typecode: then without a copy per element)."""
    dtype = dtype_name(dtype)
    code = DTYPES[dtype][1]
    if code is None:
        return bytes(1 if v else 0 for v in values)
    if isinstance(values, array.array) and values.typecode == code:
        return values.tobytes()
    try:
        return array.array(code, values).tobytes()
    except (TypeError, OverflowError) as e:
        raise PluginError("dtype", f"values do not fit a {dtype} tensor: {e}") from None


def from_bytes_list(dtype, data):
    """Elements of `data` (little-endian bytes of `dtype`) as an `array.array` (bool: a list)."""
    code = DTYPES[dtype][1]
    if code is None:
        return [b != 0 for b in data]
    a = array.array(code)
    a.frombytes(data)
    return a


class Tensor:
    """A dense tensor of `dtype` (`f32`, `f64`, `i64`, `i32`, `u8`, `bool`)
    and `shape`, held by the host in a plugin (natively: by itself). Made
    with `Tensor.zeros`, `Tensor.from_bytes`, `Tensor.from_list`, a payload
    view (`Item.npy`, `Item.npz`) or an operation (`tensorgate_plugin.ops`)."""

    __slots__ = ("_dtype", "_shape", "_handle", "_data")

    def __init__(self, dtype, shape, handle=None, data=None):
        """Internal: use `zeros`, `from_bytes` or `from_list`."""
        self._dtype = dtype
        self._shape = tuple(shape)
        self._handle = handle
        self._data = data

    @classmethod
    def zeros(cls, dtype, shape):
        """A zero-filled tensor (the host may refuse it: past the call's tensor caps)."""
        dtype = dtype_name(dtype)
        shape, n = check_shape(dtype, shape)
        if _wit.NATIVE:
            return cls(dtype, shape, data=bytearray(n * DTYPES[dtype][0]))
        return cls(dtype, shape, handle=host_call(_wit.types.Tensor.zeros, _TO_WIT[dtype], shape))

    @classmethod
    def from_bytes(cls, dtype, shape, data):
        """A tensor holding `data`: little-endian element bytes, exactly as many as the shape needs."""
        dtype = dtype_name(dtype)
        shape, n = check_shape(dtype, shape)
        need = n * DTYPES[dtype][0]
        if len(data) != need:
            raise PluginError("shape", f"a {dtype} tensor of shape {shape} needs {need} bytes, got {len(data)}")
        if _wit.NATIVE:
            return cls(dtype, shape, data=bytearray(data))
        return cls(dtype, shape, handle=host_call(_wit.types.Tensor.from_bytes, _TO_WIT[dtype], shape, bytes(data)))

    @classmethod
    def from_list(cls, dtype, shape, values):
        """A tensor of `shape` holding `values` (a flat sequence or
        `array.array`, as many as the shape needs)."""
        return cls.from_bytes(dtype, shape, to_bytes(dtype, values))

    @classmethod
    def _from_handle(cls, handle, dtype=None, shape=None):
        """Takes over a tensor the host handed in (a model output, a kept
        tensor, an operation's result). Its dtype and shape are asked of the
        host when first used (two calls saved for a tensor passed on as it
        is), unless given."""
        t = cls.__new__(cls)
        t._handle, t._data = handle, None
        if dtype is not None:
            t._dtype, t._shape = dtype, tuple(shape)
        return t

    def __getattr__(self, name):
        # Only reached for `_dtype` / `_shape` not fetched yet (see `_from_handle`).
        if name not in ("_dtype", "_shape"):
            raise AttributeError(name)
        h = self._handle
        if h is None:
            raise PluginError("handle", "this tensor was already handed to the host")
        self._dtype, self._shape = _FROM_WIT[h.dtype()], tuple(h.shape())
        return object.__getattribute__(self, name)

    def _take_handle(self):
        """The handle, given up to the host (a model input, a reply array)."""
        h, self._handle = self._handle, None
        if h is None:
            raise PluginError("handle", "this tensor was already handed to the host")
        return h

    @property
    def dtype(self):
        """The element type's name (`f32`, ...)."""
        return self._dtype

    @property
    def shape(self):
        """The dimensions, the batch dimension first (a tuple)."""
        return self._shape

    @property
    def numel(self):
        """The number of elements."""
        n = 1
        for d in self._shape:
            n *= d
        return n

    @property
    def itemsize(self):
        """Bytes per element."""
        return DTYPES[self._dtype][0]

    def __repr__(self):
        return f"Tensor({self._dtype}, {list(self._shape)})"

    def _range_error(self, start, count):
        return PluginError("range", f"elements {start}..{start}+{count} are outside the tensor's {self.numel} (shape {list(self._shape)})")

    def read(self, start=0, count=None):
        """The bytes of elements `start .. start + count` (default: to the end)."""
        n = self.numel
        if count is None:
            count = max(n - start, 0)
        if start < 0 or count < 0:
            raise self._range_error(start, count)
        if _wit.NATIVE:
            if start + count > n:
                raise self._range_error(start, count)
            size = self.itemsize
            return bytes(self._data[start * size:(start + count) * size])
        return host_call(self._handle.read, start, count)

    def write(self, start, data):
        """Overwrites elements from `start` on with `data` (little-endian bytes
        of whole elements; or an `array.array`/list of values of the dtype)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            data = to_bytes(self._dtype, data)
        size = self.itemsize
        if len(data) % size:
            raise PluginError("range", f"{len(data)} bytes are not whole {self._dtype} elements")
        count = len(data) // size
        if start < 0:
            raise self._range_error(start, count)
        if _wit.NATIVE:
            if start + count > self.numel:
                raise self._range_error(start, count)
            self._data[start * size:(start + count) * size] = data
            return
        host_call(self._handle.write, start, bytes(data))

    def to_array(self, start=0, count=None):
        """Elements `start .. start + count` as an `array.array` (bool: a list of bools)."""
        return from_bytes_list(self._dtype, self.read(start, count))

    def to_list(self, start=0, count=None):
        """Elements `start .. start + count` (default: all) as a list of Python numbers."""
        a = self.to_array(start, count)
        return a if isinstance(a, list) else a.tolist()

    def item(self):
        """The value of a one-element tensor."""
        if self.numel != 1:
            raise PluginError("shape", f"item() needs a one-element tensor, got shape {list(self._shape)}")
        return self.to_list()[0]

    def reshape(self, shape):
        """Gives the tensor another shape of the same element count (no copy); returns it."""
        new, n = check_shape(self._dtype, shape)
        if n != self.numel:
            raise PluginError("shape", f"cannot reshape {list(self._shape)} ({self.numel} elements) to {new}")
        if not _wit.NATIVE:
            host_call(self._handle.reshape, new)
        self._shape = tuple(new)
        return self

    def expect(self, what, dtype=None, rank=None):
        """Checks the dtype and/or rank, naming the tensor (`what`) in the error; returns it."""
        if dtype is not None and self._dtype != dtype_name(dtype):
            raise PluginError("dtype", f"{what} must be {dtype_name(dtype)}, got {self._dtype} of shape {list(self._shape)}")
        if rank is not None and len(self._shape) != rank:
            raise PluginError("shape", f"{what} must have {rank} dimensions, got shape {list(self._shape)}")
        return self

    def __eq__(self, other):
        """Same dtype, shape and elements (in a plugin: read from the host)."""
        if not isinstance(other, Tensor):
            return NotImplemented
        return self._dtype == other._dtype and self._shape == other._shape and self.read() == other.read()

    __hash__ = None
