"""Reading data sets stored as numpy ``.npz`` archives with arrays ``data`` and ``label``."""

import os
import zipfile
import zlib

import numpy as np

from netlayers.data._errors import data_file_error
from netlayers.data._labels import as_labels

DATA_KEY = "data"
LABEL_KEY = "label"


def read_npz(path):
    """Read ``(data, label)`` from the ``.npz`` archive at ``path`` (pickles are refused).

    ``data`` must be a numeric array whose first axis indexes the items (NaN/inf refused);
    ``label`` a 1-D array of the same length holding integers or whole-number floats, returned
    as int64. Any problem raises :class:`DataError` naming the file (``data file <path>: ...``)
    and the key.
    """
    path = os.fspath(path)
    archive = _open(path)
    try:
        data = _get(archive, path, DATA_KEY)
        label = _get(archive, path, LABEL_KEY)
    finally:
        archive.close()
    _check_data(data, path)
    label = as_labels(label, file=path, what=f"key '{LABEL_KEY}'")
    if len(label) != len(data):
        raise data_file_error(
            path,
            f"key '{DATA_KEY}' has {len(data)} items but key '{LABEL_KEY}' has {len(label)}",
        )
    return data, label


def _open(path):
    """Open the archive lazily; translate every way of failing into DataError."""
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise data_file_error(path, "NPZ file not found") from None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError):
        raise data_file_error(
            path, "not a readable .npz archive (not a zip file, or a truncated one)"
        ) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise data_file_error(
            path,
            "expected a .npz archive with arrays 'data' and 'label', found a single .npy array",
        )
    return archive


def _get(archive, path, key):
    """Return ``archive[key]`` or raise DataError saying which keys exist."""
    if key not in archive.files:
        found = ", ".join(repr(k) for k in archive.files) or "none"
        raise data_file_error(path, f"missing key '{key}' (keys found: {found})")
    try:
        return archive[key]
    except (ValueError, OSError, zipfile.BadZipFile, zlib.error, EOFError) as err:
        if "pickle" in str(err):
            why = "it holds Python objects, which are never unpickled"
        else:
            why = "the archive is truncated or damaged"
        raise data_file_error(path, f"key '{key}': cannot be read: {why}") from None


def _check_data(data, path):
    """Refuse non-numeric, 0-dimensional or non-finite ``data`` arrays."""
    if data.dtype.kind not in "iuf":
        raise data_file_error(
            path,
            f"key '{DATA_KEY}': expected a numeric (integer or float) array, "
            f"found dtype {data.dtype}",
        )
    if data.ndim < 1:
        raise data_file_error(path, f"key '{DATA_KEY}': expected an array of items, found a scalar")
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        raise data_file_error(path, f"key '{DATA_KEY}': data contain NaN or infinity")
