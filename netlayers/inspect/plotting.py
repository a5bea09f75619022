"""Training curves from a run's ``metrics.jsonl``.

The trainer (``netlayers.solvers.reporting``) writes one JSON object per line: ``{"phase":
"train" | "test", "iter": int, "loss": float, "raw_loss": float, "lr": float, ...}`` plus the
net's other outputs (``accuracy``...; outputs with several values are lists, not plotted).
``load_metrics`` reads them into series (phase -> key -> (iterations, values)), checking every
line; ``plot_metrics`` draws, against iterations, one panel each for:

- losses (every key with "loss" in its name): the training loss as the log shows it (``loss``:
  the mean over the solver's ``average_loss`` iterations; nothing is smoothed again here), each
  displayed iteration's own loss (``raw_loss``) faint, and the test losses (dots);
- other outputs (accuracy...), of the test phase and of the train phase, on their own axis;
- learning rate (log scale when it spans more than a factor 10).

Each curve is drawn once: a series equal to one already drawn (the net's loss output, stored
as ``output/loss`` beside ``raw_loss``; ``raw_loss`` when ``average_loss`` is 1) is left out.

Panels with nothing to show are left out. matplotlib is an optional extra (``pip install
'netlayers[plot]'``); it is used through its object API with the Agg canvas, never pyplot, so no
window opens and no global backend is changed.
"""

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError, NetlayersError

METRICS_FILE = "metrics.jsonl"
PHASES = ("train", "test")
#: Keys that are not curves.
NOT_PLOTTED = {
    "phase",
    "iter",
    "lr",
    "raw_loss",
    "iters_per_sec",
    "epoch",
    "time",
    "elapsed",
    "seconds",
    "wall_time",
    "timestamp",
}
INSTALL_HINT = "pip install 'netlayers[plot]' (or: pip install matplotlib)"


@dataclass
class Metrics:
    """Series read from a metrics file: ``series[phase][key] = (iterations, values)``."""

    path: Path
    series: dict = field(default_factory=lambda: {phase: {} for phase in PHASES})
    lines: int = 0

    def get(self, phase, key):
        return self.series[phase].get(key, ([], []))

    def keys(self, phase):
        return list(self.series[phase])

    def count(self, phase):
        iters = set()
        for xs, _ in self.series[phase].values():
            iters.update(xs)
        return len(iters)


def metrics_path(run):
    """``RUN_DIR/metrics.jsonl``, or ``run`` itself when it names a file."""
    path = Path(run)
    if not path.exists():
        raise DataError("no such run folder (or metrics file)", file=str(path))
    if path.is_dir():
        if not (path / METRICS_FILE).is_file():
            raise DataError(f"no {METRICS_FILE} in this run folder (training writes it there)", file=str(path))
        path = path / METRICS_FILE
    return path


def load_metrics(run):
    """Read and check a metrics file; a malformed line is a one-line DataError with its line."""
    path = metrics_path(run)
    metrics = Metrics(path)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError:
        raise DataError("not a metrics file: not UTF-8 text", file=str(path)) from None
    except OSError as err:
        raise DataError(f"cannot read: {err.strerror or err}", file=str(path)) from None
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue

        def bad(message, number=number):
            return DataError(message, file=str(path), line=number)

        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            raise bad(f"not valid JSON: {err.msg} (column {err.colno})") from None
        if not isinstance(record, dict):
            raise bad(f"expected a JSON object, got {type(record).__name__}")
        phase = record.get("phase")
        if phase not in PHASES:
            raise bad(f'\'phase\' must be "train" or "test", got {json.dumps(phase)}')
        step = record.get("iter")
        if (
            isinstance(step, bool)
            or not isinstance(step, (int, float))
            or (isinstance(step, float) and not step.is_integer())
        ):
            raise bad(f"'iter' must be an integer, got {json.dumps(step)}")
        for key, value in record.items():
            if key in ("phase", "iter") or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            xs, ys = metrics.series[phase].setdefault(key, ([], []))
            xs.append(int(step))
            ys.append(float(value))
        metrics.lines += 1
    if not any(metrics.series[phase] for phase in PHASES):
        raise DataError("no metrics to plot (the file has no numeric values)", file=str(path))
    return metrics


def _figure_class():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise NetlayersError(f"plotting needs matplotlib, which is not installed: {INSTALL_HINT}") from None
    return Figure, FigureCanvasAgg


def is_loss(key):
    """Whether a metrics key is a loss (drawn on the loss panel): "loss" is in its name."""
    return "loss" in key.lower()


def plan_panels(metrics):
    """The panels to draw, in order: "loss", "outputs", "lr" (those with something to show),
    and the (phase, key) pairs of the outputs panel (the figures that are not losses)."""
    train, test = metrics.series["train"], metrics.series["test"]
    panels = []
    if (
        any(is_loss(key) for key in train if key not in NOT_PLOTTED)
        or "raw_loss" in train
        or any(is_loss(key) for key in test)
    ):
        panels.append("loss")
    outputs = [
        (phase, key)
        for phase in ("test", "train")
        for key in metrics.series[phase]
        if key not in NOT_PLOTTED and not is_loss(key)
    ]
    if outputs:
        panels.append("outputs")
    if "lr" in train or "lr" in test:
        panels.append("lr")
    if not panels:
        raise DataError("no loss, outputs or learning rate to plot", file=str(metrics.path))
    return panels, outputs


def loss_curves(metrics):
    """The curves of the loss panel, each once: (phase, key, label, style) in drawing order."""
    train, test = metrics.series["train"], metrics.series["test"]
    curves = []
    if "loss" in train:
        curves.append(("train", "loss", "train loss (as logged)", "main"))
    if "raw_loss" in train:
        curves.append(("train", "raw_loss", "train loss (displayed iteration)", "faint"))
    curves += [
        ("train", key, f"train {key}", "thin")
        for key in train
        if is_loss(key) and key not in NOT_PLOTTED and key != "loss"
    ]
    curves += [("test", key, f"test {key}", "dots") for key in test if is_loss(key)]
    drawn, unique = [], []
    for phase, key, label, style in curves:
        series = metrics.series[phase][key]
        if not any(_same_series(series, other) for other in drawn):
            drawn.append(series)
            unique.append((phase, key, label, style))
    return unique


def _same_series(a, b):
    (xs_a, ys_a), (xs_b, ys_b) = a, b
    return xs_a == xs_b and all(
        math.isclose(y, z, rel_tol=1e-6, abs_tol=1e-12) or (math.isnan(y) and math.isnan(z)) for y, z in zip(ys_a, ys_b)
    )


LOSS_STYLES = {
    "main": {"color": "tab:blue", "linewidth": 1.8},
    "faint": {"color": "tab:blue", "alpha": 0.3, "linewidth": 1},
    "thin": {"linewidth": 1, "alpha": 0.8},
    "dots": {"marker": "o", "markersize": 4},
}


def draw_figure(metrics, *, title=None):
    """A matplotlib Figure (Agg canvas) with the panels described in the module docstring."""
    Figure, Canvas = _figure_class()
    panels, outputs = plan_panels(metrics)
    train, test = metrics.series["train"], metrics.series["test"]
    figure = Figure(figsize=(8, 2.8 * len(panels) + 0.6), layout="constrained")
    Canvas(figure)
    axes = figure.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    figure.suptitle(title or f"{metrics.path.parent.name or metrics.path.name}")
    for ax, panel in zip(axes, panels):
        if panel == "loss":
            for phase, key, label, style in loss_curves(metrics):
                xs, ys = metrics.series[phase][key]
                ax.plot(xs, ys, label=label, **LOSS_STYLES[style])
            ax.set_ylabel("loss")
        elif panel == "outputs":
            for phase, key in outputs:
                xs, ys = metrics.series[phase][key]
                style = "o-" if phase == "test" else "-"
                ax.plot(xs, ys, style, markersize=4, label=f"{phase} {key}", alpha=1.0 if phase == "test" else 0.6)
            ax.set_ylabel("outputs" if len(outputs) > 1 else outputs[0][1])
        else:
            xs, ys = train.get("lr") or test["lr"]
            ax.plot(xs, ys, color="tab:green", label="learning rate")
            positive = [y for y in ys if y > 0]
            if positive and len(positive) == len(ys) and max(positive) > 10 * min(positive):
                ax.set_yscale("log")
            ax.set_ylabel("learning rate")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    axes[-1].set_xlabel("iteration")
    return figure


def plot_metrics(metrics, output, *, title=None):
    """Draw the panels described in the module docstring into ``output`` (.png, .svg, .pdf)."""
    output = Path(output)
    figure = draw_figure(metrics, title=title)
    if not output.parent.exists():
        raise NetlayersError(f"-o {output}: the folder {output.parent} does not exist")
    try:
        figure.savefig(output, dpi=110)
    except (ValueError, OSError) as err:
        raise NetlayersError(f"-o {output}: cannot write the plot: {err}") from None
    return output
