"""Sizing BLAS and numba threads to the cores this process may really use."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from netlayers import threads
from netlayers.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def cgroup(tmp_path, own="0::/job.slice/run\n", files=None):
    """A fake /sys/fs/cgroup tree and /proc/self/cgroup: ``files`` maps paths under the root
    to their text."""
    root = tmp_path / "cgroup"
    root.mkdir(exist_ok=True)
    for relative, text in (files or {}).items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    proc = tmp_path / "proc_self_cgroup"
    proc.write_text(own)
    return {"cgroup_root": root, "proc_cgroup": proc}


def test_affinity_alone(tmp_path):
    assert threads.available_cores(affinity={0, 1, 2, 3}, **cgroup(tmp_path)) == 4
    assert threads.available_cores(affinity={5}, **cgroup(tmp_path)) == 1


def test_cgroup_v2_quota_limits_and_rounds_up(tmp_path):
    files = {"job.slice/run/cpu.max": "150000 100000\n", "cpu.max": "max 100000\n"}
    assert threads.available_cores(affinity=set(range(8)), **cgroup(tmp_path, files=files)) == 2


def test_the_smallest_quota_up_the_hierarchy_wins(tmp_path):
    files = {"job.slice/run/cpu.max": "max 100000\n", "job.slice/cpu.max": "50000 100000\n"}
    assert threads.available_cores(affinity=set(range(8)), **cgroup(tmp_path, files=files)) == 1


def test_cgroup_v1_quota(tmp_path):
    files = {"cpu/docker/abc/cpu.cfs_quota_us": "300000\n", "cpu/docker/abc/cpu.cfs_period_us": "100000\n"}
    own = "4:cpu,cpuacct:/docker/abc\n1:memory:/docker/abc\n"
    assert threads.available_cores(affinity=set(range(16)), **cgroup(tmp_path, own, files)) == 3


def test_no_quota_or_unreadable_files_leave_the_affinity(tmp_path):
    files = {"cpu.max": "max 100000\n", "job.slice/run/cpu.max": "garbage\n"}
    assert threads.available_cores(affinity={0, 1}, **cgroup(tmp_path, files=files)) == 2
    missing = {"cgroup_root": tmp_path / "none", "proc_cgroup": tmp_path / "none" / "cgroup"}
    assert threads.available_cores(affinity={0, 1, 2}, **missing) == 3


def test_quota_never_gives_zero(tmp_path):
    files = {"cpu.max": "1000 100000\n"}
    assert threads.available_cores(affinity={0, 1}, **cgroup(tmp_path, "0::/\n", files)) == 1


def test_requested_threads_from_option_or_environment():
    assert threads.requested_threads(3, {"NETLAYERS_THREADS": "5"}) == 3
    assert threads.requested_threads(None, {"NETLAYERS_THREADS": " 5 "}) == 5
    assert threads.requested_threads(None, {}) is None
    for bad in ("0", "-2", "two"):
        with pytest.raises(ConfigError, match="NETLAYERS_THREADS: expected a positive integer"):
            threads.requested_threads(None, {"NETLAYERS_THREADS": bad})


def blas_threads_after(args):
    """Run ``netlayers time`` on a small net in a child process and report the BLAS thread
    counts threadpoolctl sees afterwards, and numba's."""
    code = (
        "import json, sys, numba; from threadpoolctl import threadpool_info; "
        "from netlayers.cli.main import main; "
        "code = main(sys.argv[1:]); "
        "print(json.dumps([code, [p['num_threads'] for p in threadpool_info() "
        "if p['user_api'] == 'blas'], numba.get_num_threads()]))"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("NETLAYERS_THREADS", None)
    config = ROOT / "configs" / "examples" / "circuit.yaml"
    proc = subprocess.run(
        [sys.executable, "-c", code, "time", "--config", str(config), "--iterations", "1", "--warmup", "0", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_threads_option_limits_blas_and_numba():
    code, blas, numba_threads = blas_threads_after(["--threads", "1"])
    assert code == 0 and blas and set(blas) == {1} and numba_threads == 1
