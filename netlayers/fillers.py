"""Weight initialisation, with Caffe's FillerParameter semantics.

Every filler draws from the generator it is given; a net owns one seeded generator, so the same
config and seed give bit-identical weights. Random values are drawn in float64 and cast, so a
float32 and a float64 net with one seed start from the same numbers (to float32 precision).

fan_in = count / shape[0] and fan_out = count / shape[1], as Caffe computes them for a weight of
shape (outputs, inputs, ...):

- constant: every value is ``value`` (Caffe's default filler, so an unfilled weight is 0).
- uniform: U(min, max).
- uniform_int (beyond Caffe): whole numbers drawn uniformly from min to max, both included
  (DummyData class labels: ``{type: uniform_int, min: 0, max: 9}``); min and max must be whole
  numbers of magnitude at most 2^24, so every value is exact in float32.
- gaussian: N(mean, std^2); with ``sparse`` = s >= 0 each value is kept with probability
  s / shape[0] and zeroed otherwise.
- xavier: U(-a, a) with a = sqrt(3 / n), n = fan_in, fan_out or their mean (``variance_norm``).
- msra: N(0, 2 / n), n as for xavier.
- positive_unitball: U(0, 1), then each of the shape[0] slices is scaled to sum to 1.
- bilinear: the weights of bilinear up-sampling for a Deconvolution kernel (k x k).

Values no distribution can take are ConfigErrors naming the field (relative to the filler:
``std``, ``min``, ``sparse``), which the caller locates at its layer: a gaussian std < 0,
a uniform min > max or a range max - min too wide for a float, a sparse below -1 (Caffe's
CHECK_GE). An empty blob (a zero-sized axis) has nothing to fill and is left as it is.
"""

import math

import numpy as np

from .errors import ConfigError


def _fans(shape):
    count = int(np.prod(shape)) if shape else 1
    fan_in = count // shape[0] if shape and shape[0] else count
    fan_out = count // shape[1] if len(shape) > 1 and shape[1] else count
    return fan_in, fan_out


def _norm_size(filler, shape):
    fan_in, fan_out = _fans(shape)
    return {"FAN_IN": fan_in, "FAN_OUT": fan_out, "AVERAGE": (fan_in + fan_out) / 2.0}[filler.variance_norm]


def constant(filler, shape, rng):
    return np.full(shape, filler.value)


def uniform(filler, shape, rng):
    return rng.uniform(filler.min, filler.max, size=shape)


def uniform_int(filler, shape, rng):
    return rng.integers(int(filler.min), int(filler.max), size=shape, endpoint=True)


def gaussian(filler, shape, rng):
    values = rng.normal(filler.mean, filler.std, size=shape)
    if filler.sparse >= 0:
        if not shape:
            raise ConfigError("a sparse gaussian filler needs a blob with at least one axis")
        keep = rng.random(size=shape) < filler.sparse / shape[0]
        values = values * keep
    return values


def xavier(filler, shape, rng):
    bound = np.sqrt(3.0 / _norm_size(filler, shape))
    return rng.uniform(-bound, bound, size=shape)


def msra(filler, shape, rng):
    return rng.normal(0.0, np.sqrt(2.0 / _norm_size(filler, shape)), size=shape)


def positive_unitball(filler, shape, rng):
    values = rng.uniform(0.0, 1.0, size=shape)
    rows = values.reshape(shape[0], -1) if shape else values.reshape(1, -1)
    rows /= rows.sum(axis=1, keepdims=True)
    return values


def bilinear(filler, shape, rng):
    if len(shape) != 4 or shape[2] != shape[3]:
        raise ConfigError(f"the bilinear filler needs a 4-axis square kernel, got shape {shape}")
    size = shape[3]
    factor = np.ceil(size / 2.0)
    centre = (2 * factor - 1 - factor % 2) / (2.0 * factor)
    ramp = 1 - np.abs(np.arange(size) / factor - centre)
    kernel = np.outer(ramp, ramp)
    return np.broadcast_to(kernel, shape).copy()


FILLERS = {
    "constant": constant,
    "uniform": uniform,
    "uniform_int": uniform_int,
    "gaussian": gaussian,
    "xavier": xavier,
    "msra": msra,
    "positive_unitball": positive_unitball,
    "bilinear": bilinear,
}

#: The largest magnitude of a uniform_int bound: every integer up to it is exact in float32.
UNIFORM_INT_LIMIT = 2**24


def check(filler):
    """Raise a ConfigError (field relative to the filler) for values the filler's distribution
    cannot take; the fields its type does not use are not looked at."""
    kind = filler.type
    if kind == "uniform":
        if filler.min > filler.max:
            raise ConfigError(
                f"the uniform filler's min must not exceed max, got min {filler.min:g} > max {filler.max:g}",
                field="min",
            )
        if not math.isfinite(float(filler.max) - float(filler.min)):
            raise ConfigError(
                f"the uniform filler's range max - min is too wide for a float "
                f"(min {filler.min:g}, max {filler.max:g})",
                field="max",
            )
    elif kind == "uniform_int":
        check_uniform_int(filler)


def check_uniform_int(filler):
    """min and max: whole numbers within +-2^24, min <= max."""
    for name in ("min", "max"):
        value = float(filler[name])
        if not (value.is_integer() and abs(value) <= UNIFORM_INT_LIMIT):
            raise ConfigError(
                f"the uniform_int filler's {name} must be a whole number from "
                f"-2^24 to 2^24 (exact in float32), got {value:g}",
                field=name,
            )
    if filler.min > filler.max:
        raise ConfigError(
            f"the uniform_int filler's min must not exceed max, got min {filler.min:g} > max {filler.max:g}",
            field="min",
        )


def fill(array, filler, rng):
    """Fill ``array`` in place as the checked FillerParameter ``filler`` says."""
    try:
        make = FILLERS[filler.type]
    except KeyError:
        known = ", ".join(FILLERS)
        raise ConfigError(f"unknown filler type '{filler.type}'; known: {known}", field="type") from None
    check(filler)
    if array.size == 0:  # nothing to fill (and no fan to divide by)
        return array
    array[...] = make(filler, array.shape, rng)
    return array
