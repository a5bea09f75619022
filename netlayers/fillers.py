"""Weight initialisation, with Caffe's FillerParameter semantics.

Every filler draws from the generator it is given; a net owns one seeded generator, so the same
config and seed give bit-identical weights. Random values are drawn in float64 and cast, so a
float32 and a float64 net with one seed start from the same numbers (to float32 precision);
a large blob is filled in pieces (``PIECE``), the same numbers as one draw.

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


# Each filler draws ``size`` values (a shape, or a count: the next values of a blob filled in
# pieces) for a blob of ``shape`` (which sets its fans); ``fill`` writes them in.
def constant(filler, shape, rng, size):
    return np.full(size, filler.value)


def uniform(filler, shape, rng, size):
    return rng.uniform(filler.min, filler.max, size=size)


def uniform_int(filler, shape, rng, size):
    return rng.integers(int(filler.min), int(filler.max), size=size, endpoint=True)


def gaussian(filler, shape, rng, size):
    """N(mean, std^2); a sparse gaussian's zeros are drawn by ``fill`` after all the values."""
    return rng.normal(filler.mean, filler.std, size=size)


def xavier(filler, shape, rng, size):
    bound = np.sqrt(3.0 / _norm_size(filler, shape))
    return rng.uniform(-bound, bound, size=size)


def msra(filler, shape, rng, size):
    return rng.normal(0.0, np.sqrt(2.0 / _norm_size(filler, shape)), size=size)


def positive_unitball(filler, shape, rng, size):
    """Whole slices of ``shape[0]`` (a count of values is a multiple of a slice's)."""
    values = rng.uniform(0.0, 1.0, size=size)
    rows = values.reshape(-1, _slice_size(shape))
    rows /= rows.sum(axis=1, keepdims=True)
    return values


def bilinear(filler, shape, rng, size):
    if len(shape) != 4 or shape[2] != shape[3]:
        raise ConfigError(f"the bilinear filler needs a 4-axis square kernel, got shape {shape}")
    side = shape[3]
    factor = np.ceil(side / 2.0)
    centre = (2 * factor - 1 - factor % 2) / (2.0 * factor)
    ramp = 1 - np.abs(np.arange(side) / factor - centre)
    kernel = np.outer(ramp, ramp)
    return np.broadcast_to(kernel, shape).copy()


def _slice_size(shape):
    return int(np.prod(shape[1:])) if shape else 1


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


#: Values drawn at a time: a contiguous blob is filled in pieces of about this many float64
#: values (8 MiB), so that no weight has a float64 twin while it is filled (VGG-16's fc6, 411 MB
#: in float32, had one of 822 MB). The numbers are those of one whole draw: numpy's Generator
#: draws them one after another, in pieces as at once.
PIECE = 1 << 20


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
    shape = array.shape
    sparse = filler.type == "gaussian" and filler.sparse >= 0
    if sparse and not shape:
        raise ConfigError("a sparse gaussian filler needs a blob with at least one axis")
    if filler.type == "bilinear" or not array.flags.c_contiguous:
        values = make(filler, shape, rng, shape)
        array[...] = values * _kept(filler, shape, rng, shape) if sparse else values
    else:
        for piece, count in _pieces(array, filler):
            piece[...] = make(filler, shape, rng, count)
        if sparse:  # the draws of what is kept come after all the values'
            for piece, count in _pieces(array, filler):
                piece *= _kept(filler, shape, rng, count)
    return array


def _kept(filler, shape, rng, size):
    """A sparse gaussian's mask: each value kept with probability sparse / shape[0]."""
    return rng.random(size=size) < filler.sparse / shape[0]


def _pieces(array, filler):
    """(flat piece of ``array``, its length): whole slices of shape[0] for positive_unitball."""
    flat = array.reshape(-1)
    unit = _slice_size(array.shape) if filler.type == "positive_unitball" else 1
    step = max(unit, PIECE // unit * unit)
    for start in range(0, flat.size, step):
        piece = flat[start : start + step]
        yield piece, piece.size
