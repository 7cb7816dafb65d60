"""Data movement kernels: any shape, operands in DRAM.

Transpose, Slice, Concat, Split, Expand, Tile, Trilu, Gather / GatherND / GatherElements with
constant indices, and Reshape-like ops when they cannot just alias: the op's own reference runs at
compile time on index arrays, which gives, for every output element, the source element (or zero).
That map is cut into runs; runs of equal length with constant strides become one 2-D `dma.ld` +
`dma.st` pair through an SRAM tile (the SRAM side must be 64-byte aligned, DRAM addresses need not
be); maps with many runs use one `dma.gather` per chunk of granules (the largest run length dividing
every run) with the granule indices from the constant segment.

`emit_map` / `copy_dram` / `transpose_map` are also what the other kernels use to move operands
(reductions and Softmax move the reduced axis last, blocked DequantizeLinear and integer Where
broadcast their operands, the lowering copies graph outputs that are inputs, constants or
another output).
"""

from __future__ import annotations

import numpy as np

from s4c import ops as irops

from .base import ALIAS_OPS, SIZE, TILE_BUDGET, Kernel, kernel, reject, rup
from .stream import Region

MAX_PATTERNS = 48


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
             "Gather": (0,), "GatherND": (0,), "GatherElements": (0,), "Trilu": (0,), "Concat": None}


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


# the Gather family registers in gather.py (constant indices come back here)
@kernel(*sorted(set(MOVE_DATA) - {"Gather", "GatherND", "GatherElements"}))
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
        if op.op in ALIAS_OPS and L.info(op.outputs[0]).root is not L.info(op.outputs[0]):
            return                                   # shares its operand's DRAM
        for k, v in enumerate(op.outputs):
            info = L.root(v)
            if info.n == 0 or info.dram is None:
                continue
            flat, sources = index_map(L, op, k)
            srcs = [(off, cnt, L.dram_of(x).addr) for off, cnt, x in sources]
            emit_map(L, info.dram, info.dt, flat, srcs)


def transpose_map(shape, perm) -> np.ndarray:
    n = int(np.prod(shape, dtype=np.int64))
    return np.arange(n, dtype=np.int64).reshape(shape).transpose(perm).reshape(-1)
