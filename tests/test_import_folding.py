"""The general folding rule: a value that depends only on constants and bound input shapes is a
constant after import, whatever op computes it. Ops s4c has no IR op for are computed with
onnx.reference; the same ops on run-time data are still refused, naming the op and node."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from oracle import max_abs_diff, ort_outputs
from s4c.errors import FrontendError
from s4c.evaluate import evaluate
from s4c.frontend import load_onnx
from s4c.frontend.onnx_ops import SUPPORTED_OPS


def _model(nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _einsum_model(operand_is_input: bool):
    """y = x + Einsum("ij,jk->ik", a, b), with `a` an initializer or (negative case) the input x."""
    assert "Einsum" not in SUPPORTED_OPS  # the rule is about ops s4c has no IR op for
    rng = np.random.default_rng(0)
    a = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "a")
    b = numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float32), "b")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])
    operands = ["x", "x"] if operand_is_input else ["a", "b"]
    nodes = [helper.make_node("Einsum", operands, ["e"],
                              equation="ij,jk->ik", name="the_einsum"),
             helper.make_node("Add", ["x", "e"], ["y"], name="add")]
    return _model(nodes, [x], [y], [a, b])


def test_unsupported_op_on_constants_is_computed_at_import():
    model = _einsum_model(operand_is_input=False)
    graph = load_onnx(model)
    assert [op.op for op in graph.ops] == ["Add"]
    feeds = {"x": np.random.default_rng(1).standard_normal((4, 4)).astype(np.float32)}
    assert max(max_abs_diff(evaluate(graph, feeds), ort_outputs(model, feeds)).values()) <= 1e-6


def test_unsupported_op_on_runtime_data_is_refused_naming_it():
    with pytest.raises(FrontendError, match=r"unsupported op type\(s\): Einsum \(first at node 'the_einsum'\)"):
        load_onnx(_einsum_model(operand_is_input=True))


def test_shape_derived_values_fold_through_unsupported_ops():
    """Shape(x) -> Einsum-free path: Shape, Cast to float, ReduceSumSquare (no IR op) -> a constant
    that scales x. Nothing shape-derived reaches the graph."""
    assert "ReduceSumSquare" not in SUPPORTED_OPS
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Cast", ["s"], ["sf"], to=TensorProto.FLOAT),
             helper.make_node("ReduceSumSquare", ["sf"], ["k"], keepdims=0, name="rss"),
             helper.make_node("Mul", ["x", "k"], ["y"])]
    model = _model(nodes, [x], [y])
    graph = load_onnx(model, input_shapes={"x": (2, 3)})
    assert [op.op for op in graph.ops] == ["Mul"]
    assert float(graph.ops[0].inputs[1].data) == 2 * 2 + 3 * 3
    feeds = {"x": np.ones((2, 3), np.float32)}
    assert max(max_abs_diff(evaluate(graph, feeds), ort_outputs(model, feeds)).values()) == 0
