"""int8 quantisation ops: what the quantize-int8 pass produces and int8 backends implement.

The numbers here are the contract. The reference evaluator computes them the way integer hardware
does, so `ref` is the oracle for int8 backends:

    QuantizeInt8(x f32, scale f32[]) -> q i8                 static, per tensor
    QuantizeInt8(x f32)              -> q i8, scale f32[..., 1]   dynamic, per row (token)

        q = saturate[-127, 127](round_half_even(x / scale))      (f32 division, as ONNX QuantizeLinear;
                                                                 symmetric: no zero point)
        dynamic: scale = max(|x|) over the last axis / 127 (1 for an all-zero row)

    LinearInt8(x_q i8[..., K], w_q i8[N, K], x_scale f32, w_scale f32[N], bias f32[N]?)
        -> y f32[..., N]

        acc[..., n] = sum_k int32(x_q[..., k]) * int32(w_q[n, k])        exact int32 accumulation
        y = act(f32(acc) * (x_scale * w_scale[n]) + bias[n])             one f32 multiply by the
                                                                        combined f32 scale, f32 add
        x_scale is f32[] (static) or f32[..., 1] (dynamic, one per row).

Saturating at -127 keeps activations symmetric (|q| <= 127); an int8 weight imported from ONNX may
hold -128, so K up to 2**31 / 128**2 = 131071 products cannot overflow int32 (the op refuses a larger K). A backend that multiplies by a
reciprocal instead of dividing can land on the other side of a rounding tie: one quantisation step
on rare elements, the tolerance an int8 backend is checked against the reference with.
"""

from __future__ import annotations

import numpy as np

from s4c.ir import TensorType
from s4c.ops import Attr, InferContext, implement, register
from s4c.ops.nn import gelu

QMAX = 127                       # symmetric int8: [-127, 127]
MAX_K = (2 ** 31 - 1) // (128 * 128)  # reduction length whose int32 sum cannot overflow (any int8 weight)
ACTIVATIONS = ("none", "gelu", "gelu_tanh", "relu")


def scale_from_amax(amax) -> np.ndarray:
    """The symmetric int8 scale(s) for a clip threshold |x| <= amax: amax / 127 in f32, 1 where amax
    is 0 (or not finite), so quantising never divides by zero."""
    amax = np.asarray(amax, np.float32)
    ok = np.isfinite(amax) & (amax > 0)
    return np.where(ok, amax / np.float32(QMAX), np.float32(1)).astype(np.float32)


def quantize(x: np.ndarray, scale) -> np.ndarray:
    """saturate(round_half_even(x / scale)) as int8, in f32 arithmetic (`scale` broadcasts)."""
    q = np.rint(np.asarray(x, np.float32) / np.asarray(scale, np.float32))
    return np.clip(q, -QMAX, QMAX).astype(np.int8)


def quantize_weight_per_channel(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """W[out, in] -> (W_q i8[out, in], scale f32[out]): symmetric per output channel, scale =
    max |W[n, :]| / 127. Zeros stay zeros, so sparsity is unchanged."""
    w = np.asarray(w, np.float32)
    scale = scale_from_amax(np.max(np.abs(w), axis=1) if w.size else np.zeros(w.shape[0], np.float32))
    return quantize(w, scale[:, None]), scale


def int_matmul(x_q: np.ndarray, w_q: np.ndarray) -> np.ndarray:
    """x_q[..., K] @ w_q[N, K]^T as exact int32. Computed in float64 (BLAS speed): every product is
    at most 128 * 128 and the sums stay far below 2**53, so the float64 result is the exact integer."""
    acc = np.matmul(x_q.astype(np.float64), w_q.T.astype(np.float64))
    return acc.astype(np.int32)


@register("QuantizeInt8", inputs=(1, 2))
def quantize_int8(ctx: InferContext):
    """x f32 -> int8, symmetric. With a scalar `scale` operand: per tensor (static, from
    calibration). Without: per row of the last axis (dynamic), and a second result, the row scales
    f32[..., 1] = max|x| / 127. q = saturate[-127,127](round_half_even(x / scale))."""
    x = ctx.type(0)
    if x.dtype != "f32":
        raise TypeError(f"QuantizeInt8 input must be f32, not {x.dtype}")
    if ctx.has(1):
        s = ctx.type(1)
        if s.dtype != "f32" or s.rank != 0:
            raise TypeError(f"QuantizeInt8 scale must be f32[], not {s}")
        return [TensorType("i8", x.shape)]
    if x.rank < 1:
        raise ValueError("dynamic QuantizeInt8 needs an input of rank >= 1")
    return [TensorType("i8", x.shape), TensorType("f32", x.shape[:-1] + (1,))]


@implement("QuantizeInt8")
def _quantize_int8(xs, attrs):
    x = np.asarray(xs[0], np.float32)
    if len(xs) > 1:
        return [quantize(x, xs[1])]
    amax = np.max(np.abs(x), axis=-1, keepdims=True) if x.shape[-1] else np.zeros(x.shape[:-1] + (1,), np.float32)
    scale = scale_from_amax(amax)
    return [quantize(x, scale), scale]


@register("LinearInt8", attrs={"activation": Attr("str", "none"), "layout": Attr("str", "dense"),
                               "sparsity": Attr("strs", None), "layout_costs": Attr("strs", None)},
          inputs=(4, 5))
def linear_int8(ctx: InferContext):
    """y = act(f32(x_q @ w_q^T as int32) * (x_scale * w_scale) + bias): an int8 Linear with int32
    accumulation. Operands: x_q i8[..., K], w_q i8[N, K] (a constant; `layout` is its storage
    choice, as Linear's), x_scale f32[] or f32[..., 1], w_scale f32[N], bias f32[N] (optional)."""
    x, w, xs, ws = (ctx.type(i) for i in range(4))
    if x.dtype != "i8" or w.dtype != "i8":
        raise TypeError(f"LinearInt8 operands must be i8, not {x.dtype} x {w.dtype}")
    if w.rank != 2 or x.rank < 1 or x.shape[-1] != w.shape[1]:
        raise ValueError(f"LinearInt8 weight {w} does not fit input {x}")
    if w.shape[1] > MAX_K:
        raise ValueError(f"LinearInt8 reduction of {w.shape[1]} could overflow int32 (at most {MAX_K})")
    if xs.dtype != "f32" or xs.shape not in ((), x.shape[:-1] + (1,)):
        raise ValueError(f"LinearInt8 input scale {xs} must be f32[] or f32{list(x.shape[:-1] + (1,))}")
    if ws.dtype != "f32" or ws.shape != (w.shape[0],):
        raise ValueError(f"LinearInt8 weight scale {ws} must be f32[{w.shape[0]}]")
    if ctx.has(4) and (ctx.type(4).dtype != "f32" or ctx.type(4).shape != (w.shape[0],)):
        raise ValueError(f"LinearInt8 bias {ctx.type(4)} must be f32[{w.shape[0]}]")
    if ctx.attr("activation") not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}")
    return [TensorType("f32", x.shape[:-1] + (w.shape[0],))]


@implement("LinearInt8")
def _linear_int8(xs, attrs):
    x_q, w_q, x_scale, w_scale = xs[:4]
    acc = int_matmul(x_q, w_q)
    y = acc.astype(np.float32) * (np.asarray(x_scale, np.float32) * np.asarray(w_scale, np.float32))
    if len(xs) > 4:
        y = y + np.asarray(xs[4], np.float32)
    act = attrs["activation"]
    if act == "relu":
        y = np.maximum(y, np.float32(0))
    elif act != "none":
        y = gelu(y, "tanh" if act == "gelu_tanh" else "none")
    return [y.astype(np.float32, copy=False)]
