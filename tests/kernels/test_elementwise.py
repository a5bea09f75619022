"""netlayers.kernels.elementwise: the in-place forms (one memory as input and output) give the
bits of the two-array forms, for lengths around vector loops and their tails."""

import math

import numpy as np
import pytest

from netlayers.kernels import elementwise

SIZES = [1, 5, 511, 512, 515, 3 * 512 + 17]  # vector loops and their tails


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("slope", [0.0, 0.25])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_in_place_equals_relu_into_another_array(size, slope, dtype):
    rng = np.random.default_rng(size)
    x, dy = rng.standard_normal(size).astype(dtype), rng.standard_normal(size).astype(dtype)
    x[::7] = 0  # the kink takes the left slope
    x[1::11] = -0.0
    x[2::13] = np.nan  # kept, bit for bit (the in-place forms multiply by 1 or the slope)
    x[3::17] = -np.inf
    y = np.empty_like(x)
    elementwise.relu_forward(x, slope, y)
    with np.errstate(invalid="ignore"):  # -inf * 0 is NaN, as in the kernels
        np.testing.assert_array_equal(y, np.where(x > 0, x, x * dtype(slope)))
    in_place = x.copy()
    elementwise.relu_forward(in_place, slope, in_place)
    np.testing.assert_array_equal(in_place.view(np.uint8), y.view(np.uint8))

    dx = np.empty_like(dy)
    elementwise.relu_backward(x, dy, slope, dx)
    np.testing.assert_array_equal(dx, np.where(x > 0, dy, dy * dtype(slope)))
    d = dy.copy()
    elementwise.relu_backward(x, d, slope, d)
    np.testing.assert_array_equal(d.view(np.uint8), dx.view(np.uint8))


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


POWERS = [3, -1, 0.5, -0.5, 1.5, -2.5, 5, 8, -7.5]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("exponent", POWERS)
def test_power_by_multiplication_is_within_a_few_ulps_of_the_exact_power(size, exponent):
    rng = np.random.default_rng(size)
    x = rng.uniform(0.25, 4.0, size).astype(np.float32)
    x[::2] *= -1 if float(exponent).is_integer() else 1  # negative bases where the power is real
    y = elementwise.power(x, exponent, np.empty_like(x))
    exact = np.power(x.astype(np.float64), exponent)
    np.testing.assert_allclose(y, exact, rtol=8 * np.finfo(np.float32).eps, atol=0)
    in_place = x.copy()
    elementwise.power(in_place, exponent, in_place)
    np.testing.assert_array_equal(in_place, y)


@pytest.mark.parametrize("exponent", [-1, -0.5, 0.5, 3, -2, 2.5])
def test_power_edge_values_follow_c_pow(exponent):
    """Zeros and infinities as C99's pow (numpy's float32 power is not consistent about the sign
    of -0 to a half power: -0 for 0.5, which it takes as sqrt, +0 for 2.5)."""
    x = np.array([0.0, -0.0, np.inf, np.nan, -2.0, 3.0], np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = elementwise.power(x, exponent, np.empty_like(x))
    expected = [math.pow(v, exponent) if not (v < 0 and exponent % 1) else math.nan for v in x.tolist()[2:]]
    np.testing.assert_array_equal(y[2:], np.array(expected, np.float32))
    odd = exponent % 2 == 1
    zero_power = np.float32(0.0 if exponent > 0 else math.inf)
    np.testing.assert_array_equal(y[:2], [zero_power, -zero_power if odd else zero_power])
    np.testing.assert_array_equal(np.signbit(y[:2]), [False, odd])  # -0 to an odd power keeps its sign


@pytest.mark.parametrize("exponent", [0.3, 9, -9.5, 2.25, float("nan"), float("inf")])
def test_other_powers_are_numpys(exponent):
    x = np.random.default_rng(0).uniform(0.5, 2.0, 100).astype(np.float32)
    y = elementwise.power(x, exponent, np.empty_like(x))
    np.testing.assert_array_equal(y, np.power(x, np.float32(exponent)))


@pytest.mark.parametrize("exponent", [1, 2, -0.5, 0.5, 2.5, 0.75, -9])
@pytest.mark.parametrize("size", [7, 3 * 1024 * 1024 + 5])  # one worker; cut over the workers
def test_power_times_a_factor_is_the_power_then_the_product_in_one_pass(exponent, size, thread_count):
    """power(x, e, out, times=t, scale=s) = x^e * t * s, the same bits as the power and then
    the product (Power's backward: base^(p - 1) dy p scale), on the multiplied path and on
    numpy's (0.75, -9), with ``out`` apart or the factor itself."""
    thread_count(2)
    rng = np.random.default_rng(size)
    x = rng.uniform(0.25, 4.0, size).astype(np.float32)
    t = rng.standard_normal(size).astype(np.float32)
    want = np.empty_like(x)
    elementwise.scaled_product(elementwise.power(x, exponent, np.empty_like(x)), t, 1.5, want)
    got = elementwise.power(x, exponent, np.empty_like(x), times=t, scale=1.5)
    np.testing.assert_array_equal(got, want)
    in_place = t.copy()
    elementwise.power(x, exponent, in_place, times=in_place, scale=1.5)
    np.testing.assert_array_equal(in_place, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [7, 3 * 1024 * 1024 + 5])
def test_affine_rounds_as_numpys_product_then_sum(dtype, size, thread_count):
    thread_count(2)
    x = np.random.default_rng(1).standard_normal(size).astype(dtype)
    want = np.multiply(x, dtype(0.1)) + dtype(0.3)
    np.testing.assert_array_equal(elementwise.affine(x, 0.1, 0.3, np.empty_like(x)), want)
    elementwise.affine(x, 0.1, 0.3, x)  # in place
    np.testing.assert_array_equal(x, want)
    zeros = np.array([-0.0, 0.0], dtype)
    np.testing.assert_array_equal(np.signbit(elementwise.affine(zeros, 2, 0, np.empty_like(zeros))), [True, False])
