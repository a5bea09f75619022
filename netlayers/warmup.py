"""Compile every numba kernel ahead of time, into numba's on-disk cache (``netlayers warmup``).

A kernel is compiled on its first call for each kind of arguments it gets (float32 or float64,
contiguous or not), and numba keeps the machine code on disk (``cache=True``): in
``__pycache__`` beside the package's files when that folder is writable, else in the user's
cache folder (or ``$NUMBA_CACHE_DIR``). Compiling all of them takes seconds a kernel, so a fresh
install would spend them on its first iteration; ``netlayers warmup`` spends them once, at
install time, by running what the kernels serve on tiny inputs:

- every built-in layer's ``example`` settings (the ones the layer contract tests check), forward
  and backward, in float32 and float64, with one worker and with two, and once more with a
  column budget of 1 byte and no least band size (a convolution cuts its batch into chunks by
  the worker count and the budget, and chunks of one image, of several, or bands of rows take
  different kernels),
  Winograd's channel and size thresholds at 1 (then 3x3 stride-1 examples run its kernels, and
  the dilated example as Winograd over its phases) and
  the row strips' kernel and channel thresholds at 1 (then the 1x1 example runs as strips),
  1-D and 2-D Winograd's at 1 (then the 1 x 5 example runs along its axis, the 5 x 5 one
  as F(4x4, 5x5)) and the sub-pixel Deconvolution's at 1 (its shuffles);
- the Convolution examples once more with every Winograd threshold at 1 and F(4x4, 3x3)'s
  channel threshold at 1 too (its kernels; no example has its 16 channels);
- the Convolution examples once more as per-image products over the input
  (``kernels.kn2row``, its thresholds set so that every stride-1 example runs so);
- the examples of layers that can run in place, in place (a kernel may have an in-place form:
  ELU's backward);
- a BatchNorm -> Scale -> ReLU chain, which a net runs fused; the solver's update kernels and
  the data layer's conversion kernel, for the dtypes they see; a product cut over two workers
  (the compiled hand-over of ``parallel.matmul``), in both dtypes.

Afterwards the first iteration of a net only loads machine code from the cache.

numba compiles holding the GIL, so one process compiles on one core. Where there are two
cores or more, a child process compiles the float32 kernels and another the float64 ones, at
once, their cache saves under a file lock (numba's own saves can mix up two processes'
signatures, see ``compile_kernels``); this process then runs everything once more, loading
their machine code. From an empty cache on 2 cores: 173 s against 304 s in one process
(2026-12-07).
"""

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np

from . import parallel
from .blob import Blob
from .errors import NetlayersError
from .kernels import conv_gemm, deconv, kn2row, strips, winograd, winograd1d, winograd2d, winograd4
from .netspec import Where
from .netspec import check_layer as check_layer_spec
from .registry import layer_class, layer_types

try:
    import fcntl
except ImportError:  # not POSIX: one process compiles (see compile_kernels)
    fcntl = None

FLOAT_TYPES = (np.float32, np.float64)
WORKER_COUNTS = (1, 2)


@dataclass
class WarmupReport:
    """What ``compile_kernels`` ran: layer runs, kernel signatures compiled or loaded, seconds."""

    layer_runs: int
    signatures: int
    seconds: float
    skipped: dict  # layer type -> why its example could not run (an optional extra missing)
    cache_was_warm: bool = False  # a warmup of these kernels had filled the cache: no child processes


def builtin_examples():
    """(type, example) for every registered netlayers layer with bottoms (sources read files)."""
    for name in layer_types():
        cls = layer_class(name)
        if not cls.__module__.startswith("netlayers."):
            continue
        declared = vars(cls).get("example")
        for example in declared if isinstance(declared, list) else [declared] if declared else []:
            if example.get("bottoms") and not example.get("python_path"):
                yield name, example


def run_example(type_name, example, dtype, in_place=False):
    """Forward and backward of one example setting on seeded inputs of ``dtype``; with
    ``in_place``, with the top being the bottom (some kernels have an in-place form), if the
    layer's settings allow it. Returns whether it ran."""
    rng = np.random.default_rng(0)
    layer = {
        "name": "warmup",
        "type": type_name,
        "bottom": [f"b{i}" for i in range(len(example["bottoms"]))],
        "top": [f"t{i}" for i in range(example.get("tops", 1))],
        **example.get("params", {}),
    }
    spec = check_layer_spec(layer, Where(file="warmup"))
    instance = spec.cls(spec, phase=example.get("phase", "TRAIN"), dtype=dtype, rng=rng)
    if in_place and not instance.can_run_in_place():
        return False
    labels = example.get("labels", {})
    bottom = []
    for i, shape in enumerate(example["bottoms"]):
        blob = Blob(shape, dtype)
        blob.data[...] = rng.integers(0, labels[i], shape) if i in labels else rng.standard_normal(shape)
        bottom.append(blob)
    top = bottom[:1] if in_place else [Blob((), dtype) for _ in layer["top"]]
    try:
        instance.setup(bottom, top)
        instance.forward(bottom, top)
        for blob in top:
            blob.diff[...] = 1
        propagate = [instance.allow_force_backward(i) and i not in labels for i in range(len(bottom))]
        instance.backward(top, propagate, bottom)
    finally:
        if hasattr(instance, "close"):
            instance.close()
        remove_written_files(example)
    return True


def remove_written_files(example):
    """Delete the files an example's settings have its layer write (HDF5Output's, in the
    temporary folder), so that the warmup leaves none behind."""
    for param in example.get("params", {}).values():
        if isinstance(param, dict) and "file_name" in param:
            with contextlib.suppress(FileNotFoundError):
                os.remove(param["file_name"])


#: What the message of an error about a missing optional dependency says.
MISSING_EXTRA = "pip install 'netlayers["


def run_example_if_installed(type_name, example, dtype, skipped):
    """:func:`run_example`, unless the layer needs an optional extra that is not installed (h5py
    for HDF5Output): then the reason goes into ``skipped`` (such layers have no kernels of their
    own to compile). Returns whether it ran."""
    try:
        run_example(type_name, example, dtype)
    except NetlayersError as err:
        if MISSING_EXTRA not in str(err):
            raise
        skipped.setdefault(type_name, err.message)
        return False
    return True


@contextlib.contextmanager
def constants(module, **values):
    """The module's constants (thresholds, budgets) set to ``values`` for the block, then put back."""
    saved = {name: getattr(module, name) for name in values}
    try:
        for name, value in values.items():
            setattr(module, name, value)
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


WINOGRAD_EVERYWHERE = {"MIN_CHANNELS": 1, "MIN_OUTPUT_SIZE": 1, "MIN_CHANNELS_BY_SIZE": 1}


def run_winograd4_examples(float_types=FLOAT_TYPES):
    """The Convolution examples, forward and backward in float32 and float64, with every Winograd
    threshold at 1 (3x3 stride-1 examples then run as F(4x4, 3x3)), with the gathers by table
    (the examples' small maps) and without them. Returns the runs."""
    runs = 0
    for table_tiles_w in (winograd4.TABLE_TILES_W, 0):
        with (
            constants(winograd, MIN_CHANNELS_F4=1, MIN_ONE_IMAGE_TILES=1, **WINOGRAD_EVERYWHERE),
            constants(winograd4, TABLE_TILES_W=table_tiles_w),
        ):
            runs += run_convolution_examples(float_types)
    return runs


def run_kn2row_examples(float_types=FLOAT_TYPES):
    """The Convolution examples, forward and backward in float32 and float64, with kn2row's
    thresholds set so that every stride-1 example runs as its products. Returns the runs."""
    with constants(kn2row, MAX_OUTPUTS=1 << 30, MIN_ROWS=1, MANY_CHANNELS_RATIO=0):
        return run_convolution_examples(float_types)


def run_convolution_examples(float_types):
    """The Convolution layer's examples, forward and backward, in each of ``float_types``;
    returns the runs."""
    runs = 0
    for type_name, example in builtin_examples():
        if type_name == "Convolution":
            for dtype in float_types:
                run_example(type_name, example, dtype)
                runs += 1
    return runs


def run_fused_chains(float_types=FLOAT_TYPES):
    """A net with a BatchNorm -> Scale -> ReLU chain and an Eltwise SUM -> ReLU (each run
    fused: ``netlayers.layers.fused``), in float32 and float64, forward and backward."""
    from .net import Net

    layers = [
        {"name": "data", "type": "Input", "top": "x", "input_param": {"shape": {"dim": [2, 3, 4, 4]}}},
        {
            "name": "conv",
            "type": "Convolution",
            "bottom": "x",
            "top": "y",
            "convolution_param": {"num_output": 3, "kernel_size": 1},
        },
        {"name": "bn", "type": "BatchNorm", "bottom": "y", "top": "y"},
        {"name": "scale", "type": "Scale", "bottom": "y", "top": "y", "scale_param": {"bias_term": True}},
        {"name": "relu", "type": "ReLU", "bottom": "y", "top": "y"},
        {
            "name": "shortcut",
            "type": "Convolution",
            "bottom": "x",
            "top": "z",
            "convolution_param": {"num_output": 3, "kernel_size": 1},
        },
        {"name": "sum", "type": "Eltwise", "bottom": ["y", "z"], "top": "s"},
        {"name": "sum_relu", "type": "ReLU", "bottom": "s", "top": "s"},
        {"name": "loss", "type": "Reduction", "bottom": "s", "top": "loss", "loss_weight": 1},
    ]
    for dtype in float_types:
        net = Net({"name": "warmup", "layers": layers}, dtype=dtype, seed=0)
        net.forward(x=np.random.default_rng(0).standard_normal((2, 3, 4, 4)))
        net.backward()


def run_solver_and_data_kernels(float_types=FLOAT_TYPES):
    from .kernels import convert, update

    for dtype in float_types:
        weight, diff, history = (np.zeros(4, dtype) for _ in range(3))
        update.sgd_update(weight, diff, history, 0.1, 0.0, 0.9)
        update.sgd_update(weight, diff, history, 0.1, 0.0, 0.0)
        for source in (np.uint8, np.float32, np.float64):
            convert.shift_scale(np.zeros((1, 2, 3), source), np.zeros(2, dtype), 0.5, np.zeros((1, 2, 3), dtype))


def run_split_products(float_types=FLOAT_TYPES):
    """A float32 and a float64 product cut over two workers (``parallel.matmul``'s compiled
    hand-over; the examples' products are too small to be cut)."""
    before = parallel.thread_count()
    parallel.set_thread_count(2)
    try:
        with constants(parallel, MATMUL_SPLIT_FLOPS=0):
            for dtype in float_types:
                a = np.ones((64, 64), dtype)
                parallel.matmul(a, a, np.empty((64, 64), dtype))
    finally:
        parallel.set_thread_count(before)


def kernel_dispatchers():
    """Every netlayers kernel: numba's dispatcher objects in the kernel modules."""
    import numba

    from . import kernels

    for module in kernels.modules():
        for value in vars(module).values():
            if isinstance(value, numba.core.registry.CPUDispatcher):
                yield value


def kernel_signatures():
    """Compiled (or cache-loaded) signatures of every netlayers kernel in this process."""
    return sum(len(kernel.signatures) for kernel in kernel_dispatchers())


def run_in_place_examples(float_types=FLOAT_TYPES):
    """The examples of layers that can run in place, one bottom and one top, in place, in
    float32 and float64. Returns the runs."""
    runs = 0
    for type_name, example in builtin_examples():
        if layer_class(type_name).in_place and len(example["bottoms"]) == 1 and example.get("tops", 1) == 1:
            for dtype in float_types:
                runs += run_example(type_name, example, dtype, in_place=True)
    return runs


def run_all_examples(skipped, float_types=FLOAT_TYPES):
    """Every built-in layer's examples in float32 and float64; returns the runs."""
    runs = 0
    for type_name, example in builtin_examples():
        for dtype in float_types:
            runs += run_example_if_installed(type_name, example, dtype, skipped)
    return runs


def compile_kernels():
    """Run every kernel as described in the module text; returns a :class:`WarmupReport`.

    Where this process may use two cores or more (and file locks exist), a child process first
    compiles each float type's kernels into the cache, side by side (numba compiles holding the
    GIL: one process compiles on one core at a time); then this process runs everything once
    more, which loads their machine code (and would compile whatever they left out). Numba's
    cache saves are not safe between processes: a save reads the kernel's index, picks the first
    free data file name and writes both, so two processes saving a kernel at once may write the
    same data file under two signatures; the children take a lock around each save
    (``locked_cache_saves``). A finished warmup leaves a stamp in the cache folder
    (``cache_stamp``): when it matches, the cache is warm and this process loads it alone
    (a second run of the install command: 2.3 to 3.1 s, against 5.7 to 6.7 s with the children)."""
    start = time.perf_counter()
    stamp = cache_stamp()
    warm = read_stamp() == stamp
    if not warm and fcntl is not None and len(parallel.allowed_cpus()) > 1:
        compile_in_children()
    report = compile_float_types(FLOAT_TYPES)
    write_stamp(stamp)
    report.seconds = time.perf_counter() - start
    report.cache_was_warm = warm
    return report


STAMP_NAME = "netlayers-warmup.json"


def cache_stamp():
    """What a warmup fills the cache for: the versions of Python, numpy and numba, and each
    kernel module's file (its modification time and size, which numba's index keeps too)."""
    import numba

    from . import kernels

    sources = {}
    for module in kernels.modules():
        info = os.stat(module.__file__)
        sources[module.__name__] = [info.st_mtime_ns, info.st_size]
    return {"python": sys.version, "numpy": np.__version__, "numba": numba.__version__, "sources": sources}


def stamp_path():
    """The stamp's file, in the folder where numba keeps the kernels' machine code."""
    return os.path.join(next(kernel_dispatchers())._cache.cache_path, STAMP_NAME)


def read_stamp():
    """The stamp the last finished warmup wrote into the cache folder, or None. It only decides
    whether child processes compile first: whatever the cache lacks, this process compiles."""
    try:
        with open(stamp_path()) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def write_stamp(stamp):
    """Record ``stamp`` after a finished warmup (quietly not, where the folder is read-only)."""
    with contextlib.suppress(OSError):
        with open(stamp_path(), "w") as handle:
            json.dump(stamp, handle)


CHILD = (
    "import sys, numpy; from netlayers.warmup import compile_float_types, locked_cache_saves\n"
    "with locked_cache_saves(sys.argv[2]):\n"
    "    compile_float_types((numpy.dtype(sys.argv[1]),))"
)


def compile_in_children():
    """One child process a float type, each compiling that type's kernels into the cache, at
    the same time, their cache saves one at a time; a :class:`NetlayersError` naming the type
    if a child fails."""
    with tempfile.TemporaryDirectory(prefix="netlayers-warmup-") as folder:
        lock = os.path.join(folder, "cache-saves.lock")
        children = []
        for dtype in FLOAT_TYPES:
            name = np.dtype(dtype).name
            command = [sys.executable, "-c", CHILD, name, lock]
            children.append((name, subprocess.Popen(command, stderr=subprocess.PIPE, text=True)))
        failed = []
        for name, child in children:
            _, stderr = child.communicate()
            if child.returncode:
                last = (stderr.strip().splitlines() or ["no output"])[-1]
                failed.append(f"the {name} compile process failed (exit {child.returncode}): {last}")
    if failed:
        raise NetlayersError("warmup: " + "; ".join(failed))


@contextlib.contextmanager
def locked_cache_saves(lock_path):
    """numba's cache saves, in this process, each under an exclusive lock of the file
    ``lock_path`` (created if missing): processes that all take it save one at a time."""
    from numba.core import caching

    original = caching.IndexDataCacheFile.save

    def save(self, key, data):
        with open(lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                original(self, key, data)
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    caching.IndexDataCacheFile.save = save
    try:
        yield
    finally:
        caching.IndexDataCacheFile.save = original


def compile_float_types(float_types):
    """Run every kernel for ``float_types`` (see the module text); returns a :class:`WarmupReport`."""
    start = time.perf_counter()
    before = parallel.thread_count()
    runs = 0
    skipped: dict = {}
    try:
        for workers in WORKER_COUNTS:
            parallel.set_thread_count(workers)
            runs += run_all_examples(skipped, float_types)
        # one worker, one-image chunks (a column budget of 1 byte), Winograd's and the row strips'
        # thresholds at 1: the kernels of every other way a convolution can run
        parallel.set_thread_count(1)
        with (
            constants(conv_gemm, COLUMN_CHUNK_BYTES=1, MIN_BAND_PIXELS=1),  # bands of one row
            constants(winograd, MIN_ONE_IMAGE_TILES=1, **WINOGRAD_EVERYWHERE),
            constants(strips, MIN_KERNEL=1, MIN_CHANNELS=1, MIN_WORK=1),
            constants(winograd1d, MIN_CHANNELS=1, MIN_TILES=1),
            constants(winograd2d, MIN_SHARE_OUTPUTS=1, **WINOGRAD_EVERYWHERE),
            constants(deconv, SUBPIXEL_MIN_OUTPUT_PIXELS=1, SUBPIXEL_MIN_OUTPUTS=1),
        ):
            runs += run_all_examples(skipped, float_types)
    finally:
        parallel.set_thread_count(before)
    run_split_products(float_types)
    runs += run_winograd4_examples(float_types)
    runs += run_kn2row_examples(float_types)
    runs += run_in_place_examples(float_types)
    run_fused_chains(float_types)
    run_solver_and_data_kernels(float_types)
    return WarmupReport(runs, kernel_signatures(), time.perf_counter() - start, skipped)
