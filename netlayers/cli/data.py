"""``netlayers data fashion-mnist [--data-root DIR]``: find the data set the example configs
train on, or download it (checked against its published MD5 sums) where netlayers looks."""

from ..data.sources import USER_CACHE

HELP = "find or download a data set the example configs use (fashion-mnist)"

DATASETS = ("fashion-mnist",)


def add_arguments(parser):
    parser.add_argument("dataset", choices=DATASETS, help="the data set")
    parser.add_argument(
        "--data-root",
        metavar="DIR",
        help=f"search here first, and download into DIR/<dataset> (default {USER_CACHE}/<dataset>)",
    )


def run(args):
    from ..data.download import DownloadError, fetch_fashion_mnist

    try:
        fetch_fashion_mnist(args.data_root)
    except DownloadError as err:
        raise DownloadError(
            f"{err} (alternatively: apt-get install dataset-fashion-mnist, which puts the files "
            "in /usr/share/datasets/fashion-mnist)"
        ) from None
    return 0
