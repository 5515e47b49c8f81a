#!/usr/bin/env python3
"""Exports the TorchScript models of the bundled applications and the
PyTorch reference outputs the tests compare against.

Run with a full torch install (e.g. ~/.cache/tensorgate/torch-venv/bin/python);
the outputs are committed so that building and testing need only the slim
libtorch:
    plugins/tabular/model.pt        16 -> 64 -> 64 -> 4 MLP with softmax
    plugins/tabular/reference.json  request bodies and PyTorch's scores
    plugins/tabular/samples/*.json  demo inputs (one of them deliberately bad)
    plugins/tensors/bundles/*       generic-plugin models, samples and references
    plugins/lartpc-dense/           U-Net (also lartpc-sparse/model.pt), a sparse-stored
                                    cropped wire plane, PyTorch's stitched scores
    plugins/image/                  shape CNN, sample PNGs, PyTorch's scores
    tests/triton/particlenet/       a 3-input ParticleNet-style tagger laid out as a Triton
                                    model (1/model.pt), sample jets, PyTorch's scores
    plugins/tensors/bundles/*-onnx  the tabular MLP, the U-Net and the tagger (the weights
                                    above) exported to ONNX, samples, onnxruntime's outputs
    tests/triton/particlenet-onnx/  the tagger as a Triton `onnxruntime_onnx` model (1/model.onnx)
    plugins/tensors/bundles/*-aoti  the same three as AOTInductor packages (model.pt2, CPU, AVX2),
                                    the ONNX bundles' inputs, the packages' own outputs

`--only onnx` needs only the committed .pt files (plus onnx, onnxscript and
onnxruntime==1.32.0 next to torch) and re-exports just the ONNX files;
`--only aoti` (after it) compiles the .pt2 packages (needs a C++ compiler).

`--only lartpc image` exports only those groups; `--event DIR` writes one
full synthetic LArTPC event (plane-0/1/2.npy, 2400/2400/3456 wires x 1008
ticks, float32) and needs only numpy.
"""
import json
import pathlib
import random
from typing import Dict, Tuple

import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent

# High-level jet features, as a jet tagger would read them from NanoAOD.
TABULAR_FEATURES = [
    "jet_pt", "jet_eta", "jet_phi", "jet_mass", "jet_nconst", "jet_tau21",
    "jet_tau32", "jet_msd", "jet_btag", "jet_chf", "jet_nhf", "jet_cemf",
    "jet_nemf", "jet_muf", "jet_ptd", "jet_axis2",
]
TABULAR_LABELS = ["qcd", "top", "w", "z"]


class TabularMLP(torch.nn.Module):
    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(n_in, 64), torch.nn.ReLU(),
            torch.nn.Linear(64, 64), torch.nn.ReLU(),
            torch.nn.Linear(64, n_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=-1)


def tabular():
    torch.manual_seed(20261122)
    model = TabularMLP(len(TABULAR_FEATURES), len(TABULAR_LABELS)).eval()
    scripted = torch.jit.script(model)
    out_dir = ROOT / "plugins" / "tabular"
    scripted.save(str(out_dir / "model.pt"))

    rng = random.Random(7)
    cases = []
    for _ in range(16):
        values = {f: round(rng.gauss(0.0, 2.0), 4) for f in TABULAR_FEATURES}
        keys = list(values)
        rng.shuffle(keys)  # the plugin must reorder keys by the manifest
        body = {"keys": keys, "values": [values[k] for k in keys]}
        x = torch.tensor([[values[f] for f in TABULAR_FEATURES]], dtype=torch.float32)
        with torch.no_grad():
            scores = scripted(x)[0].tolist()
        cases.append({"request": body, "scores": dict(zip(TABULAR_LABELS, scores))})
    reference = {
        "torch_version": torch.__version__,
        "features": TABULAR_FEATURES,
        "labels": TABULAR_LABELS,
        "cases": cases,
    }
    (out_dir / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    samples = out_dir / "samples"
    samples.mkdir(exist_ok=True)
    for i, case in enumerate(cases[:3]):
        (samples / f"jet-{i}.json").write_text(json.dumps(case["request"]) + "\n")
    bad = dict(cases[0]["request"])
    i = bad["keys"].index("jet_pt")
    bad = {"keys": bad["keys"][:i] + bad["keys"][i + 1:], "values": bad["values"][:i] + bad["values"][i + 1:]}
    (samples / "bad-missing-key.json").write_text(json.dumps(bad) + "\n")
    print(f"tabular: {len(cases)} reference cases")


class PlaneStats(torch.nn.Module):
    """Cheap per-plane summary of a wire-plane image [N, wires, ticks]:
    lit-pixel count, charge sum and per-wire maximum. Used to measure how
    fast whole events move through the host."""

    def forward(self, plane: torch.Tensor) -> Dict[str, torch.Tensor]:
        lit = (plane > 0.0).sum(dim=(1, 2))
        return {"lit": lit, "charge": plane.sum(dim=(1, 2)), "wire_max": plane.amax(dim=2)}


class MultiIO(torch.nn.Module):
    """Two inputs, a tuple of two outputs: shows models with several inputs and outputs."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(4, 3)
        self.b = torch.nn.Linear(3, 3)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        h = torch.tanh(self.a(x) + self.b(y))
        return h, (x.sum(dim=1) * y.sum(dim=1)).to(torch.float64)


class PatchCNN(torch.nn.Module):
    """Small conv net: 64x64 wire-plane patches -> background/track/shower scores."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        )
        self.head = torch.nn.Linear(64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.head(self.features(x).flatten(1)), dim=1)


def patches(n: int, seed: int):
    """n synthetic 1x64x64 patches: empty, a straight track, or a shower-like blob."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = np.zeros((n, 1, 64, 64), dtype=np.float32)
    for i in range(n):
        kind = i % 3
        if kind == 1:
            r0, slope = rng.uniform(8, 56), rng.uniform(-0.8, 0.8)
            for c in range(64):
                r = int(r0 + slope * (c - 32))
                if 0 <= r < 64:
                    out[i, 0, r, c] = rng.uniform(20, 80)
        elif kind == 2:
            cr, cc = rng.uniform(16, 48, size=2)
            for _ in range(150):
                r, c = int(rng.normal(cr, 5)), int(rng.normal(cc, 5))
                if 0 <= r < 64 and 0 <= c < 64:
                    out[i, 0, r, c] = rng.uniform(10, 60)
    return out


def tensors_bundles():
    import numpy as np

    torch.manual_seed(3)
    cnn = torch.jit.script(PatchCNN().eval())
    cnn_dir = ROOT / "plugins" / "tensors" / "bundles" / "patch-cnn"
    cnn.save(str(cnn_dir / "model.pt"))
    sample = patches(3, seed=9)
    np.save(cnn_dir / "sample.npy", sample)
    with torch.no_grad():
        np.save(cnn_dir / "reference.npy", cnn(torch.from_numpy(sample)).numpy())

    base = ROOT / "plugins" / "tensors" / "bundles"
    stats = torch.jit.script(PlaneStats().eval())
    stats.save(str(base / "plane-stats" / "model.pt"))

    torch.manual_seed(11)
    multi = torch.jit.script(MultiIO().eval())
    multi.save(str(base / "multi-io" / "model.pt"))
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 4)).astype(np.float32)
    y = rng.normal(size=(3, 3)).astype(np.float32)
    np.savez(base / "multi-io" / "sample.npz", x=x, y=y)
    with torch.no_grad():
        h, s = multi(torch.from_numpy(x), torch.from_numpy(y))
    np.savez(base / "multi-io" / "reference.npz", h=h.numpy(), s=s.numpy())
    print("tensors: plane-stats, multi-io")


class Slow(torch.nn.Module):
    """A deliberately slow model (~100 chained 256x256 matmuls per row) for
    tests that need one model to be busy while another serves."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.eye(256) * 0.999)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(100):
            x = torch.tanh(x @ self.w)
        return x.sum(dim=1)


def test_apps():
    slow = torch.jit.script(Slow().eval())
    slow.save(str(ROOT / "tests" / "apps" / "slow" / "model.pt"))
    print("tests/apps: slow")


# ---------------------------------------------------------------------------
# A Triton model repository entry for `tensorgate import triton`: a
# ParticleNet-style jet tagger (EdgeConv on k nearest neighbours in eta-phi)
# with three inputs, as Triton's PyTorch backend serves it.

class EdgeConv(torch.nn.Module):
    """One EdgeConv block: for each particle, an MLP over (x_i, x_j - x_i)
    for its k nearest neighbours in `points`, averaged, plus a shortcut."""

    def __init__(self, k: int, cin: int, cout: int):
        super().__init__()
        self.k = k
        self.mlp = torch.nn.Sequential(
            torch.nn.Conv2d(2 * cin, cout, 1), torch.nn.ReLU(), torch.nn.Conv2d(cout, cout, 1), torch.nn.ReLU())
        self.shortcut = torch.nn.Conv1d(cin, cout, 1)

    def forward(self, points: torch.Tensor, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n, c, p = x.shape
        # Padding is moved far away so that it is nobody's neighbour.
        pts = points + (mask == 0).to(points.dtype) * 1e6
        sq = (pts * pts).sum(1, keepdim=True)
        dist = sq.transpose(1, 2) + sq - 2 * pts.transpose(1, 2) @ pts          # [n, p, p]
        idx = dist.topk(self.k + 1, dim=-1, largest=False).indices[:, :, 1:]    # [n, p, k]
        xt = x.transpose(1, 2)                                                  # [n, p, c]
        neighbours = torch.gather(xt.unsqueeze(1).expand(n, p, p, c), 2, idx.unsqueeze(-1).expand(n, p, self.k, c))
        centre = xt.unsqueeze(2).expand(n, p, self.k, c)
        edges = torch.cat([centre, neighbours - centre], -1).permute(0, 3, 1, 2)  # [n, 2c, p, k]
        return torch.relu(self.mlp(edges).mean(-1) + self.shortcut(x)) * mask


class ParticleNetLite(torch.nn.Module):
    """points [N, 2, P] (eta, phi), features [N, 4, P], mask [N, 1, P] ->
    softmax scores [N, 3] (qcd, top, w)."""

    def __init__(self):
        super().__init__()
        self.conv1 = EdgeConv(8, 4, 32)
        self.conv2 = EdgeConv(8, 32, 32)
        self.head = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))

    def forward(self, points: torch.Tensor, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.conv1(points, features, mask)
        h = self.conv2(points, h, mask)
        pooled = h.sum(-1) / mask.sum(-1).clamp(min=1.0)
        return torch.softmax(self.head(pooled), dim=-1)


def jets(counts, width: int, seed: int):
    """Synthetic jets: `counts` particles each, padded to `width`, as
    particle lists and as ParticleNet's (points, features, mask)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    points = np.zeros((len(counts), 2, width), np.float32)
    features = np.zeros((len(counts), 4, width), np.float32)
    mask = np.zeros((len(counts), 1, width), np.float32)
    for i, n in enumerate(counts):
        deta, dphi = rng.normal(0, 0.2, size=(2, n))
        pt = np.sort(rng.exponential(10.0, size=n))[::-1] + 1.0
        points[i, :, :n] = deta, dphi
        features[i, :, :n] = np.log(pt), np.log(pt / pt.sum()), deta, dphi
        mask[i, 0, :n] = 1.0
    return points, features, mask


def triton():
    import numpy as np

    out = ROOT / "tests" / "triton" / "particlenet"
    (out / "1").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(21)
    model = torch.jit.script(ParticleNetLite().eval())
    model.save(str(out / "1" / "model.pt"))
    points, features, mask = jets([20, 32, 7], width=32, seed=8)
    np.savez(out / "sample.npz", points=points, features=features, mask=mask)
    with torch.no_grad():
        scores = model(torch.from_numpy(points), torch.from_numpy(features), torch.from_numpy(mask))
    np.savez(out / "reference.npz", scores=scores.numpy())
    print("tests/triton: particlenet")


# ---------------------------------------------------------------------------
# LArTPC: synthetic wire-plane events, a small U-Net (ubSSNet-like) and the
# reference crop -> forward -> stitch pipeline the host's output is compared to.

PLANE_WIRES = (2400, 2400, 3456)  # MicroBooNE U, V, Y planes
TICKS = 1008                      # time ticks after downsampling
LARTPC_CLASSES = ["background", "track", "shower"]
LARTPC_THRESHOLD = 10.0
LARTPC_TILE = 512
LARTPC_OVERLAP = 64


def lartpc_plane(rng, wires: int, ticks: int = TICKS, vertex=None):
    """One synthetic wire plane [wires, ticks] (float32 charge) and its truth
    labels (0 background, 1 track, 2 shower): tracks as straight lines with a
    Bragg rise at the end, showers as branching clusters, sparse noise hits
    (mostly below threshold); about 95 % of the pixels stay empty and
    about 1 % are above threshold."""
    import numpy as np

    plane = np.zeros((wires, ticks), np.float32)
    label = np.zeros((wires, ticks), np.int64)

    def deposit(r, c, q, cls):
        r, c = np.round(r).astype(np.int64), np.round(c).astype(np.int64)
        ok = (r >= 0) & (r < wires) & (c >= 0) & (c < ticks)
        r, c, q = r[ok], c[ok], q[ok]
        np.add.at(plane, (r, c), q.astype(np.float32))
        label[r, c] = np.maximum(label[r, c], cls)

    if vertex is None:
        vertex = (rng.uniform(0.2, 0.8) * wires, rng.uniform(0.2, 0.8) * ticks)
    # Tracks from the interaction vertex, plus cosmic-like tracks anywhere.
    starts = [vertex] * int(rng.integers(2, 5)) + [
        (rng.uniform(0, wires), rng.uniform(0, ticks)) for _ in range(int(wires / 200 * rng.uniform(1, 2)))]
    for r0, c0 in starts:
        angle, length = rng.uniform(0, 2 * np.pi), rng.uniform(100, 900)
        t = np.arange(0, length, 0.5)
        q = rng.normal(14, 3, t.size).clip(2) * (1 + 2.0 * (t > length - 25))
        rs, cs = r0 + t * np.sin(angle), c0 + t * np.cos(angle)
        for dr, dc, share in ((0, 0, 0.6), (1, 0, 0.2), (-1, 0, 0.2), (0, 1, 0.25), (0, -1, 0.25)):
            deposit(rs + dr, cs + dc, q * share, 1)  # charge shared with neighbouring wires/ticks
    # Showers: branching random walks, charge spread around each segment.
    for _ in range(int(rng.integers(2, 4))):
        stack = [(vertex[0], vertex[1], rng.uniform(0, 2 * np.pi), 1.0)]
        while stack:
            r0, c0, angle, energy = stack.pop()
            length = rng.exponential(60) * energy + 10
            t = np.arange(0, length, 0.25)
            rs = r0 + t * np.sin(angle) + rng.normal(0, 3 * energy + 1, t.size)
            cs = c0 + t * np.cos(angle) + rng.normal(0, 3 * energy + 1, t.size)
            deposit(rs, cs, rng.exponential(12 * energy + 6, t.size), 2)
            r1, c1 = r0 + length * np.sin(angle), c0 + length * np.cos(angle)
            if energy > 0.1:
                for _ in range(int(rng.integers(1, 4))):
                    stack.append((r1, c1, angle + rng.normal(0, 0.45), energy * rng.uniform(0.4, 0.7)))
    # Noise: isolated hits on ~3 % of the pixels, mostly below threshold.
    n = int(0.03 * wires * ticks)
    noise_r, noise_c = rng.integers(0, wires, n), rng.integers(0, ticks, n)
    np.add.at(plane, (noise_r, noise_c), rng.exponential(3.0, n).astype(np.float32))
    return plane, label


def lartpc_event(seed: int):
    """A full event: three planes (2400, 2400, 3456 wires x 1008 ticks)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    tick = rng.uniform(0.25, 0.75) * TICKS
    # The same interaction seen by each plane at the same time, different wires.
    vertices = [(rng.uniform(0.25, 0.75) * w, tick) for w in PLANE_WIRES]
    return [lartpc_plane(rng, w, TICKS, vertex=v) + (v,) for w, v in zip(PLANE_WIRES, vertices)]


def write_event(out: pathlib.Path, seed: int):
    import numpy as np

    out.mkdir(parents=True, exist_ok=True)
    for i, (plane, _, _) in enumerate(lartpc_event(seed)):
        np.save(out / f"plane-{i}.npy", plane)
        print(f"{out}/plane-{i}.npy: {plane.shape}, {100 * (plane == 0).mean():.1f}% empty, "
              f"{100 * (plane > LARTPC_THRESHOLD).mean():.2f}% above threshold")


class UNet(torch.nn.Module):
    """A small two-level U-Net: [N, 1, H, W] charge -> [N, 3, H, W]
    background/track/shower softmax scores (H, W multiples of 4)."""

    def __init__(self, c: int = 8):
        super().__init__()

        def block(i: int, o: int):
            return torch.nn.Sequential(
                torch.nn.Conv2d(i, o, 3, padding=1), torch.nn.ReLU(),
                torch.nn.Conv2d(o, o, 3, padding=1), torch.nn.ReLU())

        self.enc1, self.enc2, self.mid = block(1, c), block(c, 2 * c), block(2 * c, 4 * c)
        self.up2 = torch.nn.ConvTranspose2d(4 * c, 2 * c, 2, stride=2)
        self.dec2 = block(4 * c, 2 * c)
        self.up1 = torch.nn.ConvTranspose2d(2 * c, c, 2, stride=2)
        self.dec1 = block(2 * c, c)
        self.head = torch.nn.Conv2d(c, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.log1p(x.clamp(min=0.0)) / 4.0
        e1 = self.enc1(x)
        e2 = self.enc2(torch.nn.functional.max_pool2d(e1, 2))
        m = self.mid(torch.nn.functional.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        return torch.softmax(self.head(d1), dim=1)


def train_unet(model: UNet, steps: int = 300):
    """A short training on 128x128 crops of synthetic planes (loss on lit pixels
    only), so that the demo's scores mean something; bounded to ~2 min of CPU."""
    import numpy as np

    rng = np.random.default_rng(123)
    planes = [lartpc_plane(rng, 640, TICKS) for _ in range(6)]
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for step in range(steps):
        xs, ys = [], []
        for _ in range(8):
            plane, label = planes[int(rng.integers(len(planes)))]
            lit = np.argwhere(label > 0)
            r, c = lit[int(rng.integers(len(lit)))]
            r0, c0 = int(np.clip(r - 64, 0, plane.shape[0] - 128)), int(np.clip(c - 64, 0, plane.shape[1] - 128))
            x = np.where(plane > LARTPC_THRESHOLD, plane, 0)[r0:r0 + 128, c0:c0 + 128]
            xs.append(x)
            ys.append(np.where(x > 0, label[r0:r0 + 128, c0:c0 + 128], -1))
        x, y = torch.from_numpy(np.stack(xs)[:, None]), torch.from_numpy(np.stack(ys))
        loss = torch.nn.functional.nll_loss(torch.log(model(x) + 1e-6), y, ignore_index=-1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"  unet step {step}: loss {loss.item():.3f}")


def tile_origins(length: int, tile: int, overlap: int):
    """Tile origins along one axis: n = ceil((length - overlap) / (tile - overlap))
    tiles spread evenly (origin_k = k * (length - tile) // (n - 1)); one tile at 0
    when the axis is no longer than a tile."""
    if length <= tile:
        return [0]
    n = -(-(length - overlap) // (tile - overlap))
    return [k * (length - tile) // (n - 1) for k in range(n)]


def owners(length: int, origins, tile: int):
    """For each pixel along an axis, the tile whose centre is nearest (ties go to
    the later tile): the stitching rule."""
    import numpy as np

    bounds = [(a + b + tile) // 2 for a, b in zip(origins, origins[1:])]
    return np.searchsorted(np.array(bounds, dtype=np.int64), np.arange(length), side="right")


def dense_reference(model, plane, threshold=LARTPC_THRESHOLD, tile=LARTPC_TILE, overlap=LARTPC_OVERLAP):
    """The lartpc-dense pipeline in PyTorch: threshold, crop tiles (zero padded),
    skip empty tiles, forward, stitch by nearest tile centre; returns the
    above-threshold pixels (row-major order) and their class scores."""
    import numpy as np

    x = np.where(plane > threshold, plane, 0).astype(np.float32)
    h, w = x.shape
    rows, cols = tile_origins(h, tile, overlap), tile_origins(w, tile, overlap)
    scores = {}
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            crop = np.zeros((tile, tile), np.float32)
            part = x[r:r + tile, c:c + tile]
            crop[:part.shape[0], :part.shape[1]] = part
            if (crop > 0).any():
                with torch.no_grad():
                    scores[(i, j)] = model(torch.from_numpy(crop)[None, None])[0].numpy()
    pixels = np.ascontiguousarray(np.argwhere(x > 0), dtype=np.int32)
    own_r, own_c = owners(h, rows, tile), owners(w, cols, tile)
    out = np.zeros((len(pixels), 3), np.float32)
    for n, (pr, pc) in enumerate(pixels):
        i, j = own_r[pr], own_c[pc]
        out[n] = scores[(i, j)][:, pr - rows[i], pc - cols[j]]
    return pixels, x[pixels[:, 0], pixels[:, 1]], out, len(rows) * len(cols), len(scores)


def lartpc():
    import numpy as np

    torch.manual_seed(2024)
    model = UNet().eval()
    train_unet(model.train())
    model.eval()
    scripted = torch.jit.script(model)
    dense_dir = ROOT / "plugins" / "lartpc-dense"
    scripted.save(str(dense_dir / "model.pt"))
    scripted.save(str(ROOT / "plugins" / "lartpc-sparse" / "model.pt"))

    # Test sample: plane 2 (Y) of event 1, cropped to 640 wires around the
    # vertex, all 1008 ticks: 2 x 3 tiles. Stored sparse (nonzero pixels only,
    # noise included) to stay small; the tests and the demo make it dense.
    plane, _, vertex = lartpc_event(1)[2]
    w0 = int(np.clip(vertex[0] - 320, 0, plane.shape[0] - 640))
    crop = np.ascontiguousarray(plane[w0:w0 + 640])
    nz = np.ascontiguousarray(np.argwhere(crop != 0), dtype=np.int32)
    samples = dense_dir / "samples"
    samples.mkdir(exist_ok=True)
    np.savez(samples / "plane-crop.npz", pixels=nz, values=crop[nz[:, 0], nz[:, 1]],
             shape=np.array(crop.shape, dtype=np.int64))
    pixels, values, scores, n_tiles, n_run = dense_reference(scripted, crop)
    np.savez(dense_dir / "reference.npz", pixels=pixels, scores=scores)
    print(f"lartpc: crop {crop.shape} from wire {w0}, {len(nz)} nonzero ({100 * (crop == 0).mean():.1f}% empty), "
          f"{len(pixels)} above threshold, {n_run}/{n_tiles} tiles run; "
          f"predicted track {np.mean(scores.argmax(1) == 1):.2f} shower {np.mean(scores.argmax(1) == 2):.2f}")

# ---------------------------------------------------------------------------
# Image classification (the TFaaS /image case): synthetic shape images as
# PNG files, a small CNN, PyTorch's decode -> resize -> normalise -> forward.

IMAGE_LABELS = ["disc", "ring", "bar", "cross"]
IMAGE_SIZE = 32
IMAGE_MEAN = [0.5, 0.5, 0.5]
IMAGE_STD = [0.25, 0.25, 0.25]


def shape_image(rng, kind: int, h: int, w: int):
    """An RGB uint8 [h, w, 3] image: a coloured disc, ring, bar or cross on a noisy background."""
    import numpy as np

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = rng.uniform(0.35, 0.65) * h, rng.uniform(0.35, 0.65) * w
    r = rng.uniform(0.2, 0.35) * min(h, w)
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


def write_png(path: pathlib.Path, img):
    """A plain PNG writer (8-bit RGB or grey), cycling the five row filters so
    that a decoder meets all of them."""
    import struct
    import zlib

    import numpy as np

    h, w = img.shape[:2]
    ch = 1 if img.ndim == 2 else img.shape[2]
    a = img.reshape(h, w * ch).astype(np.int16)
    raw = bytearray()
    for y in range(h):
        f = y % 5
        row = a[y]
        left = np.concatenate([np.zeros(ch, np.int16), row[:-ch]])
        up = a[y - 1] if y > 0 else np.zeros_like(row)
        upleft = np.concatenate([np.zeros(ch, np.int16), up[:-ch]])
        if f == 0:
            out = row
        elif f == 1:
            out = row - left
        elif f == 2:
            out = row - up
        elif f == 3:
            out = row - (left + up) // 2
        else:
            p = left + up - upleft
            pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
            out = row - pred
        raw.append(f)
        raw.extend((out % 256).astype(np.uint8).tobytes())

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    color = 0 if ch == 1 else 2
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(bytes(raw), 9)) + chunk(b"IEND", b"")
    path.write_bytes(png)


class ImageCNN(torch.nn.Module):
    """[N, 3, 32, 32] normalised RGB -> [N, 4] class probabilities."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(), torch.nn.Linear(32, len(IMAGE_LABELS)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=1)


def image_input(img):
    """PyTorch's preprocessing: [0, 1] floats, bilinear resize (align_corners=False,
    no antialias) to 32x32, per-channel (x - mean) / std."""
    x = torch.from_numpy(img).float().permute(2, 0, 1)[None] / 255.0
    if x.shape[1] == 1:
        x = x.expand(1, 3, x.shape[2], x.shape[3])
    x = torch.nn.functional.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    return (x - torch.tensor(IMAGE_MEAN)[None, :, None, None]) / torch.tensor(IMAGE_STD)[None, :, None, None]


def image():
    import numpy as np

    torch.manual_seed(77)
    rng = np.random.default_rng(77)
    model = ImageCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(200):
        kinds = rng.integers(0, len(IMAGE_LABELS), 16)
        x = torch.cat([image_input(shape_image(rng, int(k), int(rng.integers(24, 80)), int(rng.integers(24, 80))))
                       for k in kinds])
        loss = torch.nn.functional.nll_loss(torch.log(model(x) + 1e-6), torch.from_numpy(kinds))
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"image: training loss {loss.item():.3f}")
    scripted = torch.jit.script(model.eval())
    out_dir = ROOT / "plugins" / "image"
    scripted.save(str(out_dir / "model.pt"))
    samples = out_dir / "samples"
    samples.mkdir(exist_ok=True)
    cases = []
    for i, (kind, h, w) in enumerate([(0, 48, 40), (1, 64, 64), (2, 37, 90), (3, 120, 100), (0, 20, 20)]):
        img = shape_image(rng, kind, h, w)
        if i == 4:
            img = img.mean(axis=2).astype(np.uint8)  # a greyscale PNG
        name = f"{IMAGE_LABELS[kind]}-{i}.png"
        write_png(samples / name, img)
        with torch.no_grad():
            probs = scripted(image_input(img if img.ndim == 3 else img[:, :, None]))[0].tolist()
        cases.append({"file": name, "label": IMAGE_LABELS[kind], "scores": dict(zip(IMAGE_LABELS, probs))})
    reference = {"torch_version": torch.__version__, "labels": IMAGE_LABELS, "cases": cases}
    (out_dir / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    right = sum(max(c["scores"], key=c["scores"].get) == c["label"] for c in cases)
    print(f"image: {len(cases)} sample PNGs, {right} classified as drawn")

# ---------------------------------------------------------------------------
# ONNX: the shipped models (their committed TorchScript weights, loaded into
# the eager modules above) exported by torch.onnx (the torch.export-based
# exporter) with a dynamic batch dimension, served by the generic tensors
# plugin; reference outputs from onnxruntime (Python) on the same inputs.
# Needs torch, onnx, onnxscript and onnxruntime==1.32.0.

ONNX_OPSET = 18


def export_onnx(model, args, path, input_names, output_names, dynamic_shapes):
    """`model` to a self-contained .onnx file (weights inline)."""
    program = torch.onnx.export(model, args, dynamo=True, input_names=input_names, output_names=output_names,
                                dynamic_shapes=dynamic_shapes, opset_version=ONNX_OPSET, external_data=False)
    program.save(str(path), external_data=False)


def onnxruntime_outputs(path, feeds):
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def check_close(what, ours, torch_out, tol=1e-5):
    import numpy as np

    diff = float(np.max(np.abs(ours - torch_out)))
    print(f"  {what}: max |diff| against eager torch {diff:.2e}")
    assert diff <= tol, f"{what}: differs from eager torch by {diff}"


def onnx_models():
    import numpy as np

    torch.set_num_threads(1)
    bundles = ROOT / "plugins" / "tensors" / "bundles"
    batch = torch.export.Dim("batch", min=1, max=4096)

    # Tabular MLP: the 16 reference cases' feature rows.
    mlp = TabularMLP(len(TABULAR_FEATURES), len(TABULAR_LABELS)).eval()
    mlp.load_state_dict(torch.jit.load(str(ROOT / "plugins" / "tabular" / "model.pt")).state_dict())
    reference = json.loads((ROOT / "plugins" / "tabular" / "reference.json").read_text())
    rows = []
    for case in reference["cases"]:
        values = dict(zip(case["request"]["keys"], case["request"]["values"]))
        rows.append([values[f] for f in TABULAR_FEATURES])
    x = np.array(rows, dtype=np.float32)
    out = bundles / "tabular-onnx"
    export_onnx(mlp, (torch.from_numpy(x),), out / "model.onnx", ["x"], ["scores"], {"x": {0: batch}})
    (scores,) = onnxruntime_outputs(out / "model.onnx", {"x": x})
    with torch.no_grad():
        check_close("tabular-onnx", scores, mlp(torch.from_numpy(x)).numpy())
    np.save(out / "sample.npy", x)
    np.save(out / "reference.npy", scores)

    # LArTPC U-Net: dynamic batch and tile size (multiples of 4); sample: two
    # 128x128 tiles of the thresholded sample plane where it is busiest.
    unet = UNet().eval()
    unet.load_state_dict(torch.jit.load(str(ROOT / "plugins" / "lartpc-dense" / "model.pt")).state_dict())
    sample = np.load(ROOT / "plugins" / "lartpc-dense" / "samples" / "plane-crop.npz")
    plane = np.zeros(tuple(sample["shape"]), np.float32)
    plane[sample["pixels"][:, 0], sample["pixels"][:, 1]] = sample["values"]
    plane = np.where(plane > LARTPC_THRESHOLD, plane, 0).astype(np.float32)
    lit = np.argwhere(plane > 0)
    r, c = (int(v) for v in np.median(lit, axis=0))
    r0, c0 = int(np.clip(r - 128, 0, plane.shape[0] - 256)), int(np.clip(c - 64, 0, plane.shape[1] - 128))
    tiles = np.ascontiguousarray(np.stack([plane[r0:r0 + 128, c0:c0 + 128], plane[r0 + 128:r0 + 256, c0:c0 + 128]])[:, None])
    out = bundles / "unet-onnx"
    h, w = torch.export.Dim("h4", min=1, max=1024), torch.export.Dim("w4", min=1, max=1024)
    export_onnx(unet, (torch.from_numpy(tiles),), out / "model.onnx", ["tiles"], ["scores"],
                {"x": {0: batch, 2: 4 * h, 3: 4 * w}})
    (scores,) = onnxruntime_outputs(out / "model.onnx", {"tiles": tiles})
    with torch.no_grad():
        check_close("unet-onnx", scores, unet(torch.from_numpy(tiles)).numpy())
    np.save(out / "sample.npy", tiles)
    np.save(out / "reference.npy", scores)

    # ParticleNet-style tagger: the Triton test's jets; also laid out as a
    # Triton model repository entry with `platform: "onnxruntime_onnx"`.
    pnet = ParticleNetLite().eval()
    pnet.load_state_dict(torch.jit.load(str(ROOT / "tests" / "triton" / "particlenet" / "1" / "model.pt")).state_dict())
    points, features, mask = jets([20, 32, 7], width=32, seed=8)
    out = bundles / "particlenet-onnx"
    args = tuple(torch.from_numpy(a) for a in (points, features, mask))
    # Any number of particles (at least k + 1 = 9), as the Triton config's `dims: [2, -1]` says.
    particles = torch.export.Dim("particles", min=9, max=4096)
    export_onnx(pnet, args, out / "model.onnx", ["points", "features", "mask"], ["scores"],
                {"points": {0: batch, 2: particles}, "features": {0: batch, 2: particles}, "mask": {0: batch, 2: particles}})
    feeds = {"points": points, "features": features, "mask": mask}
    (scores,) = onnxruntime_outputs(out / "model.onnx", feeds)
    with torch.no_grad():
        check_close("particlenet-onnx", scores, pnet(*args).numpy())
    np.savez(out / "sample.npz", **feeds)
    np.savez(out / "reference.npz", scores=scores)
    triton_dir = ROOT / "tests" / "triton" / "particlenet-onnx"
    (triton_dir / "1").mkdir(parents=True, exist_ok=True)
    (triton_dir / "1" / "model.onnx").write_bytes((out / "model.onnx").read_bytes())
    np.savez(triton_dir / "sample.npz", **feeds)
    np.savez(triton_dir / "reference.npz", scores=scores)
    print("onnx: tabular-onnx, unet-onnx, particlenet-onnx (+ tests/triton/particlenet-onnx)")


# ---------------------------------------------------------------------------
# AOTInductor: the same models (the same weights) through torch.export and
# torch._inductor.aoti_compile_and_package into .pt2 packages for the CPU,
# served by the generic tensors plugin; reference outputs from the package
# itself (torch._inductor.aoti_load_package) on the ONNX bundles' inputs.
# A CPU package holds code for one instruction set: AVX2 here, so that it
# runs on any x86-64 machine the host does (ATEN_CPU_CAPABILITY).


def export_aoti(model, args, path, dynamic_shapes):
    """`model` compiled into the .pt2 package `path`; the loaded package.
    Not linked to libtorch (`aot_inductor.link_libtorch = False`): its
    `aoti_torch_*` calls bind to the libtorch of the process loading it (the
    host's; the slim libtorch's libtorch.so needs libtorch_cuda.so)."""
    import ctypes
    import os

    program = torch.export.export(model, args, dynamic_shapes=dynamic_shapes)
    torch._inductor.aoti_compile_and_package(program, package_path=str(path),
                                             inductor_configs={"aot_inductor.link_libtorch": False})
    # Python loads libtorch_cpu privately: make its symbols global, as in the host.
    ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"), mode=ctypes.RTLD_GLOBAL)
    return torch._inductor.aoti_load_package(str(path))


def aoti_models():
    import os
    import shutil

    import numpy as np

    os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx2")
    torch.set_num_threads(1)
    bundles = ROOT / "plugins" / "tensors" / "bundles"
    batch = torch.export.Dim("batch", min=1, max=4096)

    def save(name, model, inputs, dynamic_shapes):
        out = bundles / f"{name}-aoti"
        out.mkdir(exist_ok=True)
        args = tuple(torch.from_numpy(a) for a in inputs)
        package = export_aoti(model, args, out / "model.pt2", dynamic_shapes)
        with torch.no_grad():
            got = package(*args)
            want = model(*args)
        got = got[0] if isinstance(got, (list, tuple)) else got
        check_close(f"{name}-aoti", got.numpy(), want.numpy())
        return out, got.numpy()

    mlp = TabularMLP(len(TABULAR_FEATURES), len(TABULAR_LABELS)).eval()
    mlp.load_state_dict(torch.jit.load(str(ROOT / "plugins" / "tabular" / "model.pt")).state_dict())
    x = np.load(bundles / "tabular-onnx" / "sample.npy")
    out, scores = save("tabular", mlp, (x,), {"x": {0: batch}})
    shutil.copy(bundles / "tabular-onnx" / "sample.npy", out / "sample.npy")
    np.save(out / "reference.npy", scores)

    unet = UNet().eval()
    unet.load_state_dict(torch.jit.load(str(ROOT / "plugins" / "lartpc-dense" / "model.pt")).state_dict())
    tiles = np.load(bundles / "unet-onnx" / "sample.npy")
    h, w = torch.export.Dim("h4", min=1, max=1024), torch.export.Dim("w4", min=1, max=1024)
    out, scores = save("unet", unet, (tiles,), {"x": {0: batch, 2: 4 * h, 3: 4 * w}})
    shutil.copy(bundles / "unet-onnx" / "sample.npy", out / "sample.npy")
    np.save(out / "reference.npy", scores)

    pnet = ParticleNetLite().eval()
    pnet.load_state_dict(torch.jit.load(str(ROOT / "tests" / "triton" / "particlenet" / "1" / "model.pt")).state_dict())
    sample = np.load(bundles / "particlenet-onnx" / "sample.npz")
    feeds = [sample[k] for k in ("points", "features", "mask")]
    particles = torch.export.Dim("particles", min=9, max=4096)
    out, scores = save("particlenet", pnet, feeds,
                       {"points": {0: batch, 2: particles}, "features": {0: batch, 2: particles}, "mask": {0: batch, 2: particles}})
    shutil.copy(bundles / "particlenet-onnx" / "sample.npz", out / "sample.npz")
    np.savez(out / "reference.npz", scores=scores)
    aoti_cuda_stub()
    print("aoti: tabular-aoti, unet-aoti, particlenet-aoti (+ tests/apps/aoti-cuda)")


def aoti_cuda_stub():
    """tests/apps/aoti-cuda/model.pt2: the tabular package relabelled as
    compiled for CUDA (its metadata; a stub in place of the library), which
    a CPU host must refuse at load, naming the device."""
    import zipfile

    src = ROOT / "plugins" / "tensors" / "bundles" / "tabular-aoti" / "model.pt2"
    out = ROOT / "tests" / "apps" / "aoti-cuda"
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(out / "model.pt2", "w", zipfile.ZIP_STORED) as stub:
        for info in z.infolist():
            if info.filename.endswith(".cpp"):
                continue
            data = z.read(info.filename)
            if info.filename.endswith("metadata.json"):
                data = data.replace(b'"cpu"', b'"cuda"').replace(b'"AOTI_COMPUTE_CAPABILITY": ""', b'"AOTI_COMPUTE_CAPABILITY": "90"')
            if info.filename.endswith(".so"):
                data = b"\x7fELF stub: a CPU host refuses the package before it would load this"
            stub.writestr(zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0)), data)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="export only these groups (tabular tensors tests triton lartpc image onnx aoti)")
    parser.add_argument("--event", metavar="DIR", help="write one full synthetic LArTPC event "
                        "(plane-0/1/2.npy: 2400/2400/3456 wires x 1008 ticks) into DIR and exit")
    parser.add_argument("--seed", type=int, default=1, help="event seed for --event")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.event:
        write_event(pathlib.Path(args.event), args.seed)
        raise SystemExit(0)
    groups = {"tabular": tabular, "tensors": tensors_bundles, "tests": test_apps, "triton": triton, "lartpc": lartpc,
              "image": image, "onnx": onnx_models, "aoti": aoti_models}
    for name, fn in groups.items():
        if not args.only or name in args.only:
            fn()
