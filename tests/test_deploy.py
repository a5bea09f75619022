"""netlayers/deploy.py: the deploy net made from a training config."""

from pathlib import Path

import numpy as np
import pytest

from netlayers import ConfigError, Net
from netlayers.deploy import deploy_config, deploy_net

ROOT = Path(__file__).resolve().parents[1]
LENET = ROOT / "configs" / "lenet_fashion_mnist.yaml"
CAFFE = ROOT / "tests" / "fixtures" / "caffe"


def npz_data(folder, count=6, shape=(3, 10, 10), seed=0):
    rng = np.random.default_rng(seed)
    np.savez(folder / "set.npz", data=rng.integers(0, 256, (count, *shape), dtype=np.uint8), label=np.arange(count) % 4)
    return "set.npz"


def training_config(source, loss="SoftmaxWithLoss", crop=8):
    """A small training net: data with a TEST transform, a convolution, a classifier, its loss and
    accuracy, and a layer fed by the labels alone."""
    return {
        "name": "small",
        "layers": [
            {
                "name": "data",
                "type": "Data",
                "top": ["data", "label"],
                "include": {"phase": "TRAIN"},
                "data_param": {"source": source, "backend": "NPZ", "batch_size": 2},
                "transform_param": {"crop_size": crop, "mirror": True},
            },
            {
                "name": "data",
                "type": "Data",
                "top": ["data", "label"],
                "include": {"phase": "TEST"},
                "data_param": {"source": source, "backend": "NPZ", "batch_size": 6},
                "transform_param": {"crop_size": crop, "scale": 0.5, "mean_value": [10, 20, 30]},
            },
            {
                "name": "conv",
                "type": "Convolution",
                "bottom": "data",
                "top": "conv",
                "convolution_param": {"num_output": 2, "kernel_size": 3},
            },
            {
                "name": "ip",
                "type": "InnerProduct",
                "bottom": "conv",
                "top": "ip",
                "inner_product_param": {"num_output": 4},
            },
            {"name": "label_power", "type": "Power", "bottom": "label", "top": "label_power"},
            {"name": "silence", "type": "Silence", "bottom": "label_power"},
            {"name": "drop", "type": "Dropout", "bottom": "ip", "top": "ip", "include": {"phase": "TRAIN"}},
            {
                "name": "accuracy",
                "type": "Accuracy",
                "bottom": ["ip", "label"],
                "top": "accuracy",
                "include": {"phase": "TEST"},
            },
            {"name": "loss", "type": loss, "bottom": ["ip", "label"], "top": "loss"},
        ],
    }


def test_lenet_deploy_net_ends_in_softmax_and_has_no_labels():
    deploy = deploy_config(LENET)
    names = [layer["name"] for layer in deploy.config["layers"]]
    assert names == ["mnist", "conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2", "prob"]
    assert deploy.config["layers"][0]["type"] == "Input"
    assert deploy.config["layers"][-1] == {"name": "prob", "type": "Softmax", "bottom": ["ip2"], "top": ["prob"]}
    assert (deploy.prediction, deploy.probabilities) == ("prob", True)
    [item] = deploy.inputs
    assert (item.blob, item.item_shape, item.transform_param) == ("data", (1, 28, 28), {"scale": 0.00390625})
    assert deploy.labels[:2] == ["T-shirt/top", "Trouser"] and len(deploy.labels) == 10
    net = deploy_net(LENET, batch=3)
    assert net.blobs["data"].shape == (3, 1, 28, 28) and net.outputs == ["prob"]
    assert "label" not in net.blobs and not any(layer.type in ("Accuracy", "SoftmaxWithLoss") for layer in net.layers)


def test_deploy_net_computes_what_the_test_net_computes(tmp_path):
    """The deploy net with the TEST net's weights, given the TEST net's transformed batch,
    gives the softmax of the TEST net's classifier output: the same numbers."""
    config = training_config(npz_data(tmp_path))
    test_net = Net(config, "TEST", seed=3, data_root=str(tmp_path))
    test_net.forward()
    weights = tmp_path / "w.npz"
    test_net.save(weights)
    net = deploy_net(config, weights, batch=6, data_root=str(tmp_path))
    assert [layer.name for layer in net.layers] == ["data", "conv", "ip", "prob"]
    outputs = net.forward(data=test_net.blobs["data"].data)
    scores = test_net.blobs["ip"].data.astype(np.float64)
    expected = np.exp(scores - scores.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(outputs["prob"], expected, rtol=1e-5)
    assert net.blobs["data"].shape == (6, 3, 8, 8)  # the crop, not the stored 10 x 10


@pytest.mark.parametrize(
    "loss, kind, prediction, probabilities",
    [("SigmoidCrossEntropyLoss", "Sigmoid", "prob", True), ("EuclideanLoss", None, "ip", False)],
)
def test_other_losses_give_their_prediction(tmp_path, loss, kind, prediction, probabilities):
    config = training_config(npz_data(tmp_path), loss=loss)
    config["layers"] = [layer for layer in config["layers"] if layer["type"] != "Accuracy"]
    deploy = deploy_config(config, data_root=str(tmp_path))
    assert (deploy.prediction, deploy.probabilities) == (prediction, probabilities)
    assert [layer["type"] for layer in deploy.config["layers"]][-1] == (kind or "InnerProduct")


def test_a_config_that_already_has_inputs_keeps_them():
    deploy = deploy_config(
        {
            "name": "d",
            "input": ["data"],
            "input_shape": [{"dim": [1, 2, 3, 3]}],
            "layers": [
                {
                    "name": "ip",
                    "type": "InnerProduct",
                    "bottom": "data",
                    "top": "ip",
                    "inner_product_param": {"num_output": 3},
                }
            ],
        }
    )
    assert [(item.blob, item.item_shape) for item in deploy.inputs] == [("data", (2, 3, 3))]
    assert deploy.prediction == "ip" and not deploy.probabilities
    assert deploy_net(deploy, batch=4).blobs["data"].shape == (4, 2, 3, 3)


def test_a_data_set_that_is_not_found_leaves_the_shape_to_be_given(tmp_path):
    config = training_config("nowhere.npz")
    deploy = deploy_config(config, data_root=str(tmp_path))
    assert deploy.inputs[0].item_shape is None
    with pytest.raises(ConfigError, match="cannot tell the shape of input 'data'.*input_shape"):
        deploy_net(deploy)
    assert deploy_net(deploy, input_shape=(3, 8, 8)).blobs["conv"].shape == (1, 2, 6, 6)


def test_a_caffe_prototxt_reads_directly():
    deploy = deploy_config(CAFFE / "lenet_train_test_fmnist.prototxt")
    assert deploy.prediction == "prob"
    assert [layer["type"] for layer in deploy.config["layers"]][:2] == ["Input", "Convolution"]


def test_a_labels_file_that_cannot_be_read_is_one_line(tmp_path):
    config = training_config(npz_data(tmp_path))
    config["labels_file"] = str(tmp_path / "missing.txt")
    with pytest.raises(ConfigError, match="labels_file: cannot read .*missing.txt"):
        deploy_config(config, data_root=str(tmp_path))


def test_an_input_layer_with_a_single_top_string_is_shaped():
    deploy = deploy_config(
        {
            "name": "d",
            "layers": [
                {"name": "in", "type": "Input", "top": "data", "input_param": {"shape": {"dim": [1, 2]}}},
                {
                    "name": "ip",
                    "type": "InnerProduct",
                    "bottom": "data",
                    "top": "ip",
                    "inner_product_param": {"num_output": 3},
                },
            ],
        }
    )
    assert deploy_net(deploy, batch=5).blobs["data"].shape == (5, 2)


def test_feeding_a_training_net_points_to_the_deploy_net():
    """Issue 12's first stumble: forward(data=img) on the TEST net was a numpy broadcast error."""
    from netlayers import DataError

    net = Net(LENET, phase="TEST")
    with pytest.raises(DataError, match=r"blob 'data' is filled by Data layer 'mnist'.*Predictor.*start='conv1'"):
        net.forward(data=np.zeros((1, 1, 28, 28)))
    assert net.forward(start="conv1", data=np.zeros((100, 1, 28, 28)))["loss"] > 0
