"""Benchmark: the matrix products under netlayers (numpy's BLAS) against PyTorch's (MKL), side
by side, on the shapes that hold the benchmark nets back.

    python tools/bench_gemm.py [--threads 2] [--rounds 3]

Each shape is timed as ``np.matmul(a, b, out=c)`` with numpy's BLAS limited to ``--threads``
threads (threadpoolctl) and as ``torch.mm`` with ``torch.set_num_threads``, float32, the two
alternating over ``--rounds`` rounds (median of 15 calls each, a 0.3 s pause between them so
that neither side's idle threads are still spinning). Printed: GFLOP/s of each and their ratio.
Without PyTorch, numpy's figures alone.

The shapes: the MLP's 2048-wide products (batch 256) in the forms InnerProduct uses, a square
2048 product (the GEMM floor's reference in ``bench_nets``), the product of cifar10_quick's conv2
as one im2col matrix of the whole batch (32 outputs: few rows, where BLAS packing dominates)
and a 64-channel 3x3 layer's.
"""

import argparse
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_limits

SHAPES = {
    "MLP forward, W (2048x2048) @ x^T (2048x256)": (2048, 2048, 256),
    "MLP forward, x (256x2048) @ W^T (2048x2048)": (256, 2048, 2048),
    "MLP weight gradient, dy^T (2048x256) @ x (256x2048)": (2048, 256, 2048),
    "square 2048": (2048, 2048, 2048),
    "cifar10_quick conv2 as one product, (32x800) @ (800x25600)": (32, 800, 25600),
    "64-channel 3x3 layer, (64x576) @ (576x16384)": (64, 576, 16384),
}


def median_seconds(fn, calls=15):
    fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def rates(shape, threads, rounds, torch, rng):
    """GFLOP/s of numpy's and (when given) PyTorch's product of ``shape`` (m, k, n), one figure
    a round each, the two alternating."""
    m, k, n = shape
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    c = np.empty((m, n), np.float32)
    gflop = 2 * m * k * n / 1e9
    if torch is not None:
        ta, tb, tc = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(c)
    ours, theirs = [], []
    for _ in range(rounds):
        with threadpool_limits(threads):
            ours.append(gflop / median_seconds(lambda: np.matmul(a, b, out=c)))
        time.sleep(0.3)
        if torch is not None:
            theirs.append(gflop / median_seconds(lambda: torch.mm(ta, tb, out=tc)))
            time.sleep(0.3)
    return ours, theirs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None
    rng = np.random.default_rng(0)
    print(f"float32, {args.threads} threads each, median of {args.rounds} rounds")
    for name, shape in SHAPES.items():
        ours, theirs = rates(shape, args.threads, args.rounds, torch, rng)
        line = f"{name:60s} numpy {statistics.median(ours):6.0f} GFLOP/s"
        if theirs:
            line += f"   PyTorch {statistics.median(theirs):6.0f} GFLOP/s"
            line += f"   numpy / PyTorch {statistics.median(ours) / statistics.median(theirs):.2f}"
        print(line)


if __name__ == "__main__":
    main()
