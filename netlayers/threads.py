"""How many threads BLAS and numba may use: the cores this process can really run on.

OpenBLAS starts one thread per core of the machine and spins them while it waits; when those
cores are shared (a CPU quota, a pinned process, other busy processes) the spinning threads
slow training down many times over. So the command line sizes the thread pools once, at start:

- ``available_cores()``: the CPUs of the process's affinity mask (``os.sched_getaffinity``),
  further limited by a cgroup CPU quota (cgroup v2 ``cpu.max``, or v1 ``cpu.cfs_quota_us`` /
  ``cpu.cfs_period_us``), rounded up, at least 1;
- ``requested_threads(value)``: ``--threads N``, else the environment variable
  ``NETLAYERS_THREADS``, else None (then ``available_cores()`` is used);
- ``configure_threads(count)``: limits every BLAS/OpenMP pool numpy loaded (threadpoolctl),
  numba's pool and netlayers' own workers (``netlayers.parallel``) to ``count``.

Importing this module is cheap; numpy, numba and threadpoolctl are imported only by
``configure_threads``.
"""

import math
import os
import sys
from pathlib import Path

from .errors import ConfigError

ENVIRONMENT_VARIABLE = "NETLAYERS_THREADS"
MAX_THREADS = 4096  # BLAS libraries take a C int; far beyond any machine's cores
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")


def available_cores(*, affinity=None, cgroup_root=CGROUP_ROOT, proc_cgroup=PROC_SELF_CGROUP):
    """The number of cores this process may use: its affinity mask (``affinity``, a set of CPU
    numbers, defaults to the process's own) limited by the cgroup CPU quota, at least 1."""
    if affinity is None:
        affinity = _affinity()
    cores = len(affinity) if affinity else (os.cpu_count() or 1)
    quota = cgroup_cpu_quota(cgroup_root, proc_cgroup)
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def _affinity():
    try:
        return os.sched_getaffinity(0)
    except (AttributeError, OSError):  # not on Linux
        return None


def cgroup_cpu_quota(cgroup_root=CGROUP_ROOT, proc_cgroup=PROC_SELF_CGROUP):
    """The CPU quota of this process's cgroup and its ancestors, in cores (the smallest one
    found), or None when there is none or it cannot be read."""
    quotas = [q for q in map(_read_quota, _cgroup_folders(Path(cgroup_root), Path(proc_cgroup))) if q is not None]
    return min(quotas) if quotas else None


def _cgroup_folders(root, proc_cgroup):
    """The cgroup folders that may hold this process's quota: its own cgroup's folder and its
    ancestors up to ``root`` (v2), then the v1 cpu controller's folders."""
    relative = {}
    try:
        for line in proc_cgroup.read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers == "" or "cpu" in controllers.split(","):
                relative[controllers] = path.lstrip("/")
    except (OSError, ValueError):
        pass
    candidates = []
    for controllers, path in relative.items():
        base = root if controllers == "" else root / "cpu"
        folder = base / path
        while True:
            candidates.append(folder)
            if folder == base or base not in folder.parents:
                break
            folder = folder.parent
    candidates += [root, root / "cpu"]
    return list(dict.fromkeys(candidates))


def _read_quota(folder):
    """Cores allowed by ``folder``'s quota file (``cpu.max`` or v1's pair), or None."""
    try:
        fields = (folder / "cpu.max").read_text().split()
        if len(fields) == 2 and fields[0] != "max":
            return _ratio(fields[0], fields[1])
    except (OSError, ValueError):
        pass
    try:
        quota = (folder / "cpu.cfs_quota_us").read_text().strip()
        period = (folder / "cpu.cfs_period_us").read_text().strip()
        return _ratio(quota, period)
    except (OSError, ValueError):
        return None


def _ratio(quota, period):
    quota, period = int(quota), int(period)
    return quota / period if quota > 0 and period > 0 else None


def requested_threads(value=None, environ=None):
    """``value`` (from ``--threads``) or ``$NETLAYERS_THREADS`` as a positive integer, or None
    when neither is given. A bad environment value is a ConfigError."""
    if value is not None:
        return value
    environ = os.environ if environ is None else environ
    text = environ.get(ENVIRONMENT_VARIABLE, "").strip()
    if not text:
        return None
    try:
        count = int(text)
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_THREADS:
        shown = repr(text) if len(text) <= 30 else f"a value of {len(text)} characters"
        raise ConfigError(
            f"environment variable {ENVIRONMENT_VARIABLE}: expected a positive integer (threads) "
            f"of at most {MAX_THREADS}, got {shown}"
        )
    return count


def configure_threads(count=None):
    """Limit BLAS/OpenMP (through threadpoolctl) and numba to ``count`` threads (default:
    ``available_cores()``). Returns the count applied."""
    count = count or available_cores()
    import numpy  # noqa: F401  (loads the BLAS library threadpoolctl then finds)
    from threadpoolctl import threadpool_limits

    from . import parallel

    threadpool_limits(limits=count)
    _limit_numba(count)
    parallel.set_thread_count(count)
    return count


def _limit_numba(count):
    """numba's pool: before numba is imported, through its environment variable (no thread is
    started); afterwards with ``numba.set_num_threads`` (within numba's own maximum)."""
    numba = sys.modules.get("numba")
    if numba is None:
        os.environ["NUMBA_NUM_THREADS"] = str(count)
        return
    numba.set_num_threads(min(count, numba.config.NUMBA_NUM_THREADS))
