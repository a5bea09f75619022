"""Data layers under hostile input (issue 9): damaged or outdated snapshot states, data sets
without items, zero-size tops, unreadable data folders; and DummyData's integer labels."""

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from netlayers import ConfigError, DataError, Net, NetlayersError
from netlayers.solvers import Solver


def npz_set(path, n, features=3):
    np.savez(path, data=np.arange(n * features, dtype=np.float32).reshape(n, features), label=np.arange(n) % 3)
    return path


def data_layer(source, batch_size=4, **extra):
    return {
        "name": "data",
        "type": "Data",
        "top": ["x", "label"],
        "data_param": {"source": str(source), "backend": "NPZ", "batch_size": batch_size, **extra},
    }


def data_net(source, **extra):
    return Net({"name": "d", "layers": [data_layer(source, **extra)]}, "TRAIN", seed=1)


def one_line(err):
    text = str(err)
    assert "\n" not in text
    return text


# -- item 5: resuming with a data state that does not fit the data set ------------------------


def test_data_position_past_a_shrunk_data_set_is_one_line_naming_the_layer(tmp_path):
    path = npz_set(tmp_path / "set.npz", 10)
    net = data_net(path)
    first = net.forward()["label"].copy()
    with pytest.raises(DataError) as info:
        net.set_state({"rng": net.state()["rng"], "layers": {"data": {"epoch": 3, "position": 5000}}})
    assert one_line(info.value) == (
        f"layer 'data': snapshot's data position 5000 is past the 10 "
        f"items of {path}; the data set changed since the snapshot"
    )
    np.testing.assert_array_equal(first, [0, 1, 2, 0])
    np.testing.assert_array_equal(net.forward()["label"], [1, 2, 0, 1])  # still running, unmoved


@pytest.mark.parametrize(
    "state,message",
    [
        (None, "data state None is not of the form"),
        ({"epoch": 0}, "is not of the form"),
        ({"epoch": 0, "position": 1, "order": [0]}, "is not of the form"),
        ({"epoch": "0", "position": 1}, "data epoch '0' is not an integer >= 0"),
        ({"epoch": 0, "position": -4}, "data position -4 is not an integer >= 0"),
        ({"epoch": 0, "position": 1.5}, "data position 1.5 is not an integer >= 0"),
        ({"epoch": 0, "position": [1]}, r"data position \[1\] is not an integer >= 0"),
        ({"epoch": 0, "position": "x" * 500}, r"data position \(str of 502 characters\) is not"),
    ],
)
def test_damaged_data_states_are_refused(tmp_path, state, message):
    net = data_net(npz_set(tmp_path / "set.npz", 10), shuffle=True)
    with pytest.raises(DataError, match=message) as info:
        net.layer("data").set_state(state)
    assert one_line(info.value).startswith("layer 'data': snapshot's data ")


def test_resume_after_the_data_set_shrank(tmp_path):
    path = npz_set(tmp_path / "set.npz", 12)
    config = {
        "name": "r",
        "layers": [
            data_layer(path),
            {"name": "ip", "type": "InnerProduct", "bottom": "x", "top": "y", "inner_product_param": {"num_output": 3}},
            {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["y", "label"]},
        ],
        "solver": {"base_lr": 0.01, "max_iter": 2},
    }
    Solver(config, output_dir=tmp_path / "run", reporter=_Silent()).solve()
    state = tmp_path / "run" / "r_iter_2.solverstate.npz"
    assert state.is_file()
    npz_set(path, 5)
    os.utime(path, ns=(1, 1))  # a fresh stamp, whatever the clock's grain
    with pytest.raises(NetlayersError) as info:
        Solver(config, output_dir=tmp_path / "run", reporter=_Silent()).solve(resume=state)
    text = one_line(info.value)
    assert "layer 'data'" in text and "snapshot's data position 8 is past the 5 items of" in text
    assert state.is_file()  # nothing lost


class _Silent:
    """A reporter that ignores everything it is told."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


@pytest.mark.parametrize(
    "state,message",
    [
        ({"position": 2}, "is not {'position': p} with p a multiple of batch_size"),
        ({"position": "4"}, "is not {'position': p}"),
        ({"position": 8}, "snapshot's data position 8 is past the 8 items given"),
    ],
)
def test_memory_data_states_are_checked(state, message):
    net = Net(
        {
            "name": "m",
            "layers": [
                {
                    "name": "mem",
                    "type": "MemoryData",
                    "top": ["x", "y"],
                    "memory_data_param": {"batch_size": 4, "channels": 1, "height": 1, "width": 2},
                }
            ],
        },
        "TRAIN",
    )
    net.set_input_arrays(np.zeros((8, 1, 1, 2)), np.zeros(8))
    with pytest.raises(DataError, match=message) as info:
        net.layer("mem").set_state(state)
    assert one_line(info.value).startswith("layer 'mem': ")


# -- item 9: no zero-size tops, no empty data sets ------------------------------------------


def test_an_empty_npz_is_refused_at_set_up_naming_layer_and_file(tmp_path):
    path = tmp_path / "empty.npz"
    np.savez(path, data=np.zeros((0, 3), np.float32), label=np.zeros(0))
    with pytest.raises(DataError) as info:
        data_net(path)
    assert one_line(info.value) == (
        f"layer 'data': data file {path}: key 'data': holds no data "
        "(shape (0, 3)); expected at least one item, none of them empty"
    )


@pytest.mark.parametrize(
    "param",
    [
        {"num": [0], "channels": [1], "height": [2], "width": [2]},
        {"num": [2], "channels": [1], "height": [0], "width": [2]},
    ],
)
def test_dummy_data_legacy_dims_of_zero_are_refused(param):
    config = {"name": "z", "layers": [{"name": "d", "type": "DummyData", "top": "x", "dummy_data_param": param}]}
    with pytest.raises(ConfigError, match="layer 'd': .*(at least 1|>= 1)") as info:
        Net(config)
    one_line(info.value)


@pytest.mark.parametrize("kind,block", [("Input", "input_param"), ("DummyData", "dummy_data_param")])
def test_shape_dims_of_zero_are_refused(kind, block):
    config = {"name": "z", "layers": [{"name": "d", "type": kind, "top": "x", block: {"shape": [{"dim": [4, 0]}]}}]}
    with pytest.raises(ConfigError, match="layer 'd': .*(at least 1|>= 1)") as info:
        Net(config)
    one_line(info.value)


# -- item 6: an unreadable data root ------------------------------------------------------------


def test_an_unreadable_data_root_is_named_not_a_traceback(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    real = Path.is_file

    def is_file(path):
        if locked in path.parents:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(Path, "is_file", is_file)
    config = {"name": "d", "layers": [data_layer("sets/tiny.npz")]}
    with pytest.raises(DataError) as info:
        Net(config, "TRAIN", data_root=str(locked))
    text = one_line(info.value)
    assert "layer 'data': data source 'sets/tiny.npz' not found" in text
    assert f"could not look in: {locked / 'sets'}: permission denied" in text


# -- DummyData integer labels (the uniform_int filler) ----------------------------------------


def random_label_config(classes=5, batch=16):
    return {
        "name": "random_labels",
        "random_seed": 2,
        "layers": [
            {
                "name": "data",
                "type": "DummyData",
                "top": ["x", "label"],
                "dummy_data_param": {
                    "shape": [{"dim": [batch, 6]}, {"dim": [batch]}],
                    "data_filler": [{"type": "gaussian"}, {"type": "uniform_int", "min": 0, "max": classes - 1}],
                },
            },
            {
                "name": "ip",
                "type": "InnerProduct",
                "bottom": "x",
                "top": "score",
                "inner_product_param": {"num_output": classes, "weight_filler": {"type": "xavier"}},
            },
            {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["score", "label"], "top": "loss"},
        ],
        "solver": {"base_lr": 0.1, "max_iter": 5},
    }


def test_dummy_data_integer_labels_train_a_softmax_net(tmp_path):
    solver = Solver(random_label_config(), output_dir=tmp_path, reporter=_Silent())
    seen = []
    for _ in range(5):
        solver.step(1)
        seen.append(solver.net.blobs["label"].data.copy())
    labels = np.concatenate(seen)
    assert solver.iter == 5
    np.testing.assert_array_equal(labels, np.round(labels))
    assert labels.min() == 0 and labels.max() == 4  # both ends drawn
    assert len({tuple(batch) for batch in seen}) == 5  # a new draw every iteration
    assert np.isfinite(solver.net.blobs["loss"].data).all()


def test_uniform_int_labels_are_seeded():
    first = Net(random_label_config(), "TRAIN").forward()["loss"]
    again = Net(random_label_config(), "TRAIN").forward()["loss"]
    assert first == again


@pytest.mark.parametrize(
    "filler,message",
    [
        (
            {"min": 0.5, "max": 3},
            r"field 'dummy_data_param.data_filler\[0\].min': the uniform_int filler's "
            "min must be a whole number",
        ),
        ({"min": 0, "max": 2**30}, "filler's max must be a whole number from -2\\^24 to 2\\^24"),
        ({"min": 3, "max": 2}, "filler's min must not exceed max, got min 3 > max 2"),
    ],
)
def test_uniform_int_bounds_are_checked(filler, message):
    config = {
        "name": "u",
        "layers": [
            {
                "name": "d",
                "type": "DummyData",
                "top": "y",
                "dummy_data_param": {"shape": [{"dim": [4]}], "data_filler": {"type": "uniform_int", **filler}},
            }
        ],
    }
    with pytest.raises(NetlayersError, match=message) as info:
        Net(config)
    one_line(info.value)


def test_batches_too_large_for_memory_are_refused_before_prefetching(tmp_path, monkeypatch):
    from netlayers.memory import memory_limit

    monkeypatch.setenv("NETLAYERS_MEMORY_LIMIT", str(2**20))
    memory_limit.cache_clear()
    try:
        with pytest.raises(NetlayersError) as info:
            data_net(npz_set(tmp_path / "set.npz", 10), batch_size=20000)
    finally:
        monkeypatch.delenv("NETLAYERS_MEMORY_LIMIT")
        memory_limit.cache_clear()
    assert one_line(info.value) == (
        "layer 'data': field 'data_param.batch_size': batch_size 20000 (6 batches of shape "
        "(20000, 3), prefetched and in use) would need 0.00179 GiB, more than this machine's "
        "memory (0.000977 GiB)"
    )
