"""ImageData against image lists and pictures written with Pillow, as Caffe users make them,
and the expected values computed here the way Caffe (OpenCV) gives them."""

import math
import sys
import textwrap

import numpy as np
import pytest
from layer_harness import the_thread_ends_with_its_net
from PIL import Image

from netlayers import ConfigError, DataError, Net
from netlayers.data.images import resize_linear


def bilinear_reference(image, height, width):
    """OpenCV's INTER_LINEAR in plain loops and floats: source coordinate (d + 0.5) * scale -
    0.5, clamped to the edge pixels (float results; OpenCV rounds to 8 bits)."""
    channels, src_h, src_w = image.shape

    def taps(d, src, dst):
        s = (d + 0.5) * src / dst - 0.5
        low = math.floor(s)
        frac = s - low
        if low < 0:
            low, frac = 0, 0.0
        if low >= src - 1:
            low, frac = src - 1, 0.0
        return low, min(low + 1, src - 1), frac

    out = np.empty((channels, height, width))
    for y in range(height):
        y0, y1, fy = taps(y, src_h, height)
        for x in range(width):
            x0, x1, fx = taps(x, src_w, width)
            top = (1 - fx) * image[:, y0, x0] + fx * image[:, y0, x1]
            bottom = (1 - fx) * image[:, y1, x0] + fx * image[:, y1, x1]
            out[:, y, x] = (1 - fy) * top + fy * bottom
    return out


@pytest.fixture
def pictures(tmp_path):
    """Three RGB pictures (one name with a space) under tmp/pics/, and their RGB pixels."""
    rng = np.random.default_rng(5)
    folder = tmp_path / "pics"
    folder.mkdir()
    pixels = {}
    for name in ("cat one.png", "dog.png", "bird.png"):
        pixels[name] = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels[name]).save(folder / name)
    return folder, pixels


def image_net(source, phase="TRAIN", seed=0, transform=None, **param):
    layer = {
        "name": "img",
        "type": "ImageData",
        "top": ["data", "label"],
        "image_data_param": {"source": str(source), **param},
    }
    if transform:
        layer["transform_param"] = transform
    net = Net({"name": "n", "layers": [layer]}, phase, seed=seed)
    return net


def bgr(rgb):
    """What OpenCV's imread gives for RGB pixels: (3, H, W) in B, G, R order."""
    return rgb.transpose(2, 0, 1)[::-1].astype(np.float64)


def test_images_are_bgr_scaled_minus_mean_with_root_folder_and_spaces(pictures, tmp_path):
    folder, pixels = pictures
    (tmp_path / "list.txt").write_text("cat one.png 3\ndog.png 1\r\nbird.png 7\n")
    net = image_net(
        tmp_path / "list.txt",
        root_folder=f"{folder}/",  # Caffe puts it before each path as it is
        batch_size=2,
        transform={"scale": 0.5, "mean_value": [10, 20, 30]},
    )
    first = {name: values.copy() for name, values in net.forward().items()}  # forward's are views
    second = net.forward()
    mean = np.array([10, 20, 30]).reshape(3, 1, 1)  # B, G, R
    expected = [(bgr(pixels[name]) - mean) * 0.5 for name in ("cat one.png", "dog.png", "bird.png", "cat one.png")]
    np.testing.assert_array_equal(first["data"], np.stack(expected[:2]).astype(np.float32))
    np.testing.assert_array_equal(second["data"], np.stack(expected[2:]).astype(np.float32))
    assert first["label"].tolist() == [3, 1] and second["label"].tolist() == [7, 3]  # wraps around


def test_grey_reading_uses_the_luma_of_bgr(pictures, tmp_path):
    folder, pixels = pictures
    Image.fromarray(pixels["dog.png"][..., 0]).save(folder / "grey.png")
    (tmp_path / "list.txt").write_text(f"{folder}/dog.png 0\n{folder}/grey.png 0\n")
    net = image_net(tmp_path / "list.txt", batch_size=2, is_color=False)
    out = net.forward()["data"]
    assert out.shape == (2, 1, 6, 8)
    r, g, b = (pixels["dog.png"][..., i].astype(np.float64) for i in range(3))
    assert np.abs(out[0, 0] - (0.299 * r + 0.587 * g + 0.114 * b)).max() <= 0.5 + 1e-9
    np.testing.assert_array_equal(out[1, 0], pixels["dog.png"][..., 0])  # a grey file: as it is


def test_new_size_is_opencv_bilinear(pictures, tmp_path):
    folder, pixels = pictures
    (tmp_path / "list.txt").write_text(f"{folder}/bird.png 0\n")
    for height, width in ((3, 4), (11, 5), (6, 8)):
        out = image_net(tmp_path / "list.txt", new_height=height, new_width=width).forward()["data"][0]
        reference = bilinear_reference(bgr(pixels["bird.png"]), height, width)
        assert out.shape == (3, height, width)
        assert np.abs(out - reference).max() <= 1.0
    halved = resize_linear(bgr(pixels["bird.png"]).astype(np.uint8), 3, 4).astype(np.int64)
    blocks = bgr(pixels["bird.png"]).astype(np.int64).reshape(3, 3, 2, 4, 2).sum(axis=(2, 4))
    np.testing.assert_array_equal(halved, (blocks + 2) >> 2)  # OpenCV's rounded 2x2 mean


def test_shuffle_is_seeded_crop_is_centred_in_test_and_state_resumes(pictures, tmp_path):
    folder, pixels = pictures
    names = ["cat one.png", "dog.png", "bird.png"]
    (tmp_path / "list.txt").write_text("".join(f"{folder}/{name} {i}\n" for i, name in enumerate(names)))
    test = image_net(tmp_path / "list.txt", phase="TEST", batch_size=3, transform={"crop_size": 4})
    np.testing.assert_array_equal(test.forward()["data"], np.stack([bgr(pixels[n])[:, 1:5, 2:6] for n in names]))

    a, b = (image_net(tmp_path / "list.txt", seed=9, batch_size=2, shuffle=True) for _ in range(2))
    labels = [a.forward()["label"].tolist() for _ in range(3)]
    assert labels == [b.forward()["label"].tolist() for _ in range(3)]
    flat = sum(labels, [])
    assert sorted(flat[:3]) == [0, 1, 2] and sorted(flat[3:6]) == [0, 1, 2]  # each epoch whole
    state = a.state()
    later = [a.forward()["label"].tolist() for _ in range(4)]
    c = image_net(tmp_path / "list.txt", seed=9, batch_size=2, shuffle=True)
    c.set_state(state)
    assert later == [c.forward()["label"].tolist() for _ in range(4)]


def test_other_sized_images_need_crop_or_new_size(pictures, tmp_path):
    folder, pixels = pictures
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(folder / "big.png")
    (tmp_path / "list.txt").write_text(f"{folder}/dog.png 0\n{folder}/big.png 1\n")
    cropped = image_net(tmp_path / "list.txt", phase="TEST", batch_size=2, transform={"crop_size": 5}).forward()
    np.testing.assert_array_equal(cropped["data"][1], 0)
    np.testing.assert_array_equal(cropped["data"][0], bgr(pixels["dog.png"])[:, 0:5, 1:6])
    net = image_net(tmp_path / "list.txt", batch_size=2)
    with pytest.raises(DataError, match=r"list.txt:2: layer 'img': image '.*big.png' is \(9, 9\)"):
        net.forward()


def test_list_line_without_label_names_the_line(tmp_path):
    (tmp_path / "list.txt").write_text("a.png 0\nb.png\n")
    with pytest.raises(DataError) as info:
        image_net(tmp_path / "list.txt")
    assert str(info.value).startswith(f"{tmp_path / 'list.txt'}:2: layer 'img': expected 'path label'")


def test_missing_image_names_list_file_line_and_path(pictures, tmp_path):
    folder, _ = pictures
    (tmp_path / "list.txt").write_text(f"{folder}/dog.png 0\n{folder}/gone.png 1\n")
    net = image_net(tmp_path / "list.txt", batch_size=2)  # the first image is read at setup
    with pytest.raises(DataError) as info:
        net.forward()
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'list.txt'}:2: layer 'img': image '{folder}/gone.png': no such image file")
    assert "\n" not in message


def test_missing_list_file_and_half_a_new_size_are_one_line_config_errors(tmp_path):
    config = tmp_path / "net.yaml"
    config.write_text(
        textwrap.dedent("""\
        layers:
          - name: img
            type: ImageData
            top: [data, label]
            image_data_param: {source: none.txt, new_height: 4}
        """)
    )
    with pytest.raises(
        ConfigError,
        match=r"net.yaml:5: layer 'img': field 'image_data_param.new_height': give new_height and new_width",
    ):
        Net(config)
    config.write_text(config.read_text().replace(", new_height: 4", ""))
    with pytest.raises(
        DataError, match=r"net.yaml:2: layer 'img': field 'image_data_param.source': no such image list file 'none.txt'"
    ):
        Net(config)


def test_missing_pillow_names_the_extra(pictures, tmp_path, monkeypatch):
    folder, _ = pictures
    (tmp_path / "list.txt").write_text(f"{folder}/dog.png 0\n")
    monkeypatch.setitem(sys.modules, "PIL", None)  # import PIL now raises ImportError
    with pytest.raises(DataError) as info:
        image_net(tmp_path / "list.txt")
    assert "reading image files needs Pillow: pip install 'netlayers[image]'" in str(info.value)


def test_a_dropped_net_stops_its_prefetch_thread(pictures, tmp_path):
    folder, _ = pictures
    (tmp_path / "list.txt").write_text("cat one.png 0\ndog.png 1\nbird.png 2\n")
    source = tmp_path / "list.txt"
    assert the_thread_ends_with_its_net(lambda: image_net(source, root_folder=f"{folder}/", batch_size=2))
