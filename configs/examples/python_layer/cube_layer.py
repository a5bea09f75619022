"""A user-defined layer, used from YAML as ``type: Python``.

    y = scale * x^3        Backward: dE/dx = dE/dy * 3 * scale * x^2

``param_str`` is YAML text (here ``"scale: 2"``) parsed however the layer likes.
"""

import numpy as np
import yaml

import netlayers


class Cube(netlayers.Layer):
    num_bottoms = (1, 1)
    num_tops = (1, 1)

    def LayerSetUp(self, bottom, top):
        options = yaml.safe_load(self.param_str or "") or {}
        self.scale = float(options.get("scale", 1.0))

    def Reshape(self, bottom, top):
        top[0].reshape_like(bottom[0])

    def Forward_cpu(self, bottom, top):
        np.power(bottom[0].data, 3, out=top[0].data)
        top[0].data *= self.scale

    def Backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            x = bottom[0].data
            np.multiply(top[0].diff, 3 * self.scale * x * x, out=bottom[0].diff)
