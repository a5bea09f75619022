"""``debug_info: true``: Caffe's per-layer figures for hunting NaNs and vanishing gradients.

On every displayed iteration the solver runs the TRAIN net layer by layer and logs, as Caffe's
Net::ForwardDebugInfo, BackwardDebugInfo and the update's figures do, the mean absolute value
(sum of |x| / count) of what each layer has just written::

    [Forward] Layer ip1, top blob ip1 data: 0.0123
    [Forward] Layer ip1, param blob 0 data: 0.0412
    [Backward] Layer ip1, bottom blob x diff: 0.00021
    [Backward] Layer ip1, param blob 0 diff: 0.0031
    [Backward] All net params (data, diff): L1 norm = (12.3, 0.45); L2 norm = (1.2, 0.031)
    [Update] Layer ip1, param 0 data: 0.0412; diff: 3.1e-05

Figures are taken right after the layer ran, so a layer computed in place shows its own
result, not a later layer's. ``[Update]`` shows each learnable param's weights before the update
and the step taken (old minus new weights), once per param (a param shared by name appears
under the layer that owns it). Only the TRAIN net is followed (Caffe also logs every TEST
batch's forward).
"""

import math

import numpy as np

from .reporting import fmt


def mean_abs(array):
    """sum(|x|) / count in float64 (nan for an empty array, as Caffe's 0/0)."""
    return float(np.mean(np.abs(array), dtype=np.float64)) if array.size else float("nan")


def forward_backward(net, log):
    """One forward and one backward pass of ``net``, as ``net.forward_backward()``, calling
    ``log(line)`` with each layer's figures; returns the loss."""
    loss = 0.0
    for index in range(len(net.layers)):
        loss += net.forward_range(index, index)
        for line in forward_lines(net, index):
            log(line)
    net.loss = loss
    for index in reversed(range(len(net.layers))):
        if net.backward_layer(index):
            for line in backward_lines(net, index):
                log(line)
    log(all_params_line(net))
    return loss


def forward_lines(net, index):
    """Caffe's [Forward] lines for layer ``index``: each top's data, then each param's."""
    layer = net.layers[index]
    for name, blob in zip(layer.spec.tops, net.top_vecs[index]):
        yield f"    [Forward] Layer {layer.name}, top blob {name} data: {fmt(mean_abs(blob.data))}"
    for i, blob in enumerate(layer.blobs):
        yield f"    [Forward] Layer {layer.name}, param blob {i} data: {fmt(mean_abs(blob.data))}"


def backward_lines(net, index):
    """Caffe's [Backward] lines for layer ``index``: the diff of each bottom it propagated to,
    then of each param it computed a gradient for."""
    layer = net.layers[index]
    for name, blob, needed in zip(layer.spec.bottoms, net.bottom_vecs[index], net.bottom_need_backward[index]):
        if needed:
            yield f"    [Backward] Layer {layer.name}, bottom blob {name} diff: {fmt(mean_abs(blob.diff))}"
    for i, (blob, needed) in enumerate(zip(layer.blobs, layer.param_propagate_down)):
        if needed:
            yield f"    [Backward] Layer {layer.name}, param blob {i} diff: {fmt(mean_abs(blob.diff))}"


def all_params_line(net):
    """Caffe's summary after backward: L1 and L2 norms of all learnable weights and diffs."""
    sums = np.zeros(4)
    for param in net.learnable_params:
        data = param.blob.data.astype(np.float64, copy=False)
        diff = param.blob.diff.astype(np.float64, copy=False)
        sums += (np.abs(data).sum(), np.abs(diff).sum(), np.vdot(data, data), np.vdot(diff, diff))
    l1_data, l1_diff, sq_data, sq_diff = (float(x) for x in sums)
    return (
        f"    [Backward] All net params (data, diff): L1 norm = ({fmt(l1_data)}, {fmt(l1_diff)}); "
        f"L2 norm = ({fmt(math.sqrt(sq_data))}, {fmt(math.sqrt(sq_diff))})"
    )


def update_lines(net, before):
    """Caffe's [Update] lines: per learnable param, the mean |w| before the update and the mean
    |step| (``before`` holds each learnable param's weights copied before the update)."""
    owners = param_owners(net)
    for param, old in zip(net.learnable_params, before):
        layer, index = owners[id(param.blob)]
        step = mean_abs(old - param.blob.data)
        yield f"    [Update] Layer {layer}, param {index} data: {fmt(mean_abs(old))}; diff: {fmt(step)}"


def param_owners(net):
    """{id(param blob): (first layer holding it, its index there)}."""
    owners = {}
    for layer in net.layers:
        for i, blob in enumerate(layer.blobs):
            owners.setdefault(id(blob), (layer.name, i))
    return owners
