"""Winograd F(m, r) along one axis: 1 x r and r x 1 stride-1 convolutions (a text or audio net's
1-D convolutions, Inception-v3's factorized 1 x 7 and 7 x 1) with m + r - 1 multiplications per
m outputs instead of m r.

Along the kernel's axis, an input segment d of n = m + r - 1 values (padded positions
t m .. t m + n - 1 of tile t) and a filter g of r taps give the tile's m outputs

    y = A^T [(G g) * (B^T d)]        (* element-wise, over n positions)

with the Toom-Cook matrices of :func:`transforms`: the n - 1 finite points 0, 1, -1, 2, -2,
1/2, -1/2 (as many as needed) and infinity; E_k is the (n, k) matrix evaluating a polynomial
of k coefficients at them (its last row picks the leading coefficient), A^T = E_m^T, G = E_r
and B^T = E_n^-T, each row of B^T scaled to entries of at most 1 (and G's row by the inverse).
Linear convolution is s = E_n^-1 [(E_r g) * (E_m h)]; correlation, y = L(g)^T d, is its
transpose. F(2, 3) gives Lavin and Gray's matrices.

Summed over channels, the element-wise product is n matrix products: U[a] = (G g)[a] as an
(outputs x channels) matrix, V[a] = (B^T d)[a] as (channels x positions), M[a] = U[a] V[a]
(BLAS, one batched call), y = A^T M tile by tile. Backward: dM = A dy, dU[a] = dM[a] V[a]^T
(then dg = G^T dU), dV[a] = U[a]^T dM[a] (then dx = B dV, overlapping segments summed).

Layout: a channel plane is seen as (outer, L, inner) with L the kernel's axis: (H, W, 1) for a
1 x r kernel, (1, H, W) for r x 1. A row (one image's outer index) is cut into T tiles; its
padded values go to m phase arrays, phase s holding positions s, s + m, s + 2m, .. (each
value of inner positions side by side), so that every term of B^T d is a unit-stride vector
of the phases at a fixed offset. A row takes T + shift slots in V and M, shift = (n - 1) // m
(the last ``shift`` unused: the forward computes values of no use there, the backward's dM is
0 there), so that a chunk's rows lie end to end and each transform is one long loop over all
of them. Rows (image, outer index) are shared over the workers, each taking chunks of rows
whose V (and M) fit ``CHUNK_BYTES`` in its scratch.

Rounding: float32 outputs differ from im2col + GEMM by about 1e-6 relative to the output's
scale (the transforms' few float operations per product; points up to 2 and 1/2).
"""

import numpy as np

from .. import parallel
from ._jit import jit
from .winograd import SharedFilters, add_products, add_weight_grad, transform_filters

POINTS = (0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5)  # the finite interpolation points, in order of use
TILE = {3: 4, 5: 4, 7: 2}  # outputs m a tile for a kernel of r taps: n = m + r - 1 of at most 8
# Where it runs: at least MIN_CHANNELS input and output channels and MIN_TILES tiles along the
# kernel's axis. The Convolution layer, forward + backward against im2col + GEMM, 2 workers,
# float32, per-round median of 7 side by side: conv1d's layers (1 x 5, length 256, batch 32)
# 64 -> 128 1.40x, 128 -> 128 1.60x; 1 x 3 there 1.34x, 1 x 7 1.22x; 256 -> 256 1 x 5 at 128
# 1.39x; 1 x 5 128 -> 128 on 8 x 64 1.31x; 5 x 1 on 64 x 16 1.52x; 1 x 3 on 64 x 64 1.11x.
# Not: 32 channels (1 x 5 at 256 1.10x, at 64 0.85x), rows of few tiles (Inception-v3's 1 x 7
# and 7 x 1 at 17 x 17, 9 tiles of 2: 0.84x-0.93x; 1 x 3 64 -> 64 at 32 x 32, 8 tiles: 0.81x;
# 384 channels at 8 x 8 0.71x): the products then pay for too few transforms' savings.
MIN_CHANNELS = 64
MIN_TILES = 16
CHUNK_BYTES = 1 << 21  # V (and M) of a chunk of rows, a worker
MAX_ROW_BYTES = 1 << 23  # V of one row (an r x 1 kernel's row is a whole image plane)
# Scratch names: conv_gemm's, so that every convolution of the process shares one set of buffers
TILES, PRODUCTS, WEIGHT_GRAD = "columns", "map", "weight_grad"


def transforms(m, r):
    """(A^T, G, B^T) of F(m, r) in float64, shapes (m, n), (n, r), (n, n) with n = m + r - 1."""
    n = m + r - 1
    points = np.array(POINTS[: n - 1])

    def evaluation(coefficients):
        e = np.zeros((n, coefficients))
        e[:-1] = points[:, None] ** np.arange(coefficients)
        e[-1, -1] = 1  # the point at infinity: the leading coefficient
        return e

    bt = np.linalg.inv(evaluation(n)).T
    scale = np.abs(bt).max(axis=1)
    return evaluation(m).T, evaluation(r) * scale[:, None], bt / scale[:, None]


def applies(kernel, stride, dilation, pad, groups, channels, outputs, out_size, itemsize):
    """Whether a convolution runs as 1-D Winograd: a 1 x r or r x 1 kernel with r in ``TILE``
    (3, 5 or 7), stride 1, dilation 1, one group, no padding across the kernel's axis, at least
    ``MIN_CHANNELS`` input and output channels, ``MIN_TILES`` tiles along the axis, and one
    row's V (a chunk holds at least one) at most ``MAX_ROW_BYTES``."""
    if stride != (1, 1) or dilation != (1, 1) or groups != 1 or min(channels, outputs) < MIN_CHANNELS:
        return False
    axis = _axis(kernel)
    if axis is None or pad[1 - axis] != 0:
        return False
    r = kernel[axis]
    m, n = TILE[r], TILE[r] + r - 1
    tiles = -(-out_size[axis] // m)
    inner = out_size[1] if axis == 0 else 1
    row_bytes = n * max(channels, outputs) * (tiles + (n - 1) // m) * inner * itemsize
    return tiles >= MIN_TILES and row_bytes <= MAX_ROW_BYTES


def _axis(kernel):
    """The kernel's long axis (0: r x 1, 1: 1 x r) when it is one of ``TILE``'s, else None."""
    if kernel[0] == 1 and kernel[1] in TILE:
        return 1
    if kernel[1] == 1 and kernel[0] in TILE:
        return 0
    return None


@jit
def _phase_range(s, m, pad, length, slots):
    """The slots [lo, hi) of phase s that hold a position of the source: slot m + s - pad in
    [0, length)."""
    lo = min(slots, max(0, (pad - s + m - 1) // m))
    hi = max(lo, min(slots, (length + pad - s + m - 1) // m))
    return lo, hi


@jit
def _deinterleave(source, pad, m, slots, phases):
    """phases[s, slot inner + w] = source[slot m + s - pad, w] (0 outside source) for slot <
    ``slots``: source (L, inner) split into its m phases along L. Slices throughout: their
    indices are known to be >= 0 (numba then adds no wraparound test)."""
    length, inner = source.shape
    for s in range(m):
        lo, hi = _phase_range(s, m, pad, length, slots)
        dst = phases[s]
        for q in range(lo * inner):
            dst[q] = 0
        for q in range(hi * inner, slots * inner):
            dst[q] = 0
        if hi == lo:
            continue
        first = lo * m + s - pad
        if inner == 1:
            src = source[first : first + (hi - lo - 1) * m + 1 : m, 0]
            inside = dst[lo:hi]
            for q in range(hi - lo):
                inside[q] = src[q]
            continue
        for slot in range(lo, hi):
            src = source[first + (slot - lo) * m]
            row = dst[slot * inner : (slot + 1) * inner]
            for w in range(inner):
                row[w] = src[w]


@jit
def _interleave(phases, pad, m, target):
    """target[j, w] = phases[s, slot inner + w] for j = slot m + s - pad: the inverse of
    ``_deinterleave`` over target (L, inner)."""
    length, inner = target.shape
    slots = phases.shape[1] // inner
    for s in range(m):
        lo, hi = _phase_range(s, m, pad, length, slots)
        if hi == lo:
            continue
        first = lo * m + s - pad
        src = phases[s]
        if inner == 1:
            dst = target[first : first + (hi - lo - 1) * m + 1 : m, 0]
            inside = src[lo:hi]
            for q in range(hi - lo):
                dst[q] = inside[q]
            continue
        for slot in range(lo, hi):
            row = src[slot * inner : (slot + 1) * inner]
            dst = target[first + (slot - lo) * m]
            for w in range(inner):
                dst[w] = row[w]


@jit
def _combine(coefficients, source, inner, m, out):
    """out[i] = sum over e of coefficients[e] source[e % m, i + (e // m) inner] (0 coefficients
    skipped): one row of a transform over every position of a chunk at once."""
    for q in range(out.shape[0]):
        out[q] = 0
    for e in range(coefficients.shape[0]):
        coef = coefficients[e]
        if coef != 0:
            shift = (e // m) * inner
            src = source[e % m, shift : shift + out.shape[0]]
            for q in range(out.shape[0]):
                out[q] += coef * src[q]


@jit
def _spread(coefficients, source, inner, m, out):
    """The adjoint of ``_combine``: out[e % m, i + (e // m) inner] += coefficients[e] source[i]."""
    for e in range(coefficients.shape[0]):
        coef = coefficients[e]
        if coef != 0:
            shift = (e // m) * inner
            dst = out[e % m, shift : shift + source.shape[0]]
            for q in range(source.shape[0]):
                dst[q] += coef * source[q]


@jit
def input_tiles(x, pad, m, bt, first, count, slots, v, phases):
    """v[a, c, (k S + t) inner + w] = (B^T d)[a] for rows first + k (k < count) of x, an
    (N, C, outer, L, inner) view whose row i is (image i // outer, outer index i % outer),
    tile t < S = ``slots`` and inner position w; d is the row's padded segment at t m - pad ..
    (0 outside). Tiles past the row's last (T <= t < S) hold values of no use. ``phases``:
    (m, (count S + shift) inner) scratch, shift = (n - 1) // m."""
    channels, outer, inner = x.shape[1], x.shape[2], x.shape[4]
    row_span = slots * inner
    positions = count * row_span
    for s in range(m):
        for q in range(positions, phases.shape[1]):
            phases[s, q] = 0
    for c in range(channels):
        for k in range(count):
            image, row = divmod(first + k, outer)
            _deinterleave(x[image, c, row], pad, m, slots, phases[:, k * row_span : (k + 1) * row_span])
        for a in range(bt.shape[0]):
            _combine(bt[a], phases, inner, m, v[a, c, :positions])


@jit
def input_tiles_adjoint(dv, pad, m, bt, first, count, slots, dx, phases):
    """The adjoint of ``input_tiles`` where dV is 0 past each row's last tile: dx rows first + k
    (k < count) = B dV, overlapping segments summed (written, not added)."""
    channels, outer, inner = dx.shape[1], dx.shape[2], dx.shape[4]
    row_span = slots * inner
    positions = count * row_span
    for c in range(channels):
        for s in range(m):
            for q in range(phases.shape[1]):
                phases[s, q] = 0
        for a in range(bt.shape[0]):
            _spread(bt[a], dv[a, c, :positions], inner, m, phases)
        for k in range(count):
            image, row = divmod(first + k, outer)
            _interleave(phases[:, k * row_span : (k + 1) * row_span], pad, m, dx[image, c, row])


@jit
def output_tiles(mm, bias, m, at, first, count, slots, y, phases):
    """y rows first + k (k < count) of y, an (N, K, outer, OL, inner) view (rows as in
    ``input_tiles``): y[., o, ., t m + s, w] = (A^T M)[s] + bias[o] for every output inside y;
    ``phases``: (m, count S inner) scratch at least."""
    outputs, outer, inner = y.shape[1], y.shape[2], y.shape[4]
    row_span = slots * inner
    positions = count * row_span
    for o in range(outputs):
        b = bias[o]
        for s in range(m):
            acc = phases[s, :positions]
            _combine(at[s], mm[o], 0, at.shape[1], acc)
            for q in range(positions):
                acc[q] += b
        for k in range(count):
            image, row = divmod(first + k, outer)
            _interleave(phases[:, k * row_span : (k + 1) * row_span], 0, m, y[image, o, row])


@jit
def output_tiles_adjoint(dy, m, at, first, count, slots, dm, phases):
    """The adjoint of ``output_tiles`` (without bias): dM[a] = sum over s of A^T[s, a] dy's
    phase s, 0 past the output's end (so 0 past each row's last tile)."""
    outputs, outer, inner = dy.shape[1], dy.shape[2], dy.shape[4]
    row_span = slots * inner
    positions = count * row_span
    for o in range(outputs):
        for k in range(count):
            image, row = divmod(first + k, outer)
            _deinterleave(dy[image, o, row], 0, m, slots, phases[:, k * row_span : (k + 1) * row_span])
        for a in range(at.shape[1]):
            _combine(at[:, a], phases, 0, m, dm[o, a, :positions])


def chunked(span, size):
    """The range ``span`` as (first, count) chunks of at most ``size`` items, their counts
    differing by at most one."""
    count = -(-len(span) // size)
    parts = (parallel.share(i, count, len(span)) for i in range(count))
    return [(span.start + part.start, len(part)) for part in parts]


class AxisConvolution(SharedFilters):
    """One 1 x r or r x 1 convolution geometry run as F(m, r) along the kernel's axis.

    ``image_shape`` (N, C, H, W), ``outputs`` K, ``kernel`` (kh, kw), ``pad`` (ph, pw) (zero
    across the axis). Same interface as the 2-D Winograd convolutions: ``filters(weight)``
    transforms a (K, C, kh, kw) weight into U (once per pass), then ``forward(x, bias, y)`` and
    ``backward(x, dy, dx, weight_diff)`` use it. Weight gradients are summed per worker, then
    over the workers (worker 0 first), so they can differ in the last bits between thread counts.
    """

    def __init__(self, image_shape, outputs, kernel, pad, dtype):
        batch, self.channels, height, width = image_shape
        self.outputs = outputs
        self.dtype = np.dtype(dtype)
        axis = _axis(kernel)
        self.r = kernel[axis]
        self.m = TILE[self.r]
        self.pad = pad[axis]
        length = (height, width)[axis]
        self.out_length = length + 2 * self.pad - self.r + 1
        self.tiles = -(-self.out_length // self.m)
        self.outer, self.inner = (1, width) if axis == 0 else (height, 1)
        self.rows = batch * self.outer
        self.in_view = (batch, self.channels, self.outer, length, self.inner)
        self.out_view = (batch, outputs, self.outer, self.out_length, self.inner)
        at, g, bt = transforms(self.m, self.r)
        self.n = self.m + self.r - 1
        self.at, self.g, self.bt = (t.astype(self.dtype) for t in (at, g, bt))
        self.shift = (self.n - 1) // self.m  # phase slots past a tile that its segment reaches
        self.slots = self.tiles + self.shift  # tiles a row in V and M (the last ``shift`` unused)
        self.span = self.slots * self.inner  # positions of a row in V and M
        row_bytes = self.n * max(self.channels, outputs) * self.span * self.dtype.itemsize
        self.chunk_rows = max(1, CHUNK_BYTES // row_bytes)
        self.u_shape = (self.n, outputs, self.channels)
        self.zero_bias = np.zeros(outputs, self.dtype)

    def filters(self, weight):
        """U[a] = (G g)[a] for every (output, channel) filter g of ``weight``."""
        transform_filters(self.g, weight, self.u)

    def _views(self, x, out):
        """x as (N, C, outer, L, inner) and out as (N, K, outer, OL, inner) (out may be None)."""
        return x.reshape(self.in_view), None if out is None else out.reshape(self.out_view)

    def _chunks(self, worker, workers):
        """``worker``'s share of the rows, as (first, count) chunks of at most ``chunk_rows``."""
        return chunked(parallel.share(worker, workers, self.rows), self.chunk_rows)

    def _buffers(self, worker, count):
        """This worker's V (n, C, P), M (K, n, P) and phase arrays, P = count rows' positions
        (M's products land in M.transpose(1, 0, 2): the output transform reads an output
        channel's n rows as one contiguous block)."""
        positions = count * self.span
        v = parallel.scratch(worker, TILES, self.n * self.channels * positions, self.dtype)
        mm = parallel.scratch(worker, PRODUCTS, self.n * self.outputs * positions, self.dtype)
        phase_items = self.m * (positions + self.shift * self.inner)
        phases = parallel.scratch(worker, "winograd1d_phases", phase_items, self.dtype)
        return (
            v.reshape(self.n, self.channels, positions),
            mm.reshape(self.outputs, self.n, positions),
            phases.reshape(self.m, -1),
        )

    def _workers(self):
        return min(parallel.thread_count(), self.rows)

    def forward(self, x, bias, y):
        """y = conv(x, weight) + bias (bias may be None), with U from ``filters``."""
        bias = self.zero_bias if bias is None else bias
        x, y = self._views(x, y)
        workers = self._workers()

        def share(worker, _):
            for first, count in self._chunks(worker, workers):
                v, mm, phases = self._buffers(worker, count)
                input_tiles(x, self.pad, self.m, self.bt, first, count, self.slots, v, phases)
                np.matmul(self.u, v, out=mm.transpose(1, 0, 2))
                output_tiles(mm, bias, self.m, self.at, first, count, self.slots, y, phases)

        parallel.run_parts(share, workers, workers)

    def backward(self, x, dy, dx, weight_diff):
        """dx = the input gradient (when dx is not None; written), weight_diff += the weight
        gradient (when it is not None), with U from ``filters``."""
        x, dy = self._views(x, dy)
        dx = None if dx is None else dx.reshape(self.in_view)
        workers = self._workers()
        shape = self.u.shape

        def share(worker, _):
            partial = parallel.scratch(worker, WEIGHT_GRAD, self.u.size, self.dtype).reshape(shape)
            for k, (first, count) in enumerate(self._chunks(worker, workers)):
                v, dm, phases = self._buffers(worker, count)
                output_tiles_adjoint(dy, self.m, self.at, first, count, self.slots, dm, phases)
                if weight_diff is not None:
                    input_tiles(x, self.pad, self.m, self.bt, first, count, self.slots, v, phases)
                    if k:
                        add_products(dm.transpose(1, 0, 2), v, partial)
                    else:
                        np.matmul(dm.transpose(1, 0, 2), v.transpose(0, 2, 1), out=partial)
                if dx is not None:
                    np.matmul(self.u.transpose(0, 2, 1), dm.transpose(1, 0, 2), out=v)
                    input_tiles_adjoint(v, self.pad, self.m, self.bt, first, count, self.slots, dx, phases)

        parallel.run_parts(share, workers, workers)
        if weight_diff is not None:
            partials = [parallel.scratch(worker, WEIGHT_GRAD, self.u.size, self.dtype) for worker in range(workers)]
            add_weight_grad(partials, self.g, weight_diff)
