"""Grouped 3x3 convolutions of few channels a group (ResNeXt's, RegNet's), computed directly.

With G groups, input group g holds the channels [g C/G, (g + 1) C/G) and output group g the
channels [g O/G, (g + 1) O/G); output channel o of group g reads its group's channels alone:

    y[n, o, p, q] = b[o] + sum_{c < C/G} sum_{i, j < 3} w[o, c, i, j] x_pad[n, g C/G + c, s p + i, s q + j]

    dE/dx_pad[n, g C/G + c, r, t] = sum_{o of g} sum_{i, j: s p + i = r, s q + j = t} w[o, c, i, j] dE/dy[n, o, p, q]
    dE/dw[o, c, i, j] += sum_{n, p, q} dE/dy[n, o, p, q] x_pad[n, g C/G + c, s p + i, s q + j]

(x_pad: x zero-padded by 1, stride s 1 or 2). im2col + GEMM runs this as G products a image of
O/G rows and 9 C/G inner items (ResNeXt-50's second stage: 8 x 72 by 72 x 784), far below
BLAS's rate, and a column buffer 9 times the input; grouped Winograd
(``netlayers.kernels.winograd``) pays off from 16 channels a group.

Here every (run of images, group) pair is a task. Its C/G input planes are placed once into a
zero-padded grid (stride 2: split into the four row and column phases of the padded plane, as
``netlayers.kernels.depthwise`` does), where output (p, q) is grid position k = p cols + q and
tap (i, j) reads a fixed offset of k; the columns q >= OW are computed and dropped. At stride 1
the padding is shared: cols = W + 1 and H + 1 rows an image, the zero column a row's right
padding and (one position on) the next row's left, the zero row an image's bottom padding and
the next image's top, so a 7 x 7 map takes 64 positions, not 81 (with the passes below, 32
groups at 7 x 7 to 28 x 28, batch 8: forward 0.59x-0.68x the time, backward 0.75x-0.89x). The
forward runs four output channels at a time over all the group's channels, a tap row at a
time: each pass reads three tapped values and adds their products into each of the four
outputs' running planes (12 multiply-adds for 3 loads and 4 load-stores of the running
planes, the twelve weights held in registers). The data gradient of stride 1
is the same correlation of dy, zero-padded by 1, with the flipped filter, channels transposed
within each group; that of stride 2 adds, per output channel, the four phases of the padded
dx from dy in one pass (phase (a, b) of dx_pad is read by the taps with i = a mod 2 and j = b
mod 2 alone) and interleaves them into dx. The weight gradient sums, per tap row, four output
channels' dy times the three tapped values of an input channel: twelve running sums, float32
within a run, float64 over the runs; it is shared out by groups (each group sums over every
image), so it does not depend on the worker count.

Small maps (14 x 14 and less) put a run of images side by side on the grid, each image's
phase after the last's, so that a pass is about ``RUN_PIXELS`` long; every pass runs to a
whole number of ``LANES`` (the dropped positions computed too, the grid padded for them).
The tasks are shared out over the workers of ``netlayers.parallel`` by their work, not by
the bytes they move alone (``GroupedConvolution._weighted``).
"""

import numpy as np

from .. import parallel
from ._jit import sum_jit, vector_jit

# Where it runs (``applies``): up to MAX_GROUP_CHANNELS input channels a group. Forward + backward
# of one layer against what ran before (im2col + GEMM, its phases for stride 2, or grouped
# Winograd), 2 workers, float32, medians of 7 paired rounds (2026-12-06), channels at output
# size, batch, 32 groups unless said: 128 at 56, 8 (4 a group) 0.28x; 256 at 28, 8 0.32x-0.39x;
# 256 56 -> 28, 8 0.48x; 256 at 7, 8 0.54x; 512 28 -> 14, 8 0.48x-0.67x; 512 at 14, 8 against
# grouped Winograd 0.71x-0.92x (1.07x once), batch 4 0.91x, batch 2 0.39x, batch 16 0.57x; 512
# at 7, 8 0.65x; 768 at 14, 8 0.90x; 1024 (32 a group) at 7, 8 0.68x, at 14, 8 0.70x, 28 -> 14
# 0.46x, 14 -> 7 0.60x; RegNetX-400MF's 160 at 14 in 10 groups, 8 0.75x and 384 at 7 in 24, 8
# 0.65x. Small layers once the passes were shared out by their work (``_weighted``; before, 1.03x
# to 1.16x): 512 at 7, batch 1 0.85x; 1024 at 7, batch 1 0.84x, batch 2 0.84x, 14 -> 7 batch 2
# 0.87x. Where it lost: 64 a group (16 groups of 1024 at 14 and 8 of 512 at 28, batch 8, 1.18x and
# 1.37x; 32 groups of 2048 at 7, batch 2, 0.80x); one group (16 to 64 channels, CIFAR ResNet-20's
# layers) 1.02x-2.32x against F(4x4) and the phases; many outputs a group (2026-12-06, against
# the phases or Winograd, 5 paired rounds: 2 groups of 32 channels, 64 -> 1024 3x3/2 at 7 px,
# batch 64, 25.5 against 12.5-14.3 ms; -> 128 and -> 256 there 1.18x and 1.08x; 64 -> 128 and
# -> 256 at 14 px, batch 16, 1.31x and 1.45x).
MAX_GROUP_CHANNELS = 32
RUN_PIXELS = 1024  # images side by side on the grid up to about this many positions (small maps)
LANES = 16  # flat loops run over whole vectors of this many items (float32 in 512 bits): a
# remainder runs scalar, and on a 7 x 7 map's 63-position loop it was most of the loop (one
# core, the forward's pass: 25 GF/s at 63 positions, 43 at 64)


def applies(kernel, stride, dilation, pad, groups, channels, outputs):
    """Whether a convolution runs as the direct grouped kernels: 3 x 3, padding 1, stride 1 or
    2, no dilation, more than one group, from 2 to ``MAX_GROUP_CHANNELS`` input channels a
    group (one: depthwise, its own kernels) and at most ``MAX_GROUP_CHANNELS`` outputs a group
    (more make a group's product wide enough for the GEMM and Winograd forms)."""
    geometry = tuple(map(tuple, (kernel, pad, dilation)))
    if geometry != ((3, 3), (1, 1), (1, 1)) or tuple(stride) not in ((1, 1), (2, 2)):
        return False
    few = channels // groups <= MAX_GROUP_CHANNELS and outputs // groups <= MAX_GROUP_CHANNELS
    return 1 < groups < channels and few


# -- placing planes on the grid ----------------------------------------------------------------
@vector_jit
def _place(src, at, height, width, stride, phase_size, cols, dst, to):
    """Plane src[at:] (height x width) into its zero-padded (pad 1) grid at dst[to:]: stride 1,
    the padded plane (cols wide); stride 2, its four phases, phase_size apart (phase (a, b)
    holds the padded rows 2u + a and columns 2v + b, position u cols + v). Only the image's
    pixels are written: the padding's places are zeroed once, by the caller."""
    one, two = np.uint64(1), np.uint64(2)
    if stride == 1:
        for h in range(height):
            row = np.uint64(to + (h + 1) * cols + 1)
            start = np.uint64(at + h * width)
            for w in range(np.uint64(width)):
                dst[row + w] = src[start + w]
        return
    pairs = np.uint64(width // 2)
    for h in range(height):
        u, a = (h + 1) // 2, (h + 1) % 2
        odd = np.uint64(to + (2 * a + 1) * phase_size + u * cols)  # column 2m: phase b = 1, v = m
        even = np.uint64(to + 2 * a * phase_size + u * cols) + one  # column 2m + 1: b = 0, v = m + 1
        start = np.uint64(at + h * width)
        for m in range(pairs):
            dst[odd + m] = src[start + two * m]
            dst[even + m] = src[start + two * m + one]
        if width % 2:
            dst[odd + pairs] = src[start + two * pairs]


@vector_jit
def _place_output(src, at, out_h, out_w, cols, dst, to):
    """dst[to + p cols + q] = src[at + p out_w + q] (a plane onto a grid cols wide)."""
    for p in range(out_h):
        row = np.uint64(to + p * cols)
        start = np.uint64(at + p * out_w)
        for q in range(np.uint64(out_w)):
            dst[row + q] = src[start + q]


@vector_jit
def _span(count, area, last):
    """The flat loop's length over a run of ``count`` images ``area`` apart whose last position
    of interest is ``last`` - 1 in the last image: rounded up to whole vectors (``LANES``)."""
    length = (count - 1) * area + last
    return -(-length // LANES) * LANES


@vector_jit
def _starts(at, offsets):
    """The nine taps' first positions, at + offsets[t], as unsigned indices (numba then leaves
    out the negative-index test that keeps a loop from vectorizing)."""
    u = np.uint64(at)
    o = offsets
    return (
        u + np.uint64(o[0]), u + np.uint64(o[1]), u + np.uint64(o[2]), u + np.uint64(o[3]), u + np.uint64(o[4]),
        u + np.uint64(o[5]), u + np.uint64(o[6]), u + np.uint64(o[7]), u + np.uint64(o[8]),
    )  # fmt: skip


@vector_jit
def _nine(w):
    """The nine values of a 3x3 filter w (flat), as scalars."""
    return w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8]


# -- the forward (and stride 1's data gradient) -----------------------------------------------
@vector_jit
def _taps_four(src, block, inputs, offsets, w, o, acc, length):
    """acc[b length + k] += sum_c sum_t w[o + b, c, t] src[c block + offsets[t] + k] for b < 4,
    c < inputs, t < 9, k < length: four outputs over all of a group's channels, one tap row at a
    time. Twelve weights and three tapped values stay in sixteen vector registers (all nine taps
    of four outputs, 36 weights, did not: this form takes 0.85x-0.97x their time, one core); the channels are
    looped here, not by the caller: on a 7 x 7 map a pass is 64 positions, and a call a channel
    cost more than its arithmetic."""
    n = np.uint64(length)
    a1, a2, a3 = n, n + n, n + n + n
    for c in range(inputs):
        base = np.uint64(c * block)
        for row in range(3):
            t = 3 * row
            s0 = base + np.uint64(offsets[t])
            s1 = base + np.uint64(offsets[t + 1])
            s2 = base + np.uint64(offsets[t + 2])
            p0, p1, p2 = w[o, c, t], w[o, c, t + 1], w[o, c, t + 2]
            q0, q1, q2 = w[o + 1, c, t], w[o + 1, c, t + 1], w[o + 1, c, t + 2]
            r0, r1, r2 = w[o + 2, c, t], w[o + 2, c, t + 1], w[o + 2, c, t + 2]
            v0, v1, v2 = w[o + 3, c, t], w[o + 3, c, t + 1], w[o + 3, c, t + 2]
            for k in range(n):
                x0, x1, x2 = src[s0 + k], src[s1 + k], src[s2 + k]
                acc[k] += p0 * x0 + p1 * x1 + p2 * x2
                acc[a1 + k] += q0 * x0 + q1 * x1 + q2 * x2
                acc[a2 + k] += r0 * x0 + r1 * x1 + r2 * x2
                acc[a3 + k] += v0 * x0 + v1 * x1 + v2 * x2


@vector_jit
def _taps_one(src, at, offsets, w, o, c, acc, length):
    """acc[k] += sum_t w[o, c, t] src[at + offsets[t] + k] for t < 9, k < length."""
    s0, s1, s2, s3, s4, s5, s6, s7, s8 = _starts(at, offsets)
    p = w[o, c]
    p0, p1, p2, p3, p4, p5, p6, p7, p8 = _nine(p)
    for k in range(np.uint64(length)):
        total = p0 * src[s0 + k] + p1 * src[s1 + k] + p2 * src[s2 + k] + p3 * src[s3 + k]
        acc[k] += total + p4 * src[s4 + k] + p5 * src[s5 + k] + p6 * src[s6 + k] + p7 * src[s7 + k] + p8 * src[s8 + k]


@vector_jit
def _correlate(x, w, bias, groups, stride, rows, cols, run, offsets, y, lo, hi):
    """y[images, group g] = bias + the grouped 3x3 correlation of x[images, group g] (padding 1,
    stride 1 or 2) with w (O, C/G, 9), for the tasks r G + g in [lo, hi): run r holds the
    images [r run, (r + 1) run), side by side on the grid (phase by phase: phase (a, b) of a
    channel holds the run's images one after another)."""
    batch, channels, height, width = x.shape
    outputs, out_h, out_w = y.shape[1], y.shape[2], y.shape[3]
    inputs, per_group = channels // groups, outputs // groups
    area = rows * cols
    phase_size = run * area
    block = stride * stride * phase_size  # a channel's phases
    most = _span(run, area, out_h * cols)
    planes = np.zeros(inputs * block + 2 * cols + 2 + LANES, x.dtype)  # room for the taps past the last
    acc = np.empty(4 * most, x.dtype)
    src, dst = x.reshape(-1), y.reshape(-1)
    for task in range(lo, hi):
        first, g = task // groups * run, task % groups
        count = min(run, batch - first)
        length = _span(count, area, out_h * cols)
        for m in range(count):
            at = ((first + m) * channels + g * inputs) * height * width
            for c in range(inputs):
                to = c * block + m * area
                _place(src, at + c * height * width, height, width, stride, phase_size, cols, planes, to)
        o = 0
        while o < per_group:
            block_outputs = 4 if per_group - o >= 4 else 1
            acc[: block_outputs * length] = 0
            if block_outputs == 4:
                _taps_four(planes, block, inputs, offsets, w, g * per_group + o, acc, length)
            else:
                for c in range(inputs):
                    _taps_one(planes, c * block, offsets, w, g * per_group + o, c, acc, length)
            for b in range(block_outputs):
                value = bias[g * per_group + o + b]
                for m in range(count):
                    at = ((first + m) * outputs + g * per_group + o + b) * out_h * out_w
                    for p in range(out_h):
                        row, to = np.uint64(b * length + m * area + p * cols), np.uint64(at + p * out_w)
                        for q in range(np.uint64(out_w)):
                            dst[to + q] = acc[row + q] + value
            o += block_outputs


# -- the data gradient of stride 2 ------------------------------------------------------------
@vector_jit
def _add_phases(grid, at, cols, p, acc, length):
    """acc's four planes (length apart: the phases (0, 0), (0, 1), (1, 0), (1, 1) of one input
    channel's padded dx, position k = u cols + v) += one output channel's share, with dy[u, v]
    at grid[at + k] and zeros around it:

        dx_pad[2u, 2v]         += w00 dy[u, v] + w02 dy[u, v - 1] + w20 dy[u - 1, v] + w22 dy[u - 1, v - 1]
        dx_pad[2u, 2v + 1]     += w01 dy[u, v] + w21 dy[u - 1, v]
        dx_pad[2u + 1, 2v]     += w10 dy[u, v] + w12 dy[u, v - 1]
        dx_pad[2u + 1, 2v + 1] += w11 dy[u, v]
    """
    one, ucols, n = np.uint64(1), np.uint64(cols), np.uint64(length)
    u = np.uint64(at)
    w00, w01, w02, w10, w11, w12, w20, w21, w22 = _nine(p)
    a1, a2, a3 = n, n + n, n + n + n
    for k in range(n):
        d = grid[u + k]
        left = grid[u + k - one]
        up = grid[u + k - ucols]
        corner = grid[u + k - ucols - one]
        acc[k] += w00 * d + w02 * left + w20 * up + w22 * corner
        acc[a1 + k] += w01 * d + w21 * up
        acc[a2 + k] += w10 * d + w12 * left
        acc[a3 + k] += w11 * d


@vector_jit
def _interleave(acc, base, length, cols, height, width, dst, at):
    """dx[h, w] (flat from dst[at]) = the phase (a, b) plane of acc (from base) at (u, v),
    where the padded position is (h + 1, w + 1) = (2u + a, 2v + b)."""
    one, two = np.uint64(1), np.uint64(2)
    pairs = np.uint64(width // 2)
    for h in range(height):
        u, a = (h + 1) // 2, (h + 1) % 2
        row = np.uint64(at + h * width)
        odd = np.uint64(base + (2 * a + 1) * length + u * cols)  # column 2m: b = 1, v = m
        even = np.uint64(base + 2 * a * length + u * cols) + one  # column 2m + 1: b = 0, v = m + 1
        for m in range(pairs):
            dst[row + two * m] = acc[odd + m]
            dst[row + two * m + one] = acc[even + m]
        if width % 2:
            dst[row + two * pairs] = acc[odd + pairs]


@vector_jit
def _backward_data_stride2(dy, w, groups, run, dx, lo, hi):
    """dx[images, group g] (written) for stride 2, the tasks r G + g in [lo, hi) (run r: the
    images [r run, (r + 1) run)). Each output channel's dy planes lie side by side on a grid
    out_w + 2 columns wide, with a zero row and column around each."""
    batch, channels, height, width = dx.shape
    outputs, out_h, out_w = dy.shape[1], dy.shape[2], dy.shape[3]
    inputs, per_group = channels // groups, outputs // groups
    cols = out_w + 2
    area = (out_h + 2) * cols
    # positions u <= out_h, v <= out_w of an image (dy is 0 past its last row and column)
    most = _span(run, area, out_h * cols + out_w + 1)
    grid = np.zeros(per_group * run * area + LANES, dy.dtype)
    acc = np.empty(4 * most, dy.dtype)
    src, dst = dy.reshape(-1), dx.reshape(-1)
    start = cols + 1  # dy[0, 0]'s place
    for task in range(lo, hi):
        first, g = task // groups * run, task % groups
        count = min(run, batch - first)
        length = _span(count, area, out_h * cols + out_w + 1)
        for o in range(per_group):
            for m in range(count):
                at = ((first + m) * outputs + g * per_group + o) * out_h * out_w
                _place_output(src, at, out_h, out_w, cols, grid, (o * run + m) * area + start)
        for c in range(inputs):
            acc[: 4 * length] = 0
            for o in range(per_group):
                _add_phases(grid, o * run * area + start, cols, w[g * per_group + o, c], acc, length)
            for m in range(count):
                at = ((first + m) * channels + g * inputs + c) * height * width
                _interleave(acc, m * area, length, cols, height, width, dst, at)


# -- the weight gradient ----------------------------------------------------------------------
@sum_jit
def _tap_row_sums(grid, g_at, length, planes, s_at, offsets, row, part, p_at, stride_o):
    """part[p_at + b stride_o + 3 row + j] += sum_k grid[g_at + b length + k] planes[s_at +
    offsets[3 row + j] + k] for the four outputs b < 4 and the taps j < 3 of tap row ``row``."""
    n = np.uint64(length)
    g0 = np.uint64(g_at)
    g1, g2, g3 = g0 + n, g0 + n + n, g0 + n + n + n
    v = np.uint64(s_at)
    s0 = v + np.uint64(offsets[3 * row])
    s1 = v + np.uint64(offsets[3 * row + 1])
    s2 = v + np.uint64(offsets[3 * row + 2])
    zero = grid.dtype.type(0)
    a0 = a1 = a2 = b0 = b1 = b2 = c0 = c1 = c2 = d0 = d1 = d2 = zero
    for k in range(n):
        x0, x1, x2 = planes[s0 + k], planes[s1 + k], planes[s2 + k]
        e, f, g, h = grid[g0 + k], grid[g1 + k], grid[g2 + k], grid[g3 + k]
        a0 += e * x0
        a1 += e * x1
        a2 += e * x2
        b0 += f * x0
        b1 += f * x1
        b2 += f * x2
        c0 += g * x0
        c1 += g * x1
        c2 += g * x2
        d0 += h * x0
        d1 += h * x1
        d2 += h * x2
    at = p_at + 3 * row
    part[at] += a0
    part[at + 1] += a1
    part[at + 2] += a2
    part[at + stride_o] += b0
    part[at + stride_o + 1] += b1
    part[at + stride_o + 2] += b2
    part[at + 2 * stride_o] += c0
    part[at + 2 * stride_o + 1] += c1
    part[at + 2 * stride_o + 2] += c2
    part[at + 3 * stride_o] += d0
    part[at + 3 * stride_o + 1] += d1
    part[at + 3 * stride_o + 2] += d2


@sum_jit
def _tap_sums(grid, g_at, length, planes, s_at, offsets, part, p_at):
    """part[p_at + t] += sum_k grid[g_at + k] planes[s_at + offsets[t] + k] for the nine taps t."""
    u, v = np.uint64(g_at), np.uint64(s_at)
    for t in range(9):
        s = v + np.uint64(offsets[t])
        total = grid.dtype.type(0)
        for k in range(np.uint64(length)):
            total += grid[u + k] * planes[s + k]
        part[p_at + t] += total


@vector_jit
def _backward_weight(x, dy, groups, stride, rows, cols, run, offsets, weight_diff, lo, hi):
    """weight_diff[group g's outputs] += the weight gradient, summed over every run of images
    (float32 within a run, float64 over runs), for the groups g in [lo, hi)."""
    batch, channels, height, width = x.shape
    outputs, out_h, out_w = dy.shape[1], dy.shape[2], dy.shape[3]
    inputs, per_group = channels // groups, outputs // groups
    area = rows * cols
    phase_size = run * area
    block = stride * stride * phase_size
    most = _span(run, area, out_h * cols)
    planes = np.zeros(inputs * block + 2 * cols + 2 + LANES, x.dtype)
    grid = np.zeros(per_group * most, x.dtype)  # each output's dy on the grid, 0 between its pixels
    by_output = inputs * 9  # an output's weights
    items = per_group * by_output
    part = np.empty(items, x.dtype)
    totals = np.empty(items)
    src, grad = x.reshape(-1), dy.reshape(-1)
    diff = weight_diff.reshape(-1)
    for g in range(lo, hi):
        totals[:] = 0
        for first in range(0, batch, run):
            count = min(run, batch - first)
            length = _span(count, area, out_h * cols)
            grid[:] = 0  # outputs lie length apart, and a short last run's length is shorter
            for m in range(count):
                at = ((first + m) * channels + g * inputs) * height * width
                for c in range(inputs):
                    to = c * block + m * area
                    _place(src, at + c * height * width, height, width, stride, phase_size, cols, planes, to)
                for o in range(per_group):
                    at = ((first + m) * outputs + g * per_group + o) * out_h * out_w
                    _place_output(grad, at, out_h, out_w, cols, grid, o * length + m * area)
            part[:] = 0
            o = 0
            while o < per_group:
                if per_group - o >= 4:
                    on_grid = o * length
                    for c in range(inputs):
                        at = (o * inputs + c) * 9
                        for row in range(3):
                            _tap_row_sums(grid, on_grid, length, planes, c * block, offsets, row, part, at, by_output)
                    o += 4
                else:
                    for c in range(inputs):
                        _tap_sums(grid, o * length, length, planes, c * block, offsets, part, (o * inputs + c) * 9)
                    o += 1
            for k in range(items):
                totals[k] += part[k]
        start = g * items
        for k in range(items):
            diff[start + k] += totals[k]


class GroupedConvolution:
    """A grouped 3x3 convolution with padding 1 and stride 1 or 2 (``applies``) on (N, C, H, W)
    inputs, computed directly (module text). ``filters(weight)`` takes an (O, C/G, 3, 3) weight
    once per pass; ``forward`` and ``backward`` use it."""

    def __init__(self, image_shape, outputs, stride, groups, dtype):
        self.batch, self.channels, height, width = image_shape
        self.outputs, self.stride, self.groups = outputs, stride, groups
        self.dtype = np.dtype(dtype)
        self.out_size = ((height - 1) // stride + 1, (width - 1) // stride + 1)
        # each phase rows x cols: the padded plane's share, and room for the taps' reach (2 / stride);
        # stride 1: one zero row and column an image, each the padding on both of its sides
        self.rows, self.cols = (
            size + 1 if stride == 1 else max(-(-(size + 2) // stride), out + 1)
            for size, out in zip((height, width), self.out_size)
        )
        # images side by side: runs of about RUN_PIXELS grid positions, as even as the batch allows
        run = min(self.batch, max(1, -(-RUN_PIXELS // (self.rows * self.cols))))
        runs = -(-self.batch // run)
        self.run = -(-self.batch // runs)
        self.runs = runs
        self.offsets = self._offsets(stride, self.rows, self.cols, self.run)
        # stride 1's data gradient: dy on its padded grid, out_w + 1 columns (the padding shared)
        self.grad_rows, self.grad_cols = self.out_size[0] + 1, self.out_size[1] + 1
        self.grad_offsets = self._offsets(1, self.grad_rows, self.grad_cols, self.run)
        self.weight = np.empty((outputs, self.channels // groups, 9), self.dtype)
        self.flipped = np.empty((self.channels, outputs // groups, 9), self.dtype)
        self.no_output_bias = np.zeros(outputs, self.dtype)
        self.no_input_bias = np.zeros(self.channels, self.dtype)  # for the data gradient

    @staticmethod
    def _offsets(stride, rows, cols, run):
        """Tap (i, j)'s offset on the grid: its phase's start plus its shift."""
        phase = run * rows * cols
        taps = [(i, j) for i in range(3) for j in range(3)]
        return np.array(
            [((i % stride) * stride + j % stride) * phase + (i // stride) * cols + j // stride for i, j in taps],
            np.int64,
        )

    def filters(self, weight):
        """The weight as (O, C/G, 9) and, for stride 1's data gradient, flipped and transposed
        within each group as (C, O/G, 9)."""
        inputs, per_group = self.channels // self.groups, self.outputs // self.groups
        self.weight[...] = weight.reshape(self.weight.shape)
        if self.stride == 1:
            by_group = weight.reshape(self.groups, per_group, inputs, 9)[..., ::-1]
            self.flipped.reshape(self.groups, inputs, per_group, 9)[...] = by_group.transpose(0, 2, 1, 3)

    def _weighted(self, nbytes):
        """What ``parallel.over_slices`` weighs to decide whether to share out a pass: the bytes
        it reads and writes times the channels a group (its multiply-adds per output item, by
        nine: a pass computes far more per byte than the memory-bound kernels the threshold was
        set for; 8 x 384 channels at 7 x 7, 24 groups, moves 1.2 MB and took 1.0 ms on one
        worker, 1.1 with the second idle)."""
        return nbytes * (self.channels // self.groups)

    def _tasks(self, fn, nbytes):
        parallel.over_slices(fn, self.runs * self.groups, self._weighted(nbytes))

    def forward(self, x, bias, y):
        """y = the convolution of x + bias (bias may be None)."""
        bias = self.no_output_bias if bias is None else bias
        grid = (self.groups, self.stride, self.rows, self.cols, self.run, self.offsets)

        def run(lo, hi):
            _correlate(x, self.weight, bias, *grid, y, lo, hi)

        self._tasks(run, x.nbytes + y.nbytes)

    def backward(self, x, dy, dx, weight_diff):
        """dx = the data gradient (when dx is not None; written), weight_diff += the weight
        gradient (when it is not None)."""
        if weight_diff is not None:
            grid = (self.groups, self.stride, self.rows, self.cols, self.run, self.offsets)

            def run_groups(lo, hi):
                _backward_weight(x, dy, *grid, weight_diff, lo, hi)

            parallel.over_slices(run_groups, self.groups, self._weighted(x.nbytes + dy.nbytes))
        if dx is None:
            return
        if self.stride == 1:
            grad_grid = (self.groups, 1, self.grad_rows, self.grad_cols, self.run, self.grad_offsets)

            def run(lo, hi):
                _correlate(dy, self.flipped, self.no_input_bias, *grad_grid, dx, lo, hi)

        else:

            def run(lo, hi):
                _backward_data_stride2(dy, self.weight, self.groups, self.run, dx, lo, hi)

        self._tasks(run, dx.nbytes + dy.nbytes)
