"""numpy's own BLAS matrix product, callable from compiled kernels.

A kernel that needs a matrix product between steps of its own loop (an LSTM's recurrent
product, 50 steps a pass) would otherwise return to Python for each one. ``gemm`` calls the
``cblas_sgemm`` / ``cblas_dgemm`` of the BLAS library numpy is linked with (whose threads
``netlayers.parallel`` holds to one while its workers may run) through its address, passed as an
argument, so that the compiled kernels stay in numba's on-disk cache (a function pointer held
as a global would not be cached).

:func:`gemm_address` gives (address, a zero of its integer type) for a dtype, or None when numpy's BLAS
exports no CBLAS product under the names known here, or with ``NUMBA_DISABLE_JIT=1`` (the
callers then keep numpy's matmul):
OpenBLAS builds with 64-bit integers name it ``cblas_sgemm64_`` (numpy's wheels: with the
``scipy_`` prefix), those with 32-bit integers ``cblas_sgemm``.

:func:`add_product` (out += a @ b, stacks summed) lets gemm add products into a weight
gradient where they are formed (see there).
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
    ``netlayers.parallel`` holds this library's threads to one while its workers may run, and
    no other BLAS a process may have loaded (SciPy's, which numba imports)."""
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
def product(call, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc, one, adds=False):
    """C = op(A) op(B), or C += op(A) op(B) with ``adds`` (row-major; ``a``, ``b``, ``c`` data
    addresses), through ``call``: :func:`gemm_address`'s pair (or a tuple that starts with it).
    ``one`` (1 in the arrays' float type) picks sgemm or dgemm."""
    gemm(call[0], call[1], trans_a, trans_b, m, n, k, one, a, lda, b, ldb, one if adds else one - one, c, ldc)


def layout(x):
    """(CBLAS transpose flag, leading dimension in items) under which BLAS reads the 2-D array
    ``x`` as a row-major matrix (``x`` itself, or the transpose of one), or None."""
    item = x.itemsize
    rows, cols = x.shape
    s0, s1 = x.strides
    if not x.flags.aligned:
        return None
    if (s1 == item or cols == 1) and (rows == 1 or (s0 % item == 0 and s0 // item >= cols)):
        return NO_TRANS, max(s0 // item if rows > 1 else cols, 1)
    if (s0 == item or rows == 1) and (cols == 1 or (s1 % item == 0 and s1 // item >= rows)):
        return TRANS, max(s1 // item if cols > 1 else rows, 1)
    return None


# -- out += a @ b, accumulated by BLAS itself ----------------------------------------------------
#
# A weight gradient is a sum of products, one per chunk of images (or per image, or per Winograd
# tap and chunk). Adding each product through a temporary (``np.matmul(a, b, out=temp)``, then
# ``partial += temp``) costs a buffer as large as the gradient and a pass over it per product;
# gemm's C = A B + 1 C adds into the gradient where the product is formed. Measured on one core
# (float32, the products of VGG-16's conv5 as F(2x2, 3x3) Winograd, 16 taps of 512 x 512 x 64):
# 6.7-6.8 ms against 7.6-8.1 ms through a temporary; 512 x 4608 x 196 (an im2col weight
# gradient) 10.3 against 11.4 ms. In the nets (``tools/bench_nets.py``'s, paired rounds against
# the temporary): VGG-16's conv5 block 0.88x-0.91x the time, ResNet-50's last stage 0.88x,
# AlexNet 0.93x, the others within noise; peak memory VGG-16's conv5 145 -> 135 MiB, ResNet-50's
# last stage 189 -> 173 MiB (-> 160 with worker 0 adding into the weight's gradient itself,
# ``conv_gemm.ColumnChunks``). Python's part of a call is kept small by keeping each call's plan
# (its addresses: 10 us a call, 54 us without).


@jit
def _add_products(call, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc, one):
    """C[i] += op(A[i]) op(B[i]) for the addresses a[i], b[i], c[i], in order (a C address may
    repeat: its products are added one after another)."""
    for i in range(c.size):
        gemm(call[0], call[1], trans_a, trans_b, m, n, k, one, a[i], lda, b[i], ldb, one, c[i], ldc)


def add_product(a, b, out):
    """out += a @ b in the calling thread, as numpy's matmul broadcasts the leading (stack) axes
    of ``a``, ``b`` and ``out``, except that along a stack axis where ``out`` has size 1 (or
    which it lacks) the products are summed into it, in order. Where BLAS can read the three
    (float32 or float64 alike, each matrix a row-major one or its transpose, ``out`` apart from
    ``a`` and ``b``) gemm adds each product into ``out`` itself; else numpy's matmul makes the
    products in a temporary that is then added. The plan of a call (gemm's arguments, every
    product's addresses) is kept by the arrays' addresses, shapes and strides: a layer asks
    for the same products each pass."""
    key = (a.ctypes.data, b.ctypes.data, out.ctypes.data, a.shape, b.shape, out.shape)
    key += (a.strides, b.strides, out.strides, a.dtype, b.dtype, out.dtype)
    plan = _plans.get(key)
    if plan is None:
        if len(_plans) >= PLANS_KEPT:
            _plans.clear()
        plan = _plans[key] = _plan(a, b, out)
    if plan is _NUMPY:
        _add_by_numpy(a, b, out)
    elif plan is not _NOTHING:
        _add_products(*plan)
    return out


_plans = {}
PLANS_KEPT = 1024  # plans kept at most (then all are dropped and made again as needed)
_NUMPY, _NOTHING = "numpy", "nothing"


def _plan(a, b, out):
    """``_add_products``' arguments for out += a @ b, or ``_NUMPY`` (BLAS cannot read the
    arrays) or ``_NOTHING`` (no product: an empty stack or inner dimension)."""
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2], out.shape[:-2])
    if a.shape[-1] != b.shape[-2] or out.shape[-2:] != (a.shape[-2], b.shape[-1]):
        raise ValueError(f"add_product: out {out.shape} += a {a.shape} @ b {b.shape} do not match")
    if 0 in batch or 0 in a.shape[-2:] or 0 in b.shape[-2:]:
        return _NOTHING
    call = gemm_address(out.dtype)
    if call is None or a.dtype != out.dtype or b.dtype != out.dtype or _overlaps(out, a, b):
        return _NUMPY
    layouts = _product_layouts(a[(0,) * (a.ndim - 2)], b[(0,) * (b.ndim - 2)], out[(0,) * (out.ndim - 2)])
    if layouts is None:
        return _NUMPY
    swapped, (trans_a, lda), (trans_b, ldb), ldc = layouts
    first, second = (b, a) if swapped else (a, b)
    m, n = (out.shape[-1], out.shape[-2]) if swapped else out.shape[-2:]
    k = a.shape[-1]
    first, second, target = (_addresses(x, batch) for x in (first, second, out))
    return call, trans_a, trans_b, m, n, k, first, lda, second, ldb, target, ldc, out.dtype.type(1)


def _add_by_numpy(a, b, out):
    products = np.matmul(a, b)
    stacked = out.ndim - 2
    if products.ndim - 2 > stacked:  # stack axes out lacks
        products = products.sum(axis=tuple(range(products.ndim - 2 - stacked)))
    ones = tuple(i for i in range(stacked) if out.shape[i] == 1 and products.shape[i] != 1)
    if ones:
        products = products.sum(axis=ones, keepdims=True)
    out += products


def _overlaps(out, a, b):
    return np.may_share_memory(out, a) or np.may_share_memory(out, b)


def _product_layouts(a, b, out):
    """For one product out = a @ b of 2-D arrays: (whether it runs as out^T = b^T a^T, the
    layouts of its first and second operands, out's leading dimension), or None where BLAS
    cannot read the three."""
    out_layout = layout(out)
    if out_layout is None:
        return None
    swapped = out_layout[0] == TRANS
    if swapped:
        a, b, out = b.T, a.T, out.T
        out_layout = layout(out)
    a_layout, b_layout = layout(a), layout(b)
    if a_layout is None or b_layout is None or out_layout[0] != NO_TRANS:
        return None
    return swapped, a_layout, b_layout, out_layout[1]


def _addresses(x, batch):
    """The data address of each matrix of ``x`` broadcast to the stack shape ``batch``, in C
    order (int64)."""
    offsets = np.zeros(1, np.int64)
    lead = x.ndim - 2
    for axis, size in enumerate(batch):
        mine = axis - (len(batch) - lead)  # x's own axis, if it has this one
        stride = x.strides[mine] if mine >= 0 and x.shape[mine] != 1 else 0
        if size > 1:
            offsets = (offsets[:, None] + np.arange(size, dtype=np.int64) * stride).reshape(-1)
    return offsets + x.ctypes.data
