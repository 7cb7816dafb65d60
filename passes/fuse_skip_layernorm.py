"""fuse-skip-layernorm: LayerNorm over a residual Add -> SkipLayerNorm(x, skip, gamma, beta, bias?).

A bias Add on either side of the residual Add (a constant broadcast along the last axis, left over
when the projection before it did not become a Linear with bias) is absorbed as the bias operand.
A LayerNorm without beta gets a zero beta.

Not matched: a LayerNorm over other than the last axis or with gamma/beta not shaped [hidden], an
Add that broadcasts (the operands must have the result's shape), an Add of a constant (that is a
bias, not a residual), an Add whose result something else reads (e.g. the next residual), and the
embeddings' sum of Gathers when fuse-embedding has not run first (it would match: run it first).
"""

from __future__ import annotations

import numpy as np

from s4c.ir import Op, numpy_dtype
from s4c.passes.base import Pass, PassResult
from s4c.passes.rewrite import Match, Pattern, apply_patterns, bias_vector, last_axis_layernorm


class SkipLayerNorm(Pattern):
    """LayerNorm(x + skip) over the last axis, with an optional bias Add before it.

        x (= Add(y, bias)?)   skip
                 \\           /
                     Add
                      |                 ==>   SkipLayerNorm(x | y, skip, gamma, beta, bias?){epsilon}
            LayerNorm(., gamma, beta?){axis = -1}
    """

    roots = ("LayerNorm",)

    def match(self, rw, root):
        s = root.inputs[0]
        attrs = rw.attrs(root)
        hidden = last_axis_layernorm(rw, root)
        if hidden is None:
            return None
        add = rw.producer(s, "Add")
        if add is None:
            return None
        a, b = add.inputs
        if a.shape != s.shape or b.shape != s.shape or a.is_constant or b.is_constant:
            return None
        m_ops: list[Op] = [add]
        x, skip, bias = a, b, None
        for i in (0, 1):
            inner = rw.producer(add.inputs[i], "Add")
            if inner is None or not rw.single_use(add.inputs[i]):
                continue
            for j in (0, 1):
                c = rw.const(inner.inputs[j])
                y = inner.inputs[1 - j]
                if c is None or y.shape != s.shape or inner.inputs[j].dtype != s.dtype:
                    continue
                vec = bias_vector(c, hidden, s.type.rank)
                if vec is not None:
                    x, skip, bias = y, add.inputs[1 - i], (inner.inputs[j], vec)
                    m_ops.append(inner)
                    break
            if bias is not None:
                break
        return Match(root, m_ops, x=x, skip=skip, bias=bias, epsilon=attrs["epsilon"])

    def rewrite(self, rw, m):
        ln = m.root
        name = ln.outputs[0].name
        gamma = ln.inputs[1]
        beta = ln.inputs[2] if len(ln.inputs) > 2 else \
            rw.constant(f"{name}.beta", np.zeros(gamma.shape, numpy_dtype(gamma.dtype)))
        operands = [m["x"], m["skip"], gamma, beta]
        if m["bias"] is not None:
            value, vec = m["bias"]
            operands.append(value if value.shape == vec.shape else rw.constant(f"{name}.bias", vec))
        return [rw.op("SkipLayerNorm", operands, {"epsilon": m["epsilon"]}, outputs=ln.outputs)]


class FuseSkipLayernorm(Pass):
    """Residual Add (+ bias Add) + LayerNorm over the last axis -> SkipLayerNorm."""

    name = "fuse-skip-layernorm"

    def run(self, graph) -> PassResult:
        return PassResult.of(apply_patterns(graph, [SkipLayerNorm()]))
