"""Reading the IDX format of MNIST and Fashion-MNIST.

An IDX file is: two zero bytes, one byte naming the element type, one byte giving the number
of dimensions, then each dimension as a big-endian uint32, then the elements in C order, each
big-endian. A file may be gzip-compressed as a whole; that is recognised by its first two bytes
(0x1f 0x8b), whatever the file is called.

The header is checked before anything is allocated: the size it claims must fit in this
machine's memory and, for a raw file, be exactly what the file holds after the header.
"""

import gzip
import io
import math
import os
import stat
import sys
import zlib

import numpy as np

from netlayers.data._errors import byte_count, check_claimed_size, data_file_error
from netlayers.errors import DataError

#: IDX type byte -> numpy element type (big-endian in the file, native in the result).
IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(np.int16),
    0x0C: np.dtype(np.int32),
    0x0D: np.dtype(np.float32),
    0x0E: np.dtype(np.float64),
}

GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 24  # bytes read per call while filling the result


def read_idx(path):
    """Read the IDX file at ``path`` (raw or gzip-compressed) into a writable numpy array.

    The result has the file's shape and its element type in native byte order (uint8 for
    MNIST images and labels). Any problem (missing or unreadable file, bad magic bytes,
    unknown type byte, truncated header or data, bytes after the data, a broken gzip stream,
    a header claiming more than the memory or the file holds) raises :class:`DataError`
    saying ``data file <path>: <what was expected>``.
    """
    path = os.fspath(path)
    try:
        with _open_maybe_gzip(path) as stream:
            dtype, shape = _read_header(stream, path)
            _check_claim(stream, path, dtype, shape)
            return _read_data(stream, path, dtype, shape)
    except DataError:
        raise
    except FileNotFoundError:
        raise data_file_error(path, "IDX file not found") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise data_file_error(path, f"corrupt gzip stream: {err}") from None
    except OSError as err:
        raise data_file_error(path, f"cannot read IDX file: {err.strerror or err}") from None


def _open_maybe_gzip(path):
    """Open ``path`` for binary reading, decompressing on the fly if it starts with gzip magic."""
    raw = open(path, "rb")
    try:
        magic = raw.read(2)
        raw.seek(0)
    except BaseException:
        raw.close()
        raise
    if magic == GZIP_MAGIC:
        return _GzipReader(raw)
    return raw


class _GzipReader(gzip.GzipFile):
    """A GzipFile that also closes the underlying raw file it was given."""

    def __init__(self, raw):
        super().__init__(fileobj=raw, mode="rb")
        self._raw = raw

    def close(self):
        try:
            super().close()
        finally:
            self._raw.close()


def _read_exact(stream, n):
    """Read up to ``n`` bytes, looping over short reads; fewer only at end of stream."""
    parts = []
    while n > 0:
        part = stream.read(n)
        if not part:
            break
        parts.append(part)
        n -= len(part)
    return b"".join(parts)


def _read_header(stream, path):
    """Parse the magic bytes and dimensions; return (numpy dtype, shape tuple)."""
    magic = _read_exact(stream, 4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0:
        found = "0x" + magic.hex() if magic else "an empty file"
        raise data_file_error(
            path,
            f"not an IDX file: magic bytes {found}, expected 0x0000 followed by a type byte "
            "and the number of dimensions",
        )
    type_byte, ndim = magic[2], magic[3]
    if type_byte not in IDX_TYPES:
        known = ", ".join(f"0x{t:02x}" for t in IDX_TYPES)
        raise data_file_error(path, f"unknown IDX element type 0x{type_byte:02x}, expected one of {known}")
    if ndim == 0:
        raise data_file_error(path, "IDX header gives 0 dimensions, expected at least 1")
    dims = _read_exact(stream, 4 * ndim)
    if len(dims) < 4 * ndim:
        raise data_file_error(
            path,
            f"truncated: header says {ndim} dimensions ({4 * ndim} bytes), found {len(dims)} bytes",
        )
    shape = tuple(int(d) for d in np.frombuffer(dims, dtype=">u4"))
    return IDX_TYPES[type_byte], shape


def _check_claim(stream, path, dtype, shape):
    """Refuse a header whose data would not fit in memory, or (raw file) whose data size
    differs from what the file holds after the header; nothing is allocated here."""
    claimed = math.prod(shape) * dtype.itemsize
    check_claimed_size(path, claimed, f"the header's shape {shape} of {dtype}")
    if isinstance(stream, _GzipReader):
        return  # the uncompressed size is known only once the stream is read
    status = os.fstat(stream.fileno())
    if stat.S_ISREG(status.st_mode):
        held = status.st_size - stream.tell()
        if held != claimed:
            raise _size_mismatch(path, claimed, held)


def _size_mismatch(path, expected, found):
    """The DataError of a data section of ``found`` bytes where the header says ``expected``."""
    if found < expected:
        return data_file_error(path, f"truncated: header says {byte_count(expected)} of data, found {found}")
    return data_file_error(
        path,
        f"header says {byte_count(expected)} of data, found {found} ({found - expected} bytes after the data)",
    )


def _read_data(stream, path, dtype, shape):
    """Read exactly the elements the header announced and return them in native byte order."""
    try:
        out = np.empty(shape, dtype=dtype)
    except (MemoryError, ValueError):
        raise data_file_error(
            path, f"the header's shape {shape} of {dtype} does not fit in the memory free now"
        ) from None
    buffer = memoryview(out.reshape(-1).view(np.uint8))
    expected = buffer.nbytes
    filled = _fill(stream, buffer)
    if filled < expected:
        raise _size_mismatch(path, expected, filled)
    extra = len(stream.read(1))
    if extra:
        raise _size_mismatch(path, expected, expected + extra + _count_rest(stream))
    if dtype.itemsize > 1 and sys.byteorder == "little":
        out.byteswap(inplace=True)
    return out


def _fill(stream, buffer):
    """Fill ``buffer`` from ``stream`` in chunks; return the number of bytes read."""
    filled = 0
    total = buffer.nbytes
    while filled < total:
        view = buffer[filled : min(total, filled + _CHUNK)]
        count = stream.readinto(view)
        if not count:
            break
        filled += count
    return filled


def _count_rest(stream):
    """Count the bytes left in ``stream`` (used only to report trailing garbage)."""
    rest = 0
    while True:
        chunk = stream.read(io.DEFAULT_BUFFER_SIZE * 64)
        if not chunk:
            return rest
        rest += len(chunk)
