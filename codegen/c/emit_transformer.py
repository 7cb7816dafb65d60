"""Emitters for the transformer-block ops: feature-major library kernels for f32, generated loops
otherwise.

    Gelu                     s4c_gelu_{erf,tanh}; a generated loop off f32
    LayerNorm                s4c_layernorm; off f32 the generic loop LayerNormalization uses
    SkipLayerNorm            s4c_skip_layernorm (f32 only)
    LayerNormalization       a generated loop (with the optional mean / inv-std-dev results)
    MultiHeadAttention       s4c_attention_qkv with a per-key mask, or s4cx_attention_bias when the
                             bias varies by query or head (uniform_along decides)
    Embedding                s4c_embedding (ids out of range fail the step)
"""

from __future__ import annotations

import numpy as np

from s4c.codegen.c.cnames import COMPUTE, float_literal, int_literal
from s4c.codegen.c.emit_common import (as_dtype, attrs, c_int, elementwise, emits, expand_to, feature_vector,
                                       fsuffix, load, size_of, store, unsupported)
from s4c.codegen.c.loops import Access, broadcast_strides, nest, render
from s4c.codegen.c.program import CProgram, Tensor
from s4c.ir import Op, Value
from s4c.ops.elementwise import BINARY, UNARY

# attention kernel scratch: room for this many threads (the kernel uses at most as many as fit)
ATTENTION_THREADS = 16
# elementwise ops whose result at an index depends only on the operands at that index
_POINTWISE = set(UNARY) | set(BINARY) | {"Where", "Cast", "Clip", "Max", "Min", "Sum", "Expand", "Identity"}


@emits("Gelu")
def _emit_gelu(lw: CProgram, op: Op) -> None:
    x = lw.home(op.inputs[0])
    tanh = attrs(op)["approximate"] == "tanh"
    if x.dtype == "f32":
        y = lw.out(op.output, x.fm, [x])
        if y.size:
            fn = "s4c_gelu_tanh" if tanh else "s4c_gelu_erf"
            lw.step("Gelu", [x], [y], f"{fn}({y.size}, {x.name}, {y.name})", kernel=fn)
        return
    f = fsuffix(x.dtype)
    ct = COMPUTE[x.dtype]
    if tanh:
        expr = lambda xs: (f"({ct})0.5 * {xs[0]} * (({ct})1 + tanh{f}(({ct})0.79788456080286535588 * "  # noqa: E731
                           f"({xs[0]} + ({ct})0.044715 * {xs[0]} * {xs[0]} * {xs[0]})))")
    else:
        expr = lambda xs: f"({ct})0.5 * {xs[0]} * (({ct})1 + erf{f}({xs[0]} * ({ct})0.70710678118654752440))"  # noqa: E731
    elementwise(lw, op, [x], op.output, expr)


@emits("LayerNorm")
def _emit_layernorm(lw: CProgram, op: Op) -> None:
    a = attrs(op)
    xv = op.inputs[0]
    axis = a["axis"] % xv.type.rank
    if xv.dtype != "f32":
        _layernorm_generic(lw, op, xv, op.inputs[1], op.inputs[2] if len(op.inputs) > 2 else None,
                           axis, a["epsilon"], op.outputs)
        return
    x = lw.get(xv, axis)
    g = feature_vector(lw, op.inputs[1], xv.shape[axis:], "gamma")
    b = feature_vector(lw, op.inputs[2], xv.shape[axis:], "beta") if len(op.inputs) > 2 else None
    y = lw.out(op.output, axis, [x])
    if y.size == 0:
        return
    ins = [x, g] + ([b] if b is not None else [])
    lw.step("LayerNorm", ins, [y], f"s4c_layernorm({c_int(x.F, 'features', op)}, {c_int(x.T, 'tokens', op)}, "
            f"{x.name}, {g.name}, {b.name if b is not None else 'NULL'}, {float_literal(a['epsilon'])}, {y.name})",
            kernel="s4c_layernorm")


@emits("SkipLayerNorm")
def _emit_skip_layernorm(lw: CProgram, op: Op) -> None:
    a = attrs(op)
    xv = op.inputs[0]
    if xv.dtype != "f32":
        raise unsupported(op, f"SkipLayerNorm on {xv.dtype} (the kernel is f32)")
    k = xv.type.rank - 1
    x, skip = lw.get(xv, k), lw.get(op.inputs[1], k)
    g = feature_vector(lw, op.inputs[2], xv.shape[k:], "gamma")
    b = feature_vector(lw, op.inputs[3], xv.shape[k:], "beta")
    bias = feature_vector(lw, op.inputs[4], xv.shape[k:], "bias") if len(op.inputs) > 4 else None
    y = lw.out(op.output, k, [x, skip])
    if y.size == 0:
        return
    ins = [x, skip, g, b] + ([bias] if bias is not None else [])
    lw.step("SkipLayerNorm", ins, [y],
            f"s4c_skip_layernorm({c_int(x.F, 'features', op)}, {c_int(x.T, 'tokens', op)}, {x.name}, {skip.name}, "
            f"{bias.name if bias is not None else 'NULL'}, {g.name}, {b.name}, {float_literal(a['epsilon'])}, "
            f"{y.name}, NULL)", kernel="s4c_skip_layernorm")


def _layernorm_generic(lw: CProgram, op: Op, x_value: Value, scale: Value, bias: Value | None, axis: int,
                       eps: float, results: list[Value]) -> None:
    x = lw.get(x_value, None)
    axis = axis % x.rank
    F = size_of(x.shape[axis:])
    T = size_of(x.shape[:axis])
    g = expand_to(lw, scale, x.shape[axis:], "scale")
    ins = [x, g]
    if bias is not None:
        ins.append(expand_to(lw, bias, x.shape[axis:], "bias"))
    outs = [lw.out(results[0], None, [x])] + [lw.out(v, None, [x]) for v in results[1:]]
    if x.size == 0:
        return
    lx = load(lw, x, "xr[f]")
    lg = load(lw, g, "x1[f]")
    lb = f" + (double){load(lw, ins[2], 'x2[f]')}" if bias is not None else ""
    body = [
        f"    for (ptrdiff_t t = 0; t < {int_literal(T)}; t++) {{",
        f"        const {x.ctype} *xr = x0 + t * {int_literal(F)};",
        "        double mean = 0.0, var = 0.0, inv;",
        f"        for (ptrdiff_t f = 0; f < {int_literal(F)}; f++) mean += (double){lx};",
        f"        mean /= {float(F)!r};",
        f"        for (ptrdiff_t f = 0; f < {int_literal(F)}; f++) {{ double d = (double){lx} - mean; var += d * d; }}",
        f"        var /= {float(F)!r};",
        f"        inv = 1.0 / sqrt(var + {float(np.float32(eps))!r});",
        f"        for (ptrdiff_t f = 0; f < {int_literal(F)}; f++)",
        f"            y0[t * {int_literal(F)} + f] = {store(lw, outs[0].dtype, f'((double){lx} - mean) * inv * (double){lg}{lb}')};",
    ]
    if len(outs) > 1:
        body.append(f"        y1[t] = {store(lw, outs[1].dtype, 'mean')};")
    if len(outs) > 2:
        body.append(f"        y2[t] = {store(lw, outs[2].dtype, 'inv')};")
    body.append("    }")
    lw.generic(op.op, ins, outs, body)


@emits("LayerNormalization")
def _emit_layer_normalization(lw: CProgram, op: Op) -> None:
    a = attrs(op)
    _layernorm_generic(lw, op, op.inputs[0], op.inputs[1], op.inputs[2] if len(op.inputs) > 2 else None,
                       a["axis"], a["epsilon"], op.outputs)


def uniform_along(lw: CProgram, v: Value, axis_from_right: int) -> bool:
    """True when `v`'s values do not change along the axis `axis_from_right` (-1 = last) — size 1
    there, a constant equal along it, or pointwise ops of such values."""
    key = ("uniform", id(v), axis_from_right)
    if key in lw.memo:
        return lw.memo[key]
    r = v.type.rank
    d = r + axis_from_right
    result = False
    if d < 0 or v.shape[d] == 1:
        result = True
    elif v.is_constant:
        data = np.asarray(v.data)
        result = bool(np.array_equal(data, np.broadcast_to(np.take(data, [0], axis=d), data.shape)))
    elif v.producer is not None and v.producer.op in _POINTWISE:
        result = all(uniform_along(lw, u, axis_from_right) for u in v.producer.inputs)
    lw.memo[key] = result
    return result


def attention_scratch_floats(seq: int) -> int:
    """Per-thread scratch of s4c_attention (codegen/c/kernels/README.md)."""
    tile = min(seq, 64)
    return seq * tile + seq + 2 * tile


@emits("MultiHeadAttention")
def _emit_attention(lw: CProgram, op: Op) -> None:
    a = attrs(op)
    qv = op.inputs[0]
    if qv.dtype != "f32":
        raise unsupported(op, f"MultiHeadAttention on {qv.dtype} (the kernel is f32)")
    B, S, three_hd = qv.shape
    H = a["num_heads"]
    D = three_hd // (3 * H)
    qkv = lw.get(qv, 2)
    ins = [qkv]
    mask = None
    general = None
    if len(op.inputs) > 1:
        bv = op.inputs[1]
        bias = lw.home(bv)
        if bias.dtype != "f32":
            raise unsupported(op, "the attention bias must be f32")
        strides = broadcast_strides(bias.shape, bias.strides, (B, H, S, S))
        if uniform_along(lw, bv, -3) and uniform_along(lw, bv, -2):
            # one additive value per (sentence, key): the fused kernel's mask[batch][seq]
            if bias.size == B * S and (B == 1 or strides[0] == S) and strides[3] == 1:
                mask = bias
            elif ("mask", id(bv), B, S) in lw.memo:
                mask = lw.memo[("mask", id(bv), B, S)]
            else:
                mask = lw.temp("f32", (B, S), None, [bias], f"{bv.name} (per key)")
                n = nest((B, S), [Access("y0", mask.strides), Access("x0", [strides[0], strides[3]])])
                lw.generic("attention_mask", [bias], [mask], render(n, [f"y0[{n.index[0]}] = x0[{n.index[1]}];"]),
                           note="additive bias -> mask[batch][seq]")
                lw.memo[("mask", id(bv), B, S)] = mask
            ins.append(mask)
        else:
            general = (bias, strides)
            ins.append(bias)
    y = lw.out(op.output, 2, [qkv])
    if y.size == 0:
        return
    scale = float_literal(a["scale"])
    if general is not None:
        lw.uses_extra = True
        bias, st = general
        lw.step("MultiHeadAttention", ins, [y],
                f"s4cx_attention_bias({B}, {S}, {H}, {D}, {scale}, {qkv.name}, {bias.name}, "
                f"{st[0]}, {st[1]}, {st[2]}, {st[3]}, {y.name})", kernel="s4cx_attention_bias",
                note="generic: the bias varies by query or head")
        return
    floats = attention_scratch_floats(S) * ATTENTION_THREADS
    scratch = lw.temp("f32", (floats,), None, [qkv], "attention scratch")
    lw.step("MultiHeadAttention", ins, [y],
            f"s4c_attention_qkv({B}, {S}, {H}, {D}, {scale}, {qkv.name}, {mask.name if mask is not None else 'NULL'}, "
            f"{y.name}, {scratch.name}, {floats})", kernel="s4c_attention_qkv", fails=True, scratch=[scratch])


@emits("Embedding")
def _emit_embedding(lw: CProgram, op: Op) -> None:
    a = attrs(op)
    ids_v, word_v, pos_ids_v, pos_v, gamma_v, beta_v = op.inputs[:6]
    for v in (word_v, pos_v, gamma_v, beta_v) + tuple(op.inputs[7:8]):
        if v.dtype != "f32":
            raise unsupported(op, f"embedding table {v.name!r} must be f32")
    shape = ids_v.shape
    seq = shape[-1] if shape else 1
    batch = size_of(shape[:-1]) if shape else 1
    hidden = word_v.shape[1]

    def ids(v: Value, what: str) -> Tensor | None:
        if v.is_constant and what == "positions":
            data = np.broadcast_to(np.asarray(v.data), shape)
            if np.array_equal(data, np.broadcast_to(np.arange(seq), shape)):
                return None  # the kernel's default: position = index in the sentence
        t = expand_to(lw, v, shape, what)
        return as_dtype(lw, t, "i64", what)

    ids_t = ids(ids_v, "ids")
    pos_ids = ids(pos_ids_v, "positions")
    tt = ids(op.inputs[6], "token_types") if len(op.inputs) > 6 else None
    word, pos = lw.get(word_v, None), lw.get(pos_v, None)
    types = lw.get(op.inputs[7], None) if len(op.inputs) > 7 else None
    gamma = feature_vector(lw, gamma_v, (hidden,), "gamma")
    beta = feature_vector(lw, beta_v, (hidden,), "beta")
    ins = [t for t in (ids_t, tt, pos_ids, word, pos, types, gamma, beta) if t is not None]
    y = lw.out(op.output, len(shape), [ids_t])
    if y.size == 0:
        return
    nm = lambda t: t.name if t is not None else "NULL"  # noqa: E731
    lw.step("Embedding", ins, [y],
            f"s4c_embedding({batch}, {seq}, {hidden}, {ids_t.name}, {nm(tt)}, {nm(pos_ids)}, {word.name}, "
            f"{word_v.shape[0]}, {pos.name}, {pos_v.shape[0]}, {nm(types)}, "
            f"{op.inputs[7].shape[0] if types is not None else 0}, {gamma.name}, {beta.name}, "
            f"{float_literal(a['epsilon'])}, {y.name})", kernel="s4c_embedding", fails=True,
            note="id out of range -> error")
