"""Caffe's legacy net formats, upgraded on reading as Caffe's ``upgrade_proto`` does.

Many model-zoo files still use the V1 format: a net's ``layers { ... }`` entries
(V1LayerParameter) with an enum ``type`` (``CONVOLUTION``), per-param learning rates and decays
as ``blobs_lr`` / ``weight_decay`` lists, param names as a plain ``param: "w"`` list, and (in the
oldest of them) the data transformation inside ``data_param`` / ``image_data_param`` /
``window_data_param``. :func:`upgrade_v1_net` turns such a net (in netlayers' mapping form, as
:mod:`netlayers.caffe.prototxt` converts prototxt text) into the current form:

- ``layers`` -> ``layer``, each type enum -> its layer type name (``SOFTMAX_LOSS`` ->
  ``SoftmaxWithLoss``);
- ``blobs_lr[i]``, ``weight_decay[i]``, ``param[i]`` (a name) and ``blob_share_mode[i]`` ->
  ``param[i]`` entries ``{lr_mult, decay_mult, name, share_mode}``;
- ``scale``, ``mean_file``, ``crop_size``, ``mirror`` of the data layers' own param block ->
  ``transform_param``;
- every other field (bottoms, tops, include/exclude, loss_weight, the ``*_param`` blocks) as it
  is.

The V0 format (``layers { layer { type: "conv" ... } }``, Caffe before 2014) is refused with a
one-line error that says how to upgrade it.
"""

from ..errors import ConfigError
from ..netspec.schema import Field
from ..netspec.yaml_lines import LineDict, LineList

#: V1LayerParameter.LayerType -> the layer type name (caffe.proto's V1 enum; UpgradeV1LayerType).
V1_TYPES = {
    "NONE": "",
    "ABSVAL": "AbsVal",
    "ACCURACY": "Accuracy",
    "ARGMAX": "ArgMax",
    "BNLL": "BNLL",
    "CONCAT": "Concat",
    "CONTRASTIVE_LOSS": "ContrastiveLoss",
    "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution",
    "DATA": "Data",
    "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss",
    "ELTWISE": "Eltwise",
    "EXP": "Exp",
    "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data",
    "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss",
    "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss",
    "INNER_PRODUCT": "InnerProduct",
    "LRN": "LRN",
    "MEMORY_DATA": "MemoryData",
    "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN",
    "POOLING": "Pooling",
    "POWER": "Power",
    "RELU": "ReLU",
    "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss",
    "SILENCE": "Silence",
    "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss",
    "SPLIT": "Split",
    "SLICE": "Slice",
    "TANH": "TanH",
    "WINDOW_DATA": "WindowData",
    "THRESHOLD": "Threshold",
}

#: V1LayerParameter's fields that differ from LayerParameter's (caffe.proto): the per-param lists.
V1_LISTS = {
    "param": Field(str, repeated=True),
    "blobs_lr": Field(float, repeated=True),
    "weight_decay": Field(float, repeated=True),
    "blob_share_mode": Field(str, repeated=True),
}

#: The V1 per-param lists, folded into ``param`` entries: V1 field -> ParamSpec field.
PARAM_LISTS = {"param": "name", "blobs_lr": "lr_mult", "weight_decay": "decay_mult", "blob_share_mode": "share_mode"}

#: Data layers whose own param block held the transformation in the oldest V1 files.
DATA_PARAM_BLOCKS = ("data_param", "image_data_param", "window_data_param")
TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")


def is_v1_net(net):
    """True for a net written with V1 ``layers { ... }`` entries."""
    return "layers" in net


def upgrade_v1_net(net, file=None):
    """The current-format mapping of V1 ``net`` (see the module docstring); lines are kept so
    that later checks can name them. A net mixing ``layer`` and ``layers`` is refused, as
    Caffe refuses it."""
    if "layer" in net:
        raise ConfigError("the net mixes 'layer' and legacy 'layers' entries; use one format", file=file)
    upgraded = LineDict()
    upgraded.line = getattr(net, "line", None)
    upgraded.key_lines = {}
    for key, value in net.items():
        target = "layer" if key == "layers" else key
        upgraded.key_lines[target] = net.line_of(key) if hasattr(net, "line_of") else None
        if key == "layers":
            entries = value if isinstance(value, list) else [value]
            layers = LineList(_upgrade_layer(entry, file) for entry in entries)
            layers.line = getattr(value, "line", None)
            layers.item_lines = list(getattr(value, "item_lines", None) or [])
            value = layers
        upgraded[target] = value
    return upgraded


def _upgrade_layer(layer, file):
    """One V1LayerParameter mapping as a LayerParameter mapping."""
    line = getattr(layer, "line", None)
    if not isinstance(layer, dict):
        raise ConfigError("each V1 'layers' entry must be a message { ... }", file=file, line=line)
    if "layer" in layer:
        raise ConfigError(
            "this net uses Caffe's V0 format (layers { layer { ... } }), from before 2014; upgrade it "
            "with Caffe's upgrade_net_proto_text, or rewrite it in the current 'layer { ... }' form",
            file=file,
            line=line,
        )
    out = LineDict()
    out.line, out.key_lines = line, {}
    params = {}
    for key, value in layer.items():
        key_line = layer.line_of(key) if hasattr(layer, "line_of") else line
        if key in PARAM_LISTS:
            for i, item in enumerate(value if isinstance(value, list) else [value]):
                params.setdefault(i, {})[PARAM_LISTS[key]] = item
            continue
        if key == "type":
            value = _type_name(value, file, key_line)
        out[key] = value
        out.key_lines[key] = key_line
    if params:
        entries = LineList(params[i] for i in sorted(params))
        entries.line = line
        out["param"] = entries
        out.key_lines["param"] = line
    _move_transformation(out)
    return out


def _type_name(value, file, line):
    if not isinstance(value, str) or value not in V1_TYPES:
        known = ", ".join(sorted(V1_TYPES))
        raise ConfigError(f"unknown V1 layer type {value!r}; V1 types are: {known}", file=file, line=line)
    if not V1_TYPES[value]:
        raise ConfigError("a V1 layer of type NONE has no current equivalent", file=file, line=line)
    return V1_TYPES[value]


def _move_transformation(layer):
    """UpgradeNetDataTransformation: scale, mean_file, crop_size and mirror written in a data
    layer's own param block move to its ``transform_param``."""
    for block_name in DATA_PARAM_BLOCKS:
        block = layer.get(block_name)
        if not isinstance(block, dict):
            continue
        moved = {key: block.pop(key) for key in TRANSFORM_FIELDS if key in block}
        if moved:
            transform = layer.setdefault("transform_param", LineDict())
            transform.update(moved)
