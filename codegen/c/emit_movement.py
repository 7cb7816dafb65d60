"""Emitters for data movement (token-major copies) and compile-time values.

    aliases            Reshape, Squeeze, Unsqueeze, Flatten (no code: a view of the operand)
    strided copies     Transpose, Slice, Split, Concat, Tile, Trilu
    indexed copies     Gather, GatherElements, GatherND (an index out of range fails the step)
    compile-time       Shape, Size, Range (stored as constants), ConstantOfShape (filled at init)
"""

from __future__ import annotations

import numpy as np

from s4c import ops as registry
from s4c.codegen.c.cnames import float_literal, int_literal
from s4c.codegen.c.emit_common import attrs, elementwise, emits, lit, product_sum, size_of, store, unsupported
from s4c.codegen.c.loops import Access, nest, render, row_major_strides
from s4c.codegen.c.program import CProgram
from s4c.ir import Op, numpy_dtype
from s4c.ops.shape_ops import slice_params


@emits("Reshape", "Squeeze", "Unsqueeze", "Flatten")
def _emit_reshape(lw: CProgram, op: Op) -> None:
    x = lw.get(op.inputs[0], None)
    lw.set(op.output, lw.alias(x, op.output.shape, None, op.output.name))


@emits("Transpose")
def _emit_transpose(lw: CProgram, op: Op) -> None:
    x = lw.home(op.inputs[0])
    perm = attrs(op).get("perm") or list(range(x.rank))[::-1]
    strides = x.strides
    elementwise(lw, op, [x], op.output, None, accesses=[Access("x0", [strides[p] for p in perm])], fm=None)


@emits("Slice")
def _emit_slice(lw: CProgram, op: Op) -> None:
    a = attrs(op)
    x = lw.home(op.inputs[0])
    sl = slice_params(x.shape, a["starts"], a["ends"], a.get("axes"), a.get("steps"))
    base, strides = 0, []
    for s, n, st in zip(sl, x.shape, x.strides):
        start, _, step = s.indices(n)
        base += start * st if len(range(*s.indices(n))) else 0
        strides.append(st * step)
    elementwise(lw, op, [x], op.output, None, accesses=[Access("x0", strides, base)], fm=None)


@emits("Split")
def _emit_split(lw: CProgram, op: Op) -> None:
    a = attrs(op)
    x = lw.home(op.inputs[0])
    axis = a["axis"] % x.rank
    outs = [lw.out(v, x.fm if x.fm is not None and x.fm <= axis else None, [x]) for v in op.outputs]
    body: list[str] = []
    start = 0
    for j, y in enumerate(outs):
        if y.size:
            n = nest(y.shape, [Access(f"y{j}", y.strides), Access("x0", x.strides, start * x.strides[axis])],
                     parallel=True)
            body += render(n, [f"y{j}[{n.index[0]}] = x0[{n.index[1]}];"])
        start += y.shape[axis]
    if body:
        lw.generic(op.op, [x], outs, body)


@emits("Concat")
def _emit_concat(lw: CProgram, op: Op) -> None:
    a = attrs(op)
    ins = [lw.home(v) for v in op.inputs]
    axis = a["axis"] % op.output.type.rank
    fm = ins[0].fm if all(t.fm == ins[0].fm for t in ins) else None
    y = lw.out(op.output, fm, ins)
    if y.size == 0:
        return
    body: list[str] = []
    offset = 0
    for i, t in enumerate(ins):
        if t.size:
            n = nest(t.shape, [Access("y0", y.strides, offset * y.strides[axis]), Access(f"x{i}", t.strides)],
                     parallel=True)
            body += render(n, [f"y0[{n.index[0]}] = x{i}[{n.index[1]}];"])
        offset += t.shape[axis]
    lw.generic(op.op, ins, [y], body)


@emits("Tile")
def _emit_tile(lw: CProgram, op: Op) -> None:
    x = lw.home(op.inputs[0])
    acc = Access("x0", list(x.strides), mod=[int(d) for d in x.shape])
    elementwise(lw, op, [x], op.output, None, accesses=[acc], fm=None)


@emits("Trilu")
def _emit_trilu(lw: CProgram, op: Op) -> None:
    a = attrs(op)
    x = lw.home(op.inputs[0])
    r = x.rank
    zero = lit(0, x.dtype) if x.dtype != "f16" else "0.0f"
    cmp = ">=" if a["upper"] else "<="

    def body(xs, n):
        row, col = n.dim_var[r - 2], n.dim_var[r - 1]
        return f"({col} - {row} {cmp} {int_literal(a['k'])}) ? {xs[0]} : {zero}"

    elementwise(lw, op, [x], op.output, None, fm=None, keep=(r - 2, r - 1), body_fn=body)


@emits("Gather")
def _emit_gather(lw: CProgram, op: Op) -> None:
    a = attrs(op)
    data = lw.get(op.inputs[0], None)
    idx = lw.get(op.inputs[1], None)
    axis = a["axis"] % data.rank
    y = lw.out(op.output, None, [data, idx])
    if y.size == 0:
        return
    pre = size_of(data.shape[:axis])
    n = data.shape[axis]
    post = size_of(data.shape[axis + 1:])
    nidx = idx.size
    ind = "    "
    body = []
    if pre > 1:
        body.append(f"    for (ptrdiff_t p = 0; p < {int_literal(pre)}; p++)")
        ind = "        "
    dst = product_sum([("p", nidx * post), ("j", post)] if pre > 1 else [("j", post)])
    src = product_sum([("p", n * post), ("k", post)] if pre > 1 else [("k", post)])
    copy = (f"y0[{dst}] = x0[{src}];" if post == 1 else
            f"memcpy(y0 + {dst}, x0 + {src}, {int_literal(post)} * sizeof({data.ctype}));")
    body += [
        f"{ind}for (ptrdiff_t j = 0; j < {int_literal(nidx)}; j++) {{",
        f"{ind}    int64_t k = (int64_t)x1[j];",
        f"{ind}    if (k < 0) k += {int_literal(n)};",
        f"{ind}    if (k < 0 || k >= {int_literal(n)}) return 1;",
        f"{ind}    {copy}",
        f"{ind}}}",
    ]
    lw.generic(op.op, [data, idx], [y], body, fails=True, note="index out of range -> error")


@emits("GatherElements")
def _emit_gather_elements(lw: CProgram, op: Op) -> None:
    """y[..j..] = x0[..x1[..j..]..] along `axis`: one loop nest over the indices' shape; off the
    axis the data offset steps with the loops, on it the (normalised) index picks the element."""
    a = attrs(op)
    data = lw.get(op.inputs[0], None)
    idx = lw.get(op.inputs[1], None)
    axis = a["axis"] % data.rank
    y = lw.out(op.output, None, [data, idx])
    if y.size == 0:
        return
    n = data.shape[axis]
    dstr = list(data.strides)
    step = dstr[axis]
    dstr[axis] = 0
    loops = nest(idx.shape, [Access("y0", y.strides), Access("x1", idx.strides), Access("x0", dstr)])
    body = render(loops, [
        f"int64_t k = (int64_t)x1[{loops.index[1]}];",
        f"if (k < 0) k += {int_literal(n)};",
        f"if (k < 0 || k >= {int_literal(n)}) return 1;",
        f"y0[{loops.index[0]}] = x0[{loops.index[2]} + (ptrdiff_t)k * {int_literal(step)}];",
    ])
    lw.generic(op.op, [data, idx], [y], body, fails=True, note="index out of range -> error")


@emits("GatherND")
def _emit_gather_nd(lw: CProgram, op: Op) -> None:
    a = attrs(op)
    data = lw.get(op.inputs[0], None)
    idx = lw.get(op.inputs[1], None)
    y = lw.out(op.output, None, [data, idx])
    if y.size == 0:
        return
    b = a["batch_dims"]
    k = idx.shape[-1]
    nb = size_of(data.shape[:b])
    ni = size_of(idx.shape[b:-1])
    slice_n = size_of(data.shape[b + k:])
    batch_stride = size_of(data.shape[b:])
    dstr = row_major_strides(data.shape)
    body = [f"    for (ptrdiff_t n = 0; n < {int_literal(nb)}; n++)",
            f"        for (ptrdiff_t j = 0; j < {int_literal(ni)}; j++) {{",
            f"            const {idx.ctype} *ix = x1 + (n * {int_literal(ni)} + j) * {int_literal(k)};",
            "            ptrdiff_t off = 0;",
            "            int64_t v;"]
    for m in range(k):
        dim = data.shape[b + m]
        body += [f"            v = (int64_t)ix[{m}];",
                 f"            if (v < 0) v += {int_literal(dim)};",
                 f"            if (v < 0 || v >= {int_literal(dim)}) return 1;",
                 f"            off += (ptrdiff_t)v * {int_literal(dstr[b + m])};"]
    body += [f"            memcpy(y0 + (n * {int_literal(ni)} + j) * {int_literal(slice_n)}, "
             f"x0 + n * {int_literal(batch_stride)} + off, {int_literal(slice_n)} * sizeof({data.ctype}));",
             "        }"]
    lw.generic(op.op, [data, idx], [y], body, fails=True, note="index out of range -> error")


# -- compile-time values ----------------------------------------------------------------------------

@emits("Shape", "Size", "Range")
def _emit_constant_result(lw: CProgram, op: Op) -> None:
    """Results known at compile time (shapes are static): stored as constants."""
    if op.op == "Range" and not all(v.is_constant for v in op.inputs):
        raise unsupported(op, "Range needs constant operands")
    args = [np.asarray(v.data) if v.is_constant else np.zeros(v.shape, numpy_dtype(v.dtype)) for v in op.inputs]
    data = np.asarray(registry.REGISTRY[op.op].run(args, op.attrs)[0], dtype=numpy_dtype(op.output.dtype))
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    t = lw.weight(np.ascontiguousarray(data), op.output.name, shape=op.output.shape)
    t.dtype = op.output.dtype
    lw.set(op.output, t)


@emits("ConstantOfShape")
def _emit_constant_of_shape(lw: CProgram, op: Op) -> None:
    value = op.attrs.get("value")
    value = np.zeros((1,), np.float32) if value is None else np.asarray(value)
    y = lw.out(op.output, None, [])
    if y.size == 0:
        return
    v = value.reshape(-1)[0]
    lit_v = store(lw, y.dtype, lit(v, y.dtype) if y.dtype != "f16" else float_literal(float(v), "double"))
    body = [f"    for (ptrdiff_t i = 0; i < {int_literal(y.size)}; i++) y0[i] = {lit_v};"]
    lw.generic(op.op, [], [y], body)
