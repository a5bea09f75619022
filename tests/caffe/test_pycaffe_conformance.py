"""Caffe 1.0's own pycaffe tests (python/caffe/test/*.py), rewritten as ours against
``from netlayers import caffe``: each test names the Caffe test whose behaviour it checks.

Differences from Caffe's tests are said next to the test: no GPU, and the Python layers' module
is written next to the net file (Caffe imports it from its test folder).
"""

import os
from collections import OrderedDict

import numpy as np
import pytest

from netlayers import NetlayersError, caffe
from netlayers.caffe import layers as L
from netlayers.caffe import params as P

NUM_OUTPUT = 13


def simple_net_text(num_output=NUM_OUTPUT):
    """test_net.py's simple_net_file: DummyData -> Convolution -> InnerProduct -> SoftmaxWithLoss."""
    return f"""name: 'testnet' force_backward: true
    layer {{ type: 'DummyData' name: 'data' top: 'data' top: 'label'
      dummy_data_param {{ num: 5 channels: 2 height: 3 width: 4
        num: 5 channels: 1 height: 1 width: 1
        data_filler {{ type: 'gaussian' std: 1 }}
        data_filler {{ type: 'constant' }} }} }}
    layer {{ type: 'Convolution' name: 'conv' bottom: 'data' top: 'conv'
      convolution_param {{ num_output: 11 kernel_size: 2 pad: 3
        weight_filler {{ type: 'gaussian' std: 1 }}
        bias_filler {{ type: 'constant' value: 2 }} }}
        param {{ decay_mult: 1 }} param {{ decay_mult: 0 }}
        }}
    layer {{ type: 'InnerProduct' name: 'ip' bottom: 'conv' top: 'ip_blob'
      inner_product_param {{ num_output: {num_output}
        weight_filler {{ type: 'gaussian' std: 2.5 }}
        bias_filler {{ type: 'constant' value: -3 }} }} }}
    layer {{ type: 'SoftmaxWithLoss' name: 'loss' bottom: 'ip_blob' bottom: 'label'
      top: 'loss' }}"""


def write(folder, name, text):
    path = folder / name
    path.write_text(text)
    return str(path)


@pytest.fixture
def net_file(tmp_path):
    return write(tmp_path, "simple.prototxt", simple_net_text())


def with_labels(net, rng=None):
    """setUp of TestNet/TestSolver: valid labels in the label blob."""
    rng = rng or np.random.default_rng(0)
    net.blobs["label"].data[...] = rng.integers(NUM_OUTPUT, size=net.blobs["label"].data.shape)
    return net


@pytest.fixture
def net(net_file):
    return with_labels(caffe.Net(net_file, caffe.TRAIN))


# -- test_net.py: TestNet -----------------------------------------------------------------------
def test_memory_blob_arrays_outlive_the_net(net):
    """TestNet.test_memory: params and blobs stay readable after the net is deleted."""
    params = sum(map(list, net.params.values()), [])
    blobs = list(net.blobs.values())
    del net
    total = sum(p.data.sum() + p.diff.sum() for p in params) + sum(b.data.sum() + b.diff.sum() for b in blobs)
    assert np.isfinite(total)
    assert len(params) == 4 and len(blobs) == 5


def test_layer_dict_follows_layer_names_and_types(net):
    """TestNet.test_layer_dict."""
    layer_dict = net.layer_dict
    assert list(layer_dict.keys()) == list(net._layer_names)
    for i, name in enumerate(net._layer_names):
        assert layer_dict[name].type == net.layers[i].type
    assert [layer.type for layer in net.layers] == ["DummyData", "Convolution", "InnerProduct", "SoftmaxWithLoss"]


def test_forward_backward(net):
    """TestNet.test_forward_backward: forward gives the loss, backward the data's gradient."""
    loss = net.forward()["loss"]
    assert np.ndim(loss) == 0 and loss > 0
    diffs = net.backward()
    assert diffs == {}  # no inputs: nothing asked for, as pycaffe
    assert np.abs(net.blobs["data"].diff).sum() > 0  # force_backward reaches the data


def test_forward_start_end_is_the_inner_product_of_the_conv_blob(net):
    """TestNet.test_forward_start_end."""
    conv_blob, ip_blob = net.blobs["conv"], net.blobs["ip_blob"]
    conv_blob.data[:] = np.random.default_rng(1).uniform(size=conv_blob.data.shape).astype(np.float32)
    out = net.forward(start="ip", end="ip")
    assert "ip_blob" in out
    weights, bias = net.params["ip"][0].data, net.params["ip"][1].data
    expected = np.array([weights @ conv_blob.data[i].reshape(-1) + bias for i in range(conv_blob.data.shape[0])])
    # the weights are drawn anew each run (as Caffe's): an output near 0 from terms of order 10
    # carries float32 rounding of the terms' scale, not its own
    np.testing.assert_allclose(ip_blob.data, expected, rtol=1e-3, atol=1e-6 * np.abs(expected).max())


def test_backward_start_end_is_the_transposed_inner_product(net):
    """TestNet.test_backward_start_end."""
    conv_blob, ip_blob = net.blobs["conv"], net.blobs["ip_blob"]
    net.forward()
    top_diff = np.random.default_rng(2).uniform(size=ip_blob.data.shape).astype(np.float32)
    ip_blob.diff[:] = top_diff
    out = net.backward(start="ip", end="ip")
    assert "conv" in out
    weights = net.params["ip"][0].data
    expected = np.array([weights.T @ top_diff[i].reshape(-1) for i in range(len(top_diff))])
    np.testing.assert_allclose(conv_blob.diff, expected.reshape(conv_blob.data.shape), rtol=1e-3, atol=1e-5)


def test_clear_param_diffs_zeroes_the_same_arrays(net):
    """TestNet.test_clear_param_diffs: the diff array kept by the script becomes 0."""
    net.forward()
    net.backward()
    diff = net.params["conv"][0].diff
    assert diff.max() > 0
    net.clear_param_diffs()
    assert (diff == 0).all()


def test_inputs_and_outputs(net):
    """TestNet.test_inputs_outputs."""
    assert net.inputs == []
    assert net.outputs == ["loss"]


def test_top_and_bottom_names(net):
    """TestNet.test_top_bottom_names."""
    assert net.top_names == OrderedDict(
        [("data", ["data", "label"]), ("conv", ["conv"]), ("ip", ["ip_blob"]), ("loss", ["loss"])]
    )
    assert net.bottom_names == OrderedDict(
        [("data", []), ("conv", ["data"]), ("ip", ["conv"]), ("loss", ["ip_blob", "label"])]
    )


@pytest.mark.parametrize("name", ["weights", "weights.caffemodel"])
def test_save_and_read_with_both_constructors(net, net_file, tmp_path, name):
    """TestNet.test_save_and_read: a name without a suffix (Caffe's tempfile) is a .caffemodel
    in Caffe; both the legacy (model, weights, phase) and named weights= constructors read it."""
    path = str(tmp_path / name)
    net.save(path)
    legacy = caffe.Net(net_file, path, caffe.TRAIN)
    named = caffe.Net(net_file, caffe.TRAIN, weights=path)
    for other in (legacy, named):
        for layer, blobs in net.params.items():
            for i, blob in enumerate(blobs):
                assert np.abs(blob.data - other.params[layer][i].data).sum() == 0


def test_save_hdf5_and_load_hdf5(net, net_file, tmp_path):
    """TestNet.test_save_hdf5: params written to HDF5 and read into a fresh net."""
    path = str(tmp_path / "weights.h5")
    net.save_hdf5(path)
    other = caffe.Net(net_file, caffe.TRAIN)
    assert np.abs(other.params["ip"][0].data - net.params["ip"][0].data).sum() > 0
    other.load_hdf5(path)
    for layer, blobs in net.params.items():
        for i, blob in enumerate(blobs):
            assert np.abs(blob.data - other.params[layer][i].data).sum() == 0


def test_blob_loss_weights_and_blob_attributes(net):
    """_caffe.cpp: Net._blob_loss_weights, _blob_names, Blob.count/num/channels/height/width."""
    assert net._blob_loss_weights == [0.0, 0.0, 0.0, 0.0, 1.0]
    assert list(net._blob_names) == ["data", "label", "conv", "ip_blob", "loss"]
    blob = net.blobs["data"]
    assert (blob.num, blob.channels, blob.height, blob.width, blob.count) == (5, 2, 3, 4, 120)
    assert tuple(blob.shape) == (5, 2, 3, 4) and blob.data.dtype == np.float32
    layer = net.layers[1]
    assert len(layer.blobs) == 2 and layer.blobs[0].data.shape == (11, 2, 2, 2)
    assert net._inputs == [] and net._outputs == [4]
    assert net._top_ids(0) == [0, 1] and net._bottom_ids(3) == [3, 1]


# -- test_net.py: TestLevels, TestStages, TestAllInOne -------------------------------------------
LEVELS_NET = """
layer { name: "data" type: "DummyData" top: "data" dummy_data_param { shape { dim: 1 dim: 1 dim: 10 dim: 10 } } }
layer { name: "NoLevel" type: "InnerProduct" bottom: "data" top: "NoLevel" inner_product_param { num_output: 1 } }
layer { name: "Level0Only" type: "InnerProduct" bottom: "data" top: "Level0Only"
  include { min_level: 0 max_level: 0 } inner_product_param { num_output: 1 } }
layer { name: "Level1Only" type: "InnerProduct" bottom: "data" top: "Level1Only"
  include { min_level: 1 max_level: 1 } inner_product_param { num_output: 1 } }
layer { name: "Level>=0" type: "InnerProduct" bottom: "data" top: "Level>=0"
  include { min_level: 0 } inner_product_param { num_output: 1 } }
layer { name: "Level>=1" type: "InnerProduct" bottom: "data" top: "Level>=1"
  include { min_level: 1 } inner_product_param { num_output: 1 } }
"""

STAGES_NET = """
layer { name: "data" type: "DummyData" top: "data" dummy_data_param { shape { dim: 1 dim: 1 dim: 10 dim: 10 } } }
layer { name: "A" type: "InnerProduct" bottom: "data" top: "A" include { stage: "A" }
  inner_product_param { num_output: 1 } }
layer { name: "B" type: "InnerProduct" bottom: "data" top: "B" include { stage: "B" }
  inner_product_param { num_output: 1 } }
layer { name: "AorB" type: "InnerProduct" bottom: "data" top: "AorB"
  include { stage: "A" } include { stage: "B" } inner_product_param { num_output: 1 } }
layer { name: "AandB" type: "InnerProduct" bottom: "data" top: "AandB"
  include { stage: "A" stage: "B" } inner_product_param { num_output: 1 } }
"""

ALL_IN_ONE_NET = """
layer { name: "train_data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 1 dim: 1 dim: 10 dim: 10 } shape { dim: 1 dim: 1 dim: 1 dim: 1 } }
  include { phase: TRAIN stage: "train" } }
layer { name: "val_data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 1 dim: 1 dim: 10 dim: 10 } shape { dim: 1 dim: 1 dim: 1 dim: 1 } }
  include { phase: TEST stage: "val" } }
layer { name: "deploy_data" type: "Input" top: "data"
  input_param { shape { dim: 1 dim: 1 dim: 10 dim: 10 } } include { phase: TEST stage: "deploy" } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 2 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss"
  include: { phase: TRAIN stage: "train" } include: { phase: TEST stage: "val" } }
layer { name: "pred" type: "Softmax" bottom: "ip" top: "pred" include: { phase: TEST stage: "deploy" } }
"""


def blob_names_but_data(net):
    return [name for name in net.blobs.keys() if "data" not in name]


@pytest.mark.parametrize(
    "level, expected",
    [(None, ["NoLevel", "Level0Only", "Level>=0"]), (1, ["NoLevel", "Level1Only", "Level>=0", "Level>=1"])],
)
def test_levels_select_layers(tmp_path, level, expected):
    """TestLevels.test_0 and test_1."""
    path = write(tmp_path, "levels.prototxt", LEVELS_NET)
    net = caffe.Net(path, caffe.TEST) if level is None else caffe.Net(path, caffe.TEST, level=level)
    assert blob_names_but_data(net) == expected


@pytest.mark.parametrize(
    "stages, expected",
    [(["A"], ["A", "AorB"]), (["B"], ["B", "AorB"]), (["A", "B"], ["A", "B", "AorB", "AandB"])],
)
def test_stages_select_layers(tmp_path, stages, expected):
    """TestStages.test_A, test_B and test_AandB."""
    net = caffe.Net(write(tmp_path, "stages.prototxt", STAGES_NET), caffe.TEST, stages=stages)
    assert blob_names_but_data(net) == expected


@pytest.mark.parametrize(
    "phase, stage, outputs",
    [(caffe.TRAIN, "train", ["loss"]), (caffe.TEST, "val", ["loss"]), (caffe.TEST, "deploy", ["pred"])],
)
def test_all_in_one_net_by_phase_and_stage(tmp_path, phase, stage, outputs):
    """TestAllInOne.test_train, test_val and test_deploy."""
    net = caffe.Net(write(tmp_path, "all.prototxt", ALL_IN_ONE_NET), phase, stages=[stage])
    assert list(net.blobs["data"].shape) == [1, 1, 10, 10]
    assert net.outputs == outputs


# -- test_solver.py ----------------------------------------------------------------------------
SOLVER_TEXT = """net: '{net}'
test_iter: 10 test_interval: 10 base_lr: 0.01 momentum: 0.9
weight_decay: 0.0005 lr_policy: 'inv' gamma: 0.0001 power: 0.75
display: 100 max_iter: {max_iter} snapshot_after_train: false
snapshot_prefix: "model" """


@pytest.fixture
def solver_file(tmp_path, monkeypatch, net_file):
    """TestSolver.setUp's solver file (max_iter 20, not 100, to stay fast), from the current folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GLOG_minloglevel", "2")
    return write(tmp_path, "solver.prototxt", SOLVER_TEXT.format(net=net_file, max_iter=20))


@pytest.fixture
def solver(solver_file):
    solver = caffe.SGDSolver(solver_file)
    caffe.get_solver(solver_file)  # "also make sure get_solver runs"
    caffe.set_mode_cpu()
    with_labels(solver.net)
    with_labels(solver.test_nets[0])
    return solver


def test_solve_runs_to_max_iter(solver):
    """TestSolver.test_solve."""
    assert solver.iter == 0
    solver.solve()
    assert solver.iter == 20


def test_apply_update_uses_the_base_learning_rate(solver):
    """TestSolver.test_apply_update: weights 0, diffs 1, one update at lr 0.01 gives -0.01."""
    net = solver.net
    data = net.layers[1].blobs[0].data[...]
    data[...] = 0
    net.layers[1].blobs[0].diff[...] = 1
    solver.apply_update()
    assert np.abs(data - -0.01).max() < 1e-7


def test_nets_outlive_the_solver(solver):
    """TestSolver.test_net_memory."""
    nets = [solver.net] + list(solver.test_nets)
    assert len(nets) == 2
    del solver
    total = 0.0
    for net in nets:
        total += sum(p.data.sum() + p.diff.sum() for ps in net.params.values() for p in ps)
        total += sum(b.data.sum() + b.diff.sum() for b in net.blobs.values())
    assert np.isfinite(total)


def test_snapshot_writes_caffes_file_names(solver, tmp_path):
    """TestSolver.test_snapshot: model_iter_0.caffemodel and model_iter_0.solverstate."""
    solver.snapshot()
    for name in ("model_iter_0.caffemodel", "model_iter_0.solverstate"):
        assert (tmp_path / name).is_file(), sorted(os.listdir(tmp_path))


# -- test_python_layer.py ----------------------------------------------------------------------
PYTHON_LAYERS = '''
from netlayers import caffe


class SimpleLayer(caffe.Layer):
    """Multiplies by ten."""

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = 10 * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = 10 * top[0].diff


class ExceptionLayer(caffe.Layer):
    def setup(self, bottom, top):
        raise RuntimeError

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        pass


class ParameterLayer(caffe.Layer):
    def setup(self, bottom, top):
        self.blobs.add_blob(1)
        self.blobs[0].data[0] = 0

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        self.blobs[0].diff[0] = 1


class PhaseLayer(caffe.Layer):
    def setup(self, bottom, top):
        pass

    def reshape(self, bootom, top):
        top[0].reshape()

    def forward(self, bottom, top):
        top[0].data[()] = self.phase


class SimpleParamLayer(caffe.Layer):
    """Multiplies by the number in its param_str."""

    def setup(self, bottom, top):
        try:
            self.value = float(self.param_str)
        except ValueError:
            raise ValueError("Parameter string must be a legible float")

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = self.value * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = self.value * top[0].diff
'''

PYTHON_HEAD = "name: 'pythonnet' force_backward: true\ninput: 'data' input_shape { dim: 10 dim: 9 dim: 8 }\n"


def python_layer(name, bottom, top, cls, param_str=None):
    extra = f" param_str: '{param_str}'" if param_str is not None else ""
    return (
        f"layer {{ type: 'Python' name: '{name}' bottom: '{bottom}' top: '{top}'\n"
        f"  python_param {{ module: 'pylayers_h12' layer: '{cls}'{extra} }} }}\n"
    )


@pytest.fixture
def python_folder(tmp_path, monkeypatch):
    """The Python layers' module next to the net files (Caffe imports it from the test folder)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    write(tmp_path, "pylayers_h12.py", PYTHON_LAYERS)
    return tmp_path


@pytest.fixture
def python_net(python_folder):
    body = "".join(
        python_layer(name, bottom, name, "SimpleLayer")
        for name, bottom in (("one", "data"), ("two", "one"), ("three", "two"))
    )
    return caffe.Net(write(python_folder, "python.prototxt", PYTHON_HEAD + body), caffe.TRAIN)


def test_python_layer_in_the_layer_type_list():
    """The skipIf of test_python_layer.py: 'Python' is a known type."""
    assert "Python" in caffe.layer_type_list()


def test_python_layers_forward(python_net):
    """TestPythonLayer.test_forward."""
    python_net.blobs["data"].data[...] = 8
    python_net.forward()
    assert (python_net.blobs["three"].data == 10**3 * 8).all()


def test_python_layers_backward(python_net):
    """TestPythonLayer.test_backward: from a diff set by hand, with force_backward."""
    python_net.blobs["three"].diff[...] = 7
    python_net.backward()
    assert (python_net.blobs["data"].diff == 10**3 * 7).all()


def test_python_layers_reshape(python_net):
    """TestPythonLayer.test_reshape: forward reshapes every blob after the input's reshape."""
    python_net.blobs["data"].reshape(4, 4, 4, 4)
    python_net.forward()
    for blob in python_net.blobs.values():
        assert blob.data.shape == (4, 4, 4, 4)


def test_python_layer_exception_in_setup_reaches_the_caller(python_folder):
    """TestPythonLayer.test_exception: the RuntimeError of the layer's setup stops caffe.Net.
    Differs: netlayers reports it as a one-line ConfigError naming the layer's file and line,
    the RuntimeError chained; and Caffe's ExceptionLayer defines setup alone, which netlayers
    refuses before setup (a Python layer must define reshape and forward), so ours has them."""
    path = write(
        python_folder, "exception.prototxt", PYTHON_HEAD + python_layer("layer", "data", "top", "ExceptionLayer")
    )
    with pytest.raises(NetlayersError, match=r"pylayers_h12\.py:\d+ .*RuntimeError") as caught:
        caffe.Net(path, caffe.TEST)
    assert isinstance(caught.value.__cause__, RuntimeError)


def test_python_layer_params_save_copy_from_and_share(python_folder, tmp_path):
    """TestPythonLayer.test_parameter: a Python layer's own blob (add_blob) gets its diff in
    backward, is saved, read back by copy_from and shared by share_with."""
    path = write(
        python_folder, "parameter.prototxt", PYTHON_HEAD + python_layer("layer", "data", "top", "ParameterLayer")
    )
    net = caffe.Net(path, caffe.TRAIN)
    net.forward()
    net.backward()
    layer = net.layers[list(net._layer_names).index("layer")]
    assert layer.blobs[0].data[0] == 0
    assert layer.blobs[0].diff[0] == 1
    layer.blobs[0].data[0] += layer.blobs[0].diff[0]
    assert layer.blobs[0].data[0] == 1

    weights = str(tmp_path / "tmpweights")  # mkstemp's name: no suffix
    net.save(weights)
    layer.blobs[0].data[0] = -1
    net.copy_from(weights)
    assert layer.blobs[0].data[0] == 1

    other = caffe.Net(path, caffe.TRAIN)
    other.share_with(net)
    assert other.layers[list(other._layer_names).index("layer")].blobs[0].data[0] == 1


def test_python_layer_phase(python_folder):
    """TestPythonLayer.test_phase: a top-only layer writing self.phase into a scalar blob."""
    text = (
        "name: 'pythonnet' force_backward: true\n"
        "layer { type: 'Python' name: 'layer' top: 'phase'\n"
        "  python_param { module: 'pylayers_h12' layer: 'PhaseLayer' } }\n"
    )
    path = write(python_folder, "phase.prototxt", text)
    for phase in (caffe.TRAIN, caffe.TEST):
        net = caffe.Net(path, phase)
        assert net.forward()["phase"] == phase


# -- test_python_layer_with_param_str.py --------------------------------------------------------
@pytest.fixture
def param_str_net(python_folder):
    body = python_layer("mul10", "data", "mul10", "SimpleParamLayer", "10") + python_layer(
        "mul2", "mul10", "mul2", "SimpleParamLayer", "2"
    )
    return caffe.Net(write(python_folder, "param_str.prototxt", PYTHON_HEAD + body), caffe.TRAIN)


def test_param_str_forward(param_str_net):
    """TestLayerWithParam.test_forward."""
    param_str_net.blobs["data"].data[...] = 8
    param_str_net.forward()
    assert (param_str_net.blobs["mul2"].data == 2 * 10 * 8).all()


def test_param_str_backward(param_str_net):
    """TestLayerWithParam.test_backward."""
    param_str_net.blobs["mul2"].diff[...] = 7
    param_str_net.backward()
    assert (param_str_net.blobs["data"].diff == 2 * 10 * 7).all()


# -- test_net_spec.py --------------------------------------------------------------------------
def lenet(batch_size):
    n = caffe.NetSpec()
    n.data, n.label = L.DummyData(
        shape=[dict(dim=[batch_size, 1, 28, 28]), dict(dim=[batch_size, 1, 1, 1])],
        transform_param=dict(scale=1.0 / 255),
        ntop=2,
    )
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20, weight_filler=dict(type="xavier"))
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.conv2 = L.Convolution(n.pool1, kernel_size=5, num_output=50, weight_filler=dict(type="xavier"))
    n.pool2 = L.Pooling(n.conv2, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.ip1 = L.InnerProduct(n.pool2, num_output=500, weight_filler=dict(type="xavier"))
    n.relu1 = L.ReLU(n.ip1, in_place=True)
    n.ip2 = L.InnerProduct(n.relu1, num_output=10, weight_filler=dict(type="xavier"))
    n.loss = L.SoftmaxWithLoss(n.ip2, n.label)
    return n.to_proto()


def anon_lenet(batch_size):
    data, label = L.DummyData(
        shape=[dict(dim=[batch_size, 1, 28, 28]), dict(dim=[batch_size, 1, 1, 1])],
        transform_param=dict(scale=1.0 / 255),
        ntop=2,
    )
    conv1 = L.Convolution(data, kernel_size=5, num_output=20, weight_filler=dict(type="xavier"))
    pool1 = L.Pooling(conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    conv2 = L.Convolution(pool1, kernel_size=5, num_output=50, weight_filler=dict(type="xavier"))
    pool2 = L.Pooling(conv2, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    ip1 = L.InnerProduct(pool2, num_output=500, weight_filler=dict(type="xavier"))
    relu1 = L.ReLU(ip1, in_place=True)
    ip2 = L.InnerProduct(relu1, num_output=10, weight_filler=dict(type="xavier"))
    return L.SoftmaxWithLoss(ip2, label).to_proto()


def load_proto(folder, proto, name="spec.prototxt"):
    return caffe.Net(write(folder, name, str(proto)), caffe.TEST)


@pytest.mark.parametrize("make", [lenet, anon_lenet])
def test_net_spec_lenet_builds_with_an_in_place_relu(tmp_path, make):
    """TestNetSpec.test_lenet: named and anonymous LeNet; layer 6 (ReLU) is in place."""
    proto = make(50)
    assert proto.layer[6].bottom == proto.layer[6].top
    net = load_proto(tmp_path, proto)
    assert len(net.layers) == 9


def test_net_spec_zero_tops(tmp_path):
    """TestNetSpec.test_zero_tops: Silence layers with ntop=0; forward returns nothing."""
    n = caffe.NetSpec()
    n.data, n.data2 = L.DummyData(shape=dict(dim=3), ntop=2)
    n.silence_data = L.Silence(n.data, ntop=0)
    n.silence_data2 = L.Silence(n.data2, ntop=0)
    net = load_proto(tmp_path, n.to_proto())
    assert len(net.forward()) == 0


def test_net_spec_type_error_for_a_tuple_input():
    """TestNetSpec.test_type_error: a tuple of tops given as one input is a TypeError."""
    data = L.DummyData(ntop=2)
    with pytest.raises(TypeError, match=r"Silence input 0 is not a Top \(type is <class 'tuple'>\)") as caught:
        L.Silence(data, ntop=0)
    assert isinstance(caught.value, NetlayersError)  # located at the calling line, unlike pycaffe
    assert caught.value.file == __file__
    L.Silence(*data, ntop=0)


# -- test_io.py --------------------------------------------------------------------------------
def test_blobproto_to_array_old_format():
    """TestBlobProtoToArray.test_old_format: num/channels/height/width."""
    blob = caffe.proto.caffe_pb2.BlobProto()
    blob.data.extend(list(np.zeros((10, 10)).flatten()))
    blob.num, blob.channels, blob.height, blob.width = (1, 1, 10, 10)
    assert caffe.io.blobproto_to_array(blob).shape == (1, 1, 10, 10)


def test_blobproto_to_array_new_format():
    """TestBlobProtoToArray.test_new_format: shape.dim."""
    blob = caffe.proto.caffe_pb2.BlobProto()
    blob.data.extend(list(np.zeros((10, 10)).flatten()))
    blob.shape.dim.extend([10, 10])
    assert caffe.io.blobproto_to_array(blob).shape == (10, 10)


def test_blobproto_to_array_without_a_shape_is_a_value_error():
    """TestBlobProtoToArray.test_no_shape."""
    blob = caffe.proto.caffe_pb2.BlobProto()
    blob.data.extend(list(np.zeros((10, 10)).flatten()))
    with pytest.raises(ValueError):
        caffe.io.blobproto_to_array(blob)


def test_blobproto_to_array_scalar():
    """TestBlobProtoToArray.test_scalar: one value, no shape, is that value."""
    blob = caffe.proto.caffe_pb2.BlobProto()
    blob.data.extend([123.0])
    assert caffe.io.blobproto_to_array(blob) == 123


def test_array_to_datum_without_a_label_is_smaller():
    """TestArrayToDatum.test_label_none_size."""
    labelled = caffe.io.array_to_datum(np.ones((10, 10, 3)), label=1)
    unlabelled = caffe.io.array_to_datum(np.ones((10, 10, 3)))
    assert len(labelled.SerializeToString()) > len(unlabelled.SerializeToString())


# -- test_layer_type_list.py -------------------------------------------------------------------
@pytest.mark.parametrize("type_name", ["Data", "Convolution", "InnerProduct"])
def test_standard_types_in_the_layer_type_list(type_name):
    """TestLayerTypeList.test_standard_types."""
    assert type_name in caffe.layer_type_list()


# -- test_draw.py ------------------------------------------------------------------------------
def test_draw_net_of_prototxt_files_and_net_specs(tmp_path):
    """TestDraw.test_draw_net: every net drawn without error. Caffe parses each prototxt of its
    models/ and examples/ into a NetParameter with google.protobuf; here prototxt files and
    NetSpec's NetParameter (caffe_pb2 has no protobuf-generated NetParameter to Merge into)."""
    sources = [
        write(tmp_path, "simple.prototxt", simple_net_text()),
        write(tmp_path, "all.prototxt", ALL_IN_ONE_NET),
        write(tmp_path, "levels.prototxt", LEVELS_NET),
        lenet(2),
    ]
    for source in sources:
        dot = caffe.draw.draw_net(source, "LR", ext="raw").decode()
        assert dot.startswith("digraph") and ("conv" in dot or "ip" in dot or "NoLevel" in dot)
    assert caffe.draw.draw_net(lenet(2), "TB").startswith(b"\x89PNG")  # the default ext, png


# -- beyond Caffe's tests: what pycaffe scripts commonly rely on -----------------------------
def test_blob_arrays_stay_the_same_objects_across_forwards(net):
    """Scripts keep ``net.blobs[k].data`` (and params) and read them after later forwards."""
    kept = {name: blob.data for name, blob in net.blobs.items()}
    weights = net.params["ip"][0].data
    net.forward()
    first = kept["ip_blob"].copy()
    net.blobs["conv"].data[...] += 1
    net.forward(start="ip")
    assert all(net.blobs[name].data is array for name, array in kept.items())
    assert net.params["ip"][0].data is weights
    assert not np.array_equal(first, kept["ip_blob"])  # the kept array holds the new values


def test_phase_constants_in_blobs_and_as_names():
    """caffe.TRAIN/TEST are 0/1 in numpy (a Python layer writes self.phase into a blob) and
    equal the names netlayers uses."""
    blob = np.zeros(3, np.float32)
    blob[...] = caffe.TEST
    assert (blob == caffe.TEST).all() and not (blob == caffe.TRAIN).any()
    assert caffe.TEST == 1 and caffe.TEST == "TEST" and caffe.TRAIN != caffe.TEST


def test_solve_resumes_from_caffes_binary_solverstate(solver_file, tmp_path):
    """Solver.restore of Caffe's own .solverstate (a SolverState message): iteration, momentum
    history and the learned_net weights; then training continues as it would have (data
    aside: DummyData's constant labels and gaussian data are drawn afresh, so compare the
    history and weights restored, then that a step runs)."""
    first = caffe.SGDSolver(solver_file)
    first.step(3)
    first.snapshot()
    os.remove(tmp_path / "model_iter_3.solverstate.npz")  # keep Caffe's file alone
    os.remove(tmp_path / "model_iter_3.weights.npz")
    resumed = caffe.SGDSolver(solver_file)
    resumed.restore("model_iter_3.solverstate")
    assert resumed.iter == 3
    for name, blobs in first.net.params.items():
        for mine, theirs in zip(resumed.net.params[name], blobs):
            np.testing.assert_array_equal(mine.data, theirs.data)
    for mine, theirs in zip(resumed.netlayers_solver.history, first.netlayers_solver.history):
        for a, b in zip(mine, theirs):
            np.testing.assert_allclose(a, b, rtol=1e-6)
    assert np.abs(resumed.netlayers_solver.history[0][0]).sum() > 0
    resumed.step(1)
    assert resumed.iter == 4


def test_caffes_solverstate_of_another_net_is_a_one_line_error(solver_file, tmp_path):
    from netlayers.caffe.solver import SolverState

    state = SolverState()
    state.iter = 2
    (tmp_path / "bad.solverstate").write_bytes(state.SerializeToString())
    solver = caffe.SGDSolver(solver_file)
    with pytest.raises(NetlayersError, match=r"bad\.solverstate: field 'history': holds 0 history blobs"):
        solver.restore("bad.solverstate")


def test_solver_lr_share_weights_and_apply_update_keep_the_iteration(solver, net_file):
    """pycaffe's SGDSolver.lr and share_weights; apply_update changes weights, not iter."""
    assert solver.lr == pytest.approx(0.01)
    other = caffe.Net(net_file, caffe.TEST)
    solver.share_weights(other)
    assert other.params["ip"][0] is solver.net.params["ip"][0]
    solver.net.forward()
    solver.net.backward()
    before = solver.net.params["ip"][0].data.copy()
    solver.apply_update()
    assert solver.iter == 0 and not np.array_equal(before, other.params["ip"][0].data)


def test_save_hdf5_uses_caffes_layout(net, tmp_path):
    """Net::ToHDF5's layout: data/<layer>/<i> (and diff/...), so Caffe's load_hdf5 reads it."""
    import h5py

    path = tmp_path / "w.h5"
    net.save_hdf5(str(path))
    with h5py.File(path, "r") as file:
        assert sorted(file["data"]) == ["conv", "ip"]
        np.testing.assert_array_equal(file["data/ip/1"][()], net.params["ip"][1].data)
        assert file["diff/conv/0"].shape == net.params["conv"][0].data.shape


def test_backward_on_a_fresh_net_runs_from_a_hand_set_diff(net):
    """As test_backward_start_end in Caffe (no forward first): netlayers' layers need their
    forward, so the backward range runs it first, keeping the diff set by hand."""
    diff = np.random.default_rng(3).standard_normal(net.blobs["ip_blob"].data.shape).astype(np.float32)
    net.blobs["ip_blob"].diff[...] = diff
    out = net.backward(start="ip", end="ip")
    np.testing.assert_array_equal(net.blobs["ip_blob"].diff, diff)
    expected = (diff @ net.params["ip"][0].data).reshape(net.blobs["conv"].data.shape)
    np.testing.assert_allclose(out["conv"], expected, rtol=1e-4, atol=1e-5)
