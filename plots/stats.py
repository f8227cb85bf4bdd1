"""Which runs are seeds of one configuration, and the intervals the figures and claims draw.

A *configuration* is every field that changes training except the seed. The trainer writes its hash as
``config_id``; rows of older folders lack it and get it from their ``config`` JSON here (``config_key``),
the one place that decides which runs may be averaged. Figures and claims average over the seeds of one
configuration only, and never across configurations.

Intervals: a mean over seeds gets a 95 % Student t interval, mean +- t(0.975, n - 1) sd / sqrt(n) (none for
one seed); a difference of two configurations' means gets Welch's t interval (bench.intervals, on SciPy).

Diverged runs (status ``diverged``; their top-1 is NaN) are failures of their configuration: it keeps
its seed count and divergence count, and its mean top-1 is undefined (NaN), never the mean of the seeds
that survived.
"""

from __future__ import annotations

import hashlib
import json
import math

import pandas as pd

from bench import config, intervals, results
from bench.datasets import SPECS

FINISHED = results.DONE  # runs that ended as a result
# Fields that change no training (bench.config.NOT_TRAINING; plots reads only the results tables, so the
# list is repeated here and tests/test_plots.py checks the two agree).
NOT_TRAINING = ("sweep", "output_dir", "log_every_steps", "checkpoint_every_epochs", "eval_every_epochs",
                "eval_batch", "target_top1")
# Fields a series runs across (a figure's x axis or panels), left out of the labels that tell series apart.
POINT_FIELDS = ("optimizer", "global_batch", "epochs", "steps")
# What one tunes per optimizer: the learning rate and the optimizer's own hyperparameters, and any field
# whose values differ between optimizers (a sweep's [optimizer_overrides.NAME], see ``tuning_keys``).
TUNING_FIELDS = ("base_lr", "hparams")
# training-set sizes, for the steps-per-epoch mapping between a profile and the paper
TRAIN_SIZES = {name: spec.train_size for name, spec in SPECS.items() if name != "synthetic"}


# ---- Student t: bench.intervals (SciPy) ------------------------------------------------------------
t_quantile, mean_ci, welch = intervals.t_quantile, intervals.mean_ci, intervals.welch


def verdict(low: float | None, high: float | None) -> str:
    """``holds`` when the gain's interval is above 0, ``fails`` when below, else ``inconclusive``."""
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return "inconclusive"
    return "holds" if low > 0 else "fails" if high < 0 else "inconclusive"


# ---- configurations --------------------------------------------------------------------------------


def finished(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs that ended as a result (complete or diverged), the latest row of each run_id."""
    done = runs[runs.status.isin(FINISHED)]
    return done.drop_duplicates("run_id", keep="last").reset_index(drop=True)


def _present(row: dict, column: str) -> bool:
    value = row.get(column)
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and value is not pd.NA


def training_fields(row: dict) -> dict:
    """The fields of one runs row that change training, seed excluded, canonical (numbers as floats).

    From the row's ``config`` JSON without the fields that change no training; the columns the runs
    table records for itself (optimizer, batch, dataset, model, workers, the resolved hyperparameters)
    take precedence, and ``workers`` is added (BatchNorm statistics are per worker).
    """
    cfg = json.loads(row["config"]) if _present(row, "config") else {}
    fields = {k: v for k, v in cfg.items() if k not in NOT_TRAINING and k != "seed"}
    for column in ("optimizer", "global_batch", "dataset", "model", "workers"):
        if _present(row, column):
            fields[column] = row[column]
    if _present(row, "hparams"):
        fields["hparams"] = json.loads(row["hparams"]) if isinstance(row["hparams"], str) else row["hparams"]
    if "epochs" not in fields and "steps" not in fields:
        fields["epochs"] = budget_epochs(row)
    return config.canonical(fields)


def budget_epochs(row: dict) -> float:
    """A run's epoch budget: the configured ``epochs`` (from ``config``) unless a step budget was set,
    else the ``epochs`` column (steps actually run x batch / training-set size) rounded to 0.01."""
    cfg = json.loads(row["config"]) if _present(row, "config") else {}
    if "epochs" in cfg and not cfg.get("steps"):
        return float(cfg["epochs"])
    return round(float(row["epochs"]), 2)


def _hash(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def config_key(runs: pd.DataFrame) -> pd.Series:
    """``config_id`` of every row: the trainer's column where it has one, else the hash of
    ``training_fields`` (old folders). Same value = seeds of one configuration."""
    written = runs.config_id if "config_id" in runs else pd.Series(None, index=runs.index, dtype=object)
    derived = [w if isinstance(w, str) and w else "derived-" + _hash(training_fields(r))
               for w, r in zip(written, runs.to_dict("records"), strict=True)]
    return pd.Series(derived, index=runs.index, name="config_id", dtype=object)


def _flat(fields: dict) -> dict:
    out = {k: v for k, v in fields.items() if k != "hparams"}
    out.update({f"hparams.{k}": v for k, v in (fields.get("hparams") or {}).items()})
    return out


def _fmt(value) -> str:
    if value is _MISSING:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


_MISSING = object()


def labels(fields: list[dict], skip: tuple = POINT_FIELDS) -> list[str]:
    """Per configuration: ``key=value`` of the fields that differ between the configurations (hparams
    only between configurations of one optimizer; ``skip`` never), e.g. "base_lr=0.2, bn_momentum=0.9"."""
    flat = [_flat(f) for f in fields]
    keys = sorted({k for f in flat for k in f} - set(skip))

    def differs(group):
        return [k for k in keys if len({json.dumps(f.get(k, "<missing>"), sort_keys=True) for f in group}) > 1]

    common = [k for k in differs(flat) if not k.startswith("hparams.")]
    per_opt = {}
    for f in flat:
        opt = f.get("optimizer")
        if opt not in per_opt:
            per_opt[opt] = [k for k in differs([g for g in flat if g.get("optimizer") == opt])
                            if k.startswith("hparams.")]
    return [", ".join(f"{k}={_fmt(f.get(k, _MISSING))}" for k in common + per_opt[f.get("optimizer")])
            for f in flat]


def prepare(runs: pd.DataFrame) -> pd.DataFrame:
    """Finished runs with ``config_id``, ``budget`` (epochs), ``diverged`` (status diverged or no top-1),
    ``label`` (what tells its configuration apart from the folder's others) and ``setting`` (the same
    without the tuning fields: base_lr and hparams); one row per (configuration, seed), the latest."""
    done = finished(runs)
    if done.empty:
        return done.assign(config_id=[], budget=[], diverged=[], label=[], setting=[])
    records = done.to_dict("records")
    fields = [training_fields(r) for r in records]
    done = done.assign(config_id=config_key(done).to_numpy(), budget=[budget_epochs(r) for r in records],
                       diverged=(done.status == "diverged") | done.top1.isna(), label=labels(fields),
                       setting=labels(fields, POINT_FIELDS + tuning_keys(fields)))
    return done.drop_duplicates(["config_id", "seed"], keep="last").reset_index(drop=True)


def tuning_keys(fields: list[dict]) -> tuple:
    """The fields an optimizer is tuned in: base_lr, every hparams.*, and each field whose set of values
    differs between optimizers (an optimizer's own fields, e.g. its learning-rate grid or init_lr). The rest
    (fields every optimizer was run at alike, e.g. a bn_momentum axis) make the *setting* a claim holds in."""
    flat = [_flat(f) for f in fields]
    keys = {k for f in flat for k in f} - set(POINT_FIELDS)
    per_opt: dict = {}
    for f in flat:
        for k in keys:
            per_opt.setdefault(k, {}).setdefault(f.get("optimizer"), set()).add(json.dumps(f.get(k), sort_keys=True))
    own = {k for k, sets in per_opt.items() if len({frozenset(v) for v in sets.values()}) > 1}
    return tuple(sorted(own | {"base_lr"} | {k for k in keys if k.startswith("hparams.")}))


def summarize(prepared: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: optimizer, global_batch, epochs (budget), label, setting, n_seeds,
    n_diverged, top1_mean / top1_half (95 % Student t over seeds) / top1_low / top1_high (NaN when a seed
    diverged), top1_values, val_top1_mean (NaN unless every seed has one), base_lr, seeds, git_commits."""
    rows = []
    for cid, g in prepared.groupby("config_id", sort=False):
        first = g.iloc[0]
        n_div = int(g.diverged.sum())
        mean, half, _ = mean_ci(g.top1) if n_div == 0 else (math.nan, math.nan, 0)
        val = g.val_top1.astype(float) if "val_top1" in g else pd.Series([math.nan])
        commits = sorted(set(g.git_commit.dropna().astype(str))) if "git_commit" in g else []
        rows.append({"config_id": cid, "optimizer": first.optimizer, "global_batch": int(first.global_batch),
                     "epochs": float(first.budget), "label": first.label, "setting": first.setting,
                     "n_seeds": len(g), "n_diverged": n_div, "top1_mean": mean, "top1_half": half,
                     "top1_low": mean - half, "top1_high": mean + half, "top1_values": g.top1.tolist(),
                     "val_top1_mean": float(val.mean()) if n_div == 0 and val.notna().all() else math.nan,
                     "base_lr": _base_lr(dict(first)), "seeds": sorted(int(s) for s in g.seed),
                     "steps": int(g.steps.max()), "git_commits": commits})
    return pd.DataFrame(rows)


def _base_lr(row: dict) -> float:
    if _present(row, "base_lr"):
        return float(row["base_lr"])
    cfg = json.loads(row["config"]) if _present(row, "config") else {}
    return float(cfg.get("base_lr", math.nan))


def shared_budgets(prepared: pd.DataFrame) -> list[float]:
    """The epoch budgets run at every global batch; if none is, the most common one (the budget run at
    the most batches, then with the most runs, then the largest)."""
    if prepared.empty:
        return []
    at = prepared.groupby("budget").global_batch.nunique()
    every = sorted(at[at == prepared.global_batch.nunique()].index)
    if every:
        return [float(b) for b in every]
    count = prepared.groupby("budget").size()
    return [float(max(at.index, key=lambda b: (at[b], count[b], b)))]


def series_name(optimizer: str, label: str) -> str:
    return f"{optimizer}, {label}" if label else optimizer


def train_size(runs: pd.DataFrame) -> int:
    """The training-set size of the runs' dataset (one dataset per sweep), held-out validation excluded."""
    datasets = runs.dataset.unique()
    if len(datasets) != 1:
        raise ValueError(f"runs of one dataset expected; got {', '.join(map(str, datasets))}")
    cfg = json.loads(runs.config.iloc[0]) if "config" in runs else {}
    size = TRAIN_SIZES[datasets[0]] if datasets[0] in TRAIN_SIZES else int(cfg["synthetic_train_size"])
    return size - int(cfg.get("validation_size", 0))
