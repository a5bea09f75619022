"""The ``solver:`` section: its fields (Caffe's SolverParameter names), reading a config
and checking the section (see base.py's docstring for the defaults and checks)."""

from pathlib import Path

import numpy as np

from ..caffe.prototxt import holds_a_net, is_prototxt, read_prototxt
from ..errors import ConfigError
from ..netspec import Enum, Field, Message, Where, check_message, load_yaml_file
from ..netspec.schema import shown
from ..netspec.yaml_lines import LineDict
from . import lr_policy
from .adaptive import AdaDelta, AdaGrad, Adam, RMSProp
from .sgd import SGD, Nesterov

RULES = {rule.type: rule for rule in (SGD, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam)}
LEGACY_TYPES = {
    "SGD": "SGD",
    "NESTEROV": "Nesterov",
    "ADAGRAD": "AdaGrad",
    "RMSPROP": "RMSProp",
    "ADADELTA": "AdaDelta",
    "ADAM": "Adam",
}

NET_STATE_FIELDS = {
    "phase": Field(Enum("TRAIN", "TEST"), None),
    "level": Field(int, 0),
    "stage": Field(str, repeated=True),
}

SOLVER_FIELDS = {
    "net": Field(str, None, doc="the net's file (YAML or prototxt), relative to this config's folder"),
    "net_param": Field(dict, None, doc="the net itself, inline"),
    "train_net": Field(str, None, doc="the TRAIN net's file (then test_net names the TEST net's)"),
    "train_net_param": Field(dict, None, doc="the TRAIN net, inline"),
    "test_net": Field(str, repeated=True, doc="TEST nets' files (one test_iter each)"),
    "test_net_param": Field(dict, repeated=True, doc="the TEST net, inline"),
    "train_state": Field(Message(NET_STATE_FIELDS, name="NetState"), None, doc="level and stages of the TRAIN net"),
    "test_state": Field(Message(NET_STATE_FIELDS, name="NetState"), repeated=True, doc="of the TEST net"),
    "type": Field(Enum(*RULES), None, doc="SGD (default), Nesterov, AdaGrad, RMSProp, AdaDelta, Adam"),
    "solver_type": Field(Enum(*LEGACY_TYPES), None, doc="Caffe's legacy enum for type"),
    "base_lr": Field(float, required=True, min=0),
    "lr_policy": Field(Enum(*lr_policy.POLICIES), "fixed"),
    "gamma": Field(float, None),
    "power": Field(float, None),
    "stepsize": Field(int, None, min=1),
    "stepvalue": Field(int, repeated=True, min=0),
    "max_iter": Field(int, None, min=0),
    "warmup_iter": Field(int, 0, min=0),
    "warmup_start_lr": Field(float, 0.0),
    "momentum": Field(float, 0.0),
    "momentum2": Field(float, 0.999),
    "delta": Field(float, 1e-8),
    "rms_decay": Field(float, 0.99),
    "weight_decay": Field(float, 0.0, min=0),
    "regularization_type": Field(Enum("L2", "L1"), "L2"),
    "clip_gradients": Field(float, -1.0),
    "iter_size": Field(int, 1, min=1),
    "display": Field(int, 0, min=0),
    "average_loss": Field(int, 1, min=1),
    "test_iter": Field(int, repeated=True, min=1),
    "test_interval": Field(int, 0, min=0),
    "test_initialization": Field(bool, True),
    "snapshot": Field(int, 0, min=0),
    "snapshot_prefix": Field(str, None),
    "snapshot_after_train": Field(bool, True),
    "random_seed": Field(int, -1),
    "weights": Field(str, repeated=True, doc="weights files to start from (relative to the config)"),
    # accepted for Caffe configs, without effect here
    "solver_mode": Field(Enum("CPU", "GPU"), "CPU"),
    "device_id": Field(int, 0, min=0),
    "snapshot_format": Field(Enum("HDF5", "BINARYPROTO"), "BINARYPROTO"),
    "debug_info": Field(bool, False),
    "test_compute_loss": Field(bool, False),
    "snapshot_diff": Field(bool, False),
    "layer_wise_reduce": Field(bool, True),
}

#: The fields that name the net to train (at most one; a YAML config may instead hold ``layers:``).
TRAIN_NET_FIELDS = ("net", "net_param", "train_net", "train_net_param")


def read_config(config):
    """(raw mapping, file name or None, base folder) of a YAML path, a Caffe solver prototxt
    (its SolverParameter becomes the ``solver:`` section) or a dict."""
    if isinstance(config, (str, Path)):
        path = Path(config)
        if is_prototxt(path):
            if holds_a_net(path):  # a Caffe net file: no solver in it (check_solver_params says so)
                return read_prototxt(path), str(path), path.resolve().parent
            section = read_prototxt(path, "SolverParameter")
            raw = LineDict(solver=section)
            raw.line, raw.key_lines = 1, {"solver": 1}
            return raw, str(path), path.resolve().parent
        return load_yaml_file(path), str(path), path.resolve().parent
    if isinstance(config, dict):
        return config, None, Path.cwd()
    raise ConfigError(f"a solver is built from a YAML path or a mapping, not {shown(config)}")


def check_solver_params(raw, file=None, *, max_iter=None, seed=None, type=None):
    """Check the ``solver:`` section of ``raw`` (the whole config mapping). Returns the checked
    Params, with ``type`` resolved and the ``max_iter``/``seed``/``type`` overrides applied
    (``type``: pycaffe's solver classes decide the update rule whatever the file says)."""
    if not isinstance(raw, dict):
        raise ConfigError("a config must be a mapping with 'layers:' and 'solver:'", file=file)
    section = raw.get("solver")
    if section is None:
        caffe_net = file is not None and is_prototxt(file)
        raise ConfigError(
            "a Caffe net file holds no solver: train with its solver file (train --solver solver.prototxt)"
            if caffe_net
            else "no 'solver:' section; training needs one (base_lr, max_iter, ...)",
            file=file,
            line=getattr(raw, "line", None),
        )
    param = check_message(section, SOLVER_FIELDS, Where(file, _line_of(raw, "solver"), None, "solver"))

    def at(name):
        return field_where(raw, file, name)

    if param.solver_type is not None:
        if param.type is not None:
            raise at("solver_type").error("give either type or the legacy solver_type, not both")
        param.type = LEGACY_TYPES[param.solver_type]
    param.type = type or param.type or "SGD"
    for name, value in (("max_iter", max_iter), ("seed", seed)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
            raise ConfigError(f"the {name} override must be a whole number, got {value!r:.60}", file=file)
    if max_iter is not None:
        param.max_iter = int(max_iter)
    if seed is not None:
        param.random_seed = int(seed)
    if param.max_iter is None:
        raise at("max_iter").error("is required (how many iterations to train)")
    if param.max_iter < 0:  # an override from the command line
        raise at("max_iter").error(f"must not be negative, got {param.max_iter}")
    policy = param.lr_policy
    for name in lr_policy.NEEDS[policy]:
        if param[name] is None:
            raise at("lr_policy").error(f"lr_policy '{policy}' needs '{name}' in the solver section")
    if param.gamma is not None and param.gamma < 0 and policy not in ("fixed", "sigmoid"):
        raise at("gamma").error(f"must not be negative, got {param.gamma:g}")
    if policy == "poly" and param.max_iter <= 0:
        raise at("max_iter").error("must be positive for lr_policy 'poly'")
    if policy == "multistep" and not param.stepvalue:
        raise at("lr_policy").error(
            "lr_policy 'multistep' needs 'stepvalue' (the iterations where the rate drops) in the solver section"
        )
    if any(b <= a for a, b in zip(param.stepvalue, param.stepvalue[1:])):
        raise at("stepvalue").error(f"must increase, got {param.stepvalue}")
    RULES[param.type].check(param, at)
    return param


def field_where(raw, file, name):
    """Where ``solver.<name>`` is in the config (its line, or the solver section's if absent)."""
    section = raw.get("solver")
    where = Where(file, _line_of(raw, "solver"), None, "solver")
    if isinstance(section, dict) and name in section:
        return where.at(section, name)
    return Where(file, where.line, None, f"solver.{name}")


def _line_of(mapping, key):
    line_of = getattr(mapping, "line_of", None)
    return line_of(key) if line_of else None


def _state(state):
    """(level, stages) of a solver's train_state / test_state (None: the net's own)."""
    if state is None:
        return None, None
    return state.level, list(state.stage)


def _has_test_only_layers(spec):
    return any(layer.in_phase("TEST") and not layer.in_phase("TRAIN") for layer in spec.layers)
