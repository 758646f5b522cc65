"""Import shim: see tokenizers/__init__.py."""
from . import _stub


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return _stub(name)
