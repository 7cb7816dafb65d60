"""fold-constants: evaluate ops whose operands are all constants, at compile time."""

from __future__ import annotations

import numpy as np

from s4c import ops
from s4c.errors import PassError
from s4c.ir import Graph, Op, TensorType, Value
from s4c.passes.base import Pass, PassResult


def is_weight_dequantization(op: Op) -> bool:
    """Whether `op` starts an int8 weight's dequantisation (see s4c.ops.is_weight_dequantization)."""
    return ops.is_weight_dequantization(op.op, [v.dtype for v in op.inputs], op.attrs)


class FoldConstants(Pass):
    """Replace every op whose operands are all constants by constants holding its results, computed
    with the op registry's numpy references (the same code the reference evaluator runs), repeated
    until nothing is left to fold. There is no size limit: a transposed [in, out] weight becomes an
    [out, in] constant, which is what fuse-linear wants to see.

    Deliberately not folded:
    - the dequantisation of an 8-bit integer weight: Cast(int8 const) (so Cast -> Mul(scale) stays),
      DequantizeLinear(int8/uint8 const, ...) and DequantizeWeight. Folding them would store the
      weight as f32 (4x the bytes) and hide from fold-weight-dequant and the backends that it is
      int8 with a scale; they choose whether to dequantise.
    - ops on bf16 values (numpy has no bf16 arithmetic).
    A graph output stays an op result (the runtime API reads outputs from ops, as the frontend
    arranges): its folded value becomes a constant read by an Identity op carrying the output name.
    Results are stored C-contiguous (transposes copy; reshapes and identities share the input's array).
    """

    name = "fold-constants"

    def run(self, graph: Graph) -> PassResult:
        count = 0  # ops folded
        kept: list[Op] = []
        for op in graph.ops:
            # An Identity carrying an output name is what folding an output leaves behind.
            carries_output = op.op == "Identity" and graph.is_output(op.output)
            if carries_output or not self._foldable(op):
                kept.append(op)
                continue
            arrays = self._evaluate(op)
            for result, array in zip(op.outputs, arrays):
                if graph.is_output(result):
                    # The output keeps its producer: an Identity of the folded constant.
                    folded = Value.constant(graph.fresh_name(f"{result.name}.folded"), array)
                    kept.append(Op("Identity", [folded], [result], onnx_nodes=op.onnx_nodes))
                else:
                    # The result itself becomes the constant: every reader already holds it.
                    result.producer = None
                    result.data = array
            count += 1
        graph.ops = kept
        return PassResult.of({"folded": count})

    @staticmethod
    def _foldable(op: Op) -> bool:
        if not all(v.is_constant for v in op.inputs) or is_weight_dequantization(op):
            return False
        if any(v.dtype == "bf16" for v in (*op.inputs, *op.outputs)):
            return False
        return all(isinstance(v.data, np.ndarray) for v in op.inputs)  # no elided weights

    def _evaluate(self, op: Op) -> list[np.ndarray]:
        try:
            arrays = ops.REGISTRY[op.op].run([v.data for v in op.inputs], op.attrs)
        except Exception as e:  # the model's own semantics fail on these constants (e.g. a bad index)
            raise PassError(f"pass {self.name}: evaluating {op.describe()} on its constant operands: "
                            f"{type(e).__name__}: {e}") from e
        results = []
        for value, array in zip(op.outputs, arrays):
            array = np.asarray(array)
            if not array.flags.c_contiguous:
                array = array.copy(order="C")
            if TensorType.of(array) != value.type:
                raise AssertionError(f"{op.describe()}: reference gave {TensorType.of(array)}, "
                                     f"IR says {value.type}")
            results.append(array)
        return results
