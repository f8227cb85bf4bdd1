"""The gradient noise scale B_simple of McCandlish, Kaplan, Amodei et al., "An Empirical Model of Large-Batch
Training" (arXiv 1812.06162, appendix A), from two batch sizes that every data-parallel step already has.

Why two batch sizes: the expected squared norm of a mean gradient over B examples drawn independently is
E|G_B|^2 = |G|^2 + tr(Sigma) / B (G the true gradient, Sigma the per-example gradient covariance), so two
batch sizes give two equations for the two unknowns. The train step (bench.train.make_train_step) measures

- ``sq_small`` = |G_small|^2: the mean over micro-batches and workers of each micro-batch gradient's squared
  norm, B_small = the micro-batch;
- ``sq_big`` = |G_big|^2: the squared norm of the averaged gradient, B_big = the global batch;

and this module turns them into unbiased estimates (no TensorFlow here, so the math is tested on NumPy):

    |G|^2     ~ (B_big |G_big|^2 - B_small |G_small|^2) / (B_big - B_small)
    tr(Sigma) ~ (|G_small|^2 - |G_big|^2) / (1 / B_small - 1 / B_big)

One step's estimates are very noisy (|G|^2's can be negative), so each is smoothed by its own exponential
moving average (``DECAY`` per logged step, bias-corrected as in Adam so that early values are not pulled to
0), and B_simple = EMA[tr(Sigma)] / EMA[|G|^2]: the ratio of the averages (an average of single-step
ratios would be ruled by the steps whose |G|^2 estimate is near 0 or negative). It is NaN while the
smoothed |G|^2 is not positive (noise dominates what the run has seen) and for a run with one batch size
(one worker, no accumulation: B_small == B_big).

Sampling: the estimates are unbiased for draws with replacement (independent examples). The harness draws a
global batch without replacement from N examples; then tr(Sigma) estimates the covariance trace with the
N / (N - 1) correction and |G|^2 is low by tr(Sigma) / N, negligible unless B_big is a sizeable part of N
(tests/test_noise_scale.py checks both cases against the exact values of a least-squares problem).

Which gradient: the one the optimizer gets, of cross-entropy + L2 (the data term's alone would cost a second
backward pass). The L2 gradient is the same in every micro-batch, so it cancels exactly in |G_small|^2 -
|G_big|^2: tr(Sigma) is the data term's noise alone, and |G|^2 the squared norm of the whole objective's
gradient. B_simple is the data noise over the signal the optimizer follows; near a regularised minimum, where
the data and L2 gradients cancel, it is larger than the data loss's own noise scale. BatchNorm in training
mode couples a micro-batch's examples; the estimator treats each micro-batch's gradient as one draw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DECAY = 0.9  # per logged step: about the last 10 logged steps (log_every_steps apart)


def estimates(sq_small, sq_big, b_small, b_big):
    """(|G|^2, tr(Sigma)) unbiased from the squared norms at two batch sizes; NaN where b_small == b_big.
    Works on floats and NumPy arrays alike (elementwise)."""
    sq_small, sq_big = np.asarray(sq_small, dtype=float), np.asarray(sq_big, dtype=float)
    b_small, b_big = np.asarray(b_small, dtype=float), np.asarray(b_big, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        same = b_small == b_big
        g2 = np.where(same, np.nan, (b_big * sq_big - b_small * sq_small) / np.where(same, 1.0, b_big - b_small))
        trace = np.where(same, np.nan, (sq_small - sq_big) / np.where(same, 1.0, 1 / b_small - 1 / b_big))
    return (g2[()], trace[()]) if g2.ndim == 0 else (g2, trace)


def simple_noise_scale(g2: float, trace: float) -> float:
    """B_simple = tr(Sigma) / |G|^2; NaN unless |G|^2 > 0 (a ratio to a non-positive signal means nothing)."""
    if not (math.isfinite(g2) and math.isfinite(trace)) or g2 <= 0:
        return math.nan
    return trace / g2


@dataclass
class Smoothed:
    """The running B_simple of one run: bias-corrected EMAs of |G|^2 and tr(Sigma), one ``update`` per logged
    step. A resumed run rebuilds it from its history (``replay``), so it continues exactly."""

    decay: float = DECAY
    g2_ema: float = 0.0
    trace_ema: float = 0.0
    weight: float = 0.0  # 1 - decay^n after n updates: the bias correction

    def update(self, sq_small: float, sq_big: float, b_small: float, b_big: float) -> float:
        """Feed one step's squared norms; returns B_simple after it. Non-finite norms (a diverging step) and a
        single batch size are skipped: they leave the averages unchanged."""
        g2, trace = estimates(sq_small, sq_big, b_small, b_big)
        if math.isfinite(g2) and math.isfinite(trace):
            self.g2_ema = self.decay * self.g2_ema + (1 - self.decay) * g2
            self.trace_ema = self.decay * self.trace_ema + (1 - self.decay) * trace
            self.weight = self.decay * self.weight + (1 - self.decay)
        return self.value

    @property
    def g2(self) -> float:
        """The smoothed |G|^2 (NaN before the first update)."""
        return self.g2_ema / self.weight if self.weight else math.nan

    @property
    def trace(self) -> float:
        """The smoothed tr(Sigma) (NaN before the first update)."""
        return self.trace_ema / self.weight if self.weight else math.nan

    @property
    def value(self) -> float:
        """B_simple now (the bias corrections cancel in the ratio; they matter for ``g2`` and ``trace``)."""
        return simple_noise_scale(self.g2, self.trace)

    def log(self, row: dict, b_small: int, b_big: int) -> float:
        """Complete a logged step's history ``row`` (which holds this step's ``grad_sq_small`` and
        ``grad_sq_big``, NaN if missing) with ``b_small``, ``b_big`` and the updated ``noise_scale``; returns
        that B_simple (the runs table keeps the last)."""
        row.setdefault("grad_sq_small", math.nan)
        row.setdefault("grad_sq_big", math.nan)
        row.update(b_small=b_small, b_big=b_big)
        row["noise_scale"] = self.update(row["grad_sq_small"], row["grad_sq_big"], b_small, b_big)
        return row["noise_scale"]

    @classmethod
    def replay(cls, history: list[dict], decay: float = DECAY) -> Smoothed:
        """The state after a run's logged steps ``history`` (rows without ``grad_sq_small``, evaluations and
        rows of older runs, are skipped)."""
        s = cls(decay)
        for row in history:
            if all(k in row for k in COLUMNS[:4]):
                s.update(row["grad_sq_small"], row["grad_sq_big"], row["b_small"], row["b_big"])
        return s


# the history columns of each logged step: this step's squared norms and batch sizes, the smoothed B_simple
COLUMNS = ("grad_sq_small", "grad_sq_big", "b_small", "b_big", "noise_scale")
