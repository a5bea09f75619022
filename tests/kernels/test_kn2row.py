"""Convolution as per-image products over the input (netlayers.kernels.kn2row) against direct
convolution formulas (float64 to rounding, float32 to 1e-5 of the output's scale), its shifted
sums and copies, its rule, and its choice inside the Convolution layer."""

import numpy as np
import pytest
from layer_harness import assert_gradients, make_layer
from reference import assert_form_matches_direct, assert_one_gradient_alone

from netlayers.kernels import kn2row
from netlayers.kernels.kn2row import Kn2rowConvolution


def shifted_sum(z, kernel, pad, dilation, out_size, bias):
    """add_taps' formula, written out: y[o, i, j] = bias[o] + sum of z[(o, u, v), i - ph + u dh,
    j - pw + v dw] over the taps that land inside z."""
    (kh, kw), (ph, pw), (dh, dw) = kernel, pad, dilation
    outputs, height, width = len(bias), z.shape[1], z.shape[2]
    y = np.empty((outputs,) + tuple(out_size))
    for o in range(outputs):
        for i in range(out_size[0]):
            for j in range(out_size[1]):
                total = bias[o]
                for u in range(kh):
                    for v in range(kw):
                        r, c = i - ph + u * dh, j - pw + v * dw
                        if 0 <= r < height and 0 <= c < width:
                            total += z[(o * kh + u) * kw + v, r, c]
                y[o, i, j] = total
    return y


GEOMETRIES = [  # (C-less) image size, outputs, kernel, pad, dilation
    ((6, 7), 2, (3, 3), (1, 1), (1, 1)),
    ((5, 5), 3, (3, 2), (0, 2), (2, 1)),  # unequal sides, a padding wider than the kernel's reach
    ((4, 6), 2, (5, 5), (4, 1), (1, 2)),
    ((3, 3), 1, (3, 3), (5, 5), (1, 1)),  # every output in the padding: the bias alone
]


@pytest.mark.parametrize("size, outputs, kernel, pad, dilation", GEOMETRIES)
@pytest.mark.parametrize("band", [None, 1, 2])
def test_the_shifted_sums_and_copies_follow_their_formulas(size, outputs, kernel, pad, dilation, band):
    """Whole (``band`` None) or band by band of input rows, as the layer calls them."""
    rng = np.random.default_rng(5)
    out_size = tuple(s + 2 * p - d * (k - 1) for s, p, d, k in zip(size, pad, dilation, kernel))
    taps = kernel[0] * kernel[1]
    z = rng.standard_normal((outputs * taps,) + size)
    bias = rng.standard_normal(outputs)
    bands = [(top, min(top + (band or size[0]), size[0])) for top in range(0, size[0], band or size[0])]
    y = np.full((outputs,) + out_size, np.nan)
    for top, end in bands:
        kn2row.add_taps(np.ascontiguousarray(z[:, top:end]), top, *kernel, *pad, *dilation, bias, top == 0, y)
    np.testing.assert_allclose(y, shifted_sum(z, kernel, pad, dilation, out_size, bias), rtol=1e-13, atol=1e-13)
    # spread_taps is add_taps' transpose: <add_taps(z), dy> = <z, spread_taps(dy)> (bias 0)
    dy = rng.standard_normal((outputs,) + out_size)
    dz = np.full(z.shape, np.nan)
    for top, end in bands:
        part = np.full((z.shape[0], end - top, size[1]), np.nan)
        kn2row.spread_taps(dy, top, *kernel, *pad, *dilation, part)
        dz[:, top:end] = part
    kn2row.add_taps(z, 0, *kernel, *pad, *dilation, np.zeros(outputs), True, y)
    assert np.isfinite(dz).all()
    assert np.sum(y * dy) == pytest.approx(np.sum(z * dz), rel=1e-12)


def rule(**changes):
    geometry = dict(kernel=(3, 3), stride=(1, 1), groups=1, channels=512, outputs=16, size=(14, 14), winograd=False)
    geometry.update(changes)
    pad = geometry.pop("pad", (1, 1))
    out_size = tuple(s + 2 * p - (k - 1) for s, p, k in zip(geometry["size"], pad, geometry["kernel"]))
    return kn2row.applies(**geometry, out_size=out_size)


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({}, True),  # a prediction head: 512 -> 16 3x3
        ({"pad": (0, 0)}, True),  # unpadded: 196 input pixels for 144 outputs, still 32 channels an output
        ({"winograd": True}, True),  # 32 channels an output: over F(4x4, 3x3) too
        ({"outputs": 64}, True),  # 8 an output, where no Winograd form applies ...
        ({"outputs": 64, "winograd": True}, False),  # ... but not against one
        ({"outputs": 64, "channels": 1024, "winograd": True}, True),  # 16 an output
        ({"outputs": 32, "channels": 256, "winograd": True}, False),  # Winograd wins below 16 an output
        ({"outputs": 32, "channels": 256}, True),  # none there: 4 an output is enough
        ({"outputs": 32, "channels": 256, "pad": (0, 0)}, False),  # ... with "same" padding only
        ({"outputs": 32, "channels": 96}, False),  # 3 an output
        ({"outputs": 129, "channels": 4096}, False),  # MAX_OUTPUTS
        ({"outputs": 126, "channels": 1024, "winograd": True}, True),  # SSD's class layer: 8 an output of 1024
        ({"outputs": 84, "channels": 512, "winograd": True}, False),  # 6 an output of 512
        ({"kernel": (1, 1), "pad": (0, 0)}, False),  # a 1x1 layer is one product already
        ({"outputs": 4}, False),  # 36 rows of W': too thin a product
        ({"kernel": (1, 7), "outputs": 16, "channels": 64, "pad": (0, 3)}, True),  # Inception's 1 x 7
        ({"stride": (2, 2)}, False),
        ({"groups": 2}, False),
        ({"size": (200, 200)}, True),  # any size: large images run in bands of input rows
    ],
)
def test_the_rule_of_when_it_runs(changes, expected):
    assert rule(**changes) is expected


CASES = [  # (N, C, H, W), outputs, kernel, pad, dilation
    ((4, 8, 6, 7), 2, (3, 3), (1, 1), (1, 1)),  # images shared over the workers
    ((3, 5, 7, 9), 3, (3, 5), (4, 1), (3, 2)),  # unequal kernel sides, paddings, dilations; 3 images: by outputs
    ((1, 6, 5, 5), 4, (2, 2), (0, 0), (1, 1)),  # one image, unpadded
    ((2, 3, 4, 4), 2, (3, 3), (6, 6), (1, 1)),  # padding beyond the kernel: outputs of the bias alone
]


def run(x, weight, bias, dy, pad, dilation, dtype, dx_wanted=True, weight_wanted=True):
    """(y, dx, dweight) as kn2row's products in ``dtype``; dweight starts at 1 (gradients add);
    y and dx start as NaN (written whole)."""
    conv = Kn2rowConvolution(x.shape, weight.shape[0], weight.shape[2:], pad, dilation, dtype)
    conv.filters(weight.astype(dtype))
    y = np.full(dy.shape, np.nan, dtype)
    conv.forward(x.astype(dtype), None if bias is None else bias.astype(dtype), y)
    dx = np.full(x.shape, np.nan, dtype) if dx_wanted else None
    dweight = np.ones(weight.shape, dtype) if weight_wanted else None
    conv.filters(weight.astype(dtype))
    conv.backward(x.astype(dtype), dy.astype(dtype), dx, dweight)
    return y, dx, None if dweight is None else dweight - 1


@pytest.mark.parametrize("shape, outputs, kernel, pad, dilation", CASES)
@pytest.mark.parametrize("workers, band_bytes", [(1, kn2row.BAND_BYTES), (2, kn2row.BAND_BYTES), (3, 1), (2, 3000)])
def test_kn2row_matches_the_direct_convolution(
    shape, outputs, kernel, pad, dilation, workers, band_bytes, thread_count, monkeypatch
):
    """band_bytes 1: bands of one input row; 3000: of one to a few."""
    thread_count(workers)
    monkeypatch.setattr(kn2row, "BAND_BYTES", band_bytes)
    assert_form_matches_direct(run, shape, outputs, kernel, pad, dilation)


def test_one_gradient_alone_and_no_bias():
    assert_one_gradient_alone(run, *CASES[0])


def head_layer(forced, monkeypatch, dtype=np.float64):
    """A Convolution layer shaped as a detection head in small (32 -> 2, 3x3, pad 1, on 5 x 6),
    with kn2row's row floor lowered (``forced``) or its rule off."""
    monkeypatch.setattr(kn2row, "MIN_ROWS", 1)
    monkeypatch.setattr(kn2row, "MAX_OUTPUTS", 64 if forced else 0)
    x = np.random.default_rng(2).standard_normal((3, 32, 5, 6))
    spec = head_spec({"type": "gaussian"}, {"type": "gaussian"})
    return make_layer(spec, [x], dtype=dtype) + (spec, x)


def head_spec(weight_filler, bias_filler):
    """A 3x3 Convolution of 2 outputs, padding 1."""
    param = {"num_output": 2, "kernel_size": 3, "pad": 1, "weight_filler": weight_filler, "bias_filler": bias_filler}
    return {"type": "Convolution", "convolution_param": param}


def test_the_layer_runs_kn2row_where_the_rule_says_and_agrees_with_its_other_form(monkeypatch):
    results = []
    for forced in (True, False):
        layer, bottom, top, _, _ = head_layer(forced, monkeypatch)
        assert (layer.kn2row is not None) is forced
        layer.forward(bottom, top)
        top[0].diff[...] = np.random.default_rng(3).standard_normal(top[0].shape)
        layer.backward(top, [True], bottom)
        results.append([top[0].data.copy(), bottom[0].diff.copy()] + [blob.diff.copy() for blob in layer.blobs])
    for products, other in zip(*results):
        np.testing.assert_allclose(products, other, rtol=0, atol=1e-12 * np.abs(other).max())


def test_the_layers_gradients_check_numerically_as_kn2row(monkeypatch):
    layer, _, _, spec, x = head_layer(True, monkeypatch)
    assert layer.kn2row is not None
    assert_gradients(spec, [x])


@pytest.mark.parametrize("bias", [0.0, 0.25])
def test_outputs_over_all_zero_fields_are_exactly_the_bias(bias, monkeypatch):
    """As on every convolution path (README): outputs whose receptive field is padding or zero
    input alone are the bias bit for bit, as im2col + GEMM gives them, so a ReLU after the layer
    keeps the same outputs."""
    rng = np.random.default_rng(6)
    x = np.maximum(rng.standard_normal((3, 32, 12, 13)), 0)
    x[..., :4, :] = 0  # a zero band: the outputs of rows 0 to 2 see zeros and padding only
    x[..., 6:10, 5:10] = 0  # a zero block: output (7, 7) and its neighbours inside it see zeros only
    x[-1] = 0
    spec = head_spec({"type": "gaussian", "std": 0.5}, {"type": "constant", "value": bias})
    monkeypatch.setattr(kn2row, "MIN_ROWS", 1)
    results = []
    for limit in (64, 0):  # kn2row, then the form the layer takes without it
        monkeypatch.setattr(kn2row, "MAX_OUTPUTS", limit)
        layer, bottom, top = make_layer(spec, [x], dtype=np.float32)
        assert (layer.kn2row is not None) is (limit > 0)
        layer.forward(bottom, top)
        results.append(top[0].data.copy())
    got, expected = results
    exact = expected == np.float32(bias)
    assert exact[:, :, :3].all() and exact[-1].all() and exact[:, :, 7, 7].all() and not exact.all()
    np.testing.assert_array_equal(got[exact], expected[exact])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got > 0, expected > 0)
