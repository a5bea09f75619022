"""Every config mistake is one line naming file, line, layer and what is expected."""

import textwrap

import numpy as np
import pytest

from netlayers import ConfigError, Net
from netlayers.netspec import load_net_spec

GOOD = """\
name: tiny
layers:
  - name: data
    type: Input
    top: [x, y]
    input_param: {shape: [{dim: [2, 3]}, {dim: [2]}]}
  - name: ip
    type: InnerProduct
    bottom: x
    top: z
    inner_product_param: {num_output: 4}
  - name: loss
    type: SoftmaxWithLoss
    bottom: [z, y]
    top: loss
"""


def write(tmp_path, text):
    path = tmp_path / "net.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def error_of(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        Net(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    return message


def test_good_config_builds(tmp_path):
    net = Net(write(tmp_path, GOOD))
    assert [layer.name for layer in net.layers] == ["data", "ip", "loss"]


def test_malformed_yaml_names_the_line(tmp_path):
    message = error_of(tmp_path, GOOD.replace("top: z", "top: [z"))
    assert "malformed YAML" in message and ":" in message


def test_unknown_layer_field_suggests_close_match(tmp_path):
    message = error_of(tmp_path, GOOD.replace("    bottom: x\n", "    botom: x\n"))
    assert ":9: layer 'ip': field 'botom': unknown field (did you mean 'bottom'?)" in message


def test_unknown_param_field_names_block_and_line(tmp_path):
    message = error_of(tmp_path, GOOD.replace("{num_output: 4}", "{num_outputs: 4}"))
    assert ":11: layer 'ip': field 'inner_product_param.num_outputs'" in message
    assert "did you mean 'num_output'" in message


def test_wrong_type_says_what_is_expected(tmp_path):
    message = error_of(tmp_path, GOOD.replace("{num_output: 4}", "{num_output: four}"))
    assert "field 'inner_product_param.num_output': expected an integer, got 'four'" in message


def test_missing_required_field(tmp_path):
    message = error_of(tmp_path, GOOD.replace("{num_output: 4}", "{bias_term: false}"))
    assert "inner_product_param.num_output" in message and "required" in message


def test_unknown_layer_type_lists_close_names(tmp_path):
    message = error_of(tmp_path, GOOD.replace("type: InnerProduct", "type: InnerProdukt"))
    assert ":8: layer 'ip'" in message and "did you mean 'InnerProduct'" in message


def test_unknown_layer_type_far_from_every_name_lists_them_all(tmp_path):
    message = error_of(tmp_path, GOOD.replace("type: InnerProduct", "type: Fully"))
    assert ":8: layer 'ip'" in message and "known types: AbsVal, Accuracy" in message
    assert "InnerProduct" in message and "\n" not in message


def test_unknown_layer_type_is_matched_ignoring_case(tmp_path):
    message = error_of(tmp_path, GOOD.replace("type: InnerProduct", "type: innerproduct"))
    assert "did you mean 'InnerProduct'?" in message


def test_unknown_filler_type_is_found_before_setup_at_its_own_line(tmp_path):
    message = error_of(
        tmp_path, GOOD.replace("{num_output: 4}", "\n      num_output: 4\n      weight_filler: {type: xaviar}")
    )
    assert ":13: layer 'ip': field 'inner_product_param.weight_filler.type'" in message
    assert "did you mean 'xavier'?" in message


def test_bottom_not_produced(tmp_path):
    message = error_of(tmp_path, GOOD.replace("bottom: [z, y]", "bottom: [zz, y]"))
    assert "layer 'loss'" in message and "blob 'zz' is not produced" in message
    assert "did you mean 'z'" in message


def test_duplicate_layer_names_are_accepted_as_in_caffe_unless_both_have_params(tmp_path):
    from netlayers import Net

    net = Net(write(tmp_path, GOOD.replace("name: loss", "name: ip")))
    assert net.layer_names == ["data", "ip", "ip"]
    twice = GOOD.replace("name: loss\n    type: SoftmaxWithLoss", "name: ip\n    type: InnerProduct").replace(
        "bottom: [z, y]\n    top: loss", "bottom: z\n    top: z2\n    inner_product_param: {num_output: 2}"
    )
    with pytest.raises(ConfigError, match="two layers named 'ip' have params .*line 7.*rename one") as info:
        Net(write(tmp_path, twice))
    assert "net.yaml:12: layer 'ip'" in str(info.value)


def test_same_name_in_disjoint_phases_is_fine(tmp_path):
    text = (
        GOOD
        + """\
  - name: acc
    type: SoftmaxWithLoss
    bottom: [z, y]
    top: acc
    include: {phase: TEST}
  - name: acc
    type: SoftmaxWithLoss
    bottom: [z, y]
    top: acc
    include: {phase: TRAIN}
"""
    )
    assert [l.name for l in Net(write(tmp_path, text), "TEST").layers][-1] == "acc"


def test_shape_mismatch_at_setup_names_layer_and_shapes(tmp_path):
    message = error_of(tmp_path, GOOD.replace("{dim: [2]}]", "{dim: [3]}]"))
    assert "layer 'loss'" in message and "expected 2 labels" in message and "(3,)" in message


def test_bad_enum_value(tmp_path):
    text = GOOD.replace("    top: loss\n", "    top: loss\n    loss_param: {normalization: ALL}\n")
    message = error_of(tmp_path, text)
    assert "loss_param.normalization" in message and "FULL | VALID | BATCH_SIZE | NONE" in message


def test_unknown_net_field(tmp_path):
    message = error_of(tmp_path, "force_backwards: true\n" + GOOD)
    assert ":1:" in message and "did you mean 'force_backward'" in message


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_net_spec(tmp_path / "nope.yaml")


def test_dict_specs_are_checked_too():
    with pytest.raises(ConfigError, match="layer 'a'"):
        Net({"layers": [{"name": "a", "type": "Input", "top": "x", "input_param": {"shap": []}}]})


def test_a_floating_point_written_1e_3_is_accepted(tmp_path):
    net = Net(write(tmp_path, GOOD.replace("    top: z\n", "    top: z\n    loss_weight: 1e-3\n")))
    # z also feeds the loss, so (as in Caffe) a split carries the weight on its first top
    split = next(layer for layer in net.layers if layer.type == "Split")
    assert split.loss_weights == [0.001, 0.0]


def test_a_file_that_is_not_utf8_text(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ConfigError, match=r"binary.yaml: not a text file in UTF-8 \(byte 0"):
        Net(path)


@pytest.mark.parametrize("source, shown", [([1, 2], "a list"), (5, "5"), (None, "None")])
def test_a_net_from_something_else_than_a_path_or_mapping(source, shown):
    with pytest.raises(ConfigError, match=f"a net is built from a YAML path or a mapping, not {shown}$"):
        Net(source)


def test_mistyped_containers_are_named_in_plain_words(tmp_path):
    message = error_of(tmp_path, GOOD.replace("    bottom: x\n", "    bottom: [{x: 1}]\n"))
    assert "expected a string, got a mapping" in message
    message = error_of(tmp_path, GOOD.replace("  - name: loss\n", "  - [loss]\n  - name: loss\n"))
    assert "each layer must be a mapping, got a list" in message


def test_numpy_numbers_are_accepted_in_a_config_built_in_python():
    spec = {
        "name": "n",
        "layers": [
            {
                "name": "data",
                "type": "Input",
                "top": "x",
                "input_param": {"shape": [{"dim": [np.int64(2), np.int32(3)]}]},
            },
            {
                "name": "ip",
                "type": "InnerProduct",
                "bottom": "x",
                "top": "z",
                "inner_product_param": {
                    "num_output": np.int64(4),
                    "weight_filler": {"type": "gaussian", "std": np.float32(0.5)},
                },
            },
        ],
    }
    assert Net(spec).blobs["z"].shape == (2, 4)


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_float_fields_must_be_finite(tmp_path, value):
    text = GOOD.replace("{num_output: 4}", f"{{num_output: 4, weight_filler: {{type: gaussian, std: {value}}}}}")
    message = error_of(tmp_path, text)
    assert "field 'inner_product_param.weight_filler.std': expected a finite number" in message
