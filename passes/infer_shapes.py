"""infer-shapes: recompute every op result's type with the op registry's inference."""

from __future__ import annotations

import numpy as np

from s4c import ops
from s4c.errors import PassError
from s4c.ir import Graph, TensorType
from s4c.passes.base import Pass, PassResult


class InferShapes(Pass):
    """Re-run each op's registry inference in graph order (so a changed type reaches its readers)
    and store the inferred types on the results; constants take the type of their array. Reports a
    change when any type changed.

    It repairs types after a rewrite that edited attributes or operands in place; it does not
    check anything else the verifier checks (SSA, order, operand counts). An op whose inference
    fails is reported by name."""

    name = "infer-shapes"

    def run(self, graph: Graph) -> PassResult:
        constants = retyped = 0
        for value in graph.constants():
            if isinstance(value.data, np.ndarray) and TensorType.of(value.data) != value.type:
                value.type = TensorType.of(value.data)
                constants += 1
        for op in graph.ops:
            try:
                types = ops.REGISTRY[op.op].infer_types([v.type for v in op.inputs], op.attrs)
            except (KeyError, ValueError, TypeError, IndexError) as e:
                raise PassError(f"pass {self.name}: cannot infer the result types of {op.describe()}: "
                                f"{e}") from None
            if len(types) != len(op.outputs):
                raise PassError(f"pass {self.name}: {op.describe()} has {len(op.outputs)} results, "
                                f"inference gives {len(types)}")
            for value, inferred in zip(op.outputs, types):
                if value.type != inferred:
                    value.type = inferred
                    retyped += 1
        return PassResult.of({"constants-retyped": constants, "results-retyped": retyped})
