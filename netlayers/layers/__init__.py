"""Built-in layers, one module per family. Importing this package registers them all."""

from . import (  # noqa: F401
    convolution,
    crop,
    data,
    data_files,
    embed,
    inner_product,
    loss,
    neuron,
    normalization,
    pooling,
    python_layer,
    recurrent,
    structure,
)
