"""Caffe's ContrastiveLoss, InfogainLoss, MultinomialLogisticLoss, Clip, Swish, Filter,
BatchReindex and Parameter: values and gradients against numpy references written here from
Caffe's formulas, Caffe's edge cases, and their errors (one line, located)."""

import struct

import numpy as np
import pytest
from layer_harness import make_layer, run_layer

from netlayers import ConfigError, DataError, Net
from netlayers.gradcheck import build_layer, check_net


def backward(layer, bottom, top, propagate, top_diffs=None):
    """Backward with top diffs given (default: the loss weight the forward left in top[0])."""
    for blob, diff in zip(top, top_diffs or []):
        blob.diff[...] = diff
    layer.Backward_cpu(top, propagate, bottom)
    return [b.diff.copy() for b, need in zip(bottom, propagate) if need]


# -- ContrastiveLoss ------------------------------------------------------------------------------
def contrastive_reference(a, b, y, margin, legacy):
    """Loss and dE/da of Hadsell et al.'s loss, item by item (Caffe's formulas)."""
    n = len(a)
    loss, grad = 0.0, np.zeros_like(a)
    for i in range(n):
        diff = a[i] - b[i]
        d2 = float(diff @ diff)
        d = np.sqrt(d2)
        if int(y[i]) != 0:
            loss += d2
            grad[i] = diff / n
        elif legacy:
            loss += max(margin - d2, 0.0)
            grad[i] = -diff / n if margin - d2 > 0 else 0.0
        else:
            loss += max(margin - d, 0.0) ** 2
            grad[i] = -(margin - d) / d * diff / n if margin - d > 0 else 0.0
    return loss / (2 * n), grad


@pytest.mark.parametrize("legacy", [False, True])
def test_contrastive_loss_and_gradients_match_the_reference(legacy, rng):
    a, b = rng.standard_normal((8, 3)), rng.standard_normal((8, 3))
    y = np.array([0, 1, 0, 2, -1, 0.5, 0, 1])  # int(y) != 0: 1, 2 and -1 similar; 0.5 is not
    margin = 9.0 if legacy else 3.0
    layer_dict = {"type": "ContrastiveLoss", "contrastive_loss_param": {"margin": margin, "legacy_version": legacy}}
    layer, bottom, top = make_layer(layer_dict, [a, b, y])
    loss = layer.forward(bottom, top)
    want_loss, want_grad = contrastive_reference(a, b, y, margin, legacy)
    assert loss == pytest.approx(want_loss, rel=1e-12)
    da, db = backward(layer, bottom, top, [True, True, False], [2.0])
    np.testing.assert_allclose(da, 2.0 * want_grad, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(db, -2.0 * want_grad, rtol=1e-12, atol=1e-15)
    dissimilar_active = [i for i in range(8) if int(y[i]) == 0 and np.any(want_grad[i] != 0)]
    assert dissimilar_active and len(dissimilar_active) < 4  # both branches of max(., 0) are met


def test_contrastive_default_margin_is_1_and_caffe_4d_shapes_work(rng):
    a, b = rng.standard_normal((4, 2, 1, 1)) * 0.3, rng.standard_normal((4, 2, 1, 1)) * 0.3
    y = np.zeros((4, 1, 1, 1))
    _, (loss,) = run_layer({"type": "ContrastiveLoss"}, [a, b, y])
    want, _ = contrastive_reference(a.reshape(4, 2), b.reshape(4, 2), y.reshape(4), 1.0, False)
    assert float(loss) == pytest.approx(want, rel=1e-12) and want > 0


def test_contrastive_gradient_at_zero_distance_is_zero_not_nan(rng):
    a = rng.standard_normal((3, 2))
    layer, bottom, top = make_layer({"type": "ContrastiveLoss"}, [a, a.copy(), np.zeros(3)])
    assert layer.forward(bottom, top) == pytest.approx(0.5)  # max(1 - 0, 0)^2 / 2 per item, / 3 items * 3
    (da,) = backward(layer, bottom, top, [True, False, False], [1.0])
    np.testing.assert_array_equal(da, 0.0)


def test_contrastive_refuses_mismatched_features_and_a_label_gradient(rng):
    with pytest.raises(ConfigError, match="same size per item") as info:
        make_layer({"type": "ContrastiveLoss", "name": "c"}, [np.ones((3, 2)), np.ones((3, 4)), np.ones(3)])
    assert "layer 'c'" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="one similarity label per pair"):
        make_layer({"type": "ContrastiveLoss"}, [np.ones((3, 2)), np.ones((3, 2)), np.ones((3, 2))])
    layer, bottom, top = make_layer({"type": "ContrastiveLoss"}, [np.ones((3, 2)), np.ones((3, 2)), np.ones(3)])
    assert [layer.allow_force_backward(i) for i in range(3)] == [True, True, False]


# -- MultinomialLogisticLoss ----------------------------------------------------------------------
def test_multinomial_logistic_loss_matches_the_reference_and_keeps_caffes_floor():
    p = np.array([[0.7, 0.2, 0.1], [0.0, 0.5, 0.5], [0.3, 0.3, 0.4], [0.25, 0.25, 0.5]])
    labels = np.array([0, 0, 2, 1])  # item 1 gives p = 0: the floor 1e-20
    layer, bottom, top = make_layer({"type": "MultinomialLogisticLoss"}, [p, labels])
    loss = layer.forward(bottom, top)
    picked = np.maximum(p[np.arange(4), labels], 1e-20)
    assert loss == pytest.approx(-np.mean(np.log(picked)), rel=1e-12)
    (dp,) = backward(layer, bottom, top, [True, False], [3.0])
    want = np.zeros_like(p)
    want[np.arange(4), labels] = -3.0 / (4 * picked)
    np.testing.assert_allclose(dp, want, rtol=1e-12)
    assert dp[1, 0] == pytest.approx(-3.0 / 4 * 1e20)  # Caffe's steep gradient below the floor


def test_multinomial_logistic_loss_on_softmax_equals_softmax_with_loss(rng):
    scores, labels = rng.standard_normal((5, 4)), rng.integers(0, 4, 5).astype(float)
    prob = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    _, (ours,) = run_layer({"type": "MultinomialLogisticLoss"}, [prob, labels])
    _, (softmax_loss,) = run_layer({"type": "SoftmaxWithLoss"}, [scores, labels])
    assert float(ours) == pytest.approx(float(softmax_loss), rel=1e-12)


def test_multinomial_logistic_loss_checks_labels():
    with pytest.raises(DataError, match="outside the 3 classes"):
        run_layer({"type": "MultinomialLogisticLoss"}, [np.full((2, 3), 1 / 3), np.array([0, 3])])
    with pytest.raises(ConfigError, match="one label per item"):
        make_layer({"type": "MultinomialLogisticLoss"}, [np.full((2, 3), 1 / 3), np.zeros((2, 2))])


# -- InfogainLoss -----------------------------------------------------------------------------------
def infogain_reference(x, labels, H, axis=1, ignore=None, mode="VALID"):
    """Caffe 1.0's InfogainLoss by loops: softmax along ``axis``, then -sum H[l] log p."""
    moved = np.moveaxis(x, axis, -1)
    classes = moved.shape[-1]
    scores = moved.reshape(-1, classes)
    flat_labels = labels.reshape(-1).astype(int)
    p = np.exp(scores - scores.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    loss, grad, count = 0.0, np.zeros_like(p), 0
    for i, label in enumerate(flat_labels):
        if ignore is not None and label == ignore:
            continue
        loss -= sum(H[label, k] * np.log(max(p[i, k], 1e-20)) for k in range(classes))
        grad[i] = p[i] * H[label].sum() - H[label]
        count += 1
    outer = int(np.prod(x.shape[:axis]))
    norm = {"VALID": count, "FULL": len(flat_labels), "BATCH_SIZE": outer, "NONE": 1}[mode]
    norm = max(norm, 1)
    grad = np.moveaxis(grad.reshape(moved.shape), -1, axis) / norm
    return loss / norm, grad, np.moveaxis(p.reshape(moved.shape), -1, axis)


def test_infogain_with_h_as_a_bottom_matches_the_reference(rng):
    x, labels, H = rng.standard_normal((5, 4)), rng.integers(0, 4, 5).astype(float), rng.random((4, 4))
    layer, bottom, top = make_layer({"type": "InfogainLoss", "top": ["loss", "prob"]}, [x, labels, H])
    loss = layer.forward(bottom, top)
    want_loss, want_grad, want_prob = infogain_reference(x, labels, H)
    assert loss == pytest.approx(want_loss, rel=1e-12)
    np.testing.assert_allclose(top[1].data, want_prob, rtol=1e-12)
    (dx,) = backward(layer, bottom, top, [True, False, False], [0.5, np.zeros((5, 4))])
    np.testing.assert_allclose(dx, 0.5 * want_grad, rtol=1e-10, atol=1e-14)
    assert [layer.allow_force_backward(i) for i in range(3)] == [True, False, False]


@pytest.mark.parametrize("mode", ["VALID", "FULL", "BATCH_SIZE", "NONE"])
def test_infogain_along_axis_2_with_ignore_label_and_each_normalization(mode, rng):
    x, labels, H = rng.standard_normal((2, 3, 4)), rng.integers(0, 4, (2, 3)).astype(float), rng.random((4, 4))
    labels[0, 1] = 1  # at least one prediction ignored
    params = {"infogain_loss_param": {"axis": 2}, "loss_param": {"ignore_label": 1, "normalization": mode}}
    layer, bottom, top = make_layer({"type": "InfogainLoss", **params}, [x, labels, H])
    loss = layer.forward(bottom, top)
    want_loss, want_grad, _ = infogain_reference(x, labels, H, axis=2, ignore=1, mode=mode)
    assert loss == pytest.approx(want_loss, rel=1e-12)
    (dx,) = backward(layer, bottom, top, [True, False, False], [1.0])
    np.testing.assert_allclose(dx, want_grad, rtol=1e-10, atol=1e-14)
    assert np.all(dx[0, 1] == 0)


def test_infogain_with_the_identity_is_softmax_with_loss(rng):
    x, labels = rng.standard_normal((6, 5)), rng.integers(0, 5, 6).astype(float)
    _, (ours,) = run_layer({"type": "InfogainLoss"}, [x, labels, np.eye(5)])
    _, (softmax_loss,) = run_layer({"type": "SoftmaxWithLoss"}, [x, labels])
    assert float(ours) == pytest.approx(float(softmax_loss), rel=1e-12)


def varint(value):
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def blob_proto(matrix, legacy_dims):
    """A BlobProto's bytes, from the protobuf spec: shape as num/channels/height/width
    (fields 1-4, varints) or as BlobShape (field 7, packed int64 dims in its field 1); data as
    packed floats (field 5, wire type 2)."""
    rows, cols = matrix.shape
    if legacy_dims:
        header = b"".join(varint(number << 3) + varint(dim) for number, dim in zip((1, 2, 3, 4), (1, 1, rows, cols)))
    else:
        dims = varint(rows) + varint(cols)
        shape = varint(1 << 3 | 2) + varint(len(dims)) + dims
        header = varint(7 << 3 | 2) + varint(len(shape)) + shape
    data = struct.pack(f"<{matrix.size}f", *matrix.reshape(-1))
    return header + varint(5 << 3 | 2) + varint(len(data)) + data


def infogain_net_yaml(source):
    return f"""
name: infogain
force_backward: true
layers:
  - {{name: data, type: Input, top: [x, label], input_param: {{shape: [{{dim: [4, 3]}}, {{dim: [4]}}]}}}}
  - name: loss
    type: InfogainLoss
    bottom: [x, label]
    top: loss
    infogain_loss_param: {{source: {source}}}
"""


@pytest.mark.parametrize("legacy_dims", [True, False])
def test_infogain_reads_h_from_a_binaryproto_next_to_the_config(legacy_dims, tmp_path, rng):
    H = rng.random((3, 3)).astype(np.float32)
    (tmp_path / "H.binaryproto").write_bytes(blob_proto(H, legacy_dims))
    config = tmp_path / "net.yaml"
    config.write_text(infogain_net_yaml("H.binaryproto"))
    net = Net(str(config), dtype=np.float64)
    x, labels = rng.standard_normal((4, 3)), np.array([0, 2, 1, 2.0])
    out = net.forward(x=x, label=labels)
    want_loss, want_grad, _ = infogain_reference(x, labels, H.astype(np.float64))
    assert float(out["loss"]) == pytest.approx(want_loss, rel=1e-12)
    net.backward()
    np.testing.assert_allclose(net.blobs["x"].diff, want_grad, rtol=1e-10, atol=1e-14)


def test_infogain_h_of_the_wrong_size_a_bad_file_and_no_h_are_one_line_errors(tmp_path, rng):
    config = tmp_path / "net.yaml"
    (tmp_path / "H4.binaryproto").write_bytes(blob_proto(np.eye(4, dtype=np.float32), False))
    (tmp_path / "junk.binaryproto").write_bytes(b"\xff\xff\xff")
    for source, error, message in [
        ("H4.binaryproto", ConfigError, "must be 3 x 3"),
        ("junk.binaryproto", DataError, "not a BlobProto"),
        ("missing.binaryproto", DataError, "cannot read the infogain matrix"),
    ]:
        config.write_text(infogain_net_yaml(source))
        with pytest.raises(error, match=message) as info:
            Net(str(config))
        text = str(info.value)
        assert "\n" not in text and "layer 'loss'" in text, text
        if error is DataError:
            assert source in text and "infogain_loss_param.source" in text
    with pytest.raises(ConfigError, match="third bottom") as info:
        make_layer({"type": "InfogainLoss", "name": "ig"}, [np.zeros((2, 3)), np.zeros(2)])
    assert "infogain_loss_param.source" in str(info.value)
    with pytest.raises(ConfigError, match="use normalization"):
        make_layer(
            {"type": "InfogainLoss", "loss_param": {"normalize": True}}, [np.zeros((2, 3)), np.zeros(2), np.eye(3)]
        )


# -- Clip, Swish ---------------------------------------------------------------------------------
@pytest.mark.parametrize("in_place", [False, True])
def test_clip_passes_the_gradient_inside_the_bounds_both_included(in_place):
    x = np.array([-2.0, -0.5, -0.2, 0.0, 0.8, 0.9, 3.0])
    layer, bottom, top = build_layer(
        {"type": "Clip", "name": "clip", "bottom": "x", "top": "x", "clip_param": {"min": -0.5, "max": 0.8}}, [x.shape]
    )
    bottom[0].data[...] = x
    if in_place:
        top = bottom
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data, np.clip(x, -0.5, 0.8))
    dy = np.arange(1.0, 8.0)
    (dx,) = backward(layer, bottom, top, [True], [dy])
    np.testing.assert_array_equal(dx, dy * ((x >= -0.5) & (x <= 0.8)))
    assert dx[1] == 2.0 and dx[4] == 5.0  # at min and at max: passed, as Caffe's >= and <=


def test_clip_needs_both_bounds_in_order():
    with pytest.raises(ConfigError, match="min") as info:
        make_layer({"type": "Clip", "clip_param": {"max": 1}}, [np.zeros(3)])
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="at least min") as info:
        make_layer({"type": "Clip", "clip_param": {"min": 1, "max": 0}}, [np.zeros(3)])
    assert "clip_param.max" in str(info.value)


@pytest.mark.parametrize("beta", [1.0, 0.5, -2.0])
def test_swish_value_and_gradient_match_the_reference(beta, rng):
    x = rng.standard_normal((3, 4)) * 3
    params = {} if beta == 1.0 else {"swish_param": {"beta": beta}}
    layer, bottom, top = make_layer({"type": "Swish", **params}, [x])
    layer.forward(bottom, top)
    s = 1 / (1 + np.exp(-beta * x))
    np.testing.assert_allclose(top[0].data, x * s, rtol=1e-13, atol=1e-15)
    dy = rng.standard_normal(x.shape)
    (dx,) = backward(layer, bottom, top, [True], [dy])
    np.testing.assert_allclose(dx, dy * (s + beta * x * s * (1 - s)), rtol=1e-12, atol=1e-14)


# -- Filter ---------------------------------------------------------------------------------------
def test_filter_keeps_the_selected_rows_and_scatters_their_gradients(rng):
    x, z = rng.standard_normal((5, 2, 3)), rng.standard_normal((5, 4))
    selector = np.array([0.0, 1.0, 0.0, -0.5, 2.0]).reshape(5, 1, 1)  # any non-zero selects
    layer, bottom, top = make_layer({"type": "Filter", "top": ["fx", "fz"]}, [x, z, selector])
    assert top[0].shape == (5, 2, 3)  # set-up: the whole batch, as Caffe's first Reshape
    layer.forward(bottom, top)
    rows = [1, 3, 4]
    np.testing.assert_array_equal(top[0].data, x[rows])
    np.testing.assert_array_equal(top[1].data, z[rows])
    dys = [rng.standard_normal((3, 2, 3)), rng.standard_normal((3, 4))]
    dx, dz = backward(layer, bottom, top, [True, True, False], dys)
    want_dx, want_dz = np.zeros_like(x), np.zeros_like(z)
    want_dx[rows], want_dz[rows] = dys
    np.testing.assert_array_equal(dx, want_dx)
    np.testing.assert_array_equal(dz, want_dz)
    assert [layer.allow_force_backward(i) for i in range(3)] == [True, True, False]


def test_filter_selecting_nothing_gives_empty_tops_and_a_zero_gradient(rng):
    x = rng.standard_normal((4, 3))
    layer, bottom, top = make_layer({"type": "Filter"}, [x, np.zeros(4)])
    layer.forward(bottom, top)
    assert top[0].shape == (0, 3)
    bottom[0].diff[...] = 7.0
    (dx,) = backward(layer, bottom, top, [True, False])
    np.testing.assert_array_equal(dx, 0.0)


def test_filter_in_a_net_follows_the_selector_at_every_forward(rng):
    layers = [
        {
            "name": "data",
            "type": "Input",
            "top": ["x", "keep"],
            "input_param": {"shape": [{"dim": [4, 3]}, {"dim": [4]}]},
        },
        {"name": "filter", "type": "Filter", "bottom": ["x", "keep"], "top": "kept"},
        {"name": "sum", "type": "Reduction", "bottom": "kept", "top": "total", "loss_weight": 1},
    ]
    net = Net({"name": "filter", "force_backward": True, "layers": layers}, dtype=np.float64)
    x = rng.standard_normal((4, 3))
    for keep in ([1, 0, 1, 1], [0, 1, 0, 0]):
        out = net.forward(x=x, keep=np.array(keep, float))
        assert net.blobs["kept"].shape == (sum(keep), 3)
        assert float(out["total"]) == pytest.approx(x[np.array(keep) != 0].sum())
        net.backward()
        np.testing.assert_array_equal(net.blobs["x"].diff, np.repeat(np.array(keep, float)[:, None], 3, axis=1))


def test_filter_shape_errors_are_one_line():
    for bottoms, top, message in [
        ([np.zeros((4, 3)), np.zeros((4, 2))], ["t0"], "selector"),
        ([np.zeros((4, 3)), np.zeros(3)], ["t0"], "selector's 3 items"),
        ([np.zeros((4, 3)), np.zeros(4)], ["t0", "t1"], "one top per bottom"),
    ]:
        with pytest.raises(ConfigError, match=message) as info:
            make_layer({"type": "Filter", "name": "f", "top": top}, bottoms)
        assert "layer 'f'" in str(info.value) and "\n" not in str(info.value)


# -- BatchReindex ---------------------------------------------------------------------------------
def test_batch_reindex_picks_items_and_adds_the_gradients_of_repeated_ones(rng):
    x = rng.standard_normal((4, 2, 3))
    index = np.array([2, 0, 2, 2, 3])  # item 1 never picked, item 2 three times
    layer, bottom, top = make_layer({"type": "BatchReindex"}, [x, index])
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data, x[index])
    dy = rng.standard_normal((5, 2, 3))
    (dx,) = backward(layer, bottom, top, [True, False], [dy])
    want = np.zeros_like(x)
    for k, n in enumerate(index):
        want[n] += dy[k]
    np.testing.assert_allclose(dx, want, rtol=1e-15)
    np.testing.assert_array_equal(dx[1], 0.0)
    assert [layer.allow_force_backward(i) for i in range(2)] == [True, False]


def test_batch_reindex_refuses_bad_indices():
    for index, message in [([0, 4], "index 4 is not an item"), ([-1], "index -1"), ([0.5], "index 0.5")]:
        with pytest.raises(DataError, match=message) as info:
            run_layer({"type": "BatchReindex", "name": "r"}, [np.zeros((4, 2)), np.array(index, float)])
        assert "layer 'r'" in str(info.value) and "[0, 3]" in str(info.value)
    with pytest.raises(ConfigError, match="one axis"):
        make_layer({"type": "BatchReindex"}, [np.zeros((4, 2)), np.zeros((2, 1))])


# -- Parameter ------------------------------------------------------------------------------------
def parameter_net():
    layers = [
        {"name": "data", "type": "Input", "top": ["x", "target"], "input_param": {"shape": [{"dim": [2, 3]}]}},
        {"name": "bias", "type": "Parameter", "top": "b", "parameter_param": {"shape": {"dim": [2, 3]}}},
        {"name": "add", "type": "Eltwise", "bottom": ["x", "b"], "top": "y"},
        {"name": "loss", "type": "EuclideanLoss", "bottom": ["y", "target"], "top": "loss"},
    ]
    return {"name": "parameter", "layers": layers}


def test_parameter_is_a_learned_top_its_gradient_reaches_the_param(rng):
    net = Net(parameter_net(), dtype=np.float64)
    param = net.params["bias"][0]
    assert param.shape == (2, 3) and np.all(param.data == 0)  # zeros, as Caffe's
    x, target = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    net.forward(x=x, target=target)
    net.clear_param_diffs()
    net.backward()
    np.testing.assert_allclose(param.diff, (x - target) / 2, rtol=1e-14)  # dE/db = (x + b - t) / N
    param.data[...] -= 0.5 * param.diff  # a solver's step on the param...
    out = net.forward(x=x, target=target)  # ...is what the top gives next
    np.testing.assert_array_equal(net.blobs["b"].data, param.data)
    assert float(out["loss"]) == pytest.approx(np.sum((x + param.data - target) ** 2) / 4)
    report = check_net(parameter_net(), inputs={"x": x, "target": target})
    assert report.passed and any(b.checked for b in report.blobs), report.table()


def test_parameter_round_trips_through_saved_weights(tmp_path, rng):
    net = Net(parameter_net(), dtype=np.float64)
    values = rng.standard_normal((2, 3))
    net.params["bias"][0].data[...] = values
    net.save(str(tmp_path / "w.npz"))
    other = Net(parameter_net(), dtype=np.float64)
    other.load(str(tmp_path / "w.npz"))
    other.forward(x=np.zeros((2, 3)), target=np.zeros((2, 3)))
    np.testing.assert_array_equal(other.blobs["b"].data, values)
