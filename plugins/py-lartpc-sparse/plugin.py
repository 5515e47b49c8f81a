"""Sparse LArTPC segmentation in Python, as plugins/lartpc-sparse; formats in
manifest.toml. The pixel coordinates, their values, the tiles and the
scores all stay in the host: the plugin reads the plane's shape (two
numbers) and asks the host to lay the pixels into tiles (`ops.tile_pixels`)
and to stitch the scores back (`ops.untile_pixels`)."""

import struct

import tensorgate_plugin as tg
from tensorgate_plugin import ops
from tensorgate_plugin.tiles import TileGrid


def _sparse(entries):
    """The `pixels`, `values` and (height, width) of a sparse `.npz`."""
    arrays = dict(entries)
    for name in ("pixels", "values", "shape"):
        if name not in arrays:
            raise tg.PluginError("tiles", f"sparse npz has no array named `{name}` (expected pixels [n,2] i32, values [n] f32, shape [2] i64)")
    shape = arrays["shape"]
    dims = shape.to_list() if shape.dtype in ("i64", "i32") else []
    if len(dims) != 2 or dims[0] <= 0 or dims[1] <= 0:
        raise tg.PluginError("tiles", f"`shape` must hold 2 positive numbers, got {dims or shape.dtype}")
    return arrays["pixels"], arrays["values"], dims


class LartpcSparse(tg.Plugin):
    @staticmethod
    def describe():
        return tg.PluginInfo("py-lartpc-sparse", "pixel list .npz (pixels, values, shape) -> scores for those pixels, in order",
                             version="1", accepts=["application/x-npz"])

    def __init__(self, manifest):
        self.tile, self.overlap = manifest.param_as("tile", int), manifest.param_as("overlap", int)
        self.labels = manifest.labels

    def preprocess(self, item):
        pixels, values, (h, w) = _sparse(item.npz())
        batch, tiles = ops.tile_pixels(pixels, values, h, w, self.tile, self.overlap)
        return tg.Prepared([batch], keep=[pixels, tiles], context=struct.pack("<qq", h, w))

    def postprocess(self, out):
        pixels, tiles = out.kept
        h, w = struct.unpack("<qq", out.context)
        scores = ops.untile_pixels(out.tensor(0), pixels, tiles, h, w, self.tile, self.overlap)
        tg.labels.check(self.labels, scores.shape[1])
        return (tg.Output.npz([("scores", scores)])
                .with_meta("tiles", len(TileGrid.of(h, w, self.tile, self.overlap))).with_meta("tiles_run", tiles.shape[0]))


Plugin = tg.export(LartpcSparse)
