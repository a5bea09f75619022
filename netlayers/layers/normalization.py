"""Normalization layers: LRN, BatchNorm, MVN (Caffe's formulas)."""

import numpy as np

from .. import parallel
from ..kernels import batchnorm as bn_kernels
from ..kernels import lrn as lrn_kernels
from ..layer import Layer
from ..netspec import Enum, Field, rule_error
from ..registry import register_layer

WORKSPACE_ITEMS = 1 << 18  # a forward-only LRN's scale, a worker: 1 MiB of float32 (see Forward_cpu)


@register_layer("LRN")
class LRN(Layer):
    """Local response normalization, y = x * scale^-beta, with (h = (local_size - 1) / 2)

    - ACROSS_CHANNELS: scale[n, c, i, j] = k + alpha / local_size * sum over c' in [c - h, c + h]
      (clipped to the channels) of x[n, c', i, j]^2;
    - WITHIN_CHANNEL: scale = 1 + alpha / local_size^2 * sum of x^2 over the local_size x
      local_size window centred on (i, j), zero-padded. This is what Caffe builds from AVE
      pooling (pad h, stride 1, divisor local_size^2 for every window) and a Power layer with
      shift 1: ``k`` is not used in this mode, as in Caffe.

    Backward (the windows are symmetric): with m = local_size (across) or local_size^2 (within),
    dE/dx = dE/dy * scale^-beta - (2 alpha beta / m) * x * window_sum(dE/dy * y / scale).
    local_size must be odd (as in Caffe); the layer cannot run in place (backward needs x).
    """

    example = [
        {"bottoms": [(2, 5, 3, 3)], "params": {"lrn_param": {"local_size": 3, "alpha": 0.5, "k": 2}}},
        {"bottoms": [(2, 2, 4, 4)], "params": {"lrn_param": {"norm_region": "WITHIN_CHANNEL"}}},
    ]

    keep_top_data = False

    params = {
        "local_size": Field(int, 5, min=1),
        "alpha": Field(float, 1.0),
        "beta": Field(float, 0.75),
        "norm_region": Field(Enum("ACROSS_CHANNELS", "WITHIN_CHANNEL"), "ACROSS_CHANNELS"),
        "k": Field(float, 1.0),
        "engine": Field(Enum("DEFAULT", "CAFFE", "CUDNN"), "DEFAULT", doc="accepted, ignored"),
    }
    num_bottoms = (1, 1)
    num_tops = (1, 1)

    @classmethod
    def check_params(cls, p):
        if p.local_size % 2 == 0:
            raise rule_error("local_size", f"local_size must be odd, got {p.local_size}")

    def LayerSetUp(self, bottom, top):
        self.across = self.p.norm_region == "ACROSS_CHANNELS"
        self._shape = None

    def Reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) != 4:
            raise self.error(f"LRN takes (N, C, H, W) input, got shape {shape}")
        top[0].reshape(shape)
        if shape != self._shape:
            kept = self.needs_backward  # else the forward takes the scale from a workspace
            self.scale = np.empty(shape, self.dtype) if kept else None
            self.scale_pow = np.empty(shape, self.dtype) if kept else None
            self.work = np.empty(shape, self.dtype) if kept else None
            self._shape = shape

    def drop_backward_state(self):
        """Keep no scale of its own: the forward makes it, chunk by chunk of images, in each
        worker's workspace (only the backward reads it again)."""
        super().drop_backward_state()
        self.scale = self.scale_pow = self.work = None

    def _window_sum(self, src, out, squared):
        if self.across:
            lrn_kernels.channel_window_sum(src, self.p.local_size, out, squared)
        else:
            lrn_kernels.plane_window_sum(src, self.p.local_size, out, squared)

    def _norm_count(self):
        return self.p.local_size if self.across else self.p.local_size**2

    def Forward_cpu(self, bottom, top):
        """Images are normalized alone: the batch is shared out over the workers. Without a
        backward (``drop_backward_state``) each worker makes the scale of at most
        ``WORKSPACE_ITEMS`` items of images at a time (or of one image) in a workspace of its
        own, raised to -beta in place: GoogLeNet's deploy net on a batch of 10 had kept two
        23 MiB scales of its norm2 for nothing."""
        x, y = bottom[0].data, top[0].data
        if self.scale is not None:
            scale, power = self.scale, self.scale_pow
            parallel.over_slices(
                lambda lo, hi: self._forward(x[lo:hi], y[lo:hi], scale[lo:hi], power[lo:hi]), x.shape[0], 4 * x.nbytes
            )
            return
        image = x[0].size
        step = max(1, WORKSPACE_ITEMS // image)

        def chunks(worker, lo, hi):
            workspace = parallel.scratch(worker, "lrn_scale", min(step, hi - lo) * image, self.dtype)
            for first in range(lo, hi, step):
                last = min(first + step, hi)
                scale = workspace[: (last - first) * image].reshape(x[first:last].shape)
                self._forward(x[first:last], y[first:last], scale, scale)

        parallel.over_worker_slices(chunks, x.shape[0], 3 * x.nbytes)

    def _forward(self, x, y, scale, scale_pow):
        """y = x * scale^-beta for these images, with their scale (``scale_pow``, its power, may
        be ``scale`` itself)."""
        p = self.p
        self._window_sum(x, scale, squared=True)
        scale *= self.dtype.type(p.alpha / self._norm_count())
        scale += self.dtype.type(p.k if self.across else 1.0)
        np.power(scale, self.dtype.type(-p.beta), out=scale_pow)
        np.multiply(x, scale_pow, out=y)

    def Backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x, dy, dx = bottom[0].data, top[0].diff, bottom[0].diff
        parallel.over_slices(lambda lo, hi: self._backward(lo, hi, x, dy, dx), x.shape[0], 6 * x.nbytes)

    def _backward(self, lo, hi, x, dy, dx):
        p, x, dy, dx = self.p, x[lo:hi], dy[lo:hi], dx[lo:hi]
        scale, scale_pow, ratio = self.scale[lo:hi], self.scale_pow[lo:hi], self.work[lo:hi]
        np.multiply(dy, x, out=ratio)  # dy * y / scale = dy * x * scale^-beta / scale
        ratio *= scale_pow
        ratio /= scale
        self._window_sum(ratio, dx, squared=False)
        dx *= x
        dx *= self.dtype.type(-2.0 * p.alpha * p.beta / self._norm_count())
        np.multiply(dy, scale_pow, out=ratio)
        dx += ratio


@register_layer("BatchNorm")
class BatchNorm(Layer):
    """Batch normalization without scale and shift (add a Scale layer), as Caffe.

    Per channel c (axis 1; statistics over the batch and the spatial axes, m values each):

    - batch statistics (``use_global_stats: false``, the TRAIN default): mu = mean(x),
      var = mean((x - mu)^2); the running sums are updated as Caffe does:
      s <- maf * s + 1, mean_sum <- maf * mean_sum + mu,
      var_sum <- maf * var_sum + m / (m - 1) * var  (unbiased; factor 1 when m = 1),
      with maf = moving_average_fraction;
    - global statistics (``use_global_stats: true``, the TEST default): mu = mean_sum / s,
      var = var_sum / s (0 when s = 0).

    y = (x - mu) / sqrt(var + eps).
    Backward, batch statistics: dE/dx = (dE/dy - mean(dE/dy) - y * mean(dE/dy * y)) / sqrt(var + eps)
    (means per channel over batch and space); global statistics: dE/dx = dE/dy / sqrt(var + eps).

    Blobs: [mean_sum (C,), var_sum (C,), s (1,)], all 0 at start and never learned: as in
    Caffe, the net gives them lr_mult 0 and decay_mult 0 (a given lr_mult other than 0 is an
    error), and the backward never writes their diffs.

    Beyond Caffe (which checks neither): eps must be >= 0 (a negative eps can make var + eps
    negative: NaN) and moving_average_fraction in [0, 1] (outside it the running sums
    oscillate or grow without bound).

    The backward needs the normalized values y. Kept by default (a buffer of the input's
    size); where BatchNorm does not run in place and nothing writes its input before its
    backward, a net lets it keep none (``recompute_normalized``): they are made again from the
    input, mean and std when needed, into a workspace shared by every BatchNorm of the process
    (DenseNet's BN-ReLU-conv layers, whose inputs are the concatenated maps, as PyTorch keeps
    only the input and the statistics).
    """

    example = [{"bottoms": [(4, 3, 2)]}, {"bottoms": [(4, 3)], "phase": "TEST"}]

    keep_top_data = False
    keep_bottom_data = False

    params = {
        "use_global_stats": Field(bool, None),
        "moving_average_fraction": Field(float, 0.999, min=0, max=1),
        "eps": Field(float, 1e-5, min=0, doc="keeps a denominator away from 0: never negative"),
    }
    num_bottoms = (1, 1)
    num_tops = (1, 1)
    in_place = True  # forward and backward read the input before writing the output
    learnable = False  # the net gives these blobs lr_mult 0 and never updates them

    def LayerSetUp(self, bottom, top):
        p = self.p
        self.use_global_stats = self.phase == "TEST" if p.use_global_stats is None else p.use_global_stats
        shape = bottom[0].shape
        self.channels = shape[1] if len(shape) > 1 else 1
        self.add_param((self.channels,))
        self.add_param((self.channels,))
        self.add_param((1,))
        self._shape = None
        self.recomputed = None  # with recompute_normalized: what kept_output lends
        self._input = None  # the bottom blob of the last forward

    def recompute_normalized(self):
        """Keep no normalized values: make them again from the input when needed (the net
        calls this where the input stays intact until this layer's backward)."""
        self.recomputed = RecomputedValues(self)
        self.normalized = None
        self.keep_bottom_data = True

    def drop_backward_state(self):
        """Keep no normalized values: only the backward (and an in-place Scale's) reads them."""
        super().drop_backward_state()
        self.normalized = None

    def Reshape(self, bottom, top):
        shape = bottom[0].shape
        if shape != self._shape:
            channels = shape[1] if len(shape) > 1 else 1
            if channels != self.channels:
                raise self.error(
                    f"input has {channels} channels (shape {shape}), the layer was set up for {self.channels}"
                )
            batch = shape[0] if shape else 1
            self.shape3 = (batch, channels, int(np.prod(shape[2:], dtype=np.int64)))
            kept = self.recomputed is None and self.needs_backward
            self.normalized = np.empty(self.shape3, self.dtype) if kept else None
            self.mean = np.empty((1, channels, 1), self.dtype)
            self.var = np.empty((1, channels, 1), self.dtype)
            self.std = np.empty((1, channels, 1), self.dtype)
            self._shape = shape
        top[0].reshape(shape)

    def Forward_cpu(self, bottom, top):
        x = self.statistics(bottom[0])
        mean, std = self.mean.reshape(-1), self.std.reshape(-1)
        y = top[0].data.reshape(self.shape3)
        kept = y if self.normalized is None else self.normalized  # y alone: nothing else kept
        both = kept is not y
        self._over_channels(lambda lo, hi: bn_kernels.normalize(x, mean, std, kept, y, both, lo, hi), 3)

    def statistics(self, bottom, then=None, then_passes=0):
        """The forward's first part: mean, var and std of ``bottom`` (the batch's, and the
        moving averages updated, or the stored ones), noted as the last forward's input; returns
        its values as an (N, C, P) array. ``then(lo, hi)``, when given, runs for each share of
        the channels once their statistics are made, in the same hand-over to the workers (the
        fused chain's pass: ``then_passes`` passes over the input)."""
        p = self.p
        x = bottom.data.reshape(self.shape3)
        if self.use_global_stats:
            s = self.blobs[2].data[0]
            factor = 0.0 if s == 0 else 1.0 / s
            np.multiply(self.blobs[0].data.reshape(self.mean.shape), factor, out=self.mean)
            np.multiply(self.blobs[1].data.reshape(self.var.shape), factor, out=self.var)
            np.add(self.var, self.dtype.type(p.eps), out=self.std)
            np.sqrt(self.std, out=self.std)
            if then is not None:
                self._over_channels(then, then_passes)
        else:
            mean, var, std = self.mean.reshape(-1), self.var.reshape(-1), self.std.reshape(-1)
            eps = self.dtype.type(p.eps)

            def moments(lo, hi):
                bn_kernels.batch_moments(x, mean, var, std, eps, lo, hi)
                if then is not None:
                    then(lo, hi)

            # shared out where either part alone would be (in real nets: 0.98x-1.00x of their sum)
            self._over_channels(moments, max(2, then_passes))
            m = x.size // self.channels
            correction = m / (m - 1) if m > 1 else 1.0
            mean_sum, var_sum, count = (blob.data for blob in self.blobs)
            fraction, correction = self.dtype.type(p.moving_average_fraction), self.dtype.type(correction)
            bn_kernels.moving_averages(mean_sum, var_sum, count, mean, var, fraction, correction)
        self._input = bottom
        return x

    def kept_output(self):
        """The values this forward wrote to its top, kept for the backward (``normalized``,
        or the :class:`RecomputedValues` that make them again): the net lends them to an
        in-place Scale that follows (see Net.forward_range)."""
        return self.normalized if self.recomputed is None else self.recomputed

    def input_values(self):
        """The last forward's input, as an (N, C, P) array."""
        return self._input.data.reshape(self.shape3)

    def normalized_values(self):
        """The normalized values of the last forward: the kept ones, or made again from its
        input into the process's shared workspace (the same operations as the forward: the
        same numbers)."""
        if self.normalized is not None:
            return self.normalized
        size = int(np.prod(self.shape3))
        values = parallel.scratch(0, RecomputedValues.SCRATCH, size, self.dtype).reshape(self.shape3)
        x = self.input_values()
        mean, std = self.mean.reshape(-1), self.std.reshape(-1)
        self._over_channels(lambda lo, hi: bn_kernels.normalize(x, mean, std, values, values, False, lo, hi), 2)
        return values

    def _over_channels(self, fn, passes):
        """Channels are normalized alone: they are shared out over the workers."""
        parallel.over_slices(fn, self.channels, passes * int(np.prod(self.shape3)) * self.dtype.itemsize)

    def Backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].diff.reshape(self.shape3)
        dx = bottom[0].diff.reshape(self.shape3)
        if self.use_global_stats:
            np.divide(dy, self.std, out=dx)
            return
        std = self.std.reshape(-1)
        normalized = self.normalized_values()
        self._over_channels(  # dy may be dx
            lambda lo, hi: bn_kernels.normalize_backward(dy, normalized, std, dx, lo, hi),
            5,
        )


class RecomputedValues:
    """What a BatchNorm that keeps no normalized values lends to the Scale after it: their
    ``size``, and ``reshape`` made from ``BatchNorm.normalized_values`` (read only when
    Scale's backward runs on its own, outside the fused chain)."""

    SCRATCH = "batchnorm_normalized"

    def __init__(self, layer):
        self.layer = layer

    @property
    def size(self):
        return int(np.prod(self.layer.shape3))

    def reshape(self, shape):
        return self.layer.normalized_values().reshape(shape)


@register_layer("MVN")
class MVN(Layer):
    """Mean-variance normalization (Caffe's MVN), per (n, c) over the spatial axes, or per n
    over channels and space when ``across_channels``:

        y = x - mean(x);   with normalize_variance: y = (x - mean(x)) / (std(x) + eps),
        std = sqrt(mean((x - mean)^2))  (eps added to the standard deviation, as Caffe).

    Backward (Caffe's formula): dE/dx = dE/dy - mean(dE/dy) without variance normalization;
    with it, dE/dx = (dE/dy - mean(dE/dy) - y * mean(dE/dy * y)) / (std + eps), which is the exact
    gradient for eps = 0 (for eps > 0 it differs from it by a relative eps / std).
    eps must be >= 0 (beyond Caffe: a negative eps can make std + eps zero or negative).
    """

    example = [
        {"bottoms": [(2, 3, 4)]},
        {"bottoms": [(2, 3, 2, 2)], "params": {"mvn_param": {"across_channels": True, "normalize_variance": False}}},
    ]

    keep_top_data = False

    params = {
        "normalize_variance": Field(bool, True),
        "across_channels": Field(bool, False),
        "eps": Field(float, 1e-9, min=0, doc="keeps a denominator away from 0: never negative"),
    }
    num_bottoms = (1, 1)
    num_tops = (1, 1)
    in_place = True  # forward and backward read the input before writing the output

    def LayerSetUp(self, bottom, top):
        self._shape = None

    def Reshape(self, bottom, top):
        shape = bottom[0].shape
        if shape != self._shape:
            if not shape:
                raise self.error("MVN needs an input with a batch axis, got a scalar")
            rows = shape[0] if self.p.across_channels or len(shape) < 2 else shape[0] * shape[1]
            self.shape2 = (rows, bottom[0].count // rows if rows else 0)
            self.normalized = np.empty(self.shape2, self.dtype)
            self.temp = np.empty(self.shape2, self.dtype)
            self.mean = np.empty((rows, 1), self.dtype)
            self.std = np.empty((rows, 1), self.dtype)
            self.mean_dy = np.empty((rows, 1), self.dtype)
            self.mean_dyy = np.empty((rows, 1), self.dtype)
            self._shape = shape
        top[0].reshape(shape)

    def Forward_cpu(self, bottom, top):
        x = bottom[0].data.reshape(self.shape2)
        np.mean(x, axis=1, keepdims=True, out=self.mean)
        np.subtract(x, self.mean, out=self.normalized)
        if self.p.normalize_variance:
            np.multiply(self.normalized, self.normalized, out=self.temp)
            np.mean(self.temp, axis=1, keepdims=True, out=self.std)
            np.sqrt(self.std, out=self.std)
            self.std += self.dtype.type(self.p.eps)
            self.normalized /= self.std
        np.copyto(top[0].data.reshape(self.shape2), self.normalized)

    def Backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].diff.reshape(self.shape2)
        dx = bottom[0].diff.reshape(self.shape2)
        np.mean(dy, axis=1, keepdims=True, out=self.mean_dy)
        if not self.p.normalize_variance:
            np.subtract(dy, self.mean_dy, out=dx)
            return
        y = self.normalized
        np.multiply(dy, y, out=self.temp)
        np.mean(self.temp, axis=1, keepdims=True, out=self.mean_dyy)
        np.multiply(y, self.mean_dyy, out=self.temp)
        np.subtract(dy, self.mean_dy, out=dx)  # dy may be dx (in place): read before write
        dx -= self.temp
        dx /= self.std
