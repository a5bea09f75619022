"""Benchmark: Caffe's LeNet forward + backward in netlayers, side by side with PyTorch.

    python tools/bench_lenet.py [--batch 64] [--repeats 7] [--iters 30]

LeNet as in Caffe's examples (conv 20@5x5, max pool 2/2, conv 50@5x5, max pool 2/2,
InnerProduct 500, ReLU, InnerProduct 10, SoftmaxWithLoss) on one fixed batch of 1x28x28 images
in float32. Both frameworks use the same weights and as many threads as there are cores
(``torch.set_num_threads``; OpenBLAS uses every core by default). One *step* is: clear the param
gradients, forward, backward. Reported: the best of ``--repeats`` runs of ``--iters`` steps, the
per-layer forward/backward times of netlayers (timed separately, layer by layer), and the ratio
netlayers / PyTorch. PyTorch is skipped when it is not installed. The losses of both are
printed as a check that the two compute the same thing.

The training-throughput half (a real solver on Fashion-MNIST from
``configs/lenet_fashion_mnist.yaml``) belongs in :func:`bench_training_throughput`.
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
            {"name": "data", "type": "Input", "top": ["data", "label"],
             "input_param": {"shape": [{"dim": [batch, 1, 28, 28]}, {"dim": [batch]}]}},
            {"name": "conv1", "type": "Convolution", "bottom": "data", "top": "conv1",
             "convolution_param": {"num_output": 20, "kernel_size": 5, "stride": 1,
                                   "weight_filler": xavier, "bias_filler": constant}},
            {"name": "pool1", "type": "Pooling", "bottom": "conv1", "top": "pool1",
             "pooling_param": {"pool": "MAX", "kernel_size": 2, "stride": 2}},
            {"name": "conv2", "type": "Convolution", "bottom": "pool1", "top": "conv2",
             "convolution_param": {"num_output": 50, "kernel_size": 5, "stride": 1,
                                   "weight_filler": xavier, "bias_filler": constant}},
            {"name": "pool2", "type": "Pooling", "bottom": "conv2", "top": "pool2",
             "pooling_param": {"pool": "MAX", "kernel_size": 2, "stride": 2}},
            {"name": "ip1", "type": "InnerProduct", "bottom": "pool2", "top": "ip1",
             "inner_product_param": {"num_output": 500, "weight_filler": xavier, "bias_filler": constant}},
            {"name": "relu1", "type": "ReLU", "bottom": "ip1", "top": "ip1"},
            {"name": "ip2", "type": "InnerProduct", "bottom": "ip1", "top": "ip2",
             "inner_product_param": {"num_output": 10, "weight_filler": xavier, "bias_filler": constant}},
            {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["ip2", "label"], "top": "loss"},
        ],
    }


def fixed_batch(batch, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.random((batch, 1, 28, 28), dtype=np.float32)
    labels = rng.integers(0, 10, batch).astype(np.float32)
    return images, labels


def best_times(steps, repeats, iters):
    """Best mean seconds per call of each of ``steps`` over ``repeats`` rounds of ``iters``
    calls. The steps take turns within each round, so that both see the same machine load (a
    shared VM's speed drifts by 10-30% over seconds)."""
    for step in steps:
        for _ in range(3):
            step()
    best = [float("inf")] * len(steps)
    for _ in range(repeats):
        for k, step in enumerate(steps):
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
def build_torch(net, batch, threads):
    """The same LeNet in PyTorch with netlayers' weights, or None without torch."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
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
    images, labels = fixed_batch(batch)
    x = torch.from_numpy(images)
    y = torch.from_numpy(labels.astype(np.int64))

    def step():
        model.zero_grad(set_to_none=False)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss.detach()

    return step


# -- the training-throughput half (to be written) ------------------------------------------
def bench_training_throughput(args):
    """EXTENSION POINT (another engineer): training throughput (images/s) of LeNet on
    Fashion-MNIST with configs/lenet_fashion_mnist.yaml and the netlayers Solver, side by side
    with PyTorch. Called with ``--throughput``; returns a dict of results, or None while not
    written."""
    print("training throughput: not written yet (see bench_training_throughput)")
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    parser.add_argument("--throughput", action="store_true", help="also run the training throughput")
    args = parser.parse_args(argv)

    net = build_netlayers(args.batch)
    torch_step = None if args.no_torch else build_torch(net, args.batch, args.threads)
    print(f"LeNet forward+backward, batch {args.batch}x1x28x28 float32, {args.threads} threads, "
          f"best of {args.repeats} x {args.iters} steps")
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
