"""net_dot and write_graph: Caffe-style graphs, in-place layers, hidden splits, missing Graphviz."""

import shutil

import pytest

from netlayers.errors import NetlayersError
from netlayers.inspect import GraphvizMissing, build_net, net_dot, write_graph
from netlayers.inspect.graph import key_params
from netlayers.netspec import load_net_spec

NET = {
    "name": "g",
    "layers": [
        {
            "name": "data",
            "type": "Input",
            "top": ["x", "label"],
            "input_param": {"shape": [{"dim": [2, 5]}, {"dim": [2]}]},
        },
        {"name": "ip1", "type": "InnerProduct", "bottom": "x", "top": "h", "inner_product_param": {"num_output": 7}},
        {"name": "relu1", "type": "ReLU", "bottom": "h", "top": "h", "relu_param": {"negative_slope": 0.1}},
        {
            "name": "ip2",
            "type": "InnerProduct",
            "bottom": "h",
            "top": "scores",
            "inner_product_param": {"num_output": 3},
        },
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["scores", "label"], "top": "loss"},
        {
            "name": "acc",
            "type": "Accuracy",
            "bottom": ["scores", "label"],
            "top": "accuracy",
            "include": {"phase": "TEST"},
        },
    ],
}


def test_dot_has_layers_blobs_shapes_and_in_place_loop():
    spec = load_net_spec(NET)
    net = build_net(spec, "TRAIN", seed=0)
    text = net_dot(spec, "TRAIN", shapes={n: b.shape for n, b in net.blobs.items()})
    assert '"blob:h" [label="h\\n(2, 7)", shape=octagon' in text
    assert '"blob:loss" [label="loss\\nscalar"' in text
    assert 'label="ip1\\n(InnerProduct)\\nnum_output: 7"' in text
    assert 'label="relu1\\n(ReLU)\\nnegative_slope: 0.1"' in text
    # in place: an edge from the blob to the layer and one back, as Caffe draws it
    assert '"blob:h" -> "layer:2:relu1";' in text and '"layer:2:relu1" -> "blob:h";' in text
    assert "#90EE90" in text
    # scores feeds two layers in TEST only; no Split node in either phase
    assert "Split" not in text and "acc" not in text
    test_text = net_dot(spec, "TEST")
    assert '"blob:scores" -> "layer:4:loss";' in test_text
    assert '"blob:scores" -> "layer:5:acc";' in test_text
    assert "Split" not in test_text


def test_key_params_shows_non_defaults_and_always_shown():
    spec = load_net_spec(NET)
    assert key_params(spec.layers[1]) == ["num_output: 7"]
    assert key_params(spec.layers[4]) == []


def test_write_dot_and_unknown_suffix(tmp_path):
    assert write_graph("digraph g {}\n", tmp_path / "g.dot").read_text() == "digraph g {}\n"
    with pytest.raises(NetlayersError, match="use .svg, .png, .pdf or .dot"):
        write_graph("digraph g {}\n", tmp_path / "g.jpg")


def test_missing_graphviz_writes_dot_and_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    with pytest.raises(GraphvizMissing, match="apt-get install graphviz") as info:
        write_graph("digraph g { a -> b }\n", tmp_path / "g.png")
    assert info.value.dot_path == tmp_path / "g.dot"
    assert (tmp_path / "g.dot").read_text() == "digraph g { a -> b }\n"
    assert not (tmp_path / "g.png").exists()


def test_renders_svg_with_graphviz(tmp_path):
    spec = load_net_spec(NET)
    path = write_graph(net_dot(spec, "TRAIN"), tmp_path / "net.svg")
    svg = path.read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "relu1" in svg
