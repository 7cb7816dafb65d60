"""Elementwise kernels (arithmetic, comparisons, logic, activations, Where, Cast,
DequantizeLinear): any shape, operands in DRAM, or as row kernels on SRAM-resident token matrices.

Operands broadcast as full tile / row vector / column vector / scalar of a 2-D block of the output
(canonical dims; leading dims looped over), integer and bool operands converted to fp32 with
vpu.cvt, the op as a VPU sequence (vmath.py), converted back on store. Integer arithmetic and
comparisons on 32/64-bit integers are rejected unless s4c.ranges proves every operand and result
below 2^24 (positions, masks, token types): the VPU has no integer ALU and fp32 holds integers
exactly only below 2^24 (8/16-bit integers are exact, except that overflow saturates where ONNX
wraps). Where on integer / bool data and blocked DequantizeLinear first move their operands
(movement.py).
"""

from __future__ import annotations

import numpy as np

from s4c.ops.elementwise import BINARY, UNARY
from s4c.ranges import fp32_exact_op

from .base import ALIAS_OPS, INT32ISH, SIZE, TILE_BUDGET, Kernel, RowInfo, kernel, reject, rup
from .movement import emit_map
from .stream import Region
from .vmath import POW_EXPONENTS, VM, compute

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


# s4c.ops' unary and binary ops (Identity is an alias, movement.py) and the rest of the family;
# LogSoftmax only to be refused by name (the VPU has no logarithm)
ELEMENTWISE = sorted((set(UNARY) | set(BINARY)) - ALIAS_OPS
                     | {"Max", "Min", "Sum", "Where", "Cast", "CastLike", "Clip", "Gelu", "DequantizeLinear",
                        "LogSoftmax"})


@kernel(*ELEMENTWISE)
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
        if name in ARITH_OR_COMPARE and (in_dts & set(INT32ISH) or out_dt in INT32ISH) \
                and not fp32_exact_op(L.int_ranges, op):
            reject(op, "32/64-bit integer arithmetic and comparisons on values not known to stay below "
                       "2^24: the S4 VPU has no integer ALU and fp32 holds integers exactly only below 2^24")
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
