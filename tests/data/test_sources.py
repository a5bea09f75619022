"""Tests of data-set lookup and loading (IDX and NPZ), and of `netlayers data fashion-mnist`."""

import gzip
import hashlib
import io
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from netlayers.data import Source, data_roots, load_source, read_npz, resolve_source
from netlayers.errors import ConfigError, DataError

FASHION_ROOT = Path("/usr/share/datasets")


@pytest.fixture(autouse=True)
def no_env_root(monkeypatch):
    """Tests start without $NETLAYERS_DATA_ROOT, whatever the caller's environment holds."""
    monkeypatch.delenv("NETLAYERS_DATA_ROOT", raising=False)


@pytest.fixture(scope="module")
def fashion_train():
    """The Fashion-MNIST training split, loaded once for the module (about a second)."""
    return load_source(resolve_source("fashion-mnist/train", "IDX"))


def idx_bytes(array):
    """Encode a uint8 array as IDX (independently of the reader)."""
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def make_idx_set(folder, prefix, n=6, n_labels=None, compress=True):
    """Write ``<prefix>-images-idx3-ubyte[.gz]`` and labels into ``folder``; return arrays."""
    folder.mkdir(parents=True, exist_ok=True)
    images = np.arange(n * 4 * 3, dtype=np.uint8).reshape(n, 4, 3)
    labels = np.arange(n if n_labels is None else n_labels, dtype=np.uint8) % 10
    suffix = ".gz" if compress else ""
    for tag, array in (("images-idx3", images), ("labels-idx1", labels)):
        payload = idx_bytes(array)
        (folder / f"{prefix}-{tag}-ubyte{suffix}").write_bytes(gzip.compress(payload) if compress else payload)
    return images, labels


# -- real Fashion-MNIST ----------------------------------------------------------------------


def test_fashion_mnist_train_shapes_and_labels(fashion_train):
    images, labels = fashion_train
    assert images.shape == (60000, 1, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (60000,) and labels.dtype == np.int64
    assert labels.min() == 0 and labels.max() == 9
    assert np.bincount(labels).tolist() == [6000] * 10


@pytest.mark.parametrize("split", ["test", "t10k"])
def test_fashion_mnist_test_split(split):
    source = resolve_source(f"fashion-mnist/{split}", "idx")
    assert source.images_path == FASHION_ROOT / "fashion-mnist/t10k-images-idx3-ubyte.gz"
    assert source.labels_path == FASHION_ROOT / "fashion-mnist/t10k-labels-idx1-ubyte.gz"
    images, labels = load_source(source)
    assert images.shape == (10000, 1, 28, 28) and labels.shape == (10000,)
    assert set(np.unique(labels)) == set(range(10))


def test_source_naming_the_images_file_directly():
    path = FASHION_ROOT / "fashion-mnist/t10k-images-idx3-ubyte.gz"
    source = resolve_source(str(path), "IDX")
    assert source == Source("IDX", path, path.with_name("t10k-labels-idx1-ubyte.gz"))


# -- search order ----------------------------------------------------------------------------


def test_data_roots_order(tmp_path, monkeypatch):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    monkeypatch.setenv("NETLAYERS_DATA_ROOT", os.pathsep.join([str(b), "", str(c)]))
    roots = data_roots(a)
    assert roots[:3] == [a, b, c]
    assert roots[3:] == [Path("~/.cache/netlayers/datasets").expanduser(), FASHION_ROOT]
    assert data_roots() == [b, c] + roots[3:]


def test_data_roots_without_duplicates(tmp_path, monkeypatch):
    monkeypatch.setenv("NETLAYERS_DATA_ROOT", str(tmp_path))
    assert data_roots(tmp_path).count(tmp_path) == 1


def test_base_dir_comes_before_data_roots(tmp_path):
    config_dir, root = tmp_path / "configs", tmp_path / "root"
    make_idx_set(config_dir / "toy", "train")
    make_idx_set(root / "toy", "train")
    source = resolve_source("toy/train", "IDX", data_root=root, base_dir=config_dir)
    assert source.images_path == config_dir / "toy/train-images-idx3-ubyte.gz"
    source = resolve_source("toy/train", "IDX", data_root=root, base_dir=tmp_path)
    assert source.images_path == root / "toy/train-images-idx3-ubyte.gz"


def test_env_var_root_and_raw_files(tmp_path, monkeypatch):
    make_idx_set(tmp_path / "toy", "t10k", compress=False)
    monkeypatch.setenv("NETLAYERS_DATA_ROOT", str(tmp_path))
    source = resolve_source("toy/test", "IDX", base_dir=tmp_path / "elsewhere")
    assert source.images_path == tmp_path / "toy/t10k-images-idx3-ubyte"
    images, labels = load_source(source)
    assert images.shape == (6, 1, 4, 3) and labels.tolist() == [0, 1, 2, 3, 4, 5]


def test_absolute_source(tmp_path):
    expected, _ = make_idx_set(tmp_path / "toy", "train")
    images, _ = load_source(resolve_source(str(tmp_path / "toy/train"), "IDX"))
    np.testing.assert_array_equal(images[:, 0], expected)


# -- not found -------------------------------------------------------------------------------


def test_missing_fashion_mnist_message(tmp_path):
    with pytest.raises(DataError) as info:
        resolve_source("fashion-mnist/validation", "IDX", data_root=tmp_path, base_dir=tmp_path)
    text = str(info.value)
    assert "\n" not in text
    assert "fashion-mnist/validation" in text
    assert str(tmp_path / "fashion-mnist") in text
    assert str(Path("~/.cache/netlayers/datasets").expanduser() / "fashion-mnist") in text
    assert "/usr/share/datasets/fashion-mnist" in text
    assert "apt-get install dataset-fashion-mnist" in text
    assert "netlayers data fashion-mnist" in text


def test_missing_other_data_set_suggests_data_root(tmp_path):
    with pytest.raises(DataError, match="--data-root DIR or set NETLAYERS_DATA_ROOT") as info:
        resolve_source("cifar/train", "IDX", data_root=tmp_path)
    assert "dataset-fashion-mnist" not in str(info.value)


def test_images_without_labels_are_reported(tmp_path):
    make_idx_set(tmp_path / "toy", "train")
    (tmp_path / "toy/train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="has no labels file train-labels-idx1-ubyte"):
        resolve_source("toy/train", "IDX", data_root=tmp_path)


def test_images_file_without_labels_file(tmp_path):
    make_idx_set(tmp_path, "train")
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="labels file not found"):
        resolve_source(str(tmp_path / "train-images-idx3-ubyte.gz"), "IDX")


def test_unknown_backend():
    with pytest.raises(ConfigError, match="unknown data backend 'ROCKSDB'"):
        resolve_source("x", "ROCKSDB")


def test_count_mismatch_names_both_files(tmp_path):
    make_idx_set(tmp_path / "toy", "train", n=6, n_labels=5)
    source = resolve_source("toy/train", "IDX", data_root=tmp_path)
    with pytest.raises(DataError) as info:
        load_source(source)
    text = str(info.value)
    assert str(source.images_path) in text and str(source.labels_path) in text
    assert "6 images but 5 labels" in text


def test_a_broken_data_file_names_it_after_the_config_line_and_layer(tmp_path):
    from netlayers import Net

    make_idx_set(tmp_path / "toy", "t10k")
    images = tmp_path / "toy/t10k-images-idx3-ubyte.gz"
    images.write_bytes(gzip.decompress(images.read_bytes())[:-5])  # raw, 5 bytes short
    config = tmp_path / "net.yaml"
    config.write_text(
        "name: n\n"
        "layers:\n"
        "  - name: data\n"
        "    type: Data\n"
        "    top: [data, label]\n"
        f"    data_param: {{source: {tmp_path / 'toy/test'}, batch_size: 2}}\n"
    )
    with pytest.raises(DataError) as info:
        Net(config)
    assert str(info.value) == (
        f"{config}:3: layer 'data': data file {images}: truncated: header says 72 bytes of data, found 67"
    )


# -- NPZ -------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, loaded", [((5, 7), (5, 7)), ((5, 3, 4), (5, 1, 3, 4)), ((5, 2, 3, 4), (5, 2, 3, 4))])
def test_npz_shapes(tmp_path, shape, loaded):
    data = np.random.default_rng(0).random(shape, dtype=np.float32)
    np.savez(tmp_path / "set.npz", data=data, label=np.arange(5))
    source = resolve_source("set", "NPZ", data_root=tmp_path)
    assert source == Source("NPZ", tmp_path / "set.npz", None)
    inputs, labels = load_source(source)
    assert inputs.shape == loaded and inputs.dtype == np.float32
    np.testing.assert_array_equal(inputs.reshape(shape), data)
    assert labels.dtype == np.int64 and labels.tolist() == [0, 1, 2, 3, 4]


def test_npz_integral_float_labels(tmp_path):
    np.savez(tmp_path / "f.npz", data=np.zeros((3, 2)), label=np.array([2.0, 0.0, 1.0]))
    _, labels = read_npz(tmp_path / "f.npz")
    assert labels.dtype == np.int64 and labels.tolist() == [2, 0, 1]


ZEROS = np.zeros((3, 2))
NPZ_ERRORS = [
    ({"data": ZEROS}, "missing key 'label'"),
    ({"x": ZEROS, "label": np.zeros(3, int)}, "missing key 'data'"),
    ({"data": ZEROS, "label": np.zeros(4, int)}, "key 'data' has 3 items but key 'label' has 4"),
    (
        {"data": ZEROS, "label": np.array([1, 0.5, 2])},
        "key 'label': labels must be whole numbers, found 0.5 at index 1",
    ),
    ({"data": ZEROS, "label": np.array(["a", "b", "c"])}, "key 'label': expected integer labels"),
    ({"data": ZEROS, "label": np.zeros((3, 1), int)}, "key 'label': expected a 1-D array"),
    ({"data": np.array(["a", "b"]), "label": np.zeros(2, int)}, "key 'data': expected a numeric"),
    ({"data": np.full((2, 2), np.nan), "label": np.zeros(2, int)}, "key 'data': data contain NaN"),
]


@pytest.mark.parametrize("arrays, message", NPZ_ERRORS)
def test_npz_errors_name_file_and_key(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError) as info:
        read_npz(path)
    assert str(info.value).startswith(f"data file {path}: ")
    assert message in str(info.value)


def test_npz_refuses_pickles(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, data=np.array([{"a": 1}], dtype=object), label=np.zeros(1, int))
    with pytest.raises(
        DataError, match="key 'data': cannot be read: it holds Python objects, which are never unpickled"
    ):
        read_npz(path)


def test_npz_not_an_archive(tmp_path):
    path = tmp_path / "text.npz"
    path.write_text("hello")
    with pytest.raises(
        DataError,
        match=r"not a readable \.npz archive \(not a zip file, or a "
        r"truncated one\)$",
    ):
        read_npz(path)


def test_npz_missing(tmp_path):
    with pytest.raises(DataError, match="data source 'none.npz' not found") as info:
        resolve_source("none.npz", "NPZ", data_root=tmp_path)
    assert str(tmp_path / "none.npz") in str(info.value)
    with pytest.raises(DataError, match="NPZ file not found"):
        read_npz(tmp_path / "none.npz")


# -- netlayers data fashion-mnist (netlayers/data/download.py) -------------------------------


@pytest.fixture(scope="module")
def tool():
    """The module behind the command."""
    from netlayers.data import download

    return download


def data_command(argv):
    """``netlayers data fashion-mnist ARGV``, as a user types it."""
    from netlayers.cli.main import main

    return main(["data", "fashion-mnist", *argv])


@pytest.fixture
def no_network(monkeypatch, tool):
    """Make any attempt to download fail loudly instead of touching the network."""

    def refuse(*args, **kwargs):
        raise AssertionError("the tests must not use the network")

    monkeypatch.setattr(tool.urllib.request, "urlopen", refuse)
    monkeypatch.setattr(tool, "download_all", refuse)


class FakeResponse(io.BytesIO):
    """What ``urlopen`` returns, for a payload held in memory."""


def fake_opener(payload):
    return lambda url, timeout=None: FakeResponse(payload)


def test_tool_finds_installed_data_set(tool, no_network, tmp_path, capsys):
    assert data_command(["--data-root", str(tmp_path)]) == 0
    assert "found in /usr/share/datasets/fashion-mnist" in capsys.readouterr().out


def test_tool_prefers_data_root(tool, no_network, tmp_path, capsys):
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    for name in tool.FILES:
        (folder / name.removesuffix(".gz")).write_bytes(b"")
    assert tool.find_existing([tmp_path]) == folder
    assert data_command(["--data-root", str(tmp_path)]) == 0
    assert f"found in {folder}" in capsys.readouterr().out


def test_tool_md5_table_is_the_published_one(tool):
    assert tool.FILES["train-images-idx3-ubyte.gz"] == "8d4fb7e6c68d591d4c3dfef9ec88bf0d"
    assert len(tool.FILES) == 4 and all(len(v) == 32 for v in tool.FILES.values())


def test_tool_verify_md5(tool, tmp_path):
    path = tmp_path / "fake.gz"
    path.write_bytes(b"fashion" * 1000)
    good = hashlib.md5(b"fashion" * 1000).hexdigest()
    assert tool.md5_of(path) == good
    tool.verify_md5(path, good)
    tool.verify_md5(path, good.upper())
    with pytest.raises(tool.DownloadError, match="checksum mismatch") as info:
        tool.verify_md5(path, "0" * 32)
    assert str(path) in str(info.value)


def test_tool_download_checks_and_renames(tool, tmp_path):
    payload = b"not really fashion-mnist"
    dest = tmp_path / "sub" / "train-images-idx3-ubyte.gz"
    md5 = hashlib.md5(payload).hexdigest()
    tool.download_file("http://example.invalid/x", dest, md5, opener=fake_opener(payload))
    assert dest.read_bytes() == payload
    assert sorted(p.name for p in dest.parent.iterdir()) == [dest.name]


def test_tool_download_with_bad_checksum_leaves_nothing(tool, tmp_path):
    dest = tmp_path / "t10k-labels-idx1-ubyte.gz"
    with pytest.raises(tool.DownloadError, match="checksum mismatch"):
        tool.download_file("http://example.invalid/x", dest, "0" * 32, opener=fake_opener(b"x"))
    assert list(tmp_path.iterdir()) == []


def test_tool_download_all_falls_back_to_next_url(tool, tmp_path, monkeypatch):
    payloads = {name: name.encode() for name in tool.FILES}
    monkeypatch.setattr(tool, "FILES", {name: hashlib.md5(data).hexdigest() for name, data in payloads.items()})
    asked = []

    def opener(url, timeout=None):
        asked.append(url)
        if url.startswith("http://first/"):
            raise OSError("no route to host")
        return FakeResponse(payloads[url.rsplit("/", 1)[1]])

    folder = tmp_path / "fashion-mnist"
    tool.download_all(folder, base_urls=("http://first/", "http://second/"), opener=opener, log=str)
    assert sorted(p.name for p in folder.iterdir()) == sorted(payloads)
    assert asked[:2] == ["http://first/train-images-idx3-ubyte.gz", "http://second/train-images-idx3-ubyte.gz"]
    assert tool.find_existing([tmp_path]) == folder
