"""TorchServe handler equivalent to the tabular plugin (plugins/tabular/src/lib.rs).

Input per request: {"keys": [...], "values": [...]} (the plugin's format; the
values are put in the order of the manifest's `params.features`) or a plain
JSON list of 16 floats already in model order. Output per request:
{label: score} with the manifest's labels, as the plugin replies. Requests
that TorchServe batches together share one forward pass.
"""
import json
import os
import tomllib

import torch


class TabularHandler:
    def __init__(self):
        self.model = None

    def initialize(self, context):
        model_dir = context.system_properties["model_dir"]
        with open(os.path.join(model_dir, "manifest.toml"), "rb") as f:
            manifest = tomllib.load(f)
        self.features = manifest["params"]["features"]
        self.index = {name: i for i, name in enumerate(self.features)}
        self.labels = manifest["labels"]
        torch.set_num_threads(int(os.environ.get("TS_TORCH_THREADS", "1")))
        self.model = torch.jit.load(os.path.join(model_dir, "model.pt"), map_location="cpu")
        self.model.eval()

    def _row(self, body):
        if isinstance(body, (bytes, bytearray)):
            body = json.loads(body)
        elif isinstance(body, str):
            body = json.loads(body)
        if isinstance(body, list):
            if len(body) != len(self.features):
                raise ValueError(f"expected {len(self.features)} values, got {len(body)}")
            return [float(v) for v in body]
        if set(body) != {"keys", "values"}:
            raise ValueError("expected {\"keys\": [...], \"values\": [...]}")
        keys, values = body["keys"], body["values"]
        if len(keys) != len(values):
            raise ValueError(f"{len(keys)} keys but {len(values)} values")
        if len(set(keys)) != len(keys):
            raise ValueError("a key appears more than once")
        row = [None] * len(self.features)
        for k, v in zip(keys, values):
            if k not in self.index:
                raise ValueError(f"unknown key `{k}`")
            row[self.index[k]] = float(v)
        if None in row:
            raise ValueError(f"missing key `{self.features[row.index(None)]}`")
        return row

    def handle(self, data, context):
        rows = [self._row(r.get("body") if r.get("body") is not None else r.get("data")) for r in data]
        with torch.inference_mode():
            scores = self.model(torch.tensor(rows, dtype=torch.float32)).tolist()
        return [dict(zip(self.labels, s)) for s in scores]


_service = TabularHandler()


def handle(data, context):
    if _service.model is None:
        _service.initialize(context)
    if data is None:
        return None
    return _service.handle(data, context)
