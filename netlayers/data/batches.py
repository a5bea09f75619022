"""Choosing the items of each batch, and preparing batches in a background thread.

:class:`BatchSampler` decides which items form each batch; its whole state is
``(epoch, position)``, so a snapshot can store it and a resumed run continues exactly.
:class:`Prefetcher` runs the batch-making function in a thread so that loading overlaps
compute, and records with every batch the sampler state right after that batch, so the
consumer can snapshot the state *of what it has consumed*, not of what was prefetched.
"""

import queue
import threading
import weakref

import numpy as np

from .. import parallel


class BatchSampler:
    """Yields index arrays of ``batch_size`` items out of ``num_items``, forever.

    Like Caffe's data reader, the cursor simply cycles: a batch that runs past the end of the
    data set continues from the start of the next epoch (so ``batch_size > num_items`` works,
    some items then appearing several times in one batch). Without ``shuffle`` every epoch is
    ``0, 1, ..., num_items - 1``; with it, epoch ``e`` is the permutation drawn from
    ``np.random.default_rng([seed, e])``: fixed per epoch, so nothing but (epoch, position)
    is state.

    Sharded (:meth:`shard`, for data-parallel training): rank ``r`` of ``k`` cuts each batch of
    ``k * batch_size`` items out of the same order and keeps the ``r``-th ``batch_size`` of them,
    so the ranks read disjoint shares and (epoch, position), counted over whole ``k``-fold
    batches, is the same on every rank.
    """

    def __init__(self, num_items, batch_size, shuffle=False, seed=0):
        self.num_items = _positive_int(num_items, "num_items")
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, found {seed}")
        self.epoch = 0
        self.position = 0
        self.rank, self.ranks = 0, 1
        self._cached = (None, None)  # (epoch, order) of the last order computed

    def __repr__(self):
        return (
            f"BatchSampler(num_items={self.num_items}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, seed={self.seed}, state={self.state()})"
        )

    def __iter__(self):
        return self

    def __next__(self):
        return self.next()

    def shard(self, rank, ranks):
        """Serve rank ``rank``'s share of batches ``ranks`` times as large (see the class docs)."""
        ranks = _positive_int(ranks, "ranks")
        if not 0 <= int(rank) < ranks:
            raise ValueError(f"rank must be in [0, {ranks}), found {rank}")
        self.rank, self.ranks = int(rank), ranks

    def next(self):
        """Return the int64 indices of the next batch (this rank's share when sharded) and
        advance (epoch, position)."""
        whole = self._next_whole()
        if self.ranks == 1:
            return whole
        return whole[self.rank * self.batch_size : (self.rank + 1) * self.batch_size].copy()

    def _next_whole(self):
        """The indices of the next batch of ``ranks * batch_size`` items, advancing the cursor."""
        parts, need = [], self.batch_size * self.ranks
        while need:
            take = min(need, self.num_items - self.position)
            parts.append(self.epoch_order(self.epoch)[self.position : self.position + take])
            need -= take
            self.position += take
            if self.position == self.num_items:
                self.epoch, self.position = self.epoch + 1, 0
        return parts[0].copy() if len(parts) == 1 else np.concatenate(parts)

    def epoch_order(self, epoch):
        """The order in which epoch ``epoch`` visits the items (int64 array, do not modify)."""
        cached_epoch, order = self._cached
        if cached_epoch != epoch:
            if self.shuffle:
                order = np.random.default_rng([self.seed, epoch]).permutation(self.num_items)
            else:
                order = np.arange(self.num_items)
            order = order.astype(np.int64, copy=False)
            order.setflags(write=False)
            self._cached = (epoch, order)
        return order

    def state(self):
        """The sampler state as a new dict ``{"epoch": e, "position": p}``."""
        return {"epoch": self.epoch, "position": self.position}

    def set_state(self, state):
        """Restore a state returned by :meth:`state` (the next batch starts there); a state
        that does not fit (see :func:`checked_state`) raises ValueError and changes nothing."""
        try:
            self.epoch, self.position = checked_state(state, self.num_items)
        except ValueError as err:
            raise ValueError(
                f"sampler state {_short(state)} does not fit a data set of {self.num_items} items: {err}"
            ) from None


def checked_state(state, num_items, what="the data set"):
    """Return ``(epoch, position)`` of a sampler state read from a snapshot, or raise
    ValueError saying what does not fit: the state must be exactly ``{"epoch": e,
    "position": p}`` with integers ``e >= 0`` and ``0 <= p < num_items`` (``what`` names the
    data set in the message). The permutation of a shuffled epoch is no part of the state:
    it is drawn again from (seed, epoch)."""
    if not isinstance(state, dict) or set(state) != {"epoch", "position"}:
        raise ValueError(f"data state {_short(state)} is not of the form {{'epoch': e, 'position': p}}")
    epoch, position = (_whole_number(state, key) for key in ("epoch", "position"))
    if position >= num_items:
        raise ValueError(
            f"data position {position} is past the {num_items} items of {what}; the data set changed since the snapshot"
        )
    return epoch, position


def _whole_number(state, key):
    """``state[key]`` as an int >= 0 (bools, floats and strings refused), else ValueError."""
    value = state[key]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"data {key} {_short(value)} is not an integer >= 0")
    return int(value)


def _short(value):
    """``repr(value)``, or its type and length when that is too long for a message."""
    text = repr(value)
    return text if len(text) <= 60 else f"({type(value).__name__} of {len(text)} characters)"


def _positive_int(value, name):
    """``value`` as an int > 0, else ValueError naming ``name``."""
    number = int(value)
    if number <= 0:
        raise ValueError(f"{name} must be > 0, found {value}")
    return number


class _Failure:
    """Carries an exception raised by ``produce`` from the worker thread to the consumer."""

    def __init__(self, error):
        self.error = error


_END = object()  # put by the worker when ``produce`` raised StopIteration
_POLL = 0.05  # seconds between the consumer's checks of a closed Prefetcher while it waits


class Prefetcher:
    """Calls ``produce()`` in a daemon thread, keeping up to ``depth`` batches ready.

    :meth:`next` returns the batches in the order they were produced. An exception raised by
    ``produce`` is re-raised by the :meth:`next` call that reaches it (and by every later
    call); a ``StopIteration`` from ``produce`` ends the stream. :meth:`close` (also called by
    ``with`` and when the object is garbage-collected or the interpreter exits) stops the
    thread without blocking.

    Consumed state, for exact snapshot/resume: pass ``state``, a callable such as
    ``sampler.state`` that returns the state of whatever ``produce`` draws from. The worker
    calls it right after each ``produce()`` and queues the pair, so every batch carries the
    state *just after it*. :attr:`consumed_state` is then the state after the last batch
    returned by :meth:`next` (before any, the state when the Prefetcher was made), which is
    what a snapshot must store: batches still waiting in the queue are not counted, and a
    run restored with ``sampler.set_state(consumed_state)`` produces exactly those batches
    again. ``produce`` and ``state`` run only in the worker thread after construction, so
    the consumer must not touch the sampler while the Prefetcher is open.

    An object that keeps a Prefetcher of its own method passes ``weakly(method)`` (see there).
    """

    def __init__(self, produce, depth=2, state=None):
        if int(depth) < 1:
            raise ValueError(f"depth must be >= 1, found {depth}")
        self._queue = queue.Queue(maxsize=int(depth))
        self._stop = threading.Event()
        self._state_fn = state
        self.consumed_state = state() if state is not None else None
        self._failure = None
        self._ended = False
        # The thread must not hold a reference to self, or self could never be collected.
        self._thread = threading.Thread(
            target=_work,
            args=(produce, state, self._queue, self._stop),
            name="netlayers-prefetch",
            daemon=True,
        )
        self._finalizer = weakref.finalize(self, _shut_down, self._stop, self._queue)
        self._thread.start()

    def __iter__(self):
        return self

    def __next__(self):
        return self.next()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    @property
    def closed(self):
        """True once :meth:`close` was called (or the object was finalised)."""
        return self._stop.is_set()

    def next(self):
        """Return the next batch, waiting for it if needed; see the class docs for errors."""
        batch, _ = self.next_with_state()
        return batch

    def next_with_state(self):
        """Return ``(batch, state right after it)`` and update :attr:`consumed_state`."""
        if self._failure is not None:
            raise self._failure
        if self._ended:
            raise StopIteration
        item = self._get()
        if isinstance(item, _Failure):
            self._failure = item.error
            raise item.error
        if item is _END:
            self._ended = True
            raise StopIteration
        batch, state = item
        if self._state_fn is not None:
            self.consumed_state = state
        return batch, state

    def _get(self):
        """Take the next queued item, noticing a closed Prefetcher instead of waiting forever."""
        while True:
            if self._stop.is_set():
                raise RuntimeError("Prefetcher is closed")
            try:
                return self._queue.get(timeout=_POLL)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise RuntimeError("Prefetcher worker thread ended unexpectedly") from None

    def close(self, timeout=1.0):
        """Stop the worker and wait up to ``timeout`` seconds for it; safe to call twice.

        A ``produce`` call already running is allowed to finish (its batch is dropped); if it
        takes longer than ``timeout``, the daemon thread is left to end on its own, so close
        never hangs.
        """
        self._finalizer()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)


def weakly(method):
    """``method`` (a bound method) as a callable that does not keep its object alive; once the
    object is gone, a call raises StopIteration (which ends a Prefetcher's stream).

    The worker thread holds its ``produce`` for as long as it runs: a data layer's own bound
    method there would keep the layer, and with it the layer's Prefetcher and so the thread,
    alive until the process ends, however many nets were dropped. Given ``weakly(method)``, a
    dropped layer is collected, its Prefetcher's finaliser stops the thread."""
    reference = weakref.WeakMethod(method)

    def call(*args):
        bound = reference()
        if bound is None:
            raise StopIteration
        return bound(*args)

    return call


def _work(produce, state_fn, out_queue, stop):
    """Worker loop: produce batches (with the state after each) until stopped or failed.

    A full queue blocks the worker without waking it (an idle data layer costs no CPU);
    ``_shut_down`` empties the queue after setting ``stop``, which lets a blocked ``put``
    through, and the worker then sees ``stop`` and returns."""
    parallel.free_cpus()  # not the single CPU of a pinned caller that started it
    while not stop.is_set():
        try:
            batch = produce()
            item = (batch, state_fn() if state_fn is not None else None)
        except StopIteration:
            out_queue.put(_END)
            return
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            out_queue.put(_Failure(err))
            return
        out_queue.put(item)


def _shut_down(stop, out_queue):
    """Signal the worker to stop and drop queued batches so a blocked ``put`` returns."""
    stop.set()
    while True:
        try:
            out_queue.get_nowait()
        except queue.Empty:
            return
