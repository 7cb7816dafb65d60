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


def test_bert_base_range_build_on_c_matches_onnxruntime_at_every_shape(tmp_path):
    """Issue 16's done-when on C: ONE BERT-base 90% build for 1..4x1..256 runs at 1x16, 1x64,
    1x128, 1x256 and 4x128, each within 1e-3 of onnxruntime at that shape (padding in the masks)."""
    import s4c

    path = bert_base("torchscript", 0.9)
    s4c.compile(path, {"input_ids": "1..4x1..256"}, target="c", outdir=tmp_path / "out")
    model = s4c.load(tmp_path / "out", threads=2)
    for batch, seq in [(1, 16), (1, 64), (1, 128), (1, 256), (4, 128)]:
        feeds = make_feeds(["input_ids", "attention_mask", "token_type_ids"], batch=batch, seq=seq,
                           vocab=30522, seed=seq + batch)
        feeds["attention_mask"][-1, seq * 3 // 4:] = 0
        got = model.run(feeds)
        diffs = max_abs_diff(got, ort_outputs(path, feeds))
        assert max(diffs.values()) <= 1e-3, (batch, seq, diffs)
