"""The S4 machine model calibrated through the lowering (benchmarks/s4_calibration.py): BERT-base
models pruned 1:c, compiled by s4c.compile with its own layout selection, refitted on SparseBERT 1x
and 8x; the held-out 2x, 4x, 16x and 20x must land within +-10% and the refit must reproduce the
rates stored in s4v1.json. Slow: 12 compiles of 1- and 2-layer BERT-base (~70 s), each layer of the
12-layer model being the same program (the cycles are affine in the layer count)."""

from __future__ import annotations

import os
import sys

import pytest

from oracle import REPO

sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import s4_calibration as cal  # noqa: E402

from s4c.s4 import load_machine  # noqa: E402


def test_prune_1_of_keeps_the_largest_of_each_group_with_a_tail():
    import numpy as np

    w = np.arange(1, 23, dtype=np.float32).reshape(22, 1) * np.array([[1.0, -1.0]], np.float32)
    p = cal.prune_1_of(w, 5)                     # groups 0-4, 5-9, 10-14, 15-19, tail 20-21
    assert p.shape == w.shape
    kept = [int(i) for i in np.nonzero(p[:, 0])[0]]
    assert kept == [4, 9, 14, 19, 21]
    np.testing.assert_array_equal(p[kept, 1], -w[kept, 0])


@pytest.mark.slow
def test_fit_on_1x_and_8x_predicts_the_held_out_points():
    progs = cal.sparsebert_programs()
    for c in (2, 4, 8, 16, 20):                  # layout selection found the pruning pattern itself
        assert set(progs[c].layouts) == {"dense", "nm2:4" if c == 2 else f"nm1:{c}"}, progs[c].layouts
    assert set(progs[1].layouts) == {"dense"}
    fitted, fit = cal.fit_machine(progs)
    stored = load_machine("s4v1")
    for key, (value, _) in fit.items():
        assert value == stored[key], (key, value, stored[key])
    # physically plausible: N:M runs no faster per stored MAC than dense, within the fit's 5%
    assert fit[cal.FITTED[1]][0] <= 1.05 * fit[cal.FITTED[0]][0]
    table = cal.predictions(progs, fitted)
    for c in cal.FIT_POINTS:
        assert abs(table[c][2]) < 0.001, table[c]
    for c in cal.HELD_OUT:
        assert abs(table[c][2]) <= 0.10, (c, table[c])
