"""``netlayers COMMAND ...``: dispatch to one module per subcommand.

Each subcommand module in this package defines ``HELP`` (one line), ``add_arguments(parser)``
and ``run(args) -> int`` (the exit code). ``main(argv)`` runs one command and turns what goes
wrong into one line on stderr and an exit code:

- a user's mistake (a NetlayersError): ``netlayers: error: ...``, exit 2;
- MemoryError: ``netlayers: error: out of memory ...``, exit 2;
- any other exception is a bug in netlayers: ``netlayers: internal error (...): <type>:
  <message>``, exit 70;
- Ctrl-C: ``netlayers: interrupted``, exit 130;
- a reader that closed its pipe (``netlayers explain ... | head``): exit 0, nothing more.

``--traceback`` (anywhere on the command line) or ``NETLAYERS_TRACEBACK=1`` prints the full
traceback instead of the one line, with its chained causes (a Python layer's own exception).
Each NetlayersWarning is shown once, as one line ``netlayers: warning: <message>``.

The console scripts ``netlayers`` and ``train`` are :func:`netlayers_program` and
:func:`train_program`: importing this module is cheap (numpy, numba and the net are imported
inside ``main``), so a Ctrl-C at any moment, even in the first half second, is the one line
above; once the command has returned, SIGINT is ignored, so the interpreter's exit (flushing
streams, ending threads) is never interrupted into a traceback (see :func:`ignore_signals`).
"""

import argparse
import importlib
import os
import signal
import sys
import traceback
import warnings

from ..errors import NetlayersError, NetlayersWarning, one_line

COMMANDS = [
    "train",
    "test",
    "predict",
    "export",
    "convert",
    "data",
    "time",
    "gradcheck",
    "draw",
    "explain",
    "plot",
    "schema",
    "warmup",
]


EXIT_ERROR = 2
EXIT_INTERNAL_ERROR = 70  # EX_SOFTWARE: a bug in netlayers
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
TRACEBACK_VARIABLE = "NETLAYERS_TRACEBACK"


def _load(name):
    return importlib.import_module(f"netlayers.cli.{name}")


class Parser(argparse.ArgumentParser):
    """argparse, with a mistake on the command line reported in one line as every other
    mistake is (``netlayers: error: train: argument --max-iter: ...``), exit code 2."""

    def error(self, message):
        command = self.prog.removeprefix("netlayers").strip()
        where = f"{command}: " if command else ""
        self.exit(EXIT_ERROR, f"netlayers: error: {where}{one_line(message)} (see {self.prog} --help)\n")


def build_parser(commands=None):
    parser = Parser(prog="netlayers", description="Caffe-style nets from YAML files.")
    add_traceback_flag(parser, default=False)
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
        add_traceback_flag(command, default=argparse.SUPPRESS)
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


def add_traceback_flag(parser, default):
    parser.add_argument(
        "--traceback",
        action="store_true",
        default=default,
        help=f"on an error, print the full traceback (also: {TRACEBACK_VARIABLE}=1)",
    )


def run_command(args):
    """Run a parsed command; returns its exit code (exceptions are left to ``main``)."""
    import numpy as np

    # Overflow and NaN are reported by the solver in one line (naming the iteration);
    # numpy's own RuntimeWarnings would only add noise before it.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return args.run(args) or 0


def main(argv=None):
    """Run one command line (default ``sys.argv[1:]``) in this process; returns the exit code.
    Errors, warnings and Ctrl-C are reported as the module docstring says."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = None
    try:
        with warnings.catch_warnings():
            show_netlayers_warnings()
            args = build_parser().parse_args(argv)
            args.argv = argv
            args.thread_count = configure_threads(args)
            return run_command(args)
    except Exception as err:
        return report_failure(err, wants_traceback(argv, args))
    except KeyboardInterrupt:
        say("netlayers: interrupted")
        return EXIT_INTERRUPTED


def train_main(argv=None):
    """``netlayers train ...`` in this process: the same as ``main(["train", *argv])``."""
    argv = sys.argv[1:] if argv is None else argv
    return main(["train", *argv])


def netlayers_program():
    """The ``netlayers`` console script (and ``python -m netlayers``)."""
    return program(sys.argv[1:])


def train_program():
    """The ``train`` console script: ``netlayers train`` under a shorter name."""
    return program(["train", *sys.argv[1:]])


def program(argv):
    """``main(argv)`` as a whole program: Ctrl-C is one line whenever it comes, and once the
    command has returned SIGINT is ignored and the standard streams are flushed (a stream whose
    reader is gone is pointed at os.devnull), so the interpreter's exit prints nothing more."""
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    code = EXIT_INTERRUPTED
    try:
        code = main(argv)
    except KeyboardInterrupt:  # a second Ctrl-C while the first was being reported
        pass
    finally:
        ignore_signals(signal.SIGINT)
        flush_standard_streams()
    return code


def ignore_signals(*signums):
    """Ignore these signals from now on (SIG_IGN, which the interpreter's exit keeps).

    A signal that reached the process in the instant before, while a Python handler was in
    place, is still pending inside the interpreter; CPython then finds SIG_IGN and reports
    "Exception ignored ... OSError: Signal 2 ignored due to race condition" on stderr. That
    report says only that the signal was ignored, as asked: it is kept off stderr."""
    if sys.unraisablehook is not quiet_ignored_signal_reports:
        quiet_ignored_signal_reports.previous = sys.unraisablehook
        sys.unraisablehook = quiet_ignored_signal_reports
    for signum in signums:
        signal.signal(signum, signal.SIG_IGN)


def quiet_ignored_signal_reports(unraisable):
    """``sys.unraisablehook`` that drops CPython's report of a pending signal found ignored
    (see :func:`ignore_signals`) and passes every other report on."""
    error = unraisable.exc_value
    if isinstance(error, OSError) and str(error).endswith("ignored due to race condition"):
        return
    quiet_ignored_signal_reports.previous(unraisable)


def wants_traceback(argv, args=None):
    """Whether to print full tracebacks: ``--traceback`` was given (also before the command
    line could be parsed) or ``$NETLAYERS_TRACEBACK`` is set to something else than 0."""
    given = getattr(args, "traceback", False) or "--traceback" in argv
    return bool(given) or os.environ.get(TRACEBACK_VARIABLE, "").strip() not in ("", "0")


def report_failure(err, show_traceback):
    """Tell the user what went wrong (see the module docstring); returns the exit code."""
    if isinstance(err, BrokenPipeError):  # e.g. `netlayers explain ... | head`
        flush_standard_streams()
        return 0
    if show_traceback:
        say("".join(traceback.format_exception(err)).rstrip("\n"))
    if isinstance(err, NetlayersError):
        if not show_traceback:
            say(f"netlayers: error: {err}")
        return EXIT_ERROR
    if isinstance(err, MemoryError):
        if not show_traceback:
            detail = f" ({one_line(str(err))})" if str(err) else ""
            say(
                f"netlayers: error: out of memory{detail}: the machine cannot hold what this "
                "needs (try a smaller batch_size or net)"
            )
        return EXIT_ERROR
    if not show_traceback:
        say(
            "netlayers: internal error (a bug in netlayers; please report it with --traceback "
            f"output): {type(err).__name__}: {one_line(str(err))}"
        )
    return EXIT_INTERNAL_ERROR


def show_netlayers_warnings():
    """Within ``warnings.catch_warnings()``: show each distinct NetlayersWarning once, as one
    line ``netlayers: warning: <message>`` on stderr; other warnings as Python shows them."""
    shown = set()
    python_show = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if not issubclass(category, NetlayersWarning):
            python_show(message, category, filename, lineno, file, line)
            return
        text = one_line(str(message))
        if text not in shown:
            shown.add(text)
            say(f"netlayers: warning: {text}")

    warnings.simplefilter("always", NetlayersWarning)
    warnings.showwarning = show


def configure_threads(args):
    """Size the BLAS and numba thread pools (``--threads``, $NETLAYERS_THREADS, else the cores
    this process may use; see netlayers/threads.py); returns the thread count."""
    from .. import threads

    return threads.configure_threads(threads.requested_threads(getattr(args, "threads", None)))


def say(text):
    """Print a line on stderr; a stderr that cannot be written (a closed pipe) is ignored."""
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def flush_standard_streams():
    """Flush stdout and stderr; one that fails (its reader is gone) is pointed at os.devnull,
    so that nothing fails again when the interpreter flushes it at exit."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            _point_at_devnull(stream)


def _point_at_devnull(stream):
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":
    sys.exit(netlayers_program())
