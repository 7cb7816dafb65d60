"""Sparse layout selection (issue 4): the analyze-sparsity and select-sparse-layout passes (planted
patterns, overrides and their errors; their golden IR cases are in tests/golden/<pass>/, run by
tests/test_goldens.py), the compile report's layout section, the CLI path, `s4c inspect`'s sparsity
table, and BERT-base 90% (slow).

Costs come from the models in s4c.targets with the C model's built-in defaults (the developer's
calibration file is never read here), so nothing depends on timing.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from oracle import REPO
from s4c import ops
from s4c.cli import main
from s4c.codegen.protocol import Artifacts, Backend
from s4c.driver import run_pipeline, select_layouts
from s4c.errors import PassError
from s4c.frontend import load_onnx
from s4c.ir import Graph, Op, TensorType, Value
from s4c.ops import Attr
from s4c.passes import PassManager, VerifyEach, get_pass
from s4c.sparse import analyze_sparsity, parse_layout
from s4c.targets import LinearShapes
from s4c.text import parse_graph
from s4c.verify import verify

BUNDLED = os.path.join(REPO, "examples", "models", "bert_mini_pruned90.onnx")
TINY = os.path.join(REPO, "tests", "models", "bert_tiny_ts_op17.onnx")


@pytest.fixture(autouse=True)
def _no_user_calibration(tmp_path, monkeypatch):
    """The C model's built-in defaults, never the developer's ~/.cache/s4c calibration."""
    monkeypatch.setenv("S4C_CACHE", str(tmp_path / "s4c-cache"))


def _run(graph: Graph, *passes) -> Graph:
    PassManager(list(passes), [VerifyEach()]).run(graph)
    return graph


def _select(**options):
    return get_pass("select-sparse-layout")(**options)


# -- weights with planted patterns ----------------------------------------------------------------

def _values(rng, shape):
    w = rng.standard_normal(shape).astype(np.float32)
    w[w == 0] = 1.0
    return w


def planted_blocks(shape=(768, 768), block=(16, 1), density=0.1, seed=0):
    """Exact r x c blocks: a random `density` of the blocks kept whole."""
    rng = np.random.default_rng(seed)
    r, c = block
    kept = rng.random((shape[0] // r, shape[1] // c)) < density
    return _values(rng, shape) * np.kron(kept, np.ones(block, bool))


def planted_nm(shape=(768, 768), n=2, m=8, seed=0):
    """Exactly n nonzeros in every aligned group of m along `in`."""
    rng = np.random.default_rng(seed)
    order = np.argsort(rng.random((shape[0], shape[1] // m, m)), axis=2)[:, :, :n]
    mask = np.zeros((shape[0], shape[1] // m, m), bool)
    np.put_along_axis(mask, order, True, axis=2)
    return _values(rng, shape) * mask.reshape(shape)


def uniform(shape=(768, 768), sparsity=0.95, seed=0):
    rng = np.random.default_rng(seed)
    return _values(rng, shape) * (rng.random(shape) >= sparsity)


def linear_graph(weights: dict[str, np.ndarray], tokens: int = 128) -> Graph:
    """x -> Linear(w0) -> Linear(w1) ... (each weight [out, in]); op i has ONNX node /layer.i/<name>/MatMul."""
    first = next(iter(weights.values()))
    x = Value("x", TensorType("f32", (1, tokens, first.shape[1])))
    graph, h = Graph("main", [x]), x
    for i, (name, w) in enumerate(weights.items()):
        y = Value(f"y{i}", TensorType("f32", (1, tokens, w.shape[0])))
        graph.ops.append(Op("Linear", [h, Value.constant(name, w)], [y], onnx_nodes=[f"/layer.{i}/{name}/MatMul"]))
        h = y
    graph.outputs = [h]
    verify(graph)
    return graph


def _choice(graph: Graph, target: str, **options) -> tuple[list[str], object]:
    p = _select(target=target, **options)
    _run(graph, p)
    return [op.attrs["layout"] for op in graph.ops if op.op == "Linear"], p


# -- the passes' side tables ----------------------------------------------------------------------

def test_costs_attribute_matches_the_side_table():
    graph = linear_graph({"a": planted_blocks(), "b": uniform(sparsity=0.2)})
    _, p = _choice(graph, "c")
    for op, choice in zip(graph.ops, p.choices):
        assert op.attrs["layout_costs"] == [f"{k}={v:.3e}" for k, v in choice.costs.items()]
        assert op.attrs["layout"] == str(choice.layout) and choice.chosen_by == "model"
        assert min(choice.costs.values()) == choice.costs[op.attrs["layout"]]


def test_analyze_sparsity_side_table_covers_unfused_matmul_and_int8_weights():
    w_i8 = np.array([[1, 0, 0, 2], [0, 0, 3, 0], [0, 4, 0, 0]], np.int8)  # [out=3, in=4]
    graph = parse_graph('''graph @main(%x: f32[2,4]) {
  %q = const i8[3,4] [1, 0, 0, 2, 0, 0, 3, 0, 0, 4, 0, 0]
  %s = const f32[3] [0.5, 0.25, 0.125]
  %v = const f32[4,3] [1.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0]
  %w = DequantizeWeight(%q, %s) {axis = 0} : f32[3,4]
  %y = Linear(%x, %w) : f32[2,3]
  %z = MatMul(%x, %v) : f32[2,3]
  %o = Add(%y, %z) : f32[2,3]
  return %o
}
''')
    p = get_pass("analyze-sparsity")()
    p.run(graph)
    (lin, lin_report), (mm, mm_report) = p.results
    assert lin.name == "q" and lin.names[:2] == ("w", "q") and lin.dtype == np.int8 and lin.tokens == 2
    assert lin_report.nnz == np.count_nonzero(w_i8) and lin_report.shape == (3, 4)
    assert mm.name == "v" and mm.transposed and mm_report.shape == (3, 4)  # W = v^T, [out, in]
    assert str(mm_report.nm_pattern) == "nm1:32"  # one nonzero per (4-wide, padded) row


# -- planted patterns -----------------------------------------------------------------------------

PLANTED = {
    "blocks16x1": (lambda: planted_blocks(block=(16, 1), density=0.1), "bsr16x1", "bsr16x1"),
    "nm2:8": (lambda: planted_nm(n=2, m=8), "nm2:8", "nm2:8"),
    "uniform95": (lambda: uniform(sparsity=0.95), "csr", None),
    "dense": (lambda: uniform(sparsity=0.0), "dense", None),
}


@pytest.mark.parametrize("target", ["c", "s4"])
@pytest.mark.parametrize("pattern", list(PLANTED))
def test_selection_finds_the_planted_layout(pattern, target):
    make, expected_c, expected_s4 = PLANTED[pattern]
    w = make()
    graph = linear_graph({"w": w})
    (layout,), p = _choice(graph, target)
    costs = p.choices[0].costs
    expected = expected_c if target == "c" else expected_s4
    if expected is not None:
        assert layout == expected, sorted(costs.items(), key=lambda kv: kv[1])[:4]
    else:  # the planted layout is not on this target (CSR on S4) or the model prefers another:
        # then the report shows the choice is cheapest under the model
        assert costs[layout] == min(costs.values())
        if pattern == "uniform95":
            assert layout != "dense" and costs[layout] < costs["dense"] / 2
    assert parse_layout(layout).pack(w).nbytes == p.choices[0].bytes[layout]


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.2, 0.3])
def test_c_keeps_dense_and_lightly_sparse_weights_dense(sparsity):
    shapes = [(768, 768), (3072, 768), (768, 3072)]
    graph = linear_graph({f"w{i}": uniform(shape, sparsity, seed=i) for i, shape in enumerate(shapes)})
    layouts, _ = _choice(graph, "c")
    assert layouts == ["dense"] * 3


def test_every_candidate_is_supported_and_nm_only_where_compliant():
    graph = linear_graph({"a": planted_nm(n=1, m=8), "b": uniform(sparsity=0.5)})
    for target in ("c", "s4"):
        _, p = _choice(graph.clone(), target)
        a, b = p.choices
        assert {"nm1:8", "nm2:8", "nm1:4", "nm2:4"} <= set(a.costs) and "nm1:16" not in a.costs
        nm_b = [name for name in b.costs if name.startswith("nm")]
        if target == "c":
            assert not nm_b
        else:  # S4 also prices N:M with fill-in: one pattern, N = the fullest group's count
            (name,) = nm_b
            layout = parse_layout(name)
            assert b.report.max_nonzeros_per_group[layout.m] == layout.n
            assert all(b.report.satisfies(parse_layout(n)) for n in b.costs if n.startswith("nm"))
        assert all(p.target_model.supports(name) for name in a.costs)
        assert ("csr" in a.costs) == (target == "c")


def planted_1_of_m(shape, m, seed=0):
    """One nonzero in every aligned group of m along `in`; the last group may be short."""
    rng = np.random.default_rng(seed)
    out_dim, in_dim = shape
    starts = np.arange(0, in_dim, m)
    widths = np.minimum(m, in_dim - starts)
    columns = starts + (rng.random((out_dim, len(starts))) * widths).astype(int)
    w = np.zeros(shape, np.float32)
    np.put_along_axis(w, columns, _values(rng, columns.shape), axis=1)
    return w


@pytest.mark.parametrize("target", ["c", "s4"])
@pytest.mark.parametrize("m, in_dim", [(20, 768), (20, 3072), (16, 768), (12, 768), (32, 3072)])
def test_selection_finds_1_of_m_whether_or_not_m_divides_the_width(target, m, in_dim):
    """Issue 15: a model pruned 1:20 (768 inputs: 38 groups of 20 and one of 8) was compiled as nm1:4."""
    w = planted_1_of_m((768, in_dim), m, seed=m)
    graph = linear_graph({"w": w})
    (layout,), p = _choice(graph, target)
    assert layout == f"nm1:{m}", sorted(p.choices[0].costs.items(), key=lambda kv: kv[1])[:4]
    assert parse_layout(layout).pack(w).nbytes == p.choices[0].bytes[layout]
    np.testing.assert_array_equal(parse_layout(layout).pack(w).to_dense(), w)


def test_s4_prices_n_m_with_fill_in_for_unstructured_weights_and_c_does_not():
    w = uniform(sparsity=0.8, seed=3)
    report = analyze_sparsity(w)
    fill_in = report.nm_fill_in()
    assert fill_in and all(report.satisfies(p) and report.max_nonzeros_per_group[p.m] == p.n for p in fill_in)
    _, s4 = _choice(linear_graph({"w": w}), "s4")
    _, c = _choice(linear_graph({"w": w}), "c")
    s4_nm = [name for name in s4.choices[0].costs if name.startswith("nm")]
    assert not [name for name in c.choices[0].costs if name.startswith("nm")] and len(s4_nm) == 1
    # the one offered is the cheapest of every fill-in pattern under the S4 model
    target, shapes = s4.target_model, LinearShapes(128, report)
    costs = {str(p): target.cost("Linear", p, shapes) for p in fill_in}
    assert s4.choices[0].costs[s4_nm[0]] == min(costs.values())
    chosen = s4.choices[0]
    assert chosen.costs[str(chosen.layout)] == min(chosen.costs.values())


def test_layout_report_projects_every_weight_onto_the_named_patterns_on_s4():
    graph = linear_graph({"u": uniform(sparsity=0.9, seed=1), "q": planted_1_of_m((768, 768), 16)})
    report, md = {}, []
    for target in ("s4", "c"):
        select_layouts(graph, target, {}, None, report, md)
    assert "projections" not in report["layouts"]["c"] and "What N:M pruning" not in md[1]
    section = report["layouts"]["s4"]
    u, q = section["weights"]
    assert list(u["projections"]) == ["nm2:4", "nm1:4", "nm2:8", "nm1:8", "nm1:16", "nm1:32"]
    # the unstructured weight: tighter patterns are cheaper, none dearer than its current layout
    p = u["projections"]
    assert p["nm1:32"] < p["nm1:16"] < p["nm1:8"] < p["nm1:4"] <= u["cost_s"]
    # the 1:16 weight keeps its layout for every pattern it complies with; only 1:32 would gain
    assert q["layout"] == "nm1:16" and q["projections"]["nm1:16"] == q["projections"]["nm1:4"] == q["cost_s"]
    assert q["projections"]["nm1:32"] < q["cost_s"]
    totals = section["projections"]["nm1:16"]
    assert totals["cost_s"] == pytest.approx(u["projections"]["nm1:16"] + q["projections"]["nm1:16"])
    assert totals["speedup_vs_current"] == pytest.approx(section["totals"]["cost_s"] / totals["cost_s"])
    assert totals["speedup_vs_dense"] > totals["speedup_vs_current"] > 1
    text = md[0]
    assert "### What N:M pruning would reach (target s4)" in text and "s4c sparsify" in text
    assert f"| nm1:16 | " in text and f"{totals['speedup_vs_current']:.2f}x" in text
    assert f"| q | nm1:16 | 1.00x | 1.00x | 1.00x | 1.00x | 1.00x | {q['cost_s'] / q['projections']['nm1:32']:.2f}x |" in text


# -- overrides and defaults -----------------------------------------------------------------------

def _two_layers():
    return linear_graph({"encoder.query.weight": planted_blocks(), "encoder.ffn.weight": uniform(sparsity=0.9)})


def test_overrides_match_weight_names_and_onnx_nodes_last_one_wins():
    layouts, p = _choice(_two_layers(), "c", overrides="*query*=dense")
    assert layouts == ["dense", "csr"] and p.choices[0].chosen_by == "override *query*"
    layouts, _ = _choice(_two_layers(), "c", overrides="/layer.1/*=bsr4x1")  # an ONNX node name
    assert layouts == ["bsr16x1", "bsr4x1"]
    layouts, _ = _choice(_two_layers(), "c", overrides="*=csr; *ffn*=nm2:4 ;*ffn*=bsr8x8")
    assert layouts == ["csr", "bsr8x8"]
    layouts, _ = _choice(_two_layers(), "c", overrides="nothing*=csr")
    assert layouts == ["bsr16x1", "csr"]


def test_default_replaces_the_cost_model_where_no_override_matches():
    layouts, p = _choice(_two_layers(), "s4", default="bsr8x1", overrides="*ffn*=dense")
    assert layouts == ["bsr8x1", "dense"]
    assert [c.chosen_by for c in p.choices] == ["default", "override *ffn*"]
    assert "bsr8x1" in p.choices[0].costs  # the forced layout is priced for the report too


@pytest.mark.parametrize("options, message", [
    ({"target": "c", "overrides": "*query*=bsr3x1"},
     "weight 'encoder.query.weight' (override '*query*=bsr3x1'): unknown layout 'bsr3x1'; target c supports: "
     "dense, csr, bsr4x1"),
    ({"target": "s4", "overrides": "*ffn*=csr"},
     "weight 'encoder.ffn.weight' (override '*ffn*=csr'): target s4 does not run layout csr; supported: dense, "
     "bsr4x1"),
    ({"target": "c", "default": "nm2:4"},
     "weight 'encoder.query.weight' cannot be stored as nm2:4 (default 'nm2:4'): a group of 4 holds"),
    ({"target": "c", "overrides": "nothing=dense4"}, "override 'nothing=dense4' (matches no weight): unknown layout"),
    ({"target": "c", "overrides": "*query*"}, "override '*query*' is not GLOB=layout"),
    ({"target": "c", "overrides": "=csr"}, "override '=csr' is not GLOB=layout"),
    ({}, "option target is required (s4 or c)"),
    ({"target": "gpu"}, "unknown target 'gpu'"),
])
def test_bad_overrides_are_one_line_pass_errors(options, message):
    with pytest.raises(PassError) as info:
        _run(_two_layers(), _select(**options))
    text = str(info.value)
    assert text.startswith("pass select-sparse-layout: ") and "\n" not in text
    assert message in text, text


# -- the compile report ---------------------------------------------------------------------------

def test_select_layouts_adds_the_layout_report():
    graph = _two_layers()
    report, md = {}, []
    selected = select_layouts(graph, "c", {"layout_overrides": ["*ffn*=bsr4x1"]}, None, report, md)
    assert "layout" not in graph.ops[0].attrs, "the original graph is left alone"
    assert [op.attrs["layout"] for op in selected.ops] == ["bsr16x1", "bsr4x1"]
    section = report["layouts"]["c"]
    assert section["target"] == "c" and "built-in defaults" in section["cost_model"]
    q, f = section["weights"]
    assert q["weight"] == "encoder.query.weight" and q["shape"] == [768, 768] and q["dtype"] == "float32"
    assert q["layout"] == "bsr16x1" and q["chosen_by"] == "model" and q["onnx_node"] == "/layer.0/encoder.query.weight/MatMul"
    assert q["density"] == pytest.approx(0.1, abs=0.01) and q["tokens"] == 128
    assert q["bytes"] == parse_layout("bsr16x1").pack(graph.ops[0].inputs[1].data).nbytes
    assert q["dense_bytes"] == 768 * 768 * 4
    assert list(q["candidates"])[0] == "bsr16x1" and q["cost_s"] == q["candidates"]["bsr16x1"]["cost_s"]
    assert f["chosen_by"] == "override *ffn*" and f["layout"] == "bsr4x1"
    totals = section["totals"]
    assert totals["bytes"] == q["bytes"] + f["bytes"] and totals["dense_bytes"] == 2 * 768 * 768 * 4
    assert totals["bytes_vs_dense"] < 0.5 and totals["modelled_speedup"] > 2
    assert totals["layouts"] == {"bsr16x1": 1, "bsr4x1": 1}
    json.dumps(report)
    (text,) = md
    assert text.startswith("## Weight layouts: target c")
    assert "| encoder.query.weight (/layer.0/encoder.query.weight/MatMul) | 768x768 float32 | 0.10" in text
    assert "2 weights:" in text and "bsr16x1 x1" in text


class _FakeBackend(Backend):
    """A backend stand-in: the driver path without code generation."""

    name = "fake"

    def __init__(self):
        self.graphs = []

    def build(self, graph, outdir, options=None):
        self.graphs.append(graph)
        return Artifacts({}, {"built": True}, "## fake backend")

    def load(self, outdir, options=None):
        raise NotImplementedError

    def prepare(self, graph, options):
        raise NotImplementedError


@pytest.fixture
def fake_c(monkeypatch):
    import s4c.driver

    backend = _FakeBackend()
    monkeypatch.setattr(s4c.driver, "available_backends", lambda: {"c": backend})
    return backend


def test_cli_compile_writes_the_layout_report(tmp_path, fake_c):
    out = tmp_path / "out"
    assert main(["compile", TINY, "-o", str(out), "--target", "c", "--input-shape", "input_ids=1x16",
                 "--layout", "*/layer.0/*=bsr16x1"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["c"] == {"built": True}
    weights = report["layouts"]["c"]["weights"]
    assert len(weights) == len([op for op in fake_c.graphs[0].ops if op.op == "Linear"]) >= 6
    forced = [w for w in weights if w["chosen_by"] == "override */layer.0/*"]
    assert forced and all(w["layout"] == "bsr16x1" for w in forced)
    assert all(w["layout"] == "csr" for w in weights if w["chosen_by"] == "model" and w["shape"][1] >= 64)
    md = (out / "report.md").read_text()
    assert "## fake backend" in md and "## Weight layouts: target c" in md


@pytest.mark.parametrize("layout, message", [
    ("*/layer.0/*=bsr16x3", "unknown layout 'bsr16x3'"),
    ("*query*=csr", None),  # fine on C ...
])
def test_cli_compile_rejects_bad_overrides_with_exit_2(tmp_path, fake_c, capsys, layout, message):
    out = tmp_path / "out"
    code = main(["compile", TINY, "-o", str(out), "--target", "c", "--input-shape", "input_ids=1x16",
                 "--layout", layout])
    err = capsys.readouterr().err
    if message is None:
        assert code == 0, err
        return
    assert code == 2 and err.startswith("error: pass select-sparse-layout: ") and err.count("\n") == 1, err
    assert message in err and "supports: dense, csr, bsr4x1" in err
    assert not out.exists()


def test_cli_compile_rejects_a_layout_the_target_does_not_run(tmp_path, monkeypatch, capsys):
    import s4c.driver

    monkeypatch.setattr(s4c.driver, "available_backends", lambda: {"s4": _FakeBackend()})
    code = main(["compile", TINY, "-o", str(tmp_path / "out"), "--target", "s4", "--input-shape", "input_ids=1x16",
                 "--layout", "*query*=csr"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "target s4 does not run layout csr; supported: dense, bsr4x1" in err


# -- s4c inspect ----------------------------------------------------------------------------------

def test_inspect_shows_the_sparsity_analysis_of_onnx_models_and_outdirs(tmp_path, capsys):
    assert main(["inspect", os.path.join(REPO, "tests", "models", "bert_tiny_ts_op21_block4x1.onnx")]) == 0
    text = capsys.readouterr().out
    table = text.split("sparsity analysis (")[1]
    assert table.splitlines()[1].split() == ["name", "W[out,in]", "density", "best", "block", "fill-in", "N:M"]
    rows = [line.split() for line in table.splitlines()[3:] if line.strip()]
    pruned = [r for r in rows if r[0].startswith("onnx::MatMul")]
    assert pruned and all(r[2] == "0.100" and r[3] == "4x1" and r[4] == "0.000" for r in pruned), pruned
    assert any(r[1] == "256x64" for r in pruned), "MatMul weights are shown as W[out, in]"

    assert main(["inspect", os.path.join(REPO, "tests", "models", "bert_tiny_ts_op17_nm2of8.onnx")]) == 0
    rows = [line.split() for line in capsys.readouterr().out.split("sparsity analysis (")[1].splitlines()[3:]]
    assert all(r[-1] == "2:8" for r in rows if r and r[0].startswith("onnx::MatMul"))

    out = tmp_path / "out"
    assert main(["compile", TINY, "-o", str(out), "--target", "ir", "--input-shape", "input_ids=1x16"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "sparsity analysis (" in text and "0.100" in text.split("sparsity analysis (")[1]


# -- BERT-base, 90% unstructured (slow) -----------------------------------------------------------

@pytest.mark.slow
def test_bert_base_90_layout_report(capsys):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from bert_base import bert_base

    graph = load_onnx(bert_base("torchscript", 0.9), input_shapes={"input_ids": (1, 128), "attention_mask": (1, 128)})
    graph = run_pipeline(graph, "default")
    report, md = {}, []
    for target in ("c", "s4"):
        select_layouts(graph, target, {}, None, report, md)
    for target in ("c", "s4"):
        section = report["layouts"][target]
        totals = section["totals"]
        assert totals["weights"] == 12 * 4 + 1  # QKV (merged), attention out, FFN1, FFN2; pooler
        assert totals["bytes_vs_dense"] < 0.75 and totals["modelled_speedup"] > 1.5
        assert all(w["layout"] != "dense" for w in section["weights"] if w["tokens"] == 128)
        with capsys.disabled():
            print(f"\nBERT-base 90% {target}: {totals['bytes'] / 2**20:.1f} MiB vs {totals['dense_bytes'] / 2**20:.1f}"
                  f" MiB dense ({totals['bytes_vs_dense']:.1%}), modelled {totals['cost_s'] * 1e3:.2f} ms vs "
                  f"{totals['dense_cost_s'] * 1e3:.2f} ms, layouts {totals['layouts']}")
    assert "| " in md[0] and "Weight layouts: target s4" in md[1]
