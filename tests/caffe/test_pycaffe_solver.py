"""pycaffe's solvers over netlayers' Solver (netlayers/caffe/solver.py), and a Python loss layer
written as pycaffe's examples/pycaffe/layers/pyloss.py is (setup/reshape/forward/backward on
``caffe.Layer``) training in a net."""

import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from netlayers import ConfigError, caffe

PYLOSS = """\
import numpy as np
from netlayers import caffe


class EuclideanLossLayer(caffe.Layer):
    \"\"\"loss = sum((a - b)^2) / (2 N), written as for pycaffe.\"\"\"

    def setup(self, bottom, top):
        if len(bottom) != 2:
            raise Exception("Need two inputs to compute distance.")

    def reshape(self, bottom, top):
        if bottom[0].count != bottom[1].count:
            raise Exception("Inputs must have the same dimension.")
        self.diff = np.zeros_like(bottom[0].data, dtype=np.float32)
        top[0].reshape(1)

    def forward(self, bottom, top):
        self.diff[...] = bottom[0].data - bottom[1].data
        top[0].data[...] = np.sum(self.diff ** 2) / bottom[0].num / 2.0

    def backward(self, top, propagate_down, bottom):
        for i in range(2):
            if not propagate_down[i]:
                continue
            sign = 1 if i == 0 else -1
            bottom[i].diff[...] = sign * self.diff / bottom[i].num
"""

# a fixed random regression set (DummyData's refill: false keeps the first draw)
NET = """\
name: "regression"
layer {{ name: "data" type: "DummyData" top: "x" top: "y"
  dummy_data_param {{ shape {{ dim: 8 dim: 4 }} shape {{ dim: 8 dim: 2 }} refill: false
    data_filler {{ type: "gaussian" std: 1 }} data_filler {{ type: "gaussian" std: 1 }} }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "x" top: "pred"
  inner_product_param {{ num_output: 2 weight_filler {{ type: "xavier" }} }} }}
{loss}
"""
PYTHON_LOSS = """layer { name: "loss" type: "Python" bottom: "pred" bottom: "y" top: "loss"
  python_param { module: "pyloss_b12" layer: "EuclideanLossLayer" } loss_weight: 1 }"""
BUILT_IN_LOSS = """layer { name: "loss" type: "EuclideanLoss" bottom: "pred" bottom: "y" top: "loss" }"""

SOLVER = """\
train_net: "train.prototxt"
test_net: "test.prototxt"
test_iter: 2
test_interval: 1000
base_lr: 0.1
momentum: 0.9
lr_policy: "fixed"
max_iter: 6
snapshot_prefix: "snaps/reg"
random_seed: 5
{extra}
"""


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A folder with pyloss_b12.py, train/test nets and a solver file, as the current folder
    (Caffe's solver files name paths from there); Caffe's log lines silenced as pycaffe users do."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GLOG_minloglevel", "2")
    (tmp_path / "pyloss_b12.py").write_text(PYLOSS)
    (tmp_path / "train.prototxt").write_text(NET.format(loss=PYTHON_LOSS))
    (tmp_path / "test.prototxt").write_text(NET.format(loss=BUILT_IN_LOSS))
    write_solver(tmp_path)
    return tmp_path


def write_solver(folder, extra="", name="solver.prototxt"):
    (folder / name).write_text(SOLVER.format(extra=extra))
    return str(folder / name)


def weights(net):
    return {name: [blob.data.copy() for blob in blobs] for name, blobs in net.params.items()}


def test_a_pycaffe_python_loss_layer_trains_a_net(folder):
    solver = caffe.SGDSolver("solver.prototxt")
    first = solver.net.forward()["loss"].item()
    solver.step(6)
    last = solver.net.forward()["loss"].item()
    assert last < 0.75 * first
    # its gradient is the built-in EuclideanLoss's, on the same values
    built_in = caffe.Net("test.prototxt", caffe.TRAIN)
    built_in.share_with(solver.net)
    solver.net.forward()
    built_in.forward()
    for name in ("x", "y"):  # the same data (each DummyData drew its own)
        built_in.blobs[name].data[...] = solver.net.blobs[name].data
    built_in.forward(start="ip")
    for net in (solver.net, built_in):
        net.netlayers_net.clear_param_diffs()
        net.backward()
    np.testing.assert_allclose(built_in.blobs["pred"].diff, solver.net.blobs["pred"].diff, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(built_in.params["ip"][0].diff, solver.net.params["ip"][0].diff, rtol=1e-5, atol=1e-7)


def test_step_iter_net_and_test_nets(folder):
    solver = caffe.SGDSolver("solver.prototxt")
    assert solver.iter == 0 and len(solver.test_nets) == 1 and solver.type == "SGD"
    assert solver.net.netlayers_net.phase == "TRAIN" and solver.test_nets[0].netlayers_net.phase == "TEST"
    assert (
        solver.net.layer_dict["loss"].type == "Python"
        and solver.test_nets[0].layer_dict["loss"].type == "EuclideanLoss"
    )
    before = weights(solver.net)
    solver.step(2)
    assert solver.iter == 2
    assert not np.array_equal(before["ip"][0], solver.net.params["ip"][0].data)
    # the test net sees the trained weights (shared, not copied), as the pycaffe notebook reads them
    assert solver.test_nets[0].params["ip"][0] is solver.net.params["ip"][0]
    loss = solver.test_nets[0].forward()["loss"]
    assert np.isfinite(loss)
    assert solver.net.blobs["loss"].data.item() > 0  # the training loss of the last step, in its blob


def test_solve_snapshot_and_restore_continue_bit_for_bit(folder):
    straight = caffe.SGDSolver("solver.prototxt")
    straight.solve()
    assert straight.iter == 6 and (folder / "snaps" / "reg_iter_6.solverstate.npz").exists()
    end = weights(straight.net)

    halfway = caffe.SGDSolver("solver.prototxt")
    halfway.step(3)
    halfway.snapshot()
    assert (folder / "snaps" / "reg_iter_3.weights.npz").exists()

    resumed = caffe.SGDSolver("solver.prototxt")
    resumed.restore("snaps/reg_iter_3.solverstate.npz")
    assert resumed.iter == 3
    resumed.step(3)
    for name, arrays in end.items():
        for mine, theirs in zip(resumed.net.params[name], arrays):
            np.testing.assert_array_equal(mine.data, theirs)


def test_a_second_run_writes_over_the_first_runs_snapshots_as_caffe(folder):
    for _ in range(2):
        caffe.SGDSolver("solver.prototxt").solve()
    assert (folder / "snaps" / "reg_iter_6.weights.npz").exists()


def test_get_solver_takes_the_type_from_the_file_and_a_class_its_own(folder):
    path = write_solver(folder, 'type: "Adam"\nmomentum2: 0.999', name="adam.prototxt")
    solver = caffe.get_solver(path)
    assert isinstance(solver, caffe.AdamSolver) and solver.type == "Adam"
    solver.step(1)
    assert solver.iter == 1
    assert caffe.SGDSolver(path).type == "SGD"  # as pycaffe: the class decides the update rule
    nesterov = caffe.get_solver(write_solver(folder, 'type: "Nesterov"', name="nesterov.prototxt"))
    assert isinstance(nesterov, caffe.NesterovSolver)
    (folder / "plain.prototxt").write_text(SOLVER.format(extra="").replace("momentum: 0.9\n", ""))
    for cls in (caffe.AdaGradSolver, caffe.RMSPropSolver):
        assert cls("plain.prototxt").type == cls.__name__[: -len("Solver")]
    assert caffe.AdaDeltaSolver("solver.prototxt").type == "AdaDelta"


def test_one_net_file_gives_the_train_net_and_its_test_phase(folder):
    (folder / "both.prototxt").write_text(NET.format(loss=BUILT_IN_LOSS))
    (folder / "one.prototxt").write_text(
        SOLVER.format(extra="").replace(
            'train_net: "train.prototxt"\ntest_net: "test.prototxt"', 'net: "both.prototxt"'
        )
    )
    solver = caffe.SGDSolver("one.prototxt")
    solver.step(1)
    assert solver.test_nets[0].netlayers_net.phase == "TEST" and solver.iter == 1


def test_a_netlayers_yaml_config_works_as_a_solver_file(folder):
    (folder / "config.yaml").write_text(
        textwrap.dedent("""\
        layers:
          - {name: data, type: DummyData, top: [x, y], dummy_data_param: {shape: [{dim: [4, 3]}, {dim: [4, 1]}],
             data_filler: [{type: gaussian}], refill: false}}
          - {name: ip, type: InnerProduct, bottom: x, top: p, inner_product_param: {num_output: 1}}
          - {name: loss, type: EuclideanLoss, bottom: [p, y], top: loss}
        solver: {base_lr: 0.1, max_iter: 3, snapshot_prefix: yaml_run}
        """)
    )
    solver = caffe.get_solver("config.yaml")
    solver.solve()
    assert solver.iter == 3 and (folder / "yaml_run_iter_3.weights.npz").exists()
    with pytest.raises(ConfigError, match="use caffe.SGDSolver") as info:
        caffe.AdamSolver("config.yaml")
    assert "\n" not in str(info.value)


def test_solver_file_mistakes_are_one_line_errors_naming_the_file(folder):
    bad = folder / "bad.prototxt"
    bad.write_text(SOLVER.format(extra="base_lrr: 0.1"))
    with pytest.raises(ConfigError, match="bad.prototxt") as info:
        caffe.SGDSolver(str(bad))
    assert "base_lrr" in str(info.value) and "\n" not in str(info.value)
    (folder / "nonet.prototxt").write_text("base_lr: 0.1\nmax_iter: 2\n")
    with pytest.raises(ConfigError, match="train_net"):
        caffe.SGDSolver("nonet.prototxt")


def test_log_lines_go_to_stderr_unless_glog_is_silenced(folder, monkeypatch, capsys):
    monkeypatch.setenv("GLOG_minloglevel", "0")
    solver = caffe.SGDSolver(write_solver(folder, "display: 1", name="loud.prototxt"))
    solver.step(1)
    assert "Iteration 0" in capsys.readouterr().err


def test_every_blob_of_the_training_net_keeps_its_own_values_after_a_step(tmp_path, monkeypatch):
    """pycaffe scripts read the TRAIN net's blobs after a step (a training accuracy from the
    scores): as in Caffe, each holds its own values. (netlayers' Solver shares the inner blobs'
    memory: there LeNet's conv1 held conv2's values after a forward, and ip2 another blob's.)"""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GLOG_minloglevel", "2")
    config = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs" / "lenet_fashion_mnist.yaml").read_text())
    config["solver"]["test_initialization"] = False  # no test pass: the step alone
    (tmp_path / "lenet.yaml").write_text(yaml.safe_dump(config))
    solver = caffe.SGDSolver("lenet.yaml")
    solver.step(1)
    solver.net.forward()
    blobs, params = solver.net.blobs, solver.net.params
    conv1 = blobs["conv1"].data
    pooled = conv1.reshape(*conv1.shape[:2], conv1.shape[2] // 2, 2, conv1.shape[3] // 2, 2).max(axis=(3, 5))
    np.testing.assert_array_equal(blobs["pool1"].data, pooled)  # pool1 = max pool 2/2 of conv1
    ip1 = blobs["ip1"].data  # after its ReLU, in place
    scores = ip1 @ params["ip2"][0].data.T + params["ip2"][1].data
    np.testing.assert_allclose(blobs["ip2"].data, scores, rtol=1e-4, atol=1e-5)
    assert np.all(ip1 >= 0)
    solver.net.backward()  # the gradients too: ip2's diff is the softmax loss's
    probabilities = np.exp(scores - scores.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    probabilities[np.arange(len(scores)), blobs["label"].data.astype(int)] -= 1
    np.testing.assert_allclose(blobs["ip2"].diff, probabilities / len(scores), rtol=1e-4, atol=1e-6)
