"""Under mpirun -np 2: rank 1 raises where no agreed path catches it (inside ``bench.sweep.main``) while rank 0
waits for it in a plain blocking MPI receive. ``bench.__main__.entry`` must abort the job, not leave rank 0
waiting for ever."""

import sys

from mpi4py import MPI

from bench import __main__ as cli
from bench import sweep


def main(args):
    if MPI.COMM_WORLD.rank == 1:
        raise OSError(28, "No space left on device (injected, outside any agreed path)")
    MPI.COMM_WORLD.recv(source=1)  # a wait with no bound of its own
    return 0


sweep.main = main
sys.argv = ["bench", "sweep", sys.argv[1]]
sys.exit(cli.entry())
