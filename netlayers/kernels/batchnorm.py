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

Below ``ROWS_BELOW`` positions a plane (BatchNorm after an InnerProduct: P = 1) each kernel reads
an image's channels [lo, hi) as one row instead (``_rows`` kernels: the sums run in a float64
lane per value of the row, added up per channel at the end; the values per channel are spread
along the row first), so that its loops run over many values rather than P.

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
# Planes of fewer positions take the ``_rows`` kernels: each loop of the others runs over one
# plane, P values. One thread, float32, statistics + chain forward + chain backward, planes
# against rows (2026-12-07): 256 x 1024 x 1 14.6 against 1.3 ms; 32 x 512 x 4 0.86 against
# 0.35; 8 x 2048 x 9 1.09 against 0.88; 32 x 512 x 12 1.14 against 1.02; 32 x 512 x 16 1.03
# against 1.34 (the rows' per-position arrays leave L1); 32 x 512 x 49 1.97 against 4.63.
ROWS_BELOW = 16


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
    if size < ROWS_BELOW:
        return _moments_rows(x, mean, var, std, eps, lo, hi)
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
    if size < ROWS_BELOW:
        return _normalize_rows(x, mean, std, normalized, y, both, lo, hi)
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
    if size < ROWS_BELOW:
        return _normalize_backward_rows(dy, normalized, std, dx, lo, hi)
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
    if size < ROWS_BELOW:
        return _chain_forward_rows(x, mean, std, normalized, keep, scale, bias, slope, y, lo, hi)
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
    if size < ROWS_BELOW:
        return _chain_backward_rows(
            dy, y, normalized, mean, remake, scale, std, slope, mode, sum_gx, sum_g, dx, scale_grad, lo, hi
        )
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


# -- the same over rows: an image's channels [lo, hi) as one row, for planes of few positions ----
@jit
def _spread(values, lo, hi, size, out):
    """out[(c - lo) * size + p] = values[c] for the channels [lo, hi) and every position p."""
    for c in range(lo, hi):
        v = values[c]
        for p in range((c - lo) * size, (c - lo + 1) * size):
            out[p] = v
    return out


@jit
def _per_channel(sums, lo, hi, size, out):
    """out[c] = the sum of sums[(c - lo) * size : (c - lo + 1) * size], for c in [lo, hi)."""
    for c in range(lo, hi):
        total = 0.0
        for p in range((c - lo) * size, (c - lo + 1) * size):
            total += sums[p]
        out[c] = total
    return out


@jit
def _rows(array, lo, hi):
    """``array`` (N, C, P) as its N rows of the channels [lo, hi): (N, (hi - lo) P)."""
    batch, channels, size = array.shape
    return array.reshape(batch, channels * size)[:, lo * size : hi * size]


@jit
def _moments_rows(x, mean, var, std, eps, lo, hi):
    batch, channels, size = x.shape
    rows = _rows(x, lo, hi)
    width = rows.shape[1]
    count = batch * size
    sums = np.zeros(width, np.float64)
    for n in range(batch):
        row = rows[n]
        for k in range(width):
            sums[k] += row[k]
    means = _per_channel(sums, lo, hi, size, np.empty(channels, np.float64))
    for c in range(lo, hi):
        means[c] /= count
    spread = _spread(means, lo, hi, size, np.empty(width, np.float64))
    sums[:] = 0.0
    for n in range(batch):
        row = rows[n]
        for k in range(width):
            d = row[k] - spread[k]
            sums[k] += d * d
    squares = _per_channel(sums, lo, hi, size, np.empty(channels, np.float64))
    for c in range(lo, hi):
        mean[c] = means[c]
        var[c] = squares[c] / count
        std[c] = np.sqrt(var[c] + eps)


@jit
def _normalize_rows(x, mean, std, normalized, y, both, lo, hi):
    rows, kept_rows, out_rows = _rows(x, lo, hi), _rows(normalized, lo, hi), _rows(y, lo, hi)
    batch, width = rows.shape
    size = x.shape[2]
    mu = _spread(mean, lo, hi, size, np.empty(width, x.dtype))
    sd = _spread(std, lo, hi, size, np.empty(width, x.dtype))
    a = np.empty(width, x.dtype)
    for n in range(batch):
        xb, kept = rows[n], kept_rows[n]
        for k in range(width):
            a[k] = (xb[k] - mu[k]) / sd[k]
        for k in range(width):
            kept[k] = a[k]
        if both:
            yb = out_rows[n]
            for k in range(width):
                yb[k] = a[k]


@jit
def _chain_forward_rows(x, mean, std, normalized, keep, scale, bias, slope, y, lo, hi):
    rows, kept_rows, out_rows = _rows(x, lo, hi), _rows(normalized, lo, hi), _rows(y, lo, hi)
    batch, width = rows.shape
    size = x.shape[2]
    mu = _spread(mean, lo, hi, size, np.empty(width, x.dtype))
    sd = _spread(std, lo, hi, size, np.empty(width, x.dtype))
    s = _spread(scale, lo, hi, size, np.empty(width, x.dtype))
    b = _spread(bias, lo, hi, size, np.empty(width, x.dtype))
    a = np.empty(width, x.dtype)
    zero = y.dtype.type(0)
    for n in range(batch):
        xb = rows[n]
        for k in range(width):
            a[k] = (xb[k] - mu[k]) / sd[k]
        if keep:
            kept = kept_rows[n]
            for k in range(width):
                kept[k] = a[k]
        yb = out_rows[n]
        for k in range(width):
            u = a[k] * s[k] + b[k]
            yb[k] = u if u > zero else u * slope


@jit
def _normalize_backward_rows(dy, normalized, std, dx, lo, hi):
    batch, channels, size = dy.shape
    d_rows, v_rows, out_rows = _rows(dy, lo, hi), _rows(normalized, lo, hi), _rows(dx, lo, hi)
    width = d_rows.shape[1]
    count = batch * size
    sums, sums_y = np.zeros(width, np.float64), np.zeros(width, np.float64)
    for n in range(batch):
        d, v = d_rows[n], v_rows[n]
        for k in range(width):
            sums[k] += d[k]
            sums_y[k] += d[k] * v[k]
    mean_dy = _per_channel(sums, lo, hi, size, np.empty(channels, np.float64))
    mean_dyy = _per_channel(sums_y, lo, hi, size, np.empty(channels, np.float64))
    m1, m2 = np.empty(channels, dy.dtype), np.empty(channels, dy.dtype)
    for c in range(lo, hi):
        m1[c] = mean_dy[c] / count
        m2[c] = mean_dyy[c] / count
    m1, m2 = _spread(m1, lo, hi, size, np.empty(width, dy.dtype)), _spread(m2, lo, hi, size, np.empty(width, dy.dtype))
    sd = _spread(std, lo, hi, size, np.empty(width, dy.dtype))
    a = np.empty(width, dy.dtype)
    for n in range(batch):
        d, v, out = d_rows[n], v_rows[n], out_rows[n]
        for k in range(width):
            a[k] = d[k]
        for k in range(width):
            out[k] = (a[k] - m1[k] - v[k] * m2[k]) / sd[k]


@jit
def _chain_backward_rows(
    dy, y, normalized, mean, remake, scale, std, slope, mode, sum_gx, sum_g, dx, scale_grad, lo, hi
):
    batch, channels, size = dy.shape
    d_rows, y_rows, v_rows, out_rows = _rows(dy, lo, hi), _rows(y, lo, hi), _rows(normalized, lo, hi), _rows(dx, lo, hi)
    width = d_rows.shape[1]
    count = batch * size
    zero = dy.dtype.type(0)
    mu = _spread(mean, lo, hi, size, np.empty(width, dy.dtype))
    sd = _spread(std, lo, hi, size, np.empty(width, dy.dtype))
    s = _spread(scale, lo, hi, size, np.empty(width, dy.dtype))
    sums_gx, sums_g = np.zeros(width, np.float64), np.zeros(width, np.float64)
    g = np.empty(width, dy.dtype)
    for n in range(batch):
        d, yy, v = d_rows[n], y_rows[n], v_rows[n]
        for k in range(width):
            g[k] = d[k] if yy[k] > zero else d[k] * slope
        if remake:
            for k in range(width):
                sums_gx[k] += g[k] * ((v[k] - mu[k]) / sd[k])
                sums_g[k] += g[k]
        else:
            for k in range(width):
                sums_gx[k] += g[k] * v[k]
                sums_g[k] += g[k]
    s1 = _per_channel(sums_gx, lo, hi, size, np.empty(channels, np.float64))
    s2 = _per_channel(sums_g, lo, hi, size, np.empty(channels, np.float64))
    factors, means_g, means_gx = (
        np.empty(channels, dy.dtype),
        np.empty(channels, dy.dtype),
        np.empty(channels, dy.dtype),
    )
    for c in range(lo, hi):
        sum_gx[c] = s1[c]
        sum_g[c] = s2[c]
        factor = scale[c] / std[c] if mode <= 1 else scale[c]
        factors[c] = dy.dtype.type(1) if mode == 3 else factor
        means_g[c] = s2[c] / count
        means_gx[c] = s1[c] / count
    factor = _spread(factors, lo, hi, size, np.empty(width, dy.dtype))
    mean_g = _spread(means_g, lo, hi, size, np.empty(width, dy.dtype))
    mean_gx = _spread(means_gx, lo, hi, size, np.empty(width, dy.dtype))
    for n in range(batch):
        d, yy, v, out = d_rows[n], y_rows[n], v_rows[n], out_rows[n]
        for k in range(width):
            g[k] = d[k] if yy[k] > zero else d[k] * slope
        if mode == 0 and remake:
            for k in range(width):
                out[k] = factor[k] * (g[k] - mean_g[k] - (v[k] - mu[k]) / sd[k] * mean_gx[k])
        elif mode == 0:
            for k in range(width):
                out[k] = factor[k] * (g[k] - mean_g[k] - v[k] * mean_gx[k])
        else:
            for k in range(width):
                out[k] = g[k] * factor[k]
        if scale_grad:
            for k in range(width):
                d[k] = g[k] * s[k]
