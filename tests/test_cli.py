"""End to end through the CLI, as a user runs it: mpirun, horovodrun, one process; bad input."""

import json
import os
import shutil
import subprocess

import pytest

from bench.results import load_history, load_runs
from conftest import PYTHON, ROOT, requires_horovod, run_cli

pytestmark = requires_horovod
SMOKE = ["train", "--config", "experiments/smoke.toml"]
# A tiny workload for the batch-size tests: 8x8 synthetic images, a 4-filter ResNet-8.
TINY = ["--set", "dataset=synthetic", "--set", "synthetic_image_size=8", "--set", "width=4",
        "--set", "eval_every_epochs=0", "--set", "synthetic_test_size=256"]


def _rows(out_dir, sweep="smoke"):
    return load_runs(out_dir / sweep), load_history(out_dir / sweep)


@pytest.mark.mpi
@pytest.mark.slow
def test_smoke_run_two_workers_under_mpirun(tmp_path):
    p = run_cli([*SMOKE, "--set", f"output_dir={tmp_path}"], np_=2)
    assert p.returncode == 0, p.stderr[-3000:]
    runs, hist = _rows(tmp_path)
    assert len(runs) == 1
    r = runs.iloc[0]
    assert (r.status, r.workers, r.global_batch, r.steps, r.dataset) == ("complete", 2, 256, 40, "fashion_mnist")
    assert (r.per_worker_batch, r.accumulation) == (128, 1)
    assert 0.5 < r.top1 <= 1 and r.top5 >= r.top1 and r.images_per_s > 0
    assert r.horovod_version == "0.28.1" and r.tf_version.startswith("2.18")
    train_rows = hist[hist.loss.notna()]
    # the first step is always logged (it carries the compilation), then every log_every_steps
    assert list(train_rows.step) == [1, *range(5, 41, 5)] and (train_rows.lr > 0).all()
    assert hist.top1.notna().sum() == 1
    assert "img_s=" in p.stderr  # the progress bar, shown by rank 0 only
    assert p.stdout.count("complete: top1") == 1


@pytest.mark.slow
def test_one_worker_without_launcher_and_overrides(tmp_path):
    p = run_cli([*SMOKE, "--set", f"output_dir={tmp_path}", "--set", "optimizer=rmsprop", "--set",
                 "hparams={}", "--set", "steps=6", "--set", "global_batch=512"])
    assert p.returncode == 0, p.stderr[-3000:]
    r = load_runs(tmp_path / "smoke").iloc[0]
    assert (r.status, r.workers, r.optimizer, r.global_batch, r.per_worker_batch, r.accumulation) == (
        "complete", 1, "rmsprop", 512, 128, 4)
    assert json.loads(r.hparams) == {"rho": 0.9, "momentum": 0.9, "epsilon": 1.0}  # the defaults, resolved


@pytest.mark.mpi
@pytest.mark.slow
def test_horovodrun_gloo(tmp_path):
    hvdrun = shutil.which("horovodrun", path=os.path.dirname(PYTHON))
    env = {**os.environ, "PATH": f"{os.path.dirname(PYTHON)}:{os.environ['PATH']}"}
    p = subprocess.run([hvdrun, "--gloo", "-np", "2", PYTHON, "-m", "bench", *SMOKE, "--set", "steps=4",
                        "--set", f"output_dir={tmp_path}"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    r = load_runs(tmp_path / "smoke").iloc[0]
    assert (r.status, r.workers) == ("complete", 2)


def _max_rss_mb(cmd) -> float:
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, proc.stderr.read().decode()[-3000:]
    return usage.ru_maxrss / 1024  # the largest of the process and the children it waited for


@pytest.mark.mpi
@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_global_batch_98304_one_step_with_flat_memory(tmp_path, workers):
    from conftest import mpirun

    def cmd(batch):
        args = ["-m", "bench", "train", *TINY, "--set", f"global_batch={batch}", "--set",
                "per_worker_batch=2048", "--set", "steps=1", "--set", f"output_dir={tmp_path}"]
        return mpirun(workers, *args) if workers > 1 else [PYTHON, *args]

    small, big = _max_rss_mb(cmd(2048 * workers)), _max_rss_mb(cmd(98304))
    runs = load_runs(tmp_path / "default")
    assert sorted(runs.global_batch) == sorted([2048 * workers, 98304])
    big_row = runs[runs.global_batch == 98304].iloc[0]
    assert (big_row.status, big_row.workers, big_row.accumulation) == ("complete", workers, 48 // workers)
    # 48x more images per step must not mean more memory: only micro-batches are ever materialised.
    assert big < 1.25 * small, (small, big)


def test_divergence_is_recorded_and_the_command_succeeds(tmp_path):
    p = run_cli(["train", *TINY, "--set", "base_lr=1e5", "--set", "init_lr=1e5", "--set", "steps=30",
                 "--set", "weight_decay=0.0", "--set", f"output_dir={tmp_path}", "--set", "optimizer=sgd",
                 "--set", "hparams={}"])
    assert p.returncode == 0, p.stderr[-3000:]
    r = load_runs(tmp_path / "default").iloc[0]
    assert r.status == "diverged" and r.steps < 30
    hist = load_history(tmp_path / "default")
    assert not pytest.approx(hist.loss.iloc[-1]) == hist.loss.iloc[-1]  # the last logged loss is NaN/inf


def _corrupt_fashion(tmp_path):
    src = "/usr/share/datasets/fashion-mnist"
    d = tmp_path / "fmnist"
    shutil.copytree(src, d) if os.path.isdir(src) else d.mkdir()
    (d / "train-labels-idx1-ubyte.gz").write_bytes(b"not a gzip file")
    return d


BAD = {
    "unknown key": (["--set", "epochz=3"], ["epochz", "valid"]),
    "wrong type": (["--set", "epochs=\"three\""], ["epochs", "float"]),
    "unknown optimizer": (["--set", "optimizer=adamx"], ["adamx", "momentum"]),
    "unknown dataset": (["--set", "dataset=mnist"], ["mnist", "fashion_mnist"]),
    "batch does not split": (["--set", "global_batch=300"], ["300", "256 or 384"]),
    "missing cifar": (["--set", "dataset=cifar100", "--set", "data_dir={tmp}/nothing"],
                      ["cifar-100-binary", "cifar.html"]),
    "missing imagenet": (["--set", "dataset=imagenet", "--set", "data_dir={tmp}/nothing"], ["train-", "TFRecord"]),
    "corrupt data file": (["--set", "data_dir={fmnist}"], ["train-labels-idx1-ubyte.gz"]),
}


def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path):
    fmnist = _corrupt_fashion(tmp_path)
    out = tmp_path / "out"
    procs = {}
    for name, (args, _) in BAD.items():  # all at once: each pays TensorFlow's start-up
        args = [a.format(tmp=tmp_path, fmnist=fmnist) for a in args]
        procs[name] = subprocess.Popen([PYTHON, "-m", "bench", *SMOKE, *args, "--set", f"output_dir={out}"],
                                       cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for name, (_, words) in BAD.items():
        _, err = procs[name].communicate(timeout=300)
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert procs[name].returncode == 2, (name, err[-2000:])
        assert len(errors) == 1, (name, err[-2000:])
        for w in words:
            assert w in errors[0], (name, errors[0])
    assert not out.exists()


def test_missing_config_file():
    p = run_cli(["train", "--config", "experiments/nope.toml"])
    assert p.returncode == 2 and "nope.toml" in p.stderr


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=[pytest.mark.mpi, pytest.mark.slow])])
def test_perf_reports_ratios_against_the_first_optimizer(tmp_path, workers):
    out = tmp_path / "perf.csv"
    p = run_cli(["perf", *TINY, "--set", "global_batch=64", "--optimizers", "momentum,nlcg-pr", "--steps", "3",
                 "--rounds", "2", "--out", str(out)], np_=workers if workers > 1 else 0)
    assert p.returncode == 0, p.stderr[-3000:]
    import pandas as pd

    table = pd.read_csv(out)
    assert list(table.optimizer) == ["momentum", "nlcg-pr"] and (table.samples == 6).all()
    assert (table.workers == workers).all() and (table.micro_batch == 64 // workers).all()
    assert table.step_ratio[0] == 1.0 and table.apply_ratio[0] == 1.0
    assert (table.step_ms > 0).all() and (table.apply_ms > 0).all()
    # NLCG-PR touches 5 state buffers and takes global dot products: it cannot cost less than momentum's 1.
    assert table.apply_ratio[1] > 1.0
    # one worker's step has no collective; two really exchange the gradients
    assert (table.allreduce_ms == 0).all() if workers == 1 else (table.allreduce_ms > 0.05).all()
    assert p.stdout.count("step_ratio") == 1  # rank 0 only


def test_perf_unknown_optimizer_exit_2():
    p = run_cli(["perf", *TINY, "--optimizers", "momentum,adamx"])
    assert p.returncode == 2 and "adamx" in p.stderr
