"""netlayers.io under hostile files and faults (issue 9): .npy headers that claim more than the
machine or the archive holds, solver states given where weights are expected, file modes,
and which temporary files count as leftovers."""

import io
import os
import re
import zipfile

import numpy as np
import pytest
import yaml
from test_io import net  # the same one-layer net

import netlayers.io
from netlayers import ConfigError, DataError, Net, NetlayersError
from netlayers.cli.main import main
from netlayers.io import load_arrays, load_weights, save_arrays
from netlayers.solvers import Solver


def claiming_npy(shape, payload=b"\0" * 64):
    """An .npy member whose header claims ``shape`` float64 but that holds only ``payload``."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f8", "fortran_order": False, "shape": shape})
    return buffer.getvalue() + payload


def write_zip(path, members, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED], ids=["stored", "deflated"])
def test_a_header_claiming_more_than_the_machine_holds_is_refused_before_allocating(tmp_path, compression):
    path = write_zip(tmp_path / "huge.npz", {"ip/0.npy": claiming_npy((10**12,))}, compression)
    for load in (load_arrays, load_weights, net().load):
        with pytest.raises(NetlayersError) as info:  # not a MemoryError
            load(path)
        text = str(info.value)
        assert "\n" not in text
        assert re.match(
            re.escape(f"array 'ip/0' of the file {path} would need ")
            + r"7,45[01](\.\d)? GiB, more than this machine's memory \(",
            text,
        )


def test_a_header_claiming_more_than_its_member_holds_is_damage(tmp_path):
    path = write_zip(tmp_path / "short.npz", {"ip/0.npy": claiming_npy((1000,), b"\0" * 80)})
    with pytest.raises(DataError) as info:
        load_arrays(path)
    assert str(info.value) == (
        f"{path}: truncated or damaged .npz archive: array 'ip/0' cannot be "
        "read (its header claims 8,000 bytes, its member holds 80)"
    )


def test_a_good_archive_still_loads(tmp_path):
    path = tmp_path / "w.npz"
    save_arrays(path, {"ip/0": np.arange(15.0).reshape(3, 5), "empty/0": np.zeros((0, 4))})
    arrays = load_arrays(path)
    np.testing.assert_array_equal(arrays["ip/0"], np.arange(15.0).reshape(3, 5))
    assert arrays["empty/0"].shape == (0, 4)


# -- a solver state where weights are expected ----------------------------------------------------------

SMALL = {
    "name": "small",
    "layers": [
        {
            "name": "data",
            "type": "DummyData",
            "top": ["x", "t"],
            "dummy_data_param": {
                "shape": [{"dim": [2, 4]}, {"dim": [2, 3]}],
                "data_filler": [{"type": "gaussian"}, {"type": "constant", "value": 0.5}],
            },
        },
        {
            "name": "ip",
            "type": "InnerProduct",
            "bottom": "x",
            "top": "y",
            "inner_product_param": {"num_output": 3, "weight_filler": {"type": "gaussian"}},
        },
        {"name": "loss", "type": "EuclideanLoss", "bottom": ["y", "t"], "top": "loss"},
    ],
    "solver": {"base_lr": 0.1, "max_iter": 2},
}


def snapshot_of_small(tmp_path):
    solver = Solver(SMALL, output_dir=tmp_path, reporter=None)
    solver.step(2)
    weights = solver.snapshot()
    return weights, weights.with_name("small_iter_2.solverstate.npz")


def test_a_solver_state_loads_as_the_weights_it_names(tmp_path, capsys):
    weights, state = snapshot_of_small(tmp_path)
    from_state, from_weights = load_weights(state), load_weights(weights)
    assert from_state.keys() == from_weights.keys() == {"ip"}
    for a, b in zip(from_state["ip"], from_weights["ip"]):
        np.testing.assert_array_equal(a, b)
    net = Net(SMALL, seed=5)
    net.load(state)
    np.testing.assert_array_equal(net.params["ip"][0].data, from_weights["ip"][0])
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(SMALL))
    capsys.readouterr()
    assert main(["test", "--config", str(config), "--weights", str(state), "--iterations", "1"]) == 0
    assert "error" not in capsys.readouterr().err


def test_a_solver_state_naming_no_usable_weights_file_is_one_line(tmp_path):
    _, state = snapshot_of_small(tmp_path)
    arrays = load_arrays(state)
    arrays["weights_file"] = np.array(7)
    bad = tmp_path / "bad.solverstate.npz"
    save_arrays(bad, arrays)
    with pytest.raises(
        ConfigError,
        match=re.escape(f"{bad}: field 'weights_file': must be the weights file's name (text), got an array of int64"),
    ):
        load_weights(bad)
    arrays["weights_file"] = np.array(state.name)  # a state naming a state
    save_arrays(bad, arrays)
    with pytest.raises(ConfigError, match=re.escape(f"{state}: is a solver state, expected the weights")):
        load_weights(bad)


# -- modes and leftovers -------------------------------------------------------------------------------------


def test_save_arrays_gives_the_mode_open_would(tmp_path):
    previous = os.umask(0o022)
    try:
        save_arrays(tmp_path / "w.npz", {"a": np.zeros(2)})
    finally:
        os.umask(previous)
    assert oct((tmp_path / "w.npz").stat().st_mode & 0o777) == oct(0o644)


def test_only_exact_temporaries_of_the_given_names_are_leftovers(tmp_path):
    names = {
        ".w_iter_3.weights.npz.a1b2c3d_.tmp": True,
        ".w_iter_3.weights.npz.a1b2c3d.tmp": False,
        ".w_iter_3.weights.npz.a1b2c3d_.tmpx": False,
        ".v_iter_3.weights.npz.a1b2c3d_.tmp": False,
        "w_iter_3.weights.npz.a1b2c3d_.tmp": False,
    }
    for name in names:
        (tmp_path / name).write_text("")
    removed = netlayers.io.remove_leftover_temporaries(tmp_path, r"w_iter_\d+\.weights\.npz")
    assert sorted(p.name for p in removed) == [name for name, ours in names.items() if ours]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(n for n, ours in names.items() if not ours)
    assert netlayers.io.remove_leftover_temporaries(tmp_path / "missing", ".*") == []
