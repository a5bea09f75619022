"""The BatchNorm kernels against numpy's formulas: the plane kernels (a loop per plane) and the
row kernels (an image's channels as one row: planes below ``ROWS_BELOW`` positions, as after
an InnerProduct), over a share [lo, hi) of the channels, in place and apart."""

import numpy as np
import pytest

from netlayers.kernels import batchnorm as bn

LO, HI = 1, 4  # a worker's share of the 5 channels: the others must stay untouched
EPS = 1e-5


def arrays(size, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((6, 5, size)) * 3 + 1
    return rng, x


def moments(x):
    mean = x.mean(axis=(0, 2))
    var = ((x - mean[None, :, None]) ** 2).mean(axis=(0, 2))
    return mean, var, np.sqrt(var + EPS)


def share(array):
    return array[:, LO:HI]


def kernels_for(size):
    """(moments, chain_forward, normalize_backward, chain_backward) callables: the public
    kernels, and the row kernels called directly where the public ones take the planes."""
    found = [(bn.batch_moments, bn.chain_forward, bn.normalize_backward, bn.chain_backward)]
    if size >= bn.ROWS_BELOW:
        found.append((bn._moments_rows, bn._chain_forward_rows, bn._normalize_backward_rows, bn._chain_backward_rows))
    return found


SIZES = [1, 3, bn.ROWS_BELOW - 1, bn.ROWS_BELOW, 20]


@pytest.mark.parametrize("size", SIZES)
def test_moments(size):
    _, x = arrays(size)
    mean, var, std = moments(x)
    for batch_moments, *_ in kernels_for(size):
        got = [np.full(5, -7.0) for _ in range(3)]
        batch_moments(x, *got, EPS, LO, HI)
        for value, expected in zip(got, (mean, var, std)):
            np.testing.assert_allclose(value[LO:HI], expected[LO:HI], rtol=1e-12)
            assert (value[:LO] == -7).all() and (value[HI:] == -7).all()


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("keep", [True, False])
@pytest.mark.parametrize("in_place", [True, False])
def test_chain_forward(size, keep, in_place):
    rng, x = arrays(size)
    mean, _, std = moments(x)
    scale, bias = rng.standard_normal(5), rng.standard_normal(5)
    v = (x - mean[None, :, None]) / std[None, :, None]
    u = v * scale[None, :, None] + bias[None, :, None]
    expected = np.where(u > 0, u, 0.1 * u)
    for _, chain_forward, *_ in kernels_for(size):
        y = x.copy() if in_place else np.full_like(x, -7.0)
        normalized = np.full_like(x, -7.0)
        chain_forward(y if in_place else x, mean, std, normalized, keep, scale, bias, 0.1, y, LO, HI)
        np.testing.assert_allclose(share(y), share(expected), rtol=1e-12, atol=1e-12)
        if keep:
            np.testing.assert_allclose(share(normalized), share(v), rtol=1e-12, atol=1e-12)
        else:
            assert (normalized == -7).all()
        outside = np.delete(y, range(LO, HI), axis=1)
        assert (outside == (np.delete(x, range(LO, HI), axis=1) if in_place else -7)).all()


@pytest.mark.parametrize("size", [1, 3, 20])
@pytest.mark.parametrize("both", [True, False])
def test_normalize(size, both):
    _, x = arrays(size)
    mean, _, std = moments(x)
    normalized, y = np.full_like(x, -7.0), np.full_like(x, -7.0)
    bn.normalize(x, mean, std, normalized, y, both, LO, HI)
    v = (x - mean[None, :, None]) / std[None, :, None]
    np.testing.assert_allclose(share(normalized), share(v), rtol=1e-12, atol=1e-12)
    if both:
        np.testing.assert_array_equal(share(y), share(normalized))
    else:
        assert (y == -7).all()


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("in_place", [True, False])
def test_normalize_backward(size, in_place):
    rng, x = arrays(size)
    mean, _, std = moments(x)
    v = (x - mean[None, :, None]) / std[None, :, None]
    dy = rng.standard_normal(x.shape)
    expected = (dy - dy.mean(axis=(0, 2), keepdims=True) - v * (dy * v).mean(axis=(0, 2), keepdims=True)) / std[
        None, :, None
    ]
    for *_, normalize_backward, _ in kernels_for(size):
        d = dy.copy()
        dx = d if in_place else np.full_like(x, -7.0)
        normalize_backward(d, v, std, dx, LO, HI)
        np.testing.assert_allclose(share(dx), share(expected), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("mode", [0, 1, 2, 3])
@pytest.mark.parametrize("layout", ["in_place", "apart", "remake"])
def test_chain_backward(size, mode, layout):
    rng, x = arrays(size)
    mean, _, std = moments(x)
    v = (x - mean[None, :, None]) / std[None, :, None]
    scale = rng.standard_normal(5)
    y = rng.standard_normal(x.shape)  # the chain's output: its sign picks ReLU's branch
    dy = rng.standard_normal(x.shape)
    g = np.where(y > 0, dy, 0.2 * dy)
    s1, s2 = (g * v).sum(axis=(0, 2)), g.sum(axis=(0, 2))
    count = x.shape[0] * size
    s, sd = scale[None, :, None], std[None, :, None]
    expected = {
        0: s / sd * (g - s2[None, :, None] / count - v * s1[None, :, None] / count),
        1: g * s / sd,
        2: g * s,
        3: g,
    }[mode]
    for *_, chain_backward in kernels_for(size):
        d = dy.copy()
        apart = layout != "in_place"
        dx = np.full_like(x, -7.0) if apart else d
        remake = layout == "remake"
        sum_gx, sum_g = np.full(5, -7.0), np.full(5, -7.0)
        chain_backward(d, y, x if remake else v, mean, remake, scale, std, 0.2, mode, sum_gx, sum_g, dx, apart, LO, HI)
        np.testing.assert_allclose(share(dx), share(expected), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(sum_gx[LO:HI], s1[LO:HI], rtol=1e-10)
        np.testing.assert_allclose(sum_g[LO:HI], s2[LO:HI], rtol=1e-10)
        if apart:  # the gradient Scale's backward leaves on the blob: g s
            np.testing.assert_allclose(share(d), share(g * s), rtol=1e-12, atol=1e-12)
