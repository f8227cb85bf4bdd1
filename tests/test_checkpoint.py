"""A run that fails resumes from its checkpoint and ends exactly where the uninterrupted run ends."""

import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, mpirun, requires_horovod

WORKER = str(ROOT / "tests" / "resume_worker.py")


def _check(npz):
    with np.load(npz) as f:
        assert list(f["statuses"]) == ["failed", "complete"] and list(f["attempts"]) == [1, 2]
        assert list(f["resumed_from"]) == [0, 8]  # failed at step 10: the step-8 checkpoint, not step 4
        assert "progress.json" in list(f["kept"]) and len(f["left"]) == 0  # kept for the retry, then removed
        straight, resumed, columns = f["straight"], f["resumed"], list(f["columns"])
    assert {"loss", "alpha", "beta", "top1"} <= set(columns) and straight.shape == resumed.shape
    # Same weights, NLCG state (alpha, ema, B, d, ...), EMA weights and data position after the restore,
    # so every later step is the same computation on the same numbers: equal to the last bit.
    np.testing.assert_array_equal(resumed, straight)


@pytest.mark.slow
def test_failed_run_resumes_from_its_checkpoint_exactly(tmp_path):
    sys.path.insert(0, str(ROOT / "tests"))
    import resume_worker

    resume_worker.main(str(tmp_path / "out.npz"))
    _check(tmp_path / "out.npz")


@requires_horovod
@pytest.mark.mpi
@pytest.mark.slow
def test_two_workers_resume_exactly(tmp_path):
    p = subprocess.run(mpirun(2, WORKER, str(tmp_path / "out.npz")), cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    _check(tmp_path / "out.npz")
