"""Reading and writing arrays: npz weights and solver state, written atomically.

Files are written to a temporary file in the same folder and renamed into place, so a process
killed at any moment leaves either the old file or the new one, never half of one. Nothing is
ever pickled.
"""
import os
import tempfile
import zipfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from .errors import DataError


def save_arrays(path, arrays):
    """Write a dict of arrays as ``.npz`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_arrays(path):
    """Read an ``.npz`` into a dict; a missing or damaged file is a DataError naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", file=str(path))
    if not zipfile.is_zipfile(path):
        raise DataError("not an .npz archive (expected weights or a snapshot written by netlayers)",
                        file=str(path))
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"not a readable .npz file ({err})", file=str(path)) from None


def load_weights(path):
    """Weights by layer name -> list of arrays, from our ``.npz`` or Caffe's ``.caffemodel``."""
    path = Path(path)
    if path.suffix == ".caffemodel":
        from .caffe_compat import read_caffemodel
        return read_caffemodel(path)
    arrays = load_arrays(path)
    by_layer = defaultdict(dict)
    for key, array in arrays.items():
        layer, _, index = key.rpartition("/")
        if not layer or not index.isdigit():
            raise DataError(f"unexpected key '{key}' (expected 'layer/index')", file=str(path))
        by_layer[layer][int(index)] = array
    return {layer: [blobs[i] for i in sorted(blobs)] for layer, blobs in by_layer.items()}
