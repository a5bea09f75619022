"""Dilated 3x3 convolutions with padding equal to the dilation (the output keeps the input's
size) as undilated ones over the input's phases, so that they run as Winograd
(``netlayers.kernels.winograd``) instead of im2col + GEMM.

With stride 1, dilation (dh, dw) and padding (dh, dw), output (y, x) reads the input at rows
y - dh + dh i and columns x - dw + dw j (i, j in 0..2; 0 outside the input): rows and columns
of the output's own residue mod (dh, dw) only. Split the input into its dh dw phases,

    P[n, r, s][c, t, u] = x[n, c, r + dh t, s + dw u]      (0 past the input),

each of T = ceil(H / dh) rows and U = ceil(W / dw) columns; the outputs of one phase,
Y[n, r, s][m, t, u] = y[n, m, r + dh t, s + dw u], are then a plain 3x3 convolution (dilation
1, padding 1) of P[n, r, s]. So a batch of N images runs as one undilated convolution of
N dh dw phase images (TensorFlow's space-to-batch for atrous convolution does the same). Where
H is not a multiple of dh, some phases have a last row past the input: it holds zeros (the
padding the outputs above it read) and its outputs are dropped.

Backward: the output gradient is split the same way (0 past the output), the undilated
convolution's backward gives the phases' input gradients and adds the weight gradient (the
same weights serve every phase), and each input position belongs to exactly one phase
position, so dx is a reordering of the phases' gradients, with no sums.

The phase arrays are the scratch of worker 0 (``netlayers.parallel``), shared by every dilated
convolution of the process; reordering runs over the workers, an image a part.
"""

import math

import numpy as np

from .. import parallel
from . import winograd
from ._jit import jit

PHASES, PHASE_MAP, PHASE_GRAD = "dilated_phases", "dilated_phase_map", "dilated_phase_grad"


@jit
def to_phases(image, phases):
    """phases[r, s, c, t, u] = image[c, r + dh t, s + dw u] (0 past the image) for one
    (C, H, W) image; phases is (dh, dw, C, T, U) with dh T >= H, dw U >= W. Flat unsigned
    indices (numba then skips negative-index tests)."""
    channels, height, width = image.shape
    dh, dw, _, rows, cols = phases.shape
    zero = image.dtype.type(0)
    src, dst = image.reshape(-1), phases.reshape(-1)
    at = np.uint64(0)
    for r in range(dh):
        for s in range(dw):
            inside = (width - s + dw - 1) // dw  # columns of phase s inside the image
            for c in range(channels):
                for t in range(rows):
                    row = r + dh * t
                    if row >= height:
                        for u in range(cols):
                            dst[at + np.uint64(u)] = zero
                    else:
                        line = np.uint64((c * height + row) * width + s)
                        for u in range(inside):
                            dst[at + np.uint64(u)] = src[line + np.uint64(dw * u)]
                        for u in range(inside, cols):
                            dst[at + np.uint64(u)] = zero
                    at += np.uint64(cols)


@jit
def from_phases(phases, image):
    """image[c, y, x] = phases[y % dh, x % dw, c, y // dh, x // dw] for one (C, H, W) image:
    the inverse of :func:`to_phases`, each image position read from its one phase position."""
    channels, height, width = image.shape
    dh, dw, _, rows, cols = phases.shape
    src, dst = phases.reshape(-1), image.reshape(-1)
    at = np.uint64(0)
    for r in range(dh):
        for s in range(dw):
            inside = (width - s + dw - 1) // dw
            for c in range(channels):
                for t in range(rows):
                    row = r + dh * t
                    if row < height:
                        line = np.uint64((c * height + row) * width + s)
                        for u in range(inside):
                            dst[line + np.uint64(dw * u)] = src[at + np.uint64(u)]
                    at += np.uint64(cols)


def applies(kernel, stride, dilation, pad, groups, channels, outputs, out_size, batch):
    """Whether a convolution of ``batch`` images runs as phases: a 3x3 kernel, stride 1, a
    dilation above 1 on some axis and padding equal to it (the output keeps the input's size),
    one group, and phases where Winograd applies (its rule on the phases' outputs, each image
    d_h d_w phase images)."""
    if kernel != (3, 3) or stride != (1, 1) or dilation == (1, 1) or pad != dilation or groups != 1:
        return False
    phase_out = tuple(-(-o // d) for o, d in zip(out_size, dilation))
    phases = batch * dilation[0] * dilation[1]
    return winograd.applies(kernel, stride, (1, 1), (1, 1), groups, channels, outputs, phase_out, phases)


class PhaseConvolution:
    """One stride-1 3x3 convolution with dilation d and padding d (each axis) as a Winograd
    convolution, padding 1, of the input's phases (see the module text). ``image_shape`` is
    (N, C, H, W); ``outputs`` the output channels; ``dilation`` an (h, w) pair. ``filters``,
    ``forward`` and ``backward`` as the Winograd convolutions'."""

    def __init__(self, image_shape, outputs, dilation, dtype):
        self.batch, channels, height, width = image_shape
        self.dtype = np.dtype(dtype)
        dh, dw = dilation
        rows, cols = -(-height // dh), -(-width // dw)
        self.phase_images = (self.batch, dh, dw, channels, rows, cols)
        self.phase_maps = (self.batch, dh, dw, outputs, rows, cols)
        self.inner = winograd.convolution((self.batch * dh * dw, channels, rows, cols), outputs, 1, self.dtype)

    def filters(self, weight):
        self.inner.filters(weight)

    def _array(self, name, shape):
        return parallel.scratch(0, name, math.prod(shape), self.dtype).reshape(shape)

    def _phases_of(self, source, name, shape):
        """``source`` (N, C, H, W) split into its phases (``to_phases``), an image a part."""
        phases = self._array(name, shape)
        parallel.run_parts(lambda worker, n: to_phases(source[n], phases[n]), self.batch)
        return phases

    def _image_of(self, phases, image):
        parallel.run_parts(lambda worker, n: from_phases(phases[n], image[n]), self.batch)

    @staticmethod
    def _inner(array):
        return array.reshape((-1,) + array.shape[3:])

    def forward(self, x, bias, y):
        """y = conv(x, weight) + bias (bias may be None), with the weight of ``filters``."""
        phases = self._phases_of(x, PHASES, self.phase_images)
        maps = self._array(PHASE_MAP, self.phase_maps)
        self.inner.forward(self._inner(phases), bias, self._inner(maps))
        self._image_of(maps, y)

    def backward(self, x, dy, dx, weight_diff):
        """dx = the input gradient (when dx is not None; written), weight_diff += the weight
        gradient (when it is not None), with the weight of ``filters``."""
        phases = self._phases_of(x, PHASES, self.phase_images)
        maps = self._phases_of(dy, PHASE_MAP, self.phase_maps)
        grad = None if dx is None else self._array(PHASE_GRAD, self.phase_images)
        self.inner.backward(
            self._inner(phases), self._inner(maps), None if dx is None else self._inner(grad), weight_diff
        )
        if dx is not None:
            self._image_of(grad, dx)
