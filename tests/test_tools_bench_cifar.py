"""tools/bench_cifar.py keeps working: its synthetic CIFAR-10 is what the NPZ Data layer reads,
configs/cifar10_quick.yaml builds Caffe's net and solver, the first-batch sameness check
catches a difference, and a tiny benchmark run (batch 4) times netlayers, and PyTorch's
DataLoader sides when torch is installed (it is in the ``bench`` extra, not in ``test``)."""

import math
import multiprocessing
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import bench_cifar  # noqa: E402
import bench_nets  # noqa: E402

from netlayers.data import read_npz  # noqa: E402


@pytest.fixture
def data_root(tmp_path):
    bench_cifar.write_synthetic_cifar10(tmp_path / "data", train=12, test=8, seed=3)
    return tmp_path / "data"


@pytest.fixture
def solver(data_root, tmp_path):
    solver = bench_cifar.build_solver(data_root, tmp_path / "run", batch=4)
    yield solver
    bench_cifar.close_solver(solver)


def test_the_synthetic_set_is_uint8_cifar_shaped_labelled_0_to_9_the_same_for_the_same_seed_and_learnable(tmp_path):
    first = bench_cifar.write_synthetic_cifar10(tmp_path / "a", train=50, test=20, seed=3)
    again = bench_cifar.write_synthetic_cifar10(tmp_path / "b", train=50, test=20, seed=3)
    for split, count in (("train", 50), ("test", 20)):
        images, labels = read_npz(first / f"{split}.npz")
        assert images.shape == (count, 3, 32, 32) and images.dtype == np.uint8
        assert labels.shape == (count,) and set(labels.tolist()) <= set(range(10))
        assert len(set(labels.tolist())) > 1 and images.std() > 10
        same_images, same_labels = read_npz(again / f"{split}.npz")
        assert np.array_equal(images, same_images) and np.array_equal(labels, same_labels)
    (train, train_labels), (test, test_labels) = (read_npz(first / f"{s}.npz") for s in ("train", "test"))
    for label in set(train_labels.tolist()) & set(test_labels.tolist()):  # one colour per class in both splits
        colour = train[train_labels == label].mean(axis=(0, 2, 3))
        np.testing.assert_allclose(test[test_labels == label].mean(axis=(0, 2, 3)), colour, atol=8)


def test_the_data_layer_reads_the_synthetic_set_in_file_order_minus_the_configs_channel_means(data_root, solver):
    images, labels = read_npz(data_root / "cifar10" / "train.npz")
    layer = solver.net.layers[0]
    assert layer.transformer.mean_value == pytest.approx([125.3, 123.0, 113.9]) and layer.transformer.scale == 1.0
    means = np.array([125.3, 123.0, 113.9], np.float32).reshape(3, 1, 1)
    for batch in range(4):  # 12 images, batches of 4: the third wraps around to the start
        solver.net.forward()
        index = np.arange(4 * batch, 4 * batch + 4) % 12
        data, label = solver.net.blobs["data"].data, solver.net.blobs["label"].data
        assert data.shape == (4, 3, 32, 32) and data.dtype == np.float32
        np.testing.assert_allclose(data, images[index].astype(np.float32) - means, rtol=0, atol=1e-4)
        assert np.array_equal(label, labels[index].astype(np.float32))


def test_the_config_builds_caffes_cifar10_quick_net_and_solver_and_trains(solver):
    p = solver.param
    assert (p.type, p.base_lr, p.momentum, p.weight_decay, p.lr_policy) == ("SGD", 0.001, 0.9, 0.004, "fixed")
    assert (p.max_iter, p.test_iter, p.test_interval, p.snapshot) == (4000, [100], 0, 0)  # tests/snapshots off
    shapes = {name: solver.net.blobs[name].data.shape for name in ("conv1", "pool1", "pool2", "pool3", "ip1", "ip2")}
    assert shapes == {  # Caffe's rounding-up pooling: 32 -> 16 -> 8 -> 4
        "conv1": (4, 32, 32, 32),
        "pool1": (4, 32, 16, 16),
        "pool2": (4, 32, 8, 8),
        "pool3": (4, 64, 4, 4),
        "ip1": (4, 64),
        "ip2": (4, 10),
    }
    assert solver.test_net is not None and "accuracy" in solver.test_net.outputs
    before = solver.net.params["conv3"][0].data.copy()
    solver.step(2)
    assert solver.iter == 2 and math.isfinite(solver.smoothed_loss)
    assert not np.array_equal(before, solver.net.params["conv3"][0].data)


def fake_side(net, scale=1.0):
    """A stand-in for a PyTorch side whose loss and gradients are netlayers' own (times ``scale``)."""
    tensors = {}

    def first_step(data, label):
        for name, blobs in net.params.items():
            for index, blob in enumerate(blobs):
                gradient = blob.diff.copy() * scale
                tensors[(name, index)] = SimpleNamespace(grad=SimpleNamespace(numpy=lambda g=gradient: g))
        return net.loss

    return SimpleNamespace(module=SimpleNamespace(param_of=tensors), first_step=first_step, batches=iter([(0, 0)]))


def test_the_first_batch_check_passes_equal_gradients_and_stops_on_a_different_one(solver):
    net = solver.net
    assert bench_cifar.check_first_batch(solver, [fake_side(net)]) == 0.0
    with pytest.raises(bench_nets.ComputationMismatch, match="gradient of layer"):
        bench_cifar.check_first_batch(solver, [fake_side(net, scale=1.1)])


def test_a_tiny_run_times_every_side_and_leaves_no_worker_process(data_root, tmp_path):
    torch = bench_nets.import_torch()
    sides = [(0, "batch"), (1, "item")]
    run = bench_cifar.run_benchmark(
        data_root, tmp_path / "run", rounds=2, iters=1, warmup=1, pause=0, threads=2, batch=4, torch_sides=sides
    )
    rates, worst = run.rates, run.worst_gradient
    lines = bench_cifar.report(run, SimpleNamespace(train=12, threads=2, rounds=2, iters=1))
    assert run.batch == 4
    assert list(run.phases)[:2] == ["clear diffs", "data layer"] and all(ms >= 0 for ms in run.phases.values())
    assert sum(run.phases.values()) > 0
    assert lines[-1].startswith("sum") and lines[-7].split() == ["netlayers", "phase", "ms/iter"]
    assert all(len(r) == 2 and all(math.isfinite(v) and v > 0 for v in r) for r in rates.values())
    assert lines[0].startswith("cifar10_quick training (configs/cifar10_quick.yaml), batch 4,")
    if torch is None:  # CI installs the test extra only: netlayers alone, and the report says so
        assert list(rates) == ["netlayers, Data layer"] and worst is None
        assert lines[-8] == "PyTorch: not installed (skipped)"
    else:
        names = ["netlayers, Data layer", "PyTorch, DataLoader batch, workers 0", "PyTorch, DataLoader item, workers 1"]
        assert list(rates) == names
        assert 0 <= worst <= bench_nets.GRADIENT_TOLERANCE and lines[1].startswith("first batch: losses equal")
        assert [line.split()[0] for line in lines[-10:-7]] == ["netlayers,", "PyTorch,", "PyTorch,"]
    assert multiprocessing.active_children() == []
