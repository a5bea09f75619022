"""The im2col + GEMM path's parts for convolutions with few input channels (a net's first
layer): im2col on a zero-padded copy (``im2col.pad_images``) for padded, horizontal-stride-1
geometries, and the weight gradient read from the NCHW output gradient in place
(``ColumnChunks.add_weight_grad_by_image``) when the layer has no data gradient."""

import numpy as np
import pytest
from layer_harness import assert_gradients, convolution_spec, make_layer
from reference import conv_out, convolution
from reference import im2col as reference_im2col

from netlayers import parallel
from netlayers.kernels import conv_gemm
from netlayers.kernels import im2col as conv_kernels
from netlayers.kernels.conv_gemm import ColumnChunks


def chunks_for(shape, kernel, pad, stride, dilation, outputs, groups, dtype):
    out = tuple(conv_out(s, k, p, st, d) for s, k, p, st, d in zip(shape[2:], kernel, pad, stride, dilation))
    return ColumnChunks(
        image_shape=shape,
        kernel=kernel,
        pad=pad,
        stride=stride,
        dilation=dilation,
        map_channels=outputs,
        map_size=out,
        groups=groups,
        dtype=dtype,
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pad", [(0, 0), (1, 1), (2, 3), (3, 0)])
def test_pad_images_is_numpys_zero_padding(pad, dtype):
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 7)).astype(dtype)
    out = np.full((2, 3, 5 + 2 * pad[0], 7 + 2 * pad[1]), np.nan, dtype)
    conv_kernels.pad_images(x, pad, out)
    np.testing.assert_array_equal(out, np.pad(x, ((0, 0), (0, 0), (pad[0],) * 2, (pad[1],) * 2)))
    with pytest.raises(ValueError, match="does not fit"):
        conv_kernels.pad_images(x, pad, out[:, :, 1:])


GEOMETRIES = [  # (image shape, kernel, pad, stride, dilation)
    ((3, 3, 9, 11), (5, 5), (2, 2), (1, 1), (1, 1)),  # cifar's conv1 in small
    ((1, 1, 7, 7), (3, 3), (1, 1), (1, 1), (1, 1)),  # batch 1, one channel
    ((2, 3, 13, 10), (7, 7), (3, 3), (2, 1), (1, 1)),  # vertical stride 2: still whole rows
    ((2, 3, 11, 12), (3, 5), (0, 3), (1, 1), (2, 1)),  # dilation, padding on one axis only
    ((2, 3, 13, 13), (11, 11), (0, 0), (4, 4), (1, 1)),  # AlexNet's conv1 geometry: no copy
    ((2, 3, 12, 9), (3, 3), (1, 2), (2, 2), (1, 1)),  # horizontal stride 2: no copy
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, kernel, pad, stride, dilation", GEOMETRIES)
def test_columns_are_im2cols_whether_or_not_the_images_are_padded_first(shape, kernel, pad, stride, dilation, dtype):
    chunks = chunks_for(shape, kernel, pad, stride, dilation, 4, 1, dtype)
    assert (chunks.padded_shape is not None) == (pad != (0, 0) and stride[1] == 1)
    x = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    expected = reference_im2col(x.astype(np.float64), kernel, pad, stride, dilation)  # (N, K, P)
    for part in chunks.pieces:
        for piece in part:
            col = chunks.columns(0, x, piece)  # (K, n P), channel-major
            got = col.reshape(chunks.rows, piece.images, -1).transpose(1, 0, 2)
            np.testing.assert_array_equal(got, expected[piece.first : piece.stop].astype(dtype))


def weight_gradient(weight_shape, x, dy, pad, stride, group):
    """dE/dW[o, c, u, v] = sum over n, i, j of dy[n, o, i, j] x[n, g c, i s - p + u, j s - p + v]."""
    cols = reference_im2col(x, weight_shape[2:], pad, stride, (1, 1))  # (N, C kh kw, P)
    n, rows, size = cols.shape
    outputs = weight_shape[0]
    cols = cols.reshape(n, group, rows // group, size)
    dy = dy.reshape(n, group, outputs // group, size)
    return np.einsum("ngop,ngkp->gok", dy, cols).reshape(weight_shape)


FIRST_LAYERS = [  # (image shape, outputs, kernel, pad, stride, group)
    ((5, 3, 9, 8), 4, (5, 5), (2, 2), (1, 1), 1),
    ((1, 1, 8, 8), 3, (5, 5), (0, 0), (1, 1), 1),
    ((3, 3, 15, 15), 5, (7, 7), (3, 3), (2, 2), 1),
    ((2, 3, 19, 19), 4, (11, 11), (0, 0), (4, 4), 1),
    ((4, 4, 7, 6), 4, (3, 3), (1, 1), (1, 1), 2),
]


def run_first_layer(spec, x, dtype, workers, dy_seed=2):
    """Forward, then backward with the weight and bias gradients only (no data gradient)."""
    before = parallel.thread_count()
    parallel.set_thread_count(workers)
    try:
        layer, bottom, top = make_layer(spec, [x], dtype=dtype)
        layer.forward(bottom, top)
        dy = np.random.default_rng(dy_seed).standard_normal(top[0].shape).astype(dtype)
        top[0].diff[...] = dy
        for blob in layer.blobs:
            blob.diff[...] = 0
        layer.backward(top, [False], bottom)
        return layer, top[0].data.copy(), dy, [b.diff.copy() for b in layer.blobs]
    finally:
        parallel.set_thread_count(before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, outputs, kernel, pad, stride, group", FIRST_LAYERS)
def test_a_first_layer_gives_the_direct_formulas_on_one_and_two_workers(
    shape, outputs, kernel, pad, stride, group, dtype
):
    spec = convolution_spec(outputs, kernel, pad, stride, group=group)
    x = np.random.default_rng(1).standard_normal(shape)
    runs = [run_first_layer(spec, x, dtype, workers) for workers in (1, 2)]
    layer, y, dy, (weight_diff, bias_diff) = runs[0]
    weight, bias = (b.data.astype(np.float64) for b in layer.blobs)
    tolerance = {"rtol": 1e-4, "atol": 1e-4} if dtype == np.float32 else {"rtol": 1e-10, "atol": 1e-10}
    np.testing.assert_allclose(y, convolution(x, weight, bias, stride, pad, (1, 1), group), **tolerance)
    expected = weight_gradient(weight.shape, x, dy.astype(np.float64), pad, stride, group)
    np.testing.assert_allclose(weight_diff, expected, **tolerance)
    np.testing.assert_allclose(bias_diff, dy.astype(np.float64).sum(axis=(0, 2, 3)), **tolerance)
    # chunks hold batch / workers images at most, and BLAS may round a product of another width
    # differently: the same results up to rounding across worker counts
    np.testing.assert_allclose(runs[1][1], y, **tolerance)
    np.testing.assert_allclose(runs[1][3][0], weight_diff, **tolerance)
    np.testing.assert_array_equal(run_first_layer(spec, x, dtype, 2)[3][0], runs[1][3][0])  # and run to run


def add_weight_gradient(chunks, x, dy, by_image, weight_diff):
    """weight_diff += the weight gradient of ``chunks`` (by image, or through the map matrix)."""

    def step(worker, piece, first):
        col = chunks.columns(worker, x, piece)
        if by_image:
            chunks.add_weight_grad_by_image(worker, dy, col, piece, first, weight_diff)
        else:
            chunks.add_weight_grad(worker, chunks.map_matrix(worker, dy, piece), col, first, weight_diff)

    chunks.run(step)
    chunks.weight_grad_total(weight_diff)
    return weight_diff


def test_the_weight_gradient_by_image_equals_the_one_through_the_map_matrix():
    shape, kernel, pad = (6, 3, 10, 10), (5, 5), (2, 2)
    chunks = chunks_for(shape, kernel, pad, (1, 1), (1, 1), 8, 1, np.float64)
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape)
    dy = rng.standard_normal((shape[0], 8) + chunks.map_shape)
    assert chunks.parts < shape[0]  # chunks of several images
    sums = [add_weight_gradient(chunks, x, dy, by_image, np.zeros((8, chunks.rows))) for by_image in (False, True)]
    np.testing.assert_allclose(sums[1], sums[0], rtol=1e-12, atol=1e-12)
    assert np.abs(sums[0]).max() > 1  # something was summed


@pytest.mark.parametrize("direct", [True, False])
@pytest.mark.parametrize("by_image", [True, False])
def test_the_weight_gradient_is_added_to_what_the_diff_held(monkeypatch, direct, by_image):
    """In the weight's layout (``direct``) worker 0 adds its products into the weight's
    gradient itself; either way the gradient ends as what it held plus this pass's, on 1 or 2
    workers. In the weight's layout a gradient that is not contiguous goes through the
    partials (the transposed partials' sum takes contiguous gradients only, as the layers'
    are)."""
    monkeypatch.setattr(conv_gemm, "DIRECT_WEIGHT_GRAD_BYTES", 0 if direct else 1 << 40)
    shape, kernel, pad, outputs = (6, 3, 10, 10), (5, 5), (2, 2), 8
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape)
    chunks = chunks_for(shape, kernel, pad, (1, 1), (1, 1), outputs, 1, np.float64)
    assert chunks.weight_grad_direct == direct
    dy = rng.standard_normal((shape[0], outputs) + chunks.map_shape)
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(x, ((0, 0), (0, 0), pad, pad)), kernel, axis=(2, 3))
    want_grad = np.einsum("noyx,ncyxij->ocij", dy, windows).reshape(outputs, -1)
    saved = parallel.thread_count()
    for threads in (1, 2):
        parallel.set_thread_count(threads)
        try:
            for contiguous in (True, False) if direct else (True,):
                held = rng.standard_normal((outputs, 2 * chunks.rows))
                weight_diff = held[:, : chunks.rows] if not contiguous else held[:, : chunks.rows].copy()
                before = weight_diff.copy()
                add_weight_gradient(chunks, x, dy, by_image, weight_diff)
                np.testing.assert_allclose(weight_diff, before + want_grad, rtol=1e-10, atol=1e-10)
        finally:
            parallel.set_thread_count(saved)


def test_large_maps_go_image_by_image_and_give_the_direct_formulas(monkeypatch):
    """From ``MAP_DIRECT_BYTES`` of map an image, a chunk is one image (the product lands in
    NCHW, the bias added there), with the same results as chunks of several images."""
    shape, spec = (4, 3, 9, 9), convolution_spec(6, (3, 3), (1, 1), (1, 1))
    x = np.random.default_rng(6).standard_normal(shape)
    results = []
    for threshold in (1 << 40, 6 * 81 * 8):
        monkeypatch.setattr(conv_gemm, "MAP_DIRECT_BYTES", threshold)
        layer, y, dy, diffs = run_first_layer(spec, x, np.float64, 1)
        results.append((layer.chunks.chunk, y, diffs))
    assert results[0][0] == 4 and results[1][0] == 1
    weight, bias = (b.data for b in layer.blobs)
    np.testing.assert_allclose(results[1][1], convolution(x, weight, bias, (1, 1), (1, 1), (1, 1), 1), rtol=1e-10)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-12, atol=1e-12)
    for by_image, chunked in zip(results[1][2], results[0][2]):
        np.testing.assert_allclose(by_image, chunked, rtol=1e-12, atol=1e-12)


def test_a_first_layer_on_one_image_bands_gives_the_direct_formula(monkeypatch):
    """Images whose columns exceed the chunk budget run as bands of output rows (no padded
    copy); the weight gradient by image reads each band of the output gradient."""
    monkeypatch.setattr(conv_gemm, "COLUMN_CHUNK_BYTES", 2048)
    monkeypatch.setattr(conv_gemm, "MIN_BAND_PIXELS", 1)  # bands of a few pixels
    spec = convolution_spec(4, (5, 5), (2, 2), (1, 1))
    x = np.random.default_rng(4).standard_normal((2, 3, 12, 12))
    layer, y, dy, (weight_diff, _) = run_first_layer(spec, x, np.float64, 2)
    assert layer.chunks.bands is not None and len(layer.chunks.bands) > 1
    weight, bias = (b.data for b in layer.blobs)
    np.testing.assert_allclose(y, convolution(x, weight, bias, (1, 1), (2, 2), (1, 1), 1), rtol=1e-10, atol=1e-10)
    expected = weight_gradient(weight.shape, x, dy, (2, 2), (1, 1), 1)
    np.testing.assert_allclose(weight_diff, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("pad, stride", [((2, 2), (1, 1)), ((1, 1), (2, 1))])
def test_a_first_layers_gradients_check_numerically(pad, stride):
    spec = convolution_spec(3, (3, 3), pad, stride)
    x = np.random.default_rng(5).standard_normal((3, 2, 6, 7))
    layer, _, _ = make_layer(spec, [x])
    assert layer.chunks.padded_shape is not None
    report = assert_gradients(spec, [x], check_bottoms=[])  # the weight gradient by image
    assert [b.name for b in report.blobs] == ["param[0]", "param[1]"]
    report = assert_gradients(spec, [x])  # and with the data gradient (the map-matrix path)
    assert [b.name for b in report.blobs] == ["bottom[0]", "param[0]", "param[1]"]


@pytest.mark.parametrize("batch", [3, 7, 32, 33, 100])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_chunks_share_out_evenly_over_the_workers(thread_count, batch, threads):
    """Chunks fit the column budget, cover the batch in order, and every worker gets as many
    chunks and as many images as the others, give or take one."""
    thread_count(threads)
    shape = (batch, 16, 16, 16)  # 16 x 9 rows x 256 pixels x 4 bytes = 144 KiB of columns an image
    chunks = chunks_for(shape, (3, 3), (1, 1), (1, 1), (1, 1), 8, 1, np.float32)
    fit = conv_gemm.COLUMN_CHUNK_BYTES // (16 * 9 * 256 * 4)
    pieces = [part[0] for part in chunks.pieces]
    assert [p.first for p in pieces[1:]] == [p.stop for p in pieces[:-1]]
    assert pieces[0].first == 0 and pieces[-1].stop == batch
    assert max(p.images for p in pieces) == chunks.chunk <= fit
    workers = chunks.workers()
    images, counts = [], []
    for worker in range(workers):
        mine = [pieces[k] for k in parallel.share(worker, workers, chunks.parts)]
        counts.append(len(mine))
        images.append(sum(p.images for p in mine))
    assert max(counts) - min(counts) <= 1 and max(images) - min(images) <= 1, (counts, images)
    assert workers == min(threads, batch)
