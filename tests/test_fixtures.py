"""The committed ONNX fixtures listed in tests/models/manifest.json are present, valid,
runnable and as sparse as the manifest says. Uses only onnx / onnxruntime / numpy (no torch).

Regenerate the fixtures with ``bash tests/models/make_all.sh``.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

ort = pytest.importorskip("onnxruntime")

# the generator's own weight walk (make_pruned_bert imports torch only when it builds a model)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from make_pruned_bert import linear_weights  # noqa: E402

MODELS = Path(__file__).resolve().parent / "models"
MANIFEST = json.loads((MODELS / "manifest.json").read_text())["models"]
REQUIRED_KEYS = {
    "name", "file", "external_data", "arch", "exporter", "opset", "pattern", "sparsity",
    "weight_quant", "num_layers", "num_heads", "hidden_size", "vocab_size", "inputs", "outputs",
    "num_pruned_weights", "command",
}
BATCH, SEQ = 1, 16

entries = pytest.mark.parametrize("entry", MANIFEST, ids=[e["name"] for e in MANIFEST])


def _path(entry) -> Path:
    return (MODELS / entry["file"]).resolve()


_cache: dict[str, onnx.ModelProto] = {}


def _load(entry) -> onnx.ModelProto:
    key = entry["file"]
    if key not in _cache:
        _cache[key] = onnx.load(str(_path(entry)))
    return _cache[key]


def _opset(model) -> int:
    return next(i.version for i in model.opset_import if i.domain in ("", "ai.onnx"))


def _feeds(entry, rng):
    feeds = {}
    for inp in entry["inputs"]:
        n = inp["name"]
        if n == "input_ids":
            feeds[n] = rng.integers(0, entry["vocab_size"], (BATCH, SEQ), dtype=np.int64)
        elif n == "attention_mask":
            m = np.ones((BATCH, SEQ), np.int64)
            m[:, SEQ - 5:] = 0  # padding at the end
            feeds[n] = m
        elif n == "token_type_ids":
            t = np.zeros((BATCH, SEQ), np.int64)
            t[:, SEQ // 2:] = 1
            feeds[n] = t
        else:
            raise AssertionError(f"unexpected input {n}")
    return feeds


def test_manifest_covers_the_fixture_matrix():
    assert MANIFEST, "manifest is empty"
    names = [e["name"] for e in MANIFEST]
    assert len(names) == len(set(names))
    got = {(e["arch"], e["exporter"]) for e in MANIFEST}
    assert {("bert", "torchscript"), ("bert", "dynamo"), ("distilbert", "torchscript"),
            ("minilm", "dynamo")} <= got
    assert {e["weight_quant"] for e in MANIFEST} >= {None, "int8-dequant", "int8-castmul"}
    assert any(e["external_data"] for e in MANIFEST)
    assert {"eager", "sdpa"} <= {e["attn"] for e in MANIFEST}


@entries
def test_manifest_entry_complete(entry):
    assert REQUIRED_KEYS <= set(entry), REQUIRED_KEYS - set(entry)
    for inp in entry["inputs"]:
        assert inp["shape"] == ["batch", "sequence"], inp


@entries
def test_file_exists(entry):
    p = _path(entry)
    assert p.is_file(), p
    if entry["external_data"]:
        assert (p.parent / entry["external_data"]).is_file()
        m = onnx.load(str(p), load_external_data=False)
        assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in m.graph.initializer)


@entries
def test_checker(entry):
    onnx.checker.check_model(str(_path(entry)), full_check=True)


@entries
def test_graph_signature(entry):
    m = _load(entry)
    assert _opset(m) == entry["opset"]
    g = m.graph
    assert [i.name for i in g.input] == [i["name"] for i in entry["inputs"]]
    for vi, want in zip(g.input, entry["inputs"]):
        dims = [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
        assert dims == want["shape"]
        assert vi.type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert [o.name for o in g.output] == [o["name"] for o in entry["outputs"]]
    want_inputs = ["input_ids", "attention_mask"] + (["token_type_ids"] if entry["arch"] != "distilbert" else [])
    assert [i.name for i in g.input] == want_inputs


@entries
def test_runs_in_onnxruntime(entry):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(_path(entry)), so, providers=["CPUExecutionProvider"])
    feeds = _feeds(entry, np.random.default_rng(0))
    outs = sess.run(None, feeds)
    h = entry["hidden_size"]
    for o, spec in zip(outs, entry["outputs"]):
        assert o.dtype == np.float32
        assert np.isfinite(o).all(), spec["name"]
        if spec["name"] == "last_hidden_state":
            assert o.shape == (BATCH, SEQ, h)
        elif spec["name"] == "pooler_output":
            assert o.shape == (BATCH, h)


@entries
def test_weight_sparsity(entry):
    w = linear_weights(_load(entry))
    L = entry["num_layers"]
    pooler = any(o["name"] == "pooler_output" for o in entry["outputs"])
    assert len(w) == entry["num_pruned_weights"] == 6 * L + int(pooler)
    if entry["sparsity"] == 0:
        return
    for name, a in w.items():
        s = 1.0 - np.count_nonzero(a) / a.size
        assert abs(s - entry["sparsity"]) <= 0.01, f"{name}: sparsity {s:.4f} vs {entry['sparsity']}"
    if entry["weight_quant"]:
        assert all(a.dtype == np.int8 for a in w.values())
    else:
        assert all(a.dtype == np.float32 for a in w.values())


@entries
def test_sparsity_pattern(entry):
    """block RxC: whole blocks (torch [out, in] orientation) are zero or kept;
    N:M: at most N nonzeros in every M consecutive input weights."""
    pat = entry["pattern"]
    mb = re.fullmatch(r"block(\d+)x(\d+)", pat)
    mn = re.fullmatch(r"(?:nm)?(\d+):(\d+)", pat)
    if not (mb or mn):
        return
    for name, a in linear_weights(_load(entry)).items():
        out_f, in_f = a.shape
        nz = a != 0
        if mb:
            r, c = int(mb.group(1)), int(mb.group(2))
            blocks = nz.reshape(out_f // r, r, in_f // c, c).sum(axis=(1, 3))
            assert np.isin(blocks, [0, r * c]).all(), f"{name}: partial {r}x{c} blocks"
        else:
            n, m = int(mn.group(1)), int(mn.group(2))
            groups = nz.reshape(out_f, in_f // m, m).sum(axis=-1)
            assert (groups <= n).all(), f"{name}: more than {n} of {m} kept"


@entries
def test_weight_quant_pattern(entry):
    m = _load(entry)
    ops = [n.op_type for n in m.graph.node]
    n_w = entry["num_pruned_weights"]
    if entry["weight_quant"] == "int8-dequant":
        assert ops.count("DequantizeLinear") == n_w
    elif entry["weight_quant"] == "int8-castmul":
        casts = [n for n in m.graph.node if n.op_type == "Cast"
                 and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT for a in n.attribute)
                 and n.input[0].endswith("_quantized")]
        assert len(casts) == n_w
    else:
        assert "DequantizeLinear" not in ops
