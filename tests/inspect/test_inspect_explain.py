"""explain: in-place unfolding, values and gradients against a numpy recomputation, branches."""

import numpy as np

from netlayers.inspect import build_net, explain_net, explain_spec
from netlayers.inspect.explain import format_values, unfold_in_place
from netlayers.netspec import load_net_spec

TINY = {
    "name": "tiny",
    "layers": [
        {
            "name": "data",
            "type": "DummyData",
            "top": ["x", "label"],
            "dummy_data_param": {
                "shape": [{"dim": [2, 3]}, {"dim": [2]}],
                "data_filler": [{"type": "gaussian", "std": 1.0}, {"type": "constant", "value": 2}],
            },
        },
        {
            "name": "ip1",
            "type": "InnerProduct",
            "bottom": "x",
            "top": "h",
            "inner_product_param": {
                "num_output": 4,
                "weight_filler": {"type": "gaussian", "std": 0.7},
                "bias_filler": {"type": "constant", "value": 0.1},
            },
        },
        {"name": "relu1", "type": "ReLU", "bottom": "h", "top": "h"},
        {
            "name": "ip2",
            "type": "InnerProduct",
            "bottom": "h",
            "top": "scores",
            "inner_product_param": {"num_output": 3, "weight_filler": {"type": "gaussian", "std": 0.7}},
        },
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["scores", "label"], "top": "loss"},
    ],
}


def explained(spec, values=None):
    net = build_net(explain_spec(load_net_spec(spec), "TRAIN"), "TRAIN", seed=3, dtype="float64")
    return net, explain_net(net, values)


def reference(x, label, w1, b1, w2, b2):
    h = x @ w1.T + b1
    r = np.maximum(h, 0)
    s = r @ w2.T + b2
    p = np.exp(s - s.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    n = len(x)
    loss = -np.mean(np.log(p[np.arange(n), label]))
    ds = p.copy()
    ds[np.arange(n), label] -= 1
    ds /= n
    dr = ds @ w2
    dh = dr * (h > 0)
    return {
        "h": (h, dh),
        "h@relu1": (r, dr),
        "scores": (s, ds),
        "loss": (loss, 1.0),
        "x": (x, dh @ w1),
        "ip1[0]": (w1, dh.T @ x),
        "ip1[1]": (b1, dh.sum(0)),
        "ip2[0]": (w2, ds.T @ r),
        "ip2[1]": (b2, ds.sum(0)),
    }


def test_unfold_in_place_renames_tops_and_later_bottoms():
    layers = unfold_in_place(load_net_spec(TINY).layers)
    assert layers[2].bottoms == ["h"] and layers[2].tops == ["h@relu1"]
    assert layers[3].bottoms == ["h@relu1"]


def test_values_and_gradients_match_numpy():
    net, ex = explained(TINY)
    x = ex["x"].value
    label = ex["label"].value.astype(int)
    assert np.all(label == 2)
    ref = reference(x, label, ex["ip1[0]"].value, ex["ip1[1]"].value, ex["ip2[0]"].value, ex["ip2[1]"].value)
    for name, (value, grad) in ref.items():
        np.testing.assert_allclose(ex[name].value, value, rtol=1e-10, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(ex[name].gradient, grad, rtol=1e-10, atol=1e-12, err_msg=name)
    assert ex["label"].gradient is None and ex["label"].role == "input"
    assert ex["loss"].role == "output" and ex["ip1[0]"].role == "param"
    np.testing.assert_allclose(ex.loss, ref["loss"][0])
    # the rows are copies of the net's blobs after the pass
    np.testing.assert_array_equal(ex["scores"].gradient, net.blobs["scores"].diff)


def test_values_override_source_blobs():
    _, ex = explained(TINY, {"x": np.arange(6.0).reshape(2, 3) / 10})
    np.testing.assert_array_equal(ex["x"].value, np.arange(6.0).reshape(2, 3) / 10)


def test_branch_edges_carry_their_own_gradient_and_the_blob_their_sum():
    spec = {
        "name": "branch",
        "layers": [
            {
                "name": "data",
                "type": "DummyData",
                "top": "x",
                "dummy_data_param": {"shape": [{"dim": [1, 2]}], "data_filler": [{"type": "constant", "value": 1.5}]},
            },
            {
                "name": "a",
                "type": "InnerProduct",
                "bottom": "x",
                "top": "ya",
                "loss_weight": 1,
                "inner_product_param": {"num_output": 1, "weight_filler": {"type": "constant", "value": 2}},
            },
            {
                "name": "b",
                "type": "InnerProduct",
                "bottom": "x",
                "top": "yb",
                "loss_weight": 1,
                "inner_product_param": {"num_output": 1, "weight_filler": {"type": "constant", "value": -5}},
            },
        ],
    }
    _, ex = explained(spec)
    edges = [e for e in ex.edges if e.blob == "x"]
    assert [e.target for e in edges] == ["layer:2", "layer:3"]  # layer 1 is the Split
    np.testing.assert_allclose(sorted(e.gradient.ravel()[0] for e in edges), [-5, 2])
    np.testing.assert_allclose(ex["x"].gradient, [[-3, -3]])
    np.testing.assert_allclose(ex.loss, 1.5 * 2 * 2 + 1.5 * -5 * 2)
    dot = ex.dot()
    assert dot.count('-> "output:') == 2 and "Split" not in dot
    assert '<font color="darkgreen">[[1.5, 1.5]]</font>' in dot
    assert '<font color="red">[[-5, -5]]</font>' in dot


def test_format_values_full_or_statistics():
    assert format_values(np.array(-2.0)) == "-2"
    assert format_values(np.array([[1, 2], [3, 4.5]])) == "[[1, 2], [3, 4.5]]"
    text = format_values(np.arange(10.0), 8)
    assert text == "mean 4.5 std 2.87228 min 0 max 9"
    assert format_values(np.arange(10.0), 8, digits=3, short=True) == "mean 4.5, std 2.87"
