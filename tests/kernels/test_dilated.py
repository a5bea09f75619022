"""Dilated 3x3 convolutions as Winograd over the input's phases: the phase reorderings against
numpy's strided views, the layer against the same layer run as im2col + GEMM (float64, to
rounding), numerical gradients, and where the rule sends a geometry."""

import numpy as np
import pytest
from layer_harness import assert_gradients, assert_same_results, forward_backward, make_layer
from reference import convolution

from netlayers.kernels import dilated, winograd
from netlayers.kernels.dilated import PhaseConvolution, from_phases, to_phases
from netlayers.warmup import WINOGRAD_EVERYWHERE


@pytest.mark.parametrize("height, width, dh, dw", [(7, 9, 2, 2), (8, 8, 3, 2), (5, 6, 2, 3), (12, 12, 4, 4)])
def test_phases_are_the_strided_views_and_go_back(height, width, dh, dw):
    x = np.random.default_rng(0).standard_normal((3, height, width))
    rows, cols = -(-height // dh), -(-width // dw)
    phases = np.full((dh, dw, 3, rows, cols), np.nan)
    to_phases(x, phases)
    padded = np.zeros((3, dh * rows, dw * cols))
    padded[:, :height, :width] = x
    for r in range(dh):
        for s in range(dw):
            np.testing.assert_array_equal(phases[r, s], padded[:, r::dh, s::dw])
    back = np.full_like(x, np.nan)
    from_phases(phases, back)
    np.testing.assert_array_equal(back, x)


@pytest.fixture
def small_winograd(monkeypatch):
    """Winograd (and so the phases) for small test geometries; ``f4`` chooses F(4x4, 3x3)."""
    for name, value in WINOGRAD_EVERYWHERE.items():
        monkeypatch.setattr(winograd, name, value)

    def choose(f4):
        monkeypatch.setattr(winograd, "MIN_CHANNELS_F4", 1 if f4 else 1 << 20)

    return choose


def dilated_layer(dilation, outputs=4):
    pads = dict(zip(("pad_h", "pad_w"), dilation))
    gauss = {"type": "gaussian", "std": 0.5}
    param = {"num_output": outputs, "kernel_size": 3, "dilation": list(dilation), "weight_filler": gauss}
    param.update(pads, bias_filler=gauss)
    return {"type": "Convolution", "convolution_param": param}


CASES = [  # (N, C, H, W), dilation
    ((2, 3, 8, 8), (2, 2)),
    ((3, 2, 7, 9), (2, 2)),  # sizes that are no multiple of the dilation: phases of unequal sizes
    ((1, 3, 10, 11), (2, 3)),  # a batch of 1, another dilation a axis
    ((2, 2, 13, 12), (4, 4)),
]


@pytest.mark.parametrize("shape, dilation", CASES)
@pytest.mark.parametrize("f4", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
def test_the_phases_give_what_im2col_gives(shape, dilation, f4, threads, small_winograd, thread_count, monkeypatch):
    small_winograd(f4)
    thread_count(threads)
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    spec = dilated_layer(dilation)
    layer, y, dx, diffs = forward_backward(spec, x, dy := rng.standard_normal((shape[0], 4) + shape[2:]))
    assert isinstance(layer.winograd, PhaseConvolution)
    weight, bias = (b.data for b in layer.blobs)
    expected = convolution(x, weight, bias, (1, 1), dilation, dilation, 1)
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)
    monkeypatch.setattr(dilated, "applies", lambda *args: False)
    other = forward_backward(spec, x, dy)
    assert other[0].winograd is None
    assert_same_results((layer, y, dx, diffs), other)


def test_numerical_gradients_of_a_dilated_layer_run_as_phases(small_winograd):
    small_winograd(False)
    x = np.random.default_rng(2).standard_normal((2, 2, 6, 7))
    layer, _, _ = make_layer(dilated_layer((2, 2), outputs=3), [x])
    assert isinstance(layer.winograd, PhaseConvolution)
    assert_gradients(dilated_layer((2, 2), outputs=3), [x])


def same_dilated(x, weight, bias, rate):
    """The 3x3 convolution with dilation and padding ``rate``, tap by tap (tests.reference's
    loops take minutes at these sizes; they check the small cases above)."""
    height, width = x.shape[2:]
    padded = np.pad(x, ((0, 0), (0, 0), (rate, rate), (rate, rate)))
    y = np.zeros((x.shape[0], weight.shape[0], height, width)) + bias[:, None, None]
    for u in range(3):
        for v in range(3):
            window = padded[:, :, u * rate : u * rate + height, v * rate : v * rate + width]
            y += np.einsum("nchw,oc->nohw", window, weight[:, :, u, v])
    return y


def test_float32_phases_stay_close_to_the_float64_convolution():
    """At sizes where the rule sends a dilated layer to the phases by itself (64 channels,
    64 px, dilation 2 and 4)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 64, 64, 64))
    for rate in (2, 4):
        layer, bottom, top = make_layer(dilated_layer((rate, rate), outputs=64), [x], dtype=np.float32)
        assert isinstance(layer.winograd, PhaseConvolution)
        layer.forward(bottom, top)
        weight, bias = (b.data.astype(np.float64) for b in layer.blobs)
        expected = same_dilated(x, weight, bias, rate)
        assert np.abs(top[0].data - expected).max() <= 1e-5 * np.abs(expected).max()


@pytest.mark.parametrize(
    "kernel, dilation, pad, size, runs",
    [
        ((3, 3), (2, 2), (2, 2), 64, True),
        ((3, 3), (4, 4), (4, 4), 64, True),
        ((3, 3), (8, 8), (8, 8), 64, True),  # 256 phases of 8 x 8: F(4x4)'s small-map rule
        ((3, 3), (16, 16), (16, 16), 64, False),  # phases of 4 x 4: below every Winograd size
        ((3, 3), (2, 2), (1, 1), 64, False),  # padding other than the dilation
        ((3, 3), (1, 1), (1, 1), 64, False),  # not dilated: Winograd itself
        ((5, 5), (2, 2), (2, 2), 64, False),
    ],
)
def test_where_dilated_layers_run_as_phases(kernel, dilation, pad, size, runs):
    assert dilated.applies(kernel, (1, 1), dilation, pad, 1, 64, 64, (size, size), 4) is runs
