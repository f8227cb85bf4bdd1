"""Train runs one after another in this process (or under mpirun, in this group of ranks), in the order argv[2]
names them (comma-separated, from RUNS), into the results folder argv[1]; ``--precision P`` for all. Rank 0 then
writes argv[1]/traces.json: how often each kept train step was traced (bench.train.Compiled)."""

import json
import os
import sys
from pathlib import Path

from bench import config, distributed, train

# A and B share a shape (model, optimizer class and hyperparameters, batch, accumulation, precision) and differ in
# everything a kept step must not bake in: seed, budget, schedule, weight decay, label smoothing, evaluation
# cadence. C has another batch (another accumulation count): a shape of its own, kept beside A's.
BASE = {"dataset": "synthetic", "synthetic_image_size": 8, "synthetic_train_size": 512, "synthetic_test_size": 256,
        "width": 4, "per_worker_batch": 32, "log_every_steps": 1, "optimizer": "nlcg-pr", "eval_ema": True,
        "checkpoint_every_epochs": 1.0}
RUNS = {
    "A": {"seed": 1, "global_batch": 64, "epochs": 3, "base_lr": 0.05, "warmup_fraction": 0.25,
          "decay_fractions": [0.5], "weight_decay": 1e-3, "label_smoothing": 0.1, "eval_every_epochs": 1.0},
    "B": {"seed": 2, "global_batch": 64, "epochs": 2, "base_lr": 0.2, "weight_decay": 5e-4, "label_smoothing": 0.05,
          "eval_every_epochs": 0.5, "decay_fractions": [0.3, 0.6, 0.8]},
    "C": {"seed": 3, "global_batch": 128, "epochs": 1, "eval_every_epochs": 0.5},
}


def make_cfg(out: str, name: str, precision: str):
    return config.make({**BASE, **RUNS[name], "precision": precision, "output_dir": out, "sweep": name})


def main(out: str, order: str, precision: str = "float32", world=None) -> None:
    world = world or (distributed.init() if "OMPI_COMM_WORLD_SIZE" in os.environ else distributed.World())
    for name in order.split(","):
        train.run(make_cfg(out, name, precision), world)
        train.between_runs()  # as a sweep does after each run
    if world.is_chief:
        traces = [c.train_step.experimental_get_tracing_count() for c in train._compiled.values()]
        (Path(out) / "traces.json").write_text(json.dumps(traces))


if __name__ == "__main__":
    named = dict(zip(sys.argv[3::2], sys.argv[4::2], strict=True))
    main(sys.argv[1], sys.argv[2], named.get("--precision", "float32"))
