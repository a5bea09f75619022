"""ONNX export: a deploy net's forward graph, with its current weights, as an ONNX model.

:func:`export_onnx` writes a built :class:`~netlayers.net.Net` whose inputs are Input layers
(a deploy net: see ``netlayers.deploy``) as ONNX, opset 17 by default (any from 13 to the
installed ``onnx`` package's newest may be asked for; onnxruntime 1.32 runs 17). Every layer
type with an ONNX equivalent maps to ONNX operators computing Caffe's formula exactly (the
docstring of each ``_export_*`` function says how); any other layer is a one-line
:class:`~netlayers.errors.ConfigError` naming the layer and its type. Values are float32
whatever the net's dtype.

The graph's inputs are the Input layers' tops, their first axis a symbolic ``batch`` where
the net allows another batch size (every input has the same first dim and no layer bakes that
dim into a constant); its outputs are the net's outputs (``net.outputs``), by name (an input
no layer reads is not one; an input rewritten in place is output as ``<name>_output``).
"""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import NetlayersError

DEFAULT_OPSET = 17
MIN_OPSET = 13  # Split, Unsqueeze and ReduceSum take their sizes and axes as inputs from 13 on
ONNX_MISSING = "ONNX export needs the onnx package: pip install 'netlayers[onnx]'"


class ExportError(NetlayersError):
    """An ONNX export cannot be made or written (the onnx package is missing, a bad opset, an
    unwritable file)."""


def export_onnx(net, path, *, opset=None):
    """Write ``net`` (a built Net fed by Input layers) to ``path`` as an ONNX model of ``opset``
    (default 17); returns the path. The file is written to a temporary file beside it and
    renamed, so a failure never leaves a half-written model."""
    model = onnx_model(net, opset=opset)
    return _write_model(model, Path(path))


def onnx_model(net, *, opset=None):
    """The ONNX ModelProto of ``net`` (see :func:`export_onnx`), checked by onnx's checker."""
    onnx = _import_onnx()
    opset = _checked_opset(onnx, opset)
    graph = _Graph(onnx, net)
    for index, layer in enumerate(net.layers):
        graph.add_layer(index, layer)
    proto = graph.proto()
    model = onnx.helper.make_model(
        proto, producer_name="netlayers", opset_imports=[onnx.helper.make_opsetid("", opset)]
    )
    model.ir_version = min(model.ir_version, _max_ir_version(onnx, opset))
    onnx.checker.check_model(model)
    return model


def _import_onnx():
    try:
        import onnx
        import onnx.checker
        import onnx.helper
        import onnx.numpy_helper
    except ImportError:
        raise ExportError(ONNX_MISSING) from None
    return onnx


def _checked_opset(onnx, opset):
    newest = onnx.defs.onnx_opset_version()
    if opset is None:
        return min(DEFAULT_OPSET, newest)
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)) or not MIN_OPSET <= opset <= newest:
        raise ExportError(f"opset must be a whole number from {MIN_OPSET} to {newest}, got {opset!r}")
    return int(opset)


def _max_ir_version(onnx, opset):
    """The IR version that came with ``opset`` (a model no newer than its runtime expects)."""
    for entry in onnx.helper.VERSION_TABLE:
        _, ir_version, default_opset = entry[:3]
        if default_opset == opset:
            return ir_version
    return onnx.IR_VERSION


def _write_model(model, path):
    from .io import create_temporary

    data = model.SerializeToString()
    try:
        fd, tmp = create_temporary(path)
    except OSError as err:
        raise ExportError(f"cannot write {path}: {err.strerror or err}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except OSError as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise ExportError(f"cannot write {path}: {err.strerror or err}") from None
    return path


@dataclass
class Site:
    """One layer being exported: its ONNX input values and the shapes of its bottoms and tops."""

    layer: object
    inputs: list
    bottom_shapes: list
    top_shapes: list

    @property
    def x(self):
        return self.inputs[0]

    @property
    def ndim(self):
        return len(self.bottom_shapes[0])

    def error(self, message, field=None):
        """A one-line ConfigError at this layer, naming its type."""
        return self.layer.error(f"{self.layer.type} layer: {message}", field)


class _Graph:
    """The ONNX graph being built: nodes, initializers, and the ONNX value each blob name holds
    now (a name written again, in place, gets a new value)."""

    def __init__(self, onnx, net):
        self.onnx, self.helper, self.net = onnx, onnx.helper, net
        self.nodes, self.initializers, self.graph_inputs = [], [], []
        self.values = {}  # blob name -> the ONNX value that holds it now
        self.constants = {}  # id of a param array -> its initializer (shared params once)
        self.used = set(net.outputs) | set(net.inputs)  # names kept for the graph's own inputs/outputs
        self.batch_fixed_by = None  # the first layer whose export bakes the batch size in

    # -- names and values -------------------------------------------------------------------
    def unique(self, hint):
        name, n = hint, 1
        while name in self.used:
            n += 1
            name = f"{hint}_{n}"
        self.used.add(name)
        return name

    def constant(self, hint, array, dtype=np.float32):
        """An initializer holding ``array`` as ``dtype``; the same array (a param blob's data,
        shared by several layers or bottoms) is stored once."""
        key = (id(array), np.dtype(dtype).str)
        if key in self.constants:
            return self.constants[key][0]
        name = self.unique(hint)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(array, dtype=dtype), name))
        self.constants[key] = (name, array)  # the array kept alive, so that its id stays its own
        return name

    def node(self, op, inputs, hint, outputs=1, **attributes):
        """Add one node; returns its output value (a list of them when ``outputs`` > 1)."""
        names = [self.unique(hint if outputs == 1 else f"{hint}_{i}") for i in range(outputs)]
        self.nodes.append(
            self.helper.make_node(op, list(inputs), names, name=self.unique(f"{hint}:{op}"), **attributes)
        )
        return names[0] if outputs == 1 else names

    def fix_batch(self, site):
        """Note that ``site``'s export holds the batch size as a constant."""
        self.batch_fixed_by = self.batch_fixed_by or site.layer.name

    # -- layers -----------------------------------------------------------------------------
    def add_layer(self, index, layer):
        net = self.net
        site = Site(
            layer,
            [self.values[name] for name in layer.spec.bottoms],
            [blob.shape for blob in net.bottom_vecs[index]],
            [blob.shape for blob in net.top_vecs[index]],
        )
        export = EXPORTS.get(layer.type)
        if export is None:
            raise layer.error(f"layer type '{layer.type}' has no ONNX export{_hint_for(layer)}")
        if layer.type == "Input":
            outputs = [self.graph_input(name, shape) for name, shape in zip(layer.spec.tops, site.top_shapes)]
        else:
            outputs = export(self, site)
        for name, value in zip(layer.spec.tops, outputs):
            self.values[name] = value

    def graph_input(self, name, shape):
        self.graph_inputs.append((name, shape))
        return name

    def proto(self):
        helper, float_type = self.helper, self.onnx.TensorProto.FLOAT
        batch = self._symbolic_batch()
        inputs = [
            helper.make_tensor_value_info(
                name, float_type, [batch if batch and i == 0 else d for i, d in enumerate(shape)]
            )
            for name, shape in self.graph_inputs
        ]
        outputs = []
        input_names = {name for name, _ in self.graph_inputs}
        for name in self.net.outputs:
            value = self.values[name]
            if value in input_names and value == name:
                continue  # an input no layer reads is not a result
            output = name if name not in input_names else self.unique(f"{name}_output")
            self.nodes.append(helper.make_node("Identity", [value], [output], name=self.unique(f"{output}:Identity")))
            shape = list(self.net.blobs[name].shape)
            if batch and shape:
                shape[0] = None  # follows the batch, or not: left for the runtime to tell
            outputs.append(helper.make_tensor_value_info(output, float_type, shape))
        return helper.make_graph(self.nodes, self.net.name or "net", inputs, outputs, self.initializers)

    def _symbolic_batch(self):
        """'batch' when every input has the same first dim and no layer holds it as a constant."""
        firsts = {shape[0] if shape else None for _, shape in self.graph_inputs}
        if self.batch_fixed_by is None and len(firsts) == 1 and None not in firsts:
            return "batch"
        return None


def _hint_for(layer):
    """What to do instead, for the layers a deploy net does without."""
    if not layer.spec.bottoms:
        return ": export a deploy net, fed by Input layers (netlayers.deploy.deploy_net, or `netlayers export`)"
    if layer.is_loss or layer.type == "Accuracy":
        return ": a deploy net has no loss or accuracy layers (netlayers.deploy.deploy_net, or `netlayers export`)"
    return ""


# -- helpers ---------------------------------------------------------------------------------
def _ints(values):
    return [int(v) for v in values]


def _int64(graph, hint, values):
    return graph.constant(hint, np.asarray(values, dtype=np.int64), np.int64)


def _broadcast(array, trailing):
    """``array`` with ``trailing`` axes of 1 appended, to broadcast from the left as Caffe does."""
    array = np.asarray(array)
    return array.reshape(array.shape + (1,) * trailing)


def _scalar(graph, hint, value):
    return graph.constant(hint, np.asarray(value, dtype=np.float32))


def _multiply(graph, site, value, factor, hint):
    """``value`` * ``factor`` (no node when the factor is 1)."""
    if factor == 1:
        return value
    return graph.node("Mul", [value, _scalar(graph, f"{hint}_factor", factor)], hint)


def _add(graph, site, value, term, hint):
    """``value`` + ``term`` (no node when the term is 0)."""
    if term == 0:
        return value
    return graph.node("Add", [value, _scalar(graph, f"{hint}_term", term)], hint)


def _only_channel_axis_one(site, axis, field):
    if axis != 1:
        raise site.error(f"only the channel axis 1 exports to ONNX, got axis {axis}", field)


# -- exports, one per layer type ----------------------------------------------------------------
def _export_convolution(graph, site):
    """Conv (Caffe's weights (O, C/g, kh, kw) are ONNX's): group, dilations, pads (symmetric),
    strides, the bias as C. Several bottoms: one Conv each, sharing the weights."""
    layer = site.layer
    _only_channel_axis_one(site, layer.axis, "convolution_param.axis")
    weights = [graph.constant(f"{layer.name}_weight", layer.blobs[0].data)]
    if layer.p.bias_term:
        weights.append(graph.constant(f"{layer.name}_bias", layer.blobs[1].data))
    op = "Conv" if layer.type == "Convolution" else "ConvTranspose"
    attributes = {
        "kernel_shape": _ints(layer.kernel),
        "pads": _ints(layer.pad) * 2,
        "strides": _ints(layer.stride),
        "dilations": _ints(layer.dilation),
        "group": int(layer.p.group),
    }
    return [graph.node(op, [x, *weights], layer.spec.tops[i], **attributes) for i, x in enumerate(site.inputs)]


def _export_deconvolution(graph, site):
    """ConvTranspose with Caffe's weights (C, O/g, kh, kw), which are ONNX's; symmetric pads
    give Caffe's output size s (H - 1) + d (k - 1) + 1 - 2 p (no output_padding)."""
    return _export_convolution(graph, site)


def _pooling_end_pads(size, kernel, pad, stride, out_size):
    """Pads after the image such that ONNX's floor rounding gives Caffe's ``out_size`` windows:
    the last window, starting at (out - 1) s - p, ends inside image + end pad."""
    return [max((o - 1) * s + k - n - p, 0) for n, k, p, s, o in zip(size, kernel, pad, stride, out_size)]


def _caffe_average_divisors(size, kernel, pad, stride, out_size):
    """Caffe's AVE divisor of each output pixel: its window clipped to the padded image
    [-pad, size + pad), per axis, multiplied: shape out_size."""
    per_axis = []
    for n, k, p, s, o in zip(size, kernel, pad, stride, out_size):
        starts = np.arange(o) * s - p
        per_axis.append(np.minimum(starts + k, n + p) - starts)
    return np.outer(per_axis[0], per_axis[1])


def _export_pooling(graph, site):
    """MAX: MaxPool with pads (p before, and after as many as Caffe's ceil rounding needs;
    ONNX ignores padded values as Caffe clips the window to the image), floor rounding.
    AVE: zeros padded explicitly (Pad), AveragePool over windows that all lie inside the padded
    input (divisor k*k), then times k*k / Caffe's divisor, the window clipped to the image plus
    its pad (so padding counts, the extra end padding does not). global_pooling: the kernel is
    the whole plane."""
    layer = site.layer
    if len(site.top_shapes) > 1:
        raise site.error("the second (mask) top of MAX pooling has no ONNX export")
    size = site.bottom_shapes[0][2:]
    kernel, pad, stride = layer.windows.kernel, layer.pad, layer.stride
    out_size = layer.out_size
    end_pads = _pooling_end_pads(size, kernel, pad, stride, out_size)
    name = layer.spec.tops[0]
    if layer.p.pool == "MAX":
        return [
            graph.node(
                "MaxPool",
                [site.x],
                name,
                kernel_shape=_ints(kernel),
                strides=_ints(stride),
                pads=_ints(pad) + _ints(end_pads),
            )
        ]
    padded = site.x
    if any(pad) or any(end_pads):
        pads = _int64(graph, f"{layer.name}_pads", [0, 0, *pad, 0, 0, *end_pads])
        padded = graph.node("Pad", [site.x, pads], f"{name}_padded")
    average = graph.node("AveragePool", [padded], f"{name}_average", kernel_shape=_ints(kernel), strides=_ints(stride))
    divisors = _caffe_average_divisors(size, kernel, pad, stride, out_size)
    window = kernel[0] * kernel[1]
    if np.all(divisors == window):
        return [graph.node("Identity", [average], name)]
    correction = graph.constant(f"{layer.name}_divisor_correction", window / divisors.astype(np.float64))
    return [graph.node("Mul", [average, correction], name)]


def _export_inner_product(graph, site):
    """y = x W^T + b with x flattened from ``axis``: axis 1 as Flatten + Gemm (transB unless
    ``transpose``), another axis as Reshape (keeping the axes before it) + MatMul + Add."""
    layer, name = site.layer, site.layer.spec.tops[0]
    weight, transpose = layer.blobs[0].data, layer.p.transpose
    bias = [graph.constant(f"{layer.name}_bias", layer.blobs[1].data)] if layer.p.bias_term else []
    if layer.axis == 1:
        x = site.x if site.ndim == 2 else graph.node("Flatten", [site.x], f"{name}_flat", axis=1)
        w = graph.constant(f"{layer.name}_weight", weight)
        return [graph.node("Gemm", [x, w, *bias], name, transB=0 if transpose else 1)]
    if layer.axis == 0:
        graph.fix_batch(site)
    shape = _int64(graph, f"{layer.name}_shape", [0] * layer.axis + [-1])
    x = graph.node("Reshape", [site.x, shape], f"{name}_flat")
    matrix = weight if transpose else np.ascontiguousarray(weight.T)
    y = graph.node("MatMul", [x, graph.constant(f"{layer.name}_weight", matrix)], f"{name}_product" if bias else name)
    return [graph.node("Add", [y, bias[0]], name)] if bias else [y]


def _export_relu(graph, site):
    """Relu; LeakyRelu(alpha = negative_slope) when the slope is not 0."""
    slope = site.layer.p.negative_slope
    name = site.layer.spec.tops[0]
    if slope == 0:
        return [graph.node("Relu", [site.x], name)]
    return [graph.node("LeakyRelu", [site.x], name, alpha=float(slope))]


def _unary(op):
    def export(graph, site):
        return [graph.node(op, [site.x], site.layer.spec.tops[0])]

    export.__doc__ = f"{op}, Caffe's formula exactly."
    return export


def _export_elu(graph, site):
    """Elu(alpha): x if x > 0 else alpha (exp(x) - 1)."""
    return [graph.node("Elu", [site.x], site.layer.spec.tops[0], alpha=float(site.layer.p.alpha))]


def _export_prelu(graph, site):
    """PRelu with the slopes shaped (C, 1, ...) (or (1,) when channel_shared)."""
    layer = site.layer
    slopes = layer.blobs[0].data
    if not layer.p.channel_shared:
        slopes = _broadcast(slopes, site.ndim - 2)
    return [graph.node("PRelu", [site.x, graph.constant(f"{layer.name}_slope", slopes)], layer.spec.tops[0])]


def _export_power(graph, site):
    """(shift + scale x)^power as Mul, Add, then Mul(base, base) for power 2 or Pow; the
    constant 1 (power 0) or shift^power (scale 0) as ConstantOfShape."""
    layer, p = site.layer, site.layer.p
    name = layer.spec.tops[0]
    if layer.diff_scale == 0:
        value = 1.0 if p.power == 0 else float(np.power(np.float64(p.shift), p.power))
        shape = graph.node("Shape", [site.x], f"{name}_shape")
        fill = graph.onnx.helper.make_tensor("value", graph.onnx.TensorProto.FLOAT, [1], [value])
        return [graph.node("ConstantOfShape", [shape], name, value=fill)]
    base = _multiply(graph, site, site.x, p.scale, f"{name}_scaled")
    base = _add(graph, site, base, p.shift, f"{name}_base")
    if p.power == 1:
        return [graph.node("Identity", [base], name)]
    if p.power == 2:
        return [graph.node("Mul", [base, base], name)]
    return [graph.node("Pow", [base, _scalar(graph, f"{layer.name}_power", p.power)], name)]


def _export_exp(graph, site):
    """base^(shift + scale x) computed as netlayers does: exp(ln(base) scale x) * base^shift."""
    layer = site.layer
    name = layer.spec.tops[0]
    inner = _multiply(graph, site, site.x, layer.inner_scale, f"{name}_exponent")
    if layer.outer_scale == 1:
        return [graph.node("Exp", [inner], name)]
    return [_multiply(graph, site, graph.node("Exp", [inner], f"{name}_exp"), layer.outer_scale, name)]


def _export_log(graph, site):
    """ln(shift + scale x) / ln(base): Mul, Add, Log, Mul."""
    layer, p = site.layer, site.layer.p
    name = layer.spec.tops[0]
    base = _add(graph, site, _multiply(graph, site, site.x, p.scale, f"{name}_scaled"), p.shift, f"{name}_base")
    if layer.base_scale == 1:
        return [graph.node("Log", [base], name)]
    return [_multiply(graph, site, graph.node("Log", [base], f"{name}_ln"), layer.base_scale, name)]


def _export_threshold(graph, site):
    """1 where x > threshold else 0: Greater, then Cast to float."""
    name = site.layer.spec.tops[0]
    above = graph.node(
        "Greater", [site.x, _scalar(graph, f"{name}_threshold", site.layer.p.threshold)], f"{name}_above"
    )
    return [graph.node("Cast", [above], name, to=graph.onnx.TensorProto.FLOAT)]


def _export_dropout(graph, site):
    """Inference: y = x, or x (1 - dropout_ratio) when scale_train is false (Caffe's TEST rule,
    exported whatever the net's phase)."""
    layer = site.layer
    name = layer.spec.tops[0]
    if layer.test_scale == 1:
        return [graph.node("Identity", [site.x], name)]
    return [_multiply(graph, site, site.x, layer.test_scale, name)]


def _export_lrn(graph, site):
    """ACROSS_CHANNELS: ONNX's LRN is Caffe's (both divide alpha by local_size; bias = k).
    WITHIN_CHANNEL: x (1 + alpha / n^2 sum of x^2 over the n x n window, zero-padded)^-beta,
    the mean of the window as an AveragePool counting its padding (every window's divisor is
    n^2, as in Caffe)."""
    layer, p = site.layer, site.layer.p
    name = layer.spec.tops[0]
    if layer.across:
        return [
            graph.node(
                "LRN", [site.x], name, size=int(p.local_size), alpha=float(p.alpha), beta=float(p.beta), bias=float(p.k)
            )
        ]
    half = (p.local_size - 1) // 2
    square = graph.node("Mul", [site.x, site.x], f"{name}_square")
    mean = graph.node(
        "AveragePool",
        [square],
        f"{name}_window_mean",
        kernel_shape=[p.local_size] * 2,
        pads=[half] * 4,
        strides=[1, 1],
        count_include_pad=1,
    )
    scale = _add(graph, site, _multiply(graph, site, mean, p.alpha, f"{name}_scaled"), 1.0, f"{name}_scale")
    factor = graph.node("Pow", [scale, _scalar(graph, f"{name}_power", -p.beta)], f"{name}_factor")
    return [graph.node("Mul", [site.x, factor], name)]


def _export_batch_norm(graph, site):
    """(x - mean) / sqrt(var + eps) with the stored statistics divided by Caffe's scale factor
    (blob 2; 0 gives zeros), as Sub and Div by per-channel constants shaped (C, 1, ...). Batch
    statistics (use_global_stats false) have no export: inference uses the stored ones."""
    layer = site.layer
    if not layer.use_global_stats:
        raise site.error(
            "batch statistics (use_global_stats: false) have no ONNX export; export the TEST "
            "phase or set use_global_stats: true",
            "batch_norm_param.use_global_stats",
        )
    s = float(layer.blobs[2].data[0])
    factor = 0.0 if s == 0 else 1.0 / s
    dtype = np.float32
    mean = (layer.blobs[0].data * factor).astype(dtype)
    std = np.sqrt((layer.blobs[1].data * factor).astype(dtype) + dtype(layer.p.eps))
    trailing = max(site.ndim - 2, 0)
    name = layer.spec.tops[0]
    centred = graph.node(
        "Sub", [site.x, graph.constant(f"{layer.name}_mean", _broadcast(mean, trailing))], f"{name}_centred"
    )
    return [graph.node("Div", [centred, graph.constant(f"{layer.name}_std", _broadcast(std, trailing))], name)]


def _operand_axes(site, operand_shape):
    """(axis, trailing): where a broadcast operand of ``operand_shape`` lines up with the bottom
    (Caffe's rule: a scalar broadcasts everywhere) and how many axes of the bottom follow it."""
    if len(operand_shape) == 0:
        return 0, 0
    axis = site.layer.p.axis % site.ndim
    return axis, site.ndim - axis - len(operand_shape)


def _operand(graph, site, index_or_blob, hint):
    """A Scale/Bias operand as a value broadcasting from the left: a learned blob reshaped
    (with trailing 1s), or bottom[1] unsqueezed."""
    if isinstance(index_or_blob, int):
        shape = site.bottom_shapes[index_or_blob]
        axis, trailing = _operand_axes(site, shape)
        if trailing == 0:
            return site.inputs[index_or_blob]
        axes = _int64(graph, f"{hint}_axes", list(range(len(shape), len(shape) + trailing)))
        return graph.node("Unsqueeze", [site.inputs[index_or_blob], axes], hint)
    data = index_or_blob.data
    axis, trailing = _operand_axes(site, data.shape)
    if axis == 0 and data.ndim > 0:
        graph.fix_batch(site)
    return graph.constant(hint, _broadcast(data, trailing))


def _export_scale(graph, site):
    """y = x * s (+ b): Mul (and Add) with s (b) shaped to broadcast from ``axis`` (trailing
    axes of 1); s is the learned blob, or bottom[1] unsqueezed."""
    layer = site.layer
    name = layer.spec.tops[0]
    learned = len(site.inputs) == 1
    scale = _operand(graph, site, layer.blobs[0] if learned else 1, f"{layer.name}_scale")
    if layer.bias_index is None:
        return [graph.node("Mul", [site.x, scale], name)]
    scaled = graph.node("Mul", [site.x, scale], f"{name}_scaled")
    bias = _operand(graph, site, layer.blobs[layer.bias_index], f"{layer.name}_bias")
    return [graph.node("Add", [scaled, bias], name)]


def _export_bias(graph, site):
    """y = x + b: Add with b shaped to broadcast from ``axis`` (learned, or bottom[1])."""
    layer = site.layer
    bias = _operand(graph, site, layer.blobs[0] if len(site.inputs) == 1 else 1, f"{layer.name}_bias")
    return [graph.node("Add", [site.x, bias], layer.spec.tops[0])]


def _export_eltwise(graph, site):
    """SUM: sum of coeff_i x_i (Mul where a coeff is not 1, Adds left to right); PROD: Muls;
    MAX: Max."""
    layer = site.layer
    name, op = layer.spec.tops[0], layer.p.operation
    if op == "MAX":
        return [graph.node("Max", site.inputs, name)]
    if op == "PROD":
        terms = site.inputs
        kind = "Mul"
    else:
        terms = [
            _multiply(graph, site, x, c, f"{name}_term{i}") for i, (x, c) in enumerate(zip(site.inputs, layer.coeffs))
        ]
        kind = "Add"
    value = terms[0]
    for i, term in enumerate(terms[1:], 1):
        value = graph.node(kind, [value, term], name if i == len(terms) - 1 else f"{name}_partial{i}")
    return [value]


def _export_softmax(graph, site):
    """Softmax along ``axis`` (ONNX 13 and later normalize along that one axis, as Caffe)."""
    axis = site.layer.p.axis % site.ndim
    return [graph.node("Softmax", [site.x], site.layer.spec.tops[0], axis=int(axis))]


def _export_concat(graph, site):
    """Concat along the axis (one bottom: Identity)."""
    name = site.layer.spec.tops[0]
    if len(site.inputs) == 1:
        return [graph.node("Identity", site.inputs, name)]
    return [graph.node("Concat", site.inputs, name, axis=int(site.layer.axis))]


def _export_slice(graph, site):
    """Split along the axis into the tops' sizes (one top: Identity)."""
    layer = site.layer
    if len(site.top_shapes) == 1:
        return [graph.node("Identity", site.inputs, layer.spec.tops[0])]
    if layer.axis == 0:
        graph.fix_batch(site)
    sizes = _int64(graph, f"{layer.name}_sizes", [shape[layer.axis] for shape in site.top_shapes])
    outputs = graph.node("Split", [site.x, sizes], layer.name, outputs=len(site.top_shapes), axis=int(layer.axis))
    return outputs


def _export_split(graph, site):
    """Every top is the bottom: no node."""
    return [site.x] * len(site.top_shapes)


def _export_silence(graph, site):
    """No top, nothing computed."""
    return []


def _export_flatten(graph, site):
    """Reshape to [0] * axis + [-1] + the axes after end_axis (the batch stays symbolic)."""
    layer = site.layer
    shape = site.bottom_shapes[0]
    start, end = layer.p.axis % len(shape), layer.p.end_axis % len(shape)
    target = _int64(graph, f"{layer.name}_shape", [0] * start + [-1] + list(shape[end + 1 :]))
    return [graph.node("Reshape", [site.x, target], layer.spec.tops[0])]


def _export_reshape(graph, site):
    """Reshape with Caffe's ``shape`` dims in place of axes axis .. axis + num_axes - 1: ONNX's
    0 (copy the input's dim at that position) and -1 (inferred) mean what Caffe's do; the axes
    before are copied (0) and the axes after are written out."""
    layer, p = site.layer, site.layer.p
    shape = site.bottom_shapes[0]
    axes = len(shape)
    start = p.axis if p.axis >= 0 else axes + p.axis + 1
    end = axes if p.num_axes == -1 else start + p.num_axes
    trailing = list(shape[end:])
    if start == 0 and (end == 0 and trailing or layer.dims and layer.dims[0] not in (0, -1)):
        graph.fix_batch(site)
    target = [0] * start + list(layer.dims) + trailing
    return [graph.node("Reshape", [site.x, _int64(graph, f"{layer.name}_shape", target)], layer.spec.tops[0])]


def _export_crop(graph, site):
    """Slice from the offsets, to bottom[1]'s sizes, on the axes from ``axis`` on."""
    layer = site.layer
    axes = [a for a, where in enumerate(layer.slices) if where != slice(None)]
    if 0 in axes:
        graph.fix_batch(site)
    starts = [layer.slices[a].start for a in axes]
    ends = [layer.slices[a].stop for a in axes]
    inputs = [
        site.x,
        _int64(graph, f"{layer.name}_starts", starts),
        _int64(graph, f"{layer.name}_ends", ends),
        _int64(graph, f"{layer.name}_axes", axes),
    ]
    return [graph.node("Slice", inputs, layer.spec.tops[0])]


def _export_tile(graph, site):
    """Tile with ``tiles`` repeats on ``axis`` (Caffe repeats the whole block from the axis on,
    which is what repeating along that axis does)."""
    layer = site.layer
    axis = layer.p.axis % site.ndim
    repeats = [1] * site.ndim
    repeats[axis] = layer.p.tiles
    return [graph.node("Tile", [site.x, _int64(graph, f"{layer.name}_repeats", repeats)], layer.spec.tops[0])]


def _export_reduction(graph, site):
    """ReduceSum over the axes from ``axis`` on of x, |x| (ASUM) or x*x (SUMSQ), times coeff
    (MEAN: coeff / the count reduced)."""
    layer = site.layer
    name, op = layer.spec.tops[0], layer.p.operation
    x = site.x
    if op == "ASUM":
        x = graph.node("Abs", [x], f"{name}_abs")
    elif op == "SUMSQ":
        x = graph.node("Mul", [x, x], f"{name}_square")
    axis = layer.p.axis % site.ndim
    axes = _int64(graph, f"{layer.name}_axes", list(range(axis, site.ndim)))
    total = graph.node("ReduceSum", [x, axes], f"{name}_sum" if layer.scale != 1 else name, keepdims=0)
    return [_multiply(graph, site, total, layer.scale, name)]


def _export_embed(graph, site):
    """Gather rows of W at the indices (Cast to int64), plus b."""
    layer = site.layer
    name = layer.spec.tops[0]
    indices = graph.node("Cast", [site.x], f"{name}_indices", to=graph.onnx.TensorProto.INT64)
    weight = graph.constant(f"{layer.name}_weight", layer.blobs[0].data)
    rows = graph.node("Gather", [weight, indices], name if not layer.p.bias_term else f"{name}_rows", axis=0)
    if not layer.p.bias_term:
        return [rows]
    return [graph.node("Add", [rows, graph.constant(f"{layer.name}_bias", layer.blobs[1].data)], name)]


def _export_clip(graph, site):
    """Clip(min, max), the bounds as scalar inputs (opset 11 and later)."""
    p = site.layer.p
    low, high = _scalar(graph, f"{site.layer.name}_min", p.min), _scalar(graph, f"{site.layer.name}_max", p.max)
    return [graph.node("Clip", [site.x, low, high], site.layer.spec.tops[0])]


def _export_swish(graph, site):
    """x sigmoid(beta x): Mul, Sigmoid, Mul."""
    name = site.layer.spec.tops[0]
    scaled = _multiply(graph, site, site.x, site.layer.p.beta, f"{name}_scaled")
    return [graph.node("Mul", [site.x, graph.node("Sigmoid", [scaled], f"{name}_sigmoid")], name)]


def _export_batch_reindex(graph, site):
    """Gather along axis 0 by the index bottom, cast to int64."""
    name = site.layer.spec.tops[0]
    indices = graph.node("Cast", [site.inputs[1]], f"{name}_indices", to=graph.onnx.TensorProto.INT64)
    return [graph.node("Gather", [site.x, indices], name, axis=0)]


def _export_parameter(graph, site):
    """The param blob, as an initializer (Identity gives it the top's name)."""
    layer = site.layer
    return [graph.node("Identity", [graph.constant(f"{layer.name}_param", layer.blobs[0].data)], layer.spec.tops[0])]


def _export_input(graph, site):
    """The tops are the graph's inputs (handled by the graph itself)."""
    raise AssertionError("Input layers are graph inputs")


EXPORTS = {
    "Input": _export_input,
    "Convolution": _export_convolution,
    "Deconvolution": _export_deconvolution,
    "Pooling": _export_pooling,
    "InnerProduct": _export_inner_product,
    "ReLU": _export_relu,
    "PReLU": _export_prelu,
    "Sigmoid": _unary("Sigmoid"),
    "TanH": _unary("Tanh"),
    "AbsVal": _unary("Abs"),
    "BNLL": _unary("Softplus"),
    "ELU": _export_elu,
    "Power": _export_power,
    "Exp": _export_exp,
    "Log": _export_log,
    "Threshold": _export_threshold,
    "Dropout": _export_dropout,
    "LRN": _export_lrn,
    "BatchNorm": _export_batch_norm,
    "Scale": _export_scale,
    "Bias": _export_bias,
    "Eltwise": _export_eltwise,
    "Softmax": _export_softmax,
    "Concat": _export_concat,
    "Slice": _export_slice,
    "Split": _export_split,
    "Silence": _export_silence,
    "Flatten": _export_flatten,
    "Reshape": _export_reshape,
    "Crop": _export_crop,
    "Tile": _export_tile,
    "Reduction": _export_reduction,
    "Embed": _export_embed,
    "Clip": _export_clip,
    "Swish": _export_swish,
    "BatchReindex": _export_batch_reindex,
    "Parameter": _export_parameter,
}
