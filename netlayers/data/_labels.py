"""Checks shared by the readers: turning a label array into int64 class indices."""

import numpy as np

from netlayers.data._errors import data_file_error


def as_labels(labels, *, file, what="labels"):
    """Return ``labels`` as a 1-D int64 array, or raise DataError naming ``file`` and ``what``.

    Integer arrays are accepted as they are; floating arrays only if every value is a whole
    number (as written by tools that store everything as float). Booleans, complex numbers,
    strings and NaN/inf are refused.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise data_file_error(file, f"{what}: expected a 1-D array of class indices, found shape {labels.shape}")
    if labels.dtype.kind in "iu":
        return labels.astype(np.int64, copy=False)
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)):
            raise data_file_error(file, f"{what}: labels contain NaN or infinity")
        whole = np.floor(labels)
        bad = np.flatnonzero(whole != labels)
        if bad.size:
            raise data_file_error(
                file,
                f"{what}: labels must be whole numbers, found {labels[bad[0]]} at index {bad[0]}",
            )
        return whole.astype(np.int64)
    raise data_file_error(file, f"{what}: expected integer labels (or whole-number floats), found dtype {labels.dtype}")
