"""Maps the ``type:`` names of a config to layer classes.

    @register_layer("Sigmoid")
    class Sigmoid(NeuronLayer): ...

A user can register a class of their own under a new name the same way, from any module that
is imported before the net is built.
"""
from .errors import ConfigError
from .netspec.schema import close_match_hint

_LAYERS = {}


def register_layer(type_name):
    """Class decorator: make ``type: <type_name>`` in a config build this class."""
    def register(cls):
        existing = _LAYERS.get(type_name)
        if existing is not None and existing is not cls and existing.__module__ == cls.__module__ \
                and existing.__qualname__ != cls.__qualname__:
            raise ValueError(f"layer type '{type_name}' is registered twice in {cls.__module__}")
        cls.type = type_name
        _LAYERS[type_name] = cls
        return cls
    return register


def layer_class(type_name, where=None):
    """The class registered as ``type_name``; an unknown name is an error listing close ones."""
    _load_builtin_layers()
    try:
        return _LAYERS[type_name]
    except (KeyError, TypeError):
        hint = close_match_hint(type_name, _LAYERS)
        message = f"unknown layer type '{type_name}'{hint}"
        if where is not None:
            raise where.error(message) from None
        raise ConfigError(message) from None


def layer_types():
    _load_builtin_layers()
    return sorted(_LAYERS)


def _load_builtin_layers():
    from . import layers  # noqa: F401  (importing the package registers every built-in layer)
