"""ONNX export (netlayers/export_onnx.py, netlayers/cli/export.py): every exported net runs in
onnxruntime on the same random float32 input and agrees with netlayers' forward to 1e-5
relative (the largest difference over the largest value, per output), with random weights
(nonzero biases, BatchNorm statistics with a scale factor other than 1) so that a wrong mapping
fails."""

import sys

import numpy as np
import onnxruntime
import pytest
import yaml

import netlayers
from netlayers.cli import main as cli_main
from netlayers.deploy import deploy_net
from netlayers.errors import ConfigError
from netlayers.export_onnx import ONNX_MISSING, ExportError, export_onnx

TOLERANCE = 1e-5


def input_layer(name, shape):
    return {"name": name, "type": "Input", "top": name, "input_param": {"shape": [{"dim": list(shape)}]}}


def build(layers, inputs, name="net"):
    """A TEST net fed by Input layers ``inputs`` ({top: shape}) with random params."""
    net = netlayers.Net(
        {"name": name, "layers": [input_layer(top, shape) for top, shape in inputs.items()] + layers}, "TEST"
    )
    rng = np.random.default_rng(7)
    for layer in net.layers:
        for blob in layer.blobs:  # weights xavier-like (no saturated softmax), biases +-0.5
            fan_in = blob.count // blob.shape[0] if blob.num_axes > 1 else 1
            blob.data[...] = rng.uniform(-1, 1, blob.shape) * min(np.sqrt(3 / fan_in), 0.5)
        if layer.type == "BatchNorm":
            channels = layer.blobs[0].shape
            layer.blobs[0].data[...] = rng.normal(0, 1, channels) * 3.5
            layer.blobs[1].data[...] = rng.uniform(0.2, 2, channels) * 3.5
            layer.blobs[2].data[...] = 3.5
    return net


def run_onnx(path, feeds):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds))), session


def relative_error(got, expected):
    assert got.shape == expected.shape
    return float(np.abs(got.astype(np.float64) - expected).max() / max(np.abs(expected).max(), 1e-30))


def assert_exports(net, tmp_path, inputs=None, positive=False):
    """Export ``net``, run it in onnxruntime on random inputs, compare every output; returns
    the session."""
    rng = np.random.default_rng(3)
    shapes = {name: net.blobs[name].shape for name in net.inputs}
    feeds = inputs or {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}
    if positive:
        feeds = {name: np.abs(value) + 0.1 for name, value in feeds.items()}
    expected = {name: value.copy() for name, value in net.forward(**feeds).items()}
    path = export_onnx(net, tmp_path / f"{net.name}.onnx")
    got, session = run_onnx(path, feeds)
    assert set(got) == set(expected)
    for name in expected:
        assert relative_error(got[name], expected[name]) <= TOLERANCE, name
    return session


def deploy_layers(config):
    """A config's TEST layers without data, accuracy and loss layers."""
    with open(config) as handle:
        layers = yaml.safe_load(handle)["layers"]
    return [layer for layer in layers if layer["type"] not in ("Data", "Accuracy", "SoftmaxWithLoss")]


def test_lenet_agrees_and_keeps_the_batch_open(tmp_path):
    layers = deploy_layers("configs/lenet_fashion_mnist.yaml")
    layers.append({"name": "prob", "type": "Softmax", "bottom": "ip2", "top": "prob"})
    net = build(layers, {"data": (3, 1, 28, 28)}, "lenet")
    session = assert_exports(net, tmp_path)
    assert session.get_inputs()[0].shape == ["batch", 1, 28, 28]
    x = np.random.default_rng(5).standard_normal((5, 1, 28, 28)).astype(np.float32)
    got, _ = run_onnx(tmp_path / "lenet.onnx", {"data": x})
    assert relative_error(got["prob"], net.forward(data=x)["prob"]) <= TOLERANCE


def test_mlp_agrees(tmp_path):
    net = build(deploy_layers("configs/mlp_fashion_mnist.yaml"), {"data": (4, 1, 28, 28)}, "mlp")
    assert_exports(net, tmp_path)


def conv(name, bottom, top, **param):
    return {"name": name, "type": "Convolution", "bottom": bottom, "top": top, "convolution_param": param}


def test_batch_norm_scale_relu_chain_agrees(tmp_path):
    layers = [
        conv("conv", "x", "c", num_output=4, kernel_size=3, pad=1),
        {"name": "bn", "type": "BatchNorm", "bottom": "c", "top": "c"},
        {"name": "scale", "type": "Scale", "bottom": "c", "top": "c", "scale_param": {"bias_term": True}},
        {"name": "relu", "type": "ReLU", "bottom": "c", "top": "c"},
        {"name": "bn2", "type": "BatchNorm", "bottom": "c", "top": "d", "batch_norm_param": {"eps": 0.01}},
    ]
    assert_exports(build(layers, {"x": (2, 3, 6, 6)}, "bn"), tmp_path)


def test_lrn_across_and_within_channels_agree(tmp_path):
    layers = [
        {
            "name": "across",
            "type": "LRN",
            "bottom": "x",
            "top": "a",
            "lrn_param": {"local_size": 5, "alpha": 0.3, "beta": 0.75, "k": 2},
        },
        {
            "name": "within",
            "type": "LRN",
            "bottom": "x",
            "top": "w",
            "lrn_param": {"local_size": 3, "alpha": 0.7, "beta": 0.6, "norm_region": "WITHIN_CHANNEL"},
        },
    ]
    assert_exports(
        build(layers, {"x": (2, 7, 5, 6)}, "lrn"),
        tmp_path,
        inputs={"x": np.random.default_rng(1).normal(0, 2, (2, 7, 5, 6)).astype(np.float32)},
    )


def test_grouped_dilated_and_per_axis_convolutions_agree(tmp_path):
    layers = [
        conv("grouped", "x", "g", num_output=6, kernel_size=3, group=2, stride=2, pad=1),
        conv("dilated", "x", "d", num_output=3, kernel_size=3, dilation=2, pad=2, bias_term=False),
        conv("per_axis", "x", "p", num_output=2, kernel_h=3, kernel_w=2, pad_h=1, pad_w=0, stride_h=2, stride_w=1),
        conv("depthwise", "x", "w", num_output=4, kernel_size=3, group=4),
    ]
    assert_exports(build(layers, {"x": (2, 4, 9, 8)}, "conv"), tmp_path)


def test_deconvolution_agrees(tmp_path):
    layers = [
        {
            "name": "up",
            "type": "Deconvolution",
            "bottom": "x",
            "top": "u",
            "convolution_param": {"num_output": 4, "kernel_size": 4, "stride": 2, "pad": 1, "group": 2},
        },
        {
            "name": "up3",
            "type": "Deconvolution",
            "bottom": "x",
            "top": "v",
            "convolution_param": {"num_output": 3, "kernel_size": 3, "stride": 3, "dilation": 2, "bias_term": False},
        },
    ]
    assert_exports(build(layers, {"x": (2, 4, 5, 6)}, "deconv"), tmp_path)


def test_concat_and_eltwise_agree(tmp_path):
    layers = [
        {"name": "cat", "type": "Concat", "bottom": ["a", "b"], "top": "cat"},
        {"name": "cat0", "type": "Concat", "bottom": ["a", "b"], "top": "cat0", "concat_param": {"axis": 0}},
        {
            "name": "sum",
            "type": "Eltwise",
            "bottom": ["a", "b", "a"],
            "top": "sum",
            "eltwise_param": {"coeff": [0.5, -2, 1]},
        },
        {"name": "plain_sum", "type": "Eltwise", "bottom": ["a", "b"], "top": "plain_sum"},
        {
            "name": "prod",
            "type": "Eltwise",
            "bottom": ["a", "b", "b"],
            "top": "prod",
            "eltwise_param": {"operation": "PROD"},
        },
        {
            "name": "max",
            "type": "Eltwise",
            "bottom": ["a", "b", "a"],
            "top": "max",
            "eltwise_param": {"operation": "MAX"},
        },
    ]
    assert_exports(build(layers, {"a": (2, 3, 4, 4), "b": (2, 3, 4, 4)}, "eltwise"), tmp_path)


@pytest.mark.parametrize("pool", ["MAX", "AVE"])
def test_pooling_with_caffe_ceil_rounding_agrees(tmp_path, pool):
    """Sizes where ceil and floor differ, with and without pad, one where Caffe drops a last
    window starting in the padding (width 8 + pad 1, kernel 2, stride 3: 3 windows, not 4),
    FLOOR rounding and global pooling."""
    geometries = {
        "no_pad": {"kernel_size": 3, "stride": 2},
        "pad": {"kernel_size": 3, "stride": 2, "pad": 1},
        "per_axis": {"kernel_h": 3, "kernel_w": 2, "stride_h": 2, "stride_w": 3, "pad_h": 1, "pad_w": 1},
        "dropped": {"kernel_size": 2, "stride": 3, "pad": 1},
        "floor": {"kernel_size": 3, "stride": 2, "pad": 1, "round_mode": "FLOOR"},
        "global": {"global_pooling": True},
    }
    layers = [
        {"name": name, "type": "Pooling", "bottom": "x", "top": name, "pooling_param": {"pool": pool, **geometry}}
        for name, geometry in geometries.items()
    ]
    net = build(layers, {"x": (2, 3, 6, 8)}, f"pool_{pool}")
    assert net.blobs["no_pad"].shape[2:] == (3, 4)  # floor would give (2, 3)
    assert net.blobs["pad"].shape[2:] == (4, 5)  # floor: (3, 4)
    assert net.blobs["dropped"].shape[2:] == (3, 3)
    assert_exports(net, tmp_path)


def neuron(name, kind, bottom, top=None, **param):
    block = {f"{kind.lower()}_param": param} if param else {}
    return {"name": name, "type": kind, "bottom": bottom, "top": top or name, **block}


def test_every_activation_agrees(tmp_path):
    layers = [
        neuron("relu", "ReLU", "x"),
        {"name": "leaky", "type": "ReLU", "bottom": "x", "top": "leaky", "relu_param": {"negative_slope": 0.1}},
        neuron("sigmoid", "Sigmoid", "x"),
        {"name": "tanh", "type": "TanH", "bottom": "x", "top": "tanh"},
        neuron("elu", "ELU", "x", alpha=0.5),
        {"name": "abs", "type": "AbsVal", "bottom": "x", "top": "abs"},
        {"name": "bnll", "type": "BNLL", "bottom": "x", "top": "bnll"},
        neuron("power", "Power", "abs", power=1.5, scale=0.5, shift=1),
        neuron("square", "Power", "x", "square", power=2, scale=-2, shift=1),
        neuron("constant", "Power", "x", "constant", power=2, scale=0, shift=3),
        neuron("exp", "Exp", "x", base=2, scale=0.5, shift=1),
        neuron("natural_exp", "Exp", "x", "natural_exp"),
        neuron("log", "Log", "sigmoid", base=10, scale=0.5, shift=3),
        neuron("ln", "Log", "abs", "ln", shift=1),
        {"name": "prelu", "type": "PReLU", "bottom": "x", "top": "prelu"},
        {
            "name": "threshold",
            "type": "Threshold",
            "bottom": "x",
            "top": "threshold",
            "threshold_param": {"threshold": 0.2},
        },
        {
            "name": "dropout",
            "type": "Dropout",
            "bottom": "x",
            "top": "dropout",
            "dropout_param": {"scale_train": False},
        },
        {"name": "dropout_plain", "type": "Dropout", "bottom": "x", "top": "dropout_plain"},
    ]
    inputs = {"x": np.random.default_rng(2).normal(0, 3, (2, 3, 4, 5)).astype(np.float32)}
    assert_exports(build(layers, {"x": (2, 3, 4, 5)}, "activations"), tmp_path, inputs=inputs)


def test_shape_layers_softmax_and_broadcasts_agree(tmp_path):
    layers = [
        {
            "name": "reshape",
            "type": "Reshape",
            "bottom": "x",
            "top": "r",
            "reshape_param": {"shape": {"dim": [0, -1, 4]}},
        },
        {
            "name": "reshape_mid",
            "type": "Reshape",
            "bottom": "x",
            "top": "m",
            "reshape_param": {"shape": {"dim": [-1, 0, 1]}, "axis": 1, "num_axes": 2},
        },
        {"name": "flatten", "type": "Flatten", "bottom": "x", "top": "f"},
        {
            "name": "flatten_mid",
            "type": "Flatten",
            "bottom": "x",
            "top": "fm",
            "flatten_param": {"axis": 1, "end_axis": 2},
        },
        {"name": "softmax", "type": "Softmax", "bottom": "x", "top": "s"},
        {"name": "softmax2", "type": "Softmax", "bottom": "x", "top": "s2", "softmax_param": {"axis": -1}},
        {"name": "slice", "type": "Slice", "bottom": "x", "top": ["s_a", "s_b"], "slice_param": {"slice_point": [1]}},
        {"name": "crop", "type": "Crop", "bottom": ["x", "small"], "top": "crop", "crop_param": {"offset": [1, 2]}},
        {"name": "tile", "type": "Tile", "bottom": "x", "top": "tile", "tile_param": {"tiles": 2}},
        {
            "name": "reduce",
            "type": "Reduction",
            "bottom": "x",
            "top": "reduce",
            "reduction_param": {"operation": "SUMSQ", "axis": 1, "coeff": 0.5},
        },
        {
            "name": "mean",
            "type": "Reduction",
            "bottom": "x",
            "top": "mean",
            "reduction_param": {"operation": "MEAN", "axis": 2},
        },
        {"name": "scale_axis2", "type": "Scale", "bottom": "x", "top": "sc", "scale_param": {"axis": 2, "num_axes": 2}},
        {
            "name": "scale_by",
            "type": "Scale",
            "bottom": ["x", "per_channel"],
            "top": "sb",
            "scale_param": {"bias_term": True},
        },
        {"name": "bias", "type": "Bias", "bottom": "x", "top": "b", "bias_param": {"num_axes": 0}},
        {
            "name": "ip_axis2",
            "type": "InnerProduct",
            "bottom": "x",
            "top": "ip",
            "inner_product_param": {"num_output": 3, "axis": 2, "transpose": True},
        },
    ]
    inputs = {"x": (2, 3, 4, 6), "small": (2, 3, 2, 3), "per_channel": (3,)}
    net = build(layers, inputs, "shapes")
    session = assert_exports(net, tmp_path)
    assert session.get_inputs()[0].shape == [2, 3, 4, 6]  # the per-channel input has no batch axis


def test_unsupported_layer_is_one_line_naming_it(tmp_path):
    net = build([{"name": "norm", "type": "MVN", "bottom": "x", "top": "y"}], {"x": (2, 3, 4)})
    with pytest.raises(ConfigError) as caught:
        export_onnx(net, tmp_path / "m.onnx")
    message = str(caught.value)
    assert "\n" not in message
    assert "layer 'norm'" in message and "'MVN'" in message and "no ONNX export" in message
    assert not (tmp_path / "m.onnx").exists()


def test_batch_statistics_and_bad_opset_are_refused(tmp_path):
    layers = [
        {"name": "bn", "type": "BatchNorm", "bottom": "x", "top": "y", "batch_norm_param": {"use_global_stats": False}}
    ]
    with pytest.raises(ConfigError, match="layer 'bn'.*use_global_stats"):
        export_onnx(build(layers, {"x": (2, 3)}), tmp_path / "m.onnx")
    with pytest.raises(ExportError, match="opset must be a whole number from 13"):
        export_onnx(build([neuron("relu", "ReLU", "x")], {"x": (2, 3)}), tmp_path / "m.onnx", opset=7)


def test_missing_onnx_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now raises ImportError
    net = build([neuron("relu", "ReLU", "x")], {"x": (2, 3)})
    with pytest.raises(ExportError) as caught:
        export_onnx(net, tmp_path / "m.onnx")
    assert str(caught.value) == ONNX_MISSING == "ONNX export needs the onnx package: pip install 'netlayers[onnx]'"


TRAINING_CONFIG = """
name: tiny
layers:
  - {name: data, type: DummyData, top: [data, label],
     dummy_data_param: {shape: [{dim: [4, 2, 5, 5]}, {dim: [4]}]}}
  - {name: conv, type: Convolution, bottom: data, top: conv,
     convolution_param: {num_output: 3, kernel_size: 3, weight_filler: {type: gaussian}, bias_filler: {type: gaussian}}}
  - {name: pool, type: Pooling, bottom: conv, top: pool, pooling_param: {pool: AVE, kernel_size: 2, stride: 2}}
  - {name: ip, type: InnerProduct, bottom: pool, top: ip,
     inner_product_param: {num_output: 4, weight_filler: {type: gaussian}, bias_filler: {type: gaussian}}}
  - {name: accuracy, type: Accuracy, bottom: [ip, label], top: accuracy, include: {phase: TEST}}
  - {name: loss, type: SoftmaxWithLoss, bottom: [ip, label], top: loss}
"""


def test_cli_writes_a_model_onnxruntime_runs(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(TRAINING_CONFIG)
    trained = netlayers.Net(str(config), "TRAIN", seed=1)
    trained.save(tmp_path / "tiny.weights.npz")
    output = tmp_path / "tiny.onnx"
    code = cli_main.main(
        [
            "export",
            "--config",
            str(config),
            "--weights",
            str(tmp_path / "tiny.weights.npz"),
            "-o",
            str(output),
            "--batch",
            "2",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert f"wrote {output}" in capsys.readouterr().out
    x = np.random.default_rng(0).standard_normal((3, 2, 5, 5)).astype(np.float32)
    got, session = run_onnx(output, {"data": x})
    assert session.get_inputs()[0].shape == ["batch", 2, 5, 5]
    expected = deploy_net(str(config), tmp_path / "tiny.weights.npz", batch=3).forward(data=x)
    assert set(got) == {"prob"} and relative_error(got["prob"], expected["prob"]) <= TOLERANCE


def test_cli_reports_missing_onnx_in_one_line(tmp_path, capsys, monkeypatch):
    config = tmp_path / "tiny.yaml"
    config.write_text(TRAINING_CONFIG)
    netlayers.Net(str(config), "TRAIN", seed=1).save(tmp_path / "w.npz")
    monkeypatch.setitem(sys.modules, "onnx", None)
    code = cli_main.main(
        ["export", "--config", str(config), "--weights", str(tmp_path / "w.npz"), "-o", str(tmp_path / "m.onnx")]
    )
    assert code == 2
    assert capsys.readouterr().err == f"netlayers: error: {ONNX_MISSING}\n"
    assert not (tmp_path / "m.onnx").exists()


def test_clip_swish_batch_reindex_and_parameter_agree(tmp_path):
    layers = [
        {"name": "clip", "type": "Clip", "bottom": "x", "top": "clip", "clip_param": {"min": -0.5, "max": 0.8}},
        {"name": "swish", "type": "Swish", "bottom": "x", "top": "swish", "swish_param": {"beta": -1.5}},
        {"name": "swish1", "type": "Swish", "bottom": "x", "top": "swish1"},
        {"name": "pick", "type": "BatchReindex", "bottom": ["x", "order"], "top": "pick"},
        {"name": "w", "type": "Parameter", "top": "w", "parameter_param": {"shape": {"dim": [3, 4]}}},
        {"name": "wsum", "type": "Eltwise", "bottom": ["w", "w2"], "top": "wsum"},
    ]
    net = build(layers, {"x": (3, 4), "order": (5,), "w2": (3, 4)}, "more")
    net.layer("w").blobs[0].data[...] = np.random.default_rng(5).normal(size=(3, 4))
    rng = np.random.default_rng(1)
    feeds = {
        "x": rng.normal(0, 1, (3, 4)).astype(np.float32),
        "order": np.array([2, 0, 0, 1, 2], np.float32),
        "w2": rng.normal(0, 1, (3, 4)).astype(np.float32),
    }
    assert_exports(net, tmp_path, inputs=feeds)
