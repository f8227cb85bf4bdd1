"""A search's results (bench.search, issue 27) read back from a runs table and the study's declaration.

``trials``: one row per trial run (its study, trial index, status, val_top1, top1, the values it tried);
``chosen``: one row per study, the trial the protocol chooses (bench.search.choose: the highest val_top1 among
complete trials, ties to the lowest index; diverged, failed and never-finished trials infeasible), its
infeasible count and the parameters whose chosen value lies at the boundary of their range;
``confirmations``: the chosen trials' reruns on the confirmation seeds, the only rows any claim is judged on.
The sweep (bench.sweep) and this module choose by the one function, so the trial the report judges is the
trial the sweep confirmed.
"""

from __future__ import annotations

import json
import math

import pandas as pd

from bench import search as protocol
from plots import stats

STUDY_KEYS = ["optimizer", "global_batch", "epochs"]


def declared(study: dict | None) -> dict | None:
    """The study's search protocol (study.json ``search``), None for a grid."""
    return (study or {}).get("search") or None


def _config(row: dict) -> dict:
    return json.loads(row["config"]) if isinstance(row.get("config"), str) and row["config"] else {}


def _value(cfg: dict, key: str):
    if key.startswith("hparams."):
        return (cfg.get("hparams") or {}).get(key.split(".", 1)[1])
    return cfg.get(key)


def trials(runs: pd.DataFrame, study: dict | None) -> pd.DataFrame:
    """Every trial run of the search (trial >= 0, at the choosing seed), latest row per run_id, with its study
    keys, ``trial``, ``status``, ``val_top1``, ``top1``, ``config_id``, ``feasible`` (complete with a finite
    val_top1) and ``values`` ({field: value} of its optimizer's space)."""
    search = declared(study)
    cols = [*STUDY_KEYS, "trial", "run_id", "config_id", "status", "val_top1", "top1", "feasible", "values", "seed"]
    if search is None or runs.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    latest = runs.drop_duplicates("run_id", keep="last")
    finished = set(latest.run_id[latest.status.isin(stats.FINISHED)])
    keyed = stats.config_key(latest)
    for (_, r), cid in zip(latest.iterrows(), keyed, strict=True):
        row = r.to_dict()
        cfg = _config(row)
        trial = int(cfg.get("trial", -1))
        if trial < 0 or int(row["seed"]) != int(search["choosing_seed"]):
            continue
        if row["status"] not in stats.FINISHED and row["run_id"] in finished:
            continue
        space = search["spaces"].get(row["optimizer"], {})
        val = float(row["val_top1"]) if stats._present(row, "val_top1") else math.nan
        rows.append({"optimizer": row["optimizer"], "global_batch": int(row["global_batch"]),
                     "epochs": stats.budget_epochs(row), "trial": trial, "run_id": row["run_id"], "config_id": cid,
                     "status": row["status"], "val_top1": val,
                     "top1": float(row["top1"]) if stats._present(row, "top1") else math.nan,
                     "feasible": row["status"] == "complete" and math.isfinite(val),
                     "values": {k: _value(cfg, k) for k in space}, "seed": int(row["seed"])})
    out = pd.DataFrame(rows, columns=cols)
    return out.sort_values([*STUDY_KEYS, "trial"]).reset_index(drop=True)


def chosen(trial_rows: pd.DataFrame, study: dict | None) -> pd.DataFrame:
    """One row per study: the chosen trial (None when every trial is infeasible), its config_id, val_top1 and
    values, ``n_trials`` (the declared N), ``n_run`` (trials with a row), ``n_infeasible`` (declared trials
    without a complete, finite val_top1: diverged, failed, or never finished), and ``boundary``: [(field, "min"
    or "max"), ...] of the chosen values at the end of their range (bench.search.on_boundary)."""
    search = declared(study)
    cols = [*STUDY_KEYS, "trial", "config_id", "val_top1", "values", "n_trials", "n_run", "n_infeasible", "boundary"]
    if search is None or trial_rows.empty:
        return pd.DataFrame(columns=cols)
    out = []
    for (opt, batch, budget), g in trial_rows.groupby(STUDY_KEYS, sort=True):
        n = int(search["trials"].get(opt, len(g)))
        rows = {r.run_id: (r.status, r.val_top1) for r in g.itertuples()}
        pick, _ = protocol.choose([(r, r.run_id) for r in g.itertuples()], rows)
        space = search["spaces"].get(opt, {})
        n_feasible = int(g.feasible.sum())
        entry = {"optimizer": opt, "global_batch": int(batch), "epochs": float(budget), "n_trials": n,
                 "n_run": len(g), "n_infeasible": n - n_feasible, "trial": None, "config_id": None,
                 "val_top1": math.nan, "values": {}, "boundary": []}
        if pick is not None:
            entry.update(trial=int(pick.trial), config_id=pick.config_id, val_top1=float(pick.val_top1),
                         values=dict(pick.values),
                         boundary=[(k, side) for k, v in pick.values.items() if v is not None and k in space
                                   for side in [protocol.on_boundary(space[k], v)] if side])
        out.append(entry)
    return pd.DataFrame(out, columns=cols)


def confirmations(runs: pd.DataFrame, study: dict | None, chosen_rows: pd.DataFrame) -> pd.DataFrame:
    """The finished rows (stats.prepare's) of the chosen trials on the confirmation seeds: the judged runs."""
    search = declared(study)
    if search is None or chosen_rows.empty:
        return runs.iloc[:0]
    prep = stats.prepare(runs, tuple((study or {}).get("tuning_fields") or stats.DEFAULT_TUNING))
    ids = set(chosen_rows.config_id.dropna())
    return prep[prep.config_id.isin(ids) & prep.seed.isin(search["confirm_seeds"])].reset_index(drop=True)


def judged_runs(runs: pd.DataFrame, study: dict | None) -> pd.DataFrame:
    """The rows of ``runs`` (every attempt) of the chosen trials on the confirmation seeds, with ``series = ""``
    so that the figures of a search draw one series per optimizer (its chosen trial at each batch and budget)
    rather than one per trial; ``runs`` itself when the study is no search."""
    search = declared(study)
    if search is None or runs.empty:
        return runs
    chosen_rows = chosen(trials(runs, study), study)
    ids = set(chosen_rows.config_id.dropna())
    keep = stats.config_key(runs).isin(ids).to_numpy() & runs.seed.isin(search["confirm_seeds"]).to_numpy()
    return runs[keep].assign(series="").reset_index(drop=True)


def infeasible_by_batch(chosen_rows: pd.DataFrame) -> list[dict]:
    """Per global batch: declared trials, infeasible ones and their fraction (over every optimizer and budget)."""
    out = []
    for batch, g in chosen_rows.groupby("global_batch", sort=True):
        n, bad = int(g.n_trials.sum()), int(g.n_infeasible.sum())
        out.append({"global_batch": int(batch), "trials": n, "infeasible": bad, "fraction": bad / n if n else math.nan})
    return out
