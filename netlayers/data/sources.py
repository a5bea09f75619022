"""Finding and loading the data set a ``Data`` layer names in its ``source`` field.

Search order for a relative ``source`` (see :func:`data_roots`): the config file's folder
(``base_dir``), then the current folder (where Caffe looks: its files name sources such as
``examples/mnist/mnist_train_lmdb`` from Caffe's root), then the ``--data-root`` option, then the
``NETLAYERS_DATA_ROOT`` environment variable, then ``~/.cache/netlayers/datasets`` and
``/usr/share/datasets`` (where Debian's ``dataset-fashion-mnist`` package installs
``fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``).
A folder that cannot be looked in (no permission, a name too long) is skipped, and the
not-found message says which and why.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netlayers.data._errors import data_file_error
from netlayers.data._labels import as_labels
from netlayers.data.idx import read_idx
from netlayers.data.npz import read_npz
from netlayers.errors import ConfigError, DataError

ENV_VAR = "NETLAYERS_DATA_ROOT"
USER_CACHE = Path("~/.cache/netlayers/datasets")
SYSTEM_DATASETS = Path("/usr/share/datasets")
BACKENDS = ("IDX", "NPZ", "LMDB", "LEVELDB")

#: Split names that also match files with another prefix (MNIST calls its test split t10k).
SPLIT_ALIASES = {"test": ("test", "t10k")}

IMAGES_TAG = "images-idx3"
LABELS_TAG = "labels-idx1"

FASHION_MNIST_HINT = (
    "to get it: install the Debian package dataset-fashion-mnist "
    "(apt-get install dataset-fashion-mnist) or run netlayers data fashion-mnist"
)
GENERIC_HINT = f"to use another folder: pass --data-root DIR or set {ENV_VAR}"


@dataclass(frozen=True)
class Source:
    """A located data set: its backend ("IDX" or "NPZ") and files.

    For IDX, ``images_path`` and ``labels_path`` are the two IDX files; for NPZ,
    ``images_path`` is the archive and ``labels_path`` is None; for LMDB and LEVELDB,
    ``images_path`` is the database's folder and ``color`` how to decode encoded images (None:
    as stored; True/False: transform_param's force_color / force_gray).
    """

    backend: str
    images_path: Path
    labels_path: Path | None = None
    color: bool | None = None


def data_roots(data_root=None):
    """Return the folders searched for data sets, in order, without duplicates.

    Order: ``data_root`` (the ``--data-root`` option; a path or an ``os.pathsep``-separated
    list), then each entry of ``$NETLAYERS_DATA_ROOT`` (``os.pathsep``-separated), then
    ``~/.cache/netlayers/datasets``, then ``/usr/share/datasets``. Folders need not exist.
    """
    roots = []
    if data_root:
        roots += _split_roots(os.fspath(data_root))
    roots += _split_roots(os.environ.get(ENV_VAR, ""))
    roots += [_expand(USER_CACHE), SYSTEM_DATASETS]
    unique = []
    for root in roots:
        if root not in unique:
            unique.append(root)
    return unique


def _split_roots(text):
    """Split an ``os.pathsep``-separated list of folders, skipping empty entries."""
    return [_expand(Path(part)) for part in text.split(os.pathsep) if part.strip()]


def _expand(path):
    """``path`` with ``~`` expanded, or unchanged when there is no such home folder."""
    try:
        return path.expanduser()
    except RuntimeError:
        return path


def resolve_source(source, backend, *, data_root=None, base_dir=None):
    """Locate the files of ``source`` for ``backend`` and return a :class:`Source`.

    IDX: ``source`` is ``<folder>/<split>`` (e.g. ``fashion-mnist/train``); the files are
    ``<folder>/<split>-images-idx3-ubyte[.gz]`` and ``<folder>/<split>-labels-idx1-ubyte[.gz]``
    (split ``test`` also matches ``t10k-*``). ``source`` may instead name an images IDX file
    directly; its labels file has ``labels-idx1`` in place of ``images-idx3``.
    NPZ: ``source`` is the path of a ``.npz`` file (the suffix may be left out).
    Absolute paths are used as they are; relative ones are tried under ``base_dir``, the
    current folder and then under each of :func:`data_roots`. Not found: one-line DataError
    listing where it looked, where it could not look (and why) and how to get the data set.
    """
    kind = str(backend).upper()
    if kind not in BACKENDS:
        raise ConfigError(
            f"unknown data backend {backend!r}, expected one of {', '.join(BACKENDS)}",
            field="backend",
        )
    source = os.fspath(source)
    if not source.strip():
        raise ConfigError("empty data source, expected a data set path", field="source")
    candidates = _candidates(source, data_root, base_dir)
    if kind == "NPZ":
        return _resolve_npz(source, candidates)
    if kind in ("LMDB", "LEVELDB"):
        return _resolve_database(source, kind, candidates)
    return _resolve_idx(source, candidates)


def _resolve_database(source, kind, candidates):
    """The first candidate that is a folder (an LMDB or LevelDB database is one)."""
    for path in candidates:
        if path.is_dir():
            return Source(kind, path)
    tried = ", ".join(str(path) for path in candidates)
    raise DataError(f"{kind} database '{source}' not found (looked for a folder at: {tried})")


def _candidates(source, data_root, base_dir):
    """The paths ``source`` may stand for, in search order."""
    path = _expand(Path(source))
    if path.is_absolute():
        return [path]
    roots = [root / path for root in data_roots(data_root)]
    try:
        here = [Path.cwd() / path]  # Caffe's own rule: paths relative to the working folder
    except OSError:  # the current folder was deleted
        here = []
    if base_dir is not None and [Path(base_dir) / path] != here:
        return [Path(base_dir) / path] + here + roots
    return here + roots


def _is_file(path, unreadable):
    """``path.is_file()``, except that an OSError (no permission to look, a name too long)
    gives False and is recorded in ``unreadable`` as ``"<folder>: <reason>"``."""
    try:
        return path.is_file()
    except OSError as err:
        unreadable.append(f"{path.parent}: {_reason(err)}")
        return False


def _reason(err):
    """An OSError's reason in a message's words: ``permission denied``."""
    return (err.strerror or type(err).__name__).lower()


def _resolve_npz(source, candidates):
    """Return the first candidate that is a file (also trying a ``.npz`` suffix)."""
    tried, unreadable = [], []
    for cand in candidates:
        options = [cand] if cand.suffix == ".npz" else [cand, cand.with_name(cand.name + ".npz")]
        for option in options:
            if _is_file(option, unreadable):
                return Source("NPZ", option, None)
        tried.append(str(cand))
    raise _not_found(source, "NPZ file", tried, unreadable=unreadable)


def _resolve_idx(source, candidates):
    """Return the first candidate giving both an images and a labels IDX file."""
    tried, partial, unreadable = [], [], []
    for cand in candidates:
        if _is_file(cand, unreadable):
            return _idx_from_images_file(cand)
        for prefix in _split_prefixes(cand.name):
            images = _existing(cand.parent, f"{prefix}-{IMAGES_TAG}-ubyte", unreadable)
            labels = _existing(cand.parent, f"{prefix}-{LABELS_TAG}-ubyte", unreadable)
            if images and labels:
                return Source("IDX", images, labels)
            if images:
                partial.append(f"{images} has no labels file {prefix}-{LABELS_TAG}-ubyte[.gz]")
        tried.append(str(cand.parent))
    database = _database_folder(candidates)
    if database is not None:
        return database
    names = " or ".join(f"{p}-{IMAGES_TAG}-ubyte[.gz]" for p in _split_prefixes(Path(source).name))
    what = f"IDX files {names} (with the matching {LABELS_TAG} file)"
    raise _not_found(source, what, tried, partial, unreadable)


def _database_folder(candidates):
    """The first candidate that is an LMDB (``data.mdb``) or LevelDB (``CURRENT``) folder, as
    a Source of that backend; None if none is. A Caffe file's Data layer with no ``backend``
    means Caffe's default, LevelDB (BVLC's siamese example), where netlayers' default is IDX."""
    for path in candidates:
        for marker, kind in (("data.mdb", "LMDB"), ("CURRENT", "LEVELDB")):
            try:
                if (path / marker).is_file():
                    return Source(kind, path)
            except OSError:
                continue
    return None


def _split_prefixes(name):
    """File-name prefixes a split name may use: ``test`` also matches ``t10k``."""
    return SPLIT_ALIASES.get(name, (name,))


def _existing(folder, stem, unreadable):
    """Return ``folder/stem`` or ``folder/stem.gz`` if one of them is a file, else None."""
    for name in (stem, stem + ".gz"):
        path = folder / name
        if _is_file(path, unreadable):
            return path
    return None


def _idx_from_images_file(images):
    """Pair an images IDX file with its labels file (``images-idx3`` -> ``labels-idx1``)."""
    if IMAGES_TAG not in images.name:
        raise data_file_error(
            str(images),
            f"cannot tell the labels file of an IDX file whose name lacks '{IMAGES_TAG}'; "
            f"expected a name like train-{IMAGES_TAG}-ubyte.gz, or give <folder>/<split>",
        )
    labels = images.with_name(images.name.replace(IMAGES_TAG, LABELS_TAG))
    unreadable = []
    if not _is_file(labels, unreadable):
        why = f" (cannot look in {unreadable[0]})" if unreadable else ""
        raise data_file_error(str(images), f"labels file not found, expected {labels}{why}")
    return Source("IDX", images, labels)


def _not_found(source, what, tried, partial=(), unreadable=()):
    """Build the one-line DataError for a data set that is nowhere to be found."""
    places = ", ".join(dict.fromkeys(tried))
    message = f"data source '{source}' not found: looked for {what} in: {places}"
    if partial:
        message += f"; incomplete: {'; '.join(partial)}"
    if unreadable:
        message += f"; could not look in: {', '.join(dict.fromkeys(unreadable))}"
    hint = FASHION_MNIST_HINT if _is_fashion_mnist(source) else GENERIC_HINT
    return DataError(f"{message}; {hint}")


def _is_fashion_mnist(source):
    """True if ``source`` names the Fashion-MNIST data set (any spelling of the folder)."""
    text = source.lower().replace("_", "-")
    return "fashion-mnist" in text or "fashionmnist" in text


def load_source(source):
    """Load a located :class:`Source` into ``(inputs, labels)``.

    IDX images of shape (N, H, W) become (N, 1, H, W); (N, C, H, W) stay. NPZ data of shape
    (N, D) stay (an MLP input), (N, H, W) become (N, 1, H, W), (N, C, H, W) stay. The element
    type is kept (uint8 for MNIST-style images); labels are int64 of shape (N,). The numbers
    of inputs and labels must agree.
    """
    if source.backend in ("LMDB", "LEVELDB"):
        from .databases import DatumDatabase

        database = DatumDatabase(source.images_path, source.backend, color=source.color)
        return database.inputs, database.labels
    if source.backend == "NPZ":
        data, labels = read_npz(source.images_path)
        return _shape_inputs(data, source.images_path, allow_flat=True), labels
    images = read_idx(source.images_path)
    _check_not_empty(images, source.images_path)
    labels = as_labels(read_idx(source.labels_path), file=str(source.labels_path))
    if len(images) != len(labels):
        raise data_file_error(
            str(source.images_path),
            f"{len(images)} images but {len(labels)} labels in {source.labels_path}",
        )
    return _shape_inputs(images, source.images_path, allow_flat=False), labels


def _check_not_empty(inputs, path):
    """Refuse a data file without items, or whose items hold no values (a zero-size axis)."""
    if inputs.size == 0:
        raise data_file_error(
            str(path), f"holds no data (shape {inputs.shape}); expected at least one item, none of them empty"
        )


def _shape_inputs(inputs, path, *, allow_flat):
    """Bring inputs to (N, C, H, W), or keep (N, D) when ``allow_flat``."""
    if inputs.ndim == 3:
        return inputs[:, np.newaxis, :, :]
    if inputs.ndim == 4 or (allow_flat and inputs.ndim == 2):
        return inputs
    accepted = "(N, D), (N, H, W) or (N, C, H, W)" if allow_flat else "(N, H, W) or (N, C, H, W)"
    raise data_file_error(str(path), f"expected inputs of shape {accepted}, found {inputs.shape}")
