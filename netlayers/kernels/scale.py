"""The Scale layer's passes, on (outer, dim, inner) views, for the dims [lo, hi) of whole
C-contiguous arrays (the workers of ``netlayers.parallel`` take a range each):

- ``scale_forward(x, scale, bias, keep, copy, y, lo, hi)``: y = x * scale[d] + bias[d], and
  keep = x first when ``copy`` (in place, the backward needs the input that y overwrites):
  one pass instead of a copy, a product and a sum;
- ``scale_backward(dy, x, scale, sums, dscale, dbias, dx, want_x, lo, hi)``: with ``sums``,
  dscale[d] = sum over n, k of dy * x and dbias[d] = sum of dy in one pass (float64 lanes, as
  ``netlayers.kernels.batchnorm``); with ``want_x``, dx = dy * scale[d] (``dx`` may be ``dy``:
  the sums read a dim before it is written).

Where ``inner`` is 1 (s of x's shape from ``axis`` on: a second bottom of x's shape, a learned
``num_axes: -1``), a loop over one dim at a time runs a single element: ``scale_forward_rows``
and ``scale_backward_rows`` take (outer, dim) views and run along the dims instead (a 6.4 M
element Scale by a bottom of its shape, 2026-12-06: forward 11.4 -> 4.2 ms, backward 65 -> 14,
about the time its memory traffic takes).

The product and the sum are not fused into one rounding (no fastmath): y equals numpy's
``x * s + b``.

The Bias layer's passes, likewise: ``bias_forward(x, bias, y, lo, hi)``: y = x + bias[d];
``bias_backward(dy, dbias, dx, want_x, lo, hi)``: dbias[d] = sum over n, k of dy (float64
lanes) and, with ``want_x``, dx = dy, in one pass.
"""

import numpy as np

from ._jit import jit
from .batchnorm import new_lanes  # the float64 lanes a channel's sums run in (see there)

ROW_BLOCK = 256  # dims whose float64 sums over the rows run at once (scale_backward_rows)


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
def scale_forward_rows(x, scale, bias, keep, copy, y, lo, hi):
    for n in range(x.shape[0]):
        if copy:
            for d in range(lo, hi):
                v = x[n, d]
                keep[n, d] = v
                y[n, d] = v * scale[d] + bias[d]
        else:
            for d in range(lo, hi):
                y[n, d] = x[n, d] * scale[d] + bias[d]


@jit
def scale_backward_rows(dy, x, scale, sums, dscale, dbias, dx, want_x, lo, hi):
    sum_s = np.zeros(ROW_BLOCK, np.float64)
    sum_b = np.zeros(ROW_BLOCK, np.float64)
    for first in range(lo, hi, ROW_BLOCK):  # one pass: a block's sums and its dx, row by row
        width = min(ROW_BLOCK, hi - first)
        sum_s[:] = 0.0
        sum_b[:] = 0.0
        s = scale[first : first + width]
        for n in range(dy.shape[0]):
            g, v, out = dy[n, first : first + width], x[n, first : first + width], dx[n, first : first + width]
            if sums:
                for j in range(width):
                    sum_s[j] += g[j] * v[j]
                    sum_b[j] += g[j]
            if want_x:  # after the sums: dx may be dy
                for j in range(width):
                    out[j] = g[j] * s[j]
        if sums:
            for j in range(width):
                dscale[first + j] = sum_s[j]
                dbias[first + j] = sum_b[j]


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
