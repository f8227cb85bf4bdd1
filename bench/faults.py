"""Fault injection, for the fault tests: make one rank fail at a named moment of a run, the way real faults do.

``$BENCH_FAULT`` holds one fault as comma-separated ``key=value`` pairs; unset (the normal case), every
``point`` call is a dictionary lookup and returns::

    BENCH_FAULT="at=step,step=3,rank=1,kind=segv,seed=0"

- ``at``: where it fires, one of POINTS: ``data`` (building the input pipeline, before the first step),
  ``compile`` (tracing the train step: inside the first step's compilation), ``step`` (after an optimizer
  step), ``eval`` (at the start of an evaluation), ``checkpoint`` (between a checkpoint's files),
  ``results`` (the chief's results write), ``claim`` (the chief's choice of its next run).
- ``kind``: ``raise`` (a RuntimeError), ``segv`` (the process kills itself with SIGSEGV, as a native crash
  does), ``abort`` (SIGABRT, as glibc's ``malloc(): corrupted ...`` does), ``sleep`` (the rank stops
  without raising: ``seconds``, default 3600).
- Conditions, each optional: ``rank`` (the rank in its Horovod group), ``step``, ``seed`` (the seed of the
  run being trained, which ``bench.train.run`` declares with ``set_run``: a fault that follows one run of a
  sweep, not the group that trains it).

Nothing else in the harness reads this variable.
"""

from __future__ import annotations

import os
import signal
import time

from bench import environment

POINTS = ("data", "compile", "step", "eval", "checkpoint", "results", "claim")
KINDS = ("raise", "segv", "abort", "sleep")


class InjectedFault(RuntimeError):
    """The ``raise`` kind."""


def parse(text: str) -> dict:
    """The fault described by ``text`` (see the module docstring); ValueError naming a bad key or value."""
    fault = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key not in ("at", "kind", "rank", "step", "seed", "seconds"):
            raise ValueError(f"{environment.FAULT}: {item!r} is not valid; "
                             "valid: at=, kind=, rank=, step=, seed=, seconds=")
        fault[key] = value if key in ("at", "kind") else float(value) if key == "seconds" else int(value)
    if fault.get("at") not in POINTS or fault.get("kind") not in KINDS:
        raise ValueError(f"{environment.FAULT} = {text!r} needs at= one of {', '.join(POINTS)} "
                         f"and kind= one of {', '.join(KINDS)}")
    return fault


_cache: tuple[str, dict | None] = ("", None)
_run_seed: int | None = None


def set_run(seed: int | None) -> None:
    """The seed of the run this process trains now (None between runs)."""
    global _run_seed
    _run_seed = seed


def _current() -> dict | None:
    global _cache
    text = environment.get(environment.FAULT)
    if text != _cache[0]:
        _cache = (text, parse(text) if text else None)
    return _cache[1]


def point(at: str, rank: int = 0, step: int | None = None) -> None:
    """Fire the configured fault if it is set for this moment (``at``), this rank, step and run seed."""
    fault = _current()
    if fault is None or fault["at"] != at:
        return
    for key, value in (("rank", rank), ("step", step), ("seed", _run_seed)):
        if key in fault and fault[key] != value:
            return
    kind = fault["kind"]
    if kind == "raise":
        raise InjectedFault(f"injected fault at {at} on rank {rank}")
    if kind == "sleep":
        time.sleep(fault.get("seconds", 3600.0))
        return
    os.kill(os.getpid(), signal.SIGSEGV if kind == "segv" else signal.SIGABRT)
    time.sleep(60)  # the signal is delivered on return to the interpreter; never reached
