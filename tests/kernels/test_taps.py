"""Convolution tap by tap (netlayers.kernels.taps) against direct convolution formulas (float64
to rounding, float32 to 1e-5 of the output's scale), its spans and rule, and its choice inside
the Convolution layer."""

import numpy as np
import pytest
from layer_harness import assert_gradients, make_layer
from reference import assert_form_matches_direct, assert_one_gradient_alone

from netlayers.kernels import taps
from netlayers.kernels.taps import TapConvolution


def test_a_taps_span_is_where_it_reads_inside_the_input():
    # DeepLab's rate 24 on a 33 x 33 map: the outer taps read the image for 9 outputs each
    assert [taps.tap_span(33, 33, t, 24, 24) for t in range(3)] == [(24, 33), (0, 33), (0, 9)]
    assert taps.inside_share(33, 33, 3, 24, 24) == pytest.approx(51 / 99)
    # padding beyond the kernel's reach: a tap that never reads the input
    assert taps.tap_span(9, 3, 0, 3, 1) == (3, 6) and taps.tap_span(9, 3, 2, 3, 1) == (1, 4)
    assert taps.tap_span(5, 1, 0, 2, 3) == (2, 3) and taps.tap_span(5, 1, 2, 2, 3) == (0, 0)
    assert taps.inside_share(8, 8, 3, 1, 1) == pytest.approx(22 / 24)  # "same" 3x3: the rims


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({}, True),  # ASPP's rate 12 on 33 x 33: 57 % of the pairs inside
        ({"dilation": (24, 24), "pad": (24, 24)}, True),
        ({"dilation": (8, 8), "pad": (8, 8)}, True),  # 70 %
        ({"dilation": (6, 6), "pad": (6, 6)}, False),  # 78 %: im2col's one product wins
        ({"dilation": (1, 1), "pad": (1, 1)}, False),  # an ordinary 3x3 layer
        ({"stride": (2, 2)}, False),
        ({"groups": 2}, False),
        ({"channels": 64}, False),  # products of inner size 64 too thin (FCN's 3-channel pad 100)
        ({"outputs": 64}, False),
        ({"kernel": (1, 1), "dilation": (1, 1), "pad": (3, 3), "batch": 9}, True),  # 1x1 padded by 3 on 5 x 5
        ({"kernel": (1, 1), "dilation": (1, 1), "pad": (3, 3), "batch": 8}, False),  # 8 x 11 x 11 < MIN_PIXELS
        ({"batch": 1}, True),  # one 33 x 33 image: 1089 output pixels
        ({"kernel": (4, 4), "dilation": (1, 1), "pad": (2, 2), "size": (7, 7), "batch": 1}, False),  # 64 pixels
    ],
)
def test_the_rule_of_when_it_runs(changes, expected):
    geometry = dict(
        kernel=(3, 3), stride=(1, 1), dilation=(12, 12), pad=(12, 12), groups=1, channels=512, outputs=256, batch=2
    )
    geometry.update(changes)
    size = geometry.pop("size", (5, 5) if geometry["kernel"] == (1, 1) else (33, 33))
    out_size = tuple(
        s + 2 * p - d * (k - 1) for s, p, d, k in zip(size, geometry["pad"], geometry["dilation"], geometry["kernel"])
    )
    assert taps.applies(**geometry, size=size, out_size=out_size) is expected


CASES = [  # (N, C, H, W), outputs, kernel, pad, dilation
    ((2, 3, 9, 8), 4, (3, 3), (6, 6), (6, 6)),  # dilation 6 on a map smaller than two rates
    ((3, 2, 7, 9), 3, (3, 3), (10, 10), (1, 1)),  # padding beyond the kernel: outputs of the bias alone
    ((2, 3, 7, 9), 2, (3, 5), (4, 1), (3, 2)),  # unequal kernel sides, paddings, dilations
    ((1, 4, 5, 5), 3, (1, 1), (2, 3), (1, 1)),  # a padded 1x1 layer
    ((5, 2, 6, 6), 3, (3, 3), (4, 4), (4, 4)),  # more images than workers
]


def run(x, weight, bias, dy, pad, dilation, dtype, dx_wanted=True, weight_wanted=True):
    """(y, dx, dweight) tap by tap in ``dtype``; dweight starts at 1 (gradients add); dx starts
    as NaN (written whole)."""
    out_size = dy.shape[2:]
    conv = TapConvolution(x.shape, weight.shape[0], weight.shape[2:], pad, dilation, out_size, dtype)
    conv.filters(weight.astype(dtype))
    y = np.full(dy.shape, np.nan, dtype)
    conv.forward(x.astype(dtype), None if bias is None else bias.astype(dtype), y)
    dx = np.full(x.shape, np.nan, dtype) if dx_wanted else None
    dweight = np.ones(weight.shape, dtype) if weight_wanted else None
    conv.backward(x.astype(dtype), dy.astype(dtype), dx, dweight)
    return y, dx, None if dweight is None else dweight - 1


@pytest.mark.parametrize("shape, outputs, kernel, pad, dilation", CASES)
@pytest.mark.parametrize("workers, chunk_bytes", [(1, taps.CHUNK_BYTES), (2, taps.CHUNK_BYTES), (2, 1)])
def test_taps_match_the_direct_convolution(
    shape, outputs, kernel, pad, dilation, workers, chunk_bytes, thread_count, monkeypatch
):
    """chunk_bytes 1: a chunk of one image; with 2 workers and a large call the copies, sums
    and products are cut over both (``parallel.SPLIT_MIN_BYTES`` lowered)."""
    thread_count(workers)
    monkeypatch.setattr(taps, "CHUNK_BYTES", chunk_bytes)
    monkeypatch.setattr(taps.parallel, "SPLIT_MIN_BYTES", 1)
    assert_form_matches_direct(run, shape, outputs, kernel, pad, dilation)


def test_one_gradient_alone_and_no_bias():
    assert_one_gradient_alone(run, *CASES[0])


def aspp_layer(forced, monkeypatch, dtype=np.float64):
    """A Convolution layer of DeepLab's shape in small (rate 4 on 6 x 7, 8 -> 8 channels), with
    the tap rule's channel and pixel floors lowered (``forced``) or the rule off."""
    monkeypatch.setattr(taps, "MIN_CHANNELS", 1 if forced else 10**9)
    monkeypatch.setattr(taps, "MIN_PIXELS", 1)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 8, 6, 7))
    spec = {
        "type": "Convolution",
        "convolution_param": {
            "num_output": 8,
            "kernel_size": 3,
            "pad": 4,
            "dilation": 4,
            "weight_filler": {"type": "gaussian"},
            "bias_filler": {"type": "gaussian"},
        },
    }
    return make_layer(spec, [x], dtype=dtype) + (spec, x)


def test_the_layer_runs_its_taps_where_the_rule_says_and_agrees_with_im2col(monkeypatch):
    results = []
    for forced in (True, False):
        layer, bottom, top, _, _ = aspp_layer(forced, monkeypatch)
        assert (layer.by_taps is not None) is forced
        layer.forward(bottom, top)
        top[0].diff[...] = np.random.default_rng(3).standard_normal(top[0].shape)
        layer.backward(top, [True], bottom)
        results.append([top[0].data.copy(), bottom[0].diff.copy()] + [blob.diff.copy() for blob in layer.blobs])
    for tapped, columns in zip(*results):
        np.testing.assert_allclose(tapped, columns, rtol=0, atol=1e-12 * np.abs(columns).max())


def test_the_layers_gradients_check_numerically_tap_by_tap(monkeypatch):
    layer, _, _, spec, x = aspp_layer(True, monkeypatch)
    assert layer.by_taps is not None
    assert_gradients(spec, [x])
