"""What a run leaves for TensorFlow's own tools: TensorBoard events equal to the history table, and the trained
model, which ``keras.models.load_model`` reads back and which reproduces the row's top-1 without the harness."""

import json
import math

import keras
import numpy as np
import pytest

from bench import config, data
from bench import tensorboard as tb
from bench.results import load_history, load_runs
from conftest import run_cli

# 8 steps an epoch, an evaluation every 4 steps, every step logged; the EMA and PreciseBN both change what is
# evaluated, so the saved model must carry both to reproduce the top-1
TINY = ["dataset=synthetic", "synthetic_image_size=8", "synthetic_train_size=512", "synthetic_test_size=256",
        "width=4", "global_batch=64", "per_worker_batch=32", "steps=12", "log_every_steps=1",
        "eval_every_epochs=0.5", "eval_ema=true", "ema_decay=0.9", "precise_bn_images=128", "optimizer=nlcg-fr"]


def _sets(items):
    return [a for item in items for a in ("--set", item)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("tb")
    p = run_cli(["train", *_sets([*TINY, f"output_dir={out}", "sweep=tiny"])])
    assert p.returncode == 0, p.stderr[-3000:]
    return out / "tiny", p


def test_every_history_scalar_is_in_the_events_at_its_step(trained):
    folder, _ = trained
    run = load_runs(folder).iloc[0]
    history = load_history(folder)
    events, text = tb.read(folder / "tensorboard" / f"{run.run_id}-a1")
    assert json.loads(text.strip("`\n")) == json.loads(run.config)  # the config, as the row records it
    logged, evals = history[history.loss.notna()], history[history.top1.notna()]
    assert len(logged) == 12 and list(evals.step) == [4, 8, 12]
    checked = 0
    for part, rows, keys in (("train", logged, [c for c in logged if c not in tb.NOT_SCALARS]),
                             ("eval", evals, [c for c in tb.EVAL_KEYS if c in evals])):
        for key in keys:
            if rows[key].isna().all() or key in ("top1", "top5", "eval_loss", "val_top1") and part == "train":
                continue
            series = events[f"{part}/{key}"]
            assert sorted(series) == list(rows.step), key
            for step, value in zip(rows.step, rows[key], strict=True):
                assert tb.same(float(value), series[int(step)]), (key, step, value, series[int(step)])
                checked += 1
    assert {"train/alpha", "train/beta", "train/noise_scale", "train/lr", "eval/top1"} <= set(events)
    assert checked >= 12 * 8
    # images/s of each logged step, re-derived from the history's clock: global batch x steps / train time
    steps, clock = logged.step.to_numpy(), logged.time_s.to_numpy()
    rates = events["train/images_per_s"]
    assert sorted(rates) == list(steps[1:])  # the first step is the compilation's: no rate
    for i in range(1, len(steps)):
        want = 64 * (steps[i] - steps[i - 1]) / (clock[i] - clock[i - 1])
        assert math.isclose(rates[int(steps[i])], want, rel_tol=1e-6)


def test_the_saved_model_reproduces_the_rows_top1(trained):
    folder, p = trained
    run = load_runs(folder).iloc[0]
    path = folder / "models" / f"{run.run_id}.keras"
    assert f"model: {path}" in p.stdout
    model = keras.models.load_model(path)
    cfg = config.make({k: v for k, v in json.loads(run.config).items()})
    correct = total = 0
    for images, labels in data.eval_dataset(cfg, workers=1, rank=0, batch=100):
        logits = model(images, training=False).numpy()
        correct += int((logits.argmax(axis=1) == labels.numpy()).sum())
        total += len(labels)
    assert total == 256 and correct / total == pytest.approx(run.top1, abs=1e-12)
    assert 0 < run.top1 < 1  # not a degenerate model the comparison could not tell apart


def test_a_sweep_keeps_no_model_but_writes_events(tmp_path):
    sweep = tmp_path / "s.toml"
    sweep.write_text(f'''output_dir = "{tmp_path}"
dataset = "synthetic"
synthetic_image_size = 8
synthetic_train_size = 512
synthetic_test_size = 256
width = 4
global_batch = 64
steps = 4
eval_every_epochs = 0
[grid]
seed = [0]
''')
    p = run_cli(["sweep", str(sweep)])
    assert p.returncode == 0, p.stderr[-3000:]
    runs = load_runs(tmp_path / "s")
    assert list(runs.status) == ["complete"]
    assert not (tmp_path / "s" / "models").exists()
    events, _ = tb.read(tmp_path / "s" / "tensorboard" / f"{runs.run_id.iloc[0]}-a1")
    assert sorted(events["train/loss"]) == [1, 2, 3, 4]  # log_every_steps = 1 (the default): every step


def test_the_event_reader_and_writer_agree_on_values_they_store_as_float32(tmp_path):
    log = tb.EventLog(tmp_path, {"a": 1}, global_batch=10)
    rows = [{"step": 1, "loss": 2.5, "time_s": 0.0, "b_small": 3}, {"step": 3, "loss": np.float32(0.1), "time_s": 2.0},
            {"step": 3, "time_s": 2.0, "top1": 1 / 3, "top5": 1.0, "extra": 7.0}]
    for row in rows:
        log.log(row)
    log.close()
    events, text = tb.read(tmp_path)
    assert set(events) == {"train/loss", "train/time_s", "train/images_per_s", "eval/top1", "eval/top5"}
    assert events["train/images_per_s"] == {3: 10.0} and tb.same(1 / 3, events["eval/top1"][3])
    assert not tb.same(0.1, events["train/loss"][1]) and "b_small" not in str(events)
