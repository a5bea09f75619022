"""pycaffe's solvers (``caffe.SGDSolver(path)``, ``caffe.get_solver(path)``, ...) over netlayers'
:class:`~netlayers.solvers.Solver`; their ``net`` and ``test_nets`` are :class:`~.pycaffe.Net`
views of the nets being trained."""

import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..solvers import base as _solver_base
from ..solvers.reporting import Reporter
from .io import array_to_blobproto, blobproto_to_array
from .proto.caffe_pb2 import BlobProto
from .pycaffe import YAML_SUFFIXES, Net, _next_seed
from .wire import Field, Message, write_caffemodel

__all__ = [
    "Solver",
    "SGDSolver",
    "NesterovSolver",
    "AdaGradSolver",
    "RMSPropSolver",
    "AdaDeltaSolver",
    "AdamSolver",
    "get_solver",
]


class SolverState(Message):
    """Caffe's ``SolverState`` message (a binary ``.solverstate`` file): the iteration, the
    ``.caffemodel`` written with it, the update rule's history blobs (slot s of param i at
    s * num_params + i) and the multistep policy's current step."""

    FIELDS = (
        Field("iter", 1, "int32"),
        Field("learned_net", 2, "string"),
        Field("history", 3, "message", repeated=True, message=BlobProto),
        Field("current_step", 4, "int32"),
    )


class _NetlayersSolver(_solver_base.Solver):
    """netlayers' Solver as pycaffe's solvers run it: as Caffe, snapshots are written over those
    of an earlier run of the same name instead of refusing to start, and every snapshot also
    writes Caffe's own ``<prefix>_iter_<N>.caffemodel`` and ``.solverstate``."""

    def check_output_reuse(self):
        """Caffe writes over the files of an earlier run: so does a pycaffe solver."""

    def _write_snapshot(self):
        weights = super()._write_snapshot()
        base = str(weights)[: -len(".weights.npz")]
        caffemodel = Path(base + ".caffemodel")
        self._write(caffemodel, lambda path: write_caffemodel(self.net, path))
        self._write(Path(base + ".solverstate"), lambda path: _write_bytes(path, self._caffe_state(caffemodel)))
        return weights

    def _caffe_state(self, caffemodel: Path) -> bytes:
        state = SolverState()
        state.iter = self.iter
        state.learned_net = str(caffemodel)
        slots = max((len(history) for history in self.history), default=0)
        for slot in range(slots):
            for history in self.history:
                state.history.append(array_to_blobproto(history[slot]))
        state.current_step = _current_step(self.param, self.iter)
        return state.SerializeToString()

    def restore_caffe_state(self, path: Path) -> None:
        """Continue from Caffe's binary ``.solverstate``: the iteration, the history and the
        weights of its ``learned_net`` (found as written, else beside the state file). Data
        layers start from their beginning (Caffe's state does not keep their position)."""
        state = SolverState()
        try:
            state.ParseFromString(path.read_bytes())
        except OSError as err:
            raise ConfigError(f"cannot read the solver state: {err.strerror or err}", file=str(path)) from None
        history = [blobproto_to_array(blob) for blob in state.history]
        n = len(self.history)
        if n and len(history) % n or len(history) // max(n, 1) != max((len(h) for h in self.history), default=0):
            raise ConfigError(
                f"holds {len(history)} history blobs; a {self.param.type} solver of this net has "
                f"{sum(len(h) for h in self.history)}",
                file=str(path),
                field="history",
            )
        for k, array in enumerate(history):
            target = self.history[k % n][k // n]
            if array.size != target.size:
                raise ConfigError(
                    f"history blob {k} has {array.size} values, the net's param has {target.size}",
                    file=str(path),
                    field="history",
                )
            target[...] = array.reshape(target.shape)
        if state.learned_net:
            learned = Path(state.learned_net)
            if not learned.exists() and not learned.is_absolute():
                learned = path.parent / learned.name
            self.net.load(learned)
        self.iter = state.iter


def _write_bytes(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def _current_step(param, iteration: int) -> int:
    """Caffe's ``current_step`` at ``iteration``: the steps passed under the step and multistep
    policies, 0 under the others."""
    if param.lr_policy == "multistep":
        return sum(1 for value in param.stepvalue if iteration >= value)
    if param.lr_policy == "step" and param.stepsize:
        return iteration // param.stepsize
    return 0


class Solver:
    """pycaffe's solver, built from a solver file: a Caffe solver prototxt (``net`` or
    ``train_net`` and ``test_net`` name the nets, resolved from the current folder as Caffe
    does, else from the solver file's folder) or a netlayers YAML config with a ``solver:``
    section. ``net`` and ``test_nets`` are :class:`Net` views of the nets being trained;
    ``iter``, ``step(n)``, ``solve()``, ``snapshot()``, ``restore(path)`` are Caffe's. The
    class (SGDSolver, AdamSolver, ...) decides the update rule, as in pycaffe; ``get_solver``
    takes it from the file. Log lines go to stderr as Caffe's do (none when the environment's
    ``GLOG_minloglevel`` is 1 or more); snapshots are netlayers' ``.weights.npz`` and
    ``.solverstate.npz``."""

    rule: str | None = None  # the update rule of this class; None: the file's own

    def __init__(self, solver_file: Any) -> None:
        self._attach(_build_solver(solver_file, self.rule))

    def _attach(self, netlayers_solver: "_NetlayersSolver") -> None:
        self.netlayers_solver = netlayers_solver
        self.net = Net.wrapping(netlayers_solver.net)
        self.test_nets = [Net.wrapping(test_net) for test_net in netlayers_solver.test_nets]

    @property
    def iter(self) -> int:
        return self.netlayers_solver.iter

    @property
    def param(self):
        """The checked solver fields (Caffe's SolverParameter names)."""
        return self.netlayers_solver.param

    @property
    def type(self) -> str:
        return self.netlayers_solver.param.type

    @property
    def lr(self) -> float:
        """The learning rate of the current iteration (pycaffe's ``SGDSolver.lr``)."""
        return self.netlayers_solver.learning_rate()

    def step(self, iters: int) -> None:
        """Train ``iters`` iterations (testing, displaying and snapshotting as the file says)."""
        self.netlayers_solver.step(iters)

    def solve(self, resume_file: Any = None) -> None:
        """Train to max_iter (from a solver state when given, as :meth:`restore` reads it),
        then snapshot and test."""
        if resume_file is not None:
            self.restore(resume_file)
        self.netlayers_solver.solve()

    def apply_update(self) -> None:
        """One update of the params from their diffs at the current learning rate (clipping,
        normalisation, weight decay, the rule's history), as Caffe's ``ApplyUpdate``; the
        iteration count stays."""
        solver = self.netlayers_solver
        solver.apply_update(solver.learning_rate())

    def share_weights(self, net: Net) -> None:
        """Make ``net`` use the training net's params (pycaffe's ``solver.share_weights``)."""
        net.share_with(self.net)

    def snapshot(self) -> None:
        """Write ``<snapshot_prefix>_iter_<iter>.caffemodel`` and ``.solverstate`` (Caffe's
        binary files), and netlayers' ``.weights.npz`` and ``.solverstate.npz`` beside them."""
        self.netlayers_solver.snapshot()

    def restore(self, state_file: Any) -> None:
        """Continue from a snapshot: netlayers' ``.solverstate.npz`` (bit for bit, data
        positions too), which is also used when it lies beside a ``.solverstate`` named here;
        else Caffe's binary ``.solverstate`` (iteration, history and weights)."""
        path = Path(state_file) if isinstance(state_file, (str, os.PathLike)) else None
        if path is not None and path.suffix == ".solverstate":
            exact = path.with_name(path.name + ".npz")
            if not exact.exists():
                self.netlayers_solver.restore_caffe_state(path)
                return
            state_file = exact
        self.netlayers_solver.restore(state_file)

    def __repr__(self) -> str:
        return f"<caffe.{type(self).__name__} at iteration {self.iter}>"


def _solver_class(rule: str) -> type:
    return type(f"{rule}Solver", (Solver,), {"rule": rule, "__doc__": f"pycaffe's {rule}Solver: see Solver."})


SGDSolver = _solver_class("SGD")
NesterovSolver = _solver_class("Nesterov")
AdaGradSolver = _solver_class("AdaGrad")
RMSPropSolver = _solver_class("RMSProp")
AdaDeltaSolver = _solver_class("AdaDelta")
AdamSolver = _solver_class("Adam")
SOLVER_CLASSES = {
    cls.rule: cls for cls in (SGDSolver, NesterovSolver, AdaGradSolver, RMSPropSolver, AdaDeltaSolver, AdamSolver)
}


def get_solver(solver_file: Any) -> Solver:
    """The solver of the type the file names (``type``, or the legacy ``solver_type``; SGD when
    neither)."""
    built = _build_solver(solver_file, None)
    solver = object.__new__(SOLVER_CLASSES[built.param.type])
    solver._attach(built)
    return solver


NET_FIELDS = ("net", "train_net", "net_param", "train_net_param")
TEST_NET_FIELDS = ("test_net", "test_net_param")


def _build_solver(solver_file: Any, rule: str | None) -> _NetlayersSolver:
    """netlayers' solver for a pycaffe solver file (see :class:`Solver`); ``rule`` overrides the
    file's type. netlayers' Solver reads Caffe's solver prototxt itself (``net``, ``train_net`` /
    ``test_net``, inline nets, ``train_state`` / ``test_state``)."""
    path = Path(solver_file) if isinstance(solver_file, (str, os.PathLike)) else None
    if path is None:
        raise ConfigError(f"a solver is built from a solver file's name, got {type(solver_file).__name__}")
    reporter = Reporter(quiet=_glog_quiet(), metrics=False, progress=False)
    # every blob keeps its values and diffs after a step, as Caffe's: pycaffe scripts read them
    # (a training accuracy from solver.net.blobs["score"]), where a shared net's would hold
    # other blobs' numbers
    options: dict[str, Any] = {"reporter": reporter, "data_root": os.getcwd(), "share_memory": False}
    raw = _solver_base.read_config(path)[0].get("solver") or {}
    if path.suffix.lower() in YAML_SUFFIXES:
        written = raw.get("type") or _solver_base.LEGACY_TYPES.get(raw.get("solver_type"), "SGD")
        if rule is not None and written != rule:
            raise ConfigError(
                f"trains with {written}, not {rule}: use caffe.{written}Solver or caffe.get_solver",
                file=str(path),
                field="solver.type",
            )
    elif rule is not None:  # pycaffe's class decides the update rule, whatever the file says
        options["type"] = rule
    seed = raw.get("random_seed", -1) if isinstance(raw, dict) else -1
    if isinstance(seed, int) and seed < 0:
        options["seed"] = _next_seed()
    try:
        return _NetlayersSolver(path, **options)
    except ConfigError as err:
        raise err.located(file=str(path)) from None


def _glog_quiet() -> bool:
    """Whether GLOG_minloglevel (pycaffe scripts set it to silence Caffe) hides info lines."""
    try:
        return int(os.environ.get("GLOG_minloglevel", "0")) >= 1
    except ValueError:
        return False
