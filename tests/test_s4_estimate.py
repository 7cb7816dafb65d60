"""The analytic BERT-base estimator, calibrated on the SparseBERT 1x and 20x points only, predicts
2x/4x/8x/16x within +-20% (the end-to-end check on lowered programs comes with the lowering)."""

from __future__ import annotations

import pytest

from s4c.s4 import load_machine
from s4c.s4.estimate import PAPER_THROUGHPUT, calibrate, estimate_bert, nm_for, prediction_table


def test_calibration_points_are_met():
    table = prediction_table("s4v1")
    for c in (1, 20):
        model, paper, err, _ = table[c]
        assert abs(err) < 0.01, (c, model, paper)


@pytest.mark.parametrize("compression", [2, 4, 8, 16])
def test_predictions_within_20_percent(compression):
    est = estimate_bert("s4v1", compression)
    paper = PAPER_THROUGHPUT[compression]
    assert abs(est.throughput / paper - 1) <= 0.20, (compression, est.throughput, paper)


def test_stored_rates_are_what_the_documented_fit_produces():
    stored = load_machine("s4v1")
    start = stored.replace({"spu.macs_per_cycle.dense.i8": 1000.0, "spu.macs_per_cycle.nm.i8": 5000.0})
    fitted, _ = calibrate(start)
    for key in ("spu.macs_per_cycle.dense.i8", "spu.macs_per_cycle.nm.i8", "spu.macs_per_cycle.bsr.i8",
                "spu.macs_per_cycle.nm.bf16", "spu.macs_per_cycle.dense.f32"):
        assert fitted[key] == stored[key], key


def test_saturation_comes_from_modelled_fixed_work():
    m = load_machine("s4v1")
    e1, e20 = estimate_bert(m, 1), estimate_bert(m, 20)
    assert e20.throughput / e1.throughput < 20 * 0.75          # far from linear speed-up
    # the non-linear work (attention on the SPU, vector work) is what remains at 20x
    assert e20.unit_cycles["vpu"] / e20.cycles_per_batch > 0.5
    assert e20.serial_cycles > e20.cycles_per_batch             # overlap matters


def test_nm_pattern_choice():
    assert nm_for(1) is None
    assert nm_for(2) == (1, 2) and nm_for(16) == (1, 16) and nm_for(20) == (1, 20)
    assert nm_for(32) == (1, 32)
