"""The IR graph's use lists and name table (s4c/ir.py): after every kind of edit — the graph's own
methods, which update them in place, and direct changes to graph.ops / op.inputs / value names, which
make the graph scan again — `users`, `users_of`, `names`, `value_named` and `fresh_name` answer what a
fresh scan of the graph answers. A property test checks that during and after the default pipeline
on the bundled model and the fixtures, with every query checked against a scan."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from s4c import ir
from s4c.frontend import load_onnx
from s4c.ir import Graph, Op, TensorType, Value
from s4c.passes import PassManager, parse_pipeline
from s4c.passes.instruments import PassInstrument

REPO = Path(__file__).resolve().parents[1]
F32 = TensorType("f32", (2, 3))


# -- the oracle: a scan of the graph, written independently of s4c.ir's index -----------------------
def scanned_users(graph: Graph) -> dict[int, list[Op]]:
    result: dict[int, list[Op]] = {}
    for op in graph.ops:
        for v in op.inputs:
            bucket = result.setdefault(id(v), [])
            if all(u is not op for u in bucket):
                bucket.append(op)
    return result


def assert_consistent(graph: Graph) -> None:
    expected = scanned_users(graph)
    got = graph.users()
    assert {k: [id(u) for u in us] for k, us in got.items()} == {k: [id(u) for u in us] for k, us in expected.items()}
    values = list(graph.values())
    for v in values:
        assert [id(u) for u in graph.users_of(v)] == [id(u) for u in expected.get(id(v), [])], v
    names = {v.name for v in values}
    assert graph.names() == names
    for v in values:
        if sum(u.name == v.name for u in values) == 1:
            assert graph.value_named(v.name) is v
    assert graph.value_named("no such value") is None
    assert graph.fresh_name("no such value") == "no such value"
    for v in values[:20]:
        assert graph.fresh_name(v.name) not in names
    assert graph.check_index() == []


def small_graph() -> tuple[Graph, dict[str, Value]]:
    """x -> Relu a -> Add(a, c) b -> Mul(b, b) y (output); a also read by Neg n (output)."""
    x = Value("x", F32)
    c = Value.constant("c", np.ones((2, 3), np.float32))
    a, b, y, n = (Value(name, F32) for name in "abyn")
    ops = [Op("Relu", [x], [a]), Op("Add", [a, c], [b]), Op("Mul", [b, b], [y]), Op("Neg", [a], [n])]
    return Graph("g", [x], [y, n], ops), dict(x=x, c=c, a=a, b=b, y=y, n=n)


def kept_current(graph: Graph, edit) -> None:
    """Run `edit` (a graph method call): the index is updated in place, not scanned again, and agrees
    with a scan."""
    graph.users()  # build
    before = graph._uses
    edit()
    assert graph._uses is before and graph._uses.epoch == ir._epoch, "the edit dropped the index"
    assert graph.check_index() == []
    assert_consistent(graph)


# -- the graph's own edits --------------------------------------------------------------------------
def test_add_op_at_the_end_and_in_the_middle():
    g, v = small_graph()
    z = Value("z", F32)
    kept_current(g, lambda: g.add_op(Op("Sub", [v["a"], v["x"]], [z])))
    assert [u.op for u in g.users_of(v["a"])] == ["Add", "Neg", "Sub"]
    w = Value("w", F32)
    kept_current(g, lambda: g.add_op(Op("Abs", [v["a"]], [w]), 1))
    assert [u.op for u in g.users_of(v["a"])] == ["Abs", "Add", "Neg", "Sub"]
    assert g.value_named("w") is w
    with pytest.raises(ValueError, match="already"):
        g.add_op(g.ops[0])


def test_remove_ops():
    g, v = small_graph()
    neg = g.ops[3]
    kept_current(g, lambda: g.remove_op(neg))
    assert [u.op for u in g.users_of(v["a"])] == ["Add"]
    assert "n" in g.names()  # still a graph output
    g.outputs = [v["y"]]
    kept_current(g, lambda: g.remove_ops([]))
    assert "n" not in g.names()
    with pytest.raises(ValueError, match="not in the graph"):
        g.remove_op(neg)


def test_remove_dead_ops():
    g, v = small_graph()
    g.outputs = [v["n"]]
    kept_current(g, lambda: g.remove_dead_ops())
    assert [op.op for op in g.ops] == ["Relu", "Neg"]
    assert g.names() == {"x", "a", "n"}


def test_set_input():
    g, v = small_graph()
    mul = g.ops[2]
    kept_current(g, lambda: g.set_input(mul, 0, v["a"]))  # Mul(a, b): still reads b
    assert [u.op for u in g.users_of(v["a"])] == ["Add", "Mul", "Neg"]
    assert g.users_of(v["b"]) == [mul]
    kept_current(g, lambda: g.set_input(mul, 1, v["c"]))  # b unread now
    assert g.users_of(v["b"]) == []
    assert [u.op for u in g.users_of(v["c"])] == ["Add", "Mul"]
    kept_current(g, lambda: g.set_input(mul, 1, v["c"]))  # no change


def test_rename():
    g, v = small_graph()
    kept_current(g, lambda: g.rename(v["b"], "sum"))
    assert g.value_named("sum") is v["b"] and g.value_named("b") is None
    assert g.fresh_name("b") == "b"


def test_replace_all_uses_of_a_plain_value():
    g, v = small_graph()
    kept_current(g, lambda: g.replace_all_uses(v["b"], v["x"]))
    assert [u.op for u in g.users_of(v["x"])] == ["Relu", "Mul"]
    assert g.users_of(v["b"]) == []


def test_replace_all_uses_merges_readers_in_op_order():
    g, v = small_graph()
    kept_current(g, lambda: g.replace_all_uses(v["a"], v["c"]))  # Add(c, c), Neg(c)
    assert [u.op for u in g.users_of(v["c"])] == ["Add", "Neg"]
    assert g.ops[1].inputs == [v["c"], v["c"]]


def test_replace_all_uses_of_an_output_keeps_its_name():
    g, v = small_graph()
    add = g.ops[1]
    kept_current(g, lambda: g.replace_all_uses(v["y"], v["b"]))  # an op result takes the public name
    assert v["b"].name == "y" and v["y"].name.startswith("y.replaced") and g.outputs[0] is v["b"]
    assert g.value_named("y") is v["b"] and g.value_named("b") is None
    kept_current(g, lambda: g.replace_all_uses(v["n"], v["x"]))  # a graph input cannot: an Identity carries it
    assert g.ops[-1].op == "Identity" and g.outputs[1].name == "n" and g.outputs[1].producer is g.ops[-1]
    assert [u.op for u in g.users_of(v["x"])] == ["Relu", "Identity"]
    assert add.outputs[0] is v["b"]


# -- direct changes: the graph notices and scans again ------------------------------------------------
DIRECT_EDITS = {
    "ops.append": lambda g, v: g.ops.append(Op("Abs", [v["b"]], [Value("z", F32)])),
    "ops.insert": lambda g, v: g.ops.insert(0, Op("Abs", [v["x"]], [Value("z", F32)])),
    "ops[i] =": lambda g, v: g.ops.__setitem__(3, Op("Abs", [v["x"]], [v["n"]])),
    "del ops[i]": lambda g, v: g.ops.__delitem__(3),
    "ops.pop": lambda g, v: g.ops.pop(),
    "ops.remove": lambda g, v: g.ops.remove(g.ops[3]),
    "ops[i:j] =": lambda g, v: g.ops.__setitem__(slice(3, 4), []),
    "ops +=": lambda g, v: setattr(g, "ops", g.ops.__iadd__([Op("Abs", [v["c"]], [Value("z", F32)])])),
    "ops.clear": lambda g, v: g.ops.clear(),
    "ops.reverse": lambda g, v: g.ops.reverse(),
    "ops.sort": lambda g, v: g.ops.sort(key=lambda op: op.op),
    "ops =": lambda g, v: setattr(g, "ops", [op for op in g.ops if op.op != "Neg"]),
    "op.inputs[i] =": lambda g, v: g.ops[2].inputs.__setitem__(0, v["x"]),
    "op.inputs =": lambda g, v: setattr(g.ops[3], "inputs", [v["c"]]),
    "op.inputs.append": lambda g, v: g.ops[1].inputs.append(v["x"]),
    "op.inputs.extend": lambda g, v: g.ops[1].inputs.extend([v["x"]]),
    "op.outputs =": lambda g, v: setattr(g.ops[3], "outputs", [Value("m", F32)]),
    "op.outputs[i] =": lambda g, v: g.ops[3].outputs.__setitem__(0, Value("m", F32)),
    "value.name =": lambda g, v: setattr(v["b"], "name", "sum"),
    "inputs.append": lambda g, v: g.inputs.append(Value("u", F32)),
    "inputs =": lambda g, v: setattr(g, "inputs", []),
    "outputs.append": lambda g, v: g.outputs.append(Value("u", F32)),
    "outputs =": lambda g, v: setattr(g, "outputs", [v["c"]]),
}


@pytest.mark.parametrize("edit", sorted(DIRECT_EDITS))
def test_direct_edits_are_seen(edit):
    g, v = small_graph()
    assert_consistent(g)
    built = g._uses
    DIRECT_EDITS[edit](g, v)
    assert built.epoch != ir._epoch, "the edit did not mark the index stale"
    assert_consistent(g)


def test_a_new_op_or_value_outside_the_graph_does_not_drop_the_index():
    g, v = small_graph()
    g.users()
    built = g._uses
    Op("Abs", [v["a"]], [Value("z", F32)])
    Value.constant("k", np.zeros(3, np.float32))
    assert g._uses is built and built.epoch == ir._epoch
    assert_consistent(g)


def test_an_edit_of_another_graph_is_harmless():
    g, v = small_graph()
    h = g.clone()
    assert_consistent(g)
    h.ops[0].inputs = [h.inputs[0]]
    h.replace_all_uses(h.ops[1].output, h.inputs[0])
    assert_consistent(g)
    assert_consistent(h)


@pytest.mark.parametrize("seed", range(8))
def test_random_edit_sequences(seed):
    """Graph methods and direct changes interleaved at random, with queries in between."""
    rng = random.Random(seed)
    g, v = small_graph()
    pool = list(v.values())
    counter = iter(range(10**6))

    def fresh_value() -> Value:
        value = Value(g.fresh_name(f"t{next(counter) % 5}"), F32)
        pool.append(value)
        return value

    def pick() -> Value:
        return rng.choice(pool)

    edits = [
        lambda: g.add_op(Op("Add", [pick(), pick()], [fresh_value()]), rng.choice([None, rng.randrange(len(g.ops) + 1)])),
        lambda: g.ops and g.remove_op(rng.choice(g.ops)),
        lambda: g.ops and g.set_input(op := rng.choice(g.ops), rng.randrange(len(op.inputs)), pick()),
        lambda: g.rename(pick(), f"r{next(counter)}"),
        lambda: g.replace_all_uses(pick(), pick()),
        lambda: g.remove_dead_ops(),
        lambda: g.ops.append(Op("Mul", [pick(), pick()], [fresh_value()])),
        lambda: g.ops and g.ops.pop(rng.randrange(len(g.ops))),
        lambda: g.ops and rng.choice(g.ops).inputs.__setitem__(0, pick()),
        lambda: setattr(pick(), "name", f"d{next(counter)}"),
        lambda: g.outputs.append(pick()),
        lambda: setattr(g, "ops", g.ops[::-1]),
    ]
    for _ in range(60):
        edit = rng.choice(edits)
        edit()
        if rng.random() < 0.7:
            assert_consistent(g)
    assert_consistent(g)


# -- the pipeline: every query during it agrees with a scan ------------------------------------------
class CheckIndex(PassInstrument):
    def __init__(self):
        self.passes = 0

    def run_after_pass(self, p, graph, result):
        self.passes += 1
        assert graph.check_index() == [], p.name
        assert_consistent(graph)


MODELS = ["examples/models/bert_mini_pruned90.onnx", "tests/models/bert_tiny_ts_op17.onnx",
          "tests/models/bert_tiny_dynamo.onnx", "tests/models/bert_tiny_ts_op17_int8dequant.onnx",
          "tests/models/distilbert_tiny_ts_op14.onnx", "tests/models/minilm_tiny_dynamo.onnx"]


@pytest.mark.parametrize("model", MODELS)
def test_default_pipeline_queries_agree_with_a_scan(model, monkeypatch):
    checked = []
    original = Graph._index

    def checked_index(self):
        idx = original(self)
        assert idx.differences(ir._UseIndex(self)) == []
        checked.append(1)
        return idx

    path = REPO / model
    graph = load_onnx(str(path), input_shapes={"input_ids": (1, 16)})
    monkeypatch.setattr(Graph, "_index", checked_index)
    check = CheckIndex()
    PassManager(parse_pipeline("default"), [check]).run(graph)
    assert check.passes > 5 and checked
    for target in ("s4", "c"):
        copy = graph.clone()
        PassManager(parse_pipeline(f"select-sparse-layout{{target={target}}}"), [check]).run(copy)
    assert_consistent(graph)
