"""Convolution, Deconvolution and Im2col: values against the slow references
(tests/reference.py), gradients, the layer contract, Caffe's output sizes, setup errors; and
LeNet end to end, with Caffe's own trained weights and figures."""

from pathlib import Path

import numpy as np
import pytest
import reference
from layer_harness import assert_contract, assert_gradients, make_layer, pass_with_added_gradients, run_layer

from netlayers import ConfigError, Net
from netlayers.kernels import conv_gemm, grouped, kn2row

GAUSS = {"type": "gaussian", "std": 0.5}

# (stride, pad, dilation, group) combinations on a (2, 4, 6, 7) input
CONV_CASES = [
    (1, 0, 1, 1),
    (1, 1, 1, 1),
    (2, 1, 1, 1),
    (1, 2, 2, 1),
    (2, 0, 1, 2),
    (1, 1, 2, 2),
    (3, 2, 1, 4),
]


def conv_layer(kind="Convolution", num_output=8, kernel=3, stride=1, pad=0, dilation=1, group=1, bias=True, **extra):
    param = {
        "num_output": num_output,
        "kernel_size": kernel,
        "stride": stride,
        "pad": pad,
        "dilation": dilation,
        "group": group,
        "bias_term": bias,
        "weight_filler": GAUSS,
        "bias_filler": GAUSS,
    }
    param.update(extra)
    return {"type": kind, "convolution_param": param}


def params_of(layer):
    weight = layer.blobs[0].data
    bias = layer.blobs[1].data if len(layer.blobs) > 1 else None
    return weight, bias


@pytest.mark.parametrize("stride,pad,dilation,group", CONV_CASES)
def test_convolution_matches_definition(stride, pad, dilation, group, rng):
    x = rng.standard_normal((2, 4, 6, 7))
    layer, (y,) = run_layer(conv_layer(stride=stride, pad=pad, dilation=dilation, group=group), [x])
    weight, bias = params_of(layer)
    assert weight.shape == (8, 4 // group, 3, 3)
    expected = reference.convolution(x, weight, bias, (stride,) * 2, (pad,) * 2, (dilation,) * 2, group)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("stride,pad,dilation,group", CONV_CASES)
def test_convolution_gradients(stride, pad, dilation, group, rng):
    x = rng.standard_normal((2, 4, 6, 7))
    assert_gradients(conv_layer(stride=stride, pad=pad, dilation=dilation, group=group), [x])


@pytest.mark.parametrize("stride,pad,dilation,group", CONV_CASES)
def test_deconvolution_matches_definition_and_gradients(stride, pad, dilation, group, rng):
    x = rng.standard_normal((2, 4, 4, 5))
    spec = conv_layer("Deconvolution", stride=stride, pad=pad, dilation=dilation, group=group)
    layer, (y,) = run_layer(spec, [x])
    weight, bias = params_of(layer)
    assert weight.shape == (4, 8 // group, 3, 3)
    expected = reference.deconvolution(x, weight, bias, (stride,) * 2, (pad,) * 2, (dilation,) * 2, group)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-12)
    assert_gradients(spec, [x])


@pytest.mark.parametrize(
    "shape, kernel, stride, pad, dilation",
    [
        ((2, 3, 5, 6), 4, 2, 1, 1),  # a bilinear 2x upsampling's geometry
        ((1, 4, 3, 3), 3, 1, 1, 1),
        ((2, 2, 4, 5), 3, 2, 0, 1),
        ((1, 2, 2, 2), 8, 4, 2, 1),  # an FCN's upsampling: kernel twice the stride
        ((2, 3, 4, 4), 3, 1, 2, 2),
    ],
)
@pytest.mark.parametrize("bias", [True, False])
def test_a_deconvolution_of_one_channel_a_group_runs_depthwise(shape, kernel, stride, pad, dilation, bias, rng):
    """group = channels = num_output: the depthwise convolution from the output back to the
    input, run backward. Its output is the definition's, its gradients the numerical ones, and a
    second bottom shares the weights (the layer contract, float32 against float64)."""
    x = rng.standard_normal(shape)
    param = {"num_output": shape[1], "group": shape[1], "kernel_size": kernel, "stride": stride, "pad": pad}
    param |= {"dilation": dilation, "bias_term": bias, "weight_filler": {"type": "gaussian"}}
    if bias:
        param["bias_filler"] = {"type": "gaussian"}
    spec = {"type": "Deconvolution", "convolution_param": param}
    layer, (y,) = run_layer(spec, [x])
    assert layer.depthwise is not None
    weight, bias_values = params_of(layer) if bias else (params_of(layer)[0], None)
    settings = ((stride,) * 2, (pad,) * 2, (dilation,) * 2, shape[1])
    np.testing.assert_allclose(y, reference.deconvolution(x, weight, bias_values, *settings), rtol=1e-10, atol=1e-12)
    assert_gradients(spec, [x])
    assert_contract(dict(spec, top=["y", "y2"]), [x, rng.standard_normal(shape)])


def test_convolution_output_size_follows_caffe(rng):
    for size, kernel, pad, stride, dilation in [
        (28, 5, 0, 1, 1),
        (12, 5, 0, 1, 1),
        (7, 3, 1, 2, 1),
        (8, 3, 0, 3, 2),
        (5, 5, 2, 2, 1),
    ]:
        x = rng.standard_normal((1, 2, size, size))
        _, (y,) = run_layer(conv_layer(num_output=3, kernel=kernel, pad=pad, stride=stride, dilation=dilation), [x])
        expected = (size + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1
        assert y.shape == (1, 3, expected, expected)


def test_deconvolution_output_size_follows_caffe(rng):
    for size, kernel, pad, stride in [(4, 4, 1, 2), (5, 3, 0, 1), (3, 2, 0, 2)]:
        x = rng.standard_normal((1, 2, size, size))
        _, (y,) = run_layer(conv_layer("Deconvolution", num_output=3, kernel=kernel, pad=pad, stride=stride), [x])
        expected = stride * (size - 1) + kernel - 2 * pad
        assert y.shape == (1, 3, expected, expected)


def test_rectangular_settings_and_no_bias(rng):
    x = rng.standard_normal((2, 3, 7, 9))
    spec = {
        "type": "Convolution",
        "convolution_param": {
            "num_output": 4,
            "kernel_h": 3,
            "kernel_w": 2,
            "pad_h": 1,
            "pad_w": 0,
            "stride_h": 2,
            "stride_w": 1,
            "bias_term": False,
            "weight_filler": GAUSS,
        },
    }
    layer, (y,) = run_layer(spec, [x])
    assert len(layer.blobs) == 1
    expected = reference.convolution(x, layer.blobs[0].data, None, (2, 1), (1, 0), (1, 1), 1)
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-12)
    per_axis = {
        "type": "Convolution",
        "convolution_param": {
            "num_output": 4,
            "kernel_size": [3, 2],
            "pad": [1, 0],
            "stride": [2, 1],
            "bias_term": False,
            "weight_filler": GAUSS,
        },
    }
    _, (y2,) = run_layer(per_axis, [x])
    np.testing.assert_array_equal(y, y2)
    assert_gradients(spec, [x])


@pytest.mark.parametrize("direct", [True, False])
def test_one_by_one_convolution_skips_im2col_and_is_right(rng, monkeypatch, thread_count, direct):
    """Image by image the products read and write NCHW; 3 images a chunk go through reorders."""
    thread_count(1)
    monkeypatch.setattr(conv_gemm, "ONE_BY_ONE_DIRECT_BYTES", 1 if direct else 1 << 30)
    x = rng.standard_normal((3, 6, 17, 17))
    spec = conv_layer(num_output=4, kernel=1, group=2)
    layer, (y,) = run_layer(spec, [x])
    assert layer.chunks.one_by_one and layer.chunks.chunk == (1 if direct else 3)
    weight, bias = params_of(layer)
    np.testing.assert_allclose(y, reference.convolution(x, weight, bias, (1, 1), (0, 0), (1, 1), 2), rtol=1e-10)
    assert_gradients(spec, [x[:, :, :4, :4]])


def test_one_by_one_of_a_small_plane_goes_in_chunks_of_images(rng, thread_count):
    """ResNet-50's 7 x 7 stage (here 200 -> 16 channels at 7 x 7, 77 KiB an image): below
    ONE_BY_ONE_MIN_PLANE pixels, chunks of images (longer weight-gradient products), not one
    image a chunk; the same results either way."""
    thread_count(2)
    x = rng.standard_normal((4, 200, 7, 7))
    spec = conv_layer(num_output=16, kernel=1)
    layer, (y,) = run_layer(spec, [x])
    assert layer.chunks.one_by_one and layer.chunks.chunk == 2
    weight, bias = params_of(layer)
    np.testing.assert_allclose(y, reference.convolution(x, weight, bias, (1, 1), (0, 0), (1, 1), 1), rtol=1e-10)
    big = rng.standard_normal((4, 200, 8, 8))
    assert run_layer(spec, [big])[0].chunks.chunk == 1  # 64 pixels: image by image


def test_a_first_layers_weight_gradient_in_groups_of_images_equals_the_whole_chunks(rng, monkeypatch, thread_count):
    """A layer with no data gradient forms its weight gradient from the chunk's per-image
    products at once, at most a column budget of them: with a budget of one image's weight
    gradient, a chunk of 6 images goes one product at a time; the same gradient."""
    from layer_harness import make_layer

    thread_count(1)
    x, dy = rng.standard_normal((6, 8, 2, 2)), rng.standard_normal((6, 64, 2, 2))
    diffs = []
    for budget in (1 << 20, 1):
        monkeypatch.setattr(conv_gemm, "COLUMN_CHUNK_BYTES", budget)
        monkeypatch.setattr(conv_gemm, "MIN_BAND_PIXELS", 1)  # bands of a few pixels
        layer, bottom, top = make_layer(conv_layer(num_output=64, kernel=1), [x])
        assert layer.chunks.chunk == 6 and layer.chunks.budget == (1 << 20 if budget > 1 else 64 * 8 * 8)
        layer.forward(bottom, top)
        top[0].diff[...] = dy
        layer.backward(top, [False], bottom)
        diffs.append(layer.blobs[0].diff.copy())
    np.testing.assert_allclose(diffs[1], diffs[0], rtol=1e-12, atol=1e-12)
    want = np.einsum("nohw,nchw->oc", dy, x).reshape(64, 8, 1, 1)
    np.testing.assert_allclose(diffs[0], want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("chunk_bytes", [1, 5000, 1 << 21])
def test_chunks_of_one_or_several_images_agree(rng, monkeypatch, thread_count, chunk_bytes):
    """The batch cut into chunks of 1 image, of 2 and 1 (a short last chunk), or whole."""
    thread_count(1)
    monkeypatch.setattr(conv_gemm, "COLUMN_CHUNK_BYTES", chunk_bytes)
    monkeypatch.setattr(conv_gemm, "MIN_BAND_PIXELS", 1)  # bands of a few pixels
    for size in (18, 6):
        x = rng.standard_normal((3, 2, size, size))
        layer, (y,) = run_layer(conv_layer(num_output=3), [x])
        assert layer.chunks.chunk == {1: 1, 5000: 2 if size == 6 else 1, 1 << 21: 3}[chunk_bytes]
        weight, bias = params_of(layer)
        np.testing.assert_allclose(y, reference.convolution(x, weight, bias, (1, 1), (0, 0), (1, 1), 1), rtol=1e-10)
    assert_gradients(conv_layer(num_output=3), [rng.standard_normal((2, 2, 18, 18))], max_elements=60)


@pytest.mark.parametrize("kind", ["Convolution", "Deconvolution"])
@pytest.mark.parametrize("chunk_bytes", [1, 2500])
@pytest.mark.parametrize("stride,pad,dilation,group", CONV_CASES)
def test_images_cut_into_bands_of_output_rows_agree(rng, monkeypatch, kind, chunk_bytes, stride, pad, dilation, group):
    """Columns larger than the budget: each image goes in bands of 1 row (budget 1 byte) or of
    a few rows with a shorter last band; the bands' col2im adds up to the whole image's."""
    monkeypatch.setattr(conv_gemm, "COLUMN_CHUNK_BYTES", chunk_bytes)
    monkeypatch.setattr(conv_gemm, "MIN_BAND_PIXELS", 1)  # bands of a few pixels
    x = rng.standard_normal((2, 8, 7, 8))  # 8 channels: group 4 is not depthwise
    spec = conv_layer(kind, stride=stride, pad=pad, dilation=dilation, group=group)
    layer, (y,) = run_layer(spec, [x])
    bands = layer.chunks.bands
    assert bands is not None and len(bands) >= 2
    weight, bias = params_of(layer)
    define = reference.convolution if kind == "Convolution" else reference.deconvolution
    expected = define(x, weight, bias, (stride,) * 2, (pad,) * 2, (dilation,) * 2, group)
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-12)
    assert_gradients(spec, [x], max_elements=40)


@pytest.mark.parametrize("kind", ["Convolution", "Deconvolution"])
@pytest.mark.parametrize("group", [1, 2])
@pytest.mark.parametrize("first_layer", [True, False])
def test_weight_gradients_made_in_the_weights_layout_agree_with_the_transposed_ones(
    rng, monkeypatch, thread_count, kind, group, first_layer
):
    """Large weights take their gradient partials in the weight's own layout (map col^T), small
    ones transposed (col map^T, then added blockwise into the weight): both give the same
    gradients, on 2 workers, grouped, with and without a data gradient (a first layer's partials
    are per-image products of the NCHW map). The grouped 3x3 stays on im2col, not the direct
    grouped kernels."""
    thread_count(2)
    monkeypatch.setattr(grouped, "applies", lambda *geometry: False)
    x = rng.standard_normal((4, 4, 9, 8))
    dy = None
    results = {}
    for direct in (False, True):
        monkeypatch.setattr(conv_gemm, "DIRECT_WEIGHT_GRAD_BYTES", 1 if direct else 1 << 40)
        layer, bottom, top = make_layer(conv_layer(kind, num_output=6, stride=2, pad=1, group=group), [x])
        assert layer.chunks.weight_grad_direct == direct and layer.chunks.workers() == 2
        layer.forward(bottom, top)
        dy = rng.standard_normal(top[0].shape) if dy is None else dy
        top[0].diff[...] = dy
        layer.backward(top, [not first_layer], bottom)
        results[direct] = [blob.diff.copy() for blob in layer.blobs] + [bottom[0].diff.copy()]
    for transposed, direct in zip(results[False], results[True]):
        np.testing.assert_allclose(direct, transposed, rtol=1e-12, atol=1e-12)
    weight, _ = params_of(layer)
    assert np.abs(results[True][0]).max() > 0 and results[True][0].shape == weight.shape


def test_a_layer_with_a_large_weight_takes_columns_as_large_as_its_weight(monkeypatch):
    """VGG-16's conv5_3 geometry (512 -> 512, 3 x 3, 14 x 14; 3.6 MB of columns an image): with
    its 9.4 MB weight each image is one piece, where a 16-output layer's columns are cut into
    bands of the 1 MiB budget (with no least band size; with MIN_BAND_PIXELS its 196 pixels are
    one band: see the next test)."""
    monkeypatch.setattr(conv_gemm, "MIN_BAND_PIXELS", 1)

    def chunks(outputs):
        return conv_gemm.ColumnChunks(
            image_shape=(2, 512, 14, 14),
            kernel=(3, 3),
            pad=(1, 1),
            stride=(1, 1),
            dilation=(1, 1),
            map_channels=outputs,
            map_size=(14, 14),
            groups=1,
            dtype=np.float32,
        )

    large, small = chunks(512), chunks(16)
    assert large.budget == 512 * 4608 * 4 and large.bands is None
    assert small.budget == conv_gemm.COLUMN_CHUNK_BYTES and len(small.bands) == 4


def test_bands_hold_at_least_min_band_pixels_unless_their_columns_pass_the_cap():
    """An image is cut into bands of the budget, but of whole rows of at least
    MIN_BAND_PIXELS pixels (products of a few pixels run badly); a band's columns stay under
    WEIGHT_SIZED_COLUMNS_MAX_BYTES, which wins for very tall columns; a single band is no cut."""

    def chunks(channels, size, kernel, outputs=16):
        return conv_gemm.ColumnChunks(
            image_shape=(1, channels, size, size),
            kernel=(kernel, kernel),
            pad=(0, 0),
            stride=(1, 1),
            dilation=(1, 1),
            map_channels=outputs,
            map_size=(size - kernel + 1, size - kernel + 1),
            groups=1,
            dtype=np.float32,
        )

    assert conv_gemm.MIN_BAND_PIXELS == 256
    wide = chunks(512, 58, 3)  # 56 x 56 out, 4608 rows: the budget fits one row (56 pixels)
    heights = [(band.stop - band.start) // 56 for band, _ in wide.bands]
    assert heights == [5] * 11 + [1]  # 5 rows: 280 pixels
    one = chunks(512, 16, 3)  # 14 x 14 out: 196 pixels, fewer than a band's least: not cut
    assert one.bands is None
    tall = chunks(4096, 40, 7)  # 34 x 34 out, 200704 rows: 20 pixels of columns fill the cap
    cap = conv_gemm.WEIGHT_SIZED_COLUMNS_MAX_BYTES // (200704 * 4)
    assert cap == 20 and all((band.stop - band.start) == 34 for band, _ in tall.bands)


@pytest.mark.parametrize("kind", ["Convolution", "Deconvolution"])
def test_one_image_splits_its_products_over_the_idle_workers(rng, monkeypatch, thread_count, kind):
    """A batch of 1 is one piece, run by one worker: its products are then split over the
    others (parallel.matmul, here from any size), giving one worker's results."""
    from netlayers import parallel

    monkeypatch.setattr(parallel, "MATMUL_SPLIT_FLOPS", 0)
    x = rng.standard_normal((1, 6, 9, 8))
    spec = conv_layer(kind, num_output=5, stride=2, pad=1)
    split = []
    matmul = parallel.matmul
    monkeypatch.setattr(parallel, "matmul", lambda a, b, out: split.append(1) or matmul(a, b, out))
    results = []
    for workers in (1, 2):
        thread_count(workers)
        split.clear()
        layer, bottom, top = make_layer(spec, [x])
        layer.forward(bottom, top)
        top[0].diff[...] = np.linspace(-1, 1, top[0].count).reshape(top[0].shape)
        layer.backward(top, [True], bottom)
        # with 2 workers each of the 3 products splits: the forward's, the weight gradient's and
        # the data gradient's (a strided Convolution's phase col2im once ran the last on one core)
        assert len(split) == (3 if workers == 2 else 0), type(layer.chunks).__name__
        results.append([top[0].data.copy(), bottom[0].diff.copy()] + [blob.diff.copy() for blob in layer.blobs])
    for one, two in zip(*results):
        np.testing.assert_allclose(two, one, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "batch,kernel,stride,pad,dilation,chunk_bytes",
    [
        (1, 3, 1, 1, 1, None),
        (1, 3, 2, 1, 1, None),  # phase columns
        (1, 5, 1, 2, 1, 3000),  # bands of output rows
        (1, 3, 1, 2, 2, None),
        (2, 4, 2, 1, 1, 3000),  # 2 images on 3 workers
    ],
)
def test_fewer_images_than_workers_run_their_backward_by_channels(
    rng, monkeypatch, thread_count, batch, kernel, stride, pad, dilation, chunk_bytes
):
    """With fewer images than workers each worker takes its own input channels: their columns
    and their part of the outputs (``conv_gemm.forward_by_channels``, the parts then added),
    their weight-gradient columns and input-gradient channels (``backward_by_channels``): the
    outputs and gradients of one worker, to rounding, and the definition's gradients (checked
    numerically)."""
    from netlayers import parallel

    monkeypatch.setattr(parallel, "MATMUL_SPLIT_FLOPS", 0)  # here from any size
    monkeypatch.setattr(kn2row, "MAX_OUTPUTS", 0)  # 5 outputs of many channels: im2col's columns here
    if chunk_bytes is not None:
        monkeypatch.setattr(conv_gemm, "COLUMN_CHUNK_BYTES", chunk_bytes)
        monkeypatch.setattr(conv_gemm, "MIN_BAND_PIXELS", 1)
    x = rng.standard_normal((batch, 3 * conv_gemm.MIN_PART_CHANNELS + 1, 9, 10))
    spec = conv_layer(num_output=5, kernel=kernel, stride=stride, pad=pad, dilation=dilation)
    ran = []
    for name in ("forward_by_channels", "backward_by_channels"):
        by_channels = getattr(conv_gemm, name)
        monkeypatch.setattr(conv_gemm, name, lambda *a, name=name, f=by_channels: ran.append(name) or f(*a))
    results = []
    for workers in (1, 3):
        thread_count(workers)
        ran.clear()
        layer, result = pass_with_added_gradients(spec, x)
        assert ran == (["forward_by_channels", "backward_by_channels"] if workers > batch else [])
        assert workers == 1 or chunk_bytes is None or layer.chunks.channel_parts()[0][1].bands is not None
        results.append(result)
    for one, three in zip(*results):
        np.testing.assert_allclose(three, one, rtol=1e-12, atol=1e-12)
    thread_count(3)
    assert_gradients(spec, [x[:, :, :7, :8]])


@pytest.mark.parametrize(
    "batch, groups, kernel, stride, pad, chunk_bytes, workers",
    [
        (1, 2, 3, 1, 0, None, 2),  # a group a worker (3x3 unpadded: not the direct grouped kernels)
        (1, 3, 3, 1, 2, None, 2),  # 2 groups and 1
        (1, 4, 3, 2, 0, None, 3),  # phase columns; 2, 1 and 1 groups
        (1, 2, 5, 1, 2, 3000, 2),  # bands of output rows
        (2, 3, 1, 1, 0, None, 3),  # 1x1; 2 images on 3 workers
    ],
)
@pytest.mark.parametrize("data_gradient", [True, False])
def test_fewer_images_than_workers_run_a_grouped_layer_by_groups(
    rng, monkeypatch, thread_count, batch, groups, kernel, stride, pad, chunk_bytes, workers, data_gradient
):
    """A grouped layer with fewer images than workers: each worker takes whole groups, their
    columns, products, outputs, weight-gradient rows and input-gradient channels
    (``conv_gemm.forward_by_groups``, ``backward_by_groups``; a layer's products cut by groups
    cannot be split by ``parallel.matmul``, so one worker ran them all): the outputs and
    gradients of one worker, to rounding, with and without a data gradient, and the
    definition's gradients (checked numerically)."""
    from netlayers import parallel

    monkeypatch.setattr(parallel, "MATMUL_SPLIT_FLOPS", 0)  # here from any size
    if chunk_bytes is not None:
        monkeypatch.setattr(conv_gemm, "COLUMN_CHUNK_BYTES", chunk_bytes)
        monkeypatch.setattr(conv_gemm, "MIN_BAND_PIXELS", 1)
    x = rng.standard_normal((batch, 2 * groups, 9, 10))
    spec = conv_layer(num_output=3 * groups, kernel=kernel, stride=stride, pad=pad, group=groups)
    ran = []
    for name in ("forward_by_groups", "backward_by_groups"):
        by_groups = getattr(conv_gemm, name)
        monkeypatch.setattr(conv_gemm, name, lambda *a, name=name, f=by_groups: ran.append(name) or f(*a))
    results = []
    for threads in (1, workers):
        thread_count(threads)
        ran.clear()
        layer, result = pass_with_added_gradients(spec, x, data_gradient)
        assert ran == (["forward_by_groups", "backward_by_groups"] if threads > batch else [])
        if threads > batch:
            parts = layer.chunks.group_parts()
            assert [len(range(g.start, g.stop)) for g, _ in parts] == [
                len(parallel.share(k, min(threads, groups), groups)) for k in range(min(threads, groups))
            ]
            assert chunk_bytes is None or parts[0][1].bands is not None
        results.append(result)
    for one, many in zip(*results):
        np.testing.assert_allclose(many, one, rtol=1e-12, atol=1e-12)
    thread_count(workers)
    assert_gradients(spec, [x[:, :, :7, :8]])


@pytest.mark.parametrize(
    "shape, outputs, kernel, group, by_groups",
    [
        ((1, 384, 13, 13), 384, 3, 2, True),  # AlexNet's conv4 at batch 1
        ((1, 240, 28, 28), 240, 1, 3, True),  # a ShuffleNet 1x1 layer of 3 groups: 30 MFLOP
        ((2, 240, 28, 28), 240, 1, 3, False),  # an image a worker
        ((1, 96, 16, 16), 96, 1, 3, False),  # 1.6 MFLOP
        ((1, 64, 28, 28), 32, 3, 1, False),  # no groups: by channels
    ],
)
def test_which_layers_run_by_groups(thread_count, shape, outputs, kernel, group, by_groups):
    thread_count(2)
    spec = conv_layer(num_output=outputs, kernel=kernel, pad=kernel // 2, group=group)
    layer, _, _ = make_layer(spec, [np.zeros(shape)])
    assert (layer.chunks.group_parts() is not None) is by_groups


@pytest.mark.parametrize(
    "shape, outputs, kernel, group, by_channels",
    [
        ((1, 64, 28, 28), 32, 3, 1, True),  # a 29 MFLOP product
        ((2, 64, 28, 28), 32, 3, 1, False),  # an image a worker
        ((1, 32, 16, 16), 32, 5, 1, False),  # cifar10_quick's conv2 at batch 1: 13 MFLOP
        ((1, 15, 64, 64), 64, 3, 1, False),  # fewer than 8 channels a worker
        ((1, 64, 28, 28), 64, 1, 1, False),  # 1x1: no columns
        ((1, 64, 28, 28), 32, 7, 4, False),  # groups (of 8 outputs: not as F(2x2, 7x7))
    ],
)
def test_which_layers_run_by_channels(thread_count, shape, outputs, kernel, group, by_channels):
    thread_count(2)
    spec = conv_layer(num_output=outputs, kernel=kernel, pad=kernel // 2, group=group)
    layer, _, _ = make_layer(spec, [np.zeros(shape)])
    assert (layer.chunks.channel_parts() is not None) is by_channels


@pytest.mark.parametrize("batch", [1, 3])
def test_a_batch_that_does_not_share_out_evenly_shares_its_bands_where_they_write_apart(
    rng, monkeypatch, thread_count, batch
):
    """On 2 workers, a batch of 1 or 3 cut into bands: the forward and a first layer's backward
    (the weight gradient alone) share the (image, band) pieces over both workers, and give the
    definition's outputs and one worker's weight gradient; with a data gradient the bands
    (whose col2im overlaps) keep to whole images."""
    monkeypatch.setattr(conv_gemm, "COLUMN_CHUNK_BYTES", 2500)
    monkeypatch.setattr(conv_gemm, "MIN_BAND_PIXELS", 1)  # bands of a few pixels
    x = rng.standard_normal((batch, 3, 9, 8))
    spec = conv_layer(stride=2, pad=1)
    results = []
    for workers in (1, 2):
        thread_count(workers)
        layer, bottom, top = make_layer(spec, [x])
        assert layer.chunks.bands is not None and len(layer.chunks.bands) >= 2
        layer.forward(bottom, top)
        assert layer.chunks.used_workers == workers
        top[0].diff[...] = np.cos(np.arange(top[0].count)).reshape(top[0].shape)
        layer.backward(top, [False], bottom)
        assert layer.chunks.used_workers == workers
        results.append((top[0].data.copy(), layer.blobs[0].diff.copy()))
        layer.backward(top, [True], bottom)
        assert layer.chunks.used_workers == min(workers, batch)
    weight, bias = params_of(layer)
    expected = reference.convolution(x, weight, bias, (2, 2), (1, 1), (1, 1), 1)
    for y, _ in results:
        np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("stride, pad, dilation", [(2, 1, 1), (1, 0, 2), (1, 2, 1)])
@pytest.mark.parametrize("first_layer", [False, True])
def test_bands_of_many_column_rows_and_few_outputs_run_by_channel_pieces(
    rng, monkeypatch, thread_count, stride, pad, dilation, first_layer
):
    """An image whose bands of output rows make columns of at least ``CHANNEL_PIECES_FROM``
    budgets, under a small weight, makes its columns a few input channels at a time (pieces of
    2, 2 and 1 of 5 channels here, each cut into bands of its own) and adds each piece's
    product into the output (``convolve_by_channel_pieces``); its backward adds each piece's
    rows of the weight gradient (transposed partials, one a worker) and writes each piece's
    channels of the input gradient (``backward_by_channel_pieces``). On 1 and 2 workers: the
    definition's outputs, and the gradients of the same layer by whole bands, to rounding; a
    weight gradient is added to what is there; numerically checked gradients (on the path the
    layer takes; the others, where this small geometry goes as a rule, are set aside)."""
    monkeypatch.setattr(conv_gemm, "COLUMN_CHUNK_BYTES", 800)  # a weight of 2 x 45 values fits
    monkeypatch.setattr(conv_gemm, "MIN_BAND_PIXELS", 1)  # bands of one row: 45 x 12 to 24 values
    monkeypatch.setattr(conv_gemm, "CHANNEL_PIECE_ROWS", 18)  # two channels of 9 taps a piece
    x = rng.standard_normal((3, 5, 9, 24))
    spec = conv_layer(num_output=2, kernel=3, stride=stride, pad=pad, dilation=dilation)
    ran = []
    for name in ("convolve_by_channel_pieces", "backward_by_channel_pieces"):
        spied = getattr(conv_gemm, name)
        monkeypatch.setattr(conv_gemm, name, lambda *a, name=name, f=spied: ran.append(name) or f(*a))
    results = {}
    for by_pieces in (True, False):
        monkeypatch.setattr(conv_gemm, "CHANNEL_PIECES_FROM", 4 if by_pieces else 1 << 40)
        for workers in (1, 2):
            thread_count(workers)
            ran.clear()
            layer, bottom, top = make_layer(spec, [x])
            layer.winograd = layer.strips = layer.grouped = layer.by_taps = None  # im2col's path
            pieces = layer.chunks.channel_pieces()
            layer.forward(bottom, top)
            top[0].diff[...] = np.sin(np.arange(top[0].count)).reshape(top[0].shape)
            layer.blobs[0].diff[...] = 1.0  # the weight gradient is added to what is there
            layer.backward(top, [not first_layer], bottom)
            assert ran == (["convolve_by_channel_pieces", "backward_by_channel_pieces"] if by_pieces else [])
            if by_pieces:
                assert [channels for channels, _ in pieces] == [slice(0, 2), slice(2, 4), slice(4, 5)]
                assert all(sub.bands is not None for _, sub in pieces)
            results[by_pieces, workers] = [top[0].data.copy(), layer.blobs[0].diff.copy(), layer.blobs[1].diff.copy()]
            if not first_layer:
                results[by_pieces, workers].append(bottom[0].diff.copy())
    weight, bias = params_of(layer)
    expected = reference.convolution(x, weight, bias, (stride,) * 2, (pad,) * 2, (dilation,) * 2, 1)
    for result in results.values():
        np.testing.assert_allclose(result[0], expected, rtol=1e-10, atol=1e-12)
        for got, want in zip(result, results[False, 1]):
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert np.abs(results[True, 2][1] - 1.0).max() > 0.1
    monkeypatch.setattr(conv_gemm, "CHANNEL_PIECES_FROM", 4)
    assert_gradients(spec, [x[:2, :, :7]], max_elements=60)


def test_convolution_with_two_bottoms_shares_weights(rng):
    a, b = rng.standard_normal((2, 2, 5, 5)), rng.standard_normal((2, 2, 5, 5))
    spec = dict(conv_layer(num_output=3), bottom=["a", "b"], top=["ya", "yb"])
    layer, (ya, yb) = run_layer(spec, [a, b])
    weight, bias = params_of(layer)
    for x, y in ((a, ya), (b, yb)):
        np.testing.assert_allclose(y, reference.convolution(x, weight, bias, (1, 1), (0, 0), (1, 1), 1), rtol=1e-10)
    assert_gradients(spec, [a, b])


@pytest.mark.parametrize("stride, bias", [(1, True), (3, False)])
def test_a_kernel_as_large_as_the_input_runs_as_an_inner_product_and_is_right(rng, stride, bias):
    a, b = rng.standard_normal((3, 4, 3, 5)), rng.standard_normal((3, 4, 3, 5))
    spec = dict(conv_layer(num_output=6, kernel_h=3, kernel_w=5, stride=stride, bias=bias), bottom=["a", "b"])
    del spec["convolution_param"]["kernel_size"]
    spec["top"] = ["ya", "yb"]
    layer, (ya, yb) = run_layer(spec, [a, b])
    assert layer.whole_map and ya.shape == (3, 6, 1, 1)
    weight, b_param = params_of(layer)
    for x, y in ((a, ya), (b, yb)):
        expected = reference.convolution(x, weight, b_param, (stride,) * 2, (0, 0), (1, 1), 1)
        np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-12)
    assert_gradients(spec, [a, b])
    assert_contract(spec, [a, b])
    padded = dict(spec, convolution_param=dict(spec["convolution_param"], pad=1))
    assert not run_layer(padded, [a, b])[0].whole_map  # padded: more than one output position


@pytest.mark.parametrize("kind", ["Convolution", "Deconvolution"])
def test_convolution_contract(kind, rng):
    assert_contract(conv_layer(kind, stride=2, pad=1, group=2), [rng.standard_normal((2, 4, 6, 7))])
    assert_contract(conv_layer(kind, num_output=4), [rng.standard_normal((2, 4, 18, 18))])


def test_convolution_float32_in_a_net_matches_float64(rng):
    x = rng.standard_normal((2, 3, 9, 9))
    spec = {
        "layers": [
            {"name": "data", "type": "Input", "top": "data", "input_param": {"shape": {"dim": [2, 3, 9, 9]}}},
            dict(conv_layer(num_output=5, pad=1), name="conv", bottom="data", top="conv"),
        ]
    }
    out32 = Net(spec, seed=3, dtype=np.float32).forward(data=x)["conv"]
    out64 = Net(spec, seed=3, dtype=np.float64).forward(data=x)["conv"]
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, out64, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "spec,shape,message",
    [
        (conv_layer(kernel=5), (1, 4, 3, 3), "larger than the padded input"),
        (conv_layer(group=3), (1, 4, 6, 6), "does not divide the 4 input channels"),
        (conv_layer(num_output=5, group=2), (1, 4, 6, 6), "does not divide num_output 5"),
        (conv_layer(kernel=[3, 3, 3]), (1, 4, 6, 6), "give 1, or 2"),
        ({"type": "Convolution", "convolution_param": {"num_output": 2}}, (1, 4, 6, 6), "kernel_size"),
        (
            {
                "type": "Convolution",
                "convolution_param": {"num_output": 2, "kernel_size": 3, "kernel_h": 2, "kernel_w": 2},
            },
            (1, 4, 6, 6),
            "not both",
        ),
        (conv_layer(), (4, 6, 6), "only 2 spatial axes"),
        (conv_layer(stride=0), (1, 4, 6, 6), r"stride\[0\]': expected an integer >= 1, got 0"),
        (conv_layer("Deconvolution", kernel=2, pad=3), (1, 4, 2, 2), "not positive"),
    ],
)
def test_convolution_setup_errors(spec, shape, message):
    with pytest.raises(ConfigError, match=message) as info:
        make_layer(spec, [np.zeros(shape)])
    assert info.value.layer == spec["type"]
    assert "\n" not in str(info.value)


def test_kernel_error_names_the_shapes():
    with pytest.raises(ConfigError) as info:
        make_layer(conv_layer(kernel=5, pad=0), [np.zeros((1, 4, 3, 4))])
    assert "5x5" in str(info.value) and "3x4" in str(info.value)


# -- Im2col -------------------------------------------------------------------------------------
def test_im2col_layer_matches_reference_and_gradients(rng):
    x = rng.standard_normal((2, 3, 6, 5))
    spec = {"type": "Im2col", "convolution_param": {"kernel_size": 3, "pad": 1, "stride": 2}}
    _, (y,) = run_layer(spec, [x])
    expected = reference.im2col(x, (3, 3), (1, 1), (2, 2), (1, 1))
    assert y.shape == (2, 27, 3, 3)
    np.testing.assert_array_equal(y.reshape(2, 27, 9), expected)
    assert_gradients(spec, [x])


# -- LeNet-like net end to end ------------------------------------------------------------------
def test_lenet_like_net_gradients():
    from netlayers.gradcheck import check_net

    spec = {
        "layers": [
            {
                "name": "data",
                "type": "Input",
                "top": ["data", "label"],
                "input_param": {"shape": [{"dim": [2, 1, 10, 10]}, {"dim": [2]}]},
            },
            dict(conv_layer(num_output=3, kernel=3), name="conv1", bottom="data", top="conv1"),
            {
                "name": "pool1",
                "type": "Pooling",
                "bottom": "conv1",
                "top": "pool1",
                "pooling_param": {"kernel_size": 2, "stride": 2},
            },
            dict(conv_layer(num_output=4, kernel=2, pad=1), name="conv2", bottom="pool1", top="conv2"),
            {
                "name": "ip",
                "type": "InnerProduct",
                "bottom": "conv2",
                "top": "ip",
                "inner_product_param": {"num_output": 3, "weight_filler": GAUSS},
            },
            {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["ip", "label"], "top": "loss"},
        ]
    }
    rng = np.random.default_rng(4)
    report = check_net(
        spec, inputs={"data": rng.standard_normal((2, 1, 10, 10)), "label": np.array([0.0, 2.0])}, max_elements=40
    )
    assert report.passed, str(report)


# -- Caffe's own numbers --------------------------------------------------------------------
CAFFE = Path(__file__).resolve().parents[1] / "fixtures" / "caffe"  # copied from shared/caffe
FASHION = Path("/usr/share/datasets/fashion-mnist")


def test_lenet_with_caffe_weights_reproduces_caffe_test_figures():
    """BVLC Caffe's LeNet at iteration 10000 scores accuracy 0.8996, loss 0.305403 on the
    10,000 Fashion-MNIST test images (pixels / 256); our Convolution, Pooling (CEIL), etc. with
    its weights must give the same."""
    from netlayers.caffe.wire import read_caffemodel
    from netlayers.data.idx import read_idx

    images = read_idx(FASHION / "t10k-images-idx3-ubyte.gz").astype(np.float32) / 256
    labels = read_idx(FASHION / "t10k-labels-idx1-ubyte.gz").astype(np.float32)
    weights = read_caffemodel(CAFFE / "lenet_fmnist_iter_10000.caffemodel")
    net = Net(lenet(100), "TEST")
    for name in ("conv1", "conv2", "ip1", "ip2"):
        for blob, array in zip(net.params[name], weights[name]):
            blob.data[...] = np.asarray(array).reshape(blob.shape)
    correct, loss = 0, 0.0
    for start in range(0, 10000, 100):
        net.forward(data=images[start : start + 100, None], label=labels[start : start + 100])
        correct += int((net.blobs["ip2"].data.argmax(axis=1) == labels[start : start + 100]).sum())
        loss += float(net.blobs["loss"].data)
    assert correct == 8996
    assert abs(loss / 100 - 0.305403) < 5e-6


def lenet(batch):
    layers = [
        {
            "name": "data",
            "type": "Input",
            "top": ["data", "label"],
            "input_param": {"shape": [{"dim": [batch, 1, 28, 28]}, {"dim": [batch]}]},
        },
        {
            "name": "conv1",
            "type": "Convolution",
            "bottom": "data",
            "top": "conv1",
            "convolution_param": {"num_output": 20, "kernel_size": 5},
        },
        {
            "name": "pool1",
            "type": "Pooling",
            "bottom": "conv1",
            "top": "pool1",
            "pooling_param": {"pool": "MAX", "kernel_size": 2, "stride": 2},
        },
        {
            "name": "conv2",
            "type": "Convolution",
            "bottom": "pool1",
            "top": "conv2",
            "convolution_param": {"num_output": 50, "kernel_size": 5},
        },
        {
            "name": "pool2",
            "type": "Pooling",
            "bottom": "conv2",
            "top": "pool2",
            "pooling_param": {"pool": "MAX", "kernel_size": 2, "stride": 2},
        },
        {
            "name": "ip1",
            "type": "InnerProduct",
            "bottom": "pool2",
            "top": "ip1",
            "inner_product_param": {"num_output": 500},
        },
        {"name": "relu1", "type": "ReLU", "bottom": "ip1", "top": "ip1"},
        {
            "name": "ip2",
            "type": "InnerProduct",
            "bottom": "ip1",
            "top": "ip2",
            "inner_product_param": {"num_output": 10},
        },
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["ip2", "label"], "top": "loss"},
    ]
    return {"name": "LeNet", "layers": layers}


@pytest.mark.parametrize("kind", ["Convolution", "Deconvolution"])
def test_convolution_results_agree_for_any_worker_count_and_repeat_exactly(rng, thread_count, kind):
    """The chunks (and so the products' sizes) and the weight gradient's per-worker partial
    sums follow the worker count: results agree to rounding across counts, and bit for bit
    when run again with the same count."""
    x = rng.standard_normal((7, 4, 9, 9))
    spec = {
        "name": "conv",
        "type": kind,
        "bottom": "x",
        "top": "y",
        "convolution_param": {
            "num_output": 6,
            "kernel_size": 3,
            "pad": 1,
            "stride": 2,
            "group": 2,
            "weight_filler": {"type": "gaussian"},
            "bias_filler": {"type": "gaussian"},
        },
    }
    results = []
    for workers in (1, 2, 3, 3):
        thread_count(workers)
        layer, bottom, top = make_layer(spec, [x])
        layer.forward(bottom, top)
        top[0].diff[...] = np.cos(np.arange(top[0].count)).reshape(top[0].shape)
        layer.backward(top, [True], bottom)
        weight, bias = layer.blobs
        results.append((top[0].data.copy(), bottom[0].diff.copy(), weight.diff.copy(), bias.diff.copy()))
    for other in results[1:3]:
        for got, first in zip(other, results[0]):
            np.testing.assert_allclose(got, first, rtol=1e-12, atol=1e-12)
    for again, before in zip(results[3], results[2]):
        np.testing.assert_array_equal(again, before)


@pytest.mark.parametrize("kind", ["Convolution", "Deconvolution"])
@pytest.mark.parametrize("data_gradient", [True, False])
def test_the_weight_gradient_is_read_in_the_calling_thread_only(thread_count, monkeypatch, kind, data_gradient):
    """Reading a diff writes the zeros a lazy clear left due; worker 0 adds its products into
    the weight's gradient itself, so no worker may read it (another worker's late zeroing would
    wipe what worker 0 added): the layer reads it once, before handing out the steps. The
    gradient after a lazy clear equals the one from zeros."""
    import threading

    from netlayers.blob import Blob

    thread_count(2)
    monkeypatch.setattr(conv_gemm, "DIRECT_WEIGHT_GRAD_BYTES", 0)  # worker 0 adds into the diff
    rng = np.random.default_rng(8)
    x = rng.standard_normal((8, 4, 12, 12))
    layer = {"type": kind, "convolution_param": {"num_output": 6, "kernel_size": 3, "pad": 1}}
    instance, bottom, top = make_layer(layer, [x])
    instance.forward(bottom, top)
    top[0].diff[...] = rng.standard_normal(top[0].shape)
    weight = instance.blobs[0]
    readers = []
    getter = Blob.diff.fget

    def spying(blob):
        if blob is weight:
            readers.append(threading.get_ident())
        return getter(blob)

    results = []
    for lazy in (False, True):
        weight.diff[...] = 0
        if lazy:
            weight.diff[...] = np.nan  # what a lazy clear must overwrite
            weight.zero_diff()
        monkeypatch.setattr(Blob, "diff", property(spying, Blob.diff.fset))
        instance.backward(top, [data_gradient], bottom)
        monkeypatch.undo()
        monkeypatch.setattr(conv_gemm, "DIRECT_WEIGHT_GRAD_BYTES", 0)
        results.append(weight.diff.copy())
    assert readers and set(readers) == {threading.get_ident()}
    np.testing.assert_array_equal(results[1], results[0])
    assert np.isfinite(results[0]).all() and np.abs(results[0]).max() > 0


def test_two_tops_on_winograd_one_without_input_gradient_each_get_theirs():
    """Two bottoms through one Winograd convolution, the second (its backward first) without
    an input gradient: that backward sums a weight-gradient partial in U's buffer, so the
    first's input gradient needs U made again, which the layer does for each top."""
    rng = np.random.default_rng(8)
    x = [rng.standard_normal((2, 64, 16, 16)) for _ in range(2)]
    layer, bottom, top = make_layer({**conv_layer(num_output=64, pad=1), "top": ["t0", "t1"]}, x)
    assert layer.winograd is not None
    layer.forward(bottom, top)
    dy = [rng.standard_normal(t.shape) for t in top]
    for t, d in zip(top, dy):
        t.diff[...] = d
    layer.blobs[0].diff[...] = 0
    layer.blobs[1].diff[...] = 0
    layer.backward(top, [True, False], bottom)
    weight = layer.blobs[0].data

    def windows(a):  # (N, C, H, W) padded by 1 -> (N, C, H, W, 3, 3)
        return np.lib.stride_tricks.sliding_window_view(np.pad(a, ((0, 0), (0, 0), (1, 1), (1, 1))), (3, 3), (2, 3))

    weight_grad = sum(np.einsum("nohw,nchwuv->ocuv", d, windows(b)) for d, b in zip(dy, x))
    input_grad = np.einsum("nohwuv,ocuv->nchw", windows(dy[0]), weight[:, :, ::-1, ::-1])
    np.testing.assert_allclose(bottom[0].diff, input_grad, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(layer.blobs[0].diff, weight_grad, rtol=1e-9, atol=1e-9)
