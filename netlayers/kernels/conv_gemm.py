"""The GEMM side of convolution: the batch cut into chunks of images, each chunk's column matrix
in a small shared workspace, and the matrix products against it.

Convolutions run as im2col + matrix products (numpy BLAS), a chunk of images at a time. A
chunk is as many images as fit a column buffer of ``COLUMN_CHUNK_BYTES`` (at least one), so the
buffer stays in cache and its size does not grow with the batch; the chunks are shared out over
the workers of ``netlayers.parallel`` (each runs im2col, the product, the reorder and col2im of
its chunks, with single-threaded BLAS), and the buffers are the workers' scratch, shared by
every convolution of the process (as Caffe shares one column buffer). The backward pass makes
the columns again instead of keeping them (as Caffe does): a second im2col costs less than the
memory of a whole batch's columns.

A chunk of n images has the channel-major column matrix (K, n P) (see
``netlayers.kernels.im2col``), so ``W @ col`` is one product per chunk and group. For n = 1 this
is the image's own (K, P) matrix and the product lands in NCHW directly; for n > 1 the (O, n P)
product goes through a reorder (``onp_to_nop``), and a map read as a matrix through the reverse
(``nop_to_onp``). A 1x1 convolution with stride 1 and no padding needs no im2col for n = 1.

In convolution terms the *image* side is im2col's input (C_img channels, K = C_img kh kw column
rows) and the *map* side is the product's output (C_map channels, P pixels per image); the
weight is a (C_map, K / group) matrix per group. Convolution: image = bottom, map = top.
Deconvolution: image = top, map = bottom (the same weight matrix).

Weight gradients are summed per worker and then over the workers, so they can differ in the
last bits between thread counts (never between runs with the same count).
"""

import numpy as np

from .. import parallel
from . import im2col as conv_kernels

COLUMN_CHUNK_BYTES = 1 << 21  # a column buffer of 2 MiB a worker: about one core's L2 cache
ONE_BY_ONE_DIRECT_BYTES = 1 << 16  # 1x1 inputs from 64 KiB an image go image by image


class ChannelSums:
    """sums[c] = sum over n and p of m[n, c, p] for an (N, C, P) array, as one matrix-vector
    product with a vector of ones (BLAS) and a sum over N (a serial loop measured 5x slower:
    float sums do not vectorize without reassociation)."""

    def __init__(self, batch, channels, size, dtype):
        self.shape = (batch, channels, size)
        self.ones = np.ones(size, dtype)
        self.partial = np.empty((batch, channels), dtype)
        self.out = np.empty(channels, dtype)

    def __call__(self, m):
        np.matmul(m.reshape(self.shape), self.ones, out=self.partial)
        return np.sum(self.partial, axis=0, out=self.out)


class ColumnChunks:
    """One convolution geometry cut into chunks of images, and the per-chunk steps.

    ``image_shape`` is (N, C_img, H, W); ``map_size`` the (OH, OW) of the map side (im2col's
    output plane). Methods take the worker index (for its scratch buffers) and the chunk ``part``:

    - ``columns(worker, image, part)``: the chunk's (K, n P) column matrix of ``image``
    - ``to_image(col, image, part)``: col2im of a chunk's column matrix into ``image`` (written)
    - ``map_matrix(worker, m, part)``: a chunk of an NCHW map as its (C_map, n P) matrix
    - ``map_from_col(worker, weight, col, m, part, bias)``: m[chunk] = W col (+ bias)
    - ``image_from_map(worker, weight, matrix, image, part)``: image[chunk] = col2im(W^T matrix)
    - ``add_weight_grad(worker, matrix, col, first)``: the worker's partial += matrix col^T
    - ``weight_grad_total(workers_used, weight_diff)``: weight_diff += the partials' sum
    """

    def __init__(self, *, image_shape, kernel, pad, stride, dilation, map_channels, map_size, groups, dtype):
        self.batch, self.image_channels = image_shape[0], image_shape[1]
        self.image_shape = tuple(image_shape)
        self.kernel, self.pad, self.stride, self.dilation = kernel, pad, stride, dilation
        self.map_shape = tuple(map_size)
        self.map_channels, self.groups = map_channels, groups
        self.rows = self.image_channels * kernel[0] * kernel[1]
        self.plane = map_size[0] * map_size[1]
        self.dtype = np.dtype(dtype)
        self.one_by_one = kernel == (1, 1) and stride == (1, 1) and pad == (0, 0)
        self.chunk = self.chunk_images(self.batch, self.rows * self.plane * self.dtype.itemsize, self.one_by_one)
        self.parts = -(-self.batch // self.chunk)
        self.table = conv_kernels.geometry_table(image_shape, kernel, pad, stride, dilation, map_size)
        self.map_group, self.row_group = map_channels // groups, self.rows // groups
        self.weight_size = map_channels * self.row_group

    @staticmethod
    def chunk_images(batch, column_bytes, one_by_one):
        """Images a chunk: as many as fit ``COLUMN_CHUNK_BYTES`` of columns (``column_bytes`` an
        image), at least 1, and few enough that every worker gets a chunk. A 1x1 convolution
        whose image is ``ONE_BY_ONE_DIRECT_BYTES`` or more takes 1 (its products then read and
        write NCHW with no reorder)."""
        if one_by_one and column_bytes >= ONE_BY_ONE_DIRECT_BYTES:
            return 1
        share = -(-batch // parallel.thread_count())
        return max(1, min(share, COLUMN_CHUNK_BYTES // column_bytes))

    def span(self, part):
        first = part * self.chunk
        return first, min(first + self.chunk, self.batch)

    def _scratch(self, worker, name, *shape):
        size = int(np.prod(shape))
        return parallel.scratch(worker, name, size, self.dtype).reshape(shape)

    def columns(self, worker, image, part):
        a, b = self.span(part)
        n = b - a
        if self.one_by_one and n == 1:
            return image[a].reshape(self.rows, self.plane)
        col = self._scratch(worker, "columns", self.rows, n, self.plane)
        chunk = image[a:b]
        if self.one_by_one:
            conv_kernels.nop_to_onp(chunk.reshape(n, self.rows, self.plane), col)
        else:
            conv_kernels.im2col(
                chunk, self.kernel, self.pad, self.stride, self.dilation, self.map_shape, col, False, self.table
            )
        return col.reshape(self.rows, n * self.plane)

    def column_buffer(self, worker, part):
        a, b = self.span(part)
        return self._scratch(worker, "columns", self.rows, (b - a) * self.plane)

    def to_image(self, col, image, part):
        a, b = self.span(part)
        n = b - a
        col = col.reshape(self.rows, n, self.plane)
        if self.one_by_one:
            conv_kernels.onp_to_nop(col, self._zeros(self.rows), image[a:b].reshape(n, self.rows, self.plane))
            return
        conv_kernels.col2im(
            col, self.kernel, self.pad, self.stride, self.dilation, self.map_shape, image[a:b], False, self.table
        )

    def _zeros(self, size):
        zeros = getattr(self, "_zero_vector", None)
        if zeros is None or zeros.size < size:
            zeros = self._zero_vector = np.zeros(size, self.dtype)
        return zeros[:size]

    def map_matrix(self, worker, m, part):
        a, b = self.span(part)
        n = b - a
        m = m.reshape(self.batch, self.map_channels, self.plane)
        if n == 1:
            return m[a]
        matrix = self._scratch(worker, "map", self.map_channels, n, self.plane)
        conv_kernels.nop_to_onp(m[a:b], matrix)
        return matrix.reshape(self.map_channels, n * self.plane)

    def _grouped(self, matrix, channels):
        return matrix.reshape(self.groups, channels // self.groups, matrix.shape[-1])

    def map_from_col(self, worker, weight, col, m, part, bias=None):
        a, b = self.span(part)
        n = b - a
        m = m.reshape(self.batch, self.map_channels, self.plane)
        w = weight.reshape(self.groups, self.map_group, self.row_group)
        cols = self._grouped(col, self.rows)
        if n == 1:
            np.matmul(w, cols, out=self._grouped(m[a], self.map_channels))
            if bias is not None:
                conv_kernels.add_bias(m[a : a + 1], bias)
            return
        product = self._scratch(worker, "map", self.map_channels, n * self.plane)
        np.matmul(w, cols, out=self._grouped(product, self.map_channels))
        bias = self._zeros(self.map_channels) if bias is None else bias
        conv_kernels.onp_to_nop(product.reshape(self.map_channels, n, self.plane), bias, m[a:b])

    def image_from_map(self, worker, weight, matrix, image, part):
        """image[chunk] = col2im(W^T matrix) (written, not added)."""
        a, b = self.span(part)
        direct = self.one_by_one and b - a == 1
        out = image[a].reshape(self.rows, self.plane) if direct else self.column_buffer(worker, part)
        w_t = weight.reshape(self.groups, self.map_group, self.row_group).transpose(0, 2, 1)
        np.matmul(w_t, self._grouped(matrix, self.map_channels), out=self._grouped(out, self.rows))
        if not direct:
            self.to_image(out, image, part)

    def add_weight_grad(self, worker, matrix, col, first):
        """The worker's weight-gradient partial (``first``: set, else add) += matrix col^T,
        kept transposed: col matrix^T ran 1.6x faster than matrix col^T on cifar10_quick's
        conv2 (78 vs 47 GFLOP/s single-threaded)."""
        shape = (self.groups, self.row_group, self.map_group)
        partial = self._scratch(worker, "weight_grad", *shape)
        grouped_map = self._grouped(matrix, self.map_channels).transpose(0, 2, 1)
        if first:
            np.matmul(self._grouped(col, self.rows), grouped_map, out=partial)
            return
        temp = self._scratch(worker, "weight_grad_temp", *shape)
        np.matmul(self._grouped(col, self.rows), grouped_map, out=temp)
        partial += temp

    def weight_grad_total(self, weight_diff):
        """weight_diff += the sum of every worker's partial, worker 0 first."""
        diff = weight_diff.reshape(self.groups, self.map_group, self.row_group)
        for worker in range(self.workers()):
            diff += self._scratch(worker, "weight_grad", self.groups, self.row_group, self.map_group).transpose(0, 2, 1)

    def workers(self):
        """How many workers ``run`` uses for this geometry."""
        return min(parallel.thread_count(), self.parts)

    def run(self, step):
        """``step(worker, part, first)`` for every chunk; ``first`` marks a worker's first chunk."""
        workers = self.workers()

        def share(worker, part):
            step(worker, part, part == parallel.first_part(worker, workers, self.parts))

        parallel.run_parts(share, self.parts, workers)
