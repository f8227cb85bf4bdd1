"""Command line: ``python -m bench train|perf --config X.toml | sweep X.toml [--set key=value ...]``.

Exit codes: 0 done (complete or diverged: divergence is a result), 1 a run failed (a sweep: at least one;
the others ran), 2 bad input (nothing trained, nothing written). Under MPI, an exception that no agreed path
handles aborts the whole job (MPI_Abort, exit 1) after printing it: a peer left waiting would hang for ever.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from bench.environment import mpi_defaults, quiet_tensorflow, share_cores  # light: no TensorFlow

quiet_tensorflow()  # before TensorFlow starts

mpi_defaults()  # before MPI starts (in this process, or in the mpirun this process re-launches under)
share_cores()  # before TensorFlow starts: its thread pools are sized once, from these variables


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train one run (under mpirun/horovodrun for several workers)")
    t.add_argument("--config", help="TOML run config (experiments/*.toml); defaults if omitted")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (TOML value), e.g. --set epochs=3 --set hparams.momentum=0.8")
    b = sub.add_parser("perf", help="time every optimizer's train step on one workload (ratios to the first); "
                       "with --json, every bench.json ratio (see bench/perf.py)")
    b.add_argument("--config", help="TOML run config giving the workload (--json without it: resnet8, "
                   "Fashion-MNIST, global batch 256)")
    b.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    b.add_argument("--optimizers", default=None,
                   help="comma-separated registry names; the first is the baseline "
                   "(default momentum,nlcg-fr,nlcg-pr,rmsprop,lars,lamb; --json: the first four; "
                   "--json --quick: momentum,nlcg-fr)")
    b.add_argument("--steps", type=int, default=10, help="timed steps per optimizer per round")
    b.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    b.add_argument("--out", help="also write the table to this CSV file")
    b.add_argument("--json", help="measure every bench.json entry (outside mpirun: it launches its own "
                   "workers), write it to this file and print it as a table")
    b.add_argument("--quick", action="store_true", help="with --json: reduced sizes, to check the machinery")
    j = sub.add_parser("project", help="projected hours of the paper's ResNet-50 / ImageNet run on N GPUs "
                       "(a model fed by bench.json, not a measurement; see bench/project.py)")
    j.add_argument("--bench", default="results/bench/bench.json", help="bench.json from perf --json")
    j.add_argument("--gpus", default="64,128,256,512,1024", help="comma-separated GPU counts")
    j.add_argument("--bandwidth-gbps", type=float, default=100.0,
                   help="ring link bandwidth, Gbit/s (100: InfiniBand EDR; 1200: NVLink 2 within a node)")
    j.add_argument("--latency-us", type=float, default=5.0, help="per-message latency of the ring, microseconds")
    j.add_argument("--images-per-s-per-gpu", type=float, default=1270.0,
                   help="ResNet-50 training throughput of one GPU (1270: V100, mixed precision; an assumption)")
    j.add_argument("--optimizer-speedup", type=float, default=None,
                   help="GPU / this CPU speed of an optimizer step (default: 900 GB/s over the measured "
                   "memory bandwidth in bench.json)")
    j.add_argument("--optimizers", default="momentum,rmsprop,nlcg-fr,nlcg-pr", help="optimizers to project")
    j.add_argument("--out", default="figures/projection", help="output folder")
    w = sub.add_parser("sweep", help="run every pending run of a sweep file (resumable; see bench/sweep.py)")
    w.add_argument("file", help="sweep file: a run config plus a [grid] table of lists")
    w.add_argument("--workers", type=int, default=None,
                   help="Horovod workers per run (re-launches under mpirun); default: the file's [launch] "
                   "workers, else 1")
    w.add_argument("--pack", type=int, default=None,
                   help="runs trained at once, each on its own group of workers; default: the file's [launch] "
                   "pack, else 1")
    w.add_argument("--max-crashes", type=int, default=None,
                   help="skip a run after this many attempts that died natively (no row; recorded as crashed "
                   "by the next claimant); default: the file's [launch] max_crashes, else 2")
    w.add_argument("--dry-run", action="store_true", help="list the runs and their state; train nothing")
    w.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field for every run")
    r = sub.add_parser("report", help="figures (PNG + PDF) and claims.md from results folders")
    r.add_argument("results", nargs="+", help="results folders, e.g. results/mini")
    r.add_argument("--out", default="figures", help="output folder; one subfolder per results folder")
    r.add_argument("--reference", default="experiments/paper_reference.csv", help="the paper's numbers")
    r.add_argument("--paper-dataset", default="cifar100", choices=["cifar100", "imagenet"],
                   help="which of the paper's studies the results stand for")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["perf-child"]:  # hidden: a child process of `perf --json` (bench/perf_child.py)
        from bench import perf_child

        return perf_child.main(argv[1:])
    args = _parser().parse_args(argv)
    from bench import config

    try:
        if args.command == "sweep":
            from bench import sweep

            return sweep.main(args)
        if args.command == "report":
            from plots import report

            for folder in args.results:
                try:
                    paths = report.write(folder, f"{args.out}/{os.path.basename(os.path.normpath(folder))}",
                                         args.reference, args.paper_dataset)
                except FileNotFoundError as e:
                    raise config.ConfigError(str(e)) from None
                print(f"{folder}: wrote {len(paths)} files to {paths[0].parent}", flush=True)
                print(paths[-1].read_text(), flush=True)
            return 0
        if args.command == "project":
            from bench import project

            paths = project.main(args)
            print(f"wrote {', '.join(str(p) for p in paths)}", flush=True)
            return 0
        if args.command == "perf" and args.json and not args.config:
            args.overrides = ["global_batch=256", *args.overrides]  # the default study's smallest batch
        cfg = config.load(args.config, args.overrides)
        if args.command == "train":
            from bench import train

            world = train.distributed.init()
            if world.is_chief:
                print(f"run {cfg.run_id(world.size)} on {world.size} worker(s): {cfg.to_dict()}", flush=True)
            try:
                row = train.run(cfg, world)
            except config.ConfigError:
                raise
            except Exception as e:  # recorded as a failed run by train.run
                print(f"error: run failed: {type(e).__name__}: {e}", file=sys.stderr)
                return 1
            if world.is_chief:
                print(f"{row['status']}: top1 {row['top1']:.4f}  top5 {row['top5']:.4f}  "
                      f"{row['images_per_s']:,.0f} img/s  {row['wall_time_s']:.1f} s  -> "
                      f"{cfg.results_dir}/runs.parquet", flush=True)
        if args.command == "perf" and args.json:
            from bench import perf

            names = args.optimizers or (perf.QUICK_OPTIMIZERS if args.quick else perf.JSON_OPTIMIZERS)
            doc = perf.bench(cfg, names.split(","), quick=args.quick)
            print(perf.report(doc), flush=True)
            print(f"-> {perf.write(doc, args.json)}", flush=True)
        elif args.command == "perf":
            from bench import distributed, perf

            world = distributed.init()
            table = perf.run(cfg, (args.optimizers or perf.OPTIMIZERS).split(","), args.steps, args.rounds, world)
            if world.is_chief:
                import pandas as pd

                with pd.option_context("display.width", 200, "display.max_columns", 30):
                    print(table.round(3).to_string(index=False))
                if args.out:
                    table.to_csv(args.out, index=False)
    except config.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def entry() -> int:
    """``main``, and under MPI the abort of the job on any exception that escapes it."""
    from bench.environment import under_mpi

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
