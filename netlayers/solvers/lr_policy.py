"""Learning-rate policies: pure functions of the iteration, as Caffe's SGDSolver::GetLearningRate.

``iteration`` counts the updates done so far (Caffe's ``iter_``): the rate used for the first
update is the rate at iteration 0.

- fixed:     base_lr
- step:      base_lr * gamma ^ floor(iter / stepsize)
- exp:       base_lr * gamma ^ iter
- inv:       base_lr * (1 + gamma * iter) ^ (-power)
- multistep: base_lr * gamma ^ k, k = how many of the (increasing) ``stepvalue`` are <= iter
- poly:      base_lr * (1 - iter / max_iter) ^ power        (0 from max_iter on)
- sigmoid:   base_lr / (1 + exp(-gamma * (iter - stepsize)))

Beyond Caffe, a linear warm-up: for iter < warmup_iter the rate is

    warmup_start_lr + (policy(iter) - warmup_start_lr) * iter / warmup_iter

so it starts at ``warmup_start_lr`` (0 by default) and meets the policy at ``warmup_iter``.

Caffe keeps multistep's ``current_step`` as solver state; here it is recomputed from the
iteration (the same number, since the stepvalues must increase), so the policies have no state
and a snapshot needs none.
"""

import math

POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")

# Which fields each policy needs besides base_lr (checked with the config, see base.py).
NEEDS = {
    "fixed": (),
    "step": ("gamma", "stepsize"),
    "exp": ("gamma",),
    "inv": ("gamma", "power"),
    "multistep": ("gamma",),
    "poly": ("power", "max_iter"),
    "sigmoid": ("gamma", "stepsize"),
}


def fixed(iteration, *, base_lr, **_):
    return base_lr


def step(iteration, *, base_lr, gamma, stepsize, **_):
    return base_lr * gamma ** (iteration // stepsize)


def exp(iteration, *, base_lr, gamma, **_):
    return base_lr * gamma**iteration


def inv(iteration, *, base_lr, gamma, power, **_):
    return base_lr * (1.0 + gamma * iteration) ** (-power)


def multistep(iteration, *, base_lr, gamma, stepvalue=(), **_):
    current_step = 0
    while current_step < len(stepvalue) and iteration >= stepvalue[current_step]:
        current_step += 1
    return base_lr * gamma**current_step


def poly(iteration, *, base_lr, power, max_iter, **_):
    remaining = max(0.0, 1.0 - iteration / max_iter)
    return base_lr * remaining**power


def sigmoid(iteration, *, base_lr, gamma, stepsize, **_):
    z = gamma * (iteration - stepsize)
    if z >= 0:
        return base_lr / (1.0 + math.exp(-z))
    ez = math.exp(z)  # the same value, without overflow for very negative z
    return base_lr * ez / (1.0 + ez)


FUNCTIONS = {
    "fixed": fixed,
    "step": step,
    "exp": exp,
    "inv": inv,
    "multistep": multistep,
    "poly": poly,
    "sigmoid": sigmoid,
}


def learning_rate(
    policy,
    iteration,
    *,
    base_lr,
    gamma=None,
    power=None,
    stepsize=None,
    stepvalue=(),
    max_iter=None,
    warmup_iter=0,
    warmup_start_lr=0.0,
):
    """The rate of ``policy`` at ``iteration``, with the optional linear warm-up."""
    try:
        function = FUNCTIONS[policy]
    except KeyError:
        raise ValueError(f"unknown lr_policy {policy!r}; known: {', '.join(POLICIES)}") from None
    try:
        rate = float(
            function(
                iteration,
                base_lr=base_lr,
                gamma=gamma,
                power=power,
                stepsize=stepsize,
                stepvalue=stepvalue,
                max_iter=max_iter,
            )
        )
    except (OverflowError, ZeroDivisionError):  # e.g. gamma ** iteration past the float range
        rate = math.inf
    if warmup_iter and iteration < warmup_iter:
        rate = warmup_start_lr + (rate - warmup_start_lr) * (iteration / warmup_iter)
    return rate


def rate_of(param, iteration):
    """The rate for checked solver ``param`` (the ``solver:`` section) at ``iteration``."""
    return learning_rate(
        param.lr_policy,
        iteration,
        base_lr=param.base_lr,
        gamma=param.gamma,
        power=param.power,
        stepsize=param.stepsize,
        stepvalue=param.stepvalue,
        max_iter=param.max_iter,
        warmup_iter=param.warmup_iter,
        warmup_start_lr=param.warmup_start_lr,
    )
