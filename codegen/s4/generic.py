"""Generic kernels: any shape, operands in DRAM (elementwise ops also run as row kernels on
SRAM-resident token matrices).

- **Data movement** (Transpose, Slice, Concat, Split, Expand, Tile, Trilu, Gather / GatherND with
  constant indices, and Reshape-like ops when they cannot just alias): the op's own reference runs
  at compile time on index arrays, which gives, for every output element, the source element (or
  zero). That map is cut into runs; runs of equal length with constant strides become one 2-D
  `dma.ld` + `dma.st` pair through an SRAM tile (the SRAM side must be 64-byte aligned, DRAM
  addresses need not be); maps with many runs use one `dma.gather` per chunk of granules (the
  largest run length dividing every run) with the granule indices from the constant segment.
- **Elementwise**: operands broadcast as full tile / row vector / column vector / scalar of a 2-D
  block of the output (canonical dims; leading dims looped over), integer and bool operands
  converted to fp32 with vpu.cvt, the op as a VPU sequence (vmath.py), converted back on store.
  Integer arithmetic and comparisons on 32/64-bit integers are rejected: the VPU has no integer ALU
  and fp32 holds integers exactly only below 2^24 (8/16-bit integers are exact, except that
  overflow saturates where ONNX wraps).
- **Gather / GatherND with run-time indices**: indices normalised (negative -> +n) in fp32, cvt to
  i32, `dma.gather` from the data in DRAM.
- **Reductions** (ReduceSum/Mean/Max/Min/Prod): reduced axes moved last (movement), then row
  reductions (vpu.rsum / rmean / rmax, min as -max(-x)) or, for Prod, a halving tree of vpu.mul over
  the reduced axis moved first.
- **MatMul / Gemm** with two run-time operands: spu.mm per batch (B^T through tb=1, A^T through a
  movement), alpha/beta on the VPU. **Softmax** on the last axis (others: moved last and back).
  **LayerNormalization** with Mean / InvStdDev outputs.
"""

from __future__ import annotations

import math

import numpy as np

from s4c import ops as irops
from s4c.errors import TargetError

from .emit import SIZE, Region, rup
from .vmath import POW_EXPONENTS, VM, compute

TILE_BUDGET = 1 << 20
MAX_PATTERNS = 48


def _where(op) -> str:
    return f" (ONNX node {op.onnx_nodes[0]!r})" if op.onnx_nodes else ""


def reject(op, why: str):
    raise TargetError(f"S4 lowering: op {op.op} -> {op.outputs[0].name!r}{_where(op)}: {why}")


class Kernel:
    def check(self, L, op) -> None:
        pass

    def interleaved(self, L, op) -> bool:
        """Whether the op works on its row blocks interleaved rather than one after the other."""
        return False

    def row_info(self, L, op):
        return None

    def temp_dram(self, L, op) -> int:
        return 0

    def emit(self, L, op) -> None:
        raise NotImplementedError


# ==================================================================================================
# data movement
# ==================================================================================================
def copy_dram(L, src: Region, dst: Region, core: int = 0) -> None:
    """DRAM -> DRAM copy of a [R, C] region (through SRAM tiles)."""
    assert (src.rows, src.cols) == (dst.rows, dst.cols)
    per_row = rup(src.row_bytes)
    step = max(1, TILE_BUDGET // per_row)
    if src.row_bytes > TILE_BUDGET:   # one long row: re-view it as rows of 4096 elements
        n = src.rows * src.cols
        if src.rows == 1 and dst.rows == 1:
            cols = 4096
            for e0 in range(0, n, cols * 64):
                e1 = min(n, e0 + cols * 64)
                full = (e1 - e0) // cols
                if full:
                    copy_dram(L, Region.dram(src.addr + e0 * src.esize, full, cols, src.dt),
                              Region.dram(dst.addr + e0 * src.esize, full, cols, dst.dt), core)
                rest = (e1 - e0) - full * cols
                if rest:
                    off = (e0 + full * cols) * src.esize
                    copy_dram(L, Region.dram(src.addr + off, 1, rest, src.dt), Region.dram(dst.addr + off, 1, rest, dst.dt), core)
            return
        for r in range(src.rows):
            copy_dram(L, src.sub(r, 1), dst.sub(r, 1), core)
        return
    for r0 in range(0, src.rows, step):
        r1 = min(src.rows, r0 + step)
        c = core if core >= 0 else (r0 // step) % L.cores
        t = L.scratch(c).tile(r1 - r0, src.cols, src.dt)
        L.em.ld(c, t, src.sub(r0, r1 - r0))
        L.em.st(c, dst.sub(r0, r1 - r0), t)
        L.scratch(c).release(t)


def _runs(pos: np.ndarray, src: np.ndarray):
    """(dst starts, src starts, lengths) of the maximal runs where both advance by 1."""
    if pos.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    brk = np.ones(pos.size, bool)
    brk[1:] = (np.diff(pos) != 1) | (np.diff(src) != 1)
    starts = np.nonzero(brk)[0]
    lengths = np.diff(np.append(starts, pos.size))
    return pos[starts], src[starts], lengths


def _patterns(p, s, n):
    """Group runs into 2-D patterns: (rows, length, p0, s0, dst stride, src stride)."""
    out = []
    i, k = 0, len(n)
    while i < k:
        L0 = int(n[i])
        j = i + 1
        dp = ds = None
        while j < k and int(n[j]) == L0:
            dpj, dsj = int(p[j] - p[j - 1]), int(s[j] - s[j - 1])
            if dp is None:
                if dpj < L0 or dsj < L0:
                    break
                dp, ds = dpj, dsj
            elif dpj != dp or dsj != ds:
                break
            j += 1
        out.append((j - i, L0, int(p[i]), int(s[i]), dp or L0, ds or L0))
        i = j
    return out


def emit_map(L, dst_addr: int, dt: str, flat: np.ndarray, sources: list) -> None:
    """out[i] = source element flat[i] (or 0 where flat[i] == -1); sources: [(offset, count, dram addr)]."""
    es = SIZE[dt]
    n_out = flat.size
    if n_out == 0:
        return
    job = 0
    for off, count, addr in sources:
        sel = (flat >= off) & (flat < off + count)
        pos = np.nonzero(sel)[0]
        if pos.size == 0:
            continue
        src = flat[pos] - off
        p, s, n = _runs(pos, src)
        pats = _patterns(p, s, n)
        if len(pats) <= MAX_PATTERNS:
            for rows, length, p0, s0, dp, ds in pats:
                rb = rup(length * es)
                step = max(1, TILE_BUDGET // rb) if rb <= TILE_BUDGET else 1
                if rb > TILE_BUDGET:       # very long runs: cut along the run
                    for r in range(rows):
                        copy_dram(L, Region.dram(addr + (s0 + r * ds) * es, 1, length, dt),
                                  Region.dram(dst_addr + (p0 + r * dp) * es, 1, length, dt), core=job % L.cores)
                        job += 1
                    continue
                for r0 in range(0, rows, step):
                    r1 = min(rows, r0 + step)
                    c = job % L.cores
                    job += 1
                    t = L.scratch(c).tile(r1 - r0, length, dt)
                    L.em.ld(c, t, Region.dram(addr + (s0 + r0 * ds) * es, r1 - r0, length, dt, pitch=ds * es))
                    L.em.st(c, Region.dram(dst_addr + (p0 + r0 * dp) * es, r1 - r0, length, dt, pitch=dp * es), t)
                    L.scratch(c).release(t)
            continue
        # many runs: gather granules
        g = int(np.gcd.reduce(np.concatenate([n, s - s[0], p - p[0]]).astype(np.int64)))
        g = max(g, 1)
        base_off = int(s[0] % g)
        counts = n // g
        within = (np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)) * g
        gran_src = np.repeat(s, counts) + within
        gran_dst = np.repeat(p, counts) + within
        idx = ((gran_src - base_off) // g).astype(np.int32)
        trows = (count - base_off) // g
        table = Region.dram(addr + base_off * es, trows, g, dt)
        rb = rup(g * es)
        chunk = max(1, min(TILE_BUDGET // rb, 16384))
        idx_addr = L.const.add(idx)
        for k0 in range(0, idx.size, chunk):
            k1 = min(idx.size, k0 + chunk)
            c = job % L.cores
            job += 1
            iv = L.scratch(c).tile(1, k1 - k0, "i32")
            L.em.ld(c, iv, Region.dram(idx_addr + 4 * k0, 1, k1 - k0, "i32"))
            t = L.scratch(c).tile(k1 - k0, g, dt)
            L.em.gather(c, t, table, iv.addr)
            # store the granule rows to their places (runs of consecutive granules)
            gd = gran_dst[k0:k1]
            brk = np.ones(gd.size, bool)
            brk[1:] = np.diff(gd) != g
            starts = np.nonzero(brk)[0]
            lens = np.diff(np.append(starts, gd.size))
            for a, ln in zip(starts, lens):
                L.em.st(c, Region.dram(dst_addr + int(gd[a]) * es, int(ln), g, dt, pitch=g * es), t.sub(int(a), int(ln)))
            L.scratch(c).release(iv, t)
    zpos = np.nonzero(flat == -1)[0]
    if zpos.size:
        p, s, n = _runs(zpos, zpos)
        c = job % L.cores
        longest = int(n.max())
        width = min(longest, 4096)
        z = L.scratch(c).tile(1, width, dt)
        L.em.fill(c, z, 0.0)
        for p0, ln in zip(p, n):
            for e0 in range(0, int(ln), width):
                e1 = min(int(ln), e0 + width)
                L.em.st(c, Region.dram(dst_addr + (int(p0) + e0) * es, 1, e1 - e0, dt), z.sub(0, 1, 0, e1 - e0))
        L.scratch(c).release(z)


MOVE_DATA = {"Reshape": (0,), "Flatten": (0,), "Squeeze": (0,), "Unsqueeze": (0,), "Identity": (0,),
             "Dropout": (0,), "Transpose": (0,), "Slice": (0,), "Expand": (0,), "Tile": (0,), "Split": (0,),
             "Gather": (0,), "GatherND": (0,), "Trilu": (0,), "Concat": None}


def index_map(L, op, out: int = 0):
    """(flat source map of output `out`, [(offset, count, input Value)])."""
    data = MOVE_DATA[op.op]
    args, sources = [], []
    offset = 0
    for j, v in enumerate(op.inputs):
        if v is None:
            args.append(None)
            continue
        if data is None or j in data:
            info = L.info(v)
            args.append((np.arange(info.n, dtype=np.int64) + offset + 1).reshape(v.shape))
            sources.append((offset, info.n, v))
            offset += info.n
        else:
            args.append(np.asarray(v.data))
    res = irops.REGISTRY[op.op].run(args, op.attrs)[out]
    return np.asarray(res, dtype=np.int64).reshape(-1) - 1, sources


class MoveKernel(Kernel):
    def check(self, L, op):
        data = MOVE_DATA[op.op]
        for j, v in enumerate(op.inputs):
            if v is not None and data is not None and j not in data and not v.is_constant:
                reject(op, "a run-time index operand here is handled by the gather kernels")
        if any(L.info(v).dt != L.info(op.outputs[0]).dt for v in op.inputs if v is not None
               and (data is None or op.inputs.index(v) in data)):
            reject(op, "operand and result storage dtypes differ")

    def emit(self, L, op):
        from .lower import ALIAS_OPS
        if op.op in ALIAS_OPS and L.info(op.outputs[0]).root is not L.info(op.outputs[0]):
            return                                   # shares its operand's DRAM
        for k, v in enumerate(op.outputs):
            info = L.root(v)
            if info.n == 0 or info.dram is None:
                continue
            flat, sources = index_map(L, op, k)
            srcs = [(off, cnt, L.dram_of(x).addr) for off, cnt, x in sources]
            emit_map(L, info.dram, info.dt, flat, srcs)


class GatherRuntime(Kernel):
    """Gather(data, indices) with indices known only at run time: dma.gather from data in DRAM."""

    def check(self, L, op):
        if L.info(op.inputs[1]).irdt not in ("i64", "i32", "i16", "i8", "u8", "u16"):
            reject(op, "indices must be integers")

    def emit(self, L, op):
        data, idx = op.inputs
        out = L.root(op.outputs[0])
        if out.n == 0:
            return
        dinfo = L.info(data)
        axis = op.attrs.get("axis", 0) % len(data.shape)
        outer = int(np.prod(data.shape[:axis], dtype=np.int64))
        nrows = data.shape[axis]
        inner = int(np.prod(data.shape[axis + 1:], dtype=np.int64))
        nidx = L.info(idx).n
        if nidx == 0:
            return
        es = SIZE[dinfo.dt]
        c = 0
        iv = normalised_indices(L, c, idx, nrows)
        src = L.dram_of(data)
        for o in range(outer):
            table = Region.dram(src.addr + o * nrows * inner * es, nrows, inner, dinfo.dt)
            for k0 in range(0, nidx, 4096):
                k1 = min(nidx, k0 + 4096)
                t = L.scratch(c).tile(k1 - k0, inner, dinfo.dt)
                L.em.gather(c, t, table, iv.addr + 4 * k0)
                dst = Region.dram(out.dram + (o * nidx + k0) * inner * es, k1 - k0, inner, dinfo.dt)
                L.em.st(c, dst, t)
                L.scratch(c).release(t)


def normalised_indices(L, c: int, idx, n: int, flat_terms=None) -> Region:
    """The indices as a packed i32 vector in SRAM, negative ones + n (computed in fp32: exact)."""
    info = L.info(idx)
    raw = L.load_vector(c, idx, f32=True)
    vm = VM(L, c, 1, info.n)
    neg = vm.axpb((raw, "full"), -1.0)
    s = vm.step(neg, dst=neg)
    L.em.axpb(c, s, s, float(n), 0.0)
    L.em.vbin(c, "add", raw, raw, s)
    out = L.scratch(c).tile(1, info.n, "i32")
    L.em.cvt(c, out, raw)
    vm.free()
    return out


class GatherNDRuntime(Kernel):
    def emit(self, L, op):
        data, idx = op.inputs
        out = L.root(op.outputs[0])
        if out.n == 0:
            return
        b = op.attrs.get("batch_dims", 0)
        k = idx.shape[-1]
        dshape = data.shape
        nb = int(np.prod(dshape[:b], dtype=np.int64))
        inner = int(np.prod(dshape[b + k:], dtype=np.int64))
        per_batch_rows = int(np.prod(dshape[b:b + k], dtype=np.int64))
        m = int(np.prod(idx.shape[b:-1], dtype=np.int64))       # lookups per batch
        c = 0
        count = nb * m
        vm = VM(L, c, 1, 1)
        rowsum = L.scratch(c).tile(1, count, "f32")
        L.em.fill(c, rowsum, 0.0)
        strides = [int(np.prod(dshape[b + j + 1:b + k], dtype=np.int64)) for j in range(k)]
        # column j of the [count, k] index matrix: gather it with a strided DMA from DRAM instead
        src = L.dram_of(idx)
        es = SIZE[L.info(idx).dt]
        for j in range(k):
            col = L.scratch(c).tile(1, count, L.info(idx).dt)
            if k == 1:
                L.em.ld(c, col, Region.dram(src.addr, 1, count, L.info(idx).dt))
            else:
                _strided_vector(L, c, col, src.addr + j * es, count, k * es)
            colf = L.scratch(c).tile(1, count, "f32")
            L.em.cvt(c, colf, col)
            vmj = VM(L, c, 1, count)
            neg = vmj.axpb((colf, "full"), -1.0)
            s = vmj.step(neg, dst=neg)
            L.em.axpb(c, s, s, float(dshape[b + j]), 0.0)
            L.em.vbin(c, "add", colf, colf, s)
            L.em.axpb(c, colf, colf, float(strides[j]), 0.0)
            L.em.vbin(c, "add", rowsum, rowsum, colf)
            vmj.free()
        if nb > 1:
            bo = np.repeat(np.arange(nb, dtype=np.float32) * per_batch_rows, m)
            bv = L.const_vector(c, bo)
            L.em.vbin(c, "add", rowsum, rowsum, bv)
        iv = L.scratch(c).tile(1, count, "i32")
        L.em.cvt(c, iv, rowsum)
        dinfo = L.info(data)
        table = Region.dram(L.dram_of(data).addr, nb * per_batch_rows, inner, dinfo.dt)
        t = L.scratch(c).tile(count, inner, dinfo.dt)
        L.em.gather(c, t, table, iv.addr)
        L.em.st(c, Region.dram(out.dram, count, inner, dinfo.dt), t)
        vm.free()


def _strided_vector(L, c, dst: Region, addr: int, count: int, stride: int) -> None:
    """`count` elements `stride` bytes apart in DRAM -> a packed SRAM vector: loaded as [count, 1]
    rows (one per 64-byte SRAM row), then transposed to [1, count]."""
    t = L.scratch(c).tile(count, 1, dst.dt)
    L.em.ld(c, t, Region.dram(addr, count, 1, dst.dt, pitch=stride))
    L.em.trans(c, dst, t)
    L.scratch(c).release(t)


# ==================================================================================================
# elementwise
# ==================================================================================================
INT32ISH = ("i32", "i64")
ARITH_OR_COMPARE = {"Add", "Sub", "Mul", "Div", "Pow", "Neg", "Abs", "Sum", "Max", "Min", "Clip", "Sign",
                    "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Reciprocal",
                    "Relu", "Floor", "Ceil", "Sqrt", "Exp"}


def ew_operands(op):
    """(operand Values, their broadcast shapes) of an elementwise op."""
    name = op.op
    if name in ("Cast",):
        return [op.inputs[0]], [op.inputs[0].shape]
    if name == "CastLike":
        return [op.inputs[0]], [op.inputs[0].shape]
    if name == "DequantizeLinear":
        x = op.inputs[0]
        shapes = [x.shape]
        axis = op.attrs.get("axis", 1) % max(len(x.shape), 1)
        for v in op.inputs[1:3]:
            if v is None:
                shapes.append(None)
            elif len(v.shape) == 1 and len(x.shape) > 0:
                s = [1] * len(x.shape)
                s[axis] = v.shape[0]
                shapes.append(tuple(s))
            else:
                shapes.append(v.shape)
        return list(op.inputs[:3]) + [None] * (3 - len(op.inputs[:3])), shapes
    return list(op.inputs), [v.shape if v is not None else None for v in op.inputs]


class Elementwise(Kernel):
    def check(self, L, op):
        name = op.op
        out_dt = op.outputs[0].dtype
        vals, _ = ew_operands(op)
        in_dts = {v.dtype for v in vals if v is not None}
        if name in ("Log", "LogSoftmax"):
            reject(op, "the S4 VPU has no logarithm")
        if name == "Pow":
            e = op.inputs[1]
            if not e.is_constant or np.asarray(e.data).size != 1 or float(np.asarray(e.data).reshape(-1)[0]) not in POW_EXPONENTS:
                reject(op, "Pow needs a constant exponent in {0, +-0.5, +-1, 2, 3, 4} (the VPU has no log/pow)")
            if op.inputs[0].dtype not in ("f32", "f16", "f64"):
                reject(op, "integer Pow (the S4 VPU has no integer arithmetic)")
        if name in ARITH_OR_COMPARE and (in_dts & set(INT32ISH) or out_dt in INT32ISH):
            reject(op, "32/64-bit integer arithmetic and comparisons: the S4 VPU has no integer ALU and "
                       "fp32 holds such integers exactly only below 2^24")
        if name in ("Cast", "CastLike") and op.inputs[0].dtype in ("f32", "f16", "f64") and out_dt in INT32ISH:
            pass   # float -> int truncates; values beyond the i32 range saturate

    def _row_modes(self, L, op):
        out = op.outputs[0].shape
        R = int(np.prod(out[:-1], dtype=np.int64)) if len(out) > 1 else 1
        C = out[-1] if out else 1
        vals, shapes = ew_operands(op)
        modes = []
        for v, s in zip(vals, shapes):
            if v is None:
                modes.append(None)
                continue
            s = (1,) * (len(out) - len(s)) + tuple(s)
            if s == tuple(out):
                mode = "full"
            elif all(d == 1 for d in s):
                mode = "scalar"
            elif all(d == 1 for d in s[:-1]) and s[-1] == C:
                mode = "row"
            elif s[-1] == 1 and s[:-1] == tuple(out[:-1]):
                mode = "col"
            else:
                return None
            modes.append(mode)
        return R, C, modes

    def row_info(self, L, op):
        if len(op.outputs) != 1 or not op.outputs[0].shape:
            return None
        plan = self._row_modes(L, op)
        if plan is None:
            return None
        R, C, modes = plan
        vals, _ = ew_operands(op)
        local = tuple(j for j, (v, md) in enumerate(zip(vals, modes)) if v is not None and md == "full"
                      and not v.is_constant and L.info(v).dt == "f32")
        from .lower import RowInfo
        return RowInfo(R, local)

    def temp_dram(self, L, op):
        if op.op == "Where" and L.info(op.outputs[0]).dt != "f32":
            n = L.info(op.outputs[0]).n
            return 3 * rup(n * 4) + rup(n)
        if op.op == "DequantizeLinear" and op.attrs.get("block_size"):
            return 2 * rup(L.info(op.outputs[0]).n * 4) + 2 * rup(L.info(op.inputs[0]).n * 4)
        return 0

    def emit(self, L, op):
        out = L.root(op.outputs[0])
        if out.n == 0:
            return
        if op.op == "DequantizeLinear" and op.attrs.get("block_size"):
            return self._emit_blocked_dq(L, op)
        if op.op == "Where" and out.dt != "f32":
            return self._emit_where_gather(L, op)
        plan = self._row_modes(L, op) if op.outputs[0].shape else None
        if plan is not None:
            self._emit_rows(L, op, *plan)
        else:
            self._emit_canonical(L, op)

    def _emit_where_gather(self, L, op):
        """Where on integer / bool data, exact for every value: y then x broadcast into one DRAM
        table [2n], row index i + cond[i] * n computed in fp32 (exact below 2^24), one dma.gather."""
        c, x, y = op.inputs
        out = L.root(op.outputs[0])
        n, dt, es = out.n, out.dt, SIZE[out.dt]
        if 2 * n >= 1 << 24:
            reject(op, "integer Where over 2^23 elements or more")
        O = tuple(op.outputs[0].shape)
        tmp = L.temp_dram[L.em.op_index]
        table = tmp
        cond = tmp + rup(2 * n * es)
        for k, v in enumerate((y, x)):
            info = L.info(v)
            flat = np.broadcast_to(np.arange(info.n, dtype=np.int64).reshape(v.shape), O).reshape(-1)
            emit_map(L, table + k * n * es, dt, flat, [(0, info.n, L.dram_of(v).addr)])
        cinfo = L.info(c)
        flat = np.broadcast_to(np.arange(cinfo.n, dtype=np.int64).reshape(c.shape), O).reshape(-1)
        emit_map(L, cond, cinfo.dt, flat, [(0, cinfo.n, L.dram_of(c).addr)])
        core, sc, em = 0, L.scratch(0), L.em
        for k0 in range(0, n, 8192):
            k1 = min(n, k0 + 8192)
            m = k1 - k0
            cu = sc.tile(1, m, cinfo.dt)
            em.ld(core, cu, Region.dram(cond + k0 * SIZE[cinfo.dt], 1, m, cinfo.dt))
            cf = sc.tile(1, m, "f32")
            em.cvt(core, cf, cu)
            em.axpb(core, cf, cf, float(n), 0.0)
            ar = L.const_vector(core, np.arange(k0, k1, dtype=np.float32))
            em.vbin(core, "add", cf, cf, ar)
            iv = sc.tile(1, m, "i32")
            em.cvt(core, iv, cf)
            t = sc.tile(m, 1, dt)
            em.gather(core, t, Region.dram(table, 2 * n, 1, dt), iv.addr)
            em.st(core, Region.dram(out.dram + k0 * es, m, 1, dt), t)
            sc.release(cu, cf, ar, iv, t)

    def _emit_blocked_dq(self, L, op):
        """Blocked DequantizeLinear: scale (and zero point) repeated along `axis` into DRAM
        scratch by a movement map, then the elementwise kernel on full-shaped operands."""
        x = op.inputs[0]
        axis = op.attrs.get("axis", 1) % len(x.shape)
        bs = op.attrs["block_size"]
        tmp = L.temp_dram[L.em.op_index]
        descs = [(L.dram_of(x).addr, L.info(x).dt, tuple(x.shape), None)]
        for v in op.inputs[1:3]:
            if v is None:
                descs.append(None)
                continue
            info = L.info(v)
            n = info.n
            flat = np.repeat(np.arange(n, dtype=np.int64).reshape(v.shape), bs, axis=axis)
            flat = flat.take(range(x.shape[axis]), axis=axis).reshape(-1)
            emit_map(L, tmp, info.dt, flat, [(0, n, L.dram_of(v).addr)])
            descs.append((tmp, info.dt, tuple(x.shape), None))
            tmp += rup(flat.size * SIZE[info.dt])
        while len(descs) < 3:
            descs.append(None)
        self._emit_canonical(L, op, descs)

    # -- row kernel path: [R, C] = [prod(shape[:-1]), shape[-1]], rows split over the cores -------
    def _emit_rows(self, L, op, R, C, modes):
        vals, _ = ew_operands(op)
        outv = op.outputs[0]
        budget_rows = max(1, (TILE_BUDGET // 2) // rup(C * 4))
        for core in range(L.cores):
            L.em.block = 0
            tiles = L.row_tiles(R, core, budget_rows)
            if not tiles:
                continue
            vecs = {}
            for j, (v, md) in enumerate(zip(vals, modes)):
                if v is not None and md in ("row", "scalar"):
                    vecs[j] = L.load_vector(core, v, f32=True)
            for r0, r1 in tiles:
                L.set_block(R, core, r0)
                operands, owned = [], []
                for j, (v, md) in enumerate(zip(vals, modes)):
                    if v is None:
                        operands.append(None)
                        continue
                    cval = _scalar_const(v)
                    if md == "full":
                        t, own = L.src_rows(core, v, r0, r1)
                        if own:
                            owned.append(t)
                        operands.append((t, "full", cval))
                    elif md == "col":
                        t = L.load_vector(core, v, True, r0, r1 - r0)
                        owned.append(t)
                        operands.append((t, "col", cval))
                    else:
                        operands.append((vecs[j], md, cval))
                vm = VM(L, core, r1 - r0, C)
                res = compute(vm, op, operands, outv.dtype)
                dst, own = L.dst_rows(core, outv, r0, r1)
                if own:
                    L.commit_rows(core, outv, res, r0, r1, owned=False)
                    L.scratch(core).release(dst)
                else:
                    L.em.copy(core, dst, res)
                    L.commit_rows(core, outv, dst, r0, r1, owned=False)
                vm.free()
                L.scratch(core).release(*owned)
            L.scratch(core).release(*vecs.values())

    # -- generic path: canonical broadcast dims, outer dims looped ----------------------------------
    def _emit_canonical(self, L, op, descs=None):
        vals, shapes = ew_operands(op)
        if descs is None:
            descs = [None if v is None else (L.dram_of(v).addr, L.info(v).dt, s, _scalar_const(v))
                     for v, s in zip(vals, shapes)]
        shapes = [None if d is None else d[2] for d in descs]
        vals = descs
        outv = op.outputs[0]
        out = L.root(outv)
        O = tuple(outv.shape)
        r = len(O)
        pads = [None if s is None else (1,) * (r - len(s)) + tuple(s) for s in shapes]
        dims = [i for i in range(r) if O[i] != 1]
        # merge adjacent dims with the same broadcast pattern
        groups: list[list[int]] = []
        for d in dims:
            pat = tuple(p is not None and p[d] == 1 for p in pads)
            if groups and groups[-1][0] == pat:
                groups[-1][1].append(d)
            else:
                groups.append([pat, [d]])
        cdims = [int(np.prod([O[d] for d in ds])) for _, ds in groups]
        bc = [[g[0][j] for g in groups] for j in range(len(vals))]
        # per operand strides over canonical dims (elements)
        strides = []
        for j, v in enumerate(vals):
            if v is None:
                strides.append(None)
                continue
            st = [0] * len(cdims)
            acc = 1
            for gi in range(len(cdims) - 1, -1, -1):
                if not bc[j][gi]:
                    st[gi] = acc
                    acc *= cdims[gi]
            strides.append(st)
        ost = [0] * len(cdims)
        acc = 1
        for gi in range(len(cdims) - 1, -1, -1):
            ost[gi] = acc
            acc *= cdims[gi]
        if len(cdims) == 0:
            cdims, ost, strides = [1], [1], [None if s is None else [0] for s in strides]
            bc = [[True] for _ in vals]
        if len(cdims) == 1:
            cdims = [1] + cdims
            ost = [0] + ost
            strides = [None if s is None else [0] + s for s in strides]
            bc = [[True] + b for b in bc]
        R, C = cdims[-2], cdims[-1]
        outer = cdims[:-2]
        es_out = SIZE[out.dt]
        cmax = 4096
        rows_step = max(1, (TILE_BUDGET // 2) // rup(min(C, cmax) * 4))
        job = 0
        for oidx in np.ndindex(*outer) if outer else [()]:
            for r0 in range(0, R, rows_step):
                r1 = min(R, r0 + rows_step)
                for c0 in range(0, C, cmax):
                    c1 = min(C, c0 + cmax)
                    core = job % L.cores if R * C * len(outer or [1]) > 65536 else 0
                    job += 1
                    operands, owned = [], []
                    for j, v in enumerate(vals):
                        if v is None:
                            operands.append(None)
                            continue
                        addr0, vdt, _, cval = v
                        info = _Desc(vdt)
                        st = strides[j]
                        base = addr0 + sum(i * s for i, s in zip(oidx, st[:-2])) * SIZE[info.dt]
                        sr, sc = st[-2], st[-1]
                        if sr and sc:
                            src = Region.dram(base + (r0 * sr + c0 * sc) * SIZE[info.dt], r1 - r0, c1 - c0, info.dt,
                                              pitch=sr * SIZE[info.dt])
                            mode, rows, cols = "full", r1 - r0, c1 - c0
                        elif sc:
                            src = Region.dram(base + c0 * sc * SIZE[info.dt], 1, c1 - c0, info.dt)
                            mode, rows, cols = "row", 1, c1 - c0
                        elif sr:
                            src = Region.dram(base + r0 * sr * SIZE[info.dt], 1, r1 - r0, info.dt)
                            mode, rows, cols = "col", 1, r1 - r0
                        else:
                            src = Region.dram(base, 1, 1, info.dt)
                            mode, rows, cols = "scalar", 1, 1
                        t = L.scratch(core).tile(rows, cols, info.dt)
                        L.em.ld(core, t, src)
                        owned.append(t)
                        if info.dt != "f32":
                            f = L.scratch(core).tile(rows, cols, "f32")
                            L.em.cvt(core, f, t)
                            owned.append(f)
                            t = f
                        operands.append((t, mode, cval))
                    vm = VM(L, core, r1 - r0, c1 - c0)
                    res = compute(vm, op, operands, outv.dtype)
                    obase = out.dram + (sum(i * s for i, s in zip(oidx, ost[:-2])) + r0 * ost[-2] + c0) * es_out
                    dst = Region.dram(obase, r1 - r0, c1 - c0, out.dt, pitch=max(ost[-2], 1) * es_out)
                    if out.dt != "f32":
                        conv = L.scratch(core).tile(r1 - r0, c1 - c0, out.dt)
                        L.em.cvt(core, conv, res)
                        L.em.st(core, dst, conv)
                        L.scratch(core).release(conv)
                    else:
                        L.em.st(core, dst, res)
                    vm.free()
                    L.scratch(core).release(*owned)


class _Desc:
    def __init__(self, dt):
        self.dt = dt


def _scalar_const(v):
    if v is not None and v.is_constant and np.asarray(v.data).size == 1:
        return float(np.asarray(v.data).reshape(-1)[0])
    return None


# ==================================================================================================
# reductions, matmul, gemm, softmax, LayerNormalization (generic views)
# ==================================================================================================
def _transpose_map(shape, perm) -> np.ndarray:
    n = int(np.prod(shape, dtype=np.int64))
    return np.arange(n, dtype=np.int64).reshape(shape).transpose(perm).reshape(-1)


def _reduce_axes(op, rank):
    axes = op.attrs.get("axes")
    if not axes:
        return None if not op.attrs.get("noop_with_empty_axes", 0) else ()
    return tuple(sorted(a % max(rank, 1) for a in axes))


class ReduceKernel(Kernel):
    def check(self, L, op):
        if op.inputs[0].dtype in INT32ISH:
            reject(op, "reductions of 32/64-bit integers: the S4 VPU has no integer ALU")

    def _plan(self, op):
        x = op.inputs[0]
        rank = len(x.shape)
        axes = _reduce_axes(op, rank)
        if axes is None:
            axes = tuple(range(rank))
        kept = [i for i in range(rank) if i not in axes]
        perm = kept + list(axes)
        K = int(np.prod([x.shape[a] for a in axes], dtype=np.int64)) if axes else 1
        M = int(np.prod([x.shape[a] for a in kept], dtype=np.int64)) if kept else 1
        return axes, perm, M, K

    def temp_dram(self, L, op):
        axes, perm, M, K = self._plan(op)
        if axes == () or perm == sorted(perm):
            return 0
        return L.info(op.inputs[0]).nbytes

    def emit(self, L, op):
        x, outv = op.inputs[0], op.outputs[0]
        out = L.root(outv)
        if out.n == 0:
            return
        xi = L.info(x)
        axes, perm, M, K = self._plan(op)
        if axes == ():
            copy_dram(L, L.dram_of(x), Region.dram(out.dram, xi.R, xi.C, xi.dt))
            return
        es = SIZE[xi.dt]
        src_addr = L.dram_of(x).addr if xi.n else 0
        if perm != sorted(perm) and xi.n:
            tmp = L.temp_dram[L.em.op_index]
            emit_map(L, tmp, xi.dt, _transpose_map(x.shape, perm), [(0, xi.n, src_addr)])
            src_addr = tmp
        kind = op.op
        if K == 0:
            ident = {"ReduceSum": 0.0, "ReduceProd": 1.0, "ReduceMax": -math.inf, "ReduceMin": math.inf,
                     "ReduceMean": math.nan}[kind]
            if out.dt != "f32" and not math.isfinite(ident):
                ident = 0.0 if kind == "ReduceMax" else 255.0
            c = 0
            t = L.scratch(c).tile(1, M, out.dt)
            L.em.fill(c, t, ident if math.isfinite(ident) else ident)
            L.em.st(c, Region.dram(out.dram, 1, M, out.dt), t)
            L.scratch(c).release(t)
            return
        step = max(1, (TILE_BUDGET // 2) // rup(K * 4))
        if K * 4 > 4 * TILE_BUDGET:
            reject(op, f"reduction over {K} elements at once is larger than the S4 tiles")
        job = 0
        for r0 in range(0, M, step):
            r1 = min(M, r0 + step)
            c = job % L.cores if M * K > 65536 else 0
            job += 1
            sc = L.scratch(c)
            t = sc.tile(r1 - r0, K, xi.dt)
            L.em.ld(c, t, Region.dram(src_addr + r0 * K * es, r1 - r0, K, xi.dt))
            owned = [t]
            if xi.dt != "f32":
                f = sc.tile(r1 - r0, K, "f32")
                L.em.cvt(c, f, t)
                owned.append(f)
                t = f
            res = sc.tile(1, r1 - r0, "f32")
            owned.append(res)
            if kind in ("ReduceSum", "ReduceMean", "ReduceMax"):
                L.em.reduce(c, {"ReduceSum": "rsum", "ReduceMean": "rmean", "ReduceMax": "rmax"}[kind], res.addr, t)
            elif kind == "ReduceMin":
                L.em.axpb(c, t, t, -1.0, 0.0)
                L.em.reduce(c, "rmax", res.addr, t)
                L.em.axpb(c, res, res, -1.0, 0.0)
            else:   # ReduceProd: rows of the transposed tile multiplied pairwise
                tt = sc.tile(K, r1 - r0, "f32")
                owned.append(tt)
                L.em.trans(c, tt, t)
                kk = K
                while kk > 1:
                    h = kk // 2
                    L.em.vbin(c, "mul", tt.sub(0, h), tt.sub(0, h), tt.sub(kk - h, h))
                    kk -= h
                L.em.copy(c, res, tt.sub(0, 1))
            store_vector(L, c, res, Region.dram(out.dram + r0 * SIZE[out.dt], 1, r1 - r0, out.dt))
            sc.release(*owned)


def store_vector(L, c, vec: Region, dst: Region) -> None:
    if dst.dt != vec.dt:
        t = L.scratch(c).tile(1, vec.cols, dst.dt)
        L.em.cvt(c, t, vec)
        L.em.st(c, dst, t)
        L.scratch(c).release(t)
    else:
        L.em.st(c, dst, vec)


class MatMulGeneric(Kernel):
    """numpy-style batched MatMul of two run-time (or non-2-D constant) operands: spu.mm per batch."""

    def check(self, L, op):
        if op.inputs[0].dtype != "f32" or op.inputs[1].dtype != "f32":
            reject(op, "MatMul on S4 is fp32 (the VPU/SPU have no exact integer matmul for these types)")

    def emit(self, L, op):
        a, b = op.inputs
        out = L.root(op.outputs[0])
        if out.n == 0:
            return
        ash, bsh = tuple(a.shape), tuple(b.shape)
        a2 = (1,) + ash if len(ash) == 1 else ash
        b2 = bsh + (1,) if len(bsh) == 1 else bsh
        M, K = a2[-2], a2[-1]
        N = b2[-1]
        batch = tuple(np.broadcast_shapes(a2[:-2], b2[:-2]))
        ab = (1,) * (len(batch) - len(a2[:-2])) + a2[:-2]
        bb = (1,) * (len(batch) - len(b2[:-2])) + b2[:-2]
        abase, bbase = L.dram_of(a).addr, L.dram_of(b).addr
        job = 0
        if K * rup(N * 4) > 4 * TILE_BUDGET:
            reject(op, "the B operand of one batch is larger than the S4 tiles")
        mstep = max(1, TILE_BUDGET // rup(max(K, N) * 4))
        for bi, idx in enumerate(np.ndindex(*batch) if batch else [()]):
            ao = sum(i * int(np.prod(ab[j + 1:], dtype=np.int64)) for j, i in enumerate(idx) if ab[j] != 1) * M * K
            bo = sum(i * int(np.prod(bb[j + 1:], dtype=np.int64)) for j, i in enumerate(idx) if bb[j] != 1) * K * N
            if K == 0:
                for m0 in range(0, M, mstep):
                    m1 = min(M, m0 + mstep)
                    c = job % L.cores
                    job += 1
                    t = L.scratch(c).tile(m1 - m0, N, "f32")
                    L.em.fill(c, t, 0.0)
                    L.em.st(c, Region.dram(out.dram + (bi * M * N + m0 * N) * 4, m1 - m0, N, "f32"), t)
                    L.scratch(c).release(t)
                continue
            for m0 in range(0, M, mstep):
                m1 = min(M, m0 + mstep)
                c = job % L.cores
                job += 1
                sc = L.scratch(c)
                A = sc.tile(m1 - m0, K, "f32")
                L.em.ld(c, A, Region.dram(abase + (ao + m0 * K) * 4, m1 - m0, K, "f32"))
                B = sc.tile(K, N, "f32")
                L.em.ld(c, B, Region.dram(bbase + bo * 4, K, N, "f32"))
                C = sc.tile(m1 - m0, N, "f32")
                L.em.mm(c, C, A, B, tb=False)
                L.em.st(c, Region.dram(out.dram + (bi * M * N + m0 * N) * 4, m1 - m0, N, "f32"), C)
                sc.release(A, B, C)


class GemmKernel(Kernel):
    def check(self, L, op):
        if any(v is not None and v.dtype != "f32" for v in op.inputs):
            reject(op, "Gemm on S4 is fp32")

    def emit(self, L, op):
        a, b = op.inputs[:2]
        cv = op.inputs[2] if len(op.inputs) > 2 else None
        out = L.root(op.outputs[0])
        if out.n == 0:
            return
        ta, tb = op.attrs.get("transA", 0), op.attrs.get("transB", 0)
        alpha, beta = float(op.attrs.get("alpha", 1.0)), float(op.attrs.get("beta", 1.0))
        M, N = op.outputs[0].shape
        K = a.shape[0] if ta else a.shape[1]
        c = 0
        sc = L.scratch(c)
        em = L.em
        C = sc.tile(M, N, "f32")
        if K == 0:
            em.fill(c, C, 0.0)
        else:
            A = sc.tile(M, K, "f32")
            if ta:
                At = sc.tile(K, M, "f32")
                em.ld(c, At, L.dram_of(a))
                em.trans(c, A, At)
            else:
                em.ld(c, A, L.dram_of(a))
            B = sc.tile(N, K, "f32") if tb else sc.tile(K, N, "f32")
            em.ld(c, B, L.dram_of(b))
            em.mm(c, C, A, B, tb=bool(tb))
            if alpha != 1.0:
                em.axpb(c, C, C, alpha, 0.0)
        if cv is not None and beta != 0.0:
            cs = (1,) * (2 - len(cv.shape)) + tuple(cv.shape)
            src = L.dram_of(cv)
            if cs == (M, N):
                t, mode = sc.tile(M, N, "f32"), "full"
                em.ld(c, t, Region.dram(src.addr, M, N, "f32"))
            elif cs[0] == 1 and cs[1] == N:
                t, mode = sc.tile(1, N, "f32"), "row"
                em.ld(c, t, Region.dram(src.addr, 1, N, "f32"))
            elif cs[1] == 1 and cs[0] == M:
                t, mode = sc.tile(1, M, "f32"), "col"
                em.ld(c, t, Region.dram(src.addr, 1, M, "f32"))
            else:
                t, mode = sc.tile(1, 1, "f32"), "scalar"
                em.ld(c, t, Region.dram(src.addr, 1, 1, "f32"))
            if beta != 1.0:
                em.axpb(c, t, t, beta, 0.0)
            em.vbin(c, "add", C, C, t, bcast=mode)
        em.st(c, Region.dram(out.dram, M, N, "f32"), C)


class SoftmaxKernel(Kernel):
    def check(self, L, op):
        if op.inputs[0].dtype != "f32":
            reject(op, "Softmax on S4 is fp32")

    def _axis(self, op):
        return op.attrs.get("axis", -1) % max(len(op.inputs[0].shape), 1)

    def row_info(self, L, op):
        x = op.inputs[0]
        if not x.shape or self._axis(op) != len(x.shape) - 1:
            return None
        from .lower import RowInfo
        return RowInfo(L.info(x).R, (0,))

    def temp_dram(self, L, op):
        x = op.inputs[0]
        if not x.shape or self._axis(op) == len(x.shape) - 1:
            return 0
        return 2 * L.info(x).nbytes

    def emit(self, L, op):
        x, outv = op.inputs[0], op.outputs[0]
        xi = L.info(x)
        if xi.n == 0:
            return
        if not x.shape:
            t = L.scratch(0).tile(1, 1, "f32")
            L.em.fill(0, t, 1.0)
            L.em.st(0, Region.dram(L.root(outv).dram, 1, 1, "f32"), t)
            return
        axis = self._axis(op)
        rank = len(x.shape)
        if axis == rank - 1:
            R, C = xi.R, xi.C
            for core in range(L.cores):
                L.em.block = 0
                for r0, r1 in L.row_tiles(R, core, TILE_BUDGET // rup(C * 4)):
                    X, own_x = L.src_rows(core, x, r0, r1)
                    Y, own_y = L.dst_rows(core, outv, r0, r1)
                    L.em.softmax(core, Y, X, 1.0)
                    L.commit_rows(core, outv, Y, r0, r1, own_y)
                    if own_x:
                        L.scratch(core).release(X)
            return
        perm = [i for i in range(rank) if i != axis] + [axis]
        tmp = L.temp_dram[L.em.op_index]
        tmp2 = tmp + rup(xi.nbytes)
        emit_map(L, tmp, "f32", _transpose_map(x.shape, perm), [(0, xi.n, L.dram_of(x).addr)])
        C = x.shape[axis]
        R = xi.n // C
        step = max(1, TILE_BUDGET // rup(C * 4))
        for r0 in range(0, R, step):
            r1 = min(R, r0 + step)
            t = L.scratch(0).tile(r1 - r0, C, "f32")
            L.em.ld(0, t, Region.dram(tmp + r0 * C * 4, r1 - r0, C, "f32"))
            L.em.softmax(0, t, t, 1.0)
            L.em.st(0, Region.dram(tmp2 + r0 * C * 4, r1 - r0, C, "f32"), t)
            L.scratch(0).release(t)
        tshape = tuple(x.shape[p] for p in perm)
        inv = list(np.argsort(perm))
        emit_map(L, L.root(outv).dram, "f32", _transpose_map(tshape, inv), [(0, xi.n, tmp2)])


def layernorm_generic(L, op, axis: int, eps: float) -> None:
    """ONNX LayerNormalization over the axes from `axis` on, with the optional Mean / InvStdDev."""
    x = op.inputs[0]
    gamma = op.inputs[1]
    beta = op.inputs[2] if len(op.inputs) > 2 else None
    xi = L.info(x)
    if xi.n == 0:
        return
    C = int(np.prod(x.shape[axis:], dtype=np.int64))
    R = xi.n // C
    src = L.dram_of(x)
    Y = L.root(op.outputs[0])
    stats = [L.root(v) for v in op.outputs[1:]]
    step = max(1, (TILE_BUDGET // 3) // rup(C * 4))
    em = L.em

    def vec(core, v):
        if v is None:
            return L.const_vector(core, np.zeros(C, np.float32))
        if v.is_constant:
            return L.const_vector(core, np.broadcast_to(np.asarray(v.data, np.float32), x.shape[axis:]).reshape(-1))
        return L.load_vector(core, v)

    for core, (p0, p1) in enumerate(L.generic_part(R)):
        if p1 <= p0:
            continue
        sc = L.scratch(core)
        g, b = vec(core, gamma), vec(core, beta)
        for r0 in range(p0, p1, step):
            r1 = min(p1, r0 + step)
            t = sc.tile(r1 - r0, C, "f32")
            em.ld(core, t, Region.dram(src.addr + r0 * C * 4, r1 - r0, C, "f32"))
            if stats:
                mean = sc.tile(1, r1 - r0, "f32")
                em.reduce(core, "rmean", mean.addr, t)
                cen = sc.tile(r1 - r0, C, "f32")
                em.vbin(core, "sub", cen, t, mean, bcast="col")
                em.vbin(core, "mul", cen, cen, cen)
                var = sc.tile(1, r1 - r0, "f32")
                em.reduce(core, "rmean", var.addr, cen)
                em.axpb(core, var, var, 1.0, float(np.float32(eps)))
                em.vun(core, "rsqrt", var, var)
                if stats[0].dram is not None:
                    em.st(core, Region.dram(stats[0].dram + r0 * 4, 1, r1 - r0, "f32"), mean)
                if len(stats) > 1 and stats[1].dram is not None:
                    em.st(core, Region.dram(stats[1].dram + r0 * 4, 1, r1 - r0, "f32"), var)
                sc.release(mean, cen, var)
            em.layernorm(core, t, t, g, b, eps)
            em.st(core, Region.dram(Y.dram + r0 * C * 4, r1 - r0, C, "f32"), t)
            sc.release(t)
