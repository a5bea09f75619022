"""The messages of Caffe's ``caffe.proto`` that pycaffe's users build and parse by hand.

Stand-ins for protoc's generated ``caffe_pb2`` (no protobuf dependency), with the same field
names, numbers, types and defaults as Caffe 1.0's ``src/caffe/proto/caffe.proto``::

    blob = caffe_pb2.BlobProto()
    blob.ParseFromString(open("mean.binaryproto", "rb").read())
    mean = caffe.io.blobproto_to_array(blob)

See :class:`netlayers.caffe.wire.Message` for what the classes support.
"""

from ..wire import Field, Message

__all__ = ["BlobShape", "BlobProto", "BlobProtoVector", "Datum", "SolverParameter"]  # and NetParameter, lazily


def __getattr__(name):
    """The Phase values ``TRAIN`` and ``TEST`` (``caffe.TRAIN`` is ``caffe_pb2.TRAIN`` in pycaffe)
    and ``NetParameter`` (what ``caffe.NetSpec().to_proto()`` gives), imported on first use."""
    if name in ("TRAIN", "TEST"):
        from .. import pycaffe

        return getattr(pycaffe, name)
    if name == "NetParameter":
        from ..net_spec import NetParameter

        return NetParameter
    raise AttributeError(f"module 'caffe_pb2' has no attribute {name!r}")


class BlobShape(Message):
    """The dimensions of a blob."""

    FIELDS = (Field("dim", 1, "int64", repeated=True, packed=True),)


class BlobProto(Message):
    """A blob's values and shape; the 4-D ``num``/``channels``/``height``/``width`` are legacy."""

    FIELDS = (
        Field("shape", 7, "message", message=BlobShape),
        Field("data", 5, "float", repeated=True, packed=True),
        Field("diff", 6, "float", repeated=True, packed=True),
        Field("double_data", 8, "double", repeated=True, packed=True),
        Field("double_diff", 9, "double", repeated=True, packed=True),
        Field("num", 1, "int32"),
        Field("channels", 2, "int32"),
        Field("height", 3, "int32"),
        Field("width", 4, "int32"),
    )


class BlobProtoVector(Message):
    """Several blobs, e.g. the mean and other arrays passed to a net."""

    FIELDS = (Field("blobs", 1, "message", repeated=True, message=BlobProto),)


class Datum(Message):
    """One example as Caffe's LMDB and LevelDB databases store it: ``data`` holds uint8 pixels
    (channels x height x width) or, when ``encoded``, an image file's bytes; ``float_data`` holds
    float values instead."""

    FIELDS = (
        Field("channels", 1, "int32"),
        Field("height", 2, "int32"),
        Field("width", 3, "int32"),
        Field("data", 4, "bytes"),
        Field("label", 5, "int32"),
        Field("float_data", 6, "float", repeated=True),
        Field("encoded", 7, "bool", default=False),
    )


class SolverParameter:
    """A solver written in Python, as pycaffe users build one (01-learning-lenet)::

        s = caffe_pb2.SolverParameter()
        s.train_net = "train.prototxt"
        s.test_net.append("test.prototxt")
        s.test_iter.append(100)
        s.solver_mode = caffe_pb2.SolverParameter.CPU
        open("solver.prototxt", "w").write(str(s))

    Fields are caffe.proto's SolverParameter fields (netlayers' solver fields); repeated ones
    are lists; ``str()`` is the prototxt text of the fields set. Not a wire-format message.
    """

    # SolverMode, SolverType (legacy solver_type), SnapshotFormat: caffe.proto's numbers
    CPU, GPU = 0, 1
    SGD, NESTEROV, ADAGRAD, RMSPROP, ADADELTA, ADAM = range(6)
    HDF5, BINARYPROTO = 0, 1

    def __init__(self, **fields):
        from ...solvers.base import SOLVER_FIELDS

        object.__setattr__(self, "_fields", SOLVER_FIELDS)
        object.__setattr__(self, "_values", {})
        for name, field in SOLVER_FIELDS.items():
            if field.repeated:
                self._values[name] = []
        for name, value in fields.items():
            setattr(self, name, value)

    def __getattr__(self, name):
        values = object.__getattribute__(self, "_values")
        if name in values:
            return values[name]
        fields = object.__getattribute__(self, "_fields")
        if name in fields:
            return None if fields[name].required else fields[name].default
        raise AttributeError(f"SolverParameter has no field {name!r}")

    def __setattr__(self, name, value):
        if name not in self._fields:
            from ...netspec.schema import close_match_hint

            raise AttributeError(f"SolverParameter has no field {name!r}{close_match_hint(name, self._fields)}")
        if self._fields[name].repeated:
            raise AttributeError(f"{name} is a repeated field: use .append() or .extend()")
        self._values[name] = value

    def HasField(self, name):  # noqa: N802 (protobuf's name)
        return name in self._values and not isinstance(self._values[name], list)

    def __str__(self):
        from ..text_format import solver_to_text

        return solver_to_text({name: value for name, value in self._values.items() if value != []})
