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
  of the weights is compared across ranks (a TrainingError naming the ranks if they differ).

A data layer that cannot split its data yet (HDF5Data, MemoryData, WindowData) is refused.
"""

import zlib

import numpy as np

from ..errors import ConfigError, TrainingError

#: Gradients are averaged in buffers (of the params' dtype) of at most this many bytes each.
BUCKET_BYTES = 4 << 20
#: Data layers that read a data set but cannot yet give each rank its share.
UNSHARDED_READERS = ("HDF5Data", "MemoryData", "WindowData")


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


class DataParallel:
    """The collectives a Solver needs on communicator ``comm`` (more than one rank)."""

    def __init__(self, comm):
        from mpi4py import MPI

        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self._sum = MPI.SUM
        self._buckets = None  # [(buffer, [(param index, start, stop)])], made on first use

    @property
    def is_root(self):
        return self.rank == 0

    # -- data ---------------------------------------------------------------------------------
    def shard(self, net):
        """Give every data layer of ``net`` this rank's share of the data."""
        for layer in net.layers:
            if layer.type in UNSHARDED_READERS:
                raise layer.error(f"a {layer.type} layer cannot split its data between MPI ranks yet (use Data)")
            if hasattr(layer, "sampler"):
                layer.shard(self.rank, self.size)

    # -- gradients ----------------------------------------------------------------------------
    def average_gradients(self, params, loss):
        """Average every param's diff and ``loss`` over the ranks (in place); returns the mean
        loss. The diffs are packed into buffers of at most BUCKET_BYTES, each reduced by one
        Allreduce; the loss rides in the last one."""
        buckets = self._buckets or self._make_buckets(params)
        for n, (buffer, places) in enumerate(buckets):
            for i, start, stop in places:
                buffer[start:stop] = params[i].blob.diff.reshape(-1)
            if n == len(buckets) - 1:
                buffer[-1] = loss
            self.comm.Allreduce(self._in_place(), buffer, op=self._sum)
            buffer *= 1.0 / self.size
            for i, start, stop in places:
                params[i].blob.diff.reshape(-1)[...] = buffer[start:stop]
        return float(buckets[-1][0][-1])

    def _make_buckets(self, params):
        """Group the params, in order, into buffers of at most BUCKET_BYTES (one param larger
        than that gets a buffer of its own); the last buffer has one more slot, the loss's."""
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
        self._buckets = [(np.zeros(size + (n == last), dtype), places) for n, (places, size) in enumerate(groups)]
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
        """Compare a checksum (CRC-32 of every learnable param's bytes) across the ranks; a
        TrainingError on every rank, naming those that differ from rank 0, when they do."""
        checksum = 0
        for param in net.learnable_params:
            checksum = zlib.crc32(np.ascontiguousarray(param.blob.data).tobytes(), checksum)
        checksums = self.comm.allgather(checksum)
        differ = [rank for rank, value in enumerate(checksums) if value != checksums[0]]
        if differ:
            raise TrainingError(
                f"the weights of rank(s) {', '.join(map(str, differ))} differ from rank 0's at iteration "
                f"{iteration} (checksums {', '.join(f'{v:08x}' for v in checksums)}): the ranks diverged"
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
            raise error
