"""HDF5Data and HDF5Output against files written with h5py as Caffe users write them."""

import sys
import textwrap

import h5py
import numpy as np
import pytest

from netlayers import DataError, Net


def write_h5(path, **datasets):
    with h5py.File(path, "w") as handle:
        for name, values in datasets.items():
            handle[name] = values
    return path


@pytest.fixture
def two_files(tmp_path):
    """Two HDF5 files (3 and 2 rows; float32 and float64 data, integer labels) listed by
    name only, so that they are found next to the list, not in the working folder."""
    folder = tmp_path / "h5"
    folder.mkdir()
    data = np.arange(5 * 2 * 2, dtype=np.float64).reshape(5, 2, 2) / 4
    extra = np.arange(5 * 3, dtype=np.float32).reshape(5, 3)
    write_h5(folder / "one.h5", data=data[:3].astype(np.float32), label=np.arange(3), extra=extra[:3])
    write_h5(folder / "two.h5", data=data[3:], label=np.arange(3, 5, dtype=np.uint8), extra=extra[3:])
    (folder / "list.txt").write_text("one.h5\n\ntwo.h5\n")
    return folder / "list.txt", data, extra


def hdf5_net(source, tops=("data", "label"), seed=0, config=None, **param):
    layer = {"name": "h5", "type": "HDF5Data", "top": list(tops), "hdf5_data_param": {"source": str(source), **param}}
    return Net({"name": "n", "layers": [layer]}, "TRAIN", seed=seed)


def test_rows_in_list_order_wrap_across_files_one_top_per_dataset(two_files, tmp_path, monkeypatch):
    source, data, extra = two_files
    monkeypatch.chdir(tmp_path)  # the .h5 names are found in the list's folder
    net = hdf5_net(source, tops=("data", "label", "extra"), batch_size=4)
    assert net.blobs["data"].shape == (4, 2, 2) and net.blobs["extra"].shape == (4, 3)
    rows = [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]  # Caffe's cursor: file after file, then round
    for batch in range(3):
        out = net.forward()
        index = rows[4 * batch : 4 * batch + 4]
        np.testing.assert_array_equal(out["data"], data[index].astype(np.float32))
        np.testing.assert_array_equal(out["label"], index)
        np.testing.assert_array_equal(out["extra"], extra[index])


def test_shuffle_is_seeded_permutes_every_pass_and_resumes_exactly(two_files):
    source = two_files[0]
    a, b = (hdf5_net(source, tops=("label",), seed=3, batch_size=5, shuffle=True) for _ in range(2))
    passes = [a.forward()["label"].copy() for _ in range(6)]
    assert [list(x) for x in passes] == [list(b.forward()["label"]) for _ in range(6)]
    for labels in passes:  # batch_size = all rows: each batch is one pass over both files
        assert sorted(labels) == [0, 1, 2, 3, 4]
    assert len({tuple(x) for x in passes}) > 1  # file and row orders drawn again every pass
    other = hdf5_net(source, tops=("label",), seed=4, batch_size=5, shuffle=True)
    assert [list(other.forward()["label"]) for _ in range(6)] != [list(x) for x in passes]

    resumed_from = hdf5_net(source, tops=("label",), seed=3, batch_size=2, shuffle=True)
    for _ in range(3):
        resumed_from.forward()
    state = resumed_from.state()
    later = [resumed_from.forward()["label"].copy() for _ in range(5)]
    c = hdf5_net(source, tops=("label",), seed=3, batch_size=2, shuffle=True)
    c.set_state(state)
    assert [list(x) for x in later] == [list(c.forward()["label"]) for _ in range(5)]


def test_a_state_that_does_not_fit_is_one_line(two_files):
    net = hdf5_net(two_files[0], batch_size=2)
    with pytest.raises(DataError, match=r"layer 'h5'.*file 7 of a list of 2"):
        net.set_state({"rng": net.rng.bit_generator.state, "layers": {"h5": {"pass": 0, "file": 7, "row": 0}}})


def config_file(tmp_path, source, tops="[data, label]"):
    path = tmp_path / "net.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        layers:
          - name: h5
            type: HDF5Data
            top: {tops}
            hdf5_data_param: {{source: {source}, batch_size: 2}}
        """)
    )
    return path


def test_list_file_is_found_next_to_the_config(two_files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = config_file(two_files[0].parent, "list.txt")
    assert Net(config).forward()["label"].tolist() == [0, 1]


def test_missing_list_file_is_one_line_at_the_config_line(tmp_path):
    config = config_file(tmp_path, "nowhere.txt")
    with pytest.raises(DataError) as info:
        Net(config)
    message = str(info.value)
    assert message.startswith(f"{config}:2: layer 'h5': field 'hdf5_data_param.source': no such HDF5 list file")
    assert "\n" not in message


def test_missing_h5_file_names_the_list_line(tmp_path):
    write_h5(tmp_path / "ok.h5", data=np.zeros((2, 1)), label=np.zeros(2))
    (tmp_path / "list.txt").write_text("ok.h5\nmissing.h5\n")
    with pytest.raises(DataError) as info:
        hdf5_net(tmp_path / "list.txt", batch_size=1)
    assert str(info.value).startswith(f"{tmp_path / 'list.txt'}:2: layer 'h5': no such HDF5 file 'missing.h5'")


def test_top_without_its_dataset_names_what_the_file_holds(tmp_path):
    write_h5(tmp_path / "f.h5", data=np.zeros((2, 1)), labels=np.zeros(2))
    (tmp_path / "list.txt").write_text("f.h5")
    with pytest.raises(DataError, match=r"no dataset 'label' .*datasets in the file: data, labels"):
        hdf5_net(tmp_path / "list.txt", batch_size=1)


def test_files_with_other_row_shapes_are_refused_at_setup(tmp_path):
    write_h5(tmp_path / "a.h5", data=np.zeros((2, 3)), label=np.zeros(2))
    write_h5(tmp_path / "b.h5", data=np.zeros((2, 4)), label=np.zeros(2))
    (tmp_path / "list.txt").write_text("a.h5 b.h5")  # Caffe reads the list word by word
    with pytest.raises(DataError, match="same row shapes"):
        hdf5_net(tmp_path / "list.txt", batch_size=1)


def test_missing_h5py_names_the_extra(two_files, monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now raises ImportError
    with pytest.raises(DataError) as info:
        hdf5_net(two_files[0], batch_size=1)
    assert "HDF5 files need h5py: pip install 'netlayers[hdf5]'" in str(info.value)
    assert "\n" not in str(info.value)


def output_net(path, dtype="float32"):
    return Net(
        {
            "name": "out",
            "dtype": dtype,
            "layers": [
                {
                    "name": "in",
                    "type": "Input",
                    "top": ["x", "y"],
                    "input_param": {"shape": [{"dim": [2, 3]}, {"dim": [2]}]},
                },
                {
                    "name": "save",
                    "type": "HDF5Output",
                    "bottom": ["x", "y"],
                    "hdf5_output_param": {"file_name": str(path)},
                },
            ],
        }
    )


def test_hdf5_output_writes_caffe_4_axis_datasets_and_appends_every_forward(tmp_path):
    path = tmp_path / "out.h5"
    path.write_bytes(b"old contents")  # emptied at setup, as Caffe's H5F_ACC_TRUNC does
    net = output_net(path)
    x1, y1 = np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 0], dtype=np.float32)
    net.forward(x=x1, y=y1)
    with h5py.File(path, "r") as handle:
        assert sorted(handle) == ["data", "label"]
        assert handle["data"].shape == (2, 3, 1, 1) and handle["data"].dtype == np.float32
        np.testing.assert_array_equal(handle["data"][()].reshape(2, 3), x1)
        np.testing.assert_array_equal(handle["label"][()].reshape(2), y1)
    net.forward(x=x1 + 10, y=y1 + 2)
    with h5py.File(path, "r") as handle:
        np.testing.assert_array_equal(handle["data"][()].reshape(4, 3), np.concatenate([x1, x1 + 10]))
        np.testing.assert_array_equal(handle["label"][()].reshape(4), [1, 0, 3, 2])


def test_hdf5_output_of_a_double_net_writes_doubles_and_feeds_hdf5_data(tmp_path):
    path = tmp_path / "out.h5"
    values = np.linspace(0, 1, 6).reshape(2, 3)
    output_net(path, "float64").forward(x=values, y=np.array([4.0, 5.0]))
    with h5py.File(path, "r") as handle:
        assert handle["data"].dtype == np.float64
    (tmp_path / "list.txt").write_text("out.h5")
    out = hdf5_net(tmp_path / "list.txt", batch_size=2).forward()  # what Caffe's HDF5Data reads back
    np.testing.assert_array_equal(out["data"], values.astype(np.float32).reshape(2, 3, 1, 1))
    np.testing.assert_array_equal(out["label"], np.array([4, 5]).reshape(2, 1, 1, 1))


def test_hdf5_output_into_a_missing_folder_is_one_line_at_setup(tmp_path):
    with pytest.raises(DataError) as info:
        output_net(tmp_path / "no" / "such" / "out.h5")
    message = str(info.value)
    assert "layer 'save': field 'hdf5_output_param.file_name': cannot create the HDF5 output file" in message
    assert "\n" not in message
