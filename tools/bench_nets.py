"""Benchmark: real-size nets forward + backward in netlayers, side by side with PyTorch.

    python tools/bench_nets.py [--nets cifar10_quick,vgg,...|all] [--threads 2] [--rounds 7]
                               [--iters N] [--memory] [--busy] [--layers]

The nets of issue 10's table and LeNet (``ISSUE_NETS``, the default), and with ``--nets all``
or by name, more kinds of net (``NETS``: Network in Network, ResNet-50's bottleneck blocks, an
inception module, Sigmoid and TanH MLPs, ELU and PReLU convnets, dilated and 1-D convolutions,
one large image, AlexNet's classifier, whole ResNets, GoogLeNet and MobileNet, an FCN-32s with
its per-pixel loss), float32. One *step* is: clear the param gradients,
forward, backward (PyTorch: ``zero_grad()``, forward, ``loss.backward()``). Both sides run with
the same thread count (``--threads``, default 2: ``torch.set_num_threads``, and threadpoolctl
plus numba's pool for netlayers) on the same fixed batch with the same weights: PyTorch's net
is built from the netlayers spec layer by layer (:func:`torch_net`) and takes netlayers'
initial params. The netlayers net is built as a solver builds its TRAIN net
(``share_diffs=True``: blobs whose gradients are never alive at once share diff memory).
Before timing, both losses and all param gradients are compared; if they
differ (loss by more than 1e-4 relative, a gradient by more than 1e-2 in relative norm) the
run stops with an error, since a benchmark of two different computations is worthless.

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
import math
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS.parent))
sys.path.insert(0, str(TOOLS))

from bench_lenet import lenet_spec  # noqa: E402

import netlayers  # noqa: E402

LOSS_TOLERANCE = 1e-4  # relative
GRADIENT_TOLERANCE = 3e-2  # relative norm of the difference (see check_same_computation)
NOISE_FLOOR = 1e-4  # of the largest gradient's norm: below it a gradient is rounding noise
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


def bottleneck_block(layers, name, bottom, width, stride, project):
    """A ResNet bottleneck block appended to ``layers``: 1x1 (``stride``) to ``width``, 3x3,
    1x1 to 4 ``width``, BatchNorm + Scale after each, ReLU after the first two; added to the
    block's input, or with ``project`` to its 1x1 projection (``stride``), then ReLU."""
    shortcut = bottom
    if project:
        shortcut = f"{name}_proj"
        layers += [conv(shortcut, bottom, 4 * width, 1, stride=stride, bias=False)]
        layers += batch_norm_scale(shortcut, shortcut)
    a, b, c = f"{name}a", f"{name}b", f"{name}c"
    layers += [conv(a, bottom, width, 1, stride=stride, bias=False), *batch_norm_scale(a, a), relu(f"{a}_relu", a)]
    layers += [conv(b, a, width, 3, pad=1, bias=False), *batch_norm_scale(b, b), relu(f"{b}_relu", b)]
    layers += [conv(c, b, 4 * width, 1, bias=False), *batch_norm_scale(c, c)]
    layers += [{"name": name, "type": "Eltwise", "bottom": [shortcut, c], "top": name}, relu(f"{name}_relu", name)]
    return name


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


def basic_block(layers, name, bottom, width, stride):
    """A ResNet basic block appended to ``layers``: 3x3 (stride ``stride``) -> BatchNorm + Scale
    -> ReLU -> 3x3 -> BatchNorm + Scale, plus the shortcut (the identity, or where the block
    downsamples a 1x1 stride-2 projection with BatchNorm + Scale), Eltwise SUM, ReLU."""
    a, b = f"{name}_a", f"{name}_b"
    layers += [conv(a, bottom, width, 3, pad=1, stride=stride, bias=False), *batch_norm_scale(a, a)]
    layers += [relu(f"{a}_relu", a)]
    layers += [conv(b, a, width, 3, pad=1, bias=False), *batch_norm_scale(b, b)]
    shortcut = bottom
    if stride != 1:
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


def densenet(batch=16, size=28, channels=64, growth=32, count=4):
    """A DenseNet block (Huang et al.): ``count`` layers, each BatchNorm + Scale -> ReLU -> 3x3
    convolution of ``growth`` outputs on all the maps so far, concatenated to them (64 -> 192
    channels at 28 x 28); global average pooling, InnerProduct 10."""
    layers, bottom = [input_layer(batch, channels, size, size)], "data"
    for k in range(count):
        n = f"d{k}"
        layers += [{"name": f"{n}_bn", "type": "BatchNorm", "bottom": bottom, "top": f"{n}_bn"}]
        scale = {"name": f"{n}_scale", "type": "Scale", "bottom": f"{n}_bn", "top": f"{n}_bn"}
        layers += [{**scale, "scale_param": {"bias_term": True}}, relu(f"{n}_relu", f"{n}_bn")]
        layers += [conv(f"{n}_conv", f"{n}_bn", growth, 3, pad=1, bias=False)]
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


@dataclass
class Case:
    """A net of the benchmark: its spec (a function of nothing: the default sizes), the row
    title the table shows, and the relative difference its gradients may have from PyTorch's
    (see ``check_same_computation``)."""

    title: str
    spec: object
    gradient_tolerance: float = GRADIENT_TOLERANCE


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
    }
)


# -- inputs and GEMM FLOPs -------------------------------------------------------------------
def fixed_inputs(spec, seed=0):
    """The net's Input blobs: ``data`` standard normal, ``label`` class indices 0..9."""
    rng = np.random.default_rng(seed)
    shapes = spec["layers"][0]["input_param"]["shape"]
    data_shape, label_shape = (tuple(s["dim"]) for s in shapes)
    data = rng.standard_normal(data_shape, dtype=np.float32)
    return {"data": data, "label": rng.integers(0, 10, label_shape).astype(np.float32)}


def gemm_flops(spec, net):
    """FLOPs of the net's Convolution, Deconvolution and InnerProduct matrix products in one
    forward + backward step: forward F = 2 * weights * output positions (a convolution's
    output pixels; a deconvolution's input pixels; an InnerProduct's rows), backward F for
    the weight gradient plus F for the data gradient unless the bottom is the net's input."""
    total = 0
    for layer in spec["layers"]:
        if layer["type"] == "LSTM":
            total += lstm_flops(layer, net)
            continue
        if layer["type"] not in ("Convolution", "Deconvolution", "InnerProduct"):
            continue
        weights = net.params[layer["name"]][0].data.size
        bottom_shape = net.blobs[_first_bottom(layer)].data.shape
        if layer["type"] == "Convolution":
            top_shape = net.blobs[layer["top"]].data.shape
            positions = top_shape[0] * math.prod(top_shape[2:])
        elif layer["type"] == "Deconvolution":
            positions = bottom_shape[0] * math.prod(bottom_shape[2:])
        else:
            positions = math.prod(bottom_shape[: layer.get("inner_product_param", {}).get("axis", 1)])
        forward = 2 * weights * positions
        total += forward * (2 if _first_bottom(layer) in net.inputs else 3)
    return total


def _first_bottom(layer):
    return layer["bottom"] if isinstance(layer["bottom"], str) else layer["bottom"][0]


def lstm_flops(layer, net):
    """An LSTM's products in one step: forward F = 2 (W_xc + W_hc entries) T N; backward F
    for the weight gradients, the recurrent product back through the steps, and the input's
    gradient unless the input is the net's."""
    input_weight, _, recurrent_weight = (blob.data.size for blob in net.params[layer["name"]][:3])
    rows = math.prod(net.blobs[_first_bottom(layer)].data.shape[:2])
    forward = 2 * (input_weight + recurrent_weight) * rows
    backward = forward + 2 * recurrent_weight * rows
    if _first_bottom(layer) not in net.inputs:
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
def build_netlayers(spec, inputs):
    """The float32 TRAIN net of ``spec``, as a solver builds it, with ``inputs`` set (the
    forward of later steps reuses them)."""
    net = netlayers.Net(spec, dtype=np.float32, seed=SEED, share_diffs=True)
    net.forward(**inputs)
    return net


def netlayers_step(net):
    """Clear the param gradients, forward, backward; returns the loss."""
    net.clear_param_diffs()
    loss = net.forward()["loss"].item()
    net.backward()
    return loss


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
        return self.tensor.grad[self.order]


class TorchNetError(ValueError):
    """The spec holds a layer or field :func:`torch_net` does not translate."""


def _single_number(param, name, default):
    """A convolution field as torch takes it: one number, or a (height, width) pair for a
    two-item list (a one-item list is its number)."""
    value = param.get(name, default)
    if isinstance(value, list):
        if len(value) not in (1, 2):
            raise TorchNetError(f"{name}: a list of {len(value)} values is not translated")
        return value[0] if len(value) == 1 else tuple(value)
    return value


def torch_net(spec, params):
    """The PyTorch twin of the netlayers ``spec``: a ``torch.nn.Module`` whose ``forward(data,
    label)`` returns the loss. ``params`` maps a layer name to its param tensors in netlayers'
    order (a Convolution's weight and bias, a Scale's scale and bias; a BatchNorm's are ignored:
    torch keeps its running statistics apart). A BatchNorm followed by a Scale of its top
    becomes one affine ``batch_norm`` (as ``BatchNorm2d(affine=True)``); a ReLU whose top is
    its bottom runs in place. ``module.param_of[(layer, index)]`` is the torch Parameter of a
    netlayers param."""
    import torch

    F = torch.nn.functional

    class Module(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weights = torch.nn.ParameterList()
            self.param_of = {}
            self.ops = []  # (function of the bottom tensors, bottom names, top name)
            layers = spec["layers"][1:]
            k = 0
            while k < len(layers):
                layer = layers[k]
                fused_scale = (
                    layer["type"] == "BatchNorm"
                    and k + 1 < len(layers)
                    and layers[k + 1]["type"] == "Scale"
                    and layers[k + 1]["bottom"] == layer["top"]
                )
                self.ops.append(self.translate(layer, layers[k + 1] if fused_scale else None))
                k += 2 if fused_scale else 1

        def parameter(self, layer, index):
            tensor = torch.nn.Parameter(params[layer][index].clone())
            self.weights.append(tensor)
            self.param_of[(layer, index)] = tensor
            return tensor

        def translate(self, layer, scale):
            kind, name = layer["type"], layer["name"]
            bottoms = layer.get("bottom", [])
            bottoms = [bottoms] if isinstance(bottoms, str) else bottoms
            top = layer["top"]
            if kind in ("Convolution", "Deconvolution"):
                function = self.convolution(layer)
            elif kind == "InnerProduct":
                weight, bias = self.parameter(name, 0), self.parameter(name, 1)
                axis = layer["inner_product_param"].get("axis", 1)
                function = lambda x: F.linear(x.flatten(axis), weight, bias)  # noqa: E731
            elif kind == "DummyData":
                function = self.constants(layer)
            elif kind == "LSTM":
                function, top = self.lstm(layer), top[0]
            elif kind == "ReLU":
                in_place = top == bottoms[0]
                slope = layer.get("relu_param", {}).get("negative_slope", 0.0)
                if slope:  # Caffe's leaky ReLU: y = x for x > 0, slope x otherwise
                    function = lambda x: F.leaky_relu(x, slope, inplace=in_place)  # noqa: E731
                else:
                    function = lambda x: F.relu(x, inplace=in_place)  # noqa: E731
            elif kind == "PReLU":
                slope = self.parameter(name, 0)
                function = lambda x: F.prelu(x, slope)  # noqa: E731
            elif kind == "ELU":
                alpha = layer.get("elu_param", {}).get("alpha", 1.0)
                function = lambda x: F.elu(x, alpha)  # noqa: E731
            elif kind in ("Sigmoid", "TanH"):
                function = torch.sigmoid if kind == "Sigmoid" else torch.tanh
            elif kind == "Concat":
                axis = layer.get("concat_param", {}).get("axis", 1)
                function = lambda *xs: torch.cat(xs, axis)  # noqa: E731
            elif kind == "Pooling":
                function = self.pooling(layer["pooling_param"])
            elif kind == "LRN":
                p = layer["lrn_param"]
                size, alpha, beta, k = p.get("local_size", 5), p.get("alpha", 1.0), p.get("beta", 0.75), p.get("k", 1.0)
                if p.get("norm_region", "ACROSS_CHANNELS") == "WITHIN_CHANNEL":  # Caffe: 1 + alpha * window mean
                    function = lambda x: x * (1 + alpha * F.avg_pool2d(x * x, size, 1, size // 2)) ** -beta  # noqa: E731
                else:
                    function = lambda x: F.local_response_norm(x, size, alpha, beta, k)  # noqa: E731
            elif kind == "BatchNorm":
                function = self.batch_norm(layer, scale)
                top = scale["top"] if scale else top
            elif kind == "Eltwise" and layer.get("eltwise_param", {}).get("operation", "SUM") == "SUM":
                function = lambda a, b: a + b  # noqa: E731
            elif kind == "SoftmaxWithLoss":
                function = self.softmax_loss(layer)
            elif kind == "Crop":
                function = self.crop(layer.get("crop_param", {}))
            elif kind == "EuclideanLoss":  # Caffe: sum of squared differences / (2 N)
                function = lambda a, b: ((a - b) ** 2).sum() / (2 * a.shape[0])  # noqa: E731
            else:
                raise TorchNetError(f"layer '{name}': type {kind} is not translated")
            return function, bottoms, top

        def softmax_loss(self, layer):
            axis = layer.get("softmax_param", {}).get("axis", 1)
            if axis != 1:  # classes on ``axis``: cross_entropy wants them on axis 1
                return lambda x, label: F.cross_entropy(x.movedim(axis, 1), label)
            return lambda x, label: F.cross_entropy(
                x.flatten(1) if x[0].numel() == x.shape[1] else x, label[:, 0] if label.dim() == x.dim() else label
            )

        def crop(self, p):
            """Caffe's Crop: bottom[0] cut to bottom[1]'s shape from ``axis`` on at ``offset``."""
            axis, offsets = p.get("axis", 2), p.get("offset", [])
            offsets = offsets if isinstance(offsets, list) else [offsets]

            def run(x, like):
                start = axis % x.dim()
                given = offsets if len(offsets) > 1 else [offsets[0] if offsets else 0] * (x.dim() - start)
                for a in range(start, x.dim()):
                    x = x.narrow(a, given[a - start], like.shape[a])
                return x

            return run

        def constants(self, layer):
            """DummyData with constant fillers: its tops, made once."""
            p = layer["dummy_data_param"]
            values = [torch.full(s["dim"], float(f.get("value", 0))) for s, f in zip(p["shape"], p["data_filler"])]
            return lambda: values

        def lstm(self, layer):
            """torch.nn.LSTM with netlayers' params: Caffe's gate rows (i, f, o, g) reordered to
            torch's (i, f, g, o), torch's second bias zero. The gradients are compared in Caffe's
            order (``Reordered``). Takes the (cont, h_0, c_0) of a DummyData: cont must be 1."""
            name, hidden = layer["name"], layer["recurrent_param"]["num_output"]
            blocks = (range(0, 2 * hidden), range(3 * hidden, 4 * hidden), range(2 * hidden, 3 * hidden))
            order = torch.tensor([row for block in blocks for row in block])
            w_x, b, w_h = (params[name][k] for k in range(3))
            module = torch.nn.LSTM(w_x.shape[1], hidden)
            with torch.no_grad():
                module.weight_ih_l0.copy_(w_x[order])
                module.weight_hh_l0.copy_(w_h[order])
                module.bias_ih_l0.copy_(b[order])
                module.bias_hh_l0.zero_()
            self.add_module(f"recurrent_{name}", module)
            for index, tensor in enumerate((module.weight_ih_l0, module.bias_ih_l0, module.weight_hh_l0)):
                self.param_of[(name, index)] = Reordered(tensor, order)

            def run(x, cont, h0, c0):
                if not bool((cont == 1).all()):
                    raise TorchNetError(f"layer '{name}': only cont 1 throughout is translated")
                return module(x, (h0, c0))[0]

            return run

        def convolution(self, layer):
            p = layer["convolution_param"]
            weight = self.parameter(layer["name"], 0)
            bias = self.parameter(layer["name"], 1) if p.get("bias_term", True) else None
            stride, pad, group, dilation = (
                _single_number(p, n, d) for n, d in (("stride", 1), ("pad", 0), ("group", 1), ("dilation", 1))
            )
            if layer["type"] == "Deconvolution":
                return lambda x: F.conv_transpose2d(x, weight, bias, stride, pad, groups=group, dilation=dilation)
            return lambda x: F.conv2d(x, weight, bias, stride, pad, dilation, group)

        def pooling(self, p):
            method = p.get("pool", "MAX")
            if p.get("global_pooling"):
                if method == "MAX":
                    return lambda x: F.adaptive_max_pool2d(x, 1)
                return lambda x: F.adaptive_avg_pool2d(x, 1)
            kernel, stride, pad = p["kernel_size"], p.get("stride", 1), p.get("pad", 0)
            if method == "MAX":
                return lambda x: F.max_pool2d(x, kernel, stride, pad, ceil_mode=True)
            return lambda x: F.avg_pool2d(x, kernel, stride, pad, ceil_mode=True)

        def batch_norm(self, layer, scale):
            p = layer.get("batch_norm_param", {})
            eps = p.get("eps", 1e-5)
            momentum = 1 - p.get("moving_average_fraction", 0.999)
            channels = params[layer["name"]][0].shape[0]
            running_mean = torch.zeros(channels)
            running_var = torch.ones(channels)
            self.register_buffer(f"{layer['name']}_mean", running_mean)
            self.register_buffer(f"{layer['name']}_var", running_var)
            gamma = beta = None
            if scale is not None:
                gamma, beta = self.parameter(scale["name"], 0), self.parameter(scale["name"], 1)
            return lambda x: F.batch_norm(x, running_mean, running_var, gamma, beta, True, momentum, eps)

        def forward(self, data, label):
            blobs = {"data": data, "label": label}
            for function, bottoms, top in self.ops:
                result = function(*(blobs[b] for b in bottoms))
                if isinstance(top, list):  # several tops (DummyData)
                    blobs.update(zip(top, result))
                else:
                    blobs[top] = result
            return blobs["loss"]

    return Module()


def netlayers_params_as_torch(net):
    """netlayers' params as torch tensors (copies), by layer name."""
    import torch

    return {name: [torch.from_numpy(blob.data.copy()) for blob in blobs] for name, blobs in net.params.items()}


def build_torch(spec, inputs, params):
    """A step function (zero_grad, forward, backward; returns the loss) and the module."""
    import torch

    module = torch_net(spec, params)
    data = torch.from_numpy(inputs["data"])
    label = torch.from_numpy(inputs["label"].astype(np.int64))

    def step():
        module.zero_grad()
        loss = module(data, label)
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
    the larger of the gradient's norm and ``NOISE_FLOOR`` times the largest gradient's norm."""
    expected = {key: tensor.grad.numpy() for key, tensor in module.param_of.items()}
    gradients = {(layer, index): net.params[layer][index].diff for layer, index in expected}
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
    floor = NOISE_FLOOR * max((float(np.linalg.norm(grad)) for grad in expected.values()), default=0.0)
    worst = 0.0
    for (layer, index), want in expected.items():
        got = gradients[(layer, index)].astype(np.float64)
        difference = float(np.linalg.norm(got - want) / max(np.linalg.norm(want), floor, 1e-30))
        if not difference <= tolerance:
            raise ComputationMismatch(
                f"net '{name}': gradient of layer '{layer}' param {index} differs by {difference:.2e} (relative norm)"
            )
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
    netlayers_loss: float
    netlayers: float
    torch_loss: float = None
    torch: float = None
    ratio: float = None  # median of the per-round ratios netlayers / PyTorch
    gradient_difference: float = None
    memory: dict = field(default_factory=dict)  # side -> MiB
    netlayers_busy: float = None  # median seconds per step beside one busy process (--busy)
    torch_busy: float = None
    netlayers_kept: float = None  # share of speed kept beside it (see share_kept)
    torch_kept: float = None


def bench_net(name, args, torch):
    """Build both sides of net ``name``, check they compute the same, time them."""
    spec = NETS[name].spec()
    inputs = fixed_inputs(spec)
    net = build_netlayers(spec, inputs)
    flops = gemm_flops(spec, net)
    ours_loss = netlayers_step(net)  # the first step compiles what numba has not cached
    steps = [netlayers_stepper(net)]
    result = Result(name, flops, ours_loss, None)
    if torch is not None:
        torch_step, module = build_torch(spec, inputs, netlayers_params_as_torch(net))
        result.torch_loss = torch_step()
        tolerance = NETS[name].gradient_tolerance
        result.gradient_difference = check_same_computation(name, net, module, ours_loss, result.torch_loss, tolerance)
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
        if torch is not None:
            result.torch_busy, result.torch_kept = statistics.median(busy[1]), share_kept(times[1], busy[1])
    else:
        times = alternate_rounds(steps, args.rounds, iters, args.pause)
    result.netlayers = statistics.median(times[0])
    if torch is not None:
        result.torch = statistics.median(times[1])
        result.ratio = statistics.median(a / b for a, b in zip(times[0], times[1]))
    if args.layers:
        print_layer_times(net)
    return result


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


def peak_rss_mib():
    """The peak RSS in MiB since the last :func:`reset_peak_rss` (VmHWM), else ``ru_maxrss``."""
    return _status_mib("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _status_mib(key):
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return None
    return next((int(line.split()[1]) / 1024 for line in lines if line.startswith(key + ":")), None)


def memory_growth(name, side, threads, param_shapes=None):
    """In this process: MiB the peak RSS grows while building net ``name`` on ``side``
    ("netlayers" or "torch") and running 3 steps. ``param_shapes`` (layer -> list of shapes)
    gives the torch side its params (random values: no netlayers net of that size is built
    there). First the side runs :func:`warm_up_spec` for 2 steps, so that loading numba's
    kernels (about 70 MiB, mostly LLVM) and starting PyTorch's runtime are not counted; on the
    netlayers side with the convolution paths' thresholds lowered (:func:`every_conv_path`),
    so that the tiny net also loads the Winograd and row-strip kernels the measured net may
    run, and with the workers' scratch buffers freed afterwards."""
    torch = import_torch() if side == "torch" else None
    set_threads(threads, torch)
    warm = warm_up_spec()
    if side == "torch":
        warm_step, _ = build_torch(warm, fixed_inputs(warm), netlayers_params_as_torch(netlayers.Net(warm, seed=SEED)))
        for _ in range(2):
            warm_step()
    else:
        with every_conv_path():
            warm_step = netlayers_stepper(build_netlayers(warm, fixed_inputs(warm)))
            for _ in range(2):
                warm_step()
    del warm_step
    netlayers.parallel.release_scratch()
    spec = NETS[name].spec()
    inputs = fixed_inputs(spec)
    before = reset_peak_rss() or peak_rss_mib()
    if side == "torch":
        params = {layer: [torch.randn(shape) * 0.01 for shape in shapes] for layer, shapes in param_shapes.items()}
        step, _ = build_torch(spec, inputs, params)
    else:
        step = netlayers_stepper(build_netlayers(spec, inputs))
    for _ in range(3):
        step()
    return peak_rss_mib() - before


@contextlib.contextmanager
def every_conv_path():
    """For the block, :func:`warm_up_spec`'s 3x3 layers run as Winograd (``conv1``, 3 channels:
    F(2x2, 3x3); ``conv3``, 8 channels: F(4x4, 3x3); ``dilated`` over its phases), its 1x1
    layer as row strips, its 1 x 5 layer as 1-D Winograd and its 5 x 5 layer as F(4x4, 5x5)."""
    from netlayers.kernels import strips, winograd, winograd1d, winograd2d
    from netlayers.warmup import WINOGRAD_EVERYWHERE, constants

    with (
        constants(winograd, MIN_CHANNELS_F4=8, **WINOGRAD_EVERYWHERE),
        constants(strips, MIN_KERNEL=1, MIN_CHANNELS=1),
        constants(winograd1d, MIN_CHANNELS=1, MIN_TILES=1),
        constants(winograd2d, **WINOGRAD_EVERYWHERE),
    ):
        yield


def netlayers_stepper(net):
    return lambda: netlayers_step(net)


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


def measure_memory(name, side, threads):
    """:func:`memory_growth` of ``side`` in a fresh Python subprocess."""
    spec = NETS[name].spec()
    net = netlayers.Net(spec, dtype=np.float32, seed=SEED)
    shapes = {layer: [list(blob.data.shape) for blob in blobs] for layer, blobs in net.params.items()}
    code = (
        f"import sys; sys.path.insert(0, {str(TOOLS)!r}); import bench_nets; "
        f"print(bench_nets.memory_growth({name!r}, {side!r}, {threads}, {shapes!r}))"
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
    return "-" if seconds is None else f"{seconds / floor:.1f}x"


def percent(share):
    return "-" if share is None else f"{share:.0%}"


def markdown_table(results, rate, memory, busy=False):
    """The README table: one row per net (with ``memory``, each side's peak working memory
    and their ratio; with ``busy``, the share of speed each side keeps beside a busy process)."""
    header = ["net", "netlayers ms", "PyTorch ms", "netlayers / PyTorch", "GEMM floor ms", "netlayers / floor"]
    header += ["PyTorch / floor"]
    if memory:
        header += ["netlayers MiB", "PyTorch MiB", "MiB ratio"]
    if busy:
        header += ["netlayers speed kept, busy", "PyTorch speed kept, busy"]
    rows = [header, ["---"] * len(header)]
    for r in results:
        floor = r.flops / rate
        row = [NETS[r.name].title, ms(r.netlayers), ms(r.torch), "-" if r.ratio is None else f"{r.ratio:.2f}x"]
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
        help=f"comma-separated, of: {', '.join(NETS)}; 'all': every one (default: issue 10's table and LeNet)",
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
    args = parser.parse_args(argv)
    args.nets = list(NETS) if args.nets == "all" else [n.strip() for n in args.nets.split(",") if n.strip()]
    unknown = [n for n in args.nets if n not in NETS]
    if unknown:
        parser.error(f"unknown net(s): {', '.join(unknown)}; known: {', '.join(NETS)}")
    return args


def main(argv=None):
    args = parse_args(argv)
    torch = import_torch()
    set_threads(args.threads, torch)
    rate = sgemm_rate()
    versions = f"PyTorch {torch.__version__}" if torch else "PyTorch not installed: netlayers alone"
    print(
        f"forward+backward per step, float32, {args.threads} threads each, numpy sgemm "
        f"{rate / 1e9:.0f} GFLOP/s; {versions}; median of {args.rounds} rounds; {load_average()}"
    )
    results = []
    for name in args.nets:
        try:
            result = bench_net(name, args, torch)
        except ComputationMismatch as error:
            print(f"bench_nets: error: {error}", file=sys.stderr)
            return 1
        if args.memory:
            for side in ("netlayers", "torch") if torch else ("netlayers",):
                result.memory[side] = measure_memory(name, side, args.threads)
        results.append(result)
        rate = max(rate, sgemm_rate())  # a busy moment lowers one measurement: keep the best
        floor = result.flops / rate
        line = f"{name:<14} netlayers {ms(result.netlayers):>7} ms (loss {result.netlayers_loss:.6f})"
        if torch:
            line += (
                f"  PyTorch {ms(result.torch):>7} ms (loss {result.torch_loss:.6f}; gradients within "
                f"{result.gradient_difference:.0e})  ratio {result.ratio:.2f}x"
            )
        line += f"  floor {ms(floor)} ms ({result.flops / 1e9:.2f} GFLOP)"
        if result.memory:
            line += "  MiB " + ", ".join(f"{side} {mib:.0f}" for side, mib in result.memory.items())
        if args.busy:
            line += "\n" + busy_line(result)
        print(line, flush=True)
    print(f"\nGEMM floor at numpy's best sgemm rate of the run: {rate / 1e9:.0f} GFLOP/s; {load_average()}\n")
    print(markdown_table(results, rate, args.memory, args.busy))
    if torch is None:
        print("\nPyTorch is not installed: netlayers ran alone.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
