"""Benchmark: real-size nets forward + backward in netlayers, side by side with PyTorch.

    python tools/bench_nets.py [--nets cifar10_quick,vgg,...|all|zoo|layers|path/to/net.prototxt,...]
                               [--threads 2] [--rounds 7] [--iters N] [--memory] [--busy] [--layers]
                               [--input-shape BLOB=D1,D2,...]

The nets of issue 10's table and LeNet (``ISSUE_NETS``, the default); with ``--nets zoo`` the
Caffe model zoo's deploy nets kept as test data (``ZOO_NETS``: AlexNet, CaffeNet, GoogLeNet,
SqueezeNet 1.0 and 1.1, ResNet-50 and -101, MobileNet v1 and v2, the CIFAR-10 nets; forward
only, see below); with ``--nets all`` or by name, more kinds of net (``NETS``: Network in
Network, ResNet-50's bottleneck blocks, an inception module, Sigmoid and TanH MLPs, ELU and
PReLU convnets, dilated and 1-D convolutions, one large image, AlexNet's classifier, whole
ResNets, GoogLeNet and MobileNet, an FCN-32s with its per-pixel loss, SRCNN, MobileNet v2's
inverted residuals, SE-ResNet and ResNeXt stages, a U-Net, Tiny YOLO's backbone, a Wide ResNet,
ShuffleNet units, Caffe's MNIST autoencoder, Inception-v3's 35 x 35 and 8 x 8 modules,
EfficientNet's MBConv blocks, ENet's bottlenecks); with ``--nets layers``, one layer at a time
(``LAYER_PROBES``: each activation, pooling, normalization, element-wise, structural and loss
layer kind at an early convnet stage's size, ``PROBE_SHAPE``, between a learned Scale and the sum
of its output's squares), to find a kind of layer that runs far slower than PyTorch's;
float32. ``--nets`` also takes net files, mixed with the names: a value holding a ``/`` or
ending in .yaml, .yml or .prototxt is the path of a YAML or Caffe .prototxt net (as
``netlayers.Net`` loads it; ``tools/nets/lenet.prototxt`` is one), benchmarked in its TRAIN
phase (a net without a loss: forward only, in its TEST phase; see below). Its inputs are the
tops of its Input layers (or its net-level ``input``), given fixed random values
(:func:`input_plan`): class indices below the classes of the layer that reads a blob as labels
(SoftmaxWithLoss, Accuracy, ...), an Embed's indices below its ``input_dim``, a
SigmoidCrossEntropyLoss target in [0, 1), an LSTM's continuation 0 then 1, standard normal
values otherwise. A data layer that reads files or runs Python (Data, ImageData, HDF5Data,
WindowData, MemoryData, a Python layer without bottoms; Caffe's train_val nets) gives way to an
Input layer of the shapes it gives, so that what is timed is the net, as for the built-in nets:
the layer is set up alone on its source to learn them (one batch read); where its source cannot
be read, they come from its params (``batch_size``, ``crop_size``, the channels from
``force_color``/``force_gray``, ``is_color`` or the ``mean_value``s) and from ``--input-shape
BLOB=D1,D2,...`` for what those do not say (e.g. ``--input-shape data=64,1,28,28``); a note
under the net's line gives the shapes. A net file that cannot be read or checked, or a data
layer whose shapes stay unknown, is a one-line error (exit status 1) before anything runs; a
net that fails to build, when its turn comes.

One *step* is: clear the param gradients, forward, backward (PyTorch: ``zero_grad()``,
forward, ``loss.backward()``); the loss is Caffe's, on both sides: every top's loss weight
(``loss_weight``; 1 for a loss layer's first top by default) times its sum, added up. Both
sides run with the same thread count (``--threads``, default 2: ``torch.set_num_threads``, and
threadpoolctl plus numba's pool for netlayers) on the same fixed batch with the same weights:
PyTorch's net is built from the netlayers spec layer by layer (:func:`torch_net`, whose
``TRANSLATED_TYPES`` are the layer types it translates) and takes netlayers' initial params.
The netlayers net is built as a solver builds its TRAIN net (``share_memory=True``: blobs whose
gradients are never alive at once share diff memory). Before timing, both losses and all param
gradients are compared. If they differ (loss by more than 1e-4 relative, a gradient by more
than 3e-2 in relative norm, ``GRADIENT_TOLERANCE``), a float64 referee decides
(:class:`Float64Referee`): both sides run the step again in float64 from the same params and
inputs. If those agree (to 1e-6), the float32 difference is rounding, amplified by a deep net
(a whole ResNet at batch 2 to 4: 3e-2 to 0.12 between the sides), and the net is timed, with a
note giving each side's distance from its float64 run; the run stops with an error if the
float64 runs differ too (a benchmark of two different computations is worthless) or if
netlayers' float32 strays more than 3 times as far as PyTorch's (``ROUNDING_FACTOR``; the
error names a SoftmaxWithLoss that clamped a label's probability at FLT_MIN, as Caffe's does
and PyTorch's does not, or at DBL_MIN in the float64 runs: :func:`clamp_cause`). A net whose layers draw random
numbers (Dropout) is timed on both sides without that check; a net with a layer the twin does
not translate runs in netlayers alone; a one-line note under the net's line says which.

A net without a loss (no top of nonzero loss weight: :func:`has_loss`; a Caffe deploy net,
with a net-level ``input`` or an Input layer, ending in Softmax or a plain InnerProduct) has
no backward: it is benchmarked *forward only*, as inference, on both sides. netlayers builds
its TEST phase (BatchNorm uses its stored statistics, Dropout passes its bottom on; statistics
never stored, a net from a file without weights, are set to mean 0 and variance 1:
:func:`settle_batch_norms`) and a step is ``net.forward()``; PyTorch's twin is built from the
TEST-phase layers and runs in eval mode under ``torch.no_grad()``. Before timing, every
output blob of the net (the tops no layer reads, ``Net.outputs``) is compared: netlayers' and
the twin's must agree to ``LOSS_TOLERANCE`` in relative norm (:func:`check_same_outputs`), or
the float64 referee decides, as for a step.
Its GEMM floor counts the forward products only; its line reads "forward only" where the
loss would be, with a note, and its table row has "(forward only)" after its title.
``--memory`` and ``--busy`` measure the same forward-only steps.

Timing: after warm-up, ``--rounds`` rounds; in each, both sides run ``--iters`` steps in turn
(the order flips every round, with a pause of ``--pause`` seconds, default 0.5, before each run
so that the other side's idle BLAS/OpenMP threads have stopped spinning: OpenBLAS's spin for
about 0.1 s, and with the 0.05 s pause used before, the old netlayers' spinning OpenBLAS threads
slowed PyTorch's next run, LeNet's ratio reading 0.66x instead of 0.94x). Reported per net: the
median ms per step of each side, the median of the per-round ratios netlayers / PyTorch, and the *GEMM floor*: the net's
convolution and InnerProduct FLOPs of a forward + backward step (2*M*N*K per product; backward
is twice the forward, less the data gradient of layers whose bottom needs none, such as the
first layer's) divided by numpy's float32 matmul rate measured in the same run (a 2048x2048
product, best of 5, measured at the start and after each net; the best is used), i.e. the time
a perfect implementation would need; and each side's time over that floor.

``--memory`` also measures the peak working memory of each side: in a fresh subprocess per net
and side, the growth of the process's peak RSS while building the net and running 3 steps
(the peak is reset after the imports and the input batch; see :func:`reset_peak_rss`).
``--busy`` runs every round twice: quiet, then while one competing process (a child of the
benchmark that keeps one core busy, :func:`busy_process`; stopped through the quiet halves)
runs, and reports the *share of speed kept* by each side: the median of its per-round ratios
quiet time / busy time (100 %: unharmed; 50 %: half as fast). Issue 10 asks that netlayers keep
at least PyTorch's share.
``--layers`` prints netlayers' per-layer forward/backward times of each net. Without PyTorch,
netlayers runs alone. The last thing printed is a markdown table for the README.
"""

import argparse
import contextlib
import copy
import functools
import math
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS.parent))
sys.path.insert(0, str(TOOLS))

from bench_lenet import lenet_spec  # noqa: E402

import netlayers  # noqa: E402
from netlayers.errors import NetlayersError  # noqa: E402

LOSS_TOLERANCE = 1e-4  # relative
GRADIENT_TOLERANCE = 3e-2  # relative norm of the difference (see check_same_computation)
NOISE_FLOOR = 1e-4  # of the largest gradient's norm: below it a gradient is rounding noise
#: the float64 referee (:class:`Float64Referee`): both sides in float64 must agree to this
REFEREE_TOLERANCE = 1e-6
#: and netlayers' float32 may stray from float64 up to this many times PyTorch's float32
ROUNDING_FACTOR = 3.0
SEED = 1


# -- net specs -------------------------------------------------------------------------------
MSRA = {"type": "msra"}
XAVIER = {"type": "xavier"}
ZERO = {"type": "constant"}


def input_layer(batch, *shape):
    return {
        "name": "data",
        "type": "Input",
        "top": ["data", "label"],
        "input_param": {"shape": [{"dim": [batch, *shape]}, {"dim": [batch]}]},
    }


def conv(name, bottom, num_output, kernel, *, pad=0, stride=1, group=1, bias=True, type="Convolution"):
    param = {"num_output": num_output, "kernel_size": kernel, "pad": pad, "stride": stride, "group": group}
    param["weight_filler"] = MSRA
    if bias:
        param["bias_filler"] = ZERO
    else:
        param["bias_term"] = False
    return {"name": name, "type": type, "bottom": bottom, "top": name, "convolution_param": param}


def relu(name, blob, slope=0.0):
    """A ReLU in place; ``slope``: Caffe's leaky ReLU (``negative_slope``)."""
    layer = {"name": name, "type": "ReLU", "bottom": blob, "top": blob}
    return {**layer, "relu_param": {"negative_slope": slope}} if slope else layer


def activation(name, blob, kind):
    """An activation layer of type ``kind`` (ReLU, Sigmoid, TanH, ELU, PReLU...) in place."""
    return {"name": name, "type": kind, "bottom": blob, "top": blob}


def pool(name, bottom, method, kernel=None, stride=None, pad=0):
    """Pooling with Caffe's rounding (up); no kernel: global pooling."""
    if kernel is None:
        param = {"pool": method, "global_pooling": True}
    else:
        param = {"pool": method, "kernel_size": kernel, "stride": stride, "pad": pad}
    return {"name": name, "type": "Pooling", "bottom": bottom, "top": name, "pooling_param": param}


def inner_product(name, bottom, num_output):
    param = {"num_output": num_output, "weight_filler": XAVIER, "bias_filler": ZERO}
    return {"name": name, "type": "InnerProduct", "bottom": bottom, "top": name, "inner_product_param": param}


def lrn(name, bottom):
    param = {"local_size": 5, "alpha": 1e-4, "beta": 0.75}
    return {"name": name, "type": "LRN", "bottom": bottom, "top": name, "lrn_param": param}


def batch_norm_scale(name, blob):
    """BatchNorm (batch statistics in TRAIN) then Scale with a bias, both in place."""
    return [
        {"name": f"{name}_bn", "type": "BatchNorm", "bottom": blob, "top": blob},
        {"name": f"{name}_scale", "type": "Scale", "bottom": blob, "top": blob, "scale_param": {"bias_term": True}},
    ]


def loss(bottom):
    return {"name": "loss", "type": "SoftmaxWithLoss", "bottom": [bottom, "label"], "top": "loss"}


def net_spec(name, layers):
    return {"name": name, "layers": layers}


def cifar10_quick(batch=100):
    """Caffe's examples/cifar10/cifar10_quick_train_test.prototxt (msra/xavier fillers)."""
    return net_spec(
        "cifar10_quick",
        [
            input_layer(batch, 3, 32, 32),
            conv("conv1", "data", 32, 5, pad=2),
            pool("pool1", "conv1", "MAX", 3, 2),
            relu("relu1", "pool1"),
            conv("conv2", "pool1", 32, 5, pad=2),
            relu("relu2", "conv2"),
            pool("pool2", "conv2", "AVE", 3, 2),
            conv("conv3", "pool2", 64, 5, pad=2),
            relu("relu3", "conv3"),
            pool("pool3", "conv3", "AVE", 3, 2),
            inner_product("ip1", "pool3", 64),
            inner_product("ip2", "ip1", 10),
            loss("ip2"),
        ],
    )


def vgg_blocks(bottom, widths):
    """VGG-style blocks after ``bottom``: per width two 3x3 convolutions (pad 1, ReLU) and a 2/2
    max pool. Returns the layers and the last top."""
    layers = []
    for block, width in enumerate(widths, 1):
        for k in (1, 2):
            name = f"conv{block}_{k}"
            layers += [conv(name, bottom, width, 3, pad=1), relu(f"relu{block}_{k}", name)]
            bottom = name
        layers.append(pool(f"pool{block}", bottom, "MAX", 2, 2))
        bottom = f"pool{block}"
    return layers, bottom


def vgg(batch=8, size=64, widths=(64, 128)):
    """VGG-style blocks (:func:`vgg_blocks`), InnerProduct 10."""
    layers, bottom = vgg_blocks("data", widths)
    return net_spec("vgg", [input_layer(batch, 3, size, size), *layers, inner_product("fc", bottom, 10), loss("fc")])


def resnet(batch=16, channels=64, size=32, blocks=2):
    """A 3x3 stem to ``channels``, then ResNet basic blocks (conv-BN-Scale-ReLU-conv-BN-Scale,
    Eltwise SUM with the block's input, ReLU), global average pooling, InnerProduct 10."""
    layers = [input_layer(batch, 3, size, size), conv("stem", "data", channels, 3, pad=1, bias=False)]
    layers += [*batch_norm_scale("stem", "stem"), relu("stem_relu", "stem")]
    bottom = "stem"
    for b in range(1, blocks + 1):
        a, c = f"res{b}a", f"res{b}b"
        layers += [conv(a, bottom, channels, 3, pad=1, bias=False), *batch_norm_scale(a, a), relu(f"{a}_relu", a)]
        layers += [conv(c, a, channels, 3, pad=1, bias=False), *batch_norm_scale(c, c)]
        layers += [{"name": f"res{b}", "type": "Eltwise", "bottom": [bottom, c], "top": f"res{b}"}]
        layers.append(relu(f"res{b}_relu", f"res{b}"))
        bottom = f"res{b}"
    layers += [pool("pool", bottom, "AVE"), inner_product("fc", "pool", 10), loss("fc")]
    return net_spec("resnet", layers)


def mlp(batch=256, widths=(784, 2048, 2048, 10)):
    """InnerProducts of the given widths with ReLU between them."""
    layers, bottom = [input_layer(batch, widths[0])], "data"
    for k, width in enumerate(widths[1:], 1):
        layers.append(inner_product(f"ip{k}", bottom, width))
        if k < len(widths) - 1:
            layers.append(relu(f"relu{k}", f"ip{k}"))
        bottom = f"ip{k}"
    return net_spec("mlp", [*layers, loss(bottom)])


def alexnet(batch=8, size=227):
    """AlexNet's convolutions with LRN and group 2 (without the big InnerProducts: fc 10)."""
    return net_spec(
        "alexnet",
        [
            input_layer(batch, 3, size, size),
            conv("conv1", "data", 96, 11, stride=4),
            relu("relu1", "conv1"),
            lrn("norm1", "conv1"),
            pool("pool1", "norm1", "MAX", 3, 2),
            conv("conv2", "pool1", 256, 5, pad=2, group=2),
            relu("relu2", "conv2"),
            lrn("norm2", "conv2"),
            pool("pool2", "norm2", "MAX", 3, 2),
            conv("conv3", "pool2", 384, 3, pad=1),
            relu("relu3", "conv3"),
            conv("conv4", "conv3", 384, 3, pad=1, group=2),
            relu("relu4", "conv4"),
            conv("conv5", "conv4", 256, 3, pad=1, group=2),
            relu("relu5", "conv5"),
            pool("pool5", "conv5", "MAX", 3, 2),
            inner_product("fc", "pool5", 10),
            loss("fc"),
        ],
    )


def depthwise(batch=16, channels=128, size=28, blocks=2):
    """Depthwise-separable blocks (3x3 with group = channels, pad 1, ReLU; 1x1, ReLU), global
    average pooling, InnerProduct 10."""
    layers, bottom = [input_layer(batch, channels, size, size)], "data"
    for b in range(1, blocks + 1):
        dw, pw = f"dw{b}", f"pw{b}"
        layers += [conv(dw, bottom, channels, 3, pad=1, group=channels), relu(f"{dw}_relu", dw)]
        layers += [conv(pw, dw, channels, 1), relu(f"{pw}_relu", pw)]
        bottom = pw
    return net_spec("depthwise", [*layers, pool("pool", bottom, "AVE"), inner_product("fc", "pool", 10), loss("fc")])


def deconvolution(batch=16, channels_in=64, channels_out=32, size=16):
    """Deconvolution stride 2 (kernel 4, pad 1): size -> 2 * size, then InnerProduct 10."""
    layers = [
        input_layer(batch, channels_in, size, size),
        conv("deconv", "data", channels_out, 4, pad=1, stride=2, type="Deconvolution"),
        relu("relu", "deconv"),
        inner_product("fc", "deconv", 10),
    ]
    return net_spec("deconvolution", [*layers, loss("fc")])


# -- more kinds of net (beyond issue 10's table) -----------------------------------------------
def nin(batch=16):
    """Network in Network on CIFAR-10 (Lin et al.; Caffe model zoo): 5x5 and 3x3 convolutions,
    each followed by two 1x1 convolutions ("cccp"), ReLUs, max and average pools, and global
    average pooling of 10 maps as the classifier (the dropout layers left out)."""
    layers, bottom = [input_layer(batch, 3, 32, 32)], "data"
    stages = [
        (("conv1", 192, 5, 2), ("cccp1", 160, 1, 0), ("cccp2", 96, 1, 0)),
        (("conv2", 192, 5, 2), ("cccp3", 192, 1, 0), ("cccp4", 192, 1, 0)),
        (("conv3", 192, 3, 1), ("cccp5", 192, 1, 0)),
    ]
    for stage, convs in enumerate(stages, 1):
        for name, width, kernel, pad in convs:
            layers += [conv(name, bottom, width, kernel, pad=pad), relu(f"{name}_relu", name)]
            bottom = name
        if stage < 3:
            layers.append(pool(f"pool{stage}", bottom, "MAX" if stage == 1 else "AVE", 3, 2))
            bottom = f"pool{stage}"
    layers += [conv("cccp6", bottom, 10, 1), pool("pool3", "cccp6", "AVE")]
    return net_spec("nin", [*layers, loss("pool3")])


def bottleneck(batch=8, size=112):
    """ResNet-50's opening: a 7x7 stride-2 stem with BatchNorm + Scale + ReLU, a 3/2 max pool,
    then two bottleneck blocks (1x1, 3x3, 1x1 with a 1x1 projection; the second with stride 2),
    global average pooling, InnerProduct 10."""
    layers = [input_layer(batch, 3, size, size), conv("conv1", "data", 64, 7, pad=3, stride=2, bias=False)]
    layers += [*batch_norm_scale("conv1", "conv1"), relu("conv1_relu", "conv1"), pool("pool1", "conv1", "MAX", 3, 2)]
    bottom = "pool1"
    for b, (mid, out, stride) in enumerate([(64, 256, 1), (128, 512, 2)], 1):
        n = f"res{b}"
        layers += [
            conv(f"{n}_proj", bottom, out, 1, stride=stride, bias=False),
            *batch_norm_scale(f"{n}_proj", f"{n}_proj"),
        ]
        layers += [conv(f"{n}a", bottom, mid, 1, stride=stride, bias=False), *batch_norm_scale(f"{n}a", f"{n}a")]
        layers += [relu(f"{n}a_relu", f"{n}a"), conv(f"{n}b", f"{n}a", mid, 3, pad=1, bias=False)]
        layers += [*batch_norm_scale(f"{n}b", f"{n}b"), relu(f"{n}b_relu", f"{n}b")]
        layers += [conv(f"{n}c", f"{n}b", out, 1, bias=False), *batch_norm_scale(f"{n}c", f"{n}c")]
        layers += [{"name": n, "type": "Eltwise", "bottom": [f"{n}_proj", f"{n}c"], "top": n}, relu(f"{n}_relu", n)]
        bottom = n
    layers += [pool("pool", bottom, "AVE"), inner_product("fc", "pool", 10), loss("fc")]
    return net_spec("bottleneck", layers)


def inception(batch=8, size=28, channels=192):
    """GoogLeNet's inception (3a) module: 1x1; 1x1 -> 3x3; 1x1 -> 5x5; 3x3 max pool -> 1x1, each
    with ReLU, joined by Concat; global average pooling, InnerProduct 10."""
    layers = [input_layer(batch, channels, size, size)]
    branches = [[("b1", 64, 1)], [("b2_reduce", 96, 1), ("b2", 128, 3)], [("b3_reduce", 16, 1), ("b3", 32, 5)]]
    for branch in branches:
        bottom = "data"
        for name, width, kernel in branch:
            layers += [conv(name, bottom, width, kernel, pad=kernel // 2), relu(f"{name}_relu", name)]
            bottom = name
    layers += [pool("b4_pool", "data", "MAX", 3, 1, pad=1), conv("b4", "b4_pool", 32, 1), relu("b4_relu", "b4")]
    layers.append({"name": "concat", "type": "Concat", "bottom": ["b1", "b2", "b3", "b4"], "top": "concat"})
    layers += [pool("pool", "concat", "AVE"), inner_product("fc", "pool", 10), loss("fc")]
    return net_spec("inception", layers)


def squashing_mlp(kind="Sigmoid", batch=100, widths=(784, 1000, 500, 250, 30, 10)):
    """The encoder of Caffe's MNIST autoencoder (784-1000-500-250-30) with ``kind`` (Sigmoid or
    TanH) between the InnerProducts, and a classifier of 10."""
    layers, bottom = [input_layer(batch, widths[0])], "data"
    for k, width in enumerate(widths[1:], 1):
        layers.append(inner_product(f"ip{k}", bottom, width))
        if k < len(widths) - 1:
            layers.append(activation(f"act{k}", f"ip{k}", kind))
        bottom = f"ip{k}"
    return net_spec(f"{kind.lower()}_mlp", [*layers, loss(bottom)])


def strided_convnet(kind="ELU", batch=32):
    """3x3 convolutions 32-64-64-128 (stride 1, 2, 1, 2) at 32 px, each followed by ``kind``
    (ELU or PReLU), global average pooling, InnerProduct 10."""
    layers, bottom = [input_layer(batch, 3, 32, 32)], "data"
    for k, (width, stride) in enumerate([(32, 1), (64, 2), (64, 1), (128, 2)], 1):
        layers += [conv(f"conv{k}", bottom, width, 3, pad=1, stride=stride), activation(f"act{k}", f"conv{k}", kind)]
        bottom = f"conv{k}"
    layers += [pool("pool", bottom, "AVE"), inner_product("fc", "pool", 10), loss("fc")]
    return net_spec(f"{kind.lower()}_convnet", layers)


def dilated_conv(name, bottom, num_output, kernel, rate):
    """A convolution with dilation ``rate`` and padding ``rate`` (the output keeps its size)."""
    layer = conv(name, bottom, num_output, kernel, pad=rate)
    layer["convolution_param"]["dilation"] = rate
    return layer


def dilated(batch=4, size=64, width=64):
    """A context module (Yu and Koltun): 3x3 convolutions with dilations 1, 2, 4 and 8 (padding
    equal to the dilation), ReLU after each, global average pooling, InnerProduct 10."""
    layers = [input_layer(batch, 3, size, size), conv("conv0", "data", width, 3, pad=1), relu("relu0", "conv0")]
    bottom = "conv0"
    for k, rate in enumerate([1, 2, 4, 8], 1):
        layers += [dilated_conv(f"conv{k}", bottom, width, 3, rate), relu(f"relu{k}", f"conv{k}")]
        bottom = f"conv{k}"
    layers += [pool("pool", bottom, "AVE"), inner_product("fc", "pool", 10), loss("fc")]
    return net_spec("dilated", layers)


def row_conv(name, bottom, num_output):
    """A 1 x 5 convolution along the rows, padded 0 x 2."""
    layer = conv(name, bottom, num_output, 1)
    layer["convolution_param"].update({"kernel_size": [1, 5], "pad": [0, 2]})
    return layer


def conv1d(batch=32, length=256, channels=64, width=128):
    """Convolutions along one axis (kernel 1x5, pad 0x2, as text and audio nets run them in
    Caffe): three of ``width`` channels with ReLU, global max pooling, InnerProduct 10."""
    layers, bottom = [input_layer(batch, channels, 1, length)], "data"
    for k in range(1, 4):
        layers += [row_conv(f"conv{k}", bottom, width), relu(f"relu{k}", f"conv{k}")]
        bottom = f"conv{k}"
    layers += [pool("pool", bottom, "MAX"), inner_product("fc", "pool", 10), loss("fc")]
    return net_spec("conv1d", layers)


def one_big_image(size=224):
    """One 224-pixel image through VGG-style blocks 32-64-128 (two 3x3 convolutions and a 2/2
    max pool each), a 1x1 score layer and global average pooling (a batch of 1, as
    segmentation nets run)."""
    layers, bottom = vgg_blocks("data", (32, 64, 128))
    layers += [conv("score", bottom, 10, 1), pool("pool", "score", "AVE")]
    return net_spec("one_big_image", [input_layer(1, 3, size, size), *layers, loss("pool")])


def mobilenet_tail(batch=8, size=28, width=256):
    """MobileNet's last stages, from 28 x 28 (``size``) to 7 x 7: depthwise 3x3 (stride 2 where
    the size halves) then pointwise 1x1, each with BatchNorm + Scale + ReLU; ``width`` the
    first depthwise layer's channels (MobileNet: 256), doubling where the size halves; global
    average pooling, InnerProduct 10."""
    layers, bottom = [input_layer(batch, width, size, size)], "data"
    plan = [(width, 2, 2 * width), (2 * width, 1, 2 * width), (2 * width, 1, 2 * width)]
    plan += [(2 * width, 2, 4 * width), (4 * width, 1, 4 * width)]
    for k, (channels, stride, out) in enumerate(plan):
        dw, pw = f"dw{k}", f"pw{k}"
        layers += [conv(dw, bottom, channels, 3, pad=1, stride=stride, group=channels, bias=False)]
        layers += [*batch_norm_scale(dw, dw), relu(f"{dw}_relu", dw), conv(pw, dw, out, 1, bias=False)]
        layers += [*batch_norm_scale(pw, pw), relu(f"{pw}_relu", pw)]
        bottom = pw
    layers += [pool("pool", bottom, "AVE"), inner_product("fc", "pool", 10), loss("fc")]
    return net_spec("mobilenet_tail", layers)


def bottleneck_block(layers, name, bottom, width, stride, project, *, out=None, group=1, gate=False, stride_3x3=False):
    """A ResNet bottleneck block appended to ``layers``: 1x1 (``stride``, Caffe's ResNet layout;
    with ``stride_3x3`` the 3x3 takes it, as ResNeXt's) to ``width``, 3x3 (of ``group`` groups:
    ResNeXt's cardinality), 1x1 to ``out`` (default 4 ``width``), BatchNorm + Scale after each,
    ReLU after the first two; with ``gate`` a squeeze-and-excitation gate (:func:`se_gate`) on
    the last; added to the block's input, or with ``project`` to its 1x1 projection
    (``stride``), then ReLU."""
    out = 4 * width if out is None else out
    shortcut = bottom
    if project:
        shortcut = f"{name}_proj"
        layers += [conv(shortcut, bottom, out, 1, stride=stride, bias=False)]
        layers += batch_norm_scale(shortcut, shortcut)
    a, b, c = f"{name}a", f"{name}b", f"{name}c"
    first, middle = (1, stride) if stride_3x3 else (stride, 1)
    layers += [conv(a, bottom, width, 1, stride=first, bias=False), *batch_norm_scale(a, a), relu(f"{a}_relu", a)]
    layers += [conv(b, a, width, 3, pad=1, stride=middle, group=group, bias=False)]
    layers += [*batch_norm_scale(b, b), relu(f"{b}_relu", b)]
    layers += [conv(c, b, out, 1, bias=False), *batch_norm_scale(c, c)]
    if gate:
        c = se_gate(layers, name, c, out)
    layers += [{"name": name, "type": "Eltwise", "bottom": [shortcut, c], "top": name}, relu(f"{name}_relu", name)]
    return name


def se_gate(layers, name, bottom, channels, reduction=16):
    """A squeeze-and-excitation gate (Hu et al.) appended to ``layers``: global average pooling
    of ``bottom``, InnerProduct to ``channels`` / ``reduction``, ReLU, InnerProduct back to
    ``channels``, Sigmoid, and a Scale of two bottoms (axis 0) multiplying each map of ``bottom``
    by its image's gate; returns the gated top."""
    squeeze, down, up, gated = f"{name}_squeeze", f"{name}_down", f"{name}_up", f"{name}_gated"
    layers += [pool(squeeze, bottom, "AVE"), inner_product(down, squeeze, channels // reduction)]
    layers += [relu(f"{down}_relu", down), inner_product(up, down, channels)]
    layers.append(activation(f"{up}_sigmoid", up, "Sigmoid"))
    scale = {"name": f"{name}_scale", "type": "Scale", "bottom": [bottom, up], "top": gated}
    layers.append({**scale, "scale_param": {"axis": 0}})
    return gated


def resnet50_last_stage(batch=8, size=14, width=512):
    """ResNet-50's last stage from 14 x 14 (``size``) to 7 x 7: a bottleneck block with stride 2
    and a 1x1 projection (1024 -> 512, 3x3 512, 1x1 -> 2048 for ``width`` 512), then an identity
    block; BatchNorm + Scale after each convolution; global average pooling, InnerProduct 10."""
    layers, bottom = [input_layer(batch, 2 * width, size, size)], "data"
    for b, stride in enumerate((2, 1), 1):
        bottom = bottleneck_block(layers, f"res{b}", bottom, width, stride, project=stride != 1)
    layers += [pool("pool", bottom, "AVE"), inner_product("fc", "pool", 10), loss("fc")]
    return net_spec("resnet50_last_stage", layers)


def vgg16_conv5(batch=8, size=14, width=512):
    """VGG-16's conv5 block: three 3x3 convolutions of ``width`` channels at 14 x 14 (``size``)
    with ReLU, a 2x2 max pool, InnerProduct 10."""
    layers, bottom = [input_layer(batch, width, size, size)], "data"
    for k in range(1, 4):
        name = f"conv5_{k}"
        layers += [conv(name, bottom, width, 3, pad=1), relu(f"relu5_{k}", name)]
        bottom = name
    layers += [pool("pool5", bottom, "MAX", 2, 2), inner_product("fc", "pool5", 10), loss("fc")]
    return net_spec("vgg16_conv5", layers)


def lstm(steps=50, streams=32, features=256, hidden=512):
    """Caffe's LSTM over ``steps`` time steps of ``streams`` sequences (cont 1 throughout, h_0
    and c_0 zero, from a DummyData layer), then InnerProduct 10 at every step (axis 2) and
    SoftmaxWithLoss over steps and streams."""
    dummy = {"dim": [steps, streams]}, {"dim": [1, streams, hidden]}, {"dim": [1, streams, hidden]}
    fc = inner_product("fc", "lstm", 10)
    fc["inner_product_param"]["axis"] = 2
    layers = [
        {
            "name": "data",
            "type": "Input",
            "top": ["data", "label"],
            "input_param": {"shape": [{"dim": [steps, streams, features]}, {"dim": [steps, streams]}]},
        },
        {
            "name": "states",
            "type": "DummyData",
            "top": ["cont", "h0", "c0"],
            "dummy_data_param": {
                "shape": list(dummy),
                "data_filler": [{"type": "constant", "value": v} for v in (1, 0, 0)],
            },
        },
        {
            "name": "lstm",
            "type": "LSTM",
            "bottom": ["data", "cont", "h0", "c0"],
            "top": ["lstm", "hT", "cT"],
            "recurrent_param": {
                "num_output": hidden,
                "expose_hidden": True,
                "weight_filler": XAVIER,
                "bias_filler": ZERO,
            },
        },
        fc,
        {**loss("fc"), "softmax_param": {"axis": 2}},
    ]
    return net_spec("lstm", layers)


def classifier_head(batch=8):
    """AlexNet's classifier: InnerProducts 9216-4096-4096-10 with ReLU (dropout left out)."""
    layers = [input_layer(batch, 256, 6, 6), inner_product("fc6", "data", 4096), relu("relu6", "fc6")]
    layers += [inner_product("fc7", "fc6", 4096), relu("relu7", "fc7"), inner_product("fc8", "fc7", 10)]
    return net_spec("classifier_head", [*layers, loss("fc8")])


def basic_block(layers, name, bottom, width, stride, project=None):
    """A ResNet basic block appended to ``layers``: 3x3 (stride ``stride``) -> BatchNorm + Scale
    -> ReLU -> 3x3 -> BatchNorm + Scale, plus the shortcut (the identity, or with ``project``,
    by default where the block downsamples, a 1x1 projection of stride ``stride`` with
    BatchNorm + Scale), Eltwise SUM, ReLU."""
    a, b = f"{name}_a", f"{name}_b"
    layers += [conv(a, bottom, width, 3, pad=1, stride=stride, bias=False), *batch_norm_scale(a, a)]
    layers += [relu(f"{a}_relu", a)]
    layers += [conv(b, a, width, 3, pad=1, bias=False), *batch_norm_scale(b, b)]
    shortcut = bottom
    if stride != 1 if project is None else project:
        shortcut = f"{name}_proj"
        layers += [conv(shortcut, bottom, width, 1, stride=stride, bias=False), *batch_norm_scale(shortcut, shortcut)]
    layers += [{"name": name, "type": "Eltwise", "bottom": [b, shortcut], "top": name}, relu(f"{name}_relu", name)]
    return name


def cifar_resnet(batch=32, blocks=3, widths=(16, 32, 64), size=32):
    """The CIFAR-10 ResNet of He et al. (ResNet-20 for ``blocks`` 3): a 3x3 stem of 16
    channels, then three stages of basic blocks at 16, 32 and 64 channels on 32, 16 and 8
    pixels (the first block of a later stage downsamples, with a 1x1 projection), global average
    pooling, InnerProduct 10."""
    layers = [input_layer(batch, 3, size, size), conv("stem", "data", widths[0], 3, pad=1, bias=False)]
    layers += [*batch_norm_scale("stem", "stem"), relu("stem_relu", "stem")]
    bottom = "stem"
    for stage, width in enumerate(widths):
        for k in range(blocks):
            bottom = basic_block(layers, f"s{stage}b{k}", bottom, width, 2 if stage and not k else 1)
    layers += [pool("pool", bottom, "AVE"), inner_product("fc", "pool", 10)]
    return net_spec("cifar_resnet", [*layers, loss("fc")])


def normalized_apart(layers, name, bottom):
    """BatchNorm of ``bottom`` into a blob of its own (``name``_bn: DenseNet's, whose input,
    the concatenated maps, is read again), Scale with a bias and ReLU in place on it, appended
    to ``layers``; returns that blob."""
    top = f"{name}_bn"
    layers += [{"name": top, "type": "BatchNorm", "bottom": bottom, "top": top}]
    scale = {"name": f"{name}_scale", "type": "Scale", "bottom": top, "top": top}
    layers += [{**scale, "scale_param": {"bias_term": True}}, relu(f"{name}_relu", top)]
    return top


def densenet(batch=16, size=28, channels=64, growth=32, count=4):
    """A DenseNet block (Huang et al.): ``count`` layers, each BatchNorm + Scale -> ReLU -> 3x3
    convolution of ``growth`` outputs on all the maps so far, concatenated to them (64 -> 192
    channels at 28 x 28); global average pooling, InnerProduct 10."""
    layers, bottom = [input_layer(batch, channels, size, size)], "data"
    for k in range(count):
        n = f"d{k}"
        layers += [conv(f"{n}_conv", normalized_apart(layers, n, bottom), growth, 3, pad=1, bias=False)]
        layers += [{"name": f"{n}_cat", "type": "Concat", "bottom": [bottom, f"{n}_conv"], "top": f"{n}_cat"}]
        bottom = f"{n}_cat"
    layers += [pool("pool", bottom, "AVE"), inner_product("fc", "pool", 10)]
    return net_spec("densenet", [*layers, loss("fc")])


def fire(layers, name, bottom, squeeze, expand):
    """A SqueezeNet fire module appended to ``layers``: a 1x1 squeeze, then 1x1 and 3x3 expands
    of it (each with ReLU), concatenated."""
    s, e1, e3 = f"{name}_squeeze", f"{name}_expand1", f"{name}_expand3"
    layers += [conv(s, bottom, squeeze, 1), relu(f"{s}_relu", s)]
    layers += [conv(e1, s, expand, 1), relu(f"{e1}_relu", e1), conv(e3, s, expand, 3, pad=1), relu(f"{e3}_relu", e3)]
    layers += [{"name": name, "type": "Concat", "bottom": [e1, e3], "top": name}]
    return name


def squeezenet(batch=16, size=56, channels=64):
    """SqueezeNet 1.1's fire modules 2 to 5 (Iandola et al.) on its 56 x 56 maps of 64 channels:
    fire2 and fire3 (squeeze 16, expand 64 + 64), a 3/2 max pool, fire4 and fire5 (32, 128 +
    128); its classifier: a 1x1 convolution to 10 maps and global average pooling."""
    layers, bottom = [input_layer(batch, channels, size, size)], "data"
    bottom = fire(layers, "fire3", fire(layers, "fire2", bottom, 16, 64), 16, 64)
    layers.append(pool("pool3", bottom, "MAX", 3, 2))
    bottom = fire(layers, "fire5", fire(layers, "fire4", "pool3", 32, 128), 32, 128)
    layers += [conv("conv10", bottom, 10, 1), pool("pool10", "conv10", "AVE")]
    return net_spec("squeezenet", [*layers, loss("pool10")])


def dcgan_generator(batch=16, widths=(512, 256, 128, 64)):
    """DCGAN's generator (Radford et al.): a 100-long code as a 1 x 1 map, Deconvolutions 4/1
    to 4 x 4 then 4/2 (pad 1) doubling the size to 64 x 64 with 3 outputs, BatchNorm + Scale +
    ReLU between them and TanH at the end; an InnerProduct 10 and SoftmaxWithLoss stand in for
    the discriminator."""
    layers, bottom = [input_layer(batch, 100, 1, 1)], "data"
    for k, width in enumerate(widths):
        name = f"g{k}"
        stride, pad = (1, 0) if k == 0 else (2, 1)
        layers += [conv(name, bottom, width, 4, pad=pad, stride=stride, bias=False, type="Deconvolution")]
        layers += [*batch_norm_scale(name, name), relu(f"{name}_relu", name)]
        bottom = name
    layers += [conv("image", bottom, 3, 4, pad=1, stride=2, type="Deconvolution"), activation("tanh", "image", "TanH")]
    layers += [inner_product("fc", "image", 10)]
    return net_spec("dcgan_generator", [*layers, loss("fc")])


def dcgan_discriminator(batch=64, size=64, widths=(64, 128, 256, 512)):
    """DCGAN's discriminator (Radford et al.): 4x4 stride-2 convolutions (pad 1) halving a 64 px
    image to 4 x 4 over ``widths`` channels, leaky ReLUs (slope 0.2), BatchNorm + Scale after
    all but the first; a 4x4 convolution to 1 output on the last 4 x 4 map; an InnerProduct 10
    and SoftmaxWithLoss stand in for its sigmoid loss."""
    layers, bottom = [input_layer(batch, 3, size, size)], "data"
    for k, width in enumerate(widths):
        name = f"d{k}"
        layers += [conv(name, bottom, width, 4, pad=1, stride=2, bias=k == 0)]
        layers += batch_norm_scale(name, name) if k else []
        layers += [relu(f"{name}_relu", name, slope=0.2)]
        bottom = name
    layers += [conv("out", bottom, 1, 4), inner_product("fc", "out", 10)]
    return net_spec("dcgan_discriminator", [*layers, loss("fc")])


def resnet18(batch=4, size=224, widths=(64, 128, 256, 512)):
    """ResNet-18 (He et al.) whole: a 7x7 stride-2 stem of ``widths[0]`` channels with BatchNorm
    + Scale + ReLU, a 3/2 max pool, four stages of two basic blocks (the first block of a later
    stage downsamples, with a 1x1 projection), global average pooling, InnerProduct 10."""
    layers = [input_layer(batch, 3, size, size), conv("stem", "data", widths[0], 7, pad=3, stride=2, bias=False)]
    layers += [*batch_norm_scale("stem", "stem"), relu("stem_relu", "stem")]
    layers.append(pool("stem_pool", "stem", "MAX", 3, 2, pad=1))
    bottom = "stem_pool"
    for stage, width in enumerate(widths):
        for k in range(2):
            bottom = basic_block(layers, f"s{stage}b{k}", bottom, width, 2 if stage and not k else 1)
    layers += [pool("pool", bottom, "AVE"), inner_product("fc", "pool", 10)]
    return net_spec("resnet18", [*layers, loss("fc")])


def mobilenet(batch=4, size=224, width=32):
    """MobileNet v1 (Howard et al.) from its input to its 14 x 14 stage (``size`` 224): a 3x3
    stride-2 stem of ``width`` channels, then depthwise 3x3 (stride 2 where the size halves) and
    pointwise 1x1 pairs 32 -> 64 -> 128 -> 128 -> 256 -> 256 -> 512 -> 512, each with BatchNorm
    + Scale + ReLU; global average pooling, InnerProduct 10 (the 7 x 7 stages are
    ``mobilenet_tail``'s)."""
    layers = [input_layer(batch, 3, size, size), conv("stem", "data", width, 3, pad=1, stride=2, bias=False)]
    layers += [*batch_norm_scale("stem", "stem"), relu("stem_relu", "stem")]
    bottom, channels = "stem", width
    for k, (stride, out) in enumerate(((1, 2), (2, 4), (1, 4), (2, 8), (1, 8), (2, 16), (1, 16))):
        dw, pw = f"dw{k}", f"pw{k}"
        layers += [conv(dw, bottom, channels, 3, pad=1, stride=stride, group=channels, bias=False)]
        layers += [*batch_norm_scale(dw, dw), relu(f"{dw}_relu", dw), conv(pw, dw, out * width, 1, bias=False)]
        layers += [*batch_norm_scale(pw, pw), relu(f"{pw}_relu", pw)]
        bottom, channels = pw, out * width
    layers += [pool("pool", bottom, "AVE"), inner_product("fc", "pool", 10)]
    return net_spec("mobilenet", [*layers, loss("fc")])


def inception_module(layers, name, bottom, widths):
    """A GoogLeNet inception module appended to ``layers``: ``widths`` = (1x1, 3x3 reduce, 3x3,
    5x5 reduce, 5x5, pool projection), each convolution with ReLU, joined by Concat."""
    b1, r3, b3, r5, b5, proj = widths
    names = [f"{name}_{part}" for part in ("1x1", "3x3_reduce", "3x3", "5x5_reduce", "5x5", "pool", "pool_proj")]
    plan = [(names[0], bottom, b1, 1), (names[1], bottom, r3, 1), (names[2], names[1], b3, 3)]
    plan += [(names[3], bottom, r5, 1), (names[4], names[3], b5, 5)]
    for top, below, width, kernel in plan:
        layers += [conv(top, below, width, kernel, pad=kernel // 2), relu(f"{top}_relu", top)]
    layers += [pool(names[5], bottom, "MAX", 3, 1, pad=1), conv(names[6], names[5], proj, 1)]
    layers += [relu(f"{names[6]}_relu", names[6])]
    tops = [names[0], names[2], names[4], names[6]]
    layers.append({"name": name, "type": "Concat", "bottom": tops, "top": name})
    return name


def googlenet(batch=4, size=224, scale=1):
    """GoogLeNet (Szegedy et al.; Caffe's bvlc_googlenet) to its inception (4a): a 7x7/2 stem,
    3/2 max pool, LRN, a 1x1 and a 3x3 convolution, LRN, 3/2 max pool, inceptions (3a) and (3b),
    3/2 max pool, inception (4a); global average pooling, InnerProduct 10 (Caffe's widths over
    ``scale``; its dropout and auxiliary classifiers left out)."""
    w = lambda *widths: [max(1, v // scale) for v in widths]  # noqa: E731
    layers = [input_layer(batch, 3, size, size), conv("conv1", "data", *w(64), 7, pad=3, stride=2)]
    layers += [relu("conv1_relu", "conv1"), pool("pool1", "conv1", "MAX", 3, 2), lrn("norm1", "pool1")]
    layers += [conv("conv2_reduce", "norm1", *w(64), 1), relu("conv2_reduce_relu", "conv2_reduce")]
    layers += [conv("conv2", "conv2_reduce", *w(192), 3, pad=1), relu("conv2_relu", "conv2"), lrn("norm2", "conv2")]
    layers.append(pool("pool2", "norm2", "MAX", 3, 2))
    bottom = inception_module(layers, "i3a", "pool2", w(64, 96, 128, 16, 32, 32))
    bottom = inception_module(layers, "i3b", bottom, w(128, 128, 192, 32, 96, 64))
    layers.append(pool("pool3", bottom, "MAX", 3, 2))
    bottom = inception_module(layers, "i4a", "pool3", w(192, 96, 208, 16, 48, 64))
    layers += [pool("pool", bottom, "AVE"), inner_product("fc", "pool", 10)]
    return net_spec("googlenet", [*layers, loss("fc")])


def cifar10_full(batch=100):
    """Caffe's examples/cifar10/cifar10_full_train_test.prototxt: 5x5 convolutions 32-32-64 (pad
    2), max then average 3/2 pools, ReLU, LRN within channels (local_size 3, alpha 5e-5), an
    InnerProduct 10 (fillers as in ``cifar10_quick``)."""
    within = {"local_size": 3, "alpha": 5e-5, "beta": 0.75, "norm_region": "WITHIN_CHANNEL"}
    layers = [input_layer(batch, 3, 32, 32), conv("conv1", "data", 32, 5, pad=2), pool("pool1", "conv1", "MAX", 3, 2)]
    layers += [relu("relu1", "pool1"), {**lrn("norm1", "pool1"), "lrn_param": within}]
    layers += [conv("conv2", "norm1", 32, 5, pad=2), relu("relu2", "conv2"), pool("pool2", "conv2", "AVE", 3, 2)]
    layers += [{**lrn("norm2", "pool2"), "lrn_param": within}, conv("conv3", "norm2", 64, 5, pad=2)]
    layers += [relu("relu3", "conv3"), pool("pool3", "conv3", "AVE", 3, 2), inner_product("ip1", "pool3", 10)]
    return net_spec("cifar10_full", [*layers, loss("ip1")])


def resnet50(batch=2, size=224, widths=(64, 128, 256, 512), blocks=(3, 4, 6, 3)):
    """ResNet-50 (He et al.; Caffe's ResNet-50-deploy layout) whole: a 7x7 stride-2 stem with
    BatchNorm + Scale + ReLU, a 3/2 max pool, four stages of bottleneck blocks (1x1, 3x3, 1x1 to
    4 ``widths``; the first block of a stage with a 1x1 projection, stride 2 from the second
    stage on, in its first 1x1 as Caffe's), global average pooling, InnerProduct 10."""
    layers = [input_layer(batch, 3, size, size), conv("conv1", "data", widths[0], 7, pad=3, stride=2, bias=False)]
    layers += [*batch_norm_scale("conv1", "conv1"), relu("conv1_relu", "conv1"), pool("pool1", "conv1", "MAX", 3, 2)]
    bottom = "pool1"
    for stage, (width, count) in enumerate(zip(widths, blocks)):
        for k in range(count):
            stride = 2 if stage and not k else 1
            bottom = bottleneck_block(layers, f"res{stage + 2}{chr(97 + k)}", bottom, width, stride, project=k == 0)
    layers += [pool("pool", bottom, "AVE"), inner_product("fc", "pool", 10)]
    return net_spec("resnet50", [*layers, loss("fc")])


def factorized_conv(name, bottom, num_output, kernel):
    """A convolution of a (height, width) ``kernel`` padded to keep the size, with ReLU."""
    layer = conv(name, bottom, num_output, list(kernel), pad=[side // 2 for side in kernel])
    return [layer, relu(f"{name}_relu", name)]


def inception_v3_17(batch=8, size=17, channels=768, reduced=128, branch=192):
    """Inception-v3's 17 x 17 module (Szegedy et al. 2016, figure 6 with n = 7): a 1x1 branch; 1x1
    -> 1x7 -> 7x1; 1x1 -> 7x1 -> 1x7 -> 7x1 -> 1x7; 3/1 average pool -> 1x1; ``branch`` outputs
    a branch, concatenated (768 channels); global average pooling, InnerProduct 10."""
    layers = [input_layer(batch, channels, size, size), *factorized_conv("b1", "data", branch, (1, 1))]
    layers += factorized_conv("b7_1", "data", reduced, (1, 1)) + factorized_conv("b7_2", "b7_1", reduced, (1, 7))
    layers += factorized_conv("b7_3", "b7_2", branch, (7, 1))
    bottom = "data"
    for k, (outputs, kernel) in enumerate([(reduced, (1, 1)), (reduced, (7, 1)), (reduced, (1, 7))]):
        layers += factorized_conv(f"d7_{k + 1}", bottom, outputs, kernel)
        bottom = f"d7_{k + 1}"
    layers += factorized_conv("d7_4", bottom, reduced, (7, 1)) + factorized_conv("d7_5", "d7_4", branch, (1, 7))
    layers += [pool("bp", "data", "AVE", 3, 1, pad=1), *factorized_conv("bp_proj", "bp", branch, (1, 1))]
    layers.append({"name": "mixed", "type": "Concat", "bottom": ["b1", "b7_3", "d7_5", "bp_proj"], "top": "mixed"})
    layers += [pool("pool", "mixed", "AVE"), inner_product("fc", "pool", 10)]
    return net_spec("inception_v3_17", [*layers, loss("fc")])


def fcn32s(batch=1, size=192, widths=(32, 64, 128, 256, 256), fc=1024, classes=21):
    """FCN-32s (Long et al.; Caffe's voc-fcn32s): VGG-16's five blocks with the first convolution
    padded by 100, fc6 as a 7x7 and fc7 as a 1x1 convolution, a 1x1 score layer, a
    Deconvolution 64/32 without bias back to the input's scale, a Crop (offset 19) to the image
    and SoftmaxWithLoss over every pixel (``label`` a class map). Default: VGG-16 at half its
    widths and fc 1024 (the whole net at 500 px runs minutes a step on 2 cores)."""
    layers = [input_layer(batch, 3, size, size)]
    layers[0]["input_param"]["shape"][1]["dim"] = [batch, 1, size, size]
    bottom = "data"
    for block, width in enumerate(widths, 1):
        for index in range(1, 3 if block <= 2 else 4):
            name = f"conv{block}_{index}"
            layers += [
                conv(name, bottom, width, 3, pad=100 if bottom == "data" else 1),
                relu(f"relu{block}_{index}", name),
            ]
            bottom = name
        layers.append(pool(f"pool{block}", bottom, "MAX", 2, 2))
        bottom = f"pool{block}"
    crop = {"axis": 2, "offset": 19}
    return net_spec(
        "fcn32s",
        layers
        + [
            conv("fc6", bottom, fc, 7),
            relu("relu6", "fc6"),
            conv("fc7", "fc6", fc, 1),
            relu("relu7", "fc7"),
            conv("score", "fc7", classes, 1),
            conv("upscore", "score", classes, 64, stride=32, bias=False, type="Deconvolution"),
            {"name": "crop", "type": "Crop", "bottom": ["upscore", "data"], "top": "cropped", "crop_param": crop},
            {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["cropped", "label"], "top": "loss"},
        ],
    )


def srcnn(batch=128, size=33, widths=(64, 32), kernels=(9, 5, 5)):
    """SRCNN (Dong et al., super-resolution; trained in Caffe): 33 x 33 one-channel patches,
    unpadded 9x9 64, 5x5 32 and 5x5 1 convolutions (the 9-5-5 net) with ReLU between, and
    EuclideanLoss against the 17 x 17 centre (``label``)."""
    layers = [input_layer(batch, 1, size, size)]
    out = size - sum(k - 1 for k in kernels)
    layers[0]["input_param"]["shape"][1]["dim"] = [batch, 1, out, out]
    bottom = "data"
    for index, (width, kernel) in enumerate(zip((*widths, 1), kernels), 1):
        layers.append(conv(f"conv{index}", bottom, width, kernel))
        if index < len(kernels):
            layers.append(relu(f"relu{index}", f"conv{index}"))
        bottom = f"conv{index}"
    layers.append({"name": "loss", "type": "EuclideanLoss", "bottom": [bottom, "label"], "top": "loss"})
    return net_spec("srcnn", layers)


def relu6(name, blob):
    """ReLU6 in place, as Caffe writes it: Clip(0, 6)."""
    return {"name": name, "type": "Clip", "bottom": blob, "top": blob, "clip_param": {"min": 0.0, "max": 6.0}}


def swish(name, blob):
    """Swish in place (Caffe's Swish layer, beta 1: x sigmoid(x))."""
    return activation(name, blob, "Swish")


def inverted_residual(layers, name, bottom, channels, out, stride, expand=6, kernel=3, activate=relu6):
    """A MobileNet v2 inverted residual block (an EfficientNet MBConv block with ``kernel`` 5 and
    ``activate`` :func:`swish`, its squeeze-excitation left out) appended to ``layers``: 1x1 to
    ``expand`` times ``channels``, depthwise ``kernel`` x ``kernel`` (``stride``), a linear 1x1
    projection to ``out``, each with BatchNorm + Scale, ``activate`` (ReLU6) after the first two,
    named by it; added to the block's input where the shapes match (stride 1, ``channels`` =
    ``out``). Returns the block's top."""
    e, d, p = f"{name}_expand", f"{name}_dw", f"{name}_project"
    hidden = channels * expand
    act = activate.__name__
    layers += [conv(e, bottom, hidden, 1, bias=False), *batch_norm_scale(e, e), activate(f"{e}_{act}", e)]
    layers += [conv(d, e, hidden, kernel, pad=kernel // 2, stride=stride, group=hidden, bias=False)]
    layers += [*batch_norm_scale(d, d), activate(f"{d}_{act}", d)]
    layers += [conv(p, d, out, 1, bias=False), *batch_norm_scale(p, p)]
    if stride != 1 or channels != out:
        return p
    layers.append({"name": name, "type": "Eltwise", "bottom": [bottom, p], "top": name})
    return name


def mobilenet_v2(batch=8, size=56):
    """MobileNet v2 (Sandler et al.) from its 56 x 56 stage to 28 x 28: the second inverted
    residual block of 24 channels, then the three of 32 (the first with stride 2), expansion 6,
    ReLU6 written as Caffe ports do (Clip 0..6); global average pooling, InnerProduct 10."""
    layers, bottom = [input_layer(batch, 24, size, size)], "data"
    for k, (channels, out, stride) in enumerate([(24, 24, 1), (24, 32, 2), (32, 32, 1), (32, 32, 1)]):
        bottom = inverted_residual(layers, f"ir{k}", bottom, channels, out, stride)
    layers += [pool("pool", bottom, "AVE"), inner_product("fc", "pool", 10), loss("fc")]
    return net_spec("mobilenet_v2", layers)


def se_resnet(batch=8, size=56, width=64):
    """SE-ResNet-50's first stage (Hu et al., squeeze-and-excitation): three bottleneck blocks
    (:func:`bottleneck_block`, 64 -> 256 channels at 56 x 56, the first with a projection),
    each with an SE gate (reduction 16) on its last BatchNorm + Scale before the sum; global
    average pooling, InnerProduct 10."""
    layers, bottom = [input_layer(batch, width, size, size)], "data"
    for k in range(3):
        bottom = bottleneck_block(layers, f"res{k}", bottom, width, 1, project=k == 0, gate=True)
    layers += [pool("pool", bottom, "AVE"), inner_product("fc", "pool", 10), loss("fc")]
    return net_spec("se_resnet", layers)


def resnext(batch=8, size=56, width=128, cardinality=32, out=256):
    """ResNeXt-50 (32x4d; Xie et al.)'s first stage: three bottleneck blocks 64 -> 256 channels
    at 56 x 56 whose 3x3 convolution of ``width`` 128 channels runs in ``cardinality`` 32 groups
    of 4 (the first block with a projection); global average pooling, InnerProduct 10."""
    layers, bottom = [input_layer(batch, 64, size, size)], "data"
    for k in range(3):
        bottom = bottleneck_block(layers, f"res{k}", bottom, width, 1, k == 0, out=out, group=cardinality)
    layers += [pool("pool", bottom, "AVE"), inner_product("fc", "pool", 10), loss("fc")]
    return net_spec("resnext", layers)


def resnext_last_stage(batch=8, size=14, width=1024, cardinality=32, out=2048):
    """ResNeXt-50 (32x4d)'s last stage from 14 x 14 (``size``) to 7 x 7: a bottleneck block with
    stride 2 (on its first 1x1, as :func:`resnet50_last_stage`) and a 1x1 projection, then an
    identity block, their 3x3 convolutions of ``width`` 1024 channels in ``cardinality`` 32
    groups of 32; global average pooling, InnerProduct 10."""
    layers, bottom = [input_layer(batch, width, size, size)], "data"
    for b, stride in enumerate((2, 1), 1):
        bottom = bottleneck_block(layers, f"res{b}", bottom, width, stride, stride != 1, out=out, group=cardinality)
    layers += [pool("pool", bottom, "AVE"), inner_product("fc", "pool", 10), loss("fc")]
    return net_spec("resnext_last_stage", layers)


def resnext50(batch=2, size=224, widths=(128, 256, 512, 1024), blocks=(3, 4, 6, 3), cardinality=32):
    """ResNeXt-50 32x4d (Xie et al.) whole: ResNet-50's stem and stages (:func:`resnet50`) with
    bottleneck blocks of ``widths`` channels in ``cardinality`` groups at their 3x3 (4, 8, 16 and
    32 channels a group), 2 ``widths`` out, the stride-2 blocks downsampling at the 3x3 as
    ResNeXt's own code and its Caffe ports do; global average pooling, InnerProduct 10."""
    layers = [input_layer(batch, 3, size, size), conv("conv1", "data", 64, 7, pad=3, stride=2, bias=False)]
    layers += [*batch_norm_scale("conv1", "conv1"), relu("conv1_relu", "conv1"), pool("pool1", "conv1", "MAX", 3, 2)]
    bottom = "pool1"
    for stage, (width, count) in enumerate(zip(widths, blocks)):
        for k in range(count):
            name, stride = f"res{stage + 2}{chr(97 + k)}", 2 if stage and not k else 1
            settings = {"out": 2 * width, "group": cardinality, "stride_3x3": True}
            bottom = bottleneck_block(layers, name, bottom, width, stride, k == 0, **settings)
    layers += [pool("pool", bottom, "AVE"), inner_product("fc", "pool", 10)]
    return net_spec("resnext50", [*layers, loss("fc")])


def bilinear_segmentation(batch=4, size=128, widths=(64, 128), classes=21):
    """A segmentation net's head with Caffe's bilinear upsampling: two levels of padded 3x3
    convolutions with ReLU and 2/2 max pools (``size`` -> ``size`` / 4), a 1x1 score layer of
    ``classes``, then a Deconvolution 8x8/4 of one channel a group (group = classes, the
    BilinearFiller's weights, ``lr_mult: 0``: fixed) back to ``size``, and SoftmaxWithLoss over
    every pixel (``label`` a class map of shape (N, H, W))."""
    layers = [input_layer(batch, 3, size, size)]
    layers[0]["input_param"]["shape"][1]["dim"] = [batch, size, size]
    bottom = "data"
    for level, width in enumerate(widths):
        name = f"conv{level}"
        layers += [conv(name, bottom, width, 3, pad=1), relu(f"{name}_relu", name)]
        layers.append(pool(f"pool{level}", name, "MAX", 2, 2))
        bottom = f"pool{level}"
    layers.append(conv("score", bottom, classes, 1))
    up = conv("upscore", "score", classes, 8, pad=2, stride=4, group=classes, bias=False, type="Deconvolution")
    up["convolution_param"]["weight_filler"] = {"type": "bilinear"}
    up["param"] = [{"lr_mult": 0, "decay_mult": 0}]
    return net_spec("bilinear_segmentation", [*layers, up, loss("upscore")])


def aspp(batch=2, size=33, channels=512, width=256, rates=(6, 12, 18, 24), classes=21):
    """DeepLab v2's atrous spatial pyramid (Chen et al.; its Caffe prototxt's ASPP-L at half
    width): four branches on the same ``channels`` maps, each a 3x3 convolution of dilation and
    padding ``rate`` to ``width`` channels, ReLU, a 1x1 to ``width``, ReLU and a 1x1 score of
    ``classes``; the branches' scores summed (Eltwise SUM), SoftmaxWithLoss over every pixel.
    On 33 x 33 maps (output stride 8 of a 257 px image) the kernels of rates 12 to 24 read
    padding for most outputs."""
    layers = [input_layer(batch, channels, size, size)]
    layers[0]["input_param"]["shape"][1]["dim"] = [batch, size, size]
    scores = []
    for rate in rates:
        name = f"fc6_{rate}"
        layers += [dilated_conv(name, "data", width, 3, rate), relu(f"{name}_relu", name)]
        layers += [conv(f"fc7_{rate}", name, width, 1), relu(f"fc7_{rate}_relu", f"fc7_{rate}")]
        layers.append(conv(f"fc8_{rate}", f"fc7_{rate}", classes, 1))
        scores.append(f"fc8_{rate}")
    layers.append({"name": "fc8", "type": "Eltwise", "bottom": scores, "top": "fc8"})
    return net_spec("aspp", [*layers, loss("fc8")])


def unet(batch=4, size=128, widths=(32, 64, 128), classes=10):
    """A U-Net (Ronneberger et al.) of three levels: two padded 3x3 convolutions with ReLU per
    level, 2/2 max pools down, Deconvolution 2x2/2 (with ReLU) up, the level's maps joined by
    Concat before its two convolutions, a 1x1 score layer of ``classes`` and SoftmaxWithLoss
    over every pixel (``label`` a class map of shape (N, H, W))."""
    layers = [input_layer(batch, 3, size, size)]
    layers[0]["input_param"]["shape"][1]["dim"] = [batch, size, size]
    bottom, skips = "data", []
    for level, width in enumerate(widths):
        for k in range(2):
            name = f"down{level}_{k}"
            layers += [conv(name, bottom, width, 3, pad=1), relu(f"{name}_relu", name)]
            bottom = name
        if level < len(widths) - 1:
            skips.append(bottom)
            layers.append(pool(f"pool{level}", bottom, "MAX", 2, 2))
            bottom = f"pool{level}"
    for level in reversed(range(len(widths) - 1)):
        width, up = widths[level], f"up{level}"
        layers += [conv(up, bottom, width, 2, stride=2, type="Deconvolution"), relu(f"{up}_relu", up)]
        layers.append({"name": f"cat{level}", "type": "Concat", "bottom": [skips[level], up], "top": f"cat{level}"})
        bottom = f"cat{level}"
        for k in range(2):
            name = f"up{level}_{k}"
            layers += [conv(name, bottom, width, 3, pad=1), relu(f"{name}_relu", name)]
            bottom = name
    return net_spec("unet", [*layers, conv("score", bottom, classes, 1), loss("score")])


def darknet(batch=4, size=224, widths=(16, 32, 64, 128, 256, 512)):
    """Tiny YOLO's backbone (Redmon et al.; tiny-yolo-voc in Caffe ports): 3x3 convolutions of
    ``widths`` channels, each with BatchNorm + Scale and a leaky ReLU (slope 0.1), a 2/2 max
    pool after all but the last; its 1x1 detection layer of 125 maps (5 boxes x 25); global
    average pooling, InnerProduct 10 and SoftmaxWithLoss standing in for its region loss."""
    layers, bottom = [input_layer(batch, 3, size, size)], "data"
    for k, width in enumerate(widths):
        name = f"conv{k}"
        layers += [conv(name, bottom, width, 3, pad=1, bias=False), *batch_norm_scale(name, name)]
        layers.append(relu(f"{name}_relu", name, slope=0.1))
        bottom = name
        if k < len(widths) - 1:
            layers.append(pool(f"pool{k}", bottom, "MAX", 2, 2))
            bottom = f"pool{k}"
    layers += [conv("detect", bottom, 125, 1), pool("pool", "detect", "AVE"), inner_product("fc", "pool", 10)]
    return net_spec("darknet", [*layers, loss("fc")])


def wrn(batch=32, widths=(64, 128, 256), blocks=2, size=32):
    """A Wide ResNet (Zagoruyko and Komodakis) on CIFAR, WRN-16-4: a 3x3 stem of 16 channels,
    three stages of ``blocks`` basic blocks (:func:`basic_block`, post-activation as the CIFAR
    ResNet's) 4 times as wide as ResNet's, 64-128-256 channels at 32-16-8 pixels (the first
    block of a stage with a 1x1 projection: stride 1 in the first stage, where only the width
    changes, then 2); global average pooling, InnerProduct 10."""
    layers = [input_layer(batch, 3, size, size), conv("stem", "data", 16, 3, pad=1, bias=False)]
    layers += [*batch_norm_scale("stem", "stem"), relu("stem_relu", "stem")]
    bottom = "stem"
    for stage, width in enumerate(widths):
        for k in range(blocks):
            stride = 2 if stage and not k else 1
            bottom = basic_block(layers, f"s{stage}b{k}", bottom, width, stride, project=k == 0)
    layers += [pool("pool", bottom, "AVE"), inner_product("fc", "pool", 10)]
    return net_spec("wrn", [*layers, loss("fc")])


def shufflenet(batch=8, size=28, channels=240, groups=3, units=3):
    """ShuffleNet v1 (Zhang et al.)'s stride-1 units at group 3 (240 channels at 28 x 28): a 1x1
    convolution of ``groups`` groups to a quarter of the channels with BatchNorm + Scale + ReLU,
    a depthwise 3x3 with BatchNorm + Scale, a 1x1 of ``groups`` groups back with BatchNorm +
    Scale, added to the unit's input, ReLU; without the channel shuffle (Caffe 1.0 has no layer
    for it); global average pooling, InnerProduct 10."""
    layers, bottom = [input_layer(batch, channels, size, size)], "data"
    mid = channels // 4
    for k in range(units):
        a, d, c = f"u{k}_gconv1", f"u{k}_dw", f"u{k}_gconv2"
        layers += [conv(a, bottom, mid, 1, group=groups, bias=False), *batch_norm_scale(a, a), relu(f"{a}_relu", a)]
        layers += [conv(d, a, mid, 3, pad=1, group=mid, bias=False), *batch_norm_scale(d, d)]
        layers += [conv(c, d, channels, 1, group=groups, bias=False), *batch_norm_scale(c, c)]
        layers += [{"name": f"u{k}", "type": "Eltwise", "bottom": [bottom, c], "top": f"u{k}"}]
        layers.append(relu(f"u{k}_relu", f"u{k}"))
        bottom = f"u{k}"
    layers += [pool("pool", bottom, "AVE"), inner_product("fc", "pool", 10), loss("fc")]
    return net_spec("shufflenet", layers)


def autoencoder(batch=100, widths=(1000, 500, 250, 30)):
    """Caffe's examples/mnist/mnist_autoencoder.prototxt: InnerProducts 784-1000-500-250-30 and
    back 250-500-1000-784, Sigmoid after each but the 30-unit code and the last; its losses:
    SigmoidCrossEntropyLoss of the last InnerProduct against the flattened image (``data``,
    28 x 28 values in [0, 1]) and the EuclideanLoss of its Sigmoid against the image with loss
    weight 0 (reported, not trained); xavier fillers instead of its sparse gaussians."""
    data = {"name": "data", "type": "Input", "top": "data", "input_param": {"shape": {"dim": [batch, 1, 28, 28]}}}
    layers = [data, {"name": "flatdata", "type": "Flatten", "bottom": "data", "top": "flatdata"}]
    plan = [(f"encode{k}", width) for k, width in enumerate(widths, 1)]
    plan += [(f"decode{k}", width) for k, width in reversed(list(enumerate((784, *widths[:-1]), 1)))]
    bottom = "data"
    for name, width in plan:
        layers.append(inner_product(name, bottom, width))
        bottom = name
        if name not in (f"encode{len(widths)}", "decode1"):
            layers.append({"name": f"{name}neuron", "type": "Sigmoid", "bottom": name, "top": f"{name}neuron"})
            bottom = f"{name}neuron"
    cross_entropy = {"name": "loss", "type": "SigmoidCrossEntropyLoss", "bottom": ["decode1", "flatdata"]}
    layers.append({**cross_entropy, "top": "cross_entropy_loss", "loss_weight": 1})
    layers.append({"name": "decode1neuron", "type": "Sigmoid", "bottom": "decode1", "top": "decode1neuron"})
    euclidean = {"name": "loss", "type": "EuclideanLoss", "bottom": ["decode1neuron", "flatdata"], "top": "l2_error"}
    layers.append({**euclidean, "loss_weight": 0})
    return net_spec("autoencoder", layers)


def conv_relu(layers, name, bottom, num_output, kernel):
    """:func:`factorized_conv` of a (height, width) ``kernel``, or of a square one given as an int,
    appended to ``layers``; returns its top."""
    layers += factorized_conv(name, bottom, num_output, kernel if isinstance(kernel, tuple) else (kernel, kernel))
    return name


def inception_v3_35(batch=8, size=35, channels=192):
    """Inception-v3's first 35 x 35 module (Szegedy et al. 2016, figure 5; torchvision's
    Mixed_5b): a 1x1 branch of 64; 1x1 48 -> 5x5 64; 1x1 64 -> 3x3 96 -> 3x3 96; 3/1 average
    pool -> 1x1 32; concatenated (256 channels); global average pooling, InnerProduct 10."""
    layers = [input_layer(batch, channels, size, size)]
    tops = [conv_relu(layers, "b1", "data", 64, 1)]
    tops.append(conv_relu(layers, "b5", conv_relu(layers, "b5_reduce", "data", 48, 1), 64, 5))
    double = conv_relu(layers, "b3_a", conv_relu(layers, "b3_reduce", "data", 64, 1), 96, 3)
    tops.append(conv_relu(layers, "b3_b", double, 96, 3))
    layers.append(pool("bp", "data", "AVE", 3, 1, pad=1))
    tops.append(conv_relu(layers, "bp_proj", "bp", 32, 1))
    layers.append({"name": "mixed", "type": "Concat", "bottom": tops, "top": "mixed"})
    layers += [pool("pool", "mixed", "AVE"), inner_product("fc", "pool", 10)]
    return net_spec("inception_v3_35", [*layers, loss("fc")])


def inception_v3_8(batch=8, size=8, channels=1280):
    """Inception-v3's first 8 x 8 module (figure 7; torchvision's Mixed_7b): a 1x1 branch of
    320; 1x1 384 -> 1x3 384 and 3x1 384 side by side; 1x1 448 -> 3x3 384 -> 1x3 and 3x1 384 side
    by side; 3/1 average pool -> 1x1 192; concatenated (2048 channels); global average pooling,
    InnerProduct 10."""
    layers = [input_layer(batch, channels, size, size)]
    tops = [conv_relu(layers, "b1", "data", 320, 1)]
    reduced = conv_relu(layers, "b3_reduce", "data", 384, 1)
    tops += [conv_relu(layers, "b3_1x3", reduced, 384, (1, 3)), conv_relu(layers, "b3_3x1", reduced, 384, (3, 1))]
    double = conv_relu(layers, "d3", conv_relu(layers, "d3_reduce", "data", 448, 1), 384, 3)
    tops += [conv_relu(layers, "d3_1x3", double, 384, (1, 3)), conv_relu(layers, "d3_3x1", double, 384, (3, 1))]
    layers.append(pool("bp", "data", "AVE", 3, 1, pad=1))
    tops.append(conv_relu(layers, "bp_proj", "bp", 192, 1))
    layers.append({"name": "mixed", "type": "Concat", "bottom": tops, "top": "mixed"})
    layers += [pool("pool", "mixed", "AVE"), inner_product("fc", "pool", 10)]
    return net_spec("inception_v3_8", [*layers, loss("fc")])


def efficientnet(batch=8, size=56):
    """EfficientNet-B0's blocks from 56 x 56 to 14 x 14 (Tan and Le): 5x5 depthwise MBConv 24 ->
    40 (stride 2) and 40 -> 40, 3x3 40 -> 80 (stride 2) and 80 -> 80, 5x5 80 -> 112, expansion 6,
    Swish; global average pooling, InnerProduct 10."""
    layers, bottom = [input_layer(batch, 24, size, size)], "data"
    plan = [(24, 40, 5, 2), (40, 40, 5, 1), (40, 80, 3, 2), (80, 80, 3, 1), (80, 112, 5, 1)]
    for k, (channels, out, kernel, stride) in enumerate(plan):
        bottom = inverted_residual(layers, f"mb{k}", bottom, channels, out, stride, kernel=kernel, activate=swish)
    layers += [pool("pool", bottom, "AVE"), inner_product("fc", "pool", 10), loss("fc")]
    return net_spec("efficientnet", layers)


def enet(batch=4, size=64, channels=128, inner=32):
    """ENet's stage-2 bottlenecks (Paszke et al.): each a 1x1 reduction to ``inner``, then a 3x3,
    a dilated 3x3 (2, 4, 8) or an asymmetric 5 x 1 -> 1 x 5 convolution, then a 1x1 expansion
    back to ``channels`` added to the block's input (ReLU for ENet's PReLU); global average
    pooling, InnerProduct 10."""
    layers, bottom = [input_layer(batch, channels, size, size)], "data"
    for k, kind in enumerate(["plain", 2, "asymmetric", 4, "plain", 8, "asymmetric"]):
        name = f"e{k}"
        middle = conv_relu(layers, f"{name}_reduce", bottom, inner, 1)
        if kind == "plain":
            middle = conv_relu(layers, f"{name}_conv", middle, inner, 3)
        elif kind == "asymmetric":
            middle = conv_relu(
                layers, f"{name}_1x5", conv_relu(layers, f"{name}_5x1", middle, inner, (5, 1)), inner, (1, 5)
            )
        else:
            layers += [dilated_conv(f"{name}_dilated", middle, inner, 3, kind), relu(f"{name}_relu", f"{name}_dilated")]
            middle = f"{name}_dilated"
        layers += [conv(f"{name}_expand", middle, channels, 1)]
        layers.append({"name": name, "type": "Eltwise", "bottom": [bottom, f"{name}_expand"], "top": name})
        bottom = name
    layers += [pool("pool", bottom, "AVE"), inner_product("fc", "pool", 10), loss("fc")]
    return net_spec("enet", layers)


def densenet121(batch=2, size=224, growth=32, blocks=(6, 12, 24, 16), classes=1000):
    """DenseNet-121 whole (Huang et al.; as its Caffe ports lay it out): a 7x7/2 stem of 64 with
    BatchNorm + Scale + ReLU and a 3/2 max pool (pad 1; Caffe's rounding up gives 57 x 57), four
    dense blocks of (6, 12, 24, 16) layers, each BatchNorm + Scale + ReLU -> 1x1 of 4 ``growth``
    -> BatchNorm + Scale + ReLU -> 3x3 of ``growth``, concatenated to the maps so far (BatchNorm
    writes a blob of its own: the concatenation is read again by the next Concat), transitions
    of BatchNorm + Scale + ReLU, a 1x1 halving the channels and a 2/2 average pool; a last
    BatchNorm + Scale + ReLU, global average pooling, InnerProduct ``classes``."""

    layers = [input_layer(batch, 3, size, size), conv("conv0", "data", 64, 7, pad=3, stride=2, bias=False)]
    layers += [*batch_norm_scale("conv0", "conv0"), relu("conv0_relu", "conv0")]
    layers += [pool("pool0", "conv0", "MAX", 3, 2, pad=1)]
    bottom, channels = "pool0", 64
    for b, count in enumerate(blocks):
        for k in range(count):
            name = f"b{b}_{k}"
            layers.append(conv(f"{name}_1x1", normalized_apart(layers, f"{name}_a", bottom), 4 * growth, 1, bias=False))
            middle = normalized_apart(layers, f"{name}_b", f"{name}_1x1")
            layers.append(conv(f"{name}_3x3", middle, growth, 3, pad=1, bias=False))
            layers.append(
                {"name": f"{name}_cat", "type": "Concat", "bottom": [bottom, f"{name}_3x3"], "top": f"{name}_cat"}
            )
            bottom, channels = f"{name}_cat", channels + growth
        if b < len(blocks) - 1:
            channels //= 2
            layers.append(conv(f"t{b}", normalized_apart(layers, f"t{b}", bottom), channels, 1, bias=False))
            layers.append(pool(f"t{b}_pool", f"t{b}", "AVE", 2, 2))
            bottom = f"t{b}_pool"
    layers += [pool("pool", normalized_apart(layers, "last", bottom), "AVE"), inner_product("fc", "pool", classes)]
    return net_spec("densenet121", [*layers, loss("fc")])


def language_model(steps=35, streams=20, vocab=10000, hidden=200, depth=2):
    """A word-level LSTM language model (Zaremba et al.'s small Penn Treebank model, as Caffe
    runs it): ``streams`` sequences of ``steps`` words (``words`` indices, ``cont`` 0 where a
    sequence starts), Embed of ``vocab`` words to ``hidden``, ``depth`` LSTMs of ``hidden``
    units, InnerProduct back to ``vocab`` at every step (axis 2) and SoftmaxWithLoss over every
    word."""
    shapes = [{"dim": [steps, streams]}, {"dim": [steps, streams]}, {"dim": [steps, streams]}]
    uniform = {"type": "uniform", "min": -0.1, "max": 0.1}
    embed = {"num_output": hidden, "input_dim": vocab, "bias_term": False, "weight_filler": uniform}
    layers = [
        {"name": "data", "type": "Input", "top": ["words", "cont", "label"], "input_param": {"shape": shapes}},
        {"name": "embed", "type": "Embed", "bottom": "words", "top": "embed", "embed_param": embed},
    ]
    bottom = "embed"
    for k in range(depth):
        recurrent = {"num_output": hidden, "weight_filler": uniform, "bias_filler": ZERO}
        layers.append(
            {
                "name": f"lstm{k}",
                "type": "LSTM",
                "bottom": [bottom, "cont"],
                "top": f"lstm{k}",
                "recurrent_param": recurrent,
            }
        )
        bottom = f"lstm{k}"
    fc = inner_product("fc", bottom, vocab)
    fc["inner_product_param"]["axis"] = 2
    return net_spec("language_model", [*layers, fc, {**loss("fc"), "softmax_param": {"axis": 2}}])


def batchnorm_mlp(batch=256, widths=(784, 1024, 1024, 1024, 10)):
    """An MLP with BatchNorm (Ioffe and Szegedy's MNIST net, wider): InnerProducts with
    BatchNorm + Scale + ReLU after each hidden one: BatchNorm over (batch, features) values,
    one position a channel."""
    layers, bottom = [input_layer(batch, widths[0])], "data"
    for k, width in enumerate(widths[1:-1], 1):
        layers += [inner_product(f"ip{k}", bottom, width), *batch_norm_scale(f"ip{k}", f"ip{k}")]
        layers.append(relu(f"relu{k}", f"ip{k}"))
        bottom = f"ip{k}"
    return net_spec("batchnorm_mlp", [*layers, inner_product("out", bottom, widths[-1]), loss("out")])


def pose_stage(batch=4, size=46, inputs=185, width=128, parts=19, depth=5):
    """A later stage of Convolutional Pose Machines / OpenPose (Wei et al., Cao et al.; trained
    in Caffe): on 46 x 46 maps (a 368 px image at stride 8), the features and the previous
    stage's belief maps (``inputs`` channels), ``depth`` 7x7 convolutions of ``width`` with
    ReLU, a 1x1 of ``width`` with ReLU, a 1x1 to ``parts`` belief maps, EuclideanLoss against
    target maps (``label``)."""
    layers = [input_layer(batch, inputs, size, size)]
    layers[0]["input_param"]["shape"][1]["dim"] = [batch, parts, size, size]
    bottom = "data"
    for k in range(1, depth + 1):
        layers += [conv(f"conv{k}", bottom, width, 7, pad=3), relu(f"relu{k}", f"conv{k}")]
        bottom = f"conv{k}"
    layers += [conv("conv_1x1", bottom, width, 1), relu("relu_1x1", "conv_1x1"), conv("beliefs", "conv_1x1", parts, 1)]
    layers.append({"name": "loss", "type": "EuclideanLoss", "bottom": ["beliefs", "label"], "top": "loss"})
    return net_spec("pose_stage", layers)


@dataclass
class Case:
    """A net of the benchmark: its spec (a function of nothing: the default sizes), the row
    title the table shows, and the relative difference its gradients may have from PyTorch's
    (see ``check_same_computation``)."""

    title: str
    spec: object
    gradient_tolerance: float = GRADIENT_TOLERANCE
    notes: tuple = ()  # what the benchmark changed in a net file (:func:`net_file_spec`)


NETS = {
    "cifar10_quick": Case("cifar10_quick, batch 100", cifar10_quick),
    "vgg": Case("VGG-style 3x3 blocks (64-64-pool-128-128-pool), 64 px, batch 8", vgg),
    "resnet": Case("ResNet basic blocks, BatchNorm + Scale + Eltwise SUM, 64 ch, 32 px, 2 blocks, batch 16", resnet),
    "mlp": Case("MLP 784-2048-2048-10, batch 256", mlp),
    "alexnet": Case("AlexNet-style convolutions, LRN, group 2, 227 px, batch 8", alexnet),
    "depthwise": Case("depthwise-separable (3x3 group=channels, 1x1), 128 ch, 28 px, 2 blocks, batch 16", depthwise),
    "deconvolution": Case("Deconvolution stride 2, 64->32 ch, 16->32 px, batch 16", deconvolution),
    "lenet": Case("LeNet, batch 64", lambda: lenet_spec(64)),
}
ISSUE_NETS = list(NETS)  # issue 10's table (and LeNet): the default of --nets
NETS.update(
    {
        "nin": Case("Network in Network (CIFAR-10: 5x5/3x3 + 1x1 convolutions), batch 16", nin),
        "bottleneck": Case("ResNet-50 opening: 7x7/2 stem, max pool, 2 bottleneck blocks, 112 px, batch 8", bottleneck),
        "inception": Case("GoogLeNet inception (3a), Concat, 192 ch, 28 px, batch 8", inception),
        "sigmoid_mlp": Case("MLP 784-1000-500-250-30-10 with Sigmoid, batch 100", squashing_mlp),
        "tanh_mlp": Case("MLP 784-1000-500-250-30-10 with TanH, batch 100", lambda: squashing_mlp("TanH")),
        "elu_convnet": Case("3x3 convolutions 32-64-64-128 (stride 1/2) with ELU, 32 px, batch 32", strided_convnet),
        "prelu_convnet": Case(
            "3x3 convolutions 32-64-64-128 (stride 1/2) with PReLU, 32 px, batch 32", lambda: strided_convnet("PReLU")
        ),
        "dilated": Case("dilated 3x3 convolutions (1, 2, 4, 8), 64 ch, 64 px, batch 4", dilated),
        "conv1d": Case("1x5 convolutions along one axis, 128 ch, length 256, batch 32", conv1d),
        "one_big_image": Case("one 224 px image, VGG-style blocks 32-64-128, batch 1", one_big_image),
        "classifier_head": Case("AlexNet's classifier 9216-4096-4096-10, batch 8", classifier_head),
        "lstm": Case("LSTM 256 -> 512, 50 steps, 32 streams, InnerProduct 10 at every step", lstm),
        "mobilenet_tail": Case(
            "MobileNet's 28 -> 7 px stages: depthwise 3x3 (stride 2) + 1x1, BatchNorm + Scale + ReLU, batch 8",
            mobilenet_tail,
        ),
        "resnet50_last_stage": Case(
            "ResNet-50's last stage, 1024 ch at 14 px -> 2048 at 7 px, 2 bottleneck blocks, batch 8",
            resnet50_last_stage,
        ),
        "vgg16_conv5": Case("VGG-16's conv5 block, 3x3 512 ch at 14 px, batch 8", vgg16_conv5),
        "cifar_resnet": Case(
            "CIFAR ResNet-20: 16-32-64 ch at 32-16-8 px, 3 basic blocks a stage, batch 32", cifar_resnet
        ),
        "densenet": Case(
            "DenseNet block: 4 layers of BatchNorm-ReLU-3x3 conv, growth 32, Concat, 28 px, batch 16", densenet
        ),
        "squeezenet": Case("SqueezeNet 1.1's fire modules 2-5, 64 ch at 56 px, batch 16", squeezenet),
        "dcgan_generator": Case(
            "DCGAN generator: Deconvolutions 100 -> 64 px, BatchNorm + Scale + ReLU, batch 16", dcgan_generator
        ),
        "dcgan_discriminator": Case(
            "DCGAN discriminator: 4x4/2 convolutions 64 px -> 4 x 4, leaky ReLU, BatchNorm + Scale, batch 64",
            dcgan_discriminator,
        ),
        "resnet18": Case("ResNet-18, 224 px, batch 4", resnet18),
        "mobilenet": Case("MobileNet v1 from 224 px to its 14 px stage, batch 4", mobilenet),
        "googlenet": Case("GoogLeNet to inception (4a), LRN, 224 px, batch 4", googlenet),
        "cifar10_full": Case("cifar10_full, LRN within channels, batch 100", cifar10_full),
        # 53 BatchNorms deep at batch 2, float32 rounding alone moves the gradients: against a
        # float64 run of the same net, PyTorch's differ by up to 2.6e-2 and netlayers' (F(4x4)
        # Winograd rounds a little more) by up to 3.4e-2; against each other by up to 3.1e-2
        "resnet50": Case("ResNet-50 whole, 224 px, batch 2", resnet50, gradient_tolerance=5e-2),
        "inception_v3_17": Case(
            "Inception-v3's 17 x 17 module (1x7 and 7x1 convolutions), 768 ch, batch 8", inception_v3_17
        ),
        "fcn32s": Case("FCN-32s (VGG-16 at half width, pad 100, Deconvolution 64/32, Crop), 192 px, batch 1", fcn32s),
        "srcnn": Case("SRCNN 9-5-5 (64 and 32 channels, a 1-channel 5x5 output), 33 px, batch 128", srcnn),
        "mobilenet_v2": Case(
            "MobileNet v2's 56 -> 28 px stages: inverted residuals (1x1 x6, depthwise 3x3, 1x1), ReLU6, batch 8",
            mobilenet_v2,
        ),
        "se_resnet": Case(
            "SE-ResNet-50's first stage: 3 bottleneck blocks with squeeze-excitation gates, 56 px, batch 8", se_resnet
        ),
        "resnext": Case("ResNeXt-50 32x4d's first stage: 3x3 convolutions of group 32, 56 px, batch 8", resnext),
        "unet": Case(
            "U-Net, 3 levels 32-64-128, Deconvolution 2x2/2, Concat skips, per-pixel loss, 128 px, batch 4", unet
        ),
        "darknet": Case(
            "Tiny YOLO's backbone: 3x3 convolutions 16-512, BatchNorm + Scale, leaky ReLU, 224 px, batch 4", darknet
        ),
        "wrn": Case("Wide ResNet WRN-16-4: 64-128-256 ch at 32-16-8 px, 2 basic blocks a stage, batch 32", wrn),
        "shufflenet": Case(
            "ShuffleNet units: 1x1 convolutions of group 3 + depthwise 3x3, 240 ch, 28 px, batch 8", shufflenet
        ),
        "autoencoder": Case(
            "Caffe's MNIST autoencoder 784-1000-500-250-30 and back, Sigmoid, SigmoidCrossEntropyLoss, batch 100",
            autoencoder,
        ),
        "inception_v3_35": Case(
            "Inception-v3's 35 x 35 module (5x5 and double 3x3 branches), 192 ch, batch 8", inception_v3_35
        ),
        "inception_v3_8": Case(
            "Inception-v3's 8 x 8 module (1x3 and 3x1 side by side), 1280 ch, batch 8", inception_v3_8
        ),
        "efficientnet": Case(
            "EfficientNet-B0's MBConv blocks 56 -> 14 px: 5x5 and 3x3 depthwise, Swish, batch 8", efficientnet
        ),
        "enet": Case("ENet's bottlenecks: 3x3, dilated and 5x1 -> 1x5 convolutions, 128 ch, 64 px, batch 4", enet),
        "resnext_last_stage": Case(
            "ResNeXt-50 32x4d's last stage: 3x3 convolutions of 32 groups of 32, 14 -> 7 px, batch 8",
            resnext_last_stage,
        ),
        "bilinear_segmentation": Case(
            "Segmentation head: convolutions to 32 px, score 21, bilinear Deconvolution 8x8/4 of group 21, "
            "per-pixel loss, 128 px, batch 4",
            bilinear_segmentation,
        ),
        "resnext50": Case("ResNeXt-50 32x4d whole, 224 px, batch 2", resnext50),
        "aspp": Case(
            "DeepLab v2's ASPP: 3x3 of dilation 6, 12, 18, 24, 512 -> 256 ch, 1x1s, 33 px, per-pixel loss, batch 2",
            aspp,
        ),
        "densenet121": Case("DenseNet-121 whole, 224 px, batch 2", densenet121),
        "language_model": Case(
            "LSTM language model: Embed 10000 -> 200, 2 LSTMs of 200, InnerProduct 10000, 35 steps x 20 streams",
            language_model,
        ),
        "batchnorm_mlp": Case("MLP 784-1024-1024-1024-10, BatchNorm + Scale + ReLU, batch 256", batchnorm_mlp),
        "pose_stage": Case(
            "Pose machine stage: five 7x7 convolutions of 128 at 46 px, 1x1s, 19 belief maps, EuclideanLoss, batch 4",
            pose_stage,
        ),
    }
)
ZOO = TOOLS.parent / "tests" / "fixtures" / "zoo"
#: ``--nets zoo``: the deploy nets of Caffe's model zoo kept as test data (``tests/fixtures/zoo``,
#: its README gives their origins and licences), each at its file's batch (10 for the BVLC and
#: SqueezeNet nets, 1 for ResNet, MobileNet and the CIFAR-10 nets): inference, forward only
ZOO_NETS = [
    "bvlc_alexnet/deploy.prototxt",
    "bvlc_reference_caffenet/deploy.prototxt",
    "bvlc_googlenet/deploy.prototxt",
    "squeezenet_v1.0/deploy.prototxt",
    "squeezenet_v1.1/deploy.prototxt",
    "resnet/ResNet-50-deploy.prototxt",
    "resnet/ResNet-101-deploy.prototxt",
    "mobilenet/mobilenet_deploy.prototxt",
    "mobilenet/mobilenet_v2_deploy.prototxt",
    "cifar10/cifar10_quick.prototxt",
    "cifar10/cifar10_full.prototxt",
]


# -- one layer at a time (--nets layers) ----------------------------------------------------------
#: the activation a layer probe runs on: an early stage of a convnet (6.4 M values, 25.7 MB)
PROBE_SHAPE = (32, 64, 56, 56)


def sum_of_squares(bottom):
    """The loss of a layer probe: the sum of its output's squares (Reduction SUMSQ, loss weight
    1), a gradient as varied as the output itself."""
    param = {"operation": "SUMSQ"}
    return {
        "name": "loss",
        "type": "Reduction",
        "bottom": bottom,
        "top": "loss",
        "reduction_param": param,
        "loss_weight": 1,
    }


def probed(kind, bottom="x", top="y", **blocks):
    """The layer a probe times (named "probed"), with its param ``blocks``."""
    return {"name": "probed", "type": kind, "bottom": bottom, "top": top, **blocks}


def squashed(name, kind, bottom, top):
    """A second operand for a probed layer: ``kind`` (TanH, Sigmoid, AbsVal) of ``bottom``. Not
    a copy of it: equal operands would tie every element of an Eltwise MAX."""
    return {"name": name, "type": kind, "bottom": bottom, "top": top}


def layer_probe(name, shape=PROBE_SHAPE):
    """The net of ``LAYER_PROBES[name]`` (``--nets layers``): an Input of ``shape`` (and a
    per-pixel label or a target of that shape, where its loss reads one), a learned Scale with a
    bias (so that the probed layer's bottom takes a gradient, on both sides), then the probe's
    body (the layers after it, reading "x", ending in their loss)."""
    _, body, extra = LAYER_PROBES[name]
    n, _, h, w = shape
    extra_shapes = {"label": (n, h, w), "target": shape}
    tops = ["data", *extra]
    shapes = [{"dim": list(shape)}, *({"dim": list(extra_shapes[blob])} for blob in extra)]
    layers = [
        {"name": "data", "type": "Input", "top": tops, "input_param": {"shape": shapes}},
        {"name": "pre", "type": "Scale", "bottom": "data", "top": "x", "scale_param": {"bias_term": True}},
        *copy.deepcopy(body),  # each build its own dicts
    ]
    return net_spec(name, layers)


def one_layer(kind, **blocks):
    """The probe body of a one-bottom layer ``kind``: it, then the sum of its output's squares."""
    return [probed(kind, **blocks), sum_of_squares("y")]


def two_operands(kind, **blocks):
    """The body of a layer of two bottoms of one shape: x and tanh(x)."""
    return [squashed("second", "TanH", "x", "x2"), probed(kind, bottom=["x", "x2"], **blocks), sum_of_squares("y")]


def three_operands(kind, **blocks):
    """The body of a layer of three bottoms: tanh(x), sigmoid(x), |x|."""
    layers = [squashed(f"s{i}", k, "x", f"x{i}") for i, k in enumerate(("TanH", "Sigmoid", "AbsVal"))]
    return [*layers, probed(kind, bottom=["x0", "x1", "x2"], **blocks), sum_of_squares("y")]


def normalized(kind, **blocks):
    """The body of a normalizing layer (MVN, BatchNorm with batch statistics): tanh before it
    (else the Scale's gradient through it vanishes) and after it (else the sum of its squares is
    a constant)."""
    return [squashed("pre_tanh", "TanH", "x", "x"), probed(kind, **blocks), squashed("post", "TanH", "y", "y"),
            sum_of_squares("y")]  # fmt: skip


def pooling(method, kernel=None, stride=None, pad=0):
    """A Pooling probe body (``pool``'s parameters; no kernel: global pooling)."""
    layer = pool("probed", "x", method, kernel, stride, pad)
    return [{**layer, "top": "y"}, sum_of_squares("y")]


def by_pooled_channels(kind, block):
    """A Scale or Bias by a second bottom of the channels' averages, per (item, channel) over the
    image (as a squeeze-excitation gate applies)."""
    return [
        {**pool("squeeze", "x", "AVE"), "top": "squeeze"},
        {"name": "flat", "type": "Flatten", "bottom": "squeeze", "top": "gate"},
        probed(kind, bottom=["x", "gate"], **{block: {"axis": 0}}),
        sum_of_squares("y"),
    ]


def exp_first(kind, **blocks):
    """The body of a layer that needs positive bottoms (Log, a half power): exp(x) into it."""
    return [{"name": "positive", "type": "Exp", "bottom": "x", "top": "e"}, probed(kind, bottom="e", **blocks),
            sum_of_squares("y")]  # fmt: skip


LRN_PARAM = {"local_size": 5, "alpha": 1e-4, "beta": 0.75}
#: name -> (what the row says, the probe's body, the extra inputs its loss reads: "label", per
#: pixel, or "target", of the input's shape)
LAYER_PROBES = {
    "layer_relu": ("ReLU", one_layer("ReLU"), ()),
    "layer_leaky_relu": ("ReLU, negative_slope 0.1", one_layer("ReLU", relu_param={"negative_slope": 0.1}), ()),
    "layer_prelu": ("PReLU, a slope per channel", one_layer("PReLU"), ()),
    "layer_elu": ("ELU", one_layer("ELU"), ()),
    "layer_sigmoid": ("Sigmoid", one_layer("Sigmoid"), ()),
    "layer_tanh": ("TanH", one_layer("TanH"), ()),
    "layer_absval": ("AbsVal", one_layer("AbsVal"), ()),
    "layer_bnll": ("BNLL", one_layer("BNLL"), ()),
    "layer_clip": ("Clip to [-0.5, 0.5]", one_layer("Clip", clip_param={"min": -0.5, "max": 0.5}), ()),
    "layer_swish": ("Swish", one_layer("Swish"), ()),
    "layer_power_square": (
        "Power 2 of 1 + x / 2",
        one_layer("Power", power_param={"power": 2, "scale": 0.5, "shift": 1}),
        (),
    ),
    "layer_power_cube": ("Power 3 (bases of both signs)", one_layer("Power", power_param={"power": 3}), ()),
    "layer_power_root": ("Power 0.5 of exp(x)", exp_first("Power", power_param={"power": 0.5}), ()),
    "layer_exp": ("Exp", one_layer("Exp"), ()),
    "layer_log": ("Log of exp(x)", exp_first("Log"), ()),
    "layer_dropout": ("Dropout 0.5", one_layer("Dropout"), ()),
    "layer_bias": ("Bias, learned, per channel", one_layer("Bias"), ()),
    "layer_scale": ("Scale, learned, per channel", one_layer("Scale"), ()),
    "layer_scale_by_gate": ("Scale by a second bottom (N, C): a gate", by_pooled_channels("Scale", "scale_param"), ()),
    "layer_bias_by_bottom": ("Bias by a second bottom (N, C)", by_pooled_channels("Bias", "bias_param"), ()),
    "layer_scale_elementwise": (
        "Scale by a second bottom of the same shape (axis 0)",
        two_operands("Scale", scale_param={"axis": 0}),
        (),
    ),
    "layer_max_pool": ("Pooling MAX 3x3/2", pooling("MAX", 3, 2), ()),
    "layer_max_pool_2": ("Pooling MAX 2x2/2", pooling("MAX", 2, 2), ()),
    "layer_max_pool_same": ("Pooling MAX 3x3/1 pad 1", pooling("MAX", 3, 1, 1), ()),
    "layer_ave_pool": ("Pooling AVE 3x3/2", pooling("AVE", 3, 2), ()),
    "layer_ave_pool_same": ("Pooling AVE 3x3/1 pad 1", pooling("AVE", 3, 1, 1), ()),
    "layer_global_ave_pool": ("Pooling AVE, global", pooling("AVE"), ()),
    "layer_global_max_pool": ("Pooling MAX, global", pooling("MAX"), ()),
    "layer_spp": ("SPP, pyramid height 3", one_layer("SPP", spp_param={"pyramid_height": 3}), ()),
    "layer_lrn": ("LRN across 5 channels", one_layer("LRN", lrn_param=LRN_PARAM), ()),
    "layer_lrn_within": (
        "LRN within 5 x 5 windows",
        one_layer("LRN", lrn_param={**LRN_PARAM, "norm_region": "WITHIN_CHANNEL"}),
        (),
    ),
    "layer_batch_norm": ("BatchNorm, batch statistics", normalized("BatchNorm"), ()),
    "layer_batch_norm_global": (
        "BatchNorm, stored statistics",
        one_layer("BatchNorm", batch_norm_param={"use_global_stats": True}),
        (),
    ),
    "layer_mvn": ("MVN", normalized("MVN"), ()),
    "layer_mvn_across": ("MVN across channels", normalized("MVN", mvn_param={"across_channels": True}), ()),
    "layer_softmax": ("Softmax over the channels", one_layer("Softmax"), ()),
    "layer_softmax_last_axis": ("Softmax over the last axis", one_layer("Softmax", softmax_param={"axis": 3}), ()),
    "layer_eltwise_sum": (
        "Eltwise SUM of 3, coefficients",
        three_operands("Eltwise", eltwise_param={"coeff": [0.5, -1, 2]}),
        (),
    ),
    "layer_eltwise_prod": ("Eltwise PROD of 3", three_operands("Eltwise", eltwise_param={"operation": "PROD"}), ()),
    "layer_eltwise_max": ("Eltwise MAX of 3", three_operands("Eltwise", eltwise_param={"operation": "MAX"}), ()),
    "layer_concat": ("Concat of 3 along the channels", three_operands("Concat"), ()),
    "layer_concat_width": ("Concat of 2 along the width", two_operands("Concat", concat_param={"axis": 3}), ()),
    "layer_slice": (
        "Slice of the channels after the first (the rest read)",
        [probed("Slice", top=["first", "y"], slice_param={"slice_point": [1]}), sum_of_squares("y")],
        (),
    ),
    "layer_tile": ("Tile 2 x along the channels", one_layer("Tile", tile_param={"axis": 1, "tiles": 2}), ()),
    "layer_crop": (
        "Crop to a 2x2/2 max pool's size, offset 3",
        [
            {**pool("half", "x", "MAX", 2, 2), "top": "half"},
            probed("Crop", bottom=["x", "half"], crop_param={"axis": 2, "offset": [3]}),
            sum_of_squares("y"),
        ],  # fmt: skip
        (),
    ),
    "layer_reduction_mean": (
        "Reduction MEAN over the channels and image",
        [probed("Reduction", reduction_param={"operation": "MEAN", "axis": 1}), sum_of_squares("y")],
        (),
    ),
    "layer_inner_product": (
        "InnerProduct 128 of the whole image",
        [probed("InnerProduct", inner_product_param={"num_output": 128, "weight_filler": XAVIER}), sum_of_squares("y")],
        (),
    ),
    "layer_softmax_loss": (
        "SoftmaxWithLoss per pixel",
        [probed("SoftmaxWithLoss", bottom=["x", "label"], top="loss")],
        ("label",),
    ),
    "layer_sigmoid_cross_entropy": (
        "SigmoidCrossEntropyLoss",
        [probed("SigmoidCrossEntropyLoss", bottom=["x", "target"], top="loss")],
        ("target",),
    ),
    "layer_euclidean_loss": (
        "EuclideanLoss",
        [probed("EuclideanLoss", bottom=["x", "target"], top="loss")],
        ("target",),
    ),
}
LAYER_NETS = {
    name: Case(f"{title}, {' x '.join(map(str, PROBE_SHAPE))}", lambda name=name: layer_probe(name))
    for name, (title, _, _) in LAYER_PROBES.items()
}
BUILT_IN_NETS = {**NETS, **LAYER_NETS}  # a --nets name -> its Case


# -- inputs and GEMM FLOPs -------------------------------------------------------------------
#: layer type -> the bottom it reads as class labels (their count: the layer's ``classes``, the
#: size of its first bottom along its softmax axis, or per item for the last two)
LABEL_BOTTOM = {"SoftmaxWithLoss": 1, "Accuracy": 1, "InfogainLoss": 1, "MultinomialLogisticLoss": 1, "HingeLoss": 1}
VIEW_TYPES = ("Split", "Flatten", "Reshape")  # a top that is its bottom's values


def input_plan(net):
    """How :func:`make_inputs` fills each top of the Input layers of the built netlayers
    ``net``: a list of (blob, shape, kind, bound), kind one of

    - ``"classes"``: class indices in [0, bound), for a blob some layer reads as labels (the
      second bottom of SoftmaxWithLoss, Accuracy, InfogainLoss, MultinomialLogisticLoss,
      HingeLoss: bound its number of classes), or as an Embed's indices (bound its
      ``input_dim``); the smallest bound of its readers;
    - ``"unit"``: uniform in [0, 1), a SigmoidCrossEntropyLoss target;
    - ``"cont"``: an LSTM's or RNN's sequence continuation, 0 at the first step (a new
      sequence: the state starts from 0, as PyTorch's) and 1 after;
    - ``"normal"``: standard normal, every other blob.

    A blob is followed through Split, Flatten and Reshape layers to the Input top it comes from
    (a label read by a loss and an Accuracy, an image flattened as an autoencoder's target)."""
    origin = {}
    kinds = {}

    def note(name, kind, bound=None):
        while name in origin:
            name = origin[name]
        old_kind, old_bound = kinds.get(name, ("normal", None))
        rank = ("normal", "unit", "cont", "classes")
        if kind == old_kind == "classes":
            bound = min(bound, old_bound)
        elif rank.index(kind) < rank.index(old_kind):
            kind, bound = old_kind, old_bound
        kinds[name] = (kind, bound)

    for layer in net.layers:
        bottoms = layer.spec.bottoms
        if layer.type in VIEW_TYPES:
            origin.update((top, bottoms[0]) for top in layer.spec.tops if top != bottoms[0])
        elif layer.type in LABEL_BOTTOM and len(bottoms) > LABEL_BOTTOM[layer.type]:
            note(bottoms[LABEL_BOTTOM[layer.type]], "classes", int(layer.classes))
        elif layer.type == "SigmoidCrossEntropyLoss":
            note(bottoms[1], "unit")
        elif layer.type == "Embed":
            note(bottoms[0], "classes", layer.p.input_dim)
        elif layer.type in ("LSTM", "RNN"):
            note(bottoms[1], "cont")
    return [(name, tuple(net.source_blobs[name].shape), *kinds.get(name, ("normal", None))) for name in net.inputs]


def make_inputs(plan, seed=0):
    """The arrays of an :func:`input_plan`, by blob name: float32, class indices int64 (netlayers
    reads them as floats; PyTorch's losses and embeddings take them as they are)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, shape, kind, bound in plan:
        if kind == "classes":
            arrays[name] = rng.integers(0, bound, shape)
        elif kind == "unit":
            arrays[name] = rng.random(shape, dtype=np.float32)
        elif kind == "cont":
            arrays[name] = np.ones(shape, np.float32)
            arrays[name][0] = 0
        else:
            arrays[name] = rng.standard_normal(shape, dtype=np.float32)
    return arrays


def fixed_inputs(spec, seed=0):
    """The net's fixed inputs (:func:`input_plan`, :func:`make_inputs`): ``spec`` a built
    netlayers Net, or what one is built from (a dict, a net file's path)."""
    net = spec if isinstance(spec, netlayers.Net) else netlayers.Net(spec, dtype=np.float32, seed=SEED)
    return make_inputs(input_plan(net), seed)


def gemm_flops(net, forward_only=False):
    """FLOPs of the built ``net``'s Convolution, Deconvolution and InnerProduct matrix products
    in one forward + backward step: forward F = 2 * weights * output positions (a convolution's
    output pixels; a deconvolution's input pixels; an InnerProduct's rows), backward F for the
    weight gradient (unless the weights are fixed: ``lr_mult: 0``) plus F for the data gradient
    unless the bottom needs none (the net's input); a layer no gradient reaches only forward.
    ``forward_only`` (a net without a loss): the forward products alone."""
    total = 0
    for index, layer in enumerate(net.layers):
        if layer.type == "LSTM":
            total += lstm_flops(net, index, forward_only)
            continue
        if layer.type not in ("Convolution", "Deconvolution", "InnerProduct"):
            continue
        weights = layer.blobs[0].data.size
        bottoms, tops, axis = net.bottom_vecs[index], net.top_vecs[index], layer.axis
        if layer.type == "Convolution":
            positions = sum(math.prod(top.shape[:axis]) * math.prod(top.shape[axis + 1 :]) for top in tops)
        elif layer.type == "Deconvolution":
            positions = sum(math.prod(bottom.shape[:axis]) * math.prod(bottom.shape[axis + 1 :]) for bottom in bottoms)
        else:
            positions = math.prod(bottoms[0].shape[:axis])
        forward = 2 * weights * positions
        if forward_only:
            total += forward
            continue
        needed = net.layer_need_backward[index]
        gradients = needed * (layer.param_propagate_down[0] + net.bottom_need_backward[index][0])
        total += forward * (1 + gradients)
    return total


def lstm_flops(net, index, forward_only=False):
    """An LSTM's products in one step: forward F = 2 (W_xc + W_hc entries) T N; backward F
    for the weight gradients, the recurrent product back through the steps, and the input's
    gradient unless the input needs none (the net's input); ``forward_only``: F alone."""
    input_weight, _, recurrent_weight = (blob.data.size for blob in net.layers[index].blobs[:3])
    rows = math.prod(net.bottom_vecs[index][0].shape[:2])
    forward = 2 * (input_weight + recurrent_weight) * rows
    if forward_only:
        return forward
    backward = forward + 2 * recurrent_weight * rows
    if net.bottom_need_backward[index][0]:
        backward += 2 * input_weight * rows
    return forward + backward


def sgemm_rate(n=2048, repeats=5):
    """numpy's float32 matmul rate (FLOP/s) on an n x n product, best of ``repeats``."""
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
    out = np.empty((n, n), np.float32)
    np.matmul(a, b, out=out)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


# -- netlayers -------------------------------------------------------------------------------
def new_net(spec, forward_only=False):
    """The float32 TRAIN net of ``spec`` (a dict, a net file's path or a NetSpec), as a solver
    builds it (``share_memory``), its inputs not set yet; ``forward_only`` (a net without a
    loss): its TEST net, as for inference (BatchNorm's stored statistics, no Dropout), built as
    ``Predictor`` builds it (``share_memory``: the outputs are compared, inner blobs share), those
    statistics set where unset (:func:`settle_batch_norms`). Weights left at zero by a file
    without fillers are drawn (:func:`fill_unset_weights`)."""
    if forward_only:
        net = netlayers.Net(spec, "TEST", dtype=np.float32, seed=SEED, share_memory=True)
        return fill_unset_weights(settle_batch_norms(net))
    return fill_unset_weights(netlayers.Net(spec, dtype=np.float32, seed=SEED, share_memory=True))


def fill_unset_weights(net):
    """``net`` with every weight that is all zeros drawn from a normal distribution of variance
    2 / fan-in (He's); returns it. A net file without fillers (Caffe's deploy nets) gets Caffe's
    default filler, the constant 0: every map would be its biases alone and the outputs the
    benchmark compares would not depend on the computation (AlexNet's deploy net: both sides'
    softmax exactly 1/1000). A weight is a param of two or more axes; biases and per-channel
    params (a Scale's, a PReLU's) keep their values, as do weights a filler set. Drawn in place,
    in the net's dtype: a float64 draw of AlexNet's fc6 (151 MB in float32) was a 302 MB
    temporary that the memory measure counted."""
    rng = np.random.default_rng(SEED)
    for blobs in net.params.values():
        for blob in blobs:
            data = blob.data
            if data.ndim >= 2 and not data.any():
                fan_in = max(1, data.size // data.shape[0])
                rng.standard_normal(dtype=data.dtype, out=data)
                data *= data.dtype.type(math.sqrt(2.0 / fan_in))
    return net


def settle_batch_norms(net):
    """``net`` with the stored statistics of each BatchNorm that has none (its count 0, as a net
    built from a file without weights) set to mean 0, variance 1 and count 1, PyTorch's fresh
    running statistics; returns it. Left at 0, the variance makes every BatchNorm of global
    statistics multiply by 1 / sqrt(eps), about 316: the 21 of a CIFAR ResNet-20 overflow
    float32 to inf and then NaN: a benchmark of other numbers than a trained net's."""
    for layer in net.layers:
        if layer.type == "BatchNorm" and layer.blobs[2].data[0] == 0:
            layer.blobs[0].data[...] = 0
            layer.blobs[1].data[...] = 1
            layer.blobs[2].data[...] = 1
    return net


def build_netlayers(spec, inputs=None, forward_only=False):
    """:func:`new_net` with ``inputs`` set (default :func:`fixed_inputs`; the forward of later
    steps reuses them)."""
    net = new_net(spec, forward_only)
    net.forward(**(fixed_inputs(net) if inputs is None else inputs))
    return net


def netlayers_step(net):
    """Clear the param gradients, forward, backward; returns the loss: Caffe's total, the sum
    over every top of its loss weight times its sum (``Net.loss``; :func:`top_loss_weights`)."""
    net.clear_param_diffs()
    net.forward()
    loss = net.loss
    net.backward()
    return loss


def check_net_file(path):
    """The checked spec of the net file ``path``; a one-line :class:`BenchError` naming the file
    when it cannot be read or is no net."""
    from netlayers.netspec.spec import load_net_spec

    if not Path(path).is_file():
        raise BenchError(f"{path}: {'not a file' if Path(path).exists() else 'no such net file'}")
    try:
        return load_net_spec(path)
    except NetlayersError as error:
        raise BenchError(str(error)) from None


_FILE_NETS = {}  # (path, its time and size, given shapes, read_sources) -> _replace_data_layers


def net_file_spec(path, input_shapes=None, read_sources=True):
    """The net of file ``path`` as the benchmark runs it, and notes saying what was changed:
    each data layer of the phase it runs (TRAIN, or TEST without a loss: :func:`has_loss`)
    that reads files or runs Python (Data, ImageData, HDF5Data, WindowData, MemoryData, a
    Python layer without bottoms) becomes an Input layer giving tops of the shapes it gives
    (:func:`data_layer_shapes`), so that both sides are fed the same fixed random batch and
    the time is the net's, not its reading of files. The path itself (no notes) when there is
    no such layer. ``input_shapes`` (blob -> shape, ``--input-shape``) gives the shapes of tops
    of data layers whose sources cannot be read; without ``read_sources`` no source is read
    (``input_shapes`` must give every data top: :func:`measure_memory`'s subprocess)."""
    return _file_net(path, input_shapes, read_sources)[:2]


def file_data_shapes(path, input_shapes=None):
    """The shapes (top -> shape) of the Input layers :func:`net_file_spec` put in place of the
    data layers of net file ``path``."""
    return _file_net(path, input_shapes, True)[2]


def _file_net(path, input_shapes, read_sources):
    """:func:`_replace_data_layers`, once for a file as it is now (its sources are read once)."""
    stat = os.stat(path) if Path(path).is_file() else None
    given = tuple(sorted((input_shapes or {}).items()))
    key = (str(path), stat and (stat.st_mtime_ns, stat.st_size), given, read_sources)
    if key not in _FILE_NETS:
        _FILE_NETS[key] = _replace_data_layers(path, dict(given), read_sources)
    return _FILE_NETS[key]


def _replace_data_layers(path, given, read_sources):
    """(spec, notes, the data tops' shapes) for :func:`net_file_spec`."""
    spec = check_net_file(path)
    phase = "TRAIN" if has_loss(spec) else "TEST"
    layers, notes, data_shapes = [], [], {}
    for layer in spec.layers:
        if layer.in_phase(phase, spec.level, spec.stages) and reads_data(layer):
            shapes = data_layer_shapes(spec, layer, phase, given, path, read_sources)
            data_shapes.update(shapes)
            shown = ", ".join(f"{top} {'x'.join(map(str, shape))}" for top, shape in shapes.items())
            notes.append(f"layer '{layer.name}' ({layer.type}) gave way to an Input of its tops' shapes: {shown}")
            layer = input_in_place_of(spec, layer, shapes)
        layers.append(layer)
    return (replace(spec, layers=layers), notes, data_shapes) if notes else (str(path), [], {})


def reads_data(layer):
    """Whether a checked layer is a data layer that is not an Input or DummyData (those the
    benchmark feeds as they are): a source layer, or a Python layer without bottoms."""
    from netlayers.layers.data import SourceLayer

    if layer.type in ("Input", "DummyData"):
        return False
    return issubclass(layer.cls, SourceLayer) or (layer.type == "Python" and not layer.bottoms)


def data_layer_shapes(spec, layer, phase, given, path, read_source=True):
    """The shape of each top of the data layer ``layer`` (of the checked net ``spec``): read by
    setting the layer up alone on its source (one batch is read); where its source cannot be
    read, given (``given``: ``--input-shape``) or from its params (:func:`shapes_from_params`);
    a :class:`BenchError` naming the layer and what to give when a shape is still unknown.
    Without ``read_source``, ``given`` and the params alone."""
    reason = "not read"
    try:
        if not read_source:
            raise OSError(reason)
        alone = netlayers.Net(replace(spec, layers=[layer]), phase, dtype=np.float32, seed=SEED)
    except (NetlayersError, OSError) as error:
        reason = str(getattr(error, "message", None) or error).strip().splitlines()[0]
    else:
        for built in alone.layers:
            if hasattr(built, "close"):
                built.close()
        return {top: alone.blobs[top].shape for top in layer.tops}
    check_given_shapes(layer, given, path)
    shapes = {**shapes_from_params(layer), **{top: tuple(given[top]) for top in layer.tops if top in given}}
    missing = [top for top in layer.tops if top not in shapes]
    if missing:
        hints = " ".join(f"--input-shape {top}={shape_hint(layer, top)}" for top in missing)
        raise BenchError(
            f"{path}: layer '{layer.name}' ({layer.type}) could not be read ({reason}) nor its params give the "
            f"shape of {', '.join(repr(top) for top in missing)}: the benchmark feeds it random data of that "
            f"shape; give it, e.g. {hints}"
        )
    return {top: shapes[top] for top in layer.tops}


def check_given_shapes(layer, given, path):
    """A :class:`BenchError` where ``--input-shape`` gives a top of ``layer`` a shape its params
    contradict (another batch size, channel count or crop: a shape meant for another net)."""
    dims = data_dims(layer) or ()
    known = {layer.tops[0]: dims} if dims else {}
    if dims and len(layer.tops) > 1:
        known[layer.tops[1]] = dims[:1]
    for top, said in known.items():
        shape = given.get(top)
        if shape is not None and (len(shape) != len(said) or any(d and d != g for d, g in zip(said, shape))):
            raise BenchError(
                f"{path}: --input-shape {top}={','.join(map(str, shape))} does not fit layer '{layer.name}' "
                f"({layer.type}), whose params give {shape_hint(layer, top)}: benchmark nets of other inputs in "
                "separate runs"
            )


def shapes_from_params(layer):
    """What the params of a Data, ImageData or WindowData layer say of its tops' shapes
    without reading its source: the data top (batch, channels, height, width) where all four
    are given (the batch by ``batch_size``; the channels by ``force_color``/``force_gray``,
    ``is_color``, or more than one ``mean_value``, one a channel; the size by ``crop_size``, or
    ImageData's ``new_height`` and ``new_width``), the label top (batch,)."""
    dims = data_dims(layer)
    shapes = {}
    if dims is not None and all(dims):
        shapes[layer.tops[0]] = dims
    if dims is not None and len(layer.tops) > 1:
        shapes[layer.tops[1]] = (dims[0],)
    return shapes


def data_dims(layer):
    """(batch, channels, height, width) of a Data, ImageData or WindowData layer's data top,
    0 where its params do not say (:func:`shapes_from_params`); None for another type."""
    block = {"Data": "data_param", "ImageData": "image_data_param", "WindowData": "window_data_param"}.get(layer.type)
    if block is None:
        return None
    own, transform = layer.blocks[block], layer.blocks["transform_param"]
    crop = transform["crop_size"] or (own["crop_size"] if "crop_size" in own else 0)
    height = width = crop
    if not crop and layer.type == "ImageData" and own["new_height"] and own["new_width"]:
        height, width = own["new_height"], own["new_width"]
    channels = 0
    if layer.type == "WindowData":
        channels = 3  # Caffe's WindowData reads colour images
    elif layer.type == "ImageData":
        channels = 3 if own["is_color"] else 1
    elif transform["force_color"] or transform["force_gray"]:
        channels = 3 if transform["force_color"] else 1
    elif len(transform["mean_value"]) > 1:
        channels = len(transform["mean_value"])
    return (own["batch_size"], channels, height, width)


def shape_hint(layer, top):
    """An example ``--input-shape`` value for ``top`` of ``layer``: what its params give, a
    letter where they do not (N, C, H, W)."""
    dims = data_dims(layer)
    if dims is None:
        return "N,C,H,W"
    if top != layer.tops[0]:
        return str(dims[0] or "N")
    return ",".join(str(d) if d else letter for d, letter in zip(dims, "NCHW"))


def input_in_place_of(spec, layer, shapes):
    """A checked Input layer in place of the data layer ``layer``: its name, tops, phase rules
    and place in the file, giving ``shapes`` (top -> shape)."""
    from netlayers.netspec.spec import check_net

    raw = {"name": layer.name, "type": "Input", "top": list(layer.tops)}
    raw["input_param"] = {"shape": [{"dim": list(shapes[top])} for top in layer.tops]}
    checked = check_net({"name": spec.name, "layers": [raw]}, file=spec.file, base_dir=spec.base_dir).layers[0]
    return replace(checked, include=layer.include, exclude=layer.exclude, where=layer.where)


def parse_input_shape(value):
    """``--input-shape`` ``BLOB=D1,D2,...`` as (blob, shape); an argparse error otherwise."""
    blob, sep, dims = value.partition("=")
    try:
        shape = tuple(int(d) for d in dims.split(","))
    except ValueError:
        shape = ()
    if not sep or not blob.strip() or not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(
            f"{value!r}: expected BLOB=D1,D2,... with positive dimensions, e.g. data=64,3,224,224"
        )
    return blob.strip(), shape


class BenchError(Exception):
    """A net the benchmark cannot run (a bad net file): one line, no traceback."""


# -- PyTorch ---------------------------------------------------------------------------------
def import_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


class Reordered:
    """A torch param whose ``grad`` reads in netlayers' row order: the param's gradient with its
    rows taken in ``order`` (a permutation that is its own inverse)."""

    def __init__(self, tensor, order):
        self.tensor, self.order = tensor, order

    @property
    def grad(self):
        return None if self.tensor.grad is None else self.tensor.grad[self.order]


class TorchNetError(ValueError):
    """The spec holds a layer or field :func:`torch_net` does not translate."""


def train_layers(spec, phase="TRAIN"):
    """The layers of ``spec`` (a dict, a YAML or Caffe .prototxt path, or a NetSpec) in
    ``phase`` (TRAIN, or TEST: a net without a loss, :func:`has_loss`) as netlayers builds
    them: checked LayerSpecs (``bottoms`` and ``tops`` lists, the parameter blocks in
    ``blocks`` with every default filled in, ``params`` the ParamSpecs), include and exclude
    rules applied, a Split inserted where a blob fans out. (A dict whose first layer is
    an Input without tops, bench_cifar's stand-in for its Data layer, gets as tops the blobs the
    later layers read and none makes, in the order they are first read.)"""
    from netlayers.netspec.spec import load_net_spec, phase_layers

    first, *rest = (spec.get("layers") or [None]) if isinstance(spec, dict) else [None]
    if isinstance(first, dict) and first.get("type") == "Input" and not first.get("top"):
        made, read = set(), []
        for layer in rest:
            read += [name for name in _names(layer.get("bottom")) if name not in made and name not in read]
            made.update(_names(layer.get("top")))
        spec = {**spec, "layers": [{**first, "top": read}, *rest]}
    return phase_layers(load_net_spec(spec), phase)


def softmax_scores(layers):
    """The bottoms of the Softmax layers of ``layers`` (:func:`train_layers`) whose top no layer
    reads: a deploy net's scores behind its probabilities, compared besides its outputs in a
    forward-only benchmark (:func:`check_same_outputs`), since probabilities saturated to 0 and
    1 (random weights in a deep net: the zoo's ResNet-50 gave 0 and 1 exactly on both sides)
    hide any difference of the scores."""
    read = {name for layer in layers for name in layer.bottoms}
    scores = {layer.bottoms[0] for layer in layers if layer.type == "Softmax" and layer.tops[0] not in read}
    return sorted(scores - {name for layer in layers if layer.type == "Input" for name in layer.tops})


def with_scores(net, outputs):
    """``outputs`` (a forward-only netlayers net's, blob name -> array) and copies of its
    :func:`softmax_scores` blobs."""
    scores = softmax_scores(train_layers(net.spec, net.phase))
    return {**outputs, **{blob: net.blobs[blob].data.copy() for blob in scores}}


def has_loss(spec, phase="TRAIN"):
    """Whether the net ``spec`` has a loss in ``phase``: a top of nonzero loss weight
    (:func:`top_loss_weights`; netlayers' rule for ``Net.loss`` and for what backward starts
    from). A net without one (a Caffe deploy net, ending in Softmax or in a plain InnerProduct)
    is benchmarked forward only, in its TEST phase (:func:`bench_net`)."""
    return any(any(top_loss_weights(layer)[1]) for layer in train_layers(spec, phase))


def _names(value):
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def top_loss_weights(layer):
    """A checked layer's tops and their loss weights, by netlayers' (Caffe's) rule: the given
    ``loss_weight``s, else 1 for a loss layer's first top and 0 for the others. A loss layer
    given fewer tops than it makes gets the rest named ``<layer>(automatic k)``."""
    cls, tops = layer.cls, list(layer.tops)
    if cls.auto_top_blobs:
        tops += [f"{layer.name}(automatic {k})" for k in range(len(tops), cls.num_tops[0])]
    weights = list(layer.loss_weights) or [1.0 if cls.is_loss and k == 0 else 0.0 for k in range(len(tops))]
    return tops, weights


def draws_random_numbers(layer, phase="TRAIN"):
    """Whether the checked layer draws new random numbers at every forward of ``phase``:
    Dropout (of a ratio above 0) in TRAIN, DummyData with a filler other than constant."""
    if layer.type == "Dropout":
        return phase == "TRAIN" and layer.blocks["dropout_param"].dropout_ratio > 0
    if layer.type == "DummyData":
        return any(filler.type != "constant" for filler in layer.blocks["dummy_data_param"].data_filler)
    return False


def takes_gradient(layer, index):
    """Whether netlayers backpropagates into bottom ``index`` of the checked ``layer``: not where
    ``propagate_down`` is false, nor into a loss's labels or targets (every bottom of a loss but
    the first; both of EuclideanLoss's, the features of ContrastiveLoss)."""
    if layer.propagate_down and not layer.propagate_down[index]:
        return False
    if layer.type == "EuclideanLoss":
        return True
    if layer.type == "ContrastiveLoss":
        return index < 2
    return not (layer.cls.is_loss and index > 0)


#: the layer types :func:`torch_net` translates
TRANSLATED_TYPES = (
    *("Input", "DummyData", "Parameter", "Convolution", "Deconvolution", "InnerProduct", "Embed", "LSTM", "RNN"),
    *("ReLU", "PReLU", "ELU", "Sigmoid", "TanH", "AbsVal", "BNLL", "Clip", "Swish", "Threshold", "Power", "Exp"),
    *("Log", "Dropout", "Eltwise", "Scale", "Bias", "Concat", "Slice", "Split", "Flatten", "Reshape", "Crop"),
    *("Tile", "Reduction", "Silence", "Pooling", "SPP", "LRN", "BatchNorm", "MVN", "Softmax", "SoftmaxWithLoss"),
    *("SigmoidCrossEntropyLoss", "EuclideanLoss", "HingeLoss", "MultinomialLogisticLoss", "InfogainLoss"),
    *("ContrastiveLoss", "Accuracy"),
)

#: layer types whose torch op keeps no output for its backward and gives a new tensor (no view
#: of its bottom): a ReLU in place on their top can overwrite it
FRESH_TOPS = {
    "Convolution",
    "Deconvolution",
    "InnerProduct",
    "BatchNorm",
    "Scale",
    "Bias",
    "Eltwise",
    "Concat",
    "Pooling",
}


def caffe_normalizer(mode, outer, inner, valid, ignoring):
    """A loss's divisor under ``loss_param.normalization`` (netlayers' LossLayer.normalizer)."""
    value = {"FULL": outer * inner, "VALID": valid if ignoring else outer * inner, "BATCH_SIZE": outer, "NONE": 1}
    return max(1.0, float(value[mode]))


def caffe_reshape(shape, p):
    """Reshape's top shape for a bottom of ``shape`` (its ``reshape_param`` ``p``): the dims
    replace the axes ``axis`` .. ``axis + num_axes - 1``, a 0 copies the bottom's dim, one -1 is
    left for torch to infer."""
    start = p.axis if p.axis >= 0 else len(shape) + p.axis + 1
    end = len(shape) if p.num_axes == -1 else start + p.num_axes
    dims = [shape[start + i] if d == 0 else d for i, d in enumerate(p.shape.dim)]
    return [*shape[:start], *dims, *shape[end:]]


def pooling_divisors(size, kernel, pad, stride, out):
    """Caffe's AVE pooling divisor of each output along one axis: the window clipped to the
    padded input [-pad, size + pad)."""
    return [min(o * stride - pad + kernel, size + pad) - (o * stride - pad) for o in range(out)]


def torch_net(spec, params, phase="TRAIN"):
    """The PyTorch twin of the netlayers ``spec`` (a dict, a net file's path or a NetSpec): a
    ``torch.nn.Module`` translating the layers of ``phase`` (:func:`train_layers`; TRAIN, or
    TEST for a net benchmarked forward only) one by one, with Caffe's semantics as netlayers
    implements them in that phase, whose ``forward`` takes the tops of the Input layers (in
    order, or by name) and returns the loss as netlayers' Net computes it: the sum over every
    top of its loss weight (:func:`top_loss_weights`) times its sum; a net without a loss
    returns its outputs instead (``outputs_of``: blob name -> tensor, for ``module.outputs``,
    the tops no layer reads, as netlayers' ``Net.outputs``).
    ``params`` maps a layer name to its param tensors in netlayers' order (a Convolution's
    weight and bias, a Scale's scale and bias; a BatchNorm's statistics are read only with
    ``use_global_stats``, Caffe's default in TEST: otherwise torch keeps its running statistics
    apart). In TEST, Dropout passes its bottom on (times 1 - ratio without ``scale_train``).
    Params shared by name (``param {name}``) are one torch Parameter; params of ``lr_mult: 0``
    take no gradient.

    A BatchNorm whose top a one-bottom Scale on axis 1 reads next becomes one affine
    ``batch_norm`` (as ``BatchNorm2d(affine=True)``); a ReLU whose top is its bottom runs in
    place where the producer of that bottom keeps no output for its backward. A bottom netlayers
    sends no gradient to (``propagate_down: false``, a loss's labels) is detached.
    ``module.param_of[(layer, index)]`` is the torch Parameter of a netlayers param that takes a
    gradient; ``module.random`` names the layers that draw random numbers (Dropout): the twin
    draws its own. A layer or field it cannot translate raises :class:`TorchNetError` naming
    the layer and its type."""
    import torch

    from netlayers.layer import block_name
    from netlayers.layers.convolution import conv_geometry
    from netlayers.layers.pooling import pooled_size, pooling_geometry

    F = torch.nn.functional
    layers = train_layers(spec, phase)

    def canonical(axis, x):
        return axis % x.dim()

    divisors = {}  # (input size, kernel, pad, stride) -> Caffe's AVE divisors

    def pool2d(x, method, kernel, pad, stride, round_mode):
        """Caffe's MAX or AVE pooling of the (N, C, H, W) ``x`` (as netlayers' Pooling): torch's
        pooling where it takes the padding (at most half the kernel), whose rounding, dropped
        last window (one starting past the input and its padding) and AVE divisor (the window
        clipped to the padded input, with ``count_include_pad``) are Caffe's; else padded by
        hand (-inf, or 0 and Caffe's divisors) to the last window's end."""
        kernel, pad, stride = tuple(kernel), tuple(pad), tuple(stride)
        if all(2 * pd <= k for pd, k in zip(pad, kernel)):
            if method == "AVE":
                return F.avg_pool2d(x, kernel, stride, pad, ceil_mode=round_mode == "CEIL")
            return F.max_pool2d(x, kernel, stride, pad, ceil_mode=round_mode == "CEIL")
        size = tuple(x.shape[2:])
        axes = list(zip(size, kernel, pad, stride))
        out = [pooled_size(*axis, round_mode, any(pad)) for axis in axes]
        ends = [(o - 1) * st + k - s - pd for o, (s, k, pd, st) in zip(out, axes)]
        borders = (pad[1], ends[1], pad[0], ends[0])
        if method == "MAX":
            return F.max_pool2d(F.pad(x, borders, value=-math.inf), kernel, stride)
        key = (size, kernel, pad, stride)
        if key not in divisors:
            rows, cols = (torch.tensor(pooling_divisors(*axis, o), dtype=x.dtype) for axis, o in zip(axes, out))
            divisors[key] = rows[:, None] * cols
        return F.avg_pool2d(F.pad(x, borders), kernel, stride, divisor_override=1) / divisors[key]

    class Module(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weights = torch.nn.ParameterList()
            self.param_of = {}
            self.shared = {}  # ParamSpec name -> its torch Parameter
            self.inputs = []  # the Input layers' tops: forward's positional arguments
            self.ops = []  # (function of the bottom tensors, bottom names, top names)
            self.losses = []  # (top name, loss weight)
            self.random = [f"'{layer.name}' ({layer.type})" for layer in layers if draws_random_numbers(layer, phase)]
            self.outputs = sorted({*self.unread_tops(), *softmax_scores(layers)})
            self.fresh = set()  # tops a ReLU may overwrite in place (FRESH_TOPS)
            k = 0
            while k < len(layers):
                layer = layers[k]
                scale = layers[k + 1] if k + 1 < len(layers) and self.fuses(layer, layers[k + 1]) else None
                self.add(layer, scale)
                k += 2 if scale else 1

        @staticmethod
        def unread_tops():
            """The tops no later layer reads, sorted by name: netlayers' (Caffe's) rule for the
            net's outputs, over the same layers (Splits inserted)."""
            available = set()
            for layer in layers:
                available.difference_update(layer.bottoms)
                available.update(layer.tops)
            return sorted(available)

        @staticmethod
        def fuses(layer, scale):
            """A BatchNorm and the Scale that reads its top next, one affine batch_norm."""
            if layer.type != "BatchNorm" or scale.type != "Scale" or scale.bottoms != layer.tops:
                return False
            p = scale.blocks["scale_param"]
            return p.axis == 1 and p.num_axes == 1

        def add(self, layer, scale):
            """Translate ``layer`` (with the ``scale`` it fuses with) into ``ops`` and its weighted
            tops into ``losses``."""
            function = self.translate(layer, scale)
            tops, weights = top_loss_weights(scale or layer)
            if function is not None:
                cut = [i for i in range(len(layer.bottoms)) if not takes_gradient(layer, i)]
                if cut:
                    function = self.detaching(function, cut)
                self.ops.append((function, list(layer.bottoms), tops))
            self.losses += [(top, weight) for top, weight in zip(tops, weights) if weight]
            self.fresh.difference_update(tops)
            if layer.type in FRESH_TOPS:
                self.fresh.update(tops)

        @staticmethod
        def detaching(function, cut):
            return lambda *xs: function(*(x.detach() if i in cut else x for i, x in enumerate(xs)))

        def parameter(self, layer, index):
            """The torch Parameter of ``layer``'s param ``index`` (one for all the layers sharing
            it by name); a gradient where its ``lr_mult`` is not 0."""
            spec = layer.params[index] if index < len(layer.params) else None
            name = spec.name if spec is not None else ""
            tensor = self.shared.get(name) if name else None
            if tensor is None:
                learned = spec is None or spec.lr_mult != 0
                tensor = torch.nn.Parameter(params[layer.name][index].clone(), requires_grad=learned)
                self.weights.append(tensor)
                if name:
                    self.shared[name] = tensor
            if tensor.requires_grad:
                self.param_of[(layer.name, index)] = tensor
            return tensor

        def translate(self, layer, scale):
            """The layer's function of its bottom tensors (giving a tensor, or a list for several
            tops); None for a layer that computes nothing (Input: its tops are given; Silence)."""
            kind = layer.type  # p: the layer's own block, as netlayers' Layer.p
            p = layer.blocks.get(getattr(layer.cls, "block", None) or block_name(kind))
            if kind not in TRANSLATED_TYPES:
                raise TorchNetError(f"layer '{layer.name}': type {kind} is not translated")
            if kind == "Input":
                self.inputs += layer.tops
                return None
            if kind == "Silence":
                return None
            if kind == "Split":
                return lambda x: [x] * len(layer.tops) if len(layer.tops) > 1 else x
            if kind == "BatchNorm":
                return self.batch_norm(layer, scale)
            simple = {"Sigmoid": torch.sigmoid, "TanH": torch.tanh, "AbsVal": torch.abs, "BNLL": F.softplus}
            return simple[kind] if kind in simple else getattr(self, f"t_{kind.lower()}")(layer, p)

        # -- sources and learned layers
        def t_dummydata(self, layer, p):
            """Constant fillers: their tops, made once; others draw standard normal values at
            every forward (the net is random: not compared)."""
            shapes = [list(s.dim) for s in p.shape] or [list(d) for d in zip(p.num, p.channels, p.height, p.width)]
            shapes = shapes * len(layer.tops) if len(shapes) == 1 else shapes
            fillers = p.data_filler or [None]
            fillers = fillers * len(layer.tops) if len(fillers) == 1 else fillers
            if draws_random_numbers(layer):
                values = lambda: [torch.randn(shape) for shape in shapes]  # noqa: E731
            else:
                constants = [torch.full(shape, float(f.value) if f else 0.0) for shape, f in zip(shapes, fillers)]
                values = lambda: constants  # noqa: E731
            return (lambda: values()[0]) if len(layer.tops) == 1 else values

        def t_parameter(self, layer, p):
            weight = self.parameter(layer, 0)
            return lambda: weight

        def t_convolution(self, layer, p):
            """Convolution or Deconvolution (each bottom to its top, one set of weights), on any
            channel ``axis`` (the axes before it as the batch)."""
            kernel, pad, stride, dilation = conv_geometry(p)
            weight = self.parameter(layer, 0)
            bias = self.parameter(layer, 1) if p.bias_term else None
            transposed = layer.type == "Deconvolution"

            def one(x):
                axis = canonical(p.axis, x)
                lead = x.shape[:axis]
                if axis != 1:
                    x = x.reshape(-1, *x.shape[axis:])
                if transposed:
                    y = F.conv_transpose2d(x, weight, bias, stride, pad, 0, p.group, dilation)
                else:
                    y = F.conv2d(x, weight, bias, stride, pad, dilation, p.group)
                return y if axis == 1 else y.reshape(*lead, *y.shape[1:])

            return lambda *xs: one(xs[0]) if len(xs) == 1 else [one(x) for x in xs]

        t_deconvolution = t_convolution

        def t_innerproduct(self, layer, p):
            weight = self.parameter(layer, 0)
            bias = self.parameter(layer, 1) if p.bias_term else None
            if p.transpose:  # the weight is (inputs, outputs)
                return lambda x: F.linear(x.flatten(canonical(p.axis, x)), weight.t(), bias)
            return lambda x: F.linear(x.flatten(canonical(p.axis, x)), weight, bias)

        def t_embed(self, layer, p):
            weight = self.parameter(layer, 0)
            bias = self.parameter(layer, 1) if p.bias_term else None

            def run(x):
                y = F.embedding(x if x.dtype == torch.int64 else x.long(), weight)
                return y if bias is None else y + bias

            return run

        def t_lstm(self, layer, p):
            return self.recurrent(layer, p, lstm=True)

        def t_rnn(self, layer, p):
            return self.recurrent(layer, p, lstm=False)

        def recurrent(self, layer, p, lstm):
            """torch.nn.LSTM or RNN (tanh) with netlayers' params W_xh, b_h, W_hh (torch's second
            bias zero): an LSTM's gate rows reordered from Caffe's (i, f, o, g) to torch's (i, f,
            g, o), its gradients compared in Caffe's order (``Reordered``); an RNN's output
            tanh(W_ho h_t + b_o) after it. Bottoms (x, cont), or with ``expose_hidden`` (x, cont,
            h_0[, c_0]) and the final states as tops; cont 1 after the first step, 0 there (the
            state starts from 0) or, with ``expose_hidden``, 1 (from h_0)."""
            name, hidden, exposed = layer.name, p.num_output, p.expose_hidden
            if len(layer.bottoms) != 2 + (2 if lstm else 1) * exposed:
                raise TorchNetError(f"layer '{name}': type {layer.type} with a static input is not translated")
            w_x, b, w_h = (params[name][k] for k in range(3))
            order = torch.arange(w_x.shape[0])
            if lstm:
                blocks = (range(0, 2 * hidden), range(3 * hidden, 4 * hidden), range(2 * hidden, 3 * hidden))
                order = torch.tensor([row for block in blocks for row in block])
            module = (torch.nn.LSTM if lstm else torch.nn.RNN)(w_x.shape[1], hidden)
            with torch.no_grad():
                module.weight_ih_l0.copy_(w_x[order])
                module.weight_hh_l0.copy_(w_h[order])
                module.bias_ih_l0.copy_(b[order])
                module.bias_hh_l0.zero_()
            self.add_module(f"recurrent_{len(self.ops)}", module)
            for index, tensor in enumerate((module.weight_ih_l0, module.bias_ih_l0, module.weight_hh_l0)):
                self.param_of[(name, index)] = Reordered(tensor, order) if lstm else tensor
            output = None if lstm else (self.parameter(layer, 3), self.parameter(layer, 4))

            def run(x, cont, *states):
                first, later = bool((cont[0] == 1).all()), bool((cont[1:] == 1).all())
                if not (later and (first and exposed or not bool(cont[0].any()))):
                    raise TorchNetError(
                        f"layer '{name}': type {layer.type}: only cont 1 after the first step (0 there, or 1 "
                        "with expose_hidden) is translated"
                    )
                states = states if first else ()  # cont 0 first: the states start from 0
                if lstm:
                    y, (h, c) = module(x.flatten(2), tuple(states) if states else None)
                    return [y, h, c] if exposed else y
                y, h = module(x.flatten(2), states[0] if states else None)
                y = torch.tanh(F.linear(y, *output))
                return [y, h] if exposed else y

            return run

        # -- element-wise
        def t_relu(self, layer, p):
            slope = p.negative_slope
            in_place = layer.tops[0] == layer.bottoms[0] and layer.bottoms[0] in self.fresh and slope >= 0
            if slope:  # Caffe's leaky ReLU: y = x for x > 0, slope x otherwise
                return lambda x: F.leaky_relu(x, slope, inplace=in_place)
            return lambda x: F.relu(x, inplace=in_place)

        def t_prelu(self, layer, p):
            slope = self.parameter(layer, 0)
            return lambda x: F.prelu(x, slope)

        def t_elu(self, layer, p):
            return lambda x: F.elu(x, p.alpha)

        def t_clip(self, layer, p):  # ReLU6 is Clip(0, 6)
            return lambda x: torch.clamp(x, p.min, p.max)

        def t_swish(self, layer, p):
            return lambda x: x * torch.sigmoid(p.beta * x)

        def t_threshold(self, layer, p):  # no gradient, as netlayers' 0
            return lambda x: (x > p.threshold).to(x.dtype)

        def t_power(self, layer, p):
            """(shift + scale x)^power; with power or scale 0 the constant, without gradient."""
            power, scale, shift = p.power, p.scale, p.shift
            if power * scale == 0:
                value = 1.0 if power == 0 else shift**power
                return lambda x: torch.full_like(x, value)

            def base(x):
                x = x if scale == 1 else x * scale
                return x if shift == 0 else x + shift

            if power == 1:
                return base
            if power == 2:
                return lambda x: torch.square(base(x))
            return lambda x: torch.pow(base(x), power)

        def t_exp(self, layer, p):
            """base^(shift + scale x) = base^shift exp(ln(base) scale x); base -1: e."""
            log_base = 1.0 if p.base == -1 else math.log(p.base)
            inner, outer = log_base * p.scale, math.exp(log_base * p.shift)
            return lambda x: torch.exp(x * inner) * outer if outer != 1 else torch.exp(x * inner)

        def t_log(self, layer, p):
            """log_base(shift + scale x); base -1: e."""
            log_base = 1.0 if p.base == -1 else math.log(p.base)
            return lambda x: torch.log(x * p.scale + p.shift) / log_base

        def t_dropout(self, layer, p):
            """Dropout in TRAIN: mask ~ Bernoulli(1 - ratio), times 1 / (1 - ratio) unless
            ``scale_train`` is false (the twin's own draws); in TEST the bottom, times 1 - ratio
            without ``scale_train``."""
            ratio = p.dropout_ratio
            if phase != "TRAIN":
                return (lambda x: x) if p.scale_train or ratio == 0 else (lambda x: x * (1 - ratio))
            if ratio == 0:
                return lambda x: x
            if p.scale_train:
                return lambda x: F.dropout(x, ratio, training=True)
            return lambda x: F.dropout(x, ratio, training=True) * (1 - ratio)

        def t_eltwise(self, layer, p):
            """Caffe's Eltwise over any number of bottoms: SUM (with ``coeff``), PROD or MAX."""
            if p.operation == "PROD":
                return lambda *xs: functools.reduce(torch.mul, xs)
            if p.operation == "MAX":
                return lambda *xs: functools.reduce(torch.maximum, xs)
            if p.coeff and any(c != 1 for c in p.coeff):
                return lambda *xs: sum(c * x for c, x in zip(p.coeff, xs))
            return lambda *xs: functools.reduce(torch.add, xs)

        def broadcast(self, x, operand, axis):
            """``operand`` shaped to line up with ``x`` from ``axis`` (a scalar operand anywhere)."""
            start = canonical(axis, x) if operand.dim() else 0
            return operand.reshape(*operand.shape, *([1] * (x.dim() - start - operand.dim())))

        def t_scale(self, layer, p):
            """Caffe's Scale: bottom times a learned scale (one bottom), or times the second
            bottom (two: SENet's channel gates), broadcast from ``axis`` on; plus a learned bias
            where ``bias_term``."""
            count = len(layer.bottoms)
            weight = self.parameter(layer, 0) if count == 1 else None
            bias = self.parameter(layer, 1 if count == 1 else 0) if p.bias_term else None

            def run(x, *given):
                y = x * self.broadcast(x, given[0] if given else weight, p.axis)
                return y if bias is None else y + self.broadcast(x, bias, p.axis)

            return run

        def t_bias(self, layer, p):
            """Caffe's Bias: bottom plus a learned bias (one bottom) or the second bottom,
            broadcast from ``axis`` on."""
            bias = self.parameter(layer, 0) if len(layer.bottoms) == 1 else None
            return lambda x, *given: x + self.broadcast(x, given[0] if given else bias, p.axis)

        # -- structure
        def t_concat(self, layer, p):
            axis = p.concat_dim if p.concat_dim is not None else 1 if p.axis is None else p.axis
            return lambda *xs: torch.cat(xs, canonical(axis, xs[0]))

        def t_slice(self, layer, p):
            """Caffe's Slice: at ``slice_point``s, else into equal parts, along ``axis``."""
            axis, count = p.slice_dim if p.slice_dim is not None else 1 if p.axis is None else p.axis, len(layer.tops)

            def run(x):
                a = canonical(axis, x)
                length = x.shape[a]
                points = list(p.slice_point) or [k * length // count for k in range(1, count)]
                bounds = [0, *points, length]
                parts = [x.narrow(a, lo, hi - lo) for lo, hi in zip(bounds, bounds[1:])]
                return parts if count > 1 else parts[0]

            return run

        def t_flatten(self, layer, p):
            return lambda x: x.flatten(canonical(p.axis, x), canonical(p.end_axis, x))

        def t_reshape(self, layer, p):
            return lambda x: x.reshape(caffe_reshape(x.shape, p))

        def t_crop(self, layer, p):
            """Caffe's Crop: bottom[0] cut to bottom[1]'s shape from ``axis`` on at ``offset``."""

            def run(x, like):
                start = canonical(p.axis, x)
                given = p.offset if len(p.offset) > 1 else [p.offset[0] if p.offset else 0] * (x.dim() - start)
                for a in range(start, x.dim()):
                    x = x.narrow(a, given[a - start], like.shape[a])
                return x

            return run

        def t_tile(self, layer, p):
            def run(x):
                axis = canonical(p.axis, x)
                outer, inner = math.prod(x.shape[:axis]), math.prod(x.shape[axis:])
                shape = [*x.shape[:axis], x.shape[axis] * p.tiles, *x.shape[axis + 1 :]]
                return x.reshape(outer, 1, inner).expand(outer, p.tiles, inner).reshape(shape)

            return run

        def t_reduction(self, layer, p):
            """Caffe's Reduction of every axis from ``axis`` on: SUM, ASUM, SUMSQ or MEAN, times
            ``coeff``."""
            reduce = {
                "SUM": lambda y: y.sum(-1),
                "ASUM": lambda y: y.abs().sum(-1),
                "SUMSQ": lambda y: torch.square(y).sum(-1),
                "MEAN": lambda y: y.mean(-1),
            }[p.operation]

            def run(x):
                y = reduce(x.reshape(*x.shape[: canonical(p.axis, x)], -1))
                return y if p.coeff == 1 else y * p.coeff

            return run

        # -- pooling and normalization
        def t_pooling(self, layer, p):
            """Caffe's MAX and AVE pooling (:func:`pool2d`; the mask top of MAX where torch's
            pooling takes the padding); global pooling over the whole plane."""
            if p.global_pooling and p.pool == "MAX":
                return lambda x: F.adaptive_max_pool2d(x, 1, len(layer.tops) > 1)
            if p.global_pooling:
                return lambda x: F.adaptive_avg_pool2d(x, 1)
            kernel, pad, stride = pooling_geometry(p)
            if len(layer.tops) > 1:
                if any(2 * pd > k for pd, k in zip(pad, kernel)):
                    raise TorchNetError(f"layer '{layer.name}': type Pooling: a mask top with pad above kernel / 2")
                ceil = p.round_mode == "CEIL"
                return lambda x: list(F.max_pool2d(x, kernel, stride, pad, ceil_mode=ceil, return_indices=True))
            return lambda x: pool2d(x, p.pool, kernel, pad, stride, p.round_mode)

        def t_spp(self, layer, p):
            """Caffe's spatial pyramid pooling: level l pools into 2^l x 2^l bins (kernel
            ceil(H / 2^l), its stride, pad floor((kernel 2^l - H + 1) / 2)), the levels
            flattened and concatenated (one level: kept as (N, C, 1, 1))."""

            def run(x):
                levels = []
                for level in range(p.pyramid_height):
                    bins, size = 2**level, x.shape[2:]
                    kernel = [-(-s // bins) for s in size]
                    pad = [(k * bins - s + 1) // 2 for k, s in zip(kernel, size)]
                    levels.append(pool2d(x, p.pool, kernel, pad, kernel, "CEIL"))
                return levels[0] if len(levels) == 1 else torch.cat([y.flatten(1) for y in levels], 1)

            return run

        def t_lrn(self, layer, p):
            size, alpha, beta, k = p.local_size, p.alpha, p.beta, p.k
            if p.norm_region == "WITHIN_CHANNEL":  # Caffe: 1 + alpha * window mean
                return lambda x: x * (1 + alpha * F.avg_pool2d(x * x, size, 1, size // 2)) ** -beta
            return lambda x: F.local_response_norm(x, size, alpha, beta, k)

        def batch_norm(self, layer, scale):
            """BatchNorm (with the Scale after it: affine): batch statistics, or with
            ``use_global_stats`` (default, as Caffe's: off in TRAIN, on in TEST) the stored ones
            (netlayers' blobs: sums and their count)."""
            p = layer.blocks["batch_norm_param"]
            name, eps = layer.name, p.eps
            gamma = beta = None
            if scale is not None:
                gamma = self.parameter(scale, 0)
                beta = self.parameter(scale, 1) if scale.blocks["scale_param"].bias_term else None
            global_stats = phase == "TEST" if p.use_global_stats is None else p.use_global_stats
            if global_stats:
                mean, var, count = (params[name][k] for k in range(3))
                factor = 0.0 if float(count[0]) == 0 else 1.0 / float(count[0])
                mean, var = mean * factor, var * factor
                return lambda x: F.batch_norm(x, mean, var, gamma, beta, False, 0.0, eps)
            channels = params[name][0].shape[0]
            running_mean, running_var = torch.zeros(channels), torch.ones(channels)
            self.register_buffer(f"mean_{len(self.ops)}", running_mean)
            self.register_buffer(f"var_{len(self.ops)}", running_var)
            momentum = 1 - p.moving_average_fraction
            return lambda x: F.batch_norm(x, running_mean, running_var, gamma, beta, True, momentum, eps)

        def t_mvn(self, layer, p):
            """Caffe's MVN: per (item, channel) over the rest, or per item with
            ``across_channels``: x - mean, over (std + eps) with ``normalize_variance``."""

            def run(x):
                rows = x.shape[0] if p.across_channels or x.dim() < 2 else x.shape[0] * x.shape[1]
                y = x.reshape(rows, -1)
                y = y - y.mean(1, keepdim=True)
                if p.normalize_variance:
                    y = y / (torch.square(y).mean(1, keepdim=True).sqrt() + p.eps)
                return y.reshape(x.shape)

            return run

        def t_softmax(self, layer, p):
            return lambda x: F.softmax(x, canonical(p.axis, x))

        # -- losses
        def t_softmaxwithloss(self, layer, p):
            """Softmax along ``axis`` and the log loss of the labels, predictions labelled
            ``ignore_label`` left out, over ``normalization``'s divisor (default VALID); the
            probabilities as an optional second top."""
            lp = layer.blocks["loss_param"]
            mode = lp.normalization or ("BATCH_SIZE" if lp.normalize is False else "VALID")
            ignore = lp.ignore_label

            def run(x, label):
                axis = canonical(layer.blocks["softmax_param"].axis, x)
                outer, classes = math.prod(x.shape[:axis]), x.shape[axis]
                inner = x.numel() // (outer * classes)
                scores = x.reshape(outer, classes) if inner == 1 else x.reshape(outer, classes, inner)
                target = label.reshape(scores.shape[:1] + scores.shape[2:])
                target = target if target.dtype == torch.int64 else target.long()
                skipped = -100 if ignore is None else ignore  # -100: torch's default, no label
                total = F.cross_entropy(scores, target, ignore_index=skipped, reduction="sum")
                valid = int((target != ignore).sum()) if ignore is not None and mode == "VALID" else 0
                loss = total / caffe_normalizer(mode, outer, inner, valid, ignore is not None)
                return [loss, F.softmax(x, axis)] if len(layer.tops) > 1 else loss

            return run

        def t_sigmoidcrossentropyloss(self, layer, p):
            """max(x, 0) - x t + log(1 + exp(-|x|)) summed (elements whose target is
            ``ignore_label`` left out) over ``normalization``'s divisor (default BATCH_SIZE)."""
            lp = layer.blocks["loss_param"]
            mode = lp.normalization or ("VALID" if lp.normalize else "BATCH_SIZE")
            ignore = lp.ignore_label

            def run(x, target):
                t = target.reshape(x.shape).to(x.dtype)
                outer, inner = x.shape[0], x.numel() // max(x.shape[0], 1)
                if ignore is None:
                    total, valid = F.binary_cross_entropy_with_logits(x, t, reduction="sum"), x.numel()
                else:
                    kept = t != ignore
                    total = (F.binary_cross_entropy_with_logits(x, t, reduction="none") * kept).sum()
                    valid = int(kept.sum())
                return total / caffe_normalizer(mode, outer, inner, valid, ignore is not None)

            return run

        def t_euclideanloss(self, layer, p):  # Caffe: sum of squared differences / (2 N)
            return lambda a, b: torch.square(a - b.reshape(a.shape)).sum() / (2 * a.shape[0])

        def t_hingeloss(self, layer, p):
            """One-vs-all hinge loss (L1 or L2) over the items' scores, / N."""

            def run(x, label):
                scores = x.reshape(x.shape[0], -1)
                sign = -torch.ones_like(scores)
                sign.scatter_(1, label.reshape(-1, 1).long(), 1.0)
                margin = torch.clamp(1 - sign * scores, min=0)
                return (margin.sum() if p.norm == "L1" else torch.square(margin).sum()) / x.shape[0]

            return run

        def t_multinomiallogisticloss(self, layer, p):
            """-(1 / N) sum log(max(p[n, label_n], 1e-20)) of probabilities."""

            def run(x, label):
                picked = x.reshape(x.shape[0], -1).gather(1, label.reshape(-1, 1).long())
                return -torch.log(torch.clamp(picked, min=1e-20)).sum() / x.shape[0]

            return run

        def t_infogainloss(self, layer, p):
            """Softmax along ``axis``, its logs weighted by the rows of H (the third bottom) of
            the labels, summed over ``normalization``'s divisor (default VALID)."""
            if len(layer.bottoms) < 3:
                raise TorchNetError(f"layer '{layer.name}': type InfogainLoss with H from a file is not translated")
            lp = layer.blocks["loss_param"]
            mode, ignore = lp.normalization or "VALID", lp.ignore_label

            def run(x, label, matrix):
                axis = canonical(p.axis, x)
                outer, classes = math.prod(x.shape[:axis]), x.shape[axis]
                inner = x.numel() // (outer * classes)
                log_prob = torch.log(torch.clamp(F.softmax(x, axis), min=1e-20)).reshape(outer, classes, inner)
                labels = label.reshape(outer, inner).long()
                valid = torch.ones_like(labels, dtype=torch.bool) if ignore is None else labels != ignore
                rows = matrix.reshape(classes, classes)[torch.where(valid, labels, 0)]
                per_prediction = torch.einsum("oik,oki->oi", rows, log_prob)
                norm = caffe_normalizer(mode, outer, inner, int(valid.sum()), ignore is not None)
                return -(per_prediction * valid).sum() / norm

            return run

        def t_contrastiveloss(self, layer, p):
            """Hadsell et al.'s loss of pairs: d^2 where similar (|y| >= 1), else max(margin -
            d, 0)^2 (legacy: max(margin - d^2, 0)), summed, / 2N."""

            def run(a, b, y):
                batch = a.shape[0]
                squared = torch.square(a - b.reshape(a.shape)).reshape(batch, -1).sum(1)
                if p.legacy_version:
                    apart = torch.clamp(p.margin - squared, min=0)
                else:
                    apart = torch.square(torch.clamp(p.margin - squared.sqrt(), min=0))
                return torch.where(y.reshape(batch).abs() >= 1, squared, apart).sum() / (2 * batch)

            return run

        def t_accuracy(self, layer, p):
            """The share of predictions whose label is among the ``top_k`` scores (ties count
            against it), ``ignore_label`` left out; no gradient."""
            if len(layer.tops) > 1:
                raise TorchNetError(f"layer '{layer.name}': type Accuracy with a per-class top is not translated")

            def run(x, label):
                axis = canonical(p.axis, x)
                outer, classes = math.prod(x.shape[:axis]), x.shape[axis]
                scores = x.detach().reshape(outer, classes, -1)
                labels = label.reshape(outer, -1).long()
                valid = labels != (-1 if p.ignore_label is None else p.ignore_label)
                true = scores.gather(1, torch.where(valid, labels, 0)[:, None, :])
                right = ((scores >= true).sum(1) - 1 < p.top_k) & valid
                count = int(valid.sum())
                return right.sum().to(x.dtype) / count if count else torch.zeros((), dtype=x.dtype)

            return run

        def blobs_of(self, *values, **named):
            """Every blob of the net by name, for the inputs ``values`` (or ``named``)."""
            blobs = dict(zip(self.inputs, values), **named)
            for function, bottoms, tops in self.ops:
                result = function(*(blobs[b] for b in bottoms))
                if len(tops) == 1:
                    blobs[tops[0]] = result
                else:
                    blobs.update(zip(tops, result))
            return blobs

        def outputs_of(self, *values, **named):
            """The net's outputs (``outputs``: blob name -> tensor) for the inputs."""
            blobs = self.blobs_of(*values, **named)
            return {name: blobs[name] for name in self.outputs}

        def forward(self, *values, **named):
            if not self.losses:
                return self.outputs_of(*values, **named)
            blobs = self.blobs_of(*values, **named)
            total = 0.0
            for top, weight in self.losses:
                value = blobs[top]
                total = total + (value if weight == 1 and value.dim() == 0 else weight * value.sum())
            return total

    return Module()


def netlayers_params_as_torch(net):
    """netlayers' params as torch tensors (copies), by layer name."""
    import torch

    return {name: [torch.from_numpy(blob.data.copy()) for blob in blobs] for name, blobs in net.params.items()}


def build_torch(spec, inputs, params, forward_only=False):
    """A step function (zero_grad, forward, backward; returns the loss) and the module, fed
    ``inputs`` (blob name -> array, :func:`fixed_inputs`: class indices as int64 tensors).
    ``forward_only`` (a net without a loss): the twin of the TEST phase in eval mode, its step
    the forward under ``torch.no_grad()``, returning the net's outputs (blob name -> tensor)."""
    import torch

    module = torch_net(spec, params, "TEST" if forward_only else "TRAIN")
    tensors = {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in inputs.items()}

    ordered = [tensors[name] for name in module.inputs]
    if forward_only:
        module.eval()

        def forward():
            with torch.no_grad():
                return module.outputs_of(*ordered)

        return forward, module

    def step():
        module.zero_grad()
        loss = module(*ordered)
        loss.backward()
        return loss.item()

    return step, module


class ComputationMismatch(RuntimeError):
    """netlayers and PyTorch computed different losses or gradients."""


def check_same_computation(name, net, module, ours, theirs, tolerance=GRADIENT_TOLERANCE):
    """Raise :class:`ComputationMismatch` unless the losses agree to LOSS_TOLERANCE and every
    param gradient to ``tolerance`` (relative norm of the difference). Both sides must
    just have run one step. Returns the largest relative gradient difference.

    The gradient tolerance is loose because float32 rounding differs between the two sides and
    can flip a few ReLU signs or max-pool choices: the VGG case's gradients differ from a
    float64 reference by about 3e-3 on both sides. In the AlexNet-style net, scaling conv2's
    weights by 1 + 4e-6 noise (the relative rounding of its F(4x4, 5x5) Winograd path) moves
    conv1's float64 gradient by 1.1e-2 and conv2's by 5.5e-3 (1e-6 noise: 3.5e-4, 1e-7: 1.4e-7):
    flips through three max pools; netlayers' float32 gradients there differ from PyTorch's
    by 1.0e-2 (conv1) and 5.3e-3 (conv2). A wrong computation differs by order 1.

    A gradient that vanishes by construction is rounding noise on both sides: a Scale's scale
    whose output goes through a depthwise convolution into BatchNorm (MobileNet), which undoes
    any per-channel factor, has a float32 gradient of norm 1e-7 (float64: 1e-16 relative to
    the others) that differs between the sides by 20 %. So a difference is measured against
    the larger of the gradient's norm and ``NOISE_FLOOR`` times the largest gradient's norm.
    A param no loss depends on has no torch gradient: it is compared as zeros."""
    gradients = {(layer, index): net.params[layer][index].diff for layer, index in module.param_of}
    expected = {
        key: np.zeros(gradients[key].shape) if tensor.grad is None else tensor.grad.numpy()
        for key, tensor in module.param_of.items()
    }
    return compare_gradients(name, ours, gradients, theirs, expected, tolerance)


def compare_gradients(name, ours_loss, gradients, reference_loss, expected, tolerance, reference="PyTorch"):
    """:func:`check_same_computation`'s test on plain arrays: ``gradients`` and ``expected``
    map (layer, param index) to arrays. The losses must agree to ``LOSS_TOLERANCE`` (or
    ``tolerance`` when smaller), each gradient to ``tolerance``; returns the largest relative
    difference, or raises :class:`ComputationMismatch` naming ``reference``."""
    if not abs(ours_loss - reference_loss) <= min(LOSS_TOLERANCE, tolerance) * max(abs(reference_loss), 1e-12):
        raise ComputationMismatch(
            f"net '{name}': losses differ: netlayers {ours_loss!r}, {reference} {reference_loss!r}"
        )
    worst = 0.0
    for (layer, index), difference in gradient_differences(gradients, expected).items():
        if not difference <= tolerance:
            raise ComputationMismatch(
                f"net '{name}': gradient of layer '{layer}' param {index} differs by {difference:.2e} (relative norm)"
            )
        worst = max(worst, difference)
    return worst


def gradient_differences(gradients, expected):
    """(layer, param index) -> the relative norm of ``gradients``' difference from
    ``expected``'s, measured against the larger of the expected gradient's norm and
    ``NOISE_FLOOR`` times the largest one's (see :func:`check_same_computation`)."""
    floor = NOISE_FLOOR * max((float(np.linalg.norm(grad)) for grad in expected.values()), default=0.0)
    differences = {}
    for key, want in expected.items():
        want = np.asarray(want, np.float64)
        got = np.asarray(gradients[key], np.float64)
        differences[key] = float(np.linalg.norm(got - want) / max(np.linalg.norm(want), floor, 1e-30))
    return differences


def check_same_outputs(name, ours, theirs, tolerance=LOSS_TOLERANCE):
    """A forward-only net's check (a net without a loss): raise :class:`ComputationMismatch`
    naming the blob unless the twin gives every output blob of the netlayers net, the tops no
    layer reads (``ours``: ``Net.outputs``' arrays after one forward; a deploy net's
    probabilities or scores, and any other top left unread; with the scores behind a last
    Softmax, :func:`softmax_scores`), of the same shape and within
    ``tolerance`` of netlayers' in relative norm of the difference (||ours - theirs|| over the
    larger norm of the two). The default, ``LOSS_TOLERANCE``, is the loss's: what a net with
    a loss compares of its forward. Returns the largest relative difference."""
    worst = 0.0
    for blob in sorted(ours):
        if blob not in theirs:
            raise ComputationMismatch(f"net '{name}': output blob '{blob}' has no PyTorch value")
        got, want = np.asarray(ours[blob], np.float64), np.asarray(theirs[blob], np.float64)
        if got.shape != want.shape:
            raise ComputationMismatch(
                f"net '{name}': output blob '{blob}' has shape {got.shape} in netlayers, {want.shape} in PyTorch"
            )
        scale = max(float(np.linalg.norm(got)), float(np.linalg.norm(want)), 1e-30)
        difference = float(np.linalg.norm(got - want)) / scale
        if not difference <= tolerance:
            raise ComputationMismatch(f"net '{name}': output blob '{blob}' differs by {difference:.2e} (relative norm)")
        worst = max(worst, difference)
    return worst


# -- timing ----------------------------------------------------------------------------------
def alternate_rounds(steps, rounds, iters, pause):
    """Seconds per step of each of ``steps`` in every round: each round runs ``iters`` steps of
    every one in turn (the order flips each round), after ``pause`` seconds of rest."""
    times = [[] for _ in steps]
    for r in range(rounds):
        run_round(steps, r, iters, pause, times)
    return times


def run_round(steps, r, iters, pause, times):
    """Round ``r`` of :func:`alternate_rounds`: appends each step's seconds per step to ``times``."""
    order = range(len(steps)) if r % 2 == 0 else reversed(range(len(steps)))
    for k in order:
        time.sleep(pause)
        start = time.perf_counter()
        for _ in range(iters):
            steps[k]()
        times[k].append((time.perf_counter() - start) / iters)


def quiet_and_busy_rounds(steps, rounds, iters, pause):
    """:func:`alternate_rounds` with every round run twice: quiet, then beside the busy child of
    :func:`busy_process`, which is held stopped (SIGSTOP) through the quiet half. Pairing each
    busy round with a quiet one of the same moment keeps the other jobs of a shared machine,
    whose load drifts, out of the comparison. Returns the quiet times and the busy times."""
    quiet, busy = [[] for _ in steps], [[] for _ in steps]
    with busy_process() as child:
        for r in range(rounds):
            signal_and_wait(child, signal.SIGSTOP, os.WUNTRACED)
            run_round(steps, r, iters, pause, quiet)
            signal_and_wait(child, signal.SIGCONT, os.WCONTINUED)
            run_round(steps, r, iters, pause, busy)
    return quiet, busy


def signal_and_wait(child, signum, until):
    """Send ``signum`` to ``child`` and wait until it has stopped (``os.WUNTRACED``) or
    continued (``os.WCONTINUED``); raises RuntimeError if it has ended instead."""
    child.send_signal(signum)
    _, status = os.waitpid(child.pid, until)
    if os.WIFEXITED(status) or os.WIFSIGNALED(status):
        raise RuntimeError("the busy process ended before the benchmark did")


BUSY_LOOP = """
import ctypes, os, sys
parent = int(sys.argv[1])
try:
    ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL: die with the parent, even stopped
except (AttributeError, OSError):
    pass
print("busy", flush=True)
while os.getppid() == parent:
    for _ in range(100_000):
        pass
"""


@contextlib.contextmanager
def busy_process():
    """Runs the ``with`` block while a child Python process keeps one core busy (a pure-Python
    loop; the block starts once the loop runs). Leaving the block in any way (an exception,
    Ctrl-C) kills and reaps the child; should this process die without leaving the block, the
    child dies too (Linux's parent-death signal; elsewhere it watches its parent). Yields the
    child's ``Popen``."""
    child = subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(os.getpid())], stdout=subprocess.PIPE, text=True)
    try:
        child.stdout.readline()
        yield child
    finally:
        child.kill()
        child.wait()
        child.stdout.close()


def share_kept(quiet, busy):
    """The share of its quiet speed a side keeps when busy: the median of the per-round ratios
    quiet time / busy time (lists of seconds per step), or None without busy times."""
    return statistics.median(q / b for q, b in zip(quiet, busy)) if busy else None


def iterations_for(step_seconds, round_seconds):
    return max(1, round(round_seconds / max(step_seconds, 1e-9)))


@dataclass
class Result:
    """What was measured for one net (seconds; torch fields None without PyTorch)."""

    name: str
    flops: int
    netlayers_loss: float  # None: forward only
    netlayers: float
    torch_loss: float = None
    torch: float = None
    ratio: float = None  # median of the per-round ratios netlayers / PyTorch
    gradient_difference: float = None  # None: not compared (no twin, or random numbers drawn)
    forward_only: bool = False  # a net without a loss: TEST phase, forward alone
    output_difference: float = None  # forward only: the outputs' largest (check_same_outputs)
    memory: dict = field(default_factory=dict)  # side -> MiB
    netlayers_busy: float = None  # median seconds per step beside one busy process (--busy)
    torch_busy: float = None
    netlayers_kept: float = None  # share of speed kept beside it (see share_kept)
    torch_kept: float = None
    notes: list = field(default_factory=list)  # one line each: why PyTorch ran not or unchecked


def is_net_file(name):
    """Whether a ``--nets`` value names a net file: it holds a ``/`` or ends in .yaml, .yml or
    .prototxt."""
    return "/" in name or name.lower().endswith((".yaml", ".yml", ".prototxt"))


def case_of(name, input_shapes=None, read_sources=True):
    """The :class:`Case` of a ``--nets`` value: a built-in net, or a net file (its path as its
    title; its spec: :func:`net_file_spec`, with ``input_shapes`` from ``--input-shape``)."""
    if not is_net_file(name) and name in BUILT_IN_NETS:
        return BUILT_IN_NETS[name]
    spec, notes = net_file_spec(name, input_shapes, read_sources)
    return Case(name, lambda: spec, notes=tuple(notes))


FORWARD_ONLY_NOTE = "forward only: the net has no loss (inference: its TEST phase, BatchNorm's stored statistics)"


def bench_net(name, args, torch):
    """Build both sides of net ``name`` (a name of ``NETS`` or a net file), check they compute
    the same, time them. Without a PyTorch twin (a layer :func:`torch_net` does not translate)
    netlayers runs alone; where the net draws random numbers (Dropout) both run unchecked; a
    note in ``Result.notes`` says so. A net without a loss (:func:`has_loss`) runs forward only,
    in its TEST phase, its outputs compared (:func:`check_same_outputs`); a note says so too."""
    case = case_of(name, args.input_shapes)
    spec = case.spec()
    forward_only = not has_loss(spec)
    net = new_net(spec, forward_only)
    inputs = fixed_inputs(net)
    outputs = net.forward(**inputs)  # the first forward compiles what numba has not cached
    flops = gemm_flops(net, forward_only)
    result = Result(name, flops, None, None, forward_only=forward_only)
    result.notes += case.notes
    if forward_only:
        result.notes.append(FORWARD_ONLY_NOTE)
        outputs = with_scores(net, {blob: value.copy() for blob, value in outputs.items()})
    else:
        result.netlayers_loss = netlayers_step(net)
    steps = [netlayers_stepper(net, forward_only)]
    if torch is not None:
        torch_step = twin_step(name, case, net, inputs, result, outputs)
        if torch_step is not None:
            steps.append(torch_step)
    per_step = []
    for step in steps:
        step()
        start = time.perf_counter()
        step()
        per_step.append(time.perf_counter() - start)
    iters = args.iters or iterations_for(max(per_step), args.round_seconds)
    if args.busy:
        times, busy = quiet_and_busy_rounds(steps, args.rounds, iters, args.pause)
        result.netlayers_busy, result.netlayers_kept = statistics.median(busy[0]), share_kept(times[0], busy[0])
        if len(steps) > 1:
            result.torch_busy, result.torch_kept = statistics.median(busy[1]), share_kept(times[1], busy[1])
    else:
        times = alternate_rounds(steps, args.rounds, iters, args.pause)
    result.netlayers = statistics.median(times[0])
    if len(steps) > 1:
        result.torch = statistics.median(times[1])
        result.ratio = statistics.median(a / b for a, b in zip(times[0], times[1]))
    if args.layers:
        print_layer_times(net)
    return result


def twin_step(name, case, net, inputs, result, outputs=None):
    """The PyTorch twin's step of the netlayers ``net`` (which has just run one step), checked
    against it unless the net draws random numbers; None, with a note in ``result``, where there
    is no twin: a layer not translated (:class:`TorchNetError`) or the twin failing otherwise.
    Forward only (``result.forward_only``): the TEST twin's outputs against ``outputs``, the
    netlayers net's (:func:`check_same_outputs`). A mismatch goes to :class:`Float64Referee`,
    which raises or leaves a note."""
    forward_only = result.forward_only
    theirs = None
    try:
        step, module = build_torch(net.spec, inputs, netlayers_params_as_torch(net), forward_only)
        if forward_only:
            theirs = {blob: tensor.numpy() for blob, tensor in step().items()}
        else:
            result.torch_loss = step()
    except TorchNetError as error:
        result.notes.append(f"netlayers alone: no PyTorch twin: {error}")
        return None
    except Exception as error:  # a translation gone wrong must not stop the other nets' benchmark
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        result.notes.append(f"netlayers alone: the PyTorch twin failed: {type(error).__name__}: {message}")
        return None
    if module.random:
        result.notes.append(
            f"PyTorch not compared: {', '.join(module.random)} draw(s) random numbers, each side its own"
        )
    else:
        try:
            if forward_only:
                result.output_difference = check_same_outputs(name, outputs, theirs)
            else:
                result.gradient_difference = check_same_computation(
                    name, net, module, result.netlayers_loss, result.torch_loss, case.gradient_tolerance
                )
        except ComputationMismatch as mismatch:
            tolerance = LOSS_TOLERANCE if forward_only else case.gradient_tolerance
            referee = Float64Referee(name, net, inputs, module, result, outputs, theirs, tolerance)
            result.notes.append(referee.settle(mismatch))
    return step


class Float64Referee:
    """Settles a float32 mismatch between the sides (a deep net's rounding, amplified: ResNet-101
    at batch 2 has float32 gradients 0.07 (PyTorch) and 0.12 (netlayers) from a float64 run of
    the same net, and so 0.12 from each other). Both sides run one more step in float64 from
    the float32 params and inputs: where they agree to ``REFEREE_TOLERANCE``, the two compute
    the same thing and the float32 difference is rounding; :meth:`settle` then measures each
    side's float32 result against its float64 one, and accepts netlayers' when its error is
    within ``tolerance`` or ``ROUNDING_FACTOR`` times PyTorch's. Otherwise it raises
    :class:`ComputationMismatch`: the sides differ in float64 too (a different computation), or
    netlayers rounds far more than PyTorch (a precision defect)."""

    def __init__(self, name, net, inputs, module, result, outputs, theirs, tolerance):
        import torch

        self.name, self.net, self.module, self.result = name, net, module, result
        self.outputs, self.theirs, self.tolerance = outputs, theirs, tolerance
        forward_only = result.forward_only
        exact = {key: value.astype(np.float64) if value.dtype == np.float32 else value for key, value in inputs.items()}
        ours = self.exact_net = netlayers.Net(
            net.spec, "TEST" if forward_only else "TRAIN", dtype=np.float64, seed=SEED
        )
        for layer, blobs in net.params.items():
            for blob, exact_blob in zip(blobs, ours.params[layer]):
                exact_blob.data[...] = blob.data
        params = {
            layer: [tensor.double() for tensor in tensors] for layer, tensors in netlayers_params_as_torch(net).items()
        }
        default = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)  # the twin's own tensors (running statistics)
        try:
            step, twin = build_torch(net.spec, exact, params, forward_only)
            twin.double()
            if forward_only:
                self.exact_outputs = with_scores(
                    ours, {blob: value.copy() for blob, value in ours.forward(**exact).items()}
                )
                self.twin_outputs = {blob: tensor.numpy() for blob, tensor in step().items()}
            else:
                ours.forward(**exact)
                self.exact_loss = netlayers_step(ours)
                self.twin_loss = step()
                self.exact_gradients = {key: ours.params[key[0]][key[1]].diff.copy() for key in module.param_of}
                self.twin_gradients = {
                    key: np.zeros(self.exact_gradients[key].shape) if tensor.grad is None else tensor.grad.numpy()
                    for key, tensor in twin.param_of.items()
                }
        finally:
            torch.set_default_dtype(default)

    def settle(self, mismatch):
        """A note for the result on the float32 ``mismatch``, or :class:`ComputationMismatch`."""
        name = self.name
        if self.result.forward_only:
            try:
                check_same_outputs(name, self.exact_outputs, self.twin_outputs, REFEREE_TOLERANCE)
            except ComputationMismatch as error:
                raise ComputationMismatch(f"{mismatch}; in float64 too: {_after_name(error)}") from None
            between = self.output_error(self.outputs, self.theirs)
            ours, theirs = (
                self.output_error(self.outputs, self.exact_outputs),
                self.output_error(self.theirs, self.twin_outputs),
            )
            self.result.output_difference = between
        else:
            try:
                compare_gradients(
                    name, self.exact_loss, self.exact_gradients, self.twin_loss, self.twin_gradients, REFEREE_TOLERANCE
                )
            except ComputationMismatch as error:
                cause = clamp_cause(self.exact_net)
                raise ComputationMismatch(f"{mismatch}; in float64 too: {_after_name(error)}{cause}") from None
            gradients = {key: self.net.params[key[0]][key[1]].diff for key in self.module.param_of}
            twin = {
                key: np.zeros(gradients[key].shape) if tensor.grad is None else tensor.grad.numpy()
                for key, tensor in self.module.param_of.items()
            }
            loss, twin_loss = self.result.netlayers_loss, self.result.torch_loss
            exact, twin_exact = self.exact_gradients, self.twin_gradients
            between = max(_relative(loss, twin_loss), *gradient_differences(gradients, twin).values())
            ours = max(_relative(loss, self.exact_loss), *gradient_differences(gradients, exact).values())
            theirs = max(_relative(twin_loss, self.twin_loss), *gradient_differences(twin, twin_exact).values())
            self.result.gradient_difference = between
        if not ours <= max(self.tolerance, ROUNDING_FACTOR * theirs):
            cause = clamp_cause(self.net)
            raise ComputationMismatch(
                f"net '{name}': netlayers' float32 results are {ours:.2e} from its float64 run, PyTorch's "
                f"{theirs:.2e} from its own: more than {ROUNDING_FACTOR:g} times PyTorch's rounding ({mismatch}){cause}"
            )
        return (
            f"float32 rounding: the sides differ by {between:.1e}; each from a float64 run of the same net (the "
            f"two agree to {REFEREE_TOLERANCE:.0e}) by {ours:.1e} (netlayers) and {theirs:.1e} (PyTorch)"
        )

    @staticmethod
    def output_error(outputs, exact):
        """The largest relative difference of ``outputs`` from ``exact`` over the output blobs."""
        return max(
            (
                float(np.linalg.norm(np.asarray(outputs[blob], np.float64) - exact[blob]))
                / max(float(np.linalg.norm(exact[blob])), 1e-30)
                for blob in exact
            ),
            default=0.0,
        )


def clamped_softmax_losses(net):
    """Names of ``net``'s SoftmaxWithLoss layers whose last forward gave some counted label a
    probability below the smallest normal value of their dtype, where the loss is clamped
    (Caffe's FLT_MIN in float32: -log(FLT_MIN) = 87.3 a prediction where the true loss is
    larger; netlayers' float64 nets clamp at DBL_MIN, 708.4), as a mismatch's likely cause."""
    names = []
    for layer, bottoms in zip(net.layers, net.bottom_vecs):
        prob = getattr(layer, "prob", None)
        if layer.type != "SoftmaxWithLoss" or prob is None:
            continue
        labels = np.asarray(bottoms[1].data).reshape(layer.outer, 1, layer.inner).astype(np.intp)
        ignore = layer.loss_param.ignore_label
        counted = (labels >= 0) & (labels < layer.classes) & (labels != (-1 if ignore is None else ignore))
        picked = np.take_along_axis(
            prob.reshape(layer.outer, layer.classes, layer.inner), np.where(counted, labels, 0), 1
        )
        if (picked[counted] < np.finfo(prob.dtype).tiny).any():
            names.append(layer.name)
    return names


def clamp_cause(net):
    """The end of a mismatch's message naming ``net``'s clamped SoftmaxWithLoss layers
    (:func:`clamped_softmax_losses`), or ""."""
    clamped = clamped_softmax_losses(net)
    if not clamped:
        return ""
    dtype = np.dtype(net.dtype)
    bound, loss = ("FLT_MIN", 87.3) if dtype == np.float32 else ("DBL_MIN", 708.4)
    return (
        f"; SoftmaxWithLoss {', '.join(repr(n) for n in clamped)}: a label's {dtype.name} probability below "
        f"{bound}, where netlayers' loss (Caffe's in float32) counts -log({bound}) = {loss} and PyTorch's the "
        "true log-probability: scores too large"
    )


def _relative(value, exact):
    """|value - exact| relative to |exact| (a loss's rounding)."""
    return abs(value - exact) / max(abs(exact), 1e-30)


def _after_name(error):
    """``error``'s message without its leading "net '...': "."""
    text = str(error)
    return text.split("': ", 1)[1] if text.startswith("net '") and "': " in text else text


def print_layer_times(net):
    from netlayers.inspect.timing import time_net

    print(time_net(net, iterations=5, warmup=1).table())


# -- memory ----------------------------------------------------------------------------------
def reset_peak_rss():
    """Start a new peak: the process's peak RSS becomes its current RSS (Linux: VmHWM through
    /proc/self/clear_refs). Returns the current RSS in MiB, or None where that is not possible.

    ``ru_maxrss`` cannot be used instead: a subprocess inherits its parent's peak across exec
    (a child of a 500 MiB parent reads 527 MiB before doing anything)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    return _status_mib("VmRSS")


def trim_heap():
    """Return what the process has freed to the system before a measurement starts (glibc's
    ``malloc_trim``; elsewhere nothing): freed blocks glibc keeps resident would otherwise be
    reused unseen by the measured side (netlayers' ``Net`` itself trims after its build, which
    would then hide its own growth below the warm-up's freed memory). The harness's own call,
    not ``netlayers.memory``'s: it measures older versions of netlayers side by side too."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_rss_mib():
    """The peak RSS in MiB since the last :func:`reset_peak_rss` (VmHWM), else ``ru_maxrss``."""
    return _status_mib("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _status_mib(key):
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return None
    return next((int(line.split()[1]) / 1024 for line in lines if line.startswith(key + ":")), None)


def memory_growth(name, side, threads, param_shapes=None, plan=None, data_shapes=None):
    """In this process: MiB the peak RSS grows while building net ``name`` (of ``NETS``, or a
    net file) on ``side`` ("netlayers" or "torch") and running 3 steps (forward only, in the
    TEST phase, for a net without a loss, as :func:`bench_net` runs it). ``param_shapes`` (layer
    -> list of shapes) gives the torch side its params (random values) and ``plan`` (an
    :func:`input_plan`) both sides their inputs: no netlayers net of that size is built before
    the measurement (its memory, freed, would hide the measured side's). The inputs are made
    before the measurement starts; each side then holds one copy of them that is counted (the
    netlayers net copies them into its input blobs, the torch side takes a copy of its own, as
    a data loader's batch would be). First the side runs
    :func:`warm_up_spec` for 2 steps, so that loading numba's kernels (about 70 MiB, mostly
    LLVM) and starting PyTorch's runtime are not counted; on the netlayers side with the
    convolution paths' thresholds lowered (:func:`every_conv_path`), so that the tiny net also
    loads the Winograd and row-strip kernels the measured net may run, and with the workers'
    scratch buffers freed afterwards. ``data_shapes``: the shapes of a net file's data layers'
    tops (:func:`file_data_shapes`): no source is read here (its arrays, freed, would hide the
    net's memory)."""
    torch = import_torch() if side == "torch" else None
    set_threads(threads, torch)
    warm = warm_up_spec()
    if side == "torch":
        warm_net = netlayers.Net(warm, dtype=np.float32, seed=SEED)
        warm_step, _ = build_torch(warm, fixed_inputs(warm_net), netlayers_params_as_torch(warm_net))
        del warm_net
        for _ in range(2):
            warm_step()
    else:
        with every_conv_path():
            warm_step = netlayers_stepper(build_netlayers(warm))
            for _ in range(2):
                warm_step()
    del warm_step
    netlayers.parallel.release_scratch()
    spec = case_of(name, data_shapes, read_sources=False).spec()
    forward_only = not has_loss(spec)
    if plan is not None:
        inputs = make_inputs(plan)
    else:
        inputs = fixed_inputs(new_net(spec, True) if forward_only else spec)
    trim_heap()
    before = reset_peak_rss() or peak_rss_mib()
    if side == "torch":
        params = {layer: [torch.randn(shape).mul_(0.01) for shape in shapes] for layer, shapes in param_shapes.items()}
        # its own copy of the inputs, as netlayers copies them into its input blobs: both count one
        inputs = {name: np.array(value) for name, value in inputs.items()}
        step, _ = build_torch(spec, inputs, params, forward_only)
    else:
        step = netlayers_stepper(build_netlayers(spec, inputs, forward_only), forward_only)
    for _ in range(3):
        step()
    return peak_rss_mib() - before


@contextlib.contextmanager
def every_conv_path():
    """For the block, :func:`warm_up_spec`'s 3x3 layers run as Winograd (``conv1``, 3 channels:
    F(2x2, 3x3); ``conv3``, 8 channels: F(4x4, 3x3); ``conv2``, group 2, by the grouped rule,
    the direct grouped kernels left out, which take it otherwise; ``dilated`` over its phases),
    its 1x1 layer as row strips, its 1 x 5 layer as 1-D Winograd and its 5 x 5 layer as F(4x4,
    5x5)."""
    from netlayers.kernels import grouped, strips, winograd, winograd1d, winograd2d
    from netlayers.warmup import WINOGRAD_EVERYWHERE, constants

    groups = {"MIN_GROUP_CHANNELS": 1, "MIN_GROUP_CHANNELS_SMALL_MAP": 1, "MIN_GROUP_TILES": 1}
    with (
        constants(grouped, MAX_GROUP_CHANNELS=1),
        constants(winograd, MIN_CHANNELS_F4=8, **WINOGRAD_EVERYWHERE, **groups),
        constants(strips, MIN_KERNEL=1, MIN_CHANNELS=1, MIN_WORK=1),
        constants(winograd1d, MIN_CHANNELS=1, MIN_TILES=1),
        constants(winograd2d, MIN_SHARE_OUTPUTS=1, **WINOGRAD_EVERYWHERE),
    ):
        yield


def netlayers_stepper(net, forward_only=False):
    """The netlayers side's step: :func:`netlayers_step`, or with ``forward_only`` (a net without
    a loss) the forward alone."""
    return (lambda: net.forward()) if forward_only else (lambda: netlayers_step(net))


def warm_up_spec():
    """A tiny net with every layer type and convolution shape of ``NETS`` (a 256-pixel and a
    64-pixel plane, group 2, depthwise, 1x1 (and with stride 2), 1 x 5, 5 x 5, deconvolution,
    dilation, LRN, BatchNorm + Scale, Eltwise, Concat, Sigmoid, TanH, ELU, PReLU, the poolings)."""
    return net_spec(
        "warm_up",
        [
            input_layer(2, 3, 16, 16),
            conv("conv1", "data", 8, 3, pad=1),
            relu("relu1", "conv1"),
            lrn("norm1", "conv1"),
            pool("pool1", "norm1", "MAX", 3, 2),
            conv("conv2", "pool1", 8, 3, pad=1, group=2, bias=False),
            *batch_norm_scale("conv2", "conv2"),
            conv("dw", "conv2", 8, 3, pad=1, group=8),
            conv("pw", "dw", 8, 1),
            {"name": "sum", "type": "Eltwise", "bottom": ["conv2", "pw"], "top": "sum"},
            conv("conv3", "sum", 8, 3, pad=1),
            pool("pool2", "conv3", "AVE", 3, 2),
            conv("deconv", "pool2", 4, 4, pad=1, stride=2, type="Deconvolution"),
            *(activation(kind.lower(), "deconv", kind) for kind in ("Sigmoid", "TanH", "ELU", "PReLU")),
            dilated_conv("dilated", "deconv", 4, 3, 2),
            conv("wide", "deconv", 4, 1, stride=2),
            row_conv("row1d", "wide", 4),
            pool("pool_pad", "deconv", "MAX", 3, 1, pad=1),
            {"name": "concat", "type": "Concat", "bottom": ["dilated", "pool_pad"], "top": "concat"},
            conv("square5", "concat", 4, 5, pad=2),
            pool("pool3", "square5", "AVE"),
            pool("pool4", "row1d", "MAX"),
            inner_product("fc", "pool3", 10),
            inner_product("fc2", "pool4", 10),
            {"name": "sum2", "type": "Eltwise", "bottom": ["fc", "fc2"], "top": "sum2"},
            loss("sum2"),
        ],
    )


def measure_memory(name, side, threads, input_shapes=None):
    """:func:`memory_growth` of ``side`` in a fresh Python subprocess (a net file by its
    absolute path)."""
    spec = case_of(name, input_shapes).spec()
    data_shapes = file_data_shapes(name, input_shapes) if is_net_file(name) else None
    net = netlayers.Net(spec, "TRAIN" if has_loss(spec) else "TEST", dtype=np.float32, seed=SEED)
    shapes = {layer: [list(blob.data.shape) for blob in blobs] for layer, blobs in net.params.items()}
    plan = input_plan(net)
    if is_net_file(name):
        name = str(Path(name).resolve())
    code = (
        f"import sys; sys.path.insert(0, {str(TOOLS)!r}); import bench_nets; "
        f"print(bench_nets.memory_growth({name!r}, {side!r}, {threads}, {shapes!r}, {plan!r}, {data_shapes!r}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory of net '{name}' ({side}) failed:\n{done.stderr}")
    return float(done.stdout.split()[-1])


# -- report ----------------------------------------------------------------------------------
def set_threads(count, torch):
    """``count`` threads for PyTorch, the BLAS/OpenMP pools (threadpoolctl) and numba."""
    if torch is not None:
        torch.set_num_threads(count)
    from netlayers.threads import configure_threads

    configure_threads(count)


def load_average():
    """The machine's 1-minute load average against its cores: other processes' work slows
    both sides, netlayers' many short BLAS calls the most."""
    return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


def ms(seconds):
    return "-" if seconds is None else f"{seconds * 1e3:.1f}"


def times_over(seconds, floor):
    """A time in floors ("-" for a net without products: no floor to compare with)."""
    return "-" if seconds is None or not floor else f"{seconds / floor:.1f}x"


def percent(share):
    return "-" if share is None else f"{share:.0%}"


def markdown_table(results, rate, memory, busy=False):
    """The README table: one row per net (with ``memory``, each side's peak working memory
    and their ratio; with ``busy``, the share of speed each side keeps beside a busy process).
    A net run forward only (no loss) has "(forward only)" after its title: its times, floor
    and memory are a forward's."""
    header = ["net", "netlayers ms", "PyTorch ms", "netlayers / PyTorch", "GEMM floor ms", "netlayers / floor"]
    header += ["PyTorch / floor"]
    if memory:
        header += ["netlayers MiB", "PyTorch MiB", "MiB ratio"]
    if busy:
        header += ["netlayers speed kept, busy", "PyTorch speed kept, busy"]
    rows = [header, ["---"] * len(header)]
    for r in results:
        floor = r.flops / rate
        title = r.name if is_net_file(r.name) else case_of(r.name).title
        title += " (forward only)" if r.forward_only else ""
        row = [title, ms(r.netlayers), ms(r.torch), "-" if r.ratio is None else f"{r.ratio:.2f}x"]
        row += [ms(floor), times_over(r.netlayers, floor), times_over(r.torch, floor)]
        if memory:
            mine, theirs = r.memory.get("netlayers"), r.memory.get("torch")
            row += [f"{mine:.0f}", "-" if theirs is None else f"{theirs:.0f}"]
            row += ["-" if not theirs else f"{mine / theirs:.2f}x"]
        if busy:
            row += [percent(r.netlayers_kept), percent(r.torch_kept)]
        rows.append(row)
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def busy_line(result):
    """What ``--busy`` measured for one net, for the log."""
    mine, theirs = result.netlayers_kept, result.torch_kept
    line = f"{'':<14} beside a busy process: netlayers {ms(result.netlayers_busy):>7} ms, keeps {percent(mine)}"
    if theirs is not None:
        verdict = "yes" if mine >= theirs else "no"
        line += f"; PyTorch {ms(result.torch_busy):>7} ms, keeps {percent(theirs)}"
        line += f"; netlayers keeps at least PyTorch's share: {verdict}"
    return line


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--nets",
        default=",".join(ISSUE_NETS),
        help=f"comma-separated, of: {', '.join(NETS)}; 'all': every one (default: issue 10's table and LeNet); "
        "'zoo': the Caffe model zoo's deploy nets of tests/fixtures/zoo (forward only); "
        f"'layers': one net per layer kind at {' x '.join(map(str, PROBE_SHAPE))} ({', '.join(LAYER_NETS)}); "
        "or net files (YAML or Caffe .prototxt: a value holding a / or ending in .yaml, .yml or .prototxt); "
        "their data layers give way to Input layers of the same shapes",
    )
    parser.add_argument("--threads", type=int, default=2, help="threads of each side (default 2)")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (default 7)")
    parser.add_argument(
        "--iters", type=int, default=0, help="steps per side and round (default: as many as fill --round-seconds)"
    )
    parser.add_argument("--round-seconds", type=float, default=0.25, help=argparse.SUPPRESS)
    parser.add_argument(
        "--pause",
        type=float,
        default=0.5,
        help="seconds of rest before each side's run (default 0.5: longer than OpenBLAS's idle threads spin)",
    )
    parser.add_argument("--memory", action="store_true", help="also measure peak working memory (slower)")
    parser.add_argument(
        "--busy", action="store_true", help="also time both sides beside one busy process: the share of speed kept"
    )
    parser.add_argument("--layers", action="store_true", help="print netlayers' per-layer times of each net")
    parser.add_argument(
        "--input-shape",
        type=parse_input_shape,
        action="append",
        default=[],
        metavar="BLOB=D1,D2,...",
        help="the shape of a top of a net file's data layer whose source cannot be read (repeatable; "
        "a readable source gives its own shapes)",
    )
    args = parser.parse_args(argv)
    args.input_shapes = dict(args.input_shape)
    groups = {"all": list(NETS), "zoo": [str(ZOO / path) for path in ZOO_NETS], "layers": list(LAYER_NETS)}
    names = [name.strip() for name in args.nets.split(",") if name.strip()]
    args.nets = [net for name in names for net in groups.get(name, [name])]
    unknown = [n for n in args.nets if n not in BUILT_IN_NETS and not is_net_file(n)]
    if unknown:
        parser.error(
            f"unknown net(s): {', '.join(unknown)}; known: {', '.join(NETS)}, the layer probes of 'layers' "
            f"({', '.join(LAYER_NETS)}), 'all', 'zoo', 'layers' or a net file"
        )
    return args


def main(argv=None):
    args = parse_args(argv)
    forward_only = False  # some net file without a loss
    try:
        for name in args.nets:  # a bad net file stops the run before anything is timed
            if is_net_file(name):
                forward_only |= not has_loss(case_of(name, args.input_shapes).spec())
    except BenchError as error:
        print(f"bench_nets: error: {error}", file=sys.stderr)
        return 1
    torch = import_torch()
    set_threads(args.threads, torch)
    rate = sgemm_rate()
    versions = f"PyTorch {torch.__version__}" if torch else "PyTorch not installed: netlayers alone"
    step = "forward+backward per step" + (" (a net without a loss: forward only)" if forward_only else "")
    print(
        f"{step}, float32, {args.threads} threads each, numpy sgemm "
        f"{rate / 1e9:.0f} GFLOP/s; {versions}; median of {args.rounds} rounds; {load_average()}"
    )
    results = []
    for name in args.nets:
        try:
            result = bench_net(name, args, torch)
        except (ComputationMismatch, NetlayersError) as error:
            print(f"bench_nets: error: {error}", file=sys.stderr)
            return 1
        if args.memory:
            for side in ("netlayers", "torch") if result.torch is not None else ("netlayers",):
                result.memory[side] = measure_memory(name, side, args.threads, args.input_shapes)
        results.append(result)
        rate = max(rate, sgemm_rate())  # a busy moment lowers one measurement: keep the best
        print(result_line(result, result.flops / rate, args.busy), flush=True)
    print(f"\nGEMM floor at numpy's best sgemm rate of the run: {rate / 1e9:.0f} GFLOP/s; {load_average()}\n")
    print(markdown_table(results, rate, args.memory, args.busy))
    if torch is None:
        print("\nPyTorch is not installed: netlayers ran alone.")
    return 0


def result_line(result, floor, busy):
    """One net's line of the log (with ``busy``, what --busy measured; then its notes). A net
    without a loss reads "(forward only)" where the loss would be, and how close the outputs
    are where the gradients would be."""
    if result.forward_only:
        line = f"{result.name:<14} netlayers {ms(result.netlayers):>7} ms (forward only)"
    else:
        line = f"{result.name:<14} netlayers {ms(result.netlayers):>7} ms (loss {result.netlayers_loss:.6f})"
    if result.torch is not None:
        if result.forward_only:
            compared = result.output_difference
            checked = "not compared" if compared is None else f"outputs within {compared:.0e}"
            line += f"  PyTorch {ms(result.torch):>7} ms (forward only; {checked})"
        else:
            compared = result.gradient_difference
            checked = "not compared" if compared is None else f"gradients within {compared:.0e}"
            line += f"  PyTorch {ms(result.torch):>7} ms (loss {result.torch_loss:.6f}; {checked})"
        line += f"  ratio {result.ratio:.2f}x"
    line += f"  floor {ms(floor)} ms ({result.flops / 1e9:.2f} GFLOP)"
    if result.memory:
        line += "  MiB " + ", ".join(f"{side} {mib:.0f}" for side, mib in result.memory.items())
    if busy:
        line += "\n" + busy_line(result)
    return "\n".join([line, *(f"{'':<14} note: {note}" for note in result.notes)])


if __name__ == "__main__":
    sys.exit(main())
