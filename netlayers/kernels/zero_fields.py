"""Exact outputs over zero receptive fields, for the convolutions that run as Winograd.

An output whose whole receptive field is zero (padding alone, or a region where every input
channel is zero) is exactly the bias in Caffe's im2col + GEMM and in PyTorch: a sum of products
with zeros. Winograd's transforms mix a tile's inputs, so where such an output shares its tile
with data it comes out as the bias plus a rounding of order 1e-7. On a zero bias that value
sits on a ReLU's kink, and the ReLU then passes gradient through about half of those outputs
where Caffe passes none: a bias gradient differed by 49 % in a random net, and 4.9 % in an
FCN-32s (whose first convolution is padded by 100, so every layer carries a zero frame).

:meth:`ZeroFields.restore` sets those outputs to the bias after the Winograd forward, so the
forward and the ReLU masks after it are Caffe's. Per image:

1. The zero positions: (h, w) where every channel is 0, read four channels at a time until
   none is left (on data, a dozen channels rule out every position; a zero frame is read whole).
2. The outputs whose taps (i s_h - p_h + u d_h, j s_w - p_w + v d_w) all fall on padding or
   zero positions: an AND over the kernel's taps, rows then columns.
3. Of those, the ones with an output of data within ``TILE_MARGIN`` dilated steps (a prefix
   count over the outputs): only they can share a tile with data. A tile whose inputs are all
   zero transforms to zeros and gives exactly the bias, so the outputs deep in a zero region
   (most of an FCN's frame) are left as they are. Winograd's tiles here are at most 4 outputs a
   side (F(4x4, 3x3), F(4x4, 5x5), 1-D F(4, r)), in steps of the dilation over a dilated
   convolution's phases.
4. Those outputs are set to the bias, channel by channel, as runs along the rows.

An image with no zero position and a geometry without padding-only outputs costs step 1: on
data, a few planes of the input. Measured: 10-67 us a layer on CIFAR ResNet's, ResNet's and
VGG's layers (0.3-2 % of a step, paired rounds with and without); an FCN's 390 x 390 frame of
64 channels 2.5 ms.
"""

import math

import numpy as np

from .. import parallel
from ._jit import jit


def padding_only_outputs(size, out_size, kernel, pad, stride, dilation):
    """Whether some output of this geometry has every tap along an axis in the padding (as
    FCN's first layer, padded by 100, has)."""
    for n, on, k, p, s, d in zip(size, out_size, kernel, pad, stride, dilation):
        for o in range(on):
            if not any(0 <= o * s - p + u * d < n for u in range(k)):
                return True
    return False


@jit
def _image_zeros(x, lo, hi, zero):
    """zero[p] = 1 where every channel of the image x (C, P) is 0 at p, else 0, for p in
    lo .. hi: four channels a pass, until no position is left. (Loops over slices, whose indices
    are known to be >= 0, vectorize; whole channels ran faster than lists of the positions left,
    and four a pass 0.75x-0.9x the time of one.)"""
    z = zero[lo:hi]
    first = x[0, lo:hi]
    for p in range(hi - lo):
        z[p] = first[p] == 0
    channels = x.shape[0]
    for c in range(1, channels, 4):  # four channels a pass over z
        count = 0
        for p in range(hi - lo):
            count += np.int64(z[p])  # an int64 count (as plain Python, uint8 would wrap)
        if count == 0:
            return
        if c + 4 <= channels:
            a, b, d, e = x[c, lo:hi], x[c + 1, lo:hi], x[c + 2, lo:hi], x[c + 3, lo:hi]
            for p in range(hi - lo):
                z[p] &= np.uint8((a[p] == 0) & (b[p] == 0) & (d[p] == 0) & (e[p] == 0))
        else:
            for k in range(c, channels):
                values = x[k, lo:hi]
                for p in range(hi - lo):
                    z[p] &= np.uint8(values[p] == 0)


@jit
def _zero_positions(x, lo, hi, zero):
    """:func:`_image_zeros` over the flat (image, position) range lo .. hi of x (N, C, P)."""
    plane = x.shape[2]
    k = lo
    while k < hi:
        n, start = k // plane, k % plane
        stop = min(plane, start + hi - k)
        _image_zeros(x[n], start, stop, zero[n])
        k += stop - start


@jit
def _restore_images(zero, frame, y, bias, geometry, margin, padded, rows, field, near, runs):
    """Steps 2 to 4 of the module's docstring: ``zero`` (N, H, W) from :func:`_zero_positions`,
    ``bias`` (G, O) for the images n with n % G = g (the groups of a grouped convolution);
    scratch ``padded`` (Hp, Wp), ``rows`` (Hp, OW), ``field`` (OH, OW), ``near`` (OH + 1,
    OW + 1) and ``runs`` (OH ceil(OW / 2), 3)."""
    height, width = zero.shape[1], zero.shape[2]
    out_h, out_w = y.shape[2], y.shape[3]
    kh, kw, ph, pw, sh, sw, dh, dw = geometry
    mh, mw = margin
    near[0, :] = 0
    near[:, 0] = 0
    for n in range(zero.shape[0]):
        image = zero[n]
        if not frame:
            found = 0
            for h in range(height):
                row = image[h]
                for w in range(width):
                    found += np.int64(row[w])
            if found == 0:
                continue
        padded[:, :] = 1
        for h in range(height):
            padded[ph + h, pw : pw + width] = image[h]
        for r in range(padded.shape[0]):  # every tap along the row zero
            for j in range(out_w):
                all_zero = 1
                for v in range(kw):
                    all_zero &= padded[r, j * sw + v * dw]
                rows[r, j] = all_zero
        for i in range(out_h):  # and every row of taps
            for j in range(out_w):
                all_zero = 1
                for u in range(kh):
                    all_zero &= rows[i * sh + u * dh, j]
                field[i, j] = all_zero
        # near[i + 1, j + 1]: outputs up to (i, j) whose field is not all zero (a prefix count)
        for i in range(out_h):
            for j in range(out_w):
                near[i + 1, j + 1] = near[i, j + 1] + near[i + 1, j] - near[i, j] + 1 - field[i, j]
        count = 0  # runs along the rows of outputs to set: field all zero, data within the margin
        for i in range(out_h):
            i0, i1 = max(0, i - mh), min(out_h, i + mh + 1)
            j = 0
            while j < out_w:
                start = j
                while j < out_w and field[i, j]:
                    j0, j1 = max(0, j - mw), min(out_w, j + mw + 1)
                    if near[i1, j1] - near[i0, j1] - near[i1, j0] + near[i0, j0] == 0:
                        break
                    j += 1
                if j > start:
                    runs[count, 0], runs[count, 1], runs[count, 2] = i, start, j
                    count += 1
                j += 1
        for o in range(y.shape[1]):
            b = bias[n % bias.shape[0], o]
            for t in range(count):
                y[n, o, runs[t, 0], runs[t, 1] : runs[t, 2]] = b


TILE_MARGIN = 4  # outputs: Winograd's tiles are at most 4 outputs a side (in phase steps)


class ZeroFields:
    """:meth:`restore` for one convolution's geometry. Its maps live in the scratch of worker 0
    (``netlayers.parallel``), shared by every convolution of the process."""

    def __init__(self, image_shape, out_size, kernel, pad, stride, dilation, groups=1):
        batch, _, height, width = image_shape
        self.groups = groups
        self.geometry = np.array([*kernel, *pad, *stride, *dilation], np.int64)
        self.margin = np.array([TILE_MARGIN * d for d in dilation], np.int64)
        self.frame = padding_only_outputs((height, width), out_size, kernel, pad, stride, dilation)
        padded = (height + 2 * pad[0], width + 2 * pad[1])
        self.maps = _Layout(
            "zero_fields_maps", [(batch * groups, height, width), padded, (padded[0], out_size[1]), out_size], np.uint8
        )
        self.counts = _Layout(
            "zero_fields_counts",
            [(out_size[0] + 1, out_size[1] + 1), (out_size[0] * -(-out_size[1] // 2), 3)],
            np.int32,
        )

    def restore(self, x, y, bias):
        """Set y (N, O, OH, OW) to ``bias`` (O,) wherever the receptive field in x (N, C, H, W)
        is all zero and a tile may have mixed data in (see the module's docstring). With groups,
        a group's outputs see its own channels: each (image, group) is one image here."""
        zero, padded, rows, field = self.maps.arrays()
        near, runs = self.counts.arrays()
        groups = self.groups
        images, channels = x.shape[0] * groups, x.shape[1] // groups
        x = x.reshape(images, channels, -1)
        y = y.reshape((images, y.shape[1] // groups) + y.shape[2:])
        flat = zero.reshape(images, -1)
        parallel.over_slices(lambda lo, hi: _zero_positions(x, lo, hi, flat), flat.size, x[:, 0].nbytes)
        arrays = (self.geometry, self.margin, padded, rows, field, near, runs)
        _restore_images(zero, self.frame, y, bias.reshape(groups, -1), *arrays)


class _Layout:
    """Arrays of the given shapes end to end in one scratch buffer of worker 0, called ``name``."""

    def __init__(self, name, shapes, dtype):
        self.name, self.shapes, self.dtype = name, shapes, dtype
        self.sizes = [math.prod(shape) for shape in shapes]
        self.starts = [sum(self.sizes[:k]) for k in range(len(shapes))]

    def arrays(self):
        buffer = parallel.scratch(0, self.name, sum(self.sizes), self.dtype)
        return [buffer[a : a + n].reshape(shape) for a, n, shape in zip(self.starts, self.sizes, self.shapes)]
