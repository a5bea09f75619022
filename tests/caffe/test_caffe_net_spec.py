"""netlayers.caffe.net_spec: pycaffe's NetSpec, caffe.layers and caffe.params.

The LeNet and CaffeNet functions below are BVLC's (examples/01-learning-lenet.ipynb and
examples/pycaffe/caffenet.py), changed only in the import line and the data source (IDX files
written here instead of LMDB).
"""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import yaml

import netlayers
from netlayers import caffe
from netlayers.caffe import layers as L
from netlayers.caffe import net_spec, to_proto
from netlayers.caffe import params as P
from netlayers.caffe.prototxt import parse_prototxt, to_netlayers
from netlayers.errors import ConfigError
from netlayers.netspec import load_net_spec, phase_layers

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).name


# -- BVLC's functions -------------------------------------------------------------------------


# fmt: off
def lenet(lmdb, batch_size):
    # our version of LeNet: a series of linear and simple nonlinear transformations
    n = caffe.NetSpec()

    n.data, n.label = L.Data(batch_size=batch_size, backend=P.Data.IDX, source=lmdb,
                             transform_param=dict(scale=1./255), ntop=2)

    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20, weight_filler=dict(type='xavier'))
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.conv2 = L.Convolution(n.pool1, kernel_size=5, num_output=50, weight_filler=dict(type='xavier'))
    n.pool2 = L.Pooling(n.conv2, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.fc1 =   L.InnerProduct(n.pool2, num_output=500, weight_filler=dict(type='xavier'))
    n.relu1 = L.ReLU(n.fc1, in_place=True)
    n.score = L.InnerProduct(n.relu1, num_output=10, weight_filler=dict(type='xavier'))
    n.loss =  L.SoftmaxWithLoss(n.score, n.label)

    return n.to_proto()


def conv_relu(bottom, ks, nout, stride=1, pad=0, group=1):
    conv = L.Convolution(bottom, kernel_size=ks, stride=stride,
                                num_output=nout, pad=pad, group=group)
    return conv, L.ReLU(conv, in_place=True)


def fc_relu(bottom, nout):
    fc = L.InnerProduct(bottom, num_output=nout)
    return fc, L.ReLU(fc, in_place=True)


def max_pool(bottom, ks, stride=1):
    return L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=ks, stride=stride)


def caffenet(lmdb, batch_size=256, include_acc=False):
    data, label = L.Data(source=lmdb, backend=P.Data.IDX, batch_size=batch_size, ntop=2,
        transform_param=dict(crop_size=227, mean_value=[104, 117, 123], mirror=True))

    # the net itself
    conv1, relu1 = conv_relu(data, 11, 96, stride=4)
    pool1 = max_pool(relu1, 3, stride=2)
    norm1 = L.LRN(pool1, local_size=5, alpha=1e-4, beta=0.75)
    conv2, relu2 = conv_relu(norm1, 5, 256, pad=2, group=2)
    pool2 = max_pool(relu2, 3, stride=2)
    norm2 = L.LRN(pool2, local_size=5, alpha=1e-4, beta=0.75)
    conv3, relu3 = conv_relu(norm2, 3, 384, pad=1)
    conv4, relu4 = conv_relu(relu3, 3, 384, pad=1, group=2)
    conv5, relu5 = conv_relu(relu4, 3, 256, pad=1, group=2)
    pool5 = max_pool(relu5, 3, stride=2)
    fc6, relu6 = fc_relu(pool5, 4096)
    drop6 = L.Dropout(relu6, in_place=True)
    fc7, relu7 = fc_relu(drop6, 4096)
    drop7 = L.Dropout(relu7, in_place=True)
    fc8 = L.InnerProduct(drop7, num_output=1000)
    loss = L.SoftmaxWithLoss(fc8, label)

    if include_acc:
        acc = L.Accuracy(fc8, label)
        return to_proto(loss, acc)
    else:
        return to_proto(loss)

# fmt: on


# -- data -------------------------------------------------------------------------------------


def idx_bytes(array):
    array = np.asarray(array, dtype=np.uint8)
    return bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx_set(folder, images, labels):
    """``<folder>/train-{images-idx3,labels-idx1}-ubyte.gz``; returns the source ``<folder>/train``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    return str(folder / "train")


def layer_summary(layer):
    return (
        layer.name,
        layer.type,
        layer.bottoms,
        layer.tops,
        layer.params,
        layer.loss_weights,
        layer.propagate_down,
        layer.include,
        layer.exclude,
        layer.blocks,
    )


# -- LeNet --------------------------------------------------------------------------------------

# What pycaffe writes for lenet('mnist/mnist_train_lmdb', 64), as BVLC's notebook shows it,
# with this file's data source and backend IDX; the scale is written to full double precision
# here (pycaffe's Python 2 printed 12 digits).
PYCAFFE_LENET = """\
layer {
  name: "data"
  type: "Data"
  top: "data"
  top: "label"
  transform_param {
    scale: 0.00392156862745098
  }
  data_param {
    source: "SOURCE"
    batch_size: 64
    backend: IDX
  }
}
layer {
  name: "conv1"
  type: "Convolution"
  bottom: "data"
  top: "conv1"
  convolution_param {
    num_output: 20
    kernel_size: 5
    weight_filler {
      type: "xavier"
    }
  }
}
layer {
  name: "pool1"
  type: "Pooling"
  bottom: "conv1"
  top: "pool1"
  pooling_param {
    pool: MAX
    kernel_size: 2
    stride: 2
  }
}
layer {
  name: "conv2"
  type: "Convolution"
  bottom: "pool1"
  top: "conv2"
  convolution_param {
    num_output: 50
    kernel_size: 5
    weight_filler {
      type: "xavier"
    }
  }
}
layer {
  name: "pool2"
  type: "Pooling"
  bottom: "conv2"
  top: "pool2"
  pooling_param {
    pool: MAX
    kernel_size: 2
    stride: 2
  }
}
layer {
  name: "fc1"
  type: "InnerProduct"
  bottom: "pool2"
  top: "fc1"
  inner_product_param {
    num_output: 500
    weight_filler {
      type: "xavier"
    }
  }
}
layer {
  name: "relu1"
  type: "ReLU"
  bottom: "fc1"
  top: "fc1"
}
layer {
  name: "score"
  type: "InnerProduct"
  bottom: "fc1"
  top: "score"
  inner_product_param {
    num_output: 10
    weight_filler {
      type: "xavier"
    }
  }
}
layer {
  name: "loss"
  type: "SoftmaxWithLoss"
  bottom: "score"
  bottom: "label"
  top: "loss"
}
"""


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory):
    """Eight 28x28 images with labels 0..7, as IDX files."""
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("tiny-mnist")
    return write_idx_set(folder, rng.integers(0, 256, (8, 28, 28)), np.arange(8))


def test_lenet_writes_the_prototxt_pycaffe_writes(tiny_mnist):
    assert str(lenet(tiny_mnist, 64)) == PYCAFFE_LENET.replace("SOURCE", tiny_mnist)


def test_lenet_as_written_builds_trains_and_has_the_right_shapes(tiny_mnist, tmp_path):
    path = tmp_path / "lenet_auto_train.prototxt"
    with open(path, "w") as f:
        f.write(str(lenet(tiny_mnist, 64)))
    net = netlayers.Net(to_netlayers(parse_prototxt(path.read_text())), seed=1)
    shapes = {name: blob.data.shape for name, blob in net.blobs.items()}
    assert shapes["data"] == (64, 1, 28, 28) and shapes["conv1"] == (64, 20, 24, 24)
    assert shapes["pool2"] == (64, 50, 4, 4) and shapes["fc1"] == (64, 500) and shapes["score"] == (64, 10)
    assert [p.data.shape for p in net.params["fc1"]] == [(500, 800), (500,)]
    loss = net.forward()["loss"]
    assert np.isfinite(loss) and loss > 0
    assert netlayers.Net(lenet(tiny_mnist, 64)).blobs.keys() == net.blobs.keys()  # the proto itself builds too


def config_lenet(source, batch_size, phase):
    """configs/lenet_fashion_mnist.yaml's net for one phase, written with NetSpec."""
    n = caffe.NetSpec()
    learned = [dict(lr_mult=1), dict(lr_mult=2)]
    fillers = dict(weight_filler=dict(type="xavier"), bias_filler=dict(type="constant"))
    n.data, n.label = L.Data(
        name="mnist",
        include=dict(phase=phase),
        transform_param=dict(scale=0.00390625),
        source=source,
        backend=P.Data.IDX,
        batch_size=batch_size,
        ntop=2,
    )
    n.conv1 = L.Convolution(n.data, param=learned, num_output=20, kernel_size=5, stride=1, **fillers)
    n.pool1 = L.Pooling(n.conv1, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.conv2 = L.Convolution(n.pool1, param=learned, num_output=50, kernel_size=5, stride=1, **fillers)
    n.pool2 = L.Pooling(n.conv2, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.ip1 = L.InnerProduct(n.pool2, param=learned, num_output=500, **fillers)
    n.relu1 = L.ReLU(n.ip1, in_place=True)
    n.ip2 = L.InnerProduct(n.relu1, param=learned, num_output=10, **fillers)
    if phase == caffe.TEST:
        n.accuracy = L.Accuracy(n.ip2, n.label, include=dict(phase=caffe.TEST))
    n.loss = L.SoftmaxWithLoss(n.ip2, n.label)
    return n.to_proto()


def test_netspec_lenet_equals_the_hand_written_config_layer_for_layer():
    """As Caffe's lenet_train_test.prototxt was made: the TRAIN net's data layer, then the TEST
    net. The result is configs/lenet_fashion_mnist.yaml, every layer and field, in text too."""
    train = config_lenet("fashion-mnist/train", 64, caffe.TRAIN)
    test = config_lenet("fashion-mnist/test", 100, caffe.TEST)
    merged = net_spec.NetParameter(name="LeNet_FashionMNIST", layers=train.layer[:1] + test.layer)
    config = load_net_spec(ROOT / "configs" / "lenet_fashion_mnist.yaml")
    expected = [layer_summary(layer) for layer in config.layers]
    assert [layer_summary(layer) for layer in load_net_spec(merged).layers] == expected
    from_text = load_net_spec(to_netlayers(parse_prototxt(str(merged))))
    assert [layer_summary(layer) for layer in from_text.layers] == expected
    for phase in ("TRAIN", "TEST"):
        assert [l.name for l in phase_layers(from_text, phase)] == [l.name for l in phase_layers(config, phase)]


# -- CaffeNet -----------------------------------------------------------------------------------


def test_caffenet_names_its_layers_as_pycaffe_does():
    proto = caffenet("train", batch_size=50, include_acc=True)
    names = [(layer["name"], layer["type"], layer.get("bottom"), layer.get("top")) for layer in proto.layer]
    assert names[:4] == [
        ("Data1", "Data", None, ["Data1", "Data2"]),
        ("Convolution1", "Convolution", "Data1", "Convolution1"),
        ("ReLU1", "ReLU", "Convolution1", "Convolution1"),  # in place: its top is its bottom
        ("Pooling1", "Pooling", "Convolution1", "Pooling1"),
    ]
    assert names[-3:] == [
        ("InnerProduct3", "InnerProduct", "InnerProduct2", "InnerProduct3"),
        ("SoftmaxWithLoss1", "SoftmaxWithLoss", ["InnerProduct3", "Data2"], "SoftmaxWithLoss1"),
        ("Accuracy1", "Accuracy", ["InnerProduct3", "Data2"], "Accuracy1"),
    ]
    assert len(proto.layer) == 25  # each layer once, though two tops need them
    text = str(proto)
    assert "    num_output: 256\n    pad: 2\n    kernel_size: 5\n    stride: 1\n    group: 2\n" in text
    assert (
        "    mirror: true\n    crop_size: 227\n    mean_value: 104\n    mean_value: 117\n    mean_value: 123\n" in text
    )
    assert "  lrn_param {\n    local_size: 5\n    alpha: 0.0001\n    beta: 0.75\n  }\n" in text


def test_caffenet_builds_with_the_right_shapes(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (2, 3, 230, 230))
    source = write_idx_set(tmp_path / "tiny-imagenet", images, [3, 7])
    net = netlayers.Net(caffenet(source, batch_size=1, include_acc=True), phase="TEST")
    shapes = {name: blob.data.shape for name, blob in net.blobs.items()}
    assert shapes["Data1"] == (1, 3, 227, 227) and shapes["Convolution1"] == (1, 96, 55, 55)
    assert shapes["Pooling3"] == (1, 256, 6, 6) and shapes["InnerProduct3"] == (1, 1000)
    assert [p.data.shape for p in net.params["Convolution2"]] == [(256, 48, 5, 5), (256,)]  # group 2
    assert [p.data.shape for p in net.params["InnerProduct1"]] == [(4096, 9216), (4096,)]


# -- keyword routing --------------------------------------------------------------------------


def test_keywords_go_to_the_own_block_the_layer_or_the_named_block():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 3, 4, 4]))
    n.up = L.Deconvolution(
        n.data,
        num_output=2,
        kernel_size=2,
        stride=2,
        engine=P.Convolution.CAFFE,
        param=[dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)],
        loss_weight=0,
        propagate_down=[True],
        name="deconv",
        weight_filler=dict(type="gaussian", std=0.01, variance_norm=P.Filler.FAN_OUT),
    )
    n.loss = L.SoftmaxWithLoss(
        n.up,
        L.DummyData(shape=dict(dim=[2, 8, 8])),
        loss_param=dict(ignore_label=1, normalization=P.Loss.VALID),
        softmax_param=dict(axis=1),
        include=dict(phase=caffe.TRAIN),
    )
    layers = {layer["name"]: layer for layer in n.to_proto().layer}
    up = layers["deconv"]
    assert up["top"] == "up" and up["loss_weight"] == [0] and up["propagate_down"] == [True]
    assert up["param"] == [{"lr_mult": 1, "decay_mult": 1}, {"lr_mult": 2, "decay_mult": 0}]
    assert up["convolution_param"] == {
        "num_output": 2,
        "kernel_size": [2],
        "stride": [2],
        "engine": "CAFFE",
        "weight_filler": {"type": "gaussian", "std": 0.01, "variance_norm": "FAN_OUT"},
    }
    loss = layers["loss"]
    assert loss["loss_param"] == {"ignore_label": 1, "normalization": "VALID"}
    assert loss["softmax_param"] == {"axis": 1} and loss["include"] == [{"phase": "TRAIN"}]
    assert loss["bottom"] == ["up", "DummyData1"]
    net = netlayers.Net(n.to_proto())
    assert net.blobs["up"].data.shape == (2, 2, 8, 8)


def test_enum_numbers_and_names_in_any_case_become_names():
    n = caffe.NetSpec()
    n.data = L.Input(shape=[dict(dim=[1, 2, 4, 4])])
    n.a = L.Pooling(n.data, pool=1, kernel_size=2)  # pycaffe takes Caffe's numbers: 1 is AVE
    n.b = L.Eltwise(n.a, n.a, operation=0)  # PROD
    n.c = L.LRN(n.b, norm_region="within_channel", local_size=3)
    n.d = L.Reduction(n.c, operation=P.Reduction.SUMSQ)
    n.e = L.Data(source="s", batch_size=1, backend=np.int64(1), include=[dict(phase=1)])  # LMDB, TEST
    layers = {layer["name"]: layer for layer in n.to_proto().layer}
    assert layers["a"]["pooling_param"]["pool"] == "AVE" and layers["b"]["eltwise_param"]["operation"] == "PROD"
    assert layers["c"]["lrn_param"]["norm_region"] == "WITHIN_CHANNEL"
    assert layers["d"]["reduction_param"]["operation"] == "SUMSQ"
    assert layers["e"]["data_param"]["backend"] == "LMDB" and layers["e"]["include"] == [{"phase": "TEST"}]
    assert "  pooling_param {\n    pool: AVE\n" in str(n.to_proto())


def test_params_constants_are_caffe_numbers_that_know_their_names():
    assert (P.Pooling.MAX, P.Pooling.AVE, P.Pooling.CEIL, P.Pooling.FLOOR) == (0, 1, 0, 1)
    assert (P.Data.LEVELDB, P.Data.LMDB) == (0, 1) and P.Data.IDX not in (0, 1) and P.Data.NPZ not in (0, 1)
    assert (P.Eltwise.PROD, P.Eltwise.SUM, P.Eltwise.MAX) == (0, 1, 2)
    assert (P.LRN.ACROSS_CHANNELS, P.LRN.WITHIN_CHANNEL, P.Loss.VALID, P.Reduction.MEAN) == (0, 1, 1, 4)
    assert str(P.Pooling.STOCHASTIC) == "STOCHASTIC" and repr(P.Data.IDX) == "P.Data.IDX"
    assert not hasattr(P.Pooling, "MIN") and not hasattr(P, "Poolng")


def test_ntop_zero_several_tops_and_automatic_names():
    n = caffe.NetSpec()
    n.data = L.DummyData(shape=dict(dim=[2, 6]), ntop=1)
    first, second, third = L.Slice(n.data, slice_point=[1, 3], axis=1, ntop=3)
    n.kept = L.ReLU(second, in_place=True)
    silence = L.Silence(first, third, ntop=0)
    assert isinstance(silence, net_spec.Function) and silence.tops == ()
    n.silence = silence
    proto = n.to_proto()
    names = [(layer["name"], layer.get("bottom"), layer.get("top")) for layer in proto.layer]
    assert names == [
        ("data", None, "data"),
        ("Slice1", "data", ["Slice1", "Slice2", "Slice3"]),
        ("kept", "Slice2", "Slice2"),  # in place: named after its top, writing its bottom
        ("silence", ["Slice1", "Slice3"], None),
    ]
    netlayers.Net(proto)


def test_extra_bottom_and_top_names_and_to_proto_of_one_top():
    top = L.Concat(L.Input(shape=dict(dim=[1, 2])), bottom=["extra"], axis=1)
    proto = top.to_proto()
    assert proto.layer[-1]["bottom"] == ["Input1", "extra"] and proto.layer[-1]["concat_param"] == {"axis": 1}


# -- the proto object -------------------------------------------------------------------------


def test_to_proto_gives_yaml_and_a_dict_netlayers_builds(tiny_mnist):
    proto = lenet(tiny_mnist, 8)
    proto.name = "LeNet"
    assert proto.name == "LeNet" and proto["name"] == "LeNet" and proto.layer is proto["layers"]
    assert str(proto).startswith('name: "LeNet"\nlayer {\n')
    from_yaml = yaml.safe_load(proto.to_yaml())
    assert list(from_yaml)[0] == "name" and from_yaml == dict(proto)
    assert netlayers.Net(from_yaml).blobs["score"].data.shape == (8, 10)
    assert not hasattr(proto, "input_shape")


# -- mistakes -----------------------------------------------------------------------------------


def one_line_error(call):
    with pytest.raises(ConfigError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{__file__}:")
    return message


def test_an_unknown_keyword_names_the_type_the_field_and_close_matches():
    data = L.Input(shape=dict(dim=[1, 2]))
    message = one_line_error(lambda: L.InnerProduct(data, num_ouput=3))
    assert "L.InnerProduct: unknown field 'num_ouput' (did you mean 'num_output'?)" in message
    assert "takes: " in message and "weight_filler" in message


def test_a_field_of_another_block_says_which_block():
    data = L.Input(shape=dict(dim=[1, 2]))
    message = one_line_error(lambda: L.SoftmaxWithLoss(data, data, ignore_label=0))
    assert "field 'ignore_label' belongs to loss_param: write loss_param=dict(ignore_label=...)" in message


def test_other_mistakes_are_one_line_errors_at_the_callers_line():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 2]))
    assert "unknown layer type 'Convolutoin'; did you mean 'Convolution'" in one_line_error(
        lambda: L.Convolutoin(n.data)
    )
    assert "bottom 0 is a str" in one_line_error(lambda: L.ReLU("data"))
    assert "NetSpec has no top 'dta' (did you mean 'data'?)" in one_line_error(lambda: n.dta)
    assert "P.Pooling has no value 'MAXX' (did you mean 'MAX'?)" in one_line_error(lambda: P.Pooling.MAXX)
    assert "assign the top of a layer" in one_line_error(lambda: setattr(n, "x", 3))
    assert "ntop must be" in one_line_error(lambda: L.ReLU(n.data, ntop=-1))
    assert "convolution_param takes a dict" in one_line_error(lambda: L.Convolution(n.data, convolution_param=3))


def test_caffe_package_exposes_the_net_spec_names():
    assert caffe.layers is net_spec.layers and caffe.params is net_spec.params
    assert caffe.NetSpec is net_spec.NetSpec and caffe.to_proto is net_spec.to_proto
