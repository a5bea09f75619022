"""Hostile and broken data files, unreadable data folders, damaged sampler states (issue 9).

Every hostile file here is a few bytes whose header claims far more; nothing allocates the
claimed size. Each error must be one line, a DataError, naming the file.
"""

import errno
import gzip
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from netlayers.data import BatchSampler, load_source, read_idx, read_npz, resolve_source
from netlayers.errors import DataError
from netlayers.memory import memory_limit

GIB = 1024**3


@pytest.fixture
def memory(monkeypatch):
    """Set this process's memory limit (bytes) for one test; restored afterwards."""

    def set_limit(nbytes):
        monkeypatch.setenv("NETLAYERS_MEMORY_LIMIT", str(nbytes))
        memory_limit.cache_clear()

    yield set_limit
    monkeypatch.delenv("NETLAYERS_MEMORY_LIMIT", raising=False)
    memory_limit.cache_clear()


def npy_bytes(shape, descr="<f4", payload=b""):
    """A version 1.0 .npy header claiming ``shape`` of ``descr``, then ``payload``."""
    header = repr({"descr": descr, "fortran_order": False, "shape": tuple(shape)}).encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + payload


def write_npz(path, members, compression=zipfile.ZIP_STORED):
    """An .npz archive of the given raw members ({"data.npy": bytes, ...})."""
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, payload in members.items():
            archive.writestr(name, payload)
    return path


def idx_header(type_byte, dims):
    return bytes([0, 0, type_byte, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


def one_line_naming(err, path):
    text = str(err)
    assert str(path) in text and "\n" not in text
    assert err.data_file == str(path)
    return text


LABELS_4 = npy_bytes((4,), "<i8", bytes(32))


# -- item 4: claimed sizes are checked before anything is allocated --------------------------


def test_npz_header_claiming_more_than_memory_is_refused_before_allocating(tmp_path, memory):
    memory(8 * GIB)
    path = write_npz(tmp_path / "big.npz", {"data.npy": npy_bytes((10**12,), payload=bytes(16)), "label.npy": LABELS_4})
    with pytest.raises(DataError) as info:
        read_npz(path)
    text = one_line_naming(info.value, path)
    assert (
        "key 'data': the header's shape (1000000000000,) of float32 would need 3,725.3 GiB, "
        "more than this machine's memory (8 GiB)"
    ) in text


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_npz_header_claiming_more_than_its_member_holds(tmp_path, memory, compression):
    memory(8 * GIB)
    path = write_npz(
        tmp_path / "short.npz",
        {"data.npy": npy_bytes((4, 10**8), payload=bytes(16)), "label.npy": LABELS_4},
        compression,
    )
    with pytest.raises(DataError) as info:
        read_npz(path)
    assert (
        "key 'data': truncated: header says 1600000000 bytes (1.49 GiB) of data, the archive member holds 16"
    ) in one_line_naming(info.value, path)


def test_npz_member_with_bytes_after_the_data(tmp_path):
    path = write_npz(tmp_path / "long.npz", {"data.npy": npy_bytes((4, 1), payload=bytes(20)), "label.npy": LABELS_4})
    with pytest.raises(
        DataError,
        match=r"key 'data': header says 16 bytes of data, the archive "
        r"member holds 20 \(4 bytes after the data\)",
    ):
        read_npz(path)


def test_npz_label_header_is_checked_too(tmp_path, memory):
    memory(GIB)
    path = write_npz(
        tmp_path / "labels.npz",
        {"data.npy": npy_bytes((4, 1), payload=bytes(16)), "label.npy": npy_bytes((2**40,), "<i8")},
    )
    with pytest.raises(DataError, match="key 'label': the header's shape .* would need 8,192.0 GiB"):
        read_npz(path)


def test_npz_broken_npy_header_is_one_line(tmp_path):
    path = write_npz(
        tmp_path / "bad.npz", {"data.npy": b"\x93NUMPY\x01\x00\x10\x00{'descr': oops", "label.npy": LABELS_4}
    )
    with pytest.raises(DataError) as info:
        read_npz(path)
    assert "key 'data': not a valid .npy array header" in one_line_naming(info.value, path)


def test_raw_idx_claiming_73_gib_more_than_memory(tmp_path, memory):
    memory(8 * GIB)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_header(0x08, (80000, 1000, 1000)) + bytes(10))
    with pytest.raises(DataError) as info:
        read_idx(path)
    assert (
        "the header's shape (80000, 1000, 1000) of uint8 would need 74.5 GiB, more than this machine's memory (8 GiB)"
    ) in one_line_naming(info.value, path)


def test_raw_idx_claiming_more_than_the_file_holds_on_a_big_machine(tmp_path, memory):
    memory(2**50)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_header(0x08, (80000, 1000, 1000)) + bytes(10))
    with pytest.raises(DataError) as info:
        read_idx(path)
    assert "truncated: header says 80000000000 bytes (74.5 GiB) of data, found 10" in one_line_naming(info.value, path)


def test_gzip_idx_claiming_more_than_memory(tmp_path, memory):
    memory(8 * GIB)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_header(0x0D, (80000, 1000, 1000)) + bytes(64)))
    with pytest.raises(DataError) as info:
        read_idx(path)
    assert "of float32 would need 298.0 GiB" in one_line_naming(info.value, path)


def test_truncated_gzip_stream_is_one_line_naming_the_file(tmp_path):
    compressed = gzip.compress(idx_header(0x08, (10, 4, 4)) + bytes(range(160)))
    path = tmp_path / "cut-images-idx3-ubyte.gz"
    path.write_bytes(compressed[:-12])
    with pytest.raises(DataError) as info:
        read_idx(path)
    assert "corrupt gzip stream" in one_line_naming(info.value, path)


# -- item 11: every data-file error names the file -------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_idx_claiming_4294967295_cubed_items_names_the_file(tmp_path, compress):
    path = tmp_path / "huge-images-idx3-ubyte"
    payload = idx_header(0x08, (2**32 - 1,) * 3) + bytes(10)
    path.write_bytes(gzip.compress(payload) if compress else payload)
    with pytest.raises(DataError) as info:
        read_idx(path)
    assert "the header's shape (4294967295, 4294967295, 4294967295) of uint8 would need" in one_line_naming(
        info.value, path
    )


def test_npz_that_cannot_be_read_says_why(tmp_path, monkeypatch):
    path = write_npz(tmp_path / "x.npz", {"data.npy": npy_bytes((4, 1), payload=bytes(16))})

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(np, "load", refuse)
    with pytest.raises(DataError) as info:
        read_npz(path)
    assert "cannot read NPZ file: Permission denied" in one_line_naming(info.value, path)


# -- item 9: no data set without items ------------------------------------------------------


@pytest.mark.parametrize(
    "data,label",
    [
        (np.zeros((0, 3), np.float32), np.zeros(0, np.int64)),  # no items
        (np.zeros((5, 0), np.float32), np.zeros(5, np.int64)),  # empty items
    ],
)
def test_npz_without_data_is_refused(tmp_path, data, label):
    path = tmp_path / "empty.npz"
    np.savez(path, data=data, label=label)
    with pytest.raises(DataError) as info:
        read_npz(path)
    assert f"key 'data': holds no data (shape {data.shape})" in one_line_naming(info.value, path)


def test_npz_without_labels_for_its_items(tmp_path):
    path = tmp_path / "nolabels.npz"
    np.savez(path, data=np.zeros((5, 3), np.float32), label=np.zeros(0, np.int64))
    with pytest.raises(DataError, match="key 'data' has 5 items but key 'label' has 0"):
        read_npz(path)


def write_idx_pair(folder, images_dims, labels_count):
    folder.mkdir(parents=True, exist_ok=True)
    count = int(np.prod(images_dims))
    (folder / "train-images-idx3-ubyte").write_bytes(idx_header(0x08, images_dims) + bytes(count))
    (folder / "train-labels-idx1-ubyte").write_bytes(idx_header(0x08, (labels_count,)) + bytes(labels_count))
    return resolve_source(folder / "train", "IDX")


@pytest.mark.parametrize("dims", [(0, 28, 28), (3, 0, 28)])
def test_idx_data_set_without_data_is_refused(tmp_path, dims):
    source = write_idx_pair(tmp_path / "set", dims, dims[0])
    with pytest.raises(DataError) as info:
        load_source(source)
    assert f"holds no data (shape {dims})" in one_line_naming(info.value, source.images_path)


def test_idx_data_set_without_labels_is_refused(tmp_path):
    source = write_idx_pair(tmp_path / "set", (3, 2, 2), 0)
    with pytest.raises(DataError, match="3 images but 0 labels"):
        load_source(source)


# -- item 6: data folders that cannot be looked in -------------------------------------------


def deny_under(monkeypatch, folder):
    """Make Path.is_file raise PermissionError for every path below ``folder`` (as a folder
    without search permission does; root ignores real permissions)."""
    real = Path.is_file

    def is_file(path):
        if Path(folder) in path.parents:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(Path, "is_file", is_file)


@pytest.mark.parametrize("backend,source", [("IDX", "mnist/train"), ("NPZ", "mnist.npz")])
def test_unreadable_data_root_is_named_in_the_not_found_message(tmp_path, monkeypatch, backend, source):
    locked = tmp_path / "locked"
    deny_under(monkeypatch, locked)
    monkeypatch.setenv("NETLAYERS_DATA_ROOT", str(locked))
    with pytest.raises(DataError) as info:
        resolve_source(source, backend, base_dir=tmp_path / "config")
    text = str(info.value)
    assert f"data source '{source}' not found" in text and "\n" not in text
    assert f"could not look in: {locked / Path(source).parent}: permission denied" in text


def test_unreadable_data_root_is_skipped_for_a_later_one(tmp_path, monkeypatch):
    locked, good = tmp_path / "locked", tmp_path / "good"
    write_idx_pair(good / "mnist", (3, 2, 2), 3)
    deny_under(monkeypatch, locked)
    source = resolve_source("mnist/train", "IDX", data_root=f"{locked}:{good}", base_dir=tmp_path / "config")
    assert source.images_path == good / "mnist" / "train-images-idx3-ubyte"


def test_unreadable_labels_file_next_to_a_named_images_file(tmp_path, monkeypatch):
    source = write_idx_pair(tmp_path / "set", (3, 2, 2), 3)
    real = Path.is_file

    def is_file(path):
        if "labels" in path.name:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(Path, "is_file", is_file)
    with pytest.raises(
        DataError,
        match=r"labels file not found, expected .*train-labels-idx1-ubyte "
        r"\(cannot look in .*: permission denied\)",
    ):
        resolve_source(source.images_path, "IDX")


def test_a_source_name_too_long_for_the_system_is_a_data_error(tmp_path):
    source = "x" * 300 + "/train"
    with pytest.raises(DataError) as info:
        resolve_source(source, "IDX", base_dir=tmp_path)
    assert "file name too long" in str(info.value) and "\n" not in str(info.value)


# -- item 5: a sampler state must fit the data set ------------------------------------------


@pytest.mark.parametrize(
    "state,message",
    [
        ({"epoch": 0, "position": 5}, "data position 5 is past the 5 items"),
        ({"epoch": "1", "position": 0}, "data epoch '1' is not an integer >= 0"),
        ({"epoch": 0, "position": 2.5}, "data position 2.5 is not an integer >= 0"),
        ({"epoch": 0, "position": True}, "data position True is not an integer >= 0"),
        ({"epoch": -1, "position": 0}, "data epoch -1 is not an integer >= 0"),
        ({"epoch": 0}, "is not of the form"),
        ([0, 0], "is not of the form"),
    ],
)
def test_sampler_refuses_states_that_do_not_fit(state, message):
    sampler = BatchSampler(5, 2, shuffle=True, seed=1)
    sampler.next()
    with pytest.raises(ValueError, match=message):
        sampler.set_state(state)
    assert sampler.state() == {"epoch": 0, "position": 2}  # unchanged
