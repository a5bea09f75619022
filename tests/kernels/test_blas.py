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
