"""Exceptions raised by the tensorgate client; `code` is the protocol's error code."""

from __future__ import annotations

import builtins
from typing import Dict, Optional


class TensorgateError(Exception):
    """Base class. `code` is the protocol error code (e.g. "unknown_model") or None."""

    def __init__(self, message: str, code: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}" if self.code else self.message


class RequestError(TensorgateError):
    """The host rejected the whole request (e.g. code "unknown_model", "forbidden")."""


class ItemError(TensorgateError):
    """One item failed; `index` is its position in the request and `metadata`
    the metadata it was sent with (given back by the host)."""

    def __init__(self, message: str, code: Optional[str] = None, index: Optional[int] = None,
                 retry_after_ms: Optional[int] = None, metadata: Optional[Dict[str, str]] = None):
        super().__init__(message, code)
        self.index = index
        self.retry_after_ms = retry_after_ms
        self.metadata = dict(metadata or {})


class ConnectionError(TensorgateError, builtins.ConnectionError):  # noqa: A001 (mirrors the builtin)
    """Connecting, TLS (e.g. a fingerprint mismatch) or the connection itself failed."""


class ProtocolError(TensorgateError):
    """The host's reply broke the protocol."""
