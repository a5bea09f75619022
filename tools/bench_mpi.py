"""Benchmark: data-parallel training over MPI, 2 ranks x 1 thread against 1 process x 2 threads.

For LeNet and the MLP (configs/*_fashion_mnist.yaml on a seeded synthetic 28x28 NPZ data set,
no tests, no snapshots), measures the same global batch 2B three ways:

- ``mpirun -n 2`` ranks of 1 thread, batch B each: images/s, and per iteration the wall time
  spent in the gradients' Allreduce (DataParallel.reduce_seconds) and the rest ("compute");
- 1 process of 2 threads, batch 2B: images/s;
- 1 process of 1 thread, batch B: the compute time of one machine's share, for the estimate;

and one separate 1-value Allreduce (what a stop flag of its own would cost; netlayers sends
the flag inside the gradients' last buffer instead). Then, from the measured compute time per
iteration at batch B and the gradient bytes, estimates the speed-up (images/s against one
machine, each machine keeping batch B, as Caffe's semantics do) on 4, 8 and 32 machines of a
ring allreduce, which takes 2 (K-1) steps, each sending bytes/K and paying one latency:

    T_allreduce(K) = 2 (K-1)/K * bytes / bandwidth + 2 (K-1) * latency
    speed-up(K)    = K * T_compute / (T_compute + T_allreduce(K))     (no overlap)

over 10 GbE (1.25 GB/s, 50 us a step: TCP) and 100 Gb/s (12.5 GB/s, 3 us a step: RDMA).

    python tools/bench_mpi.py [--iterations 200] [--batch 64]
(run as root, it sets OMPI_ALLOW_RUN_AS_ROOT for mpirun itself)
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"mlp": "mlp_fashion_mnist.yaml", "lenet": "lenet_fashion_mnist.yaml"}
LINKS = {"10 GbE": (1.25e9, 50e-6), "100 Gb/s": (12.5e9, 3e-6)}
MACHINES = (4, 8, 32)
WARMUP = 20


def write_data(path, items=2048):
    """A seeded NPZ data set of 28x28 uint8 pictures with labels 0-9."""
    rng = np.random.default_rng(0)
    np.savez(path, data=rng.integers(0, 256, (items, 1, 28, 28), dtype=np.uint8), label=rng.integers(0, 10, items))


def config_for(model, folder, batch):
    """The model's config on the synthetic data, batch ``batch``, training only."""
    config = yaml.safe_load((ROOT / "configs" / MODELS[model]).read_text())
    config.pop("labels_file", None)
    data = folder / "data.npz"
    if not data.exists():
        write_data(data)
    config["layers"] = [layer for layer in config["layers"] if layer.get("include", {}).get("phase") != "TEST"]
    config["layers"][0]["data_param"].update(source=str(data), backend="NPZ", batch_size=batch)
    config["layers"][0].pop("include")
    for key in ("test_iter", "test_interval"):
        config["solver"].pop(key, None)
    config["solver"].update(display=0, snapshot=0, snapshot_after_train=False)
    path = folder / f"{model}_{batch}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def measure(config, iterations, threads, comm=None):
    """Train ``config`` WARMUP + ``iterations`` iterations; returns the median seconds per
    iteration (and, distributed, the median in the gradients' Allreduce: waiting for the other
    rank included) and the gradient bytes. Medians: the machine is shared and noisy."""
    from netlayers.solvers import Solver
    from netlayers.threads import configure_threads

    configure_threads(threads)
    with tempfile.TemporaryDirectory() as output:
        solver = Solver(config, output_dir=output, reporter=object(), comm=comm)
        solver.step(WARMUP)
        parallel = solver.parallel
        times, reduces = [], []
        for _ in range(iterations):
            reduced = parallel.reduce_seconds
            started = time.perf_counter()
            solver.step(1)
            times.append(time.perf_counter() - started)
            if parallel.size > 1:
                reduces.append(parallel.reduce_seconds - reduced)
        params = solver.net.learnable_params
        result = {"iteration": float(np.median(times)), "bytes": sum(p.blob.data.nbytes for p in params)}
        if parallel.size > 1:
            result["allreduce"] = float(np.median(reduces))
            result["flag"] = flag_allreduce(comm)
        return result


def flag_allreduce(comm, groups=20, repeats=100):
    """Median seconds per Allreduce of one float64 (a stop flag sent on its own)."""
    from mpi4py import MPI

    flag, times = np.zeros(1), []
    for _ in range(groups):
        comm.Barrier()
        started = time.perf_counter()
        for _ in range(repeats):
            comm.Allreduce(MPI.IN_PLACE, flag, op=MPI.SUM)
        times.append((time.perf_counter() - started) / repeats)
    return float(np.median(times))


def worker(config, iterations):
    """Under mpirun: measure with the world communicator; rank 0 prints the figures as JSON
    (the slowest rank's time per iteration)."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    result = measure(config, iterations, threads=1, comm=comm)
    slowest = comm.allreduce(result["iteration"], op=MPI.MAX)  # of the medians
    if comm.Get_rank() == 0:
        print(json.dumps({**result, "iteration": slowest}))


def run_ranks(config, iterations):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", NETLAYERS_THREADS="1")
    command = ["mpirun", "-n", "2", "--oversubscribe", "--bind-to", "none", sys.executable, __file__]
    command += ["--worker", str(config), "--iterations", str(iterations)]
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout
    line = next(line for line in out.splitlines() if line.startswith("{"))
    return json.JSONDecoder().raw_decode(line)[0]  # (mpirun may add a terminal reset after it)


def estimate(compute, nbytes):
    """{link: {K: speed-up}} of the ring allreduce model in the module docstring."""
    table = {}
    for link, (bandwidth, latency) in LINKS.items():
        table[link] = {}
        for k in MACHINES:
            reduce = 2 * (k - 1) / k * nbytes / bandwidth + 2 * (k - 1) * latency
            table[link][k] = (k * compute / (compute + reduce), reduce)
    return table


def bench(model, batch, iterations, folder):
    ranks = run_ranks(config_for(model, folder, batch), iterations)
    two_threads = measure(config_for(model, folder, 2 * batch), iterations, threads=2)
    one_thread = measure(config_for(model, folder, batch), iterations, threads=1)
    images = 2 * batch
    print(f"\n{model}: global batch {images} ({ranks['bytes'] / 1e6:.2f} MB of float32 gradients)")
    print(
        f"  2 ranks x 1 thread  : {images / ranks['iteration']:8.0f} images/s, "
        f"{ranks['iteration'] * 1e3:6.2f} ms/iteration, of which Allreduce {ranks['allreduce'] * 1e3:.2f} ms "
        f"({100 * ranks['allreduce'] / ranks['iteration']:.0f} %)"
    )
    print(
        f"  1 process x 2 threads: {images / two_threads['iteration']:8.0f} images/s, "
        f"{two_threads['iteration'] * 1e3:6.2f} ms/iteration"
    )
    print(
        f"  1 process x 1 thread, batch {batch}: {one_thread['iteration'] * 1e3:.2f} ms/iteration "
        "(compute of one share)"
    )
    print(f"  a separate 1-value Allreduce (stop flag): {ranks['flag'] * 1e6:.1f} us")
    for link, rows in estimate(one_thread["iteration"], ranks["bytes"]).items():
        shown = ", ".join(
            f"{k}: {s:.1f}x ({100 * s / k:.0f} %, allreduce {r * 1e3:.2f} ms)" for k, (s, r) in rows.items()
        )
        print(f"  estimate over {link}: {shown}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64, help="per rank (the single process takes twice as many)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--worker", metavar="CONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.iterations)
    print(f"{os.cpu_count()} cores; {args.iterations} timed iterations after {WARMUP}")
    with tempfile.TemporaryDirectory() as folder:
        for model in args.models:
            bench(model, args.batch, args.iterations, Path(folder))


if __name__ == "__main__":
    main()
