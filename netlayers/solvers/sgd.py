"""Update rules: how a param's (clipped, normalised, regularised) gradient becomes a step.

An update rule works on plain arrays, one param at a time, so its math is testable without a
net. ``compute(diff, history, scratch, local_rate, iteration)`` overwrites ``diff`` in place
with the step; the solver then does ``w -= diff`` (Caffe's Net::Update). ``history`` is the
rule's list of per-param state arrays (saved in snapshots), ``scratch`` preallocated temporary
arrays, ``local_rate`` = rate * lr_mult, ``iteration`` the number of updates done before this
one (Caffe's ``iter_``).

A rule may also offer ``fused_update(weight, diff, history, local_rate, decay, iteration)``:
L2 weight decay, ``compute`` and ``w -= step`` in one pass, with the very same arithmetic (SGD
does, through a numba kernel); the solver uses it when it returns True.

This module has the base class and the momentum rules, SGD and Nesterov; adaptive.py has
AdaGrad, RMSProp, AdaDelta and Adam.
"""

import numpy as np

from ..kernels import update as kernels


class UpdateRule:
    """Base of the update rules. Subclasses set ``type``, ``uses`` (the solver fields they
    read), ``history_slots`` and ``scratch_slots``, and implement ``compute``."""

    type = None
    uses = ()
    history_slots = 1
    scratch_slots = 0

    def __init__(self, **hyper):
        unknown = set(hyper) - set(self.uses)
        if unknown:
            raise TypeError(f"{self.type} does not take {', '.join(sorted(unknown))}")
        for name in self.uses:
            setattr(self, name, float(hyper[name]))

    @classmethod
    def from_param(cls, param):
        """Build from checked solver fields (a Params)."""
        return cls(**{name: param[name] for name in cls.uses})

    @classmethod
    def check(cls, param, at):
        """Raise ``at(field).error(...)`` (a located ConfigError) for settings this rule
        cannot use."""

    def new_history(self, shape, dtype):
        return [np.zeros(shape, dtype) for _ in range(self.history_slots)]

    def new_scratch(self, shape, dtype):
        return [np.empty(shape, dtype) for _ in range(self.scratch_slots)]

    def compute(self, diff, history, scratch, local_rate, iteration):
        raise NotImplementedError

    def fused_update(self, weight, diff, history, local_rate, decay, iteration):
        """diff += decay * w (L2), ``compute``, w -= diff, all at once: True when done, False
        (the default) to let the solver run the three steps one by one."""
        return False

    def __repr__(self):
        values = ", ".join(f"{name}={getattr(self, name):g}" for name in self.uses)
        return f"{type(self).__name__}({values})"


def check_momentum(cls, param, at):
    """momentum must be in [0, 1) (Caffe does not check: 1 or more makes the steps grow)."""
    if not 0.0 <= param.momentum < 1.0:
        raise at("momentum").error(f"must be in [0, 1) for {cls.type}, got {param.momentum:g}")


class SGD(UpdateRule):
    """Stochastic gradient descent with momentum; the learning rate lives inside the history:

        v = momentum * v + local_rate * g
        w = w - v

    At momentum 0 the step is local_rate * g and the history is left alone (it stays zero):
    Caffe stores the last step there, which nothing reads at momentum 0, so only a snapshot
    resumed with a different momentum could tell (it starts from v = 0).
    """

    type = "SGD"
    uses = ("momentum",)

    check = classmethod(check_momentum)

    def compute(self, diff, history, scratch, local_rate, iteration):
        diff *= local_rate
        if self.momentum == 0:
            return
        v = history[0]
        v *= self.momentum
        v += diff
        diff[...] = v

    def fused_update(self, weight, diff, history, local_rate, decay, iteration):
        """One pass of :func:`netlayers.kernels.update.sgd_update` over flat views (contiguous
        arrays of one float dtype only: a copy would lose the writes)."""
        v = history[0]
        if not (
            weight.dtype == diff.dtype == v.dtype
            and weight.dtype in (np.float32, np.float64)
            and weight.flags.c_contiguous
            and diff.flags.c_contiguous
            and v.flags.c_contiguous
        ):
            return False
        kernels.sgd_update(weight.reshape(-1), diff.reshape(-1), v.reshape(-1), local_rate, decay, self.momentum)
        return True


class Nesterov(UpdateRule):
    """Nesterov's accelerated gradient, in Caffe's form (step back, then over-step):

    v_new = momentum * v + local_rate * g
    w = w - ((1 + momentum) * v_new - momentum * v)
    """

    type = "Nesterov"
    uses = ("momentum",)
    scratch_slots = 1

    check = classmethod(check_momentum)

    def compute(self, diff, history, scratch, local_rate, iteration):
        v, previous = history[0], scratch[0]
        np.multiply(v, self.momentum, out=previous)
        diff *= local_rate
        v *= self.momentum
        v += diff
        np.multiply(v, 1.0 + self.momentum, out=diff)
        diff -= previous
