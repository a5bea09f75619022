"""netlayers.kernels.handover: product jobs run by a worker spinning in compiled code, Python
tasks handed back, and the sleep/wake handshake. (The pool that uses them: tests/test_parallel.py.)"""

import threading

import numpy as np
import pytest

from netlayers import parallel
from netlayers.kernels import handover as h
from netlayers.kernels import spin


def product_row(a, b, out):
    """The job row of out = a @ b for C-contiguous a, b and out."""
    (m, k), n = a.shape, b.shape[1]
    row = np.zeros(h.FIELDS, np.int64)
    row[: h.A] = [h.PRODUCT, 0 if out.dtype == np.float32 else 1, 111, 111, m, n, k]
    row[h.A :] = [a.ctypes.data, k, b.ctypes.data, n, out.ctypes.data, n]
    return row


def counts(workers=2):
    return np.zeros(workers, np.int64), np.zeros(workers, np.int64), np.zeros((workers, h.FIELDS), np.int64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_serve_runs_the_product_jobs_posted_and_returns_its_next_job_number(rng, dtype):
    posted, finished, jobs = counts()
    state = np.zeros(2, np.int64)
    a, b = rng.standard_normal((7, 5)).astype(dtype), rng.standard_normal((5, 3)).astype(dtype)
    out = np.full((7, 3), np.nan, dtype)
    assert not h.hand_over(jobs, 1, product_row(a, b, out), posted, state)  # awake: no wake-up needed
    taken = h.serve(1, posted, finished, jobs, 1, 100, *parallel._product_calls(), spin.YIELD, np.zeros(1, np.int64))
    assert taken == 2 and finished[1] == 1 and posted[1] == 1
    np.testing.assert_allclose(out, a @ b, rtol=1e-5)


def test_serve_hands_a_python_task_back_without_taking_it():
    posted, finished, jobs = counts()
    jobs[1, h.KIND] = h.PYTHON_TASK
    posted[1] = 1
    calls = parallel._product_calls()
    assert h.serve(1, posted, finished, jobs, 1, 10**9, *calls, spin.YIELD, np.zeros(1, np.int64)) == 1
    assert finished[1] == 0


def test_a_worker_returns_right_after_a_product_when_the_caller_sleeps(rng):
    """``caller_sleeps`` raises the flag; a worker that then finishes a product returns at once
    (to wake the caller from Python) instead of spinning on: here 10**12 rounds would not end."""
    posted, finished, jobs = counts()
    state, waiting = np.zeros(2, np.int64), np.zeros(1, np.int64)
    a, b = rng.standard_normal((4, 4)).astype(np.float32), rng.standard_normal((4, 4)).astype(np.float32)
    out = np.empty((4, 4), np.float32)
    h.caller_sleeps(waiting)
    assert waiting[0] == 1
    h.hand_over(jobs, 1, product_row(a, b, out), posted, state)
    assert h.serve(1, posted, finished, jobs, 1, 10**12, *parallel._product_calls(), spin.YIELD, waiting) == 2
    np.testing.assert_allclose(out, a @ b, rtol=1e-5)


def test_the_sleep_handshake_sees_a_job_posted_before_it_and_wakes_for_one_after():
    posted, _, jobs = counts()
    state = np.zeros(2, np.int64)
    posted[1] = 1  # job 1 came before the worker looked
    assert not h.may_sleep(state, 1, posted, 1) and state[1] == h.AWAKE
    assert h.may_sleep(state, 1, posted, 2) and state[1] == h.ASLEEP  # nothing for job 2 yet
    row = np.zeros(h.FIELDS, np.int64)
    assert h.hand_over(jobs, 1, row, posted, state)  # the caller must wake it
    assert posted[1] == 2


@pytest.mark.parametrize("spin_seconds", [0.0, 0.002])
def test_products_and_python_tasks_mixed_through_the_pool_all_run_whether_workers_sleep_or_spin(
    rng, thread_count, monkeypatch, spin_seconds
):
    """With no spinning every product job finds its worker asleep (woken through its queue),
    with spinning it finds it spinning; interleaved with Python tasks, every result is right
    and nothing hangs (checked from a watchdog: a hang fails instead of stopping the suite)."""
    monkeypatch.setattr(parallel, "SPIN_SECONDS", spin_seconds)
    monkeypatch.setattr(parallel, "MATMUL_SPLIT_FLOPS", 0)
    thread_count(2)
    a = rng.standard_normal((64, 96)).astype(np.float32)
    b = rng.standard_normal((96, 48)).astype(np.float32)
    expected = a.astype(np.float64) @ b
    failures = []

    def body():
        try:
            for i in range(200):
                out = np.full((64, 48), np.nan, np.float32)
                parallel.matmul(a, b, out)
                np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
                if i % 3 == 0:
                    seen = []
                    parallel.run_parts(lambda worker, part, seen=seen: seen.append(part), 2)
                    assert sorted(seen) == [0, 1]
        except BaseException as exc:  # reported below
            failures.append(exc)

    worker = threading.Thread(target=body, daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "the hand-overs hung"
    assert not failures, failures[0]
