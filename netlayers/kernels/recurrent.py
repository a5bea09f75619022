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
from .blas import NO_TRANS, product
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


# -- a recurrent layer's steps, run side by side by the workers over blocks -------------------
# Each step of an RNN or LSTM is a recurrent product (G H x H weights, G = 4 gates for an LSTM,
# by the N streams' previous states) and the cells; in Python each step hands the product to
# the workers and waits (50 steps: 100 hand-overs a pass, and the cells on one core). Here each
# worker owns a block (u0, u1, n0, n1): the hidden units [u0, u1) of the streams [n0, n1). It
# runs every step in compiled code (its block's part of the product, (n1 - n0, G (u1 - u0)),
# through numpy's own BLAS, ``blas.gemm``, then its block's cells, which add that product to the
# step's input part as they read it). Workers that own units of the same streams need each
# other's new states for the next step: they meet once a step (``spin.publish`` /
# ``spin.wait_all``, ``counts`` (workers,) int64 zeros). Workers that own streams apart never
# read each other's states: each is given a ``counts`` of its own (worker 0 of 1), and its
# barrier passes at once. ``call`` is the pair of ``blas.gemm_address``, then libc's
# sched_yield (``spin.YIELD``).


@jit
def _gather_columns(weight, gates, u0, u1, columns):
    """columns[:, :G (u1 - u0)] (H, at least G (u1 - u0)) = the rows of ``weight`` (G H, H) of
    the units [u0, u1), gate by gate, transposed: columns[k, gate (u1 - u0) + u] = weight[gate
    H + u0 + u, k]."""
    size, count = weight.shape[1], u1 - u0
    for gate in range(gates):
        for u in range(count):
            row = weight[gate * size + u0 + u]
            for k in range(size):
                columns[k, gate * count + u] = row[k]


@jit
def _recurrent_product(call, scaled, weight_columns, width, out):
    """out[:, :width] = scaled (N, H) weight_columns[:, :width]: a worker's ``width`` = G (u1 -
    u0) gate columns of the step's recurrent part, a row for each stream. Both matrices have
    rows longer than ``width`` (``PRODUCT_ROW_PAD``)."""
    streams, size = scaled.shape
    a, b, c = scaled.ctypes.data, weight_columns.ctypes.data, out.ctypes.data
    ldb, ldc = weight_columns.shape[1], out.shape[1]
    product(call, NO_TRANS, NO_TRANS, streams, width, size, a, size, b, ldb, c, ldc, scaled.dtype.type(1))


# A worker's product (N, G units) = (N, H) (H, G units) has its gate columns as rows: numpy's
# OpenBLAS ran it as fast as the transposed orientation (gates as rows, the streams as columns)
# or faster (one core: 64 streams, 128 -> 4 x 64 units 41-44 against 46 us; 8 streams, 128 -> 4
# x 128 units 11.5 against 25.1), once the rows of both matrices are longer than the product's
# width: rows of 1024 values (4 KiB) made it 1.2x to 1.5x slower (32 streams, 512 -> 1024
# columns: 513 us, with 16 more values a row 374, the transposed orientation 370).
PRODUCT_ROW_PAD = 16


@jit
def _scale(states, cont, out, u0, u1):
    """out[n, u0:u1] = cont[n] states[n, u0:u1] ((N, H) arrays)."""
    for n in range(states.shape[0]):
        keep = cont[n]
        for d in range(u0, u1):
            out[n, d] = states[n, d] * keep


@jit
def _gather_unit_columns(weight, u0, u1, block):
    """block[:, :u1 - u0] (G H, at least u1 - u0) = weight[:, u0:u1] ((G H, H))."""
    count = u1 - u0
    for r in range(weight.shape[0]):
        row, target = weight[r], block[r]
        for u in range(count):
            target[u] = row[u0 + u]


@jit
def _states_back(call, diff, block, product_out, cont, out, u0, u1):
    """out[:, u0:u1] = cont (diff W)[:, u0:u1]: diff (N, G H), W's columns u0:u1 in
    block[:, :u1 - u0] (``_gather_unit_columns``), the product formed in product_out (N, at
    least u1 - u0), out (N, H). Rows of W of 1024 values (4 KiB) made the product 1.1x to 1.5x
    slower than rows ``PRODUCT_ROW_PAD`` longer (16 to 32 streams, H 1024, two workers)."""
    streams, rows = diff.shape
    count = u1 - u0
    a, b, c = diff.ctypes.data, block.ctypes.data, product_out.ctypes.data
    ldb, ldc = block.shape[1], product_out.shape[1]
    product(call, NO_TRANS, NO_TRANS, streams, count, rows, a, rows, b, ldb, c, ldc, out.dtype.type(1))
    for n in range(streams):
        keep, source, target = cont[n], product_out[n], out[n, u0:u1]
        for u in range(count):
            target[u] = source[u] * keep


@jit
def lstm_forward_units(call, worker, block, weight, weight_columns, step_product, gates, bias, cont, states, counts):
    """Steps t = 0 .. T-1 of an LSTM for the hidden units [u0, u1) of the streams [n0, n1),
    ``block`` = (u0, u1, n0, n1), float32. ``states`` = (hidden (T+1, N, H), cell (T+1, N, H),
    tanh_cell, scaled (T, N, H), acts (T, N, 4H)): the cells of the block take gates[t] (T, N,
    4H, left as it is) plus ``bias`` (4H) plus the recurrent part scaled[t] W_hc^T in these
    units' columns, and write acts[t], cell[t + 1], tanh_cell[t], hidden[t + 1] there, and
    scaled[t + 1] = cont[t + 1] hidden[t + 1] (scaled[0] is given).
    ``weight_columns`` (H, 4 (u1 - u0) + ``PRODUCT_ROW_PAD``) and ``step_product`` (n1 - n0
    rows or more, as many columns) are the worker's scratch."""
    hidden, cell, tanh_cell, scaled, acts = states
    u0, u1, n0, n1 = block
    steps = gates.shape[0]
    _gather_columns(weight, 4, u0, u1, weight_columns)
    for t in range(steps):
        _recurrent_product(call, scaled[t, n0:n1], weight_columns, 4 * (u1 - u0), step_product)
        after = min(t + 1, steps - 1)  # the next step (the last step has none: has_next is False)
        vmath.lstm_step_units(
            gates[t, n0:n1], bias, step_product, cell[t, n0:n1], cont[t, n0:n1], acts[t, n0:n1],
            cell[t + 1, n0:n1], tanh_cell[t, n0:n1], hidden[t + 1, n0:n1], u0, u1, cont[after, n0:n1],
            scaled[after, n0:n1], t + 1 < steps,
        )  # fmt: skip
        publish(counts, worker, t + 1)
        wait_all(counts, t + 1, call[2])


@jit
def lstm_backward_units(
    call, worker, block, weight, weight_block, step_product, output_diff, states, cont, gate_diff, dh, diffs, counts
):
    """An LSTM's steps in reverse for the hidden units [u0, u1) of the streams [n0, n1),
    ``block`` = (u0, u1, n0, n1), float32, from ``states`` = (cell (T+1, N, H), tanh_cell (T,
    N, H), acts (T, N, 4H)) as :func:`lstm_forward_units` left them: dh (N, H) +=
    output_diff[t], the cells' backward into gate_diff[t] (T, N, 4H) and the other half of
    ``diffs`` (2, N, H: dE/dc_t and dE/dc_{t-1} take turns, as in the layer), then, once every
    worker wrote gate_diff[t], dh = cont[t] (gate_diff[t] W_hc) in these units' columns. On
    return dE/dc_0 is diffs[T % 2]. ``weight_block`` (4H, u1 - u0 + ``PRODUCT_ROW_PAD``) and
    ``step_product`` (n1 - n0 rows or more, as many columns) are the worker's scratch."""
    cell, tanh_cell, acts = states
    u0, u1, n0, n1 = block
    steps = gate_diff.shape[0]
    _gather_unit_columns(weight, u0, u1, weight_block)
    h_diff = dh[n0:n1]
    for k in range(steps):
        t = steps - 1 - k
        for n in range(n0, n1):
            for d in range(u0, u1):
                dh[n, d] += output_diff[t, n, d]
        dc, dc_prev = diffs[k % 2][n0:n1], diffs[(k + 1) % 2][n0:n1]
        _lstm_cell_backward(
            h_diff, dc, acts[t, n0:n1], cell[t, n0:n1], tanh_cell[t, n0:n1], cont[t, n0:n1], gate_diff[t, n0:n1],
            dc_prev, u0, u1,
        )  # fmt: skip
        publish(counts, worker, k + 1)
        wait_all(counts, k + 1, call[2])
        _states_back(call, gate_diff[t, n0:n1], weight_block, step_product, cont[t, n0:n1], h_diff, u0, u1)


@jit
def rnn_forward_units(call, worker, block, weight, weight_columns, step_product, gates, bias, cont, states, counts):
    """Steps t = 0 .. T-1 of an RNN for the hidden units [u0, u1) of the streams [n0, n1),
    ``block`` = (u0, u1, n0, n1), float32. ``states`` = (hidden (T+1, N, H), scaled (T, N,
    H)): hidden[t + 1] = tanh(gates[t] + bias + scaled[t] W_hh^T) in the block (gates (T, N, H)
    left as it is), and scaled[t + 1] = cont[t + 1] hidden[t + 1] (scaled[0] is given).
    ``weight_columns`` (H, u1 - u0 + ``PRODUCT_ROW_PAD``) and ``step_product`` (n1 - n0 rows or
    more, as many columns) are the worker's scratch."""
    hidden, scaled = states
    u0, u1, n0, n1 = block
    steps = gates.shape[0]
    _gather_columns(weight, 1, u0, u1, weight_columns)
    for t in range(steps):
        _recurrent_product(call, scaled[t, n0:n1], weight_columns, u1 - u0, step_product)
        vmath.tanh_of_sum_units(gates[t, n0:n1], bias, step_product, hidden[t + 1, n0:n1], u0, u1)
        if t + 1 < steps:
            _scale(hidden[t + 1, n0:n1], cont[t + 1, n0:n1], scaled[t + 1, n0:n1], u0, u1)
        publish(counts, worker, t + 1)
        wait_all(counts, t + 1, call[2])


@jit
def rnn_backward_units(call, worker, block, weight, weight_block, step_product, hidden, cont, gate_diff, carry, counts):
    """An RNN's steps in reverse for the hidden units [u0, u1) of the streams [n0, n1),
    ``block`` = (u0, u1, n0, n1), float32: gate_diff[t] (T, N, H) = (gate_diff[t] + carry) (1 -
    hidden[t + 1]^2) in the block, then, once every worker wrote gate_diff[t], carry (N, H) =
    cont[t] (gate_diff[t] W_hh) there. On return ``carry`` is dE/dh_0. ``weight_block`` (H, u1
    - u0 + ``PRODUCT_ROW_PAD``) and ``step_product`` (n1 - n0 rows or more, as many columns)
    are the worker's scratch."""
    u0, u1, n0, n1 = block
    steps = gate_diff.shape[0]
    _gather_unit_columns(weight, u0, u1, weight_block)
    one = carry.dtype.type(1)
    for k in range(steps):
        t = steps - 1 - k
        for n in range(n0, n1):
            for d in range(u0, u1):
                h = hidden[t + 1, n, d]
                gate_diff[t, n, d] = (gate_diff[t, n, d] + carry[n, d]) * (one - h * h)
        publish(counts, worker, k + 1)
        wait_all(counts, k + 1, call[2])
        _states_back(call, gate_diff[t, n0:n1], weight_block, step_product, cont[t, n0:n1], carry[n0:n1], u0, u1)
