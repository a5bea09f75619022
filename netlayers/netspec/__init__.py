"""YAML net definitions: load, check (with file:line errors), filter by phase, insert splits."""
from .schema import BLOB_SHAPE, FILLER, Enum, Field, Message, Params, Where, check_message
from .spec import LayerSpec, NetSpec, check_layer, load_net_spec, phase_layers
from .yaml_lines import load_yaml_file, load_yaml_text

__all__ = ["BLOB_SHAPE", "FILLER", "Enum", "Field", "Message", "Params", "Where", "check_message",
           "LayerSpec", "NetSpec", "check_layer", "load_net_spec", "phase_layers",
           "load_yaml_file", "load_yaml_text"]
