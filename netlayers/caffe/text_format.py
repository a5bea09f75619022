"""Writing protobuf text format (Caffe's ``.prototxt``) from netlayers' nets and solvers.

:func:`net_to_text` writes a net (netlayers' YAML form as a dict, or a checked
:class:`netlayers.netspec.NetSpec`) as Caffe writes a ``NetParameter``::

    layer {
      name: "pool1"
      type: "Pooling"
      bottom: "conv1"
      top: "pool1"
      pooling_param {
        pool: MAX
        kernel_size: 2
      }
    }

:func:`solver_to_text` writes a ``solver:`` section as a ``SolverParameter``. Strings are
quoted (C escapes), enum values bare, floats written so that they read back to the same
value, lists as the same key repeated, mappings as nested messages. What is text and what an
enum comes from the fields each layer class declares (``Field(Enum(...))`` is an enum), the
net's and the solver's field tables, and Caffe's own caffe.proto where it differs: there,
filler ``type``, the solver's ``type``, ``lr_policy`` and ``regularization_type`` are strings.
Known fields come in their declared order (Caffe's, as protobuf prints them); a field no
table knows is written as its value says. :mod:`netlayers.caffe.prototxt` reads the text
back to the same net.
"""

import math
import os

import numpy as np

from ..errors import ConfigError
from ..netspec import Enum, Field, Message
from ..netspec.spec import LAYER_FIELDS, NET_FIELDS
from ..netspec.spec import NetSpec as CheckedNetSpec

__all__ = ["net_to_text", "solver_to_text", "quote", "caffe_enum_numbers", "CAFFE_ENUMS"]

_ENGINE = {"DEFAULT": 0, "CAFFE": 1, "CUDNN": 2}
_POOL = {"MAX": 0, "AVE": 1, "STOCHASTIC": 2}

#: Caffe 1.0's enums (caffe.proto), by pycaffe's ``caffe.params`` name (the message's name
#: without ``Parameter``) and field: value name -> number.
CAFFE_ENUMS = {
    "Filler": {"variance_norm": {"FAN_IN": 0, "FAN_OUT": 1, "AVERAGE": 2}},
    "Solver": {
        "snapshot_format": {"HDF5": 0, "BINARYPROTO": 1},
        "solver_mode": {"CPU": 0, "GPU": 1},
        "solver_type": {"SGD": 0, "NESTEROV": 1, "ADAGRAD": 2, "RMSPROP": 3, "ADADELTA": 4, "ADAM": 5},
    },
    "NetStateRule": {"phase": {"TRAIN": 0, "TEST": 1}},
    "NetState": {"phase": {"TRAIN": 0, "TEST": 1}},
    "ParamSpec": {"share_mode": {"STRICT": 0, "PERMISSIVE": 1}},
    "Loss": {"normalization": {"FULL": 0, "VALID": 1, "BATCH_SIZE": 2, "NONE": 3}},
    "Convolution": {"engine": _ENGINE},
    "Data": {"backend": {"LEVELDB": 0, "LMDB": 1}},
    "Eltwise": {"operation": {"PROD": 0, "SUM": 1, "MAX": 2}},
    "HingeLoss": {"norm": {"L1": 1, "L2": 2}},
    "LRN": {"norm_region": {"ACROSS_CHANNELS": 0, "WITHIN_CHANNEL": 1}, "engine": _ENGINE},
    "Pooling": {"pool": _POOL, "engine": _ENGINE, "round_mode": {"CEIL": 0, "FLOOR": 1}},
    "Reduction": {"operation": {"SUM": 1, "ASUM": 2, "SUMSQ": 3, "MEAN": 4}},
    "ReLU": {"engine": _ENGINE},
    "Sigmoid": {"engine": _ENGINE},
    "Softmax": {"engine": _ENGINE},
    "TanH": {"engine": _ENGINE},
    "SPP": {"pool": _POOL, "engine": _ENGINE},
}

#: Fields netlayers checks as a closed set of names that caffe.proto declares as strings.
_CAFFE_STRINGS = {("Solver", "regularization_type")}

#: LayerParameter's fields in caffe.proto's order; the parameter blocks follow.
_LAYER_ORDER = ("name", "type", "bottom", "top", "loss_weight", "param", "propagate_down", "include", "exclude")
_FIRST_BLOCKS = ("transform_param", "loss_param")
#: NetParameter's fields in caffe.proto's order, then netlayers' own; the layers come last.
_NET_ORDER = ("name", "input", "input_shape", "input_dim", "force_backward", "random_seed", "dtype", "imports")


def caffe_enum_numbers(message, field, names=()):
    """``{name: number}`` of an enum field: Caffe's numbers, then any of ``names`` Caffe lacks
    (netlayers' additions, such as the Data backends IDX and NPZ) numbered after them."""
    numbers = dict(CAFFE_ENUMS.get(message, {}).get(field, {}))
    for name in names:
        if name not in numbers:
            numbers[name] = max(numbers.values(), default=-1) + 1
    return numbers


def quote(text):
    """A protobuf text-format string literal: C escapes for quotes, backslashes and control
    characters (as three-digit octal), other characters as they are (UTF-8)."""
    out = []
    for char in text:
        if char in "\"'\\":
            out.append("\\" + char)
        elif char in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\{ord(char):03o}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def format_float(value):
    """A float as text that reads back to the same value: whole numbers without a fraction
    (``1``, as Caffe writes them), others by Python's shortest round-trip form."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value.is_integer() and abs(value) < 1e16 and not (value == 0 and math.copysign(1, value) < 0):
        return str(int(value))
    return repr(value)


# -- the schema a value is written with -------------------------------------------------------


class _Schema:
    """The fields of one message (``{name: Field}``, or None when unknown) and its enum-table
    name (a key of :data:`CAFFE_ENUMS`, or None)."""

    def __init__(self, fields=None, message=None, order=()):
        self.fields = fields or {}
        self.message = message
        self.order = tuple(order) or tuple(self.fields)

    def sub(self, name):
        """The schema of the nested message ``name``."""
        field = self.fields.get(name)
        kind = field.kind if field is not None else None
        if isinstance(kind, Message):
            return _Schema(kind.fields, _message_key(kind.name))
        return _Schema()


def _message_key(message_name):
    """caffe.proto's message name as a :data:`CAFFE_ENUMS` key: ``FillerParameter`` -> ``Filler``,
    ``pooling_param`` (a layer's block) -> ``Pooling``."""
    if message_name.endswith("_param"):
        return _enum_key_by_block().get(message_name)
    return message_name.removesuffix("Parameter")


def _enum_key_by_block():
    from ..layer import block_name

    return {block_name(name): name for name in CAFFE_ENUMS}


def layer_schema(type_name):
    """The schema of a layer of ``type_name``: the common fields, then each parameter block the
    registered class declares (transform and loss blocks first, as caffe.proto numbers them).
    An unknown type gets the common fields only."""
    from ..registry import layer_class

    fields = {name: LAYER_FIELDS[name] for name in _LAYER_ORDER}
    try:
        blocks = layer_class(type_name).param_blocks() if isinstance(type_name, str) else {}
    except ConfigError:
        blocks = {}
    ordered = [b for b in _FIRST_BLOCKS if b in blocks] + [b for b in blocks if b not in _FIRST_BLOCKS]
    for block in ordered:
        fields[block] = Field(Message(blocks[block], name=block))
    return _Schema(fields, None)


def _net_schema():
    fields = {name: field for name, field in NET_FIELDS.items() if name not in ("layers", "solver")}
    order = [name for name in _NET_ORDER if name in fields]
    return _Schema(fields, "Net", order + [name for name in fields if name not in order])


def _solver_schema():
    from ..solvers.base import SOLVER_FIELDS

    return _Schema(SOLVER_FIELDS, "Solver")


# -- scalars ------------------------------------------------------------------------------


def _is_caffe_enum(kind, message, name):
    """Does caffe.proto declare this Enum-checked field an enum (bare) rather than a string?
    Caffe's enum values are upper case; netlayers' closed sets in lower or mixed case (filler
    types, learning-rate policies, solver types) are strings there."""
    if (message, name) in _CAFFE_STRINGS:
        return False
    return all(value.isupper() or value.isdigit() for value in kind.names)


def enum_name(value, kind, message, name):
    """The canonical name of an enum value given as a name in any case or as its number;
    a value that is neither is returned unchanged."""
    if isinstance(value, str):
        for known in kind.names:
            if known.upper() == value.upper():
                return known
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        numbers = caffe_enum_numbers(message, name, kind.names)
        for known, number in numbers.items():
            if number == value:
                return known
    return value


def _scalar_text(value, field, message, name):
    """One value as prototxt text, by the kind its field declares (or its own type)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    kind = field.kind if field is not None else None
    enum_value_name = getattr(value, "enum_name", None)  # caffe.params constants
    if enum_value_name is not None and (kind is None or isinstance(kind, Enum)):
        value = enum_value_name
        kind = kind or Enum(value)
    if isinstance(kind, Enum):
        value = enum_name(value, kind, message, name)
        if isinstance(value, str):
            if _is_caffe_enum(kind, message, name) and value.isidentifier():
                return value
            return quote(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and kind in (int, float):
        value = _number_or_text(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if kind is int and value.is_integer():
            return str(int(value))
        return format_float(value)
    if isinstance(value, str):
        return quote(value)
    raise ConfigError(f"field '{name}': cannot write {type(value).__name__} value {value!r} as prototxt")


def _number_or_text(text):
    """A number written as text (YAML reads ``1e-3`` as a string) as the number, else the text."""
    try:
        return float(text)
    except ValueError:
        return text


# -- messages -----------------------------------------------------------------------------


def _ordered_keys(values, schema):
    """Known fields in the schema's order, then the rest in the order given."""
    known = [key for key in schema.order if key in values]
    return known + [key for key in values if key not in schema.order]


def _write_message(lines, values, schema, depth):
    """Append the lines of a message's fields (nested messages indented two spaces a level)."""
    pad = "  " * depth
    for key in _ordered_keys(values, schema):
        value = values[key]
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if item is None:
                continue
            if isinstance(item, dict):
                lines.append(f"{pad}{key} {{")
                _write_message(lines, item, schema.sub(key), depth + 1)
                lines.append(f"{pad}}}")
            else:
                lines.append(f"{pad}{key}: {_scalar_text(item, schema.fields.get(key), schema.message, key)}")


def _net_mapping(net):
    """netlayers' YAML form of ``net``: a checked NetSpec is written from its layers as given."""
    if isinstance(net, CheckedNetSpec):
        out = {"name": net.name} if net.name else {}
        if net.force_backward:
            out["force_backward"] = True
        if net.random_seed != -1:
            out["random_seed"] = net.random_seed
        if net.dtype != "float32":
            out["dtype"] = net.dtype
        out["layers"] = [layer.raw for layer in net.layers if not layer.auto]
        return out
    if isinstance(net, dict):
        return net
    raise ConfigError(f"a net to write as prototxt is a mapping or a checked NetSpec, not {type(net).__name__}")


def net_to_text(net):
    """A net as Caffe's prototxt text: net-level fields, then one ``layer { ... }`` per layer.

    ``net``: netlayers' YAML form as a dict (``layers:``, or Caffe's ``layer:``), or a checked
    :class:`netlayers.netspec.NetSpec` (written from its layers as given, Split layers left out).
    A ``solver:`` section is not part of a Caffe net: write it with :func:`solver_to_text`.
    """
    net = _net_mapping(net)
    layers = net.get("layers", net.get("layer")) or []
    if isinstance(layers, dict):
        layers = [layers]
    top_level = {k: v for k, v in net.items() if k not in ("layers", "layer", "solver")}
    lines = []
    _write_message(lines, top_level, _net_schema(), 0)
    for layer in layers:
        if not isinstance(layer, dict):
            raise ConfigError(f"each layer must be a mapping, got {type(layer).__name__}")
        lines.append("layer {")
        _write_message(lines, layer, layer_schema(layer.get("type")), 1)
        lines.append("}")
    return "\n".join(lines) + "\n" if lines else ""


def solver_to_text(solver):
    """A ``solver:`` section (a dict of Caffe's SolverParameter fields) as prototxt text."""
    if not isinstance(solver, dict):
        raise ConfigError(f"a solver to write as prototxt is a mapping, not {type(solver).__name__}")
    nets = {key: value for key, value in solver.items() if key in INLINE_NETS}
    lines = []
    _write_message(lines, {k: v for k, v in solver.items() if k not in nets}, _solver_schema(), 0)
    for key, value in nets.items():  # inline nets: written as nets are (layers as `layer { }`)
        for net in value if isinstance(value, list) else [value]:
            lines.append(f"{key} {{")
            lines.extend("  " + line for line in net_to_text(net).splitlines())
            lines.append("}")
    return "\n".join(lines) + "\n" if lines else ""


#: A solver's fields that hold a whole net.
INLINE_NETS = ("net_param", "train_net_param", "test_net_param")
