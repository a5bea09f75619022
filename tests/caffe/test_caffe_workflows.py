"""BVLC pycaffe's example workflows, rewritten only in their import line and data source (no
downloads: weights are made here and written as .caffemodel files, images are drawn here), run
against ``from netlayers import caffe``.

- examples/00-classification.ipynb: CaffeNet's deploy net with a weights file, Transformer,
  forward of a batch, top-5, the blobs and params listing.
- examples/net_surgery.ipynb: editing a convolution's params by hand, then casting CaffeNet's
  fully connected layers into convolutions (fc6-conv ...) and running it on a larger image.
- examples/01-learning-lenet.ipynb: NetSpec -> prototxt files -> SGDSolver -> step loop with
  manual testing; the custom net with a SolverParameter built in Python.
The Python loss layer example (examples/pycaffe/layers/pyloss.py) is in test_pycaffe_solver.py.
"""

from pathlib import Path

import numpy as np
import pytest

from netlayers import caffe

BVLC = Path(__file__).resolve().parents[1] / "fixtures" / "bvlc"


@pytest.fixture(scope="module")
def caffenet_weights(tmp_path_factory):
    """A CaffeNet weights file made here: every param of the deploy net, random (small, so the
    softmax stays finite), written in Caffe's .caffemodel format."""
    folder = tmp_path_factory.mktemp("caffenet")
    net = caffe.Net(str(BVLC / "caffenet_deploy.prototxt"), caffe.TEST)
    rng = np.random.default_rng(0)
    for blobs in net.params.values():
        for blob in blobs:
            fan_in = max(1, blob.data[0].size) if blob.data.ndim > 1 else 1
            blob.data[...] = rng.standard_normal(blob.data.shape, dtype=np.float32) * np.float32(1.5 / np.sqrt(fan_in))
    path = folder / "bvlc_reference_caffenet.caffemodel"
    net.save(str(path))
    return path


def picture(height, width, seed=0):
    """A smooth RGB picture in [0, 1] (H x W x 3), as caffe.io.load_image gives."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    channels = [np.sin(6 * x * rng.uniform(0.5, 2) + 4 * y * rng.uniform(0.5, 2) + rng.uniform(0, 6)) for _ in range(3)]
    return ((np.stack(channels, -1) + 1) / 2).astype(np.float32)


def saved_picture(path, image):
    from PIL import Image

    Image.fromarray((image * 255).round().astype(np.uint8)).save(path)
    return str(path)


def imagenet_mean():
    """The per-channel BGR mean the notebook computes from ilsvrc_2012_mean.npy."""
    return np.array([104.00698793, 116.66876762, 122.67891434])


def test_00_classification(caffenet_weights, tmp_path):
    caffe.set_mode_cpu()
    model_def = str(BVLC / "caffenet_deploy.prototxt")
    net = caffe.Net(model_def, str(caffenet_weights), caffe.TEST)
    mu = imagenet_mean()
    transformer = caffe.io.Transformer({"data": net.blobs["data"].data.shape})
    transformer.set_transpose("data", (2, 0, 1))
    transformer.set_mean("data", mu)
    transformer.set_raw_scale("data", 255)
    transformer.set_channel_swap("data", (2, 1, 0))
    net.blobs["data"].reshape(50, 3, 227, 227)
    image = caffe.io.load_image(saved_picture(tmp_path / "cat.png", picture(360, 480)))
    transformed_image = transformer.preprocess("data", image)
    net.blobs["data"].data[...] = transformed_image
    output = net.forward()
    output_prob = output["prob"][0]
    labels = np.array([f"n{i:08d} class {i}" for i in range(1000)])
    top_inds = output_prob.argsort()[::-1][:5]
    top = list(zip(output_prob[top_inds], labels[top_inds]))
    # what the notebook shows, checked
    assert output_prob.shape == (1000,) and abs(float(output_prob.sum()) - 1) < 1e-4
    assert top[0][0] == output_prob.max() and top[0][1] == labels[output_prob.argmax()]
    # the 50 copies agree to float32 rounding: BLAS kernels may round rows of a product
    # differently by their place in it (OpenBLAS's Haswell sgemm: 8e-8 apart on one probability)
    np.testing.assert_allclose(output["prob"][1:], np.repeat(output["prob"][:1], 49, 0), rtol=1e-3, atol=1e-6)
    shapes = {name: blob.data.shape for name, blob in net.blobs.items()}
    assert shapes["conv1"] == (50, 96, 55, 55) and shapes["pool5"] == (50, 256, 6, 6)
    assert shapes["fc6"] == (50, 4096) and shapes["prob"] == (50, 1000)
    params = {name: (p[0].data.shape, p[1].data.shape) for name, p in net.params.items()}
    assert params["conv2"] == ((256, 48, 5, 5), (256,)) and params["fc8"] == ((1000, 4096), (1000,))
    # the preprocessing is Caffe's: BGR, 0-255, mean subtracted, centre-resized to 227
    assert transformed_image.shape == (3, 227, 227)
    restored = transformer.deprocess("data", transformed_image)
    np.testing.assert_allclose(restored, caffe.io.resize_image(image, (227, 227)), atol=1e-4)
    # and the same numbers as netlayers' own deploy net fed the same array, to the rounding
    # above: a batch of 1 against 50 rounds the products' rows differently (conv2 runs as
    # F(4x4, 5x5), whose float32 rounding is 4e-6 of the output: 2e-4 apart on one probability)
    from netlayers import Net

    own = Net(model_def, "TEST")
    own.load(caffenet_weights)
    np.testing.assert_allclose(own.forward(data=transformed_image[None])["prob"][0], output_prob, rtol=1e-3, atol=1e-6)


def test_net_surgery_edits_params_by_hand(tmp_path):
    caffe.set_mode_cpu()
    net = caffe.Net(str(BVLC / "conv.prototxt"), caffe.TEST)
    assert list(net.blobs.keys()) == ["data", "conv"] and list(net.params.keys()) == ["conv"]
    grey = picture(120, 160, seed=1).mean(-1)
    path = tmp_path / "cat_gray.png"
    from PIL import Image

    Image.fromarray((grey * 255).round().astype(np.uint8)).save(path)
    im = np.array(caffe.io.load_image(str(path), color=False)).squeeze()
    im_input = im[np.newaxis, np.newaxis, :, :]
    net.blobs["data"].reshape(*im_input.shape)
    net.blobs["data"].data[...] = im_input
    net.forward()
    conv0 = net.blobs["conv"].data[0, 0]
    before = conv0.mean()
    net.params["conv"][1].data[0] = 1.0
    net.forward()
    assert conv0.mean() == pytest.approx(before + 1, abs=1e-5)  # the same array, updated in place
    ksize = net.params["conv"][0].data.shape[2:]
    sigma = 1.0
    y, x = np.mgrid[-ksize[0] // 2 + 1 : ksize[0] // 2 + 1, -ksize[1] // 2 + 1 : ksize[1] // 2 + 1]
    g = np.exp(-((x**2 + y**2) / (2.0 * sigma**2)))
    gaussian = (g / g.sum()).astype(np.float32)
    net.params["conv"][0].data[0] = gaussian
    net.params["conv"][0].data[1:] = 0.0
    sobel = np.array((-1, -2, -1, 0, 0, 0, 1, 2, 1), dtype=np.float32).reshape((3, 3))
    net.params["conv"][0].data[1, 0, 1:-1, 1:-1] = sobel
    net.params["conv"][0].data[2, 0, 1:-1, 1:-1] = sobel.T
    net.forward()
    # the filters do what the notebook says: a blur (plus the bias of 1) and two edge maps
    blurred = sum(gaussian[i, j] * im[i : i + 116, j : j + 156] for i in range(5) for j in range(5)) + 1
    np.testing.assert_allclose(net.blobs["conv"].data[0, 0], blurred, rtol=1e-4)
    horizontal = sum(sobel[i, j] * im[i + 1 : i + 117, j + 1 : j + 157] for i in range(3) for j in range(3))
    np.testing.assert_allclose(net.blobs["conv"].data[0, 1], horizontal, atol=1e-4)


def test_net_surgery_casts_caffenet_into_a_fully_convolutional_net(caffenet_weights, tmp_path):
    net = caffe.Net(str(BVLC / "caffenet_deploy.prototxt"), str(caffenet_weights), caffe.TEST)
    params = ["fc6", "fc7", "fc8"]
    fc_params = {pr: (net.params[pr][0].data, net.params[pr][1].data) for pr in params}
    assert fc_params["fc6"][0].shape == (4096, 9216) and fc_params["fc6"][1].shape == (4096,)
    net_full_conv = caffe.Net(str(BVLC / "bvlc_caffenet_full_conv.prototxt"), str(caffenet_weights), caffe.TEST)
    params_full_conv = ["fc6-conv", "fc7-conv", "fc8-conv"]
    conv_params = {pr: (net_full_conv.params[pr][0].data, net_full_conv.params[pr][1].data) for pr in params_full_conv}
    assert conv_params["fc6-conv"][0].shape == (4096, 256, 6, 6)
    for pr, pr_conv in zip(params, params_full_conv):
        conv_params[pr_conv][0].flat = fc_params[pr][0].flat
        conv_params[pr_conv][1][...] = fc_params[pr][1]
    net_full_conv.save(str(tmp_path / "bvlc_caffenet_full_conv.caffemodel"))

    im = picture(451, 451, seed=2)
    transformer = caffe.io.Transformer({"data": net_full_conv.blobs["data"].data.shape})
    transformer.set_mean("data", imagenet_mean())
    transformer.set_transpose("data", (2, 0, 1))
    transformer.set_channel_swap("data", (2, 1, 0))
    transformer.set_raw_scale("data", 255.0)
    out = net_full_conv.forward_all(data=np.asarray([transformer.preprocess("data", im)]))
    assert out["prob"].shape == (1, 1000, 8, 8)
    # the surgery keeps the classifier: on a 227 x 227 image the map is one place, CaffeNet's output
    crop = net_full_conv.blobs["data"].data[:1, :, :227, :227].copy()
    net_full_conv.blobs["data"].reshape(1, 3, 227, 227)
    one_place = net_full_conv.forward(data=crop)
    net.blobs["data"].reshape(1, 3, 227, 227)
    scores = net.forward(data=crop) and net.blobs["fc8"].data[0]
    mapped = net_full_conv.blobs["fc8-conv"].data[0, :, 0, 0]
    np.testing.assert_allclose(mapped, scores, atol=1e-4 * np.abs(scores).max())
    assert one_place["prob"].shape == (1, 1000, 1, 1)
    # the saved surgery loads back into a fresh fully convolutional net
    saved = str(tmp_path / "bvlc_caffenet_full_conv.caffemodel")
    again = caffe.Net(str(BVLC / "bvlc_caffenet_full_conv.prototxt"), saved, caffe.TEST)
    np.testing.assert_array_equal(again.params["fc8-conv"][0].data, conv_params["fc8-conv"][0])


# -- examples/01-learning-lenet.ipynb (Python 3; the data source is Fashion-MNIST's IDX files) --
def lenet(source, batch_size):
    from netlayers.caffe import layers as L
    from netlayers.caffe import params as P

    n = caffe.NetSpec()
    n.data, n.label = L.Data(
        batch_size=batch_size, backend=P.Data.IDX, source=source, transform_param=dict(scale=1.0 / 255), ntop=2
    )
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20, weight_filler=dict(type="xavier"))
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.conv2 = L.Convolution(n.pool1, kernel_size=5, num_output=50, weight_filler=dict(type="xavier"))
    n.pool2 = L.Pooling(n.conv2, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.fc1 = L.InnerProduct(n.pool2, num_output=500, weight_filler=dict(type="xavier"))
    n.relu1 = L.ReLU(n.fc1, in_place=True)
    n.score = L.InnerProduct(n.relu1, num_output=10, weight_filler=dict(type="xavier"))
    n.loss = L.SoftmaxWithLoss(n.score, n.label)
    return n.to_proto()


def run_test_loop(solver, niter, test_interval, output=None):
    """The notebook's main solver loop: step, keep the loss, test by hand every so often."""
    train_loss = np.zeros(niter)
    test_acc = np.zeros(int(np.ceil(niter / test_interval)))
    for it in range(niter):
        solver.step(1)
        train_loss[it] = solver.net.blobs["loss"].data
        if output is not None:
            solver.test_nets[0].forward(start="conv1")
            output[it] = solver.test_nets[0].blobs["score"].data[:8]
        if it % test_interval == 0:
            correct = 0
            for _test_it in range(100):
                solver.test_nets[0].forward()
                correct += sum(
                    solver.test_nets[0].blobs["score"].data.argmax(1) == solver.test_nets[0].blobs["label"].data
                )
            test_acc[it // test_interval] = correct / 1e4
    return train_loss, test_acc


def test_01_learning_lenet(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mnist").mkdir()
    import shutil

    shutil.copy(BVLC / "lenet_auto_solver.prototxt", tmp_path / "mnist")
    with open("mnist/lenet_auto_train.prototxt", "w") as f:
        f.write(str(lenet("fashion-mnist/train", 64)))
    with open("mnist/lenet_auto_test.prototxt", "w") as f:
        f.write(str(lenet("fashion-mnist/test", 100)))
    caffe.set_mode_cpu()  # the notebook's caffe.set_device(0); caffe.set_mode_gpu()
    solver = caffe.SGDSolver("mnist/lenet_auto_solver.prototxt")
    shapes = [(k, v.data.shape) for k, v in solver.net.blobs.items()]
    assert shapes[:3] == [("data", (64, 1, 28, 28)), ("label", (64,)), ("conv1", (64, 20, 24, 24))]
    assert ("score", (64, 10)) in shapes
    assert [(k, v[0].data.shape) for k, v in solver.net.params.items()] == [
        ("conv1", (20, 1, 5, 5)),
        ("conv2", (50, 20, 5, 5)),
        ("fc1", (500, 800)),
        ("score", (10, 500)),
    ]
    solver.net.forward()
    solver.test_nets[0].forward()
    assert solver.net.blobs["data"].data[:8, 0].transpose(1, 0, 2).reshape(28, 8 * 28).shape == (28, 224)
    solver.step(1)
    assert np.abs(solver.net.params["conv1"][0].diff).sum() > 0
    assert solver.net.params["conv1"][0].diff[:, 0].reshape(4, 5, 5, 5).transpose(0, 2, 1, 3).reshape(20, 25).shape
    niter, test_interval = 200, 25
    output = np.zeros((niter, 8, 10))
    train_loss, test_acc = run_test_loop(solver, niter, test_interval, output)
    assert solver.iter == 201
    assert train_loss[-20:].mean() < 0.6 * train_loss[:5].mean()
    assert test_acc[0] < 0.5 and test_acc[-1] > 0.65  # Fashion-MNIST is harder than MNIST's 0.9
    assert np.isfinite(output).all()

    # the custom net, with its solver written from Python
    from netlayers.caffe.proto import caffe_pb2

    def custom_net(source, batch_size):
        from netlayers.caffe import layers as L
        from netlayers.caffe import params as P

        n = caffe.NetSpec()
        n.data, n.label = L.Data(
            batch_size=batch_size, backend=P.Data.IDX, source=source, transform_param=dict(scale=1.0 / 255), ntop=2
        )
        n.score = L.InnerProduct(n.data, num_output=10, weight_filler=dict(type="xavier"))
        n.loss = L.SoftmaxWithLoss(n.score, n.label)
        return n.to_proto()

    train_net_path, test_net_path = "mnist/custom_auto_train.prototxt", "mnist/custom_auto_test.prototxt"
    solver_config_path = "mnist/custom_auto_solver.prototxt"
    with open(train_net_path, "w") as f:
        f.write(str(custom_net("fashion-mnist/train", 64)))
    with open(test_net_path, "w") as f:
        f.write(str(custom_net("fashion-mnist/test", 100)))
    s = caffe_pb2.SolverParameter()
    s.random_seed = 0xCAFFE
    s.train_net = train_net_path
    s.test_net.append(test_net_path)
    s.test_interval = 500
    s.test_iter.append(100)
    s.max_iter = 10000
    s.type = "SGD"
    s.base_lr = 0.01
    s.momentum = 0.9
    s.weight_decay = 5e-4
    s.lr_policy = "inv"
    s.gamma = 0.0001
    s.power = 0.75
    s.display = 1000
    s.snapshot = 5000
    s.snapshot_prefix = "mnist/custom_net"
    s.solver_mode = caffe_pb2.SolverParameter.GPU  # accepted in a file: netlayers says once it runs on the CPU
    with open(solver_config_path, "w") as f:
        f.write(str(s))
    solver = caffe.get_solver(solver_config_path)
    assert type(solver).__name__ == "SGDSolver" and solver.net.params["score"][0].data.shape == (10, 784)
    niter = 250
    train_loss, test_acc = run_test_loop(solver, niter, niter // 10)
    assert train_loss[-20:].mean() < 0.7 * train_loss[:5].mean() and test_acc[-1] > 0.6
