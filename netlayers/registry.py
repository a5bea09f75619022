"""Maps the ``type:`` names of a config to layer classes.

    @register_layer("Sigmoid")
    class Sigmoid(NeuronLayer): ...

A user can register a class of their own under a new name the same way, from any module that
is imported before the net is built.
"""

import difflib

from .errors import ConfigError

_LAYERS: dict[str, type] = {}


def register_layer(type_name):
    """Class decorator: make ``type: <type_name>`` in a config build this class."""

    def register(cls):
        existing = _LAYERS.get(type_name)
        if (
            existing is not None
            and existing is not cls
            and existing.__module__ == cls.__module__
            and existing.__qualname__ != cls.__qualname__
        ):
            raise ValueError(f"layer type '{type_name}' is registered twice in {cls.__module__}")
        cls.type = type_name
        _LAYERS[type_name] = cls
        return cls

    return register


def layer_class(type_name, where=None):
    """The class registered as ``type_name``; an unknown name is an error naming the closest
    known names (ignoring case), or all of them when none is close (as Caffe lists them)."""
    _load_builtin_layers()
    try:
        return _LAYERS[type_name]
    except (KeyError, TypeError):
        message = f"unknown layer type '{type_name}'; {_suggest(str(type_name))}"
        if where is not None:
            raise where.error(message) from None
        raise ConfigError(message) from None


def _suggest(word):
    by_lower = {name.lower(): name for name in _LAYERS}
    close = difflib.get_close_matches(word.lower(), by_lower, n=3, cutoff=0.6)
    if close:
        return "did you mean " + " or ".join(f"'{by_lower[c]}'" for c in close) + "?"
    return "known types: " + ", ".join(sorted(_LAYERS))


def layer_types():
    _load_builtin_layers()
    return sorted(_LAYERS)


def _load_builtin_layers():
    from . import layers  # noqa: F401  (importing the package registers every built-in layer)
