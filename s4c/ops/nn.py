"""Linear algebra, reductions and normalisation ops with ONNX semantics."""

from __future__ import annotations

import numpy as np

from s4c.ir import TensorType
from s4c.ops import Attr, InferContext, implement, register
from s4c.ops.elementwise import _erf, broadcast_shapes


def matmul_shape(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """numpy.matmul's result shape (1-D operands promoted and squeezed as numpy does)."""
    a2 = (1,) + a if len(a) == 1 else a
    b2 = b + (1,) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        raise ValueError(f"MatMul inner dims differ: {list(a)} x {list(b)}")
    out = broadcast_shapes(a2[:-2], b2[:-2]) + (a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return out


@register("MatMul", inputs=(2, 2))
def matmul(ctx: InferContext):
    """numpy-style batched matrix product."""
    a, b = ctx.type(0), ctx.type(1)
    if a.dtype != b.dtype:
        raise TypeError(f"operand dtypes differ: {a.dtype} and {b.dtype}")
    return [TensorType(a.dtype, matmul_shape(a.shape, b.shape))]


implement("MatMul")(lambda xs, attrs: [np.matmul(xs[0], xs[1])])


@register("Gemm", attrs={"alpha": Attr("float", 1.0), "beta": Attr("float", 1.0),
                         "transA": Attr("int", 0), "transB": Attr("int", 0)}, inputs=(2, 3))
def gemm(ctx: InferContext):
    """alpha * A' B' + beta * C, with A' = A^T if transA, B' = B^T if transB."""
    a, b = ctx.type(0).shape, ctx.type(1).shape
    m = a[1] if ctx.attr("transA") else a[0]
    k = a[0] if ctx.attr("transA") else a[1]
    kb, n = (b[1], b[0]) if ctx.attr("transB") else (b[0], b[1])
    if k != kb:
        raise ValueError(f"Gemm inner dims differ: {list(a)} x {list(b)}")
    if ctx.has(2):
        broadcast_shapes(ctx.type(2).shape, (m, n))
    return [TensorType(ctx.type(0).dtype, (m, n))]


@implement("Gemm")
def _gemm(xs, attrs):
    a = xs[0].T if attrs["transA"] else xs[0]
    b = xs[1].T if attrs["transB"] else xs[1]
    y = attrs["alpha"] * (a @ b)
    if len(xs) > 2:
        y = y + attrs["beta"] * xs[2]
    return [np.asarray(y, dtype=xs[0].dtype)]


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


for _name in ("Softmax", "LogSoftmax"):
    register(_name, attrs={"axis": Attr("int", -1)}, doc=f"{_name} along `axis`.")(lambda ctx: [ctx.type(0)])

implement("Softmax")(lambda xs, attrs: [softmax(xs[0], attrs["axis"]).astype(xs[0].dtype)])


@implement("LogSoftmax")
def _log_softmax(xs, attrs):
    x = xs[0] - np.max(xs[0], axis=attrs["axis"], keepdims=True)
    return [(x - np.log(np.sum(np.exp(x), axis=attrs["axis"], keepdims=True))).astype(xs[0].dtype)]


_REDUCE_ATTRS = {"axes": Attr("ints", None), "keepdims": Attr("int", 1), "noop_with_empty_axes": Attr("int", 0)}


def _reduce_axes(rank, attrs):
    axes = attrs.get("axes")
    if not axes:
        return None if not attrs["noop_with_empty_axes"] else ()
    return tuple(sorted(a % max(rank, 1) for a in axes))


def _reduce_infer(ctx: InferContext):
    t = ctx.type(0)
    axes = _reduce_axes(t.rank, ctx.attrs)
    axes = tuple(range(t.rank)) if axes is None else axes
    if ctx.attr("keepdims"):
        shape = tuple(1 if i in axes else d for i, d in enumerate(t.shape))
    else:
        shape = tuple(d for i, d in enumerate(t.shape) if i not in axes)
    return [TensorType(t.dtype, shape)]


def _l2(x, axis, keepdims):
    """ReduceL2: sqrt(sum(x^2)), computed in x's dtype (as ONNX's reference does)."""
    return np.sqrt(np.sum(np.square(x), axis=axis, keepdims=keepdims))


REDUCTIONS = {"ReduceMean": np.mean, "ReduceSum": np.sum, "ReduceMax": np.max, "ReduceMin": np.min,
              "ReduceProd": np.prod, "ReduceL2": _l2}
for _name, _fn in REDUCTIONS.items():
    register(_name, attrs=_REDUCE_ATTRS, doc=f"{_name} over `axes` (all when absent).")(_reduce_infer)

    @implement(_name)
    def _reduce(xs, attrs, fn=_fn):
        axes = _reduce_axes(xs[0].ndim, attrs)
        if axes == ():  # no reduction; ReduceL2 still takes sqrt(x^2), as ONNX's reference and onnxruntime do
            return [np.asarray(fn(xs[0], axis=(), keepdims=True), dtype=xs[0].dtype) if fn is _l2 else xs[0]]
        extra = {}
        if fn in (np.max, np.min) and xs[0].size == 0:  # ONNX: an empty max is -inf (lowest), min +inf
            dt = xs[0].dtype
            lo, hi = (False, True) if dt == np.bool_ else \
                (np.iinfo(dt).min, np.iinfo(dt).max) if np.issubdtype(dt, np.integer) else (-np.inf, np.inf)
            extra["initial"] = lo if fn is np.max else hi
        return [np.asarray(fn(xs[0], axis=axes, keepdims=bool(attrs["keepdims"]), **extra), dtype=xs[0].dtype)]


@register("CumSum", attrs={"axis": Attr("int"), "exclusive": Attr("int", 0), "reverse": Attr("int", 0)})
def cumsum(ctx: InferContext):
    """ONNX CumSum along `axis` (the ONNX operand, a compile-time constant here); `exclusive` leaves
    out the element itself, `reverse` sums from the end."""
    t = ctx.type(0)
    axis = ctx.attr("axis")
    if not -t.rank <= axis < t.rank:
        raise ValueError(f"CumSum axis {axis} is out of range for rank {t.rank}")
    return [t]


@implement("CumSum")
def _cumsum(xs, attrs):
    x = xs[0]
    axis = attrs["axis"] % x.ndim
    if attrs["reverse"]:
        x = np.flip(x, axis)
    y = np.cumsum(x, axis=axis, dtype=x.dtype)
    if attrs["exclusive"]:
        y = np.concatenate([np.zeros_like(np.take(y, [0], axis=axis)), np.delete(y, -1, axis=axis)], axis=axis) \
            if x.shape[axis] else y
    if attrs["reverse"]:
        y = np.flip(y, axis)
    return [np.ascontiguousarray(y)]


def layer_norm(x, gamma, beta, axis, epsilon):
    axes = tuple(range(axis % x.ndim, x.ndim))
    xd = x.astype(np.float32)
    mean = xd.mean(axis=axes, keepdims=True)
    var = ((xd - mean) ** 2).mean(axis=axes, keepdims=True)
    inv_std = 1.0 / np.sqrt(var + np.float32(epsilon))
    y = (xd - mean) * inv_std * gamma
    if beta is not None:
        y = y + beta
    return y.astype(x.dtype), mean, inv_std


@register("LayerNormalization", attrs={"axis": Attr("int", -1), "epsilon": Attr("float", 1e-5),
                                       "stash_type": Attr("int", 1), "num_results": Attr("int", 1)},
          inputs=(2, 3))
def layer_normalization(ctx: InferContext):
    """ONNX LayerNormalization (opset 17): Y, and optionally Mean and InvStdDev."""
    t = ctx.type(0)
    axis = ctx.attr("axis") % t.rank
    stat = TensorType("f32", t.shape[:axis] + (1,) * (t.rank - axis))
    return [t, stat, stat][: ctx.attr("num_results")]


@implement("LayerNormalization")
def _layer_normalization(xs, attrs):
    y, mean, inv_std = layer_norm(xs[0], xs[1], xs[2] if len(xs) > 2 else None, attrs["axis"], attrs["epsilon"])
    return [y, mean, inv_std][: attrs["num_results"]]


def gelu(x: np.ndarray, approximate: str) -> np.ndarray:
    xd = x.astype(np.float64)
    if approximate == "tanh":
        y = 0.5 * xd * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (xd + 0.044715 * xd ** 3)))
    else:
        y = 0.5 * xd * (1.0 + _erf(xd / np.sqrt(2.0)))
    return y.astype(x.dtype)


@register("Gelu", attrs={"approximate": Attr("str", "none")})
def gelu_(ctx: InferContext):
    """GELU, exact (erf) or `approximate="tanh"` (ONNX opset 20 semantics)."""
    if ctx.attr("approximate") not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh', not {ctx.attr('approximate')!r}")
    return [ctx.type(0)]


implement("Gelu")(lambda xs, attrs: [gelu(xs[0], attrs["approximate"])])
