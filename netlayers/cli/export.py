"""``netlayers export --config C --weights W -o model.onnx``: a trained model as ONNX.

Builds the config's deploy net (data layers become inputs, the loss becomes its prediction:
see netlayers/deploy.py) with the weights, and writes it with ``netlayers.export_onnx`` (the
``onnx`` package, an optional extra: ``pip install 'netlayers[onnx]'``). A layer with no ONNX
equivalent is a one-line error naming it.
"""

from ._netargs import add_data_root, file_name, int_at_least, positive_int
from .predict import shape_arg

HELP = "write a trained model as ONNX (the deploy net of a config, with its weights)"


def add_arguments(parser):
    parser.add_argument("--config", required=True, metavar="FILE", help="the training config (YAML or Caffe prototxt)")
    parser.add_argument(
        "--weights", required=True, type=file_name, metavar="FILE", help=".npz weights, a .caffemodel or a solverstate"
    )
    parser.add_argument("-o", "--output", required=True, type=file_name, metavar="FILE", help="the ONNX file to write")
    parser.add_argument(
        "--batch",
        type=positive_int,
        default=1,
        metavar="N",
        help="the inputs' batch size where the model cannot leave it open (default 1)",
    )
    parser.add_argument(
        "--opset", type=int_at_least(1), metavar="K", help="the ONNX opset to write (default 17; 13 at least)"
    )
    parser.add_argument(
        "--input-shape", type=shape_arg, metavar="C,H,W", help="the input's item shape, where the config cannot tell it"
    )
    add_data_root(parser)


def run(args):
    from ..deploy import deploy_net
    from ..export_onnx import export_onnx

    net = deploy_net(
        args.config, args.weights, batch=args.batch, input_shape=args.input_shape, data_root=args.data_root
    )
    path = export_onnx(net, args.output, opset=args.opset)
    inputs = ", ".join(net.inputs)
    print(f"wrote {path} (inputs: {inputs}; outputs: {', '.join(net.outputs)})")
    return 0
