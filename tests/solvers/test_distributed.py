"""Data-parallel training over MPI (netlayers/solvers/distributed.py), run for real with
``mpirun -n 2 --oversubscribe`` (Open MPI; CI installs openmpi-bin, libopenmpi-dev and mpi4py).

The MLP of configs/mlp_fashion_mnist.yaml trains on a small seeded NPZ data set: 2 ranks with
batch B against one process with batch 2B from the same seed, shuffled, with momentum, weight
decay and tests."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from netlayers.data import BatchSampler
from netlayers.errors import ConfigError
from netlayers.solvers import Solver
from netlayers.solvers.distributed import launched_ranks, world_communicator

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("mpi_worker.py")
ITERATIONS = 40
BATCH = 16  # per rank; the single process takes 2 * BATCH


def write_data(path, items, seed):
    """An NPZ data set of 28x28 uint8 pictures whose label a fixed projection decides."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(items, 1, 28, 28), dtype=np.uint8)
    projection = np.random.default_rng(0).standard_normal((784, 10))
    label = np.argmax(data.reshape(items, -1).astype(np.float64) @ projection, axis=1)
    np.savez(path, data=data, label=label)


def mlp_config(folder, batch):
    """configs/mlp_fashion_mnist.yaml on the NPZ data sets, batch ``batch``, ITERATIONS iterations."""
    config = yaml.safe_load((ROOT / "configs" / "mlp_fashion_mnist.yaml").read_text())
    config.pop("labels_file", None)
    for layer in config["layers"][:2]:
        phase = layer["include"]["phase"]
        source = folder / f"{phase.lower()}.npz"
        if not source.exists():
            write_data(source, 320 if phase == "TRAIN" else 64, seed=len(phase))
        layer["data_param"].update(source=str(source), backend="NPZ", batch_size=batch if phase == "TRAIN" else 8)
    config["solver"].update(
        max_iter=ITERATIONS, display=1, average_loss=1, test_iter=[2], test_interval=20, snapshot=0, random_seed=5
    )
    path = folder / f"mlp_batch{batch}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def mpirun(*args, timeout=60):
    """Run ``mpirun -n 2 --oversubscribe ARGS`` (as root too) with one thread per rank."""
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", NETLAYERS_THREADS="1")
    command = ["mpirun", "-n", "2", "--oversubscribe", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


class LossRecorder:
    def __init__(self):
        self.losses = []

    def on_train(self, iteration, loss, smoothed_loss, lr, outputs, iters_per_sec):
        self.losses.append(loss)


def one_process(folder):
    """(weights, losses) of the single process with batch 2 * BATCH."""
    recorder = LossRecorder()
    solver = Solver(mlp_config(folder, 2 * BATCH), output_dir=folder / "single", reporter=recorder)
    solver.solve()
    return {k: v.copy() for k, v in solver.net.weight_arrays().items()}, recorder.losses


def max_difference(a, b):
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) for k in a)


def test_two_ranks_train_as_one_process_with_twice_the_batch(tmp_path):
    config = mlp_config(tmp_path, BATCH)
    mpirun(sys.executable, str(WORKER), str(config), str(tmp_path / "mpi"))
    ranks = [dict(np.load(tmp_path / "mpi" / f"rank{r}.npz")) for r in (0, 1)]
    assert max_difference(ranks[0], ranks[1]) == 0.0  # every rank applies the same update
    weights, losses = one_process(tmp_path)
    difference = max_difference(ranks[0], weights)
    print(f"max |w(2 ranks, batch {BATCH}) - w(1 process, batch {2 * BATCH})| = {difference:.3g}")
    assert difference < 1e-5  # float32 summation order only (measured: see the README)
    assert max_difference(weights, {k: v * 0 for k, v in weights.items()}) > 0.01  # it trained
    mpi_losses = json.loads((tmp_path / "mpi" / "losses.json").read_text())
    assert len(mpi_losses) == len(losses) == ITERATIONS + 1  # and Caffe's closing line
    np.testing.assert_allclose(mpi_losses, losses, rtol=1e-5)
    assert losses[-1] < losses[0]
    snapshots = sorted(p.name for p in (tmp_path / "mpi").iterdir())  # rank 0 alone wrote them
    prefix = "mlp_fashion_mnist_iter_40"
    assert snapshots == ["losses.json", f"{prefix}.solverstate.npz", f"{prefix}.weights.npz", "rank0.npz", "rank1.npz"]


def test_train_command_over_tcp_writes_once_and_matches_one_process(tmp_path):
    config = mlp_config(tmp_path, BATCH)
    output = tmp_path / "run"
    result = mpirun("--mca", "btl", "tcp,self", "train", "--config", str(config), "--output", str(output), "--quiet")
    assert result.stdout.count("iteration") <= 3 and "40" in result.stdout  # one summary, rank 0's
    weights = dict(np.load(output / "mlp_fashion_mnist_iter_40.weights.npz"))
    single, losses = one_process(tmp_path)
    assert max_difference(weights, single) < 1e-5
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    train_losses = [r["loss"] for r in records if r.get("phase", "train") == "train" and "loss" in r]
    assert len(train_losses) >= ITERATIONS  # written once, not once per rank
    assert len(train_losses) < 2 * ITERATIONS


def test_shards_are_disjoint_and_cover_each_batch_of_the_whole():
    whole = BatchSampler(10, 6, shuffle=True, seed=3)
    shards = [BatchSampler(10, 3, shuffle=True, seed=3) for _ in range(2)]
    for rank, sampler in enumerate(shards):
        sampler.shard(rank, 2)
    for _ in range(5):
        parts = [sampler.next() for sampler in shards]
        np.testing.assert_array_equal(np.concatenate(parts), whole.next())
        assert shards[0].state() == shards[1].state() == whole.state()


def test_launch_size_comes_from_the_mpi_launcher():
    assert launched_ranks({"OMPI_COMM_WORLD_SIZE": "4"}) == 4
    assert launched_ranks({"PMI_SIZE": "2"}) == 2
    assert launched_ranks({}) == 1


def test_a_launch_without_mpi4py_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import fails
    with pytest.raises(ConfigError, match=r"netlayers\[mpi\]"):
        world_communicator()
