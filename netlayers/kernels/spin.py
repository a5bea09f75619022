"""Waiting without the GIL: a thread that expects work or results within microseconds spins on
counters in shared memory instead of holding the GIL between polls (which stalled the thread it
waited for) or sleeping (a sleep took 90 us on the virtual machines measured).

``wait_for_counts(counts, lo, hi, targets, rounds)`` returns True as soon as ``counts[i] >=
targets[i]`` for every ``i`` in ``range(lo, hi)``, or False after ``rounds`` checks (a check
and a CPU relax hint take about 30 ns). Each check reads memory afresh: an acquire fence and
the x86 ``pause`` hint sit between checks. As plain Python (``NUMBA_DISABLE_JIT=1``) the
loop yields the GIL and the core between checks instead.
"""

import os
import platform

import numba
from llvmlite import ir
from numba.core import types
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


if numba.config.DISABLE_JIT:  # as plain Python the loop holds the GIL: let it go between checks

    def _relax():  # noqa: F811
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
