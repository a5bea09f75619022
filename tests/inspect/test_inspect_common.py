"""Random inputs: labels are detected from the layers that read them."""

import numpy as np
import pytest

from netlayers.errors import ConfigError
from netlayers.inspect.common import build_net, find_layer, label_classes, random_inputs, split_origins, visible_layers


def classifier(extra_layers=(), classes=5, label_shape=(4,)):
    return {
        "name": "clf",
        "layers": [
            {
                "name": "data",
                "type": "Input",
                "top": ["x", "label"],
                "input_param": {"shape": [{"dim": [4, 3]}, {"dim": list(label_shape)}]},
            },
            {
                "name": "ip",
                "type": "InnerProduct",
                "bottom": "x",
                "top": "scores",
                "inner_product_param": {"num_output": classes, "weight_filler": {"type": "xavier"}},
            },
            {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["scores", "label"], "top": "loss"},
            *extra_layers,
        ],
    }


def test_label_of_softmax_loss_gets_class_indices():
    net = build_net(classifier(classes=5), seed=0)
    assert label_classes(net, "label") == 5
    assert label_classes(net, "x") is None
    values = random_inputs(net, np.random.default_rng(0))
    labels = values["label"]
    assert labels.shape == (4,)
    assert np.all(labels == np.floor(labels)) and labels.min() >= 0 and labels.max() < 5
    assert not np.all(values["x"] == np.floor(values["x"]))
    net.forward(**values)  # the loss accepts them


def test_label_behind_a_split_is_found_and_smallest_class_count_wins():
    extra = [
        {
            "name": "ip_small",
            "type": "InnerProduct",
            "bottom": "x",
            "top": "small",
            "inner_product_param": {"num_output": 3},
        },
        {"name": "acc", "type": "Accuracy", "bottom": ["small", "label"], "top": "acc"},
    ]
    net = build_net(classifier(extra, classes=5), seed=0)
    assert any(layer.type == "Split" for layer in net.layers)
    assert label_classes(net, "label") == 3


def test_sigmoid_cross_entropy_targets_are_binary_and_regression_targets_gaussian():
    spec = {
        "name": "n",
        "layers": [
            {"name": "data", "type": "Input", "top": ["x", "t", "y"], "input_param": {"shape": [{"dim": [4, 3]}]}},
            {"name": "sce", "type": "SigmoidCrossEntropyLoss", "bottom": ["x", "t"], "top": "l1"},
            {"name": "euc", "type": "EuclideanLoss", "bottom": ["x", "y"], "top": "l2"},
        ],
    }
    net = build_net(spec, seed=0)
    assert label_classes(net, "t") == 2
    assert label_classes(net, "y") is None


def test_visible_layers_hide_automatic_splits_and_find_layer_lists_names():
    extra = [{"name": "acc", "type": "Accuracy", "bottom": ["scores", "label"], "top": "acc"}]
    net = build_net(classifier(extra), seed=0)
    names = [net.layer_names[i] for i in visible_layers(net)]
    assert names == ["data", "ip", "loss", "acc"]
    assert set(split_origins(net).values()) == {"scores", "label"}
    assert net.layer_names[find_layer(net, "acc")] == "acc"
    expected = "no layer named 'los'.*did you mean 'loss'.*layers: data, ip, loss, acc"
    with pytest.raises(ConfigError, match=expected):
        find_layer(net, "los")
