"""The command line under faults: Ctrl-C at any moment, closed pipes, errors and bugs, warnings,
run folders that record how to reproduce and continue a run, --quiet's summary."""

import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from test_train_command import CONFIG  # the same small net and solver

from netlayers.cli import main as cli_main
from netlayers.cli.main import main
from netlayers.errors import ConfigError, NetlayersWarning

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
TRAIN = "import sys; from netlayers.cli.main import train_program; sys.exit(train_program())"
SLOW = CONFIG.replace("max_iter: 40", "max_iter: 100000000").replace("snapshot: 20", "snapshot: 0")


@pytest.fixture
def folder(tmp_path):
    """A folder holding the small data set, ``small.yaml`` (40 iterations) and ``slow.yaml``
    (a run that only a signal ends)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 30)
    data = rng.standard_normal((30, 4)).astype(np.float32) + labels[:, None]
    np.savez(tmp_path / "train.npz", data=data, label=labels)
    (tmp_path / "small.yaml").write_text(CONFIG)
    (tmp_path / "slow.yaml").write_text(SLOW)
    return tmp_path


def start_train(args, cwd, **options):
    """The ``train`` console entry in a child process whose SIGINT acts as in a terminal."""
    return subprocess.Popen(
        [sys.executable, "-c", TRAIN, *args],
        cwd=cwd,
        env=ENV,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        **options,
    )


def wait_for(path, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline and not path.exists():
        time.sleep(0.05)
    assert path.exists(), f"{path} never appeared"


# -- Ctrl-C ---------------------------------------------------------------------------------
def test_ctrl_c_while_importing_numpy_is_one_line(folder):
    """A Ctrl-C that lands inside the heavy imports (numpy, forced here by an import hook
    that signals the process itself) is one line and exit code 130, not a traceback."""
    hook = textwrap.dedent("""\
        import os, signal, sys
        class Interrupt:
            def find_spec(self, name, path=None, target=None):
                if name == "numpy":
                    os.kill(os.getpid(), signal.SIGINT)
                return None
        sys.meta_path.insert(0, Interrupt())
    """)
    proc = subprocess.run(
        [sys.executable, "-c", hook + TRAIN, "--config", "small.yaml"],
        cwd=folder,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr == "netlayers: interrupted\n"


def test_ctrl_c_in_the_first_second_is_one_line(folder):
    for delay in (0.4,):
        proc = start_train(["--config", "slow.yaml", "--output", f"run{delay}"], folder, stderr=subprocess.PIPE)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert "Traceback" not in err and "Exception ignored" not in err, err
        assert err.endswith("netlayers: interrupted\n") or "resume with: " in err, err


# -- closed pipes ---------------------------------------------------------------------------
def test_a_log_reader_that_closes_early_stops_training_with_a_snapshot(folder):
    """``train ... 2>&1 | head``: once the log cannot be written, training stops as on
    SIGTERM: a stop snapshot, a non-zero exit code (not 0 with nothing saved)."""
    proc = start_train(
        ["--config", "slow.yaml", "--output", "run"], folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    while not proc.stdout.readline().startswith("Iteration 10 "):
        pass
    proc.stdout.close()
    assert proc.wait(timeout=60) not in (0, None)
    states = list((folder / "run").glob("*.solverstate.npz"))
    assert len(states) == 1
    with np.load(states[0]) as state:
        assert int(state["iter"]) >= 10


class ClosedPipe:
    """A stdout whose reader is gone."""

    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        raise BrokenPipeError(32, "Broken pipe")


def test_a_closed_stdout_does_not_fail_a_quiet_run(folder, capsys, monkeypatch):
    """``train --quiet ... | true``: the summary has nowhere to go; the run is complete, exit 0."""
    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["train", "--config", str(folder / "small.yaml"), "--output", str(folder / "run"), "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    assert (folder / "run" / "small_iter_40.weights.npz").exists()


# -- run folders ----------------------------------------------------------------------------
def stop_snapshot_then_more_ctrl_c(proc):
    """Wait for the stop snapshot, then press Ctrl-C again and again until the process ends
    (as an impatient user does); returns its stderr."""
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith("Snapshotting solver state"):
            break
    while proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        time.sleep(0.002)
    return "".join(lines) + proc.stderr.read()


def test_resume_hint_keeps_the_overrides_and_exiting_ignores_ctrl_c(folder):
    """The hint continues the same run (same output, max_iter, seed, data root, threads; shell
    quoted), run.json records them; once the stop snapshot is written, more Ctrl-C neither
    cuts the hint nor prints a traceback from the interpreter's exit."""
    data_root = folder / "data root"
    data_root.mkdir()
    out = "run one"
    args = [
        "--config",
        "slow.yaml",
        "--output",
        out,
        "--max-iter",
        "100000000",
        "--seed",
        "5",
        "--data-root",
        str(data_root),
        "--threads",
        "1",
    ]
    proc = start_train(args, folder, stderr=subprocess.PIPE)
    wait_for(folder / out / "metrics.jsonl")
    proc.send_signal(signal.SIGINT)
    err = stop_snapshot_then_more_ctrl_c(proc)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    hint = err.strip().splitlines()[-1]
    assert "resume with: " in hint, err
    words = shlex.split(hint.split("resume with: ", 1)[1])
    state = next((folder / out).glob("*.solverstate.npz"))
    assert words == ["train", *args, "--resume", str(Path(out) / state.name)]
    record = json.loads((folder / out / "run.json").read_text())
    assert record["seed"] == 5 and record["max_iter"] == 100000000 and record["threads"] == 1
    assert record["overrides"] == {
        "output": out,
        "max_iter": 100000000,
        "seed": 5,
        "data_root": str(data_root),
        "threads": 1,
    }
    assert shlex.split(record["command"]) == ["netlayers", "train", *args]
    assert set(record["versions"]) == {"netlayers", "numpy", "numba", "python"}
    assert (folder / out / "config.yaml").read_text() == SLOW  # the user's file, unchanged


def test_a_signal_found_ignored_is_not_reported_but_other_unraisables_are():
    """CPython reports a signal that was pending when SIG_IGN took over ("Signal 2 ignored due
    to race condition") through sys.unraisablehook; once the finishing program ignores SIGINT,
    that report is dropped and any other one still printed."""
    script = textwrap.dedent(
        """
        import signal, sys
        from netlayers.cli.main import ignore_signals
        ignore_signals(signal.SIGINT)
        ignore_signals(signal.SIGINT)  # twice: the hook is not wrapped around itself
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        class Failing:
            def __del__(self):
                raise ValueError("something else")
        error = OSError("Signal 2 ignored due to race condition")
        captured = []
        hook, sys.unraisablehook = sys.unraisablehook, captured.append
        Failing()  # its __del__'s error reaches the hook: the real argument type
        sys.unraisablehook = hook
        args = captured[0]
        sys.unraisablehook(type(args)((OSError, error, None, None, None)))  # as CPython reports it
        Failing()
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "race condition" not in done.stderr
    assert "ValueError: something else" in done.stderr


def test_run_json_holds_the_drawn_seed_that_reproduces_the_run(folder, capsys):
    """Without a seed anywhere, the seed drawn is recorded; training again with it gives the
    same weights, so a run can be reproduced from its own folder."""
    (folder / "unseeded.yaml").write_text(CONFIG.replace("random_seed: 3\n", ""))
    assert main(["train", "--config", str(folder / "unseeded.yaml"), "--output", str(folder / "a"), "--quiet"]) == 0
    record = json.loads((folder / "a" / "run.json").read_text())
    assert isinstance(record["seed"], int) and "seed" not in record["overrides"]
    assert (
        main(
            [
                "train",
                "--config",
                str(folder / "unseeded.yaml"),
                "--output",
                str(folder / "b"),
                "--quiet",
                "--seed",
                str(record["seed"]),
            ]
        )
        == 0
    )
    with (
        np.load(folder / "a" / "small_iter_40.weights.npz") as a,
        np.load(folder / "b" / "small_iter_40.weights.npz") as b,
    ):
        assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)


def test_a_resumed_run_adds_itself_to_run_json(folder, capsys):
    out = folder / "run"
    assert (
        main(["train", "--config", str(folder / "small.yaml"), "--output", str(out), "--quiet", "--max-iter", "20"])
        == 0
    )
    assert (
        main(
            [
                "train",
                "--config",
                str(folder / "small.yaml"),
                "--output",
                str(out),
                "--quiet",
                "--resume",
                str(out / "small_iter_20.solverstate.npz"),
            ]
        )
        == 0
    )
    record = json.loads((out / "run.json").read_text())
    assert record["max_iter"] == 20 and record["start_iteration"] == 0
    assert [r["start_iteration"] for r in record["resumed"]] == [20]
    assert record["resumed"][0]["overrides"]["resume"].endswith("small_iter_20.solverstate.npz")


def test_quiet_still_prints_a_short_summary(folder, capsys):
    out = folder / "run"
    assert main(["train", "--config", str(folder / "small.yaml"), "--output", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    lines = captured.out.splitlines()
    assert len(lines) == 3, lines
    assert lines[0] == f"Trained to iteration 40 of 40 into {out}"
    assert lines[1].startswith("Test at iteration 40: accuracy = ") and ", loss = " in lines[1]
    assert lines[2] == (
        f"Snapshot: {out / 'small_iter_40.weights.npz'} (solver state: {out / 'small_iter_40.solverstate.npz'})"
    )


# -- errors, bugs and warnings --------------------------------------------------------------
def run_with(monkeypatch, failure, *extra):
    """``netlayers plot`` whose run raises ``failure``: the error reporting in isolation."""

    def run(args):
        raise failure

    module = cli_main._load("plot")
    monkeypatch.setattr(module, "run", run)
    return main(["plot", *extra, "somewhere"])


def test_a_bug_is_one_line_exit_70_and_the_traceback_on_request(monkeypatch, capsys):
    monkeypatch.delenv("NETLAYERS_TRACEBACK", raising=False)
    assert run_with(monkeypatch, KeyError("blob")) == 70
    assert capsys.readouterr().err == (
        "netlayers: internal error (a bug in netlayers; please report it with --traceback output): KeyError: 'blob'\n"
    )
    assert run_with(monkeypatch, KeyError("blob"), "--traceback") == 70
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):") and err.endswith("KeyError: 'blob'\n")


def test_memory_error_is_one_line(monkeypatch, capsys):
    assert run_with(monkeypatch, MemoryError()) == 2
    err = capsys.readouterr().err
    assert err.startswith("netlayers: error: out of memory") and err.count("\n") == 1


def test_traceback_shows_the_chained_cause(monkeypatch, capsys):
    try:
        try:
            raise ZeroDivisionError("in the user's layer")
        except ZeroDivisionError as cause:
            raise ConfigError("Forward_cpu of layer 'cube' failed") from cause
    except ConfigError as err:
        error = err
    assert run_with(monkeypatch, error) == 2
    assert capsys.readouterr().err == "netlayers: error: Forward_cpu of layer 'cube' failed\n"
    monkeypatch.setenv("NETLAYERS_TRACEBACK", "1")
    assert run_with(monkeypatch, error) == 2
    err = capsys.readouterr().err
    assert "ZeroDivisionError: in the user's layer" in err
    assert "The above exception was the direct cause" in err
    assert err.endswith("ConfigError: Forward_cpu of layer 'cube' failed\n")


def test_a_python_layer_failure_with_traceback_shows_the_users_frame(tmp_path, capsys, monkeypatch):
    (tmp_path / "broken_layer.py").write_text(
        textwrap.dedent("""\
        import netlayers

        class Broken(netlayers.Layer):
            def Reshape(self, bottom, top):
                top[0].reshape_like(bottom[0])

            def Forward_cpu(self, bottom, top):
                raise ZeroDivisionError("my own bug")
    """)
    )
    (tmp_path / "net.yaml").write_text(
        textwrap.dedent("""\
        layers:
          - {name: data, type: Input, top: x, input_param: {shape: [{dim: [2, 3]}]}}
          - {name: broken, type: Python, bottom: x, top: y,
             python_param: {module: broken_layer, layer: Broken}}
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    args = ["explain", "--config", str(tmp_path / "net.yaml")]
    assert main(args) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main([*args, "--traceback"]) == 2
    err = capsys.readouterr().err
    assert 'raise ZeroDivisionError("my own bug")' in err and "broken_layer.py" in err


def test_netlayers_warnings_are_one_line_each_once(monkeypatch, capsys):
    def run(args):
        for _ in range(3):
            warnings.warn("engine: CUDNN is ignored: netlayers runs on the CPU", NetlayersWarning, stacklevel=1)
        warnings.warn("solver_mode: GPU is ignored", NetlayersWarning, stacklevel=1)
        return 0

    monkeypatch.setattr(cli_main._load("plot"), "run", run)
    assert main(["plot", "somewhere"]) == 0
    assert capsys.readouterr().err == (
        "netlayers: warning: engine: CUDNN is ignored: netlayers runs on the CPU\n"
        "netlayers: warning: solver_mode: GPU is ignored\n"
    )


def test_command_line_mistakes_are_one_line(folder, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--config", str(folder / "small.yaml"), "--max-iter", "0"])
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        "netlayers: error: train: argument --max-iter: must be at least 1, got 0 (see netlayers train --help)\n"
    )


def test_an_unreadable_data_root_is_a_one_line_error(folder, capsys, monkeypatch):
    locked = folder / "locked"
    locked.mkdir()
    real_listdir = os.listdir

    def listdir(path="."):
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", listdir)
    with pytest.raises(SystemExit) as info:
        main(["train", "--config", str(folder / "small.yaml"), "--data-root", str(locked)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err == (
        f"netlayers: error: train: argument --data-root: {locked}: cannot read this "
        "folder: Permission denied (see netlayers train --help)\n"
    )


def test_importing_the_command_line_is_cheap():
    """The console scripts import netlayers.cli.main before anything else: it must not import
    numpy (or numba), so that a Ctrl-C while those load is already handled."""
    code = "import sys, netlayers.cli.main; print(sorted(m for m in ('numpy', 'numba') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=60).stdout
    assert out.strip() == "[]"


def test_ctrl_c_while_the_solver_is_built_is_acted_on_before_training(folder, capsys, monkeypatch):
    """A SIGINT that arrives while the nets are built is noted (a KeyboardInterrupt raised
    there could land in a finalizer and be dropped) and ends the run before iteration 0."""
    from netlayers import solvers

    built = solvers.Solver

    def interrupted_while_built(*args, **kwargs):
        solver = built(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)
        return solver

    monkeypatch.setattr(solvers, "Solver", interrupted_while_built)
    assert main(["train", "--config", str(folder / "small.yaml"), "--output", str(folder / "run")]) == 130
    assert capsys.readouterr().err.endswith("netlayers: interrupted\n")
    assert not (folder / "run" / "metrics.jsonl").exists()
