"""The fusion passes (issue 3): the default pipeline on every committed fixture (exact per-layer op
counts; the reference evaluator's result unchanged by each pass, within 1e-5, with the verifier run
after each), and what the golden cases (tests/golden/<pass>/, run by tests/test_goldens.py) do not
show. BERT-base (both exporters) is covered by the slow test at the end and by
benchmarks/bench_passes.py.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from oracle import REPO, assert_outputs_close, fixtures, make_feeds, random_feeds
from s4c.evaluate import evaluate
from s4c.frontend import load_onnx
from s4c.ir import Graph, numpy_dtype
from s4c.passes import PassManager, VerifyEach, all_passes, parse_pipeline
from s4c.passes.pipelines import PIPELINES
from s4c.text import parse_graph

GOLDEN = Path(__file__).resolve().parent / "golden"
MARK = "# ---- expected ----\n"
FUSIONS = ["fuse-linear", "fuse-gelu", "fuse-layernorm", "fuse-skip-layernorm", "fuse-attention",
           "merge-qkv", "fuse-embedding"]
TOL = 1e-5
FIXTURES = fixtures()


def _ops(graph: Graph) -> Counter:
    return Counter(op.op for op in graph.ops)


def test_fusion_passes_are_registered_and_documented():
    passes = all_passes()
    for name in FUSIONS:
        assert name in passes, name
        assert (passes[name].__doc__ or "").strip()
    import importlib
    for name in FUSIONS:
        module = importlib.import_module("s4c.passes." + name.replace("-", "_"))
        patterns = [obj for obj in vars(module).values() if isinstance(obj, type)
                    and obj.__module__ == module.__name__ and getattr(obj, "roots", ())
                    and not obj.__name__.startswith("_")]
        assert patterns, name
        for p in patterns:  # one class per pattern, each with a drawing of what it matches
            assert p.__doc__ and "==>" in p.__doc__, f"{name}: {p.__name__} has no drawing"


def test_default_pipeline_is_an_explicit_list_of_known_passes():
    steps = PIPELINES["default"]
    assert steps and all(s.split("{")[0] in all_passes() for s in steps), steps
    for name in FUSIONS:
        assert name in steps
    order = [s.split("{")[0] for s in steps]
    assert order.index("fuse-layernorm") < order.index("fuse-embedding") < order.index("fuse-skip-layernorm")
    assert order.index("fuse-linear") < order.index("fuse-gelu")
    assert order.index("fuse-linear") < order.index("fuse-attention") < order.index("merge-qkv")
    assert order.index("fold-weight-dequant") < order.index("fuse-linear")


def test_attention_fully_masked_row_is_zero_not_nan():
    """The MultiHeadAttention contract for a row masked everywhere by -inf: zeros, as the SDPA
    lowering's IsNaN guard specifies (pos_sdpa fuses that guard away)."""
    text = (GOLDEN / "fuse-attention" / "pos_sdpa.s4ir").read_text().partition(MARK)[0]
    graph = parse_graph(text)
    feeds = random_feeds(graph)
    feeds["attention_mask"][:] = 0.0
    before = evaluate(parse_graph(text), feeds)
    assert np.all(before["y"] == 0.0)
    PassManager(parse_pipeline("fuse-attention"), [VerifyEach()]).run(graph)
    assert _ops(graph)["MultiHeadAttention"] == 1
    assert_outputs_close(before, evaluate(graph, feeds), "fully masked", tol=TOL)


# -- the default pipeline on every fixture ---------------------------------------------------------

def _fixture_feeds(graph: Graph, fixture: dict, batch: int, seq: int) -> dict:
    feeds = make_feeds([v.name for v in graph.inputs], batch=batch, seq=seq, vocab=fixture["vocab_size"])
    if "attention_mask" in feeds and batch > 2:
        feeds["attention_mask"][2, :] = 0  # a fully masked sentence too
    return feeds


def check_encoder_structure(graph: Graph, num_layers: int, pooler: bool) -> None:
    """Exactly, per layer: QKV Linear -> MultiHeadAttention -> output Linear -> SkipLayerNorm ->
    Linear{gelu|gelu_tanh} -> Linear -> SkipLayerNorm; one Embedding; the pooler's Linear."""
    ops = _ops(graph)
    linears = [op for op in graph.ops if op.op == "Linear"]
    assert ops["Embedding"] == 1, ops
    assert ops["MultiHeadAttention"] == num_layers, ops
    assert ops["SkipLayerNorm"] == 2 * num_layers, ops
    assert len(linears) == 4 * num_layers + int(pooler), ops
    gelus = [op for op in linears if op.attrs.get("activation") in ("gelu", "gelu_tanh")]
    assert len(gelus) == num_layers, ops
    for gone in ("MatMul", "Gemm", "LayerNormalization", "LayerNorm", "Softmax", "Erf", "Gelu", "Concat"):
        assert not ops[gone], f"{gone} left: {ops}"
    users: dict[int, list] = graph.users()

    def only_user(op, kind):
        us = users.get(id(op.outputs[0]), [])
        assert len(us) == 1 and us[0].op == kind, (op.describe(), [u.describe() for u in us])
        return us[0]

    embedding = next(op for op in graph.ops if op.op == "Embedding")
    hidden = embedding.outputs[0]
    for mha in (op for op in graph.ops if op.op == "MultiHeadAttention"):
        qkv = mha.inputs[0].producer
        assert qkv is not None and qkv.op == "Linear" and qkv.attrs.get("activation", "none") == "none"
        assert qkv.outputs[0].shape[-1] == 3 * mha.outputs[0].shape[-1]
        out_proj = only_user(mha, "Linear")
        sln1 = only_user(out_proj, "SkipLayerNorm")
        ffn1 = next(u for u in users[id(sln1.outputs[0])] if u.op == "Linear")
        assert ffn1.attrs.get("activation") in ("gelu", "gelu_tanh")
        ffn2 = only_user(ffn1, "Linear")
        assert ffn2.attrs.get("activation", "none") == "none"
        sln2 = only_user(ffn2, "SkipLayerNorm")
        assert any(v is sln1.outputs[0] for v in sln2.inputs)
        assert qkv.inputs[0] is hidden, "layers are not chained"
        hidden = sln2.outputs[0]
    if pooler:
        pool = [op for op in linears if op.inputs[0].producer is not None and op.inputs[0].producer.op == "Gather"]
        assert len(pool) == 1


@pytest.mark.parametrize("fixture", FIXTURES, ids=[m["name"] for m in FIXTURES])
def test_default_pipeline_on_fixture(fixture):
    batch, seq = 3, 16
    graph = load_onnx(fixture["path"], input_shapes={"input_ids": (batch, seq)})
    feeds = _fixture_feeds(graph, fixture, batch, seq)
    reference = evaluate(graph, feeds)
    for p in parse_pipeline("default"):
        PassManager([p], [VerifyEach()]).run(graph)
        assert_outputs_close(reference, evaluate(graph, feeds), f"{fixture['name']} after {p}", tol=TOL)
    pooler = any(v.name == "pooler_output" for v in graph.outputs)
    check_encoder_structure(graph, fixture["num_layers"], pooler)


# -- BERT-base (slow: needs torch to build the cached models) --------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_default_pipeline_on_bert_base(exporter):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from bert_base import bert_base

    graph = load_onnx(bert_base(exporter, 0.9), input_shapes={"input_ids": (1, 128)})
    feeds = make_feeds([v.name for v in graph.inputs], batch=1, seq=128, vocab=30522)
    reference = evaluate(graph, feeds)
    PassManager(parse_pipeline("default"), [VerifyEach()]).run(graph)
    assert_outputs_close(reference, evaluate(graph, feeds), f"BERT-base {exporter}", tol=TOL)
    check_encoder_structure(graph, 12, pooler=True)
