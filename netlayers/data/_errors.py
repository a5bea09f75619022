"""The DataError of a problem inside one data file."""

from netlayers.errors import DataError


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
