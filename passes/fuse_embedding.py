"""fuse-embedding: word + position (+ token-type) embedding Gathers, summed, then LayerNorm -> Embedding.

    Embedding(ids, word, position_ids, position_table, gamma, beta[, token_type_ids, type_table]){epsilon}

The three lookups are told apart by what they read, not by their order in the sum: the word
lookup is the one with runtime ids and the largest table; the position lookup prefers constant
ids (the exporters fold position_ids = arange(S) to a constant), then the larger remaining table;
the token-type lookup is what is left. (The sum is the same whichever way round: the roles only
tell the backend which table is which.) One term may be a constant [1, S, H] instead of a lookup:
fold-constants folds Gather(position_table, arange(S)) since both operands are constants; it
becomes a table of S rows read at the constant ids arange(S).

Not matched: a sum of fewer than two or more than three terms, a lookup that is not a Gather along
axis 0 of a constant 2-D table, two constant terms, a word lookup with constant ids, anything else
in the sum (a scaled embedding), a lookup or partial sum with another reader, a LayerNorm over
other than the last axis or with gamma/beta not shaped [hidden], ids whose shapes make the result
differ from the LayerNorm's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from s4c.ir import Op, Value, numpy_dtype
from s4c.passes.base import Pass, PassResult
from s4c.passes.rewrite import Match, Pattern, Rewriter, apply_patterns, last_axis_layernorm


def _lookup(rw: Rewriter, v: Value) -> Op | None:
    g = rw.producer(v, "Gather")
    if g is None or rw.attrs(g)["axis"] != 0:
        return None
    table, ids = g.inputs
    if rw.const(table) is None or table.type.rank != 2 or not ids.dtype.startswith(("i", "u")):
        return None
    return g


@dataclass
class _Term:
    ids: Value | np.ndarray
    table: Value | np.ndarray
    fixed: bool  # the ids are known at compile time
    rows: int
    op: Op | None  # the Gather (None for a constant addend)


def _looked_up_constant(rw: Rewriter, v: Value, like: Value) -> _Term | None:
    """A constant addend of shape [..1, S, H] or [..1, 1, H]: a lookup that fold-constants already
    did (position_ids = arange(S) is a constant, so Gather(position_table, position_ids) folds).
    As a term: the table c.reshape(S, H) read at arange(S) (or a 1-row table read at row 0)."""
    data = rw.const(v)
    shape = like.shape
    if data is None or v.dtype != like.dtype or data.ndim < 2 or data.ndim > len(shape):
        return None
    rows, hidden = data.shape[-2:]
    seq = shape[-2]
    if any(d != 1 for d in data.shape[:-2]) or hidden != shape[-1] or rows not in (1, seq):
        return None
    ids = (np.arange(seq) if rows == seq else np.zeros(seq)).astype(np.int64).reshape(1, seq)
    return _Term(ids, data.reshape(rows, hidden), True, rows, None)


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
        hidden = last_axis_layernorm(rw, root)
        if hidden is None:
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
        terms = []
        for v in leaves:
            g = _lookup(rw, v)
            if g is not None:
                if g.inputs[0].dtype != s.dtype or g.inputs[0].shape[1] != hidden:
                    return None
                m_ops.append(g)
                terms.append(_Term(g.inputs[1], g.inputs[0], g.inputs[1].is_constant, g.inputs[0].shape[0], g))
                continue
            term = _looked_up_constant(rw, v, s)
            if term is None:
                return None
            terms.append(term)
        gathers = [t.op for t in terms if t.op is not None]
        if len(terms) - len(gathers) > 1 or len({id(g) for g in gathers}) != len(gathers):
            return None
        runtime = [t for t in terms if not t.fixed]
        word = max(runtime or terms, key=lambda t: t.rows)
        if word.op is None:
            return None
        rest = [t for t in terms if t is not word]
        fixed = [t for t in rest if t.fixed]
        position = max(fixed or rest, key=lambda t: t.rows)
        types = [t for t in rest if t is not position]
        return Match(root, m_ops, terms=[word, position] + types, epsilon=attrs["epsilon"])

    def rewrite(self, rw, m):
        ln = m.root
        name = ln.outputs[0].name
        gamma = ln.inputs[1]
        beta = ln.inputs[2] if len(ln.inputs) > 2 else \
            rw.constant(f"{name}.beta", np.zeros(gamma.shape, numpy_dtype(gamma.dtype)))
        pairs = []
        for role, t in zip(("word", "position", "token_type"), m["terms"]):
            if t.op is not None:
                pairs.append([t.ids, t.table])
            else:  # a constant addend: a table read at positions arange(S) (or row 0 throughout)
                pairs.append([rw.constant(f"{name}.{role}_ids", t.ids), rw.constant(f"{name}.{role}_table", t.table)])
        operands = pairs[0] + pairs[1] + [gamma, beta] + (pairs[2] if len(pairs) > 2 else [])
        if rw.infer("Embedding", operands, {"epsilon": m["epsilon"]}) != [ln.outputs[0].type]:
            return None
        return [rw.op("Embedding", operands, {"epsilon": m["epsilon"]}, outputs=ln.outputs)]


class FuseEmbedding(Pass):
    """Word/position/token-type Gathers + Add + LayerNorm -> Embedding."""

    name = "fuse-embedding"

    def run(self, graph) -> PassResult:
        return PassResult.of(apply_patterns(graph, [EmbeddingLayerNorm()]))
