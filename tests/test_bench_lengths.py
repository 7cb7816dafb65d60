"""benchmarks/bench_lengths.py on BERT-mini with a few sentences: the seeded length distribution,
the table's structure, the RESULTS.md block, and that every engine's outputs were checked against
onnxruntime at every length it ran (within 1e-3). No timing assertions."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import bench_lengths  # noqa: E402

BERT_MINI = os.path.join(REPO, "examples", "models", "bert_mini_pruned90.onnx")
DS_VENV = os.path.expanduser(os.path.join("~", ".cache", "s4c", "deepsparse-venv"))


def test_length_distribution_is_seeded_and_shaped():
    lengths, pair = bench_lengths.sample_lengths(2000, 0, 256)
    again, _ = bench_lengths.sample_lengths(2000, 0, 256)
    other, _ = bench_lengths.sample_lengths(2000, 1, 256)
    assert np.array_equal(lengths, again) and not np.array_equal(lengths, other)
    assert lengths[~pair].min() >= 5 and lengths[~pair].max() <= 20  # queries
    assert lengths[pair].min() >= 30 and lengths[pair].max() <= 256  # sentence pairs
    assert 0.35 < np.mean(~pair) < 0.45
    assert 0.0 < np.mean(lengths > 128) < 0.05  # a thin tail past the usual 128
    assert bench_lengths.sample_lengths(200, 0, 64)[0].max() <= 64


def test_sentence_feeds_and_padding():
    names = ["input_ids", "attention_mask", "token_type_ids"]
    f = bench_lengths.sentence_feeds(names, 9, True, 768, seed=3)
    assert all(f[n].shape == (1, 9) and f[n].dtype == np.int64 for n in names)
    assert f["input_ids"][0, 0] == bench_lengths.CLS and f["input_ids"][0, -1] == bench_lengths.SEP
    assert f["input_ids"].max() < 768 and f["token_type_ids"][0, -1] == 1 and f["token_type_ids"][0, 0] == 0
    p = bench_lengths.pad(f, 32)
    assert p["input_ids"].shape == (1, 32) and p["attention_mask"][0, 9:].sum() == 0
    assert bench_lengths.bucket_of(9, [32, 64]) == 32 and bench_lengths.bucket_of(33, [32, 64]) == 64


def test_max_diff_cuts_padded_tokens():
    want = {"h": np.zeros((1, 5, 4)), "pool": np.ones((1, 4))}
    padded = {"h": np.concatenate([np.zeros((1, 5, 4)), np.full((1, 3, 4), 9.0)], 1), "pool": np.ones((1, 4))}
    assert bench_lengths.max_diff(padded, want, 5) == 0.0
    padded["h"][0, 4, 0] = 0.5
    assert bench_lengths.max_diff(padded, want, 5) == 0.5
    assert bench_lengths.max_diff({"pool": np.ones((1, 3))}, want, 5) == float("inf")


def test_wrong_answer_is_flagged():
    results = {"clock": "wall", "max_len": 128, "lengths": [7, 9],
               "engines": {"ort": {"times_ms": {"wall": [2.0, 2.0], "cpu": [2.0, 2.0]}, "checks": {"7": 0.0, "9": 0.0}},
                           "s4c": {"times_ms": {"wall": [1.0, 1.0], "cpu": [1.0, 1.0]}, "checks": {"7": 0.5, "9": 0.0}},
                           "ds": {"error": "unavailable: no venv"}}}
    text = bench_lengths.table(results)
    assert "5.0e-01 WRONG (2/2)" in text and "2.00x" in text and "unavailable: no venv" in text


@pytest.fixture(scope="module")
def mini_run(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    tmp = tmp_path_factory.mktemp("lengths")
    md = tmp / "RESULTS.md"
    md.write_text("# Benchmark results\n\n## Other\n\nkeep me\n")
    engines = "s4c,s4c-bucket,ort" + (",ds" if os.path.exists(os.path.join(DS_VENV, ".s4c-deepsparse-ok")) else "")
    argv = ["--model", BERT_MINI, "--max-len", "128", "--samples", "6", "--seed", "3", "--engines", engines,
            "--threads", "1", "--clock", "cpu", "--warmup", "1", "--gap", "0", "--ratio-repeat", "1",
            "--workdir", str(tmp / "work"), "--json", str(tmp / "r.json"), "--update-results", str(md)]
    rc = bench_lengths.main(argv)
    return rc, json.loads((tmp / "r.json").read_text()), md, argv, engines.split(",")


def test_every_engine_matches_onnxruntime_at_every_length(mini_run):
    rc, results, _, _, engines = mini_run
    assert rc == 0
    assert results["buckets"] == [32, 64, 128] and results["max_len"] == 128  # BERT-mini has 128 positions
    lengths = results["lengths"]
    assert len(lengths) == 6 and max(lengths) <= 128
    for name in engines:
        r = results["engines"][name]
        assert len(r["times_ms"]["cpu"]) == len(lengths) == len(r["times_ms"]["wall"]), name
        assert sorted(map(int, r["checks"])) == sorted(set(lengths)), name  # every distinct length checked
        assert all(d <= 1e-3 for d in r["checks"].values()), (name, r["checks"])
    assert set(results["ratio"]) == {"s4c", "ort"} and all(v["16"] > 0 and v["128"] > 0 for v in results["ratio"].values())


def test_table_and_results_block(mini_run):
    _, results, md, argv, engines = mini_run
    text = md.read_text()
    assert "keep me" in text and text.count(bench_lengths.RESULTS_BEGIN) == 1 and bench_lengths.RESULTS_END in text
    block = text.split(bench_lengths.RESULTS_BEGIN)[1].split(bench_lengths.RESULTS_END)[0]
    assert "bench_lengths.py " + " ".join(argv[:4]) in block  # the command
    rows = [ln for ln in block.splitlines() if ln.startswith("| ")]
    header = rows[0]
    for col in ("mean ms", "p50 ms", "p90 ms", "ORT mean / mean", "ORT p90 / p90"):
        assert col in header
    for name in engines:
        label = bench_lengths.LABELS[name].format(max=128)
        row = next(r for r in rows if r.startswith(f"| {label} |"))
        cells = lambda line: line.replace("\\|", "").count("|")  # noqa: E731 (escaped pipes are text)
        assert cells(row) == cells(header) and f"({len(set(results['lengths']))}/" in row
    assert "1x16 vs 1x128" in block and "avx2" in block and "load average before/after" in block
    # a second write replaces the block and keeps the rest
    bench_lengths.write_results_block(str(md), bench_lengths.results_section(results), bench_lengths.RESULTS_BEGIN,
                                      bench_lengths.RESULTS_END, "x", "y")
    again = md.read_text()
    assert again.count(bench_lengths.RESULTS_BEGIN) == 1 and "keep me" in again and "## x" not in again
