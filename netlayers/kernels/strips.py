"""Row-strip convolution: stride-1 convolutions with kw copies of the input instead of im2col's
kh kw copies.

For a chunk of n images of C channels (H x W, padding ph, pw, dilation dh, dw, kernel kh x kw,
output OH x OW) the strips are

    S[c kw + j, y, k, ox] = x_padded[k, c, y, ox + j dw]      (y < OH + dh (kh - 1))

an array of shape (C kw, rows, n, OW). Read as a (C kw, rows n OW) matrix, the columns
[i dh n OW, i dh n OW + OH n OW) are, for kernel row i, exactly the im2col rows of that kernel
row (a plain strided matrix: BLAS reads it in place), so

    y = sum_i W_i S_i + b,     W_i = W[:, :, i, :] as an (M, C kw) matrix

computed transposed (sum_i S_i^T W_i^T, an (OH n OW, M) matrix: OpenBLAS ran these shapes
faster) and reordered to NCHW with the bias added. The backward pass uses the same strips:

- weight gradient: dW[:, :, i, :] += dY S_i^T, dY as an (M, OH n OW) matrix;
- data gradient: dX = the same correlation of dY zero-padded by (dh (kh - 1) - ph,
  dw (kw - 1) - pw) with the flipped filter, channels transposed (C outputs, M kw strip rows):
  no col2im.

Images are shared over the workers (``netlayers.parallel``), each taking chunks of its share
whose strips fit ``CHUNK_BYTES``; strips and products live in the workers' scratch. An image
whose strips exceed ``MAX_IMAGE_BYTES`` runs in bands of output rows instead (the strips of rows
[r, r + b) and the kernel's reach below them, at most ``MAX_IMAGE_BYTES``; the data gradient's
correlation in bands of input rows), the bands shared over the workers. Forward outputs and data
gradients do not depend on the chunking (each output sums the kernel rows in the same order),
so they are the same for any thread count; weight gradients are summed per worker and then
over the workers (worker 0 first), as in ``conv_gemm``.
"""

import numpy as np

from .. import parallel
from . import blas, conv_gemm
from ._jit import jit

MAX_IMAGE_BYTES = 1 << 22  # one image's strips above 4 MiB run in bands of rows of at most that.
# Bands against im2col + GEMM (which images this large ran before), forward + backward, 2
# workers, float32, median of 6 rounds (2026-12-05): 192 -> 16 7x7 at 28 px, batch 8 (5 MiB of
# strips an image, bands of 21 rows) 0.45x; 256 -> 16 7x7 at 56 px, batch 1 (bands of 4) 0.63x;
# 256 -> 1 9x9 at 56 px, batch 4 (bands of 1) 0.34x-0.38x; 512 -> 12 5x5 at 33 px 0.64x; 128 -> 3 9x9
# at 112 px, batch 2 0.89x; 64 -> 64 7x7 at 64 px, batch 4 0.79x-0.86x; 32 -> 64 5x5 at 224 px 0.92x;
# 96 -> 256 5x5 at 27 px 1.06x (5 x 5 layers of 16 channels or more run as F(4x4, 5x5) first).
# Where it runs (``applies``): the Convolution layer, forward + backward against im2col + GEMM,
# 2 workers, min and median of 30 rounds side by side (float32): cifar10_quick's conv2 (32 -> 32,
# 5x5, pad 2, 16 x 16, batch 100) 1.37x-1.40x, conv3 (32 -> 64, 8 x 8) 1.17x-1.22x; 32 -> 32
# 7x7 pad 3 at 16 x 16 1.50x, 5x5 pad 2 at 32 x 32 1.29x, 64 -> 64 5x5 at 16 x 16 1.23x-1.27x.
# Not: few channels (cifar10_quick's conv1 3 -> 32 0.56x-0.62x, LeNet's conv1 1 -> 20 0.52x,
# 3x3 3 -> 64 at 64 x 64 0.61x: products with K = C kw too short), no padding (LeNet's conv2
# 20 -> 50 0.55x, 32 -> 32 5x5 pad 0 at 16 x 16 0.98x: the data gradient correlates the
# (k - 1)-padded output gradient, more work than im2col's col2im), 3x3 kernels (16 -> 16 at
# 32 x 32 1.06x-1.14x, 32 -> 32 at 16 x 16 1.10x-1.11x: below the 1.15x asked for).
MIN_KERNEL = 5
MIN_CHANNELS = 32
MIN_WORK = 10240  # batch x output pixels x kernel rows, for the rule of many channels: a small batch
# of small maps gives the strips' kh products too few rows to pay for forming and reordering them,
# and im2col's single larger product wins; strips save more of im2col's copies the taller the
# kernel. Forward + backward against im2col + GEMM, 2 workers, medians of 3 paired rounds
# (2026-12-05), 5x5 pad 2, batch x output pixels: below 2048 32 -> 32 at 7 x 7 batch 2, 8 1.46x,
# 1.23x (batch 32 0.80x), at 8 x 8 batch 2, 8 1.96x, 1.31x; 32 -> 64 at 7 x 7 batch 2, 8, 32 1.56x,
# 1.33x, 1.06x; 128 -> 128 at 7 x 7 batch 2, 8 2.17x, 1.32x, at 12 x 12 batch 2 1.48x; 64 -> 64 at 7
# x 7 batch 2 1.04x, batch 8 0.93x, at 16 x 16 batch 2 0.72x; from it 0.78x-1.08x (32 -> 32 at 7
# x 7 batch 100 0.78x, at 16 x 16 batch 8 0.88x; 32 -> 64 at 8 x 8 batch 32 1.14x, at 16 x 16
# batch 100 1.08x; 128 -> 128 at 12 x 12 batch 100 0.86x). 7x7 pad 3, the same terms: 128 -> 64
# at 8 x 8 batch 2, 8 1.77x, 1.17x, at 16 x 16 batch 2 1.12x; 32 -> 32 and 64 -> 64 at 8 x 8
# batch 2 1.35x, 1.37x; from it (batch x pixels from 1463) 0.73x-0.97x (32 -> 32 at 28 x 28 batch
# 2 0.92x, 64 -> 64 0.81x; at 8 x 8 batch 32 0.90x-0.97x).
FEW_OUTPUTS_RATIO = 4  # strips also where the outputs are few against the input channels
# (prediction heads, super-resolution's last layers): im2col + GEMM forms columns kh kw times the
# input for products with M = outputs rows, where packing the columns costs more than the
# products. Forward + backward against im2col, 2 workers, float32, median of 6 paired rounds
# (2026-12-05), 3x3 to 9x9 kernels, 8 to 56 px, batch 1 to 32, padded or not: with C >= 32 and
# K < 32 outputs, 0.08x-0.99x (C 64 -> K 1 at 56 px 5x5 0.12x, 256 -> 8 7x7 at 16 px 0.25x, 512
# -> 16 3x3 at 16 px 0.48x, 256 -> 8 3x3 at 14 px 0.80x, 32 -> 8 3x3 at 14 px 0.96x, 32 -> 12
# 3x3 unpadded 0.99x); not with C < 4 K (32 -> 16 7x7 unpadded at 14 px 1.26x) nor C = 16 (16 ->
# 4 3x3 at 28 px 1.38x, 16 -> 24 7x7 at 8 px 1.34x), nor from 32 outputs without "same" padding
# (2026-12-05, sweeps of random geometries, paired rounds, strips against im2col: 256 -> 64 4x4
# unpadded at 13 px, batch 2, 1.74x; 256 -> 32 there 1.22x; 128 -> 32 3x3 unpadded at 14 px
# 1.11x; 256 -> 64 3x3 unpadded at 28 px 1.05x). Padded, from 32 outputs: 1024 -> 32 4x4 pad 2
# at 7 px 0.75x, 3x3 pad 1 with 32 to 128 outputs 0.98x-1.02x. Below 32 outputs 0.27x-0.99x:
# 256 -> 16 3x3 at 14 px 0.66x, 512 -> 16 at 16 px 0.58x, 256 -> 8 7x7 at 16 px 0.27x, 256 -> 24
# 3x3 unpadded at 14 px 0.95x.
FEW_OUTPUTS_MIN_WORK = 5120  # from 32 outputs (with "same" padding), strips also need a batch of
# output pixels times kernel rows of this much: on small maps of many channels im2col's single
# product wins. Forward + backward, strips against im2col + GEMM, 2 workers, medians of 5 paired
# rounds (2026-12-06), batch x output pixels x kernel rows: 1024 -> 64 4x4 pad 2 at 8 px, batch 2
# (648) 18.8 against 11.8 ms; 1024 -> 32 at 7 px (512) 9.1 against 5.1; 1024 -> 128 3x3 at 8 px
# (384) 19.9 against 7.3; 512 -> 64 3x3 at 14 px (1176) 7.7 against 6.3; 512 -> 64 4x4 at 14 px,
# batch 4 (3600) 25.0 against 21.7, at 7 px, batch 8 (2048) 15.3 against 11.5; from it strips
# won: 256 -> 32 4x4 at 28 px, batch 2 (6728) 13.0 against 16.3; 128 -> 32 7x7 at 28 px, batch 4
# (21952) 23.8 against 36.2; 256 -> 48 7x7 at 28 px, batch 8 (43904) 135 against 196.
CHUNK_BYTES = 1 << 20  # strips of a chunk of images, a worker (at least one image)
# Scratch names shared with conv_gemm (every convolution of the process uses one set of buffers)
STRIPS, PRODUCT, WEIGHT_GRAD = "columns", "map", "weight_grad"
PRODUCT_TEMP = "strip_product"  # one kernel row's product before it is added


@jit
def make_strips(source, kw, ph, pw, dw, strips):
    """strips[c kw + j, y, k, ox] = source[k, c, y - ph, ox + j dw - pw] (0 outside the image)
    for every y < strips.shape[1], ox < strips.shape[3]; source is (n, C, H, W). Written in
    memory order; flat unsigned indices (numba then skips negative-index checks)."""
    images, channels, height, width = source.shape
    rows, out_w = strips.shape[1], strips.shape[3]
    zero = source.dtype.type(0)
    src = source.reshape(-1)
    dst = strips.reshape(-1)
    at = np.uint64(0)
    for c in range(channels):
        for j in range(kw):
            shift = j * dw - pw
            lo = min(max(0, -shift), out_w)
            hi = max(min(out_w, width - shift), lo)
            for y in range(rows):
                iy = y - ph
                inside = 0 <= iy < height
                for k in range(images):
                    if not inside:
                        for ox in range(out_w):
                            dst[at + np.uint64(ox)] = zero
                    else:
                        line = np.uint64(((k * channels + c) * height + iy) * width + lo + shift)
                        for ox in range(lo):
                            dst[at + np.uint64(ox)] = zero
                        start = at + np.uint64(lo)
                        for ox in range(hi - lo):
                            dst[start + np.uint64(ox)] = src[line + np.uint64(ox)]
                        for ox in range(hi, out_w):
                            dst[at + np.uint64(ox)] = zero
                    at += np.uint64(out_w)


class _Correlation:
    """One stride-1 correlation: sources (n, channels, height, width) padded by ``pad`` and
    read with ``kernel`` / ``dilation`` taps give (n, outputs, out_h, out_w)."""

    def __init__(self, channels, size, kernel, pad, dilation):
        self.channels, self.size = channels, size
        self.kernel, self.pad, self.dilation = kernel, pad, dilation
        self.out_size = tuple(s + 2 * p - d * (k - 1) for s, p, d, k in zip(size, pad, dilation, kernel))
        self.rows = self.out_size[0] + dilation[0] * (kernel[0] - 1)  # strip rows
        self.strip_rows = channels * kernel[1]  # rows of the strip matrix

    def image_items(self):
        """Strip values of one image."""
        return self.strip_rows * self.rows * self.out_size[1]

    def band_rows(self, itemsize):
        """Output rows a band: all of them where one image's strips fit ``MAX_IMAGE_BYTES``,
        else as many as fit it (at least 1), each band's strips holding its rows and the
        kernel's reach below them."""
        if self.image_items() * itemsize <= MAX_IMAGE_BYTES:
            return self.out_size[0]
        row_bytes = self.strip_rows * self.out_size[1] * itemsize
        return max(1, MAX_IMAGE_BYTES // row_bytes - (self.rows - self.out_size[0]))

    def strips(self, worker, source, dtype, rows):
        """The strips of ``source`` (n images) for output rows ``rows`` (a range) as their
        (C kw, strip rows n OW) matrix."""
        n = source.shape[0]
        height = len(rows) + self.rows - self.out_size[0]
        buffer = parallel.scratch(worker, STRIPS, self.strip_rows * height * n * self.out_size[1], dtype)
        strips = buffer.reshape(self.strip_rows, height, n, self.out_size[1])
        make_strips(source, self.kernel[1], self.pad[0] - rows.start, self.pad[1], self.dilation[1], strips)
        return buffer.reshape(self.strip_rows, -1)

    def kernel_row(self, matrix, i, n, count):
        """Kernel row i's (C kw, count n OW) view of a strip matrix of n images, ``count``
        output rows."""
        width = n * self.out_size[1]
        start = i * self.dilation[0] * width
        return matrix[:, start : start + count * width]

    def apply(self, worker, source, weights, out, bias, rows):
        """out[:, :, rows] = sum_i W_i S_i (+ bias), computed transposed: sum_i S_i^T W_i^T, a
        (rows n OW, outputs) matrix then reordered into ``out``, the chunk's (n, outputs, OH,
        OW) array (its ``rows``, a range, written). ``weights`` holds the W_i^T as (kh, C kw,
        outputs). The transposed products ran 1.1x-1.35x faster (OpenBLAS sgemm,
        cifar10_quick's conv2 and conv3)."""
        n, outputs = source.shape[0], weights.shape[2]
        count, out_w = len(rows), self.out_size[1]
        matrix = self.strips(worker, source, out.dtype, rows)
        size = count * n * out_w * outputs
        product = parallel.scratch(worker, PRODUCT, size, out.dtype).reshape(-1, outputs)
        temp = parallel.scratch(worker, PRODUCT_TEMP, size, out.dtype).reshape(product.shape)
        np.matmul(self.kernel_row(matrix, 0, n, count).T, weights[0], out=product)
        for i in range(1, self.kernel[0]):
            np.matmul(self.kernel_row(matrix, i, n, count).T, weights[i], out=temp)
            product += temp
        ordered = product.reshape(count, n, out_w, outputs).transpose(1, 3, 0, 2)
        target = out[:, :, rows.start : rows.stop]
        if bias is None:
            target[...] = ordered
        else:
            np.add(ordered, bias[None, :, None, None], out=target)


class StripConvolution:
    """A stride-1, one-group convolution as row strips (see the module text).

    ``image_shape`` is (N, C, H, W), ``outputs`` the output channels M, ``kernel``, ``pad``,
    ``dilation`` (h, w) pairs. ``filters(weight)`` rearranges an (M, C, kh, kw) weight once per
    pass; ``forward`` and ``backward`` use the last one.
    """

    def __init__(self, image_shape, outputs, kernel, pad, dilation, dtype):
        self.batch, self.channels = image_shape[:2]
        size = tuple(image_shape[2:])
        self.outputs, self.kernel = outputs, kernel
        self.dtype = np.dtype(dtype)
        self.image = _Correlation(self.channels, size, kernel, pad, dilation)
        self.out_size = self.image.out_size
        reach = tuple(d * (k - 1) for d, k in zip(dilation, kernel))
        flipped_pad = tuple(r - p for r, p in zip(reach, pad))
        self.grad = _Correlation(outputs, self.out_size, kernel, flipped_pad, dilation)
        assert self.grad.out_size == size
        kh, kw = kernel
        self.rows_weight = np.empty((kh, self.channels * kw, outputs), self.dtype)
        self.flipped_weight = np.empty((kh, outputs * kw, self.channels), self.dtype)
        # a gradient partial's row (i, c, v) lands at column (c, i, v) of the weight's row m
        i, c, v = np.meshgrid(np.arange(kh), np.arange(self.channels), np.arange(kw), indexing="ij")
        self.weight_offsets = ((c * kh + i) * kw + v).reshape(-1)
        self.chunk = self._chunk_images()

    def _chunk_images(self):
        """Images a chunk: as many as fit ``CHUNK_BYTES`` of strips (at least 1), few enough
        that every worker gets one."""
        items = max(self.image.image_items(), self.grad.image_items())
        share = -(-self.batch // parallel.thread_count())
        return max(1, min(share, CHUNK_BYTES // (items * self.dtype.itemsize)))

    def filters(self, weight):
        """W_i^T as (C kw, M) matrices, and the flipped, channel-transposed filter's as
        (M kw, C): row c kw + j of W_i^T is W[:, c, i, j]; row m kw + j of the flipped one is
        W[m, :, kh - 1 - i, kw - 1 - j]."""
        kh, kw = self.kernel
        self.rows_weight.reshape(kh, self.channels, kw, self.outputs)[...] = weight.transpose(2, 1, 3, 0)
        flipped = weight[:, :, ::-1, ::-1].transpose(2, 0, 3, 1)
        self.flipped_weight.reshape(kh, self.outputs, kw, self.channels)[...] = flipped

    def _pieces(self, correlation):
        """Each worker's (images, output rows) pieces of ``correlation``: its share of the batch
        in chunks of whole images, or, where one image's strips exceed ``MAX_IMAGE_BYTES``, its
        share of the bands of the images' output rows (a band: one image's rows)."""
        height = correlation.out_size[0]
        rows = correlation.band_rows(self.dtype.itemsize)
        if self._banded(correlation):
            starts = range(0, height, rows)
            bands = [(slice(k, k + 1), range(r, min(r + rows, height))) for k in range(self.batch) for r in starts]
            workers = min(parallel.thread_count(), len(bands))
            return [[bands[i] for i in parallel.share(worker, workers, len(bands))] for worker in range(workers)]
        workers = min(parallel.thread_count(), self.batch)
        shares = []
        for worker in range(workers):
            images = parallel.share(worker, workers, self.batch)
            chunks = range(images.start, images.stop, self.chunk)
            shares.append([(slice(a, min(a + self.chunk, images.stop)), range(height)) for a in chunks])
        return shares

    def _banded(self, correlation):
        """Whether ``correlation`` runs in bands of rows (one image's strips exceed the budget)."""
        return correlation.band_rows(self.dtype.itemsize) < correlation.out_size[0]

    def _run(self, step, shares):
        """``step(worker, images, rows, first)`` for each piece of each worker's share
        (``first``: the worker's first piece); returns the workers used."""

        def share(worker, _):
            for index, piece in enumerate(shares[worker]):
                step(worker, *piece, index == 0)

        parallel.run_parts(share, len(shares), len(shares))
        return len(shares)

    def forward(self, x, bias, y):
        """y = conv(x, weight) + bias (bias may be None), with the weight of ``filters``."""

        def step(worker, images, rows, first):
            self.image.apply(worker, x[images], self.rows_weight, y[images], bias, rows)

        self._run(step, self._pieces(self.image))

    def backward(self, x, dy, dx, weight_diff):
        """dx = the input gradient (when dx is not None; written), weight_diff += the weight
        gradient (when it is not None), with the weight of ``filters``. Whole images take both
        in one step; bands take the weight gradient's bands (output rows) and then the data
        gradient's (input rows)."""
        kh, kw = self.kernel
        shape = (kh, self.channels * kw, self.outputs)  # each kernel row's gradient, transposed
        pieces, grad_pieces = self._pieces(self.image), self._pieces(self.grad)
        together = not (self._banded(self.image) or self._banded(self.grad))  # whole images: the same chunks
        image_rows = range(self.grad.out_size[0])

        def step(worker, images, rows, first):
            if weight_diff is not None:
                partial = parallel.scratch(worker, WEIGHT_GRAD, self.rows_weight.size, self.dtype).reshape(shape)
                self._add_weight_grad(worker, x[images], dy[images], partial, first, rows)
            if together and dx is not None:
                self.grad.apply(worker, dy[images], self.flipped_weight, dx[images], None, image_rows)

        def grad_step(worker, images, rows, first):
            self.grad.apply(worker, dy[images], self.flipped_weight, dx[images], None, rows)

        workers = self._run(step, pieces) if weight_diff is not None or together else 0
        if dx is not None and not together:
            self._run(grad_step, grad_pieces)
        if weight_diff is not None:
            partials = [
                parallel.scratch(worker, WEIGHT_GRAD, self.rows_weight.size, self.dtype).reshape(-1, self.outputs)
                for worker in range(workers)
            ]
            conv_gemm.add_transposed_partials(partials, self.weight_offsets, self.channels * kh * kw, weight_diff)

    def _add_weight_grad(self, worker, x, dy, partial, first, rows):
        """partial[i] (set when ``first``, else added) += S_i dY^T over the chunk's images and
        output ``rows`` (a range), the transposed gradient of kernel row i: S_i (C kw, rows n
        OW) times dY as a (rows n OW, M) matrix (measured 1.6x faster than dY S_i^T with dY as
        (M, rows n OW) on cifar10_quick's conv2)."""
        n, count, out_w = x.shape[0], len(rows), self.out_size[1]
        grad = parallel.scratch(worker, PRODUCT, self.outputs * count * out_w * n, self.dtype)
        grad.reshape(count, n, out_w, self.outputs)[...] = dy[:, :, rows.start : rows.stop].transpose(2, 0, 3, 1)
        grad = grad.reshape(-1, self.outputs)
        matrix = self.image.strips(worker, x, self.dtype, rows)
        for i in range(self.kernel[0]):
            view = self.image.kernel_row(matrix, i, n, count)
            if first:
                np.matmul(view, grad, out=partial[i])
            else:
                blas.add_product(view, grad, partial[i])


def applies(kernel, stride, dilation, groups, channels, outputs, size, out_size, batch):
    """Whether a convolution of ``batch`` images runs as row strips: stride 1, dilation 1, one
    group, and either

    - kernel sides of at least ``MIN_KERNEL``, at least ``MIN_CHANNELS`` input and output
      channels, an output no smaller than the input (padding of at least (k - 1) / 2: the
      data gradient's padded correlation then does no more work than the forward), and the
      batch's output pixels times the kernel's rows at least ``MIN_WORK``; or
    - few outputs: kernel sides of at least 3, at least ``MIN_CHANNELS`` input channels and
      ``FEW_OUTPUTS_RATIO`` times as many as outputs, and fewer than ``MIN_CHANNELS`` outputs
      or an output no smaller than the input and a batch's output pixels times kernel rows of
      at least ``FEW_OUTPUTS_MIN_WORK`` (see ``FEW_OUTPUTS_RATIO``).

    Images of any size: one whose strips exceed ``MAX_IMAGE_BYTES`` runs in bands of rows."""
    if stride != (1, 1) or dilation != (1, 1) or groups != 1:
        return False
    same = all(o >= s for o, s in zip(out_size, size))  # padding of at least (k - 1) / 2
    work = batch * out_size[0] * out_size[1] * kernel[0]
    many = min(kernel) >= MIN_KERNEL and min(channels, outputs) >= MIN_CHANNELS and same and work >= MIN_WORK
    few_outputs = (
        min(kernel) >= 3
        and channels >= MIN_CHANNELS
        and channels >= FEW_OUTPUTS_RATIO * outputs
        and (outputs < MIN_CHANNELS or (same and work >= FEW_OUTPUTS_MIN_WORK))
    )
    return many or few_outputs
