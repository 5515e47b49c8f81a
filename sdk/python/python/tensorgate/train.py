"""`python -m tensorgate train`: a spec and a `torch.nn.Module` -> a trained,
served bundle.

    result = train("jets.toml", "mymodels:JetNet", epochs=5, bundle="bundles/jets", seed=1)

Steps: the spec's first pass fits the standardisation on the training part
of the files; the model (called as `model(*inputs)` in the spec's input
order, masks included, returning logits [N, classes], or [N, 1] for two
classes) is trained with a weighted cross-entropy (or BCE) loss on the
batches of `tensorgate.data`; it is exported as TorchScript; and a complete
bundle is written: `model.pt`, `manifest.toml` (inputs from the spec,
outputs from the model, the compiled spec with its fitted standardisation
in `params.spec`), `plugin.wasm` (the generic `features` plugin, so the
served application takes raw branch values), `spec.toml`, `samples/`
(raw events as `.npz` and JSON) and `reference.npz` (the exported model's
outputs on them). The bundle appears complete or not at all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np

from .data import Source, _concat, _take, batches, chunks, fit
from .spec import Spec, SpecError

__all__ = ["train", "TrainResult", "load_class", "find_plugin", "PLUGIN_NAME"]

#: The generic plugin's file name, as scripts/build-plugins builds it.
PLUGIN_NAME = "features_plugin.wasm"
_PLUGIN_DIRS = ("target/plugins/wasm32-unknown-unknown/release",)


@dataclasses.dataclass
class TrainResult:
    """What `train` did: per-epoch metrics, the bundle, the fitted spec, the trained model."""

    epochs: List[dict]
    bundle: Optional[str]
    spec: Spec
    model: object
    entries: int
    upload: Optional[dict] = None


def load_class(ref: str):
    """`package.module:Class` or `path/to/file.py:Class` -> the class."""
    mod, sep, cls = ref.rpartition(":")
    if not sep or not mod or not cls:
        raise ValueError(f"--model {ref!r}: use MODULE:CLASS (e.g. mymodels:JetNet or models.py:JetNet)")
    if mod.endswith(".py") or os.sep in mod:
        path = Path(mod)
        if not path.is_file():
            raise ValueError(f"--model {ref!r}: no file {path}")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules.setdefault(path.stem, module)
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(mod)
    try:
        return getattr(module, cls)
    except AttributeError:
        raise ValueError(f"--model {ref!r}: {mod} has no {cls}") from None


def find_plugin(plugin: Optional[str] = None, file_name: str = PLUGIN_NAME) -> Path:
    """A plugin component (default the `features` one): `plugin`, else
    $TENSORGATE_FEATURES_PLUGIN (for the features plugin) or
    $TENSORGATE_PLUGIN_DIR/<file_name>, else target/plugins/... under the
    working directory or one above it."""
    candidates = [plugin] if plugin else []
    if file_name == PLUGIN_NAME and os.environ.get("TENSORGATE_FEATURES_PLUGIN"):
        candidates.append(os.environ["TENSORGATE_FEATURES_PLUGIN"])
    if os.environ.get("TENSORGATE_PLUGIN_DIR"):
        candidates.append(str(Path(os.environ["TENSORGATE_PLUGIN_DIR"]) / file_name))
    if not candidates:
        here = Path.cwd()
        for base in (here, *here.parents):
            candidates += [str(base / d / file_name) for d in _PLUGIN_DIRS]
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c)
    raise FileNotFoundError(f"the plugin {file_name} was not found (looked at {candidates[:3]}...): "
                            "build it with scripts/build-plugins, or pass --plugin / $TENSORGATE_PLUGIN_DIR")


#: The model file each export format writes (the manifest's `[model] format` names it too).
MODEL_FILES = {"torchscript": "model.pt", "onnx": "model.onnx", "aoti": "model.pt2"}


def _toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def _manifest(name: str, version: int, description: str, classes: Sequence[str], spec: Spec,
              outputs: Dict[str, List[int]], origin: str, model_format: str = "torchscript") -> str:
    lines = [f"# Written by `python -m tensorgate train` from {origin}: the features plugin runs",
             "# the spec in params.spec (its fitted standardisation included) on raw branch values.",
             f"name = {_toml_str(name)}", f"version = {version}", f"description = {_toml_str(description)}"]
    if classes:
        lines.append("labels = [" + ", ".join(_toml_str(c) for c in classes) + "]")
    model_file = MODEL_FILES[model_format]
    lines += ["", "[model]", f'file = "{model_file}"', f'format = "{model_format}"', "max_batch = 1024", "",
              "[plugin]", 'file = "plugin.wasm"']
    for n, dtype, shape in spec.model_inputs():
        lines += ["", "[[inputs]]", f"name = {_toml_str(n)}", f'dtype = "{dtype}"', f"shape = {list(shape)}"]
    for n, shape in outputs.items():
        lines += ["", "[[outputs]]", f"name = {_toml_str(n)}", 'dtype = "f32"', f"shape = {shape}"]
    lines += ["", "[params]", f"spec = {_toml_str(spec.to_json())}", ""]
    return "\n".join(lines)


def wire(a: np.ndarray) -> np.ndarray:
    """A branch's values in a dtype the host's .npz reader takes (f4, f8, i8, i4, u1, b1):
    floats and booleans as they are, other integers as int64 (exact)."""
    a = np.asarray(a)
    if a.dtype.kind == "f" and a.dtype.itemsize in (4, 8) or a.dtype == np.bool_:
        return np.ascontiguousarray(a.astype(a.dtype.newbyteorder("<")))
    if a.dtype.kind in "iu":
        return np.ascontiguousarray(a, dtype="<i8")
    return np.ascontiguousarray(a, dtype="<f8")


def raw_events(spec: Spec, chunk, n: int) -> Dict[str, np.ndarray]:
    """The first `n` events of an awkward chunk as the plugin's .npz columns:
    `B` per flat branch; `B` (values) and `B.counts` per jagged one."""
    import awkward as ak

    out: Dict[str, np.ndarray] = {}
    part = chunk[:n]
    for b in spec.input_branches:
        arr = part[b]
        if arr.ndim == 1:
            out[b] = wire(ak.to_numpy(arr))
        else:
            out[b] = wire(ak.to_numpy(ak.flatten(arr, axis=1)))
            out[f"{b}.counts"] = np.asarray(ak.to_numpy(ak.num(arr, axis=1)), dtype=np.int64)
    return out


def events_json(raw: Dict[str, np.ndarray]) -> list:
    """The same events as JSON objects (what the plugin takes as application/json)."""
    flat = [k for k in raw if not k.endswith(".counts") and f"{k}.counts" not in raw]
    jagged = [k for k in raw if f"{k}.counts" in raw]
    n = len(raw[flat[0]]) if flat else len(raw[f"{jagged[0]}.counts"])
    offsets = {k: np.concatenate([[0], np.cumsum(raw[f"{k}.counts"])]) for k in jagged}
    events = []
    for i in range(n):
        e = {k: raw[k][i].item() for k in flat}
        e.update({k: raw[k][offsets[k][i]:offsets[k][i + 1]].tolist() for k in jagged})
        events.append(e)
    return events


def _loss_fn(torch, n_classes: int, width: int, origin: str):
    F = torch.nn.functional
    if width == n_classes and n_classes >= 2:
        def loss(out, y, w):
            per = F.cross_entropy(out, y, reduction="none")
            return (per * w).sum() / w.sum(), (out.argmax(dim=1) == y)
        return loss
    if width == 1 and n_classes == 2:
        def loss(out, y, w):
            per = F.binary_cross_entropy_with_logits(out[:, 0], y.float(), reduction="none")
            return (per * w).sum() / w.sum(), ((out[:, 0] > 0).long() == y)
        return loss
    raise SpecError(f"{origin}: the model gives {width} outputs per entry for {n_classes} classes "
                    f"(give [N, {n_classes}] logits, or [N, 1] for two classes)")


def train(spec, model: str, *, files: Sequence[str] = (), epochs: int = 3, bundle: Optional[str] = None,
          name: Optional[str] = None, version: int = 1, batch_size: int = 256, lr: float = 1e-3, seed: int = 0,
          validation: float = 0.2, step_size: int = 10_000, shuffle_buffer: int = 4096, device: str = "cpu",
          model_args: Optional[dict] = None, plugin: Optional[str] = None, samples: int = 16,
          replace: bool = False, log: Optional[Callable[[str], None]] = print, upload=None,
          cache: Union[str, bool] = "auto", cache_limit: int = 1 << 30,
          model_format: str = "torchscript") -> TrainResult:
    """Trains `model` (MODULE:CLASS, or a class) on the spec's data; see the module docstring.

    `cache`: keep the selected entries' model inputs in memory after the
    first epoch's read (each later epoch shuffles them in memory instead of
    reading the files again): True, False, or "auto" (when they take at most
    `cache_limit` bytes, known after the first pass). Without the cache,
    epochs stream the files through a `shuffle_buffer`.

    `model_format`: "torchscript" (model.pt), "onnx" (model.onnx, exported
    by torch.onnx, the reference outputs from ONNX Runtime) or "aoti"
    (model.pt2, an AOTInductor package compiled by torch.export and
    Inductor for this machine's CPU, the reference outputs from the package).

    `upload` is a `tensorgate.Client` to install the bundle on (a host, or a
    cluster gateway: the usual version and canary rules apply)."""
    import torch

    if model_format not in MODEL_FILES:
        raise ValueError(f"format {model_format!r}: use one of {', '.join(MODEL_FILES)}")

    log = log or (lambda _: None)
    if not isinstance(spec, Spec):
        spec = Spec.load(spec)
    origin = spec.origin
    labels = spec.labels
    if labels is None:
        raise SpecError(f"{origin}: training needs [labels] (classes and where labels come from)")
    classes = labels["classes"]
    if bundle is not None:
        dest = Path(bundle)
        if dest.exists() and not replace:
            raise FileExistsError(f"--bundle {dest} exists: remove it or pass --replace")
        plugin_path = find_plugin(plugin)
    source = Source(spec, files, validation=validation, step_size=step_size)
    t0 = time.perf_counter()
    entries = fit(spec, source)
    log(f"first pass: {entries} entries selected in {len(source.files)} file(s), standardisation fitted "
        f"({time.perf_counter() - t0:.2f} s)")

    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    torch.manual_seed(seed)
    if dev.type == "cpu":
        torch.use_deterministic_algorithms(True)
    cls = load_class(model) if isinstance(model, str) else model
    net = cls(**(model_args or {})).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    order = [n for n, _, _ in spec.model_inputs()]

    def run(b, train_mode: bool):
        xs = [torch.from_numpy(np.array(b.inputs[n])).to(dev) for n in order]
        y = torch.from_numpy(b.label).to(dev)
        w = torch.ones(len(b), device=dev) if b.weight is None else torch.from_numpy(b.weight).to(dev)
        out = net(*xs)
        out = out[0] if isinstance(out, (tuple, list)) else out
        return out, y, w

    per_entry = sum(int(np.prod(shape[1:])) * (4 if dtype == "f32" else 1) for _, dtype, shape in spec.model_inputs()) + 16
    if cache == "auto":
        cache = entries * per_entry / max(1e-9, 1 - validation) <= cache_limit
    cached: Dict[str, object] = {}

    def epoch_batches(part: str, epoch: int):
        if not cache:
            yield from batches(spec, source, batch_size, part, shuffle_buffer if part == "train" else 0,
                               seed * 1000 + epoch)
            return
        if part not in cached:  # the first read of this part, in file and entry order
            parts = list(batches(spec, source, 65536, part))
            cached[part] = _concat(parts) if parts else None
        data = cached[part]
        if data is None:
            return
        order = np.random.default_rng(seed * 1000 + epoch).permutation(len(data)) if part == "train" else None
        for s in range(0, len(data), batch_size):
            yield _take(data, order[s:s + batch_size] if order is not None else slice(s, s + batch_size))

    loss_fn = None
    history: List[dict] = []
    for epoch in range(1, epochs + 1):
        t = time.perf_counter()
        row = {"epoch": epoch}
        for part in ("train", "validation"):
            if part == "validation" and validation == 0:
                continue
            net.train(part == "train")
            total = wsum = correct = count = 0.0
            with torch.set_grad_enabled(part == "train"):
                for b in epoch_batches(part, epoch):
                    out, y, w = run(b, part == "train")
                    if loss_fn is None:
                        loss_fn = _loss_fn(torch, len(classes), out.shape[1] if out.ndim == 2 else 0, origin)
                    loss, ok = loss_fn(out, y, w)
                    if part == "train":
                        opt.zero_grad()
                        loss.backward()
                        opt.step()
                    total += float(loss.detach()) * float(w.sum())
                    wsum += float(w.sum())
                    correct += float(ok.sum())
                    count += len(y)
            if count:
                prefix = "" if part == "train" else "val_"
                row[prefix + "loss"] = total / wsum if wsum else float("nan")
                row[prefix + "accuracy"] = correct / count
                row[prefix + "entries"] = int(count)
        row["seconds"] = time.perf_counter() - t
        history.append(row)
        msg = f"epoch {epoch}/{epochs}: loss {row.get('loss', float('nan')):.4f} accuracy {row.get('accuracy', 0):.3f}"
        if "val_loss" in row:
            msg += f" | validation loss {row['val_loss']:.4f} accuracy {row['val_accuracy']:.3f}"
        log(msg + f" ({row.get('entries', 0)} entries, {row['seconds']:.2f} s)")
    if loss_fn is None:
        raise SpecError(f"{origin}: no training entries (empty selection or files?)")

    result = TrainResult(history, None, spec, net, entries)
    if bundle is not None:
        result.bundle = str(_write_bundle(spec, source, net.to("cpu").eval(), order, classes, dest, plugin_path,
                                          name or dest.name, version, samples, replace, log, model_format))
        if upload is not None:
            result.upload = upload.upload(result.bundle, replace=replace)
            log(f"uploaded: {result.upload}")
    return result


def _export(torch, net, example):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return torch.jit.script(net)
        except Exception:  # not scriptable: trace it on real inputs
            return torch.jit.trace(net, example, check_trace=False)


def _export_onnx(torch, net, example, order, names, path: Path):
    """`net` to a self-contained .onnx (torch.onnx, dynamo, opset 18, the batch
    dimension dynamic); returns ONNX Runtime's outputs on `example` (the reference)."""
    import onnxruntime

    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    dynamic = {n: {0: batch} for n in order}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(net, example, dynamo=True, input_names=list(order), output_names=list(names),
                                    dynamic_shapes=dynamic, opset_version=18, external_data=False)
    program.save(str(path), external_data=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {n: x.numpy() for n, x in zip(order, example)})


def _export_aoti(torch, net, example, path: Path):
    """`net` to an AOTInductor package (torch.export with the batch dimension
    dynamic, compiled by Inductor for this machine's CPU); returns the
    package's own outputs on `example` (the reference). Compiled with
    `aot_inductor.link_libtorch = False`, as the host needs: the package's
    calls bind to the libtorch of the process that loads it."""
    import ctypes

    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(net, example, dynamic_shapes=tuple({0: batch} for _ in example))
        torch._inductor.aoti_compile_and_package(program, package_path=str(path),
                                                 inductor_configs={"aot_inductor.link_libtorch": False})
    # Python loads libtorch_cpu privately: make its symbols global, as they are in the host.
    ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"), mode=ctypes.RTLD_GLOBAL)
    package = torch._inductor.aoti_load_package(str(path))
    with torch.no_grad():
        out = package(*example)
    return [o.numpy() for o in (list(out) if isinstance(out, (tuple, list)) else [out])]


@contextlib.contextmanager
def _staged_bundle(dest: Path, replace: bool):
    """A new folder beside DEST to write a bundle into: when the block ends
    it becomes DEST (an existing DEST is replaced only with `replace`); when
    the block fails it is removed. Nothing half-written is ever at DEST."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        yield tmp
        if dest.exists() and replace:
            old = dest.with_name(f".{dest.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            dest.rename(old)
            tmp.rename(dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_bundle(spec: Spec, source: Source, net, order, classes, dest: Path, plugin: Path, name: str,
                  version: int, samples: int, replace: bool, log, model_format: str = "torchscript") -> Path:
    import torch

    with _staged_bundle(dest, replace) as tmp:
        part = "validation" if source.validation > 0 else "train"
        first = next(chunks(spec, source, part), None) or next(chunks(spec, source, "all"))
        _, chunk, _ = first
        n = min(samples, len(chunk))
        raw = raw_events(spec, chunk, n)
        from .spec import columns as _columns

        inputs = spec.transform(_columns(chunk[:n], [b for b, _ in spec.branches], "samples"))
        example = tuple(torch.from_numpy(np.array(inputs[k])) for k in order)
        with torch.no_grad():
            eager = net(*example)
        n_out = len(eager) if isinstance(eager, (tuple, list)) else 1
        names = ["scores"] if n_out == 1 else [f"output_{i}" for i in range(n_out)]
        if model_format == "onnx":
            outs = _export_onnx(torch, net, example, order, names, tmp / "model.onnx")
        elif model_format == "aoti":
            outs = _export_aoti(torch, net, example, tmp / "model.pt2")
        else:
            scripted = _export(torch, net, example)
            scripted.save(str(tmp / "model.pt"))
            loaded = torch.jit.load(str(tmp / "model.pt"))
            with torch.no_grad():
                out = loaded(*example)
            outs = [o.numpy() for o in (list(out) if isinstance(out, (tuple, list)) else [out])]
        reference = {k: np.asarray(o).astype(np.float32) for k, o in zip(names, outs)}
        shapes = {k: [-1, *v.shape[1:]] for k, v in reference.items()}
        description = f"{name}: {len(classes)} classes from {spec.origin} (tensorgate train)"
        (tmp / "manifest.toml").write_text(_manifest(name, version, description, classes, spec, shapes,
                                                     Path(spec.origin).name, model_format))
        shutil.copyfile(plugin, tmp / "plugin.wasm")
        if Path(spec.origin).is_file():
            shutil.copyfile(spec.origin, tmp / "spec.toml")
        (tmp / "spec.json").write_text(spec.to_json())
        (tmp / "samples").mkdir()
        np.savez(tmp / "samples" / "events.npz", **raw)
        (tmp / "samples" / "events.json").write_text(json.dumps(events_json(raw)))
        np.savez(tmp / "reference.npz", **reference)
    log(f"bundle: {dest} (the model, manifest.toml, plugin.wasm, samples/, reference.npz)")
    return dest
