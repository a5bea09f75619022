"""Structural layers: values against direct numpy formulas, gradients, the layer contract,
Caffe's defaults and shape rules, data sharing, and setup errors."""

import numpy as np
import pytest
from layer_harness import assert_contract, assert_gradients, make_layer, run_layer

from netlayers import ConfigError, Net
from netlayers.blob import Blob
from netlayers.gradcheck import build_layer, check_net


def assert_setup_error(layer, bottoms, match, tops=None):
    layer = dict(layer, name="bad")
    if tops:
        layer["top"] = tops
    with pytest.raises(ConfigError, match=match) as info:
        make_layer(layer, bottoms)
    assert "layer 'bad'" in str(info.value)


def backward(layer, bottom, top, dys, propagate=None):
    for t, dy in zip(top, dys):
        t.diff[...] = dy
    layer.Backward_cpu(top, propagate or [True] * len(bottom), bottom)
    return [b.diff.copy() for b in bottom]


@pytest.fixture
def x(rng):
    return rng.standard_normal((2, 3, 4))


# -- Eltwise ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "param,formula",
    [
        ({}, lambda a, b, c: a + b + c),
        ({"operation": "SUM", "coeff": [1, -2, 0.5]}, lambda a, b, c: a - 2 * b + 0.5 * c),
        ({"operation": "PROD"}, lambda a, b, c: a * b * c),
        ({"operation": "MAX"}, lambda a, b, c: np.maximum(np.maximum(a, b), c)),
    ],
    ids=lambda v: str(v) if isinstance(v, dict) else "",
)
def test_eltwise_values_and_gradients(param, formula, rng):
    bottoms = [rng.standard_normal((2, 3, 4)) for _ in range(3)]
    layer = {"type": "Eltwise", "eltwise_param": param}
    _, (y,) = run_layer(layer, bottoms)
    np.testing.assert_allclose(y, formula(*bottoms), rtol=1e-12)
    report = assert_gradients(layer, bottoms)
    assert all(b.checked >= 0.9 * b_.size for b, b_ in zip(report.blobs, bottoms)), str(report)


@pytest.mark.parametrize("stable", [True, False])
def test_eltwise_prod_gradient_both_ways(stable, rng):
    a, b, c = (rng.uniform(0.5, 2, (3, 4)) for _ in range(3))
    layer, bottom, top = make_layer(
        {"type": "Eltwise", "eltwise_param": {"operation": "PROD", "stable_prod_grad": stable}}, [a, b, c]
    )
    layer.forward(bottom, top)
    dy = rng.standard_normal(a.shape)
    da, db, dc = backward(layer, bottom, top, [dy])
    np.testing.assert_allclose(da, dy * b * c)
    np.testing.assert_allclose(db, dy * a * c)
    np.testing.assert_allclose(dc, dy * a * b)


def test_eltwise_stable_prod_grad_survives_a_zero_input():
    a, b = np.array([[0.0, 2.0]]), np.array([[3.0, 4.0]])
    layer, bottom, top = make_layer({"type": "Eltwise", "eltwise_param": {"operation": "PROD"}}, [a, b])
    layer.forward(bottom, top)
    da, db = backward(layer, bottom, top, [np.ones((1, 2))])
    np.testing.assert_array_equal(da, [[3.0, 4.0]])
    np.testing.assert_array_equal(db, [[0.0, 2.0]])


def test_eltwise_max_ties_go_to_the_first_bottom():
    a, b, c = np.array([1.0, 5.0, 2.0]), np.array([1.0, 5.0, 3.0]), np.array([0.0, 5.0, 3.0])
    layer, bottom, top = make_layer({"type": "Eltwise", "eltwise_param": {"operation": "MAX"}}, [a, b, c])
    layer.forward(bottom, top)
    da, db, dc = backward(layer, bottom, top, [np.array([10.0, 20.0, 30.0])])
    np.testing.assert_array_equal(da, [10.0, 20.0, 0.0])
    np.testing.assert_array_equal(db, [0.0, 0.0, 30.0])
    np.testing.assert_array_equal(dc, [0.0, 0.0, 0.0])


def test_eltwise_contract(rng):
    bottoms = [rng.standard_normal((2, 5)) for _ in range(2)]
    for op in ("SUM", "PROD", "MAX"):
        assert_contract({"type": "Eltwise", "eltwise_param": {"operation": op}}, bottoms)


def test_eltwise_errors(rng):
    two = [np.ones((2, 3)), np.ones((2, 3))]
    assert_setup_error({"type": "Eltwise", "eltwise_param": {"coeff": [1, 2, 3]}}, two, "one coeff per bottom")
    assert_setup_error(
        {"type": "Eltwise", "eltwise_param": {"operation": "PROD", "coeff": [1, 2]}}, two, "only for operation SUM"
    )
    assert_setup_error({"type": "Eltwise"}, [np.ones((2, 3)), np.ones((3, 2))], r"\(2, 3\).*\(3, 2\)")
    assert_setup_error({"type": "Eltwise"}, [np.ones((2, 3))], "at least 2 bottom")
    assert_setup_error({"type": "Eltwise", "eltwise_param": {"operation": "MIN"}}, two, "PROD | SUM | MAX")
    layer, _, _ = build_layer({"type": "Eltwise", "name": "bad", "bottom": ["a", "b"], "top": ["a"]}, [(2,), (2,)])
    a, b = Blob((2,), np.float64), Blob((2,), np.float64)
    with pytest.raises(ConfigError, match="in place"):
        layer.setup([a, b], [a])


# -- Scale and Bias -----------------------------------------------------------------------------
SCALE_CASES = [  # (param, operand shape seen by the bottom)
    ({}, (1, 3, 1)),
    ({"axis": 0, "num_axes": 2}, (2, 3, 1)),
    ({"axis": -1}, (1, 1, 4)),
    ({"axis": 1, "num_axes": -1}, (1, 3, 4)),
    ({"num_axes": 0}, (1, 1, 1)),
]


@pytest.mark.parametrize("param,view", SCALE_CASES, ids=str)
@pytest.mark.parametrize("bias_term", [False, True])
def test_scale_learned(param, view, bias_term, x):
    param = dict(param, filler={"type": "gaussian"}, bias_term=bias_term, bias_filler={"type": "gaussian"})
    layer_dict = {"type": "Scale", "scale_param": param}
    layer, (y,) = run_layer(layer_dict, [x])
    scale = layer.blobs[0].data
    assert scale.size == np.prod(view)
    expected = x * scale.reshape(view)
    if bias_term:
        assert layer.blobs[1].shape == layer.blobs[0].shape
        expected = expected + layer.blobs[1].data.reshape(view)
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    assert_gradients(layer_dict, [x])
    assert_contract(layer_dict, [x])


@pytest.mark.parametrize("axis,shape", [(1, (3,)), (0, (2, 3)), (1, (3, 4)), (-1, (4,)), (1, ())])
def test_scale_by_a_second_bottom(axis, shape, x, rng):
    s = rng.standard_normal(shape)
    layer = {"type": "Scale", "scale_param": {"axis": axis}}
    _, (y,) = run_layer(layer, [x, s])
    start = 0 if not shape else axis % 3
    view = (1,) * start + shape + (1,) * (3 - start - len(shape))
    np.testing.assert_allclose(y, x * s.reshape(view), rtol=1e-12)
    report = assert_gradients(layer, [x, s])
    assert [b.name for b in report.blobs] == ["bottom[0]", "bottom[1]"]
    assert_contract(layer, [x, s])


def test_scale_two_bottoms_with_bias(x, rng):
    s = rng.standard_normal((3,))
    param = {"bias_term": True, "bias_filler": {"type": "constant", "value": 2}}
    layer, (y,) = run_layer({"type": "Scale", "scale_param": param}, [x, s])
    assert len(layer.blobs) == 1 and layer.blobs[0].shape == (3,)
    np.testing.assert_allclose(y, x * s[None, :, None] + 2)
    assert_gradients({"type": "Scale", "scale_param": {"bias_term": True}}, [x, s])


def test_scale_defaults_to_identity(x):
    layer, (y,) = run_layer({"type": "Scale"}, [x])
    assert len(layer.blobs) == 1 and layer.blobs[0].shape == (3,)
    np.testing.assert_array_equal(y, x)


def test_scale_in_place_matches(x, rng):
    layer_dict = {"type": "Scale", "scale_param": {"filler": {"type": "gaussian"}, "bias_term": True}}
    reference, bottom, top = make_layer(layer_dict, [x])
    reference.forward(bottom, top)
    dy = rng.standard_normal(x.shape)
    (dx,) = backward(reference, bottom, top, [dy])
    layer, _, _ = build_layer(dict(layer_dict, name="s", bottom=["x"], top=["x"]), [x.shape])
    blob = Blob(x.shape, np.float64)
    blob.data[...] = x
    layer.setup([blob], [blob])
    for p, q in zip(layer.blobs, reference.blobs):
        p.data[...] = q.data
    layer.forward([blob], [blob])
    np.testing.assert_allclose(blob.data, top[0].data)
    blob.diff[...] = dy
    layer.Backward_cpu([blob], [True], [blob])
    np.testing.assert_allclose(blob.diff, dx)
    for p, q in zip(layer.blobs, reference.blobs):
        np.testing.assert_allclose(p.diff, q.diff)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("in_place", [False, True])
def test_scale_with_one_element_a_dim_runs_along_the_dims(workers, in_place, rng, thread_count, monkeypatch):
    """A scale of x's shape from ``axis`` on (here 3 x 700 x 1 seen as outer, dim, inner) runs
    along the dims (scale_kernels.*_rows): sums in blocks of ROW_BLOCK dims, shared out over
    the workers; the values and every gradient are the formulas', in place too."""
    from netlayers import parallel
    from netlayers.kernels import scale as scale_kernels

    thread_count(workers)
    monkeypatch.setattr(parallel, "SPLIT_MIN_BYTES", 1)
    assert 700 > 2 * scale_kernels.ROW_BLOCK
    x, dy = rng.standard_normal((3, 7, 100)), rng.standard_normal((3, 7, 100))
    param = {
        "axis": 1,
        "num_axes": -1,
        "filler": {"type": "gaussian"},
        "bias_term": True,
        "bias_filler": {"type": "gaussian"},
    }
    layer, _, _ = build_layer(
        {"name": "s", "type": "Scale", "bottom": ["x"], "top": ["x" if in_place else "y"], "scale_param": param},
        [x.shape],
    )
    bottom = Blob(x.shape, np.float64)
    top = bottom if in_place else Blob(x.shape, np.float64)
    bottom.data[...] = x
    layer.setup([bottom], [top])
    assert layer.view == (3, 700, 1)
    s, b = layer.blobs[0].data, layer.blobs[1].data
    layer.forward([bottom], [top])
    np.testing.assert_allclose(top.data, x * s + b, rtol=1e-12)
    top.diff[...] = dy
    layer.Backward_cpu([top], [True], [bottom])
    np.testing.assert_allclose(bottom.diff, dy * s, rtol=1e-12)
    np.testing.assert_allclose(layer.blobs[0].diff, (dy * x).sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(layer.blobs[1].diff, dy.sum(axis=0), rtol=1e-12)


@pytest.mark.parametrize("param,view", SCALE_CASES, ids=str)
def test_bias_learned(param, view, x):
    layer_dict = {"type": "Bias", "bias_param": dict(param, filler={"type": "gaussian"})}
    layer, (y,) = run_layer(layer_dict, [x])
    np.testing.assert_allclose(y, x + layer.blobs[0].data.reshape(view), rtol=1e-12)
    assert_gradients(layer_dict, [x])
    assert_contract(layer_dict, [x])


def test_bias_by_a_second_bottom_and_defaults(x, rng):
    b = rng.standard_normal((3, 4))
    _, (y,) = run_layer({"type": "Bias"}, [x, b])
    np.testing.assert_allclose(y, x + b[None])
    assert_gradients({"type": "Bias"}, [x, b])
    layer, (y,) = run_layer({"type": "Bias"}, [x])
    assert layer.blobs[0].shape == (3,) and not layer.blobs[0].data.any()
    np.testing.assert_array_equal(y, x)


def test_scale_and_bias_errors(x):
    for kind in ("Scale", "Bias"):
        block = "scale_param" if kind == "Scale" else "bias_param"
        assert_setup_error({"type": kind, block: {"axis": 2, "num_axes": 2}}, [x], "goes past")
        assert_setup_error({"type": kind, block: {"axis": 3}}, [x], "out of range")
        assert_setup_error({"type": kind, block: {"num_axes": -2}}, [x], "num_axes")
        assert_setup_error({"type": kind}, [x, np.ones((4,))], r"shape \(4,\) does not match")


# -- Concat and Slice ---------------------------------------------------------------------------
@pytest.mark.parametrize("param,axis", [({}, 1), ({"axis": 0}, 0), ({"axis": -1}, 2), ({"concat_dim": 2}, 2)], ids=str)
def test_concat(param, axis, rng):
    shapes = [[2, 3, 4], [2, 3, 4], [2, 3, 4]]
    for i, s in enumerate(shapes):
        s[axis] = i + 1
    bottoms = [rng.standard_normal(s) for s in shapes]
    layer = {"type": "Concat", "concat_param": param}
    _, (y,) = run_layer(layer, bottoms)
    np.testing.assert_array_equal(y, np.concatenate(bottoms, axis=axis))
    assert_gradients(layer, bottoms)
    assert_contract(layer, bottoms)


def test_concat_single_bottom_shares_data(x):
    layer, bottom, top = make_layer({"type": "Concat"}, [x])
    layer.forward(bottom, top)
    assert np.shares_memory(top[0].data, bottom[0].data)
    assert_gradients({"type": "Concat"}, [x])


def test_concat_errors(x):
    assert_setup_error({"type": "Concat"}, [x, np.ones((2, 3, 5))], r"except on the concat axis 1.*\(2, 3, 5\)")
    assert_setup_error({"type": "Concat"}, [x, np.ones((2, 3))], "except on the concat axis")
    assert_setup_error({"type": "Concat", "concat_param": {"axis": 1, "concat_dim": 1}}, [x, x], "not both")
    assert_setup_error({"type": "Concat", "concat_param": {"concat_dim": 3}}, [x, x], "concat_dim 3 is out of range")
    assert_setup_error({"type": "Concat", "concat_param": {"axis": -4}}, [x, x], "out of range")


@pytest.mark.parametrize(
    "param,tops,bounds",
    [
        ({"slice_point": [1]}, 2, [0, 1, 3]),
        ({"axis": 2, "slice_point": [1, 3]}, 3, [0, 1, 3, 4]),
        ({"axis": -1}, 2, [0, 2, 4]),
        ({"axis": 0}, 2, [0, 1, 2]),
        ({"slice_dim": 2, "slice_point": [2]}, 2, [0, 2, 4]),
    ],
    ids=str,
)
def test_slice(param, tops, bounds, x):
    layer = {"type": "Slice", "slice_param": param, "top": [f"t{i}" for i in range(tops)]}
    axis = param.get("axis", param.get("slice_dim", 1)) % 3
    _, ys = run_layer(layer, [x])
    for y, start, stop in zip(ys, bounds, bounds[1:]):
        np.testing.assert_array_equal(y, np.take(x, np.arange(start, stop), axis=axis))
    assert_gradients(layer, [x])
    assert_contract(layer, [x])


def test_slice_single_top_shares_data(x):
    layer, bottom, top = make_layer({"type": "Slice"}, [x])
    assert np.shares_memory(top[0].data, bottom[0].data)
    assert_gradients({"type": "Slice"}, [x])


def test_slice_errors(x):
    two = ["a", "b"]
    assert_setup_error({"type": "Slice"}, [np.ones((2, 3))], "does not split evenly into 2 tops", tops=two)
    assert_setup_error({"type": "Slice", "slice_param": {"slice_point": [1, 2]}}, [x], "one fewer", tops=two)
    assert_setup_error({"type": "Slice", "slice_param": {"slice_point": [3]}}, [x], "increase strictly", tops=two)
    assert_setup_error({"type": "Slice", "slice_param": {"slice_point": [0]}}, [x], ">= 1", tops=two)
    assert_setup_error(
        {"type": "Slice", "slice_param": {"slice_point": [2, 1]}}, [x], "increase strictly", tops=["a", "b", "c"]
    )
    assert_setup_error({"type": "Slice", "slice_param": {"axis": 1, "slice_dim": 1}}, [x], "not both", tops=two)


# -- Flatten, Reshape ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "param,shape",
    [
        ({}, (2, 60)),
        ({"axis": 0}, (120,)),
        ({"axis": 1, "end_axis": 2}, (2, 12, 5)),
        ({"axis": -2}, (2, 3, 20)),
        ({"axis": 2, "end_axis": 2}, (2, 3, 4, 5)),
    ],
)
def test_flatten(param, shape, rng):
    x = rng.standard_normal((2, 3, 4, 5))
    layer, bottom, top = make_layer({"type": "Flatten", "flatten_param": param}, [x])
    layer.forward(bottom, top)
    assert top[0].shape == shape
    np.testing.assert_array_equal(top[0].data, x.reshape(shape))
    assert np.shares_memory(top[0].data, bottom[0].data)
    assert_gradients({"type": "Flatten", "flatten_param": param}, [x])


@pytest.mark.parametrize(
    "param,bottom_shape,shape",
    [
        ({"shape": {"dim": [2, 2, 4]}}, (2, 8), (2, 2, 4)),  # caffe.proto's examples
        ({"shape": {"dim": [2, 4]}, "axis": 1}, (2, 8), (2, 2, 4)),
        ({"shape": {"dim": [2, 4]}, "axis": -2}, (2, 8), (2, 2, 4)),
        ({"shape": {"dim": [1, 2]}, "num_axes": 1}, (2, 8), (1, 2, 8)),
        ({"shape": {"dim": [1]}, "num_axes": 0}, (2, 8), (1, 2, 8)),
        ({"shape": {"dim": [1]}, "axis": 1, "num_axes": 0}, (2, 8), (2, 1, 8)),
        ({"shape": {"dim": [1]}, "axis": -1, "num_axes": 0}, (2, 8), (2, 8, 1)),
        ({"shape": {"dim": [0, -1]}}, (2, 3, 4), (2, 12)),
        ({"shape": {"dim": [-1, 0]}}, (2, 3, 4), (8, 3)),
        ({"shape": {"dim": [0, 0, 2, -1]}}, (2, 3, 4), (2, 3, 2, 2)),
        ({"shape": {"dim": [-1]}, "axis": 1}, (2, 3, 4), (2, 12)),
        ({"shape": {"dim": [3, -1]}, "axis": 1, "num_axes": 1}, (2, 3, 4), (2, 3, 1, 4)),
    ],
)
def test_reshape_follows_caffe(param, bottom_shape, shape, rng):
    x = rng.standard_normal(bottom_shape)
    layer, bottom, top = make_layer({"type": "Reshape", "reshape_param": param}, [x])
    layer.forward(bottom, top)
    assert top[0].shape == shape
    np.testing.assert_array_equal(top[0].data, x.reshape(shape))
    assert np.shares_memory(top[0].data, bottom[0].data)
    dy = rng.standard_normal(shape)
    (dx,) = backward(layer, bottom, top, [dy])
    np.testing.assert_array_equal(dx, dy.reshape(bottom_shape))
    assert_gradients({"type": "Reshape", "reshape_param": param}, [x])


def test_reshape_follows_a_new_bottom_shape(rng):
    layer, bottom, top = make_layer(
        {"type": "Reshape", "reshape_param": {"shape": {"dim": [0, -1]}}}, [np.zeros((2, 3, 4))]
    )
    bottom[0].reshape(5, 2, 2)
    bottom[0].data[...] = rng.standard_normal((5, 2, 2))
    layer.forward(bottom, top)
    assert top[0].shape == (5, 4)
    np.testing.assert_array_equal(top[0].data, bottom[0].data.reshape(5, 4))


@pytest.mark.parametrize(
    "param,match",
    [
        ({"shape": {"dim": [-1, -1]}}, "more than one -1"),
        ({"shape": {"dim": [5, -1]}}, "not a multiple of 5"),
        ({"shape": {"dim": [2, 5]}}, "24 values"),
        ({"shape": {"dim": [0, 0, 0, 0]}}, "no axis 3 to copy"),
        ({"shape": {"dim": [2, -2, 6]}}, ">= -1, got -2"),
        ({"shape": {"dim": [12]}, "axis": 4}, "axis 4 is out of range"),
        ({"shape": {"dim": [12]}, "axis": 1, "num_axes": 3}, "goes past"),
        ({}, "values"),
    ],
    ids=str,
)
def test_reshape_errors(param, match):
    assert_setup_error({"type": "Reshape", "reshape_param": param}, [np.ones((2, 3, 4))], match)


def test_view_layers_refuse_in_place():
    for kind in ("Flatten", "Reshape"):
        layer, _, _ = build_layer({"type": kind, "name": "bad", "bottom": ["x"], "top": ["x"]}, [(2, 3)])
        blob = Blob((2, 3), np.float64)
        with pytest.raises(ConfigError, match="in place"):
            layer.setup([blob], [blob])


def test_view_layers_in_a_net_with_fan_out():
    """Reshape and Flatten tops share data with their bottoms and feed Splits: the whole net's
    gradient still checks."""
    spec = {
        "name": "views",
        "layers": [
            {"name": "in", "type": "Input", "top": ["x"], "input_param": {"shape": [{"dim": [2, 3, 4]}]}},
            {
                "name": "r",
                "type": "Reshape",
                "bottom": ["x"],
                "top": ["r"],
                "reshape_param": {"shape": {"dim": [0, -1]}},
            },
            {"name": "f", "type": "Flatten", "bottom": ["x"], "top": ["f"]},
            {
                "name": "e",
                "type": "Eltwise",
                "bottom": ["r", "f"],
                "top": ["e"],
                "eltwise_param": {"operation": "PROD"},
            },
            {"name": "s", "type": "Scale", "bottom": ["e"], "top": ["s"], "scale_param": {"axis": 0}},
            {"name": "cat", "type": "Concat", "bottom": ["s", "r"], "top": ["c"]},
            {"name": "sl", "type": "Slice", "bottom": ["c"], "top": ["a", "b"], "slice_param": {"slice_point": [5]}},
            {"name": "t", "type": "Tile", "bottom": ["a"], "top": ["ta"], "tile_param": {"tiles": 2}},
            {
                "name": "red",
                "type": "Reduction",
                "bottom": ["ta"],
                "top": ["loss"],
                "reduction_param": {"operation": "SUMSQ"},
                "loss_weight": 1,
            },
            {"name": "red2", "type": "Reduction", "bottom": ["b"], "top": ["loss2"], "loss_weight": 0.5},
        ],
    }
    report = check_net(spec)
    assert report.passed, report.table()
    net = Net(spec, seed=0)
    net.forward()
    assert np.shares_memory(net.blobs["r"].data, net.blobs["x"].data)


# -- Silence ------------------------------------------------------------------------------------
def test_silence_consumes_and_zeroes_the_gradient(x):
    layer, _, _ = build_layer({"type": "Silence", "name": "quiet", "bottom": ["a", "b"], "top": []}, [x.shape, (3,)])
    bottom = [Blob(x.shape, np.float64), Blob((3,), np.float64)]
    for b in bottom:
        b.diff[...] = 5
    layer.setup(bottom, [])
    layer.forward(bottom, [])
    layer.Backward_cpu([], [True, False], bottom)
    assert not bottom[0].diff.any()
    np.testing.assert_array_equal(bottom[1].diff, 5)
    net = Net(
        {
            "name": "s",
            "layers": [
                {"name": "in", "type": "Input", "top": ["x"], "input_param": {"shape": [{"dim": [2]}]}},
                {"name": "quiet", "type": "Silence", "bottom": ["x"]},
            ],
        },
        seed=0,
    )
    net.forward()
    assert net.outputs == []


def test_silence_gradient_checks_as_zero(x):
    report = assert_gradients({"type": "Silence", "top": []}, [x])
    assert report["bottom[0]"].checked == x.size


# -- Reduction ----------------------------------------------------------------------------------
@pytest.mark.parametrize("op", [None, "SUM", "ASUM", "SUMSQ", "MEAN"])
@pytest.mark.parametrize("axis", [None, 1, -1, 2])
def test_reduction(op, axis, x):
    param = {}
    if op:
        param["operation"] = op
    if axis is not None:
        param["axis"] = axis
    param["coeff"] = 1.0 if op is None else -0.5
    layer = {"type": "Reduction", "reduction_param": param}
    start = 0 if axis is None else axis % 3
    flat = x.reshape(x.shape[:start] + (-1,))
    expected = {
        None: flat.sum(-1),
        "SUM": flat.sum(-1),
        "ASUM": np.abs(flat).sum(-1),
        "SUMSQ": (flat**2).sum(-1),
        "MEAN": flat.mean(-1),
    }[op] * param["coeff"]
    _, (y,) = run_layer(layer, [x])
    assert y.shape == x.shape[:start]
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    report = assert_gradients(layer, [x])
    assert report["bottom[0]"].checked == x.size


def test_reduction_contract_and_asum_kink(x):
    assert_contract({"type": "Reduction", "reduction_param": {"operation": "ASUM", "axis": 1}}, [x])
    layer, bottom, top = make_layer(
        {"type": "Reduction", "reduction_param": {"operation": "ASUM"}}, [np.array([-2.0, 0.0, 3.0])]
    )
    layer.forward(bottom, top)
    (dx,) = backward(layer, bottom, top, [np.array(2.0)])
    np.testing.assert_array_equal(dx, [-2.0, 0.0, 2.0])


def test_reduction_errors(x):
    assert_setup_error({"type": "Reduction", "reduction_param": {"axis": 3}}, [x], "out of range")
    assert_setup_error({"type": "Reduction", "reduction_param": {"operation": "PROD"}}, [x], "SUM | ASUM")


# -- ArgMax -------------------------------------------------------------------------------------
def argmax_reference(v, k):
    """Indices of the k largest, largest first, ties to the larger index (Caffe's order)."""
    order = sorted(range(len(v)), key=lambda i: (v[i], i), reverse=True)
    return order[:k]


@pytest.mark.parametrize("top_k", [1, 3])
@pytest.mark.parametrize("out_max_val", [False, True])
def test_argmax_without_axis(top_k, out_max_val, rng):
    x = rng.integers(0, 5, (3, 2, 4)).astype(float)  # ties on purpose
    layer = {"type": "ArgMax", "argmax_param": {"top_k": top_k, "out_max_val": out_max_val}}
    _, (y,) = run_layer(layer, [x])
    assert y.shape == (3, 2 if out_max_val else 1, top_k)
    for n in range(3):
        v = x[n].reshape(-1)
        index = argmax_reference(v, top_k)
        np.testing.assert_array_equal(y[n, 0], index)
        if out_max_val:
            np.testing.assert_array_equal(y[n, 1], v[index])


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize("out_max_val", [False, True])
def test_argmax_with_axis(axis, top_k, out_max_val, rng):
    x = rng.integers(0, 4, (3, 4, 5)).astype(float)
    layer = {"type": "ArgMax", "argmax_param": {"top_k": top_k, "out_max_val": out_max_val, "axis": axis}}
    _, (y,) = run_layer(layer, [x])
    moved = np.moveaxis(x, axis, -1)
    expected = np.empty(moved.shape[:-1] + (top_k,))
    for index in np.ndindex(*moved.shape[:-1]):
        best = argmax_reference(moved[index], top_k)
        expected[index] = moved[index][best] if out_max_val else best
    np.testing.assert_array_equal(y, np.moveaxis(expected, -1, axis))


def test_argmax_pads_to_three_axes_and_has_no_backward():
    layer, (y,) = run_layer({"type": "ArgMax"}, [np.array([[1.0, 3.0, 2.0], [0.0, -1.0, -2.0]])])
    assert y.shape == (2, 1, 1)
    np.testing.assert_array_equal(y.reshape(-1), [1, 0])
    assert layer.has_backward is False and not layer.allow_force_backward(0)
    assert (layer.p.out_max_val, layer.p.top_k, layer.p.axis) == (False, 1, None)


def test_argmax_errors(x):
    assert_setup_error({"type": "ArgMax", "argmax_param": {"top_k": 13}}, [x], "top_k 13 is more than the 12")
    assert_setup_error({"type": "ArgMax", "argmax_param": {"top_k": 4, "axis": 1}}, [x], "top_k 4 is more")
    assert_setup_error({"type": "ArgMax", "argmax_param": {"top_k": 0}}, [x], ">= 1, got 0")


# -- Tile ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("axis", [0, 1, 2, -1])
@pytest.mark.parametrize("tiles", [1, 3])
def test_tile(axis, tiles, x):
    layer = {"type": "Tile", "tile_param": {"axis": axis, "tiles": tiles}}
    _, (y,) = run_layer(layer, [x])
    reps = [1, 1, 1]
    reps[axis] = tiles
    np.testing.assert_array_equal(y, np.tile(x, reps))
    assert_gradients(layer, [x])


def test_tile_backward_sums_the_copies_and_errors(x, rng):
    layer, bottom, top = make_layer({"type": "Tile", "tile_param": {"tiles": 2}}, [x])
    layer.forward(bottom, top)
    dy = rng.standard_normal((2, 6, 4))
    (dx,) = backward(layer, bottom, top, [dy])
    np.testing.assert_allclose(dx, dy[:, :3] + dy[:, 3:])
    assert_contract({"type": "Tile", "tile_param": {"tiles": 2}}, [x])
    assert_setup_error({"type": "Tile"}, [x], "is required")
    assert_setup_error({"type": "Tile", "tile_param": {"tiles": 0}}, [x], ">= 1, got 0")


# -- defaults -----------------------------------------------------------------------------------
def test_structure_defaults_are_caffes(x):
    assert make_layer({"type": "Eltwise"}, [x, x])[0].p.operation == "SUM"
    assert make_layer({"type": "Eltwise"}, [x, x])[0].p.stable_prod_grad is True
    _, (y,) = run_layer({"type": "Concat"}, [x, x])
    assert y.shape == (2, 6, 4)
    _, (y,) = run_layer({"type": "Flatten"}, [x])
    assert y.shape == (2, 12)
    _, (y,) = run_layer({"type": "Reduction"}, [x])
    assert y.shape == () and float(y) == pytest.approx(x.sum())
    scale = make_layer({"type": "Scale"}, [x])[0].p
    assert (scale.axis, scale.num_axes, scale.bias_term) == (1, 1, False)
    bias = make_layer({"type": "Bias"}, [x])[0].p
    assert (bias.axis, bias.num_axes) == (1, 1)


# -- large blobs: the copies shared out over two workers -----------------------------------------
@pytest.mark.parametrize(
    "layer, shapes, tops",
    [
        ({"type": "Concat"}, [(6, 40, 33, 35), (6, 24, 33, 35)], 1),
        ({"type": "Concat", "concat_param": {"axis": 0}}, [(5, 50, 40, 40), (3, 50, 40, 40)], 1),
        ({"type": "Slice", "slice_param": {"slice_point": [24]}}, [(6, 64, 33, 35)], 2),
        ({"type": "Eltwise"}, [(6, 64, 33, 35), (6, 64, 33, 35)], 1),
        ({"type": "Eltwise", "eltwise_param": {"coeff": [1, -0.5]}}, [(6, 64, 33, 35), (6, 64, 33, 35)], 1),
        ({"type": "Bias", "bias_param": {"filler": {"type": "gaussian"}}}, [(6, 64, 33, 35)], 1),
        ({"type": "Bias"}, [(6, 64, 33, 35), (64,)], 1),
    ],
)
def test_copies_of_large_blobs_shared_over_two_workers_give_the_numpy_results(layer, shapes, tops, rng, thread_count):
    thread_count(2)
    layer = dict(layer, top=[f"t{i}" for i in range(tops)])
    xs = [rng.standard_normal(shape) for shape in shapes]
    assert xs[0].nbytes >= 2 * (1 << 20)  # above parallel.SPLIT_MIN_BYTES: the copies are cut
    instance, bottom, top = make_layer(layer, xs)
    instance.forward(bottom, top)
    dys = [rng.standard_normal(t.shape) for t in top]
    grads = backward(instance, bottom, top, dys)
    kind = layer["type"]
    if kind == "Concat":
        axis = layer.get("concat_param", {}).get("axis", 1)
        np.testing.assert_array_equal(top[0].data, np.concatenate(xs, axis=axis))
        cuts = np.cumsum([x.shape[axis] for x in xs])[:-1]
        for grad, want in zip(grads, np.split(dys[0], cuts, axis=axis)):
            np.testing.assert_array_equal(grad, want)
    elif kind == "Bias":
        b = xs[1] if len(xs) > 1 else instance.blobs[0].data
        np.testing.assert_array_equal(top[0].data, xs[0] + b[:, None, None])
        np.testing.assert_array_equal(grads[0], dys[0])
        db = grads[1] if len(xs) > 1 else instance.blobs[0].diff
        np.testing.assert_allclose(db, dys[0].sum(axis=(0, 2, 3)), rtol=1e-12)
    elif kind == "Slice":
        for t, want in zip(top, np.split(xs[0], [24], axis=1)):
            np.testing.assert_array_equal(t.data, want)
        np.testing.assert_array_equal(grads[0], np.concatenate(dys, axis=1))
    else:
        coeffs = layer.get("eltwise_param", {}).get("coeff", [1, 1])
        np.testing.assert_allclose(top[0].data, coeffs[0] * xs[0] + coeffs[1] * xs[1], rtol=1e-15)
        for grad, c in zip(grads, coeffs):
            np.testing.assert_array_equal(grad, c * dys[0])
