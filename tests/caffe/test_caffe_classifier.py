"""netlayers.caffe.Classifier (pycaffe's caffe.Classifier) on a small deploy net whose
weights are known: predictions against the preprocessing and softmax worked out by hand."""

import numpy as np
import pytest

from netlayers import caffe
from netlayers.caffe.wire import write_caffemodel
from netlayers.errors import ConfigError

DEPLOY = """
name: tiny_classifier
layers:
  - {name: data, type: Input, top: data, input_param: {shape: [{dim: [2, 3, 4, 4]}]}}
  - {name: ip, type: InnerProduct, bottom: data, top: ip, inner_product_param: {num_output: 3}}
  - {name: prob, type: Softmax, bottom: ip, top: prob}
"""
MEAN = np.array([0.1, 0.2, 0.3])
RNG = np.random.default_rng(0)
WEIGHTS = RNG.standard_normal((3, 48)).astype(np.float32)
BIAS = RNG.standard_normal(3).astype(np.float32)


@pytest.fixture
def classifier(tmp_path):
    model = tmp_path / "deploy.yaml"
    model.write_text(DEPLOY)
    weights = tmp_path / "tiny.caffemodel"
    write_caffemodel({"ip": [WEIGHTS, BIAS]}, weights)
    return caffe.Classifier(
        str(model), str(weights), image_dims=(6, 6), mean=MEAN, raw_scale=2.0, channel_swap=(2, 1, 0), input_scale=0.5
    )


def _by_hand(crop):
    """What the net gives for one 4 x 4 x 3 crop: transpose, BGR, x2, minus mean, x0.5, ip, softmax."""
    x = (crop.transpose(2, 0, 1)[[2, 1, 0]] * 2.0 - MEAN[:, None, None]) * 0.5
    logits = WEIGHTS.astype(np.float64) @ x.reshape(-1) + BIAS
    e = np.exp(logits - logits.max())
    return e / e.sum()


IMAGES = [RNG.random((6, 6, 3)).astype(np.float32) for _ in range(3)]


def test_the_classifier_is_a_caffe_net_set_up_as_pycaffes(classifier):
    assert isinstance(classifier, caffe.Net)
    assert list(classifier.crop_dims) == [4, 4] and tuple(classifier.image_dims) == (6, 6)
    assert classifier.transformer.transpose["data"] == (2, 0, 1)
    np.testing.assert_array_equal(classifier.params["ip"][0].data, WEIGHTS)


def test_without_oversampling_the_centre_crop_is_classified(classifier):
    predictions = classifier.predict(IMAGES, oversample=False)
    assert predictions.shape == (3, 3)  # three images through a batch of 2: the last batch padded
    expected = np.stack([_by_hand(image[1:5, 1:5]) for image in IMAGES])
    np.testing.assert_allclose(predictions, expected, rtol=1e-5)
    plain = classifier.forward(
        data=np.stack([classifier.transformer.preprocess("data", im[1:5, 1:5]) for im in IMAGES[:2]])
    )
    np.testing.assert_allclose(predictions[:2], plain["prob"], rtol=1e-6)


def test_oversampling_averages_the_ten_crops(classifier):
    predictions = classifier.predict(IMAGES)
    corners_and_centre = [(0, 0), (0, 2), (2, 0), (2, 2), (1, 1)]
    for image, prediction in zip(IMAGES, predictions, strict=True):
        crops = [image[y : y + 4, x : x + 4] for y, x in corners_and_centre]
        crops += [crop[:, ::-1] for crop in crops]
        np.testing.assert_allclose(prediction, np.mean([_by_hand(c) for c in crops], axis=0), rtol=1e-5)
    assert not np.allclose(predictions, classifier.predict(IMAGES, oversample=False))


def test_images_of_another_size_are_resized_to_image_dims_first(classifier):
    large = RNG.random((12, 9, 3)).astype(np.float32)
    resized = caffe.io.resize_image(large, (6, 6))
    np.testing.assert_allclose(classifier.predict([large], oversample=False)[0], _by_hand(resized[1:5, 1:5]), rtol=1e-5)


def test_a_bad_preprocessing_setting_is_a_one_line_error(tmp_path):
    model = tmp_path / "deploy.yaml"
    model.write_text(DEPLOY)
    weights = tmp_path / "tiny.caffemodel"
    write_caffemodel({"ip": [WEIGHTS, BIAS]}, weights)
    with pytest.raises(ConfigError, match="must list the input's 3 channels"):
        caffe.Classifier(str(model), str(weights), channel_swap=(1, 0))
