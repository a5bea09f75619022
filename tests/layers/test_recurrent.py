"""RNN, LSTM and LSTMUnit (netlayers/layers/recurrent.py) against plain-numpy references written
here from Caffe's formulas (a loop over time steps), plus what the layer contract harness does not
reach: Caffe's state carried between forward passes, cont resets, static input, Caffe's param
order in a .caffemodel, snapshots of the carried state, and the example config training."""

from pathlib import Path

import numpy as np
import pytest

from netlayers import ConfigError, Net, NetlayersError
from netlayers.blob import Blob
from netlayers.gradcheck import build_layer, check_layer, check_net
from netlayers.layers import recurrent as recurrent_layers
from netlayers.netspec import check_layer as check_layer_spec
from netlayers.netspec.schema import Where

ROOT = Path(__file__).resolve().parents[2]
HIDDEN = 3


# -- references -------------------------------------------------------------------------------------
def sigmoid(v):
    return 1 / (1 + np.exp(-v))


def reference_rnn(x, cont, params, h0, static=None):
    """Caffe's RNN: h_t = tanh(W_hh (cont_t h_{t-1}) + W_xh x_t + b_h [+ W_xh_static x_static]),
    o_t = tanh(W_ho h_t + b_o). Returns (o, h_T)."""
    w_xh, b_h, *rest = params
    w_s = rest.pop(0) if static is not None else None
    w_hh, w_ho, b_o = rest
    steps, streams = cont.shape
    h, outputs = h0.copy(), []
    for t in range(steps):
        a = w_xh @ x[t].reshape(streams, -1).T + b_h[:, None] + w_hh @ (cont[t] * h.T)
        if static is not None:
            a = a + w_s @ static.reshape(streams, -1).T
        h = np.tanh(a).T
        outputs.append(np.tanh(h @ w_ho.T + b_o))
    return np.stack(outputs), h


def reference_lstm(x, cont, params, h0, c0, static=None):
    """Caffe's LSTM: gates [i', f', o', g'] = W_hc (cont_t h_{t-1}) + W_xc x_t + b_c [+ static];
    c_t = cont_t sigmoid(f') c_{t-1} + sigmoid(i') tanh(g'), h_t = sigmoid(o') tanh(c_t), one
    stream and one unit at a time. Returns (h, h_T, c_T)."""
    w_xc, b_c, *rest = params
    w_s = rest.pop(0) if static is not None else None
    (w_hc,) = rest
    steps, streams = cont.shape
    dim = w_hc.shape[1]
    h, c = h0.copy(), c0.copy()
    outputs = np.zeros((steps, streams, dim))
    for t in range(steps):
        new_h, new_c = np.zeros_like(h), np.zeros_like(c)
        for n in range(streams):
            gates = w_xc @ x[t, n].reshape(-1) + b_c + w_hc @ (cont[t, n] * h[n])
            if static is not None:
                gates = gates + w_s @ static[n].reshape(-1)
            for d in range(dim):
                i, f, o = sigmoid(gates[d]), cont[t, n] * sigmoid(gates[dim + d]), sigmoid(gates[2 * dim + d])
                g = np.tanh(gates[3 * dim + d])
                new_c[n, d] = f * c[n, d] + i * g
                new_h[n, d] = o * np.tanh(new_c[n, d])
        h, c = new_h, new_c
        outputs[t] = h
    return outputs, h, c


# -- helpers ---------------------------------------------------------------------------------------
def recurrent(type_name, bottoms, *, expose=False, tops=None):
    """A float64 layer set up on ``bottoms`` (arrays), with gaussian weights and biases."""
    layer = {
        "name": type_name.lower(),
        "type": type_name,
        "bottom": [f"b{i}" for i in range(len(bottoms))],
        "top": [f"t{i}" for i in range(tops or (1 + expose * (1 if type_name == "RNN" else 2)))],
        "recurrent_param": {
            "num_output": HIDDEN,
            "expose_hidden": expose,
            "weight_filler": {"type": "gaussian", "std": 0.6},
            "bias_filler": {"type": "gaussian", "std": 0.6},
        },
    }
    instance, bottom, top = build_layer(layer, [b.shape for b in bottoms], seed=4)
    for blob, values in zip(bottom, bottoms):
        blob.data[...] = values
    instance.setup(bottom, top)
    return instance, bottom, top


def run(instance, bottom, top, values=None):
    """Forward with new bottom values (arrays, reshaping the blobs); copies of the tops."""
    for blob, array in zip(bottom, values or []):
        blob.reshape(array.shape)
        blob.data[...] = array
    instance.forward(bottom, top)
    return [t.data.copy() for t in top]


def sequences(steps=5, streams=2, features=(4,), seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((steps, streams) + features)
    cont = np.ones((steps, streams))
    cont[0] = 0
    cont[3, 1] = 0  # stream 1 starts a new sequence at step 3
    return x, cont, rng.standard_normal((streams, 6))


# -- forward against the references ---------------------------------------------------------------
@pytest.mark.parametrize("static", [False, True])
def test_rnn_forward_is_caffes_formula(static):
    x, cont, x_static = sequences(features=(2, 2))
    h0 = np.random.default_rng(1).standard_normal((1, 2, HIDDEN))
    bottoms = [x, cont] + ([x_static] if static else []) + [h0]
    layer, bottom, top = recurrent("RNN", bottoms, expose=True)
    output, h_last = run(layer, bottom, top)
    params = [b.data for b in layer.blobs]
    want, want_h = reference_rnn(x, cont, params, h0[0], x_static if static else None)
    np.testing.assert_allclose(output, want, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(h_last[0], want_h, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("static", [False, True])
def test_lstm_forward_is_caffes_formula(static):
    x, cont, x_static = sequences()
    rng = np.random.default_rng(2)
    h0, c0 = rng.standard_normal((1, 2, HIDDEN)), rng.standard_normal((1, 2, HIDDEN))
    bottoms = [x, cont] + ([x_static] if static else []) + [h0, c0]
    layer, bottom, top = recurrent("LSTM", bottoms, expose=True)
    output, h_last, c_last = run(layer, bottom, top)
    want, want_h, want_c = reference_lstm(
        x, cont, [b.data for b in layer.blobs], h0[0], c0[0], x_static if static else None
    )
    np.testing.assert_allclose(output, want, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(h_last[0], want_h, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(c_last[0], want_c, rtol=1e-12, atol=1e-14)


def test_lstm_unit_is_caffes_cell_and_cont_zero_forgets_the_old_cell():
    rng = np.random.default_rng(3)
    c_prev, gates = rng.standard_normal((1, 4, 2)), rng.standard_normal((1, 4, 8))
    cont = np.array([[1.0, 0.0, 1.0, 0.0]])
    unit, bottom, top = build_layer(
        {"name": "unit", "type": "LSTMUnit", "bottom": ["c", "x", "cont"], "top": ["c2", "h"]},
        [(1, 4, 2), (1, 4, 8), (1, 4)],
    )
    for blob, values in zip(bottom, (c_prev, gates, cont)):
        blob.data[...] = values
    unit.setup(bottom, top)
    c, h = run(unit, bottom, top)
    i, f, o, g = (
        sigmoid(gates[0, :, :2]),
        sigmoid(gates[0, :, 2:4]),
        sigmoid(gates[0, :, 4:6]),
        np.tanh(gates[0, :, 6:]),
    )
    want_c = cont[0][:, None] * f * c_prev[0] + i * g
    np.testing.assert_allclose(c[0], want_c, rtol=1e-13)
    np.testing.assert_allclose(h[0], o * np.tanh(want_c), rtol=1e-13)
    np.testing.assert_allclose(c[0, 1], (i * g)[1], rtol=1e-13)  # cont 0: the old cell is gone
    report = check_layer(unit, bottom, tops=top)
    assert [b.name for b in report.blobs] == ["bottom[0]", "bottom[1]"], "cont must get no gradient"
    assert report.passed, report.table()


# -- cont, carried and exposed state --------------------------------------------------------------
@pytest.mark.parametrize("type_name", ["RNN", "LSTM"])
def test_a_reset_mid_sequence_forgets_everything_before_it(type_name):
    """Stream 1 restarts at step 3 (cont 0): its outputs from there on are those of the same
    inputs run alone from step 3, whatever came before."""
    x, cont, _ = sequences()
    layer, bottom, top = recurrent(type_name, [x, cont])
    (whole,) = run(layer, bottom, top)
    fresh, fresh_bottom, fresh_top = recurrent(type_name, [x[3:], cont[3:]])
    for mine, theirs in zip(fresh.blobs, layer.blobs):
        mine.data[...] = theirs.data
    (tail,) = run(fresh, fresh_bottom, fresh_top)
    np.testing.assert_allclose(whole[3:, 1], tail[:, 1], rtol=1e-12, atol=1e-14)
    assert not np.allclose(whole[3:, 0], tail[:, 0]), "stream 0 goes on and must remember its past"


@pytest.mark.parametrize("type_name", ["RNN", "LSTM"])
def test_expose_hidden_carries_state_across_two_calls(type_name):
    """The final states of a first call fed as the initial states of a second give the outputs
    and final states of one call over both halves."""
    x, cont, _ = sequences(steps=6)
    states = 1 if type_name == "RNN" else 2
    zeros = [np.zeros((1, 2, HIDDEN))] * states
    layer, bottom, top = recurrent(type_name, [x, cont, *zeros], expose=True)
    whole = run(layer, bottom, top)
    first = run(layer, bottom, top, [x[:2], cont[:2], *zeros])
    second = run(layer, bottom, top, [x[2:], cont[2:], *first[1:]])
    np.testing.assert_allclose(np.concatenate([first[0], second[0]]), whole[0], rtol=1e-12, atol=1e-14)
    for got, want in zip(second[1:], whole[1:]):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("type_name", ["RNN", "LSTM"])
def test_without_expose_hidden_the_state_carries_over_between_forwards_as_in_caffe(type_name):
    """Caffe's TestForward: a sequence fed one step per forward (cont 0 only at its start)
    gives the outputs of one forward over all of it; with cont 0 at every call, only the first
    step agrees."""
    x, cont, _ = sequences(steps=4, streams=3)
    cont[:] = 1
    cont[0] = 0
    layer, bottom, top = recurrent(type_name, [x, cont])
    (whole,) = run(layer, bottom, top)
    stepper, step_bottom, step_top = recurrent(type_name, [x[:1], cont[:1]])
    for mine, theirs in zip(stepper.blobs, layer.blobs):
        mine.data[...] = theirs.data
    stepped = np.concatenate(
        [run(stepper, step_bottom, step_top, [x[t : t + 1], cont[t : t + 1]])[0] for t in range(4)]
    )
    np.testing.assert_allclose(stepped, whole, rtol=1e-12, atol=1e-14)
    restarted = [run(stepper, step_bottom, step_top, [x[t : t + 1], 0 * cont[:1]])[0] for t in range(4)]
    assert not np.allclose(restarted[1], whole[1:2])
    stepper.carried = None  # a fresh start: the first step's output is the full run's
    np.testing.assert_allclose(run(stepper, step_bottom, step_top, [x[:1], 0 * cont[:1]])[0], whole[:1], rtol=1e-12)


@pytest.mark.parametrize("type_name", ["RNN", "LSTM"])
def test_the_carried_state_survives_a_snapshot(type_name):
    """state() / set_state() (as a snapshot stores them, through JSON) let a new layer go on
    exactly where the old one stopped; a damaged state is a one-line error."""
    import json

    x, cont, _ = sequences()
    cont[:] = 1
    layer, bottom, top = recurrent(type_name, [x, cont])
    run(layer, bottom, top)
    saved = json.loads(json.dumps(layer.state()))
    (going_on,) = run(layer, bottom, top)
    resumed, resumed_bottom, resumed_top = recurrent(type_name, [x, cont])
    for mine, theirs in zip(resumed.blobs, layer.blobs):
        mine.data[...] = theirs.data
    resumed.set_state(saved)
    np.testing.assert_array_equal(run(resumed, resumed_bottom, resumed_top)[0], going_on)
    with pytest.raises(NetlayersError) as info:
        resumed.set_state({"h": [[1.0, 2.0]]})
    assert "\n" not in str(info.value) and "carried state" in str(info.value)


# -- gradients through time -----------------------------------------------------------------------
@pytest.mark.parametrize("type_name", ["RNN", "LSTM"])
@pytest.mark.parametrize("static", [False, True])
def test_gradients_through_time_without_exposed_state(type_name, static):
    """Every param, x and x_static, with a reset mid-sequence (cont 0 at step 0 keeps forward a
    function of the bottoms although the state carries over); cont gets none."""
    x, cont, x_static = sequences(steps=4, features=(3,))
    bottoms = [x, cont] + ([x_static] if static else [])
    layer, bottom, top = recurrent(type_name, bottoms)
    report = check_layer(layer, bottom, tops=top)
    checked = {b.name for b in report.blobs}
    assert "bottom[1]" not in checked
    assert {"bottom[0]", *(f"param[{i}]" for i in range(len(layer.blobs)))} <= checked
    assert ("bottom[2]" in checked) == static
    assert report.passed, report.table()


def test_lstm_gradients_reach_across_many_steps():
    """Step 0's input changes the last step's output (and the gradient says by how much)."""
    x, cont, _ = sequences(steps=8, features=(1,))
    cont[:] = 1
    cont[0] = 0
    layer, bottom, top = recurrent("LSTM", [x, cont])
    run(layer, bottom, top)
    top[0].diff[...] = 0
    top[0].diff[-1] = 1
    layer.backward(top, [True, False], bottom)
    assert np.all(np.abs(bottom[0].diff[0]) > 1e-8)
    report = check_layer(layer, bottom, tops=top)
    assert report.passed, report.table()


def test_the_example_net_passes_a_whole_net_gradient_check():
    report = check_net(ROOT / "configs" / "examples" / "lstm_sequence.yaml", max_elements=40)
    assert any(b.name.startswith("param lstm") for b in report.blobs)
    assert report.passed, report.table()


# -- params in Caffe's order ----------------------------------------------------------------------
def test_params_come_in_caffes_order_and_shapes():
    x, cont, x_static = sequences(features=(2, 2))
    rnn, _, _ = recurrent("RNN", [x, cont, x_static])
    assert [b.shape for b in rnn.blobs] == [
        (3, 4),
        (3,),
        (3, 6),
        (3, 3),
        (3, 3),
        (3,),
    ]  # W_xh b_h W_xh_static W_hh W_ho b_o
    lstm, _, _ = recurrent("LSTM", [x, cont])
    assert [b.shape for b in lstm.blobs] == [(12, 4), (12,), (12, 3)]  # W_xc b_c W_hc


def _varint(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number, payload):
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def caffemodel(layers):
    """A NetParameter as Caffe writes it: layer (100) {name (1), type (2), blobs (7) {data (5)
    packed floats, shape (7) {dim (1) packed}}}."""
    body = b""
    for name, type_name, arrays in layers:
        blobs = b"".join(
            _field(
                7, _field(5, a.astype("<f4").tobytes()) + _field(7, _field(1, b"".join(_varint(d) for d in a.shape)))
            )
            for a in arrays
        )
        body += _field(100, _field(1, name.encode()) + _field(2, type_name.encode()) + blobs)
    return body


def test_a_caffemodel_written_in_caffes_param_order_loads_each_blob_where_caffe_has_it(tmp_path):
    """Caffe's unrolled LSTM owns W_xc (x_transform), b_c, W_xc_static, then W_hc (transform_1),
    in that order: each named array lands in the param of that meaning."""
    hidden, features, static = 5, 3, 2
    rng = np.random.default_rng(0)
    caffe_params = {
        "W_xc": rng.standard_normal((4 * hidden, features)),
        "b_c": rng.standard_normal(4 * hidden),
        "W_xc_static": rng.standard_normal((4 * hidden, static)),
        "W_hc": rng.standard_normal((4 * hidden, hidden)),
    }
    path = tmp_path / "lstm.caffemodel"
    path.write_bytes(caffemodel([("lstm", "LSTM", list(caffe_params.values()))]))
    net = Net(
        {
            "layers": [
                {
                    "name": "in",
                    "type": "Input",
                    "top": ["x", "cont", "s"],
                    "input_param": {"shape": [{"dim": [4, 2, features]}, {"dim": [4, 2]}, {"dim": [2, static]}]},
                },
                {
                    "name": "lstm",
                    "type": "LSTM",
                    "bottom": ["x", "cont", "s"],
                    "top": "h",
                    "recurrent_param": {"num_output": hidden},
                },
            ]
        }
    )
    net.load(path)
    for blob, (name, values) in zip(net.params["lstm"], caffe_params.items()):
        np.testing.assert_array_equal(blob.data, values.astype(np.float32), err_msg=name)
    x = np.random.default_rng(1).standard_normal((4, 2, features))
    cont = np.array([[0, 0], [1, 1], [1, 0], [1, 1]], float)
    s = np.random.default_rng(2).standard_normal((2, static))
    out = net.forward(x=x, cont=cont, s=s)["h"]
    want, _, _ = reference_lstm(
        x,
        cont,
        [v.astype(np.float32).astype(float) for v in caffe_params.values()],
        np.zeros((2, hidden)),
        np.zeros((2, hidden)),
        s,
    )
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)


# -- mistakes --------------------------------------------------------------------------------------
def _layer_error(type_name, shapes, expose=False, count=None):
    layer = {
        "name": "r",
        "type": type_name,
        "bottom": [f"b{i}" for i in range(len(shapes))],
        "top": [f"t{i}" for i in range(count or 1)],
    }
    layer["recurrent_param"] = {"num_output": HIDDEN, "expose_hidden": expose}
    instance, bottom, top = build_layer(layer, shapes)
    with pytest.raises(ConfigError) as info:
        instance.setup(bottom, top)
    message = str(info.value)
    assert "\n" not in message and "'r'" in message
    return message


def test_mistakes_are_one_line_errors():
    assert "cont (bottom 1) must have shape (T, N) = (5, 2)" in _layer_error("LSTM", [(5, 2, 4), (5, 3)])
    assert "at least 2 axes" in _layer_error("RNN", [(5,), (5, 2)])
    assert "x_static (bottom 2) must have N = 2" in _layer_error("RNN", [(5, 2, 4), (5, 2), (3, 4)])
    assert "h_0 (bottom 2) must have shape (1, N, num_output) = (1, 2, 3)" in _layer_error(
        "LSTM", [(5, 2, 4), (5, 2), (1, 2, 4), (1, 2, 3)], expose=True, count=3
    )
    assert "takes exactly 3 top(s)" in _layer_error("LSTM", [(5, 2, 4), (5, 2), (1, 2, 3), (1, 2, 3)], expose=True)
    assert "4 to 5 bottom(s)" in _layer_error("LSTM", [(5, 2, 4), (5, 2)], expose=True, count=3)


def test_new_features_per_step_after_setup_are_a_one_line_error():
    x, cont, _ = sequences()
    layer, bottom, top = recurrent("RNN", [x, cont])
    bottom[0].reshape((5, 2, 7))
    with pytest.raises(NetlayersError) as info:
        layer.forward(bottom, top)
    assert "has 7 features per item but the weights expect 4" in str(info.value)


def test_num_output_is_required():
    from netlayers.netspec import Where
    from netlayers.netspec import check_layer as check_layer_spec

    with pytest.raises(ConfigError, match="num_output"):
        check_layer_spec(
            {"name": "r", "type": "LSTM", "bottom": ["x", "c"], "top": "h", "recurrent_param": {}}, Where()
        )


# -- the example config ---------------------------------------------------------------------------
def test_the_example_lstm_learns_the_delayed_copy_far_below_chance():
    """configs/examples/lstm_sequence.yaml: a bit from 3 steps back, which only memory can give.
    Chance is ln 2 = 0.693; after 250 iterations the loss is under a tenth of it."""
    from netlayers import Solver
    from netlayers.solvers.reporting import Reporter

    solver = Solver(
        ROOT / "configs" / "examples" / "lstm_sequence.yaml", max_iter=250, reporter=Reporter(quiet=True, metrics=False)
    )
    losses = []
    for _ in range(250):
        solver.step(1)
        losses.append(solver.net.loss)
    assert np.mean(losses[:10]) > 0.5
    assert np.mean(losses[-20:]) < 0.07, losses[-20:]


def test_blob_shapes_of_the_tops():
    x, cont, _ = sequences(steps=5, streams=2, features=(2, 3))
    layer, bottom, top = recurrent("LSTM", [x, cont, np.zeros((1, 2, HIDDEN)), np.zeros((1, 2, HIDDEN))], expose=True)
    assert [t.shape for t in top] == [(5, 2, HIDDEN), (1, 2, HIDDEN), (1, 2, HIDDEN)]
    assert isinstance(top[0], Blob)


# -- the steps in compiled code (float32) -----------------------------------------------------------
def float32_recurrent(type_name, hidden, bottoms, expose):
    """A float32 RNN or LSTM layer of ``hidden`` units set up on ``bottoms`` (arrays)."""
    states = 2 if type_name == "LSTM" else 1
    layer = {
        "name": type_name.lower(),
        "type": type_name,
        "bottom": [f"b{i}" for i in range(len(bottoms))],
        "top": [f"t{i}" for i in range(1 + states * expose)],
        "recurrent_param": {
            "num_output": hidden,
            "expose_hidden": expose,
            "weight_filler": {"type": "gaussian", "std": 0.3},
            "bias_filler": {"type": "gaussian", "std": 0.3},
        },
    }
    spec = check_layer_spec(layer, Where())
    instance = spec.cls(spec, phase="TRAIN", dtype=np.float32, rng=np.random.default_rng(5))
    bottom = [Blob(b.shape, np.float32, name=f"b{i}") for i, b in enumerate(bottoms)]
    for blob, values in zip(bottom, bottoms):
        blob.data[...] = values
    top = [Blob((), np.float32, name=f"t{i}") for i in range(len(spec.tops))]
    instance.setup(bottom, top)
    return instance, bottom, top


def forward_backward(layer, bottom, top, seed=6):
    """Tops, param diffs and bottom diffs (copies) of a forward and a backward pass with fixed
    top diffs, starting from a zero carried state."""
    layer.carried = None
    layer.forward(bottom, top)
    rng = np.random.default_rng(seed)
    for blob in top:
        blob.diff[...] = rng.standard_normal(blob.shape)
    for blob in layer.blobs:
        blob.diff[...] = 0
    propagate = [i != 1 for i in range(len(bottom))]  # cont gets no gradient
    layer.backward(top, propagate, bottom)
    return (
        [t.data.copy() for t in top],
        [b.diff.copy() for b in layer.blobs],
        [bottom[0].diff.copy()] + [b.diff.copy() for b in bottom[2:]],
    )


@pytest.mark.parametrize("type_name", ["RNN", "LSTM"])
@pytest.mark.parametrize("threads, hidden, streams", [(1, 20, 3), (2, 20, 3), (2, 37, 2), (3, 48, 5)])
@pytest.mark.parametrize("expose", [False, True])
@pytest.mark.parametrize("apart", ["units", "streams"])
def test_steps_in_compiled_code_give_the_python_steps_and_caffes_formula(
    monkeypatch, thread_count, type_name, threads, hidden, streams, expose, apart
):
    """Workers over blocks of hidden units (uneven, and not multiples of 16), meeting once a
    step, or over blocks of streams (uneven), each alone: the outputs, the exposed final
    states and every gradient are the steps' in Python (to float32 rounding: the two compute
    each step's recurrent product in transposed orientations, whose sums round differently; so
    the tolerance scales with each array's largest value), with sequences restarting mid-way."""
    thread_count(threads)
    monkeypatch.setattr(recurrent_layers, "MIN_STEP_FLOPS_A_WORKER", 1)
    monkeypatch.setattr(recurrent_layers, "MIN_UNITS_A_WORKER", 1)
    monkeypatch.setattr(recurrent_layers, "STREAM_BLOCKS_MAX_UNITS", hidden if apart == "streams" else 0)
    rng = np.random.default_rng(7)
    steps = 6
    x = rng.standard_normal((steps, streams, 5)).astype(np.float32)
    cont = np.ones((steps, streams), np.float32)
    cont[0] = 0
    cont[4, streams - 1] = 0
    count = 2 if type_name == "LSTM" else 1
    states = [rng.standard_normal((1, streams, hidden)).astype(np.float32) for _ in range(count)] if expose else []
    layer, bottom, top = float32_recurrent(type_name, hidden, [x, cont, *states], expose)
    blocks = layer._blocks(bottom[1].data)
    if apart == "units" or threads == 1:
        assert [(a, b, n0, n1) for a, b, n0, n1 in blocks] == [
            (hidden * w // threads, hidden * (w + 1) // threads, 0, streams) for w in range(threads)
        ]
    else:
        workers = min(threads, streams)
        assert blocks == [(0, hidden, streams * w // workers, streams * (w + 1) // workers) for w in range(workers)]
    compiled = forward_backward(layer, bottom, top)
    monkeypatch.setattr(recurrent_layers._Recurrent, "_blocks", lambda self, cont: None)
    python = forward_backward(layer, bottom, top)
    for got, want in zip(sum(compiled, []), sum(python, [])):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6 * max(1.0, np.abs(want).max()))
    params = [b.data.astype(np.float64) for b in layer.blobs]
    initial = [s[0].astype(np.float64) for s in states] if expose else [np.zeros((streams, hidden))] * count
    reference = reference_lstm if type_name == "LSTM" else reference_rnn
    want = reference(x.astype(np.float64), cont.astype(np.float64), params, *initial)
    np.testing.assert_allclose(compiled[0][0], want[0], rtol=1e-4, atol=1e-5)
    for got, final in zip(compiled[0][1:], want[1:]):  # the exposed final states
        np.testing.assert_allclose(got[0], final, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "type_name, hidden, streams, blocks",
    [
        ("LSTM", 128, 64, [(0, 128, 0, 32), (0, 128, 32, 64)]),  # sequential MNIST's: 64 units a block
        ("LSTM", 128, 16, [(0, 128, 0, 8), (0, 128, 8, 16)]),
        ("RNN", 128, 64, [(0, 128, 0, 32), (0, 128, 32, 64)]),  # sequential MNIST's RNN
        ("LSTM", 200, 20, [(0, 100, 0, 20), (100, 200, 0, 20)]),  # blocks of 100 units
        ("LSTM", 512, 32, [(0, 256, 0, 32), (256, 512, 0, 32)]),
    ],
)
def test_workers_take_the_streams_apart_where_blocks_of_units_would_be_narrow(
    thread_count, type_name, hidden, streams, blocks
):
    """On 2 workers: blocks of streams (each all units, no barrier a step) where blocks of
    units would hold at most ``STREAM_BLOCKS_MAX_UNITS`` units; else blocks of units of every
    stream."""
    thread_count(2)
    x = np.zeros((3, streams, 4), np.float32)
    layer, bottom, _ = float32_recurrent(type_name, hidden, [x, np.ones((3, streams), np.float32)], False)
    assert layer._blocks(bottom[1].data) == blocks


def test_steps_stay_in_python_for_float64_and_without_a_blas_to_call(monkeypatch):
    x, cont, _ = sequences()
    layer, bottom, top = recurrent("LSTM", [x, cont])
    assert layer._blocks(bottom[1].data) is None  # float64
    layer32, bottom32, _ = float32_recurrent("LSTM", 4, [x.astype(np.float32), cont.astype(np.float32)], False)
    assert layer32._blocks(bottom32[1].data) is not None
    monkeypatch.setattr(recurrent_layers.blas, "gemm_address", lambda dtype: None)
    assert layer32._blocks(bottom32[1].data) is None


FAILING_SCRATCH = """
import numpy as np
from netlayers import parallel
from netlayers.layers import recurrent
from tests.layers.test_recurrent import float32_recurrent

parallel.set_thread_count(2)
recurrent.MIN_STEP_FLOPS_A_WORKER = 1
scratch = parallel.scratch

def failing(worker, name, size, dtype):
    if worker == 1 and name == "recurrent_weight_columns":
        raise MemoryError("no room for worker 1's rows")
    return scratch(worker, name, size, dtype)

x = np.ones((4, 2, 3), np.float32)
cont = np.ones((4, 2), np.float32)
layer, bottom, top = float32_recurrent("LSTM", 32, [x, cont], False)
assert len(layer._blocks(bottom[1].data)) == 2
parallel.scratch = failing
try:
    layer.forward(bottom, top)
except MemoryError as error:
    print("raised:", error)
"""


def test_a_worker_without_its_scratch_fails_the_forward_instead_of_leaving_the_others_waiting():
    """The blocks' scratch is taken before the workers start: a worker that raised before the
    first step would leave the others at its barrier for good (a hang, here a timeout)."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", FAILING_SCRATCH], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "raised: no room for worker 1's rows" in done.stdout
