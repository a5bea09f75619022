"""netlayers/prediction.py: Predictor, predict and read_images."""

import builtins
from pathlib import Path

import numpy as np
import pytest
from test_deploy import npz_data, training_config

import netlayers
from netlayers import ConfigError, DataError, Net, deploy_net
from netlayers.data.idx import read_idx
from netlayers.prediction import Predictor, read_images

ROOT = Path(__file__).resolve().parents[1]
LENET = ROOT / "configs" / "lenet_fashion_mnist.yaml"
CAFFE_WEIGHTS = ROOT / "tests" / "fixtures" / "caffe" / "lenet_fmnist_iter_10000.caffemodel"
FASHION = Path("/usr/share/datasets/fashion-mnist")


def softmax(scores):
    scores = np.asarray(scores, np.float64)
    e = np.exp(scores - scores.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_caffe_trained_lenet_predicts_as_the_test_net_scores():
    """Raw test images in, probabilities out: the same as the TEST net (Data layer and its
    transform) computes for the same 300 images, and Caffe's accuracy on them."""
    images = read_idx(FASHION / "t10k-images-idx3-ubyte.gz")[:300]
    labels = read_idx(FASHION / "t10k-labels-idx1-ubyte.gz")[:300]
    predictor = netlayers.Predictor(LENET, CAFFE_WEIGHTS)
    probabilities = predictor.predict(images)
    test_net = Net(LENET, "TEST")
    test_net.load(CAFFE_WEIGHTS)
    expected, accuracy = [], []
    for _ in range(3):
        outputs = test_net.forward()
        expected.append(softmax(test_net.blobs["ip2"].data))
        accuracy.append(float(outputs["accuracy"]))
    np.testing.assert_allclose(probabilities, np.concatenate(expected), rtol=1e-4, atol=1e-7)
    assert (probabilities.argmax(1) == labels).mean() == pytest.approx(np.mean(accuracy))
    best = predictor.top_k(probabilities[:1], 2)[0]
    assert best[0][:2] == (9, "Ankle boot") and best[0][2] > best[1][2]


def test_predict_one_call_and_batches_of_any_size(tmp_path):
    images = read_idx(FASHION / "t10k-images-idx3-ubyte.gz")[:70]
    whole = netlayers.predict(LENET, CAFFE_WEIGHTS, images, batch=70)
    in_parts = netlayers.predict(LENET, CAFFE_WEIGHTS, images, batch=32)  # 32 + 32 + 6
    np.testing.assert_allclose(in_parts, whole, rtol=1e-5, atol=1e-7)
    one = netlayers.predict(LENET, CAFFE_WEIGHTS, images[5])  # one image, no batch axis
    np.testing.assert_allclose(one, whole[5:6], rtol=1e-5, atol=1e-7)


def test_one_predictor_serves_threads_each_call_its_own_predictions():
    """A Predictor shared by four threads, each predicting its own images (batches of other
    sizes: the net reshapes): every call gets what it gets alone. Before the Predictor's lock,
    a call could read another's predictions, or fail reshaping them (4 threads x 40 calls: 2
    wrong)."""
    import threading

    images = read_idx(FASHION / "t10k-images-idx3-ubyte.gz")[:90]
    predictor = Predictor(LENET, CAFFE_WEIGHTS)
    sets = [images[0:7], images[10:30], images[40:41], images[50:90]]
    alone = [predictor.predict(images) for images in sets]
    results = [[] for _ in sets]

    def run(k):
        for _ in range(25):
            results[k].append(predictor.predict(sets[k]))

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(sets))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for got, expected in zip(results, alone):
        assert len(got) == 25
        for predictions in got:
            np.testing.assert_allclose(predictions, expected, rtol=1e-4, atol=1e-6)


def test_a_prediction_blob_a_later_layer_reads_keeps_its_values(tmp_path):
    """A Euclidean loss's prediction (``ip``) also read by kept layers after it: the Predictor's
    net, whose inner blobs share memory, would let a later blob take ip's buffer; it keeps ip
    whole, and predicts what the plain deploy net computes."""
    config = training_config(npz_data(tmp_path))
    layers = [layer for layer in config["layers"] if layer["name"] not in ("accuracy", "loss")]
    side = [("side", "ip", 100), ("side2", "side", 4), ("side3", "side2", 4), ("side4", "side3", 4)]
    layers += [
        {"name": name, "type": "InnerProduct", "bottom": bottom, "top": name, "inner_product_param": {"num_output": n}}
        for name, bottom, n in side
    ]
    config["layers"] = layers + [{"name": "loss", "type": "EuclideanLoss", "bottom": ["ip", "side4"], "top": "loss"}]
    Net(config, "TEST", seed=3, data_root=str(tmp_path)).save(tmp_path / "w.npz")
    predictor = Predictor(config, tmp_path / "w.npz", data_root=str(tmp_path))
    images = np.load(tmp_path / "set.npz")["data"]
    predictions = predictor.predict(images)
    net = predictor.net()
    assert predictor.prediction == "ip" and net.outputs == ["side4"]
    shared = deploy_net(config, tmp_path / "w.npz", data_root=str(tmp_path), share_memory=True)
    assert id(shared.blobs["ip"]) in shared._shared_values  # what sharing alone would do
    assert id(net.blobs["ip"]) not in net._shared_values and net._shared_values  # ip kept, the rest shares
    plain = deploy_net(config, tmp_path / "w.npz", batch=len(images), data_root=str(tmp_path))
    plain.forward(data=predictor.prepare(images))
    np.testing.assert_array_equal(predictions, plain.blobs["ip"].data)


def test_mean_scale_and_centre_crop_are_the_test_transform(tmp_path):
    config = training_config(npz_data(tmp_path))
    test_net = Net(config, "TEST", seed=1, data_root=str(tmp_path))
    test_net.forward()
    test_net.save(tmp_path / "w.npz")
    raw = np.load(tmp_path / "set.npz")["data"]  # (6, 3, 10, 10) uint8
    predictor = Predictor(config, tmp_path / "w.npz", data_root=str(tmp_path))
    np.testing.assert_array_equal(predictor.prepare(raw), test_net.blobs["data"].data)
    np.testing.assert_allclose(predictor.predict(raw), softmax(test_net.blobs["ip"].data), rtol=1e-5)
    assert predictor.top_k(predictor.predict(raw[:1]), 9)[0][0][1] is None  # no labels: no names
    assert len(predictor.top_k(predictor.predict(raw[:1]), 9)[0]) == 4  # k capped at the classes


def test_wrong_image_shapes_are_one_line(tmp_path):
    predictor = Predictor(LENET, CAFFE_WEIGHTS)
    with pytest.raises(
        DataError, match=r"images of shape \(2, 3, 28, 28\): input 'data' expects items of shape \(1, 28, 28\)"
    ):
        predictor.predict(np.zeros((2, 3, 28, 28), np.uint8))
    with pytest.raises(DataError, match="expected images as numbers"):
        predictor.predict(np.array(["a"]))


def test_shape_from_the_first_images_when_the_data_set_is_missing(tmp_path):
    config = training_config("nowhere.npz")
    predictor = Predictor(config, data_root=str(tmp_path))
    assert predictor.predict(np.zeros((2, 3, 10, 10), np.uint8)).shape == (2, 4)
    with pytest.raises(ConfigError, match="not known before images are given"):
        Predictor(config, data_root=str(tmp_path)).net()


def test_two_inputs_are_refused(tmp_path):
    config = {
        "name": "two",
        "layers": [
            {"name": "a", "type": "Input", "top": "a", "input_param": {"shape": {"dim": [1, 2]}}},
            {"name": "b", "type": "Input", "top": "b", "input_param": {"shape": {"dim": [1, 2]}}},
            {"name": "sum", "type": "Eltwise", "bottom": ["a", "b"], "top": "sum"},
        ],
    }
    with pytest.raises(ConfigError, match=r"one input; this TEST net has 2 \(a, b\)"):
        Predictor(config)


# -- read_images -----------------------------------------------------------------------------
def test_read_npy_and_idx(tmp_path):
    stack = np.arange(2 * 4 * 5, dtype=np.uint8).reshape(2, 4, 5)
    np.save(tmp_path / "gray.npy", stack)
    array, names = read_images(tmp_path / "gray.npy", channels=1)
    assert array.shape == (2, 1, 4, 5) and names == ["gray.npy[0]", "gray.npy[1]"]
    array, names = read_images(tmp_path / "gray.npy", channels=2)  # (C, H, W): one image
    assert array.shape == (1, 2, 4, 5) and names == ["gray.npy"]
    np.save(tmp_path / "one.npy", stack[0])
    assert read_images(tmp_path / "one.npy")[0].shape == (1, 1, 4, 5)
    images, names = read_images(FASHION / "t10k-images-idx3-ubyte.gz")
    assert images.shape == (10000, 1, 28, 28) and names[3] == "t10k-images-idx3-ubyte.gz[3]"


def test_read_pictures_grey_colour_resized_and_bgr(tmp_path):
    from PIL import Image

    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[..., 0], rgb[..., 2] = 200, 10
    Image.fromarray(rgb).save(tmp_path / "red.png")
    array, names = read_images(tmp_path / "red.png", channels=3)
    assert array.shape == (1, 3, 6, 8) and names == ["red.png"]
    assert (array[0, 0] == 200).all() and (array[0, 2] == 10).all()
    assert (read_images(tmp_path / "red.png", channels=3, bgr=True)[0][0, 0] == 10).all()
    grey, _ = read_images(tmp_path / "red.png", channels=1, size=(3, 4))
    assert grey.shape == (1, 1, 3, 4) and 50 < grey.mean() < 70  # Pillow's L = 0.299 R + 0.114 B


def test_unreadable_files_and_missing_pillow_are_one_line(tmp_path, monkeypatch):
    (tmp_path / "bad.png").write_bytes(b"not a picture")
    with pytest.raises(DataError, match="not an image Pillow can read"):
        read_images(tmp_path / "bad.png")
    with pytest.raises(DataError, match="no such image file"):
        read_images(tmp_path / "none.png")
    real_import = builtins.__import__

    def no_pillow(name, *args, **kwargs):
        if name == "PIL":
            raise ImportError("no PIL")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pillow)
    with pytest.raises(DataError, match=r"needs Pillow: pip install 'netlayers\[image\]'"):
        read_images(tmp_path / "bad.png")
