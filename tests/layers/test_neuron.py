"""Neuron layers: values against direct numpy formulas, gradients, the layer contract, Caffe's
defaults, in-place runs and setup errors."""

import numpy as np
import pytest
from layer_harness import assert_contract, assert_gradients, make_layer, run_layer

from netlayers import ConfigError
from netlayers.blob import Blob
from netlayers.gradcheck import build_layer, check_net


def away_from(x, kink=0.0, gap=0.05):
    """x moved at least ``gap`` away from ``kink`` (keeps the sign of x - kink)."""
    d = x - kink
    return kink + np.where(d >= 0, 1, -1) * (np.abs(d) + gap)


@pytest.fixture
def x(rng):
    return away_from(rng.standard_normal((3, 4, 5)))


def softplus(v):
    return np.log1p(np.exp(-np.abs(v))) + np.maximum(v, 0)


# -- values against numpy -----------------------------------------------------------------------
FORMULAS = [
    ({"type": "ELU"}, lambda v: np.where(v > 0, v, np.exp(v) - 1)),
    ({"type": "ELU", "elu_param": {"alpha": 0.3}}, lambda v: np.where(v > 0, v, 0.3 * (np.exp(v) - 1))),
    ({"type": "AbsVal"}, np.abs),
    ({"type": "Power"}, lambda v: v),
    ({"type": "Power", "power_param": {"power": 2, "scale": -0.5, "shift": 1}}, lambda v: (1 - 0.5 * v) ** 2),
    ({"type": "Power", "power_param": {"power": 1.5, "scale": 2, "shift": 10}}, lambda v: (10 + 2 * v) ** 1.5),
    ({"type": "Power", "power_param": {"power": 0, "scale": 3}}, lambda v: np.ones_like(v)),
    ({"type": "Power", "power_param": {"power": 3, "scale": 0, "shift": 2}}, lambda v: np.full_like(v, 8.0)),
    ({"type": "Power", "power_param": {"power": 3, "scale": -1.5}}, lambda v: (-1.5 * v) ** 3),
    ({"type": "Power", "power_param": {"power": -0.5, "shift": 4}}, lambda v: (4 + v) ** -0.5),
    ({"type": "Power", "power_param": {"power": -2, "scale": 2, "shift": 9}}, lambda v: (9 + 2 * v) ** -2),
    ({"type": "Exp"}, np.exp),
    ({"type": "Exp", "exp_param": {"base": 2, "scale": 0.5, "shift": -1}}, lambda v: 2.0 ** (0.5 * v - 1)),
    ({"type": "Exp", "exp_param": {"scale": -1, "shift": 0.5}}, lambda v: np.exp(0.5 - v)),
    ({"type": "Log", "log_param": {"shift": 4}}, lambda v: np.log(4 + v)),
    ({"type": "Log", "log_param": {"base": 10, "scale": 2, "shift": 6}}, lambda v: np.log10(6 + 2 * v)),
    ({"type": "Log", "log_param": {"base": 2, "scale": -1, "shift": 5}}, lambda v: np.log2(5 - v)),
    ({"type": "BNLL"}, lambda v: np.log(1 + np.exp(v))),
    ({"type": "Threshold"}, lambda v: (v > 0).astype(float)),
    ({"type": "Threshold", "threshold_param": {"threshold": 0.4}}, lambda v: (v > 0.4).astype(float)),
    ({"type": "Dropout"}, lambda v: v),  # TRAIN is random; see the dropout tests
]


@pytest.mark.parametrize("layer,formula", FORMULAS, ids=lambda v: str(v) if isinstance(v, dict) else "")
def test_forward_matches_numpy(layer, formula, x):
    phase = "TEST" if layer["type"] == "Dropout" else "TRAIN"
    _, (y,) = run_layer(layer, [x], phase=phase)
    np.testing.assert_allclose(y, formula(x), rtol=1e-12, atol=1e-12)


def test_prelu_forward_per_channel_and_shared(x):
    layer, (y,) = run_layer({"type": "PReLU", "prelu_param": {"filler": {"type": "gaussian"}}}, [x])
    slope = layer.blobs[0].data
    assert slope.shape == (4,)
    np.testing.assert_allclose(y, np.where(x > 0, x, slope[None, :, None] * x))
    layer, (y,) = run_layer(
        {"type": "PReLU", "prelu_param": {"channel_shared": True, "filler": {"type": "constant", "value": -0.7}}}, [x]
    )
    assert layer.blobs[0].shape == (1,)
    np.testing.assert_allclose(y, np.where(x > 0, x, -0.7 * x))


def test_bnll_is_stable_for_large_inputs():
    x = np.array([[-800.0, -40.0, 0.0, 40.0, 800.0]])
    _, (y,) = run_layer({"type": "BNLL"}, [x])
    np.testing.assert_allclose(y, [[0.0, np.exp(-40.0), np.log(2.0), 40.0, 800.0]], rtol=1e-12, atol=1e-300)
    layer, bottom, top = make_layer({"type": "BNLL"}, [x])
    layer.forward(bottom, top)
    top[0].diff[...] = 1
    layer.Backward_cpu(top, [True], bottom)
    with np.errstate(over="ignore"):
        sigmoid = 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(bottom[0].diff, sigmoid, rtol=1e-12, atol=1e-300)


# -- gradients ----------------------------------------------------------------------------------
GRADIENT_CASES = [
    {"type": "ReLU"},
    {"type": "ReLU", "relu_param": {"negative_slope": 0.1}},
    {"type": "Sigmoid"},
    {"type": "TanH"},
    {"type": "ELU"},
    {"type": "ELU", "elu_param": {"alpha": 0.5}},
    {"type": "PReLU", "prelu_param": {"filler": {"type": "uniform", "min": -1, "max": 1}}},
    {"type": "PReLU", "prelu_param": {"channel_shared": True}},
    {"type": "AbsVal"},
    {"type": "Power", "power_param": {"power": 2, "scale": 1.5, "shift": -0.5}},
    {"type": "Power", "power_param": {"power": -1.5, "scale": 0.5, "shift": 3}},
    {"type": "Power", "power_param": {"power": 3, "scale": -0.5, "shift": 0.5}},
    {"type": "Power", "power_param": {"power": 0.5, "scale": 0.5, "shift": 4}},
    {"type": "Power", "power_param": {"power": -1, "shift": 5}},
    {"type": "Power", "power_param": {"power": 2.7, "scale": 0.5, "shift": 3}},
    {"type": "Power", "power_param": {"power": 1, "scale": -2, "shift": 1}},
    {"type": "Power", "power_param": {"power": 0}},
    {"type": "Exp", "exp_param": {"base": 3, "scale": 0.7, "shift": 0.2}},
    {"type": "Log", "log_param": {"base": 2, "scale": 0.5, "shift": 3}},
    {"type": "BNLL"},
    {"type": "Threshold", "threshold_param": {"threshold": 0.1}},
    {"type": "Dropout", "dropout_param": {"dropout_ratio": 0.3}},
    {"type": "Dropout", "dropout_param": {"scale_train": False}},
]


@pytest.mark.parametrize("layer", GRADIENT_CASES, ids=str)
@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_gradients(layer, phase, x):
    if layer["type"] == "Threshold":
        x = away_from(x, 0.1)
    if layer["type"] == "ReLU":
        x = away_from(x)
    report = assert_gradients(layer, [x], phase=phase)
    for blob in report.blobs:  # inputs kept off the kinks: every element is really checked
        assert blob.skipped == 0, str(report)


def test_relu_family_kinks_are_mostly_checked(rng):
    """Inputs straddling the kinks: most elements are still compared, few are skipped."""
    x = rng.standard_normal((4, 5, 6))
    for layer in ({"type": "ELU", "elu_param": {"alpha": 0.5}}, {"type": "PReLU"}, {"type": "AbsVal"}):
        report = assert_gradients(layer, [x])
        assert report["bottom[0]"].checked >= 0.9 * x.size, str(report)


@pytest.mark.parametrize(
    "layer",
    [
        {"type": "PReLU", "prelu_param": {"filler": {"type": "gaussian"}}},
        {"type": "PReLU", "prelu_param": {"channel_shared": True}},
        {"type": "ELU", "elu_param": {"alpha": 2}},
        {"type": "Power", "power_param": {"power": 3, "scale": 0.5, "shift": 1}},
        {"type": "Exp"},
        {"type": "BNLL"},
        {"type": "Dropout"},
        {"type": "AbsVal"},
    ],
    ids=str,
)
def test_contract(layer, x):
    assert_contract(layer, [x])


def test_prelu_slope_gradient_accumulates_and_sums_the_negative_part(x, rng):
    layer, bottom, top = make_layer({"type": "PReLU"}, [x])
    layer.forward(bottom, top)
    dy = rng.standard_normal(x.shape)
    top[0].diff[...] = dy
    layer.blobs[0].diff[...] = 1.0
    layer.Backward_cpu(top, [True], bottom)
    expected = np.sum(np.where(x <= 0, x * dy, 0), axis=(0, 2))
    np.testing.assert_allclose(layer.blobs[0].diff, 1.0 + expected)
    np.testing.assert_allclose(bottom[0].diff, np.where(x > 0, dy, 0.25 * dy))


def test_threshold_gradient_is_zero(x):
    layer, bottom, top = make_layer({"type": "Threshold"}, [x])
    layer.forward(bottom, top)
    top[0].diff[...] = 1
    bottom[0].diff[...] = 7
    layer.Backward_cpu(top, [True], bottom)
    assert not bottom[0].diff.any()


def test_kinks_take_the_documented_slope():
    x = np.zeros((1, 2, 1))
    dy = np.ones_like(x)
    for layer, expected in (
        ({"type": "ELU", "elu_param": {"alpha": 0.5}}, 0.5),
        ({"type": "AbsVal"}, 0.0),
        ({"type": "PReLU"}, 0.25),
    ):
        instance, bottom, top = make_layer(layer, [x])
        instance.forward(bottom, top)
        top[0].diff[...] = dy
        instance.Backward_cpu(top, [True], bottom)
        np.testing.assert_array_equal(bottom[0].diff, expected)


# -- Dropout ------------------------------------------------------------------------------------
def test_dropout_train_drops_the_ratio_and_scales_the_rest(rng):
    x = rng.uniform(1, 2, (50, 200))
    layer, bottom, top = make_layer({"type": "Dropout", "dropout_param": {"dropout_ratio": 0.3}}, [x])
    layer.forward(bottom, top)
    y = top[0].data
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.02
    np.testing.assert_allclose(y[kept], x[kept] / 0.7)
    top[0].diff[...] = 2.0
    layer.Backward_cpu(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff, np.where(kept, 2.0 / 0.7, 0.0))
    first = kept.copy()
    layer.forward(bottom, top)
    assert (first != (top[0].data != 0)).any(), "a new mask at every forward"


def test_dropout_without_scale_train_scales_at_test(x):
    param = {"dropout_param": {"dropout_ratio": 0.25, "scale_train": False}}
    _, (y,) = run_layer({"type": "Dropout", **param}, [x], phase="TEST")
    np.testing.assert_allclose(y, 0.75 * x)
    _, (y,) = run_layer({"type": "Dropout", **param}, [x], phase="TRAIN")
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept])


def test_dropout_same_seed_same_mask_in_float32_and_float64(x):
    _, (y64,) = run_layer({"type": "Dropout"}, [x], seed=3)
    _, (y32,) = run_layer({"type": "Dropout"}, [x], seed=3, dtype=np.float32)
    np.testing.assert_array_equal(y64 != 0, y32 != 0)


# -- defaults -----------------------------------------------------------------------------------
def test_defaults_are_caffes():
    assert make_layer({"type": "ELU"}, [np.ones((2, 3))])[0].p.alpha == 1.0
    prelu = make_layer({"type": "PReLU"}, [np.ones((2, 3, 2))])[0]
    assert prelu.p.channel_shared is False
    np.testing.assert_array_equal(prelu.blobs[0].data, [0.25, 0.25, 0.25])
    power = make_layer({"type": "Power"}, [np.ones(2)])[0].p
    assert (power.power, power.scale, power.shift) == (1.0, 1.0, 0.0)
    for kind in ("Exp", "Log"):
        p = make_layer({"type": kind}, [np.ones(2)])[0].p
        assert (p.base, p.scale, p.shift) == (-1.0, 1.0, 0.0)
    assert make_layer({"type": "Threshold"}, [np.ones(2)])[0].p.threshold == 0.0
    dropout = make_layer({"type": "Dropout"}, [np.ones(2)])[0].p
    assert (dropout.dropout_ratio, dropout.scale_train) == (0.5, True)


# -- in place -----------------------------------------------------------------------------------
def in_place(layer, x, phase="TRAIN", seed=0):
    layer = dict(layer, name="inplace", bottom=["x"], top=["x"])
    instance, _, _ = build_layer(layer, [x.shape], phase=phase, seed=seed)
    blob = Blob(x.shape, np.float64, name="x")
    blob.data[...] = x
    instance.setup([blob], [blob])
    return instance, blob


@pytest.mark.parametrize(
    "layer",
    [
        {"type": "ELU", "elu_param": {"alpha": 0.5}},
        {"type": "PReLU", "prelu_param": {"filler": {"type": "gaussian"}}},
        {"type": "Power", "power_param": {"power": 2.5, "shift": 3}},
        {"type": "Power", "power_param": {"power": 2.7, "scale": 0.5, "shift": 3}},  # numpy's power
        {"type": "Power", "power_param": {"power": -0.5, "shift": 4}},
        {"type": "Power", "power_param": {"power": 1, "scale": -2, "shift": 1}},  # no base kept
        {"type": "Exp", "exp_param": {"base": 2}},
        {"type": "Log", "log_param": {"shift": 3}},
        {"type": "BNLL"},
        {"type": "Dropout"},
        {"type": "Threshold"},
    ],
    ids=str,
)
def test_in_place_gives_the_same_forward_and_backward(layer, x, rng):
    dy = rng.standard_normal(x.shape)
    reference, bottom, top = make_layer(layer, [x])
    reference.forward(bottom, top)
    top[0].diff[...] = dy
    reference.Backward_cpu(top, [True], bottom)
    instance, blob = in_place(layer, x)
    for p, q in zip(instance.blobs, reference.blobs):
        p.data[...] = q.data
    instance.forward([blob], [blob])
    np.testing.assert_allclose(blob.data, top[0].data, rtol=1e-12)
    blob.diff[...] = dy
    instance.Backward_cpu([blob], [True], [blob])
    np.testing.assert_allclose(blob.diff, bottom[0].diff, rtol=1e-12)
    for p, q in zip(instance.blobs, reference.blobs):
        np.testing.assert_allclose(p.diff, q.diff, rtol=1e-12)


def test_in_place_chain_in_a_net_checks():
    """PReLU, Dropout and Power keep what their backward needs, so later in-place layers may
    overwrite the blob; ELU reads its own output, so it must be the last of the chain."""
    spec = {
        "name": "chain",
        "layers": [
            {"name": "in", "type": "Input", "top": ["x", "t"], "input_param": {"shape": [{"dim": [4, 6]}]}},
            {
                "name": "ip",
                "type": "InnerProduct",
                "bottom": ["x"],
                "top": ["h"],
                "inner_product_param": {"num_output": 5, "weight_filler": {"type": "gaussian"}},
            },
            {
                "name": "prelu",
                "type": "PReLU",
                "bottom": ["h"],
                "top": ["h"],
                "prelu_param": {"filler": {"type": "gaussian"}},
            },
            {"name": "drop", "type": "Dropout", "bottom": ["h"], "top": ["h"]},
            {"name": "pow", "type": "Power", "bottom": ["h"], "top": ["h"], "power_param": {"power": 2, "shift": 1}},
            {"name": "elu", "type": "ELU", "bottom": ["h"], "top": ["h"]},  # reads its own output: last
            {
                "name": "ip2",
                "type": "InnerProduct",
                "bottom": ["h"],
                "top": ["y"],
                "inner_product_param": {"num_output": 6, "weight_filler": {"type": "gaussian"}},
            },
            {"name": "loss", "type": "EuclideanLoss", "bottom": ["y", "t"], "top": ["loss"]},
        ],
    }
    report = check_net(spec, max_elements=30)
    assert report.passed, report.table()


# -- setup errors -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "layer,shape,match",
    [
        ({"type": "Dropout", "dropout_param": {"dropout_ratio": 1.0}}, (2, 3), "dropout_ratio"),
        ({"type": "Dropout", "dropout_param": {"dropout_ratio": -0.1}}, (2, 3), "dropout_ratio"),
        ({"type": "Log", "log_param": {"base": 1}}, (2, 3), "base 1"),
        ({"type": "Log", "log_param": {"base": -2}}, (2, 3), "> 0, or -1"),
        ({"type": "Exp", "exp_param": {"base": 0}}, (2, 3), "> 0, or -1"),
        ({"type": "PReLU"}, (6,), "at least 2 axes"),
        ({"type": "ELU", "elu_param": {"alpha": "big"}}, (2, 3), "expected a number"),
    ],
    ids=str,
)
def test_setup_errors_name_the_layer(layer, shape, match):
    with pytest.raises(ConfigError, match=match) as info:
        make_layer(dict(layer, name="bad"), [np.ones(shape)])
    assert "layer 'bad'" in str(info.value)


@pytest.mark.parametrize(
    "layer",
    [
        {"type": "AbsVal"},
        {"type": "ELU", "elu_param": {"alpha": -1}},
        {"type": "ReLU", "relu_param": {"negative_slope": -0.5}},
    ],
    ids=str,
)
def test_in_place_refused_where_the_backward_needs_the_input(layer):
    with pytest.raises(ConfigError, match="in place") as info:
        in_place(layer, np.ones((2, 3)))
    assert "layer 'inplace'" in str(info.value)


def test_prelu_reshape_to_other_channels_is_an_error(x):
    layer, bottom, top = make_layer({"type": "PReLU", "name": "p"}, [x])
    bottom[0].reshape(3, 5, 5)
    with pytest.raises(ConfigError, match="4 channels") as info:
        layer.forward(bottom, top)
    assert "layer 'p'" in str(info.value)


def test_power_without_a_shift_keeps_the_sign_of_a_zero_base():
    """As Caffe's Power (which adds no shift of 0): -0 to the power -1 is -inf, and to 3 is -0."""
    x = np.array([-0.0, 0.0, 2.0], np.float32)
    for power, want in ((-1, [-np.inf, np.inf, 0.5]), (3, [-0.0, 0.0, 8.0])):
        layer, bottom, top = make_layer({"type": "Power", "power_param": {"power": power}}, [x], dtype=np.float32)
        with np.errstate(divide="ignore"):
            layer.forward(bottom, top)
        np.testing.assert_array_equal(top[0].data, want)
        np.testing.assert_array_equal(np.signbit(top[0].data), np.signbit(np.array(want)))
