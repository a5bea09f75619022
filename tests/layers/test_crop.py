"""Crop: values, gradients, offsets and setup errors, as Caffe's Crop layer."""

import numpy as np
import pytest
from layer_harness import assert_contract, assert_gradients, make_layer, run_layer

from netlayers import ConfigError


# -- Crop ---------------------------------------------------------------------------------------
def test_crop_values_gradients_and_offsets(rng):
    x, target = rng.standard_normal((2, 3, 7, 8)), np.zeros((2, 3, 4, 5))
    _, (y,) = run_layer({"type": "Crop", "crop_param": {"offset": [1, 2]}}, [x, target])
    np.testing.assert_array_equal(y, x[:, :, 1:5, 2:7])
    _, (y,) = run_layer({"type": "Crop", "crop_param": {"offset": 2}}, [x, target])
    np.testing.assert_array_equal(y, x[:, :, 2:6, 2:7])
    _, (y,) = run_layer({"type": "Crop", "crop_param": {"axis": 1, "offset": [0, 1, 1]}}, [x, np.zeros((2, 2, 4, 5))])
    np.testing.assert_array_equal(y, x[:, 0:2, 1:5, 1:6])
    assert_gradients({"type": "Crop", "crop_param": {"offset": [1, 2]}}, [x, target])
    assert_contract({"type": "Crop", "crop_param": {"offset": [1, 2]}}, [x, target])


@pytest.mark.parametrize(
    "param,target,message",
    [
        ({"offset": [4, 0]}, (2, 3, 4, 5), "crop exceeds the input on axis 2"),
        ({}, (2, 3, 9, 5), "crop exceeds the input"),
        ({"offset": [1, 1, 1]}, (2, 3, 4, 5), "offset has 3 values"),
    ],
)
def test_crop_errors(param, target, message):
    with pytest.raises(ConfigError, match=message) as info:
        make_layer({"type": "Crop", "crop_param": param}, [np.zeros((2, 3, 7, 8)), np.zeros(target)])
    assert "(2, 3, 7, 8)" in str(info.value)
