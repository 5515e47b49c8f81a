"""Makes the SDK and the example plugins importable natively."""

import importlib.util
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "sdk" / "python-plugin"))


def load_plugin(rel):
    """Imports ROOT/rel/plugin.py under a unique module name."""
    path = ROOT / rel / "plugin.py"
    spec = importlib.util.spec_from_file_location("plugin_" + rel.replace("/", "_").replace("-", "_"), path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
