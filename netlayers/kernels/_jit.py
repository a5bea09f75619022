"""The single place where numba options are chosen.

Every kernel in this package is decorated with :func:`jit` (``vmath``'s with ``vector_jit``,
below). ``cache=True`` keeps compiled
machine code on disk (an uncached first call costs 0.2-0.85 s, a cached one about 0.01 s);
``nogil=True`` lets the data-prefetch thread run while a kernel computes. ``fastmath`` is
deliberately off: it would let the compiler assume no NaNs, and NaN checks live in numpy.
``parallel`` is off too: on 2 cores it cost more per call than it saved (see design notes).

With ``NUMBA_DISABLE_JIT=1`` the kernels run as plain Python and must give the same results
(``vector_jit``'s to two ulps: compiled, they use fused multiply-adds).
"""

import numba

jit = numba.njit(cache=True, nogil=True)

# For loops that divide: numba's default error model tests every divisor for zero (to raise
# ZeroDivisionError), and that test keeps the loop scalar. With numpy's error model a division
# by zero gives inf or NaN, as in numpy, and the loop vectorizes (netlayers.kernels.vmath).
# Of fastmath's flags only "contract" is on: a * b + c may become one fused multiply-add (one
# rounding instead of two; vmath's polynomials ran 2x faster); nothing is assumed about NaNs.
vector_jit = numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})

# For sums: without "reassoc" a running sum is one chain of dependent additions and stays
# scalar; with it the compiler keeps several vector partial sums and adds them at the end (a
# float32 dot product of 3136 terms: 17 G multiply-adds a second against 3-10 with float32
# lanes kept in an array, one core). The order of the additions then depends on the vector
# width, so a sum may differ in its last bits between machines, never between runs or worker
# counts on one.
sum_jit = numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})

__all__ = ["jit", "sum_jit", "vector_jit"]
