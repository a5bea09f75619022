"""Outputs over all-zero receptive fields: exactly the bias on every Winograd path, as im2col +
GEMM gives them (kernels.zero_fields), and ZeroFields.restore against a brute-force reading
of its rule."""

import numpy as np
import pytest
from layer_harness import convolution_spec, make_layer

from netlayers.kernels import deconv, dilated, strips, winograd, winograd1d, winograd2d
from netlayers.kernels.zero_fields import TILE_MARGIN, ZeroFields, padding_only_outputs
from netlayers.warmup import WINOGRAD_EVERYWHERE


def inputs_with_zero_regions(shape, seed=0):
    """Post-ReLU-like data with a zero frame of 3, a zero block inside, a block zero in the
    first half of the channels only (one group's) and a zero image last."""
    rng = np.random.default_rng(seed)
    x = np.maximum(rng.standard_normal(shape), 0)
    x[..., :3, :] = x[..., -3:, :] = 0
    x[..., :, :3] = x[..., :, -3:] = 0
    h, w = shape[2:]
    x[..., h // 2 - 2 : h // 2 + 4, w // 2 - 3 : w // 2 + 3] = 0
    x[:, : shape[1] // 2, 3:12, w - 12 : w - 3] = 0
    x[-1] = 0
    return x


def forced(monkeypatch, kind):
    """The thresholds that send small test layers down the path ``kind``."""
    for name, value in WINOGRAD_EVERYWHERE.items():
        monkeypatch.setattr(winograd, name, value)
    monkeypatch.setattr(winograd, "MIN_CHANNELS_F4", 10**6 if kind.startswith("f2") else 1)
    monkeypatch.setattr(winograd1d, "MIN_CHANNELS", 1)
    monkeypatch.setattr(winograd1d, "MIN_TILES", 1)
    for name, value in dict(WINOGRAD_EVERYWHERE, MIN_SHARE_OUTPUTS=1).items():
        monkeypatch.setattr(winograd2d, name, value)


def plain(monkeypatch):
    """im2col + GEMM for every convolution (the exact sums)."""
    for module in (winograd, dilated, winograd1d, winograd2d, strips):
        monkeypatch.setattr(module, "applies", lambda *args: False)
    for name in ("applies", "convolution_applies", "subpixel_applies"):
        monkeypatch.setattr(deconv, name, lambda *args: False)


def conv_layer(kernel, pad, dilation=(1, 1), outputs=6, bias=0.0, kind="Convolution", stride=(1, 1), group=1):
    fillers = {"weight_filler": {"type": "gaussian", "std": 0.5}, "bias_filler": {"type": "constant", "value": bias}}
    return convolution_spec(outputs, kernel, pad, stride, dilation=dilation, group=group, kind=kind, **fillers)


CASES = {  # path: (input shape, layer)
    "f4": ((3, 5, 20, 18), conv_layer((3, 3), (1, 1))),
    "f2": ((3, 5, 20, 18), conv_layer((3, 3), (1, 1))),
    "f2 unpadded": ((3, 5, 19, 17), conv_layer((3, 3), (0, 0))),
    "dilated": ((3, 5, 21, 20), conv_layer((3, 3), (2, 2), dilation=(2, 2))),
    "1 x 7": ((3, 5, 9, 22), conv_layer((1, 7), (0, 3))),
    "1 x 3": ((3, 5, 9, 22), conv_layer((1, 3), (0, 1))),
    "5 x 1, padded past the kernel": ((3, 5, 20, 9), conv_layer((5, 1), (6, 0))),
    "5 x 5": ((3, 5, 20, 20), conv_layer((5, 5), (2, 2))),
    "5 x 5, 2 groups": ((3, 6, 20, 20), conv_layer((5, 5), (2, 2), group=2)),
    "sub-pixel Deconvolution": ((3, 5, 12, 12), conv_layer((6, 6), (2, 2), stride=(2, 2), kind="Deconvolution")),
    "sub-pixel Deconvolution, 2 groups": (
        (3, 6, 18, 18),
        conv_layer((10, 10), (2, 2), stride=(2, 2), kind="Deconvolution", group=2),
    ),
}


def forward(layer, x, dtype):
    instance, bottom, top = make_layer(layer, [x], dtype=dtype)
    instance.forward(bottom, top)
    return instance, top[0].data.copy()


@pytest.mark.parametrize("bias", [0.0, 0.25])
@pytest.mark.parametrize("path", list(CASES))
def test_winograd_outputs_over_zero_fields_are_exactly_im2cols(path, bias, monkeypatch):
    shape, layer = CASES[path]
    param = dict(layer["convolution_param"], bias_filler={"type": "constant", "value": bias})
    layer = dict(layer, convolution_param=param)
    x = inputs_with_zero_regions(shape)
    with monkeypatch.context() as patch:
        plain(patch)
        _, expected = forward(layer, x, np.float32)
    forced(monkeypatch, path)
    if path.startswith("sub-pixel Deconvolution"):
        monkeypatch.setattr(deconv, "SUBPIXEL_MIN_OUTPUT_PIXELS", 1)
        monkeypatch.setattr(deconv, "SUBPIXEL_MIN_OUTPUTS", 1)
    instance, got = forward(layer, x, np.float32)
    convolution = instance.inner if path.startswith("sub-pixel Deconvolution") else instance
    assert convolution.winograd is not None, "the test layer must run as Winograd"
    exact = expected == np.float32(bias)  # the outputs over all-zero fields (and any exact hits)
    assert exact.any() and not exact.all()
    np.testing.assert_array_equal(got[exact], expected[exact])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    if bias == 0:  # a ReLU after the layer keeps the same outputs as after im2col
        np.testing.assert_array_equal(got > 0, expected > 0)


def brute_force_fields(x, out_size, kernel, pad, stride, dilation):
    """fields[n, i, j]: every input of x (N, C, H, W) at every tap of output (i, j) of image n is 0
    (or padding)."""
    n_images, _, height, width = x.shape
    zero = (x == 0).all(axis=1)
    fields = np.ones((n_images,) + out_size, bool)
    for i in range(out_size[0]):
        for j in range(out_size[1]):
            for u in range(kernel[0]):
                for v in range(kernel[1]):
                    h = i * stride[0] - pad[0] + u * dilation[0]
                    w = j * stride[1] - pad[1] + v * dilation[1]
                    if 0 <= h < height and 0 <= w < width:
                        fields[:, i, j] &= zero[:, h, w]
    return fields


@pytest.mark.parametrize("seed", range(8))
def test_restore_sets_the_bias_where_a_zero_field_lies_within_a_tile_of_data(seed):
    rng = np.random.default_rng(seed)
    kernel = tuple(int(k) for k in rng.integers(1, 4, 2))
    pad = tuple(int(p) for p in rng.integers(0, 6, 2))
    stride = tuple(int(s) for s in rng.integers(1, 3, 2))
    dilation = tuple(int(d) for d in rng.integers(1, 3, 2))
    groups = 1 + seed % 2
    shape = (2, 4, int(rng.integers(20, 32)), int(rng.integers(20, 32)))
    x = inputs_with_zero_regions(shape, seed).astype(np.float32)
    x[0, :, 4:16, 5:17] = 0  # a block larger than any kernel's extent
    x[0, :, rng.integers(0, shape[2], 40), rng.integers(0, shape[3], 40)] = 0  # scattered zeros
    geometry = zip(shape[2:], kernel, pad, stride, dilation)
    out_size = tuple((s + 2 * p - d * (k - 1) - 1) // st + 1 for s, k, p, st, d in geometry)
    y = rng.standard_normal((2, 6) + out_size).astype(np.float32)
    bias = rng.standard_normal(6).astype(np.float32)
    before = y.copy()
    ZeroFields(shape, out_size, kernel, pad, stride, dilation, groups).restore(x, y, bias)

    margin = [TILE_MARGIN * d for d in dilation]
    channels, outputs = 4 // groups, 6 // groups
    for g in range(groups):  # a group's outputs see its own channels
        group_x = x[:, g * channels : (g + 1) * channels]
        fields = brute_force_fields(group_x, out_size, kernel, pad, stride, dilation)
        near_data = np.zeros_like(fields)
        for i in range(out_size[0]):
            for j in range(out_size[1]):
                box = fields[:, max(0, i - margin[0]) : i + margin[0] + 1, max(0, j - margin[1]) : j + margin[1] + 1]
                near_data[:, i, j] = ~box.reshape(2, -1).all(axis=1)
        restored = fields & near_data
        assert restored.any()
        group_bias = bias[g * outputs : (g + 1) * outputs, None, None]
        expected = np.where(restored[:, None], group_bias, before[:, g * outputs : (g + 1) * outputs])
        np.testing.assert_array_equal(y[:, g * outputs : (g + 1) * outputs], expected)


def test_padding_only_outputs_are_those_whose_taps_along_an_axis_all_miss_the_input():
    assert not padding_only_outputs((8, 8), (8, 8), (3, 3), (1, 1), (1, 1), (1, 1))
    assert padding_only_outputs((8, 8), (12, 8), (3, 3), (3, 1), (1, 1), (1, 1))
    assert not padding_only_outputs((8, 8), (4, 8), (3, 3), (2, 1), (2, 1), (2, 1))  # dilated extent 5
    assert padding_only_outputs((8, 8), (7, 7), (3, 3), (5, 5), (2, 2), (2, 2))
    assert padding_only_outputs((1, 5), (1, 5), (3, 3), (1, 1), (1, 1), (3, 1))  # taps -1 and 2 miss row 0
