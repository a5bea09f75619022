"""pycaffe's net specification in Python: ``caffe.layers``, ``caffe.params``, ``NetSpec``.

As in pycaffe (``from netlayers.caffe import layers as L, params as P``)::

    n = NetSpec()
    n.data, n.label = L.Data(source="fashion-mnist/train", backend=P.Data.IDX, batch_size=64,
                             transform_param=dict(scale=1. / 255), ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20, weight_filler=dict(type="xavier"))
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    n.loss = L.SoftmaxWithLoss(n.relu1, n.label)
    open("net.prototxt", "w").write(str(n.to_proto()))

``L.<Type>(*bottoms, ntop=1, in_place=False, **fields)`` makes a layer and returns its top
(a tuple of ``ntop`` tops, or the layer itself for ``ntop=0``). A keyword that is a field of the
layer's own block (``convolution_param`` for Convolution and Deconvolution) goes there;
``name``, ``param``, ``include``, ``exclude``, ``loss_weight``, ``propagate_down`` and any
``*_param`` block stay on the layer; ``bottom``/``top`` add blob names to the layer's own.
Dicts are messages, lists repeated fields. Any other keyword is an error naming the layer type
and the field, with the close matches, raised where ``L.<Type>(...)`` is called.

Naming is pycaffe's: a top is named after the NetSpec attribute it was assigned to, else
``<Type><count>`` (``Convolution1``); a layer after its first top; an in-place layer's tops are
its bottoms' names. ``P.<Type>.<VALUE>`` are Caffe's enum constants (``P.Pooling.MAX``,
``P.Data.LMDB``, ``P.Eltwise.SUM``, ``P.LRN.ACROSS_CHANNELS``, ``P.Loss.VALID``), ints with
Caffe's numbers that know their names; beyond Caffe, the values netlayers adds (``P.Data.IDX``,
``P.Data.NPZ``) are numbered after Caffe's.

``to_proto()`` returns a :class:`NetParameter`: netlayers' YAML form of the net as a dict
(``netlayers.Net(proto)`` builds it), whose ``str()`` is Caffe's prototxt and ``to_yaml()``
netlayers' YAML.
"""

import os
import sys
from collections import Counter, OrderedDict

import numpy as np
import yaml

from ..errors import ConfigError
from ..netspec import Enum, Message
from ..netspec.schema import close_match_hint
from ..netspec.spec import LAYER_FIELDS
from . import text_format

__all__ = ["layers", "params", "NetSpec", "NetParameter", "Top", "Function", "to_proto"]

#: Layer fields a keyword may set (``type`` is the ``L.<Type>`` name itself).
_LAYER_KEYWORDS = tuple(name for name in LAYER_FIELDS if name != "type")


class UnknownNameError(ConfigError, AttributeError):
    """A name ``L``, ``P`` or a NetSpec does not have: a one-line error, and still an
    AttributeError for ``getattr``/``hasattr``."""


class TopTypeError(ConfigError, TypeError):
    """A layer's input that is not a Top: a one-line error, and the TypeError pycaffe raises."""


def _caller():
    """``(file, line)`` of the user's code that called into this module."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame = frame.f_back
    return (frame.f_code.co_filename, frame.f_lineno) if frame is not None else (None, None)


def _error(message, cls=ConfigError):
    file, line = _caller()
    return cls(message, file=file, line=line)


# -- caffe.params ---------------------------------------------------------------------------


class EnumValue(int):
    """A ``caffe.params`` constant: Caffe's number for the value, knowing its name."""

    def __new__(cls, number, name, group):
        value = super().__new__(cls, number)
        value.enum_name = name
        value.group = group
        return value

    def __getnewargs__(self):
        return int(self), self.enum_name, self.group

    def __str__(self):
        return self.enum_name

    def __repr__(self):
        return f"P.{self.group}.{self.enum_name}"


def _block_enum_fields(type_name):
    """``{field: Enum}`` of the enum fields in the own block of the layer type ``type_name``."""
    cls = _layer_class_or_none(type_name)
    if cls is None:
        return {}
    fields = cls.param_blocks().get(_own_block(cls)) or {}
    return {name: field.kind for name, field in fields.items() if isinstance(field.kind, Enum)}


def _layer_class_or_none(type_name):
    from ..registry import layer_class

    try:
        return layer_class(type_name)
    except ConfigError:
        return None


def _group_values(group):
    """``{name: EnumValue}`` of ``P.<group>``: Caffe's enums of that message, and the values
    netlayers' layer of that type adds."""
    numbers = {}
    enum_fields = _block_enum_fields(group)
    caffe_fields = list(text_format.CAFFE_ENUMS.get(group, {}))
    for field in caffe_fields + [name for name in enum_fields if name not in caffe_fields]:
        names = enum_fields[field].names if field in enum_fields else ()
        numbers.update(text_format.caffe_enum_numbers(group, field, names))
    return {name: EnumValue(number, name, group) for name, number in numbers.items()}


class _ParamGroup:
    """``P.<group>``: its enum constants as attributes."""

    def __init__(self, group, values):
        self._group, self._values = group, values

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if name not in self._values:
            known = ", ".join(self._values) or "none"
            raise _error(
                f"P.{self._group} has no value '{name}'{close_match_hint(name, self._values)}; it has: {known}",
                UnknownNameError,
            )
        return self._values[name]

    def __dir__(self):
        return list(self._values)


class Parameters:
    """``caffe.params``: ``P.Pooling.MAX`` and the other enum constants of Caffe's messages."""

    def __getattr__(self, group):
        if group.startswith("__"):
            raise AttributeError(group)
        values = _group_values(group)
        if not values and group not in text_format.CAFFE_ENUMS and _layer_class_or_none(group) is None:
            groups = sorted(set(text_format.CAFFE_ENUMS) | set(_registered_types()))
            raise _error(f"P.{group}: no such message{close_match_hint(group, groups)}", UnknownNameError)
        return _ParamGroup(group, values)


def _registered_types():
    from ..registry import layer_types

    return layer_types()


# -- caffe.layers ---------------------------------------------------------------------------


def _own_block(cls):
    """The block a layer class's own fields live in: ``<type>_param``, or the block the class
    names (``convolution_param`` for Deconvolution)."""
    from ..layer import block_name

    blocks = cls.param_blocks()
    own = block_name(cls.type)
    return own if own in blocks else getattr(cls, "block", None)


class Top:
    """One output blob of a layer: ``fn`` the layer (a :class:`Function`), ``n`` its index."""

    def __init__(self, fn, n):
        self.fn, self.n = fn, n

    def to_proto(self):
        """The net of every layer this top needs."""
        return to_proto(self)


class Function:
    """One layer: its type, its bottoms (tops of other layers), and its routed fields."""

    def __init__(self, type_name, inputs, kwargs):
        self.type_name = type_name
        self.inputs = tuple(inputs)
        for index, bottom in enumerate(self.inputs):
            if not isinstance(bottom, Top):
                hint = f"L.{type_name}(*tops, ...)" if isinstance(bottom, tuple) else "bottom=['name']"
                raise _error(
                    f"{type_name} input {index} is not a Top (type is {type(bottom)}): bottom {index} is a "
                    f"{type(bottom).__name__}, not the top of a layer (write {hint})",
                    TopTypeError,
                )
        self.ntop = _count(kwargs.pop("ntop", 1), type_name)
        self.in_place = bool(kwargs.pop("in_place", False))
        self.fields = route_fields(type_name, kwargs)
        self.tops = tuple(Top(self, n) for n in range(self.ntop))

    def layer_dict(self, bottoms, tops, name):
        """This layer in netlayers' YAML form, given its blob names and its name."""
        layer = {"name": name, "type": self.type_name}
        bottoms = list(bottoms) + _names(self.fields.get("bottom"))
        tops = list(tops) + _names(self.fields.get("top"))
        if bottoms:
            layer["bottom"] = bottoms[0] if len(bottoms) == 1 else bottoms
        if tops:
            layer["top"] = tops[0] if len(tops) == 1 else tops
        layer.update((k, v) for k, v in self.fields.items() if k not in ("bottom", "top"))
        return LayerParameter(layer)


def _count(ntop, type_name):
    if isinstance(ntop, bool) or not isinstance(ntop, int) or ntop < 0:
        raise _error(f"L.{type_name}: ntop must be a whole number >= 0, got {ntop!r}")
    return ntop


def _names(value):
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def route_fields(type_name, kwargs):
    """Sort a layer's keywords as pycaffe does: fields of the layer's own block go into that
    block; layer fields and ``*_param`` blocks stay on the layer. Values become plain data
    (enum constants their names). Anything else is a ConfigError with the close matches."""
    from ..registry import layer_class

    file, line = _caller()
    try:
        cls = layer_class(type_name)
    except ConfigError as err:
        raise ConfigError(f"L.{type_name}: {err.message}", file=file, line=line) from None
    blocks = cls.param_blocks()
    own = _own_block(cls)
    routed = {}
    for key, value in kwargs.items():
        if own is not None and key in blocks[own]:
            block = routed.setdefault(own, {})
            block[key] = _plain(value, blocks[own][key], text_format._message_key(own), key)
        elif key in _LAYER_KEYWORDS:
            routed[key] = _plain(value, LAYER_FIELDS[key], None, key)
        elif key in blocks:
            routed[key] = _plain_block(value, blocks[key], key, type_name, routed.get(key))
        elif key in _IGNORED_LAYER_FIELDS:
            continue  # a LayerParameter field Caffe accepts on any layer and this type never reads
        else:
            raise ConfigError(_unknown_message(type_name, key, blocks, own), file=file, line=line)
    return routed


#: LayerParameter fields pycaffe writes on any layer; a type that reads none (pycaffe's own
#: tests give DummyData a transform_param) ignores them in Caffe, so they are left out here
_IGNORED_LAYER_FIELDS = ("transform_param",)


def _unknown_message(type_name, key, blocks, own):
    """What to say about a keyword no field of the layer takes."""
    for block, fields in blocks.items():
        if block != own and key in fields:
            return f"L.{type_name}: field '{key}' belongs to {block}: write {block}=dict({key}=...)"
    candidates = list(_LAYER_KEYWORDS) + list(blocks) + (list(blocks[own]) if own else [])
    known = ", ".join(sorted(set(candidates) - {"bottom", "top"}))
    hint = close_match_hint(key, candidates)
    return f"L.{type_name}: unknown field '{key}'{hint}; layer type {type_name} takes: {known}"


def _plain_block(value, fields, block, type_name, earlier):
    if not isinstance(value, dict):
        raise _error(f"L.{type_name}: {block} takes a dict of its fields, got {type(value).__name__}")
    merged = dict(earlier or {})
    merged.update(_plain_message(value, fields, text_format._message_key(block)))
    return merged


def _plain_message(value, fields, message):
    return {key: _plain(item, fields.get(key), message, key) for key, item in value.items()}


def _plain(value, field, message, name):
    """``value`` of the field ``name`` as plain YAML-shaped data: dicts, lists, str, int,
    float, bool. Enum values (constants or Caffe's numbers) become names where the field is an
    enum; tuples become lists, and a single value of a repeated field a list of one."""
    if field is not None and field.repeated and not isinstance(value, (list, tuple)):
        value = [value]
    if isinstance(value, (list, tuple)):
        return [_plain_item(item, field, message, name) for item in value]
    return _plain_item(value, field, message, name)


def _plain_item(value, field, message, name):
    kind = field.kind if field is not None else None
    if isinstance(value, (list, tuple)):  # a list where one value is expected: the checker says so
        return [_plain_item(item, field, message, name) for item in value]
    if isinstance(value, dict):
        if isinstance(kind, Message):
            return _plain_message(value, kind.fields, text_format._message_key(kind.name))
        return _plain_message(value, {}, None)
    if isinstance(value, (Top, Function)):
        raise _error(f"field '{name}': a top can only be a bottom (a positional argument of L.<Type>)")
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, EnumValue):
        return value.enum_name if kind is None or isinstance(kind, Enum) else int(value)
    value = _builtin(value)
    if isinstance(kind, Enum):
        return text_format.enum_name(value, kind, message, name)
    return value


def _builtin(value):
    """A str, int or float subclass (``caffe.TRAIN``) or a path as the plain value YAML writes."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if type(value) in (bool, str, int, float):
        return value
    for base in (bool, str, int, float):
        if isinstance(value, base) and type(value) is not base:
            return str.__str__(value) if base is str else base(value)
    return value


class Layers:
    """``caffe.layers``: ``L.<Type>(*bottoms, **fields)`` makes a layer of any registered type."""

    def __getattr__(self, type_name):
        if type_name.startswith("__"):
            raise AttributeError(type_name)

        def layer_fn(*bottoms, **kwargs):
            fn = Function(type_name, bottoms, kwargs)
            if fn.ntop == 0:
                return fn
            return fn.tops[0] if fn.ntop == 1 else fn.tops

        layer_fn.__name__ = type_name
        return layer_fn


# -- from tops to a net ---------------------------------------------------------------------


class _Namer:
    """pycaffe's naming while a net is written: given names first, then ``<Type><count>``."""

    def __init__(self, given):
        self.names = dict(given)
        self.counts = Counter()

    def auto(self, type_name):
        self.counts[type_name] += 1
        return f"{type_name}{self.counts[type_name]}"

    def top(self, top):
        if top not in self.names:
            self.names[top] = self.auto(top.fn.type_name)
        return self.names[top]

    def layer(self, fn):
        if fn not in self.names:
            self.names[fn] = self.top(fn.tops[0]) if fn.ntop else self.auto(fn.type_name)
        return self.names[fn]


def _collect(fn, layers, namer):
    """Write ``fn``'s layer after those of its bottoms (each layer once) into ``layers``."""
    if fn in layers:
        return
    bottoms = []
    for top in fn.inputs:
        _collect(top.fn, layers, namer)
        bottoms.append(layers[top.fn]["_tops"][top.n])
    if fn.in_place:
        tops = list(bottoms)
    else:
        tops = [namer.top(top) for top in fn.tops]
    layer = fn.layer_dict(bottoms, tops, namer.layer(fn))
    layer["_tops"] = tops
    layers[fn] = layer


def _net_of(items, given_names):
    layers = OrderedDict()
    namer = _Namer(given_names)
    for item in items:
        _collect(item.fn if isinstance(item, Top) else item, layers, namer)
    for layer in layers.values():
        del layer["_tops"]
    return NetParameter(layers=list(layers.values()))


def to_proto(*tops):
    """The net of every layer the given tops need, names made by pycaffe's rule."""
    for index, top in enumerate(tops):
        if not isinstance(top, (Top, Function)):
            raise _error(f"to_proto: argument {index} is a {type(top).__name__}, not a top")
    return _net_of(tops, {})


class NetSpec:
    """Tops assigned as attributes (``n.conv1 = L.Convolution(...)``) name their blobs and
    layers; ``to_proto()`` writes every layer the assigned tops need."""

    def __init__(self):
        super().__setattr__("tops", OrderedDict())

    def __setattr__(self, name, value):
        if not isinstance(value, (Top, Function)):
            raise _error(f"NetSpec.{name}: assign the top of a layer (L.<Type>(...)), not a {type(value).__name__}")
        self.tops[name] = value

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self.tops[name]
        except KeyError:
            hint = close_match_hint(name, self.tops)
            raise _error(f"NetSpec has no top '{name}'{hint}", UnknownNameError) from None

    __setitem__ = __setattr__
    __getitem__ = __getattr__

    def to_proto(self):
        """The net of every assigned top, in assignment order."""
        names = {value: name for name, value in self.tops.items()}
        return _net_of(list(self.tops.values()), names)


class LayerParameter(dict):
    """One layer of :func:`to_proto`'s net: netlayers' YAML form as a dict whose fields also
    read as attributes, as on pycaffe's message: ``layer.bottom`` and ``layer.top`` are lists
    of blob names (empty when there are none)."""

    def __getattr__(self, name):
        if name in ("bottom", "top"):
            return _names(self.get(name, []))
        if name in self:
            return self[name]
        raise AttributeError(name)


class NetParameter(dict):
    """A net written by :func:`to_proto`: netlayers' YAML form as a dict (``netlayers.Net``
    builds it), ``str()`` Caffe's prototxt, ``to_yaml()`` netlayers' YAML. As on pycaffe's
    message, ``.layer`` is the list of layers and fields read and set as attributes
    (``proto.name = "LeNet"``)."""

    def __getattr__(self, name):
        key = "layers" if name == "layer" else name
        if key in self:
            return self[key]
        raise AttributeError(name)

    def __setattr__(self, name, value):
        self["layers" if name == "layer" else name] = value

    def __str__(self):
        return text_format.net_to_text(self)

    def to_yaml(self):
        """netlayers' YAML text of the net (the name first, then the layers)."""
        plain = {"name": self["name"]} if "name" in self else {}
        plain.update((k, v) for k, v in self.items() if k != "name")
        return yaml.safe_dump(
            _plain_data(plain), sort_keys=False, default_flow_style=None, allow_unicode=True, width=100
        )


def _plain_data(value):
    """Dict subclasses and tuples as plain dicts and lists (what yaml.safe_dump writes)."""
    if isinstance(value, dict):
        return {key: _plain_data(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_data(item) for item in value]
    return value


layers = Layers()
params = Parameters()
