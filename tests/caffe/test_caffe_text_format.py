"""netlayers.caffe.text_format: nets and solvers written as Caffe's prototxt, read back the same."""

import math
from pathlib import Path

import numpy as np
import pytest

import netlayers
from netlayers.caffe.prototxt import parse_prototxt, solver_to_netlayers, to_netlayers
from netlayers.caffe.text_format import net_to_text, quote, solver_to_text
from netlayers.errors import ConfigError
from netlayers.netspec import Where, check_message, load_net_spec, load_yaml_file
from netlayers.solvers.base import SOLVER_FIELDS

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml")) + sorted((ROOT / "configs" / "examples").rglob("*.yaml"))
PROTOTXTS = sorted((ROOT / "tests" / "fixtures").rglob("*.prototxt"))
NET_PROTOTXTS = [path for path in PROTOTXTS if "solver" not in path.name]
SOLVER_PROTOTXTS = [path for path in PROTOTXTS if "solver" in path.name]


def spec_summary(spec):
    """Everything a checked net spec says, without where it was written."""
    layers = [
        (
            layer.name,
            layer.type,
            layer.bottoms,
            layer.tops,
            layer.params,
            layer.loss_weights,
            layer.propagate_down,
            layer.include,
            layer.exclude,
            layer.blocks,
        )
        for layer in spec.layers
    ]
    return spec.name, spec.force_backward, spec.random_seed, spec.dtype, layers


def read_back(text):
    return to_netlayers(parse_prototxt(text))


def test_the_configs_and_fixtures_cover_what_the_brief_names():
    assert len(CONFIGS) >= 10 and len(NET_PROTOTXTS) >= 1 and len(SOLVER_PROTOTXTS) >= 1


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_config_reads_back_as_the_same_spec(path, monkeypatch):
    """Written as prototxt and read by netlayers.caffe.prototxt, each shipped config is the same checked net:
    every layer, blob name, param spec, phase rule and checked parameter block."""
    monkeypatch.chdir(path.parent)  # a Python layer's module and imports are found from here
    text = net_to_text(load_yaml_file(path))
    assert "layer {" in text and "solver" not in text
    assert spec_summary(load_net_spec(read_back(text))) == spec_summary(load_net_spec(path))


@pytest.mark.parametrize("path", NET_PROTOTXTS, ids=lambda p: p.name)
def test_caffe_prototxt_fixtures_read_back_as_the_same_spec(path):
    original = read_back(path.read_text())
    text = net_to_text(original)
    assert spec_summary(load_net_spec(read_back(text))) == spec_summary(load_net_spec(original))
    assert net_to_text(read_back(text)) == text  # a fixed point: writing again changes nothing


@pytest.mark.parametrize("path", SOLVER_PROTOTXTS, ids=lambda p: p.name)
def test_caffe_solver_fixture_reads_back_the_same(path):
    original = solver_to_netlayers(parse_prototxt(path.read_text()))
    back = solver_to_netlayers(parse_prototxt(solver_to_text(original)))
    assert back == original


@pytest.mark.parametrize("path", [p for p in CONFIGS if "solver" in load_yaml_file(p)], ids=lambda p: p.name)
def test_solver_sections_read_back_as_the_same_checked_solver(path):
    solver = load_yaml_file(path)["solver"]
    back = solver_to_netlayers(parse_prototxt(solver_to_text(solver)))
    assert check_message(back, SOLVER_FIELDS, Where()) == check_message(solver, SOLVER_FIELDS, Where())


@pytest.mark.parametrize("name", ["sigmoid_neuron", "branch", "seed_mlp"])
def test_a_net_built_from_the_written_text_equals_the_original_net(name):
    """Built nets, not only specs: the same blobs, shapes and forward values."""
    path = ROOT / "configs" / "examples" / f"{name}.yaml"
    original = netlayers.Net(path, seed=3)
    rebuilt = netlayers.Net(read_back(net_to_text(load_yaml_file(path))), seed=3)
    assert spec_summary(rebuilt.spec) == spec_summary(original.spec)
    assert {k: b.data.shape for k, b in rebuilt.blobs.items()} == {k: b.data.shape for k, b in original.blobs.items()}
    for key in original.params:
        for mine, theirs in zip(rebuilt.params[key], original.params[key]):
            np.testing.assert_array_equal(mine.data, theirs.data)


def test_caffe_style_strings_quoted_enums_bare_and_blocks_nested():
    net = {
        "name": "tiny",
        "layers": [
            {
                "name": "pool1",
                "type": "Pooling",
                "bottom": "conv1",
                "top": "pool1",
                "pooling_param": {"kernel_size": 2, "pool": "max", "round_mode": "FLOOR"},
            },
            {
                "name": "d",
                "type": "Data",
                "top": ["data", "label"],
                "include": {"phase": "TRAIN"},
                "data_param": {"source": "x/train", "batch_size": 2, "backend": "IDX"},
                "transform_param": {"mean_value": [1, 2.5]},
            },
            {
                "type": "InnerProduct",
                "name": "ip",
                "param": [{"lr_mult": 1}, {"lr_mult": 2.0, "decay_mult": 0}],
                "inner_product_param": {"num_output": 10.0, "weight_filler": {"type": "xavier", "variance_norm": 1}},
            },
        ],
    }
    assert net_to_text(net) == (
        'name: "tiny"\n'
        "layer {\n"
        '  name: "pool1"\n  type: "Pooling"\n  bottom: "conv1"\n  top: "pool1"\n'
        "  pooling_param {\n    pool: MAX\n    kernel_size: 2\n    round_mode: FLOOR\n  }\n"
        "}\n"
        "layer {\n"
        '  name: "d"\n  type: "Data"\n  top: "data"\n  top: "label"\n'
        "  include {\n    phase: TRAIN\n  }\n"
        "  transform_param {\n    mean_value: 1\n    mean_value: 2.5\n  }\n"
        '  data_param {\n    source: "x/train"\n    batch_size: 2\n    backend: IDX\n  }\n'
        "}\n"
        "layer {\n"
        '  name: "ip"\n  type: "InnerProduct"\n'
        "  param {\n    lr_mult: 1\n  }\n  param {\n    lr_mult: 2\n    decay_mult: 0\n  }\n"
        "  inner_product_param {\n    num_output: 10\n"
        '    weight_filler {\n      type: "xavier"\n      variance_norm: FAN_OUT\n    }\n  }\n'
        "}\n"
    )


def test_solver_strings_of_caffe_proto_are_quoted_and_its_enums_bare():
    text = solver_to_text(
        {
            "type": "Adam",
            "lr_policy": "step",
            "regularization_type": "L1",
            "solver_mode": "CPU",
            "snapshot_format": "HDF5",
            "base_lr": "1e-3",  # YAML 1.1 reads this as a string; it is a number here
            "stepvalue": [10, 20],
        }
    )
    lines = text.splitlines()
    assert 'type: "Adam"' in lines and 'lr_policy: "step"' in lines and 'regularization_type: "L1"' in lines
    assert "solver_mode: CPU" in lines and "snapshot_format: HDF5" in lines
    assert "base_lr: 0.001" in lines and lines.count("stepvalue: 10") == 1 and "stepvalue: 20" in lines


@pytest.mark.parametrize(
    "text",
    ['a"b', "back\\slash", "new\nline", "tab\there", "nul\x00del\x7f", "it's", "ünïcødé ✓", "\r", "", "#not a comment"],
)
def test_strings_read_back_exactly(text):
    written = net_to_text({"name": text, "layers": [{"name": text, "type": "Split"}]})
    assert "\n" not in written.splitlines()[0]  # every value on one line
    back = read_back(written)
    assert back["name"] == text and back["layers"][0]["name"] == text
    assert quote(text).startswith('"') and quote(text).endswith('"')


@pytest.mark.parametrize(
    "value",
    [0.1, 1 / 3, 1e-300, 5e-324, 1e22, 2.5e16, -0.0, -7.25, float(np.float32(0.1)), 1.7976931348623157e308, 3.0],
)
def test_floats_read_back_to_the_same_value(value):
    written = net_to_text({"layers": [{"name": "p", "type": "Power", "power_param": {"scale": value}}]})
    back = read_back(written)["layers"][0]["power_param"]["scale"]
    assert back == value and math.copysign(1, back) == math.copysign(1, value)


def test_non_finite_floats_and_numpy_scalars_are_written_as_numbers():
    layer = {
        "name": "p",
        "type": "Power",
        "power_param": {"scale": np.float32(0.5), "shift": -math.inf, "power": math.nan},
    }
    text = net_to_text({"layers": [layer]})
    assert "scale: 0.5\n" in text and "shift: -inf\n" in text and "power: nan\n" in text
    back = read_back(text)["layers"][0]["power_param"]
    assert back["shift"] == -math.inf and math.isnan(back["power"])


def test_a_checked_spec_is_written_as_its_layers_as_given(tmp_path):
    spec = load_net_spec(ROOT / "configs" / "examples" / "branch.yaml")
    assert net_to_text(spec) == net_to_text(load_yaml_file(ROOT / "configs" / "examples" / "branch.yaml"))


def test_a_value_prototxt_cannot_hold_is_a_one_line_error():
    with pytest.raises(ConfigError, match=r"field 'scale': cannot write object value") as err:
        net_to_text({"layers": [{"name": "p", "type": "Power", "power_param": {"scale": object()}}]})
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="a mapping or a checked NetSpec"):
        net_to_text(["not", "a", "net"])
