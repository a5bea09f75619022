"""``train --config FILE`` (also ``netlayers train``): train a net from one YAML file.

The config holds the net (``layers:``) and a ``solver:`` section. Training logs Caffe's lines
on stderr (with a progress bar on a terminal), writes every displayed figure to
``<output>/metrics.jsonl``, snapshots into ``<output>`` and, on Ctrl-C or SIGTERM, finishes the
iteration, snapshots and stops (exit code 130; resume with ``--resume``).
"""
import shutil
import signal
import sys
from pathlib import Path

from ..errors import ConfigError
from ._netargs import add_data_root, positive_int, refuse_input_layers

HELP = "train a net from a YAML config (net + solver)"


def add_arguments(parser):
    parser.add_argument("--config", required=True, metavar="FILE", help="the YAML config (net and solver)")
    parser.add_argument("--weights", metavar="FILE",
                        help="start from trained weights (.npz or Caffe .caffemodel): fine-tuning")
    parser.add_argument("--resume", metavar="SNAPSHOT",
                        help="resume from a snapshot (*.solverstate.npz, or the .weights.npz beside it)")
    parser.add_argument("--max-iter", type=positive_int, metavar="N", help="override solver.max_iter")
    parser.add_argument("--seed", type=int, metavar="N", help="override the random seed")
    parser.add_argument("--output", metavar="DIR",
                        help="where snapshots and metrics.jsonl go (default: runs/<config name>)")
    add_data_root(parser)
    parser.add_argument("--quiet", action="store_true", help="no log lines or progress bar")


def run(args):
    from ..solvers import Solver
    from ..solvers.base import check_writable_folder
    from ..solvers.reporting import Reporter

    config = Path(args.config)
    if not config.is_file():
        raise ConfigError("config file not found", file=str(config))
    if args.weights and args.resume:
        raise ConfigError("give --weights to fine-tune or --resume to continue, not both")
    output = Path(args.output) if args.output else Path("runs") / config.stem
    solver = Solver(config, data_root=args.data_root, output_dir=output, seed=args.seed,
                    max_iter=args.max_iter, reporter=Reporter(quiet=args.quiet))
    for net in (solver.net, solver.test_net):
        if net is not None:
            refuse_input_layers(net, "train")
    check_writable_folder(output, "output folder")
    if not (output / "config.yaml").exists() or args.resume is None:
        copy_config(config, output / "config.yaml")
    if args.weights:
        solver.net.load(args.weights)

    previous = {}

    def stop(signum, frame):
        solver.request_stop()
        signal.signal(signum, previous[signum])   # a second signal stops at once

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, stop)
    try:
        solver.solve(resume=args.resume)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if solver.stopped:
        print(f"stopped at iteration {solver.iter}; resume with: train --config {config} "
              f"--resume {solver.last_snapshot}", file=sys.stderr)
        return 130
    return 0


def copy_config(config, target):
    """Keep a copy of the config beside the snapshots; an OSError as a one-line error."""
    try:
        shutil.copyfile(config, target)
    except OSError as err:
        raise ConfigError(f"cannot copy the config to {target}: {err.strerror or err}") from None
