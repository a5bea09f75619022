"""One contract every registered layer passes, walked from ``netlayers.registry``.

Each built-in layer class declares ``example``: a dict, or a list of dicts, each a small setting
of the layer to test:

- ``bottoms``: the bottom shapes; their values are drawn N(0, 1) (seeded);
- ``labels``: ``{bottom index: K}``: that bottom holds class indices, integers in [0, K)
  (never perturbed by the gradient check);
- ``positive``: ``[bottom index, ...]``: those bottoms hold |N(0, 1)| + 0.05 (probabilities,
  say, for a layer that reads them as they are);
- ``params``: the rest of the layer's YAML mapping (``convolution_param``, ``loss_weight``, ...);
- ``tops``: the number of tops (default 1); ``phase``: "TRAIN" (default) or "TEST";
- ``top_shapes``: for a source layer (no bottoms), the shapes its tops must have;
- ``python_path``: a folder, from the project root, to import a Python layer's module from
  (the Python type's example runs the shipped ``configs/examples/python_layer/cube_layer.py``,
  so what users copy is what gets checked).

For every example: (a) the float64 gradient check passes for bottoms and params; (b) param
diffs accumulate (two backward passes give exactly twice one) while bottom diffs are written
(the same both times); (c) backward leaves the tops' diffs alone and forward/backward leave
the bottoms' data alone; (d) float32 forward and backward agree with float64; (e) in place
(where the layer allows it) gives the out-of-place top data, bottom diff and param diffs;
(f) a layer declaring ``keep_top_data = False`` gives the same gradients when its tops' data is
overwritten between forward and backward, and one declaring ``keep_bottom_data = False`` when its
bottoms' data is (apart and in place); (g) backward before forward is a NetlayersError,
and a bottom with a zero-size axis is a ConfigError at setup; bottoms without axes (shape ())
work or raise a one-line netlayers error. A registered type without an example fails (h).
(i) With every split over the worker threads forced on, 3 workers give 1 worker's results.
Beyond the list: bottoms given a new batch size after a first forward give what a layer set up
for those shapes gives (Reshape runs before every forward). Source layers (no bottoms) are
checked for their top shapes, float32 vs float64 data, and a backward that does nothing (or,
for a source of learned values such as Parameter, a gradient check of its params).
"""

import sys
from pathlib import Path

import numpy as np
import pytest

from netlayers import ConfigError, NetlayersError
from netlayers.blob import Blob
from netlayers.gradcheck import check_layer
from netlayers.netspec import Where
from netlayers.netspec import check_layer as check_layer_spec
from netlayers.registry import layer_class, layer_types
from netlayers.warmup import remove_written_files

ROOT = Path(__file__).resolve().parents[2]


def builtin_types():
    """Every registered type whose class is netlayers' own (tests register types of their own)."""
    return [name for name in layer_types() if layer_class(name).__module__.startswith("netlayers.")]


def examples_of(type_name):
    declared = vars(layer_class(type_name)).get("example")
    if declared is None:
        return []
    return declared if isinstance(declared, list) else [declared]


ALL = [(name, i, example) for name in builtin_types() for i, example in enumerate(examples_of(name))]
WITH_BOTTOMS = [case for case in ALL if case[2].get("bottoms")]
SOURCES = [case for case in ALL if not case[2].get("bottoms")]


def ids(case):
    return f"{case[0]}-{case[1]}"


@pytest.fixture(scope="module", autouse=True)
def no_files_left():
    """The examples' output files (HDF5Output's, in the temporary folder) go with the module."""
    yield
    for _, _, example in ALL:
        remove_written_files(example)


# -- building a layer from an example -------------------------------------------------------------
def layer_dict(type_name, example):
    bottoms = example.get("bottoms", [])
    layer = {
        "name": f"{type_name.lower()}_under_test",
        "type": type_name,
        "bottom": [f"b{i}" for i in range(len(bottoms))],
        "top": [f"t{i}" for i in range(example.get("tops", 1))],
    }
    layer.update(example.get("params", {}))
    return layer


def bottom_values(example, dtype=np.float64, seed=3):
    """The example's bottom arrays: class indices where it says so, N(0, 1) elsewhere; rounded
    to float32 so that a float32 and a float64 layer see the same numbers."""
    rng = np.random.default_rng(seed)
    labels = example.get("labels", {})
    arrays = []
    for i, shape in enumerate(example.get("bottoms", [])):
        if i in labels:
            values = rng.integers(0, labels[i], size=shape).astype(np.float64)
        else:
            values = rng.standard_normal(shape)
            if i in example.get("positive", ()):
                values = np.abs(values) + 0.05
        arrays.append(values.astype(np.float32).astype(dtype))
    return arrays


class Built:
    """A set-up layer with its bottom and top blobs."""

    def __init__(self, type_name, example, *, dtype=np.float64, in_place=False, seed=0, shapes=None):
        if example.get("python_path"):
            path = str(ROOT / example["python_path"])
            if path not in sys.path:
                sys.path.insert(0, path)
        spec = check_layer_spec(layer_dict(type_name, example), Where(file="example.yaml", line=1))
        self.layer = spec.cls(spec, phase=example.get("phase", "TRAIN"), dtype=dtype, rng=np.random.default_rng(seed))
        self.example = example
        given = shapes is None
        shapes = example.get("bottoms", []) if given else shapes
        self.bottom = [Blob(shape, dtype, name=f"b{i}") for i, shape in enumerate(shapes)]
        if given:
            for blob, values in zip(self.bottom, bottom_values(example, dtype)):
                blob.data[...] = values
        self.top = [Blob((), dtype, name=f"t{i}") for i in range(example.get("tops", 1))]
        if in_place:
            self.top[0] = self.bottom[0]
        self.layer.setup(self.bottom, self.top)

    @property
    def propagate(self):
        """Which bottoms ask for a gradient: those the layer allows, never a label bottom."""
        labels = self.example.get("labels", {})
        return [self.layer.allow_force_backward(i) and i not in labels for i in range(len(self.bottom))]

    def forward(self):
        return self.layer.forward(self.bottom, self.top)

    def set_top_diffs(self, seed=11):
        rng = np.random.default_rng(seed)
        for blob in self.top:
            blob.diff[...] = rng.standard_normal(blob.shape).astype(np.float32)

    def backward(self):
        self.layer.backward(self.top, self.propagate, self.bottom)

    def zero_param_diffs(self):
        for blob in self.layer.blobs:
            blob.diff[...] = 0

    def close(self):
        if hasattr(self.layer, "close"):
            self.layer.close()


@pytest.fixture
def build():
    """Build layers from examples; close them (data layers' prefetch threads) afterwards."""
    made = []

    def make(*args, **kwargs):
        built = Built(*args, **kwargs)
        made.append(built)
        return built

    yield make
    for built in made:
        built.close()


def gradients(built):
    """Copies of the bottom diffs (where asked for) and param diffs after one backward pass."""
    built.zero_param_diffs()
    built.backward()
    bottoms = [b.diff.copy() if need else None for b, need in zip(built.bottom, built.propagate)]
    return bottoms, [p.diff.copy() for p in built.layer.blobs]


def takes_gradient(built):
    return built.layer.has_backward and (any(built.propagate) or any(built.layer.param_propagate_down))


# -- (a) gradient check ---------------------------------------------------------------------------
@pytest.mark.parametrize("case", WITH_BOTTOMS, ids=ids)
def test_gradients_match_central_differences(case, build):
    type_name, _, example = case
    built = build(type_name, example)
    if not takes_gradient(built):
        assert not built.layer.has_backward, f"{type_name}: nothing takes a gradient in its example"
        return
    check = [i for i, need in enumerate(built.propagate) if need]
    report = check_layer(built.layer, built.bottom, tops=built.top, check_bottoms=check, seed=5)
    assert report.blobs, "nothing was gradient-checked"
    assert all(b.checked > 0 for b in report.blobs), report.table()
    assert report.passed, report.table()


# -- (b) accumulation ------------------------------------------------------------------------------
@pytest.mark.parametrize("case", WITH_BOTTOMS, ids=ids)
def test_param_diffs_accumulate_and_bottom_diffs_are_written(case, build):
    type_name, _, example = case
    built = build(type_name, example)
    if not takes_gradient(built):
        return
    built.forward()
    built.set_top_diffs()
    bottoms_once, params_once = gradients(built)
    built.backward()  # again, without clearing the param diffs
    for i, (blob, once) in enumerate(zip(built.layer.blobs, params_once)):
        if built.layer.param_propagate_down[i]:
            # exactly 2x for one added term; a param shared by several bottoms (Convolution)
            # adds one term per bottom, so the sums may round differently in the last bit
            np.testing.assert_allclose(
                blob.diff, 2 * once, rtol=1e-13, atol=0, err_msg=f"param {i} must accumulate (+=)"
            )
    for i, (blob, once) in enumerate(zip(built.bottom, bottoms_once)):
        if once is not None:
            np.testing.assert_array_equal(blob.diff, once, err_msg=f"bottom {i}'s diff must be written")


# -- (c) what forward and backward must not touch --------------------------------------------------
@pytest.mark.parametrize("case", WITH_BOTTOMS, ids=ids)
def test_backward_leaves_top_diffs_and_both_leave_bottom_data(case, build):
    type_name, _, example = case
    built = build(type_name, example)
    inputs = [b.data.copy() for b in built.bottom]
    built.forward()
    for i, (blob, before) in enumerate(zip(built.bottom, inputs)):
        np.testing.assert_array_equal(blob.data, before, err_msg=f"forward changed bottom {i}'s data")
    built.set_top_diffs()
    upstream = [t.diff.copy() for t in built.top]
    built.backward()
    for i, (blob, before) in enumerate(zip(built.top, upstream)):
        np.testing.assert_array_equal(blob.diff, before, err_msg=f"backward changed top {i}'s diff")
    for i, (blob, before) in enumerate(zip(built.bottom, inputs)):
        np.testing.assert_array_equal(blob.data, before, err_msg=f"backward changed bottom {i}'s data")


# -- (d) float32 against float64 -------------------------------------------------------------------
def assert_close_in_float32(got, want, what):
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5 * scale, err_msg=what)


@pytest.mark.parametrize("case", WITH_BOTTOMS, ids=ids)
def test_float32_agrees_with_float64(case, build):
    type_name, _, example = case
    wide, narrow = build(type_name, example), build(type_name, example, dtype=np.float32)
    for p64, p32 in zip(wide.layer.blobs, narrow.layer.blobs):
        p32.data[...] = p64.data
        p64.data[...] = p32.data  # both hold the same float32 numbers
    for built in (wide, narrow):
        built.forward()
        built.set_top_diffs()
    for i, (t32, t64) in enumerate(zip(narrow.top, wide.top)):
        assert t32.data.dtype == np.float32, f"top {i} of a float32 layer is {t32.data.dtype}"
        assert_close_in_float32(t32.data, t64.data, f"top {i}'s data")
    if not takes_gradient(wide):
        return
    (b64, p64), (b32, p32) = gradients(wide), gradients(narrow)
    for i, (got, want) in enumerate(zip(b32, b64)):
        if want is not None:
            assert_close_in_float32(got, want, f"bottom {i}'s diff")
    for i, (got, want) in enumerate(zip(p32, p64)):
        assert_close_in_float32(got, want, f"param {i}'s diff")


# -- Reshape runs before every forward: a new batch size after set-up --------------------------------
@pytest.mark.parametrize("case", WITH_BOTTOMS, ids=ids)
def test_a_new_batch_size_gives_what_a_layer_set_up_for_it_gives(case, build):
    """Bottoms reshaped after a first forward (batch + 1: axis 0 of every bottom sharing the
    first bottom's batch) give the tops and gradients of a layer built for the new shapes."""
    type_name, _, example = case
    batch = example["bottoms"][0][0]
    grown = [((s[0] + 1,) + tuple(s[1:])) if s[0] == batch else tuple(s) for s in example["bottoms"]]
    reused, fresh = build(type_name, example), build(type_name, dict(example, bottoms=grown))
    reused.forward()
    for blob, values in zip(reused.bottom, bottom_values(dict(example, bottoms=grown))):
        blob.reshape(values.shape)
        blob.data[...] = values
    for mine, theirs in zip(reused.layer.blobs, fresh.layer.blobs):
        theirs.data[...] = mine.data
    reused.layer.rng, fresh.layer.rng = np.random.default_rng(1), np.random.default_rng(1)
    for built in (reused, fresh):
        built.forward()
    for i, (got, want) in enumerate(zip(reused.top, fresh.top)):
        assert got.shape == want.shape, f"top {i}"
        np.testing.assert_allclose(got.data, want.data, rtol=1e-12, atol=1e-14, err_msg=f"top {i}")
    if not takes_gradient(fresh):
        return
    reused.set_top_diffs()
    fresh.set_top_diffs()
    (bottoms, params), (bottoms_fresh, params_fresh) = gradients(reused), gradients(fresh)
    for i, (got, want) in enumerate(zip(bottoms + params, bottoms_fresh + params_fresh)):
        if want is not None:
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14, err_msg=f"gradient {i}")


# -- (e) in place -----------------------------------------------------------------------------------
def allows_in_place(built):
    check = getattr(built.layer, "can_run_in_place", None)
    return check() if callable(check) else built.layer.in_place


@pytest.mark.parametrize("case", WITH_BOTTOMS, ids=ids)
def test_in_place_matches_out_of_place(case, build):
    type_name, _, example = case
    apart = build(type_name, example)
    if not apart.top:
        return
    if not allows_in_place(apart):
        with pytest.raises(ConfigError, match="in place"):
            build(type_name, example, in_place=True)
        return
    joined = build(type_name, example, in_place=True)
    for mine, theirs in zip(joined.layer.blobs, apart.layer.blobs):
        np.testing.assert_array_equal(mine.data, theirs.data)
    for built in (apart, joined):
        built.forward()
    outputs = [t.data.copy() for t in apart.top]
    np.testing.assert_array_equal(joined.top[0].data, outputs[0], err_msg="in place gives another top")
    if not takes_gradient(apart):
        return
    apart.set_top_diffs()
    joined.set_top_diffs()
    (bottoms, params), (bottoms_joined, params_joined) = gradients(apart), gradients(joined)
    for i, (got, want) in enumerate(zip(bottoms_joined, bottoms)):
        if want is not None:
            np.testing.assert_allclose(
                got, want, rtol=1e-12, atol=1e-14, err_msg=f"in place gives another diff for bottom {i}"
            )
    for i, (got, want) in enumerate(zip(params_joined, params)):
        np.testing.assert_allclose(
            got, want, rtol=1e-12, atol=1e-14, err_msg=f"in place gives another diff for param {i}"
        )


# -- (f) keep_top_data, checked empirically -------------------------------------------------------
@pytest.mark.parametrize("case", WITH_BOTTOMS, ids=ids)
def test_a_layer_declaring_it_does_not_read_its_tops_does_not(case, build):
    """``keep_top_data = False`` (read on the set-up layer: ReLU decides per instance) is
    checked by overwriting the tops' data between forward and backward: no gradient changes.
    A True declaration is always safe (the net then keeps the tops as they are)."""
    type_name, _, example = case
    built = build(type_name, example)
    assert isinstance(getattr(built.layer, "keep_top_data", None), bool), "declare keep_top_data"
    if built.layer.keep_top_data or not takes_gradient(built):
        return
    assert_gradients_ignore(built, built.top, "top")


def assert_gradients_ignore(built, overwritten, what):
    """Forward, then the gradients twice: as they come, and with ``overwritten``'s data replaced
    by other numbers (the top diffs set again: in place, backward wrote the bottom's diff over
    the top's). They must agree exactly."""
    built.forward()
    built.set_top_diffs()
    bottoms, params = gradients(built)
    rng = np.random.default_rng(17)
    for blob in overwritten:
        blob.data[...] = rng.standard_normal(blob.shape) * 3 + 1
    built.set_top_diffs()
    bottoms_after, params_after = gradients(built)
    for i, (before, after) in enumerate(zip(bottoms, bottoms_after)):
        if before is not None:
            np.testing.assert_array_equal(after, before, err_msg=f"bottom {i}'s diff read the {what} data")
    for i, (before, after) in enumerate(zip(params, params_after)):
        np.testing.assert_array_equal(after, before, err_msg=f"param {i}'s diff read the {what} data")


def test_some_layers_declare_they_do_not_read_their_tops():
    declared = [name for name in builtin_types() if vars(layer_class(name)).get("keep_top_data") is False]
    assert len(declared) >= 10, declared


@pytest.mark.parametrize("in_place", [False, True], ids=["apart", "in_place"])
@pytest.mark.parametrize("case", WITH_BOTTOMS, ids=ids)
def test_a_layer_declaring_it_does_not_read_its_bottoms_does_not(case, in_place, build):
    """``keep_bottom_data = False`` (read on the set-up layer: Scale and BatchNorm decide per
    instance) is checked by overwriting the bottoms' data between forward and backward: no
    gradient changes. In place too, where the layer allows it and does not keep its top."""
    type_name, _, example = case
    built = build(type_name, example)
    assert isinstance(getattr(built.layer, "keep_bottom_data", None), bool), "declare keep_bottom_data"
    if in_place:
        if not built.top or not allows_in_place(built):
            return
        built = build(type_name, example, in_place=True)
        if built.layer.keep_top_data:
            return
    if built.layer.keep_bottom_data or not takes_gradient(built):
        return
    assert_gradients_ignore(built, built.bottom, "bottom")


def test_some_layers_declare_they_do_not_read_their_bottoms():
    declared = [name for name in builtin_types() if vars(layer_class(name)).get("keep_bottom_data") is False]
    assert len(declared) >= 10, declared


# -- (g) misuse ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", WITH_BOTTOMS, ids=ids)
def test_backward_before_forward_is_an_error(case, build):
    type_name, _, example = case
    built = build(type_name, example)
    if not takes_gradient(built):
        built.backward()  # nothing flows back: a harmless no-op
        return
    built.set_top_diffs()
    with pytest.raises(NetlayersError) as info:
        built.backward()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("case", WITH_BOTTOMS, ids=ids)
def test_a_zero_size_axis_is_refused_at_setup(case, build):
    type_name, _, example = case
    accepted = []
    for i, shape in enumerate(example["bottoms"]):
        for axis in range(len(shape)):
            shapes = [tuple(s) for s in example["bottoms"]]
            shapes[i] = shape[:axis] + (0,) + shape[axis + 1 :]
            try:
                build(type_name, example, shapes=shapes)
            except ConfigError as err:
                assert "\n" not in str(err)
            else:
                accepted.append(shapes)
    assert not accepted, f"bottoms with a zero-size axis were accepted: {accepted}"


def with_axis(type_name, example, axis):
    """The example with ``axis`` set in every param block of the type that has that field."""
    params = {block: dict(values) for block, values in example.get("params", {}).items() if isinstance(values, dict)}
    for block, fields in layer_class(type_name).param_blocks().items():
        if "axis" in fields:
            params.setdefault(block, {})["axis"] = axis
    return dict(example, params={**example.get("params", {}), **params})


@pytest.mark.parametrize("case", WITH_BOTTOMS, ids=ids)
def test_bottoms_without_axes_work_or_are_refused_in_one_line(case, build):
    """A blob of shape () (a loss, a DummyData shape without dims) as every bottom, with the
    example's params and with axis 0 or -1: set-up, forward and backward run, or a netlayers
    error says why (never an IndexError from reading an axis that is not there)."""
    type_name, _, example = case
    for variant in [example] + [with_axis(type_name, example, axis) for axis in (0, -1)]:
        try:
            built = build(type_name, variant, shapes=[()] * len(example["bottoms"]))
            built.forward()
            built.set_top_diffs()
            built.backward()
        except NetlayersError as err:
            assert "\n" not in str(err)


# -- (i) workers ----------------------------------------------------------------------------------
@pytest.mark.parametrize("case", WITH_BOTTOMS, ids=ids)
def test_work_shared_over_workers_gives_the_one_worker_results(case, build, thread_count, monkeypatch):
    """Every split over the workers forced on (however small the work), 3 workers against 1:
    tops and bottom diffs equal, param diffs equal to rounding (a convolution's weight
    gradient adds per-worker partial sums)."""
    from netlayers import parallel

    monkeypatch.setattr(parallel, "SPLIT_MIN_BYTES", 0)
    monkeypatch.setattr(parallel, "MATMUL_SPLIT_FLOPS", 0)
    type_name, _, example = case
    results = []
    for workers in (1, 3):
        thread_count(workers)
        built = build(type_name, example)
        built.forward()
        tops = [t.data.copy() for t in built.top]
        if takes_gradient(built):
            built.set_top_diffs()
            bottoms, params = gradients(built)
        else:
            bottoms, params = [], []
        results.append((tops, bottoms, params))
    (tops1, bottoms1, params1), (tops3, bottoms3, params3) = results
    for one, three in zip(tops1 + bottoms1, tops3 + bottoms3):
        if one is not None:
            np.testing.assert_allclose(three, one, rtol=1e-12, atol=1e-12)
    for one, three in zip(params1, params3):
        np.testing.assert_allclose(three, one, rtol=1e-12, atol=1e-12)


# -- source layers ---------------------------------------------------------------------------------
def feed_if_fed_from_python(built):
    """MemoryData (a layer with ``reset(data, labels)``) is fed arrays of its top shapes."""
    if hasattr(built.layer, "reset"):
        shapes = built.example["top_shapes"]
        count = 2 * shapes[0][0]
        data = np.random.default_rng(0).standard_normal((count,) + tuple(shapes[0][1:]))
        built.layer.reset(data, np.arange(count) % 3)


@pytest.mark.parametrize("case", SOURCES, ids=ids)
def test_source_layers_make_their_shapes_agree_across_dtypes_and_have_no_backward(case, build):
    type_name, _, example = case
    wide, narrow = build(type_name, example), build(type_name, example, dtype=np.float32)
    for built in (wide, narrow):
        feed_if_fed_from_python(built)
        built.forward()
    assert [t.shape for t in wide.top] == [tuple(s) for s in example["top_shapes"]]
    for t32, t64 in zip(narrow.top, wide.top):
        assert t32.data.dtype == np.float32
        assert_close_in_float32(t32.data, t64.data, f"{type_name}'s top")
    if wide.layer.blobs:  # learned values as a top (Parameter): the gradient reaches the params
        report = check_layer(wide.layer, [], tops=wide.top, seed=5)
        assert report.blobs and report.passed, report.table()
        return
    assert not wide.layer.has_backward
    outputs = [t.data.copy() for t in wide.top]
    wide.set_top_diffs()
    upstream = [t.diff.copy() for t in wide.top]
    wide.layer.backward(wide.top, [], [])
    for t, data, diff in zip(wide.top, outputs, upstream):
        np.testing.assert_array_equal(t.data, data)
        np.testing.assert_array_equal(t.diff, diff)


# -- (h) every type has an example -----------------------------------------------------------------
def test_every_registered_type_declares_an_example():
    missing = [name for name in builtin_types() if not examples_of(name)]
    assert not missing, f"registered layer types without an `example`: {missing}"
    assert len(ALL) >= len(builtin_types())
