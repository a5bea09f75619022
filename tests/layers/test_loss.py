"""Loss layers and Accuracy: values against direct numpy formulas, normalization modes,
ignore_label, gradients, label checks and setup errors."""

import numpy as np
import pytest
from layer_harness import assert_contract, assert_gradients, make_layer, run_layer

from netlayers import ConfigError, DataError, Net
from netlayers.blob import Blob


def backward(layer, bottom, top, loss_weight=1.0, propagate=None):
    top[0].diff[...] = loss_weight
    layer.Backward_cpu(top, propagate or [True, False], bottom)
    return [b.diff.copy() for b in bottom]


# -- EuclideanLoss ------------------------------------------------------------------------------
def test_euclidean_value_and_both_gradients(rng):
    a, b = rng.standard_normal((4, 3, 2)), rng.standard_normal((4, 6))
    layer, bottom, top = make_layer({"type": "EuclideanLoss"}, [a, b])
    loss = layer.forward(bottom, top)
    expected = np.sum((a.reshape(4, 6) - b) ** 2) / (2 * 4)
    assert loss == pytest.approx(expected) and float(top[0].data) == pytest.approx(expected)
    da, db = backward(layer, bottom, top, loss_weight=3.0, propagate=[True, True])
    np.testing.assert_allclose(da, 3.0 * (a - b.reshape(a.shape)) / 4)
    np.testing.assert_allclose(db, -3.0 * (a.reshape(4, 6) - b) / 4)


def test_euclidean_gradients_and_contract(rng):
    bottoms = [rng.standard_normal((3, 5)), rng.standard_normal((3, 5))]
    report = assert_gradients({"type": "EuclideanLoss"}, bottoms)
    assert [b.name for b in report.blobs] == ["bottom[0]", "bottom[1]"]
    assert_contract({"type": "EuclideanLoss"}, bottoms)


def test_euclidean_shape_mismatch_is_a_config_error(rng):
    with pytest.raises(ConfigError, match="same size per item") as info:
        make_layer({"type": "EuclideanLoss", "name": "euc"}, [np.ones((3, 5)), np.ones((3, 4))])
    assert "layer 'euc'" in str(info.value)
    with pytest.raises(ConfigError, match="batch size"):
        make_layer({"type": "EuclideanLoss"}, [np.ones((3, 5)), np.ones((2, 5))])


# -- SigmoidCrossEntropyLoss --------------------------------------------------------------------
def sce_reference(x, t, ignore=None, mode="BATCH_SIZE"):
    p = 1 / (1 + np.exp(-x))
    per = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    valid = np.ones(x.shape, bool) if ignore is None else t != ignore
    norm = {"FULL": x.size, "VALID": valid.sum(), "BATCH_SIZE": x.shape[0], "NONE": 1}[mode]
    norm = max(norm, 1)
    grad = np.where(valid, p - t, 0) / norm
    return per[valid].sum() / norm, grad


@pytest.mark.parametrize(
    "loss_param,mode",
    [
        ({}, "BATCH_SIZE"),
        ({"normalization": "FULL"}, "FULL"),
        ({"normalization": "VALID"}, "VALID"),
        ({"normalization": "NONE"}, "NONE"),
        ({"normalization": "BATCH_SIZE"}, "BATCH_SIZE"),
        ({"normalize": True}, "VALID"),
        ({"normalize": False}, "BATCH_SIZE"),
    ],
)
@pytest.mark.parametrize("ignore", [None, -1])
def test_sigmoid_cross_entropy_normalization_and_ignore(loss_param, mode, ignore, rng):
    x = rng.standard_normal((4, 3, 2)) * 3
    t = rng.random((4, 3, 2))
    if ignore is not None:
        t[rng.random(t.shape) < 0.3] = ignore
        loss_param = dict(loss_param, ignore_label=ignore)
    layer, bottom, top = make_layer({"type": "SigmoidCrossEntropyLoss", "loss_param": loss_param}, [x, t])
    loss = layer.forward(bottom, top)
    expected_loss, expected_grad = sce_reference(x, t, ignore, mode)
    assert loss == pytest.approx(expected_loss, rel=1e-12)
    (dx, _) = backward(layer, bottom, top, loss_weight=2.0)
    np.testing.assert_allclose(dx, 2.0 * expected_grad, rtol=1e-12, atol=1e-15)


def test_sigmoid_cross_entropy_is_stable_for_large_scores():
    x = np.array([[-500.0, 500.0, -500.0, 500.0]])
    t = np.array([[0.0, 1.0, 1.0, 0.0]])
    _, (loss,) = run_layer({"type": "SigmoidCrossEntropyLoss"}, [x, t])
    assert float(loss) == pytest.approx(1000.0)


def test_sigmoid_cross_entropy_gradients(rng):
    x, t = rng.standard_normal((3, 4)), rng.random((3, 4))
    assert_contract({"type": "SigmoidCrossEntropyLoss"}, [x, t])
    t[0, 1] = 255
    assert_gradients({"type": "SigmoidCrossEntropyLoss", "loss_param": {"ignore_label": 255}}, [x, t])


def test_sigmoid_cross_entropy_targets_outside_0_1_are_data_errors(rng):
    t = np.array([[0.0, 1.0, 1.5]])
    with pytest.raises(DataError, match="target 1.5") as info:
        run_layer({"type": "SigmoidCrossEntropyLoss", "name": "sce"}, [np.zeros((1, 3)), t])
    assert "layer 'sce'" in str(info.value)
    t = np.array([[0.0, 1.0, -1.0]])  # the ignore label may lie outside [0, 1]
    run_layer({"type": "SigmoidCrossEntropyLoss", "loss_param": {"ignore_label": -1}}, [np.zeros((1, 3)), t])


def test_sigmoid_cross_entropy_count_mismatch():
    with pytest.raises(ConfigError, match="same count"):
        make_layer({"type": "SigmoidCrossEntropyLoss"}, [np.zeros((2, 3)), np.zeros((2, 4))])


# -- HingeLoss ----------------------------------------------------------------------------------
def hinge_reference(x, labels, norm):
    x = x.reshape(len(labels), -1)
    t = -np.ones_like(x)
    t[np.arange(len(labels)), labels] = 1
    margin = np.maximum(0, 1 - t * x)
    loss = (margin if norm == "L1" else margin**2).sum() / len(labels)
    grad = (-t * (margin > 0) if norm == "L1" else -2 * t * margin) / len(labels)
    return loss, grad


@pytest.mark.parametrize("norm", [None, "L1", "L2"])
def test_hinge_values_and_gradients(norm, rng):
    x = rng.standard_normal((5, 2, 3)) * 1.5
    labels = rng.integers(0, 6, 5)
    layer = {"type": "HingeLoss"}
    if norm:
        layer["hinge_loss_param"] = {"norm": norm}
    instance, bottom, top = make_layer(layer, [x, labels.astype(float)])
    loss = instance.forward(bottom, top)
    expected, grad = hinge_reference(x, labels, norm or "L1")
    assert loss == pytest.approx(expected, rel=1e-12)
    (dx, _) = backward(instance, bottom, top, loss_weight=0.5)
    np.testing.assert_allclose(dx.reshape(5, 6), 0.5 * grad, rtol=1e-12)
    report = assert_gradients(layer, [x, labels.astype(float)])
    assert report["bottom[0]"].checked >= 0.9 * x.size


def test_hinge_labels_out_of_range_are_data_errors():
    with pytest.raises(DataError, match="label 4 is outside the 4 classes") as info:
        run_layer({"type": "HingeLoss", "name": "hinge"}, [np.zeros((2, 4)), np.array([1.0, 4.0])])
    assert "layer 'hinge'" in str(info.value)


def test_hinge_needs_one_label_per_item():
    with pytest.raises(ConfigError, match="one label per item"):
        make_layer({"type": "HingeLoss"}, [np.zeros((2, 4)), np.zeros((2, 2))])


# -- SoftmaxWithLoss: normalization modes and ignore_label ---------------------------------------
def softmax_loss_reference(x, labels, axis, mode, ignore):
    x = np.moveaxis(x, axis, -1)
    p = np.exp(x - x.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    labels = labels.reshape(x.shape[:-1])
    valid = np.ones(labels.shape, bool) if ignore is None else labels != ignore
    safe = np.where(valid, labels, 0).astype(int)
    picked = np.take_along_axis(p, safe[..., None], -1)[..., 0]
    outer = int(np.prod(x.shape[:axis]))  # Caffe's BATCH_SIZE: the count before the axis
    norm = {"FULL": labels.size, "VALID": valid.sum(), "BATCH_SIZE": outer, "NONE": 1}[mode]
    norm = max(norm, 1)
    onehot = np.eye(p.shape[-1])[safe]
    grad = (p - onehot) * valid[..., None] / norm
    return -np.log(picked[valid]).sum() / norm, np.moveaxis(grad, -1, axis)


@pytest.mark.parametrize("mode", [None, "VALID", "BATCH_SIZE", "FULL", "NONE"])
@pytest.mark.parametrize("ignore", [None, 2])
@pytest.mark.parametrize("axis", [1, 2])
def test_softmax_with_loss_modes(mode, ignore, axis, rng):
    x = rng.standard_normal((3, 4, 5))
    label_shape = (3, 5) if axis == 1 else (3, 4)
    labels = rng.integers(0, x.shape[axis], label_shape).astype(float)
    loss_param = {}
    if mode:
        loss_param["normalization"] = mode
    if ignore is not None:
        loss_param["ignore_label"] = ignore
    layer = {"type": "SoftmaxWithLoss", "loss_param": loss_param, "softmax_param": {"axis": axis}}
    instance, bottom, top = make_layer(layer, [x, labels])
    loss = instance.forward(bottom, top)
    expected, grad = softmax_loss_reference(x, labels, axis, mode or "VALID", ignore)
    assert loss == pytest.approx(expected, rel=1e-12)
    (dx, _) = backward(instance, bottom, top, loss_weight=1.5)
    np.testing.assert_allclose(dx, 1.5 * grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("mode", ["VALID", "BATCH_SIZE", "FULL"])
@pytest.mark.parametrize("ignore", [None, 2])
@pytest.mark.parametrize("classes", [5, 1000])  # 1000: more classes than one exp block
def test_softmax_with_loss_on_float32_class_rows_takes_one_kernel_and_agrees(mode, ignore, classes, rng):
    """float32 scores (N, classes): the fused kernel (vmath.softmax_loss and its gradient) gives
    the float64 definition's loss, probabilities (the second top) and gradient to float32
    precision, with large scores too (shifted by the maximum)."""
    x = 3 * rng.standard_normal((6, classes))
    x[1] += 80.0  # exp would overflow unshifted
    labels = rng.integers(0, classes, 6).astype(float)
    labels[3] = 2
    loss_param = {"normalization": mode} if ignore is None else {"normalization": mode, "ignore_label": ignore}
    layer = {"type": "SoftmaxWithLoss", "loss_param": loss_param, "top": ["loss", "prob"]}
    instance, bottom, top = make_layer(layer, [x, labels], dtype=np.float32)
    loss = instance.forward(bottom, top)
    expected, grad = softmax_loss_reference(x, labels, 1, mode, ignore)
    assert loss == pytest.approx(expected, rel=1e-5)
    p = np.exp(x - x.max(1, keepdims=True))
    np.testing.assert_allclose(top[1].data, p / p.sum(1, keepdims=True), rtol=2e-5, atol=1e-9)
    (dx, _) = backward(instance, bottom, top, loss_weight=1.5)
    assert dx.dtype == np.float32
    np.testing.assert_allclose(dx, 1.5 * grad, rtol=2e-5, atol=1e-8)
    if ignore is not None:
        assert not dx[3].any()


@pytest.mark.parametrize("workers", [1, 2])
def test_softmax_with_loss_rows_shared_over_workers_agree_and_find_a_late_bad_label(workers, thread_count, rng):
    """Scores of 2 MiB and more are shared out by rows: the loss is the float64 definition's
    to float32 precision with any worker count, a row holding a NaN gives NaN probabilities
    (not the other rows), and a bad label in the last worker's rows is still named."""
    thread_count(workers)
    rows, classes = 64, 9000  # 2.2 MiB of float32 scores
    x = 4 * rng.standard_normal((rows, classes))
    labels = rng.integers(0, classes, rows).astype(float)
    layer = {"type": "SoftmaxWithLoss", "top": ["loss", "prob"]}
    instance, bottom, top = make_layer(layer, [x, labels], dtype=np.float32)
    loss = instance.forward(bottom, top)
    expected, _ = softmax_loss_reference(x, labels, 1, "VALID", None)
    assert loss == pytest.approx(expected, rel=1e-5)
    bottom[0].data[5, 17] = np.nan
    instance.forward(bottom, top)
    assert np.isnan(top[1].data[5]).all() and np.isfinite(np.delete(top[1].data, 5, axis=0)).all()
    bottom[1].data[rows - 2] = classes + 3
    with pytest.raises(DataError, match=str(classes + 3)):
        instance.forward(bottom, top)


@pytest.mark.parametrize("mode", ["VALID", "BATCH_SIZE", "FULL"])
@pytest.mark.parametrize("ignore", [None, 2])
@pytest.mark.parametrize("axis", [1, 2])
def test_softmax_with_loss_on_float32_positions_takes_the_kernels_and_agrees(mode, ignore, axis, rng):
    """float32 scores with positions after the classes (a segmentation net's (N, C, H, W), or a
    softmax over axis 2): the softmax kernel, then vmath.softmax_loss_positions and its
    gradient give the float64 definition's loss, probabilities and gradient to float32
    precision; an ignored position's gradient is zero for every class."""
    x = 3 * rng.standard_normal((2, 5, 7, 6))
    x[1, :, 3] += 80.0  # exp would overflow unshifted
    label_shape = tuple(n for i, n in enumerate(x.shape) if i != axis)
    labels = rng.integers(0, x.shape[axis], label_shape).astype(float)
    labels.reshape(-1)[::7] = 2
    loss_param = {"normalization": mode} if ignore is None else {"normalization": mode, "ignore_label": ignore}
    layer = {
        "type": "SoftmaxWithLoss",
        "loss_param": loss_param,
        "top": ["loss", "prob"],
        "softmax_param": {"axis": axis},
    }
    instance, bottom, top = make_layer(layer, [x, labels], dtype=np.float32)
    loss = instance.forward(bottom, top)
    expected, grad = softmax_loss_reference(x, labels, axis, mode, ignore)
    assert loss == pytest.approx(expected, rel=1e-5)
    p = np.exp(x - x.max(axis, keepdims=True))
    np.testing.assert_allclose(top[1].data, p / p.sum(axis, keepdims=True), rtol=2e-5, atol=1e-9)
    (dx, _) = backward(instance, bottom, top, loss_weight=1.5)
    assert dx.dtype == np.float32
    np.testing.assert_allclose(dx, 1.5 * grad, rtol=2e-5, atol=2e-7)  # p - 1 near p = 1: p's float32 ulp
    if ignore is not None:
        assert not np.moveaxis(dx, axis, -1)[labels == ignore].any()


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("batch", [1, 3])
def test_softmax_with_loss_positions_shared_over_workers_agree_and_find_a_late_bad_label(
    workers, batch, thread_count, rng
):
    """Per-position scores of 2 MiB and more are shared out (by images, or by positions for a
    batch smaller than the workers): the loss and gradient are the float64 definition's with any
    worker count, and a bad label in the last position is still named."""
    thread_count(workers)
    x = 2 * rng.standard_normal((batch, 21, 64, 160 // batch))
    labels = rng.integers(0, 21, (batch, 1, 64, 160 // batch)).astype(float)
    layer = {"type": "SoftmaxWithLoss", "loss_param": {"ignore_label": 4}}
    instance, bottom, top = make_layer(layer, [x, labels], dtype=np.float32)
    loss = instance.forward(bottom, top)
    expected, grad = softmax_loss_reference(x, labels, 1, "VALID", 4)
    assert loss == pytest.approx(expected, rel=1e-5)
    (dx, _) = backward(instance, bottom, top, loss_weight=1.0)
    np.testing.assert_allclose(dx, grad, rtol=2e-5, atol=1e-9)
    assert not dx.transpose(0, 2, 3, 1)[labels[:, 0] == 4].any()
    bottom[1].data[-1, 0, -1, -1] = 21
    with pytest.raises(DataError, match="label 21 is outside the 21 classes"):
        instance.forward(bottom, top)
    bottom[1].data[-1, 0, -1, -1] = 0.5
    with pytest.raises(DataError, match="label 0.5 is not a whole number"):
        instance.forward(bottom, top)


@pytest.mark.parametrize("classes_last", [True, False])
def test_softmax_with_loss_bounds_a_prediction_at_flt_min_in_float32_and_dbl_min_in_float64(classes_last):
    """Caffe's log(max(p, FLT_MIN)) in float32 (a label 120 below the largest score adds
    -log(FLT_MIN) = 87.34, not 120); float64 keeps the exact cross-entropy up to DBL_MIN."""
    scores = np.array([[0.0, -120.0, 1.0], [2.0, 0.0, 0.0]])  # labels 1, 0
    labels = np.array([1.0, 0.0])
    if not classes_last:  # classes on axis 1 of (N, C, 1): the positions' kernels in float32
        scores = scores[:, :, None]
        labels = labels[:, None]
    exact = [121.0 + np.log1p(np.exp(-1.0) + np.exp(-121.0)), np.log(1 + 2 * np.exp(-2.0))]
    _, (loss64,) = run_layer({"type": "SoftmaxWithLoss"}, [scores, labels])
    _, (loss32,) = run_layer({"type": "SoftmaxWithLoss"}, [scores, labels], dtype=np.float32)
    assert float(loss64) == pytest.approx(sum(exact) / 2, rel=1e-12)
    bound = -np.log(np.finfo(np.float32).tiny)
    assert bound == pytest.approx(87.3365, abs=1e-4)
    assert float(loss32) == pytest.approx((bound + exact[1]) / 2, rel=1e-6)


def test_softmax_with_loss_all_ignored_gives_zero_not_nan():
    x = np.zeros((2, 3))
    _, (loss,) = run_layer({"type": "SoftmaxWithLoss", "loss_param": {"ignore_label": 1}}, [x, np.ones(2)])
    assert float(loss) == 0.0


@pytest.mark.parametrize("axis", [None, -1, 0])
def test_softmax_values_and_gradients(axis, rng):
    x = 3 * rng.standard_normal((3, 4, 2))
    layer = {"type": "Softmax"} if axis is None else {"type": "Softmax", "softmax_param": {"axis": axis}}
    _, (y,) = run_layer(layer, [x])
    k = 1 if axis is None else axis
    e = np.exp(x - x.max(axis=k, keepdims=True))
    np.testing.assert_allclose(y, e / e.sum(axis=k, keepdims=True), rtol=1e-12)
    report = assert_gradients(layer, [x])
    assert report["bottom[0]"].checked == x.size


@pytest.mark.parametrize("shape,axis", [((3, 21, 700), 1), ((1, 4, 1100), 1), ((64, 1000), 1), ((5, 6, 7), 2)])
@pytest.mark.parametrize("workers", [1, 2])
def test_softmax_backward_kernel_in_float32_and_in_place(shape, axis, workers, thread_count, rng, monkeypatch):
    """The backward kernel (vmath.softmax_backward; sums in float64), classes last or positions
    after them in blocks of 512 (a batch of one: shared out by positions), on 1 or 2 workers:
    dx = y (dy - sum of dy y) as float64 computes it from the same float32 y and dy, to a few
    ulps of the terms; in place (dx is dy) the same bits."""
    from netlayers import parallel

    thread_count(workers)
    monkeypatch.setattr(parallel, "SPLIT_MIN_BYTES", 1)
    x = (3 * rng.standard_normal(shape)).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    layer, bottom, top = make_layer({"type": "Softmax", "softmax_param": {"axis": axis}}, [x], dtype=np.float32)
    layer.forward(bottom, top)
    top[0].diff[...] = dy
    layer.Backward_cpu(top, [True], bottom)
    y = top[0].data.astype(np.float64)
    want = y * (dy - (dy * y).sum(axis=axis, keepdims=True))
    scale = y * (np.abs(dy) + np.abs(dy * y).sum(axis=axis, keepdims=True))  # the terms' size
    assert np.all(np.abs(bottom[0].diff - want) <= 4 * np.finfo(np.float32).eps * scale + 1e-30)
    in_place = Blob(shape, np.float32)
    in_place.data[...], in_place.diff[...] = top[0].data, dy
    layer.Backward_cpu([in_place], [True], [in_place])
    np.testing.assert_array_equal(in_place.diff, bottom[0].diff)


def test_softmax_with_loss_gradients(rng):
    labels = rng.integers(0, 4, (3, 2)).astype(float)
    labels[0, 0] = -1
    layer = {"type": "SoftmaxWithLoss", "loss_param": {"ignore_label": -1, "normalization": "FULL"}}
    assert_gradients(layer, [rng.standard_normal((3, 4, 2)), labels])


# -- Accuracy -----------------------------------------------------------------------------------
def accuracy_reference(scores, labels, top_k, axis, ignore):
    scores = np.moveaxis(scores, axis, -1)
    labels = labels.reshape(scores.shape[:-1]).astype(int)
    valid = np.ones(labels.shape, bool) if ignore is None else labels != ignore
    right, per_class_right = 0, np.zeros(scores.shape[-1])
    per_class_count = np.zeros(scores.shape[-1])
    for index in zip(*np.nonzero(valid)):
        row, label = scores[index], labels[index]
        better = sum(1 for c in range(len(row)) if c != label and row[c] >= row[label])
        per_class_count[label] += 1
        if better < top_k:
            right += 1
            per_class_right[label] += 1
    count = valid.sum()
    per_class = np.divide(
        per_class_right, per_class_count, out=np.zeros_like(per_class_right), where=per_class_count > 0
    )
    return (right / count if count else 0.0), per_class


@pytest.mark.parametrize("top_k", [1, 2, 4])
@pytest.mark.parametrize("axis", [1, -1])
@pytest.mark.parametrize("ignore", [None, 0])
def test_accuracy_values(top_k, axis, ignore, rng):
    scores = rng.integers(0, 4, (6, 5, 5)).astype(float)  # small integers: many ties
    classes = scores.shape[axis]
    labels = rng.integers(0, classes, (6, 5)).astype(float)
    param = {"top_k": top_k, "axis": axis}
    if ignore is not None:
        param["ignore_label"] = ignore
    layer = {"type": "Accuracy", "accuracy_param": param, "top": ["acc", "per_class"]}
    _, (acc, per_class) = run_layer(layer, [scores, labels])
    expected, expected_per_class = accuracy_reference(scores, labels, top_k, axis, ignore)
    assert float(acc) == pytest.approx(expected)
    np.testing.assert_allclose(per_class, expected_per_class)


def test_accuracy_ties_count_against_and_defaults():
    scores = np.array([[1.0, 3.0, 3.0], [5.0, 1.0, 0.0]])
    layer, bottom, top = make_layer({"type": "Accuracy"}, [scores, np.array([1.0, 0.0])])
    assert (layer.p.top_k, layer.p.axis, layer.p.ignore_label) == (1, 1, None)
    assert layer.forward(bottom, top) == 0.0  # not a loss: nothing is weighted
    assert float(top[0].data) == 0.5  # the tie at row 0 counts as wrong
    assert layer.is_loss is False and layer.has_backward is False


def test_accuracy_all_ignored_is_zero():
    _, (acc,) = run_layer({"type": "Accuracy", "accuracy_param": {"ignore_label": 1}}, [np.zeros((2, 3)), np.ones(2)])
    assert float(acc) == 0.0


def test_accuracy_in_a_net_takes_no_gradient():
    net = Net(
        {
            "name": "n",
            "force_backward": True,
            "layers": [
                {
                    "name": "in",
                    "type": "Input",
                    "top": ["x", "y"],
                    "input_param": {"shape": [{"dim": [4, 3]}, {"dim": [4]}]},
                },
                {"name": "acc", "type": "Accuracy", "bottom": ["x", "y"], "top": ["acc"]},
            ],
        },
        seed=0,
    )
    net.forward(x=np.eye(4, 3), y=np.array([0, 1, 2, 0]))
    assert float(net.blobs["acc"].data) == 0.75
    assert net.bottom_need_backward[-1] == [False, False]
    net.backward()


def test_accuracy_errors():
    with pytest.raises(DataError, match="label 3 is outside the 3 classes") as info:
        run_layer({"type": "Accuracy", "name": "acc"}, [np.zeros((2, 3)), np.array([0.0, 3.0])])
    assert "layer 'acc'" in str(info.value)
    with pytest.raises(ConfigError, match="top_k") as info:
        make_layer({"type": "Accuracy", "name": "acc", "accuracy_param": {"top_k": 4}}, [np.zeros((2, 3)), np.zeros(2)])
    assert "layer 'acc'" in str(info.value)
    with pytest.raises(ConfigError, match="expected 2 labels"):
        make_layer({"type": "Accuracy"}, [np.zeros((2, 3)), np.zeros(3)])


def test_labels_of_classification_losses_are_checked(rng):
    with pytest.raises(DataError, match="label -2"):
        run_layer({"type": "SoftmaxWithLoss"}, [np.zeros((2, 3)), np.array([0.0, -2.0])])
    with pytest.raises(DataError, match="label 0.5"):
        run_layer({"type": "Accuracy"}, [np.zeros((2, 3)), np.array([0.0, 0.5])])


@pytest.mark.parametrize("layer", [{"type": "SoftmaxWithLoss"}, {"type": "Accuracy"}, {"type": "HingeLoss"}])
@pytest.mark.parametrize(
    "labels,message",
    [
        ([0.0, 0.5], r"label 0.5 is not a whole number \(expected a class index in \[0, 2\]\)"),
        ([7.0, 0.5], r"label 0.5 is not a whole number"),  # the fraction, not the 7
        ([0.0, np.nan], r"label nan is not a whole number"),
        ([0.0, 3.0], r"label 3 is outside the 3 classes \[0, 2\]"),
        ([-1.0, 0.0], r"label -1 is outside the 3 classes"),
    ],
)
def test_bad_labels_are_named_as_plain_numbers(layer, labels, message):
    for dtype in (np.float64, np.float32):
        with pytest.raises(DataError, match=f"^layer 'loss': {message}") as info:
            run_layer({**layer, "name": "loss"}, [np.zeros((2, 3)), np.array(labels)], dtype=dtype)
        assert "np." not in str(info.value)


def test_softmax_in_place_gives_the_same_values_and_gradients(rng):
    def net(top):
        return Net(
            {
                "name": "s",
                "force_backward": True,
                "layers": [
                    {
                        "name": "data",
                        "type": "Input",
                        "top": ["x", "t"],
                        "input_param": {"shape": [{"dim": [3, 4]}, {"dim": [3, 4]}]},
                    },
                    {"name": "prob", "type": "Softmax", "bottom": "x", "top": top},
                    {"name": "loss", "type": "EuclideanLoss", "bottom": [top, "t"], "top": "loss"},
                ],
            },
            dtype=np.float64,
        )

    x, t = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    results = []
    for top in ("p", "x"):
        n = net(top)
        n.forward(x=x, t=t)
        n.backward()
        # the gradient reaches the input blob as set; with top 'x' the name 'x' then means the
        # Softmax's output (an Input keeps its values, so the layer gets a blob of its own)
        results.append((n.loss, n.blobs[top].data.copy(), n.source_blobs["x"].diff.copy()))
    (loss_a, y_a, dx_a), (loss_b, y_b, dx_b) = results
    assert loss_a == pytest.approx(loss_b, rel=1e-12)
    np.testing.assert_allclose(y_b, y_a, rtol=1e-12)
    np.testing.assert_allclose(dx_b, dx_a, rtol=1e-10, atol=1e-14)
