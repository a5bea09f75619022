"""Fixtures shared by every test; the layer-contract harness is in ``layer_harness``.

numba's disk cache: the whole session (and every process a test starts) uses one cache folder
of its own, empty at the start. tests/test_warmup.py's check runs first and fills it with
``netlayers warmup``, as an install does; later tests then load machine code instead of
compiling it. (Before, a fresh machine's suite compiled every kernel twice, once in the
warmup test's own folder and once in this process: on a fresh clone, 730 s against 509 s.)
"""

import atexit
import os
import shutil
import tempfile

SESSION_CACHE = tempfile.mkdtemp(prefix="netlayers-tests-numba-")
os.environ["NUMBA_CACHE_DIR"] = SESSION_CACHE  # before numba loads
atexit.register(shutil.rmtree, SESSION_CACHE, ignore_errors=True)  # 13 MiB a session otherwise left in /tmp

import numpy as np  # noqa: E402
import pytest  # noqa: E402

WARMUP_CHECK = "test_after_the_warmup_a_conv_net_compiles_nothing"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    """The warmup check first (it fills the session's cache); the rest in their order."""
    items.sort(key=lambda item: item.name != WARMUP_CHECK)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def thread_count():
    """``thread_count(n)`` runs netlayers' workers as ``n`` threads until the test ends."""
    from netlayers import parallel

    before = parallel.thread_count()
    yield parallel.set_thread_count
    parallel.set_thread_count(before)
