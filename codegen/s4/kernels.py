"""Row kernels: the fused transformer ops on token matrices, each core on its own rows.

- **Linear** (every layout of weights.py, activation none / gelu / gelu_tanh / relu): per core, the X rows
  (resident, or loaded in token tiles); per output tile of the packed weight: the tile's arrays
  DMA'd from the constant segment, one SPU op (spu.mm tb=1 / spu.nm / spu.bsr) into the output
  columns, then on the VPU the bias (row broadcast) and the activation in place; stored when the
  result lives in DRAM. Weight tiles are allocated next-fit in scratch, so the DMA loads the next
  tiles while the SPU works on the current one.
- **MultiHeadAttention**: per core and sentence part, Q of all heads pre-scaled once (axpb), then
  per head Q K^T (spu.mm tb=1), the additive bias, row softmax, P V (spu.mm) straight into the
  head's output columns. K and V come from the core's own SRAM when the core holds the whole
  sentence, else from the qkv DRAM copy every core stored (the cross-core exchange). A bias that
  may hold -inf gets the contract's zero rows (rmax flag through cvt).
- **SkipLayerNorm / LayerNorm**: vpu.add (+ bias) then vpu.layernorm, per row tile.
- **Embedding**: ids to SRAM, dma.gather of the word rows, position / token-type rows (plain DMA
  runs when the ids are a compile-time range, else gathers), two vpu.add, vpu.layernorm.

With `precision="mixed"` each matmul is surrounded by the MixInt8bf16 machine's quantise (i8)
and dequantise (bf16) passes, modelled as in-place fp32 identity cvts (emit.Emitter.timing_cvt),
as s4c.s4.estimate counts them.
"""

from __future__ import annotations

import numpy as np

from s4c.errors import TargetError

from .emit import Region, rup
from .base import Kernel, reject
from .elementwise import Elementwise
from .gather import GatherElementsRuntime, GatherNDRuntime, GatherRuntime
from .movement import MOVE_DATA, MoveKernel
from .lower import RowInfo
from .weights import pack_linear, parse_s4_layout

F32_MAX = float(np.finfo(np.float32).max)
X_BUDGET = 1536 << 10
PIN_BUDGET = 800 << 10   # a packed weight up to this size is kept in SRAM across token tiles
MIN_TILES = 2          # output tiles per weight at least: the VPU epilogue of one overlaps the SPU on the next


def _rows(shape) -> int:
    return int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1


class LinearKernel(Kernel):
    def check(self, L, op):
        w = op.inputs[1]
        if not w.is_constant:
            reject(op, "the weight must be a compile-time constant (or a DequantizeWeight of one)")
        if len(op.inputs) > 2 and op.inputs[2] is not None and op.inputs[2].dtype != "f32":
            reject(op, "bias must be f32")
        if op.inputs[0].dtype != "f32":
            reject(op, f"activations must be f32, not {op.inputs[0].dtype}")
        try:
            parse_s4_layout(op.attrs.get("layout", "dense"))
        except TargetError as e:
            reject(op, str(e))

    def row_info(self, L, op):
        R = _rows(op.inputs[0].shape)
        return RowInfo(R, (0,)) if L.rows_mode(R) else None

    def emit(self, L, op):
        """Rows mode (at least one sentence per core): each core its token rows, every weight tile.
        Features mode (fewer sentences than cores, e.g. batch 1): each core every token row and its
        share of the weight's output tiles (tensor parallel: each weight byte is loaded once), X
        from DRAM, Y column slices to DRAM."""
        x, w = op.inputs[0], op.inputs[1]
        b = op.inputs[2] if len(op.inputs) > 2 else None
        out = op.outputs[0]
        oinfo = L.root(out)
        if oinfo.n == 0:
            return
        R, K = _rows(x.shape), x.shape[-1]
        rows_mode = L.rows_mode(R)
        packed = L.packed_linear(op, MIN_TILES if rows_mode else L.cores)
        act = op.attrs.get("activation", "none")
        em = L.em
        to_dram = oinfo.dram is not None and (oinfo.needs_dram or not oinfo.resident)
        if rows_mode:
            work = [((p0, p1), packed.tiles) for p0, p1 in L.part(R)]
        else:
            groups = _split_tiles(packed.tiles, L.cores)
            work = [((0, R), g) for g in groups]
        for core, ((p0, p1), tiles) in enumerate(work):
            L.em.block = 0
            if p1 <= p0 or not tiles:
                continue
            sc = L.scratch(core)
            bias = None
            if b is not None:
                bias = L.const_vector(core, b.data) if b.is_constant else L.load_vector(core, b)
            if rows_mode:
                tts = []
                pin = self._pinned(L, op, packed)
                for b0, b1 in L.blocks(R, core):
                    for s0, s1 in (L.sub_blocks(b0, b1) if pin else [(b0, b1)]):
                        res = L.resident_rows(x, core, s0, s1) is not None
                        step = (s1 - s0) if res else max(1, X_BUDGET // rup(K * 4))
                        tts += [(t, min(s1, t + step)) for t in range(s0, s1, step)]
            else:
                step = max(1, X_BUDGET // rup(K * 4))
                tts = [(t, min(p1, t + step)) for t in range(p0, p1, step)]
            resident_x = all(L.resident_rows(x, core, t0, t1) is not None for t0, t1 in tts)
            pinned = len(tts) > 1 and self._pinned(L, op, packed)
            if len(tts) > 1 and not pinned and resident_x:
                # weights too big to keep: weight tile outer, every token tile inner
                Xs = [L.src_rows(core, x, t0, t1)[0] for t0, t1 in tts]
                for X in Xs:
                    em.timing_cvt(core, X, "i8")
                for tile in tiles:
                    L.set_block(R, core, tts[0][0])
                    bufs = self._load(L, core, packed, tile, K)
                    for (t0, t1), X in zip(tts, Xs):
                        L.set_block(R, core, t0)
                        self._tile(L, core, op, packed, tile, bufs, X, t0, t1, K, bias, act, to_dram)
                    sc.release(*bufs.values())
                continue
            held: dict = {}
            for t0, t1 in tts:
                L.set_block(R, core, t0)
                X, own_x = L.src_rows(core, x, t0, t1)
                em.timing_cvt(core, X, "i8")
                for tile in tiles:
                    bufs = held.get(id(tile)) or self._load(L, core, packed, tile, K)
                    self._tile(L, core, op, packed, tile, bufs, X, t0, t1, K, bias, act, to_dram)
                    if pinned:
                        held[id(tile)] = bufs
                    else:
                        sc.release(*bufs.values())
                if own_x:
                    sc.release(X)
            for bufs in held.values():
                sc.release(*bufs.values())

    @staticmethod
    def _pinned(L, op, packed=None) -> bool:
        """Whether the whole packed weight stays in SRAM across the token tiles (then the op works
        block after block; else weight tile outer, blocks interleaved)."""
        packed = packed or L.packed_linear(op, MIN_TILES)
        K = op.inputs[0].shape[-1]
        return sum(_tile_sram_bytes(packed, t, K) for t in packed.tiles) <= PIN_BUDGET

    def interleaved(self, L, op):
        R = _rows(op.inputs[0].shape)
        if not L.rows_mode(R):
            return False
        nb = max(len(L.blocks(R, c)) for c in range(L.cores))
        return nb > 1 and not self._pinned(L, op)

    def _tile(self, L, core, op, packed, tile, bufs, X, t0, t1, K, bias, act, to_dram):
        em, sc = L.em, L.scratch(core)
        out = op.outputs[0]
        o0, o1 = tile.o0, tile.o1
        yres = L.resident_rows(out, core, t0, t1)
        Y = yres.sub(0, t1 - t0, o0, o1 - o0) if yres is not None else sc.tile(t1 - t0, o1 - o0, "f32")
        self._compute(L, core, packed, tile, bufs, X, Y, K)
        em.timing_cvt(core, Y, "bf16")
        if bias is not None:
            em.vbin(core, "add", Y, Y, bias.sub(0, 1, o0, o1 - o0), bcast="row")
        if act != "none":
            em.vun(core, act, Y, Y)  # the activation names are the VPU's unary opcodes
        if to_dram:
            em.st(core, L.dram_of(out).sub(t0, t1 - t0, o0, o1 - o0), Y)
        if yres is None:
            sc.release(Y)

    @staticmethod
    def _load(L, core, packed, tile, K) -> dict:
        """The tile's weight arrays DMA'd into scratch (empty for an all-zero BSR tile). Weight loads
        """
        return LinearKernel._load_arrays(L, core, packed, tile, K)

    @staticmethod
    def _load_arrays(L, core, packed, tile, K) -> dict:
        em, sc = L.em, L.scratch(core)
        o = tile.o1 - tile.o0
        if packed.fmt == "dense":
            addr, nbytes, dt = tile.arrays["w"]
            Wt = sc.tile(o, K, "f32")
            em.ld(core, Wt, Region.dram(addr, o, K, "f32"), weight=True)
            return {"w": Wt}
        bufs = {}
        for name, (addr, nbytes, dt) in tile.arrays.items():
            t = sc.tile(1, nbytes // {"f32": 4, "i32": 4, "u16": 2}.get(dt, 1), dt)
            em.ld_bytes(core, t.addr, addr, nbytes, dt, weight=True)
            bufs[name] = t
        return bufs

    @staticmethod
    def _compute(L, core, packed, tile, bufs, X, Y, K):
        em = L.em
        if packed.fmt == "dense":
            em.mm(core, Y, X, bufs["w"], tb=True)
        elif packed.fmt == "bsr" and tile.nnzb == 0:
            em.fill(core, Y, 0.0)
        elif packed.fmt == "nm":
            em.nm(core, Y, X, bufs["val"].addr, bufs["idx"].addr, K, packed.n, packed.m)
        else:
            em.bsr(core, Y, X, bufs["val"].addr, bufs["col"].addr, bufs["ptr"].addr, K, packed.r, packed.c,
                   tile.nnzb, packed.cdt)


def _tile_sram_bytes(packed, tile, K) -> int:
    if packed.fmt == "dense":
        return (tile.o1 - tile.o0) * rup(K * 4)
    return tile.nbytes


def _split_tiles(tiles, cores: int) -> list[list]:
    """Contiguous groups of output tiles with about equal work (stored values) per core."""
    work = [max(1, t.nbytes) for t in tiles]
    total = sum(work)
    groups, cur, acc = [], [], 0
    for t, wk in zip(tiles, work):
        cur.append(t)
        acc += wk
        if acc >= total * (len(groups) + 1) / cores and len(groups) < cores - 1:
            groups.append(cur)
            cur = []
    groups.append(cur)
    return groups + [[] for _ in range(cores - len(groups))]


class MultiHeadAttentionKernel(Kernel):
    def check(self, L, op):
        if op.inputs[0].dtype != "f32":
            reject(op, "qkv must be f32")
        if len(op.inputs) > 1 and op.inputs[1] is not None and op.inputs[1].dtype != "f32":
            reject(op, "the attention bias must be f32")

    def _aligned(self, op) -> bool:
        b, s, three_hd = op.inputs[0].shape
        d = three_hd // 3 // op.attrs["num_heads"]
        return (d * 4) % 64 == 0

    def row_info(self, L, op):
        if not self._aligned(op):
            return None
        b, s, _ = op.inputs[0].shape
        R = b * s
        L.sentence = s
        parts = L.part(R)
        whole = all(p0 % s == 0 and (p1 % s == 0 or p1 == R) for p0, p1 in parts if p1 > p0)
        return RowInfo(R, (0,), () if whole else (0,))

    def emit(self, L, op):
        qkv = op.inputs[0]
        bias = op.inputs[1] if len(op.inputs) > 1 else None
        out = op.outputs[0]
        B, S, three_hd = qkv.shape
        H = op.attrs["num_heads"]
        HD = three_hd // 3
        D = HD // H
        scale = float(op.attrs["scale"])
        em = L.em
        oinfo = L.root(out)
        aligned = self._aligned(op)
        guard = bias is not None and may_be_neg_inf(L, bias)
        to_dram = oinfo.dram is not None and (oinfo.needs_dram or not oinfo.resident)
        parts = L.part(B * S) if aligned else L.generic_part(B * S, 8)
        bshape = None
        if bias is not None:
            bs = tuple(bias.shape)
            bshape = (1,) * (4 - len(bs)) + bs
        for core, (p0, p1) in enumerate(parts):
            L.em.block = 0
            if p1 <= p0:
                continue
            sc = L.scratch(core)
            for b in range(p0 // S, (p1 - 1) // S + 1):
                q0, q1 = max(p0, b * S) - b * S, min(p1, (b + 1) * S) - b * S
                nq = q1 - q0
                t0 = b * S + q0
                L.set_block(B * S, core, t0)
                if aligned:
                    self._sentence_aligned(L, core, op, b, q0, q1, t0, S, H, D, HD, scale, bias, bshape, guard, to_dram)
                else:
                    self._sentence_per_head(L, core, op, b, q0, q1, t0, S, H, D, HD, scale, bias, bshape, guard)
                del nq

    # -- aligned heads: everything addressed as column slices of the qkv / output rows ----------------
    def _sentence_aligned(self, L, core, op, b, q0, q1, t0, S, H, D, HD, scale, bias, bshape, guard, to_dram):
        qkv, out = op.inputs[0], op.outputs[0]
        em, sc = L.em, L.scratch(core)
        nq = q1 - q0
        owned = []
        res_q = L.resident_rows(qkv, core, t0, t0 + nq)
        if res_q is not None:
            Q = res_q.sub(0, nq, 0, HD)
        else:
            Q = sc.tile(nq, HD, "f32")
            em.ld(core, Q, L.dram_of(qkv).sub(t0, nq, 0, HD))
            owned.append(Q)
        em.timing_cvt(core, Q, "i8")
        res_kv = L.resident_rows(qkv, core, b * S, b * S + S)
        if res_kv is not None and (HD * 4) % 64 == 0:
            Kt = res_kv.sub(0, S, HD, HD)
            Vt = res_kv.sub(0, S, 2 * HD, HD)
        else:
            Kt = sc.tile(S, HD, "f32")
            Vt = sc.tile(S, HD, "f32")
            em.ld(core, Kt, L.dram_of(qkv).sub(b * S, S, HD, HD))
            em.ld(core, Vt, L.dram_of(qkv).sub(b * S, S, 2 * HD, HD))
            owned += [Kt, Vt]
        em.timing_cvt(core, Kt, "i8")
        em.timing_cvt(core, Vt, "i8")
        yres = L.resident_rows(out, core, t0, t0 + nq)
        O = yres if yres is not None else sc.tile(nq, HD, "f32")
        btile = None
        for h in range(H):
            if bias is not None and (btile is None or bshape[1] > 1):
                if btile is not None:
                    sc.release(btile[0])
                btile = load_bias(L, core, bias, bshape, b, h, q0, q1, S)
            St = sc.tile(nq, S, "f32")
            em.mm(core, St, Q.sub(0, nq, h * D, D), Kt.sub(0, S, h * D, D), tb=True)
            scale_scores(L, core, St, scale)
            softmax_rows(L, core, St, btile, guard)
            em.timing_cvt(core, St, "i8")
            Oh = O.sub(0, nq, h * D, D)
            em.mm(core, Oh, St, Vt.sub(0, S, h * D, D), tb=False)
            em.timing_cvt(core, Oh, "bf16")
            sc.release(St)
        if btile is not None:
            sc.release(btile[0])
        if to_dram:
            em.st(core, L.dram_of(out).sub(t0, nq), O)
        if yres is None:
            sc.release(O)
        sc.release(*owned)

    # -- head dims that are not 64-byte multiples: per-head tiles through DRAM ----------------------
    def _sentence_per_head(self, L, core, op, b, q0, q1, t0, S, H, D, HD, scale, bias, bshape, guard):
        qkv, out = op.inputs[0], op.outputs[0]
        em, sc = L.em, L.scratch(core)
        nq = q1 - q0
        src = L.dram_of(qkv)
        dst = L.dram_of(out)
        btile = None
        for h in range(H):
            if bias is not None and (btile is None or bshape[1] > 1):
                if btile is not None:
                    sc.release(btile[0])
                btile = load_bias(L, core, bias, bshape, b, h, q0, q1, S)
            Q = sc.tile(nq, D, "f32")
            Kt = sc.tile(S, D, "f32")
            Vt = sc.tile(S, D, "f32")
            em.ld(core, Q, src.sub(t0, nq, h * D, D))
            em.ld(core, Kt, src.sub(b * S, S, HD + h * D, D))
            em.ld(core, Vt, src.sub(b * S, S, 2 * HD + h * D, D))
            St = sc.tile(nq, S, "f32")
            em.mm(core, St, Q, Kt, tb=True)
            scale_scores(L, core, St, scale)
            softmax_rows(L, core, St, btile, guard)
            Oh = sc.tile(nq, D, "f32")
            em.mm(core, Oh, St, Vt, tb=False)
            em.st(core, dst.sub(t0, nq, h * D, D), Oh)
            sc.release(Q, Kt, Vt, St, Oh)
        if btile is not None:
            sc.release(btile[0])


def scale_scores(L, core, St, scale: float) -> None:
    """St *= scale (rounded to fp32 as the reference's matmul(q, k^T) * scale). With MixInt8bf16
    timing this is the scores' dequantise pass (vpu.cvt with a scale) doing the scaling as well."""
    if L.em.mixed:
        L.em.cvt(core, St, St, scale, tdt="bf16")
    elif scale != 1.0:
        L.em.axpb(core, St, St, scale, 0.0)


def load_bias(L, core, bias, bshape, b, h, q0, q1, S):
    """The attention bias of sentence b, head h, query rows [q0, q1): (tile, broadcast mode)."""
    bB, bH, bQ, bK = bshape
    sK = 1 if bK > 1 else 0
    sQ = bK if bQ > 1 else 0
    sH = bQ * bK if bH > 1 else 0
    sB = bH * bQ * bK if bB > 1 else 0
    base = L.dram_of(bias).addr + (b * sB + h * sH) * 4
    nq = q1 - q0
    sc = L.scratch(core)
    if bQ > 1 and bK > 1:
        t = sc.tile(nq, S, "f32")
        L.em.ld(core, t, Region.dram(base + q0 * sQ * 4, nq, S, "f32", pitch=sQ * 4))
        return t, "full"
    if bK > 1:
        t = sc.tile(1, S, "f32")
        L.em.ld(core, t, Region.dram(base, 1, S, "f32"))
        return t, "row"
    if bQ > 1:
        t = sc.tile(1, nq, "f32")
        L.em.ld(core, t, Region.dram(base + q0 * 4, 1, nq, "f32"))
        return t, "col"
    t = sc.tile(1, 1, "f32")
    L.em.ld(core, t, Region.dram(base, 1, 1, "f32"))
    return t, "scalar"


def softmax_rows(L, core, St, btile, guard: bool) -> None:
    """St = softmax(St + bias) by rows, in place; rows whose biased scores are all -inf give 0."""
    em, sc = L.em, L.scratch(core)
    if btile is not None:
        em.vbin(core, "add", St, St, btile[0], bcast=btile[1])
    if not guard:
        em.softmax(core, St, St, 1.0)
        return
    m = sc.tile(1, St.rows, "f32")
    em.reduce(core, "rmax", m.addr, St)
    em.axpb(core, m, m, 0.0, 1.0)                  # 1, or NaN where the row max is -inf
    mi = sc.tile(1, St.rows, "i32")
    em.cvt(core, mi, m)                            # NaN -> 0
    em.cvt(core, m, mi)
    lo = L.const_vector(core, np.array([-F32_MAX], np.float32))
    em.vbin(core, "max", St, St, lo, bcast="scalar")
    em.softmax(core, St, St, 1.0)
    em.vbin(core, "mul", St, St, m, bcast="col")
    sc.release(m, mi, lo)


_PASS_THROUGH = {"Where", "Expand", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Cast", "Mul", "Add", "Sub",
                 "Identity", "Gather", "GatherND", "GatherElements", "Slice", "Concat", "Transpose", "And",
                 "Or", "Not", "Tile", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Min", "Max",
                 "Clip", "Neg"}


def may_be_neg_inf(L, v, depth: int = 0) -> bool:
    """Whether a float value may hold -inf (conservative: True when unsure)."""
    if v is None:
        return False
    if v.is_constant:
        data = np.asarray(v.data)
        return bool(data.dtype.kind == "f" and np.isinf(data).any())
    if v.dtype not in ("f32", "f16", "f64"):
        return False
    op = v.producer
    if op is None or depth > 32 or op.op not in _PASS_THROUGH:
        return True
    if op.op in ("Mul", "Add", "Sub"):
        # products and sums of finite values may overflow; only trust pure selections of constants
        return True
    return any(may_be_neg_inf(L, x, depth + 1) for x in op.inputs if x is not None)


class SkipLayerNormKernel(Kernel):
    def check(self, L, op):
        if any(v is not None and v.dtype != "f32" for v in op.inputs):
            reject(op, "SkipLayerNorm on S4 is fp32")

    def row_info(self, L, op):
        return RowInfo(_rows(op.inputs[0].shape), (0, 1))

    def emit(self, L, op):
        x, skip, gamma, beta = op.inputs[:4]
        bias = op.inputs[4] if len(op.inputs) > 4 else None
        emit_layernorm_rows(L, op, x, gamma, beta, float(op.attrs["epsilon"]), skip=skip, bias=bias)


def _vec(L, core, v, C):
    if v is None:
        return L.const_vector(core, np.zeros(C, np.float32))
    if v.is_constant:
        return L.const_vector(core, np.broadcast_to(np.asarray(v.data, np.float32), (C,)) if np.asarray(v.data).size != C
                              else np.asarray(v.data, np.float32))
    return L.load_vector(core, v)


def emit_layernorm_rows(L, op, x, gamma, beta, eps, skip=None, bias=None, out=None, stats=None):
    out = out or op.outputs[0]
    R, C = _rows(x.shape), x.shape[-1]
    em = L.em
    for core in range(L.cores):
        L.em.block = 0
        tiles = L.row_tiles(R, core, (X_BUDGET // 2) // rup(C * 4))
        if not tiles:
            continue
        sc = L.scratch(core)
        g = _vec(L, core, gamma, C)
        bt = _vec(L, core, beta, C)
        bv = _vec(L, core, bias, C) if bias is not None else None
        for r0, r1 in tiles:
            L.set_block(R, core, r0)
            X, own_x = L.src_rows(core, x, r0, r1)
            Y, own_y = L.dst_rows(core, out, r0, r1)
            src = X
            if skip is not None:
                Sk, own_s = L.src_rows(core, skip, r0, r1)
                em.vbin(core, "add", Y, X, Sk)
                if own_s:
                    sc.release(Sk)
                src = Y
            if bv is not None:
                em.vbin(core, "add", Y, src, bv, bcast="row")
                src = Y
            if stats is not None:
                stats(core, src, r0, r1)
            em.layernorm(core, Y, src, g, bt, eps)
            L.commit_rows(core, out, Y, r0, r1, own_y)
            if own_x:
                sc.release(X)


class LayerNormKernel(Kernel):
    """The fused LayerNorm (and ONNX LayerNormalization) over the axes from `axis` on."""

    def check(self, L, op):
        if op.inputs[0].dtype != "f32":
            reject(op, "LayerNorm on S4 is fp32")
        C = int(np.prod(op.inputs[0].shape[self._axis(op):], dtype=np.int64))
        for v in op.inputs[1:3]:
            if v is not None and not v.is_constant and L.info(v).n != C:
                reject(op, "a run-time gamma/beta must cover the normalised axes")

    @staticmethod
    def _axis(op):
        return op.attrs.get("axis", -1) % len(op.inputs[0].shape)

    def row_info(self, L, op):
        x = op.inputs[0]
        if self._axis(op) != len(x.shape) - 1 or len(op.outputs) > 1:
            return None
        return RowInfo(_rows(x.shape), (0,))

    def emit(self, L, op):
        x = op.inputs[0]
        gamma = op.inputs[1]
        beta = op.inputs[2] if len(op.inputs) > 2 else None
        eps = float(op.attrs.get("epsilon", 1e-5))
        axis = self._axis(op)
        if axis == len(x.shape) - 1 and len(op.outputs) == 1:
            return emit_layernorm_rows(L, op, x, gamma, beta, eps)
        # generic: [prod(shape[:axis]), prod(shape[axis:])] in DRAM
        from .reductions import layernorm_generic
        layernorm_generic(L, op, axis, eps)


class EmbeddingKernel(Kernel):
    def check(self, L, op):
        for j in (1, 3, 4, 5, 7):
            if j < len(op.inputs) and not op.inputs[j].is_constant:
                reject(op, "embedding tables and LayerNorm parameters must be constants")

    def row_info(self, L, op):
        return RowInfo(int(np.prod(op.inputs[0].shape, dtype=np.int64)), ())

    def emit(self, L, op):
        ids, word, pos_ids, pos, gamma, beta = op.inputs[:6]
        types = op.inputs[6:8] if len(op.inputs) > 7 else None
        out = op.outputs[0]
        R, H = int(np.prod(ids.shape, dtype=np.int64)), word.shape[1]
        em = L.em
        eps = float(op.attrs["epsilon"])
        wtab = L.dram_of(word)
        ptab = L.dram_of(pos)
        for core in range(L.cores):
            L.em.block = 0
            tiles = L.row_tiles(R, core, (X_BUDGET // 2) // rup(H * 4))
            if not tiles:
                continue
            sc = L.scratch(core)
            g = _vec(L, core, gamma, H)
            bt = _vec(L, core, beta, H)
            window = _const_window(L, core, pos_ids, pos, ids.shape, tiles)
            for p0, p1 in tiles:
                L.set_block(R, core, p0)
                self._rows(L, core, op, p0, p1, g, bt, wtab, ptab, types, eps, window)

    def _rows(self, L, core, op, p0, p1, g, bt, wtab, ptab, types, eps, window=None):
        ids, word, pos_ids, pos = op.inputs[:4]
        out = op.outputs[0]
        H = word.shape[1]
        em, sc = L.em, L.scratch(core)
        T = p1 - p0
        X, own = L.dst_rows(core, out, p0, p1)
        idv = _ids(L, core, ids, p0, T)
        em.gather(core, X, Region.dram(wtab.addr, word.shape[0], H, "f32"), idv.addr)
        P = sc.tile(T, H, "f32")
        if window is not None:      # the position rows of this tile: a slice of the rows loaded once
            tab, lo, flat = window
            em.vbin(core, "add", X, X, tab.sub(int(flat[p0]) - lo, T))
        else:
            _lookup(L, core, P, pos_ids, pos, ptab, ids.shape, p0, T)
            em.vbin(core, "add", X, X, P)
        if types is not None:
            _lookup(L, core, P, types[0], types[1], L.dram_of(types[1]), ids.shape, p0, T)
            em.vbin(core, "add", X, X, P)
        em.layernorm(core, X, X, g, bt, eps)
        L.commit_rows(core, out, X, p0, p1, own)
        sc.release(P, idv)


def _const_window(L, core, idx, table, ids_shape, tiles):
    """For constant position ids that are consecutive within every tile (e.g. arange(S) for each
    sentence): the table rows all tiles use, loaded once -> (tile, first row, flat ids), else None."""
    if not idx.is_constant:
        return None
    rows, H = table.shape
    flat = np.broadcast_to(np.asarray(idx.data), ids_shape).reshape(-1).astype(np.int64)
    flat = np.where(flat < 0, flat + rows, flat)
    lo, hi = None, None
    for p0, p1 in tiles:
        f = flat[p0:p1]
        if f.size == 0 or (f.size > 1 and not (np.diff(f) == 1).all()) or f.min() < 0 or f.max() >= rows:
            return None
        lo = int(f[0]) if lo is None else min(lo, int(f[0]))
        hi = int(f[-1]) + 1 if hi is None else max(hi, int(f[-1]) + 1)
    if hi - lo > 1024:
        return None
    tab = L.scratch(core).tile(hi - lo, H, "f32")
    L.em.ld(core, tab, Region.dram(L.dram_of(table).addr + lo * H * 4, hi - lo, H, "f32"))
    return tab, lo, flat


def _ids(L, core, ids, p0, T):
    info = L.info(ids)
    if ids.is_constant:
        return L.const_vector(core, np.asarray(ids.data).reshape(-1)[p0:p0 + T], "i32")
    if info.dt != "i32":
        raise TargetError(f"S4 lowering: embedding ids {ids.name!r} must be integers")
    return L.load_vector(core, ids, f32=False, start=p0, count=T)


def _lookup(L, core, dst, idx, table, tab: Region, ids_shape, p0, T):
    """dst rows = table rows idx (broadcast to the ids' shape) for tokens [p0, p0+T)."""
    em = L.em
    rows = table.shape[0]
    H = table.shape[1]
    if idx.is_constant:
        flat = np.broadcast_to(np.asarray(idx.data), ids_shape).reshape(-1)[p0:p0 + T].astype(np.int64)
        flat = np.where(flat < 0, flat + rows, flat)
        if flat.size and (flat.min() < 0 or flat.max() >= rows):
            raise TargetError(f"S4 lowering: constant embedding index out of range [0, {rows})")
        brk = np.ones(T, bool)
        brk[1:] = np.diff(flat) != 1
        starts = np.nonzero(brk)[0]
        if len(starts) <= 8:
            lens = np.diff(np.append(starts, T))
            for s0, ln in zip(starts, lens):
                em.ld(core, dst.sub(int(s0), int(ln)), Region.dram(tab.addr + int(flat[s0]) * H * 4, int(ln), H, "f32"))
            return
        iv = L.const_vector(core, flat, "i32")
    else:
        iv = _ids(L, core, _broadcast_ids(idx, ids_shape), p0, T) if tuple(idx.shape) == tuple(ids_shape) else None
        if iv is None:
            raise TargetError("S4 lowering: run-time position/type ids must have the ids' shape")
    em.gather(core, dst, Region.dram(tab.addr, rows, H, "f32"), iv.addr)
    L.scratch(core).release(iv)


def _broadcast_ids(idx, shape):
    return idx


# ==================================================================================================
KERNELS: dict = {}


def _register():
    from .matmul import GemmKernel
    from .reductions import CumSumKernel, ReduceKernel, SoftmaxKernel
    move = MoveKernel()
    ew = Elementwise()
    for name in MOVE_DATA:
        KERNELS[name] = move
    for name in ("Add", "Sub", "Mul", "Div", "Pow", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual",
                 "And", "Or", "Xor", "Not", "Max", "Min", "Sum", "Where", "Cast", "CastLike", "Clip", "Relu", "Neg",
                 "Abs", "Exp", "Log", "Erf", "Tanh", "Sqrt", "Reciprocal", "Sigmoid", "Floor", "Ceil", "Sign",
                 "IsNaN", "Gelu", "DequantizeLinear"):
        KERNELS[name] = ew
    KERNELS["Linear"] = LinearKernel()
    KERNELS["MultiHeadAttention"] = MultiHeadAttentionKernel()
    KERNELS["SkipLayerNorm"] = SkipLayerNormKernel()
    KERNELS["LayerNorm"] = LayerNormKernel()
    KERNELS["LayerNormalization"] = LayerNormKernel()
    KERNELS["Embedding"] = EmbeddingKernel()
    KERNELS["Gather"] = GatherDispatch(move, GatherRuntime())
    KERNELS["GatherND"] = GatherDispatch(move, GatherNDRuntime())
    KERNELS["GatherElements"] = GatherElementsDispatch(move, GatherElementsRuntime())
    KERNELS["MatMul"] = MatMulDispatch()
    KERNELS["Gemm"] = GemmKernel()
    KERNELS["Softmax"] = SoftmaxKernel()
    KERNELS["LogSoftmax"] = ew
    for name in ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2"):
        KERNELS[name] = ReduceKernel()
    KERNELS["CumSum"] = CumSumKernel()


class GatherDispatch(Kernel):
    def __init__(self, move, runtime):
        self.move, self.runtime = move, runtime

    def _k(self, op):
        return self.move if op.inputs[1].is_constant else self.runtime

    def check(self, L, op):
        self._k(op).check(L, op)

    def emit(self, L, op):
        self._k(op).emit(L, op)


class GatherElementsDispatch(GatherDispatch):
    """Constant indices in range: data movement; else (run-time indices, or constant ones out of
    range, which then stop the run like the reference's error) the run-time kernel."""

    def _k(self, op):
        if op.inputs[1].is_constant:
            shape = op.inputs[0].shape
            idx, n = np.asarray(op.inputs[1].data), shape[op.attrs.get("axis", 0) % len(shape)]
            if not idx.size or (idx.min() >= -n and idx.max() < n):
                return self.move
        return self.runtime


class MatMulDispatch(Kernel):
    def _k(self, op):
        a, w = op.inputs
        if w.is_constant and len(w.shape) == 2 and len(a.shape) >= 2 and a.dtype == "f32":
            return MatMulConstWrapped()
        from .matmul import MatMulGeneric
        return MatMulGeneric()

    def check(self, L, op):
        self._k(op).check(L, op)

    def row_info(self, L, op):
        return self._k(op).row_info(L, op)

    def temp_dram(self, L, op):
        return self._k(op).temp_dram(L, op)

    def emit(self, L, op):
        self._k(op).emit(L, op)


class MatMulConstWrapped(LinearKernel):
    def check(self, L, op):
        if op.inputs[0].dtype != "f32":
            reject(op, "MatMul on S4 is fp32")

    def emit(self, L, op):
        return super().emit(L, op)


def MatMulGeneric():
    from .matmul import MatMulGeneric as M
    return M()


_register()
