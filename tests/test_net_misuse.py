"""API calls in the wrong order, empty and oversized blobs: one-line netlayers errors, never a
crash or a kernel reading what it did not write (issue 9, items 2, 4, 9 and 11)."""

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import netlayers
from netlayers import ConfigError, DataError, Net, NetlayersError
from netlayers.gradcheck import build_layer
from netlayers.layers.inner_product import InnerProduct
from netlayers.memory import memory_limit

POOL_NET = {
    "name": "pool",
    "layers": [
        {
            "name": "data",
            "type": "Input",
            "top": ["x", "label"],
            "input_param": {"shape": [{"dim": [2, 1, 6, 6]}, {"dim": [2]}]},
        },
        {
            "name": "conv",
            "type": "Convolution",
            "bottom": "x",
            "top": "c",
            "convolution_param": {"num_output": 2, "kernel_size": 3, "weight_filler": {"type": "gaussian"}},
        },
        {
            "name": "pool",
            "type": "Pooling",
            "bottom": "c",
            "top": "p",
            "pooling_param": {"pool": "MAX", "kernel_size": 2, "stride": 2},
        },
        {"name": "ip", "type": "InnerProduct", "bottom": "p", "top": "s", "inner_product_param": {"num_output": 3}},
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["s", "label"], "top": "loss"},
    ],
}


def test_backward_before_forward_is_an_error_not_a_crash():
    """Run in a child process: before the fix the MAX pooling kernel scattered through an
    uninitialised argmax and could take the interpreter down."""
    code = textwrap.dedent(f"""
        import netlayers
        net = netlayers.Net({POOL_NET!r})
        try:
            net.backward()
        except netlayers.NetlayersError as err:
            print("ERROR", err)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ERROR layer 'loss': backward called before forward")


def test_backward_after_a_forward_that_stopped_early_is_an_error():
    net = Net(POOL_NET)
    net.forward(x=np.ones((2, 1, 6, 6)), label=np.zeros(2))
    net.backward()  # a whole pass: fine
    net.forward(end="conv", x=np.ones((2, 1, 6, 6)))
    with pytest.raises(NetlayersError, match="backward called before forward") as info:
        net.backward()
    assert info.value.layer == "loss"


def test_backward_after_reshape_needs_a_new_forward():
    net = Net(POOL_NET)
    net.forward(x=np.ones((2, 1, 6, 6)), label=np.zeros(2))
    net.reshape()
    with pytest.raises(NetlayersError, match="before forward"):
        net.backward()


def test_a_single_layer_backward_before_forward_is_an_error():
    net = Net(POOL_NET)
    index = net.layer_names.index("pool")
    with pytest.raises(NetlayersError, match="layer 'pool': backward called before forward"):
        net.layers[index].backward(net.top_vecs[index], [True], net.bottom_vecs[index])


@pytest.mark.parametrize(
    "start, end, words",
    [
        ("nope", None, "start: no layer named 'nope'"),
        (None, "nope", "end: no layer named 'nope'"),
        ("ip", "conv", "'conv' comes before 'ip'"),
    ],
)
def test_forward_with_unknown_or_reversed_layer_names(start, end, words):
    with pytest.raises(DataError, match=words):
        Net(POOL_NET).forward(start=start, end=end)


def test_a_zero_size_axis_is_refused_at_setup_and_at_forward():
    for layer in (
        {"type": "Softmax"},
        {"type": "LRN"},
        {"type": "BatchNorm"},
        {"type": "Deconvolution", "convolution_param": {"num_output": 2, "kernel_size": 2}},
    ):
        instance, bottom, top = build_layer({"name": "l", "bottom": "x", "top": "y", **layer}, [(0, 3, 2, 2)])
        with pytest.raises(
            ConfigError,
            match=r"layer 'l': bottom 'bottom\[0\]' has shape \(0, 3, 2, 2\): every "
            "axis must be at least 1",
        ) as info:
            instance.setup(bottom, top)
        assert "\n" not in str(info.value)
    spec = {
        "name": "z",
        "layers": [
            {"name": "data", "type": "Input", "top": "x", "input_param": {"shape": {"dim": [2, 3]}}},
            {"name": "soft", "type": "Softmax", "bottom": "x", "top": "y"},
        ],
    }
    with pytest.raises(DataError, match=r"shape \(0, 3\): every axis must be at least 1"):
        Net(spec).forward(x=np.zeros((0, 3)))


@pytest.fixture
def small_machine(monkeypatch):
    monkeypatch.setenv("NETLAYERS_MEMORY_LIMIT", str(2**30))
    memory_limit.cache_clear()
    yield
    monkeypatch.delenv("NETLAYERS_MEMORY_LIMIT")
    memory_limit.cache_clear()


@pytest.mark.parametrize(
    "layer, words",
    [
        (
            {
                "name": "ip",
                "type": "InnerProduct",
                "bottom": "x",
                "top": "y",
                "inner_product_param": {"num_output": 10**12},
            },
            r"layer 'ip': blob 'ip\[0\]' .* would need 7,450.6 GiB",
        ),
        (
            {"name": "dummy", "type": "DummyData", "top": "y", "dummy_data_param": {"shape": {"dim": [2**40]}}},
            r"layer 'dummy': blob 'y' .* would need 8,192.0 GiB",
        ),
    ],
)
def test_sizes_beyond_the_machine_are_refused_before_allocating(small_machine, layer, words):
    spec = {
        "name": "big",
        "layers": [{"name": "data", "type": "Input", "top": "x", "input_param": {"shape": {"dim": [2, 1]}}}, layer],
    }
    with pytest.raises(NetlayersError, match=words) as info:
        Net(spec)
    assert "more than this machine's memory (1 GiB)" in str(info.value)


def test_a_bug_in_netlayers_is_not_blamed_on_the_config(monkeypatch):
    """Only netlayers errors and the user's own code become one-line errors; a ValueError from
    inside a built-in layer is a bug and keeps its type."""

    def broken(self, bottom, top):
        raise ValueError("an internal mistake")

    monkeypatch.setattr(InnerProduct, "Reshape", broken)
    with pytest.raises(ValueError, match="an internal mistake") as info:
        Net(POOL_NET)
    assert not isinstance(info.value, NetlayersError)


def test_a_registered_users_layer_failing_names_the_users_line():
    @netlayers.register_layer("TestOnlyFailing")
    class Failing(netlayers.Layer):
        """y = x, until forward fails."""

        num_bottoms = num_tops = (1, 1)

        def Reshape(self, bottom, top):
            top[0].reshape_like(bottom[0])

        def Forward_cpu(self, bottom, top):
            return {}["missing"]

    Failing.__module__ = "users_module"
    spec = {
        "name": "u",
        "layers": [
            {"name": "data", "type": "Input", "top": "x", "input_param": {"shape": {"dim": [2, 3]}}},
            {"name": "mine", "type": "TestOnlyFailing", "bottom": "x", "top": "y"},
        ],
    }
    with pytest.raises(NetlayersError) as info:
        Net(spec).forward()
    message = str(info.value)
    assert message.startswith("layer 'mine': forward of ") and "\n" not in message
    assert f"{__file__}:" in message and "(`return {}[\"missing\"]`): KeyError: 'missing'" in message
    assert isinstance(info.value.__cause__, KeyError)


@pytest.mark.parametrize(
    "value, words",
    [
        ([[1.0, 2.0], [3.0]], "takes a rectangular array of numbers, got nested sequences"),
        (np.ones((2, 1, 6, 6)) * 1j, "takes real numbers, got complex numbers"),
        ("abc", "takes real numbers, got strings"),
        (np.array([None, 1.0], dtype=object), "takes real numbers, got Python objects"),
    ],
)
def test_inputs_that_are_not_real_numbers_are_one_line_errors(value, words):
    with pytest.raises(DataError, match=f"blob 'x' {words}"):
        Net(POOL_NET).forward(x=value)


@pytest.mark.parametrize(
    "options, words",
    [
        ({"dtype": "int32"}, "a net computes in float32 or float64, not int32"),
        ({"dtype": "complex128"}, "not complex128"),
        ({"seed": "abc"}, "seed must be a whole number, got 'abc'"),
        ({"seed": 1.5}, "seed must be a whole number, got 1.5"),
    ],
)
def test_net_options_are_checked(options, words):
    with pytest.raises(ConfigError, match=words):
        Net(POOL_NET, **options)


@pytest.mark.parametrize("shape", [("a",), ((2, "x"),), (2.5,), (None,), ((2, None),)])
def test_a_blob_shape_must_be_whole_numbers(shape):
    with pytest.raises(NetlayersError, match="a shape is whole numbers"):
        netlayers.Blob().reshape(*shape)


def test_values_a_float32_net_cannot_hold_are_refused_at_setup():
    spec = {
        "name": "w",
        "layers": [
            {"name": "data", "type": "Input", "top": ["x", "t"], "input_param": {"shape": {"dim": [2, 3]}}},
            {
                "name": "ip",
                "type": "InnerProduct",
                "bottom": "x",
                "top": "y",
                "inner_product_param": {"num_output": 3, "weight_filler": {"type": "constant", "value": 1e60}},
            },
            {"name": "loss", "type": "EuclideanLoss", "bottom": ["y", "t"], "top": "loss", "loss_weight": 1e60},
        ],
    }
    with pytest.raises(
        ConfigError,
        match="layer 'ip': the constant filler of param blob 0 gives values "
        r"beyond what float32 holds \(at most 3.4e\+38\)",
    ):
        Net(spec)
    spec["layers"][1]["inner_product_param"]["weight_filler"]["value"] = 1.0
    with pytest.raises(ConfigError, match="layer 'loss': field 'loss_weight': 1e\\+60 is beyond what float32"):
        Net(spec)
    assert Net(spec, dtype="float64").layers[-1].loss_weights == [1e60]


def test_python_api_calls_with_wrong_kinds_of_arguments_are_one_line_errors(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent / "solvers"))
    from solver_nets import tiny_config

    from netlayers import Solver

    net = Net(POOL_NET)
    calls = [
        (lambda: Solver(tiny_config(), output_dir=5), "output_dir takes a file or folder name, got int 5"),
        (lambda: Solver(tiny_config(), seed="x"), "the seed override must be a whole number, got 'x'"),
        (lambda: Solver(tiny_config(), max_iter=2.5), "the max_iter override must be a whole number"),
        (lambda: Solver(tiny_config(), output_dir=tmp_path).solve(resume=5), "a solver state to restore takes"),
        (lambda: net.set_state({}), "a net state is a mapping with 'rng'"),
        (lambda: net.set_state(None), "a net state is a mapping with 'rng'"),
        (lambda: net.share_weights_from(None), "share_weights_from takes a Net, got NoneType"),
        (lambda: net.load(5), "Net.load takes a file or folder name, got int 5"),
        (lambda: net.save(None), "Net.save takes a file or folder name, got NoneType None"),
        (lambda: netlayers.Blob((2,), dtype="garbage"), "'garbage' is not a numpy dtype"),
    ]
    for call, words in calls:
        with pytest.raises(NetlayersError, match=re.escape(words)) as info:
            call()
        assert "\n" not in str(info.value)
