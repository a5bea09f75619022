"""metrics.jsonl reading (with line-numbered errors) and the picture."""

import json

import pytest

from netlayers.errors import DataError
from netlayers.inspect import load_metrics, plot_metrics
from netlayers.inspect.plotting import plan_panels


def write_run(folder, records, extra_lines=()):
    folder.mkdir(exist_ok=True)
    lines = [json.dumps(r) for r in records] + list(extra_lines)
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def records(n=30):
    out = []
    for i in range(0, n):
        out.append(
            {
                "phase": "train",
                "iter": i * 10,
                "loss": 2.0 / (1 + i),
                "raw_loss": 2.1 / (1 + i),
                "lr": 0.1 * 0.5 ** (i // 10),
                "iters_per_sec": 50.0,
                "per_class": [0.5, 0.25],
            }
        )
        if i % 10 == 9:
            out.append({"phase": "test", "iter": i * 10, "loss": 2.5 / (1 + i), "accuracy": i / n})
    return out


def test_load_metrics_series(tmp_path):
    metrics = load_metrics(write_run(tmp_path / "run", records()))
    xs, ys = metrics.get("train", "loss")
    assert xs[:3] == [0, 10, 20] and ys[0] == 2.0
    assert metrics.keys("test") == ["loss", "accuracy"]
    assert metrics.count("train") == 30 and metrics.count("test") == 3
    assert "per_class" not in metrics.keys("train")  # lists are not curves
    assert plan_panels(metrics) == (["loss", "outputs", "lr"], [("test", "accuracy")])


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"phase": "val", "iter": 3}', "'phase' must be"),
        ('{"phase": "train", "iter": "x"}', "'iter' must be an integer"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, line, message):
    run = write_run(tmp_path / "run", records(2), [line])
    with pytest.raises(DataError, match=message) as info:
        load_metrics(run)
    assert str(info.value).startswith(f"{run / 'metrics.jsonl'}:3: ")


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no metrics.jsonl in this run folder"):
        load_metrics(tmp_path)


def test_plot_writes_a_png(tmp_path):
    metrics = load_metrics(write_run(tmp_path / "run", records()))
    out = plot_metrics(metrics, tmp_path / "curves.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
