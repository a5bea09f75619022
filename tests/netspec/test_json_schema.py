"""The exported JSON Schema (draft 2020-12) accepts the shipped configs and refuses what the
declarations refuse: a value out of range, an unknown field, a wrong kind."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from netlayers.netspec import json_schema, load_yaml_file

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted([*ROOT.glob("configs/*.yaml"), *ROOT.glob("configs/examples/**/*.yaml")])


@pytest.fixture(scope="module")
def validator():
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def errors(validator, config):
    return [error.message for error in validator.iter_errors(config)]


def test_there_are_shipped_configs_to_check():
    assert len(SHIPPED) >= 5


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(ROOT)) for p in SHIPPED])
def test_the_shipped_configs_validate(validator, path):
    assert errors(validator, load_yaml_file(path)) == []


@pytest.fixture
def lenet():
    return json.loads(json.dumps(load_yaml_file(ROOT / "configs" / "lenet_fashion_mnist.yaml")))


def _layer(config, type_name):
    return next(layer for layer in config["layers"] if layer["type"] == type_name)


def test_num_output_zero_is_refused(validator, lenet):
    _layer(lenet, "Convolution")["convolution_param"]["num_output"] = 0
    assert any("less than the minimum of 1" in m for m in errors(validator, lenet))


def test_an_unknown_field_is_refused(validator, lenet):
    bad = copy.deepcopy(lenet)
    _layer(bad, "InnerProduct")["inner_product_param"]["num_outputs"] = 10
    assert any("num_outputs" in m for m in errors(validator, bad))
    bad = copy.deepcopy(lenet)
    _layer(bad, "InnerProduct")["weight_fillr"] = {"type": "xavier"}
    assert any("weight_fillr" in m for m in errors(validator, bad))
    bad = copy.deepcopy(lenet)
    bad["solver"]["base_lrr"] = 0.1
    assert any("base_lrr" in m for m in errors(validator, bad))


def test_kinds_enums_types_and_the_solver_section_are_checked(validator, lenet):
    bad = copy.deepcopy(lenet)
    _layer(bad, "Pooling")["pooling_param"]["pool"] = "MEDIAN"
    _layer(bad, "InnerProduct")["type"] = "InnerProdukt"
    bad["solver"]["weight_decay"] = -1
    bad["solver"]["max_iter"] = "many"
    messages = " | ".join(errors(validator, bad))
    for words in (
        "'MEDIAN' is not one of",
        "'InnerProdukt' is not one of",
        "-1 is less than the minimum of 0",
        "'many' is not of type 'integer'",
    ):
        assert words in messages


def test_a_block_belongs_to_its_own_type_only(validator, lenet):
    _layer(lenet, "ReLU")["pooling_param"] = {"kernel_size": 2}
    assert any("pooling_param" in m for m in errors(validator, lenet))


def test_defaults_bounds_and_sentinels_are_exported():
    schema = json_schema()
    case = next(c for c in schema["$defs"]["layer"]["allOf"] if c["if"]["properties"]["type"]["const"] == "Exp")
    base = case["then"]["properties"]["exp_param"]["properties"]["base"]
    assert base["default"] == -1.0
    assert {"enum": [-1]} in base["anyOf"]
    dropout = next(c for c in schema["$defs"]["layer"]["allOf"] if c["if"]["properties"]["type"]["const"] == "Dropout")
    ratio = dropout["then"]["properties"]["dropout_param"]["properties"]["dropout_ratio"]
    assert (ratio["minimum"], ratio["exclusiveMaximum"], ratio["default"]) == (0, 1, 0.5)


def test_the_schema_command_writes_the_schema(tmp_path, capsys):
    out = tmp_path / "netlayers.schema.json"
    run = subprocess.run(
        [sys.executable, "-m", "netlayers", "schema", "-o", str(out)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    written, here = json.loads(out.read_text()), json.loads(json.dumps(json_schema()))
    assert written["properties"] == here["properties"] and written["$defs"]["solver"] == here["$defs"]["solver"]
    assert {"InnerProduct", "Convolution", "Python"} <= set(written["$defs"]["layer"]["properties"]["type"]["enum"])
    from netlayers.cli.main import main

    assert main(["schema", "-o", str(tmp_path / "no" / "x.json")]) == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and "cannot write the schema" in stderr
