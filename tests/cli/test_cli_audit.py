"""Command-line arguments a hostile user may give: each is one line, exit code 2."""

import runpy
import sys
import types

import pytest

from netlayers.cli.main import main


def error_line(capsys):
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("netlayers: error: ")
    return lines[0]


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "--config", "x.yaml", "--threads", "9" * 20], "argument --threads: must be at most 4096"),
        (["train", "--config", "x.yaml", "--max-iter", str(2**63)], "argument --max-iter: must be at most"),
        (["test", "--config", "x.yaml", "--weights", "w.npz", "--iterations", "9" * 400], "a number of 400 digits"),
    ],
)
def test_numbers_beyond_what_the_program_can_use_are_refused(capsys, argv, expected):
    with pytest.raises(SystemExit) as info:  # argparse's exit, as for every bad option
        main(argv)
    assert info.value.code == 2
    assert expected in error_line(capsys)


@pytest.mark.parametrize("value", ["9" * 40, "5000"])
def test_a_thread_count_from_the_environment_beyond_the_c_int_is_one_line(capsys, monkeypatch, value):
    # 40 digits reached threadpoolctl's C call: an "internal error" (OverflowError), exit 70
    monkeypatch.setenv("NETLAYERS_THREADS", value)
    assert main(["schema", "-o", "-"]) == 2
    assert "NETLAYERS_THREADS: expected a positive integer (threads) of at most 4096" in error_line(capsys)


def test_ctrl_c_while_python_loads_the_command_line_is_one_line(monkeypatch, capsys):
    # `python -m netlayers` interrupted while importing netlayers.cli.main: a traceback before
    class Interrupted(types.ModuleType):
        def __getattr__(self, name):
            raise KeyboardInterrupt

    monkeypatch.setitem(sys.modules, "netlayers.cli.main", Interrupted("netlayers.cli.main"))
    with pytest.raises(SystemExit) as info:
        runpy.run_module("netlayers", run_name="__main__")
    assert info.value.code == 130
    assert capsys.readouterr().err == "netlayers: interrupted\n"


@pytest.mark.parametrize(
    "argv, words",
    [
        (
            ["train", "--config", "x.yaml", "--weights", ""],
            "argument --weights: expected a file name, got an empty one",
        ),
        (["test", "--config", "x.yaml", "--weights", ""], "argument --weights: expected a file name, got an empty one"),
        (
            ["train", "--config", "x.yaml", "--data-root", ""],
            "argument --data-root: expected a folder, got an empty name",
        ),
    ],
)
def test_an_empty_file_or_folder_option_is_an_error_not_ignored(argv, words, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1
