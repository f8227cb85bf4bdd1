"""The equal-budget quasi-random search (bench.search, issue 27): the trial points against scipy.stats.qmc
recomputed here with the scales' formulas, equal budgets, the refusals, and end to end: trials chosen on
validation by the rule (recomputed from the runs table), confirmation reruns of the chosen trial only, claims on
those reruns alone, infeasible trials counted, the boundary flag, and two concurrent sweep processes training
every run once."""

import dataclasses
import json
import math
import subprocess
import time
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import qmc

from bench import config, grid, search
from bench.config import ConfigError
from bench.results import load_runs
from conftest import PYTHON, ROOT, requires_horovod, run_cli
from plots import claims, tuning

TINY = """
dataset = "synthetic"
synthetic_image_size = 8
synthetic_train_size = 512
synthetic_test_size = 256
validation_size = 128
width = 4
eval_every_epochs = 0
log_every_steps = 2
steps = 4
"""


def _write(tmp_path, body, name="srch.toml", tiny=TINY):
    path = tmp_path / name
    path.write_text(f'output_dir = "{tmp_path}/results"\n{tiny}\n{body}')
    return path


SPACES = """
[search]
trials = 6
sampler = "{sampler}"
seed = 7
confirm_seeds = [1, 2]
[search.space.momentum]
base_lr = {{ min = 0.01, max = 1.0, scaling = "log" }}
"hparams.momentum" = {{ min = 0.5, max = 0.999, scaling = "log_one_minus" }}
warmup_fraction = {{ min = 0.0, max = 0.3, scaling = "linear" }}
label_smoothing = {{ feasible_points = [0.0, 0.05, 0.1] }}
[grid]
optimizer = ["momentum"]
global_batch = [64, 128]
"""


@pytest.mark.parametrize("sampler", ["halton", "sobol"])
def test_trial_points_are_scipys_scrambled_sequence_mapped_by_each_scale(tmp_path, sampler):
    sweep = grid.load(_write(tmp_path, SPACES.format(sampler=sampler)))
    engine = (qmc.Halton if sampler == "halton" else qmc.Sobol)(d=4, scramble=True, seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Sobol's balance wants a power of 2
        u = engine.random(6)
    by_batch = {}
    for cfg in sweep.runs:
        by_batch.setdefault(cfg.global_batch, []).append(cfg)
    assert sorted(by_batch) == [64, 128] and all(len(v) == 6 for v in by_batch.values())
    for cfgs in by_batch.values():
        assert [c.trial for c in cfgs] == list(range(6))
        for k, cfg in enumerate(cfgs):
            # log: exp(log min + u log(max/min)); 1 - x log-uniform; linear; discrete floor(u k)
            assert cfg.base_lr == pytest.approx(math.exp(math.log(0.01) + u[k, 0] * math.log(100.0)), rel=1e-12)
            assert cfg.hparams["momentum"] == pytest.approx(
                1 - math.exp(math.log(0.5) + u[k, 1] * (math.log(0.001) - math.log(0.5))), rel=1e-12)
            assert cfg.warmup_fraction == pytest.approx(0.3 * u[k, 2], rel=1e-12, abs=1e-15)
            assert cfg.label_smoothing == [0.0, 0.05, 0.1][int(u[k, 3] * 3)]
            assert 0.01 <= cfg.base_lr <= 1.0 and 0.5 <= cfg.hparams["momentum"] <= 0.999
    # the same points at every batch; each trial its own run (the index is part of the id)
    assert [c.base_lr for c in by_batch[64]] == [c.base_lr for c in by_batch[128]]
    assert len({c.run_id(1) for c in sweep.runs}) == 12
    assert sweep.search.trials == {"momentum": 6} and sweep.search.confirm_seeds == (1, 2)
    assert {"trial", "base_lr", "hparams.momentum", "warmup_fraction", "label_smoothing"} <= set(sweep.tuning)


def test_scales_and_the_boundary_flag_against_hand_values():
    assert search.scale({"min": 1e-3, "max": 1e-1, "scaling": "log"}, 0.5) == pytest.approx(1e-2)
    one_minus = {"min": 0.9, "max": 0.999, "scaling": "log_one_minus"}
    assert search.scale(one_minus, 0.5) == pytest.approx(1 - math.sqrt(0.1 * 0.001))
    assert search.scale({"min": 2.0, "max": 4.0, "scaling": "linear"}, 0.25) == 2.5
    assert [search.scale({"feasible_points": ["a", "b", "c"]}, u) for u in (0.0, 0.33, 0.34, 0.999)] == \
        ["a", "a", "b", "c"]
    log = {"min": 0.01, "max": 1.0, "scaling": "log"}
    assert search.on_boundary(log, 0.0102) == "min" and search.on_boundary(log, 0.98) == "max"
    assert search.on_boundary(log, 0.1) is None
    om = {"min": 0.5, "max": 0.999, "scaling": "log_one_minus"}
    assert search.on_boundary(om, 0.9989) == "max" and search.on_boundary(om, 0.9) is None
    assert search.on_boundary({"feasible_points": [1, 2, 3]}, 3) == "max"
    assert search.on_boundary({"feasible_points": [1, 2]}, 2) is None  # two points: no inside to compare with


def _trials_table(values: dict, study: dict) -> pd.DataFrame:
    """A runs table of trial rows: {(optimizer, trial): (status, val_top1, base_lr)} at batch 64, seed 0."""
    rows = []
    for (opt, k), (status, val, lr) in values.items():
        cfg = {"optimizer": opt, "global_batch": 64, "epochs": 1.0, "seed": 0, "trial": k, "base_lr": lr}
        rows.append({"run_id": f"{opt}-{k}", "config_id": f"c-{opt}-{k}", "status": status, "optimizer": opt,
                     "global_batch": 64, "epochs": 1.0, "steps": 4, "seed": 0, "top1": 0.5, "val_top1": val,
                     "config": json.dumps(cfg)})
    return pd.DataFrame(rows)


def test_the_chosen_trial_is_the_best_validation_among_complete_ones_ties_to_the_lowest_index():
    space = {"base_lr": {"min": 0.01, "max": 1.0, "scaling": "log"}}
    study = {"search": {"trials": {"a": 4}, "choosing_seed": 0, "confirm_seeds": [1], "spaces": {"a": space}}}
    runs = _trials_table({("a", 0): ("complete", 0.5, 0.1), ("a", 1): ("diverged", math.nan, 0.99),
                          ("a", 2): ("complete", 0.7, 0.0101), ("a", 3): ("complete", 0.7, 0.3)}, study)
    chosen = tuning.chosen(tuning.trials(runs, study), study)
    assert len(chosen) == 1
    c = chosen.iloc[0]
    assert c.trial == 2 and c.val_top1 == 0.7 and c.n_infeasible == 1 and c.n_trials == 4
    assert c.boundary == [("base_lr", "min")]  # 0.0101 is at the bottom of its log range
    # a declared trial without any row (never finished) is infeasible too
    study["search"]["trials"]["a"] = 5
    assert tuning.chosen(tuning.trials(runs, study), study).iloc[0].n_infeasible == 2
    assert tuning.infeasible_by_batch(tuning.chosen(tuning.trials(runs, study), study)) == \
        [{"global_batch": 64, "trials": 5, "infeasible": 2, "fraction": 0.4}]


GRID2 = '\n[grid]\noptimizer = ["momentum", "nlcg-fr"]\n'
BAD = [
    ("[search]\ntrials = 2\n" + GRID2, "confirm_seeds"),
    ("[search]\ntrials = 0\nconfirm_seeds = [1]\n" + GRID2, "trials = 0"),
    ("[search]\ntrials = 2\nconfirm_seeds = [0]\n" + GRID2, "includes seed 0"),
    ("[search]\ntrials = 2\nconfirm_seeds = [1]\nsampler = 'random'\n" + GRID2, "sampler"),
    ("[search]\ntrials = 2\nconfirm_seeds = [1]\n[search.space.momentum]\nbase_lr = { min = 0, max = 1, "
     "scaling = 'log' }\n" + GRID2, "min > 0"),
    ("[search]\ntrials = 2\nconfirm_seeds = [1]\n[search.space.momentum]\n'hparams.momentum' = { min = 0.5, "
     "max = 1.0, scaling = 'log_one_minus' }\n" + GRID2, "max < 1"),
    ("[search]\ntrials = 2\nconfirm_seeds = [1]\n[search.space.momentum]\n'hparams.nope' = { min = 0.5, "
     "max = 0.9 }\n" + GRID2, "no hyperparameter 'nope'"),
    ("[search]\ntrials = 2\nconfirm_seeds = [1]\n[search.space.momentum]\nper_worker_batch = { min = 1, "
     "max = 9 }\n" + GRID2, "not a real number"),
    ("[search]\ntrials = 2\nconfirm_seeds = [1]\n[search.space.adam]\nbase_lr = { min = 0.1, max = 1 }\n" + GRID2,
     "no run uses optimizer adam"),
    ("[search]\ntrials = { momentum = 2, nlcg-fr = 3 }\nconfirm_seeds = [1]\n" + GRID2, "unequal budgets"),
    ("[search]\ntrials = 2\nconfirm_seeds = [1]\n[grid]\nseed = [0, 1]\n", "no seed axis"),
    ("[search]\ntrials = 2\nconfirm_seeds = [1]\n[grid]\nbase_lr = [0.1, 0.2]\n", "base_lr is tuned by"),
    ("[search]\ntrials = 2\nconfirm_seeds = [1]\n[claim]\nconfirm_seeds = [2]\n" + GRID2, "differs from"),
    ("[search]\ntrials = 2\nconfirm_seeds = [1]\nwhat = 1\n" + GRID2, "valid keys"),
]


@pytest.mark.parametrize("body, words", BAD)
def test_bad_search_tables_are_one_line_errors(tmp_path, body, words):
    with pytest.raises(ConfigError) as e:
        grid.load(_write(tmp_path, body))
    assert words in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_a_search_without_a_validation_split_is_refused_in_one_line_exit_2(tmp_path):
    body = "[search]\ntrials = 2\nconfirm_seeds = [1]\n"
    path = _write(tmp_path, body, tiny=TINY.replace("validation_size = 128", ""))
    p = run_cli(["sweep", str(path), "--dry-run"])
    assert p.returncode == 2, p.stderr
    lines = [line for line in p.stderr.splitlines() if line.strip() and "tensorflow" not in line and "AVX" not in line
             and "oneDNN" not in line and "rebuild TensorFlow" not in line]
    assert len(lines) == 1 and "validation_size = 0" in lines[0] and "valid: validation_size > 0" in lines[0], lines


def test_unequal_budgets_only_when_declared_and_then_stated(tmp_path):
    body = ("[search]\ntrials = { momentum = 2, nlcg-fr = 3 }\nunequal_budget = true\nconfirm_seeds = [1]\n"
            "[grid]\noptimizer = [\"momentum\", \"nlcg-fr\"]\n")
    sweep = grid.load(_write(tmp_path, body))
    assert sweep.search.trials == {"momentum": 2, "nlcg-fr": 3} and len(sweep.runs) == 5
    assert sweep.search.doc()["unequal_budget"] is True
    with pytest.raises(ConfigError, match="must name every optimizer"):
        grid.load(_write(tmp_path, body.replace(", nlcg-fr = 3", "")))


def test_a_plug_ins_own_space_is_its_default_and_a_built_in_without_one_must_be_given_one(tmp_path):
    body = ('[search]\ntrials = 3\nconfirm_seeds = [1]\n[grid]\noptimizer = ["sign-momentum", "momentum"]\n')
    sweep = grid.load(_write(tmp_path, body))
    assert sweep.search.sources["sign-momentum"].endswith("SignMomentum.bench_space")
    assert set(sweep.search.spaces["sign-momentum"]) == {"base_lr", "hparams.beta", "weight_decay"}
    betas = [c.hparams["beta"] for c in sweep.runs if c.optimizer == "sign-momentum"]
    assert len(betas) == 3 and all(0.8 <= b <= 0.99 for b in betas) and len(set(betas)) == 3
    import optimizers

    assert optimizers.space("momentum")[0]["base_lr"]["scaling"] == "log"
    no_space = optimizers.REGISTRY["sgd"]
    try:
        optimizers.REGISTRY["sgd"] = dataclasses.replace(no_space, space=None)
        with pytest.raises(ConfigError, match=r"sgd has no default search space; valid: a \[search.space.sgd\]"):
            grid.load(_write(tmp_path, body.replace('"sign-momentum", "momentum"', '"sgd"')))
    finally:
        optimizers.REGISTRY["sgd"] = no_space


def test_a_trial_index_enters_the_run_id_only_for_trials():
    plain = config.make({"dataset": "synthetic"})
    assert config.make({"dataset": "synthetic", "trial": -1}).run_id(1) == plain.run_id(1)
    assert config.make({"dataset": "synthetic", "trial": 0}).run_id(1) != plain.run_id(1)
    assert config.make({"dataset": "synthetic", "trial": 0}).run_id(1) != \
        config.make({"dataset": "synthetic", "trial": 1}).run_id(1)
    with pytest.raises(ConfigError, match="trial = -2"):
        config.make({"dataset": "synthetic", "trial": -2})


E2E = """
[search]
trials = 4
seed = 3
confirm_seeds = [1, 2]
[search.space.momentum]
base_lr = { min = 0.02, max = 0.5, scaling = "log" }
[search.space.sgd]
base_lr = { feasible_points = [0.05, 1e30] }
init_lr = { feasible_points = [1e30] }
[grid]
optimizer = ["momentum", "sgd"]
global_batch = [64]
[claim]
optimizer = "momentum"
baseline = "sgd"
"""


def _recomputed_choice(runs: pd.DataFrame) -> dict:
    """Independently of bench.search and plots.tuning: per optimizer, the trial (at seed 0) of the highest
    val_top1 among complete ones, ties to the lowest index."""
    out = {}
    for _, r in runs.iterrows():
        cfg = json.loads(r.config)
        if cfg.get("trial", -1) < 0 or r.seed != 0 or r.status != "complete" or not np.isfinite(r.val_top1):
            continue
        best = out.get(r.optimizer)
        if best is None or r.val_top1 > best[1] or (r.val_top1 == best[1] and cfg["trial"] < best[0]):
            out[r.optimizer] = (cfg["trial"], r.val_top1)
    return {o: t for o, (t, _) in out.items()}


def _check_search_folder(folder):
    runs = load_runs(folder)
    done = runs[runs.status.isin(["complete", "diverged"])]
    assert done.run_id.is_unique, done.run_id[done.run_id.duplicated()].tolist()  # every run trained once
    trial = done.config.map(lambda c: json.loads(c)["trial"])
    trials, reruns = done[done.seed == 0], done[done.seed != 0]
    assert len(trials) == 8 and sorted(trial[done.seed == 0]) == [0, 0, 1, 1, 2, 2, 3, 3]
    # sgd's trials at base_lr 1e30 diverged: infeasible, kept as rows, never chosen
    sgd = trials[trials.optimizer == "sgd"]
    huge = sgd.config.map(lambda c: json.loads(c)["base_lr"] > 1)
    assert (sgd[huge].status == "diverged").all() and huge.any() and (~huge).any()
    chosen = _recomputed_choice(done)
    assert sorted(chosen) == ["momentum", "sgd"]
    # the confirmation reruns: the chosen trial of each optimizer, on seeds 1 and 2, and nothing else
    got = sorted((r.optimizer, json.loads(r.config)["trial"], int(r.seed)) for _, r in reruns.iterrows())
    assert got == sorted((o, t, s) for o, t in chosen.items() for s in (1, 2))
    for _, r in reruns.iterrows():  # a rerun is its trial's configuration at another seed: one config_id
        twin = trials[(trials.optimizer == r.optimizer) & (trial[trials.index] == json.loads(r.config)["trial"])]
        assert twin.config_id.iloc[0] == r.config_id
    return runs, chosen


@requires_horovod
@pytest.mark.slow
def test_a_search_chooses_on_validation_confirms_on_fresh_seeds_and_claims_on_those_alone(tmp_path):
    path = _write(tmp_path, E2E)
    p = run_cli(["sweep", str(path)])
    assert p.returncode == 0, p.stderr[-3000:]
    assert "a search of 2 studies, 8 trials and 4 confirmation reruns" in p.stdout
    folder = tmp_path / "results" / "srch"
    runs, chosen = _check_search_folder(folder)
    again = run_cli(["sweep", str(path), "--dry-run"])
    assert again.returncode == 0 and "12 runs known" in again.stdout and "0 to run" in again.stdout
    assert "0 studies waiting" in again.stdout
    study = json.loads((folder / "study.json").read_text())
    assert study["search"]["trials"] == {"momentum": 4, "sgd": 4} and study["search"]["confirm_seeds"] == [1, 2]
    doc = claims.build(runs, None, "cifar100", study)
    # every claim is computed on the confirmation reruns alone: a run of the choosing seed in one is a failure
    prim = doc["primary"]
    assert prim["per_budget"] and prim["judged_on"] == "confirmation seeds"
    for b in prim["per_budget"]:
        assert b["seeds"] == [1, 2] and b["baseline_seeds"] == [1, 2]
    reruns = runs[(runs.seed != 0) & (runs.optimizer == "momentum")]
    assert prim["per_budget"][0]["top1_mean"] == pytest.approx(reruns.top1.mean(), abs=1e-6)
    assert doc["claims"] == []  # no untuned comparison of trials
    for e in doc["tuned_claims"]:
        assert e["judged_on"] == "confirmation seeds" and e["n_seeds"] == 2 and e["baseline_n_seeds"] == 2
    s = doc["search"]
    by_opt = {c["optimizer"]: c for c in s["chosen"]}
    assert {o: c["trial"] for o, c in by_opt.items()} == chosen
    sgd_huge = sum(json.loads(c)["base_lr"] > 1 for c in runs[(runs.optimizer == "sgd") & (runs.seed == 0)].config)
    assert by_opt["sgd"]["n_infeasible"] == sgd_huge
    assert s["infeasible_by_batch"] == [{"global_batch": 64, "trials": 8, "infeasible": sgd_huge,
                                         "fraction": sgd_huge / 8}]
    assert s["equal_budget"] and "4 trials per optimizer" in s["budget_statement"]
    text = claims.markdown(doc)
    assert "Tuning protocol" in text and "scrambled Halton" in text and f"{sgd_huge} of 8" in text
    # the report's figures show what the claims judge: the chosen trials' reruns, one series per optimizer
    judged = tuning.judged_runs(runs, study)
    assert sorted(judged.seed) == [1, 1, 2, 2] and set(judged.series) == {""}
    from plots import report

    drawn = report.prepare(folder, tmp_path / "figures").figures
    names = [t for ax in drawn["top1_vs_batch"].axes for t in ax.get_legend_handles_labels()[1]]
    assert sorted(n for n in names if "paper" not in n) == ["momentum (ours)", "sgd (ours)"], names
    # beside another sweep (report --against), a search counts its tuned comparisons, judged on the reruns
    rows = claims.against(doc, [doc])[1]["rows"]
    assert [r["what"] for r in rows] == ["primary"] + ["exploratory"] * len(doc["tuned_claims"])
    assert rows[1]["gain_points"] == doc["tuned_claims"][0]["gain_points"]


@requires_horovod
@pytest.mark.slow
@pytest.mark.parametrize("after_rows", [0, 3, 8])
def test_a_search_split_across_two_concurrent_sweep_processes_trains_every_run_once(tmp_path, after_rows):
    """The second process joins at once, in the middle of the trials, or once the 8 trials are in (the
    confirmation phase): either way every trial and every rerun is trained once."""
    path = _write(tmp_path, E2E)
    folder = tmp_path / "results" / "srch"
    first = subprocess.Popen([PYTHON, "-m", "bench", "sweep", str(path)], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while after_rows and time.time() < deadline and first.poll() is None and len(load_runs(folder)) < after_rows:
        time.sleep(0.1)
    second = subprocess.Popen([PYTHON, "-m", "bench", "sweep", str(path)], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    outs = [proc.communicate(timeout=600)[0] for proc in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, [o[-2000:] for o in outs]
    runs, _ = _check_search_folder(folder)
    assert len(runs) == 12  # no run trained twice, none left out
    trained = [o.count("] run ") for o in outs]
    assert sum(trained) == 12, trained
