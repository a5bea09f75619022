"""pycaffe-compatible API for netlayers (caffe.Net, caffe.io, caffe.Classifier, ...).

    from netlayers import caffe
    net = caffe.Net("deploy.prototxt", "weights.caffemodel", caffe.TEST)

Everything is imported on first use (a module ``__getattr__``): ``import netlayers.caffe`` loads
nothing else, so modules of this package can be imported by ``netlayers.net`` without a cycle.
Names map to modules as ``_LAZY`` says; any other name is looked up as a submodule
(``caffe.proto``).
"""

import importlib

__version__ = "1.0.0"  # the pycaffe whose API this follows (Caffe 1.0)

#: attribute -> (module, name in it, or None for the module itself)
_LAZY = {
    **{
        name: (".pycaffe", name)
        for name in (
            "Net",
            "TRAIN",
            "TEST",
            "Layer",
            "set_mode_cpu",
            "set_mode_gpu",
            "set_device",
            "set_random_seed",
            "layer_type_list",
        )
    },
    **{
        name: (".solver", name)
        for name in (
            "SGDSolver",
            "NesterovSolver",
            "AdaGradSolver",
            "RMSPropSolver",
            "AdaDeltaSolver",
            "AdamSolver",
            "get_solver",
        )
    },
    "io": (".io", None),
    "draw": (".draw", None),
    "layers": (".net_spec", "layers"),
    "params": (".net_spec", "params"),
    "NetSpec": (".net_spec", "NetSpec"),
    "to_proto": (".net_spec", "to_proto"),
    "Classifier": (".classifier", "Classifier"),
}


def __getattr__(name):
    """The names of ``_LAZY``, imported on first use; other names as submodules."""
    missing = AttributeError(f"module 'netlayers.caffe' has no attribute {name!r}")
    if name.startswith("_"):
        raise missing
    module_name, attribute = _LAZY.get(name, ("." + name, None))
    try:
        module = importlib.import_module(module_name, __name__)
    except ModuleNotFoundError as err:
        if err.name != __name__ + module_name:
            raise
        raise missing from None
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = sorted(_LAZY) + ["__version__"]
