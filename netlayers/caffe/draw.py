"""pycaffe's ``caffe.draw``: a net drawn with Graphviz, as Caffe's ``draw_net.py`` draws it.

``draw_net(caffe_net, rankdir, ext='png', phase=None)`` returns the image's bytes;
``draw_net_to_file(caffe_net, filename, rankdir='LR', phase=None)`` writes it, in the format
the file's suffix names (``.png``, ``.svg``, ``.pdf``; ``.dot`` or pycaffe's ``.raw`` for the
DOT text). ``caffe_net`` is what ``NetSpec.to_proto()`` returns, any netlayers net mapping, a
prototxt or YAML path, a checked ``netlayers.netspec.NetSpec``, or a built ``netlayers.Net``
(then blob shapes are drawn too). ``phase``: None draws every layer (as pycaffe), ``TRAIN`` or
``TEST`` (or ``caffe.TRAIN``/``caffe.TEST``, 0 and 1) the layers of that phase.
``display_lrm=True`` adds the weights' and biases' learning-rate multipliers to the
Convolution, Deconvolution and InnerProduct boxes. Drawing is ``netlayers.inspect.graph``'s;
Graphviz's ``dot`` program must be installed.
"""

import dataclasses
import tempfile
from pathlib import Path

from ..errors import ConfigError, NetlayersError
from ..inspect.graph import FORMATS, net_dot, write_graph
from ..netspec import load_net_spec
from ..netspec.spec import PHASES
from ..netspec.spec import NetSpec as CheckedNetSpec

__all__ = ["draw_net", "draw_net_to_file"]

_PROTOTXT_SUFFIXES = (".prototxt", ".pbtxt", ".pt")
_LEARNING_TYPES = ("Convolution", "Deconvolution", "InnerProduct")


def _checked_spec(caffe_net):
    """(checked NetSpec, blob shapes or None) of anything :func:`draw_net` accepts."""
    built_spec = getattr(caffe_net, "spec", None)
    if isinstance(built_spec, CheckedNetSpec):  # a built netlayers.Net
        shapes = {name: tuple(blob.data.shape) for name, blob in caffe_net.blobs.items()}
        return built_spec, shapes
    if isinstance(caffe_net, (str, Path)) and Path(caffe_net).suffix.lower() in _PROTOTXT_SUFFIXES:
        return _prototxt_spec(Path(caffe_net)), None
    return load_net_spec(caffe_net), None


def _prototxt_spec(path):
    from .prototxt import parse_prototxt, to_netlayers

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read the net: {getattr(err, 'strerror', None) or err}", file=str(path)) from None
    net = to_netlayers(parse_prototxt(text, filename=str(path)))
    spec = load_net_spec(net)
    spec.file, spec.base_dir = str(path), path.resolve().parent
    return spec


def _phase_name(phase):
    """None, or TRAIN/TEST from a name in any case or pycaffe's numbers 0 and 1."""
    if phase is None:
        return None
    if isinstance(phase, int) and not isinstance(phase, bool) and 0 <= phase < len(PHASES):
        return PHASES[phase]
    if isinstance(phase, str) and phase.upper() in PHASES:
        return phase.upper()
    raise ConfigError(f"phase must be None, TRAIN or TEST (caffe.TRAIN, caffe.TEST), got {phase!r}")


def _lr_mults(layer):
    """pycaffe's 'lr mult: w, b' line for a learning layer (1.0 where not given)."""
    mults = [spec.lr_mult for spec in layer.params[:2]] + [1.0, 1.0]
    return f"lr mult: {mults[0]:.1f}, {mults[1]:.1f}"


def _drawn_spec(spec, phase, display_lrm):
    """The spec whose every layer is drawn: those of ``phase`` (all for None), their phase
    rules dropped; with ``display_lrm`` the multipliers shown under learning layers' names."""
    layers = []
    for layer in spec.layers:
        if phase is not None and not layer.in_phase(phase):
            continue
        changes = {"include": [], "exclude": []}
        if display_lrm and layer.type in _LEARNING_TYPES:
            changes["name"] = f"{layer.name}\n{_lr_mults(layer)}"
        layers.append(dataclasses.replace(layer, **changes))
    return dataclasses.replace(spec, layers=layers)


_RANKDIRS = ("LR", "TB", "BT", "RL")


def _dot_text(caffe_net, rankdir, phase, display_lrm):
    if rankdir not in _RANKDIRS:
        raise ConfigError(f"rankdir must be one of {', '.join(_RANKDIRS)}, got {rankdir!r}")
    spec, shapes = _checked_spec(caffe_net)
    phase = _phase_name(phase)
    drawn = _drawn_spec(spec, phase, display_lrm)
    title = f"{spec.name or 'Net'} ({phase or 'all phases'})"
    return net_dot(drawn, "TRAIN", shapes=shapes, rankdir=rankdir, title=title)


def _suffix(ext):
    """The file suffix for pycaffe's ``ext`` (``png``, ``svg``, ``pdf``, ``dot`` or ``raw``)."""
    suffix = "." + str(ext).lower().lstrip(".")
    suffix = ".dot" if suffix == ".raw" else suffix
    if suffix not in FORMATS:
        raise NetlayersError(f"cannot draw a net as '{ext}': use png, svg, pdf, dot or raw")
    return suffix


def draw_net(caffe_net, rankdir, ext="png", phase=None, display_lrm=False):
    """The net drawn in the format ``ext`` (``png``, ``svg``, ``pdf``, ``dot``/``raw``), as bytes.

    ``rankdir``: Graphviz's layout direction (``LR``, ``TB``, ``BT``, ``RL``).
    """
    text = _dot_text(caffe_net, rankdir, phase, display_lrm)
    suffix = _suffix(ext)
    if FORMATS[suffix] is None:
        return text.encode("utf-8")
    with tempfile.TemporaryDirectory(prefix="netlayers-draw-") as folder:
        path = write_graph(text, Path(folder) / f"net{suffix}")
        return path.read_bytes()


def draw_net_to_file(caffe_net, filename, rankdir="LR", phase=None, display_lrm=False):
    """Write the net drawn to ``filename``, in the format its suffix names (``.raw``: DOT text)."""
    text = _dot_text(caffe_net, rankdir, phase, display_lrm)
    path = Path(filename)
    if path.suffix.lower() == ".raw":
        try:
            path.write_text(text, encoding="utf-8")
        except OSError as err:
            raise NetlayersError(f"cannot write {path}: {err.strerror or err}") from None
        return
    _suffix(path.suffix)
    write_graph(text, path)
