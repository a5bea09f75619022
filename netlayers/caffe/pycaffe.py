"""pycaffe's Net and solvers (Caffe 1.0's python/caffe/pycaffe.py and _caffe.cpp) over netlayers.

    from netlayers import caffe
    net = caffe.Net("deploy.prototxt", "weights.caffemodel", caffe.TEST)
    net.blobs["data"].data[...] = images
    probs = net.forward()["prob"]
    solver = caffe.SGDSolver("solver.prototxt"); solver.step(100)

:class:`Net` wraps a :class:`netlayers.Net` (``net.netlayers_net``) rather than subclassing it:
pycaffe's methods share names with netlayers' but not their meaning (``forward(blobs, start,
end, **inputs)`` returns the requested blobs, ``save`` writes a ``.caffemodel``, ``params`` lists
every layer's blobs), and a solver's nets are netlayers nets built by the solver, which a
wrapper can present as pycaffe nets without copying anything. ``blobs`` and ``params`` hold
netlayers' own :class:`~netlayers.blob.Blob` objects, whose ``data`` and ``diff`` are the arrays
the net computes with (writable, seen by the next forward).

Models are a Caffe prototxt or a netlayers YAML file (``.yaml``/``.yml``); weights a
``.caffemodel`` or netlayers' ``.npz``. Relative data sources are looked up next to the model,
then in the current folder (Caffe's), then where netlayers always looks.
"""

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from ..layer import Layer
from ..net import Net as _NetlayersNet
from ..netspec import load_net_spec
from ..netspec.spec import check_net

__all__ = [
    "Net",
    "TRAIN",
    "TEST",
    "Layer",
    "set_mode_cpu",
    "set_mode_gpu",
    "set_device",
    "set_random_seed",
    "layer_type_list",
]

YAML_SUFFIXES = (".yaml", ".yml")


class Phase(str):
    """``caffe.TRAIN`` and ``caffe.TEST``: the phase names netlayers uses ("TRAIN", "TEST"), also
    equal to pycaffe's numbers (0, 1), so ``self.phase == caffe.TRAIN`` holds in a Python layer
    (whose ``phase`` is the name) and ``int(caffe.TEST)`` is 1."""

    number: int

    def __new__(cls, name: str, number: int) -> "Phase":
        phase = super().__new__(cls, name)
        phase.number = number
        return phase

    __array_ufunc__ = None  # ``array == caffe.TEST`` comes to __eq__ (numpy would compare text)

    def __eq__(self, other: object) -> Any:
        if isinstance(other, (int, np.integer)) and not isinstance(other, bool):
            return int(other) == self.number
        if isinstance(other, (np.ndarray, np.number)) and np.asarray(other).dtype.kind in "biuf":
            return np.asarray(other) == self.number  # a blob that a Python layer wrote its phase to
        return str.__eq__(self, other)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """The number, so ``top[0].data[...] = self.phase`` stores 0 or 1 as in pycaffe."""
        return np.array(self.number, dtype=dtype)

    def __float__(self) -> float:
        return float(self.number)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = str.__hash__

    def __int__(self) -> int:
        return self.number

    def __repr__(self) -> str:
        return f"caffe.{str.__str__(self)}"


TRAIN = Phase("TRAIN", 0)
TEST = Phase("TEST", 1)


def _phase_name(phase: Any) -> str:
    """The phase name, "TRAIN" or "TEST", of caffe.TRAIN/TEST, 0/1 or a name; else a ConfigError."""
    for known in (TRAIN, TEST):
        if (isinstance(phase, str) and phase.upper() == known) or (not isinstance(phase, str) and known == phase):
            return str.__str__(known)
    raise ConfigError(f"a phase is caffe.TRAIN or caffe.TEST, got {phase!r:.60}")


# -- the global settings of pycaffe -----------------------------------------------------------
_seeds: np.random.Generator | None = None  # set_random_seed's source of per-net seeds


def set_random_seed(seed: int) -> None:
    """Make the nets and solvers built from now on repeatable: each draws its seed from a
    generator seeded here (as Caffe's one global generator: two nets built in a row differ,
    the same script gives the same nets). A solver file's own ``random_seed`` wins."""
    global _seeds
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigError(f"caffe.set_random_seed takes a whole number, got {seed!r:.60}")
    _seeds = np.random.default_rng(int(seed) % 2**64)


def _next_seed() -> int | None:
    return None if _seeds is None else int(_seeds.integers(2**62))


def set_mode_cpu() -> None:
    """netlayers always runs on the CPU: nothing to do."""


def set_mode_gpu() -> None:
    """Always a ConfigError: netlayers runs on the CPU only."""
    raise ConfigError(
        "caffe.set_mode_gpu(): netlayers runs on the CPU only (no GPU mode); "
        "use caffe.set_mode_cpu() or leave the call out"
    )


def set_device(device_id: int) -> None:
    """Always a ConfigError: netlayers runs on the CPU only, there is no device to choose."""
    raise ConfigError(
        f"caffe.set_device({device_id!r:.20}): netlayers runs on the CPU only (no GPU device); leave the call out"
    )


def layer_type_list() -> list[str]:
    """The layer types netlayers knows, sorted (pycaffe's ``caffe.layer_type_list()``)."""
    from ..registry import layer_types

    return sorted(layer_types())


# -- Python layers ----------------------------------------------------------------------------
class BlobVec(list):
    """A layer's param blobs as pycaffe's Python layers see them: a list with ``add_blob``."""

    def __init__(self, dtype: Any = np.float32) -> None:
        super().__init__()
        self.dtype = np.dtype(dtype)

    def add_blob(self, *shape: int) -> None:
        """Append a new param blob of ``shape``, zero-filled (pycaffe's ``self.blobs.add_blob``)."""
        from ..blob import Blob

        self.append(Blob(tuple(int(d) for d in shape), self.dtype))


def as_pycaffe_layer(layer: Any) -> None:
    """Give a newly built Python layer pycaffe's view: ``self.blobs.add_blob(...)`` and
    ``self.phase`` as ``caffe.TRAIN``/``caffe.TEST`` (equal to "TRAIN" and to 0 alike)."""
    layer.blobs = BlobVec(layer.dtype)
    layer.phase = TRAIN if layer.phase == "TRAIN" else TEST


# -- models -----------------------------------------------------------------------------------
def load_model(model: Any):
    """A checked netlayers NetSpec from a Caffe prototxt path, a YAML path (``.yaml``/``.yml``),
    a mapping or a NetSpec. Errors are one-line ConfigErrors naming the file."""
    if not isinstance(model, (str, os.PathLike)) or Path(model).suffix.lower() in YAML_SUFFIXES:
        return load_net_spec(model)
    path = Path(model)
    raw = _prototxt_mapping(path, "net")
    return check_net(raw, file=str(path), base_dir=path.resolve().parent)


def _prototxt_mapping(path: Path, kind: str) -> dict:
    """A prototxt file as netlayers' mapping: ``kind`` "net" (NetParameter) or "solver"."""
    from .prototxt import parse_prototxt, solver_to_netlayers, to_netlayers

    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError("not a text file (invalid UTF-8)", file=str(path)) from None
    except OSError as err:
        raise ConfigError(f"cannot read the {kind} file: {err.strerror or err}", file=str(path)) from None
    try:
        parsed = parse_prototxt(text, filename=str(path))
        return to_netlayers(parsed) if kind == "net" else solver_to_netlayers(parsed)
    except ConfigError as err:
        raise err.located(file=str(path)) from None


def _constructor_arguments(args: tuple, phase: Any, weights: Any) -> tuple[str, Any]:
    """(phase name, weights) from pycaffe's forms ``Net(model, phase)``, ``Net(model, weights,
    phase)`` and ``Net(model, phase, weights=...)`` (and ``Net(model, weights, phase=...)``)."""
    if len(args) == 2:
        if weights is not None or phase is not None:
            raise ConfigError("caffe.Net(model, weights, phase): weights or phase given twice")
        weights, phase = args
    elif len(args) == 1 and phase is not None:  # Net(model, weights, phase=...)
        if weights is not None:
            raise ConfigError("caffe.Net(model, weights, phase=...): weights given twice")
        weights = args[0]
    elif len(args) == 1:
        phase = args[0]
    elif args:
        raise ConfigError(f"caffe.Net takes (model, phase) or (model, weights, phase), got {1 + len(args)} arguments")
    if phase is None:
        raise ConfigError("caffe.Net needs a phase: caffe.Net(model, caffe.TEST) or caffe.TRAIN")
    return _phase_name(phase), weights


def _unique(names) -> list[str]:
    return list(dict.fromkeys(names))


class Net:
    """pycaffe's ``caffe.Net``: ``Net(model, phase)``, ``Net(model, weights, phase)`` or
    ``Net(model, phase, weights=...)``; see the module docstring. ``level`` and ``stages``
    are Caffe's net state (which include/exclude rules select)."""

    def __init__(
        self, model: Any, *args: Any, weights: Any = None, phase: Any = None, level: int = 0, stages: Any = None
    ) -> None:
        phase_name, weights = _constructor_arguments(args, phase, weights)
        spec = load_model(model)
        net = _NetlayersNet(  # as pycaffe: the level replaces the file's, the stages add to its
            spec,
            phase_name,
            seed=_next_seed(),
            data_root=os.getcwd(),
            level=level,
            stages=[*spec.stages, *stages] if stages else None,
        )
        if weights is not None:
            net.load(weights)
        self._attach(net)

    @classmethod
    def wrapping(cls, net: _NetlayersNet) -> "Net":
        """A pycaffe view of an existing netlayers Net (a solver's): the same blobs and layers."""
        view = cls.__new__(cls)
        view._attach(net)
        return view

    def _attach(self, net: _NetlayersNet) -> None:
        self.netlayers_net = net
        inputs = set(net.inputs)
        # an input is the blob its Input layer fills (an in-place layer may take over the name)
        self.blobs: OrderedDict[str, Any] = OrderedDict(
            (name, net.source_blobs[name] if name in inputs else blob) for name, blob in net.blobs.items()
        )

    # -- what the net holds -------------------------------------------------------------------
    @property
    def params(self) -> "OrderedDict[str, list]":
        """Layer name -> its param blobs (weights, bias, ...), for layers that have any."""
        return OrderedDict((layer.name, list(layer.blobs)) for layer in self.netlayers_net.layers if layer.blobs)

    @property
    def layers(self) -> list:
        return list(self.netlayers_net.layers)

    @property
    def layer_dict(self) -> "OrderedDict[str, Any]":
        return OrderedDict(zip(self._layer_names, self.netlayers_net.layers))

    @property
    def _layer_names(self) -> list[str]:
        return list(self.netlayers_net.layer_names)

    @property
    def _blob_names(self) -> list[str]:
        return list(self.blobs)

    @property
    def top_names(self) -> "OrderedDict[str, list[str]]":
        return OrderedDict((layer.name, list(layer.spec.tops)) for layer in self.netlayers_net.layers)

    @property
    def bottom_names(self) -> "OrderedDict[str, list[str]]":
        return OrderedDict((layer.name, list(layer.spec.bottoms)) for layer in self.netlayers_net.layers)

    @property
    def inputs(self) -> list[str]:
        """The tops of Input layers (a deploy file's ``input:`` too), as Caffe 1.0."""
        return self.netlayers_net.inputs

    @property
    def outputs(self) -> list[str]:
        return self.netlayers_net.outputs

    @property
    def blob_loss_weights(self) -> "OrderedDict[str, float]":
        weights = OrderedDict((name, 0.0) for name in self.blobs)
        for layer in self.netlayers_net.layers:
            for name, weight in zip(layer.spec.tops, layer.loss_weights):
                weights[name] = weight or weights.get(name, 0.0)
        return weights

    @property
    def _blob_loss_weights(self) -> list[float]:
        """pycaffe's list form of :attr:`blob_loss_weights`, in blob order."""
        return list(self.blob_loss_weights.values())

    @property
    def _blobs(self) -> list:
        return list(self.blobs.values())

    @property
    def _inputs(self) -> list[int]:
        """The inputs' indices in :attr:`blobs` (pycaffe's ``_inputs``)."""
        return self._blob_indices(self.inputs)

    @property
    def _outputs(self) -> list[int]:
        return self._blob_indices(self.outputs)

    def _top_ids(self, layer_index: int) -> list[int]:
        """The indices in :attr:`blobs` of the tops of layer ``layer_index``."""
        return self._blob_indices(self.netlayers_net.layers[layer_index].spec.tops)

    def _bottom_ids(self, layer_index: int) -> list[int]:
        return self._blob_indices(self.netlayers_net.layers[layer_index].spec.bottoms)

    def _blob_indices(self, names) -> list[int]:
        order = {name: i for i, name in enumerate(self.blobs)}
        return [order[name] for name in names]

    @property
    def phase(self) -> Phase:
        return TRAIN if self.netlayers_net.phase == "TRAIN" else TEST

    # -- running ------------------------------------------------------------------------------
    def forward(self, blobs: Any = None, start: str | None = None, end: str | None = None, **kwargs: Any) -> dict:
        """Run layers ``start`` to ``end`` (layer names, inclusive; default all) and return
        {blob name: data} for the outputs (or, with ``end``, that blob: the end layer's tops
        when no blob is named like it) and the blobs named in ``blobs``. Keyword arguments are
        input blobs' new values, copied in; each must have the blob's batch size (reshape the
        blob first for another: ``net.blobs['data'].reshape(...)``)."""
        self._set_batch(kwargs, self.inputs, "data", "input")
        self.netlayers_net.forward(start=start, end=end)
        return self._collect(self._wanted(end, self.outputs, blobs), "data")

    def backward(self, diffs: Any = None, start: str | None = None, end: str | None = None, **kwargs: Any) -> dict:
        """Backpropagate from layer ``start`` down to ``end`` (default: all) and return {blob
        name: diff} for the inputs (or, with ``end``, that blob) and the blobs named in
        ``diffs``. Keyword arguments set output blobs' diffs first (batch-sized), e.g. the
        gradient of a score for a saliency map: that needs ``force_backward: true`` in the net
        when it has no loss. Param diffs accumulate, as in Caffe."""
        self._set_batch(kwargs, self.outputs, "diff", "output")
        self._forward_what_backward_needs(start, end)
        self.netlayers_net.backward(start=start, end=end)
        return self._collect(self._wanted(end, self.inputs, diffs, "bottoms"), "diff")

    def _forward_what_backward_needs(self, start: str | None, end: str | None) -> None:
        """pycaffe lets backward run on a net that has not run forward (its own tests set a top
        diff by hand on a fresh net); netlayers' layers refuse, as their backward reads what
        forward kept. So the layers of the backward range that have not run forward since their
        last reshape run it first, on what their bottoms hold: tops' data is recomputed, the
        diffs set by hand stay (a loss top's too)."""
        names = self._layer_names
        first = names.index(end) if end in names else 0
        last = names.index(start) if start in names else len(names) - 1
        layers = self.netlayers_net.layers[first : last + 1]
        if all(getattr(layer, "_forward_done", False) for layer in layers):
            return
        kept = {
            id(blob): (blob, blob.diff.copy())
            for layer in layers
            for blob, weight in zip(self.netlayers_net.top_vecs[names.index(layer.name)], layer.loss_weights)
            if weight
        }
        self.netlayers_net.forward(start=names[first], end=names[last])
        for blob, diff in kept.values():
            blob.diff[...] = diff

    def _wanted(self, end, default, extra, names="tops") -> list[str]:
        """The blobs to return: ``default`` without ``end``; else, as pycaffe, the ``names``
        ("tops" for forward, "bottoms" for backward) of the layer ``end`` (a blob of that
        name when no layer has it); then the ``extra`` ones asked for."""
        if end is None:
            first = list(default)
        elif end in self._layer_names:
            first = list(getattr(self.netlayers_net.layer(end).spec, names))
        elif end in self.blobs:
            first = [end]
        else:
            first = list(self.netlayers_net.layer(end).spec.tops)
        return _unique(first + list(extra or []))

    def _collect(self, names, what) -> dict:
        missing = [name for name in names if name not in self.blobs]
        if missing:
            raise DataError(f"no blob named '{missing[0]}' in the net (its blobs: {', '.join(self.blobs)})")
        return {name: getattr(self.blobs[name], what) for name in names}

    def _set_batch(self, values: dict, allowed: list[str], what: str, role: str) -> None:
        """Copy arrays into the ``what`` ("data" or "diff") of blobs named in ``allowed``,
        as pycaffe: each must have the blob's batch size and fit its shape."""
        for name, value in values.items():
            if name not in allowed:
                raise DataError(f"'{name}' is not an {role} of the net (its {role}s: {', '.join(allowed) or 'none'})")
            blob = self.blobs[name]
            array = np.asarray(value)
            if array.ndim == 0 or array.shape[0] != blob.shape[0]:
                batch = "a scalar" if array.ndim == 0 else f"a batch of {array.shape[0]}"
                raise DataError(
                    f"{role} '{name}' given {batch}, the blob's batch is {blob.shape[0]}: reshape it "
                    f"first (net.blobs['{name}'].reshape(...))"
                )
            if array.dtype.kind not in "biuf":
                raise DataError(f"{role} '{name}' takes real numbers, got an array of dtype {array.dtype}")
            try:
                getattr(blob, what)[...] = array
            except ValueError:
                raise DataError(f"{role} '{name}' given shape {array.shape}, the blob's is {blob.shape}") from None

    def forward_all(self, blobs: Any = None, **kwargs: Any) -> dict:
        """Forward over inputs of any length, a batch at a time (the last one padded with
        zeros); returns {output (and ``blobs``): data of every item}, the padding cut off."""
        if not kwargs:
            return {name: np.array(data) for name, data in self.forward(blobs=blobs).items()}
        outs: dict[str, list] = {}
        for batch in self._batches(kwargs):
            for name, data in self.forward(blobs=blobs, **batch).items():
                outs.setdefault(name, []).append(data.copy())
        return self._joined(outs, _item_count(kwargs))

    def forward_backward_all(self, blobs: Any = None, diffs: Any = None, **kwargs: Any) -> tuple[dict, dict]:
        """Forward and backward a batch at a time over inputs (keywords naming inputs) and
        output diffs (keywords naming outputs) of any length; returns (outputs, diffs) as
        :meth:`forward_all` does."""
        unknown = [name for name in kwargs if name not in self.inputs and name not in self.outputs]
        if unknown:
            raise DataError(f"'{unknown[0]}' is neither an input nor an output of the net")
        forward_values = {name: value for name, value in kwargs.items() if name in self.inputs}
        backward_values = {name: value for name, value in kwargs.items() if name in self.outputs}
        count = _item_count(kwargs)
        outs: dict[str, list] = {}
        grads: dict[str, list] = {}
        batches = zip(self._batches(forward_values, count), self._batches(backward_values, count))
        for forward_batch, backward_batch in batches:
            for name, data in self.forward(blobs=blobs, **forward_batch).items():
                outs.setdefault(name, []).append(data.copy())
            for name, diff in self.backward(diffs=diffs, **backward_batch).items():
                grads.setdefault(name, []).append(diff.copy())
        return self._joined(outs, count), self._joined(grads, count)

    def _batches(self, values: dict, count: int | None = None):
        """Dicts of batch-sized slices of ``values`` (the last zero-padded); ``count`` items in
        all (every array must have that many); an empty dict yields empty dicts."""
        count = _item_count(values) if count is None else count
        batch = self._batch_size()
        for begin in range(0, count, batch):
            chunk = {}
            for name, value in values.items():
                part = np.asarray(value)[begin : begin + batch]
                if len(part) < batch:
                    padding = np.zeros((batch - len(part),) + part.shape[1:], part.dtype)
                    part = np.concatenate([part, padding])
                chunk[name] = part
            yield chunk

    def _batch_size(self) -> int:
        names = self.inputs or self.outputs
        if not names:
            raise DataError("the net has no inputs to feed a batch at a time")
        return self.blobs[names[0]].shape[0]

    @staticmethod
    def _joined(parts: dict, count: int) -> dict:
        return {
            name: np.concatenate(arrays)[:count] if arrays[0].ndim else np.array(arrays)
            for name, arrays in parts.items()
        }

    def reshape(self) -> None:
        """Reshape every layer to the blobs' current shapes (after ``blob.reshape``)."""
        self.netlayers_net.reshape()

    def _forward(self, start: int, end: int) -> float:
        """pycaffe's low-level forward by layer indices; returns the loss."""
        names = self._layer_names
        self.netlayers_net.forward(start=names[start], end=names[end])
        return self.netlayers_net.loss

    def _backward(self, start: int, end: int) -> None:
        """pycaffe's low-level backward by layer indices (``start`` >= ``end``)."""
        names = self._layer_names
        self.netlayers_net.backward(start=names[start], end=names[end])

    def clear_param_diffs(self) -> None:
        """Set every param blob's diff to 0, in the arrays the blobs hold (a script keeping
        ``net.params[name][0].diff`` sees the zeros)."""
        for blobs in self.params.values():
            for blob in blobs:
                blob.diff[...] = 0

    # -- weights ------------------------------------------------------------------------------
    def copy_from(self, weights: Any) -> None:
        """Copy params from a ``.caffemodel`` or netlayers ``.npz`` into layers of the same name
        (a shape mismatch, or a file naming none of the net's layers, is an error)."""
        self.netlayers_net.load(weights)

    def save(self, path: Any) -> None:
        """Write the params: a ``.caffemodel`` (Caffe's binary NetParameter) when the name ends
        so, netlayers' ``.npz`` otherwise."""
        if str(path).endswith(".caffemodel"):
            _caffemodel_writer()(self.netlayers_net, path)
        else:
            self.netlayers_net.save(path)

    def save_hdf5(self, path: Any) -> None:
        """Write the params to an HDF5 file as Caffe's ``Net::ToHDF5`` lays them out: the
        dataset ``data/<layer>/<i>`` for param ``i`` of each layer with params (and its diff
        under ``diff/``). Needs h5py (``pip install 'netlayers[hdf5]'``)."""
        h5py = _h5py()
        try:
            with h5py.File(str(path), "w") as file:
                for group in ("data", "diff"):
                    top = file.create_group(group)
                    for name, blobs in self.params.items():
                        layer = top.create_group(name)
                        for i, blob in enumerate(blobs):
                            layer.create_dataset(str(i), data=getattr(blob, group))
        except OSError as err:
            raise DataError(f"cannot write the weights: {err}", file=str(path)) from None

    def load_hdf5(self, path: Any) -> None:
        """Copy params from an HDF5 file of :meth:`save_hdf5`'s (Caffe's) layout into the layers
        named alike; a layer the file lacks keeps its values, a shape mismatch is an error."""
        h5py = _h5py()
        try:
            file = h5py.File(str(path), "r")
        except OSError as err:
            raise DataError(f"cannot read the weights: {err}", file=str(path)) from None
        with file:
            if "data" not in file:
                raise DataError("not a Caffe HDF5 weights file (no 'data' group)", file=str(path))
            for name, blobs in self.params.items():
                if name in file["data"]:
                    _copy_hdf5_layer(file["data"][name], blobs, name, path)

    def share_with(self, other: "Net") -> None:
        """Use ``other``'s param blobs for the layers named alike (no copy: both nets see every
        change). Shapes must match, as in Caffe."""
        source = other.netlayers_net if isinstance(other, Net) else other
        if not isinstance(source, _NetlayersNet):
            raise ConfigError(f"share_with takes a caffe.Net, got {type(other).__name__}")
        for layer in self.netlayers_net.layers:
            if layer.blobs and layer.name in source.layer_names:
                theirs = source.layer(layer.name).blobs
                for i, blob in enumerate(layer.blobs):
                    if i < len(theirs) and theirs[i].shape != blob.shape:
                        raise ConfigError(
                            f"cannot share param {i}: shape {blob.shape} here, {theirs[i].shape} in the other net",
                            layer=layer.name,
                        )
        self.netlayers_net.share_weights_from(source)

    def set_input_arrays(self, data: Any, labels: Any, layer: str | None = None) -> None:
        """Feed the MemoryData layer (the first, or the one named ``layer``): ``data`` (N, C, H,
        W) and one label per item (pycaffe's (N, 1, 1, 1) labels too); N a multiple of its
        batch_size. The arrays are read from at each forward."""
        labels = np.asarray(labels)
        if labels.ndim > 1 and labels.size == len(labels):
            labels = labels.reshape(len(labels))
        self.netlayers_net.set_input_arrays(data, labels, layer)

    def __repr__(self) -> str:
        return f"<caffe.Net '{self.netlayers_net.name}' {self.netlayers_net.phase}: {len(self.layers)} layers>"


def _item_count(values: dict) -> int:
    """The common length of the arrays in ``values`` (0 for none); a DataError if they differ."""
    counts = {name: len(np.asarray(value)) for name, value in values.items()}
    if len(set(counts.values())) > 1:
        raise DataError(f"the arrays given hold different numbers of items: {counts}")
    return next(iter(counts.values()), 0)


def _h5py():
    try:
        import h5py
    except ImportError:
        raise ConfigError("HDF5 weights need h5py: pip install 'netlayers[hdf5]'") from None
    return h5py


def _copy_hdf5_layer(group, blobs, layer, path) -> None:
    """Copy the datasets "0", "1", ... of ``group`` into ``blobs`` (same count and shapes)."""
    if len(group) != len(blobs):
        raise ConfigError(
            f"weights file has {len(group)} blob(s) for this layer, the net has {len(blobs)}",
            file=str(path),
            layer=layer,
        )
    for i, blob in enumerate(blobs):
        array = group[str(i)][()] if str(i) in group else None
        if array is None or array.size != blob.data.size:
            found = "none" if array is None else f"shape {array.shape}"
            raise ConfigError(
                f"param {i}: the file has {found}, the net's blob has shape {blob.data.shape}",
                file=str(path),
                layer=layer,
            )
        blob.data[...] = array.reshape(blob.data.shape)


def _caffemodel_writer():
    """``write_caffemodel(net, path)`` from the module that writes Caffe's wire format."""
    import importlib

    for module in ("netlayers.caffe.wire", "netlayers.caffe.caffemodel"):
        try:
            writer = getattr(importlib.import_module(module), "write_caffemodel", None)
        except ModuleNotFoundError:
            continue
        if writer is not None:
            return writer
    raise ConfigError("writing .caffemodel files is not available in this netlayers; save to a .npz file")
