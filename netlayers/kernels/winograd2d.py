"""Winograd F(4x4, 5x5) for 5 x 5 stride-1 convolutions: 64 multiplications per 4 x 4 output
tile instead of 400; and F(2x2, 7x7) for 7 x 7 ones: 64 per 2 x 2 tile instead of 196 (the
same 8 x 8 transforms, the same points).

The 2-D algorithm nests ``winograd1d``'s 1-D one (the same Toom-Cook matrices A^T, G, B^T of
``winograd1d.transforms``, n = m + r - 1): for an n x n input patch d and an r x r filter g,

    Y = A^T [(G g G^T) * (B^T d B)] A        (* element-wise, over n x n positions)

Summed over channels, the element-wise product is n^2 matrix products U[a, b] V[a, b] (outputs
x channels by channels x tiles; one batched BLAS call). Each transform is separable and runs as
two 1-D passes: B^T d B along the rows (over the tiles of a row), then along the columns, as
``winograd1d`` runs one; A^T M A likewise. Backward: dM = A dY A^T, dU[a, b] = dM V^T (then
dg = G^T dU G), dV = U^T dM (then dx = B dV B^T, overlapping patches summed).

Layout: inside, an image is (H, W, C), channels last (one transposing copy in, one out). Its
padded plane is split into m x m phase planes (phase (s, t) holds rows s, s + m,
.. and columns t, t + m, ..), each of (T_h + shift) x S slots with S = T_w + shift, shift =
(n - 1) // m: every patch value is then the phase plane at a fixed offset of the tile's slot,
and the transforms are long unit-stride loops over all the slots and channels of a plane
(with channels first, a 16 x 16 image's 25-slot rows left the loops too short to pay). Tiles are
numbered i S + j; the last ``shift`` of each row are unused (the forward computes values of no
use there; the backward's dM is 0 there, so they add nothing). Each worker takes its share of
the batch in chunks of images whose V (and M) fit ``CHUNK_BYTES``, and an image larger than
that in bands of tile rows whose V fits ``BAND_BYTES``.

Rounding: float32 outputs differ from im2col + GEMM by up to about 1e-5 of the output's scale
(as F(4x4, 3x3): points up to 2 and 1/2, two nested transforms).
"""

import numpy as np

from .. import parallel
from ._jit import jit
from .winograd import SharedFilters, add_products, add_weight_grad, transform_filters
from .winograd1d import _combine, _phase_range, _spread, chunked, transforms

TILE = {5: 4, 7: 2}  # outputs m a tile side for an r x r kernel: n = m + r - 1 = 8. 7 x 7 as
# F(2x2, 7x7), forward + backward against row strips, 2 workers, float32, per-round medians of 5
# side by side (2026-12-07): a pose net's stage (CPM: 128 -> 128 at 46 x 46, batch 4, in bands)
# 0.67x, its first layer (185 -> 128) 0.69x; 128 -> 128 at 32 x 32 batch 8 0.77x, at 14 x 14
# 0.76x; 64 -> 64 at 16 x 16 0.85x, at 32 x 32 batch 2 0.83x; 32 -> 64 at 28 x 28 0.84x; 16 ->
# 16 at 64 x 64 0.90x; 32 -> 32 at 32 x 32 0.97x. (The twenty-second session's 0.98x-1.12x at
# 64 -> 64, 32 x 32 was measured before the phase-plane layout.)
# Where it runs: at least MIN_CHANNELS input and output channels a group, outputs of at least
# MIN_OUTPUT_SIZE rows and columns, and the two minima's product at least MIN_CHANNELS_BY_SIZE.
# The Convolution layer, forward + backward against row strips (im2col below 32 channels), 2
# workers, float32, per-round median of 7 side by side: NiN's conv2 (96 -> 192 at 16 x 16,
# batch 16) 2.02x; cifar10_quick's conv2 (32 -> 32 at 16 x 16, batch 100) 1.57x, conv3 (32 ->
# 64 at 8 x 8) 1.29x; 64 -> 64 at 32 x 32 2.02x; 128 -> 128 at 28 x 28 2.23x; 48 -> 128 at
# 27 x 27 (AlexNet's conv2 a group) 2.40x; 32 -> 96 at 14 x 14 1.37x; GoogLeNet's 5 x 5
# branch (16 -> 32 at 28 x 28, batch 8) 1.52x; 16 -> 32 at 16 x 16 1.23x; 24 -> 64 at 14 x 14
# 1.11x. Not: 16 -> 48 at 14 x 14 0.92x; LeNet's conv2 (20 -> 50 at 8 x 8 unpadded) 0.82x.
MIN_CHANNELS = 16
MIN_OUTPUT_SIZE = 8
MIN_CHANNELS_BY_SIZE = 256
MIN_SHARE_OUTPUTS = 512  # output pixels in half the batch (rounded up: one worker's share on two):
# with fewer, the transforms of the filters and of the weight gradient, and the thin products of a
# share's few tiles, cost more than im2col's larger products save. Forward + backward against
# im2col + GEMM, 2 workers, medians of 3 paired rounds (2026-12-05), input -> output channels at
# output size, batch: below it 32 -> 64 at 14 x 14 batch 1, 2, 4 1.49x, 1.14x, 1.04x; 32 -> 128
# at 14 batch 1, 2, 4 1.24x, 1.77x, 1.28x; 96 -> 192 at 14 batch 1, 2 1.51x, 1.06x (batch 4
# 0.75x); at 16 x 16 batch 1 32 -> 64 1.30x, 64 -> 64 0.92x, 128 -> 128 1.18x, 192 -> 192 1.41x;
# batch 2 1.26x, 0.83x, 0.85x, 0.91x; at 8 x 8 batch 4 1.37x-1.77x, batch 8 0.91x-1.35x. From it:
# 16 x 16 batch 4 0.57x-0.87x, batch 8 0.48x-0.68x; 14 x 14 batch 8 0.70x-1.01x, batch 16
# 0.56x-0.82x; 28 x 28 batch 1 0.69x-0.81x (one worker's 49 tiles), batch 2 0.52x-1.01x.
# (It replaced a minimum of 16 tiles in the batch, which took the layers measured below it.)
CHUNK_BYTES = 1 << 21  # V (and M) of a chunk of images, a worker (at least one image)
# V (and M) of a band of tile rows, where one image's exceed CHUNK_BYTES (at least a tile row).
# Bands of 2, 4 and 8 MiB, against row strips (as above): 128 -> 128 7 x 7 at 46 x 46 0.70x,
# 0.67x, 0.69x; 185 -> 128 0.89x (bands of one tile row: 26 tiles a product), 0.69x, 0.64x;
# 64 -> 64 5 x 5 at 112 x 112 (batch 2) 0.47x, 0.47x, 0.52x. (Before bands such images ran as
# row strips: one image's V of 13 to 20 MiB, a worker.)
BAND_BYTES = 1 << 22
# Scratch names: conv_gemm's, so that every convolution of the process shares one set of buffers
TILES, PRODUCTS, WEIGHT_GRAD = "columns", "map", "weight_grad"


def applies(kernel, stride, dilation, groups, channels, outputs, out_size, batch):
    """Whether a convolution runs as 2-D Winograd: a square kernel of a side in ``TILE`` (5 or
    7), stride 1, dilation 1, at least ``MIN_CHANNELS`` input and output channels a group,
    outputs of at least ``MIN_OUTPUT_SIZE`` rows and columns, those channels times the shorter
    output side at least ``MIN_CHANNELS_BY_SIZE``, and at least ``MIN_SHARE_OUTPUTS`` output
    pixels in half the batch (rounded up). (An image of any size: larger than a chunk, it runs
    in bands.)"""
    if kernel[0] != kernel[1] or kernel[0] not in TILE or stride != (1, 1) or dilation != (1, 1):
        return False
    fewest = min(channels, outputs) // groups
    return (
        fewest >= MIN_CHANNELS
        and min(out_size) >= MIN_OUTPUT_SIZE
        and fewest * min(out_size) >= MIN_CHANNELS_BY_SIZE
        and -(-batch // 2) * out_size[0] * out_size[1] >= MIN_SHARE_OUTPUTS
    )


@jit
def _deinterleave2(source, pad_h, pad_w, m, slots_h, slots_w, phases):
    """phases[s, t, (i slots_w + j) C + c] = source[i m + s - pad_h, j m + t - pad_w, c] (0
    outside source) for i < slots_h, j < slots_w: the (H, W, C) image split into its m x m
    phases, channels innermost."""
    height, width, inner = source.shape
    row_items = slots_w * inner
    for s in range(m):
        lo_h, hi_h = _phase_range(s, m, pad_h, height, slots_h)
        for t in range(m):
            lo_w, hi_w = _phase_range(t, m, pad_w, width, slots_w)
            plane = phases[s, t]
            for i in range(slots_h):
                row = plane[i * row_items : (i + 1) * row_items]
                if i < lo_h or i >= hi_h:
                    for q in range(row_items):
                        row[q] = 0
                    continue
                for q in range(lo_w * inner):
                    row[q] = 0
                for q in range(hi_w * inner, row_items):
                    row[q] = 0
                src_row = source[i * m + s - pad_h]
                for j in range(lo_w, hi_w):
                    src = src_row[j * m + t - pad_w]
                    dst = row[j * inner : (j + 1) * inner]
                    for c in range(inner):
                        dst[c] = src[c]


@jit
def _interleave2(phases, pad_h, pad_w, m, slots_h, slots_w, target, add):
    """target[i m + s - pad_h, j m + t - pad_w, c] = phases[s, t, (i slots_w + j) C + c] (+= with
    ``add``) for every position of target (H, W, C) a slot holds: the inverse of
    ``_deinterleave2``."""
    height, width, inner = target.shape
    row_items = slots_w * inner
    for s in range(m):
        lo_h, hi_h = _phase_range(s, m, pad_h, height, slots_h)
        for t in range(m):
            lo_w, hi_w = _phase_range(t, m, pad_w, width, slots_w)
            plane = phases[s, t]
            for i in range(lo_h, hi_h):
                dst_row = target[i * m + s - pad_h]
                for j in range(lo_w, hi_w):
                    src = plane[i * row_items + j * inner : i * row_items + (j + 1) * inner]
                    dst = dst_row[j * m + t - pad_w]
                    if add:
                        for c in range(inner):
                            dst[c] += src[c]
                    else:
                        for c in range(inner):
                            dst[c] = src[c]


@jit
def _extent(bt, m, tiles_h, slots_w, channels):
    """n, the phase planes' slot rows (T_h + shift), and the items of a phase plane and of an
    image's tiles, channels last."""
    n = bt.shape[0]
    slots_h = tiles_h + (n - 1) // m
    return n, slots_h, slots_h * slots_w * channels, tiles_h * slots_w * channels


@jit
def input_tiles(image, pad_h, pad_w, m, bt, tiles_h, slots_w, v, base, phases, z):
    """v[a n + b, base + (i S + j) C + c] = (B^T d B)[a, b] for tile (i, j) of one image
    (H, W, C), S = ``slots_w``; d is channel c's n x n padded patch at (i m - pad_h,
    j m - pad_w). ``phases`` (m, m, (L + shift) C) and ``z`` (n, m, L C) scratch, L =
    (T_h + shift) S."""
    channels = image.shape[2]
    n, slots_h, plane, tiles = _extent(bt, m, tiles_h, slots_w, channels)
    for s in range(m):
        for t in range(m):
            for q in range(plane, phases.shape[2]):
                phases[s, t, q] = 0
    _deinterleave2(image, pad_h, pad_w, m, slots_h, slots_w, phases)
    for s in range(m):  # along the rows: z[b, s] = (d B)[., b] on phase row s
        for b in range(n):
            _combine(bt[b], phases[s], channels, m, z[b, s, :plane])
    for a in range(n):  # along the columns
        for b in range(n):
            _combine(bt[a], z[b], slots_w * channels, m, v[a * n + b, base : base + tiles])


@jit
def input_tiles_adjoint(dv, pad_h, pad_w, m, bt, tiles_h, slots_w, base, phases, z, image, add):
    """The adjoint of ``input_tiles`` where dV is 0 on the unused tiles: image (H, W, C) =
    B dV B^T, overlapping patches summed (written; added with ``add``, where the tiles are a
    band's: only the rows its patches cover are touched)."""
    channels = image.shape[2]
    n, slots_h, plane, tiles = _extent(bt, m, tiles_h, slots_w, channels)
    for b in range(n):
        for s in range(m):
            row = z[b, s]
            for q in range(plane):
                row[q] = 0
    for a in range(n):
        for b in range(n):
            _spread(bt[a], dv[a * n + b, base : base + tiles], slots_w * channels, m, z[b])
    for s in range(m):
        for t in range(m):
            row = phases[s, t]
            for q in range(row.shape[0]):
                row[q] = 0
        for b in range(n):
            _spread(bt[b], z[b, s, :plane], channels, m, phases[s])
    _interleave2(phases, pad_h, pad_w, m, slots_h, slots_w, image, add)


@jit
def output_tiles(mm, bias, m, at, w1, phases):
    """phases[s, t, p K + o] = (A^T M A)[s, t] + bias[o] for every tile p of a chunk and
    output o: mm (n^2, P K), ``w1`` (m, n, P K) scratch."""
    outputs = bias.shape[0]
    n = at.shape[1]
    positions = mm.shape[1]
    for a in range(n):  # along the rows of each tile: w1[t, a] = (M A)[a, t]
        for t in range(m):
            _combine(at[t], mm[a * n : (a + 1) * n], 0, n, w1[t, a])
    for s in range(m):
        for t in range(m):
            out = phases[s, t, :positions]
            _combine(at[s], w1[t], 0, n, out)
            for p in range(positions // outputs):
                row = out[p * outputs : (p + 1) * outputs]
                for o in range(outputs):
                    row[o] += bias[o]


@jit
def output_tiles_adjoint(phases, m, at, w1, dm):
    """The adjoint of ``output_tiles`` (without bias): dM = A dY A^T from dY's phases (m, m,
    P K) (0 past the output's end, so 0 on the unused tiles); ``w1`` (m, n, P K) scratch."""
    n = at.shape[1]
    positions = dm.shape[1]
    for t in range(m):
        for a in range(n):
            row = w1[t, a]
            for q in range(positions):
                row[q] = 0
        for s in range(m):
            _spread(at[s], phases[s, t, :positions], 0, n, w1[t])
    for q in range(n * n):
        row = dm[q]
        for p in range(positions):
            row[p] = 0
    for a in range(n):
        for t in range(m):
            _spread(at[t], w1[t, a], 0, n, dm[a * n : (a + 1) * n])


class SquareConvolution(SharedFilters):
    """One 5 x 5 or 7 x 7 stride-1 convolution geometry run as F(m x m, r x r).

    ``image_shape`` (N, C, H, W), ``outputs`` K, kernel side ``r``, ``pad`` (ph, pw),
    ``groups`` (each group's channels and outputs run as a convolution of their own). Same
    interface as the other Winograd convolutions: ``filters(weight)`` transforms a (K, C /
    groups, r, r) weight into U (once per pass), then ``forward(x, bias, y)`` and ``backward(x,
    dy, dx, weight_diff)`` use it. Inside, images are (H, W, C): the transforms run over a phase
    plane's slots and channels at once (long loops even for small images), V[a, b] is
    (tiles, C) and M[a, b] (tiles, K). Weight gradients are summed per worker, then over the
    workers (worker 0 first), so they can differ in the last bits between thread counts.

    A worker runs its images in pieces: chunks of whole images whose V (and M) fit
    ``CHUNK_BYTES``, or, for an image larger than that, bands of its tile rows that fit it
    (``bands``): a band's patches are the image's at an offset of rows (its padding on top is
    the image's less the rows above it), its outputs rows of the image's output, and in the
    backward its input gradient is added into the image's, the rows its patches share with
    the next band's summed.
    """

    def __init__(self, image_shape, outputs, r, pad, dtype, groups=1):
        self.batch, channels, self.height, self.width = image_shape
        self.groups, self.r = groups, r
        self.channels, self.outputs = channels // groups, outputs // groups  # a group's
        self.pad_h, self.pad_w = pad
        self.dtype = np.dtype(dtype)
        self.m = TILE[r]
        self.n = self.m + r - 1
        self.shift = (self.n - 1) // self.m
        self.out_h, self.out_w = self.height + 2 * self.pad_h - r + 1, self.width + 2 * self.pad_w - r + 1
        self.tiles_h = -(-self.out_h // self.m)
        self.slots_w = -(-self.out_w // self.m) + self.shift
        self.image_tiles = self.tiles_h * self.slots_w
        at, g, bt = transforms(self.m, r)
        self.at, self.bt = at.astype(self.dtype), bt.astype(self.dtype)
        self.transform = np.kron(g, g).astype(self.dtype)  # (n^2, r^2): G g G^T from g
        row_bytes = self.n**2 * max(self.channels, self.outputs) * self.slots_w * self.dtype.itemsize
        image_bytes = row_bytes * self.tiles_h
        self.chunk_images = max(1, CHUNK_BYTES // image_bytes)
        self.bands = self._bands(self.tiles_h if image_bytes <= CHUNK_BYTES else max(1, BAND_BYTES // row_bytes))
        self.u_shape = (groups, self.n**2, self.outputs, self.channels)
        self.zero_bias = np.zeros(outputs, self.dtype)

    def _bands(self, fit):
        """(first, stop) tile rows of each band of an image, ``fit`` tile rows at most, of
        equal heights but the last; one band of every row where the image fits."""
        count = -(-self.tiles_h // fit)
        rows = -(-self.tiles_h // count)
        return [(top, min(top + rows, self.tiles_h)) for top in range(0, self.tiles_h, rows)]

    def filters(self, weight):
        """U[a n + b] = (G g G^T)[a, b] for every (output, channel) filter g of ``weight``, as
        (K, C) matrices (the data gradient's; the forward takes a transposed copy)."""
        filters = weight.reshape(self.groups, -1, self.r**2)
        for group in range(self.groups):
            transform_filters(self.transform, filters[group], self.u[group])

    def _group(self, group):
        """The channels and the outputs of ``group``, as slices."""
        c, k = self.channels, self.outputs
        return slice(group * c, (group + 1) * c), slice(group * k, (group + 1) * k)

    def _pieces(self, worker, workers):
        """``worker``'s share of the batch as (first, count, band) pieces: chunks of at most
        ``chunk_images`` whole images, or one image's bands in turn."""
        share = parallel.share(worker, workers, self.batch)
        if len(self.bands) == 1:
            return [(first, count, self.bands[0]) for first, count in chunked(share, self.chunk_images)]
        return [(image, 1, band) for image in share for band in self.bands]

    def _geometry(self, band):
        """The input transform's arguments after the image for ``band``'s tiles: padding on
        top (the image's, less the band's rows above), on the left, tile, B^T, tiles high,
        slots wide."""
        return (self.pad_h - band[0] * self.m, self.pad_w, self.m, self.bt, band[1] - band[0], self.slots_w)

    def _output_rows(self, output, band):
        """The rows of an (OH, OW, K) output that ``band``'s tiles make."""
        return output[band[0] * self.m : min(band[1] * self.m, self.out_h)]

    def _buffers(self, worker, count, band):
        """This worker's V (n^2, P, C), M (n^2, P, K), w1 (m, n, P K), output phases (m, m,
        P K), input phases (m, m, (L + shift) C), z (n, m, L C), an image (H, W, C) and an
        output (OH, OW, K) with channels last, and the input gradient of an image cut in bands
        (H, W, C); P = count images' tiles of ``band``, L = (its tile rows + shift) S."""
        n, m, c, k = self.n, self.m, self.channels, self.outputs
        rows = band[1] - band[0]
        positions = count * rows * self.slots_w
        plane = (rows + self.shift) * self.slots_w
        items = {
            "v": (TILES, (n * n, positions, c)),
            "mm": (PRODUCTS, (n * n, positions, k)),
            "w1": ("winograd2d_w1", (m, n, positions * k)),
            "out_phases": ("winograd2d_out_phases", (m, m, positions * k)),
            "phases": ("winograd2d_phases", (m, m, (plane + self.shift) * c)),
            "z": ("winograd2d_z", (n, m, plane * c)),
            "image": ("winograd2d_image", (self.height, self.width, c)),
            "output": ("winograd2d_output", (self.out_h, self.out_w, k)),
        }
        if len(self.bands) > 1:
            items["gradient"] = ("winograd2d_gradient", (self.height, self.width, c))
        return {
            key: parallel.scratch(worker, name, int(np.prod(shape)), self.dtype).reshape(shape)
            for key, (name, shape) in items.items()
        }

    def _workers(self):
        return min(parallel.thread_count(), self.batch)

    def _input_tiles(self, x, first, count, band, b):
        """V of ``band``'s tiles of images first .. first + count - 1 of x (N, C, H, W); an
        image is copied channels last at its first band (its later bands read that copy)."""
        v = b["v"].reshape(self.n**2, -1)
        geometry = self._geometry(band)
        tiles = (band[1] - band[0]) * self.slots_w
        for k in range(count):
            if band[0] == 0:
                np.copyto(b["image"], x[first + k].transpose(1, 2, 0))
            input_tiles(b["image"], *geometry, v, k * tiles * self.channels, b["phases"], b["z"])

    def forward(self, x, bias, y):
        """y = conv(x, weight) + bias (bias may be None), with U from ``filters``."""
        bias = self.zero_bias if bias is None else bias
        # U as (C, K) matrices, contiguous: numpy's batched products ran twice as fast on
        # contiguous operands as on the transposed view (99 against 49 GFLOP/s at NiN's conv2).
        # In scratch, shared by every such layer of the process (the backward needs no copy).
        u_t = parallel.scratch(0, "winograd2d_filters_t", self.u.size, self.dtype)
        u_t = u_t.reshape(self.groups, self.n**2, self.channels, self.outputs)
        np.copyto(u_t, self.u.transpose(0, 1, 3, 2))

        def group_pieces(worker, group, pieces, _):
            channels, outputs = self._group(group)
            self._forward_pieces(worker, pieces, x[:, channels], bias[outputs], y[:, outputs], u_t[group])

        self._run_groups(group_pieces)

    def _by_groups(self):
        """Whether the groups are shared out over the workers, each group whole in one (all
        its images): a grouped layer of fewer images than workers, whose pieces of images would
        leave workers idle (AlexNet's conv2 at batch 1 ran on one core)."""
        return self.groups > 1 and self.batch < parallel.thread_count()

    def _run_groups(self, group_pieces, after=None):
        """``group_pieces(worker, group, pieces, index)`` for every group: by groups
        (``_by_groups``), each worker all pieces of its run of groups, ``index`` the group's
        place in that run; else group by group, each worker its share of the batch
        (``_pieces``), ``index`` 0. Then ``after(group, holders)`` (when given) for every
        group, ``holders`` the (worker, index) pairs that ran its pieces."""
        if self._by_groups():
            every = self._pieces(0, 1)
            workers = min(parallel.thread_count(), self.groups)
            starts = [parallel.share(worker, workers, self.groups).start for worker in range(workers)]

            def run(worker, group):
                group_pieces(worker, group, every, group - starts[worker])

            parallel.run_parts(run, self.groups, workers)
            if after is not None:
                for worker in range(workers):
                    for group in parallel.share(worker, workers, self.groups):
                        after(group, [(worker, group - starts[worker])])
            return
        workers = self._workers()
        for group in range(self.groups):

            def share(worker, _, group=group):
                group_pieces(worker, group, self._pieces(worker, workers), 0)

            parallel.run_parts(share, workers, workers)
            if after is not None:
                after(group, [(worker, 0) for worker in range(workers)])

    def _forward_pieces(self, worker, pieces, x, bias, y, u_t):
        """y[piece] = conv(x, U) + bias for each of ``pieces`` ((first, count, band) of
        ``_pieces``), in ``worker``'s buffers."""
        last = self.bands[-1]
        for first, count, band in pieces:
            b = self._buffers(worker, count, band)
            self._input_tiles(x, first, count, band, b)
            np.matmul(b["v"], u_t, out=b["mm"])
            phases = b["out_phases"]
            output_tiles(b["mm"].reshape(self.n**2, -1), bias, self.m, self.at, b["w1"], phases)
            span = (band[1] - band[0]) * self.slots_w * self.outputs
            for k in range(count):
                out = phases[:, :, k * span : (k + 1) * span]
                rows = self._output_rows(b["output"], band)
                _interleave2(out, 0, 0, self.m, band[1] - band[0], self.slots_w, rows, False)
                if band == last:
                    np.copyto(y[first + k], b["output"].transpose(2, 0, 1))

    def backward(self, x, dy, dx, weight_diff):
        """dx = the input gradient (when dx is not None; written), weight_diff += the weight
        gradient (when it is not None), with U from ``filters``. Each worker sums its weight
        gradient dU in a partial of its own (by groups, one for each of its groups), added into
        the group's rows of ``weight_diff`` once the group is done. Without dx, U is read by
        no one: worker 0's partial (by groups, every group's) is then the group's U itself."""
        if self._split_backward(x, dy, dx, weight_diff):
            return
        by_groups = self._by_groups()
        shape = self.u_shape[1:]
        size = int(np.prod(shape))
        held = -(-self.groups // parallel.thread_count()) if by_groups else 1  # groups a worker

        def partial_of(worker, group, index):
            if dx is None and (by_groups or worker == 0):
                return self.u[group]
            buffer = parallel.scratch(worker, WEIGHT_GRAD, held * size, self.dtype)
            return buffer[index * size : (index + 1) * size].reshape(shape)

        def group_pieces(worker, group, pieces, index):
            channels, outputs = self._group(group)
            group_dx = None if dx is None else dx[:, channels]
            partial = None if weight_diff is None else partial_of(worker, group, index)
            self._backward_pieces(worker, pieces, x[:, channels], dy[:, outputs], group_dx, partial, self.u[group])

        def add_partials(group, holders):
            partials = [partial_of(worker, group, index) for worker, index in holders]
            add_weight_grad(partials, self.transform, weight_diff[self._group(group)[1]])

        self._run_groups(group_pieces, None if weight_diff is None else add_partials)

    def _backward_pieces(self, worker, pieces, x, dy, dx, partial, u):
        """For each of ``pieces``, in ``worker``'s buffers: ``partial`` (when not None) =, then
        +=, dU of the piece, and dx[piece] = the input gradient (when dx is not None)."""
        banded, last = len(self.bands) > 1, self.bands[-1]
        for index, (first, count, band) in enumerate(pieces):
            b = self._buffers(worker, count, band)
            dm, v, phases = b["mm"], b["v"], b["out_phases"]
            span = (band[1] - band[0]) * self.slots_w * self.outputs
            for k in range(count):
                if band[0] == 0:
                    np.copyto(b["output"], dy[first + k].transpose(1, 2, 0))
                out = phases[:, :, k * span : (k + 1) * span]
                rows = self._output_rows(b["output"], band)
                _deinterleave2(rows, 0, 0, self.m, band[1] - band[0], self.slots_w, out)
            output_tiles_adjoint(phases, self.m, self.at, b["w1"], dm.reshape(self.n**2, -1))
            if partial is not None:
                self._input_tiles(x, first, count, band, b)
                if index == 0:
                    np.matmul(dm.transpose(0, 2, 1), v, out=partial)
                else:
                    add_products(dm.transpose(0, 2, 1), v.transpose(0, 2, 1), partial)
            if dx is not None:
                np.matmul(dm, u, out=v)
                flat = v.reshape(self.n**2, -1)
                geometry = self._geometry(band)
                tiles = (band[1] - band[0]) * self.slots_w
                # an image in bands adds each band's part into its gradient (made 0 first)
                image = b["gradient"] if banded else b["image"]
                if banded and band[0] == 0:
                    image.fill(0)
                for k in range(count):
                    base = k * tiles * self.channels
                    input_tiles_adjoint(flat, *geometry, base, b["phases"], b["z"], image, banded)
                    if band == last:
                        np.copyto(dx[first + k], image.transpose(2, 0, 1))
