"""``netlayers test --config FILE --weights W``: score trained weights on the TEST phase.

Like ``caffe test``: runs the TEST net for N batches (default: the solver's test_iter, else 50)
and prints each output averaged over the batches.
"""

import sys
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ._netargs import add_data_root, add_threads, file_name, positive_int, refuse_input_layers

HELP = "score trained weights on the TEST phase of a config"


def add_arguments(parser):
    parser.add_argument("--config", required=True, metavar="FILE", help="the YAML config")
    parser.add_argument(
        "--weights", required=True, type=file_name, metavar="FILE", help=".npz weights or a .caffemodel"
    )
    parser.add_argument(
        "--iterations", type=positive_int, metavar="N", help="batches to run (default: solver.test_iter, else 50)"
    )
    parser.add_argument("--phase", type=str.upper, choices=["TRAIN", "TEST"], default="TEST")
    add_data_root(parser)
    add_threads(parser)


def net_source(config):
    """The net a config defines: its own layers, or the file its solver section names."""
    from ..netspec import load_config_file

    raw = load_config_file(config)
    solver = raw.get("solver") if isinstance(raw, dict) else None
    if isinstance(solver, dict) and solver.get("net") and "layers" not in raw:
        return Path(config).resolve().parent / solver["net"], solver
    return Path(config), solver if isinstance(solver, dict) else {}


def run(args):
    from ..net import Net

    config = Path(args.config)
    if not config.is_file():
        raise ConfigError("config file not found", file=str(config))
    source, solver = net_source(config)
    iterations = args.iterations
    if iterations is None:
        test_iter = solver.get("test_iter") or [50]
        iterations = int(test_iter[0] if isinstance(test_iter, list) else test_iter)
    # forward only, reading the outputs alone: inner blobs share memory (Net's share_memory)
    net = Net(source, args.phase, data_root=args.data_root, seed=0, share_memory=True, forward_only=True)
    refuse_input_layers(net, "netlayers test")
    net.load(args.weights)
    totals = {}
    for _ in range(iterations):
        outputs = net.forward()
        for name, value in outputs.items():
            totals[name] = totals.get(name, 0.0) + np.asarray(value, dtype=np.float64)
    print(f"Tested {args.weights} on {iterations} {args.phase} batches of {config}", file=sys.stderr)
    for name, total in totals.items():
        mean = total / iterations
        if mean.size == 1:
            print(f"{name} = {float(mean):.6g}")
        else:
            print(f"{name} = {np.array2string(mean.reshape(-1), precision=6)}")
    return 0
