"""Hostile config text: huge integers, deep nesting, control characters, values PyYAML cannot
convert. Each is one located line, never a traceback."""

import pytest

from netlayers import Net
from netlayers.errors import ConfigError, NetlayersError
from netlayers.netspec import load_yaml_text
from netlayers.solvers.base import check_solver_params

HUGE = "9" * 400

NET = (
    "layers:\n"
    "  - {name: x, type: Input, top: x, input_param: {shape: {dim: [2, 3]}}}\n"
    "  - name: l\n"
    "    type: {type}\n"
    "    bottom: x\n"
    "    top: y\n"
    "    {block}:\n"
    "      {field}: {value}\n"
)


def net_text(type_, block, field, value):
    return NET.replace("{type}", type_).replace("{block}", block).replace("{field}", field).replace("{value}", value)


@pytest.mark.parametrize(
    "type_,block,field,value,words",
    [
        ("ReLU", "relu_param", "negative_slope", HUGE, "expected a finite number, got an integer of 400 digits"),
        ("ReLU", "relu_param", "negative_slope", "-" + HUGE, "expected a finite number, got an integer of 400 digits"),
        ("Power", "power_param", "scale", "1e400", "expected a finite number, got '1e400'"),
        ("InnerProduct", "inner_product_param", "num_output", HUGE, "expected an integer that fits in 64 bits"),
        ("InnerProduct", "inner_product_param", "num_output", str(2**63), "fits in 64 bits"),
        ("InnerProduct", "inner_product_param", "num_output", "1.0e+300", "fits in 64 bits"),
        ("Reshape", "reshape_param", "shape", "{dim: [2, " + HUGE + "]}", "fits in 64 bits"),
    ],
    ids=["float", "negative-float", "1e400", "int", "2^63", "1e300-int", "reshape-dim"],
)
def test_huge_numbers_are_located_errors(tmp_path, type_, block, field, value, words):
    path = tmp_path / "net.yaml"
    path.write_text(net_text(type_, block, field, value))
    with pytest.raises(ConfigError) as info:
        Net(path)
    message = str(info.value)
    assert message.startswith(f"{path}:8: layer 'l': field '{block}.{field}")
    assert words in message and len(message) < 400


def test_huge_numbers_in_the_solver_and_net_level_fields():
    raw = load_yaml_text(f"layers: []\nsolver:\n  base_lr: {HUGE}\n  max_iter: 10\n", "s.yaml")
    with pytest.raises(ConfigError, match=r"^s.yaml:3: field 'solver.base_lr': expected a finite number"):
        check_solver_params(raw, "s.yaml")
    raw = load_yaml_text(f"solver:\n  base_lr: 0.1\n  max_iter: {HUGE}\n", "s.yaml")
    with pytest.raises(ConfigError, match=r"^s.yaml:3: field 'solver.max_iter': expected an integer that fits"):
        check_solver_params(raw, "s.yaml")
    with pytest.raises(ConfigError, match=r"field 'random_seed': expected an integer that fits in 64 bits"):
        Net(
            {
                "random_seed": 10**400,
                "layers": [{"name": "x", "type": "Input", "top": "x", "input_param": {"shape": {"dim": [1]}}}],
            }
        )


def test_an_integer_too_long_for_python_is_a_located_error():
    with pytest.raises(ConfigError, match=r"^c.yaml:2: an integer of 5000 characters is too long$"):
        load_yaml_text("a: 1\nb: " + "7" * 5000 + "\n", "c.yaml")


@pytest.mark.parametrize(
    "text",
    [
        "a: " + "[" * 1000 + "]" * 1000,
        "a: " + "{b: " * 1000 + "1" + "}" * 1000,
        "".join("  " * i + "- \n" for i in range(1000)),
    ],
    ids=["flow-lists", "flow-mappings", "block-lists"],
)
def test_deep_nesting_is_one_line(text):
    with pytest.raises(ConfigError) as info:
        load_yaml_text(text, "deep.yaml")
    assert str(info.value).startswith("deep.yaml:")
    assert "nested too deeply (more than 100 levels" in str(info.value)


def test_deep_nesting_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("layers:\n  - name: " + "[" * 3000 + "]" * 3000 + "\n")
    with pytest.raises(ConfigError, match=rf"^{path}:2: nested too deeply"):
        Net(path)


@pytest.mark.parametrize(
    "text,words",
    [
        ("a: 2020-02-30\n", "cannot read the value '2020-02-30'"),
        ("a: !!float abc\n", "cannot read the value 'abc'"),
    ],
)
def test_values_pyyaml_cannot_convert_are_located(text, words):
    with pytest.raises(ConfigError, match=rf"^c.yaml:1: malformed YAML: {words}"):
        load_yaml_text(text, "c.yaml")


CONTROL = ["\x00", "\r", "\n", "\x1b[31m", "\x7f", "\u2028"]


@pytest.mark.parametrize("char", CONTROL, ids=[repr(c) for c in CONTROL])
@pytest.mark.parametrize("where", ["layer name", "field name", "value"])
def test_control_characters_never_break_the_one_line_message(char, where):
    name, field, value = "ip", "num_output", "0"
    if where == "layer name":
        name = f"i{char}p"
    elif where == "field name":
        field = f"num{char}output"
    else:
        value = f"x{char}y"
    spec = {
        "layers": [
            {"name": "x", "type": "Input", "top": "x", "input_param": {"shape": {"dim": [2, 3]}}},
            {"name": name, "type": "InnerProduct", "bottom": "x", "top": "y", "inner_product_param": {field: value}},
        ]
    }
    with pytest.raises(ConfigError) as info:
        Net(spec)
    message = str(info.value)
    assert message.splitlines() == [message] and message.isprintable()
    assert repr(char)[1:-1] in message


def test_control_characters_read_from_a_file_stay_escaped(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text('layers:\n  - {name: "a\\0b\\r\\ec", type: Nope}\n')
    with pytest.raises(ConfigError) as info:
        Net(path)
    assert str(info.value).startswith(f"{path}:2: layer 'a\\x00b\\r\\x1bc': field 'type': unknown layer type 'Nope'")


def test_every_netlayers_error_is_one_line():
    err = NetlayersError("bad\nvalue", file="a\nb.yaml", line=3, layer="l\x00", field="f\r")
    assert str(err) == "a\\nb.yaml:3: layer 'l\\x00': field 'f\\r': bad\\nvalue"
