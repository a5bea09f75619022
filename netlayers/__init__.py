"""netlayers: a Caffe-style deep-learning framework in Python.

Public API: Blob, Layer, Net, register_layer, gradcheck (check_layer, check_net), the errors,
(from the training modules) Solver, and for trained models Predictor, predict and deploy_net.
"""

from typing import TYPE_CHECKING

from .errors import ConfigError, DataError, NetlayersError, TrainingError
from .lazy import lazy_getattr
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


__getattr__ = lazy_getattr(__name__, _LAZY)


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
