"""benchmarks/bench_cpu.py plumbing on a tiny fixture model with fake engines: argument parsing,
the interleaved timing loop, output checks, the table and RESULTS.md section. No timed assertions,
no DeepSparse, no C compiler."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from oracle import MODELS_DIR, REPO, make_feeds

sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import bench_cpu  # noqa: E402

TINY = os.path.join(MODELS_DIR, "bert_tiny_ts_op17.onnx")


class FakeEngine(bench_cpu.Engine):
    """Replays the reference outputs (optionally shifted) with made-up times; logs its calls."""

    def __init__(self, name, calls, shift=0.0, fail_load=None):
        self.name, self.calls, self.shift, self.fail_load = name, calls, shift, fail_load

    def load(self, model_path, feeds, threads):
        if self.fail_load:
            raise bench_cpu.EngineUnavailable(self.fail_load)
        self.ref = bench_cpu.OrtEngine()
        self.ref.load(model_path, feeds, threads)
        self.ref.run()
        return {"compile_s": 1.5, "cc_s": 0.5}

    def run(self):
        self.calls.append(self.name)
        return 0.001 * (len(self.calls) % 3 + 1)

    def outputs(self):
        return {k: v + self.shift for k, v in self.ref.outputs().items()}


class LoggingOrt(bench_cpu.OrtEngine):
    def __init__(self, calls):
        self.calls = calls

    def run(self):
        self.calls.append(self.name)
        return super().run()


def feeds():
    return make_feeds(bench_cpu._input_names(TINY), batch=1, seq=16, vocab=1000)


def test_parse_args():
    a = bench_cpu.parse_args([])
    assert a.model_list == list(bench_cpu.MODELS) and a.threads == 2 and a.repeat >= 10
    assert a.engine_list == ["ort", "ort-int8", "ds", "s4c", "s4c-int8"]
    a = bench_cpu.parse_args(["--models", "dense,nm1:16", "--threads", "1", "--repeat", "12", "--engines", "s4c"])
    assert a.model_list == ["dense", "nm1:16"] and a.threads == 1 and a.repeat == 12
    assert a.engine_list == ["ort", "s4c"]  # onnxruntime is the reference: always there
    for bad in (["--models", "dense,bogus"], ["--threads", "0"], ["--engines", "tvm"]):
        with pytest.raises(SystemExit):
            bench_cpu.parse_args(bad)
    assert bench_cpu.nominal_sparsity("nm2:8") == 0.75 and bench_cpu.nominal_sparsity("nm1:16") == 0.9375
    assert bench_cpu.nominal_sparsity("dense") == 0.0


def test_split_compile_timings():
    t = {"import": 1.0, "passes": 2.0, "build-c": 4.0}
    assert bench_cpu.split_compile_timings(t) == (7.0, None)
    assert bench_cpu.split_compile_timings(t, {"cc": "cc", "build_seconds": 4.0, "generate_seconds": 1.0}) == (4.0, 3.0)
    assert bench_cpu.split_compile_timings({**t, "build-c-cc": 2.5}) == (4.5, 2.5)
    # the background IR write overlaps the build; a measured wall time wins over the sum
    assert bench_cpu.split_compile_timings({**t, "write-ir": 3.0}) == (7.0, None)
    assert bench_cpu.split_compile_timings({**t, "write-ir": 3.0}, {"cc": "cc", "build_seconds": 4.0,
                                                                    "generate_seconds": 1.0}, wall=6.0) == (3.0, 3.0)


def test_interleaved_run_table_and_results_md(tmp_path):
    calls = []
    engines = [LoggingOrt(calls), FakeEngine("ds", calls, fail_load="no venv"), FakeEngine("s4c", calls, shift=0.5)]
    res, _ = bench_cpu.bench_model(TINY, feeds(), engines, threads=1, warmup=1, repeat=3, log=lambda *a: None)
    assert calls == ["ort", "s4c"] * 4  # warm-up then A B A B ..., the unavailable engine skipped
    assert res["ds"].error == "no venv" and res["ds"].median_ms is None
    assert len(res["ort"].times_ms) == len(res["s4c"].times_ms) == 3
    assert res["ort"].max_abs_diff == 0.0
    assert res["s4c"].max_abs_diff == pytest.approx(0.5, abs=1e-5)  # a wrong answer is visible

    entry = {"path": TINY, "pattern": "unstructured", "sparsity": 0.9, "other_load": 0.01}
    for name, r in res.items():
        entry[name] = {"median_ms": r.median_ms, "min_ms": r.min_ms, "times_ms": r.times_ms,
                       "max_abs_diff": r.max_abs_diff, "info": r.info, "error": r.error}
    results = {"date": "2025-01-01 00:00", "command": "python benchmarks/bench_cpu.py", "threads": 1, "repeat": 3,
               "warmup": 1, "exporter": "torchscript", "machine": bench_cpu.machine_info(),
               "loadavg_before": "0.1", "loadavg_after": "0.2", "engines": {"ort": "onnxruntime x"},
               "models": {"unstructured90": entry}}
    text = bench_cpu.format_table(results)
    assert "unstructured90" in text and "unavailable" in text and "(WRONG)" in text and "1.5" in text
    md = bench_cpu.format_markdown_table(results)
    assert md.count("\n") == 2 and md.startswith("| model |")

    path = tmp_path / "RESULTS.md"
    path.write_text("# Benchmark results\n\n## Kernels\n\nkeep me\n")
    bench_cpu.update_results_md(str(path), bench_cpu.results_section(results, "plots/x.png"))
    first = path.read_text()
    assert "keep me" in first and "## CPU" in first and "plots/x.png" in first
    path.write_text(first + "\n## Other\n\nalso keep\n")
    results["models"]["unstructured90"]["ort"]["median_ms"] = 123.4
    bench_cpu.update_results_md(str(path), bench_cpu.results_section(results, None))
    second = path.read_text()
    assert "keep me" in second and "also keep" in second and second.count("## CPU") == 1
    assert "123.4" in second and "plots/x.png" not in second


def test_max_abs():
    a = {"x": np.zeros(3, np.float32), "y": np.ones(2, np.float32)}
    assert bench_cpu.max_abs(a, {"x": np.full(3, 0.25, np.float32), "y": np.ones(2, np.float32)}) == 0.25


def test_int8_engines_columns_and_cosine():
    """The int8 columns (ORT int8, s4c int8: latency, speedups, cosine to onnxruntime fp32) appear
    when a run has them; an int8 engine is wrong by cosine, not by max abs difference."""
    assert bench_cpu.min_cosine({"x": np.array([1.0, 0.0]), "y": np.ones(2)},
                                {"x": np.array([1.0, 1.0]), "y": np.ones(2)}) == pytest.approx(np.sqrt(0.5))
    assert not bench_cpu.is_wrong("s4c-int8", {"max_abs_diff": 0.5, "cosine": 0.995})
    assert bench_cpu.is_wrong("s4c-int8", {"max_abs_diff": 0.01, "cosine": 0.9})
    assert bench_cpu.is_wrong("s4c", {"max_abs_diff": 0.5, "cosine": 0.9999})
    cell = {"median_ms": 10.0, "min_ms": 9.0, "times_ms": [10.0], "max_abs_diff": 0.0, "cosine": 1.0, "info": {}}
    models = {"block4x1-90": {"pattern": "block4x1", "sparsity": 0.9, "other_load": 0.0, "ort": dict(cell),
                              "ort-int8": {**cell, "median_ms": 5.0, "max_abs_diff": 0.3, "cosine": 0.995},
                              "s4c": {**cell, "median_ms": 2.0},
                              "s4c-int8": {**cell, "median_ms": 1.0, "max_abs_diff": 0.3, "cosine": 0.998}}}
    header, rows = bench_cpu.table_rows({"models": models})
    row = dict(zip(header, rows[0]))
    assert row["ORT int8 ms"] == "5.0 / 9.0" and row["s4c int8 ms"] == "1.0 / 9.0"
    assert row["s4c int8 vs ORT"] == "10.00x" and row["s4c int8 vs ORT int8"] == "5.00x"
    assert row["cos s4c int8"] == "0.9980" and "WRONG" not in " ".join(rows[0])
    del models["block4x1-90"]["ort-int8"], models["block4x1-90"]["s4c-int8"]
    header, _ = bench_cpu.table_rows({"models": models})
    assert "s4c int8 ms" not in header  # results without int8 engines render as before
