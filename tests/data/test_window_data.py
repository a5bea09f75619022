"""WindowData against a tiny R-CNN window file and pictures made here, the geometry worked
out by hand from Caffe's window_data_layer.cpp."""

import numpy as np
import pytest
from layer_harness import the_thread_ends_with_its_net
from PIL import Image

from netlayers import DataError, Net

from .test_image_data import bilinear_reference


@pytest.fixture
def scene(tmp_path):
    """A 10 x 12 picture and its BGR pixels (3, H, W)."""
    rgb = np.random.default_rng(2).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "scene.png")
    return rgb.transpose(2, 0, 1)[::-1].astype(np.float64)


def window_file(tmp_path, windows, image="scene.png", header="3\n10\n12"):
    text = f"# 0\n{image}\n{header}\n{len(windows)}\n" + "".join(f"{w}\n" for w in windows)
    (tmp_path / "windows.txt").write_text(text)
    return tmp_path / "windows.txt"


def window_net(source, seed=0, transform=None, **param):
    layer = {
        "name": "win",
        "type": "WindowData",
        "top": ["data", "label"],
        "window_data_param": {"source": str(source), **param},
        "transform_param": transform or {},
    }
    return Net({"name": "n", "layers": [layer]}, "TRAIN", seed=seed)


def test_background_then_foreground_windows_cut_scaled_minus_mean(scene, tmp_path):
    # fg: class 2, overlap 0.7, a 4 x 4 box at x 3..6, y 2..5; bg: overlap 0.1 (class forced to 0)
    source = window_file(tmp_path, ["2 0.7 3 2 6 5", "5 0.1 0 0 3 3", "1 0.45 0 0 11 9"])
    net = window_net(  # bg_threshold 0.3: the window of overlap 0.45 is neither, never drawn
        source,
        batch_size=4,
        fg_fraction=0.5,
        scale=0.5,
        bg_threshold=0.3,
        transform={"crop_size": 4, "mean_value": [1, 2, 3]},
    )
    out = net.forward()
    assert out["label"].tolist() == [0, 0, 2, 2]  # batch_size - int(4 * 0.5) background first
    mean = np.array([1, 2, 3]).reshape(3, 1, 1)
    np.testing.assert_array_equal(out["data"][0], ((scene[:, 0:4, 0:4] - mean) * 0.5).astype(np.float32))
    np.testing.assert_array_equal(out["data"][2], ((scene[:, 2:6, 3:7] - mean) * 0.5).astype(np.float32))


def test_context_pad_at_the_corner_leaves_zero_padding(scene, tmp_path):
    source = window_file(tmp_path, ["1 1.0 0 0 3 3", "0 0.0 4 4 7 7"])
    out = window_net(
        source, batch_size=1, fg_fraction=1, context_pad=2, transform={"crop_size": 8, "mean_value": [50]}
    ).forward()
    # Caffe: scale 8/(8-4) = 2 about the centre (2, 2): x1 = y1 = -2, x2 = y2 = 6 (9 pixels);
    # cut at 0: 7 pixels kept, warped to round(7 * 8/9) = 6, after round(2 * 8/9) = 2 of padding.
    data = out["data"][0]
    assert np.all(data[:, :2, :] == 0) and np.all(data[:, :, :2] == 0)  # padding: 0, not -mean
    assert np.abs(data[:, 2:8, 2:8] + 50 - bilinear_reference(scene[:, 0:7, 0:7], 6, 6)).max() <= 1


def test_square_mode_cuts_the_square_about_the_centre(scene, tmp_path):
    # a 2 wide, 4 tall box at x 4..5, y 2..5: made square, 5 x 5 pixels x 3..7, y 2..6 (C round)
    source = window_file(tmp_path, ["1 1.0 4 2 5 5", "0 0.0 0 0 2 2"])
    out = window_net(source, batch_size=1, fg_fraction=1, crop_mode="square", transform={"crop_size": 5}).forward()
    np.testing.assert_array_equal(out["data"][0], scene[:, 2:7, 3:8])


def test_mirror_flips_whole_windows_seeded_and_resumes(scene, tmp_path):
    source = window_file(tmp_path, ["1 1.0 3 2 6 5", "0 0.0 0 0 3 3"])
    args = dict(batch_size=2, fg_fraction=0.5, transform={"crop_size": 4, "mirror": True})
    a, b = window_net(source, seed=1, **args), window_net(source, seed=1, **args)
    batches = [a.forward()["data"].copy() for _ in range(8)]
    for batch in batches:
        assert [b.forward()["data"].tolist()] == [batch.tolist()]
    fg = scene[:, 2:6, 3:7]
    flipped = [np.array_equal(batch[1], fg[:, :, ::-1]) for batch in batches]
    assert all(f or np.array_equal(batch[1], fg) for f, batch in zip(flipped, batches))
    assert any(flipped) and not all(flipped)
    state = a.state()
    later = [a.forward()["data"].copy() for _ in range(3)]
    c = window_net(source, seed=1, **args)
    c.set_state(state)
    for batch in later:
        np.testing.assert_array_equal(c.forward()["data"], batch)


def test_cached_images_give_the_same_batches(scene, tmp_path):
    source = window_file(tmp_path, ["1 1.0 3 2 6 5", "0 0.0 0 0 3 3"])
    plain = window_net(source, batch_size=4, transform={"crop_size": 3, "mirror": True}).forward()["data"].copy()
    cached = window_net(source, batch_size=4, cache_images=True, transform={"crop_size": 3, "mirror": True})
    np.testing.assert_array_equal(cached.forward()["data"], plain)


def test_missing_image_and_bad_lines_name_the_window_file_line(scene, tmp_path):
    source = window_file(tmp_path, ["1 1.0 3 2 6 5"], image="gone.png")
    with pytest.raises(DataError) as info:
        window_net(source, batch_size=1, fg_fraction=1, transform={"crop_size": 3})
    assert str(info.value).startswith(f"{source}:2: layer 'win': no such image file 'gone.png'")
    source = window_file(tmp_path, ["1 1.0 3 2 6 50"])
    with pytest.raises(DataError, match=r"windows.txt:7: layer 'win': window \(3, 2, 6, 50\) is not inside"):
        window_net(source, batch_size=1, fg_fraction=1, transform={"crop_size": 3})
    source.write_text("0\nscene.png\n")
    with pytest.raises(DataError, match=r"windows.txt:1: layer 'win': expected '#', got '0'"):
        window_net(source, batch_size=1, transform={"crop_size": 3})


def test_no_background_windows_for_background_draws_is_one_line(scene, tmp_path):
    source = window_file(tmp_path, ["1 1.0 3 2 6 5"])
    with pytest.raises(DataError, match=r"has no background windows \(overlap < bg_threshold 0.5\)"):
        window_net(source, batch_size=4, transform={"crop_size": 3})


def test_ranks_draw_their_own_windows_and_keep_the_position(scene, tmp_path):
    """Data-parallel training: each rank's batch n comes from (seed, n, rank); one rank alone is
    the unsharded layer; the batch count goes on from where it was."""
    source = window_file(tmp_path, ["1 1.0 3 2 6 5", "1 0.9 2 1 7 6", "0 0.0 0 0 3 3", "0 0.1 1 1 4 4"])
    args = dict(batch_size=4, fg_fraction=0.5, transform={"crop_size": 3, "mirror": True})
    plain, alone, first, second = (window_net(source, seed=3, **args) for _ in range(4))
    plain_batches = [plain.forward()["data"].copy() for _ in range(4)]
    alone.forward()
    for net, rank in ((alone, 0), (first, 0), (second, 1)):
        net.forward() if net is not alone else None
        net.layer("win").shard(rank, 1 if net is alone else 2)
    np.testing.assert_array_equal(alone.forward()["data"], plain_batches[1])  # one rank: unchanged
    a, b = first.forward()["data"], second.forward()["data"]
    assert not np.array_equal(a, b) and not np.array_equal(a, plain_batches[1])
    assert first.layer("win").state() == second.layer("win").state() == {"batch": 2}


def test_a_dropped_net_stops_its_prefetch_thread(scene, tmp_path):
    source = window_file(tmp_path, ["2 0.7 3 2 6 5", "5 0.1 0 0 3 3"])
    assert the_thread_ends_with_its_net(lambda: window_net(source, batch_size=2, transform={"crop_size": 4}))
