"""Element-wise activation kernels (forward and backward), compiled with numba.

Arrays of any shape: kernels work on the flat views. ``out`` may be the input array itself
(in-place layers). Constants are typed from the array's dtype so float32 loops stay float32.
Transcendental forwards (exp, tanh) stay in numpy ufuncs, which were measured faster here.
"""
import numpy as np

from ._jit import jit


@jit
def _relu_forward(x, slope, y):
    zero = x.dtype.type(0)
    for i in range(x.size):
        v = x[i]
        y[i] = v if v > zero else v * slope


def relu_forward(x, negative_slope, out):
    """y = x if x > 0 else negative_slope * x."""
    _relu_forward(x.reshape(-1), x.dtype.type(negative_slope), out.reshape(-1))


@jit
def _relu_backward(x, dy, slope, dx):
    zero = x.dtype.type(0)
    for i in range(x.size):
        dx[i] = dy[i] if x[i] > zero else dy[i] * slope


def relu_backward(x, dy, negative_slope, out):
    """dx = dy if x > 0 else negative_slope * dy (the kink at 0 takes the left slope, as Caffe)."""
    _relu_backward(x.reshape(-1), dy.reshape(-1), x.dtype.type(negative_slope), out.reshape(-1))


@jit
def _sigmoid_backward(y, dy, dx):
    one = y.dtype.type(1)
    for i in range(y.size):
        dx[i] = dy[i] * y[i] * (one - y[i])


def sigmoid_backward(y, dy, out):
    """dx = dy * y * (1 - y), from the forward's output y."""
    _sigmoid_backward(y.reshape(-1), dy.reshape(-1), out.reshape(-1))


@jit
def _tanh_backward(y, dy, dx):
    one = y.dtype.type(1)
    for i in range(y.size):
        dx[i] = dy[i] * (one - y[i] * y[i])


def tanh_backward(y, dy, out):
    """dx = dy * (1 - y^2), from the forward's output y."""
    _tanh_backward(y.reshape(-1), dy.reshape(-1), out.reshape(-1))


def sigmoid_forward(x, out):
    """y = 1 / (1 + exp(-x)), computed as 0.5 * tanh(0.5 x) + 0.5 (no overflow for large |x|)."""
    np.multiply(x, x.dtype.type(0.5), out=out)
    np.tanh(out, out=out)
    out *= x.dtype.type(0.5)
    out += x.dtype.type(0.5)
    return out
