"""Random nets, each checked against a reference: the convolution paths where no benchmark goes.

    python tools/fuzz_nets.py [--nets 200] [--seed 0] [--threads 2]
                              [--modes default,every_path,small_budgets,taps,kn2row]
                              [--reference torch,float64] [--tolerance 0.1] [--keep DIR]

A net is a 3x3 stem and one to four random blocks: a convolution of random geometry (kernel
1-7, stride 1-3, padding 0-3, dilation 1-3, groups up to depthwise, or a Deconvolution), ResNet
basic and bottleneck blocks (grouped as ResNeXt's or not), SqueezeNet's fire, GoogLeNet's
inception, depthwise-separable pairs with BatchNorm + Scale, DenseNet's concatenation, LRN,
Sigmoid / TanH / ELU / PReLU, dilated, 1 x 5 and factorized (1 x 7, 7 x 1) convolutions,
pooling with padding, a 4/2 Deconvolution; random batch (1-16), channels and sizes (5-40 px);
global average pooling, InnerProduct 10, SoftmaxWithLoss. Each net runs one forward + backward
in float32 under each ``--modes``:

- ``default``: the paths netlayers picks;
- ``every_path``: the thresholds of the fast paths at their minimum (Winograd F(2x2), F(4x4),
  1-D and 5 x 5, row strips, sub-pixel Deconvolution), so small layers take them;
- ``small_budgets``: ``every_path`` with the byte budgets of column chunks, Winograd bands and
  strip and 1-D / 5 x 5 Winograd chunks at a few KiB, so images are cut into bands (the row
  strips' too) and batches into chunks of an image;
- ``taps``: every stride-1, one-group convolution no Winograd form takes runs tap by tap;
- ``kn2row``: every stride-1, one-group convolution of two taps or more runs as kn2row's
  products over its input, in bands of a few rows.

Its loss and every param gradient are compared with each ``--reference``'s, as ``bench_nets``
compares them: a gradient differs when the norm of the difference exceeds a tolerance times
its norm (or ``bench_nets.NOISE_FLOOR`` times the largest gradient's). The references:

- ``torch`` (where PyTorch is installed): PyTorch's float32 run of the net, translated by
  ``bench_nets.torch_net``; checks that the layers mean what Caffe's do;
- ``float64``: the same net in float64 with every convolution as im2col + GEMM
  (``plain_paths``). First the float64 net under the mode against it, to ``EXACT_TOLERANCE``:
  the same computation in float64 agrees to rounding whichever path runs it, so this finds a
  wrong path however small its error. Then the float32 run.

The float32 runs are held to ``--tolerance`` (default ``FLOAT32_TOLERANCE``, 0.1): a ReLU or
max-pool choice that float32 rounding flips moves a gradient whose terms cancel by a few
percent (see there), where a wrong computation differs by order 1.

Biases start at zero (the nets' constant fillers, as Caffe's nets mostly have them). An output
whose receptive field is all zero (padding, a dead region) then sits on a ReLU's kink, and a
path must give it exactly as im2col does: Winograd's rounding used to move it off 0
(``netlayers.kernels.zero_fields`` now sets it back). The tool moved biases off zero before.

A failing net is printed with its mode and written (``--keep``) as a YAML net that
``netlayers.Net`` loads. Exit status 1 when any net differs.
"""

import argparse
import contextlib
import random
import sys
from pathlib import Path

import numpy as np
import yaml

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS.parent))
sys.path.insert(0, str(TOOLS))

import bench_nets as bn  # noqa: E402

import netlayers  # noqa: E402
from netlayers.kernels import (  # noqa: E402
    conv_gemm,
    deconv,
    dilated,
    grouped,
    kn2row,
    strips,
    taps,
    winograd,
    winograd1d,
    winograd2d,
)
from netlayers.warmup import constants  # noqa: E402


# -- random nets -----------------------------------------------------------------------------
class Shape:
    """What flows between blocks: the top's name, channels and (square) side."""

    def __init__(self, top, channels, side):
        self.top, self.channels, self.side = top, channels, side


def random_convolution(rng, layers, name, shape):
    """A Convolution or Deconvolution of random geometry (None when none fits in 50 tries)."""
    for _ in range(50):
        kind = rng.choice(["Convolution"] * 3 + ["Deconvolution"])
        kernel, stride = rng.choice([1, 1, 2, 3, 3, 3, 4, 5, 7]), rng.choice([1, 1, 1, 2, 2, 3])
        pad = rng.choice([0, 0, 1, 1, 2, 3])
        dilation = rng.choice([1, 1, 1, 2, 3]) if kind == "Convolution" else 1
        group = rng.choice([1, 1, 1, 2, 4, shape.channels])
        outputs = shape.channels if rng.random() < 0.3 else rng.choice([1, 3, 8, 16, 17, 32, 48, 64])
        if shape.channels % group or outputs % group:
            continue
        if kind == "Convolution":
            side = (shape.side + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1
        else:
            side = stride * (shape.side - 1) + kernel - 2 * pad
        if not 1 <= side or side * side * outputs > 200_000:
            continue
        layer = bn.conv(name, shape.top, outputs, kernel, pad=pad, stride=stride, group=group, type=kind)
        if dilation > 1:
            layer["convolution_param"]["dilation"] = dilation
        layers.append(layer)
        if rng.random() < 0.5:
            layers.append(bn.relu(f"{name}_relu", name))
        return Shape(name, outputs, side)
    return None


def random_block(rng, layers, name, shape):
    """One random block appended to ``layers``; the Shape after it."""
    c, h, top = shape.channels, shape.side, shape.top
    kind = rng.choice(
        ["conv", "conv", "basic", "bottleneck", "fire", "inception", "separable", "lrn", "activation", "dilated"]
        + ["row", "deconvolution", "pool", "dense", "factorized"]
    )
    if kind == "conv":
        return random_convolution(rng, layers, name, shape) or shape
    if kind == "basic":
        width, stride = rng.choice([8, 16, 24, 32, 64]), rng.choice([1, 2]) if h >= 4 else 1
        stride = 2 if width != c else stride  # the identity shortcut needs the same width
        return Shape(bn.basic_block(layers, name, top, width, stride), width, -(-h // stride))
    if kind == "bottleneck":  # ResNet's, or with groups ResNeXt's (its stride at the 3x3 or not)
        width, stride = rng.choice([4, 8, 16]), rng.choice([1, 2]) if h >= 4 else 1
        shape = {"group": rng.choice([1, 2, 4]), "stride_3x3": rng.random() < 0.5}
        top = bn.bottleneck_block(layers, name, top, width, stride, stride != 1 or 4 * width != c, **shape)
        return Shape(top, 4 * width, (h - 1) // stride + 1)
    if kind == "fire":
        expand = rng.choice([8, 16, 32])
        return Shape(bn.fire(layers, name, top, rng.choice([4, 8, 16]), expand), 2 * expand, h)
    if kind == "inception":
        widths = [rng.choice([4, 8, 16, 24]) for _ in range(6)]
        return Shape(bn.inception_module(layers, name, top, widths), widths[0] + widths[2] + widths[4] + widths[5], h)
    if kind == "separable":
        stride, width = rng.choice([1, 2]) if h >= 4 else 1, rng.choice([8, 16, 32, 48])
        dw, pw = f"{name}_dw", f"{name}_pw"
        layers += [bn.conv(dw, top, c, 3, pad=1, stride=stride, group=c, bias=False), *bn.batch_norm_scale(dw, dw)]
        layers += [bn.relu(f"{dw}_relu", dw), bn.conv(pw, dw, width, 1), bn.relu(f"{pw}_relu", pw)]
        return Shape(pw, width, (h - 1) // stride + 1)
    if kind == "lrn":
        layers.append(bn.lrn(name, top))
        return Shape(name, c, h)
    if kind == "activation":
        width = rng.choice([8, 16, 32])
        kind = rng.choice(["Sigmoid", "TanH", "ELU", "PReLU", "ReLU"])
        layers += [bn.conv(name, top, width, 3, pad=1), bn.activation(f"{name}_act", name, kind)]
        return Shape(name, width, h)
    if kind == "dilated":
        width = rng.choice([8, 16, 32])
        layers += [bn.dilated_conv(name, top, width, 3, rng.choice([2, 3, 4])), bn.relu(f"{name}_relu", name)]
        return Shape(name, width, h)
    if kind == "row":
        width = rng.choice([8, 16, 32])
        layers += [bn.row_conv(name, top, width), bn.relu(f"{name}_relu", name)]
        return Shape(name, width, h)
    if kind == "deconvolution" and h <= 12:
        width = rng.choice([4, 8, 16, 32])
        layers += [bn.conv(name, top, width, 4, pad=1, stride=2, type="Deconvolution"), bn.relu(f"{name}_relu", name)]
        return Shape(name, width, 2 * h)
    if kind == "pool":
        method, kernel, stride = rng.choice(["MAX", "AVE"]), rng.choice([2, 3]), rng.choice([1, 2])
        pad = rng.choice([0, 1]) if kernel == 3 else 0
        if h + 2 * pad < kernel:
            return shape
        layers.append(bn.pool(name, top, method, kernel, stride, pad))
        side = -(-(h + 2 * pad - kernel) // stride) + 1  # Caffe rounds up, then drops a window
        if pad and (side - 1) * stride >= h + pad:  # that starts inside the padding
            side -= 1
        return Shape(name, c, side)
    if kind == "dense":
        growth = rng.choice([8, 12, 16])
        normalized = f"{name}_bn"
        layers.append({"name": normalized, "type": "BatchNorm", "bottom": top, "top": normalized})
        scale = {"name": f"{name}_scale", "type": "Scale", "bottom": normalized, "top": normalized}
        layers += [{**scale, "scale_param": {"bias_term": True}}, bn.relu(f"{name}_relu", normalized)]
        layers.append(bn.conv(f"{name}_conv", normalized, growth, 3, pad=1, bias=False))
        joined = {"name": f"{name}_cat", "type": "Concat", "bottom": [top, f"{name}_conv"], "top": f"{name}_cat"}
        layers.append(joined)
        return Shape(joined["top"], c + growth, h)
    if kind == "factorized":
        width, kernel = rng.choice([8, 16, 32]), rng.choice([(1, 7), (7, 1), (1, 3), (3, 1), (1, 5)])
        layers += bn.factorized_conv(name, top, width, kernel)
        return Shape(name, width, h)
    return shape


def random_net(seed, index):
    """Net ``index`` of ``seed``'s sequence: the same spec for the same two numbers."""
    rng = random.Random(seed * 1_000_003 + index)
    batch, channels = rng.choice([1, 2, 3, 8, 16]), rng.choice([1, 3, 8, 16, 32])
    side = rng.choice([5, 7, 8, 12, 15, 16, 17, 20, 24, 28, 32, 40])
    layers = [bn.input_layer(batch, channels, side, side), bn.conv("stem", "data", 16, 3, pad=1)]
    layers.append(bn.relu("stem_relu", "stem"))
    shape = Shape("stem", 16, side)
    for k in range(rng.choice([1, 2, 3, 4])):
        shape = random_block(rng, layers, f"b{k}", shape)
    layers += [bn.pool("pool", shape.top, "AVE"), bn.inner_product("fc", "pool", 10), bn.loss("fc")]
    return bn.net_spec(f"fuzz_{seed}_{index}", layers)


# -- modes -----------------------------------------------------------------------------------
@contextlib.contextmanager
def every_path():
    """``bench_nets.every_conv_path`` and the sub-pixel Deconvolution at any size."""
    with bn.every_conv_path(), constants(deconv, SUBPIXEL_MIN_OUTPUT_PIXELS=1, SUBPIXEL_MIN_OUTPUTS=1):
        yield


@contextlib.contextmanager
def small_budgets():
    """``every_path`` with byte budgets of a few KiB: images in bands of rows (row strips'
    too), batches in chunks of an image, bands of many column rows a few channels at a time."""
    budgets = {
        "COLUMN_CHUNK_BYTES": 1 << 12,
        "WEIGHT_SIZED_COLUMNS_MAX_BYTES": 1 << 12,
        "DIRECT_WEIGHT_GRAD_BYTES": 1 << 10,
        "MIN_BAND_PIXELS": 1,  # bands of one row, however short
        "CHANNEL_PIECES_FROM": 2,
        "CHANNEL_PIECE_ROWS": 32,
    }
    with (
        every_path(),
        constants(conv_gemm, **budgets),
        constants(winograd, BAND_BYTES=1 << 13, RUN_TILES=8),
        constants(strips, CHUNK_BYTES=1 << 12, MAX_IMAGE_BYTES=1 << 13),
        constants(winograd1d, CHUNK_BYTES=1 << 12),
        constants(winograd2d, CHUNK_BYTES=1 << 12, BAND_BYTES=1 << 12),
    ):
        yield


@contextlib.contextmanager
def tap_form():
    """Every stride-1, one-group convolution that no Winograd form takes runs tap by tap
    (``netlayers.kernels.taps``; row strips left out), whatever its channels and padding, in
    chunks of an image or two: the tap form on far more layers than its rule gives it."""
    with (
        constants(strips, applies=_never),
        constants(taps, MIN_CHANNELS=1, MIN_PIXELS=1, MAX_INSIDE_SHARE=1.0, CHUNK_BYTES=1 << 12),
    ):
        yield


@contextlib.contextmanager
def kn2row_form():
    """Every stride-1, one-group convolution of two taps or more runs as kn2row's products over
    its input (``netlayers.kernels.kn2row``), whatever its channels and outputs, in bands of a
    few input rows: the form on far more layers than its rule gives it."""
    with constants(kn2row, MAX_OUTPUTS=1 << 30, MIN_ROWS=1, MANY_CHANNELS_RATIO=0, BAND_BYTES=1 << 12):
        yield


MODES = {
    "default": contextlib.nullcontext,
    "every_path": every_path,
    "small_budgets": small_budgets,
    "taps": tap_form,
    "kn2row": kn2row_form,
}


def _never(*args):
    return False


@contextlib.contextmanager
def plain_paths():
    """Every convolution as im2col + GEMM (a Deconvolution as GEMM + col2im; depthwise ones keep
    their direct kernels): the reference's paths."""
    with (
        constants(winograd, applies=_never),
        constants(dilated, applies=_never),
        constants(winograd1d, applies=_never),
        constants(winograd2d, applies=_never),
        constants(strips, applies=_never),
        constants(grouped, applies=_never),
        constants(taps, applies=_never),
        constants(kn2row, applies=_never),
        constants(deconv, applies=_never, convolution_applies=_never, subpixel_applies=_never),
    ):
        yield


# -- checking --------------------------------------------------------------------------------
class Unsupported(Exception):
    """The reference cannot run the net (PyTorch's BatchNorm refuses one value a channel)."""


def netlayers_run(spec, inputs, dtype, params=None):
    """A solver's TRAIN net of ``spec`` in ``dtype`` after one step (loss, net); ``params``
    (layer -> arrays) replace its initial ones."""
    net = netlayers.Net(spec, dtype=dtype, seed=bn.SEED, share_memory=True)
    if params is not None:
        for name, arrays in params.items():
            for blob, array in zip(net.params[name], arrays):
                blob.data[...] = array
    net.forward(**{key: value.astype(dtype) for key, value in inputs.items()})
    return bn.netlayers_step(net), net


def param_gradients(net):
    return {(name, k): blob.diff.copy() for name, blobs in net.params.items() for k, blob in enumerate(blobs)}


def check(spec, mode, reference, tolerance, torch=None):
    """Run ``spec`` under ``mode`` and compare it with ``reference``: "torch" (float32 against
    PyTorch's float32, to ``tolerance``) or "float64" (the float64 net under ``mode`` against
    the float64 net as im2col + GEMM, ``plain_paths``, to ``EXACT_TOLERANCE``; then float32
    against the latter, to ``tolerance``). Returns the largest relative gradient difference of
    the float32 comparison, or raises ``bench_nets.ComputationMismatch``."""
    inputs = bn.fixed_inputs(spec)
    start = netlayers.Net(spec, dtype=np.float32, seed=bn.SEED)
    params = {name: [blob.data.copy() for blob in blobs] for name, blobs in start.params.items()}
    with MODES[mode]():
        ours_loss, net = netlayers_run(spec, inputs, np.float32, params)
    gradients = param_gradients(net)
    if reference == "torch":
        torch_params = {name: [torch.from_numpy(array.copy()) for array in arrays] for name, arrays in params.items()}
        try:
            step, module = bn.build_torch(spec, inputs, torch_params)
            reference_loss = step()
        except (ValueError, RuntimeError) as error:  # BatchNorm over one value a channel: Caffe's 0, an error there
            raise Unsupported(f"net '{spec['name']}': PyTorch cannot run it: {error}") from None
        expected = {key: tensor.grad.numpy().astype(np.float64) for key, tensor in module.param_of.items()}
        return bn.compare_gradients(spec["name"], ours_loss, gradients, reference_loss, expected, tolerance)
    with plain_paths():
        reference_loss, wide = netlayers_run(spec, inputs, np.float64, params)
    expected, name = learned_gradients(wide), spec["name"]
    with MODES[mode]():  # first the paths themselves, in float64
        wide_loss, wide_net = netlayers_run(spec, inputs, np.float64, params)
    try:
        bn.compare_gradients(
            name, wide_loss, learned_gradients(wide_net), reference_loss, expected, EXACT_TOLERANCE, PLAIN
        )
    except bn.ComputationMismatch as error:
        raise bn.ComputationMismatch(f"{error} in float64 (the paths of mode '{mode}' against im2col + GEMM)") from None
    return bn.compare_gradients(name, ours_loss, gradients, reference_loss, expected, tolerance, PLAIN)


PLAIN = "float64 im2col + GEMM"  # the float64 reference's name in a mismatch

# float64 under one mode against float64 as im2col + GEMM: the same sums in another order, so
# they agree to rounding (1e-13 relative on this tool's nets) unless a path is wrong
EXACT_TOLERANCE = 1e-9
# float32 against float64: a lone ReLU flip (an output 5e-6 from 0 that F(4x4, 5x5)'s float32
# rounding put below it, 1 of 37,000) moved a bias gradient by 3.6e-2 where its terms cancel
# 100 to 1; forced onto small layers, F(4x4)'s rounding amplified by BatchNorms reached 3.9e-2.
# A wrong computation differs by order 1; wrong paths are what the float64 comparison finds.
FLOAT32_TOLERANCE = 0.1


def learned_gradients(net):
    """(layer, index) -> the gradient of each param that has one (not BatchNorm's statistics)."""
    return {key: grad for key, grad in param_gradients(net).items() if net.layer(key[0]).type != "BatchNorm"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument(
        "--reference", default=None, help="torch, float64 or both (default: both, torch where installed)"
    )
    parser.add_argument("--tolerance", type=float, default=FLOAT32_TOLERANCE)
    parser.add_argument("--keep", type=Path, default=None, help="write each failing net here as YAML")
    args = parser.parse_args(argv)
    if args.nets < 1 or args.threads < 1:
        parser.error(f"--nets and --threads take 1 or more, got {args.nets} and {args.threads}")
    if args.keep is not None and args.keep.exists() and not args.keep.is_dir():
        parser.error(f"--keep {args.keep}: a file is there; give a folder (made if missing)")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"unknown mode(s): {', '.join(unknown)}; known: {', '.join(MODES)}")
    torch = bn.import_torch()
    references = (args.reference or ("torch,float64" if torch is not None else "float64")).split(",")
    if any(reference not in ("torch", "float64") for reference in references):
        parser.error(f"--reference takes torch, float64 or both, got {args.reference!r}")
    if "torch" in references and torch is None:
        parser.error("--reference torch needs PyTorch installed (pip install torch), or use --reference float64")
    bn.set_threads(args.threads, torch)
    failures, unsupported, worst = 0, 0, 0.0
    for index in range(args.nets):
        spec = random_net(args.seed, index)
        for mode, reference in [(mode, reference) for mode in modes for reference in references]:
            try:
                worst = max(worst, check(spec, mode, reference, args.tolerance, torch))
            except Unsupported as error:
                unsupported += 1
                print(f"fuzz_nets: {mode}, against {reference}: skipped: {str(error).splitlines()[0]}", flush=True)
            except bn.ComputationMismatch as error:
                failures += 1
                print(f"fuzz_nets: {mode}, against {reference}: {error}", flush=True)
                if args.keep is not None:
                    args.keep.mkdir(parents=True, exist_ok=True)
                    path = args.keep / f"{spec['name']}.yaml"
                    path.write_text(yaml.safe_dump(spec, sort_keys=False))
                    print(f"fuzz_nets:   written to {path}", flush=True)
    checked = args.nets * len(modes) * len(references)
    print(
        f"{args.nets} random nets x {len(modes)} modes ({', '.join(modes)}) against {' and '.join(references)}, "
        f"{args.threads} threads: {failures} of {checked} differ, {unsupported} the reference cannot run; "
        f"largest gradient difference of the others {worst:.1e} (tolerance {args.tolerance:g})"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
