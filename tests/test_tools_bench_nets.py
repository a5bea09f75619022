"""tools/bench_nets.py keeps working: its netlayers side runs tiny versions of its nets, its
GEMM FLOP count matches a hand count, and its table reports a run without PyTorch."""

import contextlib
import json
import math
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import bench_nets  # noqa: E402
from bench_nets import conv, inner_product, loss, relu  # noqa: E402

from netlayers.kernels import taps  # noqa: E402
from netlayers.netspec.spec import load_net_spec  # noqa: E402


def run_tiny(spec):
    inputs = bench_nets.fixed_inputs(spec)
    net = bench_nets.build_netlayers(spec, inputs)
    return net, bench_nets.netlayers_step(net)


def check_against_pytorch_where_installed(spec, net, loss):
    """The PyTorch twin of ``spec`` gives ``net``'s loss and gradients. CI installs the test extra
    only (no torch): the translation is checked where torch is."""
    if bench_nets.import_torch() is not None:
        inputs = bench_nets.fixed_inputs(spec)
        step, module = bench_nets.build_torch(spec, inputs, bench_nets.netlayers_params_as_torch(net))
        assert not module.random
        bench_nets.check_same_computation(spec["name"], net, module, loss, step())


def assert_finite_loss_and_some_gradient(net, loss, name):
    diffs = [blob.diff for blobs in net.params.values() for blob in blobs]
    assert math.isfinite(loss), name
    assert all(np.isfinite(diff).all() for diff in diffs) and any(np.abs(diff).sum() > 0 for diff in diffs), name


def test_a_tiny_resnet_depthwise_and_warm_up_net_run_one_step_with_finite_loss_and_gradients():
    for spec in (
        bench_nets.resnet(batch=2, channels=4, size=6, blocks=1),
        bench_nets.depthwise(batch=2, channels=4, size=5, blocks=1),
        bench_nets.warm_up_spec(),  # every layer type of the benchmark
    ):
        net, loss = run_tiny(spec)
        assert math.isfinite(loss) and loss > 0, spec["name"]
        first_conv = spec["layers"][1]["name"]
        gradient = net.params[first_conv][0].diff
        assert np.isfinite(gradient).all() and np.abs(gradient).sum() > 0, spec["name"]


def test_the_nets_beyond_the_issues_table_run_small_with_finite_loss_and_gradients():
    assert set(bench_nets.ISSUE_NETS) < set(bench_nets.NETS) and "lenet" in bench_nets.ISSUE_NETS
    for spec in (
        bench_nets.nin(batch=2),
        bench_nets.bottleneck(batch=1, size=32),
        bench_nets.inception(batch=1, size=8, channels=8),
        bench_nets.squashing_mlp("TanH", batch=3),
        bench_nets.strided_convnet("PReLU", batch=2),
        bench_nets.dilated(batch=1, size=20, width=4),
        bench_nets.conv1d(batch=2, length=16, channels=4, width=4),
        bench_nets.one_big_image(size=24),
        bench_nets.mobilenet_tail(batch=2, size=8, width=4),
        bench_nets.resnet50_last_stage(batch=2, size=6, width=4),
        bench_nets.vgg16_conv5(batch=2, size=6, width=4),
        bench_nets.cifar_resnet(batch=2, blocks=1, widths=(4, 6, 8), size=8),
        bench_nets.densenet(batch=2, size=6, channels=4, growth=3, count=2),
        bench_nets.squeezenet(batch=2, size=9, channels=4),
        bench_nets.dcgan_generator(batch=2, widths=(6, 5, 4, 3)),
        bench_nets.dcgan_discriminator(batch=2, size=16, widths=(4, 5)),
        bench_nets.resnet18(batch=1, size=32, widths=(4, 5, 6, 7)),
        bench_nets.mobilenet(batch=1, size=32, width=2),
        bench_nets.googlenet(batch=1, size=48, scale=16),
        bench_nets.cifar10_full(batch=2),
        bench_nets.resnet50(batch=2, size=64, widths=(2, 3, 4, 5), blocks=(1, 2, 1, 1)),
        bench_nets.inception_v3_17(batch=2, size=9, channels=6, reduced=3, branch=4),
    ):
        net, loss = run_tiny(spec)
        assert math.isfinite(loss) and loss > 0, spec["name"]
        first = next(layer["name"] for layer in spec["layers"] if layer["type"] in ("Convolution", "InnerProduct"))
        gradient = net.params[first][0].diff
        assert np.isfinite(gradient).all() and np.abs(gradient).sum() > 0, spec["name"]


def test_the_lstm_net_runs_small_counts_its_products_and_matches_pytorch_where_installed():
    spec = bench_nets.lstm(steps=3, streams=2, features=4, hidden=5)
    net, loss = run_tiny(spec)
    assert math.isfinite(loss) and loss > 0
    for param in net.params["lstm"]:
        assert np.isfinite(param.diff).all() and np.abs(param.diff).sum() > 0
    rows = 3 * 2  # steps x streams
    input_weight, recurrent_weight = 20 * 4, 20 * 5  # (4 H, X), (4 H, H)
    forward = 2 * (input_weight + recurrent_weight) * rows
    lstm = forward + forward + 2 * recurrent_weight * rows  # no data gradient for the net's input
    fc = 3 * 2 * (10 * 5) * rows  # forward + weight gradient + data gradient, a row a step and stream
    assert bench_nets.gemm_flops(net) == lstm + fc
    check_against_pytorch_where_installed(spec, net, loss)


def test_cifar10_full_lrn_within_channels_matches_pytorch_where_installed():
    spec = bench_nets.cifar10_full(batch=2)
    assert [layer["lrn_param"]["norm_region"] for layer in spec["layers"] if layer["type"] == "LRN"] == [
        "WITHIN_CHANNEL"
    ] * 2
    net, loss = run_tiny(spec)
    assert math.isfinite(loss) and loss > 0
    check_against_pytorch_where_installed(spec, net, loss)


def test_fcn32s_crops_to_the_image_takes_a_class_map_and_matches_pytorch_on_winograd_where_installed():
    spec = bench_nets.fcn32s(batch=1, size=20, widths=(8, 8, 8, 8, 8), fc=8, classes=10)
    with bench_nets.every_conv_path():  # the 3x3 layers as Winograd, over the zero frame of pad 100
        net, loss = run_tiny(spec)
        assert net.blobs["cropped"].shape == (1, 10, 20, 20) and net.blobs["label"].shape == (1, 1, 20, 20)
        assert net.layer("conv1_2").winograd is not None
        assert math.isfinite(loss) and loss > 0
        check_against_pytorch_where_installed(spec, net, loss)


def test_srcnn_regresses_an_image_through_a_one_channel_strip_layer_and_matches_pytorch_where_installed():
    spec = bench_nets.srcnn(batch=2, size=19, widths=(8, 32))
    net, loss = run_tiny(spec)
    assert net.blobs["conv3"].shape == net.blobs["label"].shape == (2, 1, 3, 3)
    assert net.layer("conv3").strips is not None  # 32 -> 1: few outputs
    assert math.isfinite(loss) and loss > 0
    check_against_pytorch_where_installed(spec, net, loss)


def test_the_nets_after_srcnn_run_small_with_finite_loss_and_gradients_and_match_pytorch_where_installed():
    assert list(bench_nets.NETS)[-20:-12] == [
        "mobilenet_v2", "se_resnet", "resnext", "unet", "darknet", "wrn", "shufflenet", "autoencoder"
    ]  # fmt: skip
    for spec in (
        bench_nets.mobilenet_v2(batch=2, size=8),
        bench_nets.se_resnet(batch=2, size=6, width=16),
        bench_nets.resnext(batch=2, size=6, width=64, out=32),
        bench_nets.unet(batch=2, size=16, widths=(4, 5, 6)),
        bench_nets.darknet(batch=2, size=32, widths=(4, 5, 6)),
        bench_nets.wrn(batch=2, widths=(4, 6, 8), blocks=1, size=8),
        bench_nets.shufflenet(batch=2, size=6, channels=24, units=2),
        bench_nets.autoencoder(batch=3, widths=(20, 10, 5)),
    ):
        net, loss = run_tiny(spec)
        assert loss > 0, spec["name"]
        assert_finite_loss_and_some_gradient(net, loss, spec["name"])
        check_against_pytorch_where_installed(spec, net, loss)


def test_four_more_nets_run_small_with_finite_loss_and_gradients_and_match_pytorch_where_installed():
    """Inception-v3's 35 x 35 and 8 x 8 modules, EfficientNet's MBConv blocks (5x5 depthwise,
    Swish), ENet's bottlenecks (dilated, 5 x 1 -> 1 x 5)."""
    assert list(bench_nets.NETS)[-12:-8] == ["inception_v3_35", "inception_v3_8", "efficientnet", "enet"]
    for spec in (
        bench_nets.inception_v3_35(batch=2, size=6, channels=4),
        bench_nets.inception_v3_8(batch=2, size=3, channels=6),
        bench_nets.efficientnet(batch=2, size=12),
        bench_nets.enet(batch=2, size=11, channels=6, inner=3),
    ):
        net, loss = run_tiny(spec)
        assert loss > 0, spec["name"]
        assert_finite_loss_and_some_gradient(net, loss, spec["name"])
        check_against_pytorch_where_installed(spec, net, loss)
    types = {layer["type"] for layer in bench_nets.efficientnet()["layers"]}
    assert {"Swish", "Eltwise", "BatchNorm"} <= types
    kernels = {tuple(layer["convolution_param"]["kernel_size"]) for layer in bench_nets.enet()["layers"]
               if isinstance(layer.get("convolution_param", {}).get("kernel_size"), list)}  # fmt: skip
    assert {(5, 1), (1, 5)} <= kernels


def test_the_grouped_and_upsampling_nets_run_small_and_match_pytorch_where_installed():
    """ResNeXt's last stage (3x3 convolutions of 32 groups: grouped Winograd at its full size)
    and a segmentation head (bilinear Deconvolution of one channel a group, its weights fixed,
    and a per-pixel SoftmaxWithLoss)."""
    assert list(bench_nets.NETS)[-8:-6] == ["resnext_last_stage", "bilinear_segmentation"]
    for spec in (
        bench_nets.resnext_last_stage(batch=2, size=6, width=8, cardinality=4, out=16),
        bench_nets.bilinear_segmentation(batch=2, size=16, widths=(4, 6), classes=5),
    ):
        net, loss = run_tiny(spec)
        assert loss > 0, spec["name"]
        assert_finite_loss_and_some_gradient(net, loss, spec["name"])
        check_against_pytorch_where_installed(spec, net, loss)
    up = next(layer for layer in bench_nets.bilinear_segmentation()["layers"] if layer["name"] == "upscore")
    assert up["convolution_param"]["group"] == up["convolution_param"]["num_output"] == 21
    groups = {
        layer["convolution_param"]["group"]
        for layer in bench_nets.resnext_last_stage()["layers"]
        if "convolution_param" in layer
    }
    assert groups == {1, 32}


def test_aspp_runs_small_tap_by_tap_and_matches_pytorch_where_installed(monkeypatch):
    """DeepLab's atrous pyramid: its large rates on a small map run tap by tap (the rule's
    channel and pixel floors lowered for the small net), the per-pixel loss over the summed
    scores."""
    assert list(bench_nets.NETS)[-5:-4] == ["aspp"]
    monkeypatch.setattr(taps, "MIN_CHANNELS", 1)
    monkeypatch.setattr(taps, "MIN_PIXELS", 1)
    spec = bench_nets.aspp(batch=2, size=9, channels=6, width=5, rates=(2, 4, 6), classes=3)
    net, loss = run_tiny(spec)
    assert loss > 0
    assert [type(net.layer(f"fc6_{rate}").by_taps).__name__ for rate in (2, 4, 6)] == [
        "NoneType",
        "TapConvolution",
        "TapConvolution",
    ]
    assert_finite_loss_and_some_gradient(net, loss, spec["name"])
    check_against_pytorch_where_installed(spec, net, loss)
    rates = [layer.get("convolution_param", {}).get("dilation") for layer in bench_nets.aspp()["layers"]]
    assert [rate for rate in rates if rate] == [6, 12, 18, 24]


def test_resnext50_runs_small_and_matches_pytorch_where_installed():
    """ResNeXt-50 whole: its 3x3 convolutions of 4, 8, 16 and 32 channels a group downsample at
    the 3x3 (stride 2 on the grouped layer), which the direct grouped kernels run."""
    assert list(bench_nets.NETS)[-6:-5] == ["resnext50"]
    spec = bench_nets.resnext50(batch=2, size=32, widths=(8, 16, 32, 64), blocks=(1, 2, 1, 1), cardinality=4)
    net, loss = run_tiny(spec)
    assert loss > 0
    assert_finite_loss_and_some_gradient(net, loss, spec["name"])
    check_against_pytorch_where_installed(spec, net, loss)
    params = [layer["convolution_param"] for layer in bench_nets.resnext50()["layers"] if "convolution_param" in layer]
    grouped = [param for param in params if param["group"] > 1]
    assert [param["stride"] for param in grouped] == [1, 1, 1, 2, 1, 1, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1]
    firsts = [grouped[k]["num_output"] // 32 for k in (0, 3, 7, 13)]  # each stage's first
    assert firsts == [4, 8, 16, 32]


def test_the_thirty_eighth_sessions_nets_run_small_and_match_pytorch_where_installed():
    """DenseNet-121 whole (BatchNorm on the concatenations, writing blobs of their own), an LSTM
    language model (Embed, two LSTMs, an InnerProduct over the vocabulary at every step),
    BatchNorm after InnerProducts (planes of one position) and a pose machine's 7x7 stage."""
    assert list(bench_nets.NETS)[-4:] == ["densenet121", "language_model", "batchnorm_mlp", "pose_stage"]
    specs = [
        bench_nets.densenet121(batch=2, size=32, growth=4, blocks=(2, 2, 2, 1), classes=10),
        bench_nets.language_model(steps=5, streams=3, vocab=50, hidden=8),
        bench_nets.batchnorm_mlp(batch=8, widths=(12, 16, 16, 10)),
        bench_nets.pose_stage(batch=2, size=12, inputs=6, width=8, parts=3, depth=2),
    ]
    for spec in specs:
        net, loss = run_tiny(spec)
        assert loss > 0
        assert_finite_loss_and_some_gradient(net, loss, spec["name"])
        check_against_pytorch_where_installed(spec, net, loss)
    densenet = bench_nets.densenet121()["layers"]
    assert sum(layer["type"] == "Concat" for layer in densenet) == 58
    kernels = [layer["convolution_param"]["kernel_size"] for layer in densenet if "convolution_param" in layer]
    assert (kernels.count(1), kernels.count(3), kernels.count(7)) == (61, 58, 1)
    assert {layer["type"] for layer in bench_nets.pose_stage()["layers"]} >= {"Convolution", "EuclideanLoss"}


def test_the_net_files_from_outside_the_benchmark_load_and_are_listed():
    """tools/nets: every YAML net passes the config checks and has its line in the folder's
    README; the small ones run a step with a finite loss (the PyTorch twin where installed)."""
    folder = Path(bench_nets.__file__).parent / "nets"
    readme = (folder / "README.md").read_text()
    files = sorted(folder.glob("*.yaml"))
    assert len(files) >= 40
    for path in files:
        spec = load_net_spec(str(path))
        assert spec.name == path.stem and f"`{path.name}`" in readme
    small = ("maxout_mlp", "highway_mlp", "multilabel_head", "seq_mnist_rnn", "seq_mnist_lstm", "gan_mlp", "mtcnn_pnet")
    for name in small:
        spec = str(folder / f"{name}.yaml")
        net, loss = run_tiny(spec)
        assert_finite_loss_and_some_gradient(net, loss, name)
        check_against_pytorch_where_installed(yaml.safe_load(open(spec)), net, loss)


# -- the PyTorch twin's layers: tiny nets, each checked against netlayers ----------------------
GAUSSIAN = {"type": "gaussian", "std": 0.5}


def tiny(name, *layers, inputs=(("data", (2, 4, 5, 5)), ("label", (2,)))):
    """A net of an Input layer of ``inputs`` ((blob, shape) pairs) and ``layers``."""
    shapes = [{"dim": list(shape)} for _, shape in inputs]
    first = {"name": "input", "type": "Input", "top": [n for n, _ in inputs], "input_param": {"shape": shapes}}
    return {"name": name, "layers": [first, *layers]}


def layer(name, kind, bottom, top=None, **fields):
    return {"name": name, "type": kind, "bottom": bottom, "top": name if top is None else top, **fields}


def classify(bottom, classes=3, name="fc"):
    """An InnerProduct of ``classes`` and SoftmaxWithLoss against ``label``."""
    fc = inner_product(name, bottom, classes)
    return [fc, {"name": f"{name}_loss", "type": "SoftmaxWithLoss", "bottom": [name, "label"], "top": f"{name}_loss"}]


def neurons():
    """AbsVal, Power, Log, Exp, BNLL, ELU, PReLU (one slope), TanH, Sigmoid, Clip, Swish, and a
    Threshold (no gradient) summed in."""
    chain = [
        layer("abs", "AbsVal", "c"),
        layer("pow", "Power", "abs", power_param={"power": 1.5, "scale": 0.5, "shift": 1}),
        layer("log", "Log", "pow", log_param={"base": 10, "scale": 2, "shift": 0.5}),
        layer("exp", "Exp", "log", exp_param={"base": 2, "scale": 0.5, "shift": 1}),
        layer("square", "Power", "exp", power_param={"power": 2, "shift": -1}),
        layer("bnll", "BNLL", "square"),
        layer("elu", "ELU", "bnll", elu_param={"alpha": 0.5}),
        layer("prelu", "PReLU", "elu", prelu_param={"channel_shared": True}),
        layer("tanh", "TanH", "prelu"),
        layer("sigmoid", "Sigmoid", "tanh"),
        layer("clip", "Clip", "c", clip_param={"min": -0.3, "max": 0.4}),
        layer("swish", "Swish", "clip", swish_param={"beta": 1.5}),
        layer("step", "Threshold", "c", threshold_param={"threshold": 0.1}),
        layer("sum", "Eltwise", ["sigmoid", "swish", "step"]),
    ]
    return tiny("neurons", conv("c", "data", 3, 3, pad=1), *chain, *classify("sum"))


def shapes():
    """Softmax on axis 2, Flatten of axes 2..3, Reshape with 0 and -1 on part of the axes,
    Slice at points and into equal parts, Concat, an explicit Split, Silence."""
    return tiny(
        "shapes",
        conv("c", "data", 6, 1),
        layer("softmax", "Softmax", "c", softmax_param={"axis": 2}),
        layer("flat", "Flatten", "softmax", flatten_param={"axis": 2, "end_axis": -1}),
        layer("shaped", "Reshape", "flat", reshape_param={"shape": {"dim": [0, 5, -1]}, "axis": 1, "num_axes": 2}),
        layer("cut", "Slice", "shaped", ["a", "b", "rest"], slice_param={"axis": 1, "slice_point": [1, 4]}),
        layer("halves", "Slice", "rest", ["r1", "r2"], slice_param={"axis": -3}),
        layer("copies", "Split", "b", ["b1", "b2"]),
        layer("joined", "Concat", ["b2", "a", "r1", "b1"], concat_param={"axis": 1}),
        layer("quiet", "Silence", ["r2"], []),
        *classify("joined"),
    )


def broadcasts():
    """Scale and Bias of one bottom (learned, several axes, a scalar) and of two (a blob from
    axis 0), a Parameter layer, Tile, Eltwise PROD, MAX and SUM with coefficients."""
    return tiny(
        "broadcasts",
        conv("c", "data", 4, 3, pad=1),
        layer("scaled", "Scale", "c", scale_param={"axis": 1, "num_axes": 2, "filler": GAUSSIAN, "bias_term": True}),
        layer("scalar", "Scale", "scaled", scale_param={"num_axes": 0, "filler": GAUSSIAN}),
        layer("biased", "Bias", "scalar", bias_param={"axis": 2, "num_axes": -1, "filler": GAUSSIAN}),
        inner_product("gates", "data", 4),
        layer("gated", "Scale", ["c", "gates"], scale_param={"axis": 0}),
        layer("offset", "Parameter", [], parameter_param={"shape": {"dim": [4, 5]}}),
        layer("shifted", "Bias", ["gated", "offset"]),
        layer("tiled", "Tile", "biased", tile_param={"axis": 1, "tiles": 2}),
        layer("wide", "Concat", ["shifted", "shifted"]),
        layer("product", "Eltwise", ["tiled", "wide"], eltwise_param={"operation": "PROD"}),
        layer("largest", "Eltwise", ["tiled", "wide", "product"], eltwise_param={"operation": "MAX"}),
        layer("mixed", "Eltwise", ["largest", "product"], eltwise_param={"coeff": [0.5, -2]}),
        *classify("mixed"),
    )


def poolings():
    """Pooling MAX and AVE: pad with a clipped last window (size 5, kernel 2, stride 3, pad 1),
    pad above half the kernel (pad 2, kernel 3), rectangular kernel, stride and pad fields,
    FLOOR rounding; global MAX; SPP (MAX, AVE)."""
    geometry = [
        ("clipped", {"kernel_size": 3, "stride": 2, "pad": 1}),
        ("wide_pad", {"kernel_size": 5, "stride": 3, "pad": 3}),
        ("rectangle", {"kernel_h": 3, "kernel_w": 2, "stride_h": 2, "stride_w": 1, "pad_h": 1, "pad_w": 0}),
        ("floor", {"kernel_size": 2, "stride": 2, "round_mode": "FLOOR"}),
    ]
    layers, tops = [conv("c", "data", 3, 1)], []
    for name, fields in geometry:
        for method in ("MAX", "AVE"):
            top = f"{name}_{method}"
            layers += [layer(top, "Pooling", "c", pooling_param={"pool": method, **fields})]
            layers.append(inner_product(f"{top}_fc", top, 3))
            tops.append(f"{top}_fc")
    layers += [layer("global", "Pooling", "c", pooling_param={"pool": "MAX", "global_pooling": True})]
    layers += [layer("spp_MAX", "SPP", "c", spp_param={"pyramid_height": 3})]
    layers += [layer("spp_AVE", "SPP", "c", spp_param={"pyramid_height": 2, "pool": "AVE"})]
    for top in ("global", "spp_MAX", "spp_AVE"):
        layers.append(inner_product(f"{top}_fc", top, 3))
        tops.append(f"{top}_fc")
    layers.append(layer("sum", "Eltwise", tops))
    return tiny("poolings", *layers, {**loss("sum"), "top": "loss"}, inputs=(("data", (2, 4, 6, 7)), ("label", (2,))))


def learned():
    """InnerProduct with transpose, no bias, axis 2; Convolution without bias and with
    kernel_h/w, pad_h/w, stride_h/w, of two bottoms; grouped Deconvolution without bias;
    weights shared by name; a frozen layer (lr_mult 0); a bottom with propagate_down false."""
    rectangular = conv("rect", "data", 4, 1, bias=False)
    rectangular["convolution_param"] = {
        **{k: v for k, v in rectangular["convolution_param"].items() if k not in ("kernel_size", "pad", "stride")},
        "kernel_h": 3,
        "kernel_w": 2,
        "pad_h": 1,
        "pad_w": 0,
        "stride_h": 2,
        "stride_w": 1,
    }
    twin = {**rectangular, "name": "pair", "bottom": ["data", "data2"], "top": ["pair1", "pair2"]}
    twin["convolution_param"] = {**rectangular["convolution_param"], "bias_term": True, "bias_filler": GAUSSIAN}
    deconv = conv("up", "rect", 4, 2, stride=2, group=2, bias=False, type="Deconvolution")
    ip = inner_product("ip_t", "up", 3)
    ip["inner_product_param"].update({"transpose": True, "bias_term": False, "axis": 2})
    shared_a = {**inner_product("shared_a", "pair1", 5), "param": [{"name": "w"}, {"name": "b"}]}
    shared_b = {**inner_product("shared_b", "pair2", 5), "param": [{"name": "w"}, {"name": "b"}]}
    frozen = {**inner_product("frozen", "ip_t", 5), "param": [{"lr_mult": 0}, {"lr_mult": 0}]}
    cut = {**layer("cut", "Eltwise", ["shared_a", "shared_b"]), "propagate_down": [True, False]}
    return tiny(
        "learned",
        rectangular,
        twin,
        deconv,
        ip,
        shared_a,
        shared_b,
        frozen,
        cut,
        layer("sum", "Eltwise", ["cut", "frozen"]),
        *classify("sum"),
        inputs=(("data", (2, 3, 5, 4)), ("data2", (2, 3, 5, 4)), ("label", (2,))),
    )


def normalizations():
    """MVN (across channels; without variance), BatchNorm with global statistics in TRAIN, a
    BatchNorm and a Scale it does not fuse with (a bias on two axes), LRN."""
    return tiny(
        "normalizations",
        conv("c", "data", 4, 3, pad=1),
        layer("mvn", "MVN", "c", mvn_param={"across_channels": True}),
        layer("centred", "MVN", "mvn", mvn_param={"normalize_variance": False}),
        layer("bn_global", "BatchNorm", "centred", batch_norm_param={"use_global_stats": True}),
        layer("bn", "BatchNorm", "bn_global"),
        layer("scale2", "Scale", "bn", "bn", scale_param={"axis": 1, "num_axes": 2, "bias_term": True}),
        layer("lrn", "LRN", "bn", lrn_param={"local_size": 3, "alpha": 0.5, "beta": 0.75, "k": 2}),
        *classify("lrn"),
    )


def losses():
    """SoftmaxWithLoss per pixel with ignore_label, FULL normalization and the probabilities
    top, weighted 0.5; SigmoidCrossEntropyLoss weighted 2; EuclideanLoss weighted 0; a plain top
    weighted as a loss (a Reduction); HingeLoss L2; MultinomialLogisticLoss; InfogainLoss with H
    as a bottom; ContrastiveLoss; Accuracy (top 2)."""
    inputs = (
        ("data", (2, 4, 3, 3)),
        ("label", (2,)),
        ("pixels", (2, 3, 3)),
        ("target", (2, 5)),
        ("goal", (2, 5)),
        ("matrix", (5, 5)),
        ("similar", (2,)),
    )
    per_pixel = layer(
        "pixel_loss",
        "SoftmaxWithLoss",
        ["c", "pixels"],
        ["pixel_loss", "pixel_prob"],
        loss_weight=[0.5, 0],
        loss_param={"ignore_label": 1, "normalization": "FULL"},
    )
    return tiny(
        "losses",
        conv("c", "data", 4, 1),
        per_pixel,
        inner_product("ip", "c", 5),
        inner_product("ip2", "c", 5),
        layer("sce", "SigmoidCrossEntropyLoss", ["ip", "target"], loss_weight=2),
        layer("l2", "EuclideanLoss", ["ip", "goal"], loss_weight=0),
        layer("sumsq", "Reduction", "ip2", reduction_param={"operation": "SUMSQ", "axis": 1}, loss_weight=0.1),
        layer("hinge", "HingeLoss", ["ip", "label"], hinge_loss_param={"norm": "L2"}),
        layer("prob", "Softmax", "ip2"),
        layer("logistic", "MultinomialLogisticLoss", ["prob", "label"]),
        layer("infogain", "InfogainLoss", ["ip2", "label", "matrix"]),
        layer("pairs", "ContrastiveLoss", ["ip", "ip2", "similar"], contrastive_loss_param={"margin": 2}),
        layer("accuracy", "Accuracy", ["ip2", "label"], accuracy_param={"top_k": 2}),
        inputs=inputs,
    )


def reductions():
    """Reduction SUM (everything), ASUM, MEAN (coeff), SUMSQ (last axis), each weighted."""
    ops = [("SUM", 0, 1e-2), ("ASUM", 1, 1e-2), ("MEAN", 2, -1.0), ("SUMSQ", -1, 0.1)]
    layers = [conv("c", "data", 3, 1)]
    for op, axis, weight in ops:
        layers.append(
            layer(
                f"r_{op}",
                "Reduction",
                "c",
                reduction_param={"operation": op, "axis": axis, "coeff": 0.5},
                loss_weight=weight,
            )
        )
    return tiny("reductions", *layers, *classify("c"))


def sequences():
    """Embed of word indices, an LSTM (cont 0 at the first step), an RNN with its states
    exposed, InnerProduct on axis 2, SoftmaxWithLoss on axis 2."""
    inputs = (("words", (3, 2)), ("cont", (3, 2)), ("h0", (1, 2, 5)), ("label", (3, 2)))
    embed = {"num_output": 3, "input_dim": 7, "weight_filler": GAUSSIAN, "bias_filler": GAUSSIAN}
    recurrent = {"num_output": 4, "weight_filler": {"type": "xavier"}, "bias_filler": GAUSSIAN}
    fc = inner_product("fc", "rnn", 5)
    fc["inner_product_param"]["axis"] = 2
    return tiny(
        "sequences",
        layer("embed", "Embed", "words", "embedded", embed_param=embed),
        layer("lstm", "LSTM", ["embedded", "cont"], recurrent_param=recurrent),
        layer(
            "rnn",
            "RNN",
            ["lstm", "cont", "h0"],
            ["rnn", "hT"],
            recurrent_param={**recurrent, "num_output": 5, "expose_hidden": True},
        ),
        layer("quiet", "Silence", "hT", []),
        fc,
        {**loss("fc"), "softmax_param": {"axis": 2}},
        inputs=inputs,
    )


TRANSLATED = [neurons, shapes, broadcasts, poolings, learned, normalizations, losses, reductions, sequences]


@pytest.mark.parametrize("build", TRANSLATED, ids=lambda build: build.__name__)
def test_each_translated_layer_type_gives_netlayers_loss_and_gradients_where_torch_is_installed(build):
    spec = build()
    net, loss = run_tiny(spec)
    assert_finite_loss_and_some_gradient(net, loss, spec["name"])
    check_against_pytorch_where_installed(spec, net, loss)


def test_the_tiny_nets_cover_every_layer_type_the_twin_translates_but_dropout():
    covered = {layer["type"] for build in TRANSLATED for layer in build()["layers"]}
    nets = [bench_nets.cifar10_full(), bench_nets.fcn32s(), bench_nets.lstm(), bench_nets.warm_up_spec()]
    covered |= {layer["type"] for spec in nets for layer in spec["layers"]}
    assert set(bench_nets.TRANSLATED_TYPES) - covered == {"Dropout"}  # Dropout: see the file-net tests


def test_nets_all_picks_every_net_and_the_default_is_the_issues_table():
    assert bench_nets.parse_args([]).nets == bench_nets.ISSUE_NETS
    assert bench_nets.parse_args(["--nets", "all"]).nets == list(bench_nets.NETS)
    assert bench_nets.parse_args(["--nets", "nin, lenet"]).nets == ["nin", "lenet"]


def test_nets_zoo_picks_the_model_zoos_deploy_nets_each_a_forward_only_net_file():
    """``--nets zoo`` expands to the deploy nets kept in tests/fixtures/zoo (mixed with other
    names); each is a net file the benchmark reads, with no loss: run forward only."""
    nets = bench_nets.parse_args(["--nets", "lenet,zoo"]).nets
    assert nets[0] == "lenet" and len(nets) == 1 + len(bench_nets.ZOO_NETS) == 12
    for path in nets[1:]:
        assert bench_nets.is_net_file(path) and Path(path).is_file()
        assert not bench_nets.has_loss(bench_nets.check_net_file(path))


def test_nets_layers_picks_one_net_per_layer_kind():
    nets = bench_nets.parse_args(["--nets", "lenet,layers"]).nets
    assert nets == ["lenet", *bench_nets.LAYER_PROBES] and len(nets) > 40
    assert bench_nets.case_of("layer_lrn_within").title == "LRN within 5 x 5 windows, 32 x 64 x 56 x 56"
    assert "layer_relu" not in bench_nets.parse_args(["--nets", "all"]).nets


def test_an_unknown_net_name_is_a_one_line_error_naming_the_known_ones_the_probes_too(capsys):
    with pytest.raises(SystemExit):
        bench_nets.parse_args(["--nets", "layer_relux"])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "unknown net(s): layer_relux" in error and "cifar10_quick" in error and "layer_relu," in error


@pytest.mark.parametrize("name", list(bench_nets.LAYER_PROBES))
def test_each_layer_probe_runs_small_takes_gradients_and_matches_pytorch_where_installed(name):
    """Each probe at 2 x 3 x 6 x 6: its probed layer is there and runs, the learned Scale before
    it takes a gradient (the probed layer's backward reached it), and PyTorch's twin gives the
    same loss and gradients (Dropout draws its own numbers: translated, not compared)."""
    spec = bench_nets.layer_probe(name, shape=(2, 3, 6, 6))
    assert spec["layers"][1]["name"] == "pre" and any(layer["name"] == "probed" for layer in spec["layers"])
    net, loss = run_tiny(spec)
    assert math.isfinite(loss) and loss != 0, name
    gradient = net.params["pre"][0].diff
    assert np.isfinite(gradient).all() and np.abs(gradient).sum() > 0, name
    if bench_nets.import_torch() is not None:
        inputs = bench_nets.fixed_inputs(spec)
        step, module = bench_nets.build_torch(spec, inputs, bench_nets.netlayers_params_as_torch(net))
        torch_loss = step()
        if name != "layer_dropout":
            bench_nets.check_same_computation(name, net, module, loss, torch_loss)


def test_gemm_flops_count_forward_and_both_gradients_but_no_data_gradient_for_the_input():
    spec = bench_nets.depthwise(batch=2, channels=4, size=5, blocks=1)
    net, _ = run_tiny(spec)
    positions = 2 * 5 * 5
    dw = 2 * (4 * 1 * 3 * 3) * positions  # bottom is the input: forward + weight gradient only
    pw = 2 * (4 * 4) * positions  # forward + weight gradient + data gradient
    fc = 2 * (10 * 4) * 2
    assert bench_nets.gemm_flops(net) == 2 * dw + 3 * pw + 3 * fc


def test_the_table_without_pytorch_shows_netlayers_and_its_floor_only():
    result = bench_nets.Result("mlp", flops=int(2e9), netlayers_loss=2.3, netlayers=0.05)
    table = bench_nets.markdown_table([result], rate=1e11, memory=False).splitlines()
    assert table[0].startswith("| net | netlayers ms | PyTorch ms |")
    assert table[2] == "| MLP 784-2048-2048-10, batch 256 | 50.0 | - | - | 20.0 | 2.5x | - |"


# -- --busy: the competing process and the quiet/busy rounds ---------------------------------
def process_state(pid):
    """The one-letter state of process ``pid`` (R running, T stopped, Z zombie), None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def cpu_ticks(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def wait_until(condition, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_the_busy_process_burns_cpu_in_the_block_and_is_killed_and_reaped_when_the_block_raises():
    with pytest.raises(ValueError):
        with bench_nets.busy_process() as child:
            assert process_state(child.pid) == "R"
            assert wait_until(lambda: cpu_ticks(child.pid) >= 5)  # 50 ms of CPU: it burns
            raise ValueError("the timed function failed")
    assert child.returncode == -signal.SIGKILL
    assert process_state(child.pid) is None  # reaped: no zombie either


@pytest.fixture
def recorded_children(monkeypatch):
    """The Popen of every busy_process the code under test starts."""
    children = []
    real = bench_nets.busy_process

    @contextlib.contextmanager
    def recording():
        with real() as child:
            children.append(child)
            yield child

    monkeypatch.setattr(bench_nets, "busy_process", recording)
    return children


def test_each_round_runs_quiet_with_the_child_stopped_then_busy_with_it_running(recorded_children):
    calls = []

    def step(name):
        return lambda: calls.append((name, process_state(recorded_children[0].pid)))

    quiet, busy = bench_nets.quiet_and_busy_rounds([step("a"), step("b")], rounds=2, iters=1, pause=0)
    assert calls == [("a", "T"), ("b", "T"), ("a", "R"), ("b", "R"), ("b", "T"), ("a", "T"), ("b", "R"), ("a", "R")]
    assert [len(t) for t in quiet + busy] == [2, 2, 2, 2]
    assert len(recorded_children) == 1 and process_state(recorded_children[0].pid) is None


@pytest.mark.parametrize("failing_half", ["quiet", "busy"])
@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_a_step_that_raises_in_either_half_leaves_no_busy_process_behind(recorded_children, failing_half, error):
    def step():
        if process_state(recorded_children[0].pid) == ("T" if failing_half == "quiet" else "R"):
            raise error("stop")

    with pytest.raises(error):
        bench_nets.quiet_and_busy_rounds([step], rounds=2, iters=1, pause=0)
    child = recorded_children[0]
    assert child.returncode == -signal.SIGKILL and process_state(child.pid) is None


@pytest.mark.parametrize("held", [False, True])
def test_the_busy_process_dies_with_a_benchmark_that_is_killed_even_while_it_is_held_stopped(held, tmp_path):
    code = (
        f"import os, signal, sys; sys.path.insert(0, {str(Path(bench_nets.__file__).parent)!r}); import bench_nets\n"
        "with bench_nets.busy_process() as child:\n"
        f"    if {held}: bench_nets.signal_and_wait(child, signal.SIGSTOP, os.WUNTRACED)\n"
        "    print(child.pid, flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    # stderr to a file: a surviving child would hold a pipe open and the run would never end
    with open(tmp_path / "stderr", "w") as stderr:
        benchmark = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=stderr, text=True)
    assert benchmark.returncode == -signal.SIGKILL, (tmp_path / "stderr").read_text()
    orphan = int(benchmark.stdout.split()[0])
    assert wait_until(lambda: process_state(orphan) in (None, "Z"))


def test_share_kept_is_the_median_of_the_per_round_quiet_over_busy_ratios():
    assert bench_nets.share_kept([1.0, 2.0, 1.0], [2.0, 2.5, 4.0]) == 0.5
    assert bench_nets.share_kept([1.0], []) is None


def test_the_table_with_memory_and_busy_shows_both_memories_their_ratio_and_each_sides_share_kept():
    result = bench_nets.Result("mlp", flops=int(2e9), netlayers_loss=2.3, netlayers=0.05, torch=0.04, ratio=1.25)
    result.memory = {"netlayers": 120.4, "torch": 100.2}
    result.netlayers_kept, result.torch_kept = 0.6, 0.456
    table = bench_nets.markdown_table([result], rate=1e11, memory=True, busy=True).splitlines()
    assert table[0].endswith(
        "| netlayers MiB | PyTorch MiB | MiB ratio | netlayers speed kept, busy | PyTorch speed kept, busy |"
    )
    assert table[1] == "| " + " | ".join(["---"] * 12) + " |"
    assert table[2].endswith("| 1.25x | 20.0 | 2.5x | 2.0x | 120 | 100 | 1.20x | 60% | 46% |")


def test_the_peak_rss_growth_counts_worker_scratch_buffers():
    """In a fresh process: in this one, pages freed by earlier tests may be reused unseen."""
    code = (
        "import sys; sys.path.insert(0, 'tools'); import numpy as np, bench_nets; "
        "from netlayers import parallel; before = bench_nets.reset_peak_rss(); "
        "parallel.scratch(1, 'bench_nets test', 8 << 20, np.float32).fill(1.0); "  # 32 MiB
        "print(parallel.scratch_bytes() >> 20, bench_nets.peak_rss_mib() - before)"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120)
    assert done.returncode == 0, done.stderr
    scratch_mib, growth_mib = map(float, done.stdout.split())
    assert scratch_mib >= 32 and growth_mib >= 30


class _Grad:
    def __init__(self, array):
        self.grad = SimpleNamespace(numpy=lambda: array)


def _net_and_module(ours, theirs):
    net = SimpleNamespace(params={name: [SimpleNamespace(diff=grad)] for name, grad in ours.items()})
    module = SimpleNamespace(param_of={(name, 0): _Grad(grad) for name, grad in theirs.items()})
    return net, module


def test_a_gradient_that_is_rounding_noise_is_measured_against_the_largest_gradient():
    big = np.ones(4)
    noise = np.full(4, 1e-7)
    net, module = _net_and_module({"conv": big, "scale": 1.2 * noise}, {"conv": big, "scale": noise})
    assert bench_nets.check_same_computation("n", net, module, 1.0, 1.0) <= 1e-3
    net, module = _net_and_module({"conv": 1.2 * big, "scale": noise}, {"conv": big, "scale": noise})
    with pytest.raises(bench_nets.ComputationMismatch, match="layer 'conv' param 0 differs by 2.00e-01"):
        bench_nets.check_same_computation("n", net, module, 1.0, 1.0)
    net, module = _net_and_module({"conv": big, "scale": 1.2 * big}, {"conv": big, "scale": big})
    with pytest.raises(bench_nets.ComputationMismatch, match="layer 'scale'"):
        bench_nets.check_same_computation("n", net, module, 1.0, 1.0)


# -- fixed inputs ------------------------------------------------------------------------------
def test_labels_are_class_indices_below_the_scores_classes_targets_in_0_1_indices_below_input_dim():
    plan = {
        name: (shape, kind, bound) for name, shape, kind, bound in bench_nets.input_plan(bench_nets.new_net(losses()))
    }
    assert plan["pixels"] == ((2, 3, 3), "classes", 4)  # SoftmaxWithLoss over c's 4 channels, per pixel
    assert plan["label"] == ((2,), "classes", 5)  # HingeLoss, Accuracy, ... over 5 outputs
    assert plan["target"][1] == "unit" and plan["goal"][1] == plan["matrix"][1] == "normal"
    inputs = bench_nets.fixed_inputs(losses())
    assert inputs["pixels"].dtype == np.int64 and set(np.unique(inputs["pixels"])) == {0, 1, 2, 3}
    assert 0 <= inputs["target"].min() and inputs["target"].max() < 1 and inputs["goal"].min() < 0
    words = bench_nets.fixed_inputs(sequences())
    assert words["words"].max() < 7 and words["label"].max() < 5 and len(np.unique(words["words"])) > 2
    assert (words["cont"][0] == 0).all() and (words["cont"][1:] == 1).all()
    unet = bench_nets.fixed_inputs(bench_nets.unet(batch=1, size=8, widths=(2, 3), classes=4))
    assert unet["label"].shape == (1, 8, 8) and set(np.unique(unet["label"])) == {0, 1, 2, 3}
    image = bench_nets.fixed_inputs(bench_nets.autoencoder(batch=2, widths=(3, 2)))["data"]  # flattened: the target
    assert image.dtype == np.float32 and 0 <= image.min() and image.max() < 1


def test_a_label_read_by_two_layers_through_a_split_takes_the_fewer_classes():
    spec = tiny(
        "two_readers",
        inner_product("wide", "data", 7),
        inner_product("narrow", "data", 3),
        {**loss("wide"), "top": "loss"},
        layer("accuracy", "Accuracy", ["narrow", "label"]),
        inputs=(("data", (50, 2)), ("label", (50,))),
    )
    assert bench_nets.input_plan(bench_nets.new_net(spec))[1] == ("label", (50,), "classes", 3)
    assert set(np.unique(bench_nets.fixed_inputs(spec)["label"])) == {0, 1, 2}


# -- net files ---------------------------------------------------------------------------------
@pytest.fixture
def quick(monkeypatch):
    """main's arguments for one quick round; numpy's sgemm rate not measured."""
    monkeypatch.setattr(bench_nets, "sgemm_rate", lambda: 1e11)
    return ["--rounds", "1", "--iters", "1", "--pause", "0"]


def write_net(tmp_path, *layers, name="tiny.yaml"):
    """A YAML net file of an Input (data 2 x 3 x 6 x 6, label 2), ``layers`` after a 3x3
    convolution ``conv``, and an InnerProduct 4 with SoftmaxWithLoss."""
    data = {"name": "data", "type": "Input", "top": ["data", "label"]}
    data["input_param"] = {"shape": [{"dim": [2, 3, 6, 6]}, {"dim": [2]}]}
    spec = bench_nets.net_spec("tiny", [data, conv("conv", "data", 4, 3), *layers, inner_product("fc", "conv", 4)])
    spec["layers"].append({**loss("fc"), "top": "loss"})
    path = tmp_path / name
    path.write_text(json.dumps(spec))  # JSON is YAML
    return str(path)


def test_nets_takes_file_paths_among_the_names():
    assert bench_nets.parse_args(["--nets", "nin,nets/a.yaml,b.prototxt,c.yml"]).nets == [
        "nin", "nets/a.yaml", "b.prototxt", "c.yml"
    ]  # fmt: skip
    with pytest.raises(SystemExit):
        bench_nets.parse_args(["--nets", "no_such_net"])


def test_a_net_file_is_benchmarked_in_its_train_phase_against_pytorch_where_installed(tmp_path, quick, capsys):
    path = write_net(
        tmp_path,
        relu("relu", "conv"),
        {
            **layer("test_only", "Pooling", "conv", pooling_param={"pool": "MAX", "kernel_size": 2}),
            "include": {"phase": "TEST"},
        },
    )
    assert bench_nets.main(["--nets", path, *quick]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith(path))
    if bench_nets.import_torch() is None:
        assert "netlayers" in line and "PyTorch" not in line and "netlayers ran alone" in out
    else:
        assert re.search(r"gradients within \S+\)  ratio \d+\.\d\dx", line), line
    assert f"| {path} | " in out  # the table's row


def test_a_net_file_without_products_has_no_floor_and_still_gets_its_table(tmp_path, quick, capsys):
    """No Convolution or InnerProduct: a GEMM floor of 0, so the floor's columns read "-"
    (they once divided by it)."""
    data = {"name": "data", "type": "Input", "top": ["data"], "input_param": {"shape": [{"dim": [2, 3, 4, 4]}]}}
    spec = bench_nets.net_spec(
        "no_products",
        [data, {**layer("t", "Scale", "data", "x"), "scale_param": {"axis": 0}}, {**relu("r", "x"), "loss_weight": 1}],
    )
    path = tmp_path / "no_products.yaml"
    path.write_text(json.dumps(spec))
    assert bench_nets.main(["--nets", str(path), *quick]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(f"| {path} |"))
    assert [cell.strip(" |") for cell in row.split(" | ")[4:7]] == ["0.0", "-", "-"]


def test_the_example_prototxt_net_runs(quick, capsys):
    path = str(Path(bench_nets.__file__).parent / "nets" / "lenet.prototxt")
    assert bench_nets.main(["--nets", path, *quick]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith(path))
    assert re.search(r"netlayers +\d+\.\d ms \(loss 2\.\d+\)", line) and "note:" not in out


def test_a_net_with_dropout_runs_both_sides_without_comparing_them(tmp_path, quick, capsys):
    path = write_net(tmp_path, layer("drop", "Dropout", "conv", "conv", dropout_param={"dropout_ratio": 0.3}))
    assert bench_nets.main(["--nets", path, *quick]) == 0
    out = capsys.readouterr().out
    if bench_nets.import_torch() is None:
        assert "not compared" not in out and "netlayers ran alone" in out
    else:
        assert re.search(r"PyTorch +\d+\.\d ms \(loss \S+; not compared\)  ratio", out)
        assert "note: PyTorch not compared: 'drop' (Dropout) draw(s) random numbers, each side its own" in out


def test_a_layer_the_twin_does_not_translate_leaves_netlayers_alone_with_a_note(tmp_path, quick, capsys):
    path = write_net(tmp_path, layer("best", "ArgMax", "conv"), layer("quiet", "Silence", "best", []))
    assert bench_nets.main(["--nets", path, *quick]) == 0
    lines = capsys.readouterr().out.splitlines()
    line = next(line for line in lines if line.startswith(path))
    assert "netlayers" in line and "ratio" not in line
    if bench_nets.import_torch() is not None:
        note = lines[lines.index(line) + 1].strip()
        assert note == "note: netlayers alone: no PyTorch twin: layer 'best': type ArgMax is not translated"


@pytest.mark.parametrize(
    "case",
    ["missing", "folder", "not YAML", "no layers", "Data layer", "bad shape", "deploy bad shape"],
)
def test_a_bad_net_file_is_one_error_line_naming_the_file_and_a_non_zero_exit(tmp_path, quick, capsys, case):
    path = tmp_path / "net.yaml"
    if case == "folder":
        path.mkdir()
    elif case == "not YAML":
        path.write_text("layers: [\n")
    elif case == "no layers":
        path.write_text("name: empty\n")
    elif case == "Data layer":
        data = {
            "name": "mnist",
            "type": "Data",
            "top": ["data", "label"],
            "data_param": {"source": "x", "batch_size": 2},
        }
        path.write_text(json.dumps({"layers": [data, inner_product("fc", "data", 2), loss("fc")]}))
    elif case == "bad shape":
        path = Path(write_net(tmp_path, conv("too_big", "conv", 2, 9)))
    elif case == "deploy bad shape":  # no loss: fails building its TEST net
        path = Path(write_deploy(tmp_path, DEPLOY_PROTOTXT.replace("kernel_size: 3", "kernel_size: 9")))
    assert bench_nets.main(["--nets", f"lenet,{path}", *quick]) == 1
    captured = capsys.readouterr()
    errors = captured.err.splitlines()
    assert len(errors) == 1 and errors[0].startswith("bench_nets: error: ") and str(path) in errors[0], captured.err
    if case == "Data layer":  # its source missing, its params do not give the image's shape
        assert "layer 'mnist' (Data) could not be read (" in errors[0] and "--input-shape data=2,C,H,W" in errors[0]
    if "bad shape" not in case:  # found before anything is timed
        assert "lenet" not in captured.out


def test_memory_is_measured_for_a_net_file_in_a_subprocess(tmp_path, monkeypatch):
    write_net(tmp_path, relu("relu", "conv"))
    monkeypatch.chdir(tmp_path)  # a relative path: the subprocess gets it resolved
    mib = bench_nets.measure_memory("tiny.yaml", "netlayers", 1)
    assert 0 < mib < 100


# -- net files with data layers: an Input of the same shapes in their place -------------------
def data_net(tmp_path, data, name="data_net.yaml"):
    """A net file: the data layer ``data`` (tops data and label), a 3x3 convolution, an
    InnerProduct 4 and SoftmaxWithLoss."""
    spec = bench_nets.net_spec(
        "data_net", [data, conv("conv", "data", 4, 3), inner_product("fc", "conv", 4), loss("fc")]
    )
    path = tmp_path / name
    path.write_text(json.dumps(spec))
    return str(path)


def classify_conv():
    return [conv("conv", "data", 4, 3), inner_product("fc", "conv", 4), loss("fc")]


def data_layer(kind="Data", block="data_param", transform=None, **params):
    layer = {"name": "source", "type": kind, "top": ["data", "label"], block: params}
    return {**layer, "transform_param": transform} if transform else layer


def input_shapes_of(spec, name="source"):
    """The shapes the Input layer that took data layer ``name``'s place gives, by top."""
    (layer,) = [layer for layer in spec.layers if layer.name == name and layer.type == "Input"]
    return {top: tuple(shape.dim) for top, shape in zip(layer.tops, layer.blocks["input_param"].shape)}


def test_a_data_layer_whose_source_is_there_gives_way_to_an_input_of_the_shapes_it_reads(tmp_path, quick, capsys):
    images = np.random.default_rng(0).random((10, 3, 7, 7), dtype=np.float32)
    np.savez(tmp_path / "train.npz", data=images, label=np.arange(10) % 4)
    path = data_net(tmp_path, data_layer(source="train.npz", backend="NPZ", batch_size=6))  # beside the net file
    spec, notes = bench_nets.net_file_spec(path)
    assert input_shapes_of(spec) == {"data": (6, 3, 7, 7), "label": (6,)}
    # --input-shape is for sources that cannot be read (it may be meant for another net file)
    assert input_shapes_of(bench_nets.net_file_spec(path, {"data": (2, 1, 3, 3)})[0]) == input_shapes_of(spec)
    assert notes == ["layer 'source' (Data) gave way to an Input of its tops' shapes: data 6x3x7x7, label 6"]
    assert bench_nets.main(["--nets", path, *quick]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith(path))
    assert f"note: {notes[0]}" in out
    if bench_nets.import_torch() is not None:
        assert re.search(r"gradients within \S+\)  ratio \d+\.\d\dx", line), line


def test_the_memory_subprocess_reads_no_source_it_is_given_the_shapes(tmp_path):
    """Arrays read in the measuring process, then freed, would hide the net's own growth."""
    np.savez(tmp_path / "train.npz", data=np.zeros((4, 2, 6, 6), np.float32), label=np.arange(4))
    path = data_net(tmp_path, data_layer(source=str(tmp_path / "train.npz"), backend="NPZ", batch_size=4))
    assert bench_nets.file_data_shapes(path) == {"data": (4, 2, 6, 6), "label": (4,)}
    (tmp_path / "train.npz").unlink()  # read once above; the subprocess could not read it
    assert 0 < bench_nets.measure_memory(path, "netlayers", 1) < 100


@pytest.mark.parametrize(
    "layer, shapes",
    [
        (data_layer(source="gone", batch_size=5, transform={"crop_size": 9, "mean_value": [1, 2, 3]}), (5, 3, 9, 9)),
        (data_layer(source="gone", batch_size=2, transform={"crop_size": 4, "force_gray": True}), (2, 1, 4, 4)),
        (
            data_layer(
                "ImageData",
                "image_data_param",
                source="gone.txt",
                batch_size=3,
                new_height=6,
                new_width=8,
                is_color=False,
            ),
            (3, 1, 6, 8),
        ),
        (data_layer("WindowData", "window_data_param", source="gone.txt", batch_size=4, crop_size=5), (4, 3, 5, 5)),
    ],
)
def test_a_data_layer_whose_source_is_gone_takes_its_shapes_from_its_params(tmp_path, layer, shapes):
    spec, _ = bench_nets.net_file_spec(data_net(tmp_path, layer))
    assert input_shapes_of(spec) == {"data": shapes, "label": shapes[:1]}
    net = bench_nets.new_net(spec)
    assert net.blobs["conv"].shape == (shapes[0], 4, shapes[2] - 2, shapes[3] - 2)


def test_given_input_shapes_fill_in_what_the_params_of_an_unread_source_do_not_say(tmp_path, quick, capsys):
    path = data_net(tmp_path, data_layer(source="gone", batch_size=3))  # no crop: the image size is unknown
    with pytest.raises(bench_nets.BenchError, match=r"could not be read \(.*gone.*\) .*--input-shape data=3,C,H,W$"):
        bench_nets.net_file_spec(path)
    spec, _ = bench_nets.net_file_spec(path, {"data": (3, 2, 5, 5)})
    assert input_shapes_of(spec) == {"data": (3, 2, 5, 5), "label": (3,)}
    assert bench_nets.main(["--nets", path, "--input-shape", "data=3,2,5,5", *quick]) == 0
    assert "data 3x2x5x5, label 3" in capsys.readouterr().out
    # a shape the params contradict (batch_size 3) is meant for another net
    with pytest.raises(bench_nets.BenchError, match=r"--input-shape data=8,2,5,5 does not fit .*give 3,C,H,W: "):
        bench_nets.net_file_spec(path, {"data": (8, 2, 5, 5)})
    with pytest.raises(bench_nets.BenchError, match=r"--input-shape label=3,1 does not fit "):
        bench_nets.net_file_spec(path, {"data": (3, 2, 5, 5), "label": (3, 1)})


def test_the_shipped_cifar10_quick_config_runs_with_its_image_size_given():
    path = str(Path(bench_nets.__file__).parents[1] / "configs" / "cifar10_quick.yaml")
    spec, notes = bench_nets.net_file_spec(path, {"data": (100, 3, 32, 32)})  # read or not: the same shapes
    assert notes == ["layer 'cifar' (Data) gave way to an Input of its tops' shapes: data 100x3x32x32, label 100"]
    net = bench_nets.build_netlayers(spec)
    assert np.isfinite(bench_nets.netlayers_step(net)) and net.blobs["ip2"].shape == (100, 10)


ZOO = Path(__file__).resolve().parent / "fixtures" / "zoo"


def test_caffes_own_training_nets_run_without_their_databases():
    """BVLC's train_val files as published: GoogLeNet's image shape is in its params (crop_size
    224, three mean_values); AlexNet's channels are in a mean file that is not there, so the
    error asks for them; the MNIST autoencoder (no crop) runs with its shape given."""
    googlenet, notes = bench_nets.net_file_spec(str(ZOO / "bvlc_googlenet" / "train_val.prototxt"))
    assert input_shapes_of(googlenet, "data") == {"data": (32, 3, 224, 224), "label": (32,)} and len(notes) == 1
    alexnet = str(ZOO / "bvlc_alexnet" / "train_val.prototxt")
    with pytest.raises(bench_nets.BenchError, match=r"ilsvrc12_train_lmdb.* --input-shape data=256,C,227,227$"):
        bench_nets.net_file_spec(alexnet)
    spec, _ = bench_nets.net_file_spec(alexnet, {"data": (256, 3, 227, 227)})
    assert input_shapes_of(spec, "data") == {"data": (256, 3, 227, 227), "label": (256,)}
    autoencoder, _ = bench_nets.net_file_spec(
        str(ZOO / "mnist" / "mnist_autoencoder.prototxt"), {"data": (100, 1, 28, 28)}
    )
    net = bench_nets.build_netlayers(autoencoder)
    assert np.isfinite(bench_nets.netlayers_step(net)) and net.blobs["decode1"].shape == (100, 784)


@pytest.mark.parametrize(
    "path", sorted(str(path) for path in ZOO.rglob("*.prototxt") if "solver" not in path.name), ids=lambda p: p[-48:]
)
def test_every_net_of_the_zoo_runs_as_published_or_says_which_shape_to_give(path):
    """Deploy nets stay as they are; a training net's data layers give way to Inputs, or, where
    their sources are not there and their params leave a dimension open, a one-line error names
    the ``--input-shape`` to give."""
    try:
        spec, notes = bench_nets.net_file_spec(path)
    except bench_nets.BenchError as error:
        said = r"could not be read \(.+\) nor its params give .* give it, e\.g\. --input-shape \S+=\S+"
        assert re.search(said, str(error))
        assert "\n" not in str(error)
        return
    if notes:
        phase = "TRAIN" if bench_nets.has_loss(spec) else "TEST"
        assert not any(bench_nets.reads_data(layer) for layer in bench_nets.train_layers(spec, phase))
        assert bench_nets.file_data_shapes(path)
    else:
        assert spec == path


def test_a_python_data_layer_is_set_up_alone_for_its_shapes(tmp_path):
    (tmp_path / "bench_source_layer.py").write_text(
        "import netlayers\n"
        "class Batches(netlayers.Layer):\n"
        "    def Reshape(self, bottom, top):\n"
        "        top[0].reshape((2, 1, 5, 5))\n"
        "        top[1].reshape((2,))\n"
        "    def Forward_cpu(self, bottom, top):\n"
        "        raise AssertionError('the benchmark reads no batch')\n"
    )
    python = {"name": "source", "type": "Python", "top": ["data", "label"]}
    python["python_param"] = {"module": "bench_source_layer", "layer": "Batches"}
    spec, _ = bench_nets.net_file_spec(data_net(tmp_path, python))
    assert input_shapes_of(spec) == {"data": (2, 1, 5, 5), "label": (2,)}


def test_a_data_layer_of_the_phase_not_run_stays(tmp_path):
    test_only = {**data_layer(source="gone", batch_size=3), "include": {"phase": "TEST"}}
    train = {
        **data_layer(source="gone", batch_size=3, transform={"crop_size": 4, "force_color": True}),
        "name": "train",
    }
    train["include"] = {"phase": "TRAIN"}
    path = tmp_path / "two.yaml"
    spec = bench_nets.net_spec(
        "two", [train, test_only, conv("conv", "data", 4, 3), inner_product("fc", "conv", 4), loss("fc")]
    )
    path.write_text(json.dumps(spec))
    built, notes = bench_nets.net_file_spec(str(path))
    assert [layer.type for layer in built.layers[:2]] == ["Input", "Data"] and len(notes) == 1
    assert input_shapes_of(built, "train") == {"data": (3, 3, 4, 4), "label": (3,)}


@pytest.mark.parametrize("value", ["data", "data=", "=3,4", "data=3,x", "data=0,3", "data=3,-1"])
def test_a_bad_input_shape_is_a_usage_error(value, capsys):
    with pytest.raises(SystemExit):
        bench_nets.parse_args(["--nets", "lenet", "--input-shape", value])
    assert "expected BLOB=D1,D2,..." in capsys.readouterr().err


# -- nets without a loss: forward only, in the TEST phase ------------------------------------
DEPLOY_PROTOTXT = """name: "tiny_deploy"
input: "data"
input_shape { dim: 2 dim: 3 dim: 6 dim: 6 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "msra" } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc"
  inner_product_param { num_output: 5 weight_filler { type: "xavier" } } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


def write_deploy(tmp_path, text=DEPLOY_PROTOTXT):
    """A Caffe deploy net file (a net-level input 2 x 3 x 6 x 6, a 3x3 convolution of 4, ReLU,
    max pool, InnerProduct 5, Softmax 'prob'; no loss)."""
    path = tmp_path / "deploy.prototxt"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("forward_only", [True, False])
def test_weights_a_file_leaves_at_zero_are_drawn_at_he_scale_and_filled_ones_kept(tmp_path, forward_only):
    """Caffe's deploy nets carry no fillers: their weights would be the constant 0 and every
    output the biases' alone. The benchmark draws them; a filler's weights and biases stay."""
    text = DEPLOY_PROTOTXT.replace(' weight_filler { type: "msra" }', "")
    net = bench_nets.new_net(write_deploy(tmp_path, text), forward_only=forward_only)
    weight, bias = (blob.data for blob in net.params["conv"])
    assert weight.any() and not bias.any()
    assert abs(weight.std() / np.sqrt(2 / 27) - 1) < 0.35  # 108 draws of variance 2 / (3 * 3 * 3)
    filled = bench_nets.netlayers.Net(write_deploy(tmp_path, text), dtype=np.float32, seed=bench_nets.SEED)
    np.testing.assert_array_equal(net.params["fc"][0].data, filled.params["fc"][0].data)  # xavier's


def batch_norm_deploy():
    """A deploy net (no loss) in YAML's terms: a 3x3 convolution without bias, BatchNorm, Scale
    (random scale and bias), ReLU, a Dropout of scale_train false (in TEST: times 1 - ratio),
    global average pooling and a plain InnerProduct 'fc' as the output."""
    random_affine = {"bias_term": True, "filler": GAUSSIAN, "bias_filler": GAUSSIAN}
    return tiny(
        "batch_norm_deploy",
        conv("conv", "data", 4, 3, pad=1, bias=False),
        layer("bn", "BatchNorm", "conv", "conv"),
        layer("scale", "Scale", "conv", "conv", scale_param=random_affine),
        relu("relu", "conv"),
        layer("drop", "Dropout", "conv", "conv", dropout_param={"dropout_ratio": 0.3, "scale_train": False}),
        layer("pool", "Pooling", "conv", pooling_param={"pool": "AVE", "global_pooling": True}),
        inner_product("fc", "pool", 3),
        inputs=(("data", (2, 3, 6, 6)),),
    )


def test_has_loss_reads_the_loss_weights_of_the_phase():
    assert bench_nets.has_loss(bench_nets.cifar10_quick(batch=2))
    assert not bench_nets.has_loss(batch_norm_deploy())
    weighted_zero = tiny(
        "zero", inner_product("fc", "data", 3), layer("l2", "EuclideanLoss", ["fc", "fc"], loss_weight=0)
    )
    assert not bench_nets.has_loss(weighted_zero)
    test_only = {**loss("fc"), "top": "loss", "include": {"phase": "TEST"}}
    spec = tiny("test_only", inner_product("fc", "data", 3), test_only)
    assert not bench_nets.has_loss(spec) and bench_nets.has_loss(spec, "TEST")


def test_a_net_without_a_loss_runs_forward_only_in_its_test_phase_against_pytorch_where_installed(
    tmp_path, quick, capsys
):
    deploy = write_deploy(tmp_path)
    yaml_net = tmp_path / "bn_deploy.yaml"
    yaml_net.write_text(json.dumps(batch_norm_deploy()))  # JSON is YAML
    assert bench_nets.main(["--nets", f"{deploy},{yaml_net}", *quick, "--busy"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("forward+backward per step (a net without a loss: forward only), float32")
    lines = out.splitlines()
    for path in (deploy, str(yaml_net)):
        line = next(line for line in lines if line.startswith(path))
        assert re.search(r"netlayers +\d+\.\d ms \(forward only\)", line) and "(loss" not in line, line
        if bench_nets.import_torch() is None:
            assert "PyTorch" not in line
        else:
            assert re.search(r"PyTorch +\d+\.\d ms \(forward only; outputs within \S+\)  ratio \d+\.\d\dx", line), line
        after = [line.strip() for line in lines[lines.index(line) + 1 : lines.index(line) + 3]]
        assert after[0].startswith("beside a busy process: netlayers") and after[1] == (
            f"note: {bench_nets.FORWARD_ONLY_NOTE}"
        )
        assert f"| {path} (forward only) | " in out  # the table's row


def test_the_test_phase_normalizes_with_the_stored_statistics_and_drops_nothing_on_both_sides():
    random_affine = {"bias_term": True, "filler": GAUSSIAN, "bias_filler": GAUSSIAN}
    spec = tiny(
        "stored_statistics",
        layer("bn", "BatchNorm", "data"),
        layer("scale", "Scale", "bn", "bn", scale_param=random_affine),
        layer("drop", "Dropout", "data", dropout_param={"dropout_ratio": 0.25, "scale_train": False}),
        inputs=(("data", (2, 3, 4, 4)),),
    )
    net = bench_nets.new_net(spec, forward_only=True)
    mean_sum, var_sum, count = net.params["bn"]
    assert net.phase == "TEST" and count.data[0] == 1 and (var_sum.data == 1).all()  # settled: none stored
    mean_sum.data[:], var_sum.data[:], count.data[:] = [0.5, -1.0, 2.0], [1.0, 4.0, 0.5], 2
    inputs = bench_nets.fixed_inputs(net)
    ours = {blob: value.copy() for blob, value in net.forward(**inputs).items()}
    x = inputs["data"].astype(np.float64)
    mean, var = (blob.data.reshape(1, 3, 1, 1) / 2 for blob in (mean_sum, var_sum))
    gamma, beta = (blob.data.reshape(1, 3, 1, 1) for blob in net.params["scale"])
    np.testing.assert_allclose(ours["bn"], (x - mean) / np.sqrt(var + 1e-5) * gamma + beta, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours["drop"], 0.75 * x, rtol=1e-6)
    if bench_nets.import_torch() is not None:
        params = bench_nets.netlayers_params_as_torch(net)
        step, module = bench_nets.build_torch(net.spec, inputs, params, forward_only=True)
        assert module.outputs == net.outputs == ["bn", "drop"] and not module.training and not module.random
        theirs = {blob: tensor.numpy() for blob, tensor in step().items()}
        assert bench_nets.check_same_outputs("stored_statistics", ours, theirs) < 1e-5


def test_the_gemm_floor_of_a_forward_only_net_counts_the_forward_products(tmp_path):
    net = bench_nets.new_net(write_deploy(tmp_path), forward_only=True)
    conv_products = 2 * (4 * 3 * 3 * 3) * (2 * 4 * 4)  # weights x output pixels
    fc_products = 2 * (5 * 4 * 2 * 2) * 2  # weights x rows
    assert bench_nets.gemm_flops(net, forward_only=True) == conv_products + fc_products
    lstm = bench_nets.new_net(bench_nets.lstm(steps=3, streams=2, features=4, hidden=5))
    rows = 3 * 2
    assert bench_nets.gemm_flops(lstm, forward_only=True) == 2 * (20 * 4 + 20 * 5) * rows + 2 * (10 * 5) * rows


def test_outputs_that_differ_stop_a_forward_only_run_naming_the_blob(tmp_path, quick, monkeypatch, capsys):
    ours = {"fc": np.arange(6, dtype=np.float32).reshape(2, 3), "prob": np.full((2, 3), 1 / 3, np.float32)}
    same = {blob: value * (1 + 1e-6) for blob, value in ours.items()}
    assert bench_nets.check_same_outputs("n", ours, same) < 1e-5
    with pytest.raises(bench_nets.ComputationMismatch, match="output blob 'prob' differs by 1.00e-02"):
        bench_nets.check_same_outputs("n", ours, {**same, "prob": ours["prob"] * 0.99})
    with pytest.raises(bench_nets.ComputationMismatch, match="output blob 'fc' has no PyTorch value"):
        bench_nets.check_same_outputs("n", ours, {"prob": ours["prob"]})
    with pytest.raises(bench_nets.ComputationMismatch, match=r"output blob 'fc' has shape \(2, 3\) in netlayers"):
        bench_nets.check_same_outputs("n", ours, {**same, "fc": ours["fc"].ravel()})
    torch = bench_nets.import_torch()
    if torch is not None:  # a twin whose Softmax is wrong: the run stops on its output
        path = write_deploy(tmp_path)
        softmax = torch.nn.functional.softmax
        monkeypatch.setattr(torch.nn.functional, "softmax", lambda x, dim, *rest, **named: softmax(2 * x, dim))
        with pytest.raises(
            bench_nets.ComputationMismatch, match=f"net '{re.escape(path)}': output blob 'prob' differs"
        ):
            bench_nets.bench_net(path, bench_nets.parse_args(["--nets", path, *quick]), torch)
        assert bench_nets.main(["--nets", path, *quick]) == 1
        errors = capsys.readouterr().err.splitlines()
        assert len(errors) == 1 and "output blob 'prob' differs" in errors[0] and path in errors[0]


def test_the_example_deploy_net_runs_forward_only(quick, capsys):
    path = str(Path(bench_nets.__file__).parent / "nets" / "lenet_deploy.prototxt")
    assert bench_nets.main(["--nets", path, *quick]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith(path))
    assert re.search(r"netlayers +\d+\.\d ms \(forward only\)", line) and "(0.29 GFLOP)" in line


def float32_mismatch(scale=None):
    """A stand-in for ``check_same_computation`` that finds the float32 sides apart, as a deep
    net's rounding does (ResNet-101 at batch 2: 0.12), after scaling netlayers' conv gradient by
    ``scale`` (a precision defect) when given."""

    def check(name, net, *rest):
        if scale is not None:
            net.params["conv"][0].diff[...] *= scale
        raise bench_nets.ComputationMismatch(f"net '{name}': gradient of layer 'conv' param 0 differs by 1.20e-01")

    return check


def test_a_float32_mismatch_the_float64_runs_settle_as_rounding_runs_with_a_note(tmp_path, quick, monkeypatch, capsys):
    assert bench_nets.import_torch() is not None, "the referee runs PyTorch's twin (torch: the test extra)"
    torch = bench_nets.import_torch()
    monkeypatch.setattr(bench_nets, "check_same_computation", float32_mismatch())
    path = write_net(tmp_path, relu("relu", "conv"))
    assert bench_nets.main(["--nets", path, *quick]) == 0
    lines = capsys.readouterr().out.splitlines()
    line = next(line for line in lines if line.startswith(path))
    note = lines[lines.index(line) + 1].strip()
    found = re.fullmatch(
        r"note: float32 rounding: the sides differ by (\S+); each from a float64 run of the same net \(the two agree "
        r"to 1e-06\) by (\S+) \(netlayers\) and (\S+) \(PyTorch\)",
        note,
    )
    assert found, note
    assert all(float(value) < 1e-4 for value in found.groups())  # a tiny net: float32 is close
    assert torch.get_default_dtype() == torch.float32  # the referee put the default back


def test_netlayers_rounding_far_beyond_pytorchs_stops_the_run(tmp_path, quick, monkeypatch, capsys):
    assert bench_nets.import_torch() is not None, "the referee runs PyTorch's twin (torch: the test extra)"
    monkeypatch.setattr(bench_nets, "check_same_computation", float32_mismatch(scale=1.1))
    path = write_net(tmp_path, relu("relu", "conv"))
    assert bench_nets.main(["--nets", path, *quick]) == 1
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 1 and path in errors[0], errors
    assert re.search(
        r"netlayers' float32 results are 1\.0\de-01 from its float64 run, PyTorch's \S+ from its own: more "
        r"than 3 times PyTorch's rounding \(net '.*': gradient of layer 'conv' param 0 differs",
        errors[0],
    )


def test_a_twin_that_differs_in_float64_too_stops_the_run_naming_both(tmp_path, quick, monkeypatch, capsys):
    assert bench_nets.import_torch() is not None, "the referee runs PyTorch's twin (torch: the test extra)"
    torch = bench_nets.import_torch()
    relu_ = torch.nn.functional.relu
    monkeypatch.setattr(torch.nn.functional, "relu", lambda x, inplace=False: 2 * relu_(x))
    path = write_net(tmp_path, relu("relu", "conv"))
    assert bench_nets.main(["--nets", path, *quick]) == 1
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 1, errors
    assert re.fullmatch(
        r"bench_nets: error: net '.*': (losses|gradient of layer .*) differ.*; in float64 too: "
        r"(losses|gradient of layer .*) differ.*",
        errors[0],
    ), errors[0]


def test_a_forward_only_mismatch_the_float64_runs_settle_runs_with_a_note(tmp_path, quick, monkeypatch, capsys):
    """The referee of a net without a loss compares the outputs of the float64 runs."""
    assert bench_nets.import_torch() is not None, "the referee runs PyTorch's twin (torch: the test extra)"
    check = bench_nets.check_same_outputs
    calls = []

    def first_call_finds_them_apart(name, ours, theirs, tolerance=bench_nets.LOSS_TOLERANCE):
        calls.append(tolerance)
        if len(calls) == 1:  # the float32 check: as a deep net's rounding would
            raise bench_nets.ComputationMismatch(f"net '{name}': output blob 'prob' differs by 2.00e-03")
        return check(name, ours, theirs, tolerance)

    monkeypatch.setattr(bench_nets, "check_same_outputs", first_call_finds_them_apart)
    path = write_deploy(tmp_path)
    assert bench_nets.main(["--nets", path, *quick]) == 0
    assert calls == [bench_nets.LOSS_TOLERANCE, bench_nets.REFEREE_TOLERANCE]  # then the float64 outputs'
    lines = capsys.readouterr().out.splitlines()
    line = next(line for line in lines if line.startswith(path))
    notes = [text.strip() for text in lines[lines.index(line) + 1 : lines.index(line) + 3]]
    assert any(note.startswith("note: float32 rounding: the sides differ by") for note in notes), notes


def test_a_mismatch_names_softmax_losses_clamped_at_the_dtypes_least_normal_value():
    """A float32 SoftmaxWithLoss whose label's probability falls below FLT_MIN counts
    -log(FLT_MIN), as Caffe's (a float64 one DBL_MIN's): the benchmark names such layers as a
    mismatch's likely cause (a label ignored, or probabilities above the bound, are not)."""
    spec = tiny(
        "clamped",
        {
            "name": "loss",
            "type": "SoftmaxWithLoss",
            "bottom": ["scores", "label"],
            "top": "loss",
            "loss_param": {"ignore_label": 2},
        },
        inputs=(("scores", (2, 3)), ("label", (2,))),
    )
    net = bench_nets.netlayers.Net(spec, dtype=np.float32)
    net.blobs["scores"].data[...] = [[0.0, 200.0, 0.0], [1.0, 0.0, 0.0]]
    for labels, clamped in (([0, 0], ["loss"]), ([1, 0], []), ([2, 0], [])):
        net.blobs["label"].data[...] = labels
        net.forward()
        assert bench_nets.clamped_softmax_losses(net) == clamped
        if clamped:
            expected = (-np.log(np.finfo(np.float32).tiny) + np.log(1 + 2 / np.e)) / 2
            assert float(net.blobs["loss"].data) == pytest.approx(expected, rel=1e-5)
            assert "below FLT_MIN" in bench_nets.clamp_cause(net)
        else:
            assert bench_nets.clamp_cause(net) == ""
    exact = bench_nets.netlayers.Net(spec, dtype=np.float64)  # netlayers' float64 nets clamp at DBL_MIN
    exact.blobs["label"].data[...] = [0, 0]
    for scores, clamped in ((200.0, []), (800.0, ["loss"])):
        exact.blobs["scores"].data[...] = [[0.0, scores, 0.0], [1.0, 0.0, 0.0]]
        exact.forward()
        assert bench_nets.clamped_softmax_losses(exact) == clamped
    assert "below DBL_MIN" in bench_nets.clamp_cause(exact) and "708.4" in bench_nets.clamp_cause(exact)


def test_a_forward_only_net_compares_the_scores_behind_its_last_softmax():
    """A deploy net's probabilities saturate to 0 and 1 with large scores, hiding any difference
    of the scores: a forward-only benchmark compares the bottoms of the Softmax layers whose
    tops nothing reads too (not those of a Softmax read further on), on both sides."""
    wide = {"num_output": 3, "weight_filler": {"type": "gaussian", "std": 100.0}}
    spec = tiny(
        "deploy",
        layer("fc", "InnerProduct", "data", inner_product_param=wide),
        layer("prob", "Softmax", "fc"),
        layer("fc2", "InnerProduct", "data", inner_product_param=wide),
        layer("p2", "Softmax", "fc2"),
        layer("scaled", "Power", "p2", power_param={"scale": 2}),
        inputs=(("data", (2, 4)),),
    )
    assert bench_nets.softmax_scores(bench_nets.train_layers(spec, "TEST")) == ["fc"]
    net = bench_nets.new_net(spec, forward_only=True)
    inputs = bench_nets.fixed_inputs(net)
    compared = bench_nets.with_scores(net, {k: v.copy() for k, v in net.forward(**inputs).items()})
    assert sorted(compared) == ["fc", "prob", "scaled"]
    theirs = {**compared, "fc": compared["fc"] * 1.01}  # the same probabilities, other scores
    with pytest.raises(bench_nets.ComputationMismatch, match="'fc'"):
        bench_nets.check_same_outputs("deploy", compared, theirs)
    if bench_nets.import_torch() is not None:
        step, module = bench_nets.build_torch(spec, inputs, bench_nets.netlayers_params_as_torch(net), True)
        assert module.outputs == ["fc", "prob", "scaled"]
        bench_nets.check_same_outputs("deploy", compared, {k: t.numpy() for k, t in step().items()})
