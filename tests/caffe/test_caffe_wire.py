"""netlayers.caffe.wire: the protobuf encoder against bytes built by hand from the protobuf
spec, the message classes, and .caffemodel files written, read back and read by OpenCV."""

import struct
from pathlib import Path

import numpy as np
import pytest
import yaml

from netlayers import Net
from netlayers.caffe import wire
from netlayers.caffe.proto import caffe_pb2
from netlayers.caffe.prototxt import convert_prototxt
from netlayers.errors import ConfigError, DataError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "caffe"


# -- encoding primitives and messages, byte for byte ------------------------------------------


@pytest.mark.parametrize(
    "value, encoded",
    [(0, "00"), (1, "01"), (127, "7f"), (128, "8001"), (300, "ac02"), (2**31 - 1, "ffffffff07"), (-1, "ff" * 9 + "01")],
)
def test_varints_are_protobufs_base_128_encoding(value, encoded):
    assert wire.encode_varint(value).hex() == encoded


# BlobProto {shape {dim: 2 dim: 3} data: 0..5}: field 5 (packed float, key 0x2a, 24 bytes), then
# field 7 (BlobShape, key 0x3a, 4 bytes: key 0x0a of packed dim, 2 bytes, 2, 3).
BLOB_2X3 = b"\x2a\x18" + struct.pack("<6f", 0, 1, 2, 3, 4, 5) + b"\x3a\x04\x0a\x02\x02\x03"


def test_a_blob_encodes_to_the_bytes_built_by_hand():
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend([2, 3])
    blob.data.extend(range(6))
    assert blob.SerializeToString() == BLOB_2X3
    assert wire.encode_blob(np.arange(6, dtype=np.float32).reshape(2, 3)) == BLOB_2X3


def test_bytes_built_by_hand_decode_to_the_blob():
    blob = caffe_pb2.BlobProto()
    assert blob.ParseFromString(BLOB_2X3) == len(BLOB_2X3)
    assert list(blob.shape.dim) == [2, 3] and list(blob.data) == [0, 1, 2, 3, 4, 5]
    assert blob.HasField("shape") and not blob.HasField("num")
    data, diff = wire.decode_blob(BLOB_2X3)
    assert data.dtype == np.float32 and diff is None
    np.testing.assert_array_equal(data, np.arange(6).reshape(2, 3))


def test_float64_goes_to_double_data_and_comes_back_as_float64():
    values = np.array([[0.1, -2.5]], dtype=np.float64)
    diff = np.array([[1e-300, 3.0]])
    # shape (field 7), then double_data (8, key 0x42) and double_diff (9, key 0x4a), 16 bytes each
    expected = (
        b"\x3a\x04\x0a\x02\x01\x02"
        + b"\x42\x10"
        + struct.pack("<2d", 0.1, -2.5)
        + b"\x4a\x10"
        + struct.pack("<2d", 1e-300, 3.0)
    )
    assert wire.encode_blob(values, diff) == expected
    data, decoded_diff = wire.decode_blob(expected)
    assert data.dtype == np.float64 and decoded_diff.dtype == np.float64
    np.testing.assert_array_equal(data, values)
    np.testing.assert_array_equal(decoded_diff, diff)


def test_the_legacy_4d_shape_wins_over_blobshape_as_in_caffe():
    # num 1, channels 2, height 1, width 2 (keys 0x08 0x10 0x18 0x20), four packed floats, and a
    # conflicting BlobShape (4): Caffe's Blob::FromProto reads the legacy dims when any is set.
    legacy = b"\x08\x01\x10\x02\x18\x01\x20\x02\x2a\x10" + struct.pack("<4f", 1, 2, 3, 4) + b"\x3a\x03\x0a\x01\x04"
    data, _ = wire.decode_blob(legacy)
    assert data.shape == (1, 2, 1, 2)
    blob = caffe_pb2.BlobProto()
    blob.ParseFromString(legacy)
    assert (blob.num, blob.channels, blob.height, blob.width) == (1, 2, 1, 2)
    assert blob.SerializeToString() == legacy  # fields come out in number order, as protobuf writes


def test_a_datum_encodes_to_the_bytes_built_by_hand():
    # channels 1, height 2, width 2, data (4 bytes), label -1 (ten-byte varint), float_data
    # unpacked (field 6, key 0x35, one fixed32 each), encoded true (field 7)
    expected = bytes.fromhex("08011002180222040102030428" + "ff" * 9 + "01" + "350000003f" + "350000c03f" + "3801")
    datum = caffe_pb2.Datum(channels=1, height=2, width=2, data=b"\x01\x02\x03\x04", label=-1, encoded=True)
    datum.float_data.extend([0.5, 1.5])
    assert datum.SerializeToString() == expected
    parsed = caffe_pb2.Datum()
    parsed.ParseFromString(expected)
    assert (parsed.channels, parsed.height, parsed.width, parsed.label) == (1, 2, 2, -1)
    assert parsed.data == b"\x01\x02\x03\x04" and list(parsed.float_data) == [0.5, 1.5] and parsed.encoded
    assert parsed == datum


def test_unset_fields_read_as_caffe_defaults_and_are_not_written():
    datum = caffe_pb2.Datum()
    assert (datum.channels, datum.label, datum.data, datum.encoded) == (0, 0, b"", False)
    assert not datum.HasField("label") and datum.SerializeToString() == b""
    datum.label = 0  # set explicitly: written, as protobuf's proto2 does
    assert datum.HasField("label") and datum.SerializeToString() == b"\x28\x00"


def test_float_fields_store_float32_values_and_types_are_checked():
    blob = caffe_pb2.BlobProto()
    blob.data.append(0.1)
    assert blob.data[0] == float(np.float32(0.1))
    with pytest.raises(TypeError):
        caffe_pb2.Datum().label = 1.5
    with pytest.raises(TypeError):
        caffe_pb2.Datum().data = "text"
    with pytest.raises(AttributeError):
        blob.data = [1.0]
    with pytest.raises(AttributeError):
        caffe_pb2.BlobProto(nonsense=1)


def test_a_blob_vector_round_trips_through_its_bytes():
    vector = caffe_pb2.BlobProtoVector()
    first = vector.blobs.add()
    first.shape.dim.extend([3])
    first.data.extend([1, 2, 3])
    vector.blobs.add(num=1, channels=1, height=1, width=1).data.append(7)
    raw = vector.SerializeToString()
    assert raw[:1] == b"\x0a"  # blobs: field 1, length-delimited
    again = caffe_pb2.BlobProtoVector()
    again.ParseFromString(raw)
    assert len(again.blobs) == 2 and again == vector
    assert list(again.blobs[1].data) == [7.0] and again.blobs[1].num == 1


def test_bytes_that_are_not_a_message_raise_one_data_error():
    with pytest.raises(wire.DecodeError, match="not a valid BlobProto") as info:
        caffe_pb2.BlobProto().ParseFromString(BLOB_2X3[:-3])
    assert isinstance(info.value, DataError) and "\n" not in str(info.value)


# -- .caffemodel out ---------------------------------------------------------------------------

NET_YAML = """
name: every_param_kind
dtype: {dtype}
layers:
  - {{name: data, type: Input, top: data, input_param: {{shape: [{{dim: [2, 3, 6, 6]}}]}}}}
  - {{name: conv, type: Convolution, bottom: data, top: conv, convolution_param: {{num_output: 4, kernel_size: 3}}}}
  - {{name: bn, type: BatchNorm, bottom: conv, top: conv}}
  - {{name: scale, type: Scale, bottom: conv, top: conv, scale_param: {{bias_term: true}}}}
  - {{name: ip, type: InnerProduct, bottom: conv, top: ip, inner_product_param: {{num_output: 5}}}}
"""


def _net_with_random_params(dtype, seed):
    net = Net(yaml.safe_load(NET_YAML.format(dtype=dtype)), phase="TEST")
    rng = np.random.default_rng(seed)
    for blobs in net.params.values():
        for blob in blobs:
            blob.data[...] = rng.uniform(0.5, 1.5, blob.shape)
    return net


class LayerParameter(wire.Message):
    FIELDS = (wire.Field("name", 1, "string"), wire.Field("type", 2, "string"))


class NetParameter(wire.Message):
    FIELDS = (
        wire.Field("name", 1, "string"),
        wire.Field("layer", 100, "message", repeated=True, message=LayerParameter),
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_written_caffemodel_reads_back_identically(tmp_path, dtype):
    net = _net_with_random_params(dtype, seed=1)
    path = tmp_path / "model.caffemodel"
    wire.write_caffemodel(net, path)
    expected = {name: [blob.data for blob in blobs] for name, blobs in net.params.items()}
    assert [shape for blobs in expected.values() for shape in map(np.shape, blobs)] == [
        (4, 3, 3, 3), (4,), (4,), (4,), (1,), (4,), (4,), (5, 64), (5,)
    ]  # fmt: skip
    ours = wire.read_caffemodel(path)
    assert list(ours) == ["conv", "bn", "scale", "ip"]
    for name, arrays in expected.items():
        for want, got in zip(arrays, ours[name], strict=True):
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got, want)
    header = NetParameter()
    header.ParseFromString(path.read_bytes())
    assert header.name == "every_param_kind"
    assert [(layer.name, layer.type) for layer in header.layer] == [
        ("conv", "Convolution"), ("bn", "BatchNorm"), ("scale", "Scale"), ("ip", "InnerProduct")
    ]  # fmt: skip


def test_a_net_loading_the_written_file_computes_what_the_writer_did(tmp_path):
    writer = _net_with_random_params("float32", seed=2)
    path = tmp_path / "model.caffemodel"
    wire.write_caffemodel(writer, path)
    reader = _net_with_random_params("float32", seed=3)
    reader.load(path)
    x = np.random.default_rng(4).standard_normal((2, 3, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(reader.forward(data=x)["ip"], writer.forward(data=x)["ip"])


def test_caffes_own_model_round_trips_through_the_writer(tmp_path):
    original = wire.read_caffemodel(FIXTURES / "lenet_fmnist_iter_10000.caffemodel")
    assert all(a.dtype == np.float32 for arrays in original.values() for a in arrays)
    path = tmp_path / "lenet.caffemodel"
    wire.write_caffemodel(original, path)  # a mapping {layer: [arrays]}
    again = wire.read_caffemodel(path)
    assert list(again) == list(original)
    for name in original:
        for want, got in zip(original[name], again[name], strict=True):
            np.testing.assert_array_equal(got, want)


LENET_DEPLOY = """name: "LeNet"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 3 dim: 1 dim: 28 dim: 28 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 20 kernel_size: 5 } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2" convolution_param { num_output: 50 kernel_size: 5 } }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1" inner_product_param { num_output: 500 } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" inner_product_param { num_output: 10 } }
layer { name: "prob" type: "Softmax" bottom: "ip2" top: "prob" }
"""  # noqa: E501


def test_opencv_reads_the_written_lenet_and_computes_what_netlayers_does(tmp_path):
    import cv2  # opencv-python-headless < 5 (OpenCV 5 dropped its Caffe importer)

    prototxt = tmp_path / "lenet_deploy.prototxt"
    prototxt.write_text(LENET_DEPLOY)
    net = Net(yaml.safe_load(convert_prototxt(prototxt)), phase="TEST")
    net.load(FIXTURES / "lenet_fmnist_iter_10000.caffemodel")
    model = tmp_path / "lenet.caffemodel"
    wire.write_caffemodel(net, model)
    images = np.random.default_rng(5).random((3, 1, 28, 28), dtype=np.float32)
    ours = net.forward(data=images)["prob"]
    opencv = cv2.dnn.readNetFromCaffe(str(prototxt), str(model))
    opencv.setInput(images)
    theirs = opencv.forward()
    assert theirs.shape == (3, 10)
    np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-6)


def test_writing_is_atomic_and_mistakes_are_one_line_errors(tmp_path, monkeypatch):
    path = tmp_path / "model.caffemodel"
    path.write_bytes(b"old contents")
    with pytest.raises(ConfigError, match="layer 'ip' blob 0 holds <U1 values, expected numbers"):
        wire.write_caffemodel({"ip": [np.array(["a"])]}, path)
    with pytest.raises(ConfigError, match="must map to a list of arrays"):
        wire.write_caffemodel({"ip": np.zeros(3)}, path)

    def fail(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(wire, "_layer_chunks", fail)
    with pytest.raises(DataError, match="cannot write the Caffe model: No space left on device") as info:
        wire.write_caffemodel({"ip": [np.zeros(3)]}, path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert path.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.caffemodel"]  # no temporary left
    with pytest.raises(DataError, match="is a folder"):
        wire.write_caffemodel({"ip": [np.zeros(3)]}, tmp_path)


def test_a_binaryproto_mean_file_reads_as_its_array(tmp_path):
    mean = np.random.default_rng(6).uniform(0, 255, (1, 3, 4, 5)).astype(np.float32)
    blob = caffe_pb2.BlobProto(num=1, channels=3, height=4, width=5)  # as compute_image_mean writes it
    blob.data.extend(mean.reshape(-1))
    path = tmp_path / "mean.binaryproto"
    path.write_bytes(blob.SerializeToString())
    np.testing.assert_array_equal(wire.read_binaryproto(path), mean)
    path.write_bytes(blob.SerializeToString()[:-7])
    with pytest.raises(DataError, match="not a BlobProto") as info:
        wire.read_binaryproto(path)
    assert str(info.value).startswith(str(path))
    with pytest.raises(DataError, match="cannot read the mean file"):
        wire.read_binaryproto(tmp_path / "missing.binaryproto")
