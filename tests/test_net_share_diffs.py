"""Net(share_diffs=True): blobs whose gradients are never alive at once keep their diffs in one
buffer, and every gradient a solver reads (params, the net's inputs) is bit for bit the same."""

import numpy as np
import pytest

from netlayers import Net, parallel
from netlayers.net import share_groups

MSRA = {"type": "msra"}


def conv(name, bottom, outputs, kernel=3, pad=1):
    param = {"num_output": outputs, "kernel_size": kernel, "pad": pad, "weight_filler": MSRA, "bias_term": False}
    return {"name": name, "type": "Convolution", "bottom": bottom, "top": name, "convolution_param": param}


def in_place(name, kind, blob, **param):
    return {"name": name, "type": kind, "bottom": blob, "top": blob, **param}


def residual_net(batch=4, channels=6, size=8, force_backward=False):
    """conv-BN-Scale-ReLU, a residual block (a fan-out Split, Eltwise SUM), a Concat branch,
    pooling, InnerProduct, loss: in-place chains, splits and joins."""
    layers = [
        {
            "name": "data",
            "type": "Input",
            "top": ["data", "label"],
            "input_param": {"shape": [{"dim": [batch, 3, size, size]}, {"dim": [batch]}]},
        },
        conv("stem", "data", channels),
        in_place("stem_bn", "BatchNorm", "stem"),
        in_place("stem_scale", "Scale", "stem", scale_param={"bias_term": True}),
        in_place("stem_relu", "ReLU", "stem"),
        conv("a", "stem", channels),
        in_place("a_relu", "ReLU", "a"),
        conv("b", "a", channels),
        {"name": "sum", "type": "Eltwise", "bottom": ["stem", "b"], "top": "sum"},
        in_place("sum_relu", "ReLU", "sum"),
        conv("c", "sum", 2, kernel=1, pad=0),
        {"name": "tanh", "type": "TanH", "bottom": "sum", "top": "t"},
        {"name": "cat", "type": "Concat", "bottom": ["c", "t"], "top": "cat"},
        {
            "name": "pool",
            "type": "Pooling",
            "bottom": "cat",
            "top": "pool",
            "pooling_param": {"pool": "MAX", "kernel_size": 2, "stride": 2},
        },
        {
            "name": "fc",
            "type": "InnerProduct",
            "bottom": "pool",
            "top": "fc",
            "inner_product_param": {"num_output": 5, "weight_filler": {"type": "xavier"}},
        },
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["fc", "label"], "top": "loss"},
    ]
    return {"name": "residual", "force_backward": force_backward, "layers": layers}


def inputs(batch=4, size=8, seed=0):
    rng = np.random.default_rng(seed)
    return {"data": rng.standard_normal((batch, 3, size, size)), "label": rng.integers(0, 5, batch).astype(float)}


def train_steps(net, feeds, steps=2):
    """Param diffs and the data diff after ``steps`` forward/backward passes from cleared diffs."""
    for feed in feeds[:steps]:
        net.clear_param_diffs()
        net.forward(**feed)
        net.backward()
    grads = [blob.diff.copy() for blobs in net.params.values() for blob in blobs]
    return grads, net.blobs["data"].diff.copy(), net.blobs["loss"].data.copy()


def distinct_diff_buffers(net):
    return len({id(blob._diff_buffer) for blob in net.blobs.values()})


# -- the grouping ------------------------------------------------------------------------------
def test_share_groups_put_disjoint_spans_together_and_keep_overlapping_apart():
    spans = [(0, 2), (2, 4), (5, 6), (3, 5), (7, 9)]
    sizes = [10, 8, 9, 1, 7]
    groups = share_groups(spans, sizes)
    for group in groups:
        for i in group:
            for j in group:
                if i != j:
                    assert spans[i][1] < spans[j][0] or spans[j][1] < spans[i][0]
    assert sorted(i for group in groups for i in group) == list(range(5))
    assert groups[0][0] == 0  # the largest item leads the first group
    assert {0, 2, 4} <= set(groups[0])  # (0,2), (5,6), (7,9): one buffer
    assert len(groups) == 3  # (2,4) and (3,5) overlap each other and (0,2) / (5,6)


def test_share_groups_of_nothing_is_empty():
    assert share_groups([], []) == []


# -- nets --------------------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [1, 2])
def test_shared_diffs_give_the_same_bits_as_separate_ones(workers):
    before = parallel.thread_count()
    parallel.set_thread_count(workers)
    try:
        feeds = [inputs(seed=s) for s in range(2)]
        plain = Net(residual_net(force_backward=True), seed=3)
        shared = Net(residual_net(force_backward=True), seed=3, share_diffs=True)
        assert shared.shared_diff_bytes > 0 and plain.shared_diff_bytes == 0
        assert distinct_diff_buffers(shared) < distinct_diff_buffers(plain)
        grads, data_diff, loss = train_steps(plain, feeds)
        grads_shared, data_diff_shared, loss_shared = train_steps(shared, feeds)
        assert loss == loss_shared
        assert len(grads) == len(grads_shared) == 11
        for a, b in zip(grads, grads_shared):
            assert np.array_equal(a, b)
        assert np.array_equal(data_diff, data_diff_shared)  # the net's input keeps its own diff
        assert np.abs(data_diff).max() > 0
    finally:
        parallel.set_thread_count(before)


def test_outputs_inputs_and_loss_tops_keep_their_own_diffs():
    net = Net(residual_net(force_backward=True), seed=3, share_diffs=True)
    shared_ids = {}
    for name, blob in net.blobs.items():
        shared_ids.setdefault(id(blob._diff_buffer), []).append(name)
    for name in ("data", "label", "loss"):
        assert shared_ids[id(net.blobs[name]._diff_buffer)] == [name]
    assert any(len(names) > 1 for names in shared_ids.values())
    net.forward(**inputs())
    net.backward()
    assert net.blobs["loss"].diff == 1.0  # the loss weight, set by the forward, survives


def test_blobs_that_meet_in_one_layer_never_share():
    net = Net(residual_net(), seed=3, share_diffs=True)
    for bottoms, tops in zip(net.bottom_vecs, net.top_vecs):
        blobs = {id(blob): blob for blob in bottoms + tops}.values()
        buffers = [id(blob._diff_buffer) for blob in blobs]
        assert len(buffers) == len(set(buffers))


def test_a_larger_batch_after_sharing_still_gives_the_same_gradients():
    small = [inputs(batch=2, seed=0)]
    large = [inputs(batch=6, seed=1)]
    plain = Net(residual_net(batch=2), seed=3)
    shared = Net(residual_net(batch=2), seed=3, share_diffs=True)
    for feeds in (small, large, small):
        grads, _, _ = train_steps(plain, feeds, steps=1)
        grads_shared, _, _ = train_steps(shared, feeds, steps=1)
        for a, b in zip(grads, grads_shared):
            assert np.array_equal(a, b)


def test_a_net_with_nothing_to_share_saves_nothing():
    spec = {
        "name": "linear",
        "layers": [
            {
                "name": "data",
                "type": "Input",
                "top": ["data", "label"],
                "input_param": {"shape": [{"dim": [2, 4]}, {"dim": [2]}]},
            },
            {
                "name": "fc",
                "type": "InnerProduct",
                "bottom": "data",
                "top": "fc",
                "inner_product_param": {"num_output": 3},
            },
            {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["fc", "label"], "top": "loss"},
        ],
    }
    assert Net(spec, share_diffs=True).shared_diff_bytes == 0
