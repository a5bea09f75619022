import numpy as np
import pytest

from netlayers import ConfigError, DataError, Net
from netlayers.gradcheck import check_net


def input_layer(shapes, tops=("x", "y")):
    return {
        "name": "data",
        "type": "Input",
        "top": list(tops),
        "input_param": {"shape": [{"dim": list(s)} for s in shapes]},
    }


def ip(name, bottom, top, n, **extra):
    layer = {
        "name": name,
        "type": "InnerProduct",
        "bottom": bottom,
        "top": top,
        "inner_product_param": {
            "num_output": n,
            "weight_filler": {"type": "gaussian", "std": 0.3},
            "bias_filler": {"type": "gaussian", "std": 0.1},
        },
    }
    layer.update(extra)
    return layer


def mlp(**net_fields):
    return {
        "name": "mlp",
        **net_fields,
        "layers": [
            input_layer([(4, 5), (4,)]),
            ip("ip1", "x", "h", 6),
            {"name": "relu", "type": "ReLU", "bottom": "h", "top": "h"},
            ip("ip2", "h", "z", 3),
            {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["z", "y"], "top": "loss"},
        ],
    }


LABELS = np.array([0, 2, 1, 2])


def test_blobs_params_inputs_outputs():
    net = Net(mlp(), seed=0)
    assert list(net.blobs) == ["x", "y", "h", "z", "loss"]
    assert list(net.params) == ["ip1", "ip2"]
    assert [b.shape for b in net.params["ip1"]] == [(6, 5), (6,)]
    assert net.inputs == ["x", "y"] and net.outputs == ["loss"]


def test_forward_returns_outputs_and_sets_loss():
    net = Net(mlp(), seed=0)
    x = np.random.default_rng(0).standard_normal((4, 5))
    out = net.forward(x=x, y=LABELS)
    w1, b1 = (b.data for b in net.params["ip1"])
    w2, b2 = (b.data for b in net.params["ip2"])
    z = np.maximum(x @ w1.T + b1, 0) @ w2.T + b2
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    expected = -np.log(p[np.arange(4), LABELS]).mean()
    assert out["loss"] == pytest.approx(expected, rel=1e-5)
    assert net.loss == pytest.approx(expected, rel=1e-5)


def test_in_place_layer_shares_the_blob():
    net = Net(mlp(), seed=0)
    relu = net.layer("relu")
    i = net.layers.index(relu)
    assert net.bottom_vecs[i][0] is net.top_vecs[i][0] is net.blobs["h"]


def test_whole_net_gradients_check_out():
    report = check_net(mlp(), inputs={"y": LABELS})
    assert report.passed, report.table()
    assert {b.name for b in report.blobs} == {"input x", "param ip1[0]", "param ip1[1]", "param ip2[0]", "param ip2[1]"}


def branching_net():
    return {
        "name": "branch",
        "layers": [
            input_layer([(3, 4), (3,)]),
            ip("left", "x", "a", 2),
            ip("right", "x", "b", 2),
            {"name": "soft", "type": "Softmax", "bottom": "a", "top": "s"},
            {"name": "loss1", "type": "SoftmaxWithLoss", "bottom": ["s", "y"], "top": "l1"},
            {"name": "loss2", "type": "SoftmaxWithLoss", "bottom": ["b", "y"], "top": "l2", "loss_weight": 0.5},
        ],
    }


def test_split_is_inserted_where_a_blob_fans_out_and_gradients_add():
    spec = branching_net()
    net = Net({**spec, "force_backward": True}, seed=1)
    splits = [layer for layer in net.layers if layer.type == "Split"]
    assert [s.spec.bottoms for s in splits] == [["x"], ["y"]]
    x = np.random.default_rng(2).standard_normal((3, 4))
    y = np.array([0, 1, 1])
    net.forward(x=x, y=y)
    net.clear_param_diffs()
    net.backward()
    left_dx = net.blobs["a"].diff @ net.params["left"][0].data
    right_dx = net.blobs["b"].diff @ net.params["right"][0].data
    np.testing.assert_allclose(net.blobs["x"].diff, left_dx + right_dx, rtol=1e-5, atol=1e-7)
    assert check_net(spec, inputs={"y": y}).passed


def test_need_backward_skips_what_no_gradient_reaches():
    spec = mlp()
    spec["layers"].insert(1, {"name": "pre", "type": "ReLU", "bottom": "x", "top": "x"})
    net = Net(spec)
    needs = dict(zip(net.layer_names, net.layer_need_backward))
    assert needs == {"data": False, "pre": False, "ip1": True, "relu": True, "ip2": True, "loss": True}
    forced = Net({**spec, "force_backward": True})
    assert dict(zip(forced.layer_names, forced.layer_need_backward))["pre"] is True
    # labels never get a gradient, even when forced
    loss_index = forced.layer_names.index("loss")
    assert forced.bottom_need_backward[loss_index] == [True, False]


def test_backward_of_a_net_without_a_loss_says_what_to_set():
    spec = mlp()
    spec["layers"] = spec["layers"][:-1]  # no loss: nothing for a backward to start from
    net = Net(spec, seed=0)
    net.forward(x=np.ones((4, 5)), y=LABELS)
    for run in (net.backward, net.forward_backward):
        with pytest.raises(ConfigError, match="nothing to start from.*force_backward: true"):
            run()
    forced = Net({**spec, "force_backward": True}, seed=0)
    forced.forward(x=np.ones((4, 5)), y=LABELS)
    forced.blobs["z"].diff[...] = 1.0
    forced.backward()
    assert np.abs(forced.blobs["x"].diff).sum() > 0


def test_lr_mult_zero_freezes_and_stops_backward_below():
    spec = mlp()
    spec["layers"][1]["param"] = [{"lr_mult": 0}, {"lr_mult": 0}]
    net = Net(spec)
    needs = dict(zip(net.layer_names, net.layer_need_backward))
    assert needs["ip1"] is False and needs["ip2"] is True
    assert [p.lr_mult for p in net.learnable_params] == [0, 0, 1, 1]


def test_branch_that_reaches_no_loss_is_pruned():
    spec = mlp()
    spec["layers"].append(ip("side", "z", "w", 2))
    net = Net(spec)
    assert dict(zip(net.layer_names, net.layer_need_backward))["side"] is False
    assert "w" in net.outputs


def test_loss_weight_on_a_plain_output():
    spec = {"name": "lw", "layers": [input_layer([(2, 3)], ["x"]), ip("ip", "x", "z", 2, loss_weight=2.0)]}
    net = Net(spec, seed=0)
    x = np.arange(6.0).reshape(2, 3)
    out = net.forward(x=x)
    assert net.loss == pytest.approx(2 * out["z"].sum(), rel=1e-6)
    net.clear_param_diffs()
    net.backward()
    np.testing.assert_allclose(net.params["ip"][0].diff, 2 * np.ones((2, 2)) @ x, rtol=1e-6)
    np.testing.assert_allclose(net.params["ip"][1].diff, [4, 4])


def test_param_diffs_accumulate_until_cleared():
    net = Net(mlp(), seed=0)
    net.forward(x=np.ones((4, 5)), y=LABELS)
    net.clear_param_diffs()
    net.backward()
    once = net.params["ip1"][0].diff.copy()
    net.backward()
    np.testing.assert_allclose(net.params["ip1"][0].diff, 2 * once, rtol=1e-6)


def test_cleared_diffs_read_zero_where_backward_writes_no_gradient():
    spec = mlp()
    spec["layers"][1]["param"] = [{"lr_mult": 0}, {"lr_mult": 0}]
    net = Net(spec, seed=0)
    frozen = net.params["ip1"][0]
    frozen.diff[...] = 3
    net.forward(x=np.ones((4, 5)), y=LABELS)
    net.clear_param_diffs()
    net.backward()
    assert not frozen.diff.any()
    assert net.params["ip2"][0].diff.any()


def test_shared_param_gradient_is_the_sum_over_its_users_after_a_clear():
    net = Net(shared_spec(), seed=0)
    net.forward(y=np.array([1, 4]))
    net.params["a"][0].diff[...] = 100  # stale values must not leak into the sum
    net.clear_param_diffs()
    net.backward()
    h, dh = net.blobs["h"].data, net.blobs["h"].diff
    x, dz = net.blobs["x"].data, net.blobs["z"].diff
    np.testing.assert_allclose(net.params["a"][0].diff, dh.T @ x + dz.T @ h, rtol=1e-5, atol=1e-7)


def shared_spec(second_shape=6):
    return {
        "name": "shared",
        "layers": [
            input_layer([(2, 6), (2,)]),
            ip("a", "x", "h", 6, param=[{"name": "w"}, {"name": "b"}]),
            ip("b", "h", "z", second_shape, param=[{"name": "w"}, {"name": "b"}]),
            {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["z", "y"], "top": "loss"},
        ],
    }


def test_params_shared_by_name_are_one_blob_and_gradients_add():
    net = Net(shared_spec(), seed=0)
    assert net.params["a"][0] is net.params["b"][0]
    assert len(net.learnable_params) == 2
    assert check_net(shared_spec(), inputs={"y": np.array([1, 4])}).passed


def test_sharing_params_of_different_shapes_is_an_error():
    with pytest.raises(ConfigError, match="layer 'b'.*shared param 'w' has shape"):
        Net(shared_spec(second_shape=3))


def test_phases_filter_layers():
    spec = mlp()
    spec["layers"].append({"name": "prob", "type": "Softmax", "bottom": "z", "top": "p", "include": {"phase": "TEST"}})
    spec["layers"][-2]["exclude"] = [{"phase": "TEST"}]
    assert "prob" not in Net(spec, "TRAIN").layer_names
    test_net = Net(spec, "TEST")
    assert "prob" in test_net.layer_names and "loss" not in test_net.layer_names


def test_propagate_down_false_stops_a_bottom_gradient():
    spec = mlp(force_backward=True)
    spec["layers"][3]["propagate_down"] = [False]
    net = Net(spec)
    assert net.bottom_need_backward[net.layer_names.index("ip2")] == [False]


def test_same_seed_same_weights_other_seed_other_weights():
    a, b, c = Net(mlp(), seed=5), Net(mlp(), seed=5), Net(mlp(), seed=6)
    assert np.array_equal(a.params["ip1"][0].data, b.params["ip1"][0].data)
    assert not np.array_equal(a.params["ip1"][0].data, c.params["ip1"][0].data)
    assert Net(mlp(random_seed=5)).params["ip1"][0].data.tobytes() == a.params["ip1"][0].data.tobytes()


def test_float64_net():
    net = Net(mlp(dtype="float64"))
    assert net.blobs["x"].data.dtype == np.float64 and net.params["ip1"][0].data.dtype == np.float64


def test_save_and_load_round_trip(tmp_path):
    a, b = Net(mlp(), seed=1), Net(mlp(), seed=2)
    a.save(tmp_path / "w.npz")
    b.load(tmp_path / "w.npz")
    for name in a.params:
        for pa, pb in zip(a.params[name], b.params[name]):
            assert np.array_equal(pa.data, pb.data)
    with np.load(tmp_path / "w.npz", allow_pickle=False) as archive:
        assert sorted(archive.files) == ["ip1/0", "ip1/1", "ip2/0", "ip2/1"]


def test_loading_weights_of_another_shape_is_an_error(tmp_path):
    Net(mlp(), seed=1).save(tmp_path / "w.npz")
    spec = mlp()
    spec["layers"][1]["inner_product_param"]["num_output"] = 7
    with pytest.raises(ConfigError, match="layer 'ip1'.*shape"):
        Net(spec).load(tmp_path / "w.npz")


def test_loading_weights_that_name_none_of_the_nets_layers_is_an_error(tmp_path):
    np.savez(tmp_path / "other.npz", **{"fc/0": np.zeros((2, 2)), "fc/1": np.zeros(2)})
    with pytest.raises(
        ConfigError,
        match=r"other.npz: names none of this net's layers with params "
        r"\(the file has fc; the net has ip1, ip2\)",
    ):
        Net(mlp()).load(tmp_path / "other.npz")


def test_loading_weights_for_some_layers_keeps_the_others(tmp_path):
    np.savez(tmp_path / "part.npz", **{"ip2/0": np.ones((3, 6)), "ip2/1": np.ones(3)})
    net = Net(mlp(), seed=0)
    before = net.params["ip1"][0].data.copy()
    net.load(tmp_path / "part.npz")
    assert np.all(net.params["ip2"][0].data == 1)
    np.testing.assert_array_equal(net.params["ip1"][0].data, before)


def test_forward_with_a_new_batch_size_reshapes():
    net = Net(mlp(), seed=0)
    out = net.forward(x=np.zeros((7, 5)), y=np.zeros(7))
    assert net.blobs["z"].shape == (7, 3) and np.isfinite(out["loss"])


def test_label_out_of_range_names_layer_and_label():
    from netlayers import DataError

    net = Net(mlp(), seed=0)
    with pytest.raises(DataError, match="layer 'loss': label 3 is outside the 3 classes"):
        net.forward(x=np.zeros((4, 5)), y=np.array([0, 1, 3, 0]))


def test_loading_a_file_that_is_not_npz_says_so(tmp_path):
    from netlayers import DataError

    bad = tmp_path / "w.npz"
    bad.write_text("garbage\n")
    with pytest.raises(DataError, match=r"w\.npz: not an \.npz archive"):
        Net(mlp()).load(bad)


def test_a_loss_layer_without_a_top_gets_an_anonymous_one_as_in_caffe():
    spec = mlp()
    del spec["layers"][-1]["top"]
    net = Net(spec, seed=0)
    named = Net(mlp(), seed=0)
    inputs = {"x": np.ones((4, 5)), "y": LABELS}
    assert net.forward(**inputs) == {} and net.outputs == []
    named.forward(**inputs)
    assert net.loss == named.loss > 0
    for n in (net, named):
        n.clear_param_diffs()
        n.backward()
    np.testing.assert_array_equal(net.params["ip1"][0].diff, named.params["ip1"][0].diff)


def test_forward_with_an_unknown_input_or_non_numbers_is_a_data_error():
    net = Net(mlp(), seed=0)
    with pytest.raises(DataError, match=r"no blob named 'w' to set \(the net's inputs: x, y\)"):
        net.forward(w=np.ones(3))
    with pytest.raises(DataError, match=r"blob 'x' takes real numbers, got strings"):
        net.forward(x=np.full((4, 5), "a"))


def test_a_blob_set_from_outside_is_recomputed_by_its_layer():
    net = Net(mlp(), seed=0)
    expected = net.forward(x=np.ones((4, 5)), y=LABELS)["loss"]
    assert net.forward(z=np.ones(3))["loss"] == expected  # ip2 reshapes and refills z


def test_set_input_arrays_without_a_memory_data_layer():
    with pytest.raises(ConfigError, match="the net has no MemoryData layer"):
        Net(mlp()).set_input_arrays(np.ones((4, 5)), np.zeros(4))


@pytest.mark.parametrize(
    "layer, in_place",
    [
        ({"type": "ReLU"}, True),
        ({"type": "Dropout"}, True),
        ({"type": "BatchNorm"}, True),
        ({"type": "Scale", "scale_param": {"bias_term": True}}, True),
        ({"type": "Bias"}, True),
        ({"type": "InnerProduct", "inner_product_param": {"num_output": 5}}, False),
        ({"type": "Softmax"}, True),
        ({"type": "Flatten"}, False),
        ({"type": "AbsVal"}, False),
        ({"type": "ReLU", "relu_param": {"negative_slope": -0.5}}, False),
    ],
)
def test_which_layers_run_in_place_and_which_get_a_blob_of_their_own(layer, in_place):
    """top == bottom after a layer that does not need its top kept: the net runs the layer in
    place where it can compute so; elsewhere it gets a blob of its own under the same name."""
    spec = {
        "name": "n",
        "layers": [
            input_layer([(4, 5, 1, 1)], ["x"]),
            {
                "name": "conv",
                "type": "Convolution",
                "bottom": "x",
                "top": "c",
                "convolution_param": {"num_output": 5, "kernel_size": 1},
            },
            {"name": "l", "bottom": "c", "top": "c", **layer},
        ],
    }
    net = Net(spec)
    index = net.layer_names.index("l")
    assert (net.top_vecs[index][0] is net.bottom_vecs[index][0]) == in_place
    assert net.blobs["c"] is net.top_vecs[index][0]


def test_outputs_follow_caffe_sorted_by_name_with_in_place_tops_available_again():
    spec = {
        "name": "o",
        "layers": [
            input_layer([(4, 5), (4,)]),
            ip("ip", "x", "z", 3),
            {"name": "relu", "type": "ReLU", "bottom": "z", "top": "z"},
            {"name": "side", "type": "Power", "bottom": "x", "top": "b_side"},
            {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["z", "y"], "top": "loss"},
            {"name": "acc", "type": "Accuracy", "bottom": ["z", "y"], "top": "accuracy"},
        ],
    }
    assert Net(spec).outputs == ["accuracy", "b_side", "loss"]
    spec["layers"] = spec["layers"][:3]
    assert Net(spec).outputs == ["y", "z"]  # the in-place ReLU's top is an output again
