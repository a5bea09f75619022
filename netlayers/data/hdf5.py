"""HDF5 files as Caffe's HDF5Data and HDF5Output layers read and write them (h5py).

A list file names the ``.h5`` files, separated by white space (Caffe reads it word by word).
Each file holds one dataset per top, named as the top, all with the same number of rows
(axis 0); a top's shape is ``(batch_size,) + dataset.shape[1:]``. Float, double and integer
datasets are read (cast to the net's precision, as Caffe does); one file is in memory at a
time.

Order (Caffe 1.0's): without shuffling, the files in list order and each file's rows in order,
wrapping from the last row of the last file to the first of the first. With shuffling, the
file order is drawn again at every pass over the list and a file's row order every time it is
visited; here both come from the seed: pass ``p``'s file order from ``(seed, p)``, the row
order of the ``f``-th file of that pass from ``(seed, p, f)``, so the whole state is
``{"pass", "file", "row"}`` and a resumed run continues exactly.
"""

import numpy as np

from netlayers.data._errors import data_file_error
from netlayers.data.listfiles import locate, read_lines, where_looked
from netlayers.errors import DataError

#: Dataset names HDF5Output writes, as Caffe's HDF5_DATA_DATASET_NAME and HDF5_DATA_LABEL_NAME.
OUTPUT_NAMES = ("data", "label")


def require_h5py():
    """The h5py module, or a one-line DataError naming the extra that installs it."""
    try:
        import h5py
    except ImportError:
        raise DataError("HDF5 files need h5py: pip install 'netlayers[hdf5]'") from None
    return h5py


def read_hdf5_list(list_path):
    """The HDF5 files a list names, as found paths: each word of the file (Caffe reads it with
    ``>>``), relative to the working folder, else to the list's folder. A name not found, or a
    list naming none, is a DataError at the list's line."""
    files = []
    for number, line in read_lines(list_path, "HDF5 list file"):
        for name in line.split():
            found = locate(name, list_path.parent)
            if found is None:
                raise DataError(
                    f"no such HDF5 file '{name}' ({where_looked(name, list_path.parent)})",
                    file=str(list_path),
                    line=number,
                )
            files.append(found)
    if not files:
        raise DataError("names no HDF5 file (one file name per line expected)", file=str(list_path))
    return files


def dataset_shapes(path, names):
    """``{name: shape}`` of the datasets ``names`` in the HDF5 file ``path``, checked as Caffe
    checks them (present, numeric, at least one axis, the same number of rows, here also at
    least one row), reading no data."""
    h5py = require_h5py()
    try:
        with h5py.File(path, "r") as handle:
            shapes = {name: _checked_dataset(handle, name, path).shape for name in names}
    except OSError as err:
        raise data_file_error(path, f"not a readable HDF5 file ({err})") from None
    rows = {shape[0] for shape in shapes.values()}
    if len(rows) > 1:
        listed = ", ".join(f"'{name}' {shape[0]}" for name, shape in shapes.items())
        raise data_file_error(path, f"the datasets must have the same number of rows, found {listed}")
    if rows == {0}:
        raise data_file_error(path, "the datasets hold no rows")
    return shapes


def _checked_dataset(handle, name, path):
    """The dataset ``name`` of an open file, refused unless numeric with at least one axis."""
    dataset = handle.get(name)
    if dataset is None or not hasattr(dataset, "dtype"):
        present = ", ".join(sorted(key for key in handle if hasattr(handle[key], "dtype"))) or "none"
        raise data_file_error(
            path, f"no dataset '{name}' (each top names a dataset to read; datasets in the file: {present})"
        )
    if dataset.dtype.kind not in "fiu" or not dataset.shape:
        raise data_file_error(
            path,
            f"dataset '{name}' holds {dataset.dtype} of shape {dataset.shape}: expected "
            "numbers (float, double or integers) with at least one axis",
        )
    return dataset


def load_datasets(path, names, dtype):
    """The datasets ``names`` of ``path`` as arrays of ``dtype``, checked as by
    :func:`dataset_shapes`."""
    dataset_shapes(path, names)
    h5py = require_h5py()
    try:
        with h5py.File(path, "r") as handle:
            return [np.asarray(handle[name][()], dtype=dtype) for name in names]
    except OSError as err:
        raise data_file_error(path, f"cannot read the datasets ({err})") from None


class HDF5Rows:
    """Rows of the listed HDF5 files in Caffe's order (see the module notes), one file in
    memory at a time. ``row_shapes`` are each dataset's shape past axis 0, which every file
    must share."""

    def __init__(self, files, names, row_shapes, *, shuffle=False, seed=0, dtype=np.float32):
        self.files, self.names, self.row_shapes = list(files), list(names), [tuple(s) for s in row_shapes]
        self.shuffle, self.seed, self.dtype = bool(shuffle), int(seed), np.dtype(dtype)
        self.pass_, self.file, self.row = 0, 0, 0
        self._loaded = None  # (pass, file, arrays, row order)

    def state(self):
        """The position of the next row: ``{"pass": p, "file": f, "row": r}``."""
        return {"pass": self.pass_, "file": self.file, "row": self.row}

    def set_state(self, state):
        """Continue at a position :meth:`state` gave; one that does not fit the files (they
        changed since, or the state is damaged) is a ValueError saying why, changing nothing."""
        if not isinstance(state, dict) or set(state) != {"pass", "file", "row"}:
            raise ValueError(f"data state {state!r:.60} is not of the form {{'pass': p, 'file': f, 'row': r}}")
        values = [state[key] for key in ("pass", "file", "row")]
        if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0 for v in values):
            raise ValueError(f"data state {state!r:.60} holds something that is not an integer >= 0")
        pass_, file, row = (int(v) for v in values)
        if file >= len(self.files):
            raise ValueError(f"data state names file {file} of a list of {len(self.files)}; the list changed")
        rows = len(self._arrays(pass_, file)[0][0])
        if row >= rows:
            raise ValueError(f"data state names row {row} of a file of {rows} rows; the file changed")
        self.pass_, self.file, self.row = pass_, file, row

    def fill(self, outs):
        """Copy the next ``len(outs[0])`` rows into ``outs`` (one array per dataset), wrapping
        across files and passes, and advance."""
        done, need = 0, len(outs[0])
        while done < need:
            arrays, order = self._arrays(self.pass_, self.file)
            take = min(need - done, len(order) - self.row)
            index = order[self.row : self.row + take]
            for out, array in zip(outs, arrays):
                out[done : done + take] = array[index]
            done += take
            self.row += take
            if self.row == len(order):
                self._next_file()

    def _next_file(self):
        self.row, self.file = 0, self.file + 1
        if self.file == len(self.files):
            self.pass_, self.file = self.pass_ + 1, 0

    def _file_order(self, pass_):
        """Which listed file is the ``f``-th of pass ``pass_``."""
        if not self.shuffle or len(self.files) == 1:
            return np.arange(len(self.files))
        return np.random.default_rng([self.seed, pass_]).permutation(len(self.files))

    def _arrays(self, pass_, file):
        """The arrays of the ``file``-th file of pass ``pass_`` and its row order, loaded on
        first use (a single file is loaded once)."""
        path = self.files[self._file_order(pass_)[file]]
        loaded = self._loaded
        if loaded is None or loaded[0] != path:
            arrays = load_datasets(path, self.names, self.dtype)
            for name, array, shape in zip(self.names, arrays, self.row_shapes):
                if array.shape[1:] != shape:
                    raise data_file_error(
                        path,
                        f"dataset '{name}' has rows of shape {array.shape[1:]}, the first file's "
                        f"have {shape}: every listed file must have the same row shapes",
                    )
            loaded = (path, arrays, {})
            self._loaded = loaded
        orders = loaded[2]
        key = (pass_, file)
        if key not in orders:
            rows = len(loaded[1][0])
            orders.clear()
            orders[key] = (
                np.random.default_rng([self.seed, pass_, file]).permutation(rows) if self.shuffle else np.arange(rows)
            )
        return loaded[1], orders[key]


def create_output(path):
    """Create (or empty) the HDF5 file HDF5Output writes to, as Caffe does at setup."""
    h5py = require_h5py()
    try:
        h5py.File(path, "w").close()
    except OSError as err:
        raise DataError(f"cannot create the HDF5 output file '{path}': {err}") from None


def append_output(path, arrays):
    """Append one batch to the datasets :data:`OUTPUT_NAMES` of ``path``: the first batch
    makes them (the file Caffe writes), later batches add rows (Caffe stops at the second)."""
    h5py = require_h5py()
    try:
        with h5py.File(path, "a") as handle:
            for name, array in zip(OUTPUT_NAMES, arrays):
                if name not in handle:
                    handle.create_dataset(name, data=array, maxshape=(None,) + array.shape[1:], chunks=True)
                    continue
                dataset = handle[name]
                if dataset.shape[1:] != array.shape[1:]:
                    raise DataError(
                        f"cannot add rows of shape {array.shape[1:]} to dataset '{name}' of "
                        f"'{path}', whose rows have shape {dataset.shape[1:]}"
                    )
                start = dataset.shape[0]
                dataset.resize(start + len(array), axis=0)
                dataset[start:] = array
    except OSError as err:
        raise DataError(f"cannot write the HDF5 output file '{path}': {err}") from None
