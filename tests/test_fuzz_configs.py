"""Fuzz: the shipped configs, mutated, build and run or fail with one netlayers error line.

Each example takes a shipped config (``configs/*.yaml``, ``configs/examples/**/*.yaml``),
applies one to three mutations (delete a field or list item; set a value to 0, -1, 10**12,
2**40, 1e308, NaN, a 400-digit integer, a string, a list, a mapping, null, ...; rename a
field; change a layer's type; duplicate, drop or swap layers; rename a bottom; run a layer in
place; add control characters to a name), writes it as a YAML file, then builds the TRAIN and
TEST nets, runs one forward and backward pass on each, and checks the solver section. The
outcome must be success or a :class:`NetlayersError` whose message is one line; any other
exception, or a run over its time budget, fails with the mutations shown.

Bounded for the suite (seeded with ``derandomize``; a few dozen examples, each under a time
budget, memory capped at 300 MB through ``NETLAYERS_MEMORY_LIMIT``). To hunt for defects, run
many more: ``NETLAYERS_FUZZ_EXAMPLES=2000 NETLAYERS_FUZZ_SEED=7 python -m pytest
tests/test_fuzz_configs.py`` (a seed draws other examples than the suite's).
"""

import copy
import io
import math
import os
import shutil
import signal
import traceback
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from netlayers import Net, NetlayersError, Solver
from netlayers.inspect.common import random_inputs
from netlayers.memory import memory_limit
from netlayers.netspec import load_yaml_file
from netlayers.registry import layer_class, layer_types
from netlayers.solvers.base import check_solver_params
from netlayers.solvers.reporting import Reporter

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(ROOT.glob("configs/*.yaml")) + sorted(ROOT.glob("configs/examples/**/*.yaml"))
EXAMPLES = int(os.environ.get("NETLAYERS_FUZZ_EXAMPLES", "100"))
SEED = os.environ.get("NETLAYERS_FUZZ_SEED")
BUDGET = float(os.environ.get("NETLAYERS_FUZZ_BUDGET", "20"))  # seconds per mutated config
MEMORY_LIMIT = 300_000_000

VALUES = [
    0,
    -1,
    1,
    2,
    3,
    7,
    -2,
    10**12,
    2**40,
    2**31,
    1e308,
    -1e308,
    1e-300,
    math.nan,
    math.inf,
    10**400 - 1,
    0.5,
    "x",
    "",
    "TRAIN",
    "MAX",
    [],
    [0],
    [1, 2],
    [[3]],
    [2, 0, 3],
    {},
    {"a": 1},
    {"dim": [2, 3]},
    None,
    True,
    False,
]
NUMBERS = [v for v in VALUES if isinstance(v, (int, float)) and not isinstance(v, bool)]
CONTROL = ["\x00", "\n", "\r", "\x1b", "\t", "\x7f", "\u2028", "\ufeff"]
TYPES = [name for name in layer_types() if layer_class(name).__module__.startswith("netlayers.")]
IN_PLACE_TYPES = [
    "ReLU",
    "Sigmoid",
    "TanH",
    "ELU",
    "PReLU",
    "AbsVal",
    "Power",
    "Exp",
    "BNLL",
    "Dropout",
    "BatchNorm",
    "MVN",
    "Scale",
    "Bias",
    "Softmax",
    "Threshold",
    "InnerProduct",
    "Flatten",
]


def load(path):
    with open(path) as file:
        return yaml.safe_load(file)


def small_batches(tree, largest=8):
    """The config with its Data layers' batch_size at most ``largest`` (keeps each run fast)."""
    for layer in tree.get("layers", []):
        param = layer.get("data_param")
        if param and param.get("batch_size", 0) > largest:
            param["batch_size"] = largest
    return tree


BASES = {path.relative_to(ROOT).as_posix(): small_batches(load(path)) for path in CONFIGS}


class OverBudget(BaseException):
    """Raised in the test's thread when a mutated config runs past its time budget."""


@contextmanager
def time_budget(seconds):
    def expire(signum, frame):
        raise OverBudget(f"still running after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# -- mutations ------------------------------------------------------------------------------------
def positions(tree, path=()):
    """Every (path) below the root: keys of mappings, indices of lists."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    found = []
    for key, value in items:
        found.append(path + (key,))
        found.extend(positions(value, path + (key,)))
    return found


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parent_of(tree, path):
    for key in path[:-1]:
        tree = tree[key]
    return tree


def layers_of(tree):
    layers = tree.get("layers") if isinstance(tree, dict) else None
    return [i for i, layer in enumerate(layers) if isinstance(layer, dict)] if isinstance(layers, list) else []


def tops_of(layer):
    tops = layer.get("top")
    return tops if isinstance(tops, list) else [tops]


def blob_names(tree):
    names = set()
    for i in layers_of(tree):
        for key in ("top", "bottom"):
            value = tree["layers"][i].get(key)
            names.update(v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str))
    return sorted(names)


def mutate(choose, tree):
    """Apply one mutation to ``tree`` (in place), each decision ``choose(options)``; return
    what it did."""
    numbers = [p for p in positions(tree) if is_number(parent_of(tree, p)[p[-1]])]
    kinds = ["set", "set", "delete", "rename field"] + ["set number"] * 4 * bool(numbers)
    if layers_of(tree):
        kinds += [
            "layer type",
            "duplicate layer",
            "swap layers",
            "rename bottom",
            "in place",
            "insert in place",
            "control characters",
        ]
    kind = choose(kinds)
    paths = numbers if kind == "set number" else positions(tree)
    if kind in ("set", "set number", "delete", "rename field"):
        if kind == "rename field":
            paths = [p for p in paths if isinstance(p[-1], str)]
        if not paths:
            return "nothing to mutate"
        path = choose(paths)
        parent = parent_of(tree, path)
        if kind.startswith("set"):
            value = choose(NUMBERS if kind == "set number" else VALUES)
            parent[path[-1]] = copy.deepcopy(value)
            return f"set {list(path)} = {value!r:.60}"
        if kind == "delete":
            del parent[path[-1]]
            return f"delete {list(path)}"
        new = choose([path[-1] + "s", path[-1][:-1], path[-1].upper(), "layer", "bottom"])
        parent[new] = parent.pop(path[-1])
        return f"rename {list(path)} to {new!r}"
    layers = tree["layers"]
    i = choose(layers_of(tree))
    layer = layers[i]
    if kind == "layer type":
        layer["type"] = choose(TYPES)
        dropped = [key for key in layer if key.endswith("_param")] if choose([True, False]) else []
        for key in dropped:
            del layer[key]
        return f"layers[{i}].type = {layer['type']!r}" + (f" without {dropped}" if dropped else "")
    if kind == "duplicate layer":
        twin = copy.deepcopy(layer)
        if choose([True, False]) and isinstance(twin.get("name"), str):
            twin["name"] += "_twin"
        layers.insert(i + 1, twin)
        return f"duplicate layers[{i}] as {twin.get('name')!r:.40}"
    if kind == "swap layers":
        j = choose(range(len(layers)))
        layers[i], layers[j] = layers[j], layers[i]
        return f"swap layers[{i}] and layers[{j}]"
    if kind == "rename bottom":
        name = choose(blob_names(tree) + ["nowhere"])
        layer["bottom"] = name
        return f"layers[{i}].bottom = {name!r}"
    if kind == "insert in place":
        names = [t for t in tops_of(layer) if isinstance(t, str)]
        if not names:
            return f"layers[{i}] has no top to work on in place"
        blob = choose(names)
        j = choose(range(i + 1, len(layers) + 1))
        layers.insert(j, {"name": f"in_place_{j}", "type": choose(IN_PLACE_TYPES), "bottom": blob, "top": blob})
        return f"insert layers[{j}] = {layers[j]}"
    if kind == "in place":
        bottom = layer.get("bottom")
        bottom = bottom[0] if isinstance(bottom, list) and bottom else bottom
        layer["top"] = bottom
        return f"layers[{i}].top = its bottom {bottom!r}"
    field = choose(["name", "top", "bottom", "type"])
    if not isinstance(layer.get(field), str):
        return f"layers[{i}].{field} is not a string"
    layer[field] += choose(CONTROL)
    return f"layers[{i}].{field} = {layer[field]!r}"


# -- running a config -------------------------------------------------------------------------------
def run_config(path):
    """Build the TRAIN and TEST nets from ``path``, run forward and backward, check the solver."""
    for phase in ("TRAIN", "TEST"):
        net = Net(path, phase, seed=0)
        try:
            net.forward(**random_inputs(net, np.random.default_rng(0)))
            net.backward()
        finally:
            for layer in net.layers:
                if hasattr(layer, "close"):
                    layer.close()
    raw = load_yaml_file(path)
    if isinstance(raw, dict) and "solver" in raw:
        check_solver_params(raw, str(path))
        train_briefly(path)


def train_briefly(path):
    """Two iterations of the config's solver (tests, snapshots and all) into a fresh folder."""
    output = path.parent / "run"
    shutil.rmtree(output, ignore_errors=True)
    output.mkdir()
    solver = Solver(
        path, output_dir=output, max_iter=2, overwrite=True, reporter=Reporter(quiet=True, stream=io.StringIO())
    )
    # what asks for long but legitimate work is cut short (max_iter is overridden above)
    solver.param.test_iter = [min(n, 2) for n in solver.param.test_iter]
    solver.param.iter_size = min(solver.param.iter_size, 2)
    try:
        solver.solve()
    finally:
        for net in (solver.net, solver.test_net):
            for layer in net.layers if net is not None else []:
                if hasattr(layer, "close"):
                    layer.close()


def where_it_arose(err):
    frames = traceback.extract_tb(err.__traceback__)
    inside = [f for f in frames if "netlayers" in f.filename and "tests" not in f.filename] or frames
    frame = inside[-1]
    return f"{frame.filename}:{frame.lineno} ({frame.name})"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder for the mutated configs, holding the Python layer modules the examples import."""
    folder = tmp_path_factory.mktemp("fuzz")
    shutil.copy(ROOT / "configs" / "examples" / "python_layer" / "cube_layer.py", folder)
    shutil.copy(ROOT / "configs" / "examples" / "lstm_sequence_task.py", folder)
    (folder / "cifar10").mkdir()  # configs/cifar10_quick.yaml reads cifar10/{train,test}.npz next to it
    images = np.random.default_rng(0).integers(0, 256, (16, 3, 32, 32), dtype=np.uint8)
    for split in ("train", "test"):
        np.savez(folder / "cifar10" / f"{split}.npz", data=images, label=np.arange(16) % 10)
    return folder


@pytest.fixture(scope="module", autouse=True)
def limited_memory():
    """Huge sizes are refused at set-up, against a 300 MB limit, instead of being allocated."""
    saved = os.environ.get("NETLAYERS_MEMORY_LIMIT")
    os.environ["NETLAYERS_MEMORY_LIMIT"] = str(MEMORY_LIMIT)
    memory_limit.cache_clear()
    yield
    if saved is None:
        del os.environ["NETLAYERS_MEMORY_LIMIT"]
    else:
        os.environ["NETLAYERS_MEMORY_LIMIT"] = saved
    memory_limit.cache_clear()


def test_the_unmutated_configs_run(workdir):
    failures = []
    for name, tree in BASES.items():
        path = workdir / "net.yaml"
        path.write_text(yaml.safe_dump(tree, sort_keys=False))
        try:
            with time_budget(BUDGET):
                run_config(path)
        except NetlayersError as err:
            failures.append(f"{name}: {err}")
    assert not failures, failures


def fuzz_settings(test):
    test = settings(
        max_examples=EXAMPLES,
        deadline=timedelta(seconds=BUDGET),
        derandomize=SEED is None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )(test)
    return seed(int(SEED))(test) if SEED is not None else test


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # overflow, log of a negative: hostile values
@fuzz_settings
@given(data=st.data())
def test_mutated_configs_fail_only_with_one_line_netlayers_errors(workdir, data):
    name = data.draw(st.sampled_from(sorted(BASES)), label="config")
    tree = copy.deepcopy(BASES[name])

    def choose(options):
        return data.draw(st.sampled_from(list(options)))

    done = [mutate(choose, tree) for _ in range(choose([1, 1, 1, 2, 3]))]
    path = workdir / "net.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False, allow_unicode=False))
    shown = f"{name} with {'; '.join(done)}"
    try:
        with time_budget(BUDGET):
            run_config(path)
    except NetlayersError as err:
        assert "\n" not in str(err), f"{shown}: a message of several lines: {str(err)!r}"
    except OverBudget as err:
        pytest.fail(f"{shown}: {err}")
    except Exception as err:  # noqa: BLE001 - any other exception is the defect this test hunts
        pytest.fail(f"{shown}: {type(err).__name__}: {str(err)[:300]} at {where_it_arose(err)}")
