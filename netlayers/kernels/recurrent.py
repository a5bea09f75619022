"""The LSTM cell of Caffe's LSTMUnit, forward and backward, over M independent cells, and an
LSTM layer's steps run side by side by the workers over blocks of hidden units (below).

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
from .blas import NO_TRANS, TRANS, product
from .elementwise import sigmoid_forward, tanh_forward
from .spin import publish, wait_all


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
def _lstm_cell_backward(dh, dc, acts, c_prev, tanh_c, cont, dgates, dc_prev, u0, u1):
    one = acts.dtype.type(1)
    dim = dh.shape[1]
    size = np.uint64(u1 - u0)
    for m in range(dh.shape[0]):
        keep = cont[m]
        row = acts[m]  # row views and unsigned indices: the loop vectorizes
        i, f = row[u0:u1], row[dim + u0 : dim + u1]
        o, g = row[2 * dim + u0 : 2 * dim + u1], row[3 * dim + u0 : 3 * dim + u1]
        grad = dgates[m]
        di, df = grad[u0:u1], grad[dim + u0 : dim + u1]
        do, dg = grad[2 * dim + u0 : 2 * dim + u1], grad[3 * dim + u0 : 3 * dim + u1]
        h_diff, c_diff, before = dh[m, u0:u1], dc[m, u0:u1], c_prev[m, u0:u1]
        t_c, c_prev_diff = tanh_c[m, u0:u1], dc_prev[m, u0:u1]
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
    _lstm_cell_backward(dh, dc, acts, c_prev, tanh_c, cont, dgates, dc_prev, 0, dh.shape[1])


# -- a recurrent layer's steps, run side by side by the workers over blocks of hidden units ---
# Each step of an RNN or LSTM is a recurrent product (G H x H weights, G = 4 gates for an LSTM,
# by the N streams' previous states) and the cells; in Python each step hands the product to
# the workers and waits (50 steps: 100 hand-overs a pass, and the cells on one core). Here each
# worker owns the hidden units [u0, u1): it runs every step in compiled code (its rows of the
# product through numpy's own BLAS, ``blas.gemm``, then its units' cells) and meets the other
# workers once a step (``spin.publish`` / ``spin.wait_all``), when the whole new state is
# written. ``call`` is the pair of ``blas.gemm_address``, then libc's sched_yield
# (``spin.YIELD``); ``counts`` (workers,) int64 zeros: the barrier.


@jit
def _gather_rows(weight, gates, u0, u1, rows):
    """rows = the rows of ``weight`` (G H, H) of the units [u0, u1), gate by gate."""
    size, count = weight.shape[1], u1 - u0
    for gate in range(gates):
        rows[gate * count : (gate + 1) * count] = weight[gate * size + u0 : gate * size + u1]


@jit
def _add_product(step_gates, product_rows, gates, u0, u1):
    """step_gates[:, the units' columns of each gate] += product_rows^T (product_rows (G
    (u1 - u0), N), gate by gate), in tiles of 16 units."""
    streams, size, count = step_gates.shape[0], step_gates.shape[1] // gates, u1 - u0
    for gate in range(gates):
        for first in range(0, count, 16):
            last = min(count, first + 16)
            column = gate * size + u0 + first
            for n in range(streams):
                row = step_gates[n, column : column + last - first]
                for u in range(last - first):
                    row[u] += product_rows[gate * count + first + u, n]


@jit
def _scale(states, cont, out, u0, u1):
    """out[n, u0:u1] = cont[n] states[n, u0:u1] ((N, H) arrays)."""
    for n in range(states.shape[0]):
        keep = cont[n]
        for d in range(u0, u1):
            out[n, d] = states[n, d] * keep


@jit
def _recurrent_product(call, weight_rows, scaled, product_rows):
    """product_rows (R, N) = weight_rows (R, H) scaled^T (scaled (N, H))."""
    rows, size = weight_rows.shape
    streams = scaled.shape[0]
    a, b, c = weight_rows.ctypes.data, scaled.ctypes.data, product_rows.ctypes.data
    product(call, NO_TRANS, TRANS, rows, streams, size, a, size, b, size, c, streams, scaled.dtype.type(1))


@jit
def _states_back(call, diff, weight, cont, out, u0, u1):
    """out[:, u0:u1] = cont (diff W)[:, u0:u1]: diff (N, G H), W (G H, H), out (N, H)."""
    streams, rows = diff.shape
    size = weight.shape[1]
    offset = u0 * out.itemsize
    a, b, c = diff.ctypes.data, weight.ctypes.data + offset, out.ctypes.data + offset
    product(call, NO_TRANS, NO_TRANS, streams, u1 - u0, rows, a, rows, b, size, c, size, out.dtype.type(1))
    for n in range(streams):
        keep = cont[n]
        for d in range(u0, u1):
            out[n, d] *= keep


@jit
def lstm_forward_units(call, worker, units, weight, weight_rows, product_rows, gates, cont, states, counts):
    """Steps t = 0 .. T-1 of an LSTM for the hidden units ``units`` = (u0, u1), float32.
    ``states`` = (hidden (T+1, N, H), cell (T+1, N, H), tanh_cell, scaled (T, N, H), acts (T,
    N, 4H)): gates[t] (T, N, 4H) gets the recurrent part W_hc scaled[t]^T added in these units'
    columns, their cells write acts[t], cell[t + 1], tanh_cell[t], hidden[t + 1], and
    scaled[t + 1] = cont[t + 1] hidden[t + 1] (scaled[0] is given). ``weight_rows`` (4 (u1 -
    u0), H) and ``product_rows`` (4 (u1 - u0), N) are the worker's scratch."""
    hidden, cell, tanh_cell, scaled, acts = states
    u0, u1 = units
    steps = gates.shape[0]
    _gather_rows(weight, 4, u0, u1, weight_rows)
    for t in range(steps):
        _recurrent_product(call, weight_rows, scaled[t], product_rows)
        _add_product(gates[t], product_rows, 4, u0, u1)
        vmath.lstm_cell_units(gates[t], cell[t], cont[t], acts[t], cell[t + 1], tanh_cell[t], hidden[t + 1], u0, u1)
        if t + 1 < steps:
            _scale(hidden[t + 1], cont[t + 1], scaled[t + 1], u0, u1)
        publish(counts, worker, t + 1)
        wait_all(counts, t + 1, call[2])


@jit
def lstm_backward_units(call, worker, units, weight, output_diff, states, cont, gate_diff, dh, cell_diffs, counts):
    """An LSTM's steps in reverse for the hidden units ``units`` = (u0, u1), float32, from
    ``states`` = (cell (T+1, N, H), tanh_cell (T, N, H), acts (T, N, 4H)) as
    :func:`lstm_forward_units` left them: dh (N, H) += output_diff[t], the cells' backward
    into gate_diff[t] (T, N, 4H) and the other half of ``cell_diffs`` (2, N, H: dE/dc_t and
    dE/dc_{t-1} take turns, as in the layer), then, once every worker wrote gate_diff[t],
    dh = cont[t] (gate_diff[t] W_hc) in these units' columns. On return dE/dc_0 is
    cell_diffs[T % 2]."""
    cell, tanh_cell, acts = states
    u0, u1 = units
    steps, streams = gate_diff.shape[:2]
    for k in range(steps):
        t = steps - 1 - k
        for n in range(streams):
            for d in range(u0, u1):
                dh[n, d] += output_diff[t, n, d]
        dc, dc_prev = cell_diffs[k % 2], cell_diffs[(k + 1) % 2]
        _lstm_cell_backward(dh, dc, acts[t], cell[t], tanh_cell[t], cont[t], gate_diff[t], dc_prev, u0, u1)
        publish(counts, worker, k + 1)
        wait_all(counts, k + 1, call[2])
        _states_back(call, gate_diff[t], weight, cont[t], dh, u0, u1)


@jit
def rnn_forward_units(call, worker, units, weight, weight_rows, product_rows, gates, cont, states, counts):
    """Steps t = 0 .. T-1 of an RNN for the hidden units ``units`` = (u0, u1), float32.
    ``states`` = (hidden (T+1, N, H), scaled (T, N, H)): gates[t] (T, N, H) gets W_hh
    scaled[t]^T added in these units' columns, hidden[t + 1] = tanh(gates[t]) there, and
    scaled[t + 1] = cont[t + 1] hidden[t + 1] (scaled[0] is given). ``weight_rows`` (u1 - u0,
    H) and ``product_rows`` (u1 - u0, N) are the worker's scratch."""
    hidden, scaled = states
    u0, u1 = units
    steps = gates.shape[0]
    _gather_rows(weight, 1, u0, u1, weight_rows)
    for t in range(steps):
        _recurrent_product(call, weight_rows, scaled[t], product_rows)
        _add_product(gates[t], product_rows, 1, u0, u1)
        vmath.tanh_units(gates[t], hidden[t + 1], u0, u1)
        if t + 1 < steps:
            _scale(hidden[t + 1], cont[t + 1], scaled[t + 1], u0, u1)
        publish(counts, worker, t + 1)
        wait_all(counts, t + 1, call[2])


@jit
def rnn_backward_units(call, worker, units, weight, hidden, cont, gate_diff, carry, counts):
    """An RNN's steps in reverse for the hidden units ``units`` = (u0, u1), float32:
    gate_diff[t] (T, N, H) = (gate_diff[t] + carry) (1 - hidden[t + 1]^2) in these units'
    columns, then, once every worker wrote gate_diff[t], carry (N, H) = cont[t] (gate_diff[t]
    W_hh) there. On return ``carry`` is dE/dh_0."""
    u0, u1 = units
    steps, streams = gate_diff.shape[:2]
    one = carry.dtype.type(1)
    for k in range(steps):
        t = steps - 1 - k
        for n in range(streams):
            for d in range(u0, u1):
                h = hidden[t + 1, n, d]
                gate_diff[t, n, d] = (gate_diff[t, n, d] + carry[n, d]) * (one - h * h)
        publish(counts, worker, k + 1)
        wait_all(counts, k + 1, call[2])
        _states_back(call, gate_diff[t], weight, cont[t], carry, u0, u1)
