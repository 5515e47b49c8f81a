"""Mapping score vectors to the manifest's class labels: checks, top-k,
softmax and sigmoid, and `{label: score}` replies (as the Rust SDK's `labels`)."""

import math
import struct

from .errors import PluginError


def _f32(values):
    """Values rounded to f32, as the Rust SDK computes them."""
    return list(struct.unpack(f"<{len(values)}f", struct.pack(f"<{len(values)}f", *values)))


def check(labels, classes):
    """Checks that the plugin has one score per label (the scores it hands
    these helpers: the model's, or its own), naming both counts and the
    plugin (the manifest's application name, in a component) (code `labels`)."""
    if len(labels) != classes:
        from . import manifest

        configured = manifest._configured
        raise _mismatch(configured.name if configured else "", labels, classes)


def _mismatch(name, labels, classes):
    """The error for `classes` scores against `labels`, from plugin `name` ("": not known)."""
    who = f"plugin `{name}`" if name else "the plugin"
    shown = ", ".join(labels[:8]) + (", ..." if len(labels) > 8 else "")
    return PluginError("labels", f"{who} made {classes} scores per item but the manifest lists {len(labels)} labels ({shown}): "
                       "the scores its postprocess labels must be one per label")


def top_k(labels, scores, k):
    """The `k` highest scores with their labels, best first (ties keep label order)."""
    check(labels, len(scores))
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    return [(labels[i], scores[i]) for i in order[:k]]


def softmax(logits):
    """Softmax of `logits` (stable: the largest is subtracted first), in f32."""
    if not logits:
        return []
    logits = _f32(logits)
    m = max(logits)
    e = _f32([math.exp(x - m) for x in logits])
    s = _f32([math.fsum(e)])[0]
    return _f32([x / s for x in e])


def sigmoid(logits):
    """The logistic sigmoid of each value (independent labels), in f32."""
    out = []
    for x in _f32(logits):
        try:
            out.append(1.0 / (1.0 + math.exp(-x)))
        except OverflowError:
            out.append(0.0)
    return _f32(out)


def scores_map(labels, scores):
    """`{label: score}` in label order; a `labels` error when the counts differ."""
    scores = list(scores)
    check(labels, len(scores))
    return dict(zip(labels, scores))


def softmax_map(labels, logits):
    """`{label: probability}` from one item's logits, through `softmax`."""
    return scores_map(labels, softmax(list(logits)))
