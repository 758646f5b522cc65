"""Minimal safetensors writer shared by the bench/parity fixture generators.

Format (https://github.com/huggingface/safetensors): an 8-byte little-endian header length, a JSON
header ({"__metadata__": {...}} first when given, then one entry per tensor with dtype, shape and
data_offsets into the data section), padded with spaces to a multiple of 8 bytes, then the raw
little-endian tensor data, tensors back to back in the header's order.

This writer keeps the caller's order (the order of `arrays`), writes the JSON compactly
(separators "," and ":") and never converts dtypes: callers pick each tensor's dtype by handing in
a numpy array of that dtype. The output therefore depends only on the arrays and metadata, not on
which packages are installed.

Used as a plain module next to the scripts (they are run as scripts, and put their own folder on
sys.path before importing it).
"""
import json
import os
import struct

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# numpy dtype (little-endian) -> safetensors dtype name.
DTYPES = {
    np.dtype("<f4"): "F32",
    np.dtype("<f2"): "F16",
    np.dtype("<f8"): "F64",
    np.dtype("<i8"): "I64",
    np.dtype("<i4"): "I32",
    np.dtype("u1"): "U8",
}


def _little_endian(dtype):
    """The little-endian form of `dtype` (single-byte dtypes are returned unchanged)."""
    return dtype if dtype.itemsize == 1 else dtype.newbyteorder("<")


def write_safetensors(path, arrays, metadata=None, quiet=False):
    """Writes `arrays` (an ordered mapping name -> numpy array) to `path` as safetensors.

    Tensors are written in the mapping's order with the arrays' own dtypes (float32, float16,
    float64, int64, int32, uint8). `metadata` (a dict of str -> str) becomes the header's
    "__metadata__" entry, placed first, when it is not None. The file is written to `path + ".tmp"`
    and moved into place with os.replace. Prints "wrote <path relative to the repo> (<n> tensors,
    <bytes> bytes)" unless `quiet`.
    """
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    blobs = []
    offset = 0
    for name, arr in arrays.items():
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"{name}: expected a numpy array, got {type(arr).__name__}")
        le = _little_endian(arr.dtype)
        if le not in DTYPES:
            raise TypeError(f"{name}: unsupported dtype {arr.dtype} (supported: {', '.join(sorted(DTYPES.values()))})")
        data = np.ascontiguousarray(arr.astype(le, copy=False)).tobytes()
        header[name] = {"dtype": DTYPES[le], "shape": [int(n) for n in arr.shape], "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)
    if not quiet:
        print(f"wrote {os.path.relpath(path, REPO)} ({len(arrays)} tensors, {os.path.getsize(path)} bytes)")
