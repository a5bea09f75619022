"""Structural layers: they move, split, join, reshape, broadcast or reduce blobs.

Layers that only change the shape (Flatten, Reshape, and Concat / Slice with a single
bottom / top) do not copy: the top's data is a view of the bottom's, and the backward copies
the top's diff into the bottom's (the bottom's diff is written, as for every layer).
"""

import math

import numpy as np

from .. import parallel
from ..errors import DataError
from ..kernels import elementwise, gather
from ..kernels import scale as scale_kernels
from ..layer import Layer
from ..netspec import BLOB_SHAPE, FILLER, RESHAPE_SHAPE, Enum, Field, rule_error
from ..registry import register_layer


def _axis(layer, blob, axis, field):
    """Caffe's CanonicalAxisIndex, as a located ConfigError when out of range (a blob without
    axes has no axis 0 either)."""
    if blob.num_axes == 0:
        raise layer.error(f"axis {axis} out of range for a bottom without axes (shape ())", field)
    try:
        return blob.canonical_axis(axis)
    except ValueError as err:
        raise layer.error(str(err), field) from None


def _legacy_axis(layer, blob, axis, legacy, block, legacy_name):
    """Concat's concat_dim / Slice's slice_dim (unsigned, no negative indexing) or ``axis``
    (default 1, negative counts from the end)."""
    if legacy is not None:
        if not 0 <= legacy < blob.num_axes:
            raise layer.error(
                f"{legacy_name} {legacy} is out of range for a bottom of shape {blob.shape}", f"{block}.{legacy_name}"
            )
        return legacy
    return _axis(layer, blob, 1 if axis is None else axis, f"{block}.axis")


@register_layer("Split")
class Split(Layer):
    """Copies one blob to several tops (inserted automatically where a blob fans out).
    Forward: every top shares the bottom's data (no copy).
    Backward: dE/dx = sum over tops of dE/dtop_k (gradients add at a branch)."""

    example = {"bottoms": [(2, 3)], "tops": 3}

    keep_top_data = False
    keep_bottom_data = False

    num_bottoms = (1, 1)
    num_tops = (1, None)

    def Reshape(self, bottom, top):
        for blob in top:
            blob.share_data(bottom[0])

    def Forward_cpu(self, bottom, top):
        pass

    def Backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        diff = bottom[0].diff.reshape(-1)
        tops = [blob.diff.reshape(-1) for blob in top]
        elementwise.split(lambda lo, hi: _sum_into(diff[lo:hi], [t[lo:hi] for t in tops]), diff, len(tops) + 1)


def _products(factors, out):
    """out = the element-wise product of ``factors`` (arrays of out's shape; out may be the
    first or the second, both read before out is written), the flat range shared out over the
    workers where large (numpy multiplies without the GIL): Eltwise PROD's forward and
    gradients. Each element is multiplied alone, in the factors' order: the same bits however it
    is cut. Two bottoms of 32 x 256 x 28 x 28, forward + backward, paired rounds: 5.75 -> 4.79
    ms."""
    flats = [f.reshape(-1) for f in factors]
    y = out.reshape(-1)

    def part(lo, hi):
        np.multiply(flats[0][lo:hi], flats[1][lo:hi], out=y[lo:hi])
        for f in flats[2:]:
            y[lo:hi] *= f[lo:hi]

    parallel.over_slices(part, y.size, (len(factors) + 1) * y.nbytes)


def _copy_pairs(pairs):
    """np.copyto(dst, src) for every (dst, src) pair of one shape, the leading axis shared out
    over the workers where the copies are large (``parallel.over_slices``; numpy copies without
    the GIL): Concat's, Slice's and Eltwise's data moves, one hand-over for all the pairs of one
    length. Each element is copied alone: the results do not depend on the cut."""
    by_length = {}
    for dst, src in pairs:
        by_length.setdefault(dst.shape[0] if dst.ndim else 0, []).append((dst, src))
    for length, group in by_length.items():
        if not length:
            for dst, src in group:
                np.copyto(dst, src)
            continue

        def copy(lo, hi, group=group):
            for dst, src in group:
                np.copyto(dst[lo:hi], src[lo:hi])

        parallel.over_slices(copy, length, 2 * sum(dst.nbytes for dst, _ in group))


def _sum_into(out, terms):
    """out = the sum of ``terms`` (added left to right)."""
    if len(terms) == 1:
        out[...] = terms[0]
        return
    np.add(terms[0], terms[1], out=out)
    for term in terms[2:]:
        out += term


@register_layer("Eltwise")
class Eltwise(Layer):
    """Element-wise combination of bottoms of one shape.

    SUM (default): y = sum_i c_i x_i, c_i from ``coeff`` (one per bottom; default all 1).
        Backward: dE/dx_i = c_i dE/dy.
    PROD: y = prod_i x_i. Backward: dE/dx_i = dE/dy * prod_{j != i} x_j, multiplied out from the
        other bottoms when ``stable_prod_grad`` (default), else dE/dy * y / x_i (faster, but
        0/0 where x_i = 0).
    MAX: y = max_i x_i; the index of the winning bottom is kept for the backward, which routes
        dE/dy to that bottom and gives the others 0. Ties go to the first bottom holding the
        maximum (Caffe gives a tie between bottoms 0 and 1 to bottom 1, later ties to the
        earlier bottom; we take the first bottom throughout).
    Not in place (a bottom's values or the gradient routing would be lost).
    """

    example = [
        {"bottoms": [(2, 3, 4), (2, 3, 4)], "params": {"eltwise_param": {"coeff": [1, -0.5]}}},
        {"bottoms": [(2, 3), (2, 3), (2, 3)], "params": {"eltwise_param": {"operation": "PROD"}}},
        {"bottoms": [(2, 3), (2, 3), (2, 3)], "params": {"eltwise_param": {"operation": "MAX"}}},
    ]

    keep_top_data = False
    keep_bottom_data = False

    params = {
        "operation": Field(Enum("PROD", "SUM", "MAX"), "SUM"),
        "coeff": Field(float, repeated=True),
        "stable_prod_grad": Field(bool, True),
    }
    num_bottoms = (2, None)
    num_tops = (1, 1)

    @classmethod
    def check_params(cls, p):
        if p.coeff and p.operation != "SUM":
            raise rule_error("coeff", f"coeff is only for operation SUM, not {p.operation}")

    def LayerSetUp(self, bottom, top):
        p = self.p
        if p.coeff and len(p.coeff) != len(bottom):
            raise self.error(
                f"give one coeff per bottom: {len(p.coeff)} coeff(s) for {len(bottom)} bottoms", "eltwise_param.coeff"
            )
        self.coeffs = list(p.coeff) if p.coeff else [1.0] * len(bottom)
        self.keep_top_data = p.operation == "PROD" and not p.stable_prod_grad  # dE/dy * y / x_i
        self.keep_bottom_data = p.operation == "PROD"  # the other factors x_j

    def Reshape(self, bottom, top):
        shape = bottom[0].shape
        for i, blob in enumerate(bottom[1:], 1):
            if blob.shape != shape:
                raise self.error(f"all bottoms must have one shape: bottom[0] is {shape}, bottom[{i}] is {blob.shape}")
        top[0].reshape(shape)
        if self.p.operation == "MAX":
            self.buffer("_argmax", shape, np.int32)

    def Forward_cpu(self, bottom, top):
        y, op = top[0].data, self.p.operation
        if op == "SUM" and all(c == 1 for c in self.coeffs):  # the usual residual sum
            flat = y.reshape(-1)
            terms = [blob.data.reshape(-1) for blob in bottom]
            elementwise.split(lambda lo, hi: _sum_into(flat[lo:hi], [t[lo:hi] for t in terms]), flat, len(terms) + 1)
        elif op == "SUM":
            if self.coeffs[0] == 1:
                np.copyto(y, bottom[0].data)
            else:
                np.multiply(bottom[0].data, y.dtype.type(self.coeffs[0]), out=y)
            for blob, c in zip(bottom[1:], self.coeffs[1:]):
                if c == 1:
                    y += blob.data
                else:
                    elementwise.axpy(c, blob.data, out=y)
        elif op == "PROD":
            _products([blob.data for blob in bottom], y)
        else:
            elementwise.max_of_two(bottom[0].data, bottom[1].data, out=y, argmax=self._argmax)
            for i, blob in enumerate(bottom[2:], 2):
                elementwise.max_update(blob.data, i, out=y, argmax=self._argmax)

    def Backward_cpu(self, top, propagate_down, bottom):
        dy, op = top[0].diff, self.p.operation
        if op == "SUM":
            copies = [(blob.diff, dy) for blob, c, need in zip(bottom, self.coeffs, propagate_down) if need and c == 1]
            if copies:
                _copy_pairs(copies)
        for i, blob in enumerate(bottom):
            if not propagate_down[i]:
                continue
            dx = blob.diff
            if op == "SUM":
                if self.coeffs[i] != 1:
                    np.multiply(dy, dx.dtype.type(self.coeffs[i]), out=dx)
            elif op == "PROD":
                if self.p.stable_prod_grad:
                    others = [b.data for j, b in enumerate(bottom) if j != i]
                    _products([others[0], dy, *others[1:]], dx)  # Caffe's order of the factors
                else:
                    np.divide(top[0].data, blob.data, out=dx)
                    dx *= dy
            else:
                elementwise.select_where(self._argmax, i, dy, out=dx)


def _param_shape(layer, blob, axis, num_axes, block):
    """The shape of a learned broadcast operand: ``num_axes`` axes of ``blob`` from ``axis``
    (-1: to the end; 0: a scalar)."""
    axis = _axis(layer, blob, axis, f"{block}.axis")
    end = blob.num_axes if num_axes == -1 else axis + num_axes
    if end > blob.num_axes:
        raise layer.error(
            f"axis {axis} + num_axes {num_axes} goes past the bottom's {blob.num_axes} axes (shape {blob.shape})",
            f"{block}.num_axes",
        )
    return blob.shape[axis:end]


def _broadcast_view(layer, blob, operand_shape, axis, block, what):
    """(outer, dim, inner) such that the operand lines up with ``blob`` from ``axis``: Caffe's
    rule, with axis 0 for a scalar operand."""
    axis = 0 if len(operand_shape) == 0 else _axis(layer, blob, axis, f"{block}.axis")
    end = axis + len(operand_shape)
    if blob.shape[axis:end] != tuple(operand_shape):
        raise layer.error(
            f"the {what} of shape {tuple(operand_shape)} does not match bottom[0] shape {blob.shape} from axis {axis}"
        )
    return blob.count_range(0, axis), math.prod(operand_shape), blob.count_range(end)


@register_layer("Scale")
class Scale(Layer):
    """y = x * s (+ b), s broadcast over x: s has the shape of x's axes ``axis`` ..
    ``axis + num_axes - 1`` (num_axes -1: to the last axis; 0: a scalar). With one bottom s is a
    learned param (``filler``, default constant 1); with two bottoms s is bottom[1] (its shape
    decides, num_axes is not used). ``bias_term`` adds a learned b of s's shape
    (``bias_filler``, default constant 0); in Caffe that is an internal Bias layer, here a
    second param blob (or the only one, with two bottoms).

    Seeing x as (outer, dim, inner) with s of size dim:
        y[n, d, k] = x[n, d, k] * s[d] + b[d]
    Backward: dE/dx = dE/dy * s; dE/ds[d] = sum over n, k of dE/dy * x (accumulated into the
    param, written into bottom[1]'s diff); dE/db[d] += sum over n, k of dE/dy. In place the
    input is copied before it is overwritten, as in Caffe; in a net, an in-place Scale right
    after the BatchNorm that wrote its bottom is lent BatchNorm's normalized values instead
    (the very numbers it reads), which saves the copy and a blob-sized buffer.
    """

    example = [
        {
            "bottoms": [(2, 3, 4)],
            "params": {
                "scale_param": {"bias_term": True, "filler": {"type": "gaussian"}, "bias_filler": {"type": "gaussian"}}
            },
        },
        {"bottoms": [(2, 3, 4), (3,)]},
        {"bottoms": [(2, 3, 4), (2, 3, 4)], "params": {"scale_param": {"axis": 0}}},  # one element a dim
    ]

    keep_top_data = False
    keep_bottom_data = False

    params = {
        "axis": Field(int, 1),
        "num_axes": Field(int, 1, min=-1),
        "filler": Field(FILLER, {"type": "constant", "value": 1.0}),
        "bias_term": Field(bool, False),
        "bias_filler": Field(FILLER, {}),
    }
    num_bottoms = (1, 2)
    num_tops = (1, 1)
    in_place = True

    def LayerSetUp(self, bottom, top):
        p = self.p
        # backward reads x (its own copy, or BatchNorm's values, when in place) and a bottom s
        self.keep_bottom_data = top[0] is not bottom[0] or len(bottom) > 1
        if len(bottom) == 1:
            shape = _param_shape(self, bottom[0], p.axis, p.num_axes, "scale_param")
            self.add_param(shape, p.filler)
        else:
            shape = bottom[1].shape
        self.bias_index = None
        if p.bias_term:
            self.bias_index = len(self.blobs)
            self.add_param(shape, p.bias_filler)

    def _scale(self, bottom):
        return bottom[1] if len(bottom) > 1 else self.blobs[0]

    def Reshape(self, bottom, top):
        scale = self._scale(bottom)
        self.view = _broadcast_view(self, bottom[0], scale.shape, self.p.axis, "scale_param", "scale")
        top[0].reshape_like(bottom[0])
        dtype = bottom[0].dtype
        self.buffer("_reduced", (self.view[1],), dtype)
        self.buffer("_reduced_bias", (self.view[1],), dtype)
        self.buffer("_zeros", (self.view[1],), dtype).fill(0)

    lent_input = None  # set by the net for one forward: see Net.forward_range

    def _input3(self, bottom, top):
        if top[0] is not bottom[0]:
            return bottom[0].data.reshape(self.view)
        return self._kept.reshape(self.view)

    def Forward_cpu(self, bottom, top):
        in_place = top[0] is bottom[0]
        x = bottom[0].data.reshape(self.view)
        lent, self.lent_input = self.lent_input, None
        copy = in_place and self.needs_backward and (lent is None or lent.size != x.size)
        keep = x
        if in_place:  # the input a copy keeps, made when first needed (a lent one needs none)
            self._kept = self.buffer("_input", bottom[0].shape, bottom[0].dtype) if copy else lent
            if copy:
                keep = self._kept.reshape(self.view)
        scale = self._scale(bottom).data.reshape(-1)
        bias = self.blobs[self.bias_index].data.reshape(-1) if self.bias_index is not None else self._zeros
        y = top[0].data.reshape(self.view)
        forward = scale_kernels.scale_forward
        if self.view[2] == 1:  # one element a dim: the loops run along the dims
            forward, x, keep, y = scale_kernels.scale_forward_rows, x[..., 0], keep[..., 0], y[..., 0]
        _over_dims(lambda lo, hi: forward(x, scale, bias, keep, copy, y, lo, hi), y, 3)

    def Backward_cpu(self, top, propagate_down, bottom):
        dy3 = top[0].diff.reshape(self.view)
        scale = self._scale(bottom)
        learned = len(bottom) == 1
        want_scale = self.param_propagate_down[0] if learned else propagate_down[1]
        want_bias = self.bias_index is not None and self.param_propagate_down[self.bias_index]
        x3 = self._input3(bottom, top)
        dx3 = bottom[0].diff.reshape(self.view) if propagate_down[0] else dy3
        sums = want_scale or want_bias
        s = scale.data.reshape(-1)
        backward = scale_kernels.scale_backward
        if self.view[2] == 1:  # one element a dim: the loops run along the dims
            backward, dy3, x3, dx3 = scale_kernels.scale_backward_rows, dy3[..., 0], x3[..., 0], dx3[..., 0]
        _over_dims(
            lambda lo, hi: backward(
                dy3, x3, s, sums, self._reduced, self._reduced_bias, dx3, propagate_down[0], lo, hi
            ),
            dy3,
            4 if sums else 2,
        )
        if want_scale:
            if learned:
                scale.diff += self._reduced.reshape(scale.shape)
            else:
                scale.diff[...] = self._reduced.reshape(scale.shape)
        if want_bias:
            bias = self.blobs[self.bias_index]
            bias.diff += self._reduced_bias.reshape(bias.shape)


@register_layer("Bias")
class Bias(Layer):
    """y = x + b, b broadcast over x as in Scale: b has the shape of x's axes ``axis`` ..
    ``axis + num_axes - 1`` (num_axes -1: to the end; 0: a scalar). With one bottom b is a
    learned param (``filler``, default constant 0); with two bottoms b is bottom[1].
    Backward: dE/dx = dE/dy; dE/db[d] = sum over n, k of dE/dy (accumulated into the param,
    written into bottom[1]'s diff). In place works."""

    example = [
        {"bottoms": [(2, 3, 4)], "params": {"bias_param": {"filler": {"type": "gaussian"}}}},
        {"bottoms": [(2, 3, 4), (3, 4)]},
    ]

    keep_top_data = False
    keep_bottom_data = False

    params = {
        "axis": Field(int, 1),
        "num_axes": Field(int, 1, min=-1),
        "filler": Field(FILLER, {}),
    }
    num_bottoms = (1, 2)
    num_tops = (1, 1)
    in_place = True

    def LayerSetUp(self, bottom, top):
        if len(bottom) == 1:
            p = self.p
            self.add_param(_param_shape(self, bottom[0], p.axis, p.num_axes, "bias_param"), p.filler)

    def _bias(self, bottom):
        return bottom[1] if len(bottom) > 1 else self.blobs[0]

    def Reshape(self, bottom, top):
        self.view = _broadcast_view(self, bottom[0], self._bias(bottom).shape, self.p.axis, "bias_param", "bias")
        top[0].reshape_like(bottom[0])
        self.buffer("_reduced", (self.view[1],), bottom[0].dtype)

    def Forward_cpu(self, bottom, top):
        x, y = bottom[0].data.reshape(self.view), top[0].data.reshape(self.view)
        b = self._bias(bottom).data.reshape(-1)
        _over_dims(lambda lo, hi: scale_kernels.bias_forward(x, b, y, lo, hi), x, 2)

    def Backward_cpu(self, top, propagate_down, bottom):
        bias = self._bias(bottom)
        learned = len(bottom) == 1
        want_bias = self.param_propagate_down[0] if learned else propagate_down[1]
        copy = propagate_down[0] and top[0] is not bottom[0]
        if not (want_bias or copy):
            return
        dy = top[0].diff.reshape(self.view)
        dx = bottom[0].diff.reshape(self.view) if copy else dy
        sums = self._reduced
        _over_dims(lambda lo, hi: scale_kernels.bias_backward(dy, sums, dx, copy, lo, hi), dy, 3 if copy else 1)
        if want_bias:
            if learned:
                bias.diff += self._reduced.reshape(bias.shape)
            else:
                bias.diff[...] = self._reduced.reshape(bias.shape)


def _over_dims(fn, array3, passes):
    """``fn(lo, hi)`` over the dims of an (outer, dim, inner) or (outer, dim) array (Scale's and Bias's
    passes), shared out over the workers (each dim is computed alone) when ``passes`` passes
    over it are large enough."""
    parallel.over_slices(fn, array3.shape[1], passes * array3.nbytes)


@register_layer("Concat")
class Concat(Layer):
    """Joins the bottoms along ``axis`` (default 1; or the legacy ``concat_dim``, not both): they
    must agree on every other axis. y = [x_0, x_1, ...] along the axis.
    Backward: dE/dx_i = the slice of dE/dy that x_i filled. A single bottom is passed through
    without a copy."""

    example = {"bottoms": [(2, 3, 2), (2, 1, 2)]}

    keep_top_data = False
    keep_bottom_data = False

    params = {"axis": Field(int, None), "concat_dim": Field(int, None, min=0)}
    num_bottoms = (1, None)
    num_tops = (1, 1)

    @classmethod
    def check_params(cls, p):
        if p.axis is not None and p.concat_dim is not None:
            raise rule_error("concat_dim", "give either axis or concat_dim, not both")

    def Reshape(self, bottom, top):
        first = bottom[0]
        axis = _legacy_axis(self, first, self.p.axis, self.p.concat_dim, "concat_param", "concat_dim")
        shape = list(first.shape)
        for i, blob in enumerate(bottom[1:], 1):
            other = blob.shape
            if len(other) != len(shape) or any(a != b for j, (a, b) in enumerate(zip(first.shape, other)) if j != axis):
                raise self.error(
                    f"bottoms must match except on the concat axis {axis}: bottom[0] is "
                    f"{first.shape}, bottom[{i}] is {other}"
                )
            shape[axis] += other[axis]
        self.axis = axis
        if len(bottom) == 1:
            top[0].share_data(first)
            return
        top[0].reshape(shape)
        self.slices, start = [], 0
        for blob in bottom:
            stop = start + blob.shape[axis]
            self.slices.append((slice(None),) * axis + (slice(start, stop),))
            start = stop

    def Forward_cpu(self, bottom, top):
        if len(bottom) > 1:
            _copy_pairs([(top[0].data[where], blob.data) for blob, where in zip(bottom, self.slices)])

    def Backward_cpu(self, top, propagate_down, bottom):
        if len(bottom) == 1:
            if propagate_down[0]:
                _copy_pairs([(bottom[0].diff, top[0].diff)])
            return
        dy = top[0].diff
        pairs = [(blob.diff, dy[where]) for blob, where, need in zip(bottom, self.slices, propagate_down) if need]
        if pairs:
            _copy_pairs(pairs)


@register_layer("Slice")
class Slice(Layer):
    """Cuts the bottom along ``axis`` (default 1; or the legacy ``slice_dim``, not both) into the
    tops: at the ``slice_point`` indices (one fewer than the tops, strictly increasing, inside
    the axis), or without them into equal parts (the axis must divide evenly).
    Backward: each top's diff goes back into its slice of dE/dx. A single top is passed through
    without a copy."""

    example = {"bottoms": [(2, 4, 3)], "tops": 2, "params": {"slice_param": {"slice_point": [1]}}}

    keep_top_data = False
    keep_bottom_data = False

    params = {
        "axis": Field(int, None),
        "slice_dim": Field(int, None, min=0),
        "slice_point": Field(int, repeated=True, min=1),
    }
    num_bottoms = (1, 1)
    num_tops = (1, None)

    @classmethod
    def check_params(cls, p):
        if p.axis is not None and p.slice_dim is not None:
            raise rule_error("slice_dim", "give either axis or slice_dim, not both")

    def Reshape(self, bottom, top):
        blob = bottom[0]
        axis = _legacy_axis(self, blob, self.p.axis, self.p.slice_dim, "slice_param", "slice_dim")
        length, points = blob.shape[axis], list(self.p.slice_point)
        if points:
            if len(points) != len(top) - 1:
                raise self.error(
                    f"{len(points)} slice_point(s) for {len(top)} tops: give one fewer than the tops",
                    "slice_param.slice_point",
                )
            bounds = [0] + points + [length]
            if any(b <= a for a, b in zip(bounds, bounds[1:])):
                raise self.error(
                    f"slice points {points} must increase strictly within (0, {length}) "
                    f"(axis {axis} of shape {blob.shape})",
                    "slice_param.slice_point",
                )
        else:
            if length % len(top):
                raise self.error(
                    f"axis {axis} of shape {blob.shape} ({length}) does not split evenly "
                    f"into {len(top)} tops; give slice_point",
                    "slice_param.slice_point",
                )
            part = length // len(top)
            bounds = [i * part for i in range(len(top) + 1)]
        self.axis = axis
        if len(top) == 1:
            top[0].share_data(blob)
            return
        self.slices = []
        for t, start, stop in zip(top, bounds, bounds[1:]):
            shape = list(blob.shape)
            shape[axis] = stop - start
            t.reshape(shape)
            self.slices.append((slice(None),) * axis + (slice(start, stop),))

    def Forward_cpu(self, bottom, top):
        if len(top) > 1:
            _copy_pairs([(t.data, bottom[0].data[where]) for t, where in zip(top, self.slices)])

    def Backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        if len(top) == 1:
            _copy_pairs([(bottom[0].diff, top[0].diff)])
            return
        _copy_pairs([(bottom[0].diff[where], t.diff) for t, where in zip(top, self.slices)])


class _ViewLayer(Layer):
    """A top that is the bottom's data in another shape (no copy); backward copies the diff."""

    num_bottoms = (1, 1)
    num_tops = (1, 1)

    def top_shape(self, bottom):
        raise NotImplementedError

    def Reshape(self, bottom, top):
        shape = self.top_shape(bottom[0])
        top[0].share_data(bottom[0], shape)

    def Forward_cpu(self, bottom, top):
        pass

    def Backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            np.copyto(bottom[0].diff, top[0].diff.reshape(bottom[0].shape))


@register_layer("Flatten")
class Flatten(_ViewLayer):
    """Merges the axes ``axis`` .. ``end_axis`` (inclusive; default 1 .. -1) into one: a bottom
    (N, C, H, W) becomes (N, C*H*W). y is x's data, viewed; dE/dx is dE/dy, reshaped."""

    example = {"bottoms": [(2, 3, 2, 2)]}

    keep_top_data = False
    keep_bottom_data = False

    params = {"axis": Field(int, 1), "end_axis": Field(int, -1)}

    def top_shape(self, blob):
        start = _axis(self, blob, self.p.axis, "flatten_param.axis")
        end = _axis(self, blob, self.p.end_axis, "flatten_param.end_axis")
        if end < start:
            raise self.error(
                f"end_axis {self.p.end_axis} comes before axis {self.p.axis} for a bottom of shape {blob.shape}",
                "flatten_param.end_axis",
            )
        return blob.shape[:start] + (blob.count_range(start, end + 1),) + blob.shape[end + 1 :]


@register_layer("Reshape")
class Reshape(_ViewLayer):
    """Gives the bottom a new shape of the same count, with Caffe's rules: the ``shape`` dims
    replace the bottom's axes ``axis`` .. ``axis + num_axes - 1`` (default: all of them; a
    negative axis counts from the end, -1 meaning after the last axis; num_axes -1 means to
    the end); a dim 0 copies the bottom's dim at the same position, a single -1 is inferred
    from the count. y is x's data, viewed; dE/dx is dE/dy, reshaped."""

    example = {"bottoms": [(2, 3, 4)], "params": {"reshape_param": {"shape": {"dim": [0, -1, 2]}}}}

    keep_top_data = False
    keep_bottom_data = False

    params = {"shape": Field(RESHAPE_SHAPE, {}), "axis": Field(int, 0), "num_axes": Field(int, -1, min=-1)}

    @classmethod
    def check_params(cls, p):
        if p.shape.dim.count(-1) > 1:
            raise rule_error("shape", f"shape {p.shape.dim} has more than one -1: at most one dim can be inferred")

    def LayerSetUp(self, bottom, top):
        super().LayerSetUp(bottom, top)
        self.dims = list(self.p.shape.dim)

    def top_shape(self, blob):
        p, axes = self.p, blob.num_axes
        start = p.axis if p.axis >= 0 else axes + p.axis + 1
        if not 0 <= start <= axes:
            raise self.error(f"axis {p.axis} is out of range for a bottom of shape {blob.shape}", "reshape_param.axis")
        end = axes if p.num_axes == -1 else start + p.num_axes
        if end > axes:
            raise self.error(
                f"axis {start} + num_axes {p.num_axes} goes past the bottom's {axes} axes (shape {blob.shape})",
                "reshape_param.num_axes",
            )
        new = []
        for i, d in enumerate(self.dims):
            if d == 0:
                if start + i >= axes:
                    raise self.error(
                        f"shape {self.dims} has a 0 at position {i} but the bottom "
                        f"{blob.shape} has no axis {start + i} to copy",
                        "reshape_param.shape",
                    )
                d = blob.shape[start + i]
            new.append(d)
        shape = list(blob.shape[:start]) + new + list(blob.shape[end:])
        if -1 in new:
            known = int(np.prod([d for d in shape if d != -1], dtype=np.int64))
            if known == 0 or blob.count % known:
                raise self.error(
                    f"cannot infer the -1 in {self.dims}: the bottom's count {blob.count} "
                    f"(shape {blob.shape}) is not a multiple of {known}",
                    "reshape_param.shape",
                )
            shape[shape.index(-1)] = blob.count // known
        if int(np.prod(shape, dtype=np.int64)) != blob.count:
            raise self.error(
                f"shape {self.dims} gives {tuple(shape)} ({int(np.prod(shape))} values) for "
                f"a bottom of shape {blob.shape} ({blob.count} values)",
                "reshape_param.shape",
            )
        return tuple(shape)


@register_layer("Silence")
class Silence(Layer):
    """Consumes its bottoms (so that no output is left dangling) and has no top.
    Backward: writes zero into the diff of each bottom asked for a gradient."""

    example = {"bottoms": [(2, 3), (4,)], "tops": 0}

    num_bottoms = (1, None)
    num_tops = (0, 0)

    def Reshape(self, bottom, top):
        pass

    def Forward_cpu(self, bottom, top):
        pass

    def Backward_cpu(self, top, propagate_down, bottom):
        for blob, need in zip(bottom, propagate_down):
            if need:
                blob.diff[...] = 0


@register_layer("Reduction")
class Reduction(Layer):
    """Reduces all axes from ``axis`` on (default 0: everything, a scalar top): the top has
    shape bottom.shape[:axis]. Seeing x as (num, dim):

        SUM: y = c sum x    ASUM: y = c sum |x|    SUMSQ: y = c sum x^2    MEAN: y = c sum x / dim

    with c = ``coeff`` (default 1). Backward: dE/dx[n, j] = c dE/dy[n] times 1 (SUM), sign(x)
    (ASUM; sign(0) = 0 at the kink, as Caffe), 2 x (SUMSQ) or 1 / dim (MEAN)."""

    example = [
        {"bottoms": [(2, 3, 4)]},
        {"bottoms": [(2, 3, 4)], "params": {"reduction_param": {"operation": "ASUM", "axis": 1, "coeff": -2}}},
        {"bottoms": [(2, 3, 4)], "params": {"reduction_param": {"operation": "SUMSQ", "axis": -1}}},
        {"bottoms": [(2, 3, 4)], "params": {"reduction_param": {"operation": "MEAN", "axis": 1}}},
    ]

    keep_top_data = False

    params = {
        "operation": Field(Enum("SUM", "ASUM", "SUMSQ", "MEAN"), "SUM"),
        "axis": Field(int, 0),
        "coeff": Field(float, 1.0),
    }
    num_bottoms = (1, 1)
    num_tops = (1, 1)

    def Reshape(self, bottom, top):
        blob = bottom[0]
        axis = _axis(self, blob, self.p.axis, "reduction_param.axis")
        top[0].reshape(blob.shape[:axis])
        self.num, self.dim = blob.count_range(0, axis), blob.count_range(axis)
        self.scale = self.p.coeff / self.dim if self.p.operation == "MEAN" and self.dim else self.p.coeff
        if self.p.operation == "ASUM":
            self.buffer("_absolute", (self.num, self.dim), blob.dtype)
        self.buffer("_row_scale", (self.num, 1), blob.dtype)

    def Forward_cpu(self, bottom, top):
        x = bottom[0].data.reshape(self.num, self.dim)
        y = top[0].data.reshape(self.num)
        op = self.p.operation
        if op == "ASUM":
            np.abs(x, out=self._absolute)
            np.sum(self._absolute, axis=1, out=y)
        elif op == "SUMSQ":
            np.einsum("ij,ij->i", x, x, out=y)
        else:
            np.sum(x, axis=1, out=y)
        if self.scale != 1:
            y *= y.dtype.type(self.scale)

    def Backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x = bottom[0].data.reshape(self.num, self.dim)
        dx = bottom[0].diff.reshape(self.num, self.dim)
        g = self._row_scale
        np.multiply(top[0].diff.reshape(self.num, 1), g.dtype.type(self.scale), out=g)
        op = self.p.operation
        if op == "ASUM":
            np.sign(x, out=dx)
            dx *= g
        elif op == "SUMSQ":
            np.multiply(x, g, out=dx)
            dx *= dx.dtype.type(2)
        else:
            np.copyto(dx, g)


@register_layer("ArgMax")
class ArgMax(Layer):
    """The indices (or values) of the top_k largest entries.

    With ``axis``: along that axis; the top is the bottom's shape with that axis made top_k,
    holding indices, or the values themselves when ``out_max_val``.
    Without ``axis`` (Caffe's default): over all axes but the first, each item flattened; the
    top has shape (N, 1, top_k) (padded with 1s to the bottom's number of axes), or
    (N, 2, top_k) with ``out_max_val``: indices in [:, 0], values in [:, 1].
    Order: largest first; ties go to the larger index (Caffe sorts (value, index) pairs in
    descending order). Indices are stored as floats in the top. No backward."""

    example = [
        {"bottoms": [(2, 5)], "params": {"argmax_param": {"top_k": 2, "out_max_val": True}}},
        {"bottoms": [(2, 5, 3)], "params": {"argmax_param": {"axis": 1}}},
    ]

    keep_top_data = False

    params = {"out_max_val": Field(bool, False), "top_k": Field(int, 1, min=1), "axis": Field(int, None)}
    num_bottoms = (1, 1)
    num_tops = (1, 1)
    has_backward = False

    def Reshape(self, bottom, top):
        blob, k = bottom[0], self.p.top_k
        if self.p.axis is not None:
            axis = _axis(self, blob, self.p.axis, "argmax_param.axis")
            self.view = (blob.count_range(0, axis), blob.shape[axis], blob.count_range(axis + 1))
            if k > blob.shape[axis]:
                raise self.error(
                    f"top_k {k} is more than the {blob.shape[axis]} entries of axis {axis} (shape {blob.shape})",
                    "argmax_param.top_k",
                )
            shape = list(blob.shape)
            shape[axis] = k
        else:
            if blob.num_axes < 1:
                raise self.error(f"ArgMax needs a bottom with a batch axis, got shape {blob.shape}")
            self.view = (blob.shape[0], blob.count_range(1), 1)
            if k > self.view[1]:
                raise self.error(
                    f"top_k {k} is more than the {self.view[1]} entries per item (shape {blob.shape})",
                    "argmax_param.top_k",
                )
            shape = [1] * max(blob.num_axes, 3)
            shape[0], shape[1], shape[2] = blob.shape[0], 2 if self.p.out_max_val else 1, k
        top[0].reshape(shape)

    def Forward_cpu(self, bottom, top):
        outer, dim, inner = self.view
        k = self.p.top_k
        x = bottom[0].data.reshape(self.view)
        backwards = x[:, ::-1, :]  # ties: the larger index comes first
        if k == 1:
            index = dim - 1 - np.argmax(backwards, axis=1)[:, None, :]
        else:
            index = dim - 1 - np.argsort(-backwards, axis=1, kind="stable")[:, :k, :]
        y = top[0].data
        if self.p.axis is not None:
            y3 = y.reshape(outer, k, inner)
            if self.p.out_max_val:
                y3[...] = np.take_along_axis(x, index, axis=1)
            else:
                y3[...] = index
        else:
            y3 = y.reshape(outer, 2 if self.p.out_max_val else 1, k)
            y3[:, 0, :] = index[:, :, 0]
            if self.p.out_max_val:
                y3[:, 1, :] = np.take_along_axis(x, index, axis=1)[:, :, 0]


@register_layer("Filter")
class Filter(Layer):
    """Keeps the items (rows along axis 0) whose selector is non-zero. The last bottom is the
    selector s (shape (N,) or (N, 1, ...)); every other bottom x_t (N items) gives top t:

        y_t = x_t[S],  S = the indices n with s[n] != 0, in order

    The tops' batch size follows the selector at every forward (at set-up it is N, as Caffe's,
    so the layers after it can be set up before data arrives); with nothing selected the tops
    are empty (Caffe then divides by zero in backward; here the gradient is 0).
    Backward: dE/dx_t[S[j]] = dE/dy_t[j], 0 for the items left out. The selector takes no
    gradient."""

    example = {"bottoms": [(5, 3), (5, 2, 2), (5,)], "labels": {2: 2}, "tops": 2}

    keep_top_data = False

    num_bottoms = (2, None)
    num_tops = (1, None)

    def allow_force_backward(self, bottom_index):
        return bottom_index != self.selector_index

    def LayerSetUp(self, bottom, top):
        if len(top) != len(bottom) - 1:
            raise self.error(
                f"Filter gives one top per bottom but the last (the selector): "
                f"{len(bottom) - 1} expected, got {len(top)}"
            )
        self.selector_index = len(bottom) - 1
        self.setting_up = True

    def Reshape(self, bottom, top):
        selector = bottom[-1]
        if selector.num_axes == 0 or any(d != 1 for d in selector.shape[1:]):
            raise self.error(f"the selector (last bottom) must have shape (N,) or (N, 1, ...), got {selector.shape}")
        batch = selector.shape[0]
        for i, blob in enumerate(bottom[:-1]):
            if blob.num_axes == 0 or blob.shape[0] != batch:
                raise self.error(f"bottom {i} of shape {blob.shape} does not have the selector's {batch} items")
        self.selected = np.flatnonzero(selector.data.reshape(batch) != 0)
        kept = batch if self.setting_up else self.selected.size
        self.setting_up = False
        for blob, out in zip(bottom, top):
            out.reshape((kept,) + blob.shape[1:])

    def Forward_cpu(self, bottom, top):
        for blob, out in zip(bottom, top):
            np.take(blob.data, self.selected, axis=0, out=out.data)

    def Backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[self.selector_index]:
            raise self.error("Filter cannot backpropagate to the selector")
        for blob, out, need in zip(bottom, top, propagate_down):
            if need:
                blob.diff[...] = 0
                blob.diff[self.selected] = out.diff


@register_layer("BatchReindex")
class BatchReindex(Layer):
    """Picks items of x = bottom[0] by index: with the indices r = bottom[1] (one axis, K
    whole numbers in [0, N)), y[k] = x[r[k]], so y has shape (K,) + x.shape[1:]. Indices may
    repeat (or leave items out).
    Backward: dE/dx[n] = sum over the k with r[k] = n of dE/dy[k] (0 for an item never picked).
    The indices take no gradient; a fraction or an index outside [0, N) is a DataError (Caffe
    truncates a fraction)."""

    example = {"bottoms": [(4, 3), (6,)], "labels": {1: 4}}

    keep_top_data = False

    num_bottoms = (2, 2)
    num_tops = (1, 1)

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0

    def Reshape(self, bottom, top):
        data, indices = bottom
        if data.num_axes == 0:
            raise self.error("the first bottom needs a batch axis (axis 0), got shape ()")
        if indices.num_axes != 1:
            raise self.error(f"the indices (bottom 1) must have one axis, got shape {indices.shape}")
        top[0].reshape(indices.shape[:1] + data.shape[1:])

    def _indices(self, bottom):
        batch, values = bottom[0].shape[0], bottom[1].data
        bad = (values != np.floor(values)) | (values < 0) | (values >= batch)  # NaN too
        if bad.any():
            value = values[np.argmax(bad)]
            raise DataError(f"index {value:g} is not an item of the batch [0, {batch - 1}]", layer=self.name)
        return values.astype(np.intp)

    def Forward_cpu(self, bottom, top):
        self.indices = self._indices(bottom)
        np.take(bottom[0].data, self.indices, axis=0, out=top[0].data)

    def Backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise self.error("BatchReindex cannot backpropagate to the indices")
        if propagate_down[0]:
            dx = bottom[0].diff
            dx[...] = 0
            width = math.prod(dx.shape[1:])
            rows = top[0].diff.reshape(len(self.indices), width)
            gather.add_rows(dx.reshape(dx.shape[0], width), self.indices, rows)


@register_layer("Parameter")
class Parameter(Layer):
    """A learned blob as a top: one param of ``parameter_param.shape`` (zeros until trained or
    loaded, as Caffe's), given as the top's data (no copy; no bottoms).
    Backward: dE/dparam += dE/dtop (Caffe shares the top's diff with the param instead)."""

    example = {
        "params": {"parameter_param": {"shape": {"dim": [2, 3]}}},
        "top_shapes": [(2, 3)],
    }

    params = {"shape": Field(BLOB_SHAPE, {})}
    num_bottoms = (0, 0)
    num_tops = (1, 1)

    def LayerSetUp(self, bottom, top):
        self.add_param(tuple(self.p.shape.dim))

    def Reshape(self, bottom, top):
        top[0].share_data(self.blobs[0])  # again before every forward: the param may be shared or reloaded

    def Forward_cpu(self, bottom, top):
        pass

    def Backward_cpu(self, top, propagate_down, bottom):
        if self.param_propagate_down[0]:
            self.blobs[0].diff += top[0].diff


@register_layer("Tile")
class Tile(Layer):
    """Repeats the block of axes from ``axis`` on, ``tiles`` times, along ``axis``: seeing x as
    (outer, inner) with outer = count before ``axis``, y = (outer, tiles, inner) with
    y[n, t] = x[n] (so [a b c] tiled twice on its only axis is [a b c a b c]).
    Backward: dE/dx[n] = sum over t of dE/dy[n, t]."""

    example = {"bottoms": [(2, 3)], "params": {"tile_param": {"tiles": 2}}}

    keep_top_data = False
    keep_bottom_data = False

    params = {"axis": Field(int, 1), "tiles": Field(int, required=True, min=1)}
    num_bottoms = (1, 1)
    num_tops = (1, 1)

    def Reshape(self, bottom, top):
        blob = bottom[0]
        axis = _axis(self, blob, self.p.axis, "tile_param.axis")
        shape = list(blob.shape)
        shape[axis] *= self.p.tiles
        top[0].reshape(shape)
        self.outer, self.inner = blob.count_range(0, axis), blob.count_range(axis)

    def Forward_cpu(self, bottom, top):
        np.copyto(
            top[0].data.reshape(self.outer, self.p.tiles, self.inner), bottom[0].data.reshape(self.outer, 1, self.inner)
        )

    def Backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            np.sum(
                top[0].diff.reshape(self.outer, self.p.tiles, self.inner),
                axis=1,
                out=bottom[0].diff.reshape(self.outer, self.inner),
            )
