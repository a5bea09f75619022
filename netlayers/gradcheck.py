"""Gradient checking: every analytic gradient against central differences, in float64.

For a layer with tops t_k, the checked objective is E = sum_k sum(R_k * t_k) with fixed random
weights R_k, so dE/dt_k = R_k is fed to Backward_cpu and the analytic dE/dx (for every bottom
that takes a gradient, and every param blob) is compared with

    numeric = (E(x + h) - E(x - h)) / (2 h)

element by element. As in Caffe's GradientChecker an element passes when

    |analytic - numeric| <= threshold * max(|analytic|, |numeric|, 1)

and the report gives, per blob, the worst ``relative error`` = |a - n| / max(|a|, |n|, 1).

Kinks (ReLU at 0, the max of pooling or Eltwise MAX, |x| at 0): where E is not differentiable
the numerical derivative means nothing. An element is skipped, and counted as skipped, when its
two one-sided differences (E(x+h) - E(x)) / h and (E(x) - E(x-h)) / h disagree by more than
``kink_tolerance`` (relative to their size). A smooth function's one-sided differences differ by
about h * E'', far below that; at a kink they differ by the jump in slope.

Random layers (Dropout) are checked with their generator reset before every evaluation, so each
forward draws the same mask.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .blob import Blob
from .layer import Layer
from .netspec import check_layer as check_layer_spec
from .netspec import load_net_spec
from .netspec.schema import Where


@dataclass
class BlobCheck:
    """The result for one checked blob."""

    name: str
    checked: int = 0
    skipped: int = 0
    worst_relative: float = 0.0
    worst_absolute: float = 0.0
    worst_index: tuple | None = None
    threshold: float = 1e-5

    @property
    def passed(self):
        return self.worst_relative <= self.threshold


@dataclass
class GradcheckReport:
    """Per-blob results of one gradient check, printable as a table."""

    subject: str
    blobs: list = field(default_factory=list)
    threshold: float = 1e-5

    @property
    def passed(self):
        return all(blob.passed for blob in self.blobs)

    @property
    def worst_relative(self):
        return max((b.worst_relative for b in self.blobs), default=0.0)

    def __getitem__(self, name):
        for blob in self.blobs:
            if blob.name == name:
                return blob
        raise KeyError(name)

    def table(self):
        rows = [("blob", "checked", "kinks", "worst abs err", "worst rel err", "ok")]
        for b in self.blobs:
            rows.append(
                (
                    b.name,
                    str(b.checked),
                    str(b.skipped),
                    f"{b.worst_absolute:.3e}",
                    f"{b.worst_relative:.3e}",
                    "yes" if b.passed else "NO",
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
        return "\n".join([f"gradient check of {self.subject} (threshold {self.threshold:g})"] + lines)

    def __str__(self):
        return self.table()


def _compare(name, analytic, evaluate, array, *, step, threshold, kink_tolerance, indices):
    """Perturb ``array`` (in place, restored after) at ``indices``; compare with ``analytic``."""
    result = BlobCheck(name, threshold=threshold)
    flat = array.reshape(-1)
    grad = analytic.reshape(-1)
    base = evaluate()
    for index in indices:
        original = flat[index]
        flat[index] = original + step
        plus = evaluate()
        flat[index] = original - step
        minus = evaluate()
        flat[index] = original
        right, left = (plus - base) / step, (base - minus) / step
        numeric = (plus - minus) / (2 * step)
        if abs(right - left) > kink_tolerance * max(abs(right), abs(left), 1.0):
            result.skipped += 1
            continue
        absolute = abs(grad[index] - numeric)
        relative = absolute / max(abs(grad[index]), abs(numeric), 1.0)
        result.checked += 1
        if relative >= result.worst_relative:
            result.worst_index = np.unravel_index(index, array.shape)
        result.worst_relative = max(result.worst_relative, relative)
        result.worst_absolute = max(result.worst_absolute, absolute)
    return result


def _indices(size, max_elements, rng):
    if max_elements is None or size <= max_elements:
        return range(size)
    return np.sort(rng.choice(size, max_elements, replace=False))


def build_layer(
    layer: dict, bottom_shapes: Sequence[Sequence[int]], *, phase: str = "TRAIN", seed: int = 0
) -> tuple[Layer, list[Blob], list[Blob]]:
    """A float64 layer from a layer dict (as in YAML), set up on bottoms of the given shapes."""
    spec = check_layer_spec(layer, Where())
    rng = np.random.default_rng(seed)
    instance = spec.cls(spec, phase=phase, dtype=np.float64, rng=rng)
    bottom = [Blob(shape, np.float64, name=f"bottom[{i}]") for i, shape in enumerate(bottom_shapes)]
    top = [Blob((), np.float64, name=f"top[{i}]") for i in range(len(spec.tops))]
    return instance, bottom, top


def check_layer(
    layer: dict | Layer,
    bottoms: Sequence[Any],
    *,
    phase: str = "TRAIN",
    seed: int = 0,
    step: float = 1e-6,
    threshold: float = 1e-5,
    kink_tolerance: float = 1e-3,
    max_elements: int | None = 400,
    check_bottoms: Sequence[int] | None = None,
    tops: Sequence[Blob] | None = None,
) -> "GradcheckReport":
    """Check a layer's gradients.

    ``layer``: a layer dict as written in YAML (``{type: ReLU, ...}``; name, bottom and top may
    be left out) or an already set-up Layer (then ``bottoms``/``tops`` are its Blobs).
    ``bottoms``: arrays for the bottoms (or Blobs). Returns a :class:`GradcheckReport`.
    ``max_elements`` bounds how many elements of each blob are perturbed (a random subset).
    """
    rng = np.random.default_rng(seed + 1)
    if isinstance(layer, dict):
        layer = dict(layer)
        layer.setdefault("name", layer.get("type", "layer"))
        layer.setdefault("bottom", [f"b{i}" for i in range(len(bottoms))])
        layer.setdefault("top", ["t0"])
        arrays = [np.asarray(b, dtype=np.float64) for b in bottoms]
        instance, bottom, top = build_layer(layer, [a.shape for a in arrays], phase=phase, seed=seed)
        for blob, array in zip(bottom, arrays):
            blob.data[...] = array
        instance.setup(bottom, top)
    else:
        instance, bottom, top = layer, list(bottoms), list(tops or [])
    generator_state = instance.rng.bit_generator.state

    def run_forward():
        instance.rng.bit_generator.state = generator_state
        instance.Reshape(bottom, top)
        instance.Forward_cpu(bottom, top)

    run_forward()
    weights = [rng.standard_normal(t.shape) for t in top]

    def objective():
        run_forward()
        return float(sum(np.sum(w * t.data) for w, t in zip(weights, top)))

    if check_bottoms is None:
        check_bottoms = [i for i in range(len(bottom)) if instance.allow_force_backward(i)]
    learnable = [i for i, p in enumerate(instance.param_propagate_down) if p] if instance.has_backward else []
    run_forward()
    for w, t in zip(weights, top):
        t.diff[...] = w
    for blob in instance.blobs:
        blob.diff[...] = 0
    propagate = [i in check_bottoms for i in range(len(bottom))]
    if any(propagate) or learnable:
        instance.Backward_cpu(top, propagate, bottom)
    analytic = {("bottom", i): bottom[i].diff.copy() for i in check_bottoms}
    analytic.update({("param", i): instance.blobs[i].diff.copy() for i in learnable})
    report = GradcheckReport(f"{instance.type} layer '{instance.name}'", threshold=threshold)
    for (kind, i), grad in analytic.items():
        blob = bottom[i] if kind == "bottom" else instance.blobs[i]
        name = f"{kind}[{i}]" if kind == "bottom" else f"param[{i}]"
        report.blobs.append(
            _compare(
                name,
                grad,
                objective,
                blob.data,
                step=step,
                threshold=threshold,
                kink_tolerance=kink_tolerance,
                indices=_indices(blob.count, max_elements, rng),
            )
        )
    return report


def check_net(
    spec: Any,
    *,
    phase: str = "TRAIN",
    seed: int = 0,
    step: float = 1e-6,
    threshold: float = 1e-5,
    kink_tolerance: float = 1e-3,
    max_elements: int | None = 200,
    inputs: dict[str, Any] | None = None,
) -> GradcheckReport:
    """Check a whole net in float64: the gradient of its total loss with respect to every
    learnable param and every blob a source layer produces (Input, DummyData, data layers)
    that takes a gradient, against central differences. Source layers run once; the rest run
    for each evaluation.
    ``inputs``: optional arrays for input blobs by name; the others are drawn: class indices
    for blobs a loss or Accuracy reads as labels, N(0, 1) values otherwise (as the
    ``netlayers gradcheck`` command does)."""
    from dataclasses import replace

    from .inspect.common import random_inputs
    from .net import Net

    spec = load_net_spec(spec)
    net = Net(replace(spec, force_backward=True), phase, dtype=np.float64, seed=seed)
    rng = np.random.default_rng(seed + 1)
    inputs = dict(inputs or {})
    inputs.update(random_inputs(net, rng, given=inputs))
    net.forward(**inputs)
    # A layer without bottoms but with params (Parameter: its top is its param) is computed
    # like the others, so that its top follows the perturbed param.
    computing = [i for i, layer in enumerate(net.layers) if layer.spec.bottoms or layer.blobs]
    sources = [name for layer in net.layers if not (layer.spec.bottoms or layer.blobs) for name in layer.spec.tops]
    state = net.rng.bit_generator.state
    # The source layers ran once; their values are kept apart and copied in before every
    # evaluation (perturbations go to these copies), so no layer that writes a source blob in
    # place can make the numeric side see other inputs than the analytic side did.
    pristine = {name: net.source_blobs[name].data.copy() for name in sources}

    def objective():
        net.rng.bit_generator.state = state
        for name, values in pristine.items():
            net.source_blobs[name].data[...] = values
        return sum(net.layers[i].forward(net.bottom_vecs[i], net.top_vecs[i]) for i in computing)

    objective()
    net.clear_param_diffs()
    net.backward()
    report = GradcheckReport(f"net '{net.name}' ({phase})", threshold=threshold)
    checked = []
    differentiable = {
        name
        for i, layer in enumerate(net.layers)
        for name, need in zip(layer.spec.bottoms, net.bottom_need_backward[i])
        if need
    }
    for name in sources:
        if name in differentiable:
            checked.append((f"input {name}", net.source_blobs[name], pristine[name]))
    for param in net.learnable_params:
        if param.lr_mult != 0:
            checked.append((f"param {param.name}", param.blob, param.blob.data))
    grads = [(name, blob, blob.diff.copy(), values) for name, blob, values in checked]
    for name, blob, grad, values in grads:
        report.blobs.append(
            _compare(
                name,
                grad,
                objective,
                values,
                step=step,
                threshold=threshold,
                kink_tolerance=kink_tolerance,
                indices=_indices(blob.count, max_elements, rng),
            )
        )
    return report
