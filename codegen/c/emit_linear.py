"""Emitters for Linear: the sparse-weight kernels and the weight layouts they take.

    Linear (f32)       s4c_linear_dense / _csr_{u16,i32} / _bsr_{u16,i32} / _nm with the fused
                       activation; the weight packed at compile time into its layout (parse_layout),
                       column indices u16 when they fit
    int8 weights       absorb_weight_dequant(): a DequantizeWeight feeding only f32 Linear weights is
                       folded in; the int8 values (+ f32 scale) go to weights.bin and s4cx_dequant_*
                       turns them into float once, at init, in the weight's layout
    Linear (other)     a generated loop (dense layouts only)
"""

from __future__ import annotations

import numpy as np

from s4c.codegen.c import cnames
from s4c.codegen.c.cnames import COMPUTE
from s4c.codegen.c.emit_common import attrs, c_int, emits, expand_to, feature_vector, load, store, unsupported
from s4c.codegen.c.program import CProgram, Tensor
from s4c.ir import Op, Value

_ACT = {"none": "S4C_ACT_NONE", "gelu": "S4C_ACT_GELU_ERF", "gelu_tanh": "S4C_ACT_GELU_TANH",
        "relu": "S4C_ACT_RELU"}


def absorb_weight_dequant(lw: CProgram) -> None:
    """DequantizeWeight ops that only feed f32 Linear weights: the Linear stores the int8 values and
    dequantises them itself (at init, in the weight's sparse layout)."""
    for op in lw.graph.ops:
        if op.op != "DequantizeWeight" or lw.graph.is_output(op.output):
            continue
        users = lw.users.get(id(op.output), [])
        if users and all(u.op == "Linear" and u.inputs[1] is op.output and op.output not in u.inputs[:1] + u.inputs[2:]
                         and u.inputs[0].dtype == "f32" and op.output.dtype == "f32"
                         and op.inputs[0].is_constant and op.inputs[1].is_constant and op.inputs[0].type.rank == 2
                         for u in users):
            lw.absorbed.add(id(op))


@emits("Linear")
def _emit_linear(lw: CProgram, op: Op) -> None:
    from s4c.sparse import parse_layout
    from s4c.sparse.errors import SparseFormatError

    a = attrs(op)
    xv, wv = op.inputs[0], op.inputs[1]
    out_f, in_f = wv.shape
    try:
        layout = parse_layout(a.get("layout", "dense"))
    except SparseFormatError as e:
        raise unsupported(op, str(e)) from None
    if xv.dtype != "f32" or wv.dtype != "f32":
        if layout.kind != "dense":
            raise unsupported(op, f"layout {layout} on a {xv.dtype} Linear (the sparse kernels are f32)")
        return _linear_generic(lw, op, a)
    k = xv.type.rank - 1
    x = lw.get(xv, k)
    bias = None
    if len(op.inputs) > 2:
        bias = feature_vector(lw, op.inputs[2], (out_f,), "bias")
    y = lw.out(op.output, k, [x])
    if y.size == 0:
        return
    T = c_int(x.T, "tokens", op)
    wts, note = _linear_weight(lw, op, wv, layout)
    act = _ACT[a["activation"]]
    b = bias.name if bias is not None else "NULL"
    ins = [x] + wts + ([bias] if bias is not None else [])
    o, i = c_int(out_f, "rows", op), c_int(in_f, "columns", op)
    if layout.kind == "dense":
        fn = "s4c_linear_dense"
        call = f"{fn}({o}, {i}, {T}, {wts[0].name}, {x.name}, {b}, {act}, NULL, {y.name})"
    elif layout.kind == "csr":
        indptr, indices, values = wts
        fn = f"s4c_linear_csr_{'u16' if indices.dtype == 'u16' else 'i32'}"
        call = f"{fn}({o}, {i}, {T}, {indptr.name}, {indices.name}, {values.name}, {x.name}, {b}, {act}, NULL, {y.name})"
    elif layout.kind == "bsr":
        indptr, indices, values = wts
        r, c = layout.block_shape
        fn = f"s4c_linear_bsr_{'u16' if indices.dtype == 'u16' else 'i32'}"
        call = (f"{fn}({o}, {i}, {T}, {r}, {c}, {indptr.name}, {indices.name}, {values.name}, {x.name}, {b}, {act}, "
                f"NULL, {y.name})")
    elif layout.kind == "nm":
        indices, values = wts
        fn = "s4c_linear_nm"
        call = (f"{fn}({o}, {i}, {T}, {layout.n}, {layout.m}, {values.name}, {indices.name}, {x.name}, {b}, {act}, "
                f"NULL, {y.name})")
    else:
        raise unsupported(op, f"layout {layout}")
    lw.step("Linear", ins, [y], call, kernel=fn, fails=True, note=f"{layout} weight{note}")


def _linear_weight(lw: CProgram, op: Op, wv: Value, layout) -> tuple[list[Tensor], str]:
    """The weight's arrays in `layout`, as the kernel takes them (float; int8 dequantised at init)."""
    dq = wv.producer if wv.producer is not None and id(wv.producer) in lw.absorbed else None
    if dq is None and not wv.is_constant:
        if layout.kind != "dense":
            raise unsupported(op, f"layout {layout} needs a constant weight")
        return [lw.get(wv, None)], ""
    label = wv.name
    if dq is None:
        w = np.asarray(wv.data)
        if layout.kind == "dense":
            t = lw.weight(w, label, key=("w", id(wv), "dense"), shape=w.shape)
            lw.record_stored(wv, "dense", {"data": (t, w, w)})
            return [t], ""
        return _packed(lw, layout.pack(w), layout, wv, ("w", id(wv), str(layout))), ""
    # int8 weight: store the int8 values (+ scale), dequantise once at init into float
    q = np.asarray(dq.inputs[0].data)
    scale = np.asarray(dq.inputs[1].data, dtype=np.float32)
    axis = attrs(dq)["axis"] % 2
    per = "S4CX_SCALE_TENSOR" if scale.size == 1 else ("S4CX_SCALE_ROW" if axis == 0 else "S4CX_SCALE_COL")
    s = lw.weight(scale.reshape(-1), f"{dq.inputs[1].name}", key=("scale", id(dq.inputs[1])))
    lw.uses_extra = True
    note = f" (int8, scale per {'tensor' if per.endswith('TENSOR') else 'row' if per.endswith('ROW') else 'column'})"
    out_f, in_f = q.shape
    if layout.kind == "dense":
        qt = lw.weight(q, dq.inputs[0].name, key=("w", id(dq.inputs[0]), "dense"))
        lw.record_stored(dq.inputs[0], "dense", {"data": (qt, q, q)})
        wf = lw.new("f32", q.shape, None, "init", f"{label} (dequantised)")
        lw.step("dequantize", [qt, s], [wf], f"s4cx_dequant_dense({out_f}, {in_f}, {qt.name}, {s.name}, {per}, {wf.name})",
                kernel="s4cx_dequant_dense")
        return [wf], note
    packed = _packed(lw, layout.pack(q), layout, dq.inputs[0], ("w", id(dq.inputs[0]), str(layout)))
    qv = packed[-1]
    vf = lw.new("f32", qv.shape, None, "init", f"{label} values (dequantised)")
    if layout.kind == "csr":
        indptr, indices, _ = packed
        call = (f"s4cx_dequant_csr({out_f}, {indptr.name}, {indices.name}, {2 if indices.dtype == 'u16' else 4}, "
                f"{qv.name}, {s.name}, {per}, {vf.name})")
    elif layout.kind == "bsr":
        indptr, indices, _ = packed
        r, c = layout.block_shape
        call = (f"s4cx_dequant_bsr({out_f}, {in_f}, {r}, {c}, {indptr.name}, {indices.name}, "
                f"{2 if indices.dtype == 'u16' else 4}, {qv.name}, {s.name}, {per}, {vf.name})")
    else:
        indices, _ = packed
        call = (f"s4cx_dequant_nm({out_f}, {in_f}, {layout.n}, {layout.m}, {indices.name}, {qv.name}, {s.name}, "
                f"{per}, {vf.name})")
    lw.step("dequantize", packed + [s], [vf], call, kernel=call.split("(")[0])
    return packed[:-1] + [vf], note


def _packed(lw: CProgram, tensor, layout, value: Value, key) -> list[Tensor]:
    """The packed weight's arrays in weights.bin (CSR / BSR indices widened to the kernels' u16 / i32)."""
    arrays = tensor.arrays
    out_f, in_f = tensor.shape
    names = ["indptr", "indices", "values"] if layout.kind in ("csr", "bsr") else ["indices", "values"]
    result = []
    parts = {}
    for name in names:
        packed = arr = np.asarray(arrays[name])
        if name == "indices" and layout.kind in ("csr", "bsr"):
            extent = in_f
            arr = arr.astype(np.uint16 if extent <= 65535 else np.int32)
        result.append(lw.weight(arr, f"{value.name} {name}", key=key + (name,)))
        parts[name] = (result[-1], arr, packed)
    lw.record_stored(value, str(layout), parts)
    return result


def _linear_generic(lw: CProgram, op: Op, a: dict) -> None:
    """A Linear the kernels do not take (non-f32): y[t][o] = act(sum_i x[t][i] w[o][i] + b[o])."""
    xv, wv = op.inputs[0], op.inputs[1]
    x = lw.get(xv, None)
    w = lw.get(wv, None)
    ins = [x, w]
    out_f, in_f = wv.shape
    y = lw.out(op.output, None, [x])
    if y.size == 0:
        return
    T = x.size // in_f if in_f else y.size // out_f
    isf = y.dtype in cnames.FLOATS
    acc_t = "double" if isf else "uint64_t"
    lb = "0"
    if len(op.inputs) > 2:
        b = expand_to(lw, op.inputs[2], (out_f,), "bias")
        ins.append(b)
        lb = f"({acc_t}){load(lw, b, 'x2[o]')}"
    act = a["activation"]
    res = "acc"
    if act == "gelu":
        res = "0.5 * acc * (1.0 + erf(acc * 0.70710678118654752440))"
    elif act == "gelu_tanh":
        res = "0.5 * acc * (1.0 + tanh(0.79788456080286535588 * (acc + 0.044715 * acc * acc * acc)))"
    elif act == "relu":
        res = "(acc > 0 ? acc : 0)"
    if not isf:
        res = f"({COMPUTE[y.dtype]})acc"
    lx = load(lw, x, f"x0[t * {in_f} + i]")
    lwt = load(lw, w, f"x1[o * {in_f} + i]")
    body = [f"    for (ptrdiff_t t = 0; t < {T}; t++)",
            f"        for (ptrdiff_t o = 0; o < {out_f}; o++) {{",
            f"            {acc_t} acc = {lb};",
            f"            for (ptrdiff_t i = 0; i < {in_f}; i++) acc += ({acc_t}){lx} * ({acc_t}){lwt};",
            f"            y0[t * {out_f} + o] = {store(lw, y.dtype, res)};",
            "        }"]
    lw.generic("linear", ins, [y], body)
