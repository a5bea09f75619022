"""Convert a Caffe net prototxt (and optionally its solver) into a netlayers YAML config.

Usage::

    python tools/caffe_to_yaml.py net.prototxt [--solver solver.prototxt] [-o net.yaml]

Without ``-o`` the YAML goes to standard output. Bad input prints one line naming the file
and line (no traceback) and exits with status 2.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from netlayers.caffe_compat import convert_prototxt  # noqa: E402
from netlayers.errors import NetlayersError  # noqa: E402

EXIT_BAD_INPUT = 2


def build_parser():
    """The command line's arguments."""
    parser = argparse.ArgumentParser(
        prog="caffe_to_yaml", description="Convert a Caffe net prototxt (and solver) into a netlayers YAML config."
    )
    parser.add_argument("net", help="Caffe net definition (.prototxt)")
    parser.add_argument("--solver", help="Caffe solver definition (.prototxt) to add as 'solver:'")
    parser.add_argument("-o", "--output", help="YAML file to write (default: standard output)")
    return parser


def main(argv=None):
    """Run the conversion; returns the process exit status."""
    args = build_parser().parse_args(argv)
    try:
        text = convert_prototxt(args.net, solver_path=args.solver)
    except NetlayersError as err:
        print(f"caffe_to_yaml: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        Path(args.output).write_text(text, encoding="utf-8")
    except OSError as err:
        print(f"caffe_to_yaml: error: {args.output}: cannot write: {err.strerror or err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
