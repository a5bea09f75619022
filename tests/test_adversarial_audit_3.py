"""Third adversarial pass (issue 9): hostile Caffe files, inspection options and metrics files.

Each test reproduces a defect found by the pass (a traceback, an internal error or a misleading
result) and checks the clean one-line refusal that replaced it.
"""

from pathlib import Path

import numpy as np
import pytest

from netlayers.caffe.prototxt import parse_prototxt
from netlayers.caffe.wire import read_caffemodel
from netlayers.cli.main import main
from netlayers.errors import ConfigError, DataError, NetlayersError
from netlayers.inspect.plotting import load_metrics

NET_YAML = """\
name: small
layers:
  - {name: data, type: DummyData, top: [x, label], dummy_data_param: {shape: [{dim: [4, 3]}, {dim: [4]}],
     data_filler: [{type: gaussian}, {type: constant, value: 1}]}}
  - {name: ip, type: InnerProduct, bottom: x, top: y, inner_product_param: {num_output: 2}}
  - {name: loss, type: SoftmaxWithLoss, bottom: [y, label], top: loss}
"""


def _varint(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if not n:
            return bytes(out + bytes([byte]))
        out.append(byte | 0x80)


def _field(number, payload):
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def test_caffemodel_blob_with_a_zero_and_huge_dimensions_is_a_data_error(tmp_path):
    # shape (0, 2**62, 2**62) holds no values, so it passed the size check and numpy then
    # raised "array is too big" (ValueError) from np.empty.
    dims = _field(1, b"".join(_varint(d) for d in (0, 2**62, 2**62)))
    layer = _field(1, b"ip") + _field(7, _field(7, dims))
    path = tmp_path / "hostile.caffemodel"
    path.write_bytes(_field(100, layer))
    with pytest.raises(DataError, match="larger than Caffe allows") as caught:
        read_caffemodel(path)
    assert str(path) in str(caught.value)


def test_caffemodel_blob_with_a_zero_dimension_still_loads(tmp_path):
    dims = _field(1, b"".join(_varint(d) for d in (0, 3)))
    path = tmp_path / "empty_blob.caffemodel"
    path.write_bytes(_field(100, _field(1, b"ip") + _field(7, _field(7, dims))))
    assert read_caffemodel(path)["ip"][0].shape == (0, 3)


@pytest.mark.parametrize("literal", ["9" * 5000, "-" + "9" * 5000, "0x" + "f" * 5000, "18446744073709551616"])
def test_prototxt_integer_past_64_bits_is_a_config_error(literal):
    # 5000 digits raised Python's int-conversion ValueError; a long hex literal parsed, then
    # failed as a ValueError when written out as YAML.
    with pytest.raises(ConfigError, match="out of range") as caught:
        parse_prototxt(f"layer {{\n  name: 'a'\n  x: {literal}\n}}\n", filename="net.prototxt")
    assert "net.prototxt:3" in str(caught.value)
    assert len(str(caught.value)) < 200


def test_prototxt_largest_64_bit_integer_is_kept():
    assert parse_prototxt("x: 18446744073709551615")["x"] == [2**64 - 1]


@pytest.fixture
def net_file(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text(NET_YAML)
    return path


@pytest.mark.parametrize("command", ["gradcheck", "time", "explain"])
def test_negative_seed_is_an_option_error(command, net_file, capsys):
    # was "internal error ... ValueError: expected non-negative integer" from numpy.
    with pytest.raises(SystemExit) as exit_:
        main([command, "--config", str(net_file), "--seed", "-1"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--seed: must be at least 0" in err
    assert "internal error" not in err


@pytest.mark.parametrize("threshold", ["nan", "inf", "0", "-1"])
def test_gradcheck_threshold_must_be_positive_and_finite(threshold, net_file, capsys):
    # nan failed every layer and inf passed every layer, both with a normal-looking report.
    with pytest.raises(SystemExit) as exit_:
        main(["gradcheck", "--config", str(net_file), "--threshold", threshold])
    assert exit_.value.code == 2
    assert "--threshold: must be a finite number above 0" in capsys.readouterr().err


def test_plot_of_a_binary_metrics_file_is_a_data_error(tmp_path):
    # was "internal error ... UnicodeDecodeError".
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_bytes(bytes(range(128, 256)) * 4)
    with pytest.raises(DataError, match="not UTF-8") as caught:
        load_metrics(tmp_path)
    assert str(metrics) in str(caught.value)


def test_plot_reads_metrics_as_utf8_with_file_line_numbers(tmp_path):
    lines = ['{"phase": "train", "iter": 1, "loss": 0.5, "note": "é"}', "", '{"phase": "train", "iter": 2']
    Path(tmp_path / "metrics.jsonl").write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(DataError, match=r"metrics.jsonl:3: not valid JSON"):
        load_metrics(tmp_path)


def _memory_net():
    from netlayers.net import Net

    spec = {
        "name": "memory",
        "layers": [
            {
                "name": "d",
                "type": "MemoryData",
                "top": ["x", "label"],
                "memory_data_param": {"batch_size": 2, "channels": 1, "height": 2, "width": 2},
            },
            {"name": "ip", "type": "InnerProduct", "bottom": "x", "top": "y", "inner_product_param": {"num_output": 2}},
            {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["y", "label"], "top": "loss"},
        ],
    }
    return Net(spec, "TRAIN")


@pytest.mark.parametrize(
    "data, labels, expected",
    [
        (np.ones((4, 1, 2, 2)), np.zeros((4, 3)), "labels must be a 1-D array"),  # was a broadcast ValueError
        (np.ones((4, 1, 2, 2)), np.float32(0), "labels must be a 1-D array"),  # was len() of unsized object
        (np.full((4, 1, 2, 2), "a"), np.zeros(4), "data must hold real numbers"),  # was float() ValueError
        (np.ones((4, 1, 2, 2), complex), np.zeros(4), "data must hold real numbers"),  # was a silent cast
    ],
)
def test_memory_data_refuses_labels_not_1d_and_non_real_arrays(data, labels, expected):
    net = _memory_net()
    with pytest.raises(NetlayersError, match=expected) as caught:
        net.set_input_arrays(data, labels)
    assert "layer 'd'" in str(caught.value)
    net.set_input_arrays(np.ones((4, 1, 2, 2), np.int64), np.zeros(4, bool))  # integers and bools still do
    assert np.isfinite(net.forward()["loss"])


def test_memory_data_refuses_transform_param_it_would_ignore():
    # crop_size 100 on 2x2 items and a missing mean_file were accepted, then silently ignored.
    from netlayers.net import Net

    spec = {
        "name": "memory",
        "layers": [
            {
                "name": "d",
                "type": "MemoryData",
                "top": ["x", "label"],
                "memory_data_param": {"batch_size": 2, "channels": 1, "height": 2, "width": 2},
                "transform_param": {"crop_size": 100},
            }
        ],
    }
    with pytest.raises(ConfigError, match="field 'transform_param': unknown field"):
        Net(spec, "TRAIN")


def test_caffemodel_weights_of_another_layout_are_refused_legacy_4d_still_load(tmp_path):
    # (3, 2) weights were reshaped into a (2, 3) InnerProduct (same count): silently scrambled.
    import struct

    from netlayers.net import Net

    def blob(dims, values):
        shape = _field(7, _field(1, b"".join(_varint(d) for d in dims)))
        return _field(7, shape + _field(5, struct.pack(f"<{len(values)}f", *values)))

    spec = {
        "name": "m",
        "layers": [
            {"name": "data", "type": "Input", "top": "x", "input_param": {"shape": [{"dim": [2, 3]}]}},
            {"name": "ip", "type": "InnerProduct", "bottom": "x", "top": "y", "inner_product_param": {"num_output": 2}},
        ],
    }
    bias = blob([2], [0.0, 0.0])
    transposed = tmp_path / "transposed.caffemodel"
    transposed.write_bytes(_field(100, _field(1, b"ip") + blob([3, 2], [1.0] * 6) + bias))
    with pytest.raises(ConfigError, match=r"shape \(3, 2\), the net expects \(2, 3\)"):
        Net(spec, "TEST").load(transposed)
    legacy = tmp_path / "legacy.caffemodel"
    legacy.write_bytes(_field(100, _field(1, b"ip") + blob([1, 1, 2, 3], [1.0] * 6) + bias))
    net = Net(spec, "TEST")
    net.load(legacy)
    assert np.array_equal(net.params["ip"][0].data, np.ones((2, 3)))
