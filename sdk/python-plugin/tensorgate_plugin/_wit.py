"""Where the contract's bindings come from: the `wit_world` package that
componentize-py generates when it builds a component, or nothing (plain
CPython: the SDK then runs tensors, payloads and operations in place, with
the host's semantics, for unit tests)."""

try:
    from componentize_py_types import Err, Ok
    from wit_world.imports import host, ops, types

    NATIVE = False
except ImportError:  # plain CPython
    Err = Ok = host = ops = types = None
    NATIVE = True
