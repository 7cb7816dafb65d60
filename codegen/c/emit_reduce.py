"""Emitters for reductions and matrix products outside the fused kernels.

    Reduce{Mean,Sum,Max,Min,Prod,L2}, Softmax, LogSoftmax    generated loops (double accumulators)
    CumSum    a generated scan along the axis (the dtype's own accumulator, as ONNX / numpy)
    MatMul    batched; f32 products of some size through s4c_linear_dense, else a generated loop
    Gemm      a generated loop (transA / transB, alpha, beta, a broadcast C)
"""

from __future__ import annotations

import numpy as np

from s4c.codegen.c import cnames
from s4c.codegen.c.cnames import COMPUTE, float_literal
from s4c.codegen.c.emit_common import attrs, c_int, emits, fsuffix, load, plus, product_sum, size_of, store
from s4c.codegen.c.loops import Access, broadcast_strides, nest, render, row_major_strides
from s4c.codegen.c.program import CProgram
from s4c.ir import Op
from s4c.ops.nn import _reduce_axes


def _minmax_init(dtype: str, is_max: bool) -> str:
    if dtype in cnames.FLOATS:
        return ("-" if is_max else "") + ("INFINITY" if COMPUTE[dtype] == "float" else "(double)INFINITY")
    if dtype == "bool":
        return "0" if is_max else "1"
    bits = cnames.ITEMSIZE[dtype] * 8
    if dtype.startswith("u"):
        return "0" if is_max else f"UINT{bits}_MAX"
    return f"INT{bits}_MIN" if is_max else f"INT{bits}_MAX"


@emits("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2")
def _emit_reduce(lw: CProgram, op: Op) -> None:
    a = attrs(op)
    x = lw.home(op.inputs[0])
    rank = x.rank
    axes = _reduce_axes(rank, a)
    if axes == () and op.op != "ReduceL2":  # no reduction (ReduceL2 still takes sqrt(x^2): the loop below)
        lw.set(op.output, lw.alias(x, x.shape, x.fm, op.output.name))
        return
    axes = tuple(range(rank)) if axes is None else axes
    y = lw.out(op.output, None, [x])
    if y.size == 0:
        return
    # output strides over the input's dims (0 on reduced dims)
    ystr, j = [0] * rank, 0
    ys = y.strides
    for d in range(rank):
        if d in axes:
            if a["keepdims"]:
                j += 1
            continue
        ystr[d] = ys[j]
        j += 1
    outer_shape = [1 if d in axes else x.shape[d] for d in range(rank)]
    inner_shape = [x.shape[d] if d in axes else 1 for d in range(rank)]
    count = size_of(inner_shape)
    outer = nest(outer_shape, [Access("y0", ystr), Access("x0", x.strides)], parallel=True)
    dtype = x.dtype
    isf = dtype in cnames.FLOATS
    name = op.op
    int_acc = "uint64_t" if dtype.startswith("u") else "int64_t"
    if name in ("ReduceSum", "ReduceMean"):
        acc_t = "double" if isf else int_acc
        init, comb = "0", lambda acc, v: f"{acc} += ({acc_t}){v};"
    elif name == "ReduceL2":  # sqrt(sum(x^2)) in double; integers square exactly in 64 bits
        acc_t = "double" if isf else int_acc
        init, comb = "0", lambda acc, v: f"{acc} += ({acc_t}){v} * ({acc_t}){v};"
    elif name == "ReduceProd":
        acc_t = "double" if isf else int_acc
        init, comb = "1", lambda acc, v: f"{acc} *= ({acc_t}){v};"
    else:
        is_max = name == "ReduceMax"
        acc_t = COMPUTE[dtype]
        init = _minmax_init(dtype, is_max)
        if isf:
            lw.uses_extra = True
            fn = ("s4cx_maxf" if is_max else "s4cx_minf") if acc_t == "float" else ("s4cx_max" if is_max else "s4cx_min")
            comb = lambda acc, v: f"{acc} = {fn}({acc}, {v});"  # noqa: E731
        else:
            cmp = ">" if is_max else "<"
            comb = lambda acc, v: f"if ({v} {cmp} {acc}) {acc} = {v};"  # noqa: E731
    inner = nest(inner_shape, [Access("x0", x.strides)], indent=0, var="r")
    v = load(lw, x, f"x0[{plus(outer.index[1], inner.index[0])}]")
    result = "acc"
    if name == "ReduceMean":
        result = f"acc / {float(count)!r}" if count else "NAN"
    if name == "ReduceL2":
        result = "sqrt((double)acc)"
    if not isf and name in ("ReduceSum", "ReduceMean", "ReduceProd", "ReduceL2"):
        result = f"({COMPUTE[dtype]})({result})" if name != "ReduceMean" else result
    body = [f"{acc_t} acc = {init};"] + render(inner, [comb("acc", v)]) + [f"y0[{outer.index[0]}] = {store(lw, y.dtype, result)};"]
    lines = render(outer, body)
    lw.generic(op.op, [x], [y], lines)


@emits("CumSum")
def _emit_cumsum(lw: CProgram, op: Op) -> None:
    a = attrs(op)
    x = lw.home(op.inputs[0])
    y = lw.out(op.output, None, [x])
    if y.size == 0:
        return
    axis = a["axis"] % x.rank
    n = x.shape[axis]
    outer_shape = [1 if d == axis else x.shape[d] for d in range(x.rank)]
    outer = nest(outer_shape, [Access("y0", y.strides), Access("x0", x.strides)], parallel=True)
    isf = x.dtype in cnames.FLOATS
    # floats add in the dtype's compute type, one after the other (numpy's / onnxruntime's order);
    # integers in 64 bits, unsigned so that an overflow wraps as the dtype's own addition does
    acc_t = COMPUTE[x.dtype] if isf else "uint64_t"
    k = f"({n - 1} - k)" if a["reverse"] else "k"
    xi = load(lw, x, f"x0[{plus(outer.index[1], product_sum([(k, x.strides[axis])]))}]")
    yi = f"y0[{plus(outer.index[0], product_sum([(k, y.strides[axis])]))}]"
    result = "acc" if isf else f"({COMPUTE[x.dtype]})acc"
    if a["exclusive"]:
        step = f"{{ {acc_t} v = ({acc_t}){xi}; {yi} = {store(lw, y.dtype, result)}; acc += v; }}"
    else:
        step = f"{{ acc += ({acc_t}){xi}; {yi} = {store(lw, y.dtype, result)}; }}"
    body = [f"{acc_t} acc = 0;", f"for (ptrdiff_t k = 0; k < {n}; k++) {step}"]
    lw.generic(op.op, [x], [y], render(outer, body))


@emits("Softmax", "LogSoftmax")
def _emit_softmax(lw: CProgram, op: Op) -> None:
    a = attrs(op)
    x = lw.home(op.inputs[0])
    y = lw.out(op.output, None, [x])
    if y.size == 0:
        return
    axis = a["axis"] % x.rank
    n = x.shape[axis]
    outer_shape = [1 if d == axis else x.shape[d] for d in range(x.rank)]
    outer = nest(outer_shape, [Access("y0", y.strides), Access("x0", x.strides)], parallel=True)
    ct = COMPUTE[x.dtype]
    f = fsuffix(x.dtype)
    sx, sy = x.strides[axis], y.strides[axis]
    xi = load(lw, x, f"x0[{plus(outer.index[1], product_sum([('k', sx)]))}]")
    x0 = load(lw, x, f"x0[{outer.index[1]}]")
    if op.op == "Softmax":
        final = f"exp{f}({xi} - m) / ({ct})s"
    else:
        final = f"({xi} - m) - ({ct})log(s)"
    body = [f"{ct} m = {x0};",
            "double s = 0.0;",
            f"for (ptrdiff_t k = 1; k < {n}; k++) {{ {ct} v = {xi}; if (v > m || v != v) m = v; }}",
            f"for (ptrdiff_t k = 0; k < {n}; k++) s += (double)exp{f}({xi} - m);",
            f"for (ptrdiff_t k = 0; k < {n}; k++) y0[{plus(outer.index[0], product_sum([('k', sy)]))}] = "
            f"{store(lw, y.dtype, final)};"]
    lw.generic(op.op, [x], [y], render(outer, body))


@emits("MatMul")
def _emit_matmul(lw: CProgram, op: Op) -> None:
    av, bv = op.inputs
    a_t, b_t = lw.get(av, None), lw.get(bv, None)
    a_shape = (1,) + av.shape if av.type.rank == 1 else av.shape
    b_shape = bv.shape + (1,) if bv.type.rank == 1 else bv.shape
    M, K = a_shape[-2], a_shape[-1]
    N = b_shape[-1]
    y = lw.out(op.output, None, [a_t, b_t])
    if y.size == 0:
        return
    batch = tuple(np.broadcast_shapes(a_shape[:-2], b_shape[:-2]))
    sa = broadcast_strides(a_shape[:-2], [s * M * K for s in row_major_strides(a_shape[:-2])], batch)
    sb = broadcast_strides(b_shape[:-2], [s * K * N for s in row_major_strides(b_shape[:-2])], batch)
    sy = [s * M * N for s in row_major_strides(batch)]
    outer = nest(batch, [Access("y0", sy), Access("x0", sa), Access("x1", sb)], var="b")
    if K == 0:
        lw.generic(op.op, [a_t, b_t], [y], [f"    memset(y0, 0, {y.nbytes});", "    (void)x0; (void)x1;"])
        return
    if av.dtype == "f32" and M * N * K >= 64:
        call = (f"if (s4c_linear_dense({c_int(M, 'rows', op)}, {c_int(K, 'inner dim', op)}, {c_int(N, 'cols', op)}, "
                f"x0 + {outer.index[1]}, x1 + {outer.index[2]}, NULL, S4C_ACT_NONE, NULL, y0 + {outer.index[0]}) "
                f"!= S4C_OK) return 1;")
        lw.generic(op.op, [a_t, b_t], [y], render(outer, [call]), fails=True,
                   note="row-major product through s4c_linear_dense")
        return
    isf = av.dtype in cnames.FLOATS
    acc_t = "double" if isf else "uint64_t"
    la = load(lw, a_t, f"x0[{outer.index[1]} + i * {K} + k]")
    lb = load(lw, b_t, f"x1[{outer.index[2]} + k * {N} + j]")
    res = "acc" if isf else f"({COMPUTE[av.dtype]})acc"
    body = [f"for (ptrdiff_t i = 0; i < {M}; i++)",
            f"    for (ptrdiff_t j = 0; j < {N}; j++) {{",
            f"        {acc_t} acc = 0;",
            f"        for (ptrdiff_t k = 0; k < {K}; k++) acc += ({acc_t}){la} * ({acc_t}){lb};",
            f"        y0[{outer.index[0]} + i * {N} + j] = {store(lw, y.dtype, res)};",
            "    }"]
    lw.generic(op.op, [a_t, b_t], [y], render(outer, body))


@emits("Gemm")
def _emit_gemm(lw: CProgram, op: Op) -> None:
    a = attrs(op)
    A, B = lw.get(op.inputs[0], None), lw.get(op.inputs[1], None)
    ins = [A, B]
    M, N = op.output.shape
    K = A.shape[0] if a["transA"] else A.shape[1]
    sa = (1, M) if a["transA"] else (K, 1)  # strides of (i, k)
    sb = (1, K) if a["transB"] else (N, 1)  # strides of (k, j)
    y = lw.out(op.output, None, ins)
    if y.size == 0:
        return
    dtype = op.output.dtype
    isf = dtype in cnames.FLOATS
    acc_t = "double" if isf else "uint64_t"
    ct = COMPUTE[dtype]
    la = load(lw, A, f"x0[i * {sa[0]} + k * {sa[1]}]")
    lb = load(lw, B, f"x1[k * {sb[0]} + j * {sb[1]}]")
    alpha = float_literal(a["alpha"], "double")
    expr = f"{alpha} * (double)acc" if isf else f"({ct})acc * ({ct}){int(a['alpha'])}"
    if len(op.inputs) > 2:
        C = lw.home(op.inputs[2])
        ins.append(C)
        cs = broadcast_strides(C.shape, C.strides, (M, N))
        lc = load(lw, C, f"x2[i * {cs[0]} + j * {cs[1]}]")
        beta = float_literal(a["beta"], "double")
        expr = f"{expr} + {beta} * (double){lc}" if isf else f"{expr} + ({ct}){int(a['beta'])} * {lc}"
    body = [f"    for (ptrdiff_t i = 0; i < {M}; i++)",
            f"        for (ptrdiff_t j = 0; j < {N}; j++) {{",
            f"            {acc_t} acc = 0;",
            f"            for (ptrdiff_t k = 0; k < {K}; k++) acc += ({acc_t}){la} * ({acc_t}){lb};",
            f"            y0[i * {N} + j] = {store(lw, dtype, expr)};",
            "        }"]
    lw.generic(op.op, ins, [y], body)
