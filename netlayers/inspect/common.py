"""What the inspection tools share: load a config, build its net, give its inputs values.

Random inputs. An ``Input`` layer's blobs get standard normal values, except a blob consumed as
a *label*: such a blob gets random integers in [0, classes). A blob is a label when a layer
reads it at a label position, looked up by the consumer's type in :data:`LABEL_BOTTOMS`
(following automatic Split layers, so a label feeding both a loss and an Accuracy is found):

=========================  ======  ==================================================
consumer type              bottom  classes
=========================  ======  ==================================================
SoftmaxWithLoss            1       bottom 0's size along ``softmax_param.axis`` (1)
Accuracy                   1       bottom 0's size along ``accuracy_param.axis`` (1)
MultinomialLogisticLoss    1       bottom 0's size along axis 1
InfogainLoss               1       bottom 0's size along ``infogain_loss_param.axis``
HingeLoss                  1       bottom 0's size along axis 1
SigmoidCrossEntropyLoss    1       2 (targets are 0 or 1)
ContrastiveLoss            2       2 (similar or not)
=========================  ======  ==================================================

When several consumers disagree the smallest class count is used, so every consumer accepts
the labels. Targets of regression losses (EuclideanLoss) stay gaussian. A layer class of one's
own can take part by defining ``label_bottoms = {bottom_index: classes_or_None}`` (None: the
size of bottom 0 along axis 1).
"""

from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..netspec import load_net_spec
from ..netspec.schema import close_match_hint

PHASES = ("TRAIN", "TEST")


def _axis_size(block, field="axis"):
    def classes(layer, bottoms):
        params = layer.spec.blocks.get(block)
        axis = getattr(params, field, 1) if params is not None else 1
        axis = 1 if axis is None else axis
        shape = bottoms[0].shape
        return shape[axis if axis >= 0 else axis + len(shape)]

    return classes


def _fixed(count):
    return lambda layer, bottoms: count


#: type -> {label bottom index: function(layer, bottom blobs) -> number of classes}
LABEL_BOTTOMS = {
    "SoftmaxWithLoss": {1: _axis_size("softmax_param")},
    "Accuracy": {1: _axis_size("accuracy_param")},
    "MultinomialLogisticLoss": {1: _axis_size("")},
    "InfogainLoss": {1: _axis_size("infogain_loss_param")},
    "HingeLoss": {1: _axis_size("")},
    "SigmoidCrossEntropyLoss": {1: _fixed(2)},
    "ContrastiveLoss": {2: _fixed(2)},
}


def load_spec(config):
    """The checked NetSpec of a YAML file (a missing file is a one-line ConfigError)."""
    path = Path(config)
    if not path.is_file():
        raise ConfigError("no such config file" if not path.exists() else "not a file", file=str(path))
    return load_net_spec(path)


def resolve_seed(spec, seed):
    """The seed to use: the option, else the config's ``random_seed``, else 0 (inspection tools
    are reproducible by default)."""
    if seed is not None:
        return seed
    return spec.random_seed if spec.random_seed is not None and spec.random_seed >= 0 else 0


def check_phase(phase):
    phase = str(phase).upper()
    if phase not in PHASES:
        raise ConfigError(f"--phase must be TRAIN or TEST, got {phase!r}")
    return phase


def build_net(spec, phase="TRAIN", *, seed=None, data_root=None, dtype=None, force_backward=None):
    """A Net from a spec (or config path), with the phase checked and optional force_backward."""
    from ..net import Net

    spec = load_net_spec(spec)
    if force_backward is not None:
        spec = replace(spec, force_backward=force_backward)
    return Net(spec, check_phase(phase), dtype=dtype, seed=resolve_seed(spec, seed), data_root=data_root)


def is_auto_split(net, index):
    """Whether layer ``index`` is a Split the net inserted at a fan-out (not one the user wrote)."""
    return net.layers[index].spec.auto


def visible_layers(net):
    """Indices of the layers a user wrote (automatic Splits left out)."""
    return [i for i in range(len(net.layers)) if not is_auto_split(net, i)]


def split_origins(net):
    """Map each automatic Split top to the blob it copies (its bottom)."""
    origins = {}
    for i, layer in enumerate(net.layers):
        if is_auto_split(net, i):
            for top in layer.spec.tops:
                origins[top] = layer.spec.bottoms[0]
    return origins


def find_layer(net, name, option="--layer"):
    """The index of a visible layer by name; unknown names list the layer names."""
    visible = visible_layers(net)
    names = [net.layer_names[i] for i in visible]
    if name not in names:
        hint = close_match_hint(name, names)
        raise ConfigError(f"{option}: no layer named '{name}' in the {net.phase} net{hint}; layers: {', '.join(names)}")
    return visible[names.index(name)]


def label_classes(net, blob_name):
    """The number of classes if ``blob_name`` is read as a label (see the module doc), else None."""
    found = []
    pending = [blob_name]
    seen = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        for li, layer in enumerate(net.layers):
            for bi, bottom in enumerate(layer.spec.bottoms):
                if bottom != name:
                    continue
                if layer.type == "Split":
                    pending.extend(layer.spec.tops)
                    continue
                rules = getattr(layer, "label_bottoms", None)
                if isinstance(rules, dict):
                    if bi in rules:
                        classes = rules[bi]
                        found.append(classes if classes is not None else net.bottom_vecs[li][0].shape[1])
                    continue
                rule = LABEL_BOTTOMS.get(layer.type, {}).get(bi)
                if rule is not None:
                    try:
                        found.append(int(rule(layer, net.bottom_vecs[li])))
                    except (IndexError, TypeError):
                        pass
    found = [c for c in found if c > 0]
    return min(found) if found else None


def random_inputs(net, rng, given=None):
    """Values for every Input blob not in ``given``: labels (see module doc) or N(0, 1)."""
    arrays = {}
    given = given or {}
    for name in net.inputs:
        if name in given:
            continue
        shape = net.source_blobs[name].shape
        classes = label_classes(net, name)
        if classes is not None:
            arrays[name] = rng.integers(0, classes, size=shape).astype(net.dtype)
        else:
            arrays[name] = rng.standard_normal(shape).astype(net.dtype)
    return arrays


def source_tops(net):
    """Names of blobs made by layers without bottoms (Input, DummyData, Data, ...)."""
    return [name for layer in net.layers if not layer.spec.bottoms for name in layer.spec.tops]


def set_blob(net, name, value):
    blob = net.source_blobs.get(name) or net.blobs[name]
    value = np.asarray(value, dtype=net.dtype)
    if value.size == 1 and blob.count != 1:
        blob.data[...] = value.reshape(())
    elif value.size == blob.count:
        blob.data[...] = value.reshape(blob.shape)
    else:
        raise ConfigError(f"{value.size} values given for blob '{name}' of shape {blob.shape} ({blob.count} values)")


def run_layer(net, index, method):
    """``layer.forward`` or ``layer.backward`` of layer ``index`` (an exception inside a user's
    Python layer comes out as a one-line error naming the layer: see Layer.forward)."""
    layer = net.layers[index]
    if method == "forward":
        return layer.forward(net.bottom_vecs[index], net.top_vecs[index])
    return layer.backward(net.top_vecs[index], net.bottom_need_backward[index], net.bottom_vecs[index])


def forward(net, *, values=None, before=None):
    """Run every layer forward, in order. ``values`` (blob name -> array) are written into the
    tops of source layers right after those run (so they win over a filler's values);
    ``before(index)`` is called before each layer runs. Returns the total loss."""
    values = values or {}
    loss = 0.0
    for i, layer in enumerate(net.layers):
        if before is not None:
            before(i)
        loss += run_layer(net, i, "forward")
        if not layer.spec.bottoms:
            for name in layer.spec.tops:
                if name in values:
                    set_blob(net, name, values[name])
    net.loss = loss
    return loss


def backward(net):
    for i in reversed(range(len(net.layers))):
        if net.layer_need_backward[i]:
            run_layer(net, i, "backward")


def format_table(rows, align=None):
    """Rows of strings as aligned columns (first row is the header)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    align = align or "l" * len(widths)
    lines = []
    for row in rows:
        cells = [cell.rjust(w) if a == "r" else cell.ljust(w) for cell, w, a in zip(row, widths, align)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
