"""The S4 program being built (as codegen/c's CProgram is the C one): `S4Program` is the Plan
(plan.py) plus what kernels emit through: the instruction stream `em` (stream.Stream) with each
core's SRAM scratch, and the row helpers (resident rows or scratch tiles in, computed rows out
to their DRAM home, vectors and constants into scratch).

    program = S4Program(graph, {"cores": 4}); program.make()
    debug = program.emit()        # every op's kernel (base.KERNELS) in program order
    # lower.assemble(program, debug): dependencies, scheduling, the Program

Kernels get the S4Program as `L`: `L.em` (instructions), `L.scratch(core)`, `L.src_rows`,
`L.dst_rows`, `L.commit_rows`, `L.load_vector`, `L.const_vector`, `L.dram_of`, `L.row_tiles`,
`L.set_block`, and the plan's `L.info`, `L.root`, `L.part`, `L.blocks`, `L.packed_linear`.
"""

from __future__ import annotations

import numpy as np

from s4c.ir import Graph, Value
from s4c.s4 import DebugEntry

from .base import SIZE, rup
from .constants import to_storage
from .movement import copy_dram
from .plan import Plan
from .stream import Region, Scratch, Stream


class S4Program(Plan):
    def __init__(self, graph: Graph, options: dict | None = None):
        super().__init__(graph, options)
        # an int8 graph is timed as it computes (stream.py): no separate timing dtype
        self.em = Stream(self.m, self.cores, "int8" if self.int8 else self.opts.get("precision", "mixed"))
        if self.int8:
            self.stats["precision"] = "int8 (MixInt8bf16, timed as computed)"

    def dram_of(self, v: Value) -> Region:
        """The value as [R, C] in DRAM (constants are placed on first use)."""
        info = self.root(v) if not self.info(v).v.is_constant else self.info(v)
        if info.kind == "const":
            self.const_addr(info)
        me = self.info(v)
        if info.dram is None:
            raise AssertionError(f"value {v.name!r} has no DRAM home (resident only)")
        return Region.dram(info.dram, me.R, me.C, me.dt)

    def scratch(self, core: int) -> Scratch:
        return self.em.scratch[core]

    def row_tiles(self, R: int, core: int, max_rows: int) -> list[tuple[int, int]]:
        """Core's rows of the current op, cut at block boundaries and into at most `max_rows`
        rows (row kernels: the residency blocks; other ops: the generic split)."""
        if self.rowinfo[self.em.op_index] is not None:
            ranges = []
            for b0, b1 in self.blocks(R, core):
                ranges += self.sub_blocks(b0, b1)
        else:
            p0, p1 = self.generic_part(R)[core]
            ranges = [(p0, p1)] if p1 > p0 else []
        out = []
        step = max(1, max_rows)
        for b0, b1 in ranges:
            out += [(r, min(b1, r + step)) for r in range(b0, b1, step)]
        return out

    def set_block(self, R: int, core: int, r0: int) -> None:
        """Tag the instructions emitted next with the (sub-)block holding row r0 (scheduling rank)."""
        for b, (b0, b1) in enumerate(self.blocks(R, core)):
            if b0 <= r0 < b1:
                subs = self.sub_blocks(b0, b1)
                j = next((i for i, (s0, s1) in enumerate(subs) if s0 <= r0 < s1), 0)
                self.em.block = b * self.sub + j
                return
        self.em.block = 0

    def resident_rows(self, v: Value, core: int, r0: int, r1: int) -> Region | None:
        info = self.root(v)
        me = self.info(v)
        if not info.resident or me.C != info.C or r1 <= r0:
            return None
        for b, (b0, b1) in enumerate(self.blocks(info.R, core)):
            if b0 <= r0 and r1 <= b1:
                base = self.sram_base + info.sram_off[b]
                pitch = rup(info.C * SIZE[info.dt])      # f32, or i8 / bf16 in an int8 graph
                return Region("sram", base + (r0 - b0) * pitch, r1 - r0, info.C, pitch, info.dt, core)
        return None

    def src_rows(self, core: int, v: Value, r0: int, r1: int, f32: bool = True) -> tuple[Region, bool]:
        """Rows [r0, r1) of v's [R, C] view in core's SRAM: the resident rows, or a scratch tile
        loaded from DRAM (converted to f32 when `f32`). Returns (region, owned)."""
        res = self.resident_rows(v, core, r0, r1)
        if res is not None:
            return res, False
        src = self.dram_of(v).sub(r0, r1 - r0)
        tile = self.scratch(core).tile(r1 - r0, src.cols, src.dt)
        self.em.ld(core, tile, src)
        if f32 and src.dt != "f32":
            conv = self.scratch(core).tile(r1 - r0, src.cols, "f32")
            self.em.cvt(core, conv, tile)
            self.scratch(core).release(tile)
            return conv, True
        return tile, True

    def dst_rows(self, core: int, v: Value, r0: int, r1: int) -> tuple[Region, bool]:
        """Where to compute rows [r0, r1) of v (f32): its resident rows or a scratch tile."""
        res = self.resident_rows(v, core, r0, r1)
        if res is not None:
            return res, False
        return self.scratch(core).tile(r1 - r0, self.info(v).C, "f32"), True

    def commit_rows(self, core: int, v: Value, tile: Region, r0: int, r1: int, owned: bool) -> None:
        """Store computed rows to v's DRAM home when it has one (converting from f32)."""
        info = self.root(v)
        if info.dram is not None and (info.needs_dram or not info.resident):
            dst = self.dram_of(v).sub(r0, r1 - r0)
            src = tile
            conv = None
            if dst.dt != tile.dt:
                conv = self.scratch(core).tile(tile.rows, tile.cols, dst.dt)
                self.em.cvt(core, conv, tile)
                src = conv
            self.em.st(core, dst, src)
            self.scratch(core).release(conv)
        if owned:
            self.scratch(core).release(tile)

    def load_vector(self, core: int, v: Value, f32: bool = True, start: int = 0, count: int | None = None) -> Region:
        """Elements [start, start+count) of v (flat) as a packed vector in scratch."""
        info = self.info(v)
        count = info.n - start if count is None else count
        base = self.dram_of(v).addr + start * SIZE[info.dt]
        tile = self.scratch(core).tile(1, count, info.dt)
        self.em.ld(core, tile, Region.dram(base, 1, count, info.dt))
        if f32 and info.dt != "f32":
            conv = self.scratch(core).tile(1, count, "f32")
            self.em.cvt(core, conv, tile)
            return conv
        return tile

    def const_vector(self, core: int, array: np.ndarray, dt: str = "f32") -> Region:
        """A compile-time vector loaded into core's scratch (packed)."""
        arr = to_storage(np.asarray(array).reshape(-1), dt)
        key = ("vec", dt, arr.tobytes()) if arr.size <= 4096 else None
        addr = self.const.add(arr, key=key)
        tile = self.scratch(core).tile(1, arr.size, dt)
        self.em.ld(core, tile, Region.dram(addr, 1, arr.size, dt))
        return tile

    def const_region(self, array: np.ndarray, dt: str) -> Region:
        arr = to_storage(np.asarray(array), dt)
        arr2 = arr.reshape(-1, arr.shape[-1]) if arr.ndim > 1 else arr.reshape(1, -1)
        addr = self.const.add(arr2)
        return Region.dram(addr, arr2.shape[0], arr2.shape[1], dt)

    # -- emission ------------------------------------------------------------------------------------
    def emit(self) -> dict:
        """Every op's kernel in program order, then the graph outputs that need a copy; returns the
        debug table (instruction debug id -> DebugEntry)."""
        scratch_lo = rup(self.sram_base + self.resident_peak)
        self.em.scratch = [Scratch(c, scratch_lo, self.m.sram_bytes) for c in range(self.cores)]
        self.scratch_lo = scratch_lo
        g = self.g
        debug = {}
        self.op_names = []
        for i, op in enumerate(g.ops):
            name = f"{i}:{op.op}:{op.outputs[0].name}"[:200]
            self.op_names.append(name)
            debug[i] = DebugEntry(name, op.onnx_nodes[0] if op.onnx_nodes else "")
            self.em.begin_op(i, i)
            self.kern[i].emit(self, op)
            for c in range(self.cores):
                self.scratch(c).release_all()
        # outputs that are inputs, constants or another output's value: copied
        copy_id = len(g.ops)
        for entry in self.io_out:
            if entry["copy_from"] is not None:
                debug[copy_id] = DebugEntry(f"{copy_id}:output-copy:{entry['value'].name}"[:200], "")
                self.em.begin_op(copy_id, copy_id)
                copy_dram(self, self.dram_of(entry["copy_from"]), Region.dram(entry["addr"], self.info(entry["value"]).R,
                                                                               self.info(entry["value"]).C,
                                                                               self.info(entry["value"]).dt))
                for c in range(self.cores):
                    self.scratch(c).release_all()
                copy_id += 1
        return debug


__all__ = ["S4Program"]
