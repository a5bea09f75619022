"""Strided Deconvolution's column steps by output phases: col2im as a gather, im2col from
de-interleaved rows.

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
``applies`` (rule and measurements below): the phase kernels' runs are input rows, and only rows
of 32 or more vectorize well enough to pay.
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
    for q in range(np.uint64(lanes.size)):
        lanes[q] = zero
    for n in range(images):
        for c in range(channels):
            s = np.uint64((n * channels + c) * out_h * out_w)
            phase = np.uint64(rows) * uspan
            for oy in range(out_h):
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


class PhaseChunks(ColumnChunks):
    """``ColumnChunks`` of a Deconvolution (image side: its top) whose im2col and col2im are
    the phase kernels: ``columns`` from :func:`phase_im2col` (whole chunks and bands), and
    ``image_from_map(worker, weight, matrix, image, piece, bias)`` writing the chunk whole with
    the bias (bands keep ColumnChunks' col2im, which adds them up, and add the bias after the
    last one)."""

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
        np.matmul(w_t, self._grouped(matrix, self.map_channels), out=self._grouped(out, self.rows))
        bias = self.zeros[: self.image_channels] if bias is None else bias
        geometry = (self.kernel, self.pad, self.stride, self.dilation, self.map_shape, self.layout)
        phase_col2im(out, *geometry, bias, image[piece.first : piece.stop], self._phase_buffer(worker))


# Where it runs (``applies``): the Deconvolution layer, forward + backward against the generic
# im2col / col2im, 2 workers, float32, per-round median of 60 rounds side by side (min in ms),
# kernel 4, stride 2, pad 1, batch 16 unless said: 32 -> 16 ch at 32 x 32 1.18x (9.12 -> 7.68),
# 16 -> 16 at 32 x 32 1.18x (8.02 -> 7.18), 32 -> 16 at 32 x 32 batch 8 1.15x (5.03 -> 4.28),
# 64 -> 16 at 32 x 32 1.15x; other runs of these 1.10x-1.22x. The machine was shared: the same
# code on both sides measured 0.88x-1.06x. Not: 16 x 16 inputs (64 -> 32, the bench net's,
# 1.04x-1.06x; 21 -> 21 pad 0 1.00x-1.07x; rows of 16 are too short for the vector loops),
# kernel 3 stride 2 (32 -> 16 at 32 x 32 1.00x; 64 -> 32 at 16 x 16 1.00x-1.07x: fewer
# overlapping taps), kernel == stride (2x2 stride 2, 128 -> 64 at 16 x 16: phase col2im 1.2x-1.4x
# and phase im2col 1.7x-1.9x slower than the generic kernels), images cut into bands of rows
# (more than COLUMN_CHUNK_BYTES of columns an image, where the forward keeps the generic col2im:
# 64 -> 32 at 32 x 32 batch 8 0.99x-1.02x, 21 -> 21 pad 0 at 32 x 32 batch 4 0.92x-0.98x).
MIN_WIDTH = 32


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
