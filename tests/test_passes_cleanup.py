"""The clean-up passes (issue 3) and the ONNX exporter.

- Golden IR tests: tests/golden/<pass>/<case>.s4ir, run by tests/test_goldens.py.
- Every clean-up pass, alone and as the `cleanup` pipeline, on every fixture with the verifier
  after each pass: the reference evaluator's outputs stay within 1e-5 of the unoptimised graph's.
- export_onnx: graphs of ONNX ops load in onnxruntime (optimisations off) and compute what the
  IR and the original model compute; s4c's ops go to the ai.s4c domain; big weights go external.
"""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
import onnx
import pytest

from oracle import assert_outputs_close, fixtures, make_feeds, ort_outputs, random_feeds
from s4c import export_onnx as export_module
from s4c.errors import PassError
from s4c.evaluate import evaluate
from s4c.export_onnx import CUSTOM_DOMAIN, export_onnx
from s4c.frontend import load_onnx
from s4c.ir import Graph, Op, TensorType, Value, numpy_dtype
from s4c.passes import PassManager, VerifyEach, all_passes, parse_pipeline
from s4c.passes.pipelines import PIPELINES
from s4c.text import parse_graph
from s4c.verify import verify

CLEANUP = ["fold-constants", "eliminate-dead-code", "eliminate-common-subexpressions",
           "simplify-algebra", "simplify-masks", "fold-weight-dequant", "infer-shapes"]
TOL = 1e-5
FIXTURES = [f for f in fixtures() if os.path.exists(f["path"])]
SHAPE = (2, 16)


# -- helpers -------------------------------------------------------------------------------------

_imported: dict[str, Graph] = {}


def _fixture_graph(entry) -> Graph:
    """A fresh copy of the fixture's imported graph (imported once per test session)."""
    if entry["name"] not in _imported:
        _imported[entry["name"]] = load_onnx(entry["path"], {i["name"]: SHAPE for i in entry["inputs"]})
    return _imported[entry["name"]].clone()


def _fixture_feeds(entry) -> dict:
    return make_feeds([i["name"] for i in entry["inputs"]], *SHAPE, vocab=entry["vocab_size"])


def _run(pipeline: str, graph: Graph) -> PassManager:
    pm = PassManager(parse_pipeline(pipeline), [VerifyEach()])
    pm.run(graph)
    return pm


def test_every_cleanup_pass_is_registered_and_in_the_cleanup_pipeline():
    passes = all_passes()
    for name in CLEANUP:
        assert name in passes and (passes[name].__doc__ or "").strip(), name
    assert PIPELINES["cleanup"] and set(PIPELINES["cleanup"]) <= set(passes)


def test_infer_shapes_repairs_stale_types():
    # As a pass that edits attributes in place leaves it: the Reshape says [6,4], its type [4,6].
    graph = parse_graph("""
graph @main(%x: f32[2,3,4]) {
  %a = Reshape(%x) {shape = [6, 4]} : f32[4,6]
  %b = Relu(%a) : f32[4,6]
  return %b
}""")
    pm = _run("infer-shapes", graph)
    assert pm.results[0][1].changed is True
    assert [str(op.output.type) for op in graph.ops] == ["f32[6,4]", "f32[6,4]"]
    assert _run("infer-shapes", graph).results[0][1].changed is False


def test_infer_shapes_names_the_op_it_cannot_type():
    graph = parse_graph("""
graph @main(%x: f32[2,3]) {
  %a = Reshape(%x) {shape = [5]} : f32[5]
  return %a
}""")
    with pytest.raises(PassError, match=r"pass infer-shapes: .*Reshape -> 'a'.*cannot reshape"):
        PassManager(parse_pipeline("infer-shapes")).run(graph)


# -- pass behaviour beyond the goldens -----------------------------------------------------------

def test_fold_constants_has_no_size_limit_and_stores_contiguous_arrays():
    w = np.random.default_rng(0).standard_normal((256, 512)).astype(np.float32)
    x, weight = Value("x", TensorType("f32", (2, 256))), Value.constant("w", w)
    wt, y = Value("wt", TensorType("f32", (512, 256))), Value("y", TensorType("f32", (2, 512)))
    graph = Graph(inputs=[x], outputs=[y], ops=[Op("Transpose", [weight], [wt], {"perm": [1, 0]}),
                                                 Op("Gemm", [x, wt], [y], {"transB": 1})])
    assert _run("fold-constants", graph).results[0][1].changed
    assert [op.op for op in graph.ops] == ["Gemm"]
    assert wt.is_constant and wt.data.flags.c_contiguous and np.array_equal(wt.data, w.T)


def test_fold_constants_reports_a_failing_constant_op_by_pass_and_op():
    graph = parse_graph("""
graph @main(%x: f32[2]) {
  %table = const f32[3] [1.0, 2.0, 3.0]
  %index = const i64[1] [7]
  %g = Gather(%table, %index) : f32[1]
  %y = Add(%x, %g) : f32[2]
  return %y
}""")
    with pytest.raises(PassError, match=r"^pass fold-constants: evaluating Gather -> 'g'.*IndexError"):
        PassManager(parse_pipeline("fold-constants")).run(graph)


def test_cse_compares_only_small_constants_by_content():
    def graph_with(n):
        a, b = np.ones(n, np.float32), np.ones(n, np.float32)
        return parse_graph(f"""
graph @main(%x: f32[{n}]) {{
  %a = const f32[{n}] <density=1.000 hash="0">
  %b = const f32[{n}] <density=1.000 hash="0">
  %p = Mul(%x, %a) : f32[{n}]
  %q = Mul(%x, %b) : f32[{n}]
  %y = Add(%p, %q) : f32[{n}]
  return %y
}}""", weights={"a": a, "b": b})

    assert _run("eliminate-common-subexpressions", graph_with(2000)).results[0][1].changed is False
    assert _run("eliminate-common-subexpressions{content-limit=4096}", graph_with(2000)).results[0][1].changed
    assert _run("eliminate-common-subexpressions", graph_with(16)).results[0][1].changed


def test_replace_all_uses_keeps_output_names():
    graph = parse_graph("""
graph @main(%x: f32[2]) {
  %t = Tanh(%x) : f32[2]
  %y = Identity(%t) : f32[2]
  %z = Identity(%x) : f32[2]
  return %y, %z
}""")
    t, y, z = graph.ops[0].output, graph.ops[1].output, graph.ops[2].output
    graph.replace_all_uses(y, t)  # an op result takes the public name
    graph.replace_all_uses(z, graph.inputs[0])  # a graph input cannot: an Identity carries it
    graph.remove_dead_ops()
    verify(graph)
    assert [v.name for v in graph.outputs] == ["y", "z"]
    assert graph.outputs[0] is t and graph.outputs[1].producer.op == "Identity"
    assert graph.outputs[1].producer.inputs == [graph.inputs[0]]


# -- every pass on every fixture -----------------------------------------------------------------

@pytest.mark.parametrize("entry", FIXTURES, ids=[f["name"] for f in FIXTURES])
def test_cleanup_passes_keep_fixture_results(entry):
    feeds = _fixture_feeds(entry)
    reference = evaluate(_fixture_graph(entry), feeds)
    for pipeline in CLEANUP + ["cleanup"]:
        graph = _fixture_graph(entry)
        _run(pipeline, graph)
        assert_outputs_close(reference, evaluate(graph, feeds), f"{entry['name']} after {pipeline}", tol=TOL)
        assert [v.name for v in graph.outputs] == [o["name"] for o in entry["outputs"]]
    # the pipeline reaches a fixed point: a second run changes nothing
    pm = _run("cleanup", graph)
    assert not [(str(p), r.stats) for p, r in pm.results if r.changed]
    if entry["weight_quant"]:
        # int8 weights stay int8, now as DequantizeWeight; none was folded to f32 by fold-constants
        ops = Counter(op.op for op in graph.ops)
        assert ops["DequantizeWeight"] and not ops["DequantizeLinear"]
        assert not any(op.op == "Cast" and op.inputs[0].dtype == "i8" for op in graph.ops)
        assert all(op.inputs[0].dtype == "i8" for op in graph.ops if op.op == "DequantizeWeight")


# -- export_onnx -----------------------------------------------------------------------------------

@pytest.mark.parametrize("entry", FIXTURES, ids=[f["name"] for f in FIXTURES])
def test_export_onnx_runs_in_onnxruntime_like_the_ir(entry, tmp_path):
    pytest.importorskip("onnxruntime")
    feeds = _fixture_feeds(entry)
    original = ort_outputs(entry["path"], feeds)
    for stage in ("import", "cleanup"):
        graph = _fixture_graph(entry)
        if stage == "cleanup":
            # without fold-weight-dequant: DequantizeWeight is an ai.s4c op onnxruntime cannot run
            _run(",".join(p for p in PIPELINES["cleanup"] if p != "fold-weight-dequant"), graph)
        path = tmp_path / f"{stage}.onnx"
        export_onnx(graph, path)
        onnx.checker.check_model(str(path), full_check=True)
        exported = ort_outputs(str(path), feeds)
        assert_outputs_close(evaluate(graph, feeds), exported, f"{entry['name']} exported after {stage}", tol=TOL)
        assert_outputs_close(original, exported, f"{entry['name']} exported after {stage} vs the original model", tol=TOL)


def test_export_onnx_writes_s4c_ops_in_their_domain(tmp_path):
    entry = next(f for f in FIXTURES if f["weight_quant"] == "int8-castmul")
    graph = _fixture_graph(entry)
    _run("cleanup,default", graph)
    model = export_onnx(graph, tmp_path / "fused.onnx")
    onnx.checker.check_model(str(tmp_path / "fused.onnx"))
    custom = [n for n in model.graph.node if n.domain == CUSTOM_DOMAIN]
    kinds = {n.op_type for n in custom}
    assert {"DequantizeWeight", "Linear"} <= kinds
    assert all(n.op_type not in kinds for n in model.graph.node if n.domain == "")
    assert {(o.domain, o.version) for o in model.opset_import} >= {("", 21), (CUSTOM_DOMAIN, 1)}
    dq = next(n for n in custom if n.op_type == "DequantizeWeight")
    assert [a.name for a in dq.attribute] == ["axis"]
    int8 = {t.name: t for t in model.graph.initializer}[dq.input[0]]
    assert int8.data_type == onnx.TensorProto.INT8  # the weight stays int8 in the file


def test_export_onnx_moves_shape_attributes_back_to_inputs(tmp_path):
    graph = parse_graph("""
graph @main(%x: f32[2,3,4]) {
  %r = Reshape(%x) {shape = [6, -1]} : f32[6,4]
  %s = Slice(%r) {ends = [5], starts = [1], steps = [2]} : f32[2,4]
  %u = Unsqueeze(%s) {axes = [0]} : f32[1,2,4]
  %m = ReduceMean(%u) {axes = [2], keepdims = 0} : f32[1,2]
  %y = Cast(%m) {to = "f16"} : f16[1,2]
  return %y
}""")
    path = tmp_path / "shapes.onnx"
    model = export_onnx(graph, path)
    assert [len(n.input) for n in model.graph.node] == [2, 5, 2, 2, 1]
    feeds = random_feeds(graph)
    assert_outputs_close(evaluate(graph, feeds), ort_outputs(str(path), feeds), "shape operands", tol=TOL)


def test_export_onnx_uses_external_data_above_the_threshold(tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "EXTERNAL_DATA_THRESHOLD", 1024)
    entry = FIXTURES[0]
    graph = _fixture_graph(entry)
    path = tmp_path / "model.onnx"
    for _ in range(2):  # a second export must replace the data file, not append to it
        export_onnx(graph, path)
    data = tmp_path / "model.onnx.data"
    assert data.exists() and path.stat().st_size < data.stat().st_size
    assert data.stat().st_size < 2 * sum(v.type.nbytes for v in graph.constants()) + 1024 * 1024
    feeds = _fixture_feeds(entry)
    assert_outputs_close(evaluate(graph, feeds), ort_outputs(str(path), feeds), "external data", tol=TOL)


def test_export_onnx_of_ir_text_without_weights(tmp_path):
    graph = parse_graph("""
graph @main(%x: f32[2,64]) {
  %w = const f32[64,64] <density=0.100 hash="1a2b3c4d">
  %y = MatMul(%x, %w) : f32[2,64]
  return %y
}""")
    model = export_onnx(graph, tmp_path / "elided.onnx")
    assert [i.name for i in model.graph.input] == ["x", "w"] and not model.graph.initializer
