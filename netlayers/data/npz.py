"""Reading data sets stored as numpy ``.npz`` archives with arrays ``data`` and ``label``.

Each array's ``.npy`` header is read before the array: the size it claims must fit in this
machine's memory and be what the archive member holds, so a hostile header allocates nothing.
"""

import math
import os
import zipfile
import zlib

import numpy as np

from netlayers.data._errors import byte_count, check_claimed_size, data_file_error
from netlayers.data._labels import as_labels

DATA_KEY = "data"
LABEL_KEY = "label"


def read_npz(path):
    """Read ``(data, label)`` from the ``.npz`` archive at ``path`` (pickles are refused).

    ``data`` must be a numeric array whose first axis indexes at least one item, none of them
    empty (NaN/inf refused); ``label`` a 1-D array of the same length holding integers or
    whole-number floats, returned as int64. Any problem (including a header claiming more
    than the memory or the archive member holds) raises :class:`DataError` naming the file
    (``data file <path>: ...``) and the key.
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
    except OSError as err:
        if err.errno is None:
            raise data_file_error(path, "not a readable .npz archive (not a zip file, or a truncated one)") from None
        raise data_file_error(path, f"cannot read NPZ file: {err.strerror or err}") from None
    except (ValueError, zipfile.BadZipFile, EOFError):
        raise data_file_error(path, "not a readable .npz archive (not a zip file, or a truncated one)") from None
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
        _check_member(archive, path, key)
        return archive[key]
    except _UNREADABLE as err:
        if "pickle" in str(err):
            why = "it holds Python objects, which are never unpickled"
        else:
            why = "the archive is truncated or damaged"
        raise data_file_error(path, f"key '{key}': cannot be read: {why}") from None


#: What reading a damaged, encrypted or oddly compressed archive member may raise.
_UNREADABLE = (ValueError, OSError, zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError)


def _check_member(archive, path, key):
    """Read the ``.npy`` header of ``key`` and refuse a claimed size larger than this
    machine's memory or different from what the member holds (its size in the zip directory,
    which also bounds what a compressed member can yield). Object arrays are left for numpy
    to refuse as pickles."""
    name = key + ".npy" if key + ".npy" in archive.zip.namelist() else key
    size = archive.zip.getinfo(name).file_size
    with archive.zip.open(name) as member:
        shape, dtype = _read_npy_header(member, path, key)
        header_size = member.tell()
    if dtype.hasobject:
        return
    claimed = math.prod(shape) * dtype.itemsize
    check_claimed_size(path, claimed, f"key '{key}': the header's shape {shape} of {dtype}")
    held = size - header_size
    if held < claimed:
        raise data_file_error(
            path, f"key '{key}': truncated: header says {byte_count(claimed)} of data, the archive member holds {held}"
        )
    if held > claimed:
        raise data_file_error(
            path,
            f"key '{key}': header says {byte_count(claimed)} of data, "
            f"the archive member holds {held} ({held - claimed} bytes after "
            "the data)",
        )


def _read_npy_header(member, path, key):
    """``(shape, dtype)`` from the ``.npy`` header at the start of ``member``; version 3.0
    differs from 2.0 only in the header's text encoding, which a numeric dtype does not use."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(member)
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise ValueError(f"format version {version[0]}.{version[1]}, expected 1.0 to 3.0")
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _, dtype = read(member)
    except ValueError as err:
        first_line = str(err).splitlines()[0] if str(err) else "unreadable"
        raise data_file_error(path, f"key '{key}': not a valid .npy array header ({first_line})") from None
    return tuple(int(d) for d in shape), dtype


def _check_data(data, path):
    """Refuse non-numeric, 0-dimensional or non-finite ``data`` arrays."""
    if data.dtype.kind not in "iuf":
        raise data_file_error(
            path,
            f"key '{DATA_KEY}': expected a numeric (integer or float) array, found dtype {data.dtype}",
        )
    if data.ndim < 1:
        raise data_file_error(path, f"key '{DATA_KEY}': expected an array of items, found a scalar")
    if data.size == 0:
        raise data_file_error(
            path,
            f"key '{DATA_KEY}': holds no data (shape {data.shape}); expected at least one item, none of them empty",
        )
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        raise data_file_error(path, f"key '{DATA_KEY}': data contain NaN or infinity")
