"""The Solver: checks the ``solver:`` section, drives the nets, tests, snapshots and resumes.

One YAML file holds the net (``layers:``) and a ``solver:`` section with Caffe's
SolverParameter names; ``solver: {net: other.yaml}`` takes the net from another file instead
(relative to the config's folder). Defaults are Caffe's, except where Caffe has none:

- ``lr_policy`` defaults to "fixed" (Caffe has no default and refuses to run without one);
- ``base_lr`` and ``max_iter`` are required (Caffe silently uses 0); the policies' own fields
  (gamma, power, stepsize) are required by the policies that read them;
- ``snapshot_prefix`` defaults to the config file's name without extension (the net's name for
  a config given as a dict), as newer Caffe does with the solver file's name;
- beyond Caffe, ``warmup_iter`` (0) and ``warmup_start_lr`` (0): the rate ramps linearly from
  warmup_start_lr at iteration 0 to the policy's rate at warmup_iter (see lr_policy.py).

``solver_mode``, ``device_id``, ``snapshot_format`` and ``test_compute_loss`` are accepted
(configs converted from Caffe carry them) and have no effect; ``solver_mode: GPU`` or a non-zero
``device_id`` gets one log line at the start saying so (netlayers runs on the CPU).
``debug_info: true`` logs Caffe's per-layer figures on every displayed iteration (see
debug_info.py).

Checked before training, beyond Caffe: momentum in [0, 1) (SGD, Nesterov, AdaDelta, Adam's
momentum and momentum2), delta > 0 and rms_decay in [0, 1) for the adaptive rules, weight_decay
>= 0, multistep needs stepvalue; the TRAIN net must have a loss; ``test_iter`` holds one value
(one TEST net), needs a TEST net with outputs, and ``test_interval`` needs it; the output and
snapshot folders must be writable (checked when training starts); resuming past max_iter is
refused.

Nothing that cannot be saved gets trained: a layer name too long for an .npz member name (65,535
bytes with ".npy") or holding a NUL, a layer state that is not JSON, snapshot file names the file
system refuses: each is a ConfigError before iteration 0 (names and states when the solver is
built, file names when training starts).

Run folders: a fresh run (not resumed) refuses an output folder that already holds snapshots of
its prefix or a metrics.jsonl (a ConfigError saying how to go on) unless ``overwrite=True``,
which deletes those snapshots first; a resumed run appends to metrics.jsonl. When training
starts, temporary files that a killed snapshot left (``.<prefix>_iter_<N>.weights.npz.<8
characters>.tmp``, the same for ``.solverstate.npz`` and ``.metrics.jsonl``) are removed, with a
log line.

Every write training does fails the same way: an OSError while writing a snapshot is a
TrainingError naming the file and the reason; one while writing metrics.jsonl or a log line
stops training at the end of the iteration, writes a stop snapshot, and is then a TrainingError
naming the file, the reason and the last good snapshot.

One iteration, as Caffe's Solver::Step and SGDSolver::ApplyUpdate:

1. test first when ``test_interval`` divides the iteration (at 0 only with test_initialization);
2. clear the param diffs; run ``iter_size`` forward/backward passes (diffs add up); the loss is
   their mean; a NaN or infinite loss stops training with a TrainingError naming the last
   snapshot and its iteration (nothing is written);
3. clip: when the global L2 norm of all diffs exceeds ``clip_gradients`` (>= 0), scale every diff
   by clip / norm;
4. per param: divide by iter_size, add weight decay (L2: decay * w, L1: decay * sign(w), decay =
   weight_decay * decay_mult), let the update rule turn the gradient into a step with
   local_rate = rate * lr_mult, and w -= step. Params with lr_mult 0 are left alone entirely;
5. iteration += 1; snapshot every ``snapshot`` iterations.

Outputs go where ``output_dir`` says: snapshots ``<output_dir>/<snapshot_prefix>_iter_<N>.weights.npz``
and ``..._iter_<N>.solverstate.npz``, and the reporter's ``metrics.jsonl``. Without an
``output_dir`` (the command line always gives one) it is the config file's folder (the current
folder for a config given as a dict); an absolute snapshot_prefix is used as it is.

The solver state file holds (never pickled): ``iter``, ``type``, ``history/<k>`` (Caffe's order:
slot s of param i is k = s * num_params + i), ``net_state`` and ``test_net_state`` (net.state()
as JSON strings: generator and layer states such as a data layer's position) and
``weights_file`` (relative to the state file's folder). Resuming from iteration k and training
to n gives the same weights, bit for bit, as training 0 to n. As in Caffe, the smoothed loss
is not kept: every ``step`` call (so every run, resumed or not) starts its average afresh.
"""

import json
import math
import os
import re
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from .. import io
from ..caffe_compat import is_prototxt, read_prototxt
from ..errors import ConfigError, TrainingError
from ..io import (
    create_temporary,
    load_arrays,
    load_weights,
    remove_leftover_temporaries,
    save_arrays,
    weights_file_of,
)
from ..net import Net
from ..netspec import Enum, Field, Message, Where, check_message, load_net_spec, load_yaml_file
from ..netspec.schema import shown
from ..netspec.spec import check_net
from ..netspec.yaml_lines import LineDict
from . import debug_info, lr_policy
from .adaptive import AdaDelta, AdaGrad, Adam, RMSProp
from .reporting import Reporter
from .sgd import SGD, Nesterov
from .solver_state import StateFields, restore_net_state

RULES = {rule.type: rule for rule in (SGD, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam)}
LEGACY_TYPES = {
    "SGD": "SGD",
    "NESTEROV": "Nesterov",
    "ADAGRAD": "AdaGrad",
    "RMSPROP": "RMSProp",
    "ADADELTA": "AdaDelta",
    "ADAM": "Adam",
}

NET_STATE_FIELDS = {
    "phase": Field(Enum("TRAIN", "TEST"), None),
    "level": Field(int, 0),
    "stage": Field(str, repeated=True),
}

SOLVER_FIELDS = {
    "net": Field(str, None, doc="the net's file (YAML or prototxt), relative to this config's folder"),
    "net_param": Field(dict, None, doc="the net itself, inline"),
    "train_net": Field(str, None, doc="the TRAIN net's file (then test_net names the TEST net's)"),
    "train_net_param": Field(dict, None, doc="the TRAIN net, inline"),
    "test_net": Field(str, repeated=True, doc="the TEST net's file (one: netlayers has one TEST net)"),
    "test_net_param": Field(dict, repeated=True, doc="the TEST net, inline"),
    "train_state": Field(Message(NET_STATE_FIELDS, name="NetState"), None, doc="level and stages of the TRAIN net"),
    "test_state": Field(Message(NET_STATE_FIELDS, name="NetState"), repeated=True, doc="of the TEST net"),
    "type": Field(Enum(*RULES), None, doc="SGD (default), Nesterov, AdaGrad, RMSProp, AdaDelta, Adam"),
    "solver_type": Field(Enum(*LEGACY_TYPES), None, doc="Caffe's legacy enum for type"),
    "base_lr": Field(float, required=True, min=0),
    "lr_policy": Field(Enum(*lr_policy.POLICIES), "fixed"),
    "gamma": Field(float, None),
    "power": Field(float, None),
    "stepsize": Field(int, None, min=1),
    "stepvalue": Field(int, repeated=True, min=0),
    "max_iter": Field(int, None, min=0),
    "warmup_iter": Field(int, 0, min=0),
    "warmup_start_lr": Field(float, 0.0),
    "momentum": Field(float, 0.0),
    "momentum2": Field(float, 0.999),
    "delta": Field(float, 1e-8),
    "rms_decay": Field(float, 0.99),
    "weight_decay": Field(float, 0.0, min=0),
    "regularization_type": Field(Enum("L2", "L1"), "L2"),
    "clip_gradients": Field(float, -1.0),
    "iter_size": Field(int, 1, min=1),
    "display": Field(int, 0, min=0),
    "average_loss": Field(int, 1, min=1),
    "test_iter": Field(int, repeated=True, min=1),
    "test_interval": Field(int, 0, min=0),
    "test_initialization": Field(bool, True),
    "snapshot": Field(int, 0, min=0),
    "snapshot_prefix": Field(str, None),
    "snapshot_after_train": Field(bool, True),
    "random_seed": Field(int, -1),
    "weights": Field(str, repeated=True, doc="weights files to start from (relative to the config)"),
    # accepted for Caffe configs, without effect here
    "solver_mode": Field(Enum("CPU", "GPU"), "CPU"),
    "device_id": Field(int, 0, min=0),
    "snapshot_format": Field(Enum("HDF5", "BINARYPROTO"), "BINARYPROTO"),
    "debug_info": Field(bool, False),
    "test_compute_loss": Field(bool, False),
    "snapshot_diff": Field(bool, False),
    "layer_wise_reduce": Field(bool, True),
}

#: The fields that name the net to train (at most one; a YAML config may instead hold ``layers:``).
TRAIN_NET_FIELDS = ("net", "net_param", "train_net", "train_net_param")

STATE_VERSION = 1
MAX_MEMBER_NAME = 65535  # bytes of a zip member's name (a 16-bit field)


def read_config(config):
    """(raw mapping, file name or None, base folder) of a YAML path, a Caffe solver prototxt
    (its SolverParameter becomes the ``solver:`` section) or a dict."""
    if isinstance(config, (str, Path)):
        path = Path(config)
        if is_prototxt(path):
            section = read_prototxt(path, "SolverParameter")
            raw = LineDict(solver=section)
            raw.line, raw.key_lines = 1, {"solver": 1}
            return raw, str(path), path.resolve().parent
        return load_yaml_file(path), str(path), path.resolve().parent
    if isinstance(config, dict):
        return config, None, Path.cwd()
    raise ConfigError(f"a solver is built from a YAML path or a mapping, not {shown(config)}")


def check_solver_params(raw, file=None, *, max_iter=None, seed=None, type=None):
    """Check the ``solver:`` section of ``raw`` (the whole config mapping). Returns the checked
    Params, with ``type`` resolved and the ``max_iter``/``seed``/``type`` overrides applied
    (``type``: pycaffe's solver classes decide the update rule whatever the file says)."""
    if not isinstance(raw, dict):
        raise ConfigError("a config must be a mapping with 'layers:' and 'solver:'", file=file)
    section = raw.get("solver")
    if section is None:
        caffe_net = file is not None and is_prototxt(file)
        raise ConfigError(
            "a Caffe net file holds no solver: train with its solver file (train --solver solver.prototxt)"
            if caffe_net
            else "no 'solver:' section; training needs one (base_lr, max_iter, ...)",
            file=file,
            line=getattr(raw, "line", None),
        )
    param = check_message(section, SOLVER_FIELDS, Where(file, _line_of(raw, "solver"), None, "solver"))

    def at(name):
        return field_where(raw, file, name)

    if param.solver_type is not None:
        if param.type is not None:
            raise at("solver_type").error("give either type or the legacy solver_type, not both")
        param.type = LEGACY_TYPES[param.solver_type]
    param.type = type or param.type or "SGD"
    for name, value in (("max_iter", max_iter), ("seed", seed)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
            raise ConfigError(f"the {name} override must be a whole number, got {value!r:.60}", file=file)
    if max_iter is not None:
        param.max_iter = int(max_iter)
    if seed is not None:
        param.random_seed = int(seed)
    if param.max_iter is None:
        raise at("max_iter").error("is required (how many iterations to train)")
    if param.max_iter < 0:  # an override from the command line
        raise at("max_iter").error(f"must not be negative, got {param.max_iter}")
    if len(param.test_iter) > 1:
        raise at("test_iter").error(f"one value is expected (netlayers has one TEST net), got {param.test_iter}")
    policy = param.lr_policy
    for name in lr_policy.NEEDS[policy]:
        if param[name] is None:
            raise at("lr_policy").error(f"lr_policy '{policy}' needs '{name}' in the solver section")
    if param.gamma is not None and param.gamma < 0 and policy not in ("fixed", "sigmoid"):
        raise at("gamma").error(f"must not be negative, got {param.gamma:g}")
    if policy == "poly" and param.max_iter <= 0:
        raise at("max_iter").error("must be positive for lr_policy 'poly'")
    if policy == "multistep" and not param.stepvalue:
        raise at("lr_policy").error(
            "lr_policy 'multistep' needs 'stepvalue' (the iterations where the rate drops) in the solver section"
        )
    if any(b <= a for a, b in zip(param.stepvalue, param.stepvalue[1:])):
        raise at("stepvalue").error(f"must increase, got {param.stepvalue}")
    RULES[param.type].check(param, at)
    return param


def field_where(raw, file, name):
    """Where ``solver.<name>`` is in the config (its line, or the solver section's if absent)."""
    section = raw.get("solver")
    where = Where(file, _line_of(raw, "solver"), None, "solver")
    if isinstance(section, dict) and name in section:
        return where.at(section, name)
    return Where(file, where.line, None, f"solver.{name}")


def _line_of(mapping, key):
    line_of = getattr(mapping, "line_of", None)
    return line_of(key) if line_of else None


def _state(state):
    """(level, stages) of a solver's train_state / test_state (None: the net's own)."""
    if state is None:
        return None, None
    return state.level, list(state.stage)


def _has_test_only_layers(spec):
    return any(layer.in_phase("TEST") and not layer.in_phase("TRAIN") for layer in spec.layers)


def check_writable_folder(folder, what="output folder"):
    """Create ``folder`` (and its parents) and write a temporary file in it: a ConfigError
    naming it when that fails (a file in the way, no permission, a read-only disk, a parent
    that cannot even be looked into)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ConfigError(f"cannot write into the {what} {folder}: {os_reason(err, folder)}") from None


def os_reason(err, path):
    """An OSError about ``path`` in words: which part of the path is a file, else the system's
    own reason (e.g. 'Permission denied', 'No space left on device')."""
    path = Path(path)
    blocker = next((p for p in (path, *path.parents) if _is_file(p)), None)
    if blocker == path:
        return "it is a file, not a folder"
    if blocker is not None:
        return f"{blocker} is a file, not a folder"
    return err.strerror or str(err)


def _is_file(path):
    """Whether ``path`` exists and is not a folder; False when that cannot even be found out
    (a parent folder without search permission), so diagnosing never raises."""
    try:
        return path.exists() and not path.is_dir()
    except OSError:
        return False


class Solver:
    """Trains the TRAIN net of a config; tests on its TEST net (sharing the weights).

    ``Solver(config, data_root=None, output_dir=None, seed=None, max_iter=None, reporter=None,
    overwrite=False)``: ``config`` is a YAML path or a dict; ``seed`` and ``max_iter`` override
    the solver section's ``random_seed`` and ``max_iter``; ``reporter`` defaults to a
    :class:`~netlayers.solvers.reporting.Reporter`; ``overwrite`` lets a fresh run replace an
    earlier run's snapshots (same prefix) and metrics.jsonl in its output folder.

    Attributes: ``net``, ``test_net`` (None without test_iter), ``iter``
    (updates done), ``param`` (the checked solver fields), ``rule`` (the update rule),
    ``history`` (per learnable param, the rule's arrays), ``output_dir``, ``snapshot_prefix``,
    ``last_snapshot`` (path of the last solver state written or restored), ``status``.
    """

    def __init__(
        self,
        config: str | Path | dict,
        *,
        data_root: Any = None,
        output_dir: str | Path | None = None,
        seed: int | None = None,
        max_iter: int | None = None,
        reporter: Any = None,
        overwrite: bool = False,
        type: str | None = None,
    ) -> None:
        raw, self.file, self.base_dir = read_config(config)
        self.caffe_paths = self.file is not None and is_prototxt(self.file)
        self.param = param = check_solver_params(raw, self.file, max_iter=max_iter, seed=seed, type=type)
        spec = self._net_spec(raw)
        net_seed = param.random_seed if param.random_seed >= 0 else None
        level, stages = _state(param.train_state)
        self.net = Net(spec, "TRAIN", seed=net_seed, data_root=data_root, level=level, stages=stages)
        self._check_has_loss()
        self.test_net = self._test_net(raw, spec, data_root)
        for path in param.weights:
            self.net.load(self._resolve(path))
        self.output_dir = io.as_path(output_dir, "output_dir") if output_dir is not None else self.base_dir
        self.snapshot_prefix = param.snapshot_prefix or (
            Path(self.file).stem if self.file else (self.net.name or "snapshot")
        )
        if "\0" in self.snapshot_prefix:  # the OS takes no file name with a NUL in it
            raise ConfigError("a file name cannot hold a NUL character", file=self.file, field="solver.snapshot_prefix")
        self.rule = RULES[param.type].from_param(param)
        params = self.net.learnable_params
        self.history = [self.rule.new_history(p.blob.shape, p.blob.data.dtype) for p in params]
        self._scratch = [self.rule.new_scratch(p.blob.shape, p.blob.data.dtype) for p in params]
        self._decay_buffer = [None] * len(params)
        self.reporter = reporter if reporter is not None else Reporter()
        self.iter = 0
        self.status: str | None = None
        self.stopped = False
        self.last_snapshot: Path | None = None
        self._snapshot_iter: int | None = None
        self._losses: deque[float] = deque(maxlen=param.average_loss)
        self._stop = False
        self._started = False
        self._timer = (time.perf_counter(), 0)
        self.overwrite = overwrite
        self._write_error = None  # the first OSError a reporter raised while writing
        self.check_saveable()

    def _check_has_loss(self):
        if not any(weight for layer in self.net.layers for weight in layer.loss_weights):
            raise ConfigError(
                "the TRAIN net has no loss: no layer has a non-zero loss weight, so "
                "there is nothing to minimise (add a loss layer such as "
                "SoftmaxWithLoss, or a loss_weight on a top)",
                file=self.file,
            )

    def _test_net(self, raw, spec, data_root):
        """The TEST net (sharing the TRAIN net's weights) when test_iter asks for one, else None.
        test_interval without test_iter, or a TEST net with nothing to test, is a ConfigError."""
        param = self.param
        if not param.test_iter:
            if param.test_interval > 0:
                found = " and the net has TEST-phase layers" if _has_test_only_layers(spec) else ""
                raise field_where(raw, self.file, "test_interval").error(
                    f"is set{found}, so test_iter (TEST batches per test) is needed too (or "
                    "leave out test_interval to train without testing)"
                )
            return None
        level, stages = _state(param.test_state[0] if param.test_state else None)
        test_net = Net(
            self._test_spec(raw, spec), "TEST", seed=self.net.seed + 1, data_root=data_root, level=level, stages=stages
        )
        if not test_net.layers or not test_net.outputs:
            what = (
                "no layers (are they all include: {phase: TRAIN}?)"
                if not test_net.layers
                else "no outputs (every blob is consumed by a layer; a loss without a top shows nothing)"
            )
            raise field_where(raw, self.file, "test_iter").error(
                f"is given but the TEST-phase net has {what}, so there is nothing to test"
            )
        test_net.share_weights_from(self.net)
        return test_net

    def _net_spec(self, raw):
        """The net to train: the config's own ``layers:``, or the one solver field of
        TRAIN_NET_FIELDS that names it (a file, or a net written inline)."""
        given = [name for name in TRAIN_NET_FIELDS if self.param[name] is not None]
        if len(given) > 1:
            raise field_where(raw, self.file, given[1]).error(
                f"give one of {', '.join(TRAIN_NET_FIELDS)}, not {given[0]} too"
            )
        if not given:
            if self.caffe_paths:
                raise field_where(raw, self.file, "net").error(
                    f"a solver file names its net: give one of {', '.join(TRAIN_NET_FIELDS)}"
                )
            return check_net(raw, file=self.file, base_dir=self.base_dir)
        if "layers" in raw or "layer" in raw:
            raise field_where(raw, self.file, given[0]).error(
                f"the config has its own 'layers:'; give either those or solver.{given[0]}, not both"
            )
        return self._load_net(raw, given[0])

    def _test_spec(self, raw, train_spec):
        """The TEST net's spec: ``test_net`` / ``test_net_param`` when given (one), else the TEST
        phase of the net being trained."""
        tests = [("test_net", value) for value in self.param.test_net]
        tests += [("test_net_param", value) for value in self.param.test_net_param]
        if len(tests) > 1:
            raise field_where(raw, self.file, tests[1][0]).error(
                f"{len(tests)} test nets given; netlayers has one TEST net"
            )
        if not tests:
            return train_spec
        if self.param.train_net is None and self.param.train_net_param is None:
            raise field_where(raw, self.file, tests[0][0]).error("goes with train_net (or train_net_param), not net")
        return self._load_net(raw, tests[0][0], tests[0][1])

    def _load_net(self, raw, name, value=None):
        value = self.param[name] if value is None else value
        if name.endswith("_param"):
            return check_net(value, file=self.file, base_dir=self.base_dir)
        return load_net_spec(self._resolve(value))

    def _resolve(self, path):
        """A file named in the config: relative to the config's folder; in a Caffe solver file,
        relative to the current folder as Caffe resolves it, else to the solver file's folder."""
        path = Path(path)
        if path.is_absolute():
            return path
        if self.caffe_paths and path.exists():
            return path
        return self.base_dir / path

    # -- running ------------------------------------------------------------------------------
    def solve(self, resume: str | Path | None = None) -> None:
        """Train to max_iter (from a solver state when ``resume`` names one); snapshot at the end;
        then, as Caffe, show the final loss (one more forward) when display divides the
        iteration, and test once more. Caffe tests at the end only when test_interval divides
        max_iter; here the final test always runs."""
        if resume is not None:
            self.restore(resume)
        if self.iter > self.param.max_iter:
            raise ConfigError(
                f"the solver is at iteration {self.iter}, beyond max_iter "
                f"{self.param.max_iter}: nothing to train (raise max_iter, e.g. "
                "with --max-iter)",
                file=str(resume) if resume is not None else self.file,
            )
        self._start()
        self.status = "running"
        try:
            self.step(max(0, self.param.max_iter - self.iter))
            if self.stopped:
                self.status = "stopped"
                return
            if self.param.snapshot_after_train and self._snapshot_iter != self.iter:
                self.snapshot()
            if self.param.display and self.iter % self.param.display == 0:
                self.net.forward()  # Caffe's closing line: the loss only, no outputs
                loss = self.net.loss
                self._losses.append(loss)
                self._call("on_train", self.iter, loss, self.smoothed_loss, None, {}, None)
            if self.param.test_interval and self.test_net is not None:
                self._test_and_report()
            if self._write_error is not None:
                self._fail_after_write_error()
            self.status = "done"
        except BaseException:
            if self.status == "running":
                self.status = "failed"
            raise
        finally:
            self._stop = False
            self._call("on_end")
        if self._write_error is not None:  # the closing lines could not be written
            self._fail_after_write_error()

    def step(self, iters: int) -> None:
        """Run ``iters`` iterations (tests, display and snapshots as configured)."""
        if isinstance(iters, bool) or not isinstance(iters, (int, np.integer)) or iters < 0:
            raise ConfigError(f"step takes a whole number of iterations, 0 or more, got {iters!r}")
        self._start()
        self.stopped = False
        self._losses.clear()  # as Caffe's Step: the smoothed loss starts afresh
        p = self.param
        stop_iter = self.iter + iters
        while self.iter < stop_iter and not self._stop:
            if (
                p.test_interval
                and self.test_net is not None
                and self.iter % p.test_interval == 0
                and (self.iter > 0 or p.test_initialization)
            ):
                self._test_and_report()
                if self._stop:
                    break
            self.net.clear_param_diffs()
            debug = p.debug_info and p.display and self.iter % p.display == 0
            loss = 0.0
            for _ in range(p.iter_size):
                loss += debug_info.forward_backward(self.net, self._log) if debug else self.net.forward_backward()
            loss /= p.iter_size
            if not math.isfinite(loss):
                self._fail(f"loss is {'nan' if math.isnan(loss) else 'infinite'} at iteration {self.iter}")
            self._losses.append(loss)
            rate = self.learning_rate()
            if not math.isfinite(rate):
                self._fail(
                    f"the learning rate of lr_policy '{p.lr_policy}' is not a finite number at iteration {self.iter}",
                    hint=" (check gamma, power and stepsize)",
                )
            if p.display and self.iter % p.display == 0:
                self._call(
                    "on_train", self.iter, loss, self.smoothed_loss, rate, self._outputs(self.net), self._speed()
                )
            before = [param.blob.data.copy() for param in self.net.learnable_params] if debug else None
            self.apply_update(rate)
            if debug:
                for line in debug_info.update_lines(self.net, before):
                    self._log(line)
            self.iter += 1
            self._call("on_iteration", self.iter)
            if p.snapshot and self.iter % p.snapshot == 0:
                self.snapshot()
        if self._stop:
            self._stop = False
            self.stopped = True
            if self._write_error is not None:
                self._fail_after_write_error()
            if self._snapshot_iter != self.iter:
                self.snapshot()

    def request_stop(self) -> None:
        """Ask to stop after the current iteration (safe from a signal handler): the solver then
        snapshots and returns from step/solve with ``stopped`` true."""
        self._stop = True

    @property
    def smoothed_loss(self) -> float:
        """The mean loss over the last ``average_loss`` iterations of the current ``step`` call
        (Caffe's displayed loss)."""
        return sum(self._losses) / len(self._losses) if self._losses else float("nan")

    def learning_rate(self, iteration: int | None = None) -> float:
        """The rate of the lr policy (with warm-up) at ``iteration`` (default: the current one)."""
        return lr_policy.rate_of(self.param, self.iter if iteration is None else iteration)

    # -- the update ---------------------------------------------------------------------------
    def apply_update(self, rate):
        """Clip, then per param normalise, regularise, compute the step and apply it (the last
        three in one pass when the rule has a fused update for them, as SGD with L2 has)."""
        p = self.param
        self.clip_gradients()
        for i, param in enumerate(self.net.learnable_params):
            if param.lr_mult == 0:
                continue
            diff = param.blob.diff
            if p.iter_size > 1:
                diff *= 1.0 / p.iter_size
            if p.regularization_type == "L2" and self.rule.fused_update(
                param.blob.data,
                diff,
                self.history[i],
                rate * param.lr_mult,
                p.weight_decay * param.decay_mult,
                self.iter,
            ):
                continue
            # overflow shows up as a non-finite loss or weights, reported as one TrainingError
            with np.errstate(over="ignore", invalid="ignore"):
                self.regularize(i, param)
                self.rule.compute(diff, self.history[i], self._scratch[i], rate * param.lr_mult, self.iter)
                param.blob.data -= diff

    def clip_gradients(self):
        """Scale all diffs by clip / norm when their global L2 norm exceeds ``clip_gradients``."""
        clip = self.param.clip_gradients
        if clip < 0:
            return
        diffs = [param.blob.diff for param in self.net.learnable_params]
        with np.errstate(over="ignore", invalid="ignore"):
            norm = math.sqrt(sum(float(np.vdot(d, d)) for d in diffs))
            if norm > clip:
                scale = clip / norm
                for diff in diffs:
                    diff *= scale

    def regularize(self, index, param):
        """diff += decay * w (L2) or decay * sign(w) (L1), decay = weight_decay * decay_mult."""
        decay = self.param.weight_decay * param.decay_mult
        if not decay:
            return
        buffer = self._decay_buffer[index]
        if buffer is None:
            buffer = self._decay_buffer[index] = np.empty_like(param.blob.data)
        if self.param.regularization_type == "L2":
            np.multiply(param.blob.data, decay, out=buffer)
        else:
            np.sign(param.blob.data, out=buffer)
            buffer *= decay
        param.blob.diff += buffer

    # -- testing ------------------------------------------------------------------------------
    def test(self) -> dict[str, Any] | None:
        """Run the TEST net ``test_iter[0]`` times; {output name: mean over the batches} (a float
        for scalar outputs, an array of per-element means otherwise). None when a stop request
        interrupts it."""
        if self.test_net is None:
            raise ConfigError("there is no TEST net to test: give solver.test_iter", file=self.file)
        batches = self.param.test_iter[0]
        sums: dict[str, np.ndarray] = {}
        for _ in range(batches):
            if self._stop:
                return None
            for name, value in self.test_net.forward().items():
                if name in sums:
                    sums[name] += value
                else:
                    sums[name] = np.array(value, dtype=np.float64)
        return {name: (total / batches).item() if total.size == 1 else total / batches for name, total in sums.items()}

    def _test_and_report(self):
        results = self.test()
        if results is None:
            self._call("on_message", "Test interrupted.")
        else:
            self._call("on_test", self.iter, results)
        return results

    # -- snapshots ----------------------------------------------------------------------------
    def snapshot_paths(self, iteration: int | None = None) -> tuple[Path, Path]:
        """(weights path, solver state path) of the snapshot at ``iteration`` (default: now)."""
        iteration = self.iter if iteration is None else iteration
        base = str(self.output_dir / f"{self.snapshot_prefix}_iter_{iteration}")
        return Path(base + ".weights.npz"), Path(base + ".solverstate.npz")

    def snapshot(self) -> Path:
        """Write the weights, then the solver state (each atomically); returns the weights path.
        Weights that are not finite are never written (a TrainingError instead)."""
        for param in self.net.learnable_params:
            if not np.isfinite(param.blob.data).all():
                self._fail(
                    f"the weights of '{param.name}' are not finite at iteration {self.iter}; no snapshot written"
                )
        weights, state = self.snapshot_paths()
        # as Net.save, but an OSError stays one (Net.save makes it a DataError)
        self._write(weights, lambda path: io.save_arrays(path, self.net.weight_arrays()))
        n = len(self.history)
        arrays = {
            f"history/{slot * n + i}": slots[slot] for i, slots in enumerate(self.history) for slot in range(len(slots))
        }
        arrays.update(
            {
                "format_version": np.array(STATE_VERSION),
                "iter": np.array(self.iter, dtype=np.int64),
                "type": np.array(self.param.type),
                "weights_file": np.array(weights.name),
                "net_state": np.array(json.dumps(self.net.state())),
            }
        )
        if self.test_net is not None:
            arrays["test_net_state"] = np.array(json.dumps(self.test_net.state()))
        self._write(state, lambda path: save_arrays(path, arrays))
        self._snapshot_iter = self.iter
        self.last_snapshot = state
        self._call("on_snapshot", self.iter, weights, state)
        return weights

    def _write(self, path, save):
        """``save(path)``; an OSError (disk full, no permission) becomes a TrainingError naming
        the file (the snapshots written before stay as they are)."""
        try:
            save(path)
        except OSError as err:
            self._fail(f"cannot write the snapshot file {path}: {os_reason(err, path.parent)}", hint="")

    def restore(self, path: str | Path) -> None:
        """Resume from a solver state file (or the weights file next to one): weights, history,
        iteration, generator and layer states. The files must belong to this net. Every field
        read is checked first (a ConfigError naming the file and the field); a layer that
        cannot take its saved state (a data position past a data set that shrank) is a
        ConfigError naming the file, the layer and the field."""
        path = io.as_path(path, "a solver state to restore")
        if path.name.endswith(".weights.npz"):
            path = path.with_name(path.name[: -len(".weights.npz")] + ".solverstate.npz")
        arrays = load_arrays(path)
        for key in ("format_version", "iter", "type", "weights_file", "net_state"):
            if key not in arrays:
                raise ConfigError(f"not a netlayers solver state (no '{key}')", file=str(path))
        check = StateFields(arrays, path)
        version = check.integer("format_version")
        if version != STATE_VERSION:
            raise check.error(
                "format_version",
                f"unknown version {version} (this netlayers reads "
                f"version {STATE_VERSION}; written by another release?)",
            )
        iteration = check.integer("iter")
        kind = check.text("type")
        if kind != self.param.type:
            raise check.error(None, f"written by a {kind} solver; this config trains with {self.param.type}")
        history = self._saved_history(check)
        weights_path = weights_file_of(arrays, path)
        net_state = check.net_state("net_state", self.net)
        test_state = (
            check.net_state("test_net_state", self.test_net)
            if self.test_net is not None and "test_net_state" in arrays
            else None
        )
        self._check_weights(weights_path)
        self.net.load(weights_path)
        for slots, saved in zip(self.history, history):
            for slot, array in zip(slots, saved):
                slot[...] = array
        self.iter = iteration
        restore_net_state(self.net, net_state, path, "net_state")
        if test_state is not None:
            restore_net_state(self.test_net, test_state, path, "test_net_state")
        self._snapshot_iter = self.iter
        self.last_snapshot = path
        self._timer = (time.perf_counter(), self.iter)
        self._call("on_message", f"Restoring previous solver status from {path} (iteration {self.iter})")

    def _saved_history(self, check):
        """Per learnable param, the rule's history arrays in a state file (Caffe's order: slot s
        of param i is ``history/<s * num_params + i>``), checked against the net."""
        arrays = check.arrays
        params = self.net.learnable_params
        slots = self.rule.history_slots
        keys = {key for key in arrays if key.startswith("history/")}
        if len(keys) != slots * len(params):
            raise check.error(
                None,
                f"holds history for {len(keys) // slots} params; this net has "
                f"{len(params)} learnable params (a snapshot of another net?)",
            )
        expected = {f"history/{k}" for k in range(slots * len(params))}
        if keys != expected:
            raise check.error(
                min(keys - expected), f"unexpected name; expected history/0 to history/{len(expected) - 1}"
            )
        history = []
        for i, param in enumerate(params):
            saved = []
            for slot in range(slots):
                key = f"history/{slot * len(params) + i}"
                array = check.finite_floats(key)
                if array.shape != param.blob.shape:
                    raise check.error(
                        None,
                        f"history of param #{i} ('{param.name}') has shape "
                        f"{array.shape}; the net's is {param.blob.shape} (a snapshot of "
                        "another net?)",
                    )
                saved.append(array)
            history.append(saved)
        return history

    def _check_weights(self, path):
        weights = load_weights(path)
        for name, blobs in self.net.params.items():
            saved = weights.get(name)
            if saved is None:
                raise ConfigError(
                    "has no weights for this layer (a snapshot of another net?)", file=str(path), layer=name
                )
            shapes = [tuple(b.shape) for b in blobs]
            if [tuple(a.shape) for a in saved] != shapes:
                raise ConfigError(
                    f"has shapes {[tuple(a.shape) for a in saved]} for this layer; the net has {shapes}",
                    file=str(path),
                    layer=name,
                )

    # -- before training: what will be written, and where ------------------------------------
    def check_saveable(self):
        """Refuse (a ConfigError naming the layer) what a snapshot could not hold, before any
        training: a layer name that is not valid UTF-8, holds a NUL (a zip member name ends
        there) or makes a weights member name (``<layer>/<i>.npy``) longer than the zip limit
        of 65,535 bytes; a layer state that is not JSON-serialisable."""
        for layer in self.net.layers:
            if layer.blobs:
                self._check_member_name(layer, f"{layer.name}/{len(layer.blobs) - 1}.npy")
        for net in (self.net, self.test_net):
            for layer in net.layers if net is not None else ():
                try:
                    json.dumps(layer.state())
                except (TypeError, ValueError, RecursionError) as err:
                    raise self._layer_error(
                        layer, f"its state (kept in snapshots to resume exactly) is not JSON-serialisable: {err}"
                    ) from None

    def _check_member_name(self, layer, member):
        try:
            size = len(member.encode("utf-8"))
        except UnicodeEncodeError:
            raise self._layer_error(
                layer,
                "the name is not valid UTF-8 text, so snapshots cannot store this layer's weights under it",
                "name",
            ) from None
        if "\0" in member:
            raise self._layer_error(
                layer, "the name holds a NUL character, so snapshots cannot store this layer's weights under it", "name"
            )
        if size > MAX_MEMBER_NAME:
            raise self._layer_error(
                layer,
                f"the name is {len(layer.name.encode('utf-8')):,} bytes "
                "long in UTF-8; snapshots store weights under '<layer "
                f"name>/<i>.npy' and the .npz (zip) format allows "
                f"{MAX_MEMBER_NAME:,} bytes: use a shorter name",
                "name",
            )

    @staticmethod
    def _layer_error(layer, message, field=None):
        """A ConfigError at ``layer``'s place in the config, its name cut to a readable length."""
        where = layer.spec.where
        name = layer.name if len(layer.name) <= 60 else f"{layer.name[:57]}..."
        return ConfigError(message, file=where.file, line=where.line, layer=name, field=field)

    def _start(self):
        """Once, before the first iteration: check the folders and the snapshot file names,
        refuse (or with ``overwrite``, clear) an earlier run in the output folder when this run
        is fresh, remove leftover temporary files, open the reporter, say what is ignored."""
        if self._started:
            return
        folders = {Path(self.output_dir): "output folder"}
        folders.setdefault(self.snapshot_paths()[0].parent, "snapshot folder")
        for folder, what in folders.items():
            check_writable_folder(folder, what)
        notes = []
        if self.iter == 0 and self.last_snapshot is None:
            if self.overwrite:
                notes += self._remove_earlier_run()
            else:
                self.check_output_reuse()
        self._check_snapshot_names()
        notes += self._remove_leftovers()
        self._started = True
        self._timer = (time.perf_counter(), self.iter)
        self._call("on_start", self)
        if self._write_error is not None:
            self._fail_after_write_error(snapshot=False)
        for line in notes + self._ignored_settings():
            self._log(line)

    def _snapshot_files(self):
        """(folder, regex matching this solver's snapshot file names; group 1: the iteration)."""
        weights = self.snapshot_paths(0)[0]
        stem = weights.name[: -len("_iter_0.weights.npz")]
        return weights.parent, re.escape(stem) + r"_iter_(\d+)\.(?:weights|solverstate)\.npz"

    def _earlier_run(self):
        """The snapshot files of this prefix (by iteration) and the metrics.jsonl already in
        the output folders."""
        folder, pattern = self._snapshot_files()
        try:
            names = [entry.name for entry in os.scandir(folder)]
        except OSError:
            names = []
        matches = [m for m in map(re.compile(pattern).fullmatch, names) if m]
        found = [folder / m.group(0) for m in sorted(matches, key=lambda m: (int(m.group(1)), m.group(0)))]
        metrics = Path(self.output_dir) / "metrics.jsonl"
        return found + ([metrics] if metrics.exists() else [])

    def check_output_reuse(self):
        """Refuse, with a ConfigError naming the output folder and the ways on, to start a fresh
        run where an earlier run's snapshots (same prefix) or metrics.jsonl are (nothing is
        checked with ``overwrite``). The command line calls this before writing anything."""
        found = [] if self.overwrite else self._earlier_run()
        if not found:
            return
        listed = ", ".join(path.name for path in found[:2]) + (f" and {len(found) - 2} more" if len(found) > 2 else "")
        states = [path for path in found if path.name.endswith(".solverstate.npz")]
        resume = f"continue it (--resume {states[-1]}), " if states else ""
        raise ConfigError(
            f"already holds an earlier run ({listed}): train into another folder "
            f"(--output), {resume}or replace it (--overwrite)",
            file=str(self.output_dir),
        )

    def _remove_earlier_run(self):
        """With ``overwrite``: delete the earlier run's snapshots of this prefix and its
        metrics.jsonl. Returns the log line to show."""
        removed = self._earlier_run()
        for path in removed:
            try:
                path.unlink()
            except OSError as err:
                raise ConfigError(
                    f"cannot remove {path} of an earlier run (overwrite): {err.strerror or err}"
                ) from None
        folders = ", ".join(sorted({str(path.parent) for path in removed}))
        return [f"Removed {len(removed)} file(s) of an earlier run from {folders} (overwrite)"] if removed else []

    def _check_snapshot_names(self):
        """Create and delete a temporary file named as the last snapshot's will be (the
        longest name), so that a name the file system refuses is found before training."""
        for path in self.snapshot_paths(max(self.param.max_iter, self.iter)):
            try:
                fd, temporary = create_temporary(path)
                os.close(fd)
                os.unlink(temporary)
            except OSError as err:
                shown = path.name if len(path.name) <= 60 else f"{path.name[:57]}..."
                raise ConfigError(
                    f"snapshot files such as {shown} ({len(os.fsencode(path.name)):,} "
                    f"bytes) cannot be created in {path.parent}: "
                    f"{os_reason(err, path.parent)}",
                    file=self.file,
                    field="solver.snapshot_prefix",
                ) from None

    def _remove_leftovers(self):
        """Delete the temporary files a killed snapshot (or metrics rewrite) left; log lines."""
        folder, pattern = self._snapshot_files()
        places = {folder: pattern.replace(r"_iter_(\d+)", r"_iter_\d+")}
        metrics = r"metrics\.jsonl"
        output = Path(self.output_dir)
        places[output] = f"(?:{places[output]}|{metrics})" if output in places else metrics
        lines = []
        for place, names in places.items():
            removed = remove_leftover_temporaries(place, names)
            if removed:
                lines.append(
                    f"Removed {len(removed)} temporary file(s) left by an interrupted "
                    f"snapshot from {place} ({', '.join(p.name for p in removed[:3])}"
                    f"{', ...' if len(removed) > 3 else ''})"
                )
        return lines

    def _ignored_settings(self):
        """One line for the settings a Caffe config may carry that change nothing here."""
        p = self.param
        lines = []
        ignored = [
            f"{name}: {value}"
            for name, value, default in (("solver_mode", p.solver_mode, "CPU"), ("device_id", p.device_id, 0))
            if value != default
        ]
        if ignored:
            lines.append(f"netlayers runs on the CPU: {' and '.join(ignored)} ignored")
        if p.debug_info and not p.display:
            lines.append("debug_info: true logs on displayed iterations, and display is 0: nothing to log")
        return lines

    # -- helpers ------------------------------------------------------------------------------
    def _speed(self):
        now, iteration = time.perf_counter(), self.iter
        then, before = self._timer
        self._timer = (now, iteration)
        return (iteration - before) / (now - then) if iteration > before and now > then else None

    @staticmethod
    def _outputs(net):
        return {name: net.blobs[name].data.copy() for name in net.outputs}

    def _fail(self, message, hint=" (try a lower base_lr or clip_gradients)"):
        last = "none" if self.last_snapshot is None else f"{self.last_snapshot} (iteration {self._snapshot_iter})"
        self.status = "failed"
        raise TrainingError(f"{message}{hint}; last snapshot: {last}")

    def _fail_after_write_error(self, snapshot=True):
        """End training because a reporter could not write (a full disk, a closed stream): write
        a stop snapshot first unless there is one of this iteration (or ``snapshot`` is false:
        nothing trained yet), then a TrainingError naming the file, the reason and the last
        good snapshot."""
        err = self._write_error
        message = f"cannot write {err.filename or 'a log or record file'}: {err.strerror or err}"
        if snapshot and self._snapshot_iter != self.iter:
            try:
                self.snapshot()
            except TrainingError:
                message += " (the stop snapshot could not be written either)"
        self._fail(message, hint="")

    def _call(self, name, *args):
        """Call the reporter's ``name`` if it has one. An OSError there (the reporter could not
        write) is kept and asks training to stop: the loop ends the iteration, snapshots and
        raises it as a TrainingError (see :meth:`_fail_after_write_error`)."""
        method = getattr(self.reporter, name, None)
        if method is None:
            return
        try:
            method(*args)
        except OSError as err:
            if self._write_error is None:
                self._write_error = err
            self._stop = True

    def _log(self, line):
        self._call("on_message", line)

    def __repr__(self):
        return f"<Solver {self.param.type} '{self.net.name}' at iteration {self.iter}>"
