"""Hot loops as free functions over numpy arrays.

Nothing in this package imports Blob, Layer or Net: arrays come in, arrays go out (usually
through an ``out=`` argument so that callers can reuse buffers). Each kernel's docstring states
its formula, and ``tests/reference.py`` holds a slow, obvious numpy version to compare against.
"""

import importlib
import pkgutil


def modules():
    """Every kernel module of this package, imported."""
    return [importlib.import_module(f"{__name__}.{info.name}") for info in pkgutil.iter_modules(__path__)]
