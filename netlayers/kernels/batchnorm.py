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


# -- BatchNorm -> Scale -> ReLU, run as one (netlayers.layers.fused) -----------------------------
@jit
def scale_relu_forward(normalized, scale, bias, slope, y, lo, hi):
    """y = v if v > 0 else slope * v, v = normalized * scale[c] + bias[c] (Scale then ReLU in one
    pass: read the normalized values once, write y once)."""
    batch, channels, size = normalized.shape
    zero = y.dtype.type(0)
    for n in range(batch):
        for c in range(lo, hi):
            s, b = scale[c], bias[c]
            for p in range(size):
                v = normalized[n, c, p] * s + b
                y[n, c, p] = v if v > zero else v * slope


@jit
def chain_backward(dy, y, normalized, mean, remake, scale, std, slope, mode, sum_gx, sum_g, dx, scale_grad, lo, hi):
    """The backward of BatchNorm -> Scale -> ReLU in two passes a channel. With g = dy where
    y > 0, else slope * dy (ReLU's), S1 = sum g * normalized and S2 = sum g (Scale's gradients,
    written to ``sum_gx``/``sum_g``), M = N * P, and s = scale[c]:

    - mode 0, BatchNorm with batch statistics: dx = s / std (g - S2 / M - normalized S1 / M)
      (BatchNorm's backward of Scale's dx = g s, whose two means are s S2 / M and s S1 / M);
    - mode 1, global statistics: dx = g s / std;  mode 2: dx = g s (Scale's);  mode 3: dx = g.

    ``dx`` may be ``dy`` (in place): a channel's sums are taken before it is written. With
    ``scale_grad`` (``dx`` apart from ``dy``: BatchNorm not in place), dy = g s is written too,
    the gradient Scale's own backward leaves on the chain's blob. With ``remake``,
    ``normalized`` is BatchNorm's input x and each normalized value is made again as its
    forward made it, (x - mean[c]) / std[c] (BatchNorm kept none)."""
    batch, channels, size = dy.shape
    lanes_gx = np.zeros(size, np.float64)
    lanes_g = np.zeros(size, np.float64)
    count = batch * size
    zero = dy.dtype.type(0)
    for c in range(lo, hi):
        lanes_gx[:] = 0.0
        lanes_g[:] = 0.0
        mu, sd = mean[c], std[c]
        for n in range(batch):
            for p in range(size):
                g = dy[n, c, p] if y[n, c, p] > zero else dy[n, c, p] * slope
                v = (normalized[n, c, p] - mu) / sd if remake else normalized[n, c, p]
                lanes_gx[p] += g * v
                lanes_g[p] += g
        s1, s2 = lanes_gx.sum(), lanes_g.sum()
        sum_gx[c] = s1
        sum_g[c] = s2
        s = scale[c]
        factor = s / std[c] if mode <= 1 else s
        if mode == 3:
            factor = dy.dtype.type(1)
        mean_g = dy.dtype.type(s2 / count)
        mean_gx = dy.dtype.type(s1 / count)
        for n in range(batch):
            for p in range(size):
                g = dy[n, c, p] if y[n, c, p] > zero else dy[n, c, p] * slope
                if mode == 0:
                    v = (normalized[n, c, p] - mu) / sd if remake else normalized[n, c, p]
                    dx[n, c, p] = factor * (g - mean_g - v * mean_gx)
                else:
                    dx[n, c, p] = g * factor
                if scale_grad:
                    dy[n, c, p] = g * s
