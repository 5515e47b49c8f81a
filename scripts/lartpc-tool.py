#!/usr/bin/env python3
"""Small stdlib-only helpers for the LArTPC demo (no numpy needed):

    lartpc-tool.py dense SPARSE.npz OUT.npy   sparse sample (pixels, values, shape) -> dense f32 [H, W] plane
    lartpc-tool.py summary REPLY.npz          pixels and per-class counts (argmax) of an lartpc reply
"""
import ast
import struct
import sys
import zipfile

CLASSES = ["background", "track", "shower"]


def load(z: zipfile.ZipFile, name: str):
    b = z.read(name + ".npy")
    assert b[:6] == b"\x93NUMPY", f"{name}: not npy"
    n = struct.unpack("<H", b[8:10])[0] if b[6] == 1 else struct.unpack("<I", b[8:12])[0]
    off = 10 if b[6] == 1 else 12
    header = ast.literal_eval(b[off:off + n].decode("latin1"))
    code = {"<f4": "f", "<i4": "i", "<i8": "q"}[header["descr"]]
    data = b[off + n:]
    return header["shape"], struct.unpack(f"<{len(data) // struct.calcsize(code)}{code}", data)


def dense(src: str, dst: str):
    z = zipfile.ZipFile(src)
    (_, pixels), (_, values), (_, shape) = load(z, "pixels"), load(z, "values"), load(z, "shape")
    h, w = shape
    buf = bytearray(4 * h * w)
    for i, v in enumerate(values):
        struct.pack_into("<f", buf, 4 * (pixels[2 * i] * w + pixels[2 * i + 1]), v)
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({h}, {w}), }}"
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    with open(dst, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + buf)
    print(f"{dst}: {h} x {w} plane, {len(values)} nonzero pixels")


def summary(src: str):
    z = zipfile.ZipFile(src)
    (n, c), scores = load(z, "scores")
    counts = [0] * c
    for i in range(n):
        row = scores[i * c:(i + 1) * c]
        counts[row.index(max(row))] += 1
    print(f"{src}: {n} pixels scored; argmax " + ", ".join(f"{CLASSES[k]} {counts[k]}" for k in range(c)))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "dense":
        dense(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "summary":
        summary(sys.argv[2])
    else:
        sys.exit(__doc__)
