"""Caffe's recurrent layers: RNN, LSTM (``recurrent_param``) and LSTMUnit.

Caffe unrolls RNN and LSTM into a sub-net of InnerProduct, Scale, Eltwise and TanH or LSTMUnit
layers, one set per time step. Here they run directly: one matrix product projects the input
of every time step at once, then a loop over the T steps adds the recurrent product and applies
the non-linearity; backward runs the loop in reverse (backpropagation through time) and forms
each weight gradient with one product over all steps. The numbers are those of Caffe's unrolled
net, its params come in its order and shapes (so a Caffe-trained ``.caffemodel`` loads).

A float32 RNN or LSTM runs its steps in compiled code (``netlayers.kernels.recurrent``): each worker
owns a block of hidden units and runs every step of it (its rows of the recurrent product
through numpy's own BLAS, its units' cells), and the workers meet once a step, instead of the
Python loop's two hand-overs a step (an LSTM of T 50, N 32, H 512: forward + backward 0.86x-0.98x
the time; smaller ones 0.53x-0.91x, RNNs 0.68x-0.85x; see ``MIN_STEP_FLOPS_A_WORKER``). float64
(gradient checks) keeps the loop.

Bottoms (Caffe's order): x (T, N, ...) the input of T time steps of N independent streams;
cont (T, N) the continuation indicators (0 where a sequence starts: the state from the step
before is dropped, 1 where it goes on); optionally x_static (N, ...), an input seen at every
step; with ``expose_hidden``, the initial states h_0 (and c_0 for LSTM), each (1, N,
num_output). Tops: the output (T, N, num_output); with ``expose_hidden``, the final states h_T
(and c_T), each (1, N, num_output).

Without ``expose_hidden`` the state carries over between forward passes, as in Caffe: a
forward starts from the state the previous forward ended in (zeros at first, and again when the
number of streams changes), so a long sequence can be fed T steps at a time with cont 1 at
the start of each later batch. No gradient flows between batches. The carried state is kept in
snapshots, so a resumed run goes on exactly.
"""

import numpy as np

from .. import parallel
from ..errors import DataError
from ..kernels import blas, elementwise
from ..kernels.recurrent import (
    PRODUCT_ROW_PAD,
    lstm_backward_units,
    lstm_cell_backward,
    lstm_cell_forward,
    lstm_forward_units,
    rnn_backward_units,
    rnn_forward_units,
)
from ..kernels.spin import YIELD
from ..layer import Layer
from ..netspec import FILLER, Field
from ..registry import register_layer

RECURRENT_PARAMS = {
    "num_output": Field(int, required=True, min=1),
    "weight_filler": Field(FILLER, {}),
    "bias_filler": Field(FILLER, {}),
    "debug_info": Field(bool, False, doc="accepted for Caffe's files; there is no unrolled net to log"),
    "expose_hidden": Field(bool, False),
}


def _example(states, static):
    """A contract-harness setting: T=3 steps, N=2 streams, num_output 3, cont drawn from {0, 1},
    the hidden states exposed (so forward depends on its bottoms alone); with a static input and
    x of one feature axis, or without one and x of two feature axes."""
    inputs = [(3, 2, 4), (3, 2), (2, 5)] if static else [(3, 2, 2, 2), (3, 2)]
    return {
        "bottoms": inputs + [(1, 2, 3)] * len(states),
        "labels": {1: 2},
        "tops": 1 + len(states),
        "params": {
            "recurrent_param": {
                "num_output": 3,
                "expose_hidden": True,
                "weight_filler": {"type": "gaussian", "std": 0.5},
                "bias_filler": {"type": "gaussian", "std": 0.5},
            }
        },
    }


class _Recurrent(Layer):
    """What RNN and LSTM share: the bottoms and tops, the input projection
    ``gate_input = x W_x^T + b (+ x_static W_static^T)`` of every step in one product, the
    carried or exposed state, and the gradients of the shared params. A subclass names its
    states (``states``), the gate rows per hidden unit (``gates``), adds its own params after
    the shared ones and runs the steps (``run_steps``, ``run_steps_backward``)."""

    block = "recurrent_param"
    params = RECURRENT_PARAMS
    states: tuple[str, ...] = ()
    gates = 1
    lazy_param_diffs = True

    @classmethod
    def param_blocks(cls):
        return {"recurrent_param": cls.params}

    def __init__(self, spec, **kwargs):
        super().__init__(spec, **kwargs)
        self.p = spec.blocks.get("recurrent_param")
        exposed = len(self.states) if self.p.expose_hidden else 0
        self.num_bottoms = (2 + exposed, 3 + exposed)
        self.num_tops = (1 + exposed, 1 + exposed)
        self.carried = None

    def allow_force_backward(self, bottom_index):
        """No gradient for the continuation indicators (bottom 1), as in Caffe."""
        return bottom_index != 1

    # -- set-up and shapes -------------------------------------------------------------------
    def LayerSetUp(self, bottom, top):
        p = self.p
        self._check_axes(bottom[0])
        self.has_static = len(bottom) > 2 + (len(self.states) if p.expose_hidden else 0)
        if self.has_static and bottom[2].num_axes < 1:
            raise self.error("x_static (bottom 2) needs at least 1 axis (N streams, ...), got shape ()")
        self.first_state_bottom = 3 if self.has_static else 2
        rows = self.gates * p.num_output
        self.add_param((rows, bottom[0].count_range(2)), p.weight_filler)
        self.add_param((rows,), p.bias_filler)
        if self.has_static:
            self.add_param((rows, bottom[2].count_range(1)), p.weight_filler)
        self.recurrent_index = len(self.blobs)
        self.add_param((rows, p.num_output), p.weight_filler)

    def Reshape(self, bottom, top):
        x, cont, hidden = bottom[0], bottom[1], self.p.num_output
        self._check_axes(x)
        steps, streams = x.shape[:2]
        self._check_features(x.count_range(2), 0, f"x (bottom 0) of shape {x.shape}")
        if cont.shape != (steps, streams):
            raise self.error(f"cont (bottom 1) must have shape (T, N) = {(steps, streams)} as x, got {cont.shape}")
        if self.has_static:
            static = bottom[2]
            if static.num_axes < 1 or static.shape[0] != streams:
                raise self.error(
                    f"x_static (bottom 2) must have N = {streams} on its first axis, got shape {static.shape}"
                )
            self._check_features(static.count_range(1), 2, f"x_static (bottom 2) of shape {static.shape}")
        exposed = bottom[self.first_state_bottom :] if self.p.expose_hidden else []
        for j, (name, state) in enumerate(zip(self.states, exposed)):
            if state.shape != (1, streams, hidden):
                raise self.error(
                    f"{name}_0 (bottom {self.first_state_bottom + j}) must have shape "
                    f"(1, N, num_output) = {(1, streams, hidden)}, got {state.shape}"
                )
        self.steps, self.streams = steps, streams
        top[0].reshape((steps, streams, hidden))
        for extra in top[1:]:
            extra.reshape((1, streams, hidden))
        rows = self.gates * hidden
        self.buffer("gate_input", (steps, streams, rows))
        self.buffer("gate_diff", (steps, streams, rows))
        self.buffer("recurrent_out", (rows, streams))
        if self.has_static:
            self.buffer("static_gates", (streams, rows))
            self.buffer("static_diff", (streams, rows))
        self.reshape_steps(steps, streams)

    def _check_axes(self, x):
        if x.num_axes < 2:
            raise self.error(f"x (bottom 0) needs at least 2 axes (T steps, N streams, ...), got shape {x.shape}")

    def _check_features(self, features, param, what):
        expected = self.blobs[param].shape[1]
        if features != expected:
            raise self.error(f"{what} has {features} features per item but the weights expect {expected}")

    def reshape_steps(self, steps, streams):
        """Allocate the subclass's per-step buffers."""

    # -- forward -----------------------------------------------------------------------------
    def Forward_cpu(self, bottom, top):
        steps, streams, rows = self.gate_input.shape
        gate_input = self.gate_input.reshape(steps * streams, rows)
        parallel.matmul(bottom[0].data.reshape(steps * streams, -1), self.blobs[0].data.T, gate_input)
        blocks = self._blocks(bottom[1].data)
        if not blocks:  # the compiled steps add the bias as they read the pre-activations
            gate_input += self.blobs[1].data
        if self.has_static:
            parallel.matmul(bottom[2].data.reshape(streams, -1), self.blobs[2].data.T, self.static_gates)
            self.gate_input += self.static_gates
        finals = self.run_steps(bottom[1].data, self.initial_states(bottom), top[0].data, blocks)
        if self.p.expose_hidden:
            for blob, final in zip(top[1:], finals):
                blob.data[0] = final
        else:
            self.carried = [final.copy() for final in finals]

    def initial_states(self, bottom):
        """h_0 (and c_0): the exposed bottoms, else the state the last forward ended in, else 0."""
        shape = (self.streams, self.p.num_output)
        if self.p.expose_hidden:
            return [bottom[self.first_state_bottom + j].data.reshape(shape) for j in range(len(self.states))]
        if self.carried is None or self.carried[0].shape != shape:
            self.carried = [np.zeros(shape, self.dtype) for _ in self.states]
        return self.carried

    def run_steps(self, cont, initial, output, blocks):
        """Run the T steps from ``initial`` states over ``self.gate_input``; write ``output``
        and return the final states. ``blocks``: the workers' blocks (``_blocks``) when
        the steps run in compiled code, which adds the bias b to ``self.gate_input`` as it reads
        it; else None (``self.gate_input`` holds the bias already)."""
        raise NotImplementedError

    def recurrent_product(self, scaled):
        """W_hc (cont_t h_{t-1})^T for one step's (N, H) ``scaled`` states: the (gates H, N)
        product, whose transpose is the step's recurrent part of the pre-activations. Computed
        in this orientation, whose products have the gates' thousands of rows instead of the
        N streams' tens: an LSTM step of 32 streams, 512 -> 2048, on 2 workers 0.81-1.17 ->
        0.59-0.65 ms (OpenBLAS sgemm runs products of few rows at half its rate)."""
        return parallel.matmul(self.blobs[self.recurrent_index].data, scaled.T, self.recurrent_out)

    def _blocks(self, cont):
        """The workers' blocks (u0, u1, n0, n1), the hidden units [u0, u1) of the streams [n0,
        n1) each, when the steps run in compiled code (``netlayers.kernels.recurrent``:
        float32, numpy's BLAS reachable from there); else None (the steps run in Python). A
        worker for each ``MIN_STEP_FLOPS_A_WORKER`` of a step's recurrent product, as many as
        run at once. They take the streams apart (all units each, no barrier a step) where a
        block of units would hold at most ``STREAM_BLOCKS_MAX_UNITS`` units; else blocks of
        units (``MIN_UNITS_A_WORKER`` at least) of every stream, which meet once a step."""
        if self.dtype != np.float32 or cont.dtype != np.float32 or not cont.flags.c_contiguous:
            return None
        if _compiled_call() is None:
            return None
        size, streams = self.p.num_output, self.streams
        step_flops = 2 * self.gates * size * size * streams  # the recurrent product's, each step
        most = min(parallel.concurrent_workers(), step_flops // MIN_STEP_FLOPS_A_WORKER)
        workers = max(1, min(most, size // MIN_UNITS_A_WORKER))
        if workers > 1 and size // workers <= STREAM_BLOCKS_MAX_UNITS:
            apart = min(most, streams)
            return [(0, size, w * streams // apart, (w + 1) * streams // apart) for w in range(apart)]
        return [(w * size // workers, (w + 1) * size // workers, 0, streams) for w in range(workers)]

    def run_compiled_steps(self, kernel, blocks, cont, states):
        """The forward's steps as ``kernel`` (``netlayers.kernels.recurrent``'s
        ``*_forward_units``), each worker a block of units (``_unit_blocks``), from
        ``self.hidden[0]`` and ``states``."""
        hidden, scaled = self.hidden, self.hidden_times_cont
        np.multiply(hidden[0], cont[0][:, None], out=scaled[0])
        bias = self.blobs[1].data
        self.run_units(kernel, blocks, self._forward_scratch, self.gate_input, bias, cont, states)

    def run_units(self, kernel, blocks, scratch_of, *rest):
        """``kernel(call, worker, block, W_hc, *scratch_of(worker, block), *rest, counts)`` for
        each block (``_blocks``), side by side: blocks of the same streams meet at a barrier
        each step (one ``counts`` for all), blocks of streams apart never wait for each other
        (each its own ``counts``, as worker 0 of 1). The scratch is taken first: a worker that
        failed to get its own would leave the others waiting at the first step's barrier for
        good."""
        weight = self.blobs[self.recurrent_index].data
        meet = all(block[2:] == blocks[0][2:] for block in blocks)
        with parallel.workspace_lock:
            scratch = [scratch_of(w, block) for w, block in enumerate(blocks)]
            shared = np.zeros(len(blocks), np.int64)

            def run(worker, part):
                counts, index = (shared, part) if meet else (np.zeros(1, np.int64), 0)
                kernel(_compiled_call(), index, blocks[part], weight, *scratch[part], *rest, counts)

            parallel.run_parts(run, len(blocks), len(blocks))

    def _forward_scratch(self, worker, block):
        """The worker's columns of the transposed recurrent weight, (H, G units), and of a
        step's recurrent product, (N, G units), for its ``block``'s units, in rows
        ``PRODUCT_ROW_PAD`` values longer."""
        return self._scratch(worker, self.p.num_output, self.gates * (block[1] - block[0]))

    def _backward_scratch(self, worker, block):
        """The worker's units' columns of the recurrent weight, (G H, units), and of a step's
        product sent back to the states, (N, units), for its ``block``'s units, in rows
        ``PRODUCT_ROW_PAD`` values longer (the same buffers as the forward's)."""
        return self._scratch(worker, self.gates * self.p.num_output, block[1] - block[0])

    def _scratch(self, worker, weight_rows, width):
        row = width + PRODUCT_ROW_PAD
        weight = parallel.scratch(worker, "recurrent_weight_columns", weight_rows * row, self.dtype)
        product = parallel.scratch(worker, "recurrent_step_product", self.streams * row, self.dtype)
        return weight.reshape(weight_rows, row), product.reshape(self.streams, row)

    # -- backward ----------------------------------------------------------------------------
    def Backward_cpu(self, top, propagate_down, bottom):
        steps, streams, rows = self.gate_diff.shape
        final_diffs = [blob.diff[0] for blob in top[1:]] if self.p.expose_hidden else None
        initial_diffs = self.run_steps_backward(top, bottom[1].data, final_diffs)
        gate_diff = self.gate_diff.reshape(steps * streams, rows)
        x = bottom[0].data.reshape(steps * streams, -1)
        self._add_param_grad(0, lambda out: parallel.matmul(gate_diff.T, x, out))
        self._add_param_grad(1, lambda out: np.sum(gate_diff, axis=0, out=out))
        cont_scaled = self.previous_states_times_cont().reshape(steps * streams, -1)
        self._add_param_grad(self.recurrent_index, lambda out: parallel.matmul(gate_diff.T, cont_scaled, out))
        if propagate_down[0]:
            parallel.matmul(gate_diff, self.blobs[0].data, bottom[0].diff.reshape(steps * streams, -1))
        if self.has_static:
            np.sum(self.gate_diff, axis=0, out=self.static_diff)
            static = bottom[2].data.reshape(streams, -1)
            self._add_param_grad(2, lambda out: parallel.matmul(self.static_diff.T, static, out))
            if propagate_down[2]:
                parallel.matmul(self.static_diff, self.blobs[2].data, bottom[2].diff.reshape(streams, -1))
        if self.p.expose_hidden:
            for j, diff in enumerate(initial_diffs):
                if propagate_down[self.first_state_bottom + j]:
                    bottom[self.first_state_bottom + j].diff.reshape(diff.shape)[...] = diff

    def _add_param_grad(self, index, compute):
        if self.param_propagate_down[index]:
            self.blobs[index].add_to_diff(compute)

    def run_steps_backward(self, top, cont, final_diffs):
        """Fill ``self.gate_diff`` (dE/d gate_input of every step) from the tops' diffs, running
        the steps in reverse, add the gradients of the subclass's own params, and return
        dE/d(initial states). ``final_diffs``: dE/dh_T (and dE/dc_T), or None."""
        raise NotImplementedError

    def previous_states_times_cont(self):
        """(T, N, num_output): cont_t h_{t-1} of every step, the recurrent product's input."""
        raise NotImplementedError

    # -- carried state in snapshots ------------------------------------------------------------
    def state(self):
        """The carried state (without ``expose_hidden``), as lists, so a resumed run goes on
        from it; None before any forward."""
        if self.p.expose_hidden or self.carried is None:
            return None
        return {name: values.tolist() for name, values in zip(self.states, self.carried)}

    def set_state(self, state):
        """Restore what :meth:`state` returned; anything else is a one-line DataError."""
        if self.p.expose_hidden:
            return
        shape = None
        try:
            carried = [np.array(state[name], dtype=self.dtype) for name in self.states]
            shape = carried[0].shape
            ok = isinstance(state, dict) and len(state) == len(self.states) and len(shape) == 2
            ok = ok and shape[1] == self.p.num_output and all(c.shape == shape for c in carried)
        except (TypeError, KeyError, ValueError, IndexError):
            ok = False
        if not ok:
            raise DataError(
                f"snapshot's carried state {state!r:.60} is not {{{', '.join(self.states)}}} lists of "
                f"shape (N, {self.p.num_output})",
                layer=self.name,
            )
        self.carried = carried


@register_layer("RNN")
class RNN(_Recurrent):
    """Caffe's RNN. With H = num_output and the params W_xh (H, X), b_h (H), [W_xh_static
    (H, S)], W_hh (H, H), W_ho (H, H), b_o (H) in that (Caffe's) order:

        h_t = tanh(W_hh (cont_t h_{t-1}) + W_xh x_t + b_h [+ W_xh_static x_static])
        o_t = tanh(W_ho h_t + b_o)

    for t = 1..T; the top is o (T, N, H); h_T is the exposed top.

    Backward: dE/dz_t = dE/do_t (1 - o_t^2) gives dE/dW_ho += sum_t dz_t^T h_t, dE/db_o +=
    sum dz_t. Then in reverse, with dE/dh_T from the h_T top (or 0):
    dE/da_t = (dz_t W_ho + dE/dh_t) (1 - h_t^2), dE/dh_{t-1} = cont_t (dE/da_t W_hh).
    dE/dW_hh += sum_t dE/da_t^T (cont_t h_{t-1}), dE/dW_xh += sum_t dE/da_t^T x_t, dE/db_h +=
    sum dE/da_t, dE/dx_t = dE/da_t W_xh; the static input gets s = sum_t dE/da_t:
    dE/dW_xh_static += s^T x_static, dE/dx_static = s W_xh_static; dE/dh_0 is the exposed
    bottom's gradient.
    """

    example = [_example(("h",), static=True), _example(("h",), static=False)]
    states = ("h",)
    gates = 1

    def LayerSetUp(self, bottom, top):
        super().LayerSetUp(bottom, top)
        hidden = self.p.num_output
        self.add_param((hidden, hidden), self.p.weight_filler)
        self.add_param((hidden,), self.p.bias_filler)

    def reshape_steps(self, steps, streams):
        hidden = self.p.num_output
        self.buffer("hidden", (steps + 1, streams, hidden))
        self.buffer("hidden_times_cont", (steps, streams, hidden))
        self.buffer("output_diff", (steps, streams, hidden))
        self.buffer("state_diff", (streams, hidden))

    def run_steps(self, cont, initial, output, blocks):
        hidden, scaled = self.hidden, self.hidden_times_cont
        hidden[0] = initial[0]
        if blocks:
            self.run_compiled_steps(rnn_forward_units, blocks, cont, (hidden, scaled))
        else:
            for t in range(self.steps):
                np.multiply(hidden[t], cont[t][:, None], out=scaled[t])
                np.add(self.gate_input[t], self.recurrent_product(scaled[t]).T, out=hidden[t + 1])
                elementwise.tanh_forward(hidden[t + 1], out=hidden[t + 1])
        rows = self.steps * self.streams
        out = output.reshape(rows, -1)
        parallel.matmul(hidden[1:].reshape(rows, -1), self.blobs[-2].data.T, out)
        out += self.blobs[-1].data
        elementwise.tanh_forward(out, out=out)
        return [hidden[self.steps]]

    def run_steps_backward(self, top, cont, final_diffs):
        rows = self.steps * self.streams
        dz = self.output_diff.reshape(rows, -1)
        elementwise.tanh_backward(top[0].data, top[0].diff, out=self.output_diff)
        hidden = self.hidden[1:].reshape(rows, -1)
        weight_index, bias_index = len(self.blobs) - 2, len(self.blobs) - 1
        self._add_param_grad(weight_index, lambda out: parallel.matmul(dz.T, hidden, out))
        self._add_param_grad(bias_index, lambda out: np.sum(dz, axis=0, out=out))
        gate_diff, carry = self.gate_diff, self.state_diff
        parallel.matmul(dz, self.blobs[weight_index].data, gate_diff.reshape(rows, -1))
        carry[...] = final_diffs[0] if final_diffs else 0
        recurrent = self.blobs[self.recurrent_index].data
        blocks = self._blocks(cont)
        if blocks:
            self.run_units(rnn_backward_units, blocks, self._backward_scratch, self.hidden, cont, gate_diff, carry)
            return [carry]
        for t in reversed(range(self.steps)):
            gate_diff[t] += carry
            elementwise.tanh_backward(self.hidden[t + 1], gate_diff[t], out=gate_diff[t])
            parallel.matmul(gate_diff[t], recurrent, carry)
            carry *= cont[t][:, None]
        return [carry]

    def previous_states_times_cont(self):
        return self.hidden_times_cont


@register_layer("LSTM")
class LSTM(_Recurrent):
    """Caffe's LSTM. With H = num_output and the params W_xc (4H, X), b_c (4H), [W_xc_static
    (4H, S)], W_hc (4H, H) in that (Caffe's) order, each step t = 1..T computes the gate
    pre-activations, rows in Caffe's order (i, f, o, g):

        [i', f', o', g'] = W_hc (cont_t h_{t-1}) + W_xc x_t + b_c [+ W_xc_static x_static]

    and Caffe's LSTMUnit (see :class:`LSTMUnit`): c_t = cont_t sigmoid(f') c_{t-1} +
    sigmoid(i') tanh(g'), h_t = sigmoid(o') tanh(c_t). The top is h (T, N, H); h_T and c_T are
    the exposed tops.

    Backward, in reverse from dE/dh_T, dE/dc_T (the exposed tops' diffs, or 0): dE/dh_t is the
    top's diff at t plus what step t+1 sends back; LSTMUnit's backward gives dE/d[i', f', o',
    g']_t and dE/dc_{t-1}; dE/dh_{t-1} = cont_t (dE/dgates_t W_hc). Then dE/dW_hc += sum_t
    dE/dgates_t^T (cont_t h_{t-1}), dE/dW_xc += sum_t dE/dgates_t^T x_t, dE/db_c += sum
    dE/dgates_t, dE/dx_t = dE/dgates_t W_xc; the static input as in :class:`RNN`.
    """

    example = [_example(("h", "c"), static=True), _example(("h", "c"), static=False)]
    states = ("h", "c")
    gates = 4
    keep_top_data = False

    def reshape_steps(self, steps, streams):
        hidden = self.p.num_output
        self.buffer("hidden", (steps + 1, streams, hidden))
        self.buffer("cell", (steps + 1, streams, hidden))
        self.buffer("tanh_cell", (steps, streams, hidden))
        self.buffer("hidden_times_cont", (steps, streams, hidden))
        self.buffer("activations", (steps, streams, 4 * hidden))
        self.buffer("cell_diff", (2, streams, hidden))  # dE/dc_t and dE/dc_{t-1}, taking turns
        self.buffer("hidden_diff", (streams, hidden))

    def run_steps(self, cont, initial, output, blocks):
        hidden, cell, scaled = self.hidden, self.cell, self.hidden_times_cont
        gates, acts = self.gate_input, self.activations
        hidden[0], cell[0] = initial
        if blocks:
            self.run_compiled_steps(lstm_forward_units, blocks, cont, (hidden, cell, self.tanh_cell, scaled, acts))
        else:
            for t in range(self.steps):
                np.multiply(hidden[t], cont[t][:, None], out=scaled[t])
                gates[t] += self.recurrent_product(scaled[t]).T
                lstm_cell_forward(gates[t], cell[t], cont[t], acts[t], cell[t + 1], self.tanh_cell[t], hidden[t + 1])
        output[...] = hidden[1:]
        return [hidden[self.steps], cell[self.steps]]

    def run_steps_backward(self, top, cont, final_diffs):
        dh, output_diff = self.hidden_diff, top[0].diff
        dc, dc_prev = self.cell_diff  # separate arrays: the cell kernel's loop vectorizes (in place it did not)
        if final_diffs:
            dh[...], dc[...] = final_diffs
        else:
            dh[...], dc[...] = 0, 0
        recurrent = self.blobs[self.recurrent_index].data
        blocks = self._blocks(cont)
        if blocks and output_diff.flags.c_contiguous:
            states = (self.cell, self.tanh_cell, self.activations)
            diffs = (self.gate_diff, dh, self.cell_diff)
            self.run_units(lstm_backward_units, blocks, self._backward_scratch, output_diff, states, cont, *diffs)
            return [dh, self.cell_diff[self.steps % 2]]
        for t in reversed(range(self.steps)):
            dh += output_diff[t]
            lstm_cell_backward(
                dh, dc, self.activations[t], self.cell[t], self.tanh_cell[t], cont[t], self.gate_diff[t], dc_prev
            )
            dc, dc_prev = dc_prev, dc
            parallel.matmul(self.gate_diff[t], recurrent, dh)
            dh *= cont[t][:, None]
        return [dh, dc]

    def previous_states_times_cont(self):
        return self.hidden_times_cont


# The steps in compiled code, forward + backward of a net of an LSTM and an InnerProduct 10 per
# step, against the steps in Python (paired rounds): T 50, N 32, H 512 (4 x 512 x 512 weights)
# 0.86x-0.98x; H 128, N 16: 0.79x-0.91x; H 64, N 8 (one worker): 0.63x-0.77x; H 256, N 4, T 100:
# 0.53x-0.61x; H 1024, N 64: 0.83x; an RNN in its place: 0.79x-0.84x, 0.84x-0.85x, 0.68x-0.69x
# (H 512, 128, 256). Two workers against one: 1.11x at 0.5 MFLOP a step (H 256, N 1), 0.96x at
# 2.1 (H 128, N 16), 0.44x-0.74x from 2.1 MFLOP with few streams (H 256, N 4; H 512, N 2; H 1024,
# N 1: the product is limited by reading W_hc, which two cores read twice as fast).
MIN_STEP_FLOPS_A_WORKER = 1 << 20
MIN_UNITS_A_WORKER = 16  # units a worker at least (set for the tiles of an add since removed; not measured again)
# Blocks of streams: each worker runs all units of its streams, so no worker waits for another's
# new states at each step. The compiled forward steps on two workers, streams apart against
# blocks of units (`/tmp` probe, 3 runs; ms): T 28, H 128, N 64 (sequential MNIST) 2.2-2.4
# against 2.8-3.0; H 64, N 64 1.1-1.3 against 1.7-2.4; T 100, H 128, N 16 2.8-3.0 against
# 2.9-3.5; but H 200, N 20 (blocks of 100 units) 2.7-3.0 against 2.1-2.3, H 256, N 8 13.7-14.2
# against 11.0-11.4: where blocks of units are wide the barrier costs little and each worker
# reads half of W_hc. The layer's forward and backward, the code before against this, in
# alternating processes (8 rounds): T 28, H 128, N 64 0.80x and 0.83x the time, its RNN 0.86x and
# 1.00x; T 100, H 128, N 16 0.87x and 0.90x (4 rounds). Blocks of at most 64 units come with 16
# streams or more (a step of MIN_STEP_FLOPS_A_WORKER a worker: 2 x 4 x 128^2 x 16 = 2 MFLOP for
# an LSTM of 128 units on 2 workers), so no worker is left with a stream or two.
STREAM_BLOCKS_MAX_UNITS = 64  # blocks of units of at most this many units: streams apart instead


def _compiled_call():
    """What the compiled steps call: (numpy's cblas_sgemm address, a zero of its integer type,
    libc's sched_yield address), or None when there is no such product to call."""
    found = blas.gemm_address(np.float32)
    return None if found is None else (*found, YIELD)


@register_layer("LSTMUnit")
class LSTMUnit(Layer):
    """Caffe's LSTMUnit: one LSTM step. Bottoms c_prev (1, N, D), gates (1, N, 4D) holding the
    pre-activations [i', f', o', g'] in that order along the last axis, cont (1, N); tops c and
    h (1, N, D):

        i = sigmoid(i'), f = cont sigmoid(f'), o = sigmoid(o'), g = tanh(g')
        c = f c_prev + i g,  h = o tanh(c)

    Backward: dcell = dE/dc + dE/dh o (1 - tanh(c)^2); dE/di' = dcell g i (1 - i), dE/df' =
    dcell c_prev cont sigmoid(f') (1 - sigmoid(f')), dE/do' = dE/dh tanh(c) o (1 - o), dE/dg' =
    dcell i (1 - g^2), dE/dc_prev = dcell f. cont gets no gradient. (The first axis may be any
    length L: L N independent cells.)
    """

    example = {"bottoms": [(1, 3, 2), (1, 3, 8), (1, 3)], "labels": {2: 2}, "tops": 2}
    num_bottoms = (3, 3)
    num_tops = (2, 2)
    keep_top_data = False

    def allow_force_backward(self, bottom_index):
        """No gradient for the continuation indicators (bottom 2), as in Caffe."""
        return bottom_index != 2

    def Reshape(self, bottom, top):
        c_prev, gates, cont = bottom
        if c_prev.num_axes != 3:
            raise self.error(f"c_prev (bottom 0) must have 3 axes (1, N, D), got shape {c_prev.shape}")
        lead, dim = c_prev.shape[:2], c_prev.shape[2]
        if gates.shape != lead + (4 * dim,):
            raise self.error(
                f"the gates (bottom 1) must have shape {lead + (4 * dim,)} (4 D = {4 * dim}), got {gates.shape}"
            )
        if cont.shape != lead:
            raise self.error(f"cont (bottom 2) must have shape {lead}, got {cont.shape}")
        top[0].reshape(c_prev.shape)
        top[1].reshape(c_prev.shape)
        cells = lead[0] * lead[1]
        self.buffer("activations", (cells, 4 * dim))
        self.buffer("tanh_cell", (cells, dim))
        self.buffer("scratch_gates", (cells, 4 * dim))
        self.buffer("scratch_cell", (cells, dim))

    def _flat(self, array):
        """``array`` seen as (cells, last axis)."""
        return array.reshape(len(self.tanh_cell), -1)

    def Forward_cpu(self, bottom, top):
        c_prev, gates, cont = (blob.data for blob in bottom)
        lstm_cell_forward(
            self._flat(gates),
            self._flat(c_prev),
            cont.reshape(-1),
            self.activations,
            self._flat(top[0].data),
            self.tanh_cell,
            self._flat(top[1].data),
        )

    def Backward_cpu(self, top, propagate_down, bottom):
        if not (propagate_down[0] or propagate_down[1]):
            return
        dc_prev = self._flat(bottom[0].diff) if propagate_down[0] else self.scratch_cell
        dgates = self._flat(bottom[1].diff) if propagate_down[1] else self.scratch_gates
        lstm_cell_backward(
            self._flat(top[1].diff),
            self._flat(top[0].diff),
            self.activations,
            self._flat(bottom[0].data),
            self.tanh_cell,
            bottom[2].data.reshape(-1),
            dgates,
            dc_prev,
        )
