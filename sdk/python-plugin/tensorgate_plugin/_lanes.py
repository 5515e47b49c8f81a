"""Whole-array integer arithmetic without a Python object per element: `n`
unsigned 64-bit lanes packed in one Python int (lane `i` is bits
`64 i .. 64 i + 63`), little-endian, so the bytes of an i64/u64 array are
its lanes. Adding, subtracting, multiplying by a small number and masking
then run over all lanes at once in CPython's big-int C loops, as long as
no lane leaves `0 .. 2**64` (the callers keep values under 2**40)."""

_ONES = {}
_TOP = 1 << 32


def ones(n):
    """Every lane 1 (kept per `n`)."""
    v = _ONES.get(n)
    if v is None:
        if len(_ONES) > 8:
            _ONES.clear()
        v = _ONES[n] = int.from_bytes(b"\x01\x00\x00\x00\x00\x00\x00\x00" * n, "little")
    return v


def split_pairs(data, n):
    """The two little-endian u32 halves of `n` 8-byte records (e.g. i32 `(row, col)` pairs) as two lane sets."""
    x = int.from_bytes(data, "little")
    lo = ones(n) * 0xFFFFFFFF
    return x & lo, (x >> 32) & lo


def ge(x, bound, n):
    """Lanes of 1 where `x >= bound`, else 0 (every lane of `x` below 2**32)."""
    if bound <= 0:
        return ones(n)
    if bound > _TOP:
        return 0
    return ((x + (_TOP - bound) * ones(n)) >> 32) & ones(n)


def first(x, n):
    """Index of the first non-zero lane, or None."""
    if not x:
        return None
    low = x & -x  # the lowest set bit
    return (low.bit_length() - 1) // 64


def to_bytes(x, n):
    """The lanes as `n` little-endian 8-byte elements (an i64 array)."""
    return x.to_bytes(8 * n, "little")
