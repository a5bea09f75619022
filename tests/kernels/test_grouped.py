"""The direct grouped 3x3 convolution kernels against the obvious formula, their backward passes
by the adjoint identities (the convolution is linear in x and in w), and the Convolution layer
on them against im2col + GEMM."""

import numpy as np
import pytest
from layer_harness import assert_gradients, make_layer
from reference import convolution

from netlayers import parallel
from netlayers.kernels import grouped
from netlayers.kernels.grouped import GroupedConvolution

CASES = [  # (N, C, H, W), outputs, groups, stride
    ((2, 16, 9, 7), 16, 4, 1),  # 4 channels a group, 4 outputs: the four-output passes
    ((2, 16, 9, 7), 16, 4, 2),
    ((3, 12, 8, 8), 6, 3, 2),  # 2 outputs a group: the one-output passes
    ((2, 8, 5, 5), 20, 2, 1),  # 10 outputs a group: four, four, then one by one
    ((5, 8, 20, 20), 8, 2, 1),  # runs of 3 and 2 images side by side
    ((5, 8, 44, 43), 12, 2, 2),  # runs of 2, 2 and 1, an odd width
    ((7, 32, 7, 7), 32, 4, 1),  # a small map: runs of 4 and 3 images
    ((7, 32, 14, 13), 32, 4, 2),
    ((1, 8, 1, 1), 8, 2, 2),  # one pixel
    ((1, 4, 2, 3), 4, 2, 2),
    ((2, 6, 1, 9), 9, 3, 1),  # one row
    ((2, 6, 9, 1), 3, 3, 2),  # one column
    ((3, 64, 3, 5), 64, 2, 1),  # 32 a group, three tiny images side by side sharing their padding
]


def run_kernels(x, weight, bias, groups, stride, dy):
    conv = GroupedConvolution(x.shape, weight.shape[0], stride, groups, x.dtype)
    conv.filters(weight)
    y = np.full((x.shape[0], weight.shape[0]) + conv.out_size, np.nan, x.dtype)
    conv.forward(x, bias, y)
    dx = np.full_like(x, np.nan)  # written whole, not added to
    dw = np.ones_like(weight)  # added to
    conv.backward(x, dy, dx, dw)
    return y, dx, dw - 1


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("shape, outputs, groups, stride", CASES)
def test_grouped_forward_and_its_adjoints(shape, outputs, groups, stride, workers, thread_count, monkeypatch):
    thread_count(workers)
    monkeypatch.setattr(parallel, "SPLIT_MIN_BYTES", 0)  # tiny inputs shared out too
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    weight = rng.standard_normal((outputs, shape[1] // groups, 3, 3))
    bias = rng.standard_normal(outputs)
    expected = convolution(x, weight, bias, (stride, stride), (1, 1), (1, 1), groups)
    dy = rng.standard_normal(expected.shape)
    y, dx, dw = run_kernels(x, weight, bias, groups, stride, dy)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    linear = (expected - bias[:, None, None]).ravel()  # the map without its bias
    np.testing.assert_allclose(np.vdot(dy, linear), np.vdot(dx, x), rtol=1e-12)
    np.testing.assert_allclose(np.vdot(dy, linear), np.vdot(dw, weight), rtol=1e-12)


def test_the_gradients_are_the_definitions_term_by_term():
    """dx and dw element by element (not only through the adjoint identities): each is the
    derivative of sum(dy * y), taken on the reference by finite differences of a linear map
    (exact up to rounding)."""
    rng = np.random.default_rng(1)
    shape, outputs, groups = (2, 6, 5, 4), 6, 3
    x = rng.standard_normal(shape)
    weight = rng.standard_normal((outputs, 2, 3, 3))
    bias = np.zeros(outputs)
    for stride in (1, 2):
        dy = rng.standard_normal(convolution(x, weight, bias, (stride,) * 2, (1, 1), (1, 1), groups).shape)
        _, dx, dw = run_kernels(x, weight, bias, groups, stride, dy)

        def objective(x_, w_, stride=stride, dy=dy):
            return np.vdot(dy, convolution(x_, w_, bias, (stride,) * 2, (1, 1), (1, 1), groups))

        for index in [(0, 0, 0, 0), (1, 5, 4, 3), (0, 3, 2, 1), (1, 2, 0, 3)]:
            unit = np.zeros(shape)
            unit[index] = 1
            assert dx[index] == pytest.approx(objective(unit, weight), rel=1e-12, abs=1e-12)
        for index in [(0, 0, 0, 0), (5, 1, 2, 2), (3, 0, 1, 2), (2, 1, 0, 1)]:
            unit = np.zeros(weight.shape)
            unit[index] = 1
            assert dw[index] == pytest.approx(objective(x, unit), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("stride", [1, 2])
def test_float32_kernels_agree_with_float64(stride):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 64, 14, 14))
    weight = rng.standard_normal((64, 8, 3, 3))
    bias = rng.standard_normal(64)
    dy = rng.standard_normal((4, 64) + ((14 - 1) // stride + 1,) * 2)
    wide = run_kernels(x, weight, bias, 8, stride, dy)
    narrow = run_kernels(*(a.astype(np.float32) for a in (x, weight, bias)), 8, stride, dy.astype(np.float32))
    for got, want in zip(narrow, wide):
        assert got.dtype == np.float32
        assert np.abs(got - want).max() <= 2e-6 * np.abs(want).max()


def test_the_weight_gradient_does_not_depend_on_the_worker_count(thread_count, monkeypatch):
    """Each group's weight gradient is summed over every image by one worker: the same bits on
    one worker and on two; so are the output and the data gradient (each image and group alone)."""
    monkeypatch.setattr(parallel, "SPLIT_MIN_BYTES", 0)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 32, 12, 12)).astype(np.float32)
    weight = rng.standard_normal((32, 8, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(32).astype(np.float32)
    dy = rng.standard_normal((6, 32, 12, 12)).astype(np.float32)
    results = []
    for workers in (1, 2):
        thread_count(workers)
        results.append(run_kernels(x, weight, bias, 4, 1, dy))
    for one, two in zip(*results):
        assert np.array_equal(one, two)


def test_stride_one_images_share_their_padding_on_the_grid():
    """Stride 1: an image takes (H + 1) x (W + 1) grid positions, its one zero row and column
    the padding of both its sides (of the row or image before and the one after); stride 2 keeps
    its phases' own rows and columns."""
    conv = GroupedConvolution((8, 64, 7, 7), 64, 1, 2, np.float32)
    assert (conv.rows, conv.cols, conv.run) == (8, 8, 8)
    assert (conv.grad_rows, conv.grad_cols) == (8, 8)
    assert list(conv.offsets) == [i * 8 + j for i in range(3) for j in range(3)]
    wide = GroupedConvolution((8, 64, 7, 9), 64, 2, 2, np.float32)
    assert (wide.rows, wide.cols) == (5, 6)  # padded 9 x 11 into phases of 5 x 6 (out 4 x 5, + 1)


def test_backward_computes_only_what_is_asked():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 8, 6, 6))
    weight = rng.standard_normal((8, 4, 3, 3))
    dy = rng.standard_normal((2, 8, 3, 3))
    conv = GroupedConvolution(x.shape, 8, 2, 2, x.dtype)
    conv.filters(weight)
    _, dx, dw = run_kernels(x, weight, np.zeros(8), 2, 2, dy)
    alone = np.ones_like(weight)
    conv.backward(x, dy, None, alone)
    np.testing.assert_array_equal(alone - 1, dw)
    only_dx = np.full_like(x, np.nan)
    conv.backward(x, dy, only_dx, None)
    np.testing.assert_array_equal(only_dx, dx)


@pytest.mark.parametrize(
    "kernel, stride, dilation, pad, groups, channels, expected",
    [
        ((3, 3), (1, 1), (1, 1), (1, 1), 32, 256, True),  # ResNeXt-50's second stage, 8 a group
        ((3, 3), (2, 2), (1, 1), (1, 1), 32, 512, True),  # its downsampling, 16 a group
        ((3, 3), (1, 1), (1, 1), (1, 1), 32, 1024, True),  # 32 a group (its last stage)
        ((3, 3), (1, 1), (1, 1), (1, 1), 16, 1024, False),  # 64 a group
        ((3, 3), (1, 1), (1, 1), (1, 1), 64, 64, False),  # depthwise: its own kernels
        ((3, 3), (1, 1), (1, 1), (1, 1), 1, 16, False),  # one group
        ((3, 3), (1, 1), (1, 1), (0, 0), 32, 256, False),  # no padding
        ((3, 3), (3, 3), (1, 1), (1, 1), 32, 256, False),  # stride 3
        ((3, 3), (1, 2), (1, 1), (1, 1), 32, 256, False),  # unequal strides
        ((3, 3), (1, 1), (2, 2), (1, 1), 32, 256, False),  # dilated
        ((5, 5), (1, 1), (1, 1), (1, 1), 32, 256, False),  # 5 x 5
    ],
)
def test_the_rule_of_when_it_runs(kernel, stride, dilation, pad, groups, channels, expected):
    assert grouped.applies(kernel, stride, dilation, pad, groups, channels, channels) is expected


@pytest.mark.parametrize(
    "groups, channels, outputs, expected",
    [
        (2, 64, 64, True),  # 32 in and 32 out a group
        (2, 64, 128, False),  # 64 outputs a group: a group's product is wide enough for GEMM
        (2, 64, 1024, False),
        (32, 256, 1024, True),  # 8 in, 32 out a group
        (32, 256, 2048, False),  # 64 out a group
    ],
)
def test_the_rule_bounds_the_outputs_of_a_group_too(groups, channels, outputs, expected):
    assert grouped.applies((3, 3), (1, 1), (1, 1), (1, 1), groups, channels, outputs) is expected


def test_passes_are_shared_out_by_their_work(thread_count, monkeypatch):
    """A small map of many channels a group moves little memory but computes much: its passes
    are shared out over the workers (8 x 384 channels at 7 x 7 moves 1.2 MB, under the memory
    threshold of ``parallel.over_slices``)."""
    thread_count(2)
    calls = []
    original = parallel.over_slices
    monkeypatch.setattr(
        parallel, "over_slices", lambda fn, length, nbytes: calls.append(nbytes) or original(fn, length, nbytes)
    )
    x = np.zeros((8, 384, 7, 7), np.float32)
    run_kernels(x, np.zeros((384, 16, 3, 3), np.float32), np.zeros(384, np.float32), 24, 1, np.zeros_like(x))
    assert len(calls) == 3 and min(calls) >= parallel.SPLIT_MIN_BYTES


def grouped_spec(outputs, groups, stride):
    param = {
        "num_output": outputs,
        "kernel_size": 3,
        "pad": 1,
        "stride": stride,
        "group": groups,
        "weight_filler": {"type": "gaussian"},
        "bias_filler": {"type": "gaussian"},
    }
    return {"type": "Convolution", "bottom": ["x"], "top": ["y"], "convolution_param": param}


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-13), (np.float32, 2e-6)])
def test_the_convolution_layer_runs_them_and_gives_im2cols_results(stride, dtype, tolerance, monkeypatch):
    """Output, data gradient, weight and bias gradients of a grouped layer on the direct kernels
    against the same layer on im2col + GEMM (the rule off)."""
    x = np.random.default_rng(5).standard_normal((3, 24, 11, 10))
    spec = grouped_spec(12, 4, stride)
    results = []
    for direct in (True, False):
        monkeypatch.setattr(grouped, "applies", lambda *geometry, direct=direct: direct)
        layer, bottom, top = make_layer(spec, [x], dtype=dtype)
        assert (type(layer._transformed()) is GroupedConvolution) == direct
        with parallel.single_threaded_blas:
            layer.forward(bottom, top)
            top[0].diff[...] = np.random.default_rng(6).standard_normal(top[0].shape)
            layer.backward(top, [True], bottom)
        results.append([top[0].data.copy(), bottom[0].diff.copy()] + [b.diff.copy() for b in layer.blobs])
    for got, want in zip(*results):
        assert np.abs(got - want).max() <= tolerance * max(1.0, np.abs(want).max())


@pytest.mark.parametrize("stride", [1, 2])
def test_a_direct_grouped_layer_passes_the_gradient_check(stride):
    spec = grouped_spec(6, 3, stride)
    x = np.random.default_rng(7).standard_normal((2, 6, 5, 6))
    layer, _, _ = make_layer(spec, [x])
    assert type(layer._transformed()) is GroupedConvolution
    assert_gradients(spec, [x])
