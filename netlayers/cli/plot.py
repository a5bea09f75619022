"""``netlayers plot``: training curves from a run folder's metrics.jsonl."""

from pathlib import Path

from ..inspect.plotting import load_metrics, metrics_path, plot_metrics

HELP = "plot loss, test outputs and learning rate of a training run"


def add_arguments(parser):
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (or its metrics.jsonl)")
    parser.add_argument(
        "-o", "--output", metavar="FILE", help="picture to write: .png, .svg or .pdf (default RUN_DIR/curves.png)"
    )
    parser.add_argument("--title", help="title of the figure (default: the run folder's name)")


def run(args):
    path = metrics_path(args.run_dir)
    output = Path(args.output) if args.output else path.parent / "curves.png"
    metrics = load_metrics(path)
    plot_metrics(metrics, output, title=args.title)
    print(f"wrote {output} ({metrics.count('train')} train and {metrics.count('test')} test iterations from {path})")
    return 0
