"""netlayers: a Caffe-style deep-learning framework in Python.

Public API: Blob, Layer, Net, register_layer, gradcheck (check_layer, check_net), the errors,
and (from the training modules) Solver.
"""
from . import gradcheck
from .blob import Blob
from .errors import ConfigError, DataError, NetlayersError, TrainingError
from .layer import Layer
from .net import Net
from .registry import register_layer
from .solvers import Solver

__version__ = "0.1.0"

__all__ = ["Blob", "Layer", "Net", "Solver", "register_layer", "gradcheck", "ConfigError", "DataError",
           "NetlayersError", "TrainingError", "__version__"]
