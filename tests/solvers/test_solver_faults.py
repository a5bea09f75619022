"""The solver under faults and misuse (issue 9): writes that fail, damaged solver states,
folders that cannot be looked into, runs that could not be saved, leftovers of killed
snapshots, reused output folders, file modes, ignored Caffe settings and debug_info."""

import errno
import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from solver_nets import Recorder, mlp_config, tiny_config, weights, write_config

import netlayers.io
from netlayers import ConfigError, DataError, Net, TrainingError
from netlayers.io import load_arrays, save_arrays
from netlayers.layers.data import MemoryData
from netlayers.solvers import Reporter, Solver, base, reporting


def one_line(err):
    text = str(err)
    assert "\n" not in text
    return text


# -- item 3: a write that fails while training ---------------------------------------------------


class FullDiskAt(Reporter):
    """A quiet Reporter whose metrics file's writes fail (ENOSPC) from ``iteration`` on."""

    def __init__(self, iteration):
        super().__init__(quiet=True)
        self.iteration = iteration

    def on_iteration(self, iteration):
        if iteration == self.iteration:

            def full(text):
                raise OSError(errno.ENOSPC, "No space left on device")

            self._file.write = full


def test_a_full_disk_while_logging_stops_with_a_snapshot_and_a_training_error(tmp_path):
    config = mlp_config(display=1, snapshot=3, max_iter=8, momentum=0.9)
    straight = Solver(config, output_dir=tmp_path / "a", reporter=Recorder())
    straight.solve()
    run = tmp_path / "b"
    solver = Solver(config, output_dir=run, reporter=FullDiskAt(4))
    with pytest.raises(TrainingError) as info:
        solver.solve()  # iteration 4's line fails: iteration 4 ends, then a snapshot
    stop = run / "mlp_iter_5.solverstate.npz"
    assert one_line(info.value) == (
        f"cannot write {run / 'metrics.jsonl'}: No space left on device; last snapshot: {stop} (iteration 5)"
    )
    assert solver.status == "failed" and solver.iter == 5
    assert [json.loads(line)["iter"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [0, 1, 2, 3]
    load_arrays(run / "mlp_iter_3.solverstate.npz")  # the earlier one intact
    resumed = Solver(config, output_dir=run, reporter=Recorder())
    resumed.solve(resume=stop)  # the stop snapshot resumes exactly
    for a, b in zip(weights(straight), weights(resumed)):
        np.testing.assert_array_equal(a, b)


def test_when_the_stop_snapshot_fails_too_the_last_good_one_is_named(tmp_path, monkeypatch):
    solver = Solver(mlp_config(display=1, snapshot=3, max_iter=8), output_dir=tmp_path, reporter=FullDiskAt(4))
    original = base.save_arrays

    def full_after_3(path, arrays):
        if "_iter_3." not in Path(path).name:
            raise OSError(errno.ENOSPC, "No space left on device")
        original(path, arrays)

    monkeypatch.setattr(base, "save_arrays", full_after_3)  # the solver state
    monkeypatch.setattr(netlayers.io, "save_arrays", full_after_3)  # the weights (Net.save)
    with pytest.raises(TrainingError) as info:
        solver.solve()
    good = tmp_path / "mlp_iter_3.solverstate.npz"
    assert one_line(info.value) == (
        f"cannot write {tmp_path / 'metrics.jsonl'}: No space left on device (the stop snapshot "
        f"could not be written either); last snapshot: {good} (iteration 3)"
    )
    restored = Solver(mlp_config(), reporter=Recorder())
    restored.restore(good)
    assert restored.iter == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "metrics.jsonl",
        "mlp_iter_3.solverstate.npz",
        "mlp_iter_3.weights.npz",
    ]


def test_a_metrics_file_that_cannot_be_opened_fails_before_training(tmp_path, monkeypatch):
    def denied(path, start_iter):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(reporting, "open_metrics", denied)
    solver = Solver(mlp_config(max_iter=4), output_dir=tmp_path, reporter=Reporter(quiet=True))
    with pytest.raises(TrainingError) as info:
        solver.solve()
    assert one_line(info.value) == (
        f"cannot write {tmp_path / 'metrics.jsonl'}: Permission denied; last snapshot: none"
    )
    assert solver.iter == 0 and list(tmp_path.iterdir()) == []


# -- item 5: every field of a solver state is checked ---------------------------------------------


def saved_state(tmp_path, config=None):
    """A good solver state (and its weights) of ``config`` (default: mlp with momentum)."""
    solver = Solver(
        config or mlp_config(momentum=0.9, test=True, test_iter=1), output_dir=tmp_path, reporter=Recorder()
    )
    solver.step(2)
    solver.snapshot()
    return tmp_path / "mlp_iter_2.solverstate.npz"


def damaged(state, **changes):
    """A copy of the state file ``state`` beside it with ``changes`` (None: leave the key out)."""
    arrays = load_arrays(state)
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = np.asarray(value)
    path = state.with_name("damaged.solverstate.npz")
    save_arrays(path, arrays)
    return path


RNG = json.dumps({"rng": np.random.default_rng(0).bit_generator.state, "layers": {}})


def test_a_history_that_overflowed_is_taken_back_as_it_was(tmp_path):
    """The update rule's history as training left it, inf (an accumulator of squared gradients
    that overflowed) or NaN: the resumed solver goes on from it, as the run that wrote it would
    have (found by tools/fuzz_graphs.py: an Adam run whose snapshot its own restore refused)."""
    overflowed = np.full(6, np.inf, np.float32)
    overflowed[0] = np.nan
    path = damaged(saved_state(tmp_path), **{"history/1": overflowed})
    solver = Solver(mlp_config(momentum=0.9, test=True, test_iter=1), output_dir=tmp_path / "r", reporter=Recorder())
    solver.restore(path)
    assert solver.iter == 2
    np.testing.assert_array_equal(solver.history[1][0].reshape(-1), overflowed)


@pytest.mark.parametrize(
    "changes, field, message",
    [
        ({"net_state": "{not json"}, "net_state", "is not valid JSON"),
        ({"net_state": "[" * 100_000}, "net_state", "is not valid JSON"),
        ({"net_state": "[1, 2]"}, "net_state", 'must be a JSON object {"rng": {...}, "layers": {...}}'),
        ({"net_state": '{"rng": {}, "layers": []}'}, "net_state", "must be a JSON object"),
        (
            {"net_state": '{"rng": {"bit_generator": "MT19937"}}'},
            "net_state",
            "its 'rng' is not a PCG64 generator state",
        ),
        ({"test_net_state": "nope"}, "test_net_state", "is not valid JSON"),
        ({"net_state": np.array([RNG, RNG])}, "net_state", "must be text, got an array of <U"),
        ({"iter": "abc"}, "iter", "must be one integer, got 'abc' (<U3)"),
        ({"iter": 2.5}, "iter", "must be one integer, got 2.5 (float64)"),
        ({"iter": True}, "iter", "must be one integer, got True (bool)"),
        ({"iter": np.array([2, 3])}, "iter", "must be one integer, got an array of int64 with shape (2,)"),
        ({"iter": np.int64(-1)}, "iter", "must not be negative, got -1"),
        ({"type": 5}, "type", "must be text, got 5 (int64)"),
        ({"weights_file": 5}, "weights_file", "must be the weights file's name (text)"),
        ({"history/0": np.zeros((6, 5), np.int32)}, "history/0", "must hold floats, got an array of int32"),
        ({"format_version": 99}, "format_version", "unknown version 99 (this netlayers reads version 1"),
        ({"format_version": "1"}, "format_version", "must be one integer, got '1' (<U1)"),
    ],
)
def test_a_damaged_field_is_one_line_naming_the_file_and_the_field(tmp_path, changes, field, message):
    path = damaged(saved_state(tmp_path), **changes)
    solver = Solver(mlp_config(momentum=0.9, test=True, test_iter=1), output_dir=tmp_path / "r", reporter=Recorder())
    with pytest.raises(ConfigError) as info:
        solver.solve(resume=path)
    assert one_line(info.value).startswith(f"{path}: field '{field}': {message}")
    assert solver.iter == 0


def test_a_history_name_that_does_not_fit_and_a_missing_version(tmp_path):
    state = saved_state(tmp_path)
    arrays = load_arrays(state)
    arrays["history/x"] = arrays.pop("history/3")
    path = tmp_path / "renamed.solverstate.npz"
    save_arrays(path, arrays)
    solver = Solver(mlp_config(momentum=0.9, test=True, test_iter=1), reporter=Recorder())
    with pytest.raises(
        ConfigError, match=re.escape(f"{path}: field 'history/x': unexpected name; expected history/0 to history/3")
    ):
        solver.restore(path)
    path = damaged(state, format_version=None)
    with pytest.raises(ConfigError, match=re.escape(f"{path}: not a netlayers solver state (no 'format_version')")):
        solver.restore(path)


def memory_config():
    return {
        "name": "mem",
        "layers": [
            {
                "name": "data",
                "type": "MemoryData",
                "top": ["x", "t"],
                "memory_data_param": {"batch_size": 1, "channels": 1, "height": 1, "width": 1},
            },
            {"name": "ip", "type": "InnerProduct", "bottom": "x", "top": "y", "inner_product_param": {"num_output": 2}},
            {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["y", "t"]},
        ],
        "solver": {"base_lr": 0.1, "max_iter": 4},
    }


def test_a_layer_that_refuses_its_saved_state_is_named_with_the_snapshot(tmp_path, monkeypatch):
    Solver(memory_config(), output_dir=tmp_path, reporter=Recorder()).snapshot()
    state = tmp_path / "mem_iter_0.solverstate.npz"
    net_state = json.loads(str(load_arrays(state)["net_state"]))
    assert net_state["layers"] == {"data": {"position": 0}}
    net_state["layers"]["data"] = {"place": 3}
    path = damaged(state, net_state=json.dumps(net_state))
    with pytest.raises(ConfigError) as info:
        Solver(memory_config(), reporter=Recorder()).restore(path)
    assert one_line(info.value).startswith(f"{path}: layer 'data': field 'net_state': ")

    def unexpected(layer, layer_state):  # a layer of one's own, reading a state it never wrote
        return int(layer_state["position"])

    monkeypatch.setattr(MemoryData, "set_state", unexpected)
    with pytest.raises(ConfigError) as info:
        Solver(memory_config(), reporter=Recorder()).restore(path)
    assert one_line(info.value) == (
        f"{path}: layer 'data': field 'net_state': holds a state this layer cannot take (KeyError: 'position')"
    )

    def shrunk(layer, layer_state):  # as a data layer refuses a position past its data
        raise DataError("position 8 is past the 5 items of the data set", file="set.npz")

    monkeypatch.setattr(MemoryData, "set_state", shrunk)
    with pytest.raises(ConfigError) as info:
        Solver(memory_config(), reporter=Recorder()).restore(state)
    assert one_line(info.value) == (
        f"{state}: layer 'data': field 'net_state': cannot be restored: "
        "set.npz: position 8 is past the 5 items of the data set"
    )


# -- item 6: an output folder below one that cannot be looked into ----------------------------------


def test_a_folder_that_cannot_be_looked_into_is_one_line(tmp_path, monkeypatch):
    """As root ignores permissions, the system's answers are simulated: looking into the
    parent raises PermissionError, as it does for another user's locked folder."""
    locked = tmp_path / "locked"

    def denied(original):
        def method(path, *args, **kwargs):
            if locked in (path, *path.parents):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return original(path, *args, **kwargs)

        return method

    for name in ("exists", "is_dir", "mkdir"):
        monkeypatch.setattr(Path, name, denied(getattr(Path, name)))
    with pytest.raises(ConfigError) as info:
        base.check_writable_folder(locked / "run", "output folder")
    assert one_line(info.value) == f"cannot write into the output folder {locked / 'run'}: Permission denied"
    solver = Solver(mlp_config(max_iter=2), output_dir=locked / "run", reporter=Recorder())
    with pytest.raises(ConfigError, match="^cannot write into the output folder .*: Permission denied$"):
        solver.solve()
    assert solver.iter == 0


# -- item 10: what cannot be saved is refused before training --------------------------------------


def test_a_layer_name_too_long_for_a_snapshot_is_refused_before_anything_runs(tmp_path):
    config = mlp_config(max_iter=3)
    name = "n" * 70_000
    config["layers"][1]["name"] = name
    path = write_config(tmp_path, config)
    with pytest.raises(ConfigError) as info:
        Solver(path, output_dir=tmp_path / "run", reporter=Recorder())
    text = one_line(info.value)
    assert text.startswith(f"{path}:") and len(text) < 400
    assert f"layer '{'n' * 57}...': field 'name': the name is 70,000 bytes long in UTF-8" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.yaml"]  # nothing written


def test_a_layer_state_that_is_not_json_is_refused_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(MemoryData, "state", lambda layer: {"position": {1, 2}})
    with pytest.raises(ConfigError, match="layer 'data': its state .* is not JSON-serialisable"):
        Solver(memory_config(), output_dir=tmp_path / "run", reporter=Recorder())
    assert list(tmp_path.iterdir()) == []


def test_snapshot_names_too_long_for_the_file_system_are_refused_before_iteration_0(tmp_path):
    recorder = Recorder()
    solver = Solver(mlp_config(max_iter=3, snapshot_prefix="p" * 240), output_dir=tmp_path / "run", reporter=recorder)
    with pytest.raises(ConfigError) as info:
        solver.solve()
    assert re.fullmatch(
        r"field 'solver\.snapshot_prefix': snapshot files such as p+\.\.\. \(259 bytes\) "
        r"cannot be created in .*run: File name too long",
        one_line(info.value),
    )
    assert not recorder.of("on_iteration") and list((tmp_path / "run").iterdir()) == []


# -- item 12: temporary files of killed snapshots -------------------------------------------------------


def test_leftovers_of_killed_snapshots_are_removed_and_nothing_else(tmp_path):
    ours = [
        ".mlp_iter_4.weights.npz.abcd_123.tmp",
        ".mlp_iter_4.solverstate.npz.zz00yy11.tmp",
        ".metrics.jsonl.q1w2e3r4.tmp",
    ]
    theirs = [
        ".mlp_iter_4.weights.npz.abc.tmp",
        "mlp_iter_4.weights.npz.abcd1234.tmp",
        ".other_iter_4.weights.npz.abcd1234.tmp",
        ".mlp_iter_x.weights.npz.abcd1234.tmp",
        ".mlp_iter_4.weights.npz.ABCD1234.tmp",
        "notes.tmp",
        ".mlp_iter_4.weights.npz.abcd1234.tmp.bak",
    ]
    for name in ours + theirs:
        (tmp_path / name).write_text("kept?")
    (tmp_path / ".mlp_iter_8.weights.npz.abcd1234.tmp").mkdir()  # a folder: never ours
    recorder = Recorder()
    Solver(mlp_config(max_iter=2), output_dir=tmp_path, reporter=recorder).solve()
    left = {p.name for p in tmp_path.iterdir()}
    assert not left & set(ours)
    assert set(theirs) | {".mlp_iter_8.weights.npz.abcd1234.tmp"} <= left
    lines = [args[0] for args in recorder.of("on_message") if "temporary" in args[0]]
    assert len(lines) == 1
    assert lines[0].startswith(f"Removed 3 temporary file(s) left by an interrupted snapshot from {tmp_path} (")


# -- reused output folders ------------------------------------------------------------------------------


def test_a_fresh_run_refuses_a_folder_holding_an_earlier_run(tmp_path):
    config = mlp_config(snapshot=3, max_iter=6, display=1)
    Solver(config, output_dir=tmp_path, reporter=Reporter(quiet=True)).solve()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    again = Solver(config, output_dir=tmp_path, reporter=Reporter(quiet=True))
    with pytest.raises(ConfigError) as info:
        again.solve()
    assert one_line(info.value) == (
        f"{tmp_path}: already holds an earlier run (mlp_iter_3.solverstate.npz, mlp_iter_3.weights.npz "
        f"and 3 more): train into another folder (--output), continue it (--resume "
        f"{tmp_path / 'mlp_iter_6.solverstate.npz'}), or replace it (--overwrite)"
    )
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # untouched
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "metrics.jsonl").write_text("")
    with pytest.raises(ConfigError, match=r"already holds an earlier run \(metrics\.jsonl\): .*--output\), or "):
        Solver(config, output_dir=tmp_path / "other", reporter=Recorder()).check_output_reuse()


def test_overwrite_replaces_the_earlier_run(tmp_path):
    Solver(mlp_config(snapshot=3, max_iter=6, display=1), output_dir=tmp_path, reporter=Reporter(quiet=True)).solve()
    (tmp_path / "notes.txt").write_text("mine")
    recorder = Recorder()
    Solver(mlp_config(snapshot=2, max_iter=2), output_dir=tmp_path, reporter=recorder, overwrite=True).solve()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "mlp_iter_2.solverstate.npz",
        "mlp_iter_2.weights.npz",
        "notes.txt",
    ]
    assert f"Removed 5 file(s) of an earlier run from {tmp_path} (overwrite)" in [
        args[0] for args in recorder.of("on_message")
    ]


# -- file modes -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_snapshots_and_metrics_honour_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        Solver(mlp_config(max_iter=1, display=1), output_dir=tmp_path, reporter=Reporter(quiet=True)).solve()
    finally:
        os.umask(previous)
    files = sorted(tmp_path.iterdir())
    assert [p.name for p in files] == ["metrics.jsonl", "mlp_iter_1.solverstate.npz", "mlp_iter_1.weights.npz"]
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {oct(mode)}


# -- Caffe settings that do nothing here, and debug_info ---------------------------------------------


def test_gpu_settings_get_one_line_saying_netlayers_runs_on_the_cpu(tmp_path):
    stream = io.StringIO()
    Solver(
        mlp_config(max_iter=1, solver_mode="GPU", device_id=1),
        output_dir=tmp_path,
        reporter=Reporter(stream=stream, metrics=False),
    ).solve()
    lines = [line for line in stream.getvalue().splitlines() if "CPU" in line]
    assert lines == ["netlayers runs on the CPU: solver_mode: GPU and device_id: 1 ignored"]
    stream = io.StringIO()
    Solver(
        mlp_config(max_iter=1, device_id=0), output_dir=tmp_path / "b", reporter=Reporter(stream=stream, metrics=False)
    ).solve()
    assert "CPU" not in stream.getvalue()


def test_debug_info_logs_caffes_figures_on_displayed_iterations(tmp_path):
    # E = (w x - t)^2 / 2 with x = 1, t = 0, w0 = 1, lr 0.1: w goes 1 -> 0.9 -> 0.81
    stream = io.StringIO()
    Solver(
        tiny_config(debug_info=True, display=2, max_iter=3),
        output_dir=tmp_path,
        reporter=Reporter(stream=stream, metrics=False),
    ).solve()
    debug = [line for line in stream.getvalue().splitlines() if line.startswith("    [")]
    first = [
        "    [Forward] Layer data, top blob x data: 1",
        "    [Forward] Layer data, top blob t data: 0",
        "    [Forward] Layer ip, top blob y data: 1",
        "    [Forward] Layer ip, param blob 0 data: 1",
        "    [Forward] Layer loss, top blob loss data: 0.5",
        "    [Backward] Layer loss, bottom blob y diff: 1",
        "    [Backward] Layer ip, param blob 0 diff: 1",
        "    [Backward] All net params (data, diff): L1 norm = (1, 1); L2 norm = (1, 1)",
        "    [Update] Layer ip, param 0 data: 1; diff: 0.1",
    ]
    third = [line.replace(": 1", ": 0.81") for line in first[2:4]]
    assert debug[:9] == first  # iteration 0
    assert debug[9 : 9 + 2] == [
        "    [Forward] Layer data, top blob x data: 1",
        "    [Forward] Layer data, top blob t data: 0",
    ]
    assert debug[11:13] == third  # iteration 2 (display 2)
    assert len(debug) == 18
    quiet = io.StringIO()
    Solver(
        tiny_config(debug_info=True, display=1, max_iter=2),
        output_dir=tmp_path / "q",
        reporter=Reporter(quiet=True, stream=quiet, metrics=False),
    ).solve()
    assert quiet.getvalue() == ""


def test_debug_info_shows_each_layer_before_an_in_place_layer_overwrites(tmp_path):
    recorder = Recorder()
    Solver(mlp_config(debug_info=True, display=1, max_iter=1), output_dir=tmp_path, reporter=recorder).solve()
    lines = {
        line.split(":")[0].strip(): float(line.rsplit(": ", 1)[1])
        for (line,) in recorder.of("on_message")
        if line.startswith("    [Forward]")
    }
    net = Net(mlp_config())  # the same seed: the same first batch
    net.forward(end="ip1")
    before_relu = np.abs(net.blobs["h"].data).mean()
    assert lines["[Forward] Layer ip1, top blob h data"] == pytest.approx(before_relu, rel=1e-5)
    assert lines["[Forward] Layer relu, top blob h data"] < lines["[Forward] Layer ip1, top blob h data"]


# -- a learning rate past the float range ----------------------------------------------------------


@pytest.mark.parametrize(
    "policy",
    [
        {"lr_policy": "inv", "gamma": 1.0, "power": -1e308},
        {"lr_policy": "inv", "gamma": 1e300, "power": -2},
        {"lr_policy": "poly", "power": -1e308},
    ],
)
def test_a_learning_rate_past_the_float_range_stops_training_in_one_line(tmp_path, policy):
    solver = Solver(tiny_config(**policy), output_dir=tmp_path, reporter=Reporter(quiet=True))
    with pytest.raises(
        TrainingError,
        match=f"the learning rate of lr_policy '{policy['lr_policy']}' "
        r"is not a finite number at iteration \d+",
    ) as info:
        solver.solve()
    one_line(info.value)
