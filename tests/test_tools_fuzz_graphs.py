"""tools/fuzz_graphs.py: random layer graphs checked against their plain builds (shared memory,
no in-place layers, a prototxt round trip, weight files, a resumed training, forward-only TEST
nets), and the faults it must find."""

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

TOOLS = Path(__file__).resolve().parents[1] / "tools"
sys.path.insert(0, str(TOOLS))

import fuzz_graphs  # noqa: E402

import netlayers  # noqa: E402
from netlayers.layers import neuron  # noqa: E402


def in_place(layer):
    return isinstance(layer.get("top"), str) and layer["top"] == layer.get("bottom")


def test_the_same_numbers_give_the_same_graph_and_every_graph_builds():
    assert fuzz_graphs.random_graph(3, 5) == fuzz_graphs.random_graph(3, 5)
    kinds, with_in_place = set(), 0
    for index in range(60):
        spec = fuzz_graphs.random_graph(3, index)
        net = netlayers.Net(spec, dtype=np.float32)
        assert net.blobs["loss"].count == 1
        kinds.update(layer.type for layer in net.layers)
        with_in_place += any(in_place(layer) for layer in spec["layers"])
    assert {"BatchNorm", "Scale", "Concat", "Slice", "Eltwise", "Dropout", "Deconvolution", "Split"} <= kinds
    assert {
        "Crop",
        "Reshape",
        "Tile",
        "LRN",
        "MVN",
        "Softmax",
        "EuclideanLoss",
        "PReLU",
        "Python",
        "LSTM",
        "RNN",
    } <= kinds
    assert with_in_place >= 30


def test_out_of_place_gives_every_in_place_layer_a_top_of_its_own():
    for index in range(40):
        spec = fuzz_graphs.random_graph(4, index)
        apart = fuzz_graphs.out_of_place(spec)
        assert not any(in_place(layer) for layer in apart["layers"])
        assert [layer["type"] for layer in apart["layers"]] == [layer["type"] for layer in spec["layers"]]
        assert netlayers.Net(apart).blobs["loss"].count == 1  # every name made once, every read made before


def test_random_graphs_agree_with_their_plain_builds():
    failed = {index: fuzz_graphs.check(fuzz_graphs.random_graph(5, index)) for index in range(50)}
    assert not any(failed.values()), {index: checks for index, checks in failed.items() if checks}


def graphs_with(seed, count, wanted):
    return [spec for spec in map(lambda k: fuzz_graphs.random_graph(seed, k), range(count)) if wanted(spec)]


def test_a_layer_that_hides_a_read_of_its_top_is_found(monkeypatch):
    """Sigmoid's backward reads its top's values (y (1 - y)). One that says it does not lets
    the shared-memory plan give that memory to a later blob: the shared builds then differ."""
    monkeypatch.setattr(neuron.Sigmoid, "keep_top_data", False)
    specs = graphs_with(40, 60, lambda spec: any(layer["type"] == "Sigmoid" for layer in spec["layers"]))[:10]
    found = ["float32: shared memory changed the results" in fuzz_graphs.check(spec) for spec in specs]
    assert len(specs) == 10 and sum(found) >= len(specs) // 2


def test_a_layer_wrongly_in_place_is_found(monkeypatch):
    """AbsVal's backward needs its bottom's signs, which |x| in place overwrites: an AbsVal that
    says it may run in place gives gradients the net without in-place layers does not."""
    monkeypatch.setattr(neuron.AbsVal, "in_place", True)
    specs = graphs_with(
        41, 400, lambda spec: any(layer["type"] == "AbsVal" and in_place(layer) for layer in spec["layers"])
    )
    found = [
        "float64: the net without in-place layers gives other results" in fuzz_graphs.check(spec) for spec in specs
    ]
    assert len(specs) >= 10 and sum(found) >= 3


def test_a_python_layer_that_claims_in_place_wrongly_is_found(monkeypatch):
    """The tool's Cube reads its bottom in its backward; claiming ``in_place`` makes the net run
    it in place where drawn so, and its gradients then differ from the net without in-place
    layers."""
    monkeypatch.setattr(fuzz_graphs.Cube, "in_place", True)

    def cube_in_place(spec):
        return any(
            layer["type"] == "Python" and layer["python_param"]["layer"] == "Cube" and in_place(layer)
            for layer in spec["layers"]
        )

    specs = graphs_with(42, 300, cube_in_place)[:12]
    found = [
        "float64: the net without in-place layers gives other results" in fuzz_graphs.check(spec) for spec in specs
    ]
    assert len(specs) == 12 and sum(found) >= 5


def test_a_field_lost_on_the_way_through_prototxt_is_found(monkeypatch):
    """An Eltwise SUM's ``coeff`` left out of the prototxt text: the net read back sums with
    coefficients 1, and its results differ."""
    writes = fuzz_graphs.text_format.net_to_text

    def losing_coeff(spec):
        return "\n".join(line for line in writes(spec).splitlines() if "coeff:" not in line)

    monkeypatch.setattr(fuzz_graphs.text_format, "net_to_text", losing_coeff)

    def with_coeff(spec):
        return any("coeff" in layer.get("eltwise_param", {}) for layer in spec["layers"])

    specs = graphs_with(43, 400, with_coeff)
    found = [
        "float32: the net written as Caffe prototxt and read back gives other results" in fuzz_graphs.check(spec)
        for spec in specs
    ]
    assert len(specs) >= 5 and sum(found) >= len(specs) // 2


def test_weights_a_load_leaves_out_are_found(monkeypatch):
    """A load that skips the Scale layers' params (read from the file, then dropped): the
    loaded net's step differs, from either file format."""
    import netlayers.io

    reads = netlayers.io.load_weights
    monkeypatch.setattr(
        netlayers.io, "load_weights", lambda path: {k: v for k, v in reads(path).items() if not k.startswith("scale")}
    )
    specs = graphs_with(44, 60, lambda spec: any(layer["type"] == "Scale" for layer in spec["layers"]))[:10]
    for spec in specs:
        failed = fuzz_graphs.check(spec)
        assert {
            "float32: weights saved as .npz and loaded give another step",
            "float32: weights saved as .caffemodel and loaded give another step",
        } <= set(failed)
    assert len(specs) == 10


def test_a_solver_state_that_loses_the_history_is_found(monkeypatch):
    """A restore that leaves the update rule's history at zero (momentum lost): the resumed
    training ends with other weights than the straight one, for every solver type but those
    whose drawn settings keep no history."""
    from netlayers.solvers import snapshots

    restore = snapshots.Snapshots.restore

    def forgetful(self, path):
        restore(self, path)
        for arrays in self.history:
            for array in arrays:
                array[...] = 0

    monkeypatch.setattr(snapshots.Snapshots, "restore", forgetful)
    lost = "float32: training resumed from a snapshot ends with other weights"
    found = [lost in fuzz_graphs.check(fuzz_graphs.random_graph(45, index)) for index in range(10)]
    assert sum(found) >= 6


def test_the_tool_reports_and_keeps_the_graphs_that_differ(tmp_path, monkeypatch, capsys):
    assert fuzz_graphs.main(["--graphs", "4", "--seed", "2"]) == 0
    assert "4 random graphs" in capsys.readouterr().out
    monkeypatch.setattr(fuzz_graphs, "check", lambda spec: ["float32: shared memory changed the results"])
    assert fuzz_graphs.main(["--graphs", "2", "--seed", "2", "--keep", str(tmp_path / "kept")]) == 1
    out = capsys.readouterr().out
    assert "graph_2_0" in out and "2 differ" in out
    kept = yaml.safe_load((tmp_path / "kept" / "graph_2_1.yaml").read_text())
    assert kept == fuzz_graphs.random_graph(2, 1)


def test_a_graph_whose_check_raises_is_reported_and_kept(tmp_path, monkeypatch, capsys):
    """An error while checking (netlayers refusing a state it wrote, say) counts as a graph that
    differs, reported by its first line, and the graph is kept; the run goes on."""

    def refusing(spec):
        raise RuntimeError("field 'history/2': refused\nmore")

    monkeypatch.setattr(fuzz_graphs, "check", refusing)
    assert fuzz_graphs.main(["--graphs", "2", "--seed", "3", "--keep", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "graph_3_1 (" in out and "RuntimeError: field 'history/2': refused" in out and "more" not in out
    assert "2 differ" in out and (tmp_path / "graph_3_0.yaml").exists()


@pytest.mark.parametrize("argv", [["--graphs", "0"], ["--keep", "{file}"]])
def test_bad_arguments_are_refused_in_one_line(argv, tmp_path, capsys):
    target = tmp_path / "a_file"
    target.write_text("")
    with pytest.raises(SystemExit) as stop:
        fuzz_graphs.main([arg.format(file=target) for arg in argv])
    assert stop.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()[-1]) > 0
