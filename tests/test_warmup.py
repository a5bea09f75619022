"""``netlayers warmup`` fills numba's disk cache so that a net's first iteration compiles nothing.

One real check, in child processes with the test session's cache folder (``NUMBA_CACHE_DIR``,
set empty by tests/conftest.py, which runs this check before any other test): the warmup (its
float types compiled by two processes of their own at once), then a conv net run forward and
backward with numba reporting what it saves to the cache (``NUMBA_DEBUG_CACHE``): nothing, and
it loads kernels. And the lock that keeps those two processes' cache saves apart.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np

RUN_A_CONV_NET = textwrap.dedent(
    """
    import numpy as np
    import netlayers

    def conv(name, bottom, outputs, kernel, pad, group=1):
        return {"name": name, "type": "Convolution", "bottom": bottom, "top": name,
                "convolution_param": {"num_output": outputs, "kernel_size": kernel, "pad": pad, "group": group,
                                      "weight_filler": {"type": "msra"}}}

    layers = [
        {"name": "data", "type": "Input", "top": ["data", "label"],
         "input_param": {"shape": [{"dim": [8, 3, 12, 12]}, {"dim": [8]}]}},
        conv("conv1", "data", 8, 3, 1),
        {"name": "bn1", "type": "BatchNorm", "bottom": "conv1", "top": "conv1"},
        {"name": "scale1", "type": "Scale", "bottom": "conv1", "top": "conv1", "scale_param": {"bias_term": True}},
        {"name": "relu1", "type": "ReLU", "bottom": "conv1", "top": "conv1"},
        conv("dw", "conv1", 8, 3, 1, group=8),
        {"name": "pool1", "type": "Pooling", "bottom": "dw", "top": "pool1",
         "pooling_param": {"pool": "MAX", "kernel_size": 3, "stride": 2}},
        {"name": "norm1", "type": "LRN", "bottom": "pool1", "top": "norm1"},
        {"name": "ip", "type": "InnerProduct", "bottom": "norm1", "top": "ip",
         "inner_product_param": {"num_output": 10, "weight_filler": {"type": "xavier"}}},
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["ip", "label"], "top": "loss"},
    ]
    net = netlayers.Net({"name": "warm", "layers": layers}, dtype=np.float32, seed=1)
    rng = np.random.default_rng(0)
    net.forward(data=rng.standard_normal((8, 3, 12, 12)), label=rng.integers(0, 10, 8))
    for _ in range(3):
        net.clear_param_diffs()
        net.forward()
        net.backward()
    # one 64 x 64 image whose columns (1.08 MB) pass the 1 MiB budget: bands of output rows
    banded = netlayers.Net({"name": "bands", "force_backward": True, "layers": [
        {"name": "data", "type": "Input", "top": ["data"], "input_param": {"shape": [{"dim": [1, 3, 64, 64]}]}},
        conv("wide", "data", 4, 5, 0),
        {"name": "loss", "type": "Reduction", "bottom": "wide", "top": "loss",
         "reduction_param": {"operation": "SUMSQ"}, "loss_weight": 1}]}, dtype=np.float32, seed=1)
    assert banded.layer("wide").chunks.bands is not None
    banded.forward(data=rng.standard_normal((1, 3, 64, 64)))
    banded.backward()
    print("ran")
    """
)


def run(args, cache, **kwargs):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), NUMBA_DEBUG_CACHE="1")
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=600, **kwargs)


def test_after_the_warmup_a_conv_net_compiles_nothing():
    """A net of the common layers, and one image cut into bands of rows."""
    cache = os.environ["NUMBA_CACHE_DIR"]  # the session's, empty before this first test
    warmup = run([sys.executable, "-m", "netlayers", "warmup"], cache)
    assert warmup.returncode == 0, warmup.stderr[-2000:]
    assert "warmup:" in warmup.stdout and "kernel signatures" in warmup.stdout
    assert "data saved" in warmup.stdout + warmup.stderr  # it compiled into the empty folder

    ran = run([sys.executable, "-c", RUN_A_CONV_NET], cache)
    output = ran.stdout + ran.stderr
    assert ran.returncode == 0, output[-2000:]
    assert "ran" in output
    saved = [line for line in output.splitlines() if "data saved" in line]
    assert not saved, "compiled after the warmup:\n" + "\n".join(saved)
    assert "data loaded" in output


def test_a_layer_whose_extra_is_missing_is_skipped_not_an_error(monkeypatch):
    """The README's first command installs no extras: HDF5Output's example (h5py) is skipped,
    with the reason, and warmup goes on."""
    import builtins

    from netlayers.warmup import builtin_examples, run_example_if_installed

    real_import = builtins.__import__

    def no_h5py(name, *args, **kwargs):
        if name == "h5py":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_h5py)
    example = next(example for name, example in builtin_examples() if name == "HDF5Output")
    skipped = {}
    assert run_example_if_installed("HDF5Output", example, np.float32, skipped) is False
    assert "pip install 'netlayers[hdf5]'" in skipped["HDF5Output"]
    relu = next(example for name, example in builtin_examples() if name == "ReLU")
    assert run_example_if_installed("ReLU", relu, np.float32, skipped) is True


def test_an_example_that_writes_a_file_leaves_none_behind():
    """HDF5Output's example writes a file in the temporary folder: each warmup process left one."""
    from netlayers.warmup import builtin_examples, run_example

    example = next(example for name, example in builtin_examples() if name == "HDF5Output")
    path = example["params"]["hdf5_output_param"]["file_name"]
    assert run_example("HDF5Output", example, np.float32)
    assert not os.path.exists(path)


def test_a_cache_a_finished_warmup_filled_is_loaded_without_child_processes(tmp_path, monkeypatch):
    """The stamp a finished warmup leaves: the next warmup starts no compiling children; a
    kernel file changed since (or another numba) and it does again. This process runs
    everything either way (here a stand-in for it)."""
    from netlayers import parallel, warmup

    monkeypatch.setattr(warmup, "stamp_path", lambda: str(tmp_path / warmup.STAMP_NAME))
    children = []
    monkeypatch.setattr(warmup, "compile_in_children", lambda: children.append("started"))
    monkeypatch.setattr(warmup, "compile_float_types", lambda types: warmup.WarmupReport(1, 1, 0.0, {}))
    monkeypatch.setattr(parallel, "allowed_cpus", lambda: [0, 1])
    reports = [warmup.compile_kernels() for _ in range(2)]
    assert children == ["started"] and [report.cache_was_warm for report in reports] == [False, True]

    stamp = warmup.cache_stamp()
    assert "netlayers.kernels.pooling" in stamp["sources"]
    changed = {**stamp, "sources": {**stamp["sources"], "netlayers.kernels.pooling": [0, 0]}}
    monkeypatch.setattr(warmup, "cache_stamp", lambda: changed)
    assert not warmup.compile_kernels().cache_was_warm and children == ["started"] * 2
    (tmp_path / warmup.STAMP_NAME).write_text("{not json")
    assert not warmup.compile_kernels().cache_was_warm and len(children) == 3


def test_the_childrens_cache_saves_wait_for_the_lock(tmp_path, monkeypatch):
    """``locked_cache_saves``: while another holder has the lock file, a numba cache save waits;
    it runs once the lock is let go, and the original save is put back after the block."""
    import fcntl
    import threading

    from numba.core import caching

    from netlayers.warmup import locked_cache_saves

    saved = []
    monkeypatch.setattr(caching.IndexDataCacheFile, "save", lambda self, key, data: saved.append(key))
    original = caching.IndexDataCacheFile.save
    lock = tmp_path / "saves.lock"
    with locked_cache_saves(str(lock)):
        with open(lock, "a") as holder:
            fcntl.flock(holder, fcntl.LOCK_EX)
            saver = threading.Thread(target=caching.IndexDataCacheFile.save, args=(None, "key", b""))
            saver.start()
            saver.join(0.3)
            assert saver.is_alive() and saved == []  # waiting for the lock
            fcntl.flock(holder, fcntl.LOCK_UN)
        saver.join(5)
        assert saved == ["key"]
    assert caching.IndexDataCacheFile.save is original
