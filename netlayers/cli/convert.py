"""``netlayers convert net.prototxt [--solver solver.prototxt] [-o net.yaml]``: a Caffe net (and
its solver) as a netlayers YAML config.

netlayers reads prototxt files directly (``Net("net.prototxt")``, ``train --solver``); convert
when you want to keep editing the net as YAML. Legacy V1 nets come out upgraded. Without ``-o``
the YAML goes to standard output.
"""

import sys
from pathlib import Path

from ..errors import ConfigError

HELP = "convert a Caffe net prototxt (and its solver) into a netlayers YAML config"


def add_arguments(parser):
    parser.add_argument("net", help="Caffe net definition (.prototxt)")
    parser.add_argument("--solver", help="Caffe solver definition (.prototxt) to add as 'solver:'")
    parser.add_argument("-o", "--output", help="YAML file to write (default: standard output)")


def run(args):
    from ..caffe.prototxt import convert_prototxt

    text = convert_prototxt(args.net, solver_path=args.solver)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        Path(args.output).write_text(text, encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot write: {err.strerror or err}", file=args.output) from None
    return 0
