"""Package attributes imported on first use (numpy, numba and the net take half a second to
import, so ``import netlayers`` and ``from netlayers import caffe`` stay cheap)."""

import importlib


def lazy_getattr(package, table):
    """A module ``__getattr__`` for ``package`` (its ``__name__``): a name of ``table`` (name ->
    (relative module, attribute or None for the module)) is imported on first use and cached in
    the package; any other name is tried as a submodule; else AttributeError."""
    module_globals = importlib.import_module(package).__dict__

    def __getattr__(name):
        missing = AttributeError(f"module {package!r} has no attribute {name!r}")
        if name.startswith("_"):
            raise missing
        module_name, attribute = table.get(name, ("." + name, None))
        try:
            module = importlib.import_module(module_name, package)
        except ModuleNotFoundError as err:
            if err.name != package + module_name:
                raise
            raise missing from None
        value = module if attribute is None else getattr(module, attribute)
        module_globals[name] = value
        return value

    return __getattr__
