"""1-D Winograd F(m, r) for 1 x r and r x 1 convolutions: the transforms, the layer against the
reference convolution and the same layer through im2col + GEMM (float64, to rounding),
numerical gradients, float32 against float64, and where the rule sends a geometry."""

import numpy as np
import pytest
from layer_harness import assert_gradients, assert_same_results, forward_backward, make_layer
from reference import convolution

from netlayers.kernels import winograd1d
from netlayers.kernels.winograd1d import TILE, AxisConvolution, transforms


@pytest.mark.parametrize("m, r", [(2, 3), (4, 3), (4, 5), (2, 7), (6, 3)])
def test_transforms_compute_the_correlation_of_a_tile(m, r):
    at, g, bt = transforms(m, r)
    n = m + r - 1
    assert at.shape == (m, n) and g.shape == (n, r) and bt.shape == (n, n)
    rng = np.random.default_rng(0)
    for _ in range(5):
        d, w = rng.standard_normal(n), rng.standard_normal(r)
        expected = [np.dot(w, d[i : i + r]) for i in range(m)]
        np.testing.assert_allclose(at @ ((g @ w) * (bt @ d)), expected, rtol=1e-12, atol=1e-12)


def test_f23_gives_lavin_and_grays_matrices():
    at, g, bt = transforms(2, 3)
    np.testing.assert_array_equal(bt, [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, -1, 0, 1]])
    np.testing.assert_array_equal(g, [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
    np.testing.assert_array_equal(at, [[1, 1, 1, 0], [0, 1, -1, 1]])


@pytest.fixture
def everywhere(monkeypatch):
    """The 1-D Winograd path for small test geometries."""
    monkeypatch.setattr(winograd1d, "MIN_CHANNELS", 1)
    monkeypatch.setattr(winograd1d, "MIN_TILES", 1)


def axis_layer(kernel, pad, outputs=4):
    gauss = {"type": "gaussian", "std": 0.5}
    param = {"num_output": outputs, "kernel_h": kernel[0], "kernel_w": kernel[1], "pad_h": pad[0], "pad_w": pad[1]}
    param.update(weight_filler=gauss, bias_filler=gauss)
    return {"type": "Convolution", "convolution_param": param}


CASES = [  # (N, C, H, W), kernel, pad
    ((2, 3, 1, 11), (1, 5), (0, 2)),  # 1-D rows (H 1), outputs no multiple of m
    ((3, 2, 4, 9), (1, 3), (0, 1)),  # several rows an image
    ((2, 3, 9, 5), (7, 1), (3, 0)),  # r x 1: tiles along H, a row is an image plane
    ((1, 2, 3, 13), (1, 7), (0, 0)),  # a batch of 1 (rows shared over the workers), no padding
    ((2, 2, 10, 4), (5, 1), (4, 0)),  # padding past (r - 1) / 2: outputs longer than the input
    ((2, 3, 2, 6), (1, 3), (0, 2)),
]


@pytest.mark.parametrize("shape, kernel, pad", CASES)
@pytest.mark.parametrize("threads", [1, 2])
def test_the_1d_winograd_layer_gives_what_im2col_gives(
    shape, kernel, pad, threads, everywhere, thread_count, monkeypatch
):
    thread_count(threads)
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    spec = axis_layer(kernel, pad)
    out_shape = (shape[0], 4) + tuple(s + 2 * p - k + 1 for s, p, k in zip(shape[2:], pad, kernel))
    dy = rng.standard_normal(out_shape)
    layer, y, dx, diffs = forward_backward(spec, x, dy)
    assert isinstance(layer.winograd, AxisConvolution)
    weight, bias = (b.data for b in layer.blobs)
    np.testing.assert_allclose(y, convolution(x, weight, bias, (1, 1), pad, (1, 1), 1), rtol=1e-10, atol=1e-10)
    monkeypatch.setattr(winograd1d, "applies", lambda *args: False)
    other = forward_backward(spec, x, dy)
    assert other[0].winograd is None
    assert_same_results((layer, y, dx, diffs), other)


def test_chunks_of_rows_give_the_same_outputs(everywhere, monkeypatch, thread_count):
    """A budget that fits one row a chunk against one chunk a worker: the same outputs, and
    weight gradients to rounding (partials of chunks are summed)."""
    thread_count(2)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 3, 5, 12))
    spec = axis_layer((1, 5), (0, 2))
    dy = rng.standard_normal((3, 4, 5, 12))
    _, y, dx, diffs = forward_backward(spec, x, dy)
    monkeypatch.setattr(winograd1d, "CHUNK_BYTES", 1)
    layer, y1, dx1, diffs1 = forward_backward(spec, x, dy)
    assert layer.winograd.chunk_rows == 1
    np.testing.assert_array_equal(y1, y)
    np.testing.assert_array_equal(dx1, dx)
    for diff, diff1 in zip(diffs, diffs1):
        np.testing.assert_allclose(diff1, diff, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel, pad, shape", [((1, 5), (0, 2), (2, 2, 2, 7)), ((3, 1), (1, 0), (2, 2, 6, 3))])
def test_numerical_gradients_of_a_1d_winograd_layer(kernel, pad, shape, everywhere):
    x = np.random.default_rng(2).standard_normal(shape)
    layer, _, _ = make_layer(axis_layer(kernel, pad, outputs=3), [x])
    assert isinstance(layer.winograd, AxisConvolution)
    assert_gradients(axis_layer(kernel, pad, outputs=3), [x])


@pytest.mark.parametrize("kernel, pad", [((1, 5), (0, 2)), ((1, 7), (0, 3)), ((3, 1), (1, 0))])
def test_float32_stays_close_to_the_float64_convolution(kernel, pad):
    """At sizes where the rule sends the layer to 1-D Winograd by itself (64 channels)."""
    rng = np.random.default_rng(3)
    shape = (2, 64, 1, 128) if kernel[0] == 1 else (2, 64, 64, 4)
    x = rng.standard_normal(shape)
    layer, bottom, top = make_layer(axis_layer(kernel, pad, outputs=64), [x], dtype=np.float32)
    assert isinstance(layer.winograd, AxisConvolution)
    layer.forward(bottom, top)
    weight, bias = (b.data.astype(np.float64) for b in layer.blobs)
    padded = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    expected = np.zeros(top[0].data.shape) + bias[:, None, None]
    height, width = expected.shape[2:]
    for u in range(kernel[0]):
        for v in range(kernel[1]):
            window = padded[:, :, u : u + height, v : v + width]
            expected += np.einsum("nchw,oc->nohw", window, weight[:, :, u, v])
    assert np.abs(top[0].data - expected).max() <= 1e-5 * np.abs(expected).max()


@pytest.mark.parametrize(
    "kernel, stride, pad, channels, out_size, runs",
    [
        ((1, 5), (1, 1), (0, 2), 128, (1, 256), True),
        ((5, 1), (1, 1), (2, 0), 128, (64, 16), True),
        ((1, 3), (1, 1), (0, 1), 64, (64, 64), True),
        ((1, 5), (1, 1), (0, 2), 32, (1, 256), False),  # too few channels
        ((1, 7), (1, 1), (0, 3), 128, (17, 17), False),  # 9 tiles a row
        ((1, 5), (2, 2), (0, 2), 128, (1, 128), False),  # strided
        ((1, 5), (1, 1), (1, 2), 128, (3, 256), False),  # padding across the kernel's axis
        ((1, 9), (1, 1), (0, 4), 128, (1, 256), False),  # no tile size for 9 taps
        ((3, 3), (1, 1), (1, 1), 128, (64, 64), False),
        ((5, 1), (1, 1), (2, 0), 128, (512, 512), False),  # one row's V past MAX_ROW_BYTES
    ],
)
def test_where_1d_winograd_runs(kernel, stride, pad, channels, out_size, runs):
    assert winograd1d.applies(kernel, stride, (1, 1), pad, 1, channels, channels, out_size, 4) is runs


def test_every_tile_size_keeps_at_most_eight_points():
    assert all(m + r - 1 <= 8 for r, m in TILE.items())
