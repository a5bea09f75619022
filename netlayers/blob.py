"""Blob: the unit of data flowing through a net, as in Caffe.

A blob holds ``data`` (values, forward) and ``diff`` (gradients of the loss with respect to
those values, backward), two numpy arrays of one shape and dtype.
"""

import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import parallel
from .errors import NetlayersError
from .memory import check_size

Shape = Sequence[int]
DTypeLike = Any


class ShapeError(NetlayersError, ValueError):
    """A shape a blob cannot take (a negative or oversized dimension, an axis out of range)."""


class Blob:
    """``data`` and ``diff`` of one shape; ``reshape`` reuses memory when the size allows."""

    def __init__(self, shape: Shape = (), dtype: DTypeLike = np.float32, name: str = "") -> None:
        self.name = name
        try:
            self.dtype = np.dtype(dtype)
        except TypeError:
            raise ShapeError(f"blob '{name}': {dtype!r:.60} is not a numpy dtype") from None
        self._data_buffer = np.zeros(0, self.dtype)
        self._diff_buffer = np.zeros(0, self.dtype)
        self._diff: np.ndarray = self._diff_buffer
        self._diff_zero_due = False
        self.data: np.ndarray = self._data_buffer
        self.shape: tuple[int, ...] = (-1,)  # no shape yet: reshape below always acts
        self.reshape(shape)

    def reshape(self, *shape: Any) -> "Blob":
        """Give the blob a new shape. Memory is reallocated only when it must grow; the values
        of a grown blob start at zero, those of a kept one are whatever the buffer held."""
        if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
            shape = shape[0]
            if type(shape) is tuple and shape == self.shape:  # the common case, at once
                return self
        try:
            shape = tuple(operator.index(d) for d in shape)
        except TypeError:
            raise ShapeError(f"blob '{self.name}': a shape is whole numbers, got {shape!r}") from None
        if shape == self.shape:
            return self
        if any(d < 0 for d in shape):
            raise ShapeError(f"blob '{self.name}': negative dimension in shape {shape}")
        count = math.prod(shape)
        if count > self._data_buffer.size:
            check_size(2 * count * self.dtype.itemsize, f"blob '{self.name}' of shape {shape} (data and diff)")
            self._data_buffer = np.zeros(count, self.dtype)
            self._diff_buffer = np.zeros(count, self.dtype)
        elif count > self._diff_buffer.size:  # a diff kept in memory shared with other blobs
            self._diff_buffer = np.zeros(count, self.dtype)
        self.data = self._data_buffer[:count].reshape(shape)
        self._diff = self._diff_buffer[:count].reshape(shape)  # a due zeroing stays due
        self.shape = shape
        return self

    def reshape_like(self, other: "Blob") -> "Blob":
        return self.reshape(other.shape)

    @property
    def count(self) -> int:
        """Number of elements (product of the shape; 1 for a scalar blob)."""
        return self.data.size

    @property
    def num_axes(self) -> int:
        return len(self.shape)

    # Caffe's legacy 4-D accessors (pycaffe has them too): an axis the blob lacks counts as 1.
    num = property(lambda self: self._legacy_dim(0))
    channels = property(lambda self: self._legacy_dim(1))
    height = property(lambda self: self._legacy_dim(2))
    width = property(lambda self: self._legacy_dim(3))

    def _legacy_dim(self, index: int) -> int:
        if len(self.shape) > 4:
            raise ShapeError(
                f"blob '{self.name}' has {len(self.shape)} axes; num, channels, "
                "height and width are for blobs of at most 4"
            )
        return self.shape[index] if index < len(self.shape) else 1

    def canonical_axis(self, axis: int) -> int:
        """Caffe's CanonicalAxisIndex: a negative axis counts from the end."""
        n = len(self.shape)
        if not -n <= axis < n:
            raise ShapeError(f"axis {axis} out of range for a blob of shape {self.shape}")
        return axis + n if axis < 0 else axis

    def count_range(self, start: int, end: int | None = None) -> int:
        """Product of the dimensions from axis ``start`` up to (not including) ``end``."""
        return math.prod(self.shape[start:end])

    @property
    def diff(self) -> np.ndarray:
        """The gradient array. Zeros that :meth:`zero_diff` left due are written here first."""
        if self._diff_zero_due:
            self.write_due_zeros()
        return self._diff

    @diff.setter
    def diff(self, array: np.ndarray) -> None:
        self._diff = array
        self._diff_zero_due = False

    def zero_diff(self) -> None:
        """Set the diff to zero, lazily: the zeros are written when ``diff`` is next read, or
        never, when :meth:`add_to_diff` computes a whole gradient straight into it. (An array
        taken from ``diff`` before this call does not see the zeros until ``diff`` is read.)"""
        self._diff_zero_due = True

    def write_due_zeros(self) -> None:
        """Write now the zeros a lazy :meth:`zero_diff` left due (reading ``diff`` does this too)."""
        if self._diff_zero_due:
            self._diff_zero_due = False
            self._diff[...] = 0

    def add_to_diff(self, compute: Callable[[np.ndarray], object]) -> None:
        """diff += g, where ``compute(out)`` writes g into ``out``, an array of the diff's shape.
        Right after :meth:`zero_diff`, g is computed straight into the diff (no zeroing pass, no
        addition pass: what a param's gradient costs in the usual one-pass iteration); otherwise
        into a scratch buffer shared by every blob (``parallel.scratch``, made the first time a
        gradient is accumulated: a net that never accumulates holds none), which is then added."""
        if self._diff_zero_due:
            self._diff_zero_due = False
            compute(self._diff)
        else:
            scratch = parallel.scratch(0, "accumulated param gradient", self.count, self.dtype).reshape(self.shape)
            compute(scratch)
            self._diff += scratch

    def share_data(self, other: "Blob", shape: Shape | None = None) -> None:
        """Make ``data`` the very array of another blob, seen in ``shape`` (default: the other's
        shape; the count must match): no copy, both see writes. ``diff`` stays this blob's own
        array, reshaped (reusing its buffer when it is large enough)."""
        shape = other.shape if shape is None else tuple(int(d) for d in shape)
        if math.prod(shape) != other.count:
            raise ShapeError(f"blob '{self.name}': cannot view {other.shape} as {shape}")
        if self._diff.shape != shape:
            if self._diff_buffer.size < other.count:
                self._diff_buffer = np.zeros(other.count, self.dtype)
            self._diff = self._diff_buffer[: other.count].reshape(shape)
        self.data = other.data.reshape(shape)
        self.shape = shape

    def view(self, other: "Blob", shape: Shape, diff: bool = True) -> None:
        """Make ``data`` (and, with ``diff``, ``diff``) views of another blob's arrays in
        ``shape`` (the same count): for a layer that runs an inner layer on its own blobs."""
        self.data = other.data.reshape(shape)
        if diff:
            self.diff = other.diff.reshape(shape)
        self.shape = self.data.shape

    def use_diff_memory(self, buffer: np.ndarray) -> None:
        """Keep the diff in ``buffer`` (1-D, this dtype, at least ``count`` items), which other
        blobs may use too (``Net(share_memory=True)``: blobs whose gradients are never alive at
        the same time). A reshape to a larger count gives the blob its own diff again."""
        self._check_shared_buffer(buffer, "diff")
        self._diff_buffer = buffer
        self._diff = buffer[: self.count].reshape(self.shape)

    def use_data_memory(self, buffer: np.ndarray) -> None:
        """Keep the data in ``buffer`` (1-D, this dtype, at least ``count`` items), which other
        blobs may use too (``Net(share_memory=True)``: blobs whose values no backward reads,
        alive at different times of the forward). A reshape to a larger count gives the blob
        its own data again."""
        self._check_shared_buffer(buffer, "data")
        self._data_buffer = buffer
        self.data = buffer[: self.count].reshape(self.shape)

    def _check_shared_buffer(self, buffer: np.ndarray, what: str) -> None:
        if buffer.ndim != 1 or buffer.dtype != self.dtype or buffer.size < self.count:
            raise ShapeError(f"blob '{self.name}': a {what} buffer needs {self.count} items of {self.dtype}")

    def share_diff(self, other: "Blob") -> None:
        self.diff = other.diff

    def __repr__(self) -> str:
        return f"Blob({self.name!r}, shape={self.shape}, dtype={self.dtype.name})"
