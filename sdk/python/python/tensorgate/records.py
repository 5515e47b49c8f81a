"""Lists of records (particles, hits, tracks) into the padded arrays and
mask that set- and graph-networks take, with numpy: what the Rust plugin
SDK's `records::pad` does for one item inside a plugin, here for many
events at once on the client.

    values, mask = tensorgate.records.pad(events, max_len=64)
    # values [N, 64, F] float32, zeros past each event's last record
    # mask   [N, 64]    float32, 1 for a record and 0 for padding

Records past `max_len` are dropped: order them first (e.g. by pT).
"""

from __future__ import annotations

from typing import Mapping, Sequence, Tuple

import numpy as np

__all__ = ["pad", "pad_columns"]


def pad(events: Sequence, max_len: int, features: int | None = None,
        dtype=np.float32) -> Tuple[np.ndarray, np.ndarray]:
    """Packs `events` (each a sequence of records of `features` numbers, i.e.
    array-like [n_i, F]; an event may be empty) into `[N, max_len, F]`
    values and a `[N, max_len]` mask. `features` defaults to the first
    non-empty event's record length; an event whose records have another
    length raises ValueError naming the event."""
    if max_len < 1:
        raise ValueError(f"max_len must be at least 1, got {max_len}")
    rows = [np.asarray(e, dtype=dtype) for e in events]
    if features is None:
        features = next((r.shape[1] for r in rows if r.ndim == 2 and r.shape[0] > 0), None)
        if features is None:
            raise ValueError("every event is empty: pass features=F")
    values = np.zeros((len(rows), max_len, features), dtype=dtype)
    mask = np.zeros((len(rows), max_len), dtype=np.float32)
    for i, r in enumerate(rows):
        if r.size == 0:
            continue
        if r.ndim != 2 or r.shape[1] != features:
            raise ValueError(f"event {i} has records of shape {list(r.shape[1:]) or list(r.shape)}, "
                             f"expected {features} values each")
        n = min(r.shape[0], max_len)
        values[i, :n] = r[:n]
        mask[i, :n] = 1.0
    return values, mask


def pad_columns(columns: Mapping[str, Sequence], max_len: int,
                dtype=np.float32) -> Tuple[np.ndarray, np.ndarray]:
    """Like `pad`, from one jagged column per feature, e.g. what
    `uproot`'s `tree.arrays(["PFCands_pt", "PFCands_eta"], library="np")`
    returns: feature f of the values is `columns[names[f]]`, in the
    mapping's order. Columns whose events hold different record counts
    raise ValueError naming the column and the event."""
    names = list(columns)
    if not names:
        raise ValueError("no columns")
    cols = [list(columns[n]) for n in names]
    n_events = len(cols[0])
    for name, col in zip(names, cols):
        if len(col) != n_events:
            raise ValueError(f"column `{name}` has {len(col)} events, `{names[0]}` has {n_events}")
    values = np.zeros((n_events, max_len, len(names)), dtype=dtype)
    mask = np.zeros((n_events, max_len), dtype=np.float32)
    for i in range(n_events):
        first = np.asarray(cols[0][i], dtype=dtype)
        n = min(first.shape[0], max_len)
        for f, (name, col) in enumerate(zip(names, cols)):
            v = first if f == 0 else np.asarray(col[i], dtype=dtype)
            if v.shape != first.shape:
                raise ValueError(f"column `{name}` event {i} has {v.shape[0]} records, "
                                 f"`{names[0]}` has {first.shape[0]}")
            values[i, :n, f] = v[:n]
        mask[i, :n] = 1.0
    return values, mask
