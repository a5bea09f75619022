"""Options shared by the commands that build a net to look inside it (time, gradcheck, draw,
explain): ``--config``, ``--phase``, ``--data-root``, ``--seed``; and ``--threads`` (train, test,
time)."""

import argparse
import os

from ..threads import MAX_THREADS

INT64_MAX = 2**63 - 1  # as in configs: an integer must fit in 64 bits


def int_at_least(minimum, maximum=INT64_MAX):
    """An argparse type: an integer from ``minimum`` to ``maximum``, with a one-line error."""

    def convert(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        if value > maximum:
            shown = str(value) if len(str(value)) <= 30 else f"a number of {len(str(value))} digits"
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {shown}")
        return value

    return convert


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def positive_finite_float(text):
    """An argparse type: a number above 0 and finite (``nan``/``inf`` would make every check
    fail or pass), with a one-line error."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def file_name(text):
    """An argparse type for a file option: a name that is not empty."""
    if not text:
        raise argparse.ArgumentTypeError("expected a file name, got an empty one")
    return text


def existing_folders(text):
    """An argparse type for --data-root: folders (separated by os.pathsep) that exist and can
    be read (listed and entered)."""
    if not any(text.split(os.pathsep)):
        raise argparse.ArgumentTypeError("expected a folder, got an empty name")
    for folder in filter(None, text.split(os.pathsep)):
        try:
            os.listdir(folder)
        except NotADirectoryError:
            raise argparse.ArgumentTypeError(f"{folder} is not a folder") from None
        except FileNotFoundError:
            raise argparse.ArgumentTypeError(f"{folder} is not a folder (it does not exist)") from None
        except OSError as err:
            raise argparse.ArgumentTypeError(f"{folder}: cannot read this folder: {err.strerror or err}") from None
        if not os.access(folder, os.X_OK):
            raise argparse.ArgumentTypeError(f"{folder}: cannot read this folder: Permission denied")
    return text


def add_data_root(parser):
    parser.add_argument(
        "--data-root", type=existing_folders, metavar="DIR", help="where Data layers look for their data sets"
    )


def add_threads(parser):
    parser.add_argument(
        "--threads",
        type=int_at_least(1, MAX_THREADS),
        metavar="N",
        help="threads for BLAS and numba (default: $NETLAYERS_THREADS, else the cores this process may use)",
    )


def add_net_arguments(parser):
    parser.add_argument(
        "--config", required=True, metavar="FILE", help="the net's YAML file (a 'solver:' section in it is ignored)"
    )
    parser.add_argument(
        "--phase",
        type=str.upper,
        choices=["TRAIN", "TEST"],
        default="TRAIN",
        help="which phase's layers to build (default TRAIN)",
    )
    add_data_root(parser)
    parser.add_argument(
        "--seed",
        type=int_at_least(0),  # the inspection tools seed numpy directly: no negative seed
        metavar="N",
        help="seed for weights and random inputs (default: the config's random_seed, else 0)",
    )


def refuse_input_layers(net, command):
    """``train`` and ``test`` feed a net from its data layers only: an Input layer there would
    leave its blobs as they are (zeros), so it is a one-line error instead."""
    from ..errors import ConfigError

    for layer in net.layers:
        if layer.type == "Input":
            where = layer.spec.where
            raise ConfigError(
                f"an Input layer gets no data from `{command}`; use a Data or "
                "DummyData layer (or feed the net from Python)",
                file=where.file,
                line=where.line,
                layer=layer.name,
            )
