"""Python layers: a user's own layer class, named from YAML.

    - {name: mine, type: Python, bottom: x, top: y,
       python_param: {module: my_layers, layer: Cube, param_str: "scale: 2"}}

The module is imported from the config file's folder first, then from the Python path. The
class implements the Layer contract (subclassing :class:`netlayers.Layer` is easiest):
``Reshape``, ``Forward_cpu`` and ``Backward_cpu``, optionally ``LayerSetUp``; ``param_str``
reaches it as ``self.param_str``. A layer written for pycaffe, with methods ``setup``,
``reshape``, ``forward`` and ``backward``, works too: those names are taken as LayerSetUp,
Reshape, Forward_cpu and Backward_cpu (pycaffe's blobs have the same ``data``, ``diff``,
``reshape``, ``count``, ``num``/``channels``/``height``/``width``; ``self.blobs.add_blob(*shape)``
adds a param; ``self.phase`` is ``caffe.TRAIN``/``caffe.TEST``, equal to "TRAIN"/"TEST" and
0/1). Asked to run in place (top named like its bottom), a Python layer does so only when
its class sets ``in_place = True`` (its forward and backward are right with
the top being the bottom); otherwise the net gives it a blob of its own. Alternatively,
register the class under a type name of its own with :func:`netlayers.register_layer` and use
that type directly.
"""

import importlib
import sys

from ..errors import ConfigError
from ..layer import Layer
from ..netspec import Field
from ..registry import register_layer

REQUIRED_METHODS = ("Reshape", "Forward_cpu")
PYCAFFE_NAMES = {"setup": "LayerSetUp", "reshape": "Reshape", "forward": "Forward_cpu", "backward": "Backward_cpu"}


def load_python_layer_class(module_name, class_name, search_dir=None, where=None):
    """Import ``module_name`` (first from ``search_dir``) and return its class ``class_name``."""

    def fail(message):
        err = ConfigError(message)
        if where is not None:
            err.located(file=where.file, line=where.line, layer=where.layer, field="python_param")
        return err

    added = False
    if search_dir is not None and str(search_dir) not in sys.path:
        sys.path.insert(0, str(search_dir))
        added = True
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise fail(f"cannot import module '{module_name}': {err}") from None
    except Exception as err:  # an error inside the user's module: still one line
        raise fail(f"importing module '{module_name}' failed: {type(err).__name__}: {err}") from None
    finally:
        if added:
            sys.path.remove(str(search_dir))
    cls = getattr(module, class_name, None)
    if cls is None or not isinstance(cls, type):
        raise fail(f"module '{module_name}' has no class '{class_name}'")
    cls = as_layer_class(cls)
    missing = [
        m for m in REQUIRED_METHODS if not callable(getattr(cls, m, None)) or getattr(cls, m) is getattr(Layer, m, None)
    ]
    if missing:
        raise fail(f"class '{class_name}' in module '{module_name}' does not implement {', '.join(missing)}")
    return cls


def as_layer_class(cls):
    """A subclass of ``cls`` (and of Layer) that follows the Layer contract: pycaffe's method
    names become the contract's hooks (Layer's own setup/forward/backward wrappers stay in
    charge). It runs in place only where its class sets ``in_place = True``."""

    def own(name):  # defined by the user's classes, not inherited from Layer
        return any(name in vars(k) for k in cls.__mro__ if k not in (Layer, object))

    namespace = {}
    for pycaffe, hook in PYCAFFE_NAMES.items():
        if own(pycaffe):
            if not own(hook):
                namespace[hook] = getattr(cls, pycaffe)
            if hasattr(Layer, pycaffe):
                namespace[pycaffe] = getattr(Layer, pycaffe)
    bases = (cls,) if issubclass(cls, Layer) else (cls, Layer)
    return type(cls.__name__, bases, {"__module__": cls.__module__, **namespace})


@register_layer("Python")
class Python(Layer):
    """Delegates to the user's class named by ``python_param`` (module, layer, param_str)."""

    example = {
        "bottoms": [(2, 3)],
        "python_path": "configs/examples/python_layer",
        "params": {"python_param": {"module": "cube_layer", "layer": "Cube", "param_str": "scale: 2"}},
    }

    params = {
        "module": Field(str, required=True),
        "layer": Field(str, required=True),
        "param_str": Field(str, ""),
        "share_in_parallel": Field(bool, False),
    }

    def __new__(cls, spec, **kwargs):
        p = spec.blocks["python_param"]
        net_dir = None
        if spec.where.file:
            from pathlib import Path

            net_dir = Path(spec.where.file).resolve().parent
        user_cls = load_python_layer_class(p.module, p.layer, net_dir, spec.where)
        instance = object.__new__(user_cls)
        Layer.__init__(instance, spec, **kwargs)
        instance.type = "Python"
        from ..caffe.pycaffe import as_pycaffe_layer

        as_pycaffe_layer(instance)  # pycaffe's self.blobs.add_blob and numeric self.phase
        instance.param_str = p.param_str
        instance.p = p
        return instance
