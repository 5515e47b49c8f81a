"""tensorgate: a Python client for tensorgate inference hosts.

    import numpy as np, tensorgate
    with tensorgate.Client("127.0.0.1:7443", fingerprint="ab12...") as client:
        out = client.predict("multi-io", {"x": np.ones((5, 4), "f4"), "y": np.ones((5, 3), "f4")})
        out["h"].shape   # (5, 3): one row per input row, in order

The wire protocol is the Rust client's (`tensorgate._native`), not a second
implementation. ROOT trees: `tensorgate.root.predict_tree`. Scores into
labels: `tensorgate.labels` (softmax, sigmoid, `{label: score}`, top-k);
particle or hit lists into padded arrays and a mask: `tensorgate.records`.
From ROOT files to a served model with one feature spec (docs/training.md):
`tensorgate.spec`, `tensorgate.data`, `tensorgate.train`, `tensorgate.images`,
`tensorgate.inspect`, and `predict_tree(..., spec=...)`.
"""

from . import labels, records
from .client import Client, Outputs, Request, Results
from .errors import ConnectionError, ItemError, ProtocolError, RequestError, TensorgateError
from ._native import __version__

__all__ = [
    "Client", "Outputs", "Request", "Results",
    "TensorgateError", "RequestError", "ItemError", "ConnectionError", "ProtocolError",
    "labels", "records", "__version__",
]
