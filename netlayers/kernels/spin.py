"""Waiting without the GIL: a thread that expects work or results within microseconds spins on
counters in shared memory instead of holding the GIL between polls (which stalled the thread it
waited for) or sleeping (a sleep took 90 us on the virtual machines measured).

``wait_for_counts(counts, lo, hi, targets, rounds)`` returns True as soon as ``counts[i] >=
targets[i]`` for every ``i`` in ``range(lo, hi)``, or False after ``rounds`` checks (a check
and a CPU relax hint take about 30 ns). Each check reads memory afresh: an acquire fence and
the x86 ``pause`` hint sit between checks. ``publish`` and ``wait_all`` make a barrier for
threads that run a loop side by side in compiled code (each publishes its step count after a
release fence). As plain Python (``NUMBA_DISABLE_JIT=1``) the
loop yields the GIL and the core between checks instead.
"""

import os
import platform

import numba
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from ._jit import jit

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")


@intrinsic
def _relax(typingctx):
    """An acquire fence (later loads are not moved before it) and, on x86, ``pause``."""

    def codegen(context, builder, signature, args):
        builder.fence("acquire")
        if _X86:
            pause = builder.module.declare_intrinsic("llvm.x86.sse2.pause", fnty=ir.FunctionType(ir.VoidType(), []))
            builder.call(pause, [])
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def _release(typingctx):
    """A release fence: earlier stores are visible to other threads before later ones."""

    def codegen(context, builder, signature, args):
        builder.fence("release")
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def _fence(typingctx):
    """A full fence: this thread's earlier stores are visible to others before its later loads
    (what one side of a "store mine, then read theirs" handshake needs; x86 reorders these)."""

    def codegen(context, builder, signature, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def compare_exchange(typingctx, array, index, expected, new):
    """Atomically (sequentially consistent): if ``array[index] == expected`` set it to ``new``;
    True when it did. For a 1-D int64 array: two threads that both try to move a count from
    ``expected`` on, only one succeeds."""
    if not (isinstance(array, types.Array) and array.ndim == 1 and array.dtype == types.int64):
        return None

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        view = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, view, [args[1]], wraparound=False)
        old = context.cast(builder, args[2], signature.args[2], types.int64)
        value = context.cast(builder, args[3], signature.args[3], types.int64)
        result = builder.cmpxchg(pointer, old, value, "seq_cst", "seq_cst")
        return builder.extract_value(result, 1)

    return types.boolean(array, index, expected, new), codegen


@intrinsic
def _call(typingctx, address):
    """Call the C function ``int f(void)`` at ``address`` (libc's ``sched_yield``)."""

    def codegen(context, builder, signature, args):
        function_type = ir.FunctionType(ir.IntType(32), [])
        builder.call(builder.inttoptr(args[0], function_type.as_pointer()), [])
        return context.get_dummy_value()

    return types.void(address), codegen


def _yield_address():
    """The address of libc's ``sched_yield``, or 0 where there is none."""
    try:
        import ctypes

        return ctypes.cast(ctypes.CDLL(None).sched_yield, ctypes.c_void_p).value or 0
    except (OSError, AttributeError):
        return 0


YIELD = _yield_address()
ROUNDS_BEFORE_YIELD = 2000  # about 60 us of checks, then the core is offered to other threads
# The time of one check of a spinning loop: compiled about 30 ns (measured: 66,666 checks in
# 1.85 ms); as plain Python each check yields the core, a few microseconds.
CHECK_SECONDS = 2e-6 if numba.config.DISABLE_JIT else 3e-8


if numba.config.DISABLE_JIT:  # as plain Python the loop holds the GIL: let it go between checks

    def _relax():  # noqa: F811
        os.sched_yield()

    def _release():  # noqa: F811
        pass

    def _fence():  # noqa: F811
        pass

    def compare_exchange(array, index, expected, new):  # noqa: F811
        if array[index] != expected:
            return False
        array[index] = new
        return True

    def _call(address):  # noqa: F811
        os.sched_yield()


@jit
def wait_for_counts(counts, lo, hi, targets, rounds):
    for _ in range(rounds):
        ready = True
        for i in range(lo, hi):
            if counts[i] < targets[i]:
                ready = False
                break
        if ready:
            return True
        _relax()
    return False


@jit
def publish(counts, i, value):
    """counts[i] = value, after every store this thread made before (a release fence): another
    thread that sees the value (``wait_all``) sees those stores too."""
    _release()
    counts[i] = value


@jit
def wait_all(counts, target, yield_address):
    """Spin until every counts[i] >= target: a barrier of threads that each ``publish`` their
    own count (each step of a loop the threads run side by side in compiled code). Every
    ``ROUNDS_BEFORE_YIELD`` checks the core is offered to other threads (``yield_address``:
    ``YIELD``, libc's sched_yield; 0: never), so that a thread waited for that shares this
    core (or whose core another process holds) is not kept waiting a whole time slice."""
    rounds = 0
    while not _all_reached(counts, target):
        _relax()
        rounds += 1
        if rounds == ROUNDS_BEFORE_YIELD:
            rounds = 0
            if yield_address != 0:
                _call(yield_address)


@jit
def _all_reached(counts, target):
    for i in range(counts.size):
        if counts[i] < target:
            return False
    return True
