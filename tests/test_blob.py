import numpy as np
import pytest

from netlayers import Blob, parallel
from netlayers.blob import ShapeError


def test_new_blob_has_data_and_diff_of_one_shape():
    blob = Blob((2, 3))
    assert blob.data.shape == blob.diff.shape == (2, 3)
    assert blob.dtype == np.float32 and blob.count == 6 and blob.num_axes == 2


def test_float64_blob():
    assert Blob((4,), np.float64).data.dtype == np.float64


def test_reshape_reuses_memory_when_it_fits():
    blob = Blob((4, 5))
    buffer = blob.data.base if blob.data.base is not None else blob.data
    blob.data[...] = 7
    blob.reshape((2, 5))
    assert blob.shape == (2, 5)
    assert np.shares_memory(blob.data, buffer)
    assert np.all(blob.data == 7)


def test_reshape_grows_when_needed_and_accepts_varargs():
    blob = Blob((2,))
    blob.reshape(3, 4)
    assert blob.shape == (3, 4) and blob.count == 12 and blob.diff.shape == (3, 4)


def test_scalar_blob_counts_one():
    assert Blob(()).count == 1


def test_zero_diff():
    blob = Blob((3,))
    blob.diff[...] = 5
    blob.zero_diff()
    assert not blob.diff.any()


def test_zero_diff_then_add_to_diff_computes_straight_into_the_diff():
    parallel.release_scratch()
    blob = Blob((3,))
    blob.diff[...] = 5
    blob.zero_diff()
    seen = []

    def compute(out):
        seen.append(out)
        out[...] = [1, 2, 3]

    blob.add_to_diff(compute)
    assert seen[0] is blob._diff  # no scratch, no addition pass
    assert parallel.scratch_bytes() == 0  # none made either
    assert blob.diff.tolist() == [1, 2, 3]


def test_add_to_diff_accumulates_when_the_diff_is_not_due_for_zeroing():
    blob = Blob((3,))
    blob.diff[...] = 10
    blob.add_to_diff(lambda out: np.copyto(out, [1, 2, 3]))
    blob.add_to_diff(lambda out: np.copyto(out, [1, 1, 1]))
    assert blob.diff.tolist() == [12, 13, 14]


def test_blobs_of_other_shapes_accumulate_through_one_shared_scratch():
    parallel.release_scratch()
    big, small = Blob((4, 5)), Blob((2, 3))
    big.diff[...] = 1
    small.diff[...] = 2
    big.add_to_diff(lambda out: np.copyto(out, np.arange(20).reshape(4, 5)))
    held = parallel.scratch_bytes()
    small.add_to_diff(lambda out: np.copyto(out, np.arange(6).reshape(2, 3)))
    big.add_to_diff(lambda out: np.copyto(out, np.ones((4, 5))))
    assert parallel.scratch_bytes() == held == 20 * 4  # one buffer, of the larger gradient
    assert big.diff.tolist() == (np.arange(20).reshape(4, 5) + 2).tolist()
    assert small.diff.tolist() == (np.arange(6).reshape(2, 3) + 2).tolist()


def test_due_zeros_survive_a_reshape_and_are_undone_by_assigning_a_diff():
    blob = Blob((2, 3))
    blob.diff[...] = 4
    blob.zero_diff()
    blob.reshape(3, 2)
    assert blob.diff.shape == (3, 2) and not blob.diff.any()
    blob.zero_diff()
    blob.diff = np.ones((3, 2), np.float32)
    assert np.all(blob.diff == 1)


def test_negative_dimension_is_rejected():
    with pytest.raises(ValueError, match="negative"):
        Blob((2, -1))


def test_canonical_axis_and_count_range():
    blob = Blob((2, 3, 4, 5))
    assert blob.canonical_axis(-1) == 3
    assert blob.count_range(1) == 60 and blob.count_range(1, 3) == 12
    with pytest.raises(ValueError):
        blob.canonical_axis(4)


def test_share_data_sees_writes():
    a, b = Blob((2, 2)), Blob(())
    b.share_data(a)
    a.data[0, 0] = 3
    assert b.data[0, 0] == 3 and b.shape == (2, 2)


def test_reshape_takes_a_numpy_array_or_list_as_the_shape():
    blob = Blob((2, 3))
    assert blob.reshape(np.array([2, 3])).shape == (2, 3)
    assert blob.reshape(np.array([2, 3, 1])).shape == (2, 3, 1)
    assert blob.reshape([6]).shape == (6,)


def test_caffes_legacy_num_channels_height_width():
    blob = Blob((2, 3, 4, 5))
    assert (blob.num, blob.channels, blob.height, blob.width) == (2, 3, 4, 5)
    flat = Blob((7, 6))
    assert (flat.num, flat.channels, flat.height, flat.width) == (7, 6, 1, 1)
    with pytest.raises(ValueError, match="at most 4"):
        _ = Blob((1, 1, 1, 1, 1)).num


def test_use_diff_memory_keeps_the_diff_in_the_given_buffer_until_it_must_grow():
    buffer = np.zeros(12, np.float32)
    a, b = Blob((2, 3), np.float32), Blob((3, 4), np.float32)
    a.use_diff_memory(buffer)
    b.use_diff_memory(buffer)
    a.diff[...] = 1
    assert b.diff.reshape(-1)[:6].sum() == 6  # one memory
    a.reshape((2, 2))
    assert np.shares_memory(a.diff, buffer)
    a.reshape((4, 4))  # larger than the shared buffer: its own diff again
    assert not np.shares_memory(a.diff, buffer) and a.diff.shape == (4, 4)
    b.reshape((2, 7))  # its data buffer holds 14 items but the shared diff only 12
    assert b.diff.shape == (2, 7) and not np.shares_memory(b.diff, buffer)


def test_use_diff_memory_refuses_a_buffer_too_small_or_of_another_dtype():
    blob = Blob((2, 3), np.float32, name="x")
    with pytest.raises(ShapeError, match="blob 'x'"):
        blob.use_diff_memory(np.zeros(5, np.float32))
    with pytest.raises(ShapeError):
        blob.use_diff_memory(np.zeros(6, np.float64))


def test_view_sees_another_blobs_data_and_diff_in_another_shape():
    source = Blob((2, 6))
    source.data[...] = np.arange(12).reshape(2, 6)
    view = Blob(())
    view.view(source, (2, 3, 2))
    assert view.shape == (2, 3, 2) and view.count == 12
    view.diff[1, 2, 1] = 5.0
    assert source.diff[1, 5] == 5.0
    source.data[0, 0] = -1.0
    assert view.data[0, 0, 0] == -1.0
    data_only = Blob((2, 3, 2))
    data_only.view(source, (2, 3, 2), diff=False)
    assert np.shares_memory(data_only.data, source.data) and not np.shares_memory(data_only.diff, source.diff)
