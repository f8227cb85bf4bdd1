"""bench perf --json and bench project: the arithmetic against hand computations, the whole chain on a tiny
workload. No timing assertions: speed is checked by ``make bench``, not by unit tests."""

import json
import math

import numpy as np
import pytest
from test_plugins import example  # noqa: F401 - the fixture: examples/plugin installed, never skipped

from bench.config import ConfigError, RunConfig
from bench.perf import flops, projection, ratios
from conftest import requires_horovod, run_cli

# A tiny workload: 8x8 synthetic images, a 4-filter ResNet-8.
TINY = ["--set", "dataset=synthetic", "--set", "synthetic_image_size=8", "--set", "width=4",
        "--set", "eval_every_epochs=0", "--set", "synthetic_test_size=256"]


# ------------------------------------------------------------------------------------------ FLOPs
def test_flop_counter_matches_a_hand_count():
    import keras
    from keras import layers

    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)  # 8x8x4, kernel 3x3x3
    x = layers.Conv2D(6, 3, strides=2, padding="valid")(x)  # (8-3)//2+1 = 3: 3x3x6, kernel 3x3x4
    x = layers.Conv2D(6, 1, groups=2)(x)  # 3x3x6, kernel 1x1x(6/2)
    x = layers.BatchNormalization()(layers.ReLU()(x))  # not counted
    x = layers.Dense(7)(x)  # applied at each of 3x3 positions: 6 -> 7
    logits = layers.Dense(5)(layers.Flatten()(x))  # 63 -> 5
    inner = keras.Model(inputs, logits)
    outer = keras.Sequential([keras.Input((8, 8, 3)), inner])  # nested models are walked into
    macs = 8 * 8 * 4 * 27 + 3 * 3 * 6 * 36 + 3 * 3 * 6 * 3 + 9 * 6 * 7 + 63 * 5
    assert macs == 6912 + 1944 + 162 + 378 + 315
    assert flops.forward_flops(inner) == 2 * macs
    assert flops.forward_flops(outer) == 2 * macs
    assert flops.train_flops_per_image(outer) == 3 * 2 * macs


@pytest.mark.slow
def test_resnet50_flops_and_parameters_match_the_published_counts():
    import keras

    model = keras.applications.ResNet50(weights=None, classes=1000)
    # He et al. 2016, table 1: ResNet-50 is 3.8 x 10^9 multiply-adds ("FLOPs") per 224x224 image
    assert flops.forward_flops(model) / 2 == pytest.approx(3.8e9, rel=0.03)
    assert sum(int(np.prod(v.shape)) for v in model.trainable_variables) == projection.RESNET50_PARAMETERS


# ------------------------------------------------------------------------------------------ intervals
def test_ratio_interval_by_the_delta_method_by_hand():
    a, b = [10.0, 12.0, 14.0], [4.0, 5.0, 6.0]
    mean_a, se_a, n_a = ratios.mean_se(a)
    assert (mean_a, n_a) == (12.0, 3) and se_a == pytest.approx(2 / math.sqrt(3))
    mean_b, se_b, n_b = ratios.mean_se(b)
    assert (mean_b, n_b) == (5.0, 3) and se_b == pytest.approx(1 / math.sqrt(3))
    r, (low, high) = ratios.ratio_interval(mean_a, se_a, n_a, mean_b, se_b, n_b)
    # relative se sqrt((1.1547/12)^2 + (0.57735/5)^2) = sqrt(0.0092593 + 0.0133333) = 0.150308;
    # half-width t_{0.975,2} x r x that = 4.302653 x 2.4 x 0.150308 = 1.552143
    assert r == pytest.approx(2.4)
    assert (low, high) == (pytest.approx(0.847857, rel=1e-5), pytest.approx(3.952143, rel=1e-5))


def test_paired_ratio_interval_by_hand_and_drift_cancels():
    a, b = [10.0, 12.0, 14.0], [4.0, 5.0, 6.0]
    r, (low, high) = ratios.paired_ratio_interval(a, b)
    # r = 12 / 5 = 2.4; a_i - r b_i = [0.4, 0, -0.4], sd 0.4; se = 0.4 / sqrt(3) / 5 = 0.0461880;
    # half-width t_{0.975,2} x se = 4.302653 x 0.0461880 = 0.198729 (the unpaired band above: 1.55)
    assert r == pytest.approx(2.4)
    assert (low, high) == (pytest.approx(2.201271, rel=1e-5), pytest.approx(2.598729, rel=1e-5))
    # a machine twice as slow in round 2 for both sides leaves the ratio exact
    assert ratios.paired_ratio_interval([2.0, 1.0], [1.0, 0.5]) == (2.0, (2.0, 2.0))
    e = ratios.entry(ratios.side("a", "ms", a), ratios.side("b", "ms", b), 2.5, "<=", paired=True)
    assert e["interval"] == "paired" and e["ci95"] == [pytest.approx(low), pytest.approx(high)]
    assert e["meets_target"] is True
    with pytest.raises(ValueError, match="same number of rounds"):
        ratios.paired_ratio_interval([1.0, 2.0], [1.0])


def test_rounds_rotate_so_each_goes_first_in_turn():
    from bench.perf.timing import rotated

    assert [rotated(("a", "b", "c"), r) for r in range(4)] == [
        ("a", "b", "c"), ("b", "c", "a"), ("c", "a", "b"), ("a", "b", "c")]
    assert rotated(["x", "y"], 1) == ("y", "x")


def test_t_quantiles_and_a_single_sample_has_no_band():
    assert ratios.t975(1) == pytest.approx(12.7062, rel=1e-5)
    assert ratios.t975(9) == pytest.approx(2.26216, rel=1e-5)
    assert ratios.t975(200) == pytest.approx(1.97190, rel=1e-5)  # printed t tables: 1.972
    assert math.isnan(ratios.t975(0))
    r, band = ratios.ratio_interval(*ratios.mean_se([3.0]), *ratios.mean_se([2.0, 2.0]))
    assert r == 1.5 and all(math.isnan(x) for x in band)


def test_entry_verdict_follows_the_direction_and_json_has_no_nan():
    fast, slow = ratios.side("a", "images/s", [110, 90]), ratios.side("b", "images/s", [50, 50])
    assert ratios.entry(fast, slow, 1.5)["meets_target"] is True
    assert ratios.entry(fast, slow, 2.5)["meets_target"] is False
    assert ratios.entry(fast, slow, 2.5, "<=")["meets_target"] is True
    reported = ratios.entry(fast, slow, None)
    assert reported["meets_target"] is None and reported["ratio"] == 2.0
    one = ratios.finite_or_none(ratios.entry(ratios.side("a", "s", [1.0]), slow, 1.0))
    assert one["ci95"] == [None, None] and one["numerator"]["se"] is None
    json.dumps(one, allow_nan=False)


def test_one_worker_takes_twice_the_micro_batch_of_each_of_two():
    from bench.perf.timing import one_worker_split

    assert one_worker_split(RunConfig(global_batch=256, per_worker_batch=128)) == (256, 1)
    assert one_worker_split(RunConfig(global_batch=4096, per_worker_batch=128)) == (256, 16)
    with pytest.raises(ConfigError):
        one_worker_split(RunConfig(global_batch=255, per_worker_batch=128))


def test_perf_json_refuses_to_run_under_mpi(monkeypatch):
    from bench.perf import bench_json

    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="outside mpirun"):
        bench_json.bench(RunConfig(global_batch=256), ["momentum"])


# ------------------------------------------------------------------------------------------ which optimizers
def test_defaults_are_the_registrys_perf_sets_and_the_lists_bench_perf_held():
    from test_registry import FORMER_APPLY, FORMER_JSON, FORMER_QUICK, FORMER_TABLE

    from bench import perf
    from bench.perf import bench_json

    assert perf.default_optimizers() == FORMER_TABLE
    assert perf.default_optimizers(json=True) == FORMER_JSON
    assert perf.default_optimizers(json=True, quick=True) == FORMER_QUICK
    assert projection.default_optimizers() == FORMER_APPLY
    # nlcg_vs_momentum_step's two sides first, always; the others in the order given
    assert bench_json.table_names(FORMER_JSON) == FORMER_JSON
    assert bench_json.table_names(["rmsprop", "nlcg-fr", "adam"]) == ["momentum", "nlcg-fr", "rmsprop", "adam"]


@pytest.mark.usefixtures("example")
def test_perf_times_a_plugin_by_entry_point_and_by_reference(tmp_path):
    from bench.perf.optimizer_table import check_names

    out = tmp_path / "perf.csv"
    names = ["momentum", "sign-momentum", "nlcg_bench_example.optim:SignMomentum"]
    check_names(names)
    with pytest.raises(ConfigError, match="adamx"):
        check_names(["adamx"])
    p = run_cli(["perf", *TINY, "--set", "global_batch=64", "--optimizers", ",".join(names), "--steps", "2",
                 "--rounds", "2", "--out", str(out)], timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    import pandas as pd

    table = pd.read_csv(out)
    assert list(table.optimizer) == names and (table.step_ms > 0).all() and table.step_ratio[0] == 1.0


# ------------------------------------------------------------------------------------------ projection
def test_ring_allreduce_by_hand():
    # 100 MB over 4 workers at 12.5 GB/s, 5 us: 2 x 3/4 x 0.008 s + 2 x 3 x 5 us
    assert projection.ring_allreduce_s(100e6, 4, 12.5e9, 5e-6) == pytest.approx(0.012 + 3e-5)
    assert projection.ring_allreduce_s(100e6, 1, 12.5e9, 5e-6) == 0.0
    assert projection.steps() == 1760  # ceil(90 x 1,281,167 / 65,536)


def test_projection_adds_compute_allreduce_and_optimizer():
    table = projection.project({"momentum": 1e-9, "nlcg-fr": 4e-9}, gpus=[64, 1024], bandwidth_gbps=100,
                               latency_us=5, images_per_s_per_gpu=1000.0, optimizer_speedup=10.0,
                               parameters=1_000_000)
    row = table[(table.optimizer == "nlcg-fr") & (table.gpus == 64)].iloc[0]
    assert row.compute_s == pytest.approx(65536 / 64 / 1000)
    assert row.allreduce_s == pytest.approx(2 * 63 / 64 * 4e6 / 12.5e9 + 2 * 63 * 5e-6)
    assert row.optimizer_s == pytest.approx(1e6 * 4e-9 / 10)
    assert row.hours == pytest.approx(1760 * (row.compute_s + row.allreduce_s + row.optimizer_s) / 3600)
    assert len(table) == 4


def _bench_json(path, resnet50_table=True):
    doc = {"when": "2026-01-01T00:00:00+00:00", "parameters": 1000, "machine": {"memory_bandwidth_gbs": 9.0},
           "optimizers": [{"optimizer": "momentum", "apply_ms": 50.0}, {"optimizer": "nlcg-fr", "apply_ms": 70.0}]}
    if resnet50_table:  # what the projection reads: apply measured on ResNet-50's variables (here 1000 "params")
        doc["optimizer_apply_resnet50"] = [{"optimizer": "momentum", "apply_ms": 1.0, "parameters": 1000},
                                           {"optimizer": "nlcg-fr", "apply_ms": 3.0, "parameters": 1000}]
    path.write_text(json.dumps(doc))
    return path


def test_project_cli_writes_the_table_and_a_figure(tmp_path):
    out = tmp_path / "projection"
    p = run_cli(["project", "--bench", str(_bench_json(tmp_path / "bench.json")), "--gpus", "64,128",
                 "--out", str(out)], timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    for ext in ("csv", "json", "png", "pdf"):
        assert (out / f"projected_wall_time.{ext}").stat().st_size > 0
    doc = json.loads((out / "projected_wall_time.json").read_text())
    assert doc["assumptions"]["projection"] is True
    assert doc["assumptions"]["optimizer_speedup"] == pytest.approx(100.0)  # 900 GB/s / 9 GB/s
    rows = {(r["optimizer"], r["gpus"]): r for r in doc["rows"]}
    assert set(rows) == {("momentum", 64), ("momentum", 128), ("nlcg-fr", 64), ("nlcg-fr", 128)}
    # 1 ms per 1000 parameters on the CPU, 100x faster on the GPU, for ResNet-50's parameters
    assert rows["momentum", 64]["optimizer_s"] == pytest.approx(projection.RESNET50_PARAMETERS * 1e-6 / 100)
    assert rows["nlcg-fr", 64]["hours"] > rows["momentum", 64]["hours"] > rows["momentum", 128]["hours"]
    assert "rmsprop" in p.stdout  # named as not projected: bench.json has no apply_ms for it
    # the precision the harness runs on GPUs by default: mixed_float16 at 1270 img/s per V100, named in the JSON
    a = doc["assumptions"]
    assert (a["precision"], a["images_per_s_per_gpu"], a["gradient_bytes"]) == ("mixed_float16", 1270.0, 4)
    assert rows["momentum", 64]["compute_s"] == pytest.approx(65536 / 64 / 1270)


def test_project_precision_and_compression_flags(tmp_path):
    bench = str(_bench_json(tmp_path / "bench.json"))
    p = run_cli(["project", "--bench", bench, "--gpus", "64", "--precision", "float32", "--allreduce-compression",
                 "fp16", "--out", str(tmp_path / "a")], timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    doc = json.loads((tmp_path / "a" / "projected_wall_time.json").read_text())
    assert (doc["assumptions"]["precision"], doc["assumptions"]["images_per_s_per_gpu"]) == ("float32", 412.0)
    row = doc["rows"][0]
    assert row["compute_s"] == pytest.approx(65536 / 64 / 412)
    # 2-byte gradients: half the bandwidth term of the ring allreduce
    nbytes = 2 * projection.RESNET50_PARAMETERS
    assert row["allreduce_s"] == pytest.approx(2 * 63 / 64 * nbytes / 12.5e9 + 2 * 63 * 5e-6)
    for args, words in [(["--precision", "mixed_bfloat16"], "bfloat16"), (["--allreduce-compression", "bf16"], "bf16")]:
        p = run_cli(["project", "--bench", bench, *args, "--out", str(tmp_path / "b")], timeout=120)
        assert p.returncode == 2 and words in p.stderr and "valid" in p.stderr


def test_project_needs_the_resnet50_apply_table(tmp_path):
    bench = _bench_json(tmp_path / "bench.json", resnet50_table=False)  # an old bench.json: small-model apply only
    p = run_cli(["project", "--bench", str(bench), "--out", str(tmp_path / "p")], timeout=120)
    assert p.returncode == 2 and "optimizer_apply_resnet50" in p.stderr


def test_apply_table_by_hand():
    from bench.perf.bench_json import apply_table

    rows = apply_table({"parameters": 2_000_000, "variables": 3, "steps_per_round": 2,
                        "round_ms": {"momentum": [10.0, 12.0, 14.0], "nlcg-pr": [30.0, 30.0, 30.0]}})
    m = rows[0]
    assert (m["optimizer"], m["apply_ms"], m["rounds"]) == ("momentum", 12.0, 3)
    assert m["apply_ms_ci95"] == pytest.approx(4.302653 * 2 / math.sqrt(3), rel=1e-5)  # t_{0.975,2} x se
    assert m["apply_ms_per_million"] == pytest.approx(6.0)
    assert rows[1]["apply_ms_ci95"] == 0.0


def test_study_shapes_are_mini_s():
    import tomllib

    from bench.perf.bench_json import STUDY
    from conftest import ROOT

    mini = tomllib.loads((ROOT / "experiments" / "mini.toml").read_text())
    assert {k: mini[k] for k in STUDY if k != "global_batch"} == {k: v for k, v in STUDY.items() if k != "global_batch"}
    assert STUDY["global_batch"] == max(b for g in mini["grid"] for b in g["global_batch"])


def _fake_measurements(step_peaks=(300, 100), whole_peaks=(1100, 1000)):
    """in_process.run, children.scaling / memory / optimizers outputs, made up, for bench_json.entries."""
    local = {"harness": [100.0, 110.0], "bare": [100.0, 100.0], "pipeline": [900.0, 900.0], "matmul": [1e9, 1e9],
             "harness_bf16": [120.0, 132.0], "harness_xla": [90.0, 99.0], "train_flops_per_image": 1000,
             "micro_batch": 256, "accumulation": 1, "matmul_n": 2048}
    study = {**local, "harness": [80.0, 80.0], "micro_batch": 1536, "accumulation": 3}

    def child(workers):
        return {"workers": workers, "threads": 1, "micro_batch": 128, "accumulation": 1, "step_s": [0.1, 0.1],
                "allreduce_s": [0.01], "images_per_s": 1000.0 * workers}

    scale = {2: [child(2)], 1: [child(1)], "ceiling": [], "no_sync": []}
    memory = [{"global_batch": b, "micro_batch": 256, "accumulation": b // 256, "model": "resnet8", "width": 4,
               "peak_kib": whole, "peak_before_step_kib": 900, "rss_before_step_kib": 800, "peak_reset": True,
               "step_peak_kib": own, "step_s": 1.0}
              for b, own, whole in zip((98304, 512), step_peaks, whole_peaks, strict=True)]
    table = [{"optimizer": n, "workers": 2, "round_ms": [10.0, 10.0], "apply_ms": 1.0, "samples": 4, "rounds": 2}
             for n in ("momentum", "nlcg-fr")]
    return local, scale, memory, table, study


def test_entries_memory_compares_the_steps_own_peaks_and_bf16_target_follows_the_cpu():
    from bench.perf.bench_json import entries

    out = entries(*_fake_measurements(), bf16_target=True)
    # the step's own peaks, 300 / 100 KiB; the whole processes' peaks (1100 / 1000) would give 1.1
    assert out["accumulation_memory"]["ratio"] == pytest.approx(3.0)
    assert out["accumulation_memory"]["meets_target"] is False
    assert out["bf16_vs_fp32"]["ratio"] == pytest.approx(1.2) and out["bf16_vs_fp32"]["target"] == 1.1
    assert out["harness_vs_bare_study"]["ratio"] == pytest.approx(0.8)
    assert out["xla_vs_plain_study"]["ratio"] == pytest.approx(94.5 / 80)
    plain = entries(*_fake_measurements(), bf16_target=False)["bf16_vs_fp32"]
    assert plain["target"] is None and plain["meets_target"] is None


def test_project_without_bench_json_exit_2(tmp_path):
    p = run_cli(["project", "--bench", str(tmp_path / "nope.json")], timeout=60)
    assert p.returncode == 2 and "nope.json" in p.stderr


# ------------------------------------------------------------------------------------------ end to end
@requires_horovod
@pytest.mark.mpi
@pytest.mark.slow
def test_perf_json_quick_writes_every_entry(tmp_path):
    from bench.perf.bench_json import TARGETS

    out = tmp_path / "bench.json"
    p = run_cli(["perf", "--json", str(out), "--quick", *TINY], timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert "claim_ms_10k" not in doc  # --quick: the claim over 1,000 finished runs only
    for key, (target, _) in TARGETS.items():
        if key == "claim_ms_10k":
            continue
        e = doc[key]
        if key == "bf16_vs_fp32" and not doc["machine"]["cpu_bf16_flags"]:
            target = None  # no bfloat16 arithmetic on this CPU: reported only
        assert math.isfinite(e["ratio"]) and e["ratio"] > 0, key
        assert e["target"] == target and (e["meets_target"] is None) == (target is None), key
        for s in (e["numerator"], e["denominator"]):
            assert s["n"] >= 1 and s["unit"] and math.isfinite(s["mean"]), key
    assert doc["scaling_2_workers"]["numerator"]["what"].startswith("2 worker")
    assert [len(r) for r in doc["scaling_no_sync"]["numerator"]["per_rank"]] == [2]  # both ranks, summed
    assert doc["accumulation_memory"]["numerator"]["accumulation"] == 8192 // 256
    assert doc["harness_vs_bare_study"]["numerator"]["accumulation"] == 3  # 4608 in micro-batches of 1536
    assert doc["recompile_per_run"]["figures"]["runs"] == 8 and doc["claim_ms_1k"]["numerator"]["finished_runs"] == 1000
    assert doc["claim_ms_1k"]["numerator"]["files_read_per_claim"] == 1
    assert [r["optimizer"] for r in doc["optimizers"]] == ["momentum", "nlcg-fr"]
    row = doc["optimizers"][0]
    assert row["workers"] == 2 and doc["parameters"] > 0
    assert row["step_ms_ci95"] == pytest.approx(ratios.t975(row["rounds"] - 1) * row["step_ms_se"])
    assert row["step_ms_sd"] > 0 and "apply_ms_ci95" not in row  # a single step's spread is named sd
    apply = {r["optimizer"]: r for r in doc["optimizer_apply_resnet50"]}
    assert set(apply) == {"momentum", "rmsprop", "nlcg-fr", "nlcg-pr"}
    assert apply["momentum"]["parameters"] == projection.RESNET50_PARAMETERS
    assert apply["nlcg-pr"]["apply_ms"] > apply["momentum"]["apply_ms"] > 0  # 5 buffers against 1
    assert doc["machine"]["cpu_count"] >= 1 and doc["machine"]["cpu_model"] and doc["when"]
    assert "harness_vs_bare" in p.stdout and "nlcg-fr" in p.stdout  # the printed table
