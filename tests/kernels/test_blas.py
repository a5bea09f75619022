"""numpy's BLAS product called from compiled code (netlayers.kernels.blas): found in the library
numpy links (not another BLAS the process loaded), and right for every transposition, both
float types and sub-matrices given by address and leading dimension."""

import os
import subprocess

import numba
import numpy as np
import pytest

from netlayers.kernels import blas


@numba.njit(cache=False)
def product_of(call, trans_a, trans_b, a, b, c, columns):
    """c[:, :columns] = op(a) op(b) for C-contiguous a, b, c (c's leading dimension its row)."""
    m = c.shape[0]
    k = a.shape[0] if trans_a == blas.TRANS else a.shape[1]
    blas.product(
        call, trans_a, trans_b, m, columns, k, a.ctypes.data, a.shape[1], b.ctypes.data, b.shape[1],
        c.ctypes.data, c.shape[1], c.dtype.type(1),
    )  # fmt: skip


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (True, False), (False, True), (True, True)])
def test_the_product_is_numpys_for_every_transposition(dtype, trans_a, trans_b):
    rng = np.random.default_rng(0)
    m, n, k = 7, 5, 11
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    call = blas.gemm_address(dtype)
    assert call is not None
    c = np.full((m, n + 3), 7.0, dtype)  # 3 columns past the product stay as they were
    flags = [blas.TRANS if t else blas.NO_TRANS for t in (trans_a, trans_b)]
    product_of(call, *flags, a, b, c, n)
    want = (a.T if trans_a else a) @ (b.T if trans_b else b)
    np.testing.assert_allclose(c[:, :n], want, rtol=1e-5 if dtype == np.float32 else 1e-12)
    np.testing.assert_array_equal(c[:, n:], 7.0)


def test_the_blas_found_is_the_library_numpy_is_linked_with():
    """Where SciPy is installed numba imports it, and its OpenBLAS (32-bit integers, threads of
    its own) may be loaded too: the product must come from numpy's."""
    try:
        import scipy.linalg  # noqa: F401  (loads SciPy's BLAS where there is one)
    except ImportError:
        pass
    from numpy._core import _multiarray_umath

    address, width = blas.gemm_address(np.float32)
    linked = subprocess.run(["ldd", _multiarray_umath.__file__], capture_output=True, text=True, check=True).stdout
    mapped = _mapping_of(address)
    assert mapped is not None and os.path.basename(mapped) in linked, (mapped, linked)
    assert type(width) in (np.int32, np.int64) and width == 0


def _mapping_of(address):
    """The file mapped at ``address`` in this process (from /proc/self/maps)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            low, high = (int(v, 16) for v in fields[0].split("-"))
            if low <= address < high and len(fields) >= 6:
                return fields[5]
    return None


def test_plain_python_finds_nothing_to_call(monkeypatch):
    """With NUMBA_DISABLE_JIT=1 no compiled kernel can call it: the callers keep numpy's."""
    monkeypatch.setattr(numba.config, "DISABLE_JIT", True)
    assert blas.gemm_address(np.float32) is None


def test_the_blas_whose_threads_a_pass_holds_is_numpys_alone():
    """With SciPy imported first (its own OpenBLAS loaded before netlayers looks), the library
    ``parallel`` switches to one thread during a pass is numpy's only: SciPy's is left alone."""
    script = (
        "import scipy.linalg, os\n"
        "from threadpoolctl import threadpool_info\n"
        "from netlayers import parallel\n"
        "from netlayers.kernels import blas\n"
        "blas_files = {os.path.realpath(i['filepath']) for i in threadpool_info() if i['user_api'] == 'blas'}\n"
        "held = [os.path.realpath(lib.filepath) for lib in parallel._blas().libraries]\n"
        "print(len(blas_files), held == [blas.numpy_blas_file()], os.path.basename(held[0]))\n"
    )
    result = subprocess.run(["python", "-c", script], capture_output=True, text=True, check=True)
    count, numpys_alone, held = result.stdout.split()
    from numpy._core import _multiarray_umath

    linked = subprocess.run(["ldd", _multiarray_umath.__file__], capture_output=True, text=True, check=True).stdout
    assert int(count) == 2 and numpys_alone == "True" and held in linked, result.stdout


# -- add_product: out += a @ b, added by gemm itself ---------------------------------------------
def _stacks(rng, dtype):
    """(a, b, out, want) cases: stacks broadcast, summed into out where it lacks an axis or has
    size 1 there, transposed operands and a transposed out."""
    r = lambda *shape: rng.standard_normal(shape).astype(dtype)  # noqa: E731
    a3, b3 = r(3, 5, 7), r(3, 7, 4)
    a4, b4 = r(6, 2, 5, 7), r(6, 2, 7, 4)
    cases = [
        (a3, b3, r(3, 5, 4), lambda out: out + a3 @ b3),
        (a3, b3, r(5, 4), lambda out: out + (a3 @ b3).sum(0)),
        (a4, b4, r(2, 5, 4), lambda out: out + (a4 @ b4).sum(0)),
        (a4, b4, r(1, 2, 5, 4), lambda out: out + (a4 @ b4).sum(0, keepdims=True)),
        (a3[0], b3, r(3, 5, 4), lambda out: out + a3[0] @ b3),  # a 2-D a against a stack
        (r(7, 5).T, r(4, 7).T, r(5, 4), None),  # both operands transposed
        (a3[1], b3[1], r(4, 5).T, None),  # out transposed: out^T += b^T a^T
    ]
    return [(a, b, out, want or (lambda out, a=a, b=b: out + a @ b)) for a, b, out, want in cases]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_add_product_adds_by_gemm_without_numpys_matmul(dtype, monkeypatch):
    rng = np.random.default_rng(3)
    cases = [(a, b, out, want(out.copy())) for a, b, out, want in _stacks(rng, dtype)]
    monkeypatch.setattr(np, "matmul", lambda *args, **kwargs: pytest.fail("numpy's matmul was called"))
    for a, b, out, want in cases:
        assert blas.add_product(a, b, out) is out
        np.testing.assert_allclose(out, want, rtol=1e-5 if dtype == np.float32 else 1e-12)


def test_add_product_falls_back_to_numpy_where_blas_cannot_read():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((6, 2, 5, 14)), rng.standard_normal((6, 2, 14, 4))
    out = rng.standard_normal((2, 5, 4))
    cases = [
        (a[..., ::2], b[:, :, ::2], out.copy()),  # strided inner dimension
        (a.astype(np.float32), b, out.copy()),  # mixed dtypes
        (a.astype(np.int64), b.astype(np.int64), out.astype(np.int64)),  # no BLAS for integers
    ]
    for x, y, target in cases:
        want = target + np.matmul(x, y).sum(0)
        blas.add_product(x, y, target)
        np.testing.assert_allclose(target, want, rtol=1e-12)
    square = rng.standard_normal((4, 4))
    want = square + square @ square
    blas.add_product(square, square, square)  # out is an operand: through a temporary
    np.testing.assert_allclose(square, want, rtol=1e-12)


def test_add_product_checks_shapes_and_adds_nothing_for_empty_stacks():
    out = np.ones((3, 4))
    with pytest.raises(ValueError, match="do not match"):
        blas.add_product(np.ones((3, 5)), np.ones((6, 4)), out)
    blas.add_product(np.ones((0, 3, 5)), np.ones((0, 5, 4)), out)
    blas.add_product(np.ones((3, 0)), np.ones((0, 4)), out)
    np.testing.assert_array_equal(out, 1.0)
