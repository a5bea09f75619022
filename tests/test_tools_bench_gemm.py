"""tools/bench_gemm.py keeps working: it prints one line of GFLOP/s per shape."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import bench_gemm  # noqa: E402


def test_it_prints_a_rate_for_every_shape(monkeypatch, capsys):
    # shapes big enough that their rates print above 0 (a 1,024-FLOP product printed 0 GFLOP/s)
    monkeypatch.setattr(bench_gemm, "SHAPES", {"small": (64, 64, 64), "skinny": (8, 256, 128)})
    monkeypatch.setattr(bench_gemm.time, "sleep", lambda seconds: None)
    bench_gemm.main(["--threads", "1", "--rounds", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("float32, 1 threads")
    rates = [line for line in lines[1:] if "numpy" in line]
    assert [line.split()[0] for line in rates] == ["small", "skinny"]
    for line in rates:
        value = float(line.split("numpy")[1].split()[0])
        assert value > 0
