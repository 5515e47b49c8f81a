"""Training data from ROOT files, driven by a feature spec (`tensorgate.spec`).

    from tensorgate.data import Source, fit, batches, TreeDataset
    source = Source(spec, files)                 # local paths or root:// URLs; labels from the spec
    fit(spec, source)                            # the first pass: the standardisation
    for b in batches(spec, source, batch_size=256, shuffle_buffer=4096, seed=1):
        b.inputs["jets"], b.label, b.weight      # numpy
    loader = torch.utils.data.DataLoader(TreeDataset(spec, source, batch_size=256), batch_size=None, num_workers=2)

Files are read in chunks of `step_size` entries with uproot (memory is
bounded by the chunk size and the shuffle buffer, never by the files); each
chunk goes through the spec's selection and transforms (Rust, the plugin's
code). The train/validation split is by entries: the last `validation`
fraction of every file's entries is the validation part.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .spec import Spec, SpecError, columns

__all__ = ["Source", "Batch", "chunks", "fit", "batches", "TreeDataset"]


def _resolve(path: str, base: str = "") -> str:
    """Local paths made absolute (relative to `base`); URLs (root://, https://) as given."""
    if "://" in path:
        return path
    return os.path.abspath(os.path.join(base, path) if base else path)


@dataclasses.dataclass
class Source:
    """The files to read (in order) and, per file, its class index (labels
    from `labels.files`, or None when labels come from a branch or an
    expression). `validation` is the fraction of each file's entries kept
    for validation; `step_size` the entries read per chunk."""

    spec: Spec
    files: Sequence[str] = ()
    validation: float = 0.0
    step_size: int = 10_000
    uproot_options: dict = dataclasses.field(default_factory=dict)
    classes: List[Optional[int]] = dataclasses.field(init=False)

    def __post_init__(self):
        labels = self.spec.labels
        files = [_resolve(str(f)) for f in self.files]
        by_file: Dict[str, int] = {}
        if labels and labels.get("files"):
            # Paths in the spec are relative to the spec's folder.
            base = os.path.dirname(os.path.abspath(self.spec.origin))
            for k, cls in enumerate(labels["classes"]):
                for f in labels["files"].get(cls, []):
                    by_file[_resolve(f, base)] = k
            if not files:
                files = [f for cls in labels["classes"] for f in labels["files"][cls]]
            missing = [f for f in files if f not in by_file]
            if missing:
                raise SpecError(f"{self.spec.origin} line {labels['line']}: labels do not cover the files {missing} "
                                f"(labels.files lists {sorted(by_file)})")
        if not files:
            raise SpecError(f"{self.spec.origin}: no files to read (give files, or labels.files in the spec)")
        if not 0.0 <= self.validation < 1.0:
            raise ValueError(f"validation must be in [0, 1), got {self.validation}")
        self.files = files
        self.classes = [by_file.get(f) for f in files]


@dataclasses.dataclass
class Batch:
    """One batch: model inputs by name, labels (int64, or None), weights (float32, or None)."""

    inputs: Dict[str, np.ndarray]
    label: Optional[np.ndarray]
    weight: Optional[np.ndarray]

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))


def _open_tree(spec: Spec, path: str, options: dict, names: Optional[Sequence[str]] = None):
    import uproot

    try:
        f = uproot.open(path, **options)
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except Exception as e:  # uproot's own errors: not a ROOT file, unreachable server
        raise SpecError(f"{path}: cannot open ({type(e).__name__}: {e})") from None
    if spec.tree not in f:
        raise SpecError(f"{path}: no tree `{spec.tree}` (the spec's `tree`; it has {sorted(set(k.split(';')[0] for k in f.keys()))[:10]})")
    tree = f[spec.tree]
    have = set(tree.keys())
    for name, line in spec.branches:
        if name not in have and (names is None or name in names):
            raise SpecError(f"{spec.origin} line {line}: branch `{name}` is not in {path}:{spec.tree}")
    return tree


def _prefetched(gen: Iterator, depth: int = 1) -> Iterator:
    """Runs `gen` in a thread, `depth` items ahead: the next chunk is read
    and decompressed (uproot, zlib and the transforms release the GIL) while
    this one is processed. Memory: `depth` more chunks. Errors surface here."""
    q: "queue.Queue" = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def run():
        try:
            for item in gen:
                while not stop.is_set():
                    try:
                        q.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(("end", done))
        except BaseException as e:  # handed to the consumer
            q.put(("error", e))

    t = threading.Thread(target=run, name="tensorgate-prefetch", daemon=True)
    t.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stop.set()
        while t.is_alive():  # unblock a put, then let the thread see `stop`
            try:
                q.get(timeout=0.1)
            except queue.Empty:
                pass
        t.join()


def chunks(spec: Spec, source: Source, part: str = "train", files: Optional[Sequence[int]] = None,
           prefetch: bool = True) -> Iterator[Tuple[int, object, Dict[str, object]]]:
    """Yields `(file index, awkward chunk, raw columns)` of `part` ("train",
    "validation" or "all") in file and entry order; `files` picks file indices.
    With `prefetch`, the next chunk is read in a thread while this one is used."""
    gen = _chunks(spec, source, part, files)
    return _prefetched(gen) if prefetch else gen


def _chunks(spec: Spec, source: Source, part: str, files: Optional[Sequence[int]]):
    names = [b for b, _ in spec.branches]
    for k in (range(len(source.files)) if files is None else files):
        path = source.files[k]
        tree = _open_tree(spec, path, source.uproot_options)
        n = tree.num_entries
        cut = n - int(round(n * source.validation))
        start, stop = {"train": (0, cut), "validation": (cut, n), "all": (0, n)}[part]
        if stop <= start:
            continue
        for chunk in tree.iterate(names, entry_start=start, entry_stop=stop, step_size=source.step_size, library="ak"):
            if len(chunk) == 0:
                continue
            yield k, chunk, columns(chunk, names, f"{path}:{spec.tree}")


def fit(spec: Spec, source: Source) -> int:
    """The first pass: fits the spec's standardisation on the training part; returns the entries selected."""
    selected = 0
    for _, _, cols in chunks(spec, source, "train"):
        selected += spec.fit_chunk(cols)
    if selected == 0:
        sel = spec.info.get("selection") or []
        where = f"{spec.origin} line {sel[0]['line']}" if sel else spec.origin
        raise SpecError(f"{where}: the selection keeps no entries of {list(source.files)}")
    spec.finish_fit()
    return selected


def _labelled(spec: Spec, source: Source, k: int, cols) -> Optional[Batch]:
    keep, inputs, w, values = spec.process(cols)
    n = int(keep.sum())
    if n == 0:
        return None
    if source.classes[k] is not None:
        label = np.full(n, source.classes[k], dtype=np.int64)
    else:
        label = None if values is None else values.astype(np.int64)
        if label is not None and spec.labels is not None:
            bad = (label < 0) | (label >= len(spec.labels["classes"]))
            if bad.any():
                raise SpecError(f"{spec.origin} line {spec.labels['line']}: labels give {int(label[bad][0])} in "
                                f"{source.files[k]}, outside the classes {spec.labels['classes']}")
    return Batch(inputs, label, None if w is None else w.astype(np.float32))


def _concat(parts: List[Batch]) -> Batch:
    if len(parts) == 1:
        return parts[0]
    inputs = {k: np.concatenate([p.inputs[k] for p in parts]) for k in parts[0].inputs}
    label = None if parts[0].label is None else np.concatenate([p.label for p in parts])
    weight = None if parts[0].weight is None else np.concatenate([p.weight for p in parts])
    return Batch(inputs, label, weight)


def _take(b: Batch, idx) -> Batch:
    return Batch({k: v[idx] for k, v in b.inputs.items()}, None if b.label is None else b.label[idx],
                 None if b.weight is None else b.weight[idx])


def batches(spec: Spec, source: Source, batch_size: int = 256, part: str = "train", shuffle_buffer: int = 0,
            seed: Optional[int] = None, files: Optional[Sequence[int]] = None, drop_last: bool = False
            ) -> Iterator[Batch]:
    """Batches of `batch_size` selected entries, as numpy. With
    `shuffle_buffer` > 0, entries are shuffled within a buffer of that many
    (seeded by `seed`); without, they come in file and entry order."""
    if not spec.fitted:
        raise SpecError(f"{spec.origin}: the standardisation is not fitted: run tensorgate.data.fit first")
    rng = np.random.default_rng(seed)
    pending: List[Batch] = []
    held = 0
    limit = max(batch_size, shuffle_buffer)

    def drain(final: bool):
        nonlocal pending, held
        if not pending:
            return
        b = _concat(pending)
        if shuffle_buffer > 0:
            b = _take(b, rng.permutation(len(b)))
        full = len(b) // batch_size * batch_size
        for s in range(0, full, batch_size):
            yield _take(b, slice(s, s + batch_size))
        rest = _take(b, slice(full, len(b)))
        pending, held = ([rest], len(rest)) if len(rest) else ([], 0)
        if final and held and not drop_last:
            yield rest
            pending, held = [], 0

    for k, _, cols in chunks(spec, source, part, files):
        b = _labelled(spec, source, k, cols)
        if b is None:
            continue
        pending.append(b)
        held += len(b)
        if held >= limit:
            yield from drain(False)
    yield from drain(True)


def __getattr__(name):
    # torch is imported only when TreeDataset is asked for: the numpy side
    # (and every process that only reads) stays free of it.
    if name == "TreeDataset":
        cls = _tree_dataset()
        globals()["TreeDataset"] = cls
        return cls
    raise AttributeError(name)


def _tree_dataset():
    import torch as _torch

    class TreeDataset(_torch.utils.data.IterableDataset):
        """A PyTorch `IterableDataset` of batches (use `DataLoader(ds, batch_size=None)`).

        With `num_workers` > 0 each worker reads its own share of the files
        (file k goes to worker k mod n), so batches interleave across files;
        each yields `(inputs: dict of tensors, label, weight)` (None as empty tensors)."""

        def __init__(self, spec: Spec, source: Source, batch_size: int = 256, part: str = "train",
                     shuffle_buffer: int = 0, seed: Optional[int] = None):
            self.spec, self.source, self.batch_size, self.part = spec, source, batch_size, part
            self.shuffle_buffer, self.seed = shuffle_buffer, seed

        def __iter__(self):
            info = _torch.utils.data.get_worker_info()
            files = None
            seed = self.seed
            if info is not None:
                files = list(range(info.id, len(self.source.files), info.num_workers))
                seed = None if seed is None else seed + info.id
            for b in batches(self.spec, self.source, self.batch_size, self.part, self.shuffle_buffer, seed, files):
                empty = _torch.empty(0)
                yield ({k: _torch.from_numpy(np.array(v)) for k, v in b.inputs.items()},
                       empty if b.label is None else _torch.from_numpy(b.label),
                       empty if b.weight is None else _torch.from_numpy(b.weight))

    TreeDataset.__module__, TreeDataset.__qualname__ = __name__, "TreeDataset"  # pickled by reference
    return TreeDataset
