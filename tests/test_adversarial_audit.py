"""A second adversarial audit of issue 9: each test is a misuse or a hostile input that once
broke netlayers (a traceback, a wrong answer, a hang), and now gets a one-line netlayers error
or the right result."""

import os
import signal

import numpy as np
import pytest

from netlayers import Net
from netlayers.errors import ConfigError, DataError, NetlayersError
from netlayers.netspec.yaml_lines import load_yaml_file, load_yaml_text

MLP = {
    "name": "mlp",
    "layers": [
        {"name": "in", "type": "Input", "top": ["x", "y"], "input_param": {"shape": [{"dim": [4, 5]}, {"dim": [4]}]}},
        {"name": "ip", "type": "InnerProduct", "bottom": "x", "top": "h", "inner_product_param": {"num_output": 3}},
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["h", "y"], "top": "loss"},
    ],
}


def one_line(err):
    text = str(err)
    assert "\n" not in text
    return text


def test_a_forward_refused_for_its_input_shape_is_refused_again_not_a_traceback():
    # InnerProduct cached the refused shape as checked: the next forward crashed in np.reshape.
    net = Net(MLP)
    for _ in range(2):
        with pytest.raises(ConfigError, match="features per item") as info:
            net.forward(x=np.ones(5))
        one_line(info.value)
        with pytest.raises(ConfigError, match="features per item"):
            net.forward()
    loss = net.forward(x=np.ones((4, 5)), y=np.zeros(4))["loss"]  # a good shape still works
    assert np.isfinite(loss)


def test_net_save_to_a_folder_or_an_unwritable_place_is_a_data_error(tmp_path, monkeypatch):
    net = Net(MLP)
    with pytest.raises(DataError, match="is a folder") as info:
        net.save(tmp_path)
    assert one_line(info.value).startswith(str(tmp_path))
    with pytest.raises(DataError, match="is a folder"):
        net.save("")
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(DataError, match="cannot write the weights: No space left on device"):
        net.save(tmp_path / "w.npz")
    assert not list(tmp_path.iterdir())  # no temporary file left behind


def test_yaml_merge_keys_may_override_what_they_merge_but_a_key_written_twice_is_refused():
    text = "base: &b {type: ReLU, name: a}\nlayer: {<<: *b, name: b}\n"
    loaded = load_yaml_text(text)
    assert loaded["layer"] == {"type": "ReLU", "name": "b"}
    with pytest.raises(ConfigError, match="duplicate key 'name'") as info:
        load_yaml_text("base: &b {type: ReLU}\nlayer: {<<: *b, name: b, name: c}\n")
    assert info.value.line == 2


@pytest.mark.parametrize("character", ["\x00", "\x07", "\x1b"])
def test_a_control_character_in_yaml_is_one_line_with_its_line(character):
    with pytest.raises(ConfigError) as info:
        load_yaml_text(f"name: x\nlayers:\n  - {{name: a{character}b}}\n", "net.yaml")
    text = one_line(info.value)
    assert text.startswith("net.yaml:3: malformed YAML: the character")
    assert f"\\x{ord(character):02x}" in text


def test_a_config_that_is_a_fifo_a_device_or_a_nul_name_is_refused_without_reading(tmp_path):
    fifo = tmp_path / "net.yaml"
    os.mkfifo(fifo)  # reading it would block for ever: a regression fails by the alarm, not a hang

    def give_up(signum, frame):
        raise TimeoutError("the config loader blocked on a FIFO or a device")

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(10)
    try:
        for path, reason in [(fifo, "not a regular file"), ("/dev/zero", "not a regular file"), (tmp_path, "a folder")]:
            with pytest.raises(ConfigError, match=reason) as info:
                load_yaml_file(path)
            assert one_line(info.value).startswith(str(path))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    with pytest.raises(ConfigError, match="NUL") as info:
        Net("net\x00.yaml")
    one_line(info.value)


def test_a_nul_in_snapshot_prefix_is_a_config_error_before_training(tmp_path):
    from netlayers import Solver

    config = {
        **{k: v for k, v in MLP.items() if k != "layers"},
        "layers": [
            {
                "name": "in",
                "type": "DummyData",
                "top": ["x", "y"],
                "dummy_data_param": {"shape": [{"dim": [4, 5]}, {"dim": [4]}]},
            },
            *MLP["layers"][1:],
        ],
        "solver": {"base_lr": 0.1, "max_iter": 2, "snapshot_prefix": "a\x00b"},
    }
    with pytest.raises(NetlayersError, match="NUL") as info:
        Solver(config, output_dir=tmp_path).solve()
    assert "snapshot_prefix" in one_line(info.value)
    assert not list(tmp_path.iterdir())


def test_an_npz_whose_compression_method_is_garbage_is_a_damaged_file(tmp_path):
    # zipfile raises NotImplementedError for it: that was a traceback ("internal error")
    net = Net(MLP)
    path = tmp_path / "w.npz"
    net.save(path)
    data = bytearray(path.read_bytes())
    entry = data.index(b"PK\x01\x02")  # the first member's central directory entry
    data[entry + 10 : entry + 12] = (99).to_bytes(2, "little")  # its compression method
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="damaged") as info:
        net.load(path)
    assert one_line(info.value).startswith(str(path))


@pytest.mark.parametrize("iters", [-1, 1.5, "3", None, True])
def test_solver_step_takes_a_whole_number_of_iterations(tmp_path, iters):
    from netlayers import Solver

    config = {
        "name": "s",
        "layers": [
            {
                "name": "in",
                "type": "DummyData",
                "top": ["x", "y"],
                "dummy_data_param": {"shape": [{"dim": [4, 5]}, {"dim": [4]}]},
            },
            *MLP["layers"][1:],
        ],
        "solver": {"base_lr": 0.1, "max_iter": 2},
    }
    solver = Solver(config, output_dir=tmp_path)
    with pytest.raises(ConfigError, match="step takes a whole number of iterations"):
        solver.step(iters)
    solver.step(0)  # nothing to do is no mistake
    assert solver.iter == 0


def test_a_python_layer_exception_whose_message_fails_is_still_one_line(tmp_path, monkeypatch):
    (tmp_path / "sulky_layer.py").write_text(
        "import netlayers\n"
        "class Sulk(Exception):\n"
        "    def __str__(self):\n"
        "        raise RuntimeError('no message for you')\n"
        "class Sulky(netlayers.Layer):\n"
        "    def reshape(self, bottom, top):\n"
        "        top[0].reshape(*bottom[0].data.shape)\n"
        "    def forward(self, bottom, top):\n"
        "        raise Sulk()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    config = {
        "name": "p",
        "layers": [
            {"name": "in", "type": "Input", "top": "x", "input_param": {"shape": [{"dim": [2, 3]}]}},
            {
                "name": "py",
                "type": "Python",
                "bottom": "x",
                "top": "y",
                "python_param": {"module": "sulky_layer", "layer": "Sulky"},
            },
        ],
    }
    net = Net(config)
    with pytest.raises(NetlayersError, match="Sulk: \\(its message cannot be shown") as info:
        net.forward()
    assert "sulky_layer.py:9" in one_line(info.value)
