"""float32 exp, sigmoid and tanh written as loops the compiler turns into vector code.

Why: numpy's float32 ``exp`` and ``tanh`` ran one element at a time on this project's AVX2
machines (2 M elements: exp 6.8 ms, tanh 8.5 ms, expm1 42 ms), and numba's ``math.exp`` is a
C-library call per element. PyTorch's sigmoid takes 1.9 ms there. The loops below are plain
arithmetic, so LLVM vectorizes them (8 floats a step on AVX2).

The exponential, for v = scale * x:

- v is clamped to [-87, 88], so every result is a normal float (exp(-87) = 1.6e-38,
  exp(88) = 1.7e38; beyond them exp is held there, not taken to 0 or inf); a NaN stays NaN;
- k = round(v / ln 2), by adding and subtracting 1.5 * 2^23 (``_ROUND``), and
  r = v - k ln 2, with ln 2 split in two parts so that k * ``_LN2_HI`` is exact: |r| <= ln2 / 2;
- e^r = 1 + q with q = r + r^2 A(r), A a degree-5 polynomial fitted here (a Chebyshev fit of
  (e^r - 1 - r) / r^2 on [-ln2/2, ln2/2]; q's relative error is below 1e-9);
- e^v = 2^k (1 + q): k is added to the exponent bits of 1 + q (an integer add on an int32 view).

softplus(x) = max(x, 0) + log1p(u), u = e^(-|x|) in (0, 1]: log1p(u) = 2 atanh(w) with
w = u / (2 + u) <= 1/3, = 2 w (1 + w^2 L(w^2)), L a fitted degree-4 polynomial (relative error
below 4e-10). 1 - e^(-y) (BNLL's backward, y >= 0) is -expm1(-y).

tanh(x) = x + x^3 B(x^2) for |x| < 0.625 (B a fitted degree-4 polynomial, relative error
below 2e-8), else sign(x) (1 - 2 / (e^(2|x|) + 1)). sigmoid(x) = 1 / (1 + e^(-x)).
expm1 (ELU) is q itself where k = 0 (|v| < ln2 / 2, no cancellation), else e^v - 1.
Results are within a few float32 ulps of the exact values (tests/kernels/test_vmath.py).

Vectorization needs the compiler to tell the arrays of a loop apart at run time; a layer in
place passes one memory as input and output, which would send every loop down the scalar
path. So work goes in blocks of ``BLOCK`` elements: a block is copied into scratch, computed
there, and written out from scratch (the scratch stays in the L1 cache).

Only float32 takes these kernels; float64 (gradient checks) stays with numpy's functions.
"""

import numpy as np

from ._jit import sum_jit
from ._jit import vector_jit as jit

BLOCK = 512

_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693359375)  # 355/512: k * _LN2_HI is exact for |k| < 2^15
_LN2_LO = np.float32(np.log(2.0) - 0.693359375)
_ROUND = np.float32(1.5 * 2**23)  # v + _ROUND - _ROUND rounds v to an integer (|v| < 2^22)
_ROUND_BITS = np.int32(0x4B400000)  # the bits of _ROUND: bits(_ROUND + k) - _ROUND_BITS = k
_LOW = np.float32(-87.0)
_HIGH = np.float32(88.0)
_ONE = np.float32(1.0)
_TWO = np.float32(2.0)
_TANH_SMALL = np.float32(0.625)

# (e^r - 1 - r) / r^2 ~ A0 + A1 r + ... + A5 r^5 on [-ln2/2, ln2/2]
_A0 = np.float32(0.5000000013482427)
_A1 = np.float32(0.16666666719018927)
_A2 = np.float32(0.041666464886423435)
_A3 = np.float32(0.008333298475383215)
_A4 = np.float32(0.0013933650989077359)
_A5 = np.float32(0.00019899280361268732)
# (tanh(x) - x) / x^3 ~ B0 + B1 z + ... + B4 z^4, z = x^2 <= 0.625^2
_B0 = np.float32(-0.33333329094715214)
_B1 = np.float32(0.13332782063150053)
_B2 = np.float32(-0.05385247586884385)
_B3 = np.float32(0.021003556947319334)
_B4 = np.float32(-0.0061048401272072415)
# (atanh(w) / w - 1) / w^2 ~ L0 + L1 z + ... + L4 z^4, z = w^2 <= 1/9
_L0 = np.float32(0.33333333668367854)
_L1 = np.float32(0.19999850720239262)
_L2 = np.float32(0.142962906862838)
_L3 = np.float32(0.10851665641630044)
_L4 = np.float32(0.11619509172823306)


@jit
def _scratch():
    """Five float32 scratch blocks: the input block, a second operand, e, q and the rounding
    values of :func:`_exp_block`."""
    return (
        np.empty(BLOCK, np.float32),
        np.empty(BLOCK, np.float32),
        np.empty(BLOCK, np.float32),
        np.empty(BLOCK, np.float32),
        np.empty(BLOCK, np.float32),
    )


@jit
def _exp_block(a, m, scale, e, q, s):
    """For j < m: e[j] = exp(scale * a[j]) (v clamped to [_LOW, _HIGH]), q[j] = expm1(r) of
    its reduced argument and s[j] = _ROUND + k (k = 0 exactly where s[j] == _ROUND)."""
    for j in range(m):
        v = scale * a[j]
        v = _LOW if v < _LOW else v  # written so that a NaN passes both
        v = _HIGH if v > _HIGH else v
        rounded = v * _LOG2E + _ROUND
        k = rounded - _ROUND
        r = (v - k * _LN2_HI) - k * _LN2_LO
        p = _A5 * r + _A4
        p = p * r + _A3
        p = p * r + _A2
        p = p * r + _A1
        p = p * r + _A0
        qr = r + r * r * p
        q[j] = qr
        e[j] = _ONE + qr
        s[j] = rounded
    e_bits, s_bits = e.view(np.int32), s.view(np.int32)
    for j in range(m):
        e_bits[j] += (s_bits[j] - _ROUND_BITS) << 23


@jit
def _load(x, m, a):
    for j in range(m):
        a[j] = x[j]


@jit
def _sigmoid_span(x, y, lo, hi, work):
    """y[lo:hi] = 1 / (1 + exp(-x[lo:hi]))."""
    a, b, e, q, s = work
    for start in range(lo, hi, BLOCK):
        m = min(BLOCK, hi - start)
        xb, yb = x[start : start + m], y[start : start + m]  # views: x[start + j] would not vectorize
        _load(xb, m, a)
        _exp_block(a, m, np.float32(-1.0), e, q, s)
        for j in range(m):
            v = a[j]
            value = _ONE / (_ONE + e[j])
            yb[j] = value if v == v else v


@jit
def _tanh_value(v, e):
    """tanh(v) from e = exp(2 |v|) (``_exp_block``'s)."""
    z = v * v
    p = _B4 * z + _B3
    p = p * z + _B2
    p = p * z + _B1
    p = p * z + _B0
    small = v * (_ONE + z * p)  # keeps the sign of -0
    large = _ONE - _TWO / (e + _ONE)
    large = large if v >= 0 else -large
    value = small if abs(v) < _TANH_SMALL else large
    return value if v == v else v


@jit
def _tanh_span(x, y, lo, hi, work):
    """y[lo:hi] = tanh(x[lo:hi])."""
    a, b, e, q, s = work
    for start in range(lo, hi, BLOCK):
        m = min(BLOCK, hi - start)
        xb, yb = x[start : start + m], y[start : start + m]  # views: x[start + j] would not vectorize
        _load(xb, m, a)
        for j in range(m):
            b[j] = abs(a[j])
        _exp_block(b, m, _TWO, e, q, s)
        for j in range(m):
            yb[j] = _tanh_value(a[j], e[j])


@jit
def _elu_span(x, alpha, y, lo, hi, work):
    """y[lo:hi] = x if x > 0 else alpha * expm1(x)."""
    a, b, e, q, s = work
    for start in range(lo, hi, BLOCK):
        m = min(BLOCK, hi - start)
        xb, yb = x[start : start + m], y[start : start + m]  # views: x[start + j] would not vectorize
        _load(xb, m, a)
        _exp_block(a, m, _ONE, e, q, s)
        for j in range(m):
            v = a[j]
            expm1 = q[j] if s[j] == _ROUND else e[j] - _ONE
            value = v if v > 0 else alpha * expm1
            yb[j] = value if v == v else v


@jit
def softplus(x, y):
    """y = log(1 + e^x) = max(x, 0) + log1p(e^(-|x|)), flat float32 arrays (y may be x)."""
    a, b, e, q, s = _scratch()
    for start in range(0, x.size, BLOCK):
        m = min(BLOCK, x.size - start)
        xb, yb = x[start : start + m], y[start : start + m]
        _load(xb, m, a)
        for j in range(m):
            b[j] = abs(a[j])
        _exp_block(b, m, np.float32(-1.0), e, q, s)
        for j in range(m):
            v = a[j]
            w = e[j] / (_TWO + e[j])
            z = w * w
            p = _L4 * z + _L3
            p = p * z + _L2
            p = p * z + _L1
            p = p * z + _L0
            value = (v if v > 0 else np.float32(0.0)) + _TWO * w * (_ONE + z * p)
            yb[j] = value if v == v else v


@jit
def one_minus_exp_neg(y, out):
    """out = 1 - e^(-y) = -expm1(-y), flat float32 arrays (out may be y)."""
    a, b, e, q, s = _scratch()
    for start in range(0, y.size, BLOCK):
        m = min(BLOCK, y.size - start)
        yb, ob = y[start : start + m], out[start : start + m]
        _load(yb, m, a)
        _exp_block(a, m, np.float32(-1.0), e, q, s)
        for j in range(m):
            v = a[j]
            value = -q[j] if s[j] == _ROUND else _ONE - e[j]
            ob[j] = value if v == v else v


@jit
def sigmoid(x, y):
    """y = sigmoid(x), flat float32 arrays (y may be x)."""
    _sigmoid_span(x, y, 0, x.size, _scratch())


@jit
def tanh(x, y):
    """y = tanh(x), flat float32 arrays (y may be x)."""
    _tanh_span(x, y, 0, x.size, _scratch())


@jit
def elu(x, alpha, y):
    """y = x if x > 0 else alpha (e^x - 1), flat float32 arrays (y may be x)."""
    _elu_span(x, alpha, y, 0, x.size, _scratch())


@jit
def swish(x, beta, s_out, y):
    """s_out = sigmoid(beta x), y = x * s_out, flat float32 arrays (y may be x)."""
    a, b, e, q, s = _scratch()
    for start in range(0, x.size, BLOCK):
        m = min(BLOCK, x.size - start)
        xb, yb, sb = x[start : start + m], y[start : start + m], s_out[start : start + m]
        _load(xb, m, a)
        _exp_block(a, m, -beta, e, q, s)
        for j in range(m):
            v = a[j]
            value = _ONE / (_ONE + e[j])
            value = value if v == v else v
            sb[j] = value
            yb[j] = v * value


@jit
def tanh_of_sum_units(x, bias, product, y, u0, u1):
    """y[m, u0:u1] = tanh((x[m, u0:u1] + bias[u0:u1]) + product[m]) for each row m of
    C-contiguous float32 arrays ``x`` and ``y`` (M, D), ``bias`` (D) and ``product`` (M, u1 -
    u0) (``_tanh_span``'s operations)."""
    a, b, e, q, s = _scratch()
    for row in range(x.shape[0]):
        xr, pr, yr = x[row], product[row], y[row]
        for lo in range(u0, u1, BLOCK):
            m = min(BLOCK, u1 - lo)
            xb, pb, yb = xr[lo : lo + m], pr[lo - u0 : lo - u0 + m], yr[lo : lo + m]
            bb = bias[lo : lo + m]
            for j in range(m):
                v = (xb[j] + bb[j]) + pb[j]
                a[j] = v
                b[j] = abs(v)
            _exp_block(b, m, _TWO, e, q, s)
            for j in range(m):
                yb[j] = _tanh_value(a[j], e[j])


@jit
def lstm_cell(gates, c_prev, cont, acts, c, tanh_c, h):
    """One LSTM step over the rows of C-contiguous float32 arrays (``gates`` and ``acts`` (M,
    4 D), the others (M, D), ``cont`` (M,)): acts = [sigmoid(i', f', o'), tanh(g')], c = (cont
    f) c_prev + i g, tanh_c = tanh(c), h = o tanh_c (see
    ``netlayers.kernels.recurrent.lstm_cell_forward``)."""
    lstm_cell_units(gates, c_prev, cont, acts, c, tanh_c, h, 0, c.shape[1])


@jit
def lstm_cell_units(gates, c_prev, cont, acts, c, tanh_c, h, u0, u1):
    """:func:`lstm_cell` for the units [u0, u1) alone (their columns of each gate and state)."""
    # without ``adds`` no bias, product or next state is read: arrays of their types stand in
    _lstm_cell_pieces(gates, cont, gates, False, c_prev, cont, acts, c, tanh_c, h, u0, u1, cont, h, False)


@jit
def lstm_step_units(gates, bias, product, c_prev, cont, acts, c, tanh_c, h, u0, u1, cont_next, scaled_next, has_next):
    """:func:`lstm_cell_units` of the pre-activations (``gates`` + ``bias`` (4 D)) + ``product``
    (M, 4 (u1 - u0)): the recurrent part of the units [u0, u1), gate by gate ([i' f' o' g'] of
    these units in each row). ``gates`` is left as it was. With ``has_next``, also the next
    step's scaled state scaled_next[:, u0:u1] = cont_next h[:, u0:u1] ((M, D), ``cont_next``
    (M,))."""
    _lstm_cell_pieces(
        gates, bias, product, True, c_prev, cont, acts, c, tanh_c, h, u0, u1, cont_next, scaled_next, has_next
    )


LSTM_PIECE = 128  # units a pass: their 4 gates and the new cell fill 5 x 128 scratch values


@jit
def _lstm_cell_pieces(
    gates, bias, product, adds, c_prev, cont, acts, c, tanh_c, h, u0, u1, cont_next, scaled_next, has_next
):
    """The cell of each row over pieces of at most ``LSTM_PIECE`` units: the piece's four
    pre-activations (plus ``bias``'s, then ``product``'s, where ``adds``) gathered into
    scratch, negated for the sigmoids and as 2|g'| for tanh (``_tanh_span``'s form); one
    exponential over the four; the activations and the new cell; one exponential of 2|c|;
    tanh(c) and h (and with ``has_next`` h times ``cont_next`` into ``scaled_next``). The
    operations of ``_sigmoid_span`` and ``_tanh_span`` (their results, but where the compiler
    fuses a multiply-add differently), in 9 loops a piece where the spans took 22 a row: one
    step of 64 streams x 64 units, one core, 29 -> 24 us."""
    size = 5 * LSTM_PIECE
    a, b, e = np.empty(size, np.float32), np.empty(size, np.float32), np.empty(size, np.float32)
    q, s = np.empty(size, np.float32), np.empty(size, np.float32)
    dim = c.shape[1]
    count = u1 - u0
    for row in range(gates.shape[0]):
        x, y, p = gates[row], acts[row], product[row]
        keep = cont[row]
        for p0 in range(u0, u1, LSTM_PIECE):
            m = min(LSTM_PIECE, u1 - p0)
            k = p0 - u0
            xi, xf = x[p0 : p0 + m], x[dim + p0 : dim + p0 + m]  # views: the loops vectorize
            xo, xg = x[2 * dim + p0 : 2 * dim + p0 + m], x[3 * dim + p0 : 3 * dim + p0 + m]
            if adds:
                pi, pf = p[k : k + m], p[count + k : count + k + m]
                po, pg = p[2 * count + k : 2 * count + k + m], p[3 * count + k : 3 * count + k + m]
                bi, bf = bias[p0 : p0 + m], bias[dim + p0 : dim + p0 + m]
                bo, bg = bias[2 * dim + p0 : 2 * dim + p0 + m], bias[3 * dim + p0 : 3 * dim + p0 + m]
                for j in range(m):
                    a[j], a[m + j] = (xi[j] + bi[j]) + pi[j], (xf[j] + bf[j]) + pf[j]
                    a[2 * m + j], a[3 * m + j] = (xo[j] + bo[j]) + po[j], (xg[j] + bg[j]) + pg[j]
            else:
                for j in range(m):
                    a[j], a[m + j], a[2 * m + j], a[3 * m + j] = xi[j], xf[j], xo[j], xg[j]
            for j in range(3 * m):
                b[j] = -a[j]
            for j in range(3 * m, 4 * m):
                b[j] = _TWO * abs(a[j])
            _exp_block(b, 4 * m, _ONE, e, q, s)
            yi, yf = y[p0 : p0 + m], y[dim + p0 : dim + p0 + m]
            yo, yg = y[2 * dim + p0 : 2 * dim + p0 + m], y[3 * dim + p0 : 3 * dim + p0 + m]
            before, after = c_prev[row, p0 : p0 + m], c[row, p0 : p0 + m]
            cell_in, cell_arg = a[4 * m : 5 * m], b[4 * m : 5 * m]
            for j in range(m):
                i = _ONE / (_ONE + e[j])
                f = _ONE / (_ONE + e[m + j])
                o = _ONE / (_ONE + e[2 * m + j])
                vi, vf, vo, vg = a[j], a[m + j], a[2 * m + j], a[3 * m + j]
                i, f, o = i if vi == vi else vi, f if vf == vf else vf, o if vo == vo else vo
                g = _tanh_value(vg, e[3 * m + j])
                yi[j], yf[j], yo[j], yg[j] = i, f, o, g
                new = f * keep * before[j] + i * g
                after[j] = new
                cell_in[j] = new
                cell_arg[j] = _TWO * abs(new)
            _exp_block(cell_arg, m, _ONE, e[4 * m : 5 * m], q[4 * m : 5 * m], s[4 * m : 5 * m])
            squashed, out = tanh_c[row, p0 : p0 + m], h[row, p0 : p0 + m]
            for j in range(m):
                t = _tanh_value(cell_in[j], e[4 * m + j])
                squashed[j] = t
                out[j] = yo[j] * t
            if has_next:
                keep_next, scaled = cont_next[row], scaled_next[row, p0 : p0 + m]
                for j in range(m):
                    scaled[j] = out[j] * keep_next


@jit
def _softmax_exp(a, m, e, q, s):
    """e[j] = exp(a[j]) for the shifted scores a[j] <= 0 of a softmax: 0 below -87 (where
    ``_exp_block`` holds exp(-87)), a NaN kept."""
    _exp_block(a, m, _ONE, e, q, s)
    for j in range(m):
        v = a[j]
        value = e[j] if v >= _LOW else np.float32(0.0)
        e[j] = value if v == v else v


@jit
def softmax_exp(x, y):
    """y = exp(x) for the flat float32 shifted scores x <= 0 of a softmax (y may be x)."""
    a, b, e, q, s = _scratch()
    for start in range(0, x.size, BLOCK):
        m = min(BLOCK, x.size - start)
        xb, yb = x[start : start + m], y[start : start + m]
        _load(xb, m, a)
        _softmax_exp(a, m, e, q, s)
        for j in range(m):
            yb[j] = e[j]


_TINY = np.float32(np.finfo(np.float32).tiny)  # FLT_MIN, Caffe's floor under a probability


@jit
def _row_max(row):
    """The largest score of a row, NaNs skipped (a NaN in the row makes every probability NaN
    through its own shifted score and the sum: the same as a NaN maximum). Eight partial
    maxima, one for each place in a group of eight scores, indexed unsigned (no wraparound
    test): one chain of compares would cost its latency every score. 640 rows of 10,000, one
    core: 3.5 ms with one chain, 0.9 ms with eight (numpy's max 0.6 ms)."""
    n = row.size
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = row[0]
    full = n - n % 8
    for g in range(np.uint64(full // 8)):
        j = g * np.uint64(8)
        v0, v1, v2, v3 = row[j], row[j + np.uint64(1)], row[j + np.uint64(2)], row[j + np.uint64(3)]
        v4, v5, v6, v7 = row[j + np.uint64(4)], row[j + np.uint64(5)], row[j + np.uint64(6)], row[j + np.uint64(7)]
        m0 = v0 if v0 > m0 else m0
        m1 = v1 if v1 > m1 else m1
        m2 = v2 if v2 > m2 else m2
        m3 = v3 if v3 > m3 else m3
        m4 = v4 if v4 > m4 else m4
        m5 = v5 if v5 > m5 else m5
        m6 = v6 if v6 > m6 else m6
        m7 = v7 if v7 > m7 else m7
    for j in range(full, n):
        v = row[j]
        m0 = v if v > m0 else m0
    for other in (m1, m2, m3, m4, m5, m6, m7):
        m0 = other if other > m0 else m0
    return m0


@jit
def _row_softmax(row, p, a, e, q, s):
    """p = softmax(row): exp of the scores shifted by the row's maximum, a block at a time,
    summed in four partial sums (one chain of adds would cost its latency every score), then
    the quotients. The scores are read through a slice indexed from 0: indexed from ``start``,
    the loop tested every index for wraparound and did not vectorize (640 rows of 10,000, one
    core: 9.6 -> 7.2 ms)."""
    classes = row.size
    top = _row_max(row)
    s0 = s1 = s2 = s3 = np.float32(0.0)
    for start in range(0, classes, BLOCK):
        m = min(BLOCK, classes - start)
        scores = row[start : start + m]  # indexed from 0: the loop needs no wraparound test
        for j in range(m):
            a[j] = scores[j] - top
        _softmax_exp(a, m, e, q, s)
        out = p[start : start + m]
        for j in range(m):
            out[j] = e[j]
        full = m - m % 4
        for j in range(0, full, 4):
            s0 += e[j]
            s1 += e[j + 1]
            s2 += e[j + 2]
            s3 += e[j + 3]
        for j in range(full, m):
            s0 += e[j]
    norm = (s0 + s1) + (s2 + s3)
    for c in range(classes):
        p[c] = p[c] / norm


@jit
def softmax_loss(x, labels, ignore, use_ignore, prob, lo, hi):
    """SoftmaxWithLoss's forward on the rows [lo, hi) of a classifier's float32 scores x (N,
    classes), one row at a time: prob[n] = softmax(x[n]) (``_row_softmax``) and, over the rows
    whose label is not ``ignore`` (when ``use_ignore``), the sum of -log(max(prob[n, label_n],
    FLT_MIN)) in float64. Returns (that sum, the rows counted, the first row whose label is
    neither a class index nor ignored, else -1); the rows after a bad label are left as they
    were."""
    a, b, e, q, s = _scratch()
    classes = x.shape[1]
    total = 0.0
    counted = 0
    for n in range(lo, hi):
        label = labels[n]
        ignored = use_ignore and label == ignore
        if not ignored and not (label == np.floor(label) and label >= 0 and label < classes):
            return total, counted, n
        p = prob[n]
        _row_softmax(x[n], p, a, e, q, s)
        if not ignored:
            total -= np.log(max(p[int(label)], _TINY))
            counted += 1
    return total, counted, -1


@jit
def softmax_loss_grad(prob, labels, ignore, use_ignore, scale, grad):
    """SoftmaxWithLoss's backward on a classifier's (N, classes) probabilities (any float
    dtype; the labels checked by the forward): grad[n] = scale (prob[n] - onehot(label_n)),
    the rows whose label is ``ignore`` (when ``use_ignore``) zero. The same operations as
    numpy's prob - onehot, then * scale: the same bits."""
    rows, classes = prob.shape
    for n in range(rows):
        label = labels[n]
        g, p = grad[n], prob[n]
        if use_ignore and label == ignore:
            for c in range(classes):
                g[c] = p[c] * 0 * scale
            continue
        for c in range(classes):
            g[c] = p[c] * scale
        k = int(label)
        g[k] = (p[k] - 1) * scale


@jit
def softmax(x, y, lo, hi):
    """y = softmax of the C-contiguous float32 (outer, classes, inner) x along its axis 1 (y may
    be x), at the inner positions [lo, hi) of every item: per block of positions, the maximum
    over the classes (a NaN wins, as numpy's max), exp of the shifted scores with their sum,
    then the quotients. Each loop runs along the inner positions, which vectorizes (the classes
    of one position are ``inner`` apart)."""
    a, top, e, q, s = _scratch()
    total = np.empty(BLOCK, np.float32)
    outer, classes, inner = x.shape
    for n in range(outer):
        for start in range(lo, hi, BLOCK):
            m = min(BLOCK, hi - start)
            _load(x[n, 0, start : start + m], m, top)
            for c in range(1, classes):
                xb = x[n, c, start : start + m]
                for j in range(m):
                    v, best = xb[j], top[j]
                    top[j] = v if (v > best) | (v != v) else best
            for j in range(m):
                total[j] = 0
            for c in range(classes):
                xb, yb = x[n, c, start : start + m], y[n, c, start : start + m]
                for j in range(m):
                    a[j] = xb[j] - top[j]
                _softmax_exp(a, m, e, q, s)
                for j in range(m):
                    total[j] += e[j]
                    yb[j] = e[j]
            for c in range(classes):
                yb = y[n, c, start : start + m]
                _load(yb, m, a)
                for j in range(m):
                    yb[j] = a[j] / total[j]


@jit
def softmax_rows(x, y, lo, hi):
    """y[n] = softmax(x[n]) for the rows [lo, hi) of float32 (rows, classes) scores, classes
    last (``_row_softmax``; y may be x)."""
    a, b, e, q, s = _scratch()
    for n in range(lo, hi):
        _row_softmax(x[n], y[n], a, e, q, s)


@sum_jit
def softmax_backward(y, dy, dx, lo, hi):
    """A softmax's backward along axis 1 of (outer, classes, inner) arrays (any float dtype),
    at the inner positions [lo, hi) of every item: dx = y (dy - sum over the classes of dy y),
    the sums in float64 (``dx`` may be ``dy``). With one position (classes last) a row's sum runs
    along the row; else a block of positions' sums runs along the positions, class by class."""
    outer, classes, inner = y.shape
    total = np.empty(BLOCK, np.float64)
    for n in range(outer):
        if inner == 1:
            yr, gr, xr = y[n].reshape(classes), dy[n].reshape(classes), dx[n].reshape(classes)
            dot = 0.0
            for c in range(classes):
                dot += gr[c] * yr[c]
            d = y.dtype.type(dot)
            for c in range(classes):
                xr[c] = yr[c] * (gr[c] - d)
            continue
        for start in range(lo, hi, BLOCK):
            m = min(BLOCK, hi - start)
            for j in range(m):
                total[j] = 0.0
            for c in range(classes):
                yb, gb = y[n, c, start : start + m], dy[n, c, start : start + m]
                for j in range(m):
                    total[j] += gb[j] * yb[j]
            for c in range(classes):
                yb, gb, xb = y[n, c, start : start + m], dy[n, c, start : start + m], dx[n, c, start : start + m]
                for j in range(m):
                    xb[j] = yb[j] * (gb[j] - y.dtype.type(total[j]))


@jit
def softmax_loss_positions(prob, labels, ignore, use_ignore, lo, hi):
    """SoftmaxWithLoss's loss over the inner positions [lo, hi) of every item, for float32
    probabilities (outer, classes, inner) with positions after the classes (a segmentation
    net's (N, C, H, W)) and their labels (outer, inner): the sum of -log(max(prob[n, label,
    i], FLT_MIN)) in float64 over the positions whose label is not ``ignore`` (when
    ``use_ignore``). Returns (that sum, the positions counted, the flat index n * inner + i of
    the first label, in that order, that is neither a class index nor ignored, else -1)."""
    outer, classes, inner = prob.shape
    total = 0.0
    counted = 0
    for n in range(outer):
        for i in range(lo, hi):
            label = labels[n, i]
            if use_ignore and label == ignore:
                continue
            if not (label == np.floor(label) and label >= 0 and label < classes):
                return total, counted, n * inner + i
            total -= np.log(max(prob[n, int(label), i], _TINY))
            counted += 1
    return total, counted, -1


@jit
def softmax_loss_positions_grad(prob, labels, ignore, use_ignore, scale, grad, lo, hi):
    """SoftmaxWithLoss's backward at the inner positions [lo, hi) of every item of (outer,
    classes, inner) probabilities (any float dtype; the labels (outer, inner) checked by the
    forward): grad[n, c, i] = scale (prob[n, c, i] - [c == label]), zero where the label is
    ``ignore`` (when ``use_ignore``): scale * prob along each class's positions (a loop that
    vectorizes), then each position's label class, or its ignored column, rewritten."""
    outer, classes, inner = prob.shape
    one, zero = prob.dtype.type(1), prob.dtype.type(0)  # arithmetic in the arrays' dtype
    for n in range(outer):
        lab = labels[n]
        for c in range(classes):
            p, g = prob[n, c, lo:hi], grad[n, c, lo:hi]  # indexed from 0: no wraparound test
            for i in range(hi - lo):
                g[i] = p[i] * scale
        for i in range(lo, hi):
            label = lab[i]
            if use_ignore and label == ignore:
                for c in range(classes):
                    grad[n, c, i] = prob[n, c, i] * zero * scale
            else:
                k = int(label)
                grad[n, k, i] = (prob[n, k, i] - one) * scale
