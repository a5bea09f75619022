"""InnerProduct: both ways of computing y = x W^T (direct, or y^T = W x^T then transposed)
give the layer's math, and the rule choosing between them."""

import numpy as np
import pytest
from layer_harness import assert_gradients, forward_backward

from netlayers.layers import inner_product

GAUSS = {"type": "gaussian", "std": 1.0}


def inner(num_output, axis=1):
    param = {"num_output": num_output, "axis": axis, "weight_filler": GAUSS, "bias_filler": GAUSS}
    return {"type": "InnerProduct", "inner_product_param": param}


@pytest.mark.parametrize(
    ("shape", "num_output", "direct"),
    [
        ((2, 5), 18, False),  # a small batch of many outputs: transposed
        ((63, 7), 40, False),  # one item short of DIRECT_MIN_BATCH
        ((64, 7), 40, True),  # DIRECT_MIN_BATCH items
        ((7, 3, 2), 3, True),  # a batch of at least twice the outputs
        ((3, 4), 16, True),  # DIRECT_MAX_OUTPUTS outputs
        ((5, 14, 6), 40, True),  # axis 2: 70 rows of 6 features
    ],
)
def test_each_form_computes_the_layers_math(shape, num_output, direct):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape)
    axis = 2 if len(shape) == 3 and num_output == 40 else 1
    rows, features = int(np.prod(shape[:axis])), int(np.prod(shape[axis:]))
    dy = rng.standard_normal((*shape[:axis], num_output))
    layer, y, dx, (dw, db) = forward_backward(inner(num_output, axis), x, dy)
    assert layer.direct == direct
    w, b = layer.blobs[0].data, layer.blobs[1].data
    x2, dy2 = x.reshape(rows, features), dy.reshape(rows, num_output)
    np.testing.assert_allclose(y.reshape(rows, num_output), x2 @ w.T + b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, dy2.T @ x2, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(db, dy2.sum(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx.reshape(rows, features), dy2 @ w, rtol=1e-12, atol=1e-12)


def test_the_batch_rule_follows_its_constant(monkeypatch):
    monkeypatch.setattr(inner_product, "DIRECT_MIN_BATCH", 8)
    layer, *_ = forward_backward(inner(40), np.ones((8, 3)), np.ones((8, 40)))
    assert layer.direct
    monkeypatch.setattr(inner_product, "DIRECT_MIN_BATCH", 9)
    layer, *_ = forward_backward(inner(40), np.ones((8, 3)), np.ones((8, 40)))
    assert not layer.direct


def test_a_large_batch_checks_numerically():
    x = np.random.default_rng(4).standard_normal((64, 3))
    assert_gradients(inner(20), [x])
