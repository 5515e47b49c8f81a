"""Logging to the host's log (tagged with the application's name); natively to stderr."""

import sys

from . import _wit

_LEVELS = ("trace", "debug", "info", "warn", "error")


def log(level, message):
    """Writes `message` at `level` (`trace`, `debug`, `info`, `warn`, `error`)."""
    level = "warn" if level == "warning" else level
    if level not in _LEVELS:
        raise ValueError(f"unknown log level {level!r}")
    if _wit.NATIVE:
        print(f"[{level}] {message}", file=sys.stderr)
    else:
        _wit.host.log(getattr(_wit.types.LogLevel, level.upper()), str(message))


def trace(message):
    """Logs at trace level."""
    log("trace", message)


def debug(message):
    """Logs at debug level."""
    log("debug", message)


def info(message):
    """Logs at info level."""
    log("info", message)


def warn(message):
    """Logs at warn level."""
    log("warn", message)


warning = warn


def error(message):
    """Logs at error level."""
    log("error", message)
