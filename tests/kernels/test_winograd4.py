"""Winograd F(4x4, 3x3) against direct convolution formulas (float64 to rounding, float32 to
2e-5 of the output's scale), its choice (``winograd.convolution``) and its place in the
Convolution layer and the warmup."""

import numpy as np
import pytest
from layer_harness import assert_gradients, make_layer
from test_winograd import SMALL_WINOGRAD, convolution_layer, direct_case, direct_data_grad, direct_weight_grad
from test_winograd import run as run_winograd

from netlayers import parallel
from netlayers.kernels import winograd, winograd4
from netlayers.kernels.winograd4 import Winograd4Convolution


def run(x, weight, bias, dy, pad, dtype):
    """(y, dx, dweight) by F(4x4) in ``dtype``; dweight starts at 1 (gradients add)."""
    return run_winograd(x, weight, bias, dy, pad, dtype, convolution=Winograd4Convolution)


def test_the_transforms_give_a_correlation():
    """A^T [(G g) * (B^T d)] = the 4 outputs of the 3-tap correlation of a 6-item d with g."""
    rng = np.random.default_rng(0)
    d, g = rng.standard_normal(6), rng.standard_normal(3)
    want = np.array([d[i : i + 3] @ g for i in range(4)])
    np.testing.assert_allclose(winograd4.AT @ ((winograd4.G @ g) * (winograd4.BT @ d)), want, rtol=0, atol=1e-14)


CASES = [  # (N, C, H, W), outputs, pad
    ((1, 1, 3, 3), 1, 0),  # a single (cut) tile, batch of 1
    ((2, 3, 5, 7), 4, 1),  # odd sizes: cut tiles on both axes
    ((3, 5, 6, 5), 2, 0),
    ((2, 2, 6, 10), 3, 1),  # whole tiles only
    ((1, 130, 6, 9), 129, 1),  # many channels (several blocks), batch of 1
    ((3, 7, 13, 4), 5, 0),  # more images than workers; tile rows cut
]


@pytest.mark.parametrize("shape, outputs, pad", CASES)
@pytest.mark.parametrize("workers, band_bytes", [(1, winograd.BAND_BYTES), (2, winograd.BAND_BYTES), (2, 1)])
def test_f4_matches_the_direct_convolution(shape, outputs, pad, workers, band_bytes, thread_count, monkeypatch):
    """band_bytes 1: bands of one tile row (the input gradient's rows shared between bands
    added up across them)."""
    thread_count(workers)
    monkeypatch.setattr(winograd, "BAND_BYTES", band_bytes)
    monkeypatch.setattr(winograd4, "BLOCK_TILES", 8)  # blocks of a few channels
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    weight = rng.standard_normal((outputs, shape[1], 3, 3))
    bias = rng.standard_normal(outputs)
    dy, refs = direct_case(x, weight, bias, pad, rng)

    for got, want in zip(run(x, weight, bias, dy, pad, np.float64), refs):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())
    for got, want in zip(run(x, weight, bias, dy, pad, np.float32), refs):
        assert got.dtype == np.float32
        assert np.abs(got - want).max() <= 2e-5 * np.abs(want).max()


@pytest.mark.parametrize("workers", [2, 3])
def test_one_image_runs_by_positions_with_one_workers_bits(workers, thread_count, monkeypatch):
    """One image, one band: the transforms by channels, the 36 products (and the weight
    gradient's) by positions over the workers; every value made as one worker makes it, and
    the direct formulas' outputs and gradients (with and without an input gradient)."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 7, 13, 11)).astype(np.float32)
    weight = rng.standard_normal((5, 7, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(5).astype(np.float32)
    ran = []
    for name in ("_forward_by_positions", "_backward_by_positions"):
        method = getattr(Winograd4Convolution, name)
        monkeypatch.setattr(Winograd4Convolution, name, lambda *a, name=name, f=method: ran.append(name) or f(*a))
    dy, refs = direct_case(*(a.astype(np.float64) for a in (x, weight, bias)), 1, rng)
    results = []
    for count in (1, workers):
        thread_count(count)
        conv = Winograd4Convolution(x.shape, 5, 1, np.float32)
        y, dx, dweight = (
            np.full(dy.shape, np.nan, np.float32),
            np.full(x.shape, np.nan, np.float32),
            np.ones_like(weight),
        )
        with parallel.single_threaded_blas:
            conv.filters(weight)
            conv.forward(x, bias, y)
            conv.backward(x, dy.astype(np.float32), dx, dweight)
            alone = np.zeros_like(weight)  # the weight gradient without an input gradient
            conv.filters(weight)
            conv.backward(x, dy.astype(np.float32), None, alone)
        results.append((y, dx, dweight - 1, alone))
    assert ran == ["_forward_by_positions", "_backward_by_positions", "_backward_by_positions"]
    for got, first in zip(results[1], results[0]):
        np.testing.assert_array_equal(got, first)
    for got, want in zip(results[1], refs + (refs[2],)):
        assert np.abs(got - want).max() <= 2e-5 * np.abs(want).max()


@pytest.mark.parametrize("workers", [1, 2])
def test_runs_of_whole_images_side_by_side_match_the_direct_convolution(workers, thread_count, monkeypatch):
    """Images of 4 tiles with RUN_TILES 8: runs of 2 images (5 images: a worker's share of 3
    is a run of 2 and one of 1), their tiles side by side in each channel's row."""
    thread_count(workers)
    monkeypatch.setattr(winograd, "RUN_TILES", 8)
    shape, outputs, pad = (5, 3, 8, 7), 4, 1
    assert Winograd4Convolution(shape, outputs, pad, np.float64).run_images == 2
    rng = np.random.default_rng(6)
    x, weight, bias = rng.standard_normal(shape), rng.standard_normal((outputs, 3, 3, 3)), rng.standard_normal(outputs)
    dy, refs = direct_case(x, weight, bias, pad, rng)
    for got, want in zip(run(x, weight, bias, dy, pad, np.float64), refs):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())


@pytest.mark.parametrize("workers, run", [(1, 32), (2, 16)])
def test_a_run_holds_at_most_a_workers_share_of_the_batch(workers, run, thread_count):
    """8 x 8 outputs, 4 tiles an image: RUN_TILES would take 64 images and the band 56, but a
    worker never runs more than its share of the 32: the scratch is sized by the run."""
    thread_count(workers)
    conv = Winograd4Convolution((32, 64, 8, 8), 64, 1, np.float32)
    assert conv.run_images == run and conv.band_tiles == 4 * run


def test_float32_error_at_many_channels_stays_below_2e_5():
    """128 channels at scaled (He) weights: outputs and gradients within 2e-5 of the scale."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((1, 128, 12, 12))
    weight = rng.standard_normal((128, 128, 3, 3)) * np.sqrt(2 / (9 * 128))
    dy, refs = direct_case(x, weight, np.zeros(128), 1, rng)
    for got, want in zip(run(x, weight, np.zeros(128), dy, 1, np.float32), refs):
        assert np.abs(got - want).max() <= 2e-5 * np.abs(want).max()


def test_weight_gradients_have_the_same_bits_for_the_same_thread_count(thread_count):
    rng = np.random.default_rng(7)
    x, weight = rng.standard_normal((5, 6, 8, 8)), rng.standard_normal((7, 6, 3, 3))
    dy = rng.standard_normal((5, 7, 8, 8))
    for workers in (1, 2):
        thread_count(workers)
        first, second = (run(x, weight, np.zeros(7), dy, 1, np.float32)[2] for _ in range(2))
        assert np.array_equal(first, second)


def test_backward_computes_only_what_is_asked():
    rng = np.random.default_rng(2)
    x, weight = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((4, 3, 3, 3))
    dy = rng.standard_normal((2, 4, 5, 5))
    conv = Winograd4Convolution(x.shape, 4, 1, np.float64)
    conv.filters(weight)
    dweight = np.zeros_like(weight)
    conv.backward(x, dy, None, dweight)
    np.testing.assert_allclose(dweight, direct_weight_grad(x, dy, 1), rtol=1e-12, atol=1e-12)
    conv.filters(weight)  # a backward without input gradient sums worker 0's partial in U's buffer
    dx = np.full_like(x, np.nan)
    conv.backward(x, dy, dx, None)
    np.testing.assert_allclose(dx, direct_data_grad(dy, weight, 1, x.shape), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "channels, outputs, expected",
    [
        (64, 64, Winograd4Convolution),
        (256, 512, Winograd4Convolution),
        (16, 32, Winograd4Convolution),
        (8, 128, winograd.WinogradConvolution),
    ],
)
def test_the_rule_of_which_tile_size_runs(channels, outputs, expected):
    assert type(winograd.convolution((2, channels, 16, 16), outputs, 1, np.float32)) is expected


def test_small_maps_take_two_by_two_tiles():
    """Below MIN_OUTPUT_SIZE (the small-map rule), F(2x2) whatever the channels: 14 x 14 outputs
    would fill 4x4 tiles of 16 x 16."""
    assert type(winograd.convolution((8, 256, 14, 14), 256, 1, np.float32)) is winograd.WinogradConvolution
    assert type(winograd.convolution((8, 256, 18, 18), 256, 0, np.float32)) is Winograd4Convolution


def test_the_convolution_layer_runs_f4_and_gives_im2cols_results(monkeypatch):
    shape = (2, 128, 16, 16)
    monkeypatch.setattr(winograd, "MIN_SMALL_MAP_TILES", 10**9)  # 128 tiles: not F(2x2) either
    with parallel.single_threaded_blas:
        results = []
        for use in (True, False):  # F(4x4), then im2col + GEMM
            monkeypatch.setattr(winograd, "MIN_CHANNELS", 128 if use else 10**9)
            layer, bottom, top = convolution_layer(shape, 128, np.float32)
            assert isinstance(layer.winograd, Winograd4Convolution) == use
            layer.forward(bottom, top)
            top[0].diff[...] = np.random.default_rng(4).standard_normal(top[0].shape)
            layer.backward(top, [True], bottom)
            results.append([top[0].data, bottom[0].diff, layer.blobs[0].diff, layer.blobs[1].diff])
    for got, want in zip(*results):
        assert np.abs(got - want).max() <= 2e-5 * np.abs(want).max()


@pytest.fixture
def f4_everywhere(monkeypatch):
    for name in ("MIN_CHANNELS", "MIN_OUTPUT_SIZE", "MIN_CHANNELS_BY_SIZE", "MIN_CHANNELS_F4"):
        monkeypatch.setattr(winograd, name, 1)


def test_the_layers_gradients_run_through_f4(f4_everywhere):
    rng = np.random.default_rng(5)
    bottoms = [rng.standard_normal((2, 2, 5, 6)), rng.standard_normal((2, 2, 5, 6))]
    layer, _, _ = make_layer(SMALL_WINOGRAD, bottoms)
    assert isinstance(layer.winograd, Winograd4Convolution)
    assert_gradients(SMALL_WINOGRAD, bottoms)


def test_the_warmup_compiles_the_f4_kernels(monkeypatch):
    """warmup.py runs the Convolution examples with every Winograd threshold at 1: they must call
    every F(4x4) kernel, in float32 and float64, and leave the thresholds as they were."""
    from netlayers.warmup import run_winograd4_examples

    calls = set()
    names = ["input_tiles", "output_tiles", "output_tiles_adjoint", "input_tiles_adjoint"]
    names += ["input_tiles_by_table", "output_tiles_adjoint_by_table"]
    for name in names:
        kernel = getattr(winograd4, name)

        def record(first, *args, name=name, kernel=kernel):
            calls.add((name, first.dtype.name))
            return kernel(first, *args)

        monkeypatch.setattr(winograd4, name, record)
    before = winograd.MIN_CHANNELS_F4, winograd.MIN_CHANNELS, winograd4.TABLE_TILES_W
    assert run_winograd4_examples() > 0
    assert calls == {(name, dtype) for name in names for dtype in ("float32", "float64")}
    assert (winograd.MIN_CHANNELS_F4, winograd.MIN_CHANNELS, winograd4.TABLE_TILES_W) == before


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, pad", [((5, 3, 8, 8), 1), ((4, 2, 7, 9), 0), ((3, 6, 12, 10), 1), ((2, 1, 3, 3), 0)])
def test_the_gather_by_table_gives_input_tiles_bits(shape, pad, dtype):
    """The table's gather (small maps) writes the same V as the row gather, for whole runs and
    for a shorter last run, with blocks of a few channels."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(dtype)
    batch, chans, height, width = shape
    tiles_h, tiles_w = -(-(height + 2 * pad - 2) // 4), -(-(width + 2 * pad - 2) // 4)
    tiles = tiles_h * tiles_w
    table = winograd4.gather_table(chans, height, width, pad, batch - 1, tiles_h, tiles_w)
    for first, images in ((0, batch - 1), (1, batch - 1), (batch - 1, 1)):
        span = images * tiles
        want = np.full((36, chans * span), np.nan, dtype)
        got = np.full((36, chans * span), np.nan, dtype)
        winograd4.input_tiles(x, first, images, pad, 0, tiles_h, tiles_w, want, 2, 0)
        winograd4.input_tiles_by_table(x, first, images, tiles, table, got, 2)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(5, 3, 8, 8), (4, 2, 7, 9), (3, 6, 12, 10), (2, 1, 1, 1)])
def test_the_output_gradients_gather_by_table_gives_the_same_bits(shape, dtype):
    """dM from the table's gather of dy's 4x4 tiles (0 past the map's edge) equals the row
    gather's, for whole runs and a shorter last run."""
    rng = np.random.default_rng(2)
    dy = rng.standard_normal(shape).astype(dtype)
    batch, chans, out_h, out_w = shape
    tiles_h, tiles_w = -(-out_h // 4), -(-out_w // 4)
    tiles = tiles_h * tiles_w
    table = winograd4.gather_table(chans, out_h, out_w, 0, batch - 1, tiles_h, tiles_w, side=4)
    for first, images in ((0, batch - 1), (1, batch - 1), (batch - 1, 1)):
        span = images * tiles
        want = np.full((36, chans * span), np.nan, dtype)
        got = np.full((36, chans * span), np.nan, dtype)
        winograd4.output_tiles_adjoint(dy, first, images, 0, tiles_h, tiles_w, want, 2, 0)
        winograd4.output_tiles_adjoint_by_table(dy, first, images, tiles, table, got, 2)
        np.testing.assert_array_equal(got, want)
