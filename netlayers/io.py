"""Reading and writing arrays: npz weights and solver state, written atomically.

Files are written to a temporary file in the same folder (``.<name>.<8 random characters>.tmp``,
created with the mode ``open()`` would give: 0o666 less the umask) and renamed into place, so a
process killed at any moment leaves either the old file or the new one, never half of one (a
kill may leave the temporary file, which :func:`remove_leftover_temporaries` clears). Nothing is
ever pickled.
"""

import math
import os
import re
import tempfile
import zipfile
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np

from .errors import ConfigError, DataError
from .memory import check_size

TEMPORARY_TAIL = r"\.[a-z0-9_]{8}\.tmp"  # what tempfile.mkstemp adds after ``.<name>.``


def as_path(value: object, what: str) -> Path:
    """``value`` as a Path, or a ConfigError saying that ``what`` takes a file or folder name."""
    if isinstance(value, (str, os.PathLike)):
        return Path(value)
    raise ConfigError(f"{what} takes a file or folder name, got {type(value).__name__} {value!r:.60}")


def current_umask():
    """The process's umask, read without changing it where Linux shows it (/proc/self/status);
    elsewhere set and restored at once."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def create_temporary(path):
    """(file descriptor, name) of a new temporary file beside ``path``, named
    ``.<path's name>.<8 random characters>.tmp``, with the mode a plain ``open()`` would give."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
    except OSError:
        pass  # a file system without modes (e.g. FAT) keeps its own
    return fd, tmp


def remove_leftover_temporaries(folder, name_pattern):
    """Delete the temporary files that :func:`create_temporary` made for final names matching
    the regex ``name_pattern`` (a whole name) in ``folder`` and a killed process left behind.
    Only regular files named exactly ``.<name>.<8 characters>.tmp`` are touched. Returns their
    paths."""
    leftover = re.compile(r"\." + name_pattern + TEMPORARY_TAIL)
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        try:
            if leftover.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


def save_arrays(path, arrays):
    """Write a dict of arrays as ``.npz`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_temporary(path)
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


ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first bytes (the second: no members)
# NotImplementedError: a member's compression method is garbage; RuntimeError: it claims to be
# encrypted (zipfile raises both for a damaged header)
_DAMAGED = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError)

#: dtype kinds a weight may have, and how the others are named in messages.
NUMERIC_KINDS = "biuf"
KIND_NAMES = {
    "U": "text",
    "S": "bytes",
    "c": "complex numbers",
    "O": "Python objects",
    "V": "records",
    "M": "dates",
    "m": "time spans",
}


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
        raise DataError("truncated or damaged .npz archive (cannot list its arrays)", file=str(path)) from None


def _member(archive, key, path):
    """One array of an open archive, or a DataError naming the file and the key. The size its
    header claims is checked before anything is allocated (see :func:`_check_claimed_size`)."""
    _check_claimed_size(archive.zip, key, path)
    try:
        value = archive[key]
    except ValueError as err:
        if "pickle" in str(err):
            raise DataError(f"array '{key}' holds Python objects; netlayers never unpickles", file=str(path)) from None
        raise DataError(f"truncated or damaged .npz archive: array '{key}' cannot be read", file=str(path)) from None
    except _DAMAGED:
        raise DataError(f"truncated or damaged .npz archive: array '{key}' cannot be read", file=str(path)) from None
    if not isinstance(value, np.ndarray):
        raise DataError(f"member '{key}' is not a numpy array (.npy)", file=str(path))
    return value


def _check_claimed_size(archive, key, path):
    """Refuse an array whose .npy header claims more bytes than this machine holds (a SizeError)
    or than its zip member holds after the header (a DataError), naming the file and the key.
    A header that cannot be read is left for numpy to report as damage."""
    names = archive.namelist()
    member = key if key in names else f"{key}.npy"
    try:
        info = archive.getinfo(member)
        with archive.open(info) as stream:
            version = np.lib.format.read_magic(stream)
            read_header = {
                (1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0,
            }.get(version)
            if read_header is None:
                return
            shape, _, dtype = read_header(stream)
            header_bytes = stream.tell()
    except _DAMAGED + (KeyError, TypeError):
        return
    claimed = math.prod(shape) * dtype.itemsize
    check_size(claimed, f"array '{key}' of the file {path}")
    held = info.file_size - header_bytes
    if not dtype.hasobject and claimed > held:
        raise DataError(
            f"truncated or damaged .npz archive: array '{key}' cannot be read (its "
            f"header claims {claimed:,} bytes, its member holds {max(held, 0):,})",
            file=str(path),
        )


def is_solver_state(arrays):
    """Whether arrays read by :func:`load_arrays` are a solver state (not weights)."""
    return "format_version" in arrays and "weights_file" in arrays


def weights_file_of(arrays, path):
    """The weights file a solver state at ``path`` names (relative to the state's folder); a
    ConfigError naming the state file when its ``weights_file`` is not one piece of text."""
    value = arrays["weights_file"]
    if value.dtype.kind != "U" or value.shape != () or not str(value):
        raise ConfigError(
            f"must be the weights file's name (text), got an array of {value.dtype} with shape {value.shape}",
            file=str(path),
            field="weights_file",
        )
    weights = Path(str(value))
    return weights if weights.is_absolute() else Path(path).parent / weights


def load_weights(path):
    """Weights by layer name -> list of arrays, from our ``.npz`` or Caffe's ``.caffemodel``;
    given a solver state (``*.solverstate.npz``), the weights file it names, as resuming does.
    Every array must hold numbers (float, int or bool): anything else is a ConfigError naming
    the file and the key."""
    path = Path(path)
    if path.suffix == ".caffemodel":
        from .caffe.wire import read_caffemodel

        return read_caffemodel(path)
    arrays = load_arrays(path)
    if is_solver_state(arrays):  # a snapshot's state: read the weights it names
        path = weights_file_of(arrays, path)
        arrays = load_arrays(path)
        if is_solver_state(arrays):
            raise ConfigError("is a solver state, expected the weights file a solver state names", file=str(path))
    by_layer = defaultdict(dict)
    for key, array in arrays.items():
        layer, _, index = key.rpartition("/")
        if not layer or not index.isdigit():
            raise DataError(f"unexpected key '{key}' (expected 'layer/index')", file=str(path))
        if array.dtype.kind not in NUMERIC_KINDS:
            held = KIND_NAMES.get(array.dtype.kind, "values")
            raise ConfigError(
                f"array '{key}' holds {held} (dtype {array.dtype}), expected numbers (float, int or bool)",
                file=str(path),
            )
        by_layer[layer][int(index)] = array
    return {layer: [blobs[i] for i in sorted(blobs)] for layer, blobs in by_layer.items()}
