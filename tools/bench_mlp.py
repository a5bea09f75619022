"""Benchmark: the lecture's 2-layer sigmoid net, netlayers against the hand-written numpy loop.

Both run forward + backward + a plain SGD update (lr 1e-4) in float32 on the same data and
start weights, side by side in one process, alternating in rounds so that machine noise hits
both alike. Prints the median time per iteration of each, their ratio netlayers / numpy, and
the median of the per-round ratios (the steadier figure on a noisy machine).
Target: ratio <= 1.15.

    python tools/bench_mlp.py [--iterations 300] [--rounds 5]
"""

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from netlayers.solvers import Solver
from netlayers.solvers.reporting import Reporter

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "examples" / "seed_mlp.yaml"


def numpy_loop(x, y, w1, w2, iterations):
    """The lecture's loop, verbatim in spirit (float32 arrays)."""
    lr = np.float32(1e-4)
    for _ in range(iterations):  # exp overflows for saturated units, giving the right limit 0
        h = 1 / (1 + np.exp(-x.dot(w1)))
        y_pred = h.dot(w2)
        loss = np.square(y_pred - y).sum()
        grad_y_pred = 2.0 * (y_pred - y)
        grad_w2 = h.T.dot(grad_y_pred)
        grad_h = grad_y_pred.dot(w2.T)
        grad_w1 = x.T.dot(grad_h * h * (1 - h))
        w1 -= lr * grad_w1
        w2 -= lr * grad_w2
    return loss


@np.errstate(over="ignore")
def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    solver = Solver(CONFIG, reporter=Reporter(quiet=True, metrics=False))
    net = solver.net
    net.forward()
    x, y = net.blobs["x"].data.copy(), net.blobs["y"].data.copy()
    w1 = net.params["hidden"][0].data.T.copy()
    w2 = net.params["output"][0].data.T.copy()

    solver.step(5)  # warm-up: numba compiles / loads its cache
    numpy_loop(x, y, w1.copy(), w2.copy(), 5)

    ours, theirs = [], []
    for _ in range(args.rounds):
        start = time.perf_counter()
        solver.step(args.iterations)
        ours.append((time.perf_counter() - start) / args.iterations)
        a, b = w1.copy(), w2.copy()
        start = time.perf_counter()
        numpy_loop(x, y, a, b, args.iterations)
        theirs.append((time.perf_counter() - start) / args.iterations)
    ours_ms, theirs_ms = statistics.median(ours) * 1e3, statistics.median(theirs) * 1e3
    print(f"2-layer sigmoid net, N=64, 1000 -> 100 -> 10, float32, {args.rounds} rounds x {args.iterations} iterations")
    print(f"  numpy loop : {theirs_ms:.3f} ms / iteration")
    print(f"  netlayers  : {ours_ms:.3f} ms / iteration (Solver.step: forward, backward, SGD update)")
    round_ratio = statistics.median(a / b for a, b in zip(ours, theirs))
    print(
        f"  ratio netlayers / numpy = {ours_ms / theirs_ms:.2f} (median of the per-round ratios: "
        f"{round_ratio:.2f}; target <= 1.15)"
    )


if __name__ == "__main__":
    main()
