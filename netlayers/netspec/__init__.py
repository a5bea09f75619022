"""YAML net definitions: load, check (with file:line errors), filter by phase, insert splits."""

from .json_schema import json_schema
from .schema import BLOB_SHAPE, FILLER, RESHAPE_SHAPE, Enum, Field, Message, Params, Where, check_message, rule_error
from .spec import LayerSpec, NetSpec, check_layer, load_config_file, load_net_spec, phase_layers
from .yaml_lines import load_yaml_file, load_yaml_text

__all__ = [
    "BLOB_SHAPE",
    "FILLER",
    "RESHAPE_SHAPE",
    "Enum",
    "Field",
    "Message",
    "Params",
    "Where",
    "check_message",
    "rule_error",
    "json_schema",
    "LayerSpec",
    "NetSpec",
    "check_layer",
    "load_config_file",
    "load_net_spec",
    "phase_layers",
    "load_yaml_file",
    "load_yaml_text",
]
