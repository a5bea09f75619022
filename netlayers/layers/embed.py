"""Embed: a lookup table from integer indices to learned vectors (Caffe's Embed layer)."""

import numpy as np

from ..errors import DataError
from ..kernels import gather
from ..layer import Layer
from ..netspec import FILLER, Field
from ..registry import register_layer


@register_layer("Embed")
class Embed(Layer):
    """y[..., :] = W[x[...], :] + b: every value of the bottom is an index in [0, input_dim)
    (an integer, stored as a float); W has shape (input_dim, num_output), b (num_output,); the
    top has the bottom's shape plus a last axis of num_output.

    Backward: dE/dW[i] += sum of dE/dy over the positions whose index is i, dE/db += sum of
    dE/dy over all positions. The indices get no gradient (as in Caffe).
    An index that is not an integer in [0, input_dim) is a DataError naming the layer and value.
    """

    example = {
        "bottoms": [(2, 3)],
        "labels": {0: 4},
        "params": {
            "embed_param": {
                "num_output": 3,
                "input_dim": 4,
                "weight_filler": {"type": "gaussian"},
                "bias_filler": {"type": "gaussian"},
            }
        },
    }

    keep_top_data = False

    params = {
        "num_output": Field(int, required=True, min=1),
        "input_dim": Field(int, required=True, min=1),
        "bias_term": Field(bool, True),
        "weight_filler": Field(FILLER, {}),
        "bias_filler": Field(FILLER, {}),
    }
    num_bottoms = (1, 1)
    num_tops = (1, 1)

    def LayerSetUp(self, bottom, top):
        p = self.p
        self.add_param((p.input_dim, p.num_output), p.weight_filler)
        if p.bias_term:
            self.add_param((p.num_output,), p.bias_filler)
        self.index = None

    def allow_force_backward(self, bottom_index):
        return False

    def Reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape + (self.p.num_output,))
        if self.index is None or self.index.size != bottom[0].count:
            self.index = np.empty(bottom[0].count, np.intp)
            self.bias_grad = np.empty(self.p.num_output, self.dtype)

    def _check(self, values):
        if values.size == 0:
            return
        bad = (values < 0) | (values >= self.p.input_dim) | (self.index != values)
        if bad.any():
            value = values[np.argmax(bad)]
            raise DataError(
                f"index {value:g} is not an integer in [0, {self.p.input_dim}) (input_dim {self.p.input_dim})",
                layer=self.name,
            )

    def Forward_cpu(self, bottom, top):
        values = bottom[0].data.reshape(-1)
        with np.errstate(invalid="ignore"):
            np.copyto(self.index, values, casting="unsafe")
        self._check(values)
        out = top[0].data.reshape(-1, self.p.num_output)
        np.take(self.blobs[0].data, self.index, axis=0, out=out)
        if self.p.bias_term:
            out += self.blobs[1].data

    def Backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            raise self.error("Embed cannot backpropagate to its indices")
        dy = top[0].diff.reshape(-1, self.p.num_output)
        if self.param_propagate_down[0]:
            gather.add_rows(self.blobs[0].diff, self.index, dy)
        if self.p.bias_term and self.param_propagate_down[1]:
            self.blobs[1].diff += np.sum(dy, axis=0, out=self.bias_grad)
