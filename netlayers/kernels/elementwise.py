"""Element-wise activation kernels (forward and backward), compiled with numba.

Arrays of any shape: kernels work on the flat views, large ones cut into one slice a worker
(``split``: 1.5x on 6 MiB, as the two cores' memory bandwidth adds up). ``out`` may be the
input array itself (in-place layers). Constants are typed from the array's dtype so float32
loops stay float32. The float32 forwards that need exp or tanh (sigmoid, tanh, ELU, Swish) run
``netlayers.kernels.vmath``'s vectorized kernels (4-10x numpy's ufuncs on AVX2 machines);
float64 stays with numpy's ufuncs.
"""

import numpy as np

from .. import parallel
from . import vmath
from ._jit import jit, vector_jit
from .batchnorm import new_lanes  # the float64 lanes a channel's sums run in (see there)


def split(call, array, arrays):
    """``call(lo, hi)`` over slices of the flat ``array``'s range, shared out over the workers
    when the ``arrays`` arrays of its size it touches are large enough (``parallel.over_slices``):
    element-wise work gives the same results however it is cut."""
    parallel.over_slices(call, array.size, arrays * array.nbytes)


@jit
def _relu_forward(x, slope, y):
    zero = x.dtype.type(0)
    for i in range(x.size):
        v = x[i]
        y[i] = v if v > zero else v * slope


@jit
def _relu_forward_in_place(y, slope):
    # y = v * (1 or slope), not "v if v > 0 else v * slope": where that keeps v, LLVM sees y[i]
    # stored back unchanged and stores only the other lanes, with a masked store (vmaskmovps),
    # microcoded on AMD's Zen 3: 512 K float32 0.39 ms against 0.05 ms with this full store
    # (2026-12-07; 33 us on 2026-12-04's EPYC, whose masked stores are fast). v * 1 is v, NaN
    # and -0 included: the results are bit for bit the same.
    zero, one = y.dtype.type(0), y.dtype.type(1)
    for i in range(np.uint64(y.size)):
        v = y[i]
        y[i] = v * (one if v > zero else slope)


def same_memory(a, b):
    """Whether two arrays of one shape start at the same address (a layer in place)."""
    return a.ctypes.data == b.ctypes.data


def relu_forward(x, negative_slope, out):
    """y = x if x > 0 else negative_slope * x."""
    x, y, slope = x.reshape(-1), out.reshape(-1), x.dtype.type(negative_slope)
    if same_memory(x, y):
        split(lambda lo, hi: _relu_forward_in_place(y[lo:hi], slope), x, 2)
    else:
        split(lambda lo, hi: _relu_forward(x[lo:hi], slope, y[lo:hi]), x, 2)


@jit
def _relu_backward(x, dy, slope, dx):
    zero = x.dtype.type(0)
    for i in range(x.size):
        dx[i] = dy[i] if x[i] > zero else dy[i] * slope


@jit
def _relu_backward_in_place(x, d, slope):
    # d read and written in place, x apart (a diff and its data never share memory); a full
    # store, as in _relu_forward_in_place: 512 K float32 0.08 ms against 0.42 ms masked (Zen 3)
    zero, one = x.dtype.type(0), x.dtype.type(1)
    for i in range(np.uint64(x.size)):
        d[i] = d[i] * (one if x[i] > zero else slope)


def relu_backward(x, dy, negative_slope, out):
    """dx = dy if x > 0 else negative_slope * dy (the kink at 0 takes the left slope, as Caffe)."""
    x, dy, dx, slope = x.reshape(-1), dy.reshape(-1), out.reshape(-1), x.dtype.type(negative_slope)
    if same_memory(dy, dx):
        split(lambda lo, hi: _relu_backward_in_place(x[lo:hi], dx[lo:hi], slope), x, 3)
    else:
        split(lambda lo, hi: _relu_backward(x[lo:hi], dy[lo:hi], slope, dx[lo:hi]), x, 3)


@jit
def _sum_relu_forward(a, b, slope, y):
    zero = y.dtype.type(0)
    for i in range(y.size):
        v = a[i] + b[i]
        y[i] = v if v > zero else v * slope


def sum_relu_forward(a, b, negative_slope, out):
    """y = relu(a + b) in one pass (a residual sum and the ReLU after it): the sum as
    ``np.add``'s, then ``relu_forward``'s select. ``out`` apart from a and b."""
    a, b, y, slope = a.reshape(-1), b.reshape(-1), out.reshape(-1), out.dtype.type(negative_slope)
    split(lambda lo, hi: _sum_relu_forward(a[lo:hi], b[lo:hi], slope, y[lo:hi]), y, 3)


BLOCK = 512  # elements of a block the fused backward computes into scratch first


@jit
def _sum_relu_backward(y, d, slope, d0, d1, write0, write1):
    zero = y.dtype.type(0)
    a = np.empty(BLOCK, d.dtype)
    for start in range(0, y.size, BLOCK):
        m = min(BLOCK, y.size - start)
        yb, db = y[start : start + m], d[start : start + m]
        for j in range(m):
            a[j] = db[j] if yb[j] > zero else db[j] * slope
        for j in range(m):
            db[j] = a[j]
        if write0:
            o = d0[start : start + m]
            for j in range(m):
                o[j] = a[j]
        if write1:
            o = d1[start : start + m]
            for j in range(m):
                o[j] = a[j]


def sum_relu_backward(y, dy, negative_slope, out0, out1):
    """The backward of ``sum_relu_forward``: g = dy if y > 0 else negative_slope * dy is
    written to dy itself (what the ReLU in place leaves) and to ``out0`` and ``out1`` (the two
    terms' gradients; either may be None), in one pass."""
    y, d, slope = y.reshape(-1), dy.reshape(-1), y.dtype.type(negative_slope)
    d0 = d if out0 is None else out0.reshape(-1)
    d1 = d if out1 is None else out1.reshape(-1)
    arrays = 3 + (out0 is not None) + (out1 is not None)
    split(
        lambda lo, hi: _sum_relu_backward(
            y[lo:hi], d[lo:hi], slope, d0[lo:hi], d1[lo:hi], out0 is not None, out1 is not None
        ),
        y,
        arrays,
    )


@jit
def _sigmoid_backward(y, dy, dx):
    one = y.dtype.type(1)
    for i in range(y.size):
        dx[i] = dy[i] * y[i] * (one - y[i])


def sigmoid_backward(y, dy, out):
    """dx = dy * y * (1 - y), from the forward's output y."""
    y, dy, dx = y.reshape(-1), dy.reshape(-1), out.reshape(-1)
    split(lambda lo, hi: _sigmoid_backward(y[lo:hi], dy[lo:hi], dx[lo:hi]), y, 3)


@jit
def _tanh_backward(y, dy, dx):
    one = y.dtype.type(1)
    for i in range(y.size):
        dx[i] = dy[i] * (one - y[i] * y[i])


def tanh_backward(y, dy, out):
    """dx = dy * (1 - y^2), from the forward's output y."""
    y, dy, dx = y.reshape(-1), dy.reshape(-1), out.reshape(-1)
    split(lambda lo, hi: _tanh_backward(y[lo:hi], dy[lo:hi], dx[lo:hi]), y, 3)


def _float32_flat(x, out):
    """(x, out) as flat arrays when both are C-contiguous float32 (vmath's kernels), else None."""
    if x.dtype == np.float32 and out.dtype == np.float32 and x.flags.c_contiguous and out.flags.c_contiguous:
        return x.reshape(-1), out.reshape(-1)
    return None


def sigmoid_forward(x, out):
    """y = 1 / (1 + exp(-x)). float32: vmath.sigmoid; else 0.5 * tanh(0.5 x) + 0.5 in numpy
    (no overflow for large |x|)."""
    flat = _float32_flat(x, out)
    if flat is not None:
        xf, yf = flat
        split(lambda lo, hi: vmath.sigmoid(xf[lo:hi], yf[lo:hi]), xf, 2)
        return out
    np.multiply(x, x.dtype.type(0.5), out=out)
    np.tanh(out, out=out)
    out *= x.dtype.type(0.5)
    out += x.dtype.type(0.5)
    return out


def one_minus_exp_neg(y, out):
    """out = 1 - exp(-y), as -expm1(-y) (accurate where y is tiny). float32: vmath's kernel."""
    flat = _float32_flat(y, out)
    if flat is None:
        np.negative(y, out=out)
        np.expm1(out, out=out)
        return np.negative(out, out=out)
    yf, of = flat
    split(lambda lo, hi: vmath.one_minus_exp_neg(yf[lo:hi], of[lo:hi]), yf, 2)
    return out


def tanh_forward(x, out):
    """y = tanh(x). float32: vmath.tanh; else numpy's."""
    flat = _float32_flat(x, out)
    if flat is None:
        return np.tanh(x, out=out)
    xf, yf = flat
    split(lambda lo, hi: vmath.tanh(xf[lo:hi], yf[lo:hi]), xf, 2)
    return out


def swish_forward(x, beta, sigmoid_out, out):
    """s = sigmoid(beta x) into ``sigmoid_out``, y = x s into ``out`` (which may be x)."""
    flat = _float32_flat(x, out)
    if flat is not None and sigmoid_out.flags.c_contiguous:
        xf, yf, sf, b = *flat, sigmoid_out.reshape(-1), np.float32(beta)
        split(lambda lo, hi: vmath.swish(xf[lo:hi], b, sf[lo:hi], yf[lo:hi]), xf, 3)
        return out
    np.multiply(x, x.dtype.type(beta), out=sigmoid_out)
    sigmoid_forward(sigmoid_out, out=sigmoid_out)
    return np.multiply(x, sigmoid_out, out=out)


def softplus(x, out, scratch):
    """out = log(1 + exp(x)), computed stably as max(x, 0) + log1p(exp(-|x|)). float32:
    vmath.softplus (``scratch`` unused); else numpy's ufuncs, with ``scratch`` an array of x's
    shape. ``out`` may be x itself."""
    flat = _float32_flat(x, out)
    if flat is not None:
        xf, yf = flat
        split(lambda lo, hi: vmath.softplus(xf[lo:hi], yf[lo:hi]), xf, 2)
        return out
    np.abs(x, out=scratch)
    np.negative(scratch, out=scratch)
    np.exp(scratch, out=scratch)
    np.log1p(scratch, out=scratch)
    np.maximum(x, x.dtype.type(0), out=out)
    out += scratch
    return out


# -- ELU -----------------------------------------------------------------------------------------
@jit
def _elu_select(x, negative_part, alpha, y):
    zero = x.dtype.type(0)
    for i in range(x.size):
        v = x[i]
        y[i] = v if v > zero else alpha * negative_part[i]


def elu_forward(x, alpha, out, scratch):
    """y = x if x > 0 else alpha * (exp(x) - 1). ``out`` may be ``x``.

    float32: vmath.elu, one pass. Else the exponential runs in numpy (expm1 of min(x, 0) into
    ``scratch``, an array of x's shape), the selection in one compiled pass."""
    flat = _float32_flat(x, out)
    if flat is not None:
        xf, yf, a = *flat, np.float32(alpha)
        split(lambda lo, hi: vmath.elu(xf[lo:hi], a, yf[lo:hi]), xf, 2)
        return out
    np.minimum(x, x.dtype.type(0), out=scratch)
    np.expm1(scratch, out=scratch)
    _elu_select(x.reshape(-1), scratch.reshape(-1), x.dtype.type(alpha), out.reshape(-1))
    return out


@jit
def _elu_backward(x, y, dy, alpha, dx):
    zero = x.dtype.type(0)
    for i in range(x.size):
        dx[i] = dy[i] if x[i] > zero else dy[i] * (y[i] + alpha)


@jit
def _elu_backward_in_place(x, y, d, alpha):
    zero = x.dtype.type(0)
    for i in range(x.size):
        d[i] = d[i] if x[i] > zero else d[i] * (y[i] + alpha)


def elu_backward(x, y, dy, alpha, out):
    """dx = dy if x > 0 else dy * (y + alpha)   (for x <= 0, dy/dx = alpha exp(x) = y + alpha).

    At x = 0 the left slope (alpha) is taken, as in Caffe. In place, pass y as x: for
    alpha >= 0, y > 0 exactly when x > 0. When ``out`` is dy's memory, a kernel that reads
    and writes one array runs: given two arrays over one memory, the compiled loop finds them
    overlapping and runs unvectorized (6.8 against 1.6 ms on 2 M elements)."""
    x, y, dy, dx, alpha = x.reshape(-1), y.reshape(-1), dy.reshape(-1), out.reshape(-1), x.dtype.type(alpha)
    if same_memory(dy, dx):
        split(lambda lo, hi: _elu_backward_in_place(x[lo:hi], y[lo:hi], dx[lo:hi], alpha), x, 3)
    else:
        split(lambda lo, hi: _elu_backward(x[lo:hi], y[lo:hi], dy[lo:hi], alpha, dx[lo:hi]), x, 4)


# -- PReLU: x seen as (outer, channels, inner), one slope per channel ------------------------------
@jit
def _prelu_forward(x, slope, y):
    zero = x.dtype.type(0)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            a = slope[c]
            for k in range(x.shape[2]):
                v = x[n, c, k]
                y[n, c, k] = v if v > zero else a * v


def prelu_forward(x3, slope, out3):
    """y[n, c, k] = x if x > 0 else slope[c] * x, over arrays of shape (outer, channels, inner)."""
    _prelu_forward(x3, slope, out3)


@jit
def _prelu_backward_bottom(x, dy, slope, dx):
    zero = x.dtype.type(0)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            a = slope[c]
            for k in range(x.shape[2]):
                dx[n, c, k] = dy[n, c, k] if x[n, c, k] > zero else a * dy[n, c, k]


def prelu_backward_bottom(x3, dy3, slope, out3):
    """dx = dy if x > 0 else slope[c] * dy (the kink x = 0 takes the left slope, as Caffe)."""
    _prelu_backward_bottom(x3, dy3, slope, out3)


@jit
def _prelu_backward_slope(x, dy, dslope, lo, hi):
    zero = x.dtype.type(0)
    lanes = new_lanes(x.shape[2])  # float64 sums of a block of positions: the loop vectorizes
    width = lanes.size
    for c in range(lo, hi):
        lanes[:] = 0.0
        for n in range(x.shape[0]):
            for start in range(0, x.shape[2], width):
                xr, dr = x[n, c, start : start + width], dy[n, c, start : start + width]
                for k in range(xr.size):
                    v = xr[k]
                    lanes[k] += dr[k] * (v if v < zero else zero)
        dslope[c] += lanes.sum()


def prelu_backward_slope(x3, dy3, dslope):
    """dslope[c] += sum over n, k of dy * min(x, 0), i.e. of dy * x where x <= 0.

    Branch-free; each position k of a channel sums over n in float64, then the positions are
    summed and added once. Channels are shared over the workers (the same bits for any count)."""
    parallel.over_slices(lambda lo, hi: _prelu_backward_slope(x3, dy3, dslope, lo, hi), x3.shape[1], 2 * x3.nbytes)


# -- AbsVal, Threshold ----------------------------------------------------------------------------
@jit
def _sign_times(x, dy, dx):
    zero = x.dtype.type(0)
    for i in range(x.size):
        v = x[i]
        if v > zero:
            dx[i] = dy[i]
        elif v < zero:
            dx[i] = -dy[i]
        else:
            dx[i] = zero


def sign_times(x, dy, out):
    """dx = sign(x) * dy, with sign(0) = 0 (AbsVal's backward; the subgradient 0 at the kink)."""
    _sign_times(x.reshape(-1), dy.reshape(-1), out.reshape(-1))


@jit
def _threshold_forward(x, threshold, y):
    one = y.dtype.type(1)
    zero = y.dtype.type(0)
    for i in range(x.size):
        y[i] = one if x[i] > threshold else zero


def threshold_forward(x, threshold, out):
    """y = 1 if x > threshold else 0 (x equal to the threshold gives 0)."""
    _threshold_forward(x.reshape(-1), x.dtype.type(threshold), out.reshape(-1))


# -- Dropout --------------------------------------------------------------------------------------
@jit
def _dropout_apply(x, uniform, ratio, scale, y):
    zero = y.dtype.type(0)
    for i in range(x.size):
        y[i] = x[i] * scale if uniform[i] >= ratio else zero


def dropout_apply(x, uniform, ratio, scale, out):
    """y = x * scale where uniform >= ratio (kept), else 0.

    ``uniform`` holds U[0, 1) draws (float32), so an element is kept with probability
    1 - ratio. The same call serves forward (x = bottom data) and backward (x = top diff)."""
    x, u, y = x.reshape(-1), uniform.reshape(-1), out.reshape(-1)
    ratio, scale = np.float32(ratio), x.dtype.type(scale)
    split(lambda lo, hi: _dropout_apply(x[lo:hi], u[lo:hi], ratio, scale, y[lo:hi]), x, 3)


# -- Clip, Swish ----------------------------------------------------------------------------------
@jit
def _clip_forward(x, low, high, y, inside):
    for i in range(x.size):  # branch-free (min, max), so the loop vectorizes
        v = x[i]
        inside[i] = (v >= low) & (v <= high)
        y[i] = min(max(v, low), high)


def clip_forward(x, low, high, out, inside):
    """y = min(max(x, low), high), and inside = (low <= x <= high), the bounds included (where
    Clip's gradient passes, as Caffe). A NaN stays NaN and is not inside. ``out`` may be x."""
    x, y, flags = x.reshape(-1), out.reshape(-1), inside.reshape(-1)
    low, high = x.dtype.type(low), x.dtype.type(high)
    split(lambda lo, hi: _clip_forward(x[lo:hi], low, high, y[lo:hi], flags[lo:hi]), x, 3)


@jit
def _swish_backward(y, s, dy, beta, dx):
    one = y.dtype.type(1)
    for i in range(y.size):
        by = beta * y[i]
        dx[i] = dy[i] * (by + s[i] * (one - by))


def swish_backward(y, s, dy, beta, out):
    """dx = dy * (beta y + s (1 - beta y)), from the forward's output y = x s and s = sigmoid(beta x)
    (= dy * (s + beta x s (1 - s)))."""
    y, s, dy, dx, beta = y.reshape(-1), s.reshape(-1), dy.reshape(-1), out.reshape(-1), y.dtype.type(beta)
    split(lambda lo, hi: _swish_backward(y[lo:hi], s[lo:hi], dy[lo:hi], beta, dx[lo:hi]), y, 4)


# -- Power ----------------------------------------------------------------------------------------
#: the largest |exponent| computed by repeated multiplication (beyond it: numpy's power)
MAX_MULTIPLIED_POWER = 8


@vector_jit  # numpy's error model: 1 / 0 is inf, as in np.power
def _power_of(v, count, half, invert, zero, one):
    """v^(count + half / 2), or 1 over it: v times its squares v^2, v^4, v^8 for the bits of
    ``count`` (at most 15; a factor 1 where a bit is clear, exact), in that order, times sqrt(v)
    for a half. Branch-free in the value, so that the loops calling it vectorize: one pass of
    6.4 M float32 values on one core 1.2-1.8 ms, where squaring a block of 512 values at a time
    for each bit took 10.7-12.8 ms (the same bits)."""
    v2 = v * v
    v4 = v2 * v2
    r = v if count & 1 else one
    r *= v2 if count & 2 else one
    r *= v4 if count & 4 else one
    r *= v4 * v4 if count & 8 else one
    if half:  # + 0: sqrt(-0) is -0, but -0 to a half power is +0 (and +inf if negative)
        r *= np.sqrt(v) + zero
    return one / r if invert else r


@vector_jit
def _multiplied_power(x, count, half, invert, y):
    zero, one = x.dtype.type(0), x.dtype.type(1)
    for i in range(x.size):
        y[i] = _power_of(x[i], count, half, invert, zero, one)


@vector_jit
def _multiplied_power_times(x, count, half, invert, factor, scale, y):
    zero, one = x.dtype.type(0), x.dtype.type(1)
    for i in range(x.size):
        y[i] = _power_of(x[i], count, half, invert, zero, one) * factor[i] * scale


def power(x, exponent, out, times=None, scale=1.0):
    """out = x^exponent, or with ``times`` (an array of x's shape) x^exponent * times * scale in
    the same pass (Power's backward). Where the exponent is a whole or half number of at most
    ``MAX_MULTIPLIED_POWER`` in size, by multiplication: x^m for m = |exponent| rounded down (by
    repeated squaring), times sqrt(x) for a half, and 1 over that for a negative exponent.
    numpy's float32 power is as fast on positive bases but takes the C library's slow path on
    negative ones: x^3 of 6.4 M values of both signs took 380 ms on 2026-12-06's machine (x^1.5,
    NaN for half of them, 60 ms), these multiplications 8 (numpy on values in [1, 2]: 7.5).
    Results are within 8 ulps of the exact power (tests/kernels/test_elementwise.py); as C's pow,
    0 to a negative power is inf (-inf for -0 to an odd one) and x < 0 to a half power NaN (-inf
    too, where pow gives inf or 0). Other exponents: numpy's power (then the product with
    ``times``, a second pass). ``out`` may be x or ``times``."""
    twice = 2.0 * float(exponent)
    if not twice.is_integer() or abs(exponent) > MAX_MULTIPLIED_POWER:  # (NaN and inf too)
        in_place = times is not None and np.shares_memory(out, times)  # (a temporary then)
        powers = np.power(x, x.dtype.type(exponent), out=None if in_place else out)
        if times is not None:
            scaled_product(powers, times, scale, out)
        return out
    count, half, invert = int(abs(exponent)), bool(int(twice) % 2), exponent < 0
    xf, yf = x.reshape(-1), out.reshape(-1)
    if times is None:
        split(lambda lo, hi: _multiplied_power(xf[lo:hi], count, half, invert, yf[lo:hi]), xf, 2)
        return out
    tf, scale = times.reshape(-1), x.dtype.type(scale)
    split(lambda lo, hi: _multiplied_power_times(xf[lo:hi], count, half, invert, tf[lo:hi], scale, yf[lo:hi]), xf, 3)
    return out


@jit
def _affine(x, scale, shift, add, y):
    for i in range(x.size):
        v = x[i] * scale
        y[i] = v + shift if add else v


def affine(x, scale, shift, out):
    """out = x * scale + shift in one pass (rounded after the product and after the sum, as
    numpy's two passes), the sum left out for a shift of 0 (as Caffe's Power: -0 stays -0);
    ``out`` may be x."""
    xf, yf, dtype = x.reshape(-1), out.reshape(-1), out.dtype.type
    scale, shift = dtype(scale), dtype(shift)
    split(lambda lo, hi: _affine(xf[lo:hi], scale, shift, shift != 0, yf[lo:hi]), xf, 2)
    return out


# -- helpers of Eltwise MAX -----------------------------------------------------------------------
@jit
def _max_update(x, index, y, argmax):
    for i in range(x.size):
        if x[i] > y[i]:
            y[i] = x[i]
            argmax[i] = index


def max_update(x, index, out, argmax):
    """Where x > out (strictly): out = x and argmax = index. Ties keep the earlier winner."""
    _max_update(x.reshape(-1), np.int32(index), out.reshape(-1), argmax.reshape(-1))


@jit
def _max_of_two(a, b, y, argmax):
    # every element stored: max_update's stores only where x wins compile to masked stores,
    # microcoded on AMD's Zen 3 (see _relu_forward_in_place)
    for i in range(np.uint64(y.size)):
        take = b[i] > a[i]
        y[i] = b[i] if take else a[i]
        argmax[i] = np.int32(1) if take else np.int32(0)


def max_of_two(a, b, out, argmax):
    """out = b where b > a (strictly), else a; argmax = 1 there, else 0: the max of the first
    two bottoms, in one pass (``max_update`` takes the later ones). Ties go to a."""
    _max_of_two(a.reshape(-1), b.reshape(-1), out.reshape(-1), argmax.reshape(-1))


@jit
def _select_where(argmax, index, dy, dx):
    zero = dy.dtype.type(0)
    for i in range(dy.size):
        dx[i] = dy[i] if argmax[i] == index else zero


def select_where(argmax, index, dy, out):
    """dx = dy where argmax == index, else 0 (the gradient of an element-wise max)."""
    _select_where(argmax.reshape(-1), np.int32(index), dy.reshape(-1), out.reshape(-1))


@jit
def _scaled_product(a, b, scale, out):
    for i in range(a.size):
        out[i] = a[i] * b[i] * scale


def scaled_product(a, b, scale, out):
    """out = a * b * scale in one pass (e.g. Exp's backward dx = dy * y * log(base) * scale)."""
    a, b, y, scale = a.reshape(-1), b.reshape(-1), out.reshape(-1), a.dtype.type(scale)
    split(lambda lo, hi: _scaled_product(a[lo:hi], b[lo:hi], scale, y[lo:hi]), a, 3)


@jit
def _axpy(alpha, x, y):
    for i in range(x.size):
        y[i] += alpha * x[i]


def axpy(alpha, x, out):
    """out += alpha * x in one pass, without a temporary (Eltwise SUM with coefficients)."""
    alpha, x, y = out.dtype.type(alpha), x.reshape(-1), out.reshape(-1)
    split(lambda lo, hi: _axpy(alpha, x[lo:hi], y[lo:hi]), x, 3)
