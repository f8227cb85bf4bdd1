"""Run in one process or under mpirun: an uninterrupted run, and the same run failing at step 10 then
resumed from its step-8 checkpoint. Rank 0 saves both histories to argv[1] (npz) for the test to compare."""

import os
import sys
from pathlib import Path

import numpy as np

from bench import config, distributed, results, train


def make_cfg(out: Path, optimizer: str = "nlcg-pr", model: str = "resnet8", precision: str = "float32"):
    """``optimizer`` and ``model`` may be plug-ins' (tests/test_plugins.py: examples/plugin's)."""
    return config.make({
        "dataset": "synthetic", "synthetic_image_size": 8, "synthetic_train_size": 512, "synthetic_test_size": 256,
        "width": 4, "global_batch": 64, "per_worker_batch": 32, "steps": 12, "log_every_steps": 1,
        "eval_every_epochs": 0.5, "checkpoint_every_epochs": 0.5, "optimizer": optimizer, "eval_ema": True,
        "output_dir": str(out), "sweep": "resume", "model": model, "precision": precision,
        **({"model_hparams": {"filters": 4}} if model != "resnet8" else {}),
    })


def failing_at(n):
    real = train.make_train_step

    def make(*args, **kwargs):
        step, calls = real(*args, **kwargs), [0]

        def wrapped(iterator):
            calls[0] += 1
            if calls[0] == n:
                raise RuntimeError("node lost")
            return step(iterator)

        wrapped.loss_scale = step.loss_scale  # mixed_float16's scale, checkpointed with the run
        return wrapped

    return make


def main(out: str, world=None, optimizer: str = "nlcg-pr", model: str = "resnet8", precision: str = "float32") -> None:
    world = world or (distributed.init() if "OMPI_COMM_WORLD_SIZE" in os.environ else distributed.World())
    base = Path(out).parent
    train.run(make_cfg(base / "straight", optimizer, model, precision), world)
    cfg = make_cfg(base / "resumed", optimizer, model, precision)
    real = train.make_train_step
    train.make_train_step = failing_at(10)
    try:
        train.run(cfg, world)
        raise AssertionError("the injected failure did not happen")
    except RuntimeError as e:
        assert "node lost" in str(e)
    finally:
        train.make_train_step = real
    ckpt_dir = base / "resumed" / "resume" / "checkpoints"
    kept = sorted(p.name for p in ckpt_dir.glob("*/*")) if world.is_chief else []
    slots = []  # the optimizer's variables the checkpoint holds
    if world.is_chief:
        import tensorflow as tf

        slots = [name for name, _ in tf.train.list_variables(tf.train.latest_checkpoint(str(next(ckpt_dir.iterdir()))))
                 if name.startswith("optimizer/")]
    train.run(cfg, world)
    if world.is_chief:
        # every logged number but the clock (time_s) and the attempt counter
        a, b = (results.load_history(base / d / "resume").drop(columns=["run_id", "time_s", "attempt"])
                for d in ("straight", "resumed"))
        runs = results.load_runs(base / "resumed" / "resume")
        np.savez(out, straight=a.to_numpy(float), resumed=b[a.columns].to_numpy(float),
                 columns=np.array(list(a.columns)),
                 statuses=np.array(list(runs.status)), resumed_from=runs.resumed_from_step.to_numpy(),
                 attempts=runs.attempt.to_numpy(), kept=np.array(kept), slots=np.array(slots),
                 left=np.array([str(p) for p in ckpt_dir.glob("*/*")]))


if __name__ == "__main__":
    named = dict(zip(sys.argv[2::2], sys.argv[3::2], strict=True))  # --optimizer NAME --model NAME --precision P
    main(sys.argv[1], optimizer=named.get("--optimizer", "nlcg-pr"), model=named.get("--model", "resnet8"),
         precision=named.get("--precision", "float32"))
