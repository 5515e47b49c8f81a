"""Tabular application in Python (the TFaaS `/json` case), as plugins/tabular:
the client sends `{"keys": [...], "values": [...]}`; the values are ordered
by the manifest's `params.features` into one f32 row; the model's scores
come back as `{label: score}` using the manifest's labels."""

import tensorgate_plugin as tg


class Tabular(tg.Plugin):
    @staticmethod
    def describe():
        return tg.PluginInfo("py-tabular", "JSON keys/values -> f32 features -> {label: score}", version="1", accepts=["application/json"])

    def __init__(self, manifest):
        self.features = manifest.param_as("features", list)
        self.labels = manifest.labels

    def preprocess(self, item):
        # The host parses the JSON and orders the values by the features:
        # one call, no value handled in Python.
        return tg.Prepared([tg.ops.json_rows(item, self.features, "keys-values")])

    def postprocess(self, out):
        return tg.Output.json(tg.labels.scores_map(self.labels, out.tensor(0).to_list()))

    # The host groups the items waiting for this plugin into one call; these
    # two handle such a group with one host call each way (the per-item
    # methods above say the same thing, one item at a time).
    def preprocess_batch(self, items):
        rows = tg.ops.json_rows_each(items, self.features, "keys-values")
        return [tg.Prepared([r]) if isinstance(r, tg.Tensor) else r for r in rows]

    def postprocess_batch(self, outs):
        replies = tg.ops.scores_json_each([o.tensor(0) for o in outs], self.labels)
        return [tg.Output(r, "application/json") if isinstance(r, bytes) else r for r in replies]


Plugin = tg.export(Tabular)
