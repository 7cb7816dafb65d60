"""fuse-linear: MatMul / Gemm with a weight operand (+ a bias Add) -> Linear(x, weight[out, in], bias?).

The weight may be a constant, a Transpose of one, or the result of a DequantizeWeight (an int8
weight, from fold-weight-dequant), or a Transpose of that. A constant [in, out] MatMul weight
becomes a C-ordered [out, in] copy, made once here: sparsity analysis, every target's layout
selection and every backend's packing walk its rows, which is several times slower on a
transposed view (the [in, out] original is dropped, so peak memory grows by one weight at a
time). An int8 weight becomes a DequantizeWeight of the transposed int8 array with its axis
swapped.

A weight read by several MatMuls (ALBERT's layers share one set) gets one transposed copy: the
copies are memoised per pass run by the source constant (its identity, not its content), so every
Linear reading the same initializer reads the same new constant Value and the backends store it once.

Not matched: batched MatMuls of two activations (attention's QK^T and AV), weights that are not
2-D, Gemm with transA, Gemm whose C is not a per-output-column bias, Gemm with alpha != 1 on a
non-constant weight, a bias Add that broadcasts beyond the last axis or whose Linear result has
another user.
"""

from __future__ import annotations

import numpy as np

from s4c.ir import Op, Value
from s4c.passes.base import Pass, PassResult
from s4c.passes.rewrite import Match, Pattern, Rewriter, apply_patterns, bias_vector
from s4c.sparse.base import transposed

DEQUANT = "DequantizeWeight"


def _is_swap(rw: Rewriter, op: Op) -> bool:
    perm = rw.attrs(op).get("perm")
    return op.inputs[0].type.rank == 2 and (perm is None or list(perm) == [1, 0])


def _dequant_transposable(rw: Rewriter, op: Op) -> bool:
    """A 2-D DequantizeWeight of a constant whose per-axis operands survive a transpose."""
    attrs = rw.attrs(op)
    if attrs.get("block_size"):
        return False
    return (op.inputs[0].is_constant and op.inputs[0].type.rank == 2
            and all(v.is_constant and v.type.rank <= 1 for v in op.inputs[1:]))


def weight_source(rw: Rewriter, w: Value, transposed: bool, m_ops: list[Op]):
    """How to get `w` ([in, out] if not `transposed`, else [out, in]) as an [out, in] Linear
    weight: ("value", v) to use an existing value, ("const", array) for a new constant, or
    ("dequant", op) to re-emit DequantizeWeight `op` transposed. None if `w` is not a weight.
    Single-use Transpose / DequantizeWeight ops consumed on the way are appended to `m_ops`."""
    if w.type.rank != 2:
        return None
    t = rw.producer(w, "Transpose")
    if t is not None and _is_swap(rw, t):
        inner = weight_source(rw, t.inputs[0], not transposed, m_ops)
        if inner is not None and rw.single_use(w):
            m_ops.append(t)
        return inner
    data = rw.const(w)
    if data is not None:
        return ("value", w) if transposed else ("const", data.T, ("T", w))
    dq = rw.producer(w, DEQUANT)
    if dq is not None:
        if transposed:
            return ("value", w)
        if not _dequant_transposable(rw, dq):
            return None
        if rw.single_use(w):
            m_ops.append(dq)
        return ("dequant", dq)
    return None


def _memo_constant(rw: Rewriter, key, hint: str, make) -> Value:
    """The new constant derived from the source constants in `key` (a tuple of Values, matched by
    identity, and plain hashables), made once per pass run: `make()` gives its array. The memo
    keeps the source Values alive, so the ids in its keys are not reused."""
    memo = rw.__dict__.setdefault("_derived_constants", {})
    ids = tuple(id(k) if isinstance(k, Value) else k for k in key)
    hit = memo.get(ids)
    if hit is None:
        hit = memo[ids] = (key, rw.constant(hint, contiguous(make())))
    return hit[1]


def contiguous(array) -> np.ndarray:
    """`array` C-contiguous; a transposed weight (an F-contiguous 2-D view) through s4c.sparse's
    strip-wise `transposed` (~0.15 CPU s of a BERT-base compile)."""
    array = np.asarray(array)
    if array.ndim != 2 or array.flags.c_contiguous or not array.flags.f_contiguous:
        return np.ascontiguousarray(array)
    return transposed(array.T)


def make_weight(rw: Rewriter, source, hint: str, new_ops: list[Op]) -> Value:
    kind, what = source[0], source[1]
    if kind == "value":
        return what
    if kind == "const":
        if len(source) > 2:  # derived from a source constant (memo key source[2]): one copy per source
            return _memo_constant(rw, source[2], hint, lambda: what)
        return rw.constant(hint, contiguous(what))
    dq: Op = what
    attrs = dict(dq.attrs)
    axis = rw.attrs(dq).get("axis", 1)
    attrs["axis"] = 1 - (axis % 2)
    q = _memo_constant(rw, ("T", dq.inputs[0]), dq.inputs[0].name + ".T", lambda: rw.const(dq.inputs[0]).T)
    op = rw.op(DEQUANT, [q] + list(dq.inputs[1:]), attrs, hint=dq.outputs[0].name + ".T")
    new_ops.append(op)
    return op.outputs[0]


class MatMulToLinear(Pattern):
    """MatMul of an activation and a 2-D weight.

        x      W [in,out]            x     (W [out,in] | DequantizeWeight)
         \\    /   (const, Transpose    \\    /
         MatMul    or DequantizeWeight)  Linear
           |                 ==>          |
           y                              y
    """

    roots = ("MatMul",)

    def match(self, rw, root):
        x, w = root.inputs
        if x.type.rank < 1 or w.type.rank != 2 or x.dtype != w.dtype:
            return None
        m_ops: list[Op] = []
        source = weight_source(rw, w, False, m_ops)
        if source is None:
            return None
        return Match(root, m_ops, x=x, source=source)

    def rewrite(self, rw, m):
        new_ops: list[Op] = []
        w = make_weight(rw, m["source"], m.root.inputs[1].name + ".T", new_ops)
        new_ops.append(rw.op("Linear", [m["x"], w], outputs=m.root.outputs))
        return new_ops


class GemmToLinear(Pattern):
    """Gemm(A, B, C?){alpha, beta, transA=0, transB} with a weight B and a bias-shaped C.

        A   B     C [N] | [1,N] | scalar        A  (B | B^T) * alpha   C * beta
         \\  |    /                                \\      |            /
          Gemm                        ==>              Linear
    """

    roots = ("Gemm",)

    def match(self, rw, root):
        attrs = rw.attrs(root)
        if attrs["transA"]:
            return None
        a, b = root.inputs[0], root.inputs[1]
        m_ops: list[Op] = []
        source = weight_source(rw, b, bool(attrs["transB"]), m_ops)
        if source is None:
            return None
        alpha, beta = attrs["alpha"], attrs["beta"]
        if alpha != 1.0:
            if source[0] == "dequant" or (source[0] == "value" and not source[1].is_constant):
                return None
            data = source[1].data if source[0] == "value" else source[1]
            key = (source[1],) if source[0] == "value" else source[2]
            source = ("const", (data * np.asarray(alpha, data.dtype)).astype(data.dtype), ("alpha", alpha) + key)
        bias, bias_value = None, None
        if len(root.inputs) > 2 and beta != 0.0:
            c = rw.const(root.inputs[2])
            if c is None:
                return None
            bias = bias_vector(c, root.outputs[0].shape[-1], 2)
            if bias is None:
                return None
            if beta != 1.0:
                bias = (bias * np.asarray(beta, bias.dtype)).astype(bias.dtype)
            elif c.shape == bias.shape:
                bias_value = root.inputs[2]
        return Match(root, m_ops, x=a, source=source, bias=bias, bias_value=bias_value)

    def rewrite(self, rw, m):
        new_ops: list[Op] = []
        w = make_weight(rw, m["source"], m.root.inputs[1].name + ".T", new_ops)
        operands = [m["x"], w]
        if m["bias"] is not None:
            operands.append(m["bias_value"] or rw.constant(m.root.inputs[2].name + ".bias", m["bias"]))
        new_ops.append(rw.op("Linear", operands, outputs=m.root.outputs))
        return new_ops


class LinearBias(Pattern):
    """A constant added along the last axis of a Linear result becomes (or joins) its bias.

        Linear{activation=none}   b [N]            Linear(x, W, b (+ bias))
                 \\              /          ==>
                      Add
    """

    roots = ("Add",)

    def match(self, rw, root):
        for i in (0, 1):
            y, c = root.inputs[i], root.inputs[1 - i]
            lin = rw.producer(y, "Linear")
            data = rw.const(c)
            if lin is None or data is None or rw.attrs(lin)["activation"] != "none":
                continue
            if c.dtype != y.dtype or root.outputs[0].type != y.type:
                continue
            bias = bias_vector(data, y.shape[-1], y.type.rank)
            if bias is None:
                continue
            if len(lin.inputs) > 2:
                old = rw.const(lin.inputs[2])
                if old is None:
                    continue
                bias = (old + bias).astype(old.dtype)
                return Match(root, [lin], lin=lin, bias=bias, bias_value=None)
            return Match(root, [lin], lin=lin, bias=bias, bias_value=c if data.shape == bias.shape else None)
        return None

    def rewrite(self, rw, m):
        lin: Op = m["lin"]
        b = m["bias_value"] or rw.constant(m.root.inputs[1].name + ".bias", m["bias"])
        return [rw.op("Linear", [lin.inputs[0], lin.inputs[1], b], lin.attrs, outputs=m.root.outputs)]


PATTERNS = [MatMulToLinear(), GemmToLinear(), LinearBias()]


class FuseLinear(Pass):
    """MatMul/Gemm with a constant or int8-dequantised weight (+ bias Add) -> Linear([out,in])."""

    name = "fuse-linear"

    def run(self, graph) -> PassResult:
        return PassResult.of(apply_patterns(graph, PATTERNS))
