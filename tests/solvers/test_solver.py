"""The training loop: TEST net, testing, average_loss, reporting, NaN stop, stop requests, config
checking."""

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from solver_nets import Recorder, input_config, mlp_config, tiny_config, weights, write_config

from netlayers import ConfigError, Net, TrainingError
from netlayers.solvers import Reporter, Solver

# -- the TEST net ----------------------------------------------------------------------------------


def test_test_net_shares_the_train_weights():
    solver = Solver(mlp_config(test=True, test_iter=2, test_interval=5), reporter=Recorder())
    assert solver.test_net is not None and solver.test_net.phase == "TEST"
    for name in ("ip1", "ip2"):
        for train_blob, test_blob in zip(solver.net.params[name], solver.test_net.params[name]):
            assert train_blob is test_blob
    solver.step(2)
    np.testing.assert_array_equal(solver.test_net.params["ip1"][0].data, solver.net.params["ip1"][0].data)


def test_no_test_net_without_test_iter():
    assert Solver(mlp_config(), reporter=Recorder()).test_net is None
    assert Solver(mlp_config(test=True), reporter=Recorder()).test_net is None  # test_interval 0
    assert Solver(mlp_config(test_iter=3), reporter=Recorder()).test_net is not None


def test_test_outputs_are_means_over_the_batches():
    solver = Solver(mlp_config(test=True, test_iter=3, test_interval=5), reporter=Recorder())
    state = solver.test_net.state()
    results = solver.test()
    solver.test_net.set_state(state)
    losses = [float(solver.test_net.forward()["loss"]) for _ in range(3)]
    assert len(set(losses)) == 3  # a fresh batch each time
    assert set(results) == {"loss"} and isinstance(results["loss"], float)
    assert results["loss"] == pytest.approx(np.mean(losses), rel=1e-6)


def test_tests_run_every_test_interval_and_at_the_end():
    recorder = Recorder()
    solver = Solver(mlp_config(test=True, test_iter=2, test_interval=4, max_iter=10), reporter=recorder)
    solver.solve()
    # 0 (test_initialization), 4, 8, and 10 at the end (Caffe only when the interval divides it)
    assert [args[0] for args in recorder.of("on_test")] == [0, 4, 8, 10]
    recorder = Recorder()
    Solver(
        mlp_config(test=True, test_iter=2, test_interval=4, max_iter=8, test_initialization=False),
        reporter=recorder,
        overwrite=True,
    ).solve()
    assert [args[0] for args in recorder.of("on_test")] == [4, 8]


def test_testing_does_not_disturb_training():
    plain = Solver(mlp_config(test=True, test_iter=2, max_iter=6), reporter=Recorder())
    tested = Solver(mlp_config(test=True, test_iter=2, test_interval=2, max_iter=6), reporter=Recorder())
    plain.step(6)
    tested.step(6)
    for a, b in zip(weights(plain), weights(tested)):
        np.testing.assert_array_equal(a, b)


# -- display and average_loss ------------------------------------------------------------------------


def test_average_loss_smooths_the_displayed_loss():
    recorder = Recorder()
    solver = Solver(mlp_config(display=1, average_loss=3, max_iter=6), reporter=recorder)
    solver.step(6)
    calls = recorder.of("on_train")
    assert [c[0] for c in calls] == list(range(6))
    raw = [c[1] for c in calls]
    for k, (_, _, smoothed, *_rest) in enumerate(calls):
        assert smoothed == pytest.approx(np.mean(raw[max(0, k - 2) : k + 1]), rel=1e-12)
    assert raw[0] == pytest.approx(float(calls[0][4]["loss"]), rel=1e-6)  # the net's output


def test_display_schedule_and_final_line():
    recorder = Recorder()
    Solver(mlp_config(display=5, max_iter=10), reporter=recorder).solve()
    calls = recorder.of("on_train")
    assert [c[0] for c in calls] == [0, 5, 10]
    final = calls[-1]  # Caffe's closing line: loss only
    assert final[3] is None and final[4] == {} and final[5] is None
    assert [name for name, _ in recorder.calls][-1] == "on_end"


def test_no_final_line_when_display_does_not_divide_max_iter():
    recorder = Recorder()
    Solver(mlp_config(display=4, max_iter=10), reporter=recorder).solve()
    assert [c[0] for c in recorder.of("on_train")] == [0, 4, 8]


def test_each_step_call_starts_the_smoothed_loss_afresh():
    recorder = Recorder()
    solver = Solver(mlp_config(display=1, average_loss=5, max_iter=10), reporter=recorder)
    for _ in range(3):
        solver.step(1)
    for _, raw, smoothed, *_rest in recorder.of("on_train"):
        assert smoothed == raw


def test_default_reporter_lines_and_metrics_file(tmp_path, capsys):
    path = write_config(
        tmp_path, mlp_config(test=True, test_iter=2, test_interval=5, display=5, max_iter=10, snapshot=10)
    )
    solver = Solver(path, output_dir=tmp_path / "run")
    solver.solve()
    err = capsys.readouterr().err
    for line in [
        "Solving mlp",
        "Learning Rate Policy: fixed",
        "Iteration 0, loss = ",
        "    Train net output #0: loss = ",
        "Iteration 5, lr = 0.05",
        "Iteration 5, Testing net (#0)",
        "    Test net output #0: loss = ",
        f"Snapshotting to binary proto file {tmp_path / 'run' / 'net_iter_10.weights.npz'}",
        "Optimization Done.",
    ]:
        assert line in err, line
    assert re.search(r"Iteration 5 \([0-9.e+-]+ iter/s, [0-9.e+-]+s/5 iters\), loss = ", err)
    entries = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [e for e in entries if e["phase"] == "train"]
    test = [e for e in entries if e["phase"] == "test"]
    assert [e["iter"] for e in train] == [0, 5, 10]
    assert [e["iter"] for e in test] == [0, 5, 10]
    assert all(isinstance(e["loss"], float) for e in entries)
    assert train[0]["lr"] == pytest.approx(0.05) and "lr" not in train[-1]
    assert train[0]["output/loss"] == pytest.approx(train[0]["raw_loss"], rel=1e-6)


def test_quiet_reporter_prints_nothing_but_writes_metrics(tmp_path, capsys):
    Solver(mlp_config(display=1, max_iter=3), output_dir=tmp_path, reporter=Reporter(quiet=True)).solve()
    assert capsys.readouterr().err == ""
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 4


def test_progress_bar_with_log_lines_above_it(tmp_path):
    stream = io.StringIO()
    reporter = Reporter(progress=True, stream=stream, metrics=False)
    Solver(mlp_config(display=2, max_iter=4), output_dir=tmp_path, reporter=reporter).solve()
    text = stream.getvalue()
    assert "4/4" in text and "Iteration 2, lr = 0.05" in text and "Optimization Done." in text
    assert not (tmp_path / "metrics.jsonl").exists()


# -- NaN and stop requests ---------------------------------------------------------------------------


def poison_at(iteration):
    """A reporter hook that puts NaN into the Input data once ``iteration`` updates are done."""

    def hook(solver, done):
        if done == iteration:
            solver.net.blobs["x"].data[...] = np.nan

    return hook


def fed_solver(tmp_path, reporter, **solver):
    s = Solver(input_config(**solver), output_dir=tmp_path, reporter=reporter)
    s.net.blobs["x"].data[...] = [[0.5, -1.0]]
    s.net.blobs["t"].data[...] = 1.0
    return s


def test_nan_loss_stops_and_keeps_the_good_snapshots(tmp_path):
    recorder = Recorder(on_iteration=poison_at(3))
    solver = fed_solver(tmp_path, recorder, snapshot=2, max_iter=10, momentum=0.9)
    with pytest.raises(TrainingError) as info:
        solver.solve()
    message = str(info.value)
    good = tmp_path / "lin_iter_2.solverstate.npz"
    assert "loss is nan at iteration 3" in message
    assert message.endswith(f"last snapshot: {good} (iteration 2)")
    assert solver.status == "failed" and recorder.of("on_end")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lin_iter_2.solverstate.npz", "lin_iter_2.weights.npz"]
    fresh = Solver(input_config(snapshot=2, max_iter=10, momentum=0.9), reporter=Recorder())
    fresh.restore(good)
    assert fresh.iter == 2 and np.isfinite(fresh.net.params["ip"][0].data).all()


def test_nan_right_after_a_snapshot_does_not_call_it_good(tmp_path):
    # the snapshot at 3 holds the very weights whose loss at iteration 3 is NaN
    solver = fed_solver(tmp_path, Recorder(on_iteration=poison_at(3)), snapshot=3, max_iter=10)
    with pytest.raises(TrainingError) as info:
        solver.solve()
    message = str(info.value)
    assert "loss is nan at iteration 3" in message and "good" not in message
    assert message.endswith(f"last snapshot: {tmp_path / 'lin_iter_3.solverstate.npz'} (iteration 3)")


def test_infinite_loss_is_reported_as_such(tmp_path):
    # lr 1e30 from iteration 1 on: the weights explode and the loss overflows float32
    solver = fed_solver(tmp_path, Recorder(), lr_policy="step", gamma=1e30, stepsize=1, base_lr=1.0)
    with np.errstate(over="ignore", invalid="ignore"), pytest.raises(TrainingError) as info:
        solver.solve()
    assert "loss is infinite at iteration 2" in str(info.value)
    assert str(info.value).endswith("last snapshot: none")
    assert solver.status == "failed"


def test_request_stop_snapshots_and_returns(tmp_path):
    recorder = Recorder(on_iteration=lambda solver, done: done == 3 and solver.request_stop())
    solver = Solver(
        mlp_config(test=True, test_iter=1, test_interval=100, max_iter=10), output_dir=tmp_path, reporter=recorder
    )
    solver.solve()
    assert solver.iter == 3 and solver.stopped and solver.status == "stopped"
    assert [args[0] for args in recorder.of("on_snapshot")] == [3]
    assert (tmp_path / "mlp_iter_3.weights.npz").is_file()
    assert (tmp_path / "mlp_iter_3.solverstate.npz").is_file()
    assert [args[0] for args in recorder.of("on_test")] == [0]  # no final test
    solver.solve()  # carries on to max_iter
    assert solver.iter == 10 and solver.status == "done"


# -- config checking ---------------------------------------------------------------------------------

CONFIG = """\
name: cfg
layers:
  - name: data
    type: DummyData
    top: [x, t]
    dummy_data_param: {shape: [{dim: [1, 1]}]}
  - {name: ip, type: InnerProduct, bottom: x, top: y, inner_product_param: {num_output: 1}}
  - {name: loss, type: EuclideanLoss, bottom: [y, t], top: loss}
solver:
  base_lr: 0.1
  max_iter: 10
"""


def config_error(tmp_path, extra, text=CONFIG):
    path = tmp_path / "cfg.yaml"
    path.write_text(text + extra)
    with pytest.raises(ConfigError) as info:
        Solver(path, reporter=Recorder())
    return str(info.value)


@pytest.mark.parametrize(
    "extra, expected",
    [
        ("  bsae_lr: 0.1\n", "cfg.yaml:12: field 'solver.bsae_lr': unknown field (did you mean 'base_lr'?)"),
        ("  momentum: high\n", "cfg.yaml:12: field 'solver.momentum': expected a number, got 'high'"),
        ("  type: Adamm\n", "cfg.yaml:12: field 'solver.type': expected one of SGD | Nesterov"),
        ("  lr_policy: stepp\n", "cfg.yaml:12: field 'solver.lr_policy': expected one of fixed | step"),
        ("  max_iter2: 5\n", "(did you mean 'max_iter'?)"),
        ("  test_iter: [0]\n", "cfg.yaml:12: field 'solver.test_iter[0]': expected an integer >= 1, got 0"),
        (
            "  type: AdaGrad\n  momentum: 0.9\n",
            "cfg.yaml:13: field 'solver.momentum': momentum cannot be used with AdaGrad",
        ),
        ("  type: SGD\n  solver_type: ADAM\n", "cfg.yaml:13: field 'solver.solver_type': give either type"),
        ("  iter_size: 0\n", "cfg.yaml:12: field 'solver.iter_size': expected an integer >= 1, got 0"),
    ],
)
def test_config_errors_name_file_and_line(tmp_path, extra, expected):
    assert expected in config_error(tmp_path, extra)


@pytest.mark.parametrize(
    "extra, expected",
    [
        ("  momentum: 1.0\n", "cfg.yaml:12: field 'solver.momentum': must be in [0, 1) for SGD, got 1"),
        (
            "  type: Nesterov\n  momentum: -0.5\n",
            "cfg.yaml:13: field 'solver.momentum': must be in [0, 1) for Nesterov, got -0.5",
        ),
        ("  type: Adam\n  momentum2: 1.0\n", "cfg.yaml:13: field 'solver.momentum2': Adam's beta2 must be in [0, 1)"),
        ("  type: AdaGrad\n  delta: 0\n", "cfg.yaml:13: field 'solver.delta': must be positive for AdaGrad"),
        ("  type: RMSProp\n  delta: -1.0e-8\n", "cfg.yaml:13: field 'solver.delta': must be positive for RMSProp"),
        ("  type: AdaDelta\n  delta: 0\n", "cfg.yaml:13: field 'solver.delta': must be positive for AdaDelta"),
        (
            "  type: AdaDelta\n  momentum: 1.5\n",
            "cfg.yaml:13: field 'solver.momentum': must be in [0, 1) for AdaDelta, got 1.5",
        ),
        ("  type: Adam\n  delta: 0\n", "cfg.yaml:13: field 'solver.delta': must be positive for Adam"),
        ("  type: RMSProp\n  rms_decay: 1.0\n", "cfg.yaml:13: field 'solver.rms_decay': must be in [0, 1), got 1"),
        ("  weight_decay: -0.0005\n", "cfg.yaml:12: field 'solver.weight_decay': expected a number >= 0, got -0.0005"),
        (
            "  lr_policy: multistep\n  gamma: 0.1\n",
            "cfg.yaml:12: field 'solver.lr_policy': lr_policy 'multistep' needs 'stepvalue'",
        ),
        (
            "  test_iter: [10, 5]\n  test_state: [{stage: [a]}]\n",
            "field 'solver.test_state': 1 test_state given for 2 test net(s): give one each",
        ),
    ],
)
def test_solver_values_out_of_range_name_the_field(tmp_path, extra, expected):
    message = config_error(tmp_path, extra)
    assert expected in message and "\n" not in message


def test_solver_values_in_range_are_accepted():
    for extra in (
        {"momentum": 0.0},
        {"momentum": 0.99},
        {"type": "AdaGrad", "delta": 1e-10},
        {"type": "RMSProp", "rms_decay": 0.0},
        {"weight_decay": 0.0},
        {"lr_policy": "multistep", "gamma": 0.1, "stepvalue": [5]},
    ):
        Solver(tiny_config(**extra), reporter=Recorder())


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_base_lr_must_be_finite(tmp_path, value):
    message = config_error(tmp_path, "", CONFIG.replace("base_lr: 0.1", f"base_lr: {value}"))
    assert "cfg.yaml:10: field 'solver.base_lr': " in message and "finite" in message


def test_non_finite_lr_mult_names_the_layer(tmp_path):
    # the solver multiplies the rate by lr_mult: a NaN there would turn into a NaN loss later
    for value in (float("nan"), float("inf")):
        path = write_config(tmp_path, tiny_config(param={"lr_mult": value, "decay_mult": 1.0}))
        with pytest.raises(ConfigError, match=r"layer 'ip': field 'param\[0\]\.lr_mult': .*finite"):
            Solver(path, reporter=Recorder())


def test_required_fields(tmp_path):
    text = CONFIG.replace("  max_iter: 10\n", "")
    assert "cfg.yaml:9: field 'solver.max_iter': is required" in config_error(tmp_path, "", text)
    text = CONFIG.replace("  base_lr: 0.1\n", "")
    assert "field 'solver.base_lr': is required" in config_error(tmp_path, "", text)


def test_missing_solver_section_is_an_error_only_when_training(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(CONFIG.split("solver:")[0])
    Net(path)
    with pytest.raises(ConfigError, match="no 'solver:' section"):
        Solver(path, reporter=Recorder())


def test_test_layers_with_test_interval_need_test_iter(tmp_path):
    path = write_config(tmp_path, mlp_config(test=True, test_interval=5))
    with pytest.raises(ConfigError, match="test_iter .* is needed"):
        Solver(path, reporter=Recorder())


def test_test_interval_without_test_iter_is_an_error(tmp_path):
    # Caffe would never test here (no test_iter, no test net); netlayers says so up front
    message = config_error(tmp_path, "  test_interval: 5\n")
    assert (
        "cfg.yaml:12: field 'solver.test_interval': is set, so test_iter (TEST batches per "
        "test) is needed too" in message
    )


def test_test_iter_with_an_empty_test_net_is_an_error(tmp_path):
    config = mlp_config(test_iter=2, test_interval=5)
    for layer in config["layers"]:
        layer["include"] = {"phase": "TRAIN"}
    with pytest.raises(ConfigError) as info:
        Solver(write_config(tmp_path, config), reporter=Recorder())
    assert "net.yaml:" in str(info.value)
    assert "field 'solver.test_iter': is given but TEST net #0 has no layers" in str(info.value)


def test_test_iter_with_a_test_net_without_outputs_is_an_error(tmp_path):
    config = mlp_config(test_iter=2)
    for layer in config["layers"][1:]:
        layer["include"] = {"phase": "TRAIN"}
    config["layers"].append({"name": "quiet", "type": "Silence", "bottom": ["x", "t"], "include": {"phase": "TEST"}})
    with pytest.raises(ConfigError, match="field 'solver.test_iter': is given but TEST net #0 has no outputs"):
        Solver(config, reporter=Recorder())


def test_a_train_net_without_a_loss_is_an_error(tmp_path):
    no_loss = tiny_config()
    no_loss["layers"].pop()  # the EuclideanLoss
    zero_weight = tiny_config()
    zero_weight["layers"][-1]["loss_weight"] = 0.0
    for config in (no_loss, zero_weight):
        path = write_config(tmp_path, config, "noloss.yaml")
        with pytest.raises(ConfigError) as info:
            Solver(path, reporter=Recorder())
        assert str(info.value).startswith(f"{path}: the TRAIN net has no loss: ")


def test_legacy_solver_type_and_defaults():
    solver = Solver(tiny_config(solver_type="ADAM", momentum=0.9), reporter=Recorder())
    assert solver.param.type == "Adam" and type(solver.rule).__name__ == "Adam"
    p = Solver(tiny_config(), reporter=Recorder()).param
    assert (
        p.type,
        p.lr_policy,
        p.momentum,
        p.momentum2,
        p.delta,
        p.rms_decay,
        p.weight_decay,
        p.regularization_type,
        p.clip_gradients,
        p.iter_size,
        p.display,
        p.average_loss,
        p.test_interval,
        p.test_initialization,
        p.snapshot,
        p.random_seed,
    ) == ("SGD", "fixed", 0.0, 0.999, 1e-8, 0.99, 0.0, "L2", -1.0, 1, 0, 1, 0, True, 0, -1)


def test_solver_net_names_another_file(tmp_path):
    (tmp_path / "nets").mkdir()
    net_path = tmp_path / "nets" / "tiny.yaml"
    net_config = tiny_config(w0=2.0)
    del net_config["solver"]
    write_config(tmp_path / "nets", net_config, "tiny.yaml")
    solver_path = tmp_path / "solver.yaml"
    solver_path.write_text("solver:\n  net: nets/tiny.yaml\n  base_lr: 0.5\n  max_iter: 1\n")
    solver = Solver(solver_path, reporter=Recorder())
    assert Path(solver.net.spec.file).resolve() == net_path.resolve()
    assert solver.output_dir.resolve() == tmp_path.resolve() and solver.snapshot_prefix == "solver"
    solver.step(1)
    assert solver.net.params["ip"][0].data.item() == pytest.approx(1.0)  # 2 - 0.5 * 2


def test_seed_override_and_random_seed():
    a = Solver(mlp_config(random_seed=5), reporter=Recorder())
    b = Solver(mlp_config(random_seed=5), reporter=Recorder())
    c = Solver(mlp_config(random_seed=5), seed=6, reporter=Recorder())
    np.testing.assert_array_equal(weights(a)[0], weights(b)[0])
    assert not np.array_equal(weights(a)[0], weights(c)[0])
    assert c.param.random_seed == 6


def test_a_solver_from_something_else_than_a_path_or_mapping():
    with pytest.raises(ConfigError, match="a solver is built from a YAML path or a mapping, not a list$"):
        Solver([1, 2])
