"""Caffe's LMDB and LevelDB databases of Datum records (netlayers/data/databases.py), read by the
Data layer as Caffe's convert_mnist_data / convert_imageset write them."""

import builtins
import io
import shutil
from pathlib import Path

import numpy as np
import pytest

from netlayers import DataError, Net
from netlayers.caffe.proto.caffe_pb2 import Datum
from netlayers.data.databases import DatumDatabase, decode_datum
from netlayers.data.idx import read_idx

ROOT = Path(__file__).resolve().parents[1]
CAFFE = ROOT / "fixtures" / "caffe"
FASHION = Path("/usr/share/datasets/fashion-mnist")


def datum_bytes(image, label, *, encoded=None):
    datum = Datum()
    if encoded is not None:
        datum.data, datum.encoded = encoded, True
    else:
        datum.channels, datum.height, datum.width = image.shape
        datum.data = np.ascontiguousarray(image, np.uint8).tobytes()
    datum.label = int(label)
    return datum.SerializeToString()


def write_lmdb(path, records):
    import lmdb

    env = lmdb.open(str(path), map_size=1 << 28)
    with env.begin(write=True) as txn:
        for i, value in enumerate(records):
            txn.put(f"{i:08d}".encode(), value)  # convert_mnist_data's keys
    env.close()


def fashion(count):
    images = read_idx(FASHION / "t10k-images-idx3-ubyte.gz")[:count]
    labels = read_idx(FASHION / "t10k-labels-idx1-ubyte.gz")[:count]
    return images, labels


def test_caffes_lenet_prototxt_runs_on_an_lmdb_as_caffe_wrote_it(tmp_path):
    """The fixture's LeNet, unchanged, reads fmnist_test_lmdb beside it: the TEST net with
    Caffe's weights scores the 300 images exactly as the same net on the IDX files."""
    images, labels = fashion(300)
    write_lmdb(tmp_path / "fmnist_test_lmdb", [datum_bytes(im[None], lab) for im, lab in zip(images, labels)])
    shutil.copy(CAFFE / "lenet_train_test_fmnist.prototxt", tmp_path)
    net = Net(tmp_path / "lenet_train_test_fmnist.prototxt", "TEST")
    net.load(CAFFE / "lenet_fmnist_iter_10000.caffemodel")
    reference = Net(ROOT.parent / "configs" / "lenet_fashion_mnist.yaml", "TEST")
    reference.load(CAFFE / "lenet_fmnist_iter_10000.caffemodel")
    for _ in range(3):
        ours, theirs = net.forward(), reference.forward()
        np.testing.assert_array_equal(net.blobs["label"].data, reference.blobs["label"].data)
        np.testing.assert_array_equal(net.blobs["ip2"].data, reference.blobs["ip2"].data)
        assert float(ours["accuracy"]) == float(theirs["accuracy"])
    assert net.layer("mnist").sampler.num_items == 300


def test_encoded_images_decode_as_opencv_does(tmp_path):
    from PIL import Image

    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 10
    grey = np.arange(20, dtype=np.uint8).reshape(4, 5)
    encoded = []
    for array in (rgb, grey):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, "PNG")
        encoded.append(buffer.getvalue())
    colour = decode_datum(datum_bytes(None, 3, encoded=encoded[0]))
    assert colour.shape == (3, 4, 5) and colour.label == 3
    assert (colour.array[0] == 10).all() and (colour.array[2] == 200).all()  # BGR
    assert decode_datum(datum_bytes(None, 1, encoded=encoded[1])).shape == (1, 4, 5)
    forced = decode_datum(datum_bytes(None, 1, encoded=encoded[1]), color=True)
    assert forced.shape == (3, 4, 5) and (forced.array[0] == grey).all()
    assert decode_datum(datum_bytes(None, 1, encoded=encoded[0]), color=False).shape == (1, 4, 5)


def test_float_data_and_negative_labels():
    datum = Datum()
    datum.channels, datum.height, datum.width, datum.label = 1, 1, 3, -1
    datum.float_data.extend([0.5, -2.0, 3.25])
    decoded = decode_datum(datum.SerializeToString())
    assert decoded.label == -1 and decoded.array.dtype == np.float32
    np.testing.assert_array_equal(decoded.array.ravel(), [0.5, -2.0, 3.25])


def test_a_leveldb_reads_in_key_order(tmp_path):
    import plyvel

    images, labels = fashion(5)
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    for i in reversed(range(5)):  # written out of order; read in key order, as Caffe iterates
        db.put(f"{i:08d}".encode(), datum_bytes(images[i][None], labels[i]))
    db.close()
    database = DatumDatabase(tmp_path / "db", "LEVELDB")
    assert len(database) == 5 and database.inputs.shape == (5, 1, 28, 28)
    np.testing.assert_array_equal(database.inputs[np.arange(5)][:, 0], images)
    np.testing.assert_array_equal(database.labels[[4, 0]], labels[[4, 0]])


def test_database_mistakes_are_one_line(tmp_path, monkeypatch):
    images, labels = fashion(2)
    write_lmdb(tmp_path / "mixed", [datum_bytes(images[0][None], 1), datum_bytes(np.zeros((1, 5, 5)), 2)])
    database = DatumDatabase(tmp_path / "mixed", "LMDB")
    with pytest.raises(DataError, match="record '00000001' is 1x5x5, the first record 1x28x28"):
        database.inputs[np.array([0, 1])]
    write_lmdb(tmp_path / "junk", [b"\xff\xff\xff"])
    with pytest.raises(DataError, match="record '00000000' is not a Caffe Datum"):
        DatumDatabase(tmp_path / "junk", "LMDB")
    with pytest.raises(DataError, match="expected a folder holding the LMDB database"):
        DatumDatabase(tmp_path / "nothing", "LMDB")
    real_import = builtins.__import__

    def no_lmdb(name, *args, **kwargs):
        if name == "lmdb":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_lmdb)
    with pytest.raises(DataError, match=r"needs the lmdb package: pip install 'netlayers\[lmdb\]'"):
        DatumDatabase(tmp_path / "mixed", "LMDB")
