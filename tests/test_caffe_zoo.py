"""Caffe's real nets, from their original files (tests/fixtures/zoo/, origins in its README).

Deploy nets are built at batch 1 with random weights and run forward and backward; their output
shapes and parameter counts are the published ones. Train nets train a few iterations through
their own solver files on tiny LMDB, LevelDB, HDF5 or image-list data written here, laid out as
in a Caffe checkout (``examples/...``, ``models/...``, ``data/ilsvrc12/...``) in a temporary
folder that the test runs from, so the files' relative paths resolve as Caffe resolves them.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest

import netlayers
from netlayers.caffe.proto.caffe_pb2 import BlobProto, Datum
from netlayers.netspec.spec import load_net_spec
from netlayers.solvers import Solver

ZOO = Path(__file__).resolve().parent / "fixtures" / "zoo"
MODELS = ("bvlc_alexnet", "bvlc_googlenet", "bvlc_reference_caffenet", "finetune_flickr_style")


# -- a Caffe checkout in a temporary folder ------------------------------------------------------


def caffe_root(tmp_path, monkeypatch, *folders):
    """Copy the fixture folders where a Caffe checkout has them and run from its root."""
    for folder in folders:
        where = "models" if folder in MODELS else "examples"
        shutil.copytree(ZOO / folder, tmp_path / where / folder)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_datum_db(path, shape, count, backend="LMDB", seed=0):
    """``count`` random uint8 images of ``shape`` (C, H, W) with labels 0..9, one serialized Datum
    a record, keyed as Caffe's convert_imageset keys them (``%08d_<file name>``)."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(count):
        datum = Datum(channels=shape[0], height=shape[1], width=shape[2], label=i % 10)
        datum.data = rng.integers(0, 256, shape, dtype=np.uint8).tobytes()
        records.append((f"{i:08d}_image{i}.png".encode(), datum.SerializeToString()))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if backend == "LMDB":
        import lmdb

        env = lmdb.open(str(path), map_size=1 << 28)
        with env.begin(write=True) as txn:
            for key, value in records:
                txn.put(key, value)
        env.close()
    else:
        import plyvel

        db = plyvel.DB(str(path), create_if_missing=True)
        for key, value in records:
            db.put(key, value)
        db.close()


def write_mean_file(path, shape):
    """A mean image as Caffe's compute_image_mean writes it (a BlobProto with num 1)."""
    blob = BlobProto(num=1, channels=shape[0], height=shape[1], width=shape[2])
    blob.data.extend(np.full(int(np.prod(shape)), 120.0, dtype=np.float32).tolist())
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(blob.SerializeToString())


def count_learned(net):
    """Learned parameters (BatchNorm's running statistics are not learned)."""
    return sum(
        blob.data.size
        for layer, name in zip(net.layers, net.layer_names)
        if layer.type != "BatchNorm"
        for blob in net.params.get(name, [])
    )


def fill_randomly(net, rng):
    """Weights uniform of variance 1 / fan-in, zero biases, BatchNorm statistics of a unit normal, Scale 1 and 0:
    deploy files carry no fillers (their weights come from a .caffemodel)."""
    for layer, name in zip(net.layers, net.layer_names):
        blobs = net.params.get(name, [])
        if layer.type == "BatchNorm":
            for blob, value in zip(blobs, (0.0, 1.0, 1.0)):
                blob.data[...] = value
            continue
        for index, blob in enumerate(blobs):
            if blob.data.ndim >= 2 and layer.type != "Scale":
                fan_in = int(np.prod(blob.data.shape[1:]))
                rng.random(out=blob.data, dtype=blob.data.dtype)  # uniform: cheaper than normal at 61M
                blob.data -= 0.5
                blob.data *= np.sqrt(12.0 / fan_in)  # variance 1 / fan_in
            else:
                blob.data[...] = 1.0 if (layer.type == "Scale" and index == 0) else 0.0


# -- deploy nets ---------------------------------------------------------------------------------

# (file, classes, learned parameters in millions as published, to the digits given; R-CNN's and
# Flickr style's are CaffeNet's with fc8 replaced by 4096 x 200 and 4096 x 20, LeNet's and
# CIFAR-10's as their layers add up)
DEPLOY = [
    ("bvlc_alexnet/deploy.prototxt", 1000, "61.0"),
    ("bvlc_reference_caffenet/deploy.prototxt", 1000, "61.0"),
    ("bvlc_googlenet/deploy.prototxt", 1000, "7.0"),
    ("bvlc_reference_rcnn_ilsvrc13/deploy.prototxt", 200, "57.7"),
    ("finetune_flickr_style/deploy.prototxt", 20, "57.0"),
    ("resnet/ResNet-50-deploy.prototxt", 1000, "25.6"),
    ("squeezenet_v1.0/deploy.prototxt", 1000, "1.25"),
    ("squeezenet_v1.1/deploy.prototxt", 1000, "1.24"),
    ("mobilenet/mobilenet_deploy.prototxt", 1000, "4.2"),
    ("mobilenet/mobilenet_v2_deploy.prototxt", 1000, "3.5"),
    ("cifar10/cifar10_quick.prototxt", 10, "0.146"),
    ("cifar10/cifar10_full.prototxt", 10, "0.0896"),
    ("mnist/lenet.prototxt", 10, "0.431"),
    ("siamese/mnist_siamese.prototxt", 2, "0.431"),
]


@pytest.mark.parametrize("file, classes, millions", DEPLOY, ids=[f for f, _, _ in DEPLOY])
def test_deploy_net_runs_forward_and_backward_at_batch_1(file, classes, millions):
    """The file as it is, its input's batch set to 1 and force_backward set on the loaded spec:
    the output has the model's classes (a distribution where the net ends in Softmax), the
    learned parameter count rounds to the published figure, and a gradient set on the top class
    reaches the input, finite and not zero."""
    spec = load_net_spec(ZOO / file)
    spec.force_backward = True
    net = netlayers.Net(spec, phase="TEST", seed=1)
    decimals = len(millions.partition(".")[2])
    assert f"{count_learned(net) / 1e6:.{decimals}f}" == millions
    (data,) = net.inputs
    net.blobs[data].reshape(1, *net.blobs[data].shape[1:])
    net.reshape()
    rng = np.random.default_rng(0)
    fill_randomly(net, rng)
    (output,) = net.outputs
    scores = net.forward(**{data: rng.standard_normal(net.blobs[data].shape)})[output]
    assert scores.reshape(1, -1).shape == (1, classes)
    if net.layers[-1].type == "Softmax":
        assert scores.sum() == pytest.approx(1.0, rel=1e-4)
    top = net.blobs[output]
    top.diff[...] = 0
    top.diff.reshape(-1)[int(np.argmax(scores))] = 1.0
    net.backward()
    gradient = net.blobs[data].diff
    assert np.isfinite(gradient).all() and np.abs(gradient).max() > 0


def test_resnet_101_builds_with_the_published_parameter_count():
    """ResNet-101's deploy file (the blocks of ResNet-50's, run above) built as it is: 1000
    classes, 44.5M learned parameters as published."""
    net = netlayers.Net(ZOO / "resnet/ResNet-101-deploy.prototxt", phase="TEST")
    assert f"{count_learned(net) / 1e6:.1f}" == "44.5"
    assert net.blobs[net.outputs[0]].shape == (1, 1000)


def test_batchnorm_out_of_place_before_scale_and_relu_in_place_passes_its_gradient(monkeypatch):
    """MobileNet v2's block (BatchNorm writing a blob of its own, Scale and ReLU in place on it):
    the input gradient equals the one of the three layers run unfused (the fused backward wrote
    BatchNorm's bottom gradient into its top's diff, and the input's gradient was zero)."""
    layers = [
        {"name": "input", "type": "Input", "top": "data", "input_param": {"shape": [{"dim": [2, 3, 4, 4]}]}},
        {
            "name": "conv",
            "type": "Convolution",
            "bottom": "data",
            "top": "conv",
            "convolution_param": {"num_output": 3, "kernel_size": 1, "weight_filler": {"type": "gaussian"}},
        },
        {"name": "bn", "type": "BatchNorm", "bottom": "conv", "top": "bn"},
        {"name": "scale", "type": "Scale", "bottom": "bn", "top": "bn", "scale_param": {"bias_term": True}},
        {"name": "relu", "type": "ReLU", "bottom": "bn", "top": "bn"},
        {
            "name": "ip",
            "type": "InnerProduct",
            "bottom": "bn",
            "top": "out",
            "inner_product_param": {"num_output": 2, "weight_filler": {"type": "gaussian"}},
        },
        {"name": "loss", "type": "EuclideanLoss", "bottom": ["out", "target"], "top": "loss"},
    ]
    layers[0]["top"] = ["data", "target"]
    layers[0]["input_param"]["shape"].append({"dim": [2, 2]})
    rng = np.random.default_rng(3)
    feed = {"data": rng.standard_normal((2, 3, 4, 4)), "target": rng.standard_normal((2, 2))}

    def input_gradient():
        net = netlayers.Net({"name": "block", "layers": layers, "force_backward": True}, seed=5)
        net.forward(**feed)
        net.backward()
        return net.blobs["data"].diff.copy()

    fused = input_gradient()
    monkeypatch.setattr(netlayers.net, "find_chain", lambda *args: None)
    unfused = input_gradient()
    assert np.abs(unfused).max() > 0
    np.testing.assert_allclose(fused, unfused, rtol=1e-5, atol=1e-7)


# -- train nets, through their solver files -------------------------------------------------------


def train_a_few(solver_file, iterations=2, test_batch=True):
    """The solver file as it is, ``iterations`` steps without the initial test (the files test
    100 batches first), then one TEST batch unless ``test_batch`` is False. Returns the solver."""
    solver = Solver(solver_file, output_dir="run", max_iter=iterations, seed=1)
    solver.param.test_initialization = False
    before = [param.blob.data.copy() for param in solver.net.learnable_params]
    solver.step(iterations)
    assert solver.iter == iterations and np.isfinite(solver.smoothed_loss)
    after = [param.blob.data for param in solver.net.learnable_params]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))
    if test_batch:
        outputs = solver.test_net.forward()
        assert outputs and all(np.isfinite(value).all() for value in outputs.values())
    return solver


LENET_SOLVERS = [
    ("lenet_solver.prototxt", "SGD"),
    ("lenet_multistep_solver.prototxt", "SGD"),
    ("lenet_solver_adam.prototxt", "Adam"),
    ("lenet_solver_rmsprop.prototxt", "RMSProp"),
    ("lenet_adadelta_solver.prototxt", "AdaDelta"),
]


@pytest.mark.parametrize("solver_file, rule", LENET_SOLVERS, ids=[name for name, _ in LENET_SOLVERS])
def test_mnist_lenet_trains_through_each_of_its_solver_files(tmp_path, monkeypatch, solver_file, rule):
    """examples/mnist's LeNet on LMDBs of 28 x 28 grey images, through each of its solver files
    (each names its update rule as Caffe's files do: type, or solver_type in the old ones)."""
    caffe_root(tmp_path, monkeypatch, "mnist")
    write_datum_db("examples/mnist/mnist_train_lmdb", (1, 28, 28), 70)
    write_datum_db("examples/mnist/mnist_test_lmdb", (1, 28, 28), 30, seed=1)
    solver = train_a_few(f"examples/mnist/{solver_file}")
    assert solver.param.type == rule
    assert solver.net.blobs["data"].shape == (64, 1, 28, 28)


CIFAR_SOLVERS = [
    "cifar10_quick_solver.prototxt",
    "cifar10_full_solver.prototxt",
    "cifar10_full_sigmoid_solver.prototxt",
    "cifar10_full_sigmoid_solver_bn.prototxt",
]


@pytest.mark.parametrize("solver_file", CIFAR_SOLVERS)
def test_cifar10_trains_through_its_solver_files(tmp_path, monkeypatch, solver_file):
    """examples/cifar10's nets on LMDBs of 32 x 32 colour images with their mean.binaryproto
    (the sigmoid nets' batch of 111 and TEST batch of 1000 as the files give them)."""
    caffe_root(tmp_path, monkeypatch, "cifar10")
    write_datum_db("examples/cifar10/cifar10_train_lmdb", (3, 32, 32), 40)
    write_datum_db("examples/cifar10/cifar10_test_lmdb", (3, 32, 32), 20, seed=1)
    write_mean_file("examples/cifar10/mean.binaryproto", (3, 32, 32))
    # the sigmoid nets' TEST batch of 1000 takes seconds: those are built, not run
    solver = train_a_few(f"examples/cifar10/{solver_file}", test_batch="sigmoid" not in solver_file)
    assert solver.net.outputs == ["loss"]


def test_mnist_siamese_trains_from_a_leveldb_of_pairs(tmp_path, monkeypatch):
    """examples/siamese: pairs of digits as 2-channel images in a LevelDB (the file's default
    backend), sliced in two, two LeNets sharing their params by name, ContrastiveLoss."""
    caffe_root(tmp_path, monkeypatch, "siamese")
    write_datum_db("examples/siamese/mnist_siamese_train_leveldb", (2, 28, 28), 70, backend="LEVELDB")
    write_datum_db("examples/siamese/mnist_siamese_test_leveldb", (2, 28, 28), 30, backend="LEVELDB", seed=1)
    solver = train_a_few("examples/siamese/mnist_siamese_solver.prototxt")
    assert solver.net.params["conv1"][0] is solver.net.params["conv1_p"][0]


def test_mnist_autoencoder_selects_its_test_data_by_stage(tmp_path, monkeypatch):
    """examples/mnist/mnist_autoencoder.prototxt: three layers named 'data' (TRAIN, and TEST by
    stage 'test-on-train' / 'test-on-test') and two named 'loss'. The TRAIN net trains a few
    steps (forward, backward, a plain gradient step); each TEST stage reads its own database."""
    caffe_root(tmp_path, monkeypatch, "mnist")
    write_datum_db("examples/mnist/mnist_train_lmdb", (1, 28, 28), 100)
    write_datum_db("examples/mnist/mnist_test_lmdb", (1, 28, 28), 100, seed=1)
    net = netlayers.Net("examples/mnist/mnist_autoencoder.prototxt", phase="TRAIN", seed=1)
    losses = []
    for _ in range(3):
        net.clear_param_diffs()
        losses.append(net.forward_backward())
        for param in net.learnable_params:
            param.blob.data -= 0.01 * param.blob.diff
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    first_images = {}
    for stage in ("test-on-train", "test-on-test"):
        test_net = netlayers.Net("examples/mnist/mnist_autoencoder.prototxt", phase="TEST", stages=[stage])
        assert test_net.layer_names.count("loss") == 2
        test_net.forward()
        first_images[stage] = test_net.blobs["data"].data[0].copy()
    assert not np.array_equal(first_images["test-on-train"], first_images["test-on-test"])


AUTOENCODER_SOLVERS = [
    "mnist_autoencoder_solver.prototxt",
    "mnist_autoencoder_solver_adagrad.prototxt",
    "mnist_autoencoder_solver_adadelta.prototxt",
    "mnist_autoencoder_solver_nesterov.prototxt",
]


@pytest.mark.parametrize("solver_file", AUTOENCODER_SOLVERS)
def test_mnist_autoencoder_trains_through_its_solver_files_with_two_test_nets(tmp_path, monkeypatch, solver_file):
    """Each solver file asks for two TEST nets of the same net, told apart by test_state's
    stage (test-on-train, test-on-test), as Caffe's InitTestNets makes them."""
    caffe_root(tmp_path, monkeypatch, "mnist")
    write_datum_db("examples/mnist/mnist_train_lmdb", (1, 28, 28), 100)
    write_datum_db("examples/mnist/mnist_test_lmdb", (1, 28, 28), 100, seed=1)
    solver = train_a_few(f"examples/mnist/{solver_file}")
    assert len(solver.test_nets) == 2 and solver.param.test_iter == [500, 100]
    first = [net.forward() and net.blobs["data"].data[0].copy() for net in solver.test_nets]
    assert not np.array_equal(*first)  # each stage reads its own database
    assert all(net.layer_names.count("loss") == 2 for net in solver.test_nets)


def test_lenet_consolidated_solver_holds_its_net_and_two_test_stages(tmp_path, monkeypatch):
    caffe_root(tmp_path, monkeypatch, "mnist")
    write_datum_db("examples/mnist/mnist_train_lmdb", (1, 28, 28), 100)
    write_datum_db("examples/mnist/mnist_test_lmdb", (1, 28, 28), 100, seed=1)
    solver = train_a_few("examples/mnist/lenet_consolidated_solver.prototxt")
    assert len(solver.test_nets) == 2


@pytest.mark.parametrize(
    "net_file", ["train_val.prototxt", "nonlinear_train_val.prototxt", "nonlinear_auto_train.prototxt"]
)
def test_hdf5_classification_trains_from_hdf5_files(tmp_path, monkeypatch, net_file):
    """examples/hdf5_classification's nets on HDF5 files listed in data/train.txt and
    data/test.txt, as the example's notebook writes them (data (N, 4), label (N,)); the solver
    file is the notebook's (written here, as the example writes it, naming the original net)."""
    import h5py

    caffe_root(tmp_path, monkeypatch, "hdf5_classification")
    folder = Path("examples/hdf5_classification/data")
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        with h5py.File(folder / f"{split}.h5", "w") as h5:
            h5["data"] = rng.standard_normal((30, 4)).astype(np.float32)
            h5["label"] = rng.integers(0, 2, 30).astype(np.float32)
        (folder / f"{split}.txt").write_text(f"{folder / split}.h5\n")
    solver_text = (
        f'net: "examples/hdf5_classification/{net_file}"\ntest_iter: 3\ntest_interval: 1000\n'
        'base_lr: 0.01\nlr_policy: "step"\ngamma: 0.1\nstepsize: 5000\nmax_iter: 10000\n'
        'momentum: 0.9\nweight_decay: 0.0005\nsnapshot_prefix: "examples/hdf5_classification/data/train"\n'
    )
    Path("solver.prototxt").write_text(solver_text)
    solver = train_a_few("solver.prototxt", iterations=3)
    assert solver.net.blobs["data"].shape == (10, 4)


# (fixture folder, solver file from the run folder, TRAIN data shape, TEST data shape)
IMAGENET = [
    ("bvlc_googlenet", "models/bvlc_googlenet/solver.prototxt", (32, 3, 224, 224), (50, 3, 224, 224)),
    ("squeezenet_v1.0", "solver.prototxt", (32, 3, 227, 227), (25, 3, 227, 227)),
    ("squeezenet_v1.1", "solver.prototxt", (32, 3, 227, 227), (25, 3, 227, 227)),
]


@pytest.mark.parametrize(
    "folder, solver_file, train_shape, test_shape", IMAGENET, ids=[f"{f}/{s}" for f, s, _, _ in IMAGENET]
)
def test_imagenet_solver_files_build_their_train_and_test_nets(
    tmp_path, monkeypatch, folder, solver_file, train_shape, test_shape
):
    """ImageNet-size train_val files through their solver files, data from a 256 x 256 LMDB. One
    iteration at their batch sizes (GoogLeNet 32 at 224 px; SqueezeNet 32 x iter_size 16) takes
    far too long for this suite, so the solver builds the TRAIN and TEST nets from the original
    files, and the forward and backward pass are those of the deploy files above. (AlexNet's,
    CaffeNet's and Flickr style's train_val, batch 256 and 50 at 227 px, build too, in 13 to 23 s
    each on this machine: too slow for the suite; GoogLeNet's quick_solver.prototxt names the same
    train_val as its solver.prototxt, which builds here: its text is read by the prototxt tests.)"""
    root = caffe_root(tmp_path, monkeypatch, folder)
    if folder.startswith("squeezenet"):  # its solver names "train_val.prototxt": run from its folder
        monkeypatch.chdir(root / "examples" / folder)
    write_datum_db("examples/imagenet/ilsvrc12_train_lmdb", (3, 256, 256), 3)
    write_datum_db("examples/imagenet/ilsvrc12_val_lmdb", (3, 256, 256), 3, seed=1)
    solver = Solver(solver_file, output_dir=tmp_path / "run", seed=1)
    assert solver.net.blobs["data"].shape == train_shape
    assert solver.test_net.blobs["data"].shape == test_shape
    assert "Accuracy" in {layer.type for layer in solver.test_net.layers}
