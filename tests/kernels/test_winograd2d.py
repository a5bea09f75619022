"""Winograd F(4x4, 5x5) and F(2x2, 7x7) for 5 x 5 and 7 x 7 convolutions: the layer against the
reference convolution and the same layer through row strips or im2col + GEMM (float64, to
rounding), chunks of images, images in bands of tile rows, numerical gradients, float32 against
float64, and where the rule sends a geometry."""

import numpy as np
import pytest
from layer_harness import assert_gradients, assert_same_results, forward_backward, make_layer, pass_with_added_gradients
from reference import convolution

from netlayers.kernels import winograd2d
from netlayers.kernels.winograd2d import SquareConvolution
from netlayers.warmup import WINOGRAD_EVERYWHERE


@pytest.fixture
def everywhere(monkeypatch):
    """The 2-D Winograd path for small test geometries."""
    for name, value in dict(WINOGRAD_EVERYWHERE, MIN_SHARE_OUTPUTS=1).items():
        monkeypatch.setattr(winograd2d, name, value)


def square_layer(pad, outputs=4, group=1, kernel=5):
    gauss = {"type": "gaussian", "std": 0.5}
    param = {"num_output": outputs, "kernel_size": kernel, "pad_h": pad[0], "pad_w": pad[1], "group": group}
    param.update(weight_filler=gauss, bias_filler=gauss)
    return {"type": "Convolution", "convolution_param": param}


def output_shape(shape, pad, outputs=4, kernel=5):
    return (shape[0], outputs) + tuple(s + 2 * p - kernel + 1 for s, p in zip(shape[2:], pad))


CASES = [  # (N, C, H, W), pad, groups, kernel
    ((2, 3, 9, 11), (2, 2), 1, 5),  # outputs no multiple of the 4 x 4 tile
    ((3, 2, 8, 8), (0, 0), 1, 5),  # no padding
    ((1, 3, 12, 10), (2, 1), 1, 5),  # a batch of 1, another padding a axis
    ((2, 2, 6, 7), (4, 3), 1, 5),  # padding past 2: outputs larger than the input
    ((2, 3, 5, 13), (2, 0), 1, 5),
    ((2, 4, 9, 8), (2, 2), 2, 5),  # two groups, each its own convolution
    ((2, 3, 9, 11), (3, 3), 1, 7),  # 7 x 7: 2 x 2 tiles, an odd output
    ((3, 2, 10, 9), (0, 1), 1, 7),  # 7 x 7 unpadded down the rows
    ((1, 2, 6, 7), (5, 4), 1, 7),  # padding past 3
    ((2, 4, 8, 8), (3, 3), 2, 7),
]


@pytest.mark.parametrize("shape, pad, group, kernel", CASES)
@pytest.mark.parametrize("threads", [1, 2])
def test_the_2d_winograd_layer_gives_what_the_other_paths_give(
    shape, pad, group, kernel, threads, everywhere, thread_count, monkeypatch
):
    thread_count(threads)
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    spec = square_layer(pad, group=group, kernel=kernel)
    dy = rng.standard_normal(output_shape(shape, pad, kernel=kernel))
    layer, y, dx, diffs = forward_backward(spec, x, dy)
    assert isinstance(layer.winograd, SquareConvolution)
    weight, bias = (b.data for b in layer.blobs)
    expected = convolution(x, weight, bias, (1, 1), pad, (1, 1), group)
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)
    monkeypatch.setattr(winograd2d, "applies", lambda *args: False)
    other = forward_backward(spec, x, dy)
    assert other[0].winograd is None
    assert_same_results((layer, y, dx, diffs), other)


@pytest.mark.parametrize("kernel", [5, 7])
@pytest.mark.parametrize("data_gradient", [True, False])
@pytest.mark.parametrize("bands", [False, True])
def test_a_grouped_layer_of_fewer_images_than_workers_runs_by_groups(
    kernel, data_gradient, bands, everywhere, thread_count, monkeypatch
):
    """One image in 3 groups on 2 workers: each worker takes whole groups (2 and 1, the first
    summing two weight-gradient partials; without a data gradient each group's dU sums in its
    own U), in bands of tile rows or not: the outputs and gradients of one worker, to
    rounding."""
    if bands:
        monkeypatch.setattr(winograd2d, "CHUNK_BYTES", 1)
        monkeypatch.setattr(winograd2d, "BAND_BYTES", 1)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 6, 11, 10))
    spec = square_layer((kernel // 2, kernel // 2), outputs=6, group=3, kernel=kernel)
    results = []
    for threads in (1, 2):
        thread_count(threads)
        layer, result = pass_with_added_gradients(spec, x, data_gradient)
        assert isinstance(layer.winograd, SquareConvolution)
        assert layer.winograd._by_groups() is (threads == 2)
        assert (len(layer.winograd.bands) > 1) is bands
        results.append(result)
    for one, two in zip(*results):
        np.testing.assert_allclose(two, one, rtol=1e-11, atol=1e-11)


def test_chunks_of_images_give_the_same_outputs(everywhere, monkeypatch, thread_count):
    """A budget of one image a chunk against one chunk a worker: the same outputs, and weight
    gradients to rounding (partials of chunks are summed)."""
    thread_count(2)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 3, 9, 10))
    spec = square_layer((2, 2))
    dy = rng.standard_normal(output_shape(x.shape, (2, 2)))
    layer, y, dx, diffs = forward_backward(spec, x, dy)
    square = layer.winograd
    assert square.chunk_images > 1
    # one image's V (64 values, 4 outputs, 4 slots wide, 3 tile rows, float64): it fits, two do not
    monkeypatch.setattr(winograd2d, "CHUNK_BYTES", 64 * 4 * square.slots_w * square.tiles_h * 8)
    layer, y1, dx1, diffs1 = forward_backward(spec, x, dy)
    assert layer.winograd.chunk_images == 1 and len(layer.winograd.bands) == 1
    np.testing.assert_array_equal(y1, y)
    np.testing.assert_array_equal(dx1, dx)
    for diff, diff1 in zip(diffs, diffs1):
        np.testing.assert_allclose(diff1, diff, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "kernel, shape, pad, rows",
    [
        (5, (3, 3, 17, 10), (2, 2), 1),
        (5, (2, 3, 17, 10), (1, 2), 2),
        (7, (3, 2, 13, 9), (3, 3), 1),
        (7, (2, 2, 15, 8), (3, 2), 3),
    ],
)
@pytest.mark.parametrize("threads", [1, 2])
def test_images_larger_than_a_chunk_run_in_bands_of_tile_rows(
    kernel, shape, pad, rows, threads, everywhere, monkeypatch, thread_count
):
    """An image whose V exceeds CHUNK_BYTES runs in bands of ``rows`` tile rows (BAND_BYTES),
    the last band shorter where the rows do not divide: the outputs, the input gradient (the
    bands' parts added where their patches overlap) and the weight gradient equal the whole
    image's to rounding and the reference convolution's."""
    thread_count(threads)
    rng = np.random.default_rng(6)
    x = rng.standard_normal(shape)
    spec = square_layer(pad, kernel=kernel)
    dy = rng.standard_normal(output_shape(shape, pad, kernel=kernel))
    whole, y, dx, diffs = forward_backward(spec, x, dy)
    assert len(whole.winograd.bands) == 1
    square = whole.winograd
    monkeypatch.setattr(winograd2d, "CHUNK_BYTES", 1)
    monkeypatch.setattr(winograd2d, "BAND_BYTES", 64 * 4 * square.slots_w * rows * 8)
    layer, y1, dx1, diffs1 = forward_backward(spec, x, dy)
    bands = layer.winograd.bands
    assert len(bands) == -(-square.tiles_h // rows) > 1 and all(b - a <= rows for a, b in bands)
    assert bands[0][0] == 0 and bands[-1][1] == square.tiles_h
    assert all(bands[k][1] == bands[k + 1][0] for k in range(len(bands) - 1))
    weight, bias = (b.data for b in layer.blobs)
    np.testing.assert_allclose(y1, convolution(x, weight, bias, (1, 1), pad, (1, 1), 1), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(y1, y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx1, dx, rtol=1e-12, atol=1e-12)
    for diff, diff1 in zip(diffs, diffs1):
        np.testing.assert_allclose(diff1, diff, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel, pad", [(5, (2, 1)), (7, (3, 2))])
def test_numerical_gradients_of_a_2d_winograd_layer(kernel, pad, everywhere):
    x = np.random.default_rng(2).standard_normal((2, 2, 6, 7))
    layer, _, _ = make_layer(square_layer(pad, outputs=3, kernel=kernel), [x])
    assert isinstance(layer.winograd, SquareConvolution)
    assert_gradients(square_layer(pad, outputs=3, kernel=kernel), [x])


@pytest.mark.parametrize("kernel, channels, outputs", [(5, 96, 192), (7, 128, 128)])
def test_float32_stays_close_to_the_float64_convolution(kernel, channels, outputs, monkeypatch):
    """NiN's conv2's channels at 16 x 16, and a 7 x 7 layer of a pose net's stages (two images:
    the rule's minimum of output pixels lowered to take them)."""
    monkeypatch.setattr(winograd2d, "MIN_SHARE_OUTPUTS", 256)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, channels, 16, 16))
    half = kernel // 2
    layer, bottom, top = make_layer(square_layer((half, half), outputs, kernel=kernel), [x], dtype=np.float32)
    assert isinstance(layer.winograd, SquareConvolution)
    layer.forward(bottom, top)
    weight, bias = (b.data.astype(np.float64) for b in layer.blobs)
    padded = np.pad(x, ((0, 0), (0, 0), (half, half), (half, half)))
    expected = np.zeros(top[0].data.shape) + bias[:, None, None]
    for u in range(kernel):
        for v in range(kernel):
            expected += np.einsum("nchw,oc->nohw", padded[:, :, u : u + 16, v : v + 16], weight[:, :, u, v])
    assert np.abs(top[0].data - expected).max() <= 2e-5 * np.abs(expected).max()


@pytest.mark.parametrize(
    "kernel, stride, dilation, groups, channels, out_size, runs",
    [
        ((5, 5), (1, 1), (1, 1), 1, 96, (16, 16), True),
        ((5, 5), (1, 1), (1, 1), 1, 32, (8, 8), True),
        ((5, 5), (1, 1), (1, 1), 1, 20, (8, 8), False),  # LeNet's conv2: too few channels for the size
        ((5, 5), (1, 1), (1, 1), 1, 16, (28, 28), True),  # GoogLeNet's 5 x 5 branch
        ((5, 5), (1, 1), (1, 1), 1, 16, (14, 14), False),
        ((5, 5), (1, 1), (1, 1), 1, 8, (64, 64), False),  # too few channels
        ((5, 5), (1, 1), (1, 1), 1, 96, (4, 4), False),  # too small an output
        ((5, 5), (2, 2), (1, 1), 1, 96, (16, 16), False),
        ((5, 5), (1, 1), (2, 2), 1, 96, (16, 16), False),
        ((5, 5), (1, 1), (1, 1), 2, 96, (16, 16), True),  # AlexNet's conv2: 48 channels a group
        ((5, 5), (1, 1), (1, 1), 2, 32, (16, 16), True),  # 16 channels a group at 16 x 16
        ((5, 5), (1, 1), (1, 1), 2, 32, (8, 8), False),  # 16 channels a group at 8 x 8
        ((7, 7), (1, 1), (1, 1), 1, 96, (16, 16), True),  # as F(2x2, 7x7)
        ((7, 7), (1, 1), (1, 1), 1, 128, (46, 46), True),  # a pose net's stage: in bands
        ((7, 7), (1, 1), (1, 1), 1, 16, (14, 14), False),
        ((3, 3), (1, 1), (1, 1), 1, 96, (16, 16), False),  # winograd's, not this module's
        ((5, 3), (1, 1), (1, 1), 1, 96, (16, 16), False),
        ((5, 5), (1, 1), (1, 1), 1, 64, (56, 56), True),
        ((5, 5), (1, 1), (1, 1), 1, 64, (112, 112), True),  # one image's V past a chunk: in bands
    ],
)
def test_where_2d_winograd_runs(kernel, stride, dilation, groups, channels, out_size, runs):
    assert winograd2d.applies(kernel, stride, dilation, groups, channels, channels, out_size, 16) is runs


@pytest.mark.parametrize(
    "batch, out_size, runs",
    [
        ((16, (8, 8), True)),  # 8 images' 64 pixels: 512
        ((15, (8, 8), True)),  # half of 15 rounds up to 8
        ((14, (8, 8), False)),
        ((4, (16, 16), True)),
        ((2, (16, 16), False)),
        ((1, (23, 23), True)),  # one image: 529 pixels
        ((1, (22, 22), False)),
    ],
)
def test_2d_winograd_needs_512_output_pixels_in_half_the_batch(batch, out_size, runs):
    assert winograd2d.applies((5, 5), (1, 1), (1, 1), 1, 64, 64, out_size, batch) is runs
