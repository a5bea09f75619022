"""The LSTM cell of Caffe's LSTMUnit, forward and backward, over M independent cells.

Arrays: ``gates`` (M, 4D) holds the pre-activations [i', f', o', g'] in Caffe's row order;
``acts`` (M, 4D) their activations [sigmoid(i'), sigmoid(f'), sigmoid(o'), tanh(g')] (the
forget gate's sigmoid without the continuation factor); ``c_prev``, ``c``, ``tanh_c`` and ``h``
(M, D); ``cont`` (M,): 0 where a sequence starts (the old cell is forgotten), 1 where it goes on.

The float32 forward is one ``vmath`` pass a row (its float32 sigmoid and tanh), other dtypes
take numpy; the backward is arithmetic only and runs as one numba pass.
"""

import numpy as np

from . import vmath
from ._jit import jit
from .elementwise import sigmoid_forward, tanh_forward


def lstm_cell_forward(gates, c_prev, cont, acts, c, tanh_c, h):
    """i, f, o = sigmoid(i', f', o'), g = tanh(g'); c = (cont f) c_prev + i g (Caffe's f is
    cont * sigmoid(f')); h = o tanh(c). Writes ``acts``, ``c``, ``tanh_c`` and ``h``. float32
    C-contiguous arrays take one ``vmath`` pass a row (an LSTM step of 32 streams x 512 units,
    alone: 0.071 -> 0.055 ms against the activations kernel plus six numpy passes); others take
    numpy."""
    arrays = (gates, c_prev, acts, c, tanh_c, h)
    if all(a.dtype == np.float32 and a.flags.c_contiguous for a in arrays) and cont.dtype == np.float32:
        vmath.lstm_cell(gates, c_prev, cont, acts, c, tanh_c, h)
        return
    dim = c.shape[1]
    sigmoid_forward(gates[:, : 3 * dim], out=acts[:, : 3 * dim])
    np.tanh(gates[:, 3 * dim :], out=acts[:, 3 * dim :])
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
    size = np.uint64(dim)
    for m in range(dh.shape[0]):
        keep = cont[m]
        row = acts[m]  # row views and unsigned indices: the loop vectorizes
        i, f, o, g = row[:dim], row[dim : 2 * dim], row[2 * dim : 3 * dim], row[3 * dim :]
        grad = dgates[m]
        di, df, do, dg = grad[:dim], grad[dim : 2 * dim], grad[2 * dim : 3 * dim], grad[3 * dim :]
        h_diff, c_diff, before, t_c, c_prev_diff = dh[m], dc[m], c_prev[m], tanh_c[m], dc_prev[m]
        for d in range(size):
            t = t_c[d]
            dcell = c_diff[d] + h_diff[d] * o[d] * (one - t * t)
            di[d] = dcell * g[d] * i[d] * (one - i[d])
            df[d] = dcell * before[d] * keep * f[d] * (one - f[d])
            do[d] = h_diff[d] * t * o[d] * (one - o[d])
            dg[d] = dcell * i[d] * (one - g[d] * g[d])
            c_prev_diff[d] = dcell * keep * f[d]


def lstm_cell_backward(dh, dc, acts, c_prev, tanh_c, cont, dgates, dc_prev):
    """From dE/dh and dE/dc of the cell's outputs: dcell = dc + dh o (1 - tanh(c)^2);
    dE/di' = dcell g i (1 - i), dE/df' = dcell c_prev cont f (1 - f), dE/do' = dh tanh(c) o (1 - o),
    dE/dg' = dcell i (1 - g^2) into ``dgates``; dE/dc_prev = dcell cont f into ``dc_prev``
    (which may be ``dc`` itself). For cont in {0, 1} these are Caffe's LSTMUnit gradients; for
    other values of cont, dE/df' is the true derivative of cont sigmoid(f')."""
    _lstm_cell_backward(dh, dc, acts, c_prev, tanh_c, cont, dgates, dc_prev)
