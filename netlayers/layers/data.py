"""Data layers: the sources of a net's blobs (no bottoms, no backward)."""

import dataclasses
import math

import numpy as np

from .. import fillers
from ..errors import DataError, NetlayersError
from ..layer import Layer
from ..netspec import BLOB_SHAPE, FILLER, Enum, Field
from ..registry import register_layer


class SourceLayer(Layer):
    """A layer with no bottoms that produces blobs: nothing flows back through it."""

    num_bottoms = (0, 0)
    num_tops = (1, None)
    has_backward = False

    def Backward_cpu(self, top, propagate_down, bottom):
        pass

    def shard(self, rank, ranks):
        """Data-parallel training: read only rank ``rank``'s share of each batch of ``ranks``
        times the batch size, keeping the position (for the layers whose ``sampler`` feeds a
        ``prefetcher`` that ``_start`` makes: Data, ImageData)."""
        consumed = self.prefetcher.consumed_state
        self.prefetcher.close()
        self.sampler.shard(rank, ranks)
        self.sampler.set_state(consumed)
        self._start()


class PrefetchedSource(SourceLayer):
    """A source layer whose batches (data, labels) a background ``prefetcher`` makes (Data,
    ImageData, WindowData): the forward copies the next batch into the tops (reshaping the data
    top when a batch's items have another size), and the state is the prefetcher's position in
    what the net has consumed."""

    keep_top_data = False

    def Reshape(self, bottom, top):
        pass

    def Forward_cpu(self, bottom, top):
        data, labels = self.prefetcher.next()
        if top[0].shape != data.shape:
            top[0].reshape(data.shape)
        top[0].data[...] = data
        if len(top) > 1:
            top[1].data[...] = labels

    def state(self):
        return dict(self.prefetcher.consumed_state)

    def close(self):
        self.prefetcher.close()


def shapes_of(layer, shapes, count, field):
    """One shape per top: a single given shape serves every top (Caffe's rule)."""
    if len(shapes) not in (1, count):
        raise layer.error(f"give one shape, or one per top ({count}), got {len(shapes)}", field)
    shapes = shapes * count if len(shapes) == 1 else shapes
    return [positive_shape(layer, shape.dim, field) for shape in shapes]


def positive_shape(layer, dims, field):
    """``dims`` as a shape tuple; a dim below 1 (a top with nothing in it) is a ConfigError."""
    if any(d < 1 for d in dims):
        raise layer.error(
            f"every dimension must be at least 1 (a zero-size top leaves nothing to compute), got {list(dims)}", field
        )
    return tuple(dims)


@register_layer("Input")
class Input(SourceLayer):
    """Blobs set from outside (``net.forward(x=...)`` or ``net.source_blobs['x'].data[...] = ...``).
    ``input_param.shape`` gives one shape for all tops or one per top. An input keeps the values
    it was given (a layer asked to run in place on it gets a blob of its own), so forward can
    run again on the same input."""

    example = {
        "tops": 2,
        "params": {"input_param": {"shape": [{"dim": [2, 3]}, {"dim": [2]}]}},
        "top_shapes": [(2, 3), (2,)],
    }

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
    from ``shape`` or the legacy ``num``/``channels``/``height``/``width`` lists.

    Beyond Caffe: ``refill: false`` keeps the first random draw for good, a fixed random data
    set (the lecture's ``x, y = randn(N, D_in), randn(N, D_out)``); ``refill: true`` forces a
    refill every forward. Left out, Caffe's rule applies."""

    example = {
        "tops": 2,
        "params": {
            "dummy_data_param": {
                "shape": [{"dim": [2, 3]}, {"dim": [2]}],
                "data_filler": [{"type": "gaussian"}, {"type": "constant"}],
            }
        },
        "top_shapes": [(2, 3), (2,)],
    }

    params = {
        "data_filler": Field(FILLER, repeated=True),
        "shape": Field(BLOB_SHAPE, repeated=True),
        "num": Field(int, repeated=True, min=1),
        "channels": Field(int, repeated=True, min=1),
        "height": Field(int, repeated=True, min=1),
        "width": Field(int, repeated=True, min=1),
        "refill": Field(bool, None),
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
                raise self.error("num, channels, height and width need the same number of values", "dummy_data_param")
            shapes = [positive_shape(self, dims, "dummy_data_param") for dims in zip(*legacy)]
            shapes = shapes * len(top) if len(shapes) == 1 else shapes
        else:
            raise self.error("DummyData needs dummy_data_param.shape", "dummy_data_param.shape")
        if len(shapes) != len(top):
            raise self.error(f"{len(shapes)} shapes for {len(top)} tops", "dummy_data_param")
        fill = p.data_filler or [FILLER_DEFAULT]
        if len(fill) not in (1, len(top)):
            raise self.error(f"give one data_filler or one per top, got {len(fill)}", "dummy_data_param.data_filler")
        self.fillers = fill * len(top) if len(fill) == 1 else fill
        self.refill = [f.type != "constant" if p.refill is None else p.refill for f in self.fillers]
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


TRANSFORM_PARAM = {
    "scale": Field(float, 1.0),
    "mirror": Field(bool, False),
    "crop_size": Field(int, 0, min=0),
    "mean_value": Field(float, repeated=True),
    "mean_file": Field(str, None),
    "force_color": Field(bool, False),
    "force_gray": Field(bool, False),
}

_DATASET_CACHE = {}


def _load_dataset(source):
    """Load a located source once per process (a TRAIN and a TEST net may share it)."""
    from ..data import load_source

    key = (source.backend, str(source.images_path), str(source.labels_path), source.color)
    try:
        stamp = tuple(p.stat().st_mtime_ns for p in (source.images_path, source.labels_path) if p is not None)
    except OSError:
        stamp = None  # the reader reports what is wrong with the file
    cached = _DATASET_CACHE.get(key)
    if cached is None or cached[0] != stamp:
        cached = (stamp, load_source(source))
        _DATASET_CACHE[key] = cached
    return cached[1]


@register_layer("Data")
class Data(PrefetchedSource):
    """Batches of (data, label) read from a data set, prepared in a background thread.

    ``data_param``: ``source`` (e.g. ``fashion-mnist/train``, looked up next to the config,
    then under ``--data-root``, ``$NETLAYERS_DATA_ROOT``, ``~/.cache/netlayers/datasets`` and
    ``/usr/share/datasets``), ``backend`` IDX (MNIST's format, gzip or raw), NPZ (arrays
    ``data`` and ``label``), or Caffe's LMDB and LEVELDB databases of ``Datum`` records (raw or
    encoded images, read a batch at a time: netlayers/data/databases.py), ``batch_size``,
    ``shuffle`` (a new seeded order every epoch; beyond Caffe, whose Data layer reads in file
    order), ``prefetch`` (batches kept ready). ``transform_param``: Caffe's scale, mean_value,
    mean_file (a .binaryproto mean image), mirror, crop_size, and force_color / force_gray for
    encoded images.

    A batch that runs past the end of the data wraps around to the start, as Caffe's does, so
    a batch larger than the data set works. The position in the data is saved in snapshots.
    """

    example = {
        "tops": 2,
        "params": {
            "data_param": {"source": "fashion-mnist/t10k", "batch_size": 2},
            "transform_param": {"scale": 0.00390625, "crop_size": 24},
        },
        "top_shapes": [(2, 1, 24, 24), (2,)],
    }

    params = {
        "source": Field(str, required=True),
        "batch_size": Field(int, required=True, min=1),
        "backend": Field(Enum("IDX", "NPZ", "LMDB", "LEVELDB"), "IDX"),
        "shuffle": Field(bool, False),
        "prefetch": Field(int, 4, min=0),
        "rand_skip": Field(int, 0, min=0),
    }
    extra_blocks = {"transform_param": TRANSFORM_PARAM}
    num_tops = (1, 2)

    def LayerSetUp(self, bottom, top):
        from ..data import BatchSampler, Prefetcher, Transformer, resolve_source
        from ..data.transform import mean_from_param

        p, t = self.p, self.spec.blocks["transform_param"]
        net = getattr(self, "net", None)
        try:
            located = resolve_source(
                p.source, p.backend, data_root=getattr(net, "data_root", None), base_dir=getattr(net, "base_dir", None)
            )
            located = dataclasses.replace(located, color=True if t.force_color else (False if t.force_gray else None))
            self.inputs, self.labels = _load_dataset(located)
            self.transformer = Transformer(
                scale=t.scale,
                mean_value=t.mean_value,
                mirror=t.mirror,
                crop_size=t.crop_size,
                phase=self.phase,
                mean=mean_from_param(t.mean_file, getattr(net, "base_dir", None)),
            )
            item_shape = self.transformer.output_shape((p.batch_size,) + self.inputs.shape[1:])
        except NetlayersError as err:
            raise err.located(file=self.spec.where.file, line=self.spec.where.line, layer=self.name) from None
        self.source = located
        self.seed = int(getattr(net, "seed", 0) or 0)
        self.top_shapes = [item_shape, (p.batch_size,)]
        self._check_batch_memory()
        self.sampler = BatchSampler(len(self.inputs), p.batch_size, shuffle=p.shuffle, seed=self.seed)
        if p.rand_skip:
            self.sampler.set_state(
                {"epoch": 0, "position": int(self.rng.integers(0, p.rand_skip + 1)) % len(self.inputs)}
            )
        self._prefetcher_class = Prefetcher
        self._start()
        for blob, shape in zip(top, self.top_shapes):
            blob.reshape(shape)

    def _check_batch_memory(self):
        """Refuse, before the prefetch thread allocates any, batches that would not fit in
        memory: the queued ones, the one being made and the one in the tops."""
        from ..memory import check_size

        batches = max(1, self.p.prefetch) + 2
        itemsize = np.dtype(self.dtype).itemsize
        batch_bytes = (math.prod(self.top_shapes[0]) + self.p.batch_size) * itemsize
        try:
            check_size(
                batches * batch_bytes,
                f"batch_size {self.p.batch_size} ({batches} batches "
                f"of shape {self.top_shapes[0]}, prefetched and in use)",
            )
        except NetlayersError as err:
            raise err.located(layer=self.name, field="data_param.batch_size") from None

    def _start(self):
        from ..data import weakly

        self.prefetcher = self._prefetcher_class(
            weakly(self._produce), depth=max(1, self.p.prefetch), state=self.sampler.state
        )

    def _produce(self):
        state = self.sampler.state()
        index = self.sampler.next()
        # The random crop/mirror draws depend only on the batch's place in the data, so a
        # resumed run transforms each batch exactly as an uninterrupted one would.
        rng = (
            np.random.default_rng([self.seed, state["epoch"], state["position"]])
            if self.transformer.is_random
            else None
        )
        data = self.transformer.transform(self.inputs[index], rng, out=np.empty(self.top_shapes[0], self.dtype))
        return data, self.labels[index].astype(self.dtype)

    def set_state(self, state):
        """Continue from a snapshot's data position. A state that does not fit the data set as
        it is now (it shrank since the snapshot, or the state is damaged) is a one-line
        DataError naming the layer, raised before anything changes."""
        from ..data.batches import checked_state

        try:
            epoch, position = checked_state(state, self.sampler.num_items, str(self.source.images_path))
        except ValueError as err:
            raise DataError(f"snapshot's {err}", layer=self.name) from None
        self.prefetcher.close()
        self.sampler.set_state({"epoch": epoch, "position": position})
        self._start()


@register_layer("MemoryData")
class MemoryData(SourceLayer):
    """Batches served from arrays given in Python: ``net.set_input_arrays(data, labels)``.

    ``memory_data_param``: batch_size, channels, height, width (the shape of one item). The
    batches go through the arrays in order and wrap around; the number of items must be a
    multiple of batch_size (as in Caffe).
    """

    example = {
        "tops": 2,
        "params": {"memory_data_param": {"batch_size": 2, "channels": 1, "height": 3, "width": 3}},
        "top_shapes": [(2, 1, 3, 3), (2,)],
    }

    keep_top_data = False

    params = {
        "batch_size": Field(int, required=True, min=1),
        "channels": Field(int, required=True, min=1),
        "height": Field(int, required=True, min=1),
        "width": Field(int, required=True, min=1),
    }
    # No transform_param: arrays given from Python are served as they are (Caffe's Reset() does
    # not transform them either, with a warning); accepting the block would ignore it silently.
    num_tops = (1, 2)

    def LayerSetUp(self, bottom, top):
        p = self.p
        self.item_shape = (p.channels, p.height, p.width)
        self.data = None
        self.position = 0
        top[0].reshape((p.batch_size,) + self.item_shape)
        if len(top) > 1:
            top[1].reshape((p.batch_size,))

    def reset(self, data, labels):
        """Serve batches from ``data`` (N, C, H, W) and ``labels`` (N,) from now on."""
        data, labels = np.asarray(data), np.asarray(labels)
        n = self.p.batch_size
        for what, array in (("data", data), ("labels", labels)):
            if array.dtype.kind not in "biuf":  # strings, objects, complex: no silent cast
                raise self.error(f"{what} must hold real numbers, got an array of dtype {array.dtype}")
        if labels.ndim != 1:
            raise self.error(f"labels must be a 1-D array (one label per item), got shape {labels.shape}")
        if data.shape[1:] != self.item_shape:
            raise self.error(f"arrays of items shaped {data.shape[1:]} given, the layer expects {self.item_shape}")
        if len(data) != len(labels):
            raise self.error(f"{len(data)} items but {len(labels)} labels")
        if len(data) == 0 or len(data) % n:
            raise self.error(f"the number of items ({len(data)}) must be a positive multiple of batch_size ({n})")
        self.data, self.labels, self.position = data, labels, 0

    def Reshape(self, bottom, top):
        pass

    def Forward_cpu(self, bottom, top):
        if self.data is None:
            raise NetlayersError("no arrays given yet: call net.set_input_arrays(data, labels)", layer=self.name)
        n = self.p.batch_size
        top[0].data[...] = self.data[self.position : self.position + n]
        if len(top) > 1:
            top[1].data[...] = self.labels[self.position : self.position + n]
        self.position = (self.position + n) % len(self.data)

    def state(self):
        return {"position": self.position}

    def set_state(self, state):
        """Continue from a snapshot's position: a multiple of batch_size, inside the arrays
        when they are given already; anything else is a one-line DataError."""
        position = state.get("position") if isinstance(state, dict) and len(state) == 1 else None
        n = self.p.batch_size
        if isinstance(position, bool) or not isinstance(position, int) or position < 0 or position % n:
            raise DataError(
                f"snapshot's data state {state!r:.60} is not {{'position': p}} with p a multiple of batch_size ({n})",
                layer=self.name,
            )
        if self.data is not None and position >= len(self.data):
            raise DataError(
                f"snapshot's data position {position} is past the {len(self.data)} "
                "items given; the arrays changed since the snapshot",
                layer=self.name,
            )
        self.position = position
