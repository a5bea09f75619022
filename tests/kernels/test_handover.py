"""netlayers.kernels.handover: product jobs run by a worker spinning in compiled code, Python
tasks handed back, and the sleep/wake handshake. (The pool that uses them: tests/test_parallel.py.)"""

import threading

import numba
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
    claimed = np.zeros(2, np.int64)
    taken = h.serve(
        1, posted, finished, jobs, claimed, 1, 100, *parallel._product_calls(), spin.YIELD, np.zeros(1, np.int64), 0
    )
    assert taken == 2 and finished[1] == 1 and posted[1] == 1 and claimed[1] == 1
    np.testing.assert_allclose(out, a @ b, rtol=1e-5)


def test_serve_hands_a_python_task_back_without_taking_it():
    posted, finished, jobs = counts()
    jobs[1, h.KIND] = h.PYTHON_TASK
    posted[1] = 1
    calls = parallel._product_calls()
    assert (
        h.serve(
            1, posted, finished, jobs, np.zeros(2, np.int64), 1, 10**9, *calls, spin.YIELD, np.zeros(1, np.int64), 0
        )
        == 1
    )
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
    calls, claimed = parallel._product_calls(), np.zeros(2, np.int64)
    assert h.serve(1, posted, finished, jobs, claimed, 1, 10**12, *calls, spin.YIELD, waiting, 0) == 2
    np.testing.assert_allclose(out, a @ b, rtol=1e-5)


def test_serve_publishes_the_python_task_done_first_and_returns_to_wake_a_sleeping_caller():
    """The task number ``done`` lands in ``finished`` before anything else; with the caller
    asleep (``waiting``) the worker returns at once, to wake it from Python (10**12 rounds
    would not end); with the caller spinning it goes on waiting for its next job."""
    posted, finished, jobs = counts()
    posted[1] = 3
    calls, claimed = parallel._product_calls(), np.zeros(2, np.int64)
    waiting = np.zeros(1, np.int64)
    h.caller_sleeps(waiting)
    assert h.serve(1, posted, finished, jobs, claimed, 4, 10**12, *calls, spin.YIELD, waiting, 3) == 4
    assert finished[1] == 3
    waiting[0] = 0
    assert h.serve(1, posted, finished, jobs, claimed, 5, 10, *calls, spin.YIELD, waiting, 4) == 5
    assert finished[1] == 4
    assert h.serve(1, posted, finished, jobs, claimed, 5, 10, *calls, spin.YIELD, waiting, 2) == 5
    assert finished[1] == 4  # an older number never moves the count back


def test_a_job_its_worker_has_not_claimed_is_taken_back_by_the_caller_and_skipped_by_the_worker(rng):
    """The caller runs the part itself and counts it done; the worker, coming later, finds the
    claim gone and moves on to its next job without running it (nor counting it again)."""
    posted, finished, jobs = counts()
    state, claimed = np.zeros(2, np.int64), np.zeros(2, np.int64)
    calls = parallel._product_calls()
    a, b = rng.standard_normal((5, 6)).astype(np.float64), rng.standard_normal((6, 7)).astype(np.float64)
    out = np.full((5, 7), np.nan)
    row = product_row(a, b, out)
    h.hand_over(jobs, 1, row, posted, state)
    assert h.take_back(1, posted[1], row, claimed, finished, *calls)
    np.testing.assert_allclose(out, a @ b, rtol=1e-12)
    assert finished[1] == 1 and claimed[1] == 1
    assert not h.take_back(1, posted[1], row, claimed, finished, *calls)  # claimed once only
    out[...] = np.nan
    assert h.serve(1, posted, finished, jobs, claimed, 1, 10, *calls, spin.YIELD, np.zeros(1, np.int64), 0) == 2
    assert np.isnan(out).all() and finished[1] == 1  # not run again


@numba.njit(cache=False)
def compare_exchange(array, index, expected, new):
    return spin.compare_exchange(array, index, expected, new)


@numba.njit(cache=False, nogil=True)
def claim_race(count, wins):
    """Move ``count[0]`` through 1 .. len(wins) - 1 with another thread doing the same; mark
    in ``wins`` the steps this thread won."""
    for number in range(1, wins.size):
        while count[0] < number - 1:
            spin._relax()
        if spin.compare_exchange(count, 0, number - 1, number):
            wins[number] = 1


@pytest.mark.parametrize("claims", [[0, 1], [1, 1], [5, 6]])
def test_compare_exchange_moves_a_count_only_from_the_value_expected(claims):
    counts_ = np.array([claims[0], 7], np.int64)
    assert compare_exchange(counts_, 0, claims[0], claims[1])
    assert not compare_exchange(counts_, 0, claims[0] - 1, 99)
    assert counts_.tolist() == [claims[1], 7]


def test_two_threads_claiming_the_same_jobs_run_each_once():
    """Two threads race (in compiled code, without the GIL) to move one count through 1..200000:
    every step is won by exactly one of them."""
    count = np.zeros(1, np.int64)
    wins = [np.zeros(200001, np.int64) for _ in range(2)]
    threads = [threading.Thread(target=claim_race, args=(count, w)) for w in wins]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert ((wins[0] + wins[1])[1:] == 1).all() and count[0] == 200000


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
