"""``netlayers explain``: every blob's value and gradient after one forward and backward."""

import sys

import numpy as np

from ..errors import ConfigError
from ..inspect.common import build_net, load_spec, random_inputs, resolve_seed, source_tops
from ..inspect.explain import explain_net, explain_spec
from ..inspect.graph import GraphvizMissing, graph_format, write_graph
from ._netargs import add_net_arguments, positive_int

HELP = "show each blob's value and gradient after one forward and backward pass"


def add_arguments(parser):
    add_net_arguments(parser)
    parser.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME=v1,v2,...",
        help="values for an input blob (repeatable; one value fills the blob)",
    )
    parser.add_argument(
        "-o", "--output", metavar="FILE", help="also draw the annotated graph (.svg, .png, .pdf or .dot)"
    )
    parser.add_argument(
        "--max-elements",
        type=positive_int,
        default=8,
        metavar="N",
        help="print blobs of up to N values in full, larger ones as statistics (default 8)",
    )
    parser.add_argument(
        "--rankdir",
        type=str.upper,
        choices=["LR", "TB", "RL", "BT"],
        default="LR",
        help="direction of the graph (default LR)",
    )
    parser.epilog = (
        "In-place layers get a blob of their own, named BLOB@LAYER. Inputs not "
        "given get random values (class indices for labels); a DummyData "
        "constant filler sets values in the config itself."
    )


def parse_inputs(texts, net):
    allowed = source_tops(net)
    given = {}
    for text in texts:
        name, sep, numbers = text.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(f"--input {text!r}: expected NAME=v1,v2,...")
        if name not in allowed:
            raise ConfigError(
                f"--input {text!r}: '{name}' is not an input blob; inputs: {', '.join(allowed) or 'none'}"
            )
        try:
            values = np.array([float(v) for v in numbers.split(",")], dtype=net.dtype)
        except ValueError:
            raise ConfigError(f"--input {text!r}: values must be numbers separated by commas") from None
        blob = net.blobs[name]
        if values.size not in (1, blob.count):
            raise ConfigError(
                f"--input {text!r}: {values.size} values for blob '{name}' of shape "
                f"{blob.shape}, which holds {blob.count}"
            )
        given[name] = values
    return given


def run(args):
    if args.output:
        graph_format(args.output)
    spec = load_spec(args.config)
    seed = resolve_seed(spec, args.seed)
    net = build_net(explain_spec(spec, args.phase), args.phase, seed=seed, data_root=args.data_root, dtype="float64")
    given = parse_inputs(args.input, net)
    values = {**random_inputs(net, np.random.default_rng([seed, 1]), given), **given}
    explanation = explain_net(net, values)
    print(explanation.table(args.max_elements))
    if args.output:
        try:
            path = write_graph(explanation.dot(args.max_elements, args.rankdir), args.output)
        except GraphvizMissing as err:
            print(f"netlayers explain: {err}", file=sys.stderr)
            return 1
        print(f"wrote {path}")
    return 0
