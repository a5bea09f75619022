"""Winograd F(2x2, 3x3): 3x3, stride-1 convolutions with 16 multiplications per 2x2 output
tile instead of 36 (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2016).

For one input channel, a 4x4 input patch d (rows 2i - pad.., columns 2j - pad.., 0 outside the
image) and a 3x3 filter g give the 2x2 output tile at (2i, 2j) as

    Y = A^T [(G g G^T) * (B^T d B)] A        (* element-wise, over 4x4 = 16 positions)

    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]

Summed over channels, the element-wise product is 16 independent matrix products: with
U[xi] = (G g G^T)[xi] as an (outputs x channels) matrix and V[xi] = (B^T d B)[xi] as a
(channels x tiles) matrix, M[xi] = U[xi] V[xi] (BLAS) and Y = A^T M A tile by tile. The
backward pass runs the adjoints: dM = A dY A^T, dU[xi] = dM[xi] V[xi]^T (then
dg = G^T dU G) and dV[xi] = U[xi]^T dM[xi] (then dx = B dV B^T, overlapping tiles summed).

Layout: tiles of a channel plane are numbered q = i (tw + 1) + j, one unused tile a row (its
dM is 0, so it adds nothing to dU or dx). The padded image is split into four phase planes
(even/odd rows x even/odd columns) with rows of the same tw + 1 length, so every value a tile
reads is a fixed offset of q and the transforms run as long unit-stride loops that vectorize.
Each worker takes whole images, an image in bands of tile rows whose V (and M) fit
``BAND_BYTES``, or, where an image has few tiles, runs of whole images side by side (each
channel's row holds the run's images one after another: longer products, up to ``RUN_TILES``
tiles). A batch that does not share out evenly over the workers (a batch of 1 on 2) shares out
(image, band) pieces instead (``shared_bands``; the backward in two passes, even bands then
odd, ``backward_passes``): one 224 px image's VGG-style net (tools/bench_nets.py one_big_image)
1.20x-1.25x PyTorch's time before, 0.79x-0.98x after (three runs). V and M live in the worker's
scratch as (16, rows) arrays whose 16 rows are not a multiple of 4 KiB apart (at such a
distance their 16 streams fall into the same cache sets: measured 5x slower). The kernels index
rows through slices (a slice's indices are known to be >= 0, so numba adds no
negative-index test per item, which kept loops from vectorizing).

Rounding: the transforms add a few float operations per product; float32 outputs differ
from im2col + GEMM by about 1e-6 relative to the output's scale. An output whose whole
receptive field is zero (padding alone, or a zero region of the input) would come out as the
bias plus a rounding of order 1e-7 times the tile's other values, since a tile's transforms mix
all of its 6 x 6 (4 x 4) inputs; on a zero bias such outputs sit on a ReLU's kink, and the
ReLU would pass gradient through about half of them where im2col and PyTorch pass none (a bias
gradient 49 % off in a random net, 4.9 % in an FCN-32s). So the Convolution layer sets those
outputs to the bias after every Winograd forward (``netlayers.kernels.zero_fields``): they are
exactly im2col's.
"""

import math

import numpy as np

from .. import parallel
from . import blas
from ._jit import jit

G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
FILTER_TRANSFORM = np.kron(G, G)  # (16, 9): the 16 values of G g G^T from the 9 of g
# Where it runs (forward + backward against im2col + GEMM, per-round median, 2 threads): at least
# MIN_CHANNELS input and output channels, output sides of at least MIN_OUTPUT_SIZE, and the two
# minima's product at least MIN_CHANNELS_BY_SIZE. Measured: 32 -> 32 at 32 x 32 1.31x-1.39x,
# 64 -> 64 at 32 x 32 1.27x-1.31x, at 64 x 64 1.31x-1.35x, at 16 x 16 1.09x; 128 -> 64 at
# 32 x 32 1.50x; 32 -> 32 at 16 x 16 0.90x-0.98x, 16 -> 16 at 32 x 32 0.99x-1.02x, 256 -> 256
# at 8 x 8 0.97x (too few channels or tiles for the products to pay for the transforms).
MIN_CHANNELS = 32
MIN_OUTPUT_SIZE = 16
MIN_CHANNELS_BY_SIZE = 1024
# Scratch names: conv_gemm's, so that every convolution of the process shares one set of
# buffers (the largest any of them needs), whichever way it runs
TILES, PRODUCTS, WEIGHT_GRAD = "columns", "map", "weight_grad"
FILTERS = "winograd_filters"


def add_products(dm, v, partial):
    """partial[xi] += dm[xi] v[xi]^T for every tap xi: gemm adds each product into the partial
    (``blas.add_product``), with no temporary. (Through a temporary, one as large as the
    partial doubled the weight gradient's workspace: VGG-16's 512-channel layers as F(2x2),
    16 MiB a worker; one a tap at a time cost a pass over each tap's partial.)"""
    blas.add_product(dm, v.transpose(0, 2, 1), partial)


# The filter transforms (U from the weight, the weight gradient from the workers' partials) are
# products with an inner side of 9 or 36 over every filter, which ran in the caller alone while
# the workers idled. They are cut by filters over the workers from ``parallel.SPLIT_MIN_BYTES``
# (64 x 64 filters as F(4x4) and up), and U from a 3x3 weight is made by a compiled loop
# (``_transform_nine``) instead of gemm, whose inner side of 9 ran it at a third of its rate:
# one core, float32, F(4x4)'s 36 taps, 64 x 64 filters 0.076 -> 0.039 ms, 128 x 128 0.29 ->
# 0.16 ms, 256 x 256 1.20 -> 0.70 ms; F(2x2)'s 16 taps of 512 x 512 2.6 -> 2.5 ms (writing U,
# 16.8 MB, is what takes the time there). In a net, the caller's time a step, paired rounds
# in one process, before -> after: VGG-16's conv5 block, U 45.1 -> 19.3 ms (the step 275 ->
# 252 ms), the weight gradient's transform 16.5 -> 9.1 ms (229 -> 222 ms); ResNet-50 at batch 2,
# the weight gradient's 3.8 -> 2.8 ms; CIFAR ResNet-20, U 4.3 -> 3.8 ms.
@jit
def _transform_nine(transform, flat, u, lo, hi):
    """u[t, f] = sum over k < 9 of transform[t, k] flat[f, k], for the filters f in [lo, hi):
    a chunk of filters is transposed so that each tap's loop runs over filters (unit stride)."""
    chunk = 256
    w = np.empty((9, chunk), flat.dtype)
    for f0 in range(lo, hi, chunk):
        n = min(chunk, hi - f0)
        for j in range(n):
            src = flat[f0 + j]
            for k in range(9):
                w[k, j] = src[k]
        w0, w1, w2, w3, w4 = w[0, :n], w[1, :n], w[2, :n], w[3, :n], w[4, :n]
        w5, w6, w7, w8 = w[5, :n], w[6, :n], w[7, :n], w[8, :n]
        for t in range(transform.shape[0]):
            c = transform[t]
            c0, c1, c2, c3, c4, c5, c6, c7, c8 = c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8]
            out = u[t, f0 : f0 + n]
            for j in range(n):
                front = (c0 * w0[j] + c1 * w1[j]) + (c2 * w2[j] + c3 * w3[j])
                out[j] = front + ((c4 * w4[j] + c5 * w5[j]) + (c6 * w6[j] + c7 * w7[j]) + c8 * w8[j])


def transform_filters(transform, weight, u):
    """u (T, F) = ``transform`` (T, r) @ weight^T for the F filters of ``weight`` (r values each,
    contiguous), cut by filters over the workers when large."""
    flat = weight.reshape(-1, transform.shape[1])
    u = u.reshape(transform.shape[0], -1)
    if transform.shape[1] == 9 and flat.flags.c_contiguous:

        def part(lo, hi):
            _transform_nine(transform, flat, u, lo, hi)
    else:

        def part(lo, hi):
            np.matmul(transform, flat[lo:hi].T, out=u[:, lo:hi])

    parallel.over_slices(part, len(flat), u.nbytes + flat.nbytes)


def add_weight_grad(partials, transform, weight_diff):
    """weight_diff += G^T dU G for dU the sum of ``partials`` (each worker's, taps first: (T,
    outputs, channels)), as weight_diff (outputs channels, r) += dU^T ``transform`` (T, r), one
    product a partial added into the gradient by gemm (no sum of the partials, no temporary);
    the filters cut over the workers when large."""
    taps, r = transform.shape
    if not weight_diff.flags.c_contiguous:  # a view that reshapes only as a copy
        grad = np.zeros(weight_diff.shape, weight_diff.dtype)
        add_weight_grad(partials, transform, grad)
        weight_diff += grad
        return
    grad = weight_diff.reshape(-1, r)
    products = [partial.reshape(taps, -1).T for partial in partials]

    def add(lo, hi):
        for product in products:
            blas.add_product(product[lo:hi], transform, grad[lo:hi])

    parallel.over_slices(add, len(grad), (len(partials) * taps + r) * grad.shape[0] * grad.itemsize)


# A backward that needs both gradients keeps, at once, U, each worker's weight-gradient partial
# dU (U's shape) and the band buffers: VGG-16's conv5 (512 channels, F(2x2)) 16 MiB each, 48 MiB
# of its 135 (PyTorch's whole step: 123). From this size of U the backward runs as two passes
# (``SharedFilters._split_backward``): the input gradient, then the weight gradient with worker
# 0's partial in U's buffer, one dU fewer: VGG-16's conv5 135 -> 116 MiB. The second pass
# transforms dy again. Backward alone, split / whole, medians of 9 paired rounds (2 workers):
# 512 -> 512 at 14 x 14, batch 8 (16 MiB of U) 1.005; 256 at 28 x 28, batch 8 (F(4x4), 9 MiB)
# 1.043 and 1.062; 256 at 56 x 56, batch 2 1.038; 192 at 8 x 8, batch 16 (5 MiB) 0.985 and
# 1.032. So only from 16 MiB. (A backward without input gradient reads no U: its worker 0 sums
# in U's buffer whatever the size, at no cost.)
SPLIT_FILTER_BYTES = 1 << 24


class SharedFilters:
    """The transformed filters U of a Winograd convolution (``u_shape``, set by its
    ``filters``), in one buffer that every Winograd convolution of the process shares: a layer
    transforms its weights at the start of its forward and of each top's backward, so none
    needs U of its own between passes. VGG-16's 512-channel 3x3 layers hold 16.8 MB of U each
    as F(2x2), ResNet-50's 256-channel ones 9.4 MB as F(4x4): 4x their weights."""

    u_shape: tuple
    groups = 1

    @property
    def u(self):
        return parallel.scratch(0, FILTERS, math.prod(self.u_shape), self.dtype).reshape(self.u_shape)

    def _partial(self, worker, in_filters):
        """``worker``'s weight-gradient partial dU, shaped as U; worker 0's in U's own buffer
        when ``in_filters`` (a backward without input gradient reads no U: U must then be made
        again, ``filters``, before this object's next pass)."""
        if worker == 0 and in_filters:
            return self.u
        return parallel.scratch(worker, WEIGHT_GRAD, math.prod(self.u_shape), self.dtype).reshape(self.u_shape)

    def _split_backward(self, x, dy, dx, weight_diff):
        """Where both gradients are wanted and U takes ``SPLIT_FILTER_BYTES`` or more: the
        backward as two passes, the input gradient (which reads U), then the weight gradient,
        whose worker 0 sums its partial in U's buffer. True when it ran so."""
        if dx is None or weight_diff is None or math.prod(self.u_shape) * self.dtype.itemsize < SPLIT_FILTER_BYTES:
            return False
        self.backward(x, dy, dx, None)
        self.backward(x, dy, None, weight_diff)
        return True

    # The tap products, by groups: with ``groups`` > 1 an output sees only its group's channels,
    # so U is (taps, outputs, channels / groups) and each group's rows of M come from its own
    # rows of V (the transforms, one channel at a time, do not change). The groups are a second
    # stack axis of one matmul call (splitting the rows axis of a (taps, rows, span) view is a
    # view again): forward + backward of 32 groups of 32 channels at 7 x 7, batch 8, 20.2 ms
    # with a call a group, 10.7 ms as one stack (medians of 3 paired rounds).
    def _stacks(self, *matrices):
        """(taps, rows, span) matrices as (taps, groups, rows / groups, span) views."""
        return [m.reshape(m.shape[0], self.groups, m.shape[1] // self.groups, m.shape[2]) for m in matrices]

    def _forward_products(self, v, m):
        """m[xi] = U[xi] v[xi] for every tap xi ((taps, channels, span) -> (taps, outputs, span))."""
        if self.groups == 1:
            np.matmul(self.u, v, out=m)
            return
        u, v, m = self._stacks(self.u, v, m)
        np.matmul(u, v, out=m)

    def _data_products(self, dm, v):
        """v[xi] = U[xi]^T dm[xi] for every tap xi (the input gradient's transformed tiles)."""
        if self.groups == 1:
            np.matmul(self.u.transpose(0, 2, 1), dm, out=v)
            return
        u, dm, v = self._stacks(self.u, dm, v)
        np.matmul(u.transpose(0, 1, 3, 2), dm, out=v)

    def _weight_products(self, dm, v, partial, add):
        """partial[xi] (+)= dm[xi] v[xi]^T for every tap xi: added with ``add``, else written."""
        if self.groups > 1:
            dm, v, partial = self._stacks(dm, v, partial)
        v_t = v.swapaxes(-1, -2)
        if add:
            blas.add_product(dm, v_t, partial)
        else:
            np.matmul(dm, v_t, out=partial)


BAND_BYTES = 1 << 21  # transformed tiles of a band of tile rows (V, and M likewise), a worker.
# With F(2x2) alone, forward + backward against im2col, per-round median: 128 -> 128 at 32 x 32
# with 1 MiB (3 bands) 1.27x, 2 MiB (2 bands) 1.44x, 4 MiB (1 band) 1.59x; 256 -> 256 at 16 x 16
# 1.25x, 1.56x, 1.52x. With F(4x4) and runs of images, whole nets side by side (8 rounds, ms,
# min / median, 4 MiB against 2 MiB): VGG 97.4 / 125.1 against 98.9 / 129.6, ResNet 111.1 / 118.3
# against 92.9 / 117.5; VGG's peak memory (bench_nets --memory) 79 MiB against 67: 2 MiB it is.
RUN_TILES = 256  # images whose tiles fit a band run side by side up to this many tiles a channel
# (and at most BAND_BYTES): 256 -> 256 at 16 x 16 (72 tiles an image), backward 1.12x with runs of
# 2 images; 64 -> 64 at 32 x 32 (272 tiles) gained nothing from runs of 3 and its forward lost 7-10%.


# Outputs of MIN_SMALL_MAP_SIZE to MIN_OUTPUT_SIZE - 1 rows and columns (VGG's and ResNet's
# 14 x 14 stage) run as F(2x2, 3x3) too, with at least MIN_SMALL_MAP_CHANNELS input and output
# channels and at least MIN_SMALL_MAP_TILES tiles in the batch (images x 2x2 tiles): below that
# the 16 products are too short. Forward + backward against im2col + GEMM, 2 threads, float32
# (2026-12-03, AMD EPYC): 256 -> 256 at 14 x 14 batch 8 0.70x, batch 16 0.73x, batch 4 0.87x,
# batch 2 (512 -> 512) 1.17x, batch 1 2.07x; 512 -> 512 at 14 x 14 batch 8 0.71x, batch 4
# 0.93x; 128 -> 128 at 14 x 14 batch 16 0.68x, batch 8 0.91x, batch 4 1.23x; at 12 x 12
# 256 -> 256 batch 8 0.91x, batch 4 1.08x, 128 -> 128 batch 32 0.80x; 256 -> 256 at 10 x 10
# batch 8 1.00x, at 9 x 9 1.16x. F(4x4, 3x3) at 14 x 14 (16 tiles of 4 x 4 for 14 x 14
# outputs) was no faster than im2col (256 -> 256 batch 8 1.03x, 512 -> 512 0.90x).
# Remeasured on today's kernels (2026-12-05, medians of 7 paired rounds, same terms): F(2x2)
# now wins from about 96 tiles. 256 -> 256 at 14 x 14 batch 4 (196 tiles) 0.71x-0.73x, batch 2
# (98) 0.85x-0.90x, batch 1 (49) 1.37x; 512 -> 512 at 14 batch 2 0.85x, batch 4 0.78x; 128 ->
# 128 at 14 batch 3 0.74x, batch 2 0.87x, batch 1 1.23x; at 12 x 12 batch 4 (144) 0.84x;
# 256 -> 256 at 12 batch 4 0.83x, batch 2 (72) 0.99x. Whole nets, paired rounds (the threshold
# at 96 against 256): ResNet-50 (batch 2: its 14 x 14 layers) 0.991x, the Tiny-YOLO backbone
# (128 -> 256 at 14 x 14, batch 4) 0.968x.
# With 64 channels it still loses below 192 tiles (64 -> 64 at 14 batch 2 1.02x, at 12 batch 4
# 1.07x): the channel minimum stays.
MIN_SMALL_MAP_SIZE = 12
MIN_SMALL_MAP_CHANNELS = 128
MIN_SMALL_MAP_TILES = 96

# One image (a batch of 1) of outputs of MIN_OUTPUT_SIZE or more, which would run as F(4x4),
# needs MIN_ONE_IMAGE_TILES 4x4 tiles (28 x 28 outputs): its workers share the image's tile rows,
# and on fewer tiles their products are a few tiles wide. Forward + backward against im2col, 2
# workers, float32, medians of 7 to 9 paired rounds (2026-12-06): 128 -> 128 at 16 x 16 (16
# tiles) 3.80 against 1.99 ms (PyTorch 1.95), 256 -> 256 at 16 13.2 against 6.3, at 20 (25)
# 4.79 against 3.11, at 24 (36) 7.94 against 5.81; where it still won: at 28 (49) 4.57 against
# 5.54, 64 -> 64 at 32 (64) 2.05 against 2.62, at 56 3.56 against 5.91. Two images of 16 x 16
# tied (3.98 against 4.01), three won (4.47 against 7.73). Those runs shared one image's tile
# rows between the workers; since one image runs by positions (``winograd4``'s
# ``_by_positions``), F(4x4) against im2col, per-round medians of 15: 128 -> 128 at 16 x 16
# 0.96x, 256 -> 256 at 16 1.03x, 128 at 20 (25 tiles) 0.88x, at 24 (36) 0.75x; again in the
# thirty-sixth session at 25 tiles: 512 -> 512 at 20 0.82x, 256 0.95x, 128 0.84x, 64 1.11x, and
# 128 at 17 x 17 (25 tiles, 72 % of their outputs inside the map) 1.15x; at 36 tiles 64 -> 64 at
# 24 0.90x. A lower floor would pay only with a rule on the channels and the tiles' cover, for
# maps of 17 to 24 outputs a side at batch 1 (no bench or zoo net has one): left at 49.
MIN_ONE_IMAGE_TILES = 49

# Few channels (16 to 31, or fewer channels times the shorter side under MIN_CHANNELS_BY_SIZE:
# CIFAR ResNets' 16- and 32-channel stages, DenseNet's 32-output layers, SqueezeNet's expands)
# run as F(2x2, 3x3) too from outputs of MIN_SMALL_MAP_SIZE, with at least MIN_FEW_CHANNELS
# input and output channels, the fewer channels times the shorter side at least
# MIN_FEW_CHANNELS_BY_SIZE and at least MIN_FEW_CHANNELS_TILES tiles in the batch: im2col's
# products there have a side of 16 to 32 (OpenBLAS at half its rate). Forward + backward against
# im2col + GEMM, 2 threads, float32, medians of 4 rounds (2026-12-04, AMD EPYC), input ->
# output channels at size, batch: 16 -> 16 at 32, 32 0.82x, batch 16 0.85x, batch 8 0.82x;
# 16 -> 16 at 56, 8 0.76x; 16 -> 16 at 28, 64 0.75x; 16 -> 64 at 32, 16 0.88x; 64 -> 16 at 32,
# 16 0.47x; 32 -> 32 at 16, 32 0.72x, batch 8 0.73x; 32 -> 32 at 28, 16 0.72x; 64 -> 32 at 28,
# 16 0.59x; 128 -> 32 at 28, 16 0.53x; 24 -> 24 at 28, 16 0.69x; 20 -> 20 at 20, 16 0.89x;
# 24 -> 24 at 16, 16 0.83x; 48 -> 48 at 12, 32 0.89x; 32 -> 32 at 14, 32 0.75x; 64 -> 64 at 14,
# 16 0.83x; 64 -> 32 at 14, 16 0.72x. Ties: 16 -> 16 at 24, 32 1.00x; 32 -> 32 at 12, 16 1.03x.
# Left to im2col, where Winograd lost: 16 -> 16 at 16, 32 (fewer times side 256) 1.06x; 16 -> 16
# at 32, batch 1 (256 tiles) 2.1x; 32 -> 32 at 8, 32 1.5x; 8 -> 8 at 32 1.2x; 3 -> 16 at 32 1.9x.
MIN_FEW_CHANNELS = 16
MIN_FEW_CHANNELS_BY_SIZE = 384
MIN_FEW_CHANNELS_TILES = 512
# With many more inputs than outputs (or the reverse) fewer tiles pay: the products grow with the
# larger side, the output (or input) transform only with the fewer channels. Such layers went to
# row strips (``strips``: at least 4x the outputs) or im2col. Forward + backward, 7 paired rounds
# (2026-12-05), the strips' time -> Winograd's, both against im2col: 128 -> 32 at 28 x 28 batch 2
# (392 tiles) 1.03x -> 0.73x-0.82x; at 19 x 19 batch 4 (400) 0.83x -> 0.68x; 256 -> 64 at 14 x 14
# batch 4 (196) 1.01x -> 0.76x, batch 8 1.05x -> 0.81x. Not below it: 128 -> 32 at 19 batch 2
# (200 tiles x 128) 1.03x against 0.94x-0.99x; at 28 x 28 batch 1 1.07x against 1.50x; 64 -> 16
# at 28 batch 2 0.96x against 0.86x-1.06x; 256 -> 64 at 14 batch 2 (98 tiles) 0.85x against 0.81x.
# The rule counts the larger side only, so it also takes layers of 96 to 127 channels on both
# sides from 342 (96) to 258 (127) tiles; F(2x2) measured 0.82x of im2col on such a layer with
# fewer tiles still (96 -> 96 at 14 x 14 batch 2, 98 tiles).
MIN_FEW_CHANNELS_WIDE_TILES = 192
MIN_FEW_CHANNELS_WIDE_WORK = 32768  # tiles times the larger channel count

# A grouped convolution runs as ``groups`` convolutions side by side: every channel transformed
# once, then each group's products apart (``SharedFilters._forward_products``). im2col's grouped
# products are small (a group's outputs by its channels x 9), so Winograd pays earlier than for
# one group. Forward + backward, the time with Winograd forced / with im2col, 2 workers, medians
# of 3 paired rounds in one process (2026-12-06), batch, channels = outputs at output size,
# groups: 8, 128 at 28, g2 0.53x (24.96 -> 13.34 ms), g4 0.51x, g8 0.88x; 8, 64 at 56, g2 0.66x,
# g4 0.75x; 32, 64 at 16, g2 0.69x; 8, 32 at 56, g2 0.70x; 16, 64 at 28, g4 (16 a group) 0.85x;
# 2, 128 at 28, g4 0.80x; 8, 256 at 14, g4 0.98x, g8 0.71x; 16, 128 at 14, g4 0.88x; 4, 512 at
# 14, g16 0.77x; 8, 256 at 7, g4 0.70x; 8, 1024 at 7, g32 (ResNeXt's last stage) 0.71x. Where
# it lost: 16 channels a group at 7 x 7 (8, 512, g32: 1.16x, and again with the groups stacked
# below) and 49 tiles (1, 256 at 14 x 14, g2: 1.17x). With the groups as one stack of products
# (below) 32 groups of 16 at 14 x 14 (8, 512) ran 13.1 against im2col's 19.8 ms (1.00x and
# 2.02x PyTorch's time in the same rounds). So: at least MIN_GROUP_CHANNELS channels and outputs
# a group (MIN_GROUP_CHANNELS_SMALL_MAP on maps under MIN_SMALL_MAP_SIZE) and MIN_GROUP_TILES 2x2
# tiles in the batch.
MIN_GROUP_CHANNELS = 16
MIN_GROUP_CHANNELS_SMALL_MAP = 32
MIN_GROUP_TILES = 96


def grouped_applies(groups, channels, outputs, out_size, batch):
    """Whether a 3x3 stride-1 convolution of ``groups`` > 1 groups runs as Winograd (the rule
    above; F(4x4) or F(2x2) as ``convolution`` picks for a group's channels)."""
    fewest = min(channels, outputs) // groups
    small = min(out_size) < MIN_SMALL_MAP_SIZE
    if fewest < (MIN_GROUP_CHANNELS_SMALL_MAP if small else MIN_GROUP_CHANNELS):
        return False
    return batch * math.prod(-(-side // 2) for side in out_size) >= MIN_GROUP_TILES


# Small maps as F(4x4, 3x3) (``winograd4``), measured against what ran before (im2col + GEMM below
# 12 x 12, F(2x2) at 12), forward + backward of one layer, 2 threads, float32, medians of 7 paired
# rounds (2026-12-04, AMD EPYC), input -> output channels at output size, batch: 64 -> 64 at 8,
# 32 0.82x; 128 -> 128 at 8, 32 0.76x, batch 16 0.86x; 256 -> 256 at 8, 32 0.73x; 512 -> 512 at
# 8, 32 0.77x; 32 -> 32 at 8, 32 0.88x; 128 -> 64 and 64 -> 128 at 8, 32 0.90x, 0.92x; 64 -> 64
# at 7, 32 0.89x; at 10, 32 0.75x; at 11, 32 0.72x; 128 -> 128 at 10, 16 0.89x; at 12, 16 0.81x
# (F(2x2) before); 256 -> 256 at 12, 16 0.82x; 48 -> 48 at 12, 32 0.69x; 64 -> 64 at 12, 16 0.76x.
# Where it lost: fewer than 128 tiles in the batch (images x 4x4 tiles: 64 -> 64 at 8, batch 8
# 1.16x; 128 -> 128 at 8, batch 8 1.20x; 256 -> 256 at 8, batch 8 1.45x; 512 -> 512 at 7, batch
# 8 1.65x; 64 -> 64 at 12, batch 8 1.07x; 32 -> 32 at 8, batch 16 1.07x); tiles of which a third
# or more lies outside the map (64 -> 64 at 9, 32 1.05x; at 6, 32 1.13x; at 13, 16 1.06x against
# F(2x2)); 16 channels (16 -> 16 at 8, batch 32 0.95x, batch 16 1.13x); and 14 x 14, where F(2x2)
# stays (64 -> 64 batch 16 1.06x, 128 -> 128 batch 8 1.06x, 32 -> 32 batch 32 1.00x). Dilated
# layers' phases too (``dilated``): 64 -> 64 at 64 x 64, dilation 8 (phases of 8 x 8), batch 4
# 0.75x, batch 2 0.88x.
# Capped at 256 x 256 filters (MAX_SMALL_F4_FILTERS): F(4x4)'s transformed filters and each
# worker's weight-gradient partial are 36 values a filter, 9.4 MB each at 256 x 256; at 512 x 512
# (ResNet-34's last stage at batch 32, 0.77x the time) they would be 38 MB each, three of them,
# against im2col's columns of the weight's size (9.4 MB).
# Remeasured on today's kernels (2026-12-05, 7 paired rounds against im2col): from 64 tiles it
# wins now. 256 -> 256 at 7 x 7 batch 16 (64 tiles) 0.77x, at 8 x 8 batch 16 0.64x; 128 -> 128
# at 7 batch 16 0.73x, at 12 batch 8 (72) 0.60x (F(2x2) 0.75x-0.79x); 64 -> 64 at 7 batch 16
# 0.87x; with 32 tiles still 1.04x (256 -> 256 at 7, batch 8). Whole net, paired rounds: NiN
# (conv3, 192 -> 192 at 8 x 8, batch 16: 64 tiles) 0.962x.
MIN_SMALL_F4_SIZE, MAX_SMALL_F4_SIZE = 7, 12
MIN_SMALL_F4_CHANNELS = 32
MAX_SMALL_F4_FILTERS = 256 * 256
MIN_SMALL_F4_TILES = 64
MIN_SMALL_F4_COVER = 0.68  # the share of the tiles' outputs inside the map (10 x 10: 0.69)


def small_map_f4(channels, outputs, out_size, batch):
    """Whether a 3x3 stride-1 convolution's small output map runs as F(4x4, 3x3) (the rule
    above): the shorter side ``MIN_SMALL_F4_SIZE`` to ``MAX_SMALL_F4_SIZE``, at least
    ``MIN_SMALL_F4_CHANNELS`` input and output channels and at most ``MAX_SMALL_F4_FILTERS``
    filters, ``MIN_SMALL_F4_TILES`` 4x4 tiles in the batch, and at least ``MIN_SMALL_F4_COVER``
    of the tiles' outputs inside the map."""
    if not MIN_SMALL_F4_SIZE <= min(out_size) <= MAX_SMALL_F4_SIZE or min(channels, outputs) < MIN_SMALL_F4_CHANNELS:
        return False
    if channels * outputs > MAX_SMALL_F4_FILTERS:
        return False
    tiles = math.prod(-(-side // 4) for side in out_size)
    return batch * tiles >= MIN_SMALL_F4_TILES and math.prod(out_size) >= MIN_SMALL_F4_COVER * 16 * tiles


def applies(kernel, stride, dilation, pad, groups, channels, outputs, out_size, batch):
    """Whether a convolution of ``batch`` images runs as Winograd F(2x2, 3x3): a 3x3 kernel,
    stride 1, dilation 1, the same padding of 0 or 1 on both axes, and either at least
    ``MIN_CHANNELS`` input and output channels, outputs of at least ``MIN_OUTPUT_SIZE`` rows
    and columns, and the fewer channels times the shorter output side at least
    ``MIN_CHANNELS_BY_SIZE``, or the small-map rule or the few-channels rule above, or
    ``small_map_f4`` (where each was measured faster: with fewer channels or tiles the products
    are too small to pay for the transforms), and for one image of F(4x4)'s sizes at least
    ``MIN_ONE_IMAGE_TILES`` tiles. A grouped convolution: ``grouped_applies``."""
    if not (kernel == (3, 3) and stride == (1, 1) and dilation == (1, 1) and pad[0] == pad[1] <= 1):
        return False
    if groups > 1:
        return grouped_applies(groups, channels, outputs, out_size, batch)
    fewer, shorter = min(channels, outputs), min(out_size)
    f4_tiles = math.prod(-(-side // 4) for side in out_size)
    if batch == 1 and shorter >= MIN_OUTPUT_SIZE and f4_tiles < MIN_ONE_IMAGE_TILES:
        return False
    if shorter >= MIN_OUTPUT_SIZE and fewer >= MIN_CHANNELS and fewer * shorter >= MIN_CHANNELS_BY_SIZE:
        return True
    if small_map_f4(channels, outputs, out_size, batch):
        return True
    if shorter < MIN_SMALL_MAP_SIZE:
        return False
    tiles = batch * math.prod(-(-side // 2) for side in out_size)
    if fewer >= MIN_SMALL_MAP_CHANNELS and tiles >= MIN_SMALL_MAP_TILES:
        return True
    if fewer < MIN_FEW_CHANNELS or fewer * shorter < MIN_FEW_CHANNELS_BY_SIZE:
        return False
    wide = tiles >= MIN_FEW_CHANNELS_WIDE_TILES and tiles * max(channels, outputs) >= MIN_FEW_CHANNELS_WIDE_WORK
    return tiles >= MIN_FEW_CHANNELS_TILES or wide


# F(4x4, 3x3) (``winograd4``: 36 products a 4x4 tile) where it applies, from MIN_CHANNELS_F4 input
# and output channels. Forward + backward against F(2x2), 2 threads, float32, per-round median
# (min): 64 -> 64 at 16 x 16 batch 16 1.23x (1.27x), at 32 x 32 batch 16 1.13x-1.21x (1.08x-1.19x),
# at 64 x 64 batch 8 1.18x-1.24x; 64 -> 128 and 128 -> 64 at 32 x 32 1.18x-1.22x; 128 -> 128 at
# 32 x 32 batch 8 1.18x-1.25x (1.13x-1.37x); 256 -> 256 at 16 x 16 batch 8 1.23x-1.35x; whole nets
# (tools/bench_nets.py's, netlayers alone): VGG 1.15x, ResNet 1.14x. 32 -> 32 at 32 x 32 1.03x
# (0.88x), at 64 x 64 1.35x. With few channels (the rule above, 2026-12-04) F(4x4) also won:
# its transforms write 2.25 values an output against F(2x2)'s 4, and with 16 to 48 channels the
# transforms cost as much as the products. F(4x4) time / F(2x2) time, forward + backward, medians
# of 8 paired rounds: 16 -> 16 at 32 x 32 batch 32 0.88x, batch 8 0.85x; 32 -> 32 at 16 x 16
# batch 32 0.87x, at 32 x 32 batch 8 0.90x, at 28 x 28 batch 16 0.94x; 24 -> 24 at 16 x 16 0.86x;
# 48 -> 48 at 16 x 16 0.91x; 16 -> 64 at 32 x 32 0.85x; 64 -> 32 at 28 x 28 0.97x; 64 -> 16 at
# 32 x 32 1.02x and 16 -> 16 at 56 x 56 batch 8 1.05x (even). Whole nets, paired rounds: CIFAR
# ResNet-20 0.90x, SqueezeNet's fires 0.93x, the one-image VGG 0.95x, the DenseNet block 0.99x.
MIN_CHANNELS_F4 = 16


def convolution(image_shape, outputs, pad, dtype, groups=1):
    """The Winograd convolution for a geometry where ``applies``: F(4x4, 3x3) (``winograd4``)
    with at least ``MIN_CHANNELS_F4`` input and output channels a group and outputs of at least
    ``MIN_OUTPUT_SIZE`` rows and columns, or where ``small_map_f4``; else F(2x2, 3x3)."""
    out_size = tuple(side + 2 * pad - 2 for side in image_shape[2:])
    channels, outputs_a_group = image_shape[1] // groups, outputs // groups
    large = min(channels, outputs_a_group) >= MIN_CHANNELS_F4 and min(out_size) >= MIN_OUTPUT_SIZE
    if large or small_map_f4(channels, outputs_a_group, out_size, image_shape[0]):
        from .winograd4 import Winograd4Convolution  # here: winograd4 imports this module

        return Winograd4Convolution(image_shape, outputs, pad, dtype, groups)
    return WinogradConvolution(image_shape, outputs, pad, dtype, groups)


@jit
def _gather_phases(image, pad, first_row, rows, tiles_w, ph):
    """ph[2r + s, I (tw + 1) + k] = image[2 (first_row + I) + r - pad, 2k + s - pad] (0 outside)
    for I <= rows, k <= tw: one pass over each image row, its even and odd columns to the row's
    two phase planes."""
    h, w = image.shape
    w1 = tiles_w + 1
    half = w // 2
    s_even, k_even = pad % 2, pad // 2  # column 2k is padded column 2k + pad
    s_odd, k_odd = (pad + 1) % 2, (pad + 1) // 2
    for band_row in range(2 * rows + 2):
        row = 2 * first_row + band_row - pad
        r = band_row % 2
        q0 = (band_row // 2) * w1
        ph[2 * r, q0 : q0 + w1] = 0
        ph[2 * r + 1, q0 : q0 + w1] = 0
        if 0 <= row < h:  # slices, here and below: indices known >= 0 (no wraparound test)
            src = image[row]
            even = ph[2 * r + s_even, q0 + k_even : q0 + k_even + half + w % 2]
            odd = ph[2 * r + s_odd, q0 + k_odd : q0 + k_odd + half]
            for k in range(half):
                even[k] = src[2 * k]
                odd[k] = src[2 * k + 1]
            if w % 2:
                even[half] = src[w - 1]


@jit
def input_tiles(x, pad, first_row, rows, tiles_w, v, offset, channel_tiles):
    """v[4a + b, c S + o + q] = (B^T d B)[a, b] for tile q = i (tw + 1) + j of tile rows
    [first_row, first_row + rows) of one image x (C, H, W): d is x[c]'s 4x4 patch at rows
    2 (first_row + i) - pad.., columns 2j - pad.. (0 outside); S = ``channel_tiles`` (at least
    o + rows (tw + 1)), o = ``offset`` (where this image's tiles start in each channel's row)."""
    chans = x.shape[0]
    w1 = tiles_w + 1
    band = rows * w1
    ph = np.zeros((4, (rows + 1) * w1 + 1), x.dtype)
    t = np.zeros((8, band + 1), x.dtype)
    for c in range(chans):
        _gather_phases(x[c], pad, first_row, rows, tiles_w, ph)
        for s in range(2):  # t[2a + s] = (B^T d)[a] on column phase s
            p0, p2 = ph[s, : band + 1], ph[2 + s, : band + 1]  # phase rows I, and I + 1 below
            p0_next, p2_next = ph[s, w1 : w1 + band + 1], ph[2 + s, w1 : w1 + band + 1]
            for q in range(band + 1):
                t[s, q] = p0[q] - p0_next[q]
            for q in range(band + 1):
                t[2 + s, q] = p2[q] + p0_next[q]
            for q in range(band + 1):
                t[4 + s, q] = p0_next[q] - p2[q]
            for q in range(band + 1):
                t[6 + s, q] = p2[q] - p2_next[q]
        base = c * channel_tiles + offset  # row slices: indices known >= 0 (no wraparound test)
        for a in range(4):
            v0, v1 = v[4 * a, base : base + band], v[4 * a + 1, base : base + band]
            v2, v3 = v[4 * a + 2, base : base + band], v[4 * a + 3, base : base + band]
            for q in range(band):
                v0[q] = t[2 * a, q] - t[2 * a, q + 1]
            for q in range(band):
                v1[q] = t[2 * a + 1, q] + t[2 * a, q + 1]
            for q in range(band):
                v2[q] = t[2 * a, q + 1] - t[2 * a + 1, q]
            for q in range(band):
                v3[q] = t[2 * a + 1, q] - t[2 * a + 1, q + 1]


@jit
def output_tiles(m, bias, first_row, rows, tiles_w, y, offset, channel_tiles):
    """y[k, 2 (first_row + i) + r, 2j + s] = (A^T m A)[r, s] + bias[k] inside y (K, OH, OW),
    m laid out as v of ``input_tiles``."""
    chans, oh, ow = y.shape
    w1 = tiles_w + 1
    band = rows * w1
    sr = np.zeros((4, band), y.dtype)
    even = np.zeros(band, y.dtype)
    odd = np.zeros(band, y.dtype)
    half = ow // 2
    for k in range(chans):
        bk = bias[k]
        p0 = k * channel_tiles + offset
        for r in range(2):
            for b in range(4):
                m0, m1 = m[b, p0 : p0 + band], m[4 + b, p0 : p0 + band]
                m2, m3 = m[8 + b, p0 : p0 + band], m[12 + b, p0 : p0 + band]
                if r == 0:
                    for q in range(band):
                        sr[b, q] = m0[q] + m1[q] + m2[q]
                else:
                    for q in range(band):
                        sr[b, q] = m1[q] - m2[q] - m3[q]
            for q in range(band):
                even[q] = sr[0, q] + sr[1, q] + sr[2, q] + bk
            for q in range(band):
                odd[q] = sr[1, q] - sr[2, q] - sr[3, q] + bk
            for i in range(rows):
                row = 2 * (first_row + i) + r
                if row >= oh:
                    break
                q0 = i * w1
                for j in range(half):
                    y[k, row, 2 * j] = even[q0 + j]
                    y[k, row, 2 * j + 1] = odd[q0 + j]
                if ow % 2:
                    y[k, row, ow - 1] = even[q0 + half]


@jit
def output_tiles_adjoint(dy, first_row, rows, tiles_w, dm, offset, channel_tiles):
    """dm = the adjoint of ``output_tiles`` (without bias) for dy (K, OH, OW), laid out as v of
    ``input_tiles``; the unused tile of each row gets 0."""
    chans, oh, ow = dy.shape
    w1 = tiles_w + 1
    band = rows * w1
    g = np.zeros((4, band), dy.dtype)
    t = np.zeros((8, band), dy.dtype)
    half = ow // 2
    for k in range(chans):
        for r in range(2):
            for i in range(rows):
                row = 2 * (first_row + i) + r
                q0 = i * w1
                for j in range(w1):
                    g[2 * r, q0 + j] = 0
                for j in range(w1):
                    g[2 * r + 1, q0 + j] = 0
                if row < oh:
                    for j in range(half):
                        g[2 * r, q0 + j] = dy[k, row, 2 * j]
                        g[2 * r + 1, q0 + j] = dy[k, row, 2 * j + 1]
                    if ow % 2:
                        g[2 * r, q0 + half] = dy[k, row, ow - 1]
        for s in range(2):
            for q in range(band):
                t[s, q] = g[s, q]
            for q in range(band):
                t[2 + s, q] = g[s, q] + g[2 + s, q]
            for q in range(band):
                t[4 + s, q] = g[s, q] - g[2 + s, q]
            for q in range(band):
                t[6 + s, q] = -g[2 + s, q]
        p0 = k * channel_tiles + offset
        for a in range(4):
            d0, d1 = dm[4 * a, p0 : p0 + band], dm[4 * a + 1, p0 : p0 + band]
            d2, d3 = dm[4 * a + 2, p0 : p0 + band], dm[4 * a + 3, p0 : p0 + band]
            for q in range(band):
                d0[q] = t[2 * a, q]
            for q in range(band):
                d1[q] = t[2 * a, q] + t[2 * a + 1, q]
            for q in range(band):
                d2[q] = t[2 * a, q] - t[2 * a + 1, q]
            for q in range(band):
                d3[q] = -t[2 * a + 1, q]


@jit
def input_tiles_adjoint(dv, pad, first_row, rows, tiles_w, dx, carry, offset, channel_tiles, adding):
    """The adjoint of ``input_tiles`` for dv (unused tiles 0; laid out as v there) into one
    image dx (C, H, W):
    writes the image rows of phase rows [first_row, first_row + rows); the band's last phase
    row, shared with the next band, goes to ``carry`` (C, 4, tw + 1), which the next band adds
    (a band with first_row 0 starts afresh), and is written when the band ends the image.
    ``adding``: instead, every image row the band's patches reach, the shared last phase row
    included, is added into dx (no carry: the bands may then run in any order)."""
    chans, h, w = dx.shape
    w1 = tiles_w + 1
    band = rows * w1
    phase_plane = (rows + 1) * w1
    t = np.zeros((8, band), dx.dtype)  # t[2a + s]: row a of the tile, column phase s
    u = np.zeros((4, band), dx.dtype)
    ph = np.zeros((4, phase_plane), dx.dtype)
    half = w // 2
    s_even, k_even = pad % 2, pad // 2
    s_odd, k_odd = (pad + 1) % 2, (pad + 1) // 2
    ends_image = first_row + rows == (h + 2 * pad - 1) // 2  # the image's tile rows: ceil(OH / 2)
    last_row = h if ends_image else min(h, 2 * (first_row + rows) - pad)  # else carried over
    if adding:
        last_row = min(h, 2 * (first_row + rows + 1) - pad)
    for c in range(chans):
        base = c * channel_tiles + offset
        for a in range(4):
            d0, d1 = dv[4 * a, base : base + band], dv[4 * a + 1, base : base + band]
            d2, d3 = dv[4 * a + 2, base : base + band], dv[4 * a + 3, base : base + band]
            for q in range(band):  # tile j's columns 2j + 2 (phase 0) and 2j + 3 (phase 1)
                u[0, q] = d1[q] + d2[q] - d0[q]
            for q in range(band):
                u[1, q] = -d3[q]
            t[2 * a, 0] = d0[0]
            t[2 * a + 1, 0] = d1[0] - d2[0] + d3[0]
            for q in range(1, band):
                t[2 * a, q] = d0[q] + u[0, q - 1]
            for q in range(1, band):
                t[2 * a + 1, q] = d1[q] - d2[q] + d3[q] + u[1, q - 1]
        for s in range(2):  # rows: phase 0 gets a = 0 (I = i) and a = 2 (I = i + 1); phase 1 a = 1, 3
            for q in range(band):
                ph[s, q] = t[s, q]
            for q in range(band, phase_plane):
                ph[s, q] = 0
            below = ph[s, w1 : w1 + band]
            for q in range(band):
                below[q] += t[2 + s, q] + t[4 + s, q] - t[s, q]
            for q in range(band):
                ph[2 + s, q] = t[2 + s, q] - t[4 + s, q] + t[6 + s, q]
            for q in range(band, phase_plane):
                ph[2 + s, q] = 0
            below = ph[2 + s, w1 : w1 + band]
            for q in range(band):
                below[q] -= t[6 + s, q]
        if not adding:
            if first_row > 0:
                for p in range(4):
                    for k in range(w1):
                        ph[p, k] += carry[c, p, k]
            for p in range(4):
                for k in range(w1):
                    carry[c, p, k] = ph[p, rows * w1 + k]
        for row in range(max(0, 2 * first_row - pad), last_row):
            band_row = row + pad - 2 * first_row
            r = band_row % 2
            q0 = (band_row // 2) * w1
            dst = dx[c, row]
            even = ph[2 * r + s_even, q0 + k_even : q0 + k_even + half + w % 2]
            odd = ph[2 * r + s_odd, q0 + k_odd : q0 + k_odd + half]
            if adding:
                for k in range(half):
                    dst[2 * k] += even[k]
                    dst[2 * k + 1] += odd[k]
                if w % 2:
                    dst[w - 1] += even[half]
                continue
            for k in range(half):
                dst[2 * k] = even[k]
                dst[2 * k + 1] = odd[k]
            if w % 2:
                dst[w - 1] = even[half]


def shared_bands(batch, bands):
    """The bands whose (image, band) pieces are shared out over the workers, or None when each
    worker takes its share of the batch, whole images (``bands`` the images' bands then). Pieces
    when the batch does not share out evenly (a batch of 1 on 2 workers: one would idle) and the
    images are cut into bands, or the batch is smaller than the worker count and its images have
    at least 2 tile rows. The pieces' bands are ``bands`` cut finer where needed: at least twice
    as many as workers (the backward runs even bands, then odd bands: each pass needs a piece a
    worker)."""
    threads = parallel.thread_count()
    tiles_h = bands[-1][0] + bands[-1][1]
    if batch % threads == 0 or tiles_h < 2 or (len(bands) == 1 and batch > threads):
        return None
    count = max(len(bands), min(tiles_h, 2 * threads))
    cuts = [parallel.share(k, count, tiles_h) for k in range(count)]  # no band higher than one of ``bands``
    return [(cut.start, len(cut)) for cut in cuts]


def run_length(fit, image_tiles, batch):
    """Images a run takes side by side (each image of one band): as many as ``fit`` the band's
    bytes, up to ``RUN_TILES`` tiles a channel, and no more than a worker's share of the batch,
    which sizes the scratch (F(4x4) at 8 x 8, batch 32: 56 images' V and M, 2 MiB each a worker,
    where a worker runs 16)."""
    share = -(-batch // parallel.thread_count())
    return max(1, min(fit, -(-RUN_TILES // image_tiles), share))


def forward_work(batch, bands, runs):
    """The forward's work split over the workers: ``(workers, work)``, ``work(worker)`` the
    (images, first tile row, tile rows) pieces that worker computes. Each piece writes output
    rows of its own. As a rule a worker takes its share of the batch (``runs(worker, workers)``:
    runs of images), every band of them; else the (image, band) pieces of :func:`shared_bands`
    are shared out. The outputs are the same bits either way: each output depends on its own
    tiles only."""
    pieces_bands = shared_bands(batch, bands)
    if pieces_bands is not None:
        return _shared_out([(range(n, n + 1), first, rows) for n in range(batch) for first, rows in pieces_bands])
    workers = min(parallel.thread_count(), batch)
    return workers, lambda worker: [(run, *band) for run in runs(worker, workers) for band in bands]


def _shared_out(pieces):
    """(workers, work): ``pieces`` shared out over the workers, a contiguous run each."""
    workers = min(parallel.thread_count(), len(pieces))
    return workers, lambda worker: [pieces[k] for k in parallel.share(worker, workers, len(pieces))]


def backward_passes(batch, bands, runs, tile, pad):
    """The backward's work split over the workers: ``(passes, adding)``, the passes run one
    after another, each ``(workers, work)`` as in :func:`forward_work`, ``work(worker)`` giving
    (images, first tile row, tile rows, image rows to clear) pieces. As a rule one pass: a worker
    takes its share of the batch, every band of it in turn, and writes the input gradient
    (``adding`` False, no rows to clear). Where :func:`shared_bands` cuts pieces, they are
    shared out in two passes: even bands, then odd bands. Neighbouring bands reach into the same
    few input-gradient rows (the rows below a band's last tile row), never two bands of one
    pass; so the pieces add into the input gradient (``adding`` True), and an even band first
    clears its image rows from its top to the top of the band after next (``tile``: image rows
    a tile row, ``pad`` the padding). The weight gradient is summed per worker either way, in
    another order in two passes (the same bits for the same thread count and geometry)."""
    pieces_bands = shared_bands(batch, bands)
    if pieces_bands is not None:
        tops = [max(0, tile * first - pad) for first, _ in pieces_bands] + [None, None]

        def pieces(parity):
            return [
                (range(n, n + 1), first, rows, slice(tops[k], tops[k + 2]) if parity == 0 else None)
                for n in range(batch)
                for k, (first, rows) in enumerate(pieces_bands)
                if k % 2 == parity
            ]

        return [_shared_out(pieces(0)), _shared_out(pieces(1))], True
    workers = min(parallel.thread_count(), batch)
    return [(workers, lambda worker: [(run, *band, None) for run in runs(worker, workers) for band in bands])], False


class WinogradConvolution(SharedFilters):
    """One convolution geometry run as F(2x2, 3x3), a contiguous share of the batch a worker of
    ``netlayers.parallel``. A worker takes its images in bands whose transformed tiles fit
    ``BAND_BYTES`` (V and the products M: two such buffers a worker, whatever the image size):
    bands of tile rows of one image when an image does not fit, else runs of whole images side
    by side up to ``RUN_TILES`` tiles a channel (their tiles one after another in each
    channel's row: longer products, and fewer sums of weight-gradient partials).

    ``image_shape`` is (N, C, H, W), ``outputs`` the output channels K, ``pad`` the padding of
    both axes; the output is (N, K, H + 2 pad - 2, W + 2 pad - 2). ``filters(weight)``
    transforms a (K, C, 3, 3) weight into U (once per pass); ``forward`` and ``backward`` use
    the last U, and a backward that sums a weight gradient may leave its partial in U's buffer
    (``SharedFilters._partial``): ``filters`` again before the next pass. Weight gradients are
    summed per worker, then over the workers (worker 0 first), so they can differ in the last
    bits between thread counts, as in ``conv_gemm``.
    """

    def __init__(self, image_shape, outputs, pad, dtype, groups=1):
        self.batch, self.channels, height, width = image_shape
        self.outputs, self.pad, self.groups = outputs, pad, groups
        self.dtype = np.dtype(dtype)
        out_h, out_w = height + 2 * pad - 2, width + 2 * pad - 2
        tiles_h, self.tiles_w = -(-out_h // 2), -(-out_w // 2)
        row_bytes = 16 * max(self.channels, outputs) * (self.tiles_w + 1) * self.dtype.itemsize
        bands = -(-tiles_h // max(1, BAND_BYTES // row_bytes))
        rows = -(-tiles_h // bands)  # bands of equal height (the last one may be lower)
        self.bands = [(first, min(rows, tiles_h - first)) for first in range(0, tiles_h, rows)]
        image_tiles = tiles_h * (self.tiles_w + 1)
        fit = BAND_BYTES // (tiles_h * row_bytes)
        self.run_images = run_length(fit, image_tiles, self.batch) if bands == 1 else 1
        self.band_tiles = self.run_images * rows * (self.tiles_w + 1)  # tiles of a channel in a band
        self.u_shape = (16, outputs, self.channels // groups)
        self.transform = FILTER_TRANSFORM.astype(self.dtype)
        self.zero_bias = np.zeros(outputs, self.dtype)

    def filters(self, weight):
        """U[xi] = (G g G^T)[xi] for every (output, channel) filter g of ``weight``."""
        transform_filters(self.transform, weight, self.u)

    def _scratch(self, worker, name, rows):
        """A (16, stride) scratch array for (16, rows, tiles) matrices; the stride is a multiple
        of 1024 items plus 16 (64 bytes in float32), never a multiple of 4 KiB."""
        stride = -(-rows * self.band_tiles // 1024) * 1024 + 16
        return parallel.scratch(worker, name, 16 * stride, self.dtype).reshape(16, stride)

    @staticmethod
    def _matrices(array, rows, tiles):
        """The (16, rows, tiles) matrices at the start of each row of ``array``."""
        return array[:, : rows * tiles].reshape(16, rows, tiles)

    def _runs(self, worker, workers):
        """The runs of images ``worker`` takes together: its share of the batch cut into equal
        runs of at most ``run_images``."""
        images = parallel.share(worker, workers, self.batch)
        count = -(-len(images) // self.run_images)
        parts = (parallel.share(i, count, len(images)) for i in range(count))
        return [images[part.start : part.stop] for part in parts]

    def forward(self, x, bias, y):
        """y = conv(x, weight) + bias (bias may be None), with U from ``filters``."""
        bias = self.zero_bias if bias is None else bias
        workers, work = forward_work(self.batch, self.bands, self._runs)
        pad, tiles_w = self.pad, self.tiles_w

        def share(worker, _):
            v = self._scratch(worker, TILES, self.channels)
            m = self._scratch(worker, PRODUCTS, self.outputs)
            for images, first, rows in work(worker):
                tiles = rows * (tiles_w + 1)
                span = len(images) * tiles
                for i, n in enumerate(images):
                    input_tiles(x[n], pad, first, rows, tiles_w, v, i * tiles, span)
                self._forward_products(self._matrices(v, self.channels, span), self._matrices(m, self.outputs, span))
                for i, n in enumerate(images):
                    output_tiles(m, bias, first, rows, tiles_w, y[n], i * tiles, span)

        parallel.run_parts(share, workers, workers)

    def backward(self, x, dy, dx, weight_diff):
        """dx = the input gradient (when dx is not None; written), weight_diff += the weight
        gradient (when it is not None), with U from ``filters``; the work as
        :func:`backward_passes` splits it."""
        if self._split_backward(x, dy, dx, weight_diff):
            return
        passes, adding = backward_passes(self.batch, self.bands, self._runs, 2, self.pad)
        pad, tiles_w = self.pad, self.tiles_w
        started = set()  # workers whose weight-gradient partial holds a product

        def share_of(work):
            def share(worker, _):
                dm = self._scratch(worker, PRODUCTS, self.outputs)
                v = self._scratch(worker, TILES, self.channels)
                partial = self._partial(worker, dx is None) if weight_diff is not None else None
                carry = parallel.scratch(worker, "winograd_carry", self.channels * 4 * (tiles_w + 1), self.dtype)
                carry = carry.reshape(self.channels, 4, -1)
                for images, first, rows, clear in work(worker):
                    tiles = rows * (tiles_w + 1)
                    span = len(images) * tiles
                    for i, n in enumerate(images):
                        output_tiles_adjoint(dy[n], first, rows, tiles_w, dm, i * tiles, span)
                    dm_matrices = self._matrices(dm, self.outputs, span)
                    v_matrices = self._matrices(v, self.channels, span)
                    if weight_diff is not None:
                        for i, n in enumerate(images):
                            input_tiles(x[n], pad, first, rows, tiles_w, v, i * tiles, span)
                        self._weight_products(dm_matrices, v_matrices, partial, worker in started)
                        started.add(worker)
                    if dx is not None:
                        self._data_products(dm_matrices, v_matrices)
                        for i, n in enumerate(images):
                            if clear is not None:
                                dx[n, :, clear] = 0
                            input_tiles_adjoint(v, pad, first, rows, tiles_w, dx[n], carry, i * tiles, span, adding)

            return share

        for workers, work in passes:
            parallel.run_parts(share_of(work), workers, workers)
        if weight_diff is not None:
            partials = [self._partial(worker, dx is None) for worker in range(passes[0][0])]
            add_weight_grad(partials, self.transform, weight_diff)  # G^T dU G, dU their sum
