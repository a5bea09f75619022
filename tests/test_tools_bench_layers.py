"""tools/bench_layers.py keeps working: its random geometries are valid layers whose output
sizes and FLOP counts match netlayers' and a hand count, and a sweep reports without PyTorch."""

import random
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import bench_layers  # noqa: E402
from bench_layers import Geometry  # noqa: E402


@pytest.mark.parametrize("kind", bench_layers.KINDS)
def test_random_geometries_are_layers_of_the_size_they_say_within_the_flop_bounds(kind):
    rng = random.Random(7)
    for _ in range(40):
        g = bench_layers.random_geometry(rng, kind, 1e6, 2e7)
        assert 1e6 <= g.flops() <= 2e7
        assert g.channels % g.group == 0 and g.outputs % g.group == 0
        assert min(g.out_size()) >= 1
    small = bench_layers.random_geometry(random.Random(3), kind, 1e5, 2e6)
    net, index = bench_layers.layer_net(small)
    assert net.blobs["y"].shape == (small.batch, small.outputs) + small.out_size()
    assert bench_layers.path_of(net.layers[index])


def test_flops_count_the_forward_by_hand():
    conv = Geometry("Convolution", 2, 4, 8, 6, (3, 3), 1, (1, 1), 1, 1)
    assert conv.out_size() == (8, 8) and conv.flops() == 2 * 2 * 64 * 4 * 6 * 9
    deconv = Geometry("Deconvolution", 2, 4, 8, 6, (3, 3), 2, (1, 1), 1, 2)
    assert deconv.out_size() == (15, 15) and deconv.flops() == 2 * 2 * 64 * 4 * 3 * 9
    grouped = Geometry("Convolution", 1, 8, 9, 4, (1, 7), 2, (0, 3), 1, 2)
    assert grouped.out_size() == (5, 5) and grouped.flops() == 2 * 25 * 4 * 4 * 7


def test_a_sweep_without_pytorch_lists_each_geometry_with_its_path(capsys):
    bench_layers.main(["--no-torch", "--count", "2", "--rounds", "1", "--min-mflop", "0.1", "--max-mflop", "2"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("2 random Convolution geometries, seed 0") and "no PyTorch" in out[0]
    rows = out[2:]
    assert len(rows) == 2
    for row in rows:
        assert row.split()[0] == "-" and " -> " in row
        assert any(name in row for name in ("Chunks", "Convolution", "Strip"))


def test_a_forward_only_sweep_times_the_forward_of_a_net_made_forward_only(capsys):
    bench_layers.main(
        ["--no-torch", "--forward-only", "--count", "1", "--rounds", "1", "--min-mflop", "0.1", "--max-mflop", "2"]
    )
    out = capsys.readouterr().out.splitlines()
    assert "forward only" in out[0] and len(out[2:]) == 1
    net, index = bench_layers.layer_net(Geometry("Convolution", 2, 4, 8, 6, (3, 3), 1, (1, 1), 1, 1))
    expected = net.blobs["y"].data.copy()
    step = bench_layers.netlayers_step(net, index, forward_only=True)
    net.blobs["y"].data[...] = 0
    step()
    assert net.forward_only and np.array_equal(net.blobs["y"].data, expected)


def test_a_geometry_given_in_the_tables_form_is_timed_alone(capsys):
    text = "2x8x9^2 -> 4 3x3 /2 pad 1,1 dil 1 group 2"
    g = bench_layers.parse_geometry("Convolution", text)
    assert g == Geometry("Convolution", 2, 8, 9, 4, (3, 3), 2, (1, 1), 1, 2) and str(g) == text
    bench_layers.main(
        ["--no-torch", "--rounds", "1", "--geometry", text, "--geometry", "1x3x8^2 -> 2 1x7 /1 pad 0,3 dil 1 group 1"]
    )
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("2 given Convolution geometries") and len(out[2:]) == 2
    assert any(row.endswith(text) for row in out[2:])


@pytest.mark.parametrize(
    "text, message",
    [
        ("2x8x9 -> 4 3x3", "expected the table's form"),
        ("2x8x4^2 -> 4 7x7 /1 pad 0,0 dil 1 group 1", "its output (-2, -2) has no pixel"),
        ("2x8x9^2 -> 6 3x3 /1 pad 0,0 dil 1 group 4", "a group that divides the channels and outputs"),
        ("2x8x9^2 -> 4 3x3 /0 pad 0,0 dil 1 group 1", "sizes of at least 1"),
    ],
)
def test_a_geometry_that_is_no_layer_is_a_one_line_usage_error(capsys, text, message):
    with pytest.raises(SystemExit) as exit_info:
        bench_layers.main(["--no-torch", "--geometry", text])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"geometry {text!r}: " in err and message in err
