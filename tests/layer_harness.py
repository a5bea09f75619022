"""The layer-contract harness shared by every layer test (a module of its own: test files
import it as ``layer_harness``; two conftest modules would both be named ``conftest``).

- ``run_layer(layer_dict, bottoms)`` sets up a float64 layer on the given arrays, runs forward,
  and returns (layer, top arrays).
- ``assert_gradients(layer_dict, bottoms, **kw)`` runs netlayers.gradcheck.check_layer and
  asserts that every checked blob passes and that something was actually checked.
- ``assert_contract(layer_dict, bottoms)`` checks the rest of the Layer contract: param diffs
  accumulate (two backwards give twice the gradient), the incoming top diff is not modified,
  and a float32 build gives the float64 result to float32 precision.
"""

import gc

import numpy as np

from netlayers.blob import Blob
from netlayers.gradcheck import build_layer, check_layer


def convolution_spec(outputs, kernel, pad, stride=(1, 1), *, dilation=(1, 1), group=1, kind="Convolution", **fillers):
    """A Convolution (or Deconvolution) layer dict with per-axis (h, w) settings; ``fillers``:
    weight_filler and bias_filler (default gaussian std 0.3, and gaussian)."""
    param = {
        "num_output": outputs,
        "kernel_h": kernel[0],
        "kernel_w": kernel[1],
        "pad_h": pad[0],
        "pad_w": pad[1],
        "stride_h": stride[0],
        "stride_w": stride[1],
        "dilation": list(dilation),
        "group": group,
        "weight_filler": fillers.get("weight_filler", {"type": "gaussian", "std": 0.3}),
        "bias_filler": fillers.get("bias_filler", {"type": "gaussian"}),
    }
    return {"type": kind, "convolution_param": param}


def make_layer(layer, bottoms, *, phase="TRAIN", seed=0, dtype=np.float64):
    layer = dict(layer)
    layer.setdefault("name", layer.get("type", "layer"))
    layer.setdefault("bottom", [f"b{i}" for i in range(len(bottoms))])
    layer.setdefault("top", ["t0"])
    arrays = [np.asarray(b) for b in bottoms]
    instance, bottom, top = build_layer(layer, [a.shape for a in arrays], phase=phase, seed=seed)
    if dtype != np.float64:
        instance.dtype = np.dtype(dtype)
        bottom = [Blob(a.shape, dtype, name=b.name) for a, b in zip(arrays, bottom)]
        top = [Blob((), dtype, name=t.name) for t in top]
    for blob, array in zip(bottom, arrays):
        blob.data[...] = array
    instance.setup(bottom, top)
    return instance, bottom, top


def run_layer(layer, bottoms, *, phase="TRAIN", seed=0, dtype=np.float64):
    instance, bottom, top = make_layer(layer, bottoms, phase=phase, seed=seed, dtype=dtype)
    instance.forward(bottom, top)
    return instance, [t.data.copy() for t in top]


def forward_backward(layer, x, dy):
    """Build ``layer`` on one bottom ``x``, run forward, set the top's diff to ``dy`` and run
    backward: (the layer, its top, the bottom's diff, copies of its param diffs)."""
    instance, bottom, top = make_layer(layer, [x])
    instance.forward(bottom, top)
    top[0].diff[...] = dy
    instance.backward(top, [True], bottom)
    return instance, top[0].data.copy(), bottom[0].diff.copy(), [b.diff.copy() for b in instance.blobs]


def pass_with_added_gradients(layer, x, data_gradient=True):
    """Build ``layer`` on one bottom ``x``, run forward, set the top's diff to a fixed ramp of
    sines and the weight's diff to ones (a weight gradient is added to what is there), run
    backward (with the input gradient when ``data_gradient``): (the layer, copies of [top,
    weight diff] + [bottom diff] when computed)."""
    instance, bottom, top = make_layer(layer, [x])
    instance.forward(bottom, top)
    top[0].diff[...] = np.sin(np.arange(top[0].count)).reshape(top[0].shape)
    instance.blobs[0].diff[...] = 1.0
    instance.backward(top, [data_gradient], bottom)
    results = [top[0].data.copy(), instance.blobs[0].diff.copy()]
    return instance, results + [bottom[0].diff.copy()] * data_gradient


def assert_same_results(first, second, rtol=1e-10, atol=1e-10):
    """Two :func:`forward_backward` results agree: top, bottom diff and every param diff."""
    for got, want in zip(first[1:3], second[1:3]):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    for got, want in zip(first[3], second[3]):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def assert_gradients(layer, bottoms, **kwargs):
    report = check_layer(layer, bottoms, **kwargs)
    assert report.blobs, "nothing was gradient-checked"
    assert all(b.checked > 0 for b in report.blobs), str(report)
    assert report.passed, str(report)
    return report


def assert_contract(layer, bottoms, *, phase="TRAIN", seed=0, rtol=1e-4, atol=1e-5):
    instance, bottom, top = make_layer(layer, bottoms, phase=phase, seed=seed)
    state = instance.rng.bit_generator.state
    instance.forward(bottom, top)
    rng = np.random.default_rng(7)
    for t in top:
        t.diff[...] = rng.standard_normal(t.shape)
    upstream = [t.diff.copy() for t in top]
    propagate = [instance.allow_force_backward(i) for i in range(len(bottom))]
    for blob in instance.blobs:
        blob.diff[...] = 0
    instance.Backward_cpu(top, propagate, bottom)
    once = [b.diff.copy() for b in instance.blobs]
    instance.Backward_cpu(top, propagate, bottom)
    for blob, first in zip(instance.blobs, once):
        if instance.param_propagate_down and first.any():
            np.testing.assert_allclose(
                blob.diff, 2 * first, rtol=1e-10, atol=1e-12, err_msg="param diffs must accumulate (+=)"
            )
    for t, before in zip(top, upstream):
        if t not in bottom:
            np.testing.assert_array_equal(t.diff, before, err_msg="the top diff must not be modified")
    # float32 gives the float64 answer to float32 precision
    f32, b32, t32 = make_layer(layer, bottoms, phase=phase, seed=seed, dtype=np.float32)
    for p64, p32 in zip(instance.blobs, f32.blobs):
        p32.data[...] = p64.data
    f32.rng.bit_generator.state = state
    instance.rng.bit_generator.state = state
    instance.forward(bottom, top)
    f32.forward(b32, t32)
    for a, b in zip(t32, top):
        assert a.data.dtype == np.float32
        np.testing.assert_allclose(a.data, b.data, rtol=rtol, atol=atol)


def the_thread_ends_with_its_net(make_net):
    """Whether the prefetch thread of the data layer of the net ``make_net()`` builds ends once
    the net is dropped (a thread holding the layer's own method kept layer, prefetcher and
    thread alive for good)."""
    net = make_net()
    thread = net.layers[0].prefetcher._thread
    net.forward()
    del net
    for _ in range(20):  # the thread may be reading a batch, holding the layer, at a collection
        gc.collect()
        thread.join(0.1)
        if not thread.is_alive():
            break
    return not thread.is_alive()
