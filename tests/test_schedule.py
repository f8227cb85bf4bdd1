import numpy as np
import pytest

from bench import config, schedule


def lr_at(sched, steps):
    return np.array([float(sched(s)) for s in steps])


def test_values_against_hand_computed_numbers():
    # peak = 0.1 * 1024 / 256 = 0.4; 200 steps: warm-up 25 steps, decays at 102 and 153.
    cfg = config.make({"global_batch": 1024, "per_worker_batch": 1024})
    sched = schedule.from_config(cfg, total_steps=200)
    assert (sched.warmup_steps, sched.boundaries) == (25, [102, 153])
    # t=9: 0.4 + (0.1 - 0.4) * sqrt(1 - 9/25) = 0.4 - 0.3 * 0.8 = 0.16; t=16: 0.4 - 0.3 * 0.6 = 0.22
    got = lr_at(sched, [0, 9, 16, 25, 101, 102, 152, 153, 199])
    want = [0.1, 0.16, 0.22, 0.4, 0.4, 0.04, 0.04, 0.004, 0.004]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_init_above_peak_is_capped_and_no_warmup():
    sched = schedule.WarmupStepDecay(peak=0.05, init=0.1, warmup_steps=0, boundaries=[10], decay_factor=0.5)
    np.testing.assert_allclose(lr_at(sched, [0, 9, 10]), [0.05, 0.05, 0.025], rtol=1e-6)


def test_monotone_warmup_and_serialisable():
    sched = schedule.WarmupStepDecay(peak=2.0, init=0.1, warmup_steps=50, boundaries=[])
    lrs = lr_at(sched, range(60))
    assert np.all(np.diff(lrs[:51]) > 0) and lrs[50] == pytest.approx(2.0)
    again = schedule.WarmupStepDecay.from_config(sched.get_config())
    np.testing.assert_allclose(lr_at(again, range(60)), lrs)


def test_linear_scaling():
    assert schedule.peak_lr(0.1, 65536, 256) == pytest.approx(25.6)
