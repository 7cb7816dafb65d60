"""If with a condition known at import (e.g. a comparison of shapes, as in optimum's DeBERTa-v2
export): the importer inlines the branch taken, whose nodes may read outer-scope values and hold
nested Ifs. An If on runtime data is a one-line error naming the node."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import s4c
from oracle import max_abs_diff, ort_outputs
from s4c.backend import S4CBackend
from s4c.errors import FrontendError


def _vi(name, dims, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, dims)


def shape_if_model() -> onnx.ModelProto:
    """y = seq > 4 ? (seq > 8 ? relu(a) + 1 : relu(a) * 2) : -a - shift, with a = |x| @ w;
    z = a second If on the same condition whose then-branch reuses the first's inner value names."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((6, 6)).astype(np.float32), "w")
    shift = numpy_helper.from_array(np.array(0.25, np.float32), "shift")
    inner_then = helper.make_graph(
        [helper.make_node("Add", ["r", "one_f"], ["big"])], "inner_then", [], [_vi("big", ["b", "s", 6])],
        [numpy_helper.from_array(np.array(1.0, np.float32), "one_f")])
    inner_else = helper.make_graph(
        [helper.make_node("Mul", ["r", "two_f"], ["mid"])], "inner_else", [], [_vi("mid", ["b", "s", 6])],
        [numpy_helper.from_array(np.array(2.0, np.float32), "two_f")])
    then = helper.make_graph(
        [helper.make_node("Relu", ["a"], ["r"]),
         helper.make_node("Greater", ["seq", "eight"], ["longer"]),
         helper.make_node("If", ["longer"], ["t_out"], then_branch=inner_then, else_branch=inner_else,
                          name="inner_if")],
        "then", [], [_vi("t_out", ["b", "s", 6])])
    els = helper.make_graph(
        [helper.make_node("Neg", ["a"], ["n"]), helper.make_node("Sub", ["n", "shift"], ["e_out"])],
        "else", [], [_vi("e_out", ["b", "s", 6])])
    then2 = helper.make_graph(  # the same inner names as `then` ("r"): inlined twice, so renamed
        [helper.make_node("Sigmoid", ["a"], ["r"])], "then2", [], [_vi("r", ["b", "s", 6])])
    els2 = helper.make_graph([helper.make_node("Tanh", ["a"], ["e2"])], "else2", [], [_vi("e2", ["b", "s", 6])])
    nodes = [helper.make_node("Abs", ["x"], ["ax"]),
             helper.make_node("MatMul", ["ax", "w"], ["a"]),
             helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Gather", ["shape", "one"], ["seq"], axis=0),
             helper.make_node("Greater", ["seq", "four"], ["long"]),
             helper.make_node("If", ["long"], ["y"], then_branch=then, else_branch=els, name="outer_if"),
             helper.make_node("If", ["long"], ["z"], then_branch=then2, else_branch=els2, name="second_if")]
    graph = helper.make_graph(
        nodes, "g", [_vi("x", ["b", "s", 6])], [_vi("y", ["b", "s", 6]), _vi("z", ["b", "s", 6])],
        [w, shift] + [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
                      (("one", 1), ("four", 4), ("eight", 8))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


# seq -> the imported graph's ops besides Abs, MatMul and the outputs' Identities:
# else; then + inner else; then + inner then
BRANCH_OPS = {3: ["Neg", "Sub", "Tanh"], 6: ["Relu", "Mul", "Sigmoid"], 10: ["Relu", "Add", "Sigmoid"]}


@pytest.mark.parametrize("seq", sorted(BRANCH_OPS))
def test_if_on_shapes_is_inlined_and_matches_onnxruntime(seq, tmp_path):
    model = shape_if_model()
    imported = s4c.load_onnx(model, {"x": (2, seq, 6)})
    assert sorted(op.op for op in imported.ops) == sorted(["Abs", "MatMul", "Identity", "Identity"] + BRANCH_OPS[seq])
    assert len({v.name for op in imported.ops for v in op.outputs}) == len(imported.ops)
    x = np.random.default_rng(seq).standard_normal((2, seq, 6)).astype(np.float32)
    want = ort_outputs(model, {"x": x})
    compiled = s4c.compile(model, {"x": (2, seq, 6)}, target="c", outdir=tmp_path / "out")
    for backend in ("ref", "c"):
        diffs = max_abs_diff(compiled.run({"x": x}, backend=backend), want)
        assert max(diffs.values()) <= 1e-5, (backend, diffs)


def test_the_three_cases_take_different_branches():
    """The comparisons above can fail: each sequence length gives a different result."""
    model = shape_if_model()
    x = np.random.default_rng(0).standard_normal((1, 10, 6)).astype(np.float32)
    ys = [ort_outputs(model, {"x": x[:, :seq]})["y"][:, :3] for seq in (3, 6, 10)]
    assert not np.allclose(ys[0], ys[1]) and not np.allclose(ys[1], ys[2])


def _runtime_if_model() -> onnx.ModelProto:
    then = helper.make_graph([helper.make_node("Relu", ["x"], ["t"])], "then", [], [_vi("t", [3])])
    els = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [], [_vi("e", [3])])
    nodes = [helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
             helper.make_node("Greater", ["total", "zero"], ["positive"]),
             helper.make_node("If", ["positive"], ["y"], then_branch=then, else_branch=els, name="data_if")]
    graph = helper.make_graph(nodes, "g", [_vi("x", [3])], [_vi("y", [3])],
                              [numpy_helper.from_array(np.array(0.0, np.float32), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def test_if_on_runtime_data_is_a_one_line_error(tmp_path):
    with pytest.raises(FrontendError) as err:
        s4c.compile(_runtime_if_model(), target="c", outdir=tmp_path / "out")
    message = str(err.value)
    assert "node 'data_if' (If): control flow on runtime data is not supported" in message
    assert "'positive'" in message and "\n" not in message
    assert not (tmp_path / "out").exists()


def test_if_on_a_runtime_input_specialises_in_the_onnx_backend():
    """The ONNX backend adaptor freezes the inputs a runtime condition comes from, as it does for
    shape operands: one compiled graph per condition value."""
    then = helper.make_graph([helper.make_node("Relu", ["x"], ["t"])], "then", [], [_vi("t", [3])])
    els = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [], [_vi("e", [3])])
    node = helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=els, name="input_if")
    graph = helper.make_graph([node], "g", [_vi("c", [], TensorProto.BOOL), _vi("x", [3])], [_vi("y", [3])])
    rep = S4CBackend.prepare(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    x = np.array([-1.0, 0.5, 2.0], np.float32)
    np.testing.assert_array_equal(rep.run([np.array(True), x])[0], np.maximum(x, 0))
    np.testing.assert_array_equal(rep.run([np.array(False), x])[0], -x)
