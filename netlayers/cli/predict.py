"""``netlayers predict --config C --weights W INPUT ...``: classify images with a trained model.

Builds the config's deploy net (data layers become inputs, the loss becomes its prediction:
see netlayers/deploy.py), applies the TEST transform of its data layer to each input, and prints
one line per image: the top-k classes with their probabilities, and the class names of the
config's ``labels_file`` (or ``--labels``).
"""

from ._netargs import add_data_root, add_threads, file_name, positive_int

HELP = "classify images (PNG/JPEG, .npy, IDX) with a config and its trained weights"


def shape_arg(text):
    """An argparse type: C,H,W as positive integers."""
    import argparse

    try:
        dims = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected C,H,W as integers, got {text!r}") from None
    if not dims or any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"expected positive sizes, got {text!r}")
    return dims


def add_arguments(parser):
    parser.add_argument("--config", required=True, metavar="FILE", help="the training config (YAML or Caffe prototxt)")
    parser.add_argument(
        "--weights", required=True, type=file_name, metavar="FILE", help=".npz weights, a .caffemodel or a solverstate"
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, .npy arrays or IDX image files")
    parser.add_argument(
        "--top-k", type=positive_int, default=5, metavar="K", help="classes shown per image (default 5)"
    )
    parser.add_argument(
        "--labels", type=file_name, metavar="FILE", help="class names, one a line (default: the config's labels_file)"
    )
    parser.add_argument(
        "--input-shape",
        type=shape_arg,
        metavar="C,H,W",
        help="the images' shape, where the config's data set cannot tell it",
    )
    parser.add_argument(
        "--bgr",
        action="store_true",
        help="give colour images to the net as BGR (as Caffe's OpenCV-made databases hold them)",
    )
    parser.add_argument("--batch", type=positive_int, default=64, metavar="N", help="images run at once (default 64)")
    add_data_root(parser)
    add_threads(parser)


def run(args):
    from ..prediction import Predictor, read_images

    predictor = Predictor(
        args.config,
        args.weights,
        labels=args.labels,
        input_shape=args.input_shape,
        batch=args.batch,
        data_root=args.data_root,
    )
    shape = predictor.raw_shape
    channels = shape[0] if shape is not None and len(shape) == 3 else None
    size = shape[1:] if shape is not None and len(shape) == 3 else None
    what = "probability" if predictor.probabilities else "score"
    for path in args.inputs:
        images, names = read_images(path, channels=channels, size=size, bgr=args.bgr)
        for name, best in zip(names, predictor.top_k(predictor.predict(images), args.top_k)):
            shown = ", ".join(_class_text(index, label, value, what) for index, label, value in best)
            print(f"{name}: {shown}", flush=True)
    return 0


def _class_text(index, label, value, what):
    name = f"{index} {label}" if label is not None else f"class {index}"
    return f"{name} ({what} {value:.4f})" if what == "score" else f"{name} {value:.4f}"
