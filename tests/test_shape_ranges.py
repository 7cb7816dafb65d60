"""Shape ranges (issue 16): --input-shape NAME=LO..HI dims, one C build running any dims inside the
range at their cost (codegen/c/dynamic.py), checked against onnxruntime at several shapes."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import s4c
from s4c.errors import FrontendError, S4CError, TargetError
from s4c.frontend import parse_shape_binding
from s4c.frontend.onnx_import import normalize_dims
from s4c.driver import load_compiled
from test_s4_buckets import _without_mask

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BERT_MINI = os.path.join(REPO, "examples", "models", "bert_mini_pruned90.onnx")
SHAPES = [(1, 16), (1, 64), (1, 128), (2, 37), (4, 128), (3, 1)]


def test_parse_ranges():
    assert parse_shape_binding("input_ids=1..8x1..256") == ("input_ids", ((1, 8), (1, 256)))
    assert parse_shape_binding("x=1,2..2") == ("x", (1, 2))  # LO == HI: a fixed dim
    assert normalize_dims("x", (range(1, 9), "1..256")) == ((1, 8), (1, 256))
    assert normalize_dims("x", "1x1..64") == (1, (1, 64))
    with pytest.raises(FrontendError):
        parse_shape_binding("x=1x5..2")
    with pytest.raises(FrontendError):
        parse_shape_binding("x=1x0..2")


def test_import_records_ranges():
    g = s4c.load_onnx(BERT_MINI, input_shapes={"input_ids": (range(1, 5), range(1, 129))})
    assert [v.shape for v in g.inputs] == [(4, 128)] * 3  # static at the maximum
    assert g.dim_ranges.ranges == {"batch": (1, 4), "sequence": (1, 128)}
    # the symbols bound through input_ids bind every input's dims
    assert g.dim_ranges.inputs == {n: ("batch", "sequence") for n in ("input_ids", "attention_mask", "token_type_ids")}
    assert g.clone().dim_ranges is g.dim_ranges
    assert s4c.load_onnx(BERT_MINI, input_shapes={"input_ids": (1, 128)}).dim_ranges is None


def _feeds(names, B, T, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.ones((B, T), np.int64)
    for b in range(1, B):
        mask[b, max(T - 1 - 3 * b, 1):] = 0  # padding, never a fully masked row
    feeds = {"input_ids": rng.integers(3, 500, (B, T)).astype(np.int64), "attention_mask": mask,
             "token_type_ids": (np.arange(T)[None, :] >= T // 2).astype(np.int64).repeat(B, 0)}
    return {n: feeds[n] for n in names}


def _ort(path, feeds):
    import onnxruntime as ort

    sess = ort.InferenceSession(path)
    return {o.name: r for o, r in zip(sess.get_outputs(), sess.run(None, feeds))}


@pytest.fixture(scope="module")
def mini_range(tmp_path_factory):
    out = tmp_path_factory.mktemp("range") / "out"
    s4c.compile(BERT_MINI, {"input_ids": "1..4x1..128"}, target="c", outdir=out)
    return out


def test_c_range_matches_onnxruntime(mini_range):
    pytest.importorskip("onnxruntime")
    model = s4c.load(mini_range, threads=2)
    names = [io["name"] for io in model.inputs]
    for B, T in SHAPES:
        feeds = _feeds(names, B, T)
        got = model.run(feeds)
        for name, want in _ort(BERT_MINI, feeds).items():
            assert got[name].shape == want.shape
            assert np.max(np.abs(got[name] - want)) <= 1e-3, (B, T, name)
    model.set_threads(1)
    assert model.run(_feeds(names, 2, 37))["last_hidden_state"].shape == (2, 37, 128)


def test_c_range_errors(mini_range):
    model = s4c.load(mini_range)
    names = [io["name"] for io in model.inputs]
    with pytest.raises(S4CError, match=r"dim 1 \(sequence\) is 200, outside the compiled range 1..128"):
        model.run(_feeds(names, 1, 200))
    feeds = _feeds(names, 2, 16)
    feeds["attention_mask"] = feeds["attention_mask"][:, :8]
    with pytest.raises(S4CError, match="another input gives"):
        model.run(feeds)


def test_ref_range_runs_any_allowed_shape(mini_range):
    """The reference evaluator on a range build's IR (at the maxima) runs smaller shapes padded and
    cut back: the same numbers as onnxruntime at each shape."""
    pytest.importorskip("onnxruntime")
    compiled = load_compiled(mini_range)
    assert compiled.graph.dim_ranges.outputs == {"last_hidden_state": ("batch", "sequence", None),
                                                 "pooler_output": ("batch", None)}
    names = [v.name for v in compiled.graph.inputs]
    for B, T in SHAPES + [(3, 1), (4, 128)]:
        feeds = _feeds(names, B, T, seed=B + T)
        got = compiled.run(feeds, backend="ref")
        for name, want in _ort(BERT_MINI, feeds).items():
            assert got[name].shape == want.shape
            assert np.max(np.abs(got[name] - want)) <= 1e-4, (B, T, name)
    with pytest.raises(S4CError, match=r"dim 1 \(sequence\) is 129, outside the compiled range 1..128"):
        compiled.run(_feeds(names, 1, 129), backend="ref")


def test_ref_range_without_a_mask_runs_at_the_maximum_only(tmp_path):
    path = _without_mask(tmp_path)
    compiled = s4c.compile(path, {"input_ids": "1x1..32"}, target="c", outdir=tmp_path / "o")
    names = [v.name for v in compiled.graph.inputs]
    assert compiled.run(_feeds(names, 1, 32), backend="ref")["last_hidden_state"].shape == (1, 32, 128)
    with pytest.raises(S4CError, match="no attention mask input to hide padding"):
        load_compiled(tmp_path / "o").run(_feeds(names, 1, 20), backend="ref")


def test_c_range_header_and_harness(mini_range, tmp_path):
    cdir = mini_range / "c"
    header = (cdir / "model.h").read_text()
    assert "s4c_model_run_dims" in header and "#define S4C_MODEL_DIM1_MAX 128" in header
    if subprocess.run(["make", "-s", "-C", str(cdir), "s4c_model"], capture_output=True).returncode:
        pytest.skip("no C compiler")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    feeds = _feeds(names, 2, 21)
    paths = []
    for n in names:
        paths.append(str(tmp_path / f"{n}.npy"))
        np.save(paths[-1], feeds[n])
    outs = [str(tmp_path / "o0.npy"), str(tmp_path / "o1.npy")]
    subprocess.run([str(cdir / "s4c_model"), str(cdir / "weights.bin"), *paths, *outs], check=True)
    got = s4c.load(mini_range).run(feeds)
    assert np.array_equal(np.load(outs[0]), got["last_hidden_state"])
    np.save(paths[0], np.zeros((2, 300), np.int64))
    r = subprocess.run([str(cdir / "s4c_model"), str(cdir / "weights.bin"), *paths, *outs], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "outside the compiled range 1..128" in r.stderr


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_family_range(exporter, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    sys.path.insert(0, os.path.join(REPO, "examples"))
    from model_families import cached_family_model, example_inputs, input_names

    path = str(cached_family_model("bert", exporter, True))
    names = input_names("bert", True)
    s4c.compile(path, {n: ("1..3", "1..32") for n in names}, target="c", outdir=tmp_path / "o")
    model = s4c.load(tmp_path / "o")
    for B, T in [(1, 16), (2, 7), (3, 32), (1, 1)]:
        feeds = example_inputs(names, B, T, seed=3)
        got = model.run(feeds)
        for name, want in _ort(path, feeds).items():
            assert np.max(np.abs(got[name] - want)) <= 1e-3, (B, T, name)
