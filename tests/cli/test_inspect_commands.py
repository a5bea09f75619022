"""The time, gradcheck, draw, explain and plot commands, end to end through main()."""

import json
import re
import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from netlayers.cli.main import main
from netlayers.inspect import build_net, explain_net, explain_spec

MLP = """\
name: mlp
layers:
  - name: data
    type: Input
    top: [data, label]
    input_param:
      shape: [{dim: [4, 6]}, {dim: [4]}]
  - name: ip1
    type: InnerProduct
    bottom: data
    top: ip1
    inner_product_param: {num_output: 5, weight_filler: {type: xavier}}
  - {name: relu1, type: ReLU, bottom: ip1, top: ip1}
  - name: ip2
    type: InnerProduct
    bottom: ip1
    top: ip2
    inner_product_param: {num_output: 3, weight_filler: {type: xavier}}
  - {name: loss, type: SoftmaxWithLoss, bottom: [ip2, label], top: loss}
  - {name: acc, type: Accuracy, bottom: [ip2, label], top: accuracy}
"""

TINY = """\
name: tiny
layers:
  - name: data
    type: DummyData
    top: [x, label]
    dummy_data_param:
      shape: [{dim: [2, 3]}, {dim: [2]}]
      data_filler: [{type: gaussian, std: 1}, {type: constant, value: 1}]
  - name: ip1
    type: InnerProduct
    bottom: x
    top: h
    inner_product_param:
      num_output: 2
      weight_filler: {type: gaussian, std: 0.8}
      bias_filler: {type: constant, value: 0.2}
  - {name: relu1, type: ReLU, bottom: h, top: h}
  - name: ip2
    type: InnerProduct
    bottom: h
    top: scores
    inner_product_param: {num_output: 3, weight_filler: {type: gaussian, std: 0.8}}
  - {name: loss, type: SoftmaxWithLoss, bottom: [scores, label], top: loss}
"""

PYTHON_LAYER = '''\
import numpy as np
import netlayers


class Cube(netlayers.Layer):
    """y = x^3; backward dE/dx = dE/dy * 3 x^2 (or, when WRONG, 2 x^2)."""
    WRONG = {wrong}

    def Reshape(self, bottom, top):
        top[0].reshape_like(bottom[0])

    def Forward_cpu(self, bottom, top):
        top[0].data[...] = bottom[0].data ** 3

    def Backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            slope = 2 if self.WRONG else 3
            bottom[0].diff[...] = top[0].diff * slope * bottom[0].data ** 2
'''

PYTHON_NET = """\
name: with_python
layers:
  - name: data
    type: Input
    top: x
    input_param: {{shape: [{{dim: [3, 4]}}]}}
  - name: cube
    type: Python
    bottom: x
    top: y
    python_param: {{module: {module}, layer: Cube}}
  - name: total
    type: InnerProduct
    bottom: y
    top: out
    loss_weight: 1
    inner_product_param: {{num_output: 1, weight_filler: {{type: gaussian, std: 1}}}}
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# -- time -------------------------------------------------------------------------------------
def test_time_prints_a_row_per_layer(tmp_path, capsys):
    config = write(tmp_path, "mlp.yaml", MLP)
    assert main(["time", "--config", str(config), "--iterations", "3", "--warmup", "1"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()]
    names = [row[0] for row in rows[2:] if row and not row[0].startswith(("sum", "forward", "backward"))]
    # automatic Splits are timed too (they cost time), as caffe time shows them
    assert [n for n in names if not n.endswith("_split")] == ["data", "ip1", "relu1", "ip2", "loss", "acc"]
    assert "label_data_1_split" in names
    assert any(row[:2] == ["acc", "Accuracy"] and row[3] == "-" for row in rows)
    assert "forward-backward pass:" in out


def test_time_rejects_zero_iterations(tmp_path, capsys):
    config = write(tmp_path, "mlp.yaml", MLP)
    with pytest.raises(SystemExit) as info:
        main(["time", "--config", str(config), "--iterations", "0"])
    assert info.value.code == 2
    assert "--iterations: must be at least 1" in capsys.readouterr().err


# -- gradcheck --------------------------------------------------------------------------------
def test_gradcheck_passes_an_mlp_and_lists_layers_without_gradient(tmp_path, capsys):
    config = write(tmp_path, "mlp.yaml", MLP)
    assert main(["gradcheck", "--config", str(config), "--max-elements", "20"]) == 0
    out = capsys.readouterr().out
    assert "gradient check of InnerProduct layer 'ip1'" in out
    assert "gradient check of ReLU layer 'relu1'" in out
    assert "Accuracy layer 'acc': no gradient" in out
    assert "Input layer 'data': no gradient" in out
    assert out.strip().splitlines()[-1] == "gradcheck: 4 layer(s) checked, 4 passed; without gradient: data, acc"


@pytest.mark.parametrize("wrong, code", [(False, 0), (True, 1)])
def test_gradcheck_catches_a_wrong_python_layer(tmp_path, capsys, wrong, code):
    module = f"gc_cube_{'wrong' if wrong else 'right'}"
    write(tmp_path, f"{module}.py", PYTHON_LAYER.format(wrong=wrong))
    config = write(tmp_path, "net.yaml", PYTHON_NET.format(module=module))
    assert main(["gradcheck", "--config", str(config)]) == code
    out = capsys.readouterr().out
    cube = out[out.index("Python layer 'cube'") :].splitlines()
    row = next(line for line in cube if line.startswith("bottom[0] x"))
    assert row.split()[-1] == ("NO" if wrong else "yes")
    last = out.strip().splitlines()[-1]
    if wrong:
        assert "1 FAILED (threshold 1e-05): 'cube'" in last
    else:
        assert last == "gradcheck: 2 layer(s) checked, 2 passed; without gradient: data"


def test_gradcheck_one_layer_and_unknown_layer(tmp_path, capsys):
    config = write(tmp_path, "mlp.yaml", MLP)
    assert main(["gradcheck", "--config", str(config), "--layer", "ip2"]) == 0
    out = capsys.readouterr().out
    assert "'ip2'" in out and "'ip1'" not in out
    assert main(["gradcheck", "--config", str(config), "--layer", "ip3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "--layer: no layer named 'ip3'" in err and "layers: data, ip1, relu1, ip2, loss, acc" in err


def test_gradcheck_reports_a_python_layer_that_raises(tmp_path, capsys):
    write(
        tmp_path,
        "gc_cube_raising.py",
        PYTHON_LAYER.format(wrong=False).replace("slope = 2 if self.WRONG else 3", "slope = np.ones(5)"),
    )
    config = write(tmp_path, "net.yaml", PYTHON_NET.format(module="gc_cube_raising"))
    assert main(["gradcheck", "--config", str(config), "--layer", "cube"]) == 1
    out = capsys.readouterr().out
    assert "gradient check of Python layer 'cube': FAILED with ValueError" in out


# -- draw -------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix, magic", [(".svg", b"<?xml"), (".png", b"\x89PNG")])
def test_draw_renders_pictures(tmp_path, capsys, suffix, magic):
    config = write(tmp_path, "mlp.yaml", MLP)
    out = tmp_path / f"net{suffix}"
    assert main(["draw", "--config", str(config), "-o", str(out), "--rankdir", "TB"]) == 0
    assert out.read_bytes().startswith(magic)
    assert capsys.readouterr().out.strip() == f"wrote {out}"


def test_draw_dot_has_shapes(tmp_path):
    config = write(tmp_path, "mlp.yaml", MLP)
    out = tmp_path / "net.dot"
    assert main(["draw", "--config", str(config), "-o", str(out), "--phase", "test"]) == 0
    text = out.read_text()
    assert 'label="ip1\\n(4, 5)"' in text and "(TEST)" in text and "rankdir=LR" in text


def test_draw_without_graphviz_writes_dot_and_exits_1(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    config = write(tmp_path, "mlp.yaml", MLP)
    assert main(["draw", "--config", str(config), "-o", str(tmp_path / "net.svg")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "apt-get install graphviz" in err
    assert (tmp_path / "net.dot").read_text().startswith('digraph "mlp"')
    assert not (tmp_path / "net.svg").exists()


def test_draw_without_data_falls_back_to_the_spec(tmp_path, capsys):
    config = write(
        tmp_path,
        "data.yaml",
        """\
        name: needs_data
        layers:
          - name: data
            type: Data
            top: [data, label]
            data_param: {source: no-such-dataset/train, batch_size: 4}
          - {name: ip, type: InnerProduct, bottom: data, top: ip, inner_product_param: {num_output: 2}}
        """,
    )
    out = tmp_path / "net.dot"
    assert main(["draw", "--config", str(config), "-o", str(out), "--data-root", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "the net could not be built, so blob shapes are left out" in err
    assert "no-such-dataset" in err
    assert '"blob:data" -> "layer:1:ip";' in out.read_text()


def test_draw_bad_suffix_and_missing_config(tmp_path, capsys):
    config = write(tmp_path, "mlp.yaml", MLP)
    assert main(["draw", "--config", str(config), "-o", str(tmp_path / "net.jpg")]) == 2
    assert "use .svg, .png, .pdf or .dot" in capsys.readouterr().err
    assert main(["draw", "--config", str(tmp_path / "nope.yaml"), "-o", str(tmp_path / "n.dot")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"netlayers: error: {tmp_path / 'nope.yaml'}: no such config file"


# -- explain ----------------------------------------------------------------------------------
def parse_table(out):
    """{blob: (value text, gradient text)} from the explain table (columns split on 2+ spaces)."""
    lines = out.splitlines()
    header = lines[1]
    starts = [header.index(col) for col in ("blob", "role", "shape", "value", "gradient")]
    rows = {}
    for line in lines[2:]:
        if line.startswith("value:"):
            break
        cells = [line[a:b].strip() for a, b in zip(starts, starts[1:] + [None])]
        rows[cells[0]] = cells
    return rows


def numbers(text):
    return np.array([float(v) for v in re.findall(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?", text)])


def test_explain_prints_the_net_blobs_values_and_gradients(tmp_path, capsys):
    config = write(tmp_path, "tiny.yaml", TINY)
    assert main(["explain", "--config", str(config)]) == 0
    rows = parse_table(capsys.readouterr().out)
    net = build_net(explain_spec(build_net(config).spec, "TRAIN"), seed=0, dtype="float64")
    explain_net(net)
    for name in ["x", "h", "h@relu1", "scores", "loss"]:
        blob = net.blobs[name]
        np.testing.assert_allclose(numbers(rows[name][3]), blob.data.ravel(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(numbers(rows[name][4]), blob.diff.ravel(), rtol=1e-5, atol=1e-6)
    assert rows["label"][3:] == ["[1, 1]", "-"]
    assert rows["ip1[0]"][1:3] == ["param", "(2, 3)"]
    np.testing.assert_allclose(numbers(rows["ip1[1]"][3]), [0.2, 0.2])
    np.testing.assert_allclose(numbers(rows["ip1[1]"][4]), net.layer("ip1").blobs[1].diff, rtol=1e-5)


def test_explain_input_option_statistics_and_graph(tmp_path, capsys):
    config = write(tmp_path, "tiny.yaml", TINY)
    svg = tmp_path / "graph.svg"
    args = [
        "explain",
        "--config",
        str(config),
        "--input",
        "x=1,2,3,-1,-2,-3",
        "--input",
        "label=2",
        "--max-elements",
        "4",
        "-o",
        str(svg),
    ]
    if shutil.which("dot") is None:
        args[-1] = str(tmp_path / "graph.dot")
    assert main(args) == 0
    out = capsys.readouterr().out
    rows = parse_table(out)
    assert rows["x"][3] == "mean 0 std 2.16025 min -3 max 3"
    assert rows["label"][3] == "[2, 2]"
    assert rows["loss"][4] == "1"
    if shutil.which("dot") is not None:
        text = svg.read_text()
        assert "<svg" in text and "h@relu1" in text and 'fill="red"' in text


@pytest.mark.parametrize(
    "option, message",
    [
        ("q=1", "'q' is not an input blob; inputs: x, label"),
        ("x", "expected NAME=v1,v2,..."),
        ("x=1,2", "2 values for blob 'x' of shape (2, 3), which holds 6"),
        ("x=a", "values must be numbers"),
    ],
)
def test_explain_bad_input_option(tmp_path, capsys, option, message):
    config = write(tmp_path, "tiny.yaml", TINY)
    assert main(["explain", "--config", str(config), "--input", option]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err


# -- plot -------------------------------------------------------------------------------------
def write_metrics(run, extra=""):
    run.mkdir()
    lines = []
    for i in range(20):
        lines.append(json.dumps({"phase": "train", "iter": i, "loss": 1 / (i + 1), "lr": 0.01}))
        if i % 5 == 4:
            lines.append(json.dumps({"phase": "test", "iter": i, "loss": 1.2 / (i + 1), "accuracy": i / 20}))
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n" + extra)


def test_plot_writes_curves(tmp_path, capsys):
    run = tmp_path / "run"
    write_metrics(run)
    assert main(["plot", str(run)]) == 0
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "20 train and 4 test iterations" in capsys.readouterr().out
    assert main(["plot", str(run / "metrics.jsonl"), "-o", str(tmp_path / "c.svg")]) == 0
    assert "<svg" in (tmp_path / "c.svg").read_text()


def test_plot_malformed_line_and_missing_run(tmp_path, capsys):
    run = tmp_path / "run"
    write_metrics(run, extra='{"phase": "train", "iter": 20, "loss": \n')
    assert main(["plot", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"netlayers: error: {run / 'metrics.jsonl'}:25: not valid JSON")
    assert main(["plot", str(tmp_path / "nothing")]) == 2
    assert "no such run folder" in capsys.readouterr().err


def test_plot_without_matplotlib_says_how_to_install(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    write_metrics(run)
    for name in ["matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"]:
        monkeypatch.setitem(sys.modules, name, None)
    assert main(["plot", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "netlayers: error: plotting needs matplotlib, which is not installed: "
        "pip install 'netlayers[plot]' (or: pip install matplotlib)"
    )


EXAMPLES = Path(__file__).resolve().parents[2] / "configs" / "examples"


def test_explain_the_lecture_circuit(capsys):
    assert main(["explain", "--config", str(EXAMPLES / "circuit.yaml")]) == 0
    rows = parse_table(capsys.readouterr().out)
    got = {name: (row[3], row[4]) for name, row in rows.items()}
    assert got == {"x": ("-2", "-4"), "y": ("5", "-4"), "z": ("-4", "3"), "q": ("3", "-4"), "f": ("-12", "1")}
    assert main(["explain", "--config", str(EXAMPLES / "circuit.yaml"), "--input", "x=1"]) == 0
    rows = parse_table(capsys.readouterr().out)
    assert rows["q"][3:] == ["6", "-4"] and rows["f"][3] == "-24" and rows["z"][4] == "6"


def test_explain_sums_gradients_at_a_branch(tmp_path, capsys):
    dot = tmp_path / "branch.dot"
    assert main(["explain", "--config", str(EXAMPLES / "branch.yaml"), "-o", str(dot)]) == 0
    rows = parse_table(capsys.readouterr().out)
    assert rows["x"][4] == "-2"
    text = dot.read_text()
    # x's two edges carry their own branch gradients, y = -4 and z = 2
    assert text.count('"input:x" -> ') == 2
    assert '<font color="red">-4</font>' in text and '<font color="red">2</font>' in text


# -- plot: what each curve shows --------------------------------------------------------------
def write_logged_run(run):
    """A run as the trainer logs it: "loss" is the smoothed (average_loss) loss, "raw_loss" the
    displayed iteration's own, "output/loss" the net's loss output (the same figure again)."""
    run.mkdir()
    lines = []
    for i in range(0, 1001, 100):
        raw = 2.4 if i == 0 else 0.4 + (0.1 if i % 200 else -0.1)
        smoothed = 2.4 if i == 0 else 0.5
        lines.append(
            json.dumps(
                {
                    "phase": "train",
                    "iter": i,
                    "loss": smoothed,
                    "raw_loss": raw,
                    "lr": 0.01,
                    "iters_per_sec": 90.0,
                    "output/loss": raw,
                }
            )
        )
        if i % 500 == 0:
            lines.append(json.dumps({"phase": "test", "iter": i, "accuracy": 0.1 + i / 1250, "loss": 2.3 - i / 1000}))
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def test_plot_shows_the_logged_loss_each_curve_once_and_accuracy_on_its_own_axis(tmp_path):
    from netlayers.inspect.plotting import draw_figure, load_metrics

    run = tmp_path / "run"
    write_logged_run(run)
    figure = draw_figure(load_metrics(run))
    loss_axes, output_axes, lr_axes = figure.axes
    curves = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in loss_axes.get_lines()}
    assert sorted(curves) == ["test loss", "train loss (as logged)", "train loss (displayed iteration)"]
    xs, ys = curves["train loss (as logged)"]
    assert ys[xs.index(500)] == 0.5  # as the log says, not smoothed again
    accuracy = output_axes.get_lines()
    assert [line.get_label() for line in accuracy] == ["test accuracy"]
    assert list(accuracy[0].get_ydata()) == [0.1, 0.5, 0.9]
    low, high = output_axes.get_ylim()
    assert high < 1.0 < 2.4  # its own scale, not the loss's
    assert [line.get_label() for line in lr_axes.get_lines()] == ["learning rate"]
