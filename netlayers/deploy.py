"""From a training config to a net that predicts: Caffe's hand-written ``deploy.prototxt``, made
from the config itself.

:func:`deploy_config` takes a net definition (YAML, a mapping, or a Caffe ``.prototxt``) and
returns a :class:`Deploy`: the TEST phase's layers, where

- every data layer (Data, MemoryData, DummyData, ...) becomes an ``Input`` layer whose first
  top has the shape that layer gives its net after the TEST transform (the batch axis is chosen
  at call time); its other tops (the labels) are gone;
- every layer that reads a blob that is gone (Accuracy reads the labels) is gone in turn;
- a ``SoftmaxWithLoss`` becomes a ``Softmax`` layer named and topped ``prob`` (Caffe's deploy
  convention), a ``SigmoidCrossEntropyLoss`` a ``Sigmoid`` likewise; any other loss is dropped
  and its first bottom is the prediction; ``loss_weight`` fields left on other layers are dropped.

:func:`deploy_net` builds it as a :class:`~netlayers.net.Net` with weights; :class:`Predictor`
adds the TEST transform of the data layer (scale, mean, crop) and class names, so that raw
images (pixels as the data set stores them) go in and class probabilities come out.
"""

import copy
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError
from .netspec.yaml_lines import plain

#: Source layer types whose first top is the net's input data (Input layers are kept as they are).
DATA_LAYER_TYPES = ("Data", "MemoryData", "DummyData", "ImageData", "HDF5Data", "WindowData", "Python")

#: Loss layers whose prediction is a probability layer of the same family.
PROBABILITY_OF_LOSS = {"SoftmaxWithLoss": ("Softmax", "softmax_param"), "SigmoidCrossEntropyLoss": ("Sigmoid", None)}


#: Net-level fields a deploy config leaves out (layers are rebuilt; net-level inputs became a layer).
NOT_IN_DEPLOY = ("layers", "layer", "solver", "input", "input_shape", "input_dim", "labels_file")


@dataclass
class DeployInput:
    """One input of a deploy net: the blob, the data layer it replaces, its per-item shape as
    the net sees it (without the batch axis; None when only images given at call time can
    tell), the TEST transform (``transform_param`` as a plain dict), and the shape of the items
    before that transform (the data set's: larger than ``item_shape`` when it crops)."""

    blob: str
    layer: str
    layer_type: str
    item_shape: tuple | None
    transform_param: dict = field(default_factory=dict)
    raw_shape: tuple | None = None


@dataclass
class Deploy:
    """A deploy net definition (``config``: a mapping ``netlayers.Net`` builds), its inputs, the
    blob holding its prediction, whether that blob holds probabilities, and the class names of
    the config's ``labels_file`` (None without one)."""

    config: dict
    inputs: list
    prediction: str
    probabilities: bool
    labels: list | None = None
    source: str = "<config>"
    base_dir: Path | None = None

    def with_batch(self, batch, shapes=None):
        """The config with every input's shape set: ``batch`` items of ``shapes[blob]`` (default:
        the inputs' own item shapes)."""
        config = copy.deepcopy(self.config)
        by_top = {
            _as_list(layer.get("top"))[0]: layer
            for layer in config["layers"]
            if layer.get("type") == "Input" and layer.get("top")
        }
        for item in self.inputs:
            shape = (shapes or {}).get(item.blob) or item.item_shape
            if shape is None:
                raise ConfigError(
                    f"cannot tell the shape of input '{item.blob}' (data layer '{item.layer}' "
                    f"of type {item.layer_type}): give it (input_shape=(C, H, W), or --input-shape C,H,W)",
                    file=self.source,
                )
            by_top[item.blob]["input_param"] = {"shape": [{"dim": [int(batch), *map(int, shape)]}]}
        return config


# -- reading ---------------------------------------------------------------------------------
def _raw_config(config):
    """(mapping as YAML gives it, file name, folder) of a YAML path, a Caffe prototxt path or a
    mapping."""
    from .netspec.spec import load_config_file

    if isinstance(config, dict):
        return config, "<config>", Path.cwd()
    if not isinstance(config, (str, Path)):
        raise ConfigError(f"a config is a YAML or prototxt path or a mapping, not {type(config).__name__}")
    path = Path(config)
    raw = load_config_file(path)
    return raw, str(path), path.resolve().parent


def _as_list(value):
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


# -- the deploy net --------------------------------------------------------------------------
def deploy_config(config, *, data_root=None):
    """The :class:`Deploy` of ``config`` (a YAML or prototxt path, or a mapping): see the module
    docstring. ``data_root`` is where the data layers' sources are looked up (as ``train``'s
    ``--data-root``), to learn the shape of their items; a source that cannot be found leaves
    that shape to be given at call time."""
    from .netspec.spec import check_net

    raw, source, base_dir = _raw_config(config)
    spec = check_net(raw, file=source, base_dir=base_dir)  # every mistake of the config, found here
    layers = [layer for layer in spec.layers if layer.in_phase("TEST")]
    inputs, gone, out_layers, replaced = [], set(), [], None
    for layer in layers:
        raw_layer = plain(layer.raw) if isinstance(layer.raw, dict) else {}
        raw_layer.pop("include", None)
        raw_layer.pop("exclude", None)
        raw_layer.pop("loss_weight", None)
        if not layer.bottoms and layer.type in DATA_LAYER_TYPES and layer.tops:
            inputs.append(_deploy_input(layer, spec, data_root))
            gone.update(layer.tops[1:])
            out_layers.append({"name": layer.name, "type": "Input", "top": [layer.tops[0]]})
            continue
        if layer.type == "Accuracy":
            gone.update(layer.tops)
            continue
        if layer.cls.is_loss and layer.bottoms and layer.bottoms[0] not in gone:
            gone.update(layer.tops)
            prediction = PROBABILITY_OF_LOSS.get(layer.type)
            if prediction is not None and replaced is None:
                kind, param_block = prediction
                taken = {l.name for l in layers} | {t for l in layers for t in l.tops}
                name = "prob" if "prob" not in taken else f"{layer.name}_prob"
                probability = {"name": name, "type": kind, "bottom": [layer.bottoms[0]], "top": [name]}
                if param_block and param_block in raw_layer:
                    probability[param_block] = raw_layer[param_block]
                out_layers.append(probability)
                replaced = (name, True)
            elif replaced is None:
                replaced = (layer.bottoms[0], False)
            continue
        if any(bottom in gone for bottom in layer.bottoms):
            gone.update(layer.tops)
            continue
        out_layers.append(raw_layer)
    if not inputs and not any(l.get("type") == "Input" for l in out_layers):
        raise ConfigError("the TEST net has no data or Input layer to feed images into", file=source)
    deploy_raw = {k: plain(v) for k, v in raw.items() if k not in NOT_IN_DEPLOY}
    existing_inputs = [l for l in out_layers if l.get("type") == "Input" and l.get("input_param")]
    deploy_raw["layers"] = out_layers
    deploy_raw["force_backward"] = bool(raw.get("force_backward", False))
    prediction, probabilities = replaced if replaced else (_last_output(out_layers), False)
    if existing_inputs and not inputs:
        inputs = [_existing_input(l) for l in existing_inputs]
    labels = _labels(spec.labels_file, base_dir, source) if getattr(spec, "labels_file", None) else None
    return Deploy(deploy_raw, inputs, prediction, probabilities, labels, source, base_dir)


def _existing_input(raw_layer):
    """A :class:`DeployInput` for an Input layer the config already has (a deploy file)."""
    shape = raw_layer["input_param"]["shape"]
    first = shape[0] if isinstance(shape, list) else shape
    dims = tuple(int(d) for d in _as_list(first.get("dim")))
    top = _as_list(raw_layer.get("top"))[0]
    return DeployInput(
        top, raw_layer["name"], "Input", dims[1:] if dims else None, raw_shape=dims[1:] if dims else None
    )


def _last_output(out_layers):
    """The prediction of a net with no loss: the first top of the last layer."""
    for layer in reversed(out_layers):
        tops = _as_list(layer.get("top"))
        if tops:
            return tops[0]
    raise ConfigError("the deploy net has no layer with a top")


def _deploy_input(layer, spec, data_root):
    """The :class:`DeployInput` replacing data layer ``layer``, with the TEST shape of its items
    when the layer's fields or its data source tell it."""
    transform = plain(layer.raw.get("transform_param", {})) if isinstance(layer.raw, dict) else {}
    item_shape = None
    if layer.type == "MemoryData":
        p = layer.blocks["memory_data_param"]
        item_shape = (p.channels, p.height, p.width)
    elif layer.type == "DummyData":
        shapes = layer.blocks["dummy_data_param"].shape
        if shapes:
            item_shape = tuple(int(d) for d in shapes[0].dim[1:])
    elif layer.type == "Data":
        item_shape = _data_item_shape(layer, spec, data_root)
    raw_shape = item_shape
    if item_shape is not None and transform.get("crop_size") and len(item_shape) == 3:
        crop = int(transform["crop_size"])
        item_shape = (item_shape[0], crop, crop)
    return DeployInput(layer.tops[0], layer.name, layer.type, item_shape, transform, raw_shape)


def _data_item_shape(layer, spec, data_root):
    """The (C, H, W) or (D,) of a Data layer's items, read from its source; None when the source
    is not found (the images given at call time tell it then)."""
    from .data import resolve_source
    from .errors import NetlayersError
    from .layers.data import _load_dataset

    p = layer.blocks["data_param"]
    try:
        located = resolve_source(p.source, p.backend, data_root=data_root, base_dir=spec.base_dir)
        inputs, _ = _load_dataset(located)
    except NetlayersError:
        return None
    return tuple(int(d) for d in inputs.shape[1:])


def _labels(labels_file, base_dir, source):
    """Class names, one a line (line i names class i), of the config's ``labels_file``."""
    path = Path(labels_file)
    if not path.is_absolute():
        path = Path(base_dir) / path
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(
            f"labels_file: cannot read {path}: {getattr(err, 'strerror', None) or err}", file=source
        ) from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def deploy_net(
    config, weights=None, *, batch=1, input_shape=None, dtype=None, data_root=None, share_memory=False, keep=()
):
    """The deploy :class:`~netlayers.net.Net` of ``config`` (see :func:`deploy_config`) with
    ``batch`` items per input, the weights of ``weights`` (.npz, .caffemodel or a
    solverstate's weights) loaded, in the TEST phase. ``input_shape`` (C, H, W) sets the first
    input's item shape where the config's data cannot tell it (or to override it).
    ``share_memory``: inner blobs share memory by when the forward needs their values (Net's
    ``share_memory``), so after a forward only the inputs and outputs hold theirs, and the blobs
    ``keep`` names."""
    from .net import Net

    deploy = config if isinstance(config, Deploy) else deploy_config(config, data_root=data_root)
    shapes = {deploy.inputs[0].blob: tuple(input_shape)} if input_shape is not None and deploy.inputs else None
    from .netspec.spec import check_net

    spec = check_net(deploy.with_batch(batch, shapes), file=f"{deploy.source} (deploy net)", base_dir=deploy.base_dir)
    net = Net(spec, phase="TEST", dtype=dtype, share_memory=share_memory, keep=keep)
    if weights is not None:
        net.load(weights)
    return net
