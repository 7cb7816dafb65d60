"""The ONNX frontend on real exporter output: numerics vs onnxruntime, static shapes, bindings."""

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from oracle import fixtures, make_feeds, max_abs_diff, ort_outputs
from s4c.errors import FrontendError
from s4c.evaluate import evaluate
from s4c.frontend import load_onnx, parse_shape_binding

FIXTURES = fixtures()


@pytest.mark.parametrize("fixture", FIXTURES, ids=[m["name"] for m in FIXTURES])
def test_fixture_imports_static_and_matches_onnxruntime(fixture):
    graph = load_onnx(fixture["path"], input_shapes={"input_ids": (2, 16)})
    assert all(v.type.shape == (2, 16) for v in graph.inputs)
    shape_ops = [op for op in graph.ops if op.op in ("Shape", "Size", "ConstantOfShape", "Range")]
    assert not shape_ops, "shape computations must fold away on import"
    feeds = make_feeds([v.name for v in graph.inputs], vocab=fixture["vocab_size"])
    diffs = max_abs_diff(evaluate(graph, feeds), ort_outputs(fixture["path"], feeds))
    assert max(diffs.values()) <= 1e-4, diffs


def test_dim_symbol_bound_once_binds_every_input():
    path = FIXTURES[0]["path"]
    graph = load_onnx(path, input_shapes={"attention_mask": (3, 7)})
    assert {v.name: v.shape for v in graph.inputs}["input_ids"] == (3, 7)


def test_unbound_dynamic_dim_names_input_and_dim():
    with pytest.raises(FrontendError, match=r"input 'input_ids' dim 0 \('batch'\) is dynamic and unbound"):
        load_onnx(FIXTURES[0]["path"])


@pytest.mark.parametrize("binding, message", [
    ({"nope": (1, 2)}, "unknown input"),
    ({"input_ids": (1, 2, 3)}, "has rank 2"),
    ({"input_ids": (1, 8), "attention_mask": (1, 9)}, "bound to both"),
])
def test_bad_shape_bindings(binding, message):
    with pytest.raises(FrontendError, match=message):
        load_onnx(FIXTURES[0]["path"], input_shapes=binding)


@pytest.mark.parametrize("text, expected", [
    ("input_ids=1x128", ("input_ids", (1, 128))),
    ("input_ids=1,128", ("input_ids", (1, 128))),
    ("a=b=2x3", ("a=b", (2, 3))),
])
def test_parse_shape_binding(text, expected):
    assert parse_shape_binding(text) == expected


@pytest.mark.parametrize("text", ["input_ids", "=1x2", "x=1xq", "x=-1x2"])
def test_parse_shape_binding_rejects(text):
    with pytest.raises(FrontendError):
        parse_shape_binding(text)


def test_external_data_model(tmp_path):
    path = os.path.join(os.path.dirname(FIXTURES[0]["path"]), "bert_tiny_extdata", "model.onnx")
    if not os.path.exists(path):
        pytest.skip("external-data fixture not generated")
    graph = load_onnx(path, input_shapes={"input_ids": (1, 8)})
    feeds = make_feeds([v.name for v in graph.inputs], batch=1, seq=8)
    assert max(max_abs_diff(evaluate(graph, feeds), ort_outputs(path, feeds)).values()) <= 1e-4


def _model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_output_that_is_an_input_through_identity():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 3])
    model = _model([helper.make_node("Identity", ["x"], ["y"]), helper.make_node("Relu", ["x"], ["z"])], [x], [y, z])
    graph = load_onnx(model)
    data = np.arange(6, dtype=np.float32).reshape(2, 3) - 3
    out = evaluate(graph, {"x": data})
    np.testing.assert_array_equal(out["y"], data)
    np.testing.assert_array_equal(out["z"], np.maximum(data, 0))


def test_unsupported_ops_are_listed_once_each_with_first_node():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    nodes = [helper.make_node("Sin", ["x"], ["a"], name="first_sin"),
             helper.make_node("Sin", ["a"], ["b"], name="second_sin"),
             helper.make_node("Cos", ["b"], ["c"], name="the_cos"),
             helper.make_node("Relu", ["c"], ["y"])]
    with pytest.raises(FrontendError) as err:
        load_onnx(_model(nodes, [x], [y]))
    message = str(err.value)
    assert "Cos (first at node 'the_cos')" in message and "Sin (first at node 'first_sin')" in message
    assert "second_sin" not in message and "\n" not in message


def test_a_cycle_is_a_one_line_error_naming_its_nodes():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="first"),
             helper.make_node("Add", ["a", "c"], ["b"], name="loop_add"),
             helper.make_node("Relu", ["b"], ["c"], name="loop_relu"),
             helper.make_node("Identity", ["b"], ["y"], name="out")]
    with pytest.raises(FrontendError) as err:
        load_onnx(_model(nodes, [x], [y]))
    message = str(err.value)
    assert "cycle through node(s)" in message and "\n" not in message
    named = message.split("node(s) ")[1]
    assert "'loop_add'" in named and "'loop_relu'" in named and "first" not in named and "out" not in named


def test_runtime_shape_operand_is_a_clear_error():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    s = helper.make_tensor_value_info("s", TensorProto.INT64, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = _model([helper.make_node("Reshape", ["x", "s"], ["y"], name="rs")], [x, s], [y])
    with pytest.raises(FrontendError, match="node 'rs' \\(Reshape\\): shape .* not known at compile time"):
        load_onnx(model)


def test_opset_outside_range_is_rejected():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [x], [helper.make_tensor_value_info("y", 1, [2])],
                   opset=6)
    with pytest.raises(FrontendError, match="opset 6 is not supported"):
        load_onnx(model)
