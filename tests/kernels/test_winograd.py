"""Winograd F(2x2, 3x3) against direct convolution formulas (float64 to rounding, float32 to
1e-5 of the output's scale), and its choice inside the Convolution layer."""

import numpy as np
import pytest
from layer_harness import assert_contract, assert_gradients, make_layer
from numpy.lib.stride_tricks import sliding_window_view
from reference import convolution

from netlayers import parallel
from netlayers.blob import Blob
from netlayers.gradcheck import build_layer
from netlayers.kernels import grouped, winograd, winograd4
from netlayers.kernels.winograd import WinogradConvolution
from netlayers.kernels.winograd4 import Winograd4Convolution


def windows(x, pad):
    """(N, C, OH, OW, 3, 3) views of the zero-padded x."""
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    return sliding_window_view(padded, (3, 3), axis=(2, 3))


def direct(x, weight, bias, pad):
    return np.einsum("ncijuv,ocuv->noij", windows(x, pad), weight) + bias[:, None, None]


def direct_weight_grad(x, dy, pad):
    return np.einsum("ncijuv,noij->ocuv", windows(x, pad), dy)


def direct_data_grad(dy, weight, pad, image_shape):
    """dx[n, c, i - p + u, j - p + v] += W[o, c, u, v] dy[n, o, i, j], cropped to the image."""
    n, c, h, w = image_shape
    out_h, out_w = dy.shape[2:]
    padded = np.zeros((n, c, h + 2 * pad, w + 2 * pad))
    for u in range(3):
        for v in range(3):
            padded[:, :, u : u + out_h, v : v + out_w] += np.einsum("noij,oc->ncij", dy, weight[:, :, u, v])
    return padded[:, :, pad : pad + h, pad : pad + w]


def direct_case(x, weight, bias, pad, rng):
    """An output gradient dy drawn from ``rng`` and the direct formulas' (y, dx, dweight)."""
    y = direct(x, weight, bias, pad)
    dy = rng.standard_normal(y.shape)
    return dy, (y, direct_data_grad(dy, weight, pad, x.shape), direct_weight_grad(x, dy, pad))


def run(x, weight, bias, dy, pad, dtype, convolution=WinogradConvolution):
    """(y, dx, dweight) by ``convolution`` (a Winograd class) in ``dtype``; dweight starts at 1
    (gradients add)."""
    conv = convolution(x.shape, weight.shape[0], pad, dtype)
    conv.filters(weight.astype(dtype))
    y = np.full(dy.shape, np.nan, dtype)
    conv.forward(x.astype(dtype), bias.astype(dtype), y)
    dx = np.full(x.shape, np.nan, dtype)  # written whole
    dweight = np.ones(weight.shape, dtype)
    conv.backward(x.astype(dtype), dy.astype(dtype), dx, dweight)
    return y, dx, dweight - 1


CASES = [  # (N, C, H, W), outputs, pad
    ((1, 1, 3, 3), 1, 0),  # a single tile, batch of 1
    ((2, 3, 5, 7), 4, 1),  # odd sizes: partial tiles on both axes
    ((3, 5, 6, 5), 2, 0),
    ((2, 2, 4, 4), 3, 1),
    ((1, 130, 6, 9), 129, 1),  # many channels, batch of 1
    ((3, 7, 9, 4), 5, 0),  # more images than workers
]


@pytest.mark.parametrize("shape, outputs, pad", CASES)
@pytest.mark.parametrize("workers, band_bytes", [(1, winograd.BAND_BYTES), (2, winograd.BAND_BYTES), (2, 1)])
def test_winograd_matches_the_direct_convolution(shape, outputs, pad, workers, band_bytes, thread_count, monkeypatch):
    """band_bytes 1: bands of one tile row (the input gradient's rows shared between bands
    carried from one to the next)."""
    thread_count(workers)
    monkeypatch.setattr(winograd, "BAND_BYTES", band_bytes)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    weight = rng.standard_normal((outputs, shape[1], 3, 3))
    bias = rng.standard_normal(outputs)
    dy, (y_ref, dx_ref, dw_ref) = direct_case(x, weight, bias, pad, rng)

    y, dx, dw = run(x, weight, bias, dy, pad, np.float64)
    for got, want in ((y, y_ref), (dx, dx_ref), (dw, dw_ref)):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())

    y, dx, dw = run(x, weight, bias, dy, pad, np.float32)
    for got, want in ((y, y_ref), (dx, dx_ref), (dw, dw_ref)):
        assert got.dtype == np.float32
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


@pytest.mark.parametrize("workers", [1, 2])
def test_runs_of_whole_images_side_by_side_match_the_direct_convolution(workers, thread_count, monkeypatch):
    """Images of 12 tiles with RUN_TILES 24: runs of 2 images (5 images: a worker's share of 3
    is a run of 2 and one of 1), their tiles side by side in each channel's row."""
    thread_count(workers)
    monkeypatch.setattr(winograd, "RUN_TILES", 24)
    shape, outputs, pad = (5, 3, 6, 6), 4, 1
    assert WinogradConvolution(shape, outputs, pad, np.float64).run_images == 2
    rng = np.random.default_rng(6)
    x, weight, bias = rng.standard_normal(shape), rng.standard_normal((outputs, 3, 3, 3)), rng.standard_normal(outputs)
    dy, refs = direct_case(x, weight, bias, pad, rng)
    y, dx, dw = run(x, weight, bias, dy, pad, np.float64)
    for got, want in zip((y, dx, dw), refs):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())


@pytest.mark.parametrize("convolution", [WinogradConvolution, Winograd4Convolution])
@pytest.mark.parametrize("batch", [1, 3])
def test_a_batch_that_does_not_share_out_evenly_shares_out_its_bands_with_the_same_outputs(
    convolution, batch, thread_count, monkeypatch
):
    """A batch of 1 or 3 on 2 workers: the forward's (image, band) pieces are shared out, every
    piece once, and the outputs are the one-worker outputs, bit for bit."""
    monkeypatch.setattr(winograd, "BAND_BYTES", 1)  # one tile row a band
    shape, outputs = (batch, 3, 17, 9), 4
    rng = np.random.default_rng(8)
    x, weight, bias = (rng.standard_normal(s).astype(np.float32) for s in (shape, (outputs, 3, 3, 3), outputs))
    conv = convolution(shape, outputs, 1, np.float32)
    conv.filters(weight)
    results = []
    for workers in (1, 2):
        thread_count(workers)
        used, work = winograd.forward_work(batch, conv.bands, conv._runs)
        pieces = [(images.start, first) for worker in range(used) for images, first, _ in work(worker)]
        assert sorted(pieces) == [(n, first) for n in range(batch) for first, _ in conv.bands]
        assert used == workers and all(work(worker) for worker in range(used))
        y = np.full((batch, outputs, 17, 9), np.nan, np.float32)
        conv.forward(x, bias, y)
        results.append(y)
    np.testing.assert_array_equal(results[1], results[0])
    assert np.isfinite(results[0]).all()


@pytest.mark.parametrize("convolution, tile", [(WinogradConvolution, 2), (Winograd4Convolution, 4)])
@pytest.mark.parametrize("batch, height, band_bytes", [(1, 17, 1), (3, 17, 1), (1, 17, 1 << 30), (1, 33, 1 << 30)])
def test_a_batch_that_does_not_share_out_evenly_shares_out_its_backward_in_two_passes(
    convolution, tile, batch, height, band_bytes, thread_count, monkeypatch
):
    """On 2 workers, a batch of 1 or 3 cut into bands (or a batch of 1 in one band: cut finer)
    runs its backward as (image, band) pieces in two passes, even bands then odd: every piece
    once, a piece for each worker in each pass, never two neighbouring bands in one pass, the
    even bands' cleared rows covering each image row once; the gradients are the direct
    formulas' (the input gradient starts as NaN: every row is cleared or written)."""
    monkeypatch.setattr(winograd, "BAND_BYTES", band_bytes)
    thread_count(2)
    shape, outputs, pad = (batch, 3, height, 7), 4, 1
    conv = convolution(shape, outputs, pad, np.float64)
    passes, adding = winograd.backward_passes(batch, conv.bands, conv._runs, tile, pad)
    bands = winograd.shared_bands(batch, conv.bands)
    assert adding and len(passes) == 2 and len(bands) >= 4
    seen, cleared = [], {n: [] for n in range(batch)}
    for parity, (workers, work) in enumerate(passes):
        assert workers == 2 and all(work(worker) for worker in range(workers))
        pieces = [piece for worker in range(workers) for piece in work(worker)]
        for images, first, rows, clear in pieces:
            k = bands.index((first, rows))
            assert k % 2 == parity and (clear is not None) == (parity == 0)
            seen.append((images.start, k))
            if clear is not None:
                cleared[images.start].extend(range(height)[clear])
    assert sorted(seen) == [(n, k) for n in range(batch) for k in range(len(bands))]
    assert all(sorted(rows) == list(range(height)) for rows in cleared.values())

    rng = np.random.default_rng(9)
    x, weight, bias = rng.standard_normal(shape), rng.standard_normal((outputs, 3, 3, 3)), rng.standard_normal(outputs)
    dy, refs = direct_case(x, weight, bias, pad, rng)
    for got, want in zip(run(x, weight, bias, dy, pad, np.float64, convolution), refs):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())


def test_weight_gradients_have_the_same_bits_for_the_same_thread_count(thread_count):
    rng = np.random.default_rng(7)
    x, weight = rng.standard_normal((5, 6, 8, 8)), rng.standard_normal((7, 6, 3, 3))
    dy = rng.standard_normal((5, 7, 8, 8))
    for workers in (1, 2):
        thread_count(workers)
        first, second = (run(x, weight, np.zeros(7), dy, 1, np.float32)[2] for _ in range(2))
        assert np.array_equal(first, second)


def test_the_direct_formulas_are_caffes_convolution():
    rng = np.random.default_rng(1)
    x, weight, bias = rng.standard_normal((2, 3, 5, 6)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    for pad in (0, 1):
        want = convolution(x, weight, bias, (1, 1), (pad, pad), (1, 1), 1)
        np.testing.assert_allclose(direct(x, weight, bias, pad), want, rtol=1e-12, atol=1e-12)


def test_backward_computes_only_what_is_asked():
    rng = np.random.default_rng(2)
    x, weight = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((4, 3, 3, 3))
    dy = rng.standard_normal((2, 4, 5, 5))
    conv = WinogradConvolution(x.shape, 4, 1, np.float64)
    conv.filters(weight)
    dweight = np.zeros_like(weight)
    conv.backward(x, dy, None, dweight)
    np.testing.assert_allclose(dweight, direct_weight_grad(x, dy, 1), rtol=1e-12, atol=1e-12)
    conv.filters(weight)  # a backward without input gradient sums worker 0's partial in U's buffer
    dx = np.zeros_like(x)
    conv.backward(x, dy, dx, None)
    np.testing.assert_allclose(dx, direct_data_grad(dy, weight, 1, x.shape), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "geometry, expected",
    [
        (((3, 3), (1, 1), (1, 1), (1, 1), 1, 128, 128, (16, 16)), True),
        (((3, 3), (1, 1), (1, 1), (0, 0), 1, 256, 128, (30, 17)), True),
        (((3, 3), (1, 1), (1, 1), (1, 1), 1, 64, 128, (32, 32)), True),
        (((3, 3), (1, 1), (1, 1), (1, 1), 1, 64, 64, (16, 16)), True),
        (((3, 3), (1, 1), (1, 1), (1, 1), 1, 32, 32, (32, 40)), True),
        (((3, 3), (1, 1), (1, 1), (1, 1), 1, 32, 32, (16, 16)), False),  # too few channels for 16 x 16
        (((3, 3), (1, 1), (1, 1), (1, 1), 1, 16, 64, (64, 64)), True),  # few channels, 2048 tiles
        (((3, 3), (1, 1), (1, 1), (1, 1), 1, 8, 64, (64, 64)), False),  # too few channels
        (((3, 3), (1, 1), (1, 1), (1, 1), 1, 16, 16, (16, 16)), False),  # 16 channels: too small a side
        (((3, 3), (1, 1), (1, 1), (1, 1), 1, 128, 128, (8, 8)), False),  # too few tiles
        (((3, 3), (2, 2), (1, 1), (1, 1), 1, 128, 128, (16, 16)), False),
        (((3, 3), (1, 1), (2, 2), (2, 2), 1, 128, 128, (16, 16)), False),
        (((3, 3), (1, 1), (1, 1), (1, 1), 2, 128, 128, (16, 16)), True),  # 2 groups of 64: grouped_applies
        (((3, 3), (1, 1), (1, 1), (1, 0), 1, 128, 128, (16, 16)), False),
        (((3, 3), (1, 1), (1, 1), (2, 2), 1, 128, 128, (16, 16)), False),
        (((5, 5), (1, 1), (1, 1), (2, 2), 1, 128, 128, (16, 16)), False),
    ],
)
def test_the_rule_of_when_it_runs(geometry, expected):
    assert winograd.applies(*geometry, 2) is expected


@pytest.mark.parametrize(
    "size, batch, expected",
    [
        (16, 1, False),  # one image of 16 4x4 tiles: its workers' products a few tiles wide
        (24, 1, False),  # 36 tiles
        (28, 1, True),  # 49 tiles
        (56, 1, True),
        (16, 2, True),  # two images: a worker's products take an image's 16 tiles
    ],
)
def test_one_image_needs_enough_tiles(size, batch, expected):
    geometry = ((3, 3), (1, 1), (1, 1), (1, 1), 1, 128, 128, (size, size))
    assert winograd.applies(*geometry, batch) is expected


@pytest.mark.parametrize(
    "channels, size, batch, expected",
    [
        (256, 14, 8, True),  # ResNet's and VGG's 14 x 14 stage: 392 tiles
        (128, 12, 8, True),  # 288 tiles
        (256, 14, 4, True),  # 196 tiles
        (512, 14, 2, True),  # 98 tiles
        (256, 14, 1, False),  # 49 tiles: too few for the products to pay
        (128, 12, 2, False),  # 72 tiles
        (64, 14, 16, True),  # few channels, 784 tiles
        (64, 14, 8, False),  # few channels, 392 tiles: too few
        (16, 14, 64, False),  # 16 channels: too small a side
        (256, 11, 4, False),  # below the small-map size, 36 tiles of 4x4: too few for F(4x4)
        (256, 7, 8, False),  # 32 tiles of 4x4: too few for F(4x4)
    ],
)
def test_the_small_map_rule_counts_the_batch_tiles(channels, size, batch, expected):
    geometry = ((3, 3), (1, 1), (1, 1), (1, 1), 1, channels, channels, (size, size))
    assert winograd.applies(*geometry, batch) is expected


@pytest.mark.parametrize(
    "channels, outputs, size, batch, expected",
    [
        (256, 64, 14, 4, True),  # 196 tiles x 256 channels
        (64, 256, 14, 8, True),
        (128, 32, 28, 2, True),  # 392 x 128
        (256, 64, 14, 2, False),  # 98 tiles: too few
        (128, 32, 19, 2, False),  # 200 x 128: too little work
        (64, 16, 28, 2, False),  # 392 x 64
        (64, 64, 14, 4, False),  # as many inputs as outputs: the few-channels rule alone
    ],
)
def test_many_inputs_to_few_outputs_need_fewer_tiles(channels, outputs, size, batch, expected):
    geometry = ((3, 3), (1, 1), (1, 1), (1, 1), 1, channels, outputs, (size, size))
    assert winograd.applies(*geometry, batch) is expected


def test_a_wide_few_output_layer_runs_winograd_before_row_strips():
    """256 -> 64 at 14 x 14, batch 4: row strips' rule takes it too (4x the outputs), Winograd first."""
    layer, _, _ = make_layer(
        {"type": "Convolution", "convolution_param": {"num_output": 64, "kernel_size": 3, "pad": 1}},
        [np.zeros((4, 256, 14, 14), np.float32)],
        dtype=np.float32,
    )
    assert type(layer.winograd) is winograd.WinogradConvolution and layer.strips is None


@pytest.mark.parametrize(
    "channels, outputs, size, batch, expected",
    [
        (64, 64, (8, 8), 32, True),  # CIFAR ResNets' last stage: 128 tiles of 4x4
        (256, 256, (7, 7), 32, True),
        (64, 64, (10, 10), 32, True),  # 100 of the tiles' 144 outputs in the map
        (128, 128, (12, 12), 16, True),  # F(4x4) before F(2x2) at 12 x 12
        (64, 128, (11, 12), 32, True),
        (64, 64, (8, 8), 16, True),  # 64 tiles
        (64, 64, (8, 8), 8, False),  # 32 tiles: too few
        (64, 64, (9, 9), 32, False),  # 81 of 144 outputs in the map
        (64, 64, (13, 13), 32, False),  # 169 of 256
        (64, 64, (6, 6), 64, False),  # below the size
        (64, 64, (14, 14), 32, False),  # above it (F(2x2) stays)
        (16, 16, (8, 8), 64, False),  # too few channels
        (64, 16, (8, 8), 64, False),
        (256, 256, (8, 8), 32, True),
        (512, 512, (8, 8), 32, False),  # 38 MB of transformed filters: im2col keeps it
        (256, 512, (7, 7), 64, False),
    ],
)
def test_the_small_map_f4_rule(channels, outputs, size, batch, expected):
    assert winograd.small_map_f4(channels, outputs, size, batch) is expected
    geometry = ((3, 3), (1, 1), (1, 1), (1, 1), 1, channels, outputs, size)
    chosen = winograd.convolution((batch, channels, size[0], size[1]), outputs, 1, np.float32)
    assert (type(chosen).__name__ == "Winograd4Convolution") is expected
    if expected:
        assert winograd.applies(*geometry, batch)


def convolution_layer(shape, outputs, dtype):
    layer = {
        "name": "conv",
        "type": "Convolution",
        "bottom": ["x"],
        "top": ["y"],
        "convolution_param": {
            "num_output": outputs,
            "kernel_size": 3,
            "pad": 1,
            "weight_filler": {"type": "gaussian", "std": 0.05},
            "bias_filler": {"type": "gaussian"},
        },
    }
    instance, _, _ = build_layer(layer, [shape])
    instance.dtype = np.dtype(dtype)
    bottom, top = [Blob(shape, dtype, name="x")], [Blob((), dtype, name="y")]
    bottom[0].data[...] = np.random.default_rng(3).standard_normal(shape)
    instance.setup(bottom, top)
    return instance, bottom, top


def winograd_and_im2col_results(monkeypatch, shape, threshold, value):
    """The layer's top, bottom diff and param diffs with ``winograd.<threshold>`` at ``value``,
    then at 10**9 (im2col + GEMM), float32, and the Winograd convolution each ran as."""
    results, kinds = [], []
    with parallel.single_threaded_blas:
        for setting in (value, 10**9):
            monkeypatch.setattr(winograd, threshold, setting)
            layer, bottom, top = convolution_layer(shape, shape[1], np.float32)
            kinds.append(type(layer.winograd))
            layer.forward(bottom, top)
            top[0].diff[...] = np.random.default_rng(4).standard_normal(top[0].shape)
            layer.backward(top, [True], bottom)
            results.append([top[0].data, bottom[0].diff, layer.blobs[0].diff, layer.blobs[1].diff])
    for got, want in zip(*results):
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    return kinds


def test_the_convolution_layer_runs_winograd_where_it_applies_and_gives_im2cols_results(monkeypatch):
    kinds = winograd_and_im2col_results(monkeypatch, (2, 64, 16, 16), "MIN_CHANNELS", 64)
    assert kinds[0] is not type(None) and kinds[1] is type(None)


def test_a_small_map_of_a_large_batch_runs_two_by_two_tiles_and_gives_im2cols_results(monkeypatch):
    """ResNet's 14 x 14 stage (here 128 -> 128, batch 6: 294 tiles): F(2x2, 3x3) by the
    small-map rule, F(4x4) left aside, the results im2col + GEMM's."""
    monkeypatch.setattr(winograd, "MIN_FEW_CHANNELS_WIDE_TILES", 10**9)  # not the few-channels rule either
    kinds = winograd_and_im2col_results(monkeypatch, (6, 128, 14, 14), "MIN_SMALL_MAP_TILES", 96)
    assert kinds == [winograd.WinogradConvolution, type(None)]


SMALL_WINOGRAD = {  # two bottoms sharing the weights, pad 0; run as Winograd with the thresholds at 1
    "type": "Convolution",
    "bottom": ["a", "b"],
    "top": ["ya", "yb"],
    "convolution_param": {
        "num_output": 3,
        "kernel_size": 3,
        "weight_filler": {"type": "gaussian"},
        "bias_filler": {"type": "gaussian"},
    },
}


@pytest.fixture
def winograd_everywhere(monkeypatch):
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 1)
    monkeypatch.setattr(winograd, "MIN_OUTPUT_SIZE", 1)
    monkeypatch.setattr(winograd, "MIN_CHANNELS_BY_SIZE", 1)


def test_a_winograd_convolution_layer_keeps_the_layer_contract(winograd_everywhere):
    rng = np.random.default_rng(5)
    bottoms = [rng.standard_normal((2, 2, 5, 6)), rng.standard_normal((2, 2, 5, 6))]
    layer, _, _ = make_layer(SMALL_WINOGRAD, bottoms)
    assert layer.winograd is not None
    assert_gradients(SMALL_WINOGRAD, bottoms)
    assert_contract(SMALL_WINOGRAD, bottoms)


def test_the_warmup_compiles_the_winograd_kernels(winograd_everywhere, monkeypatch):
    """warmup.py runs the Convolution examples with the thresholds at 1: they must call every
    Winograd kernel, in float32 and float64."""
    from netlayers.warmup import builtin_examples, run_example

    calls = set()
    names = ["input_tiles", "output_tiles", "output_tiles_adjoint", "input_tiles_adjoint"]
    for name in names:
        kernel = getattr(winograd, name)

        def record(first, *args, name=name, kernel=kernel):
            calls.add((name, first.dtype.name))
            return kernel(first, *args)

        monkeypatch.setattr(winograd, name, record)
    for type_name, example in builtin_examples():
        if type_name == "Convolution":
            for dtype in (np.float32, np.float64):
                run_example(type_name, example, dtype)
    assert calls == {(name, dtype) for name in names for dtype in ("float32", "float64")}


@pytest.mark.parametrize("outputs, channels", [(8, 4), (64, 256)])
def test_add_products_adds_every_taps_product_into_the_partial(outputs, channels):
    rng = np.random.default_rng(6)
    dm = rng.standard_normal((16, outputs, 40)).astype(np.float32)
    v = rng.standard_normal((16, channels, 40)).astype(np.float32)
    partial = rng.standard_normal((16, outputs, channels)).astype(np.float32)
    want = partial + np.matmul(dm, v.transpose(0, 2, 1))
    winograd.add_products(dm, v, partial)
    np.testing.assert_allclose(partial, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("contiguous", [True, False])
def test_add_weight_grad_adds_the_transformed_sum_of_the_partials(contiguous):
    rng = np.random.default_rng(7)
    transform = winograd.FILTER_TRANSFORM.astype(np.float64)  # (16, 9)
    whole = rng.standard_normal((6, 10, 3, 3))
    before = whole.copy()
    diff = whole if contiguous else whole[:, ::2]
    partials = [rng.standard_normal(16 * 6 * diff.shape[1]) for _ in range(3)]
    total = sum(partials).reshape(16, -1)
    want = diff + (total.T @ transform).reshape(diff.shape)
    winograd.add_weight_grad(partials, transform, diff)
    np.testing.assert_allclose(diff, want, rtol=1e-12, atol=1e-12)
    if not contiguous:
        np.testing.assert_array_equal(whole[:, 1::2], before[:, 1::2])  # the channels left out


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("transform", [winograd.FILTER_TRANSFORM, winograd4.FILTER_TRANSFORM])
def test_transform_filters_gives_the_transform_of_every_filter(transform, workers, thread_count, monkeypatch):
    """U = transform @ g for every 3x3 filter g (the compiled nine-value loop), also cut over
    two workers (cut however small here), each filter's values the same bits either way; the
    float32 values agree with the float64 product to rounding."""
    monkeypatch.setattr(parallel, "SPLIT_MIN_BYTES", 0)
    thread_count(workers)
    rng = np.random.default_rng(8)
    weight = rng.standard_normal((37, 5, 3, 3)).astype(np.float32)  # 185 filters: no whole chunk
    u = np.full((len(transform), 37, 5), np.nan, np.float32)
    winograd.transform_filters(transform.astype(np.float32), weight, u)
    want = transform @ weight.reshape(-1, 9).T.astype(np.float64)
    np.testing.assert_allclose(u.reshape(len(transform), -1), want, rtol=1e-6, atol=1e-6)
    thread_count(1)
    alone = np.empty_like(u)
    winograd.transform_filters(transform.astype(np.float32), weight, alone)
    np.testing.assert_array_equal(u, alone)


def test_transform_filters_of_other_kernel_sizes_is_the_product(thread_count, monkeypatch):
    """A transform of other than nine values a filter (1-D Winograd's G) runs as gemm, cut over
    the workers alike."""
    monkeypatch.setattr(parallel, "SPLIT_MIN_BYTES", 0)
    thread_count(2)
    rng = np.random.default_rng(9)
    g = rng.standard_normal((6, 5))
    weight = rng.standard_normal((40, 3, 1, 5))
    u = np.empty((6, 40, 3))
    winograd.transform_filters(g, weight, u)
    np.testing.assert_allclose(u.reshape(6, -1), g @ weight.reshape(-1, 5).T, rtol=1e-12, atol=1e-12)


def test_add_weight_grad_cut_over_the_workers_adds_the_transformed_sum(thread_count, monkeypatch):
    """Cut by filters over two workers, the weight gradient's transform adds the transformed sum
    of the partials, the same bits at every call (gemm may round a cut's rows otherwise than
    whole rows: the bits may differ from one worker's, as the partials' count already makes
    them)."""
    monkeypatch.setattr(parallel, "SPLIT_MIN_BYTES", 0)
    rng = np.random.default_rng(10)
    transform = winograd4.FILTER_TRANSFORM.astype(np.float32)
    partials = [rng.standard_normal(36 * 33 * 7).astype(np.float32) for _ in range(2)]
    start = rng.standard_normal((33, 7, 3, 3)).astype(np.float32)
    want = start + (sum(p.astype(np.float64) for p in partials).reshape(36, -1).T @ transform).reshape(start.shape)
    for workers in (1, 2):
        thread_count(workers)
        results = []
        for _ in range(2):
            diff = start.copy()
            winograd.add_weight_grad(partials, transform, diff)
            results.append(diff)
        np.testing.assert_array_equal(results[0], results[1])
        np.testing.assert_allclose(results[0], want, rtol=1e-5, atol=1e-5)


# -- groups ----------------------------------------------------------------------------------------
def grouped_direct_case(x, weight, groups, pad, rng):
    """The direct formulas group by group: (dy, (y, dx, dweight)) of a grouped convolution."""
    c, k = x.shape[1] // groups, weight.shape[0] // groups
    parts = [
        direct_case(x[:, g * c : (g + 1) * c], weight[g * k : (g + 1) * k], np.zeros(k), pad, rng)
        for g in range(groups)
    ]
    dy, y, dx = (np.concatenate([part[i] if i == 0 else part[1][i - 1] for part in parts], axis=1) for i in range(3))
    dweight = np.concatenate([part[1][2] for part in parts], axis=0)  # outputs first
    return dy, (y, dx, dweight)


@pytest.mark.parametrize("convolution", [WinogradConvolution, Winograd4Convolution])
@pytest.mark.parametrize("shape, outputs, groups", [((2, 6, 7, 9), 9, 3), ((3, 4, 8, 8), 4, 2), ((1, 8, 5, 6), 4, 4)])
@pytest.mark.parametrize("workers", [1, 2])
def test_grouped_winograd_matches_the_direct_convolution_of_each_group(
    convolution, shape, outputs, groups, workers, thread_count
):
    """A grouped convolution as Winograd: each output sees only its group's channels (U is
    (taps, outputs, channels / groups)); the output, the input gradient and the weight gradient
    (added to what the diff held) are each group's direct convolution."""
    thread_count(workers)
    rng = np.random.default_rng(11)
    x = rng.standard_normal(shape)
    weight = rng.standard_normal((outputs, shape[1] // groups, 3, 3))
    dy, want = grouped_direct_case(x, weight, groups, 1, rng)
    conv = convolution(x.shape, outputs, 1, np.float64, groups)
    assert conv.u_shape[1:] == (outputs, shape[1] // groups)
    conv.filters(weight)
    y = np.full(dy.shape, np.nan)
    conv.forward(x, None, y)
    dx, dweight = np.full(x.shape, np.nan), np.ones(weight.shape)
    conv.backward(x, dy, dx, dweight)
    for got, expected in zip((y, dx, dweight - 1), want):
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "groups, channels, size, batch, expected",
    [
        (4, 128, 28, 8, True),  # 32 a group
        (8, 128, 28, 8, True),  # 16 a group: MIN_GROUP_CHANNELS
        (16, 128, 28, 8, False),  # 8 a group
        (4, 256, 7, 8, True),  # a small map: 64 a group, 128 tiles
        (32, 512, 7, 8, False),  # a small map, 16 a group: under MIN_GROUP_CHANNELS_SMALL_MAP
        (32, 512, 14, 8, True),  # 16 a group in 32 groups, not a small map
        (32, 1024, 7, 8, True),  # 32 a group in 32 groups (ResNeXt's last stage)
        (2, 256, 14, 1, False),  # 49 tiles: under MIN_GROUP_TILES
        (2, 256, 14, 2, True),  # 98 tiles
    ],
)
def test_the_grouped_rule(groups, channels, size, batch, expected):
    geometry = ((3, 3), (1, 1), (1, 1), (1, 1), groups, channels, channels, (size, size), batch)
    assert winograd.applies(*geometry) is expected


def test_a_grouped_dilated_convolution_does_not_run_as_phases():
    """dilated.PhaseConvolution has one group: a grouped dilated layer stays with im2col even
    where the phases' Winograd rule would take it."""
    from netlayers.kernels import dilated

    assert dilated.applies((3, 3), (1, 1), (2, 2), (2, 2), 1, 128, 128, (56, 56), 8)
    assert not dilated.applies((3, 3), (1, 1), (2, 2), (2, 2), 2, 128, 128, (56, 56), 8)


def test_a_grouped_convolution_layer_runs_winograd_and_gives_im2cols_results(monkeypatch):
    """Convolution with group 4 (32 channels a group at 16 x 16): Winograd by the grouped rule,
    its top and gradients im2col + GEMM's (the rule off) in float32; in float64 its gradients
    pass the numerical check. (The direct grouped kernels, which would take this layer, are
    left out.)"""
    monkeypatch.setattr(grouped, "applies", lambda *geometry: False)
    spec = dict(SMALL_WINOGRAD, bottom=["x"], top=["y"])
    spec["convolution_param"] = dict(SMALL_WINOGRAD["convolution_param"], num_output=128, group=4, pad=1)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 128, 16, 16))
    results, kinds = [], []
    for tiles in (winograd.MIN_GROUP_TILES, 10**9):
        monkeypatch.setattr(winograd, "MIN_GROUP_TILES", tiles)
        layer, bottom, top = make_layer(spec, [x], dtype=np.float32)
        kinds.append(type(layer.winograd))
        with parallel.single_threaded_blas:
            layer.forward(bottom, top)
            top[0].diff[...] = np.random.default_rng(4).standard_normal(top[0].shape)
            layer.backward(top, [True], bottom)
        results.append([top[0].data.copy(), bottom[0].diff.copy(), layer.blobs[0].diff.copy()])
    assert kinds == [winograd4.Winograd4Convolution, type(None)]
    for got, want in zip(*results):
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    for threshold in ("MIN_GROUP_TILES", "MIN_GROUP_CHANNELS", "MIN_GROUP_CHANNELS_SMALL_MAP"):
        monkeypatch.setattr(winograd, threshold, 1)
    small = dict(spec, convolution_param=dict(spec["convolution_param"], num_output=32))
    layer, _, _ = make_layer(small, [rng.standard_normal((2, 32, 5, 6))])
    assert layer.winograd is not None
    assert_gradients(small, [rng.standard_normal((2, 32, 5, 6))])


def test_a_grouped_winograd_layer_gives_exactly_the_bias_where_its_groups_channels_are_zero(monkeypatch):
    """Outputs whose receptive field in their own group's channels is all zero are exactly the
    bias (``zero_fields`` per image and group), though the other group's channels are not zero
    there, as im2col's are: a ReLU after them passes no gradient."""
    monkeypatch.setattr(grouped, "applies", lambda *geometry: False)  # Winograd, not the direct kernels
    spec = dict(SMALL_WINOGRAD, bottom=["x"], top=["y"])
    spec["convolution_param"] = dict(SMALL_WINOGRAD["convolution_param"], num_output=64, group=2, pad=1)
    x = np.random.default_rng(9).standard_normal((2, 64, 16, 16))
    x[:, :32, 3:11, 3:11] = 0  # group 0's channels: a zero square across tiles; group 1's not
    layer, bottom, top = make_layer(spec, [x], dtype=np.float32)
    assert type(layer.winograd) is winograd4.Winograd4Convolution
    layer.forward(bottom, top)
    bias = layer.blobs[1].data
    inside = top[0].data[:, :32, 4:10, 4:10]  # receptive fields within the square
    assert np.array_equal(inside, np.broadcast_to(bias[:32, None, None], inside.shape))
    assert not np.array_equal(top[0].data[:, 32:, 4:10, 4:10], np.broadcast_to(bias[32:, None, None], inside.shape))


@pytest.mark.parametrize("form", [WinogradConvolution, winograd4.Winograd4Convolution])
@pytest.mark.parametrize("workers", [1, 2])
def test_a_split_backward_gives_both_gradients_with_worker_0s_partial_in_the_filters(
    form, workers, thread_count, monkeypatch
):
    """From ``SPLIT_FILTER_BYTES`` of U a backward of both gradients runs as two passes, the
    weight gradient's second with worker 0's partial in U's buffer: the same gradients, and no
    weight-gradient scratch of worker 0 (VGG-16's conv5: 135 -> 119 MiB)."""
    thread_count(workers)
    monkeypatch.setattr(winograd, "SPLIT_FILTER_BYTES", 0)
    rng = np.random.default_rng(5)
    x, weight = rng.standard_normal((4, 6, 10, 10)), rng.standard_normal((5, 6, 3, 3))
    dy = rng.standard_normal((4, 5, 10, 10))
    conv = form(x.shape, 5, 1, np.float64)
    parallel.release_scratch()
    conv.filters(weight)
    dx, dweight = np.full_like(x, np.nan), np.ones_like(weight)
    conv.backward(x, dy, dx, dweight)
    np.testing.assert_allclose(dweight, 1 + direct_weight_grad(x, dy, 1), rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(dx, direct_data_grad(dy, weight, 1, x.shape), rtol=1e-11, atol=1e-11)
    assert (0, winograd.WEIGHT_GRAD, np.dtype(np.float64)) not in parallel._scratch
    assert ((1, winograd.WEIGHT_GRAD, np.dtype(np.float64)) in parallel._scratch) == (workers == 2)
