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

Every geometry runs on a grid. A plane is copied once into a zero-padded buffer split by the
stride's phases: phase (a, b) holds the padded input's rows sh u + a and columns sw v + b, as a
rows x cols plane (stride 1: one phase, the padded plane itself, cols = W + 2 pw). Output (oh,
ow) is grid position k = oh cols + ow, and tap (i, j) reads phase ((i dh) mod sh, (j dw) mod
sw) at k + (i dh div sh) cols + (j dw div sw): every tap is one long unit-stride loop over the
plane (the columns ow >= OW are computed and dropped), instead of a short, strided loop per row.
A 3x3 kernel does its nine taps in one pass. The weight gradient multiplies dy, laid out on
that grid with zeros in the dropped columns, by each tap's run of the phases, adds the products
of each grid position across images (element-wise, so the loop vectorizes), then sums the
positions in float64. The data gradient of stride 1 with padding at most the kernel's reach
((k - 1) d) is the same loop as the forward: dx is the correlation of dy, zero-padded by
(k - 1) d - p, with the flipped filter. Any other geometry's (MobileNet's downsampling layers)
adds each tap's w dy, laid on the grid, into the tap's phase at its shift, and interleaves the
phases back into dx. MobileNet's 64 -> 64 at 112 x 112, stride 2, batch 8, against the row
kernels these replaced (one strided loop per tap and output row): forward 5.1 -> 3.3 ms, data
gradient 4.2 -> 3.6, weight gradient 4.8 -> 4.8; 256 at 28 x 28: 1.5 -> 1.0, 2.1 -> 1.5,
1.9 -> 1.3.

Planes are independent (the forward and the data gradient go plane by plane, the images shared
out over the workers of ``netlayers.parallel``; the weight gradient output channel by channel,
the channels shared out).
"""

import numpy as np

from .. import parallel
from ._jit import jit
from .im2col import pad_plane

# Indices are unsigned (np.uint64), as in im2col: numba then skips the negative-index
# wraparound test, which kept the stride-1 row loops from vectorizing (3x slower measured).


@jit
def split_phases(src, base, height, width, pad_h, pad_w, sh, sw, rows, cols, phases):
    """phases[(a sw + b) rows cols + u cols + v] = src[base + (sh u + a - pad_h) width + sw v + b
    - pad_w], 0 outside the image: one plane, zero-padded and split by row and column phase (a,
    b) of the stride (with stride 1, the padded plane itself, rows x cols)."""
    if sh == 1 and sw == 1:
        pad_plane(src, base, height, width, pad_h, pad_w, cols, phases)
        return
    phases[:] = 0
    usw = np.uint64(sw)
    for a in range(sh):
        for b in range(sw):
            first = max(0, -(-(pad_w - b) // sw))  # the first v whose column sw v + b - pad_w >= 0
            last = min(cols, (width - 1 + pad_w - b) // sw + 1)
            if last <= first:
                continue
            count = np.uint64(last - first)
            for u in range(rows):
                h = sh * u + a - pad_h
                if h < 0 or h >= height:
                    continue
                at = np.uint64(base + h * width + sw * first + b - pad_w)
                to = np.uint64(((a * sw + b) * rows + u) * cols + first)
                for v in range(count):
                    phases[to + v] = src[at + v * usw]


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
def _forward_grid(x, weight, bias, pad_h, pad_w, sh, sw, rows, cols, offsets, out_h, out_w, multiplier, y):
    batch, channels, height, width = x.shape
    out_channels = y.shape[1]
    phases = np.empty(sh * sw * rows * cols, x.dtype)
    length = (out_h - 1) * cols + out_w
    ext = np.empty(length, x.dtype)
    src, dst = x.reshape(-1), y.reshape(-1)
    for task in range(batch * channels):
        split_phases(src, task * height * width, height, width, pad_h, pad_w, sh, sw, rows, cols, phases)
        n, c = task // channels, task % channels
        for m in range(multiplier):
            o = c * multiplier + m
            ext[:] = bias[o]
            _add_taps(phases, offsets, weight[o], length, ext)
            _take_grid(ext, cols, out_h, out_w, dst, (n * out_channels + o) * out_h * out_w)


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
def _backward_data_phased(dy, weight, pad_h, pad_w, sh, sw, rows, cols, phase_of_tap, shifts, lead, multiplier, dx):
    """dx: each tap t adds w_t dy, laid on the grid, into its phase (``phase_of_tap[t]``)
    ``shifts[t]`` positions on; the phases are then interleaved back into dx's plane."""
    batch, channels, height, width = dx.shape
    out_channels, out_h, out_w = dy.shape[1], dy.shape[2], dy.shape[3]
    size = rows * cols
    usize = np.uint64(size)
    ext = np.empty(sh * sw * size, dx.dtype)
    on_grid = np.zeros(lead + size, dy.dtype)  # dy at lead + oh cols + ow, zeros elsewhere
    src, dst = dy.reshape(-1), dx.reshape(-1)
    for task in range(batch * channels):
        n, c = task // channels, task % channels
        ext[:] = 0
        for m in range(multiplier):
            o = c * multiplier + m
            base = (n * out_channels + o) * out_h * out_w
            for oh in range(out_h):
                row = np.uint64(lead + oh * cols)
                at = np.uint64(base + oh * out_w)
                for ow in range(np.uint64(out_w)):
                    on_grid[row + ow] = src[at + ow]
            for t in range(phase_of_tap.shape[0]):
                w = weight[o, t]
                into = ext[phase_of_tap[t] * size : (phase_of_tap[t] + 1) * size]
                start = np.uint64(lead - shifts[t])
                for k in range(usize):
                    into[k] += w * on_grid[start + k]
        plane = task * height * width
        for h in range(height):
            a, u = (h + pad_h) % sh, (h + pad_h) // sh
            for b in range(sw):
                first = (b - pad_w) % sw  # the first column w with (w + pad_w) % sw == b
                if first >= width:
                    continue
                count = np.uint64((width - 1 - first) // sw + 1)
                to = np.uint64(plane + h * width + first)
                at = np.uint64(((a * sw + b) * rows + u) * cols + (first + pad_w) // sw)
                usw = np.uint64(sw)
                for v in range(count):
                    dst[to + v * usw] = ext[at + v]


@jit
def _backward_weight_grid(dy, x, pad_h, pad_w, sh, sw, rows, cols, offsets, multiplier, weight_diff, lo, hi):
    batch, channels, height, width = x.shape
    out_channels, out_h, out_w = dy.shape[1], dy.shape[2], dy.shape[3]
    phases = np.empty(sh * sw * rows * cols, x.dtype)
    length = (out_h - 1) * cols + out_w
    on_grid = np.zeros(length, dy.dtype)  # dy on the grid; the dropped columns stay 0
    taps = offsets.shape[0]
    lanes = np.empty((taps, length), dy.dtype)  # per tap and grid position: summed over images
    src, grad = x.reshape(-1), dy.reshape(-1)
    for o in range(lo, hi):
        lanes[:] = 0
        for n in range(batch):
            base = (n * channels + o // multiplier) * height * width
            split_phases(src, base, height, width, pad_h, pad_w, sh, sw, rows, cols, phases)
            base = (n * out_channels + o) * out_h * out_w
            for oh in range(out_h):
                row = np.uint64(oh * cols)
                at = np.uint64(base + oh * out_w)
                for ow in range(np.uint64(out_w)):
                    on_grid[row + ow] = grad[at + ow]
            for t in range(taps):
                offset = np.uint64(offsets[t])
                lane = lanes[t]
                for k in range(np.uint64(length)):
                    lane[k] += on_grid[k] * phases[k + offset]
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
    output channels per input channel, kernel/pad/stride/dilation as (h, w) pairs. Every
    geometry runs on the grid of its stride's phases (module text); the data gradient of stride
    1 with padding within the kernel's reach (``unit_stride``) as the correlation of dy with the
    flipped filter, any other as each tap's product added into its phase."""

    def __init__(self, shape, out_size, kernel, pad, stride, dilation, multiplier):
        self.shape, self.out_size = tuple(shape), tuple(out_size)
        self.kernel, self.pad = tuple(kernel), tuple(pad)
        self.stride, self.multiplier = tuple(stride), multiplier
        self.taps = kernel[0] * kernel[1]
        self.reach = tuple((k - 1) * d for k, d in zip(kernel, dilation))
        self.unit_stride = self.stride == (1, 1) and all(p <= r for p, r in zip(pad, self.reach))
        # each phase rows x cols: the padded input's share, and room for every tap's shift
        self.rows, self.cols = (
            max(-(-(size + 2 * p) // s), out + r // s)
            for size, p, s, out, r in zip(shape[2:], pad, stride, out_size, self.reach)
        )
        (sh, sw), (dh, dw) = stride, dilation
        taps = [(i * dh, j * dw) for i in range(kernel[0]) for j in range(kernel[1])]
        self.phase_of_tap = np.array([(a % sh) * sw + b % sw for a, b in taps], np.int64)
        self.shifts = np.array([(a // sh) * self.cols + b // sw for a, b in taps], np.int64)
        self.offsets = self.phase_of_tap * (self.rows * self.cols) + self.shifts
        width = shape[3]
        self.flipped_offsets = np.array([a * (width + self.reach[1]) + b for a, b in taps], np.int64)

    def _grid(self):
        return (*self.pad, *self.stride, self.rows, self.cols)

    def forward(self, x, weight, bias, y):
        """y = depthwise(x, weight) + bias; ``weight`` (O, 1, kh, kw), ``bias`` (O,). Images
        are shared out over the workers."""
        weight = weight.reshape(-1, self.taps)
        settings = (*self._grid(), self.offsets, *self.out_size, self.multiplier)

        def run(lo, hi):
            _forward_grid(x[lo:hi], weight, bias, *settings, y[lo:hi])

        parallel.over_slices(run, x.shape[0], x.nbytes + y.nbytes)

    def backward_data(self, dy, weight, dx):
        """dx = the data gradient (written, not added); images are shared out."""
        if self.unit_stride:
            flipped = np.ascontiguousarray(weight.reshape((-1,) + self.kernel)[:, ::-1, ::-1]).reshape(-1, self.taps)
            settings = (*self.reach, *self.pad, self.flipped_offsets, self.multiplier)

            def run(lo, hi):
                _backward_data_unit_stride(dy[lo:hi], flipped, *settings, dx[lo:hi])

        else:
            weight = weight.reshape(-1, self.taps)
            settings = (*self._grid(), self.phase_of_tap, self.shifts, int(self.shifts.max()), self.multiplier)

            def run(lo, hi):
                _backward_data_phased(dy[lo:hi], weight, *settings, dx[lo:hi])

        parallel.over_slices(run, dx.shape[0], dx.nbytes + dy.nbytes)

    def backward_weight(self, dy, x, weight_diff):
        """weight_diff += the weight gradient; output channels are shared out (each sums over
        every image, so the result does not depend on the worker count)."""
        weight_diff = weight_diff.reshape(-1, self.taps)
        settings = (*self._grid(), self.offsets, self.multiplier)

        def run(lo, hi):
            _backward_weight_grid(dy, x, *settings, weight_diff, lo, hi)

        parallel.over_slices(run, dy.shape[1], x.nbytes + dy.nbytes)
