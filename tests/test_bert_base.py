"""BERT-base from both exporters (seq 128): imports with static shapes, matches onnxruntime.

Slow: the models are made with torch (examples/make_pruned_bert.py) and cached; skipped without torch."""

import os
import sys

import pytest

from oracle import REPO, make_feeds, max_abs_diff, ort_outputs
from s4c.evaluate import evaluate
from s4c.frontend import load_onnx

pytestmark = pytest.mark.slow
pytest.importorskip("torch")
pytest.importorskip("transformers")
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
from bert_base import bert_base  # noqa: E402


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_bert_base_imports_static_and_matches_onnxruntime(exporter):
    path = bert_base(exporter, 0.9)
    graph = load_onnx(path, input_shapes={"input_ids": (1, 128), "attention_mask": (1, 128)})
    assert not [op for op in graph.ops if op.op == "Shape"]
    feeds = make_feeds([v.name for v in graph.inputs], batch=1, seq=128, vocab=30522)
    diffs = max_abs_diff(evaluate(graph, feeds), ort_outputs(path, feeds))
    assert max(diffs.values()) <= 1e-4, diffs
