"""Horovod data parallelism: set-up, batch splitting, broadcast, and the reductions the train step needs.

Runs the same from one process (no launcher) to ``mpirun -np 256`` or ``horovodrun --gloo``.
With Keras 3, Horovod's DistributedGradientTape and broadcast_variables(model.variables) fail: we
allreduce gradients with grouped_allreduce and broadcast the tf.Variables behind Keras' variables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import tensorflow as tf

from bench.config import ConfigError


@dataclass(frozen=True)
class World:
    """Where this process sits: rank and size of its Horovod group, and its place on the host."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def is_chief(self) -> bool:
        return self.rank == 0


def _set_threads(local_size: int) -> None:
    # Share the host's cores among the ranks on it: on 2 cores, two workers get one intra-op thread
    # each; oversubscribing makes every rank slower than one rank alone.
    n = max(1, (os.cpu_count() or 1) // max(1, local_size))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)
    except RuntimeError:
        pass  # TF's runtime already started (a test process): keep its pools


def node_local_rank(environ, horovod_local_rank: int) -> int:
    """This process's rank among all processes on its host, packed groups included.

    Horovod's local rank counts only this process's group: two packed groups on one host would both have
    a local rank 0. The launcher's own variables count every process on the host.
    """
    for var in ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID", "HOROVOD_LOCAL_RANK"):
        if environ.get(var, "").isdigit():
            return int(environ[var])
    return horovod_local_rank


def _pin_gpu(local_rank: int) -> None:
    # One GPU per process (the usual Horovod set-up); a no-op on CPU-only TensorFlow.
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        gpu = gpus[local_rank % len(gpus)]
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
            tf.config.set_visible_devices(gpu, "GPU")
        except RuntimeError:
            pass  # TF's runtime already started (a test process): keep its devices


def init(comm=None) -> World:
    """Start Horovod (on ``comm``, an mpi4py communicator, when packing runs), give this process one GPU
    (if there are any) and its share of the CPU threads."""
    import horovod.tensorflow as hvd

    hvd.init(comm=comm) if comm is not None else hvd.init()
    world = World(hvd.rank(), hvd.size(), hvd.local_rank(), hvd.local_size())
    _pin_gpu(node_local_rank(os.environ, world.local_rank))
    _set_threads(world.local_size)
    return world


def split_batch(global_batch: int, workers: int, per_worker_batch: int) -> tuple[int, int]:
    """Split a global batch into (micro_batch, accumulation) with workers*micro*accumulation == global.

    Each worker's share, global_batch/workers, runs in one pass if it fits ``per_worker_batch``, else in
    ``accumulation`` micro-batches of exactly ``per_worker_batch``. A batch that cannot be split raises
    ConfigError naming the nearest valid global batches.
    """
    if global_batch % workers == 0:
        local = global_batch // workers
        if local <= per_worker_batch:
            return local, 1
        if local % per_worker_batch == 0:
            return per_worker_batch, local // per_worker_batch
        unit, why = workers * per_worker_batch, f"{workers} workers x per_worker_batch {per_worker_batch}"
    else:
        unit, why = workers, f"{workers} workers"
    lower, upper = (global_batch // unit) * unit, (global_batch // unit + 1) * unit
    valid = " or ".join(str(b) for b in (lower, upper) if b > 0)
    raise ConfigError(f"global_batch = {global_batch} does not split over {why}; nearest valid: {valid}")


def broadcast_state(model, optimizer, root_rank: int = 0, extra=()) -> None:
    """Give every rank rank 0's weights, BN statistics and optimizer state (build the optimizer first),
    and ``extra`` tf.Variables (the evaluation EMA of the weights)."""
    import horovod.tensorflow as hvd

    # Horovod: broadcast the tf.Variables behind Keras 3 variables (broadcast_variables needs .assign
    # on tf.Variable; Keras 3 variables wrap one in .value).
    variables = [v.value for v in model.variables] + [v.value for v in optimizer.variables] + list(extra)
    hvd.broadcast_variables(variables, root_rank=root_rank)


def mean_over_workers(grads: list, loss, world: World):
    """Average gradients (grouped: one fused collective) and the loss over the workers."""
    if world.size == 1:
        return grads, loss
    import horovod.tensorflow as hvd

    # Horovod: one grouped allreduce of every gradient, averaged.
    grads = hvd.grouped_allreduce(grads, op=hvd.Average)
    loss = hvd.allreduce(loss, op=hvd.Average, name="loss")
    return grads, loss


def sum_over_workers(values, world: World, name: str):
    """Sum a tensor (eval counts) over the workers."""
    if world.size == 1:
        return values
    import horovod.tensorflow as hvd

    return hvd.allreduce(values, op=hvd.Sum, name=name)

