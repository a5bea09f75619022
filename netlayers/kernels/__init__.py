"""Hot loops as free functions over numpy arrays.

Nothing in this package imports Blob, Layer or Net: arrays come in, arrays go out (usually
through an ``out=`` argument so that callers can reuse buffers). Each kernel's docstring states
its formula, and ``tests/reference.py`` holds a slow, obvious numpy version to compare against.
"""
