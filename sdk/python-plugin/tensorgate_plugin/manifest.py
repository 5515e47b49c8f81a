"""`Manifest`: the bundle's manifest as `configure` (the plugin's
constructor) gets it: labels, declared inputs and outputs, `[params]`."""

import json

from .errors import PluginError

_KINDS = {int: "an integer", float: "a number", str: "a string", bool: "a boolean", list: "an array", dict: "a table"}


class TensorSpec:
    """One declared model input or output: `name`, `dtype` (`f32`, ...),
    `shape` (a list; -1 marks a dynamic dimension, the batch first)."""

    __slots__ = ("name", "dtype", "shape")

    def __init__(self, name, dtype, shape):
        self.name, self.dtype, self.shape = name, dtype, list(shape)

    def __repr__(self):
        return f"TensorSpec({self.name!r}, {self.dtype!r}, {self.shape})"


# The manifest the host configured this instance with (None natively): errors name its plugin.
_configured = None


class Manifest:
    """The manifest: `name`, `version`, `description`, `labels`, `inputs`
    and `outputs` (lists of `TensorSpec`), and `params` (a dict of raw
    texts: TOML strings as they are, other values as JSON)."""

    def __init__(self, name="", version=1, description="", labels=(), inputs=(), outputs=(), params=None):
        """A manifest (natively: see `native_manifest`)."""
        self.name, self.version, self.description = name, version, description
        self.labels = list(labels)
        self.inputs, self.outputs = list(inputs), list(outputs)
        self.params = dict(params or {})

    @classmethod
    def _from_wit(cls, m):
        from .tensor import _FROM_WIT

        global _configured
        spec = lambda s: TensorSpec(s.name, _FROM_WIT[s.dtype], s.shape)  # noqa: E731
        _configured = cls(m.name, m.version, m.description, m.labels, [spec(s) for s in m.inputs], [spec(s) for s in m.outputs], dict(m.params))
        return _configured

    def param(self, key, default=None):
        """The raw text of parameter `key` (strings as written, other values as JSON), or `default`."""
        return self.params.get(key, default)

    def require(self, key):
        """The raw text of parameter `key`, which must be present (a `manifest` error names it)."""
        if key not in self.params:
            raise PluginError("manifest", f"manifest has no parameter `params.{key}`")
        return self.params[key]

    def param_as(self, key, kind=None, default=...):
        """Parameter `key` parsed from its JSON text (numbers, arrays, tables,
        booleans). With `kind` (`int`, `float`, `str`, `bool`, `list`, `dict`)
        the value must be of that kind (`str`: the raw text); with `default`,
        a missing parameter gives it. Errors (code `manifest`) name `params.KEY`."""
        if default is not ... and key not in self.params:
            return default
        raw = self.require(key)
        if kind is str:
            return raw
        try:
            value = json.loads(raw)
        except ValueError as e:
            raise PluginError("manifest", f"manifest parameter `params.{key}` = {raw}: {e}") from None
        if kind is not None:
            ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value, ok = float(value), True
            if not ok:
                raise PluginError("manifest", f"manifest parameter `params.{key}` = {raw}: expected {_KINDS.get(kind, kind.__name__)}")
        return value


def native_manifest(text_or_dict=None, **fields):
    """A manifest for native tests: from `manifest.toml` text (or a path to
    one), or a dict of its tables, with `[params]` given to the plugin as
    the host gives them (strings raw, other values as JSON)."""
    d = text_or_dict if text_or_dict is not None else {}
    if isinstance(d, str):
        import os
        import tomllib

        if "\n" not in d and os.path.exists(d):
            with open(d, "rb") as f:
                d = tomllib.load(f)
        else:
            d = tomllib.loads(d)
    d = {**d, **fields}
    params = {k: v if isinstance(v, str) else json.dumps(v) for k, v in d.get("params", {}).items()}
    spec = lambda s: TensorSpec(s["name"], s.get("dtype", "f32"), s.get("shape", []))  # noqa: E731
    return Manifest(d.get("name", ""), d.get("version", 1), d.get("description", ""), d.get("labels", []),
                    [spec(s) for s in d.get("inputs", [])], [spec(s) for s in d.get("outputs", [])], params)


