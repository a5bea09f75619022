"""Benchmark: Caffe's LeNet forward + backward in netlayers, side by side with PyTorch.

    python tools/bench_lenet.py [--batch 64] [--repeats 7] [--iters 30] [--throughput]

LeNet as in Caffe's examples (conv 20@5x5, max pool 2/2, conv 50@5x5, max pool 2/2,
InnerProduct 500, ReLU, InnerProduct 10, SoftmaxWithLoss) on one fixed batch of 1x28x28 images
in float32. Both frameworks use the same weights and as many threads as there are cores
(``torch.set_num_threads``; OpenBLAS uses every core by default). One *step* is: clear the param
gradients, forward, backward. Reported: the best of ``--repeats`` runs of ``--iters`` steps, the
per-layer forward/backward times of netlayers (timed separately, layer by layer), and the ratio
netlayers / PyTorch. PyTorch is skipped when it is not installed. The losses of both are
printed as a check that the two compute the same thing.

With ``--throughput``, also the training throughput (images/s) of a real solver on
Fashion-MNIST with ``configs/lenet_fashion_mnist.yaml``, side by side with PyTorch: see
:func:`bench_training_throughput` for what each side does and times.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import netlayers  # noqa: E402


def lenet_spec(batch):
    """Caffe's LeNet (examples/mnist/lenet_train_test.prototxt) with an Input layer."""
    xavier = {"type": "xavier"}
    constant = {"type": "constant"}
    return {
        "name": "LeNet",
        "layers": [
            {
                "name": "data",
                "type": "Input",
                "top": ["data", "label"],
                "input_param": {"shape": [{"dim": [batch, 1, 28, 28]}, {"dim": [batch]}]},
            },
            {
                "name": "conv1",
                "type": "Convolution",
                "bottom": "data",
                "top": "conv1",
                "convolution_param": {
                    "num_output": 20,
                    "kernel_size": 5,
                    "stride": 1,
                    "weight_filler": xavier,
                    "bias_filler": constant,
                },
            },
            {
                "name": "pool1",
                "type": "Pooling",
                "bottom": "conv1",
                "top": "pool1",
                "pooling_param": {"pool": "MAX", "kernel_size": 2, "stride": 2},
            },
            {
                "name": "conv2",
                "type": "Convolution",
                "bottom": "pool1",
                "top": "conv2",
                "convolution_param": {
                    "num_output": 50,
                    "kernel_size": 5,
                    "stride": 1,
                    "weight_filler": xavier,
                    "bias_filler": constant,
                },
            },
            {
                "name": "pool2",
                "type": "Pooling",
                "bottom": "conv2",
                "top": "pool2",
                "pooling_param": {"pool": "MAX", "kernel_size": 2, "stride": 2},
            },
            {
                "name": "ip1",
                "type": "InnerProduct",
                "bottom": "pool2",
                "top": "ip1",
                "inner_product_param": {"num_output": 500, "weight_filler": xavier, "bias_filler": constant},
            },
            {"name": "relu1", "type": "ReLU", "bottom": "ip1", "top": "ip1"},
            {
                "name": "ip2",
                "type": "InnerProduct",
                "bottom": "ip1",
                "top": "ip2",
                "inner_product_param": {"num_output": 10, "weight_filler": xavier, "bias_filler": constant},
            },
            {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["ip2", "label"], "top": "loss"},
        ],
    }


def fixed_batch(batch, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.random((batch, 1, 28, 28), dtype=np.float32)
    labels = rng.integers(0, 10, batch).astype(np.float32)
    return images, labels


STEP_PAUSE = 0.5  # seconds: longer than idle OpenBLAS/OpenMP threads of the other side spin


def best_times(steps, repeats, iters, pause=STEP_PAUSE):
    """Best mean seconds per call of each of ``steps`` over ``repeats`` rounds of ``iters``
    calls. The steps take turns within each round, so that both see the same machine load (a
    shared VM's speed drifts by 10-30% over seconds), each after ``pause`` seconds of rest: the
    threads one side leaves spinning (OpenBLAS's spin about 0.1 s) would slow the other down
    (with no pause, yesterday's netlayers read 0.75x PyTorch's LeNet time; PyTorch itself ran
    about 30% slower right after it)."""
    for step in steps:
        for _ in range(3):
            step()
    best = [float("inf")] * len(steps)
    for _ in range(repeats):
        for k, step in enumerate(steps):
            time.sleep(pause)
            start = time.perf_counter()
            for _ in range(iters):
                step()
            best[k] = min(best[k], (time.perf_counter() - start) / iters)
    return best


# -- netlayers -------------------------------------------------------------------------------
def build_netlayers(batch):
    net = netlayers.Net(lenet_spec(batch), "TRAIN", seed=1)
    images, labels = fixed_batch(batch)
    net.blobs["data"].data[...] = images
    net.blobs["label"].data[...] = labels
    return net


def netlayers_step(net):
    net.clear_param_diffs()
    net.forward()
    net.backward()
    return net.loss


def netlayers_layer_times(net, repeats, iters):
    """Per layer: the best mean forward and backward seconds (each layer timed on its own)."""
    netlayers_step(net)
    forward = {name: float("inf") for name in net.layer_names}
    backward = dict(forward)
    for _ in range(repeats):
        fsum = dict.fromkeys(net.layer_names, 0.0)
        bsum = dict.fromkeys(net.layer_names, 0.0)
        for _ in range(iters):
            net.clear_param_diffs()
            for i, layer in enumerate(net.layers):
                start = time.perf_counter()
                layer.forward(net.bottom_vecs[i], net.top_vecs[i])
                fsum[layer.name] += time.perf_counter() - start
            for i in reversed(range(len(net.layers))):
                if net.layer_need_backward[i]:
                    layer = net.layers[i]
                    start = time.perf_counter()
                    layer.backward(net.top_vecs[i], net.bottom_need_backward[i], net.bottom_vecs[i])
                    bsum[layer.name] += time.perf_counter() - start
        for name in net.layer_names:
            forward[name] = min(forward[name], fsum[name] / iters)
            backward[name] = min(backward[name], bsum[name] / iters)
    return forward, backward


# -- PyTorch ---------------------------------------------------------------------------------
def torch_lenet(net):
    """The same LeNet as a torch.nn.Module, with the weights of netlayers' ``net``."""
    import torch

    nn, F = torch.nn, torch.nn.functional

    class LeNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 20, 5)
            self.conv2 = nn.Conv2d(20, 50, 5)
            self.ip1 = nn.Linear(800, 500)
            self.ip2 = nn.Linear(500, 10)

        def forward(self, x):
            x = F.max_pool2d(self.conv1(x), 2, 2, ceil_mode=True)
            x = F.max_pool2d(self.conv2(x), 2, 2, ceil_mode=True)
            x = F.relu(self.ip1(x.flatten(1)))
            return self.ip2(x)

    model = LeNet()
    with torch.no_grad():
        for name in ("conv1", "conv2", "ip1", "ip2"):
            module = getattr(model, name)
            module.weight.copy_(torch.from_numpy(net.params[name][0].data))
            module.bias.copy_(torch.from_numpy(net.params[name][1].data))
    return model


def build_torch(net, batch, threads):
    """A forward+backward step of the same LeNet in PyTorch with netlayers' weights on the
    fixed batch, or None without torch."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    F = torch.nn.functional
    model = torch_lenet(net)
    images, labels = fixed_batch(batch)
    x = torch.from_numpy(images)
    y = torch.from_numpy(labels.astype(np.int64))

    def step():
        model.zero_grad(set_to_none=False)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss.detach()

    return step


# -- training throughput ---------------------------------------------------------------------
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "lenet_fashion_mnist.yaml"


def build_solver(output_dir):
    """The netlayers Solver of configs/lenet_fashion_mnist.yaml, with periodic tests and
    snapshots turned off (they are not training throughput)."""
    from netlayers.solvers.reporting import Reporter

    solver = netlayers.Solver(CONFIG, output_dir=output_dir, reporter=Reporter(quiet=True, metrics=False))
    solver.param.test_interval = 0
    solver.param.snapshot = 0
    return solver


def fashion_mnist_train():
    """(uint8 images (N, 1, 28, 28), int64 labels (N,)) read by netlayers' own IDX reader."""
    from netlayers.data import load_source, resolve_source

    images, labels = load_source(resolve_source("fashion-mnist/train", "IDX"))
    return np.ascontiguousarray(images), np.asarray(labels, dtype=np.int64)


def build_torch_trainer(solver, threads, loader):
    """A function ``train(n)`` running n PyTorch training iterations of the same LeNet, with
    the same initial weights, hyper-parameters and data as ``solver``; None without torch."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    model = torch_lenet(solver.net)  # the solver's initial weights
    p = solver.param
    weights = [m.weight for m in (model.conv1, model.conv2, model.ip1, model.ip2)]
    biases = [m.bias for m in (model.conv1, model.conv2, model.ip1, model.ip2)]
    optimizer = torch.optim.SGD(
        [{"params": weights, "lr": p.base_lr}, {"params": biases, "lr": 2 * p.base_lr}],  # lr_mult 2
        lr=p.base_lr,
        momentum=p.momentum,
        weight_decay=p.weight_decay,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(  # Caffe's inv policy
        optimizer, lambda it: (1.0 + p.gamma * it) ** (-p.power)
    )
    images, labels = fashion_mnist_train()
    data_layer = solver.net.layers[0]
    scale = float(data_layer.transformer.scale)
    batch = data_layer.p.batch_size
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels)

    def sliced():
        position, n = 0, len(images)
        while True:
            if position + batch <= n:
                x, y = x_all[position : position + batch], y_all[position : position + batch]
            else:  # wrap around, as the Data layer does
                index = torch.arange(position, position + batch) % n
                x, y = x_all[index], y_all[index]
            position = (position + batch) % n
            yield x.float().mul_(scale), y

    def data_loader():
        dataset = torch.utils.data.TensorDataset(x_all, y_all)
        while True:
            for x, y in torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=False):
                yield x.float().mul_(scale), y

    batches = sliced() if loader == "slice" else data_loader()
    cross_entropy = torch.nn.functional.cross_entropy

    def train(iters):
        for _ in range(iters):
            x, y = next(batches)
            optimizer.zero_grad()
            loss = cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            schedule.step()
        return float(loss.detach())

    return train


def netlayers_phase_times(solver, iters):
    """Mean ms per training iteration of each phase of Solver.step, timed one by one."""
    net = solver.net
    names = ["clear diffs", "data layer", "net forward", "net backward", "solver update"]
    sums = dict.fromkeys(names, 0.0)
    clock = time.perf_counter
    for _ in range(iters):
        t0 = clock()
        net.clear_param_diffs()
        t1 = clock()
        loss = net.layers[0].forward(net.bottom_vecs[0], net.top_vecs[0])
        t2 = clock()
        loss += net.forward_range(1, len(net.layers) - 1)
        net.loss = loss
        t3 = clock()
        net.backward()
        t4 = clock()
        solver.apply_update(solver.learning_rate())
        solver.iter += 1
        t5 = clock()
        for name, (a, b) in zip(names, [(t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5)]):
            sums[name] += b - a
    return {name: total / iters * 1e3 for name, total in sums.items()}


def bench_training_throughput(args):
    """Training throughput (images/s) of LeNet on Fashion-MNIST, netlayers and PyTorch.

    netlayers: ``Solver(configs/lenet_fashion_mnist.yaml)`` (periodic tests and snapshots off),
    timing ``solver.step(n)``: the Data layer (IDX arrays in memory; its background thread
    gathers each batch of uint8 images and scales them by 1/256 into float32, the net's thread
    copies the batch into the data blob), forward, backward, the loss check, and the SGD update
    (momentum 0.9, weight decay 5e-4, inv lr policy, lr_mult 2 for biases).

    PyTorch: the same LeNet with the same initial weights, ``torch.optim.SGD`` (momentum 0.9,
    weight_decay 5e-4, a param group with twice the rate for the biases, the inv policy as a
    LambdaLR; PyTorch keeps the rate outside the momentum history, which changes nothing in
    the cost); its data: the same uint8 arrays (read by netlayers' IDX reader), every batch
    sliced in file order (wrapping around at the end, as the Data layer does), converted to
    float32 and scaled by 1/256 in the training thread (``--torch-data slice``, the default),
    or taken from a ``DataLoader`` over a ``TensorDataset`` (batch 64, no shuffle, no
    workers) and then converted and scaled (``--torch-data loader``). No prefetching thread.
    Timed: ``n`` iterations of next batch, zero_grad, forward, cross-entropy, backward, step,
    scheduler step.

    Both run as many threads as there are cores, first a few warm-up iterations, then
    alternately ``--train-iters`` iterations each for ``--train-rounds`` rounds (so that a
    shared machine's drifting speed hits both alike), each run after ``--train-pause`` seconds
    of rest (the other side's idle OpenBLAS/OpenMP threads spin for a while after their last
    call and would slow the next run down: without the pause PyTorch measured about 8% slower
    after netlayers' runs). Reported: the median images/s of each, the ratio of the medians
    netlayers / PyTorch (above 1: netlayers trains faster) and the median of the per-round
    ratios; then the per-phase times of a netlayers training iteration and the per-layer times
    of the training net (the Data layer's forward includes waiting for its prefetch thread).
    """
    import statistics
    import tempfile

    iters, rounds = args.train_iters, args.train_rounds
    with tempfile.TemporaryDirectory(prefix="bench_lenet_") as output_dir:
        solver = build_solver(output_dir)
        batch = solver.net.layers[0].p.batch_size
        torch_train = None if args.no_torch else build_torch_trainer(solver, args.threads, args.torch_data)
        solver.step(args.train_warmup)
        if torch_train:
            torch_train(args.train_warmup)
        ours, theirs = [], []
        for _ in range(rounds):
            time.sleep(args.train_pause)
            start = time.perf_counter()
            solver.step(iters)
            ours.append(iters * batch / (time.perf_counter() - start))
            if torch_train:
                time.sleep(args.train_pause)
                start = time.perf_counter()
                torch_train(iters)
                theirs.append(iters * batch / (time.perf_counter() - start))
        phases = netlayers_phase_times(solver, iters)
        forward, backward = netlayers_layer_times(solver.net, 3, max(10, iters // 5))
        solver.net.layers[0].close()
        if solver.test_net is not None:
            solver.test_net.layers[0].close()

    print(
        f"\nLeNet training on Fashion-MNIST (configs/lenet_fashion_mnist.yaml), batch {batch}, "
        f"{args.threads} threads, median of {rounds} rounds x {iters} iterations"
    )
    print(f"\n{'netlayers phase':<16} {'ms/iter':>8}")
    for name, ms in phases.items():
        print(f"{name:<16} {ms:>8.3f}")
    print(f"{'sum':<16} {sum(phases.values()):>8.3f}")
    print(f"\n{'layer':<8} {'forward ms':>11} {'backward ms':>12}")
    for name in solver.net.layer_names:
        print(f"{name:<8} {forward[name] * 1e3:>11.3f} {backward[name] * 1e3:>12.3f}")
    print(f"{'sum':<8} {sum(forward.values()) * 1e3:>11.3f} {sum(backward.values()) * 1e3:>12.3f}")

    result = {"netlayers_images_per_sec": statistics.median(ours), "netlayers_rounds": ours}
    print(
        f"\nnetlayers training: {result['netlayers_images_per_sec']:8.0f} images/s   "
        f"(rounds: {', '.join(f'{v:.0f}' for v in ours)})"
    )
    if not theirs:
        print("PyTorch: not installed (skipped)" if not args.no_torch else "PyTorch: skipped")
        return result
    result.update(torch_images_per_sec=statistics.median(theirs), torch_rounds=theirs)
    result["ratio"] = result["netlayers_images_per_sec"] / result["torch_images_per_sec"]
    result["round_ratio"] = statistics.median(a / b for a, b in zip(ours, theirs))
    print(
        f"PyTorch   training: {result['torch_images_per_sec']:8.0f} images/s   "
        f"(rounds: {', '.join(f'{v:.0f}' for v in theirs)}; data: {args.torch_data})"
    )
    print(
        f"ratio netlayers / PyTorch images/s: {result['ratio']:.2f}x   "
        f"(median of the per-round ratios: {result['round_ratio']:.2f}x)"
    )
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    parser.add_argument("--throughput", action="store_true", help="also run the training throughput")
    parser.add_argument("--train-iters", type=int, default=50, help="iterations per round (throughput)")
    parser.add_argument("--train-rounds", type=int, default=15, help="rounds (throughput)")
    parser.add_argument("--train-warmup", type=int, default=10, help="warm-up iterations (throughput)")
    parser.add_argument(
        "--train-pause",
        type=float,
        default=0.2,
        help="seconds of rest before each timed run (throughput; lets the other "
        "side's idle BLAS/OpenMP threads stop spinning)",
    )
    parser.add_argument(
        "--torch-data",
        choices=("slice", "loader"),
        default="slice",
        help="PyTorch's batches: tensor slices or a DataLoader (throughput)",
    )
    args = parser.parse_args(argv)

    net = build_netlayers(args.batch)
    torch_step = None if args.no_torch else build_torch(net, args.batch, args.threads)
    print(
        f"LeNet forward+backward, batch {args.batch}x1x28x28 float32, {args.threads} threads, "
        f"best of {args.repeats} x {args.iters} steps"
    )
    steps = [lambda: netlayers_step(net)] + ([torch_step] if torch_step else [])
    times = best_times(steps, args.repeats, args.iters)
    ours, theirs = times[0], (times[1] if torch_step else None)
    forward, backward = netlayers_layer_times(net, args.repeats, args.iters)

    print(f"\n{'layer':<8} {'forward ms':>11} {'backward ms':>12}")
    for name in net.layer_names:
        print(f"{name:<8} {forward[name] * 1e3:>11.3f} {backward[name] * 1e3:>12.3f}")
    print(f"{'sum':<8} {sum(forward.values()) * 1e3:>11.3f} {sum(backward.values()) * 1e3:>12.3f}")

    loss = netlayers_step(net)
    print(f"\nnetlayers step: {ours * 1e3:7.3f} ms   (loss {loss:.6f})")
    if theirs is None:
        print("PyTorch: not installed (skipped)" if not args.no_torch else "PyTorch: skipped")
    else:
        print(f"PyTorch   step: {theirs * 1e3:7.3f} ms   (loss {float(torch_step()):.6f})")
        print(f"ratio netlayers / PyTorch: {ours / theirs:.2f}x")
    if args.throughput:
        bench_training_throughput(args)


if __name__ == "__main__":
    main()
