"""The direct depthwise convolution kernels against the obvious numpy formula, and their
backward passes by the adjoint identities (the forward is linear in x and in w):
<dy, conv(x, w)> = <backward_data(dy, w), x> = <backward_weight(dy, x), w>."""

import numpy as np
import pytest
from reference import depthwise_forward

from netlayers.kernels import depthwise
from netlayers.kernels.depthwise import DepthwiseConvolution
from netlayers.layers.convolution import conv_output_size

GEOMETRIES = [  # (N, C, H, W), kernel, pad, stride, dilation, multiplier
    ((2, 3, 7, 6), (3, 3), (1, 1), (1, 1), (1, 1), 1),
    ((2, 3, 7, 6), (3, 3), (0, 0), (2, 2), (1, 1), 2),
    ((1, 4, 9, 8), (3, 2), (2, 1), (2, 3), (2, 1), 1),
    ((3, 2, 5, 5), (5, 5), (2, 2), (1, 1), (1, 1), 3),
    ((2, 2, 6, 7), (1, 1), (0, 0), (1, 1), (1, 1), 1),
    ((2, 3, 9, 8), (3, 3), (2, 1), (1, 1), (2, 1), 2),  # stride 1, dilated: the grid kernels
    ((2, 2, 6, 7), (3, 3), (0, 0), (1, 1), (1, 1), 1),  # stride 1, no padding
    ((1, 2, 6, 5), (3, 2), (1, 0), (1, 1), (1, 1), 1),  # stride 1, a kernel of 6 taps
    ((2, 2, 5, 6), (3, 3), (3, 3), (1, 1), (1, 1), 1),  # padding beyond the reach: phased data gradient
    ((2, 3, 8, 8), (3, 3), (1, 1), (2, 2), (1, 1), 1),  # MobileNet's downsampling, even side
    ((1, 2, 7, 9), (3, 3), (1, 1), (2, 2), (1, 1), 1),  # odd sides
    ((2, 2, 9, 10), (4, 4), (1, 2), (2, 3), (1, 1), 2),  # phases of unequal tap counts
    ((1, 2, 11, 11), (3, 3), (2, 2), (2, 2), (2, 2), 1),  # stride and dilation 2: one phase of taps
    ((2, 3, 9, 17), (3, 3), (1, 1), (1, 1), (1, 1), 2),  # straight from the planes, 2 outputs a channel
    ((1, 2, 2, 2), (3, 3), (1, 1), (1, 1), (1, 1), 2),  # the smallest plane it takes: all border
    ((2, 2, 2, 18), (3, 3), (1, 1), (1, 1), (1, 1), 1),  # two rows
    ((1, 2, 18, 2), (3, 3), (1, 1), (1, 1), (1, 1), 1),  # two columns
    ((2, 2, 1, 5), (3, 3), (1, 1), (2, 2), (1, 1), 1),  # downsampling one row
    ((1, 3, 6, 1), (3, 3), (1, 1), (2, 2), (1, 1), 1),  # and one column
]


@pytest.fixture(params=["direct", "grid", "channels last"])
def layout(request, monkeypatch):
    """3 x 3 / 1 / padding 1 geometries straight from the planes (the others on the grid); or
    every geometry on the phase grid, or (multiplier 1) channels last, whatever its size."""
    if request.param != "direct":
        monkeypatch.setattr(depthwise, "runs_direct", lambda *geometry: False)
        monkeypatch.setattr(depthwise, "downsamples_direct", lambda *geometry: False)
    monkeypatch.setattr(depthwise, "CHANNELS_LAST_MAX_PIXELS", 1 << 30 if request.param == "channels last" else -1)
    return request.param


@pytest.mark.parametrize("shape, kernel, pad, stride, dilation, multiplier", GEOMETRIES)
def test_depthwise_forward_and_its_adjoints(shape, kernel, pad, stride, dilation, multiplier, layout):
    rng = np.random.default_rng(0)
    n, c, h, w = shape
    out_size = tuple(conv_output_size(*a) for a in zip((h, w), kernel, pad, stride, dilation))
    x = rng.standard_normal(shape)
    weight = rng.standard_normal((c * multiplier, 1) + kernel)
    bias = rng.standard_normal(c * multiplier)
    conv = DepthwiseConvolution(shape, out_size, kernel, pad, stride, dilation, multiplier)
    large = h * w >= depthwise.DIRECT_MIN_PIXELS or multiplier > 1
    direct = (kernel, pad, stride, dilation) == ((3, 3), (1, 1), (1, 1), (1, 1)) and large
    assert conv.direct == (layout == "direct" and direct)
    downsampling = (kernel, pad, stride, dilation, multiplier) == ((3, 3), (1, 1), (2, 2), (1, 1), 1)
    assert conv.downsampling == (layout == "direct" and downsampling)
    assert conv.channels_last == (layout == "channels last" and multiplier == 1)
    reach = [(k - 1) * d for k, d in zip(kernel, dilation)]
    assert conv.unit_stride == (stride == (1, 1) and all(p <= r for p, r in zip(pad, reach)))
    y = np.empty((n, c * multiplier) + out_size)
    conv.forward(x, weight, bias, y)
    np.testing.assert_allclose(y, depthwise_forward(x, weight, bias, pad, stride, dilation, multiplier), rtol=1e-12)

    dy = rng.standard_normal(y.shape)
    conv.forward(x, weight, np.zeros_like(bias), y)
    dx = np.full_like(x, np.nan)  # written whole, not added to
    conv.backward_data(dy, weight, dx)
    np.testing.assert_allclose(np.vdot(dy, y), np.vdot(dx, x), rtol=1e-12)
    dw = np.ones_like(weight)  # added to
    conv.backward_weight(dy, x, dw)
    np.testing.assert_allclose(np.vdot(dy, y), np.vdot(dw - 1, weight), rtol=1e-12)


def test_float32_kernels_agree_with_float64():
    rng = np.random.default_rng(1)
    shape, out = (4, 8, 14, 14), (14, 14)
    conv = DepthwiseConvolution(shape, out, (3, 3), (1, 1), (1, 1), (1, 1), 1)
    x, weight, dy = rng.standard_normal(shape), rng.standard_normal((8, 1, 3, 3)), rng.standard_normal(shape)
    results = []
    for dtype in (np.float32, np.float64):
        y, dx, dw = np.empty(shape, dtype), np.empty(shape, dtype), np.zeros((8, 1, 3, 3), dtype)
        conv.forward(x.astype(dtype), weight.astype(dtype), np.zeros(8, dtype), y)
        conv.backward_data(dy.astype(dtype), weight.astype(dtype), dx)
        conv.backward_weight(dy.astype(dtype), x.astype(dtype), dw)
        results.append((y, dx, dw))
    for single, double in zip(*results):
        np.testing.assert_allclose(single, double, rtol=1e-4, atol=1e-4 * np.abs(double).max())


def test_the_convolution_layer_takes_the_direct_path_for_group_equal_to_channels():
    from netlayers.gradcheck import build_layer

    rng = np.random.default_rng(2)
    layer = {
        "name": "dw",
        "type": "Convolution",
        "bottom": "x",
        "top": "y",
        "convolution_param": {
            "num_output": 8,
            "kernel_size": 3,
            "pad": 1,
            "stride": 2,
            "group": 4,
            "weight_filler": {"type": "gaussian"},
            "bias_filler": {"type": "gaussian"},
        },
    }
    instance, bottom, top = build_layer(layer, [(2, 4, 7, 7)])
    bottom[0].data[...] = rng.standard_normal((2, 4, 7, 7))
    instance.setup(bottom, top)
    instance.forward(bottom, top)
    assert instance.depthwise is not None and not hasattr(instance, "products")  # no column buffer
    weight, bias = (blob.data for blob in instance.blobs)
    np.testing.assert_allclose(
        top[0].data, depthwise_forward(bottom[0].data, weight, bias, (1, 1), (2, 2), (1, 1), 2), rtol=1e-12
    )


def test_the_phased_data_gradient_equals_the_flipped_correlation():
    """Stride 1 within the reach takes the correlation of dy with the flipped filter; the
    phased form (one phase: each tap's product added at its shift) gives the same gradient."""
    rng = np.random.default_rng(2)
    shape, kernel, pad = (2, 4, 9, 7), (3, 3), (1, 1)
    conv = DepthwiseConvolution(shape, shape[2:], kernel, pad, (1, 1), (1, 1), 2)
    assert conv.unit_stride
    weight, dy = rng.standard_normal((8, 1, 3, 3)), rng.standard_normal((2, 8, 9, 7))
    flipped, phased = np.empty(shape), np.empty(shape)
    conv.backward_data(dy, weight, flipped)
    conv.unit_stride = False
    conv.backward_data(dy, weight, phased)
    np.testing.assert_allclose(phased, flipped, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("stride", [(1, 1), (2, 2)])
def test_float32_strided_kernels_agree_with_float64(stride, layout):
    rng = np.random.default_rng(3)
    shape, kernel, pad = (3, 5, 12, 11), (3, 3), (1, 1)
    out = tuple(conv_output_size(s, 3, 1, t, 1) for s, t in zip(shape[2:], stride))
    conv = DepthwiseConvolution(shape, out, kernel, pad, stride, (1, 1), 1)
    x, weight = rng.standard_normal(shape), rng.standard_normal((5, 1, 3, 3))
    dy = rng.standard_normal((3, 5) + out)
    results = []
    for dtype in (np.float32, np.float64):
        y, dx, dw = np.empty((3, 5) + out, dtype), np.empty(shape, dtype), np.zeros((5, 1, 3, 3), dtype)
        conv.forward(x.astype(dtype), weight.astype(dtype), np.zeros(5, dtype), y)
        conv.backward_data(dy.astype(dtype), weight.astype(dtype), dx)
        conv.backward_weight(dy.astype(dtype), x.astype(dtype), dw)
        results.append((y, dx, dw))
    for single, double in zip(*results):
        np.testing.assert_allclose(single, double, rtol=1e-4, atol=1e-5 * np.abs(double).max())


def test_channels_last_in_blocks_of_channels_on_two_workers_equals_the_grid(monkeypatch):
    """40 channels in blocks of 16 (the last one partial), the tasks shared over 2 workers: the
    grid's results (float64, to rounding: the sums go in another order)."""
    from netlayers import parallel

    rng = np.random.default_rng(5)
    shape, kernel, pad, stride = (3, 40, 9, 9), (3, 3), (1, 1), (2, 2)
    out = tuple(conv_output_size(s, 3, 1, 2, 1) for s in shape[2:])
    x, weight, bias = rng.standard_normal(shape), rng.standard_normal((40, 1, 3, 3)), rng.standard_normal(40)
    dy = rng.standard_normal((3, 40) + out)
    monkeypatch.setattr(depthwise, "CHANNELS_LAST_BLOCK_BYTES", 1)
    monkeypatch.setattr(parallel, "SPLIT_MIN_BYTES", 0)
    results, saved = [], parallel.thread_count()
    try:
        parallel.set_thread_count(2)
        for most in (-1, 1 << 30):
            monkeypatch.setattr(depthwise, "CHANNELS_LAST_MAX_PIXELS", most)
            conv = DepthwiseConvolution(shape, out, kernel, pad, stride, (1, 1), 1)
            assert conv.channels_last == (most > 0)
            if conv.channels_last:
                assert (conv.block, conv.blocks) == (16, 3)
            y, dx, dw = np.empty((3, 40) + out), np.empty(shape), np.zeros((40, 1, 3, 3))
            conv.forward(x, weight, bias, y)
            conv.backward_data(dy, weight, dx)
            conv.backward_weight(dy, x, dw)
            results.append((y, dx, dw))
    finally:
        parallel.set_thread_count(saved)
    for last, grid in zip(*results):
        np.testing.assert_allclose(last, grid, rtol=1e-12, atol=1e-12)
