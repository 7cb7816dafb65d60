"""merge-qkv: Linear ops on the same input whose results are concatenated (the Q, K, V projections
feeding a MultiHeadAttention) -> one Linear with the weights (and biases) concatenated.

If anything else also reads one of the individual results, a Split of the merged result gives it
back (the Split takes over the old result values, so those readers are unchanged).

Weights must be all constants (concatenated along the output axis), or all DequantizeWeight of
int8 constants with per-tensor or per-output-channel scales (the int8 arrays and the per-channel
scales are concatenated; a per-tensor scale becomes a per-channel vector). A missing bias is zeros
when another projection has one.

ALBERT's layers share one set of weights: the concatenated weight (and bias) is made once per
distinct tuple of source constants (memoised by their identity for the pass run), so every merged
Linear reading the same Q, K, V initializers reads the same new constant and backends store it once.

Not merged: Linears on different inputs, with different activations or layouts, a Concat on
another axis, a weight mix of constants and int8, int8 weights scaled per input channel, the same
Linear twice in the Concat, or Linears that are not concatenated at all.
"""

from __future__ import annotations

import numpy as np

from s4c.ir import Op, Value, numpy_dtype
from s4c.passes.base import Pass, PassResult
from s4c.passes.fuse_linear import _memo_constant
from s4c.passes.rewrite import Match, Pattern, Rewriter, apply_patterns

DEQUANT = "DequantizeWeight"


def _weights(rw: Rewriter, linears: list[Op]):
    """("const", [arrays]) or ("dequant", [(int8 array, per-row scale vector)]) or None."""
    ws = [lin.inputs[1] for lin in linears]
    if all(rw.const(w) is not None for w in ws):
        return "const", [rw.const(w) for w in ws]
    parts = []
    for w in ws:
        dq = rw.producer(w, DEQUANT)
        if dq is None or len(dq.inputs) != 2:
            return None
        q, scale = rw.const(dq.inputs[0]), rw.const(dq.inputs[1])
        if q is None or scale is None or q.ndim != 2:
            return None
        if scale.ndim == 0:  # per tensor -> per output channel
            scale = np.full((q.shape[0],), scale, scale.dtype)
        elif scale.ndim != 1 or rw.attrs(dq)["axis"] % 2 != 0:
            return None
        parts.append((dq, q, scale))
    if len({p[2].dtype for p in parts}) != 1:
        return None
    return "dequant", parts


class ConcatOfLinears(Pattern):
    """Concat of Linear results that share their input.

        x ---+------------+------------.
             |            |             |
        Linear(Wq, bq) Linear(Wk, bk) Linear(Wv, bv)           Linear(x, [Wq;Wk;Wv], [bq;bk;bv])
              \\           |            /              ==>        (+ Split back if q/k/v have
                  Concat(axis = -1)                               other readers)
    """

    roots = ("Concat",)

    def match(self, rw, root):
        rank = root.outputs[0].type.rank
        if len(root.inputs) < 2 or rw.attrs(root)["axis"] % rank != rank - 1:
            return None
        linears = [rw.producer(v, "Linear") for v in root.inputs]
        if any(lin is None for lin in linears) or len({id(v) for v in root.inputs}) != len(root.inputs):
            return None
        x = linears[0].inputs[0]
        first = rw.attrs(linears[0])
        for lin in linears:
            a = rw.attrs(lin)
            if lin.inputs[0] is not x or a["activation"] != first["activation"] or a["layout"] != first["layout"]:
                return None
            if len(lin.inputs) > 2 and rw.const(lin.inputs[2]) is None:
                return None
        weights = _weights(rw, linears)
        if weights is None:
            return None
        shared = [lin for lin in linears if not rw.only_used_by(lin.outputs[0], [root])]
        extra = [lin for lin in linears if lin not in shared]
        dq_ops = []
        if weights[0] == "dequant":
            dq_ops = [p[0] for p in weights[1] if rw.single_use(p[0].outputs[0])]
        return Match(root, extra + dq_ops, takeover=shared, linears=linears, weights=weights, x=x,
                     split=bool(shared))

    def rewrite(self, rw, m):
        linears: list[Op] = m["linears"]
        out = m.root.outputs[0]
        name = out.name
        new_ops: list[Op] = []
        kind, parts = m["weights"]
        if kind == "const":
            ws = tuple(lin.inputs[1] for lin in linears)
            weight = _memo_constant(rw, ("qkv.weight",) + ws, f"{name}.weight", lambda: np.concatenate(parts, axis=0))
        else:
            qs = tuple(p[0].inputs[0] for p in parts)
            scales = tuple(p[0].inputs[1] for p in parts)
            q = _memo_constant(rw, ("qkv.weight_i8",) + qs, f"{name}.weight_i8",
                               lambda: np.concatenate([p[1] for p in parts], axis=0))
            scale = _memo_constant(rw, ("qkv.weight_scale",) + qs + scales, f"{name}.weight_scale",
                                   lambda: np.concatenate([p[2] for p in parts], axis=0))
            dq = rw.op(DEQUANT, [q, scale], {"axis": 0}, hint=f"{name}.weight")
            new_ops.append(dq)
            weight = dq.outputs[0]
        operands = [m["x"], weight]
        if any(len(lin.inputs) > 2 for lin in linears):
            biases = []
            for lin in linears:
                n = lin.outputs[0].shape[-1]
                biases.append(rw.const(lin.inputs[2]) if len(lin.inputs) > 2
                              else np.zeros((n,), numpy_dtype(out.dtype)))
            key = ("qkv.bias", str(out.dtype)) + tuple(
                lin.inputs[2] if len(lin.inputs) > 2 else f"zeros{lin.outputs[0].shape[-1]}" for lin in linears)
            operands.append(_memo_constant(rw, key, f"{name}.bias",
                                           lambda: np.concatenate(biases).astype(biases[0].dtype)))
        merged = rw.op("Linear", operands, linears[0].attrs, outputs=[out])
        new_ops.append(merged)
        if m["split"]:
            results: list[Value] = []
            for lin in linears:
                old = lin.outputs[0]
                taken = any(lin is t for t in m.takeover)
                results.append(old if taken else Value(rw.fresh_name(f"{old.name}.unused"), old.type))
            sizes = [lin.outputs[0].shape[-1] for lin in linears]
            new_ops.append(rw.op("Split", [out], {"axis": out.type.rank - 1, "split": sizes}, outputs=results))
        return new_ops


class MergeQkv(Pass):
    """Concat of Linears on one input (the attention's Q, K, V) -> one Linear with concatenated weights."""

    name = "merge-qkv"

    def run(self, graph) -> PassResult:
        return PassResult.of(apply_patterns(graph, [ConcatOfLinears()]))
