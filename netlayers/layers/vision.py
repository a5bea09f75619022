"""Vision layers: Convolution, Deconvolution, Im2col, Pooling, SPP, Crop.

Convolutions run as im2col + matrix products (numpy BLAS) over the whole batch. The column
buffer has one of two layouts (see ``netlayers.kernels.im2col``):

- batch-major (N, K, P): one product per image, landing in NCHW directly; chosen when the output
  plane is large (P >= 256 pixels), where per-image products are long enough to be efficient,
  and for 1x1 / stride 1 / no-pad kernels, where the input itself is the column matrix.
- channel-major (K, N * P): one product for the whole batch; chosen when the planes are small
  (many short products would waste BLAS calls), at the price of a cheap reorder to NCHW.

The backward's column gradient W^T dE/dy overwrites the whole buffer, so it takes its own
layout: batch-major from 64 output pixels up (measured faster there even when the forward
is channel-major), then col2im reads that layout. ``tools/bench_kernels.py`` prints both layouts
for LeNet's layers (conv1: batch-major, conv2: channel-major). Buffers are allocated in Reshape
when the shapes change and reused afterwards. Only 2 spatial axes are supported.
"""

import math

import numpy as np

from ..kernels import im2col as conv_kernels
from ..kernels import pooling as pool_kernels
from ..layer import Layer
from ..netspec import FILLER, Enum, Field, rule_error
from ..registry import register_layer

ENGINE = Enum("DEFAULT", "CAFFE", "CUDNN")

CONVOLUTION_PARAMS = {
    "num_output": Field(int, required=True, min=1),
    "bias_term": Field(bool, True),
    "pad": Field(int, repeated=True, min=0),
    "kernel_size": Field(int, repeated=True, min=1),
    "stride": Field(int, repeated=True, min=1),
    "dilation": Field(int, repeated=True, min=1),
    "pad_h": Field(int, None, min=0),
    "pad_w": Field(int, None, min=0),
    "kernel_h": Field(int, None, min=1),
    "kernel_w": Field(int, None, min=1),
    "stride_h": Field(int, None, min=1),
    "stride_w": Field(int, None, min=1),
    "group": Field(int, 1, min=1),
    "weight_filler": Field(FILLER, {}),
    "bias_filler": Field(FILLER, {}),
    "axis": Field(int, 1),
    "force_nd_im2col": Field(bool, False, doc="accepted for Caffe compatibility, ignored"),
    "engine": Field(ENGINE, "DEFAULT", doc="accepted for Caffe compatibility, ignored"),
}

BATCH_MAJOR_MIN_PLANE = 256  # output pixels per image from which per-image products win
BATCH_MAJOR_MAX_WEIGHT_TEMP = 1 << 25  # bytes of the per-image weight-gradient stack allowed


def _two(p, name, h_name, w_name, default):
    """Caffe's rule for a 2-D spatial setting: ``name`` (repeated: 1 value for both axes or one
    per axis) or ``name_h`` and ``name_w``, not both."""
    values = p[name]
    h, w = p[h_name], p[w_name]
    if h is not None or w is not None:
        if values:
            raise rule_error(name, f"give either {name} or {h_name}/{w_name}, not both")
        if h is None or w is None:
            raise rule_error(h_name, f"{h_name} and {w_name} go together: both are needed")
        return (h, w)
    if not values:
        return None if default is None else (default, default)
    return _repeated_pair(values, default, name)


def conv_geometry(p):
    """(kernel, pad, stride, dilation) as (h, w) pairs from a ConvolutionParameter block; its
    cross-field rules (each layer's ``check_params``), raising errors relative to the block."""
    kernel = _two(p, "kernel_size", "kernel_h", "kernel_w", None)
    if kernel is None:
        raise rule_error("kernel_size", "kernel_size (or kernel_h and kernel_w) is required")
    pad = _two(p, "pad", "pad_h", "pad_w", 0)
    stride = _two(p, "stride", "stride_h", "stride_w", 1)
    dilation = _repeated_pair(p.dilation, 1, "dilation")
    return kernel, pad, stride, dilation


def _repeated_pair(values, default, name):
    if not values:
        return (default, default)
    if len(values) == 1:
        return (values[0], values[0])
    if len(values) == 2:
        return tuple(values)
    raise rule_error(name, f"{name} has {len(values)} values; give 1, or 2 (one per spatial axis)")


def conv_output_size(size, kernel, pad, stride, dilation):
    """Caffe's convolution output size: floor((H + 2 pad - (dilation (k - 1) + 1)) / stride) + 1."""
    extent = dilation * (kernel - 1) + 1
    return (size + 2 * pad - extent) // stride + 1


class ChannelSums:
    """sums[c] = sum over n and p of m[n, c, p] for an (N, C, P) array, as one matrix-vector
    product with a vector of ones (BLAS) and a sum over N (a serial loop measured 5x slower:
    float sums do not vectorize without reassociation)."""

    def __init__(self, batch, channels, size, dtype):
        self.shape = (batch, channels, size)
        self.ones = np.ones(size, dtype)
        self.partial = np.empty((batch, channels), dtype)
        self.out = np.empty(channels, dtype)

    def __call__(self, m):
        np.matmul(m.reshape(self.shape), self.ones, out=self.partial)
        return np.sum(self.partial, axis=0, out=self.out)


class ColumnProducts:
    """The column buffer of one convolution geometry and the products against it.

    In convolution terms the *image* side is im2col's input (C_img channels, K = C_img kh kw
    column rows) and the *map* side is the product's output (C_map channels, P pixels per
    image); the weight is a (C_map, K / group) matrix per group. Convolution: image = bottom,
    map = top. Deconvolution: image = top, map = bottom (the same weight matrix).

    - ``map_from_col(W, col, out, bias)``: out[n] = W col[n] (+ bias), out NCHW (N, C_map, P)
    - ``col_from_map(W, m, col)``: col[n] = W^T m[n], from an NCHW map; the buffer is written
      whole, so its layout is chosen for this product alone: ``dcol_batch_major`` (per-image
      products measured faster from P >= 64: 1.35 ms vs 1.52 ms on LeNet's conv2)
    - ``weight_grad(m, col, wdiff)``: wdiff += sum_n m[n] col[n]^T, with ``m`` from
      ``load_map`` (channel-major computes the transpose, (col m^T)^T, which measured 1.3 ms
      vs 1.8 ms for LeNet's conv2)
    """

    DCOL_BATCH_MAJOR_MIN_PLANE = 64

    def __init__(self, *, batch, map_channels, rows, map_size, groups, dtype, batch_major, allocate_col=True):
        self.batch, self.map_channels, self.rows, self.map_size = batch, map_channels, rows, map_size
        self.groups = groups
        self.batch_major = batch_major
        self.dcol_batch_major = batch_major or map_size >= self.DCOL_BATCH_MAJOR_MIN_PLANE
        self.dtype = np.dtype(dtype)
        g = groups
        self.map_group, self.row_group = map_channels // g, rows // g
        if batch_major:
            self.col = np.empty((batch, rows, map_size), dtype) if allocate_col else None
            self.map_t = None
            self.weight_temp = np.empty((batch, g, self.map_group, self.row_group), dtype)
            self.weight_sum = np.empty((g, self.map_group, self.row_group), dtype)
        else:
            self.col = np.empty((rows, batch, map_size), dtype)
            self.map_t = np.empty((map_channels, batch, map_size), dtype)
            self.weight_temp = np.empty((g, self.row_group, self.map_group), dtype)
        self.sums = np.empty(map_channels, dtype)
        self.zeros = np.zeros(map_channels, dtype)
        self.channel_sums = ChannelSums(batch, map_channels, map_size, dtype) if batch_major else None
        self.ones = None if batch_major else np.ones(batch * map_size, dtype)

    @staticmethod
    def choose_batch_major(batch, map_channels, rows, map_size, groups, itemsize, one_by_one):
        temp_bytes = batch * map_channels * (rows // groups) * itemsize
        if temp_bytes > BATCH_MAJOR_MAX_WEIGHT_TEMP:
            return False
        return one_by_one or map_size >= BATCH_MAJOR_MIN_PLANE

    # views by group
    def _weights(self, weight):
        return weight.reshape(self.groups, self.map_group, self.row_group)

    def _col_view(self, col, batch_major):
        if batch_major:
            return col.reshape(self.batch, self.groups, self.row_group, self.map_size)
        return col.reshape(self.groups, self.row_group, self.batch * self.map_size)

    def _map_view(self, m, batch_major):
        if batch_major:
            return m.reshape(self.batch, self.groups, self.map_group, self.map_size)
        return m.reshape(self.groups, self.map_group, self.batch * self.map_size)

    def load_map(self, m, want_sums=False):
        """A (N, C_map, P) map in this layout's form; ``self.sums`` gets its per-channel sums
        when ``want_sums`` (a matrix-vector product with ones, as Caffe's bias gradient)."""
        m = m.reshape(self.batch, self.map_channels, self.map_size)
        if self.batch_major:
            if want_sums:
                self.sums[...] = self.channel_sums(m)
            return m
        conv_kernels.nop_to_onp(m, self.map_t)
        if want_sums:
            np.matmul(self.map_t.reshape(self.map_channels, -1), self.ones, out=self.sums)
        return self.map_t

    def map_from_col(self, weight, col, out, bias=None):
        out = out.reshape(self.batch, self.map_channels, self.map_size)
        cols = self._col_view(col, self.batch_major)
        if self.batch_major:
            np.matmul(self._weights(weight), cols, out=self._map_view(out, True))
            if bias is not None:
                conv_kernels.add_bias(out, bias)
        else:
            np.matmul(self._weights(weight), cols, out=self._map_view(self.map_t, False))
            conv_kernels.onp_to_nop(self.map_t, self.zeros if bias is None else bias, out)

    def col_from_map(self, weight, m, col, loaded=None):
        """col = W^T m in the ``dcol_batch_major`` layout; ``m`` is the NCHW map, ``loaded``
        its ``load_map`` form when already at hand."""
        weights_t = self._weights(weight).transpose(0, 2, 1)
        if self.dcol_batch_major:
            m = m.reshape(self.batch, self.map_channels, self.map_size)
            np.matmul(weights_t, self._map_view(m, True), out=self._col_view(col, True))
        else:
            loaded = self.load_map(m) if loaded is None else loaded
            np.matmul(weights_t, self._map_view(loaded, False), out=self._col_view(col, False))

    def weight_grad(self, m, col, weight_diff):
        wdiff = weight_diff.reshape(self.groups, self.map_group, self.row_group)
        cols = self._col_view(col, self.batch_major)
        if self.batch_major:
            np.matmul(self._map_view(m, True), cols.transpose(0, 1, 3, 2), out=self.weight_temp)
            np.sum(self.weight_temp, axis=0, out=self.weight_sum)
            wdiff += self.weight_sum
        else:
            np.matmul(cols, self._map_view(m, False).transpose(0, 2, 1), out=self.weight_temp)
            wdiff += self.weight_temp.transpose(0, 2, 1)


class ConvolutionParamBlock:
    """For layers that read Caffe's ``convolution_param`` whatever their type (Deconvolution,
    Im2col): that block and no block named after the type."""

    block = "convolution_param"
    params = CONVOLUTION_PARAMS

    @classmethod
    def check_params(cls, p):
        conv_geometry(p)

    @classmethod
    def param_blocks(cls):
        return {"convolution_param": cls.params}

    def __init__(self, spec, **kwargs):
        super().__init__(spec, **kwargs)
        self.p = spec.blocks.get("convolution_param")


class _ConvolutionBase(ConvolutionParamBlock, Layer):
    """Shared setup of Convolution and Deconvolution: parameters, checks and buffers."""

    num_bottoms = (1, None)
    num_tops = (1, None)

    def LayerSetUp(self, bottom, top):
        p = self.p
        if len(bottom) != len(top):
            raise self.error(f"needs one top per bottom, got {len(bottom)} bottoms and {len(top)} tops")
        self.kernel, self.pad, self.stride, self.dilation = conv_geometry(p)
        shape = bottom[0].shape
        self.axis = bottom[0].canonical_axis(p.axis) if shape else 0
        spatial = len(shape) - self.axis - 1
        if spatial != 2:
            raise self.error(
                f"only 2 spatial axes are supported: input shape {shape} with channel axis {self.axis} has {spatial}",
                f"{self.block}.axis",
            )
        self.channels = shape[self.axis]
        if self.channels % p.group:
            raise self.error(
                f"group {p.group} does not divide the {self.channels} input channels (input shape {shape})",
                f"{self.block}.group",
            )
        if p.num_output % p.group:
            raise self.error(f"group {p.group} does not divide num_output {p.num_output}", f"{self.block}.group")
        self.add_param(self.weight_shape(), p.weight_filler)
        if p.bias_term:
            self.add_param((p.num_output,), p.bias_filler)
        self._shape = None

    def Reshape(self, bottom, top):
        self._check_bottoms(bottom)
        shape = bottom[0].shape
        if shape != self._shape:
            self._setup_buffers(shape)
        out_shape = shape[: self.axis] + (self.p.num_output,) + self.out_size
        for blob in top:
            blob.reshape(out_shape)

    def _check_bottoms(self, bottom):
        shape = bottom[0].shape
        for i, blob in enumerate(bottom[1:], 1):
            if blob.shape != shape:
                raise self.error(f"all bottoms need one shape: bottom[{i}] is {blob.shape}, bottom[0] is {shape}")
        if len(shape) != self.axis + 3 or shape[self.axis] != self.channels:
            raise self.error(
                f"input shape {shape} does not match the set-up channel axis {self.axis} with {self.channels} channels"
            )

    def _too_small(self, size):
        (kh, kw), (ph, pw), (dh, dw) = self.kernel, self.pad, self.dilation
        extent = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
        return self.error(
            f"kernel {kh}x{kw} (dilated extent {extent[0]}x{extent[1]}) is larger than the padded "
            f"input {size[0] + 2 * ph}x{size[1] + 2 * pw} (input {size[0]}x{size[1]}, pad "
            f"{ph}x{pw})",
            f"{self.block}.kernel_size",
        )


@register_layer("Convolution")
class Convolution(_ConvolutionBase):
    """2-D convolution (cross-correlation, as Caffe) with groups, padding, stride, dilation.

    x: (N, C, H, W), W: (O, C / g, kh, kw), b: (O,), output (N, O, OH, OW) with
    OH = floor((H + 2 pad_h - (dil_h (kh - 1) + 1)) / stride_h) + 1 (likewise OW), and for the
    output channel o in group G (input channels c of that group):

        y[n, o, i, j] = b[o] + sum_{c, u, v} W[o, c, u, v] x[n, c, i s_h - p_h + u d_h, j s_w - p_w + v d_w]

    (x is 0 in the padding). With columns col = im2col(x): y[n] = W col[n] + b.
    Backward: dE/dW += sum_n dE/dy[n] col[n]^T, dE/db += sum over n, i, j of dE/dy,
    dE/dx = col2im(W^T dE/dy[n]). Several bottoms (same shape) give one top each, sharing W.
    """

    example = [
        {
            "bottoms": [(2, 3, 5, 5)],
            "params": {
                "convolution_param": {
                    "num_output": 4,
                    "kernel_size": 3,
                    "weight_filler": {"type": "gaussian"},
                    "bias_filler": {"type": "gaussian"},
                }
            },
        },
        {
            "bottoms": [(2, 4, 5, 6), (2, 4, 5, 6)],
            "tops": 2,
            "params": {
                "convolution_param": {
                    "num_output": 2,
                    "kernel_size": 3,
                    "pad": 1,
                    "stride": 2,
                    "dilation": 2,
                    "group": 2,
                    "weight_filler": {"type": "gaussian"},
                    "bias_filler": {"type": "gaussian"},
                }
            },
        },
        {
            "bottoms": [(2, 3, 3, 3)],
            "params": {"convolution_param": {"num_output": 2, "kernel_size": 1, "weight_filler": {"type": "gaussian"}}},
        },
    ]

    keep_top_data = False

    def weight_shape(self):
        return (self.p.num_output, self.channels // self.p.group) + self.kernel

    def _setup_buffers(self, shape):
        size = shape[self.axis + 1 :]
        out_size = tuple(
            conv_output_size(s, k, p, st, d)
            for s, k, p, st, d in zip(size, self.kernel, self.pad, self.stride, self.dilation)
        )
        if min(out_size) <= 0:
            raise self._too_small(size)
        self.batch = math.prod(shape[: self.axis])
        self.size, self.out_size = size, out_size
        rows = self.channels * self.kernel[0] * self.kernel[1]
        map_size = out_size[0] * out_size[1]
        self.one_by_one = self.kernel == (1, 1) and self.stride == (1, 1) and self.pad == (0, 0)
        batch_major = ColumnProducts.choose_batch_major(
            self.batch, self.p.num_output, rows, map_size, self.p.group, self.dtype.itemsize, self.one_by_one
        )
        self.one_by_one = self.one_by_one and batch_major
        self.products = ColumnProducts(
            batch=self.batch,
            map_channels=self.p.num_output,
            rows=rows,
            map_size=map_size,
            groups=self.p.group,
            dtype=self.dtype,
            batch_major=batch_major,
            allocate_col=not self.one_by_one,
        )
        self.table = conv_kernels.geometry_table(shape, self.kernel, self.pad, self.stride, self.dilation, out_size)
        self.col_holds = None  # which bottom's columns the buffer holds (None: stale)
        self._shape = shape

    def _image(self, array):
        return array.reshape((self.batch, self.channels) + self.size)

    def _columns(self, bottom, i):
        """The column matrix of bottom[i] (recomputed when the buffer holds something else)."""
        if self.one_by_one:
            return bottom[i].data.reshape(self.batch, self.channels, -1)
        prod = self.products
        if self.col_holds != i:
            conv_kernels.im2col(
                self._image(bottom[i].data),
                self.kernel,
                self.pad,
                self.stride,
                self.dilation,
                self.out_size,
                prod.col,
                prod.batch_major,
                self.table,
            )
            self.col_holds = i
        return prod.col

    def Forward_cpu(self, bottom, top):
        weight = self.blobs[0].data
        bias = self.blobs[1].data if self.p.bias_term else None
        self.col_holds = None
        for i in range(len(bottom)):
            col = self._columns(bottom, i)
            self.products.map_from_col(weight, col, top[i].data, bias)

    def Backward_cpu(self, top, propagate_down, bottom):
        prod = self.products
        weight = self.blobs[0]
        want_weight = self.param_propagate_down[0]
        want_bias = self.p.bias_term and self.param_propagate_down[1]
        for i in reversed(range(len(top))):
            if not (want_weight or want_bias or propagate_down[i]):
                continue
            m = prod.load_map(top[i].diff, want_sums=want_bias)
            if want_bias:
                self.blobs[1].diff += prod.sums
            if want_weight:
                prod.weight_grad(m, self._columns(bottom, i), weight.diff)
            if propagate_down[i]:
                if self.one_by_one:
                    prod.col_from_map(weight.data, top[i].diff, bottom[i].diff)
                else:
                    prod.col_from_map(weight.data, top[i].diff, prod.col, m)
                    self.col_holds = None
                    conv_kernels.col2im(
                        prod.col,
                        self.kernel,
                        self.pad,
                        self.stride,
                        self.dilation,
                        self.out_size,
                        self._image(bottom[i].diff),
                        prod.dcol_batch_major,
                        self.table,
                    )


@register_layer("Deconvolution")
class Deconvolution(_ConvolutionBase):
    """The transpose of Convolution (its backward-data pass as a forward), as Caffe.

    x: (N, C, H, W), W: (C, O / g, kh, kw) (Caffe's layout), b: (O,); the output is
    (N, O, OH, OW) with OH = s_h (H - 1) + d_h (kh - 1) + 1 - 2 p_h (likewise OW): the size a
    convolution with the same settings maps back to H x W. Forward:

        y = col2im(W^T x[n]) + b, i.e.
        y[n, o, i s_h - p_h + u d_h, j s_w - p_w + v d_w] += W[c, o, u, v] x[n, c, i, j]

    Backward: with dcol = im2col(dE/dy): dE/dx[n] = W dcol[n], dE/dW += sum_n x[n] dcol[n]^T,
    dE/db += sum over n and pixels of dE/dy.
    """

    example = [
        {
            "bottoms": [(2, 3, 3, 3)],
            "params": {
                "convolution_param": {
                    "num_output": 2,
                    "kernel_size": 3,
                    "stride": 2,
                    "pad": 1,
                    "weight_filler": {"type": "gaussian"},
                    "bias_filler": {"type": "gaussian"},
                }
            },
        },
        {
            "bottoms": [(2, 2, 3, 4)],
            "params": {
                "convolution_param": {
                    "num_output": 4,
                    "kernel_size": 2,
                    "group": 2,
                    "weight_filler": {"type": "gaussian"},
                }
            },
        },
    ]

    keep_top_data = False

    def weight_shape(self):
        return (self.channels, self.p.num_output // self.p.group) + self.kernel

    def _setup_buffers(self, shape):
        size = shape[self.axis + 1 :]
        out_size = tuple(
            st * (s - 1) + d * (k - 1) + 1 - 2 * p
            for s, k, p, st, d in zip(size, self.kernel, self.pad, self.stride, self.dilation)
        )
        if min(out_size) <= 0:
            raise self.error(
                f"output size {out_size[0]}x{out_size[1]} is not positive: input "
                f"{size[0]}x{size[1]}, kernel {self.kernel[0]}x{self.kernel[1]}, "
                f"pad {self.pad[0]}x{self.pad[1]}",
                f"{self.block}.pad",
            )
        self.batch = math.prod(shape[: self.axis])
        self.size, self.out_size = size, out_size
        rows = self.p.num_output * self.kernel[0] * self.kernel[1]
        map_size = size[0] * size[1]
        batch_major = ColumnProducts.choose_batch_major(
            self.batch, self.channels, rows, map_size, self.p.group, self.dtype.itemsize, False
        )
        self.products = ColumnProducts(
            batch=self.batch,
            map_channels=self.channels,
            rows=rows,
            map_size=map_size,
            groups=self.p.group,
            dtype=self.dtype,
            batch_major=batch_major,
        )
        self._out_image_shape = (self.batch, self.p.num_output) + out_size
        self.table = conv_kernels.geometry_table(
            self._out_image_shape, self.kernel, self.pad, self.stride, self.dilation, size
        )
        self.bias_sums = ChannelSums(self.batch, self.p.num_output, out_size[0] * out_size[1], self.dtype)
        self._shape = shape

    def Forward_cpu(self, bottom, top):
        prod = self.products
        weight = self.blobs[0].data
        for i in range(len(bottom)):
            prod.col_from_map(weight, bottom[i].data, prod.col)
            image = top[i].data.reshape(self._out_image_shape)
            conv_kernels.col2im(
                prod.col,
                self.kernel,
                self.pad,
                self.stride,
                self.dilation,
                self.size,
                image,
                prod.dcol_batch_major,
                self.table,
            )
            if self.p.bias_term:
                conv_kernels.add_bias(image.reshape(self.batch, self.p.num_output, -1), self.blobs[1].data)

    def Backward_cpu(self, top, propagate_down, bottom):
        prod = self.products
        weight = self.blobs[0]
        want_weight = self.param_propagate_down[0]
        want_bias = self.p.bias_term and self.param_propagate_down[1]
        for i in reversed(range(len(top))):
            diff = top[i].diff.reshape(self._out_image_shape)
            if want_bias:
                self.blobs[1].diff += self.bias_sums(diff)
            if not (want_weight or propagate_down[i]):
                continue
            conv_kernels.im2col(
                diff,
                self.kernel,
                self.pad,
                self.stride,
                self.dilation,
                self.size,
                prod.col,
                prod.batch_major,
                self.table,
            )
            if want_weight:
                prod.weight_grad(prod.load_map(bottom[i].data), prod.col, weight.diff)
            if propagate_down[i]:
                prod.map_from_col(weight.data, prod.col, bottom[i].diff)


@register_layer("Im2col")
class Im2col(ConvolutionParamBlock, Layer):
    """The column matrix of a convolution as a blob (Caffe's Im2col layer), from
    ``convolution_param`` (kernel, pad, stride, dilation; num_output is not used).

    x: (N, C, H, W) -> y: (N, C kh kw, OH, OW), y[n, (c kh + u) kw + v, i, j] =
    x[n, c, i s_h - p_h + u d_h, j s_w - p_w + v d_w] (0 in the padding).
    Backward: dE/dx = col2im(dE/dy), the adjoint (sums overlapping windows).
    """

    example = {"bottoms": [(2, 2, 4, 4)], "params": {"convolution_param": {"kernel_size": 2, "pad": 1, "stride": 2}}}

    keep_top_data = False

    params = dict(CONVOLUTION_PARAMS, num_output=Field(int, None, min=1, doc="not used"))
    num_bottoms = (1, 1)
    num_tops = (1, 1)

    def LayerSetUp(self, bottom, top):
        self.kernel, self.pad, self.stride, self.dilation = conv_geometry(self.p)
        if bottom[0].num_axes != 4 or self.p.axis not in (1, -3):
            raise self.error(
                f"Im2col takes (N, C, H, W) input with axis 1, got shape {bottom[0].shape}, axis {self.p.axis}",
                f"{self.block}.axis",
            )

    def Reshape(self, bottom, top):
        if bottom[0].num_axes != 4:
            raise self.error(f"Im2col takes (N, C, H, W) input, got shape {bottom[0].shape}")
        n, c, h, w = bottom[0].shape
        self.out_size = tuple(
            conv_output_size(s, k, p, st, d)
            for s, k, p, st, d in zip((h, w), self.kernel, self.pad, self.stride, self.dilation)
        )
        if min(self.out_size) <= 0:
            k, p = self.kernel, self.pad
            raise self.error(
                f"kernel {k[0]}x{k[1]} is larger than the padded input {h + 2 * p[0]}x{w + 2 * p[1]} (input {h}x{w})",
                f"{self.block}.kernel_size",
            )
        top[0].reshape(n, c * self.kernel[0] * self.kernel[1], *self.out_size)
        if getattr(self, "_shape", None) != bottom[0].shape:
            self.table = conv_kernels.geometry_table(
                bottom[0].shape, self.kernel, self.pad, self.stride, self.dilation, self.out_size
            )
            self._shape = bottom[0].shape

    def Forward_cpu(self, bottom, top):
        n, rows = top[0].shape[:2]
        conv_kernels.im2col(
            bottom[0].data,
            self.kernel,
            self.pad,
            self.stride,
            self.dilation,
            self.out_size,
            top[0].data.reshape(n, rows, -1),
            True,
            self.table,
        )

    def Backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            n, rows = top[0].shape[:2]
            conv_kernels.col2im(
                top[0].diff.reshape(n, rows, -1),
                self.kernel,
                self.pad,
                self.stride,
                self.dilation,
                self.out_size,
                bottom[0].diff,
                True,
                self.table,
            )


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


class PoolingWindows:
    """Forward and backward of one pooling geometry on (N, C, H, W) arrays, with the MAX
    argmax kept in an int32 mask (plane index h * W + w)."""

    def __init__(self, method, kernel, pad, stride):
        self.method, self.kernel, self.pad, self.stride = method, kernel, pad, stride
        self.mask = None

    def shape_for(self, shape, out_size):
        out_shape = shape[:2] + out_size
        if self.method == "MAX" and (self.mask is None or self.mask.shape != out_shape):
            self.mask = np.zeros(out_shape, np.int32)  # index 0: valid even before a forward
        return out_shape

    def forward(self, x, y):
        if self.method == "MAX":
            pool_kernels.max_pool_forward(x, self.kernel, self.stride, self.pad, y, self.mask)
        else:
            pool_kernels.ave_pool_forward(x, self.kernel, self.stride, self.pad, y)

    def backward(self, dy, dx):
        if self.method == "MAX":
            pool_kernels.max_pool_backward(dy, self.mask, dx)
        else:
            pool_kernels.ave_pool_backward(dy, self.kernel, self.stride, self.pad, dx)


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
            self.windows = PoolingWindows(self.p.pool, kernel, self.pad, self.stride)
            self.out_shape = self.windows.shape_for(shape, self.out_size)
            self._shape = shape
        for blob in top:
            blob.reshape(self.out_shape)

    def Forward_cpu(self, bottom, top):
        self.windows.forward(bottom[0].data, top[0].data)
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


__all__ = ["Convolution", "Deconvolution", "Im2col", "Pooling", "SPP", "Crop"]
