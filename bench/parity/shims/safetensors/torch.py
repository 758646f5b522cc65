"""Import shim: see safetensors/__init__.py."""
from . import _unavailable

load_file = save_file = load = save = save_model = load_model = storage_ptr = storage_size = _unavailable
