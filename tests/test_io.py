"""netlayers.io: what a wrong file given as weights or solver state says (one line naming the
file, and the key when one array is at fault), and that good archives round-trip."""

import io
import re
import zipfile

import numpy as np
import pytest

from netlayers import ConfigError, DataError, Net
from netlayers.io import load_arrays, load_weights, save_arrays


def at(path):
    """The start of a message about ``path``, as a regex."""
    return re.escape(str(path))


def net():
    return Net(
        {
            "layers": [
                {"name": "x", "type": "Input", "top": "x", "input_param": {"shape": {"dim": [2, 5]}}},
                {
                    "name": "ip",
                    "type": "InnerProduct",
                    "bottom": "x",
                    "top": "y",
                    "inner_product_param": {"num_output": 3, "bias_term": False},
                },
            ]
        },
        seed=0,
    )


def good_archive(path):
    save_arrays(path, {"ip/0": np.arange(15.0).reshape(3, 5)})
    return path.read_bytes()


def npy_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def write_zip(path, members):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_save_and_load_round_trip(tmp_path):
    path = tmp_path / "w.npz"
    good_archive(path)
    weights = load_weights(path)
    np.testing.assert_array_equal(weights["ip"][0], np.arange(15.0).reshape(3, 5))


@pytest.mark.parametrize(
    "content,message",
    [
        (b"hello\nworld\n", r"not an \.npz archive \(expected weights or a snapshot written by netlayers\)"),
        (b"", r"not an \.npz archive \(an empty file\)"),
        (npy_bytes(np.zeros(3)), r"not an \.npz archive \(expected weights or a snapshot written by netlayers\)"),
    ],
    ids=["text", "empty", "npy"],
)
def test_a_file_that_is_not_an_archive_says_so(tmp_path, content, message):
    path = tmp_path / "w.npz"
    path.write_bytes(content)
    for load in (load_arrays, load_weights, net().load):
        with pytest.raises(DataError, match=f"^{at(path)}: {message}$") as info:
            load(path)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_a_truncated_archive_says_so(tmp_path, keep):
    data = good_archive(tmp_path / "good.npz")
    path = tmp_path / "cut.npz"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(DataError, match=rf"^{at(path)}: truncated or damaged \.npz archive"):
        net().load(path)


def test_a_damaged_array_names_its_key(tmp_path):
    data = bytearray(good_archive(tmp_path / "good.npz"))
    start = data.index(b"\x93NUMPY") + 140  # inside the array data: the CRC fails
    data[start : start + 40] = b"x" * 40
    path = tmp_path / "bad.npz"
    path.write_bytes(bytes(data))
    with pytest.raises(
        DataError,
        match=rf"^{at(path)}: truncated or damaged \.npz archive: array 'ip/0' "
        "cannot be read$",
    ):
        load_weights(path)
    short = write_zip(tmp_path / "short.npz", {"ip/0.npy": npy_bytes(np.zeros(100))[:200]})
    with pytest.raises(DataError, match="array 'ip/0' cannot be read"):
        load_weights(short)


def test_a_member_that_is_not_an_array_is_named(tmp_path):
    path = write_zip(tmp_path / "w.npz", {"notes.txt": "hello"})
    with pytest.raises(DataError, match=rf"^{at(path)}: member 'notes.txt' is not a numpy array"):
        load_arrays(path)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "w.npz"
    np.savez(path, **{"ip/0": np.array([1, None], dtype=object)})
    with pytest.raises(DataError, match="array 'ip/0' holds Python objects; netlayers never unpickles"):
        load_weights(path)


def test_a_folder_is_not_a_file(tmp_path):
    with pytest.raises(DataError, match=rf"^{at(tmp_path)}: is a folder, expected an \.npz file$"):
        load_weights(tmp_path)


@pytest.mark.parametrize(
    "array,held",
    [
        (np.array([["a"] * 5] * 3), r"text \(dtype <U1\)"),
        (np.ones((3, 5), complex), r"complex numbers \(dtype complex128\)"),
    ],
)
def test_weights_that_are_not_numbers_name_file_and_key(tmp_path, array, held):
    path = tmp_path / "w.npz"
    np.savez(path, **{"ip/0": array})
    with pytest.raises(
        ConfigError,
        match=rf"^{at(path)}: array 'ip/0' holds {held}, expected numbers "
        r"\(float, int or bool\)$",
    ):
        net().load(path)


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.uint8, bool])
def test_weights_of_any_numeric_dtype_load(tmp_path, dtype):
    path = tmp_path / "w.npz"
    np.savez(path, **{"ip/0": np.ones((3, 5), dtype)})
    model = net()
    model.load(path)
    assert np.all(model.params["ip"][0].data == 1)


def test_a_solver_state_keeps_its_text_arrays(tmp_path):
    path = tmp_path / "s.npz"
    save_arrays(path, {"type": np.array("SGD"), "iter": np.array(3)})
    arrays = load_arrays(path)
    assert str(arrays["type"]) == "SGD" and int(arrays["iter"]) == 3
