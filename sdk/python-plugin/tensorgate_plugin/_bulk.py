"""C-speed helpers over whole arrays (no per-element Python bytecode)."""

from operator import itemgetter


def lookup(table, keys):
    """`tuple(table[k] for k in keys)`, with the loop in C."""
    keys = keys if hasattr(keys, "__len__") else tuple(keys)
    if len(keys) > 1:
        return itemgetter(*keys)(table)
    return tuple(table[k] for k in keys)


def runs(pieces):
    """A list made of `(value, count)` runs, filled in C."""
    out = []
    for value, count in pieces:
        out += [value] * count
    return out
