"""Reading and writing arrays: npz weights and solver state, written atomically.

Files are written to a temporary file in the same folder and renamed into place, so a process
killed at any moment leaves either the old file or the new one, never half of one. Nothing is
ever pickled.
"""
import os
import tempfile
import zipfile
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np

from .errors import ConfigError, DataError


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


ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")      # a zip's first bytes (the second: no members)
_DAMAGED = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)

#: dtype kinds a weight may have, and how the others are named in messages.
NUMERIC_KINDS = "biuf"
KIND_NAMES = {"U": "text", "S": "bytes", "c": "complex numbers", "O": "Python objects",
              "V": "records", "M": "dates", "m": "time spans"}


def load_arrays(path):
    """Read an ``.npz`` into a dict; a missing or damaged file is a DataError naming it.

    Checked in order: the file exists; it starts like a zip (else it is not an .npz archive at
    all: a text file, an empty file, a .npy); its zip directory is there (else it was cut
    short); every member is an array numpy can read without unpickling."""
    path = Path(path)
    if path.is_dir():
        raise DataError("is a folder, expected an .npz file", file=str(path))
    if not path.is_file():
        raise DataError("file not found", file=str(path))
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic not in ZIP_MAGICS:
        what = "an empty file" if not magic else "expected weights or a snapshot written by netlayers"
        raise DataError(f"not an .npz archive ({what})", file=str(path))
    if not zipfile.is_zipfile(path):
        raise DataError("truncated or damaged .npz archive (its zip directory is missing)", file=str(path))
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: _member(archive, key, path) for key in archive.files}
    except DataError:
        raise
    except _DAMAGED:
        raise DataError("truncated or damaged .npz archive (cannot list its arrays)",
                        file=str(path)) from None


def _member(archive, key, path):
    """One array of an open archive, or a DataError naming the file and the key."""
    try:
        value = archive[key]
    except ValueError as err:
        if "pickle" in str(err):
            raise DataError(f"array '{key}' holds Python objects; netlayers never unpickles",
                            file=str(path)) from None
        raise DataError(f"truncated or damaged .npz archive: array '{key}' cannot be read",
                        file=str(path)) from None
    except _DAMAGED:
        raise DataError(f"truncated or damaged .npz archive: array '{key}' cannot be read",
                        file=str(path)) from None
    if not isinstance(value, np.ndarray):
        raise DataError(f"member '{key}' is not a numpy array (.npy)", file=str(path))
    return value


def load_weights(path):
    """Weights by layer name -> list of arrays, from our ``.npz`` or Caffe's ``.caffemodel``.
    Every array must hold numbers (float, int or bool): anything else is a ConfigError naming
    the file and the key."""
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
        if array.dtype.kind not in NUMERIC_KINDS:
            held = KIND_NAMES.get(array.dtype.kind, "values")
            raise ConfigError(f"array '{key}' holds {held} (dtype {array.dtype}), expected numbers "
                              "(float, int or bool)", file=str(path))
        by_layer[layer][int(index)] = array
    return {layer: [blobs[i] for i in sorted(blobs)] for layer, blobs in by_layer.items()}
