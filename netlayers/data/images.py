"""Image files as Caffe's ImageData and WindowData layers read them, with Pillow.

Caffe reads images with OpenCV, so its images are **BGR**: channel 0 is blue, 1 green, 2 red
(grey images have one channel). Here Pillow decodes the file and the channels are put in
OpenCV's order; a colour image read as grey gets OpenCV's luma (``(1868 B + 9617 G + 4899 R +
8192) >> 14``; a JPEG is decoded to grey by libjpeg, as OpenCV does). Resizing is OpenCV's
``INTER_LINEAR`` (``cv::resize``'s default, which Caffe uses) with its 11-bit fixed-point
weights: in our checks against OpenCV 4.14 equal on every shrunk image, within one grey level
on enlarged ones. EXIF orientation tags are ignored (as OpenCV 2 and 3.0, Caffe's, do).

An image-list file (``image_data_param.source``) has one ``path label`` per line; the path
may hold spaces (the label is the last word, as Caffe splits at the last space).
"""

import io

import numpy as np

from netlayers.data.listfiles import read_lines
from netlayers.errors import DataError

#: OpenCV's fixed-point luma weights for B, G, R (sum 2^14).
_LUMA_BGR = np.array([1868, 9617, 4899], dtype=np.int64)
_COEF_BITS = 11  # OpenCV's INTER_RESIZE_COEF_BITS


def require_pillow():
    """Pillow's Image module, or a one-line DataError naming the extra that installs it."""
    try:
        from PIL import Image
    except ImportError:
        raise DataError("reading image files needs Pillow: pip install 'netlayers[image]'") from None
    return Image


def read_image_list(list_path):
    """``[(path, label, line number)]`` of an image-list file: ``path label`` per line, the
    label an integer after the last white space; blank lines skipped. A line without an
    integer label is a DataError at its line."""
    entries = []
    for number, line in read_lines(list_path, "image list file"):
        parts = line.rsplit(None, 1)
        label = _integer(parts[-1]) if len(parts) == 2 else None
        if label is None:
            raise DataError(
                f"expected 'path label' (an integer label after the last space), got {line!r:.80}",
                file=str(list_path),
                line=number,
            )
        entries.append((parts[0], label, number))
    if not entries:
        raise DataError("lists no image ('path label' per line expected)", file=str(list_path))
    return entries


def _integer(text):
    try:
        return int(text)
    except ValueError:
        return None


def read_image(source, is_color=True, height=0, width=0):
    """The image in ``source`` (a path or the file's bytes) as uint8 (C, H, W): BGR when
    ``is_color``, else one grey channel; resized to ``height`` x ``width`` when both are set.
    A file Pillow cannot read raises DataError (the caller says which list line named it)."""
    image_module = require_pillow()
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with image_module.open(stream) as image:
            pixels = _decode(image, is_color)
    except FileNotFoundError:
        raise DataError("no such image file") from None
    except (OSError, ValueError, image_module.DecompressionBombError) as err:
        raise DataError(f"not an image Pillow can read ({err.__class__.__name__}: {err})") from None
    if height > 0 and width > 0 and pixels.shape[1:] != (height, width):
        pixels = resize_linear(pixels, height, width)
    return pixels


def _decode(image, is_color):
    """Decoded pixels as OpenCV's imread gives them: (3, H, W) BGR or (1, H, W) grey."""
    if not is_color and image.format == "JPEG":
        image.draft("L", image.size)  # libjpeg's own grey output, as OpenCV asks for
    if image.mode.startswith("I;16") or image.mode == "I":
        grey = (np.asarray(image).astype(np.int64) >> 8).clip(0, 255).astype(np.uint8)
        return np.repeat(grey[np.newaxis], 3 if is_color else 1, axis=0)
    if image.mode == "L":
        grey = np.asarray(image, dtype=np.uint8)[np.newaxis]
        return np.repeat(grey, 3, axis=0) if is_color else grey
    bgr = np.asarray(image.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)[::-1]
    if is_color:
        return np.ascontiguousarray(bgr)
    luma = np.tensordot(_LUMA_BGR, bgr.astype(np.int64), axes=1) + (1 << 13)
    return (luma >> 14).astype(np.uint8)[np.newaxis]


def resize_linear(image, height, width):
    """``image`` (C, H, W) uint8 resized to (C, height, width) as OpenCV's ``cv::resize`` with
    ``INTER_LINEAR`` does: source coordinate ``(d + 0.5) * src / dst - 0.5`` per axis, clamped
    to the edge pixels, the two weights of each axis rounded to 11 bits, rows interpolated in
    integers first, then columns with OpenCV's rounding shifts."""
    x_lo, x_hi, x_weights = _axis_weights(image.shape[2], width)
    y_lo, y_hi, y_weights = _axis_weights(image.shape[1], height)
    pixels = image.astype(np.int64)
    rows = pixels[:, :, x_lo] * x_weights[0] + pixels[:, :, x_hi] * x_weights[1]  # scaled by 2^11
    top, bottom = rows[:, y_lo] >> 4, rows[:, y_hi] >> 4
    mixed = ((y_weights[0][:, None] * top) >> 16) + ((y_weights[1][:, None] * bottom) >> 16)
    return ((mixed + 2) >> 2).clip(0, 255).astype(np.uint8)


def _axis_weights(size, new_size):
    """Source indices (low, high) and 11-bit weights (of low, of high) for each output pixel
    along one axis, as OpenCV computes them (the coordinate in single precision)."""
    scale = 1.0 / (new_size / size)
    coord = ((np.arange(new_size) + 0.5) * scale - 0.5).astype(np.float32)
    low = np.floor(coord).astype(np.int64)
    frac = (coord - low).astype(np.float32)
    before, after = low < 0, low >= size - 1
    frac[before | after] = 0
    low[before] = 0
    low[after] = size - 1
    high = np.minimum(low + 1, size - 1)
    one = np.float32(1 << _COEF_BITS)
    weights = (np.round((np.float32(1) - frac) * one).astype(np.int64), np.round(frac * one).astype(np.int64))
    return low, high, weights
