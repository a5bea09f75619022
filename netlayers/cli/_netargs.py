"""Options shared by the commands that build a net to look inside it (time, gradcheck, draw,
explain): ``--config``, ``--phase``, ``--data-root``, ``--seed``."""
import argparse


def int_at_least(minimum):
    """An argparse type: an integer no smaller than ``minimum``, with a one-line error."""
    def convert(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return convert


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def add_net_arguments(parser):
    parser.add_argument("--config", required=True, metavar="FILE",
                        help="the net's YAML file (a 'solver:' section in it is ignored)")
    parser.add_argument("--phase", type=str.upper, choices=["TRAIN", "TEST"], default="TRAIN",
                        help="which phase's layers to build (default TRAIN)")
    parser.add_argument("--data-root", metavar="DIR",
                        help="where Data layers look for their data sets")
    parser.add_argument("--seed", type=int, metavar="N",
                        help="seed for weights and random inputs (default: the config's "
                             "random_seed, else 0)")
