"""In-place layers never change the gradients: the net runs a layer in place only where nothing
can tell, and gives it a blob of its own elsewhere (issue 9, item 1)."""

import numpy as np
import pytest

import netlayers.net
from netlayers import Net
from netlayers.gradcheck import check_net


def data_and_labels(shape):
    """An Input of x (``shape``) and class labels, one per row."""
    return {
        "name": "data",
        "type": "Input",
        "top": ["x", "label"],
        "input_param": {"shape": [{"dim": list(shape)}, {"dim": [shape[0]]}]},
    }


def inner_product(name, bottom, top):
    """A 3-output InnerProduct with gaussian weights."""
    return {
        "name": name,
        "type": "InnerProduct",
        "bottom": bottom,
        "top": top,
        "inner_product_param": {"num_output": 3, "weight_filler": {"type": "gaussian"}},
    }


def fan_out_net(layer):
    """x feeds an InnerProduct AND an in-place layer: the issue's net."""
    return {
        "name": "fan",
        "force_backward": True,
        "layers": [
            data_and_labels((4, 6)),
            inner_product("ip", "x", "y"),
            {"name": "act", "bottom": "x", "top": "x", **layer},
            inner_product("ip2", "x", "z"),
            {"name": "sum", "type": "Eltwise", "bottom": ["y", "z"], "top": "s"},
            {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["s", "label"], "top": "loss"},
        ],
    }


def renamed(spec, old, new, after):
    """The same net with blob ``old`` called ``new`` from layer ``after`` on (no in-place)."""
    layers, seen = [], False
    for layer in spec["layers"]:
        layer = dict(layer)
        if seen:
            layer["bottom"] = [new if b == old else b for b in np.atleast_1d(layer.get("bottom", []))]
        if layer["name"] == after:
            layer["top"], seen = new, True
        layers.append(layer)
    return {**spec, "layers": layers}


def gradients(spec, inputs):
    net = Net(spec, dtype=np.float64, seed=3)
    net.forward(**inputs)
    net.clear_param_diffs()
    net.backward()
    return (
        net.loss,
        {name: [b.diff.copy() for b in blobs] for name, blobs in net.params.items()},
        net.source_blobs["x"].diff.copy(),
    )


LAYERS = [
    {"type": "ReLU"},
    {"type": "AbsVal"},
    {"type": "ReLU", "relu_param": {"negative_slope": -0.5}},
    {"type": "ELU", "elu_param": {"alpha": -0.5}},
    {"type": "TanH"},
    {"type": "Sigmoid"},
    {"type": "Power", "power_param": {"scale": 2, "shift": 1}},
    {"type": "Dropout"},
    {"type": "BatchNorm"},
    {"type": "Scale", "scale_param": {"bias_term": True}},
]


@pytest.mark.parametrize("layer", LAYERS, ids=lambda layer: str(layer))
def test_an_in_place_layer_on_a_blob_that_fans_out_keeps_the_true_gradients(layer):
    spec = fan_out_net(layer)
    rng = np.random.default_rng(0)
    inputs = {"x": rng.standard_normal((4, 6)), "label": np.array([0, 2, 1, 2])}
    loss, params, dx = gradients(spec, inputs)
    ref_loss, ref_params, ref_dx = gradients(renamed(spec, "x", "x_act", "act"), inputs)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    for name in ref_params:
        for got, want in zip(params[name], ref_params[name]):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-12, atol=1e-14)
    if layer["type"] != "Dropout":
        report = check_net(spec, inputs={"label": inputs["label"]})
        assert report.passed, report.table()


def test_an_in_place_layer_after_one_that_reads_its_top_gets_its_own_blob():
    """Sigmoid's backward reads y; Power in place on y would change what it reads."""
    spec = {
        "name": "chain",
        "layers": [
            data_and_labels((4, 6)),
            inner_product("ip", "x", "y"),
            {"name": "sig", "type": "Sigmoid", "bottom": "y", "top": "y"},
            {"name": "pow", "type": "Power", "bottom": "y", "top": "y", "power_param": {"scale": 2, "shift": -1}},
            {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["y", "label"], "top": "loss"},
        ],
    }
    net = Net(spec)
    sig, pow_ = net.layer_names.index("sig"), net.layer_names.index("pow")
    assert net.top_vecs[sig][0] is net.bottom_vecs[sig][0]  # Sigmoid after ip: in place
    assert net.top_vecs[pow_][0] is not net.bottom_vecs[pow_][0]  # Power: a blob of its own
    report = check_net(spec)
    assert report.passed, report.table()


def test_the_usual_in_place_chains_stay_in_place():
    """Conv -> BatchNorm -> Scale -> ReLU, all in place, as Caffe's ResNets write them."""
    spec = {
        "name": "res",
        "layers": [
            {"name": "data", "type": "Input", "top": "x", "input_param": {"shape": {"dim": [2, 3, 5, 5]}}},
            {
                "name": "conv",
                "type": "Convolution",
                "bottom": "x",
                "top": "c",
                "convolution_param": {"num_output": 4, "kernel_size": 3},
            },
            {"name": "bn", "type": "BatchNorm", "bottom": "c", "top": "c"},
            {"name": "scale", "type": "Scale", "bottom": "c", "top": "c", "scale_param": {"bias_term": True}},
            {"name": "relu", "type": "ReLU", "bottom": "c", "top": "c"},
        ],
    }
    net = Net(spec)
    conv_top = net.top_vecs[net.layer_names.index("conv")][0]
    for name in ("bn", "scale", "relu"):
        assert net.top_vecs[net.layer_names.index(name)][0] is conv_top
    assert net.blobs["c"] is conv_top


def test_in_place_after_a_view_of_a_blob_that_fans_out_keeps_the_true_gradients():
    """Flatten's top shares its bottom's memory: ReLU in place on it would overwrite x, which
    the InnerProduct's backward still reads."""
    spec = {
        "name": "view",
        "force_backward": True,
        "layers": [
            data_and_labels((4, 2, 3)),
            inner_product("ip", "x", "y"),
            {"name": "flat", "type": "Flatten", "bottom": "x", "top": "f"},
            {"name": "neg", "type": "Power", "bottom": "f", "top": "f", "power_param": {"scale": -3}},
            inner_product("ip2", "f", "z"),
            {"name": "sum", "type": "Eltwise", "bottom": ["y", "z"], "top": "s"},
            {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["s", "label"], "top": "loss"},
        ],
    }
    net = Net(spec)
    index = net.layer_names.index("neg")
    assert net.top_vecs[index][0] is not net.bottom_vecs[index][0]
    report = check_net(spec)
    assert report.passed, report.table()


def test_the_net_names_the_newest_blob_and_keeps_the_input_as_set():
    spec = fan_out_net({"type": "AbsVal"})
    net = Net(spec, dtype=np.float64)
    x = -np.ones((4, 6))
    net.forward(x=x, label=np.zeros(4))
    np.testing.assert_array_equal(net.blobs["x"].data, 1.0)  # what later layers read
    np.testing.assert_array_equal(net.source_blobs["x"].data, -1.0)  # the input as set


def test_an_input_keeps_its_values_so_forward_repeats():
    """Power in place on an Input blob gets a blob of its own: a second forward on the same
    input gives the same output (in place it would square the squares)."""
    spec = {
        "name": "rep",
        "layers": [
            {"name": "data", "type": "Input", "top": "x", "input_param": {"shape": {"dim": [2, 3]}}},
            {"name": "sq", "type": "Power", "bottom": "x", "top": "x", "power_param": {"power": 2}},
        ],
    }
    net = Net(spec, dtype=np.float64)
    first = net.forward(x=np.full((2, 3), 3.0))["x"].copy()
    np.testing.assert_array_equal(first, 9.0)
    np.testing.assert_array_equal(net.forward()["x"], first)
    np.testing.assert_array_equal(net.source_blobs["x"].data, 3.0)


def batch_norm_scale_net(in_place_scale):
    """Conv -> BatchNorm (in place) -> Scale (in place, or to a blob of its own) -> loss."""
    scale_top = "c" if in_place_scale else "s"
    return {
        "name": "bn_scale",
        "force_backward": True,
        "layers": [
            data_and_labels((3, 2, 5, 5)),
            {
                "name": "conv",
                "type": "Convolution",
                "bottom": "x",
                "top": "c",
                "convolution_param": {"num_output": 4, "kernel_size": 3, "weight_filler": {"type": "gaussian"}},
            },
            {"name": "bn", "type": "BatchNorm", "bottom": "c", "top": "c"},
            {
                "name": "scale",
                "type": "Scale",
                "bottom": "c",
                "top": scale_top,
                "scale_param": {"bias_term": True, "filler": {"type": "gaussian"}, "bias_filler": {"type": "gaussian"}},
            },
            inner_product("ip", scale_top, "y"),
            {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["y", "label"], "top": "loss"},
        ],
    }


def test_an_in_place_scale_after_batch_norm_reads_its_normalized_values_and_keeps_no_copy(rng, monkeypatch):
    inputs = {"x": rng.standard_normal((3, 2, 5, 5)), "label": np.array([0, 2, 1])}
    with monkeypatch.context() as patch:  # the layers one by one (run fused, see tests/layers/test_fused.py)
        patch.setattr(netlayers.net, "find_chain", lambda *args: None)
        lent = Net(batch_norm_scale_net(True), dtype=np.float64, seed=3)
    scale = lent.layer("scale")
    assert lent._lenders == {lent.layer_names.index("bn")}
    for _ in range(2):  # twice: the lent values are the second forward's, too
        lent.forward(**inputs)
        lent.clear_param_diffs()
        lent.backward()
    assert not hasattr(scale, "_input")  # no copy of the input was made
    copied = Net(batch_norm_scale_net(False), dtype=np.float64, seed=3)
    for _ in range(2):
        copied.forward(**inputs)
        copied.clear_param_diffs()
        copied.backward()
    assert lent.loss == copied.loss
    for name in lent.params:
        for a, b in zip(lent.params[name], copied.params[name]):
            np.testing.assert_array_equal(a.diff, b.diff)
    np.testing.assert_array_equal(lent.source_blobs["x"].diff, copied.source_blobs["x"].diff)
    assert check_net(batch_norm_scale_net(True), seed=1, inputs=inputs).passed


def test_a_forward_that_starts_at_the_scale_copies_the_values_it_was_given(rng):
    """BatchNorm did not run in that pass: its normalized values are not the blob's."""
    net = Net(batch_norm_scale_net(True), dtype=np.float64, seed=3)
    net.forward(x=rng.standard_normal((3, 2, 5, 5)), label=np.array([0, 2, 1]))
    given = rng.standard_normal(net.blobs["c"].shape)
    net.blobs["c"].data[...] = given
    net.forward(start="scale")
    s, b = (blob.data.reshape(1, -1, 1, 1) for blob in net.params["scale"])
    np.testing.assert_allclose(net.blobs["c"].data, given * s + b, rtol=1e-12)
    net.clear_param_diffs()
    net.backward()
    scale = net.layer("scale")
    np.testing.assert_array_equal(scale._input, given)  # the copy holds what the blob held
