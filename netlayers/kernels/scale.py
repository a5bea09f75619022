"""The Scale layer's passes, on (outer, dim, inner) views, for the dims [lo, hi) of whole
C-contiguous arrays (the workers of ``netlayers.parallel`` take a range each):

- ``scale_forward(x, scale, bias, keep, copy, y, lo, hi)``: y = x * scale[d] + bias[d], and
  keep = x first when ``copy`` (in place, the backward needs the input that y overwrites):
  one pass instead of a copy, a product and a sum;
- ``scale_backward(dy, x, scale, sums, dscale, dbias, dx, want_x, lo, hi)``: with ``sums``,
  dscale[d] = sum over n, k of dy * x and dbias[d] = sum of dy in one pass (float64 lanes, as
  ``netlayers.kernels.batchnorm``); with ``want_x``, dx = dy * scale[d] (``dx`` may be ``dy``:
  the sums read a dim before it is written).

The product and the sum are not fused into one rounding (no fastmath): y equals numpy's
``x * s + b``.

The Bias layer's passes, likewise: ``bias_forward(x, bias, y, lo, hi)``: y = x + bias[d];
``bias_backward(dy, dbias, dx, want_x, lo, hi)``: dbias[d] = sum over n, k of dy (float64
lanes) and, with ``want_x``, dx = dy, in one pass.
"""

from ._jit import jit
from .batchnorm import new_lanes  # the float64 lanes a channel's sums run in (see there)


@jit
def scale_forward(x, scale, bias, keep, copy, y, lo, hi):
    outer, dim, inner = x.shape
    for n in range(outer):
        for d in range(lo, hi):
            s, b = scale[d], bias[d]
            if copy:
                for k in range(inner):
                    v = x[n, d, k]
                    keep[n, d, k] = v
                    y[n, d, k] = v * s + b
            else:
                for k in range(inner):
                    y[n, d, k] = x[n, d, k] * s + b


@jit
def scale_backward(dy, x, scale, sums, dscale, dbias, dx, want_x, lo, hi):
    outer, dim, inner = dy.shape
    lanes_s = new_lanes(inner)
    lanes_b = new_lanes(inner)
    width = lanes_b.size
    for d in range(lo, hi):
        if sums:
            lanes_s[:] = 0.0
            lanes_b[:] = 0.0
            for n in range(outer):
                for start in range(0, inner, width):
                    g, v = dy[n, d, start : start + width], x[n, d, start : start + width]
                    for j in range(g.size):
                        lanes_s[j] += g[j] * v[j]
                        lanes_b[j] += g[j]
            dscale[d] = lanes_s.sum()
            dbias[d] = lanes_b.sum()
        if want_x:
            s = scale[d]
            for n in range(outer):
                for k in range(inner):
                    dx[n, d, k] = dy[n, d, k] * s


@jit
def bias_forward(x, bias, y, lo, hi):
    outer, dim, inner = x.shape
    for n in range(outer):
        for d in range(lo, hi):
            b = bias[d]
            for k in range(inner):
                y[n, d, k] = x[n, d, k] + b


@jit
def bias_backward(dy, dbias, dx, want_x, lo, hi):
    outer, dim, inner = dy.shape
    lanes = new_lanes(inner)
    width = lanes.size
    for d in range(lo, hi):
        lanes[:] = 0.0
        for n in range(outer):
            for start in range(0, inner, width):
                g = dy[n, d, start : start + width]
                for j in range(g.size):
                    lanes[j] += g[j]
                if want_x:
                    out = dx[n, d, start : start + width]
                    for j in range(g.size):
                        out[j] = g[j]
        dbias[d] = lanes.sum()
