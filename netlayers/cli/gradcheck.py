"""``netlayers gradcheck``: check every layer's gradients (or one layer's) on real values."""

import numpy as np

from ..inspect.common import build_net, find_layer, load_spec, random_inputs, resolve_seed
from ..inspect.layercheck import CHECKED, ERROR, check_net_layers, summary
from ._netargs import add_net_arguments, positive_finite_float, positive_int

HELP = "gradient-check each layer of a net against finite differences (float64)"


def add_arguments(parser):
    add_net_arguments(parser)
    parser.add_argument("--layer", metavar="NAME", help="check only this layer")
    parser.add_argument(
        "--threshold",
        type=positive_finite_float,
        default=1e-5,
        metavar="T",
        help="largest relative error accepted (default 1e-5)",
    )
    parser.add_argument(
        "--max-elements",
        type=positive_int,
        default=100,
        metavar="K",
        help="elements perturbed per blob, a random subset (default 100)",
    )
    parser.epilog = (
        "The net is built in float64 and run forward once; each layer is then "
        "checked on the bottoms it received. Exit code 1 when a layer fails."
    )


def run(args):
    spec = load_spec(args.config)
    seed = resolve_seed(spec, args.seed)
    net = build_net(spec, args.phase, seed=seed, data_root=args.data_root, dtype="float64")
    targets = [find_layer(net, args.layer)] if args.layer else None
    values = random_inputs(net, np.random.default_rng([seed, 1]))
    results = check_net_layers(
        net, layers=targets, values=values, seed=seed, threshold=args.threshold, max_elements=args.max_elements
    )
    for result in results:
        if result.status == CHECKED:
            print(result.report.table())
        elif result.status == ERROR:
            print(f"gradient check of {result.type} layer '{result.name}': FAILED with {result.error}")
        else:
            print(f"{result.type} layer '{result.name}': {result.status}")
        print()
    print(summary(results, args.threshold))
    return 1 if any(r.failed for r in results) else 0
