"""tools/bench_nets.py keeps working: its netlayers side runs tiny versions of its nets, its
GEMM FLOP count matches a hand count, and its table reports a run without PyTorch."""

import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import bench_nets  # noqa: E402


def run_tiny(spec):
    inputs = bench_nets.fixed_inputs(spec)
    net = bench_nets.build_netlayers(spec, inputs)
    return net, bench_nets.netlayers_step(net)


def test_a_tiny_resnet_depthwise_and_warm_up_net_run_one_step_with_finite_loss_and_gradients():
    for spec in (
        bench_nets.resnet(batch=2, channels=4, size=6, blocks=1),
        bench_nets.depthwise(batch=2, channels=4, size=5, blocks=1),
        bench_nets.warm_up_spec(),  # every layer type of the benchmark
    ):
        net, loss = run_tiny(spec)
        assert math.isfinite(loss) and loss > 0, spec["name"]
        first_conv = spec["layers"][1]["name"]
        gradient = net.params[first_conv][0].diff
        assert np.isfinite(gradient).all() and np.abs(gradient).sum() > 0, spec["name"]


def test_gemm_flops_count_forward_and_both_gradients_but_no_data_gradient_for_the_input():
    spec = bench_nets.depthwise(batch=2, channels=4, size=5, blocks=1)
    net, _ = run_tiny(spec)
    positions = 2 * 5 * 5
    dw = 2 * (4 * 1 * 3 * 3) * positions  # bottom is the input: forward + weight gradient only
    pw = 2 * (4 * 4) * positions  # forward + weight gradient + data gradient
    fc = 2 * (10 * 4) * 2
    assert bench_nets.gemm_flops(spec, net) == 2 * dw + 3 * pw + 3 * fc


def test_the_table_without_pytorch_shows_netlayers_and_its_floor_only():
    result = bench_nets.Result("mlp", flops=int(2e9), netlayers_loss=2.3, netlayers=0.05)
    table = bench_nets.markdown_table([result], rate=1e11, memory=False).splitlines()
    assert table[0].startswith("| net | netlayers ms | PyTorch ms |")
    assert table[2] == "| MLP 784-2048-2048-10, batch 256 | 50.0 | - | - | 20.0 | 2.5x | - |"
