"""Loss layers (and Softmax, which SoftmaxWithLoss builds on).

A loss layer's first top is a scalar weighted by ``loss_weight`` (default 1). Its backward
reads that weight from the top's diff, as Caffe does, and scales its gradient by it.
"""
import numpy as np

from ..errors import DataError
from ..layer import Layer
from ..netspec import Enum, Field
from ..registry import register_layer

LOSS_PARAM = {
    "ignore_label": Field(int, None),
    "normalization": Field(Enum("FULL", "VALID", "BATCH_SIZE", "NONE"), None),
    "normalize": Field(bool, None),
}


class LossLayer(Layer):
    """Base of loss layers: two bottoms (prediction, target), a scalar top weighted by 1."""

    is_loss = True
    extra_blocks = {"loss_param": LOSS_PARAM}
    num_bottoms = (2, 2)
    num_tops = (1, 1)

    def LayerSetUp(self, bottom, top):
        self.loss_param = self.spec.blocks["loss_param"]

    def Reshape(self, bottom, top):
        if bottom[0].shape[:1] != bottom[1].shape[:1]:
            raise self.error(f"the bottoms disagree on the batch size: {bottom[0].shape} vs {bottom[1].shape}")
        top[0].reshape(())

    def normalization_mode(self):
        """Caffe: ``normalization`` wins; else the old ``normalize`` (true VALID, false BATCH_SIZE)."""
        lp = self.loss_param
        if lp.normalization is not None:
            return lp.normalization
        if lp.normalize is not None:
            return "VALID" if lp.normalize else "BATCH_SIZE"
        return "VALID"

    def normalizer(self, mode, outer, inner, valid_count):
        """FULL: every prediction; VALID: those not ignored; BATCH_SIZE: outer; NONE: 1.
        Never below 1 (Caffe clamps the same way)."""
        value = {"FULL": outer * inner,
                 "VALID": valid_count if self.loss_param.ignore_label is not None else outer * inner,
                 "BATCH_SIZE": outer, "NONE": 1}[mode]
        return max(1.0, float(value))


def check_labels(layer, labels, num_classes, ignore_label):
    """Labels must be integers in [0, num_classes) (or the ignore label): name the bad one."""
    flat = labels.reshape(-1)
    bad = (flat < 0) | (flat >= num_classes) | (flat != np.floor(flat))
    if ignore_label is not None:
        bad &= flat != ignore_label
    if bad.any():
        value = flat[np.argmax(bad)]
        raise DataError(f"label {value:g} is outside the {num_classes} classes [0, {num_classes - 1}]",
                        layer=layer.name)


def softmax(x, out, axis):
    """out = exp(x - max) / sum(exp(x - max)) along ``axis`` (stable for large inputs)."""
    np.subtract(x, x.max(axis=axis, keepdims=True), out=out)
    np.exp(out, out=out)
    out /= out.sum(axis=axis, keepdims=True)
    return out


@register_layer("Softmax")
class Softmax(Layer):
    """y_i = exp(x_i) / sum_j exp(x_j) along ``axis``.
    Backward: dE/dx_i = y_i (dE/dy_i - sum_j dE/dy_j y_j)."""

    params = {"axis": Field(int, 1)}
    num_bottoms = (1, 1)
    num_tops = (1, 1)

    def Reshape(self, bottom, top):
        self.axis = bottom[0].canonical_axis(self.p.axis)
        top[0].reshape_like(bottom[0])

    def Forward_cpu(self, bottom, top):
        softmax(bottom[0].data, top[0].data, self.axis)

    def Backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y, dy = top[0].data, top[0].diff
            dot = np.sum(dy * y, axis=self.axis, keepdims=True)
            np.subtract(dy, dot, out=bottom[0].diff)
            bottom[0].diff *= y


@register_layer("SoftmaxWithLoss")
class SoftmaxWithLoss(LossLayer):
    """Softmax of the scores along ``axis`` (softmax_param), then the multinomial logistic loss:

        E = -(1 / normalizer) * sum over predictions n of log(max(p[n, label_n], FLT_MIN))

    predictions whose label equals ``ignore_label`` are left out. Backward:
    dE/dx[n, c] = loss_weight * (p[n, c] - [c == label_n]) / normalizer (0 where ignored).
    An optional second top outputs the probabilities.
    """

    extra_blocks = {"softmax_param": {"axis": Field(int, 1)}}
    num_tops = (1, 2)

    def Reshape(self, bottom, top):
        self.axis = bottom[0].canonical_axis(self.spec.blocks["softmax_param"].axis)
        shape = bottom[0].shape
        self.outer = int(np.prod(shape[:self.axis]))
        self.classes = shape[self.axis]
        self.inner = int(np.prod(shape[self.axis + 1:]))
        if bottom[1].count != self.outer * self.inner:
            raise self.error(f"expected {self.outer * self.inner} labels for scores of shape {shape} "
                             f"(softmax axis {self.axis}), got label shape {bottom[1].shape}")
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape(shape)
        if getattr(self, "prob", None) is None or self.prob.shape != shape:
            self.prob = np.empty(shape, self.dtype)

    def _labels(self, bottom):
        return bottom[1].data.reshape(self.outer, self.inner)

    def Forward_cpu(self, bottom, top):
        prob = softmax(bottom[0].data, self.prob, self.axis).reshape(self.outer, self.classes, self.inner)
        labels = self._labels(bottom)
        ignore = self.loss_param.ignore_label
        check_labels(self, labels, self.classes, ignore)
        valid = np.ones(labels.shape, bool) if ignore is None else labels != ignore
        index = np.where(valid, labels, 0).astype(np.intp)
        picked = np.take_along_axis(prob, index[:, None, :], axis=1)[:, 0, :]
        tiny = np.finfo(self.dtype).tiny if self.dtype == np.float64 else np.finfo(np.float32).tiny
        log_likelihood = np.log(np.maximum(picked, tiny))
        self.valid = valid
        self.index = index
        self.norm = self.normalizer(self.normalization_mode(), self.outer, self.inner, int(valid.sum()))
        top[0].data[...] = -np.sum(log_likelihood, where=valid) / self.norm
        if len(top) > 1:
            top[1].data[...] = self.prob

    def Backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise self.error("SoftmaxWithLoss cannot backpropagate to the labels")
        if not propagate_down[0]:
            return
        grad = bottom[0].diff
        grad[...] = self.prob
        grad3 = grad.reshape(self.outer, self.classes, self.inner)
        outer_idx, inner_idx = np.nonzero(self.valid)
        grad3[outer_idx, self.index[outer_idx, inner_idx], inner_idx] -= 1
        if not self.valid.all():
            grad3 *= self.valid[:, None, :]
        grad *= top[0].diff.reshape(()) / self.norm
