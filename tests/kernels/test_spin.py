"""The barrier of netlayers.kernels.spin: threads that each publish their step count after their
writes see each other's writes of that step once ``wait_all`` returns."""

import numba
import numpy as np
import pytest

from netlayers import parallel
from netlayers.kernels import spin


@numba.njit(nogil=True, cache=False)
def steps_with_a_barrier(worker, workers, values, counts, yield_address):
    """Each step every worker writes its value, meets the others, then reads all of them back:
    the number of values not yet there (should be 0)."""
    missing = 0
    for t in range(values.shape[0]):
        values[t, worker] = t * workers + worker + 1
        spin.publish(counts, worker, t + 1)
        spin.wait_all(counts, t + 1, yield_address)
        for other in range(workers):
            if values[t, other] != t * workers + other + 1:
                missing += 1
    return missing


@pytest.mark.parametrize("workers, yields", [(2, True), (2, False), (3, True)])
def test_after_the_barrier_every_thread_sees_every_write_of_the_step(thread_count, workers, yields):
    """(3 threads that never yield on this project's 2-core machines wait a time slice at
    each barrier: 12 s for 3000 steps, against under 1 s when they offer the core.)"""
    thread_count(workers)
    steps = 3000
    values = np.zeros((steps, workers), np.int64)
    counts = np.zeros(workers, np.int64)
    missing = np.zeros(workers, np.int64)
    address = spin.YIELD if yields else 0

    def part(worker, index):
        missing[index] = steps_with_a_barrier(index, workers, values, counts, address)

    parallel.run_parts(part, workers, workers)
    assert missing.tolist() == [0] * workers
    assert counts.tolist() == [steps] * workers
    if yields:
        assert spin.YIELD != 0  # libc's sched_yield was found (Linux)


def test_concurrent_workers_is_one_where_run_parts_runs_parts_one_by_one(thread_count, monkeypatch):
    thread_count(2)
    assert parallel.concurrent_workers() == 2
    monkeypatch.setattr(parallel._blas(), "libraries", [])  # no BLAS threadpoolctl can limit
    assert parallel.concurrent_workers() == 1
