"""Pooling and SPP: values against the slow references (tests/reference.py), gradients, the
layer contract, Caffe's pooled sizes (CEIL and FLOOR) and setup errors."""

import numpy as np
import pytest
import reference
from layer_harness import assert_contract, assert_gradients, make_layer, run_layer

from netlayers import ConfigError


# -- Pooling ------------------------------------------------------------------------------------
def distinct(rng, shape):
    return rng.permutation(int(np.prod(shape))).reshape(shape) / 10.0


POOL_CASES = [(2, 2, 0), (3, 2, 0), (3, 2, 1), (3, 1, 1), (2, 1, 0), (4, 3, 2)]


@pytest.mark.parametrize("kernel,stride,pad", POOL_CASES)
@pytest.mark.parametrize("pool", ["MAX", "AVE"])
def test_pooling_matches_reference_and_gradients(kernel, stride, pad, pool, rng):
    x = distinct(rng, (2, 3, 7, 6))
    spec = {"type": "Pooling", "pooling_param": {"pool": pool, "kernel_size": kernel, "stride": stride, "pad": pad}}
    _, (y,) = run_layer(spec, [x])
    expected, _ = reference.pooling(x, (kernel, kernel), (stride, stride), (pad, pad), pool)
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    assert_gradients(spec, [x])


@pytest.mark.parametrize(
    "size,kernel,stride,pad",
    [
        (7, 2, 2, 0),
        (6, 3, 2, 0),
        (7, 3, 2, 1),
        (6, 3, 2, 1),
        (5, 2, 2, 1),
        (13, 3, 3, 1),
        (24, 2, 2, 0),
    ],
)
@pytest.mark.parametrize("round_mode", ["CEIL", "FLOOR"])
def test_pooled_size_follows_caffe(size, kernel, stride, pad, round_mode):
    spec = {
        "type": "Pooling",
        "pooling_param": {"kernel_size": kernel, "stride": stride, "pad": pad, "round_mode": round_mode},
    }
    layer, bottom, top = make_layer(spec, [np.zeros((1, 1, size, size))])
    expected = reference.pooled_size(size, kernel, pad, stride, round_mode)
    assert top[0].shape == (1, 1, expected, expected)


def test_padding_on_one_axis_clips_both_as_caffe(rng):
    """Caffe clips the last window on every axis as soon as one axis is padded: here the
    unpadded height (5, kernel 1, stride 3) gets 2 rows instead of a third starting outside."""
    x = distinct(rng, (1, 2, 5, 6))
    spec = {
        "type": "Pooling",
        "pooling_param": {"kernel_h": 1, "kernel_w": 3, "stride_h": 3, "stride_w": 2, "pad_h": 0, "pad_w": 1},
    }
    _, (y,) = run_layer(spec, [x])
    assert y.shape == (1, 2, 2, 4)
    np.testing.assert_array_equal(y, reference.pooling(x, (1, 3), (3, 2), (0, 1))[0])


def test_ceil_is_the_default_and_differs_from_floor():
    sizes = {}
    for mode in (None, "CEIL", "FLOOR"):
        param = {"kernel_size": 2, "stride": 2}
        if mode:
            param["round_mode"] = mode
        _, _, top = make_layer({"type": "Pooling", "pooling_param": param}, [np.zeros((1, 1, 7, 7))])
        sizes[mode] = top[0].shape[2:]
    assert sizes[None] == sizes["CEIL"] == (4, 4) and sizes["FLOOR"] == (3, 3)


def test_rectangular_and_global_pooling(rng):
    x = distinct(rng, (2, 2, 5, 7))
    spec = {
        "type": "Pooling",
        "pooling_param": {
            "pool": "AVE",
            "kernel_h": 3,
            "kernel_w": 2,
            "stride_h": 2,
            "stride_w": 1,
            "pad_h": 1,
            "pad_w": 0,
        },
    }
    _, (y,) = run_layer(spec, [x])
    np.testing.assert_allclose(y, reference.pooling(x, (3, 2), (2, 1), (1, 0), "AVE")[0])
    _, (g,) = run_layer({"type": "Pooling", "pooling_param": {"global_pooling": True}}, [x])
    np.testing.assert_allclose(g, x.max(axis=(2, 3), keepdims=True))
    _, (a,) = run_layer({"type": "Pooling", "pooling_param": {"global_pooling": True, "pool": "AVE"}}, [x])
    np.testing.assert_allclose(a, x.mean(axis=(2, 3), keepdims=True))


def test_max_pooling_mask_top(rng):
    x = distinct(rng, (2, 2, 6, 6))
    spec = {"type": "Pooling", "top": ["y", "mask"], "pooling_param": {"kernel_size": 3, "stride": 2}}
    _, (y, mask) = run_layer(spec, [x])
    expected, argmax = reference.pooling(x, (3, 3), (2, 2), (0, 0))
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(mask, argmax)
    assert_gradients(spec, [x])


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("kernel,stride,pad", [(2, 2, 0), (3, 2, 1), (3, 1, 1)])
def test_max_pooling_without_backward_finds_its_maxima_in_chunks(
    kernel, stride, pad, workers, rng, thread_count, monkeypatch
):
    """A MAX pooling whose backward never runs, without a mask top, keeps no mask: each worker
    finds its planes' argmax in a scratch of at most MASK_CHUNK_ITEMS items (or one plane's),
    reused chunk after chunk (here chunks of 2 or 3 planes, or of 1 plane of 12 x 12, over 35
    planes: chunks that do not divide a worker's share). The outputs are those of the layer
    with a backward, bit for bit (ties, NaN in a window's first place, and a NaN passed over)."""
    from netlayers import parallel
    from netlayers.layers import pooling

    thread_count(workers)
    monkeypatch.setattr(pooling, "MASK_CHUNK_ITEMS", 3 * 36 + 5)
    monkeypatch.setattr(parallel, "SPLIT_MIN_BYTES", 1)  # share out the tiny batch as a large one
    x = np.round(rng.standard_normal((5, 7, 12, 12)), 1)  # rounding to 0.1: many ties
    x[0, 0, 0, 0] = x[3, 2, 5, 7] = np.nan
    spec = {"type": "Pooling", "pooling_param": {"kernel_size": kernel, "stride": stride, "pad": pad}}
    layer, bottom, top = make_layer(spec, [x])
    layer.forward(bottom, top)
    expected = top[0].data.copy()
    assert layer.windows.mask is not None and not layer.windows.shared_mask
    layer.drop_backward_state()
    parallel.release_scratch()
    top[0].data[...] = 0
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data, expected)
    assert layer.windows.mask is None
    masks = [buffer for (_, name, _), buffer in parallel._scratch.items() if name == "max_pool_mask"]
    largest = max(pooling.MASK_CHUNK_ITEMS, expected[0, 0].size)
    assert len(masks) == workers and all(mask.size <= largest for mask in masks)


def test_pooling_contract(rng):
    for pool in ("MAX", "AVE"):
        assert_contract(
            {"type": "Pooling", "pooling_param": {"pool": pool, "kernel_size": 3, "stride": 2, "pad": 1}},
            [distinct(rng, (2, 3, 7, 7))],
        )


@pytest.mark.parametrize(
    "param,message",
    [
        ({"kernel_size": 3, "pool": "STOCHASTIC"}, "not supported"),
        ({"stride": 2}, "kernel_size"),
        ({"kernel_size": 2, "pad": 2}, "smaller than the kernel"),
        ({"kernel_size": 9}, "larger than the padded input"),
        ({"global_pooling": True, "kernel_size": 2}, "global_pooling"),
        ({"kernel_size": 1, "stride": 3}, "outside the input"),
        ({"kernel_size": 2, "pool": "AVE"}, "mask"),
    ],
)
def test_pooling_setup_errors(param, message):
    spec = {"type": "Pooling", "pooling_param": param}
    if message == "mask":
        spec["top"] = ["y", "mask"]
    with pytest.raises(ConfigError, match=message) as info:
        make_layer(spec, [np.zeros((1, 2, 5, 5))])
    assert info.value.layer == "Pooling"


# -- SPP ----------------------------------------------------------------------------------------
def spp_reference(x, height, pool):
    n, c, h, w = x.shape
    parts = []
    for level in range(height):
        bins = 2**level
        kh, kw = -(-h // bins), -(-w // bins)
        ph, pw = (kh * bins - h + 1) // 2, (kw * bins - w + 1) // 2
        y, _ = reference.pooling(x, (kh, kw), (kh, kw), (ph, pw), pool)
        parts.append(y.reshape(n, -1))
    return parts[0].reshape(n, c, 1, 1) if height == 1 else np.concatenate(parts, axis=1)


@pytest.mark.parametrize("height,pool", [(1, "MAX"), (3, "MAX"), (2, "AVE")])
def test_spp_matches_pooling_levels_and_gradients(height, pool, rng):
    x = distinct(rng, (2, 3, 9, 7))
    spec = {"type": "SPP", "spp_param": {"pyramid_height": height, "pool": pool}}
    _, (y,) = run_layer(spec, [x])
    expected = spp_reference(x, height, pool)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    assert_gradients(spec, [x])
