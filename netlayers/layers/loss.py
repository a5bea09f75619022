"""Loss layers (and Softmax, which SoftmaxWithLoss builds on).

A loss layer's first top is a scalar weighted by ``loss_weight`` (default 1). Its backward
reads that weight from the top's diff, as Caffe does, and scales its gradient by it.
"""

import numpy as np

from ..errors import DataError
from ..kernels import elementwise
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
    auto_top_blobs = True  # a loss layer given no top still computes its loss, as in Caffe
    extra_blocks = {"loss_param": LOSS_PARAM}
    num_bottoms = (2, 2)
    num_tops = (1, 1)

    def LayerSetUp(self, bottom, top):
        self.loss_param = self.spec.blocks["loss_param"]

    def Reshape(self, bottom, top):
        if bottom[0].num_axes == 0 or bottom[1].num_axes == 0:
            raise self.error(
                f"the bottoms need a batch axis (axis 0), got shapes {bottom[0].shape} and {bottom[1].shape}"
            )
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
        value = {
            "FULL": outer * inner,
            "VALID": valid_count if self.loss_param.ignore_label is not None else outer * inner,
            "BATCH_SIZE": outer,
            "NONE": 1,
        }[mode]
        return max(1.0, float(value))


def check_labels(layer, labels, num_classes, ignore_label):
    """Labels must be integers in [0, num_classes) (or the ignore label): name the first bad
    one, a fraction (or NaN) before a whole number out of range."""
    flat = labels.reshape(-1)
    fractional = flat != np.floor(flat)  # NaN too: NaN != NaN
    if fractional.any():
        value = plain_number(flat[np.argmax(fractional)])
        raise DataError(
            f"label {value} is not a whole number (expected a class index in [0, {num_classes - 1}])", layer=layer.name
        )
    outside = (flat < 0) | (flat >= num_classes)
    if ignore_label is not None:
        outside &= flat != ignore_label
    if outside.any():
        value = plain_number(flat[np.argmax(outside)])
        raise DataError(f"label {value} is outside the {num_classes} classes [0, {num_classes - 1}]", layer=layer.name)


def plain_number(value):
    """A number as a user would write it: 3 (not 3.0), 0.5, 1e+20, nan (never np.float64(0.5))."""
    number = float(value)
    if number.is_integer() and abs(number) < 1e15:
        return str(int(number))
    return str(value)  # numpy's str is the shortest form for the value's own dtype


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

    example = {"bottoms": [(2, 4, 3)]}

    params = {"axis": Field(int, 1)}
    num_bottoms = (1, 1)
    num_tops = (1, 1)
    in_place = True  # the backward needs only y, and the forward may overwrite x

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

    example = [
        {"bottoms": [(3, 4), (3,)], "labels": {1: 4}},
        {
            "bottoms": [(2, 4, 3), (2, 3)],
            "labels": {1: 4},
            "params": {"loss_weight": 2, "loss_param": {"ignore_label": 1, "normalization": "BATCH_SIZE"}},
        },
    ]

    keep_top_data = False

    extra_blocks = {"softmax_param": {"axis": Field(int, 1)}}
    num_tops = (1, 2)

    def Reshape(self, bottom, top):
        if bottom[0].num_axes == 0:
            raise self.error("the scores need at least one axis, got shape ()")
        self.axis = bottom[0].canonical_axis(self.spec.blocks["softmax_param"].axis)
        shape = bottom[0].shape
        self.outer = int(np.prod(shape[: self.axis]))
        self.classes = shape[self.axis]
        self.inner = int(np.prod(shape[self.axis + 1 :]))
        if bottom[1].count != self.outer * self.inner:
            raise self.error(
                f"expected {self.outer * self.inner} labels for scores of shape {shape} "
                f"(softmax axis {self.axis}), got label shape {bottom[1].shape}"
            )
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


@register_layer("EuclideanLoss")
class EuclideanLoss(LossLayer):
    """E = sum((a - b)^2) / (2 N), a = bottom[0], b = bottom[1] (same count per item), N the
    batch size (axis 0). Caffe ignores loss_param's normalization here, and so do we.
    Backward: dE/da = w (a - b) / N and dE/db = -w (a - b) / N, w the loss weight; both
    bottoms may take a gradient (neither is a label)."""

    example = {"bottoms": [(3, 4), (3, 2, 2)]}

    keep_top_data = False

    def Reshape(self, bottom, top):
        super().Reshape(bottom, top)
        if bottom[0].count_range(1) != bottom[1].count_range(1):
            raise self.error(f"the bottoms must have the same size per item: {bottom[0].shape} vs {bottom[1].shape}")
        self.buffer("_difference", bottom[0].shape, bottom[0].dtype)

    def allow_force_backward(self, bottom_index):
        return True

    def Forward_cpu(self, bottom, top):
        d = self._difference
        np.subtract(bottom[0].data, bottom[1].data.reshape(d.shape), out=d)
        flat = d.reshape(-1)
        top[0].data[...] = np.dot(flat, flat) / (2.0 * bottom[0].shape[0])

    def Backward_cpu(self, top, propagate_down, bottom):
        scale = float(top[0].diff.reshape(())) / bottom[0].shape[0]
        for i, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[i]:
                dx = bottom[i].diff.reshape(self._difference.shape)
                np.multiply(self._difference, dx.dtype.type(sign * scale), out=dx)


@register_layer("SigmoidCrossEntropyLoss")
class SigmoidCrossEntropyLoss(LossLayer):
    """Cross-entropy of targets t in [0, 1] against sigmoid(x), x = bottom[0], t = bottom[1]
    (same count), in the stable form (no exp of a large positive number):

        E = (1 / normalizer) * sum over elements not ignored of
            max(x, 0) - x t + log(1 + exp(-|x|))

    Backward: dE/dx = w (sigmoid(x) - t) / normalizer (0 where ignored), w the loss weight.
    As in Caffe 1.0 the normalizer follows loss_param: ``normalization`` if given, else the old
    ``normalize`` (true VALID, false BATCH_SIZE), else BATCH_SIZE (not VALID as for
    SoftmaxWithLoss); FULL counts every element, VALID those not ignored. An element is ignored
    when its target equals ``ignore_label`` exactly (Caffe truncates the target to an integer
    first, so a target of 0.5 would match ignore_label 0; we do not). Targets outside [0, 1]
    (other than the ignore label) are a DataError."""

    example = {"bottoms": [(3, 4), (3, 4)], "labels": {1: 2}}

    keep_top_data = False

    def LayerSetUp(self, bottom, top):
        super().LayerSetUp(bottom, top)
        lp = self.loss_param
        if lp.normalization is not None:
            self.mode = lp.normalization
        elif lp.normalize is not None:
            self.mode = "VALID" if lp.normalize else "BATCH_SIZE"
        else:
            self.mode = "BATCH_SIZE"

    def Reshape(self, bottom, top):
        super().Reshape(bottom, top)
        if bottom[0].count != bottom[1].count:
            raise self.error(f"scores and targets must have the same count: {bottom[0].shape} vs {bottom[1].shape}")
        shape, dtype = bottom[0].shape, bottom[0].dtype
        self.buffer("_loss", shape, dtype)
        self.buffer("_scratch", shape, dtype)
        if self.loss_param.ignore_label is not None:
            self.buffer("_valid", shape, bool)

    def _check_targets(self, t):
        if t.size == 0 or (t.min() >= 0 and t.max() <= 1):
            return
        bad = (t < 0) | (t > 1) | np.isnan(t)
        if self.loss_param.ignore_label is not None:
            bad &= t != self.loss_param.ignore_label
        if bad.any():
            raise DataError(f"target {t.reshape(-1)[np.argmax(bad.reshape(-1))]:g} is outside [0, 1]", layer=self.name)

    def Forward_cpu(self, bottom, top):
        x = bottom[0].data
        t = bottom[1].data.reshape(x.shape)
        self._check_targets(t)
        loss, scratch = self._loss, self._scratch
        elementwise.softplus(x, out=loss, scratch=scratch)
        np.multiply(x, t, out=scratch)
        loss -= scratch
        ignore = self.loss_param.ignore_label
        if ignore is None:
            total, valid_count = float(loss.sum()), x.size
        else:
            np.not_equal(t, ignore, out=self._valid)
            total, valid_count = float(np.sum(loss, where=self._valid)), int(np.count_nonzero(self._valid))
        self.norm = self.normalizer(self.mode, x.shape[0], x.size // max(x.shape[0], 1), valid_count)
        top[0].data[...] = total / self.norm

    def Backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise self.error("SigmoidCrossEntropyLoss cannot backpropagate to the targets")
        if not propagate_down[0]:
            return
        dx = bottom[0].diff
        elementwise.sigmoid_forward(bottom[0].data, out=dx)
        dx -= bottom[1].data.reshape(dx.shape)
        if self.loss_param.ignore_label is not None:
            dx *= self._valid
        dx *= dx.dtype.type(float(top[0].diff.reshape(())) / self.norm)


@register_layer("HingeLoss")
class HingeLoss(LossLayer):
    """One-vs-all hinge loss over scores x of shape (N, K) (bottom[0] flattened per item) and
    labels l (bottom[1], one per item). With t_k = +1 for k = l and -1 otherwise, and the
    margins m_nk = max(0, 1 - t_k x_nk):

        L1 (default): E = sum m / N        L2: E = sum m^2 / N

    Backward: dE/dx_nk = -w t_k [m_nk > 0] / N (L1) or -2 w t_k m_nk / N (L2), w the loss weight.
    At the kink (m = 0 exactly) L1 takes the gradient 0, as Caffe's sign(0) = 0."""

    example = [
        {"bottoms": [(3, 4), (3,)], "labels": {1: 4}},
        {"bottoms": [(3, 4), (3,)], "labels": {1: 4}, "params": {"hinge_loss_param": {"norm": "L2"}}},
    ]

    keep_top_data = False

    params = {"norm": Field(Enum("L1", "L2"), "L1")}

    def Reshape(self, bottom, top):
        super().Reshape(bottom, top)
        batch = bottom[0].shape[0]
        if bottom[1].count != batch:
            raise self.error(f"expected one label per item ({batch}), got label shape {bottom[1].shape}")
        self.batch = batch
        self.classes = bottom[0].count // batch if batch else 0
        self.buffer("_margin", (batch, self.classes), bottom[0].dtype)
        if getattr(self, "_rows", None) is None or self._rows.size != batch:
            self._rows = np.arange(batch)

    def Forward_cpu(self, bottom, top):
        x = bottom[0].data.reshape(self.batch, self.classes)
        labels = bottom[1].data.reshape(self.batch)
        check_labels(self, labels, self.classes, None)
        rows = self._rows
        self.labels = labels.astype(np.intp)
        m = self._margin
        np.add(x, x.dtype.type(1), out=m)  # 1 - t x for t = -1
        m[rows, self.labels] = 1 - x[rows, self.labels]  # 1 - t x for t = +1
        np.maximum(m, m.dtype.type(0), out=m)
        flat = m.reshape(-1)
        total = flat.sum() if self.p.norm == "L1" else np.dot(flat, flat)
        top[0].data[...] = total / self.batch

    def Backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise self.error("HingeLoss cannot backpropagate to the labels")
        if not propagate_down[0]:
            return
        dx = bottom[0].diff.reshape(self.batch, self.classes)
        m = self._margin
        if self.p.norm == "L1":
            np.greater(m, 0, out=dx)  # [m > 0] for t = -1: d m / dx = +1
            factor = 1.0
        else:
            np.copyto(dx, m)
            factor = 2.0
        dx[self._rows, self.labels] *= -1  # t = +1: d m / dx = -1
        dx *= dx.dtype.type(factor * float(top[0].diff.reshape(())) / self.batch)


@register_layer("Accuracy")
class Accuracy(Layer):
    """The fraction of predictions whose label is among the top_k scores along ``axis``.

    A prediction (one per position of the axes before and after ``axis``) with label l counts
    as right when fewer than top_k other classes score at least as high as class l: ties count
    against it (Caffe's rule). Predictions labelled ``ignore_label`` are left out; with none
    left the accuracy is 0. An optional second top gives the accuracy per class (shape
    (classes,); 0 for a class with no predictions). No backward; not a loss."""

    example = {"bottoms": [(4, 5), (4,)], "labels": {1: 5}, "tops": 2, "params": {"accuracy_param": {"top_k": 2}}}

    keep_top_data = False

    params = {
        "top_k": Field(int, 1, min=1),
        "axis": Field(int, 1),
        "ignore_label": Field(int, None),
    }
    num_bottoms = (2, 2)
    num_tops = (1, 2)
    has_backward = False

    def Reshape(self, bottom, top):
        shape = bottom[0].shape
        if not shape:
            raise self.error("the scores need at least one axis, got shape ()", "accuracy_param.axis")
        try:
            self.axis = bottom[0].canonical_axis(self.p.axis)
        except ValueError as err:
            raise self.error(str(err), "accuracy_param.axis") from None
        self.outer = bottom[0].count_range(0, self.axis)
        self.classes = shape[self.axis]
        self.inner = bottom[0].count_range(self.axis + 1)
        if self.p.top_k > self.classes:
            raise self.error(
                f"top_k ({self.p.top_k}) is more than the {self.classes} classes of scores {shape} (axis {self.axis})",
                "accuracy_param.top_k",
            )
        if bottom[1].count != self.outer * self.inner:
            raise self.error(
                f"expected {self.outer * self.inner} labels for scores of shape {shape} "
                f"(axis {self.axis}), got label shape {bottom[1].shape}"
            )
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape((self.classes,))
        self.buffer("_at_least", (self.outer, self.classes, self.inner), bool)

    def Forward_cpu(self, bottom, top):
        scores = bottom[0].data.reshape(self.outer, self.classes, self.inner)
        labels = bottom[1].data.reshape(self.outer, self.inner)
        ignore = self.p.ignore_label
        check_labels(self, labels, self.classes, ignore)
        valid = np.ones(labels.shape, bool) if ignore is None else labels != ignore
        index = np.where(valid, labels, 0).astype(np.intp)
        true_score = np.take_along_axis(scores, index[:, None, :], axis=1)
        np.greater_equal(scores, true_score, out=self._at_least)
        others = self._at_least.sum(axis=1) - 1  # classes other than l scoring >= x_l
        right = (others < self.p.top_k) & valid
        count = int(valid.sum())
        top[0].data[...] = right.sum() / count if count else 0.0
        if len(top) > 1:
            per_class = np.bincount(index[valid], minlength=self.classes)
            hits = np.bincount(index[right], minlength=self.classes)
            top[1].data[...] = np.divide(hits, per_class, out=np.zeros(self.classes), where=per_class > 0)
