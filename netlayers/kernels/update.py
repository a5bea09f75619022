"""Solver update kernels: a param's weight decay, momentum step and weight update in one pass.

The numpy form of Caffe's SGD with L2 weight decay takes seven passes over a param's arrays (the
decay term into a buffer, diff += buffer, diff *= rate, v *= momentum, v += diff, diff = v,
w -= diff); these kernels read w, diff and v once and write them once. Every operation is the
numpy one, in the numpy order and precision (no fused multiply-add: numba leaves ``fastmath``
off), so the results are bit for bit those of the separate passes.
"""

from ._jit import jit


@jit
def _sgd_update(weight, diff, history, rate, decay, momentum, regularize):
    for i in range(weight.size):
        g = diff[i] + weight[i] * decay if regularize else diff[i]
        v = history[i] * momentum + g * rate
        history[i] = v
        diff[i] = v
        weight[i] -= v


@jit
def _sgd_step(weight, diff, rate, decay, regularize):
    for i in range(weight.size):
        g = diff[i] + weight[i] * decay if regularize else diff[i]
        v = g * rate
        diff[i] = v
        weight[i] -= v


def sgd_update(weight, diff, history, rate, decay, momentum):
    """Caffe's SGD step with L2 weight decay, in place on flat C-contiguous arrays of one dtype:

        g = diff + decay * w      (skipped when decay is 0, as the solver skips it)
        v = momentum * v + rate * g
        diff = v;  w = w - v

    At momentum 0 the history is neither read nor written (v = rate * g): one pass over two
    arrays instead of three. The scalars are rounded to the arrays' dtype first, as numpy does
    with Python floats."""
    t = weight.dtype.type
    if momentum == 0:
        _sgd_step(weight, diff, t(rate), t(decay), bool(decay))
    else:
        _sgd_update(weight, diff, history, t(rate), t(decay), t(momentum), bool(decay))
