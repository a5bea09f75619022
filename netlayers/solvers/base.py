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

``solver_mode``, ``device_id``, ``snapshot_format``, ``debug_info`` and ``test_compute_loss``
are accepted (configs converted from Caffe carry them) and have no effect.

Checked before training, beyond Caffe: momentum in [0, 1) (SGD, Nesterov, AdaDelta, Adam's
momentum and momentum2), delta > 0 and rms_decay in [0, 1) for the adaptive rules, weight_decay
>= 0, multistep needs stepvalue; the TRAIN net must have a loss; ``test_iter`` holds one value
(one TEST net), needs a TEST net with outputs, and ``test_interval`` needs it; the output and
snapshot folders must be writable (checked when training starts); resuming past max_iter is
refused.

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
import tempfile
import time
from collections import deque
from pathlib import Path

import numpy as np

from ..errors import ConfigError, TrainingError
from ..io import load_arrays, load_weights, save_arrays
from ..net import Net
from ..netspec import Enum, Field, Where, check_message, load_net_spec, load_yaml_file
from ..netspec.schema import shown
from ..netspec.spec import check_net
from . import lr_policy
from .adaptive import AdaDelta, AdaGrad, Adam, RMSProp
from .reporting import Reporter
from .sgd import SGD, Nesterov

RULES = {rule.type: rule for rule in (SGD, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam)}
LEGACY_TYPES = {"SGD": "SGD", "NESTEROV": "Nesterov", "ADAGRAD": "AdaGrad", "RMSPROP": "RMSProp",
                "ADADELTA": "AdaDelta", "ADAM": "Adam"}

SOLVER_FIELDS = {
    "net": Field(str, None, doc="the net's YAML file, relative to this config's folder"),
    "type": Field(Enum(*RULES), None, doc="SGD (default), Nesterov, AdaGrad, RMSProp, AdaDelta, Adam"),
    "solver_type": Field(Enum(*LEGACY_TYPES), None, doc="Caffe's legacy enum for type"),
    "base_lr": Field(float, required=True),
    "lr_policy": Field(Enum(*lr_policy.POLICIES), "fixed"),
    "gamma": Field(float, None),
    "power": Field(float, None),
    "stepsize": Field(int, None),
    "stepvalue": Field(int, repeated=True),
    "max_iter": Field(int, None),
    "warmup_iter": Field(int, 0),
    "warmup_start_lr": Field(float, 0.0),
    "momentum": Field(float, 0.0),
    "momentum2": Field(float, 0.999),
    "delta": Field(float, 1e-8),
    "rms_decay": Field(float, 0.99),
    "weight_decay": Field(float, 0.0),
    "regularization_type": Field(Enum("L2", "L1"), "L2"),
    "clip_gradients": Field(float, -1.0),
    "iter_size": Field(int, 1),
    "display": Field(int, 0),
    "average_loss": Field(int, 1),
    "test_iter": Field(int, repeated=True),
    "test_interval": Field(int, 0),
    "test_initialization": Field(bool, True),
    "snapshot": Field(int, 0),
    "snapshot_prefix": Field(str, None),
    "snapshot_after_train": Field(bool, True),
    "random_seed": Field(int, -1),
    "weights": Field(str, repeated=True, doc="weights files to start from (relative to the config)"),
    # accepted for Caffe configs, without effect here
    "solver_mode": Field(Enum("CPU", "GPU"), "CPU"),
    "device_id": Field(int, 0),
    "snapshot_format": Field(Enum("HDF5", "BINARYPROTO"), "BINARYPROTO"),
    "debug_info": Field(bool, False),
    "test_compute_loss": Field(bool, False),
}

STATE_VERSION = 1


def read_config(config):
    """(raw mapping, file name or None, base folder) of a YAML path or a dict."""
    if isinstance(config, (str, Path)):
        path = Path(config)
        return load_yaml_file(path), str(path), path.resolve().parent
    if isinstance(config, dict):
        return config, None, Path.cwd()
    raise ConfigError(f"a solver is built from a YAML path or a mapping, not {shown(config)}")


def check_solver_params(raw, file=None, *, max_iter=None, seed=None):
    """Check the ``solver:`` section of ``raw`` (the whole config mapping). Returns the checked
    Params, with ``type`` resolved and the ``max_iter``/``seed`` overrides applied."""
    if not isinstance(raw, dict):
        raise ConfigError("a config must be a mapping with 'layers:' and 'solver:'", file=file)
    section = raw.get("solver")
    if section is None:
        raise ConfigError("no 'solver:' section; training needs one (base_lr, max_iter, ...)",
                          file=file, line=getattr(raw, "line", None))
    param = check_message(section, SOLVER_FIELDS, Where(file, _line_of(raw, "solver"), None, "solver"))

    def at(name):
        return field_where(raw, file, name)

    if param.solver_type is not None:
        if param.type is not None:
            raise at("solver_type").error("give either type or the legacy solver_type, not both")
        param.type = LEGACY_TYPES[param.solver_type]
    param.type = param.type or "SGD"
    if max_iter is not None:
        param.max_iter = int(max_iter)
    if seed is not None:
        param.random_seed = int(seed)
    if param.max_iter is None:
        raise at("max_iter").error("is required (how many iterations to train)")
    for name in ("max_iter", "display", "test_interval", "snapshot", "warmup_iter"):
        if param[name] < 0:
            raise at(name).error(f"must not be negative, got {param[name]}")
    for name in ("iter_size", "average_loss"):
        if param[name] < 1:
            raise at(name).error(f"must be at least 1, got {param[name]}")
    if not math.isfinite(param.base_lr):
        raise at("base_lr").error(f"must be a finite number, got {param.base_lr:g}")
    if param.base_lr < 0:
        raise at("base_lr").error(f"must not be negative, got {param.base_lr:g}")
    if not param.weight_decay >= 0:
        raise at("weight_decay").error(f"must not be negative, got {param.weight_decay:g}")
    if any(n <= 0 for n in param.test_iter):
        raise at("test_iter").error(f"must be positive, got {param.test_iter}")
    if len(param.test_iter) > 1:
        raise at("test_iter").error(f"one value is expected (netlayers has one TEST net), got "
                                    f"{param.test_iter}")
    policy = param.lr_policy
    for name in lr_policy.NEEDS[policy]:
        if param[name] is None:
            raise at("lr_policy").error(f"lr_policy '{policy}' needs '{name}' in the solver section")
    if policy in ("step", "sigmoid") and param.stepsize <= 0:
        raise at("stepsize").error(f"must be positive for lr_policy '{policy}', got {param.stepsize}")
    if param.gamma is not None and param.gamma < 0 and policy not in ("fixed", "sigmoid"):
        raise at("gamma").error(f"must not be negative, got {param.gamma:g}")
    if policy == "poly" and param.max_iter <= 0:
        raise at("max_iter").error("must be positive for lr_policy 'poly'")
    if policy == "multistep" and not param.stepvalue:
        raise at("lr_policy").error("lr_policy 'multistep' needs 'stepvalue' (the iterations "
                                    "where the rate drops) in the solver section")
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


def _has_test_only_layers(spec):
    return any(layer.in_phase("TEST") and not layer.in_phase("TRAIN") for layer in spec.layers)


def check_writable_folder(folder, what="output folder"):
    """Create ``folder`` (and its parents) and write a temporary file in it: a ConfigError
    naming it when that fails (a file in the way, no permission, a read-only disk)."""
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
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker == path:
        return "it is a file, not a folder"
    if blocker is not None:
        return f"{blocker} is a file, not a folder"
    return err.strerror or str(err)


class Solver:
    """Trains the TRAIN net of a config; tests on its TEST net (sharing the weights).

    ``Solver(config, data_root=None, output_dir=None, seed=None, max_iter=None, reporter=None)``:
    ``config`` is a YAML path or a dict; ``seed`` and ``max_iter`` override the solver
    section's ``random_seed`` and ``max_iter``; ``reporter`` defaults to a
    :class:`~netlayers.solvers.reporting.Reporter`.

    Attributes: ``net``, ``test_net`` (None without test_iter), ``iter``
    (updates done), ``param`` (the checked solver fields), ``rule`` (the update rule),
    ``history`` (per learnable param, the rule's arrays), ``output_dir``, ``snapshot_prefix``,
    ``last_snapshot`` (path of the last solver state written or restored), ``status``.
    """

    def __init__(self, config, *, data_root=None, output_dir=None, seed=None, max_iter=None,
                 reporter=None):
        raw, self.file, self.base_dir = read_config(config)
        self.param = param = check_solver_params(raw, self.file, max_iter=max_iter, seed=seed)
        spec = self._net_spec(raw)
        net_seed = param.random_seed if param.random_seed >= 0 else None
        self.net = Net(spec, "TRAIN", seed=net_seed, data_root=data_root)
        self._check_has_loss()
        self.test_net = self._test_net(raw, spec, data_root)
        for path in param.weights:
            self.net.load(self._resolve(path))
        self.output_dir = Path(output_dir) if output_dir is not None else self.base_dir
        self.snapshot_prefix = param.snapshot_prefix or (
            Path(self.file).stem if self.file else (self.net.name or "snapshot"))
        self.rule = RULES[param.type].from_param(param)
        params = self.net.learnable_params
        self.history = [self.rule.new_history(p.blob.shape, p.blob.data.dtype) for p in params]
        self._scratch = [self.rule.new_scratch(p.blob.shape, p.blob.data.dtype) for p in params]
        self._decay_buffer = [None] * len(params)
        self.reporter = reporter if reporter is not None else Reporter()
        self.iter = 0
        self.status = None
        self.stopped = False
        self.last_snapshot = None
        self._snapshot_iter = None
        self._losses = deque(maxlen=param.average_loss)
        self._stop = False
        self._started = False
        self._timer = (time.perf_counter(), 0)

    def _check_has_loss(self):
        if not any(weight for layer in self.net.layers for weight in layer.loss_weights):
            raise ConfigError("the TRAIN net has no loss: no layer has a non-zero loss weight, so "
                              "there is nothing to minimise (add a loss layer such as "
                              "SoftmaxWithLoss, or a loss_weight on a top)", file=self.file)

    def _test_net(self, raw, spec, data_root):
        """The TEST net (sharing the TRAIN net's weights) when test_iter asks for one, else None.
        test_interval without test_iter, or a TEST net with nothing to test, is a ConfigError."""
        param = self.param
        if not param.test_iter:
            if param.test_interval > 0:
                found = " and the net has TEST-phase layers" if _has_test_only_layers(spec) else ""
                raise field_where(raw, self.file, "test_interval").error(
                    f"is set{found}, so test_iter (TEST batches per test) is needed too (or "
                    "leave out test_interval to train without testing)")
            return None
        test_net = Net(spec, "TEST", seed=self.net.seed + 1, data_root=data_root)
        if not test_net.layers or not test_net.outputs:
            what = "no layers (are they all include: {phase: TRAIN}?)" if not test_net.layers \
                else "no outputs (every blob is consumed by a layer; a loss without a top shows nothing)"
            raise field_where(raw, self.file, "test_iter").error(
                f"is given but the TEST-phase net has {what}, so there is nothing to test")
        test_net.share_weights_from(self.net)
        return test_net

    def _net_spec(self, raw):
        if self.param.net:
            if "layers" in raw or "layer" in raw:
                raise field_where(raw, self.file, "net").error(
                    "the config has its own 'layers:'; give either those or solver.net, not both")
            return load_net_spec(self._resolve(self.param.net))
        return check_net(raw, file=self.file, base_dir=self.base_dir)

    def _resolve(self, path):
        path = Path(path)
        return path if path.is_absolute() else self.base_dir / path

    # -- running ------------------------------------------------------------------------------
    def solve(self, resume=None):
        """Train to max_iter (from a solver state when ``resume`` names one); snapshot at the end;
        then, as Caffe, show the final loss (one more forward) when display divides the
        iteration, and test once more. Caffe tests at the end only when test_interval divides
        max_iter; here the final test always runs."""
        if resume is not None:
            self.restore(resume)
        if self.iter > self.param.max_iter:
            raise ConfigError(f"the solver is at iteration {self.iter}, beyond max_iter "
                              f"{self.param.max_iter}: nothing to train (raise max_iter, e.g. "
                              "with --max-iter)", file=str(resume) if resume is not None else self.file)
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
                self.net.forward()          # Caffe's closing line: the loss only, no outputs
                loss = self.net.loss
                self._losses.append(loss)
                self._call("on_train", self.iter, loss, self.smoothed_loss, None, {}, None)
            if self.param.test_interval and self.test_net is not None:
                self._test_and_report()
            self.status = "done"
        except BaseException:
            if self.status == "running":
                self.status = "failed"
            raise
        finally:
            self._stop = False
            self._call("on_end")

    def step(self, iters):
        """Run ``iters`` iterations (tests, display and snapshots as configured)."""
        self._start()
        self.stopped = False
        self._losses.clear()            # as Caffe's Step: the smoothed loss starts afresh
        p = self.param
        stop_iter = self.iter + iters
        while self.iter < stop_iter and not self._stop:
            if p.test_interval and self.test_net is not None and self.iter % p.test_interval == 0 \
                    and (self.iter > 0 or p.test_initialization):
                self._test_and_report()
                if self._stop:
                    break
            self.net.clear_param_diffs()
            loss = 0.0
            for _ in range(p.iter_size):
                loss += self.net.forward_backward()
            loss /= p.iter_size
            if not math.isfinite(loss):
                self._fail(f"loss is {'nan' if math.isnan(loss) else 'infinite'} at iteration {self.iter}")
            self._losses.append(loss)
            rate = self.learning_rate()
            if p.display and self.iter % p.display == 0:
                self._call("on_train", self.iter, loss, self.smoothed_loss, rate,
                           self._outputs(self.net), self._speed())
            self.apply_update(rate)
            self.iter += 1
            self._call("on_iteration", self.iter)
            if p.snapshot and self.iter % p.snapshot == 0:
                self.snapshot()
        if self._stop:
            self._stop = False
            self.stopped = True
            if self._snapshot_iter != self.iter:
                self.snapshot()

    def request_stop(self):
        """Ask to stop after the current iteration (safe from a signal handler): the solver then
        snapshots and returns from step/solve with ``stopped`` true."""
        self._stop = True

    @property
    def smoothed_loss(self):
        """The mean loss over the last ``average_loss`` iterations of the current ``step`` call
        (Caffe's displayed loss)."""
        return sum(self._losses) / len(self._losses) if self._losses else float("nan")

    def learning_rate(self, iteration=None):
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
                    param.blob.data, diff, self.history[i], rate * param.lr_mult,
                    p.weight_decay * param.decay_mult, self.iter):
                continue
            # overflow shows up as a non-finite loss or weights, reported as one TrainingError
            with np.errstate(over="ignore", invalid="ignore"):
                self.regularize(i, param)
                self.rule.compute(diff, self.history[i], self._scratch[i], rate * param.lr_mult,
                                  self.iter)
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
    def test(self):
        """Run the TEST net ``test_iter[0]`` times; {output name: mean over the batches} (a float
        for scalar outputs, an array of per-element means otherwise). None when a stop request
        interrupts it."""
        if self.test_net is None:
            raise ConfigError("there is no TEST net to test: give solver.test_iter", file=self.file)
        batches = self.param.test_iter[0]
        sums = {}
        for _ in range(batches):
            if self._stop:
                return None
            for name, value in self.test_net.forward().items():
                if name in sums:
                    sums[name] += value
                else:
                    sums[name] = np.array(value, dtype=np.float64)
        return {name: (total / batches).item() if total.size == 1 else total / batches
                for name, total in sums.items()}

    def _test_and_report(self):
        results = self.test()
        if results is None:
            self._call("on_message", "Test interrupted.")
        else:
            self._call("on_test", self.iter, results)
        return results

    # -- snapshots ----------------------------------------------------------------------------
    def snapshot_paths(self, iteration=None):
        """(weights path, solver state path) of the snapshot at ``iteration`` (default: now)."""
        iteration = self.iter if iteration is None else iteration
        base = str(self.output_dir / f"{self.snapshot_prefix}_iter_{iteration}")
        return Path(base + ".weights.npz"), Path(base + ".solverstate.npz")

    def snapshot(self):
        """Write the weights, then the solver state (each atomically); returns the weights path.
        Weights that are not finite are never written (a TrainingError instead)."""
        for param in self.net.learnable_params:
            if not np.isfinite(param.blob.data).all():
                self._fail(f"the weights of '{param.name}' are not finite at iteration {self.iter}; "
                           "no snapshot written")
        weights, state = self.snapshot_paths()
        self._write(weights, self.net.save)
        n = len(self.history)
        arrays = {f"history/{slot * n + i}": slots[slot]
                  for i, slots in enumerate(self.history) for slot in range(len(slots))}
        arrays.update({
            "format_version": np.array(STATE_VERSION),
            "iter": np.array(self.iter, dtype=np.int64),
            "type": np.array(self.param.type),
            "weights_file": np.array(weights.name),
            "net_state": np.array(json.dumps(self.net.state())),
        })
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

    def restore(self, path):
        """Resume from a solver state file (or the weights file next to one): weights, history,
        iteration, generator and layer states. The files must belong to this net."""
        path = Path(path)
        if path.name.endswith(".weights.npz"):
            path = path.with_name(path.name[:-len(".weights.npz")] + ".solverstate.npz")
        arrays = load_arrays(path)

        def fail(message, file=path):
            return ConfigError(message, file=str(file))

        for key in ("iter", "type", "weights_file", "net_state"):
            if key not in arrays:
                raise fail(f"not a netlayers solver state (no '{key}')")
        kind = str(arrays["type"])
        if kind != self.param.type:
            raise fail(f"written by a {kind} solver; this config trains with {self.param.type}")
        params = self.net.learnable_params
        slots = self.rule.history_slots
        count = sum(1 for key in arrays if key.startswith("history/"))
        if count != slots * len(params):
            raise fail(f"holds history for {count // slots} params; this net has {len(params)} "
                       "learnable params (a snapshot of another net?)")
        for i, param in enumerate(params):
            for slot in range(slots):
                saved = arrays[f"history/{slot * len(params) + i}"]
                if saved.shape != param.blob.shape:
                    raise fail(f"history of param #{i} ('{param.name}') has shape {saved.shape}; "
                               f"the net's is {param.blob.shape} (a snapshot of another net?)")
        weights_path = Path(str(arrays["weights_file"]))
        if not weights_path.is_absolute():
            weights_path = path.parent / weights_path
        self._check_weights(weights_path)
        self.net.load(weights_path)
        for i, param in enumerate(params):
            for slot in range(slots):
                self.history[i][slot][...] = arrays[f"history/{slot * len(params) + i}"]
        self.iter = int(arrays["iter"])
        self.net.set_state(json.loads(str(arrays["net_state"])))
        if self.test_net is not None and "test_net_state" in arrays:
            self.test_net.set_state(json.loads(str(arrays["test_net_state"])))
        self._snapshot_iter = self.iter
        self.last_snapshot = path
        self._timer = (time.perf_counter(), self.iter)
        self._call("on_message", f"Restoring previous solver status from {path} (iteration {self.iter})")

    def _check_weights(self, path):
        weights = load_weights(path)
        for name, blobs in self.net.params.items():
            saved = weights.get(name)
            if saved is None:
                raise ConfigError("has no weights for this layer (a snapshot of another net?)",
                                  file=str(path), layer=name)
            shapes = [tuple(b.shape) for b in blobs]
            if [tuple(a.shape) for a in saved] != shapes:
                raise ConfigError(f"has shapes {[tuple(a.shape) for a in saved]} for this layer; "
                                  f"the net has {shapes}", file=str(path), layer=name)

    # -- helpers ------------------------------------------------------------------------------
    def _start(self):
        if not self._started:
            folders = {Path(self.output_dir): "output folder"}
            folders.setdefault(self.snapshot_paths()[0].parent, "snapshot folder")
            for folder, what in folders.items():
                check_writable_folder(folder, what)
            self._started = True
            self._timer = (time.perf_counter(), self.iter)
            self._call("on_start", self)

    def _speed(self):
        now, iteration = time.perf_counter(), self.iter
        then, before = self._timer
        self._timer = (now, iteration)
        return (iteration - before) / (now - then) if iteration > before and now > then else None

    @staticmethod
    def _outputs(net):
        return {name: net.blobs[name].data.copy() for name in net.outputs}

    def _fail(self, message, hint=" (try a lower base_lr or clip_gradients)"):
        last = "none" if self.last_snapshot is None else \
            f"{self.last_snapshot} (iteration {self._snapshot_iter})"
        self.status = "failed"
        raise TrainingError(f"{message}{hint}; last snapshot: {last}")

    def _call(self, name, *args):
        method = getattr(self.reporter, name, None)
        if method is not None:
            method(*args)

    def __repr__(self):
        return f"<Solver {self.param.type} '{self.net.name}' at iteration {self.iter}>"
