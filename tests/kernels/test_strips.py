"""Row-strip convolution against direct convolution formulas and im2col + GEMM (float64 to
rounding, float32 to 1e-5 of the output's scale), its rule, and its choice inside the
Convolution layer."""

import numpy as np
import pytest
from layer_harness import assert_contract, assert_gradients, make_layer
from reference import assert_form_matches_direct, convolution, direct_data_grad, direct_weight_grad, im2col

from netlayers import parallel
from netlayers.blob import Blob
from netlayers.gradcheck import build_layer
from netlayers.kernels import strips, winograd, winograd2d
from netlayers.kernels.strips import StripConvolution


def run(x, weight, bias, dy, pad, dilation, dtype):
    """(y, dx, dweight) by row strips in ``dtype``; dweight starts at 1 (gradients add)."""
    conv = StripConvolution(x.shape, weight.shape[0], weight.shape[2:], pad, dilation, dtype)
    conv.filters(weight.astype(dtype))
    y = np.full(dy.shape, np.nan, dtype)
    conv.forward(x.astype(dtype), bias.astype(dtype), y)
    dx = np.full(x.shape, np.nan, dtype)  # written whole
    dweight = np.ones(weight.shape, dtype)
    conv.backward(x.astype(dtype), dy.astype(dtype), dx, dweight)
    return y, dx, dweight - 1


CASES = [  # (N, C, H, W), outputs, kernel, pad, dilation
    ((1, 1, 5, 5), 1, (5, 5), (0, 0), (1, 1)),  # one output pixel, batch of 1
    ((3, 4, 9, 7), 5, (5, 5), (2, 2), (1, 1)),  # "same" padding, odd non-square sizes
    ((2, 3, 6, 8), 2, (3, 2), (1, 0), (1, 1)),  # non-square kernel
    ((3, 2, 9, 8), 3, (3, 3), (2, 1), (2, 1)),  # dilated rows
    ((2, 3, 4, 5), 2, (3, 3), (3, 2), (1, 1)),  # padding beyond the kernel: the data gradient crops
    ((5, 6, 7, 6), 4, (5, 3), (2, 1), (1, 2)),  # more images than workers, dilated columns
]


def bands_of(rows, monkeypatch):
    """Every correlation in bands of ``rows`` output rows (None: the byte rule's)."""
    if rows is not None:
        monkeypatch.setattr(strips._Correlation, "band_rows", lambda self, itemsize: min(rows, self.out_size[0]))


@pytest.mark.parametrize("shape, outputs, kernel, pad, dilation", CASES)
@pytest.mark.parametrize(
    "workers, chunk_bytes, band",
    [(1, strips.CHUNK_BYTES, None), (2, strips.CHUNK_BYTES, None), (2, 1, None), (2, strips.CHUNK_BYTES, 1), (1, 1, 2)],
)
def test_strips_match_the_direct_convolution(
    shape, outputs, kernel, pad, dilation, workers, chunk_bytes, band, thread_count, monkeypatch
):
    """chunk_bytes 1: chunks of one image (the products then have one image's columns); band:
    images in bands of that many output rows (of one row; of two, the last one short where the
    height is odd)."""
    thread_count(workers)
    monkeypatch.setattr(strips, "CHUNK_BYTES", chunk_bytes)
    bands_of(band, monkeypatch)
    assert_form_matches_direct(run, shape, outputs, kernel, pad, dilation)


def test_the_direct_gradient_formulas_are_im2cols():
    """dW = sum_n dy[n] col[n]^T and <dx, x'> = <dy, conv(x')> for the reference im2col."""
    rng = np.random.default_rng(1)
    kernel, pad, dilation = (3, 2), (2, 1), (2, 1)
    x, weight = rng.standard_normal((2, 3, 6, 5)), rng.standard_normal((4, 3) + kernel)
    col = im2col(x, kernel, pad, (1, 1), dilation)
    y = convolution(x, weight, None, (1, 1), pad, dilation, 1)
    dy = rng.standard_normal(y.shape)
    want = np.einsum("nop,nkp->ok", dy.reshape(2, 4, -1), col).reshape(weight.shape)
    np.testing.assert_allclose(direct_weight_grad(x, dy, kernel, pad, dilation), want, rtol=1e-12, atol=1e-12)
    other = rng.standard_normal(x.shape)
    along = np.vdot(dy, convolution(other, weight, None, (1, 1), pad, dilation, 1))
    np.testing.assert_allclose(np.vdot(direct_data_grad(dy, weight, pad, dilation, x.shape), other), along)


def test_outputs_and_data_gradients_agree_for_any_worker_count(thread_count, monkeypatch):
    """Chunks of other sizes give the same outputs; the data gradient's products then have other
    heights, and OpenBLAS's Haswell kernels (AVX2 machines) round those a little differently
    (seen: 4e-6 on values of 40), so it must agree to float32 rounding, not to the bit."""
    rng = np.random.default_rng(2)
    x, weight = rng.standard_normal((5, 8, 9, 9)).astype(np.float32), rng.standard_normal((6, 8, 5, 5))
    bias, dy = rng.standard_normal(6), rng.standard_normal((5, 6, 9, 9)).astype(np.float32)
    results = []
    configurations = ((1, strips.CHUNK_BYTES, None), (2, strips.CHUNK_BYTES, None), (2, 1, None), (2, 1, 4))
    for workers, chunk_bytes, band in configurations:
        thread_count(workers)
        monkeypatch.setattr(strips, "CHUNK_BYTES", chunk_bytes)
        bands_of(band, monkeypatch)
        y, dx, _ = run(x, weight, bias, dy, (2, 2), (1, 1), np.float32)
        results.append((y, dx))
    for y, dx in results[1:]:
        np.testing.assert_array_equal(y, results[0][0])
        np.testing.assert_allclose(dx, results[0][1], rtol=0, atol=1e-6 * np.abs(results[0][1]).max())


def test_an_image_whose_strips_exceed_the_budget_runs_in_bands_of_rows_that_fit_it(monkeypatch):
    # 4 channels x 5 columns of 9-wide rows: 180 float32 values (720 bytes) a strip row; reach 4
    correlation = strips._Correlation(4, (12, 9), (5, 5), (2, 2), (1, 1))
    assert correlation.out_size == (12, 9) and correlation.image_items() == 20 * 16 * 9
    monkeypatch.setattr(strips, "MAX_IMAGE_BYTES", 20 * 16 * 9 * 4)  # the whole image fits
    assert correlation.band_rows(4) == 12
    monkeypatch.setattr(strips, "MAX_IMAGE_BYTES", 720 * 7)  # 7 strip rows: bands of 3 output rows
    assert correlation.band_rows(4) == 3
    monkeypatch.setattr(strips, "MAX_IMAGE_BYTES", 720)  # not even one band's reach: bands of 1
    assert correlation.band_rows(4) == 1
    conv = StripConvolution((3, 4, 12, 9), 2, (5, 5), (2, 2), (1, 1), np.float32)
    shares = conv._pieces(conv.image)
    pieces = [piece for share in shares for piece in share]
    assert len(shares) == 2 and len(pieces) == 3 * 12  # 36 one-row bands shared by 2 workers
    assert [(p[0].start, p[1].start, len(p[1])) for p in pieces[:13]] == [(k // 12, k % 12, 1) for k in range(13)]


def test_backward_computes_only_what_is_asked():
    rng = np.random.default_rng(3)
    x, weight = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 5, 5))
    dy = rng.standard_normal((2, 4, 6, 6))
    conv = StripConvolution(x.shape, 4, (5, 5), (2, 2), (1, 1), np.float64)
    conv.filters(weight)
    dweight = np.zeros_like(weight)
    conv.backward(x, dy, None, dweight)
    want = direct_weight_grad(x, dy, (5, 5), (2, 2), (1, 1))
    np.testing.assert_allclose(dweight, want, rtol=1e-12, atol=1e-12)
    dx = np.zeros_like(x)
    conv.backward(x, dy, dx, None)
    np.testing.assert_allclose(dx, direct_data_grad(dy, weight, (2, 2), (1, 1), x.shape), rtol=1e-12, atol=1e-12)


# (kernel, stride, dilation, groups, channels, outputs, size, out_size, batch)
CIFAR_CONV2 = ((5, 5), (1, 1), (1, 1), 1, 32, 32, (16, 16), (16, 16), 100)


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({}, True),  # cifar10_quick's conv2
        ({"outputs": 64, "size": (8, 8), "out_size": (8, 8)}, True),  # its conv3
        ({"kernel": (7, 7)}, True),
        ({"kernel": (5, 7), "size": (16, 15)}, True),
        ({"channels": 3}, False),  # cifar10_quick's conv1: too few channels
        ({"channels": 20, "outputs": 50, "size": (12, 12), "out_size": (8, 8)}, False),  # LeNet's conv2
        ({"out_size": (12, 12)}, False),  # no padding: the data gradient would do more work
        ({"kernel": (3, 3)}, False),
        ({"kernel": (5, 3)}, False),
        ({"stride": (2, 2)}, False),
        ({"dilation": (2, 2)}, False),
        ({"groups": 2}, False),  # AlexNet's conv2 has group 2
        ({"channels": 96, "outputs": 256, "size": (27, 27), "out_size": (27, 27)}, True),  # 4.09 MiB: bands
        # few outputs against the input channels: any padding, kernels from 3
        ({"channels": 64, "outputs": 16, "kernel": (3, 3)}, True),  # a prediction head
        ({"outputs": 1, "out_size": (12, 12)}, True),  # SRCNN's last layer, unpadded
        ({"outputs": 8, "kernel": (3, 3)}, True),  # 32 channels, four times the outputs
        ({"outputs": 9, "kernel": (3, 3)}, False),  # fewer than four times
        ({"channels": 256, "outputs": 31, "kernel": (3, 3), "out_size": (14, 14)}, True),
        ({"channels": 256, "outputs": 32, "kernel": (3, 3), "out_size": (14, 14)}, False),  # 32 or more, unpadded
        ({"channels": 256, "outputs": 32, "kernel": (3, 3)}, True),  # "same" padding: strips still
        # ... given a batch of output pixels times kernel rows of FEW_OUTPUTS_MIN_WORK (5120)
        ({"channels": 256, "outputs": 32, "kernel": (3, 3), "batch": 7}, True),  # 7 x 256 x 3 = 5376
        ({"channels": 256, "outputs": 32, "kernel": (3, 3), "batch": 6}, False),  # 4608
        ({"channels": 1024, "outputs": 64, "kernel": (4, 4), "size": (8, 8), "out_size": (9, 9), "batch": 2}, False),
        ({"channels": 1024, "outputs": 16, "kernel": (4, 4), "size": (8, 8), "out_size": (9, 9), "batch": 2}, True),
        ({"channels": 16, "outputs": 4}, False),  # too few input channels
        ({"outputs": 1, "kernel": (1, 5)}, False),  # a side below 3
        ({"outputs": 1, "stride": (2, 2)}, False),
        ({"channels": 512, "outputs": 1, "size": (64, 64), "out_size": (64, 64)}, True),  # 42.5 MiB: bands
        # many channels need a batch of output pixels times kernel rows of MIN_WORK (10240)
        ({"batch": 8}, True),  # 8 x 256 pixels x 5 rows = 10240
        ({"batch": 7}, False),
        ({"batch": 2, "size": (28, 28), "out_size": (28, 28), "kernel": (7, 7)}, True),  # 10976
        ({"batch": 2, "size": (16, 16), "out_size": (16, 16), "kernel": (7, 7)}, False),
        ({"batch": 1, "channels": 64, "outputs": 16, "kernel": (3, 3)}, True),  # few outputs: any batch
    ],
)
def test_the_rule_of_when_it_runs(changes, expected):
    names = ["kernel", "stride", "dilation", "groups", "channels", "outputs", "size", "out_size", "batch"]
    geometry = dict(zip(names, CIFAR_CONV2), **changes)
    assert strips.applies(**geometry) is expected


def convolution_layer(shape, outputs, dtype, **params):
    layer = {
        "name": "conv",
        "type": "Convolution",
        "bottom": ["x"],
        "top": ["y"],
        "convolution_param": {
            "num_output": outputs,
            "kernel_size": 5,
            "pad": 2,
            "weight_filler": {"type": "gaussian", "std": 0.05},
            "bias_filler": {"type": "gaussian"},
            **params,
        },
    }
    instance, _, _ = build_layer(layer, [shape])
    instance.dtype = np.dtype(dtype)
    bottom, top = [Blob(shape, dtype, name="x")], [Blob((), dtype, name="y")]
    bottom[0].data[...] = np.random.default_rng(3).standard_normal(shape)
    instance.setup(bottom, top)
    return instance, bottom, top


def strips_and_im2col(shape, outputs, dtype, use_strips, **params):
    """The layer's (y, dx, dW, db) as row strips, then as im2col + GEMM (``use_strips(use)`` sets
    the rule for each run), and the strips' layer."""
    results, layers = [], []
    with parallel.single_threaded_blas:
        for use in (True, False):
            use_strips(use)
            layer, bottom, top = convolution_layer(shape, outputs, dtype, **params)
            assert (layer.strips is not None) == use and layer.winograd is None
            layer.forward(bottom, top)
            top[0].diff[...] = np.random.default_rng(4).standard_normal(top[0].shape)
            layer.backward(top, [True], bottom)
            results.append([top[0].data, bottom[0].diff, layer.blobs[0].diff, layer.blobs[1].diff])
            layers.append(layer)
    return zip(*results), layers[0]


@pytest.mark.parametrize("dtype, tolerance", [(np.float32, 1e-5), (np.float64, 1e-12)])
def test_the_convolution_layer_runs_strips_where_they_apply_and_gives_im2cols_results(dtype, tolerance, monkeypatch):
    shape = (3, 32, 8, 8)  # cifar10_quick's conv3, three images (F(4x4, 5x5) takes it by itself)
    monkeypatch.setattr(winograd2d, "applies", lambda *args: False)

    monkeypatch.setattr(strips, "MIN_WORK", 1)  # three 8 x 8 images: a batch too small for the rule

    def use_strips(use):
        monkeypatch.setattr(strips, "MIN_CHANNELS", 32 if use else 10**9)

    pairs, _ = strips_and_im2col(shape, 64, dtype, use_strips)
    for got, want in pairs:
        assert got.dtype == dtype
        assert np.abs(got - want).max() <= tolerance * np.abs(want).max()


@pytest.mark.parametrize("outputs, kernel, pad", [(1, 5, 0), (3, 3, 0), (2, 3, 1), (4, 5, 1)])
def test_few_outputs_run_as_strips_with_im2cols_results(outputs, kernel, pad, monkeypatch):
    """Few outputs against the input channels, padded or not: strips, with im2col's values."""

    def use_strips(use):
        monkeypatch.setattr(strips, "FEW_OUTPUTS_RATIO", 4 if use else 10**9)

    pairs, _ = strips_and_im2col((3, 32, 9, 8), outputs, np.float64, use_strips, kernel_size=kernel, pad=pad)
    for got, want in pairs:
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("outputs, grad_banded", [(36, True), (2, False)])
def test_a_layer_in_bands_gives_im2cols_results(outputs, grad_banded, monkeypatch):
    """An image over ``MAX_IMAGE_BYTES`` of strips runs in bands, inside the Convolution layer;
    with 2 outputs the data gradient's strips (10 rows) fit, and it runs on whole images."""
    monkeypatch.setattr(winograd2d, "applies", lambda *args: False)
    monkeypatch.setattr(strips, "MIN_WORK", 1)
    whole = strips.MAX_IMAGE_BYTES

    def use_strips(use):  # 16,000 bytes a strip row (200 rows x 10 columns x 8): bands of 8 with the reach
        monkeypatch.setattr(strips, "MAX_IMAGE_BYTES", 8 * 16000 if use else whole)
        monkeypatch.setattr(strips, "MIN_CHANNELS", 32 if use else 10**9)

    pairs, layer = strips_and_im2col((2, 40, 11, 10), outputs, np.float64, use_strips)
    use_strips(True)  # the budget the strips ran with: bands of a few rows
    assert 1 < layer.strips.image.band_rows(8) < 11
    assert (layer.strips.grad.band_rows(8) < 11) == grad_banded
    for got, want in pairs:
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_grouped_convolutions_stay_on_im2col():
    layer, _, _ = convolution_layer((1, 64, 6, 6), 64, np.float32, group=2)
    assert layer.strips is None and layer.chunks is not None


SMALL_STRIPS = {  # two bottoms sharing the weights, a non-square kernel with "same" padding
    "type": "Convolution",
    "bottom": ["a", "b"],
    "top": ["ya", "yb"],
    "convolution_param": {
        "num_output": 3,
        "kernel_h": 3,
        "kernel_w": 2,
        "pad_h": 1,
        "pad_w": 1,
        "weight_filler": {"type": "gaussian"},
        "bias_filler": {"type": "gaussian"},
    },
}


@pytest.fixture
def strips_everywhere(monkeypatch):
    monkeypatch.setattr(strips, "MIN_KERNEL", 1)
    monkeypatch.setattr(strips, "MIN_CHANNELS", 1)
    monkeypatch.setattr(strips, "MIN_WORK", 1)


def test_a_strip_convolution_layer_keeps_the_layer_contract(strips_everywhere):
    rng = np.random.default_rng(5)
    bottoms = [rng.standard_normal((2, 2, 5, 6)), rng.standard_normal((2, 2, 5, 6))]
    layer, _, _ = make_layer(SMALL_STRIPS, bottoms)
    assert layer.strips is not None
    assert_gradients(SMALL_STRIPS, bottoms)
    assert_contract(SMALL_STRIPS, bottoms)


def test_the_warmup_compiles_the_strip_kernel(monkeypatch):
    """warmup.py's one-image pass sets the strip and Winograd thresholds at 1: a Convolution
    example must then run the strip kernel, in float32 and float64."""
    from netlayers.warmup import builtin_examples, run_example

    for name in ("MIN_CHANNELS", "MIN_OUTPUT_SIZE", "MIN_CHANNELS_BY_SIZE"):
        monkeypatch.setattr(winograd, name, 1)
    monkeypatch.setattr(strips, "MIN_KERNEL", 1)
    monkeypatch.setattr(strips, "MIN_CHANNELS", 1)
    monkeypatch.setattr(strips, "MIN_WORK", 1)
    calls = set()
    kernel = strips.make_strips

    def record(source, *args):
        calls.add(source.dtype.name)
        return kernel(source, *args)

    monkeypatch.setattr(strips, "make_strips", record)
    for type_name, example in builtin_examples():
        if type_name == "Convolution":
            for dtype in (np.float32, np.float64):
                run_example(type_name, example, dtype)
    assert calls == {"float32", "float64"}
