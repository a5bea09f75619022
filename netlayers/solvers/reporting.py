"""What a training run tells its user: Caffe's log lines, a metrics file, a progress bar.

The solver calls a reporter at fixed points; every method is optional (a reporter of one's own
may define only some of them):

- ``on_start(solver)``: once, before the first iteration (of ``solve`` or the first ``step``)
- ``on_iteration(iteration)``: after every update (iteration = updates done); drives the bar
- ``on_train(iteration, loss, smoothed_loss, lr, outputs, iters_per_sec)``: every ``display``
  iterations, and once more at the end of ``solve`` (then ``lr`` and ``iters_per_sec`` are None)
- ``on_test(iteration, results)``: after each test of the TEST net ({output name: mean})
- ``on_snapshot(iteration, weights_path, state_path)``
- ``on_message(text)``: anything else worth a line
- ``on_end()``: once at the end of ``solve`` (``solver.status`` says "done", "stopped" or
  "failed")

The default :class:`Reporter` writes Caffe's lines to stderr::

    Iteration 100 (12.3 iter/s, 8.13s/100 iters), loss = 0.53
        Train net output #0: loss = 0.53 (* 1 = 0.53 loss)
    Iteration 100, lr = 0.00992565
    Iteration 1000, Testing net (#0)
        Test net output #0: accuracy = 0.88
    Snapshotting to binary proto file runs/x_iter_1000.weights.npz
    Optimization Done.

and appends every displayed figure to ``<output_dir>/metrics.jsonl``, one JSON object a line,
flushed as written::

    {"phase": "train", "iter": 100, "loss": 0.53, "raw_loss": 0.51, "lr": 0.0099,
     "iters_per_sec": 12.3, "accuracy": 0.8}                              (one line in the file)
    {"phase": "test", "iter": 1000, "accuracy": 0.88, "loss": 0.35}

A write that fails (a full disk, a closed stream) raises the OSError with ``filename`` set to
the file or stream written, and the metrics file is no longer written; the solver then stops
with a snapshot and a TrainingError naming the file (see Solver).

For training, "loss" is the displayed (smoothed over ``average_loss``) loss and "raw_loss" the
iteration's own; net outputs follow by name (an output named like one of those keys is stored as
``output/<name>``); outputs with several values are lists. A fresh run (iteration 0) starts a new
file; a resumed run keeps the lines before its iteration and appends.

When stderr is a terminal (and not ``quiet``) a tqdm progress bar runs over the iterations and
log lines are written above it.
"""

import json
import os
import sys
from pathlib import Path

import numpy as np

from ..io import create_temporary

RESERVED = ("phase", "iter", "loss", "raw_loss", "lr", "iters_per_sec")
MAX_ELEMENTS_SHOWN = 10  # outputs with more values are summarised in the log (not the file)


def fmt(value):
    """Numbers as Caffe's streams print them (6 significant digits)."""
    return f"{value:.6g}"


def loss_weights(net):
    """{blob name: loss weight} for the blobs of ``net`` that carry a loss weight."""
    weights = {}
    if net is None:
        return weights
    for layer in net.layers:
        for name, weight in zip(layer.spec.tops, layer.loss_weights):
            if weight:
                weights[name] = weight
    return weights


def as_json_value(value):
    array = np.asarray(value, dtype=np.float64)
    return float(array.reshape(())) if array.size == 1 else array.reshape(-1).tolist()


class Reporter:
    """The default reporter: log lines on stderr, ``metrics.jsonl``, a tqdm bar on a terminal.

    ``quiet``: no log lines and no bar (the metrics file is still written).
    ``metrics``: write the metrics file (default true); ``metrics_path`` overrides its place
    (default ``<solver.output_dir>/metrics.jsonl``).
    ``progress``: force the bar on or off (default: when the stream is a terminal).
    ``stream``: where lines go (default ``sys.stderr`` at the time of writing).
    """

    def __init__(self, *, quiet=False, metrics=True, metrics_path=None, progress=None, stream=None):
        self.quiet = quiet
        self.metrics = metrics
        self.metrics_path = Path(metrics_path) if metrics_path else None
        self.progress = progress
        self.stream = stream
        self.solver = None
        self.bar = None
        self._file = None
        self._file_path = None
        self._weights = {"train": {}, "test": {}}

    # -- output -------------------------------------------------------------------------------
    @property
    def out(self):
        return self.stream if self.stream is not None else sys.stderr

    def line(self, text):
        """Write one log line (above the bar when there is one); nothing when quiet."""
        if self.quiet:
            return
        try:
            if self.bar is not None:
                self.bar.write(text, file=self.out)
            else:
                print(text, file=self.out, flush=True)
        except OSError as err:
            raise named(err, getattr(self.out, "name", "the log stream")) from None

    def record(self, entry):
        """Append one JSON line to the metrics file and flush it. On an OSError the file is
        closed (nothing more is recorded) and the error raised with the file's name."""
        if self._file is None:
            return
        try:
            self._file.write(json.dumps(entry) + "\n")
            self._file.flush()
        except OSError as err:
            self._close_metrics()
            raise named(err, self._file_path) from None

    # -- the solver's calls ---------------------------------------------------------------------
    def on_start(self, solver):
        self.solver = solver
        self._weights = {"train": loss_weights(solver.net), "test": [loss_weights(net) for net in solver.test_nets]}
        if self.metrics:
            self._file_path = self.metrics_path or Path(solver.output_dir) / "metrics.jsonl"
            try:
                self._file = open_metrics(self._file_path, solver.iter)
            except OSError as err:
                raise named(err, self._file_path) from None
        show_bar = self.progress if self.progress is not None else _isatty(self.out)
        if show_bar and not self.quiet:
            from tqdm import tqdm

            self.bar = tqdm(
                total=solver.param.max_iter,
                initial=solver.iter,
                file=self.out,
                unit="iter",
                dynamic_ncols=True,
                leave=True,
            )
        self.line(f"Solving {solver.net.name or solver.snapshot_prefix}")
        self.line(f"Learning Rate Policy: {solver.param.lr_policy}")

    def on_iteration(self, iteration):
        if self.bar is not None:
            try:
                self.bar.update(iteration - self.bar.n)
            except OSError as err:
                raise named(err, getattr(self.out, "name", "the log stream")) from None

    def on_train(self, iteration, loss, smoothed_loss, lr, outputs, iters_per_sec):
        speed = ""
        if iters_per_sec and self.solver is not None:  # Caffe's "(X iter/s, Ys/D iters)"
            display = self.solver.param.display
            speed = f" ({fmt(iters_per_sec)} iter/s, {fmt(display / iters_per_sec)}s/{display} iters)"
        self.line(f"Iteration {iteration}{speed}, loss = {fmt(smoothed_loss)}")
        self._output_lines("Train", outputs, self._weights["train"])
        if lr is not None:
            self.line(f"Iteration {iteration}, lr = {fmt(lr)}")
        if self.bar is not None:
            self.bar.set_postfix(loss=fmt(smoothed_loss), refresh=False)
        entry = {"phase": "train", "iter": iteration, "loss": float(smoothed_loss), "raw_loss": float(loss)}
        if lr is not None:
            entry["lr"] = float(lr)
        if iters_per_sec:
            entry["iters_per_sec"] = float(iters_per_sec)
        self.record(_with_outputs(entry, outputs))

    def on_test(self, iteration, results, net=0):
        """TEST net ``net``'s results; in metrics.jsonl, an entry of a second or later TEST net
        carries ``"net": k``."""
        self.line(f"Iteration {iteration}, Testing net (#{net})")
        weights = self._weights["test"]
        self._output_lines("Test", results, weights[net] if net < len(weights) else {})
        entry = {"phase": "test", "iter": iteration, **({"net": net} if net else {})}
        self.record(_with_outputs(entry, results, reserved=("phase", "iter", "net")))

    def on_snapshot(self, iteration, weights_path, state_path):
        self.line(f"Snapshotting to binary proto file {weights_path}")
        self.line(f"Snapshotting solver state to binary proto file {state_path}")

    def on_message(self, text):
        self.line(text)

    def on_end(self):
        status = getattr(self.solver, "status", "done")
        if status == "done":
            self.line("Optimization Done.")
        elif status == "stopped":
            self.line("Optimization stopped early.")
        self.close()

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self._close_metrics()

    def _close_metrics(self):
        """Close the metrics file; an error while closing it is dropped (every line was flushed
        as it was written, so nothing is lost)."""
        file, self._file = self._file, None
        if file is not None:
            try:
                file.close()
            except OSError:
                pass

    # -- helpers ---------------------------------------------------------------------------------
    def _output_lines(self, phase, outputs, weights):
        index = 0
        for name, value in outputs.items():
            array = np.asarray(value, dtype=np.float64).reshape(-1)
            weight = weights.get(name, 0.0)
            if array.size > MAX_ELEMENTS_SHOWN:
                self.line(f"    {phase} net output #{index}: {name} = <{array.size} values, mean {fmt(array.mean())}>")
                index += array.size
                continue
            for item in array:
                extra = f" (* {fmt(weight)} = {fmt(weight * item)} loss)" if weight else ""
                self.line(f"    {phase} net output #{index}: {name} = {fmt(item)}{extra}")
                index += 1


def _with_outputs(entry, outputs, reserved=RESERVED):
    for name, value in outputs.items():
        key = f"output/{name}" if name in reserved else name
        entry[key] = as_json_value(value)
    return entry


def named(err, filename):
    """``err`` (an OSError) with ``filename`` set, so a message can say which file failed."""
    if err.filename is None:
        err = type(err)(err.errno, err.strerror or str(err), str(filename))
    return err


def _isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def open_metrics(path, start_iter):
    """Open ``path`` for appending. At iteration 0 the file starts empty; when resuming at
    ``start_iter`` only the lines of earlier iterations are kept (a run killed after its last
    snapshot leaves lines that the resumed run will write again)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kept = []
    if start_iter > 0 and path.is_file():
        for text in path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(text)
            except ValueError:
                continue
            if isinstance(entry, dict) and isinstance(entry.get("iter"), int) and entry["iter"] < start_iter:
                kept.append(text)
    fd, tmp = create_temporary(path)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write("".join(line + "\n" for line in kept))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return open(path, "a")
