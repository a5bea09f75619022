"""R-CNN window files and the window warping of Caffe's WindowData layer.

A window file repeats, for every image (numbered from 0 in order)::

    # image_index
    image_path
    channels
    height
    width
    num_windows
    class_index overlap x1 y1 x2 y2      (num_windows lines; pixel corners, inclusive, from 0)

A window whose overlap is at least ``fg_threshold`` is foreground (its class must be above 0);
one whose overlap is below ``bg_threshold`` is background (class 0); others are not used.
Caffe reads the file word by word, so paths cannot hold spaces; images are read in colour.
"""

import math
from dataclasses import dataclass, field

import numpy as np

from netlayers.data.images import resize_linear
from netlayers.data.listfiles import locate, where_looked
from netlayers.errors import DataError

#: Columns of a window row: the image's number, the class, the corners.
IMAGE, LABEL, X1, Y1, X2, Y2 = range(6)


@dataclass
class WindowFile:
    """A parsed window file: the images (path found, header height and width, line of their
    ``#``) and the foreground and background windows as int rows (see the column names)."""

    path: object
    images: list = field(default_factory=list)  # [(found path, height, width, line)]
    foreground: np.ndarray = None
    background: np.ndarray = None


def read_window_file(path, root_folder="", fg_threshold=0.5, bg_threshold=0.5):
    """Parse a window file (format in the module notes). Image paths are ``root_folder +
    path`` (Caffe joins the two strings), relative to the working folder, else to the window
    file's folder. Any departure from the format, an image not found, a window outside its
    image's header size or a foreground window of class 0 is a DataError at its line."""
    words = _words(path)
    parsed = WindowFile(path)
    fg, bg = [], []
    while words.more():
        _, line = words.take(str, "'#'", expect="#")
        index = words.take(int, "the image index")[0]
        if index != len(parsed.images):
            raise words.error(
                f"image index {index}: expected {len(parsed.images)} (images are numbered from 0 in order)"
            )
        name = root_folder + words.take(str, "the image path")[0]
        found = locate(name, path.parent)
        if found is None:
            raise words.error(f"no such image file '{name}' ({where_looked(name, path.parent)})")
        channels, height, width = (words.take(int, what, low=1)[0] for what in ("channels", "height", "width"))
        if channels != 3:
            raise words.error(f"channels {channels}: WindowData reads images in colour (3 channels), as Caffe does")
        parsed.images.append((found, height, width, line))
        for _ in range(words.take(int, "the number of windows", low=0)[0]):
            label = words.take(int, "a class index", low=0)[0]
            overlap = words.take(float, "an overlap")[0]
            x1, y1, x2, y2 = (words.take(int, what, low=0)[0] for what in ("x1", "y1", "x2", "y2"))
            if not (x1 <= x2 < width and y1 <= y2 < height):
                raise words.error(
                    f"window ({x1}, {y1}, {x2}, {y2}) is not inside the {width}x{height} image "
                    "(0 <= x1 <= x2 < width, 0 <= y1 <= y2 < height expected)"
                )
            if overlap >= fg_threshold:
                if label == 0:
                    raise words.error(
                        f"a window of overlap {overlap:g} >= fg_threshold has class 0; foreground classes start at 1"
                    )
                fg.append((index, label, x1, y1, x2, y2))
            elif overlap < bg_threshold:
                bg.append((index, 0, x1, y1, x2, y2))
    if not parsed.images:
        raise DataError("is empty: expected '# image_index' blocks of an R-CNN window file", file=str(path))
    parsed.foreground = np.array(fg, dtype=np.int64).reshape(-1, 6)
    parsed.background = np.array(bg, dtype=np.int64).reshape(-1, 6)
    return parsed


class _Words:
    """The words of a text file with their line numbers, taken one at a time."""

    def __init__(self, path, words):
        self.path, self.words, self.next = path, words, 0

    def more(self):
        return self.next < len(self.words)

    def error(self, message, line=None):
        if line is None:
            line = self.words[min(self.next, len(self.words)) - 1][1] if self.words else None
        return DataError(message, file=str(self.path), line=line)

    def take(self, kind, what, expect=None, low=None):
        """``(value, line)`` of the next word read as ``kind``; a DataError naming ``what``
        when there is none, it is not of that kind, or is below ``low``."""
        if not self.more():
            raise self.error(f"ends where {what} was expected")
        word, line = self.words[self.next]
        self.next += 1
        try:
            value = kind(word)
        except ValueError:
            value = None
        if value is None or (expect is not None and value != expect) or (low is not None and value < low):
            bound = f" >= {low}" if low is not None and value is not None else ""
            raise self.error(f"expected {what}{bound}, got {word!r:.40}", line)
        return value, line


def _words(path):
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as err:
        raise DataError(f"cannot read the window file: {err.strerror or err}", file=str(path)) from None
    return _Words(path, [(word, number) for number, line in enumerate(text.splitlines(), 1) for word in line.split()])


def c_round(value):
    """C's ``round``: to the nearest integer, halves away from zero."""
    value = float(value)
    return int(math.copysign(math.floor(abs(value) + 0.5), value))


def warp_window(image, window, crop_size, context_pad=0, square=False, mirror=False):
    """Cut ``window`` (x1, y1, x2, y2) out of ``image`` (C, H, W) and warp it as Caffe's
    WindowData does; returns ``(patch, pad_h, pad_w)``, the patch to place at row ``pad_h``,
    column ``pad_w`` of a ``crop_size`` square (the rest stays 0).

    Without ``context_pad`` or ``square`` the window fills the square. Otherwise the window is
    first made square (``square``: its half sides set to the larger one) and widened about its
    centre by ``crop_size / (crop_size - 2 context_pad)``, so that warped it has
    ``context_pad`` pixels of context on each side; the part outside the image is cut off and
    becomes padding of the size it would have had after warping. A mirrored patch is flipped
    left-right, its padding with it. Geometry in single precision with C rounding, as Caffe's
    float nets compute it.
    """
    height, width = image.shape[1:]
    x1, y1, x2, y2 = (int(v) for v in window)
    f = np.float32
    out_h = out_w = crop_size
    pad_h = pad_w = 0
    if context_pad > 0 or square:
        context_scale = f(crop_size) / f(crop_size - 2 * context_pad)
        half_h, half_w = f((y2 - y1 + 1) / 2.0), f((x2 - x1 + 1) / 2.0)
        center_x, center_y = f(x1) + half_w, f(y1) + half_h
        if square:
            half_h = half_w = max(half_h, half_w)
        x1, x2 = c_round(center_x - half_w * context_scale), c_round(center_x + half_w * context_scale)
        y1, y2 = c_round(center_y - half_h * context_scale), c_round(center_y + half_h * context_scale)
        unclipped_h, unclipped_w = y2 - y1 + 1, x2 - x1 + 1
        pad_x1, pad_y1 = max(0, -x1), max(0, -y1)
        pad_x2, pad_y2 = max(0, x2 - width + 1), max(0, y2 - height + 1)
        x1, x2, y1, y2 = x1 + pad_x1, x2 - pad_x2, y1 + pad_y1, y2 - pad_y2
        scale_x, scale_y = f(crop_size) / f(unclipped_w), f(crop_size) / f(unclipped_h)
        out_w, out_h = c_round(f(x2 - x1 + 1) * scale_x), c_round(f(y2 - y1 + 1) * scale_y)
        pad_h = c_round(f(pad_y1) * scale_y)
        pad_w = c_round(f(pad_x2 if mirror else pad_x1) * scale_x)
        out_h, out_w = min(out_h, crop_size - pad_h), min(out_w, crop_size - pad_w)
    patch = image[:, y1 : y2 + 1, x1 : x2 + 1]
    if out_h < 1 or out_w < 1:
        return patch[:, :0, :0], pad_h, pad_w
    patch = resize_linear(patch, out_h, out_w)
    return (patch[:, :, ::-1] if mirror else patch), pad_h, pad_w
