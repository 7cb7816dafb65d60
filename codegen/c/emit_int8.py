"""Emitters for the int8 ops of `--precision int8` (s4c/ops/quant.py: QuantizeInt8, LinearInt8) on the
kernels of kernels/int8.c (the contract: the comment at the top of that file).

    QuantizeInt8   s4c_quantize_i8: the f32 activation (feature-major [K][T]) to int8 in the layouts
                   its LinearInt8 readers take: X4 [ceil(K/4)][Tp][4] (quad kernel) and / or X1
                   [K][Tp] (column-group kernel), Tp = T rounded up to 16; static (scale operand,
                   per tensor) or dynamic (per token: the second result, f32[..., 1], is written too)
    LinearInt8     with the fused activation, y feature-major f32 like Linear's, on one of two
                   kernels the weight's layout picks (s4c.targets.c.int8_kernel, which the C cost
                   model prices):
                   s4c_linear_i8       dense, bsr1x4 / 1x8 / 4x4 / 8x8: quad blocks, R output rows x
                                       one aligned quad of 4 input features (the 4-way int8 dot
                                       product of VNNI / maddubs) holding a nonzero (dense: all)
                   s4c_linear_i8_cols  csr, nmN:M, bsr r x 1: column groups, 4 nonzero columns of R
                                       rows each (R = 4 for r x 1 blocks), their activations
                                       gathered and interleaved at run time: no fill-in

The activation x_q is not an ordinary tensor of the program (its int8 layouts are no ONNX layout): a
QuantizeInt8 whose result another op than LinearInt8 reads is a TargetError, and `s4c check` does
not compare x_q (it compares the scales and the LinearInt8 results).
"""

from __future__ import annotations

import numpy as np

from s4c.codegen.c.emit_common import attrs, c_int, emits, feature_vector, size_of, unsupported
from s4c.codegen.c.emit_linear import _ACT
from s4c.codegen.c.program import CProgram
from s4c.ir import Op
from s4c.targets.c import int8_kernel, int8_quad_rows

TOKEN_PAD = 16  # s4c_i8_tokens(T): T rounded up to a multiple of this

# kernels/int8.c has no header (an fp32 build's files stay as they were): model.c declares what it calls
PROTOTYPES = """/* int8 kernels (kernels/int8.c) */
int s4c_quantize_i8(int K, int T, const float *X, const float *scale, float *scale_out, int8_t *Xq,
                    int8_t *X1);
int s4c_linear_i8(int out, int in, int T, int R, const int32_t *indptr, const uint16_t *qidx,
                  const int8_t *vals, const int32_t *comp, const int8_t *Xq, const float *xscale,
                  int xscale_per_token, const float *wscale, const float *bias, int act, float *Y);
int s4c_linear_i8_cols(int out, int in, int T, int R, const int32_t *gptr, const uint16_t *cols,
                       const int8_t *vals, const int32_t *comp, const int8_t *X1, const float *xscale,
                       int xscale_per_token, const float *wscale, const float *bias, int act, float *Y);"""


def padded_tokens(T: int) -> int:
    return -(-T // TOKEN_PAD) * TOKEN_PAD


def _declare(lw: CProgram) -> None:
    if not lw.memo.get("int8-prototypes"):
        lw.memo["int8-prototypes"] = True
        lw.functions.insert(0, PROTOTYPES)


def quad_rows(layout) -> int:
    """R, the output rows of one weight quad block, for a LinearInt8 weight stored in `layout` (the rule
    the C cost model prices, s4c/targets/c.py)."""
    return int8_quad_rows(layout)


def quad_blocks(w_q: np.ndarray, R: int, dense: bool) -> dict[str, np.ndarray | None]:
    """w_q i8[N, K] as the kernel's quad blocks (kernels/int8.c): indptr i32[G+1] (None when dense),
    qidx u16[nq] (None when dense), vals i8[nq, R, 4], comp i32[N] = 128 * row sums."""
    w = np.asarray(w_q, np.int8)
    N, K = w.shape
    G, Kq = -(-N // R), -(-K // 4)
    P = np.zeros((G * R, Kq * 4), np.int8)
    P[:N, :K] = w
    B = P.reshape(G, R, Kq, 4).transpose(0, 2, 1, 3)  # [G][Kq][R][4]
    comp = (128 * w.sum(axis=1, dtype=np.int64)).astype(np.int32)
    if dense:
        return {"indptr": None, "qidx": None, "vals": np.ascontiguousarray(B), "comp": comp}
    keep = B.reshape(G, Kq, R * 4).any(axis=2)
    indptr = np.zeros(G + 1, np.int32)
    np.cumsum(keep.sum(axis=1), out=indptr[1:])
    g, q = np.nonzero(keep)
    return {"indptr": indptr, "qidx": q.astype(np.uint16), "vals": np.ascontiguousarray(B[g, q]), "comp": comp}


def column_groups(w_q: np.ndarray, R: int) -> dict[str, np.ndarray]:
    """w_q i8[N, K] as the column-group kernel's arrays (kernels/int8.c): for each block row of R rows,
    its nonzero columns (ascending) in groups of 4, the last padded by repeating its last column with
    weight 0: gptr i32[G+1] (groups per block row), cols u16[ng, 4], vals i8[ng, R, 4], comp i32[N]."""
    w = np.asarray(w_q, np.int8)
    N, K = w.shape
    G = -(-N // R)
    P = np.zeros((G * R, K), np.int8)
    P[:N] = w
    B = P.reshape(G, R, K)
    keep = B.any(axis=1)  # [G, K]
    g, k = np.nonzero(keep)
    counts = keep.sum(axis=1)
    slots = -(-counts // 4) * 4
    start = np.cumsum(counts) - counts
    pstart = np.cumsum(slots) - slots
    dest = pstart[g] + (np.arange(g.size) - start[g])
    S = int(slots.sum())
    filled = np.zeros(S, bool)
    filled[dest] = True
    cols = np.zeros(S, np.int64)
    cols[dest] = k
    cols = cols[np.maximum.accumulate(np.where(filled, np.arange(S), 0))] if S else cols  # pad: repeat
    vals = np.zeros((S, R), np.int8)
    vals[dest] = B[g, :, k]
    gptr = np.zeros(G + 1, np.int32)
    np.cumsum(slots // 4, out=gptr[1:])
    comp = (128 * w.sum(axis=1, dtype=np.int64)).astype(np.int32)
    return {"gptr": gptr, "cols": cols.astype(np.uint16).reshape(-1, 4),
            "vals": np.ascontiguousarray(vals.reshape(-1, 4, R).transpose(0, 2, 1)), "comp": comp}


def _kernel_of(op: Op) -> tuple[str, int]:
    from s4c.sparse import parse_layout
    from s4c.sparse.errors import SparseFormatError

    try:
        layout = parse_layout(attrs(op).get("layout", "dense"))
    except SparseFormatError as e:
        raise unsupported(op, str(e)) from None
    return int8_kernel(layout, op.inputs[1].shape[1])


@emits("QuantizeInt8")
def _emit_quantize_int8(lw: CProgram, op: Op) -> None:
    xv, qv = op.inputs[0], op.outputs[0]
    users = lw.users.get(id(qv), [])
    if lw.graph.is_output(qv) or not all(u.op == "LinearInt8" and u.inputs[0] is qv and qv not in u.inputs[1:]
                                         for u in users):
        raise unsupported(op, "its int8 result is read by something other than a LinearInt8 activation "
                              "(the C backend keeps it in the int8 kernels' X4 layout)")
    if xv.type.rank == 0:
        raise unsupported(op, "QuantizeInt8 of a scalar")
    k = xv.type.rank - 1
    x = lw.get(xv, k)
    K = c_int(xv.shape[-1], "features", op)
    T = c_int(size_of(xv.shape[:-1]), "tokens", op)
    # the kernels use T rounded up to 16 tokens; T + 15 of storage holds that and stays affine in T
    kinds = {_kernel_of(u)[0] for u in users} or {"quads"}  # (a reader-less result: written all the same)
    outs, ptrs = [], {"x4": "NULL", "x1": "NULL"}
    for name, kind, shape in (("x4", "quads", (-(-K // 4), T + TOKEN_PAD - 1, 4)),
                              ("x1", "cols", (K, T + TOKEN_PAD - 1))):
        if kind in kinds:
            t = lw.new("i8", shape, None, lw.phase_of([x]), f"{qv.name} (int8 {name.upper()})")
            lw.memo[(name, id(qv))] = t
            outs.append(t)
            ptrs[name] = t.name
    _declare(lw)
    static = len(op.inputs) > 1
    if static:
        s = lw.get(op.inputs[1], None)
        if s.dtype != "f32":
            raise unsupported(op, "the scale must be f32")
        ins, scale, scale_out = [x, s], s.name, "NULL"
    else:
        xs = lw.out(op.outputs[1], None, [x])
        outs.append(xs)
        ins, scale, scale_out = [x], "NULL", xs.name
    if not outs or outs[0].size == 0:
        return
    call = f"s4c_quantize_i8({K}, {T}, {x.name}, {scale}, {scale_out}, {ptrs['x4']}, {ptrs['x1']})"
    lw.step("QuantizeInt8", ins, outs, call, kernel="s4c_quantize_i8", fails=True,
            note="static, per tensor" if static else "dynamic, per token")


@emits("LinearInt8")
def _emit_linear_int8(lw: CProgram, op: Op) -> None:
    from s4c.sparse import parse_layout
    from s4c.sparse.errors import SparseFormatError

    a = attrs(op)
    qv, wv, xsv, wsv = op.inputs[:4]
    try:
        layout = parse_layout(a.get("layout", "dense"))
    except SparseFormatError as e:
        raise unsupported(op, str(e)) from None
    kind, R = int8_kernel(layout, wv.shape[1])
    xt = lw.memo.get(("x4" if kind == "quads" else "x1", id(qv)))
    if xt is None:
        raise unsupported(op, "its int8 input does not come from a QuantizeInt8")
    if not wv.is_constant or not wsv.is_constant:
        raise unsupported(op, "the int8 weight and its scale must be constants")
    N, K = (c_int(d, "weight dims", op) for d in wv.shape)
    T = c_int(size_of(qv.shape[:-1]), "tokens", op)
    xs = lw.get(xsv, None)
    ws = lw.get(wsv, None)
    bias = feature_vector(lw, op.inputs[4], (N,), "bias") if len(op.inputs) > 4 else None
    y = lw.out(op.output, qv.type.rank - 1, [xt])
    if y.size == 0:
        return
    b = bias.name if bias is not None else "NULL"
    per_token = int(xsv.shape != ())
    tail = f"{xt.name}, {xs.name}, {per_token}, {ws.name}, {b}, {_ACT[a['activation']]}, {y.name})"
    if kind == "cols":
        packed = column_groups(np.asarray(wv.data), R)
        key = ("i8c", id(wv), R)
        wt = {name: lw.weight(arr, f"{wv.name} {name}", key=key + (name,)) for name, arr in packed.items()}
        call = f"s4c_linear_i8_cols({N}, {K}, {T}, {R}, {', '.join(wt[n].name for n in packed)}, {tail}"
        ins = [xt, xs, ws] + list(wt.values()) + ([bias] if bias is not None else [])
        nnz = int(np.count_nonzero(wv.data))
        lw.step("LinearInt8", ins, [y], call, kernel="s4c_linear_i8_cols", fails=True,
                note=f"{layout} weight (int8, column groups of {R} row(s) x 4: {packed['cols'].shape[0]} "
                     f"groups, {nnz} nonzeros)")
        _declare(lw)
        return
    dense = layout.kind == "dense"
    packed = quad_blocks(np.asarray(wv.data), R, dense)
    key = ("i8w", id(wv), R, dense)
    wt = {name: lw.weight(arr, f"{wv.name} {name}", key=key + (name,))
          for name, arr in packed.items() if arr is not None}
    nq = packed["vals"].shape[0] if not dense else -(-N // R) * -(-K // 4)
    ptrs = [wt[n].name if n in wt else "NULL" for n in ("indptr", "qidx", "vals", "comp")]
    call = f"s4c_linear_i8({N}, {K}, {T}, {R}, {', '.join(ptrs)}, {tail}"
    ins = [xt, xs, ws] + list(wt.values()) + ([bias] if bias is not None else [])
    total = -(-N // R) * -(-K // 4)
    lw.step("LinearInt8", ins, [y], call, kernel="s4c_linear_i8", fails=True,
            note=f"{layout} weight (int8, {R}x4 quad blocks: {nq} of {total})")
    _declare(lw)
