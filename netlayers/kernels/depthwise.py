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
A 3x3 kernel does its nine taps in one pass. The weight gradient is, per tap and image, the dot
product of dy, laid out on that grid with zeros in the dropped columns, with the tap's run of
the phases (vectorized: ``sum_jit``; float32 within an image, float64 across images: against
float64 lanes summed per channel, one core, 0.42x-0.76x the time, e.g. 64 channels at 112 x 112,
stride 2, batch 4 2.4 -> 1.8 ms, 5 x 5 at 28 x 28 1.7 -> 0.69 ms). The data gradient of stride 1
with padding at most the kernel's reach ((k - 1) d) is the same loop as the forward: dx is the
correlation of dy, zero-padded by (k - 1) d - p, with the flipped filter. Any other geometry's
adds each tap's w dy, laid on the grid, into the tap's phase at its shift, and interleaves the
phases back into dx; MobileNet's downsampling layers (3 x 3, stride 2, padding 1) instead write
dx straight from dy (``_backward_data_3x3_s2``: 0.2x-0.9x the time). MobileNet's 64 -> 64 at 112
x 112, stride 2, batch 8, against the row kernels these replaced (one strided loop per tap and
output row): forward 5.1 -> 3.3 ms, data gradient 4.2 -> 3.6, weight gradient 4.8 -> 4.8; 256 at
28 x 28: 1.5 -> 1.0, 2.1 -> 1.5, 1.9 -> 1.3.

The commonest geometry, 3 x 3 with stride 1 and padding 1 (all of MobileNet's depthwise layers
but its downsampling ones), runs straight from the planes, with no copies: the output plane has
the input's size, so output pixel k's tap (i, j) reads input pixel k + (i - 1) W + j - 1, and the
rows between the first and the last are one flat loop of nine taps over the plane, written
straight into y. That loop's first and last columns read the neighbouring row's pixels (the
padding's place); they are written again afterwards, with the top and bottom rows, by loops
that leave out the missing taps. The data gradient is the same loop over dy with the flipped
filter. The weight gradient is nine dot products of dy with x shifted by each tap's offset over
the plane, vectorized (``sum_jit``), float32 within a plane and float64 across images: for the
taps of column 0 a copy of dy with its first column zeroed stands in for dy (there the tap
would read the row before's last pixel), for column 2 one without its last column, and tap rows
0 and 2 leave out the first and last row of pixels. Against the grid, one core (forward, data
gradient, weight gradient, ms): 128 channels at 56 x 56, batch 8, 2.4 / 2.5 / 5.0 -> 1.1 / 1.1 /
3.3; 256 at 28 x 28 1.1 / 1.1 / 2.5 -> 0.59 / 0.62 / 1.4; 512 at 14 x 14 0.90 / 0.86 / 2.0 ->
0.42 / 0.46 / 0.76; and channels last at 7 x 7, 1024 channels, 0.63 / 0.62 / 0.56 -> 0.40 /
0.42 / 0.44 (channels last stays faster below 6 x 6).

Planes are independent (the forward and the data gradient go plane by plane, the images shared
out over the workers of ``netlayers.parallel``; the weight gradient output channel by channel,
the channels shared out).

Other small output planes (at most ``CHANNELS_LAST_MAX_PIXELS``: MobileNet's last downsampling
layer) with one output per channel run channels last instead: a plane of 49 pixels leaves the
grid's loops too short to pay for their set-up. A block of channels of one image is transposed
(in 16 x 16 tiles) into a (pixels + 1, channels) buffer whose last row is zeros, and each output
pixel is bias plus, tap by tap, the weights' row times the row of the pixel the tap reads (the
zero row in the padding): loops over the channels. The data gradient adds each tap's w dy into
the row it read (the zero row takes the padding's), the weight gradient sums dy times that row
per tap (in float32 over an image's pixels, in float64 over images). Layer forward + backward
(batch 8, 2 workers) against the grid: 1024 at 7 x 7 3.3 -> 1.4-2.0 ms (that layer now runs
straight from its planes, above), 512 at 14 x 14 stride 2 2.5-3.2 -> 1.2-1.8; the grid was
faster at 14 x 14 outputs (512 channels, stride 1), so it keeps those.
"""

import numpy as np

from .. import parallel
from ._jit import jit, sum_jit
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
def _forward_grid(x, weight, bias, pad_h, pad_w, sh, sw, rows, cols, offsets, out_h, out_w, multiplier, y, lo, hi):
    batch, channels, height, width = x.shape
    out_channels = y.shape[1]
    phases = np.empty(sh * sw * rows * cols, x.dtype)
    length = (out_h - 1) * cols + out_w
    ext = np.empty(length, x.dtype)
    src, dst = x.reshape(-1), y.reshape(-1)
    for task in range(lo, hi):  # (image, channel) pairs
        split_phases(src, task * height * width, height, width, pad_h, pad_w, sh, sw, rows, cols, phases)
        n, c = task // channels, task % channels
        for m in range(multiplier):
            o = c * multiplier + m
            ext[:] = bias[o]
            _add_taps(phases, offsets, weight[o], length, ext)
            _take_grid(ext, cols, out_h, out_w, dst, (n * out_channels + o) * out_h * out_w)


@jit
def _backward_data_unit_stride(dy, flipped, reach_h, reach_w, pad_h, pad_w, offsets, multiplier, dx, lo, hi):
    """dx = the correlation of dy, zero-padded by reach - pad, with the flipped filters, for the
    (image, channel) pairs [lo, hi)."""
    batch, channels, height, width = dx.shape
    out_channels, out_h, out_w = dy.shape[1], dy.shape[2], dy.shape[3]
    grid_width = width + reach_w
    padded = np.empty((height + reach_h) * grid_width, dx.dtype)
    length = (height - 1) * grid_width + width
    ext = np.empty(length, dx.dtype)
    src, dst = dy.reshape(-1), dx.reshape(-1)
    for task in range(lo, hi):
        n, c = task // channels, task % channels
        ext[:] = 0
        for m in range(multiplier):
            o = c * multiplier + m
            base = (n * out_channels + o) * out_h * out_w
            pad_plane(src, base, out_h, out_w, reach_h - pad_h, reach_w - pad_w, grid_width, padded)
            _add_taps(padded, offsets, flipped[o], length, ext)
        _take_grid(ext, grid_width, height, width, dst, task * height * width)


@jit
def _backward_data_phased(
    dy, weight, pad_h, pad_w, sh, sw, rows, cols, phase_of_tap, shifts, lead, multiplier, dx, lo, hi
):
    """dx: each tap t adds w_t dy, laid on the grid, into its phase (``phase_of_tap[t]``)
    ``shifts[t]`` positions on; the phases are then interleaved back into dx's plane. For the
    (image, channel) pairs [lo, hi)."""
    batch, channels, height, width = dx.shape
    out_channels, out_h, out_w = dy.shape[1], dy.shape[2], dy.shape[3]
    size = rows * cols
    usize = np.uint64(size)
    ext = np.empty(sh * sw * size, dx.dtype)
    on_grid = np.zeros(lead + size, dy.dtype)  # dy at lead + oh cols + ow, zeros elsewhere
    src, dst = dy.reshape(-1), dx.reshape(-1)
    for task in range(lo, hi):
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
        usw = np.uint64(sw)
        for h in range(height):
            a, u = (h + pad_h) % sh, (h + pad_h) // sh
            for b in range(sw):
                first = (b - pad_w) % sw  # the first column w with (w + pad_w) % sw == b
                if first >= width:
                    continue
                count = np.uint64((width - 1 - first) // sw + 1)
                to = np.uint64(plane + h * width + first)
                at = np.uint64(((a * sw + b) * rows + u) * cols + (first + pad_w) // sw)
                for v in range(count):
                    dst[to + v * usw] = ext[at + v]


@jit
def _backward_weight_grid(dy, x, pad_h, pad_w, sh, sw, rows, cols, offsets, multiplier, weight_diff, lo, hi):
    """weight_diff[o, t] += the sum over images and grid positions k of dy[k] x_phase[k + offset_t],
    for the output channels [lo, hi): one vectorized dot product a tap and image (``_dot``,
    float32 within an image), summed over the images in float64."""
    batch, channels, height, width = x.shape
    out_channels, out_h, out_w = dy.shape[1], dy.shape[2], dy.shape[3]
    phases = np.empty(sh * sw * rows * cols, x.dtype)
    length = (out_h - 1) * cols + out_w
    on_grid = np.zeros(length, dy.dtype)  # dy on the grid; the dropped columns stay 0
    taps = offsets.shape[0]
    totals = np.zeros(taps)
    src, grad = x.reshape(-1), dy.reshape(-1)
    for o in range(lo, hi):
        totals[:] = 0
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
                totals[t] += _dot(on_grid, 0, phases, offsets[t], length)
        for t in range(taps):
            weight_diff[o, t] += totals[t]


# -- 3 x 3, stride 1, padding 1: straight from the planes --------------------------------------
DIRECT_MIN_PIXELS = 36  # smaller planes of one output a channel run channels last (faster there)


def runs_direct(shape, kernel, pad, stride, dilation, multiplier):
    """Whether a geometry runs straight from its planes: 3 x 3, padding 1, stride 1, no
    dilation (MobileNet's layers but its downsampling ones), planes of at least 2 x 2 and,
    with one output a channel, of ``DIRECT_MIN_PIXELS``. Forward + both gradients, one core,
    batch 8, 512 channels, against channels last: 6 x 6 0.97x, 5 x 5 1.16x, 4 x 4 1.39x."""
    geometry = tuple(map(tuple, (kernel, pad, stride, dilation)))
    height, width = shape[2:]
    large = height * width >= DIRECT_MIN_PIXELS or multiplier > 1
    return geometry == ((3, 3), (1, 1), (1, 1), (1, 1)) and min(height, width) >= 2 and large


@jit
def _plane_3x3(src, base, height, width, w, bias, dst, out):
    """dst[out + p] = bias + the 3 x 3 correlation of the plane src[base:] (height x width,
    zero outside) with w (9 taps) at pixel p: the output plane has the input's size. The rows
    between the first and the last run as one flat loop over the plane (tap (i, j) reads
    x[k + (i - 1) width + j - 1]); its first and last columns, which that loop reads from the
    neighbouring rows, are written again after it, with the top and bottom rows."""
    one, two = np.uint64(1), np.uint64(2)
    uw = np.uint64(width)
    w0, w1, w2, w3, w4, w5, w6, w7, w8 = w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8]
    ub, uo = np.uint64(base), np.uint64(out)
    up, mid, down = ub - uw - one, ub - one, ub + uw - one  # tap row i starts at x[k + these]
    for k in range(uw + one, np.uint64((height - 1) * width) - one):
        total = bias + w0 * src[up + k] + w1 * src[up + k + one] + w2 * src[up + k + two]
        total += w3 * src[mid + k] + w4 * src[mid + k + one] + w5 * src[mid + k + two]
        total += w6 * src[down + k] + w7 * src[down + k + one] + w8 * src[down + k + two]
        dst[uo + k] = total
    bottom = np.uint64((height - 1) * width)
    for v in range(one, uw - one):  # the top row reads rows 0 and 1, the bottom row the last two
        top_row = ub + v - one
        top = bias + w3 * src[top_row] + w4 * src[top_row + one] + w5 * src[top_row + two]
        top += w6 * src[top_row + uw] + w7 * src[top_row + uw + one] + w8 * src[top_row + uw + two]
        low_row = ub + bottom - uw + v - one
        low = bias + w0 * src[low_row] + w1 * src[low_row + one] + w2 * src[low_row + two]
        low += w3 * src[low_row + uw] + w4 * src[low_row + uw + one] + w5 * src[low_row + uw + two]
        dst[uo + v] = top
        dst[uo + bottom + v] = low
    last = uw - one
    for h in range(height):  # the first and last columns of every row
        row = np.uint64(h * width)
        at = ub + row
        left = bias + w4 * src[at] + w5 * src[at + one]
        right = bias + w3 * src[at + last - one] + w4 * src[at + last]
        if h > 0:
            left += w1 * src[at - uw] + w2 * src[at - uw + one]
            right += w0 * src[at - uw + last - one] + w1 * src[at - uw + last]
        if h < height - 1:
            left += w7 * src[at + uw] + w8 * src[at + uw + one]
            right += w6 * src[at + uw + last - one] + w7 * src[at + uw + last]
        dst[uo + row] = left
        dst[uo + row + last] = right


@jit
def _correlate_3x3(x, weight, bias, multiplier, y, lo, hi):
    """y[n, o] = bias[o] + the 3 x 3 correlation of x[n, o // multiplier] with weight[o], for the
    output planes (n, o) numbered n O + o in [lo, hi)."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    out_channels = y.shape[1]
    size = height * width
    src, dst = x.reshape(-1), y.reshape(-1)
    for task in range(lo, hi):
        n, o = task // out_channels, task % out_channels
        base = (n * channels + o // multiplier) * size
        _plane_3x3(src, base, height, width, weight[o], bias[o], dst, task * size)


@jit
def _backward_data_3x3(dy, flipped, multiplier, dx, lo, hi):
    """dx[n, c] = the sum over c's outputs o of the correlation of dy[n, o] with o's flipped
    filter (zero outside the plane), for the planes (n, c) numbered n C + c in [lo, hi)."""
    channels, height, width = dx.shape[1], dx.shape[2], dx.shape[3]
    out_channels = dy.shape[1]
    size = height * width
    src, dst = dy.reshape(-1), dx.reshape(-1)
    zero = dx.dtype.type(0)
    more = np.empty(size if multiplier > 1 else 0, dx.dtype)  # a second output's share
    usize = np.uint64(size)
    for task in range(lo, hi):
        n, c = task // channels, task % channels
        at = np.uint64(task * size)
        for m in range(multiplier):
            o = c * multiplier + m
            grad_at = (n * out_channels + o) * size
            if m == 0:
                _plane_3x3(src, grad_at, height, width, flipped[o], zero, dst, at)
                continue
            _plane_3x3(src, grad_at, height, width, flipped[o], zero, more, 0)
            for k in range(usize):
                dst[at + k] += more[k]


@sum_jit
def _dot(a, a_at, b, b_at, length):
    """The sum of a[a_at + k] b[b_at + k], k < length, in the arrays' precision (vector partial
    sums: ``sum_jit``)."""
    total = a.dtype.type(0)
    ua, ub = np.uint64(a_at), np.uint64(b_at)
    for k in range(np.uint64(length)):
        total += a[ua + k] * b[ub + k]
    return total


@jit
def _backward_weight_3x3(dy, x, multiplier, weight_diff, lo, hi):
    """weight_diff[o, 3 i + j] += the sum over images and pixels k of dy[n, o, k] x[n, c, k + (i -
    1) W + j - 1] (c = o // multiplier), without the terms whose tap falls outside the plane,
    for the output channels [lo, hi). Each tap is one dot product over the plane (float32 within
    a plane, float64 across images): tap row i = 0 runs over the pixels from the second row,
    i = 2 up to the last; for column j = 0 dy's first column is zeroed in a copy (there the tap
    would read the row before's last pixel), for j = 2 its last."""
    batch, channels, height, width = x.shape
    out_channels = dy.shape[1]
    size = height * width
    src, grad = x.reshape(-1), dy.reshape(-1)
    left = np.empty(size, dy.dtype)  # dy without its first column
    right = np.empty(size, dy.dtype)  # dy without its last column
    totals = np.zeros(9)
    inner = size - width  # the pixels a tap row 0 or 2 meets
    for o in range(lo, hi):
        totals[:] = 0
        for n in range(batch):
            x_at = (n * channels + o // multiplier) * size
            dy_at = (n * out_channels + o) * size
            at = np.uint64(dy_at)
            for k in range(np.uint64(size)):
                left[k] = grad[at + k]
                right[k] = grad[at + k]
            for h in range(height):
                left[h * width] = 0
                right[h * width + width - 1] = 0
            # a run's first or last pixel that would read outside the plane is a zeroed one
            totals[0] += _dot(left, width + 1, src, x_at, inner - 1)
            totals[1] += _dot(grad, dy_at + width, src, x_at, inner)
            totals[2] += _dot(right, width, src, x_at + 1, inner - 1)
            totals[3] += _dot(left, 1, src, x_at, size - 1)
            totals[4] += _dot(grad, dy_at, src, x_at, size)
            totals[5] += _dot(right, 0, src, x_at + 1, size - 1)
            totals[6] += _dot(left, 1, src, x_at + width, inner - 1)
            totals[7] += _dot(grad, dy_at, src, x_at + width, inner)
            totals[8] += _dot(right, 0, src, x_at + width + 1, inner - 1)
        for t in range(9):
            weight_diff[o, t] += totals[t]


# -- 3 x 3, stride 2, padding 1: the data gradient straight into dx ----------------------------
def downsamples_direct(kernel, pad, stride, dilation, multiplier):
    """Whether the data gradient runs straight into dx (below): 3 x 3, padding 1, stride 2, no
    dilation, one output a channel (MobileNet's downsampling layers), at any plane size."""
    return tuple(map(tuple, (kernel, pad, stride, dilation))) == ((3, 3), (1, 1), (2, 2), (1, 1)) and multiplier == 1


@jit
def _backward_data_3x3_s2(dy, weight, dx, lo, hi):
    """dx for the planes (n, c) in [lo, hi). Input pixel (2u + a, 2v + b) is read by the taps
    (i, j) with i = 1 (a = 0), i = 2 at output row u or i = 0 at u + 1 (a = 1), and likewise for
    the columns, so a pair of dx rows is, per column pair v,

        dx[2u, 2v]         = w11 dy[u, v]
        dx[2u, 2v + 1]     = w12 dy[u, v] + w10 dy[u, v + 1]
        dx[2u + 1, 2v]     = w21 dy[u, v] + w01 dy[u + 1, v]
        dx[2u + 1, 2v + 1] = w22 dy[u, v] + w20 dy[u, v + 1] + w02 dy[u + 1, v] + w00 dy[u + 1, v + 1]

    read from a copy of dy with a zero row and column after it, written in one pass (against
    the phased kernel, one core: 64 channels at 112 x 112, batch 4, 1.9 -> 0.45 ms; 256 at 28 x
    28, batch 8, 1.9 -> 0.50 ms; against channels last, 512 at 14 x 14, 0.54 -> 0.47 ms)."""
    channels, height, width = dx.shape[1], dx.shape[2], dx.shape[3]
    out_h, out_w = dy.shape[2], dy.shape[3]
    cols = np.uint64(out_w + 1)
    padded = np.zeros((out_h + 1) * (out_w + 1), dx.dtype)  # its last row and column stay 0
    src, dst = dy.reshape(-1), dx.reshape(-1)
    pairs = np.uint64(width // 2)  # the (even, odd) column pairs of a row
    one, two = np.uint64(1), np.uint64(2)
    for task in range(lo, hi):
        w = weight[task % channels]
        w0, w1, w2, w3, w4, w5, w6, w7, w8 = w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8]
        at = np.uint64(task * out_h * out_w)
        for u in range(out_h):
            row, from_row = np.uint64(u) * cols, at + np.uint64(u * out_w)
            for v in range(np.uint64(out_w)):
                padded[row + v] = src[from_row + v]
        base = np.uint64(task * height * width)
        for u in range(out_h):
            r0 = np.uint64(u) * cols  # dy row u, then row u + 1 (zeros past the last)
            r1 = r0 + cols
            even = base + np.uint64(2 * u * width)
            odd = even + np.uint64(width)
            for v in range(pairs):
                a, b = padded[r0 + v], padded[r0 + v + one]
                dst[even + two * v] = w4 * a
                dst[even + two * v + one] = w5 * a + w3 * b
            if width % 2:
                dst[even + np.uint64(width - 1)] = w4 * padded[r0 + pairs]
            if 2 * u + 1 < height:
                for v in range(pairs):
                    a, b = padded[r0 + v], padded[r0 + v + one]
                    c, d = padded[r1 + v], padded[r1 + v + one]
                    dst[odd + two * v] = w7 * a + w1 * c
                    dst[odd + two * v + one] = w8 * a + w6 * b + w2 * c + w0 * d
                if width % 2:
                    dst[odd + np.uint64(width - 1)] = w7 * padded[r0 + pairs] + w1 * padded[r1 + pairs]


CHANNELS_LAST_MAX_PIXELS = 100  # output planes of at most this many pixels (10 x 10) run channels last
CHANNELS_LAST_BLOCK_BYTES = 1 << 18  # a channel block's input, channels last (at float64)


# -- channels last, for small planes ----------------------------------------------------------
@jit
def _to_channels_last(x, n, c0, count, row, xt):
    """xt[p row + j] = x[n, c0 + j] (a flat plane) at pixel p, j < ``count``: in 16 x 16
    tiles, so that both sides stay in the cache."""
    size = x.shape[2] * x.shape[3]
    src = x.reshape(-1)
    urow = np.uint64(row)
    for j0 in range(0, count, 16):
        j1 = min(j0 + 16, count)
        for p0 in range(0, size, 16):
            p1 = np.uint64(min(p0 + 16, size))
            for j in range(j0, j1):
                at = np.uint64((n * x.shape[1] + c0 + j) * size)
                for p in range(np.uint64(p0), p1):
                    xt[p * urow + np.uint64(j)] = src[at + p]


@jit
def _from_channels_last(xt, row, n, c0, count, x):
    """x[n, c0 + j] (a flat plane) at pixel p = xt[p row + j], j < ``count``."""
    size = x.shape[2] * x.shape[3]
    dst = x.reshape(-1)
    urow = np.uint64(row)
    for j0 in range(0, count, 16):
        j1 = min(j0 + 16, count)
        for p0 in range(0, size, 16):
            p1 = np.uint64(min(p0 + 16, size))
            for j in range(j0, j1):
                to = np.uint64((n * x.shape[1] + c0 + j) * size)
                for p in range(np.uint64(p0), p1):
                    dst[to + p] = xt[p * urow + np.uint64(j)]


@jit
def _row_stride(block):
    """The channels-last row length for ``block`` channels: rounded up to 16 and 16 more, so
    that rows are not a multiple of 4 KiB apart (16 such rows share one set of the cache:
    transposing 1024 channels of 7 x 7 pixels took 2.4 ns an element)."""
    return -(-block // 16) * 16 + 16


def tap_pixels(size, out_size, kernel, pad, stride, dilation):
    """pixels[p, t]: the input pixel (ih W + iw) that tap t of output pixel p reads, or H W
    (a row of zeros after the plane) where it reads the padding."""
    (height, width), (out_h, out_w) = size, out_size
    oh, ow, i, j = np.meshgrid(
        np.arange(out_h), np.arange(out_w), np.arange(kernel[0]), np.arange(kernel[1]), indexing="ij"
    )
    ih = oh * stride[0] - pad[0] + i * dilation[0]
    iw = ow * stride[1] - pad[1] + j * dilation[1]
    inside = (ih >= 0) & (ih < height) & (iw >= 0) & (iw < width)
    pixels = np.where(inside, ih * width + iw, height * width)
    return np.ascontiguousarray(pixels.reshape(out_h * out_w, kernel[0] * kernel[1]), dtype=np.int64)


@jit
def _forward_last(x, wt, bias, pixels, block, tasks_lo, tasks_hi, y):
    """Tasks (image n, channel block b) numbered n * blocks + b in [tasks_lo, tasks_hi); ``wt``
    the weights (taps, C)."""
    channels = x.shape[1]
    blocks = -(-channels // block)
    row = _row_stride(block)
    urow = np.uint64(row)
    xt = np.zeros((x.shape[2] * x.shape[3] + 1) * row, x.dtype)  # the last row stays 0
    yt = np.empty(pixels.shape[0] * row, x.dtype)
    for task in range(tasks_lo, tasks_hi):
        n, c0 = task // blocks, (task % blocks) * block
        count = min(block, channels - c0)
        ucount = np.uint64(count)
        _to_channels_last(x, n, c0, count, row, xt)
        b = bias[c0 : c0 + count]
        for p in range(pixels.shape[0]):
            out = yt[np.uint64(p) * urow :]
            for j in range(ucount):
                out[j] = b[j]
            for t in range(pixels.shape[1]):
                w = wt[t, c0 : c0 + count]
                src = xt[np.uint64(pixels[p, t]) * urow :]
                for j in range(ucount):
                    out[j] += w[j] * src[j]
        _from_channels_last(yt, row, n, c0, count, y)


@jit
def _backward_data_last(dy, wt, pixels, block, tasks_lo, tasks_hi, dx):
    channels = dx.shape[1]
    blocks = -(-channels // block)
    row = _row_stride(block)
    urow = np.uint64(row)
    dxt = np.empty((dx.shape[2] * dx.shape[3] + 1) * row, dx.dtype)  # the last row takes the padding's
    dyt = np.empty(pixels.shape[0] * row, dx.dtype)
    zero = dx.dtype.type(0)
    for task in range(tasks_lo, tasks_hi):
        n, c0 = task // blocks, (task % blocks) * block
        count = min(block, channels - c0)
        ucount = np.uint64(count)
        _to_channels_last(dy, n, c0, count, row, dyt)
        dxt[:] = zero
        for p in range(pixels.shape[0]):
            grad = dyt[np.uint64(p) * urow :]
            for t in range(pixels.shape[1]):
                w = wt[t, c0 : c0 + count]
                into = dxt[np.uint64(pixels[p, t]) * urow :]
                for j in range(ucount):
                    into[j] += w[j] * grad[j]
        _from_channels_last(dxt, row, n, c0, count, dx)


@jit
def _backward_weight_last(dy, x, pixels, block, blocks_lo, blocks_hi, weight_diff):
    """Channel blocks [blocks_lo, blocks_hi), each over every image: per tap and channel the
    products summed over an image's pixels in float32, the images' sums in float64."""
    batch, channels = x.shape[0], x.shape[1]
    taps = pixels.shape[1]
    row = _row_stride(block)
    xt = np.zeros((x.shape[2] * x.shape[3] + 1) * row, x.dtype)  # the last row stays 0
    dyt = np.empty(pixels.shape[0] * row, x.dtype)
    sums = np.empty((taps, block), x.dtype)
    totals = np.empty((taps, block))
    urow = np.uint64(row)
    for b in range(blocks_lo, blocks_hi):
        c0 = b * block
        count = min(block, channels - c0)
        ucount = np.uint64(count)
        totals[:] = 0
        for n in range(batch):
            _to_channels_last(x, n, c0, count, row, xt)
            _to_channels_last(dy, n, c0, count, row, dyt)
            sums[:] = 0
            for p in range(pixels.shape[0]):
                grad = dyt[np.uint64(p) * urow :]
                for t in range(taps):
                    src = xt[np.uint64(pixels[p, t]) * urow :]
                    acc = sums[t]
                    for j in range(ucount):
                        acc[j] += grad[j] * src[j]
            for t in range(taps):
                for j in range(count):
                    totals[t, j] += sums[t, j]
        for t in range(taps):
            for j in range(count):
                weight_diff[c0 + j, t] += totals[t, j]


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
        self.lead = int(self.shifts.max())  # the zeros before dy on the grid: room for the largest shift
        width = shape[3]
        self.flipped_offsets = np.array([a * (width + self.reach[1]) + b for a, b in taps], np.int64)
        self.direct = runs_direct(shape, kernel, pad, stride, dilation, multiplier)
        self.downsampling = downsamples_direct(kernel, pad, stride, dilation, multiplier)
        self.channels_last = (
            not self.direct and multiplier == 1 and out_size[0] * out_size[1] <= CHANNELS_LAST_MAX_PIXELS
        )
        if self.channels_last:
            self.pixels = tap_pixels(shape[2:], out_size, kernel, pad, stride, dilation)
            fit = CHANNELS_LAST_BLOCK_BYTES // ((shape[2] * shape[3] + 1) * np.dtype(np.float64).itemsize)
            self.block = min(shape[1], max(16, fit // 16 * 16))
            self.blocks = -(-shape[1] // self.block)

    def _grid(self):
        return (*self.pad, *self.stride, self.rows, self.cols)

    def forward(self, x, weight, bias, y):
        """y = depthwise(x, weight) + bias; ``weight`` (O, 1, kh, kw), ``bias`` (O,). The
        (image, channel) pairs are shared out over the workers (a batch of 1 on 2 left one idle:
        MobileNet at batch 1, its depthwise layers' forward 1.9 ms on one core)."""
        weight = weight.reshape(-1, self.taps)
        if self.direct:

            def run_planes(lo, hi):
                _correlate_3x3(x, weight, bias, self.multiplier, y, lo, hi)

            parallel.over_slices(run_planes, y.shape[0] * y.shape[1], x.nbytes + y.nbytes)
            return
        if self.channels_last:
            by_tap = np.ascontiguousarray(weight.T)

            def run_blocks(lo, hi):
                _forward_last(x, by_tap, bias, self.pixels, self.block, lo, hi, y)

            parallel.over_slices(run_blocks, x.shape[0] * self.blocks, x.nbytes + y.nbytes)
            return
        settings = (*self._grid(), self.offsets, *self.out_size, self.multiplier)

        def run(lo, hi):
            _forward_grid(x, weight, bias, *settings, y, lo, hi)

        parallel.over_slices(run, x.shape[0] * x.shape[1], x.nbytes + y.nbytes)

    def backward_data(self, dy, weight, dx):
        """dx = the data gradient (written, not added); (image, channel) pairs are shared out."""
        if self.downsampling:
            by_channel = weight.reshape(-1, self.taps)

            def run_downsampling(lo, hi):
                _backward_data_3x3_s2(dy, by_channel, dx, lo, hi)

            parallel.over_slices(run_downsampling, dx.shape[0] * dx.shape[1], dx.nbytes + dy.nbytes)
            return
        if self.direct:
            flipped = np.ascontiguousarray(weight.reshape(-1, self.taps)[:, ::-1])

            def run_planes(lo, hi):
                _backward_data_3x3(dy, flipped, self.multiplier, dx, lo, hi)

            parallel.over_slices(run_planes, dx.shape[0] * dx.shape[1], dx.nbytes + dy.nbytes)
            return
        if self.channels_last:
            by_tap = np.ascontiguousarray(weight.reshape(-1, self.taps).T)

            def run_blocks(lo, hi):
                _backward_data_last(dy, by_tap, self.pixels, self.block, lo, hi, dx)

            parallel.over_slices(run_blocks, dx.shape[0] * self.blocks, dx.nbytes + dy.nbytes)
            return
        if self.unit_stride:
            flipped = np.ascontiguousarray(weight.reshape((-1,) + self.kernel)[:, ::-1, ::-1]).reshape(-1, self.taps)
            settings = (*self.reach, *self.pad, self.flipped_offsets, self.multiplier)

            def run(lo, hi):
                _backward_data_unit_stride(dy, flipped, *settings, dx, lo, hi)

        else:
            weight = weight.reshape(-1, self.taps)
            settings = (*self._grid(), self.phase_of_tap, self.shifts, self.lead, self.multiplier)

            def run(lo, hi):
                _backward_data_phased(dy, weight, *settings, dx, lo, hi)

        parallel.over_slices(run, dx.shape[0] * dx.shape[1], dx.nbytes + dy.nbytes)

    def backward_weight(self, dy, x, weight_diff):
        """weight_diff += the weight gradient; output channels are shared out (each sums over
        every image, so the result does not depend on the worker count)."""
        weight_diff = weight_diff.reshape(-1, self.taps)
        if self.direct:

            def run_channels(lo, hi):
                _backward_weight_3x3(dy, x, self.multiplier, weight_diff, lo, hi)

            parallel.over_slices(run_channels, dy.shape[1], x.nbytes + dy.nbytes)
            return
        if self.channels_last:

            def run_blocks(lo, hi):
                _backward_weight_last(dy, x, self.pixels, self.block, lo, hi, weight_diff)

            parallel.over_slices(run_blocks, self.blocks, x.nbytes + dy.nbytes)
            return
        settings = (*self._grid(), self.offsets, self.multiplier)

        def run(lo, hi):
            _backward_weight_grid(dy, x, *settings, weight_diff, lo, hi)

        parallel.over_slices(run, dy.shape[1], x.nbytes + dy.nbytes)
