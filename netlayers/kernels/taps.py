"""Convolutions whose kernel reaches into the padding for whole bands of outputs (dilated 3x3
layers of large rates on small maps: DeepLab's atrous pyramids) tap by tap, each tap over only
the outputs where it reads the image.

Output row ``oy`` reads kernel row ``i`` at input row ``oy - p + i d`` (stride 1, padding p,
dilation d): inside the image for ``oy`` in an interval ``[lo_i, hi_i)``; likewise the columns.
The convolution is the sum over taps (i, j) of one matrix product each,

    y[n, :, oy, ox] += W[:, :, i, j] x[n, :, oy - p_h + i d_h, ox - p_w + j d_w]
                                               (lo_i <= oy < hi_i, lo_j <= ox < hi_j)

(an (O, C) by (C, pixels) product over the tap's rectangle of outputs, the images of a chunk
side by side), which leaves out every product with a padding zero. Backward, per tap, over the
same rectangles: dW[:, :, i, j] += dY X^T and dX += W[:, :, i, j]^T dY.

im2col + GEMM multiplies those zeros too: a 3x3 layer of dilation 24 on a 33 x 33 map spends
74 % of its products on them, of dilation 12 43 %, of dilation 6 18 %. The price here is nine
products of inner size C (instead of one of 9 C) and a copy of each tap's crop of the input
(and of the output gradient), each added into its rectangle: it pays where the padding's share is
large (``applies``). Each product is cut over the workers (``parallel.matmul``); the copies and
sums run over them by channels.
"""

import numpy as np

from .. import parallel

# Where it runs (``applies``): stride 1, one group, at least MIN_CHANNELS input and output
# channels, and at most MAX_INSIDE_SHARE of the kernel's (output, tap) pairs reading the image
# (the rest read padding). Forward + backward of one layer, tap by tap against im2col + GEMM
# (PyTorch beside them), 2 workers, float32, medians of 5 to 7 paired rounds (2026-12-06): 512 ->
# 256 3x3 at 33 x 33, batch 2, dilation 24 (26 % inside) 34.5 against 88.3 ms (110); 18 (40 %)
# 53.0 against 91.6 (137); 12 (57 %) 77.9 against 108.6 (110), in a second run 100.7 against
# 104.5; 8 (70 %) 105.6 against 118.3; 6 (78 %) 124.1 against 115.5: not. 1024 -> 1024 at 40 x 40,
# batch 1, dilation 12 (64 %) 391 against 499 (489); 2048 -> 256 at 33, batch 2, dilation 12 342
# against 424 (410); 256 -> 256 at 64 x 64, batch 4, dilation 16 (69 %) 273 against 321 (313).
# Few channels make the nine products thin: 3 -> 32 3x3 padded by 100 at 192 px (FCN's first
# layer) 16.6 against 11.4 ms; 32 -> 128 5x5 at 7 x 7, batch 10 (GoogLeNet's inception 5a) 14.0
# against 4.9.
# One image of 7 x 7 (batch x output pixels 64), 384 -> 192 4x4 pad 2 (66 % inside): its 16
# products of 64 columns 9.4 against im2col's one product 3.4 ms; hence MIN_PIXELS.
MAX_INSIDE_SHARE = 0.72
MIN_CHANNELS = 128  # input and output channels: the products' inner sizes (forward, data gradient)
MIN_PIXELS = 1024  # the batch's output pixels: the products' columns (a tap's, at most)
CHUNK_BYTES = 1 << 23  # a chunk's tap columns or products (channels or outputs x images x output
# pixels, the larger), at least one image
COLUMNS, PRODUCT, WEIGHT_GRAD = "tap_columns", "tap_product", "tap_weight_grad"
FILTERS = "tap_filters"  # the weight a tap at a time: worker 0's scratch, laid out at each pass


def tap_span(out_size, size, tap, pad, dilation):
    """(lo, hi): the outputs of one axis where kernel index ``tap`` reads inside the input
    (stride 1): lo <= o < hi, lo == hi when it never does."""
    offset = tap * dilation - pad  # input index = o + offset
    lo = min(out_size, max(0, -offset))
    return lo, max(lo, min(out_size, size - offset))


def inside_share(out_size, size, kernel, pad, dilation):
    """The share of an axis's (output, tap) pairs that read the input."""
    inside = sum(hi - lo for lo, hi in (tap_span(out_size, size, t, pad, dilation) for t in range(kernel)))
    return inside / (out_size * kernel)


def applies(kernel, stride, dilation, pad, groups, channels, outputs, size, out_size, batch):
    """Whether a convolution of ``batch`` images runs tap by tap: stride 1, one group, at least
    ``MIN_CHANNELS`` input and output channels, ``MIN_PIXELS`` output pixels in the batch, and
    at most ``MAX_INSIDE_SHARE`` of its (output, tap) pairs reading the input (the two axes'
    shares multiplied)."""
    if tuple(stride) != (1, 1) or groups != 1 or min(channels, outputs) < MIN_CHANNELS:
        return False
    if batch * out_size[0] * out_size[1] < MIN_PIXELS:
        return False
    rows, cols = (inside_share(*axis) for axis in zip(out_size, size, kernel, pad, dilation))
    return rows * cols <= MAX_INSIDE_SHARE


class TapConvolution:
    """A stride-1, one-group convolution run tap by tap (see the module text). ``image_shape``
    is (N, C, H, W); ``filters(weight)`` lays the (O, C, kh, kw) weight out as one (O, C) matrix
    a tap for the next passes; ``forward(x, bias, y)`` and ``backward(x, dy, dx, weight_diff)``
    as the other forms'."""

    def __init__(self, image_shape, outputs, kernel, pad, dilation, out_size, dtype):
        self.batch, self.channels, height, width = image_shape
        self.outputs, self.kernel, self.out_size = outputs, tuple(kernel), tuple(out_size)
        self.dtype = np.dtype(dtype)
        self.taps = []  # (i, j, output rows, output columns, input rows, input columns) with outputs
        for i in range(kernel[0]):
            rows = tap_span(out_size[0], height, i, pad[0], dilation[0])
            for j in range(kernel[1]):
                cols = tap_span(out_size[1], width, j, pad[1], dilation[1])
                if rows[0] == rows[1] or cols[0] == cols[1]:
                    continue
                shift = (i * dilation[0] - pad[0], j * dilation[1] - pad[1])
                inputs = [slice(lo + s, hi + s) for (lo, hi), s in zip((rows, cols), shift)]
                self.taps.append((i, j, slice(*rows), slice(*cols), *inputs))
        image_items = max(self.channels, outputs) * out_size[0] * out_size[1]  # columns or products
        self.chunk = max(1, min(self.batch, CHUNK_BYTES // (image_items * self.dtype.itemsize)))
        self.filters_shape = tuple(kernel) + (outputs, self.channels)

    @property
    def weights(self):
        """[i, j]: W[:, :, i, j], an (O, C) matrix, in scratch that every tap-by-tap layer shares
        (each lays its weight out there at the start of its forward and of its backward, as the
        Winograd forms do their transformed filters: no copy of the weight kept a layer)."""
        size = int(np.prod(self.filters_shape))
        return parallel.scratch(0, FILTERS, size, self.dtype).reshape(self.filters_shape)

    def filters(self, weight):
        self.weights[...] = weight.transpose(2, 3, 0, 1)

    def _chunks(self):
        return [slice(a, min(a + self.chunk, self.batch)) for a in range(0, self.batch, self.chunk)]

    def _buffer(self, name, rows, images, tap):
        """A (rows, images x the tap's output pixels) matrix of worker 0's scratch, and the same
        memory as (rows, images, tap rows, tap columns)."""
        shape = (rows, images, tap[2].stop - tap[2].start, tap[3].stop - tap[3].start)
        array = parallel.scratch(0, name, int(np.prod(shape)), self.dtype).reshape(shape)
        return array.reshape(rows, -1), array

    def _crop(self, name, source, images, tap, rows, cols):
        """The crop [rows, cols] of images ``images`` of ``source`` (N, R, H, W) in scratch
        ``name`` as an (R, images x tap pixels) matrix (and as (R, images, h, w)), copied over
        the workers by R."""
        matrix, array = self._buffer(name, source.shape[1], images.stop - images.start, tap)
        crop = source[images, :, rows, cols]

        def copy(lo, hi):
            array[lo:hi] = crop[:, lo:hi].transpose(1, 0, 2, 3)

        parallel.over_slices(copy, array.shape[0], 2 * array.nbytes)
        return matrix, array

    def _columns(self, x, images, tap):
        """The tap's crop of images ``images`` of x as a (C, images x tap pixels) matrix."""
        return self._crop(COLUMNS, x, images, tap, tap[4], tap[5])

    @staticmethod
    def _add(target, array):
        """target (n, rows, h, w) += array (rows, n, h, w), over the workers by rows."""

        def add(lo, hi):
            target[:, lo:hi] += array[lo:hi].transpose(1, 0, 2, 3)

        parallel.over_slices(add, array.shape[0], 3 * array.nbytes)

    def forward(self, x, bias, y):
        """y = conv(x, weight) + bias (bias may be None), with the weights of ``filters``."""
        y[...] = 0 if bias is None else bias[:, None, None]
        weights = self.weights
        for images in self._chunks():
            for tap in self.taps:
                col, _ = self._columns(x, images, tap)
                product, array = self._buffer(PRODUCT, self.outputs, images.stop - images.start, tap)
                parallel.matmul(weights[tap[0], tap[1]], col, product)
                self._add(y[images, :, tap[2], tap[3]], array)

    def backward(self, x, dy, dx, weight_diff):
        """dx = the input gradient (when dx is not None; written), weight_diff += the weight
        gradient (when it is not None), with the weights of ``filters``."""
        if dx is not None:
            dx[...] = 0
        weights = self.weights
        for tap in self.taps:  # a tap's weight gradient summed over the chunks, then added
            grads = None
            if weight_diff is not None:
                grads = parallel.scratch(0, WEIGHT_GRAD, self.outputs * self.channels, self.dtype)
                grads = grads.reshape(self.outputs, self.channels)
                grads[...] = 0
            for images in self._chunks():
                grad, _ = self._crop(PRODUCT, dy, images, tap, tap[2], tap[3])
                if grads is not None:
                    col, _ = self._columns(x, images, tap)
                    parallel.matmul(grad, col.T, grads, add=True)
                if dx is not None:
                    col, columns = self._buffer(COLUMNS, self.channels, images.stop - images.start, tap)
                    parallel.matmul(weights[tap[0], tap[1]].T, grad, col)
                    self._add(dx[images, :, tap[4], tap[5]], columns)
            if grads is not None:
                weight_diff[:, :, tap[0], tap[1]] += grads
