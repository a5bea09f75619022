"""pycaffe-compatible API for netlayers (caffe.Net, caffe.io, caffe.Classifier, ...).

    from netlayers import caffe
    net = caffe.Net("deploy.prototxt", "weights.caffemodel", caffe.TEST)

Everything is imported on first use (a module ``__getattr__``): ``import netlayers.caffe`` loads
nothing else, so modules of this package can be imported by ``netlayers.net`` without a cycle.
Names map to modules as ``_LAZY`` says; any other name is looked up as a submodule
(``caffe.proto``).
"""

from ..lazy import lazy_getattr

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


__getattr__ = lazy_getattr(__name__, _LAZY)


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = sorted(_LAZY) + ["__version__"]
