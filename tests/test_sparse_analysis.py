"""Sparsity analysis: planted patterns, agreement with a brute-force reference, speed."""

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s4c.sparse import (
    SUPPORTED_BLOCK_SHAPES,
    NM_MAX_M,
    NMLayout,
    SparseFormatError,
    analyze_sparsity,
    analyze_weights,
    best_block_shape,
    nm_compliance,
)


def nonzero_values(rng, shape):
    """Values that are never 0, so a planted pattern is exactly the nonzero pattern."""
    return (rng.uniform(0.5, 1.5, shape) * rng.choice([-1, 1], shape)).astype(np.float32)


def planted_blocks(rng, shape, block_shape, block_density):
    """A weight whose nonzeros fill whole r x c blocks, a `block_density` fraction of them."""
    (out_dim, in_dim), (r, c) = shape, block_shape
    kept = rng.random((out_dim // r, in_dim // c)) < block_density
    mask = np.repeat(np.repeat(kept, r, axis=0), c, axis=1)
    return np.where(mask, nonzero_values(rng, shape), 0).astype(np.float32)


def test_planted_16x1_blocks_at_90_percent_sparsity():
    rng = np.random.default_rng(0)
    weight = planted_blocks(rng, (768, 768), (16, 1), 0.1)
    report = analyze_sparsity(weight)
    stats = report.block((16, 1))
    assert stats.block_density == pytest.approx(0.1, abs=0.01)
    assert stats.fill_in == 0.0 and report.block((4, 1)).fill_in == 0.0
    assert report.block((4, 1)).block_density == pytest.approx(stats.block_density)
    assert report.density == pytest.approx(stats.block_density)
    assert report.block((32, 1)).fill_in > 0.4 and report.block((8, 8)).fill_in > 0.8
    assert report.best_block_shape() == (16, 1)
    assert report.nm_pattern is None


def test_planted_2_of_8_is_reported_as_2_of_8():
    rng = np.random.default_rng(1)
    out_dim, in_dim = 256, 512
    positions = rng.random((out_dim, in_dim // 8, 8)).argsort(-1)[..., :2]  # 2 distinct per group
    mask = np.zeros((out_dim, in_dim // 8, 8), bool)
    np.put_along_axis(mask, positions, True, axis=-1)
    weight = np.where(mask.reshape(out_dim, in_dim), nonzero_values(rng, (out_dim, in_dim)), 0)
    report = analyze_sparsity(weight)
    assert report.nm_pattern == NMLayout(2, 8) == nm_compliance(weight)
    assert report.max_nonzeros_per_group[8] == 2 and report.max_nonzeros_per_group[4] == 2
    assert report.density == 0.25


def test_1_of_4_beats_2_of_8_on_a_tie():
    weight = np.zeros((4, 32), np.float32)
    weight[:, ::4] = 1.0
    assert nm_compliance(weight) == NMLayout(1, 4)


def test_uniform_random_95_percent_has_no_structure():
    rng = np.random.default_rng(2)
    weight = np.where(rng.random((768, 768)) < 0.05, nonzero_values(rng, (768, 768)), 0)
    report = analyze_sparsity(weight)
    assert report.density == pytest.approx(0.05, abs=0.005)
    assert report.nm_pattern is None
    assert report.block((4, 1)).fill_in > 0.7
    assert report.block((8, 8)).fill_in > 0.9 and report.block((8, 8)).block_density > 0.9
    assert report.best_block_shape() is None
    assert report.best_block_shape(max_fill_in=1.0) == (8, 8)


def test_dense_and_all_zero_weights():
    dense = analyze_sparsity(np.ones((64, 96), np.int8))
    assert dense.density == 1.0 and dense.nm_pattern is None
    assert all(s.block_density == 1.0 and s.fill_in == 0.0 for s in dense.blocks)
    assert dense.best_block_shape() == (8, 8)
    zero = analyze_sparsity(np.zeros((10, 10), np.float32))
    assert zero.density == 0.0 and zero.nm_pattern == NMLayout(1, 32)
    assert all(s.kept_blocks == 0 and s.fill_in == 0.0 for s in zero.blocks)


def test_best_block_shape_prefers_area_then_fill_in():
    rng = np.random.default_rng(3)
    report = analyze_sparsity(planted_blocks(rng, (64, 64), (4, 4), 0.2))
    assert report.best_block_shape() == (4, 4)  # 16x1 has the same area but fill-in
    assert best_block_shape([], 0.5) is None


def reference_report(weight):
    """Brute force with explicit padding and loops: what the fast paths must agree with."""
    out_dim, in_dim = weight.shape
    blocks = {}
    for r, c in SUPPORTED_BLOCK_SHAPES:
        rows, cols = -(-out_dim // r), -(-in_dim // c)
        padded = np.zeros((rows * r, cols * c), bool)
        padded[:out_dim, :in_dim] = weight != 0
        kept = sum(padded[i * r:(i + 1) * r, j * c:(j + 1) * c].any()
                   for i in range(rows) for j in range(cols))
        blocks[(r, c)] = (kept, rows * cols)
    group_max = {}
    for m in range(2, NM_MAX_M + 1):  # every group size an N:M layout may have
        group_max[m] = max(np.count_nonzero(weight[i, j:j + m])
                           for i in range(out_dim) for j in range(0, in_dim, m))
    return blocks, group_max


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 40), st.integers(1, 70),
       st.sampled_from([0.0, 0.02, 0.2, 0.9]), st.booleans())
def test_fast_analysis_matches_brute_force(seed, out_dim, in_dim, density, transposed):
    rng = np.random.default_rng(seed)
    weight = np.where(rng.random((out_dim, in_dim)) < density, 1, 0).astype(np.int8)
    if transposed:  # a non-contiguous view, as a frontend might hand over for MatMul weights
        weight = np.ascontiguousarray(weight.T).T
    blocks, group_max = reference_report(weight)
    report = analyze_sparsity(weight)
    assert report.nnz == np.count_nonzero(weight)
    assert {s.block_shape: (s.kept_blocks, s.total_blocks) for s in report.blocks} == blocks
    assert report.max_nonzeros_per_group == group_max


def test_rejects_non_2d_and_reports_unanalysed_shapes():
    with pytest.raises(SparseFormatError):
        analyze_sparsity(np.zeros(5))
    report = analyze_sparsity(np.eye(8), block_shapes=[(4, 1)])
    with pytest.raises(SparseFormatError, match="not analysed"):
        report.block((8, 8))


def test_summary_line():
    rng = np.random.default_rng(4)
    report = analyze_sparsity(planted_blocks(rng, (128, 128), (16, 1), 0.1))
    assert report.summary().startswith(f"density={report.density:.3f} nm=none best_block=16x1 fill_in=0.000")


@pytest.mark.slow
def test_bert_base_weight_set_is_analysed_well_under_a_second():
    rng = np.random.default_rng(5)
    shapes = [(768, 768)] * 4 + [(3072, 768), (768, 3072)]
    weights = {}
    for layer in range(12):
        for index, shape in enumerate(shapes):
            weight = rng.standard_normal(shape, dtype=np.float32)
            weight[rng.random(shape, dtype=np.float32) < 0.9] = 0
            weights[f"layer{layer}.{index}"] = weight
    start = time.perf_counter()
    reports = analyze_weights(weights)
    elapsed = time.perf_counter() - start
    assert len(reports) == 72
    assert elapsed < 1.0, f"analysis of BERT-base weights took {elapsed:.2f} s"
