"""The instruction stream the S4 kernels write: memory regions, the per-core SRAM scratch
allocator and `Stream` (program.py's `S4Program.em`), which appends instructions in program order.

    em = Stream(machine, cores=4, precision="mixed")
    em.begin_op(op_index, debug_id)
    x = em.scratch[c].tile(rows, cols, "f32")           # an SRAM tile in core c's scratch area
    em.ld(c, x, Region.dram(addr, rows, cols, pitch, "f32"))
    em.vpu(c, "add", dst, a, b, bcast="row")
    em.nodes                                            # [(core, Instr)] in program (emission) order

The emission order is the program's sequential semantics: every instruction behaves as if the
ones emitted before it (on any core) had completed. The scheduler (schedule.py) later reorders
each unit queue, and inserts the semaphores, without breaking that: it sees every read/write
conflict between instructions (deps.py) and keeps them ordered.

Timing dtypes (`precision="mixed"`, the default): the functional program is fp32 (exact against
the ONNX reference); the cycle model charges what the MixInt8bf16 machine does: SPU MACs and weight
DMAs as int8, activation DMAs and VPU ops as bf16 (docs/isa.md "Timing precision"). With
`precision="f32"` everything is timed as it computes. `precision="int8"` (what the lowering of an
int8 graph uses: LinearInt8 / QuantizeInt8, `s4c compile --precision int8`) is timed as it computes
too: i8 weights and SPU inputs, i32 accumulators, bf16 where the VPU works in bf16, f32 elsewhere;
no instruction then has a timing dtype other than its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from s4c.errors import TargetError
from s4c.s4 import dtypes as D
from s4c.s4 import make
from s4c.s4.isa import BY_MNEMONIC, NO_DEBUG, Instr
from s4c.s4.ops_vpu import BCAST_NAMES

from .base import ALIGN, SIZE, rup


@dataclass(frozen=True)
class Region:
    """A 2-D region: `rows` rows of `cols` elements of dtype `dt`, row r at addr + r*pitch.

    space "sram" (core `core`'s scratchpad; addr and pitch 64-byte aligned) or "dram"."""

    space: str
    addr: int
    rows: int
    cols: int
    pitch: int
    dt: str
    core: int = 0

    @staticmethod
    def dram(addr: int, rows: int, cols: int, dt: str, pitch: int | None = None) -> "Region":
        return Region("dram", addr, rows, cols, cols * SIZE[dt] if pitch is None else pitch, dt)

    @property
    def esize(self) -> int:
        return SIZE[self.dt]

    @property
    def row_bytes(self) -> int:
        return self.cols * SIZE[self.dt]

    @property
    def nbytes(self) -> int:
        return self.rows * self.row_bytes

    def sub(self, r0: int = 0, nr: int | None = None, c0: int = 0, nc: int | None = None) -> "Region":
        """Rows [r0, r0+nr), columns [c0, c0+nc) of this region (SRAM column offsets must stay aligned)."""
        nr = self.rows - r0 if nr is None else nr
        nc = self.cols - c0 if nc is None else nc
        assert 0 <= r0 and r0 + nr <= self.rows and 0 <= c0 and c0 + nc <= self.cols, (self, r0, nr, c0, nc)
        addr = self.addr + r0 * self.pitch + c0 * SIZE[self.dt]
        if self.space == "sram" and addr % ALIGN:
            raise AssertionError(f"unaligned SRAM sub-tile at 0x{addr:x}")
        return Region(self.space, addr, nr, nc, self.pitch, self.dt, self.core)

    def retype(self, dt: str) -> "Region":
        """The same bytes seen as another dtype of the same element size."""
        assert SIZE[dt] == SIZE[self.dt]
        return Region(self.space, self.addr, self.rows, self.cols, self.pitch, dt, self.core)

    def col_aligned(self, c0: int) -> bool:
        return self.space != "sram" or (c0 * SIZE[self.dt]) % ALIGN == 0

    def pitch_or_packed(self) -> int:
        return self.pitch if self.rows > 1 else rup(self.row_bytes)


_SPECS: dict = {}


def fast_make(mnemonic: str, dbg, fields: dict):
    """isa.make without its per-operand checks (the program is validated as a whole before it is
    written: Program.to_bytes); operands named as make() takes them."""
    spec = _SPECS.get(mnemonic)
    if spec is None:
        spec = _SPECS[mnemonic] = BY_MNEMONIC[mnemonic]
    args = []
    for f in spec.fields:
        v = fields[f.name] if f.name in fields else f.default
        kind = f.kind
        if kind == "dtype":
            v = D.CODES[v] if isinstance(v, str) else v
        elif kind == "tdtype":
            v = (0 if v == "same" else D.CODES[v]) if isinstance(v, str) else v
        elif kind == "bcast":
            v = BCAST_NAMES.index(v) if isinstance(v, str) else v
        elif kind == "f32":
            v = float(np.float32(v))
        elif kind == "bool":
            v = int(v)
        args.append(v)
    return Instr(spec.code, tuple(args), NO_DEBUG if dbg is None else dbg)


class ScratchFull(TargetError):
    pass


class Scratch:
    """Next-fit allocator over one core's SRAM scratch area [lo, hi).

    Allocation continues after the previous one and wraps around, so a freed buffer is reused as
    late as possible: the instruction that overwrites it then rarely has to wait for the ones that
    read it, and loads of the next tiles overlap the compute on the current ones (multi-buffering
    falls out of the allocation order). Live buffers are never handed out twice."""

    def __init__(self, core: int, lo: int, hi: int):
        self.core, self.lo, self.hi = core, lo, hi
        self.free_list: list[tuple[int, int]] = [(lo, hi)] if hi > lo else []
        self.live: dict[int, int] = {}
        self.ptr = lo
        self.high = lo                     # highest address ever handed out (SRAM peak)

    @property
    def size(self) -> int:
        return self.hi - self.lo

    def largest_free(self) -> int:
        return max((e - s for s, e in self.free_list), default=0)

    def alloc(self, nbytes: int) -> int:
        n = rup(max(nbytes, 1))
        candidates = [(s, e) for s, e in self.free_list if e - max(s, self.ptr) >= n and e > self.ptr]
        if candidates:
            s, e = candidates[0]
            start = max(s, self.ptr)
        else:
            fit = [(s, e) for s, e in self.free_list if e - s >= n]
            if not fit:
                raise ScratchFull(f"S4 lowering: core {self.core} SRAM scratch cannot hold {n} bytes "
                                  f"(largest free block {self.largest_free()} of {self.size})")
            s, e = fit[0]
            start = s
        self._take(start, start + n)
        self.live[start] = n
        self.ptr = start + n if start + n < self.hi else self.lo
        self.high = max(self.high, start + n)
        return start

    def _take(self, a: int, b: int) -> None:
        out = []
        for s, e in self.free_list:
            if e <= a or s >= b:
                out.append((s, e))
                continue
            if s < a:
                out.append((s, a))
            if e > b:
                out.append((b, e))
        self.free_list = out

    def free(self, addr: int) -> None:
        n = self.live.pop(addr)
        items = sorted(self.free_list + [(addr, addr + n)])
        merged: list[tuple[int, int]] = []
        for s, e in items:
            if merged and merged[-1][1] >= s:
                merged[-1] = (merged[-1][0], max(merged[-1][1], e))
            else:
                merged.append((s, e))
        self.free_list = merged

    def tile(self, rows: int, cols: int, dt: str) -> Region:
        pitch = rup(cols * SIZE[dt])
        addr = self.alloc(rows * pitch)
        return Region("sram", addr, rows, cols, pitch, dt, self.core)

    def release(self, *regions: Region) -> None:
        for r in regions:
            if r is not None and r.addr in self.live:
                self.free(r.addr)

    def release_all(self) -> None:
        for addr in list(self.live):
            self.free(addr)


class Stream:
    """Collects instructions (core, Instr) in program order; helpers build the common ones."""

    def __init__(self, machine, cores: int, precision: str = "mixed"):
        if precision not in ("mixed", "f32", "int8"):
            raise TargetError(f"S4 precision must be 'mixed' (MixInt8bf16 timing) or 'f32', not {precision!r}")
        self.m = machine
        self.cores = cores
        self.precision = precision
        self.nodes: list[tuple[int, object]] = []
        self.op_of: list[int] = []          # IR op index of every node
        self.block_of: list[int] = []       # row block (sentence) the node works on, 0 if none
        self.block = 0
        self.dbg: int | None = None
        self.op_index = -1
        self.scratch: list[Scratch] = []

    # -- context ---------------------------------------------------------------------------------
    def begin_op(self, op_index: int, dbg: int | None) -> None:
        self.op_index, self.dbg = op_index, dbg
        self.block = 0

    def _put(self, core: int, mnemonic: str, **fields) -> None:
        self.nodes.append((core, fast_make(mnemonic, self.dbg, fields)))
        self.op_of.append(self.op_index)
        self.block_of.append(self.block)

    # -- timing dtypes ---------------------------------------------------------------------------
    @property
    def mixed(self) -> bool:
        return self.precision == "mixed"

    def t_act(self, dt: str) -> str:
        """Timing dtype of an activation transfer / VPU op on `dt` data."""
        return "bf16" if self.mixed and dt == "f32" else "same"

    def t_w(self, dt: str) -> str:
        """Timing dtype of weight values / SPU MACs."""
        return "i8" if self.mixed and dt == "f32" else "same"

    # -- DMA -------------------------------------------------------------------------------------
    def ld(self, core: int, dst: Region, src: Region, weight: bool = False) -> None:
        """DRAM -> SRAM, same shape (src pitch any, dst SRAM pitch)."""
        assert dst.space == "sram" and src.space == "dram" and (dst.rows, dst.cols) == (src.rows, src.cols), (dst, src)
        assert dst.esize == src.esize
        tdt = self.t_w(src.dt) if weight else self.t_act(src.dt)
        if src.rows > 1 and src.pitch == src.row_bytes and dst.pitch == dst.row_bytes:
            self._put(core, "dma.ld", dst=dst.addr, src=src.addr, rows=1, bytes=src.nbytes, dpitch=dst.pitch,
                      spitch=src.nbytes, dt=src.dt, tdt=tdt)
            return
        self._put(core, "dma.ld", dst=dst.addr, src=src.addr, rows=src.rows, bytes=src.row_bytes,
                  dpitch=dst.pitch_or_packed(), spitch=max(src.pitch, src.row_bytes), dt=src.dt, tdt=tdt)

    def ld_bytes(self, core: int, dst_addr: int, src_addr: int, nbytes: int, dt: str, weight: bool = False) -> None:
        """A packed (1-row) DRAM -> SRAM copy."""
        tdt = self.t_w(dt) if weight else self.t_act(dt)
        self._put(core, "dma.ld", dst=dst_addr, src=src_addr, rows=1, bytes=nbytes, dpitch=rup(nbytes),
                  spitch=nbytes, dt=dt, tdt=tdt)

    def st(self, core: int, dst: Region, src: Region) -> None:
        assert dst.space == "dram" and src.space == "sram" and (dst.rows, dst.cols) == (src.rows, src.cols), (dst, src)
        tdt = self.t_act(src.dt)
        if src.rows > 1 and src.pitch == src.row_bytes and dst.pitch == dst.row_bytes:
            self._put(core, "dma.st", dst=dst.addr, src=src.addr, rows=1, bytes=src.nbytes, dpitch=dst.nbytes,
                      spitch=rup(src.nbytes), dt=src.dt, tdt=tdt)
            return
        self._put(core, "dma.st", dst=dst.addr, src=src.addr, rows=src.rows, bytes=src.row_bytes,
                  dpitch=max(dst.pitch, dst.row_bytes), spitch=src.pitch_or_packed(), dt=src.dt, tdt=tdt)

    def gather(self, core: int, dst: Region, table: Region, idx_addr: int, tdt: str | None = None) -> None:
        """dst row r = table row idx[r] (idx: packed i32 vector in SRAM)."""
        assert dst.cols == table.cols and dst.esize == table.esize
        self._put(core, "dma.gather", dst=dst.addr, table=table.addr, idx=idx_addr, rows=dst.rows,
                  bytes=dst.row_bytes, dpitch=dst.pitch_or_packed(), tpitch=max(table.pitch, table.row_bytes),
                  trows=table.rows, dt=table.dt, tdt=tdt or self.t_act(table.dt))

    # -- VPU -------------------------------------------------------------------------------------
    def vbin(self, core: int, op: str, dst: Region, a: Region, b: Region, bcast: str = "full") -> None:
        assert dst.dt == a.dt == b.dt == "f32" and (dst.rows, dst.cols) == (a.rows, a.cols), (op, dst, a, b)
        if bcast == "full":
            assert (b.rows, b.cols) == (a.rows, a.cols), (op, a, b)
        self._put(core, f"vpu.{op}", dst=dst.addr, a=a.addr, b=b.addr, rows=dst.rows, cols=dst.cols,
                  pd=dst.pitch_or_packed(), pa=a.pitch_or_packed(),
                  pb=b.pitch_or_packed() if bcast == "full" else 0, bcast=bcast, dt="f32", tdt=self.t_act("f32"))

    def vun(self, core: int, op: str, dst: Region, src: Region, **extra) -> None:
        assert (dst.rows, dst.cols) == (src.rows, src.cols), (op, dst, src)
        dt = extra.pop("dt", dst.dt)
        self._put(core, f"vpu.{op}", dst=dst.addr, src=src.addr, rows=dst.rows, cols=dst.cols,
                  pd=dst.pitch_or_packed(), ps=src.pitch_or_packed(), dt=dt,
                  tdt=extra.pop("tdt", self.t_act(dt)), **extra)

    def axpb(self, core: int, dst: Region, src: Region, alpha: float, beta: float = 0.0) -> None:
        self.vun(core, "axpb", dst, src, alpha=alpha, beta=beta)

    def fill(self, core: int, dst: Region, value: float) -> None:
        self._put(core, "vpu.fill", dst=dst.addr, rows=dst.rows, cols=dst.cols, pd=dst.pitch_or_packed(),
                  value=value, dt=dst.dt, tdt=self.t_act(dst.dt))

    def copy(self, core: int, dst: Region, src: Region) -> None:
        assert dst.dt == src.dt
        self.vun(core, "copy", dst, src)

    def cvt(self, core: int, dst: Region, src: Region, scale: float = 1.0, tdt: str | None = None) -> None:
        assert (dst.rows, dst.cols) == (src.rows, src.cols)
        self._put(core, "vpu.cvt", dst=dst.addr, src=src.addr, rows=dst.rows, cols=dst.cols,
                  pd=dst.pitch_or_packed(), ps=src.pitch_or_packed(), scale=scale, sdt=src.dt, dt=dst.dt,
                  tdt=tdt or self.t_act(dst.dt if dst.dt == "f32" else src.dt))

    def timing_cvt(self, core: int, tile: Region, tdt: str) -> None:
        """A MixInt8bf16 quantise (tdt i8) / dequantise (tdt bf16) pass, modelled in place: an fp32
        identity (x*1.0 rounded to f32) that the cycle model charges as the conversion it stands for."""
        if self.mixed:
            self.cvt(core, tile, tile, 1.0, tdt=tdt)

    def reduce(self, core: int, op: str, dst_addr: int, src: Region) -> None:
        self._put(core, f"vpu.{op}", dst=dst_addr, src=src.addr, rows=src.rows, cols=src.cols,
                  ps=src.pitch_or_packed(), dt="f32", tdt=self.t_act("f32"))

    def trans(self, core: int, dst: Region, src: Region) -> None:
        assert (dst.rows, dst.cols) == (src.cols, src.rows) and dst.esize == src.esize
        self._put(core, "vpu.trans", dst=dst.addr, src=src.addr, rows=src.rows, cols=src.cols,
                  pd=dst.pitch_or_packed(), ps=src.pitch_or_packed(), dt=src.dt, tdt=self.t_act(src.dt))

    # -- SPU -------------------------------------------------------------------------------------
    def mm(self, core: int, dst: Region, a: Region, b: Region, tb: bool, acc: bool = False,
           weight: bool = False, dt: str = "f32") -> None:
        """dt: the input dtype (f32, bf16, or i8 with an i32 accumulator `dst`)."""
        m, k = a.rows, a.cols
        n = b.rows if tb else b.cols
        assert (b.cols if tb else b.rows) == k and (dst.rows, dst.cols) == (m, n), (dst, a, b, tb)
        self._put(core, "spu.mm", dst=dst.addr, a=a.addr, b=b.addr, m=m, n=n, k=k, pd=dst.pitch_or_packed(),
                  pa=a.pitch_or_packed(), pb=b.pitch_or_packed(), tb=int(tb), acc=int(acc), dt=dt,
                  tdt=self.t_w(dt))

    def nm(self, core: int, dst: Region, x: Region, val: int, idx: int, k: int, n: int, m: int,
           acc: bool = False, dt: str = "f32") -> None:
        self._put(core, "spu.nm", dst=dst.addr, x=x.addr, val=val, idx=idx, t=x.rows, o=dst.cols, k=k, n=n, m=m,
                  pd=dst.pitch_or_packed(), px=x.pitch_or_packed(), acc=int(acc), dt=dt, tdt=self.t_w(dt))

    def bsr(self, core: int, dst: Region, x: Region, val: int, col: int, ptr: int, k: int, r: int, c: int,
            nnzb: int, cdt: str, acc: bool = False, dt: str = "f32") -> None:
        self._put(core, "spu.bsr", dst=dst.addr, x=x.addr, val=val, col=col, ptr=ptr, t=x.rows, o=dst.cols, k=k,
                  r=r, c=c, nnzb=nnzb, pd=dst.pitch_or_packed(), px=x.pitch_or_packed(), acc=int(acc), dt=dt,
                  cdt=cdt, tdt=self.t_w(dt))

    # -- int8 (vpu.quant / vpu.dequant) -----------------------------------------------------------
    def quant(self, core: int, dst: Region, src: Region, scales: Region, per_row: bool) -> None:
        """dst (i8) = saturate+-127(rne(f32(src / s))): s = scales[i] per row, or scales[0]."""
        assert dst.dt == "i8" and scales.dt == "f32" and (dst.rows, dst.cols) == (src.rows, src.cols), (dst, src)
        self._put(core, "vpu.quant", dst=dst.addr, src=src.addr, s=scales.addr, rows=src.rows, cols=src.cols,
                  pd=dst.pitch_or_packed(), ps=src.pitch_or_packed(), sbc="col" if per_row else "scalar",
                  dt=src.dt, tdt=self.t_act(src.dt))

    def dequant(self, core: int, dst: Region, acc: Region, cs: Region, rs: Region | None = None,
                bias: Region | None = None, act: str = "none") -> None:
        """dst (f32 / bf16) = act(f32(acc) * f32(rs[i]*cs[j]) + bias[j]) (the int8 GEMM epilogue)."""
        assert acc.dt == "i32" and (dst.rows, dst.cols) == (acc.rows, acc.cols), (dst, acc)
        self._put(core, "vpu.dequant", dst=dst.addr, src=acc.addr, cs=cs.addr, rs=rs.addr if rs else 0,
                  bias=bias.addr if bias else 0, rows=acc.rows, cols=acc.cols, pd=dst.pitch_or_packed(),
                  ps=acc.pitch_or_packed(), rsc=int(rs is not None), hb=int(bias is not None),
                  act=("none", "gelu", "gelu_tanh", "relu").index(act), dt=dst.dt, tdt=self.t_act(dst.dt))

    def epilogue(self, core: int, dst: Region, src: Region, bias: Region | None = None, act: str = "none") -> None:
        """dst = act(src + bias[j]) in one fused VPU pass (a float GEMM's bias and activation; under the
        MixInt8bf16 timing also its dequantisation). Nothing to do (fp32 timing, no bias, no
        activation): no instruction."""
        if bias is None and act == "none" and not self.mixed:
            return
        assert (dst.rows, dst.cols) == (src.rows, src.cols) and src.dt in ("f32", "bf16"), (dst, src)
        self._put(core, "vpu.epilogue", dst=dst.addr, src=src.addr, bias=bias.addr if bias else 0, rows=src.rows,
                  cols=src.cols, pd=dst.pitch_or_packed(), ps=src.pitch_or_packed(), hb=int(bias is not None),
                  act=("none", "gelu", "gelu_tanh", "relu").index(act), sdt=src.dt, dt=dst.dt,
                  tdt=self.t_act(dst.dt))

    def vop(self, core: int, op: str, dst: Region, a: Region, b: Region, bcast: str = "full") -> None:
        """A binary VPU op in the operands' own float dtype (vbin is f32 only)."""
        assert dst.dt == a.dt == b.dt and dst.dt in ("f32", "bf16"), (op, dst, a, b)
        self._put(core, f"vpu.{op}", dst=dst.addr, a=a.addr, b=b.addr, rows=dst.rows, cols=dst.cols,
                  pd=dst.pitch_or_packed(), pa=a.pitch_or_packed(),
                  pb=b.pitch_or_packed() if bcast == "full" else 0, bcast=bcast, dt=dst.dt, tdt=self.t_act(dst.dt))

    def vreduce(self, core: int, op: str, dst: Region, src: Region) -> None:
        """A row reduction into a packed vector of src's dtype."""
        assert dst.dt == src.dt and dst.cols == src.rows, (op, dst, src)
        self._put(core, f"vpu.{op}", dst=dst.addr, src=src.addr, rows=src.rows, cols=src.cols,
                  ps=src.pitch_or_packed(), dt=src.dt, tdt=self.t_act(src.dt))

    def softmax(self, core: int, dst: Region, src: Region, scale: float = 1.0) -> None:
        self.vun(core, "softmax", dst, src, scale=scale)

    def layernorm(self, core: int, dst: Region, src: Region, gamma: Region, beta: Region, eps: float) -> None:
        self._put(core, "vpu.layernorm", dst=dst.addr, src=src.addr, gamma=gamma.addr, beta=beta.addr,
                  rows=src.rows, cols=src.cols, pd=dst.pitch_or_packed(), ps=src.pitch_or_packed(),
                  eps=float(np.float32(eps)), dt="f32", tdt=self.t_act("f32"))
