"""tools/fuzz_nets.py: random nets, their fast convolution paths checked against float64."""

import contextlib
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

TOOLS = Path(__file__).resolve().parents[1] / "tools"
sys.path.insert(0, str(TOOLS))

import fuzz_nets  # noqa: E402

import netlayers  # noqa: E402
from netlayers.layers.convolution import Convolution  # noqa: E402


def test_the_same_numbers_give_the_same_net_and_every_net_builds():
    assert fuzz_nets.random_net(3, 5) == fuzz_nets.random_net(3, 5)
    specs = [fuzz_nets.random_net(3, k) for k in range(40)]
    assert len({str(spec["layers"]) for spec in specs}) == 40
    kinds = set()
    for spec in specs:
        net = netlayers.Net(spec, dtype=np.float32)
        assert net.blobs["fc"].shape[1] == 10
        kinds.update(layer.type for layer in net.layers)
    assert {"Deconvolution", "BatchNorm", "Concat", "Eltwise", "Pooling", "LRN"} <= kinds


def test_the_reference_runs_every_convolution_as_im2col_and_gemm():
    """Under ``plain_paths`` no layer takes a Winograd, phase, strip, tap or sub-pixel path
    (depthwise layers keep their direct kernels); under ``every_path`` the same nets take them,
    under ``taps`` the tap form and under ``kn2row`` kn2row's products."""

    def paths(net):
        found = set()
        for layer in net.layers:
            for name in ("winograd", "strips", "grouped", "subpixel", "by_taps", "kn2row", "chunks"):
                value = getattr(layer, name, None)
                if value is not None:
                    found.add(type(value).__name__)
        return found

    plain, forced, tapped, products = set(), set(), set(), set()
    for index in range(30):
        spec = fuzz_nets.random_net(2, index)
        with fuzz_nets.plain_paths():
            plain |= paths(netlayers.Net(spec, dtype=np.float64))
        with fuzz_nets.every_path():
            forced |= paths(netlayers.Net(spec, dtype=np.float64))
        with fuzz_nets.tap_form():
            tapped |= paths(netlayers.Net(spec, dtype=np.float64))
        with fuzz_nets.kn2row_form():
            products |= paths(netlayers.Net(spec, dtype=np.float64))
    assert plain == {"ColumnChunks"}
    assert {"WinogradConvolution", "Winograd4Convolution", "StripConvolution", "PhaseChunks"} <= forced
    assert "TapConvolution" in tapped and "StripConvolution" not in tapped
    assert "Kn2rowConvolution" in products


@pytest.mark.parametrize("mode", list(fuzz_nets.MODES))
def test_every_mode_agrees_with_float64_on_a_few_nets(mode):
    """float32 within the benchmark's tolerance, and the mode's float64 run within
    EXACT_TOLERANCE of the default paths' (the fast paths computing the same sums)."""
    for index in range(3):
        worst = fuzz_nets.check(fuzz_nets.random_net(1, index), mode, "float64", fuzz_nets.bn.GRADIENT_TOLERANCE)
        assert worst < 1e-2


@contextlib.contextmanager
def slightly_wrong_weight_gradients():
    """A path whose weight gradients are off by one part in a million."""
    backward = Convolution.Backward_cpu

    def wrong(self, top, propagate_down, bottom):
        backward(self, top, propagate_down, bottom)
        self.blobs[0].diff *= 1 + 1e-6

    Convolution.Backward_cpu = wrong
    try:
        yield
    finally:
        Convolution.Backward_cpu = backward


def test_a_path_off_by_one_part_in_a_million_is_found_in_float64(monkeypatch):
    """float32's tolerance cannot see it; the float64 comparison of the paths does."""
    monkeypatch.setitem(fuzz_nets.MODES, "wrong", slightly_wrong_weight_gradients)
    with pytest.raises(
        fuzz_nets.bn.ComputationMismatch,
        match=r"gradient of layer 'stem' param 0 .* in float64 \(the paths of mode 'wrong'",
    ):
        fuzz_nets.check(fuzz_nets.random_net(1, 0), "wrong", "float64", fuzz_nets.bn.GRADIENT_TOLERANCE)


def test_the_command_reports_a_failing_net_and_writes_it_as_a_net_file(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(fuzz_nets.MODES, "wrong", slightly_wrong_weight_gradients)
    status = fuzz_nets.main(
        ["--nets", "1", "--seed", "1", "--modes", "wrong", "--reference", "float64", "--keep", str(tmp_path)]
    )
    out = capsys.readouterr().out
    assert status == 1
    assert "fuzz_nets: wrong, against float64: net 'fuzz_1_0'" in out
    assert "1 of 1 differ, 0 the reference cannot run" in out
    kept = tmp_path / "fuzz_1_0.yaml"
    assert yaml.safe_load(kept.read_text()) == fuzz_nets.random_net(1, 0)
    assert netlayers.Net(str(kept)).blobs["fc"].shape[1] == 10


def test_an_unknown_mode_or_reference_is_a_usage_error(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        fuzz_nets.main(["--modes", "default,fastest"])
    assert exit_info.value.code == 2
    assert (
        "unknown mode(s): fastest; known: default, every_path, small_budgets, taps, kn2row" in capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        fuzz_nets.main(["--reference", "caffe"])
    assert "--reference takes torch, float64 or both, got 'caffe'" in capsys.readouterr().err
    for arguments, message in (
        (["--nets", "0"], "--nets and --threads take 1 or more, got 0 and 2"),
        (["--keep", str(tmp_path / "a file")], "a file is there; give a folder (made if missing)"),
    ):
        (tmp_path / "a file").write_text("")
        with pytest.raises(SystemExit) as exit_info:
            fuzz_nets.main(arguments)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
