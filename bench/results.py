"""The Parquet store: one immutable file per run attempt, read back as two tables (runs, history).

Layout of a sweep folder ``<dir>`` (``<output_dir>/<sweep>``):

    <dir>/runs/<run_id>-a<attempt>.parquet       one row: the run's result and provenance
    <dir>/history/<run_id>-a<attempt>.parquet    that attempt's logged steps and evaluations
    <dir>/runs.parquet, <dir>/history.parquet    legacy single files of older folders: read, never written

``append_run`` writes each file once: to a temporary file in the same folder (its name starts with ".",
readers skip it), flush + fsync, then ``os.link`` to the final name, which fails if the name exists (the
write then takes the next attempt number), then fsync of the folder. History first, then the runs row, so
a runs row always has its history. Nothing is ever rewritten, so no lock is needed and a killed writer
leaves only a temporary file behind. A write that fails raises ``WriteError`` and publishes nothing.

On a shared file system (NFS): a client may resend a LINK whose reply was lost and report EEXIST for the
link that succeeded; after EEXIST the write compares the final name with its temporary file
(``os.path.samestat``) and, when they are one file, counts it as published (else the name is another
writer's and it takes the next attempt number). A folder fsync that the file system refuses (EINVAL,
ENOTSUP/EOPNOTSUPP, EBADF: some NFS and FUSE mounts) is skipped, the data file itself having been fsynced,
with one warning per process naming the folder and the errno; any other error fails the write. A
directory listing may lag behind files other hosts published (attribute and lookup caches), so
``completed_ids`` (listing based) can miss a run: a sweep re-checks each run with ``is_completed`` right
after claiming it, and that looks the run's files up by name (``<run_id>-a1.parquet``, ``-a2``, ...), not
by listing the folder.

``load_runs`` / ``load_history`` read every published file (legacy ones included) as one pyarrow dataset
whose schema is the union of the files' schemas (a column a file lacks is null/NaN there). A file that
cannot be read (truncated, not Parquet, no string ``run_id`` column, a type clashing with the others) is
named in a warning and skipped; the rest is returned.

Run ids follow a rule (bench.config.identity, ``ID_VERSION``) that rows record as ``id_version``. On reading,
every row gets today's run_id and config_id from its config JSON (``_migrate``): rows of the first rule (no
id_version; it hashed the data's folder and eval_batch) and rows written before a RunConfig field existed
(it enters at its default, which is what they ran) keep their old id as ``legacy_run_id``, and their history
follows them (``load_history``), so a sweep finds them finished; their files keep their names, never rewritten.
``run_rows`` / ``is_completed`` look files up by the current id, so they see only rows written under it (a
sweep reads ``load_runs`` first, which has the others).

Rows this version cannot read faithfully are refused, not mapped: a row written under an id rule newer than
``config.ID_VERSION``, whose config JSON has fields this RunConfig does not know (a newer version's: mapping it
onto today's fields would drop them and give it the id of a run that trained otherwise, which a sweep would
then count as done), or of a runs-table schema newer than ``RUNS_SCHEMA``. Every reader (``load_runs``,
``load_history``, ``completed_ids``, ``run_rows``, ``is_completed``) raises ``NewerVersionError`` (a
ConfigError: one line, exit 2) naming the file; nothing is counted, nothing written (``check_readable``).

In a notebook::

    from bench.results import load_runs, load_history
    runs = load_runs("results/smoke")
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import warnings
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from bench import atomic, config
from bench.datasets import ABSENT, data_check
from bench.leases import check_run_id

RUNS = "runs.parquet"  # legacy single files (older folders): read, never written
HISTORY = "history.parquet"
RUNS_DIR = "runs"  # one file per run attempt
HISTORY_DIR = "history"

# The runs table's columns, in order (extra columns are kept after these).
RUN_COLUMNS = [
    "run_id", "config_id", "attempt", "sweep", "status", "error", "optimizer", "hparams", "dataset", "model",
    "image_size", "bn_eval", "global_batch", "workers", "per_worker_batch", "accumulation", "epochs", "steps",
    "resumed_from_step", "seed", "peak_lr", "base_lr", "final_train_loss", "top1", "top5", "val_top1",
    "wall_time_s", "train_time_s", "compile_time_s", "eval_time_s", "images_per_s", "images_per_s_ci95",
    "target_top1", "steps_to_target", "time_to_target_s", "started_at", "host", "tf_version",
    "keras_version", "horovod_version", "mpi_version", "git_commit", "id_version", "data_check", "schema_version",
    "config",
]
# The runs table's schema, written here only (issue 26): every column a runs row may carry is RUN_COLUMNS (the
# order they are stored in) or one of these, kept after them. bench.train.new_row and Measured.row and
# bench.attempts.crash_row write rows of these names alone, and results/README.md documents each:
# tests/test_results.py fails on a row column this list does not name, so a new column is added here first.
RUN_EXTRA_COLUMNS = [
    "job", "train_size", "noise_scale", "role", "plugins", "model_hparams",
    *(f"{kind}_{what}" for kind in ("optimizer", "model", "dataset")
      for what in ("origin", "reference", "version", "source_hash")),
    "cpu_model", "cpu_count", "cpus_usable", "memory_gb", "python_version", "numpy_version",  # provenance()
]
RUN_SCHEMA = (*RUN_COLUMNS, *RUN_EXTRA_COLUMNS)
# What re-deriving the ids of a row written under an older identity rule reads (``_migrate``).
_IDENTITY_COLUMNS = ["run_id", "config_id", "id_version", "data_check", "workers", "hparams", "plugins",
                     "model_hparams", "config"]
HISTORY_COLUMNS = ["run_id", "attempt", "step", "epoch", "loss", "lr"]  # an empty history's columns
# The statuses of a runs row, defined here only. crashed: an attempt whose process died without a row,
# recorded by the next claimant (bench.attempts).
STATUSES = ("complete", "diverged", "failed", "crashed")
DONE = ("complete", "diverged")  # a result: a sweep does not train these again
RETRIED = ("failed", "crashed")  # not a result: the next invocation tries the run again (bench.attempts)

_NAME = re.compile(r"(.+)-a(\d+)\.parquet")

# The runs table's schema version, written by ``append_run`` into every row as ``schema_version``; rows without
# it predate it (schema 1). Bump it when a column changes meaning, so that an older reader refuses such rows
# rather than misreading them (``NewerVersionError``); a new column alone needs no bump (schemas may grow).
RUNS_SCHEMA = 1
# RunConfig fields that earlier versions had and this one removed (name -> the commit that removed it): rows
# carrying them are old, not newer, and read as usual (bench.config.identity ignores them). ``git log -p --
# bench/config.py`` up to e5d1bdb: every field added since 1689eba is still there, none removed.
REMOVED_FIELDS: dict[str, str] = {}
_NEWER = "written by a newer nlcg-bench: upgrade, or move the file out"
# What the refusal of rows from a newer version reads (``_refuse_newer``).
_VERSION_COLUMNS = ["run_id", "attempt", "id_version", "schema_version", "config"]


# The roles of the optimizers rows were written for before rows recorded a ``role`` column: the registry's roles
# of the built-ins of that time (optimizers.REGISTRY; tests/test_plugins.py checks they agree), a fact about old
# rows that plots reads only when neither the folder's study.json nor the rows say (plots.stats.roles).
LEGACY_ROLES = {"sgd": "baseline", "momentum": "baseline", "rmsprop": "baseline", "lamb": "baseline",
                "lars": "baseline", "nlcg-fr": "method", "nlcg-pr": "method"}


class WriteError(OSError):
    """A results file could not be written (disk full, file too large, permission); nothing was published."""


class NewerVersionError(config.ConfigError):
    """A results file holds rows this version cannot read faithfully (a newer id rule, config fields or
    runs-table schema): the one-line message names the file, what it holds and what this version reads."""


# ---- writing ----------------------------------------------------------------------------------------


def _parquet_bytes(df: pd.DataFrame) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), sink)
    return sink.getvalue().to_pybytes()


# errnos of a folder fsync that the file system does not support (some NFS and FUSE mounts)
def _attempt_names(folder: Path, run_id: str) -> list[str]:
    with contextlib.suppress(FileNotFoundError):
        return [n for n in os.listdir(folder) if (m := _NAME.fullmatch(n)) and m.group(1) == run_id]
    return []


def _legacy(directory: Path, name: str) -> list[Path]:
    return [directory / name] if (directory / name).is_file() else []


def _legacy_rows(directory: Path, run_id: str) -> int:
    table = _read(_legacy(directory, RUNS), ["run_id"], run_id)
    return 0 if table is None else table.num_rows


def next_attempt(directory: str | Path, run_id: str) -> int:
    """The attempt number the next ``append_run`` of ``run_id`` takes (when no other writer gets there first: one
    process trains a run, bench.leases): what a run's TensorBoard folder and log file are named after."""
    directory = Path(directory)
    return 1 + _legacy_rows(directory, check_run_id(run_id)) + len(_attempt_names(directory / RUNS_DIR, run_id))


def append_run(directory: str | Path, run: dict, history: list[dict]) -> Path:
    """Store one finished run attempt: its history rows, then its runs row (one new file each); returns the
    runs file's path.

    ``run["status"]`` must be one of STATUSES. The row gets ``attempt`` = 1 + the rows its run_id already
    has (a failed run retried by a sweep is attempt 2); history rows get the same ``attempt`` and the
    run's ``run_id``. Reads no other run's file (it lists names to count attempts; a legacy runs.parquet
    is read for its run_id column). Raises WriteError (an OSError) naming the folder and the cause when the
    disk refuses the write; then nothing is published and existing files are untouched.
    """
    directory = Path(directory)
    if run.get("status") not in STATUSES:
        raise ValueError(f"status = {run.get('status')!r}; valid: {', '.join(STATUSES)}")
    run_id = check_run_id(run.get("run_id"))
    runs_dir, history_dir = directory / RUNS_DIR, directory / HISTORY_DIR
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        history_dir.mkdir(parents=True, exist_ok=True)
        attempt = 1 + _legacy_rows(directory, run_id) + len(_attempt_names(runs_dir, run_id))
        while True:
            name = f"{run_id}-a{attempt}.parquet"
            run_df = pd.DataFrame([{**run, "attempt": attempt, "schema_version": RUNS_SCHEMA}])
            run_df = run_df[[c for c in RUN_COLUMNS if c in run_df] + [c for c in run_df if c not in RUN_COLUMNS]]
            hist_path = None
            if history:
                hist_df = pd.DataFrame(history).assign(run_id=run_id, attempt=attempt)
                hist_path = atomic.publish_once(history_dir, name, _parquet_bytes(hist_df))
                if hist_path is None:  # left by a writer killed between its two files, or a racing one
                    attempt += 1
                    continue
            try:
                published = atomic.publish_once(runs_dir, name, _parquet_bytes(run_df))
            except BaseException:
                if hist_path:
                    os.unlink(hist_path)
                raise
            if published:
                return published
            if hist_path:
                os.unlink(hist_path)
            attempt += 1
    except WriteError:
        raise
    except OSError as e:
        code = errno.errorcode.get(e.errno, "") if e.errno else ""
        err = WriteError(f"cannot write results to {directory}: {e.strerror or e}" + (f" ({code})" if code else ""))
        err.errno = e.errno
        raise err from e


# ---- reading ----------------------------------------------------------------------------------------


def _skip(path, reason) -> None:
    reason = str(reason).strip().splitlines()[0] if str(reason).strip() else type(reason).__name__
    warnings.warn(f"skipping unreadable results file {path}: {reason}", stacklevel=3)


def _files(folder: Path, run_id: str | None = None) -> list[Path]:
    """Published attempt files of ``folder`` (temp files skipped), oldest first (mtime, then name)."""
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    keep = []
    for e in entries:
        m = _NAME.fullmatch(e.name)
        if m and not e.name.startswith(".") and (run_id is None or m.group(1) == run_id):
            with contextlib.suppress(FileNotFoundError):
                keep.append((e.stat().st_mtime_ns, e.name, Path(e.path)))
    return [p for *_, p in sorted(keep)]


def _schema(path: Path) -> pa.Schema:
    schema = pq.read_schema(path).remove_metadata()
    if "run_id" not in schema.names or not pa.types.is_string(schema.field("run_id").type) and not \
            pa.types.is_large_string(schema.field("run_id").type):
        raise ValueError(f"wrong schema: no string column run_id (columns: {', '.join(schema.names)})")
    versions = [n for n in ("schema_version", "id_version") if n in schema.names]
    if any(not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t))
           for t in (schema.field(n).type for n in versions)):  # a version that is not a number: not ours to read
        why = _newer(pq.read_table(path, columns=["run_id", *versions]).slice(0, 1).to_pylist()[0])
        if why:  # else ("2" as a string) the type clash with the others' numbers skips it as unreadable
            raise NewerVersionError(f"{path}: {why}: {_NEWER}")
    return schema


def _read(paths: list[Path], columns: list[str] | None = None, run_id: str | list | None = None) -> pa.Table | None:
    """The rows of ``paths`` (in that order) as one table over the union of their schemas; None if none.

    Files that cannot be read are named in a warning and skipped. ``columns`` keeps only those that exist;
    ``run_id`` (one id or a list) keeps only those runs' rows.
    """
    schema, good = None, []
    for path in paths:
        try:
            s = _schema(path)
            schema = s if schema is None else pa.unify_schemas([schema, s], promote_options="permissive")
        except NewerVersionError:
            raise
        except (OSError, ValueError, TypeError, pa.ArrowException) as e:
            _skip(path, e)
            continue
        good.append(path)
    if not good:
        return None
    columns = None if columns is None else [c for c in columns if c in schema.names]
    where = None if run_id is None else ds.field("run_id").isin([run_id] if isinstance(run_id, str) else run_id)
    dataset = ds.dataset([str(p) for p in good], schema=schema, format="parquet")
    try:
        return dataset.to_table(columns=columns, filter=where)
    except (OSError, ValueError, TypeError, pa.ArrowException):
        pass  # a footer that reads over data that does not: read file by file to name the bad one
    tables = []
    for fragment in dataset.get_fragments():
        try:
            tables.append(fragment.to_table(schema=schema, columns=columns, filter=where))
        except (OSError, ValueError, TypeError, pa.ArrowException) as e:
            _skip(fragment.path, e)
    return pa.concat_tables(tables) if tables else None


def _known(value, newest: int) -> bool:
    """Whether a row's ``id_version`` or ``schema_version`` is absent (an older writer's) or one of 1..newest."""
    if value is None or value is pd.NA or isinstance(value, float) and math.isnan(value):
        return True
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return number.is_integer() and 1 <= number <= newest


def _unknown_fields(text) -> list[str]:
    """The fields of a config JSON that this RunConfig neither has nor had (REMOVED_FIELDS)."""
    if not isinstance(text, str) or not text.startswith("{"):
        return []
    try:
        values = json.loads(text)
    except ValueError:
        return []
    return sorted(set(values) - set(config.FIELDS) - set(REMOVED_FIELDS)) if isinstance(values, dict) else []


def _newer(row: dict) -> str | None:
    """What makes one runs row (as written, before ``_migrate``) a newer version's, or None."""
    if not _known(row.get("schema_version"), RUNS_SCHEMA):
        return f"runs-table schema_version {row['schema_version']!r}; this nlcg-bench reads 1..{RUNS_SCHEMA}"
    if not _known(row.get("id_version"), config.ID_VERSION):
        return (f"run {row.get('run_id')} was written under id rule id_version = {row['id_version']!r}; this "
                f"nlcg-bench reads rules 1..{config.ID_VERSION}")
    unknown = _unknown_fields(row.get("config"))
    if unknown:
        return (f"run {row.get('run_id')}'s config has field(s) {', '.join(unknown)} that this nlcg-bench's RunConfig "
                "does not know (bench/config.py)")
    return None


def _refuse_newer(df: pd.DataFrame, paths: list[Path], directory: Path) -> None:
    """Raise NewerVersionError naming the first file whose rows ``_newer`` refuses (and how many more there are).

    Why refuse rather than skip: such a row maps onto a run id of this version that trained otherwise (its
    unknown fields dropped, or its id rule read as the first), so a sweep would count that run as done and a
    report would average it with runs it does not belong with; skipping it would train the run again beside a
    result the folder already holds. The user decides: upgrade, or move the file out of the folder."""
    if not len(df) or not {"schema_version", "id_version", "config"} & set(df.columns):
        return
    by_name = {p.name: p for p in paths}
    legacy = next((p for p in paths if p.name == RUNS), directory / RUNS_DIR)
    refused = {}
    for row in df[[c for c in _VERSION_COLUMNS if c in df]].to_dict("records"):
        why = _newer(row)
        if why is None:
            continue
        try:
            name = f"{row.get('run_id')}-a{int(row.get('attempt'))}.parquet"
        except (TypeError, ValueError):  # no attempt (a legacy row): its file is the legacy one
            name = ""
        refused.setdefault(by_name.get(name, legacy), why)
    if refused:
        (path, why), *more = refused.items()
        also = f" ({len(more)} more file(s) refused alike, e.g. {more[0][0].name})" if more else ""
        raise NewerVersionError(f"{path}: {why}: {_NEWER}{also}")


def check_readable(directory: str | Path) -> None:
    """Raise NewerVersionError when a runs row of ``directory`` is a newer version's (``_refuse_newer``); what a
    sweep can call before it declares or trains anything. Unreadable files are left to the loaders' warning."""
    directory = Path(directory)
    paths = _legacy(directory, RUNS) + _files(directory / RUNS_DIR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = _read(paths, _VERSION_COLUMNS)
    if table is not None:
        _refuse_newer(table.to_pandas(), paths, directory)


def _legacy_data(values: dict, data_dirs: dict | None) -> str:
    """The data check of a row written before rows recorded one: the data in the row's own folder if they are
    still there, else in the folder ``data_dirs`` names for its data set (the sweep's), else ABSENT."""
    name = values.get("dataset", config.RunConfig.dataset)
    check = data_check(name, values.get("data_dir", ""))
    if check == ABSENT and data_dirs and name in data_dirs:
        check = data_check(name, data_dirs[name])
    return check


def row_components(row) -> dict:
    """What bench.config.identity needs of a row's plug-ins, from the row alone (no plug-in imported): its
    ``plugins`` and resolved ``model_hparams`` columns (JSON); rows without them are of built-ins ({})."""
    def read(column):
        value = row.get(column)
        return json.loads(value) if isinstance(value, str) and value else None

    plugins, model_hparams = read("plugins"), read("model_hparams")
    return {"plugins": plugins or {}, **({"model_hparams": model_hparams} if model_hparams is not None else {})}


def _migrate(df: pd.DataFrame, data_dirs: dict | None) -> pd.DataFrame:
    """Every row's ids under the current rule (bench.config.identity of its ``config`` JSON, resolved
    ``hparams`` and ``workers``; the data's check the row recorded, or for rows of the first rule, which hashed
    the data's folder and eval_batch, ``_legacy_data``). A row whose stored run_id differs (the first rule, or
    a field added to RunConfig since: it enters at its default, which is what the row ran) gets the current
    ids and keeps the one it was written under as ``legacy_run_id``, so a sweep finds it finished and its
    history (``load_history``) joins. Files are left as they are. A row without a readable config keeps its ids."""
    readable = _readable(df)
    return _with_moved(df, _moved(df, readable, data_dirs)) if readable.any() else df


def _readable(df: pd.DataFrame) -> pd.Series:
    """Which rows have a config to re-derive ids from."""
    if not len(df) or "config" not in df:
        return pd.Series(False, index=df.index)
    return df.config.map(lambda c: isinstance(c, str) and c.startswith("{"))


_MOVED = ["legacy_run_id", "run_id", "config_id", "data_check"]


def _moved(df: pd.DataFrame, readable: pd.Series, data_dirs: dict | None) -> list[tuple[int, list]]:
    """(row position, [legacy_run_id, run_id, config_id, data_check]) of the rows whose ids the current rule
    changes (``_migrate``)."""
    moved = []
    for position in (readable.to_numpy()).nonzero()[0]:
        row = df.iloc[position]
        try:
            values = json.loads(row.config)
            hparams = json.loads(row.hparams) if isinstance(row.get("hparams"), str) else None
            workers = int(row.workers)
            written = isinstance(row.get("data_check"), str) and row.get("id_version") == config.ID_VERSION
            check = row.data_check if written else _legacy_data(values, data_dirs)
            fields = config.identity(values, workers, hparams=hparams, data=check, **row_components(row))
        except (ValueError, TypeError, KeyError, AttributeError):
            continue
        run_id = config.hash_fields(fields)
        if run_id != row.run_id:
            moved.append((int(position), [row.run_id, run_id, config.config_hash(fields), check]))
    return moved


def _with_moved(df: pd.DataFrame, moved: list[tuple[int, list]]) -> pd.DataFrame:
    """``df`` (some row has a readable config) with a ``legacy_run_id`` column and the ``moved`` rows' ids."""
    df = df.assign(legacy_run_id=None, **{c: df[c] if c in df else None for c in ("config_id", "data_check")})
    for position, values in moved:
        df.loc[df.index[position], _MOVED] = values
    return df


def _with_ids(columns: list[str] | None) -> list[str] | None:
    """What reading ``columns`` of the runs table reads: those, and what re-deriving ids and refusing rows needs."""
    return None if columns is None else list(dict.fromkeys([*columns, *_IDENTITY_COLUMNS, *_VERSION_COLUMNS]))


def _runs(directory: Path, columns: list[str] | None = None, data_dirs: dict | None = None) -> pd.DataFrame:
    paths = _legacy(directory, RUNS) + _files(directory / RUNS_DIR)
    table = _read(paths, _with_ids(columns))
    if table is None:
        return pd.DataFrame(columns=RUN_COLUMNS if columns is None else columns)
    df = table.to_pandas()
    _refuse_newer(df, paths, directory)
    return _ordered(_migrate(df, data_dirs), columns)


def _ordered(df: pd.DataFrame, columns: list[str] | None) -> pd.DataFrame:
    """The runs table as the loaders give it: by ``started_at`` then ``attempt``, RUN_COLUMNS first."""
    keys = [k for k in ("started_at", "attempt") if k in df]
    if keys:  # legacy rows first, then files by publication; a run's latest attempt ends up last
        df = df.sort_values(keys, kind="stable", na_position="last")
    if columns is not None:
        df = df[[c for c in [*columns, "legacy_run_id"] if c in df]]
    df = df[[c for c in RUN_COLUMNS if c in df] + [c for c in df if c not in RUN_COLUMNS]]
    return df.reset_index(drop=True)


def load_runs(directory: str | Path, data_dirs: dict | None = None) -> pd.DataFrame:
    """Every run attempt of a sweep folder, one row each, ordered by ``started_at`` then ``attempt``.

    The columns are RUN_COLUMNS that some row has, then any others. Empty frame with RUN_COLUMNS if the
    folder holds no run (or does not exist). Unreadable files are named in a warning and skipped. Rows
    written under the first identity rule get the current run_id and config_id (``_migrate``; then a
    ``legacy_run_id`` column has their old run_id); ``data_dirs`` ({data set: data_dir}, a sweep's) says where
    their data are when the folder their config names holds none. A row of a newer nlcg-bench raises
    NewerVersionError (module docstring), as in every reader here.
    """
    return _runs(Path(directory), data_dirs=data_dirs)


class RunsReader:
    """``load_runs`` of one folder, kept between calls so that a call reads only what is new.

    A sweep's chief reads its folder before each run it claims; with N runs finished, reading every file
    again makes a sweep of N runs read O(N^2) files. This reader keeps each file's rows (and the ids
    ``_migrate`` gives them) under the file's (path, size, mtime_ns); a call lists the folder and reads only the
    files listed after those it kept. Anything else (a kept file changed or gone, or one published before a
    kept one in the listing's order, whatever process wrote it) forgets everything and reads the folder
    again. Either way ``load()`` equals ``load_runs(directory, data_dirs)`` (tests/test_store_incremental.py),
    except that an unreadable file is named in a warning once, when it is first read, not at every call;
    ``load(columns)`` equals the column-limited read the other loaders do. ``files_read``: how many files
    the last call read."""

    def __init__(self, directory: str | Path, data_dirs: dict | None = None):
        self.directory, self.data_dirs = Path(directory), data_dirs
        self._forget()

    def _forget(self) -> None:
        self._seen: list[tuple[str, int, int]] = []  # (path, size, mtime_ns) of every file read, in order
        self._table: pa.Table | None = None  # their rows, over the union of their schemas
        self._schema: pa.Schema | None = None  # that union, grown as files are read
        self._rows = 0
        self._moved: list[tuple[int, list]] = []  # rows whose ids _migrate changes (position in _table)
        self._readable = False  # some row has a config (then every row gets a legacy_run_id column)
        self.files_read = 0

    def _listing(self) -> list[tuple[str, int, int]]:
        """(path, size, mtime_ns) of the files ``_runs`` reads, in its order (a file gone meanwhile is left out)."""
        out = []
        for path in _legacy(self.directory, RUNS) + _files(self.directory / RUNS_DIR):
            with contextlib.suppress(FileNotFoundError):
                st = path.stat()
                out.append((str(path), st.st_size, st.st_mtime_ns))
        return out

    def _add(self, path: Path) -> pa.Table | None:
        """One more file's rows (in the listing's order), read as ``_read`` reads them: a file that cannot be
        read, or whose schema clashes with the files before it, is named in a warning and skipped (None)."""
        try:
            schema = _schema(path)
            unified = schema if self._schema is None else pa.unify_schemas(
                [self._schema, schema], promote_options="permissive")
            table = pq.read_table(path).replace_schema_metadata(None)
        except NewerVersionError:
            raise
        except (OSError, ValueError, TypeError, pa.ArrowException) as e:
            _skip(path, e)
            return None
        df = table.to_pandas()
        _refuse_newer(df, [path], self.directory)
        readable = _readable(df)
        self._moved += [(self._rows + i, ids) for i, ids in _moved(df, readable, self.data_dirs)]
        self._readable = self._readable or bool(readable.any())
        self._schema, self._rows = unified, self._rows + table.num_rows
        return table

    def load(self, columns: list[str] | None = None) -> pd.DataFrame:
        listing = self._listing()
        kept = len(self._seen)
        if listing[:kept] != self._seen:
            self._forget()
            kept = 0
        try:
            new = [t for t in (self._add(Path(path)) for path, *_ in listing[kept:]) if t is not None]
        except BaseException:  # a refused row (NewerVersionError) or an interrupt: nothing half-kept
            self._forget()
            raise
        if new:  # one concatenation per call: the union's types, its columns in the order they appeared
            tables = ([] if self._table is None else [self._table]) + new
            self._table = pa.concat_tables(tables, promote_options="permissive").select(
                self._schema.names).cast(self._schema).combine_chunks()
        self._seen, self.files_read = listing, len(listing) - kept
        if self._table is None:
            return pd.DataFrame(columns=RUN_COLUMNS if columns is None else columns)
        read = _with_ids(columns)
        table = self._table if read is None else self._table.select([c for c in read if c in self._schema.names])
        df = table.to_pandas()
        return _ordered(_with_moved(df, self._moved) if self._readable else df, columns)


_readers: dict[tuple, RunsReader] = {}


def runs_reader(directory: str | Path, data_dirs: dict | None = None) -> RunsReader:
    """This process's RunsReader of ``directory`` (one per folder and ``data_dirs``)."""
    key = (str(Path(directory).resolve()), json.dumps(data_dirs or {}, sort_keys=True, default=str))
    return _readers.setdefault(key, RunsReader(directory, data_dirs))


def load_history(directory: str | Path, run_id: str | None = None, all_attempts: bool = False,
                 data_dirs: dict | None = None) -> pd.DataFrame:
    """Logged steps (and eval rows, where ``top1`` is set) of a sweep folder, optionally of one run.

    A run retried after a failure has several attempts; by default only each run's latest is returned
    (``all_attempts=True``: every row). Rows are in file order: legacy file first, then by publication.
    History written under an old run_id carries the run's current one, as ``load_runs`` gives it (same
    ``data_dirs``), and the old one as ``legacy_run_id``; ``run_id`` selects by the current id.
    """
    directory = Path(directory)
    with warnings.catch_warnings():  # read for the ids only: load_runs names its unreadable files
        warnings.simplefilter("ignore")
        runs = _runs(directory, ["run_id", "started_at", "attempt"], data_dirs)
    renamed = {}  # the run_id a history file was written under -> the run's current one
    if "legacy_run_id" in runs:
        moved = runs[runs.legacy_run_id.notna()]
        renamed = dict(zip(moved.legacy_run_id, moved.run_id, strict=True))
    sources = None if run_id is None else [run_id, *(old for old, new in renamed.items() if new == run_id)]
    files = [p for p in _files(directory / HISTORY_DIR) if sources is None or _NAME.fullmatch(p.name).group(1)
             in sources]
    table = _read(_legacy(directory, HISTORY) + files, run_id=sources)
    if table is None:
        return pd.DataFrame(columns=HISTORY_COLUMNS)
    df = table.to_pandas()
    written = df.run_id
    if renamed:
        df = df.assign(run_id=written.map(renamed).fillna(written), legacy_run_id=written.where(
            written.isin(list(renamed)), None))
    if not all_attempts and "attempt" in df:
        attempt = df.attempt.fillna(1)  # rows written before attempts were recorded are first attempts
        if renamed:  # a run's history under its old and its new id: the id of the run's latest row wins
            latest = {rid: i for i, rid in enumerate(runs.legacy_run_id.fillna(runs.run_id))}
            rank = written.map(latest).fillna(-1)
            keep = rank == rank.groupby(df.run_id).transform("max")
            df, attempt = df[keep], attempt[keep]
        df = df[attempt == attempt.groupby(df.run_id).transform("max")]
    return df.reset_index(drop=True)


def completed_ids(directory: str | Path, data_dirs: dict | None = None) -> set[str]:
    """run_ids that already have a ``complete`` or ``diverged`` row (a sweep skips these); rows of the first
    identity rule count under their current run_id (``load_runs``, ``data_dirs``)."""
    runs = _runs(Path(directory), ["run_id", "status"], data_dirs)
    return set(runs.loc[runs.status.isin(DONE), "run_id"])


def _attempt_files(directory: Path, run_id: str, legacy_rows: int) -> list[Path]:
    """The runs files of ``run_id``: those a listing shows, and those found by name, not by listing.

    By name: ``runs/<run_id>-a<k>.parquet`` for k = 1, 2, ... while that name exists, or the attempt is a
    legacy row's (k <= ``legacy_rows``), or ``history/<run_id>-a<k>.parquet`` exists (a writer killed
    between its two files: the attempt number is taken, the next one may follow); then one past every listed
    attempt the same way.
    """
    runs_dir, history_dir = directory / RUNS_DIR, directory / HISTORY_DIR
    listed = _files(runs_dir, run_id)
    found, starts = [], {1} | {int(_NAME.fullmatch(p.name).group(2)) + 1 for p in listed}
    for k in sorted(starts):
        while True:
            name = f"{run_id}-a{k}.parquet"
            path = runs_dir / name
            if path in found or path in listed:
                k += 1
                continue
            if _exists(path):
                found.append(path)
            elif k > legacy_rows and not _exists(history_dir / name):
                break
            k += 1
    return listed + found


def _exists(path: Path) -> bool:
    """A lookup by name (stat): it asks the file server, where a cached listing may not."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return False
    return True


def run_rows(directory: str | Path, run_id: str, columns: list[str] | None = None) -> pd.DataFrame:
    """The rows of one run (every attempt; ``columns`` that exist), read from that run's files only.

    The read a sweep makes right after claiming a run: another process, on this host or another, may have
    finished it (or failed it) meanwhile. Its files are looked up by name as well as listed
    (``_attempt_files``), so a directory listing that another host's file is not in yet (NFS caching) does
    not hide it.
    """
    directory, run_id = Path(directory), check_run_id(run_id)
    columns = None if columns is None else ["run_id", *[c for c in columns if c != "run_id"]]
    read = None if columns is None else list(dict.fromkeys([*columns, *_VERSION_COLUMNS]))
    legacy = _read(_legacy(directory, RUNS), read, run_id)
    files = _attempt_files(directory, run_id, 0 if legacy is None else legacy.num_rows)
    tables = [t.to_pandas() for t in (legacy, _read(files, read, run_id)) if t is not None]
    if not tables:
        return pd.DataFrame(columns=columns or RUN_COLUMNS)
    df = pd.concat(tables, ignore_index=True)
    _refuse_newer(df, _legacy(directory, RUNS) + files, directory)  # a newer version's row is not "done"
    return df if columns is None else df[[c for c in columns if c in df]]


def is_completed(directory: str | Path, run_id: str) -> bool:
    """Whether ``run_id`` has a ``complete`` or ``diverged`` row (``run_rows``: by name, not only listed)."""
    rows = run_rows(directory, run_id, ["status"])
    return "status" in rows and bool(rows.status.isin(DONE).any())
