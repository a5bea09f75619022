"""netlayers.kernels.elementwise: the in-place forms (one memory as input and output, run by
blocks through scratch) give the bits of the two-array forms, for every length around a block."""

import numpy as np
import pytest

from netlayers.kernels import elementwise

SIZES = [1, 5, elementwise.BLOCK - 1, elementwise.BLOCK, elementwise.BLOCK + 3, 3 * elementwise.BLOCK + 17]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("slope", [0.0, 0.25])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_in_place_equals_relu_into_another_array(size, slope, dtype):
    rng = np.random.default_rng(size)
    x, dy = rng.standard_normal(size).astype(dtype), rng.standard_normal(size).astype(dtype)
    x[::7] = 0  # the kink takes the left slope
    y = np.empty_like(x)
    elementwise.relu_forward(x, slope, y)
    np.testing.assert_array_equal(y, np.where(x > 0, x, x * dtype(slope)))
    in_place = x.copy()
    elementwise.relu_forward(in_place, slope, in_place)
    np.testing.assert_array_equal(in_place, y)

    dx = np.empty_like(dy)
    elementwise.relu_backward(x, dy, slope, dx)
    np.testing.assert_array_equal(dx, np.where(x > 0, dy, dy * dtype(slope)))
    d = dy.copy()
    elementwise.relu_backward(x, d, slope, d)
    np.testing.assert_array_equal(d, dx)


@pytest.mark.parametrize("size", SIZES)
def test_elu_backward_in_place_equals_elu_backward_into_another_array(size):
    rng = np.random.default_rng(size)
    x = rng.standard_normal(size).astype(np.float32)
    y = elementwise.elu_forward(x, 0.5, np.empty_like(x), np.empty_like(x))
    dy = rng.standard_normal(size).astype(np.float32)
    dx = np.empty_like(dy)
    elementwise.elu_backward(x, y, dy, 0.5, dx)
    np.testing.assert_array_equal(dx, np.where(x > 0, dy, dy * (y + np.float32(0.5))))
    d = dy.copy()
    elementwise.elu_backward(y, y, d, 0.5, d)  # in place, y stands in for x
    np.testing.assert_array_equal(d, dx)
