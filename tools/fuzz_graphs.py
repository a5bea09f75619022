"""Random layer graphs: the shared-memory plan and in-place layers checked against plain builds.

    python tools/fuzz_graphs.py [--graphs 300] [--seed 0] [--keep DIR]

``tools/fuzz_nets.py`` draws convolution nets and checks their fast paths; this tool draws the
graph around them. A graph is an Input (batch 1-4, 2-6 channels, 3-9 px) and 3 to 14 random
steps, each one layer on blobs made before (the newest most often, sometimes an older one: a
blob read twice fans out and gets a Split): a neuron (ReLU, leaky ReLU, Sigmoid, TanH, ELU,
AbsVal, BNLL, Swish, Clip, Power, Exp, PReLU, Dropout; half of them in place), Convolution (1x1
or 3x3, group 1 or 2), Deconvolution 2/2, Pooling, Scale, Bias (in place or not), BatchNorm (in
place or not, with Scale and ReLU in place after it: the fused chain), LRN, MVN, Softmax, an
Eltwise SUM, PROD or MAX, Concat along channels or rows, Slice, Crop, Reshape, Tile, Flatten,
InnerProduct, SPP, Im2col, Reduction, an LSTM or RNN (the batch as the time steps of one
stream), a Python layer (``Cube``, ``Halve`` below), or an EuclideanLoss of weight 0.3 between
two blobs of one shape. A Convolution or InnerProduct of
the same param shapes as an earlier one shares its params by name half the time. Every blob no
layer reads gets an InnerProduct 5; their sum goes into a SoftmaxWithLoss. The Input's
gradient is computed too (``force_backward``).

Each graph runs three steps (forward, backward) in float32 and in float64, the second on a
batch of two more images (the net reshapes between them), and is checked six ways against
the plain net:

- as a solver builds a TRAIN net (``share_memory=True``: blobs share one arena by when they
  are alive, ``Net._share_memory``), against the same net without sharing: the losses, every
  param gradient and the input's gradient the same bits;
- with every in-place layer given a top of its own (no in-place kernels, no fused chains),
  against the net as drawn, in float64: within ``FLOAT64_TOLERANCE`` (the fused chains and the
  in-place kernels add in another order);
- written as Caffe's prototxt (``netlayers.caffe.text_format``) and read back
  (``netlayers.caffe.prototxt``), in float32: the same bits;
- its params moved off their fillers' values, saved (``Net.save``'s ``.npz``, Caffe's
  ``.caffemodel``) and loaded into a new net, in float32: the next step the same bits;
- trained by a solver (one of six types, a learning-rate policy, weight decay, clipping and
  ``iter_size`` drawn from the graph's name), float32: 4 iterations straight, and 2, a
  snapshot, a new solver restoring it and 2 more, end with the same weights bit for bit;
- its TEST net forward only with shared memory (``forward_only=True, share_memory=True``: every
  inner blob may share, as ``netlayers test`` and ``Predictor`` build it), against the plain
  TEST net: the same outputs, the loss among them, bit for bit (Dropout passes its bottom on;
  BatchNorm uses stored statistics, set to mean 0 and variance 1).

Dropout draws the same masks in every build (one seed, drawn in layer order). A graph that
differs is printed and written (``--keep``) as a YAML net that ``netlayers.Net`` loads; the
exit status is then 1.
"""

import argparse
import copy
import random
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import netlayers  # noqa: E402
from netlayers.caffe import prototxt, text_format, wire  # noqa: E402
from netlayers.solvers import Solver  # noqa: E402
from netlayers.solvers.reporting import Reporter  # noqa: E402

FLOAT64_TOLERANCE = 1e-7  # of a gradient's norm (plus NOISE_FLOOR of the largest gradient's)
NOISE_FLOOR = 1e-10  # gradients that are 0 in exact arithmetic (a bias before a BatchNorm)
CLASSES = 5

NEURONS = [
    ("ReLU", {}),
    ("ReLU", {"relu_param": {"negative_slope": 0.1}}),
    ("Sigmoid", {}),
    ("TanH", {}),
    ("ELU", {}),
    ("AbsVal", {}),
    ("BNLL", {}),
    ("Swish", {}),
    ("Clip", {"clip_param": {"min": -0.5, "max": 0.7}}),
    ("Power", {"power_param": {"power": 2, "scale": 0.5, "shift": 0.1}}),
    ("Dropout", {"dropout_param": {"dropout_ratio": 0.3}}),
    ("PReLU", {}),
    ("Exp", {"exp_param": {"scale": 0.1}}),
]
STEPS = ["neuron"] * 5 + [
    "convolution",
    "deconvolution",
    "pooling",
    "scale",
    "bias",
    "batch_norm",
    "lrn",
    "mvn",
    "softmax",
    "eltwise",
    "concat",
    "concat_rows",
    "slice",
    "crop",
    "reshape",
    "tile",
    "flatten",
    "inner_product",
    "fan_out",
    "euclidean_loss",
    "spp",
    "im2col",
    "reduction",
    "python",
    "recurrent",
]


class Cube(netlayers.Layer):
    """A Python layer (``type: Python``, module ``fuzz_graphs``): y = x^3 / 4, whose backward
    reads its bottom (dx = 3 x^2 dy / 4). It keeps the base class's safe answers (never in
    place): drawn in place, the net gives it a blob of its own."""

    def Reshape(self, bottom, top):
        top[0].reshape_like(bottom[0])

    def Forward_cpu(self, bottom, top):
        np.multiply(bottom[0].data ** 3, 0.25, out=top[0].data)

    def Backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            np.multiply(top[0].diff, 0.75 * bottom[0].data ** 2, out=bottom[0].diff)


class Halve(netlayers.Layer):
    """A Python layer that says what it may do: y = x / 2, in place, reading neither its top's
    nor its bottom's values in its backward (dx = dy / 2)."""

    in_place = True
    keep_top_data = False
    keep_bottom_data = False

    def Reshape(self, bottom, top):
        top[0].reshape_like(bottom[0])

    def Forward_cpu(self, bottom, top):
        np.multiply(bottom[0].data, 0.5, out=top[0].data)

    def Backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            np.multiply(top[0].diff, 0.5, out=bottom[0].diff)


# -- random graphs ---------------------------------------------------------------------------
class Graph:
    """The layers drawn so far, the shape of every blob made, and which blobs a layer reads."""

    def __init__(self, rng):
        self.rng = rng
        self.layers = []
        self.shapes = {}
        self.read = set()
        self.count = 0
        self.by_shapes = {}  # the last Convolution or InnerProduct of each param shape

    def name(self, kind):
        self.count += 1
        return f"{kind}{self.count}"

    def add(self, layer, tops):
        """Append ``layer``; ``tops``: (blob, shape) of each top. A blob written in place lives on."""
        self.layers.append(layer)
        bottoms = layer.get("bottom", [])
        bottoms = [bottoms] if isinstance(bottoms, str) else bottoms
        self.read.update(bottoms)
        for top, shape in tops:
            self.shapes[top] = shape
            if top in bottoms:
                self.read.discard(top)

    def pick(self, axes=None, newest=True):
        """A blob (of ``axes`` axes): the newest 60 % of the time with ``newest``, else any."""
        blobs = [b for b, shape in self.shapes.items() if axes is None or len(shape) == axes]
        if not blobs:
            return None
        return blobs[-1] if newest and self.rng.random() < 0.6 else self.rng.choice(blobs)

    def alike(self, blob, same):
        """Blobs whose shapes ``same(theirs, blob's)`` accepts (``blob`` among them when it does)."""
        return [b for b, shape in self.shapes.items() if same(shape, self.shapes[blob])]

    def step(self):
        """One random layer (or none, when the drawn kind does not fit the blobs there are)."""
        kind = self.rng.choice(STEPS)
        image = self.pick(4)
        if image is None and kind not in (
            "neuron",
            "inner_product",
            "scale",
            "bias",
            "eltwise",
            "fan_out",
            "python",
            "recurrent",
        ):
            kind = "inner_product"
        getattr(self, kind)(self.name(kind), image)

    def neuron(self, name, _, newest=True, in_place=None):
        bottom = self.pick(newest=newest)
        kind, param = self.rng.choice(NEURONS if in_place is None else NEURONS[:5])
        if in_place is None:
            in_place = self.rng.random() < 0.5
        top = bottom if in_place else name
        self.add(
            {"name": name, "type": kind, "bottom": bottom, "top": top, **copy.deepcopy(param)},
            [(top, self.shapes[bottom])],
        )

    def fan_out(self, name, _):
        """An older blob read again, out of place."""
        self.neuron(name, _, newest=False, in_place=False)

    def convolution(self, name, bottom):
        n, c, h, w = self.shapes[bottom]
        kernel, outputs = self.rng.choice([1, 3]), self.rng.randint(2, 6)
        param = {"num_output": outputs, "kernel_size": kernel, "pad": kernel // 2}
        param |= {"weight_filler": {"type": "xavier"}, "bias_filler": {"type": "constant", "value": 0.1}}
        if c % 2 == 0 and outputs % 2 == 0 and self.rng.random() < 0.3:
            param["group"] = 2
        layer = {"name": name, "type": "Convolution", "bottom": bottom, "top": name, "convolution_param": param}
        self.share_params(layer, ("Convolution", c, outputs, kernel, param.get("group", 1)))
        self.add(layer, [(name, (n, outputs, h, w))])

    def share_params(self, layer, key):
        """Half the time, ``layer`` shares its weights and bias with the last layer of the same
        ``key`` (kind and param shapes), by param names (Caffe's ``param { name }``): their
        gradients add up in one blob."""
        earlier = self.by_shapes.get(key)
        self.by_shapes[key] = layer
        if earlier is not None and self.rng.random() < 0.5:
            names = [{"name": f"{earlier['name']}_w"}, {"name": f"{earlier['name']}_b"}]
            earlier["param"] = layer["param"] = names

    def deconvolution(self, name, bottom):
        n, c, h, w = self.shapes[bottom]
        outputs = self.rng.randint(2, 5)
        param = {"num_output": outputs, "kernel_size": 2, "stride": 2, "weight_filler": {"type": "xavier"}}
        layer = {"name": name, "type": "Deconvolution", "bottom": bottom, "top": name, "convolution_param": param}
        self.add(layer, [(name, (n, outputs, 2 * h, 2 * w))])

    def pooling(self, name, bottom):
        n, c, h, w = self.shapes[bottom]
        method = self.rng.choice(["MAX", "AVE"])
        if self.rng.random() < 0.5 and min(h, w) >= 2:
            param, size = {"pool": method, "kernel_size": 2, "stride": 2}, (-(-(h - 2) // 2) + 1, -(-(w - 2) // 2) + 1)
        else:
            param, size = {"pool": method, "kernel_size": 3, "stride": 1, "pad": 1}, (h, w)
        self.add(
            {"name": name, "type": "Pooling", "bottom": bottom, "top": name, "pooling_param": param},
            [(name, (n, c, *size))],
        )

    def scale(self, name, _):
        bottom = self.pick()
        top = bottom if self.rng.random() < 0.5 else name
        param = {"bias_term": self.rng.random() < 0.5, "filler": {"type": "uniform", "min": 0.5, "max": 1.5}}
        self.add(
            {"name": name, "type": "Scale", "bottom": bottom, "top": top, "scale_param": param},
            [(top, self.shapes[bottom])],
        )

    def bias(self, name, _):
        bottom = self.pick()
        top = bottom if self.rng.random() < 0.5 else name
        param = {"filler": {"type": "uniform", "min": -0.2, "max": 0.2}}
        self.add(
            {"name": name, "type": "Bias", "bottom": bottom, "top": top, "bias_param": param},
            [(top, self.shapes[bottom])],
        )

    def batch_norm(self, name, bottom):
        """BatchNorm (in place or not), then often Scale and ReLU in place: the fused chain."""
        shape = self.shapes[bottom]
        if shape[0] * shape[2] * shape[3] < 2:
            return
        top = bottom if self.rng.random() < 0.5 else name
        self.add({"name": name, "type": "BatchNorm", "bottom": bottom, "top": top}, [(top, shape)])
        if self.rng.random() < 0.6:
            scale = {"name": self.name("scale"), "type": "Scale", "bottom": top, "top": top}
            self.add({**scale, "scale_param": {"bias_term": True}}, [(top, shape)])
        if self.rng.random() < 0.5:
            self.add({"name": self.name("relu"), "type": "ReLU", "bottom": top, "top": top}, [(top, shape)])

    def lrn(self, name, bottom):
        param = {"local_size": 3, "norm_region": self.rng.choice(["ACROSS_CHANNELS", "WITHIN_CHANNEL"])}
        self.add(
            {"name": name, "type": "LRN", "bottom": bottom, "top": name, "lrn_param": param},
            [(name, self.shapes[bottom])],
        )

    def mvn(self, name, bottom):
        shape = self.shapes[bottom]
        if shape[2] * shape[3] < 2:
            return
        param = {"across_channels": self.rng.random() < 0.5}
        self.add({"name": name, "type": "MVN", "bottom": bottom, "top": name, "mvn_param": param}, [(name, shape)])

    def softmax(self, name, bottom):
        self.add({"name": name, "type": "Softmax", "bottom": bottom, "top": name}, [(name, self.shapes[bottom])])

    def eltwise(self, name, _):
        first = self.pick()
        second = self.rng.choice(self.alike(first, lambda theirs, mine: theirs == mine))
        param = {"operation": self.rng.choice(["SUM", "PROD", "MAX"])}
        if param["operation"] == "SUM" and self.rng.random() < 0.4:
            param["coeff"] = [1.0, -0.5]
        layer = {"name": name, "type": "Eltwise", "bottom": [first, second], "top": name, "eltwise_param": param}
        self.add(layer, [(name, self.shapes[first])])

    def concat(self, name, bottom, axis=1):
        """Along channels (``axis`` 1) or rows (2), with a blob whose other axes match."""
        shape = self.shapes[bottom]

        def fits(theirs, mine):
            return len(theirs) == 4 and all(theirs[a] == mine[a] for a in range(4) if a != axis)

        other = self.rng.choice(self.alike(bottom, fits))
        top = list(shape)
        top[axis] += self.shapes[other][axis]
        layer = {"name": name, "type": "Concat", "bottom": [bottom, other], "top": name, "concat_param": {"axis": axis}}
        self.add(layer, [(name, tuple(top))])

    def concat_rows(self, name, bottom):
        self.concat(name, bottom, axis=2)

    def slice(self, name, bottom):
        n, c, h, w = self.shapes[bottom]
        if c < 2:
            return
        cut = self.rng.randint(1, c - 1)
        tops = [f"{name}a", f"{name}b"]
        layer = {"name": name, "type": "Slice", "bottom": bottom, "top": tops, "slice_param": {"slice_point": [cut]}}
        self.add(layer, [(tops[0], (n, cut, h, w)), (tops[1], (n, c - cut, h, w))])

    def crop(self, name, bottom):
        shape = self.shapes[bottom]

        def smaller(theirs, mine):
            return len(theirs) == 4 and theirs[0] == mine[0] and theirs[2] < mine[2] and theirs[3] <= mine[3]

        references = self.alike(bottom, smaller)
        if not references:
            return
        reference = self.rng.choice(references)
        rows, columns = self.shapes[reference][2:]
        layer = {"name": name, "type": "Crop", "bottom": [bottom, reference], "top": name}
        self.add({**layer, "crop_param": {"axis": 2, "offset": [0]}}, [(name, (*shape[:2], rows, columns))])

    def reshape(self, name, bottom):
        n, c, h, w = self.shapes[bottom]
        if c % 2:
            return
        param = {"shape": {"dim": [0, c // 2, -1, w]}}
        self.add(
            {"name": name, "type": "Reshape", "bottom": bottom, "top": name, "reshape_param": param},
            [(name, (n, c // 2, 2 * h, w))],
        )

    def tile(self, name, bottom):
        n, c, h, w = self.shapes[bottom]
        param = {"axis": 1, "tiles": 2}
        self.add(
            {"name": name, "type": "Tile", "bottom": bottom, "top": name, "tile_param": param},
            [(name, (n, 2 * c, h, w))],
        )

    def flatten(self, name, bottom):
        shape = self.shapes[bottom]
        self.add(
            {"name": name, "type": "Flatten", "bottom": bottom, "top": name},
            [(name, (shape[0], int(np.prod(shape[1:]))))],
        )

    def inner_product(self, name, _, bottom=None, outputs=None):
        bottom = bottom or self.pick()
        outputs = outputs or self.rng.randint(3, 12)
        param = {"num_output": outputs, "weight_filler": {"type": "xavier"}}
        param["bias_filler"] = {"type": "constant", "value": 0.05}
        layer = {"name": name, "type": "InnerProduct", "bottom": bottom, "top": name, "inner_product_param": param}
        self.share_params(layer, ("InnerProduct", int(np.prod(self.shapes[bottom][1:])), outputs))
        self.add(layer, [(name, (self.shapes[bottom][0], outputs))])

    def spp(self, name, bottom):
        """Spatial pyramid pooling of 2 levels: (N, C 5)."""
        n, c, h, w = self.shapes[bottom]
        if min(h, w) < 2:  # a 2 x 2 level of one pixel: refused, as Caffe refuses it
            return
        param = {"pyramid_height": 2, "pool": self.rng.choice(["MAX", "AVE"])}
        self.add({"name": name, "type": "SPP", "bottom": bottom, "top": name, "spp_param": param}, [(name, (n, 5 * c))])

    def im2col(self, name, bottom):
        n, c, h, w = self.shapes[bottom]
        if min(h, w) < 2:
            return
        layer = {"name": name, "type": "Im2col", "bottom": bottom, "top": name}
        self.add({**layer, "convolution_param": {"kernel_size": 2}}, [(name, (n, 4 * c, h - 1, w - 1))])

    def reduction(self, name, bottom):
        """Each image's rows reduced: (N, C, H, W) -> (N, C)."""
        n, c = self.shapes[bottom][:2]
        param = {"operation": self.rng.choice(["SUM", "ASUM", "SUMSQ", "MEAN"]), "axis": 2, "coeff": 0.5}
        self.add(
            {"name": name, "type": "Reduction", "bottom": bottom, "top": name, "reduction_param": param},
            [(name, (n, c))],
        )

    def python(self, name, _):
        """``Cube`` or ``Halve`` (above), in place half the time."""
        bottom = self.pick()
        top = bottom if self.rng.random() < 0.5 else name
        param = {"module": "fuzz_graphs", "layer": self.rng.choice(["Cube", "Halve"])}
        self.add(
            {"name": name, "type": "Python", "bottom": bottom, "top": top, "python_param": param},
            [(top, self.shapes[bottom])],
        )

    def recurrent(self, name, _):
        """An LSTM or RNN over the batch as time steps of one stream (``cont``, an Input top: 0
        at the first step, then 1): a blob (N, ...) seen as (N, 1, F), the output (N, 1, H)
        seen as (N, H)."""
        bottom = self.pick()
        steps = self.shapes[bottom][0]
        outputs = self.rng.randint(2, 6)
        sequence, top = f"{name}_in", f"{name}_out"
        self.add(
            {
                "name": sequence,
                "type": "Reshape",
                "bottom": bottom,
                "top": sequence,
                "reshape_param": {"shape": {"dim": [0, 1, -1]}},
            },
            [],
        )
        param = {
            "num_output": outputs,
            "weight_filler": {"type": "xavier"},
            "bias_filler": {"type": "constant", "value": 0.1},
        }
        kind = self.rng.choice(["LSTM", "RNN"])
        self.add({"name": name, "type": kind, "bottom": [sequence, "cont"], "top": name, "recurrent_param": param}, [])
        self.add(
            {"name": top, "type": "Reshape", "bottom": name, "top": top, "reshape_param": {"shape": {"dim": [0, -1]}}},
            [(top, (steps, outputs))],
        )

    def euclidean_loss(self, name, _):
        first = self.pick()
        others = [b for b in self.alike(first, lambda theirs, mine: theirs == mine) if b != first]
        if others:
            layer = {"name": name, "type": "EuclideanLoss", "bottom": [first, self.rng.choice(others)], "top": name}
            self.add({**layer, "loss_weight": 0.3}, [])

    def finish(self):
        """An InnerProduct of CLASSES outputs on every blob no layer reads, summed, into the loss."""
        leaves = [blob for blob in self.shapes if blob not in self.read] or [self.pick()]  # (a loss read them all)
        heads = []
        for leaf in leaves:
            heads.append(self.name("head"))
            self.inner_product(heads[-1], None, leaf, CLASSES)
        top = heads[0]
        if len(heads) > 1:
            top = "heads"
            self.add({"name": top, "type": "Eltwise", "bottom": heads, "top": top}, [])
        self.layers.append({"name": "loss", "type": "SoftmaxWithLoss", "bottom": [top, "label"], "top": "loss"})


def random_graph(seed, index):
    """Graph ``index`` of ``seed`` as a net spec (the same numbers give the same graph)."""
    rng = random.Random(seed * 100_003 + index)
    graph = Graph(rng)
    batch, channels, side = rng.randint(1, 4), rng.randint(2, 6), rng.randint(3, 9)
    shapes = [{"dim": [batch, channels, side, side]}, {"dim": [batch]}, {"dim": [batch, 1]}]
    tops = ["data", "label", "cont"]  # cont: the recurrent layers' sequence marks
    graph.layers.append({"name": "data", "type": "Input", "top": tops, "input_param": {"shape": shapes}})
    graph.shapes["data"] = (batch, channels, side, side)
    for _ in range(rng.randint(3, 14)):
        graph.step()
    graph.finish()
    return {"name": f"graph_{seed}_{index}", "force_backward": True, "layers": graph.layers}


def out_of_place(spec):
    """``spec`` with every in-place layer given a top of its own (the layers after it read that)."""
    spec = copy.deepcopy(spec)
    renamed = {}
    for layer in spec["layers"]:
        drawn = layer.get("bottom", [])
        drawn = [drawn] if isinstance(drawn, str) else drawn
        if drawn:
            bottoms = [renamed.get(b, b) for b in drawn]
            layer["bottom"] = bottoms[0] if isinstance(layer["bottom"], str) else bottoms
        if isinstance(layer.get("top"), str) and layer["top"] in drawn:
            renamed[layer["top"]] = f"{layer['top']}_{layer['name']}"
            layer["top"] = renamed[layer["top"]]
    return spec


def through_prototxt(spec):
    """``spec`` written as Caffe's prototxt text and read back (``netlayers.caffe``)."""
    return prototxt.to_netlayers(prototxt.parse_prototxt(text_format.net_to_text(spec)))


# -- checks ----------------------------------------------------------------------------------
def inputs(spec, dtype, seed):
    """Three batches for the graph's Input, of its batch size, two images more, and its size
    again (the net reshapes, and plans its shared memory again, between them): normal values
    and labels below CLASSES."""
    rng = np.random.default_rng(seed)
    batch, *image = spec["layers"][0]["input_param"]["shape"][0]["dim"]
    batches = []
    for n in (batch, batch + 2, batch):
        data, label = rng.standard_normal((n, *image)), rng.integers(0, CLASSES, n)
        cont = np.ones((n, 1)) * (np.arange(n) > 0)[:, None]
        batches.append({"data": data.astype(dtype), "label": label.astype(dtype), "cont": cont.astype(dtype)})
    return batches


def steps(spec, dtype, batches, share_memory):
    """(loss, gradients: every param's and the input's) of each batch, one step each."""
    net = netlayers.Net(spec, seed=3, dtype=dtype, share_memory=share_memory)
    results = []
    for batch in batches:
        loss, gradients = one_step(net, batch)
        results.append((loss, [*gradients, net.source_blobs["data"].diff.copy()]))
    return results


def one_step(net, batch):
    """Forward and backward of ``batch`` from cleared param gradients: (loss, the param gradients)."""
    net.clear_param_diffs()
    net.forward(**batch)
    loss = net.loss
    net.backward()
    return loss, [blob.diff.copy() for blobs in net.params.values() for blob in blobs]


def same_bits(ours, theirs):
    """The same losses and gradients, bit for bit (NaN where NaN: an Exp of large values overflows)."""
    return all(
        np.array_equal(a, b, equal_nan=True) and all(np.array_equal(x, y, equal_nan=True) for x, y in zip(ga, gb))
        for (a, ga), (b, gb) in zip(ours, theirs)
    )


def close(ours, theirs, tolerance=FLOAT64_TOLERANCE):
    """Losses and gradients within ``tolerance`` of the norm (NOISE_FLOOR of the largest one);
    their non-finite values at the same places and equal."""
    for (loss, gradients), (other_loss, others) in zip(ours, theirs):
        pairs = [(np.asarray(loss), np.asarray(other_loss)), *zip(gradients, others)]
        finite = [np.isfinite(g) for g, _ in pairs]
        if not all(np.array_equal(g[~f], h[~f], equal_nan=True) for (g, h), f in zip(pairs, finite)):
            return False
        (a, b), *grads = [(np.where(f, g, 0), np.where(f, h, 0)) for (g, h), f in zip(pairs, finite)]
        if abs(a - b) > tolerance * max(1.0, abs(a)):
            return False
        largest = max(np.linalg.norm(g) for g, _ in grads)
        for g, h in grads:
            if np.linalg.norm(g - h) > tolerance * np.linalg.norm(g) + NOISE_FLOOR * largest:
                return False
    return True


@np.errstate(over="ignore", invalid="ignore", divide="ignore")  # an Exp or a Power of large values
def check(spec):
    """The failed checks of one graph (none: an empty list)."""
    failed = []
    for dtype in (np.float32, np.float64):
        batches = inputs(spec, dtype, 0)
        plain = steps(spec, dtype, batches, False)
        if not same_bits(plain, steps(spec, dtype, batches, True)):
            failed.append(f"{np.dtype(dtype).name}: shared memory changed the results")
        if dtype == np.float64 and not close(plain, steps(out_of_place(spec), dtype, batches, False)):
            failed.append("float64: the net without in-place layers gives other results")
        if dtype == np.float32:  # what holds whatever the dtype: checked once
            failed += float32_checks(spec, plain, batches)
        if not same_outputs(*(forwards(spec, dtype, batches, shared) for shared in (False, True))):
            failed.append(f"{np.dtype(dtype).name}: the forward-only TEST net's outputs changed with shared memory")
    return failed


def float32_checks(spec, plain, batches):
    """The failed checks of the prototxt round trip, the weights' files and a resumed training."""
    failed = []
    if not same_bits(plain, steps(through_prototxt(spec), np.float32, batches, False)):
        failed.append("float32: the net written as Caffe prototxt and read back gives other results")
    for suffix in (".npz", ".caffemodel"):
        if not same_bits(*reloaded(spec, np.float32, batches[0], suffix)):
            failed.append(f"float32: weights saved as {suffix} and loaded give another step")
    if not same_ends(*trained(spec, batches[0])):
        failed.append("float32: training resumed from a snapshot ends with other weights")
    return failed


def reloaded(spec, dtype, batch, suffix):
    """One step of the net with its params moved off their fillers' values, and one of a new
    net that loaded them from a file (``Net.save``'s ``.npz``, or Caffe's ``.caffemodel`` by
    ``netlayers.caffe.wire``; ``Net.load`` reads either): a param not saved or not loaded keeps
    its filler's values there. (The same seed: Dropout draws the same masks.)"""
    source, target = (netlayers.Net(spec, seed=3, dtype=dtype) for _ in range(2))
    for k, blob in enumerate(blob for blobs in source.params.values() for blob in blobs):
        blob.data[...] += dtype(0.01) * np.sin(np.arange(blob.count) + k).reshape(blob.shape).astype(dtype)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"weights{suffix}"
        if suffix == ".npz":
            source.save(path)
        else:
            wire.write_caffemodel(source, path)
        target.load(path)
    return [[one_step(net, batch)] for net in (source, target)]


SOLVERS = ["SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"]


def solver_section(name):
    """Solver settings drawn from the graph's ``name``: a type, a learning-rate policy, L1 or
    L2 weight decay or none, sometimes gradient clipping or two batches an iteration."""
    rng = random.Random(name)
    kind = rng.choice(SOLVERS)
    solver = {"type": kind, "base_lr": 1.0 if kind == "AdaDelta" else 0.01, "max_iter": 4, "display": 0}
    solver |= {"lr_policy": rng.choice(["fixed", "step", "inv", "poly", "exp"]), "gamma": 0.9, "power": 0.75}
    solver |= {"stepsize": 2, "weight_decay": rng.choice([0, 1e-3]), "regularization_type": rng.choice(["L2", "L1"])}
    solver |= {"iter_size": rng.choice([1, 1, 2]), "random_seed": 5, "snapshot": 0, "snapshot_prefix": "graph"}
    solver |= (
        {"momentum": 0.95 if kind == "AdaDelta" else 0.9} if kind in ("SGD", "Nesterov", "Adam", "AdaDelta") else {}
    )
    if rng.random() < 0.3:
        solver["clip_gradients"] = 0.5
    return solver


def trained(spec, batch):
    """A solver's weights after 4 iterations on ``batch``: straight, and 2 iterations, a
    snapshot, and a new solver that restored it for 2 more (its history, iteration and
    generator too: Dropout's masks go on as they would have)."""
    config = {**spec, "solver": solver_section(spec["name"])}
    ends = []
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # overflow where a worker thread runs (errstate is per thread)
        for cut in (None, 2):
            try:
                solver = new_solver(config, folder, batch)
                if cut is not None:
                    solver.step(cut)
                    state = solver.snapshot()
                    solver = new_solver(config, folder, batch)
                    solver.restore(state)
                solver.step(4 - solver.iter)
            except netlayers.TrainingError as error:  # a loss gone non-finite: both runs must say so alike
                ends.append(str(error).split(";")[0])
                continue
            ends.append([blob.data.copy() for blobs in solver.net.params.values() for blob in blobs])
    return ends


def same_ends(straight, resumed):
    """The same weights bit for bit, or the same training error (at the same iteration)."""
    if isinstance(straight, str) or isinstance(resumed, str):
        return straight == resumed
    return all(np.array_equal(a, b, equal_nan=True) for a, b in zip(straight, resumed))


def new_solver(config, folder, batch):
    """A quiet solver of ``config`` writing in ``folder``, its Input set to ``batch``."""
    solver = Solver(config, output_dir=folder, reporter=Reporter(quiet=True, metrics=False), overwrite=True)
    for name, value in batch.items():
        solver.net.source_blobs[name].data[...] = value
    return solver


def forwards(spec, dtype, batches, shared):
    """The TEST net's outputs (its loss among them) for each batch: built plain, or with
    ``shared`` forward only with shared memory (as ``netlayers test`` and ``Predictor`` build it)."""
    net = netlayers.Net(spec, "TEST", seed=3, dtype=dtype, forward_only=shared, share_memory=shared)
    for layer in net.layers:
        if layer.type == "BatchNorm":  # stored statistics: mean 0, variance 1 (none would scale by 1 / sqrt(eps))
            mean, variance, count = layer.blobs
            mean.data[...], variance.data[...], count.data[...] = 0, 1, 1
    return [{name: value.copy() for name, value in net.forward(**batch).items()} for batch in batches]


def same_outputs(ours, theirs):
    """The same blobs and bits (NaN where NaN: an Exp or a Power of large values overflows)."""
    return all(
        a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)
        for a, b in zip(ours, theirs)
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graphs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, help="write each failing graph here as YAML")
    args = parser.parse_args(argv)
    if args.graphs < 1:
        parser.error(f"--graphs takes 1 or more, got {args.graphs}")
    if args.keep is not None and args.keep.exists() and not args.keep.is_dir():
        parser.error(f"--keep {args.keep}: a file is there; give a folder (made if missing)")
    differ = 0
    kinds = set()
    for index in range(args.graphs):
        spec = random_graph(args.seed, index)
        kinds.update(layer["type"] for layer in spec["layers"])
        try:
            failed = check(spec)
        except Exception as error:  # a build or a restore that refuses what netlayers made: kept as a failure
            failed = [f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"]
        if failed:
            differ += 1
            print(f"fuzz_graphs: {spec['name']} ({len(spec['layers'])} layers): {'; '.join(failed)}", flush=True)
            if args.keep is not None:
                args.keep.mkdir(parents=True, exist_ok=True)
                (args.keep / f"{spec['name']}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    print(f"{args.graphs} random graphs of {len(kinds)} layer kinds, seed {args.seed}: {differ} differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
