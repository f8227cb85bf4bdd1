"""Run leases (a run's claim): any number of sweep processes on one results folder train each pending run once.

The module was bench/claims.py; it is named for what it holds, a lease on a run, so that "claims" means one
thing in this repository, the statistical claims (plots.claims, a sweep's [claim]). The files keep their names
(``<results_dir>/claims/``, ``Claim``, ``claim()``), so folders written before the rename are read as they were.

Before training a run, a sweep process claims it: ``<results_dir>/claims/<run_id>.claim``, created with
O_CREAT | O_EXCL (only one process can create it), holds JSON ``{run_id, host, where, pid, token, claimed_at,
heartbeat}`` (unix times in seconds) and what the claimant adds (a sweep: its ``job`` and the world ranks of
the group that trains). While the run trains, a daemon thread rewrites ``heartbeat`` every ``heartbeat_s``;
``release()`` removes the file when the run is stored.

The claim is also the record that an attempt started: a process that dies without releasing it (a native
crash, the OOM killer) leaves it behind, and whoever takes it over gets the dead owner's record as
``Claim.previous`` (bench.sweep turns it into a ``crashed`` row, from the evidence ``fault_log`` files hold).

A claim is stale, and the next ``claim`` takes it over, when its heartbeat (the newer of the file's
``heartbeat`` and its mtime, so one slow clock cannot expire a live claim) is older than the lease, or at
once when its owner ran on this machine and its pid is gone. "This machine" is the host name, the boot id
and the PID namespace (``where``): two containers that share a host name but not a PID namespace never
judge each other's pids. A garbled or empty file (a writer killed between create and write) is stale once
its mtime is older than the lease.

A claim is lost when another process took it over, or when its heartbeat could not be written for half the
lease (a full or unreachable disk: others will soon judge it stale). ``Claim.check()`` raises ClaimLost then;
a run checks it at its logged steps and stops on every rank. ``check()`` judges the time since the last
heartbeat that was written itself, rather than waiting for the heartbeat thread to say so: a thread blocked
in a call that never returns (``flock`` on a hung lock server, a write to a hung NFS mount) says nothing.

Why the lease is 120 s (``DEFAULT_LEASE_S``; ``$BENCH_CLAIM_LEASE_S`` overrides it, read at each call): a
run's chief heartbeats every 30 s (lease / 4), so a live claim misses three beats before anyone doubts it,
and a killed job's claims on other hosts become free within 2 minutes; on the same host a dead pid frees
its claim at once.

Every change to an existing claim file (takeover, heartbeat, release) happens under an exclusive
``flock`` on ``claims/.lock`` after re-reading the file and checking its token, and replaces the file
atomically (temp file + ``os.replace``); so of several processes taking over one stale claim exactly one
wins, and a heartbeat never overwrites a claim that was taken over (the old owner sees ``lost``). Every wait
for that lock is bounded (``_locked``: TimeoutError, an OSError, after ``wait`` seconds; a heartbeat waits at
most its interval, the others a quarter of the lease), and the ``flock`` call runs in a helper thread, since
on a hung lock server the call itself blocks, LOCK_NB or not; so ``release()`` returns in bounded time (its
TimeoutError then says the claim file is left to go stale).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import socket
import threading
import time
import uuid
from pathlib import Path

from bench import atomic, environment

DEFAULT_LEASE_S = 120.0
CLAIMS_DIR = "claims"

_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+=-]{0,199}")


def check_run_id(run_id) -> str:
    """``run_id`` if it is usable as a file name (it names claim and results files), else ValueError."""
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise ValueError(f"run_id = {run_id!r} is not a valid file name; valid: 1-200 letters, digits "
                         "and _ . + = - (not first)")
    return run_id


def lease_seconds(lease_s: float | None = None) -> float:
    """``lease_s`` if given, else ``$BENCH_CLAIM_LEASE_S``, else DEFAULT_LEASE_S; ValueError unless > 0."""
    source, value = "lease_s", lease_s
    if value is None:
        source, value = environment.CLAIM_LEASE, environment.get(environment.CLAIM_LEASE) or DEFAULT_LEASE_S
    try:
        lease = float(value)
    except (TypeError, ValueError):
        lease = float("nan")
    if isinstance(value, bool) or not 0 < lease < float("inf"):
        raise ValueError(f"{source} = {value!r} is not valid; valid: a number of seconds > 0")
    return lease


def _lock_within(path: Path, wait: float) -> int:
    """An fd holding an exclusive ``flock`` on ``path``, taken within ``wait`` seconds, else TimeoutError.

    The open and the flock run in a daemon thread: on a hung NFS lock server (or mount) the calls themselves
    block, so no flag makes them return; we stop waiting instead. A lock granted after we stopped waiting is
    dropped at once by that thread (it closes its own fd), so it never holds the folder's lock for nobody."""
    got: dict = {}
    handover = threading.Lock()
    done = threading.Event()

    def take() -> None:
        fd = None
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
            got["error"] = e
            if fd is not None:
                os.close(fd)
            done.set()
            return
        with handover:
            if got.get("abandoned"):
                os.close(fd)  # closing drops the lock
                return
            got["fd"] = fd
        done.set()

    threading.Thread(target=take, daemon=True, name=f"claims-lock-{path.parent.name}").start()
    done.wait(wait)
    with handover:
        if "fd" in got:
            return got["fd"]
        if "error" in got:
            raise got["error"]
        got["abandoned"] = True
    raise TimeoutError(errno.ETIMEDOUT, f"the lock {path} was not granted within {wait:.3g} s "
                       "(held by a stuck process, or a hung lock server)")


@contextlib.contextmanager
def _locked(folder: Path, wait: float | None = None):
    """The claims folder's exclusive lock, waited for at most ``wait`` seconds (None: a quarter of the lease);
    TimeoutError (an OSError) when it is not granted in time."""
    fd = _lock_within(folder / ".lock", lease_seconds() / 4 if wait is None else wait)
    try:
        yield
    finally:
        os.close(fd)  # closing drops the lock


def _read(path: Path) -> tuple[dict | None, float] | None:
    """(parsed record or None if garbled, mtime) of a claim file; None if there is no file."""
    try:
        with open(path, "rb") as f:
            mtime = os.fstat(f.fileno()).st_mtime
            raw = f.read()
    except FileNotFoundError:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None, mtime
    valid = (isinstance(record, dict) and isinstance(record.get("token"), str)
             and isinstance(record.get("host"), str) and type(record.get("pid")) is int)
    return (record if valid else None), mtime


def _token(found: tuple[dict | None, float]) -> str | None:
    return found[0]["token"] if found[0] is not None else None


class ClaimLost(RuntimeError):
    """This process no longer holds the run it is training (taken over, or its heartbeat failed)."""


def _read_first(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def machine() -> str:
    """Host name | boot id | PID namespace: pids are comparable only between processes that share all three."""
    try:
        pidns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pidns = ""
    return f"{socket.gethostname()}|{_read_first('/proc/sys/kernel/random/boot_id')}|{pidns}"


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by another user
        return False
    return False


def _is_stale(record: dict | None, mtime: float, lease: float) -> bool:
    beat = record.get("heartbeat") if record else None
    last = max(mtime, beat) if isinstance(beat, int | float) and not isinstance(beat, bool) else mtime
    if time.time() - last > lease:
        return True
    return record is not None and record.get("where") == machine() and _pid_gone(record["pid"])


def is_stale(record: dict, lease_s: float | None = None) -> bool:
    """Whether a claim record (as ``active_claims`` gives it) would be taken over now."""
    beat = record.get("heartbeat")
    return _is_stale(record, beat if isinstance(beat, int | float) else 0.0, lease_seconds(lease_s))


def _replace(path: Path, record: dict) -> None:
    atomic.replace(path, lambda f: f.write(json.dumps(record).encode()), record["token"])


def _create(path: Path, record: dict) -> bool:
    """Create the claim file exclusively; False if it exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
    except BaseException:
        os.unlink(path)
        raise
    return True


class Claim:
    """A held claim on one run: ``path``, ``run_id``, ``token``, ``lost`` (why, once lost; else "").

    ``previous``: the record of the stale claim this one took over (an attempt whose owner died without
    releasing it), else None. A daemon thread refreshes the heartbeat every ``heartbeat_s`` seconds while
    the file carries our token; ``check()`` raises ClaimLost once the claim is lost. ``release()``
    (idempotent) stops it and removes the file if it is still ours. A context manager.
    """

    def __init__(self, path: Path, record: dict, heartbeat_s: float, lease_s: float, previous: dict | None = None):
        self.path, self.run_id, self.token = path, record["run_id"], record["token"]
        self.previous = previous
        self.lost = ""
        self._lease, self._every = lease_s, heartbeat_s
        self._record = record
        self._last_ok = time.monotonic()  # the last heartbeat written (the file was written just now)
        self._last_error = ""  # why the heartbeats since then failed, if they did
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat_s,), daemon=True,
                                        name=f"claim-heartbeat-{self.run_id}")
        self._thread.start()

    def _ours(self) -> bool:
        found = _read(self.path)
        return found is not None and found[0] is not None and found[0]["token"] == self.token

    def _beat(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                with _locked(self.path.parent, wait=every):  # a beat never waits past the next one's time
                    if self._stop.is_set() or self.lost:  # released, or check() judged it lost: no more beats
                        return
                    if not self._ours():
                        found = _read(self.path)
                        owner = found[0] if found and found[0] else {}
                        self.lost = (f"claim on {self.run_id} taken over by "
                                     f"{owner.get('host', '?')}:{owner.get('pid', '?')}")
                        return
                    self._record = {**self._record, "heartbeat": time.time()}
                    _replace(self.path, self._record)
                    self._last_ok, self._last_error = time.monotonic(), ""
            except OSError as e:  # a passing disk problem is retried next beat; a lasting one loses the claim
                self._last_error = str(e)
                if self._silent():
                    return

    def _silent(self) -> bool:
        """Whether no heartbeat was written for half the lease (then ``lost`` says so): others will soon judge
        the claim stale, so the run must stop before they take it over."""
        if not self.lost and not self._stop.is_set():
            quiet = time.monotonic() - self._last_ok
            if quiet > self._lease / 2:
                why = self._last_error or "the heartbeat is blocked (a hung lock server or file system?)"
                self.lost = (f"heartbeat of the claim on {self.run_id} not written for {quiet:.1f} s "
                             f"(lease {self._lease:.0f} s): {why}")
        return bool(self.lost)

    def check(self) -> None:
        """Raise ClaimLost if another process took this claim over or no heartbeat was written for half the
        lease (judged here, from the clock: a heartbeat thread blocked for ever would never say so)."""
        if self._silent():
            raise ClaimLost(self.lost)

    def mark_interrupted(self) -> None:
        """Record in the claim file that its owner was stopped from outside (SIGTERM), so that whoever takes it
        over does not count the attempt as a crash. Best effort: the process is about to end."""
        self._stop.set()
        with contextlib.suppress(OSError), _locked(self.path.parent, wait=min(self._lease / 4, 5.0)):
            if self._ours():
                self._record = {**self._record, "interrupted": True}
                _replace(self.path, self._record)

    def release(self) -> None:
        """Stop heartbeating and remove the claim file if it still carries our token. Returns within about a
        quarter of the lease: TimeoutError (an OSError) if the lock was not granted by then (the file is
        left; it goes stale). The heartbeat thread is not waited for: it re-checks the stop under the lock,
        which this holds while it removes the file, so it cannot write the file back."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=min(self._every, 1.0))  # a beat in progress usually ends at once
        with contextlib.suppress(FileNotFoundError), _locked(self.path.parent, wait=self._lease / 4):
            if self._ours():
                os.unlink(self.path)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"Claim({str(self.path)!r}, token={self.token!r}, lost={self.lost})"


def claim(results_dir: str | Path, run_id: str, lease_s: float | None = None,
          heartbeat_s: float | None = None, extra: dict | None = None) -> Claim | None:
    """Claim ``run_id`` in ``results_dir``: a Claim if this process now holds it, None if another does.

    ``lease_s``: seconds without a heartbeat after which a claim is stale (None: $BENCH_CLAIM_LEASE_S or
    DEFAULT_LEASE_S). ``heartbeat_s``: seconds between heartbeats (default lease / 4; must be < lease).
    ``extra``: JSON fields stored in the claim record (a sweep's job and ranks). A stale claim is taken
    over (see the module docstring) and its record handed over as ``Claim.previous``. The caller must still
    check that the run is not already stored (``results.is_completed``): a claim says who trains, not what
    is finished.
    """
    check_run_id(run_id)
    lease = lease_seconds(lease_s)
    beat = lease / 4 if heartbeat_s is None else heartbeat_s
    if isinstance(beat, bool) or not isinstance(beat, int | float) or not 0 < beat < lease:
        raise ValueError(f"heartbeat_s = {heartbeat_s!r} is not valid; valid: a number in (0, lease = {lease})")
    folder = Path(results_dir) / CLAIMS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{run_id}.claim"
    now = time.time()
    record = {**(extra or {}), "run_id": run_id, "host": socket.gethostname(), "where": machine(),
              "pid": os.getpid(), "token": uuid.uuid4().hex, "claimed_at": now, "heartbeat": now}
    if _create(path, record):
        return Claim(path, record, beat, lease)
    seen = _read(path)
    if seen is not None and not _is_stale(*seen, lease):
        return None  # the common case, decided without the lock
    with _locked(folder, wait=lease / 4):
        current = _read(path)
        if current is None:  # released meanwhile (releases happen under this lock)
            if not _create(path, record):
                return None
        elif not _is_stale(*current, lease) or (seen is not None and _token(current) != _token(seen)):
            return None  # fresh, or no longer the stale claim we saw: someone else took it over
        else:
            record["claimed_at"] = record["heartbeat"] = time.time()
            _replace(path, record)
            return Claim(path, record, beat, lease, previous=current[0])
    return Claim(path, record, beat, lease)


def active_claims(results_dir: str | Path) -> list[dict]:
    """The parsed claim files of ``results_dir`` (garbled ones left out), each with its ``run_id``."""
    folder = Path(results_dir) / CLAIMS_DIR
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(".claim") and not n.startswith("."))
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        found = _read(folder / name)
        if found is not None and found[0] is not None:
            out.append({**found[0], "run_id": name[: -len(".claim")]})
    return out


# ---- what a dead attempt left behind ----------------------------------------------------------------
JOBS_DIR = "jobs"


def fault_log(results_dir: str | Path, job: str, world_rank: int) -> Path:
    """Where rank ``world_rank`` of sweep job ``job`` has Python's faulthandler write a native crash's report
    (the signal and the Python stack): empty unless that process died of SIGSEGV, SIGABRT, SIGBUS, SIGFPE
    or SIGILL. The files of a job that ended normally are removed; a crashed job's stay as evidence."""
    return Path(results_dir) / CLAIMS_DIR / JOBS_DIR / check_run_id(job) / f"rank{world_rank}.log"


def _crash_report(path: Path) -> str:
    """One line from a faulthandler report: the fatal error and the crashing thread's innermost frames; ""
    if there is none."""
    lines = [ln.strip() for ln in _read_first(str(path)).splitlines() if ln.strip()]
    fatal = [ln.removeprefix("Fatal Python error: ") for ln in lines if ln.startswith("Fatal Python error")]
    if not fatal:
        return ""
    current = next((i for i, ln in enumerate(lines) if ln.startswith("Current thread")), 0)
    frames = []
    for ln in lines[current + 1:]:
        if not ln.startswith("File "):
            break
        frames.append(ln)
    return f"{fatal[0]} (" + "; ".join(frames[:3]) + ")" if frames else fatal[0]


def dead_attempt(results_dir: str | Path, record: dict) -> tuple[bool, str]:
    """(counts as a crash, one line saying what happened) for the attempt behind a stale claim ``record``.

    A crash report from a rank of the claim's own group: crashed, with the report. Else, if its owner was
    stopped from outside (SIGTERM marked it) or another rank of the same job left a crash report (which took
    the whole job down): interrupted, not counted. Else the process ended without a trace: crashed (SIGKILL,
    e.g. the OOM killer, kill -9, or a job cancelled without SIGTERM)."""
    where = f"on {record.get('host', '?')} (pid {record.get('pid', '?')})"
    job, ranks = record.get("job"), record.get("ranks") or []
    reports = {}
    if isinstance(job, str) and _RUN_ID.fullmatch(job):
        folder = fault_log(results_dir, job, 0).parent
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(folder):
                m = re.fullmatch(r"rank(\d+)\.log", name)
                if m and (report := _crash_report(folder / name)):
                    reports[int(m.group(1))] = report
    ours = {r: text for r, text in reports.items() if r in ranks}
    if ours:
        rank, text = min(ours.items())
        return True, f"crashed {where}, world rank {rank}: {text}"[:1000]
    if record.get("interrupted"):
        return False, f"stopped from outside {where} (SIGTERM)"
    if reports:
        rank, text = min(reports.items())
        return False, f"ended {where} because world rank {rank} of its job crashed: {text}"[:1000]
    return True, (f"ended {where} without a trace: SIGKILL (the OOM killer, kill -9, or a job cancelled "
                  "without SIGTERM), or a crash whose report could not be written")
