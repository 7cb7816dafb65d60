"""int8 quantisation, target-independent part (issue 14 item 1): the QuantizeInt8 / LinearInt8 ops'
integer-exact semantics, the calibration observers on known distributions, the quantize-int8 pass
with select-sparse-layout seeing i8 weights, calibration files and their one-line errors, and the
CLI's --precision. The end-to-end accuracy on the bundled model is tests/test_quantize_e2e.py."""

from __future__ import annotations

import numpy as np
import pytest

from s4c import ops
from s4c.errors import S4CError
from s4c.ir import Graph, Op, TensorType, Value
from s4c.ops.quant import MAX_K, int_matmul, quantize, quantize_weight_per_channel, scale_from_amax
from s4c.passes import PassManager, parse_pipeline
from s4c.quantization.calibrate import CalibrationError, collect_ranges, load_samples
from s4c.quantization.observers import (EntropyObserver, MinMaxObserver, PercentileObserver,
                                        best_kl_threshold_bin, make_observer)
from s4c.text import parse_graph, print_graph


def run(op: str, xs, **attrs):
    return ops.REGISTRY[op].run(xs, attrs)


# -- the ops --------------------------------------------------------------------------------------
def test_quantize_rounds_half_to_even_and_saturates_symmetrically():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 126.6, 300.0, -300.0, -127.4], np.float32)
    q = run("QuantizeInt8", [x, np.float32(1.0)])[0]
    assert q.dtype == np.int8
    assert q.tolist() == [0, 2, 2, 0, -2, 127, 127, -127, -127]
    assert run("QuantizeInt8", [np.float32([0.3, -0.7]), np.float32(0.2)])[0].tolist() == [2, -4]  # 1.5 -> 2, -3.5 -> -4


def test_dynamic_quantize_scales_each_row_and_an_all_zero_row_gets_scale_one():
    x = np.array([[[1.0, -2.0, 0.5], [0.0, 0.0, 0.0]]], np.float32)
    q, scale = run("QuantizeInt8", [x])
    assert scale.shape == (1, 2, 1) and scale.dtype == np.float32
    assert scale[0, 0, 0] == np.float32(2.0) / np.float32(127) and scale[0, 1, 0] == 1.0
    assert q[0, 0].tolist() == [64, -127, 32] and q[0, 1].tolist() == [0, 0, 0]


def test_linear_int8_is_int32_accumulation_then_one_f32_scale():
    rng = np.random.default_rng(0)
    x_q = rng.integers(-127, 128, (2, 3, 64)).astype(np.int8)
    w_q = rng.integers(-127, 128, (5, 64)).astype(np.int8)
    x_s = np.float32(0.02)
    w_s = rng.uniform(0.001, 0.01, 5).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    y = run("LinearInt8", [x_q, w_q, x_s, w_s, b], activation="none")[0]
    acc = np.einsum("btk,nk->btn", x_q.astype(np.int64), w_q.astype(np.int64))  # the integers, exactly
    expect = acc.astype(np.int32).astype(np.float32) * (x_s * w_s) + b
    assert y.dtype == np.float32 and np.array_equal(y, expect)  # bit for bit
    relu = run("LinearInt8", [x_q, w_q, x_s, w_s], activation="relu")[0]
    assert np.array_equal(relu, np.maximum(acc.astype(np.float32) * (x_s * w_s), 0))


def test_int_matmul_is_exact_at_the_extremes_of_the_largest_k():
    k = MAX_K
    x = np.full((1, k), -128, np.int8)
    w = np.full((2, k), -128, np.int8)
    w[1] = 127
    acc = int_matmul(x, w)
    assert acc.dtype == np.int32 and acc.tolist() == [[128 * 128 * k, -128 * 127 * k]]


def test_linear_int8_refuses_what_it_cannot_compute():
    opdef = ops.REGISTRY["LinearInt8"]
    i8 = lambda *s: TensorType("i8", s)  # noqa: E731
    f32 = lambda *s: TensorType("f32", s)  # noqa: E731
    with pytest.raises(ValueError, match="overflow"):
        opdef.infer_types([i8(1, MAX_K + 1), i8(2, MAX_K + 1), f32(), f32(2)], {})
    with pytest.raises(TypeError, match="i8"):
        opdef.infer_types([f32(1, 4), i8(2, 4), f32(), f32(2)], {})
    with pytest.raises(ValueError, match="input scale"):
        opdef.infer_types([i8(3, 4), i8(2, 4), f32(3), f32(2)], {})
    assert opdef.infer_types([i8(3, 4), i8(2, 4), f32(3, 1), f32(2)], {}) == [f32(3, 2)]


def test_weights_per_output_channel_keep_zeros_and_the_row_maximum_maps_to_127():
    w = np.array([[0.0, 0.5, -1.0], [0.0, 0.0, 0.0], [0.01, 0.0, 0.02]], np.float32)
    q, s = quantize_weight_per_channel(w)
    assert q.dtype == np.int8 and s.dtype == np.float32 and s.shape == (3,)
    assert q[0].tolist() == [0, 64, -127] and q[1].tolist() == [0, 0, 0] and q[2].tolist() == [63, 0, 127]  # 63.4999 in f32
    assert s[1] == 1.0  # an all-zero row: scale 1, never a division by zero
    assert np.array_equal(q == 0, w == 0)
    assert np.max(np.abs(q * s[:, None] - w)) <= np.max(s) / 2 + 1e-7
    assert scale_from_amax(0.0) == 1.0 and scale_from_amax(np.inf) == 1.0


# -- the observers ----------------------------------------------------------------------------------
def _observe(method, arrays, **kw):
    obs = make_observer(method, **kw)
    for a in arrays:
        obs.observe(a)
    return obs


def test_minmax_observer_is_the_largest_magnitude_and_tracks_min_max():
    obs = _observe("minmax", [np.float32([-3.0, 1.0]), np.float32([2.0, np.nan, 0.5])])
    assert isinstance(obs, MinMaxObserver)
    assert obs.amax() == 3.0 and obs.summary() == {"method": "minmax", "min": -3.0, "max": 2.0, "amax": 3.0}


def test_percentile_observer_on_a_normal_distribution_and_across_a_widening_range():
    rng = np.random.default_rng(0)
    chunks = [rng.standard_normal(200_000).astype(np.float32) * (1 + i / 8) for i in range(4)]
    everything = np.abs(np.concatenate(chunks))
    for p in (99.0, 99.9):
        obs = _observe("percentile", chunks, percentile=p)
        assert isinstance(obs, PercentileObserver)
        assert obs.amax() == pytest.approx(np.percentile(everything, p), rel=0.01)
    # |N(0,1)|'s 99.99th percentile is 3.89; the observed order (small range first) does not matter
    x = rng.standard_normal(1_000_000).astype(np.float32)
    a, b = _observe("percentile", [x[np.abs(x) < 1], x[np.abs(x) >= 1]]), _observe("percentile", [x])
    assert a.amax() == pytest.approx(3.89, rel=0.03) and a.amax() == pytest.approx(b.amax(), rel=0.01)


def test_percentile_and_entropy_ignore_a_lone_outlier_minmax_does_not():
    rng = np.random.default_rng(1)
    chunks = [rng.standard_normal(200_000).astype(np.float32) for _ in range(4)]
    chunks[2][0] = 100.0
    assert _observe("minmax", chunks).amax() == 100.0
    assert _observe("percentile", chunks).amax() == pytest.approx(3.89, rel=0.05)
    # entropy's candidates are whole bins of the range seen (2048 over [0, 100]): at least 128 of them
    assert 4.0 < _observe("entropy", chunks).amax() <= 100 * 128 / 2048 + 1e-6


def test_entropy_observer_clips_long_tails_but_not_a_uniform_distribution():
    rng = np.random.default_rng(2)
    normal = [rng.standard_normal(200_000).astype(np.float32) for _ in range(4)]
    top = max(float(np.abs(c).max()) for c in normal)
    ent = _observe("entropy", normal)
    assert isinstance(ent, EntropyObserver) and 3.5 < ent.amax() < top
    laplace = [rng.laplace(size=200_000).astype(np.float32) for _ in range(4)]
    lap = _observe("entropy", laplace).amax()
    assert _observe("percentile", laplace).amax() * 0.9 < lap < max(float(np.abs(c).max()) for c in laplace)
    uniform = [rng.uniform(-1, 1, 200_000).astype(np.float32) for _ in range(4)]
    assert _observe("entropy", uniform).amax() == pytest.approx(1.0, abs=0.01)


def test_kl_threshold_of_a_histogram_within_the_quantisation_levels_is_all_of_it():
    assert best_kl_threshold_bin(np.ones(100), 128) == 100
    hist = np.floor(1e6 * np.exp(-np.arange(1024) / 40.0))  # an exponential tail, empty from bin 554
    hist[1023] = 1  # and one far outlier
    assert 200 < best_kl_threshold_bin(hist, 128, 1) < 554


def test_unknown_method_and_bad_percentile():
    with pytest.raises(ValueError, match="entropy"):
        make_observer("kl")
    with pytest.raises(ValueError, match="percentile"):
        make_observer("percentile", percentile=0)


# -- the pass ----------------------------------------------------------------------------------------
def _two_layer_graph(rng, sparsity=0.8) -> Graph:
    w1 = rng.standard_normal((32, 16)).astype(np.float32)
    w1[rng.random(w1.shape) < sparsity] = 0
    w2 = rng.standard_normal((8, 32)).astype(np.float32) * 0.2
    x = Value("x", TensorType("f32", (1, 4, 16)))
    h = Value("h", TensorType("f32", (1, 4, 32)))
    y = Value("y", TensorType("f32", (1, 4, 8)))
    ops_ = [Op("Linear", [x, Value.constant("w1", w1), Value.constant("b1", np.zeros(32, np.float32))], [h],
               {"activation": "gelu"}),
            Op("Linear", [h, Value.constant("w2", w2)], [y])]
    return Graph("main", [x], [y], ops_)


def test_calibrated_static_quantisation_is_close_and_select_sparse_layout_sees_int8(tmp_path, monkeypatch):
    monkeypatch.setenv("S4C_CACHE", str(tmp_path))
    rng = np.random.default_rng(0)
    graph = _two_layer_graph(rng)
    samples = [{"x": rng.standard_normal((1, 4, 16)).astype(np.float32)} for _ in range(8)]
    table = collect_ranges(graph, samples, "minmax")
    assert sorted(table) == ["h", "x"]
    from s4c.evaluate import evaluate
    from s4c.passes.quantize_int8 import QuantizeInt8
    before = [evaluate(graph, s)["y"] for s in samples]
    result = PassManager().run(graph, [QuantizeInt8(amax={k: o.amax() for k, o in table.items()})])
    assert [op.op for op in graph.ops] == ["QuantizeInt8", "LinearInt8", "QuantizeInt8", "LinearInt8"]
    after = [evaluate(graph, s)["y"] for s in samples]
    err = max(float(np.abs(a - b).max()) for a, b in zip(before, after))
    scale = max(float(np.abs(b).max()) for b in before)
    assert err < 0.02 * scale, (err, scale)
    assert result is graph
    # layout selection runs on the int8 weights: their storage is counted in bytes of int8
    from s4c.passes.select_sparse_layout import SelectSparseLayout
    sel = SelectSparseLayout(target="c")
    PassManager().run(graph, [sel])
    assert [c.report.dtype for c in sel.choices] == [np.dtype(np.int8)] * 2
    assert sel.choices[0].bytes["dense"] == 32 * 16
    assert graph.ops[1].attrs["layout"] == str(sel.choices[0].layout)
    text = print_graph(graph)
    assert print_graph(parse_graph(text)) == text


def test_static_mode_without_a_range_is_a_pass_error_naming_the_activation():
    graph = _two_layer_graph(np.random.default_rng(0))
    with pytest.raises(S4CError, match="no calibration range for activation 'h'"):
        PassManager().run(graph, parse_pipeline('quantize-int8{ranges="x=3"}'))
    with pytest.raises(S4CError, match="is not NAME=AMAX"):
        PassManager().run(graph, parse_pipeline('quantize-int8{ranges="x"}'))
    with pytest.raises(S4CError, match="activations"):
        parse_pipeline("quantize-int8{activations=int4}")


def test_quantising_twice_changes_nothing():
    graph = _two_layer_graph(np.random.default_rng(0))
    pm = PassManager()
    pm.run(graph, parse_pipeline("quantize-int8"))
    text = print_graph(graph)
    pm.run(graph, parse_pipeline("quantize-int8"))
    assert print_graph(graph) == text and not pm.results[-1][1].changed


# -- calibration files ---------------------------------------------------------------------------------
def _ids_graph() -> Graph:
    ids = Value("input_ids", TensorType("i64", (1, 8)))
    mask = Value("attention_mask", TensorType("i64", (1, 8)))
    return Graph("main", [ids, mask], [ids], [])


@pytest.mark.parametrize("arrays, message", [
    ({"input_ids": np.zeros((4, 1, 8), np.int64)}, "no array for model input 'attention_mask'"),
    ({"input_ids": np.zeros((4, 8), np.int64), "attention_mask": np.zeros((4, 8), np.int64)},
     "input 'input_ids' has shape [4, 8], expected [N, 1, 8]"),
    ({"input_ids": np.zeros((4, 1, 8), np.float32), "attention_mask": np.zeros((4, 1, 8), np.int64)},
     "input 'input_ids' has dtype float32, the model takes i64"),
    ({"input_ids": np.zeros((4, 1, 8), np.int64), "attention_mask": np.zeros((3, 1, 8), np.int64)},
     "input 'attention_mask' has 3 samples, 'input_ids' has 4"),
    ({"input_ids": np.zeros((4, 1, 8), np.int64), "attention_mask": np.zeros((4, 1, 8), np.int64),
      "labels": np.zeros(4)}, "array 'labels' is not a model input"),
    ({"input_ids": np.zeros((0, 1, 8), np.int64), "attention_mask": np.zeros((0, 1, 8), np.int64)},
     "holds no samples"),
])
def test_bad_calibration_files_are_one_line_errors_naming_file_and_input(tmp_path, arrays, message):
    path = tmp_path / "calib.npz"
    np.savez(path, **arrays)
    with pytest.raises(CalibrationError) as e:
        load_samples(path, _ids_graph())
    assert message in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)


def test_calibration_files_that_are_not_npz(tmp_path):
    text = tmp_path / "calib.txt"
    text.write_text("input_ids,1,2,3\n")
    npy = tmp_path / "calib.npy"
    np.save(npy, np.zeros((4, 1, 8), np.int64))
    for path, message in [(text, "not a readable .npz"), (npy, "a single array"),
                          (tmp_path / "missing.npz", "no such file"), (tmp_path, "folder")]:
        with pytest.raises(CalibrationError, match=message):
            load_samples(path, _ids_graph())


def test_calibration_samples_take_any_integer_dtype_and_split_on_the_sample_axis(tmp_path):
    path = tmp_path / "calib.npz"
    np.savez(path, input_ids=np.arange(16, dtype=np.int32).reshape(2, 1, 8), attention_mask=np.ones((2, 1, 8), np.uint8))
    samples = load_samples(path, _ids_graph())
    assert len(samples) == 2 and samples[1]["input_ids"].dtype == np.int64
    assert samples[1]["input_ids"].tolist() == [list(range(8, 16))]
