"""Benchmark: training images/s of Caffe's cifar10_quick with its Data layer, side by side with
PyTorch training the same net from a DataLoader.

    python tools/bench_cifar.py [--rounds 7] [--iters 10] [--threads 2] [--train 10000] [--test 1000]

There is no CIFAR-10 on the project's machines, so the benchmark first writes a synthetic data
set of its shape into a temporary folder (:func:`write_synthetic_cifar10`: seeded uint8 images
3x32x32 with labels 0..9, ``cifar10/train.npz`` and ``cifar10/test.npz``, the NPZ backend's
format). Both sides use the same uint8 arrays and the same transform: the config's per-channel
``mean_value`` subtracted (Caffe's cifar10_quick subtracts a per-pixel mean file, which the Data
layer does not read; a per-channel mean costs the same) and its ``scale`` (1, as in Caffe).
Neither side shuffles: Caffe's Data layer reads in file order and the config keeps
``shuffle: false``; PyTorch's DataLoader gets ``shuffle=False``.

netlayers: ``Solver(configs/cifar10_quick.yaml, data_root=<the temporary folder>)`` with
periodic tests and snapshots off; ``solver.step(k)`` is timed: the Data layer (its prefetch
thread casts each batch of uint8 images to float32 and subtracts the means), forward, backward
and the SGD update (momentum 0.9, weight decay 0.004, lr_mult 2 for biases).

PyTorch: the same net (``bench_nets.torch_net`` translates the config's TRAIN layers; Caffe's
rounding-up pooling as ``ceil_mode=True``) with netlayers' initial weights, ``torch.optim.SGD``
with the same rate, momentum and weight decay per param (Caffe's lr_mult and decay_mult as
param groups; with a fixed rate PyTorch's momentum form takes the same steps). Its data come
from ``torch.utils.data.DataLoader`` (batch 100, ``shuffle=False``, ``drop_last``), with
``num_workers`` 0 and 1 (workers kept alive across epochs), in two forms: ``item`` transforms
each image in the Dataset's ``__getitem__`` and the DataLoader stacks them (torchvision's
idiom); ``batch`` hands the Dataset a whole batch of indices (a ``BatchSampler`` as sampler,
``batch_size=None``) and transforms the batch in one operation. Timed: ``k`` iterations of
next batch, zero_grad, forward, cross-entropy, backward, step.

Before timing, the first batch of each side is checked to give the same loss and param
gradients (``bench_nets.check_same_computation``): same data, transform, net and weights. Then,
after a warm-up, ``--rounds`` rounds: in each, every side trains ``--iters`` iterations in turn
(the order flips every round, with a pause before each run, ``bench_nets.alternate_rounds``).
Reported: each side's median and best images/s (``iters * batch / seconds``) and the median of
the per-round ratios netlayers / PyTorch (above 1: netlayers trains faster). Both sides run
``--threads`` threads (``netlayers.threads.configure_threads``, ``torch.set_num_threads``).
Without PyTorch, netlayers runs alone.
"""

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS.parent))
sys.path.insert(0, str(TOOLS))

import bench_nets  # noqa: E402
from bench_lenet import netlayers_phase_times  # noqa: E402

import netlayers  # noqa: E402

CONFIG = TOOLS.parent / "configs" / "cifar10_quick.yaml"
DATASET_FOLDER = "cifar10"  # the config's sources are cifar10/train and cifar10/test
IMAGE_SHAPE = (3, 32, 32)
CLASSES = 10
SEED = 1
LOADERS = ("batch", "item")  # PyTorch's DataLoader forms (see the module text)
WORKERS = (0, 1)


# -- the synthetic data set ------------------------------------------------------------------
def synthetic_split(count, class_colours, rng):
    """``count`` uint8 images (count, 3, 32, 32) and uint8 labels 0..9: uniform noise in
    0..191 plus the colour of the image's class (``class_colours``: (10, 3, 1, 1), 0..63), so
    that the labels can be learnt from the images."""
    labels = rng.integers(0, CLASSES, count).astype(np.uint8)
    noise = rng.integers(0, 192, (count, *IMAGE_SHAPE))
    return (noise + class_colours[labels]).astype(np.uint8), labels


def write_synthetic_cifar10(root, train=10_000, test=1_000, seed=0):
    """Write ``root/cifar10/train.npz`` and ``test.npz`` (arrays ``data`` and ``label``, see
    :func:`synthetic_split`; both splits share the class colours; the same ``seed`` writes the
    same files) and return the folder."""
    folder = Path(root) / DATASET_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    class_colours = rng.integers(0, 64, (CLASSES, IMAGE_SHAPE[0], 1, 1))
    for split, count in (("train", train), ("test", test)):
        images, labels = synthetic_split(count, class_colours, rng)
        np.savez(folder / f"{split}.npz", data=images, label=labels)
    return folder


# -- netlayers -------------------------------------------------------------------------------
def config_with_batch(batch):
    """The config file's mapping with every Data layer's batch_size set to ``batch``."""
    config = yaml.safe_load(CONFIG.read_text())
    for layer in config["layers"]:
        if layer["type"] == "Data":
            layer["data_param"]["batch_size"] = batch
    return config


def build_solver(data_root, output_dir, batch=None):
    """The Solver of configs/cifar10_quick.yaml reading its data under ``data_root``, with
    periodic tests and snapshots off (they are not training throughput); ``batch`` overrides
    the Data layers' batch_size."""
    from netlayers.solvers.reporting import Reporter

    config = CONFIG if batch is None else config_with_batch(batch)
    solver = netlayers.Solver(
        config, data_root=data_root, output_dir=output_dir, seed=SEED, reporter=Reporter(quiet=True, metrics=False)
    )
    solver.param.test_interval = 0
    solver.param.snapshot = 0
    return solver


def close_solver(solver):
    """Stop the Data layers' prefetch threads."""
    for net in (solver.net, solver.test_net):
        if net is not None:
            net.layers[0].close()


def train_spec(solver):
    """The config's TRAIN-phase layers after the Data layer, behind a placeholder first layer
    (``bench_nets.torch_net`` skips the first layer: its tops are the inputs)."""
    config = yaml.safe_load(CONFIG.read_text())
    layers = [
        layer
        for layer in config["layers"]
        if layer["type"] != "Data" and layer.get("include", {}).get("phase", "TRAIN") == "TRAIN"
    ]
    return {"name": config["name"], "layers": [{"name": "data", "type": "Input"}, *layers]}


# -- PyTorch ---------------------------------------------------------------------------------
def param_groups(module, spec, solver):
    """``torch.optim.SGD`` groups: one per netlayers param, with Caffe's lr_mult and
    decay_mult applied to the rate and the weight decay."""
    p = solver.param
    layers = {layer["name"]: layer for layer in spec["layers"]}
    groups = []
    for (name, index), tensor in module.param_of.items():
        settings = layers[name].get("param", [])
        setting = settings[index] if index < len(settings) else {}
        groups.append(
            {
                "params": [tensor],
                "lr": p.base_lr * setting.get("lr_mult", 1.0),
                "weight_decay": p.weight_decay * setting.get("decay_mult", 1.0),
            }
        )
    return groups


def torch_dataset(images, labels, mean, scale):
    """A map-style Dataset over the uint8 ``images``: ``dataset[i]`` is the pair
    ``(images[i] - mean) * scale`` (float32, ``mean`` per channel) and ``labels[i]`` (int64);
    ``i`` may be one index or a list of them (a batch, transformed in one operation)."""
    import torch

    class Images(torch.utils.data.Dataset):
        def __init__(self):
            self.images = torch.from_numpy(images)
            self.labels = torch.from_numpy(labels.astype(np.int64))
            self.mean = torch.tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)

        def __len__(self):
            return len(self.images)

        def __getitem__(self, index):
            return (self.images[index].float() - self.mean) * scale, self.labels[index]

    return Images()


def torch_loader(images, labels, mean, scale, batch, workers, loader):
    """An endless iterator of (float32 images, int64 labels) batches from a DataLoader in the
    file's order (see the module text for ``loader``), and a function that stops its workers."""
    import torch

    data = torch.utils.data
    dataset = torch_dataset(images, labels, mean, scale)
    options = {"num_workers": workers, "persistent_workers": workers > 0}
    if loader == "batch":
        batches = data.BatchSampler(data.SequentialSampler(dataset), batch, drop_last=True)
        dataloader = data.DataLoader(dataset, sampler=batches, batch_size=None, **options)
    else:
        dataloader = data.DataLoader(dataset, batch_size=batch, shuffle=False, drop_last=True, **options)

    def endless():
        while True:
            yield from dataloader

    iterator = endless()

    def close():
        iterator.close()
        workers = getattr(dataloader, "_iterator", None)
        if workers is not None and hasattr(workers, "_shutdown_workers"):
            workers._shutdown_workers()

    return iterator, close


class TorchSide:
    """PyTorch training the same net as ``solver``, from its initial weights, on batches of a
    DataLoader (``workers``, ``loader``: see :func:`torch_loader`) over ``images``/``labels``."""

    def __init__(self, solver, images, labels, workers, loader):
        import torch

        self.name = f"PyTorch, DataLoader {loader}, workers {workers}"
        spec = train_spec(solver)
        self.module = bench_nets.torch_net(spec, bench_nets.netlayers_params_as_torch(solver.net))
        self.optimizer = torch.optim.SGD(
            param_groups(self.module, spec, solver), lr=solver.param.base_lr, momentum=solver.param.momentum
        )
        layer = solver.net.layers[0]
        mean = layer.transformer.mean_value
        self.batches, self.close = torch_loader(
            images, labels, mean, layer.transformer.scale, layer.p.batch_size, workers, loader
        )

    def train(self, iters):
        """``iters`` training iterations; returns the last loss."""
        for _ in range(iters):
            data, label = next(self.batches)
            self.optimizer.zero_grad()
            loss = self.module(data, label)
            loss.backward()
            self.optimizer.step()
        return float(loss.detach())

    def first_step(self, data, label):
        """Loss and gradients of one batch (no update), for the sameness check."""
        self.optimizer.zero_grad()
        loss = self.module(data, label)
        loss.backward()
        return float(loss.detach())


def check_first_batch(solver, sides):
    """Raise ``bench_nets.ComputationMismatch`` unless netlayers' first training batch (through
    its Data layer) and each PyTorch side's (through its DataLoader) give the same loss and
    gradients from the same weights; returns the largest relative gradient difference. Call
    before any side has trained; consumes one batch of each."""
    net = solver.net
    net.clear_param_diffs()
    ours = net.forward_backward()
    worst = 0.0
    for side in sides:
        theirs = side.first_step(*next(side.batches))
        worst = max(worst, bench_nets.check_same_computation("cifar10_quick", net, side.module, ours, theirs))
    return worst


# -- the benchmark ---------------------------------------------------------------------------
def images_per_second(seconds, iters, batch):
    return [iters * batch / s for s in seconds]


@dataclass
class Run:
    """What :func:`run_benchmark` measured."""

    rates: dict  # side name -> images/s of every round; netlayers first
    batch: int
    worst_gradient: float | None  # of the first-batch check; None without PyTorch
    phases: dict  # netlayers' ms per iteration of each phase of Solver.step, timed apart


def run_benchmark(data_root, output_dir, *, rounds, iters, warmup, pause, threads, batch=None, torch_sides=None):
    """Check the first batch, warm up, train every side in alternating rounds, then time the
    phases of netlayers' iterations (``bench_lenet.netlayers_phase_times``); returns a
    :class:`Run`. ``torch_sides`` lists (workers, loader) pairs; None: every one of
    ``WORKERS`` x ``LOADERS`` when torch is installed, none without it."""
    torch = bench_nets.import_torch()
    bench_nets.set_threads(threads, torch)
    if torch is None:
        torch_sides = []
    elif torch_sides is None:
        torch_sides = [(workers, loader) for loader in LOADERS for workers in WORKERS]
    solver = build_solver(data_root, output_dir, batch)
    sides = []
    try:
        if torch_sides:
            from netlayers.data import load_source, resolve_source

            source = solver.net.layers[0].p.source
            images, labels = load_source(resolve_source(source, "NPZ", data_root=data_root))
            sides = [TorchSide(solver, images, labels, workers, loader) for workers, loader in torch_sides]
        worst = check_first_batch(solver, sides) if sides else None
        steps = [lambda: solver.step(iters)] + [lambda side=side: side.train(iters) for side in sides]
        solver.step(warmup)
        for side in sides:
            side.train(warmup)
        seconds = bench_nets.alternate_rounds(steps, rounds, 1, pause)
        batch = solver.net.layers[0].p.batch_size
        names = ["netlayers, Data layer"] + [side.name for side in sides]
        rates = {name: images_per_second(s, iters, batch) for name, s in zip(names, seconds)}
        return Run(rates, batch, worst, netlayers_phase_times(solver, iters))
    finally:
        for side in sides:
            side.close()
        close_solver(solver)


def report(run, args):
    """The lines printed: per side its median and best images/s and, for PyTorch's sides, the
    median of the per-round ratios netlayers images/s / that side's images/s; then netlayers'
    time per iteration by phase."""
    rates, batch, worst = run.rates, run.batch, run.worst_gradient
    names = list(rates)
    ours = rates[names[0]]
    lines = [
        f"cifar10_quick training (configs/cifar10_quick.yaml), batch {batch}, synthetic data "
        f"{args.train} train images, {args.threads} threads, {args.rounds} rounds x {args.iters} iterations, "
        f"{bench_nets.load_average()} at the end",
    ]
    if worst is not None:
        lines.append(f"first batch: losses equal, param gradients within {worst:.1e} (relative norm)")
    lines.append(f"\n{'side':<36} {'median img/s':>12} {'best img/s':>11} {'netlayers / side':>17}")
    for name in names:
        ratio = "-" if name == names[0] else f"{statistics.median(a / b for a, b in zip(ours, rates[name])):.2f}x"
        lines.append(f"{name:<36} {statistics.median(rates[name]):>12.0f} {max(rates[name]):>11.0f} {ratio:>17}")
    if len(names) == 1:
        lines.append("PyTorch: not installed (skipped)")
    lines.append(f"\n{'netlayers phase':<16} {'ms/iter':>8}")
    lines += [f"{name:<16} {ms:>8.2f}" for name, ms in run.phases.items()]
    lines.append(f"{'sum':<16} {sum(run.phases.values()):>8.2f}")
    return lines


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iters", type=int, default=10, help="iterations per side and round")
    parser.add_argument("--warmup", type=int, default=3, help="iterations per side before timing")
    parser.add_argument("--pause", type=float, default=0.2, help="seconds of rest before each timed run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train", type=int, default=10_000, help="synthetic training images")
    parser.add_argument("--test", type=int, default=1_000, help="synthetic test images")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_cifar_") as folder:
        root = Path(folder)
        start = time.perf_counter()
        write_synthetic_cifar10(root / "data", args.train, args.test, seed=0)
        print(f"synthetic CIFAR-10 written in {time.perf_counter() - start:.1f} s; {bench_nets.load_average()}")
        run = run_benchmark(
            root / "data",
            root / "run",
            rounds=args.rounds,
            iters=args.iters,
            warmup=args.warmup,
            pause=args.pause,
            threads=args.threads,
        )
    print("\n".join(report(run, args)))


if __name__ == "__main__":
    main()
