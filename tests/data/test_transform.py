"""Tests of Transformer against direct numpy formulas of Caffe's DataTransformer."""

import numpy as np
import pytest

from netlayers.data import Transformer
from netlayers.errors import ConfigError, DataError


def images(n=4, c=3, h=7, w=9, seed=0):
    """A uint8 batch with distinct-enough pixel values."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, c, h, w), dtype=np.uint8)


def test_identity_converts_to_float32():
    batch = images()
    out = Transformer().transform(batch)
    assert out.dtype == np.float32 and out.shape == batch.shape
    np.testing.assert_array_equal(out, batch)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scale_and_per_channel_mean_match_formula(dtype):
    batch = images()
    mean = (104.0, 117.0, 123.0)
    t = Transformer(scale=0.017, mean_value=mean, phase="TEST")
    out = np.empty(batch.shape, dtype)
    result = t.transform(batch, None, out)
    assert result is out
    expected = (batch.astype(dtype) - np.array(mean, dtype)[None, :, None, None]) * dtype(0.017)
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_single_mean_applies_to_all_channels():
    batch = images()
    out = Transformer(scale=0.5, mean_value=[10]).transform(batch)
    np.testing.assert_allclose(out, (batch.astype(np.float32) - 10) * 0.5)


def test_mnist_scale():
    batch = images(c=1)
    out = Transformer(scale=0.00390625).transform(batch)
    np.testing.assert_array_equal(out, batch.astype(np.float32) / 256)


def test_wrong_mean_count_is_an_error():
    t = Transformer(mean_value=[1, 2])
    expected = r"one mean_value or one per channel \(3\), found 2"
    with pytest.raises(DataError, match=expected) as info:
        t.transform(images())
    assert info.value.field == "mean_value"


def test_centre_crop_in_test():
    batch = images(h=7, w=10)
    t = Transformer(crop_size=4, phase="TEST")
    assert t.output_shape(batch.shape) == (4, 3, 4, 4)
    out = t.transform(batch)
    # Caffe: h_off = (H - crop) // 2 = 1, w_off = (W - crop) // 2 = 3
    np.testing.assert_array_equal(out, batch[:, :, 1:5, 3:7])


def test_crop_larger_than_image():
    t = Transformer(crop_size=8, phase="TEST")
    expected = r"crop_size 8 is larger than the 7x9 images.*\(4, 3, 7, 9\)"
    with pytest.raises(DataError, match=expected):
        t.transform(images())


def expected_random_crop(batch, crop, seed, mirror=False):
    """Caffe's per-image loop, with the draws in Transformer's documented order."""
    rng = np.random.default_rng(seed)
    n, _, h, w = batch.shape
    h_off = rng.integers(0, h - crop + 1, size=n) if crop else np.zeros(n, int)
    w_off = rng.integers(0, w - crop + 1, size=n) if crop else np.zeros(n, int)
    flips = rng.integers(0, 2, size=n).astype(bool) if mirror else np.zeros(n, bool)
    ch, cw = (crop, crop) if crop else (h, w)
    result = []
    for i in range(n):
        window = batch[i, :, h_off[i] : h_off[i] + ch, w_off[i] : w_off[i] + cw]
        result.append(window[:, :, ::-1] if flips[i] else window)
    return np.stack(result).astype(np.float32), h_off, w_off, flips


def test_random_crop_deterministic_for_rng():
    batch = images(n=50)
    t = Transformer(crop_size=5)
    first = t.transform(batch, np.random.default_rng(7))
    again = t.transform(batch, np.random.default_rng(7))
    other = t.transform(batch, np.random.default_rng(8))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    expected, h_off, w_off, _ = expected_random_crop(batch, 5, seed=7)
    np.testing.assert_array_equal(first, expected)
    # offsets cover 0 .. H - crop inclusive, as Caffe's Rand(H - crop + 1)
    assert set(h_off) == {0, 1, 2} and set(w_off) == {0, 1, 2, 3, 4}


def test_mirror_in_train_flips_some_images():
    batch = images(n=40)
    out = Transformer(mirror=True).transform(batch, np.random.default_rng(3))
    expected, _, _, flips = expected_random_crop(batch, 0, seed=3, mirror=True)
    np.testing.assert_array_equal(out, expected)
    assert 0 < flips.sum() < len(flips)
    flipped = flips.nonzero()[0][0]
    np.testing.assert_array_equal(out[flipped], batch[flipped, :, :, ::-1])


def test_crop_mirror_mean_scale_together():
    batch = images(n=20)
    t = Transformer(scale=0.1, mean_value=[1, 2, 3], mirror=True, crop_size=6)
    out = np.empty((20, 3, 6, 6), np.float64)
    t.transform(batch, np.random.default_rng(11), out)
    cropped, *_ = expected_random_crop(batch, 6, seed=11, mirror=True)
    expected = (cropped.astype(np.float64) - np.array([1, 2, 3.0])[None, :, None, None]) * 0.1
    np.testing.assert_allclose(out, expected, rtol=1e-12)


def test_mirror_flips_in_test_too_as_caffe_does():
    batch = images()
    out = Transformer(mirror=True, phase="TEST").transform(batch, np.random.default_rng(0))
    flipped = [np.array_equal(o, b[..., ::-1]) and not np.array_equal(o, b) for o, b in zip(out, batch)]
    kept = [np.array_equal(o, b) for o, b in zip(out, batch)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped)


def test_train_randomness_needs_rng():
    with pytest.raises(ValueError, match="needs an rng"):
        Transformer(crop_size=3).transform(images())


def test_flat_inputs_scale_and_mean():
    batch = np.arange(12, dtype=np.uint8).reshape(3, 4)
    t = Transformer(scale=2.0, mean_value=1.5)
    assert t.output_shape(batch.shape) == (3, 4)
    np.testing.assert_allclose(t.transform(batch), (batch - 1.5) * 2.0)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"crop_size": 2}, "crop_size"),
        ({"mirror": True}, "mirror"),
        ({"mean_value": [1, 2]}, "mean_value"),
    ],
)
def test_flat_inputs_refuse_spatial_settings(kwargs, field):
    with pytest.raises(DataError) as info:
        Transformer(**kwargs).transform(np.zeros((3, 4)), np.random.default_rng(0))
    assert info.value.field == field


def test_out_must_fit():
    t = Transformer(crop_size=4, phase="TEST")
    with pytest.raises(ValueError, match="expected \\(4, 3, 4, 4\\)"):
        t.transform(images(), out=np.empty((4, 3, 7, 9), np.float32))
    with pytest.raises(ValueError, match="float32 or float64"):
        t.transform(images(), out=np.empty((4, 3, 4, 4), np.int32))


def test_bad_parameters():
    with pytest.raises(ConfigError, match="crop_size must be >= 0"):
        Transformer(crop_size=-1)
    with pytest.raises(ConfigError, match="phase must be TRAIN or TEST"):
        Transformer(phase="VAL")


def test_three_dim_input_is_refused():
    with pytest.raises(DataError, match="expected inputs of shape"):
        Transformer().output_shape((2, 3, 4))


def test_float_input_random_crop():
    batch = np.random.default_rng(1).standard_normal((6, 2, 5, 5))
    out = Transformer(crop_size=3, mirror=True).transform(batch, np.random.default_rng(4))
    expected, *_ = expected_random_crop(batch, 3, seed=4, mirror=True)
    np.testing.assert_array_equal(out, expected)


def numpy_steps(t, batch, out):
    """The separate numpy steps of Transformer (cast, subtract the mean, scale)."""
    np.copyto(out, batch, casting="unsafe")
    t._normalize(out)
    return out


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.float32, np.float64])
@pytest.mark.parametrize("out_dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"scale": 0.00390625},
        {"mean_value": [0.5]},
        {"scale": 1 / 3},
        {"scale": 0.017, "mean_value": [104, 117, 123]},
    ],
)
def test_one_pass_conversion_is_bit_identical_to_the_numpy_steps(dtype, out_dtype, settings):
    rng = np.random.default_rng(0)
    raw = rng.random((4, 3, 5, 6)) * 255
    batch = raw.astype(dtype)
    t = Transformer(**settings)
    got = t.transform(batch, None, np.empty(batch.shape, out_dtype))
    want = numpy_steps(t, batch, np.empty(batch.shape, out_dtype))
    np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))
    if len(settings.get("mean_value", [])) != 3:
        flat = batch.reshape(4, -1)
        got = t.transform(flat, None, np.empty(flat.shape, out_dtype))
        want = numpy_steps(t, flat, np.empty(flat.shape, out_dtype))
        np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))


def test_non_contiguous_out_takes_the_numpy_steps():
    batch = np.arange(2 * 1 * 3 * 4, dtype=np.uint8).reshape(2, 1, 3, 4)
    out = np.zeros((2, 1, 3, 8), np.float32)[..., ::2]
    Transformer(scale=0.5).transform(batch, None, out)
    np.testing.assert_array_equal(out, batch * np.float32(0.5))


def test_is_random():
    assert not Transformer(scale=2).is_random
    assert not Transformer(crop_size=3, phase="TEST").is_random
    assert Transformer(crop_size=3).is_random and Transformer(mirror=True, phase="TEST").is_random
