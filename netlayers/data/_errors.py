"""The DataError of a problem inside one data file."""

from netlayers.errors import DataError
from netlayers.memory import GIB, SizeError, check_size, gib


def data_file_error(path, message):
    """A DataError saying ``data file <path>: <message>``.

    The path is part of the message, not the error's ``file``: ``file`` and ``line`` are left
    for the config that asked for the data, so a data layer can locate the error at its own
    line (``net.yaml:3: layer 'data': data file /x/train-images-idx3-ubyte: truncated: ...``).
    The path is kept as ``err.data_file``.
    """
    err = DataError(f"data file {path}: {message}")
    err.data_file = str(path)
    return err


def check_claimed_size(path, nbytes, claim):
    """Refuse, before anything is allocated, a file whose header claims more bytes than this
    machine's memory holds: DataError ``data file <path>: <claim> would need X GiB, ...``.
    ``claim`` says what the header claims ("the header's shape (80000, 1000, 1000) of uint8").
    """
    try:
        check_size(nbytes, claim)
    except SizeError as err:
        raise data_file_error(path, str(err)) from None


def byte_count(nbytes):
    """``nbytes`` as a message gives it: ``160 bytes``, or ``78383153152 bytes (73.0 GiB)``."""
    return f"{nbytes} bytes ({gib(nbytes)})" if nbytes >= GIB else f"{nbytes} bytes"
