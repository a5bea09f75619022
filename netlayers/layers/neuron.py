"""Neuron layers: element-wise functions y = f(x), one bottom, one top of the same shape.

Each may run in place (top == bottom) unless its backward needs the input it overwrote; those
that need x in backward say so and keep what they need.

In a chain of in-place layers on one blob, the blob ends up holding the last layer's output.
Layers whose backward reads their own output from the top (ReLU, Sigmoid, TanH, ELU, Exp, BNLL,
Swish) are only right as the last of such a chain, or when what follows keeps the property they
read (as in Caffe, where ReLU then Dropout in place works because a dropped unit's gradient is 0).
PReLU, Power, Log, Clip and Dropout keep what they need (Threshold needs nothing), so later
in-place layers may overwrite the blob.
"""

import numpy as np

from ..kernels import elementwise
from ..layer import Layer
from ..netspec import FILLER, Field, rule_error
from ..registry import register_layer


class NeuronLayer(Layer):
    """One bottom, one top of the bottom's shape."""

    num_bottoms = (1, 1)
    num_tops = (1, 1)
    in_place = True

    def Reshape(self, bottom, top):
        top[0].reshape_like(bottom[0])


@register_layer("ReLU")
class ReLU(NeuronLayer):
    """y = max(0, x) + negative_slope * min(0, x).
    Backward: dE/dx = dE/dy where x > 0, negative_slope * dE/dy where x <= 0 (at the kink x = 0
    the left slope is taken, as in Caffe). In place, x > 0 iff y > 0 (for slope >= 0), so the
    output stands in for the overwritten input."""

    example = {"bottoms": [(2, 3, 4)], "params": {"relu_param": {"negative_slope": 0.1}}}

    keep_top_data = False  # in place it is True (see LayerSetUp)

    params = {"negative_slope": Field(float, 0.0)}

    def can_run_in_place(self):
        return self.p.negative_slope >= 0  # else y's sign no longer tells x's

    def LayerSetUp(self, bottom, top):
        self.keep_top_data = top[0] is bottom[0]  # in place, backward reads y for x's sign

    def Forward_cpu(self, bottom, top):
        elementwise.relu_forward(bottom[0].data, self.p.negative_slope, out=top[0].data)

    def Backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            elementwise.relu_backward(
                top[0].data if top[0] is bottom[0] else bottom[0].data,
                top[0].diff,
                self.p.negative_slope,
                out=bottom[0].diff,
            )


@register_layer("Sigmoid")
class Sigmoid(NeuronLayer):
    """y = 1 / (1 + exp(-x)).  Backward: dE/dx = dE/dy * y * (1 - y): only the top is needed."""

    example = {"bottoms": [(2, 3, 4)]}

    keep_bottom_data = False  # backward reads y alone

    def Forward_cpu(self, bottom, top):
        elementwise.sigmoid_forward(bottom[0].data, out=top[0].data)

    def Backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            elementwise.sigmoid_backward(top[0].data, top[0].diff, out=bottom[0].diff)


@register_layer("TanH")
class TanH(NeuronLayer):
    """y = tanh(x).  Backward: dE/dx = dE/dy * (1 - y^2): only the top is needed."""

    example = {"bottoms": [(2, 3, 4)]}

    keep_bottom_data = False  # backward reads y alone

    def Forward_cpu(self, bottom, top):
        elementwise.tanh_forward(bottom[0].data, out=top[0].data)

    def Backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            elementwise.tanh_backward(top[0].data, top[0].diff, out=bottom[0].diff)


@register_layer("ELU")
class ELU(NeuronLayer):
    """y = x if x > 0 else alpha * (exp(x) - 1).
    Backward: dE/dx = dE/dy if x > 0 else dE/dy * (y + alpha) (= alpha exp(x)); at x = 0 the
    left slope alpha is taken, as in Caffe. In place, y stands in for the overwritten x (y > 0
    iff x > 0 when alpha >= 0; a negative alpha in place is refused)."""

    example = {"bottoms": [(2, 3, 4)], "params": {"elu_param": {"alpha": 0.5}}}

    params = {"alpha": Field(float, 1.0)}

    def can_run_in_place(self):
        return self.p.alpha >= 0  # else y's sign no longer tells x's

    def Reshape(self, bottom, top):
        top[0].reshape_like(bottom[0])
        if bottom[0].dtype == np.float32:  # vmath's kernel needs no scratch
            self._negative_part = None
        else:
            self.buffer("_negative_part", bottom[0].shape, bottom[0].dtype)

    def Forward_cpu(self, bottom, top):
        elementwise.elu_forward(bottom[0].data, self.p.alpha, out=top[0].data, scratch=self._negative_part)

    def Backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            x = top[0].data if top[0] is bottom[0] else bottom[0].data
            elementwise.elu_backward(x, top[0].data, top[0].diff, self.p.alpha, out=bottom[0].diff)


@register_layer("PReLU")
class PReLU(NeuronLayer):
    """y = x if x > 0 else a_c * x, with a learned slope a_c per channel c (bottom axis 1), or
    one slope for all channels when ``channel_shared``. The slope blob has shape (channels,) or
    (1,) and starts at 0.25 (the default filler, as in Caffe).

    Backward: dE/dx = dE/dy if x > 0 else a_c * dE/dy; dE/da_c += sum over the elements of
    channel c with x <= 0 of dE/dy * x. At x = 0 the left slope is taken (as Caffe), which adds
    nothing to dE/da. In place, the input is copied before it is overwritten."""

    example = [
        {"bottoms": [(2, 3, 4)], "params": {"prelu_param": {"filler": {"type": "gaussian"}}}},
        {"bottoms": [(2, 3)], "params": {"prelu_param": {"channel_shared": True}}},
    ]

    keep_top_data = False

    params = {
        "filler": Field(FILLER, {"type": "constant", "value": 0.25}),
        "channel_shared": Field(bool, False),
    }

    def LayerSetUp(self, bottom, top):
        if bottom[0].num_axes < 2:
            raise self.error(
                f"PReLU needs a bottom with at least 2 axes (batch, channels, ...), got shape {bottom[0].shape}"
            )
        self.channels = bottom[0].shape[1]
        self.add_param((1,) if self.p.channel_shared else (self.channels,), self.p.filler)

    def Reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) < 2 or shape[1] != self.channels:
            raise self.error(
                f"bottom shape {shape} does not have the {self.channels} channels (axis 1) the slopes were made for"
            )
        top[0].reshape_like(bottom[0])
        if self.p.channel_shared:
            self.view = (1, 1, bottom[0].count)
        else:
            self.view = (shape[0], self.channels, bottom[0].count_range(2))
        if top[0] is bottom[0]:
            self.buffer("_input", bottom[0].shape, bottom[0].dtype)

    def _input3(self, bottom, top):
        x = self._input if top[0] is bottom[0] else bottom[0].data
        return x.reshape(self.view)

    def Forward_cpu(self, bottom, top):
        if top[0] is bottom[0]:
            np.copyto(self._input, bottom[0].data)
        elementwise.prelu_forward(self._input3(bottom, top), self.blobs[0].data, top[0].data.reshape(self.view))

    def Backward_cpu(self, top, propagate_down, bottom):
        x3 = self._input3(bottom, top)
        dy3 = top[0].diff.reshape(self.view)
        if self.param_propagate_down[0]:
            elementwise.prelu_backward_slope(x3, dy3, self.blobs[0].diff)
        if propagate_down[0]:
            elementwise.prelu_backward_bottom(x3, dy3, self.blobs[0].data, bottom[0].diff.reshape(self.view))


@register_layer("AbsVal")
class AbsVal(NeuronLayer):
    """y = |x|.  Backward: dE/dx = sign(x) * dE/dy, with sign(0) = 0 (the subgradient 0 at the
    kink, as Caffe's caffe_cpu_sign). Not in place: the backward needs the sign of x."""

    example = {"bottoms": [(2, 3, 4)]}

    keep_top_data = False

    in_place = False

    def Forward_cpu(self, bottom, top):
        np.abs(bottom[0].data, out=top[0].data)

    def Backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            elementwise.sign_times(bottom[0].data, top[0].diff, out=bottom[0].diff)


@register_layer("Power")
class Power(NeuronLayer):
    """y = (shift + scale * x)^power.
    Backward: dE/dx = dE/dy * power * scale * (shift + scale * x)^(power - 1), computed from the
    base (kept from the forward, so in place works) without Caffe's division y / base, which is
    0/0 at a zero base. With power = 0 or scale = 0 the top is the constant 1 (power 0) or
    shift^power, and the gradient is 0. A zero base with power < 1 gives an infinite gradient,
    as the math says. Power 1 (Caffe's input scaling) keeps no base: y = scale x + shift and
    dE/dx = scale dE/dy, each one pass over the workers."""

    example = [
        {"bottoms": [(2, 3, 4)], "params": {"power_param": {"power": 1.5, "scale": 0.5, "shift": 3}}},
        {"bottoms": [(2, 3, 4)], "params": {"power_param": {"power": 2, "scale": -2, "shift": 1}}},
    ]

    keep_top_data = False

    params = {"power": Field(float, 1.0), "scale": Field(float, 1.0), "shift": Field(float, 0.0)}

    def LayerSetUp(self, bottom, top):
        self.diff_scale = self.p.power * self.p.scale

    def Reshape(self, bottom, top):
        top[0].reshape_like(bottom[0])
        if self.p.power != 1 and self.diff_scale != 0:  # power 1: y = scale x + shift, dx = scale dy
            self.buffer("_base", bottom[0].shape, bottom[0].dtype)

    def Forward_cpu(self, bottom, top):
        p, y = self.p, top[0].data
        if self.diff_scale == 0:
            y[...] = 1.0 if p.power == 0 else np.power(np.float64(p.shift), p.power)
            return
        if p.power == 1:
            elementwise.affine(bottom[0].data, p.scale, p.shift, out=y)
            return
        elementwise.affine(bottom[0].data, p.scale, p.shift, out=self._base)
        elementwise.power(self._base, p.power, out=y)

    def Backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        p, dx, dy = self.p, bottom[0].diff, top[0].diff
        if self.diff_scale == 0:
            dx[...] = 0
        elif p.power == 1:
            elementwise.affine(dy, p.scale, 0, out=dx)
        else:
            elementwise.power(self._base, p.power - 1, out=dx, times=dy, scale=self.diff_scale)


def _log_of_base(layer, block):
    """ln(base) for Exp and Log: base -1 means e; otherwise base is positive (declared)."""
    base = layer.p.base
    if base == -1:
        return 1.0
    return float(np.log(base))


@register_layer("Exp")
class Exp(NeuronLayer):
    """y = base^(shift + scale * x) = exp(ln(base) * (shift + scale * x)), base -1 meaning e.
    Computed as outer * exp(inner * x) with inner = ln(base) * scale, outer = base^shift.
    Backward: dE/dx = dE/dy * y * inner: only the top is needed (in place works)."""

    example = {"bottoms": [(2, 3, 4)], "params": {"exp_param": {"base": 2, "scale": 0.5, "shift": 1}}}

    params = {"base": Field(float, -1.0, gt=0, also=(-1,)), "scale": Field(float, 1.0), "shift": Field(float, 0.0)}

    def LayerSetUp(self, bottom, top):
        log_base = _log_of_base(self, "exp_param")
        self.inner_scale = log_base * self.p.scale
        self.outer_scale = float(np.exp(log_base * self.p.shift))

    def Forward_cpu(self, bottom, top):
        y = top[0].data
        np.multiply(bottom[0].data, y.dtype.type(self.inner_scale), out=y)
        np.exp(y, out=y)
        if self.outer_scale != 1:
            y *= y.dtype.type(self.outer_scale)

    def Backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            elementwise.scaled_product(top[0].diff, top[0].data, self.inner_scale, out=bottom[0].diff)


@register_layer("Log")
class Log(NeuronLayer):
    """y = log_base(shift + scale * x) = ln(shift + scale * x) / ln(base), base -1 meaning e.
    Backward: dE/dx = dE/dy * scale / (ln(base) * (shift + scale * x)), from the base kept by the
    forward (so in place works). Base 1 is refused (ln(1) = 0)."""

    example = {"bottoms": [(2, 3, 4)], "params": {"log_param": {"base": 10, "scale": 0.5, "shift": 3}}}

    keep_top_data = False

    params = {"base": Field(float, -1.0, gt=0, also=(-1,)), "scale": Field(float, 1.0), "shift": Field(float, 0.0)}

    @classmethod
    def check_params(cls, p):
        if p.base == 1:
            raise rule_error("base", "base 1 has no logarithm (ln(1) = 0)")

    def LayerSetUp(self, bottom, top):
        log_base = _log_of_base(self, "log_param")
        self.base_scale = 1.0 / log_base
        self.backward_scale = self.p.scale / log_base

    def Reshape(self, bottom, top):
        top[0].reshape_like(bottom[0])
        self.buffer("_base", bottom[0].shape, bottom[0].dtype)

    def Forward_cpu(self, bottom, top):
        p, y, base = self.p, top[0].data, self._base
        np.multiply(bottom[0].data, y.dtype.type(p.scale), out=base)
        if p.shift != 0:
            base += y.dtype.type(p.shift)
        np.log(base, out=y)
        if self.base_scale != 1:
            y *= y.dtype.type(self.base_scale)

    def Backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dx = bottom[0].diff
            np.divide(top[0].diff, self._base, out=dx)
            if self.backward_scale != 1:
                dx *= dx.dtype.type(self.backward_scale)


@register_layer("BNLL")
class BNLL(NeuronLayer):
    """y = log(1 + exp(x)) (binomial normal log likelihood, softplus), computed stably as
    max(x, 0) + log1p(exp(-|x|)).
    Backward: dE/dx = dE/dy * sigmoid(x), and sigmoid(x) = 1 - exp(-y) = -expm1(-y): only the
    top is needed (in place works; expm1 keeps it accurate where y is tiny)."""

    example = {"bottoms": [(2, 3, 4)]}

    def Reshape(self, bottom, top):
        top[0].reshape_like(bottom[0])
        self.buffer("_scratch", bottom[0].shape, bottom[0].dtype)

    def Forward_cpu(self, bottom, top):
        elementwise.softplus(bottom[0].data, out=top[0].data, scratch=self._scratch)

    def Backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            elementwise.one_minus_exp_neg(top[0].data, out=self._scratch)  # sigmoid(x)
            elementwise.scaled_product(self._scratch, top[0].diff, 1.0, out=bottom[0].diff)


@register_layer("Threshold")
class Threshold(NeuronLayer):
    """y = 1 if x > threshold else 0.
    Backward: the step's derivative is 0 everywhere it exists, so dE/dx = 0 (Caffe has no
    backward here; we give the zero gradient so that a net through a Threshold still runs)."""

    example = {"bottoms": [(2, 3, 4)], "params": {"threshold_param": {"threshold": 0.2}}}

    keep_top_data = False

    params = {"threshold": Field(float, 0.0)}

    def Forward_cpu(self, bottom, top):
        elementwise.threshold_forward(bottom[0].data, self.p.threshold, out=top[0].data)

    def Backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = 0


@register_layer("Clip")
class Clip(NeuronLayer):
    """y = min(max(x, min), max) (``clip_param.min`` and ``max``, both required, as Caffe).
    Backward: dE/dx = dE/dy where min <= x <= max (the bounds included, as Caffe), 0 elsewhere.
    The forward keeps that mask, so in place works (Caffe in place reads y, always inside the
    bounds, and passes every gradient). min > max is refused (Caffe would output min)."""

    example = {"bottoms": [(2, 3, 4)], "params": {"clip_param": {"min": -0.5, "max": 0.8}}}

    keep_top_data = False

    params = {"min": Field(float, required=True), "max": Field(float, required=True)}

    @classmethod
    def check_params(cls, p):
        if p.min > p.max:
            raise rule_error("max", f"max ({p.max:g}) must be at least min ({p.min:g})")

    def Reshape(self, bottom, top):
        top[0].reshape_like(bottom[0])
        self.buffer("_inside", bottom[0].shape, bool)

    def Forward_cpu(self, bottom, top):
        elementwise.clip_forward(bottom[0].data, self.p.min, self.p.max, out=top[0].data, inside=self._inside)

    def Backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            np.multiply(top[0].diff, self._inside, out=bottom[0].diff)


@register_layer("Swish")
class Swish(NeuronLayer):
    """y = x * sigmoid(beta x) (``swish_param.beta``, default 1; Caffe's master branch).
    Backward, from y and s = sigmoid(beta x) kept by the forward (so in place works):
    dE/dx = dE/dy * (beta y + s (1 - beta y)) = dE/dy * (s + beta x s (1 - s))."""

    example = [
        {"bottoms": [(2, 3, 4)]},
        {"bottoms": [(2, 3, 4)], "params": {"swish_param": {"beta": -1.5}}},
    ]

    params = {"beta": Field(float, 1.0)}

    def Reshape(self, bottom, top):
        top[0].reshape_like(bottom[0])
        self.buffer("_sigmoid", bottom[0].shape, bottom[0].dtype)

    def Forward_cpu(self, bottom, top):
        elementwise.swish_forward(bottom[0].data, self.p.beta, self._sigmoid, out=top[0].data)

    def Backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            elementwise.swish_backward(top[0].data, self._sigmoid, top[0].diff, self.p.beta, out=bottom[0].diff)


@register_layer("Dropout")
class Dropout(NeuronLayer):
    """TRAIN: y = x * mask * scale, mask ~ Bernoulli(1 - dropout_ratio) drawn from the layer's
    generator at every forward, scale = 1 / (1 - dropout_ratio) (1 when ``scale_train`` is false).
    TEST: y = x, or y = x * (1 - dropout_ratio) when ``scale_train`` is false (Caffe's rule: the
    expected value is matched in one phase or the other).
    Backward: dE/dx = dE/dy * mask * scale with the forward's mask (TRAIN), dE/dy times the TEST
    factor otherwise. The mask is kept as float32 U[0, 1) draws u (kept where u >= ratio), so a
    float32 and a float64 layer with one seed drop the same elements. In place works."""

    example = [
        {"bottoms": [(2, 3, 4)], "params": {"dropout_param": {"dropout_ratio": 0.3}}},
        {"bottoms": [(2, 3, 4)], "phase": "TEST", "params": {"dropout_param": {"scale_train": False}}},
    ]

    keep_top_data = False
    keep_bottom_data = False

    params = {"dropout_ratio": Field(float, 0.5, min=0, lt=1), "scale_train": Field(bool, True)}

    def LayerSetUp(self, bottom, top):
        ratio = self.p.dropout_ratio
        self.ratio = ratio
        self.train_scale = 1.0 / (1.0 - ratio) if self.p.scale_train else 1.0
        self.test_scale = 1.0 if self.p.scale_train else 1.0 - ratio

    def Reshape(self, bottom, top):
        top[0].reshape_like(bottom[0])
        if self.phase == "TRAIN":
            self.buffer("_uniform", bottom[0].shape, np.float32)

    def Forward_cpu(self, bottom, top):
        x, y = bottom[0].data, top[0].data
        if self.phase == "TRAIN":
            self.rng.random(out=self._uniform, dtype=np.float32)
            elementwise.dropout_apply(x, self._uniform, self.ratio, self.train_scale, out=y)
        elif self.test_scale != 1:
            np.multiply(x, y.dtype.type(self.test_scale), out=y)
        elif y is not x:
            np.copyto(y, x)

    def Backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy, dx = top[0].diff, bottom[0].diff
        if self.phase == "TRAIN":
            elementwise.dropout_apply(dy, self._uniform, self.ratio, self.train_scale, out=dx)
        elif self.test_scale != 1:
            np.multiply(dy, dx.dtype.type(self.test_scale), out=dx)
        elif dx is not dy:
            np.copyto(dx, dy)
