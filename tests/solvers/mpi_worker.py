"""Run under ``mpirun`` by test_distributed.py: train ``config`` with a communicator, record
every iteration's loss (rank 0) and save each rank's final weights.

    python mpi_worker.py CONFIG OUTPUT_DIR
writes OUTPUT_DIR/rank<r>.npz (the weights) and, on rank 0, OUTPUT_DIR/losses.json.
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


def main(config, output):
    comm = MPI.COMM_WORLD
    recorder = LossRecorder()
    solver = Solver(config, output_dir=output, reporter=recorder, comm=comm)
    solver.solve()
    rank = comm.Get_rank()
    np.savez(Path(output) / f"rank{rank}.npz", **solver.net.weight_arrays())
    if rank == 0:
        (Path(output) / "losses.json").write_text(json.dumps(recorder.losses))


if __name__ == "__main__":
    main(*sys.argv[1:3])
