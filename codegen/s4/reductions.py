"""Reductions and normalisations on generic views (any shape, operands in DRAM).

- **Reductions** (ReduceSum/Mean/Max/Min/Prod): reduced axes moved last (movement.py), then row
  reductions (vpu.rsum / rmean / rmax, min as -max(-x)) or, for Prod, a halving tree of vpu.mul
  over the reduced axis moved first.
- **CumSum** along any axis as a scan on the VPU: the tensor seen as [A, n, B] (n the summed axis),
  tiles of rows (a, j) in SRAM, then one vpu.add per step j over the strided rows (a, j) of every a
  in the tile (B == 1: a [A, n] tile is first transposed with vpu.trans, so the scan runs over rows
  of A lanes). fp32: integer data only when s4c.ranges proves operands and sums below 2^24.
- **ReduceL2** as ReduceSum of the squares (vpu.mul) followed by vpu.sqrt of the row sums.
- **Softmax** on the last axis as a row kernel (others: moved last and back).
- **LayerNormalization** with the optional Mean / InvStdDev outputs (`layernorm_generic`, called
  by transformer.py's LayerNorm kernel).
"""

from __future__ import annotations

import math

import numpy as np

from s4c.ranges import fp32_exact_op

from .base import INT32ISH, SIZE, TILE_BUDGET, Kernel, RowInfo, kernel, reject, rup
from .movement import copy_dram, emit_map, transpose_map
from .stream import Region


def _reduce_axes(op, rank):
    axes = op.attrs.get("axes")
    if not axes:
        return None if not op.attrs.get("noop_with_empty_axes", 0) else ()
    return tuple(sorted(a % max(rank, 1) for a in axes))


@kernel("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2")
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
        if axes == () and op.op != "ReduceL2":  # no reduction (ReduceL2 still takes sqrt(x^2): K = 1 below)
            copy_dram(L, L.dram_of(x), Region.dram(out.dram, xi.R, xi.C, xi.dt))
            return
        es = SIZE[xi.dt]
        src_addr = L.dram_of(x).addr if xi.n else 0
        if perm != sorted(perm) and xi.n:
            tmp = L.temp_dram[L.em.op_index]
            emit_map(L, tmp, xi.dt, transpose_map(x.shape, perm), [(0, xi.n, src_addr)])
            src_addr = tmp
        kind = op.op
        if K == 0:
            ident = {"ReduceSum": 0.0, "ReduceProd": 1.0, "ReduceMax": -math.inf, "ReduceMin": math.inf,
                     "ReduceMean": math.nan, "ReduceL2": 0.0}[kind]
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
            if kind == "ReduceL2":
                L.em.vbin(c, "mul", t, t, t)
                L.em.reduce(c, "rsum", res.addr, t)
                L.em.vun(c, "sqrt", res, res)
            elif kind in ("ReduceSum", "ReduceMean", "ReduceMax"):
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


@kernel("CumSum")
class CumSumKernel(Kernel):
    """CumSum on the VPU (module docstring): sums in fp32, in the reference's order along the axis."""

    def check(self, L, op):
        x = op.inputs[0]
        if x.dtype not in ("f32", "f16", "f64") and not fp32_exact_op(L.int_ranges, op):
            reject(op, f"{x.dtype} CumSum on values not known to stay below 2^24: the S4 VPU has no integer "
                       "ALU and fp32 holds integers exactly only below 2^24")
        _, n, B = self._view(op)
        if n * rup(min(B, 16) * 4) > TILE_BUDGET // 2:
            reject(op, f"a CumSum axis of {n} elements is longer than the S4 tiles hold")

    @staticmethod
    def _view(op):
        shape = op.inputs[0].shape
        axis = op.attrs["axis"] % len(shape)
        A = int(np.prod(shape[:axis], dtype=np.int64))
        B = int(np.prod(shape[axis + 1:], dtype=np.int64))
        return A, shape[axis], B

    @staticmethod
    def _scan(L, c, dst_row, src_row, n, exclusive, reverse):
        """dst_row(j) = sum of src_row(i) for i before j (exclusive) or up to j, along the scan order."""
        order = list(range(n))[::-1] if reverse else list(range(n))
        if exclusive:
            L.em.fill(c, dst_row(order[0]), 0.0)
            for prev, cur in zip(order, order[1:]):
                L.em.vbin(c, "add", dst_row(cur), dst_row(prev), src_row(prev))
        else:   # in place (dst_row is src_row)
            for prev, cur in zip(order, order[1:]):
                L.em.vbin(c, "add", dst_row(cur), dst_row(prev), dst_row(cur))

    def emit(self, L, op):
        x, outv = op.inputs[0], op.outputs[0]
        xi, out = L.info(x), L.root(outv)
        A, n, B = self._view(op)
        if xi.n == 0:
            return
        exclusive, reverse = bool(op.attrs.get("exclusive", 0)), bool(op.attrs.get("reverse", 0))
        src, dst = L.dram_of(x).addr, out.dram
        es, eo = SIZE[xi.dt], SIZE[out.dt]
        job = 0

        def to_f32(c, t):
            if t.dt == "f32":
                return t
            f = L.scratch(c).tile(t.rows, t.cols, "f32")
            L.em.cvt(c, f, t)
            L.scratch(c).release(t)
            return f

        def store(c, t, region):
            if region.dt != "f32":
                o = L.scratch(c).tile(t.rows, t.cols, region.dt)
                L.em.cvt(c, o, t)
                L.em.st(c, region, o)
                L.scratch(c).release(o)
            else:
                L.em.st(c, region, t)

        if B == 1 and A > 1:   # rows of [A, n]: transposed in SRAM, so one step adds A lanes
            ra = max(1, min(A, 256, (TILE_BUDGET // 3) // rup(n * 4)))
            for a0 in range(0, A, ra):
                a1 = min(A, a0 + ra)
                c = job % L.cores
                job += 1
                sc = L.scratch(c)
                t = sc.tile(a1 - a0, n, xi.dt)
                L.em.ld(c, t, Region.dram(src + a0 * n * es, a1 - a0, n, xi.dt))
                t = to_f32(c, t)
                tt = sc.tile(n, a1 - a0, "f32")
                L.em.trans(c, tt, t)
                ot = sc.tile(n, a1 - a0, "f32") if exclusive else tt
                self._scan(L, c, lambda j: ot.sub(j, 1), lambda j: tt.sub(j, 1), n, exclusive, reverse)
                L.em.trans(c, t, ot)
                store(c, t, Region.dram(dst + a0 * n * eo, a1 - a0, n, out.dt))
                sc.release(t, tt, ot)
            return
        # [A, n, B]: tiles of (ra values of a) x n rows x cb columns; the rows (a, j) of one j are
        # a strided region (pitch n rows) of the tile
        cb = min(B, max(16, (TILE_BUDGET // 4) // (n * 4) // 16 * 16))
        ra = max(1, min(A, (TILE_BUDGET // 4) // (n * rup(cb * 4))))
        for a0 in range(0, A, ra):
            a1 = min(A, a0 + ra)
            for c0 in range(0, B, cb):
                c1 = min(B, c0 + cb)
                c = job % L.cores
                job += 1
                sc = L.scratch(c)
                rows, cols = (a1 - a0) * n, c1 - c0
                t = sc.tile(rows, cols, xi.dt)
                L.em.ld(c, t, Region.dram(src + (a0 * n * B + c0) * es, rows, cols, xi.dt, pitch=B * es))
                t = to_f32(c, t)
                ot = sc.tile(rows, cols, "f32") if exclusive else t

                def lanes(tile):
                    return lambda j: Region("sram", tile.addr + j * tile.pitch, a1 - a0, cols, n * tile.pitch,
                                            "f32", tile.core)

                self._scan(L, c, lanes(ot), lanes(t), n, exclusive, reverse)
                store(c, ot, Region.dram(dst + (a0 * n * B + c0) * eo, rows, cols, out.dt, pitch=B * eo))
                sc.release(t, ot)


def store_vector(L, c, vec: Region, dst: Region) -> None:
    if dst.dt != vec.dt:
        t = L.scratch(c).tile(1, vec.cols, dst.dt)
        L.em.cvt(c, t, vec)
        L.em.st(c, dst, t)
        L.scratch(c).release(t)
    else:
        L.em.st(c, dst, vec)


@kernel("Softmax")
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
        emit_map(L, tmp, "f32", transpose_map(x.shape, perm), [(0, xi.n, L.dram_of(x).addr)])
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
        emit_map(L, L.root(outv).dram, "f32", transpose_map(tshape, inv), [(0, xi.n, tmp2)])


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
