"""check_net_layers: real bottoms (taken before in-place layers overwrite them), the net untouched."""

import numpy as np

from netlayers.inspect import build_net, check_net_layers, layercheck, random_inputs

NET = {
    "name": "n",
    "layers": [
        {
            "name": "data",
            "type": "Input",
            "top": ["x", "label"],
            "input_param": {"shape": [{"dim": [6, 4]}, {"dim": [6]}]},
        },
        {
            "name": "ip1",
            "type": "InnerProduct",
            "bottom": "x",
            "top": "h",
            "inner_product_param": {"num_output": 5, "weight_filler": {"type": "gaussian", "std": 1}},
        },
        {"name": "relu1", "type": "ReLU", "bottom": "h", "top": "h", "relu_param": {"negative_slope": 0.1}},
        {
            "name": "ip2",
            "type": "InnerProduct",
            "bottom": "h",
            "top": "scores",
            "param": [{"lr_mult": 1}, {"lr_mult": 0}],
            "inner_product_param": {"num_output": 3},
        },
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["scores", "label"], "top": "loss"},
        {"name": "acc", "type": "Accuracy", "bottom": ["scores", "label"], "top": "acc"},
    ],
}


def test_checks_layers_on_their_real_inputs_and_leaves_the_net_alone(monkeypatch):
    net = build_net(NET, seed=1, dtype="float64")
    values = random_inputs(net, np.random.default_rng(0))
    seen = {}
    real_check = layercheck.check_layer

    def spy(layer, bottoms, **kwargs):
        seen[layer.name] = [b.data.copy() for b in bottoms]
        return real_check(layer, bottoms, **kwargs)

    monkeypatch.setattr(layercheck, "check_layer", spy)
    weights = net.layer("ip1").blobs[0].data.copy()
    results = check_net_layers(net, values=values, max_elements=10)
    by_name = {r.name: r for r in results}
    assert [r.name for r in results] == ["data", "ip1", "relu1", "ip2", "loss", "acc"]
    assert by_name["data"].status == "no gradient" and by_name["acc"].status == "no gradient"
    assert all(by_name[n].status == "checked" and not by_name[n].failed for n in ["ip1", "relu1", "ip2", "loss"])
    # the in-place ReLU was checked on its input (with negatives), not on its output
    assert (seen["relu1"][0] < 0).any()
    np.testing.assert_array_equal(seen["relu1"][0], net.blobs["x"].data @ weights.T + net.layer("ip1").blobs[1].data)
    # the label is not checked; the bias with lr_mult 0 is not checked
    assert [b.name for b in by_name["loss"].report.blobs] == ["bottom[0] scores"]
    assert [b.name for b in by_name["ip2"].report.blobs] == ["bottom[0] h", "param[0]"]
    np.testing.assert_array_equal(net.layer("ip1").blobs[0].data, weights)
    assert not net.layer("ip1").blobs[0].diff.any()


def test_one_layer_only():
    net = build_net(NET, seed=1, dtype="float64")
    results = check_net_layers(
        net, layers=[net.layer_names.index("ip2")], values=random_inputs(net, np.random.default_rng(0))
    )
    assert [r.name for r in results] == ["ip2"]
