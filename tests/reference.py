"""Slow, obvious numpy references for the vision and normalization kernels and layers.

Each function follows the textbook / Caffe definition with plain loops, independently of the
kernels it checks (no shared helpers with netlayers.kernels). Everything runs in float64.
"""

import math

import numpy as np


def conv_out(size, kernel, pad, stride, dilation=1):
    return (size + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1


def im2col(x, kernel, pad, stride, dilation):
    """col[n, (c * kh + u) * kw + v, i * OW + j] = x[n, c, i s - p + u d, j s - p + v d] or 0."""
    n, c, h, w = x.shape
    (kh, kw), (ph, pw), (sh, sw), (dh, dw) = kernel, pad, stride, dilation
    oh, ow = conv_out(h, kh, ph, sh, dh), conv_out(w, kw, pw, sw, dw)
    col = np.zeros((n, c * kh * kw, oh * ow))
    for ci in range(c):
        for u in range(kh):
            for v in range(kw):
                row = (ci * kh + u) * kw + v
                for i in range(oh):
                    for j in range(ow):
                        y, x_ = i * sh - ph + u * dh, j * sw - pw + v * dw
                        if 0 <= y < h and 0 <= x_ < w:
                            col[:, row, i * ow + j] = x[:, ci, y, x_]
    return col


def convolution(x, weight, bias, stride, pad, dilation, group):
    """y[n, o, i, j] = b[o] + sum over the input channels c of o's group and taps (u, v) of
    W[o, c, u, v] x[n, c, i s - p + u d, j s - p + v d] (x = 0 outside the image)."""
    n, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    (ph, pw), (sh, sw), (dh, dw) = pad, stride, dilation
    oh, ow = conv_out(h, kh, ph, sh, dh), conv_out(w, kw, pw, sw, dw)
    og = o // group
    y = np.zeros((n, o, oh, ow))
    for out_c in range(o):
        g = out_c // og
        for i in range(oh):
            for j in range(ow):
                total = np.zeros(n)
                for ci in range(cg):
                    for u in range(kh):
                        for v in range(kw):
                            yy, xx = i * sh - ph + u * dh, j * sw - pw + v * dw
                            if 0 <= yy < h and 0 <= xx < w:
                                total += weight[out_c, ci, u, v] * x[:, g * cg + ci, yy, xx]
                y[:, out_c, i, j] = total + (bias[out_c] if bias is not None else 0.0)
    return y


def deconvolution(x, weight, bias, stride, pad, dilation, group):
    """Each input pixel scatters into the output: y[n, o, i s - p + u d, j s - p + v d] +=
    W[c, o', u, v] x[n, c, i, j] for c in o's group (o' = o within the group); then + b[o].
    Weight shape (C, O / group, kh, kw); output size s (H - 1) + d (k - 1) + 1 - 2 p."""
    n, c, h, w = x.shape
    _, og, kh, kw = weight.shape
    (ph, pw), (sh, sw), (dh, dw) = pad, stride, dilation
    oh = sh * (h - 1) + dh * (kh - 1) + 1 - 2 * ph
    ow = sw * (w - 1) + dw * (kw - 1) + 1 - 2 * pw
    cg = c // group
    y = np.zeros((n, og * group, oh, ow))
    for ci in range(c):
        g = ci // cg
        for o in range(og):
            for i in range(h):
                for j in range(w):
                    for u in range(kh):
                        for v in range(kw):
                            yy, xx = i * sh - ph + u * dh, j * sw - pw + v * dw
                            if 0 <= yy < oh and 0 <= xx < ow:
                                y[:, g * og + o, yy, xx] += weight[ci, o, u, v] * x[:, ci, i, j]
    if bias is not None:
        y += bias[None, :, None, None]
    return y


def pooled_size(size, kernel, pad, stride, round_mode="CEIL", any_pad=None):
    """Caffe's PoolingLayer::Reshape, written out for one axis; ``any_pad``: whether the layer
    pads on some axis (Caffe then clips every axis), default pad > 0."""
    if round_mode == "CEIL":
        out = int(math.ceil((size + 2 * pad - kernel) / stride)) + 1
    else:
        out = int(math.floor((size + 2 * pad - kernel) / stride)) + 1
    if (pad > 0 if any_pad is None else any_pad) and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def pooling(x, kernel, stride, pad, method="MAX", round_mode="CEIL"):
    """Max (with first-index argmax) or Caffe-average pooling by windows; returns (y, argmax)."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    padded = ph > 0 or pw > 0
    oh, ow = pooled_size(h, kh, ph, sh, round_mode, padded), pooled_size(w, kw, pw, sw, round_mode, padded)
    y = np.zeros((n, c, oh, ow))
    arg = np.zeros((n, c, oh, ow), dtype=np.int64)
    for b in range(n):
        for ch in range(c):
            for i in range(oh):
                for j in range(ow):
                    hs, ws = i * sh - ph, j * sw - pw
                    he, we = min(hs + kh, h + ph), min(ws + kw, w + pw)
                    pool_size = (he - hs) * (we - ws)
                    hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
                    window = x[b, ch, hs:he, ws:we]
                    if method == "MAX":
                        flat = int(np.argmax(window))  # numpy: first occurrence
                        r, s = divmod(flat, we - ws)
                        y[b, ch, i, j] = window[r, s]
                        arg[b, ch, i, j] = (hs + r) * w + ws + s
                    else:
                        y[b, ch, i, j] = window.sum() / pool_size
    return y, arg


def lrn(x, local_size, alpha, beta, k, region="ACROSS_CHANNELS"):
    """ACROSS_CHANNELS: scale = k + alpha / n * sum of x^2 over channels c - (n-1)/2 .. c + (n-1)/2;
    WITHIN_CHANNEL: scale = 1 + alpha / n^2 * sum of x^2 over the n x n zero-padded window.
    y = x * scale^-beta."""
    n, c, h, w = x.shape
    half = (local_size - 1) // 2
    scale = np.zeros_like(x)
    for b in range(n):
        for ch in range(c):
            for i in range(h):
                for j in range(w):
                    if region == "ACROSS_CHANNELS":
                        lo, hi = max(0, ch - half), min(c, ch + half + 1)
                        scale[b, ch, i, j] = k + alpha / local_size * np.sum(x[b, lo:hi, i, j] ** 2)
                    else:
                        window = x[b, ch, max(0, i - half) : i + half + 1, max(0, j - half) : j + half + 1]
                        scale[b, ch, i, j] = 1 + alpha / local_size**2 * np.sum(window**2)
    return x * scale**-beta


def batch_norm(x, mean=None, variance=None, eps=1e-5):
    """y = (x - mean_c) / sqrt(var_c + eps) per channel (axis 1); batch statistics (biased
    variance) when mean/variance are not given."""
    axes = (0,) + tuple(range(2, x.ndim))
    if mean is None:
        mean = x.mean(axis=axes)
        variance = ((x - mean.reshape((1, -1) + (1,) * (x.ndim - 2))) ** 2).mean(axis=axes)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x - mean.reshape(shape)) / np.sqrt(variance.reshape(shape) + eps)


def mvn(x, normalize_variance=True, across_channels=False, eps=1e-9):
    """Per (n, c) (or per n when across_channels): y = x - mean, then / (std + eps)."""
    n = x.shape[0]
    rows = x.reshape(n, -1) if across_channels else x.reshape(n * x.shape[1], -1)
    y = np.empty_like(rows)
    for r in range(rows.shape[0]):
        centred = rows[r] - rows[r].mean()
        if normalize_variance:
            centred = centred / (np.sqrt(np.mean(centred**2)) + eps)
        y[r] = centred
    return y.reshape(x.shape)


def depthwise_forward(x, weight, bias, pad, stride, dilation, multiplier):
    """Depthwise convolution (group = channels, ``multiplier`` outputs per channel) by numpy
    slices, one tap at a time."""
    n, c, h, w = x.shape
    kh, kw = weight.shape[2:]
    padded = np.zeros((n, c, h + 2 * pad[0], w + 2 * pad[1]), x.dtype)
    padded[:, :, pad[0] : pad[0] + h, pad[1] : pad[1] + w] = x
    out_h = (h + 2 * pad[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (w + 2 * pad[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    source = np.repeat(padded, multiplier, axis=1)
    y = np.zeros((n, c * multiplier, out_h, out_w), x.dtype) + bias.reshape(1, -1, 1, 1)
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dilation[0], i * dilation[0] + stride[0] * (out_h - 1) + 1, stride[0])
            cols = slice(j * dilation[1], j * dilation[1] + stride[1] * (out_w - 1) + 1, stride[1])
            y += weight[:, 0, i, j].reshape(1, -1, 1, 1) * source[:, :, rows, cols]
    return y


def tap_offsets(kernel, pad, dilation):
    """(u, v, row offset, column offset) of a stride-1 convolution: input pixel (i + row offset,
    j + column offset) feeds output pixel (i, j) through tap (u, v)."""
    (kh, kw), (ph, pw), (dh, dw) = kernel, pad, dilation
    return [(u, v, u * dh - ph, v * dw - pw) for u in range(kh) for v in range(kw)]


def shifted(array, dy, dx, shape):
    """out[..., i, j] = array[..., i + dy, j + dx] (0 where that falls outside ``array``),
    out of the given (rows, columns) ``shape``."""
    out = np.zeros(array.shape[:-2] + shape)
    h, w = array.shape[-2:]
    rows = [(i, i + dy) for i in range(shape[0]) if 0 <= i + dy < h]
    cols = [(j, j + dx) for j in range(shape[1]) if 0 <= j + dx < w]
    for i, si in rows:
        for j, sj in cols:
            out[..., i, j] = array[..., si, sj]
    return out


def direct_data_grad(dy, weight, pad, dilation, image_shape):
    """dx[n, c, i + ro, j + co] += W[o, c, u, v] dy[n, o, i, j] over taps, inside the image."""
    dx = np.zeros(image_shape)
    for u, v, ro, co in tap_offsets(weight.shape[2:], pad, dilation):
        contribution = np.einsum("noij,oc->ncij", dy, weight[:, :, u, v])
        dx += shifted(contribution, -ro, -co, image_shape[2:])
    return dx


def direct_weight_grad(x, dy, kernel, pad, dilation):
    """dW[o, c, u, v] = sum over n, i, j of dy[n, o, i, j] x[n, c, i + ro, j + co]."""
    grad = np.zeros((dy.shape[1], x.shape[1]) + kernel)
    for u, v, ro, co in tap_offsets(kernel, pad, dilation):
        grad[:, :, u, v] = np.einsum("noij,ncij->oc", dy, shifted(x, ro, co, dy.shape[2:]))
    return grad


def stride_one_case(shape, outputs, kernel, pad, dilation, seed=0):
    """(x, weight, bias, dy) drawn for a stride-1 convolution of images ``shape``, and its
    (y, dx, dweight) by the direct formulas."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    weight = rng.standard_normal((outputs, shape[1]) + tuple(kernel))
    bias = rng.standard_normal(outputs)
    y = convolution(x, weight, bias, (1, 1), pad, dilation, 1)
    dy = rng.standard_normal(y.shape)
    expected = (y, direct_data_grad(dy, weight, pad, dilation, shape), direct_weight_grad(x, dy, kernel, pad, dilation))
    return (x, weight, bias, dy), expected


def assert_within(results, expected, scale):
    """Each result within ``scale`` times its expected array's largest magnitude of it (float32
    results checked to be float32)."""
    for got, want in zip(results, expected):
        assert got.dtype in (np.float32, np.float64)
        np.testing.assert_allclose(got, want, rtol=0, atol=scale * np.abs(want).max())


def assert_form_matches_direct(run, shape, outputs, kernel, pad, dilation):
    """A stride-1 convolution form, ``run(x, weight, bias, dy, pad, dilation, dtype)`` giving its
    (y, dx, dweight), against the direct formulas on :func:`stride_one_case`'s draw: within
    1e-12 of their scale in float64, 1e-5 in float32 (and float32 results)."""
    (x, weight, bias, dy), expected = stride_one_case(shape, outputs, kernel, pad, dilation)
    assert_within(run(x, weight, bias, dy, pad, dilation, np.float64), expected, 1e-12)
    results = run(x, weight, bias, dy, pad, dilation, np.float32)
    assert all(result.dtype == np.float32 for result in results)
    assert_within(results, expected, 1e-5)


def assert_one_gradient_alone(run, shape, outputs, kernel, pad, dilation):
    """A stride-1 convolution form's ``run`` (as for :func:`assert_form_matches_direct`) without
    a bias, asked for the weight gradient alone (dx None) and then the input gradient alone
    (dweight None), each against the direct formulas in float64."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    weight = rng.standard_normal((outputs, shape[1]) + kernel)
    y_ref = convolution(x, weight, np.zeros(outputs), (1, 1), pad, dilation, 1)
    dy = rng.standard_normal(y_ref.shape)
    y, dx, dw = run(x, weight, None, dy, pad, dilation, np.float64, dx_wanted=False)
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-12 * np.abs(y_ref).max())
    assert dx is None
    np.testing.assert_allclose(dw, direct_weight_grad(x, dy, kernel, pad, dilation), rtol=1e-12, atol=1e-12)
    _, dx, dw = run(x, weight, None, dy, pad, dilation, np.float64, weight_wanted=False)
    assert dw is None
    np.testing.assert_allclose(dx, direct_data_grad(dy, weight, pad, dilation, shape), rtol=1e-12, atol=1e-12)
