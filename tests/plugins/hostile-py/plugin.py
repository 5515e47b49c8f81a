"""A Python plugin that misbehaves on request, to test that the host
contains it (the Python twin of tests/plugins/hostile). The item is JSON,
`{"mode": MODE, ...}` (or the item's metadata `mode`); the modes:

- `ok` (default): tabular-like, a `[1, 16]` row of 0.5 in, the model's 4
  scores back as a JSON list;
- `raise`: preprocess raises `ZeroDivisionError` (an `exception` item error);
- `raise-post`: postprocess raises `KeyError`;
- `plugin-error`: preprocess raises `PluginError("hostile", ...)`;
- `loop`: an infinite loop (the host's time budget stops it);
- `grow`: a list of 1 MiB bytes objects grown until memory runs out (a
  `memory` item error when Python catches the `MemoryError`, else a trap);
- `recurse`: unbounded recursion (`RecursionError`);
- `exit`: `SystemExit` from `sys.exit(3)`;
- `bad-return`: preprocess returns a dict instead of `Prepared`;
- `bad-shape`: a `[1, 7]` input where the model takes `[1, 16]`;
- `log-spam`: 10,000 log lines, then as `ok`;
- `print`: prints to stdout and stderr, then as `ok`;
- `huge-output`: a reply of `bytes` (default 1 MiB) bytes.
"""

import sys

import tensorgate_plugin as tg


def _recurse(n):
    return _recurse(n + 1) + 1


class Hostile(tg.Plugin):
    @staticmethod
    def describe():
        return tg.PluginInfo("hostile-py", "misbehaves on request (tests only)", version="1")

    def preprocess(self, item):
        req = item.json() if item.content_type == "application/json" or item.data[:1] == b"{" else {}
        mode = str(req.get("mode", item.meta("mode", "ok")))
        if mode == "raise":
            return 1 / 0
        if mode == "plugin-error":
            raise tg.PluginError("hostile", "hostile plugin: error requested by item")
        if mode == "loop":
            x = 0
            while True:
                x += 1
        if mode == "grow":
            hoard = []
            while True:
                hoard.append(b"\x01" * (1 << 20))
        if mode == "recurse":
            _recurse(0)
        if mode == "exit":
            sys.exit(3)
        if mode == "bad-return":
            return {"inputs": []}
        if mode == "bad-shape":
            return tg.Prepared([tg.Tensor.from_list("f32", [1, 7], [0.5] * 7)])
        if mode == "log-spam":
            for i in range(10_000):
                tg.log.info(f"spam {i}")
        if mode == "print":
            print("hostile-py says hello on stdout")
            print("hostile-py says hello on stderr", file=sys.stderr)
        size = int(req.get("bytes", item.meta("bytes", 1 << 20)))
        return tg.Prepared([tg.Tensor.from_list("f32", [1, 16], [0.5] * 16)], context=f"{mode} {size}")

    def postprocess(self, out):
        mode, size = out.context.decode().split(" ")
        if mode == "raise-post":
            return {}["no such key"]
        if mode == "huge-output":
            return tg.Output.bytes(b"\x07" * int(size), "application/octet-stream")
        return tg.Output.json(out.tensor(0).to_list())


Plugin = tg.export(Hostile)
