"""``netlayers draw``: the net as a graph (layers as boxes, blobs with their shapes)."""

import sys

from ..errors import NetlayersError
from ..inspect.common import build_net, check_phase, load_spec
from ..inspect.graph import GraphvizMissing, graph_format, net_dot, write_graph
from ._netargs import add_net_arguments

HELP = "draw the net as a graph (.svg, .png, .pdf with Graphviz, or .dot text)"


def add_arguments(parser):
    add_net_arguments(parser)
    parser.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="net.svg, net.png, net.pdf (needs Graphviz) or net.dot"
    )
    parser.add_argument(
        "--rankdir",
        type=str.upper,
        choices=["LR", "TB", "RL", "BT"],
        default="LR",
        help="direction of the graph (default LR, as Caffe's draw_net.py)",
    )


def run(args):
    graph_format(args.output)
    spec = load_spec(args.config)
    phase = check_phase(args.phase)
    try:
        net = build_net(spec, phase, seed=args.seed, data_root=args.data_root)
        shapes = {name: blob.shape for name, blob in net.blobs.items()}
    except NetlayersError as err:
        print(f"netlayers draw: note: the net could not be built, so blob shapes are left out: {err}", file=sys.stderr)
        shapes = None
    text = net_dot(spec, phase, shapes=shapes, rankdir=args.rankdir)
    try:
        path = write_graph(text, args.output)
    except GraphvizMissing as err:
        print(f"netlayers draw: {err}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0
