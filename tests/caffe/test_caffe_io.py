"""netlayers.caffe.io (pycaffe's caffe.io): message conversions, images, resizing, crops and
the Transformer, each against values worked out by hand."""

import numpy as np
import pytest
from PIL import Image

from netlayers import caffe
from netlayers.caffe import io as caffe_io
from netlayers.caffe.proto import caffe_pb2
from netlayers.errors import ConfigError, DataError

# -- messages <-> arrays ----------------------------------------------------------------------


def test_caffe_io_and_caffe_proto_are_reached_as_pycaffe_users_reach_them():
    assert caffe.io is caffe_io
    assert caffe.proto.caffe_pb2.BlobProto is caffe_pb2.BlobProto
    assert caffe_pb2.TRAIN is caffe.TRAIN and caffe_pb2.TEST == 1  # pycaffe's caffe.TEST is caffe_pb2's


def test_an_array_and_its_diff_round_trip_through_a_blobproto():
    arr = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 8
    diff = -arr
    blob = caffe_io.array_to_blobproto(arr, diff)
    assert list(blob.shape.dim) == [2, 3, 4] and not blob.HasField("num")
    again = caffe_pb2.BlobProto()
    again.ParseFromString(blob.SerializeToString())
    data = caffe_io.blobproto_to_array(again)
    assert data.dtype == np.float64  # as pycaffe's np.array(blob.data)
    np.testing.assert_array_equal(data, arr)
    np.testing.assert_array_equal(caffe_io.blobproto_to_array(again, return_diff=True), diff)


def test_a_mean_file_is_read_as_pycaffe_users_read_it(tmp_path):
    mean = np.random.default_rng(0).uniform(0, 255, (1, 3, 2, 2)).astype(np.float32)
    written = caffe_pb2.BlobProto(num=1, channels=3, height=2, width=2)
    written.data.extend(mean.reshape(-1))
    path = tmp_path / "mean.binaryproto"
    path.write_bytes(written.SerializeToString())

    blob = caffe.proto.caffe_pb2.BlobProto()
    blob.ParseFromString(open(path, "rb").read())
    array = np.array(caffe.io.blobproto_to_array(blob))
    assert array.shape == (1, 3, 2, 2)  # the legacy num/channels/height/width
    np.testing.assert_array_equal(array, mean)
    np.testing.assert_array_equal(caffe_io.read_binaryproto(path), mean)


def test_a_blobproto_with_the_wrong_number_of_values_is_a_data_error():
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend([2, 2])
    blob.data.extend([1, 2, 3])
    with pytest.raises(DataError, match=r"holds 3 data values but its shape \(2, 2\) needs 4"):
        caffe_io.blobproto_to_array(blob)


def test_an_array_list_round_trips_through_a_blobprotovector_string():
    arrays = [np.ones((2, 2)), np.arange(3.0), np.full((1, 1, 1, 2), -0.5)]
    raw = caffe_io.arraylist_to_blobprotovector_str(arrays)
    assert isinstance(raw, bytes)
    again = caffe_io.blobprotovector_str_to_arraylist(raw)
    assert [a.shape for a in again] == [(2, 2), (3,), (1, 1, 1, 2)]
    for want, got in zip(arrays, again, strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_uint8_array_becomes_datum_bytes_and_others_float_data():
    pixels = np.arange(12, dtype=np.uint8).reshape(3, 2, 2)
    datum = caffe_io.array_to_datum(pixels, label=7)
    assert (datum.channels, datum.height, datum.width, datum.label) == (3, 2, 2, 7)
    assert datum.data == bytes(range(12)) and len(datum.float_data) == 0
    parsed = caffe_pb2.Datum()
    parsed.ParseFromString(datum.SerializeToString())
    back = caffe_io.datum_to_array(parsed)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, pixels)

    values = np.linspace(-1, 1, 6).reshape(1, 2, 3)
    datum = caffe_io.array_to_datum(values)
    assert datum.data == b"" and not datum.HasField("label") and len(datum.float_data) == 6
    np.testing.assert_allclose(caffe_io.datum_to_array(datum), values, rtol=1e-7)


def test_datum_mistakes_are_one_line_data_errors():
    with pytest.raises(DataError, match=r"expected an array \(channels, height, width\), got shape \(2, 2\)"):
        caffe_io.array_to_datum(np.zeros((2, 2)))
    with pytest.raises(DataError, match="encoded image"):
        caffe_io.datum_to_array(caffe_pb2.Datum(channels=3, height=1, width=1, data=b"\x89PNG", encoded=True))
    with pytest.raises(DataError, match="holds 2 values"):
        caffe_io.datum_to_array(caffe_pb2.Datum(channels=1, height=1, width=3, data=b"\x01\x02"))


# -- images ------------------------------------------------------------------------------------


def test_load_image_gives_floats_in_0_1_rgb_or_intensity(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "gray.png")
    rgba = np.dstack([rgb, np.full((4, 5), 9, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "rgba.png")

    color = caffe_io.load_image(tmp_path / "rgb.png")
    assert color.shape == (4, 5, 3) and color.dtype == np.float32
    np.testing.assert_allclose(color, rgb / 255, rtol=1e-6)
    np.testing.assert_allclose(caffe_io.load_image(tmp_path / "rgba.png"), rgb / 255, rtol=1e-6)
    gray_as_color = caffe_io.load_image(tmp_path / "gray.png")
    assert gray_as_color.shape == (4, 5, 3)
    np.testing.assert_allclose(gray_as_color, np.repeat(rgb[:, :, :1], 3, axis=2) / 255, rtol=1e-6)

    gray = caffe_io.load_image(tmp_path / "gray.png", color=False)
    assert gray.shape == (4, 5, 1)
    np.testing.assert_allclose(gray[:, :, 0], rgb[:, :, 0] / 255, rtol=1e-6)
    intensity = caffe_io.load_image(tmp_path / "rgb.png", color=False)
    expected = (0.2125 * rgb[:, :, 0] + 0.7154 * rgb[:, :, 1] + 0.0721 * rgb[:, :, 2]) / 255
    assert intensity.shape == (4, 5, 1)
    np.testing.assert_allclose(intensity[:, :, 0], expected, rtol=1e-5)


def test_a_16_bit_image_is_scaled_by_65535(tmp_path):
    deep = np.array([[0, 1000], [40000, 65535]], dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    np.testing.assert_allclose(
        caffe_io.load_image(tmp_path / "deep.png", color=False)[:, :, 0], deep / 65535, rtol=1e-6
    )


def test_load_image_mistakes_name_the_file(tmp_path):
    with pytest.raises(DataError, match="no such file") as info:
        caffe_io.load_image(tmp_path / "missing.jpg")
    assert str(info.value).startswith(str(tmp_path / "missing.jpg"))
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(DataError, match="not an image Pillow can read"):
        caffe_io.load_image(tmp_path / "notes.png")


def test_resize_is_bilinear_with_pixel_centres_aligned():
    image = np.array([[0.0, 4.0], [8.0, 12.0]], dtype=np.float32)[:, :, np.newaxis]
    # 2 -> 4 along an axis: output centres at input positions -0.25 (clamped to 0), 0.25, 0.75, 1.25 (to 1)
    along = np.array([0.0, 0.25, 0.75, 1.0])
    expected = (along[:, None] * 8 + along[None, :] * 4)[:, :, np.newaxis]
    resized = caffe_io.resize_image(image, (4, 4))
    assert resized.shape == (4, 4, 1) and resized.dtype == np.float32
    np.testing.assert_allclose(resized, expected, rtol=1e-6)
    # 4 -> 2 takes the mean of each pair (positions 0.5 and 2.5), on any number of channels
    five = np.random.default_rng(2).random((4, 4, 5)).astype(np.float32)
    halved = caffe_io.resize_image(five, (2, 2))
    np.testing.assert_allclose(halved, five.reshape(2, 2, 2, 2, 5).mean(axis=(1, 3)), rtol=1e-5)
    np.testing.assert_array_equal(caffe_io.resize_image(five, (4, 4)), five)
    np.testing.assert_array_equal(
        caffe_io.resize_image(image, (3, 3), interp_order=0)[[0, 2]][:, [0, 2], 0], image[:, :, 0]
    )


def test_oversample_takes_corners_centre_and_their_mirrors():
    image = np.arange(5 * 6 * 2, dtype=np.float32).reshape(5, 6, 2)
    crops = caffe_io.oversample([image, image + 100], (3, 4))
    assert crops.shape == (20, 3, 4, 2) and crops.dtype == np.float32
    starts = [(0, 0), (0, 2), (2, 0), (2, 2), (1, 1)]  # centre: floor(5/2 - 3/2), floor(6/2 - 4/2)
    for i, (y, x) in enumerate(starts):
        np.testing.assert_array_equal(crops[i], image[y : y + 3, x : x + 4])
        np.testing.assert_array_equal(crops[5 + i], image[y : y + 3, x : x + 4][:, ::-1])
        np.testing.assert_array_equal(crops[10 + i], image[y : y + 3, x : x + 4] + 100)


# -- Transformer -------------------------------------------------------------------------------


def _transformer():
    transformer = caffe_io.Transformer({"data": (1, 3, 4, 5)})
    transformer.set_transpose("data", (2, 0, 1))
    transformer.set_channel_swap("data", (2, 1, 0))
    transformer.set_raw_scale("data", 255)
    transformer.set_mean("data", np.array([104.0, 117.0, 123.0]))
    transformer.set_input_scale("data", 0.5)
    return transformer


def test_preprocess_follows_pycaffes_formula_and_deprocess_undoes_it():
    image = np.random.default_rng(3).random((4, 5, 3)).astype(np.float32)
    before = image.copy()
    caffe_in = _transformer().preprocess("data", image)
    bgr = image.transpose(2, 0, 1)[[2, 1, 0]]
    expected = (bgr * 255 - np.array([104.0, 117.0, 123.0])[:, None, None]) * 0.5
    assert caffe_in.shape == (3, 4, 5) and caffe_in.dtype == np.float32
    np.testing.assert_allclose(caffe_in, expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(image, before)  # the caller's image is left alone
    np.testing.assert_allclose(_transformer().deprocess("data", caffe_in), image, atol=1e-6)
    np.testing.assert_allclose(_transformer().deprocess("data", caffe_in[np.newaxis]), image, atol=1e-6)


def test_preprocess_resizes_to_the_input_and_a_full_mean_is_subtracted_per_pixel():
    transformer = caffe_io.Transformer({"data": (2, 1, 2, 2)})
    transformer.set_transpose("data", (2, 0, 1))
    mean = np.array([[1.0, 2.0], [3.0, 4.0]])
    transformer.set_mean("data", mean)  # H x W for one channel
    image = np.full((4, 4, 1), 10.0)
    np.testing.assert_allclose(transformer.preprocess("data", image), (10.0 - mean)[np.newaxis])
    gray = transformer.deprocess("data", transformer.preprocess("data", np.full((2, 2, 1), 0.25)))
    np.testing.assert_allclose(gray, np.full((2, 2), 0.25))  # squeezed, as pycaffe


def test_a_mean_image_of_another_size_is_resized_to_the_input():
    transformer = caffe_io.Transformer({"data": (1, 3, 2, 2)})
    mean = np.broadcast_to(np.array([1.0, 2.0, 3.0])[:, None, None], (3, 4, 4))
    transformer.set_mean("data", mean[np.newaxis])  # 1 x K x H x W, as a mean file holds it
    assert transformer.mean["data"].shape == (3, 2, 2)
    np.testing.assert_allclose(transformer.mean["data"], mean[:, :2, :2])


def test_transformer_mistakes_are_one_line_config_errors():
    transformer = caffe_io.Transformer({"data": (1, 3, 4, 5)})
    with pytest.raises(ConfigError, match="'label' is not one of the net inputs: data"):
        transformer.set_raw_scale("label", 255)
    with pytest.raises(ConfigError, match="must list the 3 axes"):
        transformer.set_transpose("data", (1, 0))
    with pytest.raises(ConfigError, match="must list the input's 3 channels"):
        transformer.set_channel_swap("data", (1, 0))
    with pytest.raises(ConfigError, match="2 mean values, the input has 3 channels"):
        transformer.set_mean("data", np.array([1.0, 2.0]))
    with pytest.raises(ConfigError, match="expected a mean of shape"):
        transformer.set_mean("data", np.zeros((2, 4, 5)))
    with pytest.raises(DataError, match="expected an image H x W x K"):
        transformer.preprocess("data", np.zeros((4, 5)))
