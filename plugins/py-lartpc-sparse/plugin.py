"""Sparse LArTPC segmentation in Python, as plugins/lartpc-sparse; formats in
manifest.toml. The pixel values, the tiles and the scores stay in the host:
only the pixel coordinates cross into the plugin."""

import tensorgate_plugin as tg
from tensorgate_plugin.sparse import Pixels
from tensorgate_plugin.tiles import TiledPixels


class LartpcSparse(tg.Plugin):
    @staticmethod
    def describe():
        return tg.PluginInfo("py-lartpc-sparse", "pixel list .npz (pixels, values, shape) -> scores for those pixels, in order",
                             version="1", accepts=["application/x-npz"])

    def __init__(self, manifest):
        self.tile, self.overlap = manifest.param_as("tile", int), manifest.param_as("overlap", int)
        self.labels = manifest.labels

    def preprocess(self, item):
        pixels, values = Pixels.from_npz(item.npz())
        i = pixels.first_duplicate()
        if i is not None:
            raise tg.PluginError("duplicate-pixel", f"pixel {i} at ({pixels.rows[i]}, {pixels.cols[i]}) is listed twice")
        tiled = TiledPixels(pixels, self.tile, self.overlap)
        return tg.Prepared([tiled.input(values)], context=tiled.context())

    def postprocess(self, out):
        tiled = TiledPixels.from_context(out.context)
        scores = tiled.gather(out.tensor(0))
        tg.labels.check(self.labels, scores.shape[1])
        return (tg.Output.npz([("scores", scores)])
                .with_meta("tiles", len(tiled.grid)).with_meta("tiles_run", len(tiled.tiles)))


Plugin = tg.export(LartpcSparse)
