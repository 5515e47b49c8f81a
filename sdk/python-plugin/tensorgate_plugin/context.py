"""A small binary codec for the opaque context `preprocess` hands to
`postprocess`, byte for byte the Rust SDK's (`context.rs`): u64 numbers,
strings, metadata, and numeric arrays 8-byte aligned."""

import array
import struct

from .errors import PluginError


def _err(message):
    return PluginError("context", f"corrupt plugin context: {message}")


class Writer:
    """Builds a context; `finish()` gives its bytes (or pass the writer to `Prepared`)."""

    def __init__(self):
        self.buf = bytearray()

    def u64(self, v):
        """Appends a number."""
        self.buf += struct.pack("<Q", v)
        return self

    def str(self, s):
        """Appends a string."""
        b = s.encode()
        self.u64(len(b))
        self.buf += b
        return self

    def meta(self, entries):
        """Appends key/value metadata (`[(key, value)]` or a dict)."""
        entries = list(entries.items()) if isinstance(entries, dict) else list(entries)
        self.u64(len(entries))
        for k, v in entries:
            self.str(k).str(v)
        return self

    def array(self, values, typecode=None):
        """Appends a numeric array (an `array.array`, or values with `typecode`), 8-byte aligned."""
        if not isinstance(values, array.array):
            values = array.array(typecode, values)
        self.u64(len(values))
        self.buf += bytes(-len(self.buf) % 8)
        self.buf += values.tobytes()
        return self

    def finish(self):
        """The encoded bytes."""
        return bytes(self.buf)


class Reader:
    """Reads a context in the order it was written."""

    def __init__(self, buf):
        self.buf, self.pos = memoryview(bytes(buf)), 0

    def _take(self, n):
        if n < 0 or self.pos + n > len(self.buf):
            raise _err("ends early")
        s = self.buf[self.pos:self.pos + n]
        self.pos += n
        return s

    def u64(self):
        """Reads a number."""
        return struct.unpack("<Q", self._take(8))[0]

    def str(self):
        """Reads a string."""
        try:
            return bytes(self._take(self.u64())).decode()
        except UnicodeDecodeError:
            raise _err("string is not UTF-8") from None

    def meta(self):
        """Reads metadata written by `Writer.meta`, as a list of pairs."""
        return [(self.str(), self.str()) for _ in range(self.u64())]

    def array(self, typecode):
        """Reads a numeric array written by `Writer.array` as an `array.array` of `typecode`."""
        n = self.u64()
        self.pos += -self.pos % 8
        a = array.array(typecode)
        if n > len(self.buf):
            raise _err("ends early")
        a.frombytes(self._take(n * a.itemsize))
        return a
