"""Gather / GatherND / GatherElements: the registered kernels dispatch on the indices. Constant
indices are data movement (movement.py); indices known only at run time are normalised
(negative -> +n) in fp32, cvt to i32, then `dma.gather` reads the data in DRAM (GatherElements:
1-element rows of the flattened data).
"""

from __future__ import annotations

import numpy as np

from s4c.ranges import FP32_EXACT

from .base import SIZE, Kernel, kernel, reject
from .movement import MoveKernel
from .stream import Region
from .vmath import VM


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


class GatherElementsRuntime(Kernel):
    """GatherElements(data, indices) with indices known only at run time: per output element the
    flat data index base + k * stride(axis) (base: the element's offset off the axis, a constant
    vector) computed in fp32, then one `dma.gather` of 1-element rows per chunk. An index outside
    [-n, n) on the axis becomes -1, so the gather stops the run (a flat index alone could land on
    another element silently)."""

    CHUNK = 2048

    def check(self, L, op):
        if L.info(op.inputs[1]).irdt not in ("i64", "i32"):
            reject(op, "indices must be i32 or i64")
        n = L.info(op.inputs[0]).n
        if n > FP32_EXACT:
            reject(op, f"data has {n} elements; run-time GatherElements computes flat element indices "
                       f"in fp32, exact only up to 2^24")

    def emit(self, L, op):
        data, idx = op.inputs
        out = L.root(op.outputs[0])
        if out.n == 0:
            return
        dinfo = L.info(data)
        rank = len(data.shape)
        axis = op.attrs.get("axis", 0) % rank
        n = int(data.shape[axis])
        dstr = [int(np.prod(data.shape[d + 1:], dtype=np.int64)) for d in range(rank)]
        grid = np.indices(idx.shape, dtype=np.int64).reshape(rank, -1)
        base = sum((grid[d] * dstr[d] for d in range(rank) if d != axis), np.zeros(grid.shape[1], np.int64))
        table = Region.dram(L.dram_of(data).addr, dinfo.n, 1, dinfo.dt)
        es = SIZE[dinfo.dt]
        for j, k0 in enumerate(range(0, out.n, self.CHUNK)):
            k1 = min(out.n, k0 + self.CHUNK)
            cnt = k1 - k0
            c = j % L.cores
            sc = L.scratch(c)
            k = L.load_vector(c, idx, f32=True, start=k0, count=cnt)
            vm = VM(L, c, 1, cnt)
            s = vm.step(vm.axpb((k, "full"), -1.0))              # k < 0
            L.em.axpb(c, s, s, float(n), 0.0)
            L.em.vbin(c, "add", k, k, s)                        # k normalised
            ok = vm.step(vm.axpb((k, "full"), 1.0, 0.5))        # k >= 0
            hi = vm.step(vm.axpb((k, "full"), -1.0, n - 0.5))   # k <= n - 1
            L.em.vbin(c, "mul", ok, ok, hi)
            L.em.axpb(c, k, k, float(dstr[axis]), 1.0)          # 1 + k * stride
            L.em.vbin(c, "add", k, k, vm.L.const_vector(c, base[k0:k1].astype(np.float32)))
            L.em.vbin(c, "mul", k, k, ok)                       # 0 where out of range
            L.em.axpb(c, k, k, 1.0, -1.0)
            iv = sc.tile(1, cnt, "i32")
            L.em.cvt(c, iv, k)
            t = sc.tile(cnt, 1, dinfo.dt)
            L.em.gather(c, t, table, iv.addr)
            L.em.st(c, Region.dram(out.dram + k0 * es, cnt, 1, dinfo.dt), t)
            vm.free()
            sc.release_all()


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


class _Dispatch(Kernel):
    """Constant indices: data movement (movement.MoveKernel); else the run-time kernel."""
    move = MoveKernel()
    runtime: Kernel

    def _k(self, op):
        return self.move if op.inputs[1].is_constant else self.runtime

    def check(self, L, op):
        self._k(op).check(L, op)

    def emit(self, L, op):
        self._k(op).emit(L, op)


@kernel("Gather")
class GatherDispatch(_Dispatch):
    runtime = GatherRuntime()


@kernel("GatherND")
class GatherNDDispatch(_Dispatch):
    runtime = GatherNDRuntime()


@kernel("GatherElements")
class GatherElementsDispatch(_Dispatch):
    """Constant indices in range: data movement; else (run-time indices, or constant ones out of
    range, which then stop the run like the reference's error) the run-time kernel."""
    runtime = GatherElementsRuntime()

    def _k(self, op):
        if op.inputs[1].is_constant:
            shape = op.inputs[0].shape
            idx, n = np.asarray(op.inputs[1].data), shape[op.attrs.get("axis", 0) % len(shape)]
            if not idx.size or (idx.min() >= -n and idx.max() < n):
                return self.move
        return self.runtime
