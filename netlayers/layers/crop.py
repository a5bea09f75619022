"""Crop: cut bottom[0] to bottom[1]'s shape (Caffe's Crop layer, as FCN nets use it)."""

import numpy as np

from ..layer import Layer
from ..netspec import Field
from ..registry import register_layer


@register_layer("Crop")
class Crop(Layer):
    """Crops bottom[0] to the shape of bottom[1] from ``axis`` on (Caffe's Crop layer).

    y = x[..., o_a : o_a + T_a, ...] for every axis a >= axis, where T is bottom[1]'s shape and
    o_a the offset (``offset``: none = 0 for all, one value for all, or one per cropped axis).
    Axes before ``axis`` keep bottom[0]'s size. Backward: dE/dx is dE/dy inside the crop and 0
    outside; bottom[1] only gives a shape and receives no gradient.
    """

    example = {"bottoms": [(2, 3, 5, 5), (2, 3, 3, 2)], "params": {"crop_param": {"offset": [1, 2]}}}

    keep_top_data = False

    params = {"axis": Field(int, 2), "offset": Field(int, repeated=True)}
    num_bottoms = (2, 2)
    num_tops = (1, 1)

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0

    def Reshape(self, bottom, top):
        source, target = bottom[0].shape, bottom[1].shape
        if len(source) != len(target):
            raise self.error(f"bottoms must have the same number of axes: {source} vs {target}")
        axis = bottom[0].canonical_axis(self.p.axis)
        cropped = len(source) - axis
        offsets = self.p.offset
        if len(offsets) not in (0, 1, cropped):
            raise self.error(
                f"offset has {len(offsets)} values; give none, 1, or {cropped} (one per "
                f"axis from {axis} of shape {source})",
                "crop_param.offset",
            )
        if len(offsets) <= 1:
            offsets = [offsets[0] if offsets else 0] * cropped
        slices, shape = [], []
        for a in range(len(source)):
            if a < axis:
                slices.append(slice(None))
                shape.append(source[a])
                continue
            offset, size = offsets[a - axis], target[a]
            if offset < 0 or offset + size > source[a]:
                raise self.error(
                    f"crop exceeds the input on axis {a}: offset {offset} + size {size} "
                    f"> {source[a]} (input shape {source}, target shape {target})",
                    "crop_param.offset",
                )
            slices.append(slice(offset, offset + size))
            shape.append(size)
        self.slices = tuple(slices)
        top[0].reshape(shape)

    def Forward_cpu(self, bottom, top):
        np.copyto(top[0].data, bottom[0].data[self.slices])

    def Backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = 0
            bottom[0].diff[self.slices] = top[0].diff
        if len(propagate_down) > 1 and propagate_down[1]:
            bottom[1].diff[...] = 0
