"""The analytic estimator (design-time check) under the rates fitted through the lowering
(benchmarks/s4_calibration.py, SparseBERT 1x and 8x): SparseBERT within +-10%, tiles priced at
their own width, the SRAM-fit check, and the MLPerf BERT-large analysis."""

from __future__ import annotations

import math

import pytest

from s4c.errors import TargetError
from s4c.s4 import isa, load_machine
from s4c.s4.estimate import (BERT_LARGE, MLPERF_BERT_LARGE, PAPER_THROUGHPUT, BertShape, _linear, _Work,
                             estimate_bert, max_fitting_batch, mlperf_analysis, nm_for, tile_widths, with_rates)


@pytest.mark.parametrize("compression", sorted(PAPER_THROUGHPUT))
def test_sparsebert_within_10_percent(compression):
    est = estimate_bert("s4v1", compression)
    assert abs(est.throughput / PAPER_THROUGHPUT[compression] - 1) <= 0.10, (compression, est.throughput)


def test_tiles_are_priced_at_their_own_width():
    assert tile_widths(1024, 768) == [768, 256] and tile_widths(4096, 768) == [768] * 5 + [256]
    m = load_machine("s4v1")
    w1024, w1536 = _Work(m), _Work(m)
    _linear(w1024, 384, 1, 1024, 1024, (1, 32), 768)
    _linear(w1536, 384, 1, 1536, 1024, (1, 32), 768)
    slots = math.ceil(1024 / 32)
    macs = 384 * 1024 * slots
    assert w1024.cycles["spu"] == 2 * m["spu.overhead"] + math.ceil(384 * 768 * slots / m["spu.macs_per_cycle.nm.i8"]) \
        + math.ceil(384 * 256 * slots / m["spu.macs_per_cycle.nm.i8"])
    assert w1024.cycles["spu"] < 0.7 * w1536.cycles["spu"]          # not two 768-wide tiles
    assert macs / m["spu.macs_per_cycle.nm.i8"] < w1024.cycles["spu"]


def test_sram_fit_check():
    est = estimate_bert("s4v1", 8)
    assert est.sram_fits and sum(est.sram_bytes.values()) <= load_machine("s4v1").sram_bytes
    assert max_fitting_batch("s4v1", BERT_LARGE, 32) == 1
    with pytest.raises(TargetError, match="SRAM"):
        estimate_bert("s4v1", 32, batch_per_core=2, shape=BERT_LARGE)
    big = estimate_bert("s4v1", 32, batch_per_core=2, shape=BERT_LARGE, check_sram=False)
    assert not big.sram_fits


def test_mlperf_bert_large_miss_is_the_spu_with_attention_at_the_dense_rate():
    """The documented impossibility (docs/isa.md#calibration): under the SparseBERT-fitted rates the
    32x BERT-large is SPU-bound far below the anchor, and even an infinitely fast spu.nm only just
    reaches it, because the dense attention matmuls alone need about the chip's whole dense rate."""
    a = mlperf_analysis("s4v1")
    assert a["anchor"] == MLPERF_BERT_LARGE and a["bound"] == "spu"
    assert a["error"] < -0.20
    assert a["unit_ceiling"]["spu"] < 0.8 * MLPERF_BERT_LARGE < a["unit_ceiling"]["vpu"]
    assert 0.95 * MLPERF_BERT_LARGE < a["spu_ceiling_infinite_nm"] < 1.05 * MLPERF_BERT_LARGE
    assert a["nm_rate_for_low"] > 1.5 * load_machine("s4v1")["spu.macs_per_cycle.nm.i8"]
    faster = with_rates(load_machine("s4v1"), load_machine("s4v1")["spu.macs_per_cycle.dense.i8"], a["nm_rate_for_low"])
    assert estimate_bert(faster, 32, batch_per_core=1, shape=BERT_LARGE).throughput >= 0.8 * MLPERF_BERT_LARGE
    assert a["seq_for_anchor"] < a["seq_for_low"] < 384


def test_saturation_comes_from_modelled_fixed_work():
    m = load_machine("s4v1")
    e1, e20 = estimate_bert(m, 1), estimate_bert(m, 20)
    assert e20.throughput / e1.throughput < 20 * 0.75
    assert e20.serial_cycles > e20.cycles_per_batch


def test_nm_pattern_choice():
    assert nm_for(1) is None
    assert nm_for(2) == (1, 2) and nm_for(16) == (1, 16) and nm_for(20) == (1, 20)
    assert nm_for(32) == (1, 32)
    assert isinstance(BertShape(), BertShape)
    assert "vpu.epilogue" in isa.BY_MNEMONIC
