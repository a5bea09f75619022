"""Data layers: the sources of a net's blobs (no bottoms, no backward)."""
from .. import fillers
from ..layer import Layer
from ..netspec import BLOB_SHAPE, FILLER, Field
from ..registry import register_layer


class SourceLayer(Layer):
    """A layer with no bottoms that produces blobs: nothing flows back through it."""

    num_bottoms = (0, 0)
    num_tops = (1, None)
    has_backward = False

    def Backward_cpu(self, top, propagate_down, bottom):
        pass


def shapes_of(layer, shapes, count, field):
    """One shape per top: a single given shape serves every top (Caffe's rule)."""
    if len(shapes) not in (1, count):
        raise layer.error(f"give one shape, or one per top ({count}), got {len(shapes)}", field)
    shapes = shapes * count if len(shapes) == 1 else shapes
    for shape in shapes:
        if any(d < 0 for d in shape.dim):
            raise layer.error(f"dimensions must not be negative, got {shape.dim}", field)
    return [tuple(shape.dim) for shape in shapes]


@register_layer("Input")
class Input(SourceLayer):
    """Blobs set from outside (``net.forward(x=...)`` or ``net.blobs['x'].data[...] = ...``).
    ``input_param.shape`` gives one shape for all tops or one per top."""

    params = {"shape": Field(BLOB_SHAPE, repeated=True)}

    def LayerSetUp(self, bottom, top):
        if not self.p.shape:
            raise self.error("Input needs input_param.shape: [{dim: [...]}]", "input_param.shape")
        for blob, shape in zip(top, shapes_of(self, self.p.shape, len(top), "input_param.shape")):
            blob.reshape(shape)

    def Reshape(self, bottom, top):
        pass

    def Forward_cpu(self, bottom, top):
        pass


@register_layer("DummyData")
class DummyData(SourceLayer):
    """Tops filled by fillers (one for all tops or one per top; constant 0 by default).
    Non-constant fillers refill every forward, constant ones fill once, as in Caffe. Shapes come
    from ``shape`` or the legacy ``num``/``channels``/``height``/``width`` lists."""

    params = {
        "data_filler": Field(FILLER, repeated=True),
        "shape": Field(BLOB_SHAPE, repeated=True),
        "num": Field(int, repeated=True),
        "channels": Field(int, repeated=True),
        "height": Field(int, repeated=True),
        "width": Field(int, repeated=True),
    }

    def LayerSetUp(self, bottom, top):
        p = self.p
        legacy = [p.num, p.channels, p.height, p.width]
        if p.shape and any(legacy):
            raise self.error("give either shape or num/channels/height/width, not both", "dummy_data_param")
        if p.shape:
            shapes = shapes_of(self, p.shape, len(top), "dummy_data_param.shape")
        elif any(legacy):
            if len({len(v) for v in legacy}) != 1:
                raise self.error("num, channels, height and width need the same number of values",
                                 "dummy_data_param")
            shapes = [tuple(dims) for dims in zip(*legacy)]
            shapes = shapes * len(top) if len(shapes) == 1 else shapes
        else:
            raise self.error("DummyData needs dummy_data_param.shape", "dummy_data_param.shape")
        if len(shapes) != len(top):
            raise self.error(f"{len(shapes)} shapes for {len(top)} tops", "dummy_data_param")
        fill = p.data_filler or [FILLER_DEFAULT]
        if len(fill) not in (1, len(top)):
            raise self.error(f"give one data_filler or one per top, got {len(fill)}", "dummy_data_param.data_filler")
        self.fillers = fill * len(top) if len(fill) == 1 else fill
        self.refill = [f.type != "constant" for f in self.fillers]
        for blob, shape, filler in zip(top, shapes, self.fillers):
            blob.reshape(shape)
            fillers.fill(blob.data, filler, self.rng)

    def Reshape(self, bottom, top):
        pass

    def Forward_cpu(self, bottom, top):
        for blob, filler, refill in zip(top, self.fillers, self.refill):
            if refill:
                fillers.fill(blob.data, filler, self.rng)


def _default_filler():
    from ..netspec.schema import Where, check_message
    return check_message({}, FILLER.fields, Where())


FILLER_DEFAULT = _default_filler()
