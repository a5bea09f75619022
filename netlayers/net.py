"""Net: a checked spec built into set-up layers and shaped blobs, run forward and backward.

Building follows Caffe's Net::Init: keep the layers of the phase, insert Splits at fan-outs,
resolve bottoms to the blobs earlier layers produced (a top named like its bottom is computed
in place), set each layer up in order, share params by name, and find which layers need
backward (a layer does when a bottom needs a gradient or a param has lr_mult != 0, and only if
its tops reach a loss; ``force_backward`` asks for every gradient that may flow, from the
losses and from diffs set by hand on tops no layer reads).
"""

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .blob import Blob
from .errors import ConfigError, DataError, NetlayersError
from .layer import Layer
from .layers.fused import find_chain, find_sum_relu
from .memory import return_freed_memory
from .netspec import NetSpec, load_net_spec, phase_layers
from .parallel import single_threaded_blas, workspace_lock

#: Bytes each shared blob's place in a net's memory arena is aligned to (a cache line: the
#: kernels' vector loads never straddle two blobs' lines).
ARENA_ALIGNMENT = 64


class LearnableParam:
    """A param blob the solver updates, with its multipliers (from its owner's ``param``)."""

    def __init__(self, blob: Blob, lr_mult: float, decay_mult: float, name: str) -> None:
        self.blob, self.lr_mult, self.decay_mult, self.name = blob, lr_mult, decay_mult, name


def _float_dtype(dtype):
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        dtype = None
    if dtype not in (np.float32, np.float64):
        raise ConfigError(f"a net computes in float32 or float64, not {dtype}")
    return dtype


def _real_array(name, value, dtype):
    """``value`` as an array of ``dtype``, or a DataError saying what it holds instead."""
    try:
        array = np.asarray(value)
    except ValueError:  # ragged nested lists
        raise DataError(
            f"blob '{name}' takes a rectangular array of numbers, got nested sequences of different lengths"
        ) from None
    if array.dtype.kind not in "biuf":
        kinds = {
            "c": "complex numbers",
            "U": "strings",
            "S": "bytes",
            "O": "Python objects",
            "M": "dates",
            "m": "time spans",
            "V": "records",
        }
        raise DataError(f"blob '{name}' takes real numbers, got {kinds.get(array.dtype.kind, array.dtype)}")
    with np.errstate(over="ignore"):
        return array.astype(dtype, copy=False)


class _SharedMemory:
    """The blobs whose data is one array, and whether some writer needs that data kept."""

    def __init__(self):
        self.blobs, self.keep = set(), False

    def add(self, blob, keep):
        self.blobs.add(id(blob))
        self.keep = self.keep or keep

    def writable_by(self, blob):
        """May a layer overwrite this memory through ``blob``, its only user?"""
        return self.blobs == {id(blob)} and not self.keep


class Net:
    """A net built from a YAML path or dict.

    ``blobs`` (name -> Blob, in order), ``params`` (layer name -> list of param Blobs),
    ``layers``, ``inputs`` (tops of Input layers), ``outputs`` (blobs no layer consumes).
    ``share_memory=True`` (what a solver's TRAIN net uses) lets inner blobs keep their values
    and gradients in buffers shared with others alive at other times of the forward and
    backward pass (see ``_share_memory``; ``shared_data_bytes`` and ``shared_diff_bytes`` say
    what that saved); ``keep`` names blobs that keep their own values and gradients even so
    (the Predictor's prediction blob, which a later layer may read). ``forward_only=True``
    builds the net as :meth:`drop_backward` leaves it (what a solver does with its TEST nets);
    with ``share_memory`` every inner blob then shares, so only the inputs and outputs keep
    their values after a forward.
    """

    def __init__(
        self,
        spec: str | Path | dict | NetSpec,
        phase: str = "TRAIN",
        *,
        dtype: Any = None,
        seed: int | None = None,
        data_root: Any = None,
        level: int | None = None,
        stages: Any = None,
        share_memory: bool = False,
        keep: Sequence[str] = (),
        forward_only: bool = False,
    ) -> None:
        self.spec = load_net_spec(spec)
        # Caffe's NetState: include/exclude rules test the phase, level and stages (default:
        # the net's own ``state:``, else level 0 and no stages)
        self.level = self.spec.level if level is None else level
        self.stages = self.spec.stages if stages is None else tuple(stages)
        if isinstance(self.level, bool) or not isinstance(self.level, (int, np.integer)):
            raise ConfigError(f"level must be a whole number, got {self.level!r}")
        if isinstance(stages, str) or not all(isinstance(stage, str) for stage in self.stages):
            raise ConfigError(f"stages must be a list of names, got {stages!r}")
        self.phase = phase.upper() if isinstance(phase, str) else phase
        self.name = self.spec.name
        self.dtype = _float_dtype(dtype or self.spec.dtype)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise ConfigError(f"seed must be a whole number, got {seed!r}")
        seed = self.spec.random_seed if seed is None else int(seed)
        entropy = np.random.SeedSequence().entropy
        assert isinstance(entropy, int)
        self.seed: int = seed if seed is not None and seed >= 0 else entropy % 2**63
        self.rng = np.random.default_rng(self.seed)
        self.data_root = data_root
        self.base_dir = self.spec.base_dir or Path.cwd()
        self.layers: list[Layer] = []
        self.layer_names: list[str] = []
        self.blobs: OrderedDict[str, Blob] = OrderedDict()
        self.source_blobs: OrderedDict[str, Blob] = OrderedDict()  # tops of layers without bottoms
        self.bottom_vecs: list[list[Blob]] = []
        self.top_vecs: list[list[Blob]] = []
        self.bottom_need_backward: list[list[bool]] = []
        self.layer_need_backward: list[bool] = []
        self.learnable_params: list[LearnableParam] = []
        self._build()
        if forward_only:  # before the memory plans: no backward keeps any blob's values
            self.drop_backward()
        self.shared_data_bytes, self.shared_diff_bytes = (0, 0)
        self._shared_values: set[int] = set()  # ids of the blobs whose values share a buffer
        self._forward_through = -1  # the last layer a forward ran since the last backward (-1: none)
        keep = self._checked_keep(keep)
        if share_memory:
            self.shared_data_bytes, self.shared_diff_bytes = self._share_memory(keep)
        return_freed_memory()

    # -- building -------------------------------------------------------------------------
    def _build(self):
        specs = phase_layers(self.spec, self.phase, self.level, self.stages)
        self._memory = {}  # id(blob) -> the _SharedMemory its data array belongs to
        self._lenders = set()  # indices of layers lending kept values to the next (_note_lender)
        self._chains = {}  # first layer's index -> its fused run (layers.fused: BatchNorm chains, SumReLU)
        self._chain_ends = {}  # the same chains by their last layer's index
        self._gradient_source: bool | None = None  # a loss or force_backward (_check_backward_start)
        for spec in specs:
            layer = spec.cls(spec, phase=self.phase, dtype=self.dtype, rng=self.rng)
            layer.net = self
            bottoms = [self.blobs[name] for name in spec.bottoms]
            tops = [self._top_blob(layer, name, bottoms) for name in spec.tops]
            if layer.auto_top_blobs:  # anonymous: no name, so never an output nor a bottom
                tops += [
                    Blob((), self.dtype, name=f"{spec.name}(automatic)") for _ in range(layer.num_tops[0] - len(tops))
                ]
            layer.setup(bottoms, tops)  # its errors name the layer and its line
            self._track_memory(layer, bottoms, tops)
            self._note_lender(layer, bottoms, tops)
            self.layers.append(layer)
            self.layer_names.append(spec.name)
            self.bottom_vecs.append(bottoms)
            self.top_vecs.append(tops)
        self.source_blobs = OrderedDict(
            (name, blob)
            for layer, tops in zip(self.layers, self.top_vecs)
            if not layer.spec.bottoms
            for name, blob in zip(layer.spec.tops, tops)
        )
        del self._memory
        self._share_params()
        self._find_backward()
        self.forward_only = False
        for index, (layer, needed) in enumerate(zip(self.layers, self.layer_need_backward)):
            lends = index in self._lenders and self.layer_need_backward[index + 1]  # to a Scale's backward
            if not needed and not lends:
                layer.drop_backward_state()
        self._outputs = self._find_outputs()
        for index in sorted(self._lenders):
            chain = find_chain(self.layers, self.bottom_vecs, self.top_vecs, self._lenders, index)
            if chain is not None:
                self._chains[index] = self._chain_ends[index + chain.length - 1] = chain
        for index in range(len(self.layers)):
            pair = find_sum_relu(self.layers, self.bottom_vecs, self.top_vecs, index)
            if pair is not None:
                self._chains[index] = self._chain_ends[index + 1] = pair
        self._let_batch_norms_recompute()

    def _let_batch_norms_recompute(self):
        """A BatchNorm that does not run in place keeps no normalized values: it makes them
        again from its input when its backward (or the Scale it lends them to) needs them,
        which holds while nothing writes that input in between. No later layer may write in
        place into memory the input shares: checked here, though :meth:`_top_blob` already
        grants in-place writes only to a memory's sole reader."""
        in_place = [
            (index, top)
            for index, (bottoms, tops) in enumerate(zip(self.bottom_vecs, self.top_vecs))
            for top in tops
            if any(top is bottom for bottom in bottoms)
        ]
        for index, layer in enumerate(self.layers):
            if not hasattr(layer, "recompute_normalized") or not self.bottom_vecs[index]:
                continue
            source = self.bottom_vecs[index][0]
            if source is self.top_vecs[index][0]:
                continue
            if not any(later > index and np.may_share_memory(top.data, source.data) for later, top in in_place):
                layer.recompute_normalized()

    def _note_lender(self, layer, bottoms, tops):
        """An in-place layer that would copy its input (``lent_input``: Scale) right after a layer
        that keeps the values it wrote to that very blob (``kept_output``: BatchNorm) reads
        them there instead: ``self._lenders`` holds the lenders' indices."""
        if not self.layers or not hasattr(layer, "lent_input") or not tops or tops[0] is not bottoms[0]:
            return
        previous = self.layers[-1]
        if hasattr(previous, "kept_output") and self.top_vecs[-1] and self.top_vecs[-1][0] is bottoms[0]:
            self._lenders.add(len(self.layers) - 1)

    def _top_blob(self, layer, name, bottoms):
        """The blob a top named ``name`` writes into.

        A top named like the layer's bottom asks to run in place. That is granted only where
        nothing can tell the difference: the layer can compute in place, the bottom's memory is
        no other blob's (a fan-out Split, a Flatten or Reshape shares it) and no layer that wrote
        it needs its top data kept, for its backward (Sigmoid reads y) or for the next forward (an
        Input's values). Otherwise, and where the layer reads the blob through a Split (the blob
        fans out, so this layer is not its sole consumer), the layer writes a new blob that takes
        over the name, as if the config had named the top differently: later layers read the new
        values, earlier ones keep theirs, gradients stay the true ones, only memory is spent."""
        if name in layer.spec.bottoms:
            bottom = bottoms[layer.spec.bottoms.index(name)]
            if layer.can_run_in_place() and self._memory[id(bottom)].writable_by(bottom):
                return bottom
        blob = Blob((), self.dtype, name=name)
        self.blobs[name] = blob
        return blob

    def _track_memory(self, layer, bottoms, tops):
        """Record which blobs share a data array (a Split's tops share its bottom's) and whether
        a layer that wrote the array needs it kept (see :meth:`_top_blob`)."""
        keep = bool(layer.keep_top_data)
        for top in tops:
            shared = next(
                (self._memory[id(b)] for b in bottoms if b is top or np.may_share_memory(top.data, b.data)),
                _SharedMemory(),
            )
            shared.add(top, keep)
            self._memory[id(top)] = shared

    def _share_params(self):
        """Params named alike share one Blob (data and diff): gradients of all users add up."""
        owners = {}
        with_params = {}
        for layer in self.layers:
            if layer.blobs and with_params.setdefault(layer.name, layer) is not layer:
                raise ConfigError(
                    f"two layers named '{layer.name}' have params (the other at line "
                    f"{with_params[layer.name].spec.where.line}): weights files keep params by "
                    "layer name, so rename one",
                    file=layer.spec.where.file,
                    line=layer.spec.where.line,
                    layer=layer.name,
                )
            specs = layer.spec.params
            if len(specs) > len(layer.blobs):
                raise ConfigError(
                    f"{len(specs)} 'param' entries given but the layer has {len(layer.blobs)} param blob(s)",
                    file=layer.spec.where.file,
                    line=layer.spec.where.line,
                    layer=layer.name,
                    field="param",
                )
            for i, blob in enumerate(layer.blobs):
                pspec = specs[i] if i < len(specs) else None
                default = 1.0 if layer.learnable else 0.0
                lr_mult = pspec.lr_mult if pspec else default
                decay_mult = pspec.decay_mult if pspec else default
                if not layer.learnable and lr_mult != 0:
                    raise ConfigError(
                        f"{layer.type} blob {i} holds statistics, not learned params: "
                        f"its lr_mult must be 0, got {lr_mult:g}",
                        file=layer.spec.where.file,
                        line=layer.spec.where.line,
                        layer=layer.name,
                        field="param",
                    )
                name = pspec.name if pspec else ""
                if name and name in owners:
                    owner = owners[name]
                    if owner.blob.shape != blob.shape and (
                        pspec.share_mode == "STRICT" or owner.blob.count != blob.count
                    ):
                        raise ConfigError(
                            f"shared param '{name}' has shape {blob.shape} here but "
                            f"{owner.blob.shape} where it is first defined",
                            file=layer.spec.where.file,
                            line=layer.spec.where.line,
                            layer=layer.name,
                            field="param",
                        )
                    layer.blobs[i] = owner.blob
                else:
                    learnable = LearnableParam(blob, lr_mult, decay_mult, name or f"{layer.name}[{i}]")
                    self.learnable_params.append(learnable)
                    if name:
                        owners[name] = learnable
                layer.param_propagate_down[i] = lr_mult != 0

    def _find_backward(self):
        force = self.spec.force_backward
        blob_needs = set()  # blobs whose gradient some layer needs (forward analysis)
        for layer in self.layers:
            spec = layer.spec
            needs = []
            for bi, name in enumerate(spec.bottoms):
                wanted = spec.propagate_down[bi] if spec.propagate_down else True
                need = wanted and layer.allow_force_backward(bi) and (name in blob_needs or force)
                needs.append(need)
            if not layer.has_backward:
                layer.param_propagate_down = [False] * len(layer.blobs)
            layer_needs = any(needs) or any(layer.param_propagate_down)
            self.bottom_need_backward.append(needs)
            self.layer_need_backward.append(layer_needs)
            if layer_needs:
                blob_needs.update(spec.tops)
        # Walk back from the losses: a layer can only backpropagate if a diff reaches one of
        # its tops (the top carries a loss weight, or a later layer writes its diff). This is
        # Caffe's blobs_under_loss pruning. Under force_backward a diff may also be set by hand
        # (saliency maps, deep dream): then a top no later layer reads counts as reached too,
        # as Caffe's force_backward runs every layer (one whose class has no Backward_cpu is
        # then left out, not refused); a top read only by layers that refuse its gradient (the
        # Split of a label blob) still does not, so such a Split is never asked for a gradient
        # nobody computes.
        diff_ready = set()
        read_later = set()  # blob names some later layer reads
        for li in reversed(range(len(self.layers))):
            layer = self.layers[li]
            tops_ready = (
                any(w != 0 for w in layer.loss_weights)
                or any(name in diff_ready for name in layer.spec.tops)
                or (
                    force
                    and type(layer).Backward_cpu is not Layer.Backward_cpu
                    and any(name not in read_later for name in layer.spec.tops)
                )
            )
            read_later.difference_update(layer.spec.tops)
            read_later.update(layer.spec.bottoms)
            if not tops_ready:
                self.layer_need_backward[li] = False
                self.bottom_need_backward[li] = [False] * len(layer.spec.bottoms)
            for name, need in zip(layer.spec.bottoms, self.bottom_need_backward[li]):
                if need:
                    diff_ready.add(name)
        self.blob_need_backward = blob_needs
        for layer, needed in zip(self.layers, self.layer_need_backward):
            if needed and type(layer).Backward_cpu is Layer.Backward_cpu:
                owner = (
                    f"class '{layer.p.layer}' in module '{layer.p.module}'"
                    if layer.type == "Python"
                    else f"class '{type(layer).__qualname__}'"
                )
                raise layer.error(
                    f"{owner} has no Backward_cpu, but gradients must flow through "
                    "this layer: implement it, or stop them here (propagate_down: "
                    "false on its bottoms, lr_mult: 0 on its params)"
                )

    def _share_memory(self, keep: Sequence[str] = ()) -> tuple[int, int]:
        """Let blobs whose values, or whose gradients, are alive at different times of a
        forward and backward pass keep them in the same memory (``share_memory=True``, what a
        solver's TRAIN net does), as PyTorch frees a tensor once its last reader has run;
        returns the bytes of values and of gradients saved. All of them live in one arena, each
        at an offset (cache-line aligned) where nothing alive at the same time lies, so a
        large early activation's place can hold several later gradients at once.

        One timeline holds both passes: layer i runs its forward at time i and its backward at
        time 2 L - 1 - i (L layers); the layers of a fused run (``_fused_runs``) each take the
        whole run's times. A blob's values are alive from the first layer that writes
        or reads them to the last, or, when a layer's backward reads them (each layer declares
        ``keep_bottom_data`` and ``keep_top_data``: a convolution's backward reads its input,
        a ReLU's its output; a layer without backward keeps nothing), to the first such
        backward. A blob whose values other blobs view (a Split's tops where it fans out, a
        Flatten's or Reshape's top) goes with them, as one (a Parameter's top, a view of a
        param, never goes). A blob's gradient is alive from the backward of the last layer
        that reads the blob to that of the layer that wrote it, when some layer writes it.
        Values and gradients whose times do not overlap share memory (``arena_offsets``): in a
        ResNet each block's BatchNorm + Scale output, read only by the sum; in cifar10_quick
        the first convolution's output, read only by the max pooling, whose buffer then holds
        gradients in the backward. Left out: the net's inputs and outputs, a loss's weighted
        tops (their diffs hold the weight from the forward) and the blobs ``keep`` names. After
        a pass, a shared blob's data or diff holds whatever blob used that memory last: the
        default (``share_memory=False``) keeps every blob's values and gradients, as Caffe does."""
        last = 2 * len(self.layers) - 1  # the time of layer 0's backward
        runs = self._fused_runs()
        spans: dict[int, tuple[int, int]] = {}
        for index, (bottoms, tops) in enumerate(zip(self.bottom_vecs, self.top_vecs)):
            first, end = runs.get(index, (index, index))
            for blob in bottoms + tops:
                low, high = spans.get(id(blob), (first, end))
                spans[id(blob)] = (min(low, first), max(high, end))
        kept_from: dict[int, int] = {}  # id(blob) -> the index of the first layer whose backward reads its values
        for index, (layer, bottoms, tops) in enumerate(zip(self.layers, self.bottom_vecs, self.top_vecs)):
            if not layer.needs_backward:
                continue
            first = runs.get(index, (index, index))[0]
            for blob in (bottoms if layer.keep_bottom_data else []) + (tops if layer.keep_top_data else []):
                kept_from[id(blob)] = min(kept_from.get(id(blob), first), first)
        whole = self._kept_whole(keep)
        units = []  # (blobs, whether their values or gradient, (first time, last time))
        for members in self._data_units():
            if any(id(blob) in whole for blob in members):
                continue
            first = min(spans[id(blob)][0] for blob in members)
            end = max(spans[id(blob)][1] for blob in members)
            readers = [kept_from[id(blob)] for blob in members if id(blob) in kept_from]
            units.append((members, True, (first, last - min(readers) if readers else end)))
        written = {
            id(blob)
            for bottoms, needs in zip(self.bottom_vecs, self.bottom_need_backward)
            for blob, need in zip(bottoms, needs)
            if need
        }
        for blob in self.blobs.values():
            if id(blob) in written and id(blob) not in whole:
                first, end = spans[id(blob)]
                units.append(([blob], False, (last - end, last - first)))
        align = max(1, ARENA_ALIGNMENT // self.dtype.itemsize)
        sizes = [-(-unit[0][0].count // align) * align for unit in units]
        offsets, total = arena_offsets([unit[2] for unit in units], sizes)
        if total >= sum(unit[0][0].count for unit in units):
            return 0, 0  # nothing alive at other times to share with
        raw = np.zeros(total + align, self.dtype)  # pages the plan never reaches stay unmapped
        start = (-raw.ctypes.data % ARENA_ALIGNMENT) // self.dtype.itemsize
        arena = raw[start : start + total]
        whole = [0, 0]  # bytes of values, of gradients, each in its own buffer
        shared = sharing_places(offsets, sizes)
        for (blobs, values, _), offset, shares in zip(units, offsets, shared):
            if not shares:
                continue  # a place no other blob's overlaps: the blob keeps its own arrays
            count = blobs[0].count
            if values:
                _use_data_memory(blobs, arena[offset : offset + count])
                self._shared_values.update(id(blob) for blob in blobs)
            else:
                blobs[0].use_diff_memory(arena[offset : offset + count])
            whole[0 if values else 1] += count * self.dtype.itemsize
        spanned = covered_length([(o, z) for o, z, shares in zip(offsets, sizes, shared) if shares])
        saved = max(0, sum(whole) - spanned * self.dtype.itemsize)  # split as values and gradients' bytes are
        data_saved = saved * whole[0] // max(1, sum(whole))
        return data_saved, saved - data_saved

    def _fused_runs(self) -> dict[int, tuple[int, int]]:
        """Each layer of a fused run (``layers.fused``: a BatchNorm chain, a SumReLU) -> the
        run's (first, last) layer index. A run's forward and backward are each one pass over
        all its blobs (SumReLU's backward reads the sum's values, for the ReLU's mask, while it
        writes the Eltwise's bottoms' gradients), so the memory plan gives every layer of a run
        the run's whole time: otherwise a gradient written by its Eltwise's part could take the
        place of values its ReLU's part still reads (a float32 ResNet's gradients, wrong by 35 %
        from the first residual sum down, before this)."""
        runs = {}
        for first, run in self._chains.items():
            for index in range(first, first + run.length):
                runs[index] = (first, first + run.length - 1)
        return runs

    def _data_units(self):
        """The blobs of the net's layers, grouped by the array that owns their values: that
        array's blob first, then the blobs viewing it; an array no blob owns (a param that a
        Parameter's top views) is left out."""
        views = {}
        for blob in {id(b): b for vec in self.bottom_vecs + self.top_vecs for b in vec}.values():
            members = views.setdefault(id(_root(blob.data)), [])
            if _root(blob.data) is _root(blob._data_buffer):
                members.insert(0, blob)
            else:
                members.append(blob)
        return [members for members in views.values() if _root(members[0].data) is _root(members[0]._data_buffer)]

    def _checked_keep(self, keep):
        """``keep`` as a list of the net's blob names (one name may stand alone); a ConfigError
        for anything else, shared memory or not (a misspelt name should not pass unseen)."""
        keep = [keep] if isinstance(keep, str) else keep
        if not isinstance(keep, (list, tuple, set)) or not all(isinstance(name, str) for name in keep):
            raise ConfigError(f"keep must be a list of blob names, got {keep!r:.80}")
        unknown = [name for name in keep if name not in self.blobs]
        if unknown:
            raise ConfigError(f"keep names no blob of the {self.phase} net: {', '.join(map(repr, unknown))}")
        return list(keep)

    def _kept_whole(self, keep):
        """The ids of the blobs that always keep their own data and diff: the net's inputs and
        outputs, a loss's weighted tops (their diffs hold the weight from the forward) and the
        blobs named in ``keep``."""
        kept = {id(self.blobs[name]) for name in [*self._outputs, *keep]}
        kept.update(id(blob) for blob in self.source_blobs.values())
        for layer, tops in zip(self.layers, self.top_vecs):
            kept.update(id(blob) for weight, blob in zip(layer.loss_weights, tops) if weight)
        return kept

    # -- public API ------------------------------------------------------------------------
    @property
    def params(self) -> "OrderedDict[str, list[Blob]]":
        return OrderedDict((layer.name, layer.blobs) for layer in self.layers if layer.blobs)

    @property
    def inputs(self) -> list[str]:
        return [name for layer in self.layers if layer.type == "Input" for name in layer.spec.tops]

    @property
    def outputs(self) -> list[str]:
        """Blobs no later layer consumes (the net's results), by name as Caffe orders them."""
        return list(self._outputs)

    def _find_outputs(self):
        """Caffe's rule: walking the layers in order, a bottom stops being available and a top
        becomes available (again, for an in-place top); what is left, sorted by name as Caffe's
        std::set keeps it, is the output (so 'accuracy' is output #0 and 'loss' #1)."""
        available = set()
        for layer in self.layers:
            available.difference_update(layer.spec.bottoms)
            available.update(layer.spec.tops)
        return sorted(available)

    def layer(self, name: str) -> Layer:
        try:
            return self.layers[self.layer_names.index(name)]
        except ValueError:
            raise KeyError(f"no layer named '{name}' in the {self.phase} net") from None

    def forward(self, start: str | None = None, end: str | None = None, **inputs: Any) -> dict[str, np.ndarray]:
        """Run layers ``start``..``end`` (names, inclusive; default all) and return the output
        blobs' data by name. Keyword arguments set input blobs first (reshaping as needed)."""
        first = 0 if start is None else self._layer_index(start, "start")
        for name, value in inputs.items():
            blob = self.source_blobs.get(name) or self.blobs.get(name)
            if blob is None:
                raise DataError(f"no blob named '{name}' to set (the net's inputs: {', '.join(self.inputs) or 'none'})")
            self._check_not_overwritten(name, first)
            value = _real_array(name, value, blob.dtype)
            if 0 in value.shape:
                raise DataError(f"blob '{name}' given an array of shape {value.shape}: every axis must be at least 1")
            blob.reshape(value.shape)
            blob.data[...] = value
        last = len(self.layers) - 1 if end is None else self._layer_index(end, "end")
        if first > last:
            raise DataError(f"forward from '{start}' to '{end}': layer '{end}' comes before '{start}'")
        if first > 0 and self._shared_values and first != self._forward_through + 1:
            self._check_values_kept(start, first, last, set(inputs))
        self.loss = self.forward_range(first, last)
        self._forward_through = last
        for layer in self.layers[last + 1 :]:  # they did not see this input: no backward
            layer.invalidate_forward()
        return {name: self.blobs[name].data for name in self._outputs}

    def _check_values_kept(self, start, first, last, given):
        """A forward from ``start`` reads blobs that layers before it wrote. Where those blobs'
        values share memory (``share_memory=True``, a solver's TRAIN net) they are gone after a
        pass, unless the last forward ended right before ``start`` with no backward since: a
        one-line error rather than a forward from whatever the memory holds."""
        written_before = {id(blob) for tops in self.top_vecs[:first] for blob in tops}
        for bottoms in self.bottom_vecs[first : last + 1]:
            for blob in bottoms:
                if id(blob) in self._shared_values and id(blob) in written_before and blob.name not in given:
                    raise NetlayersError(
                        f"forward(start='{start}') reads blob '{blob.name}', whose memory other blobs share "
                        f"(share_memory=True, as a solver's TRAIN net has): its values are not kept after a pass; "
                        f"run the forward from the start, or on from where the last forward ended"
                    )

    def _check_not_overwritten(self, name, first):
        """A blob given to forward that a data layer of this pass fills would be overwritten (or,
        of another batch size, fail deep in the layer): a one-line error saying what to do."""
        for index, layer in enumerate(self.layers[first:], first):
            if name in layer.spec.tops and not layer.spec.bottoms and layer.type != "Input":
                later = [l.name for l in self.layers[index + 1 :] if not l.spec.auto and l.spec.bottoms]
                after = later[0] if later else None
                start = f"forward(start='{after}', {name}=...)" if after else "forward(start=...)"
                raise DataError(
                    f"blob '{name}' is filled by {layer.type} layer '{layer.name}', which this forward runs: "
                    f"to feed your own arrays use a deploy net (netlayers.Predictor, netlayers.deploy_net: "
                    f"see the README's 'Using a trained model'), or {start}"
                )

    def _layer_index(self, name, what):
        try:
            return self.layer_names.index(name)
        except ValueError:
            raise DataError(f"{what}: no layer named '{name}' in the {self.phase} net") from None

    def forward_range(self, first: int, last: int) -> float:
        # the workers' scratch is shared by every net of the process: a pass holds it whole (a
        # net in another thread waits); and one switch of BLAS's threads for the pass, not per layer
        with workspace_lock, single_threaded_blas:
            return self._forward_layers(first, last)

    def _forward_layers(self, first: int, last: int) -> float:
        """Layers ``first``..``last`` forward, for a caller that holds the workspace lock and
        ``single_threaded_blas``; returns the loss."""
        loss = 0.0
        layers, bottom_vecs, top_vecs, lenders, chains = (
            self.layers,
            self.bottom_vecs,
            self.top_vecs,
            self._lenders,
            self._chains,
        )
        i = first
        while i <= last:
            layer = layers[i]
            if lenders and i - 1 in lenders and i > first:  # the lender ran just now, in this pass
                lender: Any = layers[i - 1]
                borrower: Any = layer
                borrower.lent_input = lender.kept_output()
            chain = chains.get(i) if chains else None
            if chain is not None and i + chain.length - 1 <= last:
                end = i + chain.length
                if chain.forward(bottom_vecs[i:end], top_vecs[i:end]):
                    i = end
                    continue
            loss += layer.forward_in_pass(bottom_vecs[i], top_vecs[i])
            i += 1
        return loss

    def backward(self, start: str | None = None, end: str | None = None) -> None:
        """Backpropagate from the losses into every blob's diff; param diffs accumulate (+=),
        so call ``clear_param_diffs`` first unless accumulating on purpose. ``start`` and ``end``
        (layer names, as Caffe's BackwardFromTo) run only the layers from ``start`` back to
        ``end``, inclusive (default: all). Under ``force_backward`` the diffs of tops no layer
        reads (and of ``start``'s tops) may be set by hand first: backward then starts from
        them (a saliency map). A net with neither a loss nor ``force_backward`` has nothing to
        start from: a ConfigError, rather than diffs left as they were."""
        self._check_backward_start()
        first = len(self.layers) - 1 if start is None else self._layer_index(start, "backward start")
        last = 0 if end is None else self._layer_index(end, "backward end")
        if first < last:
            raise DataError(f"backward from '{start}' to '{end}': layer '{start}' comes before '{end}'")
        with workspace_lock, single_threaded_blas:
            self._backward_layers(first, last)

    def _check_backward_start(self) -> None:
        """A ConfigError where backward cannot run: a net made forward only, or one with
        neither a loss nor ``force_backward`` (nothing to start from)."""
        if self.forward_only:
            raise NetlayersError("backward of a net made forward only (Net.drop_backward): build another Net")
        if self._gradient_source is None:  # loss weights are set when the layers are set up
            self._gradient_source = self.spec.force_backward or any(any(layer.loss_weights) for layer in self.layers)
        if not self._gradient_source:
            raise ConfigError(
                "backward has nothing to start from: the net has no loss, so gradients can only "
                "come from diffs set by hand, and those need 'force_backward: true' in the net",
                file=self.spec.file,
                field="force_backward",
            )

    def _backward_layers(self, first: int, last: int) -> None:
        """Layers ``first`` back to ``last`` backward, for a caller that holds the workspace
        lock and ``single_threaded_blas``."""
        self._forward_through = -1  # the backward may write gradients where values were
        layers, top_vecs, bottom_vecs = self.layers, self.top_vecs, self.bottom_vecs
        need, bottom_need, chain_ends = self.layer_need_backward, self.bottom_need_backward, self._chain_ends
        i = first
        while i >= last:
            chain = chain_ends.get(i) if chain_ends else None
            if (
                chain is not None
                and chain.index >= last
                and need[i]
                and chain.backward(bottom_need[chain.index : chain.index + 2])
            ):
                i -= chain.length
                continue
            if need[i]:
                layers[i].backward_in_pass(top_vecs[i], bottom_need[i], bottom_vecs[i])
            i -= 1

    def backward_layer(self, index: int) -> bool:
        """Backward of layer ``index`` alone, if it needs one; whether it ran."""
        with workspace_lock, single_threaded_blas:
            return self._backward_in_pass(index)

    def _backward_in_pass(self, index: int) -> bool:
        if not self.layer_need_backward[index]:
            return False
        layer = self.layers[index]
        layer.backward_in_pass(self.top_vecs[index], self.bottom_need_backward[index], self.bottom_vecs[index])
        return True

    def forward_backward(self) -> float:
        """One forward and one backward pass; returns the loss. (BLAS is switched to one thread
        once for both passes: each switch and its undoing cost about 6 us.)"""
        self._check_backward_start()
        last = len(self.layers) - 1
        with workspace_lock, single_threaded_blas:
            self.loss = self._forward_layers(0, last)
            self._backward_layers(last, 0)
        return self.loss

    def drop_backward(self) -> None:
        """Make this net forward only (a solver does so with its TEST nets): its backward never
        runs, so every layer drops what only a backward reads (BatchNorm's normalized values,
        max pooling's argmax, LRN's scale: see ``Layer.drop_backward_state``). A net that no
        loss reaches (a deploy net) is so from the start."""
        self.forward_only = True
        for index, layer in enumerate(self.layers):
            self.layer_need_backward[index] = False
            self.bottom_need_backward[index] = [False] * len(self.bottom_vecs[index])
            layer.drop_backward_state()

    def clear_param_diffs(self) -> None:
        """Zero every learnable param's diff (lazily: see Blob.zero_diff)."""
        for param in self.learnable_params:
            param.blob.zero_diff()

    def reshape(self) -> None:
        for i, layer in enumerate(self.layers):
            layer.Reshape(self.bottom_vecs[i], self.top_vecs[i])
            layer.invalidate_forward()

    def set_input_arrays(self, data: Any, labels: Any, layer: str | None = None) -> None:
        """Feed a MemoryData layer (the first one, or the one named ``layer``) from arrays."""
        candidates = [l for l in self.layers if l.type == "MemoryData" and layer in (None, l.name)]
        if not candidates:
            raise ConfigError("the net has no MemoryData layer" + (f" named '{layer}'" if layer else ""))
        memory_data: Any = candidates[0]
        memory_data.reset(data, labels)

    def share_weights_from(self, other: "Net") -> None:
        """Use the param blobs of ``other``'s layers of the same name (the TEST net of a solver
        sees the TRAIN net's weights without copies)."""
        if not isinstance(other, Net):
            raise ConfigError(f"share_weights_from takes a Net, got {type(other).__name__}")
        for layer in self.layers:
            if layer.blobs and layer.name in other.layer_names:
                source = other.layer(layer.name)
                for i, blob in enumerate(layer.blobs):
                    if i < len(source.blobs) and source.blobs[i].shape == blob.shape:
                        layer.blobs[i] = source.blobs[i]

    def state(self) -> dict[str, Any]:
        """What besides the weights a snapshot needs to resume bit for bit: the generator
        state and each layer's own state (JSON-serialisable)."""
        layers = {layer.name: layer.state() for layer in self.layers}
        return {"rng": self.rng.bit_generator.state, "layers": {name: s for name, s in layers.items() if s is not None}}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned (a mapping with the generator's state under
        'rng' and layer states under 'layers')."""
        if not isinstance(state, dict) or "rng" not in state or not isinstance(state.get("layers", {}), dict):
            raise ConfigError("a net state is a mapping with 'rng' (and 'layers'), as Net.state() returns")
        self.rng.bit_generator.state = state["rng"]
        for name, layer_state in state.get("layers", {}).items():
            if name in self.layer_names:
                self.layer(name).set_state(layer_state)

    # -- weights ---------------------------------------------------------------------------
    def weight_arrays(self) -> dict[str, np.ndarray]:
        """Every layer's param blobs by key ``layer/i``, as :meth:`save` writes them."""
        return {f"{name}/{i}": blob.data for name, blobs in self.params.items() for i, blob in enumerate(blobs)}

    def save(self, path: str | Path) -> None:
        """Write every layer's param blobs to ``.npz`` (keys ``layer/i``), atomically."""
        from .io import as_path, save_arrays

        path = as_path(path, "Net.save")
        if path.is_dir():
            raise DataError("is a folder, expected a file name for the weights (.npz)", file=str(path))
        try:
            save_arrays(path, self.weight_arrays())
        except OSError as err:
            raise DataError(f"cannot write the weights: {err.strerror or err}", file=str(path)) from None

    def load(self, path: str | Path) -> None:
        """Copy weights from ``.npz`` (or a Caffe ``.caffemodel``) into layers of the same name.
        Layers the file does not mention keep their values; a shape mismatch is an error, and
        so is a file that names none of this net's layers with params (Caffe would load nothing
        and say nothing)."""
        from .io import as_path, load_weights

        path = as_path(path, "Net.load")
        weights = load_weights(path)
        learned = [layer.name for layer in self.layers if layer.blobs]
        if learned and not any(name in weights for name in learned):

            def listed(names):
                names = sorted(names)
                return ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")

            raise ConfigError(
                f"names none of this net's layers with params (the file has "
                f"{listed(weights) or 'no weights'}; the net has {listed(learned)})",
                file=str(path),
            )
        for layer in self.layers:
            arrays = weights.get(layer.name)
            if arrays is None:
                continue
            if len(arrays) != len(layer.blobs):
                raise ConfigError(
                    f"weights file has {len(arrays)} blob(s) for this layer, the net has {len(layer.blobs)}",
                    file=str(path),
                    layer=layer.name,
                )
            for blob, array in zip(layer.blobs, arrays):
                if blob.shape != array.shape:
                    if _without_leading_ones(blob.shape) != _without_leading_ones(array.shape):
                        raise ConfigError(
                            f"weights file has shape {array.shape}, the net expects {blob.shape}",
                            file=str(path),
                            layer=layer.name,
                        )
                    array = array.reshape(blob.shape)
                blob.data[...] = array

    def __repr__(self) -> str:
        return f"<Net '{self.name}' {self.phase}: {len(self.layers)} layers>"


def _use_data_memory(unit, buffer):
    """The unit's first blob keeps its data in ``buffer``; the others (views of its data: a
    Split's tops, a Flatten's) view it there again, in their shapes."""
    owner = unit[0]
    owner.use_data_memory(buffer)
    for view in unit[1:]:
        view.share_data(owner, view.shape)


def _root(array):
    """The array that owns the memory ``array`` views."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


#: The orders in which ``arena_offsets`` tries placing items, first fit (sort keys of an item's
#: (first, last) span and size): the largest first; the largest size x lifetime first; the
#: longest-lived first; the latest to end first; the largest first, the longest-lived of equal
#: sizes first. On the 51 nets of ``tools/bench_nets.py`` the largest-first plan alone needed
#: 2254 MiB in all, the best of these 2242 against a floor of 2237 (what is alive at the busiest
#: moment): cifar10_quick 18.8 -> 15.6 MiB, the segmentation head 42.5 -> 40.8, LeNet 4.2 -> 3.5.
PLACEMENT_ORDERS = (
    lambda span, size: (-size, span),
    lambda span, size: (-size * (span[1] - span[0] + 1), span),
    lambda span, size: (span[0] - span[1], -size, span),
    lambda span, size: (-span[1], -size, span),
    lambda span, size: (-size, span[0] - span[1], span),
)


def arena_offsets(spans, sizes):
    """Offsets into one buffer for items alive over ``spans`` ((first, last) intervals,
    inclusive) of ``sizes``, such that no two items alive at a common time overlap, and the
    buffer's size (the largest offset + size). Items are placed one by one, each at the lowest
    offset where it overlaps no item placed before it and alive with it (first fit), in each of
    the ``PLACEMENT_ORDERS``; the plan kept is the one whose memory is least: the union of the
    places that share, plus the items whose place overlaps no other's (they keep arrays of their
    own: ``sharing_places``), the first of equal ones. A large buffer of the forward's early
    layers then holds several smaller gradients of the backward at once, where one buffer an
    item would hold one."""
    best = None
    for key in PLACEMENT_ORDERS:
        order = sorted(range(len(spans)), key=lambda i: key(spans[i], sizes[i]))
        offsets, total = _first_fit(spans, sizes, order)
        memory = plan_memory(offsets, sizes)
        if best is None or memory < best[0]:
            best = (memory, offsets, total)
    return (best[1], best[2]) if best is not None else ([], 0)


def _first_fit(spans, sizes, order):
    """(offsets, buffer size) of the items placed in ``order``, each at the lowest offset where
    it overlaps no item placed before it and alive with it."""
    offsets = [0] * len(spans)
    placed = []  # (offset, end, first, last)
    for i in order:
        low, high = spans[i]
        offset = 0
        for start, end in sorted((o, e) for o, e, first, last in placed if first <= high and low <= last):
            if offset + sizes[i] <= start:
                break
            offset = max(offset, end)
        offsets[i] = offset
        placed.append((offset, offset + sizes[i], low, high))
    return offsets, max((end for _, end, _, _ in placed), default=0)


def sharing_places(offsets, sizes):
    """For each item placed at ``offsets`` with ``sizes``: whether its place overlaps another
    item's (a sweep over the places in offset order, keeping those not ended yet)."""
    shares = [False] * len(offsets)
    open_places = []  # the items whose places reach beyond the current offset
    for i in sorted(range(len(offsets)), key=lambda i: offsets[i]):
        open_places = [j for j in open_places if offsets[j] + sizes[j] > offsets[i]]
        if open_places and sizes[i]:
            shares[i] = True
            for j in open_places:
                shares[j] = True
        open_places.append(i)
    return shares


def plan_memory(offsets, sizes):
    """What a placement holds: the union of the places that share (``sharing_places``), plus the
    items whose place overlaps no other's (they keep arrays of their own)."""
    shares = sharing_places(offsets, sizes)
    alone = sum(size for size, shared in zip(sizes, shares) if not shared)
    return alone + covered_length([(o, z) for o, z, shared in zip(offsets, sizes, shares) if shared])


def covered_length(places):
    """Items covered by the union of ``places`` ((offset, size) pairs)."""
    covered, reach = 0, 0
    for offset, size in sorted(places):
        covered += max(0, offset + size - max(offset, reach))
        reach = max(reach, offset + size)
    return covered


def _without_leading_ones(shape: tuple[int, ...]) -> tuple[int, ...]:
    """``shape`` without its leading 1s: Caffe's legacy 4-D blobs ``(1, 1, 500, 800)`` match
    ``(500, 800)``, but a shape of the same size in another layout (``(800, 500)``) does not."""
    shape = tuple(shape)
    while shape and shape[0] == 1:
        shape = shape[1:]
    return shape
