"""Matrix products handed to the pool's workers without the GIL.

A hand-over of Python work (``parallel.run_parts``) costs 30-60 us: the worker must take the
GIL to fetch its task, and on the project's virtual machines a thread blocked on the GIL takes
20-30 us to wake (a worker reports its task done from ``serve``, without the GIL: see there).
That is as long as a 10 MFLOP product takes, so products below 32 MFLOP used to run whole on
one core. Here a worker waits in compiled code (``serve``) that runs product jobs itself: the
caller writes a job (one row of ``jobs``: operands' addresses, sizes and layouts) and counts
it in ``posted``; the worker, spinning on that count, calls numpy's BLAS
(``kernels.blas.gemm``) and counts it in ``finished``; neither takes the GIL. A row whose kind
is ``PYTHON_TASK`` makes ``serve`` return, so the worker fetches that task from its queue in
Python, as before.

A worker that spun ``rounds`` checks with nothing to do goes to sleep on its queue. Sleeping and
waking are a handshake on two counts, each side storing its own, then a full fence, then
reading the other's: the worker marks itself ``ASLEEP`` and looks once more for a job
(``may_sleep``); the caller counts its job and then looks whether the worker sleeps
(``hand_over``), and if so puts a wake-up token in its queue. At least one of the two sees the
other's store, so a job is never left with its worker asleep.
"""

import numpy as np

from ._jit import jit
from .blas import product
from .spin import ROUNDS_BEFORE_YIELD, _call, _fence, _relax, _release, compare_exchange

# A job row: its kind, dtype (0 float32, 1 float64), then cblas_?gemm's arguments, row-major:
# C (m x n) = op(A) (m x k) op(B) (k x n); A, B and C are data addresses, lda/ldb/ldc their
# row strides in items, TRANS_A/TRANS_B CBLAS's 111 (as stored) or 112 (transposed).
KIND, DTYPE, TRANS_A, TRANS_B, M, N, K, A, LDA, B, LDB, C, LDC = range(13)
FIELDS = 13
PYTHON_TASK, PRODUCT, PRODUCT_ADD = 0, 1, 2  # PRODUCT: C = op(A) op(B); PRODUCT_ADD: C += op(A) op(B)
AWAKE, ASLEEP = 0, 1


@jit
def run_product(job, single, double):
    """The product that ``job`` describes (set into C, or added to it for ``PRODUCT_ADD``),
    through ``single`` (sgemm's address and integer zero, ``kernels.blas.gemm_address``) or
    ``double`` (dgemm's)."""
    adds = job[KIND] == PRODUCT_ADD
    if job[DTYPE] == 0:  # one call a dtype: a variable holding either 1.0 would be typed float64
        product(single, job[TRANS_A], job[TRANS_B], job[M], job[N], job[K], job[A], job[LDA], job[B], job[LDB],
                job[C], job[LDC], np.float32(1.0), adds)  # fmt: skip
    else:
        product(double, job[TRANS_A], job[TRANS_B], job[M], job[N], job[K], job[A], job[LDA], job[B], job[LDB],
                job[C], job[LDC], np.float64(1.0), adds)  # fmt: skip


@jit
def serve(w, posted, finished, jobs, claimed, taken, rounds, single, double, yield_address, waiting, done):
    """Worker ``w`` first publishes its Python task number ``done`` in ``finished[w]`` (0:
    none), then waits for its job number ``taken`` and runs every product job that comes,
    publishing each in ``finished[w]``; it returns the number of its next job once that job is
    a Python task (``posted[w]`` has reached it), after ``rounds`` checks with no job (a job
    already posted is run even with ``rounds`` 0), or right after a publication when the
    caller has stopped spinning and sleeps (``waiting[0]``, see ``caller_sleeps``): the worker
    then wakes it from Python. A product job is run by whoever claims it first (``claimed[w]``
    moved from the job's number less one to its number): the worker, or the caller once its own
    part is done (``take_back``), so a worker that is slow to come never holds the caller up.
    Every ``ROUNDS_BEFORE_YIELD`` checks the core is offered to other threads.

    A Python task is published here, where the worker no longer holds the GIL: a caller that
    sees the count then takes the GIL at once, where one published from Python made it block
    on the GIL until the worker got here (a blocked thread waits to be woken: 28 us a task)."""
    if done > finished[w]:
        _release()  # the task's results (and its failure, if any) before its count
        finished[w] = done
        _fence()
        if waiting[0] != 0:
            return taken
    idle = 0
    while True:
        newest = posted[w]
        if newest >= taken:
            _relax()  # the job's row is read after its count
            taken = newest  # the jobs before it are done: each is waited for before the next comes
            if jobs[w, KIND] == PYTHON_TASK:
                return taken
            ran = compare_exchange(claimed, w, taken - 1, taken)
            if ran:  # else the caller took it back and counts it done itself
                run_product(jobs[w], single, double)
                _release()
                finished[w] = taken
            taken += 1
            idle = 0
            _fence()
            if ran and waiting[0] != 0:
                return taken
        elif idle >= rounds:
            return taken
        else:
            _relax()
            idle += 1
            if idle % ROUNDS_BEFORE_YIELD == 0 and yield_address != 0:
                _call(yield_address)


@jit
def hand_over(jobs, w, row, posted, state):
    """The caller's side: job ``row`` to worker ``w``, counted in ``posted[w]``; True when the
    worker sleeps (or is about to) and must be woken through its queue."""
    jobs[w, :] = row
    _release()
    posted[w] += 1
    _fence()
    return state[w] == ASLEEP


@jit
def may_sleep(state, w, posted, taken):
    """The worker's side: mark worker ``w`` asleep and look once more for its job ``taken``;
    True when it may block on its queue (a job posted from now on wakes it), False (and
    awake again) when the job came meanwhile."""
    state[w] = ASLEEP
    _fence()
    if posted[w] >= taken:
        state[w] = AWAKE
        return False
    return True


@jit
def caller_sleeps(waiting):
    """The caller's side of going to sleep while workers run its product jobs: ``waiting[0]``
    set, then a full fence before it looks at the counts once more. A worker that finishes a
    job after that fence sees the flag (``serve`` returns) and wakes it."""
    waiting[0] = 1
    _fence()


@jit
def take_back(w, number, job, claimed, finished, single, double):
    """The caller's side: run worker ``w``'s product job ``number`` itself if the worker has not
    claimed it yet (then count it done for the worker); True when it did."""
    if not compare_exchange(claimed, w, number - 1, number):
        return False
    run_product(job, single, double)
    _release()
    finished[w] = number
    return True
