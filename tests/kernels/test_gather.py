"""The row gathers' gradient kernel: the same bits as numpy's np.add.at, repeats summed in order."""

import numpy as np
import pytest

from netlayers.kernels import gather


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_add_rows_matches_numpy_add_at_bit_for_bit(dtype):
    rng = np.random.default_rng(3)
    start = rng.standard_normal((7, 5)).astype(dtype)
    index = rng.integers(0, 7, 40).astype(np.intp)  # 40 picks of 7 rows: many repeats
    rows = rng.standard_normal((40, 5)).astype(dtype)
    expected = start.copy()
    np.add.at(expected, index, rows)
    got = start.copy()
    gather.add_rows(got, index, rows)
    np.testing.assert_array_equal(got, expected)


def test_add_rows_leaves_unpicked_rows_and_takes_no_rows():
    target = np.arange(6, dtype=np.float32).reshape(3, 2)
    gather.add_rows(target, np.array([2, 2], np.intp), np.ones((2, 2), np.float32))
    np.testing.assert_array_equal(target, [[0, 1], [2, 3], [6, 7]])
    gather.add_rows(target, np.empty(0, np.intp), np.empty((0, 2), np.float32))
    np.testing.assert_array_equal(target, [[0, 1], [2, 3], [6, 7]])
