"""int8 graphs (`s4c compile --precision int8`: the quantize-int8 pass's QuantizeInt8 / LinearInt8,
s4c/ops/quant.py) on the S4, as the MixInt8bf16 machine computes them, every instruction timed in
the dtype it computes in:

- **LinearInt8**: the Linear row kernel (linear.py: rows or tensor-parallel features mode, weight
  tiles streamed or pinned) on int8 data. Weights are packed in their layout with int8 values
  (constants.py; tiles sized in int8 bytes), X is the i8 token tile, the SPU runs `dt=i8` into an
  i32 accumulator, and `vpu.dequant` is the epilogue: f32(acc) * f32(x_scale * w_scale[n]) + bias,
  activation, in one VPU instruction. Static activation scales: the combined per-channel scale is
  a compile-time vector. Dynamic (per token): w_scale is the column vector and the token tile's
  row scales (QuantizeInt8's second result, in DRAM) the row vector. An f32 result is computed
  in place over the accumulator; a bf16 one from a scratch accumulator.
- **QuantizeInt8**: a row kernel, `vpu.quant` (f32 quotient, round half to even, saturate at
  +-127) with the static scale as a scalar; dynamic: per row max|x| (axpb -1, max, rmax), the scale
  amax / 127 (1 for an all-zero row, exactly the reference's rule: step(amax) from two exact scalings
  and a min), stored as the second result, and `vpu.quant` per row.
- **bf16** (`S4Options.int8_bf16`, default on): an activation that only feeds QuantizeInt8s (the FFN
  intermediate after GELU) is written bf16 by the epilogue and read bf16 by the quantiser, in SRAM
  (residency counts 2 bytes per element) or DRAM, as MixInt8bf16 keeps activations between int8
  GEMMs. That is the one place results differ from the reference evaluator's f32 (bf16 rounds to
  8 significant bits, round to nearest even, before the quantiser); with int8_bf16=False every
  int8 op agrees with the reference to one quantisation step on rare elements (ties of GELU).
- The word embedding table (most of a small model's constant bytes, a third of an int8 BERT-base's)
  is stored int8 with a per-row f32 scale (`int8_word_table="i8"`, the default with `int8_bf16`):
  each row is its H int8 values then its scale's 4 bytes, so one dma.gather brings both; the VPU
  widens the rows to f32 (exact) and multiplies by the scale (vpu.trans makes the gathered scale
  column a vector), f32(q * s), for the LayerNorm. Quantised as vpu.quant does: s = max|row| / 127.
  `int8_word_table="bf16"`: stored bf16, widened exactly to f32.
- Requantisation: a bf16 LinearInt8 result that only a static QuantizeInt8 reads (the FFN
  intermediate) is never stored: the epilogue dequantises each output tile to bf16 in scratch and
  `vpu.quant` writes the int8 values straight into the QuantizeInt8's result (same bits as storing
  the bf16 value and quantising it after; output tiles of 64 rows keep int8 columns aligned). This
  is what keeps BERT-base's batch-16 activations in SRAM. Likewise a MixInt8bf16 attention's f32
  result (quantised for the output projection) is quantised per sentence part as it is finished.
  Not with `keep_values` (s4c check: every value kept).
- The Q/K/V LinearInt8 result is bf16 too when only MixInt8bf16 attentions read it (they would
  round Q, K and V to bf16 anyway: same results, half the bytes and no conversion).
- Residency: i8 and bf16 token matrices stay in SRAM like f32 ones, sized in their own bytes.
"""

from __future__ import annotations

import numpy as np

from s4c.errors import TargetError

from .base import Kernel, RowInfo, kernel, reject
from .constants import parse_s4_layout
from .linear import LinearKernel, _rows
from .stream import Region

INT8_OPS = ("LinearInt8", "QuantizeInt8")
RESIDENT_DTS = ("f32", "bf16", "i8")       # token matrices an int8 graph may keep in SRAM
TWO100, TWO49 = 2.0 ** 100, 2.0 ** 49


WORD_TABLES = ("i8", "bf16")               # S4Options.int8_word_table
FUSE_REQUANT = True     # a bf16 LinearInt8 result only a static QuantizeInt8 reads: requantised in the epilogue


def quantize_rows(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per row: s[r] = f32(max_j |t[r,j]| / 127) (1 for an all-zero row),
    q[r,j] = saturate+-127(round_half_even(f32(t[r,j] / s[r]))) (vpu.quant's rule)."""
    t = np.asarray(table, np.float32)
    amax = np.abs(t).max(axis=1)
    s = np.where(amax > 0, amax / np.float32(127), np.float32(1)).astype(np.float32)
    q = np.clip(np.rint((t / s[:, None]).astype(np.float32)), -127, 127).astype(np.int8)
    return q, s


def word_table_rows(table: np.ndarray) -> np.ndarray:
    """The int8 word table as stored: row r = its H int8 values, then s[r] as 4 little-endian f32
    bytes ([V, H+4] u8), so one dma.gather brings a token's row and its scale."""
    q, s = quantize_rows(table)
    return np.ascontiguousarray(np.concatenate([q.view(np.uint8), s.astype("<f4").reshape(-1, 1).view(np.uint8)],
                                               axis=1))


def gather_int8_rows(L, core, X, wtab, V: int, H: int, idv) -> None:
    """X (f32 [T, H]) = the int8 rows ids of the table (word_table_rows) times their scales: one
    dma.gather of H+4 bytes per token (row and scale), vpu.trans of the scale column into a packed
    vector, vpu.cvt i8 -> f32 (exact), vpu.mul by the row's scale (one f32 rounding: f32(q*s))."""
    em, sc = L.em, L.scratch(core)
    T = X.rows
    G = sc.tile(T, H + 4, "i8")
    em.gather(core, G, Region.dram(wtab.addr, V, H + 4, "i8"), idv.addr)
    s = sc.tile(1, T, "f32")
    em.trans(core, s, Region("sram", G.addr + H, T, 1, G.pitch, "f32", core))
    em.cvt(core, X, Region("sram", G.addr, T, H, G.pitch, "i8", core))
    em.vbin(core, "mul", X, X, s, bcast="col")
    sc.release(G, s)


def plan_storage(L) -> None:
    """The S4 storage dtype of an int8 graph's activations (before residency): a LinearInt8 result
    that only QuantizeInt8s read (and no graph output) is bf16 when `int8_bf16` (default on). A word
    embedding table only Embeddings read is stored int8 with per-row scales (`int8_word_table`
    "i8", the default, when its width is a multiple of 64 bytes) or bf16."""
    if not L.opts.get("int8_bf16", True):
        return
    g = L.g
    readers: dict[int, list] = {}
    for op in g.ops:
        for j, v in enumerate(op.inputs):
            if v is not None:
                readers.setdefault(id(v), []).append((op, j))
    table = L.opts.get("int8_word_table", "i8")
    for op in g.ops:        # word embedding tables: int8 + scales or bf16 in the constant segment
        w = op.inputs[1] if op.op == "Embedding" else None
        if w is None or not w.is_constant or w.dtype != "f32":
            continue
        info = L.info(w)
        if not all(u.op == "Embedding" and j == 1 for u, j in readers.get(id(w), [])):
            continue
        if table == "i8" and len(w.shape) == 2 and w.shape[1] % L.m.align == 0:
            if info.dt != "i8":
                info.dt, info.const_array = "i8", word_table_rows(np.asarray(w.data))
        else:
            info.dt = "bf16"
    outputs = {id(v) for v in g.outputs}
    for op in g.ops:
        if op.op != "LinearInt8":
            continue
        v = op.outputs[0]
        uses = readers.get(id(v), [])
        if uses and id(v) not in outputs and all(u.op == "QuantizeInt8" and j == 0 for u, j in uses):
            L.info(v).dt = "bf16"
        elif uses and id(v) not in outputs and all(j == 0 and bf16_attention(u) for u, j in uses):
            L.info(v).dt = "bf16"       # Q, K, V: the MixInt8bf16 attention reads them as bf16 anyway
    if not FUSE_REQUANT or L.opts.get("keep_values"):
        return
    for i, op in enumerate(g.ops):      # requantise in the epilogue: the bf16 result is never stored
        if not (op.op == "LinearInt8" and L.info(op.outputs[0]).dt == "bf16" or bf16_attention(op)):
            continue
        uses = readers.get(id(op.outputs[0]), [])
        q = uses[0][0] if len(uses) == 1 else None
        if q is None or q.op != "QuantizeInt8" or len(q.inputs) < 2 or q.inputs[1] is None or len(q.outputs) != 1:
            continue                    # (a dynamic, per-token scale needs the whole row first)
        L.fused_quant[id(op)], L.fused_quant[id(q)] = q, op
        L.info(op.outputs[0]).elided = True
        L.info(q.outputs[0]).producer = i


def bf16_attention(op) -> bool:
    """Whether a MultiHeadAttention of an int8 graph runs as MixInt8bf16 (transformer.py): Q/K/V
    and P bf16 into the SPU, for heads whose bf16 and f32 column slices are 64-byte aligned."""
    if op.op != "MultiHeadAttention" or len(op.inputs[0].shape) != 3:
        return False
    d = op.inputs[0].shape[2] // 3 // op.attrs["num_heads"]
    return (d * 2) % 64 == 0


@kernel("LinearInt8")
class LinearInt8Kernel(LinearKernel):
    def check(self, L, op):
        x, w, xs, ws = op.inputs[:4]
        if not (w.is_constant and ws.is_constant):
            reject(op, "the int8 weight and its scales must be compile-time constants")
        if len(op.inputs) > 4 and op.inputs[4] is not None and not op.inputs[4].is_constant:
            reject(op, "the bias must be a compile-time constant")
        if xs.shape != () and len(xs.shape) != len(x.shape):
            reject(op, f"input scale {xs.type} is neither per tensor nor per row")
        if xs.shape == () and not xs.is_constant:
            reject(op, "a per-tensor input scale must be a compile-time constant")
        try:
            parse_s4_layout(op.attrs.get("layout", "dense"))
        except TargetError as e:
            reject(op, str(e))

    def _epilogue_vectors(self, L, core, op, b):
        """(column scales, bias, row-scale value or None): static -> f32(x_scale * w_scale) as one
        compile-time vector; dynamic -> w_scale, and the row scales loaded per token tile."""
        xs, ws = op.inputs[2], op.inputs[3]
        w_scale = np.asarray(ws.data, np.float32)
        if xs.shape == ():
            cs = (np.asarray(xs.data, np.float32) * w_scale).astype(np.float32)
            rows_v = None
        else:
            cs, rows_v = w_scale, xs
        b = op.inputs[4] if len(op.inputs) > 4 else None      # (linear.py's `b` is Linear's operand 2)
        bias = L.const_vector(core, np.asarray(b.data, np.float32)) if b is not None else None
        self._rs = {}
        return (L.const_vector(core, cs), bias, rows_v, fused_scale(L, core, op))

    @staticmethod
    def _src_rows(L, core, x, t0, t1):
        return L.src_rows(core, x, t0, t1, f32=False)

    def _tile(self, L, core, op, packed, tile, bufs, X, t0, t1, K, vecs, act, to_dram):
        em, sc = L.em, L.scratch(core)
        cs, bias, rows_v, qs = vecs
        out = op.outputs[0]
        odt = L.root(out).dt
        o0, o1 = tile.o0, tile.o1
        rs = None
        if rows_v is not None:
            key = (core, t0, t1)
            rs = self._rs.get(key)
            if rs is None:
                rs = self._rs[key] = L.load_vector(core, rows_v, f32=False, start=t0, count=t1 - t0)
        yres = L.resident_rows(out, core, t0, t1)
        Y = yres.sub(0, t1 - t0, o0, o1 - o0) if yres is not None else sc.tile(t1 - t0, o1 - o0, odt)
        acc = Y.retype("i32") if odt == "f32" else sc.tile(t1 - t0, o1 - o0, "i32")
        self._compute(L, core, packed, tile, bufs, X, acc, K)
        em.dequant(core, Y, acc, cs.sub(0, 1, o0, o1 - o0), rs,
                   bias.sub(0, 1, o0, o1 - o0) if bias is not None else None, act)
        if acc.addr != Y.addr:
            sc.release(acc)
        if qs is not None:      # requantised here (vpu.quant of the bf16 tile) into the QuantizeInt8's result
            requant(L, core, L.fused_quant[id(op)].outputs[0], Y, qs, t0, t1, o0, o1)
        if to_dram:
            em.st(core, L.dram_of(out).sub(t0, t1 - t0, o0, o1 - o0), Y)
        if yres is None:
            sc.release(Y)




def requant(L, core, q, Y, qs, t0, t1, o0, o1) -> None:
    """Rows [t0, t1), columns [o0, o1) of the fused QuantizeInt8's result q = vpu.quant(Y, qs): into
    q's resident rows, and its DRAM home when it has one."""
    em, sc = L.em, L.scratch(core)
    qres = L.resident_rows(q, core, t0, t1)
    Q = qres.sub(0, t1 - t0, o0, o1 - o0) if qres is not None else sc.tile(t1 - t0, o1 - o0, "i8")
    em.quant(core, Q, Y, qs, per_row=False)
    qinfo = L.root(q)
    if qinfo.dram is not None and (qinfo.needs_dram or not qinfo.resident):
        em.st(core, L.dram_of(q).sub(t0, t1 - t0, o0, o1 - o0), Q)
    if qres is None:
        sc.release(Q)


def fused_scale(L, core, op):
    """The static scale of the QuantizeInt8 `op` requantises into (a 1-vector in scratch), or None."""
    q = L.fused_quant.get(id(op))
    return L.const_vector(core, np.asarray(q.inputs[1].data, np.float32).reshape(1)) if q is not None else None


@kernel("QuantizeInt8")
class QuantizeInt8Kernel(Kernel):
    def check(self, L, op):
        if op.inputs[0].dtype != "f32":
            reject(op, f"QuantizeInt8 of {op.inputs[0].dtype}")
        if len(op.inputs) > 1 and op.inputs[1] is not None and not op.inputs[1].is_constant:
            reject(op, "a static scale must be a compile-time constant")

    def row_info(self, L, op):
        return RowInfo(_rows(op.inputs[0].shape), (0,))

    def emit(self, L, op):
        x, q = op.inputs[0], op.outputs[0]
        info = L.info(q)
        if info.n == 0 or id(op) in L.fused_quant:     # (done in the LinearInt8's epilogue)
            return
        R, C = info.R, info.C
        static = len(op.inputs) > 1 and op.inputs[1] is not None
        em = L.em
        max_rows = max(8, (1 << 20) // max(1, C * 4))
        for core in range(L.cores):
            tiles = L.row_tiles(R, core, max_rows)
            if not tiles:
                continue
            sc = L.scratch(core)
            if static:
                s = L.const_vector(core, np.asarray(op.inputs[1].data, np.float32).reshape(1))
            else:
                consts = {v: L.const_vector(core, np.array([v], np.float32)) for v in (1.0, 127.0)}
            for t0, t1 in tiles:
                L.set_block(R, core, t0)
                X, own_x = L.src_rows(core, x, t0, t1, f32=False)
                Q = L.resident_rows(q, core, t0, t1)
                own_q = Q is None
                if own_q:
                    Q = sc.tile(t1 - t0, C, "i8")
                if static:
                    em.quant(core, Q, X, s, per_row=False)
                else:
                    rs = self._row_scales(L, core, X, consts)
                    em.quant(core, Q, X, rs, per_row=True)
                    dst = L.dram_of(op.outputs[1])
                    em.st(core, Region.dram(dst.addr + t0 * 4, 1, t1 - t0, "f32"), rs)
                    sc.release(rs)
                L.commit_rows(core, q, Q, t0, t1, own_q)
                if own_x:
                    sc.release(X)

    @staticmethod
    def _row_scales(L, core, X, consts) -> Region:
        """scale[i] = max_j |X[i,j]| / 127 in f32, 1 where the row is all zeros (the reference's rule):
        |X| = max(X, -X) and the row max in X's dtype (exact), then on the packed f32 vector
        s = amax/127 + (1 - min(amax * 2^149, 1)) (amax * 2^149 >= 1 for any amax > 0: exact)."""
        em, sc = L.em, L.scratch(core)
        n = X.rows
        neg = sc.tile(X.rows, X.cols, X.dt)
        em.vun(core, "axpb", neg, X, alpha=-1.0, beta=0.0)
        em.vop(core, "max", neg, X, neg)
        amax = sc.tile(1, n, X.dt)
        em.vreduce(core, "rmax", amax, neg)
        sc.release(neg)
        if X.dt != "f32":
            a32 = sc.tile(1, n, "f32")
            em.cvt(core, a32, amax)
            sc.release(amax)
            amax = a32
        step = sc.tile(1, n, "f32")
        em.vun(core, "axpb", step, amax, alpha=TWO100, beta=0.0)
        em.vun(core, "axpb", step, step, alpha=TWO49, beta=0.0)
        em.vop(core, "min", step, step, consts[1.0], bcast="scalar")
        em.vun(core, "axpb", step, step, alpha=-1.0, beta=1.0)         # 1 for an all-zero row, else 0
        s = sc.tile(1, n, "f32")
        em.vop(core, "div", s, amax, consts[127.0], bcast="scalar")
        em.vop(core, "add", s, s, step)
        sc.release(amax, step)
        return s


__all__ = ["INT8_OPS", "RESIDENT_DTS", "WORD_TABLES", "plan_storage", "bf16_attention", "requant", "fused_scale", "quantize_rows", "word_table_rows",
           "gather_int8_rows", "LinearInt8Kernel", "QuantizeInt8Kernel"]
