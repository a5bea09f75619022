"""tools/bench_nets.py keeps working: its netlayers side runs tiny versions of its nets, its
GEMM FLOP count matches a hand count, and its table reports a run without PyTorch."""

import contextlib
import math
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import bench_nets  # noqa: E402


def run_tiny(spec):
    inputs = bench_nets.fixed_inputs(spec)
    net = bench_nets.build_netlayers(spec, inputs)
    return net, bench_nets.netlayers_step(net)


def check_against_pytorch_where_installed(spec, net, loss):
    """The PyTorch twin of ``spec`` gives ``net``'s loss and gradients. CI installs the test extra
    only (no torch): the translation is checked where torch is."""
    if bench_nets.import_torch() is not None:
        inputs = bench_nets.fixed_inputs(spec)
        step, module = bench_nets.build_torch(spec, inputs, bench_nets.netlayers_params_as_torch(net))
        bench_nets.check_same_computation(spec["name"], net, module, loss, step())


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


def test_the_nets_beyond_the_issues_table_run_small_with_finite_loss_and_gradients():
    assert set(bench_nets.ISSUE_NETS) < set(bench_nets.NETS) and "lenet" in bench_nets.ISSUE_NETS
    for spec in (
        bench_nets.nin(batch=2),
        bench_nets.bottleneck(batch=1, size=32),
        bench_nets.inception(batch=1, size=8, channels=8),
        bench_nets.squashing_mlp("TanH", batch=3),
        bench_nets.strided_convnet("PReLU", batch=2),
        bench_nets.dilated(batch=1, size=20, width=4),
        bench_nets.conv1d(batch=2, length=16, channels=4, width=4),
        bench_nets.one_big_image(size=24),
        bench_nets.mobilenet_tail(batch=2, size=8, width=4),
        bench_nets.resnet50_last_stage(batch=2, size=6, width=4),
        bench_nets.vgg16_conv5(batch=2, size=6, width=4),
        bench_nets.cifar_resnet(batch=2, blocks=1, widths=(4, 6, 8), size=8),
        bench_nets.densenet(batch=2, size=6, channels=4, growth=3, count=2),
        bench_nets.squeezenet(batch=2, size=9, channels=4),
        bench_nets.dcgan_generator(batch=2, widths=(6, 5, 4, 3)),
        bench_nets.dcgan_discriminator(batch=2, size=16, widths=(4, 5)),
        bench_nets.resnet18(batch=1, size=32, widths=(4, 5, 6, 7)),
        bench_nets.mobilenet(batch=1, size=32, width=2),
        bench_nets.googlenet(batch=1, size=48, scale=16),
        bench_nets.cifar10_full(batch=2),
        bench_nets.resnet50(batch=2, size=64, widths=(2, 3, 4, 5), blocks=(1, 2, 1, 1)),
        bench_nets.inception_v3_17(batch=2, size=9, channels=6, reduced=3, branch=4),
    ):
        net, loss = run_tiny(spec)
        assert math.isfinite(loss) and loss > 0, spec["name"]
        first = next(layer["name"] for layer in spec["layers"] if layer["type"] in ("Convolution", "InnerProduct"))
        gradient = net.params[first][0].diff
        assert np.isfinite(gradient).all() and np.abs(gradient).sum() > 0, spec["name"]


def test_the_lstm_net_runs_small_counts_its_products_and_matches_pytorch_where_installed():
    spec = bench_nets.lstm(steps=3, streams=2, features=4, hidden=5)
    net, loss = run_tiny(spec)
    assert math.isfinite(loss) and loss > 0
    for param in net.params["lstm"]:
        assert np.isfinite(param.diff).all() and np.abs(param.diff).sum() > 0
    rows = 3 * 2  # steps x streams
    input_weight, recurrent_weight = 20 * 4, 20 * 5  # (4 H, X), (4 H, H)
    forward = 2 * (input_weight + recurrent_weight) * rows
    lstm = forward + forward + 2 * recurrent_weight * rows  # no data gradient for the net's input
    fc = 3 * 2 * (10 * 5) * rows  # forward + weight gradient + data gradient, a row a step and stream
    assert bench_nets.gemm_flops(spec, net) == lstm + fc
    check_against_pytorch_where_installed(spec, net, loss)


def test_cifar10_full_lrn_within_channels_matches_pytorch_where_installed():
    spec = bench_nets.cifar10_full(batch=2)
    assert [layer["lrn_param"]["norm_region"] for layer in spec["layers"] if layer["type"] == "LRN"] == [
        "WITHIN_CHANNEL"
    ] * 2
    net, loss = run_tiny(spec)
    assert math.isfinite(loss) and loss > 0
    check_against_pytorch_where_installed(spec, net, loss)


def test_fcn32s_crops_to_the_image_takes_a_class_map_and_matches_pytorch_on_winograd_where_installed():
    spec = bench_nets.fcn32s(batch=1, size=20, widths=(8, 8, 8, 8, 8), fc=8, classes=10)
    with bench_nets.every_conv_path():  # the 3x3 layers as Winograd, over the zero frame of pad 100
        net, loss = run_tiny(spec)
        assert net.blobs["cropped"].shape == (1, 10, 20, 20) and net.blobs["label"].shape == (1, 1, 20, 20)
        assert net.layer("conv1_2").winograd is not None
        assert math.isfinite(loss) and loss > 0
        check_against_pytorch_where_installed(spec, net, loss)


def test_srcnn_regresses_an_image_through_a_one_channel_strip_layer_and_matches_pytorch_where_installed():
    spec = bench_nets.srcnn(batch=2, size=19, widths=(8, 32))
    net, loss = run_tiny(spec)
    assert net.blobs["conv3"].shape == net.blobs["label"].shape == (2, 1, 3, 3)
    assert net.layer("conv3").strips is not None  # 32 -> 1: few outputs
    assert math.isfinite(loss) and loss > 0
    check_against_pytorch_where_installed(spec, net, loss)


def test_nets_all_picks_every_net_and_the_default_is_the_issues_table():
    assert bench_nets.parse_args([]).nets == bench_nets.ISSUE_NETS
    assert bench_nets.parse_args(["--nets", "all"]).nets == list(bench_nets.NETS)
    assert bench_nets.parse_args(["--nets", "nin, lenet"]).nets == ["nin", "lenet"]


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


# -- --busy: the competing process and the quiet/busy rounds ---------------------------------
def process_state(pid):
    """The one-letter state of process ``pid`` (R running, T stopped, Z zombie), None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def cpu_ticks(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def wait_until(condition, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_the_busy_process_burns_cpu_in_the_block_and_is_killed_and_reaped_when_the_block_raises():
    with pytest.raises(ValueError):
        with bench_nets.busy_process() as child:
            assert process_state(child.pid) == "R"
            assert wait_until(lambda: cpu_ticks(child.pid) >= 5)  # 50 ms of CPU: it burns
            raise ValueError("the timed function failed")
    assert child.returncode == -signal.SIGKILL
    assert process_state(child.pid) is None  # reaped: no zombie either


@pytest.fixture
def recorded_children(monkeypatch):
    """The Popen of every busy_process the code under test starts."""
    children = []
    real = bench_nets.busy_process

    @contextlib.contextmanager
    def recording():
        with real() as child:
            children.append(child)
            yield child

    monkeypatch.setattr(bench_nets, "busy_process", recording)
    return children


def test_each_round_runs_quiet_with_the_child_stopped_then_busy_with_it_running(recorded_children):
    calls = []

    def step(name):
        return lambda: calls.append((name, process_state(recorded_children[0].pid)))

    quiet, busy = bench_nets.quiet_and_busy_rounds([step("a"), step("b")], rounds=2, iters=1, pause=0)
    assert calls == [("a", "T"), ("b", "T"), ("a", "R"), ("b", "R"), ("b", "T"), ("a", "T"), ("b", "R"), ("a", "R")]
    assert [len(t) for t in quiet + busy] == [2, 2, 2, 2]
    assert len(recorded_children) == 1 and process_state(recorded_children[0].pid) is None


@pytest.mark.parametrize("failing_half", ["quiet", "busy"])
@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_a_step_that_raises_in_either_half_leaves_no_busy_process_behind(recorded_children, failing_half, error):
    def step():
        if process_state(recorded_children[0].pid) == ("T" if failing_half == "quiet" else "R"):
            raise error("stop")

    with pytest.raises(error):
        bench_nets.quiet_and_busy_rounds([step], rounds=2, iters=1, pause=0)
    child = recorded_children[0]
    assert child.returncode == -signal.SIGKILL and process_state(child.pid) is None


@pytest.mark.parametrize("held", [False, True])
def test_the_busy_process_dies_with_a_benchmark_that_is_killed_even_while_it_is_held_stopped(held, tmp_path):
    code = (
        f"import os, signal, sys; sys.path.insert(0, {str(Path(bench_nets.__file__).parent)!r}); import bench_nets\n"
        "with bench_nets.busy_process() as child:\n"
        f"    if {held}: bench_nets.signal_and_wait(child, signal.SIGSTOP, os.WUNTRACED)\n"
        "    print(child.pid, flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    # stderr to a file: a surviving child would hold a pipe open and the run would never end
    with open(tmp_path / "stderr", "w") as stderr:
        benchmark = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=stderr, text=True)
    assert benchmark.returncode == -signal.SIGKILL, (tmp_path / "stderr").read_text()
    orphan = int(benchmark.stdout.split()[0])
    assert wait_until(lambda: process_state(orphan) in (None, "Z"))


def test_share_kept_is_the_median_of_the_per_round_quiet_over_busy_ratios():
    assert bench_nets.share_kept([1.0, 2.0, 1.0], [2.0, 2.5, 4.0]) == 0.5
    assert bench_nets.share_kept([1.0], []) is None


def test_the_table_with_memory_and_busy_shows_both_memories_their_ratio_and_each_sides_share_kept():
    result = bench_nets.Result("mlp", flops=int(2e9), netlayers_loss=2.3, netlayers=0.05, torch=0.04, ratio=1.25)
    result.memory = {"netlayers": 120.4, "torch": 100.2}
    result.netlayers_kept, result.torch_kept = 0.6, 0.456
    table = bench_nets.markdown_table([result], rate=1e11, memory=True, busy=True).splitlines()
    assert table[0].endswith(
        "| netlayers MiB | PyTorch MiB | MiB ratio | netlayers speed kept, busy | PyTorch speed kept, busy |"
    )
    assert table[1] == "| " + " | ".join(["---"] * 12) + " |"
    assert table[2].endswith("| 1.25x | 20.0 | 2.5x | 2.0x | 120 | 100 | 1.20x | 60% | 46% |")


def test_the_peak_rss_growth_counts_worker_scratch_buffers():
    """In a fresh process: in this one, pages freed by earlier tests may be reused unseen."""
    code = (
        "import sys; sys.path.insert(0, 'tools'); import numpy as np, bench_nets; "
        "from netlayers import parallel; before = bench_nets.reset_peak_rss(); "
        "parallel.scratch(1, 'bench_nets test', 8 << 20, np.float32).fill(1.0); "  # 32 MiB
        "print(parallel.scratch_bytes() >> 20, bench_nets.peak_rss_mib() - before)"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120)
    assert done.returncode == 0, done.stderr
    scratch_mib, growth_mib = map(float, done.stdout.split())
    assert scratch_mib >= 32 and growth_mib >= 30


class _Grad:
    def __init__(self, array):
        self.grad = SimpleNamespace(numpy=lambda: array)


def _net_and_module(ours, theirs):
    net = SimpleNamespace(params={name: [SimpleNamespace(diff=grad)] for name, grad in ours.items()})
    module = SimpleNamespace(param_of={(name, 0): _Grad(grad) for name, grad in theirs.items()})
    return net, module


def test_a_gradient_that_is_rounding_noise_is_measured_against_the_largest_gradient():
    big = np.ones(4)
    noise = np.full(4, 1e-7)
    net, module = _net_and_module({"conv": big, "scale": 1.2 * noise}, {"conv": big, "scale": noise})
    assert bench_nets.check_same_computation("n", net, module, 1.0, 1.0) <= 1e-3
    net, module = _net_and_module({"conv": 1.2 * big, "scale": noise}, {"conv": big, "scale": noise})
    with pytest.raises(bench_nets.ComputationMismatch, match="layer 'conv' param 0 differs by 2.00e-01"):
        bench_nets.check_same_computation("n", net, module, 1.0, 1.0)
    net, module = _net_and_module({"conv": big, "scale": 1.2 * big}, {"conv": big, "scale": big})
    with pytest.raises(bench_nets.ComputationMismatch, match="layer 'scale'"):
        bench_nets.check_same_computation("n", net, module, 1.0, 1.0)
