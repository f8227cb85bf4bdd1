"""One compilation per shape: a process that trains runs one after another reuses the traced train step and
evaluation of an earlier run of the same shape, its variables reset in place (bench.train.Compiled). The
reference is a fresh process: B trained after A (and after C, of another shape) gives B's row and history to the
last bit, as B alone does, on 1 and on 2 workers, in float32 and mixed_float16."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import PYTHON, ROOT, mpirun, requires_horovod

WORKER = str(ROOT / "tests" / "reuse_worker.py")
# what a run measured that is not the clock
CLOCK = {"time_s", "train_time_s", "compile_time_s", "eval_time_s", "wall_time_s", "images_per_s",
         "images_per_s_ci95", "time_to_target_s", "started_at", "finished_at", "host", "pid", "job", "attempt"}


def _train(out, order, np_=0, precision="float32"):
    args = [WORKER, str(out), order, "--precision", precision]
    p = subprocess.run(mpirun(np_, *args) if np_ else [PYTHON, *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads((out / "traces.json").read_text())


def _measured(out, name):
    from bench import results

    runs = results.load_runs(out / name)
    history = results.load_history(out / name)
    [row] = runs.to_dict("records")
    kept = {k: v for k, v in row.items() if k not in CLOCK and not k.endswith("_at")}
    kept["config"] = {k: v for k, v in json.loads(row["config"]).items() if k != "output_dir"}
    return kept, history.drop(columns=[c for c in history.columns if c in CLOCK])


def _same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b))


def _same_as_alone(tmp_path, np_, precision):
    traces = _train(tmp_path / "together", "A,C,B", np_, precision)
    assert traces == [1, 1]  # two shapes, each traced once: B ran on A's step
    _train(tmp_path / "alone", "B", np_, precision)
    row, history = _measured(tmp_path / "together", "B")
    row_alone, history_alone = _measured(tmp_path / "alone", "B")
    assert row["status"] == "complete" and row["steps"] == 16 and not np.isnan(row["top1"])
    assert len(history) == len(history_alone) > 16 and history.top1.notna().sum() == 4
    pd.testing.assert_frame_equal(history, history_alone)  # every logged number: loss, lr, alpha, beta, top1 ...
    differ = {k: (v, row_alone[k]) for k, v in row.items() if k != "results_dir" and not _same(v, row_alone[k])}
    assert not differ
    return history


@pytest.mark.slow
def test_a_run_after_others_equals_the_run_alone_on_one_worker(tmp_path):
    history = _same_as_alone(tmp_path, 0, "float32")
    # the control: B's numbers are not A's (the reset gave B its own seed, schedule and loss)
    a = _measured(tmp_path / "together", "A")[1]
    assert not np.array_equal(a.loss.to_numpy()[:5], history.loss.to_numpy()[:5])
    assert history.lr.max() == pytest.approx(0.2 * 64 / 256, rel=1e-6)  # B's peak, not A's 0.0125


@requires_horovod
@pytest.mark.mpi
@pytest.mark.slow
def test_a_run_after_others_equals_the_run_alone_on_two_workers_in_mixed_float16(tmp_path):
    history = _same_as_alone(tmp_path, 2, "mixed_float16")
    assert "loss_scale" in history and history[history.top1.isna()].loss_scale.notna().all()


def test_a_kept_step_is_reset_to_the_fresh_build_of_the_next_run(tmp_path):
    """In process: after a run, the next run's reused build holds exactly the variables a fresh build gives
    (weights, BN statistics, optimizer slots and counters, the EMA, the schedule), and the kept step and
    evaluation are the same objects."""
    sys.path.insert(0, str(ROOT / "tests"))
    import reuse_worker

    from bench import data, distributed, schedule, train

    train.forget_compiled()
    world = distributed.World()
    a, b = (reuse_worker.make_cfg(str(tmp_path), n, "float32") for n in ("A", "B"))
    train.run(a, world)
    info = data.info(b)
    reused = train._build(b, world, info, 2, 16, "x", reuse=True)
    fresh = train._build(b, world, info, 2, 16, "y", reuse=False)
    assert reused.reused and not fresh.reused
    for v, w in zip(reused.model.variables, fresh.model.variables, strict=True):
        np.testing.assert_array_equal(v.numpy(), w.numpy(), err_msg=v.path)
    assert len(reused.optimizer.variables) == len(fresh.optimizer.variables) > 4
    for v, w in zip(reused.optimizer.variables, fresh.optimizer.variables, strict=True):
        np.testing.assert_array_equal(v.numpy(), w.numpy(), err_msg=v.path)
    for v, w in zip(reused.checkpoint._variables(), fresh.checkpoint._variables(), strict=True):
        np.testing.assert_array_equal(v.numpy(), w.numpy())
    rate = reused.optimizer._learning_rate
    assert isinstance(rate, schedule.Adjustable)
    expected = schedule.from_config(b, 16)
    assert [float(rate(t)) for t in range(16)] == [float(expected(t)) for t in range(16)]
    assert float(reused.train_step.knobs.weight_decay) == np.float32(5e-4)
    assert float(reused.train_step.knobs.label_smoothing) == np.float32(0.05)
    train.forget_compiled()


def test_what_a_kept_step_bakes_in_is_in_its_key():
    """Another optimizer hyperparameter, precision, model width or accumulation is another shape; another seed,
    budget, schedule, weight decay or label smoothing value is not; zero weight decay is (it adds no term)."""
    import optimizers
    from bench import config, data, distributed, schedule, train

    base = config.make({"dataset": "synthetic", "synthetic_image_size": 8, "width": 4, "global_batch": 64,
                        "per_worker_batch": 32, "optimizer": "momentum"})
    world, info = distributed.World(), data.info(base)

    def key(accumulation=2, **changes):
        cfg = config.make({**base.to_dict(), **changes})
        opt = optimizers.get(cfg.optimizer, schedule.from_config(cfg, 10), **cfg.hparams)
        return train.shape_key(cfg, world, info, accumulation, opt)

    same = [key(seed=5), key(epochs=7), key(base_lr=0.3, warmup_fraction=0.5, decay_fractions=[0.2]),
            key(weight_decay=1e-3, label_smoothing=0.0), key(eval_every_epochs=0.25, output_dir="elsewhere")]
    assert all(k == key() for k in same)
    other = [key(hparams={"momentum": 0.8}), key(precision="mixed_bfloat16"), key(width=8), key(accumulation=1),
             key(optimizer="rmsprop"), key(weight_decay=0.0), key(label_smoothing=0.1), key(eval_ema=True)]
    assert all(k != key() for k in other) and len(set(other)) == len(other)
