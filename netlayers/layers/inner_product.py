"""InnerProduct: the fully connected layer."""

import numpy as np

from .. import parallel
from ..layer import Layer
from ..netspec import FILLER, Field
from ..registry import register_layer

DIRECT_MAX_OUTPUTS = 16  # layers of at most this many outputs compute y = x W^T directly (Reshape)
DIRECT_MIN_BATCH = 64  # and so do batches of at least this many items


@register_layer("InnerProduct")
class InnerProduct(Layer):
    """y = x W^T + b, with x the bottom flattened from ``axis`` on: shape (batch, in_features),
    W of shape (num_output, in_features) (or its transpose when ``transpose: true``), b of shape
    (num_output,). The top keeps the bottom's axes before ``axis`` and ends in num_output.

    Backward: dE/dW += dE/dy^T x, dE/db += sum over the batch of dE/dy, dE/dx = dE/dy W.
    """

    example = [
        {
            "bottoms": [(2, 3, 2)],
            "params": {
                "inner_product_param": {
                    "num_output": 4,
                    "weight_filler": {"type": "gaussian"},
                    "bias_filler": {"type": "gaussian"},
                }
            },
        },
        {  # a batch of at least twice the outputs: y = x W^T computed directly
            "bottoms": [(7, 3, 2)],
            "params": {"inner_product_param": {"num_output": 3, "weight_filler": {"type": "gaussian"}}},
        },
        {  # more than DIRECT_MAX_OUTPUTS outputs and a batch below DIRECT_MIN_BATCH: y^T = W x^T, then transposed
            "bottoms": [(2, 5)],
            "params": {"inner_product_param": {"num_output": 18, "weight_filler": {"type": "gaussian"}}},
        },
        {
            "bottoms": [(2, 3, 2)],
            "params": {
                "inner_product_param": {
                    "num_output": 2,
                    "axis": 2,
                    "transpose": True,
                    "bias_term": False,
                    "weight_filler": {"type": "gaussian"},
                }
            },
        },
    ]

    keep_top_data = False

    params = {
        "num_output": Field(int, required=True, min=1),
        "bias_term": Field(bool, True),
        "weight_filler": Field(FILLER, {}),
        "bias_filler": Field(FILLER, {}),
        "axis": Field(int, 1),
        "transpose": Field(bool, False),
    }
    num_bottoms = (1, 1)
    num_tops = (1, 1)
    lazy_param_diffs = True

    def LayerSetUp(self, bottom, top):
        p = self.p
        self.axis = bottom[0].canonical_axis(p.axis)
        self.in_features = bottom[0].count_range(self.axis)
        shape = (self.in_features, p.num_output) if p.transpose else (p.num_output, self.in_features)
        self.add_param(shape, p.weight_filler)
        if p.bias_term:
            self.add_param((p.num_output,), p.bias_filler)

    def Reshape(self, bottom, top):
        if bottom[0].shape == getattr(self, "_bottom_shape", None) and top[0].shape == self._top_shape:
            return
        in_features = bottom[0].count_range(self.axis)
        if in_features != self.in_features:
            raise self.error(
                f"input has {in_features} features per item (shape {bottom[0].shape}, "
                f"axis {self.axis}) but the weights expect {self.in_features}"
            )
        self.batch = bottom[0].count_range(0, self.axis)
        top[0].reshape(bottom[0].shape[: self.axis] + (self.p.num_output,))
        self._top_shape = top[0].shape
        # y^T = W x^T then one transposing copy: BLAS ran this form faster than x W^T (N = 1000
        # outputs, batch 8: 5.6 vs 10.3 ms; 100 outputs, batch 8-32: x W^T 1.1x-2.3x the time),
        # except for a batch of at least twice the outputs (10 outputs, batch 64-256: x W^T took
        # 0.53-0.80 of the time) and for up to DIRECT_MAX_OUTPUTS outputs (10 outputs, batch
        # 1-32, 512 to 32768 inputs: 0.70-1.07, e.g. batch 16 x 32768 inputs 0.79; 32 outputs
        # 0.83-1.75), where y = x W^T is direct. So is a batch of DIRECT_MIN_BATCH items or more:
        # there the two products take the same time and the transposing copy is all that differs
        # (2026-12-07, inside a pass, direct / transposed: 48 to 96 items 0.96-1.02 of the time
        # over 512-4096 inputs and 100-2048 outputs, 96 x 256 -> 64 0.70, 256 x 784 -> 2048 0.79,
        # 1000 x 512 -> 1000 0.81, a language model's 700 x 200 -> 10000 0.46; 2 to 32 items
        # 1.01-1.54: the transposed form stays below 64).
        self.direct = (
            self.batch >= DIRECT_MIN_BATCH
            or self.batch >= 2 * self.p.num_output
            or self.p.num_output <= DIRECT_MAX_OUTPUTS
        )
        self.buffer("_output_t", (0, 0) if self.direct else (self.p.num_output, self.batch))
        self._bottom_shape = bottom[0].shape  # only once all went well: a failed shape is checked again

    def Forward_cpu(self, bottom, top):
        x = bottom[0].data.reshape(self.batch, self.in_features)
        y = top[0].data.reshape(self.batch, self.p.num_output)
        weight = self.blobs[0].data
        if self.p.transpose:
            parallel.matmul(x, weight, y)
        elif self.direct:
            parallel.matmul(x, weight.T, y)
        else:
            parallel.matmul(weight, x.T, self._output_t)
            np.copyto(y, self._output_t.T)
        if self.p.bias_term:
            y += self.blobs[1].data

    def Backward_cpu(self, top, propagate_down, bottom):
        x = bottom[0].data.reshape(self.batch, self.in_features)
        dy = top[0].diff.reshape(self.batch, self.p.num_output)
        weight = self.blobs[0]
        if self.param_propagate_down[0]:
            if self.p.transpose:
                weight.add_to_diff(lambda out: parallel.matmul(x.T, dy, out))
            else:
                weight.add_to_diff(lambda out: parallel.matmul(dy.T, x, out))
        if self.p.bias_term and self.param_propagate_down[1]:
            self.blobs[1].add_to_diff(lambda out: np.sum(dy, axis=0, out=out))
        if propagate_down[0]:
            dx = bottom[0].diff.reshape(self.batch, self.in_features)
            parallel.matmul(dy, weight.data.T if self.p.transpose else weight.data, dx)
