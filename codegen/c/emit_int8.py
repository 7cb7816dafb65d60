"""Emitters for the int8 ops of `--precision int8` (s4c/ops/quant.py: QuantizeInt8, LinearInt8) on the
kernels of kernels/int8.c (the contract: the comment at the top of that file).

    QuantizeInt8   s4c_quantize_i8: the f32 activation (feature-major [K][T]) to int8 in the X4
                   layout [ceil(K/4)][Tp][4] (Tp = T rounded up to 16) that only the int8 Linear
                   reads; static (scale operand, per tensor) or dynamic (per token: the second
                   result, f32[..., 1], is written too)
    LinearInt8     s4c_linear_i8 with the fused activation, y feature-major f32 like Linear's; the
                   weight stored as quad blocks: R output rows x one aligned quad of 4 input
                   features (the 4-way int8 dot product of VNNI / maddubs), only the blocks holding
                   a nonzero (dense: all). R = 4 for dense weights and BSR layouts of r % 4 == 0 rows
                   (bsr4x1, bsr8x1, bsr4x4 ...: one X4 load feeds 4 rows), else 1 (csr, nmN:M,
                   bsr1x4, ...). The layout select-sparse-layout chose decides R; the C cost model
                   (s4c/targets/c.py) prices LinearInt8 by these blocks (`quad_rows`).

The activation x_q is not an ordinary tensor of the program (its X4 layout is no ONNX layout): a
QuantizeInt8 whose result another op than LinearInt8 reads is a TargetError, and `s4c check` does
not compare x_q (it compares the scales and the LinearInt8 results).
"""

from __future__ import annotations

import numpy as np

from s4c.codegen.c.emit_common import attrs, c_int, emits, feature_vector, size_of, unsupported
from s4c.codegen.c.emit_linear import _ACT
from s4c.codegen.c.program import CProgram
from s4c.ir import Op
from s4c.targets.c import int8_quad_rows

TOKEN_PAD = 16  # s4c_i8_tokens(T): T rounded up to a multiple of this

# kernels/int8.c has no header (an fp32 build's files stay as they were): model.c declares what it calls
PROTOTYPES = """/* int8 kernels (kernels/int8.c) */
int s4c_quantize_i8(int K, int T, const float *X, const float *scale, float *scale_out, int8_t *Xq);
int s4c_linear_i8(int out, int in, int T, int R, const int32_t *indptr, const uint16_t *qidx,
                  const int8_t *vals, const int32_t *comp, const int8_t *Xq, const float *xscale,
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
    x4 = lw.new("i8", (-(-K // 4), padded_tokens(T), 4), None, lw.phase_of([x]), f"{qv.name} (int8 X4)")
    lw.memo[("x4", id(qv))] = x4
    _declare(lw)
    static = len(op.inputs) > 1
    outs = [x4]
    if static:
        s = lw.get(op.inputs[1], None)
        if s.dtype != "f32":
            raise unsupported(op, "the scale must be f32")
        ins, scale, scale_out = [x, s], s.name, "NULL"
    else:
        xs = lw.out(op.outputs[1], None, [x])
        outs.append(xs)
        ins, scale, scale_out = [x], "NULL", xs.name
    if x4.size == 0:
        return
    call = f"s4c_quantize_i8({K}, {T}, {x.name}, {scale}, {scale_out}, {x4.name})"
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
    x4 = lw.memo.get(("x4", id(qv)))
    if x4 is None:
        raise unsupported(op, "its int8 input does not come from a QuantizeInt8")
    if not wv.is_constant or not wsv.is_constant:
        raise unsupported(op, "the int8 weight and its scale must be constants")
    N, K = (c_int(d, "weight dims", op) for d in wv.shape)
    T = c_int(size_of(qv.shape[:-1]), "tokens", op)
    xs = lw.get(xsv, None)
    ws = lw.get(wsv, None)
    bias = feature_vector(lw, op.inputs[4], (N,), "bias") if len(op.inputs) > 4 else None
    y = lw.out(op.output, qv.type.rank - 1, [x4])
    if y.size == 0:
        return
    R = quad_rows(layout)
    dense = layout.kind == "dense"
    packed = quad_blocks(np.asarray(wv.data), R, dense)
    key = ("i8w", id(wv), R, dense)
    wt = {name: lw.weight(arr, f"{wv.name} {name}", key=key + (name,))
          for name, arr in packed.items() if arr is not None}
    nq = packed["vals"].shape[0] if not dense else -(-N // R) * -(-K // 4)
    ptrs = [wt[n].name if n in wt else "NULL" for n in ("indptr", "qidx", "vals", "comp")]
    b = bias.name if bias is not None else "NULL"
    per_token = int(xsv.shape != ())
    call = (f"s4c_linear_i8({N}, {K}, {T}, {R}, {', '.join(ptrs)}, {x4.name}, {xs.name}, {per_token}, "
            f"{ws.name}, {b}, {_ACT[a['activation']]}, {y.name})")
    ins = [x4, xs, ws] + list(wt.values()) + ([bias] if bias is not None else [])
    total = -(-N // R) * -(-K // 4)
    lw.step("LinearInt8", ins, [y], call, kernel="s4c_linear_i8", fails=True,
            note=f"{layout} weight (int8, {R}x4 quad blocks: {nq} of {total})")
    _declare(lw)
