"""``netlayers time``: per-layer forward and backward times, like ``caffe time``."""

import numpy as np

from ..inspect.common import build_net, load_spec, random_inputs, resolve_seed
from ..inspect.timing import time_net
from ._netargs import add_net_arguments, add_threads, non_negative_int, positive_int

HELP = "time each layer's forward and backward pass (median over iterations)"


def add_arguments(parser):
    add_net_arguments(parser)
    parser.add_argument(
        "--iterations", type=positive_int, default=50, metavar="N", help="timed iterations (default 50)"
    )
    parser.add_argument(
        "--warmup", type=non_negative_int, default=5, metavar="W", help="untimed iterations first (default 5)"
    )
    add_threads(parser)
    parser.epilog = (
        "Input blobs get random values: N(0, 1), or random class indices for a "
        "blob a loss or Accuracy layer reads as its label."
    )


def run(args):
    spec = load_spec(args.config)
    seed = resolve_seed(spec, args.seed)
    net = build_net(spec, args.phase, seed=seed, data_root=args.data_root)
    values = random_inputs(net, np.random.default_rng([seed, 1]))
    report = time_net(net, args.iterations, args.warmup, values=values)
    print(report.table())
    return 0
