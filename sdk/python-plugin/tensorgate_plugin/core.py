"""The plugin's records (`PluginInfo`, `Prepared`, `Outputs`, `Output`), the
`Plugin` base class and `export`, which makes the component's exports of it."""

import gc
import json
import os
import traceback

from . import _wit
from .errors import PluginError
from .manifest import Manifest
from .payload import Item, Payload
from .tensor import Tensor

_SDK_DIR = os.path.dirname(os.path.abspath(__file__))
_STDLIB_DIR = os.path.dirname(os.path.abspath(os.__file__))


class PluginInfo:
    """What the plugin says about itself: `name`, `description`, `version`,
    and the content types `preprocess` accepts (`accepts`, empty: any)."""

    def __init__(self, name, description="", version="", accepts=()):
        self.name, self.description, self.version, self.accepts = name, description, version, list(accepts)

    def __repr__(self):
        return f"PluginInfo({self.name!r}, {self.description!r}, version={self.version!r}, accepts={self.accepts})"


def _context_bytes(context):
    if context is None:
        return b""
    if isinstance(context, str):
        return context.encode()
    if hasattr(context, "finish"):  # a tensorgate_plugin.context.Writer
        return context.finish()
    return bytes(context)


def _tensors(what, tensors):
    tensors = list(tensors)
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise PluginError("bad-return", f"{what}[{i}] is a {type(t).__name__}, not a tensorgate_plugin.Tensor")
    return tensors


class Prepared:
    """What `preprocess` hands to the model: `inputs` (one tensor per model
    input, one leading batch size), tensors to `keep` for `postprocess`
    (they stay in the host meanwhile), and an opaque `context` (bytes, a
    str, or a `context.Writer`) given back to `postprocess`."""

    def __init__(self, inputs, keep=(), context=b""):
        self.inputs = _tensors("inputs", inputs)
        self.keep = _tensors("keep", keep)
        self.context = _context_bytes(context)

    def _to_wit(self):
        return _wit.types.Prepared([t._take_handle() for t in self.inputs], [t._take_handle() for t in self.keep], self.context)


class Outputs:
    """What `postprocess` gets for one item: the model's output `tensors`
    (flattened in order), the `kept` tensors and the `context` bytes."""

    def __init__(self, tensors, kept=(), context=b""):
        self.tensors, self.kept, self.context = list(tensors), list(kept), bytes(context)

    def tensor(self, i):
        """Model output `i`, or a `no-output` error naming how many there are."""
        if not 0 <= i < len(self.tensors):
            raise PluginError("no-output", f"model returned {len(self.tensors)} tensor(s), no output {i}")
        return self.tensors[i]

    def take_kept(self, i):
        """Takes kept tensor `i` (e.g. into the reply); a `context` error if there is none."""
        if not 0 <= i < len(self.kept):
            raise PluginError("context", f"preprocess kept {len(self.kept)} tensor(s), no tensor {i}")
        return self.kept.pop(i)


class Output:
    """The reply for one item: a body of bytes, or named tensors the host
    writes as an uncompressed `.npz`; its content type; metadata entries
    over the item's own (which the host echoes)."""

    def __init__(self, data=None, content_type="application/octet-stream", npz=None, metadata=()):
        """Use `Output.json`, `Output.bytes` or `Output.npz`."""
        self.data, self.npz_entries, self.content_type, self.metadata = data, npz, content_type, list(metadata)

    @classmethod
    def json(cls, value):
        """A JSON reply (compact, as the Rust SDK writes it)."""
        try:
            data = json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as e:
            raise PluginError("encode", f"cannot encode reply as JSON: {e}") from None
        return cls(data, "application/json")

    @classmethod
    def bytes(cls, data, content_type="application/octet-stream"):
        """A reply of raw bytes of `content_type`."""
        return cls(bytes(data), content_type)

    @classmethod
    def npz(cls, entries, content_type="application/x-npz"):
        """A `.npz` reply of named tensors (`[(name, Tensor)]` or a dict),
        written by the host (their data never enters the plugin)."""
        entries = list(entries.items()) if isinstance(entries, dict) else [(str(n), t) for n, t in entries]
        _tensors("npz", [t for _, t in entries])
        return cls(None, content_type, npz=entries)

    def with_meta(self, key, value):
        """Adds one metadata entry; returns the output."""
        self.metadata.append((str(key), str(value)))
        return self

    def with_metadata(self, entries):
        """Adds metadata entries (a dict or `[(key, value)]`); returns the output."""
        for k, v in (entries.items() if isinstance(entries, dict) else entries):
            self.with_meta(k, v)
        return self

    def to_bytes(self):
        """The reply's body as the host sends it (natively an npz body is written here)."""
        if self.npz_entries is None:
            return self.data
        from .npy import write_npz

        return write_npz(self.npz_entries)

    def _to_wit(self):
        T = _wit.types
        if self.npz_entries is None:
            body = T.Body_Bytes(self.data)
        else:
            body = T.Body_Npz([(n, t._take_handle()) for n, t in self.npz_entries])
        return T.Output(body, self.content_type, self.metadata)


class Plugin:
    """One network's pre- and post-processing. Subclass it, then export it
    with `Plugin = tensorgate_plugin.export(MyPlugin)` in `plugin.py`:

    - `describe()` (a static method): a `PluginInfo`;
    - `__init__(self, manifest)`: the `configure` call, once per instance,
      before any item; raise `PluginError` to fail the version's load;
    - `preprocess(self, item)`: an `Item` in, a `Prepared` out;
    - `postprocess(self, outputs)`: an `Outputs` in, an `Output` out.

    The host hands a plugin the items it has waiting in one call; by
    default the SDK calls `preprocess` and `postprocess` on each. A plugin
    that handles a group at once (one host operation for all its items)
    overrides `preprocess_batch(self, items)` and/or
    `postprocess_batch(self, outputs)`: a list in, a list of as many results
    out, in order, each a `Prepared` / `Output` or an exception (a
    `PluginError`) that fails that item only.

    An exception other than `PluginError` fails the item with code
    `exception` and its type, message and place."""

    def __init__(self, manifest):
        self.manifest = manifest

    @staticmethod
    def describe():
        """Describes the plugin; called once when the application loads."""
        raise NotImplementedError

    def preprocess(self, item):
        """Turns one client item into model input tensors."""
        raise NotImplementedError

    def postprocess(self, outputs):
        """Turns the model's outputs for one item into its reply."""
        raise NotImplementedError

    def preprocess_batch(self, items):
        """Turns a group of `Item`s into one `Prepared` (or exception) per
        item, in order. Override it only to handle the group at once."""
        raise NotImplementedError

    def postprocess_batch(self, outputs):
        """Turns a group of `Outputs` into one `Output` (or exception) per
        item, in order. Override it only to handle the group at once."""
        raise NotImplementedError


def _overrides(plugin, name):
    """Whether `plugin`'s class defines its own `name` (a batch method)."""
    return getattr(type(plugin), name, None) is not getattr(Plugin, name)


def _each(plugin, name, batch_name, kind, inputs):
    """Runs a group through `plugin`: its batch method when it has one,
    else the per-item method on each input; returns one `kind` or
    `PluginError` per input, in order."""
    if _overrides(plugin, batch_name):
        try:
            results = guarded(getattr(plugin, batch_name), inputs)
            if not isinstance(results, (list, tuple)) or len(results) != len(inputs):
                got = f"{len(results)} results" if isinstance(results, (list, tuple)) else f"a {type(results).__name__}"
                raise PluginError("bad-return", f"{batch_name} returned {got} for {len(inputs)} items")
        except PluginError as e:
            return [e] * len(inputs)
        out = []
        for r in results:
            if isinstance(r, BaseException):
                out.append(_exception_error(r))
            elif isinstance(r, kind):
                out.append(r)
            else:
                out.append(PluginError("bad-return", f"{batch_name} returned a {type(r).__name__} for an item, not a tensorgate_plugin.{kind.__name__}"))
        return out
    method = getattr(plugin, name)
    out = []
    for x in inputs:
        try:
            out.append(guarded(lambda: _check(name, method(x), kind)))
        except PluginError as e:
            out.append(e)
    return out


def _where(tb):
    """`file:line in function` of the innermost plugin frame of a traceback."""
    frames = traceback.extract_tb(tb)
    mine = [f for f in frames if not os.path.abspath(f.filename).startswith((_SDK_DIR, _STDLIB_DIR))]
    f = (mine or frames or [None])[-1]
    return f"{os.path.basename(f.filename)}:{f.lineno} in {f.name}" if f else "?"


def _exception_error(e):
    """The `PluginError` an uncaught exception becomes."""
    if isinstance(e, PluginError):
        return e
    if isinstance(e, MemoryError):
        return PluginError("memory", f"MemoryError: the plugin ran out of memory ({_where(e.__traceback__)})")
    if isinstance(e, RecursionError):
        return PluginError("exception", f"RecursionError: {e} ({_where(e.__traceback__)})")
    msg = str(e)
    return PluginError("exception", f"{type(e).__name__}: {msg} ({_where(e.__traceback__)})" if msg else f"{type(e).__name__} ({_where(e.__traceback__)})")


def guarded(f, *args):
    """Runs `f(*args)`; any exception comes out as a `PluginError`. After a
    `MemoryError` the frames holding the memory are released first."""
    try:
        return f(*args)
    except MemoryError as e:
        try:
            err = _exception_error(e)
        except MemoryError:
            err = None
        e.__traceback__ = None
        del e
    except BaseException as e:  # noqa: BLE001  (SystemExit and others fail the item too)
        raise _exception_error(e) from None
    gc.collect()
    raise err or PluginError("memory", "MemoryError: the plugin ran out of memory")


class _Instance:
    """The configured plugin of this instance (a component instance is one thread)."""

    plugin = None


def _configured():
    if _Instance.plugin is None:
        raise PluginError("not-configured", "the host called the plugin before `configure`")
    return _Instance.plugin


def _check(what, value, kind):
    if not isinstance(value, kind):
        raise PluginError("bad-return", f"{what} returned a {type(value).__name__}, not a tensorgate_plugin.{kind.__name__}")
    return value


class NativePlugin:
    """What `export` gives natively: the plugin driven as the host drives it
    (`describe`, `configure`, `preprocess`, `postprocess`, with the SDK's
    types and its exception handling), for tests."""

    cls = None

    def describe(self):
        """The plugin's `PluginInfo`."""
        return self.cls.describe()

    def configure(self, manifest):
        """Makes the plugin of `manifest` (a `Manifest`; raises `PluginError`)."""
        _Instance.plugin = guarded(self.cls, manifest)

    def preprocess(self, item):
        """An `Item` through `preprocess` (raises `PluginError`)."""
        return guarded(lambda: _check("preprocess", _configured().preprocess(item), Prepared))

    def postprocess(self, outputs, kept=(), context=b""):
        """Model outputs through `postprocess` (raises `PluginError`)."""
        return guarded(lambda: _check("postprocess", _configured().postprocess(Outputs(outputs, kept, context)), Output))

    def preprocess_batch(self, items):
        """`Item`s through the plugin as the host sends a group: one
        `Prepared` or `PluginError` per item, in order."""
        return _each(_configured(), "preprocess", "preprocess_batch", Prepared, list(items))

    def postprocess_batch(self, outputs):
        """`Outputs` through the plugin as a group: one `Output` or
        `PluginError` per item, in order."""
        return _each(_configured(), "postprocess", "postprocess_batch", Output, list(outputs))


def export(cls):
    """The component's export class for plugin class `cls`: assign it to a
    top-level `Plugin` in `plugin.py` (`Plugin = export(MyNet)`)."""
    if _wit.NATIVE:
        return type(cls.__name__ + "Export", (NativePlugin,), {"cls": cls})

    from wit_world import exports

    T = _wit.types

    def fail(e):
        return _wit.Err(T.PluginError(e.code, e.message))

    def lower(r):
        """One item's result as the contract's `result`."""
        if isinstance(r, PluginError):
            return fail(r)
        try:
            return _wit.Ok(r._to_wit())
        except BaseException as e:  # noqa: BLE001
            return fail(_exception_error(e))

    class Export(exports.Plugin):
        def describe(self):
            info = cls.describe()
            return T.PluginInfo(info.name, info.version, info.description, list(info.accepts))

        def configure(self, manifest):
            try:
                _Instance.plugin = guarded(cls, Manifest._from_wit(manifest))
            except PluginError as e:
                raise fail(e) from None

        def preprocess(self, items):
            try:
                plugin = _configured()
            except PluginError as e:
                return [fail(e) for _ in items]
            its = [Item(Payload(handle=i.payload), i.content_type, i.metadata) for i in items]
            return [lower(r) for r in _each(plugin, "preprocess", "preprocess_batch", Prepared, its)]

        def postprocess(self, items):
            try:
                plugin = _configured()
            except PluginError as e:
                return [fail(e) for _ in items]
            outs = [Outputs([Tensor._from_handle(h) for h in p.outputs], [Tensor._from_handle(h) for h in p.kept], p.context)
                    for p in items]
            return [lower(r) for r in _each(plugin, "postprocess", "postprocess_batch", Output, outs)]

    Export.__name__ = Export.__qualname__ = "Plugin"
    return Export
