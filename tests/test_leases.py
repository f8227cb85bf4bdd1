"""Run claims between real processes: each run claimed once, stale claims taken over once, never earlier."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from bench import leases
from conftest import ROOT

# Claims each run_id once, prints the ones it won, then holds them until every racer has tried (a racer
# that exited early would leave dead-pid claims that a slower one could rightly take over).
RACER = textwrap.dedent("""
    import json, os, sys, time
    from bench import leases
    folder, gate, me, n, lease = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
    run_ids = sys.argv[6:]

    def barrier(stage):
        open(os.path.join(gate, f"{stage}-{me}"), "w").close()
        while sum(name.startswith(stage) for name in os.listdir(gate)) < n:
            time.sleep(0.005)

    barrier("ready")
    won = [rid for rid in run_ids if leases.claim(folder, rid, lease_s=lease, heartbeat_s=lease / 4)]
    print(json.dumps(won), flush=True)
    barrier("tried")
""")


def race(tmp_path, n, run_ids, lease=120.0):
    """``n`` processes claim ``run_ids`` at the same moment; the list of what each one won."""
    gate = tmp_path / "gate"
    gate.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path), str(gate), str(i), str(n), str(lease),
                               *run_ids], cwd=ROOT, stdout=subprocess.PIPE, text=True) for i in range(n)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * n
    return [json.loads(out) for out in outs]


def write_claim(results_dir, run_id, age_s, host="elsewhere", pid=1, token="theirs"):
    """A claim file as another process left it, its heartbeat and mtime ``age_s`` seconds old."""
    path = results_dir / "claims" / f"{run_id}.claim"
    path.parent.mkdir(parents=True, exist_ok=True)
    beat = time.time() - age_s
    path.write_text(json.dumps({"run_id": run_id, "host": host, "pid": pid, "token": token, "claimed_at": beat,
                                "heartbeat": beat}))
    os.utime(path, (beat, beat))
    return path


def owner(path):
    return json.loads(path.read_text())["token"]


def test_racing_processes_claim_each_run_exactly_once(tmp_path):
    run_ids = [f"r{i}" for i in range(5)]
    won = race(tmp_path, 6, run_ids)
    assert sorted(rid for w in won for rid in w) == run_ids
    # every racer has exited: their claims are still on disk (nobody released), one file per run
    assert sorted(c["run_id"] for c in leases.active_claims(tmp_path)) == run_ids


def test_racing_takeover_of_stale_claims_has_exactly_one_winner_each(tmp_path):
    run_ids = [f"s{i}" for i in range(5)]
    for rid in run_ids:
        write_claim(tmp_path, rid, age_s=10)
    (tmp_path / "claims" / "s4.claim").write_text('{"host": "elsewh')  # garbled: stale by its mtime
    os.utime(tmp_path / "claims" / "s4.claim", (time.time() - 10,) * 2)
    won = race(tmp_path, 6, run_ids, lease=5.0)
    assert sorted(rid for w in won for rid in w) == run_ids
    assert all(c["token"] != "theirs" for c in leases.active_claims(tmp_path))


def test_a_claim_whose_pid_died_on_this_host_is_taken_over_at_once(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from bench import leases; "
         "assert leases.claim(sys.argv[1], 'r'); print('held', flush=True); time.sleep(600)", str(tmp_path)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        assert leases.claim(tmp_path, "r") is None  # alive, fresh
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    path = tmp_path / "claims" / "r.claim"
    assert json.loads(path.read_text())["pid"] == holder.pid  # kill -9 left the file behind
    with leases.claim(tmp_path, "r") as mine:  # the default 2-minute lease does not apply: the pid is gone
        assert mine is not None and owner(path) == mine.token
    assert not path.exists()


def test_another_hosts_claim_is_taken_over_after_the_lease_and_not_before(tmp_path, monkeypatch):
    path = write_claim(tmp_path, "r", age_s=0.5)
    monkeypatch.setenv("BENCH_CLAIM_LEASE_S", "1.5")  # read at each call
    assert leases.claim(tmp_path, "r") is None
    assert leases.claim(tmp_path, "r", lease_s=60) is None
    time.sleep(1.2)  # 1.7 s old: past the 1.5 s lease
    assert leases.claim(tmp_path, "r", lease_s=60) is None  # an explicit lease beats the environment
    mine = leases.claim(tmp_path, "r")
    assert mine is not None and owner(path) == mine.token
    record = json.loads(path.read_text())
    assert record["host"] == socket.gethostname() and record["pid"] == os.getpid()
    mine.release()


def test_a_live_claims_heartbeat_keeps_it_past_the_lease(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from bench import leases; "
         "c = leases.claim(sys.argv[1], 'r', lease_s=1.0, heartbeat_s=0.2); print('held', flush=True); "
         "time.sleep(3.5); c.release()", str(tmp_path)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    path = tmp_path / "claims" / "r.claim"
    first = json.loads(path.read_text())
    deadline = time.time() + 2.5  # 2.5 leases
    while time.time() < deadline:
        assert leases.claim(tmp_path, "r", lease_s=1.0) is None
        time.sleep(0.1)
    now = json.loads(path.read_text())
    assert now["token"] == first["token"] and now["heartbeat"] > first["heartbeat"] + 1.5
    assert now["claimed_at"] == first["claimed_at"]
    assert holder.wait(timeout=60) == 0 and not path.exists()  # its release removed its own file
    assert leases.claim(tmp_path, "r", lease_s=1.0) is not None


def test_a_claim_without_heartbeats_goes_stale_after_the_lease(tmp_path):
    mine = leases.claim(tmp_path, "r", lease_s=1.0, heartbeat_s=0.2)
    mine._stop.set()  # the heartbeat thread ends, as in a process hung in C code
    time.sleep(1.3)
    theirs = leases.claim(tmp_path, "r", lease_s=1.0)
    assert theirs is not None and owner(mine.path) == theirs.token
    theirs.release()


def test_release_removes_only_our_own_file_and_a_taken_claim_is_lost(tmp_path):
    mine = leases.claim(tmp_path, "r", lease_s=1.0, heartbeat_s=0.1)
    path = mine.path
    write_claim(tmp_path, "r", age_s=0, token="taken-over")  # as a takeover after a long pause would
    time.sleep(0.4)
    assert mine.lost and owner(path) == "taken-over"  # the heartbeat stopped instead of overwriting it
    mine.release()
    mine.release()  # idempotent
    assert owner(path) == "taken-over"
    other = leases.claim(tmp_path, "q")
    other.release()
    other.release()
    assert not other.path.exists() and not other.lost


def test_active_claims_lists_the_parsed_files_and_skips_garbled_ones(tmp_path):
    assert leases.active_claims(tmp_path) == []
    a = leases.claim(tmp_path, "a")
    (tmp_path / "claims" / "b.claim").write_text("")
    (tmp_path / "claims" / ".a.claim.x.tmp").write_text("{}")
    [record] = leases.active_claims(tmp_path)
    assert record["run_id"] == "a" and record["token"] == a.token and record["pid"] == os.getpid()
    assert set(record) >= {"host", "pid", "token", "claimed_at", "heartbeat"}
    a.release()
    assert leases.active_claims(tmp_path) == []


def test_bad_arguments_are_one_line_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"run_id = 'a/b' is not a valid file name"):
        leases.claim(tmp_path, "a/b")
    with pytest.raises(ValueError, match=r"heartbeat_s = 5 is not valid; valid: a number in \(0, lease = 2.0\)"):
        leases.claim(tmp_path, "a", lease_s=2, heartbeat_s=5)
    monkeypatch.setenv("BENCH_CLAIM_LEASE_S", "soon")
    with pytest.raises(ValueError, match=r"BENCH_CLAIM_LEASE_S = 'soon' is not valid; valid: a number of secon"):
        leases.claim(tmp_path, "a")
    monkeypatch.delenv("BENCH_CLAIM_LEASE_S")
    assert leases.lease_seconds() == leases.DEFAULT_LEASE_S == 120


def test_a_dead_pid_in_another_pid_namespace_of_the_same_host_name_is_judged_by_the_lease_only(tmp_path):
    # two containers that share a host name but not a PID namespace: pid 1 is not ours to judge
    here = leases.machine()
    assert here.split("|")[0] == socket.gethostname() and here.count("|") == 2
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a pid that has exited
    path = write_claim(tmp_path, "r", age_s=0, host=socket.gethostname(), pid=pid)
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "where": socket.gethostname() + "|same-boot|pid:[1]"}))
    assert leases.claim(tmp_path, "r", lease_s=60) is None  # the lease still runs
    path.write_text(json.dumps({**record, "where": here}))  # the same machine: the dead pid frees it at once
    mine = leases.claim(tmp_path, "r", lease_s=60)
    assert mine is not None and mine.previous["pid"] == pid  # the dead attempt's record, handed over
    mine.release()


def test_a_claim_taken_over_or_not_heartbeaten_for_half_the_lease_is_lost_and_check_raises(tmp_path, monkeypatch):
    mine = leases.claim(tmp_path, "r", lease_s=1.0, heartbeat_s=0.1)
    mine.check()  # held: nothing raised
    write_claim(tmp_path, "r", age_s=0, token="taken-over")
    time.sleep(0.4)
    with pytest.raises(leases.ClaimLost, match="taken over by elsewhere:1"):
        mine.check()
    mine.release()
    assert owner(mine.path) == "taken-over"

    failing = leases.claim(tmp_path, "q", lease_s=1.0, heartbeat_s=0.1)

    def full_disk(path, record):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(leases, "_replace", full_disk)
    time.sleep(0.3)
    failing.check()  # 0.3 s of failed beats: below half the lease, a passing problem
    time.sleep(0.5)
    with pytest.raises(leases.ClaimLost, match="not written for .* No space left on device"):
        failing.check()
    monkeypatch.undo()
    failing.release()


def _record(tmp_path, job="job1", ranks=(0, 1), **more):
    return {"run_id": "r", "host": "h", "pid": 7, "token": "t", "job": job, "ranks": list(ranks), **more}


def _report(tmp_path, job, rank, text):
    path = leases.fault_log(tmp_path, job, rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


REPORT = ("Fatal Python error: Segmentation fault\n\nThread 0x1 (most recent call first):\n"
          "  File \"/x/tqdm/_monitor.py\", line 69 in run\n\nCurrent thread 0x2 (most recent call first):\n"
          "  File \"/x/bench/train.py\", line 261 in _train\n  File \"/x/bench/train.py\", line 164 in run\n\n"
          "Extension modules: numpy\n")


def test_a_dead_attempt_is_a_crash_of_its_own_group_an_interruption_or_a_trace_less_kill(tmp_path):
    # a crash report from a rank of the claim's own group: counted, with the crashing thread's frames
    _report(tmp_path, "job1", 1, REPORT)
    _report(tmp_path, "job1", 0, "")
    counted, text = leases.dead_attempt(tmp_path, _record(tmp_path))
    assert counted and "world rank 1: Segmentation fault" in text and "train.py\", line 261 in _train" in text
    assert "_monitor" not in text
    # another group of the same job crashed and took this one down: not counted
    counted, text = leases.dead_attempt(tmp_path, _record(tmp_path, ranks=(2, 3)))
    assert not counted and "because world rank 1 of its job crashed" in text
    # stopped from outside (SIGTERM marked the claim), no report in its group: not counted
    counted, text = leases.dead_attempt(tmp_path, _record(tmp_path, job="job2", interrupted=True))
    assert not counted and "SIGTERM" in text
    # no report anywhere and not marked: SIGKILL, e.g. the OOM killer: counted
    counted, text = leases.dead_attempt(tmp_path, _record(tmp_path, job="job2"))
    assert counted and "without a trace" in text
    # a record from before jobs existed: the same, judged without reports
    counted, _ = leases.dead_attempt(tmp_path, {"run_id": "r", "host": "h", "pid": 7, "token": "t"})
    assert counted
