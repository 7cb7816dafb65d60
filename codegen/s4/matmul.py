"""MatMul / Gemm with run-time operands (a constant 2-D weight is a Linear, linear.py, which also registers MatMul):
numpy-style batched MatMul as spu.mm per batch; Gemm with B^T through tb=1, A^T through a
transpose, alpha / beta and the C operand on the VPU.
"""

from __future__ import annotations

import numpy as np

from .base import TILE_BUDGET, Kernel, kernel, reject, rup
from .stream import Region


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


@kernel("Gemm")
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
