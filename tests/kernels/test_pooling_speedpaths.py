"""The pooling kernels' paths (separable windows: the plane-wide stride-1 and stride-2 loops,
the per-row loops with padding, the generic and clipped windows, the NaN repair, the whole
plane's reductions) against direct formulas: Caffe's row-major scan for MAX (value, argmax,
NaN), window sums for AVE, and the same bits for one worker and two."""

import itertools

import numpy as np
import pytest
import reference

from netlayers import parallel
from netlayers.kernels import pooling as pool_kernels
from netlayers.layers.pooling import PoolingWindows, pooled_size

# (kernel, stride, pad, (H, W)): each path and its edges
CASES = [
    ((2, 2), (2, 2), (0, 0), (8, 8)),  # plane-wide stride-2 loop, windows tile the plane
    ((2, 2), (2, 2), (0, 0), (7, 9)),  # ceil: a clipped last row and column
    ((3, 3), (2, 2), (0, 0), (10, 10)),  # cifar/AlexNet-like, clipped last window
    ((3, 3), (2, 2), (0, 0), (11, 13)),  # odd: the last window reaches past the row buffer
    ((3, 3), (1, 1), (0, 0), (7, 6)),  # plane-wide stride-1 loop
    ((2, 2), (1, 1), (0, 0), (5, 7)),
    ((3, 3), (2, 2), (1, 1), (9, 8)),  # padding: per-row stride-2 loop
    ((3, 3), (1, 1), (1, 1), (6, 7)),  # padding: per-row stride-1 loop
    ((2, 3), (1, 2), (1, 0), (7, 9)),  # rectangular, stride 2 on the width only
    ((4, 4), (3, 3), (2, 2), (10, 9)),  # generic windows only
    ((5, 6), (5, 6), (0, 0), (5, 6)),  # kernel = whole plane (global pooling): numpy's reductions
    ((1, 16), (1, 1), (0, 0), (1, 16)),  # the whole plane of a 1-D net, any stride
    ((7, 7), (2, 2), (0, 0), (7, 7)),
    ((1, 1), (1, 1), (0, 0), (3, 4)),
]


def out_shape(shape, kernel, stride, pad):
    padded = any(pad)
    return shape[:2] + tuple(
        pooled_size(s, k, p, st, "CEIL", padded) for s, k, p, st in zip(shape[2:], kernel, pad, stride)
    )


def caffe_max_scan(x, kernel, stride, pad, shape):
    """MAX as Caffe's loop: from the window's first element, strict ``>`` in row-major order
    (so a NaN first element stays, any later NaN is passed over)."""
    y = np.empty(shape, x.dtype)
    arg = np.empty(shape, np.int64)
    height, width = x.shape[2:]
    for n, c, i, j in itertools.product(*map(range, shape)):
        hs, ws = i * stride[0] - pad[0], j * stride[1] - pad[1]
        he, we = min(hs + kernel[0], height), min(ws + kernel[1], width)
        hs, ws = max(hs, 0), max(ws, 0)
        best, at = x[n, c, hs, ws], hs * width + ws
        for h, w in itertools.product(range(hs, he), range(ws, we)):
            if x[n, c, h, w] > best:
                best, at = x[n, c, h, w], h * width + w
        y[n, c, i, j], arg[n, c, i, j] = best, at
    return y, arg


def run_max(x, kernel, stride, pad):
    shape = out_shape(x.shape, kernel, stride, pad)
    y = np.full(shape, 7.0, x.dtype)
    mask = np.full(shape, -7, np.int32)
    pool_kernels.max_pool_forward(x, kernel, stride, pad, y, mask)
    return y, mask


@pytest.mark.parametrize("kernel,stride,pad,size", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_and_backward_match_direct_formulas(kernel, stride, pad, size, dtype, rng):
    x = rng.standard_normal((2, 3) + size).astype(dtype)
    shape = out_shape(x.shape, kernel, stride, pad)
    expected, argmax = reference.pooling(x, kernel, stride, pad, "MAX")
    y, mask = run_max(x, kernel, stride, pad)
    np.testing.assert_array_equal(y, expected.astype(dtype))
    np.testing.assert_array_equal(mask, argmax)
    dy = rng.standard_normal(shape).astype(dtype)
    dx = np.full(x.shape, np.nan, dtype)
    pool_kernels.max_pool_backward(dy, mask, dx)
    expected_dx = np.zeros(x.shape, dtype)
    flat = expected_dx.reshape(x.shape[0] * x.shape[1], -1)
    for plane, (mask_plane, dy_plane) in enumerate(zip(mask.reshape(len(flat), -1), dy.reshape(len(flat), -1))):
        np.add.at(flat[plane], mask_plane, dy_plane)
    np.testing.assert_array_equal(dx, expected_dx)

    tolerance = {"rtol": 2e-6, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-12}
    expected, _ = reference.pooling(x.astype(np.float64), kernel, stride, pad, "AVE")
    y = np.full(shape, np.nan, dtype)
    pool_kernels.ave_pool_forward(x, kernel, stride, pad, y)
    np.testing.assert_allclose(y, expected, **tolerance)
    # backward: each pixel gets the sum of dy / pool_size over the windows that hold it
    expected_dx = np.zeros(x.shape)
    ones = np.ones((1, 1) + size)
    for i, j in itertools.product(*map(range, shape[2:])):
        hs, ws = i * stride[0] - pad[0], j * stride[1] - pad[1]
        he, we = min(hs + kernel[0], size[0] + pad[0]), min(ws + kernel[1], size[1] + pad[1])
        window = ((he - hs) * (we - ws)) * ones[..., max(hs, 0) : min(he, size[0]), max(ws, 0) : min(we, size[1])]
        expected_dx[..., max(hs, 0) : min(he, size[0]), max(ws, 0) : min(we, size[1])] += (
            dy[..., i, j, None, None] / window
        )
    dx = np.full(x.shape, np.nan, dtype)
    pool_kernels.ave_pool_backward(dy, kernel, stride, pad, dx)
    np.testing.assert_allclose(dx, expected_dx, **tolerance)


@pytest.mark.parametrize("kernel,stride,pad,size", CASES)
def test_max_ties_take_caffes_first_index(kernel, stride, pad, size, rng):
    """Values from {0, 1, 2}: most windows hold tied maxima in several rows and columns."""
    x = rng.integers(0, 3, (1, 4) + size).astype(np.float32)
    y, mask = run_max(x, kernel, stride, pad)
    expected, argmax = caffe_max_scan(x, kernel, stride, pad, y.shape)
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(mask, argmax)


@pytest.mark.parametrize("kernel,stride,pad,size", CASES)
def test_max_nan_behaves_as_caffes_scan(kernel, stride, pad, size, rng):
    """NaNs on a fifth of the pixels (so some windows start on one, some hold one later,
    some columns are all NaN): y and the mask are Caffe's scan's."""
    x = rng.standard_normal((1, 4) + size)
    x[rng.random(x.shape) < 0.2] = np.nan
    x[0, 0, :, 0] = np.nan  # a whole NaN column
    y, mask = run_max(x, kernel, stride, pad)
    expected, argmax = caffe_max_scan(x, kernel, stride, pad, y.shape)
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(mask, argmax)
    assert np.isnan(y).any()


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("kernel,stride,pad,size", [CASES[2], CASES[4], CASES[6], CASES[10]])
def test_one_or_two_workers_give_the_same_bits(method, kernel, stride, pad, size, rng, monkeypatch):
    """The layer shares planes (image, channel) out over the workers, a batch of one too."""
    monkeypatch.setattr(parallel, "SPLIT_MIN_BYTES", 0)  # split however small
    saved = parallel.thread_count()
    results = []
    try:
        for workers in (1, 2):
            parallel.set_thread_count(workers)
            for batch in (1, 3):
                x = np.random.default_rng(batch).standard_normal((batch, 5) + size).astype(np.float32)
                shape = out_shape(x.shape, kernel, stride, pad)
                windows = PoolingWindows(method, kernel, pad, stride)
                windows.shape_for(x.shape, shape[2:])
                y = np.empty(shape, np.float32)
                windows.forward(x, y)
                dx = np.empty_like(x)
                windows.backward(np.random.default_rng(7).standard_normal(shape).astype(np.float32), dx)
                results.append((y, dx, None if windows.mask is None else windows.mask.copy()))
    finally:
        parallel.set_thread_count(saved)
    for one, two in zip(results[:2], results[2:]):
        for a, b in zip(one, two):
            np.testing.assert_array_equal(a, b)
    single, _ = reference.pooling(
        np.random.default_rng(1).standard_normal((1, 5) + size).astype(np.float32), kernel, stride, pad, method
    )
    np.testing.assert_allclose(results[2][0], single, rtol=2e-6, atol=1e-6)
