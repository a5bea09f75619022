"""Built-in layers, one module per family. Importing this package registers them all."""
from . import (data, inner_product, loss, neuron, normalization, python_layer,  # noqa: F401
               structure, vision)
