"""Batch normalization, fused: each pass over the data does all it can.

On an (N, C, P) view (P = the spatial size; statistics per channel c over N * P values):

- ``batch_moments(x, mean, var, std, eps, lo, hi)``: mean[c] = mean(x), var[c] = mean((x - mean)^2):
  two passes (the mean first, then the squared deviations, as numpy would: no cancellation),
  and std[c] = sqrt(var[c] + eps); ``moving_averages`` updates Caffe's running sums;
- ``normalize(x, mean, std, normalized, y, both, lo, hi)``: normalized = (x - mean) / std, and
  y too when ``both``: one pass (``y`` may be ``x``);
- ``normalize_backward(dy, normalized, std, dx, lo, hi)``: with batch statistics,
  dx = (dy - mean(dy) - normalized * mean(dy * normalized)) / std: one pass for the two means,
  one to write (``dx`` may be ``dy``).

Each kernel takes the channels [lo, hi) of whole C-contiguous arrays (the workers of
``netlayers.parallel`` take a range each; a strided view of the channels instead would keep
LLVM from vectorizing the inner loops, measured slower than the whole array).

Sums run element-wise over a block of ``LANES`` positions first (a row of float64 "lanes": value
p of each image adds into lane p mod LANES, which vectorizes, where a plain running sum does not
without reassociation), then the lanes are added up, in float64 throughout.
"""

import numpy as np

from ._jit import jit

# Where a kernel may write the array it reads (in place), it reads a block into scratch first:
# a loop whose store may hit the memory it loads from stays scalar (LLVM's overlap test fails),
# 2-4x slower (as ``elementwise``'s in-place ReLU). The branches on a kernel's flags sit outside
# the inner loops, which are plain, so that they vectorize: the chain's backward 1.1 -> 0.45 ms
# on 32 x 16 x 32 x 32 float32 values, one thread; BatchNorm's forward in place 0.6 -> 0.15 ms.
BLOCK = 512
# Lanes a channel's sums run in: a block that stays in L1. Lanes as long as the plane (as before)
# cost more than the data where the batch is small: 64 channels of 112 x 112 at batch 1, one
# thread, BatchNorm's statistics 1646 -> 188 us; at batch 8 (56 x 56) 755 -> 353 us, batch 32
# of 32 x 32 132 -> 112 us, batch 100 of 16 x 16 181 -> 192 us (the same means and variances).
LANES = 256


@jit
def new_lanes(size):
    """Zeroed float64 lanes for sums over rows of ``size`` values: ``LANES`` of them, fewer
    for shorter rows (a row of 49 positions sums in 49 lanes: zeroing and adding up 256 for
    each channel cost MobileNet's tail, 14 x 14 and 7 x 7 maps, 2.5 % a step)."""
    return np.zeros(max(1, min(LANES, size)), np.float64)


@jit
def batch_moments(x, mean, var, std, eps, lo, hi):
    """mean[c] and var[c] as the module text says, then std[c] = sqrt(var[c] + eps) (``eps`` of
    the arrays' dtype: the arithmetic numpy's np.sqrt(var + eps) does)."""
    batch, channels, size = x.shape
    lanes = new_lanes(size)
    width = lanes.size
    count = batch * size
    for c in range(lo, hi):
        lanes[:] = 0.0
        for n in range(batch):
            for start in range(0, size, width):
                block = x[n, c, start : start + width]
                for j in range(block.size):
                    lanes[j] += block[j]
        mu = lanes.sum() / count
        lanes[:] = 0.0
        for n in range(batch):
            for start in range(0, size, width):
                block = x[n, c, start : start + width]
                for j in range(block.size):
                    d = block[j] - mu
                    lanes[j] += d * d
        mean[c] = mu
        var[c] = lanes.sum() / count
        std[c] = np.sqrt(var[c] + eps)


@jit
def moving_averages(mean_sum, var_sum, count, mean, var, fraction, correction):
    """Caffe's running sums: count = count * fraction + 1, mean_sum = mean_sum * fraction + mean,
    var_sum = var_sum * fraction + correction * var (``fraction``, ``correction``: of the arrays'
    dtype; each operation rounded as numpy's in-place ones, no fused multiply-add). One call
    instead of seven small numpy operations (about 35 us a BatchNorm)."""
    count[0] = count[0] * fraction
    count[0] = count[0] + count.dtype.type(1)
    for c in range(mean.size):
        m = mean_sum[c] * fraction
        mean_sum[c] = m + mean[c]
        v = correction * var[c]
        w = var_sum[c] * fraction
        var_sum[c] = w + v


@jit
def normalize(x, mean, std, normalized, y, both, lo, hi):
    """normalized = (x - mean[c]) / std[c], and y likewise when ``both`` (then y may be x)."""
    batch, channels, size = x.shape
    a = np.empty(BLOCK, x.dtype)
    for n in range(batch):
        for c in range(lo, hi):
            mu, s = mean[c], std[c]
            for start in range(0, size, BLOCK):
                m = min(BLOCK, size - start)
                xb = x[n, c, start : start + m]
                for j in range(m):
                    a[j] = (xb[j] - mu) / s
                kept = normalized[n, c, start : start + m]
                for j in range(m):
                    kept[j] = a[j]
                if both:
                    yb = y[n, c, start : start + m]
                    for j in range(m):
                        yb[j] = a[j]


@jit
def normalize_backward(dy, normalized, std, dx, lo, hi):
    batch, channels, size = dy.shape
    lanes = new_lanes(size)
    lanes_y = new_lanes(size)
    width = lanes_y.size
    a = np.empty(BLOCK, dy.dtype)
    count = batch * size
    for c in range(lo, hi):
        lanes[:] = 0.0
        lanes_y[:] = 0.0
        for n in range(batch):
            for start in range(0, size, width):
                d, v = dy[n, c, start : start + width], normalized[n, c, start : start + width]
                for j in range(d.size):
                    lanes[j] += d[j]
                    lanes_y[j] += d[j] * v[j]
        mean_dy = dy.dtype.type(lanes.sum() / count)
        mean_dyy = dy.dtype.type(lanes_y.sum() / count)
        s = std[c]
        for n in range(batch):
            for start in range(0, size, BLOCK):
                m = min(BLOCK, size - start)
                d = dy[n, c, start : start + m]
                for j in range(m):
                    a[j] = d[j]
                v = normalized[n, c, start : start + m]
                out = dx[n, c, start : start + m]
                for j in range(m):
                    out[j] = (a[j] - mean_dy - v[j] * mean_dyy) / s


# -- BatchNorm -> Scale -> ReLU, run as one (netlayers.layers.fused) -----------------------------
@jit
def chain_forward(x, mean, std, normalized, keep, scale, bias, slope, y, lo, hi):
    """BatchNorm -> Scale -> ReLU's forward in one pass, after BatchNorm's statistics: with
    v = (x - mean[c]) / std[c] (written to ``normalized`` too when ``keep``) and
    u = v * scale[c] + bias[c], y = u if u > 0 else slope * u. ``y`` may be ``x``."""
    batch, channels, size = x.shape
    a = np.empty(BLOCK, x.dtype)
    zero = y.dtype.type(0)
    for n in range(batch):
        for c in range(lo, hi):
            mu, sd, s, b = mean[c], std[c], scale[c], bias[c]
            for start in range(0, size, BLOCK):
                m = min(BLOCK, size - start)
                xb = x[n, c, start : start + m]
                for j in range(m):
                    a[j] = (xb[j] - mu) / sd
                if keep:
                    kept = normalized[n, c, start : start + m]
                    for j in range(m):
                        kept[j] = a[j]
                yb = y[n, c, start : start + m]
                for j in range(m):
                    u = a[j] * s + b
                    yb[j] = u if u > zero else u * slope


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
    lanes_gx = new_lanes(size)
    lanes_g = new_lanes(size)
    width = lanes_g.size
    a = np.empty(BLOCK, dy.dtype)
    count = batch * size
    zero = dy.dtype.type(0)
    for c in range(lo, hi):
        lanes_gx[:] = 0.0
        lanes_g[:] = 0.0
        mu, sd = mean[c], std[c]
        for n in range(batch):
            for start in range(0, size, width):
                stop = start + width
                d, yy, v = dy[n, c, start:stop], y[n, c, start:stop], normalized[n, c, start:stop]
                if remake:
                    for j in range(d.size):
                        g = d[j] if yy[j] > zero else d[j] * slope
                        lanes_gx[j] += g * ((v[j] - mu) / sd)
                        lanes_g[j] += g
                else:
                    for j in range(d.size):
                        g = d[j] if yy[j] > zero else d[j] * slope
                        lanes_gx[j] += g * v[j]
                        lanes_g[j] += g
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
            for start in range(0, size, BLOCK):
                m = min(BLOCK, size - start)
                d = dy[n, c, start : start + m]
                yy = y[n, c, start : start + m]
                v = normalized[n, c, start : start + m]
                out = dx[n, c, start : start + m]
                for j in range(m):
                    a[j] = d[j] if yy[j] > zero else d[j] * slope
                if mode == 0 and remake:
                    for j in range(m):
                        out[j] = factor * (a[j] - mean_g - (v[j] - mu) / sd * mean_gx)
                elif mode == 0:
                    for j in range(m):
                        out[j] = factor * (a[j] - mean_g - v[j] * mean_gx)
                else:
                    for j in range(m):
                        out[j] = a[j] * factor
                if scale_grad:
                    for j in range(m):
                        d[j] = a[j] * s
