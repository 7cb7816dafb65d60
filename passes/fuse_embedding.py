"""fuse-embedding: word + position (+ token-type) embedding Gathers, summed, then LayerNorm -> Embedding.

    Embedding(ids, word, position_ids, position_table, gamma, beta[, token_type_ids, type_table]){epsilon}

The three lookups are told apart by what they read, not by their order in the sum: the word
lookup is the one with runtime ids and the largest table; the position lookup prefers constant
ids (the exporters fold position_ids = arange(S) to a constant), then the larger remaining table;
the token-type lookup is what is left. (The sum is the same whichever way round: the roles only
tell the backend which table is which.)

Not matched: a sum of fewer than two or more than three lookups, a lookup that is not a Gather
along axis 0 of a constant 2-D table, anything else in the sum (a scaled embedding, a fourth
term), a lookup or partial sum with another reader, a LayerNorm over other than the last axis or
with gamma/beta not shaped [hidden], ids whose shapes make the result differ from the LayerNorm's.
"""

from __future__ import annotations

import numpy as np

from s4c.ir import Op, Value, numpy_dtype
from s4c.passes.base import Pass
from s4c.passes.rewrite import Match, Pattern, Rewriter, apply_patterns


def _lookup(rw: Rewriter, v: Value) -> Op | None:
    g = rw.producer(v, "Gather")
    if g is None or rw.attrs(g)["axis"] != 0:
        return None
    table, ids = g.inputs
    if rw.const(table) is None or table.type.rank != 2 or not ids.dtype.startswith(("i", "u")):
        return None
    return g


class EmbeddingLayerNorm(Pattern):
    """LayerNorm of a sum of two or three embedding lookups.

        Gather(word, ids)   Gather(type, token_type_ids)
                  \\         /
                     Add         Gather(position, position_ids)
                       \\        /                                 (any association and order)
                          Add
                           |                      ==>   Embedding(...){epsilon}
                 LayerNorm(., gamma, beta?){axis = -1}
    """

    roots = ("LayerNorm",)

    def match(self, rw, root):
        s = root.inputs[0]
        attrs = rw.attrs(root)
        rank = s.type.rank
        if rank == 0 or attrs["axis"] % rank != rank - 1:
            return None
        hidden = s.shape[-1]
        if any(v.shape != (hidden,) or v.dtype != s.dtype for v in root.inputs[1:]):
            return None
        m_ops: list[Op] = []
        leaves: list[Value] = []

        def visit(v: Value, top: bool) -> bool:
            add = rw.producer(v, "Add")
            if add is not None and (top or rw.single_use(v)) and len(leaves) < 4:
                m_ops.append(add)
                return visit(add.inputs[0], False) and visit(add.inputs[1], False)
            leaves.append(v)
            return True

        visit(s, True)
        if not m_ops or not 2 <= len(leaves) <= 3:
            return None
        gathers = [_lookup(rw, v) for v in leaves]
        if any(g is None for g in gathers) or len({id(g) for g in gathers}) != len(gathers):
            return None
        if any(g.inputs[0].dtype != s.dtype or g.inputs[0].shape[1] != hidden for g in gathers):
            return None
        size = lambda g: g.inputs[0].shape[0]  # noqa: E731
        runtime = [g for g in gathers if not g.inputs[1].is_constant]
        word = max(runtime or gathers, key=size)
        rest = [g for g in gathers if g is not word]
        fixed = [g for g in rest if g.inputs[1].is_constant]
        position = max(fixed or rest, key=size)
        types = [g for g in rest if g is not position]
        m_ops += gathers
        operands = [word.inputs[1], word.inputs[0], position.inputs[1], position.inputs[0]]
        tail = [types[0].inputs[1], types[0].inputs[0]] if types else []
        return Match(root, m_ops, operands=operands, tail=tail, epsilon=attrs["epsilon"])

    def rewrite(self, rw, m):
        ln = m.root
        gamma = ln.inputs[1]
        beta = ln.inputs[2] if len(ln.inputs) > 2 else \
            rw.constant(f"{ln.outputs[0].name}.beta", np.zeros(gamma.shape, numpy_dtype(gamma.dtype)))
        operands = m["operands"] + [gamma, beta] + m["tail"]
        if rw.infer("Embedding", operands, {"epsilon": m["epsilon"]}) != [ln.outputs[0].type]:
            return None
        return [rw.op("Embedding", operands, {"epsilon": m["epsilon"]}, outputs=ln.outputs)]


class FuseEmbedding(Pass):
    """Word/position/token-type Gathers + Add + LayerNorm -> Embedding."""

    name = "fuse-embedding"

    def run(self, graph) -> bool:
        return bool(apply_patterns(graph, [EmbeddingLayerNorm()]))
