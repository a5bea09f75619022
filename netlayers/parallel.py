"""Work split over the batch: a small pool of threads that run numba kernels (which release the
GIL) and single-threaded BLAS calls side by side, and the scratch memory they share.

Why not let BLAS thread each product, as before: a convolution is many steps (im2col, a matrix
product, a reorder, col2im) and only the product was threaded, so half of a 2-core machine
idled through the rest, and every short product woke both BLAS threads (which then spin,
hurting most when another process wants the cores). Here each worker takes a share of the
batch and runs every step of it itself; BLAS is set to one thread while the workers run
(threadpoolctl, a call of a few microseconds) and restored afterwards.

- ``thread_count()`` / ``set_thread_count(n)``: the number of workers (the command line sets it
  with ``--threads``; by default the cores this process may use, see ``netlayers.threads``).
- ``run_parts(fn, parts)``: calls ``fn(worker, part)`` for every ``part in range(parts)``; each
  worker takes a contiguous run of parts (``share``). The caller's thread is worker 0.
  Exceptions are re-raised in the caller once every worker has stopped.
- ``over_slices(fn, length, nbytes)``: ``fn(lo, hi)`` over one contiguous slice a worker, for
  work large enough to pay for the hand-over; ``matmul(a, b, out)``: a product split the same
  way.
- Waiting: a thread waiting for a task or for the workers' results spins for up to
  ``SPIN_SECONDS`` in a compiled loop (without the GIL) before it blocks.
- CPUs: each thread keeps a CPU of its own: the calling thread is pinned to the CPU it is on
  from its first ``run_parts`` of a pass to the end of the pass (``single_threaded_blas``),
  each worker to another one for good (``_Pool.take_own_cpu``); a thread started during a
  pass inherits the caller's single CPU, so netlayers' own (the data prefetch thread) start
  with ``free_cpus``.
- ``scratch(worker, name, size, dtype)``: a flat buffer of at least ``size`` items that belongs
  to that worker; it is shared by every layer (layers run one after another), grown when a
  larger one is asked for and never shrunk, as Caffe shares one column buffer across layers.
  ``workspace_lock`` is held by whoever uses the pool and its scratch (two nets run from two
  Python threads take turns).

A part's result must not depend on which worker ran it: then results are the same for any
thread count, except where a layer sums per-worker partial results (documented there).
"""

import os
import queue
import threading
import time

import numpy as np

workspace_lock = threading.RLock()

_state = {"threads": None, "pool": None, "blas": None}
_scratch = {}


def thread_count():
    """Workers used by ``run_parts`` (set by ``set_thread_count``, else the usable cores)."""
    if _state["threads"] is None:
        from .threads import available_cores

        _state["threads"] = available_cores()
    return _state["threads"]


def concurrent_workers():
    """How many workers ``run_parts`` runs at the same time: ``thread_count()``, or 1 where
    BLAS cannot be limited to one thread (``run_parts`` then runs the parts one by one), so
    that work whose workers wait for one another (a barrier) is never cut for more."""
    count = thread_count()
    return count if count > 1 and _blas().controllable else 1


def set_thread_count(count):
    """Use ``count`` workers from now on (the running pool is replaced when it differs)."""
    count = max(1, int(count))
    with workspace_lock:
        if count != _state["threads"]:
            _stop_pool()
            _state["threads"] = count


def _stop_pool():
    pool = _state["pool"]
    if pool is not None:
        pool.stop()
        _state["pool"] = None


# Why pin (``_hold_cpu``, ``_Pool.take_own_cpu``): on this project's 2-vCPU machines a net's
# first step after its calling thread had rested (0.5 s of sleep, as the benchmarks rest) ran
# 1.4x-1.8x the time of the next ones (3x3 convolutions with ELU, batch 32: 52 vs 38 ms; LeNet
# 19-22 vs 12 ms for three steps) while the scheduler moved the threads about; PyTorch showed
# no such step. With the caller and the worker each pinned to a CPU of its own the first step
# ran as the others (38 and 12 ms) and the steady steps 3-8 % faster; pinning the worker alone
# did not help. Side by side in one process, per-round medians of 10 rounds after 0.5 s rests.
# The caller is pinned only while a pass (or a layer call) that hands work to the pool runs:
# threads it starts between passes (PyTorch's OpenMP threads in the benchmark, a user's own)
# must not inherit one CPU (pinned for good, PyTorch's all ran on one CPU, 10x-20x slower).


def allowed_cpus():
    """The CPUs this process may use, as the first thread to ask found them (before any
    netlayers thread was pinned)."""
    if "cpus" not in _state:
        _state["cpus"] = frozenset(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else frozenset()
    return _state["cpus"]


def _set_cpus(tid, cpus):
    """Set a thread's CPUs (0: the calling thread); False where that is not allowed (a sandbox)."""
    try:
        os.sched_setaffinity(tid, cpus)
    except (OSError, AttributeError):
        return False
    return True


def _hold_cpu():
    """Pin the calling thread to the CPU it is on, when the pool has two or more threads and
    the process two or more CPUs; returns (its thread id, its CPU set) to restore, or None."""
    if thread_count() < 2 or len(allowed_cpus()) < 2:
        return None
    cpu = _current_cpu()
    if cpu not in allowed_cpus():
        return None
    before = os.sched_getaffinity(0)
    return (threading.get_native_id(), before) if len(before) > 1 and _set_cpus(0, {cpu}) else None


def free_cpus():
    """Let the calling thread run on any CPU of the process: for a thread started during a
    pass, which inherits the caller's single CPU (netlayers' data prefetch thread calls it)."""
    if allowed_cpus():
        _set_cpus(0, allowed_cpus())


def scratch(worker, name, size, dtype):
    """A 1-D buffer of ``size`` items of ``dtype`` owned by ``worker`` (see the module text)."""
    dtype = np.dtype(dtype)
    key = (worker, name, dtype)
    buffer = _scratch.get(key)
    if buffer is None or buffer.size < size:
        from .memory import check_size

        check_size(size * dtype.itemsize, f"the {name} workspace")
        _scratch.pop(key, None)  # the old buffer is freed before the new one is made
        buffer = np.empty(size, dtype)
        _scratch[key] = buffer
    return buffer[:size]


def release_scratch():
    """Free every worker's scratch buffers (they are made again when next needed)."""
    with workspace_lock:
        _scratch.clear()


def scratch_bytes():
    """Bytes held in scratch buffers now."""
    return sum(buffer.nbytes for buffer in _scratch.values())


class _BlasThreads:
    """Sets the BLAS libraries numpy loaded to one thread and back (threadpoolctl)."""

    def __init__(self):
        from threadpoolctl import ThreadpoolController

        self.libraries = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]

    @property
    def controllable(self):
        return bool(self.libraries)

    def single(self):
        saved = [lib.get_num_threads() for lib in self.libraries]
        for lib in self.libraries:
            lib.set_num_threads(1)
        return saved

    def restore(self, saved):
        for lib, count in zip(self.libraries, saved):
            lib.set_num_threads(count)


def _blas():
    if _state["blas"] is None:
        _state["blas"] = _BlasThreads()
    return _state["blas"]


class _SingleThreadedBlas:
    """``with single_threaded_blas:`` BLAS runs in the calling thread alone (nested uses count;
    the outermost one restores the BLAS thread count). Net passes and layer calls run inside
    it: BLAS's own threads then never wake during training, so they neither spin beside the
    workers nor wait for a core another process holds."""

    def __init__(self):
        self.depth = 0
        self.saved = None
        self.lock = threading.Lock()

    def __enter__(self):
        with self.lock:
            if self.depth == 0:
                self.saved = _blas().single()
                self.held, self.hold_tried = None, False
            self.depth += 1

    def __exit__(self, *exc):
        with self.lock:
            self.depth -= 1
            if self.depth == 0:
                _blas().restore(self.saved)
                if self.held is not None:
                    _set_cpus(*self.held)

    def hold_cpu(self):
        """Pin the calling thread to its CPU until the outermost ``with`` ends (``_hold_cpu``),
        once a pass: ``run_parts`` asks, so a pass that hands no work to the pool pins nothing
        (the pinning and its undoing cost 9 us)."""
        with self.lock:
            if self.depth and not self.hold_tried:
                self.hold_tried = True
                self.held = _hold_cpu()


single_threaded_blas = _SingleThreadedBlas()

SPLIT_MIN_BYTES = 1 << 21  # handing work to a worker costs 20-50 us: worth it from ~2 MiB


def over_slices(fn, length, nbytes):
    """``fn(lo, hi)`` over contiguous slices of ``range(length)`` (a batch axis, channels, or a
    flat array), one slice a worker when ``nbytes`` (what one whole call reads and writes) is
    at least ``SPLIT_MIN_BYTES``; else one call ``fn(0, length)``. For work whose results do
    not depend on where it is cut (each element or image computed alone), so the results are
    the same for any worker count."""
    workers = min(thread_count(), length) if nbytes >= SPLIT_MIN_BYTES else 1
    if workers <= 1:
        fn(0, length)
        return

    def piece(worker, part):
        fn(part * length // workers, (part + 1) * length // workers)

    run_parts(piece, workers, workers)


MATMUL_SPLIT_FLOPS = 1 << 25  # products from 32 MFLOP (~0.3 ms) are split: waking a worker costs 20-80 us


def matmul(a, b, out):
    """out = a @ b for 2-D arrays, cut into row blocks of ``out`` (or column blocks, when it is
    wider than tall) run by the workers; small products run whole. Each entry is one BLAS dot
    over the full inner dimension either way."""
    rows, cols = out.shape
    workers = min(thread_count(), max(rows, cols))
    if workers < 2 or 2 * rows * cols * a.shape[1] < MATMUL_SPLIT_FLOPS:
        if single_threaded_blas.depth:  # inside a net pass: already single-threaded
            return np.matmul(a, b, out=out)
        with single_threaded_blas:
            np.matmul(a, b, out=out)
        return out
    by_rows = rows >= cols
    length = rows if by_rows else cols

    def block(worker, part):
        lo, hi = part * length // workers, (part + 1) * length // workers
        if by_rows:
            np.matmul(a[lo:hi], b, out=out[lo:hi])
        else:
            np.matmul(a, b[:, lo:hi], out=out[:, lo:hi])

    run_parts(block, workers, workers)
    return out


# A thread that waits for work (a worker for its next task, the caller for the workers' results)
# first spins for it this long, with the GIL released, and only then blocks. A blocked thread
# lets its core idle, and on a virtual machine an idle core halts: waking it took 0.17-0.39 ms a
# hand-over (an empty ``run_parts`` after 0.2 to 50 ms apart), against 0.04 ms back to back.
# Between a net's parallel steps the gap is mostly a layer or two of one thread. The spin runs
# in a compiled loop over two counters a worker (tasks posted, tasks finished) so that the
# waiting thread does not hold the GIL: a Python loop polling the queues took the GIL between
# polls and stalled the thread it waited for, and ``time.sleep(0)`` slept 90 us a poll.
SPIN_SECONDS = 0.002
SPIN_ROUNDS = 2000  # ~60 us of checks between looks at the clock


class _Pool:
    """``count - 1`` daemon threads, each with its own task queue; the caller is worker 0.
    ``posted[w]`` counts the tasks handed to worker ``w`` (a task is queued before it is
    counted, so a worker that sees the count go up finds it in its queue) and ``finished[w]``
    those it has done; ``failures[w]`` holds the exception of its last task, if any. The caller
    learns that the workers are done from the counts alone, never from an item it takes off a
    queue: an interrupt (Ctrl-C) raised just after such an item was taken would lose it."""

    def __init__(self, count):
        from .kernels.spin import wait_for_counts

        self.wait_for_counts = wait_for_counts
        self.tasks = [queue.SimpleQueue() for _ in range(count - 1)]
        self.answered = threading.Condition()
        self.failures = [None] * count
        self.posted = np.zeros(count, np.int64)
        self.finished = np.zeros(count, np.int64)
        self.cpus = [-1] * count  # the caller's CPU at its last hand-over, each worker's pinned CPU (-1: none)
        self.threads = [
            threading.Thread(target=self._serve, args=(w,), name=f"netlayers-worker-{w}", daemon=True)
            for w in range(1, count)
        ]
        for thread in self.threads:
            thread.start()

    def spin_until(self, counts, lo, hi, targets):
        """True once ``counts[lo:hi] >= targets[lo:hi]``, False after ``SPIN_SECONDS``. Between
        rounds of checks the core is offered to any other thread waiting for it (the one
        waited for, if it shares the core)."""
        deadline = time.perf_counter() + SPIN_SECONDS
        while not self.wait_for_counts(counts, lo, hi, targets, SPIN_ROUNDS):
            if time.perf_counter() > deadline:
                return False
            os.sched_yield()
        return True

    def take_own_cpu(self, w):
        """Pin worker ``w`` to a CPU no earlier thread of the run is on: the one it runs on when
        that one is free, else the lowest free one. After a rest, Linux woke a worker on the CPU
        of the thread that woke it and left the two sharing it for 30-40 ms although the other
        CPU was idle (the MobileNet tail's first step 154-192 ms against 94-113)."""
        taken = set(self.cpus[:w])
        if self.cpus[w] >= 0 and self.cpus[w] not in taken:
            return  # pinned there already
        cpu = _current_cpu()
        free = sorted(allowed_cpus() - taken)
        if cpu < 0 or not free:
            return
        target = cpu if cpu in free else free[0]
        if _set_cpus(0, {target}):
            self.cpus[w] = target

    def _serve(self, w):
        tasks = self.tasks[w - 1]
        taken = np.zeros(w + 1, np.int64)
        while True:
            taken[w] += 1
            self.spin_until(self.posted, w, w + 1, taken)
            task = tasks.get()  # there at once after a successful spin
            if task is None:
                return
            fn, worker, parts = task
            error = None
            try:
                self.take_own_cpu(w)
                for part in parts:
                    fn(worker, part)
            except BaseException as exc:  # handed to the caller, which re-raises it
                error = exc
            with self.answered:
                self.failures[w] = error
                self.finished[w] += 1
                self.answered.notify()

    def all_done(self, workers):
        """Whether workers ``1 .. workers - 1`` have done every task posted to them."""
        return bool(np.all(self.finished[1:workers] >= self.posted[1:workers]))

    def post(self, w, task):
        self.tasks[w - 1].put(task)
        self.posted[w] += 1

    def stop(self):
        for w in range(1, len(self.tasks) + 1):
            self.post(w, None)


def _cpu_reader():
    """libc's ``sched_getcpu`` (the CPU the calling thread runs on), or None without one."""
    try:
        import ctypes

        function = ctypes.CDLL(None).sched_getcpu
    except (OSError, AttributeError):
        return None
    function.restype = ctypes.c_int
    function.argtypes = []
    return function


_sched_getcpu = _cpu_reader()


def _current_cpu():
    return _sched_getcpu() if _sched_getcpu is not None else -1


def share(worker, workers, parts):
    """The contiguous run of parts that ``worker`` of ``workers`` takes."""
    return range(-(-worker * parts // workers), -(-(worker + 1) * parts // workers))


def run_parts(fn, parts, workers=None):
    """``fn(worker, part)`` for each part in range(parts), each worker taking its ``share``.
    ``workers`` defaults to ``min(thread_count(), parts)``. When BLAS cannot be limited to one
    thread (no BLAS threadpoolctl knows), the same calls run one after another in this thread."""
    if workers is None:
        workers = min(thread_count(), parts)
    blas = _blas() if workers > 1 else None
    if blas is None or not blas.controllable:
        with workspace_lock:  # the scratch buffers are shared: one caller at a time
            for worker in range(workers):
                for part in share(worker, workers, parts):
                    fn(worker, part)
        return
    with workspace_lock:
        pool = _state["pool"]
        if pool is None or len(pool.tasks) < workers - 1:
            _stop_pool()
            pool = _state["pool"] = _Pool(max(workers, thread_count()))
        single_threaded_blas.__enter__()
        single_threaded_blas.hold_cpu()
        errors = []
        started = 0
        try:
            pool.cpus[0] = _current_cpu()
            for worker in range(1, workers):
                pool.post(worker, (fn, worker, share(worker, workers, parts)))
                started += 1
            for part in share(0, workers, parts):
                fn(0, part)
        except BaseException as exc:
            errors.append(exc)
        finally:
            _wait(pool, 1 + started, errors)  # every worker stops before its buffers are reused
            single_threaded_blas.__exit__()
        if errors:
            raise errors[0]


def _wait(pool, workers, errors):
    """Wait until workers ``1 .. workers - 1`` are done, then add their exceptions to
    ``errors``. An interrupt (Ctrl-C) while waiting goes to ``errors`` and the wait goes on: the
    workers are still writing into buffers the caller will reuse."""
    while True:
        try:
            if not pool.spin_until(pool.finished, 1, workers, pool.posted):
                with pool.answered:
                    while not pool.all_done(workers):
                        pool.answered.wait()
            break
        except BaseException as exc:
            errors.append(exc)
    for w in range(1, workers):
        if pool.failures[w] is not None:
            errors.append(pool.failures[w])
            pool.failures[w] = None
