"""Vision kernels (im2col/col2im, pooling, LRN window sums) against the slow references in
tests/reference.py, the im2col/col2im adjointness, and the same results with numba disabled."""

import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import reference

from netlayers.kernels import im2col as conv_kernels
from netlayers.kernels import lrn as lrn_kernels
from netlayers.kernels import pooling as pool_kernels

REPO = Path(__file__).resolve().parents[2]

# (kernel, pad, stride, dilation) on 7x8 inputs: square and rectangular, clipped borders
GEOMETRIES = [
    ((3, 3), (0, 0), (1, 1), (1, 1)),
    ((3, 3), (1, 1), (1, 1), (1, 1)),
    ((3, 2), (1, 0), (2, 1), (1, 1)),
    ((2, 3), (2, 1), (1, 3), (1, 2)),
    ((3, 3), (1, 2), (2, 2), (2, 1)),
    ((1, 1), (0, 0), (1, 1), (1, 1)),
    ((5, 5), (2, 2), (3, 3), (1, 1)),
]


def columns(x, geometry, batch_major):
    kernel, pad, stride, dilation = geometry
    out = (
        reference.conv_out(x.shape[2], kernel[0], pad[0], stride[0], dilation[0]),
        reference.conv_out(x.shape[3], kernel[1], pad[1], stride[1], dilation[1]),
    )
    rows = x.shape[1] * kernel[0] * kernel[1]
    shape = (x.shape[0], rows, out[0] * out[1]) if batch_major else (rows, x.shape[0], out[0] * out[1])
    return out, np.full(shape, np.nan, x.dtype)


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("batch_major", [True, False])
def test_im2col_matches_reference(geometry, batch_major, rng):
    x = rng.standard_normal((2, 3, 7, 8))
    out, col = columns(x, geometry, batch_major)
    conv_kernels.im2col(x, *geometry, out, col, batch_major)
    got = col if batch_major else col.transpose(1, 0, 2)
    np.testing.assert_array_equal(got, reference.im2col(x, *geometry))


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("batch_major", [True, False])
def test_col2im_is_the_adjoint_of_im2col(geometry, batch_major, rng):
    """<im2col(x), c> == <x, col2im(c)> for random x and c."""
    x = rng.standard_normal((2, 3, 7, 8))
    out, col = columns(x, geometry, batch_major)
    conv_kernels.im2col(x, *geometry, out, col, batch_major)
    c = rng.standard_normal(col.shape)
    back = np.full(x.shape, np.nan)
    conv_kernels.col2im(c, *geometry, out, back, batch_major)
    np.testing.assert_allclose(np.sum(col * c), np.sum(x * back), rtol=1e-12)


def test_col2im_sums_overlapping_windows():
    """A column of ones folds back into the count of windows covering each pixel."""
    x = np.zeros((1, 1, 4, 4))
    geometry = ((3, 3), (0, 0), (1, 1), (1, 1))
    out, col = columns(x, geometry, True)
    back = conv_kernels.col2im(np.ones_like(col), *geometry, out, x, True)
    counts = np.array([[1, 2, 2, 1], [2, 4, 4, 2], [2, 4, 4, 2], [1, 2, 2, 1]])
    np.testing.assert_array_equal(back[0, 0], counts)


def test_reorder_kernels(rng):
    src = rng.standard_normal((3, 4, 5))
    bias = rng.standard_normal(4)
    out = np.empty((4, 3, 5))
    conv_kernels.nop_to_onp(src, out)
    np.testing.assert_array_equal(out, src.transpose(1, 0, 2))
    back = np.empty_like(src)
    conv_kernels.onp_to_nop(out, bias, back)
    np.testing.assert_array_equal(back, src + bias[None, :, None])
    conv_kernels.add_bias(src, bias)
    np.testing.assert_array_equal(src, back)


def test_add_transposed_adds_each_column_of_the_source_into_its_row_of_the_output(rng):
    """out[m * stride + offsets[r]] += src[r, m]: a plain transpose (offsets 0..R-1), grouped
    offsets and a column range; equal to numpy's transposed add bit for bit."""
    src = rng.standard_normal((37, 21)).astype(np.float32)  # not multiples of the block
    out = rng.standard_normal((21, 37)).astype(np.float32)
    want = out + src.T
    conv_kernels.add_transposed(src, np.arange(37), 37, out.reshape(-1))
    np.testing.assert_array_equal(out, want)
    # 2 groups of 3 rows a group's weight (2, 4 columns, 3 rows): out[g, m, r] += src[g * 3 + r, m]
    src = rng.standard_normal((6, 4))
    out = np.zeros((2, 4, 3))
    offsets = (np.arange(2)[:, None] * 12 + np.arange(3)).reshape(-1)
    conv_kernels.add_transposed(src, offsets, 3, out.reshape(-1), lo=1, hi=3)
    want = np.zeros((2, 4, 3))
    want[:, 1:3] = src.reshape(2, 3, 4).transpose(0, 2, 1)[:, 1:3]
    np.testing.assert_array_equal(out, want)


# -- pooling ----------------------------------------------------------------------------------
POOL_CASES = [  # (kernel, stride, pad) on 7x8 and 6x6 inputs, CEIL unless said
    ((2, 2), (2, 2), (0, 0)),
    ((2, 2), (2, 2), (1, 1)),
    ((2, 2), (1, 1), (0, 0)),
    ((3, 3), (2, 2), (0, 0)),
    ((3, 3), (2, 2), (1, 1)),
    ((3, 3), (1, 1), (1, 1)),
    ((3, 2), (2, 1), (1, 0)),
    ((4, 4), (3, 3), (2, 2)),
    ((1, 1), (1, 1), (0, 0)),
]


def distinct(rng, shape):
    return rng.permutation(int(np.prod(shape))).reshape(shape).astype(np.float64) / 7.0


@pytest.mark.parametrize("kernel,stride,pad", POOL_CASES)
@pytest.mark.parametrize("size", [(7, 8), (6, 6)])
@pytest.mark.parametrize("round_mode", ["CEIL", "FLOOR"])
def test_pooling_forward_and_backward_match_reference(kernel, stride, pad, size, round_mode, rng):
    x = distinct(rng, (2, 3) + size)
    for method in ("MAX", "AVE"):
        expected, argmax = reference.pooling(x, kernel, stride, pad, method, round_mode)
        y = np.full(expected.shape, np.nan)
        dy = rng.standard_normal(expected.shape)
        dx = np.full(x.shape, np.nan)
        if method == "MAX":
            mask = np.full(expected.shape, -7, np.int32)
            pool_kernels.max_pool_forward(x, kernel, stride, pad, y, mask)
            np.testing.assert_array_equal(mask, argmax)
            pool_kernels.max_pool_backward(dy, mask, dx)
        else:
            pool_kernels.ave_pool_forward(x, kernel, stride, pad, y)
            pool_kernels.ave_pool_backward(dy, kernel, stride, pad, dx)
        np.testing.assert_allclose(y, expected, rtol=1e-12)
        # the backward is the adjoint of the (linear, for fixed argmax) forward
        if method == "AVE":
            v = rng.standard_normal(x.shape)
            pooled = np.empty_like(y)
            pool_kernels.ave_pool_forward(v, kernel, stride, pad, pooled)
            np.testing.assert_allclose(np.sum(pooled * dy), np.sum(v * dx), rtol=1e-10)
        else:
            expected_dx = np.zeros(x.shape)
            flat = expected_dx.reshape(2, 3, -1)
            for n, c in itertools.product(range(2), range(3)):
                np.add.at(flat[n, c], argmax[n, c].ravel(), dy[n, c].ravel())
            np.testing.assert_allclose(dx, expected_dx)


def test_max_pooling_ties_take_the_first_index():
    x = np.zeros((1, 1, 4, 4))
    y = np.empty((1, 1, 2, 2))
    mask = np.empty((1, 1, 2, 2), np.int32)
    pool_kernels.max_pool_forward(x, (2, 2), (2, 2), (0, 0), y, mask)
    np.testing.assert_array_equal(mask[0, 0], [[0, 2], [8, 10]])
    x[0, 0, 1, 1] = x[0, 0, 0, 1] = 5.0  # a tie inside the first window
    pool_kernels.max_pool_forward(x, (3, 3), (1, 1), (0, 0), np.empty((1, 1, 2, 2)), mask)
    assert mask[0, 0, 0, 0] == 1


def test_max_pool_backward_accepts_a_float_mask(rng):
    x = distinct(rng, (2, 2, 4, 4))
    y = np.empty((2, 2, 2, 2))
    mask = np.empty(y.shape, np.int32)
    pool_kernels.max_pool_forward(x, (2, 2), (2, 2), (0, 0), y, mask)
    dy = rng.standard_normal(y.shape)
    a, b = np.empty_like(x), np.empty_like(x)
    pool_kernels.max_pool_backward(dy, mask, a)
    pool_kernels.max_pool_backward(dy, mask.astype(np.float64), b)
    np.testing.assert_array_equal(a, b)


# -- LRN window sums --------------------------------------------------------------------------
@pytest.mark.parametrize("local_size", [1, 3, 5, 9])
def test_lrn_window_sums_match_direct_sums(local_size, rng):
    x = rng.standard_normal((2, 6, 3, 4))
    half = (local_size - 1) // 2
    across = np.empty_like(x)
    lrn_kernels.channel_window_sum(x, local_size, across, squared=True)
    for c in range(6):
        expected = np.sum(x[:, max(0, c - half) : c + half + 1] ** 2, axis=1)
        np.testing.assert_allclose(across[:, c], expected, rtol=1e-12, atol=1e-12)
    within = np.empty_like(x)
    lrn_kernels.plane_window_sum(x, local_size, within)
    padded = np.pad(x, ((0, 0), (0, 0), (half, half), (half, half)))
    for i, j in itertools.product(range(3), range(4)):
        np.testing.assert_allclose(
            within[:, :, i, j], padded[:, :, i : i + local_size, j : j + local_size].sum(axis=(2, 3))
        )
    squares = x.copy()  # in place: out is src
    lrn_kernels.plane_window_sum(squares, local_size, squares, squared=True)
    for i, j in itertools.product(range(3), range(4)):
        np.testing.assert_allclose(
            squares[:, :, i, j], (padded[:, :, i : i + local_size, j : j + local_size] ** 2).sum(axis=(2, 3))
        )


# -- numba disabled -------------------------------------------------------------------------
SCRIPT = """
import numpy as np
import netlayers
gauss = {"type": "gaussian", "std": 0.5}
spec = {"force_backward": True, "layers": [
    {"name": "data", "type": "Input", "top": ["data", "target"],
     "input_param": {"shape": [{"dim": [2, 3, 7, 8]}, {"dim": [2, 4, 2, 2]}]}},
    {"name": "conv", "type": "Convolution", "bottom": "data", "top": "conv",
     "convolution_param": {"num_output": 4, "kernel_size": 3, "pad": 1, "stride": 2,
                           "weight_filler": gauss, "bias_filler": gauss}},
    {"name": "max", "type": "Pooling", "bottom": "conv", "top": "max",
     "pooling_param": {"kernel_size": 2, "stride": 2, "pad": 1}},
    {"name": "ave", "type": "Pooling", "bottom": "max", "top": "ave",
     "pooling_param": {"pool": "AVE", "kernel_size": 2, "stride": 1}},
    {"name": "loss", "type": "EuclideanLoss", "bottom": ["ave", "target"], "top": "loss"}]}
net = netlayers.Net(spec, seed=1)
rng = np.random.default_rng(5)
net.forward(data=rng.standard_normal((2, 3, 7, 8)), target=rng.standard_normal((2, 4, 2, 2)))
net.backward()
np.savez(OUT, conv=net.blobs["conv"].data, max=net.blobs["max"].data, ave=net.blobs["ave"].data,
         dx=net.blobs["data"].diff, dw=net.params["conv"][0].diff)
"""


def test_numba_disabled_gives_the_same_results(tmp_path):
    results = {}
    for flag in ("0", "1"):
        out = tmp_path / f"jit{flag}.npz"
        env = dict(os.environ, NUMBA_DISABLE_JIT=flag, PYTHONPATH=str(REPO))
        subprocess.run([sys.executable, "-c", f"OUT = {str(out)!r}\n" + SCRIPT], env=env, check=True, cwd=REPO)
        results[flag] = np.load(out)
    for key in ("conv", "max", "ave", "dx", "dw"):
        assert results["0"][key].any()
        np.testing.assert_array_equal(results["0"][key], results["1"][key], err_msg=key)


VALID_GEOMETRIES = [  # no padding, horizontal stride 1: the _valid kernels (rows of 8: LeNet's conv2)
    ((5, 5), (0, 0), (1, 1), (1, 1), (12, 12)),
    ((3, 3), (0, 0), (1, 1), (1, 1), (10, 9)),
    ((3, 2), (0, 0), (2, 1), (1, 1), (17, 9)),
    ((2, 3), (0, 0), (1, 1), (2, 2), (9, 20)),
    ((1, 1), (0, 0), (3, 1), (1, 1), (7, 8)),
]


@pytest.mark.parametrize("geometry", VALID_GEOMETRIES)
@pytest.mark.parametrize("batch_major", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_valid_kernels_equal_the_general_ones_bit_for_bit(geometry, batch_major, dtype, rng):
    kernel, pad, stride, dilation, size = geometry
    x = rng.standard_normal((3, 2) + size).astype(dtype)
    out, col = columns(x, (kernel, pad, stride, dilation), batch_major)
    col = col.astype(dtype)
    table = conv_kernels.geometry_table(x.shape, kernel, pad, stride, dilation, out)
    general = np.full_like(col, np.nan)
    conv_kernels._im2col(x, kernel[0], kernel[1], stride[0], stride[1], out[0], out[1], table, general, batch_major)
    conv_kernels.im2col(x, kernel, pad, stride, dilation, out, col, batch_major)
    np.testing.assert_array_equal(col, general)
    c = rng.standard_normal(col.shape).astype(dtype)
    back, back_general = np.full_like(x, np.nan), np.full_like(x, np.nan)
    conv_kernels._col2im(
        c, kernel[0], kernel[1], stride[0], stride[1], out[0], out[1], table, back_general, batch_major
    )
    conv_kernels.col2im(c, kernel, pad, stride, dilation, out, back, batch_major)
    np.testing.assert_array_equal(back.view(np.uint8), back_general.view(np.uint8))
