"""The snapshot format: the solver state file (see base.py's docstring for its fields), reading
it back on resume, and refusing before training what a snapshot could not hold."""

import json
import time
from pathlib import Path

import numpy as np

from .. import io
from ..errors import ConfigError
from ..io import load_arrays, load_weights, weights_file_of
from .solver_state import StateFields, restore_net_state

STATE_VERSION = 1
MAX_MEMBER_NAME = 65535  # bytes of a zip member's name (a 16-bit field)


class Snapshots:
    """The Solver's methods about snapshot files (mixed into :class:`~.base.Solver`; writing
    them, which the loop decides, stays in base.py)."""

    last_snapshot: Path | None

    def snapshot_paths(self, iteration: int | None = None) -> tuple[Path, Path]:
        """(weights path, solver state path) of the snapshot at ``iteration`` (default: now)."""
        iteration = self.iter if iteration is None else iteration
        base = str(self.output_dir / f"{self.snapshot_prefix}_iter_{iteration}")
        return Path(base + ".weights.npz"), Path(base + ".solverstate.npz")

    @property
    def ranks(self) -> int:
        """How many data-parallel processes train (1 without a communicator)."""
        parallel = getattr(self, "parallel", None)
        return 1 if parallel is None else parallel.size

    def state_arrays(self, weights):
        """The arrays of the solver state file that goes with the weights file ``weights``."""
        n = len(self.history)
        arrays = {
            f"history/{slot * n + i}": slots[slot] for i, slots in enumerate(self.history) for slot in range(len(slots))
        }
        arrays.update(
            {
                "format_version": np.array(STATE_VERSION),
                "iter": np.array(self.iter, dtype=np.int64),
                "type": np.array(self.param.type),
                "weights_file": np.array(weights.name),
                "net_state": np.array(json.dumps(self.net.state())),
                "ranks": np.array(self.ranks, dtype=np.int64),
            }
        )
        for index, test_net in enumerate(self.test_nets):
            arrays[test_state_key(index)] = np.array(json.dumps(test_net.state()))
        return arrays

    def restore(self, path: str | Path) -> None:
        """Resume from a solver state file (or the weights file next to one): weights, history,
        iteration, generator and layer states. The files must belong to this net. Every field
        read is checked first (a ConfigError naming the file and the field); a layer that
        cannot take its saved state (a data position past a data set that shrank) is a
        ConfigError naming the file, the layer and the field."""
        path = io.as_path(path, "a solver state to restore")
        if path.name.endswith(".weights.npz"):
            path = path.with_name(path.name[: -len(".weights.npz")] + ".solverstate.npz")
        arrays = load_arrays(path)
        for key in ("format_version", "iter", "type", "weights_file", "net_state"):
            if key not in arrays:
                raise ConfigError(f"not a netlayers solver state (no '{key}')", file=str(path))
        check = StateFields(arrays, path)
        version = check.integer("format_version")
        if version != STATE_VERSION:
            raise check.error(
                "format_version",
                f"unknown version {version} (this netlayers reads "
                f"version {STATE_VERSION}; written by another release?)",
            )
        iteration = check.integer("iter")
        kind = check.text("type")
        if kind != self.param.type:
            raise check.error(None, f"written by a {kind} solver; this config trains with {self.param.type}")
        history = self._saved_history(check)
        weights_path = weights_file_of(arrays, path)
        net_state = check.net_state("net_state", self.net)
        test_states = [
            check.net_state(test_state_key(index), test_net) if test_state_key(index) in arrays else None
            for index, test_net in enumerate(self.test_nets)
        ]
        self._check_weights(weights_path)
        self.net.load(weights_path)
        for slots, saved in zip(self.history, history):
            for slot, array in zip(slots, saved):
                slot[...] = array
        self.iter = iteration
        restore_net_state(self.net, net_state, path, "net_state")
        for index, (test_net, test_state) in enumerate(zip(self.test_nets, test_states)):
            if test_state is not None:
                restore_net_state(test_net, test_state, path, test_state_key(index))
        self._snapshot_iter = self.iter
        self.last_snapshot = path
        self._timer = (time.perf_counter(), self.iter)
        self._call("on_message", f"Restoring previous solver status from {path} (iteration {self.iter})")
        ranks = check.integer("ranks") if "ranks" in arrays else 1
        if ranks != self.ranks:
            self._call("on_message", resumed_on_other_ranks(ranks, self.ranks))

    def _saved_history(self, check):
        """Per learnable param, the rule's history arrays in a state file (Caffe's order: slot s
        of param i is ``history/<s * num_params + i>``), checked against the net."""
        arrays = check.arrays
        params = self.net.learnable_params
        slots = self.rule.history_slots
        keys = {key for key in arrays if key.startswith("history/")}
        if len(keys) != slots * len(params):
            raise check.error(
                None,
                f"holds history for {len(keys) // slots} params; this net has "
                f"{len(params)} learnable params (a snapshot of another net?)",
            )
        expected = {f"history/{k}" for k in range(slots * len(params))}
        if keys != expected:
            raise check.error(
                min(keys - expected), f"unexpected name; expected history/0 to history/{len(expected) - 1}"
            )
        history = []
        for i, param in enumerate(params):
            saved = []
            for slot in range(slots):
                key = f"history/{slot * len(params) + i}"
                array = check.floats(key)
                if array.shape != param.blob.shape:
                    raise check.error(
                        None,
                        f"history of param #{i} ('{param.name}') has shape "
                        f"{array.shape}; the net's is {param.blob.shape} (a snapshot of "
                        "another net?)",
                    )
                saved.append(array)
            history.append(saved)
        return history

    def _check_weights(self, path):
        weights = load_weights(path)
        for name, blobs in self.net.params.items():
            saved = weights.get(name)
            if saved is None:
                raise ConfigError(
                    "has no weights for this layer (a snapshot of another net?)", file=str(path), layer=name
                )
            shapes = [tuple(b.shape) for b in blobs]
            if [tuple(a.shape) for a in saved] != shapes:
                raise ConfigError(
                    f"has shapes {[tuple(a.shape) for a in saved]} for this layer; the net has {shapes}",
                    file=str(path),
                    layer=name,
                )

    # -- before training: what will be written, and where ------------------------------------
    def check_saveable(self):
        """Refuse (a ConfigError naming the layer) what a snapshot could not hold, before any
        training: a layer name that is not valid UTF-8, holds a NUL (a zip member name ends
        there) or makes a weights member name (``<layer>/<i>.npy``) longer than the zip limit
        of 65,535 bytes; a layer state that is not JSON-serialisable."""
        for layer in self.net.layers:
            if layer.blobs:
                self._check_member_name(layer, f"{layer.name}/{len(layer.blobs) - 1}.npy")
        for net in (self.net, *self.test_nets):
            for layer in net.layers:
                try:
                    json.dumps(layer.state())
                except (TypeError, ValueError, RecursionError) as err:
                    raise self._layer_error(
                        layer, f"its state (kept in snapshots to resume exactly) is not JSON-serialisable: {err}"
                    ) from None

    def _check_member_name(self, layer, member):
        try:
            size = len(member.encode("utf-8"))
        except UnicodeEncodeError:
            raise self._layer_error(
                layer,
                "the name is not valid UTF-8 text, so snapshots cannot store this layer's weights under it",
                "name",
            ) from None
        if "\0" in member:
            raise self._layer_error(
                layer, "the name holds a NUL character, so snapshots cannot store this layer's weights under it", "name"
            )
        if size > MAX_MEMBER_NAME:
            raise self._layer_error(
                layer,
                f"the name is {len(layer.name.encode('utf-8')):,} bytes "
                "long in UTF-8; snapshots store weights under '<layer "
                f"name>/<i>.npy' and the .npz (zip) format allows "
                f"{MAX_MEMBER_NAME:,} bytes: use a shorter name",
                "name",
            )

    @staticmethod
    def _layer_error(layer, message, field=None):
        """A ConfigError at ``layer``'s place in the config, its name cut to a readable length."""
        where = layer.spec.where
        name = layer.name if len(layer.name) <= 60 else f"{layer.name[:57]}..."
        return ConfigError(message, file=where.file, line=where.line, layer=name, field=field)


def resumed_on_other_ranks(saved, now):
    """The log line of a run resumed on ``now`` processes from a snapshot of ``saved``."""
    return (
        f"The snapshot was taken on {saved} process(es), this run has {now}: the data continues from the same "
        f"item of the same epoch, but each iteration now reads {now} x batch_size items instead of {saved} x, so the "
        "batch the solver's settings apply to, the iterations per epoch (max_iter, the lr policy and snapshot "
        "count iterations) and the summation order change: not bit-exact with a run that kept the same count"
    )


def test_state_key(index):
    """The solver state's member of TEST net ``index``'s state (the first keeps its old name)."""
    return "test_net_state" if index == 0 else f"test_net_state_{index}"
