"""Sweeps: grid expansion, skip-the-finished, resume after kill -9, packed groups under mpirun."""

import json
import os
import shutil
import signal
import subprocess
import time

import pytest
from test_config import write_fashion_files
from test_results import first_rule_row

from bench import attempts, config, datasets, results, sweep
from bench.config import ConfigError
from bench.results import load_history, load_runs
from conftest import PYTHON, ROOT, requires_horovod, run_cli

TINY = """
dataset = "synthetic"
synthetic_image_size = 8
synthetic_train_size = 512
synthetic_test_size = 256
width = 4
eval_every_epochs = 0
log_every_steps = 2
"""


def _write(tmp_path, body, name="toy.toml"):
    path = tmp_path / name
    path.write_text(f'output_dir = "{tmp_path}/results"\n{TINY}\n{body}')
    return path


def test_grid_is_the_product_with_per_optimizer_hparams(tmp_path):
    path = _write(tmp_path, """
steps = 3
[hparams]
[grid]
optimizer = ["momentum", "nlcg-pr"]
global_batch = [64, 128, 64]
seed = [0, 1]
[optimizer_hparams.nlcg-pr]
line_search = "online"
""")
    s = sweep.load(path)
    assert s.name == "toy" and len(s.runs) == 2 * 2 * 2  # the repeated 64 is one run, not two
    points = [(c.optimizer, c.global_batch, c.seed) for c in s.runs]
    assert points[:3] == [("momentum", 64, 0), ("momentum", 64, 1), ("momentum", 128, 0)]
    for c in s.runs:
        assert c.hparams == ({"line_search": "online"} if c.optimizer == "nlcg-pr" else {})
        assert (c.steps, c.dataset, c.sweep) == (3, "synthetic", "toy")
    assert len({c.run_id(2) for c in s.runs}) == 8
    # --set applies to every run
    assert {c.steps for c in sweep.load(path, ["steps=5"]).runs} == {5}


def test_several_grids_are_a_union_and_optimizers_get_their_own_fields(tmp_path):
    path = _write(tmp_path, """
steps = 3
[[grid]]
optimizer = ["momentum", "lamb"]
global_batch = [64, 128]
[[grid]]
optimizer = ["momentum", "lamb"]
global_batch = [128]
seed = [0, 1]
[optimizer_overrides.lamb]
base_lr = [0.01, 0.02]
warmup_fraction = 0.25
""")
    s = sweep.load(path)
    points = sorted((c.optimizer, c.global_batch, c.seed, c.base_lr, c.warmup_fraction) for c in s.runs)
    # grid 1: momentum x 2 batches + lamb x 2 batches x its 2 rates; grid 2 adds seed 1 at batch 128
    # (its seed-0 points are grid 1's, not repeated)
    assert points == [
        ("lamb", 64, 0, 0.01, 0.25), ("lamb", 64, 0, 0.02, 0.25),
        ("lamb", 128, 0, 0.01, 0.25), ("lamb", 128, 0, 0.02, 0.25),
        ("lamb", 128, 1, 0.01, 0.25), ("lamb", 128, 1, 0.02, 0.25),
        ("momentum", 64, 0, 0.1, 0.125), ("momentum", 128, 0, 0.1, 0.125), ("momentum", 128, 1, 0.1, 0.125)]
    assert s.grid["base_lr"] == [0.01, 0.02] and s.grid["seed"] == [0, 1]


@pytest.mark.parametrize("body, words", [
    ("[grid]\nepochz = [1, 2]", ["epochz", "valid", "global_batch"]),
    ("[grid]\nglobal_batch = 64", ["global_batch = 64", "non-empty list"]),
    ("[grid]\nglobal_batch = []", ["non-empty list"]),
    ("[grid]\nhparams = [{}]", ["hparams", "not a run config field"]),
    ("[grid]\noptimizer = [\"momentum\", \"adamx\"]", ["optimizer=adamx", "adamx", "valid"]),
    ("[grid]\nglobal_batch = [64]\n[optimizer_hparams.adamx]\nx = 1", ["adamx", "valid"]),
    ("[grid]\nsweep = [\"a\", \"b\"]", ["sweep", "[grid]"]),
    ("[grid]\noptimizer = [\"momentum\"]\n[optimizer_hparams.momentum]\nrho = 0.9", ["rho", "momentum"]),
    ("[grid]\nseed = [0]\n[optimizer_overrides.adamw]\nbase_lr = 0.1", ["optimizer_overrides", "adamw", "valid"]),
    ("[grid]\nseed = [0]\n[optimizer_overrides.lamb]\nbase_lrr = 0.1", ["base_lrr", "not a run config field"]),
    ("[grid]\nseed = [0]\n[optimizer_overrides.lamb]\noptimizer = \"sgd\"", ["cannot set optimizer"]),
])
def test_bad_sweep_files_are_one_line_errors(tmp_path, body, words):
    with pytest.raises(ConfigError) as e:
        sweep.load(_write(tmp_path, body))
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


@requires_horovod
@pytest.mark.slow
def test_sweep_runs_skips_finished_and_extends(tmp_path):
    path = _write(tmp_path, "steps = 4\n[grid]\noptimizer = [\"momentum\", \"nlcg-fr\"]\nglobal_batch = [64]\n")
    p = run_cli(["sweep", str(path)])
    assert p.returncode == 0, p.stderr[-3000:]
    runs = load_runs(tmp_path / "results" / "toy")
    assert sorted(runs.optimizer) == ["momentum", "nlcg-fr"] and (runs.status == "complete").all()
    assert "2 runs, 0 done, 2 to run" in p.stdout
    study = json.loads((tmp_path / "results" / "toy" / "study.json").read_text())  # declared before training
    assert study["claim"]["global_batch"] == 64 and study["claim"]["declared"] is False
    assert study["declared_at"] <= runs.started_at.min()

    again = run_cli(["sweep", str(path)])  # idempotent: nothing to run, nothing appended
    assert again.returncode == 0 and "2 runs, 2 done, 0 to run" in again.stdout
    assert len(load_runs(tmp_path / "results" / "toy")) == 2

    # a larger version of the sweep runs only what is missing
    path.write_text(path.read_text().replace("global_batch = [64]", "global_batch = [64, 128]"))
    dry = run_cli(["sweep", str(path), "--dry-run"])
    assert dry.returncode == 0 and dry.stdout.count("complete") == 2 and dry.stdout.count("pending") == 2
    assert "4 runs on 1 worker(s) each, 2 to run" in dry.stdout
    assert len(load_runs(tmp_path / "results" / "toy")) == 2  # a dry run trains nothing
    more = run_cli(["sweep", str(path)])
    assert more.returncode == 0 and "4 runs, 2 done, 2 to run" in more.stdout
    runs = load_runs(tmp_path / "results" / "toy")
    assert len(runs) == 4 and runs.run_id.is_unique
    assert sorted(zip(runs.optimizer, runs.global_batch, strict=True)) == [
        ("momentum", 64), ("momentum", 128), ("nlcg-fr", 64), ("nlcg-fr", 128)]


@requires_horovod
@pytest.mark.slow
def test_diverged_run_is_a_result_and_the_sweep_goes_on(tmp_path):
    path = _write(tmp_path, """
steps = 20
weight_decay = 0.0
optimizer = "sgd"
[grid]
base_lr = [1e30, 0.1]
init_lr = [1e30]
""")
    p = run_cli(["sweep", str(path)])
    assert p.returncode == 0, p.stderr[-3000:]
    runs = load_runs(tmp_path / "results" / "toy").set_index("peak_lr")
    assert runs.loc[1e30 * 128 / 256, "status"] == "diverged" and runs.loc[0.1 * 128 / 256, "status"] == "complete"
    again = run_cli(["sweep", str(path)])
    assert "2 done, 0 to run" in again.stdout  # divergence is kept as data, not retried


@requires_horovod
@pytest.mark.slow
def test_killed_sweep_resumes_without_duplicates_or_torn_rows(tmp_path):
    path = _write(tmp_path, "steps = 30\n[grid]\nseed = [0, 1, 2, 3]\n")
    folder = tmp_path / "results" / "toy"
    proc = subprocess.Popen([PYTHON, "-m", "bench", "sweep", str(path)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and len(load_runs(folder)) < 1:
            time.sleep(0.2)
        time.sleep(1.0)  # into the next run, which the killed process has claimed
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = len(load_runs(folder))
    assert 1 <= done < 4
    stale = list((folder / "claims").glob("*.claim"))
    assert len(stale) == 1, stale  # the killed process's claim on the run it was training
    killed = json.loads(stale[0].read_text())["run_id"]
    p = run_cli(["sweep", str(path)])  # its owner's pid is dead on this host: the claim is taken over at once
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"4 runs, {done} done, {4 - done} to run" in p.stdout
    everything, hist = load_runs(folder), load_history(folder)
    # kill -9 left no trace: the attempt counts as one crash (SIGKILL looks like the OOM killer), then trains
    crashed = everything[everything.status == "crashed"]
    assert crashed.run_id.tolist() == [killed] and "without a trace" in crashed.error.iloc[0], crashed.error
    assert "without a trace" in p.stdout
    runs = everything[everything.status != "crashed"]
    assert len(runs) == 4 and runs.run_id.is_unique and (runs.status == "complete").all()
    assert sorted(runs.seed) == [0, 1, 2, 3]
    assert not list((folder / "claims").glob("*.claim"))  # every claim released
    # every run's history is whole: one row per logged step, none from the killed attempt
    for rid in runs.run_id:
        steps = hist[(hist.run_id == rid) & hist.loss.notna()].step.tolist()
        assert steps == [1, *range(2, 31, 2)], (rid, steps)


@requires_horovod
@pytest.mark.mpi
@pytest.mark.slow
@pytest.mark.parametrize("workers, pack", [(1, 2), (2, 1)])
def test_packed_and_multi_worker_sweeps_relaunch_under_mpirun(tmp_path, workers, pack):
    body = "steps = 4\n[grid]\noptimizer = [\"momentum\", \"nlcg-pr\"]\nseed = [0, 1]\n"
    if pack == 2:  # the file's own [launch] table stands in for the flags
        body += f"[launch]\nworkers = {workers}\npack = {pack}\n"
    path = _write(tmp_path, body)
    flags = [] if pack == 2 else ["--workers", str(workers), "--pack", str(pack)]
    p = run_cli(["sweep", str(path), *flags], timeout=400)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "launching: " in p.stdout and f"-np {workers * pack}" in p.stdout
    runs = load_runs(tmp_path / "results" / "toy")
    assert len(runs) == 4 and runs.run_id.is_unique and (runs.status == "complete").all()
    assert (runs.workers == workers).all()
    if pack == 2:  # both groups trained, each claiming its next run as it became free
        assert p.stdout.count("[group 0] run ") >= 1 and p.stdout.count("[group 1] run ") >= 1
        assert p.stdout.count("] run ") == 4
    # the same sweep on the same layout is then done
    dry = run_cli(["sweep", str(path), "--workers", str(workers), "--pack", str(pack), "--dry-run"])
    assert f"4 runs on {workers} worker(s) each, 0 to run" in dry.stdout


def test_bad_launch_table_is_one_line_and_exit_2(tmp_path):
    for bad in ("workers = 0", "pack = \"2\"", "threads = 2"):
        with pytest.raises(ConfigError) as e:
            sweep.load(_write(tmp_path, f"steps = 2\n[launch]\n{bad}\n"))
        assert "[launch]" in str(e.value) and "valid: workers = N" in str(e.value) and "\n" not in str(e.value)
    p = run_cli(["sweep", str(_write(tmp_path, "steps = 2\n[launch]\npack = 0\n")), "--dry-run"])
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "[launch]" in p.stderr, p.stderr


def test_bad_pack_and_workers_are_exit_2(tmp_path):
    path = _write(tmp_path, "steps = 2\n[grid]\nseed = [0]\n")
    p = run_cli(["sweep", str(path), "--workers", "0"])
    assert p.returncode == 2 and "--workers 0" in p.stderr
    p = run_cli(["sweep", str(path), "--set", "global_batch=100", "--workers", "3", "--dry-run"])
    assert p.returncode == 2 and "global_batch = 100" in p.stderr and "99 or 102" in p.stderr


def test_a_sweep_file_given_to_train_says_how_to_run_it(tmp_path):
    path = _write(tmp_path, "steps = 2\n[grid]\nseed = [0]\n")
    p = run_cli(["train", "--config", str(path)])
    assert p.returncode == 2 and f"python -m bench sweep {path}" in p.stderr
    assert not (tmp_path / "results").exists()


def test_a_moved_study_finds_the_runs_it_finished_under_the_first_identity_rule(tmp_path):
    """Rows written before id_version (their ids hashed the data's folder and eval_batch): the same grid, its
    data now elsewhere and another eval_batch, lists them as done, in the sweep and in --dry-run."""
    write_fashion_files(tmp_path / "cluster_a")
    body = f"""
output_dir = "{tmp_path}/results"
dataset = "fashion_mnist"
image_size = 8
width = 4
epochs = 1.0
"""
    path = tmp_path / "toy.toml"
    path.write_text(body + f'data_dir = "{tmp_path}/cluster_a"\neval_batch = 500\n[grid]\nseed = [0, 1, 2]\n')
    before = sweep.load(path)
    folder = before.runs[0].results_dir
    for cfg in before.runs[:2]:
        results.append_run(folder, first_rule_row(cfg, 1), [{"step": 1, "loss": 1.0}])
    # the other cluster: the same files in another folder, and the first one gone
    shutil.copytree(tmp_path / "cluster_a", tmp_path / "cluster_b")
    shutil.rmtree(tmp_path / "cluster_a")
    datasets.clear_data_checks()
    path.write_text(body + f'data_dir = "{tmp_path}/cluster_b"\n[grid]\nseed = [0, 1, 2]\n')
    after = sweep.load(path)
    assert [c.seed for c in sweep.pending(after, 1)] == [2]
    assert list(sweep.status(after, 1).state) == ["complete", "complete", "pending"]
    assert set(load_history(folder, data_dirs={"fashion_mnist": str(tmp_path / "cluster_b")}).run_id) == {
        c.run_id(1) for c in after.runs[:2]}
    dry = run_cli(["sweep", str(path), "--dry-run"])
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert dry.stdout.count("complete") == 2 and "3 runs on 1 worker(s) each, 1 to run" in dry.stdout
    # rows written today carry the rule: a crashed attempt's row too
    crashed = attempts.crash_row(after.runs[2], 1, {}, "killed")
    assert (crashed["run_id"], crashed["id_version"]) == (after.runs[2].run_id(1), config.ID_VERSION)
