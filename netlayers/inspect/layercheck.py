"""Gradient-check every layer of a net on the values it really sees.

``check_net_layers(net)`` runs the (float64) net forward once, keeping a copy of each checked
layer's bottoms just before that layer runs (so an in-place layer is checked on its input, not
on its output). Each layer is then checked by :func:`netlayers.gradcheck.check_layer` on a
*fresh* instance built from the same spec, set up on those copies, with the net layer's param
values copied in and its ``param_propagate_down`` (lr_mult != 0) kept: the net itself, its
param diffs, its generator and any running statistics are left alone.

Layers without a backward (data layers, Accuracy, ArgMax) are reported as "no gradient";
automatic Split layers are left out. An exception raised while checking a layer (a Python
layer whose Backward_cpu writes the wrong shape, say) is reported as that layer's failure.
"""

from dataclasses import dataclass

import numpy as np

from ..blob import Blob
from ..gradcheck import check_layer
from .common import forward, split_origins, visible_layers

NO_GRADIENT = "no gradient"
NOTHING = "nothing to check"
CHECKED = "checked"
ERROR = "error"


@dataclass
class LayerCheck:
    """The outcome for one layer: ``status`` is checked, no gradient, nothing to check or error."""

    name: str
    type: str
    status: str
    report: object = None  # a GradcheckReport when status is "checked"
    error: str = None

    @property
    def failed(self):
        return self.status == ERROR or (self.report is not None and not self.report.passed)

    @property
    def worst_relative(self):
        return self.report.worst_relative if self.report is not None else None


def _fresh_layer(net, index, bottoms, seed):
    """A new instance of layer ``index`` set up on copies of ``bottoms`` with the net's params."""
    layer = net.layers[index]
    spec = layer.spec
    fresh = spec.cls(spec, phase=net.phase, dtype=np.float64, rng=np.random.default_rng(seed))
    fresh.net = net
    bottom = []
    for name, array in zip(spec.bottoms, bottoms):
        blob = Blob(array.shape, np.float64, name=name)
        blob.data[...] = array
        bottom.append(blob)
    top = [Blob((), np.float64, name=name) for name in spec.tops]
    fresh.setup(bottom, top)
    if len(fresh.blobs) != len(layer.blobs):
        raise ValueError(f"a fresh instance has {len(fresh.blobs)} param blobs, the net's layer {len(layer.blobs)}")
    for mine, theirs in zip(fresh.blobs, layer.blobs):
        mine.data[...] = theirs.data
    fresh.param_propagate_down = list(layer.param_propagate_down)
    return fresh, bottom, top


def check_net_layers(
    net, *, layers=None, values=None, seed=0, threshold=1e-5, max_elements=100, step=1e-6, kink_tolerance=1e-3
):
    """Check the layers at indices ``layers`` (default: every layer a user wrote) of ``net``.

    ``values``: blob values for source-layer tops (e.g. random inputs), applied during the
    forward pass. Returns a list of :class:`LayerCheck`, in net order.
    """
    if net.dtype != np.float64:
        raise ValueError("build the net in float64 to check gradients (Net(..., dtype='float64'))")
    targets = visible_layers(net) if layers is None else list(layers)
    wanted = set(targets)
    snapshots = {}

    def keep_bottoms(index):
        if index in wanted:
            snapshots[index] = [blob.data.copy() for blob in net.bottom_vecs[index]]

    forward(net, values=values, before=keep_bottoms)
    origins = split_origins(net)
    results = []
    for index in targets:
        layer = net.layers[index]
        if not layer.has_backward:
            results.append(LayerCheck(layer.name, layer.type, NO_GRADIENT))
            continue
        try:
            fresh, bottom, top = _fresh_layer(net, index, snapshots[index], seed)
            report = check_layer(
                fresh,
                bottom,
                tops=top,
                seed=seed,
                step=step,
                threshold=threshold,
                kink_tolerance=kink_tolerance,
                max_elements=max_elements,
            )
        except Exception as err:  # a broken user layer: its failure, not a crash of the tool
            results.append(LayerCheck(layer.name, layer.type, ERROR, error=f"{type(err).__name__}: {err}"))
            continue
        for blob in report.blobs:
            if blob.name.startswith("bottom["):
                i = int(blob.name[len("bottom[") : -1])
                name = layer.spec.bottoms[i]
                blob.name = f"bottom[{i}] {origins.get(name, name)}"
        status = CHECKED if report.blobs else NOTHING
        results.append(LayerCheck(layer.name, layer.type, status, report=report if report.blobs else None))
    return results


def summary(results, threshold):
    """One line: how many layers were checked, passed, failed, and which have no gradient."""
    checked = [r for r in results if r.status in (CHECKED, ERROR)]
    failed = [r for r in results if r.failed]
    none = [r.name for r in results if r.status in (NO_GRADIENT, NOTHING)]
    text = f"gradcheck: {len(checked)} layer(s) checked, {len(checked) - len(failed)} passed"
    if failed:
        worst = ", ".join(f"'{r.name}' ({'error' if r.status == ERROR else f'{r.worst_relative:.2e}'})" for r in failed)
        text += f", {len(failed)} FAILED (threshold {threshold:g}): {worst}"
    if none:
        text += f"; without gradient: {', '.join(none)}"
    return text
