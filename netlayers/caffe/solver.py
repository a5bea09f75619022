"""pycaffe's solvers (``caffe.SGDSolver(path)``, ``caffe.get_solver(path)``, ...) over netlayers'
:class:`~netlayers.solvers.Solver`; their ``net`` and ``test_nets`` are :class:`~.pycaffe.Net`
views of the nets being trained."""

import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..solvers import base as _solver_base
from ..solvers.reporting import Reporter
from .pycaffe import YAML_SUFFIXES, Net, _next_seed

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


class _NetlayersSolver(_solver_base.Solver):
    """netlayers' Solver as pycaffe's solvers run it: as Caffe, snapshots are written over those
    of an earlier run of the same name instead of refusing to start."""

    def check_output_reuse(self):
        """Caffe writes over the files of an earlier run: so does a pycaffe solver."""


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
        test_net = netlayers_solver.test_net
        self.test_nets = [Net.wrapping(test_net)] if test_net is not None else []

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

    def step(self, iters: int) -> None:
        """Train ``iters`` iterations (testing, displaying and snapshotting as the file says)."""
        self.netlayers_solver.step(iters)

    def solve(self, resume_file: Any = None) -> None:
        """Train to max_iter (from a ``.solverstate.npz`` when given), then snapshot and test."""
        self.netlayers_solver.solve(resume_file)

    def snapshot(self) -> None:
        """Write ``<snapshot_prefix>_iter_<iter>.weights.npz`` and ``.solverstate.npz``."""
        self.netlayers_solver.snapshot()

    def restore(self, state_file: Any) -> None:
        """Continue from a ``.solverstate.npz`` that :meth:`snapshot` wrote."""
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
    options: dict[str, Any] = {"reporter": reporter, "data_root": os.getcwd()}
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
