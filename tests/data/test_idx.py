"""Tests of the IDX reader: real Fashion-MNIST files, files written here, broken files."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from netlayers.data import read_idx
from netlayers.errors import DataError

FASHION = Path("/usr/share/datasets/fashion-mnist")
TYPE_BYTES = {
    np.uint8: 0x08,
    np.int8: 0x09,
    np.int16: 0x0B,
    np.int32: 0x0C,
    np.float32: 0x0D,
    np.float64: 0x0E,
}


def idx_bytes(array, type_byte=None):
    """Encode ``array`` as IDX bytes, written here independently of the reader."""
    array = np.asarray(array)
    type_byte = TYPE_BYTES[array.dtype.type] if type_byte is None else type_byte
    header = bytes([0, 0, type_byte, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write(path, payload, compress=False):
    """Write ``payload`` to ``path``, gzip-compressed if asked; return the path."""
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def test_reads_real_fashion_mnist_test_split():
    images = read_idx(FASHION / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(FASHION / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    assert labels.min() == 0 and labels.max() == 9
    assert np.bincount(labels).tolist() == [1000] * 10  # Fashion-MNIST's test set is balanced
    assert images.flags.writeable


@pytest.mark.parametrize("dtype", list(TYPE_BYTES))
@pytest.mark.parametrize("compress", [False, True])
def test_round_trip_every_type(tmp_path, dtype, compress):
    rng = np.random.default_rng(0)
    array = (rng.standard_normal((3, 4, 5)) * 100).astype(dtype)
    path = write(tmp_path / "x.idx", idx_bytes(array), compress)
    result = read_idx(path)
    assert result.dtype == np.dtype(dtype) and result.dtype.isnative
    assert result.shape == (3, 4, 5)
    np.testing.assert_array_equal(result, array)


def test_gzip_detected_by_content_not_name(tmp_path):
    labels = np.arange(10, dtype=np.uint8)
    gz_without_suffix = write(tmp_path / "labels-idx1-ubyte", idx_bytes(labels), compress=True)
    raw_with_gz_suffix = write(tmp_path / "labels-idx1-ubyte.gz", idx_bytes(labels))
    np.testing.assert_array_equal(read_idx(gz_without_suffix), labels)
    np.testing.assert_array_equal(read_idx(raw_with_gz_suffix), labels)


@pytest.mark.parametrize("compress", [False, True])
def test_truncated_data_names_file_and_sizes(tmp_path, compress):
    payload = idx_bytes(np.zeros((10, 4, 4), np.uint8))[:-60]
    path = write(tmp_path / "short-images-idx3-ubyte", payload, compress)
    with pytest.raises(DataError) as info:
        read_idx(path)
    text = str(info.value)
    assert str(path) in text
    assert "truncated: header says 160 bytes of data, found 100" in text
    assert "\n" not in text


def test_truncated_header(tmp_path):
    path = write(tmp_path / "h.idx", bytes([0, 0, 8, 3]) + struct.pack(">I", 5))
    with pytest.raises(DataError, match="truncated: header says 3 dimensions") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_bad_magic_names_file(tmp_path):
    path = write(tmp_path / "picture.png", b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(DataError) as info:
        read_idx(path)
    text = str(info.value)
    assert str(path) in text
    assert "not an IDX file: magic bytes 0x89504e47, expected 0x0000" in text


def test_unknown_type_byte(tmp_path):
    path = write(tmp_path / "t.idx", idx_bytes(np.zeros(4, np.uint8), type_byte=0x07))
    with pytest.raises(DataError, match="unknown IDX element type 0x07"):
        read_idx(path)


def test_trailing_bytes_are_an_error(tmp_path):
    path = write(tmp_path / "t.idx", idx_bytes(np.zeros(4, np.uint8)) + b"junk")
    with pytest.raises(DataError, match=r"4 bytes after the data"):
        read_idx(path)


def test_empty_file(tmp_path):
    path = write(tmp_path / "empty.idx", b"")
    with pytest.raises(DataError, match="not an IDX file: magic bytes an empty file"):
        read_idx(path)


def test_corrupt_gzip_stream(tmp_path):
    compressed = gzip.compress(idx_bytes(np.arange(1000, dtype=np.int32)))
    path = write(tmp_path / "cut.gz", compressed[: len(compressed) // 2])
    with pytest.raises(DataError) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere-images-idx3-ubyte.gz"
    with pytest.raises(DataError, match="IDX file not found") as info:
        read_idx(path)
    assert info.value.data_file == str(path)
    assert str(info.value) == f"data file {path}: IDX file not found"


def test_a_data_error_located_by_its_config_names_both_files(tmp_path):
    path = write(tmp_path / "t10k-images-idx3-ubyte", idx_bytes(np.zeros((10, 4, 4), np.uint8))[:-60])
    with pytest.raises(DataError) as info:
        read_idx(path)
    err = info.value.located(file="net.yaml", line=3, layer="data")
    assert str(err) == (
        f"net.yaml:3: layer 'data': data file {path}: truncated: header says 160 bytes of data, found 100"
    )


def test_directory_is_not_a_file(tmp_path):
    with pytest.raises(DataError, match="cannot read IDX file"):
        read_idx(tmp_path)
