"""Deconvolution's phase kernels (netlayers.kernels.deconv) against im2col / col2im (bit for
bit) and a direct numpy formula, and the Deconvolution layer on that path: the same bits as
the generic path, the definition, gradients, bands, groups, 1 and 2 workers, and its rule."""

import itertools

import numpy as np
import pytest
from layer_harness import assert_gradients, make_layer
from reference import convolution, deconvolution

from netlayers import parallel
from netlayers.kernels import conv_gemm, deconv, grouped
from netlayers.kernels import im2col as conv_kernels

# (stride, kernel, pad, dilation) per axis pair; (H, W) of the deconvolution's input
GEOMETRIES = [
    ((2, 2), (4, 4), (1, 1), (1, 1)),
    ((2, 2), (3, 3), (1, 1), (1, 1)),
    ((2, 2), (2, 2), (0, 0), (1, 1)),
    ((2, 2), (5, 5), (2, 2), (1, 1)),
    ((3, 3), (5, 5), (1, 1), (1, 1)),
    ((3, 3), (2, 2), (0, 0), (1, 1)),
    ((3, 3), (4, 4), (2, 2), (1, 1)),
    ((2, 3), (3, 4), (0, 2), (1, 1)),
    ((1, 2), (3, 4), (1, 1), (1, 1)),
    ((2, 2), (3, 3), (1, 0), (2, 2)),
]
SIZES = [(3, 5), (4, 4), (1, 2)]


def out_size(in_size, kernel, pad, stride, dilation):
    return tuple(s * (n - 1) + d * (k - 1) + 1 - 2 * p for n, k, p, s, d in zip(in_size, kernel, pad, stride, dilation))


def direct_col2im(col, kernel, pad, stride, dilation, in_size, out):
    """y[n, o, i s - p + u d, j s - p + v d] += col[(o, u, v), n, (i, j)], inside the output."""
    images, outputs, oh, ow = out
    y = np.zeros(out)
    col = col.reshape(outputs, kernel[0], kernel[1], images, in_size[0], in_size[1])
    for u, v, i, j in itertools.product(range(kernel[0]), range(kernel[1]), range(in_size[0]), range(in_size[1])):
        yy, xx = i * stride[0] - pad[0] + u * dilation[0], j * stride[1] - pad[1] + v * dilation[1]
        if 0 <= yy < oh and 0 <= xx < ow:
            y[:, :, yy, xx] += col[:, u, v, :, i, j].T
    return y


def geometry_cases():
    for (stride, kernel, pad, dilation), size in itertools.product(GEOMETRIES, SIZES):
        if min(out_size(size, kernel, pad, stride, dilation)) > 0:
            yield stride, kernel, pad, dilation, size


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_phase_kernels_give_col2im_and_im2col_bit_for_bit(dtype, rng):
    checked = 0
    for stride, kernel, pad, dilation, size in geometry_cases():
        images, outputs = (1, 3) if size == (1, 2) else (2, 2)
        oh, ow = out_size(size, kernel, pad, stride, dilation)
        geometry = (kernel, pad, stride, dilation)
        layout = deconv.PhaseLayout(*geometry, size, (oh, ow))
        buffer = np.full(layout.size + 3, np.nan, dtype)
        col = rng.standard_normal((outputs * kernel[0] * kernel[1], images, size[0] * size[1])).astype(dtype)
        bias = rng.standard_normal(outputs).astype(dtype)
        expected = np.empty((images, outputs, oh, ow), dtype)
        conv_kernels.col2im(col, *geometry, size, expected, False)
        conv_kernels.add_bias(expected.reshape(images, outputs, -1), bias)
        got = np.full_like(expected, np.nan)
        deconv.phase_col2im(col, *geometry, size, layout, bias, got, buffer)
        np.testing.assert_array_equal(got, expected, err_msg=str((stride, kernel, pad, dilation, size)))
        direct = direct_col2im(col.astype(np.float64), *geometry, size, expected.shape) + bias[:, None, None]
        np.testing.assert_allclose(got, direct, rtol=1e-5, atol=1e-5)

        image = rng.standard_normal((images, outputs, oh, ow)).astype(dtype)
        want = np.empty_like(col)
        conv_kernels.im2col(image, *geometry, size, want, False)
        columns = np.full_like(col, np.nan)
        deconv.phase_im2col(image, *geometry, size, layout, columns, buffer)
        np.testing.assert_array_equal(columns, want, err_msg=str((stride, kernel, pad, dilation, size)))
        checked += 1
    assert checked >= 25


@pytest.mark.parametrize(
    "kernel, pad, stride, dilation, size",
    [
        ((4, 4), (1, 1), (2, 2), (1, 1), (5, 3)),
        ((3, 3), (0, 0), (2, 2), (1, 1), (6, 4)),
        ((3, 3), (2, 1), (2, 2), (2, 1), (7, 5)),
    ],
)
def test_phase_im2col_of_a_band_of_rows_equals_im2col_band(rng, kernel, pad, stride, dilation, size):
    """A band fills (and zeroes) only the rows of the phase buffer it reads: the buffer starts
    as NaN and keeps what earlier bands left."""
    oh, ow = out_size(size, kernel, pad, stride, dilation)
    image = rng.standard_normal((2, 3, oh, ow))
    layout = deconv.PhaseLayout(kernel, pad, stride, dilation, size, (oh, ow))
    table = conv_kernels.geometry_table(image.shape, kernel, pad, stride, dilation, size)
    lanes = np.full(layout.size, np.nan)
    taps = kernel[0] * kernel[1]
    for top, rows in [(size[0] - 1, 1), (0, 2), (2, 2), (4, 1), (1, size[0] - 1), (0, size[0])]:
        band = conv_kernels.band_table(table, top, rows, stride[0], ow)
        want = np.empty((3 * taps, 2, rows * size[1]))
        conv_kernels.im2col_band(image, kernel, stride, size[1], band, rows, want)
        got = deconv.phase_im2col(
            image, kernel, pad, stride, dilation, size, layout, np.empty_like(want), lanes, top, rows
        )
        np.testing.assert_array_equal(got, want)


def test_kernels_reject_buffers_that_do_not_fit():
    layout = deconv.PhaseLayout((4, 4), (1, 1), (2, 2), (1, 1), (3, 3), (6, 6))
    y = np.empty((1, 2, 6, 6))
    with pytest.raises(ValueError, match="do not fit"):
        deconv.phase_col2im(
            np.empty((32, 1, 8)), (4, 4), (1, 1), (2, 2), (1, 1), (3, 3), layout, np.zeros(2), y, np.empty(layout.size)
        )
    with pytest.raises(ValueError, match="too small"):
        deconv.phase_im2col(y, (4, 4), (1, 1), (2, 2), (1, 1), (3, 3), layout, np.empty((32, 1, 9)), np.empty(3))


def test_rule_takes_wide_rows_and_kernels_twice_the_stride():
    budget = conv_gemm.COLUMN_CHUNK_BYTES
    assert deconv.applies((4, 4), (2, 2), 32, budget)  # the decoders' and GANs' 4x4 stride 2
    assert deconv.applies((6, 6), (3, 3), 40, 1000)
    assert deconv.applies((4, 4), (2, 2), 8, 1000)  # DCGAN's 8 -> 16 layer
    assert not deconv.applies((4, 4), (2, 2), 4, 1000)  # rows of 4: measured no faster
    assert not deconv.applies((3, 3), (2, 2), 32, 1000)  # fewer overlapping taps
    assert not deconv.applies((2, 2), (2, 2), 32, 1000)  # kernel == stride: measured slower
    assert not deconv.applies((4, 4), (1, 1), 32, 1000)  # stride 1: col2im's runs are contiguous
    assert not deconv.applies((4, 4), (2, 2), 32, budget + 1)  # bands of rows


@pytest.mark.parametrize("dtype,width,phases", [(np.float32, 16, True), (np.float64, 4, False)])
def test_layer_chooses_by_the_rule(dtype, width, phases):
    layer, _, _ = make_layer(deconv_spec(16, 4, 2, 1), [np.zeros((2, 32, 3, width))], dtype=dtype)
    assert isinstance(layer.chunks, deconv.PhaseChunks) == phases


def deconv_spec(num_output, kernel, stride, pad, dilation=1, group=1, bias=True):
    param = {
        "num_output": num_output,
        "kernel_size": kernel,
        "stride": stride,
        "pad": pad,
        "dilation": dilation,
        "group": group,
        "bias_term": bias,
        "weight_filler": {"type": "gaussian", "std": 0.5},
        "bias_filler": {"type": "gaussian", "std": 0.5},
    }
    return {"type": "Deconvolution", "convolution_param": param}


def forward_backward(spec, x, dtype, phases, monkeypatch, rule="applies", data_grad=True):
    """Output, input gradient and param gradients of one forward + backward on the phase path
    (``phases``) or the generic one, the choice made by ``deconv.<rule>``; ``data_grad``: whether
    the backward makes the input gradient (else it stays 0: a net's first layer). A grouped
    3x3 Convolution that the direct grouped kernels would take keeps to these paths."""
    monkeypatch.setattr(deconv, rule, lambda *geometry: phases)
    monkeypatch.setattr(grouped, "applies", lambda *geometry: False)
    layer, bottom, top = make_layer(spec, [x], dtype=dtype)
    assert isinstance(layer.chunks, deconv.PhaseChunks) == phases
    layer.forward(bottom, top)
    top[0].diff[...] = np.random.default_rng(3).standard_normal(top[0].shape)
    for blob in layer.blobs + bottom:
        blob.diff[...] = 0
    layer.Backward_cpu(top, [data_grad], bottom)
    weight, bias = layer.blobs[0].data, layer.blobs[1].data if len(layer.blobs) > 1 else None
    return (top[0].data.copy(), bottom[0].diff.copy(), *[b.diff.copy() for b in layer.blobs]), (weight, bias)


LAYER_CASES = [  # (input shape, num_output, kernel, stride, pad, dilation, group, bias)
    ((2, 4, 5, 3), 6, 4, 2, 1, 1, 1, True),
    ((1, 3, 4, 5), 2, 3, 2, 1, 1, 1, False),
    ((3, 4, 3, 3), 4, 5, 3, 2, 1, 2, True),
    ((2, 2, 3, 4), 3, 3, 2, 0, 2, 1, True),
]


@pytest.mark.parametrize("case", LAYER_CASES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_layer_on_phases_gives_the_generic_bits_and_the_definition(case, dtype, rng, monkeypatch):
    shape, outputs, kernel, stride, pad, dilation, group, bias = case
    spec = deconv_spec(outputs, kernel, stride, pad, dilation, group, bias)
    x = rng.standard_normal(shape)
    saved = parallel.thread_count()
    try:
        for workers in (1, 2):
            parallel.set_thread_count(workers)
            generic, _ = forward_backward(spec, x, dtype, False, monkeypatch)
            phased, (weight, b) = forward_backward(spec, x, dtype, True, monkeypatch)
            for want, got in zip(generic, phased):
                np.testing.assert_array_equal(got, want)
    finally:
        parallel.set_thread_count(saved)
    expected = deconvolution(
        x,
        weight.astype(np.float64),
        None if b is None else b.astype(np.float64),
        (stride,) * 2,
        (pad,) * 2,
        (dilation,) * 2,
        group,
    )
    tolerance = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(phased[0], expected, rtol=tolerance, atol=tolerance * 10)


def test_layer_on_phases_in_bands_of_rows(rng, monkeypatch):
    """Images whose columns exceed the chunk budget are cut into bands of input rows."""
    spec = deconv_spec(3, 4, 2, 1)
    x = rng.standard_normal((2, 2, 5, 4))
    monkeypatch.setattr(conv_gemm, "COLUMN_CHUNK_BYTES", 1)
    monkeypatch.setattr(conv_gemm, "MIN_BAND_PIXELS", 1)  # bands of a few pixels
    generic, _ = forward_backward(spec, x, np.float64, False, monkeypatch)
    phased, (weight, bias) = forward_backward(spec, x, np.float64, True, monkeypatch)
    for want, got in zip(generic, phased):
        np.testing.assert_array_equal(got, want)
    expected = deconvolution(x, weight, bias, (2, 2), (1, 1), (1, 1), 1)
    np.testing.assert_allclose(phased[0], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", [LAYER_CASES[0], LAYER_CASES[2]])
def test_layer_gradients_on_phases(case, rng, monkeypatch):
    shape, outputs, kernel, stride, pad, dilation, group, bias = case
    spec = deconv_spec(outputs, kernel, stride, pad, dilation, group, bias)
    monkeypatch.setattr(deconv, "applies", lambda *geometry: True)
    layer, _, _ = make_layer(spec, [rng.standard_normal(shape)])
    assert isinstance(layer.chunks, deconv.PhaseChunks)
    assert_gradients(spec, [rng.standard_normal(shape)])


# -- strided Convolutions on the phase kernels ---------------------------------------------------
CONVOLUTION_CASES = [  # (input shape, num_output, kernel, stride, pad, dilation, group)
    ((2, 4, 9, 8), 6, 3, 2, 1, 1, 1),  # ResNet's downsampling 3x3
    ((3, 4, 7, 9), 4, 3, 2, 1, 1, 2),  # grouped, odd sizes
    ((2, 3, 11, 10), 5, 7, 2, 3, 1, 1),  # a ResNet stem
    ((2, 2, 9, 9), 3, 3, 2, 2, 2, 1),  # dilated
    ((1, 3, 6, 7), 2, 4, 2, 0, 1, 1),  # kernel 4, no padding
]


def convolution_spec(outputs, kernel, stride, pad, dilation, group):
    param = {"num_output": outputs, "kernel_size": kernel, "stride": stride, "pad": pad, "dilation": dilation}
    param |= {"group": group, "weight_filler": {"type": "gaussian"}, "bias_filler": {"type": "gaussian"}}
    return {"type": "Convolution", "convolution_param": param}


@pytest.mark.parametrize("case", CONVOLUTION_CASES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_strided_convolution_on_phases_gives_the_generic_bits(case, dtype, rng, thread_count, monkeypatch):
    """Output, input gradient and param gradients equal bit for bit, with one worker and two,
    with and without a data gradient (a net's first layer), and match the definition."""
    shape, outputs, kernel, stride, pad, dilation, group = case
    spec = convolution_spec(outputs, kernel, stride, pad, dilation, group)
    x = rng.standard_normal(shape)
    for workers, data_grad in itertools.product((1, 2), (True, False)):
        thread_count(workers)
        generic, _ = forward_backward(spec, x, dtype, False, monkeypatch, "convolution_applies", data_grad)
        phased, _ = forward_backward(spec, x, dtype, True, monkeypatch, "convolution_applies", data_grad)
        for want, got in zip(generic, phased):
            np.testing.assert_array_equal(got, want)
    layer, bottom, top = make_layer(spec, [x])
    assert isinstance(layer.chunks, deconv.PhaseChunks)
    layer.forward(bottom, top)
    weight, bias = (b.data for b in layer.blobs)
    expected = convolution(x, weight, bias, (stride,) * 2, (pad,) * 2, (dilation,) * 2, group)
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-12, atol=1e-12)


def test_convolution_rule_takes_stride_2_and_kernels_of_3_or_more():
    assert deconv.convolution_applies((3, 3), (2, 2))
    assert deconv.convolution_applies((7, 7), (2, 2))
    assert deconv.convolution_applies((1, 5), (1, 2))
    assert not deconv.convolution_applies((1, 1), (2, 2))  # nothing shared between taps
    assert not deconv.convolution_applies((3, 3), (1, 1))
    assert not deconv.convolution_applies((11, 11), (4, 4))


def test_strided_convolution_gradients_on_phases(rng, monkeypatch):
    monkeypatch.setattr(grouped, "applies", lambda *geometry: False)  # its grouped 3x3 stays on phases
    spec = convolution_spec(*CONVOLUTION_CASES[1][1:])
    layer, _, _ = make_layer(spec, [rng.standard_normal(CONVOLUTION_CASES[1][0])])
    assert isinstance(layer.chunks, deconv.PhaseChunks)
    assert_gradients(spec, [rng.standard_normal(CONVOLUTION_CASES[1][0])])


# -- the sub-pixel form: a stride-1 Convolution and a pixel shuffle -----------------------------
SUBPIXEL_CASES = [  # (input H, W), kernel, stride, pad, group
    ((5, 6), (4, 4), (2, 2), (1, 1), 1),
    ((3, 4), (2, 2), (2, 2), (0, 0), 1),
    ((4, 3), (4, 2), (2, 1), (1, 0), 2),
    ((4, 4), (6, 6), (3, 3), (1, 2), 1),
    ((3, 3), (4, 4), (2, 2), (0, 0), 1),
    ((5, 5), (4, 4), (2, 2), (2, 2), 1),
    ((5, 5), (4, 4), (2, 2), (3, 1), 1),
    ((4, 5), (3, 3), (1, 1), (1, 1), 2),
    ((4, 5), (3, 3), (1, 1), (0, 2), 1),
    ((3, 3), (8, 8), (4, 4), (2, 2), 3),
    ((3, 3), (2, 4), (2, 4), (0, 1), 1),
    ((1, 1), (4, 4), (2, 2), (1, 1), 1),
]


@pytest.mark.parametrize("size,kernel,stride,pad,group", SUBPIXEL_CASES)
def test_subpixel_convolution_and_shuffle_give_the_deconvolution(size, kernel, stride, pad, group, rng):
    channels, outputs = 2 * group, 3 * group
    x = rng.standard_normal((2, channels) + size)
    weight = rng.standard_normal((channels, outputs // group) + kernel)
    bias = rng.standard_normal(outputs)
    expected = deconvolution(x, weight, bias, stride, pad, (1, 1), group)
    plan = deconv.Subpixel(kernel, stride, pad, size, expected.shape[2:], channels, outputs, group)
    inner = np.empty((plan.outputs, channels // group) + plan.kernel)
    plan.weights(weight, inner)
    z = convolution(x, inner, None, (1, 1), plan.pad, (1, 1), group)
    assert z.shape[2:] == plan.size
    y = np.empty_like(expected)
    plan.shuffle(z, bias, y)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    # the unshuffle is the shuffle's transpose: <shuffle(z), dy> = <z, unshuffle(dy)>
    dy, dz = rng.standard_normal(y.shape), np.empty_like(z)
    plan.unshuffle(dy, dz)
    plan.shuffle(z, np.zeros(outputs), y)
    assert np.isclose(np.vdot(y, dy), np.vdot(z, dz), rtol=1e-12)
    # and the weight gradient goes back through the inverse permutation
    weight_diff = np.ones_like(weight)
    plan.add_weight_grad(inner, weight_diff)
    np.testing.assert_array_equal(weight_diff, weight + 1)


def test_subpixel_rule_takes_large_outputs_and_kernels_a_multiple_of_the_stride():
    big = (96, 96)
    assert deconv.subpixel_applies((4, 4), (2, 2), (1, 1), big, 64, 16)
    assert deconv.subpixel_applies((16, 16), (8, 8), (1, 1), (128, 128), 21, 21)  # FCN's upsampling
    assert not deconv.subpixel_applies((4, 4), (2, 2), (1, 1), (64, 64), 64, 32)  # small outputs
    assert not deconv.subpixel_applies((4, 4), (2, 2), (1, 1), big, 64, 3)  # few outputs: thin products
    assert not deconv.subpixel_applies((3, 3), (2, 2), (1, 1), big, 64, 16)  # the phases' taps differ
    assert deconv.subpixel_applies((3, 3), (1, 1), (1, 1), (14, 14), 256, 128)  # stride 1: a Convolution
    assert not deconv.subpixel_applies((3, 3), (1, 1), (1, 1), (14, 14), 512, 512)  # but not of 512
    assert not deconv.subpixel_applies((3, 3), (1, 1), (1, 1), (14, 14), 256, 8)
    assert not deconv.subpixel_applies((4, 4), (2, 2), (2, 2), big, 64, 16)  # dilated


def test_layer_chooses_the_subpixel_form_by_the_rule():
    layer, _, _ = make_layer(deconv_spec(16, 4, 2, 1), [np.zeros((1, 2, 48, 48))], dtype=np.float32)
    assert layer.subpixel is not None and layer.inner.kernel == (2, 2) and layer.inner.pad == (1, 1)
    layer, _, _ = make_layer(deconv_spec(16, 4, 2, 1), [np.zeros((1, 2, 16, 16))], dtype=np.float32)
    assert layer.subpixel is None


def subpixel_everywhere(monkeypatch, on=True):
    monkeypatch.setattr(deconv, "SUBPIXEL_MIN_OUTPUT_PIXELS", 1 if on else 1 << 60)
    monkeypatch.setattr(deconv, "SUBPIXEL_STRIDE1_MAX_CHANNELS", 1 << 60 if on else 0)
    monkeypatch.setattr(deconv, "SUBPIXEL_MIN_OUTPUTS", 1)


def run_two_bottoms(spec, xs, dtype, propagate):
    """Tops, bottom gradients and param gradients of one forward + backward with two bottoms."""
    spec = dict(spec, top=["t0", "t1"])
    layer, bottom, top = make_layer(spec, xs, dtype=dtype)
    layer.forward(bottom, top)
    dys = [np.random.default_rng(5 + i).standard_normal(t.shape) for i, t in enumerate(top)]
    for t, dy in zip(top, dys):
        t.diff[...] = dy
    for blob in layer.blobs:
        blob.diff[...] = 0
    layer.backward(top, propagate, bottom)
    grads = [b.diff.copy() if p else None for b, p in zip(bottom, propagate)]
    return layer, [t.data.copy() for t in top], grads, [b.diff.copy() for b in layer.blobs]


@pytest.mark.parametrize("case", SUBPIXEL_CASES[::2])
@pytest.mark.parametrize("workers,dtype", [(1, np.float64), (2, np.float64), (2, np.float32)])
def test_layer_on_the_subpixel_form_agrees_with_the_other_forms(case, workers, dtype, rng, monkeypatch):
    size, kernel, stride, pad, group = case
    spec = deconv_spec(3 * group, list(kernel), list(stride), list(pad), group=group, bias=group != 3)
    xs = [rng.standard_normal((2, 2 * group) + size) for _ in range(2)]
    saved = parallel.thread_count()
    try:
        parallel.set_thread_count(workers)
        results = {}
        for on in (False, True):
            subpixel_everywhere(monkeypatch, on)
            layer, *results[on] = run_two_bottoms(spec, xs, dtype, [True, False])
            assert (layer.subpixel is not None) == on
    finally:
        parallel.set_thread_count(saved)
    for want, got in zip(results[False], results[True]):
        for a, b in zip(want, got):
            if a is None:
                assert b is None
            else:
                tolerance = 1e-11 if dtype == np.float64 else 2e-5
                np.testing.assert_allclose(b, a, rtol=tolerance, atol=tolerance)
    assert results[True][1][1] is None  # no data gradient asked of the second bottom


@pytest.mark.parametrize("case", [SUBPIXEL_CASES[0], SUBPIXEL_CASES[2], SUBPIXEL_CASES[9]])
def test_layer_gradients_on_the_subpixel_form(case, rng, monkeypatch):
    size, kernel, stride, pad, group = case
    spec = deconv_spec(3 * group, list(kernel), list(stride), list(pad), group=group)
    subpixel_everywhere(monkeypatch)
    shape = (2, 2 * group) + size
    layer, _, _ = make_layer(spec, [rng.standard_normal(shape)])
    assert layer.subpixel is not None
    assert_gradients(spec, [rng.standard_normal(shape)])


def test_the_warmup_compiles_the_shuffles(monkeypatch):
    """warmup.py's one-image pass sets the sub-pixel thresholds at 1: the Deconvolution examples
    must then run both shuffles, with a stride of 2 and of 1, in float32 and float64."""
    from netlayers.warmup import builtin_examples, run_example

    subpixel_everywhere(monkeypatch)
    calls = set()
    for name in ("_shuffle", "_unshuffle"):
        kernel = getattr(deconv, name)

        def record(source, sh, *args, kernel=kernel, name=name):
            calls.add((name, sh, source.dtype.name))
            return kernel(source, sh, *args)

        monkeypatch.setattr(deconv, name, record)
    for type_name, example in builtin_examples():
        if type_name == "Deconvolution":
            for dtype in (np.float32, np.float64):
                run_example(type_name, example, dtype)
    names, types = ("_shuffle", "_unshuffle"), ("float32", "float64")
    assert calls == {(name, s, t) for name in names for s in (1, 2) for t in types}
