"""Training: the Solver (loop, testing, snapshots), update rules, lr policies, reporting.

    from netlayers.solvers import Solver
    solver = Solver("configs/mlp_fashion_mnist.yaml", output_dir="runs/mlp")
    solver.solve()

Update rules (per-param math on arrays, testable without a net): SGD, Nesterov (sgd.py);
AdaGrad, RMSProp, AdaDelta, Adam (adaptive.py). Learning-rate policies: lr_policy.py.
"""

from . import lr_policy
from .adaptive import AdaDelta, AdaGrad, Adam, RMSProp
from .base import RULES, SOLVER_FIELDS, Solver, check_solver_params
from .reporting import Reporter
from .sgd import SGD, Nesterov, UpdateRule

__all__ = [
    "Solver",
    "Reporter",
    "UpdateRule",
    "SGD",
    "Nesterov",
    "AdaGrad",
    "RMSProp",
    "AdaDelta",
    "Adam",
    "RULES",
    "SOLVER_FIELDS",
    "check_solver_params",
    "lr_policy",
]
