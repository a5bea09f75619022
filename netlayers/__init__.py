"""netlayers: a Caffe-style deep-learning framework in Python.

Public API: Blob, Layer, Net, register_layer, gradcheck (check_layer, check_net), the errors,
(from the training modules) Solver, and for trained models Predictor, predict and deploy_net.
"""

import importlib
from typing import TYPE_CHECKING

from .errors import ConfigError, DataError, NetlayersError, TrainingError
from .registry import register_layer

if TYPE_CHECKING:
    from . import gradcheck
    from .blob import Blob
    from .deploy import deploy_net
    from .layer import Layer
    from .net import Net
    from .prediction import Predictor, predict
    from .solvers import Solver

__version__ = "0.1.0"

#: Imported on first use (numpy and numba take half a second), so that ``import netlayers``
#: and the command line's start stay cheap: attribute -> (module, name or None for the module).
_LAZY = {
    "gradcheck": (".gradcheck", None),
    "Blob": (".blob", "Blob"),
    "Layer": (".layer", "Layer"),
    "Net": (".net", "Net"),
    "Solver": (".solvers", "Solver"),
    "Predictor": (".prediction", "Predictor"),
    "predict": (".prediction", "predict"),
    "deploy_net": (".deploy", "deploy_net"),
}


def __getattr__(name):
    """The lazily imported names above, and the package's modules (``netlayers.solvers``)."""
    missing = AttributeError(f"module 'netlayers' has no attribute {name!r}")
    if name.startswith("_"):
        raise missing
    module_name, attribute = _LAZY.get(name, ("." + name, None))
    try:
        module = importlib.import_module(module_name, __name__)
    except ModuleNotFoundError as err:
        if err.name != __name__ + module_name:
            raise
        raise missing from None
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


__all__ = [
    "Blob",
    "Layer",
    "Net",
    "Solver",
    "Predictor",
    "predict",
    "deploy_net",
    "register_layer",
    "gradcheck",
    "ConfigError",
    "DataError",
    "NetlayersError",
    "TrainingError",
    "__version__",
]
