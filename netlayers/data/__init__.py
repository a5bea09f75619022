"""Data loading below the ``Data`` layer: file readers, data-set lookup, transforms, batches.

Pure numpy; nothing here knows about layers or nets.
"""

from netlayers.data.batches import BatchSampler, Prefetcher, weakly
from netlayers.data.idx import read_idx
from netlayers.data.npz import read_npz
from netlayers.data.sources import Source, data_roots, load_source, resolve_source
from netlayers.data.transform import Transformer

__all__ = [
    "BatchSampler",
    "Prefetcher",
    "Source",
    "Transformer",
    "data_roots",
    "load_source",
    "read_idx",
    "read_npz",
    "resolve_source",
    "weakly",
]
