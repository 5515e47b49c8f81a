"""tensorgate.labels and tensorgate.records (the numpy side of the plugin
SDK's `labels` and `records`), and the metadata a failed item carries back."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import tensorgate
from tensorgate import labels, records

ROOT = Path(__file__).resolve().parents[2]


def test_softmax_is_stable_and_matches_its_definition():
    x = np.array([[1.0, 2.0, 3.0], [1000.0, 1000.0, 999.0]], np.float32)
    p = labels.softmax(x)
    assert p.dtype == np.float32 and p.shape == (2, 3)
    want = [math.exp(v) / sum(math.exp(u) for u in (1, 2, 3)) for v in (1, 2, 3)]
    np.testing.assert_allclose(p[0], want, rtol=1e-6)
    assert np.all(np.isfinite(p[1])) and abs(p[1].sum() - 1) < 1e-6, "no overflow at 1000"
    np.testing.assert_allclose(labels.softmax(x[0] + 50), p[0], rtol=1e-5)   # shift-invariant
    np.testing.assert_allclose(labels.softmax(x.T, axis=0), p.T, rtol=1e-6)
    np.testing.assert_allclose(labels.sigmoid([0.0, 2.0]), [0.5, 1 / (1 + math.exp(-2))], rtol=1e-6)


def test_scores_map_names_both_counts_and_top_k_orders():
    names = ["qcd", "top", "w"]
    assert labels.scores_map(names, [0.1, 0.7, 0.2]) == pytest.approx({"qcd": 0.1, "top": 0.7, "w": 0.2})
    rows = labels.softmax_map(names, np.zeros((2, 3)))
    assert len(rows) == 2 and rows[1] == pytest.approx({"qcd": 1 / 3, "top": 1 / 3, "w": 1 / 3})
    with pytest.raises(ValueError, match="the scores have 2 classes but there are 3 labels"):
        labels.scores_map(names, [0.5, 0.5])
    assert labels.top_k(names, [0.2, 0.7, 0.2], 2) == [("top", pytest.approx(0.7)), ("qcd", pytest.approx(0.2))]


def test_pad_masks_truncates_and_names_a_bad_event():
    events = [[[1, 2], [3, 4], [5, 6]], [], [[7, 8]]]
    values, mask = records.pad(events, max_len=2)
    assert values.shape == (3, 2, 2) and values.dtype == np.float32
    np.testing.assert_array_equal(values[0], [[1, 2], [3, 4]])      # third record dropped
    np.testing.assert_array_equal(values[1], np.zeros((2, 2)))
    np.testing.assert_array_equal(mask, [[1, 1], [0, 0], [1, 0]])
    with pytest.raises(ValueError, match="event 1 has records of shape \\[3\\], expected 2 values each"):
        records.pad([[[1, 2]], [[1, 2, 3]]], max_len=4)
    with pytest.raises(ValueError, match="every event is empty"):
        records.pad([[], []], max_len=4)
    assert records.pad([[], []], max_len=4, features=3)[0].shape == (2, 4, 3)


def test_pad_columns_stacks_jagged_columns_as_uproot_gives_them():
    pt = np.array([np.array([50.0, 20.0, 5.0]), np.array([30.0])], dtype=object)
    eta = np.array([np.array([0.1, -1.0, 2.0]), np.array([0.5])], dtype=object)
    values, mask = records.pad_columns({"pt": pt, "eta": eta}, max_len=2)
    np.testing.assert_allclose(values[0], [[50, 0.1], [20, -1.0]], rtol=1e-6)   # float32
    np.testing.assert_allclose(values[1], [[30, 0.5], [0, 0]], rtol=1e-6)
    np.testing.assert_array_equal(mask, [[1, 1], [1, 0]])
    short = np.array([np.array([0.1]), np.array([0.5])], dtype=object)
    with pytest.raises(ValueError, match="column `eta` event 0 has 1 records, `pt` has 3"):
        records.pad_columns({"pt": pt, "eta": short}, max_len=2)


def test_a_failed_item_carries_its_metadata_back(client):
    crop = (ROOT / "plugins" / "lartpc-dense" / "samples" / "plane-crop.npz").read_bytes()
    out = list(client.stream("lartpc-sparse", [crop, b"not an npz"], content_type="application/x-npz",
                             metadata=[{"event": "1"}, {"event": "2", "run": "9"}], errors="return",
                             with_metadata=True))
    by_index = {i: (value, meta) for i, value, meta in out}
    assert by_index[0][1]["event"] == "1" and by_index[0][1]["tiles_run"] == "6"
    error, meta = by_index[1]
    assert isinstance(error, tensorgate.ItemError) and error.code == "plugin_error"
    assert error.metadata == {"event": "2", "run": "9"} and meta == error.metadata
