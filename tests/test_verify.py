"""The verifier rejects hand-made broken graphs with a message naming the op and the problem."""

import numpy as np
import pytest

from s4c.errors import VerifyError
from s4c.ir import Graph, Op, TensorType, Value
from s4c.text import parse_graph
from s4c.verify import verify

F2 = TensorType("f32", (2,))


def _ok():
    return parse_graph("""graph @g(%x: f32[2], %y: f32[2]) {
  %a = Add(%x, %y) : f32[2] loc("the_add")
  %b = Relu(%a) : f32[2]
  return %b
}
""")


def test_valid_graph_passes():
    verify(_ok())


def _use_before_def(g):
    g.ops.reverse()


def _wrong_result_type(g):
    g.ops[0].outputs[0].type = TensorType("f32", (3,))


def _unknown_op(g):
    g.ops[1].op = "Frobnicate"


def _bad_attribute(g):
    g.ops[1].attrs["alpha"] = 1


def _operand_count(g):
    g.ops[0].inputs.append(g.inputs[0])


def _duplicate_definition(g):
    g.ops.append(g.ops[1])


def _undefined_output(g):
    g.outputs.append(Value("ghost", F2))


def _same_name_twice(g):
    g.ops[1].outputs[0].name = "a"


def _dtype_mismatch(g):
    g.inputs[1].type = TensorType("i64", (2,))


def _constant_input(g):
    g.inputs[0].data = np.zeros(2, np.float32)


CASES = {
    _use_before_def: "operand 'a' is used before it is defined",
    _wrong_result_type: "the_add.*result types \\['f32\\[3\\]'\\] but the operands give \\['f32\\[2\\]'\\]",
    _unknown_op: "unknown op 'Frobnicate'",
    _bad_attribute: "Relu has no attribute 'alpha'",
    _operand_count: "takes 2..2 operands, has 3",
    _duplicate_definition: "defined twice",
    _undefined_output: "graph output 'ghost' is not defined",
    _same_name_twice: "two different values are named 'a'",
    _dtype_mismatch: "operand dtypes differ",
    _constant_input: "graph input 'x' must be a plain runtime value",
}


@pytest.mark.parametrize("breakage", list(CASES), ids=[f.__name__.strip("_") for f in CASES])
def test_broken_graph_is_rejected(breakage):
    g = _ok()
    breakage(g)
    with pytest.raises(VerifyError, match=CASES[breakage]):
        verify(g)
