"""Built-in layers, one module per family. Importing this package registers them all."""

from . import data, embed, inner_product, loss, neuron, normalization, python_layer, structure, vision  # noqa: F401
