"""The image case of issue 33: a folder of PNGs and labels.csv -> a small
CNN -> a bundle served by the image plugin on a real host. The training
preprocessing is the plugin's own (`tensorgate._native.image_tensor`:
the same PNG decoder and the plugin SDK's `image::to_tensor`), checked
here against PyTorch's own resize and normalisation."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch comes with scripts/setup-python (the torch-venv .pth)")

import tensorgate  # noqa: E402
from tensorgate.images import ImageDataError, preprocess, read_labels, train_images  # noqa: E402
from engine import stop  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "target" / "plugins" / "wasm32-unknown-unknown" / "release" / "image_plugin.wasm"
KINDS = ["disc", "ring", "bar", "cross"]
MODELS = '''import torch


class SmallCNN(torch.nn.Module):
    def __init__(self, classes: int = 4):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(), torch.nn.Linear(16, classes))

    def forward(self, image):
        return self.net(image)
'''


def shape_image(rng, kind: int, h: int, w: int) -> np.ndarray:
    """RGB uint8 [h, w, 3]: a coloured disc, ring, bar or cross on a noisy background."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = rng.uniform(0.35, 0.65) * h, rng.uniform(0.35, 0.65) * w
    r = rng.uniform(0.25, 0.35) * min(h, w)
    d = np.hypot(yy - cy, xx - cx)
    if kind == 0:
        mask = d < r
    elif kind == 1:
        mask = (d < r) & (d > 0.6 * r)
    elif kind == 2:
        mask = (np.abs(yy - cy) < 0.25 * r) & (np.abs(xx - cx) < 1.3 * r)
    else:
        mask = ((np.abs(yy - cy) < 0.2 * r) | (np.abs(xx - cx) < 0.2 * r)) & (np.abs(yy - cy) < r) & (np.abs(xx - cx) < r)
    img = rng.normal(60, 15, (h, w, 3))
    img[mask] = rng.uniform(150, 255, 3)
    return img.clip(0, 255).astype(np.uint8)


def png_bytes(img: np.ndarray) -> bytes:
    """A plain 8-bit PNG (RGB or grey), filter 0 rows."""
    h, w = img.shape[:2]
    ch = 1 if img.ndim == 2 else img.shape[2]
    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0 if ch == 1 else 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.fixture()
def shapes(tmp_path):
    """160 PNGs of 4 shapes, sizes 24..64, and labels.csv (with a header)."""
    rng = np.random.default_rng(7)
    folder = tmp_path / "shapes"
    folder.mkdir()
    lines = ["file,label"]
    for i in range(160):
        k = i % 4
        img = shape_image(rng, k, int(rng.integers(24, 65)), int(rng.integers(24, 65)))
        if i % 17 == 0:
            img = img.mean(axis=2).astype(np.uint8)  # some grey PNGs
        (folder / f"{i:03d}.png").write_bytes(png_bytes(img))
        lines.append(f"{i:03d}.png,{KINDS[k]}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_preprocessing_is_pytorchs(shapes):
    img = shape_image(np.random.default_rng(3), 1, 45, 70)
    got = preprocess(png_bytes(img), (32, 32), (0.5, 0.4, 0.3), (0.25, 0.2, 0.3))
    x = torch.from_numpy(img).float().permute(2, 0, 1)[None] / 255.0
    x = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    want = ((x - torch.tensor([0.5, 0.4, 0.3])[None, :, None, None]) / torch.tensor([0.25, 0.2, 0.3])[None, :, None, None])[0]
    assert got.shape == (3, 32, 32) and got.dtype == np.float32
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ImageDataError, match="x.png: cannot decode PNG"):
        preprocess(b"not a png", (32, 32), where="x.png")


def test_bad_labels_name_the_line(shapes):
    (shapes / "labels.csv").write_text("file,label\n000.png,disc\n999.png,ring\n")
    with pytest.raises(ImageDataError, match=r"labels.csv line 3: no image .*999.png"):
        read_labels(shapes)
    (shapes / "labels.csv").write_text("000.png,disc\n001.png\n")
    with pytest.raises(ImageDataError, match=r"labels.csv line 2: expected `file,label`"):
        read_labels(shapes)
    (shapes / "labels.csv").write_text("000.png,disc\n001.png,ring\n")
    with pytest.raises(ImageDataError, match=r"line 2: label `ring` is not one of the classes"):
        read_labels(shapes, classes=["disc", "bar"])


def test_images_to_a_served_bundle(shapes, tmp_path):
    from test_train import start_host

    if not PLUGIN.exists():
        pytest.fail(f"{PLUGIN} is missing: build it with scripts/build-plugins")
    proc, address, fp = start_host(tmp_path / "host")
    try:
        (tmp_path / "models.py").write_text(MODELS)
        bundle = tmp_path / "shapes-cnn"
        cmd = [sys.executable, "-m", "tensorgate", "--fingerprint", fp, "train-images", "--images", str(shapes),
               "--model", "models.py:SmallCNN", "--epochs", "12", "--seed", "1", "--size", "32", "32",
               "--bundle", str(bundle), "--plugin", str(PLUGIN), "--upload", address]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        report = json.loads(run.stdout)
        assert report["images"] == 160 and report["upload"] is not None
        epochs = report["epochs"]
        assert epochs[-1]["loss"] < epochs[0]["loss"]
        assert epochs[-1]["val_accuracy"] >= 0.5, epochs[-1]  # 4 classes: chance is 0.25
        ref = np.load(bundle / "reference.npz")
        scripted = torch.jit.load(str(bundle / "model.pt"))
        with tensorgate.Client(address, fingerprint=fp) as client:
            files = [bundle / "samples" / f for f in ref["files"]]
            replies = client.predict("shapes-cnn", [f.read_bytes() for f in files], content_type="image/png")
            for f, reply, scores in zip(files, replies, ref["scores"]):
                # Served: top-k labels and scores from the image plugin; local: torch on the same preprocessing.
                x = torch.from_numpy(preprocess(f.read_bytes(), (32, 32)))[None]
                with torch.no_grad():
                    local = scripted(x)[0].numpy()
                np.testing.assert_allclose(local, scores, rtol=1e-5, atol=1e-6)
                top = reply["top_k"]
                assert len(top) == 3 and top[0]["label"] == KINDS[int(np.argmax(local))]
                assert top[0]["score"] == pytest.approx(float(local.max()), rel=1e-5, abs=1e-6)
    finally:
        stop([proc])
