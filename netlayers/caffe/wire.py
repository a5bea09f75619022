"""Caffe's binary protobuf files written and read without a protobuf dependency.

The wire format (protobuf's encoding) in both directions: varints, length-delimited fields,
packed repeated floats, doubles and int64s (decoding: :func:`_iter_fields`,
:func:`_parse_message` and the field getters). On top of it:

- :class:`Message`, a small table-driven stand-in for a generated protobuf class (fields as
  attributes, ``SerializeToString``, ``ParseFromString``, ``HasField``), which
  :mod:`netlayers.caffe.proto.caffe_pb2` uses to declare ``BlobProto``, ``Datum``, ...;
- arrays to and from ``BlobProto`` bytes directly (:func:`encode_blob`, :func:`decode_blob`),
  fast enough for whole models;
- :func:`write_caffemodel`, a binary ``NetParameter`` Caffe 1.0 and OpenCV read, and
  :func:`read_caffemodel`, which reads it back keeping float64 blobs in float64;
- :func:`read_binaryproto`, a mean file (one ``BlobProto``) as an array.

Field numbers (caffe.proto)::

    NetParameter     name = 1, layer = 100 (LayerParameter)
    LayerParameter   name = 1, type = 2, blobs = 7 (BlobProto)
    BlobProto        num = 1, channels = 2, height = 3, width = 4 (legacy shape), data = 5,
                     diff = 6 (packed float), shape = 7 (BlobShape), double_data = 8,
                     double_diff = 9 (packed double)
    BlobShape        dim = 1 (packed int64)
    BlobProtoVector  blobs = 1 (BlobProto)
    Datum            channels = 1, height = 2, width = 3, data = 4 (bytes), label = 5,
                     float_data = 6 (float, not packed), encoded = 7 (bool)
"""

import math
import operator
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import ConfigError, DataError

__all__ = [
    "DecodeError",
    "Message",
    "encode_blob",
    "decode_blob",
    "write_caffemodel",
    "read_caffemodel",
    "read_binaryproto",
]

_UINT64 = (1 << 64) - 1

# ---------------------------------------------------------------------------------------------
# Decoding primitives
# ---------------------------------------------------------------------------------------------

WIRE_VARINT, WIRE_FIXED64, WIRE_LENGTH, WIRE_FIXED32 = 0, 1, 2, 5
_WIRE_NAMES = {WIRE_VARINT: "varint", WIRE_FIXED64: "64-bit", WIRE_LENGTH: "length-delimited", WIRE_FIXED32: "32-bit"}

# NetParameter fields holding layers, and where each layer kind keeps its name and blobs.
_NET_LAYER = 100  # repeated LayerParameter layer = 100
_NET_V1_LAYERS = 2  # repeated V1LayerParameter layers = 2
_LAYER_NAME, _LAYER_BLOBS = 1, 7
_V1_NAME, _V1_BLOBS, _V1_V0_LAYER = 4, 6, 1
_V0_NAME, _V0_BLOBS = 1, 50
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


# ---------------------------------------------------------------------------------------------
# Encoding primitives
# ---------------------------------------------------------------------------------------------


def encode_varint(value: int) -> bytes:
    """``value`` as a base-128 varint; a negative number as its 64-bit two's complement (ten
    bytes), as protobuf writes negative int32 and int64 values."""
    value &= _UINT64
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field_key(number: int, wire: int) -> bytes:
    """A field's key: its number and wire type as one varint."""
    return encode_varint(number << 3 | wire)


def varint_field(number: int, value: int) -> bytes:
    return field_key(number, WIRE_VARINT) + encode_varint(value)


def length_delimited_field(number: int, payload: bytes) -> bytes:
    """A string, bytes or embedded-message field: key, payload length, payload."""
    return field_key(number, WIRE_LENGTH) + encode_varint(len(payload)) + payload


def packed_reals_field(number: int, values: Any, dtype: str) -> bytes:
    """A packed repeated float (``<f4``) or double (``<f8``) field; nothing when empty (protobuf
    leaves an empty packed field out)."""
    array = np.ascontiguousarray(values, dtype=dtype).reshape(-1)
    return length_delimited_field(number, array.tobytes()) if array.size else b""


def packed_varints_field(number: int, values: Any) -> bytes:
    """A packed repeated int64 field; nothing when empty."""
    payload = b"".join(encode_varint(int(v)) for v in values)
    return length_delimited_field(number, payload) if payload else b""


class DecodeError(DataError):
    """Bytes that are not a valid protobuf message of the expected kind."""


# ---------------------------------------------------------------------------------------------
# Messages: a table of fields stands in for protoc's generated code
# ---------------------------------------------------------------------------------------------


class Field(NamedTuple):
    """One field of a message: ``kind`` is int32, int64, bool, bytes, string or message (then
    ``message`` is its class); repeated fields may also be float or double, and ``packed``."""

    name: str
    number: int
    kind: str
    repeated: bool = False
    packed: bool = False
    default: Any = None
    message: Any = None


_REAL_DTYPES = {"float": "<f4", "double": "<f8"}
_INT_BOUNDS = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_SCALAR_DEFAULTS = {"int32": 0, "int64": 0, "bool": False, "bytes": b"", "string": ""}


def _checked_scalar(field: Field, value: Any) -> Any:
    """``value`` converted to the field's Python type, or TypeError/ValueError as protobuf
    raises for a value of the wrong type or out of range."""
    kind = field.kind
    if kind in _INT_BOUNDS:
        value = operator.index(value)
        low, high = _INT_BOUNDS[kind]
        if not low <= value <= high:
            raise ValueError(f"value out of range for {kind} field '{field.name}': {value}")
        return value
    if kind == "bool":
        return bool(operator.index(value))
    if kind == "bytes" and isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if kind == "string" and isinstance(value, str):
        return value
    raise TypeError(f"field '{field.name}' takes {kind}, got {type(value).__name__}")


class RepeatedScalars(list):
    """A repeated number field: a list whose values are converted as protobuf stores them
    (floats rounded to float32 for a ``float`` field; integers checked)."""

    def __init__(self, field: Field, values: Any = ()) -> None:
        super().__init__()
        self._field = field
        self.extend(values)

    def _converted(self, values):
        dtype = _REAL_DTYPES.get(self._field.kind)
        if dtype is None:
            return [_checked_scalar(self._field, v) for v in values]
        if not isinstance(values, np.ndarray):
            values = list(values)
        return np.asarray(values, dtype=dtype).reshape(-1).tolist()

    def append(self, value: Any) -> None:
        super().extend(self._converted([value]))

    def extend(self, values: Any) -> None:
        super().extend(self._converted(values))

    def insert(self, index: Any, value: Any) -> None:
        super().insert(index, self._converted([value])[0])

    def __setitem__(self, index: Any, value: Any) -> None:
        if isinstance(index, slice):
            super().__setitem__(index, self._converted(value))
        else:
            super().__setitem__(index, self._converted([value])[0])

    def __iadd__(self, values: Any) -> "RepeatedScalars":  # type: ignore[misc]
        self.extend(values)
        return self

    def array(self) -> np.ndarray:
        """The values as a numpy array of the wire's type (float32, float64 or int64)."""
        return np.asarray(self, dtype=_REAL_DTYPES.get(self._field.kind, np.int64))


class RepeatedMessages(list):
    """A repeated message field: a list with protobuf's ``add(**fields)``."""

    def __init__(self, field: Field) -> None:
        super().__init__()
        self._field = field

    def add(self, **fields: Any) -> "Message":
        message = self._field.message(**fields)
        super().append(message)
        return message

    def _checked(self, message):
        if not isinstance(message, self._field.message):
            expected = self._field.message.__name__
            raise TypeError(f"field '{self._field.name}' holds {expected} messages, got {type(message).__name__}")
        return message

    def append(self, message: Any) -> None:
        super().append(self._checked(message))

    def extend(self, messages: Any) -> None:
        super().extend(self._checked(m) for m in messages)


class Message:
    """A protobuf message declared by a table of :class:`Field` (class attribute ``FIELDS``).

    Behaves as protoc's Python classes do for what Caffe's users call: fields as attributes
    (keyword arguments in the constructor), ``HasField`` for optional fields, repeated fields as
    lists (``extend``, ``append``, ``add`` for messages), ``SerializeToString``,
    ``ParseFromString`` / ``MergeFromString``, ``CopyFrom``, ``Clear``, ``ClearField``, ``==``.
    Serialization writes fields in number order, as protobuf does; unknown fields met while
    parsing are dropped.
    """

    FIELDS: tuple[Field, ...] = ()
    _BY_NAME: dict[str, Field] = {}
    _BY_NUMBER: dict[int, Field] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._BY_NAME = {f.name: f for f in cls.FIELDS}
        cls._BY_NUMBER = {f.number: f for f in cls.FIELDS}
        cls.FIELDS = tuple(sorted(cls.FIELDS, key=lambda f: f.number))

    def __init__(self, **fields: Any) -> None:
        object.__setattr__(self, "_values", {})
        object.__setattr__(self, "_present", set())
        for f in self.FIELDS:
            if f.repeated:
                self._values[f.name] = RepeatedMessages(f) if f.kind == "message" else RepeatedScalars(f)
            elif f.kind == "message":
                self._values[f.name] = f.message()
        for name, value in fields.items():
            field = self._field(name)
            if field.repeated:
                self._values[name].extend(value)
            elif field.kind == "message" and isinstance(value, Mapping):
                self._values[name].CopyFrom(field.message(**value))
                self._present.add(name)
            else:
                setattr(self, name, value)

    @classmethod
    def _field(cls, name):
        try:
            return cls._BY_NAME[name]
        except KeyError:
            raise AttributeError(f"{cls.__name__} has no field '{name}'") from None

    def __getattr__(self, name: str) -> Any:
        field = self._field(name)
        if name in self._values:
            return self._values[name]
        return _SCALAR_DEFAULTS[field.kind] if field.default is None else field.default

    def __setattr__(self, name: str, value: Any) -> None:
        field = self._field(name)
        if field.repeated:
            raise AttributeError(f"assignment not allowed to repeated field '{name}' (use extend or append)")
        if field.kind == "message":
            if not isinstance(value, field.message):
                raise TypeError(f"field '{name}' takes a {field.message.__name__}, got {type(value).__name__}")
            self._values[name].CopyFrom(value)
        else:
            self._values[name] = _checked_scalar(field, value)
        self._present.add(name)

    def HasField(self, name: str) -> bool:
        """Whether an optional field was set (a message field: set, parsed, or not empty)."""
        field = self._field(name)
        if field.repeated:
            raise ValueError(f"HasField: '{name}' is a repeated field")
        if field.kind == "message":
            return name in self._present or bool(self._values[name].SerializeToString())
        return name in self._present

    def ClearField(self, name: str) -> None:
        field = self._field(name)
        self._present.discard(name)
        if field.repeated:
            del self._values[name][:]
        elif field.kind == "message":
            self._values[name].Clear()
        else:
            self._values.pop(name, None)

    def Clear(self) -> None:
        for f in self.FIELDS:
            self.ClearField(f.name)

    def CopyFrom(self, other: "Message") -> None:
        if other is self:
            return
        if type(other) is not type(self):
            raise TypeError(f"CopyFrom: expected a {type(self).__name__}, got {type(other).__name__}")
        self.Clear()
        self.MergeFromString(other.SerializeToString())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message) or type(other) is not type(self):
            return NotImplemented
        return self.SerializeToString() == other.SerializeToString()

    __hash__ = None  # type: ignore[assignment]  # mutable, as protobuf's messages

    def __repr__(self) -> str:
        parts = []
        for f in self.FIELDS:
            value = self._values.get(f.name)
            if f.repeated and value:
                shown = value[:8] if f.kind != "message" else [f"<{len(value)} {f.message.__name__}>"]
                parts.append(f"{f.name}={list(shown)}{'...' if len(value) > 8 and f.kind != 'message' else ''}")
            elif not f.repeated and self.HasField(f.name):
                shown = value if not isinstance(value, bytes) else f"<{len(value)} bytes>"
                parts.append(f"{f.name}={shown!r}" if f.kind != "message" else f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    # -- wire format -----------------------------------------------------------------------
    def SerializeToString(self) -> bytes:
        """The message's bytes in protobuf's wire format, fields in number order."""
        return b"".join(self._encode_field(f) for f in self.FIELDS)

    def _encode_field(self, f):
        value = self._values.get(f.name)
        if f.repeated:
            if f.kind == "message":
                return b"".join(length_delimited_field(f.number, m.SerializeToString()) for m in value)
            return _encode_repeated_scalars(f, value)
        if not self.HasField(f.name):
            return b""
        if f.kind == "message":
            return length_delimited_field(f.number, value.SerializeToString())
        return _encode_scalar(f, value)

    def ParseFromString(self, data: bytes) -> int:
        """Replace the contents by the message in ``data``; returns the number of bytes read.
        Bytes that are not such a message raise :class:`DecodeError`."""
        self.Clear()
        return self.MergeFromString(data)

    def MergeFromString(self, data: bytes) -> int:
        """Merge the message in ``data`` into this one, as protobuf does: scalars overwrite,
        repeated fields append, message fields merge."""
        buf = bytes(data) if not isinstance(data, bytes) else data
        try:
            self._merge(buf, 0, len(buf))
        except _WireError as err:
            raise DecodeError(f"not a valid {type(self).__name__}: {err}") from None
        return len(buf)

    def _merge(self, buf, start, end):
        what = type(self).__name__
        fields = _parse_message(buf, start, end)
        for number in fields:
            f = self._BY_NUMBER.get(number)
            if f is None:
                continue
            if f.kind == "message":
                for span in _get_spans(fields, number, what):
                    target = self._values[f.name].add() if f.repeated else self._values[f.name]
                    target._merge(buf, *span)
                    if not f.repeated:
                        self._present.add(f.name)
            elif f.repeated:
                self._values[f.name].extend(_decode_repeated_scalars(buf, fields, f, what))
            else:
                self._values[f.name] = _decode_scalar(buf, fields, f, what)
                self._present.add(f.name)


def _encode_scalar(f, value):
    if f.kind in _INT_BOUNDS or f.kind == "bool":
        return varint_field(f.number, int(value))
    return length_delimited_field(f.number, value.encode("utf-8") if f.kind == "string" else value)


def _encode_repeated_scalars(f, values):
    if f.kind in _REAL_DTYPES:
        if f.packed:
            return packed_reals_field(f.number, values, _REAL_DTYPES[f.kind])
        key = field_key(f.number, WIRE_FIXED32 if f.kind == "float" else WIRE_FIXED64)
        return b"".join(key + item for item in _item_bytes(values, _REAL_DTYPES[f.kind]))
    if f.packed:
        return packed_varints_field(f.number, values)
    return b"".join(varint_field(f.number, int(v)) for v in values)


def _item_bytes(values, dtype):
    raw = np.asarray(values, dtype=dtype).tobytes()
    size = np.dtype(dtype).itemsize
    return (raw[i : i + size] for i in range(0, len(raw), size))


def _to_int32(value):
    """A decoded int64 truncated to int32, as protobuf reads an int32 field."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _decode_scalar(buf, fields, f, what):
    wire, value = fields[f.number][-1]  # the last occurrence wins
    if f.kind in ("int32", "int64", "bool"):
        number = _get_int64(fields, f.number, what)
        return _to_int32(number) if f.kind == "int32" else bool(number) if f.kind == "bool" else number
    if f.kind == "string":
        return _get_string(buf, fields, f.number, what)
    _expect_wire(f.number, wire, (WIRE_LENGTH,), what)
    return bytes(buf[value[0] : value[1]])


def _decode_repeated_scalars(buf, fields, f, what):
    if f.kind in _REAL_DTYPES:
        return _repeated_real(buf, fields, f.number, _REAL_DTYPES[f.kind], what)
    values = _repeated_int64(buf, fields, f.number, what)
    return [_to_int32(v) for v in values] if f.kind == "int32" else values


# ---------------------------------------------------------------------------------------------
# BlobProto <-> arrays, directly (no Message objects: whole models go through here)
# ---------------------------------------------------------------------------------------------

_BLOB_LEGACY = (1, 2, 3, 4)  # num, channels, height, width
_BLOB_DATA, _BLOB_DIFF, _BLOB_SHAPE, _BLOB_DOUBLE_DATA, _BLOB_DOUBLE_DIFF = 5, 6, 7, 8, 9
_SHAPE_DIM = 1


def _real_array(value, what):
    """``value`` as an array of numbers for a blob: float64 kept, every other number type as
    float32 (Caffe's blobs are float or double)."""
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise ConfigError(f"{what} holds {array.dtype} values, expected numbers")
    return array if array.dtype == np.float64 else array.astype(np.float32, copy=False)


def encode_blob(data: Any, diff: Any = None) -> bytes:
    """A ``BlobProto``'s bytes for an array (and optionally its gradient, of the same shape):
    the shape as ``BlobShape`` dims; float64 values in ``double_data``/``double_diff``, others as
    float32 in ``data``/``diff`` (as Caffe's ``Blob<double>`` and ``Blob<float>`` write them)."""
    return b"".join(_blob_chunks(data, diff))


def _blob_chunks(data, diff=None):
    """:func:`encode_blob`'s bytes as a list of pieces, the values as views of the arrays (no
    copy of a contiguous float32 or float64 array), in field number order."""
    data = _real_array(data, "a blob")
    double = data.dtype == np.float64
    dtype = "<f8" if double else "<f4"
    data_field, diff_field = (_BLOB_DOUBLE_DATA, _BLOB_DOUBLE_DIFF) if double else (_BLOB_DATA, _BLOB_DIFF)
    values = _packed_reals_chunks(data_field, data, dtype)
    if diff is not None:
        diff = _real_array(diff, "a blob's diff")
        if diff.size != data.size:
            raise ConfigError(f"a blob's diff has shape {diff.shape}, its data {data.shape}: they must match")
        values += _packed_reals_chunks(diff_field, diff, dtype)
    shape = [length_delimited_field(_BLOB_SHAPE, packed_varints_field(_SHAPE_DIM, data.shape))]
    return shape + values if double else values + shape


def _packed_reals_chunks(number, values, dtype):
    """:func:`packed_reals_field` as [key and length, a byte view of the values]."""
    array = np.ascontiguousarray(values, dtype=dtype).reshape(-1)
    if not array.size:
        return []
    return [field_key(number, WIRE_LENGTH) + encode_varint(array.nbytes), memoryview(array).cast("B")]


def _decoded_shape(buf, fields, what):
    """A BlobProto's shape as Caffe's ``Blob::FromProto`` reads it: the legacy
    num/channels/height/width when any of them is present, else ``shape.dim``."""
    if any(n in fields for n in _BLOB_LEGACY):
        dims = [_get_int64(fields, n, what) for n in _BLOB_LEGACY]
    else:
        dims = []
        for start, end in _get_spans(fields, _BLOB_SHAPE, what):
            dims += _repeated_int64(buf, _parse_message(buf, start, end), _SHAPE_DIM, f"{what} shape")
    if any(d < 0 for d in dims):
        raise _WireError(f"{what}: negative dimension in shape {tuple(dims)}")
    if math.prod(d for d in dims if d) > _MAX_BLOB_COUNT:
        raise _WireError(f"{what}: shape {tuple(dims)} is larger than Caffe allows ({_MAX_BLOB_COUNT} values)")
    return tuple(dims)


def _decoded_values(buf, fields, numbers, shape, what):
    """The float field's values, else the double field's, as an array of ``shape`` (None when
    both are empty and the shape holds values)."""
    values = _repeated_real(buf, fields, numbers[0], "<f4", what)
    if values.size == 0:
        values = _repeated_real(buf, fields, numbers[1], "<f8", what)
    count = math.prod(shape)
    if values.size == 0 and count:
        return None
    if values.size != count:
        raise _WireError(f"{what}: holds {values.size} values but its shape {shape} needs {count}")
    return values.reshape(shape).copy()  # owns its memory: no view of the file's bytes


def decode_blob(
    buf: bytes, span: tuple[int, int] | None = None, what: str = "BlobProto"
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(data, diff)`` of the ``BlobProto`` in ``buf`` (or in ``buf[span[0]:span[1]]``): float32
    arrays from ``data``/``diff``, float64 from ``double_data``/``double_diff``; ``diff`` is None
    when the blob holds none. Malformed bytes raise :class:`DecodeError`."""
    start, end = span if span is not None else (0, len(buf))
    try:
        fields = _parse_message(buf, start, end)
        shape = _decoded_shape(buf, fields, what)
        data = _decoded_values(buf, fields, (_BLOB_DATA, _BLOB_DOUBLE_DATA), shape, what)
        diff = _decoded_values(buf, fields, (_BLOB_DIFF, _BLOB_DOUBLE_DIFF), shape, f"{what} diff")
    except _WireError as err:
        raise DecodeError(str(err)) from None
    if data is None:
        raise DecodeError(f"{what}: holds no values but its shape {shape} needs {math.prod(shape)}")
    return data, diff


def read_binaryproto(path: str | os.PathLike) -> np.ndarray:
    """The data of the single ``BlobProto`` in a ``.binaryproto`` file (a mean file written by
    Caffe's ``compute_image_mean``: shape ``(1, channels, height, width)``), float32 (float64
    for ``double_data``). A missing or malformed file raises :class:`DataError` naming it."""
    buf = _read_file(path, "mean file")
    try:
        data, _ = decode_blob(buf)
    except DecodeError as err:
        raise DecodeError(f"not a BlobProto (.binaryproto): {err.message}", file=str(path)) from None
    return data


def _read_file(path, what):
    try:
        buf = Path(path).read_bytes()
    except OSError as err:
        raise DataError(f"cannot read the {what}: {err.strerror or err}", file=str(path)) from None
    if not buf:
        raise DataError(f"empty file: not a {what}", file=str(path))
    return buf


# ---------------------------------------------------------------------------------------------
# .caffemodel: a binary NetParameter
# ---------------------------------------------------------------------------------------------

_NET_NAME, _LAYER_NAME, _LAYER_TYPE, _LAYER_BLOBS = 1, 1, 2, 7


def _layers_with_blobs(source):
    """``(name, type or None, [arrays])`` for every layer of ``source`` that has params: a
    netlayers or pycaffe-style Net (layers with ``type`` and ``blobs``, names in
    ``layer_names`` or ``_layer_names``) or a mapping ``{layer name: [arrays]}``."""
    source = getattr(source, "netlayers_net", source)  # caffe.Net wraps a netlayers Net
    if isinstance(source, Mapping):
        for name, arrays in source.items():
            if not isinstance(name, str):
                raise ConfigError(f"write_caffemodel: layer names must be text, got {name!r:.60}")
            if isinstance(arrays, np.ndarray) or not hasattr(arrays, "__iter__"):
                raise ConfigError(
                    f"write_caffemodel: layer '{name}' must map to a list of arrays, got {type(arrays).__name__}"
                )
            yield name, None, [_real_array(a, f"layer '{name}' blob {i}") for i, a in enumerate(arrays)]
        return
    names = getattr(source, "layer_names", None) or getattr(source, "_layer_names", None)
    layers = getattr(source, "layers", None)
    if names is None or layers is None:
        raise ConfigError(f"write_caffemodel takes a Net or a mapping {{layer: [arrays]}}, got {type(source).__name__}")
    for name, layer in zip(names, layers):
        blobs = list(getattr(layer, "blobs", ()))
        if blobs:
            yield name, getattr(layer, "type", None), [_real_array(blob.data, f"layer '{name}'") for blob in blobs]


def _layer_chunks(name, layer_type, arrays):
    """A ``NetParameter.layer`` field as a list of byte pieces: a ``LayerParameter`` with the
    name, the type (when known) and one BlobProto per array."""
    parts = [length_delimited_field(_LAYER_NAME, name.encode("utf-8"))]
    if layer_type:
        parts.append(length_delimited_field(_LAYER_TYPE, str(layer_type).encode("utf-8")))
    for array in arrays:
        blob = _blob_chunks(array)
        parts += [field_key(_LAYER_BLOBS, WIRE_LENGTH) + encode_varint(sum(len(c) for c in blob)), *blob]
    return [field_key(_NET_LAYER, WIRE_LENGTH) + encode_varint(sum(len(c) for c in parts)), *parts]


def write_caffemodel(net: Any, path: str | os.PathLike) -> None:
    """Write ``net``'s parameters as a Caffe ``.caffemodel`` (a binary ``NetParameter``).

    ``net`` is a netlayers Net or a ``caffe.Net`` (its name is written too) or a mapping ``{layer name: [arrays]}``. One
    ``LayerParameter`` (field ``layer``) per layer with params, in order, holding its name, its
    type and its blobs (shapes as ``BlobShape``; float64 blobs as ``double_data``), which is what
    Caffe's ``CopyTrainedLayersFrom`` and OpenCV's ``readNetFromCaffe`` match by layer name.
    Written to a temporary file and renamed into place: a crash leaves the old file whole. A
    file that cannot be written raises :class:`DataError` naming it.
    """
    from ..io import as_path, create_temporary

    path = as_path(path, "write_caffemodel")
    name = getattr(getattr(net, "netlayers_net", net), "name", None)
    layers = [(n, t, a) for n, t, a in _layers_with_blobs(net)]  # every check before any writing
    if path.is_dir():
        raise DataError("is a folder, expected a file name for the Caffe model (.caffemodel)", file=str(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = create_temporary(path)
    except OSError as err:
        raise DataError(f"cannot write the Caffe model: {err.strerror or err}", file=str(path)) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            if name:
                handle.write(length_delimited_field(_NET_NAME, str(name).encode("utf-8")))
            for layer in layers:
                for chunk in _layer_chunks(*layer):
                    handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise DataError(f"cannot write the Caffe model: {err.strerror or err}", file=str(path)) from None
        raise


def read_caffemodel(path: str | os.PathLike) -> dict[str, list[np.ndarray]]:
    """``{layer name: [arrays]}`` of a ``.caffemodel``, as
    Caffe's weight copying reads it: each blob with its Caffe shape and its own type (float32
    from ``data``, float64 from ``double_data``, so a float64 net written by
    :func:`write_caffemodel` reads back identical); current (``layer``) and legacy V1/V0
    (``layers``) files; a repeated layer name keeps the later layer's blobs."""
    buf = _read_file(path, "Caffe model")
    try:
        net = _parse_message(buf, 0, len(buf))
        layers = [(number, entry) for number in (_NET_LAYER, _NET_V1_LAYERS) for entry in net.get(number, ())]
        if not layers:
            raise _WireError("no layers found: not a Caffe NetParameter (.caffemodel) file")
        result = {}
        for index, (number, (wire, span)) in enumerate(layers):
            _expect_wire(number, wire, (WIRE_LENGTH,), "NetParameter")
            name, spans = _layer_name_and_blob_spans(buf, number, span, index)
            if spans:
                result[name] = [decode_blob(buf, s, f"layer '{name}' blob {i}")[0] for i, s in enumerate(spans)]
        return result
    except (_WireError, DecodeError) as err:
        raise DataError(str(err.args[0] if isinstance(err, _WireError) else err.message), file=str(path)) from None
