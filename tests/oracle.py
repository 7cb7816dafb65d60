"""Shared test helpers: the committed fixtures, deterministic model inputs, and the onnxruntime oracle.

onnxruntime runs with graph optimisations disabled: its own fusions (e.g. DequantizeLinear+MatMul)
are approximations, and the oracle must be the ONNX semantics."""

from __future__ import annotations

import json
import os

import numpy as np

MODELS_DIR = os.path.join(os.path.dirname(__file__), "models")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fixtures() -> list[dict]:
    """Manifest entries of the committed fixtures, each with an absolute `path`."""
    with open(os.path.join(MODELS_DIR, "manifest.json")) as f:
        models = json.load(f)["models"]
    for m in models:
        m["path"] = os.path.join(MODELS_DIR, m["file"])
    return models


def make_feeds(input_names, batch: int = 2, seq: int = 16, vocab: int = 100, seed: int = 0) -> dict:
    """BERT-style inputs: random ids, a padding mask with the second sentence cut short, zeros for types."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name in input_names:
        if name == "attention_mask":
            mask = np.ones((batch, seq), np.int64)
            if batch > 1:
                mask[1, seq * 2 // 3:] = 0
            feeds[name] = mask
        elif name == "token_type_ids":
            types = np.zeros((batch, seq), np.int64)
            types[:, seq // 2:] = 1
            feeds[name] = types
        else:
            feeds[name] = rng.integers(0, vocab, (batch, seq), dtype=np.int64)
    return feeds


def ort_outputs(model, feeds: dict) -> dict:
    """The onnxruntime result (exact mode) keyed by output name. `model` is a path or ModelProto."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = model if isinstance(model, (str, os.PathLike)) else model.SerializeToString()
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def max_abs_diff(a: dict, b: dict) -> dict:
    assert set(a) == set(b), (sorted(a), sorted(b))
    return {k: float(np.max(np.abs(np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64)))) for k in a}


def random_feeds(graph, seed: int = 0) -> dict:
    """Random inputs for any IR graph: normal floats, 0/1 ints (valid ids for any table), and for
    booleans and inputs named *mask*, 0/1 with the first position of each row 1 (no row fully masked)."""
    from s4c.ir import numpy_dtype

    rng = np.random.default_rng(seed)
    feeds = {}
    for v in graph.inputs:
        dtype = numpy_dtype(v.dtype)
        if "mask" in v.name or v.dtype == "bool":
            keep = rng.random(v.shape) < 0.7
            keep[..., 0] = True
            feeds[v.name] = keep.astype(dtype)
        elif np.issubdtype(dtype, np.floating):
            feeds[v.name] = rng.standard_normal(v.shape).astype(dtype)
        else:
            feeds[v.name] = rng.integers(0, 2, v.shape).astype(dtype)
    return feeds


def assert_outputs_close(expected: dict, actual: dict, what: str, tol: float = 1e-5) -> float:
    """Same outputs, types and NaN positions; floats within `tol` max abs, the rest equal.
    Returns the largest float difference."""
    assert set(expected) == set(actual), f"{what}: outputs {sorted(actual)}, expected {sorted(expected)}"
    worst = 0.0
    for name, ref in expected.items():
        got = actual[name]
        assert got.shape == ref.shape and got.dtype == ref.dtype, f"{what}: {name} changed type"
        if ref.dtype.kind != "f":
            assert np.array_equal(got, ref), f"{what}: {name} differs"
            continue
        assert np.array_equal(np.isnan(got), np.isnan(ref)), f"{what}: {name} NaN positions differ"
        ok = ~np.isnan(ref)
        diff = float(np.max(np.abs(got[ok].astype(np.float64) - ref[ok]), initial=0.0))
        assert diff <= tol, f"{what}: {name} differs by {diff:.3g}"
        worst = max(worst, diff)
    return worst
