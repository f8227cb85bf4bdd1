"""Command line: ``python -m bench COMMAND ...``, one command per module, each with its own ``add_arguments``
and ``main(args)`` (COMMANDS below). Run ``python -m bench COMMAND --help`` for a command's arguments.

Exit codes: 0 done (complete or diverged: divergence is a result), 1 a run failed (a sweep: at least one;
the others ran), 2 bad input (``ConfigError``: nothing trained, nothing written), turned into one line here
and nowhere else. Under MPI, an exception that no agreed path handles aborts the whole job (MPI_Abort,
exit 1) after printing it: a peer left waiting would hang for ever.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from bench.environment import mpi_defaults, quiet_tensorflow, share_cores, under_mpi  # light: no TensorFlow
from bench.log import LEVELS  # light: logging only

quiet_tensorflow()  # before TensorFlow starts
mpi_defaults()  # before MPI starts (in this process, or in the mpirun this process re-launches under)
share_cores()  # before TensorFlow starts: its thread pools are sized once, from these variables

# command -> (module with add_arguments(parser) and main(args) -> exit code, one line of help)
COMMANDS = {
    "train": ("bench.train", "train one run (under mpirun/horovodrun for several workers)"),
    "sweep": ("bench.sweep", "run every pending run of a sweep file (resumable; see bench/sweep.py)"),
    "perf": ("bench.perf", "time every optimizer's train step on one workload (ratios to the first); with "
             "--json, every bench.json ratio (see bench/perf/__init__.py)"),
    "project": ("bench.perf.projection", "projected hours of the paper's ResNet-50 / ImageNet run on N GPUs (a "
                "model fed by bench.json, not a measurement; see bench/perf/projection.py)"),
    "report": ("plots.report", "figures (PNG + PDF) and claims.md from results folders"),
    "list": ("bench.listing", "every optimizer, model and data set a config can name: built-in, entry point or "
             "reference, role, hyperparameters and defaults (see bench/components.py)"),
}


def _parser(command: str | None) -> argparse.ArgumentParser:
    """The parser, with the arguments of ``command`` only: its module is imported (TensorFlow, for most) only
    when that command is the one asked for."""
    p = argparse.ArgumentParser(prog="python -m bench", description="The NLCG benchmark harness.")
    p.add_argument("--log-level", choices=LEVELS, default="INFO",
                   help="the console's level on the chief (other ranks: WARNING and above; a run's log file "
                   "keeps the chief's INFO whatever this says); default INFO")
    sub = p.add_subparsers(dest="command", required=True)
    for name, (module, text) in COMMANDS.items():
        sp = sub.add_parser(name, help=text)
        sp.add_argument("--log-level", choices=LEVELS, default=argparse.SUPPRESS, help="as before the command")
        if name == command:
            importlib.import_module(module).add_arguments(sp)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser(next((a for a in argv if a in COMMANDS), None)).parse_args(argv)
    from bench import log
    from bench.config import ConfigError

    log.setup(level=args.log_level)

    try:
        return importlib.import_module(COMMANDS[args.command][0]).main(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def entry() -> int:
    """``main``, and under MPI the abort of the job on any exception that escapes it."""
    if not under_mpi():
        return main()
    try:
        return main()
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001 - the peers of this rank must not wait for it for ever
        traceback.print_exc()
        from bench.distributed import abort

        abort(f"uncaught {type(e).__name__}: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(entry())
