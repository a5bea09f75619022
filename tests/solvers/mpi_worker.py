"""Run under ``mpirun`` by test_distributed.py: train each config with a communicator, record
every iteration's loss (rank 0) and save each rank's final weights.

    python mpi_worker.py OUTPUT_DIR CONFIG [CONFIG ...]
writes, per config, OUTPUT_DIR/<config name>/rank<r>.npz (the weights) and, on rank 0,
OUTPUT_DIR/<config name>/losses.json; rank 0 writes the snapshots there too.
"""

import json
import sys
from pathlib import Path

import numpy as np
from mpi4py import MPI

from netlayers.solvers import Solver


class LossRecorder:
    def __init__(self):
        self.losses = []

    def on_train(self, iteration, loss, smoothed_loss, lr, outputs, iters_per_sec):
        self.losses.append(loss)


def train(config, output):
    comm = MPI.COMM_WORLD
    recorder = LossRecorder()
    solver = Solver(config, output_dir=output, reporter=recorder, comm=comm)
    solver.solve()
    rank = comm.Get_rank()
    np.savez(Path(output) / f"rank{rank}.npz", **solver.net.weight_arrays())
    if rank == 0:
        (Path(output) / "losses.json").write_text(json.dumps(recorder.losses))


def main(output, *configs):
    for config in configs:
        folder = Path(output) / Path(config).stem
        folder.mkdir(parents=True, exist_ok=True)
        train(config, folder)


if __name__ == "__main__":
    main(*sys.argv[1:])
