"""Predictions from a trained model: a training config and its weights in, class probabilities
out.

    >>> from netlayers import Predictor
    >>> predictor = Predictor("configs/lenet_fashion_mnist.yaml", "lenet_fashion_mnist_iter_10000.npz")
    >>> probabilities = predictor.predict(images)      # uint8 (N, 28, 28) -> (N, 10)
    >>> predictor.top_k(probabilities, 3)[0]           # [(9, 'Ankle boot', 0.98), ...]

:class:`Predictor` builds the config's deploy net (:mod:`netlayers.deploy`), and gives it images
as the data set stores them (raw pixels): it applies the TEST transform of the config's data
layer (``scale``, ``mean_value``, centre ``crop_size``) itself. :func:`read_images` reads image
files (PNG, JPEG, ... with Pillow), ``.npy`` arrays and IDX files into such raw arrays.
"""

import threading
from pathlib import Path

import numpy as np

from .errors import ConfigError, DataError

#: Items the deploy net runs at once (a larger input is run in batches of this many).
DEFAULT_BATCH = 64


class Predictor:
    """The deploy net of ``config`` with ``weights``, for one-call predictions. Its inner blobs
    share memory (``deploy_net(share_memory=True)``): after a forward only its input and outputs
    (the predictions) hold their values; build a :func:`~netlayers.deploy_net` to read others.
    (The prediction blob keeps its values too, where a later layer reads it, so that it is not
    an output: ``keep``.)

    ``labels``: a file of class names (one a line) overriding the config's ``labels_file``.
    ``input_shape``: (C, H, W) of the images before the transform, where the config's data set
    is not at hand to tell it (else it is taken from the first images predicted).

    One Predictor may serve several threads (a web server's): :meth:`predict` runs one call at a
    time through its net (built or reshaped, fed, run and its predictions copied out under the
    Predictor's lock), and prepares the images outside it.
    """

    def __init__(
        self, config, weights=None, *, labels=None, input_shape=None, batch=DEFAULT_BATCH, data_root=None, dtype=None
    ):
        from .deploy import _labels, deploy_config

        self.deploy = deploy_config(config, data_root=data_root)
        if len(self.deploy.inputs) != 1:
            names = ", ".join(item.blob for item in self.deploy.inputs) or "none"
            raise ConfigError(
                f"a Predictor feeds nets with one input; this TEST net has {len(self.deploy.inputs)} ({names})",
                file=self.deploy.source,
            )
        self.input = self.deploy.inputs[0]
        self.labels = _labels(labels, Path.cwd(), str(labels)) if labels is not None else self.deploy.labels
        self.weights = weights
        self.batch = int(batch)
        self.dtype = dtype
        self.raw_shape = tuple(input_shape) if input_shape is not None else self.input.raw_shape
        self.transformer = _test_transformer(self.input.transform_param, self.deploy.source)
        self._net = None
        self._net_shape = None
        self._lock = threading.Lock()  # one predict at a time through the net: its blobs are shared

    @property
    def prediction(self):
        """The name of the blob holding the predictions (``prob`` when the loss was a softmax)."""
        return self.deploy.prediction

    @property
    def probabilities(self):
        """True when the predictions are probabilities (the net ends in Softmax or Sigmoid)."""
        return self.deploy.probabilities

    def net(self, item_shape=None):
        """The deploy net, built for items of ``item_shape`` (after the transform) on first use."""
        shape = item_shape or self._transformed_shape(self.raw_shape)
        if self._net is None or (item_shape is not None and shape != self._net_shape):
            from .deploy import deploy_net

            self._net = deploy_net(
                self.deploy,
                self.weights,
                batch=1,
                input_shape=shape,
                dtype=self.dtype,
                share_memory=True,
                keep=[self.prediction],  # a later layer may read it: not an output, yet read after the forward
            )
            self._net_shape = shape
        return self._net

    def prepare(self, images):
        """Raw images (N, C, H, W), (N, H, W) for one channel, (N, D), or one image without the
        batch axis, as the TEST transform makes them: a float array (N, ...) for the net."""
        batch = self._as_batch(np.asarray(images))
        out = np.empty(
            self.transformer.output_shape(batch.shape), dtype=np.float64 if self.dtype == "float64" else np.float32
        )
        try:
            return self.transformer.transform(batch, out=out)
        except DataError as err:
            raise err.located(layer=self.input.layer) from None

    def predict(self, images):
        """Predictions (N, K) for raw ``images`` (see :meth:`prepare`): class probabilities when
        the config's loss was SoftmaxWithLoss, else the prediction blob's values."""
        prepared = self.prepare(images)
        results = []
        with self._lock:
            net = self.net(prepared.shape[1:])
            for start in range(0, len(prepared), self.batch):
                outputs = net.forward(**{self.input.blob: prepared[start : start + self.batch]})
                value = outputs.get(self.prediction)
                if value is None:
                    value = net.blobs[self.prediction].data
                results.append(np.array(value).reshape(len(prepared[start : start + self.batch]), -1))
        return np.concatenate(results)

    def top_k(self, predictions, k=5):
        """For each row of ``predictions``: the ``k`` best classes as (index, name, value), best
        first (name None without class names)."""
        predictions = np.asarray(predictions)
        k = max(1, min(int(k), predictions.shape[1]))
        order = np.argsort(-predictions, axis=1, kind="stable")[:, :k]
        return [
            [(int(c), self.class_name(int(c)), float(row[c])) for c in best] for row, best in zip(predictions, order)
        ]

    def class_name(self, index):
        """The name of class ``index`` from the labels file, or None."""
        if self.labels is None or index >= len(self.labels):
            return None
        return self.labels[index]

    # -- shapes ------------------------------------------------------------------------------
    def _transformed_shape(self, raw_shape):
        if raw_shape is None:
            raise ConfigError(
                f"the shape of input '{self.input.blob}' is not known before images are given "
                "(the config's data set was not found): give input_shape=(C, H, W)",
                file=self.deploy.source,
            )
        return tuple(self.transformer.output_shape((1, *raw_shape))[1:])

    def _as_batch(self, images):
        """``images`` with a batch axis, as the data layer's items are shaped."""
        if images.dtype.kind not in "uif" or images.size == 0:
            raise DataError(f"expected images as numbers, got an array of {images.dtype} with shape {images.shape}")
        expected = self.raw_shape
        if expected is not None:
            if images.shape == tuple(expected):
                return images[np.newaxis]
            if (
                len(expected) == 3
                and expected[0] == 1
                and images.shape[-2:] == tuple(expected[1:])
                and images.ndim in (2, 3)
            ):
                images = images.reshape(-1, 1, *expected[1:])
            if images.shape[1:] != tuple(expected):
                raise DataError(
                    f"images of shape {images.shape}: input '{self.input.blob}' expects items of shape "
                    f"{tuple(expected)} (with a batch axis first, or one item alone)"
                )
            return images
        if images.ndim == 3:
            return images[:, np.newaxis]
        if images.ndim in (2, 4):
            return images
        raise DataError(f"expected images (N, C, H, W), (N, H, W) or (N, D), got shape {images.shape}")


def _test_transformer(transform_param, source):
    """The data layer's TEST transform (Caffe: no mirror, centre crop)."""
    from .data.transform import Transformer

    t = transform_param or {}
    if t.get("mean_file"):
        raise ConfigError("transform_param.mean_file is not supported; give mean_value per channel", file=source)
    return Transformer(
        scale=t.get("scale", 1.0),
        mean_value=t.get("mean_value", ()),
        mirror=False,
        crop_size=t.get("crop_size", 0),
        phase="TEST",
    )


def predict(config, weights, images, **options):
    """One call: the predictions (N, K) of ``config`` with ``weights`` for raw ``images``
    (see :class:`Predictor`; ``options`` are its keyword arguments)."""
    return Predictor(config, weights, **options).predict(images)


# -- reading images --------------------------------------------------------------------------
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def read_images(path, *, channels=None, size=None, bgr=False):
    """The raw images of one file as (N, C, H, W) (or (N, D) from a flat ``.npy``), with names.

    - ``.npy``: (N, C, H, W); (N, H, W) when ``channels`` is 1 (else (C, H, W), one image);
      (H, W) or (D,): one item.
    - IDX (``*-idx3-ubyte`` and ``.idx``, gzipped or not): (N, H, W) images of one channel.
    - anything else is opened with Pillow (the ``image`` extra): converted to ``channels`` (1:
      grey, 3: RGB, or BGR with ``bgr``, as Caffe's OpenCV-made databases hold them) and
      resized to ``size`` (H, W) when given and different.

    Returns (array, names): one name per item, the file name (with ``[i]`` when it holds
    several).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("no such image file", file=str(path))
    if path.suffix == ".npy":
        array = _read_npy(path, channels)
    elif _is_idx(path):
        from .data.idx import read_idx

        array = read_idx(path)
        array = array[:, np.newaxis] if array.ndim == 3 else array
    else:
        array = _read_picture(path, channels, size, bgr)
    if len(array) == 1:
        return array, [path.name]
    return array, [f"{path.name}[{i}]" for i in range(len(array))]


def _read_npy(path, channels):
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"not a readable .npy array: {err}", file=str(path)) from None
    if array.ndim in (1, 2) and not (array.ndim == 2 and channels is None):
        return array[np.newaxis] if array.ndim == 1 else array[np.newaxis, np.newaxis]
    if array.ndim == 2:
        return array[np.newaxis, np.newaxis]
    if array.ndim == 3:
        return array[:, np.newaxis] if channels == 1 else array[np.newaxis]
    if array.ndim == 4:
        return array
    raise DataError(
        f"expected an array (N, C, H, W), (N, H, W), (C, H, W) or (H, W), found shape {array.shape}", file=str(path)
    )


def _is_idx(path):
    name = path.name.lower()
    return name.endswith((".idx", ".idx.gz")) or "-idx" in name and "-ubyte" in name


def _read_picture(path, channels, size, bgr):
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise DataError("reading image files needs Pillow: pip install 'netlayers[image]'", file=str(path)) from None
    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            if size is not None and (image.height, image.width) != tuple(size):
                image = image.resize((int(size[1]), int(size[0])), Image.Resampling.BILINEAR)
            array = np.asarray(image)
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"not an image Pillow can read ({err.__class__.__name__})", file=str(path)) from None
    if array.ndim == 2:
        return array[np.newaxis, np.newaxis]
    array = array.transpose(2, 0, 1)
    if bgr:
        array = array[::-1]
    return np.ascontiguousarray(array)[np.newaxis]
