"""pycaffe's caffe.Net over netlayers (netlayers/caffe/pycaffe.py), and the net's backward from
diffs set by hand (netlayers/net.py): the saliency-map case pycaffe users rely on."""

import textwrap

import numpy as np
import pytest

from netlayers import ConfigError, DataError, NetlayersError, caffe
from netlayers import Net as NetlayersNet

DEPLOY = """\
name: "tiny_deploy"
{force}
input: "data"
input_shape {{ dim: 2 dim: 1 dim: 5 dim: 5 }}
layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param {{ num_output: 3 kernel_size: 3 weight_filler {{ type: "gaussian" std: 0.5 }}
                      bias_filler {{ type: "gaussian" std: 0.1 }} }} }}
layer {{ name: "relu" type: "ReLU" bottom: "conv" top: "conv" }}
layer {{ name: "pool" type: "Pooling" bottom: "conv" top: "pool"
  pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "pool" top: "ip"
  inner_product_param {{ num_output: 4 weight_filler {{ type: "gaussian" std: 0.5 }} }} }}
layer {{ name: "prob" type: "Softmax" bottom: "ip" top: "prob" }}
"""


def write_deploy(tmp_path, force_backward=True, name="deploy.prototxt"):
    path = tmp_path / name
    path.write_text(DEPLOY.format(force="force_backward: true" if force_backward else ""))
    return str(path)


@pytest.fixture
def deploy(tmp_path):
    return write_deploy(tmp_path)


def images(count, seed=0):
    return np.random.default_rng(seed).standard_normal((count, 1, 5, 5)).astype(np.float32)


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def by_hand(net, x):
    """The deploy net's forward in plain numpy, from its own params."""
    w, b = (blob.data.astype(np.float64) for blob in net.params["conv"])
    conv = np.zeros((len(x), 3, 3, 3))
    for i in range(3):
        for j in range(3):
            patch = x[:, :, i : i + 3, j : j + 3].reshape(len(x), -1)
            conv[:, :, i, j] = patch @ w.reshape(3, -1).T + b
    conv = np.maximum(conv, 0)
    pool = np.zeros((len(x), 3, 2, 2))  # ceil mode: windows at 0 and 2, the last one cut
    for i in range(2):
        for j in range(2):
            pool[:, :, i, j] = conv[:, :, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].max(axis=(2, 3))
    wi, bi = (blob.data.astype(np.float64) for blob in net.params["ip"])
    return softmax(pool.reshape(len(x), -1) @ wi.T + bi)


# -- building ---------------------------------------------------------------------------------
def test_the_three_constructor_forms_load_the_same_weights(deploy, tmp_path):
    trained = caffe.Net(deploy, caffe.TEST)
    trained.save(str(tmp_path / "w.caffemodel"))
    weights = str(tmp_path / "w.caffemodel")
    forms = [
        caffe.Net(deploy, weights, caffe.TEST),
        caffe.Net(deploy, caffe.TEST, weights=weights),
        caffe.Net(deploy, weights, 1),  # pycaffe's phase numbers work too
        caffe.Net(deploy, weights, phase=caffe.TEST),
    ]
    for net in forms:
        assert net.phase == caffe.TEST and net.netlayers_net.phase == "TEST"
        for name, blobs in trained.params.items():
            for mine, theirs in zip(net.params[name], blobs):
                np.testing.assert_array_equal(mine.data, theirs.data)
    fresh = caffe.Net(deploy, caffe.TEST)  # no weights: the fillers' values, another draw
    assert not np.array_equal(fresh.params["ip"][0].data, trained.params["ip"][0].data)


def test_a_yaml_model_and_the_phase_as_a_name(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text(
        textwrap.dedent("""\
        layers:
          - {name: data, type: Input, top: x, input_param: {shape: [{dim: [3, 2]}]}}
          - {name: ip, type: InnerProduct, bottom: x, top: y, inner_product_param: {num_output: 2}}
        """)
    )
    net = caffe.Net(str(path), "test")
    assert net.inputs == ["x"] and net.outputs == ["y"] and net.phase == caffe.TEST


def test_level_and_stages_select_layers(tmp_path):
    path = tmp_path / "staged.prototxt"
    path.write_text(
        'input: "x" input_shape { dim: 1 dim: 2 }\n'
        'layer { name: "a" type: "Power" bottom: "x" top: "y" power_param { scale: 2 } include { stage: "double" } }\n'
        'layer { name: "b" type: "Power" bottom: "x" top: "y" power_param { scale: 3 } exclude { stage: "double" } }\n'
        'layer { name: "c" type: "Power" bottom: "y" top: "z" include { min_level: 1 } }\n'
    )
    x = np.ones((1, 2))
    assert caffe.Net(str(path), caffe.TEST).forward(x=x) == {"y": pytest.approx(3 * x)}
    doubled = caffe.Net(str(path), caffe.TEST, stages=["double"], level=1)
    assert doubled._layer_names == ["input", "a", "c"] and doubled.outputs == ["z"]


def test_phases_equal_pycaffe_numbers_and_netlayers_names():
    assert caffe.TRAIN == 0 and caffe.TEST == 1 and 1 == caffe.TEST
    assert caffe.TRAIN == "TRAIN" and "TEST" == caffe.TEST and caffe.TRAIN != caffe.TEST
    assert int(caffe.TEST) == 1 and caffe.TRAIN != 1


def test_mistakes_in_the_constructor_are_one_line_errors(deploy):
    for args in [(deploy,), (deploy, "w.caffemodel", caffe.TEST, 3), (deploy, 7)]:
        with pytest.raises(ConfigError) as info:
            caffe.Net(*args)
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="missing.prototxt"):
        caffe.Net("missing.prototxt", caffe.TEST)


def test_gpu_mode_and_devices_are_clear_errors_cpu_mode_is_fine():
    caffe.set_mode_cpu()
    for call in (caffe.set_mode_gpu, lambda: caffe.set_device(0)):
        with pytest.raises(NetlayersError, match="CPU only") as info:
            call()
        assert "\n" not in str(info.value)


def test_set_random_seed_makes_nets_repeatable_and_successive_nets_differ(deploy, monkeypatch):
    from netlayers.caffe import pycaffe

    monkeypatch.setattr(pycaffe, "_seeds", None)  # the global seed ends with this test
    caffe.set_random_seed(7)
    first, second = caffe.Net(deploy, caffe.TEST), caffe.Net(deploy, caffe.TEST)
    caffe.set_random_seed(7)
    again = caffe.Net(deploy, caffe.TEST)
    np.testing.assert_array_equal(first.params["conv"][0].data, again.params["conv"][0].data)
    assert not np.array_equal(first.params["conv"][0].data, second.params["conv"][0].data)


def test_names_of_layers_blobs_tops_and_bottoms(deploy):
    net = caffe.Net(deploy, caffe.TEST)
    assert net._layer_names == ["input", "conv", "relu", "pool", "ip", "prob"]
    assert list(net.layer_dict) == net._layer_names and net.layer_dict["ip"].type == "InnerProduct"
    assert [layer.type for layer in net.layers][1:] == ["Convolution", "ReLU", "Pooling", "InnerProduct", "Softmax"]
    assert list(net.blobs) == ["data", "conv", "pool", "ip", "prob"] == net._blob_names
    assert net.top_names["relu"] == ["conv"] and net.bottom_names["ip"] == ["pool"]
    assert net.inputs == ["data"] and net.outputs == ["prob"]
    assert list(net.params) == ["conv", "ip"] and [p.shape for p in net.params["conv"]] == [(3, 1, 3, 3), (3,)]
    assert net.layer_dict["conv"].blobs[0] is net.params["conv"][0]
    blob = net.blobs["data"]
    assert (blob.num, blob.channels, blob.height, blob.width, blob.count) == (2, 1, 5, 5, 50)
    assert net.blob_loss_weights["prob"] == 0


# -- forward ----------------------------------------------------------------------------------
def test_blobs_and_params_are_writable_and_forward_sees_them(deploy):
    net = caffe.Net(deploy, caffe.TEST)
    x = images(2)
    net.blobs["data"].data[...] = x
    net.params["ip"][0].data[...] = np.random.default_rng(3).standard_normal((4, 12))
    net.params["ip"][1].data[...] = [0.5, -0.5, 1.0, 0.0]
    out = net.forward()
    assert list(out) == ["prob"] and out["prob"] is net.blobs["prob"].data
    np.testing.assert_allclose(out["prob"], by_hand(net, x), rtol=1e-5, atol=1e-6)


def test_forward_with_inputs_as_keywords_checks_the_batch(deploy):
    net = caffe.Net(deploy, caffe.TEST)
    x = images(2, seed=4)
    np.testing.assert_allclose(net.forward(data=x)["prob"], by_hand(net, x), rtol=1e-5, atol=1e-6)
    with pytest.raises(DataError, match="batch is 2") as info:
        net.forward(data=images(3))
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match="not an input"):
        net.forward(conv=np.zeros((2, 3, 3, 3)))


def test_reshape_then_forward_as_pycaffe_users_do(deploy):
    net = caffe.Net(deploy, caffe.TEST)
    x = images(5, seed=5)
    net.blobs["data"].reshape(5, 1, 5, 5)
    net.reshape()
    assert net.blobs["prob"].data.shape == (5, 4)
    np.testing.assert_allclose(net.forward(data=x)["prob"], by_hand(net, x), rtol=1e-5, atol=1e-6)
    net.blobs["data"].reshape(1, 1, 5, 5)  # and without net.reshape(): forward reshapes
    net.blobs["data"].data[...] = x[:1]
    np.testing.assert_allclose(net.forward()["prob"], by_hand(net, x[:1]), rtol=1e-5, atol=1e-6)


def test_forward_from_start_to_end_returns_the_blobs_asked_for(deploy):
    net = caffe.Net(deploy, caffe.TEST)
    x = images(2, seed=6)
    first = net.forward(end="pool", data=x)
    assert list(first) == ["pool"]
    pool = first["pool"].copy()
    net.forward(data=x)
    expected = net.blobs["prob"].data.copy()
    net.blobs["pool"].data[...] = pool * 2  # set by hand, then run the rest from the next layer
    out = net.forward(start="ip", blobs=["ip"])
    assert set(out) == {"prob", "ip"}
    wi, bi = (blob.data for blob in net.params["ip"])
    np.testing.assert_allclose(out["ip"], (pool * 2).reshape(2, -1) @ wi.T + bi, rtol=1e-5, atol=1e-6)
    assert not np.allclose(out["prob"], expected)
    with pytest.raises(DataError, match="no layer named 'nope'"):
        net.forward(start="nope")


def test_forward_all_runs_more_items_than_a_batch(deploy):
    net = caffe.Net(deploy, caffe.TEST)
    x = images(5, seed=7)
    out = net.forward_all(data=x, blobs=["ip"])
    assert out["prob"].shape == (5, 4) and out["ip"].shape == (5, 4)
    np.testing.assert_allclose(out["prob"], by_hand(net, x), rtol=1e-5, atol=1e-6)


# -- backward ---------------------------------------------------------------------------------
def saliency_by_differences(net, x, weights, step=1e-5):
    """d sum(weights * prob) / d x by central differences, in float64 on a copy of the net. The
    step is small: a step across a ReLU's or a max pool's kink gives another slope (with 1e-3,
    1 in 120 random nets' saliencies differed from the analytic one; with 1e-5, none)."""
    numeric = np.zeros_like(x, dtype=np.float64)
    for index in np.ndindex(*x.shape):
        values = []
        for sign in (1, -1):
            shifted = x.astype(np.float64).copy()
            shifted[index] += sign * step
            values.append(float((by_hand(net, shifted) * weights).sum()))
        numeric[index] = (values[0] - values[1]) / (2 * step)
    return numeric


def test_backward_from_a_top_diff_set_by_hand_gives_the_input_gradient(tmp_path, monkeypatch):
    """The saliency map: no loss, force_backward, the score's gradient set on 'prob' by hand."""
    from netlayers.caffe import pycaffe

    monkeypatch.setattr(pycaffe, "_seeds", None)  # the global seed ends with this test
    caffe.set_random_seed(8)  # the same weights every run
    deploy = write_deploy(tmp_path)
    net = caffe.Net(deploy, caffe.TEST)
    x = images(2, seed=8)
    net.forward(data=x)
    assert all(net.netlayers_net.layer_need_backward[1:])  # every layer runs, as in Caffe
    for target in (0, 3):
        weights = np.zeros((2, 4), np.float32)
        weights[:, target] = 1
        gradient = net.backward(prob=weights)["data"]
        np.testing.assert_allclose(gradient, saliency_by_differences(net, x, weights), rtol=2e-3, atol=2e-4)
    net.blobs["prob"].diff[...] = weights  # the same, set on the blob by hand
    again = net.backward()
    np.testing.assert_array_equal(again["data"], gradient)
    assert np.abs(gradient).sum() > 0


def test_backward_start_end_runs_part_of_the_net(deploy):
    net = caffe.Net(deploy, caffe.TEST)
    net.forward(data=images(2, seed=9))
    net.blobs["ip"].diff[...] = 1.0
    out = net.backward(start="ip", end="pool", diffs=["ip"])
    assert set(out) == {"conv", "ip"}  # as pycaffe: the bottoms of the end layer, and diffs=
    np.testing.assert_allclose(
        net.blobs["pool"].diff.reshape(2, -1), np.ones((2, 4)) @ net.params["ip"][0].data, rtol=1e-5, atol=1e-6
    )
    with pytest.raises(DataError, match="comes before"):
        net.backward(start="conv", end="ip")


def test_backward_on_a_net_without_loss_or_force_backward_says_so(tmp_path):
    net = caffe.Net(write_deploy(tmp_path, force_backward=False), caffe.TEST)
    net.forward(data=images(2))
    with pytest.raises(ConfigError, match="force_backward") as info:
        net.backward(prob=np.ones((2, 4)))
    assert "\n" not in str(info.value) and "deploy.prototxt" in str(info.value)


def test_force_backward_still_spares_the_split_of_a_label(tmp_path):
    """A label read by a loss and an Accuracy is split; the Split is never asked for a gradient,
    while a top no layer reads (the Softmax's) takes a diff set by hand."""
    net = NetlayersNet(
        {
            "force_backward": True,
            "layers": [
                {
                    "name": "in",
                    "type": "Input",
                    "top": ["x", "y"],
                    "input_param": {"shape": [{"dim": [3, 4]}, {"dim": [3]}]},
                },
                {
                    "name": "ip",
                    "type": "InnerProduct",
                    "bottom": "x",
                    "top": "z",
                    "inner_product_param": {"num_output": 2},
                },
                {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["z", "y"], "top": "loss"},
                {"name": "acc", "type": "Accuracy", "bottom": ["z", "y"], "top": "acc"},
                {"name": "prob", "type": "Softmax", "bottom": "z", "top": "p"},
            ],
        }
    )
    needs = dict(zip(net.layer_names, net.layer_need_backward))
    assert needs["y_in_1_split"] is False and needs["prob"] is True and needs["ip"] is True


def test_forward_backward_all_batches_inputs_and_output_diffs(deploy):
    net = caffe.Net(deploy, caffe.TEST)
    x = images(5, seed=10)
    top = np.random.default_rng(11).standard_normal((5, 4)).astype(np.float32)
    outs, diffs = net.forward_backward_all(data=x, prob=top)
    assert outs["prob"].shape == (5, 4) and diffs["data"].shape == (5, 1, 5, 5)
    for i in range(0, 5, 2):  # the same, batch by batch (the last one padded)
        batch = np.zeros((2, 1, 5, 5), np.float32)
        part = x[i : i + 2]
        batch[: len(part)] = part
        diff = np.zeros((2, 4), np.float32)
        diff[: len(part)] = top[i : i + 2]
        net.forward(data=batch)
        expected = net.backward(prob=diff)["data"][: len(part)]
        np.testing.assert_allclose(diffs["data"][i : i + 2], expected, rtol=1e-6)


# -- weights ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["w.caffemodel", "w.npz"])
def test_save_then_copy_from_round_trip(deploy, tmp_path, name):
    a, b = caffe.Net(deploy, caffe.TEST), caffe.Net(deploy, caffe.TEST)
    a.save(str(tmp_path / name))
    b.copy_from(str(tmp_path / name))
    for layer, blobs in a.params.items():
        for mine, theirs in zip(b.params[layer], blobs):
            np.testing.assert_array_equal(mine.data, theirs.data)
    x = images(2, seed=12)
    np.testing.assert_array_equal(a.forward(data=x)["prob"], b.forward(data=x)["prob"])


def test_share_with_uses_the_same_param_blobs(deploy, tmp_path):
    a, b = caffe.Net(deploy, caffe.TEST), caffe.Net(deploy, caffe.TEST)
    b.share_with(a)
    assert b.params["ip"][0] is a.params["ip"][0]
    a.params["ip"][1].data[...] = 3.0
    x = images(2, seed=13)
    np.testing.assert_array_equal(a.forward(data=x)["prob"], b.forward(data=x)["prob"])
    other = caffe.Net(write_deploy(tmp_path, name="other.prototxt"), caffe.TEST)
    other.netlayers_net.layer("ip").blobs[0].reshape(2, 2)
    with pytest.raises(ConfigError, match="cannot share param 0"):
        b.share_with(other)


def test_set_input_arrays_feeds_a_memory_data_layer(tmp_path):
    path = tmp_path / "memory.prototxt"
    path.write_text(
        'layer { name: "data" type: "MemoryData" top: "data" top: "label"\n'
        "  memory_data_param { batch_size: 2 channels: 1 height: 2 width: 2 } }\n"
        'layer { name: "flat" type: "Flatten" bottom: "data" top: "flat" }\n'
    )
    net = caffe.Net(str(path), caffe.TRAIN)
    data = np.arange(16, dtype=np.float32).reshape(4, 1, 2, 2)
    net.set_input_arrays(data, np.array([1, 2, 3, 4], np.float32).reshape(4, 1, 1, 1))
    out = net.forward(blobs=["label"])
    np.testing.assert_array_equal(out["flat"], data[:2].reshape(2, 4))
    np.testing.assert_array_equal(out["label"], [1, 2])
    np.testing.assert_array_equal(net.forward(blobs=["label"])["label"], [3, 4])
