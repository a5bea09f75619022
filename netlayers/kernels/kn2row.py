"""Stride-1 convolutions with few outputs as one product per image over the input itself
("kn2row": each kernel tap becomes rows of the product, not columns).

For an image x (C, H, W), kernel kh x kw (T = kh kw taps), padding (ph, pw), dilation (dh, dw)
and the weight laid out as W' = (O T, C), W'[(o, u, v), c] = W[o, c, u, v]:

    Z = W' X                      X = x as a (C, H W) matrix: no columns are formed
    y[o, i, j] = b[o] + sum_(u, v) Z[(o, u, v), i - ph + u dh, j - pw + v dw]

(the taps whose input pixel lies in the padding add nothing). Backward, with dY the output
gradient and dZ[(o, u, v), r, c] = dY[o, r + ph - u dh, c + pw - v dw] (0 where that is no
output pixel):

    dX = W'^T dZ,    dW'[(o, u, v), c] += sum_(r, c') dZ[(o, u, v), r, c'] X[c, (r, c')]

im2col + GEMM multiplies an (O, C T) matrix by columns kh kw times the input: with few outputs
that product is thin (OpenBLAS runs 16-row products at 30-35 GFLOP/s a core against 60-80 from 64
rows) and building the columns costs as much as the product. Here the three products have O T,
C and H W as their sides (with 16 outputs of a 3x3 kernel, 144 rows) and the only other work is
the shifted sums of Z (O T H W reads) and the shifted copies of dY into dZ. The price: the
products run over every input pixel where im2col's run over the output pixels (the same count
with "same" padding; 196 against 144 for an unpadded 3x3 kernel on 14 x 14, still faster).

Where it runs: ``applies``. A large image runs in bands of input rows (``BAND_BYTES``). The
forward shares the images over the workers (each band's Z in its worker's scratch, summed into y
while in cache); a batch the workers cannot share evenly and of fewer than two images a worker
shares the outputs instead. The backward shares the input channels: each worker forms dZ of
every image and writes its channels' rows of dX and columns of dW, so no partial sums are added
across workers (a worker's share of a product may still round differently from the whole
product: BLAS picks its kernels by the product's sides).
"""

import numpy as np

from .. import parallel
from ._jit import jit
from .blas import add_product

# Where it runs (``applies``): stride 1, one group, a kernel of 2 taps or more, at most
# MAX_OUTPUTS outputs, at least MIN_ROWS rows in W' (O T), and either at least
# MANY_CHANNELS_RATIO times as many input channels as outputs, or WIDE_RATIO times as many from
# WIDE_CHANNELS input channels, or CHANNEL_RATIO times as many where no Winograd form applies
# and the products over the input do at most MAX_EXTRA_PIXELS times the work of im2col's over
# the output (H W against OH OW). The layer forward + backward
# against the form it ran as before, 2 workers, float32, medians of 5 paired rounds
# (2026-12-07, `/tmp` probe over ``tools/bench_layers.py``'s nets):
# - C >= 16 O: 512 -> 16 3x3 unpadded at 14 px, batch 32, 0.59x (row strips); 384 -> 16 there,
#   batch 8, 0.68x; 128 -> 8 3x3 at 28 px 0.47x, 256 -> 1 9x9 at 32 px 0.11x (strips); 1024 ->
#   32 3x3 unpadded at 28 px, batch 2, 0.58x, 512 -> 16 3x3 at 38 px 0.58x, 1024 -> 24 at 19 px
#   0.49x (batch 1: 0.30x against strips), 512 -> 32 at 19 px 0.75x, 1024 -> 64 at 10 px
#   0.62x, 256 -> 16 at 56 px, batch 1, 0.70x (F(4x4, 3x3)); 256 -> 16 5x5 at 28 px 0.83x, 512 ->
#   32 7x7 at 16 px 0.47x (F(4x4) of 5x5 and 7x7); 64 -> 3 3x3 at 56 px 1.00x (strips).
# - 4 O <= C < 16 O, no Winograd form, H W = OH OW: 64 -> 16 7x1 at 32 px 0.53x, 64 -> 16 1x7
#   at 28 px 0.54x, 192 -> 32 1x7 at 17 px 0.58x, 64 -> 16 3x3 dilation 2 at 16 px 0.67x, 256
#   -> 21 3x3 dilation 6 at 40 px 0.51x (im2col); 256 -> 24 3x3 at 10 px 0.80x (strips).
# - Not: against Winograd below 16 O (512 -> 48 3x3 at 28 px 1.08x, 512 -> 64 at 38 px 1.07x, 128
#   -> 32 unpadded at 14 px 1.42x, at 8 px 1.69x, 64 -> 16 unpadded at 32 px 1.08x, 256 -> 32 and
#   128 -> 16 0.98x; 128 -> 32 5x5 at 28 px 1.37x, 256 -> 64 7x7 1.03x) nor unpadded there (512
#   -> 64 3x3 at 14 px, batch 1, H W = 1.36 OH OW: 1.26x against im2col).
# - From 1024 channels and 8 O, up to 128 outputs (SSD's class layers): 1024 -> 126 3x3 at 19
#   px, batch 4, 0.80x, 1024 -> 96 there 0.82x, 1536 -> 96 at 14 px 0.74x (F(4x4) and F(2x2,
#   3x3)); 1024 -> 84 at 10 px 0.81x, 1024 -> 128 at 7 px, batch 8, 0.90x, 2048 -> 128 at 10
#   px 0.87x (im2col). Not below 1024: 512 -> 84 at 38 px 1.27x, 512 -> 128 at 14 px 1.21x,
#   256 -> 128 at 28 px 1.50x (Winograd); 512 -> 126 at 10 px 0.91x (im2col: the rule's last
#   clause takes it).
MAX_OUTPUTS = 128
MIN_ROWS = 64
BAND_BYTES = 1 << 22  # Z (or dZ) of a band of input rows, at most (at least one row)
MANY_CHANNELS_RATIO = 16
WIDE_CHANNELS, WIDE_RATIO = 1024, 8
CHANNEL_RATIO = 4
MAX_EXTRA_PIXELS = 1.2
# An image whose Z would exceed BAND_BYTES runs in bands of input rows (each row's Z formed once,
# so no rows are done twice; each output sums its taps band after band). Against one band, same
# runs: 32 -> 3 9x9 at 256 px, batch 2 (fast style transfer's last layer; 60 MiB of Z) 80.7
# against 97.1 ms, 256 -> 16 3x3 at 128 px, batch 1, 32.3 against 31.5; bands of 1 MiB 82.3 and
# 33.4. (In an earlier paired run one band took 92 ms where row strips took 290, and 31 where
# F(4x4, 3x3) took 38.6.)
FILTERS, PLANES, WEIGHT_GRAD = "kn2row_filters", "kn2row_planes", "kn2row_weight_grad"


def applies(kernel, stride, groups, channels, outputs, size, out_size, winograd):
    """Whether a convolution runs as per-image products over its input (rule and measurements
    above); ``winograd``: whether a Winograd form would run it otherwise."""
    taps = kernel[0] * kernel[1]
    if tuple(stride) != (1, 1) or groups != 1 or taps < 2 or outputs > MAX_OUTPUTS:
        return False
    rows = outputs * taps
    if rows < MIN_ROWS:
        return False
    if channels >= MANY_CHANNELS_RATIO * outputs or (channels >= WIDE_CHANNELS and channels >= WIDE_RATIO * outputs):
        return True
    extra = size[0] * size[1] / (out_size[0] * out_size[1])
    return not winograd and channels >= CHANNEL_RATIO * outputs and extra <= MAX_EXTRA_PIXELS


@jit
def add_taps(z, top, kh, kw, ph, pw, dh, dw, bias, init, y):
    """y[o, i, j] += sum over (u, v) of z[(o kh + u) kw + v, i - ph + u dh - top, j - pw + v dw]
    for the taps whose input pixel z holds: z (O kh kw, rows, W) is input rows [top, top + rows)
    of the image (a band), y (O, OH, OW), both contiguous; with ``init`` y is set to the bias
    first. Each output adds its taps in increasing (u, v) order, band after band."""
    outputs, out_h, out_w = y.shape
    rows, width = z.shape[1], z.shape[2]
    src = z.reshape(-1)
    dst = y.reshape(-1)
    plane_in, plane_out = rows * width, out_h * out_w
    for o in range(outputs):
        base = np.uint64(o * plane_out)
        if init:
            b = bias[o]
            for q in range(np.uint64(plane_out)):
                dst[base + q] = b
        for u in range(kh):
            shift_r = u * dh - ph  # input row of output row i: i + shift_r
            i_lo, i_hi = max(0, top - shift_r), min(out_h, top + rows - shift_r)
            for v in range(kw):
                shift_c = v * dw - pw
                j_lo, j_hi = max(0, -shift_c), min(out_w, width - shift_c)
                if j_hi <= j_lo:
                    continue
                count = np.uint64(j_hi - j_lo)
                plane = ((o * kh + u) * kw + v) * plane_in
                for i in range(i_lo, i_hi):
                    s = np.uint64(plane + (i + shift_r - top) * width + j_lo + shift_c)
                    d = base + np.uint64(i * out_w + j_lo)
                    for j in range(count):
                        dst[d + j] += src[s + j]


@jit
def spread_taps(dy, top, kh, kw, ph, pw, dh, dw, dz):
    """dz[(o kh + u) kw + v, r - top, c] = dy[o, r + ph - u dh, c + pw - v dw], 0 where that is
    no output pixel, for input rows r of [top, top + rows): dy (O, OH, OW), dz (O kh kw, rows,
    W) (a band of the image), both contiguous."""
    outputs, out_h, out_w = dy.shape
    rows, width = dz.shape[1], dz.shape[2]
    src = dy.reshape(-1)
    dst = dz.reshape(-1)
    zero = dz.dtype.type(0)
    plane_in, plane_out = rows * width, out_h * out_w
    for o in range(outputs):
        for u in range(kh):
            shift_r = u * dh - ph  # output row i reads input row i + shift_r
            for v in range(kw):
                shift_c = v * dw - pw
                c_lo, c_hi = max(0, shift_c), max(max(0, shift_c), min(width, out_w + shift_c))
                plane = np.uint64(((o * kh + u) * kw + v) * plane_in)
                for q in range(rows):
                    r = top + q
                    row = plane + np.uint64(q * width)
                    if r < shift_r or r >= out_h + shift_r:
                        for c in range(np.uint64(width)):
                            dst[row + c] = zero
                        continue
                    for c in range(np.uint64(c_lo)):
                        dst[row + c] = zero
                    s = np.uint64(o * plane_out + (r - shift_r) * out_w + c_lo - shift_c)
                    d = row + np.uint64(c_lo)
                    for c in range(np.uint64(c_hi - c_lo)):
                        dst[d + c] = src[s + c]
                    for c in range(np.uint64(c_hi), np.uint64(width)):
                        dst[row + c] = zero


class Kn2rowConvolution:
    """A stride-1, one-group convolution as per-image products over its input (see the module
    text). ``image_shape`` is (N, C, H, W); ``filters(weight)`` lays the (O, C, kh, kw) weight
    out as W' (O kh kw, C); ``forward(x, bias, y)`` and ``backward(x, dy, dx, weight_diff)`` as
    the other forms'."""

    def __init__(self, image_shape, outputs, kernel, pad, dilation, dtype):
        self.batch, self.channels, self.height, self.width = image_shape
        self.outputs, self.kernel, self.pad, self.dilation = outputs, tuple(kernel), tuple(pad), tuple(dilation)
        self.taps = self.kernel[0] * self.kernel[1]
        self.dtype = np.dtype(dtype)
        self.plane = self.height * self.width
        self.zero_bias = np.zeros(outputs, self.dtype)
        row_bytes = outputs * self.taps * self.width * self.dtype.itemsize  # one input row's Z
        self.band = max(1, min(self.height, BAND_BYTES // row_bytes))
        self.bands = [(top, min(top + self.band, self.height)) for top in range(0, self.height, self.band)]

    @property
    def weights(self):
        """W' (O kh kw, C) in scratch that every such layer shares (each lays its weight out at
        the start of its forward and of its backward, as the Winograd forms do their filters)."""
        rows = self.outputs * self.taps
        return parallel.scratch(0, FILTERS, rows * self.channels, self.dtype).reshape(rows, self.channels)

    def filters(self, weight):
        kh, kw = self.kernel
        np.copyto(self.weights.reshape(self.outputs, kh, kw, self.channels), weight.transpose(0, 2, 3, 1))

    def _planes(self, worker, outputs, band):
        """This worker's Z or dZ of ``outputs`` outputs over the input rows of ``band``:
        (outputs kh kw, band rows, W), and the same memory as an (outputs kh kw, band pixels)
        matrix."""
        rows, pixels = outputs * self.taps, (band[1] - band[0]) * self.width
        buffer = parallel.scratch(worker, PLANES, rows * self.band * self.width, self.dtype)[: rows * pixels]
        return buffer.reshape(rows, band[1] - band[0], self.width), buffer.reshape(rows, pixels)

    def _columns(self, array, n, lo, hi, band):
        """Image n's channels lo .. hi - 1 of ``array`` (N, C, H, W) over the rows of ``band``, as a
        (channels, band pixels) matrix: a view (rows H W apart), which BLAS reads in place."""
        return array[n, lo:hi].reshape(hi - lo, self.plane)[:, band[0] * self.width : band[1] * self.width]

    def _geometry(self):
        return (*self.kernel, *self.pad, *self.dilation)

    def _work_bytes(self):
        """What one pass over the batch touches, for ``over_worker_slices`` (products: always cut)."""
        return parallel.SPLIT_MIN_BYTES * max(1, self.batch)

    def forward(self, x, bias, y):
        """y = conv(x, weight) + bias (bias may be None), with W' of ``filters``: band by band of
        input rows, each band's Z summed into y while in cache."""
        bias = self.zero_bias if bias is None else bias
        weights, geometry, workers = self.weights, self._geometry(), parallel.thread_count()

        def run(worker, images, lo, hi):
            rows = weights[lo * self.taps : hi * self.taps]
            for n in images:
                for band in self.bands:
                    z, matrix = self._planes(worker, hi - lo, band)
                    np.matmul(rows, self._columns(x, n, 0, self.channels, band), out=matrix)
                    add_taps(z, band[0], *geometry, bias[lo:hi], band[0] == 0, y[n, lo:hi])

        if self.batch >= 2 * workers or self.batch % workers == 0:  # images shared out
            parallel.over_worker_slices(
                lambda w, lo, hi: run(w, range(lo, hi), 0, self.outputs), self.batch, self._work_bytes()
            )
        else:  # outputs shared out
            parallel.over_worker_slices(
                lambda w, lo, hi: run(w, range(self.batch), lo, hi), self.outputs, self._work_bytes()
            )

    def backward(self, x, dy, dx, weight_diff):
        """dx = the input gradient (when dx is not None; written), weight_diff += the weight
        gradient (when it is not None), with W' of ``filters``. Each worker takes a slice of the
        input channels: dX's rows and dW's columns of its own; band by band of input rows."""
        if dx is None and weight_diff is None:
            return
        weights, geometry = self.weights, self._geometry()
        kh, kw = self.kernel
        rows = self.outputs * self.taps

        def channels(worker, lo, hi):
            grad = None
            if weight_diff is not None:
                grad = parallel.scratch(worker, WEIGHT_GRAD, rows * (hi - lo), self.dtype).reshape(rows, hi - lo)
            for n in range(self.batch):
                for band in self.bands:
                    dz, matrix = self._planes(worker, self.outputs, band)
                    spread_taps(dy[n], band[0], *geometry, dz)
                    if dx is not None:
                        np.matmul(weights[:, lo:hi].T, matrix, out=self._columns(dx, n, lo, hi, band))
                    if grad is not None:
                        columns = self._columns(x, n, lo, hi, band).T
                        if n == 0 and band[0] == 0:
                            np.matmul(matrix, columns, out=grad)
                        else:
                            add_product(matrix, columns, grad)
            if grad is not None:
                weight_diff[:, lo:hi] += grad.reshape(self.outputs, kh, kw, hi - lo).transpose(0, 3, 1, 2)

        parallel.over_worker_slices(channels, self.channels, self._work_bytes())
