"""``train --config FILE`` (also ``netlayers train``): train a net from one YAML file.

The config holds the net (``layers:``) and a ``solver:`` section. Training logs Caffe's lines
on stderr (with a progress bar on a terminal), writes every displayed figure to
``<output>/metrics.jsonl`` and snapshots into ``<output>``. When training starts, the output
folder gets ``config.yaml`` (the config as the user wrote it) and ``run.json`` (the command
line, overrides, seed in effect, versions; see :func:`run_record`).

On Ctrl-C or SIGTERM it finishes the iteration, snapshots, prints the command that resumes the
same run (same overrides) and exits with 130. With ``--quiet`` nothing is logged but a summary
of one to three lines on stdout at the end (iterations, last test outputs, last snapshot).

Launched by ``mpirun -n K`` (K > 1), it trains one model on K data-parallel processes through
mpi4py (see netlayers/solvers/distributed.py): rank 0 alone logs and writes. An error every rank
meets alike (a config mistake, a non-finite loss) is reported once, by rank 0, and every rank
exits with 2. An error one rank meets alone (its Python layer raising, a file only it cannot
read) is its one line ``netlayers: error: rank R: ...``, and that rank then ends the whole job
with ``MPI_Abort`` so no rank waits forever in a collective; the snapshots written so far stay
as they are (each is written to a temporary file, then renamed). SIGINT or SIGTERM to the job
(mpirun passes SIGTERM on to the ranks) stops every rank after the same iteration; rank 0
snapshots once and all exit with 130.
"""

import json
import os
import platform
import shlex
import shutil
import signal
import sys
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from ..errors import ConfigError, NetlayersError, one_line
from ..solvers.reporting import Reporter, fmt
from ._netargs import add_data_root, add_threads, file_name, positive_int, refuse_input_layers
from .main import ignore_signals

HELP = "train a net from a YAML config (net + solver)"
RUN_FILE = "run.json"
EXIT_STOPPED = 130


def add_arguments(parser):
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", metavar="FILE", help="the YAML config (net and solver)")
    source.add_argument(
        "--solver",
        metavar="FILE",
        help="a Caffe solver prototxt (as `caffe train --solver`); its net files are found from the "
        "current folder, as Caffe finds them, else from the solver file's folder",
    )
    parser.add_argument(
        "--weights",
        type=file_name,
        metavar="FILE",
        help="start from trained weights (.npz or Caffe .caffemodel): fine-tuning",
    )
    parser.add_argument(
        "--resume", metavar="SNAPSHOT", help="resume from a snapshot (*.solverstate.npz, or the .weights.npz beside it)"
    )
    parser.add_argument("--max-iter", type=positive_int, metavar="N", help="override solver.max_iter")
    parser.add_argument("--seed", type=int, metavar="N", help="override the random seed")
    parser.add_argument(
        "--output", metavar="DIR", help="where snapshots and metrics.jsonl go (default: runs/<config name>)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier run's snapshots and metrics.jsonl in the output folder",
    )
    add_data_root(parser)
    add_threads(parser)
    parser.add_argument(
        "--quiet", action="store_true", help="no log lines or progress bar; only a short summary at the end"
    )


def run(args):
    from ..solvers import Solver

    if args.config is None:
        args.config = args.solver
    config = Path(args.config)
    if not config.is_file():
        raise ConfigError(f"{'solver' if args.solver else 'config'} file not found", file=str(config))
    if args.weights and args.resume:
        raise ConfigError("give --weights to fine-tune or --resume to continue, not both")
    output = Path(args.output) if args.output else Path("runs") / config.stem
    reporter = RunReporter(args, config, quiet=args.quiet)
    comm = mpi_communicator()
    if comm is None:
        return train(args, Solver, config, output, reporter, None)
    try:
        return train(args, Solver, config, output, reporter, comm)
    except BaseException as err:
        return end_distributed(comm, err, args)


def train(args, Solver, config, output, reporter, comm):
    """Build the solver (on every rank: one that fails stops them all), train, report; returns
    the exit code."""
    from ..solvers.distributed import on_every_rank

    is_root = comm is None or comm.Get_rank() == 0

    def build():
        solver = Solver(
            config,
            data_root=args.data_root,
            output_dir=output,
            seed=args.seed,
            max_iter=args.max_iter,
            reporter=reporter,
            overwrite=args.overwrite,
            comm=comm,
        )
        for net in (solver.net, *solver.test_nets):
            refuse_input_layers(net, "train")
        if args.weights:
            solver.net.load(args.weights)
        return solver

    with signals_deferred():
        solver = build() if comm is None else on_every_rank(comm, build)
    with stop_on_signals(solver, hold_output=comm is not None):
        solver.solve(resume=args.resume)
        if solver.stopped:
            if is_root:
                say(f"stopped at iteration {solver.iter}; resume with: {resume_command(args, solver.last_snapshot)}")
            return EXIT_STOPPED
    if args.quiet and is_root:
        for line in reporter.summary():
            print(line)
    return 0


def end_distributed(comm, err, args):
    """The end of a rank on which ``err`` was raised; returns the exit code when every rank
    raised it alike (rank 0 alone reports it, as a single process would), else reports it in one
    line naming the rank and ends the whole job with ``MPI_Abort``."""
    from ..solvers.distributed import raised_on_every_rank
    from .main import EXIT_ERROR, EXIT_INTERNAL_ERROR, EXIT_INTERRUPTED, wants_traceback

    rank = comm.Get_rank()
    if raised_on_every_rank(err):
        if rank == 0:
            raise err
        return EXIT_ERROR
    if wants_traceback(getattr(args, "argv", []), args):
        import traceback

        say("".join(traceback.format_exception(err)).rstrip("\n"))
    if isinstance(err, NetlayersError):
        code, line = EXIT_ERROR, f"netlayers: error: rank {rank}: {err}"
    elif isinstance(err, KeyboardInterrupt):
        code, line = EXIT_INTERRUPTED, f"netlayers: interrupted (rank {rank})"
    elif isinstance(err, MemoryError):
        code, line = EXIT_ERROR, f"netlayers: error: rank {rank}: out of memory ({one_line(str(err))})"
    else:
        code = EXIT_INTERNAL_ERROR
        line = (
            "netlayers: internal error (a bug in netlayers; please report it with --traceback output): "
            f"rank {rank}: {type(err).__name__}: {one_line(str(err))}"
        )
    say(line)
    sys.stdout.flush()
    comm.Abort(code)
    return code  # not reached: MPI_Abort ends this process


def mpi_communicator():
    """MPI's world communicator when an MPI launcher started this process among others (see
    :func:`~netlayers.solvers.distributed.launched_ranks`), else None: one process, no mpi4py."""
    from ..solvers.distributed import launched_ranks, world_communicator

    return world_communicator() if launched_ranks(os.environ) > 1 else None


@contextmanager
def signals_deferred():
    """While the solver is built, SIGINT and SIGTERM are only noted, then acted on as one
    KeyboardInterrupt when the block ends (before training: nothing to snapshot yet). A
    KeyboardInterrupt raised at once could land in a finalizer run by the garbage collector,
    where Python reports and drops it: the Ctrl-C would be lost and training would start."""
    noted = []
    previous = {
        signum: signal.signal(signum, lambda signum, frame: noted.append(signum))
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if noted:
        raise KeyboardInterrupt


@contextmanager
def stop_on_signals(solver, hold_output=False):
    """While training, SIGINT (Ctrl-C) and SIGTERM ask ``solver`` to stop after the current
    iteration; it then writes a snapshot and returns. A second signal before the iteration ends
    stops at once; once the solver has stopped (it is writing its stop snapshot and returning)
    or training has ended, signals are ignored, so finishing is never interrupted into a
    traceback. The previous handlers are restored afterwards.

    ``hold_output`` (under mpirun): from the signal on, what this process writes on stderr is
    kept in a temporary file and written out when the block ends. mpirun stops reading the
    ranks' output while it ends the job (it sends SIGTERM, then SIGKILL a second later), so
    a rank logging every iteration would otherwise block on a full pipe before its snapshot."""
    requested = []
    held = []

    def on_signal(signum, frame):
        if solver.stopped or solver.status in ("stopped", "done", "failed"):
            return
        if requested:
            raise KeyboardInterrupt
        requested.append(signum)
        if hold_output:
            held.append(hold_stderr())
        solver.request_stop()

    previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        if requested:  # the program is finishing: more signals stay ignored
            ignore_signals(*previous)
        else:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        for saved in held:
            release_stderr(*saved)


def hold_stderr():
    """Point file descriptor 2 at a new temporary file; returns (the former stderr's
    descriptor, the file) for :func:`release_stderr`. A write blocked on stderr, interrupted
    by the signal, goes on into the file."""
    import tempfile

    saved, holder = os.dup(2), tempfile.TemporaryFile()
    os.dup2(holder.fileno(), 2)
    return saved, holder


def release_stderr(saved, holder):
    """Point stderr back at descriptor ``saved`` and write out what ``holder`` kept, as much
    as the stream takes without waiting (a pipe mpirun no longer reads takes nothing: those
    lines are lost, the snapshot is not)."""
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os.dup2(saved, 2)
    os.close(saved)
    holder.seek(0)
    kept = holder.read()
    holder.close()
    blocking = os.get_blocking(2)
    os.set_blocking(2, False)
    try:
        while kept:
            kept = kept[os.write(2, kept) :]
    except OSError:
        pass
    finally:
        os.set_blocking(2, blocking)


def resume_command(args, state):
    """The command that continues this run from ``state``: the same config and overrides
    (output, max_iter, seed, data root, threads, quiet), each word shell-quoted."""
    words = ["train", "--solver" if getattr(args, "solver", None) else "--config", args.config]
    for flag, value in (
        ("--output", args.output),
        ("--max-iter", args.max_iter),
        ("--seed", args.seed),
        ("--data-root", args.data_root),
        ("--threads", getattr(args, "threads", None)),
    ):
        if value is not None:
            words += [flag, str(value)]
    if args.quiet:
        words.append("--quiet")
    return shlex.join([*words, "--resume", str(state)])


def say(text):
    """A line on stderr; nothing when stderr cannot be written (its reader is gone)."""
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


class RunReporter(Reporter):
    """The default reporter, which also keeps the run folder's record (``config.yaml``, a copy
    of the config, and ``run.json``) and the last figures for the ``--quiet`` summary.

    The record is written when training starts, after the solver has checked the output folder
    (and restored a snapshot), so a run refused there changes nothing in the folder."""

    def __init__(self, args, config, **options):
        super().__init__(**options)
        self.args = args
        self.config = Path(config)
        self.last_test = None
        self.last_train = None

    def on_start(self, solver):
        output = Path(solver.output_dir)
        if not (output / "config.yaml").exists() or self.args.resume is None:
            copy_config(self.config, output / "config.yaml")
        write_run_record(output / RUN_FILE, self.args, solver)
        super().on_start(solver)

    def on_train(self, iteration, loss, smoothed_loss, lr, outputs, iters_per_sec):
        self.last_train = (iteration, smoothed_loss)
        super().on_train(iteration, loss, smoothed_loss, lr, outputs, iters_per_sec)

    def on_test(self, iteration, results, net=0):
        if net == 0:
            self.last_test = (iteration, results)
        super().on_test(iteration, results, net)

    def summary(self):
        """One to three lines: the iterations done, the last test outputs (or training loss),
        and the last snapshot."""
        solver = self.solver
        lines = [f"Trained to iteration {solver.iter} of {solver.param.max_iter} into {solver.output_dir}"]
        if self.last_test is not None:
            iteration, results = self.last_test
            shown = ", ".join(f"{name} = {_figure(value)}" for name, value in results.items())
            lines.append(f"Test at iteration {iteration}: {shown}")
        elif self.last_train is not None:
            iteration, loss = self.last_train
            lines.append(f"Train loss at iteration {iteration}: {fmt(loss)}")
        state = solver.last_snapshot
        if state is None:
            lines.append("No snapshot written (solver.snapshot_after_train is false)")
        else:
            lines.append(f"Snapshot: {weights_beside(state)} (solver state: {state})")
        return lines


def _figure(value):
    import numpy as np

    array = np.asarray(value, dtype=np.float64).reshape(-1)
    return fmt(float(array[0])) if array.size == 1 else f"<{array.size} values, mean {fmt(array.mean())}>"


def weights_beside(state):
    """The weights file of a snapshot, from its solver state's path."""
    name = Path(state).name
    suffix = ".solverstate.npz"
    return Path(state).with_name(name[: -len(suffix)] + ".weights.npz") if name.endswith(suffix) else Path(state)


def copy_config(config, target):
    """Keep a copy of the config beside the snapshots; an OSError as a one-line error."""
    try:
        shutil.copyfile(config, target)
    except OSError as err:
        raise ConfigError(f"cannot copy the config to {target}: {err.strerror or err}") from None


def run_record(args, solver):
    """What this invocation of ``train`` ran with: its command line, the overrides given, the
    seed in effect (the one drawn when none was given), max_iter, the thread count and the
    versions of netlayers, numpy, numba and Python."""
    import numba
    import numpy

    import netlayers

    overrides = {
        key: getattr(args, key, None)
        for key in ("output", "max_iter", "seed", "data_root", "weights", "resume", "threads")
    }
    return {
        "command": shlex.join(["netlayers", *getattr(args, "argv", ["train"])]),
        "cwd": os.getcwd(),
        "config": args.config,
        "overrides": {key: value for key, value in overrides.items() if value is not None},
        "seed": solver.net.seed,
        "max_iter": solver.param.max_iter,
        "start_iteration": solver.iter,
        "threads": getattr(args, "thread_count", None),
        "versions": {
            "netlayers": netlayers.__version__,
            "numpy": numpy.__version__,
            "numba": numba.__version__,
            "python": platform.python_version(),
        },
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_run_record(path, args, solver):
    """Write ``run.json``: a fresh run's record; a resumed run keeps the record it continues
    and adds its own to the list ``resumed``. Written to a temporary file, then renamed."""
    from ..io import create_temporary

    record = run_record(args, solver)
    if args.resume is not None:
        earlier = _read_record(path)
        if earlier is not None:
            earlier.setdefault("resumed", []).append(record)
            record = earlier
    fd = tmp = None
    try:
        fd, tmp = create_temporary(path)
        with os.fdopen(fd, "w") as handle:
            fd = None
            json.dump(record, handle, indent=1)
            handle.write("\n")
        os.replace(tmp, path)
    except OSError as err:
        if fd is not None:
            os.close(fd)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise ConfigError(f"cannot write {path}: {err.strerror or err}") from None


def _read_record(path):
    """An earlier run.json as a dict, or None when there is none or it is not one."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None
