"""fuse-gelu: the exporters' GELU spellings -> Gelu{approximate}, then Gelu (or Relu) folded into the
Linear that feeds it as its activation epilogue (Linear{activation=gelu|gelu_tanh|relu}).

The erf and tanh forms are recognised by what they compute, not by how they are spelled: the
outer product is flattened (any association of Mul, constants anywhere in it, Div by constants),
the "1 + f(...)" factor may carry a constant scale, and the inner argument is normalised to a
polynomial in x. The constants are then checked against their meaning within a few float32 ulps:

    erf:   0.5 * x * (1 + erf(x / sqrt(2)))                           (x/sqrt(2) or x*(1/sqrt(2)))
    tanh:  0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))    (x^3 as Pow(x,3) or x*x*x)

Not matched: other constants (0.7071 for 1/sqrt(2), 0.0447, a 0.25 outer factor), an intermediate
with a second user or returned by the graph, a second variable anywhere in the expression, and
x*sigmoid(1.702x) (a different function). Gelu is folded only into a Linear without activation
whose result nothing else reads.
"""

from __future__ import annotations

import math

from s4c.ir import Op, Value
from s4c.passes.base import Pass, PassResult
from s4c.passes.rewrite import Match, Pattern, Rewriter, apply_patterns, close_f32, flatten_product, polynomial

SQRT_HALF = 1.0 / math.sqrt(2.0)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
KAPPA = 0.044715


def _one_plus(rw: Rewriter, a: Value, func: str, m_ops: list[Op]):
    """`a` as alpha + beta * func(inner): (alpha, beta, inner), else None."""
    add = rw.producer(a, "Add")
    if add is None or add.outputs[0].shape != a.shape:
        return None
    for i in (0, 1):
        alpha = rw.scalar(add.inputs[i])
        if alpha is None:
            continue
        ops: list[Op] = []
        beta, factors = flatten_product(rw, add.inputs[1 - i], ops, shape=a.shape)
        if len(factors) != 1:
            continue
        f = rw.producer(factors[0], func)
        if f is None:
            continue
        m_ops.extend([add, f, *ops])
        return alpha, beta, f.inputs[0]
    return None


class _GeluForm(Pattern):
    roots = ("Mul",)
    func = ""
    approximate = ""

    def inner_ok(self, poly: dict[int, float]) -> bool:
        raise NotImplementedError

    def match(self, rw, root):
        y = root.outputs[0]
        m_ops: list[Op] = []
        coef, factors = flatten_product(rw, y, m_ops)
        if len(factors) != 2:
            return None
        for k in (0, 1):
            x, a = factors[k], factors[1 - k]
            if x.is_constant or x.shape != y.shape or a is x:
                continue
            ops = list(m_ops)
            found = _one_plus(rw, a, self.func, ops)
            if found is None:
                continue
            alpha, beta, inner = found
            if beta == 0.0 or not close_f32(alpha / beta, 1.0) or not close_f32(coef * beta, 0.5):
                continue
            poly = polynomial(rw, inner, x, ops)
            if poly is None or not self.inner_ok(poly):
                continue
            return Match(root, ops, x=x)
        return None

    def rewrite(self, rw, m):
        return [rw.op("Gelu", [m["x"]], {"approximate": self.approximate}, outputs=m.root.outputs)]


class GeluErf(_GeluForm):
    """The exact (erf) GELU, in any association of its products.

        x ----------------------------.
        |                              \\
        Div(sqrt 2) | Mul(1/sqrt 2)     \\
        |                                Mul ... Mul(0.5)        (0.5 anywhere in the product)
        Erf                             /
        |                              /
        Add(1) ------------------------'
                    ==>   Gelu{approximate="none"}(x)
    """

    func = "Erf"
    approximate = "none"

    def inner_ok(self, poly):
        return set(poly) == {1} and close_f32(poly[1], SQRT_HALF)


class GeluTanh(_GeluForm):
    """The tanh-approximated GELU.

        x ---------------------------------------------------.
        |\\                                                    \\
        | Pow(3) | Mul(x, Mul(x, x))                           \\
        |  |                                                    Mul ... Mul(0.5)
        |  Mul(0.044715)                                       /
        |  |                                                  /
        Add -- Mul(sqrt(2/pi)) -- Tanh -- Add(1) ------------'
                    ==>   Gelu{approximate="tanh"}(x)
    """

    func = "Tanh"
    approximate = "tanh"

    def inner_ok(self, poly):
        return (set(poly) == {1, 3} and close_f32(poly[1], SQRT_2_OVER_PI)
                and close_f32(poly[3], SQRT_2_OVER_PI * KAPPA))


class ActivationIntoLinear(Pattern):
    """A Gelu or Relu whose operand is a Linear without activation becomes that Linear's epilogue
    (BERT's gelu, gelu_new's tanh form, and the relu of `hidden_act="relu"` models).

        Linear{activation=none}                Linear{activation=gelu | gelu_tanh | relu}
               |                    ==>
        Gelu{approximate} | Relu
    """

    roots = ("Gelu", "Relu")

    def match(self, rw, root):
        lin = rw.producer(root.inputs[0], "Linear")
        if lin is None or rw.attrs(lin)["activation"] != "none" or lin.outputs[0].dtype != "f32":
            return None
        if root.op == "Relu":
            act = "relu"
        else:
            act = "gelu_tanh" if rw.attrs(root)["approximate"] == "tanh" else "gelu"
        return Match(root, [lin], lin=lin, activation=act)

    def rewrite(self, rw, m):
        lin: Op = m["lin"]
        attrs = dict(lin.attrs, activation=m["activation"])
        return [rw.op("Linear", list(lin.inputs), attrs, outputs=m.root.outputs)]


PATTERNS = [GeluErf(), GeluTanh(), ActivationIntoLinear()]


class FuseGelu(Pass):
    """Erf/tanh GELU spellings -> Gelu{approximate}; Gelu or Relu after a Linear -> its activation."""

    name = "fuse-gelu"

    def run(self, graph) -> PassResult:
        return PassResult.of(apply_patterns(graph, PATTERNS))
