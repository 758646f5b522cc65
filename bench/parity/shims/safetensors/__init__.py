"""Import shim for `safetensors` (its Python package wraps a compiled Rust extension Debian does not
ship). diffusers and transformers import it at module load; the parity generators never read or
write model files through it (they write fixtures with bench/parity/safetensors_io.py), so every
entry point raises."""
__version__ = "0.4.1"


def _unavailable(*args, **kwargs):
    raise NotImplementedError("safetensors is a shim here (bench/parity/shims); no file I/O through it")


safe_open = deserialize = serialize = serialize_file = _unavailable


class SafetensorError(Exception):
    pass
