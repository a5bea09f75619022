"""Neuron layers: element-wise functions y = f(x), one bottom, one top of the same shape.

Each may run in place (top == bottom) unless its backward needs the input it overwrote; those
that need x in backward say so and keep what they need.
"""
import numpy as np

from ..kernels import elementwise
from ..layer import Layer
from ..netspec import Field
from ..registry import register_layer


class NeuronLayer(Layer):
    """One bottom, one top of the bottom's shape."""

    num_bottoms = (1, 1)
    num_tops = (1, 1)

    def Reshape(self, bottom, top):
        top[0].reshape_like(bottom[0])


@register_layer("ReLU")
class ReLU(NeuronLayer):
    """y = max(0, x) + negative_slope * min(0, x).
    Backward: dE/dx = dE/dy where x > 0, negative_slope * dE/dy where x <= 0 (at the kink x = 0
    the left slope is taken, as in Caffe). In place, x > 0 iff y > 0 (for slope >= 0), so the
    output stands in for the overwritten input."""

    params = {"negative_slope": Field(float, 0.0)}

    def Forward_cpu(self, bottom, top):
        elementwise.relu_forward(bottom[0].data, self.p.negative_slope, out=top[0].data)

    def Backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            elementwise.relu_backward(top[0].data if top[0] is bottom[0] else bottom[0].data,
                                      top[0].diff, self.p.negative_slope, out=bottom[0].diff)


@register_layer("Sigmoid")
class Sigmoid(NeuronLayer):
    """y = 1 / (1 + exp(-x)).  Backward: dE/dx = dE/dy * y * (1 - y): only the top is needed."""

    def Forward_cpu(self, bottom, top):
        elementwise.sigmoid_forward(bottom[0].data, out=top[0].data)

    def Backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            elementwise.sigmoid_backward(top[0].data, top[0].diff, out=bottom[0].diff)


@register_layer("TanH")
class TanH(NeuronLayer):
    """y = tanh(x).  Backward: dE/dx = dE/dy * (1 - y^2): only the top is needed."""

    def Forward_cpu(self, bottom, top):
        np.tanh(bottom[0].data, out=top[0].data)

    def Backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            elementwise.tanh_backward(top[0].data, top[0].diff, out=bottom[0].diff)
