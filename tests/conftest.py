"""Fixtures shared by every test; the layer-contract harness is in ``layer_harness``."""

import numpy as np
import pytest


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
