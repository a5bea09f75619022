"""``train --solver solver.prototxt``: Caffe's own solver and net files, as they are, training from
LMDB databases written as Caffe's convert_mnist_data writes them; and a solver's Caffe fields
(train_net / test_net, inline nets, train_state / test_state)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from netlayers.caffe.proto.caffe_pb2 import Datum
from netlayers.cli.main import main
from netlayers.data.idx import read_idx
from netlayers.solvers import Solver

ROOT = Path(__file__).resolve().parents[2]
CAFFE = ROOT / "tests" / "fixtures" / "caffe"
FASHION = Path("/usr/share/datasets/fashion-mnist")


def write_lmdb(path, images, labels):
    import lmdb

    env = lmdb.open(str(path), map_size=1 << 28)
    with env.begin(write=True) as txn:
        for i, (image, label) in enumerate(zip(images, labels)):
            datum = Datum()
            datum.channels, datum.height, datum.width = 1, *image.shape
            datum.data, datum.label = image.tobytes(), int(label)
            txn.put(f"{i:08d}".encode(), datum.SerializeToString())
    env.close()


def train_losses(folder):
    entries = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [(e["iter"], e["raw_loss"]) for e in entries if e["phase"] == "train"]


def test_caffes_lenet_solver_trains_as_the_yaml_config_does(tmp_path, monkeypatch):
    """Caffe's lenet_solver and LeNet prototxt, unchanged, run from their folder: the losses are
    those of configs/lenet_fashion_mnist.yaml (the same net on the IDX files), bit for bit."""
    count = 64 * 12
    write_lmdb(
        tmp_path / "fmnist_train_lmdb",
        read_idx(FASHION / "train-images-idx3-ubyte.gz")[:count],
        read_idx(FASHION / "train-labels-idx1-ubyte.gz")[:count],
    )
    write_lmdb(
        tmp_path / "fmnist_test_lmdb",
        read_idx(FASHION / "t10k-images-idx3-ubyte.gz")[:100],
        read_idx(FASHION / "t10k-labels-idx1-ubyte.gz")[:100],
    )
    for name in ("lenet_solver_fmnist.prototxt", "lenet_train_test_fmnist.prototxt"):
        shutil.copy(CAFFE / name, tmp_path)
    monkeypatch.chdir(tmp_path)
    common = ["--max-iter", "12", "--seed", "1", "--quiet"]
    assert main(["train", "--solver", "lenet_solver_fmnist.prototxt", "--output", "caffe_run", *common]) == 0
    yaml_config = str(ROOT / "configs" / "lenet_fashion_mnist.yaml")
    assert main(["train", "--config", yaml_config, "--output", "yaml_run", *common]) == 0
    # display 100 logs iteration 0 only: compare it and the snapshot's weights
    assert train_losses(tmp_path / "caffe_run") == train_losses(tmp_path / "yaml_run")
    ours = np.load(tmp_path / "caffe_run" / "lenet_fmnist_10000_iter_12.weights.npz")
    theirs = np.load(tmp_path / "yaml_run" / "lenet_fashion_mnist_iter_12.weights.npz")
    for key in ours.files:
        np.testing.assert_array_equal(ours[key], theirs[key])


def net_text(name, stage_layers=""):
    return (
        f'name: "{name}"\n'
        'layer { name: "data" type: "DummyData" top: "x" top: "y"\n'
        "  dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 }\n"
        '    data_filler { type: "gaussian" } data_filler { type: "constant" } } }\n'
        'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip" inner_product_param { num_output: 2 } }\n'
        f"{stage_layers}"
        'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "y" top: "loss" }\n'
    )


def test_train_net_test_net_and_states(tmp_path):
    staged = 'layer { name: "extra" type: "ReLU" bottom: "ip" top: "ip" include { stage: "train-extra" } }\n'
    (tmp_path / "train.prototxt").write_text(net_text("train", staged))
    (tmp_path / "test.prototxt").write_text(net_text("test", staged.replace("train-extra", "test-extra")))
    (tmp_path / "solver.prototxt").write_text(
        'train_net: "train.prototxt"\ntest_net: "test.prototxt"\ntest_iter: 1\ntest_interval: 5\n'
        'base_lr: 0.1\nmax_iter: 2\nlr_policy: "fixed"\n'
        'train_state { stage: "train-extra" }\ntest_state { stage: "test-extra" }\n'
    )
    solver = Solver(tmp_path / "solver.prototxt", output_dir=tmp_path)
    assert "extra" in solver.net.layer_names and "extra" in solver.test_net.layer_names
    assert solver.net.name == "train" and solver.test_net.name == "test"
    solver.solve()
    assert solver.iter == 2


def test_an_inline_net_param_and_mistakes(tmp_path, capsys):
    inline = net_text("inline").replace("\n", " ")
    (tmp_path / "solver.prototxt").write_text(f"net_param {{ {inline} }}\nbase_lr: 0.1\nmax_iter: 1\n")
    assert Solver(tmp_path / "solver.prototxt", output_dir=tmp_path).net.name == "inline"
    (tmp_path / "bad.prototxt").write_text('net: "a.prototxt"\ntrain_net: "b.prototxt"\nbase_lr: 0.1\nmax_iter: 1\n')
    from netlayers import ConfigError

    with pytest.raises(
        ConfigError, match="give one of net, net_param, train_net, train_net_param, not net too"
    ) as info:
        Solver(tmp_path / "bad.prototxt")
    assert info.value.line == 2
    (tmp_path / "none.prototxt").write_text("base_lr: 0.1\nmax_iter: 1\n")
    with pytest.raises(ConfigError, match="a solver file names its net"):
        Solver(tmp_path / "none.prototxt")
    (tmp_path / "net.prototxt").write_text(net_text("n"))
    assert main(["train", "--config", str(tmp_path / "net.prototxt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a Caffe net file holds no solver: train with its solver file" in err
