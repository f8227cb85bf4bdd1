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

import json
import math

import pandas as pd

from bench import config, intervals, results
from bench.datasets import SPECS

FINISHED = results.DONE  # runs that ended as a result
# Fields that change no training: bench.config's, the one rule (bench.config.identity)
NOT_TRAINING = config.NOT_TRAINING
BASELINE, METHOD = "baseline", "method"  # an optimizer's role in a study (optimizers.ROLES)
# Fields a series runs across (a figure's x axis or panels), left out of the labels that tell series apart.
# ("plugins.optimizer": a plug-in optimizer's reference and version, which go with its name.)
POINT_FIELDS = ("optimizer", "plugins.optimizer", "global_batch", "epochs", "steps")
# What optimizers are tuned in when a results folder has no declaration (study.json, bench.study.declare):
# the learning rate and (always) the optimizer's own hyperparameters.
DEFAULT_TUNING = ("base_lr",)
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

    bench.config.identity (the rule run_id and config_id hash) of the row's ``config`` JSON, where the columns
    the runs table records for itself take precedence (optimizer, batch, dataset, model, workers, the
    resolved hyperparameters; without an hparams column, the config's own, as plots never loads Keras) and
    the data enter as the row's ``data_check`` (rows that recorded none are alike in it). A row without a
    config JSON has only those columns and its epoch budget.
    """
    columns = {c: row[c] for c in ("optimizer", "global_batch", "dataset", "model", "workers") if _present(row, c)}
    hparams = None
    if _present(row, "hparams"):
        hparams = json.loads(row["hparams"]) if isinstance(row["hparams"], str) else row["hparams"]
    if not _present(row, "config"):
        fields = {**columns, **({} if hparams is None else {"hparams": hparams}), "epochs": budget_epochs(row)}
        return config.canonical(fields)
    values = {**json.loads(row["config"]), **columns}
    data = str(row["data_check"]) if _present(row, "data_check") else ""
    fields = config.identity(values, columns.get("workers"), data=data,
                             hparams=values.get("hparams", {}) if hparams is None else hparams,
                             **results.row_components(row))  # a plug-in's, from the row: none is imported
    fields.pop("seed", None)
    return fields


def roles(runs: pd.DataFrame, study: dict | None = None) -> dict[str, str]:
    """{optimizer: "baseline" or "method"} of every optimizer of ``runs`` (sorted by name): the sweep's
    declaration (study.json ``roles``, which bench.study wrote with its [claim] applied), else each optimizer's
    latest ``role`` column, else, for rows written before rows recorded a role, the role their built-in had
    (bench.results.LEGACY_ROLES); then the declared claim's own override (its optimizer a method, its baselines
    baselines). Nothing here names an optimizer: the roles are the registry's, as recorded."""
    declared = dict((study or {}).get("roles") or {})
    names = sorted({str(o) for o in runs.optimizer}) if "optimizer" in runs else []
    out = {}
    for name in names:
        if name in declared:
            out[name] = declared[name]
            continue
        written = runs.role[(runs.optimizer == name) & runs.role.notna()] if "role" in runs else []
        out[name] = str(written.iloc[-1]) if len(written) else results.LEGACY_ROLES.get(name, BASELINE)
    claim = (study or {}).get("claim") or {}
    for name in [*(claim.get("baselines") or []), *([claim["baseline"]] if claim.get("baseline") not in (None, "best")
                                                    else [])]:
        if name in out:
            out[name] = BASELINE
    if claim.get("optimizer") in out:
        out[claim["optimizer"]] = METHOD
    return out


def baselines(roles_: dict, study: dict | None = None) -> list[str]:
    """The optimizers the best baseline is chosen among: the declared claim's ``baselines`` when it has them,
    else every optimizer whose role is baseline."""
    declared = ((study or {}).get("claim") or {}).get("baselines")
    return list(declared) if declared else [o for o, r in roles_.items() if r == BASELINE]


def methods(roles_: dict) -> list[str]:
    """The methods under test, each compared with the best baseline: every optimizer whose role is method."""
    return [o for o, r in roles_.items() if r == METHOD]


def budget_epochs(row: dict) -> float:
    """A run's epoch budget: the configured ``epochs`` (from ``config``) unless a step budget was set,
    else the ``epochs`` column (steps actually run x batch / training-set size) rounded to 0.01."""
    cfg = json.loads(row["config"]) if _present(row, "config") else {}
    if "epochs" in cfg and not cfg.get("steps"):
        return float(cfg["epochs"])
    return round(float(row["epochs"]), 2)


_hash = config.hash_fields  # the run id's hash, of ``training_fields`` here


def config_key(runs: pd.DataFrame) -> pd.Series:
    """``config_id`` of every row: the column where it has one (the trainer's, or bench.results' for rows of
    the first identity rule it re-derived), else "derived-" and the hash of ``training_fields`` (rows without
    it that bench.results could not re-derive, e.g. without a config JSON). Same value = seeds of one
    configuration."""
    written = runs.config_id if "config_id" in runs else pd.Series(None, index=runs.index, dtype=object)
    derived = [w if isinstance(w, str) and w else "derived-" + _hash(training_fields(r))
               for w, r in zip(written, runs.to_dict("records"), strict=True)]
    return pd.Series(derived, index=runs.index, name="config_id", dtype=object)


def _flat(fields: dict) -> dict:
    """One level: ``hparams.NAME`` per hyperparameter, ``model_hparams.NAME`` per model hyperparameter and
    ``plugins.KIND`` per plug-in component (its reference and version)."""
    out = {k: v for k, v in fields.items() if k not in ("hparams", "model_hparams", "plugins")}
    out.update({f"hparams.{k}": v for k, v in (fields.get("hparams") or {}).items()})
    out.update({f"model_hparams.{k}": v for k, v in (fields.get("model_hparams") or {}).items()})
    out.update({f"plugins.{k}": v for k, v in (fields.get("plugins") or {}).items()})
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


def prepare(runs: pd.DataFrame, tuning: tuple = DEFAULT_TUNING) -> pd.DataFrame:
    """Finished runs with ``config_id``, ``budget`` (epochs), ``diverged`` (status diverged or no top-1),
    ``label`` (what tells its configuration apart from the folder's others; a ``series`` column, which a report
    sets for the figures of a search, replaces it) and ``setting`` (the same
    without the fields optimizers are tuned in: ``tuning``, the sweep file's declaration, see
    ``bench.study.declare``; every hparams.* field is always one); one row per (configuration, seed), the latest.

    The setting depends on the sweep file only, never on which runs have finished: a field that is the same
    for every optimizer stays part of the setting while one optimizer's runs of it are pending."""
    done = finished(runs)
    if done.empty:
        return done.assign(config_id=[], budget=[], diverged=[], label=[], setting=[])
    records = done.to_dict("records")
    fields = [training_fields(r) for r in records]
    hparams = tuple(sorted({k for f in fields for k in _flat(f) if k.startswith("hparams.")}))
    label = done.series.astype(str).tolist() if "series" in done else labels(fields)  # a report's own grouping
    done = done.assign(config_id=config_key(done).to_numpy(), budget=[budget_epochs(r) for r in records],
                       diverged=(done.status == "diverged") | done.top1.isna(), label=label,
                       setting=labels(fields, POINT_FIELDS + tuple(tuning) + hparams))
    return done.drop_duplicates(["config_id", "seed"], keep="last").reset_index(drop=True)


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


def datasets(runs: pd.DataFrame) -> dict:
    """{data set: runs}, of the rows given (plots.report refuses a folder of several before drawing anything)."""
    return {str(k): int(n) for k, n in runs.dataset.astype(str).value_counts().sort_index().items()}


def _row_train_size(row: dict) -> int:
    if _present(row, "train_size"):  # rows record it (a plug-in data set's is its arrays')
        return int(row["train_size"])
    cfg = json.loads(row["config"]) if _present(row, "config") else {}
    name = str(row["dataset"])
    size = TRAIN_SIZES[name] if name in TRAIN_SIZES else int(cfg.get("synthetic_train_size",
                                                                      config.RunConfig.synthetic_train_size))
    return int(cfg.get("train_subset", 0)) or size - int(cfg.get("validation_size", 0))


def train_size(runs: pd.DataFrame) -> int:
    """The training-set size of the runs' dataset, held-out validation excluded: one for every row, which
    the steps-per-epoch mapping onto the paper needs. ConfigError (one line: the data sets or sizes) for runs of
    several data sets or sizes: a sweep trains one; two in one folder are two studies, not one to average."""
    found = datasets(runs)
    if len(found) != 1:
        raise config.ConfigError(f"runs of one data set expected; got {len(found)}: "
                                 + ", ".join(f"{k} ({n} runs)" for k, n in found.items()))
    sizes = sorted({_row_train_size(r) for r in runs.to_dict("records")})
    if len(sizes) != 1:
        raise config.ConfigError(f"runs of one training-set size expected (synthetic_train_size - validation_size); "
                                 f"got {', '.join(map(str, sizes))}")
    return sizes[0]
