"""The per-layer fusion report: report.json/md say which layers fused, and `s4c compile` warns once
about layers left to generic kernels."""

import json
import subprocess
import sys

import pytest

from oracle import MODELS_DIR
from s4c.fusion_report import layer_of

FIXTURE = f"{MODELS_DIR}/bert_tiny_ts_op17.onnx"
SHAPES = ["--input-shape", "input_ids=1x16"]


@pytest.mark.parametrize("scope, layer", [
    ("/bert/encoder/layer.3/attention/self/query/MatMul", "layer.3"),
    ("/model/encoder/layer/11", "layer.11"),                    # dynamo metadata scope
    ("/model/transformer/layer.0/ffn/lin1/MatMul", "layer.0"),   # DistilBERT
    ("/model/encoder/albert_layer_groups.0/albert_layers.0/attention/MatMul", "albert_layers.0"),
    ("/model/embeddings/LayerNorm/Add", None),
    ("/model/encoder/layer.2x/foo", None),
])
def test_layer_of(scope, layer):
    assert layer_of(scope) == layer


def _compile(tmp_path, *extra):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "s4c", "compile", FIXTURE, "-o", str(out), "--target", "ir",
                           *SHAPES, *extra], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc, json.loads((out / "report.json").read_text())["fusion"], (out / "report.md").read_text()


def test_default_pipeline_fuses_every_layer_and_warns_not(tmp_path):
    proc, fusion, md = _compile(tmp_path)
    assert list(fusion["layers"]) == ["layer.0", "layer.1"]
    for info in fusion["layers"].values():
        assert info["unfused"] == {}
        assert info["ops"]["MultiHeadAttention"] == 1 and info["ops"]["SkipLayerNorm"] == 2
    assert fusion["fused_layers"] == 2 and fusion["warning"] is None
    assert "warning" not in proc.stderr
    assert "2 of 2 encoder layers fully fused" in md


def test_unfused_layers_are_reported_and_warned_once(tmp_path):
    proc, fusion, md = _compile(tmp_path, "--passes", "cleanup")
    assert fusion["fused_layers"] == 0
    assert all(info["unfused"].get("Softmax") == 1 for info in fusion["layers"].values())
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "2 of 2 encoder layers are not fully fused" in warnings[0], proc.stderr
    assert "| layer.0 |" in md and "Softmax 1" in md
