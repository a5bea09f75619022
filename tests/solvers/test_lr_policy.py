"""Learning-rate policies against numbers worked out by hand from Caffe's formulas."""

import pytest
from solver_nets import Recorder, tiny_config

from netlayers import ConfigError
from netlayers.solvers import Solver
from netlayers.solvers.lr_policy import learning_rate


def rates(policy, iterations, **fields):
    return [learning_rate(policy, i, **fields) for i in iterations]


def test_fixed():
    assert rates("fixed", [0, 1, 1000], base_lr=0.01) == [0.01, 0.01, 0.01]


def test_step():
    # 0.01 * 0.1^floor(iter / 10)
    got = rates("step", [0, 9, 10, 19, 25], base_lr=0.01, gamma=0.1, stepsize=10)
    assert got == pytest.approx([0.01, 0.01, 0.001, 0.001, 0.0001])


def test_exp():
    # 1 * 0.5^iter
    assert rates("exp", [0, 1, 3], base_lr=1.0, gamma=0.5) == pytest.approx([1.0, 0.5, 0.125])


def test_inv():
    # 0.01 * (1 + 1e-4 * 100)^-0.75 = 0.01 * 1.01^-0.75 = 0.00992565 (Caffe's LeNet log)
    got = rates("inv", [0, 100], base_lr=0.01, gamma=1e-4, power=0.75)
    assert got == pytest.approx([0.01, 0.00992565], rel=1e-6)


def test_multistep():
    # gamma^(number of stepvalues passed): 1 until 2, 0.1 until 5, then 0.01
    got = rates("multistep", [0, 1, 2, 4, 5, 100], base_lr=1.0, gamma=0.1, stepvalue=[2, 5])
    assert got == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_poly():
    # (1 - iter/10)^2: 1, 0.25 at 5, 0.01 at 9, 0 at 10 and after (clamped)
    got = rates("poly", [0, 5, 9, 10, 12], base_lr=1.0, power=2.0, max_iter=10)
    assert got == pytest.approx([1.0, 0.25, 0.01, 0.0, 0.0])


def test_sigmoid():
    # 1 / (1 + exp(-0.5 (iter - 10))): 1/(1+e^5) at 0, 1/2 at 10, 1/(1+e^-1) at 12
    got = rates("sigmoid", [0, 10, 12, -10000], base_lr=1.0, gamma=0.5, stepsize=10)
    assert got == pytest.approx([0.0066928509, 0.5, 0.7310585786, 0.0], rel=1e-8)


def test_sigmoid_with_a_negative_gamma_decays_as_in_caffe():
    got = rates("sigmoid", [0, 10, 20], base_lr=1.0, gamma=-0.5, stepsize=10)
    assert got == pytest.approx([0.9933071491, 0.5, 0.0066928509], rel=1e-8)
    solver = Solver(tiny_config(lr_policy="sigmoid", gamma=-0.5, stepsize=10), reporter=Recorder())
    assert solver.learning_rate(20) < solver.learning_rate(0)


def test_warmup_ramps_linearly_to_the_policy():
    got = rates("fixed", range(6), base_lr=0.1, warmup_iter=4)
    assert got == pytest.approx([0.0, 0.025, 0.05, 0.075, 0.1, 0.1])
    # from warmup_start_lr 0.02: 0.02 + (0.1 - 0.02) * 2/4 = 0.06
    assert learning_rate("fixed", 2, base_lr=0.1, warmup_iter=4, warmup_start_lr=0.02) == pytest.approx(0.06)
    # the ramp targets the policy's own value: step drops 0.1 -> 0.01 at 2; at 3: 0.01 * 3/4
    assert learning_rate("step", 3, base_lr=0.1, gamma=0.1, stepsize=2, warmup_iter=4) == pytest.approx(0.0075)


def test_solver_uses_the_policy_for_each_update():
    recorder = Recorder()
    solver = Solver(tiny_config(lr_policy="step", gamma=0.5, stepsize=2, display=1, max_iter=5), reporter=recorder)
    solver.solve()
    lrs = [args[3] for args in recorder.of("on_train") if args[3] is not None]
    assert lrs == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])
    assert solver.learning_rate(4) == pytest.approx(0.025)


def test_poly_uses_the_max_iter_override():
    solver = Solver(tiny_config(lr_policy="poly", power=1.0, max_iter=100), max_iter=10, reporter=Recorder())
    assert solver.param.max_iter == 10
    assert solver.learning_rate(5) == pytest.approx(0.05)


@pytest.mark.parametrize(
    "solver, message",
    [
        ({"lr_policy": "step", "gamma": 0.1}, "lr_policy 'step' needs 'stepsize'"),
        ({"lr_policy": "inv", "gamma": 0.1}, "lr_policy 'inv' needs 'power'"),
        ({"lr_policy": "step", "gamma": 0.1, "stepsize": 0}, "expected an integer >= 1, got 0"),
        ({"lr_policy": "multistep", "gamma": 0.1, "stepvalue": [5, 3]}, "must increase"),
        ({"lr_policy": "exp", "gamma": -1.0}, "must not be negative"),
    ],
)
def test_policy_fields_are_checked(solver, message):
    with pytest.raises(ConfigError, match=message):
        Solver(tiny_config(**solver), reporter=Recorder())
