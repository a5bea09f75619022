"""Winograd F(4x4, 3x3): 3x3, stride-1 convolutions with 36 multiplications per 4x4 output
tile (2.25 an output, against 4 for F(2x2, 3x3) in ``winograd`` and 9 for direct convolution;
Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2016, points 0, 1, -1, 2,
-2 and infinity).

For one input channel, a 6x6 input patch d (rows 4i - pad.., columns 4j - pad.., 0 outside the
image) and a 3x3 filter g give the 4x4 output tile at (4i, 4j) as

    Y = A^T [(G g G^T) * (B^T d B)] A        (* element-wise, over 6x6 = 36 positions)

with B^T, G, A^T as in ``BT``, ``G``, ``AT`` below. As in ``winograd``, the element-wise products
summed over channels are 36 matrix products M[xi] = U[xi] V[xi] (U: outputs x channels, V:
channels x tiles), and the backward pass runs the adjoints: dM = A dY A^T, dU[xi] =
dM[xi] V[xi]^T (then dg = G^T dU G), dV[xi] = U[xi]^T dM[xi] (then dx = B dV B^T, the 6x6
patches of neighbouring tiles overlapping by two rows and columns).

Layout: V and M are (36, rows) arrays, 6a + b the position in the tile; a channel's tiles are
numbered n T + i tw + j (image n of a run, T the tiles of a band, no unused tiles), channels one
after another. The transforms take a block of channels (``BLOCK_TILES`` tiles in all) at a time:
the 36 values of every tile's patch are gathered into 36 planes (the only scalar loop), then
the column and the row transform each run as 36 unit-stride loops over the whole block (long
loops vectorize; a tile row has only 4 to 16 tiles). Bands of tile rows and runs of images as in
``winograd``, bounded by ``winograd.BAND_BYTES`` and ``winograd.RUN_TILES``; the scratch names
are ``winograd``'s, so both share the process's convolution buffers.

Rounding: B^T and A^T have entries up to 5 and 8, so float32 results differ from the exact
convolution by about 1e-5 of the output's scale (F(2x2): 6e-7). Measured largest errors over
He-scaled layers, relative to the largest value: outputs 6.6e-6 (64 channels), 9.0e-6 (128),
1.1e-5 to 1.7e-5 (256), 0.9e-5 to 1.2e-5 (512); gradients up to 8.7e-6; root-mean-square
errors 2e-6 to 3.3e-6, not growing with the channel count.
"""

import numpy as np

from .. import parallel
from . import winograd
from ._jit import jit

BT = np.array(
    [
        [4, 0, -5, 0, 1, 0],
        [0, -4, -4, 1, 1, 0],
        [0, 4, -4, -1, 1, 0],
        [0, -2, -1, 2, 1, 0],
        [0, 2, -1, -2, 1, 0],
        [0, 4, 0, -5, 0, 1],
    ],
    dtype=np.float64,
)
G = np.array(
    [
        [1 / 4, 0, 0],
        [-1 / 6, -1 / 6, -1 / 6],
        [-1 / 6, 1 / 6, -1 / 6],
        [1 / 24, 1 / 12, 1 / 6],
        [1 / 24, -1 / 12, 1 / 6],
        [0, 0, 1],
    ]
)
AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]], dtype=np.float64)
FILTER_TRANSFORM = np.kron(G, G)  # (36, 9): the 36 values of G g G^T from the 9 of g
BLOCK_TILES = 1024  # tiles (channels x images x tiles) a transform pass runs over: 2 x 144 KiB in float32


@jit
def _rows4(a, first, step, lo, n):
    """Rows first, first + step, .. (4 of them) of a, items [lo, lo + n) (slices: indices known
    >= 0, so loops over them need no wraparound test)."""
    return (
        a[first, lo : lo + n],
        a[first + step, lo : lo + n],
        a[first + 2 * step, lo : lo + n],
        a[first + 3 * step, lo : lo + n],
    )


@jit
def _rows6(a, first, step, lo, n):
    """Rows first, first + step, .. (6 of them) of a, items [lo, lo + n)."""
    r0, r1, r2, r3 = _rows4(a, first, step, lo, n)
    return r0, r1, r2, r3, a[first + 4 * step, lo : lo + n], a[first + 5 * step, lo : lo + n]


@jit
def _bt(src, first, step, lo, dst, first_out, step_out, lo_out, n):
    """o = B^T d item by item, d the rows first, first + step, ... of src and o those of dst
    (first_out, step_out), n items from column lo (lo_out): one unit-stride loop an output.
    (The constants are of the arrays' dtype: an int literal times a float32 item makes the
    arithmetic float64, as numpy's promotion, and kept these loops scalar: 3-4x slower.)"""
    d0, d1, d2, d3, d4, d5 = _rows6(src, first, step, lo, n)
    o0, o1, o2, o3, o4, o5 = _rows6(dst, first_out, step_out, lo_out, n)
    two, four, five = dst.dtype.type(2), dst.dtype.type(4), dst.dtype.type(5)
    for q in range(n):
        o0[q] = four * d0[q] - five * d2[q] + d4[q]
    for q in range(n):
        o1[q] = (d3[q] + d4[q]) - four * (d1[q] + d2[q])
    for q in range(n):
        o2[q] = four * (d1[q] - d2[q]) + (d4[q] - d3[q])
    for q in range(n):
        o3[q] = two * (d3[q] - d1[q]) + (d4[q] - d2[q])
    for q in range(n):
        o4[q] = two * (d1[q] - d3[q]) + (d4[q] - d2[q])
    for q in range(n):
        o5[q] = four * d1[q] - five * d3[q] + d5[q]


@jit
def _b(src, first, step, lo, dst, first_out, step_out, lo_out, n):
    """o = B v (the adjoint of ``_bt``), rows as there."""
    v0, v1, v2, v3, v4, v5 = _rows6(src, first, step, lo, n)
    o0, o1, o2, o3, o4, o5 = _rows6(dst, first_out, step_out, lo_out, n)
    two, four, five = dst.dtype.type(2), dst.dtype.type(4), dst.dtype.type(5)
    for q in range(n):
        o0[q] = four * v0[q]
    for q in range(n):
        o1[q] = four * (v2[q] + v5[q] - v1[q]) + two * (v4[q] - v3[q])
    for q in range(n):
        o2[q] = -(five * v0[q] + four * (v1[q] + v2[q]) + (v3[q] + v4[q]))
    for q in range(n):
        o3[q] = (v1[q] - v2[q]) + two * (v3[q] - v4[q]) - five * v5[q]
    for q in range(n):
        o4[q] = v0[q] + (v1[q] + v2[q]) + (v3[q] + v4[q])
    for q in range(n):
        o5[q] = v5[q]


@jit
def _at(src, first, step, lo, dst, first_out, step_out, lo_out, n):
    """o = A^T m (6 rows to 4), rows as in ``_bt``."""
    m0, m1, m2, m3, m4, m5 = _rows6(src, first, step, lo, n)
    o0, o1, o2, o3 = _rows4(dst, first_out, step_out, lo_out, n)
    two, four, eight = dst.dtype.type(2), dst.dtype.type(4), dst.dtype.type(8)
    for q in range(n):
        o0[q] = m0[q] + (m1[q] + m2[q]) + (m3[q] + m4[q])
    for q in range(n):
        o1[q] = (m1[q] - m2[q]) + two * (m3[q] - m4[q])
    for q in range(n):
        o2[q] = (m1[q] + m2[q]) + four * (m3[q] + m4[q])
    for q in range(n):
        o3[q] = (m1[q] - m2[q]) + eight * (m3[q] - m4[q]) + m5[q]


@jit
def _a(src, first, step, lo, dst, first_out, step_out, lo_out, n):
    """o = A g (the adjoint of ``_at``: 4 rows to 6), rows as in ``_bt``."""
    g0, g1, g2, g3 = _rows4(src, first, step, lo, n)
    o0, o1, o2, o3, o4, o5 = _rows6(dst, first_out, step_out, lo_out, n)
    two, four = dst.dtype.type(2), dst.dtype.type(4)
    for q in range(n):
        o0[q] = g0[q]
    for q in range(n):
        o1[q] = (g0[q] + g2[q]) + (g1[q] + g3[q])
    for q in range(n):
        o2[q] = (g0[q] + g2[q]) - (g1[q] + g3[q])
    for q in range(n):
        o3[q] = (g0[q] + four * g2[q]) + two * (g1[q] + four * g3[q])
    for q in range(n):
        o4[q] = (g0[q] + four * g2[q]) - two * (g1[q] + four * g3[q])
    for q in range(n):
        o5[q] = g3[q]


@jit
def input_tiles(x, first_image, images, pad, first_row, rows, tiles_w, v, block, v_first):
    """v[6a + b, v_first + c S + n T + i tw + j] = (B^T d B)[a, b] for tile (i, j) of tile rows
    [first_row, first_row + rows) of image first_image + n (n < images) of x (N, C, H, W): d is
    x[., c]'s 6x6 patch at rows 4 (first_row + i) - pad.., columns 4j - pad.. (0 outside);
    T = rows tw, S = images T. Channels go in blocks of ``block``."""
    chans, h, w = x.shape[1], x.shape[2], x.shape[3]
    tw = tiles_w
    tiles = rows * tw
    span = images * tiles
    padded = np.zeros(4 * tw + 2, x.dtype)  # an image row at [pad, pad + w), zeros around it
    p = np.empty((36, block * span), x.dtype)  # p[6 rr + s]: the patch's value (rr, s)
    t = np.empty((36, block * span), x.dtype)  # t[6 rr + b]: (d B)[rr, b]
    for c0 in range(0, chans, block):
        size = min(block, chans - c0) * span
        for cl in range(min(block, chans - c0)):
            for n in range(images):
                image = x[first_image + n, c0 + cl]
                for i in range(rows):
                    base = cl * span + n * tiles + i * tw
                    for rr in range(6):
                        row = 4 * (first_row + i) + rr - pad
                        if row < 0 or row >= h:
                            for s in range(6):
                                p[6 * rr + s, base : base + tw] = 0
                            continue
                        src, inner = image[row], padded[pad : pad + w]
                        for k in range(w):
                            inner[k] = src[k]
                        for s in range(6):
                            dst = p[6 * rr + s, base : base + tw]
                            for j in range(tw):
                                dst[j] = padded[4 * j + s]
        for rr in range(6):
            _bt(p, 6 * rr, 1, 0, t, 6 * rr, 1, 0, size)
        lo = v_first + c0 * span
        for b in range(6):
            _bt(t, b, 6, 0, v, b, 6, lo, size)


# On maps of at most TABLE_TILES_W tiles a row (outputs of up to 16 x 16), ``input_tiles``'s and
# ``output_tiles_adjoint``'s gathers run from a table of where each tile value comes from
# (``gather_table``): their loops then run over a run's tiles, not over the 2 to 4 tiles of a
# row. input_tiles alone, one call, 1 worker, float32: 64 channels at 8 x 8, 16 images 0.29 ->
# 0.16 ms. A layer's forward + backward, 2 workers, float32, batch 32 unless said, medians of 15
# paired rounds, by table / by rows: 64 -> 64 at 8 x 8 0.81x-0.87x, at 7 x 7 0.79x-0.86x; 128 at 8
# 0.87x-0.91x; 256 at 8 0.95x; 64 at 10 0.97x; 48 at 12 0.94x-0.97x; 32 at 16 0.86x; 64 at 16,
# batch 16 0.91x; 16 at 16 0.90x. Wider maps keep the row gathers (8 tiles a row: 16 at 32 x 32
# 1.01x, 64 at 32, batch 8 1.02x; 6 tiles: 16 at 24 0.98x). The same bits.
TABLE_TILES_W = 4


def gather_table(chans, height, width, pad, images, rows, tiles_w, side=6):
    """For the gathers by table: table[side rr + s, n T + i tw + j] = the offset in x (N, chans,
    height, width) of image n of a run (from the run's first image), channel 0, of the value
    (rr, s) of tile (i, j)'s side x side patch (row 4i + rr - pad, column 4j + s - pad), or -1
    where that lies outside the image; T = rows tw, one band of ``rows`` tile rows from the top.
    ``input_tiles_by_table`` takes side 6 (the input patches, ``pad`` the padding);
    ``output_tiles_adjoint_by_table`` side 4 and pad 0 (the output tiles)."""
    rr, s, n, i, j = np.ogrid[:side, :side, :images, :rows, :tiles_w]
    row, col = 4 * i + rr - pad, 4 * j + s - pad
    offset = n * (chans * height * width) + row * width + col
    inside = (row >= 0) & (row < height) & (col >= 0) & (col < width)
    return np.where(inside, offset, -1).reshape(side * side, images * rows * tiles_w)


@jit
def _gather_by_table(flat, base, plane, count, span, table, out):
    """out[k, c span + q] = flat[base + c plane + table[k, q]] (0 where the table holds -1) for
    the ``count`` channels c of a block, k < table's rows, q < span: a block's tile values."""
    zero = flat.dtype.type(0)
    for c in range(count):
        first = base + c * plane
        for k in range(table.shape[0]):
            where, dst = table[k, :span], out[k, c * span : (c + 1) * span]
            for q in range(span):
                at = where[q]
                value = flat[first + max(at, 0)]
                dst[q] = value if at >= 0 else zero


@jit
def input_tiles_by_table(x, first_image, images, tiles, table, v, block):
    """``input_tiles`` of a run of ``images`` images from ``first_image`` (C-contiguous x), one
    band of all ``tiles`` tiles an image, with the patch values gathered by ``gather_table``'s
    table (made for at least ``images`` images): the same values in v."""
    chans, plane = x.shape[1], x.shape[2] * x.shape[3]
    span = images * tiles
    start = first_image * chans * plane
    p = np.empty((36, block * span), x.dtype)
    t = np.empty((36, block * span), x.dtype)
    for c0 in range(0, chans, block):
        count = min(block, chans - c0)
        size = count * span
        _gather_by_table(x.reshape(-1), start + c0 * plane, plane, count, span, table, p)
        for rr in range(6):
            _bt(p, 6 * rr, 1, 0, t, 6 * rr, 1, 0, size)
        lo = c0 * span
        for b in range(6):
            _bt(t, b, 6, 0, v, b, 6, lo, size)


@jit
def output_tiles(m, bias, first_image, images, first_row, rows, tiles_w, y, block, m_first):
    """y[first_image + n, k, 4 (first_row + i) + r, 4j + s] = (A^T m A)[r, s] + bias[k] inside
    y (N, K, OH, OW), m laid out as v of ``input_tiles`` (from its column ``m_first``); output
    channels in blocks of ``block``."""
    chans, oh, ow = y.shape[1], y.shape[2], y.shape[3]
    tw = tiles_w
    tiles = rows * tw
    span = images * tiles
    sr = np.empty((24, block * span), y.dtype)  # sr[6r + b] = (A^T m)[r, b]
    o = np.empty((16, block * span), y.dtype)  # o[4r + s] = (A^T m A)[r, s]
    full = ow // 4  # whole tiles a row (the last one may be cut)
    for k0 in range(0, chans, block):
        size = min(block, chans - k0) * span
        lo = m_first + k0 * span
        for b in range(6):
            _at(m, b, 6, lo, sr, b, 6, 0, size)
        for r in range(4):
            _at(sr, 6 * r, 1, 0, o, 4 * r, 1, 0, size)
        for kl in range(min(block, chans - k0)):
            bk = bias[k0 + kl]
            for n in range(images):
                for i in range(rows):
                    base = kl * span + n * tiles + i * tw
                    for r in range(4):
                        row = 4 * (first_row + i) + r
                        if row >= oh:
                            break
                        dst = y[first_image + n, k0 + kl, row]
                        o0, o1 = o[4 * r, base : base + tw], o[4 * r + 1, base : base + tw]
                        o2, o3 = o[4 * r + 2, base : base + tw], o[4 * r + 3, base : base + tw]
                        for j in range(full):
                            dst[4 * j] = o0[j] + bk
                            dst[4 * j + 1] = o1[j] + bk
                            dst[4 * j + 2] = o2[j] + bk
                            dst[4 * j + 3] = o3[j] + bk
                        for col in range(4 * full, ow):
                            dst[col] = o[4 * r + col - 4 * full, base + full] + bk


@jit
def output_tiles_adjoint(dy, first_image, images, first_row, rows, tiles_w, dm, block, dm_first):
    """dm = the adjoint of ``output_tiles`` (without bias) for dy (N, K, OH, OW), laid out as v
    of ``input_tiles`` (from its column ``dm_first``)."""
    chans, oh, ow = dy.shape[1], dy.shape[2], dy.shape[3]
    tw = tiles_w
    tiles = rows * tw
    span = images * tiles
    g = np.empty((16, block * span), dy.dtype)  # g[4r + s]: dy's tile value (r, s), 0 outside
    sr = np.empty((24, block * span), dy.dtype)  # sr[6r + b] = (g A^T)[r, b]
    full = ow // 4
    for k0 in range(0, chans, block):
        size = min(block, chans - k0) * span
        lo = dm_first + k0 * span
        for kl in range(min(block, chans - k0)):
            for n in range(images):
                for i in range(rows):
                    base = kl * span + n * tiles + i * tw
                    for r in range(4):
                        row = 4 * (first_row + i) + r
                        g0, g1 = g[4 * r, base : base + tw], g[4 * r + 1, base : base + tw]
                        g2, g3 = g[4 * r + 2, base : base + tw], g[4 * r + 3, base : base + tw]
                        if row >= oh:
                            g0[:] = 0
                            g1[:] = 0
                            g2[:] = 0
                            g3[:] = 0
                            continue
                        src = dy[first_image + n, k0 + kl, row]
                        for j in range(full):
                            g0[j] = src[4 * j]
                            g1[j] = src[4 * j + 1]
                            g2[j] = src[4 * j + 2]
                            g3[j] = src[4 * j + 3]
                        if full < tw:
                            for s in range(4):
                                col = 4 * full + s
                                g[4 * r + s, base + full] = src[col] if col < ow else 0
        for r in range(4):
            _a(g, 4 * r, 1, 0, sr, 6 * r, 1, 0, size)
        for b in range(6):
            _a(sr, b, 6, 0, dm, b, 6, lo, size)


@jit
def output_tiles_adjoint_by_table(dy, first_image, images, tiles, table, dm, block):
    """``output_tiles_adjoint`` of a run of ``images`` images from ``first_image`` (C-contiguous
    dy), one band of all ``tiles`` tiles an image, with dy's tile values gathered by
    ``gather_table``'s table of 4x4 tiles: the same values in dm."""
    chans, plane = dy.shape[1], dy.shape[2] * dy.shape[3]
    span = images * tiles
    start = first_image * chans * plane
    g = np.empty((16, block * span), dy.dtype)
    sr = np.empty((24, block * span), dy.dtype)
    for k0 in range(0, chans, block):
        count = min(block, chans - k0)
        size = count * span
        _gather_by_table(dy.reshape(-1), start + k0 * plane, plane, count, span, table, g)
        for r in range(4):
            _a(g, 4 * r, 1, 0, sr, 6 * r, 1, 0, size)
        lo = k0 * span
        for b in range(6):
            _a(sr, b, 6, 0, dm, b, 6, lo, size)


@jit
def input_tiles_adjoint(dv, first_image, images, pad, first_row, rows, tiles_w, dx, block, clear, dv_first):
    """The adjoint of ``input_tiles`` for dv (laid out as v there, from its column ``dv_first``)
    into dx (N, C, H, W): each
    tile's B dV B^T added into its 6x6 patch (inside the image). With ``clear``, the images' dx
    is zeroed by the band with first_row 0, so after every band of an image it holds the input
    gradient (without, the caller clears it)."""
    chans, h, w = dx.shape[1], dx.shape[2], dx.shape[3]
    tw = tiles_w
    tiles = rows * tw
    span = images * tiles
    padded = np.zeros(4 * tw + 2, dx.dtype)  # a patch row of a tile row, neighbours summed
    t = np.empty((36, block * span), dx.dtype)
    p = np.empty((36, block * span), dx.dtype)
    for c0 in range(0, chans, block):
        size = min(block, chans - c0) * span
        lo = dv_first + c0 * span
        for b in range(6):
            _b(dv, b, 6, lo, t, b, 6, 0, size)
        for rr in range(6):
            _b(t, 6 * rr, 1, 0, p, 6 * rr, 1, 0, size)
        for cl in range(min(block, chans - c0)):
            for n in range(images):
                image = dx[first_image + n, c0 + cl]
                if clear and first_row == 0:
                    image[:, :] = 0
                for i in range(rows):
                    base = cl * span + n * tiles + i * tw
                    for rr in range(6):
                        row = 4 * (first_row + i) + rr - pad
                        if row < 0 or row >= h:
                            continue
                        p0, p1 = p[6 * rr, base : base + tw], p[6 * rr + 1, base : base + tw]
                        p2, p3 = p[6 * rr + 2, base : base + tw], p[6 * rr + 3, base : base + tw]
                        p4, p5 = p[6 * rr + 4, base : base + tw], p[6 * rr + 5, base : base + tw]
                        padded[0], padded[1] = p0[0], p1[0]
                        for j in range(1, tw):  # columns 4j, 4j + 1 are also tile j - 1's 4, 5
                            padded[4 * j] = p0[j] + p4[j - 1]
                            padded[4 * j + 1] = p1[j] + p5[j - 1]
                        for j in range(tw):
                            padded[4 * j + 2] = p2[j]
                            padded[4 * j + 3] = p3[j]
                        padded[4 * tw], padded[4 * tw + 1] = p4[tw - 1], p5[tw - 1]
                        dst, inner = image[row], padded[pad : pad + w]
                        for k in range(w):
                            dst[k] += inner[k]


class Winograd4Convolution(winograd.SharedFilters):
    """One convolution geometry run as F(4x4, 3x3); the interface, the split over the workers,
    the bands and runs and the scratch buffers are ``winograd.WinogradConvolution``'s (with
    36 rows instead of 16). ``image_shape`` is (N, C, H, W), ``outputs`` the output channels
    K, ``pad`` the padding of both axes (0 or 1). Weight gradients are summed per worker, then
    over the workers (worker 0 first): the same bits for the same thread count."""

    def __init__(self, image_shape, outputs, pad, dtype, groups=1):
        self.batch, self.channels, height, width = image_shape
        self.outputs, self.pad, self.groups = outputs, pad, groups
        self.dtype = np.dtype(dtype)
        out_h, out_w = height + 2 * pad - 2, width + 2 * pad - 2
        tiles_h, self.tiles_w = -(-out_h // 4), -(-out_w // 4)
        row_bytes = 36 * max(self.channels, outputs) * self.tiles_w * self.dtype.itemsize
        bands = -(-tiles_h // max(1, winograd.BAND_BYTES // row_bytes))
        rows = -(-tiles_h // bands)  # bands of equal height (the last one may be lower)
        self.bands = [(first, min(rows, tiles_h - first)) for first in range(0, tiles_h, rows)]
        image_tiles = tiles_h * self.tiles_w
        fit = winograd.BAND_BYTES // (tiles_h * row_bytes)
        self.run_images = winograd.run_length(fit, image_tiles, self.batch) if bands == 1 else 1
        self.band_tiles = self.run_images * rows * self.tiles_w  # tiles of a channel in a band
        self.tables = None  # the gathers' tables (see TABLE_TILES_W), input's and output's: one band only
        if len(self.bands) == 1 and self.tiles_w <= TABLE_TILES_W:
            self.tables = (
                gather_table(self.channels, height, width, pad, self.run_images, tiles_h, self.tiles_w),
                gather_table(outputs, out_h, out_w, 0, self.run_images, tiles_h, self.tiles_w, side=4),
            )
        self.u_shape = (36, outputs, self.channels // groups)
        self.transform = FILTER_TRANSFORM.astype(self.dtype)
        self.zero_bias = np.zeros(outputs, self.dtype)

    def filters(self, weight):
        """U[xi] = (G g G^T)[xi] for every (output, channel) filter g of ``weight``."""
        winograd.transform_filters(self.transform, weight, self.u)

    def _scratch(self, worker, name, rows):
        """A (36, stride) scratch array for (36, rows, tiles) matrices; the stride is a multiple
        of 1024 items plus 16, never a multiple of 4 KiB (see ``winograd``)."""
        stride = -(-rows * self.band_tiles // 1024) * 1024 + 16
        return parallel.scratch(worker, name, 36 * stride, self.dtype).reshape(36, stride)

    @staticmethod
    def _matrices(array, rows, tiles):
        """The (36, rows, tiles) matrices at the start of each row of ``array``."""
        return array[:, : rows * tiles].reshape(36, rows, tiles)

    def _runs(self, worker, workers):
        """The runs of consecutive images ``worker`` takes together (ranges)."""
        images = parallel.share(worker, workers, self.batch)
        count = -(-len(images) // self.run_images)
        parts = (parallel.share(i, count, len(images)) for i in range(count))
        return [images[part.start : part.stop] for part in parts]

    def _block(self, span):
        """Channels a transform pass takes at once, for ``span`` tiles a channel."""
        return -(-BLOCK_TILES // span)

    def _by_table(self, array, first, rows):
        """Whether a piece's gather runs by table: the layer has tables and the piece holds whole
        images (the workers may share one image's tile rows: ``winograd.shared_bands``)."""
        return self.tables is not None and first == 0 and rows == self.bands[0][1] and array.flags.c_contiguous

    def _input_tiles(self, x, images, first, rows, v, block):
        """V of ``images`` (a range), tile rows [first, first + rows)."""
        if self._by_table(x, first, rows):
            input_tiles_by_table(x, images.start, len(images), rows * self.tiles_w, self.tables[0], v, block)
        else:
            input_tiles(x, images.start, len(images), self.pad, first, rows, self.tiles_w, v, block, 0)

    def _output_tiles_adjoint(self, dy, images, first, rows, dm, block):
        """dM of ``images`` (a range), tile rows [first, first + rows)."""
        if self._by_table(dy, first, rows):
            output_tiles_adjoint_by_table(dy, images.start, len(images), rows * self.tiles_w, self.tables[1], dm, block)
        else:
            output_tiles_adjoint(dy, images.start, len(images), first, rows, self.tiles_w, dm, block, 0)

    def _by_positions(self):
        """Whether the passes run by positions (:meth:`_forward_by_positions`,
        :meth:`_backward_by_positions`): one image, one band of tile rows, one group, and more
        than one worker running side by side."""
        workers = parallel.concurrent_workers()
        return self.batch == 1 and len(self.bands) == 1 and self.groups == 1 and workers > 1

    def _one_image(self):
        """What the passes by positions share: (workers, tile rows, tiles a row, tiles, the
        transforms' channel block, V and M: worker 0's buffers, which every worker writes)."""
        rows, tiles_w = self.bands[0][1], self.tiles_w
        span = rows * tiles_w
        v = self._scratch(0, winograd.TILES, self.channels)
        m = self._scratch(0, winograd.PRODUCTS, self.outputs)
        return parallel.concurrent_workers(), rows, tiles_w, span, self._block(span), v, m

    def _forward_by_positions(self, x, bias, y):
        """The forward of one image in three steps over the workers, each cut where its parts
        write apart: V by input channels (each worker the transformed tiles of its channels, in
        one V), the 36 products M[xi] = U[xi] V[xi] by positions xi (each product the image's
        whole width), then y by output channels. (Cut by tile rows, as the batch's images are,
        each worker's products were a few tiles wide: ResNet-50's 128 -> 128 layer at 28 x 28
        ran them at a quarter of BLAS's rate.) The same bits as one worker's: every value is
        made by one worker, as one worker makes it."""
        workers, rows, tiles_w, span, block, v, m = self._one_image()

        def transform(worker, _):
            c = parallel.share(worker, workers, self.channels)
            input_tiles(x[:, c.start : c.stop], 0, 1, self.pad, 0, rows, tiles_w, v, block, c.start * span)

        def products(worker, _):
            xi = parallel.share(worker, workers, 36)
            v_xi = self._matrices(v, self.channels, span)[xi.start : xi.stop]
            np.matmul(self.u[xi.start : xi.stop], v_xi, out=self._matrices(m, self.outputs, span)[xi.start : xi.stop])

        def outputs(worker, _):
            k = parallel.share(worker, workers, self.outputs)
            part = slice(k.start, k.stop)
            output_tiles(m, bias[part], 0, 1, 0, rows, tiles_w, y[:, part], block, k.start * span)

        for step in (transform, products, outputs):
            parallel.run_parts(step, workers, workers)

    def _backward_by_positions(self, x, dy, dx, weight_diff):
        """The backward of one image as :meth:`_forward_by_positions` cuts the forward: dM by
        output channels and V by input channels, then by positions xi dU[xi] = dM[xi] V[xi]^T
        (one dU, each worker its positions: no partials to add up) and dV[xi] = U[xi]^T dM[xi]
        (over V[xi], read just before), then dx by input channels; weight_diff += G^T dU G.
        The same bits as one worker's."""
        workers, rows, tiles_w, span, block, v, dm = self._one_image()
        partial = None if weight_diff is None else self._partial(0, dx is None)

        def transforms(worker, _):
            k = parallel.share(worker, workers, self.outputs)
            output_tiles_adjoint(dy[:, k.start : k.stop], 0, 1, 0, rows, tiles_w, dm, block, k.start * span)
            if weight_diff is not None:
                c = parallel.share(worker, workers, self.channels)
                input_tiles(x[:, c.start : c.stop], 0, 1, self.pad, 0, rows, tiles_w, v, block, c.start * span)

        def products(worker, _):
            xi = parallel.share(worker, workers, 36)
            part = slice(xi.start, xi.stop)
            dm_xi = self._matrices(dm, self.outputs, span)[part]
            v_xi = self._matrices(v, self.channels, span)[part]
            if weight_diff is not None:
                np.matmul(dm_xi, v_xi.swapaxes(-1, -2), out=partial[part])
            if dx is not None:
                np.matmul(self.u[part].transpose(0, 2, 1), dm_xi, out=v_xi)

        def adjoint(worker, _):
            c = parallel.share(worker, workers, self.channels)
            input_tiles_adjoint(
                v, 0, 1, self.pad, 0, rows, tiles_w, dx[:, c.start : c.stop], block, True, c.start * span
            )

        for step in (transforms, products) + ((adjoint,) if dx is not None else ()):
            parallel.run_parts(step, workers, workers)
        if weight_diff is not None:
            winograd.add_weight_grad([partial], self.transform, weight_diff)

    def forward(self, x, bias, y):
        """y = conv(x, weight) + bias (bias may be None), with U from ``filters``."""
        bias = self.zero_bias if bias is None else bias
        if self._by_positions():
            self._forward_by_positions(x, bias, y)
            return
        workers, work = winograd.forward_work(self.batch, self.bands, self._runs)
        tiles_w = self.tiles_w

        def share(worker, _):
            v = self._scratch(worker, winograd.TILES, self.channels)
            m = self._scratch(worker, winograd.PRODUCTS, self.outputs)
            for images, first, rows in work(worker):
                span = len(images) * rows * tiles_w
                block = self._block(span)
                self._input_tiles(x, images, first, rows, v, block)
                self._forward_products(self._matrices(v, self.channels, span), self._matrices(m, self.outputs, span))
                output_tiles(m, bias, images.start, len(images), first, rows, tiles_w, y, block, 0)

        parallel.run_parts(share, workers, workers)

    def backward(self, x, dy, dx, weight_diff):
        """dx = the input gradient (when dx is not None; written), weight_diff += the weight
        gradient (when it is not None), with U from ``filters``; the work as
        ``winograd.backward_passes`` splits it."""
        if self._by_positions():
            self._backward_by_positions(x, dy, dx, weight_diff)
            return
        if self._split_backward(x, dy, dx, weight_diff):
            return
        passes, adding = winograd.backward_passes(self.batch, self.bands, self._runs, 4, self.pad)
        pad, tiles_w = self.pad, self.tiles_w
        started = set()  # workers whose weight-gradient partial holds a product

        def share_of(work):
            def share(worker, _):
                dm = self._scratch(worker, winograd.PRODUCTS, self.outputs)
                v = self._scratch(worker, winograd.TILES, self.channels)
                partial = self._partial(worker, dx is None) if weight_diff is not None else None
                for images, first, rows, clear in work(worker):
                    n0, count = images.start, len(images)
                    span = count * rows * tiles_w
                    block = self._block(span)
                    self._output_tiles_adjoint(dy, images, first, rows, dm, block)
                    dm_matrices = self._matrices(dm, self.outputs, span)
                    v_matrices = self._matrices(v, self.channels, span)
                    if weight_diff is not None:
                        self._input_tiles(x, images, first, rows, v, block)
                        self._weight_products(dm_matrices, v_matrices, partial, worker in started)
                        started.add(worker)
                    if dx is not None:
                        self._data_products(dm_matrices, v_matrices)
                        if clear is not None:
                            dx[n0 : n0 + count, :, clear] = 0
                        input_tiles_adjoint(v, n0, count, pad, first, rows, tiles_w, dx, block, not adding, 0)

            return share

        for workers, work in passes:
            parallel.run_parts(share_of(work), workers, workers)
        if weight_diff is not None:
            partials = [self._partial(worker, dx is None) for worker in range(passes[0][0])]
            winograd.add_weight_grad(partials, self.transform, weight_diff)  # G^T dU G, dU their sum
