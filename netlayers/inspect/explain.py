"""Every value and every gradient of one forward and backward pass, as in the CS231n slides.

``explain_spec(spec, phase)`` prepares a net for explaining: the layers of ``phase`` only,
``force_backward`` on (so inputs get gradients too), and in-place layers *unfolded*: a top
named like its bottom gets its own blob, ``<blob>@<layer>`` (``ip1@relu1``), so the values
before and after an in-place ReLU can both be shown. ``explain_net(net, values)`` runs one
forward and one backward pass and returns an :class:`Explanation` with one row per blob and
per param blob (value = ``data``, gradient = ``diff`` = d loss / d value), printable as a
table (``.table()``) and drawable as a graph (``.dot()``): layers are nodes, blobs are edges,
each edge labelled with its value (green, above) and its gradient (red, below). Where a blob
feeds several layers each edge shows the gradient of its own branch; the blob's gradient in the
table is their sum.

Blobs with up to ``max_elements`` values are printed in full; larger ones as statistics
(mean, std, min, max). A gradient is "-" where none flows (labels, blobs read only by layers
without backward, params with lr_mult 0).
"""

import re
from dataclasses import dataclass, field, replace

import numpy as np

from .common import backward, format_table, forward, split_origins, visible_layers
from .graph import html, key_params, quote, shape_text

GRAPH_MAX_ELEMENTS = 4
ELTWISE_SYMBOLS = {"SUM": ("+", "add"), "PROD": ("\u00d7", "multiply"), "MAX": ("max", "max")}


def unfold_in_place(layers):
    """The layers with every in-place top renamed ``<blob>@<layer>`` and later bottoms following."""
    alias = {}
    out = []
    for layer in layers:
        bottoms = [alias.get(name, name) for name in layer.bottoms]
        tops = []
        for name in layer.tops:
            if name in layer.bottoms:
                alias[name] = f"{name}@{layer.name}"
                tops.append(alias[name])
            else:
                tops.append(name)
        out.append(
            replace(layer, bottoms=bottoms, tops=tops) if (bottoms != layer.bottoms or tops != layer.tops) else layer
        )
    return out


def explain_spec(spec, phase):
    """The spec to build for explaining (see the module docstring)."""
    layers = unfold_in_place([layer for layer in spec.layers if layer.in_phase(phase)])
    return replace(spec, layers=layers, force_backward=True)


@dataclass
class BlobRow:
    """One blob (or param blob) after the pass: copies of its data and diff."""

    name: str
    role: str  # input, param, output or "" (in between)
    value: np.ndarray
    gradient: np.ndarray = None  # None where no gradient flows

    @property
    def shape(self):
        return self.value.shape


@dataclass
class Edge:
    """A blob flowing from a node to a layer (or out of the net), with its branch's gradient."""

    source: str  # node id
    target: str
    blob: str
    value: np.ndarray
    gradient: np.ndarray = None
    param: bool = False


@dataclass
class Explanation:
    net_name: str
    phase: str
    loss: float
    has_loss: bool
    rows: list = field(default_factory=list)
    nodes: dict = field(default_factory=dict)  # node id -> (label, kind)
    edges: list = field(default_factory=list)

    def __getitem__(self, name):
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(name)

    def table(self, max_elements=8):
        rows = [("blob", "role", "shape", "value", "gradient")]
        for r in self.rows:
            rows.append(
                (
                    r.name,
                    r.role,
                    shape_text(r.shape),
                    format_values(r.value, max_elements),
                    "-" if r.gradient is None else format_values(r.gradient, max_elements),
                )
            )
        head = f"net '{self.net_name}' ({self.phase}): one forward and backward pass"
        head += (
            f", loss {self.loss:.6g}"
            if self.has_loss
            else " (no loss: no layer has a loss weight, so no gradients flow)"
        )
        notes = (
            "value: the blob's data after forward; gradient: its diff after backward, "
            f"d loss / d value; blobs of more than {max_elements} values as statistics"
        )
        return "\n".join([head, format_table(rows), notes])

    def __str__(self):
        return self.table()

    def dot(self, max_elements=GRAPH_MAX_ELEMENTS, rankdir="LR"):
        """Graphviz DOT text: layers as nodes, blobs as edges labelled value / gradient."""
        limit = min(max_elements, GRAPH_MAX_ELEMENTS)

        def short(array):
            return format_values(array, limit, digits=4, short=True)

        lines = [
            f"digraph {quote(self.net_name or 'net')} {{",
            f"  graph [rankdir={rankdir}, nodesep=0.5, ranksep=1.1, fontname=Helvetica, labelloc=t, "
            f"label=<{html(self.net_name or 'net')} ({self.phase}): "
            '<font color="darkgreen">values</font> above, '
            '<font color="red">gradients</font> below>];',
            "  node [fontname=Helvetica, fontsize=12];",
            "  edge [fontname=Helvetica, fontsize=11, arrowsize=0.7];",
        ]
        for node, (label, kind) in self.nodes.items():
            if kind == "layer-eltwise":
                attrs = 'shape=circle, style=filled, fillcolor="#f2f2f2", width=0.6, fixedsize=false'
            elif kind == "layer":
                attrs = 'shape=box, style="filled,rounded", fillcolor="#f2f2f2"'
            elif kind == "param":
                attrs = "shape=plaintext, fontcolor=gray30"
            else:
                attrs = "shape=plaintext"
            lines.append(f"  {quote(node)} [label=<{label}>, {attrs}];")
        for edge in self.edges:
            name = edge.blob if edge.value.size <= limit else f"{edge.blob} {shape_text(edge.value.shape)}"
            gradient = "-" if edge.gradient is None else short(edge.gradient)
            parts = [
                f'<font point-size="9" color="gray40">{html(name)}</font>',
                f'<font color="darkgreen">{html(short(edge.value))}</font>',
                f'<font color="red">{html(gradient)}</font>',
            ]
            style = ", style=dashed" if edge.param else ""
            lines.append(f"  {quote(edge.source)} -> {quote(edge.target)} [label=<{'<br/>'.join(parts)}>{style}];")
        lines.append("}")
        return "\n".join(lines) + "\n"


def _number(value, digits=6):
    text = f"{float(value):.{digits}g}"
    return "0" if text == "-0" else text


def format_values(array, max_elements=8, *, digits=6, short=False):
    """All values when there are at most ``max_elements``, else mean, std, min and max
    (``short``: only mean and std, for graph labels)."""
    array = np.asarray(array)
    if array.size == 0:
        return "(empty)"

    def number(value):
        return _number(value, digits)

    if array.size <= max_elements:
        if array.size == 1:
            return number(array.reshape(()))
        text = np.array2string(array, separator=", ", max_line_width=10**9, threshold=10**9, formatter={"all": number})
        return re.sub(r"\s*\n\s*", " ", text)
    if short:
        return f"mean {number(array.mean())}, std {number(array.std())}"
    return f"mean {number(array.mean())} std {number(array.std())} min {number(array.min())} max {number(array.max())}"


def _layer_label(layer):
    """Eltwise as a circle with its operator (+, \u00d7, max), as in the lecture; other layers
    as their type, name and notable parameters."""
    name = f'<font point-size="9">{html(layer.name)}</font>'
    if layer.type == "Eltwise":
        p = layer.spec.blocks.get("eltwise_param")
        op = getattr(p, "operation", "SUM") if p is not None else "SUM"
        coeffs = getattr(p, "coeff", None) if p is not None else None
        symbol = ELTWISE_SYMBOLS.get(op, (op,))[0]
        if coeffs and op == "SUM" and any(c != 1 for c in coeffs):
            return (
                f'<b>{html(symbol)}</b><br/>{name}<br/><font point-size="8" color="gray30">'
                f"coeff: {html(coeffs)}</font>",
                "layer",
            )
        return f"<b>{html(symbol)}</b><br/>{name}", "layer-eltwise"
    params = "".join(f'<br/><font point-size="8" color="gray30">{html(text)}</font>' for text in key_params(layer.spec))
    return f"<b>{html(layer.type)}</b><br/>{name}{params}", "layer"


def explain_net(net, values=None):
    """Run one forward (``values`` written into source-layer tops) and one backward pass of
    ``net`` (built from :func:`explain_spec`) and collect every value and gradient."""
    forward(net, values=values)
    net.clear_param_diffs()
    backward(net)
    visible = visible_layers(net)
    origins = split_origins(net)
    gets_gradient = set()
    for li, layer in enumerate(net.layers):
        for name, need in zip(layer.spec.bottoms, net.bottom_need_backward[li]):
            if need:
                gets_gradient.add(name)
        for name, weight in zip(layer.spec.tops, layer.loss_weights):
            if weight:
                gets_gradient.add(name)
    gets_gradient |= {origins[name] for name in list(gets_gradient) if name in origins}
    consumed = {origins.get(name, name) for li in visible for name in net.layers[li].spec.bottoms}
    has_loss = any(w for layer in net.layers for w in layer.loss_weights)
    if not has_loss:  # nothing was backpropagated: no gradient is meaningful
        gets_gradient = set()
    result = Explanation(net.name, net.phase, float(net.loss), has_loss)

    def copy(name):
        blob = net.blobs[name]
        return blob.data.copy(), (blob.diff.copy() if name in gets_gradient else None)

    producer = {}
    param_names = {id(p.blob): p.name for p in net.learnable_params}
    for li in visible:
        layer = net.layers[li]
        source = not layer.spec.bottoms
        if not source:
            node = f"layer:{li}"
            result.nodes[node] = _layer_label(layer)
            for pi, blob in enumerate(layer.blobs):
                name = param_names.get(id(blob), f"{layer.name}[{pi}]")
                grad = (
                    blob.diff.copy()
                    if has_loss and net.layer_need_backward[li] and layer.param_propagate_down[pi]
                    else None
                )
                if name not in [r.name for r in result.rows]:
                    result.rows.append(BlobRow(name, "param", blob.data.copy(), grad))
                pnode = f"param:{li}:{pi}"
                result.nodes[pnode] = (html(name), "param")
                result.edges.append(Edge(pnode, node, name, blob.data.copy(), grad, param=True))
            for bi, name in enumerate(layer.spec.bottoms):
                origin = origins.get(name, name)
                grad = (
                    net.blobs[name].diff.copy() if name in gets_gradient and net.bottom_need_backward[li][bi] else None
                )
                result.edges.append(
                    Edge(producer.get(origin, f"input:{origin}"), node, origin, net.blobs[origin].data.copy(), grad)
                )
        for name in layer.spec.tops:
            if source:
                producer[name] = f"input:{name}"
                result.nodes[producer[name]] = (f"<b>{html(name)}</b>", "input")
            else:
                producer[name] = f"layer:{li}"
            role = "input" if source else ("output" if name not in consumed else "")
            value, grad = copy(name)
            result.rows.append(BlobRow(name, role, value, grad))
            if not source and name not in consumed:
                sink = f"output:{name}"
                result.nodes[sink] = (f"<b>{html(name)}</b>", "output")
                result.edges.append(Edge(producer[name], sink, name, value, grad))
    return result
