"""simplify-masks: a product of integer masks that is only tested for non-zero -> And of the tests.

DeBERTa-v2 builds its pairwise attention mask as an int64 outer product of the attention_mask
input with itself, then casts it to bool. Integer multiplication needs an integer ALU (the S4 VPU
has none, and nothing bounds an input's values), while the bool test of a product is the And of
the operands' tests: a*b != 0 exactly when a != 0 and b != 0. (The one difference is an integer
overflow that wraps to 0, e.g. 2^32 * 2^32 in int64; masks hold 0/1, and the rewrite is limited to
products whose only reader is the bool Cast.)
"""

from __future__ import annotations

from s4c.ir import Op
from s4c.passes.base import Pass, PassResult
from s4c.passes.rewrite import Match, Pattern, apply_patterns

INTEGERS = ("i8", "u8", "i16", "u16", "i32", "i64")


class MaskProductTest(Pattern):
    """Cast{to=bool} of an integer Mul whose only reader it is.

        a (int)   b (int)               a (int)          b (int)
           \\       /                      |                |
            Mul               ==>     Cast{to=bool}    Cast{to=bool}
             |                              \\          /
        Cast{to=bool}                            And
    """

    roots = ("Cast",)

    def match(self, rw, root):
        if root.attrs.get("to") != "bool":
            return None
        mul = rw.producer(root.inputs[0], "Mul")
        if mul is None or mul.outputs[0].dtype not in INTEGERS or not rw.single_use(mul.outputs[0]):
            return None
        return Match(root, [mul], a=mul.inputs[0], b=mul.inputs[1])

    def rewrite(self, rw, m):
        tests = [rw.op("Cast", [m[k]], {"to": "bool"}, hint=f"{m[k].name}.nonzero") for k in ("a", "b")]
        return [*tests, rw.op("And", [t.outputs[0] for t in tests], {}, outputs=m.root.outputs)]


PATTERNS = [MaskProductTest()]


class SimplifyMasks(Pass):
    """Cast{to=bool}(Mul(a, b)) on integers -> And(Cast{to=bool}(a), Cast{to=bool}(b))."""

    name = "simplify-masks"

    def run(self, graph) -> PassResult:
        return PassResult.of(apply_patterns(graph, PATTERNS))
