"""From a net definition to a checked spec: no arrays yet, every mistake found up front.

``load_net_spec(source)`` accepts a path to a YAML file or a Caffe ``.prototxt`` (read as it is,
legacy V1 nets upgraded), a YAML-shaped dict, or a NetSpec, and returns a :class:`NetSpec` whose
layers are :class:`LayerSpec` objects with every parameter block checked against what the layer
class declares. It also checks the graph for both phases: duplicate producers of a blob, and
bottoms that no earlier layer produces (a net whose include/exclude rules test levels or stages
is checked when a Net picks its state). A net-level ``imports:`` list names modules to import
first (from the config's folder, then the Python path), so that layer types they register can be
used. ``phase_layers(spec, phase, level, stages)`` filters by Caffe's include/exclude rules and
inserts Split layers where a blob fans out."""

import importlib
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, NetlayersWarning
from ..registry import layer_class
from .schema import BLOB_SHAPE, Enum, Field, Message, Where, check_message, close_match_hint, shown
from .yaml_lines import load_yaml_file

PHASES = ("TRAIN", "TEST")

PARAM_SPEC = Message(
    {
        "name": Field(str, ""),
        "lr_mult": Field(float, 1.0),
        "decay_mult": Field(float, 1.0),
        "share_mode": Field(Enum("STRICT", "PERMISSIVE"), "STRICT"),
    },
    name="ParamSpec",
)

NET_STATE_RULE = Message(
    {
        "phase": Field(Enum(*PHASES)),
        "min_level": Field(int, None),
        "max_level": Field(int, None),
        "stage": Field(str, repeated=True),
        "not_stage": Field(str, repeated=True),
    },
    name="NetStateRule",
)

NET_STATE = Message(
    {"phase": Field(Enum(*PHASES), None), "level": Field(int, 0), "stage": Field(str, repeated=True)},
    name="NetState",
)

LAYER_FIELDS = {
    "name": Field(str, required=True),
    "type": Field(str, required=True),
    "bottom": Field(str, repeated=True),
    "top": Field(str, repeated=True),
    "param": Field(PARAM_SPEC, repeated=True),
    "include": Field(NET_STATE_RULE, repeated=True),
    "exclude": Field(NET_STATE_RULE, repeated=True),
    "loss_weight": Field(float, repeated=True),
    "propagate_down": Field(bool, repeated=True),
}

NET_FIELDS = {
    "name": Field(str, ""),
    "layers": Field(dict, None),
    "force_backward": Field(bool, False),
    "random_seed": Field(int, -1),
    "dtype": Field(Enum("float32", "float64"), "float32"),
    "state": Field(NET_STATE, None, doc="Caffe's NetState: the level and stages that include/exclude rules test"),
    "labels_file": Field(
        str,
        None,
        doc="class names, one a line (line i names class i), relative to the config's folder: "
        "`netlayers predict` and netlayers.Predictor print them beside the class numbers (beyond Caffe)",
    ),
    "imports": Field(
        str,
        repeated=True,
        doc="modules to import before the layers are checked "
        "(from the config's folder first): their @register_layer types become usable",
    ),
    "solver": Field(dict, None),
    # Caffe's deprecated net-level inputs (deploy files): made into an Input layer named "input"
    "input": Field(str, repeated=True),
    "input_shape": Field(BLOB_SHAPE, repeated=True),
    "input_dim": Field(int, repeated=True, min=1),
}


@dataclass
class LayerSpec:
    """One checked layer definition."""

    name: str
    type: str
    bottoms: list
    tops: list
    params: list = field(default_factory=list)  # ParamSpec: name, lr_mult, decay_mult
    loss_weights: list = field(default_factory=list)
    propagate_down: list = field(default_factory=list)
    include: list = field(default_factory=list)
    exclude: list = field(default_factory=list)
    blocks: dict = field(default_factory=dict)  # block name -> checked Params
    where: Where = field(default_factory=Where)
    raw: dict = field(default_factory=dict)
    auto: bool = False  # inserted by the net (a fan-out Split)

    @property
    def cls(self):
        return layer_class(self.type, self.where)

    def in_phase(self, phase, level=0, stages=()):
        """Caffe's rule (Net::FilterNet): with include rules, the net's state (phase, level,
        stages) must meet one; with exclude rules, it may meet none."""
        if self.include:
            return any(_meets(rule, phase, level, stages) for rule in self.include)
        if self.exclude:
            return not any(_meets(rule, phase, level, stages) for rule in self.exclude)
        return True

    @property
    def depends_on_state(self):
        """True when a rule of this layer tests the level or the stages."""
        return any(
            rule.min_level is not None or rule.max_level is not None or rule.stage or rule.not_stage
            for rule in (*self.include, *self.exclude)
        )


def _meets(rule, phase, level, stages):
    """Caffe's StateMeetsRule: every condition the rule sets holds for the state."""
    return (
        rule.phase in (None, phase)
        and (rule.min_level is None or level >= rule.min_level)
        and (rule.max_level is None or level <= rule.max_level)
        and all(stage in stages for stage in rule.stage)
        and not any(stage in stages for stage in rule.not_stage)
    )


@dataclass
class NetSpec:
    """A checked net definition."""

    name: str
    layers: list
    force_backward: bool = False
    random_seed: int = -1
    dtype: str = "float32"
    file: str | None = None
    base_dir: Path | None = None
    solver: dict | None = None  # the raw ``solver:`` section; checked by the solver
    level: int = 0  # the net's own ``state:``: level and stages (the phase is the Net's)
    stages: tuple = ()
    labels_file: str | None = None  # class names for predictions (beyond Caffe)


def load_config_file(path):
    """The mapping a net file holds: YAML, or a Caffe net ``.prototxt`` read as it is (legacy
    V1 nets upgraded), either with the lines of its fields kept for errors."""
    from ..caffe.prototxt import is_prototxt, read_prototxt

    if is_prototxt(path):
        return read_prototxt(path)
    return load_yaml_file(path)


def load_net_spec(source):
    """A NetSpec from a YAML or Caffe prototxt path, a dict (as YAML would give) or a NetSpec."""
    if isinstance(source, NetSpec):
        return source
    if isinstance(source, (str, Path)):
        path = Path(source)
        raw = load_config_file(path)
        return check_net(raw, file=str(path), base_dir=path.resolve().parent)
    if isinstance(source, dict):
        return check_net(source, file=None, base_dir=Path.cwd())
    raise ConfigError(f"a net is built from a YAML path or a mapping, not {shown(source)}")


def _input_layer(net, where):
    """Caffe's UpgradeNetInput: net-level ``input`` names with one ``input_shape`` each, or four
    ``input_dim`` values each (N, C, H, W), become a first layer {name: input, type: Input}."""
    names = net.input
    if not names:
        raise where.error("input_shape or input_dim given without the 'input' names they shape")
    if net.input_shape and net.input_dim:
        raise where.error("give either input_shape or input_dim, not both")
    if net.input_shape:
        shapes = [list(shape.dim) for shape in net.input_shape]
        if len(shapes) != len(names):
            raise where.error(f"{len(names)} input(s) but {len(shapes)} input_shape(s): give one each")
    elif net.input_dim:
        if len(net.input_dim) != 4 * len(names):
            raise where.error(
                f"{len(names)} input(s) need {4 * len(names)} input_dim values (N, C, H, "
                f"W each), got {len(net.input_dim)}"
            )
        shapes = [net.input_dim[4 * i : 4 * i + 4] for i in range(len(names))]
    else:
        raise where.error("each input needs a shape: give input_shape (or input_dim)")
    return {
        "name": "input",
        "type": "Input",
        "top": list(names),
        "input_param": {"shape": [{"dim": shape} for shape in shapes]},
    }


def check_net(raw, *, file=None, base_dir=None):
    where = Where(file=file, line=getattr(raw, "line", None))
    if not isinstance(raw, dict):
        raise where.error("a net definition must be a mapping with a 'layers:' list")
    if "layer" in raw and "layers" not in raw:
        raw = dict(raw)
        raw["layers"] = raw.pop("layer")
    for key in raw:
        if key not in NET_FIELDS:
            hint = close_match_hint(key, NET_FIELDS)
            raise where.at(raw, key).error(f"unknown net field{hint}; known: {', '.join(NET_FIELDS)}")
    layers_raw = raw.get("layers")
    if not isinstance(layers_raw, list) or not layers_raw:
        raise where.at(raw, "layers").error("expected a non-empty list of layers under 'layers:'")
    top_level = {k: v for k, v in raw.items() if k not in ("layers", "solver")}
    net = check_message(top_level, {k: f for k, f in NET_FIELDS.items() if k not in ("layers", "solver")}, where)
    import_modules(net.imports, base_dir, where.at(raw, "imports"), raw.get("imports"))
    layers = [check_layer(item, where.at(layers_raw, i)) for i, item in enumerate(layers_raw)]
    warn_ignored_engines(layers, file)
    if net.input or net.input_shape or net.input_dim:
        layers.insert(0, check_layer(_input_layer(net, where.at(raw, "input")), where.at(raw, "input")))
    spec = NetSpec(
        name=net.name,
        layers=layers,
        force_backward=net.force_backward,
        random_seed=net.random_seed,
        dtype=net.dtype,
        file=file,
        base_dir=Path(base_dir) if base_dir else None,
        solver=raw.get("solver"),
        labels_file=net.labels_file,
        level=net.state.level if net.state else 0,
        stages=tuple(net.state.stage) if net.state else (),
    )
    if not any(layer.depends_on_state for layer in layers):  # else checked when a Net is built
        for phase in PHASES:
            check_graph([layer for layer in layers if layer.in_phase(phase)], phase)
    return spec


def import_modules(names, search_dir, where, raw_names):
    """Import each named module, first from ``search_dir`` (the config's folder), as a
    ``type: Python`` layer's module is found; a failure is a ConfigError at the name's line."""
    for i, name in enumerate(names):
        added = search_dir is not None and str(search_dir) not in sys.path
        if added:
            sys.path.insert(0, str(search_dir))
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise where.at(raw_names, i).error(f"cannot import module '{name}': {err}") from None
        except Exception as err:  # an error inside the user's module, or a malformed name
            raise where.at(raw_names, i).error(
                f"importing module '{name}' failed: {type(err).__name__}: {err}"
            ) from None
        finally:
            if added:
                sys.path.remove(str(search_dir))


def warn_ignored_engines(layers, file):
    """One NetlayersWarning per net naming the layers that ask for ``engine: CUDNN``: accepted
    for Caffe's configs, but every layer runs on the CPU here."""
    asking = [
        layer.name
        for layer in layers
        if any(isinstance(block, dict) and block.get("engine") == "CUDNN" for block in layer.blocks.values())
    ]
    if asking:
        names = ", ".join(f"'{name}'" for name in asking)
        warnings.warn(
            f"{file or 'net'}: engine CUDNN is ignored (layer(s) {names}): netlayers runs every layer on the CPU",
            NetlayersWarning,
            stacklevel=2,
        )


def check_layer(raw, where):
    """Check one layer mapping: common fields, then the blocks its class declares."""
    if not isinstance(raw, dict):
        raise where.error(f"each layer must be a mapping, got {shown(raw)}")
    name = raw.get("name")
    where = Where(where.file, where.line, name if isinstance(name, str) else None)
    if "type" not in raw:
        raise where.error("missing 'type'")
    cls = layer_class(raw["type"], where.at(raw, "type")) if isinstance(raw["type"], str) else None
    blocks_fields = cls.param_blocks() if cls else {}
    common = {k: v for k, v in raw.items() if k in LAYER_FIELDS}
    for key in raw:
        if key not in LAYER_FIELDS and key not in blocks_fields:
            owners = _block_owners().get(key)
            if owners and cls is not None and key not in NEVER_IGNORED_BLOCKS:
                _warn_unused_block(key, owners, raw["type"], where.at(raw, key))
                continue
            hint = close_match_hint(key, [*LAYER_FIELDS, *blocks_fields, *(owners or _block_owners())])
            known = ", ".join(list(LAYER_FIELDS) + list(blocks_fields))
            raise where.at(raw, key).error(f"unknown field{hint}; a {raw['type']} layer takes: {known}")
    checked = check_message(common, LAYER_FIELDS, where)
    blocks = {
        block: check_message(
            raw.get(block),
            fields,
            where.at(raw, block),
            rules=getattr(cls, "check_params", None) if fields is cls.params else None,
        )
        for block, fields in blocks_fields.items()
    }
    if checked.include and checked.exclude:
        raise where.error("give either include or exclude rules, not both")
    return LayerSpec(
        name=checked.name,
        type=checked.type,
        bottoms=checked.bottom,
        tops=checked.top,
        params=checked.param,
        loss_weights=checked.loss_weight,
        propagate_down=checked.propagate_down,
        include=checked.include,
        exclude=checked.exclude,
        blocks=blocks,
        where=where,
        raw=raw,
    )


#: Blocks that change the numbers a layer gives: a layer that does not read one is an error, not a
#: warning (Caffe's MemoryData applies transform_param; netlayers' does not).
NEVER_IGNORED_BLOCKS = ("transform_param",)


def _block_owners():
    """Parameter block name -> the layer types that take it, over every registered layer: the
    blocks Caffe's LayerParameter has (each read by some layer type)."""
    from ..registry import layer_types

    owners = {}
    for type_name in layer_types():
        for block in layer_class(type_name).param_blocks():
            owners.setdefault(block, []).append(type_name)
    return owners


def _warn_unused_block(block, owners, type_name, where):
    """Caffe accepts any LayerParameter block on any layer and ignores what the layer does not
    read (VGG16's deploy file carries an image_data_param on its Input layer): a warning."""
    shown_owners = ", ".join(owners[:3]) + (", ..." if len(owners) > 3 else "")
    message = where.error(f"ignored: {type_name} layers do not read {block} (only {shown_owners} layers do)")
    warnings.warn(NetlayersWarning(str(message)), stacklevel=2)


def check_graph(layers, phase):
    """Every bottom produced earlier, no blob produced twice (except in place). Layer names may
    repeat, as Caffe allows (BVLC's mnist_autoencoder has two layers named ``loss``); the Net
    refuses only two layers of one name that both have params, whose weights could not be told
    apart in a weights file."""
    produced = set()
    for layer in layers:
        for i, bottom in enumerate(layer.bottoms):
            if bottom not in produced:
                hint = close_match_hint(bottom, produced)
                raise _list_entry_where(layer, "bottom", i).error(
                    f"blob '{bottom}' is not produced by any earlier layer in phase {phase}{hint}"
                )
        for i, top in enumerate(layer.tops):
            if top in produced and top not in layer.bottoms:
                raise Where(layer.where.file, layer.where.line, layer.name, f"top[{i}]").error(
                    f"blob '{top}' is already produced by an earlier layer (only in-place "
                    "layers, with top equal to bottom, may reuse a name)"
                )
            produced.add(top)
        if len(layer.propagate_down) not in (0, len(layer.bottoms)):
            raise layer.where.error(
                f"propagate_down has {len(layer.propagate_down)} values for {len(layer.bottoms)} bottom(s)"
            )


def _list_entry_where(layer, key, index):
    """Where ``layer.<key>[index]`` is written: its own line (a list item or the key's line for
    a single value), the layer's first line when unknown."""
    entries = layer.raw.get(key) if isinstance(layer.raw, dict) else None
    where = Where(layer.where.file, layer.where.line, layer.name).at(layer.raw, key)
    if isinstance(entries, list):
        return where.at(entries, index)
    return Where(where.file, where.line, layer.name, f"{key}[{index}]")


def phase_layers(spec, phase, level=None, stages=None):
    """The layers of ``phase`` at ``level`` with ``stages`` (default: the net's own ``state:``),
    with Split layers inserted where a blob feeds several."""
    if phase not in PHASES:
        raise ConfigError(f"phase must be TRAIN or TEST, got {phase!r}")
    level = spec.level if level is None else level
    stages = spec.stages if stages is None else tuple(stages)
    layers = [layer for layer in spec.layers if layer.in_phase(phase, level, stages)]
    if any(layer.depends_on_state for layer in spec.layers):
        shown_state = f"{phase}, level {level}" + (f", stages {', '.join(stages)}" if stages else "")
        check_graph(layers, shown_state)
    return insert_splits(layers)


def insert_splits(layers):
    """Caffe's InsertSplits: a top consumed by several layers (or consumed and also weighted as
    a loss) feeds a Split whose tops go one to each consumer, so gradients add at the branch."""
    last_producer = {}  # blob name -> (layer index, top index)
    consumers = {}  # (layer index, top index) -> list of (layer index, bottom index)
    for li, layer in enumerate(layers):
        for bi, bottom in enumerate(layer.bottoms):
            consumers.setdefault(last_producer[bottom], []).append((li, bi))
        for ti, top in enumerate(layer.tops):
            last_producer[top] = (li, ti)

    def loss_weight(li, ti):
        layer = layers[li]
        if layer.loss_weights and ti < len(layer.loss_weights):
            return layer.loss_weights[ti]
        return 1.0 if (layer.cls.is_loss and ti == 0) else 0.0

    renamed = {}  # (layer index, bottom index) -> new bottom name
    splits_after = {}  # layer index -> list of split LayerSpecs
    for (li, ti), uses in consumers.items():
        weighted = loss_weight(li, ti) != 0
        if len(uses) + weighted < 2:
            continue
        producer = layers[li]
        blob = producer.tops[ti]
        tops = [f"{blob}_{producer.name}_{ti}_split_{j}" for j in range(len(uses) + weighted)]
        split = LayerSpec(
            name=f"{blob}_{producer.name}_{ti}_split",
            type="Split",
            bottoms=[blob],
            tops=tops,
            where=producer.where,
            auto=True,
            loss_weights=([loss_weight(li, ti)] + [0.0] * len(uses)) if weighted else [],
        )
        splits_after.setdefault(li, []).append(split)
        for j, use in enumerate(uses):
            renamed[use] = tops[j + weighted]
        if weighted:
            weights = list(producer.loss_weights) or [loss_weight(li, k) for k in range(len(producer.tops))]
            weights[ti] = 0.0
            layers[li] = producer = _replace(producer, loss_weights=weights)
    result = []
    for li, layer in enumerate(layers):
        new_bottoms = [renamed.get((li, bi), b) for bi, b in enumerate(layer.bottoms)]
        if new_bottoms != layer.bottoms:
            layer = _replace(layer, bottoms=new_bottoms)
        result.append(layer)
        result.extend(splits_after.get(li, []))
    return result


def _replace(spec, **changes):
    from dataclasses import replace

    return replace(spec, **changes)
