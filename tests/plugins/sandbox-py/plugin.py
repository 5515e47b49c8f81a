"""A test plugin that probes its own sandbox (tests/e2e/python.rs).

Written against the raw contract bindings (no SDK), so that the sandbox is
tested apart from the SDK. The item is `{"probe": NAME, ...}`; preprocess
tries that probe and postprocess replies `{"probe": NAME, "ok": bool,
"result": ...}` (the exception's type and message when it failed). The model
is the tabular MLP, fed zeros.
"""

import json
import os
import socket
import sys
import time

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import types


def _probe(req):
    name = req["probe"]
    if name == "file":
        with open(req.get("path", "/etc/passwd"), "rb") as f:
            return f.read(16).hex()
    if name == "listdir":
        return os.listdir(req.get("path", "/"))
    if name == "write-file":
        with open("/tmp/tensorgate-sandbox-probe", "w") as f:
            f.write("x")
        return "written"
    if name == "env":
        return {"environ": dict(os.environ), "argv": sys.argv, "cwd": os.getcwd()}
    if name == "connect":
        # A numeric address: no name lookup, no lazily imported codec.
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.connect(("127.0.0.1", int(req["port"])))
        finally:
            s.close()
        return "connected"
    if name == "dns":
        return str(socket.getaddrinfo(b"localhost", 80))
    if name == "clock":
        return {"time": time.time(), "monotonic": time.monotonic()}
    if name == "random":
        return len(os.urandom(16))
    if name == "print":
        print("sandbox-py says hello on stdout")
        print("sandbox-py says hello on stderr", file=sys.stderr)
        return "printed"
    if name == "sleep":
        time.sleep(float(req.get("seconds", 0.5)))
        return "slept"
    if name == "exit":
        os._exit(3)
    raise ValueError(f"unknown probe {name!r}")


class Plugin(exports.Plugin):
    def describe(self):
        return types.PluginInfo(name="sandbox-py", version="1", description="probes its sandbox", accepts=["application/json"])

    def configure(self, manifest):
        pass

    def preprocess(self, items):
        return [Ok(self._one(item)) for item in items]

    def _one(self, item):
        req = json.loads(item.payload.read(0, item.payload.len()))
        try:
            reply = {"probe": req["probe"], "ok": True, "result": _probe(req)}
        except Exception as e:  # the probe's failure is the answer
            reply = {"probe": req["probe"], "ok": False, "result": f"{type(e).__name__}: {e}"}
        zeros = types.Tensor.zeros(types.Dtype.F32, [1, 16])
        return types.Prepared(inputs=[zeros], keep=[], context=json.dumps(reply).encode())

    def postprocess(self, items):
        return [Ok(types.Output(body=types.Body_Bytes(bytes(p.context)), content_type="application/json", metadata=[])) for p in items]
