"""Linear (and MatMul by a constant 2-D weight): the row kernel of the packed weights.

Every layout of constants.py, activation none / gelu / gelu_tanh / relu: per core, the X rows
(resident, or loaded in token tiles); per output tile of the packed weight: the tile's arrays
DMA'd from the constant segment, one SPU op (spu.mm tb=1 / spu.nm / spu.bsr) into the output
columns, then the epilogue on the VPU: bias (row broadcast) and activation in place, one fused
`vpu.epilogue` pass; stored when the
result lives in DRAM. Weight tiles are allocated next-fit in scratch, so the DMA loads the next
tiles while the SPU works on the current one. Fewer sentences than cores (e.g. batch 1): tensor
parallel, each core its share of the weight's output tiles over every token row.

A MatMul whose second operand is a constant 2-D weight runs as this kernel (the weight packed
transposed, dense); any other MatMul is matmul.py's.

With `precision="mixed"` each matmul's input is quantised by the MixInt8bf16 machine's i8 pass, an
in-place fp32 identity cvt (stream.Stream.timing_cvt), and its dequantisation is a stage of the
fused epilogue (timed bf16), as s4c.s4.estimate counts them.
"""

from __future__ import annotations

import numpy as np

from s4c.errors import TargetError

from .base import X_BUDGET, Kernel, RowInfo, SIZE, kernel, reject, rup
from .constants import parse_s4_layout
from .matmul import MatMulGeneric
from .stream import Region

PIN_BUDGET = 800 << 10   # a packed weight up to this size is kept in SRAM across token tiles
MIN_TILES = 2          # output tiles per weight at least: the VPU epilogue of one overlaps the SPU on the next


def _rows(shape) -> int:
    return int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1

@kernel("Linear")
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
            bias = self._epilogue_vectors(L, core, op, b)
            xsize = SIZE[L.info(x).dt]
            if rows_mode:
                tts = []
                pin = self._pinned(L, op, packed)
                for b0, b1 in L.blocks(R, core):
                    for s0, s1 in (L.sub_blocks(b0, b1) if pin else [(b0, b1)]):
                        res = L.resident_rows(x, core, s0, s1) is not None
                        step = (s1 - s0) if res else max(1, X_BUDGET // rup(K * xsize))
                        tts += [(t, min(s1, t + step)) for t in range(s0, s1, step)]
            else:
                step = max(1, X_BUDGET // rup(K * xsize))
                tts = [(t, min(p1, t + step)) for t in range(p0, p1, step)]
            resident_x = all(L.resident_rows(x, core, t0, t1) is not None for t0, t1 in tts)
            pinned = len(tts) > 1 and self._pinned(L, op, packed)
            if len(tts) > 1 and not pinned and resident_x:
                # weights too big to keep: weight tile outer, every token tile inner
                Xs = [self._src_rows(L, core, x, t0, t1)[0] for t0, t1 in tts]
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
                X, own_x = self._src_rows(L, core, x, t0, t1)
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
    def _epilogue_vectors(L, core, op, b):
        """What the epilogue reads on this core: the bias vector (or None)."""
        if b is None:
            return None
        return L.const_vector(core, b.data) if b.is_constant else L.load_vector(core, b)

    @staticmethod
    def _src_rows(L, core, x, t0, t1):
        return L.src_rows(core, x, t0, t1)

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
        # bias and activation (and, timed as MixInt8bf16, the dequantisation) in one fused VPU pass
        em.epilogue(core, Y, Y, bias.sub(0, 1, o0, o1 - o0) if bias is not None else None, act)
        if to_dram:
            em.st(core, L.dram_of(out).sub(t0, t1 - t0, o0, o1 - o0), Y)
        if yres is None:
            sc.release(Y)

    @staticmethod
    def _load(L, core, packed, tile, K) -> dict:
        """The tile's weight arrays DMA'd into scratch (empty for an all-zero BSR tile)."""
        em, sc = L.em, L.scratch(core)
        o = tile.o1 - tile.o0
        if packed.fmt == "dense":
            addr, nbytes, dt = tile.arrays["w"]
            Wt = sc.tile(o, K, dt)
            em.ld(core, Wt, Region.dram(addr, o, K, dt), weight=True)
            return {"w": Wt}
        bufs = {}
        for name, (addr, nbytes, dt) in tile.arrays.items():
            t = sc.tile(1, nbytes // SIZE[dt], dt)
            em.ld_bytes(core, t.addr, addr, nbytes, dt, weight=True)
            bufs[name] = t
        return bufs

    @staticmethod
    def _compute(L, core, packed, tile, bufs, X, Y, K):
        """Y (+)= X @ W_tile^T on the SPU in X's dtype (f32; i8 with an i32 accumulator Y)."""
        em = L.em
        dt = X.dt
        if packed.fmt == "dense":
            em.mm(core, Y, X, bufs["w"], tb=True, dt=dt)
        elif packed.fmt == "bsr" and tile.nnzb == 0:
            em.fill(core, Y, 0.0)
        elif packed.fmt == "nm":
            em.nm(core, Y, X, bufs["val"].addr, bufs["idx"].addr, K, packed.n, packed.m, dt=dt)
        else:
            em.bsr(core, Y, X, bufs["val"].addr, bufs["col"].addr, bufs["ptr"].addr, K, packed.r, packed.c,
                   tile.nnzb, packed.cdt, dt=dt)


def _tile_sram_bytes(packed, tile, K) -> int:
    if packed.fmt == "dense":
        return (tile.o1 - tile.o0) * rup(K * SIZE[packed.dt])
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


class MatMulConst(LinearKernel):
    """MatMul by a constant 2-D weight: a Linear without bias (the weight packed transposed)."""

    def check(self, L, op):
        if op.inputs[0].dtype != "f32":
            reject(op, "MatMul on S4 is fp32")


_MATMUL_CONST = MatMulConst()
_MATMUL_GENERIC = MatMulGeneric()


@kernel("MatMul")
class MatMulDispatch(Kernel):
    @staticmethod
    def _k(op):
        a, w = op.inputs
        if w.is_constant and len(w.shape) == 2 and len(a.shape) >= 2 and a.dtype == "f32":
            return _MATMUL_CONST
        return _MATMUL_GENERIC

    def check(self, L, op):
        self._k(op).check(L, op)

    def row_info(self, L, op):
        return self._k(op).row_info(L, op)

    def temp_dram(self, L, op):
        return self._k(op).temp_dram(L, op)

    def emit(self, L, op):
        self._k(op).emit(L, op)
