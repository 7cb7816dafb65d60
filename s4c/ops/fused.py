"""s4c's own ops: what the fusion passes produce and the backends implement natively.

Their semantics here are the contract between passes and backends; each is checked against the
unfused ONNX graph it replaces by the reference evaluator."""

from __future__ import annotations

import numpy as np

from s4c.ir import TensorType
from s4c.ops import Attr, InferContext, implement, register
from s4c.ops.elementwise import broadcast_shapes
from s4c.ops.nn import gelu, layer_norm, softmax

ACTIVATIONS = ("none", "gelu", "gelu_tanh", "relu")


@register("Linear", attrs={"activation": Attr("str", "none"), "layout": Attr("str", "dense"),
                           # recorded by analyze-sparsity / select-sparse-layout, for reports and readers
                           "sparsity": Attr("strs", None), "layout_costs": Attr("strs", None)}, inputs=(2, 3))
def linear(ctx: InferContext):
    """y = act(x @ weight^T + bias); weight is [out, in] (a constant); `layout` is its storage choice.

    `sparsity` ("density=0.100", "bsr16x1=...") and `layout_costs` ("dense=1.2e-04", ...) record
    why the layout was chosen; they do not change the result."""
    x, w = ctx.type(0), ctx.type(1)
    if w.rank != 2 or x.shape[-1] != w.shape[1]:
        raise ValueError(f"Linear weight {w} does not fit input {x}")
    if ctx.has(2) and ctx.type(2).shape != (w.shape[0],):
        raise ValueError(f"Linear bias {ctx.type(2)} must be [{w.shape[0]}]")
    if ctx.attr("activation") not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}")
    return [TensorType(x.dtype, x.shape[:-1] + (w.shape[0],))]


@implement("Linear")
def _linear(xs, attrs):
    x, w = xs[0], xs[1]
    y = np.matmul(x, w.T.astype(x.dtype, copy=False))
    if len(xs) > 2:
        y = y + xs[2]
    act = attrs["activation"]
    if act == "relu":
        y = np.maximum(y, 0)
    elif act != "none":
        y = gelu(y, "tanh" if act == "gelu_tanh" else "none")
    return [y.astype(x.dtype, copy=False)]


@register("LayerNorm", attrs={"epsilon": Attr("float"), "axis": Attr("int", -1)}, inputs=(2, 3))
def layernorm(ctx: InferContext):
    """(x - mean) / sqrt(var + epsilon) * gamma + beta over the axes from `axis` on."""
    return [ctx.type(0)]


@implement("LayerNorm")
def _layernorm(xs, attrs):
    return [layer_norm(xs[0], xs[1], xs[2] if len(xs) > 2 else None, attrs["axis"], attrs["epsilon"])[0]]


@register("SkipLayerNorm", attrs={"epsilon": Attr("float")}, inputs=(4, 5))
def skip_layernorm(ctx: InferContext):
    """LayerNorm(x + skip (+ bias), gamma, beta) over the last axis: the residual add fused in."""
    if ctx.type(0).shape != ctx.type(1).shape:
        raise ValueError(f"SkipLayerNorm operands differ: {ctx.type(0)} and {ctx.type(1)}")
    return [ctx.type(0)]


@implement("SkipLayerNorm")
def _skip_layernorm(xs, attrs):
    s = xs[0] + xs[1]
    if len(xs) > 4:
        s = s + xs[4]
    return [layer_norm(s, xs[2], xs[3], -1, attrs["epsilon"])[0]]


@register("MultiHeadAttention", attrs={"num_heads": Attr("int"), "scale": Attr("float")}, inputs=(1, 2))
def multi_head_attention(ctx: InferContext):
    """softmax(Q K^T * scale + bias) V per head, from one packed qkv [B, S, 3*H*D] -> [B, S, H*D].

    The optional second operand is the additive attention bias (the mask already turned into
    0 / large-negative values), broadcastable to [B, H, S, S]. A query row whose biased scores are
    all -inf (fully masked by a -inf mask) attends to nothing and gives zeros, not NaN: what the
    C kernel computes, and what the exporters' SDPA lowering spells with its IsNaN guard."""
    qkv = ctx.type(0)
    if qkv.rank != 3 or qkv.shape[2] % (3 * ctx.attr("num_heads")):
        raise ValueError(f"packed qkv {qkv} is not [B, S, 3*heads*head_dim] for {ctx.attr('num_heads')} heads")
    b, s, three_hd = qkv.shape
    if ctx.has(1):
        broadcast_shapes(ctx.type(1).shape, (b, ctx.attr("num_heads"), s, s))
    return [TensorType(qkv.dtype, (b, s, three_hd // 3))]


@implement("MultiHeadAttention")
def _multi_head_attention(xs, attrs):
    qkv = xs[0]
    b, s, three_hd = qkv.shape
    h = attrs["num_heads"]
    d = three_hd // (3 * h)
    q, k, v = (qkv[:, :, i * h * d:(i + 1) * h * d].reshape(b, s, h, d).transpose(0, 2, 1, 3) for i in range(3))
    scores = np.matmul(q, k.transpose(0, 1, 3, 2)) * np.float32(attrs["scale"])
    if len(xs) > 1:
        scores = scores + xs[1]
    with np.errstate(invalid="ignore"):
        probs = softmax(scores, -1)
    masked = np.all(scores == -np.inf, axis=-1, keepdims=True)
    if masked.any():
        probs = np.where(masked, np.zeros((), probs.dtype), probs)
    out = np.matmul(probs, v)
    return [out.transpose(0, 2, 1, 3).reshape(b, s, h * d).astype(qkv.dtype)]


@register("Embedding", attrs={"epsilon": Attr("float")}, inputs=(6, 8))
def embedding(ctx: InferContext):
    """LayerNorm(word[ids] + position[position_ids] (+ token_type[token_type_ids])).

    Operands: ids, word_table, position_ids, position_table, gamma, beta[, token_type_ids, type_table]."""
    ids, word = ctx.type(0), ctx.type(1)
    return [TensorType(word.dtype, ids.shape + (word.shape[1],))]


@implement("Embedding")
def _embedding(xs, attrs):
    ids, word, pos_ids, pos, gamma, beta = xs[:6]
    x = word[ids] + pos[pos_ids]
    if len(xs) > 6:
        x = x + xs[7][xs[6]]
    return [layer_norm(x, gamma, beta, -1, attrs["epsilon"])[0]]


@register("DequantizeWeight", attrs={"axis": Attr("int", 0)}, inputs=(2, 2))
def dequantize_weight(ctx: InferContext):
    """weight_i8 * scale: an int8 weight (a constant) with a float scale, symmetric (no zero point).

    `scale` is a scalar (per tensor) or 1-D with one entry per slice along `axis` (per channel).
    The result has the weight's shape and the scale's dtype. Backends keep the int8 values and
    apply the scale themselves; the reference evaluator materialises the float weight."""
    w, scale = ctx.type(0), ctx.type(1)
    if w.dtype != "i8":
        raise TypeError(f"DequantizeWeight weight must be i8, not {w.dtype}")
    if scale.dtype not in ("f32", "f16", "f64"):
        raise TypeError(f"DequantizeWeight scale must be a float, not {scale.dtype}")
    if scale.rank == 1:
        axis = ctx.attr("axis")
        if not -w.rank <= axis < w.rank:
            raise ValueError(f"axis {axis} out of range for weight {w}")
        if scale.shape[0] != w.shape[axis % w.rank]:
            raise ValueError(f"scale {scale} does not match weight {w} along axis {axis}")
    elif scale.rank != 0:
        raise ValueError(f"scale {scale} must be a scalar or 1-D")
    return [TensorType(scale.dtype, w.shape)]


@implement("DequantizeWeight")
def _dequantize_weight(xs, attrs):
    w, scale = xs
    if scale.ndim == 1:
        shape = [1] * w.ndim
        shape[attrs["axis"] % w.ndim] = -1
        scale = scale.reshape(shape)
    return [(w.astype(scale.dtype) * scale).astype(scale.dtype, copy=False)]
