"""Benchmark: the vision numba kernels against plain numpy implementations, side by side.

    python tools/bench_kernels.py [--repeats 7] [--quick]

For every kernel and shape: the best time over ``--repeats`` rounds (each round the mean of
enough calls to last ~20 ms) of the numba kernel and of a numpy version of the same formula
(checked to agree first), and the ratio numpy / numba (> 1: numba is faster). The two take
turns in each round so that both see the same machine load. A second table times the two
convolution (im2col, products, col2im over the workers) on LeNet's layers with chunks of 1
image, of the default size (``COLUMN_CHUNK_BYTES``) and of the whole batch.
Shapes: LeNet's (batch 64) and an AlexNet-like stage (batch 16).
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netlayers.kernels import conv_gemm  # noqa: E402
from netlayers.kernels import im2col as conv_kernels  # noqa: E402
from netlayers.kernels import lrn as lrn_kernels  # noqa: E402
from netlayers.kernels import pooling as pool_kernels  # noqa: E402

F32 = np.float32


# -- numpy versions of the kernels ----------------------------------------------------------
def np_im2col(x, kernel, pad, stride, dilation, out_size, col, batch_major):
    (kh, kw), (ph, pw), (sh, sw), (dh, dw), (oh, ow) = kernel, pad, stride, dilation, out_size
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
    windows = sliding_window_view(padded, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    windows = windows[:, :, ::sh, ::sw, ::dh, ::dw][:, :, :oh, :ow]  # n c oh ow i j
    n, c = x.shape[:2]
    if batch_major:
        np.copyto(col.reshape(n, c, kh, kw, oh, ow), windows.transpose(0, 1, 4, 5, 2, 3))
    else:
        np.copyto(col.reshape(c, kh, kw, n, oh, ow), windows.transpose(1, 4, 5, 0, 2, 3))
    return col


def np_col2im(col, kernel, pad, stride, dilation, out_size, x, batch_major):
    (kh, kw), (ph, pw), (sh, sw), (dh, dw), (oh, ow) = kernel, pad, stride, dilation, out_size
    n, c, h, w = x.shape
    padded = np.zeros((n, c, h + 2 * ph, w + 2 * pw), x.dtype)
    cols = (
        col.reshape(n, c, kh, kw, oh, ow)
        if batch_major
        else col.reshape(c, kh, kw, n, oh, ow).transpose(3, 0, 1, 2, 4, 5)
    )
    for i in range(kh):
        for j in range(kw):
            padded[:, :, i * dh : i * dh + sh * (oh - 1) + 1 : sh, j * dw : j * dw + sw * (ow - 1) + 1 : sw] += cols[
                :, :, i, j
            ]
    np.copyto(x, padded[:, :, ph : ph + h, pw : pw + w])
    return x


def np_max_pool_forward(x, kernel, stride, pad, y, mask):
    """No-padding, exact-fit case only (what the bench shapes use)."""
    (kh, kw), (sh, sw) = kernel, stride
    n, c, oh, ow = y.shape
    windows = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw][:, :, :oh, :ow]
    flat = windows.reshape(n, c, oh, ow, kh * kw)
    arg = flat.argmax(axis=-1)
    np.copyto(y, np.take_along_axis(flat, arg[..., None], axis=-1)[..., 0])
    r, s = np.divmod(arg, kw)
    rows = np.arange(oh)[:, None] * sh + r
    cols = np.arange(ow)[None, :] * sw + s
    np.copyto(mask, rows * x.shape[3] + cols, casting="unsafe")
    return y


def np_max_pool_backward(dy, mask, dx):
    n, c, h, w = dx.shape
    dx[...] = 0
    planes = (np.arange(n * c) * h * w).reshape(n, c, 1, 1)
    np.add.at(dx.reshape(-1), (mask + planes).reshape(-1), dy.reshape(-1))
    return dx


def np_ave_pool_forward(x, kernel, stride, pad, y):
    """No-padding, exact-fit case only."""
    (kh, kw), (sh, sw) = kernel, stride
    oh, ow = y.shape[2:]
    windows = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw][:, :, :oh, :ow]
    np.mean(windows, axis=(4, 5), out=y)
    return y


def np_ave_pool_backward(dy, kernel, stride, pad, dx):
    (kh, kw), (sh, sw) = kernel, stride
    oh, ow = dy.shape[2:]
    dx[...] = 0
    share = dy / (kh * kw)
    for i in range(kh):
        for j in range(kw):
            dx[:, :, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw] += share
    return dx


def np_channel_window_sum(src, local_size, out, squared=False):
    half = (local_size - 1) // 2
    values = src * src if squared else src
    padded = np.pad(values, ((0, 0), (half, half), (0, 0), (0, 0)))
    csum = np.cumsum(padded, axis=1)
    csum = np.concatenate([np.zeros_like(csum[:, :1]), csum], axis=1)
    np.subtract(csum[:, local_size:], csum[:, :-local_size], out=out)
    return out


def np_nop_to_onp(src, out):
    np.copyto(out, src.transpose(1, 0, 2))
    return out


def np_onp_to_nop(src, bias, out):
    np.add(src.transpose(1, 0, 2), bias[None, :, None], out=out)
    return out


# -- timing ---------------------------------------------------------------------------------
def calls_for(fn, budget=0.02):
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-6)
    return max(1, min(1000, int(budget / once)))


def side_by_side(fns, repeats):
    for fn in fns:
        fn()
    counts = [calls_for(fn) for fn in fns]
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for k, (fn, count) in enumerate(zip(fns, counts)):
            start = time.perf_counter()
            for _ in range(count):
                fn()
            best[k] = min(best[k], (time.perf_counter() - start) / count)
    return best


def conv_geometry(shape, kernel, pad=0, stride=1):
    n, c, h, w = shape
    oh, ow = (h + 2 * pad - kernel) // stride + 1, (w + 2 * pad - kernel) // stride + 1
    return (kernel, kernel), (pad, pad), (stride, stride), (1, 1), (oh, ow)


def kernel_cases(rng, quick):
    """(name, shape text, numba fn, numpy fn, check) for every benchmarked kernel."""
    cases = []
    conv_shapes = [("conv1", (64, 1, 28, 28), 5, 0, 1), ("conv2", (64, 20, 12, 12), 5, 0, 1)]
    if not quick:
        conv_shapes.append(("alex", (16, 48, 27, 27), 5, 2, 1))
    for label, shape, k, pad, stride in conv_shapes:
        x = rng.standard_normal(shape).astype(F32)
        geometry = conv_geometry(shape, k, pad, stride)
        rows, size = shape[1] * k * k, geometry[4][0] * geometry[4][1]
        for batch_major in (True, False):
            cshape = (shape[0], rows, size) if batch_major else (rows, shape[0], size)
            a, b = np.empty(cshape, F32), np.empty(cshape, F32)
            layout = "batch-major" if batch_major else "channel-major"
            cases.append(
                (
                    f"im2col {layout}",
                    f"{label} {shape}",
                    lambda x=x, g=geometry, a=a, m=batch_major: conv_kernels.im2col(x, *g, a, m),
                    lambda x=x, g=geometry, b=b, m=batch_major: np_im2col(x, *g, b, m),
                    (a, b),
                )
            )
            col = rng.standard_normal(cshape).astype(F32)
            dx1, dx2 = np.empty_like(x), np.empty_like(x)
            cases.append(
                (
                    f"col2im {layout}",
                    f"{label} {shape}",
                    lambda c=col, g=geometry, d=dx1, m=batch_major: conv_kernels.col2im(c, *g, d, m),
                    lambda c=col, g=geometry, d=dx2, m=batch_major: np_col2im(c, *g, d, m),
                    (dx1, dx2),
                )
            )
    pool_shapes = [("pool1", (64, 20, 24, 24), 2, 2), ("pool2", (64, 50, 8, 8), 2, 2)]
    if not quick:
        pool_shapes.append(("alex", (16, 96, 55, 55), 3, 2))
    for label, shape, k, s in pool_shapes:
        x = rng.permutation(int(np.prod(shape))).reshape(shape).astype(F32)
        out = ((shape[2] - k) // s + 1, (shape[3] - k) // s + 1)
        oshape = shape[:2] + out
        y1, y2 = np.empty(oshape, F32), np.empty(oshape, F32)
        m1, m2 = np.empty(oshape, np.int32), np.empty(oshape, np.int32)
        kern, stride, pad = (k, k), (s, s), (0, 0)
        geometry = (kern, stride, pad)
        cases.append(
            (
                "max pool forward",
                f"{label} {shape} k{k}s{s}",
                lambda x=x, y=y1, m=m1, g=geometry: pool_kernels.max_pool_forward(x, *g, y, m),
                lambda x=x, y=y2, m=m2, g=geometry: np_max_pool_forward(x, *g, y, m),
                (y1, y2),
            )
        )
        pool_kernels.max_pool_forward(x, kern, stride, pad, y1, m1)
        dy = rng.standard_normal(oshape).astype(F32)
        d1, d2 = np.empty_like(x), np.empty_like(x)
        cases.append(
            (
                "max pool backward",
                f"{label} {shape} k{k}s{s}",
                lambda dy=dy, m=m1, d=d1: pool_kernels.max_pool_backward(dy, m, d),
                lambda dy=dy, m=m1, d=d2: np_max_pool_backward(dy, m, d),
                (d1, d2),
            )
        )
        a1, a2 = np.empty(oshape, F32), np.empty(oshape, F32)
        cases.append(
            (
                "ave pool forward",
                f"{label} {shape} k{k}s{s}",
                lambda x=x, y=a1, g=geometry: pool_kernels.ave_pool_forward(x, *g, y),
                lambda x=x, y=a2, g=geometry: np_ave_pool_forward(x, *g, y),
                (a1, a2),
            )
        )
        e1, e2 = np.empty_like(x), np.empty_like(x)
        cases.append(
            (
                "ave pool backward",
                f"{label} {shape} k{k}s{s}",
                lambda dy=dy, d=e1, g=geometry: pool_kernels.ave_pool_backward(dy, *g, d),
                lambda dy=dy, d=e2, g=geometry: np_ave_pool_backward(dy, *g, d),
                (e1, e2),
            )
        )
    lrn_shape = (16, 96, 27, 27) if not quick else (16, 32, 13, 13)
    x = rng.standard_normal(lrn_shape).astype(F32)
    s1, s2 = np.empty_like(x), np.empty_like(x)
    cases.append(
        (
            "LRN channel window sum",
            f"{lrn_shape} n5",
            lambda: lrn_kernels.channel_window_sum(x, 5, s1, squared=True),
            lambda: np_channel_window_sum(x, 5, s2, squared=True),
            (s1, s2),
        )
    )
    for label, (n, o, p) in (("conv1 top", (64, 20, 576)), ("conv2 top", (64, 50, 64))):
        src = rng.standard_normal((n, o, p)).astype(F32)
        t1, t2 = np.empty((o, n, p), F32), np.empty((o, n, p), F32)
        cases.append(
            (
                "NCHW -> channel-major",
                f"{label} {(n, o, p)}",
                lambda s=src, t=t1: conv_kernels.nop_to_onp(s, t),
                lambda s=src, t=t2: np_nop_to_onp(s, t),
                (t1, t2),
            )
        )
        bias = rng.standard_normal(o).astype(F32)
        b1, b2 = np.empty_like(src), np.empty_like(src)
        cases.append(
            (
                "channel-major -> NCHW + bias",
                f"{label} {(n, o, p)}",
                lambda t=t1, b=bias, o_=b1: conv_kernels.onp_to_nop(t, b, o_),
                lambda t=t1, b=bias, o_=b2: np_onp_to_nop(t, b, o_),
                (b1, b2),
            )
        )
    return cases


def chunk_cases(rng):
    """LeNet's convolutions, forward (im2col + products) and backward (weight and input
    gradients), with chunks of 1 image, of the default size, and of the whole batch."""
    cases = []
    for label, shape, outputs in (("conv1", (64, 1, 28, 28), 20), ("conv2", (64, 20, 12, 12), 50)):
        x = rng.standard_normal(shape).astype(F32)
        kernel, pad, stride, dilation, out_size = conv_geometry(shape, 5)
        weight = rng.standard_normal((outputs, shape[1] * 25)).astype(F32)
        bias = rng.standard_normal(outputs).astype(F32)
        y = np.empty((shape[0], outputs) + out_size, F32)
        dy = rng.standard_normal(y.shape).astype(F32)
        wdiff = np.zeros_like(weight)
        dx = np.empty_like(x)
        fns, names = [], []
        default = conv_gemm.COLUMN_CHUNK_BYTES
        image_bytes = shape[1] * 25 * out_size[0] * out_size[1] * 4
        for chunk_bytes in (image_bytes, default, 1 << 40):
            conv_gemm.COLUMN_CHUNK_BYTES = chunk_bytes
            chunks = conv_gemm.ColumnChunks(
                image_shape=shape,
                kernel=kernel,
                pad=pad,
                stride=stride,
                dilation=dilation,
                map_channels=outputs,
                map_size=out_size,
                groups=1,
                dtype=F32,
            )
            conv_gemm.COLUMN_CHUNK_BYTES = default
            names.append(f"{chunks.chunk} images")

            def forward(chunks=chunks, x=x, weight=weight, y=y, bias=bias):
                chunks.run(
                    lambda w, part, first: chunks.map_from_col(w, weight, chunks.columns(w, x, part), y, part, bias)
                )

            def backward(chunks=chunks, x=x, weight=weight, dy=dy, wdiff=wdiff, dx=dx):
                def step(w, part, first):
                    m = chunks.map_matrix(w, dy, part)
                    chunks.add_weight_grad(w, m, chunks.columns(w, x, part), first)
                    chunks.image_from_map(w, weight, m, dx, part)

                chunks.run(step)
                chunks.weight_grad_total(wdiff)

            fns += [forward, backward]
        cases.append((label, names, fns))
    return cases


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="LeNet shapes only, smaller LRN")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)

    print(f"{'kernel':<30} {'case':<36} {'numba ms':>9} {'numpy ms':>9} {'numpy/numba':>12}")
    for name, case, ours, theirs, outputs in kernel_cases(rng, args.quick):
        ours(), theirs()
        if outputs is not None:
            np.testing.assert_allclose(
                outputs[0], outputs[1], rtol=1e-4, atol=1e-4, err_msg=f"{name} {case}: numba and numpy disagree"
            )
        t_ours, t_theirs = side_by_side([ours, theirs], args.repeats)
        print(f"{name:<30} {case:<36} {t_ours * 1e3:>9.3f} {t_theirs * 1e3:>9.3f} {t_theirs / t_ours:>11.1f}x")

    print(f"\n{'convolution chunks':<20} {'layer':<8} {'forward ms':>11} {'backward ms':>12}")
    for label, names, fns in chunk_cases(rng):
        times = side_by_side(fns, args.repeats)
        for i, name in enumerate(names):
            print(f"{name:<20} {label:<8} {times[2 * i] * 1e3:>11.3f} {times[2 * i + 1] * 1e3:>12.3f}")


if __name__ == "__main__":
    main()
