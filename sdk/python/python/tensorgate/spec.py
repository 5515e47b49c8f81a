"""The feature spec (docs/training.md): one description of a model's inputs
that drives training (`tensorgate.data`, `tensorgate.train`), serving (the
`features` plugin) and the ROOT output (`tensorgate.root.predict_tree(...,
spec=...)`).

    spec = Spec.load("jets.toml")
    spec.fit(chunks)                       # the first pass: standardisation
    inputs = spec.transform(chunk)         # {"jets": [N, 10, 4] f32, "jets_mask": [N, 10] bool, ...}

The transforms are not Python: they are the Rust crate `tensorgate-features`
(through `tensorgate._native.FeatureSpec`), the same code compiled into the
`features` plugin, so served inputs equal training inputs bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

from ._native import FeatureSpec

__all__ = ["Spec", "SpecError", "columns", "FUNCTIONS"]

#: The functions a spec's expressions may call: (name, arguments, description).
FUNCTIONS = FeatureSpec.functions()


class SpecError(ValueError):
    """A bad spec, or data that does not fit it; the message names the spec's
    file and line, or the data file and branch."""


def columns(chunk, names: Iterable[str], where: str = "") -> Dict[str, object]:
    """Raw columns for the transforms from an awkward record array (one
    uproot chunk): branch -> array, or (counts, values) for a jagged branch,
    in the branch's own dtype. `where` (file and tree) goes into errors."""
    import awkward as ak

    out: Dict[str, object] = {}
    fields = set(chunk.fields)
    for name in names:
        if name not in fields:
            raise SpecError(f"{where}: no branch `{name}`")
        arr = chunk[name]
        # Values in the branch's own dtype: the extension reads them as f64 in one pass.
        if arr.ndim == 1:
            out[name] = np.asarray(ak.to_numpy(arr))
        elif arr.ndim == 2:
            counts = np.asarray(ak.to_numpy(ak.num(arr, axis=1)), dtype=np.int64)
            values = np.asarray(ak.to_numpy(ak.flatten(arr, axis=1)))
            out[name] = (counts, values)
        else:
            raise SpecError(f"{where}: branch `{name}` has {arr.ndim} dimensions; only flat and singly jagged branches")
    return out


def _events(cols: Dict[str, object]) -> int:
    for v in cols.values():
        return len(v[0]) if isinstance(v, tuple) else len(v)
    return 0


def _call(fn, *args):
    try:
        return fn(*args)
    except ValueError as e:
        raise SpecError(str(e)) from None


class Spec:
    """A feature spec, read from TOML (`load`) or from a bundle's compiled JSON."""

    def __init__(self, native: FeatureSpec, origin: str):
        self._native, self.origin = native, origin
        self._info = json.loads(native.to_json())

    @classmethod
    def load(cls, path) -> "Spec":
        """Reads a TOML spec file (errors name the file and line)."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise SpecError(f"{path}: {e.strerror}") from None
        return cls.from_toml(text, str(path))

    @classmethod
    def from_toml(cls, text: str, origin: str = "spec") -> "Spec":
        """Reads a spec from TOML text."""
        return cls(_call(FeatureSpec.from_toml, text, origin), origin)

    @classmethod
    def from_json(cls, text: str, origin: str = "spec.json") -> "Spec":
        """Reads a compiled spec (`to_json`, a bundle's `params.spec`)."""
        return cls(_call(FeatureSpec.from_json, text, origin), origin)

    def to_json(self) -> str:
        """The compiled spec, fitted standardisation included."""
        return self._native.to_json()

    def __getstate__(self):
        return {"json": self.to_json(), "origin": self.origin}

    def __setstate__(self, state):
        self.__init__(FeatureSpec.from_json(state["json"], state["origin"]), state["origin"])

    @property
    def tree(self) -> str:
        """The tree the spec reads."""
        return self._info["tree"]

    @property
    def info(self) -> dict:
        """The compiled spec as a dict (inputs, features, fits, labels, ...)."""
        return self._info

    @property
    def branches(self) -> List[Tuple[str, int]]:
        """Every branch read, with the spec line of its first use."""
        return self._native.branches()

    @property
    def input_branches(self) -> List[str]:
        """The branches the model's inputs need (what a client sends the plugin)."""
        return self._native.input_branches()

    @property
    def serving_branches(self) -> List[str]:
        """The branches prediction reads: the inputs', the selection's and the observers."""
        return self._native.serving_branches()

    @property
    def observers(self) -> List[str]:
        """Branches carried to the output untouched."""
        return [o["text"] for o in self._info.get("observers", [])]

    @property
    def labels(self) -> Optional[dict]:
        """`{"classes": [...], "files": {class: [files]}, "expression": ...}` or None."""
        return self._info.get("labels")

    @property
    def fitted(self) -> bool:
        """Whether every scaled feature has its standardisation."""
        return all(f["scale"] == "none" or f.get("fitted") for i in self._info["inputs"] for f in i["features"])

    def model_inputs(self) -> List[Tuple[str, str, List[int]]]:
        """The model's inputs in order: (name, dtype, shape with -1 for the batch)."""
        return self._native.model_inputs()

    def line_of(self, branch: str) -> Optional[int]:
        """The spec line where `branch` is first used."""
        return next((line for name, line in self.branches if name == branch), None)

    # The transforms, over raw columns (`columns(chunk, ...)`).
    def select(self, cols: Dict[str, object]) -> np.ndarray:
        """Which events pass the selection (bool [N])."""
        return np.frombuffer(_call(self._native.select, cols, _events(cols)), dtype=bool)

    def weights(self, cols, keep=None) -> Optional[np.ndarray]:
        """Each kept event's weight, or None without a `weight`."""
        b = _call(self._native.weights, cols, _events(cols), keep)
        return None if b is None else np.frombuffer(b, dtype=np.float64)

    def label_values(self, cols, keep=None) -> Optional[np.ndarray]:
        """The labels expression per kept event, or None without one."""
        b = _call(self._native.label_values, cols, _events(cols), keep)
        return None if b is None else np.frombuffer(b, dtype=np.float64)

    def transform(self, cols, keep=None) -> Dict[str, np.ndarray]:
        """The model inputs of the kept events (all when `keep` is None)."""
        out = {}
        for name, descr, shape, buf in _call(self._native.transform, cols, _events(cols), keep):
            out[name] = np.frombuffer(buf, dtype=descr).reshape(shape)
        return out

    def process(self, cols):
        """One chunk for training in one call: (keep [N] bool, the kept events'
        inputs, their weights or None, their label values or None)."""
        keep, tensors, w, labels = _call(self._native.process, cols, _events(cols))
        inputs = {name: np.frombuffer(buf, dtype=descr).reshape(shape) for name, descr, shape, buf in tensors}
        return (np.frombuffer(keep, dtype=bool), inputs, None if w is None else np.frombuffer(w, dtype=np.float64),
                None if labels is None else np.frombuffer(labels, dtype=np.float64))

    def fit_chunk(self, cols) -> int:
        """The first pass over one chunk (selection, then statistics); returns the entries kept."""
        return _call(self._native.fit_chunk, cols, _events(cols))

    def accumulate(self, cols, keep=None) -> None:
        """Adds the kept events to the first pass's statistics."""
        _call(self._native.accumulate, cols, _events(cols), keep)

    def finish_fit(self) -> None:
        """Fits the standardisation from the statistics accumulated."""
        _call(self._native.fit)
        self._info = json.loads(self._native.to_json())

    def __repr__(self) -> str:
        return f"Spec({self.origin!r}, inputs={[n for n, _, _ in self.model_inputs()]})"
