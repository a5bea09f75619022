"""Depthwise convolution (group = input channels) computed directly, without im2col.

Output channel o reads input channel c = o // k alone (k = num_output / channels, the channel
multiplier; MobileNet's depthwise layers have k = 1), with its own kh x kw filter w[o]:

    y[n, o, oh, ow] = b[o] + sum_{i, j} w[o, i, j] x[n, c, oh sh - ph + i dh, ow sw - pw + j dw]

    dE/dx[n, c, ih, iw] = sum_{o of c} sum_{i, j} w[o, i, j] dE/dy[n, o, oh, ow]  (the (oh, ow)
                          whose tap (i, j) reads (ih, iw))
    dE/dw[o, i, j] += sum_{n, oh, ow} dE/dy[n, o, oh, ow] x[n, c, oh sh - ph + i dh, ...]

(x is 0 in the padding). Through im2col this is a stack of N * C products with an inner
dimension of kh * kw, whose column buffer is kh * kw times the input: a few multiply-adds per
byte moved. Here each tap streams the input against the output directly.

Stride 1 (MobileNet's 3x3 layers but the few that downsample), with padding at most the kernel's
reach ((k - 1) d): a plane is copied once into a zero-padded buffer of width Wp = W + 2 pw, and
an output plane is computed on the grid of that width, where output (oh, ow) is position
k = oh Wp + ow and tap (i, j) reads position k + i dh Wp + j dw of the buffer: every tap is one
long unit-stride loop over the plane (the columns ow >= OW are computed and dropped), instead of
a short loop per row. A 3x3 kernel does its nine taps in one pass. The data gradient is the same
loop: dx is the correlation of dy, zero-padded by (k - 1) d - p, with the flipped filter; the
weight gradient multiplies dy, laid out on that grid with zeros in the dropped columns, by the
padded input at each tap's offset. The forward adds in the general kernels' order (bias, then the
taps in order), so its results are theirs bit for bit.

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
from .im2col import geometry_table, pad_plane

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


@jit
def _add_taps(padded, offsets, weights, length, ext):
    """ext[k] += sum over taps t, in order, of weights[t] padded[k + offsets[t]], k < length; nine
    taps in one pass (one load and store of ext instead of nine), others tap by tap."""
    size = np.uint64(length)
    if offsets.shape[0] == 9:
        w0, w1, w2 = weights[0], weights[1], weights[2]
        w3, w4, w5 = weights[3], weights[4], weights[5]
        w6, w7, w8 = weights[6], weights[7], weights[8]
        o0, o1, o2 = np.uint64(offsets[0]), np.uint64(offsets[1]), np.uint64(offsets[2])
        o3, o4, o5 = np.uint64(offsets[3]), np.uint64(offsets[4]), np.uint64(offsets[5])
        o6, o7, o8 = np.uint64(offsets[6]), np.uint64(offsets[7]), np.uint64(offsets[8])
        for k in range(size):
            total = ext[k] + w0 * padded[k + o0]
            total += w1 * padded[k + o1]
            total += w2 * padded[k + o2]
            total += w3 * padded[k + o3]
            total += w4 * padded[k + o4]
            total += w5 * padded[k + o5]
            total += w6 * padded[k + o6]
            total += w7 * padded[k + o7]
            ext[k] = total + w8 * padded[k + o8]
        return
    for t in range(offsets.shape[0]):
        w = weights[t]
        offset = np.uint64(offsets[t])
        for k in range(size):
            ext[k] += w * padded[k + offset]


@jit
def _take_grid(ext, grid_width, out_h, out_w, dst, base):
    """dst[base + oh * out_w + ow] = ext[oh * grid_width + ow]: an output plane off its grid."""
    for oh in range(out_h):
        row = np.uint64(oh * grid_width)
        at = np.uint64(base + oh * out_w)
        for ow in range(np.uint64(out_w)):
            dst[at + ow] = ext[row + ow]


@jit
def _forward_unit_stride(x, weight, bias, pad_h, pad_w, offsets, out_h, out_w, multiplier, y):
    batch, channels, height, width = x.shape
    out_channels = y.shape[1]
    grid_width = width + 2 * pad_w
    padded = np.empty((height + 2 * pad_h) * grid_width, x.dtype)
    length = (out_h - 1) * grid_width + out_w
    ext = np.empty(length, x.dtype)
    src, dst = x.reshape(-1), y.reshape(-1)
    for task in range(batch * channels):
        pad_plane(src, task * height * width, height, width, pad_h, pad_w, grid_width, padded)
        n, c = task // channels, task % channels
        for m in range(multiplier):
            o = c * multiplier + m
            ext[:] = bias[o]
            _add_taps(padded, offsets, weight[o], length, ext)
            _take_grid(ext, grid_width, out_h, out_w, dst, (n * out_channels + o) * out_h * out_w)


@jit
def _backward_data_unit_stride(dy, flipped, reach_h, reach_w, pad_h, pad_w, offsets, multiplier, dx):
    """dx = the correlation of dy, zero-padded by reach - pad, with the flipped filters."""
    batch, channels, height, width = dx.shape
    out_channels, out_h, out_w = dy.shape[1], dy.shape[2], dy.shape[3]
    grid_width = width + reach_w
    padded = np.empty((height + reach_h) * grid_width, dx.dtype)
    length = (height - 1) * grid_width + width
    ext = np.empty(length, dx.dtype)
    src, dst = dy.reshape(-1), dx.reshape(-1)
    for task in range(batch * channels):
        n, c = task // channels, task % channels
        ext[:] = 0
        for m in range(multiplier):
            o = c * multiplier + m
            base = (n * out_channels + o) * out_h * out_w
            pad_plane(src, base, out_h, out_w, reach_h - pad_h, reach_w - pad_w, grid_width, padded)
            _add_taps(padded, offsets, flipped[o], length, ext)
        _take_grid(ext, grid_width, height, width, dst, task * height * width)


@jit
def _backward_weight_unit_stride(dy, x, pad_h, pad_w, offsets, multiplier, weight_diff, lo, hi):
    batch, channels, height, width = x.shape
    out_channels, out_h, out_w = dy.shape[1], dy.shape[2], dy.shape[3]
    grid_width = width + 2 * pad_w
    padded = np.empty((height + 2 * pad_h) * grid_width, x.dtype)
    length = (out_h - 1) * grid_width + out_w
    on_grid = np.zeros(length, dy.dtype)  # dy on the grid; the dropped columns stay 0
    taps = offsets.shape[0]
    lanes = np.empty((taps, length), dy.dtype)  # per tap and grid position: summed over images
    src, grad = x.reshape(-1), dy.reshape(-1)
    for o in range(lo, hi):
        lanes[:] = 0
        for n in range(batch):
            pad_plane(
                src, (n * channels + o // multiplier) * height * width, height, width, pad_h, pad_w, grid_width, padded
            )
            base = (n * out_channels + o) * out_h * out_w
            for oh in range(out_h):
                row = np.uint64(oh * grid_width)
                at = np.uint64(base + oh * out_w)
                for ow in range(np.uint64(out_w)):
                    on_grid[row + ow] = grad[at + ow]
            for t in range(taps):
                offset = np.uint64(offsets[t])
                lane = lanes[t]
                for k in range(np.uint64(length)):
                    lane[k] += on_grid[k] * padded[k + offset]
        for t in range(taps):
            weight_diff[o, t] += _lane_sum(lanes[t], length)


@jit
def _lane_sum(lane, length):
    """The sum of lane[:length] in float64, as 16 running sums added at the end: one running
    sum is a chain of dependent additions, one at a time (MobileNet's 32 -> 32 at 112 x 112,
    batch 4: 3.7 M of them; the layer's weight gradient 4.2 -> 3.0 ms)."""
    parts = np.zeros(16)
    full = length - length % 16
    for k in range(0, full, 16):
        for j in range(16):
            parts[j] += lane[k + j]
    total = 0.0
    for j in range(16):
        total += parts[j]
    for k in range(full, length):
        total += lane[k]
    return total


class DepthwiseConvolution:
    """The three products of one depthwise geometry: input (N, C, H, W), ``multiplier``
    output channels per input channel, kernel/pad/stride/dilation as (h, w) pairs. Stride 1
    with padding within the kernel's reach takes the grid kernels (module text), any other
    geometry the row kernels."""

    def __init__(self, shape, out_size, kernel, pad, stride, dilation, multiplier):
        self.shape, self.out_size = tuple(shape), tuple(out_size)
        self.kernel, self.pad = tuple(kernel), tuple(pad)
        self.stride, self.multiplier = stride, multiplier
        self.taps = kernel[0] * kernel[1]
        self.table = geometry_table(shape, kernel, pad, stride, dilation, out_size)
        self.reach = tuple((k - 1) * d for k, d in zip(kernel, dilation))
        self.unit_stride = tuple(stride) == (1, 1) and all(p <= r for p, r in zip(pad, self.reach))
        if self.unit_stride:
            width = shape[3]
            taps = [(i * dilation[0], j * dilation[1]) for i in range(kernel[0]) for j in range(kernel[1])]
            self.offsets = np.array([a * (width + 2 * pad[1]) + b for a, b in taps], np.int64)
            self.flipped_offsets = np.array([a * (width + self.reach[1]) + b for a, b in taps], np.int64)

    def _geometry(self):
        return self.table, self.stride[0], self.stride[1], self.shape[3], self.out_size[1], self.multiplier

    def forward(self, x, weight, bias, y):
        """y = depthwise(x, weight) + bias; ``weight`` (O, 1, kh, kw), ``bias`` (O,). Images
        are shared out over the workers."""
        weight = weight.reshape(-1, self.taps)
        if self.unit_stride:
            settings = (*self.pad, self.offsets, *self.out_size, self.multiplier)

            def run(lo, hi):
                _forward_unit_stride(x[lo:hi], weight, bias, *settings, y[lo:hi])

        else:
            geometry = self._geometry()

            def run(lo, hi):
                _forward(x[lo:hi], weight, bias, *geometry, y[lo:hi])

        parallel.over_slices(run, x.shape[0], x.nbytes + y.nbytes)

    def backward_data(self, dy, weight, dx):
        """dx = the data gradient (written, not added); images are shared out."""
        if self.unit_stride:
            flipped = np.ascontiguousarray(weight.reshape((-1,) + self.kernel)[:, ::-1, ::-1]).reshape(-1, self.taps)
            settings = (*self.reach, *self.pad, self.flipped_offsets, self.multiplier)

            def run(lo, hi):
                _backward_data_unit_stride(dy[lo:hi], flipped, *settings, dx[lo:hi])

        else:
            weight, geometry = weight.reshape(-1, self.taps), self._geometry()

            def run(lo, hi):
                _backward_data(dy[lo:hi], weight, *geometry, dx[lo:hi])

        parallel.over_slices(run, dx.shape[0], dx.nbytes + dy.nbytes)

    def backward_weight(self, dy, x, weight_diff):
        """weight_diff += the weight gradient; output channels are shared out (each sums over
        every image, so the result does not depend on the worker count)."""
        weight_diff = weight_diff.reshape(-1, self.taps)
        if self.unit_stride:
            settings = (*self.pad, self.offsets, self.multiplier)

            def run(lo, hi):
                _backward_weight_unit_stride(dy, x, *settings, weight_diff, lo, hi)

        else:
            geometry = self._geometry()

            def run(lo, hi):
                _backward_weight(dy, x, *geometry, weight_diff, lo, hi)

        parallel.over_slices(run, dy.shape[1], x.nbytes + dy.nbytes)
