"""The IR text form: print -> parse -> print is identical; bad text gives line:column errors."""

import numpy as np
import pytest

from oracle import fixtures, make_feeds
from s4c.errors import ParseError, S4CError
from s4c.evaluate import evaluate
from s4c.frontend import load_onnx
from s4c.ir import Graph, Op, TensorType, Value
from s4c.text import ElidedWeight, parse_graph, print_graph

FIXTURES = fixtures()


@pytest.mark.parametrize("fixture", FIXTURES, ids=[m["name"] for m in FIXTURES])
def test_round_trip_on_fixture(fixture):
    graph = load_onnx(fixture["path"], input_shapes={"input_ids": (1, 8)})
    text = print_graph(graph)
    assert print_graph(parse_graph(text)) == text


def test_parse_with_weights_runs_like_the_original():
    fixture = FIXTURES[0]
    graph = load_onnx(fixture["path"], input_shapes={"input_ids": (1, 8)})
    weights = {v.name: v.data for v in graph.constants()}
    again = parse_graph(print_graph(graph), weights=weights)
    feeds = make_feeds([v.name for v in graph.inputs], batch=1, seq=8)
    a, b = evaluate(graph, feeds), evaluate(again, feeds)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_elided_weights_parse_but_do_not_evaluate():
    x = Value("x", TensorType("f32", (1, 32)))
    w = Value.constant("w", np.arange(32 * 4, dtype=np.float32).reshape(4, 32))
    y = Value("y", TensorType("f32", (1, 4)))
    g = Graph(inputs=[x], outputs=[y], ops=[Op("Linear", [x, w], [y])])
    parsed = parse_graph(print_graph(g))
    assert isinstance(parsed.constants()[0].data, ElidedWeight)
    with pytest.raises(S4CError, match="has no values"):
        evaluate(parsed, {"x": np.zeros((1, 32), np.float32)})


def test_hostile_names_are_quoted_and_round_trip():
    names = ['a b', 'x*/y', 'new\nline', 'quote"d', 'back\\slash', '#include <x>', 'é✓', 'a:b', '%']
    inputs = [Value(n, TensorType("f32", (2,))) for n in names]
    out = Value("out\n\"", TensorType("f32", (2,)))
    g = Graph(name="we\"ird", inputs=inputs, outputs=[out], ops=[Op("Sum", inputs, [out], onnx_nodes=['n"\n'])])
    text = print_graph(g)
    assert text.count("\n") == len(text.splitlines()) == 4
    parsed = parse_graph(text)
    assert [v.name for v in parsed.inputs] == names and parsed.outputs[0].name == out.name
    assert parsed.ops[0].onnx_nodes == ('n"\n',)
    assert print_graph(parsed) == text


def test_attributes_of_every_kind_round_trip():
    x = Value("x", TensorType("f32", (2, 3)))
    y = Value("y", TensorType("f32", (2, 3)))
    attrs = {"i": -3, "f": 1e-12, "inf": float("-inf"), "s": "tanh", "ints": [0, -1], "floats": [0.5, 2.0],
             "empty": [], "t": np.array([[1, 2]], np.int64)}
    g = Graph(inputs=[x], outputs=[y], ops=[Op("Relu", [x], [y], attrs)])
    text = print_graph(g)
    op = parse_graph(text).ops[0]
    assert print_graph(parse_graph(text)) == text
    assert op.attrs["f"] == 1e-12 and isinstance(op.attrs["i"], int) and isinstance(op.attrs["floats"][1], float)
    np.testing.assert_array_equal(op.attrs["t"], attrs["t"])


@pytest.mark.parametrize("text, message", [
    ("graph @g(%x: f32[2]) {\n  %y = Relu(%z) : f32[2]\n  return %y\n}\n", "line 2:13: use of undefined value %z"),
    ("graph @g(%x: f32[2]) {\n  %x = Relu(%x) : f32[2]\n  return %x\n}\n", "line 2:"),
    ("graph @g(%x: q32[2]) {\n  return %x\n}\n", "line 1:14: expected a dtype"),
    ("graph @g(%x: f32[2]) {\n  %y = Relu(%x) : f32[2] $\n", "unexpected character '$'"),
    ("graph @g(%x: f32[2]) {\n  %c = const f32[3] [1.0, 2.0]\n  return %c\n}\n", "has 2 values"),
])
def test_parse_errors_have_positions(text, message):
    with pytest.raises(ParseError, match=message.replace("[", r"\[").replace("$", r"\$")):
        parse_graph(text)
