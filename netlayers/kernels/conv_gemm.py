"""The GEMM side of convolution: the batch cut into chunks of images, each chunk's column matrix
in a small shared workspace, and the matrix products against it.

Convolutions run as im2col + matrix products (numpy BLAS), a chunk of images at a time. A
chunk is at most as many images as fit a column buffer of ``COLUMN_CHUNK_BYTES`` (at least one),
so the buffer stays in cache and its size does not grow with the batch; the chunks are cut so
that they share out evenly over the workers of ``netlayers.parallel`` (each runs im2col, the
product, the reorder and col2im of its chunks, with single-threaded BLAS), and the buffers are
the workers' scratch, shared by every convolution of the process (as Caffe shares one column
buffer). The backward pass makes the columns again instead of keeping them (as Caffe does): a
second im2col costs less than the memory of a whole batch's columns.

A chunk of n images has the channel-major column matrix (K, n P) (see
``netlayers.kernels.im2col``), so ``W @ col`` is one product per chunk and group. For n = 1 this
is the image's own (K, P) matrix and the product lands in NCHW directly; for n > 1 the (O, n P)
product goes through a reorder (``onp_to_nop``), and a map read as a matrix through the reverse
(``nop_to_onp``). A 1x1 convolution with stride 1 and no padding needs no im2col for n = 1.
Padded geometries with horizontal stride 1 copy the chunk zero-padded first
(``im2col.pad_images``) and run im2col without padding, on whole rows. A layer without a data
gradient (a net's first layer) takes its weight gradient as per-image products with the NCHW
output gradient read in place, one batched product a piece (``add_weight_grad_by_image``), with
no reorder (LeNet's conv1, batch 64, 2 workers: 0.57 ms; 1.64 through the reorder with the
earlier per-image loop at 1.24 in the same run).

In convolution terms the *image* side is im2col's input (C_img channels, K = C_img kh kw column
rows) and the *map* side is the product's output (C_map channels, P pixels per image); the
weight is a (C_map, K / group) matrix per group. Convolution: image = bottom, map = top.
Deconvolution: image = top, map = bottom (the same weight matrix).

Fewer images than workers (a batch of 1 on 2 cores) would leave workers idle or cut every
product thin; a Convolution's passes then run by input channels instead
(``forward_by_channels``, ``backward_by_channels``): each worker makes the columns of its
channels, adds its part of the outputs (W[:, rows] col, summed over the workers), and writes its
columns of the weight gradient and its channels of the input gradient, where nothing overlaps.
A grouped Convolution's passes then run by groups (``forward_by_groups``,
``backward_by_groups``): each worker takes whole groups, their columns and products, and writes
their outputs, weight-gradient rows and input-gradient channels; nothing is added up.

Weight gradients are summed per worker and then over the workers, so they can differ in the
last bits between thread counts (never between runs with the same count); so can the outputs
of a pass by channels.
"""

import math

import numpy as np

from .. import parallel
from . import blas
from . import im2col as conv_kernels

COLUMN_CHUNK_BYTES = 1 << 20  # a column buffer of 1 MiB a worker: half a core's L2 cache
ONE_BY_ONE_DIRECT_BYTES = 1 << 16  # 1x1 inputs from 64 KiB an image go image by image,
ONE_BY_ONE_MIN_PLANE = 64  # on planes of at least 64 pixels: on fewer, each image's weight-gradient
# product has an inner dimension of the plane (49 at ResNet-50's 7 x 7) and adds into a whole
# weight-sized partial; in chunks of images (reordered) the inner dimension is the chunk's pixels.
# Forward + backward, batch 8, 2 workers: 2048 -> 512 at 7 x 7 19.1-25.1 -> 14.7-19.2 ms,
# 512 -> 2048 17.3 -> 14.5 (batch 4: 13.8 -> 9.7); 14 x 14 planes are not affected (their
# chunks hold one image).
# With ``map_direct`` (the Convolution layer asks for it), maps (C_map x P) from 512 KiB an image
# go image by image too: the product then lands in NCHW, no reorder. A 3 -> 64 3x3 layer at
# 64 x 64 (batch 8, 1 MiB maps) 1.09x-1.13x forward + backward (median, per-round median).
MAP_DIRECT_BYTES = 1 << 19
# A layer whose weight (a group's) is larger than COLUMN_CHUNK_BYTES takes its weight's size, up
# to this, as its column budget: the weight is then read once for as many columns as it has
# entries, and a small image is not cut into bands whose every product re-reads the whole
# weight and adds into a weight-sized gradient partial. Forward + backward of a layer, 1 against
# 4 MiB, in one run: VGG-16's conv5_3 (512 -> 512 at 14 x 14, batch 2) 50.5 -> 36.8 ms,
# 512 -> 512 at 7 x 7 (batch 4) 24.5 -> 20.2, AlexNet's conv3 (256 -> 384 at 13 x 13,
# batch 8) 49.5 -> 43.2; layers with weights under 1 MiB are not affected.
WEIGHT_SIZED_COLUMNS_MAX_BYTES = 1 << 24
# A band has at least this many pixels (whole output rows; fewer where its columns would pass
# WEIGHT_SIZED_COLUMNS_MAX_BYTES), whatever the budget: a band of a few pixels makes products
# too thin to run well, and every band's weight-gradient product adds into a weight-sized
# partial. One image (batch 1) of 1024 channels at 35 x 35, 7x1/2 -> 32 outputs (15 x 18
# pixels): 8 bands of 36 pixels, forward + backward 20.8-21.4 ms; one band of 270, 8.4-11.5
# (PyTorch 8.9-9.4). 384 -> 32 7x7/2 at 56 x 56 (25 x 25 out): 25 bands of 25 pixels 49-58 ms,
# 3 of 225 (16 MiB of columns) 41-46 (PyTorch 17-19: its direct convolution makes no columns).
# No layer of the benchmark's nets or of the model zoo's has bands under 256 pixels.
MIN_BAND_PIXELS = 256
# Weight-gradient partials of 1 MiB or more a group are made in the weight's own layout (map
# col^T); smaller ones transposed (col map^T), which OpenBLAS ran faster on small weights
# (cifar10_quick's conv2, 32 x 800: 85 against 58 GFLOP/s single-threaded) but which must be
# transposed into the weight: on large weights that costs more than the product gains (512 x
# 4096: 3.4 against 3.8 ms product, then 3-5 ms of transposed adds; 2048 x 512: 1.4 against 1.1).
DIRECT_WEIGHT_GRAD_BYTES = 1 << 20
# An image whose bands of output rows make columns of this many budgets or more, under a
# weight smaller than one budget, makes its columns a few input channels at a time
# (``ColumnChunks.channel_pieces``): a band of many column rows (K = C kh kw) and few outputs
# streams columns far larger than the cache through products whose every column value serves
# only as many multiply-adds as there are outputs. Deep Speech 2's second layer (32 -> 32,
# 21 x 11, stride 2 x 1, on 81 x 200 maps, batch 8: bands of 2 output rows, 11.8 MB of
# columns) runs forward + backward in 0.69x-0.82x the time by pieces (paired rounds, three
# runs; forward alone 0.74x-0.87x); no layer of the benchmark's other nets or the model zoo's
# has such bands.
CHANNEL_PIECES_FROM = 4
# A piece takes whole input channels, about this many column rows (at least one channel).
# The layer above, paired rounds against whole bands: pieces of 1848 rows (8 channels) 0.69x-
# 0.82x, of 462 0.81x-0.89x, of 924 0.91x, of 3696 (two pieces) 0.89x.
CHANNEL_PIECE_ROWS = 2048
# A pass of fewer images than workers runs by channels (``forward_by_channels``,
# ``backward_by_channels``) from this many input channels a worker.
MIN_PART_CHANNELS = 8


class ChannelSums:
    """sums[c] = sum over n and p of m[n, c, p] for an (N, C, P) array, as one matrix-vector
    product with a vector of ones (BLAS) and a sum over N (a serial loop measured 5x slower:
    float sums do not vectorize without reassociation)."""

    def __init__(self, batch, channels, size, dtype):
        self.shape = (batch, channels, size)
        self.ones = np.ones(size, dtype)
        self.partial = np.empty((batch, channels), dtype)
        self.out = np.empty(channels, dtype)

    def __call__(self, m):
        np.matmul(m.reshape(self.shape), self.ones, out=self.partial)
        return np.sum(self.partial, axis=0, out=self.out)


class Piece:
    """What one step of a convolution works on: images [first, stop) (a chunk), or, when one
    image's columns exceed the chunk budget, one band of its output rows: map pixels
    [pixels.start, pixels.stop) of image ``first``, the band's tap table ``table``, ``band`` its
    index (0 for a whole chunk)."""

    __slots__ = ("first", "stop", "band", "pixels", "table")

    def __init__(self, first, stop, band, pixels, table):
        self.first, self.stop, self.band, self.pixels, self.table = first, stop, band, pixels, table

    @property
    def images(self):
        return self.stop - self.first


class ColumnChunks:
    """One convolution geometry cut into pieces (chunks of images, or bands of one image's
    output rows), and the per-piece steps.

    ``image_shape`` is (N, C_img, H, W); ``map_size`` the (OH, OW) of the map side (im2col's
    output plane). Each method takes the worker index (for its scratch buffers) and a
    :class:`Piece` from :meth:`run`:

    - ``columns(worker, image, piece)``: the piece's (K, n P) column matrix of ``image``
    - ``to_image(col, image, piece)``: col2im of a piece's columns into ``image`` (a chunk is
      written; the bands of an image are added up, the first band clearing the image)
    - ``map_matrix(worker, m, piece)``: the piece of an NCHW map as its (C_map, n P) matrix
    - ``map_from_col(worker, weight, col, m, piece, bias)``: m[piece] = W col (+ bias)
    - ``image_from_map(worker, weight, matrix, image, piece)``: image[piece] = col2im(W^T matrix)
    - ``add_weight_grad(worker, matrix, col, first, weight_diff)``: the worker's share of the
      weight gradient += matrix col^T (worker 0's added into ``weight_diff`` itself when the
      layout allows, the others' into partials)
    - ``add_weight_grad_by_image(worker, m, col, piece, first, weight_diff)``: the same from
      the NCHW map
    - ``weight_grad_total(weight_diff)``: weight_diff += the partials

    ``map_direct``: one-image chunks for maps of ``MAP_DIRECT_BYTES`` or more (see there).

    Bands: an image whose columns exceed the budget (``COLUMN_CHUNK_BYTES``, or the weight's
    size: ``WEIGHT_SIZED_COLUMNS_MAX_BYTES``) is cut into bands of output
    rows that fit it (at least one row), so the buffer stays bounded however large the image;
    the bands of an image go to one worker, one after another.
    """

    def __init__(
        self, *, image_shape, kernel, pad, stride, dilation, map_channels, map_size, groups, dtype, map_direct=False
    ):
        self.batch, self.image_channels = image_shape[0], image_shape[1]
        self.image_shape = tuple(image_shape)
        self.kernel, self.pad, self.stride, self.dilation = kernel, pad, stride, dilation
        self.map_shape = tuple(map_size)
        self.map_channels, self.groups = map_channels, groups
        self.rows = self.image_channels * kernel[0] * kernel[1]
        self.plane = map_size[0] * map_size[1]
        self.dtype = np.dtype(dtype)
        self.one_by_one = kernel == (1, 1) and stride == (1, 1) and pad == (0, 0)
        self.padded_shape = self._padded_shape()
        image_bytes = self.rows * self.plane * self.dtype.itemsize
        map_bytes = map_channels * self.plane * self.dtype.itemsize if map_direct else 0
        self.map_group, self.row_group = map_channels // groups, self.rows // groups
        weight_bytes = self.map_group * self.row_group * self.dtype.itemsize
        self.budget = max(COLUMN_CHUNK_BYTES, min(weight_bytes, WEIGHT_SIZED_COLUMNS_MAX_BYTES))
        image_by_image = self.one_by_one and self.plane >= ONE_BY_ONE_MIN_PLANE
        self.parts = self.chunk_count(self.batch, image_bytes, image_by_image, map_bytes, self.budget)
        self.chunk = -(-self.batch // self.parts)  # images in the largest chunk
        self.table = conv_kernels.geometry_table(image_shape, kernel, pad, stride, dilation, map_size)
        self.weight_grad_direct = weight_bytes >= DIRECT_WEIGHT_GRAD_BYTES
        # a transposed partial's row (g, r) lands at g * group size + r of the weight's row m
        group_size = self.map_group * self.row_group
        self.weight_offsets = (np.arange(groups)[:, None] * group_size + np.arange(self.row_group)).reshape(-1)
        self.bands = self._bands(image_bytes)
        self.pieces = [self._pieces_of(part) for part in range(self.parts)]  # each part's pieces
        self.zeros = np.zeros(max(self.rows, map_channels), self.dtype)  # a bias of 0 for the reorders
        self.used_workers = self.workers()  # the workers of the last ``run``
        self._channel_parts = None  # made by ``channel_parts`` when first asked
        self._group_parts = None  # made by ``group_parts`` when first asked
        self._channel_pieces = False  # made by ``channel_pieces`` when first asked

    @staticmethod
    def chunk_count(batch, column_bytes, one_by_one_direct, map_bytes, budget):
        """How many chunks the batch is cut into: chunks of at most as many images as fit
        ``budget`` of columns (``column_bytes`` an image), a multiple of the workers
        (as the batch allows), so that every worker gets the same number of chunks and of
        images, give or take one (32 images in 5 chunks of at most 7 went 3 chunks to one
        worker, 2 to the other: a 64 -> 128 3x3/2 layer at 16 px, forward + backward 9.4 ->
        7.8 ms in 6 chunks). A 1x1 convolution (``one_by_one_direct``: of a plane of at least
        ``ONE_BY_ONE_MIN_PLANE`` pixels) whose image is ``ONE_BY_ONE_DIRECT_BYTES`` or more takes
        1 image a chunk (its products then read and write NCHW with no reorder), as does an
        image whose map (``map_bytes``) is ``MAP_DIRECT_BYTES`` or more."""
        if (one_by_one_direct and column_bytes >= ONE_BY_ONE_DIRECT_BYTES) or map_bytes >= MAP_DIRECT_BYTES:
            return batch
        threads = parallel.thread_count()
        share = -(-batch // threads)  # a worker's images
        fit = max(1, budget // column_bytes)
        return min(batch, -(-share // fit) * threads)

    def _padded_shape(self):
        """The zero-padded chunk shape im2col reads (``conv_kernels.pad_images``: whole-row
        copies, 1.7x-2.6x faster on short rows) when the geometry is padded with horizontal
        stride 1; else None (im2col reads the images themselves)."""
        if self.pad == (0, 0) or self.stride[1] != 1:
            return None
        height, width = self.image_shape[2:]
        return (self.image_channels, height + 2 * self.pad[0], width + 2 * self.pad[1])

    def _bands(self, image_bytes):
        """(pixels, tap table) of each band of output rows, or None when images are not cut."""
        out_h, out_w = self.map_shape
        row_bytes = image_bytes // out_h
        if self.one_by_one or image_bytes <= self.budget or out_h == 1:
            return None
        pixels = min(MIN_BAND_PIXELS, WEIGHT_SIZED_COLUMNS_MAX_BYTES // (row_bytes // out_w))
        bands = -(-out_h // max(1, self.budget // row_bytes, -(-pixels // out_w)))
        if bands == 1:
            return None
        rows = -(-out_h // bands)  # bands of equal height (the last one may be shorter)
        width = self.image_shape[3]
        return [
            (
                slice(top * out_w, min(top + rows, out_h) * out_w),
                conv_kernels.band_table(self.table, top, min(rows, out_h - top), self.stride[0], width),
            )
            for top in range(0, out_h, rows)
        ]

    def _pieces_of(self, part):
        first, stop = part * self.batch // self.parts, (part + 1) * self.batch // self.parts
        if self.bands is None:
            return [Piece(first, stop, 0, slice(0, self.plane), self.table)]
        return [Piece(first, stop, i, pixels, table) for i, (pixels, table) in enumerate(self.bands)]

    def last_band(self, piece):
        """Whether ``piece`` ends its images (a chunk, or an image's last band)."""
        return self.bands is None or piece.band == len(self.bands) - 1

    def _scratch(self, worker, name, *shape):
        size = math.prod(shape)
        return parallel.scratch(worker, name, size, self.dtype).reshape(shape)

    def _band_rows(self, piece):
        return (piece.pixels.stop - piece.pixels.start) // self.map_shape[1]

    def columns(self, worker, image, piece):
        a, b, n = piece.first, piece.stop, piece.images
        if self.one_by_one and n == 1:
            return image[a].reshape(self.rows, self.plane)
        size = piece.pixels.stop - piece.pixels.start
        col = self._scratch(worker, "columns", self.rows, n, size)
        chunk = image[a:b]
        if self.one_by_one:
            conv_kernels.nop_to_onp(chunk.reshape(n, self.rows, self.plane), col)
        elif self.bands is not None:
            conv_kernels.im2col_band(
                chunk, self.kernel, self.stride, self.map_shape[1], piece.table, self._band_rows(piece), col
            )
        elif self.padded_shape is not None:
            padded = conv_kernels.pad_images(chunk, self.pad, self._scratch(worker, "padded", n, *self.padded_shape))
            conv_kernels.im2col(padded, self.kernel, (0, 0), self.stride, self.dilation, self.map_shape, col, False)
        else:
            conv_kernels.im2col(
                chunk, self.kernel, self.pad, self.stride, self.dilation, self.map_shape, col, False, self.table
            )
        return col.reshape(self.rows, n * size)

    def column_buffer(self, worker, piece):
        return self._scratch(worker, "columns", self.rows, piece.images * (piece.pixels.stop - piece.pixels.start))

    def to_image(self, col, image, piece):
        a, b, n = piece.first, piece.stop, piece.images
        if self.one_by_one:
            col = col.reshape(self.rows, n, self.plane)
            conv_kernels.onp_to_nop(col, self.zeros[: self.rows], image[a:b].reshape(n, self.rows, self.plane))
            return
        if self.bands is not None:
            if piece.band == 0:
                image[a:b].fill(0)
            conv_kernels.col2im_band_add(
                col, self.kernel, self.stride, self.map_shape[1], piece.table, self._band_rows(piece), image[a:b]
            )
            return
        conv_kernels.col2im(
            col.reshape(self.rows, n, self.plane),
            self.kernel,
            self.pad,
            self.stride,
            self.dilation,
            self.map_shape,
            image[a:b],
            False,
            self.table,
        )

    def _map_view(self, m, piece):
        """The piece's images of an NCHW map, grouped: (n, groups, C_map / groups, piece's pixels)."""
        m = m.reshape(self.batch, self.groups, self.map_group, self.plane)
        return m[piece.first : piece.stop, :, :, piece.pixels]

    def map_matrix(self, worker, m, piece):
        a, b, n = piece.first, piece.stop, piece.images
        if n == 1:
            view = self._map_view(m, piece)[0]
            return view.reshape(self.map_channels, -1) if self.bands is None else view
        m = m.reshape(self.batch, self.map_channels, self.plane)
        matrix = self._scratch(worker, "map", self.map_channels, n, self.plane)
        conv_kernels.nop_to_onp(m[a:b], matrix)
        return matrix.reshape(self.map_channels, n * self.plane)

    def _matmul(self, a, b, out):
        """out = a @ b, a stack of ``groups`` products. When ``run`` has one worker for
        several (a batch of 1 in one piece), it runs in the caller's thread and the pool is
        free: an ungrouped product is then split over the workers (``parallel.matmul``, from
        ``MATMUL_SPLIT_FLOPS``). A Deconvolution of one 8 x 8 image, 512 -> 256 channels, 4 x 4 / 2, ran its
        three 268 MFLOP products on one core. (With two or more busy workers a nested split
        would wait for a worker that waits for it.)"""
        if self._pool_free():
            parallel.matmul(a[0], b[0], out[0])
        else:
            np.matmul(a, b, out=out)

    def _pool_free(self):
        """Whether an ungrouped product may be split over the workers: ``run`` has one worker
        for several, so it runs in the caller's thread. The weight gradient's products added
        into the weight's diff split too (``parallel.matmul(add=True)``): ResNet-18 at batch 1
        ran them on one core."""
        return self.groups == 1 and self.used_workers == 1 < parallel.thread_count()

    def _grouped(self, matrix, channels):
        if matrix.ndim == 3:
            return matrix
        return matrix.reshape(self.groups, channels // self.groups, matrix.shape[-1])

    def map_from_col(self, worker, weight, col, m, piece, bias=None):
        a, b, n = piece.first, piece.stop, piece.images
        w = weight.reshape(self.groups, self.map_group, self.row_group)
        cols = self._grouped(col, self.rows)
        if n == 1:
            out = self._map_view(m, piece)[0]
            self._matmul(w, cols, out)
            if bias is not None:  # numba's loop: 2x-3.6x numpy's broadcast add on these views
                for g, group_bias in enumerate(bias.reshape(self.groups, self.map_group)):
                    conv_kernels.add_bias(out[g : g + 1], group_bias)
            return
        m = m.reshape(self.batch, self.map_channels, self.plane)
        product = self._scratch(worker, "map", self.map_channels, n * self.plane)
        self._matmul(w, cols, self._grouped(product, self.map_channels))
        bias = self.zeros[: self.map_channels] if bias is None else bias
        conv_kernels.onp_to_nop(product.reshape(self.map_channels, n, self.plane), bias, m[a:b])

    def image_from_map(self, worker, weight, matrix, image, piece):
        """image[piece] = col2im(W^T matrix) (a chunk written, a band added)."""
        direct = self.one_by_one and piece.images == 1
        out = image[piece.first].reshape(self.rows, self.plane) if direct else self.column_buffer(worker, piece)
        w_t = weight.reshape(self.groups, self.map_group, self.row_group).transpose(0, 2, 1)
        self._matmul(w_t, self._grouped(matrix, self.map_channels), self._grouped(out, self.rows))
        if not direct:
            self.to_image(out, image, piece)

    def _weight_grad_shape(self):
        """A worker's weight-gradient partial: (groups, C_map / groups, K / groups) in the
        weight's layout, else transposed (see ``DIRECT_WEIGHT_GRAD_BYTES``)."""
        if self.weight_grad_direct:
            return (self.groups, self.map_group, self.row_group)
        return (self.groups, self.row_group, self.map_group)

    def _weight_grad_target(self, worker, weight_diff):
        """(where the worker's weight-gradient products go, whether they are always added):
        in the weight's layout worker 0 adds them into ``weight_diff`` itself (no partial of
        its own: ResNet-50's 1024 -> 2048 projection, 8 MiB less; a pass less), every other
        worker sets, then adds, its partial."""
        if worker == 0 and self._adds_to_diff(weight_diff):
            return weight_diff.reshape(self._weight_grad_shape()), True
        return self._scratch(worker, "weight_grad", *self._weight_grad_shape()), False

    def _adds_to_diff(self, weight_diff):
        return self.weight_grad_direct and weight_diff.flags.c_contiguous

    def add_weight_grad(self, worker, matrix, col, first, weight_diff):
        """The worker's share of the weight gradient (``first``: its first product) +=
        matrix col^T (kept transposed below ``DIRECT_WEIGHT_GRAD_BYTES``: col matrix^T); see
        :meth:`_weight_grad_target`."""
        target, adds = self._weight_grad_target(worker, weight_diff)
        grouped_map, grouped_col = self._grouped(matrix, self.map_channels), self._grouped(col, self.rows)
        if self.weight_grad_direct:
            a, b = grouped_map, grouped_col.transpose(0, 2, 1)
        else:
            a, b = grouped_col, grouped_map.transpose(0, 2, 1)
        if first and not adds:
            self._matmul(a, b, target)
        elif self._pool_free():
            parallel.matmul(a[0], b[0], target[0], add=True)
        else:
            blas.add_product(a, b, target)

    def add_weight_grad_by_image(self, worker, m, col, piece, first, weight_diff):
        """As :meth:`add_weight_grad` with ``m`` the NCHW map itself (no reorder to a (C_map,
        n P) matrix): the products col[:, i, :] dY[i]^T of the piece's images, both read in
        place, each added by gemm (``blas.add_product``: one compiled call a piece, no
        temporaries), for layers that need no data gradient, whose map matrix has no other
        use. (One call a piece, not one an image: two workers each looping over images in
        Python contended for the GIL, LeNet's conv1, batch 64, weight gradient on 2 workers
        1.23 -> 0.57 ms. The images' products were first made in a buffer of their own, then
        summed: ResNet-50's 1024 -> 2048 projection held 8 MiB of it a worker.)"""
        target, adds = self._weight_grad_target(worker, weight_diff)
        cols = col.reshape(self.groups, self.row_group, piece.images, -1).transpose(2, 0, 1, 3)
        maps = self._map_view(m, piece)
        a, b = (maps, cols) if self.weight_grad_direct else (cols, maps)
        b = b.transpose(0, 1, 3, 2)
        if first and not adds:
            np.matmul(a[0], b[0], out=target)
            a, b = a[1:], b[1:]
        blas.add_product(a, b, target)

    def weight_grad_total(self, weight_diff):
        """weight_diff += the workers' partials, in order (worker 0's products are there
        already when it added them into ``weight_diff`` itself)."""
        if self.weight_grad_direct:
            start = 1 if self._adds_to_diff(weight_diff) else 0
            for worker in range(start, self.used_workers):
                weight_diff += self._scratch(worker, "weight_grad", weight_diff.size).reshape(weight_diff.shape)
            return
        shape = (self.groups * self.row_group, self.map_group)
        partials = [self._scratch(worker, "weight_grad", *shape) for worker in range(self.used_workers)]
        add_transposed_partials(partials, self.weight_offsets, self.row_group, weight_diff)

    def channel_parts(self):
        """For :func:`forward_by_channels` and :func:`backward_by_channels`: (input channels,
        the one-image ``ColumnChunks`` of those channels) for each worker, or None where the
        passes run by pieces: a batch at least as large as the worker count, groups, a 1x1
        kernel of stride 1 (no columns to make: its products, cut over the workers, are all
        there is), fewer than ``MIN_PART_CHANNELS`` channels a worker, or an image's product
        under ``parallel.MATMUL_SPLIT_FLOPS`` (whole on one core, as such a product is kept:
        handing parts to the workers costs more than they save; cifar10_quick's 5x5 layers at
        batch 1, 13 and 6.5 MFLOP, forward 0.57 -> 0.80 ms by channels)."""
        threads = parallel.thread_count()
        if self._channel_parts is not None and len(self._channel_parts) == threads:
            return self._channel_parts
        if (
            self.batch >= threads
            or self.groups != 1
            or self.one_by_one
            or self.image_channels < threads * MIN_PART_CHANNELS
            or 2 * self.map_channels * self.rows * self.plane < parallel.MATMUL_SPLIT_FLOPS
        ):
            return None
        self._channel_parts = self._channel_subsets(threads)
        return self._channel_parts

    def _channel_subsets(self, count):
        """(channels, the one-image ``ColumnChunks`` of those channels) for ``count`` runs of
        the input channels cut as evenly as they go, each run's products whole in its worker."""
        geometry = dict(kernel=self.kernel, pad=self.pad, stride=self.stride, dilation=self.dilation)
        geometry.update(map_channels=self.map_channels, map_size=self.map_shape, groups=1, dtype=self.dtype)
        subsets = []
        for index in range(count):
            share = parallel.share(index, count, self.image_channels)
            sub = type(self)(image_shape=(1, len(share), *self.image_shape[2:]), **geometry)
            sub.used_workers = parallel.thread_count()  # its products run whole, in their worker
            subsets.append((slice(share.start, share.stop), sub))
        return subsets

    def group_parts(self):
        """For :func:`forward_by_groups` and :func:`backward_by_groups`: (groups, the one-image
        ``ColumnChunks`` of those groups) for each worker, runs of whole groups cut as evenly as
        they go, or None where the passes run by pieces: a batch at least as large as the worker
        count, one group, or an image's products under ``parallel.MATMUL_SPLIT_FLOPS`` (as for
        :meth:`channel_parts`). A stack of grouped products cannot be split by
        ``parallel.matmul``: one worker ran them all (forward + backward at batch 1, old and
        new code in alternating processes: 384 -> 384 3x3 in 2 groups at 13 x 13 7.9 -> 6.0
        ms, 256 -> 512 in 4 groups at 14 x 14 5.7 -> 2.6)."""
        threads = parallel.thread_count()
        flops = 2 * self.map_channels * self.row_group * self.plane
        if self.batch >= threads or self.groups == 1 or flops < parallel.MATMUL_SPLIT_FLOPS:
            return None
        workers = min(threads, self.groups)
        if self._group_parts is not None and len(self._group_parts) == workers:
            return self._group_parts
        geometry = dict(kernel=self.kernel, pad=self.pad, stride=self.stride, dilation=self.dilation)
        geometry.update(map_size=self.map_shape, dtype=self.dtype)
        parts = []
        for index in range(workers):
            share = parallel.share(index, workers, self.groups)
            count = len(share)
            shape = (1, count * (self.image_channels // self.groups), *self.image_shape[2:])
            sub = type(self)(image_shape=shape, map_channels=count * self.map_group, groups=count, **geometry)
            sub.used_workers = threads  # its products run whole, in their worker
            parts.append((slice(share.start, share.stop), sub))
        self._group_parts = parts
        return parts

    def channel_pieces(self):
        """For :func:`convolve_by_channel_pieces` and :func:`backward_by_channel_pieces`:
        (input channels, the one-image ``ColumnChunks`` of those channels) for each piece of
        the input channels, or None where the passes run by pieces of images: when an image's
        bands of output rows still make columns of ``CHANNEL_PIECES_FROM`` budgets or more
        (their K = C kh kw rows are many) and the weight is small (under the budget: few
        outputs, so each column value serves few multiply-adds), an image's columns are made a
        few input channels at a time, each piece's product added into the output (see
        ``CHANNEL_PIECES_FROM``). Batches smaller than the worker count run by channels instead
        (:meth:`channel_parts`)."""
        if self._channel_pieces is not False:
            return self._channel_pieces
        self._channel_pieces = None
        weight_bytes = self.map_group * self.row_group * self.dtype.itemsize
        if self.bands is None or self.groups != 1 or weight_bytes >= COLUMN_CHUNK_BYTES:
            return None
        band_pixels = self.bands[0][0].stop - self.bands[0][0].start
        if self.rows * band_pixels * self.dtype.itemsize < CHANNEL_PIECES_FROM * self.budget:
            return None
        per_piece = max(1, CHANNEL_PIECE_ROWS // (self.kernel[0] * self.kernel[1]))
        self._channel_pieces = self._channel_subsets(-(-self.image_channels // per_piece))
        return self._channel_pieces

    def workers(self):
        """How many workers ``run`` uses for this geometry."""
        return min(parallel.thread_count(), self.parts)

    def run(self, step, share_bands=False):
        """``step(worker, piece, first)`` for every piece; ``first`` marks a worker's first.
        As a rule a worker takes its share of the chunks, each chunk's bands in turn. With
        ``share_bands``, for steps whose pieces write apart (a forward's map pixels, a weight
        gradient's per-worker partials), the (image, band) pieces are shared out instead when
        images are cut into bands and the batch does not share out evenly: a batch of 1 on 2
        workers would leave one idle (ResNet's 7x7/2 stem on one 224 px image, forward +
        backward without a data gradient, 17.6 -> 11.3 ms; PyTorch 6.7-6.9 ms)."""
        threads = parallel.thread_count()
        if share_bands and self.bands is not None and self.batch % threads:
            pieces = [piece for part in self.pieces for piece in part]
            workers = self.used_workers = min(threads, len(pieces))

            def piece_of_share(worker, k):
                step(worker, pieces[k], k == parallel.share(worker, workers, len(pieces)).start)

            parallel.run_parts(piece_of_share, len(pieces), workers)
            return
        workers = self.used_workers = self.workers()

        def share(worker, part):
            first_part = part == parallel.share(worker, workers, self.parts).start
            for piece in self.pieces[part]:
                step(worker, piece, first_part and piece.band == 0)

        parallel.run_parts(share, self.parts, workers)


def add_transposed_partials(partials, offsets, stride, out):
    """out (contiguous) [m * stride + offsets[r]] += sum of partial[r, m] over ``partials`` (each
    (R, M), added in order), the columns m shared over the workers: each worker's weight-gradient
    partial, kept transposed, into the weight's layout (see ``conv_kernels.add_transposed``)."""
    flat = out.reshape(-1)

    def columns(lo, hi):
        for partial in partials:
            conv_kernels.add_transposed(partial, offsets, stride, flat, lo, hi)

    parallel.over_slices(columns, partials[0].shape[1], 2 * len(partials) * partials[0].nbytes)


def convolve(chunks, weight, x, y, bias=None):
    """y = the convolution of the images ``x`` (N, C, H, W) by ``weight`` (+ ``bias``) through
    ``chunks`` (a :class:`ColumnChunks` of their geometry): each piece's columns, then its
    product. Fewer images than workers: by channels (:func:`forward_by_channels`)."""
    if chunks.channel_parts() is not None:
        forward_by_channels(chunks, weight, x, y, bias)
        return
    if chunks.group_parts() is not None:
        forward_by_groups(chunks, weight, x, y, bias)
        return
    if chunks.channel_pieces() is not None:
        convolve_by_channel_pieces(chunks, weight, x, y, bias)
        return

    def step(worker, piece, first):
        chunks.map_from_col(worker, weight, chunks.columns(worker, x, piece), y, piece, bias)

    chunks.run(step, share_bands=True)


def convolve_backward(chunks, weight, x, dy, dx, weight_diff):
    """The backward of :func:`convolve`: dx = the input gradient (when dx is not None; written),
    weight_diff += the weight gradient (when it is not None; ``x`` is read only then). Without
    dx, the weight gradient reads dy in place (``add_weight_grad_by_image``). Fewer images than
    workers, with a data gradient: by channels (:func:`backward_by_channels`)."""
    if dx is not None and chunks.channel_parts() is not None:
        backward_by_channels(chunks, weight, x, dy, dx, weight_diff)
        return
    if chunks.group_parts() is not None:
        backward_by_groups(chunks, weight, x, dy, dx, weight_diff)
        return
    if chunks.channel_pieces() is not None:
        backward_by_channel_pieces(chunks, weight, x, dy, dx, weight_diff)
        return

    def step(worker, piece, first):
        if dx is None:  # the weight gradient alone (a net's first layer): dy read in place
            col = chunks.columns(worker, x, piece)
            chunks.add_weight_grad_by_image(worker, dy, col, piece, first, weight_diff)
            return
        m = chunks.map_matrix(worker, dy, piece)
        if weight_diff is not None:
            chunks.add_weight_grad(worker, m, chunks.columns(worker, x, piece), first, weight_diff)
        chunks.image_from_map(worker, weight, m, dx, piece)

    chunks.run(step, share_bands=dx is None)  # bands of a data gradient overlap: not shared
    if weight_diff is not None:
        chunks.weight_grad_total(weight_diff)


def forward_by_channels(chunks, weight, x, y, bias):
    """:func:`convolve` of a batch smaller than the worker count, each worker taking the input
    channels of one of ``chunks.channel_parts()``, image by image: the columns of its channels
    and their product with its columns of the weight, W[:, rows] col, the first worker's into
    ``y`` (with the bias), each other's into a partial of its own, then added into ``y`` (an
    output's sum over its channels is cut in as many parts as workers: the results differ from
    one worker's by rounding). Outputs are fewer than column rows (K = C kh kw), so the
    partials are small. (Before, one image was one piece, or a few bands shared unevenly, and
    its im2col ran on one core.)"""
    parts = chunks.channel_parts()
    kernel_size = chunks.kernel[0] * chunks.kernel[1]
    weight_rows = weight.reshape(chunks.map_channels, -1)
    out = y.reshape(chunks.batch, chunks.map_channels, chunks.plane)
    partials = [out] + [chunks._scratch(k, "channel partial", *out.shape) for k in range(1, len(parts))]

    def part(worker, index):
        channels, sub = parts[index]
        rows = slice(channels.start * kernel_size, channels.stop * kernel_size)
        w, target = weight_rows[:, rows], partials[index]
        for n in range(chunks.batch):
            for piece in sub.pieces[0]:
                col = sub.columns(worker, x[n : n + 1, channels], piece)
                sub.map_from_col(worker, w, col, target[n : n + 1], piece, bias if index == 0 else None)

    parallel.run_parts(part, len(parts), len(parts))

    def add(lo, hi):
        for partial in partials[1:]:
            np.add(out[:, lo:hi], partial[:, lo:hi], out=out[:, lo:hi])

    parallel.over_slices(add, chunks.map_channels, len(partials) * out.nbytes)


def backward_by_channels(chunks, weight, x, dy, dx, weight_diff):
    """:func:`convolve_backward` of a batch smaller than the worker count, each worker taking
    the input channels of one of ``chunks.channel_parts()``, image by image: its rows of the
    column matrix (im2col of its channels), its columns of the weight gradient (dW[:, rows] +=
    dY col^T, added into ``weight_diff`` itself) and its channels of the input gradient (dx[c]
    = col2im of W[:, rows]^T dY). The workers write apart: no partials, nothing to add up, the
    same bits whichever worker runs a part. (Image by image on one worker, the products cut
    over the workers, the im2col and col2im ran on one core.)"""
    parts = chunks.channel_parts()
    kernel_size = chunks.kernel[0] * chunks.kernel[1]
    weight_rows = weight.reshape(chunks.map_channels, -1)
    grad_rows = None if weight_diff is None else weight_diff.reshape(chunks.map_channels, -1)

    def part(worker, index):
        channels, sub = parts[index]
        rows = slice(channels.start * kernel_size, channels.stop * kernel_size)
        w = weight_rows[:, rows]
        for n in range(chunks.batch):
            image, grad = x[n : n + 1, channels], dx[n : n + 1, channels]
            for piece in sub.pieces[0]:
                m = sub.map_matrix(worker, dy[n : n + 1], piece).reshape(chunks.map_channels, -1)
                if grad_rows is not None:
                    blas.add_product(m, sub.columns(worker, image, piece).T, grad_rows[:, rows])
                sub.image_from_map(worker, w, m, grad, piece)

    parallel.run_parts(part, len(parts), len(parts))


def _group_slices(chunks, groups):
    """The input channels and the outputs (map channels) of a run of ``groups``, as slices."""
    channels, outputs = chunks.image_channels // chunks.groups, chunks.map_group
    return slice(groups.start * channels, groups.stop * channels), slice(groups.start * outputs, groups.stop * outputs)


def forward_by_groups(chunks, weight, x, y, bias):
    """:func:`convolve` of a grouped batch smaller than the worker count, each worker taking
    the groups of one of ``chunks.group_parts()``, image by image: the columns of its groups'
    channels and their products with its groups' filters, written into its groups' outputs
    (with their bias). The same products as one worker's, each whole in one worker."""
    parts = chunks.group_parts()
    out = y.reshape(chunks.batch, chunks.map_channels, chunks.plane)

    def part(worker, index):
        groups, sub = parts[index]
        channels, outputs = _group_slices(chunks, groups)
        w, b = weight[outputs], None if bias is None else bias[outputs]
        for n in range(chunks.batch):
            for piece in sub.pieces[0]:
                col = sub.columns(worker, x[n : n + 1, channels], piece)
                sub.map_from_col(worker, w, col, out[n : n + 1, outputs], piece, b)

    parallel.run_parts(part, len(parts), len(parts))


def backward_by_groups(chunks, weight, x, dy, dx, weight_diff):
    """:func:`convolve_backward` of a grouped batch smaller than the worker count, each worker
    taking the groups of one of ``chunks.group_parts()``, image by image: its groups' rows of
    the weight gradient (dW[g] += dY[g] col[g]^T, added into ``weight_diff`` itself) and its
    groups' channels of the input gradient (col2im of W[g]^T dY[g]). The workers write apart:
    nothing to add up, the same bits whichever worker runs a part."""
    parts = chunks.group_parts()
    maps = dy.reshape(chunks.batch, chunks.map_channels, chunks.plane)

    def part(worker, index):
        groups, sub = parts[index]
        channels, outputs = _group_slices(chunks, groups)
        w = weight[outputs]
        grad = None if weight_diff is None else weight_diff[outputs].reshape(sub.groups, sub.map_group, -1)
        for n in range(chunks.batch):
            for piece in sub.pieces[0]:
                m = sub.map_matrix(worker, maps[n : n + 1, outputs], piece)
                if grad is not None:
                    col = sub._grouped(sub.columns(worker, x[n : n + 1, channels], piece), sub.rows)
                    blas.add_product(sub._grouped(m, sub.map_channels), col.transpose(0, 2, 1), grad)
                if dx is not None:
                    sub.image_from_map(worker, w, m, dx[n : n + 1, channels], piece)

    parallel.run_parts(part, len(parts), len(parts))


def _image_shares(chunks):
    """A worker's images for the passes by channel pieces: the batch shared out evenly."""
    workers = min(parallel.thread_count(), chunks.batch)
    return workers, lambda worker: parallel.share(worker, workers, chunks.batch)


def convolve_by_channel_pieces(chunks, weight, x, y, bias):
    """:func:`convolve` of images whose columns are made a few input channels at a time
    (``chunks.channel_pieces()``): for each image of a worker's share, y[n] = the sum over the
    pieces of W[:, rows] col (each piece's band by band, added into y[n] by gemm), then the
    bias. The sum runs over the pieces in order on one worker: the same bits for any worker
    count. The products add into a worker's own map buffer, copied out per image, so that
    gemm's plans (``blas.add_product``, kept by the arrays' addresses) are the same for every
    image."""
    pieces = chunks.channel_pieces()
    taps = chunks.kernel[0] * chunks.kernel[1]
    weight_rows = weight.reshape(chunks.map_channels, -1)
    out = y.reshape(chunks.batch, chunks.map_channels, chunks.plane)
    workers, images = _image_shares(chunks)

    def part(worker, _):
        total = chunks._scratch(worker, "map", chunks.map_channels, chunks.plane)
        for n in images(worker):
            total.fill(0)
            for channels, sub in pieces:
                w = weight_rows[:, channels.start * taps : channels.stop * taps]
                for piece in sub.pieces[0]:
                    col = sub.columns(worker, x[n : n + 1, channels], piece)
                    blas.add_product(w, col, total[:, piece.pixels])
            out[n] = total
            if bias is not None:
                conv_kernels.add_bias(out[n : n + 1], bias)

    parallel.run_parts(part, workers, workers)


def backward_by_channel_pieces(chunks, weight, x, dy, dx, weight_diff):
    """:func:`convolve_backward` by channel pieces (see :func:`convolve_by_channel_pieces`):
    for each image of a worker's share and each piece of its input channels, band by band, the
    piece's rows of the worker's transposed weight-gradient partial += col dY^T (in that
    orientation gemm ran such products at 84 against 56 GFLOP/s on one core: 462 column rows,
    400 pixels, 32 outputs), then the partials added into ``weight_diff`` in order; and the
    piece's channels of the input gradient = col2im of W[:, rows]^T dY (the bands added up)."""
    pieces = chunks.channel_pieces()
    taps = chunks.kernel[0] * chunks.kernel[1]
    weight_rows = weight.reshape(chunks.map_channels, -1)
    maps = dy.reshape(chunks.batch, chunks.map_channels, chunks.plane)
    workers, images = _image_shares(chunks)
    partials = []
    if weight_diff is not None:
        partials = [chunks._scratch(k, "weight_grad", chunks.rows, chunks.map_channels) for k in range(workers)]

    def part(worker, _):
        grad = partials[worker] if partials else None
        if grad is not None:
            grad.fill(0)
        m = chunks._scratch(worker, "map", chunks.map_channels, chunks.plane)
        for n in images(worker):
            m[...] = maps[n]
            for channels, sub in pieces:
                rows = slice(channels.start * taps, channels.stop * taps)
                for piece in sub.pieces[0]:
                    band = m[:, piece.pixels]
                    if grad is not None:
                        blas.add_product(sub.columns(worker, x[n : n + 1, channels], piece), band.T, grad[rows])
                    if dx is not None:
                        sub.image_from_map(worker, weight_rows[:, rows], band, dx[n : n + 1, channels], piece)

    parallel.run_parts(part, workers, workers)
    if partials:
        add_transposed_partials(partials, chunks.weight_offsets, chunks.row_group, weight_diff)
