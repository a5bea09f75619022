"""Pooling kernels (max and average, forward and backward) over (N, C, H, W) batches.

Window of output (oh, ow), kernel kh x kw, stride sh, sw, padding ph, pw (Caffe's rules): rows
from hs = oh * sh - ph to he = min(hs + kh, H + ph) in the padded frame, likewise for columns.

- MAX: y = max of x over the window clipped to the image ([max(hs, 0), min(he, H)) x ...);
  ``mask`` gets the index h * W + w of the maximum within its plane. Ties: the first index in
  row-major order wins (strict ``>`` while scanning). Backward: dx[mask] += dy.
- AVE: y = (sum of x over the window clipped to the image) / pool_size, where pool_size =
  (he - hs) * (we - ws) counts the window clipped to the *padded* bounds [-pad, H + pad): the
  padding counts in the divisor, as in Caffe. Backward: every pixel of the clipped window
  receives dy / pool_size.

Windows are never empty when pad < kernel and the output size follows Caffe (the last window
starts inside image + pad); the Pooling layer checks both.

Implementation notes (measured on LeNet's pool1, 64x20x24x24 -> 12x12, float32):
- flat arrays with unsigned (np.uint64) indices: numba then skips the negative-index
  wraparound test, and no per-row array views are made (each view costs a reference-count
  update); generic window loops 1.1 ms, per-row views 0.45 ms, flat 0.2 ms;
- windows wholly inside the image with a 2x2 or 3x3 kernel take straight-line code whose
  comparisons compile to selects (random data defeats branch prediction); with the 2x2 kernel
  and stride 2, the stride is a compile-time constant so LLVM vectorizes the loop;
- windows clipped by the image edge take the generic path.
"""

import numpy as np

from ._jit import jit


@jit
def _interior(out_w, kernel, stride, pad, size):
    """Outputs [lo, hi) whose windows lie wholly inside [0, size)."""
    lo = -(-pad // stride)
    hi = (size - kernel + pad) // stride + 1
    if hi > out_w:
        hi = out_w
    if hi < lo:
        hi = lo
    return lo, hi


@jit
def _max_window(src, plane, hs, he, ws, we, width):
    """(max, plane index of the first max) of src over rows [hs, he) x columns [ws, we)."""
    at = hs * width + ws
    best = src[np.uint64(plane + at)]
    for h in range(hs, he):
        for w in range(ws, we):
            v = src[np.uint64(plane + h * width + w)]
            if v > best:
                best = v
                at = h * width + w
    return best, at


@jit
def _max_forward(x, kh, kw, sh, sw, ph, pw, y, mask):
    batch, channels, height, width = x.shape
    out_h, out_w = y.shape[2], y.shape[3]
    src = x.reshape(-1)
    dst = y.reshape(-1)
    idx = mask.reshape(-1)
    lo, hi = _interior(out_w, kw, sw, pw, width)
    count = np.uint64(hi - lo)
    one, two = np.uint64(1), np.uint64(2)
    usw = np.uint64(sw)
    uwidth = np.uint64(width)
    straight = (kh == 2 and kw == 2) or (kh == 3 and kw == 3)
    for plane_index in range(batch * channels):
        plane = plane_index * height * width
        out_plane = plane_index * out_h * out_w
        for oh in range(out_h):
            hs = oh * sh - ph
            he = min(hs + kh, height)
            hs = max(hs, 0)
            first, last = 0, 0
            if straight and he - hs == kh:
                first, last = lo, hi
                left = hs * width + lo * sw - pw  # plane index of the first window
                r0 = np.uint64(plane + left)
                r1 = r0 + uwidth
                o = np.uint64(out_plane + oh * out_w + lo)
                if kh == 2 and sw == 2:
                    for q in range(count):
                        s = two * q
                        at = np.int64(s)
                        best = src[r0 + s]
                        v = src[r0 + s + one]
                        at = np.int64(s + one) if v > best else at
                        best = v if v > best else best
                        v = src[r1 + s]
                        at = np.int64(s + uwidth) if v > best else at
                        best = v if v > best else best
                        v = src[r1 + s + one]
                        at = np.int64(s + uwidth + one) if v > best else at
                        best = v if v > best else best
                        dst[o + q] = best
                        idx[o + q] = left + at
                elif kh == 2:
                    for q in range(count):
                        s = usw * q
                        at = np.int64(s)
                        best = src[r0 + s]
                        v = src[r0 + s + one]
                        at = np.int64(s + one) if v > best else at
                        best = v if v > best else best
                        v = src[r1 + s]
                        at = np.int64(s + uwidth) if v > best else at
                        best = v if v > best else best
                        v = src[r1 + s + one]
                        at = np.int64(s + uwidth + one) if v > best else at
                        best = v if v > best else best
                        dst[o + q] = best
                        idx[o + q] = left + at
                else:
                    r2 = r1 + uwidth
                    for q in range(count):
                        s = usw * q
                        at = np.int64(s)
                        best = src[r0 + s]
                        for j in (one, two):
                            v = src[r0 + s + j]
                            at = np.int64(s + j) if v > best else at
                            best = v if v > best else best
                        for j in (np.uint64(0), one, two):
                            v = src[r1 + s + j]
                            at = np.int64(s + uwidth + j) if v > best else at
                            best = v if v > best else best
                        for j in (np.uint64(0), one, two):
                            v = src[r2 + s + j]
                            at = np.int64(s + two * uwidth + j) if v > best else at
                            best = v if v > best else best
                        dst[o + q] = best
                        idx[o + q] = left + at
            for ow in range(out_w):
                if first <= ow < last:
                    continue
                ws = ow * sw - pw
                best, at = _max_window(src, plane, hs, he, max(ws, 0), min(ws + kw, width), width)
                o = np.uint64(out_plane + oh * out_w + ow)
                dst[o] = best
                idx[o] = at


def _check(x, kernel, stride, pad, y, mask=None):
    """The kernels index without bounds checks: every window must start inside the image and
    not be empty, and the arrays must be contiguous and agree (a cheap test per call)."""
    ok = (
        x.ndim == 4
        and y.ndim == 4
        and x.shape[:2] == y.shape[:2]
        and x.flags.c_contiguous
        and y.flags.c_contiguous
        and (mask is None or (mask.shape == y.shape and mask.flags.c_contiguous))
    )
    for axis in (0, 1):
        size, out = x.shape[2 + axis], y.shape[2 + axis]
        ok = ok and 0 <= pad[axis] < kernel[axis] and stride[axis] > 0 and (out - 1) * stride[axis] - pad[axis] < size
    if not ok:
        raise ValueError(
            f"pooling: output {y.shape} does not fit input {x.shape} with kernel {kernel}, stride {stride}, pad {pad}"
        )


def max_pool_forward(x, kernel, stride, pad, y, mask):
    """y = window maxima of x, mask = their plane indices h * W + w (first index on ties)."""
    _check(x, kernel, stride, pad, y, mask)
    _max_forward(x, kernel[0], kernel[1], stride[0], stride[1], pad[0], pad[1], y, mask)
    return y


@jit
def _max_backward(dy, mask, dx):
    batch, channels, height, width = dx.shape
    out_size = dy.shape[2] * dy.shape[3]
    size = height * width
    grad = dy.reshape(-1)
    idx = mask.reshape(-1)
    dst = dx.reshape(-1)
    zero = dx.dtype.type(0)
    for q in range(np.uint64(dst.size)):
        dst[q] = zero
    for plane in range(batch * channels):
        xbase = plane * size
        obase = np.uint64(plane * out_size)
        for q in range(np.uint64(out_size)):
            o = obase + q
            dst[np.uint64(xbase + int(idx[o]))] += grad[o]


def max_pool_backward(dy, mask, dx):
    """dx = 0, then dx[n, c, mask[n, c, o]] += dy[n, c, o] for every output o. ``mask`` may be
    integer or float (Caffe's optional mask top holds the indices as floats)."""
    if dy.shape != mask.shape or dy.shape[:2] != dx.shape[:2] or not dx.flags.c_contiguous:
        raise ValueError(f"max pooling backward: diff {dy.shape}, mask {mask.shape}, input {dx.shape}")
    _max_backward(dy, mask, dx)
    return dx


@jit
def _ave_forward(x, kh, kw, sh, sw, ph, pw, y):
    batch, channels, height, width = x.shape
    out_h, out_w = y.shape[2], y.shape[3]
    src = x.reshape(-1)
    dst = y.reshape(-1)
    zero = x.dtype.type(0)
    lo, hi = _interior(out_w, kw, sw, pw, width)
    count = np.uint64(hi - lo)
    one, two = np.uint64(1), np.uint64(2)
    usw = np.uint64(sw)
    uwidth = np.uint64(width)
    full = x.dtype.type(kh * kw)
    straight = (kh == 2 and kw == 2) or (kh == 3 and kw == 3)
    for plane_index in range(batch * channels):
        plane = plane_index * height * width
        out_plane = plane_index * out_h * out_w
        for oh in range(out_h):
            hs = oh * sh - ph
            he = min(hs + kh, height + ph)
            rows = he - hs
            hs, he = max(hs, 0), min(he, height)
            first, last = 0, 0
            if straight and he - hs == kh:
                first, last = lo, hi
                r0 = np.uint64(plane + hs * width + lo * sw - pw)
                r1 = r0 + uwidth
                o = np.uint64(out_plane + oh * out_w + lo)
                if kh == 2 and sw == 2:
                    for q in range(count):
                        s = two * q
                        dst[o + q] = (src[r0 + s] + src[r0 + s + one] + src[r1 + s] + src[r1 + s + one]) / full
                elif kh == 2:
                    for q in range(count):
                        s = usw * q
                        dst[o + q] = (src[r0 + s] + src[r0 + s + one] + src[r1 + s] + src[r1 + s + one]) / full
                else:
                    r2 = r1 + uwidth
                    for q in range(count):
                        s = usw * q
                        dst[o + q] = (
                            src[r0 + s]
                            + src[r0 + s + one]
                            + src[r0 + s + two]
                            + src[r1 + s]
                            + src[r1 + s + one]
                            + src[r1 + s + two]
                            + src[r2 + s]
                            + src[r2 + s + one]
                            + src[r2 + s + two]
                        ) / full
            for ow in range(out_w):
                if first <= ow < last:
                    continue
                ws = ow * sw - pw
                we = min(ws + kw, width + pw)
                pool_size = rows * (we - ws)
                ws, we = max(ws, 0), min(we, width)
                total = zero
                for h in range(hs, he):
                    row = np.uint64(plane + h * width)
                    for w in range(np.uint64(ws), np.uint64(we)):
                        total += src[row + w]
                dst[np.uint64(out_plane + oh * out_w + ow)] = total / x.dtype.type(pool_size)


def ave_pool_forward(x, kernel, stride, pad, y):
    """y = (sum of x over the window clipped to the image) / (window size clipped to the
    padded bounds), as in Caffe."""
    _check(x, kernel, stride, pad, y)
    _ave_forward(x, kernel[0], kernel[1], stride[0], stride[1], pad[0], pad[1], y)
    return y


@jit
def _ave_backward(dy, kh, kw, sh, sw, ph, pw, dx):
    batch, channels, height, width = dx.shape
    out_h, out_w = dy.shape[2], dy.shape[3]
    grad = dy.reshape(-1)
    dst = dx.reshape(-1)
    zero = dx.dtype.type(0)
    lo, hi = _interior(out_w, kw, sw, pw, width)
    count = np.uint64(hi - lo)
    one, two = np.uint64(1), np.uint64(2)
    uwidth = np.uint64(width)
    full = dx.dtype.type(kh * kw)
    tiles = kh == 2 and kw == 2 and sh == 2 and sw == 2  # windows tile the image: no overlap
    for q in range(np.uint64(dst.size)):
        dst[q] = zero
    for plane_index in range(batch * channels):
        plane = plane_index * height * width
        out_plane = plane_index * out_h * out_w
        for oh in range(out_h):
            hs = oh * sh - ph
            he = min(hs + kh, height + ph)
            rows = he - hs
            hs, he = max(hs, 0), min(he, height)
            first, last = 0, 0
            if tiles and he - hs == 2:
                first, last = lo, hi
                r0 = np.uint64(plane + hs * width + lo * 2 - pw)
                r1 = r0 + uwidth
                o = np.uint64(out_plane + oh * out_w + lo)
                for q in range(count):
                    s = two * q
                    share = grad[o + q] / full
                    dst[r0 + s] = share
                    dst[r0 + s + one] = share
                    dst[r1 + s] = share
                    dst[r1 + s + one] = share
            for ow in range(out_w):
                if first <= ow < last:
                    continue
                ws = ow * sw - pw
                we = min(ws + kw, width + pw)
                share = grad[np.uint64(out_plane + oh * out_w + ow)] / dx.dtype.type(rows * (we - ws))
                ws, we = max(ws, 0), min(we, width)
                for h in range(hs, he):
                    row = np.uint64(plane + h * width)
                    for w in range(np.uint64(ws), np.uint64(we)):
                        dst[row + w] += share


def ave_pool_backward(dy, kernel, stride, pad, dx):
    """dx = 0, then every pixel of each clipped window gets dy / pool_size (the same divisor
    as the forward)."""
    _check(dx, kernel, stride, pad, dy)
    _ave_backward(dy, kernel[0], kernel[1], stride[0], stride[1], pad[0], pad[1], dx)
    return dx
