"""`s4c compare` (parameters, nonzeros, S4 modelled and C measured throughput, accuracy per model) and
report.md's time per layer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from s4c.cli import main

REPO = Path(__file__).resolve().parents[1]
MINI = REPO / "examples" / "models" / "bert_mini_pruned90.onnx"
TINY = REPO / "tests" / "models" / "bert_tiny_ts_op17.onnx"


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "cmp"
    code = main(["compare", f"mini={MINI}", str(TINY), "--input-shape", "input_ids=1x16", "--accuracy", "mini=0.81",
                 "-o", str(out), "--repeat", "2"])
    assert code == 0
    return out


def test_compare_table_and_json(compared, capsys):
    data = json.loads((compared / "compare.json").read_text())
    rows = {r["label"]: r for r in data["models"]}
    assert set(rows) == {"mini", "bert_tiny_ts_op17"}
    mini = rows["mini"]
    assert mini["accuracy"] == 0.81 and rows["bert_tiny_ts_op17"]["accuracy"] is None
    assert mini["layers"] == 3 and 0 < mini["nonzeros"] < mini["parameters"]
    assert mini["s4_throughput_per_s"] > 0 and mini["c_latency_ms"] > 0
    md = (compared / "compare.md").read_text()
    assert "| mini | 3 |" in md and "| 0.81 |" in md
    assert (compared / "mini" / "report.md").exists()           # each model's compile is kept
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert (compared / "compare.png").stat().st_size > 0 and "compare.png" in md


def test_report_has_time_per_layer(compared):
    md = (compared / "mini" / "report.md").read_text()
    assert "## Time per layer" in md and "| layer.2 |" in md
    report = json.loads((compared / "mini" / "report.json").read_text())
    section = report["layer_times"]
    assert {"layer.0", "layer.1", "layer.2"} <= set(section["layers"])
    assert section["s4"]["layer.0"] > 0 and section["c"]["layer.0"] > 0


def test_plain_compile_does_not_run_the_c_library(tmp_path):
    """Without --time-layers a compile only builds: the per-layer table has the S4 model's column alone."""
    assert main(["compile", str(MINI), "-o", str(tmp_path / "out"), "--input-shape", "input_ids=1x16"]) == 0
    section = json.loads((tmp_path / "out" / "report.json").read_text())["layer_times"]
    assert section["s4"]["layer.0"] > 0 and "c" not in section
    assert main(["compile", str(MINI), "-o", str(tmp_path / "timed"), "--input-shape", "input_ids=1x16", "--target", "c",
                 "--time-layers"]) == 0
    assert json.loads((tmp_path / "timed" / "report.json").read_text())["layer_times"]["c"]["layer.0"] > 0


def test_compare_errors_are_one_line(tmp_path, capsys):
    code = main(["compare", f"mini={MINI}", "--accuracy", "other=0.5", "-o", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "no model labelled 'other'" in err and err.count("\n") == 1
    code = main(["compare", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "y")])
    err = capsys.readouterr().err
    assert code == 2 and "missing.onnx" in err and err.count("\n") == 1, err
