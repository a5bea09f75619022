"""A net as a Graphviz graph, drawn as Caffe's ``draw_net.py`` draws it.

Layers are boxes (name, type and key parameters), blobs are grey octagons (name and shape).
An edge runs from each bottom blob to its layer and from the layer to each top blob. An in-place
layer (top named like its bottom) is a green box with an edge from the blob and one back to the
same blob, as Caffe draws it. Split layers, which the net inserts where a blob feeds several
layers, are not drawn: the blob simply has several outgoing edges.

``net_dot(spec, phase, shapes=...)`` returns DOT text; ``write_graph(text, path)`` writes
``.dot`` as is and renders ``.svg``, ``.png`` or ``.pdf`` with Graphviz's ``dot`` program.
"""

import shutil
import subprocess
from pathlib import Path

from ..errors import NetlayersError
from ..layer import block_name
from ..netspec import Message

FORMATS = {".dot": None, ".gv": None, ".svg": "svg", ".png": "png", ".pdf": "pdf"}

# Caffe's draw.py colours.
LAYER_COLOR = "#6495ED"
NEURON_COLOR = "#90EE90"
BLOB_COLOR = "#E0E0E0"
TYPE_COLORS = {"Convolution": "#FF5050", "Deconvolution": "#FF5050", "Pooling": "#FF9900", "InnerProduct": "#CC33FF"}
#: Parameters shown even when they have their default value.
ALWAYS_SHOWN = ("num_output", "pool", "operation", "kernel_size")
MAX_PARAMS = 5


class GraphvizMissing(NetlayersError):
    """Graphviz's ``dot`` is not on the PATH; ``dot_path`` is where the DOT text was written."""

    def __init__(self, message, dot_path):
        super().__init__(message)
        self.dot_path = dot_path


def quote(text):
    """A DOT double-quoted string."""
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def html(text):
    """Text escaped for a Graphviz HTML-like label."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _short(value):
    if isinstance(value, list):
        if len(value) == 1:
            return _short(value[0])
        return "[" + ", ".join(_short(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def key_params(layer_spec):
    """``name: value`` strings for a layer's notable parameters: those of its own block that
    differ from the default (scalars and lists of scalars) plus :data:`ALWAYS_SHOWN`."""
    if layer_spec.type == "Python":
        p = layer_spec.blocks.get("python_param")
        return [f"{p.module}.{p.layer}"] if p is not None else []
    try:
        declared = layer_spec.cls.params
    except NetlayersError:
        return []
    values = layer_spec.blocks.get(block_name(layer_spec.type)) or {}
    shown = []
    for name, fld in declared.items():
        if isinstance(fld.kind, Message) or name not in values:
            continue
        value = values[name]
        if value is None or value == []:
            continue
        default = [] if fld.repeated else (None if fld.required else fld.default)
        if value != default or name in ALWAYS_SHOWN:
            shown.append(f"{name}: {_short(value)}")
    return shown[:MAX_PARAMS]


def shape_text(shape):
    if shape is None:
        return ""
    if len(shape) == 0:
        return "scalar"
    return "(" + ", ".join(str(d) for d in shape) + ")"


def is_in_place(layer_spec):
    return bool(set(layer_spec.tops) & set(layer_spec.bottoms))


def net_dot(spec, phase="TRAIN", *, shapes=None, rankdir="TB", title=None):
    """DOT text for the layers of ``spec`` in ``phase`` (no Split layers inserted).

    ``shapes``: blob name -> shape tuple (from a built net), shown under blob names when given.
    """
    layers = [layer for layer in spec.layers if layer.in_phase(phase)]
    title = title if title is not None else f"{spec.name or 'net'} ({phase})"
    lines = [
        f"digraph {quote(spec.name or 'net')} {{",
        f"  graph [rankdir={rankdir}, label={quote(title)}, labelloc=t, fontname=Helvetica, fontsize=14];",
        "  node [fontname=Helvetica, fontsize=11];",
        "  edge [fontname=Helvetica, fontsize=9];",
    ]
    blobs_seen = []
    for layer in layers:
        for name in list(layer.bottoms) + list(layer.tops):
            if name not in blobs_seen:
                blobs_seen.append(name)
    for name in blobs_seen:
        shape = shape_text(shapes.get(name)) if shapes and name in shapes else ""
        label = f"{name}\n{shape}" if shape else name
        lines.append(
            f"  {quote('blob:' + name)} [label={quote(label)}, shape=octagon, style=filled, "
            f"fillcolor={quote(BLOB_COLOR)}];"
        )
    for i, layer in enumerate(layers):
        label = "\n".join([layer.name, f"({layer.type})"] + key_params(layer))
        color = NEURON_COLOR if is_in_place(layer) else TYPE_COLORS.get(layer.type, LAYER_COLOR)
        node = f"layer:{i}:{layer.name}"
        lines.append(
            f'  {quote(node)} [label={quote(label)}, shape=box, style="filled,rounded", fillcolor={quote(color)}];'
        )
        for name in layer.bottoms:
            lines.append(f"  {quote('blob:' + name)} -> {quote(node)};")
        for name in layer.tops:
            lines.append(f"  {quote(node)} -> {quote('blob:' + name)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def graph_format(path):
    """The Graphviz output format for ``path`` (None for DOT text); unknown suffixes are errors."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise NetlayersError(
            f"-o {path}: cannot tell the format from '{suffix or 'no suffix'}'; use .svg, .png, .pdf or .dot"
        )
    return FORMATS[suffix]


def write_graph(text, path):
    """Write DOT ``text`` to ``path``: as is for .dot, rendered by Graphviz for .svg/.png/.pdf.

    Without Graphviz the DOT text is written next to ``path`` (same name, suffix .dot) and
    :class:`GraphvizMissing` is raised with a one-line message saying how to install it.
    """
    path = Path(path)
    fmt = graph_format(path)
    if path.parent and not path.parent.exists():
        raise NetlayersError(f"-o {path}: the folder {path.parent} does not exist")
    if fmt is None:
        path.write_text(text)
        return path
    dot = shutil.which("dot")
    if dot is None:
        dot_path = path.with_suffix(".dot")
        dot_path.write_text(text)
        raise GraphvizMissing(
            f"Graphviz's 'dot' program is not installed, so {path} was not made; wrote {dot_path} "
            f"instead (install Graphviz with: apt-get install graphviz, then run: "
            f"dot -T{fmt} {dot_path} -o {path})",
            dot_path,
        )
    done = subprocess.run([dot, f"-T{fmt}", "-o", str(path)], input=text, text=True, capture_output=True)
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or ["no message"])[0]
        raise NetlayersError(f"Graphviz's dot failed to make {path}: {first}")
    return path
