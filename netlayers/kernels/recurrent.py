"""The LSTM cell of Caffe's LSTMUnit, forward and backward, over M independent cells.

Arrays: ``gates`` (M, 4D) holds the pre-activations [i', f', o', g'] in Caffe's row order;
``acts`` (M, 4D) their activations [sigmoid(i'), sigmoid(f'), sigmoid(o'), tanh(g')] (the
forget gate's sigmoid without the continuation factor); ``c_prev``, ``c``, ``tanh_c`` and ``h``
(M, D); ``cont`` (M,): 0 where a sequence starts (the old cell is forgotten), 1 where it goes on.

The forward's activations run ``vmath``'s float32 kernels (numpy's ufuncs for float64), the
rest in numpy; the backward is arithmetic only and runs as one numba pass.
"""

import numpy as np

from . import vmath
from ._jit import jit
from .elementwise import sigmoid_forward, tanh_forward


def gate_activations(gates, acts):
    """``acts`` = [sigmoid(i', f', o'), tanh(g')] of the (M, 4 D) ``gates``."""
    dim = gates.shape[1] // 4
    if gates.dtype == acts.dtype == np.float32 and gates.flags.c_contiguous and acts.flags.c_contiguous:
        vmath.lstm_gates(gates, acts, dim)
        return
    sigmoid_forward(gates[:, : 3 * dim], out=acts[:, : 3 * dim])
    np.tanh(gates[:, 3 * dim :], out=acts[:, 3 * dim :])


def lstm_cell_forward(gates, c_prev, cont, acts, c, tanh_c, h):
    """i, f, o = sigmoid(i', f', o'), g = tanh(g'); c = (cont f) c_prev + i g (Caffe's f is
    cont * sigmoid(f')); h = o tanh(c). Writes ``acts``, ``c``, ``tanh_c`` and ``h``."""
    dim = c.shape[1]
    gate_activations(gates, acts)
    i, f, o, g = (acts[:, k * dim : (k + 1) * dim] for k in range(4))
    np.multiply(f, cont[:, None], out=c)
    c *= c_prev
    np.multiply(i, g, out=tanh_c)
    c += tanh_c
    tanh_forward(c, out=tanh_c)
    np.multiply(o, tanh_c, out=h)


@jit
def _lstm_cell_backward(dh, dc, acts, c_prev, tanh_c, cont, dgates, dc_prev):
    one = acts.dtype.type(1)
    dim = dh.shape[1]
    for m in range(dh.shape[0]):
        keep = cont[m]
        for d in range(dim):
            i = acts[m, d]
            f = acts[m, dim + d]
            o = acts[m, 2 * dim + d]
            g = acts[m, 3 * dim + d]
            t = tanh_c[m, d]
            dcell = dc[m, d] + dh[m, d] * o * (one - t * t)
            dgates[m, d] = dcell * g * i * (one - i)
            dgates[m, dim + d] = dcell * c_prev[m, d] * keep * f * (one - f)
            dgates[m, 2 * dim + d] = dh[m, d] * t * o * (one - o)
            dgates[m, 3 * dim + d] = dcell * i * (one - g * g)
            dc_prev[m, d] = dcell * keep * f


def lstm_cell_backward(dh, dc, acts, c_prev, tanh_c, cont, dgates, dc_prev):
    """From dE/dh and dE/dc of the cell's outputs: dcell = dc + dh o (1 - tanh(c)^2);
    dE/di' = dcell g i (1 - i), dE/df' = dcell c_prev cont f (1 - f), dE/do' = dh tanh(c) o (1 - o),
    dE/dg' = dcell i (1 - g^2) into ``dgates``; dE/dc_prev = dcell cont f into ``dc_prev``
    (which may be ``dc`` itself). For cont in {0, 1} these are Caffe's LSTMUnit gradients; for
    other values of cont, dE/df' is the true derivative of cont sigmoid(f')."""
    _lstm_cell_backward(dh, dc, acts, c_prev, tanh_c, cont, dgates, dc_prev)
