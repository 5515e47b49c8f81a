"""Lists of records (particles, hits, tracks) into the padded arrays and
mask that set- and graph-networks take (as the Rust SDK's `records`)."""

from .errors import PluginError
from .tensor import Tensor


def pad(records, features, max_records):
    """Packs `records` (each `features` numbers) into `[1, max, features]`
    f32 values and a `[1, max]` f32 mask (1: a record, 0: padding). Records
    past `max` are dropped (order them first); a record of another length
    fails (code `record-length`), naming it."""
    values = [0.0] * (max_records * features)
    mask = [0.0] * max_records
    for i, r in enumerate(records[:max_records]):
        if len(r) != features:
            raise PluginError("record-length", f"record {i} has {len(r)} values, expected {features}")
        values[i * features:(i + 1) * features] = r
        mask[i] = 1.0
    return Tensor.from_list("f32", [1, max_records, features], values), Tensor.from_list("f32", [1, max_records], mask)
