"""pycaffe's ``caffe.io``: images in, arrays prepared for a net, Caffe's protobuf messages.

As in BVLC Caffe 1.0's ``python/caffe/io.py``, with these differences:

- images are read with Pillow (an optional extra: ``pip install 'netlayers[image]'``) instead
  of scikit-image, and :func:`resize_image` is a bilinear interpolation written here (pixel
  centres aligned, edges clamped, no anti-aliasing; any number of channels), so results may
  differ from scikit-image's in the last digits and at the borders;
- ``Transformer.preprocess`` never changes the caller's array, and ``deprocess`` also accepts
  a one-channel image with ``set_transpose`` (pycaffe fails on it);
- the messages are :mod:`netlayers.caffe.proto.caffe_pb2`'s, and :func:`read_binaryproto`
  reads a mean file in one call;
- a mistake is a one-line :class:`~netlayers.errors.ConfigError` or
  :class:`~netlayers.errors.DataError` instead of a bare ``Exception``.
"""

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from .proto import caffe_pb2
from .wire import read_binaryproto

__all__ = [
    "Transformer",
    "load_image",
    "resize_image",
    "oversample",
    "blobproto_to_array",
    "array_to_blobproto",
    "arraylist_to_blobprotovector_str",
    "blobprotovector_str_to_arraylist",
    "array_to_datum",
    "datum_to_array",
    "read_binaryproto",
]

# ---------------------------------------------------------------------------------------------
# Protobuf messages <-> arrays
# ---------------------------------------------------------------------------------------------


class BlobShapeError(DataError, ValueError):
    """A BlobProto whose values do not fill its shape: netlayers' DataError, and the ValueError
    pycaffe's numpy reshape raises (scripts catch that)."""


def blobproto_to_array(blob: Any, return_diff: bool = False) -> np.ndarray:
    """A ``BlobProto``'s data (or diff) as a float64 array of its shape: the legacy
    num/channels/height/width when any is set, else ``shape.dim``. A blob holding only
    ``double_data`` (``double_diff``) gives those values."""
    values = blob.diff if return_diff else blob.data
    if not len(values):
        values = blob.double_diff if return_diff else blob.double_data
    data = np.array(values, dtype=np.float64)
    if any(blob.HasField(name) for name in ("num", "channels", "height", "width")):
        shape = (blob.num, blob.channels, blob.height, blob.width)
    else:
        shape = tuple(blob.shape.dim)
    if data.size != int(np.prod(shape)):
        what = "diff" if return_diff else "data"
        raise BlobShapeError(
            f"BlobProto holds {data.size} {what} values but its shape {shape} needs {int(np.prod(shape))}"
        )
    return data.reshape(shape)


def array_to_blobproto(arr: Any, diff: Any = None) -> caffe_pb2.BlobProto:
    """A ``BlobProto`` holding ``arr`` (shape as ``shape.dim``, values as float) and, when
    given, ``diff`` (the same number of values)."""
    arr = np.asarray(arr)
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(arr.shape)
    blob.data.extend(arr.astype(np.float64).reshape(-1))
    if diff is not None:
        diff = np.asarray(diff)
        if diff.size != arr.size:
            raise DataError(f"array_to_blobproto: diff has shape {diff.shape}, the array {arr.shape}: they must match")
        blob.diff.extend(diff.astype(np.float64).reshape(-1))
    return blob


def arraylist_to_blobprotovector_str(arraylist: Any) -> bytes:
    """The bytes of a ``BlobProtoVector`` holding one ``BlobProto`` per array."""
    vector = caffe_pb2.BlobProtoVector()
    vector.blobs.extend(array_to_blobproto(arr) for arr in arraylist)
    return vector.SerializeToString()


def blobprotovector_str_to_arraylist(data: bytes) -> list[np.ndarray]:
    """The arrays of a ``BlobProtoVector``'s bytes."""
    vector = caffe_pb2.BlobProtoVector()
    vector.ParseFromString(data)
    return [blobproto_to_array(blob) for blob in vector.blobs]


def array_to_datum(arr: Any, label: int | None = None) -> caffe_pb2.Datum:
    """A ``Datum`` of a channels x height x width array: uint8 values as the ``data`` bytes,
    any other type as ``float_data``; ``label`` when given."""
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise DataError(f"array_to_datum: expected an array (channels, height, width), got shape {arr.shape}")
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = arr.shape
    if arr.dtype == np.uint8:
        datum.data = arr.tobytes()
    else:
        datum.float_data.extend(arr.astype(np.float64).reshape(-1))
    if label is not None:
        datum.label = label
    return datum


def datum_to_array(datum: Any) -> np.ndarray:
    """A ``Datum``'s values as a (channels, height, width) array: uint8 from ``data``, else
    float64 from ``float_data``. The label is ``datum.label``. An encoded datum (an image file's
    bytes) is an error: decode ``datum.data`` with an image library."""
    shape = (datum.channels, datum.height, datum.width)
    if datum.encoded:
        raise DataError("datum_to_array: the datum holds an encoded image (encoded: true); decode datum.data instead")
    if len(datum.data):
        values = np.frombuffer(datum.data, dtype=np.uint8)
    else:
        values = np.array(datum.float_data, dtype=np.float64)
    if values.size != int(np.prod(shape)):
        raise DataError(
            f"datum holds {values.size} values but channels x height x width = {shape} needs {int(np.prod(shape))}"
        )
    return values.reshape(shape).copy()


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------

_GRAY_WEIGHTS = np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)  # scikit-image's rgb2gray


def _pillow():
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise DataError("caffe.io.load_image needs Pillow: pip install 'netlayers[image]'") from None
    return Image, UnidentifiedImageError


def _image_as_float(image) -> np.ndarray:
    """A Pillow image's pixels as floats in [0, 1]: H x W (grayscale) or H x W x C, with C 3
    (RGB) or 4 (RGBA; alpha still there). 16-bit images are divided by 65535."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        return np.asarray(image, dtype=np.float32) / np.float32(65535)
    if image.mode == "F":
        return np.asarray(image, dtype=np.float32)
    if image.mode not in ("L", "RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
    return np.asarray(image, dtype=np.float32) / np.float32(255)


def load_image(filename: str | Path, color: bool = True) -> np.ndarray:
    """An image file as float32 in [0, 1]: H x W x 3 RGB when ``color`` (a grayscale image's
    channel repeated, alpha dropped), else H x W x 1 intensity (a color image converted with
    scikit-image's weights 0.2125 R + 0.7154 G + 0.0721 B, as pycaffe's loader does). A file
    that is missing or not an image raises :class:`DataError` naming it."""
    Image, UnidentifiedImageError = _pillow()
    try:
        with Image.open(filename) as image:
            pixels = _image_as_float(image)
    except FileNotFoundError:
        raise DataError("cannot read the image: no such file", file=str(filename)) from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DataError(f"not an image Pillow can read ({err.__class__.__name__})", file=str(filename)) from None
    if pixels.ndim == 3:
        pixels = pixels[:, :, :3]
        if not color:
            pixels = pixels @ _GRAY_WEIGHTS
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
        if color:
            pixels = np.repeat(pixels, 3, axis=2)
    return np.ascontiguousarray(pixels, dtype=np.float32)


def _linear_axis(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each output position along one axis: the two input indices to blend and the weight
    of the second. Pixel centres are aligned (``x_in = (x_out + 0.5) * size_in / size_out -
    0.5``), and positions beyond the first or last centre take the edge pixel."""
    position = (np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5
    position = np.clip(position, 0, size_in - 1)
    low = np.floor(position).astype(np.intp)
    high = np.minimum(low + 1, size_in - 1)
    return low, high, (position - low).astype(np.float32)


def resize_image(im: Any, new_dims: Any, interp_order: int = 1) -> np.ndarray:
    """An H x W x K image resized to ``new_dims`` (height, width) by bilinear interpolation
    (``interp_order`` 1; 0 takes the nearest pixel), any number of channels K; float32."""
    im = np.asarray(im, dtype=np.float32)
    height, width = (int(d) for d in new_dims)
    if im.ndim < 2 or height < 1 or width < 1:
        raise DataError(f"resize_image: cannot resize an image of shape {im.shape} to {(height, width)}")
    if interp_order not in (0, 1):
        raise ConfigError(f"resize_image: interp_order must be 0 (nearest) or 1 (bilinear), got {interp_order!r}")
    out = im
    for axis, size in ((0, height), (1, width)):
        if out.shape[axis] == size:
            continue
        low, high, weight = _linear_axis(out.shape[axis], size)
        if interp_order == 0:
            out = np.take(out, np.where(weight < 0.5, low, high), axis=axis)
            continue
        weight = weight.reshape((-1,) + (1,) * (out.ndim - axis - 1))
        first, second = np.take(out, low, axis=axis), np.take(out, high, axis=axis)
        out = first + (second - first) * weight
    return np.array(out, dtype=np.float32)  # a new array even when no axis changed


def center_crop_starts(image_dims: Any, crop_dims: Any) -> tuple[int, int]:
    """Where the centre crop starts: ``floor(image / 2 - crop / 2)`` on each axis, as pycaffe."""
    (height, width), (crop_h, crop_w) = image_dims, crop_dims
    return int(np.floor(height / 2.0 - crop_h / 2.0)), int(np.floor(width / 2.0 - crop_w / 2.0))


def oversample(images: Any, crop_dims: Any) -> np.ndarray:
    """Ten crops of each H x W x K image: the four corners, the centre, then the same five
    mirrored left-right; returns (10 N) x h x w x K float32, image by image."""
    crop_h, crop_w = (int(d) for d in crop_dims)
    height, width = np.shape(images[0])[:2]
    if crop_h > height or crop_w > width:
        raise DataError(f"oversample: crop {(crop_h, crop_w)} is larger than the images {(height, width)}")
    center = center_crop_starts((height, width), (crop_h, crop_w))
    starts = [(0, 0), (0, width - crop_w), (height - crop_h, 0), (height - crop_h, width - crop_w), center]
    crops = []
    for image in images:
        image = np.asarray(image, dtype=np.float32)
        five = [image[y : y + crop_h, x : x + crop_w] for y, x in starts]
        crops += five + [crop[:, ::-1] for crop in five]
    return np.ascontiguousarray(np.stack(crops), dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# Transformer
# ---------------------------------------------------------------------------------------------


class Transformer:
    """Prepares images for a net's inputs, as pycaffe's: ``inputs`` maps each input blob's
    name to its shape (N, K, H, W).

    ``preprocess(name, image)`` takes an H' x W' x K image and returns K x H x W float32:
    resized to the input's H x W, transposed (``set_transpose``), channels reordered
    (``set_channel_swap``), multiplied by ``raw_scale``, mean subtracted (``set_mean``),
    multiplied by ``input_scale``, in that order. ``deprocess`` undoes it.
    """

    def __init__(self, inputs: dict[str, Any]) -> None:
        self.inputs = {name: tuple(int(d) for d in shape) for name, shape in inputs.items()}
        self.transpose: dict[str, Any] = {}
        self.channel_swap: dict[str, Any] = {}
        self.raw_scale: dict[str, Any] = {}
        self.mean: dict[str, np.ndarray] = {}
        self.input_scale: dict[str, Any] = {}

    def _check_input(self, name: str) -> tuple[int, ...]:
        if name not in self.inputs:
            raise ConfigError(f"Transformer: '{name}' is not one of the net inputs: {', '.join(self.inputs) or 'none'}")
        return self.inputs[name]

    def preprocess(self, in_: str, data: Any) -> np.ndarray:
        """``data`` (H' x W' x K) formatted for input ``in_`` (K x H x W float32); see the class."""
        shape = self._check_input(in_)
        caffe_in = np.array(data, dtype=np.float32)  # a copy: the caller's image stays as it was
        if caffe_in.ndim != len(shape) - 1:
            raise DataError(f"Transformer.preprocess('{in_}'): expected an image H x W x K, got shape {caffe_in.shape}")
        if len(shape) == 4 and caffe_in.shape[:2] != shape[2:]:
            caffe_in = resize_image(caffe_in, shape[2:])
        if in_ in self.transpose:
            caffe_in = caffe_in.transpose(self.transpose[in_])
        if in_ in self.channel_swap:
            caffe_in = caffe_in[list(self.channel_swap[in_])]
        if in_ in self.raw_scale:
            caffe_in *= self.raw_scale[in_]
        if in_ in self.mean:
            caffe_in -= self.mean[in_]
        if in_ in self.input_scale:
            caffe_in *= self.input_scale[in_]
        return np.ascontiguousarray(caffe_in)

    def deprocess(self, in_: str, data: Any) -> np.ndarray:
        """Undo :meth:`preprocess` on ``data`` (K x H x W, or 1 x K x H x W): divide by
        ``input_scale``, add the mean, divide by ``raw_scale``, put the channels and axes back.
        Axes of length 1 are squeezed out of the result, as pycaffe does."""
        self._check_input(in_)
        decaf_in = np.array(data, dtype=np.float32)
        if decaf_in.ndim == 4 and decaf_in.shape[0] == 1:
            decaf_in = decaf_in[0]
        if in_ in self.input_scale:
            decaf_in /= self.input_scale[in_]
        if in_ in self.mean:
            decaf_in += self.mean[in_]
        if in_ in self.raw_scale:
            decaf_in /= self.raw_scale[in_]
        if in_ in self.channel_swap:
            decaf_in = decaf_in[np.argsort(self.channel_swap[in_])]
        if in_ in self.transpose:
            decaf_in = decaf_in.transpose(np.argsort(self.transpose[in_]))
        return decaf_in.squeeze()

    def set_transpose(self, in_: str, order: Any) -> None:
        """The order of axes, e.g. (2, 0, 1) turns H x W x K into K x H x W."""
        shape = self._check_input(in_)
        order = tuple(int(axis) for axis in order)
        if sorted(order) != list(range(len(shape) - 1)):
            raise ConfigError(
                f"Transformer.set_transpose('{in_}'): the order must list the {len(shape) - 1} axes of the "
                f"input once each (e.g. (2, 0, 1)), got {order}"
            )
        self.transpose[in_] = order

    def set_channel_swap(self, in_: str, order: Any) -> None:
        """The order to take the channels in, e.g. (2, 1, 0) from RGB to BGR; channels are the
        first axis after the transpose."""
        shape = self._check_input(in_)
        order = tuple(int(channel) for channel in order)
        if len(order) != shape[1]:
            raise ConfigError(
                f"Transformer.set_channel_swap('{in_}'): the order must list the input's {shape[1]} channels, "
                f"got {order}"
            )
        self.channel_swap[in_] = order

    def set_raw_scale(self, in_: str, scale: Any) -> None:
        """Multiply the raw image by ``scale`` before the mean is subtracted (255 for models
        trained on pixels in [0, 255], since images load in [0, 1])."""
        self._check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_: str, mean: Any) -> None:
        """The mean to subtract: one value per channel (shape (K,)), or a whole mean image
        (K x H x W, H x W for one channel, or 1 x K x H x W as a mean file holds it), resized to
        the input's H x W if it differs."""
        shape = self._check_input(in_)
        mean = np.asarray(mean)
        if mean.ndim == 4 and mean.shape[0] == 1:
            mean = mean[0]
        if mean.ndim == 1:
            if mean.shape[0] != shape[1]:
                raise ConfigError(
                    f"Transformer.set_mean('{in_}'): {mean.shape[0]} mean values, the input has {shape[1]} channels"
                )
            mean = mean[:, np.newaxis, np.newaxis]
        else:
            if mean.ndim == 2:
                mean = mean[np.newaxis]
            if mean.ndim != 3 or mean.shape[0] not in (1, shape[1]):
                raise ConfigError(
                    f"Transformer.set_mean('{in_}'): expected a mean of shape ({shape[1]},) or {shape[1:]}, "
                    f"got {np.shape(mean)}"
                )
            if mean.shape[1:] != shape[2:]:
                mean = resize_image(mean.transpose(1, 2, 0), shape[2:]).transpose(2, 0, 1)
        self.mean[in_] = mean

    def set_input_scale(self, in_: str, scale: Any) -> None:
        """Multiply by ``scale`` after the mean is subtracted (the last step)."""
        self._check_input(in_)
        self.input_scale[in_] = scale
