"""The config schema as JSON Schema (draft 2020-12), for editors to complete and check configs.

``json_schema()`` is built from the same declarations the checker runs: the net-level fields,
every registered layer type with its parameter blocks (kinds, defaults, enums, bounds; chosen by
``type`` with if/then) and the ``solver:`` section. It catches what a field alone can tell
(an unknown field, a wrong kind, a value out of range); the checker also applies the
cross-field rules and the graph checks, so it stays the last word.
"""

import math

from ..registry import layer_class, layer_types
from .schema import Enum, Message

DIALECT = "https://json-schema.org/draft/2020-12/schema"
NUMBER_TEXT = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"  # YAML reads 1e-3 as a string


def json_schema():
    """The whole config (net, layers, solver) as a JSON Schema mapping."""
    from ..solvers.base import SOLVER_FIELDS  # the solver imports the net: import late
    from .spec import LAYER_FIELDS, NET_FIELDS

    net = {name: field_schema(field) for name, field in NET_FIELDS.items() if field.kind is not dict}
    net["layers"] = net["layer"] = {
        "type": "array",
        "items": {"$ref": "#/$defs/layer"},
        "description": "the layers, in order",
    }
    net["solver"] = {"$ref": "#/$defs/solver"}
    return {
        "$schema": DIALECT,
        "$id": "https://netlayers.invalid/config.schema.json",
        "title": "netlayers config: a net (Caffe's NetParameter) and its solver section",
        "type": "object",
        "properties": net,
        "additionalProperties": False,
        "$defs": {
            "layer": layer_schema(LAYER_FIELDS),
            "solver": message_schema(SOLVER_FIELDS, "Caffe's SolverParameter"),
        },
    }


def layer_schema(common_fields):
    """A layer: the common fields, and by ``type`` the parameter blocks that type declares."""
    types = layer_types()
    common = {name: field_schema(field) for name, field in common_fields.items()}
    common["type"] = {"enum": types, "description": "the layer type (registered name)"}
    cases = []
    for name in types:
        blocks = layer_class(name).param_blocks()
        cases.append(
            {
                "if": {"properties": {"type": {"const": name}}, "required": ["type"]},
                "then": {"properties": {block: message_schema(fields, block) for block, fields in blocks.items()}},
            }
        )
    return {
        "type": "object",
        "properties": common,
        "required": ["type"],
        "allOf": cases,
        "unevaluatedProperties": False,
    }


def message_schema(fields, title=None):
    """A mapping of declared fields: no others, the required ones present."""
    schema = {
        "type": "object",
        "properties": {name: field_schema(field) for name, field in fields.items()},
        "additionalProperties": False,
    }
    required = [name for name, field in fields.items() if field.required]
    if required:
        schema["required"] = required
    if title:
        schema["title"] = title
    return schema


def field_schema(field):
    """One field: its kind with bounds; a repeated field also takes a list of them; its
    default and doc as ``default`` and ``description``."""
    item = bounded(kind_schema(field.kind), field)
    schema = {"anyOf": [item, {"type": "array", "items": item}]} if field.repeated else dict(item)
    default = field.default
    if not field.required and default is not None and _plain(default):
        schema["default"] = default
    if field.doc:
        schema["description"] = field.doc
    return schema


def kind_schema(kind):
    if isinstance(kind, Message):
        return message_schema(kind.fields, kind.name)
    if isinstance(kind, Enum):
        spellings = []
        for name in kind.names:  # any letter case is accepted: offer the usual ones
            for spelling in (name, name.upper(), name.lower()):
                if spelling not in spellings:
                    spellings.append(spelling)
        return {"enum": spellings}
    if kind is float:  # a number, or a string that reads as one (bounds apply to numbers only)
        return {"type": ["number", "string"], "pattern": NUMBER_TEXT}
    if kind is dict:
        return {"type": "object"}
    return {"type": {int: "integer", bool: "boolean", str: "string"}[kind]}


def bounded(schema, field):
    """``schema`` with the field's bounds (on numbers); ``also`` values accepted besides."""
    if not field.bounded:
        return schema
    limits = {
        key: bound
        for key, bound in (
            ("minimum", field.min),
            ("maximum", field.max),
            ("exclusiveMinimum", field.gt),
            ("exclusiveMaximum", field.lt),
        )
        if bound is not None
    }
    schema = {**schema, **limits}
    if field.also:
        schema = {"anyOf": [schema, {"enum": list(field.also)}]}
    return schema


def _plain(value):
    """Whether ``value`` is a JSON value (a default worth showing)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (str, int, bool)):
        return True
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


__all__ = ["json_schema"]
