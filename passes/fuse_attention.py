"""fuse-attention: scaled dot-product self-attention over Q/K/V projections -> one MultiHeadAttention.

    MultiHeadAttention(Concat(q, k, v), bias?){num_heads, scale}

q, k, v are the [B, S, H*D] values the heads are cut from (normally three Linear results: merge-qkv
then turns the Concat of three Linears on one input into one QKV Linear). The mask computation
stays as its own small ops and its result becomes the additive `bias` operand, whatever its
spelling (Sub/Mul of a cast mask, Where(mask, 0, min | -inf), Expand, ...).

How the heads are cut is checked by what the layout ops DO, not by their spelling: every chain of
Reshape/Transpose/Squeeze/Unsqueeze/Flatten between a projection and the scores MatMul (and from
the AV MatMul to the result) is run on an index tensor and must give exactly the per-head layout
(Q, V: [B,H,S,D]; K: [B,H,D,S], or [B*H,...] when the heads are batched in 3-D). So the dynamo
exporter's K^T done through a 3-D reshape and transpose matches, and a chain that mixes heads or
tokens does not.

The scale is the product of the scalar Mul/Div on Q, on K (both sqrt(scale) in the SDPA lowering),
on the scores, and after the mask add (then the bias is scaled too). Also absorbed: the masked_fill
form Where(cond, fill, scores) with fill -inf or <= -2**100 (its bias is Where(cond, fill, 0): exact
for |scores| < 2**76) and the SDPA lowering's guard Where(IsNaN(P), 0, P) after the Softmax, which
is what MultiHeadAttention's contract specifies for a fully masked row (see s4c/ops/fused.py).

Not matched: cross-attention (K/V from a value of another shape), a scale on V or after the
Softmax, Softmax over another axis, a layout chain that is not the head split/merge, head counts
other than the `num-heads` option when it is set, a non-positive scale, a bias that broadcasts the
scores to a larger shape, and any intermediate with a second user.
"""

from __future__ import annotations

import math

import numpy as np

from s4c import ops as op_registry
from s4c.ir import Op, Value, numpy_dtype
from s4c.passes.base import Pass, PassResult, option
from s4c.passes.rewrite import Match, Pattern, Rewriter, apply_patterns
from s4c.ops.elementwise import broadcast_shapes

LAYOUT_OPS = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity")
LARGE_NEGATIVE = -(2.0 ** 100)


def _scale_step(rw: Rewriter, op: Op) -> tuple[Value, float] | None:
    """A shape-preserving Mul/Div of `op`'s tensor operand by a scalar constant: (operand, factor)."""
    if op.op == "Mul":
        for i in (0, 1):
            c = rw.scalar(op.inputs[i])
            if c is not None and op.inputs[1 - i].shape == op.outputs[0].shape:
                return op.inputs[1 - i], c
    elif op.op == "Div":
        c = rw.scalar(op.inputs[1])
        if c is not None and c != 0.0 and op.inputs[0].shape == op.outputs[0].shape:
            return op.inputs[0], 1.0 / c
    return None


def _peel_scales(rw: Rewriter, v: Value, m_ops: list[Op]) -> tuple[Value, float]:
    """Follow single-use scalar scalings up from `v`; returns (unscaled value, product of factors)."""
    scale = 1.0
    while v.producer is not None and rw.single_use(v):
        step = _scale_step(rw, v.producer)
        if step is None:
            break
        m_ops.append(v.producer)
        v, c = step
        scale *= c
    return v, scale


def _head_chain(rw: Rewriter, v: Value, source_shape: tuple[int, ...], allow_scale: bool,
                expected: np.ndarray):
    """Walk up from `v` through single-use layout ops (and scalar scalings if `allow_scale`) to a
    value of `source_shape` whose layout chain to `v` gives `expected` (the furthest such value, so
    scalings before the head split are absorbed too): (source, scale, ops walked), or None."""
    candidates: list[tuple[Value, list[Op], float, list[Op]]] = []
    layout: list[Op] = []
    every: list[Op] = []
    scale = 1.0
    cur = v
    if cur.shape == source_shape:
        candidates.append((cur, [], 1.0, []))
    while cur.producer is not None and rw.single_use(cur):
        op = cur.producer
        if op.op in LAYOUT_OPS and len(op.outputs) == 1:
            layout.append(op)
            cur = op.inputs[0]
        elif allow_scale and (step := _scale_step(rw, op)) is not None:
            cur, c = step
            scale *= c
        else:
            break
        every.append(op)
        if cur.shape == source_shape:
            candidates.append((cur, layout[::-1], scale, list(every)))
    for source, ops, factor, walked in reversed(candidates):
        if _layout_is(ops, source_shape, expected):
            return source, factor, walked
    return None


def _layout_is(ops: list[Op], source_shape: tuple[int, ...], expected: np.ndarray) -> bool:
    """Applying the layout `ops` to an index tensor of `source_shape` gives exactly `expected`."""
    arr = np.arange(int(np.prod(source_shape)), dtype=np.int64).reshape(source_shape)
    try:
        for op in ops:
            arr = op_registry.REGISTRY[op.op].run([arr], op.attrs)[0]
    except (ValueError, TypeError, IndexError):
        return False
    return arr.shape == expected.shape and np.array_equal(arr, expected)


def _additive_biases(rw: Rewriter, add: Op, scores_shape: tuple[int, ...]):
    """The scores and the bias terms of `add` = scores + b1 (+ b2 ...): the chain of single-use
    Adds of the scores shape down to the operand that is the (scaled) Q K^T MatMul. MPNet adds its
    relative position bias, then the mask. Returns (scores, [b1, b2, ...] in the order added, Adds)
    or None."""
    biases: list[Value] = []
    adds: list[Op] = []
    while True:
        adds.append(add)
        nxt = None
        for i in (0, 1):
            side, other = add.inputs[i], add.inputs[1 - i]
            if rw.producer(_peel_scales(rw, side, [])[0], "MatMul") is not None:
                return side, [other] + biases, adds
            inner = rw.producer(side, "Add")
            if nxt is None and inner is not None and rw.single_use(side) and side.shape == scores_shape:
                nxt = (inner, other)
        if nxt is None:
            return None
        add, other = nxt
        biases.insert(0, other)


class ScaledDotProductAttention(Pattern):
    """Self-attention from the head split to the head merge.

        q [B,S,HD]        k [B,S,HD]          v [B,S,HD]
        |                 |                   |
        Reshape/Transpose Reshape/Transpose   Reshape/Transpose  (any chain giving the head layout)
        (Mul|Div scalar)  (Mul|Div scalar)    |
         \\               /                    |
          MatMul (Q K^T)                      |
          (Mul|Div scalar)                    |
          Add(bias)+ | Where(cond, fill, .)   |     (optional mask; Adds chain: MPNet's position bias)
          (Mul|Div scalar)                    |
          Softmax(axis=-1)                    |
          (Where(IsNaN(P), 0, P))             |     (optional guard)
                     \\                       /
                      MatMul (P V)  [B,H,S,D]
                      Transpose/Reshape  -> [B,S,HD]  (root)
                    ==>   MultiHeadAttention(Concat(q, k, v), bias){num_heads, scale}
    """

    roots = LAYOUT_OPS

    def __init__(self, num_heads: int = 0):
        self.num_heads = num_heads

    def match(self, rw, root):
        out = root.outputs[0]
        if len(root.outputs) != 1 or out.type.rank != 3 or not out.dtype.startswith("f"):
            return None
        b, s, hd = out.shape
        m_ops: list[Op] = []
        # head merge: root back to the AV MatMul
        merge: list[Op] = [root]
        cur = root.inputs[0]
        while cur.producer is not None and cur.producer.op in LAYOUT_OPS and rw.single_use(cur):
            merge.append(cur.producer)
            cur = cur.producer.inputs[0]
        av = rw.producer(cur, "MatMul")
        if av is None or not rw.single_use(cur) or cur.type.rank not in (3, 4):
            return None
        rank = cur.type.rank
        if rank == 4:
            heads = cur.shape[1]
            if cur.shape[0] != b:
                return None
        else:
            if cur.shape[0] % b:
                return None
            heads = cur.shape[0] // b
        if heads < 1 or hd % heads or (self.num_heads and heads != self.num_heads):
            return None
        d = hd // heads
        per_head = (b, heads, s, d) if rank == 4 else (b * heads, s, d)
        if cur.shape != per_head:
            return None
        base = np.arange(b * s * hd, dtype=np.int64).reshape(b, heads, s, d)
        # (b, h, s, d) of the per-head result must land at [b, s, h*D + d]
        if not _layout_is(merge[::-1], per_head, base.transpose(0, 2, 1, 3).reshape(b, s, hd)):
            return None
        m_ops += merge + [av]
        probs, vh = av.inputs
        # optional IsNaN guard, then Softmax
        guard = rw.producer(probs, "Where")
        if guard is not None:
            cond, zero, p0 = guard.inputs
            isnan = rw.producer(cond, "IsNaN")
            if isnan is None or isnan.inputs[0] is not p0 or rw.scalar(zero) != 0.0 \
                    or guard.outputs[0].shape != p0.shape:
                return None
            m_ops += [guard, isnan]
            probs = p0
        sm = rw.producer(probs, "Softmax")
        if sm is None or rw.attrs(sm)["axis"] % rank != rank - 1:
            return None
        m_ops.append(sm)
        scores_shape = (b, heads, s, s) if rank == 4 else (b * heads, s, s)
        logits = sm.inputs[0]
        if logits.shape != scores_shape:
            return None
        logits, post_scale = _peel_scales(rw, logits, m_ops)
        bias, bias_kind, scores = None, None, logits
        mask_op = logits.producer if rw.single_use(logits) else None
        if mask_op is not None and mask_op.op == "Add":
            found = _additive_biases(rw, mask_op, scores_shape)
            if found is None:
                return None
            scores, biases, adds = found
            bias, bias_kind = (biases[0] if len(biases) == 1 else tuple(biases)), "add"
            m_ops += adds
        elif mask_op is not None and mask_op.op == "Where":
            cond, a, c = mask_op.inputs
            for fill_at, s_val in ((1, c), (2, a)):
                fill = rw.scalar(mask_op.inputs[fill_at])
                if fill is not None and fill <= LARGE_NEGATIVE and s_val.shape == scores_shape:
                    scores, bias, bias_kind = s_val, (cond, fill, fill_at), "fill"
                    break
            if bias is None:
                return None
            m_ops.append(mask_op)
        scores, mid_scale = _peel_scales(rw, scores, m_ops)
        qk = rw.producer(scores, "MatMul")
        if qk is None or not rw.single_use(scores) or scores.shape != scores_shape:
            return None
        m_ops.append(qk)
        if bias_kind == "add":
            terms = bias if isinstance(bias, tuple) else (bias,)
            if any(t.dtype != out.dtype or t.type.rank > rank for t in terms):
                return None
            try:
                summed = ()
                for t in terms:
                    summed = broadcast_shapes(summed, t.shape)
                if broadcast_shapes(summed, scores_shape) != scores_shape:
                    return None
                if rank == 3 and len(summed) == 3 and summed[0] != 1:
                    return None
                broadcast_shapes(summed, (b, heads, s, s))
            except ValueError:
                return None
        elif bias_kind == "fill":
            cond = bias[0]
            try:
                if broadcast_shapes(cond.shape, scores_shape) != scores_shape:
                    return None
                if rank == 3 and cond.type.rank == 3 and cond.shape[0] != 1:
                    return None
            except ValueError:
                return None
        # the three head splits
        src_shape = (b, s, hd)
        split = base.reshape(b, s, heads, d)  # index of (b, s, h, d) in the projection
        q_expect = split.transpose(0, 2, 1, 3)
        k_expect = split.transpose(0, 2, 3, 1)
        if rank == 3:
            q_expect = q_expect.reshape(b * heads, s, d)
            k_expect = k_expect.reshape(b * heads, d, s)
        q_found = _head_chain(rw, qk.inputs[0], src_shape, True, q_expect)
        k_found = _head_chain(rw, qk.inputs[1], src_shape, True, k_expect)
        v_found = _head_chain(rw, vh, src_shape, False, q_expect)
        if q_found is None or k_found is None or v_found is None:
            return None
        scale = q_found[1] * k_found[1] * mid_scale * post_scale
        if not (math.isfinite(scale) and scale > 0.0):
            return None
        for found in (q_found, k_found, v_found):
            m_ops += found[2]
        return Match(root, m_ops, q=q_found[0], k=k_found[0], v=v_found[0], heads=heads, scale=scale,
                     bias=bias, bias_kind=bias_kind, post_scale=post_scale)

    def rewrite(self, rw, m):
        out = m.root.outputs[0]
        name = out.name
        new_ops: list[Op] = []
        qkv = rw.op("Concat", [m["q"], m["k"], m["v"]], {"axis": 2}, hint=f"{name}.qkv")
        new_ops.append(qkv)
        operands = [qkv.outputs[0]]
        dt = numpy_dtype(out.dtype)
        bias = m["bias"]
        if isinstance(bias, tuple) and m["bias_kind"] == "add":  # scores + b1 + b2: one bias b1 + b2
            # the sum is no part of the layer (its terms come from outside it, the same for every
            # layer): it carries the terms' provenance, so CSE makes one for all layers
            where = tuple(dict.fromkeys(n for t in bias if t.producer is not None for n in t.producer.onnx_nodes))
            total = bias[0]
            for term in bias[1:]:
                op = rw.op("Add", [total, term], hint=f"{name}.bias")
                op.onnx_nodes = where
                new_ops.append(op)
                total = op.outputs[0]
            bias = total
        if m["bias_kind"] == "fill":
            cond, fill, fill_at = bias
            fill_c = rw.constant(f"{name}.fill", np.array(fill, dt))
            zero = rw.constant(f"{name}.zero", np.zeros((), dt))
            args = [cond, fill_c, zero] if fill_at == 1 else [cond, zero, fill_c]
            op = rw.op("Where", args, hint=f"{name}.bias")
            new_ops.append(op)
            bias = op.outputs[0]
        if bias is not None and m["post_scale"] != 1.0:
            factor = rw.constant(f"{name}.bias_scale", np.array(m["post_scale"], dt))
            op = rw.op("Mul", [bias, factor], hint=f"{name}.bias")
            new_ops.append(op)
            bias = op.outputs[0]
        if bias is not None:
            operands.append(bias)
        new_ops.append(rw.op("MultiHeadAttention", operands, {"num_heads": m["heads"], "scale": m["scale"]},
                             outputs=m.root.outputs))
        return new_ops


class FuseAttention(Pass):
    """Q/K/V head split + scaled QK^T + mask + Softmax + AV + head merge -> MultiHeadAttention."""

    name = "fuse-attention"
    num_heads: int = option(0, "only fuse attention with this many heads (0: derive from shapes)")

    def run(self, graph) -> PassResult:
        return PassResult.of(apply_patterns(graph, [ScaledDotProductAttention(self.num_heads)]))
