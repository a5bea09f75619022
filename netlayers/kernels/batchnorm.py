"""Batch normalization, fused: each pass over the data does all it can.

On an (N, C, P) view (P = the spatial size; statistics per channel c over N * P values):

- ``batch_moments(x, mean, var, lo, hi)``: mean[c] = mean(x), var[c] = mean((x - mean)^2): two passes
  (the mean first, then the squared deviations, as numpy would: no cancellation);
- ``normalize(x, mean, std, normalized, y, lo, hi)``: normalized = y = (x - mean) / std, one pass
  writing both (``y`` may be ``x``: each element is read before it is written);
- ``normalize_backward(dy, normalized, std, dx, lo, hi)``: with batch statistics,
  dx = (dy - mean(dy) - normalized * mean(dy * normalized)) / std: one pass for the two means,
  one to write (``dx`` may be ``dy``).

Each kernel takes the channels [lo, hi) of whole C-contiguous arrays (the workers of
``netlayers.parallel`` take a range each; a strided view of the channels instead would keep
LLVM from vectorizing the inner loops, measured slower than the whole array).

Sums run element-wise over the P positions first (a row of "lanes" added to across the N
images, which vectorizes: a plain running sum does not, without reassociation), then the lanes
are added up, in float64 throughout.
"""

import numpy as np

from ._jit import jit


@jit
def batch_moments(x, mean, var, lo, hi):
    batch, channels, size = x.shape
    lanes = np.zeros(size, np.float64)
    count = batch * size
    for c in range(lo, hi):
        lanes[:] = 0.0
        for n in range(batch):
            for p in range(size):
                lanes[p] += x[n, c, p]
        mu = lanes.sum() / count
        lanes[:] = 0.0
        for n in range(batch):
            for p in range(size):
                d = x[n, c, p] - mu
                lanes[p] += d * d
        mean[c] = mu
        var[c] = lanes.sum() / count


@jit
def normalize(x, mean, std, normalized, y, lo, hi):
    batch, channels, size = x.shape
    for n in range(batch):
        for c in range(lo, hi):
            mu, s = mean[c], std[c]
            for p in range(size):
                value = (x[n, c, p] - mu) / s
                normalized[n, c, p] = value
                y[n, c, p] = value


@jit
def normalize_backward(dy, normalized, std, dx, lo, hi):
    batch, channels, size = dy.shape
    lanes = np.zeros(size, np.float64)
    lanes_y = np.zeros(size, np.float64)
    count = batch * size
    for c in range(lo, hi):
        lanes[:] = 0.0
        lanes_y[:] = 0.0
        for n in range(batch):
            for p in range(size):
                g = dy[n, c, p]
                lanes[p] += g
                lanes_y[p] += g * normalized[n, c, p]
        mean_dy = dy.dtype.type(lanes.sum() / count)
        mean_dyy = dy.dtype.type(lanes_y.sum() / count)
        s = std[c]
        for n in range(batch):
            for p in range(size):
                dx[n, c, p] = (dy[n, c, p] - mean_dy - normalized[n, c, p] * mean_dyy) / s
