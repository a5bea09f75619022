"""Structural layers: they move, split, join or reshape blobs without learned math."""
from ..layer import Layer
from ..registry import register_layer


@register_layer("Split")
class Split(Layer):
    """Copies one blob to several tops (inserted automatically where a blob fans out).
    Forward: every top shares the bottom's data (no copy).
    Backward: dE/dx = sum over tops of dE/dtop_k (gradients add at a branch)."""

    num_bottoms = (1, 1)
    num_tops = (1, None)

    def Reshape(self, bottom, top):
        for blob in top:
            blob.share_data(bottom[0])

    def Forward_cpu(self, bottom, top):
        pass

    def Backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        diff = bottom[0].diff
        if len(top) == 1:
            diff[...] = top[0].diff
            return
        import numpy as np
        np.add(top[0].diff, top[1].diff, out=diff)
        for blob in top[2:]:
            diff += blob.diff
