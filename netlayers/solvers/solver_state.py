"""Reading a solver state file back: every field checked before anything is restored.

A state file is an ``.npz`` anyone can edit or damage, so nothing read from it is trusted: each
field must have the kind and shape the solver wrote (one integer, one text, float arrays, JSON
objects of the right shape), or the error names the file and the field, in one line.
"""

import json

from ..errors import ConfigError, NetlayersError

#: what a layer's ``set_state`` may raise on a state it cannot take (the state came from a file)
STATE_REFUSED = (KeyError, TypeError, ValueError, IndexError, OverflowError, AttributeError)


def described(value):
    """A short description of an array read from a state file, for messages."""
    if value.shape == () and value.dtype.kind in "biufU":
        shown = repr(value.item())
        return f"{shown[:40]}{'...' if len(shown) > 40 else ''} ({value.dtype})"
    return f"an array of {value.dtype} with shape {value.shape}"


class StateFields:
    """The arrays of one state file (``arrays``, read from ``path``), read field by field."""

    def __init__(self, arrays, path):
        self.arrays = arrays
        self.path = path

    def error(self, field, message):
        """A ConfigError naming the state file and ``field`` (None: the file as a whole)."""
        return ConfigError(message, file=str(self.path), field=field)

    def integer(self, key):
        """A non-negative integer stored as a 0-d integer array."""
        value = self.arrays[key]
        if value.shape != () or value.dtype.kind not in "iu":
            raise self.error(key, f"must be one integer, got {described(value)}")
        number = int(value)
        if number < 0:
            raise self.error(key, f"must not be negative, got {number}")
        return number

    def text(self, key):
        """A string stored as a 0-d text array."""
        value = self.arrays[key]
        if value.shape != () or value.dtype.kind != "U":
            raise self.error(key, f"must be text, got {described(value)}")
        return str(value)

    def floats(self, key):
        """A float array, taken back as the update rule left it: an accumulator that overflowed
        to inf (Adam's or AdaGrad's squared gradients) is a state training goes on from (those
        weights stop moving), so a resumed run must go on from it too."""
        value = self.arrays[key]
        if value.dtype.kind != "f":
            raise self.error(key, f"must hold floats, got {described(value)}")
        return value

    def net_state(self, key, net):
        """A net's state as :meth:`Net.state` gives it, from JSON text: an object with ``rng``
        (a state of ``net``'s generator type) and an optional ``layers`` object."""
        text = self.text(key)
        try:
            state = json.loads(text)
        except (ValueError, RecursionError):
            raise self.error(key, "is not valid JSON") from None
        if (
            not isinstance(state, dict)
            or not isinstance(state.get("rng"), dict)
            or not isinstance(state.get("layers", {}), dict)
        ):
            raise self.error(key, 'must be a JSON object {"rng": {...}, "layers": {...}}')
        generator = net.rng.bit_generator
        probe = type(generator)()
        try:
            probe.state = state["rng"]
        except (*STATE_REFUSED, RuntimeError):
            raise self.error(key, f"its 'rng' is not a {type(generator).__name__} generator state") from None
        return state


def restore_net_state(net, state, path, field):
    """Set ``net``'s generator and layer states from ``state`` (checked by
    :meth:`StateFields.net_state`), as :meth:`Net.set_state` does, but one layer at a time so
    that a layer refusing its state is named: a ConfigError naming the state file ``path``, the
    layer and ``field``. Layers the net does not have are skipped."""
    net.rng.bit_generator.state = state["rng"]
    for name, layer_state in state.get("layers", {}).items():
        if name not in net.layer_names:
            continue
        try:
            net.layer(name).set_state(layer_state)
        except NetlayersError as err:
            raise ConfigError(
                f"cannot be restored: {_detail(err, name)}", file=str(path), layer=name, field=field
            ) from None
        except STATE_REFUSED as err:
            raise ConfigError(
                f"holds a state this layer cannot take ({type(err).__name__}: {err})",
                file=str(path),
                layer=name,
                field=field,
            ) from None


def _detail(err, layer):
    """``err``'s message with its own file and field, and its layer when not ``layer``."""
    parts = [
        str(err.file) if err.file else None,
        f"layer '{err.layer}'" if err.layer and err.layer != layer else None,
        f"field '{err.field}'" if err.field else None,
        err.message,
    ]
    return ": ".join(part for part in parts if part)
