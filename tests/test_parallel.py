"""netlayers.parallel: parts shared over the workers, errors, the BLAS switch, split products,
scratch buffers. (Layers under several worker counts: tests/layers/test_convolution.py.)"""

import threading
import time

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from netlayers import parallel


def blas_threads():
    """Threads of numpy's BLAS (the library ``parallel`` switches; other BLAS libraries a test
    may load later, such as PyTorch's, are not numpy's)."""
    numpy_blas = {lib.filepath for lib in parallel._blas().libraries}
    return [info["num_threads"] for info in threadpool_info() if info["filepath"] in numpy_blas]


@pytest.mark.parametrize("workers", [1, 2, 3, 4])
@pytest.mark.parametrize("parts", [1, 2, 3, 7, 10])
def test_every_part_runs_once_each_worker_a_contiguous_run(thread_count, workers, parts):
    thread_count(workers)
    seen = []
    lock = threading.Lock()

    def record(worker, part):
        with lock:
            seen.append((worker, part, threading.get_ident()))

    parallel.run_parts(record, parts)
    assert sorted(part for _, part, _ in seen) == list(range(parts))
    used = min(workers, parts)
    for worker in range(used):
        mine = sorted(part for w, part, _ in seen if w == worker)
        assert mine == list(parallel.share(worker, used, parts)) and mine
        assert len({ident for w, _, ident in seen if w == worker}) == 1
    assert len({ident for _, _, ident in seen}) == used  # one thread a worker
    assert {w for w, _, _ in seen if w == 0} and threading.get_ident() in {i for w, _, i in seen if w == 0}


def test_a_waiting_thread_spins_until_the_counts_reach_their_targets_then_gives_up(thread_count, monkeypatch):
    """``spin_until`` is True at once for counts already there, True when another thread raises
    a count while it spins (without the GIL: that thread runs Python meanwhile), and False once
    ``SPIN_SECONDS`` have passed without (the waiting thread then blocks on its queue)."""
    import time

    thread_count(2)
    parallel.run_parts(lambda worker, part: None, 2)
    pool = parallel._state["pool"]
    counts, targets = np.array([0, 3, 5, 0]), np.array([9, 3, 5, 9])
    assert pool.spin_until(counts, 1, 3, targets)
    targets[2] = 6
    monkeypatch.setattr(parallel, "SPIN_SECONDS", 0.01)
    start = time.perf_counter()
    assert not pool.spin_until(counts, 1, 3, targets)
    assert time.perf_counter() - start >= 0.01
    monkeypatch.setattr(parallel, "SPIN_SECONDS", 5.0)

    def raise_count():
        counts[2] = 6  # runs only if the spinning thread lets go of the GIL

    later = threading.Timer(0.05, raise_count)
    later.start()
    start = time.perf_counter()
    assert pool.spin_until(counts, 1, 3, targets)
    assert time.perf_counter() - start < 2.0
    later.join()


def in_a_thread(body):
    """Run ``body`` in a thread of its own (affinity calls then change only that thread's) and
    return what it returns."""
    out = {}
    helper = threading.Thread(target=lambda: out.setdefault("value", body()))
    helper.start()
    helper.join()
    return out["value"]


@pytest.fixture
def pinning_on(monkeypatch):
    """Pinning allowed, and no pass of the test turns it off: the process's run-queue delays
    before the test (earlier tests' subprocesses) or during it must not decide what it sees."""
    monkeypatch.setattr(parallel.pinning, "unpinned_left", 0)
    monkeypatch.setattr(parallel, "CONTENDED_SHARE", float("inf"))


def test_a_worker_pins_itself_to_a_cpu_no_earlier_thread_of_the_run_is_on(thread_count, monkeypatch, pinning_on):
    """``take_own_cpu``: a worker on the CPU of the caller (or of an earlier worker) pins itself
    to another CPU the process may use and stays there; one on a free CPU pins itself there;
    a pinned one on a CPU of its own makes no call."""
    import os

    thread_count(2)
    parallel.run_parts(lambda worker, part: None, 2)
    pool = parallel._state["pool"]
    allowed = set(parallel.allowed_cpus())
    first = min(allowed)
    monkeypatch.setattr(parallel, "_current_cpu", lambda: first)  # where the worker finds itself
    calls = []
    set_affinity = os.sched_setaffinity
    monkeypatch.setattr(os, "sched_setaffinity", lambda pid, cpus: calls.append(set(cpus)) or set_affinity(pid, cpus))

    def body():
        pool.cpus[:2] = [first, -1]
        pool.take_own_cpu(1)
        shared = (pool.cpus[1], list(calls), os.sched_getaffinity(0))
        calls.clear()
        pool.take_own_cpu(1)  # pinned on a CPU of its own: nothing to do
        again = list(calls)
        pool.cpus[:2] = [first + 1, -1]
        pool.take_own_cpu(1)
        return shared, again, (pool.cpus[1], list(calls))

    shared, again, alone = in_a_thread(body)
    moved_to, moves, mask = shared
    if len(allowed) > 1:
        assert moved_to != first and moved_to in allowed
        assert moves == [{moved_to}] and mask == {moved_to}
        assert again == []
    else:
        assert moved_to == -1 and moves == []
    assert alone[0] == first and alone[1] in ([{first}], [])


def test_the_caller_is_pinned_from_its_first_hand_over_to_the_end_of_the_pass(thread_count, pinning_on):
    """In a pass (``single_threaded_blas``), the first ``run_parts`` pins the calling thread to
    its CPU until the outermost pass ends (nested passes and later hand-overs change nothing),
    which gives it its CPU set back; a pass without a hand-over pins nothing; ``free_cpus``
    lets a thread started meanwhile run anywhere again."""
    import os

    thread_count(2)
    nothing = lambda worker, part: None  # noqa: E731

    def body():
        before = os.sched_getaffinity(0)
        with parallel.single_threaded_blas:
            quiet = os.sched_getaffinity(0)
        with parallel.single_threaded_blas:
            parallel.run_parts(nothing, 2)
            during = os.sched_getaffinity(0)
            with parallel.single_threaded_blas:
                parallel.run_parts(nothing, 2)
                nested = os.sched_getaffinity(0)
            started = in_a_thread(lambda: (os.sched_getaffinity(0), parallel.free_cpus(), os.sched_getaffinity(0)))
        return before, quiet, during, nested, started, os.sched_getaffinity(0)

    before, quiet, during, nested, started, after = in_a_thread(body)
    assert after == before and quiet == before
    if len(parallel.allowed_cpus()) > 1:
        assert len(during) == 1 and nested == during
        assert started[0] == during and started[2] == set(parallel.allowed_cpus())
    else:
        assert during == before


def test_one_thread_pins_nothing(thread_count):
    import os

    thread_count(1)

    def body():
        with parallel.single_threaded_blas:
            parallel.run_parts(lambda worker, part: None, 2)
            return os.sched_getaffinity(0)

    assert in_a_thread(body) == set(parallel.allowed_cpus())


@pytest.mark.parametrize("spin", [0.0, 1.0])
def test_parts_run_whether_the_workers_spin_or_block(thread_count, monkeypatch, spin):
    """With no spinning (every hand-over wakes a blocked thread) and with long spinning (every
    hand-over finds the threads spinning), each part runs once, on as many threads as workers."""
    monkeypatch.setattr(parallel, "SPIN_SECONDS", spin)
    thread_count(2)
    for _ in range(20):
        seen = []
        parallel.run_parts(lambda worker, part, seen=seen: seen.append((worker, part, threading.get_ident())), 4)
        assert sorted(part for _, part, _ in seen) == [0, 1, 2, 3]
        assert len({ident for _, _, ident in seen}) == 2


def test_an_error_in_a_worker_reaches_the_caller_and_the_pool_goes_on(thread_count):
    thread_count(2)

    def fail_in_worker_1(worker, part):
        if worker == 1:
            raise ValueError(f"part {part} failed")

    with pytest.raises(ValueError, match="part 1 failed"):
        parallel.run_parts(fail_in_worker_1, 2)
    done = []
    parallel.run_parts(lambda worker, part: done.append(part), 4)
    assert sorted(done) == [0, 1, 2, 3]


def test_ctrl_c_while_the_caller_waits_is_raised_once_the_workers_have_stopped(thread_count):
    """An interrupt that comes while the caller waits for a worker (here in the spin, then in the
    blocking wait) is raised only after that worker has finished writing."""
    import signal
    import time

    thread_count(2)
    parallel.run_parts(lambda worker, part: None, 2)  # the pool is up before the interrupt comes
    finished = []

    def slow_worker(worker, part):
        if worker == 1:
            time.sleep(0.3)
            finished.append(part)

    interrupt = threading.Timer(0.1, signal.raise_signal, args=(signal.SIGINT,))
    interrupt.start()
    with pytest.raises(KeyboardInterrupt):
        parallel.run_parts(slow_worker, 2)
    interrupt.join()
    assert finished == [1]
    done = []
    parallel.run_parts(lambda worker, part: done.append(part), 2)
    assert sorted(done) == [0, 1]


def test_blas_runs_single_threaded_while_the_workers_may_run_and_is_restored_after(thread_count):
    """After a pass that handed work to the pool, the next runs single-threaded BLAS from its
    start; after one that handed nothing over, the next keeps BLAS's threads until its first
    hand-over. Each pass gives BLAS its thread count back at its end."""
    thread_count(2)
    nothing = lambda worker, part: None  # noqa: E731
    with parallel.single_threaded_blas:
        parallel.run_parts(nothing, 2)  # a pass that hands work over
    before = blas_threads()
    seen = []
    with parallel.single_threaded_blas:
        with parallel.single_threaded_blas:
            seen.append(blas_threads())
        seen.append(blas_threads())
        parallel.run_parts(nothing, 2)
        seen.append(blas_threads())
    assert before and all(counts == [1] * len(before) for counts in seen)
    assert blas_threads() == before
    with parallel.single_threaded_blas:
        pass  # hands nothing over
    with parallel.single_threaded_blas:
        kept = blas_threads()
        parallel.run_parts(nothing, 2)
        switched = blas_threads()
    assert kept == before and switched == [1] * len(before)
    assert blas_threads() == before
    with parallel.single_threaded_blas:  # the pass before handed work over again
        assert blas_threads() == [1] * len(before)


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("shape", [(300, 40, 500), (500, 40, 300), (3, 5, 4), (20, 3000, 30), (100, 1000, 64)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("out_order", ["C", "F"])
def test_split_products_equal_whole_ones(rng, thread_count, workers, shape, dtype, out_order, monkeypatch):
    """Cut along the rows, the columns or (20 x 3000 x 30, 100 x 1000 x 64) the inner
    dimension, into a row-major or a transposed ``out``: the product of one worker, to rounding."""
    thread_count(workers)
    monkeypatch.setattr(parallel, "MATMUL_SPLIT_FLOPS", 0)
    m, k, n = shape
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((n, k)).astype(dtype).T  # a transposed view, as the layers pass
    out = np.full((m, n), np.nan, dtype, order=out_order)
    for _ in range(2):  # the second time with the plan kept from the first
        out[...] = np.nan
        parallel.matmul(a, b, out)
        np.testing.assert_allclose(out, a.astype(np.float64) @ b.astype(np.float64), rtol=1e-4, atol=1e-4)
        a *= 2  # new values at the same addresses: the kept plan still reads them
    assert out.flags.c_contiguous == (out_order == "C")


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("shape", [(300, 40, 500), (20, 3000, 30), (100, 1000, 64)])
@pytest.mark.parametrize("out_order", ["C", "F"])
def test_split_products_add_into_out_with_add(rng, thread_count, workers, shape, out_order, monkeypatch):
    """``add=True``: out += a @ b, cut along the rows, the columns or the inner dimension (the
    caller's part added into out, the others' partials added after), whole below the cut."""
    thread_count(workers)
    m, k, n = shape
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((n, k)).astype(np.float32).T
    start = rng.standard_normal((m, n)).astype(np.float32)
    for threshold in (0, 1 << 40):  # cut, and whole
        monkeypatch.setattr(parallel, "MATMUL_SPLIT_FLOPS", threshold)
        out = np.array(start, order=out_order)
        for _ in range(2):  # the second time with the plan kept from the first
            parallel.matmul(a, b, out, add=True)
        expected = start.astype(np.float64) + 2 * (a.astype(np.float64) @ b.astype(np.float64))
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-3)
    monkeypatch.setattr(parallel, "MATMUL_SPLIT_FLOPS", 0)
    parallel.matmul(a, b, out)  # and the kept plan sets it again without add
    np.testing.assert_allclose(out, a.astype(np.float64) @ b.astype(np.float64), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("axis_shape", [(256, 64, 32), (32, 64, 256), (32, 4096, 32)])
def test_a_product_is_cut_along_the_axis_that_adds_least_work(rng, thread_count, monkeypatch, axis_shape):
    """Along the rows of out when it is tallest, its columns when widest, the inner dimension
    when that is longest and out small; parts at multiples of 16, covering the axis."""
    thread_count(2)
    m, k, n = axis_shape
    a, b = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32)
    rows, swapped, partial = parallel._plan_product(a, b, np.empty((m, n), np.float32))
    from netlayers.kernels import handover as h

    axis = {(256, 64, 32): h.M, (32, 64, 256): h.N, (32, 4096, 32): h.K}[axis_shape]
    assert not swapped and (partial is not None) == (axis == h.K)
    assert rows[:, axis].sum() == {h.M: m, h.N: n, h.K: k}[axis] and rows[0, axis] % 16 == 0
    assert all((rows[:, f] == rows[0, f]).all() for f in (h.M, h.N, h.K) if f != axis)


def test_thin_products_are_cut_from_fewer_flops(rng, thread_count, monkeypatch):
    """A product with a side under THIN_SIDE counts its FLOPs THIN_SIDE / side times: a
    classifier's 10 outputs over 32768 inputs (10.5 MFLOP) is cut, as is its weight gradient;
    a square product of the same FLOPs is not."""
    thread_count(2)
    cut = []
    monkeypatch.setattr(parallel, "_split_product", lambda a, b, out, add=False: cut.append(out.shape) or False)
    x, w = rng.standard_normal((16, 32768)).astype(np.float32), rng.standard_normal((10, 32768)).astype(np.float32)
    parallel.matmul(x, w.T, np.empty((16, 10), np.float32))  # 10.5 MFLOP, a side of 10
    parallel.matmul(np.ones((10, 16), np.float32), x, np.empty((10, 32768), np.float32))
    side = round((10.5e6 / 2) ** (1 / 3))
    square = np.ones((side, side), np.float32)
    parallel.matmul(square, square, np.empty((side, side), np.float32))  # 10.5 MFLOP, square
    assert cut == [(16, 10), (10, 32768)]


def test_products_that_cannot_be_cut_run_whole(rng, thread_count, monkeypatch):
    """out overlapping an operand, mixed dtypes, a layout BLAS cannot read (both strides
    above the item size), too short to cut: no plan, and the right product anyway."""
    thread_count(2)
    monkeypatch.setattr(parallel, "MATMUL_SPLIT_FLOPS", 0)
    a = rng.standard_normal((64, 64)).astype(np.float32)
    shared = rng.standard_normal((64, 128)).astype(np.float32)
    cases = [
        (a, shared[:, :64], shared[:, 64:]),  # out in the same buffer as b
        (a, a.astype(np.float64), np.empty((64, 64), np.float32)),
        (a[::2, ::2], a[::2, ::2].copy(), np.empty((32, 32), np.float32)),
        (a[:8, :8], a[:8, :8].copy(), np.empty((8, 8), np.float32)),
    ]
    for x, y, out in cases:
        expected = x.astype(np.float64) @ y.astype(np.float64)
        assert parallel._plan_product(x, y, out) is None
        parallel.matmul(x, y.astype(out.dtype) if x.dtype != y.dtype else y, out)
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_a_product_inside_run_parts_work_runs_whole_there(rng, thread_count, monkeypatch):
    """A part that calls matmul (in the caller or a worker) does not cut it over workers busy
    with the parts: it runs whole in that thread."""
    thread_count(2)
    monkeypatch.setattr(parallel, "MATMUL_SPLIT_FLOPS", 0)
    a, b = rng.standard_normal((256, 64)).astype(np.float32), rng.standard_normal((64, 256)).astype(np.float32)
    outs = [np.empty((256, 256), np.float32) for _ in range(2)]
    split = []
    monkeypatch.setattr(parallel, "_run_products", lambda *args: split.append(1))
    parallel.run_parts(lambda worker, part: parallel.matmul(a, b, outs[part]), 2)
    assert not split
    for out in outs:
        np.testing.assert_allclose(out, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("threshold", [0, 1 << 40])
def test_a_matrix_times_a_vector_runs_as_one_and_is_cut_by_outputs(rng, thread_count, workers, threshold, monkeypatch):
    """out of one row (x W^T: an InnerProduct of one item) or one column (W x^T) is numpy's
    matrix-vector product, never a cut product plan: whole, or from MATRIX_VECTOR_SPLIT_BYTES
    of matrix as slices of the outputs over the workers."""
    thread_count(workers)
    monkeypatch.setattr(parallel, "MATMUL_SPLIT_FLOPS", 0)
    monkeypatch.setattr(parallel, "MATRIX_VECTOR_SPLIT_BYTES", threshold)
    monkeypatch.setattr(parallel, "_split_product", lambda *args, **kwargs: pytest.fail("cut as a product"))
    lengths = []
    over_slices = parallel.over_slices
    monkeypatch.setattr(parallel, "over_slices", lambda fn, n, nbytes: lengths.append(n) or over_slices(fn, n, nbytes))
    w, x = rng.standard_normal((300, 200)).astype(np.float32), rng.standard_normal((1, 200)).astype(np.float32)
    row, column = np.full((1, 300), np.nan, np.float32), np.full((300, 1), np.nan, np.float32)
    parallel.matmul(x, w.T, row)
    parallel.matmul(w, x.T, column)
    expected = w.astype(np.float64) @ x[0].astype(np.float64)
    np.testing.assert_allclose(row[0], expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(column[:, 0], expected, rtol=1e-4, atol=1e-4)
    assert lengths == ([300, 300] if threshold == 0 else [])


def test_scratch_is_reused_grown_and_kept_per_worker():
    first = parallel.scratch(0, "test", 10, np.float32)
    again = parallel.scratch(0, "test", 6, np.float32)
    assert np.shares_memory(first, again) and again.shape == (6,)
    other = parallel.scratch(1, "test", 10, np.float32)
    assert not np.shares_memory(first, other)
    grown = parallel.scratch(0, "test", 1000, np.float32)
    assert grown.shape == (1000,) and not np.shares_memory(first, grown)
    assert parallel.scratch_bytes() >= 4000
    parallel.release_scratch()
    assert parallel.scratch_bytes() == 0


def two_thread_spec():
    """A net whose layers fill shared scratch in the calling thread before their workers run
    (Winograd's transformed filters; LRN's and pooling's workspaces; the weight-gradient
    partials), with a loss."""
    conv = {"kernel_size": 3, "pad": 1, "weight_filler": {"type": "gaussian", "std": 0.1}}
    return {
        "name": "scratch_users",
        "layers": [
            {
                "name": "data",
                "type": "Input",
                "top": ["x", "t"],
                "input_param": {"shape": [{"dim": [4, 32, 24, 24]}, {"dim": [4, 10]}]},
            },
            {
                "name": "conv1",
                "type": "Convolution",
                "bottom": "x",
                "top": "c1",
                "convolution_param": {"num_output": 32, **conv},
            },
            {"name": "relu", "type": "ReLU", "bottom": "c1", "top": "c1"},
            {"name": "norm", "type": "LRN", "bottom": "c1", "top": "n1", "lrn_param": {"local_size": 5}},
            {
                "name": "pool",
                "type": "Pooling",
                "bottom": "n1",
                "top": "p1",
                "pooling_param": {"pool": "MAX", "kernel_size": 2, "stride": 2},
            },
            {
                "name": "conv2",
                "type": "Convolution",
                "bottom": "p1",
                "top": "c2",
                "convolution_param": {"num_output": 32, **conv},
            },
            {"name": "squash", "type": "Sigmoid", "bottom": "c2", "top": "c2"},
            {
                "name": "fc",
                "type": "InnerProduct",
                "bottom": "c2",
                "top": "y",
                "inner_product_param": {"num_output": 10, "weight_filler": {"type": "gaussian", "std": 0.01}},
            },
            {"name": "loss", "type": "EuclideanLoss", "bottom": ["y", "t"], "top": "loss"},
        ],
    }


@pytest.mark.parametrize("workers", [1, 2])
def test_two_nets_of_other_weights_in_two_threads_give_what_each_gives_alone(thread_count, workers):
    """Two nets (other weights, other inputs) trained step by step from two Python threads at
    once take turns with the shared scratch: each step's loss, output and gradients are those of
    the net run alone (to rounding).
    (When only the workers' part held the workspace lock, the Winograd convolutions' filters,
    transformed in the calling thread, were overwritten by the other thread's: 3 of 4 forwards
    wrong.)"""
    import netlayers

    thread_count(workers)
    rng = np.random.default_rng(0)
    nets = [netlayers.Net(two_thread_spec(), dtype=np.float32, seed=seed) for seed in (1, 2)]
    assert all(net.layers[1].winograd is not None for net in nets)  # its filters in scratch
    inputs = [
        {"x": rng.standard_normal((4, 32, 24, 24), np.float32), "t": rng.standard_normal((4, 10), np.float32)}
        for _ in nets
    ]

    def step(k):
        net = nets[k]
        net.clear_param_diffs()
        out = net.forward(**inputs[k])
        net.backward()
        return [out["loss"].copy(), net.blobs["y"].data.copy()] + [
            blob.diff.copy() for blob in net.params["conv1"] + net.params["conv2"]
        ]

    alone = [step(k) for k in range(2)]
    results = [[], []]

    def run(k):
        for _ in range(12):
            results[k].append(step(k))

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for k in range(2):
        assert len(results[k]) == 12
        for got in results[k]:
            for array, expected in zip(got, alone[k]):  # BLAS's thread count may differ: roundings
                assert np.linalg.norm(array - expected) <= 1e-5 * np.linalg.norm(expected)


class _FakeDelays:
    """Run-queue delays (ns) a test sets, and a clock (s) it moves: for ``parallel._Pinning``."""

    def __init__(self):
        self.delay, self.now = 0, 0.0

    def run_delay(self, tid):
        return self.delay if tid == 1 else 0  # the caller's (1) alone: the workers never wait

    def clock(self):
        return self.now

    def run_pass(self, pinning, seconds, waited_share):
        """One pass of ``seconds`` in which the threads waited ``waited_share`` of it in all."""
        pinning.pass_started(1)
        self.now += seconds
        self.delay += int(waited_share * seconds * 1e9)
        pinning.pass_ended()


def test_a_pinned_pass_that_waited_for_its_cpus_unpins_and_a_quiet_one_pins_again():
    """A pinned pass whose threads waited ``CONTENDED_SHARE`` of it or more (another process on
    their CPUs) unpins them; the next passes stay unpinned while they wait too, and a pass that
    waited less than half that share pins them again at once."""
    fake = _FakeDelays()
    pinning = parallel._Pinning(fake.run_delay, fake.clock)
    fake.run_pass(pinning, 0.05, parallel.CONTENDED_SHARE * 0.9)
    assert pinning.allowed()
    fake.run_pass(pinning, 0.05, parallel.CONTENDED_SHARE * 1.1)
    assert not pinning.allowed()
    for _ in range(3):
        fake.run_pass(pinning, 0.05, 0.3)  # unpinned, still sharing with the other process
        assert not pinning.allowed()
    fake.run_pass(pinning, 0.05, parallel.CONTENDED_SHARE * 0.4)  # the other process is gone
    assert pinning.allowed()


def test_unpinned_passes_that_keep_waiting_pin_again_after_a_while_to_look():
    """Unpinned passes that keep waiting (the other process, or the threads on each other) pin
    again after ``UNPINNED_PASSES`` of them, for a pinned pass to look again."""
    fake = _FakeDelays()
    pinning = parallel._Pinning(fake.run_delay, fake.clock)
    fake.run_pass(pinning, 0.05, 0.5)
    for k in range(parallel.UNPINNED_PASSES):
        assert not pinning.allowed(), k
        fake.run_pass(pinning, 0.05, 0.5)
    assert pinning.allowed()


def test_without_run_queue_delays_to_read_the_threads_stay_pinned():
    """Where Linux's schedstat cannot be read (another system, a sandbox), nothing changes."""
    pinning = parallel._Pinning(lambda tid: None, lambda: 0.0)
    for _ in range(3):
        pinning.pass_started(1)
        pinning.pass_ended()
    assert pinning.allowed()
    real = parallel._run_delay(threading.get_native_id())  # this machine's: a count, or None
    assert real is None or real >= 0


def test_run_delays_are_read_from_kept_files_that_close_when_their_thread_ends(monkeypatch):
    """A thread's schedstat file stays open and each read is fresh (a busy thread's delay never
    goes down, and its file is read again, not opened again); an ended thread's read gives
    None and closes its file; past ``SCHEDSTAT_FILES_KEPT`` threads all files are closed."""
    import os

    parallel._close_schedstat_files()  # the pools of earlier tests kept theirs
    me = threading.get_native_id()
    first = parallel._run_delay(me)
    assert first is not None  # Linux with schedstats, as the project's machines
    handle = parallel._schedstat_files[me]
    sum(range(200000))
    assert parallel._run_delay(me) >= first
    assert parallel._schedstat_files[me] == handle

    ended = threading.Thread(target=lambda: None)
    ended.start()
    tid = ended.native_id
    parallel._run_delay(tid)  # opened while it may still run
    ended.join()
    for _ in range(200):  # the thread's task ends a moment after Python's join returns
        if parallel._run_delay(tid) is None:
            break
        time.sleep(0.01)
    assert tid not in parallel._schedstat_files
    monkeypatch.setattr(parallel, "SCHEDSTAT_FILES_KEPT", 1)
    parallel._run_delay(me)  # one file already kept: it is the one read
    assert list(parallel._schedstat_files) == [me]
    other = threading.Thread(target=lambda: None)
    other.start()
    parallel._run_delay(other.native_id)
    other.join()
    assert list(parallel._schedstat_files) in ([other.native_id], [])
    parallel._close_schedstat_files()
    with pytest.raises(OSError):
        os.fstat(handle)


def test_a_worker_floats_on_every_cpu_while_pinning_is_off(thread_count, monkeypatch):
    """``take_own_cpu`` while the CPUs are shared with another process: a pinned worker lets
    itself run on every CPU of the process (and forgets its CPU); the caller pins nothing in a
    pass; once pinning is on again the worker pins itself as before."""
    import os

    thread_count(2)
    parallel.run_parts(lambda worker, part: None, 2)
    pool = parallel._state["pool"]
    allowed = set(parallel.allowed_cpus())
    monkeypatch.setattr(parallel.pinning, "unpinned_left", 3)

    def body():
        pool.cpus[:2] = [-1, min(allowed)]
        os.sched_setaffinity(0, {min(allowed)})
        pool.take_own_cpu(1)
        floating = (pool.cpus[1], os.sched_getaffinity(0))
        with parallel.single_threaded_blas:
            parallel.run_parts(lambda worker, part: None, 2)
            caller = os.sched_getaffinity(0)
        return floating, caller

    (cpu, mask), caller = in_a_thread(body)
    assert cpu == -1 and mask == allowed
    assert caller == allowed
    parallel.pinning.unpinned_left = 0
    pool.cpus[1] = -1
    in_a_thread(lambda: pool.take_own_cpu(1))
    assert pool.cpus[1] in allowed or len(allowed) < 2


def test_a_forked_child_runs_a_net_whose_parent_started_the_workers(thread_count):
    """multiprocessing's fork (Linux's default) after a pass started the workers' threads: the
    child has none of them, and its first pass waited for them for ever. It now starts its own
    and computes what the parent does."""
    import multiprocessing

    import netlayers

    thread_count(2)
    spec = two_thread_spec()
    net = netlayers.Net(spec, dtype=np.float32, seed=1)
    rng = np.random.default_rng(3)
    inputs = {"x": rng.standard_normal((4, 32, 24, 24), np.float32), "t": rng.standard_normal((4, 10), np.float32)}
    expected = net.forward(**inputs)["loss"].copy()
    assert parallel._state["pool"] is not None  # the parent's workers run

    def child(queue):
        queue.put(float(net.forward(**inputs)["loss"]))

    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    process = context.Process(target=child, args=(queue,))
    process.start()
    process.join(60)
    if process.is_alive():
        process.kill()
        process.join()
        pytest.fail("the forked child's forward did not end in 60 s")
    assert process.exitcode == 0
    assert queue.get(timeout=5) == pytest.approx(float(expected), rel=1e-6)
