"""Snapshots: file names, contents, and resuming bit for bit."""

import errno
import json

import numpy as np
import pytest
from solver_nets import ALL_TYPES, Recorder, mlp_config, settings, tiny_config, weights, write_config

from netlayers import ConfigError, DataError, Net, TrainingError
from netlayers.io import load_arrays
from netlayers.solvers import Solver, base


def test_snapshot_files_names_and_contents(tmp_path):
    solver = Solver(
        mlp_config(snapshot=3, max_iter=7, momentum=0.9, snapshot_prefix="snaps/mlp"),
        output_dir=tmp_path,
        reporter=Recorder(),
    )
    solver.solve()
    names = sorted(p.name for p in (tmp_path / "snaps").iterdir())
    assert names == [f"mlp_iter_{n}.{kind}.npz" for n in (3, 6, 7) for kind in ("solverstate", "weights")]
    weights_path, state_path = solver.snapshot_paths(7)
    assert weights_path == tmp_path / "snaps" / "mlp_iter_7.weights.npz"
    state = load_arrays(state_path)  # allow_pickle=False: nothing pickled
    assert int(state["iter"]) == 7 and str(state["type"]) == "SGD"
    assert str(state["weights_file"]) == "mlp_iter_7.weights.npz"
    assert sorted(k for k in state if k.startswith("history/")) == [f"history/{i}" for i in range(4)]
    net_state = json.loads(str(state["net_state"]))
    assert set(net_state) == {"rng", "layers"}
    for i, param in enumerate(solver.net.learnable_params):
        assert state[f"history/{i}"].shape == param.blob.shape
        np.testing.assert_array_equal(state[f"history/{i}"], solver.history[i][0])
    other = Net(mlp_config(), seed=99)
    other.load(weights_path)
    for a, b in zip(other.learnable_params, solver.net.learnable_params):
        np.testing.assert_array_equal(a.blob.data, b.blob.data)


def test_default_output_dir_is_the_config_folder(tmp_path):
    path = write_config(tmp_path, tiny_config(max_iter=2), "exp.yaml")
    solver = Solver(path, reporter=Recorder())
    assert solver.snapshot() == tmp_path.resolve() / "exp_iter_0.weights.npz"
    assert (tmp_path / "exp_iter_0.solverstate.npz").is_file()


def test_absolute_snapshot_prefix(tmp_path):
    solver = Solver(
        tiny_config(snapshot_prefix=str(tmp_path / "abs" / "p")), output_dir=tmp_path / "out", reporter=Recorder()
    )
    assert solver.snapshot() == tmp_path / "abs" / "p_iter_0.weights.npz"


@pytest.mark.parametrize("solver_type", ALL_TYPES)
def test_resume_is_bit_exact(tmp_path, solver_type):
    config = mlp_config(
        test=True,
        test_iter=2,
        test_interval=3,
        snapshot=4,
        max_iter=9,
        average_loss=3,
        display=2,
        **settings(solver_type),
    )
    straight = Solver(config, output_dir=tmp_path / "a", reporter=Recorder())
    straight.solve()

    first = Solver(config, output_dir=tmp_path / "b", max_iter=5, reporter=Recorder())
    first.solve()  # snapshots at 4 and at the end (5)
    resumed = Solver(config, output_dir=tmp_path / "b", reporter=Recorder())
    resumed.solve(resume=tmp_path / "b" / "mlp_iter_5.solverstate.npz")
    assert resumed.iter == straight.iter == 9
    for a, b in zip(weights(straight), weights(resumed)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(straight.history, resumed.history):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    assert resumed.smoothed_loss == straight.smoothed_loss


def test_resume_from_a_periodic_snapshot_and_from_the_weights_path(tmp_path):
    config = mlp_config(snapshot=3, max_iter=8, momentum=0.9)
    straight = Solver(config, output_dir=tmp_path / "a", reporter=Recorder())
    straight.solve()
    resumed = Solver(config, output_dir=tmp_path / "b", reporter=Recorder())
    resumed.restore(tmp_path / "a" / "mlp_iter_3.weights.npz")  # finds the .solverstate.npz
    assert resumed.iter == 3
    resumed.solve()
    for a, b in zip(weights(straight), weights(resumed)):
        np.testing.assert_array_equal(a, b)


def test_restore_checks_the_snapshot_belongs_to_the_net(tmp_path):
    Solver(mlp_config(momentum=0.9), output_dir=tmp_path, reporter=Recorder()).snapshot()
    state = tmp_path / "mlp_iter_0.solverstate.npz"
    with pytest.raises(ConfigError, match="holds history for 4 params; this net has 1") as info:
        Solver(tiny_config(), reporter=Recorder()).restore(state)
    assert str(state) in str(info.value)
    with pytest.raises(ConfigError, match="written by a SGD solver; this config trains with Adam"):
        Solver(mlp_config(type="Adam"), reporter=Recorder()).restore(state)
    wider = mlp_config()
    wider["layers"][1]["inner_product_param"]["num_output"] = 7
    with pytest.raises(ConfigError, match=r"history of param #0 \('ip1\[0\]'\) has shape \(6, 5\)"):
        Solver(wider, reporter=Recorder()).restore(state)
    with pytest.raises(DataError, match="file not found"):
        Solver(mlp_config(), reporter=Recorder()).restore(tmp_path / "missing.solverstate.npz")


def test_metrics_file_is_trimmed_on_resume(tmp_path):
    from netlayers.solvers import Reporter

    config = mlp_config(snapshot=4, max_iter=6, display=1)
    Solver(config, output_dir=tmp_path, reporter=Reporter(quiet=True)).solve()
    resumed = Solver(config, output_dir=tmp_path, max_iter=8, reporter=Reporter(quiet=True))
    resumed.solve(resume=tmp_path / "mlp_iter_4.solverstate.npz")
    iters = [json.loads(line)["iter"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert iters == [0, 1, 2, 3, 4, 5, 6, 7, 8]


def test_weights_field_starts_from_a_weights_file(tmp_path):
    source = Solver(mlp_config(max_iter=3), output_dir=tmp_path, reporter=Recorder())
    source.step(3)
    path = source.snapshot()
    config = mlp_config(random_seed=42, weights=[path.name])
    started = Solver(write_config(tmp_path, config, "warm.yaml"), reporter=Recorder())
    for a, b in zip(weights(started), weights(source)):
        np.testing.assert_array_equal(a, b)


# -- folders that cannot be written, resuming past max_iter ------------------------------------------


@pytest.mark.parametrize(
    "prefix, reason",
    [
        ("blocker/s", "it is a file, not a folder"),
        ("blocker/deeper/s", "blocker is a file, not a folder"),
    ],
)
def test_snapshot_folder_that_cannot_be_made_is_an_error_before_training(tmp_path, prefix, reason):
    (tmp_path / "blocker").write_text("a file, not a folder")
    recorder = Recorder()
    solver = Solver(
        mlp_config(snapshot=2, max_iter=4, snapshot_prefix=str(tmp_path / prefix)),
        output_dir=tmp_path / "run",
        reporter=recorder,
    )
    folder = (tmp_path / prefix).parent
    with pytest.raises(ConfigError) as info:
        solver.solve()
    assert str(info.value).startswith(f"cannot write into the snapshot folder {folder}: ")
    assert str(info.value).endswith(reason)
    assert solver.iter == 0 and not recorder.of("on_iteration")
    assert (tmp_path / "blocker").read_text() == "a file, not a folder"


def test_output_dir_that_is_a_file_is_an_error_before_training(tmp_path):
    (tmp_path / "out").write_text("")
    solver = Solver(mlp_config(max_iter=2), output_dir=tmp_path / "out", reporter=Recorder())
    with pytest.raises(ConfigError, match="cannot write into the output folder .*out: it is a file"):
        solver.step(2)
    assert solver.iter == 0


def test_a_snapshot_that_cannot_be_written_is_a_training_error(tmp_path, monkeypatch):
    solver = Solver(mlp_config(snapshot=2, max_iter=6, momentum=0.9), output_dir=tmp_path, reporter=Recorder())
    solver.step(2)
    save = base.save_arrays

    def disk_full(path, arrays):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(base, "save_arrays", disk_full)
    with pytest.raises(TrainingError) as info:
        solver.step(2)
    state = tmp_path / "mlp_iter_4.solverstate.npz"
    good = tmp_path / "mlp_iter_2.solverstate.npz"
    assert str(info.value) == (
        f"cannot write the snapshot file {state}: No space left on device; last snapshot: {good} (iteration 2)"
    )
    monkeypatch.setattr(base, "save_arrays", save)
    resumed = Solver(mlp_config(snapshot=2, max_iter=6, momentum=0.9), reporter=Recorder())
    resumed.restore(good)  # the earlier snapshot is intact
    assert resumed.iter == 2


def test_resuming_beyond_max_iter_is_an_error(tmp_path):
    config = mlp_config(snapshot=5, max_iter=5)
    Solver(config, output_dir=tmp_path, reporter=Recorder()).solve()
    state = tmp_path / "mlp_iter_5.solverstate.npz"
    short = Solver(config, output_dir=tmp_path, max_iter=3, reporter=Recorder())
    with pytest.raises(ConfigError) as info:
        short.solve(resume=state)
    assert str(info.value) == (
        f"{state}: the solver is at iteration 5, beyond max_iter 3: nothing "
        "to train (raise max_iter, e.g. with --max-iter)"
    )


def test_resuming_at_max_iter_has_nothing_left_to_train(tmp_path):
    config = mlp_config(snapshot=5, max_iter=5)
    Solver(config, output_dir=tmp_path, reporter=Recorder()).solve()
    before = sorted(p.name for p in tmp_path.iterdir())
    recorder = Recorder()
    solver = Solver(config, output_dir=tmp_path, reporter=recorder)
    solver.solve(resume=tmp_path / "mlp_iter_5.solverstate.npz")
    assert solver.iter == 5 and solver.status == "done"
    assert not recorder.of("on_iteration") and not recorder.of("on_snapshot")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
