"""netlayers.kernels.vmath: float32 sigmoid, tanh, ELU, Swish and the LSTM gates against float64
references, at special values, across block edges, in place and split over workers."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from netlayers import parallel
from netlayers.kernels import elementwise, recurrent, vmath

REPO = Path(__file__).resolve().parents[2]
MAX_ULPS = 4


def sample(seed=0):
    rng = np.random.default_rng(seed)
    parts = [
        rng.standard_normal(50_000) * 4,
        rng.uniform(-100, 100, 20_000),
        np.linspace(-1, 1, 20_001),
        np.linspace(-90, 90, 20_001),
        [0.0, 1e-30, -1e-30, 1e-6, -1e-6, 0.3465, -0.3466, 0.625, -0.625, 86.9, -86.9, 87.5, -87.5],
    ]
    return np.concatenate(parts).astype(np.float32)


def sigmoid64(x):
    return 1 / (1 + np.exp(-x))


def elu64(x, alpha=1.0):
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


def assert_close(got, want, where="", max_ulps=MAX_ULPS):
    """Within MAX_ULPS float32 ulps of the float64 ``want`` where that is a normal float32; within
    1e-37 absolute below (vmath holds exp at exp(-87): sigmoid(-100) is 6e-39, not 4e-44)."""
    want32 = want.astype(np.float32)
    normal = np.abs(want32) >= 1e-30
    ulps = np.abs(got[normal].astype(np.float64) - want[normal]) / np.spacing(np.abs(want32[normal]))
    assert ulps.max() <= max_ulps, f"{where}: {ulps.max():.1f} ulps at x = {np.flatnonzero(normal)[ulps.argmax()]}"
    assert np.abs(got[~normal].astype(np.float64) - want[~normal]).max(initial=0) <= 1e-37, where


def run(kernel, x):
    y = np.empty_like(x)
    kernel(x, y)
    return y


def test_sigmoid_tanh_elu_swish_within_a_few_ulps():
    x = sample()
    xd = x.astype(np.float64)
    assert_close(run(vmath.sigmoid, x), sigmoid64(xd), "sigmoid")
    assert_close(run(vmath.tanh, x), np.tanh(xd), "tanh")
    assert_close(run(lambda a, b: vmath.elu(a, np.float32(0.7), b), x), elu64(xd, 0.7), "elu")
    assert_close(run(vmath.softplus, x), np.logaddexp(0, xd), "softplus")
    y = x[x > -80]  # BNLL's outputs are > 0; below -88.7 the exact value is past float32
    assert_close(run(vmath.one_minus_exp_neg, y), -np.expm1(-y.astype(np.float64)), "1 - exp(-y)")
    s, y = np.empty_like(x), np.empty_like(x)
    vmath.swish(x, np.float32(1.5), s, y)
    scaled = (np.float32(1.5) * x).astype(np.float64)  # beta x is rounded to float32 first
    assert_close(s, sigmoid64(scaled), "swish's sigmoid")
    assert_close(y, xd * s.astype(np.float64), "swish")


def test_special_values():
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 200.0, -200.0], np.float32)
    sig, tanh = run(vmath.sigmoid, x), run(vmath.tanh, x)
    elu = run(lambda a, b: vmath.elu(a, np.float32(2.0), b), x)
    assert np.isnan(sig[0]) and np.isnan(tanh[0]) and np.isnan(elu[0])  # NaN stays NaN
    assert sig[1] == 1.0 and 0.0 <= sig[2] < 1e-37 and sig[3] == 0.5 and sig[5] == 1.0 and 0 <= sig[6] < 1e-37
    np.testing.assert_array_equal(tanh[1:], [1.0, -1.0, 0.0, -0.0, 1.0, -1.0])
    assert np.signbit(tanh[4]) and not np.signbit(tanh[3])
    np.testing.assert_array_equal(elu[1:], [np.inf, -2.0, 0.0, 0.0, 200.0, -2.0])
    softplus, decay = run(vmath.softplus, x), run(vmath.one_minus_exp_neg, x)
    assert np.isnan(softplus[0]) and np.isnan(decay[0])
    np.testing.assert_array_equal(softplus[[1, 5]], [np.inf, 200.0])
    assert softplus[3] == softplus[4] == np.float32(np.log(2)) and 0 <= softplus[6] < 1e-37
    assert decay[1] == 1.0 and decay[3] == 0.0 and decay[5] == 1.0


@pytest.mark.parametrize("size", [0, 1, 7, vmath.BLOCK - 1, vmath.BLOCK, vmath.BLOCK + 1, 3 * vmath.BLOCK + 5])
def test_every_length_and_in_place(size):
    x = sample(1)[:size].copy()
    for kernel in (vmath.sigmoid, vmath.tanh, lambda a, b: vmath.elu(a, np.float32(1.0), b), vmath.softplus):
        whole = run(kernel, sample(1))[:size]  # the same elements computed inside a longer array
        out = run(kernel, x)
        np.testing.assert_array_equal(out, whole)
        in_place = x.copy()
        kernel(in_place, in_place)
        np.testing.assert_array_equal(in_place, out)


def test_split_over_workers_gives_the_same_bits(thread_count):
    x = np.random.default_rng(2).standard_normal((64, 32, 40, 40)).astype(np.float32)  # 13 MB
    assert 2 * x.nbytes >= parallel.SPLIT_MIN_BYTES
    one = run(vmath.sigmoid, x.reshape(-1)).reshape(x.shape)
    thread_count(2)
    two = elementwise.sigmoid_forward(x, out=np.empty_like(x))
    tanh = elementwise.tanh_forward(x, out=np.empty_like(x))
    np.testing.assert_array_equal(two, one)
    np.testing.assert_array_equal(tanh, run(vmath.tanh, x.reshape(-1)).reshape(x.shape))


def test_float64_keeps_numpy():
    x = np.random.default_rng(3).standard_normal(1000) * 10
    np.testing.assert_allclose(elementwise.sigmoid_forward(x, np.empty_like(x)), sigmoid64(x), rtol=1e-12, atol=1e-16)
    np.testing.assert_array_equal(elementwise.tanh_forward(x, np.empty_like(x)), np.tanh(x))
    got = elementwise.elu_forward(x, 0.5, np.empty_like(x), np.empty_like(x))
    np.testing.assert_allclose(got, elu64(x, 0.5), rtol=1e-14)
    got = elementwise.softplus(x, np.empty_like(x), np.empty_like(x))
    np.testing.assert_allclose(got, np.logaddexp(0, x), rtol=1e-14)
    np.testing.assert_allclose(elementwise.one_minus_exp_neg(x, np.empty_like(x)), -np.expm1(-x), rtol=1e-14)


def test_non_contiguous_float32_takes_numpy():
    x = np.random.default_rng(4).standard_normal((20, 10)).astype(np.float32)
    out = np.zeros((20, 20), np.float32)
    elementwise.sigmoid_forward(x, out=out[:, :10])
    np.testing.assert_allclose(out[:, :10], sigmoid64(x.astype(np.float64)), rtol=1e-6, atol=1e-7)
    assert not out[:, 10:].any()


def lstm_cell64(gates, c_prev, cont):
    """The LSTM cell's definition in float64: acts, c, tanh(c), h."""
    dim = c_prev.shape[1]
    acts = np.concatenate([sigmoid64(gates[:, : 3 * dim]), np.tanh(gates[:, 3 * dim :])], axis=1)
    i, f, o, g = (acts[:, k * dim : (k + 1) * dim] for k in range(4))
    c = cont[:, None] * f * c_prev + i * g
    return acts, c, np.tanh(c), o * np.tanh(c)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lstm_cell_forward_matches_its_definition(dtype):
    """The float32 one-pass kernel and the numpy path (float64) against the float64 definition;
    cont 0 drops the old cell."""
    rng = np.random.default_rng(5)
    dim, rows = 37, 9
    gates = (rng.standard_normal((rows, 4 * dim)) * 3).astype(dtype)
    c_prev = (rng.standard_normal((rows, dim)) * 2).astype(dtype)
    cont = np.array([1, 0, 1, 1, 0, 1, 1, 1, 1], dtype)
    acts, c, tanh_c, h = (np.empty_like(a) for a in (gates, c_prev, c_prev, c_prev))
    recurrent.lstm_cell_forward(gates, c_prev, cont, acts, c, tanh_c, h)
    want = lstm_cell64(gates.astype(np.float64), c_prev.astype(np.float64), cont.astype(np.float64))
    if dtype == np.float32:
        assert_close(acts, want[0], "gates' activations")
    tolerance = {"rtol": 1e-5, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-14}
    for got, expected, name in zip((acts, c, tanh_c, h), want, ("acts", "c", "tanh(c)", "h")):
        np.testing.assert_allclose(got, expected, err_msg=name, **tolerance)
    np.testing.assert_array_equal(c[1], acts[1, :dim] * acts[1, 3 * dim :])  # cont 0: c = i g


def assert_ulps(got, want, err_msg="", ulps=2):
    """float32 arrays equal to ``ulps`` units in the last place (the same NaNs and infinities)."""
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=err_msg)
    finite, special = np.isfinite(want), np.isinf(want)
    np.testing.assert_array_equal(got[special], want[special], err_msg=err_msg)
    scale = np.spacing(np.maximum(np.abs(got[finite]), np.abs(want[finite])))
    worst = (np.abs(got[finite].astype(np.float64) - want[finite]) / scale).max(initial=0)
    assert worst <= ulps, f"{err_msg}: {worst:.0f} ulps apart"


def assert_cells_agree(got, want, c_prev, cont, dim):
    """Two runs of the LSTM cell (acts, c, tanh(c), h) agree to float32 rounding: a fused
    multiply-add where the compiler chose one (``vector_jit``'s "contract": a loop's vector body
    against its remainder, one specialization against another) moves c = f cont c_prev + i g by
    a rounding of its larger term, which tanh(c) and h carry on."""
    assert_ulps(got[0], want[0], "acts")
    i, f, _, g = (want[0][:, k * dim : (k + 1) * dim].astype(np.float64) for k in range(4))
    terms = np.abs(f * cont[:, None] * c_prev) + np.abs(i * g)
    bound = 3 * np.finfo(np.float32).eps * np.nan_to_num(terms, posinf=0) + 1e-38
    for name, a, b in zip(("c", "tanh(c)", "h"), got[1:], want[1:]):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=name)
        ok = np.isnan(b) | (a == b) | (np.abs(a.astype(np.float64) - b) <= bound + np.spacing(np.abs(b)))
        assert ok.all(), f"{name}: {np.abs(a - b)[~ok].max()} apart"


@pytest.mark.parametrize("dim, u0, u1", [(37, 0, 37), (64, 0, 32), (300, 13, 290), (20, 3, 17)])
def test_lstm_step_units_is_the_cell_of_gates_plus_bias_plus_the_product(dim, u0, u1):
    """A worker's step (the bias and the recurrent product added as the cell reads the gates;
    pieces of ``LSTM_PIECE`` units) = the cell of the summed pre-activations, (gates + bias) +
    product (to the rounding of a fused multiply-add), in the units' columns alone; the gates
    stay as they were (bit for bit); the next step's scaled state is h times its cont. Special
    values (NaN, infinities, signed zeros) included."""
    rng = np.random.default_rng(11)
    rows, count = 6, u1 - u0
    gates = (rng.standard_normal((rows, 4 * dim)) * 3).astype(np.float32)
    gates.flat[rng.choice(gates.size, 5, replace=False)] = [np.nan, np.inf, -np.inf, 0.0, -0.0]
    product = (rng.standard_normal((rows, 4 * count)) * 2).astype(np.float32)
    bias = rng.standard_normal(4 * dim).astype(np.float32)
    c_prev = (rng.standard_normal((rows, dim)) * 2).astype(np.float32)
    cont = np.array([1, 0, 1, 1, 0, 1], np.float32)
    cont_next = np.array([0, 1, 1, 0, 1, 1], np.float32)
    summed = gates + bias
    for k in range(4):
        summed[:, k * dim + u0 : k * dim + u1] += product[:, k * count : (k + 1) * count]
    fresh = lambda: [np.full((rows, 4 * dim), 7, np.float32)] + [np.full((rows, dim), 7, np.float32) for _ in range(3)]  # noqa: E731
    want = fresh()
    vmath.lstm_cell_units(summed, c_prev, cont, *want, u0, u1)
    got, scaled, before = fresh(), np.full((rows, dim), 7, np.float32), gates.copy()
    vmath.lstm_step_units(gates, bias, product, c_prev, cont, *got, u0, u1, cont_next, scaled, True)
    assert_cells_agree(got, want, c_prev, cont, dim)
    np.testing.assert_array_equal(gates.view(np.int32), before.view(np.int32))
    np.testing.assert_array_equal(scaled[:, u0:u1], got[3][:, u0:u1] * cont_next[:, None])
    assert (scaled[:, :u0] == 7).all() and (scaled[:, u1:] == 7).all()
    untouched = fresh()
    vmath.lstm_step_units(gates, bias, product, c_prev, cont, *untouched, u0, u1, cont_next, scaled[:0], False)
    whole = fresh()
    vmath.lstm_cell_units(summed, c_prev, cont, *whole, 0, dim)
    units = np.zeros(dim, bool)
    units[u0:u1] = True
    gate_units = np.tile(units, 4)
    assert_cells_agree(
        [a[:, gate_units if k == 0 else units] for k, a in enumerate(untouched)],
        [b[:, gate_units if k == 0 else units] for k, b in enumerate(whole)],
        c_prev[:, units], cont, u1 - u0,
    )  # fmt: skip
    for name, a in zip(("acts", "c", "tanh(c)", "h"), untouched):  # other units' columns stay
        assert (a[:, ~(gate_units if name == "acts" else units)] == 7).all(), name


def test_lstm_cell_units_gives_the_sigmoid_and_tanh_kernels_values():
    """The cell's activations are vmath.sigmoid's and vmath.tanh's, and c, tanh(c) and h the
    definition's float32 operations on them (to the rounding of a fused multiply-add)."""
    rng = np.random.default_rng(12)
    rows, dim = 5, 150  # more units than one piece
    gates = (rng.standard_normal((rows, 4 * dim)) * 4).astype(np.float32)
    c_prev = rng.standard_normal((rows, dim)).astype(np.float32)
    cont = np.array([1, 1, 0, 1, 1], np.float32)
    acts, c, tanh_c, h = np.empty_like(gates), *(np.empty_like(c_prev) for _ in range(3))
    vmath.lstm_cell_units(gates, c_prev, cont, acts, c, tanh_c, h, 0, dim)
    sig, tan = np.empty_like(gates), np.empty_like(gates)
    vmath.sigmoid(gates.reshape(-1), sig.reshape(-1))
    vmath.tanh(gates.reshape(-1), tan.reshape(-1))
    assert_ulps(acts[:, : 3 * dim], sig[:, : 3 * dim], "sigmoids")
    assert_ulps(acts[:, 3 * dim :], tan[:, 3 * dim :], "tanh(g')")
    i, f, o, g = (acts[:, k * dim : (k + 1) * dim] for k in range(4))
    want_c = f * cont[:, None] * c_prev + i * g
    want_tanh = np.empty_like(c)
    vmath.tanh(want_c.reshape(-1), want_tanh.reshape(-1))
    assert_cells_agree([acts, c, tanh_c, h], [acts, want_c, want_tanh, o * want_tanh], c_prev, cont, dim)


def test_tanh_of_sum_units_is_tanh_of_the_sum_in_the_units_columns():
    rng = np.random.default_rng(13)
    rows, dim, u0, u1 = 4, 700, 50, 640  # a span longer than one block
    x = (rng.standard_normal((rows, dim)) * 3).astype(np.float32)
    bias = rng.standard_normal(dim).astype(np.float32)
    product = rng.standard_normal((rows, u1 - u0)).astype(np.float32)
    y = np.full_like(x, 7)
    vmath.tanh_of_sum_units(x, bias, product, y, u0, u1)
    want = np.empty((rows, u1 - u0), np.float32)
    vmath.tanh(((x + bias)[:, u0:u1] + product).reshape(-1), want.reshape(-1))
    assert_ulps(y[:, u0:u1], want)
    assert (y[:, :u0] == 7).all() and (y[:, u1:] == 7).all()


SCRIPT = """
import numpy as np
from netlayers.kernels import vmath
parts = [np.linspace(-95, 95, 3001), np.linspace(-1, 1, 1001), [np.nan, np.inf, -np.inf]]
x = np.concatenate(parts).astype(np.float32)
out = {}
kernels = {"sigmoid": vmath.sigmoid, "tanh": vmath.tanh, "elu": lambda a, b: vmath.elu(a, np.float32(1), b),
           "softplus": vmath.softplus}
for name, kernel in kernels.items():
    y = np.empty_like(x)
    kernel(x, y)
    out[name] = y
np.savez(OUT, **out)
"""


def test_numba_disabled_agrees(tmp_path):
    """As plain Python (NUMBA_DISABLE_JIT=1) the kernels give the compiled results to two ulps
    (compiled, the polynomials use fused multiply-adds)."""
    results = {}
    for flag in ("0", "1"):
        out = tmp_path / f"jit{flag}.npz"
        env = dict(os.environ, NUMBA_DISABLE_JIT=flag, PYTHONPATH=str(REPO))
        script = f"OUT = {str(out)!r}\n" + SCRIPT
        subprocess.run([sys.executable, "-W", "error", "-c", script], env=env, check=True, cwd=REPO)
        results[flag] = np.load(out)
    for name in ("sigmoid", "tanh", "elu", "softplus"):
        compiled, python = results["0"][name], results["1"][name]
        np.testing.assert_array_equal(np.isnan(compiled), np.isnan(python))
        finite = np.isfinite(compiled)
        np.testing.assert_array_max_ulp(compiled[finite], python[finite], maxulp=2)


def softmax64(x, axis):
    """The softmax of float32 scores in float64 after their float32 shift by the maximum (the
    shift's own rounding, up to half an ulp of x - max, is float32 softmax's, any library's)."""
    shifted = np.exp((x - x.max(axis=axis, keepdims=True)).astype(np.float64))
    return shifted / shifted.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("shape, axis", [((3, 21, 700), 1), ((2, 5, 3, 1), 1), ((64, 1000), 1), ((4, 6, 1), 2)])
def test_softmax_against_float64_in_place_and_with_special_values(shape, axis, thread_count):
    """loss.softmax in float32 (vmath: positions after the classes over blocks of 512, or the
    classes last) within 16 ulps of float64 where the float64 value is a normal float32 (exp's
    few ulps, and the float32 sum over the classes that divides them); a NaN
    score makes its position NaN, as numpy's max does; scores 100 below the maximum give 0;
    in place gives the same bits; 1 or 2 workers the same bits."""
    from netlayers.layers.loss import softmax

    rng = np.random.default_rng(3)
    x = (rng.standard_normal(shape) * 5).astype(np.float32)
    flat = x.reshape(-1)
    flat[7] = np.nan
    flat[-3] -= 100.0
    results = []
    for workers in (1, 2):
        thread_count(workers)
        y = np.full(shape, 7.0, np.float32)
        softmax(x, y, axis)
        results.append(y)
        again = x.copy()
        softmax(again, again, axis)
        np.testing.assert_array_equal(again, y)
    np.testing.assert_array_equal(results[0], results[1])
    want = softmax64(x, axis)
    nan = np.isnan(want)
    assert nan.any() and np.array_equal(np.isnan(y), nan)
    normal = ~nan & (np.abs(want) >= np.finfo(np.float32).tiny)
    assert_close(y[normal], want[normal], max_ulps=16)
    assert (y[~nan & ~normal] == 0).all()
