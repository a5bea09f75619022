"""Tiny configs for the solver tests, and a reporter that records what the solver tells it.
(A plain module, not a conftest: the tests import it by name.)"""

import numpy as np
import yaml


def tiny_config(w0=1.0, param=None, **solver):
    """E = w^2 / 2 (x = 1, target 0, one weight): the gradient is w itself."""
    ip = {
        "name": "ip",
        "type": "InnerProduct",
        "bottom": "x",
        "top": "y",
        "inner_product_param": {
            "num_output": 1,
            "bias_term": False,
            "weight_filler": {"type": "constant", "value": w0},
        },
    }
    if param is not None:
        ip["param"] = [param]
    return {
        "name": "tiny",
        "layers": [
            {
                "name": "data",
                "type": "DummyData",
                "top": ["x", "t"],
                "dummy_data_param": {
                    "shape": [{"dim": [1, 1]}],
                    "data_filler": [{"type": "constant", "value": 1.0}, {"type": "constant", "value": 0.0}],
                },
            },
            ip,
            {"name": "loss", "type": "EuclideanLoss", "bottom": ["y", "t"], "top": "loss"},
        ],
        "solver": {"base_lr": 0.1, "max_iter": 10, **solver},
    }


def input_config(features=2, **solver):
    """Input-fed linear regression (x and t set from outside), one weight row, no bias."""
    return {
        "name": "lin",
        "layers": [
            {
                "name": "data",
                "type": "Input",
                "top": ["x", "t"],
                "input_param": {"shape": [{"dim": [1, features]}, {"dim": [1, 1]}]},
            },
            {
                "name": "ip",
                "type": "InnerProduct",
                "bottom": "x",
                "top": "y",
                "inner_product_param": {"num_output": 1, "bias_term": False},
            },
            {"name": "loss", "type": "EuclideanLoss", "bottom": ["y", "t"], "top": "loss"},
        ],
        "solver": {"base_lr": 0.1, "max_iter": 10, **solver},
    }


def mlp_config(batch=4, target="gaussian", test=False, **solver):
    """DummyData (gaussian x; gaussian or constant t) -> ip1 -> ReLU -> ip2 -> EuclideanLoss.
    With ``test``, a TEST-only data layer too. Every draw comes from the net's generator."""
    t_filler = {"type": "gaussian", "std": 0.5} if target == "gaussian" else {"type": "constant", "value": 0.3}

    def data(phase):
        layer = {
            "name": "data",
            "type": "DummyData",
            "top": ["x", "t"],
            "dummy_data_param": {
                "shape": [{"dim": [batch, 5]}, {"dim": [batch, 2]}],
                "data_filler": [{"type": "gaussian"}, t_filler],
            },
        }
        if phase:
            layer["include"] = {"phase": phase}
        return layer

    layers = ([data("TRAIN"), data("TEST")] if test else [data(None)]) + [
        {
            "name": "ip1",
            "type": "InnerProduct",
            "bottom": "x",
            "top": "h",
            "inner_product_param": {
                "num_output": 6,
                "weight_filler": {"type": "gaussian", "std": 0.3},
                "bias_filler": {"type": "constant", "value": 0.1},
            },
        },
        {"name": "relu", "type": "ReLU", "bottom": "h", "top": "h"},
        {
            "name": "ip2",
            "type": "InnerProduct",
            "bottom": "h",
            "top": "y",
            "param": [{"lr_mult": 1}, {"lr_mult": 2, "decay_mult": 0}],
            "inner_product_param": {"num_output": 2, "weight_filler": {"type": "gaussian", "std": 0.3}},
        },
        {"name": "loss", "type": "EuclideanLoss", "bottom": ["y", "t"], "top": "loss"},
    ]
    return {"name": "mlp", "random_seed": 3, "layers": layers, "solver": {"base_lr": 0.05, "max_iter": 10, **solver}}


def write_config(tmp_path, config, name="net.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def weights(solver):
    return [p.blob.data.copy() for p in solver.net.learnable_params]


class Recorder:
    """A reporter that keeps every call; ``hooks[name](solver, *args)`` run on a call."""

    def __init__(self, **hooks):
        self.calls = []
        self.hooks = hooks
        self.solver = None

    def __getattr__(self, name):
        if not name.startswith("on_"):
            raise AttributeError(name)

        def record(*args):
            if name == "on_start":
                self.solver = args[0]
            self.calls.append((name, args))
            if name in self.hooks:
                self.hooks[name](self.solver, *args)

        return record

    def of(self, name):
        return [args for call, args in self.calls if call == name]


ALL_TYPES = ["SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"]

# Settings each update rule is meant to be used with (AdaGrad and RMSProp take no momentum).
TYPE_SETTINGS = {
    "SGD": {"momentum": 0.9, "weight_decay": 0.01},
    "Nesterov": {"momentum": 0.9, "weight_decay": 0.01},
    "AdaGrad": {"weight_decay": 0.01},
    "RMSProp": {"rms_decay": 0.9, "base_lr": 0.01},
    "AdaDelta": {"momentum": 0.95, "base_lr": 1.0, "delta": 1e-6},
    "Adam": {"momentum": 0.9, "momentum2": 0.999, "base_lr": 0.01},
}


def settings(solver_type):
    return {"type": solver_type, **TYPE_SETTINGS[solver_type]}


def close(a, b, rtol=1e-6, atol=1e-7):
    return np.allclose(a, b, rtol=rtol, atol=atol)
