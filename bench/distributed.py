"""Horovod data parallelism: set-up, batch splitting, broadcast, the reductions the train step needs, and
the agreement that ends a failed run on every rank.

Runs the same from one process (no launcher) to ``mpirun -np 256`` or ``horovodrun --gloo``.
With Keras 3, Horovod's DistributedGradientTape and broadcast_variables(model.variables) fail: we
allreduce gradients with grouped_allreduce and broadcast the tf.Variables behind Keras' variables.

Failures (``agree``): an exception on one rank must end the run on every rank of its group, or the others
wait forever in their next collective. The failing rank shuts its Horovod down, which makes every peer's
pending or next collective fail at once ("Horovod has been shut down"); then all ranks exchange their errors
over the group's MPI communicator (outside Horovod), and start a fresh Horovod on the same communicator for
the next run. MPI itself is initialised by mpi4py, not by Horovod, so a Horovod shutdown leaves it up.

Every wait on a peer outside Horovod is bounded (``exchange``, ``from_chief``: point-to-point messages
polled against a deadline, ``$BENCH_PEER_TIMEOUT_S``, default PEER_TIMEOUT_S): a rank that stops without
raising makes its peers' next collective stall, Horovod's stall shutdown (HOROVOD_STALL_*) fails it, they
reach the agreement, and after the bound the job is aborted (``abort``: MPI_Abort) naming the silent rank.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

import tensorflow as tf

from bench import environment
from bench.config import ConfigError
from bench.environment import mpi_defaults, threads_per_process, under_mpi

# How long a rank waits for a peer outside Horovod (the agreement at a run's end, the chief's choice of the
# next run) before it aborts the job: longer than the stall shutdown, so that ranks freed by it arrive first,
# and than a chief's results write and its reading of the store between two runs.
PEER_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class World:
    """Where this process sits: rank and size of its Horovod group, and its place on the host.

    ``comm`` is the group's mpi4py communicator when MPI launched the processes (None in one process or
    under Gloo): the channel on which ranks agree about a failure, outside Horovod.
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    comm: object = field(default=None, compare=False, repr=False)

    @property
    def is_chief(self) -> bool:
        return self.rank == 0


def _set_threads(n: int) -> None:
    # Share the host's cores among the ranks on it: on 2 cores, two workers get one thread each for
    # TF's intra- and inter-op pools (the input pipeline reads the same from bench.environment.threads);
    # oversubscribing makes every rank slower than one rank alone.
    environment.set_threads(n)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)
    except RuntimeError:
        pass  # TF's runtime already started (a test process): keep its pools


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
    """Start Horovod (on ``comm``, an mpi4py communicator, when packing runs; on MPI_COMM_WORLD under any
    other MPI launch), give this process one GPU (if there are any) and its share of the CPU threads."""
    mpi_defaults()  # no-op when bench.__main__ set them already; here for library use
    if comm is None and under_mpi():
        from mpi4py import MPI  # initialises MPI here, so that a Horovod shutdown does not finalise it

        comm = MPI.COMM_WORLD
    environment.horovod_defaults(has_gpu=bool(tf.config.list_physical_devices("GPU")))
    import horovod.tensorflow as hvd

    hvd.init(comm=comm) if comm is not None else hvd.init()
    world = World(hvd.rank(), hvd.size(), hvd.local_rank(), hvd.local_size(), comm)
    _pin_gpu(environment.node_local_rank(horovod_local_rank=world.local_rank))
    # bench.__main__'s share_cores has set BENCH_THREADS (the launcher's count, or the user's
    # TF_NUM_INTRAOP_THREADS); in library use it is computed here
    _set_threads(environment.threads() or threads_per_process(group_local_size=world.local_size))
    return world


SHUTDOWN_WORDS = "Horovod has been shut down"


def describe(error: BaseException) -> str:
    """One line for the runs table: the exception's type and its message's telling line (for TF's graph
    errors, the op's own message after the traceback of where the op was defined; for an error raised while
    a tf.function was traced, the original "Type: message" that autograph's StagingError ends with)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if lines and lines[0] == "in user code:":  # autograph's wrapper of an error raised while tracing
        return lines[-1][:1000]
    if lines and lines[0].startswith("Graph execution error"):
        told = [ln for ln in lines[1:] if not ln.startswith(("[[", "Detected at", "File ", "Node:"))
                and not ln.endswith(":")]
        lines = told[-1:] or lines
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:1000]


def peer_timeout() -> float:
    """``$BENCH_PEER_TIMEOUT_S`` if set, else PEER_TIMEOUT_S; ValueError unless a number > 0."""
    text = environment.get(environment.PEER_TIMEOUT)
    try:
        value = float(text) if text else PEER_TIMEOUT_S
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise ValueError(f"{environment.PEER_TIMEOUT} = {text!r} is not valid; valid: a number of seconds > 0")
    return value


class PeersSilent(RuntimeError):
    """Peers that did not answer within the bound: ``ranks`` (in the group)."""

    def __init__(self, ranks: list[int], what: str, seconds: float):
        self.ranks = ranks
        super().__init__(f"rank(s) {', '.join(map(str, ranks))} did not reach {what} within {seconds:.0f} s "
                         "(stopped without raising, or stuck outside any collective)")


def abort(message: str, code: int = 1) -> None:
    """End the whole job now: print ``message`` and MPI_Abort (mpirun then stops every rank); in one
    process, exit. For the states no agreement can get out of: a silent peer, an exception nobody caught."""
    if under_mpi():
        from mpi4py import MPI

        print(f"error: rank {MPI.COMM_WORLD.rank} aborts the job: {message}", file=sys.stderr, flush=True)
        MPI.COMM_WORLD.Abort(code)
    print(f"error: {message}", file=sys.stderr, flush=True)
    os._exit(code)


_TAG_UP, _TAG_DOWN = 7301, 7302  # to the chief, from the chief


def _recv_by(comm, source: int, tag: int, deadline: float):
    """The next message from ``source`` with ``tag``, or raise TimeoutError at ``deadline`` (monotonic)."""
    pause = 0.001
    while not comm.iprobe(source=source, tag=tag):
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(pause)
        pause = min(0.05, pause * 2)
    return comm.recv(source=source, tag=tag)


def _send_by(comm, value, dest: int, tag: int, deadline: float) -> None:
    request = comm.isend(value, dest=dest, tag=tag)
    while not request.test()[0]:  # small messages go eagerly: this returns at once unless the peer is gone
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(0.01)


def exchange(comm, rank: int, size: int, value, what: str, timeout: float | None = None) -> list:
    """Every rank's ``value``, in rank order, on every rank of ``comm`` (an allgather through rank 0),
    each wait bounded by ``timeout`` seconds (default ``peer_timeout()``). Raises PeersSilent naming the
    ranks that did not answer in time (rank 0 names its silent peers, the others name rank 0)."""
    deadline = time.monotonic() + (peer_timeout() if timeout is None else timeout)
    seconds = deadline - time.monotonic()
    if rank != 0:
        try:
            _send_by(comm, value, 0, _TAG_UP, deadline)
            return _recv_by(comm, 0, _TAG_DOWN, deadline)
        except TimeoutError:
            raise PeersSilent([0], what, seconds) from None
    values, silent = [value], []
    for peer in range(1, size):
        try:
            values.append(_recv_by(comm, peer, _TAG_UP, deadline))
        except TimeoutError:
            silent.append(peer)
            values.append(None)
    if silent:
        raise PeersSilent(silent, what, seconds)
    for peer in range(1, size):
        _send_by(comm, values, peer, _TAG_DOWN, deadline)
    return values


def from_chief(world: World, value, what: str):
    """Every rank of the group gets the chief's ``value`` (bounded like ``exchange``; a silent peer aborts
    the job, naming it)."""
    if world.size == 1:
        return value
    if world.comm is None:  # Gloo: Horovod is the only channel
        import horovod.tensorflow as hvd

        return hvd.broadcast_object(value, root_rank=0, name=what.replace(" ", "_"))
    try:
        return exchange(world.comm, world.rank, world.size, value if world.is_chief else None, what)[0]
    except PeersSilent as e:
        abort(str(e))


def agree(world: World, error: BaseException | None) -> list[tuple[int, str]]:
    """Called by every rank of a group when a run ends (``error`` None) or fails; returns the failures as
    ``[(rank, "Type: message"), ...]``, the same list on every rank (empty when all succeeded).

    A failing rank first shuts its Horovod down: every peer blocked in (or reaching) a collective then fails
    at once. All ranks exchange their outcome over the group's MPI communicator; if any failed, every rank
    restarts Horovod on that communicator, ready for the next run. The ranks whose error was only the
    induced shutdown are left out of the list when another rank has the cause. A rank that does not reach
    the agreement within ``peer_timeout()`` raises PeersSilent on the others (the caller aborts the job).
    """
    if world.size == 1:
        return [(world.rank, describe(error))] if error is not None else []
    import horovod.tensorflow as hvd

    if error is not None:
        hvd.shutdown()  # Horovod: wakes every peer waiting in a collective with a "shut down" error
    if world.comm is None:  # Gloo: no channel outside Horovod; exiting ends the job (horovodrun's rule)
        return [(world.rank, describe(error))] if error is not None else []
    mine = None if error is None else (world.rank, describe(error), SHUTDOWN_WORDS in str(error))
    outcomes = exchange(world.comm, world.rank, world.size, mine, "the end of the run")
    failures = [f for f in outcomes if f is not None]
    if not failures:
        return []
    hvd.shutdown()  # idempotent; every rank of the group is here, so the restart below is collective
    hvd.init(comm=world.comm)
    causes = [f for f in failures if not f[2]] or failures
    return [(rank, text) for rank, text, _ in causes]


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


def mean_over_workers(grads: list, loss, world: World, compression: str = "none"):
    """Average gradients and the loss over the workers in one grouped (fused) collective, in float32.

    ``compression = "fp16"`` (bench.config.COMPRESSIONS): the gradients cross the wire as float16 (Horovod's
    Compression.fp16 casts them down before the reduction and back to float32 after it: half the bytes,
    magnitudes below 6e-8 lost, above 65504 infinite); the loss then goes in its own float32 allreduce, since
    NLCG's line search compares losses to 1 part in 100 (docs/nlcg.md section 9)."""
    grads = [tf.cast(g, tf.float32) for g in grads]  # a no-op for float32 gradients; states the contract
    if world.size == 1:
        return grads, loss
    import horovod.tensorflow as hvd

    if compression == "fp16":
        grads = hvd.grouped_allreduce(grads, op=hvd.Average, compression=hvd.Compression.fp16)
        return grads, hvd.allreduce(tf.cast(loss, tf.float32), op=hvd.Average, name="mean_loss")
    # Horovod: one grouped allreduce of every gradient and the loss, averaged (one negotiation per step).
    shape = loss.shape  # a scalar, or scalars averaged alike (the train step adds the noise scale's |G_small|^2)
    *grads, loss = hvd.grouped_allreduce([*grads, tf.reshape(loss, [-1])], op=hvd.Average)
    return grads, tf.reshape(loss, shape)


def sum_over_workers(values, world: World, name: str):
    """Sum a tensor (eval counts) over the workers."""
    if world.size == 1:
        return values
    import horovod.tensorflow as hvd

    return hvd.allreduce(values, op=hvd.Sum, name=name)

