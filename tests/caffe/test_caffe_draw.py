"""netlayers.caffe.draw: pycaffe's draw_net and draw_net_to_file."""

from pathlib import Path

import pytest

import netlayers
from netlayers import caffe
from netlayers.caffe import draw
from netlayers.caffe import layers as L
from netlayers.caffe import params as P
from netlayers.errors import NetlayersError
from netlayers.netspec import load_net_spec

ROOT = Path(__file__).resolve().parents[2]
LENET_PROTOTXT = ROOT / "tests" / "fixtures" / "caffe" / "lenet_train_test_fmnist.prototxt"
LENET_YAML = ROOT / "configs" / "lenet_fashion_mnist.yaml"

MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "pdf": b"%PDF-", "svg": b"<?xml"}


def small_net():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 1, 8, 8]))
    n.conv = L.Convolution(n.data, num_output=3, kernel_size=3, param=[dict(lr_mult=0.5), dict(lr_mult=2)])
    n.pool = L.Pooling(n.conv, pool=P.Pooling.AVE, kernel_size=2, stride=2)
    n.acc = L.Accuracy(n.pool, L.DummyData(shape=dict(dim=[2, 3, 3])), include=dict(phase=caffe.TEST))
    return n.to_proto()


@pytest.mark.parametrize("ext", sorted(MAGIC))
def test_draw_net_returns_image_bytes_of_the_format(ext):
    image = draw.draw_net(small_net(), "LR", ext=ext)
    assert image.startswith(MAGIC[ext]) and len(image) > 200
    if ext == "svg":
        assert b"<svg" in image and b"conv" in image and b"Pooling" in image


def test_raw_is_the_dot_text_with_every_layer_and_blob():
    dot = draw.draw_net(small_net(), "TB", ext="raw").decode()
    assert dot.startswith("digraph") and "rankdir=TB" in dot
    for name in ("data", "conv", "pool", "acc", "DummyData1", "(Convolution)", "pool: AVE"):
        assert name in dot


def dot_of(net, phase, **kwargs):
    return draw.draw_net(net, "LR", ext="raw", phase=phase, **kwargs).decode()


def test_phase_none_draws_every_layer_and_a_phase_only_its_own():
    every = dot_of(LENET_PROTOTXT, None)
    assert every.count("(Data)") == 2 and "(Accuracy)" in every and "all phases" in every
    train = dot_of(LENET_PROTOTXT, caffe.TRAIN)
    assert train.count("(Data)") == 1 and "fmnist_train_lmdb" in train and "(Accuracy)" not in train
    test = dot_of(LENET_PROTOTXT, 1)  # pycaffe passes caffe_pb2.Phase values: TEST is 1
    assert test.count("(Data)") == 1 and "fmnist_test_lmdb" in test and "(Accuracy)" in test
    assert dot_of(LENET_PROTOTXT, "test") == test


def test_display_lrm_shows_the_learning_rate_multipliers():
    assert "lr mult" not in dot_of(small_net(), None)
    assert "lr mult: 0.5, 2.0" in dot_of(small_net(), None, display_lrm=True)


@pytest.mark.parametrize("suffix", [".raw", ".dot"])
def test_draw_net_to_file_from_every_kind_of_net(tmp_path, suffix):
    nets = {
        "proto": small_net(),
        "yaml_path": str(LENET_YAML),
        "prototxt_path": LENET_PROTOTXT,
        "checked_spec": load_net_spec(LENET_YAML),
    }
    for name, net in nets.items():
        path = tmp_path / f"{name}{suffix}"
        draw.draw_net_to_file(net, str(path), phase=caffe.TEST)
        dot = path.read_text()
        assert dot.startswith("digraph") and "(Accuracy)" in dot, name
        assert dot.count("(Data)") == (0 if name == "proto" else 1), name  # the TEST phase's only


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_draw_net_to_file_renders_the_format_of_the_suffix(tmp_path, suffix):
    path = tmp_path / f"lenet{suffix}"
    draw.draw_net_to_file(str(LENET_YAML), path, "TB")
    assert path.read_bytes().startswith(MAGIC[suffix[1:]])


def test_a_built_net_is_drawn_with_its_blob_shapes():
    net = netlayers.Net(small_net(), phase="TEST")
    dot = dot_of(net, "TEST")
    assert "(2, 3, 6, 6)" in dot and "(2, 3, 3, 3)" in dot


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: draw.draw_net(small_net(), "LR", ext="jpg"), "cannot draw a net as 'jpg'"),
        (lambda: draw.draw_net(small_net(), "XY"), "rankdir must be one of LR, TB, BT, RL"),
        (lambda: draw.draw_net(small_net(), "LR", phase="VAL"), "phase must be None, TRAIN or TEST"),
        (lambda: draw.draw_net_to_file(small_net(), "/nonexistent-folder/net.png"), "does not exist"),
        (lambda: draw.draw_net_to_file(small_net(), "/nonexistent-folder/net.raw"), "cannot write"),
    ],
)
def test_mistakes_are_one_line_errors(call, message):
    with pytest.raises(NetlayersError) as err:
        call()
    assert message in str(err.value) and "\n" not in str(err.value)


def test_caffe_draw_is_this_module():
    assert caffe.draw is draw
