"""transform_param.mean_file: Caffe's .binaryproto mean image, written here byte by byte as
compute_image_mean writes it, subtracted before scaling and cropped with the image."""

import numpy as np
import pytest
from PIL import Image

from netlayers import ConfigError, DataError, Net
from netlayers.data import Transformer


def varint(value):
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number, wire, payload):
    key = varint(number << 3 | wire)
    return key + (varint(len(payload)) + payload if wire == 2 else varint(payload))


def binaryproto(mean, legacy=True):
    """A BlobProto: num/channels/height/width (fields 1-4) or a BlobShape (7), packed floats (5)."""
    if legacy:
        head = b"".join(field(n, 0, d) for n, d in zip((1, 2, 3, 4), mean.shape))
    else:
        head = field(7, 2, field(1, 2, b"".join(varint(d) for d in mean.shape)))
    return head + field(5, 2, mean.astype("<f4").tobytes())


@pytest.fixture
def images_and_mean(tmp_path):
    rng = np.random.default_rng(8)
    images = rng.integers(0, 256, (4, 3, 6, 7), dtype=np.uint8)
    mean = rng.uniform(0, 255, (1, 3, 6, 7)).astype(np.float32)
    np.savez(tmp_path / "set.npz", data=images, label=np.arange(4))
    (tmp_path / "mean.binaryproto").write_bytes(binaryproto(mean))
    return images, mean[0]


def caffe_transform(image, mean, scale, h_off, w_off, crop, mirror):
    """DataTransformer::Transform's loop: out[c,h,w] = (in[c,h_off+h,w_off+w'] - mean[same]) * scale."""
    out = np.empty((image.shape[0], crop, crop), np.float32)
    for c in range(image.shape[0]):
        for h in range(crop):
            for w in range(crop):
                src = (c, h_off + h, w_off + (crop - 1 - w if mirror else w))
                out[c, h, w] = (np.float32(image[src]) - mean[src]) * np.float32(scale)
    return out


def test_transformer_subtracts_the_mean_at_the_source_pixel_before_crop_and_flip():
    rng = np.random.default_rng(1)
    batch = rng.integers(0, 256, (6, 2, 5, 6), dtype=np.uint8)
    mean = rng.uniform(0, 255, (2, 5, 6)).astype(np.float32)
    transformer = Transformer(scale=0.25, mirror=True, crop_size=3, phase="TRAIN", mean=mean)
    out = transformer.transform(batch, np.random.default_rng(4))
    draws = np.random.default_rng(4)  # the documented draw order: rows, columns, flips
    h_off, w_off, flips = draws.integers(0, 3, 6), draws.integers(0, 4, 6), draws.integers(0, 2, 6)
    for i in range(6):
        expected = caffe_transform(batch[i], mean, 0.25, h_off[i], w_off[i], 3, flips[i])
        np.testing.assert_array_equal(out[i], expected)


def data_net(tmp_path, transform, phase="TEST"):
    layer = {
        "name": "data",
        "type": "Data",
        "top": ["data", "label"],
        "data_param": {"source": str(tmp_path / "set.npz"), "backend": "NPZ", "batch_size": 4},
        "transform_param": transform,
    }
    return Net({"name": "d", "layers": [layer]}, phase)


def test_data_layer_reads_a_legacy_and_a_shaped_mean_file(images_and_mean, tmp_path):
    images, mean = images_and_mean
    (tmp_path / "shaped.binaryproto").write_bytes(binaryproto(mean[np.newaxis], legacy=False))
    for name in ("mean.binaryproto", "shaped.binaryproto"):
        out = data_net(tmp_path, {"mean_file": str(tmp_path / name), "scale": 0.5, "crop_size": 4})
        expected = [caffe_transform(image, mean, 0.5, 1, 1, 4, False) for image in images]
        np.testing.assert_array_equal(out.forward()["data"], np.stack(expected))


def test_mean_file_and_mean_value_together_is_a_config_error(images_and_mean, tmp_path):
    with pytest.raises(
        ConfigError, match=r"layer 'data': field 'transform_param.mean_file': give mean_file or mean_value"
    ):
        data_net(tmp_path, {"mean_file": str(tmp_path / "mean.binaryproto"), "mean_value": [1]})


def test_mean_of_another_size_missing_or_damaged_is_one_line(images_and_mean, tmp_path):
    (tmp_path / "small.binaryproto").write_bytes(binaryproto(np.zeros((1, 3, 5, 7), np.float32)))
    with pytest.raises(DataError, match=r"field 'transform_param.mean_file': the mean image has shape \(3, 5, 7\)"):
        data_net(tmp_path, {"mean_file": str(tmp_path / "small.binaryproto")})
    with pytest.raises(DataError, match=r"field 'transform_param.mean_file': no such mean file 'nope.binaryproto'"):
        data_net(tmp_path, {"mean_file": "nope.binaryproto"})
    (tmp_path / "junk.binaryproto").write_bytes(b"\xff\xff\xff")
    with pytest.raises(DataError) as info:
        data_net(tmp_path, {"mean_file": str(tmp_path / "junk.binaryproto")})
    assert str(info.value).startswith(f"{tmp_path / 'junk.binaryproto'}: layer 'data': not a Caffe mean file")


def test_image_data_and_window_data_subtract_the_mean_file(images_and_mean, tmp_path):
    _, mean = images_and_mean
    picture = np.random.default_rng(3).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    Image.fromarray(picture).save(tmp_path / "p.png")
    bgr = picture.transpose(2, 0, 1)[::-1]
    (tmp_path / "list.txt").write_text(f"{tmp_path}/p.png 0\n")
    mean_file = str(tmp_path / "mean.binaryproto")
    image_layer = {
        "name": "img",
        "type": "ImageData",
        "top": ["data", "label"],
        "image_data_param": {"source": str(tmp_path / "list.txt")},
        "transform_param": {"mean_file": mean_file, "crop_size": 4},
    }
    out = Net({"name": "n", "layers": [image_layer]}, "TEST").forward()["data"][0]
    np.testing.assert_array_equal(out, caffe_transform(bgr, mean, 1, 1, 1, 4, False))

    (tmp_path / "w.txt").write_text("# 0\np.png\n3\n6\n7\n2\n1 1.0 2 1 5 4\n0 0.0 0 0 1 1\n")
    window_layer = {
        "name": "win",
        "type": "WindowData",
        "top": ["data", "label"],
        "window_data_param": {"source": str(tmp_path / "w.txt"), "batch_size": 1, "fg_fraction": 1},
        "transform_param": {"mean_file": mean_file, "crop_size": 4},
    }
    out = Net({"name": "n", "layers": [window_layer]}, "TRAIN").forward()["data"][0]
    offset = (7 - 4) // 2  # Caffe centres the mean by its width's offset, on both axes
    expected = bgr[:, 1:5, 2:6].astype(np.float32) - mean[:, offset : offset + 4, offset : offset + 4]
    np.testing.assert_array_equal(out, expected)
