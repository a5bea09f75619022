"""Benchmark: what a fresh install's first iteration costs, with and without ``netlayers warmup``.

    python tools/bench_startup.py [--nets lenet,cifar10_quick,resnet] [--cache DIR] [--no-warmup]

numba compiles a kernel the first time it is called and keeps the machine code in its disk
cache; a fresh install has an empty cache. For each net of ``tools/bench_nets.py`` asked for,
in a fresh Python process with numba's cache in ``--cache`` (default: a new empty folder;
``NUMBA_CACHE_DIR``; the nets run one after another, so a later net finds the kernels an
earlier one compiled), this prints:

- *import*: ``import netlayers`` and numpy;
- *first step*: building the float32 TRAIN net and its first forward + backward, with the
  number of kernel signatures numba compiled (the rest it loaded from the cache);
- *next step*: the second forward + backward, for comparison.

It runs every net once on the empty cache ("cold": what a first iteration costs without the
warmup), then ``netlayers warmup`` into that cache (timed), then every net again ("warm": what
the README's install command leaves). With PyTorch installed, its import and first step of the
same net (built as ``bench_nets`` builds it) are printed beside. ``--no-warmup`` skips the
warmup and the warm pass (a quick look at the cold cost); ``--cache`` reuses a cache folder.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOOLS = Path(__file__).resolve().parent

MEASURE = """
import json, sys, time
start = time.perf_counter()
import numpy as np
import netlayers
imported = time.perf_counter()
sys.path.insert(0, {tools!r})
import bench_nets
spec = bench_nets.NETS[{net!r}].spec()
begin = time.perf_counter()
net = bench_nets.new_net(spec)  # the inputs from the net itself: no other net built before the clock
net.forward(**bench_nets.fixed_inputs(net))
net.backward()
first = time.perf_counter()
bench_nets.netlayers_step(net)
second = time.perf_counter()
from netlayers.kernels import modules
import numba
compiled = sum(
    sum(value.stats.cache_misses.values())
    for module in modules()
    for value in vars(module).values()
    if isinstance(value, numba.core.registry.CPUDispatcher)
)
print(json.dumps({{"import": imported - start, "first": first - begin, "next": second - first, "compiled": compiled}}))
"""

MEASURE_TORCH = """
import json, sys, time
start = time.perf_counter()
import torch
imported = time.perf_counter()
sys.path.insert(0, {tools!r})
import bench_nets
import numpy as np
import netlayers
spec = bench_nets.NETS[{net!r}].spec()
inputs = bench_nets.fixed_inputs(spec)
params = bench_nets.netlayers_params_as_torch(netlayers.Net(spec, dtype=np.float32, seed=bench_nets.SEED))
begin = time.perf_counter()
step, _ = bench_nets.build_torch(spec, inputs, params)
step()
first = time.perf_counter()
step()
second = time.perf_counter()
print(json.dumps({{"import": imported - start, "first": first - begin, "next": second - first}}))
"""


def run_python(code, cache):
    """Run ``code`` in a fresh Python with numba's cache in ``cache``; its last line, as JSON."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(net, cache):
    return run_python(MEASURE.format(tools=str(TOOLS), net=net), cache)


def measure_torch(net, cache):
    try:
        import torch  # noqa: F401
    except ImportError:
        return None
    return run_python(MEASURE_TORCH.format(tools=str(TOOLS), net=net), cache)


def warmup(cache):
    """``netlayers warmup`` into ``cache``; its wall-clock seconds."""
    start = time.perf_counter()
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    done = subprocess.run([sys.executable, "-m", "netlayers", "warmup"], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return time.perf_counter() - start


def line(net, label, result):
    return (
        f"{net:14s} {label:9s} import {result['import']:5.2f} s  first step {result['first']:6.2f} s"
        f"  next step {result['next'] * 1000:7.1f} ms"
        + (f"  ({result['compiled']} kernel signatures compiled)" if "compiled" in result else "")
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default="lenet,cifar10_quick,resnet", help="comma-separated nets of bench_nets")
    parser.add_argument("--cache", help="numba's cache folder (default: a new empty one)")
    parser.add_argument("--no-warmup", action="store_true", help="only the cold pass")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(TOOLS))
    import bench_nets

    nets = [name.strip() for name in args.nets.split(",") if name.strip()]
    unknown = [name for name in nets if name not in bench_nets.NETS]
    if unknown:
        parser.error(f"unknown net(s) {', '.join(unknown)}; choose from {', '.join(bench_nets.NETS)}")
    with tempfile.TemporaryDirectory(prefix="netlayers-numba-cache-") as empty:
        cache = Path(args.cache) if args.cache else Path(empty)
        print(f"numba cache: {cache}")
        for net in nets:
            print(line(net, "cold", measure(net, cache)), flush=True)
        if args.no_warmup:
            return 0
        print(f"netlayers warmup: {warmup(cache):.1f} s", flush=True)
        for net in nets:
            print(line(net, "warm", measure(net, cache)), flush=True)
            torch_result = measure_torch(net, cache)
            if torch_result is not None:
                print(line(net, "PyTorch", torch_result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
