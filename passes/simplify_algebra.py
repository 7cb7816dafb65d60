"""simplify-algebra: remove ops that compute nothing and collapse chains of data-movement ops."""

from __future__ import annotations

import numpy as np

from s4c.ir import Graph, Op, Value
from s4c.passes.base import Pass, PassResult, option

# Ops that only change the shape, never the order of the elements.
RESHAPES = {"Reshape", "Flatten", "Squeeze", "Unsqueeze"}

# dtype -> the dtypes that hold each of its values exactly. Cast(Cast(x, mid), to) equals
# Cast(x, to) when mid is one of these for x's dtype: the outer cast then sees x's own value.
EXACT_CASTS = {
    "bool": {"i8", "u8", "i16", "u16", "i32", "i64", "f16", "f32", "f64"},
    "i8": {"i16", "i32", "i64", "f16", "f32", "f64"},
    "u8": {"i16", "u16", "i32", "i64", "f16", "f32", "f64"},
    "i16": {"i32", "i64", "f32", "f64"},
    "u16": {"i32", "i64", "f32", "f64"},
    "i32": {"i64", "f64"},
    "f16": {"f32", "f64"},
    "f32": {"f64"},
}

# op -> (the neutral element, the operand positions where it may stand)
NEUTRAL_OPERANDS = {"Add": (0, (0, 1)), "Sub": (0, (1,)), "Mul": (1, (0, 1)), "Div": (1, (1,))}


class SimplifyAlgebra(Pass):
    """Local rewrites that keep every value bit for bit (but one, see `strict-signed-zeros`),
    repeated until none applies:

    - Identity(x) -> x.
    - Reshape, Flatten, Squeeze, Unsqueeze, Transpose, Cast, Expand that leave their operand as it
      is (same shape; identity permutation; same dtype) -> the operand.
    - Chains: a reshape-like op (Reshape/Flatten/Squeeze/Unsqueeze) of a reshape-like op becomes one
      Reshape of the first operand; Transpose of Transpose becomes one Transpose with the composed
      permutation (or nothing when they cancel); Expand of Expand becomes one Expand; Cast of Cast
      becomes one Cast when the inner cast is exact for the first operand's dtype (i32 -> i64 -> f32
      is i32 -> f32; f32 -> i32 -> f32 is not touched: it rounds).
    - x * 1, 1 * x, x + 0, 0 + x, x - 0, x / 1 -> x, when the constant is all ones / zeros and
      broadcasting leaves x's shape unchanged (Mul(x[4], ones[2,4]) makes a new shape: kept).

    A chain's inner op stays while something else reads it (then only the outer op is rewritten);
    ops this pass leaves unread are removed. Graph outputs keep their names (Graph.replace_all_uses);
    an Identity that carries an output name for an input, a constant or another output stays.

    Not done: reordering (Transpose past elementwise ops), Reshape -> Transpose -> Reshape patterns,
    x * 0 (NaN * 0 is NaN), x - x, Pow(x, 1), or anything needing value ranges."""

    name = "simplify-algebra"
    strict_signed_zeros: bool = option(
        False, "fold x + 0 only when the zero is -0.0 (x + 0.0 turns a -0.0 into 0.0)")

    def run(self, graph: Graph) -> PassResult:
        # forwarded: ops replaced by their operand; collapsed: chains made one op; removed: ops left unread
        stats = {"forwarded": 0, "collapsed": 0, "removed": 0}
        while self._sweep(graph, stats):
            pass
        return PassResult.of(stats)

    def _sweep(self, graph: Graph, stats: dict[str, int]) -> bool:
        touched: list[Op] = []  # ops this sweep may have left unread
        for op in list(graph.ops):
            replacement = self._forward(graph, op)
            if replacement is not None:
                graph.replace_all_uses(op.output, replacement)
                touched.append(op)
                stats["forwarded"] += 1
                continue
            inner = self._collapse(op)
            if inner is not None:
                touched.append(inner)
                stats["collapsed"] += 1
        if not touched:
            return False
        read = {id(v) for op in graph.ops for v in op.inputs} | {id(v) for v in graph.outputs}
        dead = {id(op) for op in touched if not any(id(v) in read for v in op.outputs)}
        graph.ops = [op for op in graph.ops if id(op) not in dead]
        stats["removed"] += len(dead)
        return True

    # -- rewrites ------------------------------------------------------------------------------------
    def _forward(self, graph: Graph, op: Op) -> Value | None:
        """The operand that `op`'s single result equals, or None."""
        if len(op.outputs) != 1 or not op.inputs:
            return None
        x, result = op.inputs[0], op.output
        if op.op == "Identity":
            carries_name = graph.is_output(result) and (x.producer is None or graph.is_output(x))
            return None if carries_name else x
        if op.op in RESHAPES or op.op == "Expand":
            return x if x.type == result.type else None
        if op.op == "Transpose":
            return x if _perm(op) == list(range(x.type.rank)) else None
        if op.op == "Cast":
            return x if x.dtype == op.attrs["to"] else None
        if op.op in NEUTRAL_OPERANDS:
            return self._neutral_operand(op)
        return None

    def _neutral_operand(self, op: Op) -> Value | None:
        neutral, positions = NEUTRAL_OPERANDS[op.op]
        for position in positions:
            constant, other = op.inputs[position], op.inputs[1 - position]
            if other.type != op.output.type or not isinstance(constant.data, np.ndarray):
                continue
            data = constant.data
            if not np.all(data == neutral):
                continue
            if op.op == "Add" and self.strict_signed_zeros and np.issubdtype(data.dtype, np.floating) \
                    and not np.all(np.signbit(data)):
                continue
            return other
        return None

    def _collapse(self, op: Op) -> Op | None:
        """Make `op` read past the op producing its operand when the two compose into one op of
        `op`'s kind; return that inner op (or None when nothing changed)."""
        if len(op.inputs) != 1 or len(op.outputs) != 1:
            return None
        inner = op.inputs[0].producer
        if inner is None or len(inner.outputs) != 1 or not inner.inputs:
            return None
        source = inner.inputs[0]
        shape = list(op.output.shape)
        if op.op in RESHAPES and inner.op in RESHAPES:
            op.op = "Reshape"
            op.attrs = {"shape": shape, "allowzero": 1} if 0 in shape else {"shape": shape}
        elif op.op == "Transpose" and inner.op == "Transpose":
            outer_perm, inner_perm = _perm(op), _perm(inner)
            op.attrs = {"perm": [inner_perm[p] for p in outer_perm]}
        elif op.op == "Expand" and inner.op == "Expand":
            op.attrs = {"shape": shape}
        elif op.op == "Cast" and inner.op == "Cast" and inner.attrs["to"] in EXACT_CASTS.get(source.dtype, ()):
            pass  # the outer Cast's attributes stand
        else:
            return None
        op.inputs = [source]
        op.onnx_nodes = tuple(dict.fromkeys(inner.onnx_nodes + op.onnx_nodes))
        return inner


def _perm(op: Op) -> list[int]:
    perm = op.attrs.get("perm")
    return list(perm) if perm is not None else list(range(op.inputs[0].type.rank))[::-1]
