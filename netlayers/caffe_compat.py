"""Reading Caffe's own files without a protobuf dependency.

Two formats, both defined by Caffe's ``src/caffe/proto/caffe.proto``:

- ``.caffemodel`` weights: a binary protobuf ``NetParameter``. :func:`read_caffemodel` decodes
  the protobuf wire format by hand and returns each layer's parameter blobs as float32 arrays.
- ``.prototxt`` nets and solvers: protobuf *text* format. :func:`parse_prototxt` reads the text
  without knowing the schema (so every key maps to a list of values); :func:`to_netlayers` and
  :func:`solver_to_netlayers` then use a small table of Caffe's repeated fields to produce
  netlayers' YAML form, and :func:`convert_prototxt` writes that as YAML text.

Field numbers used by the binary decoder (from caffe.proto)::

    NetParameter      layer = 100 (LayerParameter), layers = 2 (V1LayerParameter, legacy)
    LayerParameter    name = 1, blobs = 7 (BlobProto)
    V1LayerParameter  name = 4, blobs = 6, layer = 1 (V0LayerParameter, older still)
    V0LayerParameter  name = 1, blobs = 50
    BlobProto         num = 1, channels = 2, height = 3, width = 4 (legacy 4-D shape),
                      data = 5 (packed float), shape = 7 (BlobShape),
                      double_data = 8 (packed double)
    BlobShape         dim = 1 (packed int64)
"""

import math
import re
from pathlib import Path

import numpy as np
import yaml

from .errors import ConfigError, DataError
from .netspec.yaml_lines import LineDict, LineList, plain

__all__ = [
    "read_caffemodel",
    "parse_prototxt",
    "to_netlayers",
    "solver_to_netlayers",
    "convert_prototxt",
    "read_prototxt",
    "is_prototxt",
]

# ---------------------------------------------------------------------------------------------
# Binary protobuf: the wire format
# ---------------------------------------------------------------------------------------------

WIRE_VARINT, WIRE_FIXED64, WIRE_LENGTH, WIRE_FIXED32 = 0, 1, 2, 5
_WIRE_NAMES = {WIRE_VARINT: "varint", WIRE_FIXED64: "64-bit", WIRE_LENGTH: "length-delimited", WIRE_FIXED32: "32-bit"}

# NetParameter fields holding layers, and where each layer kind keeps its name and blobs.
_NET_LAYER = 100  # repeated LayerParameter layer = 100
_NET_V1_LAYERS = 2  # repeated V1LayerParameter layers = 2
_LAYER_NAME, _LAYER_BLOBS = 1, 7
_V1_NAME, _V1_BLOBS, _V1_V0_LAYER = 4, 6, 1
_V0_NAME, _V0_BLOBS = 1, 50
# BlobProto and BlobShape fields.
_BLOB_LEGACY_DIMS = (1, 2, 3, 4)  # num, channels, height, width
_BLOB_DATA, _BLOB_SHAPE, _BLOB_DOUBLE_DATA = 5, 7, 8
_SHAPE_DIM = 1
# Caffe refuses blobs of more than INT_MAX values; the same bound keeps a shape with a zero
# dimension beside huge ones (which holds no data, so passes the size check) out of numpy.
_MAX_BLOB_COUNT = 2**31 - 1


class _WireError(Exception):
    """Malformed protobuf bytes; turned into a DataError naming the file by the caller."""


def _read_varint(buf, pos, end):
    """Decode one base-128 varint at ``pos``; returns ``(value, next_pos)``."""
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise _WireError(_overrun_message(buf, pos, end))
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _WireError(f"malformed varint at byte {pos - 10}")


def _overrun_message(buf, pos, end):
    """The message for a field that runs past the end of its data."""
    if end >= len(buf):
        return f"data ends in the middle of a field at byte {pos} of {len(buf)} (file truncated?)"
    return f"corrupt data: a field at byte {pos} runs past the end of its enclosing message"


def _to_int64(value):
    """Reinterpret a decoded varint as a signed 64-bit integer (two's complement)."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def _iter_fields(buf, start, end):
    """Yield ``(field_number, wire_type, value)`` for the message in ``buf[start:end]``.

    ``value`` is the integer for varints and the ``(start, end)`` byte span of the payload for
    the other wire types. Group wire types (3, 4; unused by Caffe) and invalid ones raise.
    """
    pos = start
    while pos < end:
        key_pos = pos
        key, pos = _read_varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _WireError(f"not protobuf data: field number 0 at byte {key_pos}")
        if wire == WIRE_VARINT:
            value, pos = _read_varint(buf, pos, end)
            yield number, wire, value
            continue
        if wire == WIRE_LENGTH:
            size, pos = _read_varint(buf, pos, end)
        elif wire in (WIRE_FIXED64, WIRE_FIXED32):
            size = 8 if wire == WIRE_FIXED64 else 4
        else:
            raise _WireError(f"not protobuf data: unsupported wire type {wire} at byte {key_pos}")
        if pos + size > end:
            raise _WireError(_overrun_message(buf, pos + size, end))
        yield number, wire, (pos, pos + size)
        pos += size


def _parse_message(buf, start, end):
    """Group a message's fields by number: ``{number: [(wire_type, value), ...]}``."""
    fields = {}
    for number, wire, value in _iter_fields(buf, start, end):
        fields.setdefault(number, []).append((wire, value))
    return fields


def _expect_wire(number, wire, allowed, what):
    if wire not in allowed:
        expected = " or ".join(_WIRE_NAMES[w] for w in allowed)
        raise _WireError(f"{what}: field {number} is {_WIRE_NAMES.get(wire, wire)}, expected {expected}")


def _get_string(buf, fields, number, what):
    """The last value of a string field (protobuf's rule for repeated scalars), or None."""
    if number not in fields:
        return None
    wire, (start, end) = fields[number][-1]
    _expect_wire(number, wire, (WIRE_LENGTH,), what)
    try:
        return bytes(buf[start:end]).decode("utf-8")
    except UnicodeDecodeError:
        raise _WireError(f"{what}: field {number} is not valid UTF-8 text") from None


def _get_int64(fields, number, what, default=0):
    """The last value of an int64 varint field, or ``default``."""
    if number not in fields:
        return default
    wire, value = fields[number][-1]
    _expect_wire(number, wire, (WIRE_VARINT,), what)
    return _to_int64(value)


def _get_spans(fields, number, what):
    """Byte spans of every occurrence of an embedded-message field."""
    spans = []
    for wire, value in fields.get(number, ()):
        _expect_wire(number, wire, (WIRE_LENGTH,), what)
        spans.append(value)
    return spans


def _repeated_int64(buf, fields, number, what):
    """All values of a repeated int64 field, packed or unpacked (both are legal on the wire)."""
    values = []
    for wire, value in fields.get(number, ()):
        _expect_wire(number, wire, (WIRE_VARINT, WIRE_LENGTH), what)
        if wire == WIRE_VARINT:
            values.append(_to_int64(value))
            continue
        pos, end = value
        while pos < end:
            item, pos = _read_varint(buf, pos, end)
            values.append(_to_int64(item))
    return values


def _repeated_real(buf, fields, number, dtype, what):
    """All values of a repeated float (``<f4``) or double (``<f8``) field, packed or unpacked."""
    dtype = np.dtype(dtype)
    wire_single = WIRE_FIXED32 if dtype.itemsize == 4 else WIRE_FIXED64
    chunks = []
    for wire, (start, end) in fields.get(number, ()):
        _expect_wire(number, wire, (wire_single, WIRE_LENGTH), what)
        if (end - start) % dtype.itemsize:
            raise _WireError(
                f"{what}: packed field {number} holds {end - start} bytes, not a multiple of {dtype.itemsize}"
            )
        chunks.append(np.frombuffer(buf, dtype=dtype, count=(end - start) // dtype.itemsize, offset=start))
    if not chunks:
        return np.empty(0, dtype=dtype)
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)


def _blob_shape(buf, fields, what):
    """A BlobProto's shape: ``shape.dim`` if present, else legacy num/channels/height/width."""
    shape_spans = _get_spans(fields, _BLOB_SHAPE, what)
    if shape_spans:
        dims = []
        for start, end in shape_spans:  # several occurrences merge, as protobuf does
            dims += _repeated_int64(buf, _parse_message(buf, start, end), _SHAPE_DIM, f"{what} shape")
    elif any(n in fields for n in _BLOB_LEGACY_DIMS):
        dims = [_get_int64(fields, n, what) for n in _BLOB_LEGACY_DIMS]
    else:
        dims = []
    if any(d < 0 for d in dims):
        raise _WireError(f"{what}: negative dimension in shape {tuple(dims)}")
    if math.prod(d for d in dims if d) > _MAX_BLOB_COUNT:
        raise _WireError(f"{what}: shape {tuple(dims)} is larger than Caffe allows ({_MAX_BLOB_COUNT} values)")
    return tuple(dims)


def _decode_blob(buf, span, what):
    """Decode one BlobProto into a float32 array of its shape."""
    fields = _parse_message(buf, *span)
    shape = _blob_shape(buf, fields, what)
    data = _repeated_real(buf, fields, _BLOB_DATA, "<f4", what)
    if data.size == 0:
        data = _repeated_real(buf, fields, _BLOB_DOUBLE_DATA, "<f8", what)
    count = math.prod(shape)
    if data.size != count:
        raise _WireError(f"{what}: holds {data.size} values but its shape {shape} needs {count}")
    blob = np.empty(shape, dtype=np.float32)  # owns its memory: no view of the file's bytes
    blob.reshape(-1)[...] = data
    return blob


def _layer_name_and_blob_spans(buf, number, span, index):
    """``(name, [blob spans])`` of one LayerParameter (field 100) or V1LayerParameter (field 2)."""
    what = f"layer #{index}"
    fields = _parse_message(buf, *span)
    if number == _NET_LAYER:
        name = _get_string(buf, fields, _LAYER_NAME, what)
        return name or "", _get_spans(fields, _LAYER_BLOBS, what)
    name = _get_string(buf, fields, _V1_NAME, what)
    blobs = _get_spans(fields, _V1_BLOBS, what)
    v0_spans = _get_spans(fields, _V1_V0_LAYER, what)
    if v0_spans and not blobs:  # the oldest files nest a V0LayerParameter holding it all
        v0 = _parse_message(buf, *v0_spans[-1])
        name = name or _get_string(buf, v0, _V0_NAME, what)
        blobs = _get_spans(v0, _V0_BLOBS, what)
    return name or "", blobs


def _decode_net_blobs(buf):
    """Decode a NetParameter's layers into ``{name: [arrays]}`` (layers without blobs left out)."""
    net = _parse_message(buf, 0, len(buf))
    layers = [(number, entry) for number in (_NET_LAYER, _NET_V1_LAYERS) for entry in net.get(number, ())]
    if not layers:
        raise _WireError("no layers found: not a Caffe NetParameter (.caffemodel) file")
    result = {}
    for index, (number, (wire, span)) in enumerate(layers):
        _expect_wire(number, wire, (WIRE_LENGTH,), "NetParameter")
        name, blob_spans = _layer_name_and_blob_spans(buf, number, span, index)
        if blob_spans:
            # A repeated name keeps the later layer's blobs, as Caffe's weight copying does.
            result[name] = [_decode_blob(buf, s, f"layer '{name}' blob {i}") for i, s in enumerate(blob_spans)]
    return result


def read_caffemodel(path):
    """Read a Caffe ``.caffemodel`` (binary NetParameter) into ``{layer name: [float32 arrays]}``.

    Layers come in file order and only those with parameter blobs appear; each blob has its
    Caffe shape (e.g. a convolution's weights ``(num_output, channels, kh, kw)`` then its bias
    ``(num_output,)``). Both current (``layer``) and legacy (``layers``, V1) files are read.
    A missing, truncated or non-protobuf file raises :class:`DataError` naming the file.
    """
    try:
        buf = Path(path).read_bytes()
    except OSError as err:
        raise DataError(f"cannot read Caffe model: {err.strerror or err}", file=str(path)) from None
    if not buf:
        raise DataError("empty file: not a Caffe model", file=str(path))
    try:
        return _decode_net_blobs(buf)
    except _WireError as err:
        raise DataError(str(err), file=str(path)) from None


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
# From parsed prototxt to netlayers' form
# ---------------------------------------------------------------------------------------------

# Fields declared ``repeated`` in caffe.proto, per message (only messages that have any).
_REPEATED_FIELDS = {
    "NetParameter": {"layer", "layers", "input", "input_shape", "input_dim"},
    "LayerParameter": {"bottom", "top", "param", "loss_weight", "propagate_down", "include", "exclude", "blobs"},
    "V1LayerParameter": {
        "bottom",
        "top",
        "param",
        "blob_share_mode",
        "blobs_lr",
        "weight_decay",
        "loss_weight",
        "include",
        "exclude",
        "blobs",
    },
    "BlobShape": {"dim"},
    "BlobProto": {"data", "diff", "double_data", "double_diff"},
    "NetState": {"stage"},
    "NetStateRule": {"stage", "not_stage"},
    "TransformationParameter": {"mean_value"},
    "ConvolutionParameter": {"pad", "kernel_size", "stride", "dilation"},
    "CropParameter": {"offset"},
    "DummyDataParameter": {"data_filler", "shape", "num", "channels", "height", "width"},
    "EltwiseParameter": {"coeff"},
    "InputParameter": {"shape"},
    "SliceParameter": {"slice_point"},
    "SolverParameter": {"test_net", "test_net_param", "test_state", "test_iter", "stepvalue"},
}

# The message type of nested-message fields whose own fields include repeated ones.
_LAYER_MESSAGES = {  # LayerParameter's, and V1LayerParameter's (the same field names)
    "include": "NetStateRule",
    "exclude": "NetStateRule",
    "blobs": "BlobProto",
    "transform_param": "TransformationParameter",
    "convolution_param": "ConvolutionParameter",
    "crop_param": "CropParameter",
    "dummy_data_param": "DummyDataParameter",
    "eltwise_param": "EltwiseParameter",
    "input_param": "InputParameter",
    "parameter_param": "ParameterParameter",
    "reshape_param": "ReshapeParameter",
    "slice_param": "SliceParameter",
}

_MESSAGE_FIELDS = {
    "NetParameter": {
        "layer": "LayerParameter",
        "layers": "V1LayerParameter",
        "input_shape": "BlobShape",
        "state": "NetState",
    },
    "LayerParameter": _LAYER_MESSAGES,
    "V1LayerParameter": _LAYER_MESSAGES,
    "BlobProto": {"shape": "BlobShape"},
    "DummyDataParameter": {"shape": "BlobShape"},
    "InputParameter": {"shape": "BlobShape"},
    "ParameterParameter": {"shape": "BlobShape"},
    "ReshapeParameter": {"shape": "BlobShape"},
    "SolverParameter": {
        "net_param": "NetParameter",
        "train_net_param": "NetParameter",
        "test_net_param": "NetParameter",
        "train_state": "NetState",
        "test_state": "NetState",
    },
}


def _convert_message(parsed, type_name):
    """Turn ``{key: [values]}`` into Caffe-shaped data: repeated fields lists, others scalars.

    A field not known to be repeated but written more than once (or as ``[...]`` with other
    than one item) stays a list, so nothing is lost; messages of unknown type (layer
    parameters without repeated fields) follow the same rule.
    """
    if not isinstance(parsed, dict):
        raise TypeError(f"expected the dict parse_prototxt returns, got {type(parsed).__name__}")
    repeated = _REPEATED_FIELDS.get(type_name, ())
    nested = _MESSAGE_FIELDS.get(type_name, {})
    value_lines = getattr(parsed, "value_lines", {})
    out = LineDict()
    out.line, out.key_lines = getattr(parsed, "line", None), {}
    for key, values in parsed.items():
        values = [_convert_message(v, nested.get(key)) if isinstance(v, dict) else v for v in values]
        lines = value_lines.get(key) or []
        out.key_lines[key] = lines[0] if lines else out.line
        if key in repeated or len(values) != 1:
            values = LineList(values)
            values.line, values.item_lines = out.key_lines[key], list(lines)
            out[key] = values
        else:
            out[key] = values[0]
    finish = _FINISHERS.get(type_name)
    return finish(out) if finish else out


def _finish_layer(layer):
    """A single bottom or top is written as a plain string, as netlayers allows."""
    for key in ("bottom", "top"):
        if isinstance(layer.get(key), list) and len(layer[key]) == 1:
            layer[key] = layer[key][0]
    return layer


def _finish_net(net):
    """Upgrade a legacy V1 net (netlayers/caffe/upgrade.py), then rename Caffe's ``layer`` list
    to netlayers' ``layers``, keeping the key's position."""
    from .caffe.upgrade import is_v1_net, upgrade_v1_net

    if is_v1_net(net):
        net = upgrade_v1_net(net)
        for layer in net["layer"]:
            _finish_layer(layer)
    renamed = LineDict(("layers" if key == "layer" else key, value) for key, value in net.items())
    renamed.line = net.line
    renamed.key_lines = {("layers" if key == "layer" else key): line for key, line in net.key_lines.items()}
    return renamed


_FINISHERS = {"LayerParameter": _finish_layer, "NetParameter": _finish_net}


def to_netlayers(parsed):
    """Convert a parsed Caffe NetParameter into netlayers' YAML net form (a dict).

    Field names stay Caffe's; the layer list is under ``layers``; repeated fields are lists
    (a single ``bottom``/``top`` is a plain string); enum values stay strings (``MAX``).
    """
    return _convert_message(parsed, "NetParameter")


def solver_to_netlayers(parsed):
    """Convert a parsed Caffe SolverParameter into a dict (repeated fields as lists).

    Keys are caffe.proto's (``base_lr``, ``lr_policy``, ``test_iter: [100]``, ...); inline nets
    (``net_param`` and the like) are converted as by :func:`to_netlayers`.
    """
    return _convert_message(parsed, "SolverParameter")


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


def read_prototxt(path, message="NetParameter"):
    """A Caffe net (or, with ``message="SolverParameter"``, solver) prototxt file in netlayers'
    mapping form, legacy V1 nets upgraded, with the line of every field kept for later errors.
    A file that cannot be read or parsed is a one-line ConfigError naming it."""
    text = _read_text(path)
    try:
        return _convert_message(parse_prototxt(text, filename=str(path)), message)
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
