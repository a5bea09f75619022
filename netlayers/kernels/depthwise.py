"""Depthwise convolution (group = input channels) computed directly, without im2col.

Output channel o reads input channel c = o // k alone (k = num_output / channels, the channel
multiplier; MobileNet's depthwise layers have k = 1), with its own kh x kw filter w[o]:

    y[n, o, oh, ow] = b[o] + sum_{i, j} w[o, i, j] x[n, c, oh sh - ph + i dh, ow sw - pw + j dw]

    dE/dx[n, c, ih, iw] = sum_{o of c} sum_{i, j} w[o, i, j] dE/dy[n, o, oh, ow]  (the (oh, ow)
                          whose tap (i, j) reads (ih, iw))
    dE/dw[o, i, j] += sum_{n, oh, ow} dE/dy[n, o, oh, ow] x[n, c, oh sh - ph + i dh, ...]

(x is 0 in the padding). Through im2col this is a stack of N * C products with an inner
dimension of kh * kw, whose column buffer is kh * kw times the input: a few multiply-adds per
byte moved. Here each tap streams one row of the input against one row of the output.

The valid output range of each tap comes from :func:`netlayers.kernels.im2col.tap_table`
(rows [top, bottom), columns [lo, hi), and the input offset of (top, lo)). Planes are
independent (the forward and the data gradient go plane by plane, the images shared out over
the workers of ``netlayers.parallel``; the weight gradient output channel by channel, the
channels shared out). The weight gradient adds the products of each output column across rows
and images (element-wise, so the loop vectorizes), then sums the columns in float64.
"""

import numpy as np

from .. import parallel
from ._jit import jit
from .im2col import geometry_table

# Indices are unsigned (np.uint64), as in im2col: numba then skips the negative-index
# wraparound test, which kept the stride-1 row loops from vectorizing (3x slower measured).


@jit
def _forward(x, weight, bias, table, sh, sw, width, out_w, multiplier, y):
    batch, out_channels = y.shape[0], y.shape[1]
    out_plane = np.uint64(y.shape[2] * y.shape[3])
    plane = np.uint64(x.shape[2] * x.shape[3])
    src, dst = x.reshape(-1), y.reshape(-1)
    usw, uow, row_step = np.uint64(sw), np.uint64(out_w), np.uint64(sh * width)
    for task in range(batch * out_channels):
        n, o = task // out_channels, task % out_channels
        out_base = np.uint64(task) * out_plane
        in_base = np.uint64(n * x.shape[1] + o // multiplier) * plane
        value = bias[o]
        for k in range(out_plane):
            dst[out_base + np.uint64(k)] = value
        for t in range(weight.shape[1]):
            w = weight[o, t]
            row_in = in_base + np.uint64(table[t, 4])
            row_out = out_base + np.uint64(table[t, 0]) * uow + np.uint64(table[t, 2])
            count = np.uint64(table[t, 3] - table[t, 2])
            for _ in range(table[t, 0], table[t, 1]):
                for k in range(count):
                    dst[row_out + k] += w * src[row_in + k * usw]
                row_in += row_step
                row_out += uow


@jit
def _backward_data(dy, weight, table, sh, sw, width, out_w, multiplier, dx):
    batch, channels, out_channels = dx.shape[0], dx.shape[1], dy.shape[1]
    out_plane = np.uint64(dy.shape[2] * dy.shape[3])
    plane = np.uint64(dx.shape[2] * dx.shape[3])
    src, dst = dy.reshape(-1), dx.reshape(-1)
    usw, uow, row_step = np.uint64(sw), np.uint64(out_w), np.uint64(sh * width)
    zero = dx.dtype.type(0)
    for task in range(batch * channels):
        n, c = task // channels, task % channels
        in_base = np.uint64(task) * plane
        for k in range(plane):
            dst[in_base + np.uint64(k)] = zero
        for m in range(multiplier):
            o = c * multiplier + m
            out_base = np.uint64(n * out_channels + o) * out_plane
            for t in range(weight.shape[1]):
                w = weight[o, t]
                row_in = in_base + np.uint64(table[t, 4])
                row_out = out_base + np.uint64(table[t, 0]) * uow + np.uint64(table[t, 2])
                count = np.uint64(table[t, 3] - table[t, 2])
                for _ in range(table[t, 0], table[t, 1]):
                    for k in range(count):
                        dst[row_in + k * usw] += w * src[row_out + k]
                    row_in += row_step
                    row_out += uow


@jit
def _backward_weight(dy, x, table, sh, sw, width, out_w, multiplier, weight_diff, lo, hi):
    batch, out_channels = dy.shape[0], dy.shape[1]
    out_plane = np.uint64(dy.shape[2] * dy.shape[3])
    plane = np.uint64(x.shape[2] * x.shape[3])
    grad, src = dy.reshape(-1), x.reshape(-1)
    usw, uow, row_step = np.uint64(sw), np.uint64(out_w), np.uint64(sh * width)
    lanes = np.zeros(out_w, dy.dtype)  # per output column: products summed over rows and images
    for o in range(lo, hi):
        for t in range(weight_diff.shape[1]):
            count = np.uint64(table[t, 3] - table[t, 2])
            lanes[:] = 0
            for n in range(batch):
                row_in = np.uint64(n * x.shape[1] + o // multiplier) * plane + np.uint64(table[t, 4])
                row_out = np.uint64(n * out_channels + o) * out_plane + np.uint64(table[t, 0]) * uow
                row_out += np.uint64(table[t, 2])
                for _ in range(table[t, 0], table[t, 1]):
                    for k in range(count):
                        lanes[k] += grad[row_out + k] * src[row_in + k * usw]
                    row_in += row_step
                    row_out += uow
            total = 0.0
            for k in range(count):
                total += lanes[k]
            weight_diff[o, t] += total


class DepthwiseConvolution:
    """The three products of one depthwise geometry: input (N, C, H, W), ``multiplier``
    output channels per input channel, kernel/pad/stride/dilation as (h, w) pairs."""

    def __init__(self, shape, out_size, kernel, pad, stride, dilation, multiplier):
        self.shape, self.out_size = tuple(shape), tuple(out_size)
        self.stride, self.multiplier = stride, multiplier
        self.taps = kernel[0] * kernel[1]
        self.table = geometry_table(shape, kernel, pad, stride, dilation, out_size)

    def _geometry(self):
        return self.table, self.stride[0], self.stride[1], self.shape[3], self.out_size[1], self.multiplier

    def forward(self, x, weight, bias, y):
        """y = depthwise(x, weight) + bias; ``weight`` (O, 1, kh, kw), ``bias`` (O,). Images
        are shared out over the workers."""
        weight, geometry = weight.reshape(-1, self.taps), self._geometry()
        parallel.over_slices(
            lambda lo, hi: _forward(x[lo:hi], weight, bias, *geometry, y[lo:hi]), x.shape[0], x.nbytes + y.nbytes
        )

    def backward_data(self, dy, weight, dx):
        """dx = the data gradient (written, not added); images are shared out."""
        weight, geometry = weight.reshape(-1, self.taps), self._geometry()
        parallel.over_slices(
            lambda lo, hi: _backward_data(dy[lo:hi], weight, *geometry, dx[lo:hi]), dx.shape[0], dx.nbytes + dy.nbytes
        )

    def backward_weight(self, dy, x, weight_diff):
        """weight_diff += the weight gradient; output channels are shared out (each sums over
        every image, so the result does not depend on the worker count)."""
        weight_diff, geometry = weight_diff.reshape(-1, self.taps), self._geometry()
        parallel.over_slices(
            lambda lo, hi: _backward_weight(dy, x, *geometry, weight_diff, lo, hi), dy.shape[1], x.nbytes + dy.nbytes
        )
