"""Data conversion kernels: a batch of raw items to the float input of a net in one pass.

``nogil`` matters here more than anywhere: the Data layer converts batches in its prefetch
thread, and while this kernel runs that thread does not hold the interpreter lock the net's
thread needs.
"""

from ._jit import jit


@jit
def _shift_scale(x, means, subtract, scale, multiply, out):
    batch, channels, size = x.shape
    for n in range(batch):
        for c in range(channels):
            mean = means[c]
            src = x[n, c]
            dst = out[n, c]
            for p in range(size):
                v = out.dtype.type(src[p])
                if subtract:
                    v = v - mean
                if multiply:
                    v = v * scale
                dst[p] = v


def shift_scale(x, means, scale, out):
    """out[n, c, p] = (float(x[n, c, p]) - means[c]) * scale for (N, C, P) arrays, every step
    rounded to ``out``'s dtype as numpy's ``copyto``, ``out -= means``, ``out *= scale`` round
    it (``means`` None: no subtraction; scale 1: no multiplication). ``means`` has C entries
    of ``out``'s dtype."""
    t = out.dtype.type
    subtract = means is not None
    if not subtract:
        means = out[0, :, 0] if out.size else out.reshape(-1)  # any array of the right type
    _shift_scale(x, means, subtract, t(scale), scale != 1.0, out)
    return out
