"""Moved: the wire format to :mod:`netlayers.caffe.wire`, prototxt reading to
:mod:`netlayers.caffe.prototxt`. This module re-exports their names for code written against it
and will be removed."""

from .caffe.prototxt import (  # noqa: F401
    _read_text,
    convert_prototxt,
    is_prototxt,
    parse_prototxt,
    read_prototxt,
    solver_to_netlayers,
    to_netlayers,
)
from .caffe.wire import (  # noqa: F401
    _MAX_BLOB_COUNT,
    _NET_LAYER,
    _NET_V1_LAYERS,
    WIRE_FIXED32,
    WIRE_FIXED64,
    WIRE_LENGTH,
    WIRE_VARINT,
    _expect_wire,
    _get_int64,
    _get_spans,
    _get_string,
    _iter_fields,
    _layer_name_and_blob_spans,
    _parse_message,
    _repeated_int64,
    _repeated_real,
    _WireError,
    read_caffemodel,
)
