"""Scores into class labels with numpy, as the Rust plugin SDK's `labels`
module does inside a plugin: softmax, sigmoid, `{label: score}` and top-k.

    probs = tensorgate.labels.softmax(logits)              # [N, C] -> [N, C]
    tensorgate.labels.softmax_map(["qcd", "top"], logits)  # one dict per row
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple, Union

import numpy as np

__all__ = ["check", "softmax", "sigmoid", "scores_map", "softmax_map", "top_k"]


def check(labels: Sequence[str], classes: int) -> None:
    """Raises ValueError naming both counts when `classes` != len(labels)."""
    if classes != len(labels):
        raise ValueError(f"the scores have {classes} classes but there are {len(labels)} labels")


def softmax(logits, axis: int = -1) -> np.ndarray:
    """Softmax along `axis` (numerically stable: the largest is subtracted first)."""
    x = np.asarray(logits)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def sigmoid(logits) -> np.ndarray:
    """The logistic sigmoid of each value (independent labels, multi-label)."""
    x = np.asarray(logits)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    return 1.0 / (1.0 + np.exp(-x))


def scores_map(labels: Sequence[str], scores) -> Union[Dict[str, float], List[Dict[str, float]]]:
    """`{label: score}` in label order: one dict for a 1-d vector, a list of
    dicts (one per row) for a 2-d array. Raises ValueError naming both counts
    when the last dimension is not one score per label."""
    s = np.asarray(scores)
    if s.ndim not in (1, 2):
        raise ValueError(f"expected scores of shape [C] or [N, C], got {list(s.shape)}")
    check(labels, s.shape[-1])
    if s.ndim == 1:
        return {label: float(v) for label, v in zip(labels, s)}
    return [{label: float(v) for label, v in zip(labels, row)} for row in s]


def softmax_map(labels: Sequence[str], logits) -> Union[Dict[str, float], List[Dict[str, float]]]:
    """`{label: probability}` from logits, through `softmax` on the last axis."""
    return scores_map(labels, softmax(logits))


def top_k(labels: Sequence[str], scores, k: int) -> List[Tuple[str, float]]:
    """The `k` highest of one item's scores with their labels, best first
    (ties keep label order)."""
    s = np.asarray(scores)
    if s.ndim != 1:
        raise ValueError(f"expected one item's scores of shape [C], got {list(s.shape)}")
    check(labels, s.shape[0])
    order = np.argsort(-s, kind="stable")[:k]
    return [(labels[i], float(s[i])) for i in order]
