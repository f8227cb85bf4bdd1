"""Fault injection with real processes: a failure on one rank ends the run on every rank (no hang), sweeps
sharing a folder train each run once, a killed sweep resumes, a failed results write loses nothing."""

import os
import subprocess
import time

import numpy as np
import pytest
import tensorflow as tf

from bench.results import load_runs
from conftest import ROOT, mpirun, requires_horovod, run_cli

TINY = """
dataset = "synthetic"
synthetic_image_size = 8
synthetic_train_size = 512
synthetic_test_size = 256
width = 4
eval_every_epochs = 0
log_every_steps = 2
precise_bn_images = 256
"""


def _example(jpeg: bytes, label: int) -> bytes:
    feature = {"image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg])),
               "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _imagenet_with_a_bad_jpeg_on_rank_1(folder):
    """Two train shards: rank 0 reads shard 0 (good), rank 1 shard 1, whose records are not JPEGs."""
    good = tf.io.encode_jpeg(np.full((40, 48, 3), 128, np.uint8)).numpy()
    for shard, jpeg in enumerate((good, b"\xff\xd8 this is not a jpeg")):
        with tf.io.TFRecordWriter(str(folder / f"train-{shard:05d}-of-00002")) as w:
            for i in range(8):
                w.write(_example(jpeg, 1 + i % 3))
    with tf.io.TFRecordWriter(str(folder / "validation-00000-of-00001")) as w:
        for i in range(4):
            w.write(_example(good, 1 + i % 3))


@requires_horovod
@pytest.mark.mpi
@pytest.mark.slow
def test_an_error_on_one_rank_fails_the_run_on_every_rank_and_the_sweep_goes_on(tmp_path):
    data_dir = tmp_path / "imagenet"
    data_dir.mkdir()
    _imagenet_with_a_bad_jpeg_on_rank_1(data_dir)
    sweep = tmp_path / "bad.toml"
    sweep.write_text(f'output_dir = "{tmp_path}/results"\ndataset = "imagenet"\ndata_dir = "{data_dir}"\n'
                     'model = "resnet8"\nwidth = 16\nglobal_batch = 4\nper_worker_batch = 2\nsteps = 3\n'
                     'eval_every_epochs = 0\nprecise_bn_images = 4\n[grid]\nseed = [0, 1]\n')
    t0 = time.perf_counter()
    p = run_cli(["sweep", str(sweep)], np_=2, timeout=240)
    took = time.perf_counter() - t0
    assert p.returncode == 1, p.stdout[-2000:] + p.stderr[-3000:]
    runs = load_runs(tmp_path / "results" / "bad")
    # both runs were tried (the sweep went on after the first failure), each failed on every rank
    assert len(runs) == 2 and (runs.status == "failed").all() and runs.seed.tolist() == [0, 1]
    for error in runs.error:
        assert error.startswith("rank 1: ") and "rank 0" not in error, error
        assert "jpeg" in error.lower() or "JPEG" in error, error
    assert took < 120, f"the failure took {took:.0f} s to end the sweep"
    print(f"2 failed runs recorded in {took:.1f} s (sweep start to exit)")


def _sweep_file(tmp_path, grid: str, steps: int = 6) -> str:
    path = tmp_path / "toy.toml"
    path.write_text(f'output_dir = "{tmp_path}/results"\n{TINY}\nsteps = {steps}\nglobal_batch = 64\n[grid]\n{grid}\n')
    return str(path)


def _counts(tmp_path):
    runs = load_runs(tmp_path / "results" / "toy")
    return runs, runs.groupby("run_id").size()


@requires_horovod
@pytest.mark.mpi
@pytest.mark.slow
def test_two_sweeps_on_one_folder_train_each_run_once(tmp_path):
    path = _sweep_file(tmp_path, 'seed = [0, 1, 2, 3]\noptimizer = ["momentum"]')
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    procs = [subprocess.Popen(mpirun(2, "-m", "bench", "sweep", path), cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=400) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-2000:] + err[-3000:]
    runs, per_run = _counts(tmp_path)
    assert len(per_run) == 4 and (per_run == 1).all(), per_run
    assert (runs.status == "complete").all()
    # both processes trained some (the claims shared the work rather than one process doing all)
    trained = [out.count("complete: top1") for out, _ in outs]
    assert sum(trained) == 4, trained
