"""Layer: the Caffe contract, in Python.

A layer subclass implements up to four methods over lists of :class:`Blob`:

- ``LayerSetUp(bottom, top)``: read parameters, create and fill param blobs (``self.blobs``).
- ``Reshape(bottom, top)``: shape the tops (and internal buffers) from the bottoms. Called
  before every forward, so it must be cheap when nothing changed.
- ``Forward_cpu(bottom, top)``: compute the tops' ``data`` from the bottoms' ``data``.
- ``Backward_cpu(top, propagate_down, bottom)``: from the tops' ``diff`` (dLoss/dtop), write
  each bottom's ``diff`` where ``propagate_down[i]`` is true, and *add* to each param blob's
  ``diff`` (so gradients accumulate over ``iter_size`` and over shared params). A top's diff is
  never modified: a sibling branch may still read it.

The public wrappers ``setup``, ``forward`` and ``backward`` add what every layer shares: counts
of bottoms and tops, loss weights, and the loss computed as sum(top.data * loss_weight).

Parameters are declared on the class as ``params = {name: Field(...)}`` for the block named
after the type (``InnerProduct`` -> ``inner_product_param``); ``extra_blocks`` adds others
(``loss_param``, ``transform_param``). A layer reads its checked block as ``self.p``.
"""

import math
import os
import re
import traceback
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import fillers
from .blob import Blob
from .errors import ConfigError, NetlayersError
from .memory import check_size
from .parallel import single_threaded_blas, workspace_lock

Blobs = Sequence[Blob]


def block_name(type_name: str) -> str:
    """``InnerProduct`` -> ``inner_product_param``, ``TanH`` -> ``tanh_param`` (Caffe's names)."""
    special = {
        "TanH": "tanh_param",
        "ReLU": "relu_param",
        "PReLU": "prelu_param",
        "ELU": "elu_param",
        "BNLL": "bnll_param",
        "LRN": "lrn_param",
        "MVN": "mvn_param",
        "SPP": "spp_param",
        "ArgMax": "argmax_param",
        "HDF5Data": "hdf5_data_param",
    }
    if type_name in special:
        return special[type_name]
    snake = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", type_name).lower()
    return f"{snake}_param"


def _user_frame(err: BaseException) -> str:
    """' at file.py:12 (`source line`)' for the innermost frame of ``err`` outside netlayers
    (the user's code), or '' when there is none."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frames = [f for f in traceback.extract_tb(err.__traceback__) if not os.path.abspath(f.filename).startswith(package)]
    if not frames:
        return ""
    frame = frames[-1]
    source = f" (`{frame.line.strip()}`)" if frame.line else ""
    return f" at {frame.filename}:{frame.lineno}{source}"


def _message_of(err: BaseException) -> str:
    """``str(err)``, or a placeholder when the exception's own ``__str__`` fails."""
    try:
        return str(err)
    except Exception:
        return "(its message cannot be shown: its __str__ failed)"


class Layer:
    """Base class of every layer. See the module docstring for the contract."""

    type: str | None = None
    params: dict[str, Any] = {}
    extra_blocks: dict[str, Any] = {}
    num_bottoms: tuple[int, int | None] = (0, None)  # (min, max); None means no upper bound
    num_tops: tuple[int, int | None] = (0, None)
    is_loss = False  # loss layers weight their first top by 1 unless told otherwise
    auto_top_blobs = False  # True: missing tops are made anonymously (Caffe's AutoTopBlobs)
    in_place = False  # True: the layer computes right with its top being its bottom
    # True: the tops' data must stay as this layer wrote it: its backward reads them (Sigmoid's
    # y), or they are read again later (an Input's values). The net then gives a later layer
    # that asks to run in place on such a top a blob of its own. The safe default; a layer whose
    # backward reads only bottoms, params and its own buffers declares False (the layer
    # contract test checks each declaration by overwriting the tops between forward and
    # backward).
    keep_top_data = True
    # True: the bottoms' data must stay as this layer's forward saw them until its backward,
    # which reads them (a convolution's weight gradient reads its input). The safe default; a
    # layer whose backward reads only its tops, params and its own buffers declares False
    # (checked by the layer contract test as keep_top_data is). A solver's TRAIN net lets blobs
    # that no backward reads hold other blobs' values after their last forward reader
    # (``Net(share_memory=True)``).
    keep_bottom_data = True
    needs_backward = True  # False once the net has called drop_backward_state
    has_backward = True  # False: no gradient flows through (Accuracy, ArgMax, data layers)
    learnable = True  # False: the blobs are state, not params (BatchNorm): lr_mult 0
    # True: Backward_cpu reaches its param diffs only through ``blob.diff`` read afresh or
    # ``blob.add_to_diff``, so the zeros of a lazy clear may stay due (InnerProduct). False: they
    # are written before Backward_cpu, so a layer that keeps its param diff arrays between
    # calls still accumulates from zero.
    lazy_param_diffs = False

    def __init__(
        self, spec: Any, *, phase: str = "TRAIN", dtype: Any = np.float32, rng: np.random.Generator | None = None
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.phase = phase
        self.dtype = np.dtype(dtype)
        self.rng = rng if rng is not None else np.random.default_rng()
        self.p = spec.blocks.get(block_name(self.type)) if self.type else None
        self.blobs: list[Blob] = []
        self.param_propagate_down: list[bool] = []
        self.loss_weights: list[float] = []
        self._forward_done = False

    # -- declared parameters ---------------------------------------------------------------
    @classmethod
    def param_blocks(cls) -> dict[str, Any]:
        """Every parameter block this class accepts: {block name: fields}."""
        blocks: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            blocks.update(getattr(klass, "extra_blocks", {}) if "extra_blocks" in vars(klass) else {})
        if cls.type:
            blocks[block_name(cls.type)] = cls.params
        return blocks

    # -- the public wrappers ---------------------------------------------------------------
    def setup(self, bottom: Blobs, top: Blobs) -> None:
        """Check counts, run LayerSetUp and Reshape, and set up loss weights. Every failure is
        a located ConfigError (see :meth:`_reraise`)."""
        try:
            self._check_count("bottom", len(bottom), self.num_bottoms)
            self._check_count("top", len(top), self.num_tops)
            if any(t is b for t in top for b in bottom) and not self.can_run_in_place():
                raise self.error(f"{self.type} cannot run in place here: give its top another name than its bottom's")
            self._check_not_empty(bottom, "bottom")
            self._forward_done = False
            self.LayerSetUp(bottom, top)
            self.Reshape(bottom, top)
            self._check_not_empty(top, "top")
        except Exception as err:
            self._reraise(err, "setup")
        self.param_propagate_down = [self.learnable] * len(self.blobs)
        self._set_loss_weights(top)

    def can_run_in_place(self) -> bool:
        """Whether this layer computes right with its top being its bottom (the class's
        ``in_place``; a layer whose answer depends on its params overrides this)."""
        return self.in_place

    def forward(self, bottom: Blobs, top: Blobs) -> float:
        """Reshape, Forward_cpu, and return this layer's weighted loss (0 for most layers), with
        the workers' scratch and BLAS's threads held for the run (see ``parallel``)."""
        with workspace_lock, single_threaded_blas:  # the workers' scratch is shared: see parallel
            return self.forward_in_pass(bottom, top)

    def forward_in_pass(self, bottom: Blobs, top: Blobs) -> float:
        """:meth:`forward` for a caller that holds both already (a net's pass: the context
        managers cost about 1.5 us a layer)."""
        try:
            self._forward_done = False
            self.Reshape(bottom, top)
            self.Forward_cpu(bottom, top)
        except Exception as err:
            self._reraise(err, "forward")
        self._forward_done = True
        loss = 0.0
        for weight, blob in zip(self.loss_weights, top):
            if weight:
                blob.diff[...] = weight
                value = blob.data
                loss += weight * (value.item() if value.size == 1 else float(value.sum()))
        return loss

    def backward(self, top: Blobs, propagate_down: Sequence[bool], bottom: Blobs) -> None:
        """Backward_cpu, after checking that forward has run since the last (re)shaping: the
        backward reads what forward kept (pooling's argmax, a loss's probabilities). Holds the
        workers' scratch and BLAS's threads for the run, as :meth:`forward`."""
        with workspace_lock, single_threaded_blas:
            self.backward_in_pass(top, propagate_down, bottom)

    def backward_in_pass(self, top: Blobs, propagate_down: Sequence[bool], bottom: Blobs) -> None:
        """:meth:`backward` for a caller that holds both already (a net's pass)."""
        if any(propagate_down) or any(self.param_propagate_down):
            if not getattr(self, "_forward_done", False):
                raise NetlayersError(
                    "backward called before forward: run forward first (its backward needs what forward computes)",
                    layer=self.name,
                )
            if not self.lazy_param_diffs:
                for blob in self.blobs:
                    blob.write_due_zeros()
            try:
                self.Backward_cpu(top, propagate_down, bottom)
            except Exception as err:
                self._reraise(err, "backward")

    def invalidate_forward(self) -> None:
        """Forget that forward has run (the net reshaped this layer, so what forward kept for
        backward no longer fits)."""
        self._forward_done = False

    def _check_not_empty(self, blobs: Blobs, what: str) -> None:
        for _i, blob in enumerate(blobs):
            if 0 in blob.shape:
                raise self.error(
                    f"{what} '{blob.name}' has shape {blob.shape}: every axis must "
                    "be at least 1 (a zero-size blob has nothing to compute)"
                )

    def _reraise(self, err: Exception, method: str) -> None:
        """A netlayers error gets this layer's place. Any other exception from a layer written
        outside netlayers (a Python layer, a registered class of the user's) becomes a one-line
        error naming the user's file, line and source line, with the original chained to it (the
        command line's --traceback shows it whole). Anything else is a bug in netlayers and goes
        up as it is, never blamed on the config."""
        where = self.spec.where
        if isinstance(err, NetlayersError):
            raise err.located(file=where.file, line=where.line, layer=self.name)
        if not self.written_by_user():
            raise err
        kind = ConfigError if method == "setup" else NetlayersError
        what = "the Python layer" if self.type == "Python" else f"{type(self).__qualname__}"
        message = f"{method} of {what} failed{_user_frame(err)}: {type(err).__name__}: {_message_of(err)}"
        raise kind(message, file=where.file, line=where.line, layer=self.name) from err

    def written_by_user(self) -> bool:
        """Whether this layer's class comes from outside the netlayers package."""
        return not type(self).__module__.startswith("netlayers.")

    # -- to be implemented -----------------------------------------------------------------
    def LayerSetUp(self, bottom: Blobs, top: Blobs) -> None:
        pass

    def Reshape(self, bottom: Blobs, top: Blobs) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not implement Reshape")

    def Forward_cpu(self, bottom: Blobs, top: Blobs) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not implement Forward_cpu")

    def Backward_cpu(self, top: Blobs, propagate_down: Sequence[bool], bottom: Blobs) -> None:
        if any(propagate_down):
            raise NetlayersError(f"{self.type} has no backward pass", layer=self.name)

    def state(self) -> Any:
        """Extra state a snapshot must keep to resume exactly (a data layer's position); None
        for most layers. Must be JSON-serialisable."""
        return None

    def set_state(self, state: Any) -> None:
        """Restore what :meth:`state` returned."""

    def drop_backward_state(self) -> None:
        """The net will never run this layer's backward (no gradient is wanted below it, or no
        loss reaches it: a deploy net, forward only). A layer may then stop keeping what only its
        backward reads (BatchNorm's normalized values, an in-place Scale's copy of its input);
        ``needs_backward`` says so to its Reshape and Forward_cpu. Alone, a layer keeps all."""
        self.needs_backward = False

    def allow_force_backward(self, bottom_index: int) -> bool:
        """Whether a gradient can flow to this bottom at all (not to a loss layer's labels, not
        through a layer without backward). Caffe asks this only under ``force_backward``; we ask
        it always, so a label that fans out never gets a gradient request."""
        if not self.has_backward:
            return False
        return not (self.is_loss and bottom_index == 1)

    # -- helpers for subclasses --------------------------------------------------------------
    def error(self, message: str, field: str | None = None) -> ConfigError:
        """A ConfigError located at this layer (file, line, layer name, field)."""
        where = self.spec.where
        return ConfigError(message, file=where.file, line=where.line, layer=self.name, field=field)

    def add_param(self, shape: Sequence[int], filler: Any = None) -> Blob:
        """Append a param blob of ``shape``, filled by a checked FillerParameter (or zeros)."""
        blob = Blob(shape, self.dtype, name=f"{self.name}[{len(self.blobs)}]")
        if filler is not None:
            with np.errstate(over="ignore", invalid="ignore"):
                fillers.fill(blob.data, filler, self.rng)
            if not np.isfinite(blob.data).all():
                raise self.error(
                    f"the {filler.type} filler of param blob {len(self.blobs)} gives values "
                    f"beyond what {self.dtype} holds (at most {np.finfo(self.dtype).max:.3g})"
                )
        self.blobs.append(blob)
        return blob

    def buffer(self, name: str, shape: Sequence[int], dtype: Any = None) -> np.ndarray:
        """An internal array ``self.<name>`` of ``shape`` (default dtype: the layer's), allocated
        only when its shape or dtype changes: call it from Reshape, use it in Forward/Backward."""
        shape, dtype = tuple(shape), dtype or self.dtype
        array = getattr(self, name, None)
        if array is None or array.shape != shape or array.dtype != dtype:
            check_size(math.prod(shape) * np.dtype(dtype).itemsize, f"buffer '{name}' of shape {shape}")
            array = np.empty(shape, dtype)
            setattr(self, name, array)
        return array

    def _check_count(self, what, got, bounds):
        low, high = bounds
        if got < low or (high is not None and got > high):
            if high == low:
                expected = f"exactly {low}"
            elif high is None:
                expected = f"at least {low}"
            else:
                expected = f"{low} to {high}"
            raise self.error(f"{self.type} takes {expected} {what}(s), got {got}")

    def _set_loss_weights(self, top):
        given = list(self.spec.loss_weights)
        if given and len(given) != len(top):
            raise self.error(f"loss_weight has {len(given)} values for {len(top)} top(s)", "loss_weight")
        if not given:
            given = [1.0 if (self.is_loss and i == 0) else 0.0 for i in range(len(top))]
        largest = float(np.finfo(self.dtype).max)
        for weight in given:
            if abs(weight) > largest:
                raise self.error(f"{weight:g} is beyond what {self.dtype} holds (at most {largest:.3g})", "loss_weight")
        self.loss_weights = given
        for weight, blob in zip(given, top):
            if weight:
                blob.diff[...] = weight

    def __repr__(self) -> str:
        return f"<{self.type} layer '{self.name}'>"
