"""Strided Deconvolution by output phases: as a stride-1 Convolution and a pixel shuffle
(``Subpixel``, at the end of this module), or with its column steps by phases (col2im as a
gather, im2col from de-interleaved rows: below).

A Deconvolution runs as GEMM + col2im (forward) and im2col + GEMM (backward), with the image
side its top y (N, O, OH, OW) and the map side its bottom x (N, C, H, W) (see ``conv_gemm``);
its columns are col[(o, u, v), n, (i, j)] <-> y[n, o, s_h i - p_h + u d_h, s_w j - p_w + v d_w].
With a stride s_w > 1 the generic kernels read or add every s_w-th entry of a row, which does
not vectorize. Here each output row is split into its s_w column phases r (columns X = s_w t + r):
tap v lands in phase r_v = (v d_w - p_w) mod s_w at t = j + q_v, q_v = (v d_w - p_w - r_v) / s_w,
a contiguous run with a shift. So

- ``phase_col2im`` (forward): for each (n, o) plane, every tap's input rows are added into a
  padded phase buffer of the plane (contiguous runs, no clipping), which is then written into
  y once, a strided run a phase, with the bias: no read-modify-write scattered over y and no
  separate bias pass. Each output adds its taps in increasing (u, v) order from 0 and then the
  bias, as col2im + add_bias do: the results are bit for bit theirs.
- ``phase_im2col`` (backward): each (n, o) plane is de-interleaved once into its s_w phases, and
  every column row is then a contiguous copy (zeros outside the image): a copy of the same
  values as ``im2col``.

``PhaseChunks`` is ``conv_gemm.ColumnChunks`` with these two steps; the products, chunks, bands
and weight-gradient sums are ColumnChunks' own. The Deconvolution layer takes it where
``applies`` (rule and measurements below): the phase kernels' runs are input rows, from 8
pixels on. A strided Convolution is the same pair of steps with
the image side its bottom (im2col forward, im2col and col2im backward): it takes them where
``convolution_applies`` (below).
"""

import numpy as np

from .. import parallel
from . import conv_gemm
from . import im2col as conv_kernels
from ._jit import jit
from .conv_gemm import ColumnChunks


class PhaseLayout:
    """The phase buffer of one output plane (OH x OW, stride s_w, pad p_h): s_w phases, each
    of ``rows`` = OH + 2 p_h rows (output row Y at Y + p_h) and ``span`` columns (phase column t
    at t + ``offset``), wide enough that every tap of every input pixel lands inside it, so the
    kernels' copies and adds need no clipping. ``table[v]`` = (phase r_v, q_v + offset)."""

    def __init__(self, kernel, pad, stride, dilation, in_size, out_size):
        kw, sw, pw, dw = kernel[1], stride[1], pad[1], dilation[1]
        offsets = [v * dw - pw for v in range(kw)]
        phases = [off % sw for off in offsets]
        shifts = [(off - r) // sw for off, r in zip(offsets, phases)]
        self.offset = max(0, -min(shifts))
        self.span = max(in_size[1] + max(shifts) + self.offset, -(-out_size[1] // sw) + self.offset)
        self.rows = out_size[0] + 2 * pad[0]
        self.size = sw * self.rows * self.span
        self.table = np.array([(r, q + self.offset) for r, q in zip(phases, shifts)], np.int64).reshape(kw, 2)


@jit
def _phase_col2im(col, kh, kw, sh, sw, ph, dh, in_h, in_w, table, rows, span, offset, bias, y, acc):
    images, outputs, out_h, out_w = y.shape
    plane = in_h * in_w
    src = col.reshape(-1)
    dst = y.reshape(-1)
    zero = y.dtype.type(0)
    uw, usw, uspan = np.uint64(in_w), np.uint64(sw), np.uint64(span)
    row_step = np.uint64(sh * span)
    for n in range(images):
        for o in range(outputs):
            for q in range(np.uint64(acc.size)):
                acc[q] = zero
            for u in range(kh):
                for v in range(kw):
                    s = np.uint64((((o * kh + u) * kw + v) * images + n) * plane)
                    a = np.uint64((table[v, 0] * rows + u * dh) * span + table[v, 1])
                    for _i in range(in_h):
                        for q in range(uw):
                            acc[a + q] += src[s + q]
                        s += uw
                        a += row_step
            b = bias[o]
            d = np.uint64((n * outputs + o) * out_h * out_w)
            phase = np.uint64(rows) * uspan
            for oy in range(out_h):
                line = np.uint64((oy + ph) * span + offset)
                for r in range(min(sw, out_w)):  # one strided run a phase (measured 2x faster than interleaving)
                    a = line + np.uint64(r) * phase
                    dr = d + np.uint64(r)
                    for t in range(np.uint64((out_w - r + sw - 1) // sw)):
                        dst[dr + t * usw] = acc[a + t] + b
                d += np.uint64(out_w)


@jit
def _phase_im2col(image, kh, kw, sh, sw, ph, dh, in_w, table, rows, span, offset, col, top, band, lanes):
    images, channels, out_h, out_w = image.shape
    plane = band * in_w
    src = image.reshape(-1)
    dst = col.reshape(-1)
    zero = image.dtype.type(0)
    uw, usw, uspan = np.uint64(in_w), np.uint64(sw), np.uint64(span)
    row_step = np.uint64(sh * span)
    phase = np.uint64(rows) * uspan
    # the band reads padded rows [first, last] of each phase: only those are zeroed and filled
    first, last = top * sh, (top + band - 1) * sh + (kh - 1) * dh
    for r in range(sw):
        for q in range(np.uint64(first) * uspan, np.uint64(last + 1) * uspan):
            lanes[np.uint64(r) * phase + q] = zero
    y0, y1 = max(0, first - ph), min(out_h, last + 1 - ph)
    for n in range(images):
        for c in range(channels):
            s = np.uint64(((n * channels + c) * out_h + y0) * out_w)
            for oy in range(y0, y1):
                line = np.uint64((oy + ph) * span + offset)
                for r in range(min(sw, out_w)):
                    a = line + np.uint64(r) * phase
                    sr = s + np.uint64(r)
                    for t in range(np.uint64((out_w - r + sw - 1) // sw)):
                        lanes[a + t] = src[sr + t * usw]
                s += np.uint64(out_w)
            for u in range(kh):
                for v in range(kw):
                    d = np.uint64((((c * kh + u) * kw + v) * images + n) * plane)
                    a = np.uint64((table[v, 0] * rows + top * sh + u * dh) * span + table[v, 1])
                    for _i in range(band):
                        for q in range(uw):
                            dst[d + q] = lanes[a + q]
                        d += uw
                        a += row_step


def _check(col, rows, images, pixels, image, what):
    if col.size != rows * images * pixels or not (col.flags.c_contiguous and image.flags.c_contiguous):
        raise ValueError(
            f"{what}: columns of size {col.size} do not fit {rows} x {images} x {pixels} for {image.shape}"
        )


def phase_col2im(col, kernel, pad, stride, dilation, in_size, layout, bias, y, acc):
    """y = col2im of channel-major columns ``col`` (K, n, H W) into y (n, O, OH, OW), plus
    bias[o], written whole; ``layout``: the geometry's :class:`PhaseLayout`, ``acc`` a scratch
    vector of at least ``layout.size`` items."""
    images, outputs = y.shape[:2]
    _check(col, outputs * kernel[0] * kernel[1], images, in_size[0] * in_size[1], y, "phase_col2im")
    if acc.size < layout.size or bias.shape != (outputs,):
        raise ValueError("phase_col2im: buffer or bias too small")
    _phase_col2im(
        col,
        kernel[0],
        kernel[1],
        stride[0],
        stride[1],
        pad[0],
        dilation[0],
        in_size[0],
        in_size[1],
        layout.table,
        layout.rows,
        layout.span,
        layout.offset,
        bias,
        y,
        acc[: layout.size],
    )
    return y


def phase_im2col(image, kernel, pad, stride, dilation, in_size, layout, col, lanes, top=0, rows=None):
    """Channel-major columns (K, n, rows W) of ``image`` (n, O, OH, OW) for input rows
    [top, top + rows) (all by default), equal to what ``im2col`` / ``im2col_band`` give;
    ``lanes``: a scratch vector of at least ``layout.size`` items."""
    rows = in_size[0] - top if rows is None else rows
    images, channels = image.shape[:2]
    _check(col, channels * kernel[0] * kernel[1], images, rows * in_size[1], image, "phase_im2col")
    if lanes.size < layout.size:
        raise ValueError("phase_im2col: buffer too small")
    _phase_im2col(
        image,
        kernel[0],
        kernel[1],
        stride[0],
        stride[1],
        pad[0],
        dilation[0],
        in_size[1],
        layout.table,
        layout.rows,
        layout.span,
        layout.offset,
        col,
        top,
        rows,
        lanes[: layout.size],
    )
    return col


# A Convolution with a horizontal stride of 2 and a kernel of 3 or more a side takes the phase
# steps too (``convolution_applies``): its im2col reads every other entry of a row, per tap and
# output row; here each row is de-interleaved once. The same bits (forward, data and weight
# gradients). Forward + backward of one layer against the generic kernels, 2 workers, float32,
# medians of 9 paired rounds, input -> output channels at input size, batch, kernel: 16 -> 32
# at 32, 32, 3x3 0.88x-0.89x; 32 -> 64 at 16, 32, 3x3 0.89x; 64 -> 128 at 16, 32, 3x3 0.95x;
# 64 -> 128 at 56, 8, 3x3 0.94x; 32 -> 64 at 32, 32, 3x3 0.86x; 128 -> 128 at 28, 16, 3x3 0.97x;
# 64 -> 64 at 56, 8, 3x3 pad 0 0.90x; 32 -> 64 at 32, 16, 5x5 0.85x; ResNet-50's stem (3 -> 64
# at 112, 8, 7x7, no data gradient) 0.86x. Not: 1x1 kernels (64 -> 128 at 28, batch 8 1.32x;
# 256 -> 512 0.99x: nothing to share between taps), AlexNet's 11x11 stride 4 (1.02x).
CONVOLUTION_MIN_KERNEL = 3


def convolution_applies(kernel, stride):
    """Whether a Convolution runs its column steps by phases: a horizontal stride of 2 and a
    kernel at least ``CONVOLUTION_MIN_KERNEL`` wide (see above)."""
    return stride[1] == 2 and kernel[1] >= CONVOLUTION_MIN_KERNEL


class PhaseChunks(ColumnChunks):
    """``ColumnChunks`` of a Deconvolution (image side: its top) or of a strided Convolution
    (image side: its bottom) whose im2col and col2im are the phase kernels: ``columns`` from
    :func:`phase_im2col` (whole chunks and bands), and ``image_from_map(worker, weight, matrix,
    image, piece, bias)`` writing the chunk whole with the bias (bands keep ColumnChunks'
    col2im, which adds them up, and add the bias after the last one)."""

    def __init__(self, **geometry):
        super().__init__(**geometry)
        self.layout = PhaseLayout(
            self.kernel, self.pad, self.stride, self.dilation, self.map_shape, self.image_shape[2:]
        )

    def _phase_buffer(self, worker):
        return parallel.scratch(worker, "deconv_phases", self.layout.size, self.dtype)

    def columns(self, worker, image, piece):
        col = self.column_buffer(worker, piece)
        top = piece.pixels.start // self.map_shape[1]
        rows = (piece.pixels.stop - piece.pixels.start) // self.map_shape[1]
        geometry = (self.kernel, self.pad, self.stride, self.dilation, self.map_shape, self.layout)
        phase_im2col(image[piece.first : piece.stop], *geometry, col, self._phase_buffer(worker), top, rows)
        return col

    def image_from_map(self, worker, weight, matrix, image, piece, bias=None):
        if self.bands is not None:
            super().image_from_map(worker, weight, matrix, image, piece)
            if bias is not None and self.last_band(piece):
                conv_kernels.add_bias(
                    image[piece.first : piece.stop].reshape(piece.images, self.image_channels, -1), bias
                )
            return
        out = self.column_buffer(worker, piece)
        w_t = weight.reshape(self.groups, self.map_group, self.row_group).transpose(0, 2, 1)
        self._matmul(w_t, self._grouped(matrix, self.map_channels), self._grouped(out, self.rows))
        bias = self.zeros[: self.image_channels] if bias is None else bias
        geometry = (self.kernel, self.pad, self.stride, self.dilation, self.map_shape, self.layout)
        phase_col2im(out, *geometry, bias, image[piece.first : piece.stop], self._phase_buffer(worker))


# Where it runs (``applies``): the Deconvolution layer, forward + backward against the generic
# im2col / col2im, 2 workers, float32, per-round median of 60 rounds side by side (min in ms),
# kernel 4, stride 2, pad 1, batch 16 unless said: 32 -> 16 ch at 32 x 32 1.18x (9.12 -> 7.68),
# 16 -> 16 at 32 x 32 1.18x (8.02 -> 7.18), 32 -> 16 at 32 x 32 batch 8 1.15x (5.03 -> 4.28),
# 64 -> 16 at 32 x 32 1.15x; other runs of these 1.10x-1.22x. The machine was shared: the same
# code on both sides measured 0.88x-1.06x. Narrower inputs, measured again on 2026-12-04 (time
# with phases / time without, medians of 9 paired rounds, batch 16 unless said): 64 -> 32 at
# 16 x 16 (the bench net's) 0.89x-0.91x, as a first layer 0.88x-0.89x; 32 -> 16 at 16 0.89x;
# 64 -> 64 at 16, batch 8 0.91x; DCGAN's 128 -> 64 at 16 0.93x and 256 -> 128 at 8 0.96x;
# 128 -> 64 at 12 0.96x; 128 -> 128 at 8, batch 32 0.93x; 256 -> 256 at 8, batch 8 0.98x;
# 512 -> 256 at 4 1.00x (rows of 4: left to the generic kernels). (An earlier session measured
# the 16 x 16 ones at 0.94x-0.96x and kept them out.) Not: kernel 3 stride 2 (32 -> 16 at
# 32 x 32 1.00x; 64 -> 32 at 16 x 16 1.00x-1.07x: fewer overlapping taps), kernel == stride
# (2x2 stride 2, 128 -> 64 at 16 x 16: phase col2im 1.2x-1.4x and phase im2col 1.7x-1.9x
# slower than the generic kernels), images cut into bands of rows (more than
# COLUMN_CHUNK_BYTES of columns an image, where the forward keeps the generic col2im: 64 -> 32
# at 32 x 32 batch 8 0.99x-1.02x, 21 -> 21 pad 0 at 32 x 32 batch 4 0.92x-0.98x).
MIN_WIDTH = 8


def applies(kernel, stride, in_width, image_column_bytes):
    """Whether a Deconvolution runs its column steps by phases: a horizontal stride of 2 or
    more, a kernel at least twice as wide (each output column gets 2 or more taps), input rows
    of at least ``MIN_WIDTH`` pixels, and one image's columns (O kh kw H W items) within
    ``conv_gemm.COLUMN_CHUNK_BYTES`` (no bands)."""
    return (
        stride[1] >= 2
        and kernel[1] >= 2 * stride[1]
        and in_width >= MIN_WIDTH
        and image_column_bytes <= conv_gemm.COLUMN_CHUNK_BYTES
    )


# -- Deconvolution as a stride-1 Convolution over the input (sub-pixel) -----------------------
#
# Along one axis (kernel k, stride s, pad p, dilation 1) output X = s j - p + v takes input j
# through tap v. Split the outputs into their s phases r (X = s t + r): phase r receives the taps
# v = r' + s m (r' = (r + p) mod s, m = 0, 1, ...) from inputs j = t + c_r - m
# (c_r = floor((r + p) / s)). When s divides k every phase has A = k / s taps, so phase r is a
# plain correlation of the input with A taps: over the input padded by P, window position
# T = t + e_r (e_r = c_r - A + 1 + P) covers inputs T - P + a, a < A, and window entry a is the
# tap v = r' + s (A - 1 - a). All s phases (s_h s_w in 2-D) share the window positions, so the
# Deconvolution is ONE stride-1 Convolution of the input with s_h s_w O outputs (one weight set
# a phase, taken from W: no zero taps, the same multiplications), followed by a "pixel shuffle"
# that interleaves the phases into the output (y[s t + r] = z[phase r][t + e_r]). The
# Convolution then runs with whatever it runs best (im2col products with stride 1, Winograd,
# 1x1 products); no col2im scatter is needed.


def _axis_plan(kernel, stride, pad, size, out_size):
    """(A, P, T, offsets e_r, taps[r, a]) of one axis (see above); T: the window positions."""
    window = kernel // stride
    remainders = [(r + pad) % stride for r in range(stride)]
    carries = [(r + pad) // stride for r in range(stride)]
    counts = [max(0, -(-(out_size - r) // stride)) for r in range(stride)]  # outputs of phase r
    pad_inner = max(0, *(window - 1 - c for c in carries), *(n + c - size for n, c in zip(counts, carries)))
    offsets = np.array([c - window + 1 + pad_inner for c in carries], np.int64)
    positions = size + 2 * pad_inner - window + 1
    taps = np.array([[rr + stride * (window - 1 - a) for a in range(window)] for rr in remainders], np.int64)
    return window, pad_inner, positions, offsets, taps


# Where it runs (``subpixel_applies``): the layer's forward + backward (with the data gradient)
# against the other forms (GEMM + col2im, or the phase kernels above), 2 workers, float32,
# per-round medians of 8-10 paired rounds, batch, channels in -> out, input -> output side,
# kernel / stride: faster on large outputs: 4, 64 -> 64, 64 -> 128, 4/2 0.85x; 2, 32 -> 16,
# 128 -> 256, 4/2 0.81x; 8, 64 -> 32, 48 -> 96, 4/2 0.97x; 8, 64 -> 32, 32 -> 128, 8/4 0.95x;
# FCN's upsampling 4, 21 -> 21, 16 -> 128, 16/8 0.78x; 2, 64 -> 64, 32 -> 256, 16/8 0.67x.
# Slower on small ones, where the window positions' extra row and column (17 x 17 for 16 x 16)
# and the shuffles outweigh col2im: 16, 64 -> 32, 16 -> 32, 4/2 (the bench net) 1.11x; DCGAN's
# generator at batch 16: 512 -> 256, 4 -> 8 2.0x, 256 -> 128, 8 -> 16 1.34x, 128 -> 64,
# 16 -> 32 1.11x; 8, 64 -> 32, 32 -> 64 1.04x; 8, 64 -> 32, 16 -> 64, 8/4 1.12x; and with few
# outputs, whose Convolution products are thin: 64 -> 3, 32 -> 64 1.93x, 64 -> 128 1.73x.
SUBPIXEL_MIN_OUTPUT_PIXELS = 96 * 96
SUBPIXEL_MIN_OUTPUTS = 16  # a group's
# A stride-1 Deconvolution is a Convolution with the flipped filter (one phase, no shuffle to
# speak of): it runs as one on planes of any size up to SUBPIXEL_STRIDE1_MAX_CHANNELS a group, in
# and out. Paired rounds against GEMM + col2im, forward + backward (2026-12-05), batch,
# channels in -> out at a side, 3x3 pad 1 unless said: 4, 16 -> 192 at 17, 7x7 pad 3 0.30x; 8,
# 64 -> 64 at 28 0.64x; 2, 256 -> 256 at 56 0.48x; 8, 128 -> 64 at 28, 5x5 0.53x; 8, 256 -> 128
# at 14 0.89x-0.90x; 1, 64 -> 64 at 112 0.98x. Not with 512: 2, 512 -> 512 at 14 1.14x-1.26x; 4
# at 7 1.42x-1.66x; 16 at 7 1.13x-1.22x; 1 at 28 1.14x (2 at 28 0.70x).
SUBPIXEL_STRIDE1_MAX_CHANNELS = 256


def subpixel_applies(kernel, stride, dilation, out_size, group_channels, group_outputs):
    """Whether a Deconvolution runs as a stride-1 Convolution and a pixel shuffle: dilation 1,
    each kernel side a multiple of its stride (every phase gets the same taps), at least
    ``SUBPIXEL_MIN_OUTPUTS`` outputs a group, and an output plane of at least
    ``SUBPIXEL_MIN_OUTPUT_PIXELS`` or stride 1 with at most ``SUBPIXEL_STRIDE1_MAX_CHANNELS``
    inputs and outputs a group (see the measurements above)."""
    stride1 = stride == (1, 1) and max(group_channels, group_outputs) <= SUBPIXEL_STRIDE1_MAX_CHANNELS
    return (
        dilation == (1, 1)
        and kernel[0] % stride[0] == 0
        and kernel[1] % stride[1] == 0
        and (out_size[0] * out_size[1] >= SUBPIXEL_MIN_OUTPUT_PIXELS or stride1)
        and group_outputs >= SUBPIXEL_MIN_OUTPUTS
    )


class Subpixel:
    """The stride-1 Convolution that computes a Deconvolution's phases (see above):
    ``kernel``, ``pad``, ``outputs`` (s_h s_w O) and ``size`` (its output plane: the window
    positions) of that Convolution. Each entry of the Convolution's weight (s_h s_w O, C / g,
    A_h, A_w), whose outputs are ordered (group, phase row, phase column, output of the group),
    is one entry of the Deconvolution's (C, O / g, kh, kw) (``taps_h``, ``taps_w``): a
    permutation (``_permute_phase_weights``), so the weight gradient goes back by its inverse."""

    def __init__(self, kernel, stride, pad, size, out_size, channels, outputs, groups):
        (ah, ph, th, self.offsets_h, taps_h), (aw, pw, tw, self.offsets_w, taps_w) = (
            _axis_plan(*axis) for axis in zip(kernel, stride, pad, size, out_size)
        )
        self.stride, self.groups = stride, groups
        self.kernel, self.pad, self.size = (ah, aw), (ph, pw), (th, tw)
        self.outputs = stride[0] * stride[1] * outputs
        self.taps_h, self.taps_w = taps_h, taps_w

    def weights(self, weight, out):
        """The Convolution's weight (``out``) from the Deconvolution's."""
        _gather_phase_weights(weight, self.taps_h, self.taps_w, self.groups, out)

    def add_weight_grad(self, inner_diff, weight_diff):
        """weight_diff += the Convolution's weight gradient, put back in the Deconvolution's
        layout."""
        _add_phase_weight_grad(inner_diff, self.taps_h, self.taps_w, self.groups, weight_diff)

    def shuffle(self, z, bias, y):
        """y (N, O, OH, OW) = the phases z (N, s_h s_w O, T_h, T_w) interleaved, plus bias[o]."""
        args = (self.stride[0], self.stride[1], self.offsets_h, self.offsets_w, self.groups, bias)
        parallel.over_slices(lambda lo, hi: _shuffle(z[lo:hi], *args, y[lo:hi]), len(y), 2 * y.nbytes)

    def unshuffle(self, dy, dz):
        """dz (N, s_h s_w O, T_h, T_w) = the phases of dy (N, O, OH, OW) (0 where a window
        position has no output): the shuffle's transpose."""
        args = (self.stride[0], self.stride[1], self.offsets_h, self.offsets_w, self.groups)
        parallel.over_slices(lambda lo, hi: _unshuffle(dy[lo:hi], *args, dz[lo:hi]), len(dz), 2 * dz.nbytes)


# The weight permutation runs as loops over the two layouts: entry (g, r_y, r_x, o, c, a, b) of
# the Convolution's weight is entry (g C/g + c, o, taps_h[r_y, a], taps_w[r_x, b]) of the
# Deconvolution's. It replaced numpy's ``take`` with two int64 index arrays (twice the weight's
# bytes each, kept per layer) and a weight-sized scratch: 512 -> 512 3x3 (2.4 M entries), one
# core, 4.6 -> 2.5-2.9 ms a direction, and 47 MiB less memory for that layer.
@jit
def _gather_phase_weights(weight, taps_h, taps_w, groups, out):
    _permute_phase_weights(weight, taps_h, taps_w, groups, out, False)


@jit
def _add_phase_weight_grad(inner, taps_h, taps_w, groups, weight_diff):
    _permute_phase_weights(weight_diff, taps_h, taps_w, groups, inner, True)


@jit
def _permute_phase_weights(weight, taps_h, taps_w, groups, inner, back):
    """inner[g, r_y, r_x, o, c, a, b] = weight[g C/g + c, o, taps_h[r_y, a], taps_w[r_x, b]], or
    with ``back`` weight[...] += inner[...]. In blocks of 16 x 16 (o, c) pairs: both sides stay
    in the cache (the pairs' rows are C/g kernels apart on one side, O/g on the other)."""
    channels, og, kh, kw = weight.shape
    cg = channels // groups
    (sh, ah), (sw, aw) = taps_h.shape, taps_w.shape
    deconv, conv = weight.reshape(-1), inner.reshape(-1)
    taps = ah * aw
    offsets = np.empty(taps, np.uint64)  # a phase's taps in a Deconvolution kernel
    for g in range(groups):
        for ry in range(sh):
            for rx in range(sw):
                for a in range(ah):
                    for b in range(aw):
                        offsets[a * aw + b] = taps_h[ry, a] * kw + taps_w[rx, b]
                phase = ((g * sh + ry) * sw + rx) * og
                for o0 in range(0, og, 16):
                    for c0 in range(0, cg, 16):
                        for o in range(o0, min(o0 + 16, og)):
                            for c in range(c0, min(c0 + 16, cg)):
                                at = np.uint64(((phase + o) * cg + c) * taps)
                                base = np.uint64(((g * cg + c) * og + o) * kh * kw)
                                if back:
                                    for t in range(np.uint64(taps)):
                                        deconv[base + offsets[t]] += conv[at + t]
                                else:
                                    for t in range(np.uint64(taps)):
                                        conv[at + t] = deconv[base + offsets[t]]


# The shuffles index flat arrays with unsigned integers (the loops then vectorize, as in the
# phase kernels above) and run a stride of 2 as two interleaved streams (the output width
# s (W - 1) + k - 2 p is then even): the bench net's
# 64 -> 32 at 16 -> 32 px, batch 16, one thread: 0.17 ms, against 0.41 ms as two strided runs
# and 0.73-1.2 ms with signed indices.
@jit
def _shuffle(z, sh, sw, offsets_h, offsets_w, groups, bias, y):
    images, outputs, out_h, out_w = y.shape
    planes, rows, cols = z.shape[1:]
    og = outputs // groups
    src, dst = z.reshape(-1), y.reshape(-1)
    usw, one, pairs = np.uint64(sw), np.uint64(1), np.uint64(out_w // 2)
    for n in range(images):
        for o in range(outputs):
            g, ol = o // og, o % og
            b = bias[o]
            for oy in range(out_h):
                ry = oy % sh
                row = oy // sh + offsets_h[ry]
                d = np.uint64(((n * outputs + o) * out_h + oy) * out_w)
                first = ((g * sh + ry) * sw) * og + ol  # the plane of phase (ry, 0)
                if sw == 2:
                    s0 = np.uint64(((n * planes + first) * rows + row) * cols + offsets_w[0])
                    s1 = np.uint64(((n * planes + first + og) * rows + row) * cols + offsets_w[1])
                    for u in range(pairs):
                        dst[d + usw * u] = src[s0 + u] + b
                        dst[d + usw * u + one] = src[s1 + u] + b
                    continue
                for rx in range(min(sw, out_w)):
                    s = np.uint64(((n * planes + first + rx * og) * rows + row) * cols + offsets_w[rx])
                    dr = d + np.uint64(rx)
                    for u in range(np.uint64((out_w - rx + sw - 1) // sw)):
                        dst[dr + usw * u] = src[s + u] + b


@jit
def _unshuffle(dy, sh, sw, offsets_h, offsets_w, groups, dz):
    images, outputs, out_h, out_w = dy.shape
    planes, rows, cols = dz.shape[1:]
    og = outputs // groups
    src, dst = dy.reshape(-1), dz.reshape(-1)
    zero = dz.dtype.type(0)
    usw, one, pairs = np.uint64(sw), np.uint64(1), np.uint64(out_w // 2)
    for n in range(images):
        for o in range(outputs):
            g, ol = o // og, o % og
            for ry in range(sh):  # zeros where no output lands: rows outside the phase, margins
                count_h = (out_h - ry + sh - 1) // sh
                for rx in range(sw):
                    count_w = (out_w - rx + sw - 1) // sw
                    base = ((n * planes + ((g * sh + ry) * sw + rx) * og + ol) * rows) * cols
                    for row in range(rows):
                        if offsets_h[ry] <= row < offsets_h[ry] + count_h:
                            for q in range(offsets_w[rx]):
                                dst[base + row * cols + q] = zero
                            for q in range(offsets_w[rx] + count_w, cols):
                                dst[base + row * cols + q] = zero
                        else:
                            for q in range(cols):
                                dst[base + row * cols + q] = zero
            for oy in range(out_h):
                ry = oy % sh
                row = oy // sh + offsets_h[ry]
                s = np.uint64(((n * outputs + o) * out_h + oy) * out_w)
                first = ((g * sh + ry) * sw) * og + ol
                if sw == 2:
                    d0 = np.uint64(((n * planes + first) * rows + row) * cols + offsets_w[0])
                    d1 = np.uint64(((n * planes + first + og) * rows + row) * cols + offsets_w[1])
                    for u in range(pairs):
                        dst[d0 + u] = src[s + usw * u]
                        dst[d1 + u] = src[s + usw * u + one]
                    continue
                for rx in range(min(sw, out_w)):
                    d = np.uint64(((n * planes + first + rx * og) * rows + row) * cols + offsets_w[rx])
                    sr = s + np.uint64(rx)
                    for u in range(np.uint64((out_w - rx + sw - 1) // sw)):
                        dst[d + u] = src[sr + usw * u]
