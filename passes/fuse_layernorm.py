"""fuse-layernorm: the decomposed layer normalisation and ONNX LayerNormalization -> LayerNorm.

The decomposed form (TorchScript exports before opset 17) is matched from the normalisation
itself, (x - mean) / sqrt(var + eps); the affine Mul(gamma) and Add(beta) that usually follow are
absorbed by two further patterns, so a LayerNorm without affine parameters, with gamma only, or with
its operands in either order all fuse. Spellings accepted for each step:

    mean:      ReduceMean(x){axes = trailing axes, keepdims = 1}
    square:    Pow(d, 2) | Mul(d, d)          (d = x - mean, or a duplicate Sub of the same mean)
    1/std:     Div(d, Sqrt(v + eps)) | Div(d, Pow(v + eps, 0.5)) | Mul(d, Reciprocal(Sqrt(v + eps)))
               | Mul(d, Pow(v + eps, -0.5)) | Mul(d, Div(1, Sqrt(v + eps)))

Not matched: reductions over non-trailing axes or without keepdims, a variance over another tensor
or another mean, a Pow other than 2 (or +-0.5), a negative or non-constant epsilon, an intermediate
used elsewhere (e.g. the mean also returned), gamma/beta that broadcast over non-normalised axes,
LayerNormalization whose Mean/InvStdDev results are read, or computed in another stash type.
"""

from __future__ import annotations

import numpy as np

from s4c.ir import Op, Value, numpy_dtype
from s4c.passes.base import Pass, PassResult
from s4c.passes.rewrite import Match, Pattern, Rewriter, apply_patterns, close_f32


def _trailing_axes(rw: Rewriter, rm: Op) -> int | None:
    """How many trailing axes ReduceMean `rm` reduces (keeping dims), or None if not trailing."""
    attrs = rw.attrs(rm)
    rank = rm.inputs[0].type.rank
    if not attrs["keepdims"] or rank == 0:
        return None
    axes = attrs.get("axes")
    if not axes:
        if attrs["noop_with_empty_axes"]:
            return None
        axes = list(range(rank))
    norm = sorted({a % rank for a in axes})
    if norm != list(range(rank - len(norm), rank)) or len(norm) != len(axes):
        return None
    return len(norm)


def _mean_of(rw: Rewriter, v: Value, x: Value, k: int, m_ops: list[Op]) -> bool:
    rm = rw.producer(v, "ReduceMean")
    if rm is None or rm.inputs[0] is not x or _trailing_axes(rw, rm) != k:
        return False
    m_ops.append(rm)
    return True


def _unwrap_root(rw: Rewriter, s: Value, power: float, m_ops: list[Op]) -> Value | None:
    """`s` = (a)^power as Sqrt / Reciprocal(Sqrt) / Div(1, Sqrt) / Pow(a, power): return a."""
    op = rw.producer(s, "Sqrt", "Pow", "Reciprocal", "Div")
    if op is None:
        return None
    if op.op == "Pow":
        p = rw.scalar(op.inputs[1])
        if p is None or not close_f32(p, power):
            return None
        m_ops.append(op)
        return op.inputs[0]
    if power == 0.5:
        if op.op != "Sqrt":
            return None
        m_ops.append(op)
        return op.inputs[0]
    if op.op == "Reciprocal":
        inner = op.inputs[0]
    elif op.op == "Div":
        one = rw.scalar(op.inputs[0])
        if one is None or one != 1.0:
            return None
        inner = op.inputs[1]
    else:
        return None
    sq = rw.producer(inner, "Sqrt")
    if sq is None:
        return None
    m_ops.extend([op, sq])
    return sq.inputs[0]


class DecomposedLayerNorm(Pattern):
    """(x - mean(x)) / sqrt(mean((x - mean(x))^2) + eps) over the trailing axes.

        x ---------.
        |           \\
        ReduceMean   |
        |            |
        Sub(x, mean) = d --------------.
        |                               \\
        Pow(d, 2) | Mul(d, d)            \\
        |                                 \\
        ReduceMean                         Div(d, .) | Mul(d, 1/.)
        |                                 /
        Add(eps) -- Sqrt (| Pow .5, -.5) /
                    ==>   LayerNorm(x, ones){epsilon, axis = -k}
    """

    roots = ("Div", "Mul")

    def match(self, rw, root):
        if root.op == "Div":
            cands = [(root.inputs[0], root.inputs[1], 0.5)]
        else:
            cands = [(root.inputs[0], root.inputs[1], -0.5), (root.inputs[1], root.inputs[0], -0.5)]
        for d, s, power in cands:
            m_ops: list[Op] = []
            sub = rw.producer(d, "Sub")
            if sub is None or sub.outputs[0].shape != sub.inputs[0].shape:
                continue
            x = sub.inputs[0]
            k = None
            rm = rw.producer(sub.inputs[1], "ReduceMean")
            if rm is not None and rm.inputs[0] is x:
                k = _trailing_axes(rw, rm)
            if k is None or root.outputs[0].shape != x.shape or not x.dtype.startswith("f"):
                continue
            m_ops += [sub, rm]
            ve = _unwrap_root(rw, s, power, m_ops)
            add = rw.producer(ve, "Add") if ve is not None else None
            if add is None:
                continue
            eps, var = None, None
            for i in (0, 1):
                e = rw.scalar(add.inputs[i])
                if e is not None:
                    eps, var = e, add.inputs[1 - i]
                    break
            if eps is None or not eps >= 0.0 or add.outputs[0].shape != var.shape:
                continue
            m_ops.append(add)
            rm2 = rw.producer(var, "ReduceMean")
            if rm2 is None or _trailing_axes(rw, rm2) != k:
                continue
            m_ops.append(rm2)
            sq = rw.producer(rm2.inputs[0], "Pow", "Mul")
            if sq is None:
                continue
            if sq.op == "Pow":
                p = rw.int_scalar(sq.inputs[1])
                if p != 2.0:
                    continue
                d2 = sq.inputs[0]
            else:
                if sq.inputs[0] is not sq.inputs[1]:
                    continue
                d2 = sq.inputs[0]
            m_ops.append(sq)
            if d2 is not d:
                sub2 = rw.producer(d2, "Sub")
                if sub2 is None or sub2.inputs[0] is not x:
                    continue
                if sub2.inputs[1] is not sub.inputs[1] and not _mean_of(rw, sub2.inputs[1], x, k, m_ops):
                    continue
                m_ops.append(sub2)
            return Match(root, m_ops, x=x, axis=-k, epsilon=eps)
        return None

    def rewrite(self, rw, m):
        x: Value = m["x"]
        ones = rw.constant(f"{m.root.outputs[0].name}.gamma", np.ones(x.shape[m["axis"]:], numpy_dtype(x.dtype)))
        return [rw.op("LayerNorm", [x, ones], {"epsilon": m["epsilon"], "axis": m["axis"]},
                      outputs=m.root.outputs)]


def _affine_operand(rw: Rewriter, ln: Op, c: Value) -> np.ndarray | None:
    """Constant `c` as an array of the LayerNorm's normalised shape, if applying it elementwise to
    the LayerNorm's result broadcasts over the normalised axes only."""
    data = rw.const(c)
    x = ln.inputs[0]
    axis = rw.attrs(ln)["axis"] % x.type.rank
    norm_shape = x.shape[axis:]
    if data is None or c.dtype != x.dtype or data.ndim > x.type.rank:
        return None
    padded = (1,) * (x.type.rank - data.ndim) + data.shape
    if any(d != 1 for d in padded[:axis]):
        return None
    if any(d not in (1, n) for d, n in zip(padded[axis:], norm_shape)):
        return None
    return np.broadcast_to(data.reshape(padded[axis:]), norm_shape)


class _LayerNormAffine(Pattern):
    def match(self, rw, root):
        for i in (0, 1):
            y, c = root.inputs[i], root.inputs[1 - i]
            ln = rw.producer(y, "LayerNorm")
            if ln is None or root.outputs[0].type != y.type:
                continue
            arr = _affine_operand(rw, ln, c)
            if arr is None:
                continue
            return Match(root, [ln], ln=ln, array=arr, value=c)
        return None

    @staticmethod
    def _param(rw: Rewriter, m: Match, array: np.ndarray, hint: str) -> Value:
        c: Value = m["value"]
        if c.shape == array.shape and rw.const(c) is not None and np.array_equal(c.data, array):
            return c
        return rw.constant(hint, np.ascontiguousarray(array))


class LayerNormScale(_LayerNormAffine):
    """LayerNorm(x, g, b?) * c  ->  LayerNorm(x, g * c, b * c?)   (c broadcasting over normalised axes)

        LayerNorm(x, g, b?)   c
                  \\          /          ==>    LayerNorm(x, g*c, b*c)
                      Mul
    """

    roots = ("Mul",)

    def rewrite(self, rw, m):
        ln: Op = m["ln"]
        c = m["array"]
        g = rw.const(ln.inputs[1])
        if g is None:
            return None
        name = m.root.outputs[0].name
        gamma = self._param(rw, m, c, f"{name}.gamma") if np.all(g == 1) else \
            rw.constant(f"{name}.gamma", (g * c).astype(g.dtype))
        operands = [ln.inputs[0], gamma]
        if len(ln.inputs) > 2:
            b = rw.const(ln.inputs[2])
            if b is None:
                return None
            operands.append(rw.constant(f"{name}.beta", (b * c).astype(b.dtype)))
        return [rw.op("LayerNorm", operands, ln.attrs, outputs=m.root.outputs)]


class LayerNormShift(_LayerNormAffine):
    """LayerNorm(x, g, b?) + c  ->  LayerNorm(x, g, b + c)   (c broadcasting over normalised axes)

        LayerNorm(x, g, b?)   c
                  \\          /          ==>    LayerNorm(x, g, b + c)
                      Add
    """

    roots = ("Add",)

    def rewrite(self, rw, m):
        ln: Op = m["ln"]
        c = m["array"]
        name = m.root.outputs[0].name
        if len(ln.inputs) > 2:
            b = rw.const(ln.inputs[2])
            if b is None:
                return None
            beta = rw.constant(f"{name}.beta", (b + c).astype(b.dtype))
        else:
            beta = self._param(rw, m, c, f"{name}.beta")
        return [rw.op("LayerNorm", [ln.inputs[0], ln.inputs[1], beta], ln.attrs, outputs=m.root.outputs)]


class OnnxLayerNormalization(Pattern):
    r"""ONNX LayerNormalization (opset 17) whose Mean / InvStdDev results nothing reads.

        x    scale   bias?
         \     |     /
        LayerNormalization{axis, epsilon}      ==>   LayerNorm(x, scale, bias?){epsilon, axis}
         |     :     :
         Y    (Mean, InvStdDev: unread)
    """

    roots = ("LayerNormalization",)

    def match(self, rw, root):
        attrs = rw.attrs(root)
        if attrs["stash_type"] != 1 and root.inputs[0].dtype != "f32":
            return None
        if any(rw.users(v) or rw.is_output(v) for v in root.outputs[1:]):
            return None
        return Match(root, [], epsilon=attrs["epsilon"], axis=attrs["axis"])

    def rewrite(self, rw, m):
        return [rw.op("LayerNorm", list(m.root.inputs), {"epsilon": m["epsilon"], "axis": m["axis"]},
                      outputs=m.root.outputs[:1])]


PATTERNS = [DecomposedLayerNorm(), LayerNormScale(), LayerNormShift(), OnnxLayerNormalization()]


class FuseLayernorm(Pass):
    """Decomposed layer norm and ONNX LayerNormalization -> LayerNorm(x, gamma, beta){epsilon, axis}."""

    name = "fuse-layernorm"

    def run(self, graph) -> PassResult:
        return PassResult.of(apply_patterns(graph, PATTERNS))
