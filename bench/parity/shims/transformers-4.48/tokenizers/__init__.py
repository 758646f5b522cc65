"""Import shim for `tokenizers` (a compiled Rust package Debian does not ship), for the transformers
4.48 stack only (bench/parity/upstream.py STACK_SHIMS): transformers 4.48 imports it at load time
(integrations/ggml.py via configuration_utils), although Dinov2-with-registers never tokenizes.
Every name is a class that raises when used."""
__version__ = "0.21.0"


def _stub(name):
    def fail(*args, **kwargs):
        raise NotImplementedError(f"tokenizers.{name} is a shim here (bench/parity/shims/transformers-4.48)")
    return type(name, (), {"__init__": fail, "__call__": fail})


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return _stub(name)
