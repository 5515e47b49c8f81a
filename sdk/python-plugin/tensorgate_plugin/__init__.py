"""The tensorgate plugin SDK for Python (plugin contract `tensorgate:plugin@0.3.0`).

A plugin is one class, exported from `plugin.py`:

    import tensorgate_plugin as tg

    class MyNet(tg.Plugin):
        @staticmethod
        def describe():
            return tg.PluginInfo("my-net", "what it does", version="1", accepts=["application/json"])

        def __init__(self, manifest):           # configure: once per instance
            self.threshold = manifest.param_as("threshold", float)

        def preprocess(self, item):             # tg.Item -> tg.Prepared
            ...

        def postprocess(self, out):             # tg.Outputs -> tg.Output
            ...

        # Optional, for code that handles the items the host groups at once:
        # def preprocess_batch(self, items):    # [tg.Item] -> [tg.Prepared | tg.PluginError]
        # def postprocess_batch(self, outs):    # [tg.Outputs] -> [tg.Output | tg.PluginError]

    Plugin = tg.export(MyNet)

Tensors live in the host (`Tensor`); the item's bytes too (`Payload`). A
plugin reads what its logic needs and asks the host for bulk work (`ops`).
Helpers: `npy`, `sparse` (pixel lists), `tiles` (tiling and stitching),
`labels`, `records`, `context`, `log`. Built with componentize-py the SDK
talks to the host; under plain CPython (`NATIVE` is true) tensors, payloads
and operations run in place with the host's semantics, for unit tests
(`native_item`, `native_manifest`)."""

from . import context, labels, log, npy, ops, records, sparse, tiles
from ._wit import NATIVE
from .core import NativePlugin, Output, Outputs, Plugin, PluginInfo, Prepared, export
from .errors import PluginError
from .manifest import Manifest, TensorSpec, native_manifest
from .payload import Item, Payload, native_item
from .tensor import DTYPES, Tensor

__all__ = [
    "NATIVE", "DTYPES", "Item", "Manifest", "NativePlugin", "Output", "Outputs", "Payload", "Plugin", "PluginError",
    "PluginInfo", "Prepared", "Tensor", "TensorSpec", "context", "export", "labels", "log", "native_item",
    "native_manifest", "npy", "ops", "records", "sparse", "tiles",
]
__version__ = "0.3.0"
