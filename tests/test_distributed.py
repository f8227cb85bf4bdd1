"""Process placement: which GPU a rank takes, counting packed groups on one host."""

from bench.distributed import node_local_rank


def test_node_local_rank_counts_every_process_on_the_host():
    # two packed groups of 2 on one host: Horovod says local rank 0 or 1 in each; Open MPI says 0..3
    assert [node_local_rank({"OMPI_COMM_WORLD_LOCAL_RANK": str(r)}, r % 2) for r in range(4)] == [0, 1, 2, 3]
    assert node_local_rank({"SLURM_LOCALID": "5"}, 1) == 5
    assert node_local_rank({"MPI_LOCALRANKID": "3", "SLURM_LOCALID": "7"}, 0) == 3  # the launcher's own first
    assert node_local_rank({}, 1) == 1  # no launcher variable (horovodrun --gloo sets HOROVOD_LOCAL_RANK)
    assert node_local_rank({"OMPI_COMM_WORLD_LOCAL_RANK": ""}, 2) == 2
