"""Sweep random Convolution or Deconvolution geometries: netlayers' layer against PyTorch's.

Each geometry (kernel 1 to 11 or 1 x 7, stride 1 to 4, padding 0 or "same", dilation 1 or 2,
groups 1 to 32 or depthwise, 3 to 1024 channels, 7 to 224 px, batch 1 to 64, a forward of
``--min-mflop`` to ``--max-mflop``) runs as one layer inside a small net (Input -> Scale ->
the layer -> InnerProduct -> loss, so that the layer has a data gradient to compute), forward +
backward through ``run_layer``, against ``F.conv2d`` / ``F.conv_transpose2d`` with autograd on
the same shapes, both sides with ``--threads`` threads, in alternating rounds with a pause
before each side's run (``bench_nets.alternate_rounds``). The table lists the geometries from
the worst ratio down, with the path netlayers took (im2col chunks, phase chunks, a Winograd
form, row strips, depthwise, sub-pixel): it finds the geometries that fall off their fast path.

    python tools/bench_layers.py --kind Convolution --seed 4 --count 45

With ``--forward-only`` both sides run the forward alone, as inference (netlayers' net made
forward only, PyTorch under ``no_grad``). Without PyTorch (``--no-torch``, or not installed) it
times netlayers alone.
"""

import argparse
import math
import os
import random
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_nets  # noqa: E402

import netlayers  # noqa: E402
from netlayers.inspect.common import run_layer  # noqa: E402

KINDS = ("Convolution", "Deconvolution")


@dataclass
class Geometry:
    kind: str
    batch: int
    channels: int
    size: int
    outputs: int
    kernel: tuple
    stride: int
    pad: tuple
    dilation: int
    group: int

    def out_size(self):
        k = [self.dilation * (side - 1) + 1 for side in self.kernel]
        if self.kind == "Convolution":
            return tuple((self.size + 2 * p - e) // self.stride + 1 for p, e in zip(self.pad, k))
        return tuple((self.size - 1) * self.stride - 2 * p + e for p, e in zip(self.pad, k))

    def flops(self):
        """Multiply-adds x 2 of the forward: over the output for a Convolution, over the input
        for a Deconvolution (each input pixel meets every tap)."""
        taps = self.kernel[0] * self.kernel[1]
        if self.kind == "Convolution":
            pixels, pairs = math.prod(self.out_size()), (self.channels // self.group) * self.outputs
        else:
            pixels, pairs = self.size * self.size, self.channels * (self.outputs // self.group)
        return 2 * self.batch * pixels * pairs * taps

    def __str__(self):
        kh, kw = self.kernel
        return (
            f"{self.batch}x{self.channels}x{self.size}^2 -> {self.outputs} {kh}x{kw} /{self.stride}"
            f" pad {self.pad[0]},{self.pad[1]} dil {self.dilation} group {self.group}"
        )


GEOMETRY = re.compile(
    r"\s*(\d+)x(\d+)x(\d+)\^2\s*->\s*(\d+)\s+(\d+)x(\d+)\s*/(\d+)\s+pad\s+(\d+),(\d+)\s+dil\s+(\d+)\s+group\s+(\d+)\s*$"
)


def parse_geometry(kind, text):
    """A geometry from its table form, "2x1024x8^2 -> 64 4x4 /1 pad 2,2 dil 1 group 1"."""
    match = GEOMETRY.match(text)
    if match is None:
        raise ValueError(
            f"geometry {text!r}: expected the table's form, e.g. '2x64x32^2 -> 64 3x3 /1 pad 1,1 dil 1 group 1'"
        )
    n, c, size, outputs, kh, kw, stride, ph, pw, dilation, group = map(int, match.groups())
    geometry = Geometry(kind, n, c, size, outputs, (kh, kw), stride, (ph, pw), dilation, group)
    if min(n, c, size, outputs, kh, kw, stride, dilation, group) < 1 or c % group or outputs % group:
        raise ValueError(f"geometry {text!r}: sizes of at least 1, and a group that divides the channels and outputs")
    if min(geometry.out_size()) < 1:
        raise ValueError(f"geometry {text!r}: its output {geometry.out_size()} has no pixel")
    return geometry


def random_geometry(rng, kind, min_flops, max_flops):
    """A geometry whose output has at least one pixel and whose forward FLOPs lie in bounds."""
    while True:
        choice = rng.choice([1, 1, 3, 3, 3, 3, 5, 7, 11, (1, 7), (7, 1), 2, 4])
        kernel = (choice, choice) if isinstance(choice, int) else choice
        stride = rng.choice([1, 1, 1, 2, 2] + ([4] if max(kernel) >= 7 else []))
        pad = tuple(side // 2 for side in kernel) if rng.random() < 0.5 else (0, 0)
        dilation = rng.choice([1, 1, 1, 2]) if kernel == (3, 3) else 1
        channels = rng.choice([3, 16, 24, 32, 64, 96, 128, 192, 256, 384, 512, 1024])
        outputs = rng.choice([16, 32, 64, 96, 128, 192, 256, 384, 512, 1024])
        group = rng.choice([1, 1, 1, 1, 2, 4, 32, "depthwise"])
        if group == "depthwise":
            group, outputs = channels, channels * rng.choice([1, 1, 1, 2])
        if channels % group or outputs % group or (group > 1 and channels < 8):
            continue
        size = rng.choice([7, 8, 13, 14, 17, 28, 32, 35, 56, 64, 112, 224])
        batch = rng.choice([1, 2, 4, 8, 16, 32, 64])
        geometry = Geometry(kind, batch, channels, size, outputs, kernel, stride, pad, dilation, group)
        out = geometry.out_size()
        if min(out) < 1 or max(out) > 300:
            continue
        if min_flops <= geometry.flops() <= max_flops:
            return geometry


def layer_net(geometry):
    """Input -> Scale -> the layer -> InnerProduct -> loss, built and run once; returns the net
    and the layer's index."""
    g = geometry
    param = {
        "num_output": g.outputs,
        "kernel_h": g.kernel[0],
        "kernel_w": g.kernel[1],
        "pad_h": g.pad[0],
        "pad_w": g.pad[1],
        "stride": g.stride,
        "dilation": g.dilation,
        "group": g.group,
        "weight_filler": bench_nets.MSRA,
        "bias_filler": bench_nets.ZERO,
    }
    layers = [
        bench_nets.input_layer(g.batch, g.channels, g.size, g.size),
        {"name": "scale", "type": "Scale", "bottom": "data", "top": "x", "scale_param": {"bias_term": False}},
        {"name": "layer", "type": g.kind, "bottom": "x", "top": "y", "convolution_param": param},
        bench_nets.inner_product("fc", "y", 10),
        bench_nets.loss("fc"),
    ]
    spec = bench_nets.net_spec("layer_sweep", layers)
    net = netlayers.Net(spec, dtype=np.float32, seed=bench_nets.SEED)
    net.forward(**bench_nets.fixed_inputs(net))
    net.backward()
    return net, [layer.name for layer in net.layers].index("layer")


def path_of(layer):
    """The way netlayers runs the layer: the class of its Winograd, strip, direct grouped,
    depthwise, sub-pixel, tap-by-tap or kn2row form, else of its column chunks."""
    for name in ("subpixel", "depthwise", "grouped", "strips", "winograd", "by_taps", "kn2row"):
        form = getattr(layer, name, None)
        if form is not None:
            return type(form).__name__
    return type(getattr(layer, "chunks", None)).__name__


def netlayers_step(net, index, forward_only=False):
    """One step of the layer: forward + backward, or with ``forward_only`` the forward of the
    net made forward only (``Net.drop_backward``: what inference keeps)."""
    if forward_only:
        net.drop_backward()
        return lambda: run_layer(net, index, "forward")

    def step():
        run_layer(net, index, "forward")
        run_layer(net, index, "backward")

    return step


def torch_step(geometry, torch, forward_only=False):
    g = geometry
    functional = torch.nn.functional
    x = torch.randn(g.batch, g.channels, g.size, g.size, requires_grad=True)
    if g.kind == "Convolution":
        w = torch.randn(g.outputs, g.channels // g.group, *g.kernel, requires_grad=True)
    else:
        w = torch.randn(g.channels, g.outputs // g.group, *g.kernel, requires_grad=True)
    b = torch.zeros(g.outputs, requires_grad=True)

    def forward():
        if g.kind == "Convolution":
            return functional.conv2d(x, w, b, g.stride, g.pad, g.dilation, g.group)
        return functional.conv_transpose2d(x, w, b, g.stride, g.pad, 0, g.group, g.dilation)

    dy = torch.randn_like(forward())

    def step():
        x.grad = w.grad = b.grad = None
        forward().backward(dy)

    def inference():
        with torch.no_grad():
            forward()

    return inference if forward_only else step


def iterations_for(step, budget):
    """Steps a round: about ``budget`` seconds of them (one step at least)."""
    step()
    start = time.perf_counter()
    step()
    return max(1, int(budget / max(time.perf_counter() - start, 1e-6)))


def sweep(
    kind, seed, count, rounds, torch, min_flops, max_flops, budget=0.1, pause=0.15, forward_only=False, geometries=()
):
    """Rows (ratio or None, netlayers seconds, PyTorch seconds or None, geometry, path) for
    ``count`` random geometries of ``kind``, or for ``geometries`` when given (``forward_only``:
    inference, the forward alone).
    netlayers' layer is timed as inside a net's pass, BLAS set for the pass once
    (``parallel.single_threaded_blas`` around the rounds), not again at every call."""
    rng = random.Random(seed)
    rows = []
    chosen = list(geometries) or [random_geometry(rng, kind, min_flops, max_flops) for _ in range(count)]
    for geometry in chosen:
        net, index = layer_net(geometry)
        steps = [netlayers_step(net, index, forward_only)]
        if torch is not None:
            steps.append(torch_step(geometry, torch, forward_only))
        with netlayers.parallel.single_threaded_blas:
            iters = min(iterations_for(step, budget) for step in steps)
            times = bench_nets.alternate_rounds(steps, rounds, iters, pause)
        ours = statistics.median(times[0])
        theirs = statistics.median(times[1]) if torch is not None else None
        ratio = statistics.median(a / b for a, b in zip(*times)) if torch is not None else None
        rows.append((ratio, ours, theirs, geometry, path_of(net.layers[index])))
        del net, steps
    return rows


def report(rows):
    lines = ["ratio  netlayers ms  PyTorch ms  forward MFLOP  path                      geometry"]
    for ratio, ours, theirs, geometry, path in sorted(rows, key=lambda r: -(r[0] or 0)):
        shown = "-" if ratio is None else f"{ratio:.2f}x"
        theirs = "-" if theirs is None else f"{theirs * 1e3:.3f}"
        lines.append(
            f"{shown:>6} {ours * 1e3:13.3f} {theirs:>11} {geometry.flops() / 1e6:14.0f}  {path:24s}  {geometry}"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kind", choices=KINDS, default="Convolution")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count", type=int, default=40, help="geometries")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--min-mflop", type=float, default=20, help="a forward's FLOPs, at least")
    parser.add_argument("--max-mflop", type=float, default=1500, help="a forward's FLOPs, at most")
    parser.add_argument("--no-torch", action="store_true", help="time netlayers alone")
    parser.add_argument("--forward-only", action="store_true", help="time the forward alone, as inference")
    parser.add_argument(
        "--geometry", action="append", default=[], help="time this geometry (the table's form; repeatable), not a sweep"
    )
    args = parser.parse_args(argv)
    try:
        geometries = [parse_geometry(args.kind, text) for text in args.geometry]
    except ValueError as error:
        parser.error(str(error))
    torch = None if args.no_torch else bench_nets.import_torch()
    bench_nets.set_threads(args.threads, torch)
    flops = (args.min_mflop * 1e6, args.max_mflop * 1e6)
    rows = sweep(
        args.kind,
        args.seed,
        args.count,
        args.rounds,
        torch,
        *flops,
        forward_only=args.forward_only,
        geometries=geometries,
    )
    side = "against PyTorch " + torch.__version__ if torch is not None else "netlayers alone (no PyTorch)"
    what = "forward only" if args.forward_only else "forward + backward"
    which = f"{len(geometries)} given" if geometries else f"{args.count} random"
    print(f"{which} {args.kind} geometries, seed {args.seed}, {args.threads} threads, {what}, {side}")
    print(report(rows))


if __name__ == "__main__":
    main()
