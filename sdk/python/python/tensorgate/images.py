"""The image case: a directory of PNG images and a `labels.csv` -> a trained
CNN -> a bundle served by the `image` plugin (PNG in, top-k labels out).

    python -m tensorgate train-images --images shapes/ --model models.py:SmallCNN \\
        --size 32 32 --epochs 8 --bundle bundles/shapes [--upload HOST]

`labels.csv` (default: in the images folder) has one `file,label` line per
image (a first line `file,label` is a header); paths are relative to the
images folder. Classes are the labels in order of first appearance, unless
`classes` is given. Every image is decoded, resized and normalised by
`tensorgate._native.image_tensor`: the image plugin's own preprocessing
(the same PNG decoder and the plugin SDK's `image::to_tensor`), so training
sees what serving will. The model takes `[N, 3, H, W]` and returns logits
`[N, classes]`; the exported model adds the softmax the plugin's scores are.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from ._native import image_tensor
from .train import TrainResult, _export, _staged_bundle, load_class

__all__ = ["read_labels", "preprocess", "train_images", "PLUGIN_NAME"]

#: The image plugin's file name, as scripts/build-plugins builds it.
PLUGIN_NAME = "image_plugin.wasm"


class ImageDataError(ValueError):
    """A bad labels file or image; the message names the file (and line)."""


def read_labels(images: Path, labels: Optional[Path] = None, classes: Optional[Sequence[str]] = None
                ) -> Tuple[List[Tuple[Path, int]], List[str]]:
    """(image path, class index) per line of `labels.csv`, and the classes."""
    images = Path(images)
    labels = Path(labels) if labels else images / "labels.csv"
    if not labels.is_file():
        raise ImageDataError(f"{labels}: no such labels file (one `file,label` line per image)")
    found: List[str] = list(classes or [])
    rows: List[Tuple[Path, int]] = []
    with open(labels, newline="") as f:
        for n, row in enumerate(csv.reader(f), start=1):
            if not row or (n == 1 and [c.strip() for c in row[:2]] == ["file", "label"]):
                continue
            if len(row) != 2:
                raise ImageDataError(f"{labels} line {n}: expected `file,label`, got {row}")
            name, label = row[0].strip(), row[1].strip()
            path = images / name
            if not path.is_file():
                raise ImageDataError(f"{labels} line {n}: no image {path}")
            if label not in found:
                if classes:
                    raise ImageDataError(f"{labels} line {n}: label `{label}` is not one of the classes {list(classes)}")
                found.append(label)
            rows.append((path, found.index(label)))
    if not rows:
        raise ImageDataError(f"{labels}: no images listed")
    if len(found) < 2:
        raise ImageDataError(f"{labels}: only one class ({found}): a classifier needs two or more")
    return rows, found


def preprocess(png: bytes, size: Tuple[int, int], mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
               where: str = "image") -> np.ndarray:
    """One PNG -> float32 `[3, H, W]`, as the image plugin makes it."""
    try:
        shape, buf = image_tensor(png, int(size[0]), int(size[1]), [float(x) for x in mean], [float(x) for x in std])
    except ValueError as e:
        raise ImageDataError(f"{where}: {e}") from None
    return np.frombuffer(buf, dtype=np.float32).reshape(shape)


def _manifest(name: str, version: int, classes: Sequence[str], size, mean, std, top_k: int) -> str:
    q = json.dumps
    lines = ["# Written by `python -m tensorgate train-images`: PNG in, top-k labels out (the image plugin).",
             f"name = {q(name)}", f"version = {version}",
             f"description = {q(f'{name}: {len(classes)} image classes (tensorgate train-images)')}",
             "labels = [" + ", ".join(q(c) for c in classes) + "]", "",
             "[model]", 'file = "model.pt"', "max_batch = 64", "", "[plugin]", 'file = "plugin.wasm"', "",
             "[[inputs]]", 'name = "image"', 'dtype = "f32"', f"shape = [-1, 3, {size[0]}, {size[1]}]", "",
             "[[outputs]]", 'name = "scores"', 'dtype = "f32"', f"shape = [-1, {len(classes)}]", "",
             "[params]", f"size = [{size[0]}, {size[1]}]", f"mean = {list(map(float, mean))}",
             f"std = {list(map(float, std))}", f"top_k = {min(top_k, len(classes))}", "max_pixels = 16777216", ""]
    return "\n".join(lines)


def train_images(images, model, *, labels=None, classes: Optional[Sequence[str]] = None, size=(32, 32),
                 mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), epochs: int = 5, batch_size: int = 32,
                 lr: float = 3e-3, seed: int = 0, validation: float = 0.2, bundle: Optional[str] = None,
                 name: Optional[str] = None, version: int = 1, plugin: Optional[str] = None, top_k: int = 3,
                 samples: int = 4, replace: bool = False, model_args: Optional[dict] = None,
                 log: Optional[Callable[[str], None]] = print, upload=None) -> TrainResult:
    """Trains `model` (MODULE:CLASS or a class) on the labelled images; see the module docstring."""
    import torch

    from .train import find_plugin

    log = log or (lambda _: None)
    rows, classes = read_labels(Path(images), Path(labels) if labels else None, classes)
    if bundle is not None:
        dest = Path(bundle)
        if dest.exists() and not replace:
            raise FileExistsError(f"--bundle {dest} exists: remove it or pass --replace")
        plugin_path = find_plugin(plugin, PLUGIN_NAME)
    t0 = time.perf_counter()
    x = np.stack([preprocess(p.read_bytes(), size, mean, std, str(p)) for p, _ in rows])
    y = np.array([c for _, c in rows], dtype=np.int64)
    log(f"{len(rows)} images, {len(classes)} classes {classes}, preprocessed in {time.perf_counter() - t0:.2f} s")
    # The split by position in labels.csv: the last `validation` fraction of each class.
    val = np.zeros(len(rows), dtype=bool)
    for c in range(len(classes)):
        idx = np.flatnonzero(y == c)
        val[idx[len(idx) - int(round(len(idx) * validation)):]] = True
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    cls = load_class(model) if isinstance(model, str) else model
    net = cls(**(model_args or {}))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    history = []
    for epoch in range(1, epochs + 1):
        t = time.perf_counter()
        net.train()
        train_idx = rng.permutation(np.flatnonzero(~val))
        total = correct = 0.0
        for s in range(0, len(train_idx), batch_size):
            b = torch.from_numpy(train_idx[s:s + batch_size])
            out = net(xt[b])
            loss = torch.nn.functional.cross_entropy(out, yt[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
            correct += float((out.argmax(1) == yt[b]).sum())
        row = {"epoch": epoch, "loss": total / len(train_idx), "accuracy": correct / len(train_idx),
               "entries": int(len(train_idx))}
        if val.any():
            net.eval()
            with torch.no_grad():
                vi = torch.from_numpy(np.flatnonzero(val))
                out = net(xt[vi])
                row["val_loss"] = float(torch.nn.functional.cross_entropy(out, yt[vi]))
                row["val_accuracy"] = float((out.argmax(1) == yt[vi]).float().mean())
        row["seconds"] = time.perf_counter() - t
        history.append(row)
        msg = f"epoch {epoch}/{epochs}: loss {row['loss']:.4f} accuracy {row['accuracy']:.3f}"
        if "val_loss" in row:
            msg += f" | validation loss {row['val_loss']:.4f} accuracy {row['val_accuracy']:.3f}"
        log(msg + f" ({row['entries']} images, {row['seconds']:.2f} s)")
    result = TrainResult(history, None, None, net, len(rows))
    if bundle is not None:
        picks = list(np.flatnonzero(val)[:samples]) or list(range(min(samples, len(rows))))
        result.bundle = str(_write(net.eval(), x, rows, picks, classes, dest, plugin_path, name or dest.name,
                                   version, size, mean, std, top_k, replace, log))
        if upload is not None:
            result.upload = upload.upload(result.bundle, replace=replace)
            log(f"uploaded: {result.upload}")
    return result


def _write(net, x, rows, picks, classes, dest: Path, plugin: Path, name: str, version: int, size, mean, std,
           top_k: int, replace: bool, log) -> Path:
    import torch

    class WithSoftmax(torch.nn.Module):
        """The trained network's logits as the scores the image plugin ranks."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.inner(image), dim=1)

    with _staged_bundle(dest, replace) as tmp:
        example = torch.from_numpy(x[picks])
        scripted = _export(torch, WithSoftmax(net).eval(), (example,))
        scripted.save(str(tmp / "model.pt"))
        with torch.no_grad():
            scores = torch.jit.load(str(tmp / "model.pt"))(example).numpy()
        (tmp / "manifest.toml").write_text(_manifest(name, version, classes, size, mean, std, top_k))
        shutil.copyfile(plugin, tmp / "plugin.wasm")
        (tmp / "samples").mkdir()
        files = []
        for i in picks:
            src = rows[i][0]
            shutil.copyfile(src, tmp / "samples" / src.name)
            files.append(src.name)
        np.savez(tmp / "reference.npz", scores=scores.astype(np.float32), files=np.array(files),
                 labels=np.array([classes[rows[i][1]] for i in picks]))
    log(f"bundle: {dest} (model.pt, manifest.toml, plugin.wasm, samples/, reference.npz)")
    return dest
