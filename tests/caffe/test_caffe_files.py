"""Caffe .caffemodel weights (netlayers.caffe.wire) and .prototxt nets/solvers (netlayers.caffe.prototxt)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from netlayers.caffe.prototxt import convert_prototxt, parse_prototxt, solver_to_netlayers, to_netlayers
from netlayers.caffe.wire import read_caffemodel
from netlayers.errors import ConfigError, DataError

CAFFE = Path(__file__).resolve().parents[1] / "fixtures" / "caffe"  # copied from shared/caffe
MODEL_2000 = CAFFE / "lenet_fmnist_iter_2000.caffemodel"
MODEL_10000 = CAFFE / "lenet_fmnist_iter_10000.caffemodel"
NET = CAFFE / "lenet_train_test_fmnist.prototxt"
SOLVER = CAFFE / "lenet_solver_fmnist.prototxt"
REPO = Path(__file__).resolve().parents[2]


LENET_SHAPES = {
    "conv1": [(20, 1, 5, 5), (20,)],
    "conv2": [(50, 20, 5, 5), (50,)],
    "ip1": [(500, 800), (500,)],
    "ip2": [(10, 500), (10,)],
}


# --- a tiny protobuf encoder, independent of the module's decoder, for hand-made files ---


def varint(n):
    """Base-128 varint bytes of a non-negative int (negative: 64-bit two's complement)."""
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_varint(number, value):
    return varint(number << 3 | 0) + varint(value)


def field_bytes(number, payload):
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def field_fixed32(number, raw4):
    return varint(number << 3 | 5) + raw4


# --- the real LeNet caffemodels ---


@pytest.mark.parametrize("path", [MODEL_2000, MODEL_10000], ids=["iter2000", "iter10000"])
def test_real_caffemodel_layers_and_shapes(path):
    blobs = read_caffemodel(path)
    assert list(blobs) == ["conv1", "conv2", "ip1", "ip2"]  # file order; no data/relu/loss
    for name, shapes in LENET_SHAPES.items():
        assert [b.shape for b in blobs[name]] == shapes
        for blob in blobs[name]:
            assert blob.dtype == np.float32
            assert np.all(np.isfinite(blob))
            assert np.any(blob != 0)


def test_the_two_snapshots_differ():
    early, late = read_caffemodel(MODEL_2000), read_caffemodel(MODEL_10000)
    for name in LENET_SHAPES:
        for a, b in zip(early[name], late[name]):
            assert a.shape == b.shape
            assert not np.array_equal(a, b)


@pytest.mark.parametrize(
    "path, expected",
    [
        (
            MODEL_2000,
            {
                "conv1": 0.8777199746837141,
                "conv2": -0.7965791488331888,
                "ip1": 97.67146558061961,
                "ip2": -3.7776410593942273,
                "ip1_bias": 2.4524614307301817,
            },
        ),
        (
            MODEL_10000,
            {
                "conv1": -1.1616570887854323,
                "conv2": -20.28372469522401,
                "ip1": -107.21917896375169,
                "ip2": -3.078829631966073,
                "ip1_bias": 0.5928627098110155,
            },
        ),
    ],
    ids=["iter2000", "iter10000"],
)
def test_blob_sums_are_stable(path, expected):
    blobs = read_caffemodel(path)
    for name in ("conv1", "conv2", "ip1", "ip2"):
        assert blobs[name][0].sum(dtype=np.float64) == pytest.approx(expected[name], rel=1e-9)
    assert blobs["ip1"][1].sum(dtype=np.float64) == pytest.approx(expected["ip1_bias"], rel=1e-9)


def _raw_packed_floats(raw, layer_name, count):
    """Find a layer's packed float data by hand: name field, then `data` (5) of count floats."""
    name_field = field_bytes(1, layer_name.encode())
    start = raw.index(name_field)
    header = field_bytes(5, b"")[:1] + varint(4 * count)  # key of field 5 (packed) + length
    offset = raw.index(header, start) + len(header)
    return np.frombuffer(raw, dtype="<f4", count=count, offset=offset)


@pytest.mark.parametrize("layer, count", [("conv1", 500), ("conv2", 25000), ("ip1", 400000)])
def test_decoder_agrees_with_hand_located_bytes(layer, count):
    raw = MODEL_10000.read_bytes()
    by_hand = _raw_packed_floats(raw, layer, count)
    decoded = read_caffemodel(MODEL_10000)[layer][0]
    assert decoded.size == count
    np.testing.assert_array_equal(decoded.ravel(), by_hand)


def test_decoded_arrays_are_writable_copies():
    blob = read_caffemodel(MODEL_2000)["conv1"][0]
    assert blob.flags.writeable and blob.flags.owndata
    blob[...] = 0  # must not fail or touch anything else


# --- errors ---


@pytest.mark.parametrize("keep", [10, 1000, 500000, -1])
def test_truncated_caffemodel_is_a_data_error_naming_the_file(tmp_path, keep):
    raw = MODEL_2000.read_bytes()
    bad = tmp_path / "cut.caffemodel"
    bad.write_bytes(raw[:keep])
    with pytest.raises(DataError) as info:
        read_caffemodel(bad)
    assert info.value.file == str(bad)
    assert "\n" not in str(info.value)
    assert str(bad) in str(info.value)


def test_prototxt_given_as_caffemodel_is_a_data_error(tmp_path):
    with pytest.raises(DataError) as info:
        read_caffemodel(NET)
    assert info.value.file == str(NET)
    assert "protobuf" in str(info.value)


def test_empty_missing_and_garbage_files(tmp_path):
    empty = tmp_path / "empty.caffemodel"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.caffemodel"
    garbage.write_bytes(bytes(range(7, 256)) * 10)
    for path in (empty, tmp_path / "missing.caffemodel", garbage):
        with pytest.raises(DataError) as info:
            read_caffemodel(path)
        assert info.value.file == str(path)


def test_shape_and_data_count_mismatch_is_a_data_error(tmp_path):
    shape = field_bytes(7, field_bytes(1, varint(3)))
    blob = shape + field_bytes(5, np.ones(2, "<f4").tobytes())
    layer = field_bytes(1, b"fc") + field_bytes(7, blob)
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(field_bytes(100, layer))
    with pytest.raises(DataError, match="layer 'fc' blob 0.*2 values.*needs 3"):
        read_caffemodel(path)


# --- hand-made files: legacy layouts and the other wire encodings ---


def test_legacy_v1_layers_with_4d_shape_unpacked_floats_and_doubles(tmp_path):
    weights = np.arange(6, dtype="<f4") - 2.5
    blob_unpacked = (
        field_varint(1, 1)
        + field_varint(2, 2)
        + field_varint(3, 1)
        + field_varint(4, 3)
        + b"".join(field_fixed32(5, w.tobytes()) for w in weights)
    )
    bias = np.array([0.25, -1e-3], dtype="<f8")
    blob_double = field_bytes(7, field_bytes(1, varint(2))) + field_bytes(8, bias.tobytes())
    v1_layer = (
        field_bytes(2, b"data")
        + field_bytes(3, b"fc")  # bottom, top
        + field_bytes(4, b"fc")
        + field_varint(5, 14)  # name, type INNER_PRODUCT
        + field_bytes(6, blob_unpacked)
        + field_bytes(6, blob_double)
    )
    v1_relu = field_bytes(4, b"relu") + field_varint(5, 18)
    net = field_bytes(1, b"old") + field_bytes(2, v1_layer) + field_bytes(2, v1_relu)
    path = tmp_path / "v1.caffemodel"
    path.write_bytes(net)

    blobs = read_caffemodel(path)
    assert list(blobs) == ["fc"]
    np.testing.assert_array_equal(blobs["fc"][0], weights.reshape(1, 2, 1, 3))
    assert blobs["fc"][1].dtype == np.float64  # double_data keeps its type; Net.load casts
    np.testing.assert_array_equal(blobs["fc"][1], bias)


def test_v0_layer_nested_in_v1(tmp_path):
    blob = field_bytes(7, field_bytes(1, varint(2) + varint(2))) + field_bytes(
        5, np.array([1, 2, 3, 4], "<f4").tobytes()
    )
    v0 = field_bytes(1, b"conv") + field_bytes(2, b"conv") + field_bytes(50, blob)
    path = tmp_path / "v0.caffemodel"
    path.write_bytes(field_bytes(2, field_bytes(1, v0)))
    blobs = read_caffemodel(path)
    np.testing.assert_array_equal(blobs["conv"][0], [[1, 2], [3, 4]])


def test_split_packed_chunks_and_unknown_fields_are_handled(tmp_path):
    dims = field_bytes(7, field_bytes(1, varint(4)))
    data = field_bytes(5, np.array([1, 2], "<f4").tobytes()) + field_bytes(5, np.array([3, 4], "<f4").tobytes())
    unknown = field_varint(99, 7) + varint(98 << 3 | 1) + b"\0" * 8  # skipped
    layer = field_bytes(1, b"x") + unknown + field_bytes(7, dims + data)
    path = tmp_path / "split.caffemodel"
    path.write_bytes(field_bytes(100, layer))
    np.testing.assert_array_equal(read_caffemodel(path)["x"][0], [1, 2, 3, 4])


# --- prototxt parsing ---


def test_parse_prototxt_values_and_syntax_forms():
    text = """
    # a comment
    name: "a \\"quoted\\" \\x41\\101\\n" "joined"   # trailing comment
    n: 3 f: -1.5e-3, g: 1.0f; h: 0x1F
    flag: true other: false mode: MAX neg: -inf
    msg { a: 1 }
    msg: { a: 2 b < c: "d" > }
    list: [1, 2, 3]
    empty: []
    """
    parsed = parse_prototxt(text)
    assert parsed["name"] == ['a "quoted" AA\njoined']
    assert parsed["n"] == [3] and parsed["f"] == [-0.0015] and parsed["g"] == [1.0]
    assert parsed["h"] == [31]
    assert parsed["flag"] == [True] and parsed["other"] == [False]
    assert parsed["mode"] == ["MAX"] and parsed["neg"] == [float("-inf")]
    assert parsed["msg"] == [{"a": [1]}, {"a": [2], "b": [{"c": ["d"]}]}]
    assert parsed["list"] == [1, 2, 3] and parsed["empty"] == []


@pytest.mark.parametrize(
    "text, line, words",
    [
        ('name: "x"\nlayer {\n  name: "a"\n', 2, "never closed"),
        ("a: 1\nb: 2\n}\n", 3, "unexpected '}'"),
        ("a: 1\nb 2\n", 2, "expected ':' or '{'"),
        ("a: 1\n\nb: 1abc\n", 3, "invalid number"),
        ('a: 1\nb: "open\n', 2, "unterminated string"),
        ('a: 1\nb: "\\q"\n', 2, "invalid escape"),
        ("a: [1\n 2]\n", 2, "expected ',' or ']'"),
        ("a {\n  b: }\n", 2, "expected a value"),
        ("a: 1\n  @\n", 2, "unexpected character"),
    ],
)
def test_syntax_errors_report_the_line(text, line, words):
    with pytest.raises(ConfigError) as info:
        parse_prototxt(text, filename="net.prototxt")
    err = info.value
    assert err.file == "net.prototxt" and err.line == line
    assert words in err.message
    assert str(err).startswith(f"net.prototxt:{line}: ")


# --- conversion to netlayers' form ---


def test_lenet_prototxt_converts():
    net = to_netlayers(parse_prototxt(NET.read_text(), filename=str(NET)))
    assert net["name"] == "LeNet_FashionMNIST"
    assert "layer" not in net
    layers = net["layers"]
    assert len(layers) == 11  # as written: two data layers (one per phase) and a TEST accuracy

    def phases(layer):
        return [rule["phase"] for rule in layer.get("include", [])] or ["TRAIN", "TEST"]

    assert sum("TRAIN" in phases(layer) for layer in layers) == 9
    assert sum("TEST" in phases(layer) for layer in layers) == 10
    by_name = {}
    for layer in layers:
        by_name.setdefault(layer["name"], []).append(layer)
    assert len(by_name) == 10
    data_train, data_test = by_name["mnist"]
    assert data_train["include"] == [{"phase": "TRAIN"}]
    assert data_test["include"] == [{"phase": "TEST"}]
    assert by_name["accuracy"][0]["include"] == [{"phase": "TEST"}]
    assert data_train["top"] == ["data", "label"]
    assert data_train["data_param"] == {"source": "fmnist_train_lmdb", "batch_size": 64, "backend": "LMDB"}
    assert data_train["transform_param"] == {"scale": 0.00390625}

    conv1 = by_name["conv1"][0]
    assert conv1["type"] == "Convolution"
    assert conv1["bottom"] == "data" and conv1["top"] == "conv1"
    assert conv1["param"] == [{"lr_mult": 1}, {"lr_mult": 2}]
    assert conv1["convolution_param"] == {
        "num_output": 20,
        "kernel_size": [5],
        "stride": [1],
        "weight_filler": {"type": "xavier"},
        "bias_filler": {"type": "constant"},
    }
    assert by_name["conv2"][0]["convolution_param"]["num_output"] == 50
    for name in ("conv1", "conv2", "ip1", "ip2"):
        assert [p["lr_mult"] for p in by_name[name][0]["param"]] == [1, 2]
    assert by_name["pool1"][0]["pooling_param"] == {"pool": "MAX", "kernel_size": 2, "stride": 2}
    assert by_name["ip1"][0]["inner_product_param"]["num_output"] == 500
    assert by_name["loss"][0]["bottom"] == ["ip2", "label"]
    assert by_name["relu1"][0] == {"name": "relu1", "type": "ReLU", "bottom": "ip1", "top": "ip1"}


def test_lenet_solver_converts():
    solver = solver_to_netlayers(parse_prototxt(SOLVER.read_text(), filename=str(SOLVER)))
    assert solver["base_lr"] == pytest.approx(0.01)
    assert solver["lr_policy"] == "inv"
    assert solver["gamma"] == pytest.approx(0.0001)
    assert solver["power"] == pytest.approx(0.75)
    assert solver["momentum"] == pytest.approx(0.9)
    assert solver["weight_decay"] == pytest.approx(0.0005)
    assert solver["max_iter"] == 10000
    assert solver["test_iter"] == [100]
    assert solver["test_interval"] == 1000
    assert solver["solver_mode"] == "CPU"
    assert solver["net"] == "lenet_train_test_fmnist.prototxt"


def test_repeated_field_table_follows_the_message_type():
    text = """
    input: "data"
    input_shape { dim: 1 dim: 3 }
    layer { name: "in" type: "Input" top: "x" top: "y"
            input_param { shape { dim: 2 } } }
    layer { name: "r" type: "Reshape" bottom: "x" top: "z"
            reshape_param { shape { dim: 0 dim: -1 } } }
    layer { name: "s" type: "Slice" bottom: "z" top: "a" top: "b"
            slice_param { axis: 1 slice_point: 3 } loss_weight: 1 }
    layer { name: "e" type: "Eltwise" bottom: "a" bottom: "b" top: "c"
            eltwise_param { operation: SUM coeff: 1 coeff: -1 } }
    layer { name: "d" type: "Data" top: "t" transform_param { mean_value: 104 } }
    layer { name: "u" type: "Custom" custom_param { k: 1 k: 2 one: 3 } }
    """
    net = to_netlayers(parse_prototxt(text))
    assert net["input"] == ["data"] and net["input_shape"] == [{"dim": [1, 3]}]
    inp, reshape, slice_, eltwise, data, custom = net["layers"]
    assert inp["input_param"] == {"shape": [{"dim": [2]}]}
    assert reshape["reshape_param"] == {"shape": {"dim": [0, -1]}}  # optional in caffe.proto
    assert slice_["slice_param"] == {"axis": 1, "slice_point": [3]}
    assert slice_["loss_weight"] == [1]
    assert eltwise["eltwise_param"] == {"operation": "SUM", "coeff": [1, -1]}
    assert data["transform_param"] == {"mean_value": [104]}
    assert custom["custom_param"] == {"k": [1, 2], "one": 3}  # unknown: repeats kept as lists


def test_solver_with_multistep_and_inline_net():
    text = (
        'stepvalue: 10 stepvalue: 20 test_net: "t.prototxt" test_iter: 5\n'
        'net_param { name: "n" layer { name: "a" type: "ReLU" bottom: "x" top: "x" } }'
    )
    solver = solver_to_netlayers(parse_prototxt(text))
    assert solver["stepvalue"] == [10, 20]
    assert solver["test_net"] == ["t.prototxt"] and solver["test_iter"] == [5]
    assert solver["net_param"]["layers"] == [{"name": "a", "type": "ReLU", "bottom": "x", "top": "x"}]


def test_legacy_v0_prototxt_is_a_clear_error(tmp_path):
    path = tmp_path / "v0.prototxt"
    path.write_text('name: "old"\nlayers {\n  layer { name: "r" type: "relu" }\n}\n')
    with pytest.raises(ConfigError, match="V0 format .*upgrade_net_proto_text") as info:
        convert_prototxt(path)
    assert info.value.file == str(path) and info.value.line == 2


# --- YAML output ---


def test_convert_prototxt_round_trips_through_yaml():
    text = convert_prototxt(NET, solver_path=SOLVER)
    loaded = yaml.safe_load(text)
    net = to_netlayers(parse_prototxt(NET.read_text()))
    solver = solver_to_netlayers(parse_prototxt(SOLVER.read_text()))
    del solver["net"]
    assert loaded == {**net, "solver": solver}
    assert list(loaded) == ["name", "layers", "solver"]
    assert "net" not in loaded["solver"]
    assert "- name: conv1" in text and "!!" not in text  # readable, no Python tags


def test_convert_prototxt_without_solver():
    loaded = yaml.safe_load(convert_prototxt(NET))
    assert "solver" not in loaded and len(loaded["layers"]) == 11


def test_convert_prototxt_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.prototxt"
    with pytest.raises(ConfigError) as info:
        convert_prototxt(missing)
    assert info.value.file == str(missing)
    bad_solver = tmp_path / "solver.prototxt"
    bad_solver.write_text('base_lr: 0.1\nlr_policy: "inv\n')
    net = tmp_path / "net.prototxt"
    net.write_text('name: "n"\n')
    with pytest.raises(ConfigError) as info:
        convert_prototxt(net, solver_path=bad_solver)
    assert (info.value.file, info.value.line) == (str(bad_solver), 2)


# --- command line ---


def run_tool(*args):
    return subprocess.run(
        [sys.executable, "-m", "netlayers", "convert", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def test_tool_writes_yaml(tmp_path):
    out = tmp_path / "lenet.yaml"
    result = run_tool(NET, "--solver", SOLVER, "-o", out)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(out.read_text()) == yaml.safe_load(convert_prototxt(NET, SOLVER))


def test_tool_prints_to_stdout_without_output_option():
    result = run_tool(NET)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["name"] == "LeNet_FashionMNIST"


def test_tool_bad_input_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.prototxt"
    bad.write_text('name: "x"\nlayer {\n  name: "a"\n')
    for args in ([bad], [tmp_path / "missing.prototxt"]):
        result = run_tool(*args)
        assert result.returncode == 2
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and str(args[0]) in lines[0]
    assert f"{bad}:2:" in run_tool(bad).stderr


@pytest.mark.parametrize(
    "inputs",
    [
        'input: "data"\ninput_shape { dim: 2 dim: 1 dim: 6 dim: 6 }\n',
        'input: "data"\ninput_dim: 2\ninput_dim: 1\ninput_dim: 6\ninput_dim: 6\n',
    ],
)
def test_a_deploy_prototxt_with_net_level_inputs_builds(tmp_path, inputs):
    from netlayers import Net

    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(
        'name: "tiny_deploy"\n'
        + inputs
        + """
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 3 kernel_size: 3 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "prob" type: "Softmax" bottom: "conv" top: "prob" }
"""
    )
    path = tmp_path / "deploy.yaml"
    path.write_text(convert_prototxt(deploy))
    net = Net(path)
    assert net.layer_names == ["input", "conv", "relu", "prob"] and net.inputs == ["data"]
    assert net.blobs["prob"].shape == (2, 3, 4, 4) and net.outputs == ["prob"]


def test_net_level_inputs_need_one_shape_each():
    from netlayers import Net

    layers = [
        {"name": "ip", "type": "InnerProduct", "bottom": "a", "top": "z", "inner_product_param": {"num_output": 2}}
    ]
    with pytest.raises(ConfigError, match="2 input\\(s\\) but 1 input_shape\\(s\\)"):
        Net({"name": "n", "input": ["a", "b"], "input_shape": [{"dim": [1, 3]}], "layers": layers})
    with pytest.raises(ConfigError, match="each input needs a shape"):
        Net({"name": "n", "input": ["a"], "layers": layers})


def test_the_field_tables_come_from_the_declarations():
    """Repeated and nested fields are those netlayers declares (no hand-kept table to drift):
    the solver's weights (repeated in caffe.proto), a block of a layer type added since, a net
    state inside a solver, a net written inline in a solver."""
    solver = solver_to_netlayers(
        parse_prototxt(
            'weights: "a.caffemodel"\nbase_lr: 0.1\ntest_state { stage: "x" }\n'
            'net_param { layer { name: "c" type: "Clip" bottom: "x" top: "x" clip_param { min: 0 max: 1 } } }'
        )
    )
    assert solver["weights"] == ["a.caffemodel"] and solver["test_state"] == [{"stage": ["x"]}]
    assert solver["net_param"]["layers"] == [
        {"name": "c", "type": "Clip", "bottom": "x", "top": "x", "clip_param": {"min": 0, "max": 1}}
    ]
    net = to_netlayers(
        parse_prototxt(
            'layer { name: "l" type: "LSTM" bottom: "x" bottom: "c" top: "h" recurrent_param { num_output: 2 } }\n'
            'layer { name: "t" type: "DummyData" top: "t" dummy_data_param { shape { dim: 2 } } }'
        )
    )
    assert net["layers"][0]["recurrent_param"] == {"num_output": 2}
    assert net["layers"][1]["dummy_data_param"] == {"shape": [{"dim": [2]}]}
