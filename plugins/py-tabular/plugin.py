"""Tabular application in Python (the TFaaS `/json` case), as plugins/tabular:
the client sends `{"keys": [...], "values": [...]}`; the values are ordered
by the manifest's `params.features` into one f32 row; the model's scores
come back as `{label: score}` using the manifest's labels."""

import json

import tensorgate_plugin as tg


class Tabular(tg.Plugin):
    @staticmethod
    def describe():
        return tg.PluginInfo("py-tabular", "JSON keys/values -> f32 features -> {label: score}", version="1", accepts=["application/json"])

    def __init__(self, manifest):
        self.features = manifest.param_as("features", list)
        self.labels = manifest.labels

    def preprocess(self, item):
        req = item.json()
        if not isinstance(req, dict) or set(req) != {"keys", "values"}:
            raise tg.PluginError("malformed-json", 'item is not the expected JSON: want {"keys": [...], "values": [...]}')
        keys, values = req["keys"], req["values"]
        if len(keys) != len(values):
            raise tg.PluginError("length-mismatch", f"{len(keys)} keys but {len(values)} values")
        given = dict(zip(keys, values))
        if len(given) != len(keys):
            repeated = next(k for i, k in enumerate(keys) if k in keys[:i])
            raise tg.PluginError("duplicate-key", f"key `{repeated}` appears more than once")
        unknown = next((k for k in keys if k not in self.features), None)
        if unknown is not None:
            raise tg.PluginError("unknown-key", f"unknown key `{unknown}`; expected {json.dumps(self.features)}")
        missing = next((f for f in self.features if f not in given), None)
        if missing is not None:
            raise tg.PluginError("missing-key", f"missing key `{missing}`")
        row = [given[f] for f in self.features]
        return tg.Prepared([tg.Tensor.from_list("f32", [1, len(row)], row)])

    def postprocess(self, out):
        return tg.Output.json(tg.labels.scores_map(self.labels, out.tensor(0).to_list()))


Plugin = tg.export(Tabular)
