"""BatchNorm -> Scale [-> ReLU] run as one (netlayers.layers.fused) gives what the layers give
one by one: the same loss, blob values and gradients, param gradients and BatchNorm
statistics, to rounding; and it steps aside where it cannot tell the same story."""

import numpy as np
import pytest

import netlayers.net
from netlayers import Net
from netlayers.gradcheck import check_net
from netlayers.layers import fused


def chain_net(*, global_stats=False, slope=0.0, bias=True, first=False, relu=True, apart=False, size=5):
    """Input (4 x 3 x ``size`` x ``size``) -> [Conv ->] BatchNorm -> Scale [-> ReLU] (in place)
    -> InnerProduct -> loss; ``apart``: BatchNorm writes a blob of its own (Scale and ReLU in
    place on it), which is concatenated with BatchNorm's bottom (as in DenseNet) before the
    InnerProduct. ``size`` 2: planes of 4 positions, which the row kernels take."""
    layers = [
        {
            "name": "data",
            "type": "Input",
            "top": ["x", "label"],
            "input_param": {"shape": [{"dim": [4, 3, size, size]}, {"dim": [4]}]},
        }
    ]
    blob = "x"
    if not first:
        layers.append(
            {
                "name": "conv",
                "type": "Convolution",
                "bottom": "x",
                "top": "c",
                "convolution_param": {
                    "num_output": 6,
                    "kernel_size": 3,
                    "pad": 1,
                    "weight_filler": {"type": "gaussian"},
                },
            }
        )
        blob = "c"
    source = blob
    if apart:
        blob = "b"
    bn = {"name": "bn", "type": "BatchNorm", "bottom": source, "top": blob}
    if global_stats:
        bn["batch_norm_param"] = {"use_global_stats": True}
    layers += [
        bn,
        {
            "name": "scale",
            "type": "Scale",
            "bottom": blob,
            "top": blob,
            "scale_param": {"bias_term": bias, "filler": {"type": "gaussian"}, "bias_filler": {"type": "gaussian"}},
        },
        *(
            [{"name": "relu", "type": "ReLU", "bottom": blob, "top": blob, "relu_param": {"negative_slope": slope}}]
            if relu
            else []
        ),
        *([{"name": "cat", "type": "Concat", "bottom": [blob, source], "top": "cat"}] if apart else []),
        {
            "name": "ip",
            "type": "InnerProduct",
            "bottom": "cat" if apart else blob,
            "top": "y",
            "inner_product_param": {"num_output": 3, "weight_filler": {"type": "gaussian"}},
        },
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["y", "label"], "top": "loss"},
    ]
    return {"name": "chain", "layers": layers}


def run(spec, inputs, fused, monkeypatch, passes=2):
    """The net after ``passes`` forward + backward passes (param diffs accumulating)."""
    with monkeypatch.context() as patch:
        if not fused:
            patch.setattr(netlayers.net, "find_chain", lambda *args: None)
        net = Net(spec, dtype=np.float64, seed=3)
    if global_stats_of(net):  # give the moving averages something to hold
        mean, var, count = net.params["bn"]
        mean.data[...], var.data[...], count.data[...] = 0.3, 2.0, 1.0
    assert bool(net._chains) == fused
    net.clear_param_diffs()
    for _ in range(passes):
        net.forward(**inputs)
        net.backward()
    return net


def global_stats_of(net):
    return net.layer("bn").use_global_stats


def assert_same(fused, plain):
    assert fused.loss == pytest.approx(plain.loss, rel=1e-12)
    for name, blob in plain.blobs.items():
        np.testing.assert_allclose(fused.blobs[name].data, blob.data, rtol=1e-10, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(fused.blobs[name].diff, blob.diff, rtol=1e-9, atol=1e-12, err_msg=name)
    for name, blobs in plain.params.items():
        for i, blob in enumerate(blobs):
            np.testing.assert_allclose(fused.params[name][i].data, blob.data, rtol=1e-12, err_msg=f"{name}[{i}]")
            np.testing.assert_allclose(fused.params[name][i].diff, blob.diff, rtol=1e-9, atol=1e-12, err_msg=name)


SETTINGS = [
    {},
    {"global_stats": True},
    {"slope": 0.1},
    {"bias": False},
    {"first": True},  # right after the input: BatchNorm passes no gradient on
    {"relu": False},  # BatchNorm -> Scale alone (as before a residual sum)
    {"relu": False, "global_stats": True},
    {"relu": False, "first": True},
    {"apart": True},  # BatchNorm not in place: its bottom's gradient and the blob's, side by side
    {"apart": True, "global_stats": True},
    {"apart": True, "relu": False},
    {"apart": True, "first": True},
]


def record_fused_runs(monkeypatch):
    """What Chain.forward and Chain.backward returned (True: they ran fused)."""
    ran = {"forward": [], "backward": []}
    for method, key in (("forward", "forward"), ("backward", "backward")):
        original = getattr(fused.Chain, method)

        def recorded(self, *args, original=original, key=key):
            ran[key].append(original(self, *args))
            return ran[key][-1]

        monkeypatch.setattr(fused.Chain, method, recorded)
    return ran


@pytest.mark.parametrize("size", [5, 2])
@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: ",".join(s) or "plain")
def test_the_fused_chain_gives_the_three_layers_results(setting, size, rng, monkeypatch):
    spec = chain_net(**setting, size=size)
    inputs = {"x": rng.standard_normal((4, 3, size, size)), "label": np.array([0, 2, 1, 2])}
    ran = record_fused_runs(monkeypatch)
    with_fusion = run(spec, inputs, True, monkeypatch)
    assert ran == {"forward": [True, True], "backward": [True, True]}
    assert_same(with_fusion, run(spec, inputs, False, monkeypatch))


@pytest.mark.parametrize("size", [5, 2])
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("apart", [False, True])
def test_the_fused_chain_passes_the_gradient_check(relu, apart, size):
    report = check_net(chain_net(relu=relu, apart=apart, size=size), seed=2)
    assert report.passed, report.table()


def mlp_chain_net():
    """InnerProduct -> BatchNorm -> Scale -> ReLU -> InnerProduct -> loss: BatchNorm over
    (batch, features) values, a plane of one position."""
    ip = {"weight_filler": {"type": "gaussian"}, "bias_filler": {"type": "gaussian"}}
    layers = [
        {
            "name": "data",
            "type": "Input",
            "top": ["x", "label"],
            "input_param": {"shape": [{"dim": [6, 4]}, {"dim": [6]}]},
        },
        {
            "name": "ip1",
            "type": "InnerProduct",
            "bottom": "x",
            "top": "h",
            "inner_product_param": {**ip, "num_output": 5},
        },
        {"name": "bn", "type": "BatchNorm", "bottom": "h", "top": "h"},
        {"name": "scale", "type": "Scale", "bottom": "h", "top": "h", "scale_param": {"bias_term": True}},
        {"name": "relu", "type": "ReLU", "bottom": "h", "top": "h"},
        {
            "name": "ip2",
            "type": "InnerProduct",
            "bottom": "h",
            "top": "y",
            "inner_product_param": {**ip, "num_output": 3},
        },
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["y", "label"], "top": "loss"},
    ]
    return {"name": "mlp_chain", "layers": layers}


def test_a_chain_after_an_inner_product_runs_fused_and_checks(rng, monkeypatch):
    spec = mlp_chain_net()
    inputs = {"x": rng.standard_normal((6, 4)), "label": np.array([0, 2, 1, 2, 1, 0])}
    ran = record_fused_runs(monkeypatch)
    with_fusion = run(spec, inputs, True, monkeypatch)
    assert ran == {"forward": [True, True], "backward": [True, True]}
    assert_same(with_fusion, run(spec, inputs, False, monkeypatch))
    report = check_net(spec, seed=2)
    assert report.passed, report.table()


@pytest.mark.parametrize("relu", [True, False])
def test_the_chain_is_as_long_as_its_layers(relu):
    net = Net(chain_net(relu=relu), dtype=np.float32)
    (chain,) = net._chains.values()
    assert chain.length == (3 if relu else 2) and (chain.relu is None) != relu
    assert net._chain_ends == {chain.index + chain.length - 1: chain}


def test_a_forward_from_the_scale_on_values_set_by_hand_runs_the_layers_one_by_one(rng, monkeypatch):
    """Scale then reads the blob's values, not BatchNorm's: the fused backward must not run."""
    spec = chain_net()
    inputs = {"x": rng.standard_normal((4, 3, 5, 5)), "label": np.array([0, 2, 1, 2])}
    given = rng.standard_normal((4, 6, 5, 5))
    nets = []
    ran = record_fused_runs(monkeypatch)
    for with_fusion in (True, False):
        net = run(spec, inputs, with_fusion, monkeypatch, passes=1)
        net.blobs["c"].data[...] = given
        net.forward(start="scale")
        net.clear_param_diffs()
        net.backward()
        nets.append(net)
    assert ran["backward"] == [True, False]  # the first pass fused, the one from the Scale not
    assert_same(*nets)


@pytest.mark.parametrize("setting", [{"apart": True}, {"apart": True, "relu": False}, {"apart": True, "first": True}])
@pytest.mark.parametrize("fusion", [True, False])
def test_a_batchnorm_apart_keeps_no_normalized_values_and_gives_the_same_numbers(setting, fusion, rng, monkeypatch):
    """BatchNorm not in place makes its normalized values again from its input (for its own
    backward, the fused chain's and Scale's): the results equal those of keeping them."""
    spec = chain_net(**setting)
    inputs = {"x": rng.standard_normal((4, 3, 5, 5)), "label": np.array([0, 2, 1, 2])}
    recomputing = run(spec, inputs, fusion, monkeypatch)
    assert recomputing.layer("bn").normalized is None
    with monkeypatch.context() as patch:
        patch.setattr(netlayers.net.Net, "_let_batch_norms_recompute", lambda self: None)
        keeping = run(spec, inputs, fusion, monkeypatch)
    assert keeping.layer("bn").normalized is not None
    assert_same(recomputing, keeping)


def test_a_batchnorm_in_place_keeps_its_normalized_values():
    net = Net(chain_net(), dtype=np.float32)
    assert net.layer("bn").normalized is not None


def test_a_backward_that_ends_inside_the_chain_reads_the_remade_values(rng, monkeypatch):
    """net.backward down to the Scale runs Scale's own backward after a fused forward: it reads
    BatchNorm's normalized values made again from the input, as a kept copy would give them."""
    spec = chain_net(apart=True)
    inputs = {"x": rng.standard_normal((4, 3, 5, 5)), "label": np.array([0, 2, 1, 2])}
    nets = []
    for recompute in (True, False):
        with monkeypatch.context() as patch:
            if not recompute:
                patch.setattr(netlayers.net.Net, "_let_batch_norms_recompute", lambda self: None)
            net = Net(spec, dtype=np.float64, seed=3)
        net.clear_param_diffs()
        net.forward(**inputs)
        net.backward(end="scale")
        nets.append(net)
    assert nets[0].layer("bn").normalized is None
    for i in range(2):
        np.testing.assert_allclose(nets[0].params["scale"][i].diff, nets[1].params["scale"][i].diff, rtol=1e-12)
    assert np.abs(nets[0].params["scale"][0].diff).sum() > 0
    np.testing.assert_allclose(nets[0].blobs["b"].diff, nets[1].blobs["b"].diff, rtol=1e-12)


# -- Eltwise SUM -> ReLU (SumReLU) -------------------------------------------------------------
SHAPES = [{"dim": [4, 3, 5, 5]}, {"dim": [4]}]
IP = {"num_output": 3}


def residual_net(*, slope=0.0, data_shortcut=False, relu_apart=False, coeff=None):
    """Input -> conv -> Eltwise SUM with a shortcut -> ReLU in place -> InnerProduct -> loss. The
    shortcut is the input itself when ``data_shortcut`` (it takes no gradient), else a second
    convolution of the input (the input then fans out: a Split); ``relu_apart``: the ReLU
    writes a blob of its own (nothing to fuse)."""

    def conv(name, top):
        param = {"num_output": 3, "kernel_size": 3, "pad": 1, "weight_filler": {"type": "gaussian"}}
        return {"name": name, "type": "Convolution", "bottom": "x", "top": top, "convolution_param": param}

    shortcut = "x" if data_shortcut else "s"
    eltwise = {"name": "sum", "type": "Eltwise", "bottom": ["c", shortcut], "top": "r"}
    if coeff is not None:
        eltwise["eltwise_param"] = {"coeff": coeff}
    relu_top = "a" if relu_apart else "r"
    layers = [
        {"name": "data", "type": "Input", "top": ["x", "label"], "input_param": {"shape": SHAPES}},
        conv("conv", "c"),
        *([] if data_shortcut else [conv("shortcut", "s")]),
        eltwise,
        {"name": "relu", "type": "ReLU", "bottom": "r", "top": relu_top, "relu_param": {"negative_slope": slope}},
        {"name": "ip", "type": "InnerProduct", "bottom": relu_top, "top": "y", "inner_product_param": IP},
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["y", "label"], "top": "loss"},
    ]
    return {"name": "residual", "layers": layers}


def run_residual(spec, inputs, fused, monkeypatch, dtype=np.float64):
    with monkeypatch.context() as patch:
        if not fused:
            patch.setattr(netlayers.net, "find_sum_relu", lambda *args: None)
        net = Net(spec, dtype=dtype, seed=3)
    net.clear_param_diffs()
    for _ in range(2):
        net.forward(**inputs)
        net.backward()
    return net


def assert_identical(fused, plain):
    """The same bits: SumReLU runs the layers' operations in their order."""
    assert fused.loss == plain.loss
    for name, blob in plain.blobs.items():
        np.testing.assert_array_equal(fused.blobs[name].data, blob.data, err_msg=name)
        np.testing.assert_array_equal(fused.blobs[name].diff, blob.diff, err_msg=name)
    for name, blobs in plain.params.items():
        for i, blob in enumerate(blobs):
            np.testing.assert_array_equal(fused.params[name][i].diff, blob.diff, err_msg=f"{name}[{i}]")


@pytest.mark.parametrize("setting", [{}, {"slope": 0.1}, {"data_shortcut": True}], ids=["plain", "leaky", "data"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_residual_sum_and_relu_run_as_one_with_the_layers_results(setting, dtype, rng, monkeypatch):
    spec = residual_net(**setting)
    inputs = {"x": rng.standard_normal((4, 3, 5, 5)), "label": np.array([0, 2, 1, 2])}
    ran = []
    original = fused.SumReLU.backward
    monkeypatch.setattr(fused.SumReLU, "backward", lambda self, p: ran.append(original(self, p)) or ran[-1])
    with_fusion = run_residual(spec, inputs, True, monkeypatch, dtype)
    assert [type(c) for c in with_fusion._chains.values()] == [fused.SumReLU]
    assert ran == [True, True]
    assert_identical(with_fusion, run_residual(spec, inputs, False, monkeypatch, dtype))


@pytest.mark.parametrize("setting", [{"relu_apart": True}, {"coeff": [1, -1]}], ids=["relu-apart", "coeff"])
def test_a_sum_whose_relu_is_apart_or_weighted_is_not_fused(setting):
    net = Net(residual_net(**setting), dtype=np.float64)
    assert not any(isinstance(c, fused.SumReLU) for c in net._chains.values())


def test_the_fused_residual_sum_passes_the_gradient_check():
    report = check_net(residual_net(slope=0.1), seed=2)
    assert report.passed, report.table()
