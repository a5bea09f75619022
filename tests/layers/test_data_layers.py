import textwrap

import numpy as np
import pytest
from layer_harness import the_thread_ends_with_its_net

from netlayers import ConfigError, DataError, Net, NetlayersError
from netlayers.data import read_idx

FMNIST = "/usr/share/datasets/fashion-mnist"


def data_net(data_param, transform_param=None, seed=0, phase="TRAIN"):
    layer = {"name": "data", "type": "Data", "top": ["data", "label"], "data_param": data_param}
    if transform_param:
        layer["transform_param"] = transform_param
    return Net({"name": "d", "layers": [layer]}, phase, seed=seed)


def test_idx_source_in_file_order_scaled():
    net = data_net({"source": "fashion-mnist/train", "batch_size": 16}, {"scale": 1 / 256})
    out = net.forward()
    images = read_idx(f"{FMNIST}/train-images-idx3-ubyte.gz")[:16]
    labels = read_idx(f"{FMNIST}/train-labels-idx1-ubyte.gz")[:16]
    assert out["data"].shape == (16, 1, 28, 28) and out["data"].dtype == np.float32
    np.testing.assert_array_equal(out["data"][:, 0], images.astype(np.float32) / 256)
    np.testing.assert_array_equal(out["label"], labels)


def test_test_split_and_centre_crop():
    net = data_net({"source": "fashion-mnist/test", "batch_size": 4}, {"crop_size": 24}, phase="TEST")
    out = net.forward()
    images = read_idx(f"{FMNIST}/t10k-images-idx3-ubyte.gz")[:4]
    np.testing.assert_array_equal(out["data"][:, 0], images[:, 2:26, 2:26])


def write_npz(tmp_path, n=5):
    path = tmp_path / "tiny.npz"
    np.savez(path, data=np.arange(n * 3, dtype=np.float32).reshape(n, 3), label=np.arange(n))
    return path


def test_batch_larger_than_the_data_set_wraps_around(tmp_path):
    path = write_npz(tmp_path)
    net = data_net({"source": str(path), "backend": "NPZ", "batch_size": 8})
    out = net.forward()
    np.testing.assert_array_equal(out["label"], [0, 1, 2, 3, 4, 0, 1, 2])
    np.testing.assert_array_equal(net.forward()["label"], [3, 4, 0, 1, 2, 3, 4, 0])


def test_a_dropped_net_stops_its_prefetch_thread(tmp_path):
    """The thread holds the layer weakly: a net that is dropped without close() is collected,
    and its data layer's thread ends (before, every such net kept its thread and buffers)."""
    path = write_npz(tmp_path)
    assert the_thread_ends_with_its_net(lambda: data_net({"source": str(path), "backend": "NPZ", "batch_size": 2}))


def test_shuffle_is_seeded_and_state_resumes_exactly(tmp_path):
    path = write_npz(tmp_path, n=20)
    param = {"source": str(path), "backend": "NPZ", "batch_size": 3, "shuffle": True}
    a, b = data_net(param, seed=4), data_net(param, seed=4)
    first = [a.forward()["label"].copy() for _ in range(4)]
    assert [list(x) for x in first] == [list(b.forward()["label"]) for _ in range(4)]
    state = a.state()
    later = [a.forward()["label"].copy() for _ in range(8)]
    c = data_net(param, seed=4)
    c.set_state(state)
    assert [list(x) for x in later] == [list(c.forward()["label"]) for _ in range(8)]
    epoch0 = np.concatenate(first + later)[:20]
    assert sorted(epoch0.tolist()) == list(range(20)) and epoch0.tolist() != list(range(20))


def test_missing_source_names_config_line_layer_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("NETLAYERS_DATA_ROOT", str(tmp_path))
    config = tmp_path / "net.yaml"
    config.write_text(
        textwrap.dedent("""\
        layers:
          - name: images
            type: Data
            top: [data, label]
            data_param: {source: fashion-mnist-missing/train, batch_size: 4}
        """)
    )
    with pytest.raises(DataError) as info:
        Net(config)
    message = str(info.value)
    assert message.startswith(f"{config}:2: layer 'images'") and "\n" not in message
    assert "looked" in message or "searched" in message


def test_truncated_data_file_names_the_file(tmp_path):
    good = read_idx(f"{FMNIST}/t10k-labels-idx1-ubyte.gz")
    folder = tmp_path / "broken"
    folder.mkdir()
    header = np.array([0x00000803, 10, 28, 28], dtype=">u4").tobytes()
    (folder / "train-images-idx3-ubyte").write_bytes(header + bytes(100))
    (folder / "train-labels-idx1-ubyte").write_bytes(np.array([0x00000801, 10], ">u4").tobytes() + good[:10].tobytes())
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*truncated"):
        data_net({"source": str(folder / "train"), "batch_size": 2})


def test_a_missing_lmdb_is_a_clear_error():
    with pytest.raises(DataError, match="layer 'data': LMDB database 'x' not found"):
        data_net({"source": "x", "backend": "LMDB", "batch_size": 2})


def memory_net(batch=2):
    return Net(
        {
            "name": "m",
            "layers": [
                {
                    "name": "mem",
                    "type": "MemoryData",
                    "top": ["data", "label"],
                    "memory_data_param": {"batch_size": batch, "channels": 1, "height": 2, "width": 2},
                }
            ],
        }
    )


def test_memory_data_serves_arrays_in_order():
    net = memory_net()
    data = np.arange(16, dtype=np.float32).reshape(4, 1, 2, 2)
    net.set_input_arrays(data, np.array([5, 6, 7, 8]))
    np.testing.assert_array_equal(net.forward()["label"], [5, 6])
    np.testing.assert_array_equal(net.forward()["data"], data[2:])
    np.testing.assert_array_equal(net.forward()["label"], [5, 6])


def test_memory_data_errors():
    net = memory_net()
    with pytest.raises(NetlayersError, match="set_input_arrays"):
        net.forward()
    with pytest.raises(ConfigError, match="multiple of batch_size"):
        net.set_input_arrays(np.zeros((3, 1, 2, 2)), np.zeros(3))
    with pytest.raises(ConfigError, match="shaped"):
        net.set_input_arrays(np.zeros((2, 1, 3, 2)), np.zeros(2))


def test_input_and_dummy_data():
    net = Net(
        {
            "name": "i",
            "layers": [
                {"name": "in", "type": "Input", "top": ["a", "b"], "input_param": {"shape": {"dim": [2, 3]}}},
                {
                    "name": "dd",
                    "type": "DummyData",
                    "top": ["c", "d"],
                    "dummy_data_param": {
                        "shape": [{"dim": [2]}, {"dim": [1, 4]}],
                        "data_filler": [{"type": "constant", "value": 3}, {"type": "gaussian"}],
                    },
                },
            ],
        },
        seed=0,
    )
    assert net.blobs["a"].shape == net.blobs["b"].shape == (2, 3)
    net.forward()
    assert np.all(net.blobs["c"].data == 3)
    first = net.blobs["d"].data.copy()
    net.forward()
    assert not np.array_equal(first, net.blobs["d"].data), "gaussian DummyData refills every forward"
    with pytest.raises(ConfigError, match="layer 'in'.*input_param.shape"):
        Net({"layers": [{"name": "in", "type": "Input", "top": "a"}]})
