"""numpy's own BLAS matrix product, callable from compiled kernels.

A kernel that needs a matrix product between steps of its own loop (an LSTM's recurrent
product, 50 steps a pass) would otherwise return to Python for each one. ``gemm`` calls the
``cblas_sgemm`` / ``cblas_dgemm`` of the BLAS library numpy is linked with (whose threads
``netlayers.parallel`` holds to one during a pass) through its address, passed as an
argument, so that the compiled kernels stay in numba's on-disk cache (a function pointer held
as a global would not be cached).

:func:`gemm_address` gives (address, a zero of its integer type) for a dtype, or None when numpy's BLAS
exports no CBLAS product under the names known here, or with ``NUMBA_DISABLE_JIT=1`` (the
callers then keep numpy's matmul):
OpenBLAS builds with 64-bit integers name it ``cblas_sgemm64_`` (numpy's wheels: with the
``scipy_`` prefix), those with 32-bit integers ``cblas_sgemm``.
"""

import ctypes
import os

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ._jit import jit

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112  # CBLAS's enum values

_found = {}


def _numpy_library():
    """ctypes' handle of numpy's core extension: looking a name up through it searches that
    module and the libraries it was linked with, so the BLAS found is numpy's own, whatever
    other BLAS libraries the process loaded. (Where SciPy is installed numba imports it, and
    SciPy's OpenBLAS, 32-bit integers and threads of its own that no pass holds to one, came
    first in threadpoolctl's list: an LSTM's steps then ran 15x slower, its threads spinning
    beside the workers.)"""
    try:
        from numpy._core import _multiarray_umath as core
    except ImportError:  # numpy 1.x
        from numpy.core import _multiarray_umath as core
    try:
        return ctypes.CDLL(core.__file__)
    except OSError:
        return None


def gemm_address(dtype):
    """(address of numpy's BLAS cblas_?gemm for ``dtype``, a zero of its integer type:
    np.int64(0) or np.int32(0)), or None (no such BLAS, or another dtype than float32 and
    float64): the ``call`` of :func:`product`."""
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64) or numba.config.DISABLE_JIT:  # as plain Python nothing can call it
        return None
    if dtype not in _found:
        _found[dtype] = _find(("s" if dtype == np.float32 else "d") + "gemm")
    return _found[dtype]


def numpy_blas_file():
    """The real path of the shared library that holds numpy's own BLAS (the one defining the
    sgemm numpy calls), or None where that cannot be told (no CBLAS found, no ``dladdr``).
    ``netlayers.parallel`` holds this library's threads to one during a pass, and no other
    BLAS a process may have loaded (SciPy's, which numba imports)."""
    found = _find("sgemm")
    if found is None:
        return None

    class Info(ctypes.Structure):
        _fields_ = [("fname", ctypes.c_char_p), ("fbase", ctypes.c_void_p)]
        _fields_ += [("sname", ctypes.c_char_p), ("saddr", ctypes.c_void_p)]

    try:
        dladdr = ctypes.CDLL(None).dladdr
    except (OSError, AttributeError):
        return None
    info = Info()
    if not dladdr(ctypes.c_void_p(found[0]), ctypes.byref(info)) or not info.fname:
        return None
    return os.path.realpath(info.fname.decode())


def _find(name):
    candidates = [
        (f"scipy_cblas_{name}64_", np.int64),
        (f"cblas_{name}64_", np.int64),
        (f"scipy_cblas_{name}", np.int32),
        (f"cblas_{name}", np.int32),
    ]
    library = _numpy_library()
    for symbol, width in candidates if library is not None else []:
        function = getattr(library, symbol, None)
        if function is not None:
            return ctypes.cast(function, ctypes.c_void_p).value, width(0)
    return None


@intrinsic
def gemm(typingctx, address, width, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """C = alpha op(A) op(B) + beta C, row-major, through the cblas_?gemm at ``address``.
    ``width`` is a value of the library's integer type (``gemm_address``'s second item:
    np.int32(0) or np.int64(0)); ``a``, ``b``, ``c`` are data addresses (``array.ctypes.data``);
    ``alpha`` and ``beta`` have the arrays' float type, which picks sgemm's or dgemm's form."""
    if not isinstance(alpha, types.Float) or beta != alpha:
        return None
    signature = types.void(address, width, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

    def codegen(context, builder, sig, args):
        (address_, _, ta, tb, m_, n_, k_, alpha_, a_, lda_, b_, ldb_, beta_, c_, ldc_) = args
        int_type = ir.IntType(sig.args[1].bitwidth)
        enum = ir.IntType(32)
        float_type = context.get_value_type(sig.args[7])
        pointer = ir.IntType(8).as_pointer()
        function_type = ir.FunctionType(
            ir.VoidType(),
            [enum, enum, enum, int_type, int_type, int_type, float_type, pointer, int_type]
            + [pointer, int_type, float_type, pointer, int_type],
        )
        function = builder.inttoptr(address_, function_type.as_pointer())

        def fit(value, of):
            if value.type.width == of.width:
                return value
            return builder.sext(value, of) if value.type.width < of.width else builder.trunc(value, of)

        builder.call(
            function,
            [
                ir.Constant(enum, ROW_MAJOR),
                fit(ta, enum),
                fit(tb, enum),
                fit(m_, int_type),
                fit(n_, int_type),
                fit(k_, int_type),
                alpha_,
                builder.inttoptr(a_, pointer),
                fit(lda_, int_type),
                builder.inttoptr(b_, pointer),
                fit(ldb_, int_type),
                beta_,
                builder.inttoptr(c_, pointer),
                fit(ldc_, int_type),
            ],
        )
        return context.get_dummy_value()

    return signature, codegen


@jit
def product(call, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc, one):
    """C = op(A) op(B) (row-major; ``a``, ``b``, ``c`` data addresses), through ``call``:
    :func:`gemm_address`'s pair (or a tuple that starts with it). ``one`` (1 in the arrays' float type)
    picks sgemm or dgemm."""
    gemm(call[0], call[1], trans_a, trans_b, m, n, k, one, a, lda, b, ldb, one - one, c, ldc)
