"""Caffe's ``.prototxt`` files (protobuf text format), read into netlayers' form.

:func:`parse_prototxt` reads the text without knowing the schema (every key maps to the list of
its values, with the line of each). :func:`to_netlayers` and :func:`solver_to_netlayers` then
shape it by the schema netlayers declares (one source: the net's and layers' fields in
:mod:`netlayers.netspec`, each registered layer class's parameter blocks, the solver's
``SOLVER_FIELDS``): a field declared ``repeated`` becomes a list, a nested message follows its
own declaration. Legacy V1 nets are upgraded (:mod:`netlayers.caffe.upgrade`).
:func:`read_prototxt` reads a file; :func:`convert_prototxt` writes YAML text.
"""

import math
import re
from pathlib import Path

import yaml

from ..errors import ConfigError
from ..netspec.schema import Message
from ..netspec.yaml_lines import LineDict, LineList, plain

__all__ = [
    "parse_prototxt",
    "to_netlayers",
    "solver_to_netlayers",
    "convert_prototxt",
    "read_prototxt",
    "is_prototxt",
    "holds_a_net",
]

# ---------------------------------------------------------------------------------------------
# Protobuf text format: tokens
# ---------------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(
    r"""
      (?P<newline>\n)
    | (?P<space>[ \t\r\f\v]+)
    | (?P<comment>\#[^\n]*)
    | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
    | (?P<number>\.?[0-9](?:[eE][+-]|[\w.])*)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<symbol>[{}<>:,;\[\]\-])
    | (?P<bad>.)
""",
    re.VERBOSE,
)

_SIMPLE_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "\\": "\\",
    "'": "'",
    '"': '"',
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "v": "\v",
    "?": "?",
}
_ESCAPE_RE = re.compile(
    r"\\(?:([0-7]{1,3})|x([0-9a-fA-F]{1,2})|u([0-9a-fA-F]{4})"
    r"|U([0-9a-fA-F]{8})|(.))",
    re.DOTALL,
)


class _Token:
    """One lexical token: its kind (``string``, ``number``, ``ident``, ``symbol``, ``end``)."""

    __slots__ = ("kind", "text", "line")

    def __init__(self, kind, text, line):
        self.kind, self.text, self.line = kind, text, line

    def __repr__(self):
        return "end of file" if self.kind == "end" else repr(self.text)


def _tokenize(text, filename):
    """Split prototxt text into tokens with their line numbers; comments are dropped."""
    tokens = []
    line = 1
    for match in _TOKEN_RE.finditer(text):
        kind = match.lastgroup
        if kind == "newline":
            line += 1
        elif kind == "bad":
            char = match.group()
            message = "unterminated string" if char in "\"'" else f"unexpected character {char!r}"
            raise ConfigError(message, file=filename, line=line)
        elif kind not in ("space", "comment"):
            tokens.append(_Token(kind, match.group(), line))
    tokens.append(_Token("end", "", line))
    return tokens


def _unescape(literal, filename, line):
    """The value of a quoted string token (C-style escapes; octal/hex escapes are bytes)."""
    body = literal[1:-1]
    out = bytearray()
    pos = 0
    for match in _ESCAPE_RE.finditer(body):
        out += body[pos : match.start()].encode("utf-8")
        octal, hex_byte, short_u, long_u, simple = match.groups()
        if octal is not None:
            out.append(int(octal, 8) & 0xFF)
        elif hex_byte is not None:
            out.append(int(hex_byte, 16))
        elif short_u or long_u:
            code = int(short_u or long_u, 16)
            if code > 0x10FFFF:
                raise ConfigError(f"invalid escape '\\U{long_u}'", file=filename, line=line)
            out += chr(code).encode("utf-8", "surrogatepass")
        elif simple in _SIMPLE_ESCAPES:
            out += _SIMPLE_ESCAPES[simple].encode("utf-8")
        else:
            raise ConfigError(f"invalid escape '\\{simple}' in string", file=filename, line=line)
        pos = match.end()
    out += body[pos:].encode("utf-8")
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("string is not valid UTF-8", file=filename, line=line) from None


def _number_value(text):
    """The int or float a number token stands for, or None if it is not a valid number."""
    lower = text.lower()
    if re.fullmatch(r"0x[0-9a-f]+", lower):
        return int(lower, 16)
    if re.fullmatch(r"0[0-7]+", lower):  # protobuf text format: a leading 0 means octal
        return int(lower, 8)
    if re.fullmatch(r"[0-9]+", lower):
        # No leading zero here, so more than 20 digits is past 64 bits; converting such a
        # string could also hit Python's limit on digits (a ValueError).
        return int(lower) if len(lower) <= 20 else _OUT_OF_RANGE
    if lower.endswith("f") and re.fullmatch(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:e[+-]?[0-9]+)?f", lower):
        lower = lower[:-1]
    if re.fullmatch(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:e[+-]?[0-9]+)?", lower):
        return float(lower)
    return None


# Protobuf integers have at most 64 bits; any larger literal in the text is refused.
_MAX_PROTOBUF_INT = 2**64 - 1
_OUT_OF_RANGE = _MAX_PROTOBUF_INT + 1

_SPECIAL_IDENTS = {"true": True, "True": True, "false": False, "False": False}
_FLOAT_IDENTS = {"inf": math.inf, "infinity": math.inf, "nan": math.nan}

# ---------------------------------------------------------------------------------------------
# Protobuf text format: the parser
# ---------------------------------------------------------------------------------------------

_CLOSERS = {"{": "}", "<": ">"}
_MAX_DEPTH = 100


class _ParsedMessage(dict):
    """``{key: [values]}`` with where it was written: ``line`` (where the message starts) and
    ``value_lines`` (key -> the line of each of its values), so that a later check of the
    converted net can name the line of a mistake."""

    def __init__(self, line):
        super().__init__()
        self.line = line
        self.value_lines = {}


class _TextParser:
    """Recursive-descent parser over the token list; builds ``{key: [values]}`` dicts."""

    def __init__(self, text, filename):
        self.filename = filename
        self.tokens = _tokenize(text, filename)
        self.pos = 0

    # -- token helpers --
    def peek(self):
        return self.tokens[self.pos]

    def take(self):
        token = self.tokens[self.pos]
        if token.kind != "end":
            self.pos += 1
        return token

    def at_symbol(self, *symbols):
        token = self.peek()
        return token.kind == "symbol" and token.text in symbols

    def error(self, message, token=None):
        token = token or self.peek()
        return ConfigError(message, file=self.filename, line=token.line)

    # -- grammar --
    def parse_document(self):
        """The whole text: one message, up to the end of the file."""
        message = self.parse_fields(closer=None, depth=0, line=1)
        token = self.peek()
        if token.kind != "end":
            raise self.error(f"unexpected {token!r}: no message to close here")
        return message

    def parse_fields(self, closer, depth, line):
        """Fields up to ``closer`` (a ``}``/``>`` symbol) or the end of the file."""
        message = _ParsedMessage(line)
        while True:
            token = self.peek()
            if token.kind == "end" or (closer and self.at_symbol(closer)):
                return message
            self.parse_field(message, depth)
            if self.at_symbol(",", ";"):
                self.take()

    def parse_field(self, message, depth):
        """One ``name: value``, ``name { ... }`` or ``name: [v, ...]`` field into ``message``."""
        name = self.take()
        if name.kind == "symbol" and name.text in ("}", ">"):
            opener = "{" if name.text == "}" else "<"
            raise self.error(f"unexpected '{name.text}' (no matching '{opener}')", name)
        if name.kind != "ident":
            hint = " (extensions are not supported)" if name.text == "[" else ""
            raise self.error(f"expected a field name, got {name!r}{hint}", name)
        values = message.setdefault(name.text, [])
        lines = message.value_lines.setdefault(name.text, [])
        if self.at_symbol(":"):
            self.take()
            if self.at_symbol("["):
                values.extend(self.parse_list(name, depth))
            else:
                values.append(self.parse_value(name, depth))
        elif self.at_symbol("{", "<"):
            values.append(self.parse_block(name, depth))
        else:
            raise self.error(f"expected ':' or '{{' after '{name.text}', got {self.peek()!r}")
        lines.extend([name.line] * (len(values) - len(lines)))

    def parse_list(self, name, depth):
        """``[v, v, ...]``: the list syntax for repeated fields."""
        opener = self.take()
        items = []
        if self.at_symbol("]"):
            self.take()
            return items
        while True:
            items.append(self.parse_value(name, depth))
            token = self.take()
            if token.kind == "symbol" and token.text == "]":
                return items
            if token.kind == "end":
                raise self.error(f"'[' opened at line {opener.line} is never closed", token)
            if not (token.kind == "symbol" and token.text == ","):
                raise self.error(f"expected ',' or ']' in the list for '{name.text}', got {token!r}", token)

    def parse_value(self, name, depth):
        """A scalar or a ``{ ... }`` message after ``name:``."""
        if self.at_symbol("{", "<"):
            return self.parse_block(name, depth)
        token = self.take()
        if token.kind == "string":
            parts = [_unescape(token.text, self.filename, token.line)]
            while self.peek().kind == "string":  # adjacent literals concatenate
                nxt = self.take()
                parts.append(_unescape(nxt.text, self.filename, nxt.line))
            return "".join(parts)
        negative = token.kind == "symbol" and token.text == "-"
        if negative:
            token = self.take()
        if token.kind == "number":
            value = _number_value(token.text)
            if value is None:
                raise self.error(f"invalid number '{token.text}' for '{name.text}'", token)
            if isinstance(value, int) and value > _MAX_PROTOBUF_INT:
                raise self.error(f"integer for '{name.text}' is out of range (protobuf integers have 64 bits)", token)
            return -value if negative else value
        if token.kind == "ident":
            return self.ident_value(token, negative, name)
        raise self.error(f"expected a value for '{name.text}', got {token!r}", token)

    def ident_value(self, token, negative, name):
        """A bare identifier: true/false, inf/nan, or an enum name kept as a string."""
        special = _FLOAT_IDENTS.get(token.text.lower())
        if special is not None:
            return -special if negative else special
        if negative:
            raise self.error(f"invalid number '-{token.text}' for '{name.text}'", token)
        return _SPECIAL_IDENTS.get(token.text, token.text)

    def parse_block(self, name, depth):
        """A nested message ``{ ... }`` (or ``< ... >``)."""
        if depth >= _MAX_DEPTH:
            raise self.error(f"messages nested more than {_MAX_DEPTH} deep")
        opener = self.take()
        closer = _CLOSERS[opener.text]
        message = self.parse_fields(closer, depth + 1, name.line)
        if not self.at_symbol(closer):
            raise self.error(
                f"'{name.text} {opener.text}' opened at line {opener.line} is never closed (expected '{closer}')",
                opener,
            )
        self.take()
        return message


def parse_prototxt(text, filename="<string>"):
    """Parse protobuf text format (Caffe's ``.prototxt``) into nested dicts of lists.

    Without the schema the parser cannot tell repeated fields from single ones, so every key
    maps to the list of its values, in file order; nested messages are dicts of the same form.
    Numbers become int or float, quoted strings str (escapes decoded, adjacent literals joined),
    ``true``/``false`` bool, and other bare identifiers (enum values like ``MAX``) str.
    Accepts ``key: value``, ``key { ... }``, ``key: { ... }``, ``key < ... >``, the list form
    ``key: [a, b]``, optional ``,``/``;`` separators and ``#`` comments.
    A syntax error raises :class:`ConfigError` with ``file=filename`` and the line.
    """
    return _TextParser(text, filename).parse_document()


# ---------------------------------------------------------------------------------------------
# From parsed prototxt to netlayers' form, by the declared schema
# ---------------------------------------------------------------------------------------------


class _Shape:
    """How to shape one parsed message: its fields (``{name: Field}``) and, for the fields whose
    values are messages of a kind the Field does not carry (a net's layers, a solver's inline
    nets), the function that shapes each value."""

    def __init__(self, fields=None, special=None, finish=None):
        self.fields = fields or {}
        self.special = special or {}
        self.finish = finish

    def repeated(self, key, count):
        field = self.fields.get(key)
        return field.repeated if field is not None else count != 1  # unknown: nothing is lost

    def nested(self, key):
        """The _Shape of a nested message ``key`` (None: a plain value)."""
        field = self.fields.get(key)
        if field is not None and isinstance(field.kind, Message):
            return _Shape(field.kind.fields)
        return _Shape()


def _layer_shape(parsed):
    """A LayerParameter's shape: the common layer fields and its type's parameter blocks."""
    from ..netspec.spec import LAYER_FIELDS
    from ..registry import layer_class

    type_name = (parsed.get("type") or [None])[0]
    fields = dict(LAYER_FIELDS)
    try:
        blocks = layer_class(type_name).param_blocks() if isinstance(type_name, str) else {}
    except ConfigError:
        blocks = {}
    for block, block_fields in blocks.items():
        fields[block] = _block_field(block_fields, block)
    return _Shape(fields, finish=_finish_layer)


def _block_field(block_fields, name):
    from ..netspec.schema import Field

    return Field(Message(block_fields, name=name))


def _v1_layer_shape(parsed):
    """A V1LayerParameter's shape: as the current layer of its type, plus the V1 lists."""
    from .upgrade import V1_LISTS, V1_TYPES

    v1_type = (parsed.get("type") or [None])[0]
    current = dict(parsed)
    current["type"] = [V1_TYPES.get(v1_type, v1_type)]
    shape = _layer_shape(current)
    shape.fields = {**shape.fields, **V1_LISTS}
    shape.finish = None
    return shape


def _net_shape(_parsed=None):
    from ..netspec.spec import NET_FIELDS

    fields = {name: field for name, field in NET_FIELDS.items() if name not in ("layers", "solver")}
    return _Shape(fields, special={"layer": _layer_shape, "layers": _v1_layer_shape}, finish=_finish_net)


def _solver_shape(_parsed=None):
    from ..solvers.base import SOLVER_FIELDS

    nets = {name: _net_shape for name in ("net_param", "train_net_param", "test_net_param")}
    return _Shape(SOLVER_FIELDS, special=nets)


def _convert_message(parsed, shape):
    """Turn ``{key: [values]}`` into netlayers' form by ``shape``; lines are kept."""
    if not isinstance(parsed, dict):
        raise TypeError(f"expected the dict parse_prototxt returns, got {type(parsed).__name__}")
    value_lines = getattr(parsed, "value_lines", {})
    out = LineDict()
    out.line, out.key_lines = getattr(parsed, "line", None), {}
    for key, values in parsed.items():
        special = shape.special.get(key)
        values = [
            _convert_message(v, special(v) if special else shape.nested(key)) if isinstance(v, dict) else v
            for v in values
        ]
        lines = value_lines.get(key) or []
        out.key_lines[key] = lines[0] if lines else out.line
        if key in shape.special and key in ("layer", "layers") or shape.repeated(key, len(values)):
            values = LineList(values)
            values.line, values.item_lines = out.key_lines[key], list(lines)
            out[key] = values
        else:
            out[key] = values[0]
    return shape.finish(out) if shape.finish else out


def _finish_layer(layer):
    """A single bottom or top is written as a plain string, as netlayers allows."""
    for key in ("bottom", "top"):
        if isinstance(layer.get(key), list) and len(layer[key]) == 1:
            layer[key] = layer[key][0]
    return layer


def _finish_net(net):
    """Upgrade a legacy V1 net (netlayers/caffe/upgrade.py), then rename Caffe's ``layer`` list
    to netlayers' ``layers``, keeping the key's position."""
    from .upgrade import is_v1_net, upgrade_v1_net

    if is_v1_net(net):
        net = upgrade_v1_net(net)
        for layer in net["layer"]:
            _finish_layer(layer)
    renamed = LineDict(("layers" if key == "layer" else key, value) for key, value in net.items())
    renamed.line = net.line
    renamed.key_lines = {("layers" if key == "layer" else key): line for key, line in net.key_lines.items()}
    return renamed


def to_netlayers(parsed):
    """Convert a parsed Caffe NetParameter into netlayers' YAML net form (a dict).

    Field names stay Caffe's; the layer list is under ``layers``; repeated fields are lists
    (a single ``bottom``/``top`` is a plain string); enum values stay strings (``MAX``).
    """
    return _convert_message(parsed, _net_shape())


def solver_to_netlayers(parsed):
    """Convert a parsed Caffe SolverParameter into a dict (repeated fields as lists).

    Keys are caffe.proto's (``base_lr``, ``lr_policy``, ``test_iter: [100]``, ...); inline nets
    (``net_param`` and the like) are converted as by :func:`to_netlayers`.
    """
    return _convert_message(parsed, _solver_shape())


def _read_text(path):
    """A prototxt file's text; a missing or unreadable file is a ConfigError naming it."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError("not a text file (invalid UTF-8)", file=str(path)) from None
    except OSError as err:
        raise ConfigError(f"cannot read: {err.strerror or err}", file=str(path)) from None


PROTOTXT_SUFFIXES = (".prototxt", ".pbtxt")


def is_prototxt(path):
    """True for a file named as protobuf text (``.prototxt``, ``.pbtxt``)."""
    return Path(path).suffix.lower() in PROTOTXT_SUFFIXES


def holds_a_net(path):
    """True when the prototxt file at ``path`` is a net (it has layers or net-level inputs), not
    a solver. A file that cannot be read or parsed is a one-line ConfigError naming it."""
    parsed = parse_prototxt(_read_text(path), filename=str(path))
    return any(key in parsed for key in ("layer", "layers", "input", "input_shape", "input_dim"))


def read_prototxt(path, message="NetParameter"):
    """A Caffe net (or, with ``message="SolverParameter"``, solver) prototxt file in netlayers'
    mapping form, legacy V1 nets upgraded, with the line of every field kept for later errors.
    A file that cannot be read or parsed is a one-line ConfigError naming it."""
    text = _read_text(path)
    try:
        shape = _solver_shape() if message == "SolverParameter" else _net_shape()
        return _convert_message(parse_prototxt(text, filename=str(path)), shape)
    except ConfigError as err:
        raise err.located(file=str(path)) from None


def convert_prototxt(path, solver_path=None):
    """The YAML text of a netlayers config converted from a Caffe net prototxt.

    With ``solver_path`` the solver prototxt is added as a ``solver:`` section, without its
    ``net:`` field (the net is this file). Errors are :class:`ConfigError` naming the file.
    """
    try:
        config = to_netlayers(parse_prototxt(_read_text(path), filename=str(path)))
    except ConfigError as err:
        raise err.located(file=str(path)) from None
    sources = [Path(path).name]
    if solver_path is not None:
        solver = solver_to_netlayers(parse_prototxt(_read_text(solver_path), filename=str(solver_path)))
        solver.pop("net", None)
        config["solver"] = solver
        sources.append(Path(solver_path).name)
    header = f"# netlayers config converted from Caffe's {' and '.join(sources)}\n"
    return header + yaml.safe_dump(
        plain(config), sort_keys=False, default_flow_style=None, allow_unicode=True, width=100, indent=2
    )
