"""The train and test commands, end to end on small configs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from netlayers.cli.main import main

ROOT = Path(__file__).resolve().parents[2]

CONFIG = """\
name: small
random_seed: 3
layers:
  - name: data
    type: Data
    top: [data, label]
    include: {phase: TRAIN}
    data_param: {source: train.npz, backend: NPZ, batch_size: 8, shuffle: true}
  - name: data
    type: Data
    top: [data, label]
    include: {phase: TEST}
    data_param: {source: train.npz, backend: NPZ, batch_size: 10}
  - name: ip
    type: InnerProduct
    bottom: data
    top: ip
    inner_product_param: {num_output: 3, weight_filler: {type: xavier}}
  - {name: acc, type: Accuracy, bottom: [ip, label], top: accuracy, include: {phase: TEST}}
  - {name: loss, type: SoftmaxWithLoss, bottom: [ip, label], top: loss}
solver:
  base_lr: 0.1
  momentum: 0.9
  max_iter: 40
  display: 10
  test_iter: [3]
  test_interval: 20
  snapshot: 20
  snapshot_prefix: small
"""


@pytest.fixture
def config(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 30)
    data = rng.standard_normal((30, 4)).astype(np.float32) + labels[:, None]
    np.savez(tmp_path / "train.npz", data=data, label=labels)
    path = tmp_path / "small.yaml"
    path.write_text(CONFIG)
    return path


def weights(path):
    with np.load(path) as archive:
        return {k: archive[k] for k in archive.files}


def test_train_writes_snapshots_metrics_and_logs(config, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--output", str(out)]) == 0
    log = capsys.readouterr().err
    assert "Iteration 20, Testing net (#0)" in log and "Test net output #0: accuracy" in log
    assert "Optimization Done." in log
    assert {p.name for p in out.glob("small_iter_*")} == {
        "small_iter_20.weights.npz",
        "small_iter_20.solverstate.npz",
        "small_iter_40.weights.npz",
        "small_iter_40.solverstate.npz",
    }
    assert (out / "config.yaml").read_text() == CONFIG
    entries = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    tests = [e for e in entries if e["phase"] == "test"]
    assert [e["iter"] for e in tests] == [0, 20, 40] and tests[-1]["accuracy"] > tests[0]["accuracy"]
    assert all(np.isfinite(e["loss"]) for e in entries if e["phase"] == "train")


def test_resume_gives_the_same_weights_bit_for_bit(config, tmp_path, capsys):
    main(["train", "--config", str(config), "--output", str(tmp_path / "full"), "--quiet"])
    main(["train", "--config", str(config), "--output", str(tmp_path / "half"), "--quiet", "--max-iter", "20"])
    state = tmp_path / "half" / "small_iter_20.solverstate.npz"
    assert (
        main(["train", "--config", str(config), "--output", str(tmp_path / "half"), "--quiet", "--resume", str(state)])
        == 0
    )
    full = weights(tmp_path / "full" / "small_iter_40.weights.npz")
    resumed = weights(tmp_path / "half" / "small_iter_40.weights.npz")
    assert full.keys() == resumed.keys()
    for key in full:
        assert full[key].tobytes() == resumed[key].tobytes()


def test_finetune_from_weights_and_score_with_test(config, tmp_path, capsys):
    main(["train", "--config", str(config), "--output", str(tmp_path / "a"), "--quiet"])
    trained = tmp_path / "a" / "small_iter_40.weights.npz"
    capsys.readouterr()
    assert main(["test", "--config", str(config), "--weights", str(trained), "--iterations", "3"]) == 0
    printed = dict(line.split(" = ") for line in capsys.readouterr().out.splitlines())
    assert float(printed["accuracy"]) > 0.5 and float(printed["loss"]) < 1.0
    assert (
        main(
            [
                "train",
                "--config",
                str(config),
                "--output",
                str(tmp_path / "b"),
                "--quiet",
                "--weights",
                str(trained),
                "--max-iter",
                "1",
            ]
        )
        == 0
    )


def test_user_mistakes_are_one_line_and_exit_2(config, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(CONFIG.replace("base_lr: 0.1", "base_lr: fast"))
    assert main(["train", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{bad}:" in err and "base_lr" in err
    assert main(["train", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert main(["train", "--config", str(config), "--weights", "w.npz", "--resume", "s.npz"]) == 2
    assert main(["test", "--config", str(config), "--weights", str(tmp_path / "missing.npz")]) == 2
    assert "missing.npz" in capsys.readouterr().err


def test_a_missing_data_root_is_refused(config, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--config", str(config), "--data-root", str(tmp_path / "nowhere")])
    assert info.value.code == 2
    assert f"argument --data-root: {tmp_path / 'nowhere'} is not a folder" in capsys.readouterr().err


def test_input_layers_are_refused_by_train_and_test(config, tmp_path, capsys):
    fed_by_hand = tmp_path / "input.yaml"
    fed_by_hand.write_text(
        CONFIG.replace(
            "    type: Data\n    top: [data, label]\n    include: {phase: TRAIN}\n"
            "    data_param: {source: train.npz, backend: NPZ, batch_size: 8, shuffle: true}",
            "    type: Input\n    top: [data, label]\n    include: {phase: TRAIN}\n"
            "    input_param: {shape: [{dim: [8, 4]}, {dim: [8]}]}",
        )
    )
    assert main(["train", "--config", str(fed_by_hand), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{fed_by_hand}:4: layer 'data': an Input layer gets no data from `train`" in err
    np.savez(tmp_path / "w.npz", **{"ip/0": np.zeros((3, 4)), "ip/1": np.zeros(3)})
    assert main(["test", "--config", str(fed_by_hand), "--phase", "TRAIN", "--weights", str(tmp_path / "w.npz")]) == 2
    assert "an Input layer gets no data from `netlayers test`" in capsys.readouterr().err


def test_nan_loss_stops_naming_the_iteration_and_keeps_snapshots(config, tmp_path, capsys):
    diverging = tmp_path / "diverge.yaml"
    diverging.write_text(CONFIG.replace("base_lr: 0.1", "base_lr: 1.0e+38"))
    out = tmp_path / "run"
    assert main(["train", "--config", str(diverging), "--output", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "loss is" in err and "at iteration" in err and "Traceback" not in err
    for path in out.glob("*.npz"):
        weights(path)  # whatever was written is readable


def test_the_train_console_script_and_sigterm_snapshot(config, tmp_path):
    """SIGTERM mid-run: the iteration finishes, a snapshot is written, exit code 130."""
    slow = tmp_path / "slow.yaml"
    slow.write_text(CONFIG.replace("max_iter: 40", "max_iter: 100000000").replace("snapshot: 20", "snapshot: 0"))
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from netlayers.cli.main import train_main; sys.exit(train_main())",
            "--config",
            str(slow),
            "--output",
            str(out),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.time() + 60
    while time.time() < deadline and not (out / "metrics.jsonl").exists():
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "resume with" in err
    states = list(out.glob("*.solverstate.npz"))
    assert len(states) == 1 and weights(states[0])


def one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("netlayers: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_output_that_is_a_file_is_a_one_line_error(config, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    assert main(["train", "--config", str(config), "--output", str(taken), "--quiet"]) == 2
    assert one_line_error(capsys) == (
        f"netlayers: error: cannot write into the output folder {taken}: it is a file, not a folder"
    )
    assert taken.read_text() == "not a folder"


def test_snapshot_folder_blocked_by_a_file_fails_before_training(config, tmp_path, capsys):
    (tmp_path / "blocker").write_text("")
    blocked = tmp_path / "blocked.yaml"
    blocked.write_text(CONFIG.replace("snapshot_prefix: small", f"snapshot_prefix: {tmp_path / 'blocker' / 'small'}"))
    out = tmp_path / "run"
    assert main(["train", "--config", str(blocked), "--output", str(out), "--quiet"]) == 2
    err = one_line_error(capsys)
    assert f"cannot write into the snapshot folder {tmp_path / 'blocker'}: it is a file" in err
    assert not (out / "metrics.jsonl").exists()  # not a single iteration ran


def test_resume_beyond_max_iter_is_a_one_line_error(config, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--output", str(out), "--quiet"]) == 0
    state = out / "small_iter_40.solverstate.npz"
    args = ["train", "--config", str(config), "--output", str(out), "--quiet", "--resume", str(state)]
    assert main(args + ["--max-iter", "20"]) == 2
    assert "at iteration 40, beyond max_iter 20: nothing to train" in one_line_error(capsys)
    assert main(args) == 0  # at max_iter: nothing left, not an error
    assert {p.name for p in out.glob("small_iter_*")} == {
        "small_iter_20.weights.npz",
        "small_iter_20.solverstate.npz",
        "small_iter_40.weights.npz",
        "small_iter_40.solverstate.npz",
    }
