"""Caffe's ``TransformationParameter`` for a batch of inputs: crop, mirror, mean, scale.

Caffe (``DataTransformer::Transform``) computes, for every image and channel ``c``::

    out[c, h, w] = (in[c, h_off + h, w_off + w'] - mean_value[c]) * scale

where ``w' = crop - 1 - w`` when the image is mirrored and ``w`` otherwise. A mean image
(``mean_file``, a (C, H, W) array of the inputs' size) takes the place of ``mean_value``:
``out[c, h, w] = (in[c, h_off + h, w_off + w'] - mean[c, h_off + h, w_off + w']) * scale``, the
mean cropped (and mirrored) with the image; ``mean_file`` and ``mean_value`` exclude each
other, as in Caffe. With
``crop_size`` set, the offsets are drawn uniformly from ``0 .. H - crop_size`` (inclusive) in
TRAIN and are ``(H - crop_size) // 2`` (centred) in TEST. One ``mean_value`` applies to every
channel; otherwise there must be one per channel.

As in Caffe, ``mirror`` flips each image with probability 1/2 in TEST as well as in TRAIN.
"""

from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from netlayers.errors import ConfigError, DataError
from netlayers.kernels import convert

PHASES = ("TRAIN", "TEST")


class Transformer:
    """Applies crop, mirror, mean subtraction and scaling to batches, writing float output.

    Random draws (TRAIN only) come from the ``rng`` (a ``numpy.random.Generator``) passed to
    :meth:`transform`, in this order: all vertical offsets, all horizontal offsets (when
    cropping), then the mirror flags (when mirroring); so equal generators give equal output.
    """

    def __init__(self, scale=1.0, mean_value=(), mirror=False, crop_size=0, phase="TRAIN", mean=None):
        self.scale = float(scale)
        self.mean_value = _as_mean_values(mean_value)
        self.mean = _as_mean_image(mean)
        if self.mean is not None and self.mean_value:
            raise ConfigError(
                "give mean_file or mean_value, not both (Caffe refuses both)", field="transform_param.mean_file"
            )
        self.mirror = bool(mirror)
        self.crop_size = _as_crop_size(crop_size)
        self.phase = _as_phase(phase)

    def __repr__(self):
        return (
            f"Transformer(scale={self.scale}, mean_value={self.mean_value}, "
            f"mirror={self.mirror}, crop_size={self.crop_size}, phase={self.phase!r}"
            + ("" if self.mean is None else f", mean of shape {self.mean.shape}")
            + ")"
        )

    @property
    def is_identity(self):
        """True if :meth:`transform` only converts to float (nothing to crop, flip or shift)."""
        return (
            self.scale == 1.0 and not self.mean_value and self.mean is None and not self.crop_size and not self.mirror
        )

    @property
    def is_random(self):
        """True if :meth:`transform` draws from its ``rng`` (mirroring, or a crop in TRAIN)."""
        return self.mirror or (bool(self.crop_size) and self.phase == "TRAIN")

    def output_shape(self, input_shape):
        """The shape :meth:`transform` writes for a batch of ``input_shape``.

        (N, C, H, W) -> (N, C, crop, crop) when ``crop_size`` is set, else unchanged.
        (N, D) -> (N, D); only ``scale`` and a single ``mean_value`` are allowed then.
        Impossible settings for this shape raise DataError naming the field.
        """
        shape = tuple(int(d) for d in input_shape)
        if len(shape) == 2:
            self._check_flat()
            return shape
        if len(shape) != 4:
            raise DataError(f"expected inputs of shape (N, C, H, W) or (N, D), found {shape}")
        n, c, h, w = shape
        self._means_for(c)
        if self.mean is not None and self.mean.shape != (c, h, w):
            raise DataError(
                f"the mean image has shape {self.mean.shape}, the inputs (C, H, W) {(c, h, w)}: "
                "a mean file must be of the images' size (before cropping)",
                field="transform_param.mean_file",
            )
        if self.crop_size:
            if self.crop_size > h or self.crop_size > w:
                raise DataError(
                    f"crop_size {self.crop_size} is larger than the {h}x{w} images (input shape {shape})",
                    field="crop_size",
                )
            return (n, c, self.crop_size, self.crop_size)
        return shape

    def transform(self, batch, rng=None, out=None):
        """Transform ``batch`` (any numeric dtype) into ``out`` (float32/float64) and return it.

        ``out`` must have shape :meth:`output_shape` of ``batch.shape``; when None a float32
        array is allocated. ``rng`` is needed only for random crops or mirroring in TRAIN.
        """
        batch = np.asarray(batch)
        shape = self.output_shape(batch.shape)
        out = _check_out(out, shape)
        if self.mean is not None:
            batch = self._minus_mean_image(batch, out.dtype)
        if (
            not self.crop_size
            and not self.mirror
            and out.size
            and out.flags.c_contiguous
            and (batch.dtype.kind in "ui" or batch.dtype in (np.float32, np.float64))
        ):
            self._convert(batch, out)
            return out
        if batch.ndim == 2:
            np.copyto(out, batch, casting="unsafe")
        else:
            self._crop_and_mirror(batch, rng, out)
        self._normalize(out)
        return out

    # -- pieces ---------------------------------------------------------------------------

    def _convert(self, batch, out):
        """Without crop or mirror: cast, subtract the mean and scale in one pass (a numba
        kernel, the same roundings as the separate numpy steps of :meth:`_normalize`)."""
        n = batch.shape[0]
        channels = batch.shape[1] if batch.ndim == 4 else 1
        means = (
            self._means_for(channels)
            if batch.ndim == 4
            else (np.asarray(self.mean_value[:1], dtype=np.float64) if self.mean_value else None)
        )
        if means is not None:
            means = means.reshape(channels).astype(out.dtype)
        convert.shift_scale(
            np.ascontiguousarray(batch).reshape(n, channels, -1), means, self.scale, out.reshape(n, channels, -1)
        )

    def _minus_mean_image(self, batch, dtype):
        """``batch - mean`` in ``dtype`` (each pixel minus the mean at its place, rounded as
        Caffe's ``(pixel - mean) * scale`` rounds), before any crop or flip."""
        shifted = batch.astype(dtype)
        shifted -= self.mean.astype(dtype)
        return shifted

    def _check_flat(self):
        """(N, D) inputs have no channels or pixels to crop or flip."""
        if self.mean is not None:
            raise DataError("mean_file needs (N, C, H, W) inputs, found (N, D)", field="transform_param.mean_file")
        if self.crop_size:
            raise DataError("crop_size needs (N, C, H, W) inputs, found (N, D)", field="crop_size")
        if self.mirror:
            raise DataError("mirror needs (N, C, H, W) inputs, found (N, D)", field="mirror")
        if len(self.mean_value) > 1:
            raise DataError(
                f"(N, D) inputs take one mean_value, found {len(self.mean_value)}",
                field="mean_value",
            )

    def _means_for(self, channels):
        """The per-channel means as a (C, 1, 1) array, or None when there is no mean."""
        if not self.mean_value:
            return None
        if len(self.mean_value) not in (1, channels):
            raise DataError(
                f"give one mean_value or one per channel ({channels}), found {len(self.mean_value)}",
                field="mean_value",
            )
        means = np.broadcast_to(np.asarray(self.mean_value, dtype=np.float64), (channels,))
        return means.reshape(channels, 1, 1)

    def _offsets(self, n, size, rng):
        """Crop offsets along an axis of ``size`` pixels for ``n`` images (Caffe's rules)."""
        if not self.crop_size:
            return np.zeros(n, dtype=np.intp)
        room = size - self.crop_size
        if self.phase == "TRAIN":
            _need_rng(rng, "a random crop")
            return rng.integers(0, room + 1, size=n).astype(np.intp)
        return np.full(n, room // 2, dtype=np.intp)

    def _flips(self, n, rng):
        """Per-image mirror flags: a fair coin per image, in TRAIN and in TEST alike (Caffe's
        DataTransformer mirrors at random whenever ``mirror`` is set, whatever the phase)."""
        if not self.mirror:
            return np.zeros(n, dtype=bool)
        _need_rng(rng, "random mirroring")
        return rng.integers(0, 2, size=n).astype(bool)

    def _crop_and_mirror(self, batch, rng, out):
        """Copy the (cropped, possibly mirrored) pixels of ``batch`` into ``out`` as floats."""
        n, _, h, w = batch.shape
        oh, ow = out.shape[2:]
        h_off = self._offsets(n, h, rng)
        w_off = self._offsets(n, w, rng)
        flips = self._flips(n, rng)
        if not self.mirror and (self.phase == "TEST" or not self.crop_size):
            # Same window for every image: plain slicing.
            y, x = (int(h_off[0]), int(w_off[0])) if n else (0, 0)
            np.copyto(out, batch[:, :, y : y + oh, x : x + ow], casting="unsafe")
            return
        _gather_windows(batch, h_off, w_off, flips, out)

    def _normalize(self, out):
        """Subtract the mean and multiply by the scale, in place, in ``out``'s precision."""
        means = self._means_for(out.shape[1]) if out.ndim == 4 else None
        if out.ndim == 2 and self.mean_value:
            out -= out.dtype.type(self.mean_value[0])
        elif means is not None:
            out -= means.astype(out.dtype)
        if self.scale != 1.0:
            out *= out.dtype.type(self.scale)


def _gather_windows(batch, h_off, w_off, flips, out):
    """out[i] = batch[i, :, h_off[i]:+oh, w_off[i]:+ow], flipped left-right where flips[i].

    Vectorised over the images: ``sliding_window_view`` exposes every window without
    copying, and one advanced index per group picks each image's window, copying whole
    rows at a time. A mirrored window at ``w_off`` is the window at ``W - ow - w_off`` of the
    left-right reversed batch.
    """
    oh, ow = out.shape[2:]
    width = batch.shape[3]
    keep, flip = np.flatnonzero(~flips), np.flatnonzero(flips)
    if keep.size:
        windows = sliding_window_view(batch, (oh, ow), axis=(2, 3))
        out[keep] = windows[keep, :, h_off[keep], w_off[keep]]
    if flip.size:
        mirrored = sliding_window_view(batch[..., ::-1], (oh, ow), axis=(2, 3))
        out[flip] = mirrored[flip, :, h_off[flip], width - ow - w_off[flip]]


def _need_rng(rng, what):
    """TRAIN-phase randomness needs a generator; say so plainly when it is missing."""
    if rng is None:
        raise ValueError(f"Transformer needs an rng (numpy Generator) for {what} in TRAIN")


def _check_out(out, shape):
    """Allocate float32 output, or check that the given ``out`` fits."""
    if out is None:
        return np.empty(shape, dtype=np.float32)
    if out.dtype not in (np.float32, np.float64):
        raise ValueError(f"out must be float32 or float64, found {out.dtype}")
    if out.shape != shape:
        raise ValueError(f"out has shape {out.shape}, expected {shape}")
    return out


def _as_mean_values(mean_value):
    """``mean_value`` as a tuple of floats (a single number is allowed)."""
    if mean_value is None:
        return ()
    if np.isscalar(mean_value):
        return (float(mean_value),)
    return tuple(float(v) for v in mean_value)


def _as_mean_image(mean):
    """A mean image as a read-only float32 (C, H, W) array; a Caffe mean blob (1, C, H, W)
    gives its first (only) image, as Caffe's transformer reads it; None stays None."""
    if mean is None:
        return None
    mean = np.asarray(mean, dtype=np.float32)
    if mean.ndim == 4 and len(mean):
        mean = mean[0]
    if mean.ndim != 3:
        raise DataError(
            f"a mean image has shape (C, H, W) or (1, C, H, W), found {mean.shape}", field="transform_param.mean_file"
        )
    mean = np.array(mean)
    mean.setflags(write=False)
    return mean


def read_mean_file(path):
    """The mean image of a Caffe ``.binaryproto`` (one BlobProto, as ``compute_image_mean``
    writes it) as float32 (C, H, W); a file that is not one is a DataError naming it."""
    from netlayers.caffe.wire import DecodeError, decode_blob

    try:
        buf = Path(path).read_bytes()
    except OSError as err:
        raise DataError(f"cannot read the mean file: {err.strerror or err}", file=str(path)) from None
    try:
        blob = decode_blob(buf, what="mean file")[0].astype(np.float32)
    except DecodeError as err:
        raise DataError(f"not a Caffe mean file (BlobProto .binaryproto): {err.message}", file=str(path)) from None
    try:
        return _as_mean_image(blob)
    except DataError as err:
        raise DataError(err.message, file=str(path)) from None


def mean_from_param(mean_file, base_dir=None):
    """The mean image a ``transform_param.mean_file`` names (None when it names none): the
    path relative to the working folder (Caffe's rule), else to the config's folder."""
    if not mean_file:
        return None
    from netlayers.data.listfiles import find_config_file

    try:
        path = find_config_file(mean_file, base_dir, "mean file")
    except DataError as err:
        raise err.located(field="transform_param.mean_file") from None
    return read_mean_file(path)


def _as_crop_size(crop_size):
    """``crop_size`` as a non-negative int (0 means no cropping)."""
    size = int(crop_size or 0)
    if size < 0:
        raise ConfigError(f"crop_size must be >= 0, found {size}", field="crop_size")
    return size


def _as_phase(phase):
    """``phase`` as "TRAIN" or "TEST"."""
    name = str(phase).upper()
    if name not in PHASES:
        raise ConfigError(f"phase must be TRAIN or TEST, found {phase!r}", field="phase")
    return name
