"""Caffe's databases, read as Caffe wrote them: LMDB (``lmdb`` package, the ``lmdb`` extra) and
LevelDB (``plyvel``, the ``leveldb`` extra), one serialized ``Datum`` per record, in key order
(the order Caffe's Data layer reads them; ``convert_imageset`` numbers its keys so that this is
the list's order).

A ``Datum`` (caffe.proto) holds ``channels``, ``height``, ``width``, a ``label`` and either
``data`` (uint8 bytes, C x H x W, colour channels in OpenCV's BGR order), ``float_data`` (float
values, same layout) or, with ``encoded``, the bytes of a JPEG/PNG file. Encoded images are
decoded with Pillow (the ``image`` extra) as Caffe decodes them with OpenCV: colour as BGR, grey
as one channel (``force_color`` / ``force_gray`` of ``transform_param`` choose).

:func:`open_database` returns a :class:`DatumDatabase`, which reads records only when a batch
asks for them: its ``inputs`` and ``labels`` behave as the arrays the Data layer indexes with a
batch's item numbers (``inputs[index]``, ``labels[index]``), and read each record once per batch.
"""

import io
from pathlib import Path

import numpy as np

from ..caffe.wire import WIRE_FIXED32, WIRE_LENGTH, WIRE_VARINT, _iter_fields, _WireError
from ..errors import DataError

#: Datum field numbers (caffe.proto).
CHANNELS, HEIGHT, WIDTH, DATA, LABEL, FLOAT_DATA, ENCODED = 1, 2, 3, 4, 5, 6, 7

EXTRAS = {"LMDB": ("lmdb", "lmdb"), "LEVELDB": ("plyvel", "leveldb")}


class Datum:
    """One decoded record: ``shape`` (C, H, W), ``label`` and the image as an array."""

    __slots__ = ("shape", "label", "array")

    def __init__(self, shape, label, array):
        self.shape, self.label, self.array = shape, label, array


def decode_datum(buffer, key="?", *, color=None):
    """The :class:`Datum` serialized in ``buffer`` (bytes). ``color``: True or False to force
    colour or grey when decoding an encoded image (Caffe's force_color / force_gray), None to
    keep the image's own. A record that is not a Datum is a one-line DataError naming ``key``."""
    fields = {CHANNELS: 0, HEIGHT: 0, WIDTH: 0, LABEL: 0, ENCODED: 0}
    data = None
    floats = []
    try:
        for number, wire, value in _iter_fields(buffer, 0, len(buffer)):
            if number in fields and wire == WIRE_VARINT:
                fields[number] = value
            elif number == DATA and wire == WIRE_LENGTH:
                data = buffer[value[0] : value[1]]
            elif number == FLOAT_DATA and wire == WIRE_FIXED32:
                floats.append(np.frombuffer(buffer, "<f4", 1, value[0]))
            elif number == FLOAT_DATA and wire == WIRE_LENGTH:  # packed, as some writers do
                floats.append(np.frombuffer(buffer, "<f4", (value[1] - value[0]) // 4, value[0]))
    except _WireError as err:
        raise DataError(f"record '{key}' is not a Caffe Datum: {err}") from None
    label = fields[LABEL] - (1 << 64) if fields[LABEL] >= 1 << 63 else fields[LABEL]
    if fields[ENCODED]:
        array = _decode_image(data or b"", key, color)
        return Datum(array.shape, label, array)
    shape = (fields[CHANNELS], fields[HEIGHT], fields[WIDTH])
    count = shape[0] * shape[1] * shape[2]
    if data:
        array = np.frombuffer(data, np.uint8)
    elif floats:
        array = np.concatenate(floats)
    else:
        raise DataError(f"record '{key}' holds neither data nor float_data")
    if array.size != count:
        raise DataError(f"record '{key}' holds {array.size} values for its {shape[0]}x{shape[1]}x{shape[2]} shape")
    return Datum(shape, label, array.reshape(shape))


def _decode_image(data, key, color):
    """An encoded JPEG/PNG as (C, H, W) uint8, BGR for colour, as OpenCV's imdecode gives it."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise DataError("encoded images in a database need Pillow: pip install 'netlayers[image]'") from None
    try:
        with Image.open(io.BytesIO(data)) as image:
            grey_image = image.mode in ("1", "L", "I;16", "I", "F", "LA")
            grey = (color is False) or (color is None and grey_image)
            pixels = np.asarray(image.convert("L" if grey else "RGB"))
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"record '{key}': encoded image cannot be decoded ({err.__class__.__name__})") from None
    if grey:
        return pixels[np.newaxis]
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)[::-1])  # RGB -> BGR, as OpenCV


class DatumDatabase:
    """The records of a Caffe LMDB or LevelDB, by position in key order.

    ``inputs`` (shape (N, C, H, W) of the first record) and ``labels`` (shape (N,)) are views
    the Data layer indexes like arrays; each batch's records are read once and decoded by
    :func:`decode_datum`. Every record must have the first record's shape (Caffe's Data layer
    needs one size per batch; resize with ``convert_imageset --resize_height/--resize_width``).
    """

    def __init__(self, path, backend, *, color=None):
        self.path = Path(path)
        self.backend = backend
        self.color = color
        self._db = _open(self.path, backend)
        self.keys = self._db.keys()
        if not self.keys:
            raise DataError(f"the {backend} database holds no records", file=str(self.path))
        first = self.record(0)
        self.item_shape = tuple(int(d) for d in first.shape)
        self.dtype = first.array.dtype
        self.inputs = _Column(self, 0, (len(self.keys), *self.item_shape), self.dtype)
        self.labels = _Column(self, 1, (len(self.keys),), np.dtype(np.int64))
        self._cached = (None, None)

    def __len__(self):
        return len(self.keys)

    def record(self, position):
        key = self.keys[position]
        return decode_datum(self._db.get(key), key.decode("utf-8", "replace"), color=self.color)

    def batch(self, index):
        """(images, labels) of the records at positions ``index`` (read once for both)."""
        index = np.atleast_1d(np.asarray(index))
        token = index.tobytes()
        if self._cached[0] != token:
            images = np.empty((len(index), *self.item_shape), self.dtype)
            labels = np.empty(len(index), np.int64)
            for i, position in enumerate(index):
                datum = self.record(int(position))
                if tuple(datum.shape) != self.item_shape:
                    key = self.keys[int(position)].decode("utf-8", "replace")
                    raise DataError(
                        f"record '{key}' is {_shown(datum.shape)}, the first record {_shown(self.item_shape)}: "
                        "Caffe's Data layer needs images of one size (convert_imageset --resize_height/--resize_width)",
                        file=str(self.path),
                    )
                images[i], labels[i] = datum.array, datum.label
            self._cached = (token, (images, labels))
        return self._cached[1]


def _shown(shape):
    return "x".join(str(int(d)) for d in shape)


class _Column:
    """One column (images or labels) of a :class:`DatumDatabase`, indexed like an array."""

    def __init__(self, database, column, shape, dtype):
        self.database, self.column, self.shape, self.dtype = database, column, shape, dtype
        self.ndim = len(shape)
        self.size = int(np.prod(shape))

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, index):
        if isinstance(index, slice):
            index = np.arange(len(self))[index]
        single = np.ndim(index) == 0
        values = self.database.batch(index)[self.column]
        return values[0] if single else values


def _open(path, backend):
    """A read-only handle on the database at ``path`` with ``keys()`` (sorted) and ``get(key)``."""
    module_name, extra = EXTRAS[backend]
    try:
        module = __import__(module_name)
    except ImportError:
        raise DataError(
            f"reading {backend} databases needs the {module_name} package: pip install 'netlayers[{extra}]'",
            file=str(path),
        ) from None
    if not path.is_dir():
        raise DataError(f"expected a folder holding the {backend} database", file=str(path))
    return _LmdbReader(module, path) if backend == "LMDB" else _LevelDbReader(module, path)


class _LmdbReader:
    def __init__(self, lmdb, path):
        try:
            self.env = lmdb.open(str(path), readonly=True, lock=False, readahead=False, max_readers=16, subdir=True)
        except lmdb.Error as err:
            raise DataError(f"cannot open the LMDB database: {err}", file=str(path)) from None
        with self.env.begin() as txn:
            self._keys = list(txn.cursor().iternext(keys=True, values=False))

    def keys(self):
        return self._keys

    def get(self, key):
        with self.env.begin(buffers=False) as txn:
            return txn.get(key)


class _LevelDbReader:
    def __init__(self, plyvel, path):
        try:
            self.db = plyvel.DB(str(path), create_if_missing=False)
        except plyvel.Error as err:
            raise DataError(f"cannot open the LevelDB database: {err}", file=str(path)) from None
        self._keys = [key for key in self.db.iterator(include_value=False)]

    def keys(self):
        return self._keys

    def get(self, key):
        return self.db.get(key)
