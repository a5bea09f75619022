"""netlayers/caffe/upgrade.py and reading Caffe prototxt files as they are."""

from pathlib import Path

import numpy as np
import pytest

from netlayers import ConfigError, Net, Predictor
from netlayers.data.idx import read_idx
from netlayers.netspec import load_config_file

ROOT = Path(__file__).resolve().parent
V1 = ROOT / "fixtures" / "caffe_v1" / "lenet_v1_fmnist.prototxt"
CURRENT = ROOT / "fixtures" / "caffe" / "lenet_train_test_fmnist.prototxt"
WEIGHTS = ROOT / "fixtures" / "caffe" / "lenet_fmnist_iter_10000.caffemodel"
IMAGES = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


def summary(layer):
    """What a layer is, without how it was written (param entries' names differ)."""
    params = [{k: v for k, v in p.items() if k in ("lr_mult", "decay_mult")} for p in layer.get("param", [])]
    blocks = {k: v for k, v in layer.items() if k.endswith("_param") and k != "param"}
    return (layer["name"], layer["type"], layer.get("bottom"), layer.get("top"), layer.get("include"), blocks, params)


def test_v1_lenet_upgrades_to_the_current_lenet():
    old, new = load_config_file(V1), load_config_file(CURRENT)
    assert [layer["type"] for layer in old["layers"]] == [layer["type"] for layer in new["layers"]]
    for upgraded, current in zip(old["layers"], new["layers"]):
        u, c = summary(upgraded), summary(current)
        assert u[:6] == c[:6]
        assert [p.get("lr_mult") for p in u[6]] == [p.get("lr_mult") for p in c[6]]
    ip1 = next(layer for layer in old["layers"] if layer["name"] == "ip1")
    assert ip1["param"] == [{"lr_mult": 1, "decay_mult": 1}, {"lr_mult": 2, "decay_mult": 0}]
    ip2 = next(layer for layer in old["layers"] if layer["name"] == "ip2")
    assert [p["name"] for p in ip2["param"]] == ["ip2_w", "ip2_b"]
    data = old["layers"][0]
    assert data["transform_param"] == {"scale": 0.00390625} and "scale" not in data["data_param"]


def test_v1_lenet_with_caffes_weights_predicts_as_the_current_one():
    images = read_idx(IMAGES)[:50]
    old = Predictor(V1, WEIGHTS).predict(images)
    new = Predictor(CURRENT, WEIGHTS).predict(images)
    np.testing.assert_array_equal(old, new)


def test_errors_in_a_prototxt_name_its_line(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(
        'name: "n"\ninput: "data"\ninput_shape { dim: 1 dim: 4 }\n'
        'layer {\n  name: "ip"\n  type: "InnerProduct"\n  bottom: "data"\n  top: "ip"\n'
        "  inner_product_param {\n    num_outputs: 3\n  }\n}\n"
    )
    with pytest.raises(ConfigError) as info:
        Net(path)
    assert info.value.file == str(path) and info.value.line == 10
    assert "did you mean 'num_output'" in str(info.value)


def test_v1_unknown_type_and_mixed_formats_are_one_line(tmp_path):
    path = tmp_path / "v1.prototxt"
    path.write_text('name: "n"\nlayers {\n  name: "r"\n  type: RELUU\n}\n')
    with pytest.raises(ConfigError, match="unknown V1 layer type 'RELUU'") as info:
        load_config_file(path)
    assert info.value.line == 4
    path.write_text('layers { name: "r" type: RELU }\nlayer { name: "s" type: "ReLU" }\n')
    with pytest.raises(ConfigError, match="mixes 'layer' and legacy 'layers'"):
        load_config_file(path)


def test_net_state_stages_and_levels_select_layers(tmp_path):
    """Caffe's NetStateRule: stage, not_stage, min_level, max_level; the net's own state."""
    layers = [
        {"name": "data", "type": "Input", "top": "x", "input_param": {"shape": {"dim": [1, 2]}}},
        {"name": "a", "type": "ReLU", "bottom": "x", "top": "a", "include": {"stage": "deploy"}},
        {"name": "b", "type": "ReLU", "bottom": "x", "top": "b", "exclude": {"stage": "deploy"}},
        {"name": "c", "type": "ReLU", "bottom": "x", "top": "c", "include": {"min_level": 1}},
        {"name": "d", "type": "ReLU", "bottom": "x", "top": "d", "include": {"max_level": 0, "not_stage": "x"}},
        {
            "name": "e",
            "type": "ReLU",
            "bottom": "x",
            "top": "e",
            "include": [{"stage": ["s1", "s2"]}, {"phase": "TRAIN", "stage": "t"}],
        },
    ]
    config = {"name": "n", "layers": layers}

    def names(phase="TEST", config=config, **state):
        return [name for name in Net(config, phase, **state).layer_names if not name.endswith("_split")]

    assert names() == ["data", "b", "d"]
    assert names(stages=["deploy"]) == ["data", "a", "d"]
    assert names(level=1) == ["data", "b", "c"]
    assert names(stages=["x"]) == ["data", "b"]
    assert names(stages=["s1"]) == ["data", "b", "d"] and "e" in names(stages=["s2", "s1"])
    assert names("TRAIN", stages=["t"]) == ["data", "b", "d", "e"]
    assert names(config={**config, "state": {"stage": ["deploy"], "level": 1}}) == ["data", "a", "c"]
    with pytest.raises(ConfigError, match="stages must be a list of names"):
        Net(config, stages="deploy")


def test_a_block_the_layer_does_not_read_is_a_warning_a_typo_an_error(tmp_path):
    from netlayers.errors import NetlayersWarning

    layer = {"name": "data", "type": "Input", "top": "data", "input_param": {"shape": {"dim": [1, 3]}}}
    with pytest.warns(NetlayersWarning, match="layer 'data': field 'pooling_param': ignored: Input layers do not read"):
        Net({"name": "v", "layers": [{**layer, "pooling_param": {"pool": "MAX"}}]})
    with pytest.raises(ConfigError, match="unknown field .*did you mean 'pooling_param'"):
        Net({"name": "v", "layers": [{**layer, "pooling_parm": {"pool": "MAX"}}]})
