"""Loss layers (and Softmax, which SoftmaxWithLoss builds on).

A loss layer's first top is a scalar weighted by ``loss_weight`` (default 1). Its backward
reads that weight from the top's diff, as Caffe does, and scales its gradient by it.
"""

import math
from pathlib import Path

import numpy as np

from .. import parallel
from ..errors import DataError
from ..kernels import elementwise, vmath
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
    """out = exp(x - max) / sum(exp(x - max)) along ``axis`` (stable for large inputs). float32
    in C order runs vmath's exp (numpy's float32 exp runs one element at a time on AVX2
    machines): classes with positions after them (a segmentation net's (N, C, H, W) scores)
    through ``vmath.softmax``, the images shared over the workers, or the positions for a batch
    smaller than the workers (``over_positions``; 16 x 21 x 64 x 64 forward + backward 21.4 ->
    6.9-8.6 ms); classes last (a classifier's scores, attention's last axis) a row at a time
    through ``vmath.softmax_rows``, the rows shared over the workers (2026-12-06: 256 x 1000
    0.32 ms as numpy's max and sums around ``vmath.softmax_exp`` took before; a 32 x 64 x 56 x
    56 softmax over its last axis 17.6 -> 11.4 ms, 64 x 8 x 128 x 128 19.1 -> 8.8)."""
    shape = x.shape
    outer, classes = math.prod(shape[:axis]), shape[axis]
    inner = x.size // max(1, outer * classes)
    vector = x.dtype == out.dtype == np.float32 and x.flags.c_contiguous and out.flags.c_contiguous
    if vector and inner > 1:
        x3, y3 = x.reshape(outer, classes, inner), out.reshape(outer, classes, inner)
        over_positions(lambda n0, n1, lo, hi: vmath.softmax(x3[n0:n1], y3[n0:n1], lo, hi), outer, inner, 2 * x.nbytes)
        return out
    if vector and x.size:  # (the row kernel reads each row's first score)
        x2, y2 = x.reshape(outer, classes), out.reshape(outer, classes)
        parallel.over_slices(lambda lo, hi: vmath.softmax_rows(x2, y2, lo, hi), outer, 2 * x.nbytes)
        return out
    np.subtract(x, x.max(axis=axis, keepdims=True), out=out)
    if vector:
        flat = out.reshape(-1)
        elementwise.split(lambda lo, hi: vmath.softmax_exp(flat[lo:hi], flat[lo:hi]), flat, 1)
    else:
        np.exp(out, out=out)
    out /= out.sum(axis=axis, keepdims=True)
    return out


def over_positions(fn, outer, inner, nbytes):
    """``fn(n0, n1, lo, hi)`` over the (outer, classes, inner) arrays of a softmax, each call
    the items [n0, n1) at their positions [lo, hi): the items shared over the workers
    (``parallel.over_slices``) when there are at least as many as workers, else the positions
    (a segmentation net's batch of one). Every position is computed alone: the same results
    for any cut."""
    if outer >= parallel.thread_count():
        parallel.over_slices(lambda n0, n1: fn(n0, n1, 0, inner), outer, nbytes)
    else:
        parallel.over_slices(lambda lo, hi: fn(0, outer, lo, hi), inner, nbytes)


@register_layer("Softmax")
class Softmax(Layer):
    """y_i = exp(x_i) / sum_j exp(x_j) along ``axis``.
    Backward: dE/dx_i = y_i (dE/dy_i - sum_j dE/dy_j y_j), in one kernel
    (``vmath.softmax_backward``: the sums in float64; numpy's temporaries and passes took 2x)."""

    example = [{"bottoms": [(2, 4, 3)]}, {"bottoms": [(3, 5)]}]  # positions after the classes; classes last

    keep_bottom_data = False  # backward reads y alone

    params = {"axis": Field(int, 1)}
    num_bottoms = (1, 1)
    num_tops = (1, 1)
    in_place = True  # the backward needs only y, and the forward may overwrite x

    def Reshape(self, bottom, top):
        self.axis = bottom[0].canonical_axis(self.p.axis)
        top[0].reshape_like(bottom[0])
        shape = bottom[0].shape
        outer, classes = math.prod(shape[: self.axis]), shape[self.axis]
        self.view = (outer, classes, bottom[0].count // max(1, outer * classes))  # the backward's

    def Forward_cpu(self, bottom, top):
        softmax(bottom[0].data, top[0].data, self.axis)

    def Backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            view = self.view
            y, dy, dx = top[0].data.reshape(view), top[0].diff.reshape(view), bottom[0].diff.reshape(view)
            over_positions(
                lambda n0, n1, lo, hi: vmath.softmax_backward(y[n0:n1], dy[n0:n1], dx[n0:n1], lo, hi),
                view[0],
                view[2],
                3 * y.nbytes,
            )


@register_layer("SoftmaxWithLoss")
class SoftmaxWithLoss(LossLayer):
    """Softmax of the scores along ``axis`` (softmax_param), then the multinomial logistic loss:

        E = -(1 / normalizer) * sum over predictions n of log(max(p[n, label_n], FLT_MIN))

    (FLT_MIN as Caffe in float32; DBL_MIN in float64 nets, so that the gradient check's float64
    loss is the exact cross-entropy whose gradient Backward gives: see the README's differences.)
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
        self.outer = math.prod(shape[: self.axis])
        self.classes = shape[self.axis]
        self.inner = math.prod(shape[self.axis + 1 :])
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
        scores = bottom[0].data
        ignore = self.loss_param.ignore_label
        if scores.dtype == self.prob.dtype == np.float32 and scores.flags.c_contiguous:
            if self.inner == 1:
                self._classifier_forward(scores, bottom[1].data.reshape(-1), ignore, top)
            else:
                self._positions_forward(scores, self._labels(bottom), ignore, top)
            return
        prob = softmax(scores, self.prob, self.axis).reshape(self.outer, self.classes, self.inner)
        labels = self._labels(bottom)
        check_labels(self, labels, self.classes, ignore)
        valid = np.ones(labels.shape, bool) if ignore is None else labels != ignore
        index = np.where(valid, labels, 0).astype(np.intp)
        picked = np.take_along_axis(prob, index[:, None, :], axis=1)[:, 0, :]
        tiny = np.finfo(self.dtype).tiny if self.dtype == np.float64 else np.finfo(np.float32).tiny
        log_likelihood = np.log(np.maximum(picked, tiny))
        self.norm = self.normalizer(self.normalization_mode(), self.outer, self.inner, int(valid.sum()))
        top[0].data[...] = -np.sum(log_likelihood, where=valid) / self.norm
        if len(top) > 1:
            top[1].data[...] = self.prob

    def _classifier_forward(self, scores, labels, ignore, top):
        """The forward of float32 scores with the classes last (a classifier's (N, classes)):
        one kernel (``vmath.softmax_loss``) instead of a dozen numpy passes over a small array,
        each of which costs more in a net, between larger layers, than alone (0.25 against
        0.05 ms a forward on a batch of 16). The rows are shared over the workers when large: a
        language model's 640 x 10,000 scores (20 words, 32 sentences, 10,000 words in the
        vocabulary) took 20.3 ms on one core with one chain of compares for a row's maximum and
        one chain of adds for its sum, and 3.7 ms with eight and four of them, loops indexed so
        that they vectorize, and two workers (256 x 1000: 0.80 -> 0.27 ms). The loss sums the
        shares' sums in row order."""
        rows = scores.reshape(self.outer, self.classes)
        use_ignore, ignored = ignore is not None, 0 if ignore is None else ignore
        prob = self.prob.reshape(rows.shape)
        parts = {}  # the rows' first index -> (sum, rows counted, first bad row) of that share

        def share(lo, hi):
            parts[lo] = vmath.softmax_loss(rows, labels, ignored, use_ignore, prob, lo, hi)

        parallel.over_slices(share, self.outer, 2 * rows.nbytes)
        total = sum(parts[lo][0] for lo in sorted(parts))  # in row order: the same bits each run
        counted = sum(part[1] for part in parts.values())
        if any(part[2] >= 0 for part in parts.values()):
            check_labels(self, labels, self.classes, ignore)  # names the bad label
        self.norm = self.normalizer(self.normalization_mode(), self.outer, self.inner, counted)
        top[0].data[...] = total / self.norm
        if len(top) > 1:
            top[1].data[...] = self.prob

    def _positions_forward(self, scores, labels, ignore, top):
        """The forward of float32 scores with positions after the classes (a segmentation net's
        (N, classes, H, W)): the softmax kernel, then one pass over the labels
        (``vmath.softmax_loss_positions``), both over the workers, in place of numpy's gathers
        and masks. 4 x 21 x 192 x 192 scores with an ignore label, 2 workers: forward 5.1 ->
        3.9 ms, backward (``vmath.softmax_loss_positions_grad`` in place of a copy, a scatter
        and two masks) 6.0 -> 2.1 ms; one image of 384 x 384: 7.5 -> 4.3 and 5.0 -> 1.7 ms.
        The loss sums the shares' sums in order."""
        prob = softmax(scores, self.prob, self.axis).reshape(self.outer, self.classes, self.inner)
        parts = {}  # the first position -> (sum, positions counted, first bad label) of that share
        use_ignore, ignored = ignore is not None, 0 if ignore is None else ignore

        def share(lo, hi):
            parts[lo] = vmath.softmax_loss_positions(prob, labels, ignored, use_ignore, lo, hi)

        parallel.over_slices(share, self.inner, prob.nbytes)
        if any(part[2] >= 0 for part in parts.values()):
            check_labels(self, labels, self.classes, ignore)  # names the bad label
        total = sum(parts[lo][0] for lo in sorted(parts))
        counted = sum(part[1] for part in parts.values())
        self.norm = self.normalizer(self.normalization_mode(), self.outer, self.inner, counted)
        top[0].data[...] = total / self.norm
        if len(top) > 1:
            top[1].data[...] = self.prob

    def Backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise self.error("SoftmaxWithLoss cannot backpropagate to the labels")
        if not propagate_down[0]:
            return
        grad = bottom[0].diff
        ignore = self.loss_param.ignore_label
        scale = (top[0].diff.reshape(()) / self.norm).astype(grad.dtype)
        ignored = 0 if ignore is None else ignore
        if self.inner == 1:
            labels = bottom[1].data.reshape(-1)
            rows = (self.outer, self.classes)
            vmath.softmax_loss_grad(
                self.prob.reshape(rows), labels, ignored, ignore is not None, scale, grad.reshape(rows)
            )
            return
        shape = (self.outer, self.classes, self.inner)
        prob, grad3, labels = self.prob.reshape(shape), grad.reshape(shape), self._labels(bottom)
        parallel.over_slices(
            lambda lo, hi: vmath.softmax_loss_positions_grad(
                prob, labels, ignored, ignore is not None, scale, grad3, lo, hi
            ),
            self.inner,
            2 * grad.nbytes,
        )


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


@register_layer("ContrastiveLoss")
class ContrastiveLoss(LossLayer):
    """The contrastive loss of Hadsell et al. over pairs: features a = bottom[0] and
    b = bottom[1] (N items of one size: Caffe's (N, C, 1, 1), or any shape of the same count per
    item) and a similarity label y = bottom[2] (one per item; similar where int(y) != 0, as
    Caffe's cast). With d_n = ||a_n - b_n|| and m = ``margin`` (default 1):

        E = 1/(2N) sum_n  d_n^2                 if similar
                          max(m - d_n, 0)^2     if dissimilar (legacy_version: max(m - d_n^2, 0))

    Backward (w the loss weight; dE/db = -dE/da):
        similar:     dE/da_n = w (a_n - b_n) / N
        dissimilar:  dE/da_n = -w (m - d_n) / d_n (a_n - b_n) / N  where m - d_n > 0, else 0
                     (legacy: -w (a_n - b_n) / N where m - d_n^2 > 0, else 0)
    Caffe divides by d_n + 1e-4 in the dissimilar gradient; we take the exact gradient (0 for
    an item with d_n = 0, where its direction is undefined). The label takes no gradient."""

    example = [
        {"bottoms": [(6, 3), (6, 3), (6,)], "labels": {2: 2}, "params": {"contrastive_loss_param": {"margin": 3}}},
        {
            "bottoms": [(6, 3, 1, 1), (6, 3, 1, 1), (6, 1, 1, 1)],
            "labels": {2: 2},
            "params": {"loss_weight": 0.5, "contrastive_loss_param": {"margin": 8, "legacy_version": True}},
        },
    ]

    keep_top_data = False

    params = {"margin": Field(float, 1.0), "legacy_version": Field(bool, False)}
    num_bottoms = (3, 3)

    def allow_force_backward(self, bottom_index):
        return bottom_index != 2

    def Reshape(self, bottom, top):
        super().Reshape(bottom, top)
        a, b, y = bottom
        if a.shape != b.shape and (a.shape[0] != b.shape[0] or a.count != b.count):
            raise self.error(f"the two feature bottoms must have the same size per item: {a.shape} vs {b.shape}")
        self.batch = a.shape[0]
        if y.count != self.batch:
            raise self.error(f"expected one similarity label per pair ({self.batch}), got label shape {y.shape}")
        self.features = a.count // self.batch
        self.buffer("_difference", (self.batch, self.features), a.dtype)
        self.buffer("_coefficient", (self.batch, 1), a.dtype)

    def Forward_cpu(self, bottom, top):
        a, b, y = bottom
        difference = self._difference
        np.subtract(a.data.reshape(difference.shape), b.data.reshape(difference.shape), out=difference)
        squared = np.einsum("ij,ij->i", difference, difference)
        similar = np.abs(y.data.reshape(self.batch)) >= 1  # int(y) != 0
        margin = self.p.margin
        if self.p.legacy_version:
            apart = np.maximum(margin - squared, 0.0)
        else:
            apart = np.square(np.maximum(margin - np.sqrt(squared), 0.0))
        self.similar, self.squared = similar, squared
        top[0].data[...] = np.sum(np.where(similar, squared, apart)) / (2.0 * self.batch)

    def Backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[2]:
            raise self.error("ContrastiveLoss cannot backpropagate to the similarity labels")
        scale = float(top[0].diff.reshape(())) / self.batch
        margin, squared = self.p.margin, self.squared
        if self.p.legacy_version:
            dissimilar = np.where(margin - squared > 0, -1.0, 0.0)
        else:
            distance = np.sqrt(squared)
            gap = np.maximum(margin - distance, 0.0)
            dissimilar = -np.divide(gap, distance, out=np.zeros_like(distance), where=distance > 0)
        coefficient = self._coefficient
        coefficient[:, 0] = np.where(self.similar, 1.0, dissimilar) * scale
        for i, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[i]:
                dx = bottom[i].diff.reshape(self._difference.shape)
                np.multiply(self._difference, coefficient, out=dx)
                if sign < 0:
                    np.negative(dx, out=dx)


kLOG_THRESHOLD = 1e-20  # Caffe's floor under a probability before its log


@register_layer("MultinomialLogisticLoss")
class MultinomialLogisticLoss(LossLayer):
    """The log loss of probabilities p = bottom[0] (N items, each flattened to K values, e.g. a
    Softmax's output) against labels l = bottom[1] (one class index per item):

        E = -(1/N) sum_n log(max(p[n, l_n], 1e-20))

    Backward: dE/dp[n, l_n] = -w / (N max(p[n, l_n], 1e-20)), 0 for the other classes (w the
    loss weight). Below the floor Caffe keeps that steep gradient rather than the flat loss's
    0, and so do we. Prefer SoftmaxWithLoss on scores: it is the same loss, computed stably."""

    example = {"bottoms": [(3, 4), (3,)], "labels": {1: 4}, "positive": [0]}

    keep_top_data = False

    def Reshape(self, bottom, top):
        super().Reshape(bottom, top)
        self.batch = bottom[0].shape[0]
        self.classes = bottom[0].count // self.batch
        if bottom[1].count != self.batch:
            raise self.error(f"expected one label per item ({self.batch}), got label shape {bottom[1].shape}")
        if getattr(self, "_rows", None) is None or self._rows.size != self.batch:
            self._rows = np.arange(self.batch)

    def Forward_cpu(self, bottom, top):
        p = bottom[0].data.reshape(self.batch, self.classes)
        labels = bottom[1].data.reshape(self.batch)
        check_labels(self, labels, self.classes, None)
        self.labels = labels.astype(np.intp)
        self.picked = np.maximum(p[self._rows, self.labels], p.dtype.type(kLOG_THRESHOLD))
        top[0].data[...] = -np.sum(np.log(self.picked)) / self.batch

    def Backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise self.error("MultinomialLogisticLoss cannot backpropagate to the labels")
        if not propagate_down[0]:
            return
        dp = bottom[0].diff.reshape(self.batch, self.classes)
        dp[...] = 0
        scale = -float(top[0].diff.reshape(())) / self.batch
        dp[self._rows, self.labels] = scale / self.picked


def read_infogain_matrix(layer, source):
    """H from a Caffe BlobProto file (``.binaryproto``), as a float64 array. A relative path is
    looked up under the config's folder, then the current folder (Caffe's only place). A
    missing or malformed file is a DataError naming it."""
    from ..caffe.wire import DecodeError, decode_blob

    path = Path(source).expanduser()
    if not path.is_absolute():
        base = getattr(getattr(layer, "net", None), "base_dir", None)
        candidates = ([Path(base) / path] if base is not None else []) + [Path.cwd() / path]
        path = next((c for c in candidates if c.is_file()), candidates[0])
    located = {"file": str(path), "layer": layer.name, "field": "infogain_loss_param.source"}
    try:
        buf = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read the infogain matrix: {err.strerror or err}", **located) from None
    try:
        return decode_blob(buf, what="infogain matrix")[0].astype(np.float64)
    except DecodeError as err:
        raise DataError(f"not a BlobProto (.binaryproto): {err.message}", **located) from None


@register_layer("InfogainLoss")
class InfogainLoss(LossLayer):
    """The infogain loss of Caffe 1.0: a softmax of the scores x = bottom[0] along ``axis``
    (default 1), then a log loss weighted by an infogain matrix H (K x K, K the classes): row l
    of H says how much each predicted class is worth when the label is l. H comes from the file
    ``infogain_loss_param.source`` (a BlobProto, ``.binaryproto``) or from a third bottom. With
    p = softmax(x), predictions i (every position before and after ``axis``) and labels l_i:

        E = -(1 / normalizer) sum_i sum_k H[l_i, k] log(max(p[i, k], 1e-20))

    H = I gives SoftmaxWithLoss. Predictions labelled ``ignore_label`` are left out; the
    normalizer follows ``loss_param.normalization`` (default VALID; ``normalize`` is refused, as
    Caffe 1.0 does). Backward (w the loss weight; as Caffe, the floor is not differentiated):

        dE/dx[i, k] = w (p[i, k] sum_j H[l_i, j] - H[l_i, k]) / normalizer  (0 where ignored)

    An optional second top gives p (no gradient flows back from it, as in Caffe). Neither the
    labels nor H take a gradient."""

    example = [
        {"bottoms": [(3, 4), (3,), (4, 4)], "labels": {1: 4}},
        {
            "bottoms": [(2, 4, 3), (2, 3), (4, 4)],
            "labels": {1: 4},
            "params": {"loss_param": {"ignore_label": 2, "normalization": "FULL"}},
        },
    ]

    keep_top_data = False

    params = {"source": Field(str, None), "axis": Field(int, 1)}
    num_bottoms = (2, 3)
    num_tops = (1, 2)

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0

    def LayerSetUp(self, bottom, top):
        super().LayerSetUp(bottom, top)
        if self.loss_param.normalize is not None:
            raise self.error(
                "normalize is deprecated for InfogainLoss (Caffe 1.0 refuses it): use normalization",
                "loss_param.normalize",
            )
        self.mode = self.loss_param.normalization or "VALID"
        self.stored_matrix = None
        if len(bottom) < 3:
            if not self.p.source:
                raise self.error(
                    "give the infogain matrix H as infogain_loss_param.source (a .binaryproto) or as a third bottom",
                    "infogain_loss_param.source",
                )
            self.stored_matrix = read_infogain_matrix(self, self.p.source).astype(self.dtype)

    def Reshape(self, bottom, top):
        super().Reshape(bottom, top)
        try:
            self.axis = bottom[0].canonical_axis(self.p.axis)
        except ValueError as err:
            raise self.error(str(err), "infogain_loss_param.axis") from None
        shape = bottom[0].shape
        self.outer, self.classes = bottom[0].count_range(0, self.axis), shape[self.axis]
        self.inner = bottom[0].count_range(self.axis + 1)
        if bottom[1].count != self.outer * self.inner:
            raise self.error(
                f"expected {self.outer * self.inner} labels for scores of shape {shape} "
                f"(infogain axis {self.axis}), got label shape {bottom[1].shape}"
            )
        matrix = bottom[2].data if len(bottom) > 2 else self.stored_matrix
        if matrix.size != self.classes**2:
            raise self.error(
                f"the infogain matrix H must be {self.classes} x {self.classes} for the {self.classes} classes "
                f"of scores {shape} (axis {self.axis}), got shape {matrix.shape}"
            )
        if len(top) > 1:
            top[1].reshape(shape)
        self.buffer("_prob", shape)
        self.buffer("_log_prob", shape)

    def _matrix(self, bottom):
        if len(bottom) > 2:
            return bottom[2].data.reshape(self.classes, self.classes)
        return self.stored_matrix.reshape(self.classes, self.classes)

    def Forward_cpu(self, bottom, top):
        prob = softmax(bottom[0].data, self._prob, self.axis).reshape(self.outer, self.classes, self.inner)
        labels = bottom[1].data.reshape(self.outer, self.inner)
        ignore = self.loss_param.ignore_label
        check_labels(self, labels, self.classes, ignore)
        valid = np.ones(labels.shape, bool) if ignore is None else labels != ignore
        self.valid, self.index = valid, np.where(valid, labels, 0).astype(np.intp)
        log_prob = self._log_prob.reshape(prob.shape)
        np.maximum(prob, prob.dtype.type(kLOG_THRESHOLD), out=log_prob)
        np.log(log_prob, out=log_prob)
        rows = self._matrix(bottom)[self.index]  # (outer, inner, classes): H[l_i]
        per_prediction = np.einsum("oik,oki->oi", rows, log_prob)
        self.norm = self.normalizer(self.mode, self.outer, self.inner, int(valid.sum()))
        top[0].data[...] = -np.sum(per_prediction, where=valid) / self.norm
        if len(top) > 1:
            top[1].data[...] = self._prob

    def Backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[1] or (len(bottom) > 2 and propagate_down[2]):
            raise self.error("InfogainLoss cannot backpropagate to the labels or the infogain matrix")
        if not propagate_down[0]:
            return
        matrix = self._matrix(bottom)
        rows = matrix[self.index]  # (outer, inner, classes)
        row_sums = matrix.sum(axis=1)[self.index]  # (outer, inner)
        dx = bottom[0].diff.reshape(self.outer, self.classes, self.inner)
        prob = self._prob.reshape(dx.shape)
        np.multiply(prob, row_sums[:, None, :], out=dx)
        dx -= rows.transpose(0, 2, 1)
        if not self.valid.all():
            dx *= self.valid[:, None, :]
        dx *= dx.dtype.type(float(top[0].diff.reshape(())) / self.norm)


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
