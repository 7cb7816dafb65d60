"""eliminate-common-subexpressions: compute each distinct (op, operands, attributes) once."""

from __future__ import annotations

import numpy as np

from s4c import ops
from s4c.ir import Graph, Op, Value
from s4c.passes.base import Pass, PassResult, option

# Two-operand ops whose result does not depend on operand order, bit for bit (IEEE addition and
# multiplication are commutative; only associativity fails, so Sum of three or more is not here).
COMMUTATIVE = {"Add", "Mul", "And", "Or", "Xor", "Equal", "Max", "Min", "Sum"}


def _attr_key(value):
    if isinstance(value, np.ndarray):
        return ("tensor", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, (list, tuple)):
        return tuple(_attr_key(v) for v in value)
    if isinstance(value, float):
        return ("float", value.hex())  # keeps 0.0 and -0.0 apart, and 1.0 apart from an int 1
    return value


class EliminateCommonSubexpressions(Pass):
    """Replace an op by an earlier one of the same op type, the same operands and the same
    attributes (defaults filled in, so `{axis = -1}` equals an omitted default -1); its results'
    readers read the earlier op's results. Operands are the same when they are the same value, or
    constants of equal dtype, shape and contents up to `content-limit` elements (the same scalar
    0.5 is often a separate constant per layer). The two operands of Add, Mul, And, Or, Xor,
    Equal, Max, Min (and a two-operand Sum) match in either order.

    Not done: comparing large constants by content (hashing every weight costs more than the rare
    duplicate saves, and merging weights is a storage decision, not a clean-up), and merging the
    constants themselves (they only stop mattering once their readers merge). Graph outputs keep
    their names (see Graph.replace_all_uses)."""

    name = "eliminate-common-subexpressions"
    content_limit: int = option(1024, "constants up to this many elements compare by content")

    def run(self, graph: Graph) -> PassResult:
        representative: dict[int, Value] = {}  # id(result of a dropped op) -> the earlier result
        first: dict[tuple, Op] = {}
        kept: list[Op] = []
        replaced_outputs: list[tuple[Value, Value]] = []
        for op in graph.ops:
            # Operands read through earlier replacements, so chains of duplicates merge in one sweep.
            op.inputs = [representative.get(id(v), v) for v in op.inputs]
            key = self._key(op)
            earlier = first.setdefault(key, op)
            if earlier is op:
                kept.append(op)
                continue
            for old, new in zip(op.outputs, earlier.outputs):
                representative[id(old)] = new
                if graph.is_output(old):
                    replaced_outputs.append((old, new))
        if len(kept) == len(graph.ops):
            return PassResult()
        merged = len(graph.ops) - len(kept)
        graph.ops = kept
        for old, new in replaced_outputs:
            graph.replace_all_uses(old, new)
        return PassResult.of({"merged": merged})

    def _key(self, op: Op) -> tuple:
        operands = [self._operand_key(v) for v in op.inputs]
        if op.op in COMMUTATIVE and len(operands) == 2:
            operands.sort(key=repr)
        try:
            attrs = ops.REGISTRY[op.op].with_defaults(op.attrs)
        except (KeyError, ValueError, TypeError):
            return (op.op, id(op))  # bad attributes are the verifier's to report; never merge them
        return (op.op, tuple(operands), tuple(sorted((k, _attr_key(v)) for k, v in attrs.items())),
                len(op.outputs))

    def _operand_key(self, value: Value) -> tuple:
        data = value.data
        if isinstance(data, np.ndarray) and data.size <= self.content_limit:
            return ("const", data.dtype.str, data.shape, data.tobytes())
        return ("value", id(value))
