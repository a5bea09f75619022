"""Declarative parameter checking: each layer class states its fields next to its math.

A layer declares ``params = {"num_output": Field(int, required=True), ...}``. Checking a YAML
block against those fields fills in Caffe's defaults, converts values, and reports the first
mistake as a one-line :class:`ConfigError` naming file, line, layer and field.

Conventions, following Caffe's protobuf messages:
- ``Field(int)`` takes integers, ``Field(float)`` integers or floats (also written ``1e-3``,
  which YAML would otherwise read as a string), ``Field(bool)`` ``true``/``false``,
  ``Field(str)`` strings.
- ``Field(Enum("MAX", "AVE"))`` takes one of the names, in any letter case; the value is the
  canonical spelling.
- ``Field(Message({...}))`` takes a nested mapping, checked with its own fields.
- ``repeated=True`` takes a list, or a single value meaning a list of one (as protobuf text
  format allows writing a repeated field once).
- A field left out gets its default; ``default=None`` means "not set" (Caffe's ``has_x()``).
"""

import difflib
import math

import numpy as np

from ..errors import ConfigError
from ..fillers import FILLERS
from ..fillers import check as check_filler

_REQUIRED = object()


class Enum:
    """A protobuf enum: a closed set of names."""

    def __init__(self, *names):
        self.names = names

    def __repr__(self):
        return " | ".join(self.names)


class Message:
    """A nested protobuf message: a mapping checked against its own fields, then as a whole by
    ``check(params)`` when given (a ConfigError whose field is relative to the message)."""

    def __init__(self, fields, name="message", check=None):
        self.fields = fields
        self.name = name
        self.check = check

    def __repr__(self):
        return f"a mapping ({self.name})"


class Field:
    """One declared parameter: its kind, Caffe's default, whether it repeats, and the values it
    may take.

    Bounds apply to numbers (each item of a repeated field): ``min`` and ``max`` are inclusive,
    ``gt`` and ``lt`` exclusive (``Field(float, gt=0)``: positive). ``also`` lists values
    accepted outside the bounds, a sentinel such as -1 for "off" or "to the end"
    (``Field(int, -1, min=0, also=(-1,))``). A default is never checked against the bounds, so
    a default of None ("not set") needs no sentinel."""

    def __init__(
        self,
        kind,
        default=None,
        *,
        required=False,
        repeated=False,
        doc="",
        min=None,
        max=None,
        gt=None,
        lt=None,
        also=(),
    ):
        self.kind = kind
        self.default = _REQUIRED if required else default
        self.repeated = repeated
        self.doc = doc
        self.min, self.max, self.gt, self.lt = min, max, gt, lt
        self.also = tuple(also)

    @property
    def required(self):
        return self.default is _REQUIRED

    @property
    def bounded(self):
        return any(bound is not None for bound in (self.min, self.max, self.gt, self.lt))

    def range_text(self):
        """The accepted range in words: '>= 1', '> 0 and <= 1', '>= 0, or -1'."""
        parts = [
            f"{op} {_number(bound)}"
            for op, bound in ((">=", self.min), (">", self.gt), ("<=", self.max), ("<", self.lt))
            if bound is not None
        ]
        text = " and ".join(parts)
        if self.also:
            text += ", or " + " or ".join(_number(v) for v in self.also)
        return text

    def in_range(self, value):
        if value in self.also:
            return True
        return not (
            (self.min is not None and value < self.min)
            or (self.max is not None and value > self.max)
            or (self.gt is not None and value <= self.gt)
            or (self.lt is not None and value >= self.lt)
        )


def _number(value):
    return f"{value:g}" if isinstance(value, float) else str(value)


class Params(dict):
    """Checked parameters: a dict whose keys also read as attributes (``p.num_output``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.__dict__ = self  # attribute reads at dict speed (layers read them every pass)


class Where:
    """Where a value sits, for error messages: file, line, layer and the dotted field path."""

    def __init__(self, file=None, line=None, layer=None, field=None):
        self.file, self.line, self.layer, self.field = file, line, layer, field

    def at(self, container, key):
        """The place of ``container[key]`` (a LineDict or LineList knows its lines)."""
        line = self.line
        line_of = getattr(container, "line_of", None)
        if line_of is not None:
            line = line_of(key) or line
        if isinstance(key, int):
            field = f"{self.field}[{key}]" if self.field else f"[{key}]"
        else:
            field = f"{self.field}.{key}" if self.field else str(key)
        return Where(self.file, line, self.layer, field)

    def error(self, message):
        return ConfigError(message, file=self.file, line=self.line, layer=self.layer, field=self.field)


def kind_name(kind):
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a mapping"}
    return names.get(kind, repr(kind))


def close_match_hint(word, candidates):
    """' (did you mean 'x'?)' for the nearest candidate, or '' when none is near."""
    match = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def shown(value):
    """How a config value is named in a message: 'a mapping', 'a list' or its plain repr."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**20:
        return f"an integer of {_digit_count(value)} digits"
    return repr(value)


def _digit_count(value):
    """Decimal digits of a big integer, without str() (which refuses past 4,300 digits)."""
    digits = max(1, int(abs(value).bit_length() * math.log10(2)))
    return digits + (abs(value) >= 10**digits)


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def check_scalar(value, kind, where):
    """Convert one value to ``kind`` or raise a ConfigError saying what was expected. Numbers
    may be numpy scalars (a config built in Python); floats must be finite."""

    def wrong():
        return where.error(f"expected {kind_name(kind)}, got {shown(value)}")

    if isinstance(value, np.generic):
        value = value.item()

    if isinstance(kind, Message):
        if not isinstance(value, dict):
            raise wrong()
        return check_message(value, kind.fields, where, rules=kind.check)
    if isinstance(kind, Enum):
        if isinstance(value, str):
            for name in kind.names:
                if name.upper() == value.upper():
                    return name
        hint = close_match_hint(value, kind.names) if isinstance(value, str) else ""
        raise where.error(f"expected one of {kind!r}, got {value!r}{hint}")
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise wrong()
    if kind is dict:  # kept as written, checked where it is used (a solver's inline net)
        if isinstance(value, dict):
            return value
        raise wrong()
    if kind is int:
        number = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        if number is None:
            raise wrong()
        if not INT64_MIN <= number <= INT64_MAX:
            raise where.error(
                f"expected an integer that fits in 64 bits (at most 2^63 - 1 in size), got {shown(value)}"
            )
        return number
    if kind is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value) if abs(value) <= _FLOAT_MAX else math.inf
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise wrong()
        if not math.isfinite(number):
            raise where.error(f"expected a finite number, got {shown(value)}")
        return number
    if kind is str:
        if isinstance(value, str):
            return value
        raise wrong()
    raise TypeError(f"unknown field kind {kind!r}")


_FLOAT_MAX = float(np.finfo(np.float64).max)  # a Python float: compared with any int exactly


def check_field(value, field, where):
    """Check a value (each item of a repeated field) against its kind, then its bounds."""
    if field.repeated:
        items = value if isinstance(value, list) else [value]
        return [check_bounded(item, field, where.at(items, i)) for i, item in enumerate(items)]
    if isinstance(value, list):
        raise where.error(f"expected a single value ({kind_name(field.kind)}), got a list")
    return check_bounded(value, field, where)


def check_bounded(value, field, where):
    number = check_scalar(value, field.kind, where)
    if field.bounded and not field.in_range(number):
        raise where.error(f"expected {kind_name(field.kind)} {field.range_text()}, got {shown(value)}")
    return number


def default_of(field, where):
    if field.required:
        raise where.error("is required")
    if field.repeated:
        return list(field.default or [])
    if isinstance(field.kind, Message) and isinstance(field.default, dict):
        return check_message(field.default, field.kind.fields, where)
    return field.default


def check_message(value, fields, where, rules=None):
    """Check a mapping against declared fields (unknown keys are errors with a close match),
    then as a whole by ``rules(params)`` when given: the cross-field rules of a message or a
    layer, raising a ConfigError whose ``field`` names the field at fault, relative to the
    message. That error is placed at the field's own line (the message's when it is absent)."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise where.error(f"expected a mapping, got {shown(value)}")
    for key in value:
        if key not in fields:
            hint = close_match_hint(key, fields)
            known = ", ".join(sorted(fields)) or "none"
            raise where.at(value, key).error(f"unknown field{hint}; known fields: {known}")
    out = Params()
    for name, field in fields.items():
        if name in value and value[name] is not None:
            out[name] = check_field(value[name], field, where.at(value, name))
        else:
            out[name] = default_of(field, where.at(value, name) if name in value else _missing(where, name))
    if rules is not None:
        apply_rules(rules, out, value, where)
    return out


def apply_rules(rules, params, raw, where):
    """Run cross-field ``rules(params)``; a ConfigError it raises gets the place of its field."""
    try:
        rules(params)
    except ConfigError as err:
        place = where
        for key in err.field.split(".") if err.field else []:
            place = place.at(raw, key)
            raw = raw.get(key) if isinstance(raw, dict) else None
        raise place.error(err.message) from None


def rule_error(field, message):
    """The error a cross-field rule raises: ``field`` is relative to the checked message."""
    return ConfigError(message, field=field)


def _missing(where, name):
    field = f"{where.field}.{name}" if where.field else name
    return Where(where.file, where.line, where.layer, field)


# Shared message shapes used by several layer families.
FILLER = Message(
    {
        "type": Field(Enum(*FILLERS), "constant"),
        "value": Field(float, 0.0),
        "min": Field(float, 0.0),
        "max": Field(float, 1.0),
        "mean": Field(float, 0.0),
        "std": Field(float, 1.0, min=0),
        "sparse": Field(int, -1, min=-1, doc="-1: off; else the expected non-zeros per output"),
        "variance_norm": Field(Enum("FAN_IN", "FAN_OUT", "AVERAGE"), "FAN_IN"),
    },
    name="FillerParameter",
    check=check_filler,
)

BLOB_SHAPE = Message({"dim": Field(int, repeated=True, min=1)}, name="BlobShape")
"""A blob's shape: every dim at least 1 (Caffe allows 0, which no layer can compute with)."""

RESHAPE_SHAPE = Message({"dim": Field(int, repeated=True, min=-1)}, name="BlobShape")
"""Reshape's target shape: 0 copies the bottom's dim, -1 infers one dim (Caffe's meanings)."""
