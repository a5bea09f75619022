"""tools/bench_startup.py keeps working: on a cache that lacks some of a net's kernels numba
compiles them in the first step, and a second process with the same cache compiles none."""

import os
import re
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import bench_startup  # noqa: E402


def compiled(output):
    return [int(n) for n in re.findall(r"\((\d+) kernel signatures compiled\)", output)]


def test_a_second_first_step_loads_what_the_first_compiled(tmp_path, capsys):
    """The cache starts as a copy of the session's (which the warmup check filled first) without
    the element-wise kernels: the MLP's first step compiles its ReLU's, the second compiles
    nothing. (From an empty cache the MLP compiled 22 kernel signatures in 12.7 s.)"""
    cache = tmp_path / "cache"
    shutil.copytree(os.environ["NUMBA_CACHE_DIR"], cache)
    for path in cache.rglob("elementwise.*"):
        path.unlink()
    bench_startup.main(["--nets", "mlp", "--no-warmup", "--cache", str(cache)])
    first = capsys.readouterr().out
    bench_startup.main(["--nets", "mlp", "--no-warmup", "--cache", str(cache)])
    second = capsys.readouterr().out
    assert "mlp" in first and "first step" in first
    assert compiled(first)[0] > 0
    assert compiled(second) == [0]


def test_an_unknown_net_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as stop:
        bench_startup.main(["--nets", "lenet,nonet"])
    assert stop.value.code == 2
    assert "unknown net(s) nonet" in capsys.readouterr().err
