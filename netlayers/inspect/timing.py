"""Per-layer forward and backward times, like ``caffe time``.

``time_net(net, iterations, warmup)`` runs ``warmup`` untimed forward-backward passes (numba
compiles, caches fill), then ``iterations`` passes timing every layer's forward and backward
separately, then ``iterations`` whole passes timed as a whole (without the per-layer clock
calls): the net's own passes, its fused runs of layers included, where the given ``values``
set only the net's inputs (else layer by layer, as the rows). Every number is a median over the
iterations, in seconds. A layer's share is its forward plus backward median over the sum of
those of all layers.

The whole measurement holds the workspace lock and ``parallel.single_threaded_blas``, as a net's
pass does: a layer run alone enters both itself, switching BLAS to one thread and back and
pinning the caller around every layer, and the BLAS threads woken between layers slowed the
workers (cifar10_quick, batch 100: layers summing to 79 ms and a pass of 105 ms, where a
training step took 46 ms; held once, rows of 42 to 45 ms and a pass of 42 to 44). The rows time
each layer alone, so where the net's pass fuses a run of layers (BatchNorm + Scale + ReLU,
Eltwise + ReLU: ``layers.fused``) they add up to more than the pass (CIFAR ResNet-20: rows of
101 ms, its pass 88 ms).
"""

import statistics
import time
from dataclasses import dataclass, field

from ..parallel import single_threaded_blas, workspace_lock
from .common import backward, format_table, forward, run_layer, set_blob


@dataclass
class LayerTiming:
    """One layer's median times in seconds; ``backward`` is None when it runs no backward."""

    name: str
    type: str
    forward: float
    backward: float = None
    share: float = 0.0

    @property
    def total(self):
        return self.forward + (self.backward or 0.0)


@dataclass
class TimingReport:
    """What :func:`time_net` measured (seconds, medians over ``iterations``)."""

    net: str
    phase: str
    iterations: int
    warmup: int
    rows: list = field(default_factory=list)
    forward_pass: float = 0.0  # the whole forward pass, timed as a whole
    backward_pass: float = 0.0  # the whole backward pass, timed as a whole
    forward_backward: float = 0.0  # both, timed as a whole

    def __getitem__(self, name):
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(name)

    def table(self):
        def ms(seconds):
            return "-" if seconds is None else f"{seconds * 1e3:.3f}"

        rows = [("layer", "type", "forward ms", "backward ms", "share")]
        for r in self.rows:
            rows.append((r.name, r.type, ms(r.forward), ms(r.backward), f"{100 * r.share:.1f}%"))
        layer_fwd = sum(r.forward for r in self.rows)
        layer_bwd = sum(r.backward or 0.0 for r in self.rows)
        rows.append(("sum of layers", "", ms(layer_fwd), ms(layer_bwd), "100.0%"))
        lines = [
            f"net '{self.net}' ({self.phase}): median of {self.iterations} iterations after {self.warmup} warm-up",
            format_table(rows, "llrrr"),
            f"forward pass:          {ms(self.forward_pass)} ms",
            f"backward pass:         {ms(self.backward_pass)} ms",
            f"forward-backward pass: {ms(self.forward_backward)} ms",
        ]
        return "\n".join(lines)

    def __str__(self):
        return self.table()


def time_net(net, iterations=50, warmup=5, *, values=None, layers=None):
    """Time ``net`` (already built, inputs set) as described in the module docstring.

    ``values``: blob values re-applied after the source layers on every pass (see
    :func:`netlayers.inspect.common.forward`). ``layers``: indices of the layers to report
    (default all; the passes always run every layer). Returns a :class:`TimingReport`.
    """
    if iterations < 1:
        raise ValueError("iterations must be at least 1")
    count = len(net.layers)
    with workspace_lock, single_threaded_blas:  # one pass's hold for the whole measurement
        forward_times, backward_times, passes = _measure(net, iterations, warmup, values, count)
    passes_fwd, passes_bwd, passes = passes
    report = TimingReport(
        net.name,
        net.phase,
        iterations,
        max(0, warmup),
        forward_pass=statistics.median(passes_fwd),
        backward_pass=statistics.median(passes_bwd),
        forward_backward=statistics.median(passes),
    )
    for i in range(count) if layers is None else layers:
        layer = net.layers[i]
        report.rows.append(
            LayerTiming(
                layer.name,
                layer.type,
                statistics.median(forward_times[i]),
                statistics.median(backward_times[i]) if backward_times[i] else None,
            )
        )
    total = sum(r.total for r in report.rows)
    for r in report.rows:
        r.share = r.total / total if total > 0 else 0.0
    return report


def _measure(net, iterations, warmup, values, count):
    """The per-layer times (forward, backward: a list a layer) and the whole passes' times
    (forward, backward, both: lists), as :func:`time_net` describes."""
    clock = time.perf_counter
    pass_forward, pass_backward = _pass_runs(net, values)
    for _ in range(max(0, warmup)):
        forward(net, values=values)
        backward(net)
        net.clear_param_diffs()
        pass_forward()
        pass_backward()
        net.clear_param_diffs()
    forward_times = [[] for _ in range(count)]
    backward_times = [[] for _ in range(count)]
    for _ in range(iterations):
        for i, layer in enumerate(net.layers):
            start = clock()
            run_layer(net, i, "forward")
            forward_times[i].append(clock() - start)
            if values and not layer.spec.bottoms:
                for name in layer.spec.tops:
                    if name in values:
                        set_blob(net, name, values[name])
        for i in reversed(range(count)):
            if net.layer_need_backward[i]:
                start = clock()
                run_layer(net, i, "backward")
                backward_times[i].append(clock() - start)
        net.clear_param_diffs()
    passes_fwd, passes_bwd, passes = [], [], []
    for _ in range(iterations):
        start = clock()
        pass_forward()
        middle = clock()
        pass_backward()
        end = clock()
        passes_fwd.append(middle - start)
        passes_bwd.append(end - middle)
        passes.append(end - start)
        net.clear_param_diffs()
    return forward_times, backward_times, (passes_fwd, passes_bwd, passes)


def _pass_runs(net, values):
    """(forward, backward) of a whole pass: the net's own (``Net.forward_range`` and
    ``Net.backward``, fused runs included) when ``values`` sets only the net's inputs, which are
    then set here; else layer by layer, ``values`` set again after the source layers. A net that
    no gradient reaches (a deploy net: no layer needs a backward) runs no backward."""
    values = values or {}
    if not set(values) <= set(net.inputs):
        return (lambda: forward(net, values=values)), (lambda: backward(net))
    for name, value in values.items():
        set_blob(net, name, value)
    last = len(net.layers) - 1
    return (lambda: net.forward_range(0, last)), (net.backward if any(net.layer_need_backward) else lambda: None)
