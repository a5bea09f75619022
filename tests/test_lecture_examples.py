"""The lecture's graphs (shared/seeds), as configs under configs/examples/, give the lecture's
numbers forward and backward, and the whole-net gradient checks agree."""

from pathlib import Path

import numpy as np
import pytest

from netlayers import Net
from netlayers.gradcheck import check_net

EXAMPLES = Path(__file__).resolve().parents[1] / "configs" / "examples"


def run(name):
    net = Net(EXAMPLES / name, dtype=np.float64)
    net.forward()
    net.clear_param_diffs()
    net.backward()
    value = {blob: float(net.blobs[blob].data.reshape(-1)[0]) for blob in net.blobs}
    grad = {blob: float(net.blobs[blob].diff.reshape(-1)[0]) for blob in net.blobs}
    return net, value, grad


def test_circuit():
    net, value, grad = run("circuit.yaml")
    assert value["q"] == 3 and value["f"] == -12 and net.loss == -12
    assert (grad["x"], grad["y"], grad["z"], grad["q"]) == (-4, -4, 3, -4)


def test_sigmoid_neuron_gate_by_gate():
    _, value, grad = run("sigmoid_neuron.yaml")
    expected_values = {"dot": 1.0, "neg": -1.0, "e": 0.37, "denom": 1.37, "f": 0.73}
    for blob, v in expected_values.items():
        assert value[blob] == pytest.approx(v, abs=0.005), blob
    expected_grads = {
        "denom": -0.53,
        "e": -0.53,
        "neg": -0.20,
        "dot": 0.20,
        "w0": -0.20,
        "x0": 0.39,
        "w1": -0.39,
        "x1": -0.59,
        "w2": 0.20,
    }
    for blob, g in expected_grads.items():
        assert grad[blob] == pytest.approx(g, abs=0.005), blob
    # exact: df/ddot = sigma (1 - sigma)
    sigma = 1 / (1 + np.exp(-1.0))
    assert grad["dot"] == pytest.approx(sigma * (1 - sigma), rel=1e-12)


def test_sigmoid_layer_equals_the_four_gates():
    spec = Net(EXAMPLES / "sigmoid_neuron.yaml").spec
    gates = ("negate", "exp", "plus_one", "reciprocal")
    from dataclasses import replace

    layers = [layer for layer in spec.layers if layer.name not in gates]
    sigmoid = replace(
        next(l for l in spec.layers if l.name == "exp"),
        name="sigmoid",
        type="Sigmoid",
        bottoms=["dot"],
        tops=["f"],
        blocks={},
        loss_weights=[1.0],
    )
    net = Net(replace(spec, layers=layers + [sigmoid]), dtype=np.float64)
    net.forward()
    net.backward()
    _, _, grad = run("sigmoid_neuron.yaml")
    for blob in ("w0", "x0", "w1", "x1", "w2"):
        assert float(net.blobs[blob].diff[0]) == pytest.approx(grad[blob], rel=1e-12)


def test_apples_and_oranges():
    net, value, grad = run("apples_oranges.yaml")
    assert value["price"] == pytest.approx(715)
    expected = {"apple": 2.2, "apple_num": 110, "orange": 3.3, "orange_num": 165, "tax": 650}
    for blob, g in expected.items():
        assert grad[blob] == pytest.approx(g), blob


def test_vectorized_norm():
    net, value, grad = run("vectorized_norm.yaml")
    np.testing.assert_allclose(net.blobs["q"].data, [0.22, 0.26])
    assert value["f"] == pytest.approx(0.116)
    np.testing.assert_allclose(net.blobs["q"].diff, [0.44, 0.52])
    np.testing.assert_allclose(net.blobs["W"].diff, [[0.088, 0.176], [0.104, 0.208]])
    np.testing.assert_allclose(net.blobs["x"].diff, [-0.112, 0.636])


def test_max_gate_routes_the_gradient():
    _, value, grad = run("max_gate.yaml")
    assert value["f"] == -20
    assert (grad["x"], grad["y"], grad["z"], grad["w"]) == (-8, 6, 2, 0)


def test_gradients_add_at_a_branch():
    net, value, grad = run("branch.yaml")
    assert value["f"] == -6
    assert any(layer.type == "Split" for layer in net.layers)
    assert (grad["x"], grad["y"], grad["z"]) == (-2, 3, 3)


@pytest.mark.parametrize(
    "name",
    [
        "circuit.yaml",
        "sigmoid_neuron.yaml",
        "apples_oranges.yaml",
        "vectorized_norm.yaml",
        "max_gate.yaml",
        "branch.yaml",
    ],
)
def test_every_example_passes_the_whole_net_gradient_check(name):
    report = check_net(EXAMPLES / name)
    assert report.passed, report.table()
    assert sum(b.checked for b in report.blobs) > 0


def numpy_seed_step(x, y, w1, w2):
    """The lecture's numpy loop body (float64)."""
    h = 1 / (1 + np.exp(-x.dot(w1)))
    y_pred = h.dot(w2)
    loss = np.square(y_pred - y).sum()
    grad_y_pred = 2.0 * (y_pred - y)
    grad_w2 = h.T.dot(grad_y_pred)
    grad_h = grad_y_pred.dot(w2.T)
    grad_w1 = x.T.dot(grad_h * h * (1 - h))
    return loss, grad_w1, grad_w2


def test_seed_mlp_matches_the_numpy_loop():
    net = Net(EXAMPLES / "seed_mlp.yaml", dtype=np.float64)
    net.forward()
    net.clear_param_diffs()
    net.backward()
    x, y = net.blobs["x"].data, net.blobs["y"].data
    w1, w2 = net.params["hidden"][0].data.T, net.params["output"][0].data.T
    loss, grad_w1, grad_w2 = numpy_seed_step(x, y, w1, w2)
    assert net.loss == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(net.params["hidden"][0].diff.T, grad_w1, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(net.params["output"][0].diff.T, grad_w2, rtol=1e-10, atol=1e-10)
    # float32 (the default) agrees to float32 precision
    net32 = Net(EXAMPLES / "seed_mlp.yaml")
    net32.forward()
    assert net32.loss == pytest.approx(loss, rel=1e-4)


def test_seed_mlp_trains_as_the_numpy_loop_does():
    """The config's SGD (lr 1e-4, no momentum) and the numpy loop, from the same start, give the
    same losses iteration after iteration (float64), and the loss falls."""
    import yaml

    from netlayers import Solver
    from netlayers.solvers.reporting import Reporter

    raw = yaml.safe_load((EXAMPLES / "seed_mlp.yaml").read_text())
    raw["dtype"] = "float64"
    solver = Solver(raw, max_iter=60, reporter=Reporter(quiet=True, metrics=False))
    net = solver.net
    net.forward()
    x, y = net.blobs["x"].data.copy(), net.blobs["y"].data.copy()
    w1, w2 = net.params["hidden"][0].data.T.copy(), net.params["output"][0].data.T.copy()
    ours, theirs = [], []
    for _ in range(60):
        solver.step(1)
        ours.append(net.loss)
        loss, grad_w1, grad_w2 = numpy_seed_step(x, y, w1, w2)
        theirs.append(loss)
        w1 -= 1e-4 * grad_w1
        w2 -= 1e-4 * grad_w2
    np.testing.assert_allclose(ours, theirs, rtol=1e-9)
    assert ours[-1] < 0.5 * ours[0]
