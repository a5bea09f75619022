"""Normalization layers (LRN, BatchNorm, MVN): values against the references in
tests/reference.py, Caffe's running statistics, gradients, the contract and setup errors."""

import numpy as np
import pytest
import reference
from layer_harness import assert_contract, assert_gradients, make_layer, run_layer

from netlayers import ConfigError, Net
from netlayers.gradcheck import check_layer

# -- LRN ----------------------------------------------------------------------------------------
LRN_CASES = [
    {},
    {"local_size": 3, "alpha": 0.5, "beta": 0.6, "k": 2.0},
    {"norm_region": "WITHIN_CHANNEL", "local_size": 3, "alpha": 2.0, "beta": 0.75},
    {"norm_region": "WITHIN_CHANNEL", "local_size": 5, "alpha": 1.5, "beta": 0.5, "k": 7.0},
]


@pytest.mark.parametrize("param", LRN_CASES)
def test_lrn_matches_formula_and_gradients(param, rng):
    x = rng.standard_normal((2, 7, 4, 5))
    spec = {"type": "LRN", "lrn_param": param}
    _, (y,) = run_layer(spec, [x])
    full = {"local_size": 5, "alpha": 1.0, "beta": 0.75, "k": 1.0, "norm_region": "ACROSS_CHANNELS"}
    full.update(param)
    expected = reference.lrn(x, full["local_size"], full["alpha"], full["beta"], full["k"], full["norm_region"])
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    assert_gradients(spec, [x])


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("param", [LRN_CASES[1], LRN_CASES[3]])
def test_lrn_without_backward_normalizes_chunks_of_images_in_a_workspace(
    param, workers, rng, thread_count, monkeypatch
):
    """Without a backward, LRN keeps no scale: each worker makes it for a chunk of images at a
    time (here 2 of 7 x 4 x 5 = 140 values each, the last chunk of a share shorter) in one
    workspace of its own. The outputs are those of the layer with a backward, bit for bit."""
    from netlayers import parallel
    from netlayers.layers import normalization

    thread_count(workers)
    monkeypatch.setattr(normalization, "WORKSPACE_ITEMS", 2 * 140 + 10)
    monkeypatch.setattr(parallel, "SPLIT_MIN_BYTES", 1)  # share out the small batch as a large one
    x = rng.standard_normal((7, 7, 4, 5))
    layer, bottom, top = make_layer({"type": "LRN", "lrn_param": param}, [x])
    layer.forward(bottom, top)
    expected = top[0].data.copy()
    layer.drop_backward_state()
    parallel.release_scratch()
    top[0].data[...] = 0
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data, expected)
    assert layer.scale is None
    workspaces = [buffer for (_, name, _), buffer in parallel._scratch.items() if name.startswith("lrn")]
    assert len(workspaces) == workers and all(buffer.size == 2 * 140 for buffer in workspaces)


def test_lrn_contract(rng):
    assert_contract({"type": "LRN", "lrn_param": {"local_size": 3}}, [rng.standard_normal((2, 5, 3, 3))])


@pytest.mark.parametrize("param,message", [({"local_size": 4}, "odd"), ({"local_size": 0}, ">= 1")])
def test_lrn_errors(param, message):
    with pytest.raises(ConfigError, match=message):
        make_layer({"type": "LRN", "lrn_param": param}, [np.zeros((1, 3, 2, 2))])


def test_lrn_asked_to_run_in_place_gets_a_blob_of_its_own(rng):
    def net(top):
        return Net(
            {
                "force_backward": True,
                "layers": [
                    {
                        "name": "data",
                        "type": "Input",
                        "top": ["data", "t"],
                        "input_param": {"shape": {"dim": [1, 3, 2, 2]}},
                    },
                    {"name": "norm", "type": "LRN", "bottom": "data", "top": top},
                    {"name": "loss", "type": "EuclideanLoss", "bottom": [top, "t"], "top": "loss"},
                ],
            },
            dtype=np.float64,
        )

    x, t = rng.standard_normal((1, 3, 2, 2)), rng.standard_normal((1, 3, 2, 2))
    results = []
    for top in ("y", "data"):
        n = net(top)
        n.forward(data=x, t=t)
        n.backward()
        results.append((n.loss, n.source_blobs["data"].diff.copy()))
    assert results[0][0] == results[1][0] > 0
    np.testing.assert_array_equal(results[0][1], results[1][1])


# -- BatchNorm ----------------------------------------------------------------------------------
def test_batch_norm_train_normalizes_with_batch_statistics(rng):
    x = 3 + 2 * rng.standard_normal((4, 3, 5, 2))
    layer, (y,) = run_layer({"type": "BatchNorm"}, [x])
    np.testing.assert_allclose(y, reference.batch_norm(x), rtol=1e-10, atol=1e-12)
    assert not layer.use_global_stats


def test_batch_norm_running_statistics_follow_caffe(rng):
    x1, x2 = rng.standard_normal((4, 3, 2, 2)), 5 + rng.standard_normal((4, 3, 2, 2))
    layer, bottom, top = make_layer({"type": "BatchNorm", "batch_norm_param": {"moving_average_fraction": 0.9}}, [x1])
    m = 4 * 2 * 2
    mean_sum, var_sum, s = np.zeros(3), np.zeros(3), 0.0
    for x in (x1, x2):
        bottom[0].data[...] = x
        layer.forward(bottom, top)
        s = 0.9 * s + 1
        mean_sum = 0.9 * mean_sum + x.mean(axis=(0, 2, 3))
        var_sum = 0.9 * var_sum + m / (m - 1) * x.var(axis=(0, 2, 3))
    np.testing.assert_allclose(layer.blobs[0].data, mean_sum, rtol=1e-12)
    np.testing.assert_allclose(layer.blobs[1].data, var_sum, rtol=1e-12)
    np.testing.assert_allclose(layer.blobs[2].data, [s], rtol=1e-12)
    # global statistics: the stored sums divided by the scale factor
    test_layer, tb, tt = make_layer({"type": "BatchNorm"}, [x1], phase="TEST")
    assert test_layer.use_global_stats
    for mine, theirs in zip(test_layer.blobs, layer.blobs):
        mine.data[...] = theirs.data
    test_layer.forward(tb, tt)
    expected = reference.batch_norm(x1, mean_sum / s, var_sum / s, eps=1e-5)
    np.testing.assert_allclose(tt[0].data, expected, rtol=1e-10)


def test_batch_norm_global_stats_with_zero_scale_factor(rng):
    x = rng.standard_normal((2, 3, 2))
    layer, (y,) = run_layer({"type": "BatchNorm", "batch_norm_param": {"use_global_stats": True, "eps": 1e-3}}, [x])
    np.testing.assert_allclose(y, x / np.sqrt(1e-3))


@pytest.mark.parametrize("shape", [(4, 3, 2, 3), (5, 4), (6,)])
@pytest.mark.parametrize("global_stats", [False, True])
def test_batch_norm_gradients(shape, global_stats, rng):
    x = rng.standard_normal(shape)
    spec = {"type": "BatchNorm", "batch_norm_param": {"use_global_stats": global_stats}}
    if not global_stats:
        assert_gradients(spec, [x])
        return
    layer, bottom, top = make_layer(spec, [x])
    layer.blobs[0].data[...] = 0.3  # give the global statistics some values
    layer.blobs[1].data[...] = 2.0
    layer.blobs[2].data[...] = 1.5
    report = check_layer(layer, bottom, tops=top)
    assert report.passed and report.blobs[0].checked > 0, str(report)


def test_batch_norm_blobs_are_not_learned(rng):
    layer, _, _ = make_layer({"type": "BatchNorm"}, [rng.standard_normal((2, 3))])
    assert [b.shape for b in layer.blobs] == [(3,), (3,), (1,)]
    assert layer.param_propagate_down == [False, False, False]
    assert type(layer).learnable is False
    spec = {
        "name": "bn",
        "layers": [
            {"name": "in", "type": "Input", "top": "x", "input_param": {"shape": {"dim": [2, 3]}}},
            {"name": "bn", "type": "BatchNorm", "bottom": "x", "top": "y"},
        ],
    }
    net = Net(spec)
    assert [(p.lr_mult, p.decay_mult) for p in net.learnable_params] == [(0, 0)] * 3
    spec["layers"][1]["param"] = [{"lr_mult": 1}]
    with pytest.raises(ConfigError, match="layer 'bn'.*lr_mult must be 0"):
        Net(spec)


def test_batch_norm_contract_and_in_place(rng):
    x = rng.standard_normal((4, 3, 2, 2))
    assert_contract({"type": "BatchNorm"}, [x])
    _, (expected,) = run_layer({"type": "BatchNorm"}, [x])
    layer, bottom, top = make_layer({"type": "BatchNorm", "bottom": ["x"], "top": ["x"]}, [x])
    top = bottom
    layer.forward(bottom, top)
    np.testing.assert_allclose(top[0].data, expected)
    dy = rng.standard_normal(x.shape)
    reference_layer, rb, rt = make_layer({"type": "BatchNorm"}, [x])
    reference_layer.forward(rb, rt)
    rt[0].diff[...] = dy
    reference_layer.backward(rt, [True], rb)
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff, rb[0].diff, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("param", [None, [{"lr_mult": 0}]])
def test_batch_norm_in_a_net_has_lr_mult_zero(param, rng):
    bn = {"name": "bn", "type": "BatchNorm", "bottom": "data", "top": "bn"}
    if param:
        bn["param"] = param
    spec = {
        "layers": [
            {"name": "data", "type": "Input", "top": "data", "input_param": {"shape": {"dim": [4, 3]}}},
            bn,
            {"name": "loss", "type": "EuclideanLoss", "bottom": ["bn", "data"], "top": "loss"},
        ]
    }
    net = Net(spec, seed=0, dtype=np.float64)
    stats = [p for p in net.learnable_params if p.name.startswith("bn")]
    assert [(p.lr_mult, p.decay_mult) for p in stats] == [(0.0, 0.0)] * 3 or [p.lr_mult for p in stats] == [0.0] * 3
    assert net.layer("bn").param_propagate_down == [False] * 3
    net.forward(data=rng.standard_normal((4, 3)))
    net.backward()
    assert all(not blob.diff.any() for blob in net.params["bn"])
    assert net.params["bn"][2].data[0] == 1.0
    Net(spec, seed=0, phase="TEST")  # the completed spec builds again


@pytest.mark.parametrize(
    "param,message",
    [
        ({"eps": -1}, "eps': expected a number >= 0, got -1"),
        ({"moving_average_fraction": 1.5}, r"moving_average_fraction': expected a number >= 0 and <= 1, got 1.5"),
        ({"moving_average_fraction": -0.1}, r"moving_average_fraction': expected a number >= 0 and <= 1, got -0.1"),
    ],
)
def test_batch_norm_rejects_impossible_eps_and_fraction(param, message):
    with pytest.raises(ConfigError, match=f"layer 'bn': field 'batch_norm_param.{message}"):
        make_layer({"name": "bn", "type": "BatchNorm", "batch_norm_param": param}, [np.zeros((2, 3))])


@pytest.mark.parametrize("param", [{"eps": 0}, {"moving_average_fraction": 0}, {"moving_average_fraction": 1}])
def test_batch_norm_accepts_the_edges(param):
    make_layer({"type": "BatchNorm", "batch_norm_param": param}, [np.ones((2, 3))])


# -- MVN ----------------------------------------------------------------------------------------
MVN_CASES = [
    {},
    {"across_channels": True},
    {"normalize_variance": False},
    {"normalize_variance": False, "across_channels": True},
    {"eps": 1e-3},
]


@pytest.mark.parametrize("param", MVN_CASES)
def test_mvn_matches_formula_and_gradients(param, rng):
    x = 2 + rng.standard_normal((2, 3, 4, 3))
    spec = {"type": "MVN", "mvn_param": param}
    _, (y,) = run_layer(spec, [x])
    expected = reference.mvn(
        x, param.get("normalize_variance", True), param.get("across_channels", False), param.get("eps", 1e-9)
    )
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-12)
    if param.get("eps", 1e-9) < 1e-6:  # Caffe's backward is exact only for a negligible eps
        assert_gradients(spec, [x])
        assert_contract(spec, [x])


def test_mvn_rejects_a_negative_eps():
    with pytest.raises(ConfigError, match="layer 'mvn': field 'mvn_param.eps': expected a number >= 0, got -0.5"):
        make_layer({"name": "mvn", "type": "MVN", "mvn_param": {"eps": -0.5}}, [np.zeros((2, 3, 2))])


@pytest.mark.parametrize("param", [{}, {"normalize_variance": False}])
def test_mvn_in_place_matches_out_of_place(param, rng):
    x = rng.standard_normal((2, 3, 4))
    dy = rng.standard_normal(x.shape)
    reference_layer, rb, rt = make_layer({"type": "MVN", "mvn_param": param}, [x])
    reference_layer.forward(rb, rt)
    rt[0].diff[...] = dy
    reference_layer.backward(rt, [True], rb)
    layer, bottom, _ = make_layer({"type": "MVN", "mvn_param": param, "bottom": ["x"], "top": ["x"]}, [x])
    layer.forward(bottom, bottom)
    np.testing.assert_allclose(bottom[0].data, rt[0].data, rtol=1e-12)
    bottom[0].diff[...] = dy
    layer.backward(bottom, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff, rb[0].diff, rtol=1e-10, atol=1e-12)
