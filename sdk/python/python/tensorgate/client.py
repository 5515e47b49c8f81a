"""`Client`: predict, stream and status against one tensorgate host."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np

from . import _native
from .errors import ItemError

Batch = Union[np.ndarray, Mapping[str, np.ndarray]]


class Results(list):
    """Per-item results in input order; `summary` is the host's summary dict,
    `metadata[i]` the metadata the plugin set on reply i (None if none)."""

    summary: dict
    metadata: list

    def __init__(self, values, summary, metadata=None):
        super().__init__(values)
        self.summary = summary
        self.metadata = metadata if metadata is not None else [None] * len(values)


class Outputs(dict):
    """Output name -> array, one row per input row; `summary` as in `Results`."""

    summary: dict

    def __init__(self, arrays, summary):
        super().__init__(arrays)
        self.summary = summary


def _is_batch(items: Any) -> bool:
    if hasattr(items, "__array_interface__"):
        return True
    return isinstance(items, Mapping) and len(items) > 0 and all(
        hasattr(v, "__array_interface__") for v in items.values())


class Request:
    """A request in flight (from `Client.submit`); `result()` waits for it."""

    def __init__(self, pending, batched: bool, errors: str):
        self._pending, self._batched, self._errors = pending, batched, errors
        self._value = None

    def done(self) -> bool:
        """True once every reply is in (never blocks)."""
        return self._value is not None or self._pending.done()

    def result(self, timeout: Optional[float] = None) -> Union[Results, Outputs]:
        """Waits (GIL released) and returns `Results` or, for a batch, `Outputs`."""
        if self._value is None:
            if self._batched:
                outputs, summary = self._pending.wait(timeout)
                arrays = {name: np.frombuffer(buf, dtype=descr).reshape(shape)
                          for name, descr, shape, buf in outputs}
                self._value = Outputs(arrays, summary)
            else:
                values, first_failed, summary, metadata = self._pending.wait(timeout)
                self._value = Results(values, summary, metadata)
                if first_failed is not None and self._errors == "raise":
                    raise values[first_failed]
        return self._value


class Client:
    """A QUIC connection to a tensorgate host.

    `address` is "HOST:PORT" (default `$TENSORGATE_HOST`, else 127.0.0.1:7443),
    or several cluster gateways ("A:P,B:P" or a list): one is used, and when
    its connection breaks a request's unanswered items are resubmitted
    through the next one (each item still answered once).
    Trust the host by its certificate `fingerprint` (printed by tensorgate-host;
    with several addresses, one for all or a list with one per address)
    or a `ca` PEM file; defaults come from `$TENSORGATE_FINGERPRINT` and
    `$TENSORGATE_CA`. `token` (default `$TENSORGATE_TOKEN`) is a bearer token
    sent with every request. `threads` sizes the client's own I/O runtime.
    """

    def __init__(self, address: Union[str, Sequence[str], None] = None, *,
                 fingerprint: Union[str, Sequence[str], None] = None,
                 ca: Optional[str] = None, token: Optional[str] = None, threads: int = 2):
        address = address or os.environ.get("TENSORGATE_HOST", "127.0.0.1:7443")
        if not isinstance(address, str):
            address = ",".join(address)
        if fingerprint is not None and not isinstance(fingerprint, str):
            fingerprint = ",".join(fingerprint)
        if fingerprint is None and ca is None:
            fingerprint = os.environ.get("TENSORGATE_FINGERPRINT") or None
            ca = None if fingerprint else (os.environ.get("TENSORGATE_CA") or None)
        token = token if token is not None else (os.environ.get("TENSORGATE_TOKEN") or None)
        self._native = _native.NativeClient(address, fingerprint, None if ca is None else str(ca), threads, token)

    def set_token(self, token: Optional[str]) -> None:
        """Sets (None: clears) the bearer token sent with every following request."""
        self._native.set_token(token)

    @property
    def address(self) -> str:
        """The (first) host's resolved address."""
        return self._native.address

    def submit(self, model: str, items: Union[Sequence[Any], Batch], version: Optional[int] = None, *,
               rows_per_item: int = 1, content_type: Optional[str] = None, compress: bool = True,
               errors: str = "raise", raw: bool = False, metadata=None) -> Request:
        """Sends a request without waiting; see `predict` for the arguments."""
        if errors not in ("raise", "return"):
            raise ValueError('errors must be "raise" or "return"')
        if _is_batch(items):
            if isinstance(items, Mapping):
                names, arrays = list(items.keys()), list(items.values())
            else:
                names, arrays = [None], [items]
            pending = self._native.submit_arrays(model, names, arrays, rows_per_item, version, compress, metadata)
            return Request(pending, True, errors)
        pending = self._native.submit(model, items, version, content_type, compress, raw, metadata)
        return Request(pending, False, errors)

    def predict(self, model: str, items: Union[Sequence[Any], Batch], version: Optional[int] = None, *,
                rows_per_item: int = 1, content_type: Optional[str] = None, compress: bool = True,
                errors: str = "raise", raw: bool = False, metadata=None, timeout: Optional[float] = None):
        """Runs `items` through `model` (newest version unless `version`).

        A sequence of items -> `Results`, one value per item in input order.
        Each item is bytes (sent as is, with `content_type`), a NumPy array
        (.npy), a dict of arrays (.npz), a str, or any JSON-able value. Replies
        come back decoded: .npz -> dict of arrays, .npy -> array, JSON ->
        Python values, else bytes (`raw=True`: `(content_type, bytes)`).

        A batch (one array, or a dict name -> array sharing the first
        dimension) -> `Outputs`: its rows are sent as items of `rows_per_item`
        rows and the replies joined back into one array per model output,
        row-aligned with the input; no Python code runs per item.

        `metadata` (a dict for every item, or for a sequence one dict per item)
        is handed to the plugin with each item; reply metadata is in
        `Results.metadata`.

        A failed item raises `ItemError` (`errors="return"`: it is left in the
        results instead); a rejected request raises `RequestError`.
        """
        return self.submit(model, items, version, rows_per_item=rows_per_item, content_type=content_type,
                           compress=compress, errors=errors, raw=raw, metadata=metadata).result(timeout)

    def stream(self, model: str, items: Sequence[Any], version: Optional[int] = None, *,
               content_type: Optional[str] = None, compress: bool = True,
               errors: str = "raise", metadata=None, with_metadata: bool = False) -> Iterator[tuple]:
        """Yields `(index, value)` for each item as it completes (any order).

        Items, values and `metadata` are as for `predict` with a sequence;
        `with_metadata=True` yields `(index, value, reply_metadata)`. A failed
        item raises `ItemError` (`errors="return"`: yielded as the value). The
        iterator's `summary` attribute holds the host's summary at the end.
        """
        if errors not in ("raise", "return"):
            raise ValueError('errors must be "raise" or "return"')
        return self._native.stream(model, items, version, content_type, compress, errors == "raise",
                                   metadata, with_metadata)

    def status(self) -> dict:
        """The host's status: version, uptime and per-model counters."""
        return self._native.status()

    # Model management: each needs the admin role (an admin token, an admin
    # client certificate, or loopback on a host with no admin credential).

    def models(self) -> list:
        """Every application version on the host: dicts with name, version, state, inputs, ..."""
        return self._native.models()

    def upload(self, path, replace: bool = False) -> dict:
        """Uploads a bundle (a directory with manifest.toml, or a .tar.zst of one); waits until it serves."""
        return self._native.upload(str(path), replace)

    def fetch(self, model: str, version: Optional[int] = None, path=None) -> bytes:
        """A bundle as .tar.zst bytes (newest version unless `version`); also written to `path` if given."""
        archive = self._native.fetch(model, version)
        if path is not None:
            with open(path, "wb") as f:
                f.write(archive)
        return archive

    def delete(self, model: str, version: Optional[int] = None) -> dict:
        """Removes one version of `model`, or every version when `version` is None."""
        return self._native.delete(model, version)

    def reload(self, model: Optional[str] = None) -> dict:
        """Makes the host re-read its repository (one model, or all) and load what changed."""
        return self._native.reload(model)

    def promote(self, model: str, version: int) -> dict:
        """Makes `version` the default of `model` (served when a request names none)."""
        return self._native.promote(model, version)

    def rollback(self, model: str) -> dict:
        """The default of `model` is bad: serve the newest earlier version not rolled back.

        The bad version is marked rolled back and still serves requests that name it.
        """
        return self._native.rollback(model)

    def close(self) -> None:
        """Closes the connection."""
        self._native.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"tensorgate.Client({self.address!r})"


__all__ = ["Client", "Request", "Results", "Outputs", "ItemError"]
