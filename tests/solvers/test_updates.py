"""Each update rule against numbers worked out by hand from Caffe's formulas, on plain arrays and
through a net; weight decay, lr_mult, clipping and iter_size in the solver's update."""

import numpy as np
import pytest
from solver_nets import ALL_TYPES, Recorder, input_config, mlp_config, settings, tiny_config, weights

from netlayers.solvers import RULES, SGD, AdaDelta, AdaGrad, Adam, Nesterov, RMSProp, Solver

W0 = [1.0, -2.0]
GRADIENTS = [[1.0, -2.0], [0.5, 1.0], [-1.0, 0.25]]


def run_rule(rule, local_rate, dtype=np.float64):
    """Three steps of ``rule`` on w = [1, -2] with the gradients above; the weights after each."""
    w = np.array(W0, dtype)
    history = rule.new_history(w.shape, w.dtype)
    scratch = rule.new_scratch(w.shape, w.dtype)
    trajectory = []
    for iteration, g in enumerate(GRADIENTS):
        diff = np.array(g, dtype)
        rule.compute(diff, history, scratch, local_rate, iteration)
        w -= diff
        trajectory.append(w.copy())
    return np.array(trajectory), history


def test_sgd_keeps_the_rate_in_the_history():
    # v = 0.9 v + 0.1 g; w -= v
    # v1 = [0.1, -0.2]                      w1 = [0.9, -1.8]
    # v2 = [0.09 + 0.05, -0.18 + 0.1]       w2 = [0.76, -1.72]
    # v3 = [0.126 - 0.1, -0.072 + 0.025]    w3 = [0.734, -1.673]
    trajectory, history = run_rule(SGD(momentum=0.9), 0.1)
    np.testing.assert_allclose(trajectory, [[0.9, -1.8], [0.76, -1.72], [0.734, -1.673]], rtol=1e-12)
    np.testing.assert_allclose(history[0], [0.026, -0.047], rtol=1e-12)


def test_nesterov():
    # v' = 0.9 v + 0.1 g; w -= 1.9 v' - 0.9 v
    # step 1: v' = [0.1, -0.2]: step [0.19, -0.38]                      w1 = [0.81, -1.62]
    # step 2: v' = [0.14, -0.08]: 1.9*0.14 - 0.9*0.1 = 0.176;
    #         1.9*-0.08 - 0.9*-0.2 = 0.028                              w2 = [0.634, -1.648]
    # step 3: v' = [0.026, -0.047]: 1.9*0.026 - 0.9*0.14 = -0.0766;
    #         1.9*-0.047 - 0.9*-0.08 = -0.0173                          w3 = [0.7106, -1.6307]
    trajectory, _ = run_rule(Nesterov(momentum=0.9), 0.1)
    np.testing.assert_allclose(trajectory, [[0.81, -1.62], [0.634, -1.648], [0.7106, -1.6307]], rtol=1e-12)


def test_adagrad():
    # h += g^2; w -= 0.1 g / (sqrt(h) + 1e-8)
    # step 1: h = [1, 4]:       step [0.1, -0.1]                        w1 = [0.9, -1.9]
    # step 2: h = [1.25, 5]:    0.1 * 0.5 / 1.1180340 = 0.0447214 (both) w2 = [0.8552786, -1.9447214]
    # step 3: h = [2.25, 5.0625]: 0.1 * -1/1.5 = -0.0666667; 0.1 * 0.25 / 2.25 = 0.0111111
    #                                                                    w3 = [0.9219453, -1.9558325]
    trajectory, _ = run_rule(AdaGrad(delta=1e-8), 0.1)
    np.testing.assert_allclose(
        trajectory, [[0.900000001, -1.9], [0.8552786419, -1.94472136], [0.9219453081, -1.955832471]], rtol=1e-9
    )


def test_rmsprop():
    # h = 0.9 h + 0.1 g^2; w -= 0.01 g / (sqrt(h) + 1e-8)
    # step 1: h = [0.1, 0.4]: 0.01 / sqrt(0.1) = 0.0316228 (both signs)   w1 = [0.9683772, -1.9683772]
    # step 2: h = [0.115, 0.46]: 0.01 * 0.5 / 0.3391165 = 0.0147442;
    #         0.01 * 1 / 0.6782330 = 0.0147442                            w2 = [0.9536330, -1.9831214]
    trajectory, _ = run_rule(RMSProp(rms_decay=0.9, delta=1e-8), 0.01)
    np.testing.assert_allclose(
        trajectory,
        [[0.9683772244, -1.968377224], [0.9536330292, -1.983121419], [0.9758005837, -1.986977855]],
        rtol=1e-9,
    )


def test_adadelta():
    # h = 0.95 h + 0.05 g^2; u = g sqrt((h2 + 1e-6) / (h + 1e-6)); h2 = 0.95 h2 + 0.05 u^2; w -= u
    # step 1: h = [0.05, 0.2]: u = 1 * sqrt(1e-6 / 0.050001) = 0.0044720912  w1[0] = 0.9955279088
    trajectory, history = run_rule(AdaDelta(momentum=0.95, delta=1e-6), 1.0)
    np.testing.assert_allclose(
        trajectory,
        [[0.9955279088, -1.995527875], [0.9926411959, -1.998414617], [0.9973441622, -1.999214605]],
        rtol=1e-9,
    )
    assert len(history) == 2


def test_adam_with_caffe_bias_correction():
    # m = 0.9 m + 0.1 g; v = 0.999 v + 0.001 g^2; t = iteration + 1;
    # w -= 0.01 * sqrt(1 - 0.999^t) / (1 - 0.9^t) * m / (sqrt(v) + 1e-8)
    # step 1 (t = 1): m = 0.1 g, v = 0.001 g^2: the step is 0.01 * sign(g)   w1 = [0.99, -1.99]
    trajectory, history = run_rule(Adam(momentum=0.9, momentum2=0.999, delta=1e-8), 0.01)
    np.testing.assert_allclose(
        trajectory,
        [[0.9900000032, -1.990000002], [0.9806782094, -1.987336632], [0.9795703789, -1.986001034]],
        rtol=1e-9,
    )
    np.testing.assert_allclose(history[0], [0.026, -0.047], rtol=1e-12)  # m as SGD's v / 10 here


@pytest.mark.parametrize("name", ALL_TYPES)
def test_rules_work_in_place_in_float32(name):
    rule = RULES[name].from_param(
        {
            "momentum": 0.5 if name in ("SGD", "Nesterov", "AdaDelta", "Adam") else 0.0,
            "momentum2": 0.999,
            "delta": 1e-6,
            "rms_decay": 0.9,
        }
    )
    trajectory64, _ = run_rule(rule, 0.1)
    trajectory32, history = run_rule(rule, 0.1, dtype=np.float32)
    assert trajectory32.dtype == np.float32 and all(h.dtype == np.float32 for h in history)
    np.testing.assert_allclose(trajectory32, trajectory64, rtol=1e-5, atol=1e-6)


# -- through the solver, on E = w^2 / 2 (the gradient is w) --------------------------------------


def trajectory(config, steps=3, **kwargs):
    solver = Solver(config, reporter=Recorder(), **kwargs)
    out = []
    for _ in range(steps):
        solver.step(1)
        out.append(weights(solver)[0].item())
    return out


def test_sgd_through_a_net():
    # g = w: v1 = 0.1, w1 = 0.9; v2 = 0.09 + 0.09 = 0.18, w2 = 0.72; v3 = 0.162 + 0.072, w3 = 0.486
    assert trajectory(tiny_config(momentum=0.9)) == pytest.approx([0.9, 0.72, 0.486], rel=1e-6)


@pytest.mark.parametrize("name", ALL_TYPES)
def test_each_rule_through_a_net_matches_the_array_math(name):
    config = tiny_config(**settings(name))
    config["solver"].pop("weight_decay", None)
    got = trajectory(config, steps=4)
    solver = Solver(config, reporter=Recorder())
    rule = solver.rule
    w = np.array([1.0])
    history, scratch = rule.new_history(w.shape, w.dtype), rule.new_scratch(w.shape, w.dtype)
    expected = []
    for iteration in range(4):
        diff = w.copy()  # the gradient of w^2 / 2
        rule.compute(diff, history, scratch, solver.learning_rate(iteration), iteration)
        w -= diff
        expected.append(w.item())
    assert got == pytest.approx(expected, rel=1e-5)


def test_l2_weight_decay_with_decay_mult():
    # g = w + 0.1 * 2 * w = 1.2 w; w -= 0.1 g: 1 -> 0.88 -> 0.7744
    config = tiny_config(weight_decay=0.1, param={"decay_mult": 2.0})
    assert trajectory(config, steps=2) == pytest.approx([0.88, 0.7744], rel=1e-6)


def test_l1_weight_decay_with_decay_mult():
    # g = w + 0.2 sign(w): 1 - 0.1 * 1.2 = 0.88; 0.88 - 0.1 * 1.08 = 0.772
    config = tiny_config(weight_decay=0.1, regularization_type="L1", param={"decay_mult": 2.0})
    assert trajectory(config, steps=2) == pytest.approx([0.88, 0.772], rel=1e-6)
    # sign(0) = 0: a zero weight with no gradient stays at zero
    assert trajectory(tiny_config(w0=0.0, weight_decay=0.1, regularization_type="L1"), steps=2) == [0.0, 0.0]


def test_lr_mult_scales_the_rate():
    # lr 0.1 * 3: w *= 0.7 each step
    assert trajectory(tiny_config(param={"lr_mult": 3.0}), steps=2) == pytest.approx([0.7, 0.49], rel=1e-6)


def test_lr_mult_zero_leaves_the_param_alone_even_with_decay():
    config = tiny_config(momentum=0.9, weight_decay=0.5, param={"lr_mult": 0.0})
    assert trajectory(config, steps=2) == [1.0, 1.0]


def linear_solver(**solver):
    """x = [3, 4], t = 0, w = [1, 0]: y = 3, the gradient (y - t) x = [9, 12], norm 15."""
    s = Solver(input_config(**solver), reporter=Recorder())
    s.net.blobs["x"].data[...] = [[3.0, 4.0]]
    s.net.blobs["t"].data[...] = 0.0
    s.net.params["ip"][0].data[...] = [[1.0, 0.0]]
    return s


def test_clip_gradients_scales_by_the_global_norm():
    solver = linear_solver(base_lr=1.0, clip_gradients=1.5)
    solver.step(1)
    # norm 15 > 1.5: g * 0.1 = [0.9, 1.2]; w = [1, 0] - [0.9, 1.2]
    np.testing.assert_allclose(solver.net.params["ip"][0].data, [[0.1, -1.2]], rtol=1e-6)


def test_clip_gradients_leaves_small_gradients_alone():
    solver = linear_solver(base_lr=1.0, clip_gradients=20.0)
    solver.step(1)
    np.testing.assert_allclose(solver.net.params["ip"][0].data, [[-8.0, -12.0]], rtol=1e-6)


def test_iter_size_normalises_the_summed_gradient():
    # the same fixed data twice: (g + g) / 2 = g exactly, so one step equals iter_size 1's
    one = linear_solver(momentum=0.9, base_lr=0.01)
    two = linear_solver(momentum=0.9, base_lr=0.01, iter_size=2)
    one.step(3)
    two.step(3)
    np.testing.assert_array_equal(two.net.params["ip"][0].data, one.net.params["ip"][0].data)


def test_iter_size_equals_a_bigger_batch():
    # DummyData draws gaussian x from one generator: two batches of 2 are the rows of one batch
    # of 4, so iter_size 2 x batch 2 sees the same data as batch 4 (the mean of the halves)
    small = Solver(
        mlp_config(batch=2, target="constant", iter_size=2, momentum=0.9, weight_decay=0.01), reporter=Recorder()
    )
    big = Solver(mlp_config(batch=4, target="constant", momentum=0.9, weight_decay=0.01), reporter=Recorder())
    # the setup draws differ (the first batch is filled at setup): start both from one state
    for a, b in zip(small.net.learnable_params, big.net.learnable_params):
        a.blob.data[...] = b.blob.data
    small.net.rng.bit_generator.state = big.net.rng.bit_generator.state
    for _ in range(3):
        small.step(1)
        big.step(1)
        for a, b in zip(weights(small), weights(big)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert small.smoothed_loss == pytest.approx(big.smoothed_loss, rel=1e-5)


# -- SGD's fused update (one numba pass) against the separate numpy passes ------------------------


def separate_passes(w, diff, v, rate, decay, momentum):
    """The solver's numpy path: regularize, SGD.compute, w -= diff."""
    if decay:
        diff += np.multiply(w, decay, out=np.empty_like(w))
    SGD(momentum=momentum).compute(diff, [v], [], rate, 0)
    w -= diff


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("decay", [0.0, 5e-4])
@pytest.mark.parametrize("momentum", [0.9, 0.0])
def test_sgd_fused_update_is_bit_identical_to_the_separate_passes(dtype, decay, momentum):
    rng = np.random.default_rng(0)
    shape = (50, 20, 5, 5)
    w = rng.standard_normal(shape).astype(dtype)
    v = (0.01 * rng.standard_normal(shape)).astype(dtype)
    w[0, 0, 0, :3] = [0.0, -0.0, 1e-30]  # zeros of both signs, a tiny weight
    v[0, 0, 0, :2] = [-0.0, 0.0]
    expected = [w.copy(), None, v.copy()]
    rule = SGD(momentum=momentum)
    for step in range(3):
        g = (0.1 * rng.standard_normal(shape)).astype(dtype)
        g[0, 0, 0, :2] = [-0.0, 0.0]
        rate = 0.01 * (1 + 1e-4 * step) ** -0.75 * 2  # the inv policy's rate, lr_mult 2
        got_diff = g.copy()
        assert rule.fused_update(w, got_diff, [v], rate, decay, step)
        expected[1] = g.copy()
        separate_passes(expected[0], expected[1], expected[2], rate, decay, momentum)
        for got, want in zip((w, got_diff, v), expected):
            assert got.dtype == dtype
            np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))  # bits, -0


def test_sgd_at_momentum_zero_steps_by_rate_times_gradient_and_keeps_no_history():
    w, diff = np.array([1.0, -2.0]), np.array([0.5, 0.25])
    history = [np.zeros(2)]
    assert SGD(momentum=0.0).fused_update(w, diff, history, 0.1, 0.0, 0)
    np.testing.assert_array_equal(diff, [0.05, 0.025])
    np.testing.assert_array_equal(w, [0.95, -2.025])
    assert not history[0].any()


def test_sgd_fused_update_declines_arrays_it_cannot_update_in_place():
    w = np.ones((4, 4), np.float32)[:, ::2]  # not contiguous
    diff, v = np.ones_like(w), np.zeros_like(w)
    assert not SGD(momentum=0.9).fused_update(w, diff, [v], 0.1, 0.0, 0)
    assert not SGD(momentum=0.9).fused_update(np.ones(3, np.float32), np.ones(3), [np.zeros(3)], 0.1, 0.0, 0)
    nesterov = RULES["Nesterov"](momentum=0.9)
    assert not nesterov.fused_update(np.ones(3), np.ones(3), [np.zeros(3)], 0.1, 0.0, 0)


def test_solver_with_the_fused_update_trains_like_the_separate_passes(monkeypatch):
    config = mlp_config(momentum=0.9, weight_decay=0.01, lr_policy="inv", gamma=0.1, power=0.75)
    fused = Solver(config, reporter=Recorder())
    fused.step(5)
    monkeypatch.setattr(SGD, "fused_update", lambda self, *args: False)
    separate = Solver(config, reporter=Recorder())
    separate.step(5)
    for a, b in zip(
        weights(fused) + [h[0] for h in fused.history], weights(separate) + [h[0] for h in separate.history]
    ):
        np.testing.assert_array_equal(a, b)
