"""Declared constraints: bounds and cross-field rules, checked by one mechanism, each mistake
reported at the line of the field at fault; the registry's count-like fields all have a minimum."""

import re
import subprocess
import sys
import warnings

import pytest

from netlayers import Net
from netlayers.errors import ConfigError, NetlayersWarning
from netlayers.netspec import Enum, Field, Message
from netlayers.registry import layer_class, layer_types

HEADER = (
    "layers:\n"
    "  - {name: x, type: Input, top: x, input_param: {shape: {dim: [2, 3, 6, 6]}}}\n"
    "  - {name: x2, type: Input, top: x2, input_param: {shape: {dim: [2]}}}\n"
)
FIRST_FIELD_LINE = 9  # the first line of the param block's fields, see layer_config


def layer_config(layer_type, block, fields):
    """A net whose layer 'l' has ``block`` written one field per line, from line 9."""
    lines = [HEADER, "  - name: l\n", f"    type: {layer_type}\n", "    bottom: x\n", "    top: y\n", f"    {block}:\n"]
    lines += [f"      {key}: {value}\n" for key, value in fields.items()]
    return "".join(lines)


# (layer type, block, fields in order, the field at fault, words of the message)
CASES = [
    ("InnerProduct", "inner_product_param", {"num_output": 0}, "num_output", "expected an integer >= 1, got 0"),
    (
        "InnerProduct",
        "inner_product_param",
        {"num_output": 2, "weight_filler": "{type: gaussian, std: -1}"},
        "weight_filler",
        "field 'inner_product_param.weight_filler.std': expected a number >= 0, got -1",
    ),
    ("Convolution", "convolution_param", {"num_output": 0, "kernel_size": 3}, "num_output", ">= 1, got 0"),
    ("Convolution", "convolution_param", {"kernel_size": 3, "num_output": 2, "group": 0}, "group", ">= 1, got 0"),
    ("Convolution", "convolution_param", {"stride": 0, "kernel_size": 3, "num_output": 2}, "stride[0]", ">= 1"),
    ("Convolution", "convolution_param", {"num_output": 2, "pad": -1, "kernel_size": 3}, "pad[0]", ">= 0, got -1"),
    (
        "Convolution",
        "convolution_param",
        {"kernel_size": 3, "num_output": 2, "kernel_h": 2, "kernel_w": 2},
        "kernel_size",
        "give either kernel_size or kernel_h/kernel_w, not both",
    ),
    (
        "Convolution",
        "convolution_param",
        {"num_output": 2, "kernel_h": 2, "kernel_size": "[]"},
        "kernel_h",
        "kernel_h and kernel_w go together",
    ),
    ("Deconvolution", "convolution_param", {"dilation": 0, "kernel_size": 3, "num_output": 2}, "dilation[0]", ">= 1"),
    ("Im2col", "convolution_param", {"kernel_size": "[2, 2, 2]"}, "kernel_size", "give 1, or 2"),
    ("Pooling", "pooling_param", {"stride": 0, "kernel_size": 2}, "stride", ">= 1, got 0"),
    ("Pooling", "pooling_param", {"kernel_size": 0}, "kernel_size", ">= 1, got 0"),
    ("Pooling", "pooling_param", {"stride": 2, "kernel_size": 3, "pad": 3}, "pad", "must be smaller than the kernel"),
    ("Pooling", "pooling_param", {"pool": "STOCHASTIC", "kernel_size": 2}, "pool", "not supported"),
    ("Pooling", "pooling_param", {"kernel_size": 2, "global_pooling": "true"}, "kernel_size", "global_pooling"),
    ("SPP", "spp_param", {"pyramid_height": 0}, "pyramid_height", ">= 1, got 0"),
    ("LRN", "lrn_param", {"local_size": 4}, "local_size", "must be odd"),
    ("LRN", "lrn_param", {"local_size": -3}, "local_size", ">= 1, got -3"),
    ("Dropout", "dropout_param", {"dropout_ratio": 1}, "dropout_ratio", "expected a number >= 0 and < 1, got 1"),
    ("BatchNorm", "batch_norm_param", {"moving_average_fraction": 2}, "moving_average_fraction", "<= 1"),
    ("MVN", "mvn_param", {"eps": -1e-3}, "eps", ">= 0"),
    ("Log", "log_param", {"scale": 2, "base": 1}, "base", "base 1 has no logarithm"),
    ("Exp", "exp_param", {"base": -2}, "base", "> 0, or -1, got -2"),
    ("Embed", "embed_param", {"num_output": 3, "input_dim": 0}, "input_dim", ">= 1, got 0"),
    ("Accuracy", "accuracy_param", {"top_k": 0}, "top_k", ">= 1, got 0"),
    ("ArgMax", "argmax_param", {"top_k": -1}, "top_k", ">= 1"),
    ("Tile", "tile_param", {"tiles": 0}, "tiles", ">= 1, got 0"),
    ("Eltwise", "eltwise_param", {"operation": "MAX", "coeff": "[1, 2]"}, "coeff", "only for operation SUM"),
    ("Concat", "concat_param", {"axis": 1, "concat_dim": 1}, "concat_dim", "not both"),
    ("Concat", "concat_param", {"concat_dim": -1}, "concat_dim", ">= 0"),
    ("Slice", "slice_param", {"slice_point": 0}, "slice_point[0]", ">= 1, got 0"),
    ("Scale", "scale_param", {"num_axes": -2}, "num_axes", ">= -1, got -2"),
    (
        "Reshape",
        "reshape_param",
        {"shape": "{dim: [2, -2]}"},
        "shape",
        "field 'reshape_param.shape.dim[1]': expected an integer >= -1, got -2",
    ),
    ("Reshape", "reshape_param", {"shape": "{dim: [-1, -1]}"}, "shape", "more than one -1"),
    ("DummyData", "dummy_data_param", {"shape": "{dim: [0, 3]}"}, "shape", ">= 1, got 0"),
    ("DummyData", "dummy_data_param", {"num": 0, "channels": 1}, "num", ">= 1, got 0"),
    ("Data", "data_param", {"source": "nowhere", "batch_size": 0}, "batch_size", ">= 1, got 0"),
    (
        "MemoryData",
        "memory_data_param",
        {"batch_size": 0, "channels": 1, "height": 1, "width": 1},
        "batch_size",
        ">= 1, got 0",
    ),
    (
        "MemoryData",
        "memory_data_param",
        {"batch_size": 2, "channels": 0, "height": 1, "width": 1},
        "channels",
        ">= 1, got 0",
    ),
]


@pytest.mark.parametrize(
    "layer_type,block,fields,at,words", CASES, ids=[f"{c[0]}-{c[3]}-{i}" for i, c in enumerate(CASES)]
)
def test_each_declared_constraint_errors_at_its_fields_line(tmp_path, layer_type, block, fields, at, words):
    path = tmp_path / "net.yaml"
    path.write_text(layer_config(layer_type, block, fields))
    line = FIRST_FIELD_LINE + list(fields).index(at.split("[")[0])
    with pytest.raises(ConfigError) as info:
        Net(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: layer 'l': field '{block}."), message
    assert words in message and "\n" not in message


def test_a_rule_declared_on_a_registered_layer_runs_before_set_up(tmp_path):
    from netlayers import Layer, register_layer
    from netlayers.netspec import rule_error

    @register_layer("TestConstraintsWindow")
    class Window(Layer):
        params = {"low": Field(float, 0.0), "high": Field(float, 1.0, gt=0)}

        @classmethod
        def check_params(cls, p):
            if p.low >= p.high:
                raise rule_error("low", f"low ({p.low:g}) must be below high ({p.high:g})")

        def LayerSetUp(self, bottom, top):
            raise AssertionError("set-up must not be reached")

    path = tmp_path / "net.yaml"
    path.write_text(layer_config("TestConstraintsWindow", "test_constraints_window_param", {"high": 0.5, "low": 2}))
    with pytest.raises(
        ConfigError,
        match=rf"^{re.escape(str(path))}:10: layer 'l': field "
        r"'test_constraints_window_param.low': low \(2\) must be below",
    ):
        Net(path)
    path.write_text(layer_config("TestConstraintsWindow", "test_constraints_window_param", {"high": 0}))
    with pytest.raises(
        ConfigError,
        match=r":9: .*field 'test_constraints_window_param.high': "
        r"expected a number > 0, got 0",
    ):
        Net(path)


COUNT_LIKE = re.compile(
    r"^(num_output|.*_size|kernel.*|stride.*|dilation|group|batch_size|top_k|tiles|"
    r"pyramid_height|input_dim|dim|num|channels|height|width|num_axes)$"
)


def _int_fields(fields, path):
    for name, field in fields.items():
        if isinstance(field.kind, Message):
            yield from _int_fields(field.kind.fields, f"{path}.{name}")
        elif field.kind is int:
            yield f"{path}.{name}", name, field


def test_every_count_like_field_of_every_layer_declares_a_minimum():
    """A new layer cannot forget: every int field named like a count or size has a lower bound."""
    missing, seen = [], 0
    for type_name in layer_types():
        cls = layer_class(type_name)
        if not cls.__module__.startswith("netlayers."):
            continue  # classes other tests register
        for block, fields in cls.param_blocks().items():
            for path, name, field in _int_fields(fields, f"{type_name}: {block}"):
                if COUNT_LIKE.match(name):
                    seen += 1
                    if field.min is None and field.gt is None:
                        missing.append(path)
    assert seen > 40
    assert not missing, f"count-like fields without a declared minimum: {missing}"


def test_field_bounds_take_also_values_and_describe_the_range():
    field = Field(float, -1.0, gt=0, also=(-1,))
    assert field.in_range(-1) and field.in_range(0.5) and not field.in_range(0) and not field.in_range(-2)
    assert field.range_text() == "> 0, or -1"
    assert Field(int, min=1, max=4).range_text() == ">= 1 and <= 4"
    assert not Field(Enum("A"), "A").bounded


def test_engine_cudnn_warns_once_per_net(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text(
        HEADER + "  - {name: c1, type: Convolution, bottom: x, top: c1,\n"
        "     convolution_param: {num_output: 2, kernel_size: 3, engine: CUDNN}}\n"
        "  - {name: p1, type: Pooling, bottom: c1, top: p1,\n"
        "     pooling_param: {kernel_size: 2, engine: cudnn}}\n"
        "  - {name: p2, type: Pooling, bottom: p1, top: p2,\n"
        "     pooling_param: {kernel_size: 2, engine: CAFFE}}\n"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Net(path)
    ours = [w for w in caught if issubclass(w.category, NetlayersWarning)]
    assert len(ours) == 1
    text = str(ours[0].message)
    assert "engine CUDNN is ignored" in text and "'c1', 'p1'" in text and "p2" not in text


def test_a_missing_bottom_is_reported_at_the_line_naming_it(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text(
        HEADER + "  - name: add\n"
        "    type: Eltwise\n"
        "    bottom:\n"
        "      - x\n"
        "      - y_typo\n"
        "    top: s\n"
        "  - {name: r, type: ReLU,\n"
        "     bottom: nothing, top: r}\n"
    )
    with pytest.raises(
        ConfigError,
        match=rf"^{re.escape(str(path))}:8: layer 'add': field 'bottom\[1\]': "
        r"blob 'y_typo' is not produced",
    ):
        Net(path)
    path.write_text(path.read_text().replace("y_typo", "x2"))
    with pytest.raises(ConfigError, match=r":11: layer 'r': field 'bottom\[0\]': blob 'nothing'"):
        Net(path)


def test_a_duplicate_key_names_its_layer(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text(
        HEADER + "  - name: ip\n"
        "    type: InnerProduct\n"
        "    bottom: x\n"
        "    top: y\n"
        "    inner_product_param:\n"
        "      num_output: 2\n"
        "      num_output: 3\n"
    )
    with pytest.raises(ConfigError) as info:
        Net(path)
    assert str(info.value) == f"{path}:10: layer 'ip': duplicate key 'num_output'"


CUBE_MODULE = '''
import netlayers
from netlayers.netspec import Field

@netlayers.register_layer("TestImportsCube")
class Cube(netlayers.Layer):
    """y = scale * x^3.  Backward: dE/dx = dE/dy * 3 * scale * x^2."""
    num_bottoms = num_tops = (1, 1)
    params = {"scale": Field(float, 1.0, gt=0)}

    def Reshape(self, bottom, top):
        top[0].reshape_like(bottom[0])

    def Forward_cpu(self, bottom, top):
        top[0].data[...] = self.p.scale * bottom[0].data ** 3

    def Backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff * 3 * self.p.scale * bottom[0].data ** 2
'''


def test_imports_make_a_registered_layer_usable_from_the_command_line(tmp_path):
    (tmp_path / "h3_cube_layers.py").write_text(CUBE_MODULE)
    config = tmp_path / "net.yaml"
    config.write_text(
        "imports: [h3_cube_layers]\n"
        "layers:\n"
        "  - {name: x, type: Input, top: x, input_param: {shape: {dim: [2, 3]}}}\n"
        "  - {name: cube, type: TestImportsCube, bottom: x, top: y,\n"
        "     test_imports_cube_param: {scale: 2}}\n"
        "  - {name: loss, type: EuclideanLoss, bottom: [y, x], top: loss}\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "netlayers", "gradcheck", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=tmp_path.parent,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "cube" in run.stdout


def test_an_import_that_fails_is_one_line_at_its_name(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text("imports:\n  - json\n  - h3_no_such_module\n" + HEADER.replace("layers:\n", "layers:\n", 1))
    with pytest.raises(ConfigError) as info:
        Net(path)
    assert str(info.value).startswith(f"{path}:3: field 'imports[1]': cannot import module 'h3_no_such_module'")
    (tmp_path / "h3_broken_layers.py").write_text("raise RuntimeError('half written')\n")
    path.write_text("imports: h3_broken_layers\n" + HEADER)
    with pytest.raises(
        ConfigError,
        match=r":1: field 'imports\[0\]': importing module 'h3_broken_layers' "
        r"failed: RuntimeError: half written$",
    ):
        Net(path)
