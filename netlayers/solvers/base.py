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
>= 0, multistep needs stepvalue; the TRAIN net must have a loss; ``test_iter`` holds one value per
TEST net (Caffe's count), each TEST net needs outputs, and ``test_interval`` needs test_iter; the output and
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
as JSON strings: generator and layer states such as a data layer's position),
``weights_file`` (relative to the state file's folder) and ``ranks`` (the data-parallel
processes that trained; absent: 1). Resuming from iteration k and training
to n gives the same weights, bit for bit, as training 0 to n. As in Caffe, the smoothed loss
is not kept: every ``step`` call (so every run, resumed or not) starts its average afresh.

The parts: settings.py (the ``solver:`` fields and their checks), folders.py (output folders,
earlier runs, leftovers), snapshots.py (the state file's format, restoring, what can be saved),
distributed.py (data-parallel training over MPI); this module holds the Solver and its loop.
"""

import math
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from .. import io
from ..caffe.prototxt import is_prototxt
from ..errors import ConfigError, TrainingError
from ..io import save_arrays
from ..net import Net
from ..netspec import load_net_spec
from ..netspec.spec import check_net
from . import debug_info, lr_policy
from .distributed import DataParallel, SingleProcess, mark_on_every_rank
from .folders import RunFolders, check_writable_folder, os_reason
from .reporting import Reporter
from .settings import (
    LEGACY_TYPES,
    NET_STATE_FIELDS,
    RULES,
    SOLVER_FIELDS,
    TRAIN_NET_FIELDS,
    _has_test_only_layers,
    _state,
    check_solver_params,
    field_where,
    read_config,
)
from .snapshots import MAX_MEMBER_NAME, STATE_VERSION, Snapshots

__all__ = [
    "LEGACY_TYPES",
    "MAX_MEMBER_NAME",
    "NET_STATE_FIELDS",
    "RULES",
    "SOLVER_FIELDS",
    "STATE_VERSION",
    "TRAIN_NET_FIELDS",
    "Solver",
    "check_solver_params",
    "check_writable_folder",
    "field_where",
    "os_reason",
    "read_config",
    "save_arrays",
]


class Solver(Snapshots, RunFolders):
    """Trains the TRAIN net of a config; tests on its TEST net (sharing the weights).

    ``Solver(config, data_root=None, output_dir=None, seed=None, max_iter=None, reporter=None,
    overwrite=False, comm=None, share_memory=True)``: ``config`` is a YAML path or a dict;
    ``seed`` and ``max_iter`` override the solver section's ``random_seed`` and ``max_iter``;
    ``reporter`` defaults to a :class:`~netlayers.solvers.reporting.Reporter`; ``overwrite``
    lets a fresh run replace an earlier run's snapshots (same prefix) and metrics.jsonl in its
    output folder; ``comm``, an mpi4py communicator of more than one rank, makes it one of that
    many data-parallel solvers (see distributed.py; every rank builds its Solver with the same
    arguments).
    ``share_memory`` (default true) builds the TRAIN net so (``Net(share_memory=True)``): after a
    step its inner blobs' values and diffs hold other blobs' numbers; pycaffe's solvers turn it
    off, so that every blob keeps its own, as in Caffe.

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
        comm: Any = None,
        share_memory: bool = True,
    ) -> None:
        raw, self.file, self.base_dir = read_config(config)
        self.caffe_paths = self.file is not None and is_prototxt(self.file)
        self.param = param = check_solver_params(raw, self.file, max_iter=max_iter, seed=seed, type=type)
        spec = self._net_spec(raw)
        net_seed = param.random_seed if param.random_seed >= 0 else None
        level, stages = _state(param.train_state)
        self.net = Net(
            spec, "TRAIN", seed=net_seed, data_root=data_root, level=level, stages=stages, share_memory=share_memory
        )
        self._check_has_loss()
        self.test_nets = self._test_nets(raw, spec, data_root)
        self.parallel = DataParallel(comm) if comm is not None and comm.Get_size() > 1 else SingleProcess()
        for net in (self.net, *self.test_nets):
            self.parallel.shard(net)
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
        if not self.parallel.is_root:
            self.reporter = None  # rank 0 alone logs and writes metrics.jsonl
        self.iter = 0
        self.status: str | None = None
        self.stopped = False
        self.last_snapshot: Path | None = None
        self._snapshot_iter: int | None = None
        self._losses: deque[float] = deque(maxlen=param.average_loss)
        self._stop = False
        self._stop_asked = False  # distributed: asked here, not yet agreed by the ranks
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

    @property
    def test_net(self) -> Net | None:
        """The first TEST net (None without test_iter): most configs have one."""
        return self.test_nets[0] if self.test_nets else None

    def _test_nets(self, raw, spec, data_root):
        """The TEST nets, sharing the TRAIN net's weights, as Caffe's InitTestNets makes them:
        one per ``test_net`` / ``test_net_param``, then one per remaining ``test_iter`` value on
        the TEST phase of the net being trained, each with its ``test_state`` (level, stages) when
        given. test_interval without test_iter, counts that do not match, or a TEST net with
        nothing to test are ConfigErrors."""
        param = self.param
        if not param.test_iter:
            if param.test_interval > 0:
                found = " and the net has TEST-phase layers" if _has_test_only_layers(spec) else ""
                raise field_where(raw, self.file, "test_interval").error(
                    f"is set{found}, so test_iter (TEST batches per test) is needed too (or "
                    "leave out test_interval to train without testing)"
                )
            return []
        specs = self._test_specs(raw, spec)
        if param.test_state and len(param.test_state) != len(specs):
            raise field_where(raw, self.file, "test_state").error(
                f"{len(param.test_state)} test_state given for {len(specs)} test net(s): give one each"
            )
        nets = []
        for index, test_spec in enumerate(specs):
            level, stages = _state(param.test_state[index] if param.test_state else None)
            test_net = Net(
                test_spec, "TEST", seed=self.net.seed + 1 + index, data_root=data_root, level=level, stages=stages
            )
            if not test_net.layers or not test_net.outputs:
                what = (
                    "no layers (are they all include: {phase: TRAIN}?)"
                    if not test_net.layers
                    else "no outputs (every blob is consumed by a layer; a loss without a top shows nothing)"
                )
                raise field_where(raw, self.file, "test_iter").error(
                    f"is given but TEST net #{index} has {what}, so there is nothing to test"
                )
            test_net.share_weights_from(self.net)
            test_net.drop_backward()  # tested forward only: keep nothing for a backward
            nets.append(test_net)
        return nets

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

    def _test_specs(self, raw, train_spec):
        """The TEST nets' specs, as many as ``test_iter`` values: the ``test_net`` files and
        ``test_net_param`` nets first, then the net being trained for the rest (Caffe's rule)."""
        tests = [self._load_net(raw, "test_net_param", value) for value in self.param.test_net_param]
        tests += [self._load_net(raw, "test_net", value) for value in self.param.test_net]
        count = len(self.param.test_iter)
        generic = self.param.train_net is None and self.param.train_net_param is None
        if count < len(tests) or (count > len(tests) and not generic):
            raise field_where(raw, self.file, "test_iter").error(
                f"{count} value(s) for {len(tests)} test net(s): give one test_iter per test net"
            )
        return tests + [train_spec] * (count - len(tests))

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
        if resume is not None:  # a file one rank cannot read stops every rank
            self.parallel.on_every_rank(lambda: self.restore(resume))
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
                loss = self.parallel.average_results({"loss": np.array(self.net.loss)}, 1)["loss"]
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
            self._stop = self._stop_asked = False
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
            local_loss = loss
            loss, stop = self.parallel.average_gradients(self.net.learnable_params, loss, self._stop_asked)
            self._stop = self._stop or stop
            if not math.isfinite(loss):
                where = self.parallel.where_not_finite(local_loss)
                self._fail(
                    f"loss is {'nan' if math.isnan(loss) else 'infinite'} at iteration {self.iter}{where}",
                    every_rank=True,
                )
            self._losses.append(loss)
            rate = self.learning_rate()
            if not math.isfinite(rate):
                self._fail(
                    f"the learning rate of lr_policy '{p.lr_policy}' is not a finite number at iteration {self.iter}",
                    hint=" (check gamma, power and stepsize)",
                    every_rank=True,
                )
            if p.display and self.iter % p.display == 0:
                self._call("on_train", self.iter, loss, self.smoothed_loss, rate, self._displayed(), self._speed())
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
            self._stop = self._stop_asked = False
            self.stopped = True
            if self._write_error is not None:
                self._fail_after_write_error()
            if self._snapshot_iter != self.iter:
                self.snapshot()

    def request_stop(self) -> None:
        """Ask to stop after the current iteration (safe from a signal handler): the solver then
        snapshots and returns from step/solve with ``stopped`` true. Distributed, the request
        travels with the iteration's gradients and every rank stops after that iteration (a
        test under way runs to its end)."""
        self._stop_asked = True
        if self.parallel.stops_at_once:
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
    def test(self, index: int = 0) -> dict[str, Any] | None:
        """Run TEST net ``index`` ``test_iter[index]`` times; {output name: mean over the
        batches} (a float for scalar outputs, an array of per-element means otherwise). None
        when a stop request interrupts it."""
        if not self.test_nets:
            raise ConfigError("there is no TEST net to test: give solver.test_iter", file=self.file)
        test_net, batches = self.test_nets[index], self.param.test_iter[index]
        self.parallel.average_batchnorm(test_net)
        sums: dict[str, np.ndarray] = {}
        for _ in range(batches):
            if self._stop:
                return None
            for name, value in test_net.forward().items():
                if name in sums:
                    sums[name] += value
                else:
                    sums[name] = np.array(value, dtype=np.float64)
        return self.parallel.average_results(sums, batches)

    def _test_and_report(self):
        """Test every TEST net in turn and report each (Caffe's "Testing net (#k)")."""
        results = None
        for index in range(len(self.test_nets)):
            results = self.test(index)
            if results is None:
                self._call("on_message", "Test interrupted.")
                return None
            self._call("on_test", self.iter, results, index)
        return results

    # -- snapshots ----------------------------------------------------------------------------
    def snapshot(self) -> Path:
        """Write the weights, then the solver state (each atomically); returns the weights path.
        Weights that are not finite are never written (a TrainingError instead). Distributed:
        BatchNorm statistics averaged and the ranks' weights compared first; rank 0 writes."""
        self.parallel.average_batchnorm(self.net)
        self.parallel.check_same_weights(self.net, self.iter)
        self.parallel.root_decides(self._write_snapshot)
        weights, state = self.snapshot_paths()
        self._snapshot_iter, self.last_snapshot = self.iter, state
        return weights

    def _write_snapshot(self):
        for param in self.net.learnable_params:
            if not np.isfinite(param.blob.data).all():
                self._fail(
                    f"the weights of '{param.name}' are not finite at iteration {self.iter}; no snapshot written"
                )
        weights, state = self.snapshot_paths()
        # as Net.save, but an OSError stays one (Net.save makes it a DataError)
        self._write(weights, lambda path: io.save_arrays(path, self.net.weight_arrays()))
        arrays = self.state_arrays(weights)
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

    def _start(self):
        """Once, before the first iteration: check the folders and the snapshot file names,
        refuse (or with ``overwrite``, clear) an earlier run in the output folder when this run
        is fresh, remove leftover temporary files, open the reporter, say what is ignored."""
        if self._started:
            return
        notes: list[str] = []  # rank 0 alone writes; the ranks start from the same weights
        self.parallel.check_same_weights(self.net, self.iter)
        self.parallel.root_decides(lambda: notes.extend(self.prepare_folders()))
        self._started = True
        self._timer = (time.perf_counter(), self.iter)
        self._call("on_start", self)
        if self._write_error is not None:
            self._fail_after_write_error(snapshot=False)
        for line in notes + self._ignored_settings():
            self._log(line)

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

    def _displayed(self):
        """The TRAIN net's outputs to show (averaged over the ranks when distributed)."""
        return self.parallel.average_outputs(self._outputs(self.net))

    def _fail(self, message, hint=" (try a lower base_lr or clip_gradients)", every_rank=False):
        """Raise a TrainingError naming the last snapshot; ``every_rank``: every rank of a
        distributed run raises it alike (see distributed.py)."""
        last = "none" if self.last_snapshot is None else f"{self.last_snapshot} (iteration {self._snapshot_iter})"
        self.status = "failed"
        err = TrainingError(f"{message}{hint}; last snapshot: {last}")
        raise mark_on_every_rank(err) if every_rank and self.parallel.size > 1 else err

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
            self.request_stop()

    def _log(self, line):
        self._call("on_message", line)

    def __repr__(self):
        return f"<Solver {self.param.type} '{self.net.name}' at iteration {self.iter}>"
