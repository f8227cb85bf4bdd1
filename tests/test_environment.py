"""The process's environment: which GPU a rank takes, its share of the cores, the launcher's and libraries'
defaults (bench.environment)."""

from bench import environment
from bench.environment import node_local_rank


def test_node_local_rank_counts_every_process_on_the_host():
    # two packed groups of 2 on one host: Horovod says local rank 0 or 1 in each; Open MPI says 0..3
    ranks = [node_local_rank({"OMPI_COMM_WORLD_LOCAL_RANK": str(r)}, horovod_local_rank=r % 2) for r in range(4)]
    assert ranks == [0, 1, 2, 3]
    assert node_local_rank({"SLURM_LOCALID": "5"}, horovod_local_rank=1) == 5
    # the launcher's own first
    assert node_local_rank({"MPI_LOCALRANKID": "3", "SLURM_LOCALID": "7"}, horovod_local_rank=0) == 3
    # no launcher variable (horovodrun --gloo sets HOROVOD_LOCAL_RANK)
    assert node_local_rank({}, horovod_local_rank=1) == 1
    assert node_local_rank({"OMPI_COMM_WORLD_LOCAL_RANK": ""}, horovod_local_rank=2) == 2


def test_cores_are_shared_among_every_process_on_the_host():
    # two packed groups of 2 ranks on a 4-core host: Open MPI counts all 4 processes, Horovod's 2
    assert environment.threads_per_process({"OMPI_COMM_WORLD_LOCAL_SIZE": "4"}, group_local_size=2, cores=4) == 1
    assert environment.threads_per_process({}, group_local_size=2, cores=4) == 2
    assert environment.threads_per_process({"OMPI_COMM_WORLD_LOCAL_SIZE": "8"}, cores=4) == 1  # never 0
    env = {"OMPI_COMM_WORLD_LOCAL_SIZE": "2"}
    environment.share_cores(env)  # on this machine's cores, shared by 2
    n = str(max(1, (__import__("os").cpu_count() or 1) // 2))
    assert env["TF_NUM_INTRAOP_THREADS"] == env["TF_NUM_INTEROP_THREADS"] == env["BENCH_THREADS"] == n
    # a parent's values (a sweep re-launching itself under mpirun) are recomputed; a user's are kept
    child = {**env, "OMPI_COMM_WORLD_LOCAL_SIZE": "1"}
    environment.share_cores(child)
    assert child["BENCH_THREADS"] == str(__import__("os").cpu_count() or 1)
    user = {"TF_NUM_INTRAOP_THREADS": "3"}
    environment.share_cores(user)
    assert user["TF_NUM_INTRAOP_THREADS"] == user["BENCH_THREADS"] == "3"


def test_cpu_workers_fuse_small_gradients_only_unless_the_user_says_otherwise():
    cpu, gpu, user = {}, {}, {"HOROVOD_FUSION_THRESHOLD": "0", "HOROVOD_STALL_CHECK_TIME_SECONDS": "5"}
    environment.horovod_defaults(cpu, has_gpu=False)
    environment.horovod_defaults(gpu, has_gpu=True)
    environment.horovod_defaults(user, has_gpu=False)
    assert cpu["HOROVOD_FUSION_THRESHOLD"] == str(2**20)
    assert "HOROVOD_FUSION_THRESHOLD" not in gpu  # Horovod's own default on GPUs
    assert user["HOROVOD_FUSION_THRESHOLD"] == "0" and user["HOROVOD_STALL_CHECK_TIME_SECONDS"] == "5"
    assert cpu["HOROVOD_STALL_SHUTDOWN_TIME_SECONDS"] == gpu["HOROVOD_STALL_SHUTDOWN_TIME_SECONDS"] == "90"


def test_mpi_yields_when_idle_unless_the_user_says_otherwise():
    env = {}
    environment.mpi_defaults(env)
    assert env == {"OMPI_MCA_mpi_yield_when_idle": "1"}
    user = {"OMPI_MCA_mpi_yield_when_idle": "0"}
    environment.mpi_defaults(user)
    assert user["OMPI_MCA_mpi_yield_when_idle"] == "0"
