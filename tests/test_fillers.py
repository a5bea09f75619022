import numpy as np
import pytest

from netlayers import ConfigError
from netlayers.fillers import fill
from netlayers.netspec import FILLER
from netlayers.netspec.schema import Where, check_message


def filler(**fields):
    return check_message(fields, FILLER.fields, Where())


def filled(shape, seed=0, **fields):
    return fill(np.empty(shape), filler(**fields), np.random.default_rng(seed))


def test_default_filler_is_constant_zero():
    assert not filled((3, 4)).any()


def test_constant():
    assert np.all(filled((2, 2), type="constant", value=0.5) == 0.5)


def test_uniform_range():
    x = filled((1000,), type="uniform", min=-2, max=3)
    assert x.min() >= -2 and x.max() <= 3 and abs(x.mean() - 0.5) < 0.2


def test_gaussian_moments():
    x = filled((200, 100), type="gaussian", mean=1.0, std=0.1)
    assert abs(x.mean() - 1.0) < 0.01 and abs(x.std() - 0.1) < 0.01


def test_sparse_gaussian_keeps_about_sparse_over_outputs():
    x = filled((50, 400), type="gaussian", std=1.0, sparse=10)
    assert abs((x != 0).mean() - 10 / 50) < 0.02


@pytest.mark.parametrize("norm,n", [("FAN_IN", 4 * 9), ("FAN_OUT", 8 * 9), ("AVERAGE", (36 + 72) / 2)])
def test_xavier_bound_follows_variance_norm(norm, n):
    x = filled((8, 4, 3, 3), type="xavier", variance_norm=norm)
    bound = np.sqrt(3.0 / n)
    assert np.abs(x).max() <= bound and np.abs(x).max() > 0.9 * bound


def test_msra_std():
    x = filled((400, 50), type="msra")
    assert abs(x.std() - np.sqrt(2.0 / 50)) < 0.01


def test_positive_unitball_rows_sum_to_one():
    x = filled((5, 2, 3), type="positive_unitball")
    assert np.all(x >= 0)
    np.testing.assert_allclose(x.reshape(5, -1).sum(axis=1), 1.0)


def test_bilinear_kernel_of_size_4():
    x = filled((1, 1, 4, 4), type="bilinear")
    ramp = np.array([0.25, 0.75, 0.75, 0.25])
    np.testing.assert_allclose(x[0, 0], np.outer(ramp, ramp))


def test_same_seed_same_values_and_unknown_type_is_an_error():
    a = filled((10,), seed=3, type="gaussian")
    b = filled((10,), seed=3, type="gaussian")
    assert np.array_equal(a, b)
    with pytest.raises(
        ConfigError,
        match="field 'type': expected one of constant .*got 'gausian' "
        r"\(did you mean 'gaussian'\?\)",
    ):
        filled((2,), type="gausian")


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"type": "gaussian", "std": -1}, "field 'std': expected a number >= 0, got -1"),
        (
            {"type": "uniform", "min": 1, "max": 0},
            "field 'min': the uniform filler's min must not exceed max, got min 1 > max 0",
        ),
        (
            {"type": "uniform", "min": -1e308, "max": 1e308},
            "field 'max': the uniform filler's range max - min is too wide",
        ),
        ({"type": "gaussian", "sparse": -2}, r"field 'sparse': expected an integer >= -1, got -2"),
    ],
)
def test_impossible_filler_values_name_the_field(fields, message):
    with pytest.raises(ConfigError, match=message):
        filled((3, 4), **fields)


def test_zero_std_and_equal_bounds_are_allowed():
    assert np.all(filled((3,), type="gaussian", mean=2, std=0) == 2)
    assert np.all(filled((3,), type="uniform", min=1, max=1) == 1)


@pytest.mark.parametrize("shape", [(0, 3), (4, 0), (0,)])
@pytest.mark.parametrize(
    "fields",
    [
        {"type": "xavier"},
        {"type": "msra", "variance_norm": "AVERAGE"},
        {"type": "gaussian", "sparse": 2},
        {"type": "positive_unitball"},
    ],
)
def test_an_empty_blob_has_nothing_to_fill(shape, fields):
    assert filled(shape, **fields).shape == shape


def test_a_bad_filler_in_a_net_is_located_at_its_layer(tmp_path):
    from netlayers import Net

    config = tmp_path / "net.yaml"
    config.write_text(
        "layers:\n"
        "  - {name: x, type: Input, top: x, input_param: {shape: {dim: [2, 3]}}}\n"
        "  - name: ip\n"
        "    type: InnerProduct\n"
        "    bottom: x\n"
        "    top: y\n"
        "    inner_product_param:\n"
        "      num_output: 4\n"
        "      weight_filler: {type: gaussian, std: -1}\n"
    )
    with pytest.raises(ConfigError) as info:
        Net(config)
    assert str(info.value) == (
        f"{config}:9: layer 'ip': field 'inner_product_param.weight_filler.std': expected a number >= 0, got -1"
    )


PIECE_CASES = [
    {"type": "uniform", "min": -2, "max": 3},
    {"type": "uniform_int", "min": 0, "max": 9},
    {"type": "gaussian", "mean": 1.0, "std": 0.5},
    {"type": "gaussian", "std": 1.0, "sparse": 3},
    {"type": "xavier", "variance_norm": "AVERAGE"},
    {"type": "msra"},
    {"type": "positive_unitball"},
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fields", PIECE_CASES)
def test_a_blob_filled_in_pieces_gets_the_numbers_of_one_draw(fields, dtype, monkeypatch):
    """A contiguous blob is filled in pieces (here of 37 values, or whole slices of 60 for
    positive_unitball: pieces that do not divide the blob), with the numbers of one whole draw
    cast at once (the filler on an array it cannot fill in pieces, a transposed view), to the bit;
    -0.0 where a sparse gaussian zeroes a negative value, as the whole draw's product gives."""
    from netlayers import fillers

    shape = (7, 3, 4, 5)
    monkeypatch.setattr(fillers, "PIECE", 37)
    pieces = fill(np.empty(shape, dtype), filler(**fields), np.random.default_rng(11))
    whole = np.empty(shape[::-1], dtype).T  # not contiguous: one draw
    fill(whole, filler(**fields), np.random.default_rng(11))
    assert np.array_equal(pieces, whole) and np.array_equal(np.signbit(pieces), np.signbit(whole))
    assert len(np.unique(pieces)) >= 10


def test_a_large_float32_blob_is_filled_without_a_float64_twin():
    """Filling 4 M float32 values (16 MB) allocates pieces of at most PIECE float64 values,
    not a 32 MB float64 array of the blob's size (tracemalloc sees numpy's allocations)."""
    import tracemalloc

    from netlayers import fillers

    array = np.empty((1024, 4096), np.float32)
    for fields in (
        {"type": "gaussian", "std": 0.1, "sparse": 100},
        {"type": "xavier"},
        {"type": "constant", "value": 2},
    ):
        tracemalloc.start()
        fill(array, filler(**fields), np.random.default_rng(0))
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < 3 * 8 * fillers.PIECE, (fields, peak)
