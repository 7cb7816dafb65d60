"""Elementwise ops (numpy-style broadcasting, ONNX semantics)."""

from __future__ import annotations

import math

import numpy as np

from s4c.ir import TensorType, dtype_name, numpy_dtype
from s4c.ops import Attr, InferContext, implement, register


def broadcast_shapes(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise ValueError(f"shapes {' and '.join(str(list(s)) for s in shapes)} do not broadcast") from None


def _same_dtype(ctx: InferContext, indices) -> str:
    dtypes = {ctx.type(i).dtype for i in indices}
    if len(dtypes) != 1:
        raise TypeError(f"operand dtypes differ: {sorted(dtypes)}")
    return dtypes.pop()


def _erf(x: np.ndarray) -> np.ndarray:
    """erf in float64, to ~1e-15: Taylor series below 2.5, the erfc continued fraction above.

    numpy has no erf and scipy is not a runtime dependency; GELU's erf form needs it on every
    FFN activation, so it must be vectorised and exact to float32 precision."""
    a = np.abs(np.asarray(x, dtype=np.float64))
    out = np.empty_like(a)
    small = a < 2.5
    s = a[small]
    s2, term, total = s * s, s.copy(), s.copy()
    for n in range(1, 60):
        term *= -s2 / n
        total += term / (2 * n + 1)
    out[small] = total * (2.0 / math.sqrt(math.pi))
    t = a[~small]
    frac = np.zeros_like(t)
    for k in range(60, 0, -1):
        frac = (k / 2.0) / (t + frac)
    out[~small] = 1.0 - np.exp(-t * t) / math.sqrt(math.pi) / (t + frac)
    return (np.sign(x) * out).astype(np.asarray(x).dtype, copy=False)


UNARY = {
    "Sqrt": np.sqrt,
    "Reciprocal": np.reciprocal,
    "Erf": _erf,
    "Tanh": np.tanh,
    "Relu": lambda x: np.maximum(x, np.zeros((), x.dtype)),
    "Neg": np.negative,
    "Abs": np.abs,
    "Exp": np.exp,
    "Log": np.log,
    "Sigmoid": lambda x: (1.0 / (1.0 + np.exp(-x))).astype(x.dtype),
    "Floor": np.floor,
    "Ceil": np.ceil,
    "Identity": lambda x: x,
    "Not": np.logical_not,
    "IsNaN": np.isnan,
    "Sign": np.sign,
}
# Ops whose result dtype is bool whatever their input's.
BOOL_RESULT = {"IsNaN", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Not"}


def _unary_infer(name):
    def infer(ctx: InferContext):
        t = ctx.type(0)
        return [TensorType("bool" if name in BOOL_RESULT else t.dtype, t.shape)]
    return infer


for _name, _fn in UNARY.items():
    register(_name, inputs=(1, 1), doc=f"Elementwise {_name}.")(_unary_infer(_name))
    implement(_name)(lambda xs, attrs, fn=_fn: [np.asarray(fn(xs[0]))])


def _div(a, b):
    if np.issubdtype(a.dtype, np.integer):
        # ONNX integer Div truncates toward zero (C semantics), numpy floors.
        return (np.trunc(a.astype(np.float64) / b)).astype(a.dtype)
    return np.divide(a, b)


def _pow(a, b):
    if np.issubdtype(a.dtype, np.floating):
        return np.power(a, b.astype(a.dtype))
    return np.power(a.astype(np.float64), b.astype(np.float64)).astype(a.dtype)


BINARY = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": _div, "Pow": _pow,
    "Equal": np.equal, "Less": np.less, "Greater": np.greater,
    "LessOrEqual": np.less_equal, "GreaterOrEqual": np.greater_equal,
    "And": np.logical_and, "Or": np.logical_or, "Xor": np.logical_xor,
}


def _binary_infer(name):
    def infer(ctx: InferContext):
        a, b = ctx.type(0), ctx.type(1)
        if name != "Pow" and a.dtype != b.dtype:
            raise TypeError(f"operand dtypes differ: {a.dtype} and {b.dtype}")
        dtype = "bool" if name in BOOL_RESULT else a.dtype
        return [TensorType(dtype, broadcast_shapes(a.shape, b.shape))]
    return infer


for _name, _fn in BINARY.items():
    register(_name, inputs=(2, 2), doc=f"Elementwise {_name} with broadcasting.")(_binary_infer(_name))
    implement(_name)(lambda xs, attrs, fn=_fn: [np.asarray(fn(xs[0], xs[1]))])


def _variadic_infer(ctx: InferContext):
    dtype = _same_dtype(ctx, range(len(ctx.types)))
    return [TensorType(dtype, broadcast_shapes(*(t.shape for t in ctx.types)))]


for _name, _fn in {"Max": np.maximum, "Min": np.minimum, "Sum": np.add}.items():
    register(_name, inputs=(1, -1), doc=f"Elementwise {_name} of any number of operands.")(_variadic_infer)

    @implement(_name)
    def _variadic(xs, attrs, fn=_fn):
        out = xs[0]
        for x in xs[1:]:
            out = fn(out, x)
        return [np.asarray(out)]


@register("Where", inputs=(3, 3))
def where(ctx: InferContext):
    """Where(cond, x, y): x where cond else y, with broadcasting."""
    if ctx.type(0).dtype != "bool":
        raise TypeError("condition must be bool")
    dtype = _same_dtype(ctx, (1, 2))
    return [TensorType(dtype, broadcast_shapes(*(t.shape for t in ctx.types)))]


implement("Where")(lambda xs, attrs: [np.where(xs[0], xs[1], xs[2])])


@register("Cast", attrs={"to": Attr("str")})
def cast(ctx: InferContext):
    """Cast to dtype `to` (an IR dtype name: f32, i64, ...)."""
    numpy_dtype(ctx.attr("to"))
    return [TensorType(ctx.attr("to"), ctx.type(0).shape)]


@implement("Cast")
def _cast(xs, attrs):
    x, to = xs[0], numpy_dtype(attrs["to"])
    if np.issubdtype(to, np.integer) and np.issubdtype(x.dtype, np.floating):
        x = np.trunc(x)  # ONNX float->int casts truncate toward zero
    return [x.astype(to)]


@register("Clip", inputs=(1, 3))
def clip(ctx: InferContext):
    """Clip(x, min?, max?): clamp; a missing bound is no bound."""
    return [ctx.type(0)]


@implement("Clip")
def _clip(xs, attrs):
    x = xs[0]
    lo = xs[1] if len(xs) > 1 and xs[1] is not None else None
    hi = xs[2] if len(xs) > 2 and xs[2] is not None else None
    if lo is not None:
        x = np.maximum(x, lo)
    if hi is not None:
        x = np.minimum(x, hi)
    return [np.asarray(x, dtype=xs[0].dtype)]


@register("DequantizeLinear", attrs={"axis": Attr("int", 1), "block_size": Attr("int", 0)}, inputs=(2, 3))
def dequantize_linear(ctx: InferContext):
    """DequantizeLinear(x, scale, zero_point?) = (x - zero_point) * scale, per tensor or per `axis`."""
    return [TensorType(ctx.type(1).dtype, ctx.type(0).shape)]


@implement("DequantizeLinear")
def _dequantize_linear(xs, attrs):
    x, scale = xs[0], xs[1]
    zero = xs[2] if len(xs) > 2 and xs[2] is not None else np.zeros((), x.dtype)
    axis = attrs["axis"] % max(x.ndim, 1)
    if scale.ndim == 1 and x.ndim > 0:
        shape = [1] * x.ndim
        if attrs["block_size"]:
            scale = np.repeat(scale, attrs["block_size"], axis=0)[: x.shape[axis]]
            zero = np.repeat(zero, attrs["block_size"], axis=0)[: x.shape[axis]] if zero.ndim else zero
        shape[axis] = -1
        scale = scale.reshape(shape)
        zero = zero.reshape(shape) if zero.ndim == 1 else zero
    elif scale.ndim > 1 and attrs["block_size"]:
        scale = np.repeat(scale, attrs["block_size"], axis=axis).take(range(x.shape[axis]), axis=axis)
        if zero.ndim:
            zero = np.repeat(zero, attrs["block_size"], axis=axis).take(range(x.shape[axis]), axis=axis)
    return [((x.astype(np.float32) - zero.astype(np.float32)) * scale).astype(scale.dtype)]


__all__ = ["broadcast_shapes", "UNARY", "BINARY", "dtype_name"]
