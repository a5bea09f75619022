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
  work large enough to pay for the hand-over; ``matmul(a, b, out)``: a product cut into one
  part a worker, each handed over as a job the worker runs in compiled code, never taking the
  GIL (``kernels.handover``; a Python task's hand-over costs 30-60 us, a product job's a few);
  a part its worker has not claimed when the caller is done with its own, the caller runs.
- Waiting: a worker with nothing to do spins for ``SPIN_SECONDS`` in compiled code (without
  the GIL), running the product jobs that come, before it sleeps on its queue; a caller
  waiting for the workers' results spins as long, then looks every ``SLEEP_CHECK_SECONDS``.
- CPUs: each thread keeps a CPU of its own while the CPUs are not shared with another process
  (``pinning``, below): the calling thread is pinned to the CPU it is on
  from its first ``run_parts`` of a pass to the end of the pass (``single_threaded_blas``),
  each worker to another one for good (``_Pool.take_own_cpu``); a thread started during a
  pass inherits the caller's single CPU, so netlayers' own (the data prefetch thread) start
  with ``free_cpus``.
- ``scratch(worker, name, size, dtype)``: a flat buffer of at least ``size`` items that belongs
  to that worker; it is shared by every layer (layers run one after another), grown when a
  larger one is asked for and never shrunk, as Caffe shares one column buffer across layers.
  ``workspace_lock`` is held by whoever uses the pool and its scratch: a net's pass holds it
  from start to end and a layer's forward or backward for its run (``Net.forward_range``,
  ``Net.backward``, ``Layer.forward``, ``Layer.backward``), so two nets run from two Python
  threads take turns, layer by layer or pass by pass. (Holding it only inside ``run_parts``
  was not enough: a layer fills some scratch in the calling thread before its workers start,
  a Winograd convolution its transformed filters, and another thread's layer could overwrite
  them in between.)

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
    pool = _state["pool"]
    workers_cpus = {c for c in pool.cpus[1:] if c >= 0} if pool is not None else set()
    if cpu in workers_cpus and allowed_cpus() - workers_cpus:  # a worker is pinned there: take another
        cpu = min(allowed_cpus() - workers_cpus)
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
    """Sets numpy's BLAS library to one thread and back (threadpoolctl). Only numpy's, when it
    can be told (``kernels.blas.numpy_blas_file``): where SciPy was loaded first (numba imports
    it), switching SciPy's OpenBLAS too woke its threads at every pass's end, and a numpy
    loop run after the net's steps in the same process ran 1.7x slower (0.55 against 0.32 ms,
    ``tools/bench_mlp.py``)."""

    def __init__(self):
        from threadpoolctl import ThreadpoolController

        from .kernels.blas import numpy_blas_file

        numpy_blas = numpy_blas_file()
        self.libraries = [
            lib
            for lib in ThreadpoolController().lib_controllers
            if lib.user_api == "blas" and (numpy_blas is None or os.path.realpath(lib.filepath) == numpy_blas)
        ]

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


_blas_found = threading.Lock()


def _blas():
    if _state["blas"] is None:
        with _blas_found:  # two nets' first passes in two threads: one switch, one controller
            if _state["blas"] is None:
                from .kernels.openblas_core import use_preferred_core

                use_preferred_core()  # before the process's first pass: no product is running (see there)
                _state["blas"] = _BlasThreads()
    return _state["blas"]


# A pass that hands nothing to the pool keeps BLAS's threads for the next pass. The lecture's MLP
# (64 x 1000 -> 100 -> 10: two 12.8 MFLOP products a step, below MATMUL_SPLIT_FLOPS, where cutting
# them over the workers ran slower) then runs its products on OpenBLAS's two threads, as its
# numpy loop does: 0.307 against 0.362 ms a step with BLAS held to one thread (the numpy loop
# 0.278 ms; medians of 10 paired rounds in one process). Nets whose passes hand work over run
# single-threaded BLAS from their second pass, as before.
class _SingleThreadedBlas:
    """``with single_threaded_blas:`` a pass (nested uses count as one). While the pool's
    workers may run, BLAS runs in the calling thread alone: from the pass's first hand-over to
    the pool (``hold_cpu``) to its end, and from its start when the pass before handed work to
    the pool (a net's passes repeat). BLAS's own threads then never wake during training, so
    they neither spin beside the workers nor wait for a core another process holds. A pass
    that hands nothing over (every product too small to cut, as in the lecture's MLP) keeps
    BLAS's threads for the next one (measured: the comment above)."""

    def __init__(self):
        self.depth = 0
        self.saved = None
        self.lock = threading.Lock()
        self.handed_over = True  # whether the last pass handed work to the pool (the first runs single)

    def __enter__(self):
        with self.lock:
            if self.depth == 0:
                self.saved = _blas().single() if self.handed_over else None
                self.held, self.hold_tried = None, False
            self.depth += 1

    def __exit__(self, *exc):
        with self.lock:
            self.depth -= 1
            if self.depth == 0:
                if self.saved is not None:
                    _blas().restore(self.saved)
                self.handed_over = self.hold_tried
                if self.held is not None:
                    _set_cpus(*self.held)
                pinning.pass_ended()

    def hold_cpu(self):
        """At a pass's first hand-over to the pool: BLAS to one thread (if the pass did not
        start so), and the calling thread pinned to its CPU until the outermost ``with`` ends
        (``_hold_cpu``; the pinning and its undoing cost 9 us), while ``pinning`` finds the
        CPUs not shared with another process. ``run_parts`` and split products ask, before
        their workers start."""
        with self.lock:
            if self.depth and not self.hold_tried:
                self.hold_tried = True
                if self.saved is None:
                    self.saved = _blas().single()
                self.held = _hold_cpu() if pinning.allowed() else None
                pinning.pass_started(threading.get_native_id())


single_threaded_blas = _SingleThreadedBlas()


# Pinned threads and a busy process: a worker pinned to a CPU that another process keeps busy
# gets half of it and waits a time slice at each hand-over, and the whole pass waits for it.
# Beside one busy process (``tools/bench_nets.py --busy``, 3 rounds, two runs each), the share
# of its quiet speed kept, pinned -> unpinned: CIFAR ResNet-20 28 % -> 54 %, cifar10_quick 48 %
# -> 61 % (its busy step 88 -> 73 ms); but quiet, unpinned ran 1.07x-1.17x slower (Linux left a
# woken worker on its waker's CPU). So threads are pinned while their CPUs are their own, told
# by the run-queue delay Linux counts each thread (/proc/.../schedstat) over a pass that hands
# work to the pool: a pinned pass whose threads waited ``CONTENDED_SHARE`` of its time or more
# for their CPUs unpins them; an unpinned pass that waited less than half that pins them again,
# and so does the pass after ``UNPINNED_PASSES`` unpinned ones (a look at whether the other
# process is gone, in case unpinned threads keep waiting on each other). Quiet passes of
# CIFAR ResNet-20 and cifar10_quick waited 0.1 % of their time (median), 8 % at most. Paired
# rounds in one process, 2 steps to adapt then 6 timed, this rule against pinning always:
# beside a busy process CIFAR ResNet-20 142.6 against 244.6 ms a step, the ResNet blocks 0.81x,
# cifar10_quick 0.91x, LeNet 0.64x-0.69x, the MLP 0.97x; quiet 0.98x-1.02x (the MLP 1.06x, LeNet
# 1.02x-1.14x in two runs). Reading a thread's delay costs 1 us, four reads a pass.
CONTENDED_SHARE = 0.1
UNPINNED_PASSES = 20


def _run_delay(tid):
    """Nanoseconds thread ``tid`` of this process has waited on a run queue, or None. Each
    thread's schedstat file is kept open and read again from its start (1 us; opening it
    each time cost 11 us, four reads a pass); a file that fails (its thread has ended) is
    closed, and all are closed when more threads than ``SCHEDSTAT_FILES_KEPT`` were read."""
    handle = _schedstat_files.get(tid)
    try:
        if handle is None:
            if len(_schedstat_files) >= SCHEDSTAT_FILES_KEPT:
                _close_schedstat_files()
            handle = _schedstat_files[tid] = os.open(f"/proc/self/task/{tid}/schedstat", os.O_RDONLY)
        return int(os.pread(handle, 128, 0).split()[1])
    except (OSError, ValueError, IndexError, AttributeError):
        if handle is not None:
            os.close(_schedstat_files.pop(tid))
        return None


_schedstat_files = {}  # thread id -> its open schedstat file (read under single_threaded_blas' lock)
SCHEDSTAT_FILES_KEPT = 16


def _close_schedstat_files():
    while _schedstat_files:
        os.close(_schedstat_files.popitem()[1])


class _Pinning:
    """Whether the pool's threads are pinned now (``allowed``), from the run-queue delays of
    the passes that hand work to the pool (``pass_started``, with the caller's thread id, at a
    pass's first hand-over; ``pass_ended`` at the end of every pass)."""

    def __init__(self, run_delay=_run_delay, clock=time.perf_counter):
        self.run_delay, self.clock = run_delay, clock
        self.unpinned_left = 0
        self.start = None

    def allowed(self):
        return self.unpinned_left == 0

    def _delay(self, tids):
        delays = [self.run_delay(tid) for tid in tids]
        return None if None in delays else sum(delays)

    def pass_started(self, caller):
        pool = _state["pool"]
        tids = [caller, *(thread.native_id for thread in pool.threads)] if pool is not None else [caller]
        delay = self._delay(tids)
        self.start = None if delay is None else (tids, delay, self.clock())

    def pass_ended(self):
        if self.start is None:
            return
        tids, delay, began = self.start
        self.start = None
        now, elapsed = self._delay(tids), self.clock() - began
        if now is None or elapsed <= 0:
            return
        waited = (now - delay) * 1e-9 / elapsed
        if self.allowed():
            if waited >= CONTENDED_SHARE:
                self.unpinned_left = UNPINNED_PASSES
        elif waited < CONTENDED_SHARE / 2:
            self.unpinned_left = 0
        else:
            self.unpinned_left -= 1


pinning = _Pinning()

SPLIT_MIN_BYTES = 1 << 21  # handing work to a worker costs 20-50 us: worth it from ~2 MiB


def over_slices(fn, length, nbytes):
    """``fn(lo, hi)`` over contiguous slices of ``range(length)`` (a batch axis, channels, or a
    flat array), one slice a worker when ``nbytes`` (what one whole call reads and writes) is
    at least ``SPLIT_MIN_BYTES``; else one call ``fn(0, length)``. For work whose results do
    not depend on where it is cut (each element or image computed alone), so the results are
    the same for any worker count."""
    if nbytes < SPLIT_MIN_BYTES:  # the common small call, without a wrapper
        fn(0, length)
        return
    over_worker_slices(lambda worker, lo, hi: fn(lo, hi), length, nbytes)


def over_worker_slices(fn, length, nbytes):
    """:func:`over_slices` for ``fn(worker, lo, hi)``, which is also told the worker that runs
    it (0 for a call in the caller's thread), for that worker's :func:`scratch`."""
    workers = min(thread_count(), length) if nbytes >= SPLIT_MIN_BYTES else 1
    if workers <= 1:
        fn(0, 0, length)
        return

    def piece(worker, part):
        fn(worker, part * length // workers, (part + 1) * length // workers)

    run_parts(piece, workers, workers)


# Products from 16 MFLOP (~0.15 ms on one core) are cut over the workers, handed over in
# compiled code (``kernels.handover``: a few us). Smaller ones gained nothing inside a net: the
# lecture's MLP (12.8 MFLOP products, 2 workers) ran its hidden layer's products at 0.75x-0.95x
# of whole, but its worker's half pulled its operands from the other core's cache, the SGD
# update then pulled the gradient back (update 2-3x slower), and the step as a whole ran 0.9x to
# 1.8x of whole. From 16 MFLOP (Sigmoid and TanH MLPs, 25 MFLOP products) the net gained
# (0.90x-0.93x of the 32 MFLOP threshold, paired rounds).
#
# A thin product (one side under ``THIN_SIDE``: a classifier's 10 outputs, a batch of 16) runs far
# below BLAS's rate: numpy's OpenBLAS, one core, float32, the other two sides 1024-4096: 20-26
# GFLOP/s with a side of 10, 30-35 with 16, 41-46 with 32, 61-76 from 64 (``/tmp`` probe). Its
# FLOPs count THIN_SIDE / side times toward the threshold, so that what decides is about the
# time a product takes: the Deconvolution net's InnerProduct 32768 -> 10 (batch 16), three
# 10.5 MFLOP products of 0.41-0.49 ms each, is cut.
MATMUL_SPLIT_FLOPS = 1 << 24
THIN_SIDE = 32
SPLIT_GRAIN = 16  # parts are cut at multiples of 16 rows, columns or inner items (BLAS's tiles)


def matmul(a, b, out, add=False):
    """out = a @ b for 2-D arrays, or out += a @ b with ``add``. A matrix times a vector (``out``
    one row or one column) is never cut as a product: from ``MATRIX_VECTOR_SPLIT_BYTES`` it is
    cut by outputs (``_split_matrix_vector``). Other products from ``MATMUL_SPLIT_FLOPS`` (thin
    products' FLOPs counted more, see above) are cut into one part a worker
    (``_split_product``). Else the product runs whole in the calling thread."""
    rows, cols = out.shape
    inner = a.shape[1]
    flops = 2 * rows * cols * inner
    thin = min(rows, cols, inner)
    if thin < THIN_SIDE:
        flops = flops * THIN_SIDE // max(thin, 1)
    if min(rows, cols) == 1 and inner > 1 and not add:
        if _split_matrix_vector(a, b, out):
            return out
    elif flops >= MATMUL_SPLIT_FLOPS and _split_product(a, b, out, add):
        return out
    if add:
        from .kernels.blas import add_product

        with single_threaded_blas:
            return add_product(a, b, out)
    if single_threaded_blas.depth:  # inside a net pass: BLAS's threads as the pass set them
        return np.matmul(a, b, out=out)
    with single_threaded_blas:
        np.matmul(a, b, out=out)
    return out


# A matrix-vector product read from memory (not cache: a net's weights pass through once a step),
# whole on one core against cut over 2 workers, medians of 40 (2026-12-05): 1000 x 2048 (8 MB)
# 0.41-0.49 against 0.59-0.65 ms; 1000 x 4096 0.70 against 0.87-0.99; 2048 x 2048 0.80 against
# 0.58-0.62; 2048 x 4096 (32 MB) 1.48 against 1.01-1.06; 4096 x 4096 2.9-3.1 against 1.9-2.2;
# AlexNet's fc6, 4096 x 9216, 7.5-7.7 against 5.5-5.6 (as a product cut in two: 9.8).
MATRIX_VECTOR_SPLIT_BYTES = 1 << 25


def _split_matrix_vector(a, b, out):
    """out = a @ b where ``out`` has one row (x W^T: an InnerProduct of one item) or one column
    (W x^T), cut by outputs over the workers, one slice each (``over_slices``); False, with
    nothing done, below ``MATRIX_VECTOR_SPLIT_BYTES`` of matrix or from inside ``run_parts``'
    work (the caller then runs it whole). numpy hands such a product, whole or a slice, to BLAS's
    matrix-vector routine, which reads the matrix once; cut as a product, each part ran as a
    matrix product of one row, which packs the whole matrix first (1000 x 2048 weights, batch
    1, 2 workers: 0.26-0.36 ms against 0.11 ms whole on one core). It is bound by reading the
    matrix: only a large one gains from two cores."""
    row = out.shape[0] == 1
    matrix = b if row else a
    if getattr(_inside_parts, "depth", 0) or matrix.nbytes < MATRIX_VECTOR_SPLIT_BYTES:
        return False

    def part(lo, hi):
        if row:
            np.matmul(a, b[:, lo:hi], out=out[:, lo:hi])
        else:
            np.matmul(a[lo:hi], b, out=out[lo:hi])

    over_slices(part, out.shape[1] if row else out.shape[0], matrix.nbytes)
    return True


def _product_calls():
    """(sgemm, dgemm) as ``kernels.blas.gemm_address`` gives them, or None (then products run
    whole: no BLAS found that compiled code can call, or ``NUMBA_DISABLE_JIT``)."""
    if "calls" not in _state:
        from .kernels.blas import gemm_address

        single, double = gemm_address(np.float32), gemm_address(np.float64)
        _state["calls"] = (single, double) if single is not None and double is not None else None
    return _state["calls"]


_NO_CALLS = ((0, np.int64(0)), (0, np.int64(0)))  # a pool's workers with no products to run


def _split_product(a, b, out, add=False):
    """out = a @ b (``add``: out += a @ b) cut into one part a worker (``_plan_product``), every
    part but the caller's handed over in compiled code (``kernels.handover``); False, with
    nothing done, where no plan applies or when called from inside ``run_parts``' work. Plans
    are kept by the operands' addresses, shapes and strides: a layer asks for the same products
    each pass."""
    if getattr(_inside_parts, "depth", 0):
        return False
    key = (a.ctypes.data, b.ctypes.data, out.ctypes.data, a.shape, b.shape, out.shape)
    key += (a.strides, b.strides, out.strides, a.dtype, b.dtype, out.dtype, thread_count())
    plan = _plans.get(key, _UNPLANNED)
    if plan is _UNPLANNED:
        if len(_plans) >= PLANS_KEPT:
            _plans.clear()
        plan = _plans[key] = _plan_product(a, b, out)
    if plan is None:
        return False
    rows, swapped, partial = plan
    target = out.T if swapped else out
    with workspace_lock:
        pool = _pool(len(rows))
        h = pool.handover
        rows[:, h.KIND] = h.PRODUCT_ADD if add else h.PRODUCT
        if partial is not None:  # the other workers set their partial products in their scratch
            rows[1:, h.KIND] = h.PRODUCT
            C, LDC = h.C, h.LDC
            buffers = [scratch(w, "product partial", partial[0] * partial[1], out.dtype) for w in range(1, len(rows))]
            rows[1:, C] = [buffer.ctypes.data for buffer in buffers]
            rows[1:, LDC] = partial[1]
        _run_products(pool, rows, _product_calls())
        if partial is not None:
            for buffer in buffers:
                np.add(target, buffer.reshape(partial), out=target)
    return True


_plans = {}
_UNPLANNED = object()
PLANS_KEPT = 1024  # plans kept at most (then all are dropped and made again as needed)


def _plan_product(a, b, out):
    """How out = a @ b is cut, or None where it is not: one worker, no compiled BLAS, mixed or
    other dtypes, a layout BLAS cannot read, ``out`` overlapping an operand, or too little to
    cut. The cut is along the rows of ``out``, its columns, or the inner dimension, whichever
    adds least to a worker's work (along the inner dimension the workers' partial products
    are added into ``out``, so results differ from one worker's by rounding). Returns (the job
    rows, whether they compute out^T = b^T a^T, the partial products' shape or None)."""
    from .kernels.blas import NO_TRANS, TRANS
    from .kernels.blas import layout as blas_layout

    workers = thread_count()
    if workers < 2 or _product_calls() is None or not _blas().controllable:
        return None
    dtype = out.dtype
    if dtype not in (np.float32, np.float64) or a.dtype != dtype or b.dtype != dtype:
        return None
    if np.may_share_memory(out, a) or np.may_share_memory(out, b):
        return None
    out_layout = blas_layout(out)
    swapped = out_layout is not None and out_layout[0] == TRANS
    if swapped:  # out^T = b^T a^T, with out^T row-major
        a, b, out = b.T, a.T, out.T
        out_layout = blas_layout(out)
    a_layout, b_layout = blas_layout(a), blas_layout(b)
    if out_layout is None or out_layout[0] != NO_TRANS or a_layout is None or b_layout is None:
        return None
    m, n = out.shape
    k = a.shape[1]
    # What a cut adds to one worker's work: along m, packing all of op(B) (k x n); along n,
    # all of op(A) (m x k); along k, writing, moving and adding a partial of out (m x n).
    extra = {"m": k * n, "n": m * k, "k": 3 * m * n}
    axis = min(extra, key=extra.get)
    length = {"m": m, "n": n, "k": k}[axis]
    workers = min(workers, length // SPLIT_GRAIN)
    if workers < 2:
        return None
    rows = _product_rows(a, b, out, a_layout, b_layout, out_layout, axis, length, workers)
    return rows, swapped, (m, n) if axis == "k" else None


def _product_rows(a, b, out, a_layout, b_layout, out_layout, axis, length, workers):
    """The job rows (``kernels.handover``'s layout) of the parts of out = a @ b cut along
    ``axis`` ("m": rows of out, "n": its columns, "k": the inner dimension)."""
    from .kernels import handover as h
    from .kernels.blas import NO_TRANS

    item = out.itemsize
    (trans_a, lda), (trans_b, ldb), (_, ldc) = a_layout, b_layout, out_layout
    m, n = out.shape
    k = a.shape[1]
    a_step = {"m": lda if trans_a == NO_TRANS else 1, "k": 1 if trans_a == NO_TRANS else lda, "n": 0}[axis] * item
    b_step = {"n": 1 if trans_b == NO_TRANS else ldb, "k": ldb if trans_b == NO_TRANS else 1, "m": 0}[axis] * item
    c_step = {"m": ldc, "n": 1, "k": 0}[axis] * item
    size_field = {"m": h.M, "n": h.N, "k": h.K}[axis]
    row = [h.PRODUCT, 0 if out.dtype == np.float32 else 1, trans_a, trans_b, m, n, k]
    row += [a.ctypes.data, lda, b.ctypes.data, ldb, out.ctypes.data, ldc]
    rows = []
    for p in range(workers):  # cut at multiples of SPLIT_GRAIN
        lo = min(length, -(-(p * length // workers) // SPLIT_GRAIN) * SPLIT_GRAIN)
        hi = length if p == workers - 1 else min(length, -(-((p + 1) * length // workers) // SPLIT_GRAIN) * SPLIT_GRAIN)
        part = row.copy()
        part[size_field] = hi - lo
        part[h.A] += lo * a_step
        part[h.B] += lo * b_step
        part[h.C] += lo * c_step
        rows.append(part)
    return np.array(rows, np.int64)


def _run_products(pool, rows, calls):
    """Row 0 in the calling thread, row w by worker w (handed over in compiled code), and wait
    for all. The caller holds ``workspace_lock``."""
    hand_over, run_product, take_back = pool.handover.hand_over, pool.handover.run_product, pool.handover.take_back
    workers = len(rows)
    errors = []
    single_threaded_blas.__enter__()
    single_threaded_blas.hold_cpu()
    try:
        pool.cpus[0] = _current_cpu()
        for w in range(1, workers):
            if hand_over(pool.jobs, w, rows[w], pool.posted, pool.state):
                pool.tasks[w - 1].put(_WAKE)
        run_product(rows[0], *calls)
        for w in range(1, workers):  # a part its worker has not started yet: run it here
            take_back(w, pool.posted[w], rows[w], pool.claimed, pool.finished, *calls)
    except BaseException as exc:
        errors.append(exc)
    finally:
        _wait(pool, workers, errors)  # the workers write into out: every one is done first
        single_threaded_blas.__exit__()
    if errors:
        raise errors[0]


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
SLEEP_CHECK_SECONDS = 0.001  # a sleeping caller looks at the counts this often, woken or not
_WAKE = object()  # a worker's queue item that only wakes it (a product job is in its row)
_inside_parts = threading.local()  # depth: in run_parts' work (no product is split from there)


class _Pool:
    """``count - 1`` daemon threads, each with its own task queue; the caller is worker 0.
    ``posted[w]`` counts the tasks handed to worker ``w`` (a task is queued before it is
    counted, so a worker that sees the count go up finds it in its queue) and ``finished[w]``
    those it has done; ``failures[w]`` holds the exception of its last task, if any. The caller
    learns that the workers are done from the counts alone, never from an item it takes off a
    queue: an interrupt (Ctrl-C) raised just after such an item was taken would lose it."""

    def __init__(self, count):
        from .kernels import handover
        from .kernels.spin import wait_for_counts

        self.wait_for_counts = wait_for_counts
        self.handover = handover
        self.tasks = [queue.SimpleQueue() for _ in range(count - 1)]
        self.answered = threading.Condition()
        self.failures = [None] * count
        self.posted = np.zeros(count, np.int64)
        self.finished = np.zeros(count, np.int64)
        self.jobs = np.zeros((count, handover.FIELDS), np.int64)  # each worker's current job
        self.state = np.zeros(count, np.int64)  # each worker AWAKE or ASLEEP (kernels.handover)
        self.waiting = np.zeros(1, np.int64)  # 1 while the caller sleeps until its jobs are done
        self.claimed = np.zeros(count, np.int64)  # the number of the last job each worker claimed
        # The kernels only a timing calls (a caller or worker that waited long enough to sleep)
        # are loaded (or compiled) now, so that which ones a step compiles never depends on it
        handover.caller_sleeps(np.zeros(1, np.int64))
        handover.may_sleep(np.zeros(1, np.int64), 0, np.ones(1, np.int64), 1)
        self.sleeping_caller = lambda: handover.caller_sleeps(self.waiting)
        self.calls = _product_calls() or _NO_CALLS
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
        if not pinning.allowed():  # the CPUs are shared with another process: float
            if self.cpus[w] >= 0 and _set_cpus(0, allowed_cpus()):
                self.cpus[w] = -1
            return
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
        """Worker ``w``'s loop: spin in compiled code, running the product jobs that come
        (``handover.serve``), until a Python task is posted (queued before it is counted) or
        ``SPIN_SECONDS`` pass with nothing; then sleep on the queue until a task or a wake-up
        token comes (``handover.may_sleep``)."""
        from .kernels import handover, spin

        tasks = self.tasks[w - 1]
        taken = 1  # the number of this worker's next job
        done = 0  # the number of the Python task it has just run, for ``serve`` to publish
        while True:
            self.take_own_cpu(w)
            rounds = int(SPIN_SECONDS / spin.CHECK_SECONDS)
            before = taken
            taken = handover.serve(
                w, self.posted, self.finished, self.jobs, self.claimed, taken, rounds, *self.calls, spin.YIELD,
                self.waiting, done,
            )  # fmt: skip
            published, done = done, 0
            if (taken > before or published) and self.waiting[0]:  # a job done while the caller sleeps: wake it
                with self.answered:
                    self.answered.notify_all()
                if self.posted[w] < taken:
                    continue  # back to spinning (it returned early, not idle)
            if self.posted[w] >= taken:
                if self.jobs[w, handover.KIND] != handover.PYTHON_TASK:
                    continue  # it came after the last check
                task = tasks.get()
            elif handover.may_sleep(self.state, w, self.posted, taken):
                task = tasks.get()
                self.state[w] = handover.AWAKE
            else:
                continue
            if task is _WAKE:  # a product job (or a late token for one already run)
                continue
            if task is None:
                return
            fn, worker, parts, taken = task
            self.claimed[w] = taken  # a Python task is never taken back: the claim is the worker's
            error = None
            _inside_parts.depth = 1
            try:
                self.take_own_cpu(w)
                for part in parts:
                    fn(worker, part)
            except BaseException as exc:  # handed to the caller, which re-raises it
                error = exc
            _inside_parts.depth = 0
            self.failures[w] = error
            done = taken  # published by the next ``serve``, without the GIL
            taken += 1

    def all_done(self, workers):
        """Whether workers ``1 .. workers - 1`` have done every task posted to them."""
        return bool(np.all(self.finished[1:workers] >= self.posted[1:workers]))

    def post(self, w, task):
        """Python task ``task`` to worker ``w`` (queued, then counted: a worker that sees the
        count finds it in its queue)."""
        self.jobs[w, self.handover.KIND] = self.handover.PYTHON_TASK
        self.tasks[w - 1].put(task if task is None else (*task, int(self.posted[w]) + 1))  # with its number
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
        pool = _pool(workers)
        single_threaded_blas.__enter__()
        single_threaded_blas.hold_cpu()
        errors = []
        started = 0
        depth = getattr(_inside_parts, "depth", 0)
        _inside_parts.depth = depth + 1
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
            _inside_parts.depth = depth
            _wait(pool, 1 + started, errors)  # every worker stops before its buffers are reused
            single_threaded_blas.__exit__()
        if errors:
            raise errors[0]


def _pool(workers):
    """The pool, (re)started with at least ``workers`` threads. The caller holds ``workspace_lock``."""
    pool = _state["pool"]
    if pool is None or len(pool.tasks) < workers - 1:
        _stop_pool()
        pool = _state["pool"] = _Pool(max(workers, thread_count()))
    return pool


def _wait(pool, workers, errors):
    """Wait until workers ``1 .. workers - 1`` are done, then add their exceptions to
    ``errors``. An interrupt (Ctrl-C) while waiting goes to ``errors`` and the wait goes on: the
    workers are still writing into buffers the caller will reuse."""
    while True:
        try:
            if not pool.spin_until(pool.finished, 1, workers, pool.posted):
                with pool.answered:  # a worker that finishes a task or a product job notifies
                    pool.sleeping_caller()
                    try:
                        while not pool.all_done(workers):
                            pool.answered.wait(SLEEP_CHECK_SECONDS)
                    finally:
                        pool.waiting[0] = 0
            break
        except BaseException as exc:
            errors.append(exc)
    for w in range(1, workers):
        if pool.failures[w] is not None:
            errors.append(pool.failures[w])
            pool.failures[w] = None


def _after_fork_in_child():
    """In a child forked from this process (``multiprocessing``'s default on Linux, a pool of
    a user's own) only the thread that forked exists. The workers' threads are gone: a pass
    handing them work would wait for ever (it did), so the pool is dropped and the child's
    first pass starts its own. A lock another thread held stays held: it is made afresh (the
    workspace lock only when the forking thread does not hold it, as inside a pass). The
    schedstat files read the parent's threads: closed. And a caller pinned to one CPU during a
    pass gets its process's CPUs back (the pin to undo named the parent's thread)."""
    _state["pool"] = None
    single_threaded_blas.held = None
    if not workspace_lock._is_owned():
        workspace_lock._at_fork_reinit()
    _blas_found._at_fork_reinit()
    single_threaded_blas.lock._at_fork_reinit()
    _close_schedstat_files()
    global pinning
    pinning = _Pinning()
    free_cpus()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
