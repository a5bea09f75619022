"""Net(share_memory=True): blobs whose gradients are never alive at once keep their diffs in one
buffer, blobs whose values no backward reads keep their data in one buffer with others alive at
other times of the forward, and every gradient a solver reads (params, the net's inputs) and the
loss are bit for bit the same."""

import sys
from pathlib import Path

import numpy as np
import pytest

from netlayers import ConfigError, Net, NetlayersError, parallel
from netlayers import net as net_module
from netlayers.net import arena_offsets, covered_length, plan_memory, sharing_places

MSRA = {"type": "msra"}


def conv(name, bottom, outputs, kernel=3, pad=1):
    param = {"num_output": outputs, "kernel_size": kernel, "pad": pad, "weight_filler": MSRA, "bias_term": False}
    return {"name": name, "type": "Convolution", "bottom": bottom, "top": name, "convolution_param": param}


def in_place(name, kind, blob, **param):
    return {"name": name, "type": kind, "bottom": blob, "top": blob, **param}


def input_layer(image_shape):
    """An Input layer of images ``image_shape`` (N, C, H, W) and N labels."""
    shapes = [{"dim": list(image_shape)}, {"dim": [image_shape[0]]}]
    return {"name": "data", "type": "Input", "top": ["data", "label"], "input_param": {"shape": shapes}}


def classifier(bottom, outputs, filler=None):
    """An InnerProduct of ``outputs`` on ``bottom`` and a SoftmaxWithLoss against the labels."""
    param = {"num_output": outputs, **({"weight_filler": filler} if filler else {})}
    return [
        {"name": "fc", "type": "InnerProduct", "bottom": bottom, "top": "fc", "inner_product_param": param},
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["fc", "label"], "top": "loss"},
    ]


def trained_residual_net(**solver):
    """The residual net fed by DummyData (Gaussian images, every label 2) with ``solver``."""
    spec = residual_net()
    fillers = [{"type": "gaussian"}, {"type": "constant", "value": 2}]
    shapes = spec["layers"][0]["input_param"]["shape"]
    spec["layers"][0] = {
        "name": "data",
        "type": "DummyData",
        "top": ["data", "label"],
        "dummy_data_param": {"shape": shapes, "data_filler": fillers},
    }
    spec["solver"] = {"base_lr": 0.1, "snapshot": 0, **solver}
    return spec


def residual_net(batch=4, channels=6, size=8, force_backward=False):
    """conv-BN-Scale-ReLU, a residual block (a fan-out Split, Eltwise SUM), a Concat branch,
    pooling, InnerProduct, loss: in-place chains, splits and joins."""
    layers = [
        input_layer((batch, 3, size, size)),
        conv("stem", "data", channels),
        in_place("stem_bn", "BatchNorm", "stem"),
        in_place("stem_scale", "Scale", "stem", scale_param={"bias_term": True}),
        in_place("stem_relu", "ReLU", "stem"),
        conv("a", "stem", channels),
        in_place("a_relu", "ReLU", "a"),
        conv("b", "a", channels),
        in_place("b_bn", "BatchNorm", "b"),
        in_place("b_scale", "Scale", "b"),
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
        *classifier("pool", 5, {"type": "xavier"}),
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


def buffers(net):
    """Each blob's data and diff buffers (where a shared blob keeps them: its place in the net's
    memory arena), by "<blob>.data" and "<blob>.diff"."""
    held = {}
    for name, blob in net.blobs.items():
        held[name + ".data"], held[name + ".diff"] = blob._data_buffer, blob._diff_buffer
    return held


def sharing(net):
    """Each buffer's name -> the names of the buffers whose memory it overlaps, its own
    included."""
    held = buffers(net)
    return {
        name: {other for other, theirs in held.items() if mine.size and theirs.size and np.shares_memory(mine, theirs)}
        for name, mine in held.items()
    }


def held_bytes(net):
    """Bytes of the distinct memory that holds the blobs' values and gradients."""
    roots = {}
    for array in buffers(net).values():
        while isinstance(array.base, np.ndarray):
            array = array.base
        roots[id(array)] = array.nbytes
    return sum(roots.values())


# -- the grouping ------------------------------------------------------------------------------
def overlap_in_memory(offsets, sizes, i, j):
    return offsets[i] < offsets[j] + sizes[j] and offsets[j] < offsets[i] + sizes[i]


def test_arena_offsets_keep_items_alive_together_apart_and_reuse_the_rest():
    spans = [(0, 2), (2, 4), (5, 6), (3, 5), (7, 9)]
    sizes = [10, 8, 9, 1, 7]
    offsets, total = arena_offsets(spans, sizes)
    for i in range(5):
        for j in range(i):
            if not (spans[i][1] < spans[j][0] or spans[j][1] < spans[i][0]):
                assert not overlap_in_memory(offsets, sizes, i, j), (i, j)
    assert offsets == [0, 10, 0, 9, 0]  # the largest first, each at the lowest offset it fits
    assert total == 18 == 10 + 8  # what is alive at time 2: no more is needed


def test_arena_offsets_put_two_items_alive_together_where_one_larger_was():
    """Buffers shared whole (one item at a time each) would need 10 + 5."""
    offsets, total = arena_offsets([(0, 1), (2, 3), (2, 3)], [10, 5, 5])
    assert offsets == [0, 0, 5] and total == 10


def test_arena_offsets_keep_the_least_of_several_placement_orders():
    """Largest first, the 8 at 0, the two 6s at 0 and 8 (time 1 and 2 to 4), the 5 beside the
    second 6 at 14: 19 in all. Placing by size x lifetime needs 14, what is alive at time 1."""
    spans, sizes = [(2, 6), (6, 7), (1, 4), (0, 1)], [5, 6, 6, 8]
    largest_first, _ = net_module._first_fit(spans, sizes, sorted(range(4), key=lambda i: (-sizes[i], spans[i])))
    assert plan_memory(largest_first, sizes) == 19
    offsets, total = arena_offsets(spans, sizes)
    assert plan_memory(offsets, sizes) == total == 14


def test_arena_offsets_never_overlap_live_items_nor_lose_to_largest_first():
    rng = np.random.default_rng(11)
    for _ in range(300):
        count = int(rng.integers(1, 9))
        starts = rng.integers(0, 10, count)
        spans = [(int(a), int(a + rng.integers(0, 6))) for a in starts]
        sizes = [int(z) for z in rng.integers(0, 9, count)]
        offsets, total = arena_offsets(spans, sizes)
        for i in range(count):
            assert offsets[i] + sizes[i] <= total
            for j in range(i):
                if not (spans[i][1] < spans[j][0] or spans[j][1] < spans[i][0]):
                    assert not overlap_in_memory(offsets, sizes, i, j), (spans, sizes, offsets)
        order = sorted(range(count), key=lambda i: (-sizes[i], spans[i]))
        largest_first, _ = net_module._first_fit(spans, sizes, order)
        assert plan_memory(offsets, sizes) <= plan_memory(largest_first, sizes)


def test_sharing_places_flags_each_place_that_overlaps_another():
    # [0, 4) and [2, 5) overlap; [5, 6) touches [2, 5) only at its end; [8, 9) lies inside [6, 10)
    assert sharing_places([0, 2, 5, 6, 8], [4, 3, 1, 4, 1]) == [True, True, False, True, True]
    assert sharing_places([], []) == []
    assert covered_length([(8, 1), (0, 4), (2, 3)]) == 6  # [0, 5) and [8, 9)


def test_arena_offsets_of_nothing_is_an_empty_arena():
    assert arena_offsets([], []) == ([], 0)


# -- nets --------------------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [1, 2])
def test_shared_diffs_give_the_same_bits_as_separate_ones(workers):
    before = parallel.thread_count()
    parallel.set_thread_count(workers)
    try:
        feeds = [inputs(seed=s) for s in range(2)]
        plain = Net(residual_net(force_backward=True), seed=3)
        shared = Net(residual_net(force_backward=True), seed=3, share_memory=True)
        assert shared.shared_diff_bytes > 0 and plain.shared_diff_bytes == 0
        assert shared.shared_data_bytes > 0 and plain.shared_data_bytes == 0
        assert held_bytes(shared) < held_bytes(plain)
        grads, data_diff, loss = train_steps(plain, feeds)
        grads_shared, data_diff_shared, loss_shared = train_steps(shared, feeds)
        assert loss == loss_shared
        assert len(grads) == len(grads_shared) == 15
        for a, b in zip(grads, grads_shared):
            assert np.array_equal(a, b)
        assert np.array_equal(data_diff, data_diff_shared)  # the net's input keeps its own diff
        assert np.abs(data_diff).max() > 0
    finally:
        parallel.set_thread_count(before)


def test_outputs_inputs_and_loss_tops_keep_their_own_diffs():
    net = Net(residual_net(force_backward=True), seed=3, share_memory=True)
    together = sharing(net)
    for name in ("data", "label", "loss"):
        assert together[name + ".diff"] == {name + ".diff"}
    assert any(len(names) > 1 for name, names in together.items() if name.endswith(".diff"))
    net.forward(**inputs())
    net.backward()
    assert net.blobs["loss"].diff == 1.0  # the loss weight, set by the forward, survives


def test_blobs_that_meet_in_one_layer_never_share():
    net = Net(residual_net(), seed=3, share_memory=True)
    for bottoms, tops in zip(net.bottom_vecs, net.top_vecs):
        blobs = list({id(blob): blob for blob in bottoms + tops}.values())
        for kind in ("_data_buffer", "_diff_buffer"):
            arrays = [getattr(blob, kind) for blob in blobs if getattr(blob, kind).size]
            for i, mine in enumerate(arrays):
                assert not any(np.shares_memory(mine, theirs) for theirs in arrays[i + 1 :]), kind


def test_values_and_gradients_share_by_when_they_are_alive():
    """One timeline for both passes (20 layers: layer i's forward at time i, its backward at
    39 - i). 'a' is read by the ReLU in place on it and by the convolution 'b', whose backwards
    (times 32 and 31) read it: its values are alive from 6 to 32, and then hold the stem's
    gradient (alive from the Split's backward, 34, to the stem convolution's, 38). The
    BatchNorm + Scale output 'b', read only by the sum (8 to 11), the Concat's output read only
    by the max pooling (16 to 17) and the InnerProduct's output, read by the loss's backward
    (18 to 20), are alive at different times, before any gradient: one buffer. The net's
    input, labels and loss keep their own values and gradients; so do the blobs a ReLU's
    backward reads until it has run, and nothing alive at once shares."""
    net = Net(residual_net(), seed=3, share_memory=True)
    together = sharing(net)
    assert {"stem.diff", "a.data"} <= together["a.data"]
    assert {"b.data", "cat.data", "fc.data"} <= together["b.data"]
    for name in ("data", "label", "loss"):
        assert together[name + ".data"] == {name + ".data"} and together[name + ".diff"] == {name + ".diff"}
    assert not together["stem.data"] - {"stem.data"}  # kept for the stem ReLU's backward, the last to read it
    assert id(net.blobs["stem"]) not in net._shared_values  # a place of its own: its own arrays, kept
    held = buffers(net)
    assert all(held[name].ctypes.data % 64 == 0 for name, names in together.items() if len(names) > 1)  # cache lines
    assert net.shared_data_bytes > 0 and net.shared_diff_bytes > 0


def test_a_solver_trains_the_same_with_shared_data(monkeypatch):
    """Three solver steps of the residual net (momentum, weight decay) give the same params
    and losses, bit for bit, whether its TRAIN net shares data memory or not."""
    from netlayers.solvers import Solver
    from netlayers.solvers.reporting import Reporter

    spec = trained_residual_net(momentum=0.9, weight_decay=1e-3, max_iter=3)
    spec["random_seed"] = 5

    def train():
        solver = Solver(spec, reporter=Reporter(quiet=True, metrics=False))
        losses = []
        for _ in range(3):
            solver.step(1)
            losses.append(solver.net.loss)
        return solver.net, losses, [blob.data.copy() for blobs in solver.net.params.values() for blob in blobs]

    shared, losses, params = train()
    assert shared.shared_data_bytes > 0
    monkeypatch.setattr(Net, "_share_memory", lambda net, keep: (0, 0))
    plain, plain_losses, plain_params = train()
    assert plain.shared_data_bytes == 0
    assert losses == plain_losses
    for a, b in zip(params, plain_params):
        assert np.array_equal(a, b)


def test_a_larger_batch_after_sharing_still_gives_the_same_gradients():
    small = [inputs(batch=2, seed=0)]
    large = [inputs(batch=6, seed=1)]
    plain = Net(residual_net(batch=2), seed=3)
    shared = Net(residual_net(batch=2), seed=3, share_memory=True)
    for feeds in (small, large, small):
        grads, _, _ = train_steps(plain, feeds, steps=1)
        grads_shared, _, _ = train_steps(shared, feeds, steps=1)
        for a, b in zip(grads, grads_shared):
            assert np.array_equal(a, b)


def test_a_net_with_nothing_to_share_saves_nothing():
    spec = {
        "name": "linear",
        "layers": [
            input_layer((2, 4)),
            *classifier("data", 3),
        ],
    }
    assert Net(spec, share_memory=True).shared_diff_bytes == 0


# -- real nets: shared and plain give the same bits ----------------------------------------------
def small_real_nets():
    """Small versions of the benchmark's nets with BatchNorm chains, residual sums, projections,
    Concat joins, depthwise layers and squeeze-excitation products."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import bench_nets

    return {
        "cifar_resnet": bench_nets.cifar_resnet(batch=2, blocks=2, widths=(4, 8, 8), size=8),
        "mobilenet_v2": bench_nets.mobilenet_v2(batch=2, size=16),
        "densenet": bench_nets.densenet(batch=2, size=8, channels=8, growth=4, count=3),
        "inception": bench_nets.inception(batch=2, size=8, channels=8),
        "se_resnet": bench_nets.se_resnet(batch=2, size=8, width=8),
        "shufflenet": bench_nets.shufflenet(batch=2, size=8, channels=24, groups=3, units=2),
        "tanh_convnet": tanh_convnet(),
    }


def tanh_convnet():
    """conv - TanH - AVE pool, twice: each TanH's backward reads its output (kept), each
    convolution's output is read only by its TanH (shared)."""
    layers = [input_layer((2, 3, 8, 8))]
    bottom = "data"
    for k in (1, 2):
        ave = {"pool": "AVE", "kernel_size": 2, "stride": 2}
        layers += [
            conv(f"conv{k}", bottom, 4),
            {"name": f"tanh{k}", "type": "TanH", "bottom": f"conv{k}", "top": f"t{k}"},
            {"name": f"pool{k}", "type": "Pooling", "bottom": f"t{k}", "top": f"p{k}", "pooling_param": ave},
        ]
        bottom = f"p{k}"
    layers += classifier(bottom, 10, {"type": "xavier"})
    return {"name": "tanh_convnet", "layers": layers}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    "name", ["cifar_resnet", "mobilenet_v2", "densenet", "inception", "se_resnet", "shufflenet", "tanh_convnet"]
)
def test_real_nets_give_the_same_bits_with_shared_memory(name, dtype):
    """In both dtypes: the arena lays float32 and float64 blobs out at other offsets."""
    spec = small_real_nets()[name]
    assert_same_bits_with_shared_memory(spec, dtype, name)


def assert_same_bits_with_shared_memory(spec, dtype, name):
    rng = np.random.default_rng(4)
    plain, shared = Net(spec, seed=3, dtype=dtype), Net(spec, seed=3, share_memory=True, dtype=dtype)
    feeds = []
    for _ in range(2):
        feed = {}
        for blob_name in plain.inputs:
            shape = plain.blobs[blob_name].shape
            values = rng.integers(0, 10, shape) if blob_name == "label" else rng.standard_normal(shape)
            feed[blob_name] = values.astype(dtype)
        feeds.append(feed)
    results = []
    for net in (plain, shared):
        losses = []
        for feed in feeds:
            net.clear_param_diffs()
            net.forward(**feed)
            losses.append(net.loss)
            net.backward()
        results.append((losses, [blob.diff.copy() for blobs in net.params.values() for blob in blobs]))
    (losses, grads), (losses_shared, grads_shared) = results
    assert losses == losses_shared
    for a, b in zip(grads, grads_shared):
        assert np.array_equal(a, b)
    if name in ("cifar_resnet", "mobilenet_v2", "se_resnet", "shufflenet", "tanh_convnet"):
        assert shared.shared_data_bytes > 0


def fuzz_net(seed, index):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import fuzz_nets

    return fuzz_nets.random_net(seed, index)


def test_a_fused_residual_sums_mask_is_never_overwritten_by_the_gradients_it_writes():
    """A SumReLU's backward (``layers.fused``) reads the sum's values (the ReLU's mask) while it
    writes the Eltwise's bottoms' gradients: the plan keeps them apart. In this fuzz net the
    float32 arena once put the first bottom's gradient a little past the sum's values, and every
    gradient from that sum down came out 35 % to 61 % off (float64's layout happened to be safe)."""
    spec = fuzz_net(77, 22)
    for dtype in (np.float32, np.float64):
        net = Net(spec, seed=3, share_memory=True, dtype=dtype)
        pairs = [run for run in net._chains.values() if type(run).__name__ == "SumReLU"]
        assert pairs
        for pair in pairs:
            for bottom in pair.bottoms:
                assert not np.may_share_memory(bottom.diff, pair.blob.data), (pair.blob.name, bottom.name)
        assert_same_bits_with_shared_memory(spec, dtype, spec["name"])


@pytest.mark.parametrize("index", range(6))
def test_random_nets_give_the_same_bits_with_shared_memory_in_float32(index):
    assert_same_bits_with_shared_memory(fuzz_net(77, 20 + index), np.float32, f"fuzz {index}")


# -- forward-only nets keep nothing for a backward ---------------------------------------------
def deploy_residual_net(force_backward=False):
    """The residual net without its loss (a deploy net: forward only, unless force_backward)."""
    spec = residual_net(force_backward=force_backward)
    spec["layers"] = [layer for layer in spec["layers"] if layer["type"] != "SoftmaxWithLoss"]
    spec["layers"][0]["top"] = ["data"]
    spec["layers"][0]["input_param"]["shape"] = spec["layers"][0]["input_param"]["shape"][:1]
    cat = next(layer for layer in spec["layers"] if layer["type"] == "Concat")
    cat["bottom"] = ["c", "t_norm"]
    at = spec["layers"].index(cat)
    spec["layers"].insert(at, {"name": "norm", "type": "LRN", "bottom": "t", "top": "t_norm"})
    window = {"pool": "MAX", "kernel_size": 3, "stride": 2}
    spec["layers"].append(
        {"name": "pool2", "type": "Pooling", "bottom": "cat", "top": ["pool2", "argmax"], "pooling_param": window}
    )
    return spec


@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_a_forward_only_net_keeps_no_backward_state_and_gives_the_same_outputs(phase):
    """A net whose backward never runs drops what only a backward reads: BatchNorm's
    normalized values and an in-place Scale's copy of its input (here 'b_scale', which
    BatchNorm's values are lent to in a net with a backward, and 'stem_scale'); LRN's scale and
    max pooling's argmax are found in the workers' small workspaces. Its outputs (with Caffe's
    argmax top) are the same bits as those of the net with a backward."""
    data = inputs()["data"]
    forward_only = Net(deploy_residual_net(), phase, seed=3)
    with_backward = Net(deploy_residual_net(force_backward=True), phase, seed=3)
    assert not any(forward_only.layer_need_backward) and all(with_backward.layer_need_backward[1:])
    outputs = forward_only.forward(data=data)
    expected = with_backward.forward(data=data)
    assert outputs.keys() == expected.keys() == {"fc", "pool2", "argmax"}
    for name in outputs:
        assert np.array_equal(outputs[name], expected[name]), name
    for net, keeps in ((forward_only, False), (with_backward, True)):
        norms = [layer for layer in net.layers if layer.type == "BatchNorm"]
        scales = [layer for layer in net.layers if layer.type == "Scale"]
        assert len(norms) == len(scales) == 2
        assert all((layer.normalized is not None) == keeps for layer in norms)
        assert all((layer.needs_backward) == keeps for layer in norms + scales)
        if not keeps:
            assert not any(hasattr(layer, "_input") for layer in scales)  # no copy of the input made
        lrn = next(layer for layer in net.layers if layer.type == "LRN")
        assert (lrn.scale is not None) == keeps
        pools = [layer for layer in net.layers if layer.type == "Pooling"]
        assert len(pools) == 2 and all(layer.windows.shared_mask != keeps for layer in pools)


def test_a_forward_only_net_takes_a_new_batch_size_without_keeping_state():
    net = Net(deploy_residual_net(), "TEST", seed=3)
    net.forward(data=inputs(batch=6)["data"])
    assert all(layer.normalized is None for layer in net.layers if layer.type == "BatchNorm")


def test_a_batchnorm_without_backward_keeps_what_it_lends_to_a_learning_scale():
    """BatchNorm on the net's input needs no backward, but the Scale after it learns and its
    backward reads BatchNorm's normalized values (kept, or made again from the input: BatchNorm
    cannot run in place on an Input's values): the Scale's gradients are those of the net where
    BatchNorm has a backward too (force_backward)."""

    def spec(force):
        layers = [
            input_layer((4, 3, 6, 6)),
            in_place("bn", "BatchNorm", "data"),
            in_place("scale", "Scale", "data", scale_param={"bias_term": True}),
            conv("conv", "data", 4),
            *classifier("conv", 3, {"type": "xavier"}),
        ]
        return {"name": "bn_first", "force_backward": force, "layers": layers}

    feed = {"data": np.random.default_rng(2).standard_normal((4, 3, 6, 6)), "label": np.array([0, 1, 2, 1.0])}
    grads = []
    for force in (False, True):
        net = Net(spec(force), seed=4)
        assert net.layer_need_backward[1] == force and net.layer_need_backward[2]
        assert net.layers[1].needs_backward
        net.forward(**feed)
        net.backward()
        grads.append([blob.diff.copy() for blob in net.layers[2].blobs])
    for a, b in zip(*grads):
        assert np.abs(a).max() > 0
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_a_net_made_forward_only_drops_its_backward_state_and_refuses_a_backward():
    net = Net(residual_net(), "TEST", seed=3)
    assert all(net.layer_need_backward[1:]) and net.layers[2].normalized is not None
    feed = inputs()
    before = net.forward(**feed)["loss"].copy()
    net.drop_backward()
    assert net.forward_only and not any(net.layer_need_backward)
    assert all(layer.normalized is None for layer in net.layers if layer.type == "BatchNorm")
    assert np.array_equal(net.forward(**feed)["loss"], before)
    with pytest.raises(NetlayersError, match="forward only"):
        net.backward()


def test_a_solver_tests_with_forward_only_nets():
    from netlayers.solvers import Solver
    from netlayers.solvers.reporting import Reporter

    spec = trained_residual_net(max_iter=2, test_iter=1, test_interval=1)
    solver = Solver(spec, reporter=Reporter(quiet=True, metrics=False))
    (test_net,) = solver.test_nets
    assert test_net.forward_only and not solver.net.forward_only
    solver.step(2)
    assert all(layer.normalized is None for layer in test_net.layers if layer.type == "BatchNorm")


def test_a_forward_only_net_shares_the_memory_of_every_inner_blob():
    """Forward only, no backward keeps any values: with share_memory every inner blob may share
    a buffer with blobs alive at other times of the forward, the inputs of a convolution ('a'),
    an InnerProduct ('pool') and an LRN ('t') too, which a net with a backward keeps, and blobs
    that fan out ('stem', 'sum'), whose Split tops then see the shared buffer. The outputs (and
    the argmax top) are the same bits as those of the net that keeps every blob; the input
    keeps its values.
    A TEST net with a loss is built forward only (``forward_only=True``, as ``netlayers test``
    builds it) and shares the same way, its loss the same bits."""
    data = inputs()["data"]
    plain = Net(deploy_residual_net(), "TEST", seed=3)
    shared = Net(deploy_residual_net(), "TEST", seed=3, share_memory=True)
    expected = {name: value.copy() for name, value in plain.forward(data=data).items()}
    outputs = shared.forward(data=data)
    assert outputs.keys() == expected.keys() == {"fc", "pool2", "argmax"}
    for name in outputs:
        assert np.array_equal(outputs[name], expected[name]), name
    assert np.array_equal(shared.blobs["data"].data, data.astype(shared.dtype))
    together = sharing(shared)
    in_shared_buffers = {name[:-5] for name, names in together.items() if name.endswith(".data") and len(names) > 1}
    assert {"a", "pool", "t", "stem", "sum"} <= in_shared_buffers
    for blob in ("stem", "sum"):
        (split,) = [layer for layer in shared.layers if layer.type == "Split" and layer.spec.bottoms == [blob]]
        for top in split.spec.tops:
            assert np.shares_memory(shared.blobs[top].data, shared.blobs[blob]._data_buffer), top
    assert not in_shared_buffers & {"data", "fc", "pool2", "argmax"}
    assert shared.shared_data_bytes > Net(residual_net(), seed=3, share_memory=True).shared_data_bytes

    feed = inputs()
    loss = Net(residual_net(), "TEST", seed=3).forward(**feed)["loss"].copy()
    tested = Net(residual_net(), "TEST", seed=3, share_memory=True, forward_only=True)
    assert tested.forward_only and tested.shared_data_bytes > 0
    assert np.array_equal(tested.forward(**feed)["loss"], loss)
    with pytest.raises(NetlayersError, match="forward only"):
        tested.backward()


def test_a_forward_from_a_layer_whose_inputs_shared_memory_is_refused_in_one_line():
    """With shared memory, a blob's values are gone after a pass: a forward from 'fc' after a
    whole forward (or a backward) would read 'pool' from whatever its buffer holds. It is
    refused, naming the blob; a forward on from where the last one ended, with no backward
    between, reads values still there and gives the whole forward's loss. A net that keeps
    every blob runs it."""
    feed = inputs()
    shared = Net(residual_net(), seed=3, share_memory=True)
    loss = shared.forward(**feed)["loss"].copy()
    with pytest.raises(NetlayersError, match="reads blob 'pool', whose memory other blobs share"):
        shared.forward(start="fc")
    shared.forward(**feed, end="cat")
    assert np.array_equal(shared.forward(start="pool")["loss"], loss)
    shared.backward()
    with pytest.raises(NetlayersError, match="blob 'pool'"):
        shared.forward(start="fc")
    plain = Net(residual_net(), seed=3)
    plain.forward(**feed)
    plain.backward()
    assert np.array_equal(plain.forward(start="fc")["loss"], loss)


def test_blobs_named_in_keep_keep_their_own_values_and_gradients():
    net = Net(residual_net(), seed=3, share_memory=True, keep=["b", "cat"])
    together = sharing(net)
    for name in ("b.data", "b.diff", "cat.data", "cat.diff"):
        assert together[name] == {name}, name
    assert id(net.blobs["b"]) not in net._shared_values and net.shared_data_bytes > 0
    assert len(sharing(Net(residual_net(), seed=3, share_memory=True))["b.data"]) > 1  # without keep: shared
    assert sharing(Net(residual_net(), seed=3, share_memory=True, keep="b"))["b.data"] == {"b.data"}  # one name
    with pytest.raises(ConfigError, match=r"^keep names no blob of the TRAIN net: 'nothing'$"):
        Net(residual_net(), share_memory=True, keep=["b", "nothing"])
    with pytest.raises(ConfigError, match=r"^keep must be a list of blob names, got 5$"):
        Net(residual_net(), share_memory=True, keep=5)
    with pytest.raises(ConfigError, match=r"^keep names no blob of the TRAIN net: 'nothing'$"):
        Net(residual_net(), keep=["nothing"])  # without shared memory too: a misspelt name is seen


def test_building_a_net_gives_the_memory_it_freed_back_to_the_system(monkeypatch):
    """glibc keeps freed blocks resident for reuse; a net's build frees tens of MiB (each
    shared blob's first arrays, the fillers' float64 draws): Net returns them (malloc_trim)."""
    import platform

    from netlayers import memory
    from netlayers import net as net_module

    if platform.libc_ver()[0] == "glibc":  # Debian, the project's platform
        assert memory._malloc_trim() is not None
    calls = []
    monkeypatch.setattr(net_module, "return_freed_memory", lambda: calls.append(1))
    Net(residual_net(), seed=3, share_memory=True)
    Net(residual_net(), seed=3)
    assert len(calls) == 2
