"""Tests of BatchSampler (Caffe's cycling cursor, per-epoch shuffles) and Prefetcher."""

import gc
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from netlayers.data import BatchSampler, Prefetcher

ROOT = Path(__file__).resolve().parents[2]


def take(sampler, k):
    return [sampler.next().tolist() for _ in range(k)]


# -- BatchSampler ----------------------------------------------------------------------------


def test_sequential_batches_wrap_around():
    sampler = BatchSampler(5, 3, shuffle=False)
    assert take(sampler, 3) == [[0, 1, 2], [3, 4, 0], [1, 2, 3]]
    assert sampler.state() == {"epoch": 1, "position": 4}


def test_batch_larger_than_data_set_cycles():
    sampler = BatchSampler(3, 7)
    assert sampler.next().tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert sampler.state() == {"epoch": 2, "position": 1}
    assert sampler.next().tolist() == [1, 2, 0, 1, 2, 0, 1]


def test_exact_epoch_end_moves_to_next_epoch():
    sampler = BatchSampler(4, 2)
    take(sampler, 2)
    assert sampler.state() == {"epoch": 1, "position": 0}


def test_shuffle_uses_per_epoch_permutation():
    sampler = BatchSampler(10, 4, shuffle=True, seed=5)
    flat = np.concatenate([sampler.next() for _ in range(5)])  # 20 items = two epochs
    for epoch in (0, 1):
        expected = np.random.default_rng([5, epoch]).permutation(10)
        np.testing.assert_array_equal(flat[10 * epoch : 10 * (epoch + 1)], expected)
        assert sorted(flat[10 * epoch : 10 * (epoch + 1)]) == list(range(10))
    assert not np.array_equal(flat[:10], flat[10:])
    assert take(BatchSampler(10, 4, True, 5), 3) == take(BatchSampler(10, 4, True, 5), 3)
    assert take(BatchSampler(10, 4, True, 5), 3) != take(BatchSampler(10, 4, True, 6), 3)


def test_set_state_round_trip():
    original = BatchSampler(7, 3, shuffle=True, seed=1)
    take(original, 4)
    saved = original.state()
    following = take(original, 5)
    resumed = BatchSampler(7, 3, shuffle=True, seed=1)
    resumed.set_state(saved)
    assert resumed.state() == saved
    assert take(resumed, 5) == following


def test_bad_state_and_arguments():
    sampler = BatchSampler(5, 2)
    with pytest.raises(ValueError, match="does not fit a data set of 5 items"):
        sampler.set_state({"epoch": 0, "position": 5})
    with pytest.raises(ValueError, match="batch_size must be > 0"):
        BatchSampler(5, 0)
    with pytest.raises(ValueError, match="num_items must be > 0"):
        BatchSampler(0, 2)


# -- Prefetcher ------------------------------------------------------------------------------


def counter():
    """A produce() returning 0, 1, 2, ..."""
    state = {"n": 0}

    def produce():
        state["n"] += 1
        return state["n"] - 1

    return produce


def wait_until(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_prefetcher_keeps_order():
    with Prefetcher(counter(), depth=3) as prefetcher:
        assert [prefetcher.next() for _ in range(20)] == list(range(20))


def test_prefetcher_consumed_state_is_not_prefetched_state():
    sampler = BatchSampler(10, 3, shuffle=True, seed=2)
    reference = take(BatchSampler(10, 3, shuffle=True, seed=2), 6)
    prefetcher = Prefetcher(sampler.next, depth=3, state=sampler.state)
    assert prefetcher.consumed_state == {"epoch": 0, "position": 0}
    got = [prefetcher.next().tolist() for _ in range(2)]
    wait_until(prefetcher._queue.full)  # the worker is 3 batches ahead
    ahead = sampler.state()
    assert ahead["epoch"] * 10 + ahead["position"] >= 15  # 5 batches drawn, 2 consumed
    assert prefetcher.consumed_state == {"epoch": 0, "position": 6}
    batch, state = prefetcher.next_with_state()
    assert state == prefetcher.consumed_state == {"epoch": 0, "position": 9}
    prefetcher.close()
    assert got + [batch.tolist()] == reference[:3]

    resumed = BatchSampler(10, 3, shuffle=True, seed=2)
    resumed.set_state({"epoch": 0, "position": 6})
    with Prefetcher(resumed.next, state=resumed.state) as again:
        assert [again.next().tolist() for _ in range(3)] == reference[2:5]


def test_prefetcher_reraises_producer_exception():
    calls = counter()

    def produce():
        n = calls()
        if n == 2:
            raise KeyError("bad item 2")
        return n

    prefetcher = Prefetcher(produce)
    assert [prefetcher.next(), prefetcher.next()] == [0, 1]
    with pytest.raises(KeyError, match="bad item 2"):
        prefetcher.next()
    with pytest.raises(KeyError, match="bad item 2"):
        prefetcher.next()
    prefetcher.close()


def test_prefetcher_stop_iteration_ends_stream():
    items = iter(range(5))
    with Prefetcher(lambda: next(items)) as prefetcher:
        assert list(prefetcher) == [0, 1, 2, 3, 4]


def test_close_stops_a_blocked_worker():
    prefetcher = Prefetcher(counter(), depth=2)
    wait_until(prefetcher._queue.full)
    start = time.monotonic()
    prefetcher.close()
    assert time.monotonic() - start < 1.0
    assert not prefetcher._thread.is_alive()
    prefetcher.close()  # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        prefetcher.next()


def context_switches(thread):
    """How many times ``thread`` gave up the CPU of its own accord (Linux's count)."""
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("voluntary_ctxt_switches")))


def test_a_worker_ahead_of_its_consumer_sleeps_until_a_batch_is_taken():
    """A full queue blocks the worker without waking it (a poll every 50 ms woke it 10 times
    in half a second: the 175 left by the test suite kept a core a fifth busy). It reads
    Linux's per-thread counts in /proc, as the project's machines and CI have."""
    prefetcher = Prefetcher(counter(), depth=2)
    wait_until(prefetcher._queue.full)
    time.sleep(0.05)
    before = context_switches(prefetcher._thread)
    time.sleep(0.5)
    assert context_switches(prefetcher._thread) - before <= 1
    assert [prefetcher.next() for _ in range(5)] == list(range(5))
    prefetcher.close()
    assert not prefetcher._thread.is_alive()


def test_close_does_not_wait_for_a_slow_producer():
    release = threading.Event()
    prefetcher = Prefetcher(lambda: release.wait(10))
    start = time.monotonic()
    prefetcher.close(timeout=0.1)
    assert time.monotonic() - start < 1.0
    release.set()
    prefetcher._thread.join(2)
    assert not prefetcher._thread.is_alive()


def test_garbage_collection_stops_the_worker():
    prefetcher = Prefetcher(counter())
    thread = prefetcher._thread
    del prefetcher
    gc.collect()
    thread.join(2)
    assert not thread.is_alive()


def test_interpreter_exits_with_open_prefetchers():
    script = (
        "import threading, time\n"
        "from netlayers.data import Prefetcher\n"
        "busy = Prefetcher(lambda: 1, depth=2)\n"
        "stuck = Prefetcher(lambda: threading.Event().wait())\n"
        "busy.next()\n"
        "print('done')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"
