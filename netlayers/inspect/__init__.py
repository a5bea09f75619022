"""Seeing inside a net: timing, per-layer gradient checks, graphs, explained passes, curves.

The library side of the ``time``, ``gradcheck``, ``draw``, ``explain`` and ``plot`` commands;
each function takes a built Net (or a spec, or a run folder) and returns data that prints
itself, so scripts can use the same numbers the commands print.
"""

from .common import build_net, label_classes, load_spec, random_inputs
from .explain import Explanation, explain_net, explain_spec
from .graph import GraphvizMissing, net_dot, write_graph
from .layercheck import LayerCheck, check_net_layers
from .plotting import load_metrics, plot_metrics
from .timing import LayerTiming, TimingReport, time_net

__all__ = [
    "build_net",
    "label_classes",
    "load_spec",
    "random_inputs",
    "Explanation",
    "explain_net",
    "explain_spec",
    "GraphvizMissing",
    "net_dot",
    "write_graph",
    "LayerCheck",
    "check_net_layers",
    "load_metrics",
    "plot_metrics",
    "LayerTiming",
    "TimingReport",
    "time_net",
]
