"""Convolution, Deconvolution and Im2col: Caffe's ConvolutionParameter, its geometry, and the
layers, which run as im2col + matrix products over the whole batch (the column layouts and
products are ``netlayers.kernels.conv_gemm``; im2col/col2im are ``netlayers.kernels.im2col``).
A Convolution with 3x3 kernels, stride 1, at least 32 input and output channels and outputs of
at least 16 x 16 runs as Winograd instead (``netlayers.kernels.winograd``, where ``applies`` has
the rule): F(4x4, 3x3) (``winograd.convolution``), 4x fewer multiplications, measured 1.1x-1.35x
faster than F(2x2, 3x3), itself 1.3x-1.6x faster forward + backward than im2col on VGG's and
ResNet's 64- and 128-channel layers; outputs of 12 x 12 to 15 x 15 with at least 128 channels
and 256 tiles in the batch (ResNet's and VGG's 14 x 14 stage at batch 8) as F(2x2, 3x3), 0.7x-0.9x
im2col's time; and few channels (16 or more, channels times side at least 384, 512 tiles: CIFAR
ResNets, DenseNet, SqueezeNet) from 12 x 12, 0.5x-0.9x im2col's time; small maps (outputs of
7 x 7 to 12 x 12, at least 32 channels and 128 tiles of 4 x 4 in the batch: CIFAR ResNets' last
stage, VGG-style nets at 32 px) as F(4x4, 3x3), 0.7x-0.9x the time before. A dilated 3x3
Convolution whose padding equals its dilation runs as Winograd over the input's phases
(``netlayers.kernels.dilated``, rule in ``dilated.applies``): 64 -> 64 at 64 x 64, dilation 2
and 4, 1.47x and 1.30x faster forward + backward than im2col + GEMM. A depthwise Convolution
(group = channels) runs its own direct kernels (``netlayers.kernels.depthwise``); a grouped 3x3
one with padding 1, stride 1 or 2 and few channels a group (2 to 32 in, at most 32 out:
ResNeXt's, RegNet's) runs the direct grouped kernels
(``netlayers.kernels.grouped``, rule in ``grouped.applies``), 0.3x-0.7x the time of im2col or
grouped Winograd before them.
A stride-1 Convolution with a 1 x r or r x 1 kernel (r 3, 5, 7) runs as 1-D Winograd along
its axis (``netlayers.kernels.winograd1d``: 1.2x-1.6x faster than im2col + GEMM on conv1d's
layers), one with a 5 x 5 kernel as F(4x4, 5x5) (``netlayers.kernels.winograd2d``: 1.3x-2.4x
faster than row strips) and one with a 7 x 7 kernel as F(2x2, 7x7) (1.0x-1.5x), each where its
``applies`` rule says. Other stride-1 Convolutions with
kernels of 5 or more, at least 32 input and output channels and "same" padding run as row
strips (``netlayers.kernels.strips``, rule in ``strips.applies``): kw copies of the input
instead of im2col's kh kw, measured 1.2x-1.4x faster forward + backward than im2col; so do
stride-1 Convolutions with few outputs (at least 32 input channels and 4 times the outputs,
kernels of 3 or more, fewer than 32 outputs, or "same" padding and a batch of output pixels
times kernel rows of at least 5120: prediction heads, SRCNN's last layer), 0.1x-0.99x im2col's
time (im2col's columns cost more than products with so few rows). Before any of these, a
stride-1, one-group Convolution of at most 128 outputs and 16 times as many input channels (8
from 1024 channels, 4 where no Winograd form applies and the padding keeps the map's size)
runs as "kn2row"
(``netlayers.kernels.kn2row``, rule in ``kn2row.applies``): one (outputs x taps, channels)
product an image over the input itself, each output then summing its taps' shifted planes,
0.11x-0.83x the time of the form it replaced (SSD's prediction heads, DenseNet's small maps). A
Convolution with a horizontal stride of 2 and a kernel of 3 or more runs im2col and col2im by
column phases (``netlayers.kernels.deconv.PhaseChunks``, rule in ``deconv.convolution_applies``:
each row de-interleaved once, not read every other entry per tap), 0.85x-0.97x the time.
A stride-1 Convolution of at least 128 input and output channels and 1024 output pixels a
batch whose kernel reads padding for much of its output (at most 72 % of its (output, tap)
pairs inside the image: dilated 3x3 layers of large rates on small maps, DeepLab's atrous
pyramids) runs tap by tap, each tap's product over only the outputs where it reads the image
(``netlayers.kernels.taps``, rule in ``taps.applies``): 512 -> 256 at 33 x 33, dilation 24,
0.39x im2col's time, dilation 12 0.72x-0.96x.
A kernel as large as the unpadded input (one output position: a classifier written as a
convolution, a DCGAN discriminator's last layer) runs as an InnerProduct's products, without
im2col (512 -> 1 on 4 x 4 at batch 64: 5.3 -> 0.6 ms forward + backward, PyTorch 1.7 ms).
After a Winograd forward, the outputs whose receptive field is all zero are set to the bias,
exactly as im2col gives them (``netlayers.kernels.zero_fields``). Only 2 spatial axes are
supported.
"""

import math

import numpy as np

from .. import parallel
from ..blob import Blob
from ..kernels import conv_gemm, deconv, dilated, grouped, kn2row, strips, taps, winograd, winograd1d, winograd2d
from ..kernels import im2col as conv_kernels
from ..kernels.conv_gemm import ChannelSums, ColumnChunks
from ..kernels.depthwise import DepthwiseConvolution
from ..kernels.zero_fields import ZeroFields
from ..layer import Layer
from ..netspec import FILLER, Enum, Field, Where, check_layer, rule_error
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
            self._setup_buffers(shape, bottom)
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

    def _image(self, array):
        """``array`` (a bottom's data or diff) as (N, C, H, W) images."""
        return array.reshape((self.batch, self.channels) + self.size)

    map_direct = False  # one-image chunks for large output maps (``conv_gemm.MAP_DIRECT_BYTES``)

    def _column_chunks(self, image_shape, map_channels, map_size, chunks=ColumnChunks):
        """The GEMM strategy of this layer's geometry (``netlayers.kernels.conv_gemm``): im2col
        runs over ``image_shape``, the products give ``map_channels`` x ``map_size``; ``chunks``:
        ColumnChunks, or its subclass with the phase kernels (``deconv.PhaseChunks``)."""
        return chunks(
            image_shape=image_shape,
            kernel=self.kernel,
            pad=self.pad,
            stride=self.stride,
            dilation=self.dilation,
            map_channels=map_channels,
            map_size=map_size,
            groups=self.p.group,
            dtype=self.dtype,
            map_direct=self.map_direct,
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
        {  # strided 3x3 with a bias: im2col and the product (in bands of rows under a small budget)
            "bottoms": [(2, 3, 9, 9)],
            "params": {
                "convolution_param": {
                    "num_output": 4,
                    "kernel_size": 3,
                    "stride": 2,
                    "weight_filler": {"type": "gaussian"},
                    "bias_filler": {"type": "gaussian"},
                }
            },
        },
        {  # a first layer (3 channels, padded, stride 1): im2col on a zero-padded copy
            "bottoms": [(2, 3, 6, 5)],
            "params": {
                "convolution_param": {
                    "num_output": 4,
                    "kernel_size": 5,
                    "pad": 2,
                    "weight_filler": {"type": "gaussian"},
                    "bias_filler": {"type": "gaussian"},
                }
            },
        },
        {  # dilated, padding equal to the dilation: Winograd over the input's phases where it applies
            "bottoms": [(2, 3, 7, 6)],
            "params": {
                "convolution_param": {
                    "num_output": 4,
                    "kernel_size": 3,
                    "pad": 2,
                    "dilation": 2,
                    "weight_filler": {"type": "gaussian"},
                    "bias_filler": {"type": "gaussian"},
                }
            },
        },
        {  # 1 x 5 along the rows: 1-D Winograd where it applies
            "bottoms": [(2, 3, 2, 9)],
            "params": {
                "convolution_param": {
                    "num_output": 4,
                    "kernel_h": 1,
                    "kernel_w": 5,
                    "pad_h": 0,
                    "pad_w": 2,
                    "weight_filler": {"type": "gaussian"},
                    "bias_filler": {"type": "gaussian"},
                }
            },
        },
        {  # grouped 3x3 with padding 1, few channels a group: the direct grouped kernels
            "bottoms": [(2, 4, 5, 6)],
            "params": {
                "convolution_param": {
                    "num_output": 6,
                    "kernel_size": 3,
                    "pad": 1,
                    "group": 2,
                    "weight_filler": {"type": "gaussian"},
                    "bias_filler": {"type": "gaussian"},
                }
            },
        },
        {  # and with stride 2 (four outputs a group: its four-output passes)
            "bottoms": [(2, 8, 7, 6)],
            "params": {
                "convolution_param": {
                    "num_output": 8,
                    "kernel_size": 3,
                    "pad": 1,
                    "stride": 2,
                    "group": 2,
                    "weight_filler": {"type": "gaussian"},
                    "bias_filler": {"type": "gaussian"},
                }
            },
        },
        {  # depthwise (group = channels), two outputs per channel, strided: the phases
            "bottoms": [(2, 3, 5, 6), (2, 3, 5, 6)],
            "tops": 2,
            "params": {
                "convolution_param": {
                    "num_output": 6,
                    "kernel_size": 3,
                    "pad": 1,
                    "stride": 2,
                    "dilation": [1, 2],
                    "group": 3,
                    "weight_filler": {"type": "gaussian"},
                    "bias_filler": {"type": "gaussian"},
                }
            },
        },
        {  # depthwise 3x3 with stride 1 and padding 1: straight from the planes
            "bottoms": [(2, 3, 6, 7)],
            "params": {
                "convolution_param": {
                    "num_output": 3,
                    "kernel_size": 3,
                    "pad": 1,
                    "group": 3,
                    "weight_filler": {"type": "gaussian"},
                    "bias_filler": {"type": "gaussian"},
                }
            },
        },
        {  # depthwise, stride 1, dilated: one phase, the flipped correlation for the data gradient
            "bottoms": [(2, 3, 5, 6)],
            "params": {
                "convolution_param": {
                    "num_output": 6,
                    "kernel_size": 3,
                    "pad": 2,
                    "dilation": 2,
                    "group": 3,
                    "weight_filler": {"type": "gaussian"},
                    "bias_filler": {"type": "gaussian"},
                }
            },
        },
        {  # depthwise, one output per channel, a small plane: channels last
            "bottoms": [(2, 3, 5, 6)],
            "params": {
                "convolution_param": {
                    "num_output": 3,
                    "kernel_size": 3,
                    "pad": 1,
                    "group": 3,
                    "weight_filler": {"type": "gaussian"},
                    "bias_filler": {"type": "gaussian"},
                }
            },
        },
        {  # depthwise downsampling (3x3, stride 2, pad 1): its data gradient straight into dx
            "bottoms": [(2, 3, 7, 6)],
            "params": {
                "convolution_param": {
                    "num_output": 3,
                    "kernel_size": 3,
                    "pad": 1,
                    "stride": 2,
                    "group": 3,
                    "weight_filler": {"type": "gaussian"},
                    "bias_filler": {"type": "gaussian"},
                }
            },
        },
    ]

    keep_top_data = False
    map_direct = True  # the products of large maps land in NCHW (Deconvolution's maps are columns)

    def weight_shape(self):
        return (self.p.num_output, self.channels // self.p.group) + self.kernel

    def _setup_buffers(self, shape, bottom):
        size = shape[self.axis + 1 :]
        out_size = tuple(
            conv_output_size(s, k, p, st, d)
            for s, k, p, st, d in zip(size, self.kernel, self.pad, self.stride, self.dilation)
        )
        if min(out_size) <= 0:
            raise self._too_small(size)
        self.batch = math.prod(shape[: self.axis])
        self.size, self.out_size = size, out_size
        self._shape = shape
        self.zero_bias = np.zeros(self.p.num_output, self.dtype)
        self.whole_map = False
        if self.p.group == self.channels > 1:  # depthwise: direct kernels, no column buffer
            self.depthwise = DepthwiseConvolution(
                (self.batch, self.channels) + size,
                out_size,
                self.kernel,
                self.pad,
                self.stride,
                self.dilation,
                self.p.num_output // self.channels,
            )
            self.bias_sums = ChannelSums(self.batch, self.p.num_output, out_size[0] * out_size[1], self.dtype)
            self.zero_fields = None
            return
        self.depthwise = None
        self.strips = self.grouped = self.by_taps = self.kn2row = None
        self.bias_sums = ChannelSums(self.batch, self.p.num_output, out_size[0] * out_size[1], self.dtype)
        # a kernel as large as the unpadded input (a classifier as a convolution: VGG's fc6 on
        # 7 x 7, a DCGAN discriminator's last layer) has one output position: an InnerProduct
        self.whole_map = self.kernel == size and self.pad == (0, 0) and self.dilation == (1, 1) and self.p.group == 1
        if self.whole_map:
            self.winograd = self.zero_fields = None
            return
        image_shape = (self.batch, self.channels) + size
        geometry = (self.kernel, self.stride, self.dilation, self.pad, self.p.group, self.channels, self.p.num_output)
        if grouped.applies(*geometry):
            self.winograd = self.zero_fields = None
            self.grouped = grouped.GroupedConvolution(
                image_shape, self.p.num_output, self.stride[0], self.p.group, self.dtype
            )
            return
        self.winograd = self._winograd_form(image_shape, out_size)
        geometry = (self.kernel, self.stride, self.p.group, self.channels, self.p.num_output, size, out_size)
        if kn2row.applies(*geometry, self.winograd is not None):
            geometry = (self.kernel, self.pad, self.dilation, self.dtype)
            self.kn2row = kn2row.Kn2rowConvolution(image_shape, self.p.num_output, *geometry)
            self.winograd = self.zero_fields = None
            return
        if self.winograd is not None:  # its outputs over zero receptive fields set to the bias
            geometry = (self.kernel, self.pad, self.stride, self.dilation, self.p.group)
            self.zero_fields = ZeroFields(image_shape, out_size, *geometry)
            return
        self.zero_fields = None
        shape_rule = (self.channels, self.p.num_output, size, out_size, self.batch)
        if strips.applies(self.kernel, self.stride, self.dilation, self.p.group, *shape_rule):
            self.strips = strips.StripConvolution(
                image_shape, self.p.num_output, self.kernel, self.pad, self.dilation, self.dtype
            )
            return
        tap_rule = (self.kernel, self.stride, self.dilation, self.pad, self.p.group, self.channels, self.p.num_output)
        if taps.applies(*tap_rule, size, out_size, self.batch):
            geometry = (self.kernel, self.pad, self.dilation, out_size, self.dtype)
            self.by_taps = taps.TapConvolution(image_shape, self.p.num_output, *geometry)
            return
        chunks = deconv.PhaseChunks if deconv.convolution_applies(self.kernel, self.stride) else ColumnChunks
        self.chunks = self._column_chunks(image_shape, self.p.num_output, out_size, chunks)

    def _winograd_form(self, image_shape, out_size):
        """The Winograd convolution this geometry runs as (each kind where its ``applies`` rule
        says), or None."""
        geometry = (self.kernel, self.stride, self.dilation, self.pad, self.p.group)
        outputs, channels, itemsize = self.p.num_output, self.channels, self.dtype.itemsize
        if winograd.applies(*geometry, channels, outputs, out_size, self.batch):
            return winograd.convolution(image_shape, outputs, self.pad[0], self.dtype, self.p.group)
        if dilated.applies(*geometry, channels, outputs, out_size, self.batch):
            return dilated.PhaseConvolution(image_shape, outputs, self.dilation, self.dtype)
        if winograd1d.applies(*geometry, channels, outputs, out_size, itemsize):
            return winograd1d.AxisConvolution(image_shape, outputs, self.kernel, self.pad, self.dtype)
        square = (self.kernel, self.stride, self.dilation, self.p.group, channels, outputs)
        if winograd2d.applies(*square, out_size, self.batch):
            side = self.kernel[0]
            return winograd2d.SquareConvolution(image_shape, outputs, side, self.pad, self.dtype, self.p.group)
        return None

    def _output(self, array):
        return array.reshape((self.batch, self.p.num_output) + self.out_size)

    def Forward_cpu(self, bottom, top):
        weight = self.blobs[0].data
        bias = self.blobs[1].data if self.p.bias_term else None
        if self.depthwise is not None:
            for i in range(len(bottom)):
                self.depthwise.forward(
                    self._image(bottom[i].data),
                    weight,
                    self.zero_bias if bias is None else bias,
                    self._output(top[i].data),
                )
            return
        if self.whole_map:  # y = x W^T + b, x and W flattened
            for i in range(len(bottom)):
                x, y = self._flat(bottom[i].data), top[i].data.reshape(self.batch, self.p.num_output)
                parallel.matmul(x, self._flat_weight(weight).T, y)
                if bias is not None:
                    y += bias
            return
        transformed = self._transformed()
        if transformed is not None:
            transformed.filters(weight)
            for i in range(len(bottom)):
                x, y = self._image(bottom[i].data), self._output(top[i].data)
                transformed.forward(x, bias, y)
                if self.zero_fields is not None:
                    self.zero_fields.restore(x, y, self.zero_bias if bias is None else bias)
            return
        for i in range(len(bottom)):
            conv_gemm.convolve(self.chunks, weight, self._image(bottom[i].data), top[i].data, bias)

    def Backward_cpu(self, top, propagate_down, bottom):
        if self.depthwise is not None:
            self._backward_depthwise(top, propagate_down, bottom)
            return
        if self.whole_map:
            self._backward_whole_map(top, propagate_down, bottom)
            return
        transformed = self._transformed()
        if transformed is not None:
            self._backward_transformed(transformed, top, propagate_down, bottom)
            return
        weight = self.blobs[0]
        want_weight = self.param_propagate_down[0]
        want_bias = self.p.bias_term and self.param_propagate_down[1]
        for i in reversed(range(len(top))):
            dy = top[i].diff
            if want_bias:
                self.blobs[1].diff += self.bias_sums(dy)
            if not (want_weight or propagate_down[i]):
                continue
            dx = self._image(bottom[i].diff) if propagate_down[i] else None
            # read here, not in the steps: reading a diff writes the zeros a clear left due,
            # which two workers must not do while worker 0 adds its products into it
            weight_diff = weight.diff if want_weight else None
            conv_gemm.convolve_backward(self.chunks, weight.data, self._image(bottom[i].data), dy, dx, weight_diff)

    def _transformed(self):
        """The Winograd, row-strip, direct grouped, tap-by-tap or kn2row convolution this
        geometry runs as, or None: each takes ``filters(weight)``, ``forward(x, bias, y)`` and ``backward(x,
        dy, dx, weight_diff)``."""
        for form in (self.winograd, self.strips, self.grouped, self.by_taps, self.kn2row):
            if form is not None:
                return form
        return None

    def _backward_transformed(self, transformed, top, propagate_down, bottom):
        weight = self.blobs[0]
        for i in reversed(range(len(top))):
            transformed.filters(weight.data)  # for each top: a split Winograd backward reuses U's buffer
            dy = self._output(top[i].diff)
            if self.p.bias_term and self.param_propagate_down[1]:
                self.blobs[1].diff += self.bias_sums(dy)
            dx = self._image(bottom[i].diff) if propagate_down[i] else None
            weight_diff = weight.diff if self.param_propagate_down[0] else None
            if dx is not None or weight_diff is not None:
                transformed.backward(self._image(bottom[i].data), dy, dx, weight_diff)

    def _flat(self, array):
        return array.reshape(self.batch, -1)

    def _flat_weight(self, array):
        return array.reshape(self.p.num_output, -1)

    def _backward_whole_map(self, top, propagate_down, bottom):
        """dE/dW += dE/dy^T x, dE/dx = dE/dy W (x, W flattened; dE/dy as (N, O))."""
        weight = self.blobs[0]
        for i in reversed(range(len(top))):
            dy = top[i].diff.reshape(self.batch, self.p.num_output)
            if self.p.bias_term and self.param_propagate_down[1]:
                self.blobs[1].diff += self.bias_sums(top[i].diff)
            if self.param_propagate_down[0]:
                parallel.matmul(dy.T, self._flat(bottom[i].data), self._flat_weight(weight.diff), add=True)
            if propagate_down[i]:
                parallel.matmul(dy, self._flat_weight(weight.data), self._flat(bottom[i].diff))

    def _backward_depthwise(self, top, propagate_down, bottom):
        weight = self.blobs[0]
        for i in reversed(range(len(top))):
            dy = self._output(top[i].diff)
            if self.p.bias_term and self.param_propagate_down[1]:
                self.blobs[1].diff += self.bias_sums(dy)
            if self.param_propagate_down[0]:
                self.depthwise.backward_weight(dy, self._image(bottom[i].data), weight.diff)
            if propagate_down[i]:
                self.depthwise.backward_data(dy, weight.data, self._image(bottom[i].diff))


@register_layer("Deconvolution")
class Deconvolution(_ConvolutionBase):
    """The transpose of Convolution (its backward-data pass as a forward), as Caffe.

    x: (N, C, H, W), W: (C, O / g, kh, kw) (Caffe's layout), b: (O,); the output is
    (N, O, OH, OW) with OH = s_h (H - 1) + d_h (kh - 1) + 1 - 2 p_h (likewise OW): the size a
    convolution with the same settings maps back to H x W. Forward:

        y = col2im(W^T x[n]) + b, i.e.
        y[n, o, i s_h - p_h + u d_h, j s_w - p_w + v d_w] += W[c, o, u, v] x[n, c, i, j]

    Backward: with dcol = im2col(dE/dy): dE/dx[n] = W dcol[n], dE/dW += sum_n x[n] dcol[n]^T,
    dE/db += sum over n and pixels of dE/dy. Where ``deconv.subpixel_applies`` (each kernel side
    a multiple of its stride, dilation 1, 16 outputs a group or more, and outputs of at least
    96 x 96 or stride 1 with at most 256 channels a group, in and out) the layer
    runs as one stride-1 Convolution of x with s_h s_w O outputs (a weight set per output phase,
    taken from W) and a pixel shuffle of those phases into y (``deconv.Subpixel``; backward: the
    shuffle's transpose, then the Convolution's backward): 0.67x-0.97x the time on such
    layers. Else, where ``deconv.applies`` (stride >= 2, a kernel at least twice the stride,
    input rows of 8 or more) col2im and im2col run by output phases (the same bits, 0.85x-0.98x
    the time forward + backward). With one channel a group (group = channels = num_output, the
    bilinear upsampling of Caffe's BilinearFiller) it runs as the depthwise convolution from its
    output back to its input, backward (``DepthwiseConvolution``: forward its data gradient,
    backward its forward and weight gradient): 64 channels 4x4/2 from 56 x 56, batch 8,
    forward 21.2 -> 3.0 ms and backward 16.3 -> 6.1 ms; an FCN's 21 channels 64x64/32 from
    12 x 12, batch 1, 30.4 -> 2.4 and 20.1 -> 2.0 ms (against a product a channel).
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
        {  # one channel a group (a bilinear upsampling's): the depthwise kernels, backward
            "bottoms": [(2, 3, 5, 6)],
            "params": {
                "convolution_param": {
                    "num_output": 3,
                    "group": 3,
                    "kernel_size": 4,
                    "stride": 2,
                    "pad": 1,
                    "weight_filler": {"type": "gaussian"},
                    "bias_filler": {"type": "gaussian"},
                }
            },
        },
        {  # rows of 32: the phase kernels (netlayers.kernels.deconv)
            "bottoms": [(2, 2, 2, 32)],
            "params": {
                "convolution_param": {
                    "num_output": 2,
                    "kernel_size": 4,
                    "stride": 2,
                    "pad": 1,
                    "weight_filler": {"type": "gaussian"},
                    "bias_filler": {"type": "gaussian"},
                }
            },
        },
    ]

    keep_top_data = False

    def weight_shape(self):
        return (self.channels, self.p.num_output // self.p.group) + self.kernel

    def _setup_buffers(self, shape, bottom):
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
        self._out_image_shape = (self.batch, self.p.num_output) + out_size
        self.bias_sums = ChannelSums(self.batch, self.p.num_output, out_size[0] * out_size[1], self.dtype)
        self._shape = shape
        self.subpixel = self.depthwise = None
        if self.p.group == self.channels == self.p.num_output > 1:
            # channel by channel (a bilinear upsampling's group = C): the depthwise convolution
            # from the output back to the input, run backward (see ``_forward_depthwise``)
            self.depthwise = DepthwiseConvolution(
                self._out_image_shape, size, self.kernel, self.pad, self.stride, self.dilation, 1
            )
            self.buffer("_zero_bias", (self.p.num_output,))[...] = 0
            return
        group_sizes = (self.channels // self.p.group, self.p.num_output // self.p.group)
        if deconv.subpixel_applies(self.kernel, self.stride, self.dilation, out_size, *group_sizes):
            self._setup_subpixel(size, out_size, bottom)
            return
        column_bytes = self.p.num_output * math.prod(self.kernel) * math.prod(size) * self.dtype.itemsize
        chunks = deconv.PhaseChunks if deconv.applies(self.kernel, self.stride, size[1], column_bytes) else ColumnChunks
        self.chunks = self._column_chunks(self._out_image_shape, self.channels, size, chunks)

    def _setup_subpixel(self, size, out_size, bottom):
        """The inner stride-1 Convolution of the sub-pixel form (``deconv.Subpixel``), its
        bottoms (views of this layer's ``bottom``, set again at each call: no memory of their
        own) and its tops (the phases; their gradient shares their memory: the phases are not
        needed once shuffled)."""
        plan = self.subpixel = deconv.Subpixel(
            self.kernel, self.stride, self.pad, size, out_size, self.channels, self.p.num_output, self.p.group
        )
        count = len(self.spec.bottoms)
        raw = {
            "name": f"{self.name} (sub-pixel)",
            "type": "Convolution",
            "bottom": [f"x{i}" for i in range(count)],
            "top": [f"z{i}" for i in range(count)],
            "convolution_param": {
                "num_output": plan.outputs,
                "kernel_h": plan.kernel[0],
                "kernel_w": plan.kernel[1],
                "pad_h": plan.pad[0],
                "pad_w": plan.pad[1],
                "group": self.p.group,
                "bias_term": False,
            },
        }
        where = self.spec.where
        spec = check_layer(raw, Where(where.file, where.line, self.name))
        self.inner = Convolution(spec, phase=self.phase, dtype=self.dtype, rng=self.rng)
        self._image_shape = (self.batch, self.channels) + size
        self._inner_bottoms = [Blob((), self.dtype, name=name) for name in self.spec.bottoms]
        for blob, source in zip(self._inner_bottoms, bottom):
            blob.view(source, self._image_shape, diff=False)
        self._inner_tops = [Blob((), self.dtype, name=f"z{i}") for i in range(count)]
        self.inner.setup(self._inner_bottoms, self._inner_tops)
        for blob in self._inner_tops:
            blob.use_diff_memory(blob.data.reshape(-1))
        self.buffer("_zero_bias", (self.p.num_output,))[...] = 0

    def _forward_subpixel(self, bottom, top):
        plan, inner = self.subpixel, self.inner
        plan.weights(self.blobs[0].data, inner.blobs[0].data)
        for blob, source in zip(self._inner_bottoms, bottom):
            blob.view(source, self._image_shape, diff=False)
        inner.forward(self._inner_bottoms, self._inner_tops)
        bias = self.blobs[1].data if self.p.bias_term else self._zero_bias
        for z, blob in zip(self._inner_tops, top):
            plan.shuffle(z.data, bias, blob.data.reshape(self._out_image_shape))

    def _backward_subpixel(self, top, propagate_down, bottom):
        plan, inner = self.subpixel, self.inner
        for i, (z, blob) in enumerate(zip(self._inner_tops, top)):
            dy = blob.diff.reshape(self._out_image_shape)
            if self.p.bias_term and self.param_propagate_down[1]:
                self.blobs[1].diff += self.bias_sums(dy)
            plan.unshuffle(dy, z.diff)
            self._inner_bottoms[i].view(bottom[i], self._image_shape, diff=propagate_down[i])
        want_weight = self.param_propagate_down[0]
        inner.param_propagate_down = [want_weight]
        inner.blobs[0].zero_diff()
        inner.backward(self._inner_tops, propagate_down, self._inner_bottoms)
        if want_weight:
            plan.add_weight_grad(inner.blobs[0].diff, self.blobs[0].diff)

    def _forward_depthwise(self, bottom, top):
        """y = the data gradient of the depthwise convolution ``self.depthwise`` (input: this
        layer's output, output: its input) for the output gradient x, plus the bias: each
        channel's taps scattered by its own filter, in compiled kernels over the workers,
        in place of a product per channel (group = channels: products of one row)."""
        weight = self.blobs[0].data
        for i in range(len(bottom)):
            x, y = self._image(bottom[i].data), top[i].data.reshape(self._out_image_shape)
            self.depthwise.backward_data(x, weight, y)
            if self.p.bias_term:
                conv_kernels.add_bias(y.reshape(self.batch, self.p.num_output, -1), self.blobs[1].data)

    def _backward_depthwise(self, top, propagate_down, bottom):
        """dE/dx: the depthwise convolution's forward of dE/dy; dE/dW += its weight gradient
        with dE/dy as its input and x as its output gradient."""
        weight = self.blobs[0]
        for i in reversed(range(len(top))):
            dy = top[i].diff.reshape(self._out_image_shape)
            if self.p.bias_term and self.param_propagate_down[1]:
                self.blobs[1].diff += self.bias_sums(dy)
            if self.param_propagate_down[0]:
                self.depthwise.backward_weight(self._image(bottom[i].data), dy, weight.diff)
            if propagate_down[i]:
                self.depthwise.forward(dy, weight.data, self._zero_bias, self._image(bottom[i].diff))

    def Forward_cpu(self, bottom, top):
        if self.subpixel is not None:
            self._forward_subpixel(bottom, top)
            return
        if self.depthwise is not None:
            self._forward_depthwise(bottom, top)
            return
        chunks = self.chunks
        weight = self.blobs[0].data
        bias = self.blobs[1].data if self.p.bias_term else None
        for i in range(len(bottom)):
            x, y = bottom[i].data, top[i].data.reshape(self._out_image_shape)

            def step(worker, piece, first, x=x, y=y):
                if isinstance(chunks, deconv.PhaseChunks):  # adds the bias itself
                    chunks.image_from_map(worker, weight, chunks.map_matrix(worker, x, piece), y, piece, bias)
                    return
                chunks.image_from_map(worker, weight, chunks.map_matrix(worker, x, piece), y, piece)
                if bias is not None and chunks.last_band(piece):
                    a, b = piece.first, piece.stop
                    conv_kernels.add_bias(y[a:b].reshape(b - a, self.p.num_output, -1), bias)

            chunks.run(step)

    def Backward_cpu(self, top, propagate_down, bottom):
        if self.subpixel is not None:
            self._backward_subpixel(top, propagate_down, bottom)
            return
        if self.depthwise is not None:
            self._backward_depthwise(top, propagate_down, bottom)
            return
        chunks = self.chunks
        weight = self.blobs[0]
        want_weight = self.param_propagate_down[0]
        want_bias = self.p.bias_term and self.param_propagate_down[1]
        for i in reversed(range(len(top))):
            dy = top[i].diff.reshape(self._out_image_shape)
            if want_bias:
                self.blobs[1].diff += self.bias_sums(dy)
            if not (want_weight or propagate_down[i]):
                continue
            x = bottom[i].data
            dx = bottom[i].diff if propagate_down[i] else None
            weight_diff = weight.diff if want_weight else None  # here, not in the steps (above)

            def step(worker, piece, first, x=x, dx=dx, dy=dy, weight_diff=weight_diff):
                col = chunks.columns(worker, dy, piece)
                if want_weight:
                    chunks.add_weight_grad(worker, chunks.map_matrix(worker, x, piece), col, first, weight_diff)
                if dx is not None:
                    chunks.map_from_col(worker, weight.data, col, dx, piece)

            chunks.run(step)
            if want_weight:
                chunks.weight_grad_total(weight_diff)


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
