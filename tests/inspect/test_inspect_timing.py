"""time_net: per-layer medians in net order, '-' for layers without backward."""

import numpy as np

from netlayers.inspect import build_net, random_inputs, time_net

MLP = {
    "name": "mlp",
    "layers": [
        {
            "name": "data",
            "type": "Input",
            "top": ["x", "label"],
            "input_param": {"shape": [{"dim": [8, 20]}, {"dim": [8]}]},
        },
        {
            "name": "ip1",
            "type": "InnerProduct",
            "bottom": "x",
            "top": "h",
            "inner_product_param": {"num_output": 16, "weight_filler": {"type": "xavier"}},
        },
        {"name": "relu", "type": "ReLU", "bottom": "h", "top": "h"},
        {
            "name": "ip2",
            "type": "InnerProduct",
            "bottom": "h",
            "top": "scores",
            "inner_product_param": {"num_output": 4},
        },
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["scores", "label"], "top": "loss"},
    ],
}


def test_time_net_reports_every_layer_in_order():
    net = build_net(MLP, seed=0)
    report = time_net(net, iterations=3, warmup=1, values=random_inputs(net, np.random.default_rng(0)))
    assert [r.name for r in report.rows] == ["data", "ip1", "relu", "ip2", "loss"]
    assert report["data"].backward is None
    assert all(report[name].backward is not None for name in ["ip1", "relu", "ip2", "loss"])
    assert all(r.forward >= 0 for r in report.rows)
    assert abs(sum(r.share for r in report.rows) - 1) < 1e-9
    assert report.forward_backward > 0
    table = report.table()
    lines = table.splitlines()
    assert lines[1].split() == ["layer", "type", "forward", "ms", "backward", "ms", "share"]
    data_line = next(line for line in lines if line.startswith("data "))
    assert data_line.split()[3] == "-"
    assert "forward-backward pass:" in table and "median of 3 iterations after 1 warm-up" in table


def test_time_net_holds_one_pass_for_the_whole_measurement(monkeypatch):
    """A layer run alone enters the workspace lock and the BLAS switch itself (BLAS to one
    thread and back, the caller pinned and unpinned); time_net holds them once, as a net's pass
    does, so that the rows time the layers as a pass runs them. Each outermost exit ends a pass."""
    from netlayers import parallel

    ended = []
    monkeypatch.setattr(parallel.pinning, "pass_ended", lambda: ended.append(1))
    net = build_net(MLP, seed=0)
    values = random_inputs(net, np.random.default_rng(0))
    time_net(net, iterations=3, warmup=1, values=values)
    assert len(ended) == 1


BATCHNORM_CHAIN = {
    "name": "chain",
    "layers": [
        {
            "name": "data",
            "type": "Input",
            "top": ["x", "label"],
            "input_param": {"shape": [{"dim": [4, 3, 6, 6]}, {"dim": [4]}]},
        },
        {
            "name": "conv",
            "type": "Convolution",
            "bottom": "x",
            "top": "c",
            "convolution_param": {"num_output": 4, "kernel_size": 3, "pad": 1, "weight_filler": {"type": "xavier"}},
        },
        {"name": "bn", "type": "BatchNorm", "bottom": "c", "top": "n"},
        {"name": "scale", "type": "Scale", "bottom": "n", "top": "n", "scale_param": {"bias_term": True}},
        {"name": "relu", "type": "ReLU", "bottom": "n", "top": "n"},
        {**MLP["layers"][3], "bottom": "n"},  # the MLP's classifier and loss
        MLP["layers"][4],
    ],
}


def test_time_net_times_the_whole_passes_as_the_net_runs_them():
    """The rows time BatchNorm, Scale and ReLU one by one; the whole passes are the net's own,
    which runs the three as one fused chain (warm-up and timed passes alike)."""
    net = build_net(BATCHNORM_CHAIN, seed=0)
    (chain,) = net._chains.values()
    calls = []
    fused_forward = chain.forward
    chain.forward = lambda bottom, top: calls.append(1) or fused_forward(bottom, top)
    report = time_net(net, iterations=3, warmup=2, values=random_inputs(net, np.random.default_rng(0)))
    assert len(calls) == 2 + 3
    assert [r.name for r in report.rows] == ["data", "conv", "bn", "scale", "relu", "ip2", "loss"]
    assert report.forward_backward > 0


def test_time_net_of_a_net_without_a_loss_times_its_forward_alone():
    """A deploy net (no loss): no layer runs a backward, in the rows or in the whole pass."""
    net = build_net({**MLP, "layers": MLP["layers"][:-1]}, seed=0)
    report = time_net(net, iterations=2, warmup=1, values=random_inputs(net, np.random.default_rng(0)))
    assert all(row.backward is None for row in report.rows)
    assert report.forward_pass > 0  # and Net.backward, which would refuse a net without a loss, never ran
