"""Embed: lookup values, gradients of the table and bias, the contract, bad indices."""

import numpy as np
import pytest
from layer_harness import assert_contract, assert_gradients, make_layer, run_layer

from netlayers import ConfigError, DataError

GAUSS = {"type": "gaussian", "std": 1.0}


def embed(bias=True, input_dim=5, num_output=3):
    return {
        "type": "Embed",
        "embed_param": {
            "num_output": num_output,
            "input_dim": input_dim,
            "bias_term": bias,
            "weight_filler": GAUSS,
            "bias_filler": GAUSS,
        },
    }


def test_embed_looks_up_rows():
    indices = np.array([[0.0, 4.0, 2.0], [2.0, 2.0, 1.0]])
    layer, (y,) = run_layer(embed(), [indices])
    weight, bias = layer.blobs[0].data, layer.blobs[1].data
    assert weight.shape == (5, 3) and y.shape == (2, 3, 3)
    np.testing.assert_array_equal(y, weight[indices.astype(int)] + bias)
    layer, (y,) = run_layer(embed(bias=False), [indices])
    assert len(layer.blobs) == 1
    np.testing.assert_array_equal(y, layer.blobs[0].data[indices.astype(int)])


def test_embed_gradients_accumulate_repeated_indices():
    indices = np.array([3.0, 1.0, 3.0, 0.0, 3.0])
    report = assert_gradients(embed(), [indices])
    assert [b.name for b in report.blobs] == ["param[0]", "param[1]"]  # no gradient to indices
    assert_contract(embed(), [indices])


@pytest.mark.parametrize("value", [-1.0, 5.0, 1.5, np.nan])
def test_embed_rejects_bad_indices(value):
    layer, bottom, top = make_layer(embed(), [np.array([0.0, 1.0])])
    bottom[0].data[1] = value
    with pytest.raises(DataError) as info:
        layer.forward(bottom, top)
    assert info.value.layer == "Embed"
    assert f"{value:g}" in str(info.value)


def test_embed_setup_errors():
    with pytest.raises(ConfigError, match="input_dim"):
        make_layer({"type": "Embed", "embed_param": {"num_output": 3}}, [np.zeros(2)])
    with pytest.raises(ConfigError, match="num_output': expected an integer >= 1, got 0"):
        make_layer(embed(num_output=0), [np.zeros(2)])
