"""BatchNorm -> Scale [-> ReLU], the block of Caffe's ResNets and MobileNets, run as one; and
a residual sum with its ReLU (Eltwise SUM -> ReLU, ``SumReLU``), run as one.

The layers, in place on one blob, are each a pass or two over memory, and each is already as
fast as memory allows: fusing them is what saves time. A net finds such chains when it is
built (``find_chain``): BatchNorm, then a Scale it lends its values to, then, if the next layer
is a ReLU in place on the blob, that ReLU too (without one, as before a residual sum, the
chain is two layers long and runs as if a ReLU of slope 1 followed). Then, in a forward or
backward pass that runs all of the chain:

- forward: BatchNorm's statistics as usual, then one pass over its input x writes
  y = relu(x_hat * s + b), x_hat = (x - mean) / std, and BatchNorm's kept x_hat
  (``chain_forward``): x read once and y written once, instead of three passes; each worker
  runs the pass over its channels right after their statistics (one hand-over, not two);
- backward: the backward passes become one pass of sums and one writing pass
  (``chain_backward``): with g the gradient after ReLU, Scale's gradients are sum g x_hat and
  sum g, and BatchNorm's two means of Scale's output gradient g s are s times their means.

Each layer is left as its own forward and backward would leave it (BatchNorm's normalized
values and moving averages, Scale's kept input, the blob's data and diff, the params' diffs), so
a later pass may run them one by one (a forward starting at the Scale, ``debug_info``, the
timing tools). The results equal the layers' to rounding (sums in float64, as theirs).
"""

from .. import parallel
from ..kernels import batchnorm as bn_kernels
from ..kernels import elementwise
from .neuron import ReLU
from .normalization import BatchNorm
from .structure import Eltwise, Scale


def _reshape_all(layers, bottom, top):
    """Each of a fused run's ``layers`` marked as not yet forwarded and reshaped to its blobs,
    an error located as the layer's own forward would locate it."""
    for k, layer in enumerate(layers):
        layer._forward_done = False
        try:
            layer.Reshape(bottom[k], top[k])
        except Exception as err:
            layer._reraise(err, "forward")


def find_chain(layers, bottom_vecs, top_vecs, lenders, index):
    """A :class:`Chain` when layer ``index`` is a BatchNorm and ``index + 1`` a Scale it lends
    its values to (``lenders``), then, when ``index + 2`` is a ReLU with a slope >= 0 in place
    on that blob, with that ReLU; none of them weighting a loss. Else None."""
    if index not in lenders or index + 1 >= len(layers):
        return None
    bn, scale = layers[index : index + 2]
    blob = top_vecs[index][0]
    if (
        type(bn) is not BatchNorm  # these very classes: a subclass may compute otherwise
        or type(scale) is not Scale
        or len(bottom_vecs[index + 1]) != 1
        or any(any(layer.loss_weights) for layer in (bn, scale))
    ):
        return None
    relu = layers[index + 2] if index + 2 < len(layers) else None
    if not (
        type(relu) is ReLU
        and relu.p.negative_slope >= 0
        and bottom_vecs[index + 2] == [blob]
        and top_vecs[index + 2] == [blob]
        and not any(relu.loss_weights)
    ):
        relu = None
    return Chain(index, bn, scale, relu, blob, bottom_vecs[index][0])


class Chain:
    """One BatchNorm -> Scale [-> ReLU] chain at layer ``index`` of its net, on ``blob``
    (BatchNorm's top; ``bn_bottom`` is its bottom, ``blob`` itself when it runs in place).
    ``relu`` is None for a chain of two layers; ``length`` is 2 or 3."""

    def __init__(self, index, bn, scale, relu, blob, bn_bottom):
        self.index, self.bn, self.scale, self.relu, self.blob = index, bn, scale, relu, blob
        self.bn_bottom = bn_bottom
        self.layers = (bn, scale) if relu is None else (bn, scale, relu)
        self.length = len(self.layers)

    def slope(self, dtype):
        """The ReLU's negative slope; 1 (y = v: no ReLU) for a chain of two layers."""
        return dtype.type(1 if self.relu is None else self.relu.p.negative_slope)

    def fits(self):
        """Whether Scale's operand is one value per channel of BatchNorm's (N, C, P) view (its
        ``axis``/``num_axes`` could say otherwise); checked on the shapes of this pass."""
        return tuple(self.scale.view) == tuple(self.bn.shape3) and self.scale.blobs[0].count == self.bn.channels

    def forward(self, bottom, top):
        """The chain's forward as one (``bottom`` and ``top``: its layers' blob vectors):
        BatchNorm's statistics, then one pass that writes the blob (and BatchNorm's kept
        normalized values). Returns False, having run nothing, when Scale's operand does not
        fit BatchNorm's channels (the net then runs the layers one by one)."""
        _reshape_all(self.layers, bottom, top)
        if not self.fits():
            return False
        bn, scale = self.bn, self.scale
        x = bottom[0][0].data.reshape(bn.shape3)
        keep = bn.normalized is not None
        normalized = bn.normalized if keep else x  # (not written when not kept)
        mean, std = bn.mean.reshape(-1), bn.std.reshape(-1)
        s = scale.blobs[0].data.reshape(-1)
        b = scale.blobs[scale.bias_index].data.reshape(-1) if scale.bias_index is not None else scale._zeros
        y = top[-1][0].data.reshape(bn.shape3)
        slope = self.slope(y.dtype)
        bn.statistics(  # each worker's channels: their statistics, then the pass
            bottom[0][0],
            lambda lo, hi: bn_kernels.chain_forward(x, mean, std, normalized, keep, s, b, slope, y, lo, hi),
            3 if keep else 2,
        )
        scale._kept = bn.kept_output()  # what Scale's own forward would keep: the lent values
        for layer in self.layers:
            layer._forward_done = True
        return True

    def backward(self, propagate):
        """The chain's backward as one. ``propagate``: the net's bottom_need_backward of
        BatchNorm (its bottom) and Scale (the chain's blob). Returns False (nothing done, the
        net then runs the layers' backward passes) when a layer has not run its forward since its
        last reshape, or when Scale's last forward did not read BatchNorm's values (a forward
        that started at the Scale, on values set by hand). When BatchNorm is not in place and
        its bottom needs a gradient, the writing pass writes that gradient and the blob's (the
        one Scale's backward leaves there) side by side."""
        bn, scale = self.bn, self.scale
        if not all(getattr(layer, "_forward_done", False) for layer in self.layers) or not self.fits():
            return False
        if getattr(scale, "_kept", None) is not bn.kept_output():  # Scale read values of its own
            return False
        blob = self.blob
        dy = blob.diff.reshape(bn.shape3)
        y = blob.data.reshape(bn.shape3)
        dx, apart = dy, False
        if propagate[0][0]:
            mode = 1 if bn.use_global_stats else 0
            if self.bn_bottom is not blob:
                dx, apart = self.bn_bottom.diff.reshape(bn.shape3), True
        else:
            mode = 2 if propagate[1][0] else 3
        s = scale.blobs[0].data.reshape(-1)
        sum_gx, sum_g = scale._reduced, scale._reduced_bias
        slope = self.slope(dy.dtype)
        remake = bn.normalized is None  # made again from BatchNorm's input, in the passes
        normalized = bn.input_values() if remake else bn.normalized
        mean, std = bn.mean.reshape(-1), bn.std.reshape(-1)
        parallel.over_slices(
            lambda lo, hi: bn_kernels.chain_backward(
                dy, y, normalized, mean, remake, s, std, slope, mode, sum_gx, sum_g, dx, apart, lo, hi
            ),
            bn.channels,
            (6 if apart else 5) * dy.nbytes,
        )
        if scale.param_propagate_down[0]:
            scale.blobs[0].diff += sum_gx.reshape(scale.blobs[0].shape)
        if scale.bias_index is not None and scale.param_propagate_down[scale.bias_index]:
            scale.blobs[scale.bias_index].diff += sum_g.reshape(scale.blobs[scale.bias_index].shape)
        return True


def find_sum_relu(layers, bottom_vecs, top_vecs, index):
    """A :class:`SumReLU` when layer ``index`` is an Eltwise SUM of two distinct bottoms with
    coefficients 1 and ``index + 1`` a ReLU (slope >= 0) in place on its top, neither weighting
    a loss (a residual block's end). Else None."""
    if index + 1 >= len(layers):
        return None
    eltwise, relu = layers[index : index + 2]
    if type(eltwise) is not Eltwise or type(relu) is not ReLU:  # these very classes
        return None
    bottoms, blob = bottom_vecs[index], top_vecs[index][0]
    if (
        eltwise.p.operation != "SUM"
        or any(c != 1 for c in eltwise.coeffs)
        or len(bottoms) != 2
        or bottoms[0] is bottoms[1]
        or relu.p.negative_slope < 0
        or bottom_vecs[index + 1] != [blob]
        or top_vecs[index + 1] != [blob]
        or any(any(layer.loss_weights) for layer in (eltwise, relu))
    ):
        return None
    return SumReLU(index, eltwise, relu, bottoms, blob)


class SumReLU:
    """Eltwise SUM of two bottoms -> ReLU in place, run as one (see the module text): the
    forward writes y = relu(a + b) in one pass (``elementwise.sum_relu_forward``) instead of
    a sum and a ReLU pass over y; the backward writes ReLU's gradient g into the blob's diff
    and both bottoms' diffs in one pass instead of ReLU's pass and Eltwise's two copies. The
    results are the layers' bit for bit (the same operations in the same order)."""

    length = 2

    def __init__(self, index, eltwise, relu, bottoms, blob):
        self.index, self.eltwise, self.relu, self.blob = index, eltwise, relu, blob
        self.bottoms = bottoms
        self.layers = (eltwise, relu)

    def forward(self, bottom, top):
        """Both layers' forward (``bottom``, ``top``: their blob vectors); always runs."""
        _reshape_all(self.layers, bottom, top)
        a, b = (blob.data for blob in bottom[0])
        elementwise.sum_relu_forward(a, b, self.relu.p.negative_slope, self.blob.data)
        for layer in self.layers:
            layer._forward_done = True
        return True

    def backward(self, propagate):
        """Both layers' backward; ``propagate``: the net's bottom_need_backward of the Eltwise
        and the ReLU. Returns False (nothing done: the net runs the layers one by one) when a
        layer has not run its forward since its last reshape or no bottom needs a gradient."""
        if not all(getattr(layer, "_forward_done", False) for layer in self.layers) or not any(propagate[0]):
            return False
        out0, out1 = (blob.diff if need else None for blob, need in zip(self.bottoms, propagate[0]))
        elementwise.sum_relu_backward(self.blob.data, self.blob.diff, self.relu.p.negative_slope, out0, out1)
        return True
