"""Synchronous data-parallel training over MPI (mpi4py): what a Solver does with a communicator.

K ranks with batch B train as one process with batch K * B, as Caffe's multi-GPU training:

- every data layer with a sampler (Data, ImageData) reads its rank's share of each batch of
  K * B items cut from the same seeded order (:meth:`BatchSampler.shard`), so one epoch is one
  pass over the data whatever K is, and the data position is the same on every rank;
- after backward, the parameter gradients (and the loss) are averaged over the ranks with
  MPI Allreduce, a few large buffers at a time, so every rank applies the same update;
- testing runs on every rank over its share of the TEST data; the figures are averaged;
- BatchNorm's running statistics are averaged before each test and snapshot;
- rank 0 alone reports (logs, metrics.jsonl) and writes snapshots; at each snapshot a checksum
  of the weights and of the net state (generator, data positions) is compared across ranks (a
  TrainingError naming the ranks if they differ), so the one state rank 0 writes is every rank's;
- a stop request (a signal on any rank) rides in the gradients' last buffer: the ranks agree to
  stop after the same iteration at no extra message;
- a failure every rank sees alike (a non-finite averaged loss, an error rank 0 met while
  writing, ranks that diverged, a config or snapshot one rank could not read, via
  :func:`on_every_rank`) is raised on every rank marked :func:`raised_on_every_rank`; any other
  failure is one rank's own, and the command line then ends the whole job (``MPI_Abort``).

Data, ImageData and HDF5Data give each rank its share of the same order; WindowData draws each
rank's windows from its own stream (as Caffe's multi-GPU solvers do); MemoryData serves, on each
rank, the arrays given to it there (give each rank its part).
"""

import json
import math
import time
import zlib

import numpy as np

from ..errors import ConfigError, NetlayersError, TrainingError

#: Gradients are averaged in buffers (of the params' dtype) of at most this many bytes each.
BUCKET_BYTES = 4 << 20
#: Data layers that split their data between the ranks (MemoryData serves, on each rank, the
#: arrays given to it there: the caller gives each rank its part).
SHARDED_READERS = ("Data", "ImageData", "HDF5Data", "WindowData")


def launched_ranks(environ):
    """The number of processes an MPI launcher started (Open MPI's OMPI_COMM_WORLD_SIZE,
    MPICH's and Intel MPI's PMI_SIZE), 1 when none did."""
    for name in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE"):
        value = environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


def world_communicator():
    """mpi4py's COMM_WORLD; a ConfigError naming the ``mpi`` extra when mpi4py is missing."""
    try:
        from mpi4py import MPI
    except ImportError as err:
        raise ConfigError(
            f"launched on several MPI ranks, but mpi4py cannot be imported ({err}): "
            "pip install 'netlayers[mpi]' (needs an MPI library such as Debian's libopenmpi-dev)"
        ) from None
    return MPI.COMM_WORLD


def mark_on_every_rank(err):
    """Mark ``err`` as raised on every rank alike (so one rank reports it); returns it."""
    err.on_every_rank = True
    return err


def raised_on_every_rank(err):
    """Whether ``err`` was raised on every rank alike (see :func:`mark_on_every_rank`)."""
    return getattr(err, "on_every_rank", False)


def on_every_rank(comm, action):
    """Run ``action()`` on every rank of ``comm`` and return its result; when it raised on any
    rank, raise on every rank the error of the first rank that failed, marked as raised on
    every rank. A NetlayersError travels as it is (its message names the rank unless every
    rank failed); that rank's other exception (a bug) is re-raised on it alone, and the other
    ranks raise a TrainingError naming it (the command line then ends the job)."""
    result, failure = None, None
    try:
        result = action()
    except Exception as err:
        failure = err
    sent = None if failure is None else failure if isinstance(failure, NetlayersError) else repr(failure)
    failures = comm.allgather(sent)
    failed = [rank for rank, value in enumerate(failures) if value is not None]
    if not failed:
        return result
    first, rank = failures[failed[0]], comm.Get_rank()
    if not isinstance(first, NetlayersError):
        if rank == failed[0]:
            raise failure
        raise mark_on_every_rank(TrainingError(f"rank {failed[0]} failed: {first}"))
    if len(failed) < len(failures):
        first.message = f"rank {failed[0]}: {first.message}"
    raise mark_on_every_rank(first)


class SingleProcess:
    """What a Solver does without MPI, with :class:`DataParallel`'s interface: every collective
    is the identity (so the training loop has no branch for it)."""

    comm, rank, size, is_root = None, 0, 1, True
    stops_at_once = True  # a stop request needs no agreement
    reduce_seconds, reductions = 0.0, 0

    def shard(self, net):
        pass

    def on_every_rank(self, action):
        return action()

    def average_gradients(self, params, loss, stop=False):
        return loss, stop

    def where_not_finite(self, local_loss):
        return ""

    def average_results(self, sums, batches):
        return {name: (total / batches).item() if total.size == 1 else total / batches for name, total in sums.items()}

    def average_outputs(self, outputs):
        return outputs

    def average_batchnorm(self, net):
        pass

    def check_same_weights(self, net, iteration):
        pass

    def root_decides(self, action):
        action()


class DataParallel:
    """The collectives a Solver needs on communicator ``comm`` (more than one rank)."""

    stops_at_once = False  # the ranks agree on a stop at the next gradient Allreduce

    def __init__(self, comm):
        from mpi4py import MPI

        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self._sum = MPI.SUM
        self._buckets = None  # [(buffer, [(param index, start, stop)])], made on first use
        self.reduce_seconds = 0.0  # wall time spent in the gradients' Allreduce calls
        self.reductions = 0  # gradient averagings done (iterations)

    @property
    def is_root(self):
        return self.rank == 0

    # -- data ---------------------------------------------------------------------------------
    def shard(self, net):
        """Give every data layer of ``net`` this rank's share of the data."""
        for layer in net.layers:
            if layer.type in SHARDED_READERS:
                layer.shard(self.rank, self.size)

    # -- gradients ----------------------------------------------------------------------------
    def average_gradients(self, params, loss, stop=False):
        """Average every param's diff and ``loss`` over the ranks (in place); returns (the mean
        loss, whether any rank asked to ``stop``). The diffs are packed into buffers of at most
        BUCKET_BYTES, each reduced by one Allreduce; the loss and the stop flag ride in the last
        one. The time spent in Allreduce adds up in ``reduce_seconds``."""
        buckets = self._buckets or self._make_buckets(params)
        for n, (buffer, places) in enumerate(buckets):
            for i, start, stop_at in places:
                buffer[start:stop_at] = params[i].blob.diff.reshape(-1)
            if n == len(buckets) - 1:
                buffer[-2:] = (loss, 1.0 if stop else 0.0)
            started = time.perf_counter()
            self.comm.Allreduce(self._in_place(), buffer, op=self._sum)
            self.reduce_seconds += time.perf_counter() - started
            buffer *= 1.0 / self.size
            for i, start, stop_at in places:
                params[i].blob.diff.reshape(-1)[...] = buffer[start:stop_at]
        self.reductions += 1
        last = buckets[-1][0]
        return float(last[-2]), bool(last[-1] > 0)

    def ranks_where(self, condition):
        """The ranks on which ``condition`` (a bool) holds (a collective: every rank calls it)."""
        return [rank for rank, value in enumerate(self.comm.allgather(bool(condition))) if value]

    def where_not_finite(self, local_loss):
        """Where a non-finite averaged loss came from, for its message (a collective)."""
        ranks = self.ranks_where(not math.isfinite(local_loss))
        return f" (on rank {', '.join(map(str, ranks))})" if ranks else " (in the average over the ranks)"

    def on_every_rank(self, action):
        """:func:`on_every_rank` on this communicator."""
        return on_every_rank(self.comm, action)

    def _make_buckets(self, params):
        """Group the params, in order, into buffers of at most BUCKET_BYTES (one param larger
        than that gets a buffer of its own); the last buffer has two more slots: the loss and
        the stop flag."""
        dtype = params[0].blob.data.dtype if params else np.float64
        limit = max(1, BUCKET_BYTES // np.dtype(dtype).itemsize)
        groups, current, size = [], [], 0
        for i, param in enumerate(params):
            count = param.blob.data.size
            if current and size + count > limit:
                groups.append((current, size))
                current, size = [], 0
            current.append((i, size, size + count))
            size += count
        groups.append((current, size))
        last = len(groups) - 1
        self._buckets = [(np.zeros(size + 2 * (n == last), dtype), places) for n, (places, size) in enumerate(groups)]
        return self._buckets

    def _in_place(self):
        from mpi4py import MPI

        return MPI.IN_PLACE

    # -- testing and state ----------------------------------------------------------------------
    def average_results(self, sums, batches):
        """{name: mean} over the batches of every rank, from this rank's {name: float64 sum}
        (the same names and shapes on every rank: the same TEST net)."""
        results = {}
        for name, total in sums.items():
            buffer = np.ascontiguousarray(total, dtype=np.float64).reshape(-1).copy()
            self.comm.Allreduce(self._in_place(), buffer, op=self._sum)
            mean = buffer.reshape(np.shape(total)) / (batches * self.size)
            results[name] = mean.item() if mean.size == 1 else mean
        return results

    def average_outputs(self, outputs):
        """A net's displayed outputs ({name: array}) averaged over the ranks."""
        return {name: np.asarray(value) for name, value in self.average_results(outputs, 1).items()}

    def average_batchnorm(self, net):
        """Average the running statistics of ``net``'s BatchNorm layers over the ranks."""
        for layer in net.layers:
            if layer.type != "BatchNorm":
                continue
            for blob in layer.blobs:
                buffer = np.ascontiguousarray(blob.data, dtype=np.float64).copy()
                self.comm.Allreduce(self._in_place(), buffer, op=self._sum)
                blob.data[...] = buffer / self.size

    def check_same_weights(self, net, iteration):
        """Compare checksums (CRC-32 of every learnable param's bytes, and of the net state:
        generator and data positions) across the ranks; a TrainingError on every rank, naming
        those that differ from rank 0, when they do."""
        weights = 0
        for param in net.learnable_params:
            weights = zlib.crc32(np.ascontiguousarray(param.blob.data).tobytes(), weights)
        state = zlib.crc32(json.dumps(net.state(), sort_keys=True).encode())
        checksums = self.comm.allgather((weights, state))
        for index, what in ((0, "weights"), (1, "net states (generator, data positions)")):
            values = [pair[index] for pair in checksums]
            differ = [rank for rank, value in enumerate(values) if value != values[0]]
            if differ:
                raise mark_on_every_rank(
                    TrainingError(
                        f"the {what} of rank(s) {', '.join(map(str, differ))} differ from rank 0's at iteration "
                        f"{iteration} (checksums {', '.join(f'{v:08x}' for v in values)}): the ranks diverged"
                    )
                )

    def root_decides(self, action):
        """Run ``action()`` on rank 0 alone; a NetlayersError it raises is raised on every rank
        (so no rank waits forever in a collective for a rank that stopped)."""
        error = None
        if self.is_root:
            try:
                action()
            except (ConfigError, TrainingError) as err:
                error = err
        error = self.comm.bcast(error, root=0)
        if error is not None:
            raise mark_on_every_rank(error)
