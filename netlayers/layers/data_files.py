"""Caffe's data layers that read files as Caffe users hold them: HDF5Data, HDF5Output,
ImageData and WindowData (the formats: ``netlayers/data/hdf5.py``, ``images.py``,
``windows.py``).

Relative paths are opened as Caffe opens them, from the working folder; a config's ``source``
and ``mean_file`` are then also looked for in the config's folder, and the files a list names in
the list's folder. h5py (extra ``hdf5``) and Pillow (extra ``image``) are imported when used.
"""

import os
import tempfile
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..layer import Layer
from ..netspec import Enum, Field, rule_error
from ..registry import register_layer
from .data import TRANSFORM_PARAM, PrefetchedSource, SourceLayer

_FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "data_files"
_PREFETCH = 4  # batches kept ready, Caffe's PREFETCH_COUNT

#: Fields Caffe kept in the image and window data params from before ``transform_param``.
LEGACY_TRANSFORM = {
    "scale": Field(float, 1.0),
    "mean_file": Field(str, None),
    "crop_size": Field(int, 0, min=0),
    "mirror": Field(bool, False),
}
_UNSET = {"scale": 1.0, "mean_file": None, "crop_size": 0, "mirror": False}


def _example_path(name):
    """A file of the contract harness's examples (the repository's test fixtures)."""
    return str(_FIXTURES / name)


class FileSourceLayer(SourceLayer):
    """A data layer reading files a config names: finds them and locates its errors."""

    keep_top_data = False

    @property
    def base_dir(self):
        """The config's folder (None for a layer built outside a net)."""
        return getattr(getattr(self, "net", None), "base_dir", None)

    @property
    def seed(self):
        return int(getattr(getattr(self, "net", None), "seed", 0) or 0)

    def find(self, name, what, field):
        """The file a config names, relative to the working folder, else the config's."""
        from ..data.listfiles import find_config_file

        try:
            return find_config_file(name, self.base_dir, what)
        except DataError as err:
            raise err.located(field=field) from None

    def transform_fields(self):
        """scale, crop_size, mirror and mean_file, from ``transform_param`` or this layer's own
        block, where Caffe's older files keep them; both blocks giving a field differently is a
        ConfigError."""
        own, given = self.p, self.spec.blocks["transform_param"]
        merged = {}
        for name, unset in _UNSET.items():
            mine, theirs = own[name], given[name]
            if mine != unset and theirs != unset and mine != theirs:
                raise self.error(
                    f"transform_param.{name} is {theirs!r} and {block_of(self)}.{name} is {mine!r}: give it once",
                    f"{block_of(self)}.{name}",
                )
            merged[name] = theirs if theirs != unset else mine
        return merged

    def transformer(self, fields):
        """Caffe's DataTransformer for ``fields`` (see :meth:`transform_fields`) and
        ``transform_param.mean_value``."""
        from ..data import Transformer
        from ..data.transform import mean_from_param

        mean_value = self.spec.blocks["transform_param"].mean_value
        return Transformer(
            scale=fields["scale"],
            mean_value=mean_value,
            mirror=fields["mirror"],
            crop_size=fields["crop_size"],
            phase=self.phase,
            mean=mean_from_param(fields["mean_file"], self.base_dir),
        )


def block_of(layer):
    """The name of a layer's own parameter block (``image_data_param``)."""
    from ..layer import block_name

    return block_name(layer.type)


# -- HDF5 -----------------------------------------------------------------------------------------
@register_layer("HDF5Data")
class HDF5Data(FileSourceLayer):
    """Rows of the HDF5 files listed in ``hdf5_data_param.source``, one top per dataset: each
    top reads the dataset named as the top, ``batch_size`` rows at a time (any number of tops,
    any shape: a top is ``(batch_size,) + dataset.shape[1:]``). Caffe 1.0's order: files in
    list order, rows in order, wrapping around; ``shuffle`` draws a new file order every pass
    and a new row order every visit of a file (seeded here, and resumed exactly from
    snapshots). No transformation, as in Caffe."""

    example = {
        "tops": 2,
        "params": {"hdf5_data_param": {"source": _example_path("hdf5_list.txt"), "batch_size": 3, "shuffle": True}},
        "top_shapes": [(3, 2, 3), (3,)],
    }

    params = {
        "source": Field(str, required=True),
        "batch_size": Field(int, required=True, min=1),
        "shuffle": Field(bool, False),
    }

    def LayerSetUp(self, bottom, top):
        from ..data.hdf5 import HDF5Rows, dataset_shapes, read_hdf5_list

        list_path = self.find(self.p.source, "HDF5 list file", "hdf5_data_param.source")
        files = read_hdf5_list(list_path)
        names = list(self.spec.tops)
        row_shapes = None
        for path in files:
            shapes = [shape[1:] for shape in dataset_shapes(path, names).values()]
            if row_shapes is not None and shapes != row_shapes:
                raise DataError(
                    f"data file {path}: rows of shapes {shapes} for tops {names}, the first listed "
                    f"file's are {row_shapes}: every listed file must have the same row shapes"
                )
            row_shapes = shapes
        self.rows = HDF5Rows(files, names, row_shapes, shuffle=self.p.shuffle, seed=self.seed, dtype=self.dtype)
        for blob, shape in zip(top, row_shapes):
            blob.reshape((self.p.batch_size,) + shape)

    def Reshape(self, bottom, top):
        pass

    def Forward_cpu(self, bottom, top):
        if self.ranks == 1:
            self.rows.fill([blob.data for blob in top])
            return
        batch = self.p.batch_size  # data-parallel: read the ranks' whole batch, keep this rank's part
        if self._whole is None:
            self._whole = [np.empty((batch * self.ranks,) + blob.shape[1:], blob.dtype) for blob in top]
        self.rows.fill(self._whole)
        for blob, whole in zip(top, self._whole):
            blob.data[...] = whole[self.rank * batch : (self.rank + 1) * batch]

    rank, ranks, _whole = 0, 1, None

    def shard(self, rank, ranks):
        """Data-parallel training: each batch of ``ranks`` x batch_size rows in Caffe's order is
        read by every rank, which keeps its ``rank``-th share (the position stays the same on
        every rank, so a snapshot holds them all)."""
        self.rank, self.ranks, self._whole = int(rank), int(ranks), None

    def state(self):
        return self.rows.state()

    def set_state(self, state):
        """Continue from a snapshot's position; one that does not fit the files as they are now
        is a one-line DataError naming the layer, changing nothing."""
        try:
            self.rows.set_state(state)
        except ValueError as err:
            raise DataError(f"snapshot's {err}", layer=self.name) from None


@register_layer("HDF5Output")
class HDF5Output(Layer):
    """Writes its two bottoms to ``hdf5_output_param.file_name`` as the datasets ``data`` and
    ``label``, as Caffe does: the file is created (emptied) at setup, the bottoms are written
    with Caffe's 4-axis shapes (``(N, C, H, W)``, missing axes as 1: a label (N,) is written
    (N, 1, 1, 1)). Caffe can write one batch only (a second forward fails); here every later
    forward appends its rows to the two datasets. No tops, no gradient."""

    example = {  # a file of this process's own: test runs side by side must not share one
        "bottoms": [(2, 3), (2,)],
        "tops": 0,
        "params": {
            "hdf5_output_param": {"file_name": os.path.join(tempfile.gettempdir(), f"netlayers-{os.getpid()}.h5")}
        },
    }

    params = {"file_name": Field(str, required=True)}
    num_bottoms = (2, 2)
    num_tops = (0, 0)
    has_backward = False

    def LayerSetUp(self, bottom, top):
        from ..data.hdf5 import create_output

        try:
            create_output(self.p.file_name)
        except DataError as err:
            raise err.located(field="hdf5_output_param.file_name") from None

    def Reshape(self, bottom, top):
        if bottom[0].shape[:1] != bottom[1].shape[:1]:
            raise self.error(f"data and label need the same batch size, got {bottom[0].shape} and {bottom[1].shape}")

    def Forward_cpu(self, bottom, top):
        from ..data.hdf5 import append_output

        append_output(self.p.file_name, [_four_axes(blob.data) for blob in bottom])

    def Backward_cpu(self, top, propagate_down, bottom):
        pass


def _four_axes(array):
    """``array`` with axes of size 1 added up to 4, as Caffe's legacy blob shape has them."""
    return array.reshape(array.shape + (1,) * (4 - array.ndim)) if array.ndim < 4 else array


# -- images ---------------------------------------------------------------------------------------
@register_layer("ImageData")
class ImageData(FileSourceLayer, PrefetchedSource):
    """Batches of images and labels from an image list (``path label`` per line, Caffe's
    ``convert_imageset`` format), read with Pillow in a background thread.

    ``image_data_param``: source, root_folder (put before each path, as Caffe joins them),
    new_height/new_width (resize, OpenCV's bilinear), is_color (BGR, channel 0 blue, as Caffe's
    OpenCV reads images; else grey), shuffle (a new seeded order every epoch), batch_size,
    rand_skip (start at a random line below it). ``transform_param``: Caffe's scale,
    mean_value or mean_file, crop_size, mirror. A batch's shape is its first image's (images of
    other sizes need crop_size, or new_height/new_width); the position is kept in snapshots.
    """

    example = {
        "tops": 2,
        "params": {
            "image_data_param": {"source": _example_path("images.txt"), "batch_size": 3, "shuffle": True},
            "transform_param": {"scale": 0.00390625, "crop_size": 4, "mirror": True},
        },
        "top_shapes": [(3, 3, 4, 4), (3,)],
    }

    params = {
        "source": Field(str, required=True),
        "batch_size": Field(int, 1, min=1),
        "rand_skip": Field(int, 0, min=0),
        "shuffle": Field(bool, False),
        "new_height": Field(int, 0, min=0),
        "new_width": Field(int, 0, min=0),
        "is_color": Field(bool, True),
        "root_folder": Field(str, ""),
        **LEGACY_TRANSFORM,
    }
    extra_blocks = {"transform_param": TRANSFORM_PARAM}
    num_tops = (1, 2)

    @classmethod
    def check_params(cls, p):
        if (p.new_height > 0) != (p.new_width > 0):
            raise rule_error("new_height", "give new_height and new_width together (or neither), as Caffe requires")

    def LayerSetUp(self, bottom, top):
        from ..data import BatchSampler
        from ..data.images import read_image_list

        p = self.p
        self.list_path = self.find(p.source, "image list file", "image_data_param.source")
        self.entries = read_image_list(self.list_path)
        self.transformer_ = self.transformer(self.transform_fields())
        self.sampler = BatchSampler(len(self.entries), p.batch_size, shuffle=p.shuffle, seed=self.seed)
        if p.rand_skip:
            skip = int(self.rng.integers(0, p.rand_skip)) % len(self.entries)
            self.sampler.set_state({"epoch": 0, "position": skip})
        first = self._image(int(self.sampler.epoch_order(0)[self.sampler.position]))
        self.top_shapes = [self.transformer_.output_shape((p.batch_size,) + first.shape), (p.batch_size,)]
        self._start()
        for blob, shape in zip(top, self.top_shapes):
            blob.reshape(shape)

    def _image(self, index):
        """Image ``index`` of the list, uint8 (C, H, W); errors name the list file and line."""
        from ..data.images import read_image
        from ..data.listfiles import locate, where_looked

        name, _, line = self.entries[index]
        path = self.p.root_folder + name
        found = locate(path, self.list_path.parent)
        try:
            if found is None:
                raise DataError(f"no such image file ({where_looked(path, self.list_path.parent)})")
            return read_image(found, self.p.is_color, self.p.new_height, self.p.new_width)
        except DataError as err:
            raise DataError(f"image '{path}': {err.message}", file=str(self.list_path), line=line) from None

    def _start(self):
        from ..data import Prefetcher, weakly

        self.prefetcher = Prefetcher(weakly(self._produce), depth=_PREFETCH, state=self.sampler.state)

    def _produce(self):
        state = self.sampler.state()
        index = self.sampler.next()
        # Random crops and flips depend only on the batch's place, so a resumed run repeats them.
        rng = (
            np.random.default_rng([self.seed, state["epoch"], state["position"]])
            if self.transformer_.is_random
            else None
        )
        images = [self._image(int(i)) for i in index]
        out = np.empty(self.transformer_.output_shape((len(images),) + images[0].shape), self.dtype)
        if all(image.shape == images[0].shape for image in images):
            self.transformer_.transform(np.stack(images), rng, out=out)
        elif self.transformer_.crop_size:
            for i, image in enumerate(images):
                self.transformer_.transform(image[np.newaxis], rng, out=out[i : i + 1])
        else:
            self._refuse_sizes(index, images)
        labels = np.array([self.entries[int(i)][1] for i in index], dtype=self.dtype)
        return out, labels

    def _refuse_sizes(self, index, images):
        odd = next(i for i, image in enumerate(images) if image.shape != images[0].shape)
        name, _, line = self.entries[int(index[odd])]
        raise DataError(
            f"image '{name}' is {images[odd].shape[1:]} (H, W), the first of its batch "
            f"{images[0].shape[1:]}: a batch's images must have one size (set new_height and "
            "new_width, or crop_size)",
            file=str(self.list_path),
            line=line,
        )

    def set_state(self, state):
        """Continue from a snapshot's position in the list; one that does not fit the list as
        it is now is a one-line DataError naming the layer, changing nothing."""
        from ..data.batches import checked_state

        try:
            epoch, position = checked_state(state, len(self.entries), str(self.list_path))
        except ValueError as err:
            raise DataError(f"snapshot's {err}", layer=self.name) from None
        self.prefetcher.close()
        self.sampler.set_state({"epoch": epoch, "position": position})
        self._start()


@register_layer("WindowData")
class WindowData(FileSourceLayer, PrefetchedSource):
    """R-CNN's windows: each batch draws ``batch_size - int(batch_size * fg_fraction)``
    background windows, then the rest foreground ones, uniformly with replacement (seeded),
    warps each to ``crop_size`` squares (see ``netlayers/data/windows.py``: context_pad,
    crop_mode warp or square, mirror) and subtracts the mean, then scales: top 0 is (N, 3,
    crop_size, crop_size) BGR, top 1 the windows' classes (0 for background).

    The mean: a ``mean_value`` per channel, or a mean image (``mean_file``) whose centre
    ``crop_size`` square is subtracted where the window lands (the padding stays 0), as Caffe
    does. ``window_data_param``: source (the window file), root_folder, fg_threshold,
    bg_threshold, fg_fraction, context_pad, crop_mode, cache_images (keep the image files in
    memory), batch_size, scale. crop_size, mirror and mean_file are read from
    ``transform_param`` (Caffe 1.0's place; older files keep them, and scale, in
    ``window_data_param``: both places are read).
    """

    example = {
        "tops": 2,
        "params": {
            "window_data_param": {
                "source": _example_path("windows.txt"),
                "batch_size": 4,
                "context_pad": 1,
                "fg_fraction": 0.5,
            },
            "transform_param": {"crop_size": 5, "mirror": True, "mean_value": [100, 110, 120]},
        },
        "top_shapes": [(4, 3, 5, 5), (4,)],
    }

    params = {
        "source": Field(str, required=True),
        "batch_size": Field(int, required=True, min=1),
        "fg_threshold": Field(float, 0.5),
        "bg_threshold": Field(float, 0.5),
        "fg_fraction": Field(float, 0.25, min=0, max=1),
        "context_pad": Field(int, 0, min=0),
        "crop_mode": Field(Enum("warp", "square"), "warp"),
        "cache_images": Field(bool, False),
        "root_folder": Field(str, ""),
        **LEGACY_TRANSFORM,
    }
    extra_blocks = {"transform_param": TRANSFORM_PARAM}
    num_tops = (1, 2)

    def LayerSetUp(self, bottom, top):
        from ..data.windows import read_window_file

        p = self.p
        fields = self.transform_fields()
        self.crop_size, self.mirror, self.scale = fields["crop_size"], fields["mirror"], fields["scale"]
        if self.crop_size < 1:
            raise self.error(
                "WindowData needs a crop_size (the side of its square windows)", "transform_param.crop_size"
            )
        if 2 * p.context_pad >= self.crop_size:
            raise self.error(
                f"context_pad {p.context_pad} leaves nothing of a {self.crop_size} crop: "
                "2 context_pad < crop_size expected",
                "window_data_param.context_pad",
            )
        self.window_path = self.find(p.source, "window file", "window_data_param.source")
        self.windows = read_window_file(self.window_path, p.root_folder, p.fg_threshold, p.bg_threshold)
        self.num_fg = int(np.float32(p.batch_size) * np.float32(p.fg_fraction))
        self._check_pools()
        self.mean = self._mean(fields)
        self.cache = {i: self._file_bytes(i) for i in range(len(self.windows.images))} if p.cache_images else None
        self._start(0)
        top[0].reshape((p.batch_size, 3, self.crop_size, self.crop_size))
        if len(top) > 1:
            top[1].reshape((p.batch_size,))

    def _check_pools(self):
        for name, pool, count, rule in (
            ("foreground", self.windows.foreground, self.num_fg, f"overlap >= fg_threshold {self.p.fg_threshold:g}"),
            (
                "background",
                self.windows.background,
                self.p.batch_size - self.num_fg,
                f"overlap < bg_threshold {self.p.bg_threshold:g}",
            ),
        ):
            if count and not len(pool):
                raise DataError(
                    f"has no {name} windows ({rule}) to draw {count} per batch from", file=str(self.window_path)
                )

    def _mean(self, fields):
        """What each warped window has subtracted at each place of the crop square, a (3,
        crop, crop) array: the centre of the mean image (as Caffe takes it) or the mean values;
        None without a mean."""
        from ..data.transform import mean_from_param

        mean_value = self.spec.blocks["transform_param"].mean_value
        image = mean_from_param(fields["mean_file"], self.base_dir)
        if image is not None and mean_value:
            raise self.error("give mean_file or mean_value, not both (Caffe refuses both)", "transform_param.mean_file")
        if mean_value:
            if len(mean_value) not in (1, 3):
                raise self.error(
                    f"give one mean_value or 3 (B, G, R), got {len(mean_value)}", "transform_param.mean_value"
                )
            values = np.broadcast_to(np.asarray(mean_value, np.float32), (3,))
            return np.broadcast_to(values[:, None, None], (3, self.crop_size, self.crop_size))
        if image is None:
            return None
        offset = (image.shape[2] - self.crop_size) // 2  # Caffe takes the width's offset for both axes
        if image.shape[0] != 3 or offset < 0 or offset + self.crop_size > image.shape[1]:
            raise self.error(
                f"the mean image is {image.shape} (C, H, W); WindowData needs 3 channels and at "
                f"least {self.crop_size}x{self.crop_size} pixels",
                "transform_param.mean_file",
            )
        return image[:, offset : offset + self.crop_size, offset : offset + self.crop_size]

    def _file_bytes(self, index):
        path, _, _, line = self.windows.images[index]
        try:
            return Path(path).read_bytes()
        except OSError as err:
            raise DataError(
                f"cannot read image '{path}': {err.strerror or err}", file=str(self.window_path), line=line
            ) from None

    def _image(self, index):
        """Image ``index`` of the window file as uint8 BGR (3, H, W) of its header's size."""
        from ..data.images import read_image

        path, height, width, line = self.windows.images[index]
        try:
            image = read_image(self.cache[index] if self.cache is not None else path, is_color=True)
        except DataError as err:
            raise DataError(f"image '{path}': {err.message}", file=str(self.window_path), line=line) from None
        if image.shape[1:] != (height, width):
            raise DataError(
                f"image '{path}' is {image.shape[1]}x{image.shape[2]} (H x W), the window file says {height}x{width}",
                file=str(self.window_path),
                line=line,
            )
        return image

    rank, ranks = 0, 1

    def shard(self, rank, ranks):
        """Data-parallel training: each rank draws its own windows for batch n (from the seed,
        n and its rank), as each solver's data layer of Caffe's multi-GPU training does: K
        ranks sample as one process with K times the batch in distribution, not window for
        window."""
        made = self.prefetcher.consumed_state["batch"]
        self.prefetcher.close()
        self.rank, self.ranks = int(rank), int(ranks)
        self._start(made)

    def _start(self, made):
        """Prefetch from batch number ``made`` on; the count belongs to this prefetcher alone,
        so a worker still finishing after a restart changes nothing."""
        from ..data import Prefetcher, weakly

        position = {"batch": made}
        batch = weakly(self._batch)

        def produce():
            number = position["batch"]
            position["batch"] = number + 1
            return batch(number)

        self.prefetcher = Prefetcher(produce, depth=_PREFETCH, state=lambda: dict(position))

    def _batch(self, number):
        """Batch ``number``: its windows, flips and so its values come from (seed, number)."""
        from ..data.windows import IMAGE, LABEL, X1, warp_window

        p, crop = self.p, self.crop_size
        rng = np.random.default_rng([self.seed, number, *((self.ranks, self.rank) if self.ranks > 1 else ())])
        data = np.zeros((p.batch_size, 3, crop, crop), self.dtype)
        labels = np.empty(p.batch_size, self.dtype)
        pools = [self.windows.background] * (p.batch_size - self.num_fg) + [self.windows.foreground] * self.num_fg
        for item, pool in enumerate(pools):
            window = pool[rng.integers(len(pool))]
            flip = bool(self.mirror and rng.integers(2))
            image = self._image(int(window[IMAGE]))
            patch, pad_h, pad_w = warp_window(image, window[X1:], crop, p.context_pad, p.crop_mode == "square", flip)
            rows, cols = slice(pad_h, pad_h + patch.shape[1]), slice(pad_w, pad_w + patch.shape[2])
            region = data[item, :, rows, cols]
            region[...] = patch
            if self.mean is not None:
                region -= self.mean[:, rows, cols]
            if self.scale != 1.0:
                region *= self.dtype.type(self.scale)
            labels[item] = window[LABEL]
        return data, labels

    def set_state(self, state):
        """Continue from a snapshot's batch count; anything but ``{"batch": n}`` with n >= 0
        is a one-line DataError naming the layer."""
        made = state.get("batch") if isinstance(state, dict) and set(state) == {"batch"} else None
        if isinstance(made, bool) or not isinstance(made, int) or made < 0:
            raise DataError(f"snapshot's data state {state!r:.60} is not {{'batch': n}} with n >= 0", layer=self.name)
        self.prefetcher.close()
        self._start(made)
