"""ROOT trees through a tensorgate model: uproot reads chunks, awkward pads
jagged branches, the host runs the model, results come back entry-aligned.

    from tensorgate.root import predict_tree
    out = predict_tree(client, "nanoaod-jets", ["nano_dy.root", "root://eos.example//f.root"], "Events",
                       {"jets": ["Jet_pt", "Jet_eta", "Jet_phi"], "met": ["MET_pt"]}, pad=10)
    out["scores"]        # one row per entry, files in the order given

Input layout (per model input named in `branches`), as MLaaS4HEP's DataGenerator builds it:
  - only flat branches         -> [N, n_branches]
  - only jagged branches       -> [N, pad, n_branches], plus `<name>_mask` [N, pad] (bool,
                                  True where a real value sits) unless mask=False
  - flat and jagged mixed      -> [N, F], each flat branch one column, each jagged one
                                  `pad` columns (padded or truncated), no mask
A plain list of branches is one unnamed input in the mixed layout (sent as .npy).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Mapping
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .client import Client, Outputs

Branches = Union[Sequence[str], Mapping[str, Sequence[str]]]


def _groups(branches: Branches) -> List[Tuple[Optional[str], List[str]]]:
    if isinstance(branches, Mapping):
        groups = [(str(k), [v] if isinstance(v, str) else list(v)) for k, v in branches.items()]
    elif isinstance(branches, str):
        groups = [(None, [branches])]
    else:
        groups = [(None, list(branches))]
    if not groups or any(not bs for _, bs in groups):
        raise ValueError("branches: give at least one branch per input")
    return groups


def _per_branch(value: Any, branch: str, what: str) -> Any:
    if isinstance(value, Mapping):
        if branch not in value:
            raise ValueError(f"branch {branch} is jagged: give its {what} in {what}={{'{branch}': ...}}")
        return value[branch]
    return value


def pad_jagged(array, length: int, pad_value: float = 0.0, dtype=np.float32) -> Tuple[np.ndarray, np.ndarray]:
    """A jagged 1-level awkward array -> ([N, length] padded/truncated values, [N, length] bool mask)."""
    import awkward as ak

    padded = ak.fill_none(ak.pad_none(array, length, axis=1, clip=True), pad_value, axis=1)
    values = np.ascontiguousarray(ak.to_numpy(padded), dtype=dtype)
    counts = ak.to_numpy(ak.num(array, axis=1))
    mask = np.arange(length)[None, :] < counts[:, None]
    return values, mask


def build_inputs(chunk, branches: Branches, pad: Union[int, Mapping[str, int], None] = None,
                 pad_value: Union[float, Mapping[str, float]] = 0.0, mask: bool = True,
                 dtype=np.float32) -> Dict[Optional[str], np.ndarray]:
    """Fixed-shape model inputs from one chunk (an awkward record array of the branches)."""
    import awkward as ak

    out: Dict[Optional[str], np.ndarray] = {}
    for name, group in _groups(branches):
        cols, jagged, masks = [], [], []
        for b in group:
            arr = chunk[b]
            ndim = arr.ndim
            if ndim == 1:
                cols.append(np.asarray(ak.to_numpy(arr), dtype=dtype)[:, None])
                jagged.append(False)
            elif ndim == 2:
                length = _per_branch(pad, b, "pad")
                if length is None:
                    raise ValueError(f"branch {b} is jagged: give its length with pad=N or pad={{'{b}': N}}")
                values, m = pad_jagged(arr, int(length), float(_per_branch(pad_value, b, "pad_value")), dtype)
                cols.append(values)
                masks.append(m)
                jagged.append(True)
            else:
                raise ValueError(f"branch {b} has {ndim} dimensions; only flat and singly jagged branches are supported")
        if all(jagged) and name is not None:
            widths = {c.shape[1] for c in cols}
            if len(widths) != 1:
                raise ValueError(f"input {name}: jagged branches {group} need the same pad length, got {sorted(widths)}")
            out[name] = np.ascontiguousarray(np.stack(cols, axis=-1))
            if mask:
                out[f"{name}_mask"] = masks[0]
        else:
            out[name] = np.ascontiguousarray(np.concatenate(cols, axis=1))
    return out


def _files_spec(files: Union[str, Sequence[str], Mapping[str, str]], tree: str):
    # Paths (local, root://, https://...) go to uproot untouched.
    if isinstance(files, Mapping):
        return dict(files)
    if isinstance(files, str):
        files = [files]
    return [{str(f): tree} for f in files]  # a list keeps repeated paths


def iterate_inputs(files, tree: str, branches: Branches, *, step_size: Union[int, str] = 100_000,
                   pad=None, pad_value=0.0, mask: bool = True, dtype=np.float32,
                   **uproot_options) -> Iterator[Dict[Optional[str], np.ndarray]]:
    """Yields the model inputs of each chunk of the tree(s), in entry order (empty chunks skipped)."""
    import uproot

    names = sorted({b for _, bs in _groups(branches) for b in bs})
    for chunk in uproot.iterate(_files_spec(files, tree), expressions=names, step_size=step_size,
                                library="ak", **uproot_options):
        if len(chunk) == 0:
            continue
        yield build_inputs(chunk, branches, pad, pad_value, mask, dtype)


class TreeOutputs(Outputs):
    """Outputs of `predict_tree`: name -> array (one row per entry), plus
    `entries`, `chunks` and `seconds` (wall time of the whole call)."""

    def __init__(self, arrays, entries: int, chunks: int, seconds: float):
        super().__init__(arrays, {})
        self.entries, self.chunks, self.seconds = entries, chunks, seconds

    @property
    def events_per_second(self) -> float:
        """Entries per second over the whole call (reading, padding, inference)."""
        return self.entries / self.seconds if self.seconds > 0 else 0.0


def predict_tree(client: Client, model: str, files, tree: str = "Events", branches: Branches = (), *,
                 step_size: Union[int, str] = 100_000, pad=None, pad_value=0.0, mask: bool = True,
                 rows_per_item: int = 256, concurrency: int = 4, version: Optional[int] = None,
                 dtype=np.float32, output: Optional[str] = None, output_tree: str = "Events",
                 spec=None, **uproot_options) -> TreeOutputs:
    """Runs every entry of `tree` in `files` through `model`; returns output name -> array.

    With `spec` (a `tensorgate.spec.Spec`, or a spec file), the model is a
    bundle served by the `features` plugin (`python -m tensorgate train`):
    raw branch values are sent and the host runs the spec's transforms;
    `tree` and `branches` come from the spec, and the result also holds the
    spec's observer columns (as read) and `selected` (the spec's selection).

    Chunks of `step_size` entries (or a size like "50 MB") are read by uproot,
    turned into fixed-shape inputs (module docstring), split into items of
    `rows_per_item` entries and sent; up to `concurrency` chunks are in flight
    while the next one is read. Rows are aligned with the entries of the
    files, in the order given. `output` (.root, .npz or .parquet) also writes
    the results there. Item failures raise `ItemError`.
    """
    if spec is not None:
        return _predict_spec(client, model, files, spec, step_size=step_size, rows_per_item=rows_per_item,
                             concurrency=concurrency, version=version, output=output, output_tree=output_tree,
                             **uproot_options)
    start = time.perf_counter()
    in_flight: collections.deque = collections.deque()
    parts: List[Outputs] = []
    entries = chunks = 0
    for inputs in iterate_inputs(files, tree, branches, step_size=step_size, pad=pad, pad_value=pad_value,
                                 mask=mask, dtype=dtype, **uproot_options):
        entries += len(next(iter(inputs.values())))
        chunks += 1
        batch = inputs[None] if list(inputs) == [None] else inputs
        in_flight.append(client.submit(model, batch, version, rows_per_item=rows_per_item))
        while len(in_flight) >= max(1, concurrency):
            parts.append(in_flight.popleft().result())
    while in_flight:
        parts.append(in_flight.popleft().result())
    arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}
    result = TreeOutputs(arrays, entries, chunks, time.perf_counter() - start)
    if output is not None:
        write_outputs(output, result, output_tree)
    return result


def _split_raw(raw: Dict[str, np.ndarray], n: int, rows: int) -> List[Dict[str, np.ndarray]]:
    """The features plugin's columns of `n` entries split into items of `rows` entries (views, no copies)."""
    offsets = {k[:-7]: np.concatenate([[0], np.cumsum(v)]) for k, v in raw.items() if k.endswith(".counts")}
    items = []
    for a in range(0, n, rows):
        b = min(a + rows, n)
        item = {}
        for k, v in raw.items():
            if k in offsets:
                item[k] = v[offsets[k][a]:offsets[k][b]]
            else:
                item[k] = v[a:b]
        items.append(item)
    return items


def _predict_spec(client: Client, model: str, files, spec, *, step_size, rows_per_item: int, concurrency: int,
                  version: Optional[int], output: Optional[str], output_tree: str, **uproot_options) -> TreeOutputs:
    import awkward as ak

    from .data import _open_tree
    from .spec import Spec, columns
    from .train import raw_events

    if not isinstance(spec, Spec):
        spec = Spec.load(spec)
    if isinstance(files, str):
        files = [files]
    start = time.perf_counter()
    names = spec.serving_branches
    in_flight: collections.deque = collections.deque()
    parts: List[list] = []
    observers: Dict[str, List[np.ndarray]] = {o: [] for o in spec.observers}
    selected: List[np.ndarray] = []
    entries = chunks = 0
    rows = max(1, rows_per_item)
    for path in files:
        t = _open_tree(spec, str(path), uproot_options, names)
        for chunk in t.iterate(names, step_size=step_size, library="ak"):
            n = len(chunk)
            if n == 0:
                continue
            entries += n
            chunks += 1
            selected.append(spec.select(columns(chunk, names, f"{path}:{spec.tree}")))
            for o in observers:
                observers[o].append(np.asarray(ak.to_numpy(chunk[o])))
            items = _split_raw(raw_events(spec, chunk, n), n, rows)
            in_flight.append(client.submit(model, items, version))
            while len(in_flight) >= max(1, concurrency):
                parts.extend(in_flight.popleft().result())
    while in_flight:
        parts.extend(in_flight.popleft().result())
    arrays: Dict[str, np.ndarray] = {}
    if parts:
        for k in parts[0]:
            arrays[k] = np.concatenate([p[k] for p in parts])
    for o, vs in observers.items():
        arrays[o] = np.concatenate(vs) if vs else np.zeros(0)
    arrays["selected"] = np.concatenate(selected) if selected else np.zeros(0, dtype=bool)
    result = TreeOutputs(arrays, entries, chunks, time.perf_counter() - start)
    if output is not None:
        write_outputs(output, result, output_tree)
    return result


def write_outputs(path: str, arrays: Mapping[str, np.ndarray], tree: str = "Events") -> None:
    """Writes output arrays to a new .root (one branch per output), .npz or .parquet file."""
    path = str(path)
    if path.endswith(".npz"):
        np.savez(path, **arrays)
    elif path.endswith(".root"):
        import uproot

        with uproot.recreate(path) as f:
            f[tree] = {k: np.asarray(v) for k, v in arrays.items()}
    elif path.endswith(".parquet"):
        import awkward as ak

        ak.to_parquet(ak.Array({k: ak.from_numpy(v) for k, v in arrays.items()}), path)
    else:
        raise ValueError(f"output {path}: use a .root, .npz or .parquet file name")


__all__ = ["predict_tree", "iterate_inputs", "build_inputs", "pad_jagged", "write_outputs", "TreeOutputs"]
