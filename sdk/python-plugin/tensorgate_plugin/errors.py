"""`PluginError`: an error that fails one item (or, from the constructor,
the load of a version) with a short code and a message."""

from . import _wit


class PluginError(Exception):
    """An error with a short machine-readable `code` (e.g. `missing-key`)
    and a human-readable `message`; raised by the SDK and the host's
    operations, and by plugins to fail an item."""

    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = str(code)
        self.message = str(message)

    def __repr__(self):
        return f"PluginError({self.code!r}, {self.message!r})"


def host_call(f, *args):
    """Calls a host function, turning the contract's error into a `PluginError`."""
    try:
        return f(*args)
    except _wit.Err as e:  # only reached in a component, where Err is a class
        v = e.value
        raise PluginError(v.code, v.message) from None


if _wit.NATIVE:

    def host_call(f, *args):  # noqa: F811  (natively nothing raises Err)
        """Calls `f` (natively: directly)."""
        return f(*args)
