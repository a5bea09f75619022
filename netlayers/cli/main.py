"""``netlayers COMMAND ...``: dispatch to one module per subcommand.

Each subcommand module in this package defines ``HELP`` (one line), ``add_arguments(parser)``
and ``run(args) -> int`` (the exit code). A user's mistake raises NetlayersError; it is printed
as one line ``netlayers: error: ...`` and the exit code is 2. Anything else is a bug and keeps
its traceback.
"""
import argparse
import importlib
import sys

import numpy as np

from ..errors import NetlayersError

COMMANDS = ["train", "test", "time", "gradcheck", "draw", "explain", "plot"]


def _load(name):
    return importlib.import_module(f"netlayers.cli.{name}")


def build_parser(commands=None):
    parser = argparse.ArgumentParser(prog="netlayers", description="Caffe-style nets from YAML files.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in commands or COMMANDS:
        try:
            module = _load(name)
        except ModuleNotFoundError as err:
            if err.name == f"netlayers.cli.{name}":
                continue
            raise
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


def run_command(args):
    try:
        # Overflow and NaN are reported by the solver in one line (naming the iteration);
        # numpy's own RuntimeWarnings would only add noise before it.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return args.run(args) or 0
    except NetlayersError as err:
        print(f"netlayers: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:          # e.g. `netlayers explain ... | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("netlayers: interrupted", file=sys.stderr)
        return 130


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_command(args)


def train_main(argv=None):
    """The ``train`` console script: the same as ``netlayers train``."""
    argv = sys.argv[1:] if argv is None else argv
    return main(["train", *argv])


if __name__ == "__main__":
    sys.exit(main())
