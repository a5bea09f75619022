"""Training curves from a run's ``metrics.jsonl``.

The trainer (``netlayers.solvers.reporting``) writes one JSON object per line: ``{"phase":
"train" | "test", "iter": int, "loss": float, "raw_loss": float, "lr": float, ...}`` plus the
net's other outputs (``accuracy``...; outputs with several values are lists, not plotted).
``load_metrics`` reads them into series (phase -> key -> (iterations, values)), checking every
line; ``plot_metrics`` draws, against iterations, one panel each for:

- loss: each iteration's training loss (``raw_loss``, else ``loss``) faint, its smoothed curve
  (an exponential moving average, debiased as TensorBoard does) and the test loss (dots);
- other outputs: every other numeric key of the test phase (accuracy...), and of the train
  phase when there is one;
- learning rate (log scale when it spans more than a factor 10).

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
NOT_PLOTTED = {"phase", "iter", "lr", "raw_loss", "iters_per_sec", "epoch", "time", "elapsed",
               "seconds", "wall_time", "timestamp"}
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
            raise DataError(f"no {METRICS_FILE} in this run folder (training writes it there)",
                            file=str(path))
        path = path / METRICS_FILE
    return path


def load_metrics(run):
    """Read and check a metrics file; a malformed line is a one-line DataError with its line."""
    path = metrics_path(run)
    metrics = Metrics(path)
    with open(path) as handle:
        for number, text in enumerate(handle, 1):
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
                raise bad(f"'phase' must be \"train\" or \"test\", got {json.dumps(phase)}")
            step = record.get("iter")
            if isinstance(step, bool) or not isinstance(step, (int, float)) or \
                    (isinstance(step, float) and not step.is_integer()):
                raise bad(f"'iter' must be an integer, got {json.dumps(step)}")
            for key, value in record.items():
                if key in ("phase", "iter") or isinstance(value, bool) or \
                        not isinstance(value, (int, float)):
                    continue
                xs, ys = metrics.series[phase].setdefault(key, ([], []))
                xs.append(int(step))
                ys.append(float(value))
            metrics.lines += 1
    if not any(metrics.series[phase] for phase in PHASES):
        raise DataError("no metrics to plot (the file has no numeric values)", file=str(path))
    return metrics


def smooth(values, weight=0.9):
    """Debiased exponential moving average: s_t = w s_(t-1) + (1 - w) v_t, divided by 1 - w^t.
    NaN and infinite values are skipped (they keep the previous average)."""
    out, average, steps = [], 0.0, 0
    for value in values:
        if math.isfinite(value):
            average = weight * average + (1 - weight) * value
            steps += 1
        out.append(average / (1 - weight ** steps) if steps else float("nan"))
    return out


def _figure_class():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise NetlayersError(f"plotting needs matplotlib, which is not installed: {INSTALL_HINT}") from None
    return Figure, FigureCanvasAgg


def plan_panels(metrics):
    """The panels to draw, in order: "loss", "outputs", "lr" (those with something to show),
    and the (phase, key) pairs of the outputs panel."""
    train, test = metrics.series["train"], metrics.series["test"]
    panels = []
    if "loss" in train or "raw_loss" in train or "loss" in test:
        panels.append("loss")
    outputs = [("test", k) for k in test if k not in NOT_PLOTTED and k != "loss"] + \
              [("train", k) for k in train if k not in NOT_PLOTTED and k != "loss"]
    if outputs:
        panels.append("outputs")
    if "lr" in train or "lr" in test:
        panels.append("lr")
    if not panels:
        raise DataError("no loss, outputs or learning rate to plot", file=str(metrics.path))
    return panels, outputs


def plot_metrics(metrics, output, *, smoothing=0.9, title=None):
    """Draw the panels described in the module docstring into ``output`` (.png, .svg, .pdf)."""
    if not 0 <= smoothing < 1:
        raise NetlayersError(f"--smooth must be in [0, 1), got {smoothing:g}")
    Figure, Canvas = _figure_class()
    output = Path(output)
    if not output.parent.exists():
        raise NetlayersError(f"-o {output}: the folder {output.parent} does not exist")
    train, test = metrics.series["train"], metrics.series["test"]
    panels, outputs = plan_panels(metrics)
    lr = train.get("lr") or test.get("lr")
    figure = Figure(figsize=(8, 2.8 * len(panels) + 0.6), layout="constrained")
    Canvas(figure)
    axes = figure.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    figure.suptitle(title or f"{metrics.path.parent.name or metrics.path.name}")
    for ax, panel in zip(axes, panels):
        if panel == "loss":
            if "loss" in train or "raw_loss" in train:
                xs, ys = train.get("raw_loss") or train["loss"]
                ax.plot(xs, ys, color="tab:blue", alpha=0.3, linewidth=1, label="train loss")
                if smoothing > 0:
                    ax.plot(xs, smooth(ys, smoothing), color="tab:blue", linewidth=1.8,
                            label=f"train loss (smoothed {smoothing:g})")
            if "loss" in test:
                xs, ys = test["loss"]
                ax.plot(xs, ys, "o-", color="tab:orange", markersize=4, label="test loss")
            ax.set_ylabel("loss")
        elif panel == "outputs":
            for phase, key in outputs:
                xs, ys = metrics.series[phase][key]
                style = "o-" if phase == "test" else "-"
                ax.plot(xs, ys, style, markersize=4, label=f"{phase} {key}",
                        alpha=1.0 if phase == "test" else 0.6)
            ax.set_ylabel("outputs" if len(outputs) > 1 else outputs[0][1])
        else:
            xs, ys = lr
            ax.plot(xs, ys, color="tab:green", label="learning rate")
            positive = [y for y in ys if y > 0]
            if positive and len(positive) == len(ys) and max(positive) > 10 * min(positive):
                ax.set_yscale("log")
            ax.set_ylabel("learning rate")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    axes[-1].set_xlabel("iteration")
    try:
        figure.savefig(output, dpi=110)
    except (ValueError, OSError) as err:
        raise NetlayersError(f"-o {output}: cannot write the plot: {err}") from None
    return output
