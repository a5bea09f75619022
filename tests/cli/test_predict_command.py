"""``netlayers predict``, end to end through main()."""

import re
from pathlib import Path

import numpy as np
from PIL import Image

from netlayers.cli.main import main
from netlayers.data.idx import read_idx

ROOT = Path(__file__).resolve().parents[2]
LENET = str(ROOT / "configs" / "lenet_fashion_mnist.yaml")
MLP = str(ROOT / "configs" / "mlp_fashion_mnist.yaml")
WEIGHTS = str(ROOT / "tests" / "fixtures" / "caffe" / "lenet_fmnist_iter_10000.caffemodel")
IMAGES = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


def test_predict_prints_top_classes_of_pictures_and_arrays(tmp_path, capsys):
    images = read_idx(IMAGES)[:3]
    Image.fromarray(images[0]).save(tmp_path / "boot.png")
    # a colour picture twice the size: made grey and resized to the net's 28 x 28
    Image.fromarray(np.stack([images[1]] * 3, -1)).resize((56, 56)).save(tmp_path / "pullover.png")
    np.save(tmp_path / "three.npy", images)
    argv = ["predict", "--config", LENET, "--weights", WEIGHTS, "--top-k", "2"]
    assert main(argv + [str(tmp_path / "boot.png"), str(tmp_path / "pullover.png"), str(tmp_path / "three.npy")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5
    assert re.fullmatch(r"boot\.png: 9 Ankle boot 0\.99\d\d, \d \S+ 0\.\d{4}", lines[0])
    assert lines[1].startswith("pullover.png: 2 Pullover ")
    assert lines[2].replace("three.npy[0]", "boot.png") == lines[0]
    assert lines[4].startswith("three.npy[2]: 1 Trouser ")


def test_predict_with_labels_given_and_the_idx_file(tmp_path, capsys):
    (tmp_path / "names.txt").write_text("".join(f"c{i}\n" for i in range(10)))
    argv = ["predict", "--config", LENET, "--weights", WEIGHTS, "--top-k", "1", "--labels", str(tmp_path / "names.txt")]
    assert main(argv + [str(IMAGES)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 10000 and lines[0].startswith("t10k-images-idx3-ubyte.gz[0]: 9 c9 0.99")


def test_predict_with_mlp_weights_of_its_own(tmp_path, capsys):
    from netlayers import Net

    net = Net(MLP, "TEST", seed=4)
    net.save(tmp_path / "mlp.npz")
    np.save(tmp_path / "x.npy", read_idx(IMAGES)[:2])
    assert main(["predict", "--config", MLP, "--weights", str(tmp_path / "mlp.npz"), str(tmp_path / "x.npy")]) == 0
    lines = capsys.readouterr().out.splitlines()
    probabilities = [float(p) for p in re.findall(r" (0\.\d{4}|1\.0000)", lines[0])]
    assert len(probabilities) == 5 and probabilities == sorted(probabilities, reverse=True)


def test_predict_mistakes_are_one_line(tmp_path, capsys):
    (tmp_path / "bad.png").write_bytes(b"no")
    assert main(["predict", "--config", LENET, "--weights", WEIGHTS, str(tmp_path / "bad.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.png" in err and "not an image Pillow can read" in err
    np.save(tmp_path / "rgb.npy", np.zeros((1, 3, 28, 28), np.uint8))
    assert main(["predict", "--config", LENET, "--weights", WEIGHTS, str(tmp_path / "rgb.npy")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "expects items of shape (1, 28, 28)" in err
    assert main(["predict", "--config", LENET, "--weights", str(tmp_path / "none.npz"), str(tmp_path / "rgb.npy")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
