"""Adaptive update rules: AdaGrad, RMSProp, AdaDelta, Adam, with Caffe's formulas.

All operate in place on one param's arrays (see sgd.py for the contract). ``delta`` is Caffe's
small constant against division by zero. Elementwise operations throughout; ``g`` is the
gradient after clipping, iter_size normalisation and regularisation.
"""

import math

import numpy as np

from .sgd import UpdateRule, check_momentum


def _no_momentum(cls, param, at):
    if param.momentum != 0:
        raise at("momentum").error(
            f"momentum cannot be used with {cls.type} (Caffe requires 0), got {param.momentum:g}"
        )


def _positive_delta(cls, param, at):
    if not param.delta > 0:
        raise at("delta").error(
            f"must be positive for {cls.type} (it keeps the division away from zero), got {param.delta:g}"
        )


class AdaGrad(UpdateRule):
    """h = h + g^2;  w = w - local_rate * g / (sqrt(h) + delta).  No momentum."""

    type = "AdaGrad"
    uses = ("delta",)
    scratch_slots = 1

    @classmethod
    def check(cls, param, at):
        _no_momentum(cls, param, at)
        _positive_delta(cls, param, at)

    def compute(self, diff, history, scratch, local_rate, iteration):
        h, tmp = history[0], scratch[0]
        np.square(diff, out=tmp)
        h += tmp
        np.sqrt(h, out=tmp)
        tmp += self.delta
        diff /= tmp
        diff *= local_rate


class RMSProp(UpdateRule):
    """h = rms_decay * h + (1 - rms_decay) * g^2;  w = w - local_rate * g / (sqrt(h) + delta).
    No momentum; 0 <= rms_decay < 1 (at 1, h would stay 0)."""

    type = "RMSProp"
    uses = ("rms_decay", "delta")
    scratch_slots = 1

    @classmethod
    def check(cls, param, at):
        _no_momentum(cls, param, at)
        _positive_delta(cls, param, at)
        if not 0.0 <= param.rms_decay < 1.0:
            raise at("rms_decay").error(f"must be in [0, 1), got {param.rms_decay:g}")

    def compute(self, diff, history, scratch, local_rate, iteration):
        h, tmp = history[0], scratch[0]
        np.square(diff, out=tmp)
        tmp *= 1.0 - self.rms_decay
        h *= self.rms_decay
        h += tmp
        np.sqrt(h, out=tmp)
        tmp += self.delta
        diff /= tmp
        diff *= local_rate


class AdaDelta(UpdateRule):
    """Zeiler's AdaDelta with Caffe's learning rate (base_lr 1 gives the paper's rule);
    ``momentum`` is the decay rho:

        h  = momentum * h  + (1 - momentum) * g^2
        u  = g * sqrt((h2 + delta) / (h + delta))
        h2 = momentum * h2 + (1 - momentum) * u^2
        w  = w - local_rate * u
    """

    type = "AdaDelta"
    uses = ("momentum", "delta")
    history_slots = 2
    scratch_slots = 2

    @classmethod
    def check(cls, param, at):
        check_momentum(cls, param, at)  # rho outside [0, 1) drives h negative or freezes it
        _positive_delta(cls, param, at)

    def compute(self, diff, history, scratch, local_rate, iteration):
        h, h2 = history
        tmp, denominator = scratch
        np.square(diff, out=tmp)
        tmp *= 1.0 - self.momentum
        h *= self.momentum
        h += tmp
        np.add(h2, self.delta, out=tmp)
        np.add(h, self.delta, out=denominator)
        tmp /= denominator
        np.sqrt(tmp, out=tmp)
        diff *= tmp
        np.square(diff, out=tmp)
        tmp *= 1.0 - self.momentum
        h2 *= self.momentum
        h2 += tmp
        diff *= local_rate


class Adam(UpdateRule):
    """Kingma and Ba's Adam; beta1 = ``momentum``, beta2 = ``momentum2``, eps = ``delta``,
    t = iteration + 1 (Caffe's bias correction folded into the rate):

        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g^2
        w = w - local_rate * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps)

    Caffe's default momentum is 0; the paper's beta1 is 0.9 (set ``momentum: 0.9``).
    """

    type = "Adam"
    uses = ("momentum", "momentum2", "delta")
    history_slots = 2
    scratch_slots = 1

    @classmethod
    def check(cls, param, at):
        if not 0.0 <= param.momentum < 1.0:
            raise at("momentum").error(f"Adam's beta1 must be in [0, 1), got {param.momentum:g}")
        if not 0.0 <= param.momentum2 < 1.0:
            raise at("momentum2").error(f"Adam's beta2 must be in [0, 1), got {param.momentum2:g}")
        _positive_delta(cls, param, at)

    def compute(self, diff, history, scratch, local_rate, iteration):
        m, v = history
        tmp = scratch[0]
        beta1, beta2 = self.momentum, self.momentum2
        t = iteration + 1
        correction = math.sqrt(1.0 - beta2**t) / (1.0 - beta1**t)
        np.multiply(diff, 1.0 - beta1, out=tmp)
        m *= beta1
        m += tmp
        np.square(diff, out=tmp)
        tmp *= 1.0 - beta2
        v *= beta2
        v += tmp
        np.sqrt(v, out=tmp)
        tmp += self.delta
        np.divide(m, tmp, out=diff)
        diff *= local_rate * correction
