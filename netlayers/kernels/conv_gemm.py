"""The GEMM side of convolution: column buffers and the matrix products against them.

Convolutions run as im2col + matrix products (numpy BLAS) over the whole batch. The column
buffer has one of two layouts (see ``netlayers.kernels.im2col``):

- batch-major (N, K, P): one product per image, landing in NCHW directly; chosen when the output
  plane is large (P >= 256 pixels), where per-image products are long enough to be efficient,
  and for 1x1 / stride 1 / no-pad kernels, where the input itself is the column matrix.
- channel-major (K, N * P): one product for the whole batch; chosen when the planes are small
  (many short products would waste BLAS calls), at the price of a cheap reorder to NCHW.

The backward's column gradient W^T dE/dy overwrites the whole buffer, so it takes its own
layout: batch-major from 64 output pixels up (measured faster there even when the forward
is channel-major), then col2im reads that layout. ``tools/bench_kernels.py`` prints both layouts
for LeNet's layers (conv1: batch-major, conv2: channel-major). Buffers are allocated when the
layer's shapes change (Reshape) and reused afterwards. Arrays in, arrays out: no Blob or Layer.
"""

import numpy as np

from . import im2col as conv_kernels

BATCH_MAJOR_MIN_PLANE = 256  # output pixels per image from which per-image products win
BATCH_MAJOR_MAX_WEIGHT_TEMP = 1 << 25  # bytes of the per-image weight-gradient stack allowed


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


class ColumnProducts:
    """The column buffer of one convolution geometry and the products against it.

    In convolution terms the *image* side is im2col's input (C_img channels, K = C_img kh kw
    column rows) and the *map* side is the product's output (C_map channels, P pixels per
    image); the weight is a (C_map, K / group) matrix per group. Convolution: image = bottom,
    map = top. Deconvolution: image = top, map = bottom (the same weight matrix).

    - ``map_from_col(W, col, out, bias)``: out[n] = W col[n] (+ bias), out NCHW (N, C_map, P)
    - ``col_from_map(W, m, col)``: col[n] = W^T m[n], from an NCHW map; the buffer is written
      whole, so its layout is chosen for this product alone: ``dcol_batch_major`` (per-image
      products measured faster from P >= 64: 1.35 ms vs 1.52 ms on LeNet's conv2)
    - ``weight_grad(m, col, wdiff)``: wdiff += sum_n m[n] col[n]^T, with ``m`` from
      ``load_map`` (channel-major computes the transpose, (col m^T)^T, which measured 1.3 ms
      vs 1.8 ms for LeNet's conv2)
    """

    DCOL_BATCH_MAJOR_MIN_PLANE = 64

    def __init__(self, *, batch, map_channels, rows, map_size, groups, dtype, batch_major, allocate_col=True):
        self.batch, self.map_channels, self.rows, self.map_size = batch, map_channels, rows, map_size
        self.groups = groups
        self.batch_major = batch_major
        self.dcol_batch_major = batch_major or map_size >= self.DCOL_BATCH_MAJOR_MIN_PLANE
        self.dtype = np.dtype(dtype)
        g = groups
        self.map_group, self.row_group = map_channels // g, rows // g
        if batch_major:
            self.col = np.empty((batch, rows, map_size), dtype) if allocate_col else None
            self.map_t = None
            self.weight_temp = np.empty((batch, g, self.map_group, self.row_group), dtype)
            self.weight_sum = np.empty((g, self.map_group, self.row_group), dtype)
        else:
            self.col = np.empty((rows, batch, map_size), dtype)
            self.map_t = np.empty((map_channels, batch, map_size), dtype)
            self.weight_temp = np.empty((g, self.row_group, self.map_group), dtype)
        self.sums = np.empty(map_channels, dtype)
        self.zeros = np.zeros(map_channels, dtype)
        self.channel_sums = ChannelSums(batch, map_channels, map_size, dtype) if batch_major else None
        self.ones = None if batch_major else np.ones(batch * map_size, dtype)

    @staticmethod
    def choose_batch_major(batch, map_channels, rows, map_size, groups, itemsize, one_by_one):
        temp_bytes = batch * map_channels * (rows // groups) * itemsize
        if temp_bytes > BATCH_MAJOR_MAX_WEIGHT_TEMP:
            return False
        return one_by_one or map_size >= BATCH_MAJOR_MIN_PLANE

    # views by group
    def _weights(self, weight):
        return weight.reshape(self.groups, self.map_group, self.row_group)

    def _col_view(self, col, batch_major):
        if batch_major:
            return col.reshape(self.batch, self.groups, self.row_group, self.map_size)
        return col.reshape(self.groups, self.row_group, self.batch * self.map_size)

    def _map_view(self, m, batch_major):
        if batch_major:
            return m.reshape(self.batch, self.groups, self.map_group, self.map_size)
        return m.reshape(self.groups, self.map_group, self.batch * self.map_size)

    def load_map(self, m, want_sums=False):
        """A (N, C_map, P) map in this layout's form; ``self.sums`` gets its per-channel sums
        when ``want_sums`` (a matrix-vector product with ones, as Caffe's bias gradient)."""
        m = m.reshape(self.batch, self.map_channels, self.map_size)
        if self.batch_major:
            if want_sums:
                self.sums[...] = self.channel_sums(m)
            return m
        conv_kernels.nop_to_onp(m, self.map_t)
        if want_sums:
            np.matmul(self.map_t.reshape(self.map_channels, -1), self.ones, out=self.sums)
        return self.map_t

    def map_from_col(self, weight, col, out, bias=None):
        out = out.reshape(self.batch, self.map_channels, self.map_size)
        cols = self._col_view(col, self.batch_major)
        if self.batch_major:
            np.matmul(self._weights(weight), cols, out=self._map_view(out, True))
            if bias is not None:
                conv_kernels.add_bias(out, bias)
        else:
            np.matmul(self._weights(weight), cols, out=self._map_view(self.map_t, False))
            conv_kernels.onp_to_nop(self.map_t, self.zeros if bias is None else bias, out)

    def col_from_map(self, weight, m, col, loaded=None):
        """col = W^T m in the ``dcol_batch_major`` layout; ``m`` is the NCHW map, ``loaded``
        its ``load_map`` form when already at hand."""
        weights_t = self._weights(weight).transpose(0, 2, 1)
        if self.dcol_batch_major:
            m = m.reshape(self.batch, self.map_channels, self.map_size)
            np.matmul(weights_t, self._map_view(m, True), out=self._col_view(col, True))
        else:
            loaded = self.load_map(m) if loaded is None else loaded
            np.matmul(weights_t, self._map_view(loaded, False), out=self._col_view(col, False))

    def weight_grad(self, m, col, weight_diff):
        wdiff = weight_diff.reshape(self.groups, self.map_group, self.row_group)
        cols = self._col_view(col, self.batch_major)
        if self.batch_major:
            np.matmul(self._map_view(m, True), cols.transpose(0, 1, 3, 2), out=self.weight_temp)
            np.sum(self.weight_temp, axis=0, out=self.weight_sum)
            wdiff += self.weight_sum
        else:
            np.matmul(cols, self._map_view(m, False).transpose(0, 2, 1), out=self.weight_temp)
            wdiff += self.weight_temp.transpose(0, 2, 1)
