"""Pooling and SPP (spatial pyramid pooling): Caffe's PoolingParameter, its geometry, and
the layers over the numba kernels of ``netlayers.kernels.pooling``."""

import numpy as np

from .. import parallel
from ..kernels import pooling as pool_kernels
from ..layer import Layer
from ..netspec import Enum, Field, rule_error
from ..registry import register_layer
from .convolution import ENGINE

POOLING_PARAMS = {
    "pool": Field(Enum("MAX", "AVE", "STOCHASTIC"), "MAX"),
    "pad": Field(int, 0, min=0),
    "pad_h": Field(int, None, min=0),
    "pad_w": Field(int, None, min=0),
    "kernel_size": Field(int, None, min=1),
    "kernel_h": Field(int, None, min=1),
    "kernel_w": Field(int, None, min=1),
    "stride": Field(int, 1, min=1),
    "stride_h": Field(int, None, min=1),
    "stride_w": Field(int, None, min=1),
    "engine": Field(ENGINE, "DEFAULT", doc="accepted for Caffe compatibility, ignored"),
    "global_pooling": Field(bool, False),
    "round_mode": Field(Enum("CEIL", "FLOOR"), "CEIL"),
}


def pooled_size(size, kernel, pad, stride, round_mode="CEIL", padded=None):
    """Caffe's pooled size: ceil (or floor) of (H + 2 pad - k) / stride, plus 1; when the layer
    pads (on any axis: ``padded``, default pad > 0), the last window must start inside
    image + pad, else it is dropped."""
    span = size + 2 * pad - kernel
    out = (-(-span // stride) if round_mode == "CEIL" else span // stride) + 1
    if (pad > 0 if padded is None else padded) and (out - 1) * stride >= size + pad:
        out -= 1
    return out


# MAX pooling whose mask no backward reads (a forward-only net, a pooling of the net's input)
# and no mask top wants: the kernel still finds each window's argmax, into a worker's scratch of
# at most this many items (or one plane's), reused over the planes of its share, instead of a
# whole mask (VGG-16's pool1 on a batch of 10 has 8 M outputs: a 32 MiB mask written for nothing).
MASK_CHUNK_ITEMS = 1 << 18  # 1 MiB of int32


class PoolingWindows:
    """Forward and backward of one pooling geometry on (N, C, H, W) arrays, with the MAX
    argmax kept in an int32 mask (plane index h * W + w)."""

    def __init__(self, method, kernel, pad, stride, shared_mask=False):
        self.method, self.kernel, self.pad, self.stride = method, kernel, pad, stride
        self.mask = None
        # True where no backward will read the mask (a forward-only net): the forward finds it
        # in the workers' workspaces (``forward``)
        self.shared_mask = shared_mask

    def shape_for(self, shape, out_size):
        out_shape = shape[:2] + out_size
        if self.method == "MAX" and not self.shared_mask and (self.mask is None or self.mask.shape != out_shape):
            self.mask = np.zeros(out_shape, np.int32)  # index 0: valid even before a forward
        return out_shape

    def forward(self, x, y, mask_wanted=False):
        """Planes (image, channel) are pooled alone: they are shared out over the workers
        (a batch of one image is split too), the same results for any worker count. With a
        shared mask, ``self.mask`` holds the whole mask afterwards only when ``mask_wanted``
        (a mask top); else each worker's planes find theirs in chunks (``MASK_CHUNK_ITEMS``)."""
        if self.method == "MAX" and self.shared_mask:
            if not mask_wanted:
                self._max_in_chunks(planes(x), planes(y))
                return
            self.mask = parallel.scratch(0, "max_pool_mask", y.size, np.int32).reshape(y.shape)
        x, y = planes(x), planes(y)
        if self.method == "MAX":
            mask = planes(self.mask)

            def pool(lo, hi):
                pool_kernels.max_pool_forward(x[lo:hi], self.kernel, self.stride, self.pad, y[lo:hi], mask[lo:hi])
        else:

            def pool(lo, hi):
                pool_kernels.ave_pool_forward(x[lo:hi], self.kernel, self.stride, self.pad, y[lo:hi])

        parallel.over_slices(pool, x.shape[0], x.nbytes + 2 * y.nbytes)

    def _max_in_chunks(self, x, y):
        """MAX forward of (planes, 1, OH, OW) with each worker's mask in chunks of planes."""
        plane = y.shape[2] * y.shape[3]
        step = max(1, MASK_CHUNK_ITEMS // plane)
        self.mask = None

        def pool(worker, lo, hi):
            scratch = parallel.scratch(worker, "max_pool_mask", min(step, hi - lo) * plane, np.int32)
            for first in range(lo, hi, step):
                last = min(first + step, hi)
                mask = scratch[: (last - first) * plane].reshape(y[first:last].shape)
                pool_kernels.max_pool_forward(x[first:last], self.kernel, self.stride, self.pad, y[first:last], mask)

        parallel.over_worker_slices(pool, x.shape[0], x.nbytes + 2 * y.nbytes)

    def backward(self, dy, dx):
        dy, dx = planes(dy), planes(dx)
        if self.method == "MAX":
            mask = planes(self.mask)

            def unpool(lo, hi):
                pool_kernels.max_pool_backward(dy[lo:hi], mask[lo:hi], dx[lo:hi])
        else:

            def unpool(lo, hi):
                pool_kernels.ave_pool_backward(dy[lo:hi], self.kernel, self.stride, self.pad, dx[lo:hi])

        parallel.over_slices(unpool, dx.shape[0], dx.nbytes + 2 * dy.nbytes)


def planes(a):
    """(N, C, H, W) as (N * C, 1, H, W), a view (an error rather than a copy for an array
    that is not contiguous: the kernels write into it)."""
    view = a.view()
    view.shape = (a.shape[0] * a.shape[1], 1) + a.shape[2:]
    return view


def pooling_geometry(p):
    """(kernel, pad, stride) as (h, w) pairs from a PoolingParameter block (kernel (None, None)
    for global pooling); ``x`` or ``x_h`` with ``x_w``, not both (errors relative to the block)."""
    kernel = (p.kernel_size, p.kernel_size) if p.kernel_size is not None else (p.kernel_h, p.kernel_w)

    def pair(name, value, h, w, default):
        if h is not None or w is not None:
            if value != default:
                raise rule_error(name, f"give either {name} or {name}_h/{name}_w, not both")
            if h is None or w is None:
                raise rule_error(f"{name}_h", f"{name}_h and {name}_w go together: both are needed")
            return (h, w)
        return (value, value)

    return kernel, pair("pad", p.pad, p.pad_h, p.pad_w, 0), pair("stride", p.stride, p.stride_h, p.stride_w, 1)


@register_layer("Pooling")
class Pooling(Layer):
    """Max or average pooling over (N, C, H, W), Caffe's rules.

    Output size per axis: ceil((H + 2 pad - k) / stride) + 1 (``round_mode: FLOOR``: floor); with
    pad > 0 the last window must start inside image + pad (else it is dropped, as Caffe).
    Windows start at i * stride - pad.

    - MAX: y = max over the window clipped to the image. Ties: the first index in row-major
      order wins. An optional second top receives the argmax as a float plane index h * W + w
      (Caffe's mask top). Backward: dE/dx at the argmax += dE/dy, 0 elsewhere.
    - AVE: y = sum over the window clipped to the image / pool_size, pool_size = the window
      clipped to the padded bounds [-pad, H + pad) (padding counts in the divisor, as Caffe).
      Backward: every pixel of the window gets dE/dy / pool_size.
    - STOCHASTIC is not supported (an error at setup).
    ``global_pooling``: the kernel is the whole plane (pad 0, stride 1 required).
    """

    example = [
        {"bottoms": [(2, 2, 5, 5)], "tops": 2, "params": {"pooling_param": {"kernel_size": 3, "stride": 2}}},
        {
            "bottoms": [(2, 2, 5, 5)],
            "params": {"pooling_param": {"pool": "AVE", "kernel_size": 3, "stride": 2, "pad": 1}},
        },
        {"bottoms": [(2, 2, 3, 4)], "params": {"pooling_param": {"pool": "AVE", "global_pooling": True}}},
    ]

    keep_top_data = False
    keep_bottom_data = False

    params = POOLING_PARAMS
    num_bottoms = (1, 1)
    num_tops = (1, 2)

    @classmethod
    def check_params(cls, p):
        """Caffe's rules between the fields (kernel, pad and stride given one way, not two)."""
        if p.pool == "STOCHASTIC":
            raise rule_error("pool", "STOCHASTIC pooling is not supported (use MAX or AVE)")
        if p.global_pooling:
            if p.kernel_size is not None or p.kernel_h is not None or p.kernel_w is not None:
                raise rule_error(
                    "kernel_size", "with global_pooling the kernel size is the input size: do not give kernel_size"
                )
        else:
            if p.kernel_size is not None and (p.kernel_h is not None or p.kernel_w is not None):
                raise rule_error("kernel_size", "give either kernel_size or kernel_h/kernel_w, not both")
            if p.kernel_size is None and (p.kernel_h is None or p.kernel_w is None):
                raise rule_error("kernel_size", "kernel_size (or kernel_h and kernel_w) is required")
        kernel, pad, stride = pooling_geometry(p)
        if p.global_pooling and (pad != (0, 0) or stride != (1, 1)):
            raise rule_error(
                "global_pooling",
                f"with global_pooling only pad 0 and stride 1 are allowed, got pad {pad}, stride {stride}",
            )
        if not p.global_pooling and (pad[0] >= kernel[0] or pad[1] >= kernel[1]):
            raise rule_error("pad", f"pad {pad[0]}x{pad[1]} must be smaller than the kernel {kernel[0]}x{kernel[1]}")

    def LayerSetUp(self, bottom, top):
        p = self.p
        if len(top) > 1 and p.pool != "MAX":
            raise self.error("only MAX pooling has a second (mask) top", "pooling_param.pool")
        self.global_pooling = p.global_pooling
        self.kernel_given, self.pad, self.stride = pooling_geometry(p)
        self.windows = None
        self._shape = None

    def Reshape(self, bottom, top):
        shape = bottom[0].shape
        if shape != self._shape:
            if len(shape) != 4:
                raise self.error(f"Pooling takes (N, C, H, W) input, got shape {shape}")
            size = shape[2:]
            kernel = size if self.global_pooling else self.kernel_given
            if any(s + 2 * p < k for s, k, p in zip(size, kernel, self.pad)):
                raise self.error(
                    f"kernel {kernel[0]}x{kernel[1]} is larger than the padded input "
                    f"{size[0] + 2 * self.pad[0]}x{size[1] + 2 * self.pad[1]} (input "
                    f"{size[0]}x{size[1]})",
                    "pooling_param.kernel_size",
                )
            self.out_size = tuple(
                pooled_size(s, k, p, st, self.p.round_mode, any(self.pad))
                for s, k, p, st in zip(size, kernel, self.pad, self.stride)
            )
            for axis, (s, o, p, st) in enumerate(zip(size, self.out_size, self.pad, self.stride)):
                if (o - 1) * st - p >= s:
                    raise self.error(
                        f"the last of {o} windows along axis {axis + 2} starts at {(o - 1) * st - p}, "
                        f"outside the input of size {s} (kernel {kernel[axis]} < stride {st} with "
                        f"CEIL rounding): use round_mode FLOOR or a larger kernel",
                        "pooling_param.round_mode",
                    )
            self.windows = PoolingWindows(self.p.pool, kernel, self.pad, self.stride, not self.needs_backward)
            self.out_shape = self.windows.shape_for(shape, self.out_size)
            self._shape = shape
        for blob in top:
            blob.reshape(self.out_shape)

    def drop_backward_state(self):
        """MAX: keep no mask of its own (the forward still finds it, for the mask top)."""
        super().drop_backward_state()
        if self.windows is not None:
            self.windows.shared_mask, self.windows.mask = True, None

    def Forward_cpu(self, bottom, top):
        self.windows.forward(bottom[0].data, top[0].data, mask_wanted=len(top) > 1)
        if len(top) > 1:
            np.copyto(top[1].data, self.windows.mask, casting="unsafe")

    def Backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            self.windows.backward(top[0].diff, bottom[0].diff)


@register_layer("SPP")
class SPP(Layer):
    """Spatial pyramid pooling (Caffe's SPP layer): for level l = 0 .. pyramid_height - 1 the
    (N, C, H, W) input is pooled into about 2^l x 2^l bins with kernel k = ceil(H / 2^l),
    stride k, pad floor((k 2^l - H + 1) / 2) (likewise for W; Caffe's Pooling rules, CEIL),
    each level flattened to (N, C * bins) and the levels concatenated along axis 1.
    With pyramid_height 1 the single level stays (N, C, 1, 1), as in Caffe.
    Backward: each level's pooling backward, summed into dE/dx.
    """

    example = [
        {"bottoms": [(2, 2, 5, 5)], "params": {"spp_param": {"pyramid_height": 2}}},
        {"bottoms": [(2, 2, 4, 5)], "params": {"spp_param": {"pyramid_height": 2, "pool": "AVE"}}},
    ]

    keep_top_data = False

    params = {
        "pyramid_height": Field(int, required=True, min=1),
        "pool": Field(Enum("MAX", "AVE", "STOCHASTIC"), "MAX"),
        "engine": Field(ENGINE, "DEFAULT", doc="accepted for Caffe compatibility, ignored"),
    }
    num_bottoms = (1, 1)
    num_tops = (1, 1)

    @classmethod
    def check_params(cls, p):
        if p.pool == "STOCHASTIC":
            raise rule_error("pool", "STOCHASTIC pooling is not supported (use MAX or AVE)")

    def LayerSetUp(self, bottom, top):
        self._shape = None

    def Reshape(self, bottom, top):
        shape = bottom[0].shape
        if shape != self._shape:
            self._plan(shape)
        top[0].reshape(self.top_shape)

    def _plan(self, shape):
        if len(shape) != 4 or min(shape[2:]) <= 0:
            raise self.error(f"SPP takes (N, C, H, W) input with H, W > 0, got shape {shape}")
        n, c, h, w = shape
        self.levels = []
        offset = 0
        for level in range(self.p.pyramid_height):
            bins = 2**level
            kernel, pad = [], []
            for size in (h, w):
                k = -(-size // bins)
                kernel.append(k)
                pad.append((k * bins - size + 1) // 2)
            kernel, pad = tuple(kernel), tuple(pad)
            if pad[0] >= kernel[0] or pad[1] >= kernel[1]:
                raise self.error(
                    f"pyramid level {level} ({bins}x{bins} bins) needs pad {pad} "
                    f"not smaller than its kernel {kernel} on a {h}x{w} input: use a "
                    f"smaller pyramid_height",
                    "spp_param.pyramid_height",
                )
            out_size = tuple(pooled_size(s, k, p, k, "CEIL", any(pad)) for s, k, p in zip((h, w), kernel, pad))
            windows = PoolingWindows(self.p.pool, kernel, pad, kernel)
            out_shape = windows.shape_for(shape, out_size)
            width = c * out_size[0] * out_size[1]
            self.levels.append(
                {
                    "windows": windows,
                    "out": np.empty(out_shape, self.dtype),
                    "grad": np.empty(shape, self.dtype),
                    "start": offset,
                    "stop": offset + width,
                }
            )
            offset += width
        self.top_shape = (n, c) + self.levels[0]["out"].shape[2:] if len(self.levels) == 1 else (n, offset)
        self._shape = shape

    def Forward_cpu(self, bottom, top):
        n = bottom[0].shape[0]
        y = top[0].data.reshape(n, -1)
        for level in self.levels:
            level["windows"].forward(bottom[0].data, level["out"])
            y[:, level["start"] : level["stop"]] = level["out"].reshape(n, -1)

    def Backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        n = bottom[0].shape[0]
        dy = top[0].diff.reshape(n, -1)
        for i, level in enumerate(self.levels):
            level["out"].reshape(n, -1)[...] = dy[:, level["start"] : level["stop"]]
            target = bottom[0].diff if i == 0 else level["grad"]
            level["windows"].backward(level["out"], target)
            if i:
                bottom[0].diff += target
