import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import netlayers
from netlayers import ConfigError, Layer, Net, register_layer
from netlayers.gradcheck import check_layer, check_net

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "examples" / "python_layer" / "net.yaml"


def test_shipped_example_builds_runs_and_its_gradients_check():
    net = Net(EXAMPLE, seed=0)
    net.forward()
    x = net.blobs["x"].data
    np.testing.assert_allclose(net.blobs["y"].data, 2 * x**3, rtol=1e-6)
    assert net.layer("cube").param_str == "scale: 2"
    report = check_net(EXAMPLE)
    assert report.passed, report.table()


def write_layer(tmp_path, body, module="userlayer"):
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(body))
    config = tmp_path / "net.yaml"
    config.write_text(
        textwrap.dedent(f"""\
        name: t
        layers:
          - {{name: data, type: Input, top: x, input_param: {{shape: [{{dim: [3]}}]}}}}
          - name: mine
            type: Python
            bottom: x
            top: y
            python_param: {{module: {module}, layer: Double}}
        """)
    )
    return config


def test_module_is_imported_from_the_config_folder(tmp_path):
    config = write_layer(
        tmp_path,
        """\
        import netlayers
        class Double(netlayers.Layer):
            def Reshape(self, bottom, top):
                top[0].reshape_like(bottom[0])
            def Forward_cpu(self, bottom, top):
                top[0].data[...] = 2 * bottom[0].data
            def Backward_cpu(self, top, propagate_down, bottom):
                bottom[0].diff[...] = 2 * top[0].diff
        """,
        module="userlayer_ok",
    )
    out = Net(config).forward(x=np.array([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(out["y"], [2, 4, 6])


def test_missing_module_is_one_line_naming_module_and_layer(tmp_path):
    config = write_layer(tmp_path, "", module="userlayer_empty")
    config.write_text(config.read_text().replace("userlayer_empty", "no_such_module_xyz"))
    with pytest.raises(ConfigError) as info:
        Net(config)
    message = str(info.value)
    assert "layer 'mine'" in message and "no_such_module_xyz" in message and "\n" not in message


def test_missing_class_and_missing_method(tmp_path):
    config = write_layer(tmp_path, "class Other: pass\n", module="userlayer_noclass")
    with pytest.raises(ConfigError, match="has no class 'Double'"):
        Net(config)
    config = write_layer(
        tmp_path,
        """\
        import netlayers
        class Double(netlayers.Layer):
            def Reshape(self, bottom, top):
                top[0].reshape_like(bottom[0])
        """,
        module="userlayer_nofwd",
    )
    with pytest.raises(ConfigError, match="layer 'mine'.*does not implement Forward_cpu"):
        Net(config)


def test_error_inside_user_module_is_reported_in_one_line(tmp_path):
    config = write_layer(tmp_path, "raise RuntimeError('boom')\n", module="userlayer_boom")
    with pytest.raises(ConfigError, match="importing module 'userlayer_boom' failed: RuntimeError: boom"):
        Net(config)


def test_a_class_registered_under_its_own_type_name():
    @register_layer("TestOnlySquare")
    class Square(Layer):
        """y = x^2.  Backward: dE/dx = 2 x dE/dy."""

        num_bottoms = num_tops = (1, 1)

        def Reshape(self, bottom, top):
            top[0].reshape_like(bottom[0])

        def Forward_cpu(self, bottom, top):
            np.square(bottom[0].data, out=top[0].data)

        def Backward_cpu(self, top, propagate_down, bottom):
            np.multiply(2 * bottom[0].data, top[0].diff, out=bottom[0].diff)

    report = check_layer({"type": "TestOnlySquare"}, [np.array([0.5, -1.5, 2.0])])
    assert report.passed and report.blobs[0].checked == 3
    assert "TestOnlySquare" in netlayers.registry.layer_types()


def test_gradcheck_catches_a_wrong_backward():
    @register_layer("TestOnlyWrongSquare")
    class WrongSquare(Layer):
        num_bottoms = num_tops = (1, 1)

        def Reshape(self, bottom, top):
            top[0].reshape_like(bottom[0])

        def Forward_cpu(self, bottom, top):
            np.square(bottom[0].data, out=top[0].data)

        def Backward_cpu(self, top, propagate_down, bottom):
            np.multiply(bottom[0].data, top[0].diff, out=bottom[0].diff)  # forgot the 2

    report = check_layer({"type": "TestOnlyWrongSquare"}, [np.array([0.5, -1.5, 2.0])])
    assert not report.passed and report.worst_relative > 0.1


def test_a_layer_that_keeps_its_param_diff_array_accumulates_from_zero_after_each_clear():
    @register_layer("TestOnlyKeptDiffScale")
    class KeptDiffScale(Layer):
        """y = w x (w a scalar param).  Backward: dE/dw = sum(x dE/dy), kept in an array
        taken from the param blob once, in LayerSetUp."""

        num_bottoms = num_tops = (1, 1)

        def LayerSetUp(self, bottom, top):
            self.add_param((1,))
            self.blobs[0].data[...] = 3
            self.kept_diff = self.blobs[0].diff

        def Reshape(self, bottom, top):
            top[0].reshape_like(bottom[0])

        def Forward_cpu(self, bottom, top):
            np.multiply(bottom[0].data, self.blobs[0].data, out=top[0].data)

        def Backward_cpu(self, top, propagate_down, bottom):
            self.kept_diff += np.sum(bottom[0].data * top[0].diff)

    spec = {
        "name": "kept",
        "layers": [
            {"name": "data", "type": "Input", "top": "x", "input_param": {"shape": [{"dim": [3]}]}},
            {"name": "scale", "type": "TestOnlyKeptDiffScale", "bottom": "x", "top": "y", "loss_weight": 1},
        ],
    }
    net = Net(spec)
    x = np.array([1.0, 2.0, 4.0])
    for _ in range(3):
        net.forward(x=x)
        net.clear_param_diffs()
        net.backward()
        np.testing.assert_allclose(net.params["scale"][0].diff, [x.sum()])  # not 2x, 3x


NO_BACKWARD = """\
    import netlayers
    class Double(netlayers.Layer):
        def Reshape(self, bottom, top):
            top[0].reshape_like(bottom[0])
        def Forward_cpu(self, bottom, top):
            top[0].data[...] = 2 * bottom[0].data
    """


def test_a_layer_without_backward_is_fine_where_no_gradient_must_pass(tmp_path):
    config = write_layer(tmp_path, NO_BACKWARD, module="userlayer_noback_ok")
    net = Net(config)
    np.testing.assert_array_equal(net.forward(x=np.array([1.0, 2.0, 3.0]))["y"], [2, 4, 6])


def test_a_layer_without_backward_where_gradients_must_pass_is_a_config_error(tmp_path):
    config = write_layer(tmp_path, NO_BACKWARD, module="userlayer_noback")
    config.write_text(
        "force_backward: true\n"
        + config.read_text()
        + "  - {name: loss, type: EuclideanLoss, bottom: [y, x], top: loss}\n"
    )
    with pytest.raises(ConfigError) as info:
        Net(config)
    message = str(info.value)
    assert "net.yaml:5: layer 'mine'" in message and "\n" not in message
    assert "class 'Double' in module 'userlayer_noback' has no Backward_cpu" in message


RAISING = """\
    import netlayers
    class Double(netlayers.Layer):
        def LayerSetUp(self, bottom, top):
            self.settings = {{}}
            {setup}
        def Reshape(self, bottom, top):
            top[0].reshape_like(bottom[0])
        def Forward_cpu(self, bottom, top):
            {forward}
    """


@pytest.mark.parametrize("where", ["setup", "forward"])
def test_an_exception_in_the_users_layer_is_one_line_naming_the_layer(tmp_path, where):
    failing = "self.settings['scale']"
    code = RAISING.format(
        setup=failing if where == "setup" else "pass", forward=failing if where == "forward" else "pass"
    )
    config = write_layer(tmp_path, code, module=f"userlayer_raises_{where}")
    with pytest.raises(netlayers.NetlayersError) as info:
        Net(config).forward(x=np.ones(3))
    message = str(info.value)
    assert "net.yaml:4: layer 'mine'" in message and "\n" not in message
    assert f"{where} of the Python layer failed at " in message
    assert f"userlayer_raises_{where}.py:" in message  # the user's file and line
    assert "(`self.settings['scale']`): KeyError: 'scale'" in message  # and its source line
    assert isinstance(info.value.__cause__, KeyError)


def test_a_registered_class_reads_its_own_param_block():
    from netlayers.netspec import Field

    @register_layer("TestOnlyScaled")
    class Scaled(Layer):
        """y = scale * x.  Backward: dE/dx = scale * dE/dy."""

        num_bottoms = num_tops = (1, 1)
        params = {"scale": Field(float, 1.0)}

        def Reshape(self, bottom, top):
            top[0].reshape_like(bottom[0])

        def Forward_cpu(self, bottom, top):
            np.multiply(bottom[0].data, self.p.scale, out=top[0].data)

        def Backward_cpu(self, top, propagate_down, bottom):
            np.multiply(top[0].diff, self.p.scale, out=bottom[0].diff)

    spec = {
        "name": "scaled",
        "layers": [
            {"name": "data", "type": "Input", "top": "x", "input_param": {"shape": [{"dim": [3]}]}},
            {
                "name": "s",
                "type": "TestOnlyScaled",
                "bottom": "x",
                "top": "y",
                "test_only_scaled_param": {"scale": 2.5},
            },
        ],
    }
    np.testing.assert_allclose(Net(spec).forward(x=np.array([1.0, 2.0, 4.0]))["y"], [2.5, 5, 10])
    with pytest.raises(ConfigError, match="test_only_scaled_param.scal'.*did you mean 'scale'"):
        Net({**spec, "layers": [spec["layers"][0], {**spec["layers"][1], "test_only_scaled_param": {"scal": 2}}]})


PYCAFFE_STYLE = """\
    import numpy as np
    import netlayers

    class HalfSquaredDistance(netlayers.Layer):
        # written as for pycaffe: setup / reshape / forward / backward
        def setup(self, bottom, top):
            if len(bottom) != 2:
                raise Exception("two bottoms, please")

        def reshape(self, bottom, top):
            self.delta = np.zeros_like(bottom[0].data)
            top[0].reshape(1)

        def forward(self, bottom, top):
            self.delta[...] = bottom[0].data - bottom[1].data
            top[0].data[...] = np.sum(self.delta ** 2) / bottom[0].num / 2.0

        def backward(self, top, propagate_down, bottom):
            for i, sign in ((0, 1), (1, -1)):
                if propagate_down[i]:
                    bottom[i].diff[...] = sign * self.delta / bottom[i].num
    """


def test_a_layer_written_for_pycaffe_runs_like_the_built_in_loss(tmp_path):
    (tmp_path / "pyloss_style.py").write_text(textwrap.dedent(PYCAFFE_STYLE))

    def spec(loss):
        return {
            "name": "n",
            "layers": [
                {
                    "name": "data",
                    "type": "Input",
                    "top": ["x", "t"],
                    "input_param": {"shape": [{"dim": [4, 3]}, {"dim": [4, 2]}]},
                },
                {
                    "name": "ip",
                    "type": "InnerProduct",
                    "bottom": "x",
                    "top": "z",
                    "inner_product_param": {"num_output": 2, "weight_filler": {"type": "xavier"}},
                },
                {"name": "loss", "bottom": ["z", "t"], "top": "loss", "loss_weight": 1, **loss},
            ],
        }

    python = {"type": "Python", "python_param": {"module": "pyloss_style", "layer": "HalfSquaredDistance"}}
    sys.path.insert(0, str(tmp_path))
    try:
        ours, builtin = Net(spec(python), seed=0), Net(spec({"type": "EuclideanLoss"}), seed=0)
    finally:
        sys.path.remove(str(tmp_path))
    rng = np.random.default_rng(0)
    inputs = {"x": rng.standard_normal((4, 3)), "t": rng.standard_normal((4, 2))}
    for net in (ours, builtin):
        net.forward(**inputs)
        net.clear_param_diffs()
        net.backward()
    assert ours.loss == pytest.approx(builtin.loss, rel=1e-6)
    np.testing.assert_allclose(ours.params["ip"][0].diff, builtin.params["ip"][0].diff, rtol=1e-5)


def test_a_python_layer_runs_in_place_only_when_its_class_says_it_can(tmp_path):
    double = NO_BACKWARD.replace("top[0].data[...] = 2 * bottom[0].data", "top[0].data[...] *= 2")
    double = double.replace(
        "class Double(netlayers.Layer):\n", "class Double(netlayers.Layer):\n        in_place = True\n"
    )

    def in_place_on_a_computed_blob(config):  # x -> Power -> h, then the layer with top == bottom h
        text = config.read_text().replace(
            "  - name: mine\n", "  - {name: copy, type: Power, bottom: x, top: h}\n  - name: mine\n"
        )
        config.write_text(text.replace("    bottom: x\n    top: y\n", "    bottom: h\n    top: h\n"))
        return config

    net = Net(in_place_on_a_computed_blob(write_layer(tmp_path, double, module="userlayer_in_place")))
    np.testing.assert_array_equal(net.forward(x=np.array([1.0, 2.0, 3.0]))["h"], [2, 4, 6])
    assert net.top_vecs[-1][0] is net.bottom_vecs[-1][0]
    net = Net(in_place_on_a_computed_blob(write_layer(tmp_path, NO_BACKWARD, module="userlayer_not_in_place")))
    np.testing.assert_array_equal(net.forward(x=np.array([1.0, 2.0, 3.0]))["h"], [2, 4, 6])
    assert net.top_vecs[-1][0] is not net.bottom_vecs[-1][0]  # says nothing: a blob of its own
