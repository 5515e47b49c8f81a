"""NumPy `.npy` headers, parsed in the plugin (a few hundred bytes), so
that the host makes a tensor of the body without it entering the plugin
(`Item.npy`); natively also whole `.npy` files and uncompressed `.npz`
archives. Errors have code `npy` and the host's messages."""

import struct

from .errors import PluginError

MAGIC = b"\x93NUMPY"
#: Bytes of a `.npy` file that always hold its header length.
PREFIX_LEN = 12
_DESCR = {"<f4": "f32", "<f8": "f64", "<i8": "i64", "<i4": "i32", "|u1": "u8", "<u1": "u8", "|b1": "bool"}
_MAX_DEPTH = 16


def _err(message):
    return PluginError("npy", message)


def descr_dtype(descr):
    """The SDK dtype of a NumPy type string (`<f4` -> `f32`), or an `npy` error."""
    try:
        return _DESCR[descr]
    except KeyError:
        raise _err(f"unsupported dtype '{descr}' (use little-endian f4, f8, i8, i4, u1 or b1)") from None


def dtype_descr(dtype):
    """The NumPy type string of an SDK dtype."""
    return {"f32": "<f4", "f64": "<f8", "i64": "<i8", "i32": "<i4", "u8": "|u1", "bool": "|b1"}[dtype]


def header_end(prefix):
    """Where the header ends (the data starts), from the first `PREFIX_LEN` bytes."""
    if len(prefix) < 6 or prefix[:6] != MAGIC:
        raise _err("not a .npy file (bad magic)")
    if len(prefix) < 8:
        raise _err("npy file ends inside its version")
    major, minor = prefix[6], prefix[7]
    if major == 1:
        start, fmt = 10, "<H"
    elif major in (2, 3):
        start, fmt = 12, "<I"
    else:
        raise _err(f"unsupported .npy version {major}.{minor} (1.0, 2.0 and 3.0 are read)")
    if len(prefix) < start:
        raise _err("npy file ends inside its header length")
    return start + struct.unpack_from(fmt, prefix, 8)[0]


class _Parser:
    """The header's Python dict literal, exactly the literals NumPy writes."""

    def __init__(self, s):
        self.s, self.pos = s, 0

    def bad(self, what):
        return _err(f"malformed npy header: {what} at byte {self.pos}")

    def peek(self):
        s, n = self.s, len(self.s)
        while self.pos < n and s[self.pos] in " \t\n\r\x0b\x0c":
            self.pos += 1
        return s[self.pos] if self.pos < n else None

    def expect(self, c):
        if self.peek() != c:
            raise self.bad(f"expected '{c}'")
        self.pos += 1

    def dict(self):
        self.expect("{")
        out = {}
        while True:
            if self.peek() == "}":
                self.pos += 1
                return out
            key = self.value(0)
            if not isinstance(key, str):
                raise self.bad(f"a dict key is {_what(key)}, not a string")
            self.expect(":")
            out[key] = self.value(0)
            c = self.peek()
            if c == ",":
                self.pos += 1
            elif c != "}":
                raise self.bad("expected ',' or '}'")

    def value(self, depth):
        c = self.peek()
        s = self.s
        if c in ("'", '"'):
            start = self.pos + 1
            end = start
            while end < len(s) and s[end] not in (c, "\\"):
                end += 1
            if end == len(s):
                raise self.bad("unterminated string")
            if s[end] == "\\":
                self.pos = end
                raise self.bad("escape in a string")
            self.pos = end + 1
            return s[start:end]
        if c in ("(", "["):
            if depth >= _MAX_DEPTH:
                raise self.bad("nesting too deep")
            close = ")" if c == "(" else "]"
            self.pos += 1
            items, single_comma = [], False
            while True:
                if self.peek() == close:
                    self.pos += 1
                    break
                items.append(self.value(depth + 1))
                d = self.peek()
                if d == ",":
                    self.pos += 1
                    single_comma = len(items) == 1
                elif d != close:
                    raise self.bad(f"expected ',' or '{close}'")
            if c == "(" and len(items) == 1 and not single_comma:
                return items[0]
            return tuple(items) if c == "(" else items
        if c is not None and c.isdigit():
            start = self.pos
            while self.pos < len(s) and s[self.pos].isdigit():
                self.pos += 1
            n = int(s[start:self.pos])
            if n >= 1 << 64:
                raise self.bad(f"integer {n} too large")
            if s.startswith("L", self.pos):
                self.pos += 1
            return n
        if c == "-":
            raise self.bad("negative integer")
        if c is None:
            raise self.bad("unexpected end of header")
        for word, v in (("True", True), ("False", False), ("None", None)):
            if s.startswith(word, self.pos):
                self.pos += len(word)
                return v
        raise self.bad("unexpected character")


def _what(v):
    if isinstance(v, bool):
        return "a boolean"
    return {str: "a string", int: "an integer", tuple: "a tuple", list: "a list", type(None): "None"}[type(v)]


def parse_header(head, total):
    """`(dtype, shape, data_offset)` of a `.npy` file from its first
    `header_end` bytes (or more); `total` is the file's length, checked
    against the shape. Only C-order arrays of the six dtypes."""
    end = header_end(head)
    if end > len(head) or end > total:
        raise _err("npy file ends inside its header")
    start = 10 if head[6] == 1 else 12
    p = _Parser(bytes(head[start:end]).decode("latin-1"))
    fields = p.dict()
    if p.peek() is not None:
        raise p.bad("text after the closing '}'")
    for key in ("descr", "fortran_order", "shape"):
        if key not in fields:
            raise _err(f"npy header has no '{key}'")
    descr, fortran, shape = fields["descr"], fields["fortran_order"], fields["shape"]
    if isinstance(descr, list):
        raise _err("unsupported dtype '[...]': structured dtypes (records) are not supported")
    if not isinstance(descr, str):
        raise _err(f"malformed npy header: 'descr' is {_what(descr)}, not a type string")
    if fortran is True:
        raise _err("Fortran-order arrays are not supported; save a C-contiguous array")
    if fortran is not False:
        raise _err(f"malformed npy header: 'fortran_order' is {_what(fortran)}, not True or False")
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        bad = shape if not isinstance(shape, tuple) else next(d for d in shape if not isinstance(d, int) or isinstance(d, bool))
        raise _err(f"malformed npy header: 'shape' is {_what(bad)}, not a tuple of integers")
    dtype = descr_dtype(descr)
    shape = list(shape)
    size = {"f32": 4, "f64": 8, "i64": 8, "i32": 4, "u8": 1, "bool": 1}[dtype]
    n = size
    for d in shape:
        n *= d
    if n >= 1 << 64:
        raise _err(f"npy shape {shape} of {size}-byte elements is too large")
    if total - end != n:
        raise _err(f"npy data is {total - end} bytes, shape {shape} of {descr} needs {n}")
    return dtype, shape, end


def parse_npy(data):
    """A whole `.npy` file (bytes) as a `Tensor` (natively; in a plugin use `Item.npy`)."""
    from .tensor import Tensor

    dtype, shape, start = parse_header(data[:header_end(data[:PREFIX_LEN])], len(data))
    return Tensor.from_bytes(dtype, shape, data[start:])


def write_npy(tensor):
    """A version-1 `.npy` file of `tensor` (reads its bytes: small tensors only in a plugin)."""
    shape = tensor.shape
    dims = f"({shape[0]},)" if len(shape) == 1 else "(" + ", ".join(str(d) for d in shape) + ")"
    text = f"{{'descr': '{dtype_descr(tensor.dtype)}', 'fortran_order': False, 'shape': {dims}, }}"
    pad = (64 - (10 + len(text) + 1) % 64) % 64
    text = text + " " * pad + "\n"
    return MAGIC + b"\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin-1") + tensor.read()


def parse_npz(data):
    """An uncompressed `.npz` archive (bytes) as `[(name, Tensor)]`, in
    archive order (natively; in a plugin the host parses it: `Item.npz`)."""
    import io
    import zipfile

    try:
        z = zipfile.ZipFile(io.BytesIO(bytes(data)))
        infos = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise _err(f"not a readable .npz (zip) archive: {e}") from None
    if not infos:
        raise _err("not an .npz archive (no entries)")
    out = []
    for info in infos:
        name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        if info.compress_type != zipfile.ZIP_STORED:
            raise _err(f"npz entry '{name}' is compressed (zip method {info.compress_type}); use numpy.savez, not savez_compressed")
        try:
            out.append((name, parse_npy(z.read(info))))
        except PluginError as e:
            raise _err(f"npz entry '{name}': {e.message}") from None
        except zipfile.BadZipFile as e:
            raise _err(f"npz entry '{name}' is corrupt: {e}") from None
    return out


def write_npz(entries):
    """An uncompressed `.npz` archive of named tensors, as `numpy.load` reads
    (natively; in a plugin reply with `Output.npz` and the host writes it)."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, t in entries:
            z.writestr(name + ".npy", write_npy(t))
    return buf.getvalue()
